//! The object-store side of a `Filler`: a multipart upload of the blob
//! (`crate::objstore::Upload`), fed in payload order while the same bytes
//! go into the image.
//!
//! Bytes in payload order go straight to the upload (copied once, into the
//! part being filled; the upload's thread hashes the parts in order);
//! writes ahead of the prefix wait in memory (up to [`PENDING_MAX`]). A
//! rewrite of bytes already sent abandons the fill. At commit the upload
//! completes and the entry is published ([`Store::publish`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use object_store::{ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::store::Store;
use crate::cache::entry::{Entry, FillMeta};
use crate::cache::error::CacheError;
use crate::cache::fill::Fill;
use crate::cache::key::Key;
use crate::io::hex;
use crate::objstore::{PartSizes, Upload, UploadOptions};

/// A fill's upload: parts of unknown number (a download's size may be
/// unknown), 2 in flight, hashed: 24 MiB of memory per fill with the part
/// being filled.
const UPLOAD: UploadOptions = UploadOptions {
    parts: PartSizes::Doubling,
    in_flight: 2,
    hash: true,
};
/// Bytes a fill buffers when writes arrive out of order (an image's layers
/// decoded in parallel); past that the fill is abandoned, never the build.
const PENDING_MAX: usize = 256 << 20;

/// A fill of blob `id`: no lock (two workers may fill the same key; one
/// entry wins); the upload starts with the first write.
#[derive(Debug)]
pub(crate) struct RemoteFill {
    store: Arc<Store>,
    id: String,
    state: Mutex<FillState>,
}

#[derive(Debug, Default)]
struct FillState {
    next: u64,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    upload: Option<Upload>,
    failed: Option<String>,
}

impl RemoteFill {
    pub(crate) fn new(store: Arc<Store>) -> Result<Self, CacheError> {
        store.writable("filling")?;
        Ok(Self {
            store,
            id: random_id(),
            state: Mutex::new(FillState::default()),
        })
    }
}

impl Fill for RemoteFill {
    fn write_at(&self, key: &Key, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        let fail = |reason: String| CacheError::IncompleteFill {
            key: key.to_string(),
            reason,
        };
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = &st.failed {
            return Err(fail(f.clone()));
        }
        if st.upload.is_none() {
            let (objects, path) = (
                Arc::clone(self.store.objects()),
                self.store.blob_path(&self.id),
            );
            let url = self.store.blob_url(&self.id).display().to_string();
            let up = Upload::start(objects, path, url, UPLOAD).map_err(|e| CacheError::Store {
                url: self.store.url().to_string(),
                action: "starting an upload",
                source: Box::new(e),
            })?;
            st.upload = Some(up);
        }
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
            send(&mut st, data);
            loop {
                let next = st.next;
                if st.failed.is_some() {
                    break;
                }
                let Some(chunk) = st.pending.remove(&next) else {
                    break;
                };
                st.pending_bytes -= chunk.len();
                send(&mut st, &chunk);
            }
        }
        match &st.failed {
            Some(f) => {
                let f = f.clone();
                // Aborted on its thread.
                st.upload = None;
                Err(fail(f))
            }
            None => Ok(()),
        }
    }

    fn commit(self: Box<Self>, key: &Key, size: u64, meta: FillMeta) -> Result<Entry, CacheError> {
        let RemoteFill { store, id, state } = *self;
        let st = state.into_inner().unwrap_or_else(PoisonError::into_inner);
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
        let sha256 = match st.upload {
            Some(up) => {
                let done = up.finish().map_err(|e| CacheError::Store {
                    url: store.url().to_string(),
                    action: "uploading a blob",
                    source: Box::new(e),
                })?;
                done.sha256.unwrap_or_default()
            }
            // Nothing written: an empty blob.
            None => {
                let (s, p) = (Arc::clone(store.objects()), store.blob_path(&id));
                store
                    .run(async move {
                        s.put(&p, PutPayload::default())
                            .await
                            .map(|_| hex(&Sha256::digest([])))
                    })?
                    .map_err(store.err("uploading a blob"))?
            }
        };
        store.publish(key, id, size, sha256, meta)
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

/// Hand `data` (the bytes at `st.next`) to the upload (blocking while its
/// parts in flight are busy); a failed upload fails the fill.
fn send(st: &mut FillState, data: &[u8]) {
    let at = st.next;
    st.next = at.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX));
    let sent = match st.upload.as_mut() {
        Some(up) => up.write(at, data).map_err(|e| e.to_string()),
        None => Err("no upload".into()),
    };
    if let Err(e) = sent {
        st.failed = Some(e);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use object_store::path::Path;
    use object_store::ObjectStore;

    use super::*;
    use crate::cache::backend::Access;

    #[test]
    fn blob_ids_are_unique_hex() {
        let ids: HashSet<String> = (0..1000).map(|_| random_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }

    /// Out-of-order writes wait and join the prefix; the commit uploads,
    /// hashes and publishes them; a rewrite of uploaded bytes abandons.
    #[test]
    fn a_fill_uploads_in_order_and_refuses_rewrites() -> Result<(), CacheError> {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = Arc::new(Store::new(
            "s3://b/p".into(),
            objects,
            Path::from("p"),
            Access::ReadWrite,
        ));
        let key = Key::file("https://h/a.bin").unwrap_or_else(|| panic!("a file key"));
        let fill = Box::new(RemoteFill::new(Arc::clone(&store))?);
        fill.write_at(&key, 5, b"56789")?;
        fill.write_at(&key, 0, b"01234")?;
        let entry = fill.commit(&key, 10, FillMeta::default())?;
        assert_eq!(entry.sha256, hex(&Sha256::digest(b"0123456789")));
        let (stored, _) = store
            .read(&key.hash())?
            .ok_or_else(|| CacheError::IncompleteFill {
                key: key.to_string(),
                reason: "no entry".into(),
            })?;
        assert_eq!(store.blob_size(&stored.blob)?, Some(10));

        let fill = RemoteFill::new(Arc::clone(&store))?;
        fill.write_at(&key, 0, b"0123")?;
        let again = fill.write_at(&key, 2, b"xx");
        assert!(
            matches!(again, Err(CacheError::IncompleteFill { .. })),
            "{again:?}"
        );

        let read_only = Store::new(
            "s3://b/p".into(),
            Arc::clone(store.objects()),
            Path::from("p"),
            Access::ReadOnly,
        );
        let refused = RemoteFill::new(Arc::new(read_only));
        assert!(matches!(refused, Err(CacheError::ReadOnly { .. })));
        Ok(())
    }
}
