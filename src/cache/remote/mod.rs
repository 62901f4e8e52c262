//! The object-storage backend of the download cache (`--cache-dir
//! s3://bucket/prefix`, `gs://…`, `az://…`; docs/design.md, "The download
//! cache on object storage").
//!
//! The same policy, keys, entries and reports as the local cache (the
//! policy code in `policy.rs`, `evict.rs` and `show.rs` is shared, and the
//! verified copy of a hit is `hit.rs`'s); only the storage differs. Under
//! the prefix:
//!
//! - `policy.yaml`, the same file as in a local cache directory;
//! - `v1/entries/<h[..2]>/<h>.json`: one `Stored` per key (`h` = the
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
//! unreferenced blob, which `collect_garbage` removes once it is an hour
//! old.
//!
//! The files, one concept each: `store.rs` holds the entries, blobs and
//! conditional puts; `pool.rs` streams a hit's blob through the build's
//! range buffers; `upload.rs` is a fill's multipart upload (over
//! `crate::objstore::Upload`). This file is the [`Backend`] over them,
//! method for method beside `local.rs`. Opening the store from the URL and
//! the environment, and the runtime every call runs on, are
//! `crate::objstore`'s, shared with publishing.

mod pool;
mod store;
mod upload;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::PutMode;

use self::pool::{RangePool, RANGE};
use self::store::{PutOutcome, Store};
use self::upload::RemoteFill;
use super::backend::{Access, Backend, Found};
use super::entry::{unix_now, Entry};
use super::error::CacheError;
use super::evict::{plan, EvictReport};
use super::fill::Filler;
use super::hit::{Blob, Each, Stop};
use super::key::Key;
use super::options::CacheOptions;
use super::policy::Policy;
use crate::objstore::Patience;

pub(crate) use crate::objstore::is_url;

/// An unreferenced blob younger than this may be a fill about to publish
/// its entry: garbage collection leaves it.
const ORPHAN_AGE: i64 = 3600;

/// The cache's client: few retries and short timeouts, because an unusable
/// store must cost a build seconds, not minutes (it goes on without the
/// cache): 3 attempts within 10 s, 120 s a request.
const PATIENCE: Patience = Patience {
    attempts: 3,
    backoff_initial: Duration::from_millis(100),
    backoff_max: Duration::from_secs(15),
    retry_within: Duration::from_secs(10),
    request_timeout: Duration::from_secs(120),
};

/// The object-store cache of one URL.
#[derive(Debug)]
pub(crate) struct Remote {
    shown: PathBuf,
    store: Arc<Store>,
    policy: Policy,
    /// The buffers of the ranges held in memory by all hits of this build
    /// at once (fetching, fetched and waiting for their turn, or being
    /// written): `parallel` in all, not per hit, so `-T` hits at once hold
    /// at most `-T` ranges.
    ranges: Arc<RangePool>,
}

impl Remote {
    /// Open the cache at `dir` (a URL): build the client from the
    /// environment, check the bucket answers (a listing), read
    /// `policy.yaml`. `None` when the policy disables the cache.
    pub(crate) fn open(
        dir: &FsPath,
        options: CacheOptions,
        access: Access,
    ) -> Result<Option<Remote>, CacheError> {
        // reqwest is built without a TLS provider of its own (as for the
        // downloads, src/fetch/http.rs): ring, process-wide.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let url = dir.to_string_lossy().into_owned();
        let (objects, prefix) =
            crate::objstore::open(&url, &PATIENCE).map_err(|e| CacheError::BadUrl {
                url: url.clone(),
                source: Box::new(e),
            })?;
        let store = Store::new(url.clone(), objects, prefix, access);
        let shown_policy = PathBuf::from(format!("{}/policy.yaml", url.trim_end_matches('/')));
        let policy = match store.policy_text()? {
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
            store: Arc::new(store),
            policy,
            ranges: Arc::new(RangePool::new(options.parallel, RANGE)),
        }))
    }
}

impl Backend for Remote {
    fn shown(&self) -> &FsPath {
        &self.shown
    }

    fn policy(&self) -> &Policy {
        &self.policy
    }

    fn is_read_only(&self) -> bool {
        self.store.is_read_only()
    }

    /// The entry (a GET) with its blob's size checked (a HEAD).
    fn lookup(self: Arc<Self>, key: &Key) -> Result<Option<Found>, CacheError> {
        let Some((stored, _)) = self.store.read(&key.hash())? else {
            return Ok(None);
        };
        if !stored.entry.is_for(key) {
            return Ok(None);
        }
        if self.store.blob_size(&stored.blob)? != Some(stored.entry.size) {
            self.store.drop_entry(key, &stored.blob)?;
            return Ok(None);
        }
        let blob = RemoteBlob {
            store: Arc::clone(&self.store),
            ranges: Arc::clone(&self.ranges),
            id: stored.blob,
            size: stored.entry.size,
        };
        Ok(Some((stored.entry, Box::new(blob))))
    }

    /// No lock to wait for: the upload starts with the first write.
    fn begin_fill(self: Arc<Self>, key: &Key) -> Result<Filler, CacheError> {
        let fill = RemoteFill::new(Arc::clone(&self.store))?;
        Ok(Filler::new(key.clone(), Box::new(fill)))
    }

    fn try_begin_fill(self: Arc<Self>, key: &Key) -> Result<Option<Filler>, CacheError> {
        self.begin_fill(key).map(Some)
    }

    /// A conditional put; a concurrent change makes us read again (three
    /// tries, then give up: these are use counts and check times, not
    /// content).
    fn update(&self, key: &Key, f: &dyn Fn(&mut Entry)) -> Result<bool, CacheError> {
        self.store.writable("updating an entry")?;
        let h = key.hash();
        for _ in 0..3 {
            let Some((mut stored, version)) = self.store.read(&h)? else {
                return Ok(false);
            };
            f(&mut stored.entry);
            if let PutOutcome::Done = self.store.put(&h, &stored, PutMode::Update(version))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn remove(&self, key: &Key) -> Result<bool, CacheError> {
        self.store.writable("removing an entry")?;
        let h = key.hash();
        let Some((stored, _)) = self.store.read(&h)? else {
            return Ok(false);
        };
        self.store.delete_entry(&h)?;
        self.store.delete_blob(&stored.blob)?;
        Ok(true)
    }

    fn entries(&self) -> Result<Vec<Entry>, CacheError> {
        Ok(self.store.list()?.into_iter().map(|s| s.entry).collect())
    }

    /// For each planned entry, read it again and delete it only if it
    /// still names the blob planned (object_store has no conditional
    /// delete: an entry replaced between the read and the delete is lost,
    /// and its blob left to garbage collection; content is never wrong),
    /// then its blob. A reader streaming that blob meanwhile finds it gone
    /// and downloads from the network.
    /// None: a fill that stops early aborts its multipart upload (a
    /// worker killed mid-upload leaves one for the bucket's lifecycle
    /// rule), so nothing is continued.
    fn partials(&self) -> Result<Vec<Entry>, CacheError> {
        Ok(Vec::new())
    }

    fn evict(&self, now: u64) -> Result<EvictReport, CacheError> {
        self.store.writable("evicting")?;
        let stored = self.store.list()?;
        let entries: Vec<Entry> = stored.iter().map(|s| s.entry.clone()).collect();
        let mut report = EvictReport::default();
        for p in plan(&self.policy, &entries, now) {
            let Some(planned) = stored.get(p.index) else {
                continue;
            };
            let h = planned.entry.key().hash();
            match self.store.read(&h)? {
                Some((there, _)) if there.blob == planned.blob => {
                    self.store.delete_entry(&h)?;
                    self.store.delete_blob(&planned.blob)?;
                    report.evicted.push((planned.entry.clone(), p.reason));
                }
                _ => report.busy.push(planned.entry.clone()),
            }
        }
        Ok(report)
    }

    /// Blobs no entry names, older than an hour (younger ones may be fills
    /// about to publish). Never skipped.
    fn collect_garbage(&self) -> Result<Option<usize>, CacheError> {
        self.store.writable("collecting garbage")?;
        let referenced: HashSet<String> = self.store.list()?.into_iter().map(|s| s.blob).collect();
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        let mut removed = 0;
        for b in self.store.list_blobs()? {
            let Some(id) = b.location.filename() else {
                continue;
            };
            if referenced.contains(id) || now - b.last_modified.timestamp() < ORPHAN_AGE {
                continue;
            }
            self.store.delete(b.location.clone())?;
            removed += 1;
        }
        Ok(Some(removed))
    }

    /// Nothing to do: a completed upload and a put are durable.
    fn sync(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// A hit's blob: an object, streamed on use.
#[derive(Debug)]
struct RemoteBlob {
    store: Arc<Store>,
    ranges: Arc<RangePool>,
    id: String,
    size: u64,
}

impl Blob for RemoteBlob {
    fn location(&self) -> PathBuf {
        self.store.blob_url(&self.id)
    }

    fn opened(&self) -> Option<&File> {
        None
    }

    fn read(&self, each: &mut Each<'_>) -> Result<(), Stop> {
        self.ranges.stream(&self.store, &self.id, self.size, each)
    }

    fn forget(&self, key: &Key, _entry: &Entry) -> Result<(), CacheError> {
        self.store.drop_entry(key, &self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_bad_urls() {
        for url in ["ftp://h/x", "http://h/x", "s3:/nothing"] {
            match Remote::open(FsPath::new(url), CacheOptions::default(), Access::ReadOnly) {
                Err(e @ CacheError::BadUrl { .. }) => {
                    assert!(e.is_bad_policy(), "{e}");
                    assert!(
                        e.to_string().starts_with(&format!("--cache-dir {url}: ")),
                        "{e}"
                    );
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }
}
