//! Step 7: what a build hands over besides the image's blocks
//! (docs/spec.md §10). The output format is decided up front
//! ([`resolve_compression`]); a compressed build writes its raw image to
//! an unnamed temporary file in the build dir ([`RawImage`]), which goes
//! away with its descriptor, whatever ends the build. [`finish`] makes
//! the one sequential pass over the finished raw image
//! ([`crate::output::run_pass`]), reading only when an output needs it:
//! the compressed OUTPUT, the hashes of `OUTPUT.json`, the range hashes
//! of `OUTPUT.bmap`, the pieces of `OUTPUT.torrent`. The side files are
//! published like the image, right after it, under the same lock
//! ([`super::cleanup::PendingOutput::commit_with`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::BuildError;
use super::unnamed;
use crate::config::ImageConfig;
use crate::fs::ext4::Timestamp;
use crate::output::{
    map_image, piece_length, run_pass, Bmap, Compress, Compression, DownloadSink, FileHashes,
    FileSpans, ImageUpload, Pass, Pieces, Torrent, TorrentOptions,
};
use crate::progress::Reporter;

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

/// `OUTPUT` + `suffix` (`.bmap`, `.json`, `.torrent`).
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
    /// `OUTPUT.bmap`, `OUTPUT.torrent`, `OUTPUT.json`, those asked for.
    pub files: Vec<(PathBuf, Vec<u8>)>,
    /// `--publish`: the download file's upload, fed by the pass, completed
    /// (with the side files) once OUTPUT is published.
    pub upload: Option<ImageUpload>,
    /// The download file's (OUTPUT's) sha256, when the pass hashed it
    /// (what `--sign`'s list names it with).
    pub download_sha256: Option<String>,
    /// The download file's size, when the pass read it.
    pub download_size: Option<u64>,
    /// The sha256 of each file of [`Finish::files`], by item name.
    pub file_sha256: Vec<(String, String)>,
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
    /// Hash the image and write `OUTPUT.json`
    /// ([`super::OutputOptions::writes_json`]).
    pub json: bool,
    /// `--torrent`.
    pub torrent: Option<&'a TorrentOptions>,
    /// Files of the image to hash for a recorded build (its downloads
    /// that declared no checksum: [`crate::output::FileHashes`]).
    pub files: &'a [FileSpans],
    /// Encoder threads.
    pub threads: u32,
    /// Make the raw image durable (`fsync`) during the pass: the raw
    /// OUTPUT's writeback overlaps its hashing.
    pub sync_raw: bool,
    /// Step 7's progress goes here.
    pub reporter: &'a dyn Reporter,
}

/// Step 7: the pass (the download file's bytes also to `upload`, with
/// `--publish`), then the side files under temporary names.
pub fn finish(f: &Finish<'_>, upload: Option<&mut ImageUpload>) -> Result<SideFiles, BuildError> {
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
    let mut pieces = match f.torrent {
        Some(t) => Some(Pieces::new(match t.piece_size {
            Some(p) => p,
            None => piece_length(download_estimate(f).map_err(io)?),
        })),
        None => None,
    };
    let uploads = upload.is_some();
    let mut uploading = upload.map(|upload| Uploading {
        upload,
        reporter: f.reporter,
    });
    // Spans that can't be hashed in one forward read are a bug of the
    // data step, which only defers files laid out in image order.
    let mut file_hashes = match f.files {
        [] => None,
        files => Some(FileHashes::new(files.to_vec()).ok_or_else(|| {
            io(std::io::Error::other(
                "the files to hash are not laid out in the image's order",
            ))
        })?),
    };
    let mut raw_sinks: Vec<&mut dyn DownloadSink> = Vec::new();
    if let Some(h) = file_hashes.as_mut() {
        raw_sinks.push(h);
    }
    let mut sinks: Vec<&mut dyn DownloadSink> = Vec::new();
    if let Some(p) = pieces.as_mut() {
        sinks.push(p);
    }
    if let Some(u) = uploading.as_mut() {
        sinks.push(u);
    }
    let pass = Pass {
        raw: f.raw,
        raw_path: f.raw_name,
        len: f.len,
        image_sha256: f.json,
        map: map.as_ref().map(|m| &m.ranges),
        compress: f.compressed.map(|(file, how)| Compress {
            file,
            path: f.output,
            how,
            threads: f.threads,
        }),
        download_sha256: f.json,
        sinks,
        raw_sinks,
    };
    let reads = f.json
        || f.bmap
        || f.compressed.is_some()
        || f.torrent.is_some()
        || uploads
        || !f.files.is_empty();
    if reads {
        f.reporter.pass_started(f.len);
    }
    let progress = |n: u64| f.reporter.pass_progress(n);
    let pass = std::thread::scope(|s| {
        let sync = f.sync_raw.then(|| s.spawn(|| f.raw.sync_all()));
        let pass = run_pass(pass, &progress);
        let synced = sync.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the sync thread panicked")))
        });
        match synced {
            Some(Err(e)) => Err(io(e)),
            _ => pass.map_err(BuildError::from),
        }
    })?;
    let mut files = Vec::new();
    if f.bmap {
        let bmap = Bmap {
            image_size: f.len,
            block_size: crate::output::bmap::BLOCK,
            ranges: pass.ranges.clone(),
        };
        files.push((side_path(f.output, ".bmap"), bmap.render().into_bytes()));
    }
    if let (Some(t), Some(p)) = (f.torrent, &pieces) {
        files.push((side_path(f.output, ".torrent"), torrent(f.output, t, p)?));
    }
    if f.json {
        if let Some(entry) = crate::output::meta::OsListEntry::from_pass(&pass) {
            files.push((side_path(f.output, ".json"), entry.to_json().into_bytes()));
        }
    }
    Ok(SideFiles {
        files,
        upload: None,
        download_sha256: pass.download_sha256.clone(),
        download_size: pass.download_sha256.is_some().then_some(pass.download_size),
        file_sha256: file_hashes
            .map(FileHashes::into_digests)
            .unwrap_or_default(),
    })
}

/// `--publish`'s upload as a consumer of the download file: fed in order
/// on its own thread. A failed upload has aborted itself and is reported
/// (it fails the build when completed), never the pass: the local OUTPUT
/// is still made.
struct Uploading<'a> {
    upload: &'a mut ImageUpload,
    reporter: &'a dyn Reporter,
}

impl DownloadSink for Uploading<'_> {
    fn name(&self) -> String {
        "the upload".into()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.upload.write(offset, data, self.reporter);
        Ok(())
    }

    fn finish(&mut self, _len: u64) -> std::io::Result<()> {
        // Completed once OUTPUT is published (`Opened::publish`).
        Ok(())
    }
}

/// The size the piece length is chosen for: a raw OUTPUT's, or for a
/// compressed one, unknown until the pass ends, the raw image's data
/// bytes (its holes compress to almost nothing): an upper bound of the
/// compressed size in practice, so the torrent has at most ~2,000 pieces
/// (fewer when the data compresses well).
fn download_estimate(f: &Finish<'_>) -> std::io::Result<u64> {
    if f.compressed.is_none() {
        return Ok(f.len);
    }
    let regions = crate::os::data_regions(f.raw, f.len)?;
    Ok(regions
        .iter()
        .map(|&(a, b)| b.min(f.len).saturating_sub(a))
        .sum())
}

/// `OUTPUT.torrent`'s bytes, for the download file `output` whose pieces
/// the pass hashed.
fn torrent(
    output: &Path,
    options: &TorrentOptions,
    pieces: &Pieces,
) -> Result<Vec<u8>, BuildError> {
    let (length, hashes) = pieces.result().ok_or_else(|| BuildError::OutputPass {
        path: output.to_path_buf(),
        source: std::io::Error::other("the torrent's pieces were not finished"),
    })?;
    // A UTF-8 name: checked before the build ([`torrent_name`]).
    let name = torrent_name(output)?;
    let t = Torrent {
        name: &name,
        length,
        piece_length: pieces.piece_length(),
        pieces: hashes,
        options,
        // `SOURCE_DATE_EPOCH` when set (a reproducible torrent), else now,
        // as mktorrent and transmission-create write it.
        creation_date: Some(Timestamp::build_time().secs),
    };
    Ok(t.to_bytes()?)
}

/// The torrent's `info.name`: OUTPUT's file name, which must be UTF-8
/// (BEP 3); refused with exit 3 before the build otherwise.
pub fn torrent_name(output: &Path) -> Result<String, BuildError> {
    output
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| {
            BuildError::Usage(format!(
                "--torrent: the name of {} is not UTF-8, as a torrent's name must be",
                output.display()
            ))
        })
}
