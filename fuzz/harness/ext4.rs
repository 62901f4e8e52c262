//! The ext4 carry-over reader on mutated base partitions. The seed is a
//! small filesystem made once by our builder (directories, files of a few
//! sizes, fast and slow symlinks, a hard link, a FIFO-free tree like a
//! base's p3). The fuzz input is a list of patches applied to it:
//! `[offset: u32 LE][len: u8][len bytes]…`, offsets taken modulo the
//! seed's size (its metadata is spread out: superblock, descriptors,
//! bitmaps and inode tables in the first MiB, directory and extent blocks
//! after the journal; coverage guides the fuzzer to them). After each run
//! the patches are undone.
//!
//! Property: `scan_old`, `OldTree::read` and the carry-over into a new
//! filesystem end in `Ok` or a typed error; never a panic, a hang or
//! unbounded memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};

use image_creator::fs::ext4::{
    scan_old, Ext4Builder, Ext4Params, InodeMeta, OldTree, Timestamp, ROOT_INO,
};
use image_creator::partition::PartitionWindow;

/// Size of the seed filesystem: 8 MiB (our builder's journal and groups
/// fit; small enough to patch and re-read thousands of times a second).
const SEED_SIZE: u64 = 8 << 20;

struct Seed {
    _dir: tempfile::TempDir,
    window: PartitionWindow,
    file: Arc<File>,
    spill_dir: std::path::PathBuf,
    out: PartitionWindow,
}

fn seed() -> &'static Mutex<Seed> {
    static SEED: OnceLock<Mutex<Seed>> = OnceLock::new();
    SEED.get_or_init(|| Mutex::new(make_seed()))
}

fn params() -> Ext4Params {
    Ext4Params {
        label: "data".into(),
        uuid: Some([0x42; 16]),
        hash_seed: Some([7; 16]),
        time: Timestamp::from_secs(1_700_000_000),
        deterministic: true,
        ..Ext4Params::default()
    }
}

fn window(dir: &std::path::Path, name: &str) -> (Arc<File>, PartitionWindow) {
    let path = dir.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("seed file");
    f.set_len(SEED_SIZE).expect("seed size");
    let f = Arc::new(f);
    let w = PartitionWindow::new(f.clone(), &path, 0, SEED_SIZE);
    (f, w)
}

fn make_seed() -> Seed {
    let dir = tempfile::tempdir().expect("tempdir");
    let (file, w) = window(dir.path(), "p3.img");
    let meta = |perm| InodeMeta::new(perm, Timestamp::from_secs(1_700_000_000));
    let mut b = Ext4Builder::new(w.clone(), params()).expect("builder");
    b.create_file(ROOT_INO, b"master_fs", 0, meta(0o644))
        .expect("file");
    let images = b.mkdir(ROOT_INO, b"images", meta(0o755)).expect("dir");
    let sub = b.mkdir(images, b"sub", meta(0o700)).expect("dir");
    let mut writers = Vec::new();
    for (i, size) in [1u64, 100, 4096, 4097, 70_000, 300_000].iter().enumerate() {
        let parent = if i % 2 == 0 { images } else { sub };
        let name = format!("f{i}");
        let w = b
            .create_file(parent, name.as_bytes(), *size, meta(0o644))
            .expect("file");
        writers.push((w, *size));
    }
    let first = writers[0].0.ino();
    b.hard_link(ROOT_INO, b"hard", first).expect("link");
    b.symlink(ROOT_INO, b"fast", b"images/f0", meta(0o777))
        .expect("symlink");
    b.symlink(ROOT_INO, b"slow", &[b'x'; 200], meta(0o777))
        .expect("symlink");
    for d in 0..20u32 {
        b.mkdir(sub, format!("d{d}").as_bytes(), meta(0o755))
            .expect("dir");
    }
    for (w, size) in &writers {
        let data: Vec<u8> = (0..*size).map(|i| (i % 251) as u8).collect();
        w.write_at(0, &data).expect("write");
    }
    drop(writers);
    b.finish().expect("finish");
    let (_, out) = window(dir.path(), "new.img");
    let spill_dir = dir.path().to_path_buf();
    Seed {
        _dir: dir,
        window: w,
        file,
        spill_dir,
        out,
    }
}

/// Apply the patches of `data`; returns what they overwrote.
fn patch(file: &File, data: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut undo = Vec::new();
    let mut rest = data;
    while rest.len() >= 5 {
        let off = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]])) % SEED_SIZE;
        // Within the input and within the seed.
        let room = usize::try_from(SEED_SIZE - off).unwrap_or(usize::MAX);
        let len = usize::from(rest[4]).min(rest.len() - 5).min(room);
        let bytes = &rest[5..5 + len];
        let used = 5 + usize::from(rest[4]).min(rest.len() - 5);
        let mut old = vec![0u8; len];
        file.read_exact_at(&mut old, off).expect("read seed");
        file.write_all_at(bytes, off).expect("patch seed");
        undo.push((off, old));
        rest = &rest[used..];
    }
    undo
}

/// The target.
pub fn carry(data: &[u8]) {
    let s = seed()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let undo = patch(&s.file, data);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = scan_old(&s.window);
        if let Ok(tree) = OldTree::read(&s.window, &s.spill_dir) {
            let mut p = params();
            tree.apply_identity(&mut p);
            if let Ok(mut b) = Ext4Builder::new(s.out.clone(), p) {
                if tree.write_into(&mut b).is_ok() {
                    let _ = b.finish();
                }
            }
        }
    }));
    for (off, old) in undo.iter().rev() {
        s.file.write_all_at(old, *off).expect("undo patch");
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// Write the seed filesystem to `path` (to craft regression inputs with
/// e2fsprogs: change a copy with `debugfs -w`, then diff the two into
/// patches, as `scripts/ext4-patches.py` does).
pub fn dump_seed(path: &std::path::Path) {
    let s = seed()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut buf = vec![0u8; usize::try_from(SEED_SIZE).expect("8 MiB fits")];
    s.file.read_exact_at(&mut buf, 0).expect("read seed");
    std::fs::write(path, buf).expect("write seed");
}
