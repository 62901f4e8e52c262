//! Expanding one archive into the data partition. Tar streams go straight
//! from the file or the network into the builder; zips are downloaded to
//! the build directory first (an unnamed file, gone with the process).

use std::path::Path;

use super::error::ExpandError;
use super::format::Format;
use super::sizing::ArchivePlan;
use super::source::ArchiveSource;
use super::tar::expand_tar_from;
use super::target::Ext4Target;
use super::zip::expand_zip;
use crate::fetch::{redact, Net};
use crate::fs::ext4::{Ext4Builder, InodeMeta};
use std::fs::File;

use super::source::Expected;
use crate::io::{
    channel, drain, ChunkSink, FileSink, HashingReader, ReaderStopped, StreamVerifier, Tee,
};

/// The reading side of a remote archive's channel, for its errors.
const EXPANSION: &str = "the archive expansion";

/// One archive to expand.
#[derive(Debug, Clone, Copy)]
pub struct Expansion<'a> {
    /// The directory to expand into, relative to the data partition.
    pub dest: &'a str,
    /// Where the archive's bytes come from.
    pub source: ArchiveSource<'a>,
    /// Its format and limits.
    pub plan: &'a ArchivePlan,
    /// Metadata of the directories it creates without listing them.
    pub dir_meta: InodeMeta,
}

/// Expand the archive `source` into the directory `dest` (created with
/// `dir_meta`, as are directories the archive implies without listing
/// them). A download's bytes also go to `tap` (the download cache; it must
/// swallow its own errors). Returns the bytes expanded and the archive's
/// digest when it was verified.
pub fn expand_archive(
    builder: &mut Ext4Builder,
    job: &Expansion<'_>,
    net: &Net,
    build_dir: &Path,
    tap: &mut dyn ChunkSink,
) -> Result<(u64, Option<String>), ExpandError> {
    let Expansion { dest, dir_meta, .. } = *job;
    let root = builder.mkdir_all(dest, dir_meta)?;
    let mut target = Ext4Target::new(builder, root, dir_meta);
    let done = expand_into(&mut target, job, net, build_dir, tap)?;
    target.flush()?;
    Ok(done)
}

/// [`expand_archive`] into `target`.
fn expand_into(
    target: &mut Ext4Target<'_>,
    job: &Expansion<'_>,
    net: &Net,
    build_dir: &Path,
    tap: &mut dyn ChunkSink,
) -> Result<(u64, Option<String>), ExpandError> {
    let Expansion {
        dest, source, plan, ..
    } = *job;
    let limits = &plan.limits;
    let format = plan.format;
    match source {
        ArchiveSource::Bytes(b) => {
            let name = format!("inline content of /data/{dest}");
            let n = if format == Format::Zip {
                expand_zip(std::io::Cursor::new(b), &name, limits, target)?
            } else {
                expand_tar_from(b, format, &name, limits, target)?
            };
            Ok((n, None))
        }
        ArchiveSource::Local { path, checksum } => {
            let name = path.display().to_string();
            let f = std::fs::File::open(path).map_err(|source| ExpandError::Open {
                archive: name.clone(),
                source,
            })?;
            expand_file(&f, &name, checksum, plan, target)
        }
        ArchiveSource::Open {
            file,
            name,
            checksum,
        } => expand_file(file, name, checksum, plan, target),
        ArchiveSource::Http { url, checksum } if format == Format::Zip => {
            let name = redact(url);
            // An unnamed file (O_TMPFILE where available, else unlinked at
            // once): nothing is left in the build dir even when a signal
            // ends the process before destructors run.
            let tmp = tempfile::tempfile_in(build_dir).map_err(|source| ExpandError::Io {
                archive: name.clone(),
                what: "creating its temporary copy in the build directory",
                source,
            })?;
            let mut sink = Tee {
                first: FileSink::new(&tmp, 0),
                second: tap,
            };
            let digest = net.block_on(net.http.download(
                url,
                plan.archive_size,
                checksum.clone(),
                &mut sink,
            ))?;
            let n = expand_zip(&tmp, &name, limits, target)?;
            Ok((n, digest))
        }
        ArchiveSource::Http { url, checksum } => {
            let name = redact(url);
            let (chan, reader) = channel(EXPANSION);
            let mut sink = Tee {
                first: chan,
                second: tap,
            };
            let (expanded, downloaded) = std::thread::scope(|s| {
                let worker = s.spawn(|| {
                    let mut reader = reader;
                    let r = expand_tar_from(&mut reader, format, &name, limits, target);
                    // Drain so the download never blocks on a dead expansion;
                    // dropping the reader (on error) ends it instead.
                    if r.is_ok() {
                        let _ = drain(&mut reader);
                    }
                    r
                });
                let d = net.block_on(net.http.download(
                    url,
                    plan.archive_size,
                    checksum.clone(),
                    &mut sink,
                ));
                drop(sink);
                (worker.join(), d)
            });
            let expanded = expanded.map_err(|_| ExpandError::Panicked {
                archive: name.clone(),
            })?;
            match (expanded, downloaded) {
                (Ok(n), Ok(digest)) => Ok((n, digest)),
                (Ok(_), Err(e)) => Err(e.into()),
                // Which failed first: a stopped expansion ends the download
                // (report the expansion), a cut download shows up as a
                // truncated archive (report the download).
                (Err(ExpandError::Archive { .. }), Err(e)) if !ReaderStopped::is_cause_of(&e) => {
                    Err(e.into())
                }
                (Err(x), _) => Err(x),
            }
        }
    }
}

/// Expand a local (or cached) archive file, verifying `checksum` as it is
/// read: zips first (their reader seeks), tars on the way (bytes after the
/// compressed stream still count).
fn expand_file(
    f: &File,
    name: &str,
    checksum: Expected<'_>,
    plan: &ArchivePlan,
    target: &mut Ext4Target<'_>,
) -> Result<(u64, Option<String>), ExpandError> {
    let io = |what| {
        let archive = name.to_string();
        move |source| ExpandError::Io {
            archive,
            what,
            source,
        }
    };
    let mut verifier = checksum.verifier(name);
    if plan.format == Format::Zip {
        if let Some(v) = verifier.as_mut() {
            let mut r = f;
            drain(&mut HashingReader::new(&mut r, Some(v))).map_err(io("reading"))?;
        }
        let digest = verifier.map(StreamVerifier::finish).transpose()?;
        let n = expand_zip(f, name, &plan.limits, target)?;
        return Ok((n, digest));
    }
    let mut h = HashingReader::new(
        std::io::BufReader::with_capacity(crate::io::COPY_BUF, crate::os::ReadAhead::new(f)),
        verifier.as_mut(),
    );
    let n = expand_tar_from(&mut h, plan.format, name, &plan.limits, target)?;
    drain(&mut h).map_err(io("reading past the archive's end"))?;
    let digest = verifier.map(StreamVerifier::finish).transpose()?;
    Ok((n, digest))
}
