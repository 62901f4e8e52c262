//! Planning: config + base image → the items to write, the data partition's
//! size and the image size (SPEC §6), before anything is written.

use std::path::{Path, PathBuf};

use crate::config::{BaseSource, Checksum, ImageConfig, OutputSize, Payload, Source, Via};
use crate::error::{fail, BuildError, ExitKind, Kind};
use crate::fs::ext4::{self, Ext4Params, OldSummary};
use crate::partition::{Mbr, SECTOR};

/// Default base image location (SPEC §4), overridable.
pub const DEFAULT_BASE_URL: &str = "https://drive.offspot.it/base";

/// Permissions of what the build creates: files 0644, directories 0755.
pub const FILE_PERM: u16 = 0o644;
/// See [`FILE_PERM`].
pub const DIR_PERM: u16 = 0o755;

/// Where one item's bytes come from.
#[derive(Debug, Clone)]
pub enum ItemSource {
    /// Bytes in memory (`content`, decoded base64, the config text).
    Bytes(Vec<u8>),
    /// A local file, verified against `checksum` while it streams.
    Local {
        /// File path.
        path: PathBuf,
        /// Declared checksum.
        checksum: Option<Checksum>,
    },
}

/// A file to write into the data partition.
#[derive(Debug, Clone)]
pub struct Item {
    /// Destination relative to `/data`.
    pub dest: String,
    /// Size in bytes.
    pub size: u64,
    /// Source of the bytes.
    pub source: ItemSource,
}

/// The base image as found.
#[derive(Debug, Clone)]
pub struct BaseInfo {
    /// The local file.
    pub path: PathBuf,
    /// xz-compressed.
    pub xz: bool,
    /// Uncompressed size (for xz: the end of p3, where the image ends).
    pub size: u64,
    /// The MBR.
    pub mbr: Mbr,
    /// What the old data partition holds (None when not read: xz in --check).
    pub old: Option<OldSummary>,
}

/// The complete plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Items in write order (config order, then `image.yaml`).
    pub items: Vec<Item>,
    /// Data partition offset in the image.
    pub p3_start: u64,
    /// New data partition (filesystem) size.
    pub fs_size: u64,
    /// Output image size.
    pub image_size: u64,
    /// Smallest image that fits.
    pub min_image_size: u64,
    /// Filesystem parameters (identity applied when the tree is read).
    pub inodes_expected: u64,
    /// Bytes of content to write (items + carried over).
    pub content_bytes: u64,
    /// Non-fatal remarks.
    pub warnings: Vec<String>,
}

/// Resolve the base source to a local file.
pub fn base_path(config: &ImageConfig, base_url: &str) -> Result<(PathBuf, bool), BuildError> {
    let source = match &config.base.source {
        BaseSource::Version(v) => {
            let url = format!(
                "{}/offspot-base-arm64-{v}.img",
                base_url.trim_end_matches('/')
            );
            Source::parse(&url, Path::new("/"))
                .map_err(|m| fail(ExitKind::BadInput, format!("base.source: {m}")))?
        }
        BaseSource::Source(s) => s.clone(),
    };
    match source {
        Source::Local(p) => {
            if !p.is_file() {
                return Err(fail(ExitKind::Unreachable, format!("base image {} not found", p.display())));
            }
            let xz = p.extension().is_some_and(|e| e == "xz");
            Ok((p, xz))
        }
        Source::Http(url) => Err(fail(
            ExitKind::MissingRequirement,
            format!("base image {url}: HTTP downloads are not available in this version (local paths and file:// URLs are)"),
        )),
    }
}

/// Read the base's MBR (and, when `scan`, its data partition's summary).
pub fn inspect_base(path: &Path, xz: bool, scan: bool) -> Result<BaseInfo, BuildError> {
    use std::io::Read;
    let f = fs_err::File::open(path).kind(ExitKind::Unreachable)?;
    let mut sector = [0u8; 512];
    let size;
    if xz {
        let mut dec = liblzma::read::XzDecoder::new_multi_decoder(f);
        dec.read_exact(&mut sector).map_err(|e| {
            fail(
                ExitKind::BadInput,
                format!(
                    "base image {}: not a readable xz stream: {e}",
                    path.display()
                ),
            )
        })?;
        size = 0;
    } else {
        size = f.metadata().kind(ExitKind::Failure)?.len();
        let mut r = f;
        r.read_exact(&mut sector).map_err(|e| {
            fail(
                ExitKind::BadInput,
                format!("base image {}: too short for an MBR: {e}", path.display()),
            )
        })?;
    }
    let mbr = Mbr::parse(&sector).map_err(|e| {
        fail(
            ExitKind::BadInput,
            format!("base image {}: {e}", path.display()),
        )
    })?;
    let p3 = mbr.partition(3).map_err(|e| {
        fail(
            ExitKind::BadInput,
            format!("base image {}: {e}", path.display()),
        )
    })?;
    let size = if xz { p3.end() } else { size };
    mbr.validate(3, size).map_err(|e| {
        fail(
            ExitKind::BadInput,
            format!("base image {}: {e}", path.display()),
        )
    })?;
    let old = if scan && !xz {
        let file = std::sync::Arc::new(std::fs::File::open(path).kind(ExitKind::Failure)?);
        let w = crate::partition::PartitionWindow::new(file, path, p3.offset(), p3.len());
        Some(ext4::scan_old(&w).map_err(|e| {
            fail(
                ExitKind::BadInput,
                format!("base image {}: data partition (p3): {e}", path.display()),
            )
        })?)
    } else {
        None
    };
    Ok(BaseInfo {
        path: path.to_path_buf(),
        xz,
        size,
        mbr,
        old,
    })
}

fn parent_dirs(dest: &str) -> impl Iterator<Item = &str> {
    dest.char_indices()
        .filter(|&(_, c)| c == '/')
        .map(move |(i, _)| &dest[..i])
}

/// Make the plan. `max_size` is `--max-size`.
pub fn make_plan(
    config: &ImageConfig,
    base: &BaseInfo,
    max_size: Option<u64>,
) -> Result<Plan, BuildError> {
    let mut warnings = Vec::new();
    let p3 = base.mbr.partition(3).kind(ExitKind::BadInput)?;
    if p3.offset() != config.base.rootfs_size {
        warnings.push(format!(
            "base.rootfs_size is {} but the base image's data partition starts at byte {}; using the partition table",
            config.base.rootfs_size,
            p3.offset()
        ));
    }
    if !config.oci_images.is_empty() {
        return Err(fail(
            ExitKind::MissingRequirement,
            "oci_images: pulling container images is not available in this version",
        ));
    }
    let mut items = Vec::new();
    for (i, f) in config.files.iter().enumerate() {
        let key = format!("files[{i}]");
        if f.via.is_archive() && f.via != Via::Direct {
            return Err(fail(
                ExitKind::MissingRequirement,
                format!(
                    "{key}: via {:?}: archive expansion is not available in this version",
                    f.via
                ),
            ));
        }
        let source = match &f.payload {
            Payload::Content(bytes) => ItemSource::Bytes(bytes.clone()),
            Payload::Source(Source::Local(p)) => ItemSource::Local {
                path: p.clone(),
                checksum: f.checksum.clone(),
            },
            Payload::Source(Source::Http(u)) => {
                return Err(fail(
                    ExitKind::MissingRequirement,
                    format!("{key}.url {u}: HTTP downloads are not available in this version"),
                ))
            }
        };
        let size = match &source {
            ItemSource::Bytes(b) => b.len() as u64,
            ItemSource::Local { path, .. } => {
                let md = std::fs::metadata(path).map_err(|e| {
                    fail(
                        ExitKind::Unreachable,
                        format!("{key}.url: {}: {e}", path.display()),
                    )
                })?;
                if !md.is_file() {
                    return Err(fail(
                        ExitKind::Unreachable,
                        format!("{key}.url: {} is not a regular file", path.display()),
                    ));
                }
                md.len()
            }
        };
        if let Some(declared) = f.size {
            if declared != size {
                return Err(fail(
                    ExitKind::BadInput,
                    format!(
                        "{key}.size: declared {declared} bytes but /data/{} is {size} bytes",
                        f.to
                    ),
                ));
            }
        }
        items.push(Item {
            dest: f.to.clone(),
            size,
            source,
        });
    }
    if config.write_config {
        if items.iter().any(|i| i.dest == "image.yaml") {
            return Err(fail(
                ExitKind::BadInput,
                "write_config: /data/image.yaml is also the destination of a files[] entry",
            ));
        }
        items.push(Item {
            dest: "image.yaml".into(),
            size: config.raw_text.len() as u64,
            source: ItemSource::Bytes(config.raw_text.clone().into_bytes()),
        });
    }

    // Blocks the content needs in the new filesystem.
    let old = base.old.unwrap_or_else(|| {
        // Not scanned (xz base in --check): the whole old partition is the bound.
        OldSummary {
            entries: 64,
            dirs: 8,
            bytes: p3.len(),
            file_blocks: p3.len().div_ceil(4096),
        }
    });
    let mut dirs: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
    for it in &items {
        dirs.extend(parent_dirs(&it.dest));
    }
    let entries = old.entries + items.len() as u64 + dirs.len() as u64;
    let ndirs = old.dirs + dirs.len() as u64 + 2;
    let file_blocks: u64 = items
        .iter()
        .map(|i| ext4::file_blocks(i.size, ext4::MAX_EXTENT_BLOCKS))
        .sum::<u64>()
        + old.file_blocks;
    // Directory blocks: one per directory plus the names (8-byte header +
    // ~32-byte name on average), lost+found's 4 blocks.
    let dir_blocks = ndirs + (entries * 40).div_ceil(4084) + 4;
    let need = file_blocks + dir_blocks;
    // Slack for extent trees of fragmented files and directory growth: 0.5% + 64 blocks.
    let need = need + need / 200 + 64;
    let params = Ext4Params {
        inodes: ext4::InodePolicy {
            expected_inodes: entries,
            ..Default::default()
        },
        ..Default::default()
    };
    let min_fs = ext4::min_size(need, entries + 16, &params).kind(ExitKind::Failure)?;
    let min_image = (p3.offset() + min_fs)
        .max(base.size)
        .next_multiple_of(SECTOR);
    let image_size = match config.output_size {
        OutputSize::Auto => min_image,
        OutputSize::Bytes(n) => {
            if n < min_image {
                return Err(fail(
                    ExitKind::BadInput,
                    format!("output.size: the image needs at least {min_image} bytes, output.size is {n}"),
                ));
            }
            n / SECTOR * SECTOR
        }
    };
    if let Some(max) = max_size {
        if image_size > max {
            return Err(fail(
                ExitKind::BadInput,
                format!("the image would be {image_size} bytes, more than --max-size {max}"),
            ));
        }
    }
    let fs_size = (image_size - p3.offset()) / 4096 * 4096;
    let content_bytes = items.iter().map(|i| i.size).sum::<u64>() + old.bytes;
    Ok(Plan {
        items,
        p3_start: p3.offset(),
        fs_size,
        image_size,
        min_image_size: min_image,
        inodes_expected: entries,
        content_bytes,
        warnings,
    })
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "plan:")?;
        for it in &self.items {
            let from = match &it.source {
                ItemSource::Bytes(_) => "inline".to_string(),
                ItemSource::Local { path, .. } => path.display().to_string(),
            };
            writeln!(f, "  /data/{}  {} bytes  from {from}", it.dest, it.size)?;
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
        )
    }
}
