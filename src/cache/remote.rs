//! The object-storage backend of the download cache (`--cache-dir
//! s3://bucket/prefix`, `gs://…`, `az://…`; docs/design.md, "The download
//! cache on object storage").
//!
//! The same policy, keys, entries and reports as the local cache (the
//! policy code in [`super::policy`], [`super::evict`] and [`super::show`]
//! is shared); only the storage differs. Under the prefix:
//!
//! - `policy.yaml`, the same file as in a local cache directory;
//! - `v1/entries/<h[..2]>/<h>.json`: one [`Stored`] per key (`h` = the
//!   key's hash), the entry plus the name of its blob;
//! - `v1/blobs/<id>`: a payload, `id` random, written once by a multipart
//!   upload while the same bytes go into the image.
//!
//! Blobs are named by a random id, not by their sha256: the digest is only
//! known when the upload ends, and object stores have no rename (a
//! server-side copy to a content address would write a 100 GB blob a
//! second time, and S3's single-request copy stops at 5 GiB). The entry
//! records the sha256, and every read checks it. A blob belongs to exactly
//! one entry, so removing an entry can remove its blob without a scan.
//!
//! No locks across machines: a fill uploads its blob, then publishes the
//! entry with a conditional put (`PutMode::Create`, or `Update` with the
//! ETag it read when replacing an entry). Of two workers publishing a key,
//! one wins; the other deletes its blob. A worker that dies mid-upload
//! leaves an unfinished multipart upload, invisible to readers and to
//! object listings (only ListMultipartUploads shows it; `object_store`
//! can't list them); the bucket's lifecycle rule `AbortIncompleteMultipartUpload`
//! reclaims its parts (a fill that fails or is dropped aborts its upload
//! itself). A worker that dies between the upload and the entry leaves an
//! unreferenced blob, which [`Remote::collect_garbage`] removes once it is
//! an hour old.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
    UpdateVersion,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::entry::{Entry, FillMeta};
use super::error::CacheError;
use super::evict::plan;
use super::hit::CopyError;
use super::key::Key;
use super::policy::{Decision, Policy};
use super::{hex, unix_now, CacheOptions, EvictReport};

/// The first multipart parts' size (see [`part_size`]); S3's minimum is
/// 5 MiB.
const PART: usize = 8 << 20;
/// Parts of one fill uploading at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Ranged GET size of a hit. Larger ranges cost s3s-fs less CPU per
/// byte (bench-s3: 25 → 22 → 21 CPU s for 4 GiB at 8, 16, 32 MiB); a
/// build holds `-T` of them (docs/benchmarks-notes.md).
const RANGE: usize = 16 << 20;
/// Bytes a fill buffers when writes arrive out of order (an image's layers
/// decoded in parallel); past that the fill is abandoned, never the build.
const PENDING_MAX: usize = 256 << 20;
/// An unreferenced blob younger than this may be a fill about to publish
/// its entry: garbage collection leaves it.
const ORPHAN_AGE: i64 = 3600;

/// An entry as stored: the shared [`Entry`] plus its blob's object name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stored {
    /// The blob's id under `v1/blobs/`.
    pub blob: String,
    /// The entry.
    pub entry: Entry,
}

/// The runtime of every object-store call: one per process, never dropped
/// (a runtime can't be dropped from async code, and a cache handle may be).
fn runtime() -> Result<&'static tokio::runtime::Runtime, CacheError> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cache-store")
            .enable_all()
            .build()
            .ok()
    })
    .as_ref()
    .ok_or_else(|| CacheError::Store {
        url: String::new(),
        action: "starting its runtime",
        source: "could not start the object store's threads".into(),
    })
}

/// Run `f` on the cache's runtime and wait for it, from any thread (also
/// from a task of another runtime: we block on a channel, never enter a
/// runtime here).
fn run<F>(f: F) -> Result<F::Output, CacheError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| CacheError::Store {
        url: String::new(),
        action: "waiting for the object store",
        source: "its task ended without an answer".into(),
    })
}

/// Whether `dir` names an object store (`scheme://…`) rather than a path.
pub(crate) fn is_url(dir: &FsPath) -> bool {
    dir.to_str().is_some_and(|s| {
        s.split_once("://")
            .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'))
    })
}

/// The object-store cache of one URL.
#[derive(Debug)]
pub(crate) struct Remote {
    url: String,
    shown: PathBuf,
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    pub(crate) policy: Policy,
    read_only: bool,
    parallel: usize,
    /// The buffers of the ranges held in memory by all hits of this build
    /// at once (fetching, fetched and waiting for their turn, or being
    /// written): `parallel` in all, not per hit, so `-T` hits at once hold
    /// at most `-T` ranges.
    ranges: Arc<RangePool>,
}

fn store_err(url: &str, action: &'static str) -> impl FnOnce(object_store::Error) -> CacheError {
    let url = url.to_string();
    move |e| CacheError::Store {
        url,
        action,
        source: Box::new(e),
    }
}

impl Remote {
    /// Open the cache at `url`: build the client from the environment,
    /// check the bucket answers (a listing), read `policy.yaml`. `None`
    /// when the policy disables the cache.
    pub(crate) fn open(
        dir: &FsPath,
        read_only: bool,
        options: CacheOptions,
    ) -> Result<Option<Remote>, CacheError> {
        // reqwest is built without a TLS provider of its own (as for the
        // downloads, src/fetch/http.rs): ring, process-wide.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = dir.to_string_lossy().into_owned();
        let bad = |message: String| CacheError::BadUrl {
            url: url.clone(),
            message,
        };
        let parsed = url::Url::parse(&url).map_err(|e| bad(e.to_string()))?;
        let (store, prefix) = build_store(&parsed, &url).map_err(bad)?;
        let store: Arc<dyn ObjectStore> = Arc::from(store);
        let policy_path = prefix.clone().join("policy.yaml");
        let (s, p, pp) = (Arc::clone(&store), prefix.clone(), policy_path.clone());
        let policy_text = run(async move {
            // A listing first: a missing bucket reads as "no policy.yaml"
            // to a GET, not to a listing.
            s.list_with_delimiter(Some(&p)).await?;
            match s.get(&pp).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?
        .map_err(store_err(&url, "reading the cache"))?;
        let shown_policy = PathBuf::from(format!("{}/policy.yaml", url.trim_end_matches('/')));
        let policy = match policy_text {
            None => Policy::default(),
            Some(bytes) => {
                let text = std::str::from_utf8(&bytes).map_err(|e| CacheError::Policy {
                    path: shown_policy.clone(),
                    message: e.to_string(),
                })?;
                Policy::parse(text, &shown_policy)?
            }
        };
        if !policy.enabled {
            return Ok(None);
        }
        Ok(Some(Remote {
            shown: PathBuf::from(&url),
            url,
            store,
            prefix,
            policy,
            read_only,
            parallel: options.parallel.max(1),
            ranges: Arc::new(RangePool::new(options.parallel.max(1), RANGE)),
        }))
    }

    pub(crate) fn shown(&self) -> &FsPath {
        &self.shown
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn writable(&self, action: &'static str) -> Result<(), CacheError> {
        if self.read_only {
            return Err(CacheError::ReadOnly {
                path: self.shown.clone(),
                action,
            });
        }
        Ok(())
    }

    fn err(&self, action: &'static str) -> impl FnOnce(object_store::Error) -> CacheError {
        store_err(&self.url, action)
    }

    fn entries_dir(&self) -> Path {
        self.prefix.clone().join("v1").join("entries")
    }

    fn entry_path(&self, h: &str) -> Path {
        self.entries_dir()
            .join(h.get(..2).unwrap_or("__"))
            .join(format!("{h}.json"))
    }

    fn blobs_dir(&self) -> Path {
        self.prefix.clone().join("v1").join("blobs")
    }

    pub(crate) fn blob_path(&self, id: &str) -> Path {
        self.blobs_dir().join(id)
    }

    /// The blob's URL, for messages.
    pub(crate) fn blob_url(&self, id: &str) -> PathBuf {
        PathBuf::from(format!("{}/v1/blobs/{id}", self.url.trim_end_matches('/')))
    }

    /// The entry of `h` and its ETag; `None` when absent or unreadable
    /// JSON (removed when writable).
    fn read(&self, h: &str) -> Result<Option<(Stored, UpdateVersion)>, CacheError> {
        let (s, p) = (Arc::clone(&self.store), self.entry_path(h));
        let got = run(async move {
            match s.get(&p).await {
                Ok(r) => {
                    let v = UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    r.bytes().await.map(|b| Some((b, v)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?
        .map_err(self.err("reading an entry"))?;
        let Some((bytes, version)) = got else {
            return Ok(None);
        };
        match serde_json::from_slice::<Stored>(&bytes) {
            Ok(s) => Ok(Some((s, version))),
            Err(_) => {
                if !self.read_only {
                    self.delete(self.entry_path(h))?;
                }
                Ok(None)
            }
        }
    }

    fn delete(&self, p: Path) -> Result<(), CacheError> {
        let s = Arc::clone(&self.store);
        run(async move {
            match s.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })?
        .map_err(self.err("deleting"))
    }

    fn put(&self, h: &str, stored: &Stored, mode: PutMode) -> Result<PutOutcome, CacheError> {
        let json = serde_json::to_vec_pretty(stored).map_err(|e| CacheError::Store {
            url: self.url.clone(),
            action: "serialising an entry",
            source: Box::new(e),
        })?;
        let (s, p) = (Arc::clone(&self.store), self.entry_path(h));
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match run(async move { s.put_opts(&p, PutPayload::from(json), opts).await })? {
            Ok(_) => Ok(PutOutcome::Done),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::Conflict),
            Err(e) => Err(self.err("publishing an entry")(e)),
        }
    }

    /// The entry of `key` with its blob's size checked (a HEAD). `None`
    /// when absent, not cached by the policy, or broken (a missing blob or
    /// wrong size drops the entry).
    pub(crate) fn lookup(
        self: &Arc<Self>,
        key: &Key,
        now: u64,
    ) -> Result<Option<RemoteHit>, CacheError> {
        let Decision::Cached(eff) = self.policy.decide(key) else {
            return Ok(None);
        };
        let h = key.hash();
        let Some((stored, _)) = self.read(&h)? else {
            return Ok(None);
        };
        let entry = &stored.entry;
        if entry.key != key.as_str() || entry.platform.as_deref() != key.platform() {
            return Ok(None);
        }
        let (s, p) = (Arc::clone(&self.store), self.blob_path(&stored.blob));
        let size = match run(async move { s.head(&p).await })? {
            Ok(meta) => Some(meta.size),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.err("looking at a blob")(e)),
        };
        if size != Some(entry.size) {
            self.drop_entry(key, &stored.blob)?;
            return Ok(None);
        }
        let due = eff.is_due(entry.checked, now);
        Ok(Some(RemoteHit {
            remote: Arc::clone(self),
            blob: stored.blob,
            entry: stored.entry,
            due,
            spooled: OnceLock::new(),
        }))
    }

    /// Drop `key`'s entry if it still names blob `id`, then the blob
    /// (skipped when read-only).
    pub(crate) fn drop_entry(&self, key: &Key, id: &str) -> Result<(), CacheError> {
        if self.read_only {
            return Ok(());
        }
        let h = key.hash();
        if let Some((stored, _)) = self.read(&h)? {
            if stored.blob == id {
                self.delete(self.entry_path(&h))?;
            }
        }
        self.delete(self.blob_path(id))
    }

    /// Read-modify-write an entry with a conditional put; a concurrent
    /// change makes us read again (three tries, then give up: these are
    /// use counts and check times, not content).
    pub(crate) fn update(&self, key: &Key, f: impl Fn(&mut Entry)) -> Result<bool, CacheError> {
        self.writable("updating an entry")?;
        let h = key.hash();
        for _ in 0..3 {
            let Some((mut stored, version)) = self.read(&h)? else {
                return Ok(false);
            };
            f(&mut stored.entry);
            if let PutOutcome::Done = self.put(&h, &stored, PutMode::Update(version))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Remove `key`'s entry, then its blob.
    pub(crate) fn remove(&self, key: &Key) -> Result<bool, CacheError> {
        self.writable("removing an entry")?;
        let h = key.hash();
        let Some((stored, _)) = self.read(&h)? else {
            return Ok(false);
        };
        self.delete(self.entry_path(&h))?;
        self.delete(self.blob_path(&stored.blob))?;
        Ok(true)
    }

    /// Every readable entry (fetched 16 at a time).
    pub(crate) fn stored(&self) -> Result<Vec<Stored>, CacheError> {
        let (s, dir) = (Arc::clone(&self.store), self.entries_dir());
        let listed = run(async move {
            let metas: Vec<_> = s.list(Some(&dir)).try_collect().await?;
            let s2 = Arc::clone(&s);
            futures_util::stream::iter(
                metas
                    .into_iter()
                    .filter(|m| m.location.as_ref().ends_with(".json")),
            )
            .map(move |m| {
                let s = Arc::clone(&s2);
                async move {
                    match s.get(&m.location).await {
                        Ok(r) => r.bytes().await.map(Some),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                }
            })
            .buffer_unordered(16)
            .try_collect::<Vec<_>>()
            .await
        })?
        .map_err(self.err("listing entries"))?;
        Ok(listed
            .into_iter()
            .flatten()
            .filter_map(|b| serde_json::from_slice::<Stored>(&b).ok())
            .collect())
    }

    /// Apply the policy at `now`: for each planned entry, read it again and
    /// delete it only if it still names the blob planned (object_store has
    /// no conditional delete: an entry replaced between the read and the
    /// delete is lost, and its blob left to garbage collection; content is
    /// never wrong), then its blob. A reader streaming that blob meanwhile
    /// finds it gone and downloads from the network.
    pub(crate) fn evict(&self, now: u64) -> Result<EvictReport, CacheError> {
        self.writable("evicting")?;
        let stored = self.stored()?;
        let entries: Vec<Entry> = stored.iter().map(|s| s.entry.clone()).collect();
        let mut report = EvictReport::default();
        for p in plan(&self.policy, &entries, now) {
            let Some(planned) = stored.get(p.index) else {
                continue;
            };
            let h = planned.entry.key().hash();
            match self.read(&h)? {
                Some((there, _)) if there.blob == planned.blob => {
                    self.delete(self.entry_path(&h))?;
                    self.delete(self.blob_path(&planned.blob))?;
                    report.evicted.push((planned.entry.clone(), p.reason));
                }
                _ => report.busy.push(planned.entry.clone()),
            }
        }
        Ok(report)
    }

    /// Blobs no entry names, older than an hour (younger ones may be fills
    /// about to publish). Returns how many were removed.
    pub(crate) fn collect_garbage(&self) -> Result<usize, CacheError> {
        self.writable("collecting garbage")?;
        let referenced: HashSet<String> = self.stored()?.into_iter().map(|s| s.blob).collect();
        let (s, dir) = (Arc::clone(&self.store), self.blobs_dir());
        let blobs: Vec<object_store::ObjectMeta> =
            run(async move { s.list(Some(&dir)).try_collect().await })?
                .map_err(self.err("listing blobs"))?;
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let mut removed = 0;
        for b in blobs {
            let Some(id) = b.location.filename() else {
                continue;
            };
            if referenced.contains(id) || now - b.last_modified.timestamp() < ORPHAN_AGE {
                continue;
            }
            self.delete(b.location.clone())?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Publish an uploaded blob `id` as `key`'s entry. Another worker's
    /// entry of the same content wins (ours is deleted); one of other
    /// content (outdated) is replaced, conditionally on its ETag.
    fn publish(
        &self,
        key: &Key,
        id: String,
        size: u64,
        sha256: String,
        meta: FillMeta,
    ) -> Result<Entry, CacheError> {
        let now = unix_now();
        let stored = Stored {
            blob: id.clone(),
            entry: Entry {
                key: key.as_str().to_string(),
                kind: key.kind(),
                platform: key.platform().map(str::to_string),
                size,
                sha256,
                validators: meta.validators,
                source: meta.source,
                added: now,
                checked: now,
                last_used: now,
                use_count: 0,
            },
        };
        let h = key.hash();
        for _ in 0..3 {
            if let PutOutcome::Done = self.put(&h, &stored, PutMode::Create)? {
                return Ok(stored.entry);
            }
            let Some((there, version)) = self.read(&h)? else {
                continue; // removed meanwhile: create again
            };
            if there.entry.sha256 == stored.entry.sha256 {
                // Another worker published the same bytes first.
                self.delete(self.blob_path(&id))?;
                return Ok(there.entry);
            }
            if let PutOutcome::Done = self.put(&h, &stored, PutMode::Update(version))? {
                self.delete(self.blob_path(&there.blob))?;
                return Ok(stored.entry);
            }
        }
        // Three lost races in a row: keep theirs.
        self.delete(self.blob_path(&id))?;
        Err(CacheError::Store {
            url: self.url.clone(),
            action: "publishing an entry",
            source: "the entry kept changing under us; dropped our copy".into(),
        })
    }

    /// Stream blob `id` (`size` bytes) in ranged GETs, `parallel` at once,
    /// handing each range in order to `each`.
    fn stream_blob(
        &self,
        id: &str,
        size: u64,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), StreamStop>,
    ) -> Result<(), StreamStop> {
        let rt = runtime().map_err(StreamStop::Store)?;
        // Each range holds a buffer of the build's shared pool from before
        // its GET until it is written. A hit takes its buffers in range
        // order, so the range it needs next always holds one (or is the
        // next to get one): hits sharing the pool can't wait on each other.
        let (tx, rx) = sync_channel::<Result<(u64, Slot), object_store::Error>>(1);
        let (s, p, parallel) = (Arc::clone(&self.store), self.blob_path(id), self.parallel);
        let pool = Arc::clone(&self.ranges);
        let range_size = RANGE as u64;
        let task = rt.spawn(async move {
            let ranges = (0..size.div_ceil(range_size))
                .map(move |i| i * range_size..size.min((i + 1) * range_size));
            let st = futures_util::stream::iter(ranges)
                .then(move |r| {
                    let pool = Arc::clone(&pool);
                    async move { (r, pool.take().await) }
                })
                .map(|(r, slot)| {
                    let (s, p) = (Arc::clone(&s), p.clone());
                    async move {
                        let mut slot = slot?;
                        fetch_range(&*s, &p, r.clone(), &mut slot.buf).await?;
                        Ok((r.start, slot))
                    }
                })
                .buffered(parallel);
            let mut st = std::pin::pin!(st);
            while let Some(item) = st.next().await {
                let stop = item.is_err();
                // The reader gone: stop fetching.
                let sent = tokio::task::block_in_place(|| tx.send(item));
                if sent.is_err() || stop {
                    break;
                }
            }
        });
        let mut got = 0u64;
        let result = loop {
            match rx.recv() {
                Ok(Ok((off, slot))) => {
                    got = off + slot.buf.len() as u64;
                    let done = each(off, &slot.buf);
                    drop(slot);
                    if let Err(e) = done {
                        break Err(e);
                    }
                }
                Ok(Err(e)) => break Err(StreamStop::Store(self.err("reading a blob")(e))),
                Err(_) => break Ok(()),
            }
        };
        drop(rx);
        task.abort();
        result?;
        if got != size {
            return Err(StreamStop::Short(got));
        }
        Ok(())
    }
}

/// GET bytes `r` of `p` into `buf` (cleared first), chunk by chunk as
/// they arrive: one copy, into a buffer that is reused.
async fn fetch_range(
    s: &dyn ObjectStore,
    p: &Path,
    r: std::ops::Range<u64>,
    buf: &mut Vec<u8>,
) -> Result<(), object_store::Error> {
    buf.clear();
    let want = usize::try_from(r.end - r.start).map_err(|e| object_store::Error::Generic {
        store: "cache",
        source: Box::new(e),
    })?;
    let got = s
        .get_opts(p, object_store::GetOptions::new().with_range(Some(r)))
        .await?;
    let mut body = got.into_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if buf.len() + chunk.len() > want {
            break;
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.len() != want {
        return Err(object_store::Error::Generic {
            store: "cache",
            source: format!("a ranged GET of {want} bytes answered other than {want} bytes").into(),
        });
    }
    Ok(())
}

/// The range buffers of one build, shared by all its hits: `n` at most,
/// each taken with a permit and returned when its range is written.
/// Allocated once and reused: a fresh buffer per range costs page faults
/// and the kernel zeroing every page again.
struct RangePool {
    permits: Arc<tokio::sync::Semaphore>,
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    capacity: usize,
}

impl std::fmt::Debug for RangePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangePool")
            .field("available", &self.permits.available_permits())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl RangePool {
    fn new(n: usize, capacity: usize) -> Self {
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(n)),
            free: Arc::new(Mutex::new(Vec::new())),
            capacity,
        }
    }

    /// A buffer, waiting for one to be free.
    async fn take(&self) -> Result<Slot, object_store::Error> {
        // The pool is never closed.
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "cache",
                source: Box::new(e),
            })?;
        let buf = self
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.capacity));
        Ok(Slot {
            buf,
            free: Arc::clone(&self.free),
            _permit: permit,
        })
    }
}

/// A range buffer of the [`RangePool`]; back to the pool on drop (before
/// its permit is released: the fields drop after `drop`).
struct Slot {
    buf: Vec<u8>,
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        self.free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(buf);
    }
}

/// Why [`Remote::stream_blob`] stopped.
enum StreamStop {
    Store(CacheError),
    Short(u64),
    Sink(u64, std::io::Error),
}

enum PutOutcome {
    Done,
    Conflict,
}

/// The store for `url`: AWS, GCS or Azure from the standard environment
/// (`AWS_*`: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for a plain-http
/// S3-compatible server; `GOOGLE_*`; `AZURE_*`). Few retries and short
/// timeouts: an unusable store must cost a build seconds, not minutes.
fn build_store(url: &url::Url, text: &str) -> Result<(Box<dyn ObjectStore>, Path), String> {
    let (scheme, path) = object_store::ObjectStoreScheme::parse(url).map_err(|e| e.to_string())?;
    let prefix = path;
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    };
    // The same trust roots as the downloads (the system's, else the
    // built-in set): reqwest has no platform verifier here to merge with.
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
        .with_no_system_certificates(true);
    // Names resolved as the downloads' are (hickory, /etc/resolv.conf): the
    // static binary has no NSS for getaddrinfo.
    if let Ok(dns) = crate::fetch::Dns::new(&crate::fetch::DnsConfig::System) {
        client = client.with_dns_resolver(Arc::new(Resolver(std::panic::AssertUnwindSafe(
            Arc::new(dns),
        ))));
    }
    for der in crate::fetch::trust_roots().certs {
        if let Ok(c) = object_store::Certificate::from_der(&der) {
            client = client.with_root_certificate(c);
        }
    }
    use object_store::ObjectStoreScheme as S;
    // Our client options and retries first, then the environment (as the
    // builders' `from_env` reads it: `AWS_ALLOW_HTTP` is a client option,
    // which a later `with_client_options` would throw away), then the URL.
    let env = |prefix: &str| -> Vec<(String, String)> {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect()
    };
    let store: Box<dyn ObjectStore> = match scheme {
        S::AmazonS3 => {
            // UNSIGNED-PAYLOAD: no SigV4 sha256 of every uploaded part (a
            // second hash pass over each blob, on both ends): a blob's own
            // sha256 is in its entry and checked on every read.
            // `AWS_UNSIGNED_PAYLOAD=false` (below) signs payloads again.
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_unsigned_payload(true)
                .with_retry(retry)
                .with_client_options(client);
            for (k, v) in env("AWS_") {
                if let Ok(k) = k.parse() {
                    b = b.with_config(k, v);
                }
            }
            Box::new(b.with_url(text).build().map_err(|e| e.to_string())?)
        }
        S::GoogleCloudStorage => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_retry(retry)
                .with_client_options(client);
            for (k, v) in env("GOOGLE_") {
                if let Ok(k) = k.parse() {
                    b = b.with_config(k, v);
                }
            }
            Box::new(b.with_url(text).build().map_err(|e| e.to_string())?)
        }
        S::MicrosoftAzure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                .with_retry(retry)
                .with_client_options(client);
            for (k, v) in env("AZURE_") {
                if let Ok(k) = k.parse() {
                    b = b.with_config(k, v);
                }
            }
            Box::new(b.with_url(text).build().map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "unsupported cache URL scheme ({other:?}): use a directory, s3://, gs:// or az://"
            ))
        }
    };
    Ok((store, prefix))
}

/// Our DNS resolver for the store's client.
#[derive(Debug)]
struct Resolver(std::panic::AssertUnwindSafe<Arc<crate::fetch::Dns>>);

impl object_store::client::DnsResolver for Resolver {
    fn resolve(&self, host: &str) -> object_store::client::DnsFuture {
        let (dns, host) = (Arc::clone(&self.0), host.to_string());
        Box::pin(async move {
            dns.lookup(&host)
                .await
                .map_err(|e| Box::new(e) as object_store::client::DnsError)
        })
    }
}

/// A hit in the object store: the blob's id, streamed on use.
#[derive(Debug)]
pub(crate) struct RemoteHit {
    pub(crate) remote: Arc<Remote>,
    pub(crate) blob: String,
    pub(crate) entry: Entry,
    pub(crate) due: bool,
    /// A verified local copy, for readers that need a file.
    pub(crate) spooled: OnceLock<File>,
}

impl RemoteHit {
    /// Stream the blob into `write_at`, hashing it; checked at the end. A
    /// missing or corrupt blob drops the entry.
    pub(crate) fn copy_with<F>(&self, key: &Key, mut write_at: F) -> Result<(), CopyError>
    where
        F: FnMut(u64, &[u8]) -> std::io::Result<()>,
    {
        let mut hasher = Sha256::new();
        let streamed = self
            .remote
            .stream_blob(&self.blob, self.entry.size, |off, b| {
                hasher.update(b);
                write_at(off, b).map_err(|e| StreamStop::Sink(off, e))
            });
        let corrupt = |reason: String| {
            let _ = self.remote.drop_entry(key, &self.blob);
            CopyError::Corrupt(CacheError::CorruptBlob {
                key: key.to_string(),
                path: self.remote.blob_url(&self.blob),
                reason,
            })
        };
        match streamed {
            Ok(()) => {}
            Err(StreamStop::Sink(offset, source)) => {
                return Err(CopyError::Sink {
                    key: key.to_string(),
                    offset,
                    source,
                })
            }
            // Gone (evicted meanwhile) or unreadable: the network instead.
            Err(StreamStop::Store(e)) => return Err(CopyError::Corrupt(e)),
            Err(StreamStop::Short(got)) => {
                return Err(corrupt(format!(
                    "{got} bytes, its entry says {}",
                    self.entry.size
                )))
            }
        }
        let got = hex(&hasher.finalize());
        if got != self.entry.sha256 {
            return Err(corrupt(format!(
                "sha256 {got}, its entry says {}",
                self.entry.sha256
            )));
        }
        Ok(())
    }

    /// The blob as a verified local file (an unnamed temporary file,
    /// downloaded once), for readers that need one: a base image's
    /// partition table, an archive expanded from it.
    pub(crate) fn file(&self, key: &Key) -> std::io::Result<&File> {
        if let Some(f) = self.spooled.get() {
            return Ok(f);
        }
        let f = tempfile::tempfile()?;
        self.copy_with(key, |off, b| f.write_all_at(b, off))
            .map_err(std::io::Error::other)?;
        Ok(self.spooled.get_or_init(|| f))
    }
}

/// The object-store side of a [`super::Filler`]: bytes in payload order
/// are copied once, into the part being filled; each full part goes to a
/// multipart upload (a thread of its own), which hashes it on the way;
/// writes ahead of the prefix wait in memory (up to [`PENDING_MAX`]). A
/// rewrite of bytes already sent abandons the fill.
#[derive(Debug)]
pub(crate) struct RemoteFill {
    remote: Arc<Remote>,
    id: String,
    state: Mutex<FillState>,
}

#[derive(Debug, Default)]
struct FillState {
    next: u64,
    /// The part being filled (its capacity allocated when it starts).
    part: Vec<u8>,
    /// Parts handed to the uploader.
    parts: usize,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    tx: Option<SyncSender<Msg>>,
    thread: Option<Uploader>,
    failed: Option<String>,
}

enum Msg {
    /// A full part.
    Part(Vec<u8>),
    /// The last bytes (maybe none): upload them, complete, return the
    /// sha256.
    Finish(Vec<u8>),
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

/// A random 128-bit id, hex.
fn random_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    // Two std RandomState hashers (random keys per instance) seeded with
    // time and pid: unique ids without another crate.
    let mut out = String::new();
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

impl RemoteFill {
    pub(crate) fn new(remote: Arc<Remote>) -> Result<Self, CacheError> {
        remote.writable("filling")?;
        Ok(Self {
            remote,
            id: random_id(),
            state: Mutex::new(FillState::default()),
        })
    }

    pub(crate) fn write_at(&self, key: &Key, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        let fail = |reason: String| CacheError::IncompleteFill {
            key: key.to_string(),
            reason,
        };
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = &st.failed {
            return Err(fail(f.clone()));
        }
        if st.thread.is_none() {
            let (tx, thread) = spawn_uploader(&self.remote, &self.id).map_err(&fail)?;
            st.tx = Some(tx);
            st.thread = Some(thread);
        }
        let end = offset.saturating_add(data.len() as u64);
        if offset < st.next {
            st.failed = Some(format!(
                "rewrite at offset {offset} of bytes already uploaded"
            ));
        } else if offset > st.next {
            st.pending_bytes += data.len();
            if st.pending_bytes > PENDING_MAX {
                st.failed = Some(format!(
                    "more than {} MiB written out of order",
                    PENDING_MAX >> 20
                ));
            } else {
                st.pending.insert(offset, data.to_vec());
            }
        } else {
            send(&mut st, data, end);
            loop {
                let next = st.next;
                let Some(chunk) = st.pending.remove(&next) else {
                    break;
                };
                st.pending_bytes -= chunk.len();
                let end = st.next + chunk.len() as u64;
                send(&mut st, &chunk, end);
            }
        }
        match &st.failed {
            Some(f) => {
                let f = f.clone();
                st.tx = None; // the uploader aborts
                Err(fail(f))
            }
            None => Ok(()),
        }
    }

    pub(crate) fn commit(self, key: &Key, size: u64, meta: FillMeta) -> Result<Entry, CacheError> {
        let st = self
            .state
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let incomplete = |reason: String| CacheError::IncompleteFill {
            key: key.to_string(),
            reason,
        };
        if let Some(f) = st.failed {
            return Err(incomplete(f));
        }
        if st.next != size || !st.pending.is_empty() {
            return Err(incomplete(format!(
                "expected bytes 0..{size}, uploaded 0..{} and {} bytes beyond",
                st.next, st.pending_bytes
            )));
        }
        let uploaded = match (st.tx, st.thread) {
            (Some(tx), Some(thread)) => {
                let _ = tx.send(Msg::Finish(st.part));
                drop(tx);
                thread.join().unwrap_or_else(|_| {
                    Err(object_store::Error::Generic {
                        store: "cache",
                        source: "the upload thread panicked".into(),
                    })
                })
            }
            // Nothing written: an empty blob.
            _ => {
                let (s, p) = (
                    Arc::clone(&self.remote.store),
                    self.remote.blob_path(&self.id),
                );
                run(async move {
                    s.put(&p, PutPayload::default())
                        .await
                        .map(|_| hex(&Sha256::digest([])))
                })?
            }
        };
        let sha256 = uploaded.map_err(self.remote.err("uploading a blob"))?;
        self.remote.publish(key, self.id, size, sha256, meta)
    }
}

/// The upload thread; its result is the blob's sha256.
type Uploader = std::thread::JoinHandle<Result<String, object_store::Error>>;

/// Start the multipart upload of blob `id` on a thread of its own.
fn spawn_uploader(remote: &Remote, id: &str) -> Result<(SyncSender<Msg>, Uploader), String> {
    let rt = runtime().map_err(|e| e.to_string())?;
    // A rendezvous: the uploader takes a part only when one of its
    // PARTS_IN_FLIGHT slots is free, so a fill holds the part being filled
    // and the parts in flight, no more.
    let (tx, rx) = sync_channel::<Msg>(0);
    let (s, p) = (Arc::clone(&remote.store), remote.blob_path(id));
    let thread = std::thread::Builder::new()
        .name("cache-upload".into())
        .spawn(move || rt.block_on(upload(s, p, rx)))
        .map_err(|e| e.to_string())?;
    Ok((tx, thread))
}

/// Append `data` (the bytes up to `end`) to the part being filled; hand
/// each full part to the uploader (blocking while its slots are busy).
fn send(st: &mut FillState, mut data: &[u8], end: u64) {
    st.next = end;
    while !data.is_empty() {
        let size = part_size(st.parts);
        if st.part.capacity() < size {
            st.part.reserve_exact(size - st.part.len());
        }
        let n = (size - st.part.len()).min(data.len());
        st.part.extend_from_slice(&data[..n]);
        data = &data[n..];
        if st.part.len() == size {
            let part = std::mem::take(&mut st.part);
            st.parts += 1;
            let ok = st
                .tx
                .as_ref()
                .is_some_and(|tx| tx.send(Msg::Part(part)).is_ok());
            if !ok {
                st.failed = Some("the upload failed".into());
                return;
            }
        }
    }
}

/// The size of multipart part `n` (0-based): [`PART`] for the first 2,000
/// parts (16 GB), then doubling every 2,000 parts, so S3's 10,000 parts
/// reach ~500 GB while a fill of an ordinary file holds only
/// (1 + [`PARTS_IN_FLIGHT`]) × 8 MiB.
fn part_size(n: usize) -> usize {
    PART << (n / 2000).min(4)
}

/// The upload thread: the parts it is handed, a few in flight, hashed in
/// order (here, off the download's thread); aborted unless told to
/// finish. Returns the blob's sha256.
async fn upload(
    s: Arc<dyn ObjectStore>,
    p: Path,
    rx: Receiver<Msg>,
) -> Result<String, object_store::Error> {
    let mut up = s.put_multipart(&p).await?;
    let mut parts = 0usize;
    let mut hasher = Sha256::new();
    let mut inflight = tokio::task::JoinSet::new();
    let result = async {
        loop {
            // A free slot before taking the next part.
            while inflight.len() >= PARTS_IN_FLIGHT {
                if let Some(r) = inflight.join_next().await {
                    r.map_err(|e| object_store::Error::JoinError { source: e })??;
                }
            }
            // Blocking: this thread is ours, not a runtime worker.
            let (part, last) = match rx.recv() {
                Ok(Msg::Part(d)) => (d, false),
                Ok(Msg::Finish(d)) => (d, true),
                Err(_) => {
                    return Err(object_store::Error::Generic {
                        store: "cache",
                        source: "fill abandoned".into(),
                    })
                }
            };
            hasher.update(&part);
            // The last part may be short; an upload has one part at least.
            if !part.is_empty() || parts == 0 {
                inflight.spawn(up.put_part(PutPayload::from(part)));
                parts += 1;
            }
            if last {
                while let Some(r) = inflight.join_next().await {
                    r.map_err(|e| object_store::Error::JoinError { source: e })??;
                }
                return up.complete().await.map(|_| ());
            }
        }
    }
    .await;
    if result.is_err() {
        inflight.abort_all();
        let _ = up.abort().await;
    }
    result.map(|()| hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        for url in ["s3://b/p", "gs://b", "az://c/p", "ftp://h/x", "http://h/x"] {
            assert!(is_url(FsPath::new(url)), "{url}");
        }
        for path in ["/var/cache", "cache", "./a://b", "/x/s3://y", "://x"] {
            assert!(!is_url(FsPath::new(path)), "{path}");
        }
    }

    #[test]
    fn unknown_schemes_are_bad_urls() {
        for url in ["ftp://h/x", "http://h/x", "s3:/nothing"] {
            match Remote::open(FsPath::new(url), true, CacheOptions::default()) {
                Err(e @ CacheError::BadUrl { .. }) => assert!(e.is_bad_policy(), "{e}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn parts_reach_hundreds_of_gigabytes_in_s3s_10000() {
        let total: u64 = (0..10_000).map(|n| part_size(n) as u64).sum();
        assert!(total > 400 << 30, "{total}");
        assert_eq!(part_size(0), 8 << 20);
        assert_eq!(part_size(1999), 8 << 20);
        assert_eq!(part_size(2000), 16 << 20);
    }

    #[test]
    fn blob_ids_are_unique_hex() {
        let ids: HashSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
