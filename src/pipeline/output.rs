//! Step 7: what a build hands over besides the image's blocks
//! (docs/spec.md §10). The output format is decided up front
//! ([`resolve_compression`]); a compressed build writes its raw image to
//! an unnamed temporary file in the build dir ([`RawImage`]), which goes
//! away with its descriptor, whatever ends the build. [`finish`] makes
//! the one sequential pass over the finished raw image
//! ([`crate::output::run_pass`]): the compressed OUTPUT, the hashes of
//! `OUTPUT.json`, the range hashes of `OUTPUT.bmap`. The side files are
//! published like the image, right after it, under the same lock
//! ([`super::cleanup::PendingOutput::commit_with`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::BuildError;
use super::unnamed;
use crate::config::ImageConfig;
use crate::output::pass::Tee;
use crate::output::{map_image, run_pass, Bmap, Compression, ImageUpload};

/// zstd level of compressed outputs (zstd's default).
pub const ZSTD_LEVEL: i32 = 3;
/// xz preset of compressed outputs (xz's default).
pub const XZ_PRESET: u32 = 6;

/// The compression of OUTPUT: `--compress`, else OUTPUT's suffix
/// (`.zst`, `.xz`), else `output.compress: true` (xz, as the old tool's
/// key meant). A `--compress` that contradicts the suffix is refused.
pub fn resolve_compression(
    flag: Option<Compression>,
    output: &Path,
    config: &ImageConfig,
) -> Result<Option<Compression>, BuildError> {
    let name = output.to_string_lossy();
    let by_name = if name.ends_with(".zst") {
        Some(Compression::Zstd { level: ZSTD_LEVEL })
    } else if name.ends_with(".xz") {
        Some(Compression::Xz { preset: XZ_PRESET })
    } else {
        None
    };
    match (flag, by_name) {
        (Some(f), Some(n)) if f.suffix() != n.suffix() => Err(BuildError::Usage(format!(
            "--compress {} contradicts the name of OUTPUT {}",
            &f.suffix()[1..],
            output.display()
        ))),
        (Some(f), _) => Ok(Some(f)),
        (None, Some(n)) => Ok(Some(n)),
        (None, None) if config.compress => Ok(Some(Compression::Xz { preset: XZ_PRESET })),
        (None, None) => Ok(None),
    }
}

/// `OUTPUT` + `suffix` (`.bmap`, `.json`).
pub fn side_path(output: &Path, suffix: &str) -> PathBuf {
    let mut s = output.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The raw image of a compressed build: unnamed in the build dir where
/// the platform allows, else a temporary name there removed when dropped.
pub struct RawImage {
    file: File,
    reopen: PathBuf,
    _named: Option<tempfile::TempPath>,
}

impl RawImage {
    /// A new empty raw image in `dir`.
    pub fn create(dir: &Path) -> Result<Self, BuildError> {
        let err = |source| BuildError::OutputCreate {
            path: dir.to_path_buf(),
            source,
        };
        if let Some(file) = unnamed::create(dir) {
            let reopen = unnamed::proc_path(&file);
            return Ok(Self {
                file,
                reopen,
                _named: None,
            });
        }
        let named = tempfile::Builder::new()
            .prefix(".image-creator-raw-")
            .tempfile_in(dir)
            .map_err(err)?;
        let (file, path) = named.into_parts();
        Ok(Self {
            file,
            reopen: path.to_path_buf(),
            _named: Some(path),
        })
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// A path that opens it.
    pub fn reopen_path(&self) -> &Path {
        &self.reopen
    }
}

/// The side files (path, contents), published with the image
/// ([`super::cleanup::PendingOutput::commit_with`]).
#[derive(Debug, Default)]
pub struct SideFiles {
    /// `OUTPUT.bmap` (with `--bmap`) and `OUTPUT.json`.
    pub files: Vec<(PathBuf, String)>,
    /// `--publish`: the download file's upload, fed by the pass, completed
    /// (with the side files) once OUTPUT is published.
    pub upload: Option<ImageUpload>,
}

/// What step 7 makes.
pub struct Finish<'a> {
    /// The finished raw image.
    pub raw: &'a File,
    /// Its path for messages.
    pub raw_name: &'a Path,
    /// Its size.
    pub len: u64,
    /// OUTPUT.
    pub output: &'a Path,
    /// The compressed OUTPUT and how, when compressed.
    pub compressed: Option<(&'a File, Compression)>,
    /// `--bmap`.
    pub bmap: bool,
    /// Hash the image and write `OUTPUT.json` (not with `--no-hash`).
    pub hash: bool,
    /// Encoder threads.
    pub threads: u32,
    /// Make the raw image durable (`fsync`) during the pass: the raw
    /// OUTPUT's writeback overlaps its hashing.
    pub sync_raw: bool,
}

/// Step 7: the pass (the download file's bytes also to `tee`), then the
/// side files under temporary names.
pub fn finish(f: &Finish<'_>, tee: Option<Tee<'_>>) -> Result<SideFiles, BuildError> {
    let io = |source: std::io::Error| BuildError::OutputPass {
        path: f.output.to_path_buf(),
        source,
    };
    let map = if f.bmap {
        let file = Arc::new(f.raw.try_clone().map_err(io)?);
        Some(map_image(&file, f.raw_name, f.len).map_err(io)?)
    } else {
        None
    };
    // Step 7 is not an item: the items and their total are fixed once
    // planning ends (docs/progress.md).
    let progress = |_: u64| {};
    let pass = std::thread::scope(|s| {
        let sync = f.sync_raw.then(|| s.spawn(|| f.raw.sync_all()));
        let pass = run_pass(
            f.raw,
            f.len,
            map.as_ref().map(|m| &m.ranges),
            f.compressed,
            f.threads,
            f.hash,
            &progress,
            tee,
        );
        if let Some(h) = sync {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")))?;
        }
        pass
    })
    .map_err(io)?;
    if let Some((c, _)) = f.compressed {
        c.sync_all().map_err(io)?;
    }
    let mut files = Vec::new();
    if f.bmap {
        let bmap = Bmap {
            image_size: f.len,
            block_size: crate::output::bmap::BLOCK,
            ranges: pass.ranges.clone(),
        };
        files.push((side_path(f.output, ".bmap"), bmap.render()));
    }
    if f.hash {
        let json = crate::output::meta::OsListEntry::from(&pass).to_json();
        files.push((side_path(f.output, ".json"), json));
    }
    Ok(SideFiles {
        files,
        upload: None,
    })
}
