//! Planning: config + base image → the items to write, the data
//! partition's size and the image size (docs/spec.md §6), before anything is
//! written. One concept per file:
//!
//! - [`item`]: what a plan is made of;
//! - [`base`]: locating and inspecting the base image;
//! - [`items`]: the config's entries as items, probed or measured;
//! - [`size`]: the sizes that follow;
//! - [`error`]: why planning failed.

pub mod base;
pub mod cached;
pub mod dest;
pub mod disk;
pub mod error;
pub mod item;
pub mod items;
pub mod size;
pub mod spool;

pub use base::{
    cache_base, inspect_base, locate_base, BaseInfo, BaseLocation, BaseSpec, DEFAULT_BASE_URL,
};
pub use cached::{CacheUse, Planner};
pub use error::PlanError;
pub use item::{data_path, Expected, Item, ItemSource, OciPull, DATA_MOUNT};
pub use size::Sizes;

use crate::cache::Cache;
use crate::config::ImageConfig;
use crate::fetch::Net;
use crate::fs::ext4::{OldSummary, BLOCK_SIZE};

/// Permissions of what the build creates: files 0644, directories 0755.
pub const FILE_PERM: u16 = 0o644;
/// See [`FILE_PERM`].
pub const DIR_PERM: u16 = 0o755;

/// Entries assumed in a base's data partition that could not be read
/// before the copy (an xz base in `--check`): 64, above what published
/// bases hold (`master_fs`, `images/`, one image tar, `lost+found`).
const UNREAD_OLD_ENTRIES: u64 = 64;
/// Directories assumed in it: 8 (see [`UNREAD_OLD_ENTRIES`]).
const UNREAD_OLD_DIRS: u64 = 8;

/// The complete plan. Not `Clone`: it owns what the writing steps
/// consume (the download cache's pinned hits).
#[derive(Debug)]
pub struct Plan {
    /// Items in write order (images, files in config order, `image.yaml`).
    pub items: Vec<Item>,
    /// Bytes left free for the Pi to unpack prebuilt container images.
    pub oci_free: u64,
    /// Data partition offset in the image.
    pub p3_start: u64,
    /// New data partition (filesystem) size.
    pub fs_size: u64,
    /// Output image size.
    pub image_size: u64,
    /// Smallest image that fits.
    pub min_image_size: u64,
    /// Inodes expected in the new filesystem.
    pub inodes_expected: u64,
    /// Bytes of content to write (items + carried over + temporary copies).
    pub content_bytes: u64,
    /// What the build allocates on disk: holes counted as holes where the
    /// platform keeps them (src/plan/disk.rs). The free-space check's
    /// figure.
    pub disk: disk::DiskUse,
    /// Non-fatal remarks.
    pub warnings: Vec<String>,
}

/// What planning may use and do.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions<'a> {
    /// `--max-size`.
    pub max_size: Option<u64>,
    /// The download cache, if any.
    pub cache: Option<&'a Cache>,
    /// `--check`: download nothing (remote archives are estimated, not
    /// pre-scanned).
    pub check: bool,
    /// The build directory, where a remote archive's pre-scan keeps it for
    /// the build when the cache does not (src/plan/spool.rs).
    pub spool_dir: Option<&'a std::path::Path>,
    /// Learn every source's sha256 while it is written (`--lock`,
    /// `--sbom`, `--provenance`).
    pub record: bool,
    /// `--locked`: build exactly the lock's inputs.
    pub locked: Option<&'a crate::trust::Lock>,
}

/// Make the plan: the config's items (probed, measured), then their sizes
/// on `base`.
pub fn make_plan(
    config: &ImageConfig,
    base: &BaseInfo,
    net: &Net,
    opts: &PlanOptions<'_>,
) -> Result<Plan, PlanError> {
    let mut planner = Planner::new(opts.cache);
    planner.prescan = !opts.check;
    planner.spool_dir = opts.spool_dir.map(std::path::Path::to_path_buf);
    planner.record = opts.record || opts.locked.is_some();
    if let Some(lock) = opts.locked {
        planner.pin_to(lock);
    }
    let (items, oci_free) = items::plan_items(config, net, &mut planner)?;
    dest::check_items(&items)?;
    let found = Found {
        items,
        oci_free,
        warnings: planner.warnings,
    };
    size_plan(config, base, opts.max_size, found)
}

/// The same items sized again on `base` (a compressed or remote base is
/// only known exactly once copied): nothing is probed or downloaded again.
pub fn resize(
    plan: Plan,
    config: &ImageConfig,
    base: &BaseInfo,
    max_size: Option<u64>,
) -> Result<Plan, PlanError> {
    let found = Found {
        items: plan.items,
        oci_free: plan.oci_free,
        warnings: Vec::new(),
    };
    size_plan(config, base, max_size, found)
}

/// What planning found of the config's items.
struct Found {
    items: Vec<Item>,
    oci_free: u64,
    warnings: Vec<String>,
}

fn size_plan(
    config: &ImageConfig,
    base: &BaseInfo,
    max_size: Option<u64>,
    found: Found,
) -> Result<Plan, PlanError> {
    let Found {
        items,
        oci_free,
        mut warnings,
    } = found;
    if let Some(old) = base.old_names()? {
        dest::check_against_base(&items, &old)?;
    }
    let p3 = base.mbr.partition(3)?;
    if p3.offset() != config.base.rootfs_size {
        warnings.insert(0, format!(
            "base.rootfs_size is {} but the base image's data partition starts at byte {}; using the partition table",
            config.base.rootfs_size,
            p3.offset()
        ));
    }
    // Not scanned (xz base in --check): the whole old partition is the bound.
    let old = base.old.unwrap_or(OldSummary {
        entries: UNREAD_OLD_ENTRIES,
        dirs: UNREAD_OLD_DIRS,
        bytes: p3.len(),
        file_blocks: p3.len().div_ceil(BLOCK_SIZE),
    });
    let sizes = size::size_image(
        &items,
        &old,
        oci_free,
        size::Frame {
            p3_start: p3.offset(),
            base_size: base.size,
            output: config.output_size,
            max_size,
        },
    )?;
    // Remote zips are downloaded to the build directory before expansion.
    let content_bytes = items
        .iter()
        .map(|i| i.size + i.archive.as_ref().map_or(0, |a| a.temp_bytes()))
        .sum::<u64>()
        + old.bytes;
    let disk = disk::disk_use(base, p3.offset(), &items, old.bytes, sizes.image_size);
    Ok(Plan {
        items,
        oci_free,
        p3_start: p3.offset(),
        fs_size: sizes.fs_size,
        image_size: sizes.image_size,
        min_image_size: sizes.min_image_size,
        inodes_expected: sizes.inodes_expected,
        content_bytes,
        disk,
        warnings,
    })
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "plan:")?;
        for it in &self.items {
            let what = if it.archive.is_some() {
                "/ expanded"
            } else {
                ""
            };
            let cache = it
                .cache
                .as_ref()
                .map_or(String::new(), |c| format!("  ({})", c.describe()));
            writeln!(
                f,
                "  {}{what}  {} bytes  from {}{cache}",
                it.name(),
                it.size,
                it.source.describe()
            )?;
        }
        writeln!(
            f,
            "  content: {} bytes (carried-over data partition included)",
            self.content_bytes
        )?;
        writeln!(
            f,
            "  data partition: starts at byte {}, {} bytes",
            self.p3_start, self.fs_size
        )?;
        writeln!(
            f,
            "  image size: {} bytes (smallest that fits: {})",
            self.image_size, self.min_image_size
        )?;
        if self.disk.holes {
            writeln!(
                f,
                "  allocates: about {} bytes on disk (holes, of sparse local files too, stay holes)",
                self.disk.bytes
            )
        } else {
            writeln!(
                f,
                "  allocates: up to {} bytes on disk (the image's whole size: this build can't keep holes)",
                self.disk.bytes
            )
        }
    }
}
