//! A bounded channel between a download (async, at the network edge) and a
//! decoding thread (xz base, archive expansion, OCI layer): a `ChunkSink`
//! on one side, a `Read` on the other. Memory is bounded by [`QUEUE`]
//! batches whatever the disk or decoder speed.

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use super::ChunkSink;

/// Chunks in flight: 8 (of up to 1 MiB each, [`super::BATCH`]): enough to
/// keep a decoder busy across network jitter, 8 MiB at most per stream.
pub const QUEUE: usize = 8;

/// The sink's error once the reader is gone: "`stopped` stopped".
pub fn stopped_message(what: &str) -> String {
    format!("{what} stopped")
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
    fn write(&mut self, _offset: u64, data: &[u8]) -> Result<(), String> {
        self.tx
            .send(data.to_vec())
            .map_err(|_| stopped_message(self.what))
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
        assert_eq!(tx.write(0, b"x"), Err("the xz decoder stopped".to_string()));
    }
}
