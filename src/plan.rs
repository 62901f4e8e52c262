//! Planning: config + base image → the items to write, the data partition's
//! size and the image size (SPEC §6), before anything is written.

use std::path::PathBuf;

use crate::config::{
    BaseSource, Checksum, ChecksumKind, HashAlgo, ImageConfig, OutputSize, Payload, Source,
};
use crate::error::{fail, http_fail, BuildError, ExitKind, Kind};
use crate::fetch::{first_token, redact, Http};
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
    /// An http(s) URL, streamed into place; `checksum` is (algorithm, hex
    /// digest) with `kind: url` already resolved.
    Http {
        /// URL.
        url: String,
        /// Expected digest.
        checksum: Option<(HashAlgo, String)>,
    },
    /// An image pulled from a registry into a docker-archive (src/oci); the
    /// item's size is a reservation, shrunk to the archive once written.
    Oci(Box<crate::oci::Resolved>),
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
    /// Set for archives (`via: tar`, ...): `dest` is the directory to
    /// expand into and `size` the expanded bytes (measured, or the limit).
    pub archive: Option<crate::expand::ArchivePlan>,
}

/// An expected digest: algorithm and lowercase hex.
pub type Expected = Option<(HashAlgo, String)>;

/// Where the base image is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseLocation {
    /// A local file.
    Local(PathBuf),
    /// An http(s) URL.
    Http(String),
}

impl BaseLocation {
    /// For messages.
    pub fn name(&self) -> String {
        match self {
            Self::Local(p) => p.display().to_string(),
            Self::Http(u) => redact(u),
        }
    }
}

/// The base image as found.
#[derive(Debug, Clone)]
pub struct BaseInfo {
    /// Where it is.
    pub location: BaseLocation,
    /// Expected digest of the file as stored/served (md5 of a versioned base).
    pub checksum: Option<(HashAlgo, String)>,
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

/// Network access for planning and downloads: the HTTP client and the
/// runtime it runs on (async stays at the network edge).
#[derive(Debug)]
pub struct Net {
    /// The client.
    pub http: Http,
    /// A multi-threaded tokio runtime.
    pub rt: tokio::runtime::Runtime,
}

impl Net {
    /// A runtime with 2 workers (downloads are I/O-bound) and a client.
    pub fn new(opts: crate::fetch::FetchOptions) -> Result<Self, BuildError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .kind(ExitKind::Failure)?;
        let http = Http::new(opts).kind(ExitKind::Failure)?;
        Ok(Self { http, rt })
    }
}

/// Resolve the base source: location, xz or not, expected digest.
pub fn locate_base(
    config: &ImageConfig,
    base_url: &str,
    net: &Net,
) -> Result<(BaseLocation, bool, Expected), BuildError> {
    let declared = config.base.checksum.clone();
    let (source, checksum) = match &config.base.source {
        BaseSource::Version(v) => {
            let url = format!(
                "{}/offspot-base-arm64-{v}.img",
                base_url.trim_end_matches('/')
            );
            // The published md5 sits beside the image.
            let body = net
                .rt
                .block_on(net.http.get_small(&format!("{url}.md5"), 2048))
                .map_err(http_fail)?;
            let md5 = first_token(&body)
                .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| {
                    fail(
                        ExitKind::Unreachable,
                        format!("{}.md5: no md5 digest in it", redact(&url)),
                    )
                })?;
            (Source::Http(url), Some((HashAlgo::Md5, md5)))
        }
        BaseSource::Source(s) => (
            s.clone(),
            resolve_checksum(declared.as_ref(), net, "base.checksum")?,
        ),
    };
    let xz = source.is_xz();
    match source {
        Source::Local(p) => {
            if !p.is_file() {
                return Err(fail(
                    ExitKind::Unreachable,
                    format!("base image {} not found", p.display()),
                ));
            }
            Ok((BaseLocation::Local(p), xz, checksum))
        }
        Source::Http(url) => Ok((BaseLocation::Http(url), xz, checksum)),
    }
}

/// A declared checksum as (algorithm, digest), fetching `kind: url` values
/// (at most 2 KiB, first token).
pub fn resolve_checksum(
    c: Option<&Checksum>,
    net: &Net,
    key: &str,
) -> Result<Option<(HashAlgo, String)>, BuildError> {
    let Some(c) = c else { return Ok(None) };
    match c.kind {
        ChecksumKind::Digest => Ok(Some((c.algo, c.value.clone()))),
        ChecksumKind::Url => {
            let body = net
                .rt
                .block_on(net.http.get_small(&c.value, 2048))
                .map_err(http_fail)?;
            let t = first_token(&body)
                .filter(|t| t.len() == c.algo.hex_len() && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| {
                    fail(
                        ExitKind::BadInput,
                        format!("{key}: {} holds no {} digest", redact(&c.value), c.algo),
                    )
                })?;
            Ok(Some((c.algo, t)))
        }
    }
}

/// Bytes fetched to find the MBR of a remote base (enough compressed xz
/// input to decode the first sector).
const HEAD_BYTES: usize = 256 * 1024;

/// Read the base's MBR (and, when `scan` and the base is a plain local
/// file, its data partition's summary).
pub fn inspect_base(
    location: &BaseLocation,
    xz: bool,
    checksum: Option<(HashAlgo, String)>,
    scan: bool,
    net: &Net,
) -> Result<BaseInfo, BuildError> {
    use std::io::Read;
    let name = location.name();
    let bad = |what: String| fail(ExitKind::BadInput, format!("base image {name}: {what}"));
    let (head, file_size): (Vec<u8>, Option<u64>) = match location {
        BaseLocation::Local(path) => {
            let mut f = fs_err::File::open(path).kind(ExitKind::Unreachable)?;
            let size = f.metadata().kind(ExitKind::Failure)?.len();
            let mut head = vec![0u8; HEAD_BYTES.min(usize::try_from(size).unwrap_or(HEAD_BYTES))];
            f.read_exact(&mut head).kind(ExitKind::Failure)?;
            (head, Some(size))
        }
        BaseLocation::Http(url) => {
            let probe = net.rt.block_on(net.http.probe(url)).map_err(http_fail)?;
            let head = net
                .rt
                .block_on(net.http.get_prefix(url, HEAD_BYTES))
                .map_err(http_fail)?;
            (head, probe.size)
        }
    };
    let mut sector = [0u8; 512];
    if xz {
        let mut dec = liblzma::read::XzDecoder::new_multi_decoder(head.as_slice());
        dec.read_exact(&mut sector)
            .map_err(|e| bad(format!("not a readable xz stream: {e}")))?;
    } else {
        let first = head
            .get(..512)
            .ok_or_else(|| bad("too short for an MBR".into()))?;
        sector.copy_from_slice(first);
    }
    let mbr = Mbr::parse(&sector).map_err(|e| bad(e.to_string()))?;
    let p3 = mbr.partition(3).map_err(|e| bad(e.to_string()))?;
    let size = if xz {
        p3.end()
    } else {
        file_size.unwrap_or(p3.end())
    };
    mbr.validate(3, size).map_err(|e| bad(e.to_string()))?;
    let old = match location {
        BaseLocation::Local(path) if scan && !xz => {
            let file = std::sync::Arc::new(std::fs::File::open(path).kind(ExitKind::Failure)?);
            let w = crate::partition::PartitionWindow::new(file, path, p3.offset(), p3.len());
            Some(ext4::scan_old(&w).map_err(|e| bad(format!("data partition (p3): {e}")))?)
        }
        _ => None,
    };
    Ok(BaseInfo {
        location: location.clone(),
        checksum,
        xz,
        size,
        mbr,
        old,
    })
}

/// Size of the local file `files[i].url` (`key`) names; exit 4 when it is
/// missing or not a regular file.
pub(crate) fn local_file_size(key: &str, path: &std::path::Path) -> Result<u64, BuildError> {
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
    Ok(md.len())
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
    net: &Net,
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
    // OCI images (src/oci): resolved now, pulled by the build.
    let (mut items, oci_free) =
        crate::oci::plan_images(&config.oci_images, &crate::oci::Platform::default(), net)?;
    let mut unreachable: Vec<String> = Vec::new();
    for (i, f) in config.files.iter().enumerate() {
        let key = format!("files[{i}]");
        let source = match &f.payload {
            Payload::Content(bytes) => ItemSource::Bytes(bytes.clone()),
            Payload::Source(Source::Local(p)) => ItemSource::Local {
                path: p.clone(),
                checksum: f.checksum.clone(),
            },
            Payload::Source(Source::Http(u)) => {
                let checksum =
                    match resolve_checksum(f.checksum.as_ref(), net, &format!("{key}.checksum")) {
                        Ok(c) => c,
                        Err(e) if e.kind == ExitKind::Unreachable => {
                            unreachable.push(format!("{key}.checksum: {e}"));
                            None
                        }
                        Err(e) => return Err(e),
                    };
                ItemSource::Http {
                    url: u.clone(),
                    checksum,
                }
            }
        };
        // Archives: `to` is a directory, `size` the expanded size (src/expand).
        if let Some(format) = crate::expand::Format::of(f.via) {
            items.push(crate::expand::plan_archive_item(
                &key,
                f,
                format,
                source,
                net,
                &mut unreachable,
            )?);
            continue;
        }
        let size = match &source {
            ItemSource::Bytes(b) => b.len() as u64,
            ItemSource::Oci(_) => 0, // files[] entries are never images
            ItemSource::Http { url, .. } => match net.rt.block_on(net.http.probe(url)) {
                Ok(p) => match (f.size, p.size) {
                    (Some(d), Some(s)) if d != s => {
                        return Err(fail(
                            ExitKind::BadInput,
                            format!(
                                "{key}.size: declared {d} bytes but {} is {s} bytes",
                                redact(url)
                            ),
                        ));
                    }
                    (Some(d), _) => d,
                    (None, Some(s)) => s,
                    (None, None) => {
                        return Err(fail(
                            ExitKind::BadInput,
                            format!("{key}: {} sends no size; declare `size`", redact(url)),
                        ));
                    }
                },
                Err(e) if e.is_unreachable() => {
                    unreachable.push(format!("{key}.url: {e}"));
                    0
                }
                Err(e) => return Err(http_fail(e)),
            },
            ItemSource::Local { path, .. } => local_file_size(&key, path)?,
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
            archive: None,
        });
    }
    if !unreachable.is_empty() {
        return Err(fail(
            ExitKind::Unreachable,
            format!("unreachable sources:\n  {}", unreachable.join("\n  ")),
        ));
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
            archive: None,
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
    // What archives expand to (measured or estimated by src/expand).
    let archives = items.iter().filter_map(|i| i.archive.as_ref());
    let (arch_names, arch_dirs) =
        archives.fold((0, 0), |(n, d), a| (n + a.needs.names, d + a.needs.dirs));
    let entries = old.entries + items.len() as u64 + dirs.len() as u64 + arch_names;
    let ndirs = old.dirs + dirs.len() as u64 + 2 + arch_dirs;
    let file_blocks: u64 = items
        .iter()
        .map(|i| match &i.archive {
            Some(a) => a.needs.blocks,
            None => ext4::file_blocks(i.size, ext4::MAX_EXTENT_BLOCKS),
        })
        .sum::<u64>()
        + old.file_blocks;
    // Directory blocks: one per directory plus the names (8-byte header +
    // ~32-byte name on average), lost+found's 4 blocks.
    let dir_blocks = ndirs + (entries * 40).div_ceil(4084) + 4;
    let need = file_blocks + dir_blocks + oci_free.div_ceil(4096);
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
    // Remote zips are downloaded to the build directory before expansion.
    let content_bytes = items
        .iter()
        .map(|i| i.size + i.archive.as_ref().map_or(0, |a| a.temp_bytes(&i.source)))
        .sum::<u64>()
        + old.bytes;
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
                ItemSource::Http { url, .. } => redact(url),
                ItemSource::Oci(img) => {
                    format!("{}@{} (reserved)", img.name(), img.manifest_digest)
                }
            };
            let what = if it.archive.is_some() {
                "/ expanded"
            } else {
                ""
            };
            writeln!(
                f,
                "  /data/{}{what}  {} bytes  from {from}",
                it.dest, it.size
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
        )
    }
}
