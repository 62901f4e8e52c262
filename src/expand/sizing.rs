//! Planning an archive item: its limits and what it needs in the data
//! partition. Local archives are measured exactly by a dry run (which also
//! refuses bad archives before anything is written); remote ones are
//! estimated (see [`estimate`]).

use super::count::{Counter, Needs};
use super::decode::{decoder, Format};
use super::error::ExpandError;
use super::limits::Limits;
use super::tar::expand_tar;
use super::zip::expand_zip;
use crate::config::FileEntry;
use crate::error::{fail, BuildError, ExitKind};
use crate::fetch::redact;
use crate::fs::ext4::{file_blocks, MAX_EXTENT_BLOCKS};
use crate::plan::{Item, ItemSource, Net};

/// How an archive item is expanded, decided at planning.
#[derive(Debug, Clone)]
pub struct ArchivePlan {
    /// The format.
    pub format: Format,
    /// Its hard limits.
    pub limits: Limits,
    /// Bytes of the archive file itself, when known.
    pub archive_size: Option<u64>,
    /// What it needs in the filesystem.
    pub needs: Needs,
    /// `needs` was measured (local archive), not estimated (remote).
    pub exact: bool,
}

impl ArchivePlan {
    /// Build-directory space the expansion needs meanwhile: a remote zip
    /// is downloaded there first (its central directory is at its end).
    pub fn temp_bytes(&self, source: &ItemSource) -> u64 {
        match (self.format, source) {
            (Format::Zip, ItemSource::Http { .. }) => self.archive_size.unwrap_or(0),
            _ => 0,
        }
    }
}

/// Average member size assumed for remote archives: 16 KiB. Inodes and
/// per-file block rounding are reserved for `bytes / 16 KiB + 1024`
/// members (+25% block overhead at worst); a remote archive of many
/// smaller files can run out of inodes (a clear error): declare a larger
/// `size`, or use a local copy, which is measured exactly.
pub const ESTIMATE_AVG_MEMBER: u64 = 16 * 1024;

/// Needs of a remote archive that may expand to `limits.max_bytes`.
pub fn estimate(limits: &Limits) -> Needs {
    let inodes = (limits.max_bytes / ESTIMATE_AVG_MEMBER + 1024).min(limits.max_entries);
    Needs {
        inodes,
        names: inodes,
        dirs: inodes / 16 + 1,
        blocks: file_blocks(limits.max_bytes, MAX_EXTENT_BLOCKS) + inodes,
        bytes: limits.max_bytes,
    }
}

pub(crate) fn to_build_error(e: ExpandError) -> BuildError {
    let kind = if e.is_bad_input() {
        ExitKind::BadInput
    } else {
        ExitKind::Failure
    };
    BuildError {
        kind,
        error: e.into(),
    }
}

/// Measure a local (or inline) archive with a dry run.
fn measure(
    format: Format,
    source: &ItemSource,
    name: &str,
    limits: &Limits,
) -> Result<Needs, BuildError> {
    let mut counter = Counter::default();
    let res = match source {
        ItemSource::Bytes(b) if format == Format::Zip => expand_zip(
            std::io::Cursor::new(b.as_slice()),
            name,
            limits,
            &mut counter,
        ),
        ItemSource::Bytes(b) => expand_tar(
            &mut decoder(format, b.as_slice()),
            name,
            limits,
            &mut counter,
        ),
        ItemSource::Local { path, .. } => {
            let f = std::fs::File::open(path)
                .map_err(|e| fail(ExitKind::Unreachable, format!("{name}: {e}")))?;
            if format == Format::Zip {
                expand_zip(f, name, limits, &mut counter)
            } else {
                let mut r = decoder(format, std::io::BufReader::new(f));
                expand_tar(&mut r, name, limits, &mut counter)
            }
        }
        ItemSource::Http { .. } => return Ok(estimate(limits)),
        // Container images are never archives to expand (plan.rs).
        ItemSource::Oci(_) => {
            return Err(fail(
                ExitKind::Failure,
                format!("{name}: a container image is not an archive"),
            ))
        }
    };
    res.map_err(to_build_error)?;
    Ok(counter.needs)
}

/// Plan `files[i]` (`key`) whose `via` is an archive format: `to` is the
/// directory to expand into; `size` is the expanded size and limit.
/// Unreachable sources are collected in `unreachable` (as for plain files).
pub fn plan_archive_item(
    key: &str,
    f: &FileEntry,
    format: Format,
    source: ItemSource,
    net: &Net,
    unreachable: &mut Vec<String>,
) -> Result<Item, BuildError> {
    let (archive_size, name) = match &source {
        // Container images are never archives to expand (plan.rs).
        ItemSource::Oci(_) => {
            return Err(fail(
                ExitKind::Failure,
                format!("{key}: a container image is not an archive"),
            ))
        }
        ItemSource::Bytes(b) => (Some(b.len() as u64), format!("{key}.content")),
        ItemSource::Local { path, .. } => (
            Some(crate::plan::local_file_size(key, path)?),
            path.display().to_string(),
        ),
        ItemSource::Http { url, .. } => match net.rt.block_on(net.http.probe(url)) {
            Ok(p) => (p.size, redact(url)),
            Err(e) if e.is_unreachable() => {
                unreachable.push(format!("{key}.url: {e}"));
                (Some(0), redact(url))
            }
            Err(e) => {
                return Err(BuildError {
                    kind: ExitKind::Failure,
                    error: e.into(),
                })
            }
        },
    };
    // Downloads are bounded by the server's Content-Length (SPEC §9,
    // download bomb): an archive served without one can't be fetched
    // safely, so say so now rather than after the base is copied.
    let archive_size = archive_size.ok_or_else(|| {
        fail(
            ExitKind::BadInput,
            format!(
                "{key}: {name} sends no Content-Length; the archive's download can not be bounded"
            ),
        )
    })?;
    let limits = Limits::new(key, f.size, archive_size, format.is_compressed());
    let exact = !matches!(source, ItemSource::Http { .. });
    let needs = if unreachable.is_empty() || exact {
        measure(format, &source, &name, &limits)?
    } else {
        Needs::default()
    };
    let size = needs.bytes;
    Ok(Item {
        dest: f.to.clone(),
        size,
        source,
        archive: Some(ArchivePlan {
            format,
            limits,
            archive_size: Some(archive_size).filter(|&s| s > 0),
            needs,
            exact,
        }),
    })
}
