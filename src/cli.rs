//! The command line, compatible with the old image-creator (docs/spec.md §7).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{parse_size, ParseError};
use crate::fetch::{FetchOptions, NetworkPolicy, ResolveOverride};
use crate::output::TorrentOptions;
use crate::pipeline::{BuildOptions, OutputOptions, TrustOptions};

/// `--webseed`: an http(s) URL, kept as written (a final `/` means a
/// directory to BEP 19 clients, so it is not normalised).
fn webseed_url(text: &str) -> Result<String, String> {
    checked_url(text, &["http", "https"], "a web seed")
}

/// `--tracker`: an http(s) or udp announce URL, kept as written.
fn tracker_url(text: &str) -> Result<String, String> {
    checked_url(text, &["http", "https", "udp"], "a tracker")
}

fn checked_url(text: &str, schemes: &[&str], what: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text}: {e}"))?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "{text}: {what} is a {} URL with a host",
            schemes.join(" or ")
        ));
    }
    Ok(text.to_string())
}

/// `--piece-size`: a size (`4MiB`) that is a valid piece length.
fn piece_size(text: &str) -> Result<u64, String> {
    let n = parse_size(text).map_err(|e| e.to_string())?;
    if crate::output::torrent::valid_piece_size(n) {
        Ok(n)
    } else {
        Err(format!(
            "{text}: a piece length is a power of two from 16KiB to 512MiB"
        ))
    }
}

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
///
/// The build is the default: `image-creator [FLAGS] CONFIG_SRC OUTPUT`, as
/// the old tool's command line (docs/spec.md §7). A first argument naming a
/// subcommand runs that instead; once a flag or CONFIG_SRC has been given,
/// every further word is the build's, so `image-creator -D verify out.img`
/// still builds the config `verify`, as it always did.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "image-creator",
    version,
    about,
    long_about = None,
    propagate_version = true,
    // A word after the build's flags or positionals is never a subcommand.
    args_conflicts_with_subcommands = true,
    // CONFIG_SRC and OUTPUT are required of the build only.
    subcommand_negates_reqs = true,
    // `image-creator help OUT.img` builds the config `help`, as before.
    disable_help_subcommand = true,
    override_usage = "image-creator [OPTIONS] <CONFIG_SRC> <OUTPUT>\n       \
                      image-creator --show-cache [--json] --cache-dir <DIR>\n       \
                      image-creator flash [OPTIONS] <SOURCE> <DEVICE>...\n       \
                      image-creator <COMMAND>"
)]
pub struct Cli {
    /// The build's flags and positionals.
    #[command(flatten)]
    pub build: BuildArgs,

    /// A subcommand instead of the build.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The build's flags and positionals (and `--show-cache`).
#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
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

    /// With --show-cache: the same data as JSON, for scripts. With a
    /// build: also write OUTPUT.json (the image's sha256, as rpi-imager's
    /// os-list has it) for a raw OUTPUT, which costs a full read of the
    /// image in step 7 (a compressed OUTPUT and --torrent write it anyway).
    #[arg(long)]
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

    /// Write no OUTPUT.json, even when compressing or with --torrent or
    /// --json, and so don't hash the whole image (SHA-256 covers the
    /// image's holes too: a 1 TB image with little content takes about 9
    /// minutes to hash).
    #[arg(long)]
    pub no_hash: bool,

    /// Also write OUTPUT.torrent (BitTorrent v1, single file) for the file
    /// people download (OUTPUT itself, compressed or not), its pieces
    /// hashed in step 7's read of the image (a full read for a raw
    /// OUTPUT). Writes OUTPUT.json too (unless --no-hash).
    #[arg(long)]
    pub torrent: bool,

    /// With --torrent: a web seed (BEP 19), an http(s) URL of the file, or
    /// of its directory ending in `/`. Repeatable.
    #[arg(long, value_name = "URL", requires = "torrent", value_parser = webseed_url)]
    pub webseed: Vec<String>,

    /// With --torrent: a tracker's announce URL (http, https, udp);
    /// repeatable, each tried in order. None is valid: the web seeds alone
    /// serve the file.
    #[arg(long, value_name = "URL", requires = "torrent", value_parser = tracker_url)]
    pub tracker: Vec<String>,

    /// With --torrent: the piece length, a power of two from 16KiB to
    /// 512MiB. Default: the smallest power of two that makes at most 2,000
    /// pieces, from 16KiB to 16MiB.
    #[arg(long, value_name = "SIZE", requires = "torrent", value_parser = piece_size)]
    pub piece_size: Option<u64>,

    /// Write OUTPUT compressed, in one pass after the build (the raw
    /// image is a temporary file in the build dir). Default: from
    /// OUTPUT's suffix (`.zst`, `.xz`), else `output.compress: true`
    /// (xz).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub compress: Option<CompressArg>,

    /// Upload the finished image (the compressed OUTPUT when compressing)
    /// and its side files to an object store: `s3://bucket/prefix/`,
    /// `gs://`, `az://`, credentials and endpoint from the environment
    /// (`AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, ...). Fed by step 7's pass
    /// (no second read); OUTPUT.json (always written) goes up last. An
    /// existing object needs -X; a failed upload leaves nothing at the key
    /// and keeps OUTPUT.
    #[arg(long, value_name = "URL", conflicts_with = "no_hash")]
    pub publish: Option<String>,

    /// After a successful build, write every input as resolved to FILE
    /// (JSON, docs/lock.md): the base, each file and archive (URL, URL
    /// after redirects, size, sha256, ETag, Last-Modified), each image
    /// (index, manifest and layer digests), the config's sha256, the
    /// tool's version and SOURCE_DATE_EPOCH.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Build exactly the inputs of the lock in FILE: images pulled by
    /// the locked manifest digest, every source checked against its
    /// locked sha256 (a cached copy with it is used without asking the
    /// server), a config with another sha256 refused. A mismatch is
    /// exit 3, naming the item; nothing is left behind.
    #[arg(long, value_name = "FILE")]
    pub locked: Option<PathBuf>,

    /// Sign what the build wrote with the minisign secret key KEY
    /// (unencrypted, or its password in IMAGE_CREATOR_SIGN_PASSWORD):
    /// OUTPUT.SHA256SUMS lists OUTPUT and every side file with its sha256,
    /// OUTPUT.SHA256SUMS.minisig signs it (`minisign -V` checks it, as
    /// does `verify --pubkey`). Hashes the image in step 7 (writes
    /// OUTPUT.json too).
    #[arg(long, value_name = "KEY", conflicts_with = "no_hash")]
    pub sign: Option<PathBuf>,

    /// Also write OUTPUT.spdx.json, an SPDX 2.3 SBOM: the image as the
    /// described package, containing the base, every file, archive and
    /// container image with its SHA-256, download location and (images)
    /// purl. Hashes the image in step 7 (writes OUTPUT.json too).
    #[arg(long, conflicts_with = "no_hash")]
    pub sbom: bool,

    /// Also write OUTPUT.intoto.jsonl: an in-toto Statement v1 with SLSA
    /// provenance v1 (subjects: OUTPUT and its side files by sha256; the
    /// config by digest; every input as a resolved dependency; the
    /// builder and its version; start and end). Hashes the image in step
    /// 7 (writes OUTPUT.json too).
    #[arg(long, conflicts_with = "no_hash")]
    pub provenance: bool,

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

/// The subcommands; the build, the default, has none.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print the `oci_images` entry of an image with its exact sizes.
    ///
    /// `filesize` is the docker-archive tar a build writes; `fullsize` the
    /// regular-file bytes once its layers are extracted (whiteouts applied).
    /// The image is pulled from its registry; nothing is written.
    OciSizes(OciSizesArgs),
    /// Check an image, a compressed image (.zst, .xz) or a device.
    ///
    /// Against a bmap (every mapped range's sha256: the read-back check
    /// after flashing) and/or a config (every file in the data partition
    /// with its size and checksum, offspot.yaml in the boot partition, the
    /// OCI archives). Prints what differs and exits 1, or exits 0.
    Verify(VerifyArgs),
    /// Write an image onto one or more devices at once, and read each back.
    ///
    /// SOURCE is a raw image, a `.zst`/`.xz` image or an http(s) URL of
    /// one; it is read and decoded once for all DEVICEs. Every DEVICE
    /// first passes the refusals of a build onto a device (a partition,
    /// mounted, swap, held, too small, a fixed disk without --force): one
    /// refusal refuses the run before anything is written. A bmap is
    /// --bmap, else SOURCE.bmap beside it when there is one; then only
    /// its ranges are written. Each device's partition table area is
    /// zeroed first and written last; then each is read back past the
    /// page cache and checked. A device that fails is dropped, the others
    /// go on; the exit status is 0 only when every device was written
    /// and verified.
    Flash(FlashArgs),
    /// Print shell completions for image-creator.
    ///
    /// bash: `image-creator completions bash > ~/.local/share/bash-completion/completions/image-creator`;
    /// zsh: into a directory of `$fpath` as `_image-creator`;
    /// fish: `image-creator completions fish > ~/.config/fish/completions/image-creator.fish`.
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout.
    ///
    /// `image-creator man > image-creator.1`, `man -l image-creator.1`.
    Man,
}

/// `oci-sizes`' arguments.
#[derive(Debug, Clone, Args)]
pub struct OciSizesArgs {
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

/// `verify`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// bmaptool block map (e.g. OUTPUT.bmap).
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,

    /// The image's config (path or http(s) URL).
    #[arg(long, value_name = "CONFIG")]
    pub config: Option<String>,

    /// A minisign public key (a `.pub` file or its base64 line): check
    /// that TARGET.SHA256SUMS.minisig is its signature of
    /// TARGET.SHA256SUMS and that every file listed there has its sha256.
    #[arg(long, value_name = "KEY")]
    pub pubkey: Option<PathBuf>,

    /// A lock file (`--lock`'s): every file it names is in the data
    /// partition with its size and sha256.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// The container images' platform (`os/arch[/variant]`), for their
    /// archives' names. Default: the lock's, else linux/arm64/v8.
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// Image, compressed image or block device.
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
}

/// `flash`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct FlashArgs {
    /// bmaptool block map of SOURCE (default: SOURCE.bmap, or for
    /// `X.zst`/`X.xz` also X.bmap, beside it when present).
    #[arg(long, value_name = "FILE")]
    pub bmap: Option<PathBuf>,

    /// Don't read the devices back after writing them.
    #[arg(long)]
    pub no_verify: bool,

    /// DEVICEs may be fixed (non-removable) disks. Removable disks, SD
    /// cards (mmcblk) and loop devices need no --force.
    #[arg(long)]
    pub force: bool,

    /// Seconds to wait for a connection (an http(s) SOURCE).
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub connect_timeout: u64,

    /// Seconds without data before the download is retried.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub idle_timeout: u64,

    /// Attempts per request.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub attempts: u32,

    /// Where requests may go (as for a build).
    #[arg(long, value_enum, value_name = "POLICY", default_value = "private")]
    pub network: Network,

    /// Answer HOST with ADDRESS instead of asking DNS (as for a build).
    #[arg(long, value_name = "HOST:ADDRESS")]
    pub resolve: Vec<ResolveOverride>,

    /// The download cache (as for a build) for an http(s) SOURCE: a hit
    /// is flashed from its blob, a miss is downloaded once into the
    /// devices and the cache.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Keep a JSON snapshot of the progress in PATH (docs/progress.md:
    /// one item per device).
    #[arg(long, value_name = "PATH")]
    pub progress_file: Option<PathBuf>,

    /// No live bars and no history; warnings, errors and the summary only.
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Verbose, timestamped logs on stderr.
    #[arg(short = 'D', long)]
    pub debug: bool,

    /// The image: a path or an http(s) URL; raw, zstd or xz.
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// The devices to write (whole disks: /dev/sdX, /dev/mmcblkN, /dev/loopN).
    #[arg(value_name = "DEVICE", required = true, num_args = 1..)]
    pub devices: Vec<PathBuf>,
}

impl FlashArgs {
    /// The run's options.
    pub fn options(&self) -> crate::flash::FlashOptions {
        crate::flash::FlashOptions {
            source: self.source.clone(),
            devices: self.devices.clone(),
            bmap: self.bmap.clone(),
            verify: !self.no_verify,
            force: self.force,
            cache_dir: self.cache_dir.clone(),
            fetch: FetchOptions {
                connect_timeout: Duration::from_secs(self.connect_timeout),
                idle_timeout: Duration::from_secs(self.idle_timeout),
                max_attempts: self.attempts.max(1),
                network: self.network.into(),
                resolve: self.resolve.clone(),
                ..FetchOptions::default()
            },
        }
    }
}

/// `completions`' argument.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// What the command line asks for, each case with what it needs.
#[derive(Debug, Clone)]
pub enum Action {
    /// Build CONFIG_SRC into OUTPUT (or only plan, with `--check`).
    Build {
        /// CONFIG_SRC.
        config_src: String,
        /// OUTPUT.
        output: PathBuf,
        /// Every flag.
        args: Box<BuildArgs>,
    },
    /// `--show-cache [--json] --cache-dir DIR`.
    ShowCache {
        /// `--cache-dir`.
        cache_dir: PathBuf,
        /// `--json`.
        json: bool,
    },
    /// A subcommand.
    Command(Command),
}

impl Cli {
    /// What to do. The error (a usage error, exit 2, like every error
    /// clap finds) only when `self` was not made by clap from
    /// [`Cli::command`], whose rules already require what each case needs.
    pub fn action(self) -> Result<Action, clap::Error> {
        use clap::CommandFactory;
        let missing = |what: &str| {
            Self::command().error(
                clap::error::ErrorKind::MissingRequiredArgument,
                format!("{what} required"),
            )
        };
        if let Some(c) = self.command {
            return Ok(Action::Command(c));
        }
        let mut args = self.build;
        if args.show_cache {
            let cache_dir = args
                .cache_dir
                .take()
                .ok_or_else(|| missing("--show-cache: --cache-dir is"))?;
            return Ok(Action::ShowCache {
                cache_dir,
                json: args.json,
            });
        }
        match (args.config_src.take(), args.output.take()) {
            (Some(config_src), Some(output)) => Ok(Action::Build {
                config_src,
                output,
                args: Box::new(args),
            }),
            _ => Err(missing("CONFIG_SRC and OUTPUT are")),
        }
    }
}

impl BuildArgs {
    /// The pipeline's options for building `config_src` into `output`;
    /// the error is `--max-size`'s, when it is not a size.
    pub fn options(&self, config_src: String, output: PathBuf) -> Result<BuildOptions, ParseError> {
        let max_size = self.max_size.as_deref().map(parse_size).transpose()?;
        Ok(BuildOptions {
            config_src,
            output,
            build_dir: self.build_dir.clone(),
            check: self.check,
            keep: self.keep,
            overwrite: self.overwrite,
            max_size,
            base_url: self.base_url.clone(),
            concurrency: self.concurrency,
            fetch: FetchOptions {
                connect_timeout: Duration::from_secs(self.connect_timeout),
                idle_timeout: Duration::from_secs(self.idle_timeout),
                max_attempts: self.attempts.max(1),
                network: self.network.into(),
                resolve: self.resolve.clone(),
                ..FetchOptions::default()
            },
            cache_dir: self.cache_dir.clone(),
            allow_local_files: self.allow_local_files,
            output_options: OutputOptions {
                bmap: self.bmap,
                hash: !self.no_hash,
                // The published set includes OUTPUT.json; a signed list
                // needs the image's sha256 (and has OUTPUT.json in it).
                json: self.json
                    || self.publish.is_some()
                    || self.sign.is_some()
                    || self.sbom
                    || self.provenance,
                torrent: self.torrent.then(|| TorrentOptions {
                    webseeds: self.webseed.clone(),
                    trackers: self.tracker.clone(),
                    piece_size: self.piece_size,
                }),
                compress: self.compress.map(Into::into),
                threads: 0,
                force: self.force,
                grow: self.grow,
                publish: self.publish.clone(),
            },
            trust: TrustOptions {
                lock: self.lock.clone(),
                locked: self.locked.clone(),
                sign: self.sign.clone(),
                sbom: self.sbom,
                provenance: self.provenance,
            },
        })
    }
}

impl OciSizesArgs {
    /// The network options of `oci-sizes`.
    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            connect_timeout: Duration::from_secs(self.connect_timeout),
            network: self.network.into(),
            ..FetchOptions::default()
        }
    }
}

/// The whole command line as one clap command (for completions and the
/// man page): the build's options and positionals, and the subcommands.
pub fn documented_command() -> clap::Command {
    use clap::CommandFactory;
    Cli::command()
}

/// Write the completion script of `shell` to `out`. (Made in memory
/// first: `clap_complete` panics when its writer fails, a closed pipe
/// say; `out`'s error is returned.)
pub fn write_completions(
    shell: clap_complete::Shell,
    out: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    let mut cmd = documented_command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "image-creator", &mut script);
    out.write_all(&script)?;
    out.flush()
}

/// Write the man page (section 1, roff) to `out`.
pub fn write_man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(documented_command()).render(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Action, clap::Error> {
        let argv = std::iter::once("image-creator").chain(args.iter().copied());
        Cli::try_parse_from(argv)?.action()
    }

    /// The build's (CONFIG_SRC, OUTPUT, flags), or a panic naming `args`.
    fn build(args: &[&str]) -> (String, PathBuf, BuildArgs) {
        match parse(args) {
            Ok(Action::Build {
                config_src,
                output,
                args: flags,
            }) => (config_src, output, *flags),
            other => panic!("{args:?}: not a build: {other:?}"),
        }
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        match parse(args) {
            Err(e) => e,
            Ok(a) => panic!("{args:?} parsed: {a:?}"),
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        documented_command().debug_assert();
    }

    #[test]
    fn production_command_line_parses() {
        let (config, output, flags) = build(&[
            "--max-size",
            "1TB",
            "--debug",
            "--cache-dir",
            "C",
            "--build-dir",
            "B",
            "CONFIG.yaml",
            "OUT.img",
        ]);
        assert_eq!(
            (config.as_str(), output.to_str()),
            ("CONFIG.yaml", Some("OUT.img"))
        );
        assert!(flags.debug);
        let opts = flags
            .options(config, output)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opts.max_size, Some(1_000_000_000_000));
        assert_eq!(opts.cache_dir, Some(PathBuf::from("C")));
        assert_eq!(opts.build_dir, Some(PathBuf::from("B")));
        assert_eq!(
            (opts.config_src.as_str(), opts.output.to_str()),
            ("CONFIG.yaml", Some("OUT.img"))
        );
        assert!(opts.output_options.hash && !opts.check && !opts.keep && !opts.overwrite);
    }

    #[test]
    fn flags_before_and_after_the_positionals() {
        let (config, output, flags) = build(&["c.yaml", "-X", "o.img", "--debug", "-T", "2"]);
        assert_eq!(
            (config.as_str(), output.to_str()),
            ("c.yaml", Some("o.img"))
        );
        assert!(flags.overwrite && flags.debug);
        assert_eq!(flags.concurrency, 2);
    }

    #[test]
    fn short_flags() {
        let (_, _, flags) = build(&["-C", "-K", "-X", "-T", "8", "-D", "-q", "c.yaml", "o.img"]);
        assert!(flags.check && flags.keep && flags.overwrite && flags.debug && flags.quiet);
        assert_eq!(flags.concurrency, 8);
    }

    #[test]
    fn output_and_timeout_flags_reach_the_options() {
        let (config, output, flags) = build(&[
            "--progress-file",
            "p.json",
            "--no-hash",
            "--bmap",
            "--compress",
            "zstd",
            "--force",
            "--grow",
            "--connect-timeout",
            "7",
            "--idle-timeout",
            "9",
            "--attempts",
            "0",
            "c.yaml",
            "o.img",
        ]);
        assert_eq!(flags.progress_file, Some(PathBuf::from("p.json")));
        let opts = flags
            .options(config, output)
            .unwrap_or_else(|e| panic!("{e}"));
        let o = &opts.output_options;
        assert!(!o.hash && o.bmap && o.force && o.grow);
        assert!(matches!(
            o.compress,
            Some(crate::output::Compression::Zstd { level: 3 })
        ));
        assert_eq!(opts.fetch.connect_timeout, Duration::from_secs(7));
        assert_eq!(opts.fetch.idle_timeout, Duration::from_secs(9));
        assert_eq!(opts.fetch.max_attempts, 1, "--attempts 0 still tries once");
    }

    #[test]
    fn torrent_flags() {
        let (config, output, flags) = build(&[
            "--torrent",
            "--webseed",
            "https://mirror.example/images/",
            "--webseed",
            "http://m2.example/o.img",
            "--tracker",
            "udp://tracker.example:6969/announce",
            "--piece-size",
            "4MiB",
            "c.yaml",
            "o.img",
        ]);
        let opts = flags
            .options(config, output)
            .unwrap_or_else(|e| panic!("{e}"));
        let t = opts.output_options.torrent.clone().expect("--torrent");
        assert_eq!(
            t.webseeds,
            ["https://mirror.example/images/", "http://m2.example/o.img"]
        );
        assert_eq!(t.trackers, ["udp://tracker.example:6969/announce"]);
        assert_eq!(t.piece_size, Some(4 << 20));
        assert!(opts.output_options.writes_json(false));
        // --no-hash wins over what needs the json.
        let (config, output, flags) = build(&["--torrent", "--no-hash", "c", "o"]);
        let opts = flags
            .options(config, output)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!opts.output_options.writes_json(true));
        for bad in [
            &["--piece-size", "48KiB", "--torrent", "c", "o"][..],
            &["--piece-size", "8KiB", "--torrent", "c", "o"],
            &["--piece-size", "1GiB", "--torrent", "c", "o"],
            &["--webseed", "ftp://x/y", "--torrent", "c", "o"],
            &["--webseed", "not a url", "--torrent", "c", "o"],
            &["--tracker", "file:///x", "--torrent", "c", "o"],
            // Torrent options without --torrent.
            &["--webseed", "http://x/", "c", "o"],
            &["--piece-size", "1MiB", "c", "o"],
        ] {
            assert_eq!(usage_error(bad).exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn json_is_written_only_when_an_output_needs_it() {
        let plain = build(&["c", "o"]).2.options("c".into(), "o".into());
        let o = plain.map(|p| p.output_options).unwrap_or_default();
        assert!(!o.writes_json(false), "a plain raw build reads nothing");
        assert!(
            o.writes_json(true),
            "a compressed build has a download to describe"
        );
        let bmap = build(&["--bmap", "c", "o"])
            .2
            .options("c".into(), "o".into());
        let o = bmap.map(|p| p.output_options).unwrap_or_default();
        assert!(!o.writes_json(false), "--bmap hashes its ranges only");
    }

    #[test]
    fn publish_takes_a_url_and_needs_the_hashes() {
        let (config, output, flags) = build(&["--publish", "s3://b/p/", "c.yaml", "o.img"]);
        let opts = flags
            .options(config, output)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(opts.output_options.publish.as_deref(), Some("s3://b/p/"));
        assert!(
            opts.output_options.writes_json(false),
            "OUTPUT.json is published"
        );
        let e = usage_error(&["--publish", "s3://b/p/", "--no-hash", "c", "o"]);
        assert_eq!(e.kind(), ErrorKind::ArgumentConflict);
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn a_bad_max_size_is_the_options_error() {
        let (config, output, flags) = build(&["--max-size", "lots", "c.yaml", "o.img"]);
        let e = flags
            .options(config, output)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("lots"), "{e}");
    }

    #[test]
    fn network_flags() {
        let (_, _, flags) = build(&["c.yaml", "o.img"]);
        assert_eq!(NetworkPolicy::from(flags.network), NetworkPolicy::Private);
        assert!(!flags.allow_local_files && flags.resolve.is_empty());
        let (_, _, flags) = build(&[
            "--network",
            "public",
            "--allow-local-files",
            "--resolve",
            "mirror.lan:10.0.0.5",
            "--resolve",
            "v6.lan:[fd00::5]",
            "c.yaml",
            "o.img",
        ]);
        assert_eq!(NetworkPolicy::from(flags.network), NetworkPolicy::Public);
        assert!(flags.allow_local_files);
        assert_eq!(flags.resolve.len(), 2);
        assert_eq!(flags.resolve[0].host, "mirror.lan");
        assert_eq!(
            usage_error(&["--network", "lan", "c", "o"]).kind(),
            ErrorKind::InvalidValue
        );
        assert!(parse(&["--resolve", "x", "c", "o"]).is_err());
    }

    #[test]
    fn positionals_are_required_unless_show_cache() {
        for args in [&[][..], &["c.yaml"], &["-D", "c.yaml"]] {
            let e = usage_error(args);
            assert_eq!(e.kind(), ErrorKind::MissingRequiredArgument, "{args:?}");
            assert_eq!(e.exit_code(), 2, "{args:?}: a usage error exits 2");
        }
        match parse(&["--show-cache", "--json", "--cache-dir", "c"]) {
            Ok(Action::ShowCache { cache_dir, json }) => {
                assert_eq!(cache_dir, PathBuf::from("c"));
                assert!(json);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["--show-cache", "--cache-dir", "c", "x.yaml", "o.img"]),
            Ok(Action::ShowCache { json: false, .. })
        ));
        let e = usage_error(&["--show-cache"]);
        assert_eq!(e.exit_code(), 2);
        // With a build, --json asks for OUTPUT.json.
        let (config, output, flags) = build(&["--json", "c", "o"]);
        let opts = flags
            .options(config, output)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(opts.output_options.json && opts.output_options.torrent.is_none());
    }

    #[test]
    fn subcommands_parse() {
        match parse(&[
            "verify",
            "--bmap",
            "o.img.bmap",
            "o.img",
            "--config",
            "c.yaml",
        ]) {
            Ok(Action::Command(Command::Verify(v))) => {
                assert_eq!(v.target, PathBuf::from("o.img"));
                assert_eq!(v.bmap, Some(PathBuf::from("o.img.bmap")));
                assert_eq!(v.config.as_deref(), Some("c.yaml"));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["oci-sizes", "--platform", "linux/amd64", "ghcr.io/a/b:1"]) {
            Ok(Action::Command(Command::OciSizes(o))) => {
                assert_eq!(o.ident, "ghcr.io/a/b:1");
                assert_eq!(o.platform, "linux/amd64");
                assert_eq!(NetworkPolicy::from(o.network), NetworkPolicy::Private);
                assert_eq!(o.fetch_options().connect_timeout, Duration::from_secs(30));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["completions", "zsh"]),
            Ok(Action::Command(Command::Completions(CompletionsArgs {
                shell: clap_complete::Shell::Zsh
            })))
        ));
        assert!(matches!(parse(&["man"]), Ok(Action::Command(Command::Man))));
        match parse(&[
            "flash",
            "img.zst",
            "/dev/loop1",
            "--no-verify",
            "/dev/loop2",
            "--bmap",
            "b.bmap",
        ]) {
            Ok(Action::Command(Command::Flash(f))) => {
                let o = f.options();
                assert_eq!(o.source, "img.zst");
                assert_eq!(
                    o.devices,
                    [PathBuf::from("/dev/loop1"), PathBuf::from("/dev/loop2")]
                );
                assert_eq!(o.bmap, Some(PathBuf::from("b.bmap")));
                assert!(!o.verify && !o.force);
                assert_eq!(o.fetch.network, NetworkPolicy::Private);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &["flash"][..],
            &["flash", "img.zst"],
            &["verify"],
            &["completions", "tcsh"],
            &["oci-sizes"],
            &["man", "x"],
        ] {
            assert_eq!(usage_error(bad).exit_code(), 2, "{bad:?}");
        }
    }

    /// A word after a build flag or CONFIG_SRC is the build's, as in the
    /// old tool (which had no subcommands at all); `help` is no subcommand.
    #[test]
    fn later_words_are_never_subcommands() {
        let (config, output, flags) = build(&["-D", "verify", "o.img"]);
        assert_eq!(
            (config.as_str(), output.to_str(), flags.debug),
            ("verify", Some("o.img"), true)
        );
        let (config, output, _) = build(&["c.yaml", "man"]);
        assert_eq!((config.as_str(), output.to_str()), ("c.yaml", Some("man")));
        let (config, _, _) = build(&["help", "o.img"]);
        assert_eq!(config, "help");
        let (config, _, _) = build(&["--", "verify", "o.img"]);
        assert_eq!(config, "verify");
    }

    #[test]
    fn help_and_version_exit_0() {
        for (args, kind) in [
            (&["--help"][..], ErrorKind::DisplayHelp),
            (&["-V"], ErrorKind::DisplayVersion),
            (&["verify", "--help"], ErrorKind::DisplayHelp),
            (&["oci-sizes", "--version"], ErrorKind::DisplayVersion),
            (&["flash", "--help"], ErrorKind::DisplayHelp),
        ] {
            let e = usage_error(args);
            assert_eq!((e.kind(), e.exit_code()), (kind, 0), "{args:?}");
        }
    }
}
