//! Property test: random trees → e2fsck clean → read back equal with debugfs.
//!
//! 100 cases by default (CI); set `EXT4_PROPTEST_CASES` for more.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use common::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Dir {
        parent: usize,
        name: String,
    },
    File {
        parent: usize,
        name: String,
        len: usize,
        seed: u64,
    },
    Link {
        parent: usize,
        name: String,
        target: String,
    },
    Hard {
        parent: usize,
        name: String,
        file: usize,
    },
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{1,12}",
        "[A-Za-z0-9 ._-]{1,40}",
        "[é日本ß✓a-z]{1,20}",
        Just("x".repeat(255)),
    ]
    .prop_filter("not . or ..", |s| {
        s != "." && s != ".." && !s.starts_with("lost+found")
    })
}

fn file_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..10,
        4090usize..4100,
        8190usize..8200,
        0usize..200_000
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (any::<usize>(), name()).prop_map(|(parent, name)| Op::Dir { parent, name }),
        3 => (any::<usize>(), name(), file_len(), any::<u64>()).prop_map(|(parent, name, len, seed)| Op::File { parent, name, len, seed }),
        1 => (any::<usize>(), name(), "[a-z/]{1,100}").prop_map(|(parent, name, target)| Op::Link { parent, name, target }),
        1 => (any::<usize>(), name(), any::<usize>()).prop_map(|(parent, name, file)| Op::Hard { parent, name, file }),
    ]
}

/// Turn random operations into a valid model tree (unique names, existing
/// parents).
fn model(ops: &[Op]) -> Vec<MEntry> {
    let mut entries: Vec<MEntry> = Vec::new();
    let mut dirs: Vec<String> = vec![String::new()];
    let mut files: Vec<usize> = Vec::new();
    let mut taken = std::collections::HashSet::new();
    for (i, op) in ops.iter().enumerate() {
        let (parent, nm) = match op {
            Op::Dir { parent, name }
            | Op::File { parent, name, .. }
            | Op::Link { parent, name, .. }
            | Op::Hard { parent, name, .. } => (&dirs[parent % dirs.len()], name),
        };
        let path = if parent.is_empty() {
            nm.clone()
        } else {
            format!("{parent}/{nm}")
        };
        if path.len() > 3000 || !taken.insert(path.clone()) {
            continue;
        }
        let base = MEntry {
            path: path.clone(),
            kind: MKind::Dir,
            perm: 0o640 + (i as u16 % 8),
            uid: i as u32,
            gid: 7,
            mtime: 1_000_000 + i as i64,
        };
        let kind = match op {
            Op::Dir { .. } => {
                dirs.push(path.clone());
                MKind::Dir
            }
            Op::File { len, seed, .. } => {
                files.push(entries.len());
                MKind::File(bytes(*seed, *len))
            }
            Op::Link { target, .. } => MKind::Symlink(target.clone().into_bytes()),
            Op::Hard { file, .. } => {
                if files.is_empty() {
                    taken.remove(&path);
                    continue;
                }
                MKind::HardLink(files[file % files.len()])
            }
        };
        let perm = if matches!(kind, MKind::Dir) {
            0o755
        } else {
            base.perm
        };
        entries.push(MEntry { kind, perm, ..base });
    }
    entries
}

fn cases() -> u32 {
    std::env::var("EXT4_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_are_fsck_clean_and_read_back_equal(
        ops in proptest::collection::vec(op(), 1..60),
        max_extent in prop_oneof![Just(1u16), Just(2u16), Just(32768u16)],
    ) {
        if !have("e2fsck") || !have("debugfs") {
            return Ok(());
        }
        let tree = model(&ops);
        let tmp = tempfile::tempdir().unwrap();
        let (img, w) = image(tmp.path(), "fs.img", 32 << 20);
        let mut p = fixed_params();
        p.max_extent_blocks = max_extent;
        build_model(&tree, &w, p);
        verify_model(&tree, &img, tmp.path());
    }
}
