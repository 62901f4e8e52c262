//! `verify`'s checks of content by what produced it: an archive's
//! members, each a file of p3 with its size and sha256 ([`check_archive`],
//! walking the archive with the expansion's own walkers and path rules);
//! the record of a build (`--lock`: [`check_lock`]).

use std::io::Read;

use sha2::{Digest, Sha256};

use super::VerifyReport;
use crate::expand::member::Components;
use crate::expand::target::Target;
use crate::expand::{ExpandError, Format, Limits, MemberError};
use crate::fs::ext4::InodeMeta;
use crate::trust::{InputKind, Lock};

const CHUNK: usize = 1 << 20;

/// The sha256 and size of the p3 file `path`, streamed.
pub fn p3_file(fs: &ext4_view::Ext4, path: &str) -> Result<(u64, String), String> {
    let mut f = fs
        .open(ext4_view::Path::new(path))
        .map_err(|e| e.to_string())?;
    let mut sha = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut n = 0u64;
    loop {
        let k = f.read_bytes(&mut buf).map_err(|e| e.to_string())?;
        if k == 0 {
            break;
        }
        sha.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, crate::io::hex(&sha.finalize())))
}

/// A [`Target`] that, instead of writing each member, compares it with
/// the file of p3 at `root/member`: its size and sha256.
struct Compare<'a> {
    fs: &'a ext4_view::Ext4,
    /// The archive's directory in p3 (`/t`).
    root: String,
    /// The item's name in messages.
    key: &'a str,
    report: &'a mut VerifyReport,
    buf: Vec<u8>,
    files: u64,
}

impl Compare<'_> {
    fn path(&self, path: &Components<'_>) -> String {
        let mut p = self.root.trim_end_matches('/').to_string();
        for c in path {
            p.push('/');
            p.push_str(&String::from_utf8_lossy(c));
        }
        p
    }
}

impl Target for Compare<'_> {
    fn dir(&mut self, _path: &Components<'_>, _meta: InodeMeta) -> Result<(), MemberError> {
        Ok(())
    }

    fn file(
        &mut self,
        path: &Components<'_>,
        size: u64,
        _meta: InodeMeta,
        data: &mut dyn Read,
    ) -> Result<(), MemberError> {
        let mut sha = Sha256::new();
        let mut n = 0u64;
        loop {
            let k = data.read(&mut self.buf).map_err(MemberError::Io)?;
            if k == 0 {
                break;
            }
            sha.update(&self.buf[..k]);
            n += k as u64;
        }
        let want = crate::io::hex(&sha.finalize());
        let p = self.path(path);
        self.files += 1;
        match p3_file(self.fs, &p) {
            Ok((len, got)) if len == size && n == size && got == want => {}
            Ok((len, got)) => self.report.differences.push(format!(
                "{}: {p} in p3 is {len} bytes with sha256 {got}; the archive's member is {size} bytes with sha256 {want}",
                self.key
            )),
            Err(e) => self
                .report
                .differences
                .push(format!("{}: {p} in p3: missing ({e})", self.key)),
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        _path: &Components<'_>,
        _target: &[u8],
        _meta: InodeMeta,
    ) -> Result<(), MemberError> {
        Ok(())
    }

    fn hard_link(
        &mut self,
        _path: &Components<'_>,
        _to: &Components<'_>,
    ) -> Result<(), MemberError> {
        Ok(())
    }
}

/// Every regular member of the archive in `file` (of `format`, named
/// `name`) is a file of p3 under `root` with its size and sha256. The
/// expansion's walkers read it, with its limits and path rules (junk
/// dropped as the build drops it). `Err`: the archive can't be read.
pub fn check_archive(
    fs: &ext4_view::Ext4,
    file: std::fs::File,
    format: Format,
    name: &str,
    root: &str,
    key: &str,
    report: &mut VerifyReport,
) -> Result<u64, ExpandError> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let limits = Limits::new(key, None, size, format);
    let mut cmp = Compare {
        fs,
        root: root.to_string(),
        key,
        report,
        buf: vec![0; CHUNK],
        files: 0,
    };
    if format == Format::Zip {
        crate::expand::zip::expand_zip(file, name, &limits, &mut cmp)?;
    } else {
        let r = std::io::BufReader::with_capacity(CHUNK, file);
        crate::expand::tar::expand_tar_from(r, format, name, &limits, &mut cmp)?;
    }
    Ok(cmp.files)
}

/// `--lock`: every file and inline item of the lock is at its
/// destination in p3 with its size and sha256; every archive's
/// destination is a directory; every image's archive is a file whose
/// `manifest.json` names the locked config.
pub fn check_lock(fs: &ext4_view::Ext4, lock: &Lock, report: &mut VerifyReport) {
    for item in &lock.items {
        let Some(dest) = &item.dest else { continue };
        let path = dest.strip_prefix(crate::plan::DATA_MOUNT).unwrap_or(dest);
        let key = format!("lock {} ({path} in p3)", item.key);
        let meta = match fs.metadata(ext4_view::Path::new(path)) {
            Ok(m) => m,
            Err(e) => {
                report.differences.push(format!("{key}: missing ({e})"));
                continue;
            }
        };
        match item.kind {
            InputKind::Archive if meta.is_dir() => report.checked.push(key),
            InputKind::Archive => report
                .differences
                .push(format!("{key}: not a directory (an archive expands there)")),
            InputKind::Image => match image_config(fs, path) {
                Ok(cfg) => {
                    let want = item.image.as_ref().and_then(|i| i.config_digest.clone());
                    match want {
                        Some(w) if !cfg.contains(w.trim_start_matches("sha256:")) => {
                            report.differences.push(format!(
                                "{key}: its manifest.json names the config {cfg}, the lock {w}"
                            ));
                        }
                        _ => report.checked.push(key),
                    }
                }
                Err(e) => report.differences.push(format!("{key}: {e}")),
            },
            _ => match p3_file(fs, path) {
                Ok((len, sha)) => {
                    let size_ok = item.size.is_none_or(|s| s == len);
                    let sha_ok = item
                        .sha256
                        .as_ref()
                        .is_none_or(|s| s.eq_ignore_ascii_case(&sha));
                    if size_ok && sha_ok {
                        report.checked.push(key);
                    } else {
                        report.differences.push(format!(
                            "{key}: {len} bytes with sha256 {sha}; the lock says {} bytes with sha256 {}",
                            item.size.map_or("?".into(), |s| s.to_string()),
                            item.sha256.as_deref().unwrap_or("?")
                        ));
                    }
                }
                Err(e) => report.differences.push(format!("{key}: unreadable ({e})")),
            },
        }
    }
}

/// The `Config` of `manifest.json` in the docker-archive at p3 `path`.
fn image_config(fs: &ext4_view::Ext4, path: &str) -> Result<String, String> {
    let f = fs
        .open(ext4_view::Path::new(path))
        .map_err(|e| e.to_string())?;
    let mut ar = ::tar::Archive::new(P3Read(f));
    for entry in ar.entries().map_err(|e| format!("not a tar: {e}"))? {
        let mut entry = entry.map_err(|e| format!("not a tar: {e}"))?;
        let is_manifest = entry
            .path()
            .map(|p| p.as_os_str() == "manifest.json")
            .unwrap_or(false);
        if is_manifest {
            let mut text = String::new();
            (&mut entry)
                .take(4 << 20)
                .read_to_string(&mut text)
                .map_err(|e| format!("manifest.json: {e}"))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("manifest.json: {e}"))?;
            return v[0]["Config"]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| "manifest.json has no Config".to_string());
        }
    }
    Err("no manifest.json in the archive".into())
}

/// An ext4-view file as a `Read`.
struct P3Read(ext4_view::File);

impl Read for P3Read {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0
            .read_bytes(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}
