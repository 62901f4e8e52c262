//! The build pipeline (docs/design.md "Data flow"), step by step, with cleanup:
//! config → plan → base copy → data partition → boot partition → MBR.
//!
//! - [`load`]: step 1, the config;
//! - [`base`]: step 3, the base image copy;
//! - [`data`]: step 4, the data partition;
//! - [`boot`]: steps 5 and 6, `offspot.yaml` and the partition table;
//! - [`output`]: step 7, the output pass (hashes, compression, bmap) and
//!   the side files `OUTPUT.json`, `OUTPUT.bmap`;
//! - [`cleanup`]: one build per OUTPUT; the temporary output, removed on
//!   failure or signal ([`lock`]: the output lock and the removal of dead
//!   builds' leftovers; [`unnamed`]: unnamed files, linked when done);
//! - [`error`]: why a build failed.

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
pub mod unnamed;

pub use cleanup::{cleanup_after_signal, OutputPolicy};
pub use error::BuildError;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cache::Cache;
use crate::config::ImageConfig;
use crate::fetch::{FetchOptions, Net};
use crate::partition::Mbr;
use crate::plan::{self, BaseInfo, BaseLocation, BaseSpec, Plan};
use crate::progress::Reporter;
use cache::BuildCache;
use cleanup::PendingOutput;

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
}

/// What a build writes besides the raw image (docs/spec.md §10).
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// `--bmap`: write `OUTPUT.bmap`.
    pub bmap: bool,
    /// Not `--no-hash`: hash the image in step 7 and write `OUTPUT.json`.
    pub hash: bool,
    /// `--compress`: compress OUTPUT (else OUTPUT's suffix or
    /// `output.compress` decide).
    pub compress: Option<crate::output::Compression>,
    /// Encoder threads (0: one per CPU).
    pub threads: u32,
    /// `--force`: OUTPUT may be a fixed (non-removable) disk.
    pub force: bool,
    /// `--grow`: on a device, p3 fills the device.
    pub grow: bool,
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

/// Run a build (or a check).
pub fn run(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Outcome, BuildError> {
    step(reporter, 1);
    let net = Net::new(opts.fetch.clone())?;
    let mut config = load::load_config(&opts.config_src, &net, opts.allow_local_files)?;
    let on_device = device::is_block_device(&opts.output);
    let compress = if on_device {
        check_device_options(opts)?;
        None
    } else {
        output::resolve_compression(opts.output_options.compress, &opts.output, &config)?
    };
    if opts.output_options.grow && !on_device {
        return Err(BuildError::Usage(
            "--grow needs a block device as OUTPUT".into(),
        ));
    }
    let out_dir = if on_device {
        // Nothing is written beside a device: the lock and the raw image
        // go to the build dir.
        let dir = opts.build_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::BuildDir {
            path: dir.clone(),
            source,
        })?;
        device::check_usable(&opts.output, opts.output_options.force)?;
        if opts.output_options.grow {
            config.output_size = crate::config::OutputSize::Bytes(
                device::size(&opts.output)? / (1 << 20) * (1 << 20),
            );
        }
        dir
    } else {
        check_output(opts)?
    };
    let config = config;
    let build_dir = opts.build_dir.clone().unwrap_or_else(|| out_dir.clone());
    // One build per OUTPUT, decided before any work (`--check` writes
    // nothing, so it takes no lock).
    let claim = if opts.check {
        None
    } else {
        let c = cleanup::claim(&opts.output, &out_dir, &build_dir)?;
        // Checked again under the lock: a build that held it may just
        // have finished this very OUTPUT.
        if !on_device {
            check_output(opts)?;
        }
        Some(c)
    };

    step(reporter, 2);
    let cache = open_cache(opts, reporter)?;
    let mut spec = plan::locate_base(&config, &opts.base_url, &net)?;
    let mut base_cache = plan::Planner::new(cache.as_ref());
    plan::cache_base(&mut spec, &mut base_cache, &net);
    for w in &base_cache.warnings {
        reporter.warn(w);
    }
    let base = plan::inspect_base(&spec, &net)?;
    let plan_opts = plan::PlanOptions {
        max_size: opts.max_size,
        cache: cache.as_ref(),
        check: opts.check,
    };
    let the_plan = plan::make_plan(&config, &base, &net, &plan_opts)?;
    for w in &the_plan.warnings {
        reporter.warn(w);
    }
    if opts.check {
        if let Some(c) = &cache {
            report_eviction(c, reporter);
        }
        return Ok(Outcome::Checked(the_plan));
    }
    if on_device {
        let have = device::size(&opts.output)?;
        if have < the_plan.image_size {
            return Err(BuildError::DeviceRefused {
                path: opts.output.clone(),
                why: format!(
                    "{have} bytes, too small for the image of {} bytes",
                    the_plan.image_size
                ),
            });
        }
    }
    check_free_space(&out_dir, &base, &the_plan)?;
    if compress.is_some() {
        // The raw image in the build dir, and the compressed one beside
        // OUTPUT (at worst as large).
        check_free_space(&build_dir, &base, &the_plan)?;
    }
    let mut planned = vec![(base.location.name(), base.size)];
    planned.extend(the_plan.items.iter().map(|i| (i.name(), i.size)));
    reporter.items_planned(&planned);
    if let Some(d) = &opts.build_dir {
        std::fs::create_dir_all(d).map_err(|source| BuildError::BuildDir {
            path: d.clone(),
            source,
        })?;
    }
    let Some(claim) = claim else {
        return Ok(Outcome::Checked(the_plan));
    };
    let build_cache = cache.as_ref().map(|c| BuildCache::new(c, reporter));
    let job = Job {
        cache: build_cache.as_ref(),
        config: &config,
        base: &base,
        plan: the_plan,
        build_dir: &build_dir,
        net: &net,
        opts,
        reporter,
        device: None,
    };
    if on_device {
        let done = build_on_device(job, &build_dir, reporter);
        if let Some(c) = &build_cache {
            c.evict();
        }
        drop(claim);
        return done.map(|plan| Outcome::Built {
            plan,
            output: opts.output.clone(),
        });
    }
    let policy = OutputPolicy {
        overwrite: opts.overwrite,
        keep: opts.keep,
    };
    let out = PendingOutput::create(claim, policy)?;
    let raw = match compress {
        Some(_) => Some(output::RawImage::create(&build_dir).inspect_err(|_| {
            // (the output is abandoned when `out` drops)
        })?),
        None => None,
    };
    let (image, image_path) = match &raw {
        Some(r) => (r.file(), r.reopen_path()),
        None => (out.file(), out.reopen_path()),
    };
    let written = job.write(image, image_path, out.output()).and_then(|plan| {
        step(reporter, 7);
        let threads = match opts.output_options.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            n => n,
        };
        let sides = output::finish(&output::Finish {
            raw: image,
            raw_name: image_path,
            len: plan.image_size,
            output: &opts.output,
            compressed: compress.map(|c| (out.file(), c)),
            sync_raw: compress.is_none(),
            bmap: opts.output_options.bmap,
            hash: opts.output_options.hash,
            threads,
        })?;
        Ok((plan, sides))
    });
    drop(raw);
    if let Some(c) = &build_cache {
        c.evict();
    }
    match written {
        Ok((plan, sides)) => {
            out.commit_with(&sides.files)?;
            Ok(Outcome::Built {
                plan,
                output: opts.output.clone(),
            })
        }
        Err(e) => {
            out.abandon();
            Err(e)
        }
    }
}

/// A device gets the image itself: no side files, no compression.
fn check_device_options(opts: &BuildOptions) -> Result<(), BuildError> {
    let o = &opts.output_options;
    if o.bmap || o.compress.is_some() {
        return Err(BuildError::Usage(format!(
            "{} is a block device: --bmap and --compress are for image files",
            opts.output.display()
        )));
    }
    Ok(())
}

/// Steps 3 to 7 onto a block device (`pipeline::device`): the base is
/// staged in an unnamed file in the build dir and its map copied to the
/// device; the rest streams onto the device; step 7 zeros what the image
/// needs and nothing wrote, then writes the partition table.
fn build_on_device(
    job: Job<'_>,
    build_dir: &Path,
    reporter: &dyn Reporter,
) -> Result<Plan, BuildError> {
    let target = device::Target::open(&job.opts.output)?;
    let staged = output::RawImage::create(build_dir)?;
    let path = job.opts.output.clone();
    let job = Job {
        device: Some(&target),
        ..job
    };
    let plan = job.write(staged.file(), staged.reopen_path(), &path)?;
    drop(staged);
    step(reporter, 7);
    target.finish(plan.image_size)?;
    Ok(plan)
}

/// The download cache of `--cache-dir`: read-only for `--check` (nothing
/// is created or changed). A bad `policy.yaml` is bad input (exit 3); a
/// cache that can't be used otherwise is a warning, and the build goes on
/// without it. `None` also when the policy disables it.
fn open_cache(opts: &BuildOptions, reporter: &dyn Reporter) -> Result<Option<Cache>, BuildError> {
    let Some(dir) = &opts.cache_dir else {
        return Ok(None);
    };
    let opened = if opts.check {
        Cache::open_read_only(dir)
    } else {
        let options = crate::cache::CacheOptions {
            parallel: opts.concurrency.max(1),
            ..crate::cache::CacheOptions::default()
        };
        Cache::open_with(dir, options)
    };
    match opened {
        Ok(c) => Ok(c),
        Err(e) if e.is_bad_policy() => Err(BuildError::CachePolicy(e)),
        Err(e) => {
            reporter.warn(&format!(
                "download cache {}: {e}; building without it",
                dir.display()
            ));
            Ok(None)
        }
    }
}

/// `--check`: what eviction would remove now.
fn report_eviction(cache: &Cache, reporter: &dyn Reporter) {
    match cache.plan_eviction(crate::cache::unix_now()) {
        Ok(planned) => {
            for (entry, why) in planned {
                reporter.warn(&format!(
                    "download cache: eviction would remove {} ({why})",
                    entry.source
                ));
            }
        }
        Err(e) => reporter.warn(&format!("download cache: {e}")),
    }
}

/// OUTPUT may be written: it does not exist (or `-X`), its directory
/// does. Side files (`OUTPUT.json`, `OUTPUT.bmap`) beside an absent OUTPUT
/// describe an image that is gone, so they don't stop a build: they are
/// replaced when the new image is published (the old tool's command lines,
/// which know nothing of side files, keep working after `rm OUTPUT`).
/// Returns that directory.
fn check_output(opts: &BuildOptions) -> Result<PathBuf, BuildError> {
    if !opts.overwrite && opts.output.exists() {
        return Err(BuildError::OutputExists(opts.output.clone()));
    }
    let out_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(BuildError::NoOutputDir(out_dir));
    }
    Ok(out_dir)
}

/// The image needs the base's first partitions plus the content.
fn check_free_space(dir: &Path, base: &BaseInfo, plan: &Plan) -> Result<(), BuildError> {
    let needed = base.size.min(plan.p3_start) + plan.content_bytes;
    if let Ok(st) = rustix::fs::statvfs(dir) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < needed {
            return Err(BuildError::NoSpace {
                dir: dir.to_path_buf(),
                free,
                needed,
            });
        }
    }
    Ok(())
}

/// Steps 3 to 6, into the temporary output.
struct Job<'a> {
    cache: Option<&'a BuildCache<'a>>,
    config: &'a ImageConfig,
    base: &'a BaseInfo,
    plan: Plan,
    build_dir: &'a Path,
    net: &'a Net,
    opts: &'a BuildOptions,
    reporter: &'a dyn Reporter,
    /// Building onto a block device.
    device: Option<&'a device::Target>,
}

impl Job<'_> {
    /// Write the image into `out`, which `reopen` opens again (for a
    /// second look at a copied base) and which messages call `out_path`
    /// (OUTPUT: the file being written has no name of its own on Linux);
    /// returns the plan carried out.
    fn write(self, out: &File, reopen: &Path, out_path: &Path) -> Result<Plan, BuildError> {
        step(self.reporter, 3);
        base::copy_base(out, self.base, self.net, self.reporter, self.cache)?;
        // A compressed or remote base could not be scanned before the copy:
        // plan again, exactly, from the copy.
        let plan = if self.base.xz || matches!(self.base.location, BaseLocation::Http(_)) {
            let copy = BaseSpec {
                location: BaseLocation::Local(reopen.to_path_buf()),
                xz: false,
                checksum: None,
                cache: None,
            };
            let copied = plan::inspect_base(&copy, self.net)?;
            plan::resize(&self.plan, self.config, &copied, self.opts.max_size)?
        } else {
            self.plan
        };
        let (image, log) = match self.device {
            Some(d) => {
                // The staged base's blocks onto the device, MBR aside
                // (its skipped zero tail included: the size says so).
                if out.metadata()?.len() < self.base.size {
                    out.set_len(self.base.size)?;
                }
                d.copy_base(out, reopen, self.base.size)?;
                (d.file.clone(), Some(d.write_log()))
            }
            None => {
                out.set_len(plan.image_size)?;
                (Arc::new(out.try_clone()?), None)
            }
        };
        let mut sector = [0u8; 512]; // one sector: the MBR
        out.read_exact_at(&mut sector, 0)?;
        let mbr = Mbr::parse(&sector)?;
        let p3 = mbr.partition(3)?;

        step(self.reporter, 4);
        data::write_data_partition(&data::DataCtx {
            image: &image,
            image_path: out_path,
            old_p3: (p3.offset(), p3.len()),
            base_name: &self.base.location.name(),
            plan: &plan,
            build_dir: self.build_dir,
            net: self.net,
            concurrency: self.opts.concurrency,
            reporter: self.reporter,
            cache: self.cache,
            log: log.clone(),
        })?;

        step(self.reporter, 5);
        boot::write_boot(&image, out_path, &mbr, self.config, log)?;

        step(self.reporter, 6);
        match self.device {
            // Written last, after the zeros (step 7).
            Some(d) => d.set_mbr(boot::final_mbr(mbr, plan.fs_size)?),
            // Synced in step 7, while it is hashed (a raw OUTPUT), or not
            // at all (the temporary raw image of a compressed OUTPUT, which
            // is synced instead).
            None => out.write_all_at(&boot::final_mbr(mbr, plan.fs_size)?, 0)?,
        }
        Ok(plan)
    }
}
