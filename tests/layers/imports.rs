//! Which top-level modules a source file refers to.
//!
//! Seen: `use` declarations (`pub`/`pub(crate)` too) with grouped and
//! nested trees (`use crate::{a, b::{c, d}}`, `use super::{super::x}`,
//! `self`, `*`, `as`), and paths in code (`crate::a::f()`, `$crate::a`,
//! `super::super::a::T`). `super` is resolved against the file's module
//! path and the inline `mod x { … }` blocks around it; only paths that
//! reach the crate root count.
//!
//! Not seen (limits):
//! - Anything gated by `#[cfg(test)]` (an item, or a whole file with
//!   `#![cfg(test)]`) — unit tests may reach anywhere. `#[cfg(any(test, …))]`
//!   is not recognised and counts. A file-backed `#[cfg(test)] mod x;` is
//!   not followed to its file, which then counts.
//! - Paths that do not start at `crate`/`super`: in a non-root module a
//!   bare `foo::x` names an external crate or a child module, never another
//!   top-level module, so nothing is lost there.
//! - Paths produced by macros, `#[path]` attributes, and `extern crate self`.
//! - `pub(in crate::x)` counts as a reference to `x`.

use super::lex::{blank, tokens, Tok};

/// A path from the crate root, as written (or as resolved from `super`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Segments after the crate root; the first is a top-level module or an
    /// item of lib.rs.
    pub path: Vec<String>,
    /// The name it is brought in under (`as` alias, last segment, or `*`);
    /// empty for a path in code.
    pub name: String,
    pub line: usize,
}

/// The module path of a file relative to `src/`: `fs/ext4/extent.rs` →
/// `[fs, ext4, extent]`; `mod.rs` names its directory; `lib.rs` and
/// `main.rs` are the crate root (`[]`).
pub fn module_path(rel: &str) -> Vec<String> {
    let rel = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    parts
}

/// Every path from the crate root in `src`, a file whose module path is
/// `module`. A bare `use x::…` at the file's top level (not in an inline
/// `mod`) names the file's child module `x` when `x` is one of `children`
/// (for the crate root: the top-level modules).
pub fn references(src: &str, module: &[String], children: &[String]) -> Vec<Reference> {
    let toks = tokens(&blank(src));
    let mut scan = Scan {
        toks: &toks,
        pos: 0,
        depth: module.len(),
        children,
        out: Vec::new(),
    };
    scan.file(module);
    scan.out
}

struct Scan<'a> {
    toks: &'a [Tok],
    pos: usize,
    /// Length of the file's own module path: a use tree in a module that
    /// long is at the file's top level.
    depth: usize,
    children: &'a [String],
    out: Vec<Reference>,
}

/// What a use tree's prefix has resolved to so far.
#[derive(Debug, Clone)]
enum Prefix {
    /// Nothing yet (the start of a `use`).
    Start,
    /// A path from the crate root.
    Root(Vec<String>),
    /// Another crate, or a name in scope below this module.
    Elsewhere,
}

/// What an open brace belongs to.
enum Brace {
    Mod(String),
    Other,
}

impl Scan<'_> {
    fn at(&self, i: usize) -> &str {
        self.toks.get(i).map_or("", |t| t.text.as_str())
    }

    fn line(&self, i: usize) -> usize {
        self.toks.get(i).or(self.toks.last()).map_or(0, |t| t.line)
    }

    /// True when the tokens at `pos` spell `seq`.
    fn looking_at(&self, seq: &[&str]) -> bool {
        seq.iter()
            .enumerate()
            .all(|(k, s)| self.at(self.pos + k) == *s)
    }

    fn file(&mut self, base: &[String]) {
        let mut braces: Vec<Brace> = Vec::new();
        let module = |braces: &[Brace]| -> Vec<String> {
            let mut m = base.to_vec();
            m.extend(braces.iter().filter_map(|b| match b {
                Brace::Mod(name) => Some(name.clone()),
                Brace::Other => None,
            }));
            m
        };
        while self.pos < self.toks.len() {
            if self.looking_at(&["#", "!", "[", "cfg", "(", "test", ")", "]"]) {
                // The whole file (or module) is test code.
                self.out.clear();
                return;
            }
            if self.looking_at(&["#", "[", "cfg", "(", "test", ")", "]"]) {
                self.pos += 7;
                self.skip_item();
                continue;
            }
            let prev = if self.pos == 0 {
                ""
            } else {
                self.at(self.pos - 1)
            };
            match self.at(self.pos) {
                "mod" if self.at(self.pos + 2) == "{" => {
                    braces.push(Brace::Mod(self.at(self.pos + 1).to_string()));
                    self.pos += 3;
                }
                "{" => {
                    braces.push(Brace::Other);
                    self.pos += 1;
                }
                "}" => {
                    braces.pop();
                    self.pos += 1;
                }
                "use" => {
                    self.pos += 1;
                    let m = module(&braces);
                    self.use_tree(Prefix::Start, &m);
                }
                "crate" if prev != "::" && self.at(self.pos + 1) == "::" => {
                    self.pos += 2;
                    self.code_path(Vec::new());
                }
                "super" if prev != "::" && self.at(self.pos + 1) == "::" => {
                    let mut m = module(&braces);
                    while self.at(self.pos) == "super" && self.at(self.pos + 1) == "::" {
                        m.pop();
                        self.pos += 2;
                    }
                    self.code_path(m);
                }
                _ => self.pos += 1,
            }
        }
    }

    /// A path in code after its root (`crate::` or `super::…::`) resolved
    /// to `prefix`: recorded with its next segment (enough to know the
    /// top-level module).
    fn code_path(&mut self, mut prefix: Vec<String>) {
        let seg = self.at(self.pos);
        if is_name(seg) {
            prefix.push(seg.to_string());
            self.out.push(Reference {
                path: prefix,
                name: String::new(),
                line: self.line(self.pos),
            });
        }
    }

    /// Skip attributes and then one item: up to a `;` outside brackets, or
    /// through the first brace block.
    fn skip_item(&mut self) {
        while self.at(self.pos) == "#" && self.at(self.pos + 1) == "[" {
            self.pos += 1;
            self.skip_balanced();
        }
        let mut depth = 0usize;
        while self.pos < self.toks.len() {
            match self.at(self.pos) {
                "(" | "[" => depth += 1,
                ")" | "]" => depth = depth.saturating_sub(1),
                ";" if depth == 0 => {
                    self.pos += 1;
                    return;
                }
                "{" if depth == 0 => {
                    self.skip_balanced();
                    return;
                }
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// Skip from an opening bracket at `pos` past its matching close.
    fn skip_balanced(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.toks.len() {
            match self.at(self.pos) {
                "(" | "[" | "{" => depth += 1,
                ")" | "]" | "}" => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        self.pos += 1;
                        return;
                    }
                }
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// One use tree at `pos`; stops before the `,`, `}` or `;` that ends
    /// it (a group is consumed whole).
    fn use_tree(&mut self, mut prefix: Prefix, module: &[String]) {
        let mut last = String::new();
        let mut line = self.line(self.pos);
        loop {
            let tok = self.at(self.pos).to_string();
            match tok.as_str() {
                "{" => {
                    self.pos += 1;
                    while self.pos < self.toks.len() && self.at(self.pos) != "}" {
                        self.use_tree(prefix.clone(), module);
                        if self.at(self.pos) == "," {
                            self.pos += 1;
                        }
                    }
                    self.pos += 1;
                    return;
                }
                "*" => {
                    self.pos += 1;
                    self.emit(&prefix, "*", line);
                    return;
                }
                "as" => {
                    let alias = self.at(self.pos + 1).to_string();
                    self.pos += 2;
                    self.emit(&prefix, &alias, line);
                    return;
                }
                "::" => {
                    if matches!(prefix, Prefix::Start) {
                        prefix = Prefix::Elsewhere; // `use ::other_crate::…`
                    }
                    self.pos += 1;
                }
                "," | "}" | ";" | "" => {
                    self.emit(&prefix, &last, line);
                    if tok == ";" {
                        self.pos += 1;
                    }
                    return;
                }
                seg if is_name(seg) || seg == "crate" || seg == "super" || seg == "self" => {
                    prefix = match (prefix, seg) {
                        (Prefix::Start, "crate") => Prefix::Root(Vec::new()),
                        (Prefix::Start, "self") => Prefix::Root(module.to_vec()),
                        (Prefix::Start, "super") if !module.is_empty() => {
                            Prefix::Root(module[..module.len() - 1].to_vec())
                        }
                        (Prefix::Start, name)
                            if module.len() == self.depth
                                && self.children.iter().any(|m| m == name) =>
                        {
                            let mut p = module.to_vec();
                            p.push(name.to_string());
                            Prefix::Root(p)
                        }
                        (Prefix::Root(mut p), "super") => {
                            p.pop();
                            Prefix::Root(p)
                        }
                        (Prefix::Root(p), "self") => Prefix::Root(p),
                        (Prefix::Root(mut p), name) => {
                            p.push(name.to_string());
                            Prefix::Root(p)
                        }
                        _ => Prefix::Elsewhere,
                    };
                    if seg != "self" {
                        last = seg.to_string();
                    }
                    line = self.line(self.pos);
                    self.pos += 1;
                }
                _ => {
                    // Not a use tree after all (a macro fragment?): give up
                    // on this one.
                    self.pos += 1;
                    return;
                }
            }
        }
    }

    fn emit(&mut self, prefix: &Prefix, name: &str, line: usize) {
        if let Prefix::Root(path) = prefix {
            if let Some(last) = path.last() {
                // `a::{self}` brings in `a` itself.
                let name = if name.is_empty() { last } else { name };
                self.out.push(Reference {
                    path: path.clone(),
                    name: name.to_string(),
                    line,
                });
            }
        }
    }
}

/// An identifier that can be a path segment (not a keyword of paths).
fn is_name(tok: &str) -> bool {
    tok.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && !matches!(tok, "crate" | "super" | "self" | "Self" | "as")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// First segments of the references in `src` read as module `module`,
    /// leaving out its own top-level module (as the check does).
    fn tops(src: &str, module: &[&str]) -> Vec<String> {
        references(src, &s(module), &[])
            .into_iter()
            .map(|r| r.path[0].clone())
            .filter(|top| module.first() != Some(&top.as_str()))
            .collect()
    }

    #[test]
    fn module_paths_of_files() {
        assert_eq!(
            module_path("fs/ext4/extent.rs"),
            s(&["fs", "ext4", "extent"])
        );
        assert_eq!(module_path("fs/mod.rs"), s(&["fs"]));
        assert_eq!(module_path("plan.rs"), s(&["plan"]));
        assert!(module_path("lib.rs").is_empty());
        assert!(module_path("main.rs").is_empty());
    }

    #[test]
    fn plain_pub_and_grouped_uses() {
        let src = "use crate::fetch::Net;\npub use crate::config::{Config, Item};\n\
                   pub(crate) use crate::{fs::ext4::{Ext4Builder, Ino}, partition, progress::Reporter as R};\n\
                   use std::io::{self, Read};\nuse serde::Deserialize;";
        assert_eq!(
            tops(src, &["plan"]),
            s(&[
                "fetch",
                "config",
                "config",
                "fs",
                "fs",
                "partition",
                "progress"
            ])
        );
        let refs = references(src, &s(&["plan"]), &[]);
        assert_eq!(refs[0].name, "Net");
        assert_eq!(refs[6].name, "R");
        assert_eq!(refs[6].line, 3);
        assert_eq!(refs[4].path, s(&["fs", "ext4", "Ino"]));
    }

    #[test]
    fn nested_groups_self_and_glob() {
        let src = "use crate::{a::{self, b::{c, d}}, e::*, {f::g}};";
        let refs = references(src, &s(&["x"]), &[]);
        let paths: Vec<Vec<String>> = refs.iter().map(|r| r.path.clone()).collect();
        assert_eq!(
            paths,
            [
                s(&["a"]),
                s(&["a", "b", "c"]),
                s(&["a", "b", "d"]),
                s(&["e"]),
                s(&["f", "g"])
            ]
        );
        assert_eq!(refs[0].name, "a");
        assert_eq!(refs[3].name, "*");
    }

    #[test]
    fn super_counts_only_when_it_reaches_the_root() {
        // From fs/ext4/extent.rs, super::super is `fs`: not a top-level import.
        assert!(tops(
            "use super::super::bytes::get_u16;",
            &["fs", "ext4", "extent"]
        )
        .is_empty());
        // From fs/ext4.rs it is the root, so `partition` is a top-level module.
        assert_eq!(
            tops("use super::super::partition::W;", &["fs", "ext4"]),
            s(&["partition"])
        );
        assert_eq!(
            tops("use super::{super::partition::W, x};", &["fs", "ext4"]),
            s(&["partition"])
        );
        // In code, too.
        assert_eq!(
            tops("fn f() { super::super::oci::pull(); }", &["plan", "x"]),
            s(&["oci"])
        );
        assert!(tops("fn f() { super::x(); }", &["plan", "x"]).is_empty());
    }

    #[test]
    fn inline_modules_deepen_super() {
        let src = "mod inner { use super::super::fetch::Net; }\nuse super::super::oci::X;";
        // In plan/a.rs: inner's super::super is `plan`; the file's is the root.
        assert_eq!(tops(src, &["plan", "a"]), s(&["oci"]));
    }

    #[test]
    fn paths_in_code() {
        let src = "fn f() -> crate::error::Result<()> { let n = crate::fetch::Net::new(); $crate::progress::x!(); Ok(()) }\n\
                   pub(crate) fn g() {}\npub(super) fn h() {}";
        assert_eq!(tops(src, &["plan"]), s(&["error", "fetch", "progress"]));
    }

    #[test]
    fn comments_and_strings_do_not_count() {
        let src = "// use crate::a::X;\n/// see [`crate::b`]\n/* crate::c */\n\
                   const S: &str = \"use crate::d;\"; const R: &str = r#\"crate::e\"#;\n\
                   const C: char = '{'; use crate::f::Y;";
        assert_eq!(tops(src, &["x"]), s(&["f"]));
    }

    #[test]
    fn cfg_test_items_are_skipped() {
        let src = "use crate::a::X;\n#[cfg(test)]\nmod tests { use crate::b::Y; fn t() { crate::c::z(); } }\n\
                   #[cfg(test)]\n#[allow(dead_code)]\nuse crate::d::W;\n\
                   #[cfg(test)] fn helper() -> [u8; 4] { crate::e::f() }\nuse crate::g::V;";
        assert_eq!(tops(src, &["x"]), s(&["a", "g"]));
        assert!(tops("#![cfg(test)]\nuse crate::a::X;", &["x"]).is_empty());
    }

    #[test]
    fn a_module_names_its_children_bare() {
        let src = "pub use hit::{CopyError, Hit};\nuse other::X;\nmod inner { use hit::Y; }";
        let refs = references(src, &s(&["cache"]), &s(&["hit"]));
        let paths: Vec<Vec<String>> = refs.into_iter().map(|r| r.path).collect();
        assert_eq!(
            paths,
            [
                s(&["cache", "hit", "CopyError"]),
                s(&["cache", "hit", "Hit"])
            ]
        );
    }

    #[test]
    fn the_root_names_its_modules_bare() {
        let src = "pub mod build;\npub use build::{run, Options as BuildOptions};\nuse std::io;";
        let refs = references(src, &[], &s(&["build"]));
        let got: Vec<(Vec<String>, String)> = refs.into_iter().map(|r| (r.path, r.name)).collect();
        assert_eq!(
            got,
            [
                (s(&["build", "run"]), "run".to_string()),
                (s(&["build", "Options"]), "BuildOptions".to_string())
            ]
        );
    }
}
