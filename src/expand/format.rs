//! Archive formats of `files[].via`.

use crate::config::Via;
use crate::io::Compression;

/// Archive formats of `files[].via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Plain tar.
    Tar,
    /// tar + gzip (multi-member gzip accepted, like `gzip -d`).
    Gztar,
    /// tar + bzip2 (multi-stream, like `bzip2 -d`).
    Bztar,
    /// tar + xz (multi-stream, like `xz -d`).
    Xztar,
    /// zip (read from a seekable file: its central directory is at the end).
    Zip,
}

impl Format {
    /// The format of a `via`, None for `direct`/`base64`.
    pub fn of(via: Via) -> Option<Self> {
        match via {
            Via::Direct | Via::Base64 => None,
            Via::Tar => Some(Self::Tar),
            Via::Gztar => Some(Self::Gztar),
            Via::Bztar => Some(Self::Bztar),
            Via::Xztar => Some(Self::Xztar),
            Via::Zip => Some(Self::Zip),
        }
    }

    /// The compression in front of the tar stream (zip compresses members,
    /// not the stream: none).
    pub fn compression(self) -> Compression {
        match self {
            Self::Tar | Self::Zip => Compression::None,
            Self::Gztar => Compression::Gzip,
            Self::Bztar => Compression::Bzip2,
            Self::Xztar => Compression::Xz,
        }
    }

    /// Compressed formats (zip included) may expand beyond their own size.
    pub fn is_compressed(self) -> bool {
        self != Self::Tar
    }
}
