//! The directory backend of the download cache (`--cache-dir DIR`;
//! docs/design.md, "The download cache"): content-addressed blobs plus one
//! JSON entry per key (the layout and its atomic writes: `layout.rs`), on any
//! filesystem (plain files, `rename` and `flock`; no xattrs), safe for
//! several builds at once and for `kill -9` at any moment.
//!
//! # Concurrency
//! - `.lock`: shared by every open cache; exclusive only for
//!   `collect_garbage`, which skips when a build holds it.
//! - `v1/locks/<h>.lock`: held by a fill for the whole download, so one
//!   build downloads a key while others wait in `Cache::claim` (with the
//!   `CacheOptions::key_lock_timeout`) and then hit. Eviction only
//!   try-locks it: busy means skip.
//! - Readers hold the blob `File` open from `lookup` on: an unlink by an
//!   eviction can't break them.
//! - Publishing: blob synced in `v1/tmp`, renamed into `v1/blobs` (replacing
//!   an existing one, which has the same content by name, so the entry always
//!   points at bytes just verified), then the entry JSON by temp + rename.
//!   Blob publication and blob removal take the blob's lock, and removal
//!   first checks no entry references the blob.
//!
//! # Fills
//! Writes are positional (the download's chunk sink may write from another
//! thread, and a resumed download may rewrite a range). The sha256 is
//! computed on the way while writes arrive in order; whatever was not hashed
//! in order (a write past the hashed prefix, or a rewrite inside it) is read
//! back from the temp file at commit, so the digest is always that of the
//! bytes on disk. The written ranges are tracked: a commit with a hole is
//! refused, so an entry never points at an incomplete blob.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use super::backend::{Access, Backend, Found};
use super::entry::{unix_now, Entry, FillMeta};
use super::error::CacheError;
use super::evict::{plan, EvictReport};
use super::fill::{Fill, Filler};
use super::hit::{read_file, Blob, Each, Stop};
use super::key::Key;
use super::layout::{self, Layout, Read};
use super::lock::{LockFile, Mode};
use super::options::{CacheOptions, COPY_BUFFER};
use super::partial::{self, PartialFile, NOTE_EVERY};
use super::policy::Policy;
use crate::io::hex;

/// A cache directory.
#[derive(Debug)]
pub(crate) struct Local {
    layout: Layout,
    policy: Policy,
    options: CacheOptions,
    /// `.lock`, shared; `None` when opened read-only.
    global: Option<LockFile>,
}

impl Local {
    /// Open the cache in `dir`: read `policy.yaml`; `None` if the policy
    /// disables the cache (nothing created). Otherwise, unless read-only,
    /// create the layout, take `.lock` shared and remove orphaned temp
    /// files; read-only, nothing is created, locked, repaired or removed
    /// (an absent directory is an empty cache).
    pub(crate) fn open(
        dir: &Path,
        options: CacheOptions,
        access: Access,
    ) -> Result<Option<Local>, CacheError> {
        let policy = Policy::load(dir)?;
        if !policy.enabled {
            return Ok(None);
        }
        let layout = Layout::new(dir);
        let global = match access {
            Access::ReadOnly => None,
            Access::ReadWrite => {
                layout.create()?;
                let global = LockFile::acquire(
                    &layout.global_lock(),
                    Mode::Shared,
                    options.global_lock_timeout,
                )?;
                layout.remove_orphans()?;
                partial::sweep(&layout)?;
                Some(global)
            }
        };
        Ok(Some(Local {
            layout,
            policy,
            options,
            global,
        }))
    }
}

impl Backend for Local {
    fn shown(&self) -> &Path {
        self.layout.root()
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }

    fn is_read_only(&self) -> bool {
        self.global.is_none()
    }

    fn lookup(self: Arc<Self>, key: &Key) -> Result<Option<Found>, CacheError> {
        let h = key.hash();
        let entry = match layout::read_entry(&self.layout.entry(&h))? {
            Read::Missing => return Ok(None),
            Read::Corrupt => {
                self.remove_corrupt_json(&h)?;
                return Ok(None);
            }
            Read::Found(e) => *e,
        };
        if !entry.is_for(key) {
            return Ok(None);
        }
        let path = self.layout.blob(&entry.sha256);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.drop_entry(key, &entry.sha256, false)?;
                return Ok(None);
            }
            Err(e) => return Err(CacheError::io(&path, "opening")(e)),
        };
        let len = file
            .metadata()
            .map_err(CacheError::io(&path, "stat"))?
            .len();
        if len != entry.size {
            self.drop_entry(key, &entry.sha256, true)?;
            return Ok(None);
        }
        let blob = LocalBlob {
            local: self,
            file,
            path,
        };
        Ok(Some((entry, Box::new(blob))))
    }

    fn begin_fill(self: Arc<Self>, key: &Key) -> Result<Filler, CacheError> {
        self.writable("filling")?;
        let lock = LockFile::acquire(
            &self.layout.key_lock(&key.hash()),
            Mode::Exclusive,
            self.options.key_lock_timeout,
        )?;
        self.fill(key, lock)
    }

    fn try_begin_fill(self: Arc<Self>, key: &Key) -> Result<Option<Filler>, CacheError> {
        self.writable("filling")?;
        let path = self.layout.key_lock(&key.hash());
        let Some(lock) = LockFile::try_acquire(&path, Mode::Exclusive)? else {
            return Ok(None);
        };
        self.fill(key, lock).map(Some)
    }

    fn update(&self, key: &Key, f: &dyn Fn(&mut Entry)) -> Result<bool, CacheError> {
        self.writable("updating an entry")?;
        let h = key.hash();
        let _meta = self.meta_lock(&h)?;
        let path = self.layout.entry(&h);
        match layout::read_entry(&path)? {
            Read::Found(mut e) => {
                f(&mut e);
                layout::write_entry(&self.layout, &path, &e)?;
                Ok(true)
            }
            Read::Corrupt | Read::Missing => Ok(false),
        }
    }

    fn remove(&self, key: &Key) -> Result<bool, CacheError> {
        self.writable("removing an entry")?;
        let h = key.hash();
        let _lock = LockFile::acquire(
            &self.layout.key_lock(&h),
            Mode::Exclusive,
            self.options.key_lock_timeout,
        )?;
        match layout::read_entry(&self.layout.entry(&h))? {
            Read::Found(e) => {
                self.remove_entry_then_blob(&h, &e.sha256, false)?;
                Ok(true)
            }
            Read::Corrupt => {
                self.remove_corrupt_json(&h)?;
                Ok(false)
            }
            Read::Missing => Ok(false),
        }
    }

    fn entries(&self) -> Result<Vec<Entry>, CacheError> {
        let mut out = Vec::new();
        for (path, read) in layout::list_entries(&self.layout)? {
            match read {
                Read::Found(e) => out.push(*e),
                Read::Corrupt => {
                    if let Some(h) = path.file_stem().and_then(|s| s.to_str()) {
                        self.remove_corrupt_json(h)?;
                    }
                }
                Read::Missing => {}
            }
        }
        Ok(out)
    }

    fn partials(&self) -> Result<Vec<Entry>, CacheError> {
        partial::list(&self.layout)
    }

    /// For each planned entry: skip it if another build holds its key,
    /// else read it again under the key lock (a build may have replaced
    /// it) and remove it if it still names the planned blob; then the
    /// released blobs no entry references, in one scan. Partial downloads
    /// are planned with the entries and removed unless being written.
    fn evict(&self, now: u64) -> Result<EvictReport, CacheError> {
        self.writable("evicting")?;
        let mut entries = self.entries()?;
        entries.extend(self.partials()?);
        let mut report = EvictReport::default();
        let mut released = Vec::new();
        for p in plan(&self.policy, &entries, now) {
            let Some(planned) = entries.get(p.index) else {
                continue;
            };
            let h = planned.key().hash();
            if planned.partial.is_some() {
                if partial::remove(&self.layout, &h)? {
                    report.evicted.push((planned.clone(), p.reason));
                } else {
                    report.busy.push(planned.clone());
                }
                continue;
            }
            let Some(_lock) = LockFile::try_acquire(&self.layout.key_lock(&h), Mode::Exclusive)?
            else {
                report.busy.push(planned.clone());
                continue;
            };
            match layout::read_entry(&self.layout.entry(&h))? {
                Read::Found(there) if there.sha256 == planned.sha256 => {
                    self.remove_entry_json(&h)?;
                    released.push(planned.sha256.clone());
                    report.evicted.push((planned.clone(), p.reason));
                }
                _ => report.busy.push(planned.clone()),
            }
        }
        released.sort();
        released.dedup();
        self.release_blobs(&released)?;
        Ok(report)
    }

    /// Blobs no entry references and stale lock files, if no other build
    /// has the cache open (`.lock` exclusive without waiting).
    fn collect_garbage(&self) -> Result<Option<usize>, CacheError> {
        let Some(global) = &self.global else {
            return Err(self.read_only("collecting garbage"));
        };
        if !global.try_convert(Mode::Exclusive)? {
            return Ok(None);
        }
        let result = self.remove_unreferenced();
        // Back to shared; it can't fail to get what we just held exclusively
        // except on an I/O error, reported below.
        let back = global.try_convert(Mode::Shared);
        let n = result?;
        back?;
        Ok(Some(n))
    }

    /// One `syncfs` of the cache's filesystem instead of two `fsync`s per
    /// entry (measured: 2,000 small entries cost ~10 s of fsyncs on this
    /// machine's disk).
    fn sync(&self) -> Result<(), CacheError> {
        let root = self.layout.root();
        let dir = File::open(root).map_err(CacheError::io(root, "opening"))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| CacheError::io(root, "syncing")(std::io::Error::from(e)))
    }
}

impl Local {
    fn read_only(&self, action: &'static str) -> CacheError {
        CacheError::ReadOnly {
            path: self.layout.root().to_path_buf(),
            action,
        }
    }

    fn writable(&self, action: &'static str) -> Result<(), CacheError> {
        if self.global.is_none() {
            return Err(self.read_only(action));
        }
        Ok(())
    }

    /// A fill of `key`, whose lock we hold: a new temp file in `v1/tmp`.
    fn fill(self: Arc<Self>, key: &Key, key_lock: LockFile) -> Result<Filler, CacheError> {
        let tmp = layout::create_tmp(&self.layout, "fill-")?;
        let fill = LocalFill {
            local: self,
            key_lock,
            store: Store::Tmp(tmp),
            progress: Mutex::new(Progress::default()),
        };
        Ok(Filler::new(key.clone(), Box::new(fill)))
    }

    fn meta_lock(&self, h: &str) -> Result<LockFile, CacheError> {
        LockFile::acquire(
            &self.layout.meta_lock(h),
            Mode::Exclusive,
            self.options.meta_lock_timeout,
        )
    }

    fn blob_lock(&self, sha: &str) -> Result<LockFile, CacheError> {
        LockFile::acquire(
            &self.layout.blob_lock(sha),
            Mode::Exclusive,
            self.options.meta_lock_timeout,
        )
    }

    /// Publish a complete temp file as `key`'s blob and entry. The caller
    /// holds the key lock.
    fn publish(
        &self,
        key: &Key,
        tmp: Store,
        size: u64,
        sha256: String,
        meta: FillMeta,
    ) -> Result<Entry, CacheError> {
        let h = key.hash();
        let entry_path = self.layout.entry(&h);
        let previous = match layout::read_entry(&entry_path)? {
            Read::Found(e) => Some(e.sha256),
            _ => None,
        };
        let blob_path = self.layout.blob(&sha256);
        let entry = Entry::published(key, size, sha256, meta, unix_now());
        {
            let _blob = self.blob_lock(&entry.sha256)?;
            if let Some(parent) = blob_path.parent() {
                fs_err::create_dir_all(parent)
                    .map_err(CacheError::io(parent, "creating directory"))?;
            }
            tmp.persist(&blob_path)?;
            let _meta = self.meta_lock(&h)?;
            layout::write_entry(&self.layout, &entry_path, &entry)?;
        }
        if let Some(old) = previous.filter(|old| *old != entry.sha256) {
            self.release_blob(&old, false)?;
        }
        Ok(entry)
    }

    /// Remove the entry JSON, then its blob unless another entry uses it.
    /// The caller holds the key lock.
    fn remove_entry_then_blob(&self, h: &str, sha: &str, force: bool) -> Result<(), CacheError> {
        self.remove_entry_json(h)?;
        self.release_blob(sha, force)
    }

    /// Remove an entry's JSON. The caller holds the key lock.
    fn remove_entry_json(&self, h: &str) -> Result<(), CacheError> {
        let _meta = self.meta_lock(h)?;
        remove_if_there(&self.layout.entry(h))
    }

    /// [`Local::release_blob`] for many blobs with one scan of the entries
    /// instead of one per blob (an eviction of k among n entries reads n
    /// files, not k·n). A publisher of the same content between the scan and
    /// the unlink is detected by the blob's identity: each publish renames a
    /// new inode into place under the blob lock, and we note the identity
    /// under that lock before the scan, so a changed identity afterwards
    /// means "published meanwhile, keep it".
    fn release_blobs(&self, shas: &[String]) -> Result<(), CacheError> {
        if shas.len() <= 1 {
            return shas.iter().try_for_each(|s| self.release_blob(s, false));
        }
        let identity = |sha: &str| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(self.layout.blob(sha))
                .ok()
                .map(|m| (m.dev(), m.ino()))
        };
        let mut before = Vec::with_capacity(shas.len());
        for sha in shas {
            let _blob = self.blob_lock(sha)?;
            before.push(identity(sha));
        }
        let mut referenced = HashSet::new();
        for (_, read) in layout::list_entries(&self.layout)? {
            if let Read::Found(e) = read {
                referenced.insert(e.sha256);
            }
        }
        for (sha, was) in shas.iter().zip(before) {
            if was.is_none() || referenced.contains(sha) {
                continue;
            }
            let _blob = self.blob_lock(sha)?;
            if identity(sha) != was {
                continue;
            }
            remove_if_there(&self.layout.blob(sha))?;
        }
        Ok(())
    }

    /// Drop a broken entry if its key is free and it still names `sha`.
    fn drop_entry(&self, key: &Key, sha: &str, force_blob: bool) -> Result<(), CacheError> {
        if self.global.is_none() {
            return Ok(());
        }
        let h = key.hash();
        let Some(_lock) = LockFile::try_acquire(&self.layout.key_lock(&h), Mode::Exclusive)? else {
            return Ok(()); // being refilled right now
        };
        match layout::read_entry(&self.layout.entry(&h))? {
            Read::Found(e) if e.sha256 == sha => self.remove_entry_then_blob(&h, sha, force_blob),
            _ => Ok(()),
        }
    }

    fn remove_corrupt_json(&self, h: &str) -> Result<(), CacheError> {
        if self.global.is_none() {
            return Ok(());
        }
        let _meta = self.meta_lock(h)?;
        let path = self.layout.entry(h);
        if let Read::Corrupt = layout::read_entry(&path)? {
            remove_if_there(&path)?;
        }
        Ok(())
    }

    /// Unlink a blob unless an entry references it (`force`: a corrupt blob
    /// goes anyway). Under the blob lock, so a concurrent publish of the
    /// same content either precedes (and its entry is seen) or follows.
    fn release_blob(&self, sha: &str, force: bool) -> Result<(), CacheError> {
        let _blob = self.blob_lock(sha)?;
        if !force {
            for (_, read) in layout::list_entries(&self.layout)? {
                if matches!(read, Read::Found(e) if e.sha256 == sha) {
                    return Ok(());
                }
            }
        }
        remove_if_there(&self.layout.blob(sha))
    }

    /// Under the exclusive `.lock`: unreferenced blobs and lock files.
    fn remove_unreferenced(&self) -> Result<usize, CacheError> {
        let mut referenced = HashSet::new();
        let mut keys = HashSet::new();
        for (path, read) in layout::list_entries(&self.layout)? {
            if let Read::Found(e) = read {
                referenced.insert(e.sha256.clone());
            }
            if let Some(h) = path.file_stem().and_then(|s| s.to_str()) {
                keys.insert(h.to_string());
            }
        }
        let mut removed = 0;
        let blobs = self.layout.blobs_dir();
        for shard in fs_err::read_dir(&blobs).map_err(CacheError::io(&blobs, "listing"))? {
            let shard = shard.map_err(CacheError::io(&blobs, "listing"))?.path();
            let Ok(files) = std::fs::read_dir(&shard) else {
                continue;
            };
            for f in files.filter_map(Result::ok) {
                let name = f.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&name) && std::fs::remove_file(f.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        let locks = self.layout.locks_dir();
        for f in fs_err::read_dir(&locks).map_err(CacheError::io(&locks, "listing"))? {
            let f = f.map_err(CacheError::io(&locks, "listing"))?;
            let name = f.file_name().to_string_lossy().into_owned();
            let stem = name.split('.').next().unwrap_or("");
            // Only lock files of keys without entries, and only free ones.
            if keys.contains(stem) {
                continue;
            }
            if let Ok(Some(_held)) = LockFile::try_acquire(&f.path(), Mode::Exclusive) {
                if std::fs::remove_file(f.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// Unlink `path`; already gone is fine.
fn remove_if_there(path: &Path) -> Result<(), CacheError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CacheError::io(path, "removing")(e)),
    }
}

/// A hit's blob: the file, open (pinned).
#[derive(Debug)]
struct LocalBlob {
    local: Arc<Local>,
    file: File,
    path: PathBuf,
}

impl Blob for LocalBlob {
    fn location(&self) -> PathBuf {
        self.path.clone()
    }

    fn opened(&self) -> Option<&File> {
        Some(&self.file)
    }

    fn read(&self, each: &mut Each<'_>) -> Result<(), Stop> {
        read_file(&self.file, each)
    }

    fn forget(&self, key: &Key, entry: &Entry) -> Result<(), CacheError> {
        self.local.drop_entry(key, &entry.sha256, true)
    }
}

/// What a fill has written and hashed so far.
#[derive(Debug, Default)]
struct Progress {
    hasher: Sha256,
    /// Bytes `[0, hashed)` are in `hasher`.
    hashed: u64,
    /// A rewrite inside the hashed prefix: hash everything again at commit.
    rehash: bool,
    /// Written ranges, sorted, merged, half-open.
    ranges: Vec<(u64, u64)>,
    /// The byte count a partial's JSON last recorded.
    noted: u64,
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

/// Where a fill's bytes go: a temp file in `v1/tmp` (removed if the fill
/// is abandoned), or a partial download kept if it is (`partial.rs`).
#[derive(Debug)]
enum Store {
    Tmp(NamedTempFile),
    Partial(Box<PartialFile>),
}

impl Store {
    fn file(&self) -> &File {
        match self {
            Store::Tmp(t) => t.as_file(),
            Store::Partial(p) => p.file(),
        }
    }

    fn path(&self) -> &Path {
        match self {
            Store::Tmp(t) => t.path(),
            Store::Partial(p) => p.path(),
        }
    }

    /// Rename into `dest` (a blob).
    fn persist(self, dest: &Path) -> Result<(), CacheError> {
        match self {
            Store::Tmp(t) => t
                .persist(dest)
                .map(drop)
                .map_err(|e| CacheError::io(dest, "renaming into place")(e.error)),
            Store::Partial(p) => p.publish(dest),
        }
    }
}

/// A fill: a temp file in `v1/tmp`, or a partial download, under the
/// key's lock.
#[derive(Debug)]
struct LocalFill {
    local: Arc<Local>,
    key_lock: LockFile,
    store: Store,
    progress: Mutex<Progress>,
}

impl Fill for LocalFill {
    fn write_at(&self, key: &Key, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        let end = u64::try_from(data.len())
            .ok()
            .and_then(|n| offset.checked_add(n))
            .ok_or_else(|| CacheError::IncompleteFill {
                key: key.to_string(),
                reason: format!("write at offset {offset} overflows"),
            })?;
        // A poisoned lock only means another writer panicked; the state is
        // still coherent (every field is updated by whole assignments).
        let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        if let Store::Partial(partial) = &self.store {
            // Kept only while written in order: its length is then what
            // arrived. Told before the write, so no moment shows a gap.
            let in_order = match p.ranges.as_slice() {
                [] => offset == 0,
                [(0, e)] => offset == *e,
                _ => false,
            };
            if !in_order {
                partial.forget();
            }
        }
        self.store
            .file()
            .write_all_at(data, offset)
            .map_err(CacheError::io(self.store.path(), "writing"))?;
        if offset < p.hashed {
            p.rehash = true;
        } else if offset == p.hashed && !p.rehash {
            p.hasher.update(data);
            p.hashed = end;
        }
        p.add_range(offset, end);
        if let Store::Partial(partial) = &self.store {
            if end >= p.noted.saturating_add(NOTE_EVERY) {
                p.noted = end;
                partial.note(end)?;
            }
        }
        Ok(())
    }

    /// A partial download of `key` continued when a stopped fill left the
    /// same payload, else started; only when the payload's validators
    /// give `If-Range` something to check (else it stays a temp file).
    fn keep_partial(&mut self, key: &Key, meta: &FillMeta, size: u64) -> Result<u64, CacheError> {
        if meta.validators.if_range().is_none() || size == 0 {
            return Ok(0);
        }
        let (partial, offset) = PartialFile::open(&self.local.layout, key, meta, size)?;
        // Nothing was written to the temp file yet; it goes.
        self.store = Store::Partial(Box::new(partial));
        let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        *p = Progress {
            noted: offset,
            ..Progress::default()
        };
        Ok(offset)
    }

    fn read_prefix(
        &self,
        upto: u64,
        each: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), CacheError> {
        let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        let file = self.store.file();
        let mut buf = vec![0u8; COPY_BUFFER];
        let mut at = 0u64;
        while at < upto {
            let want = usize::try_from(upto - at).map_or(buf.len(), |n| n.min(buf.len()));
            let n = file
                .read_at(&mut buf[..want], at)
                .map_err(CacheError::io(self.store.path(), "reading back"))?;
            if n == 0 {
                return Err(CacheError::IncompleteFill {
                    key: self.store.path().display().to_string(),
                    reason: format!("partial download ends at {at} of {upto}"),
                });
            }
            let chunk = &buf[..n];
            each(at, chunk).map_err(CacheError::io(self.store.path(), "copying"))?;
            p.hasher.update(chunk);
            at += u64::try_from(n).unwrap_or(u64::MAX);
        }
        p.hashed = upto;
        p.ranges = if upto > 0 {
            vec![(0, upto)]
        } else {
            Vec::new()
        };
        Ok(())
    }

    fn file(&self) -> Option<&File> {
        Some(self.store.file())
    }

    fn restart(&self) {
        let mut p = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        *p = Progress::default();
        // Another payload: the old bytes can't be continued.
        if let Store::Partial(partial) = &self.store {
            partial.forget();
        }
        let _ = self.store.file().set_len(0);
    }

    /// Checks that exactly `[0, size)` was written, computes the sha256 of
    /// what is on disk (reading back what was not hashed in order), renames
    /// the blob into place and then writes the entry.
    fn commit(self: Box<Self>, key: &Key, size: u64, meta: FillMeta) -> Result<Entry, CacheError> {
        let LocalFill {
            local,
            key_lock,
            store: tmp,
            progress,
        } = *self;
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
        let file = tmp.file();
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
        // Not synced here: see layout::write_atomic (one syncfs per build).
        let entry = local.publish(key, tmp, size, sha256, meta)?;
        drop(key_lock);
        Ok(entry)
    }
}
