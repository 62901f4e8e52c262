//! The download cache (`--cache-dir`, docs/spec.md §8, docs/design.md "The download cache").
//!
//! `--cache-dir` is a directory (below) or an object-store URL
//! (`s3://bucket/prefix`, `gs://`, `az://`: `remote.rs`, docs/spec.md §11):
//! [`Cache`] hides which, and the policy code is the same for both.
//!
//! Content-addressed blobs plus one JSON entry per key, on any filesystem
//! (plain files, `rename` and `flock`; no xattrs), safe for several builds at
//! once and for `kill -9` at any moment. This module knows nothing of plans
//! or builds: a source is described to it as a [`Key`] (from a URL or the
//! parts of an image reference) and bytes.
//!
//! # Using it from a build
//!
//! ```no_run
//! # use image_creator::cache::*;
//! # fn demo(dir: &std::path::Path, url: &str, image: &std::fs::File, at: u64) -> Result<(), CacheError> {
//! use std::os::unix::fs::FileExt;
//! // Once per build. Ok(None): the policy disables the cache (nothing was
//! // touched). Err: bad policy → exit 3 (`is_bad_policy()`), else warn once
//! // and build without a cache.
//! let Some(cache) = Cache::open(dir)? else { return Ok(()) };
//! let now = unix_now();
//! let Some(key) = Key::file(url) else { return Ok(()) }; // file:// etc.: never cached
//! match cache.policy_for(&key) {
//!     Decision::NotCached(_) => { /* plain download */ }
//!     Decision::Cached(_policy) => match cache.lookup(&key, now)? {
//!         Some(hit) => {
//!             if hit.is_due_for_check() {
//!                 // HEAD with hit.validators().conditional_headers();
//!                 // fresh = hit.validators().compare(&remote) != Freshness::Outdated
//!                 // (a failed check counts as fresh); then
//!                 // cache.mark_checked(&key, now, Some(&remote))?;
//!                 // if outdated: drop `hit`, take the miss path below.
//!             }
//!             match hit.copy_into(|off, b| image.write_all_at(b, at + off)) {
//!                 Ok(_entry) => { cache.touch(&key, now)?; }
//!                 Err(CopyError::Corrupt(_)) => { /* entry dropped: download over the same range */ }
//!                 Err(CopyError::Sink { .. }) => { /* image write failed: build error */ }
//!             }
//!         }
//!         None => match cache.claim(&key, now)? {
//!             // Another build filled it while we waited for its lock.
//!             Claim::Ready(hit) => { let _ = hit.copy_into(|o, b| image.write_all_at(b, at + o)); }
//!             Claim::Fill(filler) => {
//!                 // Tee each downloaded chunk: image.write_all_at(chunk, at + off)
//!                 // and filler.write_at(off, chunk)?; then, once the size and
//!                 // the config's checksum are verified:
//!                 let meta = FillMeta { validators: Validators::default(), source: url.into() };
//!                 filler.commit(0, meta)?; // failure: warn, the image is fine
//!                 // On a download/verification error: drop(filler) abandons it.
//!             }
//!         },
//!     },
//! }
//! // After the build: apply the policy (never evicts what others are filling).
//! let _report = cache.evict(unix_now())?;
//! # Ok(()) }
//! ```
//!
//! `--check` and `--show-cache` open with [`Cache::open_read_only`]: nothing
//! is created, locked, repaired or removed. `--check` reports
//! [`Cache::lookup`] (hit / miss), [`Cache::policy_for`] (will be cached or
//! not) and [`Cache::plan_eviction`] (what eviction would remove).
//! `--show-cache`: [`Cache::report`] then [`Report::render_text`], or
//! `serde_json` of the [`Report`] for `--json`.
//!
//! # Concurrency
//! - `.lock`: shared by every open `Cache`; exclusive only for
//!   [`Cache::collect_garbage`], which skips when a build holds it.
//! - `v1/locks/<h>.lock`: held by a [`Filler`] for the whole download, so
//!   one build downloads a key while others wait in [`Cache::claim`] (with
//!   the [`CacheOptions::key_lock_timeout`]) and then hit. Eviction only
//!   try-locks it: busy means skip.
//! - Readers hold the blob `File` open from [`Cache::lookup`] on: an unlink
//!   by an eviction can't break them.
//! - Publishing: blob synced in `v1/tmp`, renamed into `v1/blobs` (replacing
//!   an existing one, which has the same content by name, so the entry always
//!   points at bytes just verified), then the entry JSON by temp + rename.
//!   Blob publication and blob removal take the blob's lock, and removal
//!   first checks no entry references the blob.

mod entry;
mod error;
mod evict;
mod fill;
mod hit;
mod key;
mod locate;
mod lock;
mod policy;
mod remote;
mod show;
mod store;
mod version;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use entry::{Entry, FillMeta, Freshness, Validators};
pub use error::{CacheError, CacheErrorKind};
pub use evict::{eviction_order, plan, EvictReason, Planned};
pub use fill::{FillSink, Filler};
pub use hit::{CopyError, Hit};
pub use key::{EntryKind, Key};
pub use policy::{
    Decision, Effective, Eviction, Filter, Limits, NotCached, Policy, Scope, SubPolicy,
    DEFAULT_MAX_SIZE,
};
pub use show::{Report, ReportEntry, Summary};
pub use version::{natural_cmp, Identity};

use lock::{LockFile, Mode};
use store::{Layout, Read};

/// Read size for copies and read-backs: 1 MiB, as the rest of the pipeline
/// (docs/design.md, "I/O model"); larger buys nothing on a page-cache-backed read.
pub const COPY_BUFFER: usize = 1 << 20;

/// Lock timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Waiting for `.lock` (only an exclusive garbage collection holds it
    /// against builds, for seconds). Default 60 s.
    pub global_lock_timeout: Duration,
    /// Waiting for another build's download of the same key in
    /// [`Cache::claim`] / [`Cache::begin_fill`]. Default 1 h (a 100 GB ZIM
    /// at 30 MB/s takes ~1 h); on timeout, download without the cache.
    pub key_lock_timeout: Duration,
    /// Waiting for an entry's metadata lock (held for one small write).
    /// Default 30 s.
    pub meta_lock_timeout: Duration,
    /// Ranged GETs in flight when a hit streams from an object store
    /// (`-T`). Default 4.
    pub parallel: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            global_lock_timeout: Duration::from_secs(60),
            key_lock_timeout: Duration::from_secs(3600),
            meta_lock_timeout: Duration::from_secs(30),
            parallel: 4,
        }
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// An open, enabled cache. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Cache {
    backend: Backend,
}

/// Where the cache lives: a directory, or an object store
/// (`s3://bucket/prefix`…). The policy code (keys, [`Policy`], [`plan`],
/// [`Report`], [`Validators`]) is the same for both.
#[derive(Debug, Clone)]
enum Backend {
    Local(Arc<Inner>),
    Remote(Arc<remote::Remote>),
}

/// An entry's outdatedness check at `now` that found it fresh: `checked`,
/// and the remote's validators merged in where given.
fn merge_checked(e: &mut Entry, now: u64, remote: Option<&Validators>) {
    e.checked = now;
    if let Some(r) = remote {
        let v = &mut e.validators;
        v.digest = r.digest.clone().or(v.digest.take());
        v.etag = r.etag.clone().or(v.etag.take());
        v.last_modified = r.last_modified.clone().or(v.last_modified.take());
        v.content_length = r.content_length.or(v.content_length);
    }
}

#[derive(Debug)]
pub(crate) struct Inner {
    layout: Layout,
    policy: Policy,
    options: CacheOptions,
    /// `None` when opened read-only.
    global: Option<LockFile>,
}

/// The result of [`Cache::claim`].
#[derive(Debug)]
pub enum Claim {
    /// The entry exists (filled by another build while we waited).
    Ready(Hit),
    /// Ours to fill.
    Fill(Filler),
}

/// What [`Cache::evict`] did.
#[derive(Debug, Default)]
pub struct EvictReport {
    /// Removed, and why.
    pub evicted: Vec<(Entry, EvictReason)>,
    /// Planned but skipped: another build holds the key.
    pub busy: Vec<Entry>,
}

impl Cache {
    fn remote(r: remote::Remote) -> Cache {
        Cache {
            backend: Backend::Remote(Arc::new(r)),
        }
    }

    /// Open the cache in `dir` with default [`CacheOptions`].
    pub fn open(dir: &Path) -> Result<Option<Cache>, CacheError> {
        Cache::open_with(dir, CacheOptions::default())
    }

    /// Open the cache in `dir`: read `policy.yaml`; if the policy disables
    /// the cache, return `None` having created nothing. Otherwise create the
    /// layout, take `.lock` shared and remove orphaned temp files.
    pub fn open_with(dir: &Path, options: CacheOptions) -> Result<Option<Cache>, CacheError> {
        if remote::is_url(dir) {
            return Ok(remote::Remote::open(dir, false, options)?.map(Cache::remote));
        }
        let policy = Policy::load(dir)?;
        if !policy.enabled {
            return Ok(None);
        }
        let layout = Layout::new(dir);
        layout.create()?;
        let global = LockFile::acquire(
            &layout.global_lock(),
            Mode::Shared,
            options.global_lock_timeout,
        )?;
        layout.remove_orphans()?;
        Ok(Some(Cache {
            backend: Backend::Local(Arc::new(Inner {
                layout,
                policy,
                options,
                global: Some(global),
            })),
        }))
    }

    /// Open the cache in `dir` for looking only (`--check`, `--show-cache`):
    /// nothing is created, locked, repaired or removed (an absent directory
    /// is an empty cache). Methods that change the cache ([`Cache::begin_fill`],
    /// [`Cache::claim`] when it would fill, [`Cache::touch`],
    /// [`Cache::mark_checked`], [`Cache::remove`], [`Cache::evict`],
    /// [`Cache::collect_garbage`]) return [`CacheError::ReadOnly`]; broken
    /// entries are skipped instead of dropped.
    pub fn open_read_only(dir: &Path) -> Result<Option<Cache>, CacheError> {
        if remote::is_url(dir) {
            return Ok(remote::Remote::open(dir, true, CacheOptions::default())?.map(Cache::remote));
        }
        let policy = Policy::load(dir)?;
        if !policy.enabled {
            return Ok(None);
        }
        Ok(Some(Cache {
            backend: Backend::Local(Arc::new(Inner {
                layout: Layout::new(dir),
                policy,
                options: CacheOptions::default(),
                global: None,
            })),
        }))
    }

    /// Whether this handle was opened with [`Cache::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.is_read_only(),
        };
        inner.global.is_none()
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.shown(),
        };
        inner.layout.root()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return &r.policy,
        };
        &inner.policy
    }

    /// Whether and how the policy caches `key`.
    pub fn policy_for(&self, key: &Key) -> Decision {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.policy.decide(key),
        };
        inner.policy.decide(key)
    }

    /// The entry of `key`, its blob opened (pinned). `None` when absent, not
    /// cached by the policy, or broken (a missing blob, wrong size or
    /// corrupt JSON drops the entry).
    pub fn lookup(&self, key: &Key, now: u64) -> Result<Option<Hit>, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => {
                return Ok(r.lookup(key, now)?.map(|h| Hit::remote(key.clone(), h)))
            }
        };
        let Decision::Cached(eff) = self.policy_for(key) else {
            return Ok(None);
        };
        let h = key.hash();
        let path = inner.layout.entry(&h);
        let entry = match store::read_entry(&path)? {
            Read::Missing => return Ok(None),
            Read::Corrupt => {
                inner.remove_corrupt_json(&h)?;
                return Ok(None);
            }
            Read::Found(e) => *e,
        };
        if entry.key != key.as_str() || entry.platform.as_deref() != key.platform() {
            // A sha256 collision of two keys, or a hand-edited entry.
            return Ok(None);
        }
        let blob_path = inner.layout.blob(&entry.sha256);
        let blob = match std::fs::File::open(&blob_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                inner.drop_entry(key, &entry.sha256, false)?;
                return Ok(None);
            }
            Err(e) => return Err(CacheError::io(&blob_path, "opening")(e)),
        };
        let len = blob
            .metadata()
            .map_err(CacheError::io(&blob_path, "stat"))?
            .len();
        if len != entry.size {
            inner.drop_entry(key, &entry.sha256, true)?;
            return Ok(None);
        }
        let due = eff.is_due(entry.checked, now);
        Ok(Some(Hit {
            key: key.clone(),
            entry,
            due,
            src: hit::Source::Local {
                inner: Arc::clone(inner),
                blob,
                blob_path,
            },
        }))
    }

    /// Wait (up to [`CacheOptions::key_lock_timeout`]) for the key's lock;
    /// then a hit if the entry exists (another build just filled it), else a
    /// [`Filler`].
    pub fn claim(&self, key: &Key, now: u64) -> Result<Claim, CacheError> {
        let filler = self.begin_fill(key)?;
        match self.lookup(key, now)? {
            Some(hit) => Ok(Claim::Ready(hit)),
            None => Ok(Claim::Fill(filler)),
        }
    }

    /// [`Cache::claim`] for refreshing an outdated entry whose blob is
    /// `replaces` (its sha256): an entry still pointing at it is no hit,
    /// the fill replaces it; one another build refreshed meanwhile is.
    pub fn claim_replacing(
        &self,
        key: &Key,
        replaces: &str,
        now: u64,
    ) -> Result<Claim, CacheError> {
        let filler = self.begin_fill(key)?;
        match self.lookup(key, now)? {
            Some(hit) if hit.entry().sha256 != replaces => Ok(Claim::Ready(hit)),
            _ => Ok(Claim::Fill(filler)),
        }
    }

    /// [`Cache::begin_fill`] without waiting: `None` when another build
    /// holds the key (it is downloading it).
    pub fn try_begin_fill(&self, key: &Key) -> Result<Option<Filler>, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return Ok(Some(Filler::remote(Arc::clone(r), key.clone())?)),
        };
        inner.writable("filling")?;
        let h = key.hash();
        let Some(lock) = LockFile::try_acquire(&inner.layout.key_lock(&h), Mode::Exclusive)? else {
            return Ok(None);
        };
        let tmp = store::create_tmp(&inner.layout, "fill-")?;
        Ok(Some(Filler::new(Arc::clone(inner), key.clone(), lock, tmp)))
    }

    /// A [`Filler`] for `key`, whether or not an entry exists (refreshing an
    /// outdated one: the commit replaces it). Waits for the key's lock.
    pub fn begin_fill(&self, key: &Key) -> Result<Filler, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return Filler::remote(Arc::clone(r), key.clone()),
        };
        inner.writable("filling")?;
        let h = key.hash();
        let lock = LockFile::acquire(
            &inner.layout.key_lock(&h),
            Mode::Exclusive,
            inner.options.key_lock_timeout,
        )?;
        let tmp = store::create_tmp(&inner.layout, "fill-")?;
        Ok(Filler::new(Arc::clone(inner), key.clone(), lock, tmp))
    }

    /// Make everything this build published durable: one `syncfs` of the
    /// cache's filesystem instead of two `fsync`s per entry (measured: 2,000
    /// small entries cost ~10 s of fsyncs on this machine's disk). Until it
    /// returns, a power cut can lose entries, never make a wrong one used:
    /// blobs are hashed whenever they are used.
    pub fn sync(&self) -> Result<(), CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(_) => return Ok(()),
        };
        let root = inner.layout.root();
        let dir = std::fs::File::open(root).map_err(CacheError::io(root, "opening"))?;
        rustix::fs::syncfs(&dir)
            .map_err(|e| CacheError::io(root, "syncing")(std::io::Error::from(e)))
    }

    /// Record a use: `last_used = now`, `use_count + 1`. `false` if the entry
    /// is gone.
    pub fn touch(&self, key: &Key, now: u64) -> Result<bool, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => {
                return r.update(key, |e| {
                    e.last_used = now;
                    e.use_count = e.use_count.saturating_add(1);
                })
            }
        };
        inner.update(key, |e| {
            e.last_used = now;
            e.use_count = e.use_count.saturating_add(1);
        })
    }

    /// Record an outdatedness check at `now` that found the entry fresh (or
    /// could not tell): `checked = now`, and the remote's validators merged
    /// in where given. `false` if the entry is gone.
    pub fn mark_checked(
        &self,
        key: &Key,
        now: u64,
        remote: Option<&Validators>,
    ) -> Result<bool, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.update(key, |e| merge_checked(e, now, remote)),
        };
        inner.update(key, |e| merge_checked(e, now, remote))
    }

    /// Remove `key`'s entry (outdated, say), waiting for its key lock.
    pub fn remove(&self, key: &Key) -> Result<bool, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.remove(key),
        };
        inner.writable("removing an entry")?;
        let h = key.hash();
        let _lock = LockFile::acquire(
            &inner.layout.key_lock(&h),
            Mode::Exclusive,
            inner.options.key_lock_timeout,
        )?;
        match store::read_entry(&inner.layout.entry(&h))? {
            Read::Found(e) => {
                inner.remove_entry_then_blob(&h, &e.sha256, false)?;
                Ok(true)
            }
            Read::Corrupt => {
                inner.remove_corrupt_json(&h)?;
                Ok(false)
            }
            Read::Missing => Ok(false),
        }
    }

    /// Every readable entry, in no particular order. Corrupt entry files are
    /// removed and skipped.
    pub fn entries(&self) -> Result<Vec<Entry>, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return Ok(r.stored()?.into_iter().map(|s| s.entry).collect()),
        };
        let mut out = Vec::new();
        for (path, read) in store::list_entries(&inner.layout)? {
            match read {
                Read::Found(e) => out.push(*e),
                Read::Corrupt => {
                    if let Some(h) = path.file_stem().and_then(|s| s.to_str()) {
                        inner.remove_corrupt_json(h)?;
                    }
                }
                Read::Missing => {}
            }
        }
        Ok(out)
    }

    /// What [`Cache::evict`] would remove at `now`, and why (for `--check`).
    pub fn plan_eviction(&self, now: u64) -> Result<Vec<(Entry, EvictReason)>, CacheError> {
        let entries = self.entries()?;
        let planned = plan(self.policy(), &entries, now);
        Ok(planned
            .into_iter()
            .filter_map(|p| entries.get(p.index).cloned().map(|e| (e, p.reason)))
            .collect())
    }

    /// Apply the policy at `now`. Entries whose key another build holds are
    /// skipped (listed in `busy`).
    pub fn evict(&self, now: u64) -> Result<EvictReport, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.evict(now),
        };
        inner.writable("evicting")?;
        let mut report = EvictReport::default();
        let mut released = Vec::new();
        for (entry, reason) in self.plan_eviction(now)? {
            let key = entry.key();
            let h = key.hash();
            let Some(_lock) = LockFile::try_acquire(&inner.layout.key_lock(&h), Mode::Exclusive)?
            else {
                report.busy.push(entry);
                continue;
            };
            // Re-read under the lock: a build may have replaced it since.
            match store::read_entry(&inner.layout.entry(&h))? {
                Read::Found(now_there) if now_there.sha256 == entry.sha256 => {
                    inner.remove_entry_json(&h)?;
                    released.push(entry.sha256.clone());
                    report.evicted.push((entry, reason));
                }
                _ => report.busy.push(entry),
            }
        }
        released.sort();
        released.dedup();
        inner.release_blobs(&released)?;
        Ok(report)
    }

    /// The data of `--show-cache`: every entry sorted by added date, with
    /// what the policy would evict.
    pub fn report(&self, now: u64) -> Result<Report, CacheError> {
        let entries = self.entries()?;
        Ok(Report::new(self.policy(), entries, now))
    }

    /// Remove blobs no entry references and stale lock files, if no other
    /// build has the cache open (`.lock` exclusive without waiting).
    /// `Ok(None)` when skipped, else how many files were removed.
    pub fn collect_garbage(&self) -> Result<Option<usize>, CacheError> {
        let inner = match &self.backend {
            Backend::Local(inner) => inner,
            Backend::Remote(r) => return r.collect_garbage().map(Some),
        };
        let Some(global) = &inner.global else {
            return Err(inner.read_only("collecting garbage"));
        };
        if !global.try_convert(Mode::Exclusive)? {
            return Ok(None);
        }
        let result = inner.remove_unreferenced();
        // Back to shared; it can't fail to get what we just held exclusively
        // except on an I/O error, reported below.
        let back = global.try_convert(Mode::Shared);
        let n = result?;
        back?;
        Ok(Some(n))
    }
}

impl Inner {
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

    /// Read-modify-write an entry under its metadata lock.
    fn update(&self, key: &Key, f: impl FnOnce(&mut Entry)) -> Result<bool, CacheError> {
        self.writable("updating an entry")?;
        let h = key.hash();
        let _meta = self.meta_lock(&h)?;
        let path = self.layout.entry(&h);
        match store::read_entry(&path)? {
            Read::Found(mut e) => {
                f(&mut e);
                store::write_entry(&self.layout, &path, &e)?;
                Ok(true)
            }
            Read::Corrupt | Read::Missing => Ok(false),
        }
    }

    /// Publish a complete, synced temp file as `key`'s blob and entry. The
    /// caller holds the key lock.
    pub(crate) fn publish(
        &self,
        key: &Key,
        tmp: tempfile::NamedTempFile,
        size: u64,
        sha256: String,
        meta: FillMeta,
    ) -> Result<Entry, CacheError> {
        let h = key.hash();
        let entry_path = self.layout.entry(&h);
        let previous = match store::read_entry(&entry_path)? {
            Read::Found(e) => Some(e.sha256),
            _ => None,
        };
        let blob_path = self.layout.blob(&sha256);
        let now = unix_now();
        let entry = Entry {
            key: key.as_str().to_string(),
            kind: key.kind(),
            platform: key.platform().map(str::to_string),
            size,
            sha256: sha256.clone(),
            validators: meta.validators,
            source: meta.source,
            added: now,
            checked: now,
            last_used: now,
            use_count: 0,
        };
        {
            let _blob = self.blob_lock(&sha256)?;
            if let Some(parent) = blob_path.parent() {
                fs_err::create_dir_all(parent)
                    .map_err(CacheError::io(parent, "creating directory"))?;
            }
            tmp.persist(&blob_path)
                .map_err(|e| CacheError::io(&blob_path, "renaming into place")(e.error))?;
            let _meta = self.meta_lock(&h)?;
            store::write_entry(&self.layout, &entry_path, &entry)?;
        }
        if let Some(old) = previous.filter(|old| *old != sha256) {
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
        let path = self.layout.entry(h);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(&path, "removing")(e)),
        }
    }

    /// [`Inner::release_blob`] for many blobs with one scan of the entries
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
        let mut referenced = std::collections::HashSet::new();
        for (_, read) in store::list_entries(&self.layout)? {
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
            let path = self.layout.blob(sha);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io(&path, "removing")(e)),
            }
        }
        Ok(())
    }

    /// Drop a broken entry if its key is free and it still names `sha`.
    pub(crate) fn drop_entry(
        &self,
        key: &Key,
        sha: &str,
        force_blob: bool,
    ) -> Result<(), CacheError> {
        if self.global.is_none() {
            return Ok(());
        }
        let h = key.hash();
        let Some(_lock) = LockFile::try_acquire(&self.layout.key_lock(&h), Mode::Exclusive)? else {
            return Ok(()); // being refilled right now
        };
        match store::read_entry(&self.layout.entry(&h))? {
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
        if let Read::Corrupt = store::read_entry(&path)? {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(CacheError::io(&path, "removing")(e)),
            }
        }
        Ok(())
    }

    /// Unlink a blob unless an entry references it (`force`: a corrupt blob
    /// goes anyway). Under the blob lock, so a concurrent publish of the
    /// same content either precedes (and its entry is seen) or follows.
    fn release_blob(&self, sha: &str, force: bool) -> Result<(), CacheError> {
        let _blob = self.blob_lock(sha)?;
        if !force {
            for (_, read) in store::list_entries(&self.layout)? {
                if matches!(read, Read::Found(e) if e.sha256 == sha) {
                    return Ok(());
                }
            }
        }
        let path = self.layout.blob(sha);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CacheError::io(&path, "removing")(e)),
        }
    }

    /// Under the exclusive `.lock`: unreferenced blobs and lock files.
    fn remove_unreferenced(&self) -> Result<usize, CacheError> {
        let mut referenced = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (path, read) in store::list_entries(&self.layout)? {
            if let Read::Found(e) = read {
                referenced.insert(e.sha256.clone());
            }
            if let Some(h) = path.file_stem().and_then(|s| s.to_str()) {
                keys.insert(h.to_string());
            }
        }
        let mut removed = 0;
        {
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
        }
        {
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
        }
        Ok(removed)
    }
}
