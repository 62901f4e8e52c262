//! Planning an archive: its limits and what it needs in the data
//! partition. Local archives are measured exactly by a dry run (which also
//! refuses bad archives before anything is written); remote ones are
//! estimated (see [`estimate`]).

use super::count::{Counter, Needs};
use super::error::ExpandError;
use super::format::Format;
use super::limits::Limits;
use super::source::ArchiveSource;
use super::tar::expand_tar_from;
use super::zip::expand_zip;
use crate::fs::ext4::{file_blocks, MAX_EXTENT_BLOCKS};

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
    pub fn temp_bytes(&self) -> u64 {
        if self.format == Format::Zip && !self.exact {
            self.archive_size.unwrap_or(0)
        } else {
            0
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

/// What the archive needs: measured with a dry run for a local or inline
/// archive (refusing a bad one now), estimated for a remote one.
pub fn measure(
    format: Format,
    source: ArchiveSource<'_>,
    name: &str,
    limits: &Limits,
) -> Result<Needs, ExpandError> {
    let mut counter = Counter::default();
    match source {
        ArchiveSource::Bytes(b) if format == Format::Zip => {
            expand_zip(std::io::Cursor::new(b), name, limits, &mut counter)?
        }
        ArchiveSource::Bytes(b) => expand_tar_from(b, format, name, limits, &mut counter)?,
        ArchiveSource::Local { path, .. } => {
            let f = std::fs::File::open(path).map_err(|source| ExpandError::Open {
                archive: name.to_string(),
                source,
            })?;
            if format == Format::Zip {
                expand_zip(f, name, limits, &mut counter)?
            } else {
                expand_tar_from(
                    std::io::BufReader::new(f),
                    format,
                    name,
                    limits,
                    &mut counter,
                )?
            }
        }
        ArchiveSource::Open { file, .. } if format == Format::Zip => {
            expand_zip(file, name, limits, &mut counter)?
        }
        ArchiveSource::Open { file, .. } => expand_tar_from(
            std::io::BufReader::new(file),
            format,
            name,
            limits,
            &mut counter,
        )?,
        ArchiveSource::Http { .. } => return Ok(estimate(limits)),
    };
    Ok(counter.needs)
}
