//! A zstd layer decoder for streams of several frames.
//!
//! `ruzstd`'s `StreamingDecoder` decodes exactly one frame, but a layer may
//! hold several (zstd:chunked layers, `pzstd` output) and skippable frames
//! (zstd:chunked's table of contents). This reader decodes frame after
//! frame until the stream ends, skipping skippable frames (RFC 8878 §3.1.2).

use std::io::Read;

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// `Read` over every frame of a zstd stream.
pub struct MultiFrameZstd<R> {
    source: Peek<R>,
    decoder: FrameDecoder,
    in_frame: bool,
}

impl<R: Read> MultiFrameZstd<R> {
    /// Decode `source`.
    pub fn new(source: R) -> Self {
        Self {
            source: Peek {
                inner: source,
                pending: None,
            },
            decoder: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Start the next data frame; false at the end of the stream.
    fn next_frame(&mut self) -> std::io::Result<bool> {
        loop {
            if !self.source.has_more()? {
                return Ok(false);
            }
            match self.decoder.init(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let want = u64::from(length);
                    let got =
                        std::io::copy(&mut (&mut self.source).take(want), &mut std::io::sink())?;
                    if got != want {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            format!("zstd: skippable frame ends at byte {got} of {want}"),
                        ));
                    }
                }
                Err(e) => return Err(std::io::Error::other(format!("zstd: {e}"))),
            }
        }
    }
}

impl<R: Read> Read for MultiFrameZstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            // As ruzstd's StreamingDecoder: decode until enough can be
            // collected or the frame ends.
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let more = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(more))
                    .map_err(|e| std::io::Error::other(format!("zstd: {e}")))?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

/// A reader that can tell whether more bytes follow (one byte of lookahead).
struct Peek<R> {
    inner: R,
    pending: Option<u8>,
}

impl<R: Read> Peek<R> {
    fn has_more(&mut self) -> std::io::Result<bool> {
        if self.pending.is_some() {
            return Ok(true);
        }
        let mut b = [0u8; 1];
        loop {
            match self.inner.read(&mut b) {
                Ok(0) => return Ok(false),
                Ok(_) => {
                    self.pending = Some(b[0]);
                    return Ok(true);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl<R: Read> Read for Peek<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let Some(b) = self.pending.take() {
            buf[0] = b;
            return Ok(1);
        }
        self.inner.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    #[test]
    fn frames_and_skippable_frames_decode_in_order() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second frame".to_vec();
        let mut stream = compress_to_vec(a.as_slice(), CompressionLevel::Fastest);
        // A skippable frame (magic 0x184D2A50..5F, little-endian length).
        stream.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(compress_to_vec(b.as_slice(), CompressionLevel::Fastest));
        let mut out = Vec::new();
        let r = MultiFrameZstd::new(stream.as_slice()).read_to_end(&mut out);
        assert!(r.is_ok(), "{r:?}");
        let mut want = a;
        want.extend_from_slice(&b);
        assert!(out == want, "decoded {} bytes", out.len());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut out = Vec::new();
        assert!(MultiFrameZstd::new(&b"not zstd at all"[..])
            .read_to_end(&mut out)
            .is_err());
        let full = compress_to_vec(&[7u8; 100_000][..], CompressionLevel::Fastest);
        let cut = &full[..full.len() / 2];
        assert!(MultiFrameZstd::new(cut).read_to_end(&mut out).is_err());
        assert!(MultiFrameZstd::new(&b""[..]).read_to_end(&mut out).is_ok());
    }
}
