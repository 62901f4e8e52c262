//! Decompressors, by compression: the one place a decoder is set up (xz
//! bases, tar-family archives, OCI layers' gzip and zstd, `verify`'s
//! compressed targets).

use std::io::{BufRead, Read};

/// A stream compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip; several members are concatenated, like `gzip -d`.
    Gzip,
    /// bzip2; several streams are concatenated, like `bzip2 -d` (pure-Rust libbz2).
    Bzip2,
    /// xz; several streams are concatenated, like `xz -d`.
    Xz,
}

/// `r` decoded.
pub fn decoder<'a>(compression: Compression, r: impl Read + 'a) -> Box<dyn Read + 'a> {
    match compression {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Compression::Xz => match xz(r) {
            Ok(d) => Box::new(d),
            Err(e) => Box::new(Failed(Some(e))),
        },
    }
}

/// Most memory an xz stream may make its decoder allocate: 256 MiB. The
/// decoder's need is set by the stream's header (its dictionary size, up
/// to 4 GiB); `xz -9` streams need 65 MiB to decode (xz(1), "Memory
/// usage"), so this is 4 × the largest preset, and a hostile header
/// (found by fuzzing: a 58-byte input asking for a 4 GiB dictionary) is
/// an error ("memory limit reached") instead of a 4 GiB allocation.
pub const XZ_MEMLIMIT: u64 = 256 << 20;

/// An xz decoder of `r` (multi-stream, like `xz -d`), when the caller needs
/// the concrete type (to drain what follows the stream). Only the `.xz`
/// format: the legacy `.lzma` format has no magic number, so any stray
/// bytes would otherwise be taken for its header.
pub fn xz<R: Read>(r: R) -> std::io::Result<liblzma::read::XzDecoder<R>> {
    use liblzma::stream::{Stream, CONCATENATED};
    // Setting up fails only when the process is out of memory.
    let stream = Stream::new_stream_decoder(XZ_MEMLIMIT, CONCATENATED)?;
    Ok(liblzma::read::XzDecoder::new_stream(r, stream))
}

/// Largest window a zstd frame may ask its decoder for: 2^27 bytes
/// (128 MiB), libzstd's default limit (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`,
/// what `zstd -d` accepts without `--long` or `--memory`). Every preset
/// up to `zstd -19` stays below it (`-19`: 2^23); a frame asking for more
/// is an error ("Frame requires too much memory for decoding") instead of
/// the allocation.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// A zstd decoder of `r`, like `zstd -d`: frame after frame to the end of
/// the stream (zstd:chunked layers and `pzstd` output have several),
/// skippable frames skipped (RFC 8878 §3.1.2; zstd:chunked's table of
/// contents is one). A stream that ends inside a frame, or holds anything
/// but frames, is an error; so is an empty one. Setting up fails only when
/// the process is out of memory.
pub fn zstd<R: BufRead>(r: R) -> std::io::Result<::zstd::stream::read::Decoder<'static, R>> {
    let mut d = ::zstd::stream::read::Decoder::with_buffer(r)?;
    d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(d)
}

/// A reader whose first read fails with the error a decoder could not be
/// set up with.
struct Failed(Option<std::io::Error>);

impl Read for Failed {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(self
            .0
            .take()
            .unwrap_or_else(|| std::io::Error::other("the decoder could not be set up")))
    }
}

/// Read to the end, discarding: bytes after a compressed stream still
/// count for its checksum, and a producer must never block on a reader
/// that stopped early.
pub fn drain(r: &mut dyn Read) -> std::io::Result<u64> {
    std::io::copy(r, &mut std::io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_members_are_concatenated() {
        let mut all = Vec::new();
        for part in [&b"hello "[..], b"world"] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap_or_default();
            all.extend(e.finish().unwrap_or_default());
        }
        let mut out = String::new();
        decoder(Compression::Gzip, all.as_slice())
            .read_to_string(&mut out)
            .unwrap_or_default();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn xz_streams_are_concatenated_and_drain_counts_the_tail() {
        let mut all = Vec::new();
        for part in [&b"ab"[..], b"cd"] {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(part).unwrap_or_default();
            all.extend(e.finish().unwrap_or_default());
        }
        let mut out = Vec::new();
        decoder(Compression::Xz, all.as_slice())
            .read_to_end(&mut out)
            .unwrap_or_default();
        assert_eq!(out, b"abcd");
        assert_eq!(drain(&mut &b"tail"[..]).unwrap_or_default(), 4);
    }

    /// `zstd -1` of `data`, in one frame.
    fn zstd1(data: &[u8]) -> Vec<u8> {
        ::zstd::bulk::compress(data, 1).unwrap_or_default()
    }

    fn unzstd(stream: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        zstd(stream)
            .and_then(|mut d| d.read_to_end(&mut out))
            .map(|_| out)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn zstd_frames_and_skippable_frames_decode_in_order() {
        let a: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second frame".to_vec();
        let mut stream = zstd1(&a);
        // A skippable frame (magic 0x184D2A50..5F, little-endian length).
        stream.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(zstd1(&b));
        let mut want = a;
        want.extend_from_slice(&b);
        let got = unzstd(&stream);
        assert!(got.as_ref() == Ok(&want), "{:?}", got.map(|v| v.len()));
    }

    #[test]
    fn zstd_garbage_truncation_and_empty_streams_are_errors() {
        assert!(unzstd(b"not zstd at all").is_err());
        let full = zstd1(&[7u8; 100_000]);
        assert!(unzstd(&full[..full.len() / 2]).is_err());
        let mut trailing = full.clone();
        trailing.extend_from_slice(b"junk after the frame");
        assert!(unzstd(&trailing).is_err());
        assert!(unzstd(b"").is_err());
        assert_eq!(unzstd(&full).map(|v| v.len()), Ok(100_000));
    }

    #[test]
    fn a_zstd_frame_asking_for_more_than_the_window_limit_is_an_error() {
        // A streamed frame (no content size) declares its window: 2^28
        // here, one past the limit; `zstd -d` refuses it too.
        let mut e = ::zstd::stream::write::Encoder::new(Vec::new(), 1)
            .unwrap_or_else(|_| unreachable!("an encoder is set up unless out of memory"));
        e.window_log(ZSTD_WINDOW_LOG_MAX + 1).unwrap_or_default();
        e.write_all(b"hello").unwrap_or_default();
        let big = e.finish().unwrap_or_default();
        let err = unzstd(&big).expect_err("over the limit");
        assert!(err.contains("memory"), "{err}");
        // The same data with the largest window allowed decodes.
        let mut e = ::zstd::stream::write::Encoder::new(Vec::new(), 1)
            .unwrap_or_else(|_| unreachable!("an encoder is set up unless out of memory"));
        e.window_log(ZSTD_WINDOW_LOG_MAX).unwrap_or_default();
        e.write_all(b"hello").unwrap_or_default();
        let ok = e.finish().unwrap_or_default();
        assert_eq!(unzstd(&ok), Ok(b"hello".to_vec()));
    }

    #[test]
    fn an_xz_header_asking_for_more_than_the_memory_limit_is_an_error() {
        // A real stream whose block header asks for a 4 GiB dictionary
        // (LZMA2 property byte 40), its header CRC32 fixed: `xz -d`
        // decodes it, `xz -d --memlimit=256MiB` refuses it, and so do we.
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(b"hello").unwrap_or_default();
        let mut x = e.finish().unwrap_or_default();
        let h = 12; // after the stream header
        let size = (usize::from(x[h]) + 1) * 4;
        let hdr = &mut x[h..h + size];
        let k = hdr.windows(2).position(|w| w == [0x21, 0x01]).unwrap_or(0);
        hdr[k + 2] = 40;
        let mut crc = flate2::Crc::new();
        crc.update(&hdr[..size - 4]);
        hdr[size - 4..].copy_from_slice(&crc.sum().to_le_bytes());
        let mut out = Vec::new();
        let e = decoder(Compression::Xz, x.as_slice())
            .read_to_end(&mut out)
            .map_or_else(|e| e.to_string(), |n| format!("read {n} bytes"));
        assert!(e.contains("memory limit"), "{e}");
    }
}
