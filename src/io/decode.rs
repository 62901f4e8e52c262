//! Decompressors, by compression: the one place a decoder is set up (xz
//! bases, tar-family archives, OCI layers' gzip).

use std::io::Read;

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
