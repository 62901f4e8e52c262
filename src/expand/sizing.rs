//! Planning an archive: its limits and what it needs in the data
//! partition. Local archives are measured exactly by a dry run (which also
//! refuses bad archives before anything is written). Remote tar-family
//! archives are pre-scanned: streamed once through the same dry run at
//! planning (see [`measure_remote`]), so an archive of a million tiny
//! files gets a million inodes; the caller keeps the bytes for the build
//! (the download cache, or a spool in the build dir: src/plan/spool.rs).
//! Remote zips are estimated (see [`estimate`]).

use super::count::{Counter, Needs};
use super::error::ExpandError;
use super::format::Format;
use super::limits::Limits;
use super::source::{ArchiveSource, Expected};
use super::tar::expand_tar_from;
use super::zip::expand_zip;
use crate::fetch::{redact, Net};
use crate::fs::ext4::{file_blocks, MAX_EXTENT_BLOCKS};
use crate::io::{channel, drain, ChunkSink, ReaderStopped, Tee};

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

/// Average member size assumed for remote zips: 16 KiB. Inodes and
/// per-file block rounding are reserved for `bytes / 16 KiB + 1024`
/// members (+25% block overhead at worst); a remote archive of many
/// smaller files can run out of inodes (a clear error): declare a larger
/// `size`, or use a local copy, which is measured exactly.
pub const ESTIMATE_AVG_MEMBER: u64 = 16 * 1024;

/// The reading side of a pre-scan's channel, for its errors.
const PRESCAN: &str = "the archive pre-scan";

/// Measure a remote tar-family archive exactly: download it once through
/// the dry-run [`Counter`] (streamed through a bounded channel, nothing
/// written anywhere), verifying `checksum` on the way.
///
/// The inode policy for remote archives (docs/spec.md §9): the inode count
/// of an ext4 filesystem is fixed when it is laid out, and no estimate from
/// an archive's size is both cheap and safe (a gzip of empty files holds a
/// member per ~20 compressed bytes). So a remote tar is read twice: once
/// here, once when it is expanded; the gain is that it never runs out of
/// inodes, is refused as a bomb before anything is written, and sizes
/// `output.size: auto` exactly. Zips are not pre-scanned: their members
/// are only readable from a seekable copy, and the build spools one
/// anyway; they use [`estimate`]. The downloaded bytes also go to `tap`,
/// which keeps them (the download cache's fill, or the planner's spool in
/// the build dir), so the build reads the archive from there: one download.
pub fn measure_remote(
    format: Format,
    url: &str,
    checksum: Expected<'_>,
    archive_size: Option<u64>,
    limits: &Limits,
    net: &Net,
    tap: &mut dyn ChunkSink,
) -> Result<Needs, ExpandError> {
    if format == Format::Zip {
        return Ok(estimate(limits));
    }
    let name = redact(url);
    let mut counter = Counter::default();
    let (chan, reader) = channel(PRESCAN);
    let mut sink = Tee {
        first: chan,
        second: tap,
    };
    let (counted, downloaded) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut reader = reader;
            let r = expand_tar_from(&mut reader, format, &name, limits, &mut counter);
            if r.is_ok() {
                let _ = drain(&mut reader);
            }
            r
        });
        let d = net.block_on(
            net.http
                .download(url, archive_size, checksum.clone(), &mut sink),
        );
        drop(sink);
        (worker.join(), d)
    });
    let counted = counted.map_err(|_| ExpandError::Panicked {
        archive: name.clone(),
    })?;
    match (counted, downloaded) {
        (Ok(_), Ok(_)) => Ok(counter.needs),
        (Ok(_), Err(e)) => Err(e.into()),
        (Err(ExpandError::Archive { .. }), Err(e)) if !ReaderStopped::is_cause_of(&e) => {
            Err(e.into())
        }
        (Err(x), _) => Err(x),
    }
}

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
                    std::io::BufReader::with_capacity(
                        crate::io::COPY_BUF,
                        crate::os::ReadAhead::new(&f),
                    ),
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
            std::io::BufReader::with_capacity(crate::io::COPY_BUF, crate::os::ReadAhead::new(file)),
            format,
            name,
            limits,
            &mut counter,
        )?,
        ArchiveSource::Http { .. } => return Ok(estimate(limits)),
    };
    Ok(counter.needs)
}
