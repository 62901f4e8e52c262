//! The directory backend's on-disk layout (docs/design.md, "The download
//! cache") and its atomic file operations. Nothing here needs more of a
//! filesystem than `rename`, `flock` and plain files: no xattrs, no hard
//! links, no reflinks.
//!
//! ```text
//! CACHE/  CACHEDIR.TAG  policy.yaml  .lock
//!   v1/blobs/sha256/ab/<hex>            immutable payloads
//!   v1/entries/<h[0:2]>/<h>.json        h = Key::hash()
//!   v1/locks/<h>.lock                   one downloader per key (held for a fill)
//!   v1/locks/<h>.meta                   entry JSON read-modify-write (held briefly)
//!   v1/locks/sha256-<hex>.lock          blob publish vs blob removal
//!   v1/tmp/…                            in-flight files, each flock'ed by its owner
//!   v1/partial/<h>  <h>.json            a download that stopped early (its entry
//!                                       JSON with `partial`), continued by the next
//!                                       fill of the key; its writer holds <h>.lock
//! ```

use std::fs::{File, TryLockError};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::entry::Entry;
use super::error::CacheError;
use super::lock::{try_lock, Mode};

/// `CACHEDIR.TAG` content (https://bford.info/cachedir/): backup tools skip
/// the directory.
const CACHEDIR_TAG: &str = "Signature: 8a477f597d28d172789f06886806bc55\n\
# This file is a cache directory tag created by image-creator.\n\
# For information about cache directory tags, see https://bford.info/cachedir/\n";

/// Paths of one cache.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn v1(&self) -> PathBuf {
        self.root.join("v1")
    }

    pub(crate) fn global_lock(&self) -> PathBuf {
        self.root.join(".lock")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.v1().join("tmp")
    }

    pub(crate) fn entries_dir(&self) -> PathBuf {
        self.v1().join("entries")
    }

    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.v1().join("blobs/sha256")
    }

    pub(crate) fn partial_dir(&self) -> PathBuf {
        self.v1().join("partial")
    }

    /// A partial download's data and its metadata (an entry JSON).
    pub(crate) fn partial(&self, key_hash: &str) -> (PathBuf, PathBuf) {
        let dir = self.partial_dir();
        (dir.join(key_hash), dir.join(format!("{key_hash}.json")))
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.v1().join("locks")
    }

    pub(crate) fn blob(&self, sha256: &str) -> PathBuf {
        self.blobs_dir()
            .join(sha256.get(..2).unwrap_or("__"))
            .join(sha256)
    }

    pub(crate) fn entry(&self, key_hash: &str) -> PathBuf {
        self.entries_dir()
            .join(key_hash.get(..2).unwrap_or("__"))
            .join(format!("{key_hash}.json"))
    }

    pub(crate) fn key_lock(&self, key_hash: &str) -> PathBuf {
        self.locks_dir().join(format!("{key_hash}.lock"))
    }

    pub(crate) fn meta_lock(&self, key_hash: &str) -> PathBuf {
        self.locks_dir().join(format!("{key_hash}.meta"))
    }

    pub(crate) fn blob_lock(&self, sha256: &str) -> PathBuf {
        self.locks_dir().join(format!("sha256-{sha256}.lock"))
    }

    /// Create the directories and `CACHEDIR.TAG` (idempotent).
    pub(crate) fn create(&self) -> Result<(), CacheError> {
        for d in [
            self.blobs_dir(),
            self.entries_dir(),
            self.locks_dir(),
            self.tmp_dir(),
            self.partial_dir(),
        ] {
            fs_err::create_dir_all(&d).map_err(CacheError::io(&d, "creating directory"))?;
        }
        let tag = self.root.join("CACHEDIR.TAG");
        if !tag.exists() {
            write_atomic(self, &tag, CACHEDIR_TAG.as_bytes())?;
        }
        Ok(())
    }

    /// Remove the in-flight files whose owner is gone: their lock is free.
    /// Files whose owner is alive (lock held) are kept. Returns how many
    /// were removed.
    pub(crate) fn remove_orphans(&self) -> Result<usize, CacheError> {
        let dir = self.tmp_dir();
        let list = fs_err::read_dir(&dir).map_err(CacheError::io(&dir, "listing"))?;
        let mut removed = 0;
        for item in list {
            let item = item.map_err(CacheError::io(&dir, "listing"))?;
            let path = item.path();
            let Ok(file) = File::open(&path) else {
                continue; // gone meanwhile
            };
            match try_lock(&file, Mode::Exclusive) {
                Ok(()) => {
                    if std::fs::remove_file(&path).is_ok() {
                        removed += 1;
                    }
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(CacheError::io(&path, "locking")(e));
                }
            }
        }
        Ok(removed)
    }
}

/// A new in-flight file in `v1/tmp`, locked by us for as long as it lives
/// (removed on drop unless persisted).
pub(crate) fn create_tmp(layout: &Layout, prefix: &str) -> Result<NamedTempFile, CacheError> {
    let dir = layout.tmp_dir();
    // A cleaner may open and remove a file between its creation and our
    // lock: then the path no longer names our file (or our try_lock lost
    // the race), and we make another. Eight tries are plenty: each loss
    // needs a concurrent cleaner hitting a microsecond window.
    for _ in 0..8 {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&dir)
            .map_err(CacheError::io(&dir, "creating a temporary file in"))?;
        match try_lock(tmp.as_file(), Mode::Exclusive) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(e)) => return Err(CacheError::io(tmp.path(), "locking")(e)),
        }
        let ours = tmp
            .as_file()
            .metadata()
            .map_err(CacheError::io(tmp.path(), "stat"))?;
        match std::fs::metadata(tmp.path()) {
            Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => return Ok(tmp),
            _ => continue,
        }
    }
    Err(CacheError::io(&dir, "creating a temporary file in")(
        std::io::Error::other("lost the race with orphan cleanup 8 times"),
    ))
}

/// Replace `dest` with `data`: temp file in `v1/tmp`, rename. Atomic for
/// readers (they see the old or the new file, never a part). Not synced:
/// durability is one `syncfs` per build ([`super::Cache::sync`]); a file
/// lost to a power cut reads as missing or corrupt and is dropped, never
/// trusted (every blob is hashed whenever it is used).
pub(crate) fn write_atomic(layout: &Layout, dest: &Path, data: &[u8]) -> Result<(), CacheError> {
    let mut tmp = create_tmp(layout, "meta-")?;
    tmp.write_all(data)
        .map_err(CacheError::io(tmp.path(), "writing"))?;
    if let Some(parent) = dest.parent() {
        fs_err::create_dir_all(parent).map_err(CacheError::io(parent, "creating directory"))?;
    }
    tmp.persist(dest)
        .map_err(|e| CacheError::io(dest, "renaming into place")(e.error))?;
    Ok(())
}

/// What reading an entry file found.
#[derive(Debug)]
pub(crate) enum Read {
    Missing,
    Corrupt,
    Found(Box<Entry>),
}

pub(crate) fn read_entry(path: &Path) -> Result<Read, CacheError> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice::<Entry>(&bytes) {
            Ok(e) => Ok(Read::Found(Box::new(e))),
            Err(_) => Ok(Read::Corrupt),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Read::Missing),
        Err(e) => Err(CacheError::io(path, "reading")(e)),
    }
}

pub(crate) fn write_entry(layout: &Layout, path: &Path, entry: &Entry) -> Result<(), CacheError> {
    let json = serde_json::to_vec_pretty(entry)
        .map_err(|e| CacheError::io(path, "serialising")(std::io::Error::other(e)))?;
    write_atomic(layout, path, &json)
}

/// Every entry file: (path, what it holds).
pub(crate) fn list_entries(layout: &Layout) -> Result<Vec<(PathBuf, Read)>, CacheError> {
    let dir = layout.entries_dir();
    let mut out = Vec::new();
    let list = match std::fs::read_dir(&dir) {
        Ok(list) => list,
        // A cache opened read-only that was never written.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(CacheError::io(&dir, "listing")(e)),
    };
    let mut shards: Vec<PathBuf> = list.filter_map(|d| d.ok().map(|d| d.path())).collect();
    shards.sort();
    for shard in shards {
        let Ok(files) = std::fs::read_dir(&shard) else {
            continue;
        };
        let mut files: Vec<PathBuf> = files
            .filter_map(|d| d.ok().map(|d| d.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for f in files {
            let read = read_entry(&f)?;
            out.push((f, read));
        }
    }
    Ok(out)
}
