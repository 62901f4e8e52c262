//! The cache's objects under the URL's prefix: entries (`v1/entries/…`,
//! each a [`Stored`]), blobs (`v1/blobs/<id>`), and the conditional puts
//! that publish and update entries without locks.
//!
//! Every call runs on the cache's runtime ([`Store::run`]), and every error
//! names the cache URL.

use std::path::PathBuf;
use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};
use serde::{Deserialize, Serialize};

use crate::cache::backend::Access;
use crate::cache::entry::{unix_now, Entry, FillMeta};
use crate::cache::error::CacheError;
use crate::cache::key::Key;
use crate::objstore::runtime::{self, RuntimeError};

/// An entry as stored: the shared [`Entry`] plus its blob's object name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Stored {
    /// The blob's id under `v1/blobs/`.
    pub blob: String,
    /// The entry.
    pub entry: Entry,
}

/// Whether a conditional put took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutOutcome {
    Done,
    /// The entry exists (`Create`) or changed since read (`Update`).
    Conflict,
}

/// The objects of one cache URL.
#[derive(Debug)]
pub(crate) struct Store {
    url: String,
    objects: Arc<dyn ObjectStore>,
    prefix: Path,
    access: Access,
}

impl Store {
    pub(crate) fn new(
        url: String,
        objects: Arc<dyn ObjectStore>,
        prefix: Path,
        access: Access,
    ) -> Self {
        Store {
            url,
            objects,
            prefix,
            access,
        }
    }

    /// The cache URL, as given.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The client, for calls this file does not wrap (uploads, ranged GETs).
    pub(crate) fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    pub(crate) fn is_read_only(&self) -> bool {
        self.access == Access::ReadOnly
    }

    /// [`CacheError::ReadOnly`] when opened read-only.
    pub(crate) fn writable(&self, action: &'static str) -> Result<(), CacheError> {
        if self.is_read_only() {
            return Err(CacheError::ReadOnly {
                path: PathBuf::from(&self.url),
                action,
            });
        }
        Ok(())
    }

    /// A store error while `action`, naming the cache URL.
    pub(crate) fn err(
        &self,
        action: &'static str,
    ) -> impl FnOnce(object_store::Error) -> CacheError {
        let url = self.url.clone();
        move |e| CacheError::Store {
            url,
            action,
            source: Box::new(e),
        }
    }

    /// A runtime failure, naming the cache URL.
    pub(crate) fn runtime_err(&self, e: RuntimeError) -> CacheError {
        CacheError::Store {
            url: self.url.clone(),
            action: e.action(),
            source: Box::new(e),
        }
    }

    /// Run `f` on the cache's runtime and wait for it.
    pub(crate) fn run<F>(&self, f: F) -> Result<F::Output, CacheError>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        runtime::run(f).map_err(|e| self.runtime_err(e))
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

    /// `policy.yaml`, `None` when absent. A listing first: a missing
    /// bucket reads as "no policy.yaml" to a GET, not to a listing.
    pub(crate) fn policy_text(&self) -> Result<Option<bytes::Bytes>, CacheError> {
        let (s, p) = (Arc::clone(&self.objects), self.prefix.clone());
        let pp = p.clone().join("policy.yaml");
        self.run(async move {
            s.list_with_delimiter(Some(&p)).await?;
            match s.get(&pp).await {
                Ok(r) => r.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?
        .map_err(self.err("reading the cache"))
    }

    /// The entry of `h` and its ETag; `None` when absent or unreadable
    /// JSON (removed when writable).
    pub(crate) fn read(&self, h: &str) -> Result<Option<(Stored, UpdateVersion)>, CacheError> {
        let (s, p) = (Arc::clone(&self.objects), self.entry_path(h));
        let got = self
            .run(async move {
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
                if !self.is_read_only() {
                    self.delete_entry(h)?;
                }
                Ok(None)
            }
        }
    }

    /// Put `stored` as `h`'s entry, conditionally (`mode`).
    pub(crate) fn put(
        &self,
        h: &str,
        stored: &Stored,
        mode: PutMode,
    ) -> Result<PutOutcome, CacheError> {
        let json = serde_json::to_vec_pretty(stored).map_err(|e| CacheError::Store {
            url: self.url.clone(),
            action: "serialising an entry",
            source: Box::new(e),
        })?;
        let (s, p) = (Arc::clone(&self.objects), self.entry_path(h));
        let opts = PutOptions {
            mode,
            ..PutOptions::default()
        };
        match self.run(async move { s.put_opts(&p, PutPayload::from(json), opts).await })? {
            Ok(_) => Ok(PutOutcome::Done),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(PutOutcome::Conflict),
            Err(e) => Err(self.err("publishing an entry")(e)),
        }
    }

    pub(crate) fn delete_entry(&self, h: &str) -> Result<(), CacheError> {
        self.delete(self.entry_path(h))
    }

    pub(crate) fn delete_blob(&self, id: &str) -> Result<(), CacheError> {
        self.delete(self.blob_path(id))
    }

    /// Delete an object; already gone is fine.
    pub(crate) fn delete(&self, p: Path) -> Result<(), CacheError> {
        let s = Arc::clone(&self.objects);
        self.run(async move {
            match s.delete(&p).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })?
        .map_err(self.err("deleting"))
    }

    /// Blob `id`'s size (a HEAD); `None` when it is gone.
    pub(crate) fn blob_size(&self, id: &str) -> Result<Option<u64>, CacheError> {
        let (s, p) = (Arc::clone(&self.objects), self.blob_path(id));
        match self.run(async move { s.head(&p).await })? {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("looking at a blob")(e)),
        }
    }

    /// Every readable entry (fetched 16 at a time).
    pub(crate) fn list(&self) -> Result<Vec<Stored>, CacheError> {
        let (s, dir) = (Arc::clone(&self.objects), self.entries_dir());
        let listed = self
            .run(async move {
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

    /// Every blob object.
    pub(crate) fn list_blobs(&self) -> Result<Vec<ObjectMeta>, CacheError> {
        let (s, dir) = (Arc::clone(&self.objects), self.blobs_dir());
        self.run(async move { s.list(Some(&dir)).try_collect().await })?
            .map_err(self.err("listing blobs"))
    }

    /// Drop `key`'s entry if it still names blob `id`, then the blob
    /// (skipped when read-only).
    pub(crate) fn drop_entry(&self, key: &Key, id: &str) -> Result<(), CacheError> {
        if self.is_read_only() {
            return Ok(());
        }
        let h = key.hash();
        if let Some((stored, _)) = self.read(&h)? {
            if stored.blob == id {
                self.delete_entry(&h)?;
            }
        }
        self.delete_blob(id)
    }

    /// Publish an uploaded blob `id` as `key`'s entry. Another worker's
    /// entry of the same content wins (ours is deleted); one of other
    /// content (outdated) is replaced, conditionally on its ETag.
    pub(crate) fn publish(
        &self,
        key: &Key,
        id: String,
        size: u64,
        sha256: String,
        meta: FillMeta,
    ) -> Result<Entry, CacheError> {
        let stored = Stored {
            blob: id,
            entry: Entry::published(key, size, sha256, meta, unix_now()),
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
                self.delete_blob(&stored.blob)?;
                return Ok(there.entry);
            }
            if let PutOutcome::Done = self.put(&h, &stored, PutMode::Update(version))? {
                self.delete_blob(&there.blob)?;
                return Ok(stored.entry);
            }
        }
        // Three lost races in a row: keep theirs.
        self.delete_blob(&stored.blob)?;
        Err(CacheError::Store {
            url: self.url.clone(),
            action: "publishing an entry",
            source: "the entry kept changing under us; dropped our copy".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(url: &str) -> Store {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        Store::new(url.into(), objects, Path::from("p"), Access::ReadWrite)
    }

    /// The runtime's failures had no URL to name (their messages started
    /// with ": "); through the store they name it.
    #[test]
    fn runtime_and_store_errors_name_the_cache_url() {
        let s = store("s3://bucket/prefix");
        for e in [RuntimeError::Start, RuntimeError::Lost] {
            let text = s.runtime_err(e).to_string();
            assert!(text.starts_with("s3://bucket/prefix: "), "{text}");
            assert!(!text.contains(": : "), "{text}");
        }
        let text = s.err("deleting")(object_store::Error::Generic {
            store: "test",
            source: "refused".into(),
        })
        .to_string();
        assert!(text.starts_with("s3://bucket/prefix: deleting: "), "{text}");
        assert_eq!(
            s.blob_url("abc"),
            PathBuf::from("s3://bucket/prefix/v1/blobs/abc")
        );
    }

    #[test]
    fn publish_creates_then_replaces_other_content_and_yields_to_same_content(
    ) -> Result<(), CacheError> {
        let s = store("s3://b/p");
        let key = Key::file("https://h/a.zim").unwrap_or_else(|| panic!("a file key"));
        let put_blob = |id: &str| {
            let (o, p) = (Arc::clone(s.objects()), s.blob_path(id));
            s.run(async move { o.put(&p, PutPayload::from_static(b"x")).await })
                .and_then(|r| r.map_err(s.err("test put")))
        };
        put_blob("one")?;
        let first = s.publish(&key, "one".into(), 1, "aa".into(), FillMeta::default())?;
        assert_eq!(first.sha256, "aa");
        // Other content: replaces, and the old blob goes.
        put_blob("two")?;
        s.publish(&key, "two".into(), 1, "bb".into(), FillMeta::default())?;
        assert_eq!(
            s.read(&key.hash())?.map(|(st, _)| st.blob),
            Some("two".into())
        );
        assert_eq!(s.blob_size("one")?, None);
        // The same content again (another worker's): theirs stays, ours goes.
        put_blob("three")?;
        let kept = s.publish(&key, "three".into(), 1, "bb".into(), FillMeta::default())?;
        assert_eq!(kept.sha256, "bb");
        assert_eq!(
            s.read(&key.hash())?.map(|(st, _)| st.blob),
            Some("two".into())
        );
        assert_eq!(s.blob_size("three")?, None);
        assert_eq!(s.blob_size("two")?, Some(1));
        Ok(())
    }
}
