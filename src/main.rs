//! `image-creator`: parse the command line, run the build, map errors to
//! the exit codes of docs/spec.md §7. Everything else lives in the library.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use clap::Parser;
use image_creator::cli::{Cli, OciSizesCli};
use image_creator::config::parse_size;
use image_creator::error::ExitKind;
use image_creator::fetch::FetchOptions;
use image_creator::pipeline::{self, BuildOptions, Outcome};
use image_creator::progress::{
    rfc3339, Bars, Finish, ProgressFile, ProgressFileOptions, Reporter, Tee, TextHistory,
};

/// The terminal: history on stdout, bars (when enabled), warnings and
/// `--debug` logs on stderr. Writes go through the bars' `suspend` so they
/// never tear a bar.
struct Console {
    history: TextHistory<std::io::Stdout>,
    bars: Option<Bars>,
    debug: bool,
}

impl Console {
    fn print(&self, f: impl FnOnce()) {
        match &self.bars {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    fn log(&self, what: std::fmt::Arguments<'_>) {
        if self.debug {
            self.print(|| eprintln!("{} {what}", rfc3339(SystemTime::now())));
        }
    }
}

impl Reporter for Console {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.print(|| self.history.step(index, count, name));
        self.log(format_args!("step {index}/{count}: {name}"));
        if let Some(b) = &self.bars {
            b.step(index, count, name);
        }
    }
    fn items_planned(&self, items: &[(String, u64)]) {
        self.log(format_args!("{} items planned", items.len()));
        if let Some(b) = &self.bars {
            b.items_planned(items);
        }
    }
    fn item_started(&self, name: &str, total_bytes: Option<u64>) {
        match total_bytes {
            Some(n) => self.log(format_args!("start {name} ({n} bytes)")),
            None => self.log(format_args!("start {name} (size unknown)")),
        }
        self.history.item_started(name, total_bytes);
        if let Some(b) = &self.bars {
            b.item_started(name, total_bytes);
        }
    }
    fn item_progress(&self, name: &str, bytes_delta: u64) {
        if let Some(b) = &self.bars {
            b.item_progress(name, bytes_delta);
        }
    }
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        self.log(format_args!("done {name} ({bytes} bytes)"));
        if let Some(b) = &self.bars {
            b.item_done(name, bytes, digest);
        }
        self.print(|| self.history.item_done(name, bytes, digest));
    }
    fn item_cached(&self, name: &str) {
        self.log(format_args!("{name}: from the download cache"));
        self.history.item_cached(name);
    }
    fn item_failed(&self, name: &str, error: &str) {
        self.log(format_args!("failed {name}: {error}"));
        if let Some(b) = &self.bars {
            b.item_failed(name, error);
        }
        self.print(|| self.history.item_failed(name, error));
    }
    fn warn(&self, message: &str) {
        self.print(|| eprintln!("warning: {message}"));
    }
    fn finished(&self, how: &Finish) {
        self.log(format_args!("finished: {how:?}"));
        if let Some(b) = &self.bars {
            b.finished(how);
        }
        self.history.finished(how);
    }
}

/// The progress file, reachable from the signal handler.
static PROGRESS: OnceLock<ProgressFile> = OnceLock::new();

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

fn main() {
    // `image-creator oci-sizes IDENT`: a separate command line, so the old
    // positional `image-creator CONFIG OUTPUT` stays as it was.
    if std::env::args_os().nth(1).is_some_and(|a| a == "oci-sizes") {
        let cli = OciSizesCli::parse_from(std::env::args_os().skip(1));
        std::process::exit(oci_sizes(&cli));
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "verify") {
        let cli = image_creator::cli::VerifyCli::parse_from(std::env::args_os().skip(1));
        std::process::exit(verify(&cli));
    }
    // `image-creator completions SHELL` and `image-creator man`: the same.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "completions")
    {
        let cli = image_creator::cli::CompletionsCli::parse_from(std::env::args_os().skip(1));
        image_creator::cli::write_completions(cli.shell, &mut std::io::stdout());
        std::process::exit(0);
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "man") {
        image_creator::cli::ManCli::parse_from(std::env::args_os().skip(1));
        let code = match image_creator::cli::write_man_page(&mut std::io::stdout()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: writing the man page: {e}");
                ExitKind::Failure.code()
            }
        };
        std::process::exit(code);
    }
    let cli = Cli::parse();
    raise_open_file_limit();
    std::process::exit(run(cli));
}

fn oci_sizes(cli: &OciSizesCli) -> i32 {
    use image_creator::config::OciReference;
    use image_creator::oci::{measure, Platform};
    let ident = match OciReference::parse(&cli.ident) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: IDENT: {e}");
            return ExitKind::BadInput.code();
        }
    };
    let platform = match Platform::parse(&cli.platform) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: --platform: {e}");
            return ExitKind::BadInput.code();
        }
    };
    let result = image_creator::fetch::Net::new(FetchOptions {
        connect_timeout: Duration::from_secs(cli.connect_timeout),
        network: cli.network.into(),
        ..FetchOptions::default()
    })
    .map_err(image_creator::oci::OciError::from)
    .and_then(|net| measure(&ident, &platform, &net));
    match result {
        Ok(sizes) => {
            println!("- ident: {}", cli.ident.trim());
            println!("  filesize: {}", sizes.filesize);
            println!("  fullsize: {}", sizes.fullsize.unwrap_or(0));
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_kind().code()
        }
    }
}

/// `verify TARGET [--bmap F] [--config C]`: 0 when everything matches, 1
/// with one line per difference.
fn verify(cli: &image_creator::cli::VerifyCli) -> i32 {
    use image_creator::verify::{verify, VerifyOptions};
    let opts = VerifyOptions {
        target: cli.target.clone(),
        bmap: cli.bmap.clone(),
        config: cli.config.clone(),
    };
    match verify(&opts) {
        Ok(r) if r.differences.is_empty() => {
            println!(
                "{}: OK ({} checks passed)",
                cli.target.display(),
                r.checked.len()
            );
            0
        }
        Ok(r) => {
            for d in &r.differences {
                println!("differs: {d}");
            }
            println!(
                "{}: {} difference(s), {} checks passed",
                cli.target.display(),
                r.differences.len(),
                r.checked.len()
            );
            ExitKind::Failure.code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_kind().code()
        }
    }
}

/// `--show-cache [--json]`: the cache's entries, read-only.
fn show_cache(cli: &Cli) -> i32 {
    use image_creator::cache::{unix_now, Cache};
    let Some(dir) = &cli.cache_dir else {
        eprintln!("error: --show-cache needs --cache-dir");
        return ExitKind::BadInput.code();
    };
    let report = match Cache::open_read_only(dir) {
        Ok(None) => {
            println!(
                "Cache is disabled by {}.",
                dir.join("policy.yaml").display()
            );
            return 0;
        }
        Ok(Some(c)) => c.report(unix_now()),
        Err(e) => Err(e),
    };
    match report {
        Ok(r) if cli.json => match serde_json::to_string_pretty(&r) {
            Ok(j) => {
                println!("{j}");
                0
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitKind::Failure.code()
            }
        },
        Ok(r) => {
            print!("{}", r.render_text());
            0
        }
        Err(e) => {
            eprintln!("error: --cache-dir {}: {e}", dir.display());
            if e.is_bad_policy() {
                ExitKind::BadInput.code()
            } else {
                ExitKind::Failure.code()
            }
        }
    }
}

fn run(cli: Cli) -> i32 {
    if cli.show_cache {
        return show_cache(&cli);
    }
    let (Some(config_src), Some(output)) = (cli.config_src.clone(), cli.output.clone()) else {
        eprintln!("error: CONFIG_SRC and OUTPUT are required");
        return ExitKind::BadInput.code();
    };
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let console = Console {
        history: TextHistory::new(std::io::stdout(), cli.quiet),
        bars: (std::io::stderr().is_terminal() && !no_color && !cli.quiet).then(Bars::stderr),
        debug: cli.debug,
    };
    let mut reporters: Vec<&dyn Reporter> = vec![&console];
    if let Some(path) = &cli.progress_file {
        match ProgressFile::create(path, ProgressFileOptions::default()) {
            Ok(pf) => {
                let _ = PROGRESS.set(pf);
                if let Some(pf) = PROGRESS.get() {
                    reporters.push(pf);
                }
            }
            Err(e) => {
                eprintln!("error: --progress-file {}: {e}", path.display());
                return ExitKind::BadInput.code();
            }
        }
    }
    let reporter = Tee(reporters);
    let code = match cli.max_size.as_deref().map(parse_size).transpose() {
        Ok(max_size) => build(&cli, config_src, output, max_size, &reporter),
        Err(e) => {
            let message = format!("--max-size: {e}");
            reporter.finished(&Finish::Failed {
                message: message.clone(),
            });
            eprintln!("error: {message}");
            ExitKind::BadInput.code()
        }
    };
    if let Some(e) = PROGRESS.get().and_then(ProgressFile::error) {
        eprintln!("warning: progress file: {e}");
    }
    code
}

fn build(
    cli: &Cli,
    config_src: String,
    output: std::path::PathBuf,
    max_size: Option<u64>,
    reporter: &dyn Reporter,
) -> i32 {
    // SIGINT/SIGTERM: remove the partial image (unless --keep) and exit.
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
    let opts = BuildOptions {
        config_src,
        output,
        build_dir: cli.build_dir.clone(),
        check: cli.check,
        keep: cli.keep,
        overwrite: cli.overwrite,
        max_size,
        base_url: cli.base_url.clone(),
        concurrency: cli.concurrency,
        fetch: FetchOptions {
            connect_timeout: Duration::from_secs(cli.connect_timeout),
            idle_timeout: Duration::from_secs(cli.idle_timeout),
            max_attempts: cli.attempts.max(1),
            network: cli.network.into(),
            resolve: cli.resolve.clone(),
            ..FetchOptions::default()
        },
        cache_dir: cli.cache_dir.clone(),
        allow_local_files: cli.allow_local_files,
        output_options: pipeline::OutputOptions {
            bmap: cli.bmap,
            hash: !cli.no_hash,
            compress: cli.compress.map(Into::into),
            threads: 0,
            force: cli.force,
            grow: cli.grow,
        },
    };
    match pipeline::run(&opts, reporter) {
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
            eprintln!("error: {e}");
            e.exit_kind().code()
        }
    }
}
