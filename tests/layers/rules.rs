//! The layer rules applied to an import graph between top-level modules.

use std::collections::{BTreeMap, BTreeSet};

/// Where a module refers to another: file (relative to the crate) and line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Site {
    pub file: String,
    pub line: usize,
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// module → module it imports → where.
pub type Graph = BTreeMap<String, BTreeMap<String, Vec<Site>>>;

/// One row of the layer table.
#[derive(Debug, Clone, Copy)]
pub struct Layer {
    pub name: &'static str,
    /// Lower levels sit below higher ones; a module imports only lower levels.
    pub level: u8,
    /// A leaf imports nothing of the crate, and anyone may import it.
    pub leaf: bool,
    /// May import a module of its own level (one way: a cycle still fails).
    /// False where the table says peers stay apart (expand, oci, cache).
    pub peers: bool,
}

impl Layer {
    pub const fn leaf(name: &'static str) -> Self {
        Self {
            name,
            level: 0,
            leaf: true,
            peers: false,
        }
    }
    pub const fn at(name: &'static str, level: u8) -> Self {
        Self {
            name,
            level,
            leaf: false,
            peers: false,
        }
    }
    pub const fn with_peers(self) -> Self {
        Self {
            peers: true,
            ..self
        }
    }
}

/// Every rule broken by `graph`, one message each: modules missing from
/// `layers`, cycles, imports by a leaf, upward imports and imports between
/// peers that must stay apart.
pub fn violations(graph: &Graph, layers: &[Layer]) -> Vec<String> {
    let layer = |m: &str| layers.iter().find(|l| l.name == m);
    let mut bad = Vec::new();
    let mentioned: BTreeSet<&String> = graph
        .iter()
        .flat_map(|(m, deps)| std::iter::once(m).chain(deps.keys()))
        .collect();
    for m in mentioned {
        if layer(m).is_none() {
            bad.push(format!(
                "unknown module `{m}`: it is not in the layer table. Add it to LAYERS in \
                 tests/layers.rs at the level where it belongs (it may only import lower levels)."
            ));
        }
    }
    bad.extend(cycle_messages(graph, ""));
    for (m, deps) in graph {
        let Some(lm) = layer(m) else { continue };
        for (dep, sites) in deps {
            let Some(ld) = layer(dep) else { continue };
            let at = where_(sites);
            if lm.leaf {
                bad.push(format!(
                    "{m} is a leaf (imports nothing of the crate) but imports {dep}  ({at})"
                ));
            } else if ld.leaf {
                // Leaves are below everything.
            } else if ld.level > lm.level {
                bad.push(format!(
                    "upward import: {m} (level {}) imports {dep} (level {})  ({at})",
                    lm.level, ld.level
                ));
            } else if ld.level == lm.level && !(lm.peers && ld.peers) {
                bad.push(format!(
                    "{m} imports {dep}: both are level {} and must not import each other  ({at})",
                    lm.level
                ));
            }
        }
    }
    bad
}

/// One message per cycle of `graph`: `cycle between {what}a, b:` and each
/// edge inside the cycle with where it is.
pub fn cycle_messages(graph: &Graph, what: &str) -> Vec<String> {
    let mut out = Vec::new();
    for scc in cycles(graph) {
        let mut msg = format!("cycle between {what}{}:", scc.join(", "));
        for m in &scc {
            for (dep, sites) in &graph[m] {
                if scc.contains(dep) {
                    msg.push_str(&format!("\n      {m} -> {dep}  ({})", where_(sites)));
                }
            }
        }
        out.push(msg);
    }
    out
}

/// "file:line" of the first site, and how many more there are.
fn where_(sites: &[Site]) -> String {
    match sites {
        [] => String::new(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} and {} more", rest.len()),
    }
}

/// The strongly connected groups of more than one module (Tarjan), each
/// sorted, in order of their first member.
pub fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g Graph,
        next: usize,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            for w in self.graph.get(v).into_iter().flat_map(|d| d.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.stack.contains(&w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    group.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.out.push(group);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        next: 0,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out.sort();
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(
                b.to_string(),
                vec![Site {
                    file: format!("src/{a}.rs"),
                    line: 1,
                }],
            );
            g.entry(b.to_string()).or_default();
        }
        g
    }

    const T: [Layer; 7] = [
        Layer::leaf("config"),
        Layer::at("partition", 0),
        Layer::at("fs", 1),
        Layer::at("io", 2).with_peers(),
        Layer::at("fetch", 2).with_peers(),
        Layer::at("expand", 3),
        Layer::at("oci", 3),
    ];

    #[test]
    fn downward_imports_and_leaves_pass() {
        let g = graph(&[
            ("fs", "partition"),
            ("fs", "config"),
            ("partition", "config"),
            ("fetch", "io"),
            ("oci", "fetch"),
            ("expand", "fs"),
        ]);
        assert_eq!(violations(&g, &T), Vec::<String>::new());
    }

    #[test]
    fn cycles_are_found_with_their_edges() {
        let g = graph(&[
            ("a", "b"),
            ("b", "c"),
            ("c", "a"),
            ("c", "d"),
            ("d", "e"),
            ("e", "d"),
        ]);
        assert_eq!(cycles(&g), [vec!["a", "b", "c"], vec!["d", "e"]]);
        let g = graph(&[("io", "fetch"), ("fetch", "io")]);
        let bad = violations(&g, &T);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].starts_with("cycle between fetch, io:"), "{}", bad[0]);
        assert!(bad[0].contains("io -> fetch  (src/io.rs:1)"), "{}", bad[0]);
    }

    #[test]
    fn upward_leaf_peer_and_unknown_are_each_reported() {
        let g = graph(&[
            ("partition", "fs"),
            ("config", "partition"),
            ("oci", "expand"),
            ("fs", "cache"),
        ]);
        let bad = violations(&g, &T);
        assert_eq!(bad.len(), 4, "{bad:#?}");
        assert!(bad[0].starts_with("unknown module `cache`"), "{}", bad[0]);
        assert!(bad.iter().any(|b| b.starts_with("config is a leaf")));
        assert!(bad
            .iter()
            .any(|b| b.starts_with("upward import: partition (level 0) imports fs (level 1)")));
        assert!(bad
            .iter()
            .any(|b| b.starts_with("oci imports expand: both are level 3")));
    }

    #[test]
    fn sites_are_summarised() {
        let s = |line| Site {
            file: "src/a.rs".into(),
            line,
        };
        assert_eq!(where_(&[s(3)]), "src/a.rs:3");
        assert_eq!(where_(&[s(3), s(9), s(12)]), "src/a.rs:3 and 2 more");
    }
}
