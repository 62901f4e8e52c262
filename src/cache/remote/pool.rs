//! The hit range pool: a hit's blob streams from the store in ranged GETs
//! of [`RANGE`] bytes, several in flight, each into a buffer of one pool
//! shared by all hits of the build (`-T` buffers in all, not per hit), and
//! handed to the reader in payload order.

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::StreamExt;
use object_store::path::Path;
use object_store::ObjectStore;

use super::store::Store;
use crate::cache::hit::{Each, Stop};
use crate::objstore::runtime::runtime;

/// Ranged GET size of a hit. Larger ranges cost s3s-fs less CPU per
/// byte (bench-s3: 25 → 22 → 21 CPU s for 4 GiB at 8, 16, 32 MiB); a
/// build holds `-T` of them (docs/benchmarks-notes.md).
pub(crate) const RANGE: usize = 16 << 20;
/// [`RANGE`] as an offset.
const RANGE_BYTES: u64 = 16 << 20;

/// The range buffers of one build, shared by all its hits: `n` at most,
/// each taken with a permit and returned when its range is written.
/// Allocated once and reused: a fresh buffer per range costs page faults
/// and the kernel zeroing every page again.
pub(crate) struct RangePool {
    permits: Arc<tokio::sync::Semaphore>,
    free: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Buffers (and so ranges in flight) in all.
    n: usize,
    capacity: usize,
}

impl std::fmt::Debug for RangePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RangePool")
            .field("available", &self.permits.available_permits())
            .field("n", &self.n)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl RangePool {
    /// `n` buffers (at least one) of `capacity` bytes.
    pub(crate) fn new(n: usize, capacity: usize) -> Self {
        let n = n.max(1);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(n)),
            free: Arc::new(Mutex::new(Vec::new())),
            n,
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

    /// Stream blob `id` (`size` bytes) of `store` in ranged GETs, `n` at
    /// once, handing each range in order to `each` on this thread. Stops at
    /// `each`'s first error or the store's ([`Stop::Unreadable`]); a blob
    /// shorter than `size` ends early (the caller checks the length).
    pub(crate) fn stream(
        self: &Arc<Self>,
        store: &Store,
        id: &str,
        size: u64,
        each: &mut Each<'_>,
    ) -> Result<(), Stop> {
        let rt = runtime().map_err(|e| Stop::Unreadable(store.runtime_err(e)))?;
        // Each range holds a buffer of the build's shared pool from before
        // its GET until it is written. A hit takes its buffers in range
        // order, so the range it needs next always holds one (or is the
        // next to get one): hits sharing the pool can't wait on each other.
        let (tx, rx) = sync_channel::<Result<(u64, Slot), object_store::Error>>(1);
        let (s, p, parallel) = (Arc::clone(store.objects()), store.blob_path(id), self.n);
        let pool = Arc::clone(self);
        let range_size = RANGE_BYTES;
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
        let result = loop {
            match rx.recv() {
                Ok(Ok((off, slot))) => {
                    let done = each(off, &slot.buf);
                    drop(slot);
                    if let Err(e) = done {
                        break Err(e);
                    }
                }
                Ok(Err(e)) => break Err(Stop::Unreadable(store.err("reading a blob")(e))),
                Err(_) => break Ok(()),
            }
        };
        drop(rx);
        task.abort();
        result
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

#[cfg(test)]
mod tests {
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::cache::backend::Access;

    #[test]
    fn range_bytes_is_range() {
        assert_eq!(usize::try_from(RANGE_BYTES).ok(), Some(RANGE));
    }

    /// Ranges of 16 MiB from a 40 MiB blob, 2 buffers: every byte in
    /// order, and the buffers back in the pool afterwards.
    #[test]
    fn streams_in_order_through_a_few_reused_buffers() -> Result<(), Box<dyn std::error::Error>> {
        let objects: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = Store::new(
            "s3://b/p".into(),
            objects,
            Path::from("p"),
            Access::ReadWrite,
        );
        let size = 2 * RANGE + 12345;
        let data: Vec<u8> = (0..size)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let (o, p, d) = (
            Arc::clone(store.objects()),
            store.blob_path("x"),
            data.clone(),
        );
        store.run(async move { o.put(&p, PutPayload::from(d)).await })??;
        let pool = Arc::new(RangePool::new(2, RANGE));
        let mut got = Vec::new();
        let mut offsets = Vec::new();
        pool.stream(&store, "x", u64::try_from(size)?, &mut |off, b| {
            offsets.push(off);
            got.extend_from_slice(b);
            Ok(())
        })
        .map_err(|e| format!("{e:?}"))?;
        assert_eq!(offsets, [0, RANGE_BYTES, 2 * RANGE_BYTES]);
        assert!(got == data, "the bytes differ");
        assert_eq!(pool.permits.available_permits(), 2);
        let free = pool.free.lock().map(|f| f.len()).unwrap_or(usize::MAX);
        assert!(free <= 2, "{free} buffers");
        // A missing blob is unreadable (the entry stays), not corrupt.
        let missing = pool.stream(&store, "y", 5, &mut |_, _| Ok(()));
        assert!(matches!(missing, Err(Stop::Unreadable(_))), "{missing:?}");
        Ok(())
    }
}
