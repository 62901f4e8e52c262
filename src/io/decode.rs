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
        Compression::Xz => Box::new(xz(r)),
    }
}

/// An xz decoder of `r` (multi-stream, like `xz -d`), when the caller needs
/// the concrete type (to drain what follows the stream).
pub fn xz<R: Read>(r: R) -> liblzma::read::XzDecoder<R> {
    liblzma::read::XzDecoder::new_multi_decoder(r)
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
}
