//! Downloads that resume after a crash (issue 25, docs/spec.md §8): a
//! build killed with `kill -9` mid-download leaves its partial fill in the
//! cache, listed by `--show-cache` with its percentage; the next build
//! continues it with `Range` + `If-Range`, and nginx's access log shows the
//! file served about once in all. A file changed on the server meanwhile
//! (new ETag) is downloaded whole again; two builds racing for one partial
//! both make right images, one resuming, the other waiting for it.
//!
//! The file is 128 MiB served by nginx at `limit_rate 32m` (4 s whole): the
//! issue asks for 1 GiB; 128 MiB keeps the three scenarios near 30 s while
//! the kill still lands after ≥ 40 % arrived (waited for on the partial's
//! length, not on time) and the 1.1× bound (13 MiB of slack) still has to
//! come from resuming, not from luck.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::env::Env;
use common::image::{self, fsck_p3, BIN};
use common::servers::Nginx;
use common::{digest, run};

const SIZE: u64 = 128 << 20;

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs", "sha256sum", "dd", "touch"])
}

/// `path`: SIZE random bytes, its mtime `mtime` (nginx's ETag is
/// mtime-size: a new mtime is a new ETag).
fn random_file(path: &Path, mtime: u64) {
    let (code, out) = run(Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", path.display()))
        .args(["bs=1M", &format!("count={}", SIZE >> 20), "status=none"]));
    assert_eq!(code, 0, "dd: {out}");
    let (code, out) = run(Command::new("touch")
        .arg("-d")
        .arg(format!("@{mtime}"))
        .arg(path));
    assert_eq!(code, 0, "touch: {out}");
}

fn build_cmd(cfg: &Path, out: &Path, cache: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--cache-dir").arg(cache).arg(cfg).arg(out);
    c
}

/// The partial download's data file in `cache` (one at most here).
fn partial_len(cache: &Path) -> u64 {
    std::fs::read_dir(cache.join("v1/partial"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

/// Start a build and `kill -9` it once its partial download holds ≥ 40 %
/// of the file (waited for on the file, never on time).
fn killed_at_40_percent(cfg: &Path, out: &Path, cache: &Path) -> u64 {
    let mut child: Child = build_cmd(cfg, out, cache)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let held = loop {
        let held = partial_len(cache);
        if held * 10 >= SIZE * 4 {
            break held;
        }
        assert!(child.try_wait().unwrap().is_none(), "the build ended early");
        assert!(t0.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    held
}

/// (status, body bytes) of every GET of `/name` in nginx's access log
/// (the combined format: `"GET /name HTTP/1.1" 206 1234 ...`).
fn gets(dir: &Path, name: &str) -> Vec<(u16, u64)> {
    let log = std::fs::read_to_string(dir.join("nginx-access.log")).unwrap_or_default();
    log.lines()
        .filter_map(|l| {
            l.split_once(&format!("\"GET /{name} "))?
                .1
                .split_once("\" ")
        })
        .map(|(_, rest)| {
            let mut f = rest.split_whitespace();
            let status = f.next().unwrap().parse().unwrap();
            let bytes = f.next().unwrap().parse().unwrap();
            (status, bytes)
        })
        .collect()
}

/// The image's `/data/f.bin` is `src`, byte for byte (debugfs dump, then
/// sha256sum of both), and p3 is clean.
fn assert_image_holds(out: &Path, src: &Path, scratch: &Path) {
    fsck_p3(out);
    let back = scratch.join(format!(
        "{}.f.bin",
        out.file_name().unwrap().to_string_lossy()
    ));
    image::dump_p3(out, "/f.bin", &back);
    assert_eq!(
        digest("sha256sum", &back),
        digest("sha256sum", src),
        "{}: /f.bin differs from the served file",
        out.display()
    );
    std::fs::remove_file(back).unwrap();
}

fn show_cache(cache: &Path, json: bool) -> String {
    let mut c = Command::new(BIN);
    c.arg("--show-cache").arg("--cache-dir").arg(cache);
    if json {
        c.arg("--json");
    }
    let (code, out) = run(&mut c);
    assert_eq!(code, 0, "{out}");
    out
}

struct Scene {
    env: Env,
    ng: Nginx,
    cache: PathBuf,
}

impl Scene {
    fn new() -> Option<Self> {
        let env = Env::new();
        let ng = Nginx::start_with(env.tmp.path(), "limit_rate 32m;")?;
        let cache = env.path("cache");
        Some(Self { env, ng, cache })
    }

    /// A config downloading `/name` to `/data/f.bin`.
    fn config(&self, name: &str) -> PathBuf {
        self.env
            .config(&format!("{name}.yaml"), &[("f.bin", &self.ng.url(name))])
    }
}

#[test]
fn a_download_killed_mid_way_is_continued_by_the_next_build() {
    if !tools() {
        return;
    }
    let Some(s) = Scene::new() else { return };
    let src = s.ng.root.join("a.bin");
    random_file(&src, 1_700_000_000);
    let cfg = s.config("a.bin");

    let held = killed_at_40_percent(&cfg, &s.env.path("a1.img"), &s.cache);
    assert!(
        std::fs::read_dir(s.cache.join("v1/entries"))
            .unwrap()
            .next()
            .is_none(),
        "a killed fill publishes no entry"
    );
    // --show-cache lists the partial with its percentage.
    let text = show_cache(&s.cache, false);
    let pct: u64 = text
        .split("(partial, ")
        .nth(1)
        .and_then(|t| t.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no partial row: {text}"));
    assert!(pct >= 40, "{text}");
    let json: serde_json::Value = serde_json::from_str(&show_cache(&s.cache, true)).unwrap();
    let row = &json["entries"][0];
    assert!(row["partial_percent"].as_u64().unwrap() >= 40, "{json}");
    assert!(row["size"].as_u64().unwrap() >= held, "{json}");

    let out = s.env.path("a2.img");
    let (code, log) = run(&mut build_cmd(&cfg, &out, &s.cache));
    assert_eq!(code, 0, "{log}");
    assert_image_holds(&out, &src, s.env.tmp.path());
    assert_eq!(partial_len(&s.cache), 0, "the partial became the blob");
    let served = gets(s.env.tmp.path(), "a.bin");
    assert!(
        served.iter().any(|&(st, _)| st == 206),
        "no ranged GET: {served:?}"
    );
    let total: u64 = served.iter().map(|&(_, b)| b).sum();
    eprintln!("killed at {held} bytes; nginx served (status, bytes): {served:?}, {total} in all");
    assert!(
        total * 10 <= SIZE * 11,
        "served {total} bytes of a {SIZE}-byte file: {served:?}"
    );
}

#[test]
fn a_file_changed_on_the_server_is_downloaded_whole_again() {
    if !tools() {
        return;
    }
    let Some(s) = Scene::new() else { return };
    let src = s.ng.root.join("b.bin");
    random_file(&src, 1_700_000_000);
    let cfg = s.config("b.bin");
    killed_at_40_percent(&cfg, &s.env.path("b1.img"), &s.cache);
    // New content, new mtime: a new ETag.
    random_file(&src, 1_700_000_100);
    let before = gets(s.env.tmp.path(), "b.bin").len();
    let out = s.env.path("b2.img");
    let (code, log) = run(&mut build_cmd(&cfg, &out, &s.cache));
    assert_eq!(code, 0, "{log}");
    assert_image_holds(&out, &src, s.env.tmp.path());
    let after = gets(s.env.tmp.path(), "b.bin");
    assert_eq!(
        after[before..],
        [(200, SIZE)],
        "one whole GET of the new file"
    );
}

#[test]
fn two_builds_racing_for_one_partial_both_make_right_images() {
    if !tools() {
        return;
    }
    let Some(s) = Scene::new() else { return };
    let src = s.ng.root.join("c.bin");
    random_file(&src, 1_700_000_000);
    let cfg = s.config("c.bin");
    killed_at_40_percent(&cfg, &s.env.path("c0.img"), &s.cache);
    let outs = [s.env.path("c1.img"), s.env.path("c2.img")];
    let children: Vec<Child> = outs
        .iter()
        .map(|o| {
            build_cmd(&cfg, o, &s.cache)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, out) in children.into_iter().zip(&outs) {
        let done = child.wait_with_output().unwrap();
        assert!(
            done.status.success(),
            "{}: {}",
            out.display(),
            String::from_utf8_lossy(&done.stderr)
        );
        assert_image_holds(out, &src, s.env.tmp.path());
    }
    let served = gets(s.env.tmp.path(), "c.bin");
    let ranged = served.iter().filter(|&&(st, _)| st == 206).count();
    assert_eq!(ranged, 1, "one build resumed: {served:?}");
    let total: u64 = served.iter().map(|&(_, b)| b).sum();
    assert!(
        total * 10 <= SIZE * 11,
        "served {total} bytes of a {SIZE}-byte file: {served:?}"
    );
}
