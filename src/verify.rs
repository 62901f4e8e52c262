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
//! - With a public key (`--pubkey`): `TARGET.SHA256SUMS.minisig` is a
//!   minisign signature of `TARGET.SHA256SUMS` by that key, and every file
//!   the list names (beside it) has its sha256.
//!
//! - With a lock (`--lock`): every file of the lock is in p3 with its
//!   size and sha256, archives are directories, images' archives name the
//!   locked config (`members.rs`).
//!
//! Archives named by the config are read (a local file, or downloaded to
//! an unnamed temporary file) and each member is compared with its file
//! in p3. The images' platform is `--platform`, else the lock's, else
//! `linux/arm64/v8`.
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
use crate::fs::ext4::WindowRead;
use crate::io::Hasher;
use crate::output::Bmap;
use crate::partition::{Mbr, PartitionWindow};
use crate::pipeline::BuildError;

mod members;

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
    /// A minisign public key: check `TARGET.SHA256SUMS` and its signature.
    pub pubkey: Option<PathBuf>,
    /// A lock file (`--lock`): check p3's content against it.
    pub lock: Option<PathBuf>,
    /// The images' platform (default: the lock's, else `linux/arm64/v8`).
    pub platform: Option<String>,
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
        "zstd" => Box::new(crate::io::zstd(r)?),
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
    if opts.bmap.is_none() && opts.config.is_none() && opts.pubkey.is_none() && opts.lock.is_none()
    {
        return Err(BuildError::Usage(
            "verify: give --bmap FILE, --config CONFIG, --pubkey KEY, --lock FILE or several"
                .into(),
        ));
    }
    let lock = opts
        .lock
        .as_ref()
        .map(|p| crate::trust::Lock::read(p))
        .transpose()
        .map_err(|e| BuildError::Usage(format!("--lock {e}")))?;
    let platform = match (&opts.platform, &lock) {
        (Some(p), _) => p.clone(),
        (None, Some(l)) => l.platform.clone(),
        (None, None) => crate::oci::Platform::default().normalized(),
    };
    let platform = crate::oci::Platform::parse(&platform)
        .map_err(|e| BuildError::Usage(format!("--platform {platform}: {e}")))?
        .normalized();
    let mut report = VerifyReport::default();
    let target = &opts.target;
    if let Some(key) = &opts.pubkey {
        let pk = crate::trust::sums::PublicKey::load(key)
            .map_err(|e| BuildError::Usage(format!("--pubkey {e}")))?;
        check_signed(target, &pk, &mut report)?;
    }
    let f = File::open(target).map_err(|e| open_err(target, e))?;
    let kind = compression(&f);
    if let Some(b) = &opts.bmap {
        let text = std::fs::read_to_string(b).map_err(|e| open_err(b, e))?;
        let bmap = Bmap::parse(b, &text).map_err(|e| BuildError::Usage(e.to_string()))?;
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
    if opts.config.is_some() || lock.is_some() {
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
        let image = Arc::new(image);
        if let Some(c) = &opts.config {
            let net = Net::new(FetchOptions::default())?;
            let config = crate::pipeline::load::load_config(c, &net, true)?;
            let on = Checking {
                image: &image,
                target,
                net: &net,
                platform: &platform,
            };
            check_config(&on, &config, &mut report)?;
        }
        if let Some(lock) = &lock {
            let mut sector = [0u8; 512];
            image.read_exact_at(&mut sector, 0)?;
            let p3 = Mbr::parse(&sector)?.partition(3)?;
            let w3 = PartitionWindow::new(image.clone(), target, p3.offset(), p3.len());
            match ext4_view::Ext4::load(Box::new(WindowRead(w3))) {
                Ok(fs) => members::check_lock(&fs, lock, &mut report),
                Err(e) => report
                    .differences
                    .push(format!("p3 is not a readable ext4 filesystem: {e}")),
            }
        }
    }
    Ok(report)
}

/// What the config's checks read from.
struct Checking<'a> {
    image: &'a Arc<File>,
    target: &'a Path,
    net: &'a Net,
    /// The images' platform, normalised.
    platform: &'a str,
}

/// Range `r` of a map of `block_size` blocks hashed to `got`.
fn check_range(
    r: &crate::output::BmapRange,
    block_size: u64,
    got: &str,
    report: &mut VerifyReport,
) {
    if got == r.sha256 {
        report
            .checked
            .push(format!("blocks {}-{}", r.first, r.last));
    } else {
        report.differences.push(format!(
            "bmap range {}-{} (bytes {}..): sha256 {got}, the bmap says {}",
            r.first,
            r.last,
            r.first.saturating_mul(block_size),
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
        let got = crate::io::hex(&sha.finalize());
        check_range(r, bmap.block_size, &got, report);
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
        let got = crate::io::hex(&sha.finalize());
        check_range(range, bmap.block_size, &got, report);
    }
    Ok(())
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
        crate::io::hex(&sha.finalize()),
        h.map(Hasher::finalize_hex),
    ))
}

fn check_config(
    on: &Checking<'_>,
    config: &ImageConfig,
    report: &mut VerifyReport,
) -> Result<(), BuildError> {
    let (image, target) = (on.image, on.target);
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
                check_members(on, &fs, e, &path, &key, report);
            } else {
                report
                    .differences
                    .push(format!("{key}: not a directory (an archive expands there)"));
            }
            continue;
        }
        // A `kind: url` checksum is fetched as the build fetches it.
        let declared = match e.checksum.as_ref() {
            Some(c) if c.kind == ChecksumKind::Url => {
                match crate::plan::base::resolve_checksum(
                    Some(c),
                    on.net,
                    &format!("files[{i}].checksum"),
                ) {
                    Ok(d) => d.declared,
                    Err(err) => {
                        report
                            .differences
                            .push(format!("{key}: its checksum can't be read ({err})"));
                        continue;
                    }
                }
            }
            Some(c) => Some((c.algo, c.value.to_ascii_lowercase())),
            None => None,
        };
        let algo = declared.as_ref().map(|(a, _)| *a);
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
                let want = crate::io::hex(&Sha256::digest(bytes));
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
                if let (Some((algo, want)), Some(got)) = (&declared, &sum) {
                    if got != want {
                        differ(format!("{algo} {got}, the config says {want}"));
                    }
                }
            }
        }
        if ok {
            report.checked.push(key);
        }
    }
    check_images(&fs, config, on.platform, report);
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

/// Each `oci_images[]` archive is a non-empty file in `images/`, named
/// for `platform`.
fn check_images(
    fs: &ext4_view::Ext4,
    config: &ImageConfig,
    platform: &str,
    report: &mut VerifyReport,
) {
    for (i, o) in config.oci_images.iter().enumerate() {
        let path = format!("/images/{}", o.ident.archive_file_name(platform));
        let key = format!("oci_images[{i}] ({path} in p3)");
        match fs.metadata(ext4_view::Path::new(&path)) {
            Ok(m) if m.len() > 0 && !m.is_dir() => report.checked.push(key),
            Ok(_) => report
                .differences
                .push(format!("{key}: empty or not a file")),
            Err(err) => report.differences.push(format!("{key}: missing ({err})")),
        }
    }
}

/// `TARGET.SHA256SUMS`, its signature by `pk`, and every file it lists
/// (beside it) with its sha256. A missing list or signature, a signature
/// that does not hold, a file missing or with other bytes: a difference.
fn check_signed(
    target: &Path,
    pk: &crate::trust::sums::PublicKey,
    report: &mut VerifyReport,
) -> Result<(), BuildError> {
    use crate::pipeline::output::side_path;
    use crate::pipeline::sign::{MINISIG, SUMS};
    let sums_path = side_path(target, SUMS);
    let sig_path = side_path(target, MINISIG);
    let read = |p: &Path, max: u64| -> Result<Vec<u8>, String> {
        let f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mut bytes = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if bytes.len() as u64 > max {
            return Err(format!("{}: larger than {max} bytes", p.display()));
        }
        Ok(bytes)
    };
    let (list, sig) = match (read(&sums_path, 16 << 20), read(&sig_path, 64 << 10)) {
        (Ok(l), Ok(s)) => (l, s),
        (l, s) => {
            report.differences.extend(l.err());
            report.differences.extend(s.err());
            return Ok(());
        }
    };
    let sig = String::from_utf8_lossy(&sig);
    match crate::trust::sums::check_signature(pk, &list, &sig, &sig_path) {
        Ok(()) => report
            .checked
            .push(format!("{}: signed by the key", sums_path.display())),
        Err(e) => {
            report.differences.push(format!(
                "{}: the signature does not hold: {e}",
                sums_path.display()
            ));
            // The list is not to be trusted: its files are not checked.
            return Ok(());
        }
    }
    let text = String::from_utf8_lossy(&list);
    let entries = match crate::trust::sums::parse(&text, &sums_path) {
        Ok(e) => e,
        Err(e) => {
            report.differences.push(e);
            return Ok(());
        }
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let target_name = target.file_name().map(|n| n.to_string_lossy().into_owned());
    if !entries.iter().any(|(n, _)| Some(n) == target_name.as_ref()) {
        report.differences.push(format!(
            "{}: not listed in {}",
            target.display(),
            sums_path.display()
        ));
    }
    for (name, sha) in entries {
        let path = dir.join(&name);
        match sha256_of(&path) {
            Ok(got) if got == sha => report.checked.push(format!("{}: sha256", path.display())),
            Ok(got) => report.differences.push(format!(
                "{}: sha256 {got}, the signed list says {sha}",
                path.display()
            )),
            Err(e) => report.differences.push(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

/// The sha256 of a file, streamed.
fn sha256_of(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(crate::io::hex(&h.finalize()))
}

/// The members of the archive of `files[i]` (`e`), expanded at `path`:
/// each regular member is a file there with its size and sha256. The
/// archive is read from its source: a local file, or downloaded (bounded
/// by its Content-Length, its checksum checked) to an unnamed temporary
/// file; content in the config is written to one.
fn check_members(
    on: &Checking<'_>,
    fs: &ext4_view::Ext4,
    e: &crate::config::FileEntry,
    path: &str,
    key: &str,
    report: &mut VerifyReport,
) {
    let Some(format) = crate::expand::Format::of(e.via) else {
        return;
    };
    let fetched = || -> Result<(File, String), String> {
        match &e.payload {
            Payload::Source(crate::config::Source::Local(p)) => File::open(p)
                .map(|f| (f, p.display().to_string()))
                .map_err(|err| format!("{}: {err}", p.display())),
            Payload::Source(crate::config::Source::Http(url)) => {
                let tmp = tempfile::tempfile().map_err(|err| err.to_string())?;
                let mut sink = crate::io::FileSink::new(&tmp, 0);
                let check = crate::io::Check::declared(
                    e.checksum
                        .as_ref()
                        .filter(|c| c.kind == ChecksumKind::Digest)
                        .map(|c| (c.algo, c.value.to_ascii_lowercase())),
                );
                on.net
                    .block_on(on.net.http.download(url, None, check, &mut sink))
                    .map_err(|err| err.to_string())?;
                Ok((tmp, crate::fetch::redact(url)))
            }
            Payload::Content(bytes) => {
                let mut tmp = tempfile::tempfile().map_err(|err| err.to_string())?;
                std::io::Write::write_all(&mut tmp, bytes).map_err(|err| err.to_string())?;
                std::io::Seek::rewind(&mut tmp).map_err(|err| err.to_string())?;
                Ok((tmp, key.to_string()))
            }
        }
    };
    let (file, name) = match fetched() {
        Ok(x) => x,
        Err(err) => {
            report
                .differences
                .push(format!("{key}: its archive can't be read ({err})"));
            return;
        }
    };
    let before = report.differences.len();
    match members::check_archive(fs, file, format, &name, path, key, report) {
        Ok(n) if report.differences.len() == before => {
            report.checked.push(format!("{key}: {n} files of {name}"));
        }
        Ok(_) => {}
        Err(err) => report
            .differences
            .push(format!("{key}: its archive can't be read ({err})")),
    }
}
