//! `Hit`: an entry found in the cache, with its blob open (pinned: an
//! eviction that unlinks the blob later can't break this reader), or, in an
//! object store, named (streamed on use; a blob evicted meanwhile is a
//! [`CopyError::Corrupt`]: the caller downloads instead).
//!
//! The blob is copied into the caller's positional sink and hashed on the
//! way; the digest and length are checked at the end. A corrupt or truncated
//! blob drops its entry and reports [`CopyError::Corrupt`]: the caller
//! re-downloads over the same range, so the bad bytes never stay in an image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::entry::{Entry, Validators};
use super::error::CacheError;
use super::key::Key;
use super::remote::RemoteHit;
use super::{hex, Inner, COPY_BUFFER};

/// A verified copy failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The sink (the image) failed: a build error.
    #[error("writing cached {key} at offset {offset}: {source}")]
    Sink {
        /// The key.
        key: String,
        /// Payload offset of the failed write.
        offset: u64,
        /// The sink's error.
        source: std::io::Error,
    },
    /// The blob is bad or unreadable: its entry is dropped; fetch from the
    /// network instead, over the same range.
    #[error(transparent)]
    Corrupt(CacheError),
}

/// An entry found by [`super::Cache::lookup`].
#[derive(Debug)]
pub struct Hit {
    pub(crate) key: Key,
    pub(crate) entry: Entry,
    pub(crate) due: bool,
    pub(crate) src: Source,
}

/// Where a hit's bytes are.
#[derive(Debug)]
pub(crate) enum Source {
    /// A local blob, open (pinned).
    Local {
        inner: Arc<Inner>,
        blob: File,
        blob_path: PathBuf,
    },
    /// A blob in an object store, streamed on use.
    Remote(Box<RemoteHit>),
}

impl Hit {
    pub(crate) fn remote(key: Key, h: RemoteHit) -> Hit {
        Hit {
            key,
            entry: h.entry.clone(),
            due: h.due,
            src: Source::Remote(Box::new(h)),
        }
    }

    /// The entry (size, sha256, validators, times).
    pub fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Whether `check_after` has passed since the last check: compare
    /// [`Hit::validators`] with the remote's before using it.
    pub fn is_due_for_check(&self) -> bool {
        self.due
    }

    /// What the remote said when the entry was fetched or last checked.
    pub fn validators(&self) -> &Validators {
        &self.entry.validators
    }

    /// Payload size.
    pub fn size(&self) -> u64 {
        self.entry.size
    }

    /// Whether the blob is a local file, for [`Hit::copy_then_verify`]'s
    /// kernel copy (or an object store's blob already spooled by
    /// [`Hit::file`]); otherwise [`Hit::copy_into`] streams it.
    pub fn is_local(&self) -> bool {
        match &self.src {
            Source::Local { .. } => true,
            Source::Remote(r) => r.spooled.get().is_some(),
        }
    }

    /// Copy the whole blob into `write_at(offset, bytes)`, hashing it, and
    /// return the entry once the sha256 and size match. Sequential reads of
    /// [`COPY_BUFFER`] bytes from a local blob; ranged GETs in parallel
    /// (`CacheOptions::parallel`), handed over in order, from an object
    /// store.
    pub fn copy_into<F>(self, write_at: F) -> Result<Entry, CopyError>
    where
        F: FnMut(u64, &[u8]) -> std::io::Result<()>,
    {
        self.copy_with(write_at)?;
        Ok(self.entry)
    }

    /// The local file holding the blob, if any (an object store's once
    /// spooled).
    fn local_file(&self) -> Option<&File> {
        match &self.src {
            Source::Local { blob, .. } => Some(blob),
            Source::Remote(r) => r.spooled.get(),
        }
    }

    fn copy_with<F>(&self, mut write_at: F) -> Result<(), CopyError>
    where
        F: FnMut(u64, &[u8]) -> std::io::Result<()>,
    {
        let blob = match (self.local_file(), &self.src) {
            (Some(f), _) | (None, Source::Local { blob: f, .. }) => f,
            (None, Source::Remote(r)) => return r.copy_with(&self.key, write_at),
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut offset = 0u64;
        let size = self.entry.size;
        loop {
            let n = match blob.read_at(&mut buf, offset) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.corrupt(format!("read error at offset {offset}: {e}"))),
            };
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            let end = offset + u64::try_from(n).unwrap_or(u64::MAX);
            if end > size {
                return Err(self.corrupt(format!("longer than the {size} bytes of its entry")));
            }
            hasher.update(chunk);
            write_at(offset, chunk).map_err(|source| CopyError::Sink {
                key: self.key.to_string(),
                offset,
                source,
            })?;
            offset = end;
        }
        if offset != size {
            return Err(self.corrupt(format!("{offset} bytes, its entry says {size}")));
        }
        let got = hex(&hasher.finalize());
        if got != self.entry.sha256 {
            return Err(self.corrupt(format!(
                "sha256 {got}, its entry says {}",
                self.entry.sha256
            )));
        }
        Ok(())
    }

    /// Copy the blob with `copy(blob)` (a kernel copy into the image, say),
    /// then check it against its entry by reading it back (from the page
    /// cache the copy just filled), feeding every byte to `on_bytes` too
    /// (another checksum). A corrupt blob drops its entry; its bytes, copied
    /// already, are for the caller to overwrite. A blob in an object store
    /// is spooled to a local file first ([`Hit::file`]); prefer
    /// [`Hit::copy_into`] when [`Hit::is_local`] is false.
    pub fn copy_then_verify(
        self,
        copy: impl FnOnce(&File) -> std::io::Result<()>,
        on_bytes: impl FnMut(&[u8]),
    ) -> Result<Entry, CopyError> {
        let file = self.file().map_err(|e| self.unreadable(e))?;
        copy(file).map_err(|source| CopyError::Sink {
            key: self.key.to_string(),
            offset: 0,
            source,
        })?;
        let mut on_bytes = on_bytes;
        self.copy_with(|_, b| {
            on_bytes(b);
            Ok(())
        })?;
        Ok(self.entry)
    }

    /// The pinned blob, for reading its beginning (a base image's MBR)
    /// before it is copied. Positional reads only: it is read again whole.
    /// A blob in an object store is downloaded (verified) into an unnamed
    /// temporary file the first time.
    pub fn file(&self) -> std::io::Result<&File> {
        match &self.src {
            Source::Local { blob, .. } => Ok(blob),
            Source::Remote(r) => r.file(&self.key),
        }
    }

    /// Check the whole blob against its entry (size and sha256) and return
    /// it, for a reader that needs a seekable file (an archive expanded
    /// from it). A corrupt blob drops its entry, as [`Hit::copy_into`] does.
    /// The file is rewound: whoever read it before (planning measures a
    /// cached archive from it) moved its cursor.
    pub fn verified_file(self) -> Result<(Entry, File), CopyError> {
        use std::io::Seek;
        let mut blob = match &self.src {
            // Spooling verifies it.
            Source::Remote(r) => r
                .file(&self.key)
                .and_then(File::try_clone)
                .map_err(|e| self.unreadable(e))?,
            Source::Local { blob, .. } => {
                self.copy_with(|_, _| Ok(()))?;
                blob.try_clone().map_err(|e| {
                    CopyError::Corrupt(CacheError::io(self.blob_path(), "opening")(e))
                })?
            }
        };
        blob.rewind()
            .map_err(|e| CopyError::Corrupt(CacheError::io(self.blob_path(), "rewinding")(e)))?;
        Ok((self.entry, blob))
    }

    fn blob_path(&self) -> PathBuf {
        match &self.src {
            Source::Local { blob_path, .. } => blob_path.clone(),
            Source::Remote(r) => r.remote.blob_url(&r.blob),
        }
    }

    /// A spool that failed: the store or the temporary file.
    fn unreadable(&self, e: std::io::Error) -> CopyError {
        match e.into_inner().map(|b| b.downcast::<CopyError>()) {
            Some(Ok(c)) => *c,
            Some(Err(other)) => CopyError::Corrupt(CacheError::io(self.blob_path(), "spooling")(
                std::io::Error::other(other),
            )),
            None => CopyError::Corrupt(CacheError::io(self.blob_path(), "spooling")(
                std::io::Error::other("failed"),
            )),
        }
    }

    /// Drop the entry (and its blob when nothing else uses it) and say why.
    fn corrupt(&self, reason: String) -> CopyError {
        // Best effort: if dropping fails too, the next lookup sees the same
        // corruption and tries again; the error we return is the corruption.
        match &self.src {
            Source::Local { inner, .. } => {
                let _ = inner.drop_entry(&self.key, &self.entry.sha256, true);
            }
            Source::Remote(r) => {
                let _ = r.remote.drop_entry(&self.key, &r.blob);
            }
        }
        CopyError::Corrupt(CacheError::CorruptBlob {
            key: self.key.to_string(),
            path: self.blob_path(),
            reason,
        })
    }
}
