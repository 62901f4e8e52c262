//! Replays every committed fuzz input on stable Rust, in seconds: the
//! corpus (`fuzz/corpus/<target>/`) and the crash, hang and out-of-memory
//! inputs found so far (`fuzz/regressions/<target>/`), through the same
//! harness functions the cargo-fuzz targets call (`fuzz/harness/`). A
//! panic is a failed property; each input must also finish within
//! [`PER_INPUT`].
#![allow(clippy::unwrap_used)]

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Longest one input may take here (debug build, a loaded machine); the
/// fuzzer's own limit on a release build is 10 s.
const PER_INPUT: Duration = Duration::from_secs(20);

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) {
            files.extend(rd.filter_map(Result::ok).map(|e| e.path()));
        }
    }
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, f) = harness::TARGETS.iter().find(|(n, _)| *n == target).unwrap();
    let files = inputs(target);
    assert!(!files.is_empty(), "no corpus for {target}");
    let t0 = Instant::now();
    for file in &files {
        let data = std::fs::read(file).unwrap();
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| f(&data));
        assert!(r.is_ok(), "{}: the harness panicked", file.display());
        assert!(
            t.elapsed() < PER_INPUT,
            "{}: took {:?}",
            file.display(),
            t.elapsed()
        );
    }
    eprintln!("{target}: {} inputs in {:?}", files.len(), t0.elapsed());
}

macro_rules! replay_tests {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            replay(stringify!($name));
        }
    )*};
}

replay_tests!(
    config,
    offspot,
    tar,
    zip,
    oci,
    mbr,
    ext4_carry,
    cache_policy,
    bmap
);
