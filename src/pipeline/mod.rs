//! The build, one file per step, in the order [`run`] takes them
//! (docs/design.md "Data flow"):
//!
//! 1. [`load`]: the config; [`target`]: what OUTPUT is (a file, a
//!    compressed file, a block device), decided once;
//! 2. [`planning`]: the download cache, the base, the items and sizes,
//!    the room they need (`crate::plan` does the work);
//! 3. [`base`]: the base image copied; [`resize`]: a compressed or remote
//!    base's plan sized exactly from its copy (the one part of planning
//!    that must wait for it; its doc says why);
//! 4. [`data`]: the data partition (p3), with the download cache's part
//!    in a build ([`cache`]);
//! 5. [`boot`]: `offspot.yaml` in the boot partition (p1);
//! 6. [`table`]: the partition table;
//! 7. [`output`]: the output pass and side files of an image file, or
//!    [`device`]: the zeros and the partition table of a device;
//!
//! then [`cleanup`] publishes OUTPUT, or removes it on failure or signal
//! ([`lock`]: the output lock and dead builds' leftovers; [`unnamed`]:
//! files without a name until published); [`publish`]: `--publish`,
//! checked at planning, its upload fed by step 7 and completed once
//! OUTPUT is published; [`record`]: the record of the inputs (`--lock`,
//! `--locked`); [`attest`]: the SBOM and the provenance (`--sbom`,
//! `--provenance`); [`sign`]: the signed list of what a build wrote
//! (`--sign`); [`error`]: why a build failed.

pub mod attest;
pub mod base;
pub mod boot;
pub mod cache;
pub mod cleanup;
pub mod data;
pub mod device;
pub mod error;
pub mod load;
pub mod lock;
pub mod output;
pub mod planning;
pub mod publish;
pub mod record;
pub mod resize;
pub mod sign;
pub mod table;
pub mod target;
pub mod unnamed;

pub use cleanup::{cleanup_after_signal, OutputPolicy};
pub use error::BuildError;
pub use target::Target;

use std::path::{Path, PathBuf};

use crate::config::ImageConfig;
use crate::fetch::{FetchOptions, Net};
use crate::output::Publisher;
use crate::plan::Plan;
use crate::progress::Reporter;
use cache::BuildCache;
use output::SideFiles;
use planning::Planned;
use publish::Checked;
use record::Recorder;
use target::{Dirs, Opened};

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
    /// Network timeouts, retries and policy.
    pub fetch: FetchOptions,
    /// `--cache-dir`: the download cache.
    pub cache_dir: Option<PathBuf>,
    /// `--allow-local-files`: a config loaded from a URL may name local
    /// files (default false).
    pub allow_local_files: bool,
    /// `--bmap`, `--compress`: what is written besides the image.
    pub output_options: OutputOptions,
    /// `--lock`, `--locked`: what the build says about its inputs.
    pub trust: TrustOptions,
}

/// What a build records of its inputs and how it is held to a record
/// (docs/spec.md §13).
#[derive(Debug, Clone, Default)]
pub struct TrustOptions {
    /// `--lock FILE`: write every input as resolved to FILE after a
    /// successful build.
    pub lock: Option<PathBuf>,
    /// `--locked FILE`: build exactly the inputs of the lock in FILE.
    pub locked: Option<PathBuf>,
    /// `--sign KEY`: a minisign secret key; `OUTPUT.SHA256SUMS` and its
    /// signature are written (the image's sha256 is needed: set
    /// `OutputOptions::json` too).
    pub sign: Option<PathBuf>,
    /// `--sbom`: write `OUTPUT.spdx.json` (needs `OutputOptions::json`
    /// too: the image's sha256).
    pub sbom: bool,
    /// `--provenance`: write `OUTPUT.intoto.jsonl` (needs
    /// `OutputOptions::json` too: the image's sha256).
    pub provenance: bool,
}

impl TrustOptions {
    /// Whether the build learns every input's sha256 while writing it.
    pub fn records(&self) -> bool {
        self.lock.is_some() || self.locked.is_some() || self.sbom || self.provenance
    }
}

/// What a build writes besides the raw image (docs/spec.md §10).
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// `--bmap`: write `OUTPUT.bmap`.
    pub bmap: bool,
    /// Not `--no-hash`: `OUTPUT.json` may be written, when an output
    /// needs it ([`OutputOptions::writes_json`]).
    pub hash: bool,
    /// `--json` (also set by an upload, which publishes it): write
    /// `OUTPUT.json` for a raw OUTPUT too.
    pub json: bool,
    /// `--torrent`: write `OUTPUT.torrent`, with its web seeds, trackers
    /// and piece size.
    pub torrent: Option<crate::output::TorrentOptions>,
    /// `--compress`: compress OUTPUT (else OUTPUT's suffix or
    /// `output.compress` decide).
    pub compress: Option<crate::output::Compression>,
    /// Encoder threads (0: one per CPU).
    pub threads: u32,
    /// `--force`: OUTPUT may be a fixed (non-removable) disk.
    pub force: bool,
    /// `--grow`: on a device, p3 fills the device.
    pub grow: bool,
    /// `--publish URL`: upload the download file and its side files to
    /// an object store (`s3://bucket/prefix/`; needs `hash`).
    pub publish: Option<String>,
}

impl OutputOptions {
    /// Whether step 7 hashes the image and writes `OUTPUT.json`: when an
    /// output needs it (a compressed OUTPUT, whose download differs from
    /// the image; `--torrent`; `--json`, which an upload sets), never with
    /// `--no-hash`. A plain raw build ends with the `fsync` and reads
    /// nothing back (docs/spec.md §10).
    pub fn writes_json(&self, compressed: bool) -> bool {
        self.hash && (self.json || compressed || self.torrent.is_some())
    }
}

/// What a build produced.
#[derive(Debug)]
pub enum Outcome {
    /// `--check`: the plan (and where `--publish` would put each file),
    /// nothing written.
    Checked(Checked),
    /// The image was written.
    Built {
        /// Output path.
        output: PathBuf,
        /// The image's size in bytes.
        image_size: u64,
        /// Bytes of content planned (items, carried over, temporary
        /// copies).
        content_bytes: u64,
    },
}

/// The steps, as reported.
const STEPS: [&str; 7] = [
    "reading the config",
    "planning",
    "copying the base image",
    "writing the data partition",
    "writing the boot partition",
    "writing the partition table",
    "hashing and writing the output",
];

/// Report step `n` (1-based).
fn step(reporter: &dyn Reporter, n: usize) {
    let name = STEPS.get(n.wrapping_sub(1)).copied().unwrap_or("?");
    reporter.step(n, STEPS.len(), name);
}

/// What the writing steps share.
pub struct Ctx<'a> {
    /// The command line.
    pub opts: &'a BuildOptions,
    /// The config.
    pub config: &'a ImageConfig,
    /// The network.
    pub net: &'a Net,
    /// Progress.
    pub reporter: &'a dyn Reporter,
    /// The download cache, when one is used.
    pub cache: Option<&'a BuildCache<'a>>,
    /// Temporary space.
    pub build_dir: &'a Path,
}

impl Ctx<'_> {
    /// An I/O error on the image being written for OUTPUT, naming OUTPUT
    /// and `what` was done (with its offset or size).
    pub fn output_io(&self, what: String, source: std::io::Error) -> BuildError {
        BuildError::OutputIo {
            path: self.opts.output.clone(),
            what,
            source,
        }
    }
}

/// Run a build (or a check): the steps, in order.
pub fn run(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Outcome, BuildError> {
    run_steps(opts, reporter).map_err(|e| locked_mismatch(opts, e))
}

/// [`run`]'s steps.
fn run_steps(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Outcome, BuildError> {
    let started = std::time::SystemTime::now();
    step(reporter, 1);
    let net = Net::new(opts.fetch.clone())?;
    let mut config = load::load_config(&opts.config_src, &net, opts.allow_local_files)?;
    let locked = match &opts.trust.locked {
        Some(path) => {
            let lock =
                crate::trust::Lock::read(path).map_err(|e| BuildError::Locked(e.to_string()))?;
            record::check_config(&config, &lock, path)?;
            Some(lock)
        }
        None => None,
    };
    let signer = sign::load_signer(opts)?;
    if let Some(path) = &opts.trust.lock {
        record::check_lock_path(path)?;
    }
    let (target, dirs) = Target::decide(opts, &mut config)?;
    let claim = target.claim(opts, &dirs)?;

    step(reporter, 2);
    let publisher = publish::plan(opts)?;
    let cache = planning::open_cache(opts, reporter)?;
    // A build (not `--check`) may keep a remote archive's pre-scan in the
    // build dir (src/plan/spool.rs): it exists from planning on.
    let build_dir = match &claim {
        Some(_) => Some(make_build_dir(opts, &dirs)?),
        None => None,
    };
    let planned = planning::plan(
        opts,
        &config,
        &net,
        (cache.as_ref(), build_dir),
        reporter,
        locked.as_ref(),
    )?;
    let frame = opts
        .trust
        .records()
        .then(|| record::frame(opts, &config, &planned, locked.as_ref()));
    if let (Some(frame), Some(lock)) = (&frame, &locked) {
        record::check_planned(frame, lock)?;
    }
    let Some(claim) = claim else {
        // `--check`: the plan, and nothing written.
        if let Some(c) = &cache {
            planning::report_eviction(c, reporter);
        }
        let mut checked = Checked::new(planned.plan, opts, target, publisher.as_ref());
        checked.clones = cache
            .as_ref()
            .and_then(crate::cache::Cache::local_dir)
            .filter(|c| will_clone(c, &dirs.lock))
            .map(Path::to_path_buf);
        return Ok(Outcome::Checked(checked));
    };
    target.check_room(opts, &dirs, &planned)?;
    planning::announce(&planned, reporter);
    let build_cache = cache.as_ref().map(|c| BuildCache::new(c, reporter));
    let ctx = Ctx {
        opts,
        config: &config,
        net: &net,
        reporter,
        cache: build_cache.as_ref(),
        build_dir: &dirs.build,
    };
    let out = target.open(claim, opts, &dirs)?;
    let recorder = Recorder::default();
    let written = write(&ctx, &out, planned, publisher.as_ref(), &recorder);
    if let Some(c) = &build_cache {
        c.evict();
    }
    match written {
        Ok((mut sides, plan, base_sha256)) => {
            let lock = frame.map(|f| recorder.complete(f, base_sha256));
            let attested =
                attest::add_sides(opts, &mut sides, lock.as_ref(), started).and_then(|()| {
                    match &signer {
                        Some(s) => sign::sign_sides(opts, s, &mut sides, lock.as_ref()),
                        None => Ok(()),
                    }
                });
            if let Err(e) = attested {
                out.abandon();
                return Err(e);
            }
            out.publish(sides, reporter)?;
            if let (Some(path), Some(lock)) = (&opts.trust.lock, &lock) {
                record::write_lock(path, lock)?;
            }
            Ok(Outcome::Built {
                output: opts.output.clone(),
                image_size: plan.image_size,
                content_bytes: plan.content_bytes,
            })
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

/// For `--check`: whether the cache directory `cache` and the directory
/// the image goes to share blocks (`os::can_clone`, with unnamed files
/// that never appear).
fn will_clone(cache: &Path, image_dir: &Path) -> bool {
    std::fs::File::open(image_dir).is_ok_and(|d| crate::os::can_clone(&cache.join("v1/tmp"), &d))
}

/// The build dir, created when `--build-dir` names one that is missing.
fn make_build_dir<'d>(opts: &BuildOptions, dirs: &'d Dirs) -> Result<&'d Path, BuildError> {
    if let Some(d) = &opts.build_dir {
        std::fs::create_dir_all(d).map_err(|source| BuildError::BuildDir {
            path: d.clone(),
            source,
        })?;
    }
    Ok(&dirs.build)
}

/// Under `--locked`, a payload that is not what the lock names (its
/// sha256 differs) is a refused input, exit 3, naming the lock.
fn locked_mismatch(opts: &BuildOptions, e: BuildError) -> BuildError {
    match &opts.trust.locked {
        Some(path) if e.is_checksum_mismatch() => BuildError::Locked(format!(
            "{e}: not the bytes the lock {} names",
            path.display()
        )),
        _ => e,
    }
}

/// Steps 3 to 7 into the opened target: the side files to publish (and
/// the upload to complete), the plan carried out (its items consumed),
/// and the digest step 3's check computed of the base (its sha256 in a
/// recorded build, which tells `recorder` what each item's was).
fn write(
    ctx: &Ctx<'_>,
    out: &Opened,
    planned: Planned,
    publisher: Option<&Publisher>,
    recorder: &Recorder,
) -> Result<(SideFiles, Plan, Option<String>), BuildError> {
    let Planned {
        base,
        base_cache,
        plan,
    } = planned;
    let (staging, reopen) = out.staging();
    step(ctx.reporter, 3);
    let base_sha256 = base::copy_base(staging, &base, base_cache, ctx)?;
    let mut plan = resize::exact(plan, &base, reopen, ctx)?;
    let image = out.lay_out(ctx.opts, &base, &plan)?;
    let mbr = table::read_base(staging, &ctx.opts.output)?;
    let p3 = mbr.partition(3)?;

    step(ctx.reporter, 4);
    let items = std::mem::take(&mut plan.items);
    let deferred = std::sync::Mutex::new(Vec::new());
    let data = data::DataCtx {
        image: &image.file,
        image_path: &ctx.opts.output,
        old_p3: (p3.offset(), p3.len()),
        base_name: &base.location.name(),
        plan: &plan,
        build_dir: ctx.build_dir,
        net: ctx.net,
        concurrency: ctx.opts.concurrency,
        reporter: ctx.reporter,
        cache: ctx.cache,
        log: image.log.clone(),
        recorder: ctx.opts.trust.records().then_some(recorder),
        deferred: (ctx.opts.trust.records() && out.pass_reads(ctx.opts)).then_some(&deferred),
    };
    data::write_data_partition(&data, items)?;

    step(ctx.reporter, 5);
    boot::write_boot(&image.file, &ctx.opts.output, &mbr, ctx.config, image.log)?;

    step(ctx.reporter, 6);
    out.write_table(ctx.opts, table::final_mbr(mbr, plan.fs_size)?)?;

    step(ctx.reporter, 7);
    let files = deferred.into_inner().unwrap_or_default();
    let sides = out.finish(ctx.opts, &plan, publisher, files, ctx.reporter)?;
    for (name, sha256) in &sides.file_sha256 {
        recorder.learn_sha256(name, sha256.clone());
    }
    Ok((sides, plan, base_sha256))
}
