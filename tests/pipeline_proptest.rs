//! Property test of the whole pipeline: random configs mixing every item
//! kind — inline text, base64, local files, HTTP downloads, archives of
//! every `via` (tar, gztar, bztar, xztar, zip), prebuilt container images,
//! `write_config`, `offspot` — each built by the binary, its data
//! partition checked by e2fsck and read back with debugfs `rdump`, its
//! `offspot.yaml` read back with mtools, all compared with what the config
//! asked for.
//!
//! 4 cases by default (CI); the long mode is `IC_PIPELINE_CASES=200`.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use base64::Engine;
use common::image::{fsck_p3, image_creator, make_base, p3_spec, sfdisk_json, write_config};
use common::servers::{Behaviour, Faulty};
use common::{rdump, run};
use proptest::prelude::*;

/// One item of a random config.
#[derive(Debug, Clone)]
enum Item {
    Inline(String),
    Base64(Vec<u8>),
    Local(Vec<u8>),
    Http(Vec<u8>),
    /// An archive: its `via` and the seed of its tree.
    Archive(&'static str, u64),
    /// A prebuilt docker-archive given by `url`.
    Oci(Vec<u8>),
}

const VIAS: [&str; 5] = ["tar", "gztar", "bztar", "xztar", "zip"];

fn data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..max, any::<u64>()).prop_map(|(len, seed)| common::bytes(seed, len))
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        "[a-z0-9][a-z0-9 ]{0,30}[a-z0-9]".prop_map(Item::Inline),
        data(3000).prop_map(Item::Base64),
        data(300_000).prop_map(Item::Local),
        data(300_000).prop_map(Item::Http),
        (0..VIAS.len(), any::<u64>()).prop_map(|(v, s)| Item::Archive(VIAS[v], s)),
        (1..200_000usize, any::<u64>()).prop_map(|(len, s)| Item::Oci(common::bytes(s, len))),
    ]
}

/// A small random tree: nested directories, files of a few sizes, a
/// symlink inside it.
fn make_tree(root: &Path, seed: u64) {
    let r = common::bytes(seed, 64);
    std::fs::create_dir_all(root).unwrap();
    let files = 1 + usize::from(r[0] % 6);
    for i in 0..files {
        let depth = usize::from(r[1 + i] % 3);
        let mut dir = root.to_path_buf();
        for d in 0..depth {
            dir = dir.join(format!("d{d}{}", r[10 + i] % 3));
        }
        std::fs::create_dir_all(&dir).unwrap();
        let len = usize::from(r[20 + i]) * 197;
        std::fs::write(
            dir.join(format!("f{i}")),
            common::bytes(seed + i as u64, len),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("f0", root.join("link")).unwrap();
}

/// Quote for YAML (JSON strings are YAML double-quoted scalars).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

struct Case {
    items: Vec<Item>,
    write_config: bool,
    offspot: Vec<(String, String)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(item(), 1..7),
        any::<bool>(),
        prop::collection::vec(("[a-z]{1,8}", "[a-z]{1,8}"), 0..4),
    )
        .prop_map(|(items, write_config, offspot)| Case {
            items,
            write_config,
            offspot,
        })
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<String> = self
            .items
            .iter()
            .map(|i| match i {
                Item::Inline(s) => format!("inline({})", s.len()),
                Item::Base64(d) => format!("base64({})", d.len()),
                Item::Local(d) => format!("local({})", d.len()),
                Item::Http(d) => format!("http({})", d.len()),
                Item::Archive(v, s) => format!("{v}(seed {s})"),
                Item::Oci(d) => format!("oci({})", d.len()),
            })
            .collect();
        write!(
            f,
            "{kinds:?} write_config={} offspot={:?}",
            self.write_config, self.offspot
        )
    }
}

/// Build `case` on `base` in a fresh directory and check everything.
fn check(base: &Path, rootfs: u64, case: &Case) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut routes = Vec::new();
    for (i, it) in case.items.iter().enumerate() {
        if let Item::Http(body) = it {
            let name: &'static str = Box::leak(format!("h{i}").into_boxed_str());
            routes.push((name, Behaviour::Ok(Arc::new(body.clone()))));
        }
    }
    let srv = Faulty::start(routes);
    let mut files = String::new();
    let mut oci = String::new();
    let mut trees: Vec<(usize, PathBuf, &str)> = Vec::new();
    for (i, it) in case.items.iter().enumerate() {
        let to = format!("/data/i{i}");
        match it {
            Item::Inline(s) => files += &format!("  - to: {to}/f\n    content: {}\n", q(s)),
            Item::Base64(b) => {
                let text = base64::engine::general_purpose::STANDARD.encode(b);
                files += &format!(
                    "  - to: {to}/f\n    via: base64\n    content: {}\n",
                    q(&text)
                );
            }
            Item::Local(b) => {
                let p = d.join(format!("local{i}"));
                std::fs::write(&p, b).unwrap();
                files += &format!("  - to: {to}/f\n    url: {}\n", q(&p.to_string_lossy()));
            }
            Item::Http(_) => {
                files += &format!("  - to: {to}/f\n    url: {}\n", srv.url(&format!("h{i}")))
            }
            Item::Archive(via, seed) => {
                let src = d.join(format!("tree{i}"));
                make_tree(&src, *seed);
                let ext = if *via == "zip" { "zip" } else { "tar" };
                let ar = d.join(format!("a{i}.{ext}"));
                common::archives::pack(via, &src, &ar);
                files += &format!(
                    "  - to: {to}\n    url: {}\n    via: {via}\n",
                    q(&ar.to_string_lossy())
                );
                trees.push((i, src, via));
            }
            Item::Oci(b) => {
                let p = d.join(format!("oci{i}.tar"));
                std::fs::write(&p, b).unwrap();
                oci += &format!(
                    "  - ident: ghcr.io/prop/img{i}:1\n    filesize: {}\n    fullsize: {}\n    url: {}\n",
                    b.len(),
                    b.len() * 2,
                    q(&p.to_string_lossy())
                );
            }
        }
    }
    let mut extra = String::new();
    if !files.is_empty() {
        extra += &format!("files:\n{files}");
    }
    if !oci.is_empty() {
        extra += &format!("oci_images:\n{oci}");
    }
    if case.write_config {
        extra += "write_config: true\n";
    }
    if !case.offspot.is_empty() {
        extra += "offspot:\n";
        for (k, v) in &case.offspot {
            extra += &format!("  {}: {}\n", q(k), q(v));
        }
    }
    let cfg = write_config(d, base, rootfs, &extra);
    let out = d.join("out.img");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{case:?}\n{extra}\n{log}");
    fsck_p3(&out);
    let got = rdump(&PathBuf::from(p3_spec(&out)), &d.join("dump"));
    for (i, it) in case.items.iter().enumerate() {
        let f = got.join(format!("i{i}/f"));
        let want: Option<Vec<u8>> = match it {
            Item::Inline(s) => Some(s.trim().as_bytes().to_vec()),
            Item::Base64(b) | Item::Local(b) | Item::Http(b) => Some(b.clone()),
            Item::Archive(..) => None,
            Item::Oci(b) => {
                let name = format!("images/ghcr.io_prop_img{i}_1_linuxarm64v8.tar");
                assert!(std::fs::read(got.join(&name)).unwrap() == *b, "{name}");
                None
            }
        };
        if let Some(w) = want {
            assert!(std::fs::read(&f).unwrap() == w, "item {i} ({case:?})");
        }
    }
    for (i, src, via) in &trees {
        common::archives::assert_same_tree(src, &got.join(format!("i{i}")), 0o777, via);
    }
    if case.write_config {
        assert_eq!(
            std::fs::read(got.join("image.yaml")).unwrap(),
            std::fs::read(&cfg).unwrap()
        );
    }
    if !case.offspot.is_empty() {
        let (_, parts) = sfdisk_json(&out);
        let at = format!("{}@@{}", out.display(), parts[0].start);
        let (code, yaml) = run(Command::new("mtype").args(["-i", &at, "::offspot.yaml"]));
        assert_eq!(code, 0, "{yaml}");
        let m: serde_norway::Mapping = serde_norway::from_str(&yaml).unwrap();
        let want: serde_norway::Mapping = case
            .offspot
            .iter()
            .map(|(k, v)| (k.clone().into(), v.clone().into()))
            .collect();
        assert_eq!(m, want, "{yaml}");
    }
}

#[test]
fn random_configs_of_every_item_kind_build_and_read_back() {
    if !common::image::tools(&[
        "e2fsck", "debugfs", "mtype", "gzip", "bzip2", "xz", "zip", "tar",
    ]) {
        return;
    }
    let cases: u32 = std::env::var("IC_PIPELINE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let t0 = std::time::Instant::now();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: 16,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&case(), |c| {
        check(&base, rootfs, &c);
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    eprintln!(
        "{cases} random configs built and checked in {:?}",
        t0.elapsed()
    );
}
