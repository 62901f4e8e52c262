//! The download cache (`--cache-dir`, docs/spec.md §8, docs/design.md "The download cache").
//!
//! `--cache-dir` is a directory (`local.rs`) or an object-store URL
//! (`s3://bucket/prefix`, `gs://`, `az://`: `remote/`, docs/spec.md §11).
//! Both are a `Backend` (`backend.rs`), the same methods side by side;
//! [`Cache`] hides which, each of its methods a call of the backend's,
//! around what both share: keys (`key.rs`), the policy (`policy.rs`),
//! entries and freshness (`entry.rs`), eviction planning (`evict.rs`), the
//! `--show-cache` report (`show.rs`), and the verified copy of a hit
//! (`hit.rs`) and the filler's interface (`fill.rs`).
//!
//! Content-addressed blobs plus one JSON entry per key, safe for several
//! builds at once and for `kill -9` at any moment (how, for each backend:
//! `local.rs` and `remote/mod.rs`). This module knows nothing of plans or
//! builds: a source is described to it as a [`Key`] (from a URL or the
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

mod backend;
mod entry;
mod error;
mod evict;
mod fill;
mod hit;
mod key;
mod layout;
mod local;
mod locate;
mod lock;
mod options;
mod partial;
mod policy;
mod remote;
mod show;
mod version;

use std::path::Path;
use std::sync::Arc;

pub use entry::{unix_now, Entry, FillMeta, Freshness, Validators};
pub use error::{CacheError, CacheErrorKind, CopyError};
pub use evict::{eviction_order, plan, EvictReason, EvictReport, Planned};
pub use fill::{FillSink, Filler};
pub use hit::Hit;
pub use key::{EntryKind, Key};
pub use options::{CacheOptions, COPY_BUFFER};
pub use policy::{
    Decision, Effective, Eviction, Filter, Limits, NotCached, Policy, Scope, SubPolicy,
    DEFAULT_MAX_SIZE,
};
pub use show::{Report, ReportEntry, Summary};
pub use version::{natural_cmp, Identity};

use backend::{Access, Backend};
use local::Local;
use remote::Remote;

/// An open, enabled cache. Cheap to clone; `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Cache {
    /// A directory ([`Local`]) or an object store ([`Remote`]).
    backend: Arc<dyn Backend>,
}

/// The result of [`Cache::claim`].
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per download, moved once; a boxed hit would change every caller's pattern"
)]
pub enum Claim {
    /// The entry exists (filled by another build while we waited).
    Ready(Hit),
    /// Ours to fill.
    Fill(Filler),
}

impl Cache {
    /// Open the cache in `dir` with default [`CacheOptions`].
    pub fn open(dir: &Path) -> Result<Option<Cache>, CacheError> {
        Cache::open_with(dir, CacheOptions::default())
    }

    /// Open the cache in `dir`: read `policy.yaml`; if the policy disables
    /// the cache, return `None` having created nothing. Otherwise create the
    /// layout, take `.lock` shared and remove orphaned temp files (a
    /// directory), or check the bucket answers (an object store).
    pub fn open_with(dir: &Path, options: CacheOptions) -> Result<Option<Cache>, CacheError> {
        Cache::open_as(dir, options, Access::ReadWrite)
    }

    /// Open the cache in `dir` for looking only (`--check`, `--show-cache`):
    /// nothing is created, locked, repaired or removed (an absent directory
    /// is an empty cache). Methods that change the cache ([`Cache::begin_fill`],
    /// [`Cache::claim`] when it would fill, [`Cache::touch`],
    /// [`Cache::mark_checked`], [`Cache::remove`], [`Cache::evict`],
    /// [`Cache::collect_garbage`]) return [`CacheError::ReadOnly`]; broken
    /// entries are skipped instead of dropped.
    pub fn open_read_only(dir: &Path) -> Result<Option<Cache>, CacheError> {
        Cache::open_as(dir, CacheOptions::default(), Access::ReadOnly)
    }

    fn open_as(
        dir: &Path,
        options: CacheOptions,
        access: Access,
    ) -> Result<Option<Cache>, CacheError> {
        let backend: Option<Arc<dyn Backend>> = if remote::is_url(dir) {
            Remote::open(dir, options, access)?.map(|r| Arc::new(r) as Arc<dyn Backend>)
        } else {
            Local::open(dir, options, access)?.map(|l| Arc::new(l) as Arc<dyn Backend>)
        };
        Ok(backend.map(|backend| Cache { backend }))
    }

    /// Whether this handle was opened with [`Cache::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.backend.is_read_only()
    }

    /// The cache directory (or URL).
    pub fn dir(&self) -> &Path {
        self.backend.shown()
    }

    /// The cache directory, when it is one (not an object store).
    pub fn local_dir(&self) -> Option<&Path> {
        Some(self.dir()).filter(|d| !remote::is_url(d))
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        self.backend.policy()
    }

    /// Whether and how the policy caches `key`.
    pub fn policy_for(&self, key: &Key) -> Decision {
        self.policy().decide(key)
    }

    /// The entry of `key`, its blob opened (pinned) or, in an object store,
    /// checked present. `None` when absent, not cached by the policy, or
    /// broken (a missing blob, wrong size or corrupt JSON drops the entry).
    pub fn lookup(&self, key: &Key, now: u64) -> Result<Option<Hit>, CacheError> {
        let Decision::Cached(eff) = self.policy_for(key) else {
            return Ok(None);
        };
        let Some((entry, blob)) = Arc::clone(&self.backend).lookup(key)? else {
            return Ok(None);
        };
        let due = eff.is_due(entry.checked, now);
        Ok(Some(Hit::new(key.clone(), entry, due, blob)))
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
        Arc::clone(&self.backend).try_begin_fill(key)
    }

    /// A [`Filler`] for `key`, whether or not an entry exists (refreshing an
    /// outdated one: the commit replaces it). Waits for the key's lock (a
    /// directory; an object store has none).
    pub fn begin_fill(&self, key: &Key) -> Result<Filler, CacheError> {
        Arc::clone(&self.backend).begin_fill(key)
    }

    /// Make everything this build published durable: one `syncfs` of the
    /// cache's filesystem instead of two `fsync`s per entry (measured: 2,000
    /// small entries cost ~10 s of fsyncs on this machine's disk); nothing
    /// for an object store. Until it returns, a power cut can lose entries,
    /// never make a wrong one used: blobs are hashed whenever they are used.
    pub fn sync(&self) -> Result<(), CacheError> {
        self.backend.sync()
    }

    /// Record a use: `last_used = now`, `use_count + 1`. `false` if the entry
    /// is gone.
    pub fn touch(&self, key: &Key, now: u64) -> Result<bool, CacheError> {
        self.backend.update(key, &|e| e.record_use(now))
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
        self.backend.update(key, &|e| e.record_check(now, remote))
    }

    /// Remove `key`'s entry (outdated, say), waiting for its key lock.
    pub fn remove(&self, key: &Key) -> Result<bool, CacheError> {
        self.backend.remove(key)
    }

    /// Every partial download left by a fill that stopped early
    /// (`Entry::partial` is the payload's size, `size` the bytes it holds),
    /// in no particular order; none in an object store.
    pub fn partials(&self) -> Result<Vec<Entry>, CacheError> {
        self.backend.partials()
    }

    /// Every readable entry, in no particular order. Corrupt entry files are
    /// removed and skipped.
    pub fn entries(&self) -> Result<Vec<Entry>, CacheError> {
        self.backend.entries()
    }

    /// What [`Cache::evict`] would remove at `now`, and why (for `--check`).
    pub fn plan_eviction(&self, now: u64) -> Result<Vec<(Entry, EvictReason)>, CacheError> {
        let mut entries = self.entries()?;
        entries.extend(self.backend.partials()?);
        let planned = plan(self.policy(), &entries, now);
        Ok(planned
            .into_iter()
            .filter_map(|p| entries.get(p.index).cloned().map(|e| (e, p.reason)))
            .collect())
    }

    /// Apply the policy at `now`. Entries whose key another build holds are
    /// skipped (listed in `busy`).
    pub fn evict(&self, now: u64) -> Result<EvictReport, CacheError> {
        self.backend.evict(now)
    }

    /// The data of `--show-cache`: every entry sorted by added date, with
    /// what the policy would evict.
    pub fn report(&self, now: u64) -> Result<Report, CacheError> {
        let mut entries = self.entries()?;
        entries.extend(self.backend.partials()?);
        Ok(Report::new(self.policy(), entries, now))
    }

    /// Remove blobs no entry references and stale lock files, if no other
    /// build has the cache open (`.lock` exclusive without waiting; an
    /// object store's blobs once an hour old, never skipped).
    /// `Ok(None)` when skipped, else how many files were removed.
    pub fn collect_garbage(&self) -> Result<Option<usize>, CacheError> {
        self.backend.collect_garbage()
    }
}
