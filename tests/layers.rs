//! The layer check: layers of `src/` run one way.
//!
//! Reads every `src/**/*.rs` (unit tests under `#[cfg(test)]` left out),
//! collects which top-level modules each top-level module imports, prints
//! that graph and fails on a cycle, on an import of a higher layer, and on
//! a module missing from [`LAYERS`]. Inside each top-level module it also
//! fails on a cycle between its files (how files are linked:
//! `tests/layers/files.rs`). `scripts/check-layers.sh` runs it with the
//! output shown. What the scanner sees and does not see is written at the
//! top of `tests/layers/imports.rs`.

// The parts live in tests/layers/ (a folder cargo does not take for tests).
#[path = "layers/files.rs"]
mod files;
#[path = "layers/imports.rs"]
mod imports;
#[path = "layers/lex.rs"]
mod lex;
#[path = "layers/rules.rs"]
mod rules;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use files::SourceFile;
use rules::{Graph, Layer, Site};

/// The layers, lowest first (docs/design.md, "Layout and layers"). A module
/// may import modules of lower levels and leaves; leaves import nothing of
/// the crate; peers of one level import each other only where marked
/// `with_peers` (and never both ways). `main.rs` and `lib.rs` are above
/// everything and not checked.
///
/// `error` is not in the brief's table; it is placed as a leaf because every
/// layer reports errors through it (`ExitKind`), so it can sit nowhere else.
const LAYERS: &[Layer] = &[
    Layer::leaf("config"),
    Layer::leaf("progress"),
    Layer::leaf("error"),
    Layer::leaf("os"),
    Layer::at("partition", 0),
    Layer::at("fs", 1),
    Layer::at("io", 2).with_peers(),
    Layer::at("fetch", 2).with_peers(),
    Layer::at("objstore", 2).with_peers(),
    Layer::at("expand", 3),
    Layer::at("oci", 3),
    Layer::at("cache", 3),
    Layer::at("output", 3),
    Layer::at("trust", 3),
    Layer::at("plan", 4),
    Layer::at("pipeline", 5),
    Layer::at("verify", 6),
    Layer::at("flash", 6),
    Layer::at("cli", 7),
];

/// The crate root files: they wire the modules together and sit above all.
const ROOTS: [&str; 2] = ["lib", "main"];

#[test]
fn layers_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = read_sources(&src);
    let (graph, unresolved) = import_graph(&sources);
    println!("{}", render(&graph));
    let mut bad = unresolved;
    bad.extend(rules::violations(&graph, LAYERS));
    bad.extend(file_cycles(&sources));
    if !bad.is_empty() {
        let list: Vec<String> = bad
            .iter()
            .enumerate()
            .map(|(i, b)| format!("  {}. {b}", i + 1))
            .collect();
        panic!(
            "the layers of src/ do not run one way: {} problem(s)\n{}\n\n\
             A module may import only lower layers (table: LAYERS in tests/layers.rs; \
             docs/design.md, \"Layout and layers\"). Move what the upward import needs \
             down to the layer that owns it; inside a module, move what two files share \
             into a third both import. The whole graph is printed above \
             (scripts/check-layers.sh shows it).",
            bad.len(),
            list.join("\n")
        );
    }
}

/// Every `.rs` file under `src`, read, with its module path.
fn read_sources(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    rust_files(src, &mut paths);
    paths
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(src).unwrap_or(p).to_string_lossy();
            let rel = rel.replace(std::path::MAIN_SEPARATOR, "/");
            let text = std::fs::read_to_string(p)
                .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
            SourceFile {
                module: imports::module_path(&rel),
                rel,
                text,
            }
        })
        .collect()
}

/// The graph between the top-level modules of `sources`, and the
/// references that could not be placed (a `crate::x` where `x` is neither a
/// module nor a `use` of lib.rs).
fn import_graph(sources: &[SourceFile]) -> (Graph, Vec<String>) {
    let modules = files::children(sources, &[]);
    // What lib.rs re-exports, so that `crate::Name` lands on its module.
    let mut reexports: BTreeMap<String, String> = BTreeMap::new();
    if let Some(lib) = sources.iter().find(|f| f.rel == "lib.rs") {
        for r in imports::references(&lib.text, &[], &modules) {
            if r.path.len() > 1 && r.name != "*" {
                reexports.insert(r.name, r.path[0].clone());
            }
        }
    }
    let mut graph = Graph::new();
    let mut unresolved = Vec::new();
    for file in sources {
        let (rel, module) = (&file.rel, &file.module);
        let Some(top) = module.first().cloned() else {
            continue; // lib.rs, main.rs
        };
        if ROOTS.contains(&top.as_str()) {
            continue;
        }
        let deps = graph.entry(top.clone()).or_default();
        let children = files::children(sources, module);
        for r in imports::references(&file.text, module, &children) {
            let first = &r.path[0];
            let dep = if modules.contains(first) {
                first.clone()
            } else if let Some(m) = reexports.get(first) {
                m.clone()
            } else {
                unresolved.push(format!(
                    "src/{rel}:{}: `crate::{first}` is neither a module of src/ nor re-exported \
                     by lib.rs, so the check can't place it",
                    r.line
                ));
                continue;
            };
            if dep != top {
                deps.entry(dep).or_default().push(Site {
                    file: format!("src/{rel}"),
                    line: r.line,
                });
            }
        }
    }
    (graph, unresolved)
}

/// One message per cycle between the files of one top-level module.
fn file_cycles(sources: &[SourceFile]) -> Vec<String> {
    files::file_graphs(sources)
        .iter()
        .flat_map(|(top, graph)| rules::cycle_messages(graph, &format!("files of {top}: ")))
        .collect()
}

/// Every `.rs` file below `dir`, sorted.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// One line per module, lowest layer first: `name (level) -> deps`.
fn render(graph: &Graph) -> String {
    let rank = |m: &str| {
        LAYERS
            .iter()
            .position(|l| l.name == m)
            .map_or((u8::MAX, usize::MAX), |i| (LAYERS[i].level, i))
    };
    let mut mods: Vec<&String> = graph.keys().collect();
    mods.sort_by_key(|m| (rank(m), m.as_str()));
    let mut out = String::from(
        "import graph of src/ (top-level modules, lowest layer first; main.rs and lib.rs left out):\n",
    );
    for m in mods {
        let level = match LAYERS.iter().find(|l| l.name == m.as_str()) {
            Some(l) if l.leaf => "leaf".to_string(),
            Some(l) => l.level.to_string(),
            None => "?".to_string(),
        };
        let deps: Vec<&str> = graph[m].keys().map(String::as_str).collect();
        let deps = if deps.is_empty() {
            "(nothing)".to_string()
        } else {
            deps.join(", ")
        };
        out.push_str(&format!("  {:<16} -> {deps}\n", format!("{m} ({level})")));
    }
    out
}

#[test]
fn graph_of_a_small_tree_resolves_files_mod_rs_and_reexports() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = tmp.path();
    let write = |rel: &str, text: &str| {
        let p = src.join(rel);
        std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write(
        "lib.rs",
        "pub mod fs;\npub mod plan;\npub use plan::Plan;\n",
    );
    write("main.rs", "use image_creator::plan;\nfn main() {}\n");
    write("fs/mod.rs", "pub mod ext4;\n");
    write("partition.rs", "pub struct W;\n");
    write(
        "fs/ext4.rs",
        "use super::super::partition::W;\nfn f() { crate::Plan::x(); }\n",
    );
    write("plan.rs", "use crate::fs::ext4;\n#[cfg(test)]\nmod tests { use crate::build::X; }\nfn g() { crate::nowhere(); }\n");
    let (graph, unresolved) = import_graph(&read_sources(src));
    let edges: Vec<(String, Vec<String>)> = graph
        .iter()
        .map(|(m, d)| (m.clone(), d.keys().cloned().collect()))
        .collect();
    assert_eq!(
        edges,
        [
            (
                "fs".to_string(),
                vec!["partition".to_string(), "plan".to_string()]
            ),
            ("partition".to_string(), vec![]),
            ("plan".to_string(), vec!["fs".to_string()]),
        ]
    );
    assert_eq!(graph["fs"]["partition"][0].to_string(), "src/fs/ext4.rs:1");
    assert_eq!(unresolved.len(), 1, "{unresolved:?}");
    assert!(
        unresolved[0].starts_with("src/plan.rs:4: `crate::nowhere`"),
        "{}",
        unresolved[0]
    );
    let text = render(&graph);
    assert!(
        text.contains("  fs (1)           -> partition, plan\n"),
        "{text}"
    );
    assert!(rules::violations(&graph, LAYERS)
        .iter()
        .any(|v| v.starts_with("upward import: fs (level 1) imports plan (level 4)")));
    // No cycle between files yet; then fs/mod.rs's child imports back a
    // sibling that imports it.
    assert!(file_cycles(&read_sources(src)).is_empty());
    write("fs/fat.rs", "use super::ext4::X;\n");
    write("fs/ext4.rs", "use super::fat::Y;\n");
    let cycles = file_cycles(&read_sources(src));
    assert_eq!(cycles.len(), 1, "{cycles:?}");
    assert!(
        cycles[0].starts_with("cycle between files of fs: fs/ext4.rs, fs/fat.rs:"),
        "{}",
        cycles[0]
    );
}
