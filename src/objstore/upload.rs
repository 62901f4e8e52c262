//! A streaming multipart upload: [`Upload::start`], [`Upload::write`] in
//! order, [`Upload::finish`] (or [`Upload::abort`]).
//!
//! Bytes are copied once, into the part being filled; each full part goes
//! to the upload's own thread, which uploads up to
//! [`UploadOptions::in_flight`] parts at once on the stores' runtime and
//! takes the next part only when one of them is done (a rendezvous
//! channel), so an upload holds the part being filled and the parts in
//! flight, whatever the payload's size, and a slow store slows the writer
//! instead of filling memory. Each request (a part included) is retried by
//! the client as its [`super::Patience`] says; a part that still fails
//! aborts the multipart upload (nothing appears at the key) and the next
//! write, or [`Upload::finish`], returns the error naming the object, the
//! part and its bytes. Dropped unfinished, an upload aborts itself on its
//! thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};

use super::runtime::{runtime, RuntimeError};

/// The smallest part: S3's minimum is 5 MiB; 8 MiB is what its own tools
/// use (the AWS CLI's `multipart_chunksize`).
pub const MIN_PART: usize = 8 << 20;
/// S3's limit of parts in one upload.
const MAX_PARTS: u64 = 10_000;
/// Parts [`PartSizes::for_size`] plans for, leaving 1,000 of S3's 10,000
/// for a payload that turns out larger than said (a compressed stream of
/// incompressible bytes grows by well under 1 %).
const PLANNED_PARTS: u64 = 9_000;

/// How large each part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSizes {
    /// For a payload of unknown size: [`MIN_PART`] for the first 2,000
    /// parts (16 GiB), then doubling every 2,000 parts up to 128 MiB, so
    /// S3's 10,000 parts reach ~500 GB while an ordinary file holds only
    /// a few 8 MiB parts in memory.
    Doubling,
    /// One size for every part but the last (some stores, R2, want that).
    Fixed(usize),
}

impl PartSizes {
    /// Parts for a payload of about `size` bytes: [`MIN_PART`], or larger
    /// (whole MiB) when `size` would not fit in 9,000 of them: 8 MiB up to
    /// ~75 GB, 106 MiB for 1 TB.
    pub fn for_size(size: u64) -> Self {
        const MIB: u64 = 1 << 20;
        let min = u64::try_from(MIN_PART).unwrap_or(u64::MAX);
        let want = size.div_ceil(PLANNED_PARTS).div_ceil(MIB) * MIB;
        Self::Fixed(usize::try_from(want.max(min)).unwrap_or(usize::MAX))
    }

    /// The size of part `n` (0-based).
    pub fn size(self, n: usize) -> usize {
        match self {
            Self::Doubling => MIN_PART << (n / 2000).min(4),
            Self::Fixed(s) => s,
        }
    }

    /// The most bytes these parts carry in S3's 10,000.
    pub fn capacity(self) -> u64 {
        (0..MAX_PARTS)
            .map(|n| u64::try_from(self.size(usize::try_from(n).unwrap_or(usize::MAX))))
            .map(|s| s.unwrap_or(u64::MAX))
            .fold(0u64, u64::saturating_add)
    }
}

/// How an upload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadOptions {
    /// The parts' sizes.
    pub parts: PartSizes,
    /// Parts uploading at once (at least 1).
    pub in_flight: usize,
    /// Hash the payload (sha256) on the upload thread, in order.
    pub hash: bool,
}

/// Why an upload failed; each names the object's URL.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// A request failed (after the client's retries).
    #[error("{url}: {action}: {source}")]
    Store {
        /// The object.
        url: String,
        /// What was being done (the part and its bytes).
        action: String,
        /// The store's answer.
        #[source]
        source: object_store::Error,
    },
    /// Bytes written out of order (a bug of the caller).
    #[error("{url}: a write at byte {offset}, where byte {next} was expected")]
    OutOfOrder {
        /// The object.
        url: String,
        /// Where the write was.
        offset: u64,
        /// Where it should have been.
        next: u64,
    },
    /// The stores' runtime could not run the upload.
    #[error("{url}: {}: {source}", source.action())]
    Runtime {
        /// The object.
        url: String,
        /// Why.
        #[source]
        source: RuntimeError,
    },
    /// The upload thread could not start, or ended without an answer.
    #[error("{url}: the upload thread {what}")]
    Thread {
        /// The object.
        url: String,
        /// What happened to it.
        what: &'static str,
    },
    /// The upload was abandoned ([`Upload::abort`], or dropped) and
    /// aborted.
    #[error("{url}: the upload was abandoned")]
    Abandoned {
        /// The object.
        url: String,
    },
}

/// A completed upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    /// Bytes uploaded.
    pub size: u64,
    /// Their sha256, hex, when [`UploadOptions::hash`].
    pub sha256: Option<String>,
    /// Parts uploaded.
    pub parts: usize,
}

/// What the writer hands the upload thread.
enum Msg {
    /// A full part.
    Part(Vec<u8>),
    /// The last bytes (maybe none): upload them and complete.
    Finish(Vec<u8>),
}

/// The upload thread; its result is the completed upload.
type Thread = std::thread::JoinHandle<Result<Uploaded, UploadError>>;

/// A multipart upload in progress.
#[derive(Debug)]
pub struct Upload {
    url: String,
    sizes: PartSizes,
    next: u64,
    /// The part being filled (its capacity allocated when it starts).
    part: Vec<u8>,
    /// Parts handed to the thread.
    parts: usize,
    tx: Option<SyncSender<Msg>>,
    thread: Option<Thread>,
    uploaded: Arc<AtomicU64>,
}

impl Upload {
    /// Start the multipart upload of `path` in `store` (named `url` in
    /// messages) on a thread of its own.
    pub fn start(
        store: Arc<dyn ObjectStore>,
        path: Path,
        url: String,
        options: UploadOptions,
    ) -> Result<Self, UploadError> {
        let rt = runtime().map_err(|source| UploadError::Runtime {
            url: url.clone(),
            source,
        })?;
        // A rendezvous: the thread takes a part only when one of its
        // `in_flight` slots is free.
        let (tx, rx) = sync_channel::<Msg>(0);
        let uploaded = Arc::new(AtomicU64::new(0));
        let job = Job {
            store,
            path,
            url: url.clone(),
            options,
            uploaded: Arc::clone(&uploaded),
        };
        let thread = std::thread::Builder::new()
            .name("upload".into())
            .spawn(move || rt.block_on(job.run(rx)))
            .map_err(|_| UploadError::Thread {
                url: url.clone(),
                what: "could not start",
            })?;
        Ok(Self {
            url,
            sizes: options.parts,
            next: 0,
            part: Vec::new(),
            parts: 0,
            tx: Some(tx),
            thread: Some(thread),
            uploaded,
        })
    }

    /// The object's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.next
    }

    /// Bytes the store has acknowledged so far (parts done).
    pub fn uploaded(&self) -> u64 {
        self.uploaded.load(Ordering::Relaxed)
    }

    /// Append `data`, which must start at byte `offset` = the bytes written
    /// so far; each full part goes to the thread (this blocks while every
    /// slot is busy). The error is the upload's (it has aborted itself).
    pub fn write(&mut self, offset: u64, mut data: &[u8]) -> Result<(), UploadError> {
        if offset != self.next {
            return Err(UploadError::OutOfOrder {
                url: self.url.clone(),
                offset,
                next: self.next,
            });
        }
        while !data.is_empty() {
            let size = self.sizes.size(self.parts);
            if self.part.capacity() < size {
                self.part.reserve_exact(size - self.part.len());
            }
            let n = (size - self.part.len()).min(data.len());
            self.part.extend_from_slice(&data[..n]);
            self.next += u64::try_from(n).unwrap_or(u64::MAX);
            data = &data[n..];
            if self.part.len() == size {
                let part = std::mem::take(&mut self.part);
                self.parts += 1;
                self.send(Msg::Part(part))?;
            }
        }
        Ok(())
    }

    /// Upload the last bytes and complete the upload: the object appears
    /// at its key now, whole.
    pub fn finish(mut self) -> Result<Uploaded, UploadError> {
        let last = std::mem::take(&mut self.part);
        self.send(Msg::Finish(last))?;
        self.tx = None;
        self.join()
    }

    /// Abandon the upload: the thread aborts it (nothing appears at the
    /// key) and is waited for. The error only when the store refused the
    /// abort (the parts then stay until the bucket's lifecycle rule
    /// removes them); an upload that had failed aborted itself already.
    pub fn abort(mut self) -> Result<(), UploadError> {
        self.tx = None;
        match self.join() {
            Err(e @ UploadError::Store { .. }) if is_abort(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Hand `msg` to the thread; when it has stopped, its error.
    fn send(&mut self, msg: Msg) -> Result<(), UploadError> {
        let sent = self.tx.as_ref().is_some_and(|tx| tx.send(msg).is_ok());
        if sent {
            return Ok(());
        }
        self.tx = None;
        match self.join() {
            Err(e) => Err(e),
            Ok(_) => Err(UploadError::Thread {
                url: self.url.clone(),
                what: "ended before its last part",
            }),
        }
    }

    /// The thread's result (once: later calls say it ended).
    fn join(&mut self) -> Result<Uploaded, UploadError> {
        let ended = UploadError::Thread {
            url: self.url.clone(),
            what: "ended without an answer",
        };
        match self.thread.take() {
            Some(t) => t.join().unwrap_or(Err(ended)),
            None => Err(ended),
        }
    }
}

/// Whether `e` is the store refusing an abort.
fn is_abort(e: &UploadError) -> bool {
    matches!(e, UploadError::Store { action, .. } if action == ABORTING)
}

/// The action of a failed abort.
const ABORTING: &str = "aborting the multipart upload";

/// What the upload thread works with.
struct Job {
    store: Arc<dyn ObjectStore>,
    path: Path,
    url: String,
    options: UploadOptions,
    uploaded: Arc<AtomicU64>,
}

/// A part's upload: its number, bytes, and the store's answer.
type PartDone = (usize, std::ops::Range<u64>, object_store::Result<()>);

impl Job {
    /// The thread: start the upload, upload the parts it is handed, a few
    /// at once, hashed in order; complete when told to finish, else abort.
    async fn run(self, rx: Receiver<Msg>) -> Result<Uploaded, UploadError> {
        let mut up = self
            .store
            .put_multipart(&self.path)
            .await
            .map_err(|source| self.err("starting the multipart upload".into(), source))?;
        let result = self.parts(&mut *up, &rx).await;
        match result {
            Ok(done) => Ok(done),
            Err(e) => {
                // Nothing may appear at the key: abort, whatever failed.
                let aborted = up.abort().await;
                match (&e, aborted) {
                    (UploadError::Abandoned { .. }, Err(source)) => {
                        Err(self.err(ABORTING.into(), source))
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// The parts, then the completion.
    async fn parts(
        &self,
        up: &mut dyn MultipartUpload,
        rx: &Receiver<Msg>,
    ) -> Result<Uploaded, UploadError> {
        let in_flight = self.options.in_flight.max(1);
        let mut hasher = self.options.hash.then(Sha256::new);
        let mut tasks = tokio::task::JoinSet::<PartDone>::new();
        let (mut parts, mut size) = (0usize, 0u64);
        loop {
            // A failed part stops the upload now, not at the next wait.
            while let Some(done) = tasks.try_join_next() {
                self.part_done(done)?;
            }
            // A free slot before taking the next part.
            while tasks.len() >= in_flight {
                if let Some(done) = tasks.join_next().await {
                    self.part_done(done)?;
                }
            }
            // Blocking: this thread is ours, not a runtime worker; the
            // parts in flight run on the runtime's workers meanwhile.
            let (data, last) = match rx.recv() {
                Ok(Msg::Part(d)) => (d, false),
                Ok(Msg::Finish(d)) => (d, true),
                Err(_) => {
                    tasks.abort_all();
                    return Err(UploadError::Abandoned {
                        url: self.url.clone(),
                    });
                }
            };
            if let Some(h) = hasher.as_mut() {
                h.update(&data);
            }
            // The last part may be short; an upload has one part at least.
            if !data.is_empty() || parts == 0 {
                let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                let bytes = size..size + len;
                let put = up.put_part(PutPayload::from(data));
                let n = parts;
                tasks.spawn(async move { (n, bytes, put.await) });
                parts += 1;
                size += len;
            }
            if last {
                while let Some(done) = tasks.join_next().await {
                    self.part_done(done)?;
                }
                up.complete()
                    .await
                    .map_err(|source| self.err("completing the multipart upload".into(), source))?;
                return Ok(Uploaded {
                    size,
                    sha256: hasher.map(|h| crate::io::hex(&h.finalize())),
                    parts,
                });
            }
        }
    }

    /// Count a part's bytes as uploaded, or its error.
    fn part_done(&self, done: Result<PartDone, tokio::task::JoinError>) -> Result<(), UploadError> {
        let (n, bytes, result) = done.map_err(|_| UploadError::Thread {
            url: self.url.clone(),
            what: "lost a part's task",
        })?;
        let action = || format!("uploading part {} (bytes {bytes:?})", n + 1);
        result.map_err(|source| self.err(action(), source))?;
        self.uploaded
            .fetch_add(bytes.end - bytes.start, Ordering::Relaxed);
        Ok(())
    }

    fn err(&self, action: String, source: object_store::Error) -> UploadError {
        UploadError::Store {
            url: self.url.clone(),
            action,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    const OPTS: UploadOptions = UploadOptions {
        parts: PartSizes::Fixed(MIN_PART),
        in_flight: 2,
        hash: true,
    };

    fn get(store: &Arc<dyn ObjectStore>, key: &str) -> Option<Vec<u8>> {
        let (s, p) = (Arc::clone(store), Path::from(key));
        let got = crate::objstore::runtime::run(async move {
            match s.get(&p).await {
                Ok(r) => r.bytes().await.ok().map(|b| b.to_vec()),
                Err(_) => None,
            }
        });
        got.ok().flatten()
    }

    #[test]
    fn part_sizes_fit_s3s_10000_parts() {
        assert!(PartSizes::Doubling.capacity() > 400 << 30);
        assert_eq!(PartSizes::Doubling.size(0), 8 << 20);
        assert_eq!(PartSizes::Doubling.size(1999), 8 << 20);
        assert_eq!(PartSizes::Doubling.size(2000), 16 << 20);
        assert_eq!(PartSizes::for_size(0), PartSizes::Fixed(MIN_PART));
        assert_eq!(PartSizes::for_size(70 << 30), PartSizes::Fixed(MIN_PART));
        let tb = 1_000_000_000_000u64;
        let PartSizes::Fixed(p) = PartSizes::for_size(tb) else {
            panic!("fixed")
        };
        assert_eq!(p, 106 << 20, "1 TB in 9,000 parts of whole MiB");
        assert!(PartSizes::for_size(tb).capacity() >= tb + tb / 10);
        // 5 TiB, S3's largest object, still fits.
        assert!(PartSizes::for_size(5 << 40).capacity() >= 5 << 40);
    }

    /// Writes of any sizes across part boundaries come out whole, hashed;
    /// an empty upload is an empty object.
    #[test]
    fn an_upload_is_the_bytes_written_in_order() -> Result<(), UploadError> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let data: Vec<u8> = (0..MIN_PART * 2 + 12_345)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let mut up = Upload::start(
            Arc::clone(&store),
            Path::from("a/b"),
            "mem://a/b".into(),
            OPTS,
        )?;
        let mut at = 0usize;
        for step in [1usize, 1 << 20, MIN_PART, 3, usize::MAX] {
            let end = at.saturating_add(step).min(data.len());
            up.write(u64::try_from(at).unwrap_or(0), &data[at..end])?;
            at = end;
        }
        assert_eq!(up.written(), u64::try_from(data.len()).unwrap_or(0));
        let done = up.finish()?;
        assert_eq!(done.parts, 3);
        assert_eq!(done.size, u64::try_from(data.len()).unwrap_or(0));
        assert_eq!(done.sha256, Some(crate::io::hex(&Sha256::digest(&data))));
        assert!(get(&store, "a/b") == Some(data));

        let up = Upload::start(Arc::clone(&store), Path::from("e"), "mem://e".into(), OPTS)?;
        assert_eq!(up.finish()?.size, 0);
        assert_eq!(get(&store, "e"), Some(Vec::new()));
        Ok(())
    }

    /// Aborted (or dropped), nothing appears at the key; a write out of
    /// order is refused, naming the URL and both offsets.
    #[test]
    fn an_abandoned_upload_leaves_nothing() -> Result<(), UploadError> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut up = Upload::start(Arc::clone(&store), Path::from("x"), "mem://x".into(), OPTS)?;
        up.write(0, &vec![7u8; MIN_PART + 1])?;
        let e = up.write(5, b"late").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("mem://x: a write at byte 5, where byte 8388609 was expected")
        );
        up.abort()?;
        assert_eq!(get(&store, "x"), None);

        let mut up = Upload::start(Arc::clone(&store), Path::from("y"), "mem://y".into(), OPTS)?;
        up.write(0, b"abc")?;
        drop(up);
        assert_eq!(get(&store, "y"), None);
        Ok(())
    }
}
