//! The pass's hand-over: a stream cut in [`Chunk`]s that every consumer
//! of it shares (one buffer, reference-counted, never copied), each
//! consumer on its own thread behind a bounded channel ([`Fanout`],
//! [`spawn`]). A buffer goes back to its producer's [`Pool`] when the last
//! consumer drops it, so a pass allocates a few chunks, not one per MiB
//! read. Buffers are aligned for direct I/O ([`AlignedBuf`]), so a
//! consumer writing to a device (`flash`) writes a chunk as it is, with
//! no copy. Memory: at most [`DEPTH`] chunks queued before the slowest
//! consumer, one in each consumer's hands and one being filled, per
//! stream, whatever the image size.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::{Scope, ScopedJoinHandle};

use super::error::{ConsumerGone, PassError};
use super::sink::DownloadSink;
use crate::os::blockdev::AlignedBuf;

/// Chunk size: 1 MiB, the size of the pass's reads (large sequential
/// reads; as `crate::io::COPY_BUF`).
pub const CHUNK: usize = 1 << 20;
/// Chunks queued before each consumer: 8 (the depth the single hashing
/// thread of the first pass had; more only adds memory once the slowest
/// consumer sets the pace).
pub const DEPTH: usize = 8;

/// A buffer that returns to its pool when dropped.
struct Buf {
    data: AlignedBuf,
    home: Option<SyncSender<AlignedBuf>>,
}

impl Drop for Buf {
    fn drop(&mut self) {
        if let Some(home) = &self.home {
            // A full pool frees the buffer instead.
            let _ = home.try_send(std::mem::take(&mut self.data));
        }
    }
}

/// `len` bytes of a stream at `offset`, shared by its consumers.
#[derive(Clone)]
pub struct Chunk {
    /// Where the bytes are in the stream.
    pub offset: u64,
    len: usize,
    from: Store,
}

/// Where a chunk's bytes are.
#[derive(Clone)]
enum Store {
    /// A buffer of the pool (or the shared zeros), from its start.
    Buf(Arc<Buf>),
    /// A file's bytes seen in place, from this index of the mapping.
    Mapped(Arc<crate::os::Mapped>, usize),
}

impl Chunk {
    /// `map[at..at + len]` (at most [`CHUNK`] bytes) as a chunk at
    /// `offset`; the mapping lives until every chunk of it is dropped.
    pub fn mapped(offset: u64, map: &Arc<crate::os::Mapped>, at: usize, len: usize) -> Chunk {
        Chunk {
            offset,
            len: len.min(CHUNK),
            from: Store::Mapped(map.clone(), at),
        }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.from {
            Store::Buf(b) => &b.data[..self.len.min(b.data.len())],
            Store::Mapped(m, at) => m.get(*at..at.saturating_add(self.len)).unwrap_or_default(),
        }
    }
}

/// The buffers of one producer.
pub struct Pool {
    home: SyncSender<AlignedBuf>,
    back: Receiver<AlignedBuf>,
    zeros: Arc<Buf>,
}

impl Pool {
    /// An empty pool (buffers are made on demand, kept when returned).
    pub fn new() -> Self {
        let (home, back) = sync_channel(DEPTH + 4);
        Self {
            home,
            back,
            zeros: Arc::new(Buf {
                data: AlignedBuf::new(CHUNK),
                home: None,
            }),
        }
    }

    /// A buffer of [`CHUNK`] bytes to fill (its old contents, or zeros).
    pub fn take(&self) -> AlignedBuf {
        self.back
            .try_recv()
            .ok()
            .filter(|b| b.len() == CHUNK)
            .unwrap_or_else(|| AlignedBuf::new(CHUNK))
    }

    /// `data[..len]` as a chunk at `offset`; `data` comes back here once
    /// every consumer is done with it.
    pub fn chunk(&self, offset: u64, data: AlignedBuf, len: usize) -> Chunk {
        Chunk {
            offset,
            len,
            from: Store::Buf(Arc::new(Buf {
                data,
                home: Some(self.home.clone()),
            })),
        }
    }

    /// `len` (at most [`CHUNK`]) zeros at `offset`: a hole, never read.
    pub fn zeros(&self, offset: u64, len: usize) -> Chunk {
        Chunk {
            offset,
            len: len.min(CHUNK),
            from: Store::Buf(self.zeros.clone()),
        }
    }
}

/// What a consumer receives.
pub enum Msg {
    /// The next chunk.
    Data(Chunk),
    /// The stream is complete, this long.
    End(u64),
}

/// The senders of one stream, one per consumer. Dropped without
/// [`Fanout::end`], it tells every consumer the stream failed.
pub struct Fanout {
    senders: Vec<(String, SyncSender<Msg>)>,
}

/// A consumer's thread.
pub type Joined<'scope> = (String, ScopedJoinHandle<'scope, Result<(), PassError>>);

impl Fanout {
    /// No consumer yet.
    pub fn new() -> Self {
        Self {
            senders: Vec::new(),
        }
    }

    /// Whether nothing consumes the stream.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// `chunk` to every consumer, waiting while one's queue is full.
    pub fn send(&self, chunk: &Chunk) -> Result<(), PassError> {
        for (name, tx) in &self.senders {
            tx.send(Msg::Data(chunk.clone()))
                .map_err(|_| PassError::Stopped(name.clone()))?;
        }
        Ok(())
    }

    /// The stream ended, `len` bytes long.
    pub fn end(self, len: u64) -> Result<(), PassError> {
        for (name, tx) in &self.senders {
            tx.send(Msg::End(len))
                .map_err(|_| PassError::Stopped(name.clone()))?;
        }
        Ok(())
    }

    /// A channel to `sink`; its thread is started by [`Wired::spawn`].
    pub fn connect<'e>(&mut self, sink: &'e mut dyn DownloadSink) -> Wired<'e> {
        let name = sink.name();
        let (tx, rx) = sync_channel(DEPTH);
        self.senders.push((name.clone(), tx));
        Wired { name, rx, sink }
    }
}

/// A consumer connected to its stream, its thread not started yet.
pub struct Wired<'e> {
    name: String,
    rx: Receiver<Msg>,
    sink: &'e mut dyn DownloadSink,
}

impl<'e> Wired<'e> {
    /// Start the consumer's thread in `s`.
    pub fn spawn<'scope, 'env>(
        self,
        s: &'scope Scope<'scope, 'env>,
    ) -> Result<Joined<'scope>, PassError>
    where
        'e: 'scope,
    {
        let Self { name, rx, sink } = self;
        let handle = std::thread::Builder::new()
            .name("output-pass".into())
            .spawn_scoped(s, move || consume(&rx, sink))
            .map_err(|source| PassError::Spawn {
                sink: name.clone(),
                source,
            })?;
        Ok((name, handle))
    }
}

/// Aborts the sink unless finished, also when its thread unwinds: a sink
/// that produces a stream of its own (the encoder) drops its senders
/// then, so the consumers after it end too.
struct Guard<'a> {
    sink: &'a mut dyn DownloadSink,
    finished: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.sink.abort();
        }
    }
}

/// A consumer's thread: every chunk to `sink`, then its `finish` at the
/// end of a complete stream; a stream that stops before its end (the
/// producer failed) aborts it.
fn consume(rx: &Receiver<Msg>, sink: &mut dyn DownloadSink) -> Result<(), PassError> {
    let mut g = Guard {
        sink,
        finished: false,
    };
    let err = |g: &Guard<'_>, offset, source: std::io::Error| {
        if ConsumerGone::is(&source) {
            PassError::Stopped(g.sink.name())
        } else {
            PassError::Sink {
                sink: g.sink.name(),
                offset,
                source,
            }
        }
    };
    for msg in rx {
        match msg {
            Msg::Data(c) => g
                .sink
                .write(c.offset, c.bytes())
                .map_err(|e| err(&g, c.offset, e))?,
            Msg::End(len) => {
                g.sink.finish(len).map_err(|e| err(&g, len, e))?;
                g.finished = true;
                return Ok(());
            }
        }
    }
    Err(PassError::Stopped("the stream".into()))
}

/// Wait for every consumer; see [`first_cause`].
pub fn join_all(threads: Vec<Joined<'_>>) -> Result<(), PassError> {
    first_cause(
        threads
            .into_iter()
            .map(|(sink, h)| h.join().unwrap_or(Err(PassError::Panicked { sink }))),
    )
}

/// Of results in order, the first error that is not a consequence of
/// another ([`PassError::is_consequence`]), else the first error.
pub fn first_cause(
    results: impl IntoIterator<Item = Result<(), PassError>>,
) -> Result<(), PassError> {
    let mut first: Option<PassError> = None;
    for e in results.into_iter().filter_map(Result::err) {
        match &first {
            Some(f) if !f.is_consequence() || e.is_consequence() => {}
            _ => first = Some(e),
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is given; fails at byte `fail_at` if set.
    #[derive(Default)]
    struct Log {
        got: Vec<u8>,
        finished: Option<u64>,
        aborted: bool,
        fail_at: Option<u64>,
    }

    impl DownloadSink for Log {
        fn name(&self) -> String {
            "log".into()
        }
        fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            if self.fail_at.is_some_and(|f| f <= offset) {
                return Err(std::io::Error::other("full"));
            }
            self.got.extend_from_slice(data);
            Ok(())
        }
        fn finish(&mut self, len: u64) -> std::io::Result<()> {
            self.finished = Some(len);
            Ok(())
        }
        fn abort(&mut self) {
            self.aborted = true;
        }
    }

    fn feed(sinks: &mut [Log], chunks: usize, end: bool) -> Result<(), PassError> {
        let pool = Pool::new();
        std::thread::scope(|s| {
            let mut fan = Fanout::new();
            let mut threads = Vec::new();
            for l in sinks.iter_mut() {
                threads.push(fan.connect(l).spawn(s)?);
            }
            let mut sent = Ok(());
            for i in 0..chunks {
                let mut b = pool.take();
                b[0] = u8::try_from(i % 256).unwrap_or(0);
                sent = fan.send(&pool.chunk((i * 10) as u64, b, 10));
                if sent.is_err() {
                    break;
                }
            }
            if end && sent.is_ok() {
                sent = fan.end((chunks * 10) as u64);
            } else {
                drop(fan);
            }
            first_cause([join_all(threads), sent])
        })
    }

    #[test]
    fn every_consumer_gets_every_chunk_then_finish() {
        let mut sinks = [Log::default(), Log::default()];
        feed(&mut sinks, 100, true).expect("no failure");
        for l in &sinks {
            assert_eq!(l.got.len(), 1000);
            assert_eq!(l.got[10 * 42], 42);
            assert_eq!((l.finished, l.aborted), (Some(1000), false));
        }
    }

    #[test]
    fn a_stream_that_stops_aborts_its_consumers() {
        let mut sinks = [Log::default()];
        let e = feed(&mut sinks, 5, false).expect_err("no end");
        assert!(e.is_consequence(), "{e}");
        assert_eq!((sinks[0].finished, sinks[0].aborted), (None, true));
    }

    #[test]
    fn a_failing_consumer_is_the_error_and_stops_the_producer() {
        let mut sinks = [
            Log::default(),
            Log {
                fail_at: Some(200),
                ..Log::default()
            },
        ];
        let e = feed(&mut sinks, 10_000, true).expect_err("a sink failed");
        assert!(
            matches!(&e, PassError::Sink { sink, offset: 200, .. } if sink == "log"),
            "{e}"
        );
        // The other consumer was aborted, not finished.
        assert_eq!((sinks[0].finished, sinks[0].aborted), (None, true));
        assert!(sinks[0].got.len() < 100_000);
    }
}
