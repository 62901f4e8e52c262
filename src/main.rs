//! `image-creator`: parse the command line, run the build, map errors to
//! the exit codes of SPEC §7. Everything else lives in the library.

use std::io::Write;
use std::time::{Duration, Instant};

use clap::Parser;
use image_creator::build::{self, BuildOptions, Outcome};
use image_creator::cli::{Cli, OciSizesCli};
use image_creator::config::parse_size;
use image_creator::error::ExitKind;
use image_creator::fetch::FetchOptions;
use image_creator::progress::Reporter;

/// Prints a readable history: steps on stdout, warnings on stderr.
struct TextReporter {
    start: Instant,
    debug: bool,
}

impl Reporter for TextReporter {
    fn step(&self, index: usize, count: usize, name: &str) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[{index}/{count}] {name}");
        if self.debug {
            eprintln!(
                "{:>8.3}s step {index}/{count}: {name}",
                self.start.elapsed().as_secs_f64()
            );
        }
    }
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        let mut out = std::io::stdout().lock();
        let _ = match digest {
            Some(d) => writeln!(out, "  ✓ {name} ({bytes} bytes, {d})"),
            None => writeln!(out, "  ✓ {name} ({bytes} bytes)"),
        };
    }
    fn warn(&self, message: &str) {
        eprintln!("warning: {message}");
    }
}

fn main() {
    // `image-creator oci-sizes IDENT`: a separate command line, so the old
    // positional `image-creator CONFIG OUTPUT` stays as it was.
    if std::env::args_os().nth(1).is_some_and(|a| a == "oci-sizes") {
        let cli = OciSizesCli::parse_from(std::env::args_os().skip(1));
        std::process::exit(oci_sizes(&cli));
    }
    let cli = Cli::parse();
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
    let result = image_creator::plan::Net::new(FetchOptions {
        connect_timeout: Duration::from_secs(cli.connect_timeout),
        ..FetchOptions::default()
    })
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
            e.kind.code()
        }
    }
}

fn run(cli: Cli) -> i32 {
    if cli.show_cache {
        eprintln!("error: the download cache is not available in this version");
        return ExitKind::MissingRequirement.code();
    }
    let (Some(config_src), Some(output)) = (cli.config_src.clone(), cli.output.clone()) else {
        eprintln!("error: CONFIG_SRC and OUTPUT are required");
        return ExitKind::BadInput.code();
    };
    let max_size = match cli.max_size.as_deref().map(parse_size).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: --max-size: {e}");
            return ExitKind::BadInput.code();
        }
    };
    // SIGINT/SIGTERM: remove the partial image (unless --keep) and exit.
    if let Err(e) = ctrlc::set_handler(|| {
        build::cleanup_after_signal();
        eprintln!("interrupted");
        std::process::exit(130);
    }) {
        eprintln!("warning: could not install the signal handler: {e}");
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
            ..FetchOptions::default()
        },
    };
    let start = Instant::now();
    let reporter = TextReporter {
        start,
        debug: cli.debug,
    };
    match build::run(&opts, &reporter) {
        Ok(Outcome::Checked(plan)) => {
            print!("{plan}");
            0
        }
        Ok(Outcome::Built { plan, output }) => {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "✓ {} ({} bytes, {} bytes of content) in {secs:.1}s",
                output.display(),
                plan.image_size,
                plan.content_bytes
            );
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.kind.code()
        }
    }
}
