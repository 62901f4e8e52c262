//! What the plan is made of: [`Item`]s, each a file (or an archive's
//! directory) of the data partition and where its bytes come from.

use std::path::PathBuf;

use super::cached::CacheUse;
use crate::config::OciReference;
use crate::expand::{ArchivePlan, ArchiveSource};
use crate::fetch::redact;
use crate::oci::{Platform, Resolved};

/// What a source's bytes are checked against (its declared digest) and
/// whether the build learns their sha256 (a recorded build).
pub type Expected = crate::io::Check;

/// Where the data partition is mounted on the Pi: item destinations are
/// relative to it.
pub const DATA_MOUNT: &str = "/data";

/// Where one item's bytes come from.
#[derive(Debug, Clone)]
pub enum ItemSource {
    /// Bytes in memory (`content`, decoded base64, the config text).
    Bytes(Vec<u8>),
    /// A local file, verified against `checksum` while it streams.
    Local {
        /// File path.
        path: PathBuf,
        /// Expected digest (`kind: url` already resolved).
        checksum: Expected,
    },
    /// An http(s) URL, streamed into place.
    Http {
        /// URL.
        url: String,
        /// Expected digest (`kind: url` already resolved).
        checksum: Expected,
    },
    /// An image pulled from a registry into a docker-archive (src/oci); the
    /// item's size is a reservation, shrunk to the archive once written.
    Oci(Box<OciPull>),
}

/// An image to pull.
#[derive(Debug, Clone)]
pub struct OciPull {
    /// The reference.
    pub reference: OciReference,
    /// The platform.
    pub platform: Platform,
    /// Its manifests, config and layers; `None` when planning did not ask
    /// the registry (a cache hit not due for a check): the build resolves
    /// it if the cached copy turns out unusable.
    pub resolved: Option<Resolved>,
    /// `--locked`: the platform manifest digest to pull, whatever the tag
    /// names now.
    pub pin: Option<String>,
}

impl OciPull {
    /// `registry/repository/name:tag`.
    pub fn name(&self) -> String {
        self.reference.repo_tag()
    }
}

impl ItemSource {
    /// For the plan's listing: where the bytes come from.
    pub fn describe(&self) -> String {
        match self {
            Self::Bytes(_) => "inline".to_string(),
            Self::Local { path, .. } => path.display().to_string(),
            Self::Http { url, .. } => redact(url),
            Self::Oci(img) => match &img.resolved {
                Some(r) => format!("{}@{} (reserved)", img.name(), r.manifest_digest),
                None => format!("{} (reserved)", img.name()),
            },
        }
    }

    /// The source as an archive to expand; `None` for a container image,
    /// which is never one.
    pub fn as_archive(&self) -> Option<ArchiveSource<'_>> {
        match self {
            Self::Bytes(b) => Some(ArchiveSource::Bytes(b)),
            Self::Local { path, checksum } => Some(ArchiveSource::Local { path, checksum }),
            Self::Http { url, checksum } => Some(ArchiveSource::Http { url, checksum }),
            Self::Oci(_) => None,
        }
    }
}

/// A file to write into the data partition.
#[derive(Debug)]
pub struct Item {
    /// The config key it comes from (`files[3].to`,
    /// `oci_images[0].ident`, `write_config`), for messages.
    pub key: String,
    /// Destination relative to `/data`.
    pub dest: String,
    /// Size in bytes.
    pub size: u64,
    /// Source of the bytes.
    pub source: ItemSource,
    /// Set for archives (`via: tar`, ...): `dest` is the directory to
    /// expand into and `size` the expanded bytes (measured, or the limit).
    pub archive: Option<ArchivePlan>,
    /// What the download cache does for it (http(s) sources only); boxed:
    /// inline it was 384 of an item's 648 bytes, and step 4 holds a
    /// config's items more than once (a 10,000-item config's peak RSS
    /// 36 → 25 MiB).
    pub cache: Option<Box<CacheUse>>,
    /// A remote archive downloaded whole at planning (its pre-scan) into
    /// an unnamed file of the build directory, when the cache does not
    /// keep it: the build expands it from there, not from a second
    /// download (src/plan/spool.rs).
    pub spool: Option<std::fs::File>,
}

impl Item {
    /// The destination as the Pi sees it, `/data/<dest>`: the item's name
    /// in progress reports and messages.
    pub fn name(&self) -> String {
        data_path(&self.dest)
    }
}

/// `/data/<dest>`.
pub fn data_path(dest: &str) -> String {
    format!("{DATA_MOUNT}/{dest}")
}
