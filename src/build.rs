//! The build pipeline (DESIGN.md "Data flow"), step by step, with cleanup:
//! config → plan → base copy → data partition → boot partition → MBR.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::config::{render_offspot_yaml, ImageConfig};
use crate::error::{fail, http_fail, BuildError, ExitKind, Kind};
use crate::fetch::channel::channel;
use crate::fetch::{
    data_regions, sparse_copy, ChunkSink, FetchOptions, HttpError, StreamVerifier, SPARSE_BUF,
};
use crate::fs::ext4::{Ext4Builder, Ext4Params, InodeMeta, OldTree, Timestamp};
use crate::partition::{Mbr, PartitionWindow, SECTOR};
use crate::plan::{self, BaseLocation, ItemSource, Net, Plan, DIR_PERM, FILE_PERM};
use crate::progress::{ProgressSink, Reporter};

/// What to build, from the command line.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Config path (or URL).
    pub config_src: String,
    /// Output image path.
    pub output: PathBuf,
    /// Temporary space; default: the output's directory.
    pub build_dir: Option<PathBuf>,
    /// Only plan.
    pub check: bool,
    /// Keep a failed output.
    pub keep: bool,
    /// Replace an existing output.
    pub overwrite: bool,
    /// `--max-size`.
    pub max_size: Option<u64>,
    /// Base URL for versioned base images.
    pub base_url: String,
    /// Parallel downloads (`-T`).
    pub concurrency: usize,
    /// Network timeouts and retries.
    pub fetch: FetchOptions,
}

/// What a build produced.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `--check`: the plan, nothing written.
    Checked(Plan),
    /// The image was written.
    Built {
        /// The plan that was carried out.
        plan: Plan,
        /// Output path.
        output: PathBuf,
    },
}

/// Path of the in-progress output, removed by [`cleanup_after_signal`].
static IN_PROGRESS: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);

/// Remove the in-progress output (unless `--keep`); for signal handlers.
pub fn cleanup_after_signal() {
    if let Ok(mut g) = IN_PROGRESS.lock() {
        if let Some((p, keep)) = g.take() {
            if !keep {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

/// Largest config accepted from a URL: 4 MiB (real configs are a few KiB).
const MAX_REMOTE_CONFIG: usize = 4 << 20;

fn load_config(src: &str, net: &Net) -> Result<(ImageConfig, String), BuildError> {
    if src.starts_with("http://") || src.starts_with("https://") {
        let body = net
            .rt
            .block_on(net.http.get_small(src, MAX_REMOTE_CONFIG))
            .map_err(http_fail)?;
        let name = crate::fetch::redact(src);
        let text = String::from_utf8(body)
            .map_err(|_| fail(ExitKind::BadInput, format!("{name}: not UTF-8 text")))?;
        // Relative local paths in a remote config resolve against the working directory.
        let config = ImageConfig::parse(&text, &name, Path::new(".")).kind(ExitKind::BadInput)?;
        return Ok((config, src.to_string()));
    }
    let path = Path::new(src.strip_prefix("file://").unwrap_or(src));
    let text = fs_err::read_to_string(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ExitKind::BadInput
        } else {
            ExitKind::Failure
        };
        BuildError {
            kind,
            error: e.into(),
        }
    })?;
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let config = ImageConfig::parse(&text, src, &dir).kind(ExitKind::BadInput)?;
    Ok((config, src.to_string()))
}

/// Run a build (or a check).
pub fn run(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Outcome, BuildError> {
    let steps = 6;
    reporter.step(1, steps, "reading the config");
    let net = Net::new(opts.fetch.clone())?;
    let (config, _name) = load_config(&opts.config_src, &net)?;
    if opts.output.exists() && !opts.overwrite {
        return Err(fail(
            ExitKind::BadInput,
            format!(
                "{} already exists (use -X/--overwrite to replace it)",
                opts.output.display()
            ),
        ));
    }
    let out_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(fail(
            ExitKind::BadInput,
            format!("output directory {} does not exist", out_dir.display()),
        ));
    }

    reporter.step(2, steps, "planning");
    let (location, xz, checksum) = plan::locate_base(&config, &opts.base_url, &net)?;
    let base = plan::inspect_base(&location, xz, checksum, true, &net)?;
    let the_plan = plan::make_plan(&config, &base, opts.max_size, &net)?;
    for w in &the_plan.warnings {
        reporter.warn(w);
    }
    if opts.check {
        return Ok(Outcome::Checked(the_plan));
    }
    check_free_space(&out_dir, &base, &the_plan)?;
    let mut planned = vec![(base.location.name(), base.size)];
    planned.extend(
        the_plan
            .items
            .iter()
            .map(|i| (format!("/data/{}", i.dest), i.size)),
    );
    reporter.items_planned(&planned);
    let mut built_plan: Option<Plan> = None;
    if let Some(d) = &opts.build_dir {
        fs_err::create_dir_all(d).kind(ExitKind::BadInput)?;
    }
    let build_dir = opts.build_dir.clone().unwrap_or_else(|| out_dir.clone());

    // The image is written to a temporary file beside the output and renamed
    // at the end, so an existing output is untouched until success.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.",
            opts.output
                .file_name()
                .map_or_else(|| "image".into(), |n| n.to_string_lossy())
        ))
        .suffix(".part")
        .tempfile_in(&out_dir)
        .kind(ExitKind::Failure)?;
    if let Ok(mut g) = IN_PROGRESS.lock() {
        *g = Some((tmp.path().to_path_buf(), opts.keep));
    }
    let result = (|| {
        reporter.step(3, 6, "copying the base image");
        copy_base(tmp.as_file(), &base, &net, reporter)?;
        // A compressed or remote base could not be scanned before the copy:
        // plan again, exactly, from the copy.
        let the_plan = if base.xz || matches!(base.location, BaseLocation::Http(_)) {
            let copy = BaseLocation::Local(tmp.path().to_path_buf());
            let copied = plan::inspect_base(&copy, false, None, true, &net)?;
            plan::make_plan(&config, &copied, opts.max_size, &net)?
        } else {
            the_plan.clone()
        };
        build_into(&BuildCtx {
            out: tmp.as_file(),
            out_path: tmp.path(),
            config: &config,
            base: &base,
            plan: &the_plan,
            build_dir: &build_dir,
            net: &net,
            concurrency: opts.concurrency,
            reporter,
        })?;
        Ok::<Plan, BuildError>(the_plan)
    })();
    let result = result.map(|p| {
        built_plan = Some(p);
    });
    let result = result.and_then(|()| {
        use std::os::unix::fs::PermissionsExt;
        // tempfile creates 0600; an image is an ordinary output file.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .kind(ExitKind::Failure)?;
        let persisted = if opts.overwrite {
            tmp.persist(&opts.output).map(|_| ())
        } else {
            tmp.persist_noclobber(&opts.output).map(|_| ())
        };
        persisted.map_err(|e| {
            let _ = std::fs::remove_file(e.file.path());
            fail(
                ExitKind::Failure,
                format!("moving the image to {}: {}", opts.output.display(), e.error),
            )
        })
    });
    let keep_path = IN_PROGRESS.lock().ok().and_then(|mut g| g.take());
    match result {
        Ok(()) => Ok(Outcome::Built {
            plan: built_plan.unwrap_or(the_plan),
            output: opts.output.clone(),
        }),
        Err(e) => {
            if opts.keep {
                // Keep the partial image at the output path if that is free.
                if let Some((p, _)) = keep_path {
                    if p.exists() && (!opts.output.exists() || opts.overwrite) {
                        let _ = std::fs::rename(&p, &opts.output);
                    }
                }
            }
            Err(e)
        }
    }
}

fn check_free_space(dir: &Path, base: &plan::BaseInfo, plan: &Plan) -> Result<(), BuildError> {
    let needed = base.size.min(plan.p3_start) + plan.content_bytes;
    if let Ok(st) = rustix::fs::statvfs(dir) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < needed {
            return Err(fail(
                ExitKind::MissingRequirement,
                format!(
                    "{} has {free} bytes free; the image needs about {needed}",
                    dir.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Writes downloaded bytes to a file at their offsets, skipping all-zero
/// 4 KiB blocks (the destination is fresh, so they already read as zeros).
struct SparseFileSink<'a> {
    file: &'a File,
    base: u64,
}

impl ChunkSink for SparseFileSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        sparse_copy(&mut &data[..], self.file, self.base + offset, |_| {})
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

fn copy_base(
    out: &File,
    base: &plan::BaseInfo,
    net: &Net,
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    let name = base.location.name();
    reporter.item_started(&name, Some(base.size));
    let progress = |chunk: &[u8]| reporter.item_progress(&name, chunk.len() as u64);
    let decoded = match &base.location {
        BaseLocation::Local(path) => {
            let src = fs_err::File::open(path).kind(ExitKind::Unreachable)?;
            if base.xz || base.checksum.is_some() {
                // Stream the whole file (hashing it as stored), decoding xz.
                let mut verifier = base
                    .checksum
                    .as_ref()
                    .map(|(a, v)| StreamVerifier::new(*a, v, &name));
                let mut hashing = HashingReader {
                    inner: src,
                    verifier: verifier.as_mut(),
                };
                let st = if base.xz {
                    let mut dec = liblzma::read::XzDecoder::new_multi_decoder(&mut hashing);
                    // Decode no further than the end of p3: whatever an xz
                    // stream holds past it belongs to no partition (and an
                    // endless one would fill the disk).
                    let st = sparse_copy(&mut (&mut dec).take(base.size), out, 0, progress);
                    // Hash any bytes past the xz stream too.
                    std::io::copy(&mut hashing, &mut std::io::sink()).kind(ExitKind::Failure)?;
                    st
                } else {
                    sparse_copy(&mut hashing, out, 0, progress)
                };
                let st = st.map_err(|e| {
                    fail(
                        ExitKind::BadInput,
                        format!("reading base image {name}: {e}"),
                    )
                })?;
                if let Some(v) = verifier {
                    v.finish().kind(ExitKind::Failure)?;
                }
                st.read
            } else {
                // Copy only the data regions: holes are neither read nor written.
                let raw: &File = src.file();
                for (start, end) in data_regions(raw, base.size).kind(ExitKind::Failure)? {
                    let mut region = ReadAt {
                        file: raw,
                        pos: start,
                        end,
                    };
                    sparse_copy(&mut region, out, start, progress).map_err(|e| {
                        fail(ExitKind::Failure, format!("copying base image {name}: {e}"))
                    })?;
                }
                base.size
            }
        }
        BaseLocation::Http(url) => {
            let verify = base.checksum.clone();
            if base.xz {
                let (tx, rx) = channel("the xz decoder");
                let out2 = out.try_clone().kind(ExitKind::Failure)?;
                let end = base.size;
                let decoder = std::thread::spawn(move || {
                    let mut dec = liblzma::read::XzDecoder::new_multi_decoder(rx);
                    // No further than the end of p3 (see the local case).
                    let r = sparse_copy(&mut (&mut dec).take(end), &out2, 0, |_| {});
                    // Drain so the downloader never blocks on a dead decoder.
                    let _ = std::io::copy(dec.get_mut(), &mut std::io::sink());
                    r
                });
                // Compressed bytes: the decoded size is known only at the end.
                let mut sink = ProgressSink::new(tx, reporter, &name);
                let res = net
                    .rt
                    .block_on(net.http.download(url, None, verify, &mut sink));
                drop(sink);
                let st = decoder
                    .join()
                    .map_err(|_| fail(ExitKind::Failure, "xz decoder thread panicked"))?;
                res.map_err(http_fail)?;
                st.map_err(|e| {
                    fail(
                        ExitKind::BadInput,
                        format!("decompressing base image {name}: {e}"),
                    )
                })?
                .read
            } else {
                let mut sink =
                    ProgressSink::new(SparseFileSink { file: out, base: 0 }, reporter, &name);
                // Exactly the size planned from the probe (or the partition
                // table): a GET that disagrees is an error, never zero-padded.
                net.rt
                    .block_on(net.http.download(url, Some(base.size), verify, &mut sink))
                    .map_err(http_fail)?;
                base.size
            }
        }
    };
    if decoded < base.size {
        return Err(fail(
            ExitKind::BadInput,
            format!(
                "base image {name}: {decoded} bytes, but its partition table ends at {}",
                base.size
            ),
        ));
    }
    // Trailing zeros were skipped: give the copy its full length.
    out.set_len(decoded).kind(ExitKind::Failure)?;
    reporter.item_done(&name, decoded, None);
    Ok(())
}

/// Hashes what passes through.
struct HashingReader<'a, R> {
    inner: R,
    verifier: Option<&'a mut StreamVerifier>,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(v) = self.verifier.as_deref_mut() {
            v.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Streams a download into a reserved file.
struct FileSink(crate::fs::ext4::FileWriter);

impl ChunkSink for FileSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), String> {
        self.0.write_at(offset, data).map_err(|e| e.to_string())
    }
}

/// `Read` over `[pos, end)` of a file, positionally.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("unexpected end of file at offset {}", self.pos),
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// Everything the data/boot/MBR steps need.
struct BuildCtx<'a> {
    out: &'a File,
    out_path: &'a Path,
    config: &'a ImageConfig,
    base: &'a plan::BaseInfo,
    plan: &'a Plan,
    build_dir: &'a Path,
    net: &'a Net,
    concurrency: usize,
    reporter: &'a dyn Reporter,
}

fn build_into(ctx: &BuildCtx<'_>) -> Result<(), BuildError> {
    let BuildCtx {
        out,
        out_path,
        config,
        base,
        plan,
        build_dir,
        net,
        concurrency,
        reporter,
    } = *ctx;
    let steps = 6;
    out.set_len(plan.image_size).kind(ExitKind::Failure)?;
    let file = Arc::new(out.try_clone().kind(ExitKind::Failure)?);

    reporter.step(4, steps, "writing the data partition");
    let mut sector = [0u8; 512];
    out.read_exact_at(&mut sector, 0).kind(ExitKind::Failure)?;
    let mut mbr = Mbr::parse(&sector).kind(ExitKind::BadInput)?;
    let p3 = mbr.partition(3).kind(ExitKind::BadInput)?;
    let old_window = PartitionWindow::new(file.clone(), out_path, p3.offset(), p3.len());
    let old = OldTree::read(&old_window, build_dir).map_err(|e| {
        fail(
            ExitKind::BadInput,
            format!(
                "base image {}: data partition (p3): {e}",
                base.location.name()
            ),
        )
    })?;
    let time = Timestamp::build_time();
    let mut params = Ext4Params {
        time,
        ..Ext4Params::default()
    };
    params.reserved_percent = old.superblock().reserved_percent;
    params.inodes.expected_inodes = plan.inodes_expected;
    old.apply_identity(&mut params);
    params.inodes.expected_inodes = plan.inodes_expected;
    let window = PartitionWindow::new(file.clone(), out_path, plan.p3_start, plan.fs_size);
    let mut builder = Ext4Builder::new(window.clone(), params).kind(ExitKind::Failure)?;
    old.write_into(&mut builder).kind(ExitKind::Failure)?;
    let dir_meta = InodeMeta::new(DIR_PERM, time);
    let file_meta = InodeMeta::new(FILE_PERM, time);
    let mut buf = vec![0u8; SPARSE_BUF];
    let planned: Vec<(String, u64)> = plan
        .items
        .iter()
        .map(|i| (format!("/data/{}", i.dest), i.size))
        .collect();
    reporter.items_planned(&planned);
    // Reserve every file first, in plan order: the layout never depends on
    // which download finishes first.
    let mut writers = Vec::with_capacity(plan.items.len());
    // Archives are expanded after the fixed-size files (src/expand).
    let fixed = || plan.items.iter().filter(|i| i.archive.is_none());
    for item in fixed() {
        let (parent_path, name) = item
            .dest
            .rsplit_once('/')
            .unwrap_or(("", item.dest.as_str()));
        let parent = builder
            .mkdir_all(parent_path, dir_meta)
            .kind(ExitKind::Failure)?;
        writers.push(
            builder
                .create_file(parent, name.as_bytes(), item.size, file_meta)
                .kind(ExitKind::Failure)?,
        );
    }
    let mut downloads = Vec::new();
    let mut pulls: Vec<crate::oci::PullJob> = Vec::new();
    for (item, w) in fixed().zip(writers) {
        let item_name = format!("/data/{}", item.dest);
        match &item.source {
            ItemSource::Oci(img) => {
                pulls.push((format!("/data/{}", item.dest), img.clone(), w));
                continue;
            }
            ItemSource::Http { url, checksum } => {
                downloads.push((item, url.clone(), checksum.clone(), w));
                continue;
            }
            ItemSource::Bytes(b) => {
                reporter.item_started(&item_name, Some(item.size));
                w.write_at(0, b).kind(ExitKind::Failure)?;
                reporter.item_progress(&item_name, item.size);
            }
            ItemSource::Local { path, checksum } => {
                reporter.item_started(&item_name, Some(item.size));
                let mut f = fs_err::File::open(path).kind(ExitKind::Unreachable)?;
                let name = path.display().to_string();
                let mut verifier = checksum
                    .as_ref()
                    .map(|c| StreamVerifier::new(c.algo, &c.value, &name));
                let mut off = 0u64;
                loop {
                    let n = f.read(&mut buf).kind(ExitKind::Failure)?;
                    if n == 0 {
                        break;
                    }
                    if let Some(v) = verifier.as_mut() {
                        v.update(&buf[..n]);
                    }
                    w.write_at(off, &buf[..n]).map_err(|e| {
                        fail(
                            ExitKind::Failure,
                            format!("{name} changed while being copied: {e}"),
                        )
                    })?;
                    off += n as u64;
                    reporter.item_progress(&item_name, n as u64);
                }
                if off != item.size {
                    return Err(fail(
                        ExitKind::Failure,
                        format!(
                            "{name} changed size while being copied ({off} of {} bytes)",
                            item.size
                        ),
                    ));
                }
                let digest = match verifier {
                    Some(v) => Some(v.finish().kind(ExitKind::Failure)?),
                    None => None,
                };
                reporter.item_done(&item_name, item.size, digest.as_deref());
                continue;
            }
        }
        reporter.item_done(&item_name, item.size, None);
    }
    // Downloads, `concurrency` at a time, each straight into its blocks.
    let results: Vec<Result<(), HttpError>> = net.rt.block_on(async {
        use futures_util::stream::StreamExt;
        futures_util::stream::iter(downloads.into_iter().map(|(item, url, checksum, w)| {
            let http = net.http.clone();
            async move {
                let name = format!("/data/{}", item.dest);
                reporter.item_started(&name, Some(item.size));
                let mut sink = ProgressSink::new(FileSink(w), reporter, &name);
                match http
                    .download(&url, Some(item.size), checksum, &mut sink)
                    .await
                {
                    Ok(digest) => {
                        // Reported as each finishes, so the history is live.
                        reporter.item_done(&name, item.size, digest.as_deref());
                        Ok(())
                    }
                    Err(e) => {
                        reporter.item_failed(&name, &e.to_string());
                        Err(e)
                    }
                }
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await
    });
    for r in results {
        r.map_err(http_fail)?;
    }
    // OCI images (src/oci): written into their reservations, then each file
    // is shrunk to its archive's exact size.
    for (ino, name, size, digest) in crate::oci::pull_all(net, pulls, concurrency, reporter)? {
        builder.set_len(ino, size).kind(ExitKind::Failure)?;
        reporter.item_done(&name, size, Some(&digest));
    }
    // --- archive expansion hook (src/expand), in plan order ---
    crate::expand::expand_archives(
        &mut builder,
        &plan.items,
        dir_meta,
        net,
        build_dir,
        reporter,
    )?;
    builder.finish().kind(ExitKind::Failure)?;

    reporter.step(5, steps, "writing the boot partition");
    if let Some(m) = &config.offspot {
        let yaml = render_offspot_yaml(m);
        let p1 = mbr.partition(1).kind(ExitKind::BadInput)?;
        let w1 = PartitionWindow::new(file.clone(), out_path, p1.offset(), p1.len());
        crate::fs::fat::replace_file(&w1, "offspot.yaml", yaml.as_bytes())
            .kind(ExitKind::Failure)?;
    }

    reporter.step(6, steps, "writing the partition table");
    mbr.set_sectors(3, plan.fs_size / SECTOR)
        .kind(ExitKind::Failure)?;
    out.write_all_at(&mbr.to_bytes(), 0)
        .kind(ExitKind::Failure)?;
    out.sync_all().kind(ExitKind::Failure)?;
    Ok(())
}
