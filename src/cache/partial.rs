//! Partial downloads in a cache directory (`v1/partial/<h>` and
//! `<h>.json`): a fill that stops before its end, for any reason, `kill -9`
//! included, leaves what it wrote there, with an entry JSON holding the
//! server's validators, the payload's full size (`partial`) and the bytes
//! noted so far (`size`). The next fill of the key continues it when the
//! payload is the same (docs/design.md, "Resumable downloads").
//!
//! The writer holds the key's lock (`v1/locks/<h>.lock`) for as long as it
//! lives, so a partial is never continued, evicted or swept while being
//! written; `flock` dies with its process, so one left by `kill -9` is free
//! at once.
//!
//! Only a payload written in order is kept: its file's length is then
//! exactly the bytes that arrived (a write cut by `kill -9` leaves a
//! shorter prefix, never a gap; ext4 and XFS order the size update after
//! the data, so after a power cut the length does not cover unwritten
//! blocks). A write out of order removes the JSON at once: the data is
//! then no longer a partial, and is swept.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::entry::{unix_now, Entry, FillMeta, Freshness};
use super::error::CacheError;
use super::key::Key;
use super::layout::{self, Layout, Read};
use super::lock::{LockFile, Mode};

/// How often a growing partial's JSON is rewritten with its byte count
/// (for `--show-cache`): every 64 MiB, 16 renames per GiB. A resume reads
/// the data file's length, not this count.
pub(crate) const NOTE_EVERY: u64 = 64 << 20;

/// A partial download being written, under its key's lock.
#[derive(Debug)]
pub(crate) struct PartialFile {
    file: File,
    data: PathBuf,
    json: PathBuf,
    layout: Layout,
    entry: Entry,
    /// Still written in order (else its JSON is gone).
    resumable: AtomicBool,
    /// Published as a blob: nothing to keep or remove.
    published: AtomicBool,
}

impl PartialFile {
    /// The partial of `key` (a payload of `total` bytes, described by
    /// `meta`): the one a stopped fill left when it is the same payload
    /// (same validators, one `If-Range` can check, shorter than `total`),
    /// else a new one. Returns it and the offset the payload continues at.
    /// The caller holds the key's lock.
    pub(crate) fn open(
        layout: &Layout,
        key: &Key,
        meta: &FillMeta,
        total: u64,
    ) -> Result<(PartialFile, u64), CacheError> {
        let (data, json) = layout.partial(&key.hash());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&data)
            .map_err(CacheError::io(&data, "opening"))?;
        let len = file
            .metadata()
            .map_err(CacheError::io(&data, "stat"))?
            .len();
        let continued = match layout::read_entry(&json)? {
            Read::Found(e)
                if e.is_for(key)
                    && e.partial == Some(total)
                    && e.validators.compare(&meta.validators) == Freshness::Fresh
                    && meta.validators.if_range().is_some()
                    && e.size <= len
                    && 0 < len
                    && len < total =>
            {
                Some(*e)
            }
            _ => None,
        };
        let (entry, offset) = match continued {
            Some(mut e) => {
                e.size = len;
                e.last_used = unix_now();
                (e, len)
            }
            None => {
                file.set_len(0)
                    .map_err(CacheError::io(&data, "truncating"))?;
                let e = Entry::partial(key, total, meta.clone(), unix_now());
                (e, 0)
            }
        };
        let partial = PartialFile {
            file,
            data,
            json,
            layout: layout.clone(),
            entry,
            resumable: AtomicBool::new(true),
            published: AtomicBool::new(false),
        };
        partial.note(offset)?;
        Ok((partial, offset))
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    pub(crate) fn path(&self) -> &Path {
        &self.data
    }

    /// Record `bytes` as the count in its JSON.
    pub(crate) fn note(&self, bytes: u64) -> Result<(), CacheError> {
        if !self.resumable.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut e = self.entry.clone();
        e.size = bytes;
        e.last_used = unix_now();
        layout::write_entry(&self.layout, &self.json, &e)
    }

    /// Written out of order: no longer continued by anyone.
    pub(crate) fn forget(&self) {
        if self.resumable.swap(false, Ordering::Relaxed) {
            let _ = std::fs::remove_file(&self.json);
        }
    }

    /// Make the data `dest` (a blob), and the partial gone.
    pub(crate) fn publish(&self, dest: &Path) -> Result<(), CacheError> {
        std::fs::rename(&self.data, dest).map_err(CacheError::io(dest, "renaming into place"))?;
        self.published.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.json);
        Ok(())
    }
}

impl Drop for PartialFile {
    /// A fill abandoned: kept with its count when it holds part of the
    /// payload in order; removed otherwise (nothing, all of it unpublished
    /// — a payload that failed its checksum —, or written out of order).
    fn drop(&mut self) {
        if self.published.load(Ordering::Relaxed) {
            return;
        }
        let len = self.file.metadata().map_or(0, |m| m.len());
        let total = self.entry.partial.unwrap_or(0);
        if self.resumable.load(Ordering::Relaxed)
            && 0 < len
            && len < total
            && self.note(len).is_ok()
        {
            return;
        }
        let _ = std::fs::remove_file(&self.json);
        let _ = std::fs::remove_file(&self.data);
    }
}

/// Every partial download, as entries (`size`: the bytes its data file
/// holds), in no particular order.
pub(crate) fn list(layout: &Layout) -> Result<Vec<Entry>, CacheError> {
    let dir = layout.partial_dir();
    let items = match std::fs::read_dir(&dir) {
        Ok(items) => items,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CacheError::io(&dir, "listing")(e)),
    };
    let mut out = Vec::new();
    for item in items.filter_map(Result::ok) {
        let json = item.path();
        if json.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Read::Found(mut e) = layout::read_entry(&json)? else {
            continue;
        };
        let Some(total) = e.partial else { continue };
        let Ok(md) = std::fs::metadata(json.with_extension("")) else {
            continue;
        };
        e.size = md.len().min(total);
        out.push(*e);
    }
    Ok(out)
}

/// Remove `key_hash`'s partial unless its writer lives. `false` when busy.
pub(crate) fn remove(layout: &Layout, key_hash: &str) -> Result<bool, CacheError> {
    let Some(_lock) = LockFile::try_acquire(&layout.key_lock(key_hash), Mode::Exclusive)? else {
        return Ok(false);
    };
    let (data, json) = layout.partial(key_hash);
    remove_if_there(&json)?;
    remove_if_there(&data)?;
    Ok(true)
}

/// Remove what no partial owns: data without its JSON (written out of
/// order, or its JSON lost) and JSON without data, whose key is free.
pub(crate) fn sweep(layout: &Layout) -> Result<usize, CacheError> {
    let dir = layout.partial_dir();
    let Ok(items) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for item in items.filter_map(Result::ok) {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        let (h, other) = match name.strip_suffix(".json") {
            Some(h) => (h.to_string(), path.with_extension("")),
            None => (name.clone(), path.with_extension("json")),
        };
        if other.exists() {
            continue;
        }
        let Some(_lock) = LockFile::try_acquire(&layout.key_lock(&h), Mode::Exclusive)? else {
            continue;
        };
        if !other.exists() && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

fn remove_if_there(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::io(path, "removing")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::entry::Validators;
    use std::os::unix::fs::FileExt;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn meta(etag: &str) -> FillMeta {
        FillMeta {
            validators: Validators {
                etag: Some(etag.to_string()),
                content_length: Some(100),
                ..Validators::default()
            },
            source: "http://h/f".into(),
        }
    }

    fn setup() -> Result<(tempfile::TempDir, Layout, Key), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        layout.create()?;
        let key = Key::file("http://h/f").ok_or("key")?;
        Ok((dir, layout, key))
    }

    #[test]
    fn a_stopped_fill_is_continued_when_the_payload_is_the_same() -> TestResult {
        let (_d, layout, key) = setup()?;
        let (p, at) = PartialFile::open(&layout, &key, &meta("\"a\""), 100)?;
        assert_eq!(at, 0);
        p.file().write_all_at(&[7u8; 40], 0)?;
        drop(p); // stopped early: kept
        let listed = list(&layout)?;
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].size, listed[0].percent()), (40, Some(40)));
        let (p, at) = PartialFile::open(&layout, &key, &meta("\"a\""), 100)?;
        assert_eq!(at, 40, "continued");
        drop(p);
        // Another ETag: started over, the old bytes gone.
        let (p, at) = PartialFile::open(&layout, &key, &meta("\"b\""), 100)?;
        assert_eq!(at, 0);
        assert_eq!(p.file().metadata()?.len(), 0);
        drop(p);
        assert!(list(&layout)?.is_empty(), "an empty partial is not kept");
        Ok(())
    }

    #[test]
    fn weak_etags_complete_and_unordered_partials_are_not_continued() -> TestResult {
        let (_d, layout, key) = setup()?;
        let (p, _) = PartialFile::open(&layout, &key, &meta("W/\"a\""), 100)?;
        p.file().write_all_at(&[7u8; 40], 0)?;
        drop(p);
        let (p, at) = PartialFile::open(&layout, &key, &meta("W/\"a\""), 100)?;
        assert_eq!(at, 0, "If-Range can't check a weak ETag");
        p.file().write_all_at(&[7u8; 100], 0)?;
        drop(p);
        assert!(
            list(&layout)?.is_empty(),
            "a whole payload unpublished goes"
        );
        let (p, _) = PartialFile::open(&layout, &key, &meta("\"a\""), 100)?;
        p.file().write_all_at(&[7u8; 10], 50)?;
        p.forget();
        drop(p);
        assert!(list(&layout)?.is_empty());
        assert_eq!(sweep(&layout)?, 0, "nothing left to sweep");
        Ok(())
    }

    #[test]
    fn eviction_and_the_sweep_leave_a_live_writer_alone() -> TestResult {
        let (_d, layout, key) = setup()?;
        let h = key.hash();
        let lock = LockFile::acquire(
            &layout.key_lock(&h),
            Mode::Exclusive,
            std::time::Duration::from_secs(1),
        )?;
        let (p, _) = PartialFile::open(&layout, &key, &meta("\"a\""), 100)?;
        p.file().write_all_at(&[1u8; 30], 0)?;
        p.note(30)?;
        assert!(!remove(&layout, &h)?, "busy");
        std::fs::remove_file(layout.partial(&h).1)?;
        assert_eq!(sweep(&layout)?, 0, "its writer lives");
        drop(lock);
        assert_eq!(sweep(&layout)?, 1, "data without JSON, writer gone");
        std::mem::forget(p);
        Ok(())
    }
}
