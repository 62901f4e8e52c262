//! Builder throughput (run with `cargo bench --bench ext4_builder`):
//! (a) one large file streamed in 1 MiB writes, (b) many small files
//! (metadata path and `finish()`). `BENCH_BIG_MIB` (default 1024) and
//! `BENCH_SMALL` (default 20000) size them. Prints MB/s and files/s.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

use std::sync::Arc;
use std::time::Instant;

use image_creator::fs::ext4::{Ext4Builder, Ext4Params, InodeMeta, Timestamp, ROOT_INO};
use image_creator::partition::PartitionWindow;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn window(dir: &std::path::Path, size: u64) -> PartitionWindow {
    let path = dir.join("bench.img");
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    f.set_len(size).unwrap();
    PartitionWindow::new(Arc::new(f), &path, 0, size)
}

fn main() {
    let tmp =
        tempfile::tempdir_in(std::env::var("BENCH_TMP").unwrap_or_else(|_| "/tmp".into())).unwrap();
    let meta = InodeMeta::new(0o644, Timestamp::from_secs(1_700_000_000));
    let params = || Ext4Params {
        deterministic: true,
        time: Timestamp::from_secs(1_700_000_000),
        ..Ext4Params::default()
    };

    // (a) one big file.
    let big = env("BENCH_BIG_MIB", 1024) << 20;
    let w = window(tmp.path(), big + big / 8 + (64 << 20));
    let start = Instant::now();
    let mut b = Ext4Builder::new(w.clone(), params()).unwrap();
    let f = b.create_file(ROOT_INO, b"big", big, meta).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i| (i * 31 % 251) as u8).collect();
    let mut off = 0;
    while off < big {
        f.write_at(off, &chunk[..(big - off).min(1 << 20) as usize])
            .unwrap();
        off += 1 << 20;
    }
    b.finish().unwrap();
    w.sync_data().unwrap();
    let s = start.elapsed().as_secs_f64();
    println!(
        "big file: {} MiB in {s:.2}s = {:.0} MB/s (with fsync)",
        big >> 20,
        big as f64 / s / 1e6
    );

    // (b) many small files.
    let n = env("BENCH_SMALL", 20_000);
    let w = window(tmp.path(), (n * 8192).max(64 << 20) + (64 << 20));
    let start = Instant::now();
    let mut p = params();
    p.inodes.expected_inodes = n + 100;
    let mut b = Ext4Builder::new(w.clone(), p).unwrap();
    let mut dir = ROOT_INO;
    for i in 0..n {
        if i % 1000 == 0 {
            dir = b.mkdir(ROOT_INO, format!("d{i}").as_bytes(), meta).unwrap();
        }
        let f = b
            .create_file(dir, format!("file-{i:06}").as_bytes(), 4096, meta)
            .unwrap();
        f.write_at(0, &chunk[..4096]).unwrap();
    }
    let t_create = start.elapsed().as_secs_f64();
    b.finish().unwrap();
    w.sync_data().unwrap();
    let s = start.elapsed().as_secs_f64();
    println!("small files: {n} x 4 KiB in {s:.2}s = {:.0} files/s (create+write {t_create:.2}s, finish+sync {:.2}s)", n as f64 / s, s - t_create);
}
