//! Why planning failed; each variant names the config key, file or URL.

use std::path::PathBuf;

use crate::error::ExitKind;
use crate::expand::ExpandError;
use crate::fetch::HttpError;
use crate::fs::ext4::Ext4Error;
use crate::oci::OciError;
use crate::partition::MbrError;

/// A planning failure.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The base image is not usable (no MBR, bad partitions, unreadable
    /// data partition).
    #[error("base image {name}: {what}")]
    BadBase {
        /// Path or redacted URL.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A local base image does not exist.
    #[error("base image {} not found", path.display())]
    BaseMissing {
        /// Its path.
        path: PathBuf,
    },
    /// A local base image can't be opened.
    #[error("base image {}: {source}", path.display())]
    BaseOpen {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading a local base image failed.
    #[error("base image {}: {source}", path.display())]
    BaseRead {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The md5 file published beside a versioned base holds no digest.
    #[error("{url}.md5: no md5 digest in it")]
    NoBaseDigest {
        /// The base image's URL (redacted).
        url: String,
    },
    /// A `kind: url` checksum file holds no digest of its algorithm.
    #[error("{key}: {url} holds no {algo} digest")]
    NoDigest {
        /// Config key, e.g. `files[2].checksum`.
        key: String,
        /// Checksum URL (redacted).
        url: String,
        /// Algorithm name.
        algo: String,
    },
    /// A local source is missing or unreadable.
    #[error("{key}.url: {}: {source}", path.display())]
    LocalSource {
        /// Config key, e.g. `files[2]`.
        key: String,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A local source is not a regular file.
    #[error("{key}.url: {} is not a regular file", path.display())]
    NotAFile {
        /// Config key.
        key: String,
        /// Its path.
        path: PathBuf,
    },
    /// A declared `size` disagrees with the source.
    #[error("{key}.size: declared {declared} bytes but {what} is {actual} bytes")]
    SizeMismatch {
        /// Config key.
        key: String,
        /// Declared size.
        declared: u64,
        /// The URL or destination measured.
        what: String,
        /// Its size.
        actual: u64,
    },
    /// A download's size is unknown (no `size`, no Content-Length).
    #[error("{key}: {url} sends no size; declare `size`")]
    NoSize {
        /// Config key.
        key: String,
        /// URL (redacted).
        url: String,
    },
    /// A remote archive is served without Content-Length.
    #[error("{key}: {url} sends no Content-Length; the archive's download can not be bounded")]
    UnboundedArchive {
        /// Config key.
        key: String,
        /// URL (redacted).
        url: String,
    },
    /// Sources that could not be reached, all of them.
    #[error("unreachable sources:\n  {}", .0.join("\n  "))]
    Unreachable(Vec<String>),
    /// A destination the build could not write (see `plan::dest`).
    #[error("{key}: {path}: {why}")]
    Destination {
        /// The config key (`files[3].to`).
        key: String,
        /// The destination, as the Pi sees it (`/data/…`).
        path: String,
        /// Why.
        why: String,
    },
    /// `write_config` and a `files[]` entry both write `/data/image.yaml`.
    #[error("write_config: /data/image.yaml is also the destination of a files[] entry")]
    ImageYamlClash,
    /// `output.size` is below what the content needs.
    #[error("output.size: the image needs at least {min} bytes, output.size is {size}")]
    OutputTooSmall {
        /// Smallest image that fits.
        min: u64,
        /// `output.size`.
        size: u64,
    },
    /// The image would exceed `--max-size`.
    #[error("the image would be {size} bytes, more than --max-size {max}")]
    OverMaxSize {
        /// Image size.
        size: u64,
        /// `--max-size`.
        max: u64,
    },
    /// A prebuilt container image archive (`oci_images[].url`) is missing.
    #[error("oci_images {ident}: url {}: {source}", path.display())]
    OciArchive {
        /// The image's `registry/repo/name:tag`.
        ident: String,
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The base's partition table.
    #[error(transparent)]
    Partition(#[from] MbrError),
    /// The filesystem can't be sized (content too large for ext4).
    #[error(transparent)]
    Sizing(#[from] Ext4Error),
    /// A request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A registry failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// An archive is refused or unreadable.
    #[error(transparent)]
    Expand(#[from] ExpandError),
}

impl PlanError {
    /// The exit code class.
    pub fn exit_kind(&self) -> ExitKind {
        match self {
            Self::BaseMissing { .. }
            | Self::BaseOpen { .. }
            | Self::NoBaseDigest { .. }
            | Self::LocalSource { .. }
            | Self::NotAFile { .. }
            | Self::Unreachable(_)
            | Self::OciArchive { .. } => ExitKind::Unreachable,
            Self::BadBase { .. }
            | Self::NoDigest { .. }
            | Self::SizeMismatch { .. }
            | Self::NoSize { .. }
            | Self::UnboundedArchive { .. }
            | Self::ImageYamlClash
            | Self::Destination { .. }
            | Self::OutputTooSmall { .. }
            | Self::OverMaxSize { .. }
            | Self::Partition(_) => ExitKind::BadInput,
            Self::BaseRead { .. } | Self::Sizing(_) => ExitKind::Failure,
            Self::Http(e) => e.exit_kind(),
            Self::Oci(e) => e.exit_kind(),
            Self::Expand(e) => e.exit_kind(),
        }
    }
}
