//! The large cases of issue 14, which stay cheap because nothing is
//! written where nothing is: a 1 TB filesystem with little content, and a
//! 100 GB sparse file imported through `file://`. Both checked by size,
//! allocated size (`du`), `e2fsck -fn` and spot-checked contents.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
// What these prove (holes stay holes, a 1 TB image allocates megabytes) is
// what the `portable` feature gives up: its fallbacks write and read every
// zero. Under it they would write a terabyte; they run in the default suite.
#![cfg(not(feature = "portable"))]

mod common;

use std::os::unix::fs::{FileExt, MetadataExt};
use std::process::Command;

use common::*;
use image_creator::fs::ext4::{Ext4Builder, InodeMeta, Timestamp, ROOT_INO};

const GB: u64 = 1_000_000_000;

/// Bytes the file really occupies on disk.
fn allocated(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).unwrap().blocks() * 512
}

#[test]
fn one_terabyte_filesystem_is_sparse_clean_and_grows() {
    if !have("e2fsck") || !have("debugfs") || !have("resize2fs") || !have("dumpe2fs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (img, w) = image(tmp.path(), "tb.img", 1000 * GB);
    let mut b = Ext4Builder::new(w, fixed_params()).unwrap();
    let t = InodeMeta::new(0o644, Timestamp::from_secs(1_700_000_000));
    let f = b.create_file(ROOT_INO, b"hello", 5, t).unwrap();
    f.write_at(0, b"hello").unwrap();
    b.finish().unwrap();
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1000 * GB);
    // Bitmaps, descriptors, the journal's first block: well under 256 MiB.
    assert!(
        allocated(&img) < 256 << 20,
        "{} bytes allocated",
        allocated(&img)
    );
    assert_e2fsck_clean(&img);
    let (_, dump) = run(Command::new("dumpe2fs").arg(&img));
    let groups = dump.lines().filter(|l| l.starts_with("Group ")).count();
    assert!(groups >= 7000, "{groups} groups");
    assert!(debugfs(&img, "cat /hello").starts_with("hello"));
    // The Pi grows p3: resize2fs to 1.1 TB, then clean again.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(1100 * GB)
        .unwrap();
    let (code, out) = run(Command::new("resize2fs").arg(&img));
    assert_eq!(code, 0, "resize2fs: {out}");
    assert_e2fsck_clean(&img);
    assert!(debugfs(&img, "cat /hello").starts_with("hello"));
}

/// Through the library calls `pipeline::data` makes for a `file://` item
/// (`io::data_regions`, then `FileWriter::copy_regions_from`): the
/// binary's free-space check counts the file's apparent 100 GB, which this
/// machine's disk may not have, though the image needs only its data.
#[test]
fn hundred_gigabyte_sparse_file_goes_in_without_its_zeros() {
    if !have("e2fsck") || !have("debugfs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let src = d.join("big.bin");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&src)
        .unwrap();
    f.set_len(100 * GB).unwrap();
    let regions: [(u64, &[u8]); 3] = [
        (0, b"first bytes"),
        (50 * GB + 12_345, b"in the middle"),
        (100 * GB - 9, b"last byte"),
    ];
    for (at, data) in regions {
        f.write_at(data, at).unwrap();
    }
    let (img, w) = image(d, "fs.img", 110 * GB);
    let mut b = Ext4Builder::new(w, fixed_params()).unwrap();
    let t = InodeMeta::new(0o644, Timestamp::from_secs(1_700_000_000));
    let fw = b.create_file(ROOT_INO, b"big.bin", 100 * GB, t).unwrap();
    let data = image_creator::io::data_regions(&f, 100 * GB).unwrap();
    assert!(data.len() >= 3, "{data:?}");
    let mut seen = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    fw.copy_regions_from(&f, &data, &mut buf, |c| seen += c.len() as u64)
        .unwrap();
    assert_eq!(seen, 100 * GB, "every byte is reported, holes as zeros");
    b.finish().unwrap();
    // The holes stay holes in the image: only metadata and the written
    // regions' blocks are allocated.
    assert!(
        allocated(&img) < 2 << 30,
        "{} bytes allocated",
        allocated(&img)
    );
    assert_e2fsck_clean(&img);
    let stat = debugfs(&img, "stat /big.bin");
    assert!(stat.contains(&format!("Size: {}", 100 * GB)), "{stat}");
    let ex = debugfs(&img, "ex /big.bin");
    // Level 0 is in the inode; "1/1" lines are the tree's blocks: depth >= 1.
    assert!(ex.lines().any(|l| l.trim_start().starts_with("1/")), "{ex}");
    let image = std::fs::File::open(&img).unwrap();
    for (at, data) in regions {
        let bmap = debugfs(&img, &format!("bmap /big.bin {}", at / 4096));
        let pblk: u64 = bmap
            .lines()
            .find_map(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("bmap: {bmap}"));
        let mut got = vec![0u8; data.len()];
        image
            .read_exact_at(&mut got, pblk * 4096 + at % 4096)
            .unwrap();
        assert_eq!(got, data, "at {at}");
    }
}
