//! A scratch directory with a base image, and configs of downloads on it
//! (the cache tests, local and on object storage).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::image::make_base;

/// The sha256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A base image and a scratch directory.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub base: PathBuf,
    pub rootfs: u64,
}

impl Env {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (base, rootfs) = make_base(tmp.path());
        Self { tmp, base, rootfs }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// A config named `name` with one `files[]` download per (to, url).
    pub fn config(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let mut s = format!(
            "base: {{source: {}, rootfs_size: {}}}\nfiles:\n",
            self.base.display(),
            self.rootfs
        );
        for (to, url) in files {
            s.push_str(&format!("  - to: /data/{to}\n    url: {url}\n"));
        }
        let p = self.path(name);
        std::fs::write(&p, s).unwrap();
        p
    }
}
