//! Free space counted as blocks (issue 25, docs/spec.md §6): a 100 GB
//! sparse `file://` source with a few MB of data builds on a filesystem
//! with 1 GiB free, and the image stays sparse; the kernel reads the file
//! back from the image (a read-only loop mount of p3) with its data where
//! the source had it and zeros in its holes. With the portable fallbacks
//! (no holes) the same config is refused at planning, naming the sizes,
//! and nothing is written.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::image::{self, files_config, fsck_p3, image_creator, make_base, sfdisk_json};
use common::mounts::Mounted;
use common::{run, skip_machine, Capability};

/// 100 GB: the figure (a sparse file larger than this machine's
/// free disk, let alone the 1 GiB filesystem the image goes to).
const SPARSE_LEN: u64 = 100_000_000_000;
/// Where the source holds data: 1 MiB pieces, the first and last bytes
/// included.
const PIECES: [u64; 5] = [
    0,
    7 << 30,
    50_000_000_000,
    77_777_777_777,
    SPARSE_LEN - (1 << 20),
];

fn piece(i: usize) -> Vec<u8> {
    common::bytes(i as u64 + 100, 1 << 20)
}

/// The sparse source, its data pieces written.
fn sparse_source(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(SPARSE_LEN).unwrap();
    for (i, at) in PIECES.iter().enumerate() {
        f.write_all_at(&piece(i), *at).unwrap();
    }
}

#[test]
fn a_100_gb_sparse_source_builds_on_a_small_filesystem_and_stays_sparse() {
    if !image::tools(&["e2fsck", "mount", "umount"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let src = d.join("sparse.bin");
    sparse_source(&src);
    let Some(small) = Mounted::tmpfs(&d.join("small"), "1g") else {
        return;
    };
    let cfg = files_config(
        d,
        &base,
        rootfs,
        &format!(
            "  - to: /data/sparse.bin\n    url: file://{}\n",
            src.display()
        ),
    );
    let out = small.dir.join("out.img");
    let args = [cfg.to_str().unwrap(), out.to_str().unwrap()];

    // --check says what the image allocates.
    let (code, log) = image_creator(&["--check", args[0], args[1]]);
    assert_eq!(code, 0, "{log}");
    let allocates = log
        .lines()
        .find(|l| l.contains("allocates:"))
        .unwrap_or_else(|| panic!("no allocation line: {log}"))
        .to_string();
    if cfg!(feature = "portable") {
        assert!(allocates.contains("can't keep holes"), "{allocates}");
        // Refused at planning, naming the sizes; nothing written.
        let (code, log) = image_creator(&args);
        assert_eq!(code, 2, "{log}");
        assert!(
            log.contains(&format!("{} has", small.dir.display()))
                && log.contains("bytes free")
                && log.contains("can't keep holes"),
            "{log}"
        );
        assert!(!out.exists(), "{log}");
        assert_eq!(std::fs::read_dir(&small.dir).unwrap().count(), 0);
        return;
    }
    let counted: u64 = allocates
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap();
    assert!(
        counted < 1 << 30,
        "--check counts {counted} bytes: {allocates}"
    );

    let (code, log) = image_creator(&args);
    assert_eq!(code, 0, "{log}");
    let md = std::fs::metadata(&out).unwrap();
    assert!(md.len() > SPARSE_LEN, "{} bytes", md.len());
    let allocated = md.blocks() * 512;
    assert!(
        allocated < 512 << 20,
        "the image allocates {allocated} bytes: not sparse"
    );
    fsck_p3(&out);
    read_back(&out, d);
}

/// The kernel's view of the file in the image: a read-only loop mount of
/// p3; data where the source had it, zeros in a hole, the right size.
fn read_back(img: &Path, d: &Path) {
    let (_, parts) = sfdisk_json(img);
    let p3 = &parts[2];
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let (code, out) = run(Command::new("mount")
        .args([
            "-t",
            "ext4",
            "-o",
            &format!("ro,loop,offset={},sizelimit={}", p3.start, p3.size),
        ])
        .arg(img)
        .arg(&mnt));
    if code != 0 {
        skip_machine(
            Capability::LoopDevices,
            &format!("a loop mount of the image's p3: {out}"),
        );
        return;
    }
    let check = || {
        let f = std::fs::File::open(mnt.join("sparse.bin")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), SPARSE_LEN);
        let mut buf = vec![0u8; 1 << 20];
        for (i, at) in PIECES.iter().enumerate() {
            f.read_exact_at(&mut buf, *at).unwrap();
            assert!(buf == piece(i), "piece {i} at {at} differs");
        }
        f.read_exact_at(&mut buf, 3 << 30).unwrap();
        assert!(buf.iter().all(|&b| b == 0), "a hole reads as data");
    };
    let r = std::panic::catch_unwind(check);
    let _ = Command::new("umount").arg(&mnt).status();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
}
