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
use crate::io::{channel, drain, FileSink, HashingReader, ReaderStopped, StreamVerifier};

/// The reading side of a remote archive's channel, for its errors.
const EXPANSION: &str = "the archive expansion";

/// Expand the archive `source` into the directory `dest` (created with
/// `dir_meta`, as are directories the archive implies without listing
/// them). Returns the bytes expanded and the archive's digest when it was
/// verified.
pub fn expand_archive(
    builder: &mut Ext4Builder,
    dest: &str,
    source: ArchiveSource<'_>,
    plan: &ArchivePlan,
    dir_meta: InodeMeta,
    net: &Net,
    build_dir: &Path,
) -> Result<(u64, Option<String>), ExpandError> {
    let root = builder.mkdir_all(dest, dir_meta)?;
    let mut target = Ext4Target::new(builder, root, dir_meta);
    let limits = &plan.limits;
    let format = plan.format;
    match source {
        ArchiveSource::Bytes(b) => {
            let name = format!("inline content of /data/{dest}");
            let n = if format == Format::Zip {
                expand_zip(std::io::Cursor::new(b), &name, limits, &mut target)?
            } else {
                expand_tar_from(b, format, &name, limits, &mut target)?
            };
            Ok((n, None))
        }
        ArchiveSource::Local { path, checksum } => {
            let name = path.display().to_string();
            let io = |what| {
                let archive = name.clone();
                move |source| ExpandError::Io {
                    archive,
                    what,
                    source,
                }
            };
            let mut f = std::fs::File::open(path).map_err(|source| ExpandError::Open {
                archive: name.clone(),
                source,
            })?;
            let mut verifier = checksum.map(|(a, v)| StreamVerifier::new(*a, v, &name));
            let n = if format == Format::Zip {
                // Verify first: the zip reader seeks around.
                if let Some(v) = verifier.as_mut() {
                    drain(&mut HashingReader::new(&mut f, Some(v))).map_err(io("reading"))?;
                }
                let digest = verifier.take().map(StreamVerifier::finish).transpose()?;
                let n = expand_zip(f, &name, limits, &mut target)?;
                return Ok((n, digest));
            } else {
                let mut h = HashingReader::new(std::io::BufReader::new(f), verifier.as_mut());
                let n = expand_tar_from(&mut h, format, &name, limits, &mut target)?;
                // Bytes after the compressed stream still count for the checksum.
                drain(&mut h).map_err(io("reading past the archive's end"))?;
                n
            };
            let digest = verifier.map(StreamVerifier::finish).transpose()?;
            Ok((n, digest))
        }
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
            let digest = net.block_on(net.http.download(
                url,
                plan.archive_size,
                checksum.cloned(),
                &mut FileSink::new(&tmp, 0),
            ))?;
            let n = expand_zip(&tmp, &name, limits, &mut target)?;
            Ok((n, digest))
        }
        ArchiveSource::Http { url, checksum } => {
            let name = redact(url);
            let (mut sink, reader) = channel(EXPANSION);
            let (expanded, downloaded) = std::thread::scope(|s| {
                let worker = s.spawn(|| {
                    let mut reader = reader;
                    let r = expand_tar_from(&mut reader, format, &name, limits, &mut target);
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
                    checksum.cloned(),
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
