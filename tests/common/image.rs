//! Helpers for the end-to-end tests that build whole images: the base made
//! by `scripts/make-base-image.sh`, the `image-creator` binary, and the
//! output's data partition (p3) read back with sfdisk, e2fsck and debugfs.
#![allow(dead_code, clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{debugfs, have, run};

/// The binary under test (built by cargo for every integration test crate).
pub const BIN: &str = env!("CARGO_BIN_EXE_image-creator");

/// What `scripts/make-base-image.sh` needs.
pub const BASE_TOOLS: [&str; 6] = ["sfdisk", "mkfs.vfat", "mkfs.ext4", "mcopy", "mmd", "tar"];

/// True when the base can be made and every one of `extra` can be run;
/// otherwise [`super::skip`] for the first missing tool (SKIP locally, a
/// panic under `CI=true`).
pub fn tools(extra: &[&str]) -> bool {
    BASE_TOOLS.iter().chain(extra).all(|t| have(t))
}

/// A fresh base image made by the committed fixture script; returns
/// (path, rootfs_size).
pub fn make_base(dir: &Path) -> (PathBuf, u64) {
    let img = dir.join("base.img");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-base-image.sh");
    let out = Command::new("bash").arg(script).arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "make-base-image: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rootfs: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (img, rootfs)
}

/// `DIR/image.yaml` on `base` with `extra` (YAML, top-level keys) after
/// the `base:` mapping.
pub fn write_config(dir: &Path, base: &Path, rootfs: u64, extra: &str) -> PathBuf {
    let cfg = dir.join("image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base:\n  source: {}\n  rootfs_size: {rootfs}\n{extra}",
            base.display()
        ),
    )
    .unwrap();
    cfg
}

/// [`write_config`] with `files` (list items) under `files:`.
pub fn files_config(dir: &Path, base: &Path, rootfs: u64, files: &str) -> PathBuf {
    write_config(dir, base, rootfs, &format!("files:\n{files}"))
}

/// Run the binary with the test's environment.
pub fn ic(args: &[&str]) -> (i32, String) {
    run(Command::new(BIN).args(args))
}

/// Run the binary without `SOURCE_DATE_EPOCH`.
pub fn image_creator(args: &[&str]) -> (i32, String) {
    image_creator_env(args, &[])
}

/// Run the binary without `SOURCE_DATE_EPOCH`, with `env` set.
pub fn image_creator_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

/// A partition, in bytes.
pub struct Part {
    pub start: u64,
    pub size: u64,
}

/// `sfdisk -J`: the disk id and the partitions.
pub fn sfdisk_json(img: &Path) -> (String, Vec<Part>) {
    let (code, out) = run(Command::new("sfdisk").arg("-J").arg(img));
    assert_eq!(code, 0, "sfdisk -J: {out}");
    let id = out
        .split("\"id\": \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mut parts = Vec::new();
    for chunk in out.split("\"start\": ").skip(1) {
        let start: u64 = chunk.split(',').next().unwrap().trim().parse().unwrap();
        let size: u64 = chunk
            .split("\"size\": ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        parts.push(Part {
            start: start * 512,
            size: size * 512,
        });
    }
    (id, parts)
}

/// Copy partition `p` of `img` to the file `to`.
pub fn extract(img: &Path, p: &Part, to: &Path) {
    let data = std::fs::read(img).unwrap();
    std::fs::write(to, &data[p.start as usize..(p.start + p.size) as usize]).unwrap();
}

/// `IMG?offset=N`: how e2fsprogs opens the filesystem of partition `p`.
pub fn part_spec(img: &Path, p: &Part) -> String {
    format!("{}?offset={}", img.display(), p.start)
}

/// Byte offset of p3.
pub fn p3_offset(img: &Path) -> u64 {
    sfdisk_json(img).1[2].start
}

/// `IMG?offset=N` of p3.
pub fn p3_spec(img: &Path) -> String {
    format!("{}?offset={}", img.display(), p3_offset(img))
}

/// `e2fsck -fn` of p3 must exit 0.
pub fn fsck_p3(img: &Path) {
    let (code, out) = run(Command::new("e2fsck").arg("-fn").arg(p3_spec(img)));
    assert_eq!(code, 0, "e2fsck: {out}");
}

/// `debugfs -R REQ` on p3, which must exit 0.
pub fn debugfs_p3(img: &Path, req: &str) -> String {
    debugfs(Path::new(&p3_spec(img)), req)
}

/// `debugfs dump` of `path` in p3 to the file `to`, which must then exist.
pub fn dump_p3(img: &Path, path: &str, to: &Path) {
    let out = debugfs_p3(img, &format!("dump {path} {}", to.display()));
    assert!(to.exists(), "debugfs could not dump {path}: {out}");
}

/// [`dump_p3`], then the dumped bytes.
pub fn read_p3(img: &Path, path: &str, to: &Path) -> Vec<u8> {
    dump_p3(img, path, to);
    std::fs::read(to).unwrap()
}

/// No `.part` download and no `.archive.*` spool file in `dir`.
pub fn assert_no_partials(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".part") || n.starts_with(".archive."))
        .collect();
    assert!(left.is_empty(), "partial files left: {left:?}");
}

/// After a failed build: no output at `out`, nothing partial in `dir`.
pub fn assert_nothing_left(dir: &Path, out: &Path) {
    assert!(
        !out.exists(),
        "{} exists after a failed build (output left behind)",
        out.display()
    );
    assert_no_partials(dir);
}
