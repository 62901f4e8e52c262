//! The download cache on object storage (`--cache-dir s3://bucket/prefix`),
//! end to end with the real binary against a real S3-compatible server
//! (moto_server on loopback) and a real origin (nginx): cold and warm
//! builds, the origin stopped, `--show-cache`, `--check`, a store that
//! can't be used (unreachable, wrong credentials, missing bucket: a
//! warning and exit 0), an unknown scheme (exit 3), three workers on one
//! bucket, a worker killed mid-upload, and eviction while another reads.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::image::{self, fsck_p3, make_base, read_p3, BIN};
use common::moto::{client_env, free_port, Moto};
use common::run;
use common::servers::{Behaviour, Faulty, Nginx};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const EPOCH: &str = "1700000000";
const BUCKET: &str = "cache";

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs"])
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A base image and a scratch directory.
struct Env {
    tmp: tempfile::TempDir,
    base: PathBuf,
    rootfs: u64,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (base, rootfs) = make_base(tmp.path());
        Self { tmp, base, rootfs }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// A config named `name` with one `files[]` download per (to, url).
    fn config(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let mut s = format!(
            "base: {{source: {}, rootfs_size: {}}}\nfiles:\n",
            self.base.display(),
            self.rootfs
        );
        for (to, url) in files {
            s.push_str(&format!("  - to: /data/{to}\n    url: {url}\n"));
        }
        let p = self.path(name);
        std::fs::write(&p, s).unwrap();
        p
    }
}

fn progress_path(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.progress.json", out.display()))
}

/// A build command with `--cache-dir URL`, `SOURCE_DATE_EPOCH` fixed, a
/// progress file beside the output, and `env` (the store's `AWS_*`).
fn build_cmd(
    cfg: &Path,
    out: &Path,
    cache: &str,
    env: &[(&'static str, String)],
    extra: &[&str],
) -> Command {
    let mut c = Command::new(BIN);
    c.arg("-X")
        .arg("--cache-dir")
        .arg(cache)
        .arg("--progress-file")
        .arg(progress_path(out))
        .args(extra)
        .arg(cfg)
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH);
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn build(
    cfg: &Path,
    out: &Path,
    cache: &str,
    env: &[(&'static str, String)],
    extra: &[&str],
) -> (i32, String) {
    run(&mut build_cmd(cfg, out, cache, env, extra))
}

/// `from_cache` of the progress file's item whose name ends with `suffix`.
fn from_cache(out: &Path, suffix: &str) -> bool {
    let text = std::fs::read_to_string(progress_path(out)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let items = v["items"].as_array().unwrap();
    let item = items
        .iter()
        .find(|i| i["name"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no item {suffix} in {text}"));
    item["from_cache"].as_bool().unwrap()
}

/// The stored entries under `prefix` (JSON: `{blob, entry}`).
fn entries(m: &Moto, prefix: &str) -> Vec<serde_json::Value> {
    m.dump(BUCKET, &format!("{prefix}/v1/entries/"))
        .into_values()
        .filter_map(|o| o.text)
        .map(|t| serde_json::from_str(&t).unwrap())
        .collect()
}

/// Every entry's blob exists with its size and sha256, and every blob
/// belongs to an entry (no extra copies left). Returns the entries.
fn assert_consistent(m: &Moto, prefix: &str) -> Vec<serde_json::Value> {
    let all = m.dump(BUCKET, &format!("{prefix}/v1/"));
    let es: Vec<serde_json::Value> = all
        .values()
        .filter_map(|o| o.text.as_deref())
        .map(|t| serde_json::from_str(t).unwrap())
        .collect();
    let blobs: Vec<&String> = all.keys().filter(|k| k.contains("/v1/blobs/")).collect();
    for e in &es {
        let key = format!("{prefix}/v1/blobs/{}", e["blob"].as_str().unwrap());
        let blob = all
            .get(&key)
            .unwrap_or_else(|| panic!("blob of {e} missing"));
        assert_eq!(blob.size, e["entry"]["size"].as_u64().unwrap(), "{e}");
        assert_eq!(blob.sha256, e["entry"]["sha256"].as_str().unwrap(), "{e}");
    }
    assert_eq!(
        blobs.len(),
        es.len(),
        "one blob per entry, no extra copies: {blobs:?} vs {es:?}"
    );
    es
}

/// A server with the bucket, nginx serving `files`, and their URLs.
struct World {
    env: Env,
    moto: Moto,
    ng: Nginx,
}

fn world() -> Option<World> {
    if !tools() {
        return None;
    }
    let env = Env::new();
    let moto = Moto::start(env.tmp.path(), &[])?;
    moto.create_bucket(BUCKET);
    let ng = Nginx::start(env.tmp.path())?;
    Some(World { env, moto, ng })
}

/// Cold build uploads every download once (one blob per entry); a warm
/// rebuild with the origin stopped is served from the bucket, byte-identical
/// (same `SOURCE_DATE_EPOCH`), its filesystem clean; `--show-cache` and
/// `--check` read the bucket.
#[test]
fn s3_warm_rebuild_with_the_origin_stopped_is_byte_identical() {
    let Some(w) = world() else {
        return;
    };
    let (env, moto) = (&w.env, &w.moto);
    // Larger than a multipart part (16 MiB) and a ranged GET (8 MiB).
    let big = common::bytes(1, 21 * MIB + 123);
    let small = common::bytes(2, 4097);
    std::fs::write(w.ng.root.join("big.bin"), &big).unwrap();
    std::fs::write(w.ng.root.join("small.bin"), &small).unwrap();
    let (ub, us) = (w.ng.url("big.bin"), w.ng.url("small.bin"));
    let cfg = env.config("c.yaml", &[("big.bin", &ub), ("sub/small.bin", &us)]);
    let url = format!("s3://{BUCKET}/workers/a");
    let cold = env.path("cold.img");
    let (code, log) = build(&cfg, &cold, &url, &moto.env(), &[]);
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("download cache"), "no cache warning: {log}");
    assert!(!from_cache(&cold, "big.bin"));
    let es = assert_consistent(moto, "workers/a");
    assert_eq!(es.len(), 2, "{es:?}");
    let e = es.iter().find(|e| e["entry"]["source"] == ub).unwrap();
    assert_eq!(e["entry"]["sha256"].as_str().unwrap(), sha256_hex(&big));

    let ng = w.ng;
    drop(ng);
    let warm = env.path("warm.img");
    let (code, log) = build(&cfg, &warm, &url, &moto.env(), &["-T", "3"]);
    assert_eq!(code, 0, "{log}");
    assert!(from_cache(&warm, "big.bin") && from_cache(&warm, "small.bin"));
    assert!(
        std::fs::read(&cold).unwrap() == std::fs::read(&warm).unwrap(),
        "warm image differs from the cold one"
    );
    fsck_p3(&warm);
    assert!(read_p3(&warm, "/big.bin", &env.path("b")) == big);
    assert!(read_p3(&warm, "/sub/small.bin", &env.path("s")) == small);
    for e in assert_consistent(moto, "workers/a") {
        assert_eq!(e["entry"]["use_count"].as_u64(), Some(1), "{e}");
    }

    // --show-cache on the bucket, text and JSON.
    let mut c = Command::new(BIN);
    c.args(["--show-cache", "--json", "--cache-dir", &url]);
    for (k, v) in moto.env() {
        c.env(k, v);
    }
    let (code, out) = run(&mut c);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value =
        serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    assert_eq!(report["entries"].as_array().unwrap().len(), 2, "{out}");
    let mut c = Command::new(BIN);
    c.args(["--show-cache", "--cache-dir", &url]);
    for (k, v) in moto.env() {
        c.env(k, v);
    }
    let (code, out) = run(&mut c);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&ub), "{out}");

    // --check: hits, nothing changed.
    let before = moto.dump(BUCKET, "workers/a/");
    let (code, out) = build(&cfg, &env.path("chk.img"), &url, &moto.env(), &["--check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cache hit"), "{out}");
    assert_eq!(moto.dump(BUCKET, "workers/a/"), before);
}

/// Builds the config of one download from nginx with `--cache-dir url` and
/// `env`, expecting exit 0, a warning naming the cache, and a correct
/// image; `--check` reports the same. Returns the build's output.
fn assert_builds_without_the_cache(
    env: &Env,
    ng: &Nginx,
    url: &str,
    store_env: &[(&'static str, String)],
    name: &str,
) -> String {
    let data = common::bytes(7, MIB + 17);
    std::fs::write(ng.root.join("f.bin"), &data).unwrap();
    let cfg = env.config(&format!("{name}.yaml"), &[("f.bin", &ng.url("f.bin"))]);
    let out = env.path(&format!("{name}.img"));
    let t0 = Instant::now();
    let (code, log) = build(&cfg, &out, url, store_env, &[]);
    assert_eq!(code, 0, "{name}: {log}");
    assert!(
        log.contains("warning: download cache") && log.contains("building without it"),
        "{name}: one warning: {log}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(60),
        "{name}: an unusable store costs seconds, not minutes ({:?})",
        t0.elapsed()
    );
    fsck_p3(&out);
    assert!(read_p3(&out, "/f.bin", &env.path(&format!("{name}.back"))) == data);
    let (code, chk) = build(&cfg, &env.path("chk.img"), url, store_env, &["--check"]);
    assert_eq!(code, 0, "{name} --check: {chk}");
    assert!(
        chk.contains("warning: download cache"),
        "{name}: --check reports the store: {chk}"
    );
    log
}

/// A store that can't be used never fails a build: an endpoint nobody
/// listens on (a free loopback port), a missing bucket, credentials the
/// server refuses, and a server answering 503 to everything each give a
/// warning, exit 0 and a correct image; `--check` reports it.
#[test]
fn s3_an_unusable_store_is_a_warning_and_the_build_succeeds() {
    let Some(w) = world() else {
        return;
    };
    let (env, moto, ng) = (&w.env, &w.moto, &w.ng);

    let dead = client_env(&format!("http://127.0.0.1:{}", free_port()));
    let log = assert_builds_without_the_cache(env, ng, "s3://cache/x", &dead, "unreachable");
    assert!(log.contains("127.0.0.1"), "names the endpoint: {log}");

    let log = assert_builds_without_the_cache(env, ng, "s3://no-such-bucket/x", &moto.env(), "nobucket");
    assert!(log.contains("s3://no-such-bucket/x"), "{log}");

    // moto checks credentials once INITIAL_NO_AUTH_ACTION_COUNT is 0:
    // ours are not known to it.
    let strict = Moto::start(env.tmp.path(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
    let log = assert_builds_without_the_cache(env, ng, "s3://cache/x", &strict.env(), "badcreds");
    assert!(log.contains("403") || log.contains("InvalidAccessKeyId"), "{log}");
    drop(strict);

    // A 5xx storm: every answer 503 (Retry-After: 1), retried a little.
    let storm = Faulty::start(vec![(
        "cache?delimiter=%2F&list-type=2&prefix=x%2F",
        Behaviour::Unavailable {
            body: Arc::new(Vec::new()),
            times: usize::MAX,
        },
    )]);
    let storm_url = storm.url("");
    assert_builds_without_the_cache(
        env,
        ng,
        "s3://cache/x",
        &client_env(storm_url.trim_end_matches('/')),
        "storm",
    );
    assert!(storm.requests().len() >= 2, "retried: {:?}", storm.requests());
}

/// A `--cache-dir` URL of a scheme we don't know is bad input (exit 3),
/// for a build and for `--show-cache`; nothing is built.
#[test]
fn s3_an_unknown_scheme_is_exit_3() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let cfg = env.config("c.yaml", &[]);
    let out = env.path("o.img");
    for url in ["ftp://host/cache", "http://host/cache"] {
        let (code, log) = build(&cfg, &out, url, &[], &[]);
        assert_eq!(code, 3, "{url}: {log}");
        assert!(log.contains(url), "{log}");
        assert!(!out.exists());
        let (code, log) = run(Command::new(BIN).args(["--show-cache", "--cache-dir", url]));
        assert_eq!(code, 3, "{url}: {log}");
    }
}
