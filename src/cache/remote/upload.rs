//! The object-store side of a `Filler`: a multipart upload of the blob,
//! fed in payload order while the same bytes go into the image.
//!
//! Bytes in payload order are copied once, into the part being filled; each
//! full part goes to the upload (a thread of its own), which hashes it on
//! the way; writes ahead of the prefix wait in memory (up to
//! [`PENDING_MAX`]). A rewrite of bytes already sent abandons the fill. At
//! commit the upload completes and the entry is published
//! ([`Store::publish`]).

use std::collections::BTreeMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::runtime::runtime;
use super::store::Store;
use crate::cache::entry::{Entry, FillMeta};
use crate::cache::error::CacheError;
use crate::cache::fill::Fill;
use crate::cache::key::Key;
use crate::io::hex;

/// The first multipart parts' size (see [`part_size`]); S3's minimum is
/// 5 MiB.
const PART: usize = 8 << 20;
/// Parts of one fill uploading at once.
const PARTS_IN_FLIGHT: usize = 2;
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

/// The upload thread; its result is the blob's sha256.
type Uploader = std::thread::JoinHandle<Result<String, object_store::Error>>;

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
        if st.thread.is_none() {
            let (tx, thread) = spawn_uploader(&self.store, &self.id)?;
            st.tx = Some(tx);
            st.thread = Some(thread);
        }
        let len = |b: &[u8]| u64::try_from(b.len()).unwrap_or(u64::MAX);
        let end = offset.saturating_add(len(data));
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
                let end = st.next.saturating_add(len(&chunk));
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
                let (s, p) = (Arc::clone(store.objects()), store.blob_path(&id));
                store.run(async move {
                    s.put(&p, PutPayload::default())
                        .await
                        .map(|_| hex(&Sha256::digest([])))
                })?
            }
        };
        let sha256 = uploaded.map_err(store.err("uploading a blob"))?;
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

/// Start the multipart upload of blob `id` on a thread of its own.
fn spawn_uploader(store: &Store, id: &str) -> Result<(SyncSender<Msg>, Uploader), CacheError> {
    let rt = runtime().map_err(|e| store.runtime_err(e))?;
    // A rendezvous: the uploader takes a part only when one of its
    // PARTS_IN_FLIGHT slots is free, so a fill holds the part being filled
    // and the parts in flight, no more.
    let (tx, rx) = sync_channel::<Msg>(0);
    let (s, p) = (Arc::clone(store.objects()), store.blob_path(id));
    let thread = std::thread::Builder::new()
        .name("cache-upload".into())
        .spawn(move || rt.block_on(upload(s, p, rx)))
        .map_err(|e| CacheError::Store {
            url: store.url().to_string(),
            action: "starting an upload thread",
            source: Box::new(e),
        })?;
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
    use std::collections::HashSet;

    use super::*;
    use crate::cache::backend::Access;

    #[test]
    fn parts_reach_hundreds_of_gigabytes_in_s3s_10000() {
        let total: u64 = (0..10_000)
            .map(|n| u64::try_from(part_size(n)).unwrap_or(u64::MAX))
            .sum();
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
