//! The content on disk once (issue 25, docs/spec.md §8): with the download
//! cache and OUTPUT on one filesystem with reflinks (XFS made with
//! `mkfs.xfs -m reflink=1`, btrfs; each on a loop-backed file this test
//! mounts), a file item's blocks are shared between the image and the
//! cache's blob, cold (downloaded into the cache, cloned into the image)
//! and warm (a hit cloned with FICLONERANGE). Checked with tools nobody
//! here wrote: `filefrag -v` (the image's content extents are the blob's
//! physical blocks, flagged `shared`), `statvfs` (the filesystem's used
//! space grew by at most 1 % of the content beyond the image's own
//! unshared blocks), `cmp` (the warm image is byte-identical to the same
//! build on ext4), e2fsck and debugfs. The cache on XFS and OUTPUT on ext4
//! fall back to copying, correctly.
//!
//! The item is 256 MiB (the issue says 1 GiB): 1 % of it, 2.6 MiB, is still
//! far below a second copy, and four filesystems stay small and quick.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::{self, fsck_p3, BIN};
use common::mounts::Mounted;
use common::servers::Nginx;
use common::{digest, have, run};

const CONTENT: u64 = 256 << 20;
/// Bytes past the content that make the item end mid-block (the tail is
/// copied, not cloned).
const TAIL: u64 = 1234;

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs", "filefrag", "cmp", "dd", "sha256sum"])
        && have("mkfs.xfs")
        && have("mkfs.btrfs")
}

struct Setup {
    tmp: tempfile::TempDir,
    ng: Nginx,
    src: PathBuf,
    cfg: PathBuf,
}

impl Setup {
    fn new() -> Option<Self> {
        let tmp = tempfile::tempdir().unwrap();
        let ng = Nginx::start(tmp.path())?;
        let (base, rootfs) = image::make_base(tmp.path());
        let src = ng.root.join("big.bin");
        let (code, out) = run(Command::new("dd")
            .arg("if=/dev/urandom")
            .arg(format!("of={}", src.display()))
            .args(["bs=1M", &format!("count={}", CONTENT >> 20), "status=none"]));
        assert_eq!(code, 0, "{out}");
        let f = std::fs::OpenOptions::new().append(true).open(&src).unwrap();
        f.set_len(CONTENT + TAIL).unwrap();
        let cfg = image::files_config(
            tmp.path(),
            &base,
            rootfs,
            &format!("  - to: /data/big.bin\n    url: {}\n", ng.url("big.bin")),
        );
        Some(Self { tmp, ng, src, cfg })
    }

    fn mount(&self, name: &str, mkfs: &[&str]) -> Option<Mounted> {
        Mounted::loop_fs(
            &self.tmp.path().join("backing"),
            &self.tmp.path().join(name),
            mkfs,
            1 << 30,
        )
    }

    /// A build with `--cache-dir cache` to `out`, `SOURCE_DATE_EPOCH`
    /// fixed; its output.
    fn build(&self, cache: &Path, out: &Path) -> String {
        let (code, log) = run(Command::new(BIN)
            .arg("--cache-dir")
            .arg(cache)
            .arg(&self.cfg)
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        assert_eq!(code, 0, "{log}");
        fsck_p3(out);
        let back = self.tmp.path().join("back.bin");
        image::dump_p3(out, "/big.bin", &back);
        assert_eq!(digest("sha256sum", &back), digest("sha256sum", &self.src));
        std::fs::remove_file(back).unwrap();
        log
    }
}

/// `filefrag -v` of `path`: (physical start block, blocks, shared) of each
/// extent, in 4 KiB blocks.
fn extents(path: &Path) -> Vec<(u64, u64, bool)> {
    let _ = Command::new("sync").arg("-f").arg(path).status();
    let (code, out) = run(Command::new("filefrag").args(["-v", "-b4096"]).arg(path));
    assert_eq!(code, 0, "filefrag: {out}");
    out.lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split(':').map(str::trim).collect();
            if cols.len() < 5 || cols[0].parse::<u64>().is_err() {
                return None;
            }
            let start = cols[2].split("..").next()?.trim().parse().ok()?;
            let len = cols[3].parse().ok()?;
            let shared = cols.get(5).is_some_and(|f| f.contains("shared"));
            Some((start, len, shared))
        })
        .collect()
}

/// Bytes of the image whose physical blocks are the blob's.
fn shared_with(image: &Path, blob: &Path) -> u64 {
    let blob_runs = extents(blob);
    let mut blocks = 0u64;
    for (start, len, shared) in extents(image) {
        if !shared {
            continue;
        }
        for &(b, blen, _) in &blob_runs {
            let lo = start.max(b);
            let hi = (start + len).min(b + blen);
            blocks += hi.saturating_sub(lo);
        }
    }
    blocks * 4096
}

/// Bytes `path` allocates that it shares with no other file.
fn unshared(path: &Path) -> u64 {
    let shared: u64 = extents(path)
        .iter()
        .filter(|e| e.2)
        .map(|e| e.1 * 4096)
        .sum();
    (std::fs::metadata(path).unwrap().blocks() * 512).saturating_sub(shared)
}

/// The one blob of the cache.
fn blob(cache: &Path) -> PathBuf {
    let dir = cache.join("v1/blobs/sha256");
    let shard = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::read_dir(shard)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path()
}

/// With `--features portable` nothing is cloned (no FICLONERANGE): the
/// same builds must then copy, correctly.
const CLONES: bool = !cfg!(feature = "portable");

/// The portable build on `fs`: cold and warm copy, and say nothing of
/// clones. Returns the warm image.
fn copied_cold_then_warm(s: &Setup, fs: &Mounted, what: &str) -> PathBuf {
    let cache = fs.dir.join("cache");
    for name in ["cold.img", "warm.img"] {
        let log = s.build(&cache, &fs.dir.join(name));
        assert!(!log.contains("cloned"), "{what} {name}: {log}");
    }
    fs.dir.join("warm.img")
}

/// Cold then warm on `fs`: the image's content shares the blob's blocks,
/// the filesystem grows by no more than the blob, the image's own blocks
/// and 1 % of the content; the history says so. Returns the warm image.
fn cold_then_warm(s: &Setup, fs: &Mounted, what: &str) -> PathBuf {
    if !CLONES {
        return copied_cold_then_warm(s, fs, what);
    }
    let cache = fs.dir.join("cache");
    let cold = fs.dir.join("cold.img");
    let before = fs.used();
    let log = s.build(&cache, &cold);
    let grew = fs.used().saturating_sub(before);
    let blob = blob(&cache);
    assert!(
        log.contains("cloned, shared with the cache"),
        "{what} cold: {log}"
    );
    let shared = shared_with(&cold, &blob);
    assert!(
        shared >= CONTENT,
        "{what} cold: {shared} bytes of the image are the blob's"
    );
    let own = unshared(&cold);
    assert!(
        grew <= CONTENT + TAIL + own + CONTENT / 100,
        "{what} cold: grew {grew} bytes, the image's own {own}"
    );
    eprintln!("{what}: cold image shares {shared} bytes with the blob, grew the filesystem by {grew} (the blob {} + its own blocks {own})", CONTENT + TAIL);

    let warm = fs.dir.join("warm.img");
    let before = fs.used();
    let log = s.build(&cache, &warm);
    let grew = fs.used().saturating_sub(before);
    assert!(
        log.contains("(from the cache)") && log.contains("cloned, shared with the cache"),
        "{what} warm: {log}"
    );
    let shared = shared_with(&warm, &blob);
    assert!(shared >= CONTENT, "{what} warm: {shared} bytes shared");
    let own = unshared(&warm);
    assert!(
        grew <= own + CONTENT / 100,
        "{what} warm: grew {grew} bytes, the image's own {own}"
    );
    eprintln!("{what}: warm image shares {shared} bytes with the blob, grew the filesystem by {grew} (its own blocks {own})");
    warm
}

/// The same two builds on ext4 (no reflinks): the images the XFS and
/// btrfs ones must equal; their content is not shared.
fn on_ext4(s: &Setup) -> Option<(Mounted, PathBuf)> {
    let fs = s.mount("ext4", &["mkfs.ext4", "-q", "-F"])?;
    let cache = fs.dir.join("cache");
    let cold = fs.dir.join("cold.img");
    let log = s.build(&cache, &cold);
    assert!(!log.contains("cloned"), "ext4 cold: {log}");
    let warm = fs.dir.join("warm.img");
    let log = s.build(&cache, &warm);
    assert!(!log.contains("cloned"), "ext4 warm: {log}");
    Some((fs, warm))
}

fn same_bytes(a: &Path, b: &Path) {
    let (code, out) = run(Command::new("cmp").arg(a).arg(b));
    assert_eq!(code, 0, "{} and {} differ: {out}", a.display(), b.display());
}

#[test]
fn xfs_and_btrfs_share_the_content_between_cache_and_image() {
    if !tools() {
        return;
    }
    let Some(s) = Setup::new() else { return };
    let Some((ext4, reference)) = on_ext4(&s) else {
        return;
    };
    for (what, mkfs) in [
        ("xfs", &["mkfs.xfs", "-q", "-m", "reflink=1"][..]),
        ("btrfs", &["mkfs.btrfs", "-q"][..]),
    ] {
        let fs = s.mount(what, mkfs).unwrap();
        let warm = cold_then_warm(&s, &fs, what);
        same_bytes(&warm, &reference);
    }
    drop(ext4);
}

/// The cache on XFS, OUTPUT on ext4: nothing can be shared; both builds
/// copy, and their images are right.
#[test]
fn cache_and_output_on_two_filesystems_copy() {
    if !tools() {
        return;
    }
    let Some(s) = Setup::new() else { return };
    let Some(xfs) = s.mount("xfs", &["mkfs.xfs", "-q", "-m", "reflink=1"]) else {
        return;
    };
    let ext4 = s.mount("ext4", &["mkfs.ext4", "-q", "-F"]).unwrap();
    let cache = xfs.dir.join("cache");
    for name in ["cold.img", "warm.img"] {
        let out = ext4.dir.join(name);
        let log = s.build(&cache, &out);
        assert!(!log.contains("cloned"), "{name}: {log}");
        assert!(
            extents(&out).iter().all(|e| !e.2),
            "{name}: shared extents on ext4"
        );
    }
    let (code, log) = run(Command::new(BIN)
        .arg("--check")
        .arg("--cache-dir")
        .arg(&cache)
        .arg(&s.cfg)
        .arg(ext4.dir.join("x.img")));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("cloned:"), "{log}");
    let (code, log) = run(Command::new(BIN)
        .arg("--check")
        .arg("--cache-dir")
        .arg(&cache)
        .arg(&s.cfg)
        .arg(xfs.dir.join("x.img")));
    assert_eq!(code, 0, "{log}");
    assert_eq!(log.contains("cloned: the download cache"), CLONES, "{log}");
    drop(s.ng);
}
