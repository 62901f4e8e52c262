//! What OUTPUT is, decided once in step 1 from its path and the flags
//! ([`Target::decide`]), and the image being written once it is opened
//! ([`Opened`], after planning). Every later step asks these what to do;
//! no "is it a device?" boolean travels through the run.
//!
//! | target | the image steps 3-6 write | step 7 | published |
//! |---|---|---|---|
//! | [`Target::File`] | OUTPUT (unnamed until published) | `fsync`; one pass only when an output needs it: hashes, bmap, torrent | OUTPUT + side files |
//! | [`Target::Compressed`] | an unnamed raw file in the build dir | one pass: hashes, bmap, the encoder into OUTPUT, torrent | OUTPUT + side files |
//! | [`Target::Device`] | the device (the base staged in the build dir first) | zeros the image needs and nothing wrote, then the MBR | nothing to publish |

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cleanup::{self, Claim, OutputPolicy, PendingOutput};
use super::device::{self, Device};
use super::error::BuildError;
use super::output::{self, RawImage, SideFiles};
use super::planning::Planned;
use super::BuildOptions;
use crate::config::{ImageConfig, OutputSize};
use crate::output::{Compression, FileSpans, Publisher};
use crate::partition::WriteLog;
use crate::plan::{BaseInfo, Plan};
use crate::progress::Reporter;

/// What OUTPUT is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A raw image file: OUTPUT itself.
    File,
    /// A compressed image file (`.zst`, `.xz`, `--compress`,
    /// `output.compress`): the raw image is an unnamed file in the build
    /// dir, compressed into OUTPUT in step 7.
    Compressed(Compression),
    /// A block device: the build writes onto it.
    Device,
}

/// Where a build keeps its files besides the image.
#[derive(Debug)]
pub struct Dirs {
    /// Where OUTPUT's lock goes: OUTPUT's directory, or for a device the
    /// build dir (nothing is written beside a device).
    pub lock: PathBuf,
    /// Temporary space (`--build-dir`, default: the lock's directory).
    pub build: PathBuf,
}

impl Target {
    /// Decide what OUTPUT is and refuse, before any work, what can't be
    /// done to it: an existing file without `-X`, a missing directory,
    /// options a device can't take, an unusable device. `--grow` sets the
    /// image size to the device's here.
    pub fn decide(
        opts: &BuildOptions,
        config: &mut ImageConfig,
    ) -> Result<(Self, Dirs), BuildError> {
        let o = &opts.output_options;
        let on_device = device::is_block_device(&opts.output);
        let target = if on_device {
            refuse_on_device(o, &opts.trust, &opts.output)?;
            Self::Device
        } else {
            match output::resolve_compression(o.compress, &opts.output, config)? {
                Some(c) => Self::Compressed(c),
                None => Self::File,
            }
        };
        if o.torrent.is_some() {
            output::torrent_name(&opts.output)?;
        }
        if o.grow && target != Self::Device {
            return Err(BuildError::Usage(
                "--grow needs a block device as OUTPUT".into(),
            ));
        }
        let lock = if target == Self::Device {
            let dir = opts.build_dir.clone().unwrap_or_else(std::env::temp_dir);
            std::fs::create_dir_all(&dir).map_err(|source| BuildError::BuildDir {
                path: dir.clone(),
                source,
            })?;
            device::check_usable(&opts.output, o.force)?;
            if o.grow {
                config.output_size =
                    OutputSize::Bytes(device::size(&opts.output)? / (1 << 20) * (1 << 20));
            }
            dir
        } else {
            check_output(opts)?
        };
        let build = opts.build_dir.clone().unwrap_or_else(|| lock.clone());
        Ok((target, Dirs { lock, build }))
    }

    /// One build per OUTPUT, decided before any work: OUTPUT's lock, or
    /// `None` for `--check` (which writes nothing, so takes no lock).
    pub fn claim(self, opts: &BuildOptions, dirs: &Dirs) -> Result<Option<Claim>, BuildError> {
        if opts.check {
            return Ok(None);
        }
        let claim = cleanup::claim(&opts.output, &dirs.lock, &dirs.build)?;
        // Checked again under the lock: a build that held it may just have
        // finished this very OUTPUT.
        if self != Self::Device {
            check_output(opts)?;
        }
        Ok(Some(claim))
    }

    /// The planned image fits: on the device, and in the free space of
    /// the directories it is written to.
    pub fn check_room(
        self,
        opts: &BuildOptions,
        dirs: &Dirs,
        planned: &Planned,
    ) -> Result<(), BuildError> {
        let plan = &planned.plan;
        if self == Self::Device {
            let have = device::size(&opts.output)?;
            if have < plan.image_size {
                return Err(BuildError::DeviceRefused {
                    path: opts.output.clone(),
                    why: format!(
                        "{have} bytes, too small for the image of {} bytes",
                        plan.image_size
                    ),
                });
            }
        }
        check_free_space(&dirs.lock, plan)?;
        if let Self::Compressed(_) = self {
            // The raw image in the build dir, and the compressed one beside
            // OUTPUT (at worst as large).
            check_free_space(&dirs.build, plan)?;
        }
        Ok(())
    }

    /// Open the image to write, under `claim`.
    pub fn open(
        self,
        claim: Claim,
        opts: &BuildOptions,
        dirs: &Dirs,
    ) -> Result<Opened, BuildError> {
        let policy = OutputPolicy {
            overwrite: opts.overwrite,
            keep: opts.keep,
        };
        Ok(match self {
            Self::File => Opened::File {
                out: PendingOutput::create(claim, policy)?,
            },
            Self::Compressed(how) => {
                let out = PendingOutput::create(claim, policy)?;
                // (On failure the output is abandoned when `out` drops.)
                let raw = RawImage::create(&dirs.build)?;
                Opened::Compressed { out, raw, how }
            }
            Self::Device => {
                let dev = Device::open(&opts.output)?;
                let staged = RawImage::create(&dirs.build)?;
                Opened::Device {
                    dev,
                    staged,
                    _claim: claim,
                }
            }
        })
    }
}

/// The image being written, with what publishing it needs.
// One per build, never moved in a loop: the size gap between variants
// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    /// A raw OUTPUT.
    File {
        /// OUTPUT, unnamed until published.
        out: PendingOutput,
    },
    /// A compressed OUTPUT.
    Compressed {
        /// OUTPUT (the compressed file), unnamed until published.
        out: PendingOutput,
        /// The raw image, in the build dir.
        raw: RawImage,
        /// How it is compressed.
        how: Compression,
    },
    /// A block device.
    Device {
        /// The device, opened exclusively, its partition tables zeroed.
        dev: Device,
        /// The base image, staged in the build dir.
        staged: RawImage,
        /// OUTPUT's lock (in the build dir), held until the end.
        _claim: Claim,
    },
}

/// Where steps 4 and 5 write: the image file or the device, and the log
/// of a device's writes.
pub struct Image {
    /// The file.
    pub file: Arc<File>,
    /// Told of every write to p1 and p3 (a device).
    pub log: Option<Arc<dyn WriteLog>>,
}

impl Opened {
    /// Where step 3 copies the base (the image itself, or on a device a
    /// staging file), and a path that opens it again.
    pub fn staging(&self) -> (&File, &Path) {
        match self {
            Self::File { out } => (out.file(), out.reopen_path()),
            Self::Compressed { raw, .. } => (raw.file(), raw.reopen_path()),
            Self::Device { staged, .. } => (staged.file(), staged.reopen_path()),
        }
    }

    /// After the base copy: the image the next steps write. A file is
    /// given the plan's size; a device gets every mapped block of the
    /// staged base, zeros included, MBR aside.
    pub fn lay_out(
        &self,
        opts: &BuildOptions,
        base: &BaseInfo,
        plan: &Plan,
    ) -> Result<Image, BuildError> {
        let (staged, _) = self.staging();
        let io = |what: String, source| BuildError::OutputIo {
            path: opts.output.clone(),
            what,
            source,
        };
        match self {
            Self::Device { dev, staged, .. } => {
                // The staged base's blocks onto the device (its skipped
                // zero tail included: the size says so).
                let len = staged
                    .file()
                    .metadata()
                    .map_err(|e| io("reading the staged base's length".into(), e))?
                    .len();
                if len < base.size {
                    staged.file().set_len(base.size).map_err(|e| {
                        io(format!("extending the staged base to {}", base.size), e)
                    })?;
                }
                dev.copy_base(staged.file(), staged.reopen_path(), base.size)?;
                Ok(Image {
                    file: dev.file.clone(),
                    log: Some(dev.write_log()),
                })
            }
            Self::File { .. } | Self::Compressed { .. } => {
                staged
                    .set_len(plan.image_size)
                    .map_err(|e| io(format!("setting its length to {}", plan.image_size), e))?;
                let file = staged
                    .try_clone()
                    .map_err(|e| io("opening it again".into(), e))?;
                Ok(Image {
                    file: Arc::new(file),
                    log: None,
                })
            }
        }
    }

    /// Step 6: the partition table. A file gets it now (synced in step 7
    /// while it is hashed, or not at all for the temporary raw image of a
    /// compressed OUTPUT, which is synced instead); a device keeps it for
    /// last, after step 7's zeros.
    pub fn write_table(&self, opts: &BuildOptions, mbr: [u8; 512]) -> Result<(), BuildError> {
        match self {
            Self::Device { dev, .. } => {
                dev.set_mbr(mbr);
                Ok(())
            }
            Self::File { .. } | Self::Compressed { .. } => self
                .staging()
                .0
                .write_all_at(&mbr, 0)
                .map_err(|source| BuildError::OutputIo {
                    path: opts.output.clone(),
                    what: "writing the partition table at byte 0".into(),
                    source,
                }),
        }
    }

    /// Whether step 7 will read the finished image (a file OUTPUT that is
    /// compressed, or hashed, mapped or torrented: see
    /// [`output::finish`]).
    pub fn pass_reads(&self, opts: &BuildOptions) -> bool {
        let o = &opts.output_options;
        match self {
            Self::Device { .. } => false,
            Self::File { .. } => o.writes_json(false) || o.bmap,
            Self::Compressed { .. } => true,
        }
    }

    /// Step 7: the output pass and the side files (files), or the device's
    /// zeros and partition table. With `publisher`, the download file's
    /// upload is fed by the pass (and aborted if the pass fails).
    pub fn finish(
        &self,
        opts: &BuildOptions,
        plan: &Plan,
        publisher: Option<&Publisher>,
        files: Vec<FileSpans>,
        reporter: &dyn Reporter,
    ) -> Result<SideFiles, BuildError> {
        let o = &opts.output_options;
        let threads = match o.threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
            n => n,
        };
        let (raw, raw_name, compressed) = match self {
            Self::Device { dev, .. } => {
                dev.finish(plan.image_size)?;
                return Ok(SideFiles::default());
            }
            Self::File { out } => (out.file(), out.reopen_path(), None),
            Self::Compressed { out, raw, how } => {
                (raw.file(), raw.reopen_path(), Some((out.file(), *how)))
            }
        };
        let mut upload = publisher
            .map(|p| p.start(plan.image_size, &opts.output, reporter))
            .transpose()?;
        let finished = output::finish(
            &output::Finish {
                raw,
                raw_name,
                len: plan.image_size,
                output: &opts.output,
                compressed,
                sync_raw: compressed.is_none(),
                bmap: o.bmap,
                json: o.writes_json(compressed.is_some()),
                torrent: o.torrent.as_ref(),
                files: &files,
                threads,
                reporter,
            },
            upload.as_mut(),
        );
        match finished {
            Ok(sides) => Ok(SideFiles { upload, ..sides }),
            Err(e) => {
                if let Some(u) = upload {
                    u.abort(reporter);
                }
                Err(e)
            }
        }
    }

    /// Publish OUTPUT and its side files, then (`--publish`) complete
    /// their upload. A device has nothing to publish; its lock is
    /// released.
    pub fn publish(self, sides: SideFiles, reporter: &dyn Reporter) -> Result<(), BuildError> {
        let (local, size) =
            match self {
                Self::Device { .. } => (Ok(()), Ok(0)),
                Self::File { out } | Self::Compressed { out, .. } => {
                    // The size of the file the upload was fed, for its check.
                    let size = out.file().metadata().map(|m| m.len()).map_err(|source| {
                        BuildError::OutputIo {
                            path: out.reopen_path().to_path_buf(),
                            what: "reading its size".into(),
                            source,
                        }
                    });
                    (out.commit_with(&sides.files), size)
                }
            };
        let Some(upload) = sides.upload else {
            return local;
        };
        let size = match local.and(size) {
            Ok(n) => n,
            Err(e) => {
                upload.abort(reporter);
                return Err(e);
            }
        };
        upload.complete(size, &sides.files, &cleanup::SIDE_SUFFIXES, reporter)?;
        Ok(())
    }

    /// A failed build: remove OUTPUT (unless `--keep`: see
    /// [`PendingOutput::abandon`]). A device is left without a partition
    /// table (zeroed when it was opened).
    pub fn abandon(self) {
        match self {
            Self::Device { .. } => {}
            Self::File { out } | Self::Compressed { out, .. } => out.abandon(),
        }
    }
}

/// What a block device can't take: a bmap, compression, a torrent and
/// `OUTPUT.json` are for image files; `--publish` uploads a file (and a device is written in place,
/// with no pass over the image to feed an upload).
fn refuse_on_device(
    o: &super::OutputOptions,
    trust: &super::TrustOptions,
    output: &Path,
) -> Result<(), BuildError> {
    let (sign, sbom, prov) = (trust.sign.is_some(), trust.sbom, trust.provenance);
    let mut refused = Vec::new();
    if o.bmap {
        refused.push("--bmap");
    }
    if o.compress.is_some() {
        refused.push("--compress");
    }
    if o.torrent.is_some() {
        refused.push("--torrent");
    }
    // (`--publish`, `--sign` and `--sbom` set `json`: their sets hold
    // OUTPUT.json.)
    if o.json && o.publish.is_none() && !sign && !sbom && !prov {
        refused.push("--json");
    }
    if sign {
        refused.push("--sign");
    }
    if sbom {
        refused.push("--sbom");
    }
    if prov {
        refused.push("--provenance");
    }
    if o.publish.is_some() {
        refused.push("--publish");
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(BuildError::Usage(format!(
        "{} is a block device: {} are for image files",
        output.display(),
        refused.join(", ")
    )))
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

/// The image needs what planning counted it allocates (the base's first
/// partitions and the content, holes as holes: src/plan/disk.rs).
fn check_free_space(dir: &Path, plan: &Plan) -> Result<(), BuildError> {
    let needed = plan.disk.bytes;
    if let Ok(st) = rustix::fs::statvfs(dir) {
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        if free < needed {
            return Err(BuildError::NoSpace {
                dir: dir.to_path_buf(),
                free,
                needed,
                image_size: plan.image_size,
                holes: plan.disk.holes,
            });
        }
    }
    Ok(())
}
