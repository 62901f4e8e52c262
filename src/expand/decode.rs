//! The decompressor in front of a tar stream, by `via`.

use std::io::Read;

/// Archive formats of `files[].via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain tar.
    Tar,
    /// tar + gzip (multi-member gzip accepted, like `gzip -d`).
    Gztar,
    /// tar + bzip2 (multi-stream, like `bzip2 -d`; pure-Rust libbz2).
    Bztar,
    /// tar + xz (multi-stream, like `xz -d`).
    Xztar,
    /// zip (read from a seekable file: its central directory is at the end).
    Zip,
}

impl Format {
    /// The format of a `via`, None for `direct`/`base64`.
    pub fn of(via: crate::config::Via) -> Option<Self> {
        use crate::config::Via;
        match via {
            Via::Direct | Via::Base64 => None,
            Via::Tar => Some(Self::Tar),
            Via::Gztar => Some(Self::Gztar),
            Via::Bztar => Some(Self::Bztar),
            Via::Xztar => Some(Self::Xztar),
            Via::Zip => Some(Self::Zip),
        }
    }

    /// Compressed formats may expand beyond their own size.
    pub fn is_compressed(self) -> bool {
        self != Self::Tar
    }
}

/// `r` decoded: the tar stream of a tar-family format (zip: unchanged).
pub fn decoder<'a>(format: Format, r: impl Read + 'a) -> Box<dyn Read + 'a> {
    match format {
        Format::Tar | Format::Zip => Box::new(r),
        Format::Gztar => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Format::Bztar => Box::new(bzip2::read::MultiBzDecoder::new(r)),
        Format::Xztar => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
    }
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
        decoder(Format::Gztar, all.as_slice())
            .read_to_string(&mut out)
            .unwrap_or_default();
        assert_eq!(out, "hello world");
    }
}
