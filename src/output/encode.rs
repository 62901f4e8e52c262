//! The compressor of a compressed OUTPUT: an [`EncoderSink`] consumes the
//! raw image's stream and produces the download file's, cut in chunks
//! and handed to that stream's consumers (the file on disk, its sha256,
//! the torrent's pieces, an upload) as the encoder writes it. zstd and xz
//! run their own worker threads (`zstdmt`, `lzma_stream_encoder_mt`).

use std::io::Write;

use super::chunk::{Fanout, Pool, CHUNK};
use super::error::{ConsumerGone, PassError};
use super::sink::DownloadSink;
use crate::os::blockdev::AlignedBuf;

/// A compressed output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (`.zst`), level 1..=19.
    Zstd {
        /// Level (3 is zstd's default).
        level: i32,
    },
    /// xz (`.xz`), preset 0..=9.
    Xz {
        /// Preset (6 is xz's default).
        preset: u32,
    },
}

impl Compression {
    /// The file name suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Zstd { .. } => ".zst",
            Self::Xz { .. } => ".xz",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Zstd { .. } => "the zstd encoder",
            Self::Xz { .. } => "the xz encoder",
        }
    }
}

/// The encoder's output: cut into chunks, each sent to the download
/// file's consumers when full.
struct StreamOut {
    fan: Fanout,
    pool: Pool,
    buf: AlignedBuf,
    filled: usize,
    /// Offset of `buf` in the compressed stream.
    at: u64,
}

impl StreamOut {
    fn send(&mut self) -> std::io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        let buf = std::mem::replace(&mut self.buf, self.pool.take());
        let chunk = self.pool.chunk(self.at, buf, self.filled);
        self.at += self.filled as u64;
        self.filled = 0;
        self.fan.send(&chunk).map_err(|_| ConsumerGone::io())
    }

    /// The last chunk, then the end of the stream.
    fn end(mut self) -> Result<u64, PassError> {
        self.send()
            .map_err(|_| PassError::Stopped("the compressed stream".into()))?;
        let len = self.at;
        self.fan.end(len)?;
        Ok(len)
    }
}

impl Write for StreamOut {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.filled);
        self.buf[self.filled..self.filled + n].copy_from_slice(&data[..n]);
        self.filled += n;
        if self.filled == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Chunks go when full or at the end; nothing to flush between.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Encoder {
    Zstd(zstd::stream::write::Encoder<'static, StreamOut>),
    Xz(liblzma::write::XzEncoder<StreamOut>),
}

/// Compresses the raw image's stream into the download file's.
pub struct EncoderSink {
    how: Compression,
    encoder: Option<Encoder>,
    /// The compressed length, once finished.
    len: Option<u64>,
}

impl EncoderSink {
    /// An encoder of `how` with `threads` workers for a raw image of
    /// `len` bytes, writing to `fan` (the download file's consumers).
    pub fn new(how: Compression, threads: u32, len: u64, fan: Fanout) -> std::io::Result<Self> {
        let pool = Pool::new();
        let out = StreamOut {
            fan,
            buf: pool.take(),
            pool,
            filled: 0,
            at: 0,
        };
        let threads = threads.max(1);
        let encoder = match how {
            Compression::Zstd { level } => {
                let mut e = zstd::stream::write::Encoder::new(out, level)?;
                e.multithread(threads)?;
                e.include_checksum(true)?;
                e.set_pledged_src_size(Some(len))?;
                Encoder::Zstd(e)
            }
            Compression::Xz { preset } => {
                let stream = liblzma::stream::MtStreamBuilder::new()
                    .threads(threads)
                    .preset(preset)
                    .check(liblzma::stream::Check::Crc64)
                    .encoder()
                    .map_err(std::io::Error::other)?;
                Encoder::Xz(liblzma::write::XzEncoder::new_stream(out, stream))
            }
        };
        Ok(Self {
            how,
            encoder: Some(encoder),
            len: None,
        })
    }

    /// The compressed length, once finished.
    pub fn compressed_len(&self) -> Option<u64> {
        self.len
    }
}

impl DownloadSink for EncoderSink {
    fn name(&self) -> String {
        self.how.name().into()
    }

    fn write(&mut self, _offset: u64, data: &[u8]) -> std::io::Result<()> {
        match self.encoder.as_mut() {
            Some(Encoder::Zstd(e)) => e.write_all(data),
            Some(Encoder::Xz(e)) => e.write_all(data),
            None => Err(std::io::Error::other("the encoder was finished")),
        }
    }

    fn finish(&mut self, _len: u64) -> std::io::Result<()> {
        let out = match self.encoder.take() {
            Some(Encoder::Zstd(e)) => e.finish()?,
            Some(Encoder::Xz(e)) => e.finish()?,
            None => return Err(std::io::Error::other("the encoder was finished")),
        };
        self.len = Some(out.end().map_err(|_| ConsumerGone::io())?);
        Ok(())
    }

    /// Drops the encoder and with it the senders of the compressed
    /// stream: its consumers see it end early and abort.
    fn abort(&mut self) {
        self.encoder = None;
    }
}
