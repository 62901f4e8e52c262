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

use common::env::{sha256_hex, Env};
use common::image::{self, fsck_p3, read_p3, BIN};
use common::moto::{client_env, free_port, Moto};
use common::run;
use common::servers::{Behaviour, Faulty, Nginx};

const MIB: usize = 1 << 20;
const EPOCH: &str = "1700000000";
const BUCKET: &str = "cache";

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs"])
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
    // Several multipart parts (8 MiB) and ranged GETs (8 MiB).
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
    let report: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
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

    let log =
        assert_builds_without_the_cache(env, ng, "s3://no-such-bucket/x", &moto.env(), "nobucket");
    assert!(log.contains("s3://no-such-bucket/x"), "{log}");

    // moto checks credentials once INITIAL_NO_AUTH_ACTION_COUNT is 0:
    // ours are not known to it.
    let strict = Moto::start(env.tmp.path(), &[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]).unwrap();
    let log = assert_builds_without_the_cache(env, ng, "s3://cache/x", &strict.env(), "badcreds");
    assert!(
        log.contains("403") || log.contains("InvalidAccessKeyId"),
        "{log}"
    );
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
    assert!(
        storm.requests().len() >= 2,
        "retried: {:?}",
        storm.requests()
    );
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

/// Every `/data/NAME` of `names` in `out` holds `data[NAME]`; fsck clean.
fn check_image(env: &Env, out: &Path, names: &[&str], data: &BTreeMap<&str, Vec<u8>>) {
    fsck_p3(out);
    for n in names {
        let back = env.path(&format!(
            "back-{}-{n}",
            out.file_name().unwrap().to_string_lossy()
        ));
        let got = read_p3(out, &format!("/{n}"), &back);
        assert!(got == data[n], "{}: /{n} differs", out.display());
        std::fs::remove_file(back).unwrap();
    }
}

/// Three worker processes, each with its own build directory, build
/// configs with overlapping URLs at the same time on one bucket, twice
/// (cold, then warm): every image is correct, and the bucket ends with one
/// entry per URL and exactly one blob per entry (a worker that lost the
/// race to publish deleted its copy).
#[test]
fn s3_three_workers_share_one_bucket() {
    let Some(w) = world() else {
        return;
    };
    let (env, moto) = (&w.env, &w.moto);
    let names = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"];
    let mut data = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        // Two of them span several multipart parts.
        let len = if i % 2 == 0 {
            3 * MIB + i
        } else {
            18 * MIB + i
        };
        let d = common::bytes(40 + i as u64, len);
        std::fs::write(w.ng.root.join(n), &d).unwrap();
        data.insert(*n, d);
    }
    let sets: [&[&str]; 3] = [
        &["a.bin", "b.bin", "c.bin"],
        &["c.bin", "b.bin", "d.bin"],
        &["d.bin", "e.bin", "b.bin", "c.bin"],
    ];
    let url = format!("s3://{BUCKET}/shared");
    for round in ["cold", "warm"] {
        let children: Vec<_> = sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                let files: Vec<(&str, String)> = set.iter().map(|n| (*n, w.ng.url(n))).collect();
                let refs: Vec<(&str, &str)> = files.iter().map(|(n, u)| (*n, u.as_str())).collect();
                let cfg = env.config(&format!("w{i}.yaml"), &refs);
                let out = env.path(&format!("{round}-{i}.img"));
                let bdir = env.path(&format!("build-{round}-{i}"));
                let mut c = build_cmd(
                    &cfg,
                    &out,
                    &url,
                    &moto.env(),
                    &["--build-dir", bdir.to_str().unwrap()],
                );
                c.stdout(Stdio::piped()).stderr(Stdio::piped());
                (out, c.spawn().unwrap())
            })
            .collect();
        for (i, (out, child)) in children.into_iter().enumerate() {
            let o = child.wait_with_output().unwrap();
            let log = String::from_utf8_lossy(&o.stderr);
            assert!(o.status.success(), "{round} worker {i}: {log}");
            assert!(!log.contains("download cache"), "{round} worker {i}: {log}");
            check_image(env, &out, sets[i], &data);
            if round == "warm" {
                for n in sets[i] {
                    assert!(from_cache(&out, n), "warm worker {i}: {n} from the bucket");
                }
            }
        }
        let es = assert_consistent(moto, "shared");
        assert_eq!(es.len(), names.len(), "{round}: one entry per URL: {es:?}");
        for e in &es {
            let n = e["entry"]["source"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap();
            assert_eq!(
                e["entry"]["sha256"].as_str().unwrap(),
                sha256_hex(&data[n]),
                "{e}"
            );
        }
    }
}

/// `kill -9` of a worker in the middle of a download it is uploading (a
/// slow origin; killed once a multipart part has gone out): no entry and
/// no blob are visible (the unfinished multipart upload is listed only
/// among uploads, for the bucket's lifecycle rule to reclaim); the next
/// build is correct and publishes it.
#[test]
fn s3_a_worker_killed_during_upload_leaves_no_entry() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(moto) = Moto::start(env.tmp.path(), &[]) else {
        return;
    };
    moto.create_bucket(BUCKET);
    let body = Arc::new(common::bytes(14, 24 * MIB));
    let srv = Faulty::start(vec![(
        "slow",
        Behaviour::Slow {
            body: body.clone(),
            chunk: 256 * 1024,
            pause: Duration::from_millis(30),
        },
    )]);
    let url = format!("s3://{BUCKET}/k");
    let out = env.path("out.img");
    let cfg = env.config("slow.yaml", &[("f.bin", &srv.url("slow"))]);
    let mut c = build_cmd(&cfg, &out, &url, &moto.env(), &[]);
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let progress = progress_path(&out);
    let t0 = Instant::now();
    loop {
        let done = std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                v["items"]
                    .as_array()
                    .and_then(|a| a.iter().find(|i| i["name"] == "/data/f.bin").cloned())
            })
            .and_then(|i| i["bytes_done"].as_u64())
            .unwrap_or(0);
        // Past the first 8 MiB parts.
        if done > 18 * MIB as u64 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "build ended early");
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let left = moto.dump(BUCKET, "k/v1/");
    assert!(
        left.is_empty(),
        "nothing visible after a killed upload: {left:?}"
    );
    assert_eq!(
        moto.multipart_uploads(BUCKET),
        1,
        "the killed upload, unfinished"
    );

    let (code, log) = build(&cfg, &out, &url, &moto.env(), &[]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    assert!(read_p3(&out, "/f.bin", &env.path("a")) == *body);
    let es = assert_consistent(&moto, "k");
    assert_eq!(es.len(), 1, "{es:?}");
    assert_eq!(
        es[0]["entry"]["sha256"].as_str().unwrap(),
        sha256_hex(&body)
    );
}

/// A blob deleted behind an entry's back (evicted by another worker) makes
/// the next build download the file instead; eviction by one worker
/// (`max_num: 1` in the bucket's `policy.yaml`, so every build evicts at
/// its end) while another reads leaves every image correct and the bucket
/// consistent (no entry without its blob, no blob without its entry).
#[test]
fn s3_eviction_while_another_worker_reads() {
    let Some(w) = world() else {
        return;
    };
    let (env, moto) = (&w.env, &w.moto);
    let names = ["a.bin", "b.bin", "c.bin", "d.bin"];
    let mut data = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        let d = common::bytes(60 + i as u64, 12 * MIB + i);
        std::fs::write(w.ng.root.join(n), &d).unwrap();
        data.insert(*n, d);
    }
    let urls: Vec<String> = names.iter().map(|n| w.ng.url(n)).collect();
    let files: Vec<(&str, &str)> = names
        .iter()
        .zip(&urls)
        .map(|(n, u)| (*n, u.as_str()))
        .collect();
    let cfg = env.config("all.yaml", &files);
    let url = format!("s3://{BUCKET}/ev");
    let (code, log) = build(&cfg, &env.path("cold.img"), &url, &moto.env(), &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(assert_consistent(moto, "ev").len(), 4);

    // A blob gone: that file comes from the network, and is cached again.
    let es = entries(moto, "ev");
    let gone = es.iter().find(|e| e["entry"]["source"] == urls[1]).unwrap();
    moto.delete(
        BUCKET,
        &format!("ev/v1/blobs/{}", gone["blob"].as_str().unwrap()),
    );
    let out = env.path("fallback.img");
    let (code, log) = build(&cfg, &out, &url, &moto.env(), &[]);
    assert_eq!(code, 0, "{log}");
    check_image(env, &out, &names, &data);
    assert!(!from_cache(&out, "b.bin") && from_cache(&out, "a.bin"));
    assert_eq!(assert_consistent(moto, "ev").len(), 4);

    // Now every build evicts down to one entry at its end.
    moto.put(BUCKET, "ev/policy.yaml", "max_num: 1\n");
    let extra = common::bytes(99, 64 * 1024);
    std::fs::write(w.ng.root.join("x.bin"), &extra).unwrap();
    let xurl = w.ng.url("x.bin");
    let evictor_cfg = env.config("x.yaml", &[("x.bin", &xurl)]);
    let mut reader = build_cmd(
        &cfg,
        &env.path("reader.img"),
        &url,
        &moto.env(),
        &["-T", "1"],
    );
    let reader = reader
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..3 {
        let (code, log) = build(
            &evictor_cfg,
            &env.path(&format!("x{i}.img")),
            &url,
            &moto.env(),
            &[],
        );
        assert_eq!(code, 0, "evictor {i}: {log}");
    }
    let o = reader.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    check_image(env, &env.path("reader.img"), &names, &data);
    let es = assert_consistent(moto, "ev");
    assert_eq!(es.len(), 1, "max_num: 1 after the last build: {es:?}");
}
