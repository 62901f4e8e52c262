//! [`ArchiveSource`]: where an archive's bytes come from, as the expansion
//! sees it (the plan's item sources, borrowed).

use std::path::Path;

/// What the bytes are checked against, and whether their sha256 is
/// learnt ([`crate::io::Check`]).
pub type Expected<'a> = &'a crate::io::Check;

/// Where an archive's bytes come from.
#[derive(Debug, Clone, Copy)]
pub enum ArchiveSource<'a> {
    /// In memory (`content`, decoded base64).
    Bytes(&'a [u8]),
    /// A local file, verified against `checksum` while it is read.
    Local {
        /// File path.
        path: &'a Path,
        /// Expected digest.
        checksum: Expected<'a>,
    },
    /// An open file (a cached download, already verified against its
    /// entry), verified against `checksum` while it is read.
    Open {
        /// The file, read from its start.
        file: &'a std::fs::File,
        /// Its name in messages (the URL it was downloaded from).
        name: &'a str,
        /// Expected digest.
        checksum: Expected<'a>,
    },
    /// An http(s) URL, streamed (tar family) or spooled to the build
    /// directory first (zip).
    Http {
        /// URL.
        url: &'a str,
        /// Expected digest.
        checksum: Expected<'a>,
    },
}

impl ArchiveSource<'_> {
    /// True for a download.
    pub fn is_remote(&self) -> bool {
        matches!(self, Self::Http { .. })
    }
}
