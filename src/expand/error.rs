//! Errors of archive expansion; each names the archive and, where there is
//! one, the member.

use crate::error::ExitKind;
use crate::fetch::HttpError;
use crate::fs::ext4::{CopyError, Ext4Error};
use crate::io::ChecksumMismatch;

/// What is wrong with one member, before the archive's name is attached.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// A path-safety rule (docs/spec.md §9) refused the member.
    #[error("refused: {0}")]
    Unsafe(&'static str),
    /// Device nodes, FIFOs and sockets are refused (see README "Archives").
    #[error(
        "refused: {0} members are not allowed (only files, directories, symlinks and hard links)"
    )]
    Special(&'static str),
    /// The member does not fit the expanded-size limit.
    #[error("{size} bytes would exceed the expanded-size limit of {limit} bytes ({limit_name}); {left} bytes are left")]
    TooLarge {
        /// Size the member claims.
        size: u64,
        /// The limit.
        limit: u64,
        /// Where the limit comes from.
        limit_name: String,
        /// What is left of it.
        left: u64,
    },
    /// The archive has more members than allowed.
    #[error("more than {limit} entries (entry limit, {limit_name})")]
    TooManyEntries {
        /// The limit.
        limit: u64,
        /// Where the limit comes from.
        limit_name: String,
    },
    /// The ext4 builder refused (name clash, filesystem full, no inode left).
    #[error(transparent)]
    Fs(#[from] Ext4Error),
    /// Reading the member's data failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Malformed member (bad owner, short data, ...).
    #[error("{0}")]
    Bad(String),
}

/// An expansion failure naming the archive and the member.
#[derive(Debug, thiserror::Error)]
pub enum ExpandError {
    /// One member failed.
    #[error("archive {archive}: member {member:?}: {error}")]
    Member {
        /// Archive (path or redacted URL).
        archive: String,
        /// Member path as stored (lossy UTF-8).
        member: String,
        /// What went wrong.
        error: MemberError,
    },
    /// The archive itself is unreadable (not a tar/zip, corrupt stream).
    #[error("archive {archive}: {message}")]
    Archive {
        /// Archive (path or redacted URL).
        archive: String,
        /// What went wrong.
        message: String,
    },
    /// A local archive can't be opened (exit 4, like any missing source).
    #[error("{archive}: {source}")]
    Open {
        /// Archive path.
        archive: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Downloading a remote archive failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The archive does not match its declared checksum.
    #[error(transparent)]
    Checksum(#[from] ChecksumMismatch),
    /// The build's own I/O failed (reading past the archive, the build
    /// directory's temporary copy).
    #[error("archive {archive}: {what}: {source}")]
    Io {
        /// Archive (path or redacted URL).
        archive: String,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// Creating the target directory failed.
    #[error(transparent)]
    Fs(#[from] Ext4Error),
    /// The expansion thread panicked (a bug).
    #[error("{archive}: expansion thread panicked")]
    Panicked {
        /// Archive.
        archive: String,
    },
}

impl From<CopyError> for MemberError {
    fn from(e: CopyError) -> Self {
        match e {
            CopyError::Read(e) => Self::Io(e),
            CopyError::Short { .. } => Self::Bad(e.to_string()),
            CopyError::Write(e) => Self::Fs(e),
        }
    }
}

impl ExpandError {
    /// True when the archive's content is at fault (exit code 3), false
    /// for failures of the build itself (filesystem full, I/O: exit 1).
    pub fn is_bad_input(&self) -> bool {
        match self {
            // Name clashes and invalid names are the archive's doing; a
            // full filesystem, I/O and internal errors are the build's.
            Self::Member { error, .. } => match error {
                MemberError::Fs(e) => matches!(
                    e,
                    Ext4Error::Exists { .. }
                        | Ext4Error::BadName { .. }
                        | Ext4Error::NotADirectory { .. }
                        | Ext4Error::BadSize { .. }
                        | Ext4Error::TooManyLinks { .. }
                ),
                _ => true,
            },
            Self::Archive { .. } | Self::Checksum(_) => true,
            Self::Open { .. }
            | Self::Http(_)
            | Self::Io { .. }
            | Self::Fs(_)
            | Self::Panicked { .. } => false,
        }
    }

    /// The exit code class: bad archives 3, a missing local archive or an
    /// unreachable server 4, failures of the build itself 1.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Open { .. } => ExitKind::Unreachable,
            Self::Http(e) => e.exit_kind(),
            _ if self.is_bad_input() => ExitKind::BadInput,
            _ => ExitKind::Failure,
        }
    }

    pub(crate) fn archive(archive: &str, message: impl std::fmt::Display) -> Self {
        Self::Archive {
            archive: archive.to_string(),
            message: message.to_string(),
        }
    }
}
