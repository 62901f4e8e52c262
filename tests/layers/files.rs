//! The import graph between the files of one top-level module, for the
//! cycle check inside a module (`cache/hit.rs` → `cache/remote.rs` →
//! `cache/hit.rs` is a cycle even though both are `cache`).
//!
//! A reference (a path from the crate root, as [`super::imports`] finds
//! it) lands on the file that defines it: the longest prefix of the path
//! that is a file's module, then, when the next segment is a name that
//! file brings in with `use` (a re-export such as `pub use hit::Hit` in
//! `cache/mod.rs`, or a private import, which children may name too), on
//! the file that name comes from, and so on.
//!
//! A module file and its own descendants are one unit here: an edge from a
//! file to a file below it (`cache/mod.rs` declaring, re-exporting or
//! calling `cache/hit.rs`) is left out, because that is how Rust composes a
//! module and its children reach back for shared items (`super::Cache`).
//! Every other edge counts: between siblings, between cousins, and up from
//! a file to an ancestor. So `hit.rs` ↔ `remote.rs` is a cycle, and so is
//! `units.rs` → `layout.rs` → `units.rs`; `mod.rs` ↔ `hit.rs` is not.

use std::collections::BTreeMap;

use super::imports::{self, Reference};
use super::rules::{Graph, Site};

/// One source file: its path relative to `src/` (`cache/hit.rs`), its
/// module path and its text.
pub struct SourceFile {
    pub rel: String,
    pub module: Vec<String>,
    pub text: String,
}

/// The child modules of `module` among `files` (names, sorted, no repeats).
pub fn children(files: &[SourceFile], module: &[String]) -> Vec<String> {
    let mut out: Vec<String> = files
        .iter()
        .filter(|f| f.module.len() == module.len() + 1 && f.module.starts_with(module))
        .filter_map(|f| f.module.last().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// For each top-level module with more than one file, the graph between
/// its files (nodes are the `rel` paths).
pub fn file_graphs(files: &[SourceFile]) -> BTreeMap<String, Graph> {
    let refs: Vec<Vec<Reference>> = files
        .iter()
        .map(|f| imports::references(&f.text, &f.module, &children(files, &f.module)))
        .collect();
    // What each file brings in by name: its `use` declarations.
    let bindings: Vec<BTreeMap<&str, &[String]>> = refs
        .iter()
        .map(|rs| {
            rs.iter()
                .filter(|r| !r.name.is_empty() && r.name != "*")
                .map(|r| (r.name.as_str(), r.path.as_slice()))
                .collect()
        })
        .collect();
    let resolver = Resolver {
        files,
        bindings: &bindings,
    };
    let mut graphs: BTreeMap<String, Graph> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let Some(top) = f.module.first() else {
            continue; // lib.rs, main.rs
        };
        let graph = graphs.entry(top.clone()).or_default();
        graph.entry(f.rel.clone()).or_default();
        for r in &refs[i] {
            if r.path.first() != Some(top) {
                continue;
            }
            let Some(j) = resolver.file_of(&r.path) else {
                continue;
            };
            let to = &files[j];
            // Down into its own subtree: how a module is made; not an edge.
            if j == i || to.module.starts_with(&f.module) {
                continue;
            }
            graph
                .entry(f.rel.clone())
                .or_default()
                .entry(to.rel.clone())
                .or_default()
                .push(Site {
                    file: format!("src/{}", f.rel),
                    line: r.line,
                });
        }
    }
    graphs.retain(|_, g| g.len() > 1);
    graphs
}

struct Resolver<'a> {
    files: &'a [SourceFile],
    bindings: &'a [BTreeMap<&'a str, &'a [String]>],
}

impl Resolver<'_> {
    /// The index of the file that defines `path`, following `use` names
    /// (at most 16 hops: a `use` cycle, which rustc refuses, can't loop).
    fn file_of(&self, path: &[String]) -> Option<usize> {
        let mut path = path.to_vec();
        for _ in 0..16 {
            let (i, len) = self
                .files
                .iter()
                .enumerate()
                .filter(|(_, f)| !f.module.is_empty() && path.starts_with(&f.module))
                .map(|(i, f)| (i, f.module.len()))
                .max_by_key(|&(_, len)| len)?;
            let next = match path.get(len) {
                Some(name) => self.bindings[i].get(name.as_str()),
                None => None,
            };
            match next {
                // A name this file imports from elsewhere in its own
                // top-level module: go on from there.
                Some(target) if target.first() == path.first() && **target != path[..=len] => {
                    let mut p = target.to_vec();
                    p.extend_from_slice(&path[len + 1..]);
                    path = p;
                }
                _ => return Some(i),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> Vec<SourceFile> {
        files
            .iter()
            .map(|(rel, text)| SourceFile {
                rel: rel.to_string(),
                module: imports::module_path(rel),
                text: text.to_string(),
            })
            .collect()
    }

    /// The cycles of `files`, as the check words them.
    fn cycles(files: &[(&str, &str)]) -> Vec<String> {
        file_graphs(&tree(files))
            .iter()
            .flat_map(|(top, g)| {
                super::super::rules::cycle_messages(g, &format!("files of {top}: "))
            })
            .collect()
    }

    /// `edges` of module `top`: (from, to) pairs.
    fn edges(files: &[(&str, &str)], top: &str) -> Vec<(String, String)> {
        file_graphs(&tree(files))
            .get(top)
            .map(|g| {
                g.iter()
                    .flat_map(|(a, deps)| deps.keys().map(move |b| (a.clone(), b.clone())))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn two_siblings_importing_each_other_are_a_cycle() {
        let bad = cycles(&[
            ("lib.rs", "pub mod cache;"),
            ("cache/mod.rs", "mod hit;\nmod remote;\n"),
            ("cache/hit.rs", "use super::remote::RemoteHit;\n"),
            ("cache/remote.rs", "\n\nuse super::hit::CopyError;\n"),
        ]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with("cycle between files of cache: cache/hit.rs, cache/remote.rs:"),
            "{}",
            bad[0]
        );
        assert!(bad[0].contains("cache/hit.rs -> cache/remote.rs  (src/cache/hit.rs:1)"));
        assert!(bad[0].contains("cache/remote.rs -> cache/hit.rs  (src/cache/remote.rs:3)"));
    }

    #[test]
    fn a_cycle_through_a_reexport_or_a_path_in_code_is_found() {
        // remote.rs names hit's CopyError through mod.rs's `pub use`; hit.rs
        // calls into remote.rs by a path in code.
        let bad = cycles(&[
            (
                "cache/mod.rs",
                "mod hit;\nmod remote;\npub use hit::{CopyError, Hit};\n",
            ),
            (
                "cache/hit.rs",
                "pub struct CopyError;\nfn f() { super::remote::fetch(); }\n",
            ),
            (
                "cache/remote.rs",
                "use crate::cache::CopyError;\npub fn fetch() {}\n",
            ),
        ]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].contains("cache/remote.rs -> cache/hit.rs"),
            "{}",
            bad[0]
        );
        assert!(bad[0].contains("cache/hit.rs -> cache/remote.rs  (src/cache/hit.rs:2)"));
    }

    #[test]
    fn nested_and_three_file_cycles_are_found() {
        // As fs/ext4 once was: units takes BLOCK_SIZE from layout, which
        // imports units and alloc, and alloc imports units.
        let bad = cycles(&[
            ("fs/mod.rs", "pub mod ext4;"),
            ("fs/ext4/mod.rs", "mod alloc;\nmod layout;\nmod units;\n"),
            ("fs/ext4/units.rs", "use super::layout::BLOCK_SIZE;\n"),
            (
                "fs/ext4/layout.rs",
                "use super::{alloc::Run, units::BlockNo};\n",
            ),
            ("fs/ext4/alloc.rs", "use super::units::BlockNo;\n"),
            ("fs/fat.rs", "use super::ext4::Thing;\n"),
        ]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(
            bad[0].starts_with(
                "cycle between files of fs: fs/ext4/alloc.rs, fs/ext4/layout.rs, fs/ext4/units.rs:"
            ),
            "{}",
            bad[0]
        );
    }

    #[test]
    fn a_cycle_through_a_cousin_or_an_ancestor_is_found() {
        // ext4/a.rs → fat.rs (a cousin, by super::super) → ext4/a.rs.
        let bad = cycles(&[
            ("fs/mod.rs", "pub mod ext4;\npub mod fat;\n"),
            ("fs/ext4/mod.rs", "pub mod a;\n"),
            ("fs/ext4/a.rs", "use super::super::fat::Fat;\n"),
            ("fs/fat.rs", "use crate::fs::ext4::a::A;\n"),
        ]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("fs/fat.rs -> fs/ext4/a.rs"), "{}", bad[0]);
        // a.rs and b.rs reach up to ext4/mod.rs, which declares, calls and
        // re-exports them: a module and its children, no cycle.
        let ok = cycles(&[
            (
                "fs/ext4/mod.rs",
                "mod a;\nmod b;\npub use a::A;\nfn f() { b::g(); a::h(); }\n",
            ),
            ("fs/ext4/a.rs", "use super::Shared;\n"),
            ("fs/ext4/b.rs", "use super::{A, Shared};\n"),
        ]);
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn a_module_and_its_children_and_one_way_siblings_pass() {
        let files = [
            ("lib.rs", "pub mod cache;\npub mod config;\n"),
            (
                "cache/mod.rs",
                "mod entry;\nmod hit;\nmod lock;\npub use hit::Hit;\nuse crate::config::Policy;\n\
                 pub struct Cache;\nfn f() { hit::open(); lock::take(); }\n",
            ),
            (
                "cache/hit.rs",
                "use super::{Cache, Policy};\nuse super::entry::Entry;\nuse super::lock::Lock;\n",
            ),
            (
                "cache/entry.rs",
                "use super::lock::Lock;\nuse crate::config::Size;\n",
            ),
            (
                "cache/lock.rs",
                "use super::Cache;\n#[cfg(test)]\nmod tests { use super::super::hit::Hit; }\n",
            ),
            (
                "config/mod.rs",
                "pub struct Policy;\nuse crate::cache::Hit;\n",
            ),
        ];
        assert!(cycles(&files).is_empty(), "{:?}", cycles(&files));
        // The edges that are there: siblings one way and up to mod.rs; not
        // mod.rs down to its children, not the test module, nothing across
        // top-level modules.
        assert_eq!(
            edges(&files, "cache"),
            [
                ("cache/entry.rs", "cache/lock.rs"),
                ("cache/hit.rs", "cache/entry.rs"),
                ("cache/hit.rs", "cache/lock.rs"),
                ("cache/hit.rs", "cache/mod.rs"),
                ("cache/lock.rs", "cache/mod.rs"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }
}
