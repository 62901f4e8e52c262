//! The build hook: expand every archive item into the data partition, in
//! plan order, after the fixed-size files are reserved (so the layout never
//! depends on download timing). Tar streams go straight from the file or
//! the network into the builder; zips are downloaded to the build
//! directory first and deleted after.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::decode::{decoder, Format};
use super::error::ExpandError;
use super::sizing::{to_build_error, ArchivePlan};
use super::tar::expand_tar;
use super::target::Ext4Target;
use super::zip::expand_zip;
use crate::error::{fail, http_fail, BuildError, ExitKind, Kind};
use crate::fetch::channel::{channel, stopped_message};
use crate::fetch::{redact, ChunkSink, StreamVerifier};
use crate::fs::ext4::{Ext4Builder, InodeMeta};
use crate::plan::{Item, ItemSource, Net};
use crate::progress::Reporter;

/// The reading side of a remote archive's channel, for its errors.
const EXPANSION: &str = "the archive expansion";

/// Expand the archive items of `items` (others are skipped) into `builder`.
/// `dir_meta` is given to the target directories and to directories an
/// archive implies without listing them.
pub fn expand_archives(
    builder: &mut Ext4Builder,
    items: &[Item],
    dir_meta: InodeMeta,
    net: &Net,
    build_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    for item in items {
        let Some(plan) = &item.archive else { continue };
        let root = builder
            .mkdir_all(&item.dest, dir_meta)
            .kind(ExitKind::Failure)?;
        let mut target = Ext4Target::new(builder, root, dir_meta);
        let (bytes, digest) = expand_one(item, plan, &mut target, net, build_dir)?;
        // The name the plan reported (build.rs: "/data/<dest>").
        reporter.item_done(&format!("/data/{}", item.dest), bytes, digest.as_deref());
    }
    Ok(())
}

/// Hashes what passes through.
struct Hashing<'a, R> {
    inner: R,
    verifier: Option<&'a mut StreamVerifier>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(v) = self.verifier.as_deref_mut() {
            v.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Streams a download into a file (a remote zip's temporary copy).
struct FileSink<'a>(&'a File);

impl ChunkSink for FileSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(data, offset).map_err(|e| e.to_string())
    }
}

fn expand_one(
    item: &Item,
    plan: &ArchivePlan,
    target: &mut Ext4Target<'_>,
    net: &Net,
    build_dir: &Path,
) -> Result<(u64, Option<String>), BuildError> {
    let limits = &plan.limits;
    let format = plan.format;
    match &item.source {
        // Container images are never archives to expand (plan.rs).
        ItemSource::Oci(_) => Err(fail(
            ExitKind::Failure,
            format!("/data/{}: a container image is not an archive", item.dest),
        )),
        ItemSource::Bytes(b) => {
            let name = format!("inline content of /data/{}", item.dest);
            let n = if format == Format::Zip {
                expand_zip(std::io::Cursor::new(b.as_slice()), &name, limits, target)
            } else {
                expand_tar(&mut decoder(format, b.as_slice()), &name, limits, target)
            };
            Ok((n.map_err(to_build_error)?, None))
        }
        ItemSource::Local { path, checksum } => {
            let name = path.display().to_string();
            let mut f = fs_err::File::open(path).kind(ExitKind::Unreachable)?;
            let mut verifier = checksum
                .as_ref()
                .map(|c| StreamVerifier::new(c.algo, &c.value, &name));
            let n = if format == Format::Zip {
                // Verify first: the zip reader seeks around.
                if let Some(v) = verifier.as_mut() {
                    let mut h = Hashing {
                        inner: &mut f,
                        verifier: Some(v),
                    };
                    drain(&mut h).kind(ExitKind::Failure)?;
                }
                let v = verifier.take();
                let digest = v
                    .map(StreamVerifier::finish)
                    .transpose()
                    .kind(ExitKind::BadInput)?;
                let n =
                    expand_zip(f.into_parts().0, &name, limits, target).map_err(to_build_error)?;
                return Ok((n, digest));
            } else {
                let mut h = Hashing {
                    inner: std::io::BufReader::new(f),
                    verifier: verifier.as_mut(),
                };
                let n = expand_tar(&mut decoder(format, &mut h), &name, limits, target)
                    .map_err(to_build_error)?;
                // Bytes after the compressed stream still count for the checksum.
                drain(&mut h).kind(ExitKind::Failure)?;
                n
            };
            let digest = verifier
                .map(StreamVerifier::finish)
                .transpose()
                .kind(ExitKind::BadInput)?;
            Ok((n, digest))
        }
        ItemSource::Http { url, checksum } if format == Format::Zip => {
            let name = redact(url);
            // An unnamed file (O_TMPFILE where available, else unlinked at
            // once): nothing is left in the build dir even when a signal
            // ends the process before destructors run.
            let tmp = tempfile::tempfile_in(build_dir).kind(ExitKind::Failure)?;
            let digest = net
                .rt
                .block_on(net.http.download(
                    url,
                    plan.archive_size,
                    checksum.clone(),
                    &mut FileSink(&tmp),
                ))
                .map_err(http_fail)?;
            let n = expand_zip(&tmp, &name, limits, target).map_err(to_build_error)?;
            Ok((n, digest))
        }
        ItemSource::Http { url, checksum } => {
            let name = redact(url);
            let (mut sink, reader) = channel(EXPANSION);
            let (expanded, downloaded) = std::thread::scope(|s| {
                let worker = s.spawn(|| {
                    let mut reader = reader;
                    let mut dec = decoder(format, &mut reader);
                    let r = expand_tar(&mut dec, &name, limits, target);
                    drop(dec);
                    // Drain so the download never blocks on a dead expansion;
                    // dropping the reader (on error) ends it instead.
                    if r.is_ok() {
                        let _ = drain(&mut reader);
                    }
                    r
                });
                let d = net.rt.block_on(net.http.download(
                    url,
                    plan.archive_size,
                    checksum.clone(),
                    &mut sink,
                ));
                drop(sink);
                (worker.join(), d)
            });
            let expanded = expanded.map_err(|_| {
                fail(
                    ExitKind::Failure,
                    format!("{name}: expansion thread panicked"),
                )
            })?;
            match (expanded, downloaded) {
                (Ok(n), Ok(digest)) => Ok((n, digest)),
                (Ok(_), Err(e)) => Err(http_fail(e)),
                // Which failed first: a stopped expansion ends the download
                // (report the expansion), a cut download shows up as a
                // truncated archive (report the download).
                (Err(x), Err(e)) if !e.to_string().contains(&stopped_message(EXPANSION)) => {
                    if matches!(x, ExpandError::Archive { .. }) {
                        Err(http_fail(e))
                    } else {
                        Err(to_build_error(x))
                    }
                }
                (Err(x), _) => Err(to_build_error(x)),
            }
        }
    }
}

/// Read to the end (bytes after an archive still count for its checksum).
fn drain(r: &mut dyn Read) -> std::io::Result<u64> {
    std::io::copy(r, &mut std::io::sink())
}
