//! The base image: where it is ([`locate_base`]) and what it holds
//! ([`inspect_base`]: the MBR and a summary of the data partition).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use super::cached::{validators, CacheUse, Lookup, Planner};
use super::error::PlanError;
use super::item::Expected;
use crate::config::{BaseSource, Checksum, ChecksumKind, HashAlgo, ImageConfig, Source};
use crate::fetch::{first_token, redact, Net};
use crate::fs::ext4::{self, OldSummary};
use crate::io::xz;
use crate::partition::{Mbr, PartitionWindow};

/// Default base image location (docs/spec.md §4), overridable.
pub const DEFAULT_BASE_URL: &str = "https://drive.offspot.it/base";

/// Largest checksum file read (`kind: url`, a versioned base's `.md5`):
/// 2 KiB (docs/spec.md §4; a digest and a file name).
const MAX_CHECKSUM_FILE: usize = 2048;

/// Bytes fetched to find the MBR of a remote base: 256 KiB, enough
/// compressed xz input to decode the first sector (xz blocks of the
/// published bases start well within it).
const HEAD_BYTES: usize = 256 * 1024;

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

/// A located base image: where, compressed or not, expected digest.
#[derive(Debug)]
pub struct BaseSpec {
    /// Where it is.
    pub location: BaseLocation,
    /// xz-compressed (decoded while it is copied).
    pub xz: bool,
    /// Expected digest of the file as stored/served.
    pub checksum: Expected,
    /// What the download cache does for a remote base (see
    /// [`cache_base`]); a hit is read instead of the network. Step 3 of
    /// the build consumes it.
    pub cache: Option<CacheUse>,
}

/// The base image as found.
#[derive(Debug)]
pub struct BaseInfo {
    /// Where it is.
    pub location: BaseLocation,
    /// Expected digest of the file as stored/served (md5 of a versioned base).
    pub checksum: Expected,
    /// xz-compressed.
    pub xz: bool,
    /// Uncompressed size (for xz: the end of p3, where the image ends).
    pub size: u64,
    /// The MBR.
    pub mbr: Mbr,
    /// What the old data partition holds (None when it could not be read
    /// before the copy: a compressed or remote base).
    pub old: Option<OldSummary>,
}

impl BaseInfo {
    /// The names of the old data partition, for planning's destination
    /// checks, when it can be read where it lies (a plain local file: a
    /// compressed or remote base is read from its copy, `resize`).
    pub fn old_names(&self) -> Result<Option<ext4::OldNames>, PlanError> {
        let BaseLocation::Local(path) = &self.location else {
            return Ok(None);
        };
        if self.xz {
            return Ok(None);
        }
        let file = std::fs::File::open(path).map_err(|source| PlanError::BaseRead {
            path: path.clone(),
            source,
        })?;
        let p3 = self.mbr.partition(3)?;
        let w = PartitionWindow::new(Arc::new(file), path, p3.offset(), p3.len());
        let names = ext4::OldNames::open(&w).map_err(|e| PlanError::BadBase {
            name: self.location.name(),
            what: format!("data partition (p3): {e}"),
        })?;
        Ok(Some(names))
    }
}

/// Resolve the base source: location, xz or not, expected digest.
///
/// `record`: learn the base's sha256 while it is copied. `pin`
/// (`--locked`): the sha256 it must have, checked instead of the declared
/// digest (which is then not fetched).
pub fn locate_base(
    config: &ImageConfig,
    base_url: &str,
    net: &Net,
    record: bool,
    pin: Option<&str>,
) -> Result<BaseSpec, PlanError> {
    let (source, checksum) = match (pin, &config.base.source) {
        (Some(pin), _) => (
            base_source(config, base_url),
            super::cached::pinned(pin.to_string()),
        ),
        (None, BaseSource::Version(v)) => {
            let Source::Http(url) = base_source(config, base_url) else {
                return Err(PlanError::NoBaseDigest { url: v.to_string() });
            };
            // The published md5 sits beside the image.
            let body =
                net.block_on(net.http.get_small(&format!("{url}.md5"), MAX_CHECKSUM_FILE))?;
            let md5 = first_token(&body)
                .filter(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| PlanError::NoBaseDigest { url: redact(&url) })?;
            (
                Source::Http(url),
                Expected::declared(Some((HashAlgo::Md5, md5))),
            )
        }
        (None, BaseSource::Source(s)) => (
            s.clone(),
            resolve_checksum(config.base.checksum.as_ref(), net, "base.checksum")?,
        ),
    };
    let checksum = checksum.recording(record);
    let xz = source.is_xz();
    let location = match source {
        Source::Local(path) if !path.is_file() => return Err(PlanError::BaseMissing { path }),
        Source::Local(path) => BaseLocation::Local(path),
        Source::Http(url) => BaseLocation::Http(url),
    };
    Ok(BaseSpec {
        location,
        xz,
        checksum,
        cache: None,
    })
}

/// Where the base comes from: a version's URL under `base_url`, or the
/// source as given.
fn base_source(config: &ImageConfig, base_url: &str) -> Source {
    match &config.base.source {
        BaseSource::Version(v) => Source::Http(format!(
            "{}/offspot-base-arm64-{v}.img",
            base_url.trim_end_matches('/')
        )),
        BaseSource::Source(s) => s.clone(),
    }
}

/// A declared checksum as (algorithm, digest), fetching `kind: url` values
/// (at most [`MAX_CHECKSUM_FILE`], first token). `key` names it in errors.
pub fn resolve_checksum(c: Option<&Checksum>, net: &Net, key: &str) -> Result<Expected, PlanError> {
    let Some(c) = c else {
        return Ok(Expected::default());
    };
    match c.kind {
        ChecksumKind::Digest => Ok(Expected::declared(Some((c.algo, c.value.clone())))),
        ChecksumKind::Url => {
            let body = net.block_on(net.http.get_small(&c.value, MAX_CHECKSUM_FILE))?;
            let t = first_token(&body)
                .filter(|t| t.len() == c.algo.hex_len() && t.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(|| PlanError::NoDigest {
                    key: key.to_string(),
                    url: redact(&c.value),
                    algo: c.algo.to_string(),
                })?;
            Ok(Expected::declared(Some((c.algo, t))))
        }
    }
}

/// Read the base's MBR and, for a plain local file, its data partition's
/// summary (a compressed or remote base is summarised from its copy).
pub fn inspect_base(spec: &BaseSpec, net: &Net) -> Result<BaseInfo, PlanError> {
    let name = spec.location.name();
    let bad = |what: String| PlanError::BadBase {
        name: name.clone(),
        what,
    };
    let (head, file_size) = match spec.cache.as_ref().and_then(cached_head) {
        Some(found) => found,
        None => read_head(&spec.location, net)?,
    };
    let mut sector = [0u8; 512]; // one sector: the MBR
    if spec.xz {
        xz(head.as_slice())
            .and_then(|mut d| d.read_exact(&mut sector))
            .map_err(|e| bad(format!("not a readable xz stream: {e}")))?;
    } else {
        let first = head
            .get(..sector.len())
            .ok_or_else(|| bad("too short for an MBR".into()))?;
        sector.copy_from_slice(first);
    }
    let mbr = Mbr::parse(&sector).map_err(|e| bad(e.to_string()))?;
    let p3 = mbr.partition(3).map_err(|e| bad(e.to_string()))?;
    let size = match file_size {
        Some(s) if !spec.xz => s,
        _ => p3.end(),
    };
    mbr.validate(3, size).map_err(|e| bad(e.to_string()))?;
    let old = match &spec.location {
        BaseLocation::Local(path) if !spec.xz => {
            let file = std::fs::File::open(path).map_err(|source| PlanError::BaseRead {
                path: path.clone(),
                source,
            })?;
            let w = PartitionWindow::new(Arc::new(file), path, p3.offset(), p3.len());
            Some(ext4::scan_old(&w).map_err(|e| bad(format!("data partition (p3): {e}")))?)
        }
        _ => None,
    };
    Ok(BaseInfo {
        location: spec.location.clone(),
        checksum: spec.checksum.clone(),
        xz: spec.xz,
        size,
        mbr,
        old,
    })
}

/// The download cache's part in a remote base: a hit (no network unless
/// due for a check) or a miss the policy caches (`size` is what the
/// server said, when it did).
pub fn cache_base(spec: &mut BaseSpec, cache: &mut Planner<'_>, net: &Net) {
    let BaseLocation::Http(url) = &spec.location else {
        return;
    };
    spec.cache = match cache.lookup(url, net) {
        Lookup::Hit(hit) => Some(Planner::hit(hit)),
        Lookup::Miss(m) => {
            let remote = match m.remote {
                Some(r) => Some(r),
                None => net.block_on(net.http.validators(url, &[])).ok(),
            };
            let size = remote.as_ref().and_then(|r| r.size).unwrap_or(0);
            let v = remote.as_ref().map(validators).unwrap_or_default();
            cache.fill(m.key, v, m.replaces, size)
        }
        Lookup::No => None,
    };
}

/// The first [`HEAD_BYTES`] of a cached base and its size.
fn cached_head(use_: &CacheUse) -> Option<(Vec<u8>, Option<u64>)> {
    let CacheUse::Hit(hit) = use_ else {
        return None;
    };
    let size = hit.size();
    let mut head = vec![0u8; HEAD_BYTES.min(usize::try_from(size).unwrap_or(HEAD_BYTES))];
    std::os::unix::fs::FileExt::read_exact_at(hit.file().ok()?, &mut head, 0).ok()?;
    Some((head, Some(size)))
}

/// The first [`HEAD_BYTES`] of the base and its size as stored, when known.
fn read_head(location: &BaseLocation, net: &Net) -> Result<(Vec<u8>, Option<u64>), PlanError> {
    match location {
        BaseLocation::Local(path) => {
            let read = |source| PlanError::BaseRead {
                path: path.clone(),
                source,
            };
            let mut f = std::fs::File::open(path).map_err(|source| PlanError::BaseOpen {
                path: path.clone(),
                source,
            })?;
            let size = f.metadata().map_err(read)?.len();
            let mut head = vec![0u8; HEAD_BYTES.min(usize::try_from(size).unwrap_or(HEAD_BYTES))];
            f.read_exact(&mut head).map_err(read)?;
            Ok((head, Some(size)))
        }
        BaseLocation::Http(url) => {
            let probe = net.block_on(net.http.probe(url))?;
            let head = net.block_on(net.http.get_prefix(url, HEAD_BYTES))?;
            Ok((head, probe.size))
        }
    }
}
