//! A bounded channel between a download (async, at the network edge) and a
//! decoding thread (xz base, archive expansion, OCI layer): a `ChunkSink`
//! on one side, a `Read` on the other. Memory is bounded by [`QUEUE`]
//! batches whatever the disk or decoder speed.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::ChunkSink;

/// Chunks in flight: 8 (of up to 1 MiB each, `fetch::BATCH`): enough to
/// keep a decoder busy across network jitter, 8 MiB at most per stream.
pub const QUEUE: usize = 8;

/// The sink's error once the reader is gone (inside an `io::Error` of kind
/// `BrokenPipe`): the download did not fail, its reader stopped first.
#[derive(Debug, thiserror::Error)]
#[error("{reader} stopped")]
pub struct ReaderStopped {
    /// The reading side, e.g. "the xz decoder".
    pub reader: &'static str,
}

impl ReaderStopped {
    /// True when `e` (or what it wraps) is this error: the reading side
    /// stopped, so its own error is the one to report.
    pub fn is_cause_of(e: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(e);
        while let Some(c) = cur {
            if c.is::<Self>() {
                return true;
            }
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                if io.get_ref().is_some_and(|i| i.is::<Self>()) {
                    return true;
                }
            }
            cur = c.source();
        }
        false
    }
}

/// A connected (sink, reader) pair; `what` names the reading side in the
/// sink's error once it is gone (e.g. "the xz decoder").
pub fn channel(what: &'static str) -> (ChannelSink, ChannelReader) {
    let (tx, rx) = sync_channel(QUEUE);
    (
        ChannelSink { tx, what },
        ChannelReader {
            rx,
            cur: Vec::new(),
            pos: 0,
        },
    )
}

/// Sends downloaded bytes to the reader; fails once the reader is gone.
#[derive(Debug)]
pub struct ChannelSink {
    tx: SyncSender<Vec<u8>>,
    what: &'static str,
}

impl ChunkSink for ChannelSink {
    fn write(&mut self, _offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.tx.send(data.to_vec()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                ReaderStopped { reader: self.what },
            )
        })
    }
    /// A stream already decoded can not start over.
    fn restart(&mut self) -> bool {
        false
    }
}

/// `Read` over the chunks; end of stream when the sink is dropped.
#[derive(Debug)]
pub struct ChannelReader {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(c) => {
                    self.cur = c;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pass_in_order() {
        let (mut tx, mut rx) = channel("the test reader");
        let t = std::thread::spawn(move || {
            let mut s = Vec::new();
            rx.read_to_end(&mut s).map(|_| s).unwrap_or_default()
        });
        for c in [&b"ab"[..], b"", b"cde"] {
            assert!(tx.write(0, c).is_ok());
        }
        drop(tx);
        assert_eq!(t.join().unwrap_or_default(), b"abcde");
    }

    #[test]
    fn sink_fails_naming_the_reader_once_it_is_gone() {
        let (mut tx, rx) = channel("the xz decoder");
        drop(rx);
        let e = tx
            .write(0, b"x")
            .err()
            .unwrap_or_else(|| panic!("no error"));
        assert_eq!(e.to_string(), "the xz decoder stopped");
        assert!(ReaderStopped::is_cause_of(&e));
        let other = std::io::Error::other("disk full");
        assert!(!ReaderStopped::is_cause_of(&other));
    }
}
