//! `image-creator verify TARGET [--bmap F] [--config C]`: re-read an
//! image, a compressed image (`.zst`, `.xz`, told by their magic bytes) or
//! a device, and say what differs (docs/spec.md §10).
//!
//! - With a bmap: every mapped range's sha256 (the read-back check after
//!   flashing). A compressed TARGET is decoded as a stream.
//! - With a config: every `files[]` entry is in p3 (archives: their
//!   directory) with its size and checksum (inline content: its bytes),
//!   read through `ext4-view`; p1's `offspot.yaml` is the config's
//!   `offspot`; every OCI image's archive is in `images/`. A compressed
//!   TARGET is first decoded into an unnamed temporary file.
//!
//! Memory does not grow with file sizes: everything is streamed in 1 MiB
//! chunks.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::config::{render_offspot_yaml, ChecksumKind, ImageConfig, Payload, Via};
use crate::fetch::{FetchOptions, Net};
use crate::io::Hasher;
use crate::output::Bmap;
use crate::partition::{Mbr, PartitionWindow};
use crate::pipeline::BuildError;

const CHUNK: usize = 1 << 20;

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// An image, a `.zst`/`.xz` image, or a device.
    pub target: PathBuf,
    /// A bmap file.
    pub bmap: Option<PathBuf>,
    /// A config (path or URL).
    pub config: Option<String>,
}

/// What was found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// What was checked and matched, one line each.
    pub checked: Vec<String>,
    /// What differs, one line each.
    pub differences: Vec<String>,
}

/// The compression of `f`, by its magic bytes.
fn compression(f: &File) -> Option<&'static str> {
    let mut m = [0u8; 6];
    if f.read_exact_at(&mut m, 0).is_err() {
        return None;
    }
    if m[..4] == [0x28, 0xB5, 0x2F, 0xFD] {
        Some("zstd")
    } else if m == [0xFD, b'7', b'z', b'X', b'Z', 0] {
        Some("xz")
    } else {
        None
    }
}

/// A decoder over `f`.
fn decoder(f: File, kind: &str) -> std::io::Result<Box<dyn Read>> {
    let r = std::io::BufReader::with_capacity(CHUNK, f);
    Ok(match kind {
        "zstd" => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        _ => Box::new(liblzma::read::XzDecoder::new_multi_decoder(r)),
    })
}

fn open_err(path: &Path, source: std::io::Error) -> BuildError {
    BuildError::SourceOpen {
        path: path.to_path_buf(),
        source,
    }
}

/// Run the checks.
pub fn verify(opts: &VerifyOptions) -> Result<VerifyReport, BuildError> {
    if opts.bmap.is_none() && opts.config.is_none() {
        return Err(BuildError::Usage(
            "verify: give --bmap FILE, --config CONFIG or both".into(),
        ));
    }
    let mut report = VerifyReport::default();
    let target = &opts.target;
    let f = File::open(target).map_err(|e| open_err(target, e))?;
    let kind = compression(&f);
    if let Some(b) = &opts.bmap {
        let text = std::fs::read_to_string(b).map_err(|e| open_err(b, e))?;
        let bmap = Bmap::parse(b, &text).map_err(BuildError::Usage)?;
        let io = |source| BuildError::OutputPass {
            path: target.clone(),
            source,
        };
        match kind {
            Some(k) => {
                let f = File::open(target).map_err(|e| open_err(target, e))?;
                let mut r = decoder(f, k).map_err(io)?;
                check_bmap_stream(&mut r, &bmap, &mut report).map_err(io)?;
            }
            None => check_bmap_file(&f, &bmap, &mut report).map_err(io)?,
        }
    }
    if let Some(c) = &opts.config {
        let net = Net::new(FetchOptions::default())?;
        let config = crate::pipeline::load::load_config(c, &net, true)?;
        let image = match kind {
            Some(k) => {
                let tmp = tempfile::tempfile().map_err(|e| open_err(target, e))?;
                let f = File::open(target).map_err(|e| open_err(target, e))?;
                let mut r = decoder(f, k).map_err(|e| open_err(target, e))?;
                let copied = crate::io::sparse_copy(&mut r, &tmp, 0, |_| {})
                    .map_err(|e| open_err(target, e))?;
                // Skipped zeros at the end: the size says they are there.
                tmp.set_len(copied.read).map_err(|e| open_err(target, e))?;
                tmp
            }
            None => f,
        };
        check_config(&Arc::new(image), target, &config, &mut report)?;
    }
    Ok(report)
}

fn check_range(r: &crate::output::BmapRange, got: &str, report: &mut VerifyReport) {
    if got == r.sha256 {
        report
            .checked
            .push(format!("blocks {}-{}", r.first, r.last));
    } else {
        report.differences.push(format!(
            "bmap range {}-{} (bytes {}..): sha256 {got}, the bmap says {}",
            r.first,
            r.last,
            r.first.saturating_mul(4096),
            r.sha256
        ));
    }
}

/// The ranges of `bmap` in `f`, by positional reads.
fn check_bmap_file(f: &File, bmap: &Bmap, report: &mut VerifyReport) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for r in &bmap.ranges {
        let start = r.first.saturating_mul(bmap.block_size);
        let end = (r.last.saturating_add(1))
            .saturating_mul(bmap.block_size)
            .min(bmap.image_size);
        let mut sha = Sha256::new();
        let mut at = start;
        while at < end {
            let n = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            if let Err(e) = f.read_exact_at(&mut buf[..n], at) {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    report.differences.push(format!(
                        "the target ends before bmap range {}-{}",
                        r.first, r.last
                    ));
                    return Ok(());
                }
                return Err(e);
            }
            sha.update(&buf[..n]);
            at += n as u64;
        }
        check_range(r, &crate::output::hex(&sha.finalize()), report);
    }
    Ok(())
}

/// The ranges of `bmap` in a stream, in one pass.
fn check_bmap_stream(
    r: &mut dyn Read,
    bmap: &Bmap,
    report: &mut VerifyReport,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut pos = 0u64;
    for range in &bmap.ranges {
        let start = range.first.saturating_mul(bmap.block_size);
        let end = (range.last.saturating_add(1))
            .saturating_mul(bmap.block_size)
            .min(bmap.image_size);
        if start < pos {
            report.differences.push(format!(
                "bmap range {}-{} is out of order",
                range.first, range.last
            ));
            continue;
        }
        let skipped = std::io::copy(&mut r.take(start - pos), &mut std::io::sink())?;
        pos += skipped;
        let mut sha = Sha256::new();
        while pos < end {
            let n = usize::try_from((end - pos).min(CHUNK as u64)).unwrap_or(CHUNK);
            let k = r.read(&mut buf[..n])?;
            if k == 0 {
                report.differences.push(format!(
                    "the target ends before bmap range {}-{}",
                    range.first, range.last
                ));
                return Ok(());
            }
            sha.update(&buf[..k]);
            pos += k as u64;
        }
        check_range(range, &crate::output::hex(&sha.finalize()), report);
    }
    Ok(())
}

/// `ext4-view` over a window.
struct WindowRead(PartitionWindow);

impl ext4_view::Ext4Read for WindowRead {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.0
            .read_at(start_byte, dst)
            .map_err(|e| Box::new(e) as _)
    }
}

/// Size and digests of a p3 file, streamed.
fn digest_file(
    fs: &ext4_view::Ext4,
    path: &str,
    algo: Option<crate::config::HashAlgo>,
) -> Result<(u64, String, Option<String>), String> {
    let mut f = fs
        .open(ext4_view::Path::new(path))
        .map_err(|e| e.to_string())?;
    let mut sha = Sha256::new();
    let mut h = algo.map(Hasher::new);
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        let k = f.read_bytes(&mut buf).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
        if let Some(h) = h.as_mut() {
            h.update(&buf[..k]);
        }
        n += k as u64;
    }
    Ok((
        n,
        crate::output::hex(&sha.finalize()),
        h.map(Hasher::finalize_hex),
    ))
}

fn check_config(
    image: &Arc<File>,
    target: &Path,
    config: &ImageConfig,
    report: &mut VerifyReport,
) -> Result<(), BuildError> {
    let mut sector = [0u8; 512];
    image.read_exact_at(&mut sector, 0)?;
    let mbr = Mbr::parse(&sector)?;
    let p1 = mbr.partition(1)?;
    let p3 = mbr.partition(3)?;
    let w3 = PartitionWindow::new(image.clone(), target, p3.offset(), p3.len());
    let fs = match ext4_view::Ext4::load(Box::new(WindowRead(w3))) {
        Ok(fs) => fs,
        Err(e) => {
            report
                .differences
                .push(format!("p3 is not a readable ext4 filesystem: {e}"));
            return Ok(());
        }
    };
    for (i, e) in config.files.iter().enumerate() {
        let path = format!("/{}", e.to);
        let key = format!("files[{i}] ({path} in p3)");
        let meta = match fs.metadata(ext4_view::Path::new(&path)) {
            Ok(m) => m,
            Err(err) => {
                report.differences.push(format!("{key}: missing ({err})"));
                continue;
            }
        };
        let archive = !matches!(e.via, Via::Direct | Via::Base64);
        if archive {
            if meta.is_dir() {
                report.checked.push(key);
            } else {
                report
                    .differences
                    .push(format!("{key}: not a directory (an archive expands there)"));
            }
            continue;
        }
        let algo = e
            .checksum
            .as_ref()
            .filter(|c| c.kind == ChecksumKind::Digest)
            .map(|c| c.algo);
        let (len, sha, sum) = match digest_file(&fs, &path, algo) {
            Ok(x) => x,
            Err(err) => {
                report
                    .differences
                    .push(format!("{key}: unreadable ({err})"));
                continue;
            }
        };
        let mut ok = true;
        let mut differ = |what: String| {
            report.differences.push(format!("{key}: {what}"));
            ok = false;
        };
        match &e.payload {
            Payload::Content(bytes) => {
                let want = crate::output::hex(&Sha256::digest(bytes));
                if len != bytes.len() as u64 || sha != want {
                    differ(format!(
                        "{len} bytes with sha256 {sha}; the config's content is {} bytes with sha256 {want}",
                        bytes.len()
                    ));
                }
            }
            Payload::Source(_) => {
                if let Some(size) = e.size.filter(|&s| s != len) {
                    differ(format!("size {len}, the config says {size}"));
                }
                if let (Some(c), Some(got)) = (&e.checksum, &sum) {
                    if *got != c.value {
                        differ(format!("{} {got}, the config says {}", c.algo, c.value));
                    }
                }
            }
        }
        if ok {
            report.checked.push(key);
        }
    }
    let platform = crate::oci::Platform::default().normalized();
    for (i, o) in config.oci_images.iter().enumerate() {
        let path = format!("/images/{}", o.ident.archive_file_name(&platform));
        let key = format!("oci_images[{i}] ({path} in p3)");
        match fs.metadata(ext4_view::Path::new(&path)) {
            Ok(m) if m.len() > 0 && !m.is_dir() => report.checked.push(key),
            Ok(_) => report
                .differences
                .push(format!("{key}: empty or not a file")),
            Err(err) => report.differences.push(format!("{key}: missing ({err})")),
        }
    }
    if let Some(m) = &config.offspot {
        let want = render_offspot_yaml(m);
        let w1 = PartitionWindow::new(image.clone(), target, p1.offset(), p1.len());
        match crate::fs::fat::read_file(&w1, "offspot.yaml") {
            Ok(got) if got == want.as_bytes() => report.checked.push("offspot.yaml in p1".into()),
            Ok(_) => report
                .differences
                .push("offspot.yaml in p1: differs from the config's offspot".into()),
            Err(e) => report.differences.push(format!("offspot.yaml in p1: {e}")),
        }
    }
    Ok(())
}
