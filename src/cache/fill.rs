//! `Filler`: a download being written into the cache, under its key lock.
//!
//! Writes are positional (the download's chunk sink may write from another
//! thread, and a resumed download may rewrite a range). The sha256 is
//! computed on the way while writes arrive in order; whatever was not hashed
//! in order (a write past the hashed prefix, or a rewrite inside it) is read
//! back from the temp file at commit, so the digest is always that of the
//! bytes on disk. The written ranges are tracked: a commit with a hole is
//! refused, so an entry never points at an incomplete blob.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::entry::{Entry, FillMeta};
use super::error::CacheError;
use super::key::Key;
use super::lock::LockFile;
use super::remote::{Remote, RemoteFill};
use super::{hex, Inner, COPY_BUFFER};

#[derive(Debug, Default)]
struct Progress {
    hasher: Sha256,
    /// Bytes `[0, hashed)` are in `hasher`.
    hashed: u64,
    /// A rewrite inside the hashed prefix: hash everything again at commit.
    rehash: bool,
    /// Written ranges, sorted, merged, half-open.
    ranges: Vec<(u64, u64)>,
}

impl Progress {
    fn add_range(&mut self, start: u64, end: u64) {
        let mut merged = (start, end);
        self.ranges.retain(|&(s, e)| {
            if e < merged.0 || s > merged.1 {
                true
            } else {
                merged = (merged.0.min(s), merged.1.max(e));
                false
            }
        });
        let at = self.ranges.partition_point(|&(s, _)| s < merged.0);
        self.ranges.insert(at, merged);
    }
}

/// An in-flight cache fill. Dropping it abandons the fill (the temp file is
/// removed, the key lock released; an object store's multipart upload is
/// aborted).
#[derive(Debug)]
pub struct Filler {
    pub(crate) key: Key,
    imp: Imp,
}

#[derive(Debug)]
enum Imp {
    Local {
        inner: Arc<Inner>,
        key_lock: LockFile,
        tmp: NamedTempFile,
        progress: Mutex<Progress>,
    },
    Remote(RemoteFill),
}

impl Filler {
    pub(crate) fn new(inner: Arc<Inner>, key: Key, key_lock: LockFile, tmp: NamedTempFile) -> Self {
        Filler {
            key,
            imp: Imp::Local {
                inner,
                key_lock,
                tmp,
                progress: Mutex::new(Progress::default()),
            },
        }
    }

    /// A fill of an object store's cache: no lock (two workers may fill
    /// the same key; one entry wins), the upload starts with the first
    /// write.
    pub(crate) fn remote(remote: Arc<Remote>, key: Key) -> Result<Self, CacheError> {
        Ok(Filler {
            key,
            imp: Imp::Remote(RemoteFill::new(remote)?),
        })
    }

    /// The key being filled.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Write `data` at `offset` of the payload. Callable from any thread.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        if data.is_empty() {
            return Ok(());
        }
        let (tmp, progress) = match &self.imp {
            Imp::Local { tmp, progress, .. } => (tmp, progress),
            Imp::Remote(r) => return r.write_at(&self.key, offset, data),
        };
        let end = u64::try_from(data.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .ok_or_else(|| CacheError::IncompleteFill {
                key: self.key.to_string(),
                reason: format!("write at offset {offset} overflows"),
            })?;
        tmp.as_file()
            .write_all_at(data, offset)
            .map_err(CacheError::io(tmp.path(), "writing"))?;
        // A poisoned lock only means another writer panicked; the state is
        // still coherent (every field is updated by whole assignments).
        let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
        if offset < p.hashed {
            p.rehash = true;
        } else if offset == p.hashed && !p.rehash {
            p.hasher.update(data);
            p.hashed = end;
        }
        p.add_range(offset, end);
        Ok(())
    }

    /// Publish the payload as the entry of the key, `size` bytes long.
    ///
    /// Checks that exactly `[0, size)` was written, computes the sha256 of
    /// what is on disk, renames the blob into place and then writes the
    /// entry (made durable by [`super::Cache::sync`]). The caller verifies the config's checksum before
    /// committing (a wrong payload must be dropped, not committed).
    pub fn commit(self, size: u64, meta: FillMeta) -> Result<Entry, CacheError> {
        let (key, inner, key_lock, tmp, progress) = match self.imp {
            Imp::Local {
                inner,
                key_lock,
                tmp,
                progress,
            } => (self.key, inner, key_lock, tmp, progress),
            Imp::Remote(r) => return r.commit(&self.key, size, meta),
        };
        let mut p = progress
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let incomplete = |reason: String| CacheError::IncompleteFill {
            key: key.to_string(),
            reason,
        };
        let covered = match p.ranges.as_slice() {
            [] => size == 0,
            [(0, end)] => *end == size,
            _ => false,
        };
        if !covered {
            return Err(incomplete(format!(
                "expected bytes 0..{size}, wrote {:?}",
                p.ranges
            )));
        }
        let file = tmp.as_file();
        let on_disk = file
            .metadata()
            .map_err(CacheError::io(tmp.path(), "stat"))?
            .len();
        if on_disk != size {
            return Err(incomplete(format!(
                "temp file is {on_disk} bytes, expected {size}"
            )));
        }
        if p.rehash {
            p.hasher = Sha256::new();
            p.hashed = 0;
        }
        let mut buf = vec![0u8; COPY_BUFFER];
        while p.hashed < size {
            let want = usize::try_from(size - p.hashed).map_or(buf.len(), |n| n.min(buf.len()));
            let n = file
                .read_at(&mut buf[..want], p.hashed)
                .map_err(CacheError::io(tmp.path(), "reading back"))?;
            if n == 0 {
                return Err(incomplete(format!(
                    "temp file ends at {} of {size}",
                    p.hashed
                )));
            }
            p.hasher.update(&buf[..n]);
            p.hashed += u64::try_from(n).unwrap_or(u64::MAX);
        }
        let sha256 = hex(&p.hasher.finalize());
        // Not synced here: see store::write_atomic (one syncfs per build).
        let entry = inner.publish(&key, tmp, size, sha256, meta)?;
        drop(key_lock);
        Ok(entry)
    }
}

/// The cache side of a download: writes into a [`Filler`]; its first
/// error is kept and ends the filling, never the download.
pub struct FillSink<'f> {
    filler: Option<&'f Filler>,
    /// The first cache error.
    pub failed: Option<CacheError>,
    /// The end of the furthest write: the payload's size once complete.
    pub end: u64,
}

impl<'f> FillSink<'f> {
    /// Fill `filler` (None: a no-op side).
    pub fn new(filler: Option<&'f Filler>) -> Self {
        Self {
            filler,
            failed: None,
            end: 0,
        }
    }
}

impl crate::io::ChunkSink for FillSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.end = self
            .end
            .max(offset.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX)));
        if let Some(f) = self.filler {
            if let Err(e) = f.write_at(offset, data) {
                self.failed = Some(e);
                self.filler = None;
            }
        }
        Ok(())
    }
}
