//! The command line, compatible with the old image-creator (docs/spec.md §7).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::fetch::{NetworkPolicy, ResolveOverride};

/// `--network`: where requests may go (docs/spec.md §9; the README's
/// "Untrusted configs" says which to pick).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// Public addresses only: no loopback, private (RFC 1918, ULA),
    /// link-local, CGNAT, multicast, reserved or documentation ranges.
    Public,
    /// Everything but link-local and cloud metadata services (default).
    Private,
    /// Everything.
    Any,
}

impl From<Network> for NetworkPolicy {
    fn from(n: Network) -> Self {
        match n {
            Network::Public => Self::Public,
            Network::Private => Self::Private,
            Network::Any => Self::Any,
        }
    }
}

/// `--compress`: the compressed output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressArg {
    /// zstd, level 3 (`.zst`).
    Zstd,
    /// xz, preset 6 (`.xz`).
    Xz,
}

impl From<CompressArg> for crate::output::Compression {
    fn from(c: CompressArg) -> Self {
        match c {
            CompressArg::Zstd => Self::Zstd { level: 3 },
            CompressArg::Xz => Self::Xz { preset: 6 },
        }
    }
}

/// Build an Offspot / Kiwix Raspberry Pi disk image from a YAML config,
/// without root, loop devices or mounts.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "image-creator",
    version,
    about,
    long_about = None,
    after_help = "To size an oci_images entry: image-creator oci-sizes IDENT [--platform PLATFORM]\n\
                  To check an image or a flashed card: image-creator verify TARGET [--bmap F] [--config C]\n\
                  Shell completions: image-creator completions bash|zsh|fish; man page: image-creator man"
)]
pub struct Cli {
    /// Temporary space (spill files, zip archives); created if missing and
    /// never deleted. Default: a temporary directory next to OUTPUT.
    #[arg(long, value_name = "DIR")]
    pub build_dir: Option<PathBuf>,

    /// Enable the download cache in DIR.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Print the cache's entries (and what its policy would evict) and exit.
    #[arg(long, requires = "cache_dir")]
    pub show_cache: bool,

    /// With --show-cache: the same data as JSON, for scripts.
    #[arg(long, requires = "show_cache")]
    pub json: bool,

    /// Parse, resolve every source, compute sizes and print the plan; write
    /// nothing and change nothing.
    #[arg(short = 'C', long)]
    pub check: bool,

    /// Keep the output file when the build fails.
    #[arg(short = 'K', long)]
    pub keep: bool,

    /// Replace an existing OUTPUT.
    #[arg(short = 'X', long)]
    pub overwrite: bool,

    /// Fail if the image would be larger than SIZE (e.g. `1TB`, `500GiB`).
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,

    /// Parallel downloads.
    #[arg(short = 'T', long, value_name = "N", default_value_t = 4)]
    pub concurrency: usize,

    /// Where versioned base images (`base.source: 1.4.2`) are downloaded from.
    #[arg(long, value_name = "URL", env = "IMAGE_CREATOR_BASE_URL", default_value = crate::plan::DEFAULT_BASE_URL)]
    pub base_url: String,

    /// Seconds to wait for a connection.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub connect_timeout: u64,

    /// Seconds without data before a download is retried.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_timeout: u64,

    /// Attempts per request (retries on 408, 429, 5xx, connection errors
    /// and truncated bodies, with capped exponential backoff).
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub attempts: u32,

    /// Where requests may go, checked on every resolved address and
    /// redirect hop: `public` for configs written by others, `private`
    /// (default) blocks only link-local and cloud metadata, `any` allows
    /// all (and is the only policy that uses HTTP_PROXY/HTTPS_PROXY).
    #[arg(long, value_enum, value_name = "POLICY", default_value = "private")]
    pub network: Network,

    /// Answer HOST with ADDRESS instead of asking DNS (like curl's
    /// `--resolve`, without the port); the address is checked by
    /// `--network` like any DNS answer. Repeatable.
    #[arg(long, value_name = "HOST:ADDRESS")]
    pub resolve: Vec<ResolveOverride>,

    /// Let a config loaded from an http(s) URL name local files
    /// (`file://`, bare paths, a base given as a path). Without it such a
    /// config is refused (exit 3).
    #[arg(long)]
    pub allow_local_files: bool,

    /// Also write OUTPUT.bmap (bmaptool's block map, format 2.0, sha256):
    /// every block the card needs, zeros the image relies on included.
    #[arg(long)]
    pub bmap: bool,

    /// Skip hashing the whole image in step 7 and write no OUTPUT.json
    /// (whose point is the image's sha256). SHA-256 runs at about 2 GB/s
    /// on one core and covers the image's holes too: a 1 TB image with
    /// little content takes about 9 minutes to hash, and seconds without.
    #[arg(long)]
    pub no_hash: bool,

    /// Write OUTPUT compressed, in one pass after the build (the raw
    /// image is a temporary file in the build dir). Default: from
    /// OUTPUT's suffix (`.zst`, `.xz`), else `output.compress: true`
    /// (xz).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub compress: Option<CompressArg>,

    /// OUTPUT may be a fixed (non-removable) disk. Removable disks, SD
    /// cards (mmcblk) and loop devices need no --force.
    #[arg(long)]
    pub force: bool,

    /// With a block device as OUTPUT: the data partition fills the
    /// device (without it the image keeps its planned size).
    #[arg(long)]
    pub grow: bool,

    /// Verbose, timestamped logs on stderr.
    #[arg(short = 'D', long)]
    pub debug: bool,

    /// Keep a JSON snapshot of the build's progress in PATH (schema:
    /// docs/progress.md), rewritten atomically at every step, at most every
    /// 0.5 s while bytes move and at least every 2 s.
    #[arg(long, value_name = "PATH")]
    pub progress_file: Option<PathBuf>,

    /// No live bars and no step/item history; warnings, errors and the
    /// final summary only.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Image config: a path or an http(s) URL.
    #[arg(value_name = "CONFIG_SRC", required_unless_present = "show_cache")]
    pub config_src: Option<String>,

    /// Image file to write (`.zst`, `.xz`: compressed), or a block device
    /// to write the image onto.
    #[arg(value_name = "OUTPUT", required_unless_present = "show_cache")]
    pub output: Option<PathBuf>,
}

/// Print the `oci_images` entry of an image with its exact sizes.
///
/// `filesize` is the docker-archive tar a build writes; `fullsize` the
/// regular-file bytes once its layers are extracted (whiteouts applied).
/// The image is pulled from its registry; nothing is written.
#[derive(Debug, Clone, Parser)]
#[command(name = "oci-sizes", bin_name = "image-creator oci-sizes", version)]
pub struct OciSizesCli {
    /// Platform to measure (`os/arch[/variant]`).
    #[arg(long, value_name = "PLATFORM", default_value = crate::oci::DEFAULT_PLATFORM)]
    pub platform: String,

    /// Seconds to wait for a connection.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub connect_timeout: u64,

    /// Where requests may go (as for a build).
    #[arg(long, value_enum, value_name = "POLICY", default_value = "private")]
    pub network: Network,

    /// Image reference: `[registry/][repository/]name[:tag][@digest]`.
    #[arg(value_name = "IDENT")]
    pub ident: String,
}

/// Check an image, a compressed image (.zst, .xz) or a device against a
/// bmap (every mapped range's sha256: the read-back check after flashing)
/// and/or a config (every file in the data partition with its size and
/// checksum, offspot.yaml in the boot partition, the OCI archives).
/// Prints what differs and exits 1, or exits 0.
#[derive(Debug, Clone, Parser)]
#[command(name = "verify", bin_name = "image-creator verify", version)]
pub struct VerifyCli {
    /// bmaptool block map (e.g. OUTPUT.bmap).
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,

    /// The image's config (path or http(s) URL).
    #[arg(long, value_name = "CONFIG")]
    pub config: Option<String>,

    /// Image, compressed image or block device.
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
}

/// Print shell completions for image-creator.
///
/// bash: `image-creator completions bash > ~/.local/share/bash-completion/completions/image-creator`;
/// zsh: into a directory of `$fpath` as `_image-creator`;
/// fish: `image-creator completions fish > ~/.config/fish/completions/image-creator.fish`.
#[derive(Debug, Clone, Parser)]
#[command(name = "completions", bin_name = "image-creator completions", version)]
pub struct CompletionsCli {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Print the man page (roff) on stdout:
/// `image-creator man > image-creator.1`, `man -l image-creator.1`.
#[derive(Debug, Clone, Parser)]
#[command(name = "man", bin_name = "image-creator man", version)]
pub struct ManCli {}

/// The whole command line as one clap command, for completions and the
/// man page: the build's options and positionals, with `oci-sizes`,
/// `verify`, `completions` and `man` as subcommands. (Parsing stays as `main.rs`
/// does it: a first argument naming one of them picks its own parser, so
/// `image-creator CONFIG OUTPUT` is unchanged.)
pub fn documented_command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
        .subcommand(OciSizesCli::command())
        .subcommand(VerifyCli::command())
        .subcommand(CompletionsCli::command())
        .subcommand(ManCli::command())
        .args_conflicts_with_subcommands(true)
}

/// Write the completion script of `shell` to `out`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    let mut cmd = documented_command();
    clap_complete::generate(shell, &mut cmd, "image-creator", out);
}

/// Write the man page (section 1, roff) to `out`.
pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(documented_command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        OciSizesCli::command().debug_assert();
        VerifyCli::command().debug_assert();
        CompletionsCli::command().debug_assert();
        ManCli::command().debug_assert();
        documented_command().debug_assert();
    }

    #[test]
    fn production_command_line_parses() {
        let cli = Cli::try_parse_from([
            "image-creator",
            "--max-size",
            "1TB",
            "--debug",
            "--cache-dir",
            "C",
            "--build-dir",
            "B",
            "CONFIG.yaml",
            "OUT.img",
        ])
        .expect("parses");
        assert_eq!(cli.max_size.as_deref(), Some("1TB"));
        assert!(cli.debug);
        assert_eq!(cli.config_src.as_deref(), Some("CONFIG.yaml"));
        assert_eq!(cli.output, Some(PathBuf::from("OUT.img")));
    }

    #[test]
    fn short_flags() {
        let cli = Cli::try_parse_from([
            "image-creator",
            "-C",
            "-K",
            "-X",
            "-T",
            "8",
            "-D",
            "c.yaml",
            "o.img",
        ])
        .expect("parses");
        assert!(cli.check && cli.keep && cli.overwrite && cli.debug);
        assert_eq!(cli.concurrency, 8);
    }

    #[test]
    fn progress_flags() {
        let cli = Cli::try_parse_from([
            "image-creator",
            "--progress-file",
            "p.json",
            "-q",
            "c.yaml",
            "o.img",
        ])
        .expect("parses");
        assert_eq!(cli.progress_file, Some(PathBuf::from("p.json")));
        assert!(cli.quiet);
    }

    #[test]
    fn network_flags() {
        let cli = Cli::try_parse_from(["image-creator", "c.yaml", "o.img"]).expect("parses");
        assert_eq!(NetworkPolicy::from(cli.network), NetworkPolicy::Private);
        assert!(!cli.allow_local_files && cli.resolve.is_empty());
        let cli = Cli::try_parse_from([
            "image-creator",
            "--network",
            "public",
            "--allow-local-files",
            "--resolve",
            "mirror.lan:10.0.0.5",
            "--resolve",
            "v6.lan:[fd00::5]",
            "c.yaml",
            "o.img",
        ])
        .expect("parses");
        assert_eq!(NetworkPolicy::from(cli.network), NetworkPolicy::Public);
        assert!(cli.allow_local_files);
        assert_eq!(cli.resolve.len(), 2);
        assert_eq!(cli.resolve[0].host, "mirror.lan");
        assert!(Cli::try_parse_from(["image-creator", "--network", "lan", "c", "o"]).is_err());
        assert!(Cli::try_parse_from(["image-creator", "--resolve", "x", "c", "o"]).is_err());
    }

    #[test]
    fn positionals_required_unless_show_cache() {
        assert!(Cli::try_parse_from(["image-creator"]).is_err());
        assert!(Cli::try_parse_from(["image-creator", "--show-cache", "--cache-dir", "c"]).is_ok());
    }
}
