//! [`FlashError`]: why `flash` could not start, or why its source failed.
//! A card that fails while it is written or read back is not an error of
//! the run: it is reported in its [`super::CardReport`].

use std::path::PathBuf;

use crate::error::ExitKind;
use crate::fetch::HttpError;
use crate::output::{BmapError, PassError};

/// What stopped a flash run.
#[derive(Debug, thiserror::Error)]
pub enum FlashError {
    /// The command line asks for something impossible (exit 3).
    #[error("{0}")]
    Usage(String),
    /// A device may not be written; nothing was written to any (exit 3).
    #[error("{}: {why}; nothing was written to any device", path.display())]
    Refused {
        /// The device.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The source can't be opened or read before writing starts (exit 3).
    #[error("{source_name}: {source}")]
    Source {
        /// The source (path or URL).
        source_name: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The decoded size of the source can't be known before writing, and
    /// no bmap gives it (exit 3).
    #[error(
        "{0}: its decoded size is unknown before it is read (xz keeps it at the end; a zstd \
         frame may omit it), so the devices can't be checked for room: give --bmap FILE"
    )]
    SizeUnknown(String),
    /// The bmap can't be read or is not valid (exit 3).
    #[error(transparent)]
    Bmap(#[from] BmapError),
    /// The bmap's ranges are out of order or overlap (exit 3).
    #[error("{}: {why}", path.display())]
    BadMap {
        /// The bmap.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Fetching the source or its bmap failed (exit 4 when unreachable).
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The source failed while the devices were written: no device has
    /// the image (their partition tables were zeroed first).
    #[error("{0}; no device has the image (their partition tables are zeroed)")]
    Stream(PassError),
    /// A thread could not be started or panicked.
    #[error("flash: {0}")]
    Internal(String),
}

impl FlashError {
    /// The exit code's kind (docs/spec.md §7, §14).
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Usage(_)
            | Self::Refused { .. }
            | Self::Source { .. }
            | Self::SizeUnknown(_)
            | Self::Bmap(_)
            | Self::BadMap { .. } => ExitKind::BadInput,
            Self::Http(e) => e.exit_kind(),
            Self::Stream(_) | Self::Internal(_) => ExitKind::Failure,
        }
    }
}
