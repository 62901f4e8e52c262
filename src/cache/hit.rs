//! `Hit`: an entry found in the cache and its blob, read through the
//! backend's [`Blob`]: a local file held open (pinned: an eviction that
//! unlinks it later can't break this reader), or an object named in a store
//! (streamed on use; one evicted meanwhile is a [`CopyError::Corrupt`]: the
//! caller downloads instead).
//!
//! Whatever the backend, the bytes are copied into the caller's positional
//! sink and hashed on the way; the digest and length are checked at the end,
//! here. A corrupt or truncated blob drops its entry and reports
//! [`CopyError::Corrupt`]: the caller re-downloads over the same range, so
//! the bad bytes never stay in an image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use super::entry::{Entry, Validators};
use super::error::{CacheError, CopyError};
use super::key::Key;
use super::options::COPY_BUFFER;
use crate::io::hex;

/// Why a backend's [`Blob::read`] stopped; [`Hit`] makes it a [`CopyError`].
#[derive(Debug)]
pub(crate) enum Stop {
    /// The sink failed at this payload offset.
    Sink(u64, std::io::Error),
    /// The blob does not match its entry: drop the entry.
    Corrupt(String),
    /// The blob could not be read (gone, store unreachable): keep the entry.
    Unreadable(CacheError),
}

/// A reader's side of [`Blob::read`]: the bytes at a payload offset.
pub(crate) type Each<'a> = dyn FnMut(u64, &[u8]) -> Result<(), Stop> + 'a;

/// The bytes of a hit, as one backend holds them.
pub(crate) trait Blob: std::fmt::Debug + Send + Sync {
    /// Where the blob is (a path, or an object's URL), for messages.
    fn location(&self) -> PathBuf;

    /// The blob as an open local file, if it is one.
    fn opened(&self) -> Option<&File>;

    /// Hand the blob's bytes to `each` in order, from offset 0 to its end,
    /// stopping at `each`'s first error.
    fn read(&self, each: &mut Each<'_>) -> Result<(), Stop>;

    /// Drop `key`'s entry (and the blob), found corrupt, if it still names
    /// this blob.
    fn forget(&self, key: &Key, entry: &Entry) -> Result<(), CacheError>;
}

/// [`Blob::read`] of a local file: sequential reads of [`COPY_BUFFER`]
/// bytes. A read error is corruption (the entry goes).
pub(crate) fn read_file(file: &File, each: &mut Each<'_>) -> Result<(), Stop> {
    let mut buf = vec![0u8; COPY_BUFFER];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut buf, offset) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stop::Corrupt(format!("read error at offset {offset}: {e}"))),
        };
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            return Ok(());
        };
        each(offset, chunk)?;
        offset = offset.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
}

/// An entry found by `Cache::lookup`.
#[derive(Debug)]
pub struct Hit {
    key: Key,
    entry: Entry,
    due: bool,
    blob: Box<dyn Blob>,
    /// A verified local copy of a blob that is no local file (an object
    /// store's), made once for readers that need a file.
    spooled: OnceLock<File>,
}

impl Hit {
    pub(crate) fn new(key: Key, entry: Entry, due: bool, blob: Box<dyn Blob>) -> Hit {
        Hit {
            key,
            entry,
            due,
            blob,
            spooled: OnceLock::new(),
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
        self.local_file().is_some()
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
        let file = self.spool()?;
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
    /// temporary file the first time; its failure is an
    /// `std::io::Error::other` of the [`CopyError`].
    pub fn file(&self) -> std::io::Result<&File> {
        self.spool().map_err(std::io::Error::other)
    }

    /// Check the whole blob against its entry (size and sha256) and return
    /// it, for a reader that needs a seekable file (an archive expanded
    /// from it). A corrupt blob drops its entry, as [`Hit::copy_into`] does.
    /// The file is rewound: whoever read it before (planning measures a
    /// cached archive from it) moved its cursor.
    pub fn verified_file(self) -> Result<(Entry, File), CopyError> {
        use std::io::Seek;
        let opened = match self.blob.opened() {
            Some(f) => {
                self.copy_with(|_, _| Ok(()))?;
                f
            }
            // Spooling verifies it (or did, the first time).
            None => self.spool()?,
        };
        let mut file = opened
            .try_clone()
            .map_err(|e| CopyError::Corrupt(CacheError::io(self.blob.location(), "opening")(e)))?;
        file.rewind().map_err(|e| {
            CopyError::Corrupt(CacheError::io(self.blob.location(), "rewinding")(e))
        })?;
        Ok((self.entry, file))
    }

    /// The local file holding the blob, if any (an object store's once
    /// spooled).
    fn local_file(&self) -> Option<&File> {
        self.blob.opened().or_else(|| self.spooled.get())
    }

    /// The local file holding the blob, spooling an object store's into an
    /// unnamed temporary file (verified) the first time.
    fn spool(&self) -> Result<&File, CopyError> {
        if let Some(f) = self.local_file() {
            return Ok(f);
        }
        let tmp = tempfile::tempfile()
            .map_err(|e| CopyError::Corrupt(CacheError::io(self.blob.location(), "spooling")(e)))?;
        self.copy_with(|off, b| tmp.write_all_at(b, off))?;
        Ok(self.spooled.get_or_init(|| tmp))
    }

    /// The copy every method makes: the blob's bytes (the spooled file's,
    /// once there is one) into `write_at`, hashed; size and sha256 checked
    /// against the entry at the end.
    fn copy_with<F>(&self, mut write_at: F) -> Result<(), CopyError>
    where
        F: FnMut(u64, &[u8]) -> std::io::Result<()>,
    {
        let size = self.entry.size;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mut each = |offset: u64, chunk: &[u8]| {
            let end = u64::try_from(chunk.len())
                .ok()
                .and_then(|n| offset.checked_add(n))
                .filter(|&end| end <= size)
                .ok_or_else(|| {
                    Stop::Corrupt(format!("longer than the {size} bytes of its entry"))
                })?;
            hasher.update(chunk);
            write_at(offset, chunk).map_err(|e| Stop::Sink(offset, e))?;
            done = end;
            Ok(())
        };
        let read = match self.spooled.get() {
            Some(f) => read_file(f, &mut each),
            None => self.blob.read(&mut each),
        };
        match read {
            Ok(()) => {}
            Err(Stop::Sink(offset, source)) => {
                return Err(CopyError::Sink {
                    key: self.key.to_string(),
                    offset,
                    source,
                })
            }
            Err(Stop::Corrupt(reason)) => return Err(self.corrupt(reason)),
            // Gone (evicted meanwhile) or unreadable: the network instead.
            Err(Stop::Unreadable(e)) => return Err(CopyError::Corrupt(e)),
        }
        if done != size {
            return Err(self.corrupt(format!("{done} bytes, its entry says {size}")));
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

    /// Drop the entry (and its blob when nothing else uses it) and say why.
    fn corrupt(&self, reason: String) -> CopyError {
        // Best effort: if dropping fails too, the next lookup sees the same
        // corruption and tries again; the error we return is the corruption.
        let _ = self.blob.forget(&self.key, &self.entry);
        CopyError::Corrupt(CacheError::CorruptBlob {
            key: self.key.to_string(),
            path: self.blob.location(),
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::cache::entry::FillMeta;
    use crate::cache::key::EntryKind;

    /// A blob in memory, delivered in `chunk`-byte pieces, that counts
    /// [`Blob::forget`] calls.
    #[derive(Debug)]
    struct Mem {
        bytes: Vec<u8>,
        chunk: usize,
        forgotten: Arc<AtomicUsize>,
        unreadable: bool,
    }

    impl Blob for Mem {
        fn location(&self) -> PathBuf {
            "mem://blob".into()
        }
        fn opened(&self) -> Option<&File> {
            None
        }
        fn read(&self, each: &mut Each<'_>) -> Result<(), Stop> {
            if self.unreadable {
                return Err(Stop::Unreadable(CacheError::Store {
                    url: "mem://".into(),
                    action: "reading a blob",
                    source: "gone".into(),
                }));
            }
            for (i, c) in self.bytes.chunks(self.chunk).enumerate() {
                each(u64::try_from(i * self.chunk).unwrap_or(u64::MAX), c)?;
            }
            Ok(())
        }
        fn forget(&self, _: &Key, _: &Entry) -> Result<(), CacheError> {
            self.forgotten.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    }

    fn hit(stored: &[u8], entry_of: &[u8], unreadable: bool) -> (Hit, Arc<AtomicUsize>) {
        let key = Key::from_parts(EntryKind::File, "files/https/h/a", None);
        let sha = hex(&Sha256::digest(entry_of));
        let size = u64::try_from(entry_of.len()).unwrap_or(u64::MAX);
        let entry = Entry::published(&key, size, sha, FillMeta::default(), 1);
        let forgotten = Arc::new(AtomicUsize::new(0));
        let blob = Mem {
            bytes: stored.to_vec(),
            chunk: 3,
            forgotten: Arc::clone(&forgotten),
            unreadable,
        };
        (Hit::new(key, entry, false, Box::new(blob)), forgotten)
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn a_good_blob_is_copied_at_its_offsets() -> TestResult {
        let (h, forgotten) = hit(b"0123456789", b"0123456789", false);
        assert!(!h.is_local());
        let mut image = vec![b'.'; 12];
        let entry = h.copy_into(|off, b| {
            let at = usize::try_from(off).unwrap_or(usize::MAX) + 2;
            image[at..at + b.len()].copy_from_slice(b);
            Ok(())
        })?;
        assert_eq!(entry.size, 10);
        assert_eq!(&image, b"..0123456789");
        assert_eq!(forgotten.load(Ordering::Relaxed), 0);
        Ok(())
    }

    #[test]
    fn short_long_and_flipped_blobs_are_corrupt_and_forgotten() {
        for (stored, why) in [
            (&b"01234"[..], "5 bytes, its entry says 10"),
            (&b"0123456789abc"[..], "longer than the 10 bytes"),
            (&b"0123456780"[..], "sha256 "),
        ] {
            let (h, forgotten) = hit(stored, b"0123456789", false);
            match h.copy_into(|_, _| Ok(())) {
                Err(CopyError::Corrupt(e @ CacheError::CorruptBlob { .. })) => {
                    let text = e.to_string();
                    assert!(text.contains(why), "{text}");
                    assert!(text.contains("mem://blob"), "{text}");
                }
                other => panic!("{why}: {other:?}"),
            }
            assert_eq!(forgotten.load(Ordering::Relaxed), 1, "{why}");
        }
    }

    #[test]
    fn an_unreadable_blob_keeps_its_entry_and_a_sink_error_is_the_builds() {
        let (h, forgotten) = hit(b"", b"0123456789", true);
        assert!(matches!(
            h.copy_into(|_, _| Ok(())),
            Err(CopyError::Corrupt(CacheError::Store { .. }))
        ));
        assert_eq!(forgotten.load(Ordering::Relaxed), 0);
        let (h, _) = hit(b"0123456789", b"0123456789", false);
        match h.copy_into(|off, _| {
            if off >= 3 {
                Err(std::io::Error::other("disk full"))
            } else {
                Ok(())
            }
        }) {
            Err(CopyError::Sink { offset: 3, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_streamed_blob_is_spooled_once_verified_and_rewound() -> TestResult {
        let (h, _) = hit(b"0123456789", b"0123456789", false);
        let mut head = [0u8; 4];
        h.file()?.read_exact_at(&mut head, 0)?;
        assert_eq!(&head, b"0123");
        assert!(h.is_local());
        let (entry, mut f) = h.verified_file()?;
        assert_eq!(entry.size, 10);
        let mut all = String::new();
        std::io::Read::read_to_string(&mut f, &mut all)?;
        assert_eq!(all, "0123456789");
        Ok(())
    }
}
