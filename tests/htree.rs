//! Hash-indexed directories, checked by tools nobody here wrote:
//! `e2fsck -fn` (which verifies every leaf's hash range), `e2fsck -fD`
//! (which must find nothing to re-pack), `debugfs htree`/`stat`/`dx_hash`,
//! and, where root and loop devices allow, the kernel's own htree lookups.
//!
//! Sizes: a 100,000-entry directory plus 20 directories of 1,000 files by
//! default (about a minute in a debug build); `IMAGE_CREATOR_HTREE_FULL=1`
//! makes it the 1,000 directories of 1,000 files.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;
use image_creator::fs::ext4::{dir_hash, Ext4Builder, InodeMeta, Timestamp, ROOT_INO};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn meta() -> InodeMeta {
    InodeMeta::new(0o644, Timestamp::from_secs(1_700_000_000))
}

/// Build a filesystem of `size` holding `dirs` (name → entry names; each
/// entry an empty file, every 7th one 100 bytes).
fn build(
    img_dir: &Path,
    size: u64,
    dirs: &[(String, Vec<Vec<u8>>)],
    signed: bool,
) -> std::path::PathBuf {
    let (img, w) = image(img_dir, "fs.img", size);
    let mut p = fixed_params();
    p.signed_hash = signed;
    p.inodes.expected_inodes = dirs.iter().map(|(_, n)| n.len() as u64 + 1).sum();
    let mut b = Ext4Builder::new(w, p).unwrap();
    for (d, names) in dirs {
        let dir = b
            .mkdir(
                ROOT_INO,
                d.as_bytes(),
                InodeMeta::new(0o755, Timestamp::from_secs(1_700_000_000)),
            )
            .unwrap();
        for (i, n) in names.iter().enumerate() {
            let len = if i % 7 == 0 { 100 } else { 0 };
            let f = b.create_file(dir, n, len, meta()).unwrap();
            if len > 0 {
                f.write_at(0, &[b'x'; 100]).unwrap();
            }
        }
    }
    b.finish().unwrap();
    img
}

fn htree_root(img: &Path, dir: &str) -> String {
    let out = debugfs(img, &format!("htree /{dir}"));
    assert!(
        out.contains("Root node dump"),
        "/{dir} is not indexed: {out}"
    );
    out
}

/// `e2fsck -fyD` on a copy must leave every htree as it was (it re-packs
/// what it would pack differently).
fn e2fsck_d_changes_nothing(img: &Path, dirs: &[&str]) {
    let copy = img.with_extension("D.img");
    let (code, out) = run(Command::new("cp")
        .arg("--sparse=always")
        .arg(img)
        .arg(&copy));
    assert_eq!(code, 0, "cp: {out}");
    let (code, out) = run(Command::new("e2fsck").arg("-fyD").arg(&copy));
    assert!(code == 0 || code == 1, "e2fsck -fyD: {out}");
    for d in dirs {
        let strip = |s: String| -> String {
            s.lines()
                .filter(|l| !l.contains("Checksum"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        let a = strip(debugfs(img, &format!("htree /{d}")));
        let b = strip(debugfs(&copy, &format!("htree /{d}")));
        assert!(a == b, "e2fsck -D re-packed /{d}");
    }
    std::fs::remove_file(&copy).unwrap();
}

#[test]
fn big_directories_are_indexed_and_found() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let full = std::env::var("IMAGE_CREATOR_HTREE_FULL").is_ok_and(|v| v == "1");
    let (ndirs, size) = if full {
        (1000, 8192 * MIB)
    } else {
        (20, 1024 * MIB)
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut dirs = vec![(
        "big".to_string(),
        (0..100_000)
            .map(|i| format!("entry-{i:06}").into_bytes())
            .collect::<Vec<_>>(),
    )];
    for d in 0..ndirs {
        dirs.push((
            format!("d{d:04}"),
            (0..1000).map(|i| format!("f{i:04}").into_bytes()).collect(),
        ));
    }
    let img = build(tmp.path(), size, &dirs, true);
    assert_e2fsck_clean(&img);
    let root = htree_root(&img, "big");
    // 100,000 entries of 20 bytes at 80 % fill: ~612 leaves, so one level
    // of index nodes under the root.
    assert!(root.contains("Indirect levels: 1"), "{root}");
    assert!(root.contains("Hash Version: 1"), "{root}");
    htree_root(&img, "d0000");
    // A one-block directory stays linear.
    let lf = debugfs(&img, "htree /lost+found");
    assert!(!lf.contains("Root node dump"), "{lf}");
    for i in (0..100_000).step_by(9_973) {
        let st = debugfs(&img, &format!("stat /big/entry-{i:06}"));
        assert!(st.contains("Type: regular"), "entry-{i:06}: {st}");
    }
    e2fsck_d_changes_nothing(&img, &["big", "d0000"]);
    kernel_lookups(&img, &dirs);
}

/// Mount the image read-write on a loop device: the kernel finds every
/// name through the index, creates and deletes entries in an indexed
/// directory, and e2fsck is clean after unmount.
fn kernel_lookups(img: &Path, dirs: &[(String, Vec<Vec<u8>>)]) {
    if !is_root() {
        skip_machine(Capability::Root, "kernel mount needs root");
        return;
    }
    if !have("losetup") || !have("mount") || !have("umount") {
        return;
    }
    let attach = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(img)
        .output()
        .unwrap();
    if !attach.status.success() {
        skip_machine(
            Capability::LoopDevices,
            &format!(
                "no loop device here: {}",
                String::from_utf8_lossy(&attach.stderr).trim()
            ),
        );
        return;
    }
    let dev = Detach(String::from_utf8_lossy(&attach.stdout).trim().to_string());
    let mnt = tempfile::tempdir().unwrap();
    let (code, out) = run(Command::new("mount")
        .args(["-t", "ext4", &dev.0])
        .arg(mnt.path()));
    if code != 0 {
        let lower = out.to_lowercase();
        if [
            "permission denied",
            "operation not permitted",
            "must be superuser",
        ]
        .iter()
        .any(|m| lower.contains(m))
        {
            skip_machine(
                Capability::Mount,
                &format!("mounting is not permitted here: {}", out.trim()),
            );
            return;
        }
        panic!("the kernel refused the filesystem: {out}");
    }
    let m = Unmount(mnt.path().to_path_buf());
    for (d, names) in dirs.iter().take(3) {
        let listed = std::fs::read_dir(m.0.join(d)).unwrap().count();
        assert_eq!(listed, names.len(), "ls /{d} | wc -l");
        for n in names.iter().step_by(1000) {
            let p = m.0.join(d).join(String::from_utf8_lossy(n).as_ref());
            std::fs::metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        }
        assert!(std::fs::metadata(m.0.join(d).join("no-such-name")).is_err());
    }
    eprintln!(
        "kernel mount: every name of {} directories found",
        dirs.len().min(3)
    );
    let big = m.0.join(&dirs[0].0);
    for i in 0..50 {
        std::fs::write(big.join(format!("new-{i}")), b"new").unwrap();
    }
    for i in (0..50).step_by(2) {
        std::fs::remove_file(big.join(format!("new-{i}"))).unwrap();
    }
    std::fs::remove_file(big.join("entry-000007")).unwrap();
    assert_eq!(std::fs::read(big.join("new-1")).unwrap(), b"new");
    drop(m);
    drop(dev);
    assert_e2fsck_clean(img);
}

struct Detach(String);
impl Drop for Detach {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let (code, out) = run(Command::new("umount").arg(&self.0));
        assert!(code == 0 || std::thread::panicking(), "umount: {out}");
    }
}

/// Our half-MD4 against e2fsprogs' (`debugfs dx_hash`), names with high
/// bytes included.
#[test]
fn hash_matches_debugfs_dx_hash() {
    if !have("debugfs") {
        return;
    }
    let seed = [7u8; 16];
    let names: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"file-000001".to_vec(),
        "é-ünïcödé".as_bytes().to_vec(),
        vec![b'x'; 31],
        vec![b'y'; 32],
        vec![b'z'; 33],
        vec![0xFF; 64],
        (1..=200u8)
            .filter(|&c| c != b'/' && c != b' ' && c != b'"')
            .collect(),
        vec![b'q'; 255],
    ];
    let tmp = tempfile::tempdir().unwrap();
    let img = build(tmp.path(), 16 * MIB, &[], true);
    for n in &names {
        let arg = String::from_utf8_lossy(n).into_owned();
        if arg.contains('\u{FFFD}') {
            continue; // debugfs takes its argument as a C string
        }
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!(
                "dx_hash -h half_md4 -s 07070707-0707-0707-0707-070707070707 \"{arg}\""
            ))
            .arg(&img)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let (major, minor) = dir_hash(&seed, true, n);
        assert!(
            out.contains(&format!("is 0x{major:08x} (minor 0x{minor:08x})"))
                || out.contains(&format!("is 0x{major:x} (minor 0x{minor:x})")),
            "{arg:?}: ours 0x{major:x}/0x{minor:x}, debugfs: {out}"
        );
    }
}

/// Names that collide on the major hash with the fixed seed: found by a
/// birthday search over short generated names.
fn collisions() -> Vec<Vec<u8>> {
    static FOUND: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    FOUND.get_or_init(search_collisions).clone()
}

fn search_collisions() -> Vec<Vec<u8>> {
    let seed = fixed_params().hash_seed.unwrap();
    let mut seen = std::collections::HashMap::new();
    let mut out = BTreeSet::new();
    for i in 0u32..300_000 {
        let n = format!("c{i:x}").into_bytes();
        let (major, _) = dir_hash(&seed, true, &n);
        if let Some(prev) = seen.insert(major, n.clone()) {
            out.insert(prev);
            out.insert(n);
        }
    }
    out.into_iter().collect()
}

fn name_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![b'a'..=b'z', 0x80u8..=0xFF, Just(b'-'), Just(b'.')],
        1..=255,
    )
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("HTREE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(12),
        ..ProptestConfig::default()
    })]

    /// Random names and counts (one block to a few hundred), with and
    /// without hash collisions, signed and unsigned hashes: e2fsck clean,
    /// indexed exactly when the names need more than one block, every
    /// name listed and sampled names found.
    #[test]
    fn random_htree_directories(
        names in prop::collection::btree_set(name_strategy(), 1..1500),
        with_collisions in any::<bool>(),
        signed in any::<bool>(),
    ) {
        if !have("e2fsck") || !have("debugfs") {
            return Ok(());
        }
        let mut names = names;
        if with_collisions {
            names.extend(collisions());
        }
        let names: Vec<Vec<u8>> = names.into_iter().collect();
        let tmp = tempfile::tempdir().unwrap();
        let img = build(tmp.path(), 64 * MIB, &[("d".to_string(), names.clone())], signed);
        assert_e2fsck_clean(&img);
        let bytes: usize = names.iter().map(|n| (n.len() + 8).next_multiple_of(4)).sum::<usize>() + 24;
        let ht = debugfs(&img, "htree /d");
        prop_assert_eq!(ht.contains("Root node dump"), bytes > 4084, "{} bytes of entries", bytes);
        let ls = debugfs(&img, "ls -p /d");
        let listed = ls.lines().filter(|l| l.starts_with('/')).count();
        prop_assert_eq!(listed, names.len() + 2);
        for n in names.iter().step_by(97) {
            if let Ok(s) = std::str::from_utf8(n) {
                let st = debugfs(&img, &format!("stat \"/d/{s}\""));
                prop_assert!(st.contains("Type: regular"), "{}: {}", s, st);
            }
        }
    }
}
