//! Why a build failed: the errors of every layer it drives, and its own.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::error::ExitKind;
use crate::expand::ExpandError;
use crate::fetch::HttpError;
use crate::fs::ext4::Ext4Error;
use crate::fs::fat::FatError;
use crate::io::ChecksumMismatch;
use crate::oci::OciError;
use crate::output::PublishError;
use crate::partition::MbrError;
use crate::plan::PlanError;

/// A failed build (or check).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The config file can't be read.
    #[error("{}: {source}", path.display())]
    ConfigRead {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A config fetched from a URL is not text.
    #[error("{name}: not UTF-8 text")]
    ConfigNotText {
        /// The URL (redacted).
        name: String,
    },
    /// The cache's `policy.yaml` is invalid.
    #[error(transparent)]
    CachePolicy(crate::cache::CacheError),
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A config loaded from a URL names local files (sources on the
    /// build host), and `--allow-local-files` was not given.
    #[error(
        "{config}: a config loaded from a URL may not name local files (--allow-local-files allows it): {}",
        local_list(.sources)
    )]
    LocalSourcesInRemoteConfig {
        /// The config's URL (redacted).
        config: String,
        /// Each local source: its config key and path.
        sources: Vec<(String, PathBuf)>,
    },
    /// OUTPUT exists and `--overwrite` was not given.
    #[error("{} already exists (use -X/--overwrite to replace it)", .0.display())]
    OutputExists(PathBuf),
    /// Another build is writing OUTPUT (it holds OUTPUT's lock).
    #[error(
        "{} is being written by another build ({}; lock {})",
        output.display(),
        pid.map_or_else(|| "pid unknown".to_string(), |p| format!("pid {p}")),
        lock.display()
    )]
    OutputBusy {
        /// OUTPUT.
        output: PathBuf,
        /// The other build's process id, when its lock file names it.
        pid: Option<u32>,
        /// The lock file.
        lock: PathBuf,
    },
    /// OUTPUT's lock file can't be created or locked.
    #[error("locking the output with {}: {source}", path.display())]
    OutputLock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The temporary output file can't be created.
    #[error("creating {}: {source}", path.display())]
    OutputCreate {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// OUTPUT's directory does not exist.
    #[error("output directory {} does not exist", .0.display())]
    NoOutputDir(PathBuf),
    /// `--build-dir` can't be created.
    #[error("--build-dir {}: {source}", path.display())]
    BuildDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not enough free space for the image.
    #[error("{} has {free} bytes free; the image needs about {needed} on disk ({})", dir.display(), space_why(*image_size, *holes))]
    NoSpace {
        /// The output's directory.
        dir: PathBuf,
        /// Bytes free.
        free: u64,
        /// Bytes needed.
        needed: u64,
        /// The image's apparent size.
        image_size: u64,
        /// `needed` counts holes as holes.
        holes: bool,
    },
    /// The base image's bytes are not what its partition table says.
    #[error("{0}")]
    BadBase(String),
    /// A local source (base image, file) can't be opened.
    #[error("{}: {source}", path.display())]
    SourceOpen {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A local file changed while it was copied into the image.
    #[error("{name} changed {how} while being copied")]
    SourceChanged {
        /// The file.
        name: String,
        /// What changed ("size (n of m bytes)", or the error).
        how: String,
    },
    /// A worker thread panicked (a bug).
    #[error("{0} thread panicked")]
    Panicked(&'static str),
    /// `--sign`: the key can't be used, or signing failed.
    #[error("--sign: {0}")]
    Sign(#[from] crate::trust::sums::SignError),
    /// `--locked`: an input is not what the lock says (the config, a
    /// size, a digest), or the lock can't be used.
    #[error("--locked: {0}")]
    Locked(String),
    /// The finished image can't be moved to OUTPUT.
    #[error("moving the image to {}: {source}", path.display())]
    Persist {
        /// OUTPUT.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Planning failed.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A download failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// A container image pull failed.
    #[error(transparent)]
    Oci(#[from] OciError),
    /// An archive expansion failed.
    #[error(transparent)]
    Expand(#[from] ExpandError),
    /// A payload does not match its declared checksum.
    #[error(transparent)]
    Checksum(#[from] ChecksumMismatch),
    /// The partition table of the copy.
    #[error(transparent)]
    Partition(#[from] MbrError),
    /// Writing the data partition failed.
    #[error(transparent)]
    Ext4(#[from] Ext4Error),
    /// Writing the boot partition failed.
    #[error(transparent)]
    Fat(#[from] FatError),
    /// A bad combination of options (exit 3).
    #[error("{0}")]
    Usage(String),
    /// A block device that may not be written (exit 3): what uses it.
    #[error("{}: {why}", path.display())]
    DeviceRefused {
        /// The device.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The output pass (hashing, compressing) failed.
    #[error("writing {}: {source}", path.display())]
    OutputPass {
        /// OUTPUT.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Step 7's pass over the image: the read, or a consumer (named,
    /// with its offset).
    #[error("step 7: {0}")]
    Pass(#[from] crate::output::PassError),
    /// `OUTPUT.torrent` could not be encoded.
    #[error(transparent)]
    Torrent(#[from] crate::output::TorrentError),
    /// An operation on OUTPUT (or the image being written for it) failed.
    #[error("{}: {what}: {source}", path.display())]
    OutputIo {
        /// OUTPUT.
        path: PathBuf,
        /// What was being done, with the offset or size.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `--publish`: the store refused, or the upload failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The build's own I/O whose error already names its file (the
    /// stream adapters, the filesystem writers).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `key: path, key: path` for messages.
fn local_list(sources: &[(String, PathBuf)]) -> String {
    sources
        .iter()
        .map(|(k, p)| format!("{k}: {}", p.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How [`BuildError::NoSpace`] counted.
fn space_why(image_size: u64, holes: bool) -> String {
    if holes {
        format!("its holes excluded; its size is {image_size} bytes")
    } else {
        format!("its size, {image_size} bytes: this build can't keep holes")
    }
}

impl BuildError {
    /// Whether a payload did not have the digest it was checked
    /// against (a download's, a local file's, an archive's).
    pub fn is_checksum_mismatch(&self) -> bool {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self);
        // (`#[error(transparent)]` wrappers hide the mismatch from
        // `source()`: each level is asked what it is.)
        while let Some(e) = cur {
            let found = e.downcast_ref::<ChecksumMismatch>().is_some()
                || matches!(e.downcast_ref::<Self>(), Some(Self::Checksum(_)))
                || matches!(e.downcast_ref::<HttpError>(), Some(HttpError::Checksum(_)))
                || matches!(
                    e.downcast_ref::<ExpandError>(),
                    Some(ExpandError::Checksum(_))
                );
            if found {
                return true;
            }
            cur = match e.downcast_ref::<Self>() {
                Some(Self::Http(h)) => Some(h),
                Some(Self::Expand(x)) => Some(x),
                Some(Self::Plan(p)) => Some(p),
                _ => match e.downcast_ref::<crate::plan::PlanError>() {
                    Some(crate::plan::PlanError::Http(h)) => Some(h),
                    Some(crate::plan::PlanError::Expand(x)) => Some(x),
                    _ => match e.downcast_ref::<ExpandError>() {
                        Some(ExpandError::Http(h)) => Some(h),
                        _ => e.source(),
                    },
                },
            };
        }
        false
    }

    /// The exit code class.
    pub fn exit_kind(&self) -> ExitKind {
        // (A checksum mismatch under `--locked` is made a `Locked`
        // error by `pipeline::run`: exit 3.)
        match self {
            Self::ConfigRead { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ExitKind::BadInput
            }
            Self::ConfigNotText { .. }
            | Self::Config(_)
            | Self::CachePolicy(_)
            | Self::LocalSourcesInRemoteConfig { .. }
            | Self::OutputExists(_)
            | Self::OutputBusy { .. }
            | Self::NoOutputDir(_)
            | Self::BuildDir { .. }
            | Self::BadBase(_)
            | Self::Usage(_)
            | Self::DeviceRefused { .. }
            | Self::Locked(_)
            | Self::Partition(_) => ExitKind::BadInput,
            Self::NoSpace { .. } => ExitKind::MissingRequirement,
            // A directory we may not write is a bad output path; anything
            // else (a full disk, an I/O error) is a failure.
            Self::OutputLock { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::NotFound
                | std::io::ErrorKind::ReadOnlyFilesystem => ExitKind::BadInput,
                _ => ExitKind::Failure,
            },
            Self::SourceOpen { .. } => ExitKind::Unreachable,
            Self::Plan(e) => e.exit_kind(),
            Self::Http(e) => e.exit_kind(),
            Self::Oci(e) => e.exit_kind(),
            Self::Expand(e) => e.exit_kind(),
            Self::Publish(e) => e.exit_kind(),
            Self::Sign(e) => e.exit_kind(),
            Self::ConfigRead { .. }
            | Self::SourceChanged { .. }
            | Self::Panicked(_)
            | Self::Persist { .. }
            | Self::OutputPass { .. }
            | Self::Pass(_)
            | Self::Torrent(_)
            | Self::OutputCreate { .. }
            | Self::Checksum(_)
            | Self::Ext4(_)
            | Self::Fat(_)
            | Self::OutputIo { .. }
            | Self::Io(_) => ExitKind::Failure,
        }
    }
}
