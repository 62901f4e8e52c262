//! `image-creator`: parse the command line, pick the reporters, run what
//! it asks for and map errors to the exit codes of docs/spec.md §7.
//! Everything else lives in the library.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::Parser;
use image_creator::cli::{
    self, Action, BuildArgs, Cli, Command, FlashArgs, OciSizesArgs, VerifyArgs,
};
use image_creator::error::ExitKind;
use image_creator::pipeline::{self, Outcome};
use image_creator::progress::{
    Console, ConsoleOptions, Finish, ProgressFile, ProgressFileOptions, Reporter, Tee,
};

/// The progress file, reachable from the signal handler.
static PROGRESS: OnceLock<ProgressFile> = OnceLock::new();

fn main() {
    // Usage errors exit 2, `--help` and `--version` 0 (clap's codes).
    let action = Cli::parse().action().unwrap_or_else(|e| e.exit());
    let code = match action {
        Action::Build {
            config_src,
            output,
            args,
        } => {
            raise_open_file_limit();
            build(&args, config_src, output)
        }
        Action::ShowCache { cache_dir, json } => {
            raise_open_file_limit();
            show_cache(&cache_dir, json)
        }
        Action::Command(Command::OciSizes(a)) => oci_sizes(&a),
        Action::Command(Command::Verify(a)) => verify(&a),
        Action::Command(Command::Flash(a)) => flash(&a),
        Action::Command(Command::Completions(a)) => {
            match cli::write_completions(a.shell, &mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => fail(
                    format_args!("writing the completions: {e}"),
                    ExitKind::Failure,
                ),
            }
        }
        Action::Command(Command::Man) => match cli::write_man_page(&mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => fail(format_args!("writing the man page: {e}"), ExitKind::Failure),
        },
    };
    std::process::exit(code);
}

/// Print `error: {what}` and return `kind`'s exit code.
fn fail(what: std::fmt::Arguments<'_>, kind: ExitKind) -> i32 {
    eprintln!("error: {what}");
    kind.code()
}

/// A build with the download cache holds every hit's blob open from
/// planning on (so an eviction by another build can't take it away): a
/// config of thousands of cached files needs more descriptors than the
/// usual soft limit of 1,024. Raise the soft limit to the hard one, as
/// many servers do; failing that, the cache warns and downloads instead.
fn raise_open_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
}

/// `--progress-file PATH` created and kept in [`PROGRESS`] (where the
/// signal handler finds it); `Err` is the exit code when it can't be.
fn progress_file(path: Option<&std::path::Path>) -> Result<Option<&'static ProgressFile>, i32> {
    let Some(path) = path else {
        return Ok(None);
    };
    match ProgressFile::create(path, ProgressFileOptions::default()) {
        Ok(pf) => {
            let _ = PROGRESS.set(pf);
            Ok(PROGRESS.get())
        }
        Err(e) => {
            let what = format_args!("--progress-file {}: {e}", path.display());
            Err(fail(what, ExitKind::BadInput))
        }
    }
}

/// The build: the console, the progress file if asked for, the signal
/// handler, then the pipeline.
fn build(args: &BuildArgs, config_src: String, output: PathBuf) -> i32 {
    let console = Console::terminal(ConsoleOptions {
        quiet: args.quiet,
        debug: args.debug,
    });
    let mut reporters: Vec<&dyn Reporter> = vec![&console];
    match progress_file(args.progress_file.as_deref()) {
        Ok(Some(pf)) => reporters.push(pf),
        Ok(None) => {}
        Err(code) => return code,
    }
    let reporter = Tee(reporters);
    let code = match args.options(config_src, output) {
        Ok(opts) => {
            install_signal_handler(&reporter);
            report_outcome(pipeline::run(&opts, &reporter), &reporter)
        }
        Err(e) => {
            let message = format!("--max-size: {e}");
            reporter.finished(&Finish::Failed {
                message: message.clone(),
            });
            fail(format_args!("{message}"), ExitKind::BadInput)
        }
    };
    if let Some(e) = PROGRESS.get().and_then(ProgressFile::error) {
        eprintln!("warning: progress file: {e}");
    }
    code
}

/// SIGINT/SIGTERM: remove the partial image (unless --keep), mark the
/// progress file failed and exit 130.
fn install_signal_handler(reporter: &dyn Reporter) {
    if let Err(e) = ctrlc::set_handler(|| {
        pipeline::cleanup_after_signal();
        if let Some(pf) = PROGRESS.get() {
            pf.finished(&Finish::Failed {
                message: "interrupted".into(),
            });
        }
        eprintln!("interrupted");
        std::process::exit(130);
    }) {
        reporter.warn(&format!("could not install the signal handler: {e}"));
    }
}

/// Tell the reporters how the build ended; the exit code.
fn report_outcome(result: Result<Outcome, pipeline::BuildError>, reporter: &dyn Reporter) -> i32 {
    match result {
        Ok(Outcome::Checked(plan)) => {
            reporter.finished(&Finish::Checked);
            print!("{plan}");
            0
        }
        Ok(Outcome::Built {
            output,
            image_size,
            content_bytes,
        }) => {
            reporter.finished(&Finish::Succeeded {
                image: output,
                image_bytes: image_size,
                content_bytes,
            });
            0
        }
        Err(e) => {
            reporter.finished(&Finish::Failed {
                message: e.to_string(),
            });
            fail(format_args!("{e}"), e.exit_kind())
        }
    }
}

/// `oci-sizes IDENT`: the `oci_images` entry with its exact sizes.
fn oci_sizes(args: &OciSizesArgs) -> i32 {
    use image_creator::config::OciReference;
    use image_creator::oci::{measure, OciError, Platform};
    let ident = match OciReference::parse(&args.ident) {
        Ok(i) => i,
        Err(e) => return fail(format_args!("IDENT: {e}"), ExitKind::BadInput),
    };
    let platform = match Platform::parse(&args.platform) {
        Ok(p) => p,
        Err(e) => return fail(format_args!("--platform: {e}"), ExitKind::BadInput),
    };
    let result = image_creator::fetch::Net::new(args.fetch_options())
        .map_err(OciError::from)
        .and_then(|net| measure(&ident, &platform, &net));
    match result {
        Ok(sizes) => {
            println!("- ident: {}", args.ident.trim());
            println!("  filesize: {}", sizes.filesize);
            println!("  fullsize: {}", sizes.fullsize.unwrap_or(0));
            0
        }
        Err(e) => fail(format_args!("{e}"), e.exit_kind()),
    }
}

/// `verify TARGET [--bmap F] [--config C]`: 0 when everything matches, 1
/// with one line per difference.
fn verify(args: &VerifyArgs) -> i32 {
    use image_creator::verify::{verify, VerifyOptions};
    let opts = VerifyOptions {
        target: args.target.clone(),
        bmap: args.bmap.clone(),
        config: args.config.clone(),
        pubkey: args.pubkey.clone(),
        lock: args.lock.clone(),
        platform: args.platform.clone(),
    };
    let target = args.target.display();
    match verify(&opts) {
        Ok(r) if r.differences.is_empty() => {
            println!("{target}: OK ({} checks passed)", r.checked.len());
            0
        }
        Ok(r) => {
            for d in &r.differences {
                println!("differs: {d}");
            }
            println!(
                "{target}: {} difference(s), {} checks passed",
                r.differences.len(),
                r.checked.len()
            );
            ExitKind::Failure.code()
        }
        Err(e) => fail(format_args!("{e}"), e.exit_kind()),
    }
}

/// `flash SOURCE DEVICE...`: the summary on stdout; 0 only when every
/// device was written and verified.
fn flash(args: &FlashArgs) -> i32 {
    let console = Console::terminal(ConsoleOptions {
        quiet: args.quiet,
        debug: args.debug,
    });
    let mut reporters: Vec<&dyn Reporter> = vec![&console];
    match progress_file(args.progress_file.as_deref()) {
        Ok(Some(pf)) => reporters.push(pf),
        Ok(None) => {}
        Err(code) => return code,
    }
    let reporter = Tee(reporters);
    // SIGINT/SIGTERM: the cards keep their zeroed partition tables (the
    // image's goes last); the progress file says so; exit 130.
    if let Err(e) = ctrlc::set_handler(|| {
        if let Some(pf) = PROGRESS.get() {
            pf.finished(&Finish::Failed {
                message: "interrupted".into(),
            });
        }
        eprintln!("interrupted");
        std::process::exit(130);
    }) {
        reporter.warn(&format!("could not install the signal handler: {e}"));
    }
    let code = match image_creator::flash::run(&args.options(), &reporter) {
        Ok(report) => {
            let good = report.cards.iter().filter(|c| c.ok(report.verify)).count();
            reporter.finished(&Finish::Flashed {
                source: report.source.clone(),
                image_bytes: report.image_size,
                devices: report.cards.len(),
                succeeded: good,
            });
            print!("{}", report.render());
            if report.all_ok() {
                0
            } else {
                ExitKind::Failure.code()
            }
        }
        Err(e) => {
            reporter.finished(&Finish::Failed {
                message: e.to_string(),
            });
            fail(format_args!("{e}"), e.exit_kind())
        }
    };
    if let Some(e) = PROGRESS.get().and_then(ProgressFile::error) {
        eprintln!("warning: progress file: {e}");
    }
    code
}

/// `--show-cache [--json]`: the cache's entries, read-only.
fn show_cache(dir: &Path, json: bool) -> i32 {
    use image_creator::cache::{unix_now, Cache};
    let report = match Cache::open_read_only(dir) {
        Ok(None) => {
            let policy = dir.join("policy.yaml");
            println!("Cache is disabled by {}.", policy.display());
            return 0;
        }
        Ok(Some(c)) => c.report(unix_now()),
        Err(e) => Err(e),
    };
    match report {
        Ok(r) if json => match serde_json::to_string_pretty(&r) {
            Ok(j) => {
                println!("{j}");
                0
            }
            Err(e) => fail(format_args!("{e}"), ExitKind::Failure),
        },
        Ok(r) => {
            print!("{}", r.render_text());
            0
        }
        Err(e) => {
            let kind = if e.is_bad_policy() {
                ExitKind::BadInput
            } else {
                ExitKind::Failure
            };
            fail(format_args!("--cache-dir {}: {e}", dir.display()), kind)
        }
    }
}
