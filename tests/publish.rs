//! `--publish URL` end to end with the real binary against a real
//! S3-compatible server (moto_server on loopback), the bucket read back by
//! an independent client (boto3): raw and `.zst` sets (the image's sha256
//! is `OUTPUT.json`'s, every side file is there, the JSON is not older than
//! the image), `--check`'s object URLs, an existing object (refused
//! without `-X`, replaced with it), stores that refuse us (unreachable, no
//! bucket, wrong credentials), a part that fails once (retried) or always
//! (aborted: nothing at the key, OUTPUT kept), and `kill -9` mid-upload.
//! The faults a real server can't be made to produce come from a proxy in
//! front of moto (`common::s3proxy`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::env::{sha256_hex, Env};
use common::image::BIN;
use common::moto::{client_env, free_port, Moto};
use common::s3proxy::{Fault, S3Proxy};
use common::{run, wait_for_event};

const MIB: usize = 1 << 20;
const BUCKET: &str = "pub";

/// A build command publishing `cfg` into `out` and `url` with the store's
/// `env`, `SOURCE_DATE_EPOCH` fixed.
fn build_cmd(
    cfg: &Path,
    out: &Path,
    url: &str,
    env: &[(&'static str, String)],
    extra: &[&str],
) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--publish")
        .arg(url)
        .args(extra)
        .arg(cfg)
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn build(
    cfg: &Path,
    out: &Path,
    url: &str,
    env: &[(&'static str, String)],
    extra: &[&str],
) -> (i32, String) {
    run(&mut build_cmd(cfg, out, url, env, extra))
}

/// A base and a config of one local file of `len` bytes (seed `seed`).
fn world(seed: u64, len: usize) -> (Env, PathBuf) {
    let env = Env::new();
    let cfg = config(&env, "c.yaml", seed, len);
    (env, cfg)
}

fn config(env: &Env, name: &str, seed: u64, len: usize) -> PathBuf {
    let data = env.path(&format!("{name}.bin"));
    std::fs::write(&data, common::bytes(seed, len)).unwrap();
    env.config(name, &[("f.bin", data.to_str().unwrap())])
}

fn moto(env: &Env) -> Option<Moto> {
    if !common::image::tools(&[]) {
        return None;
    }
    let m = Moto::start(env.tmp.path(), &[])?;
    m.create_bucket(BUCKET);
    Some(m)
}

fn side(out: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", out.display()))
}

fn json(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(side(out, ".json")).unwrap()).unwrap()
}

/// The set under `prefix` is exactly OUTPUT and its `suffixes`, byte for
/// byte the local files; the image's sha256 is OUTPUT.json's
/// `image_download_sha256`; the JSON is not older than the image.
fn assert_published(m: &Moto, prefix: &str, out: &Path, suffixes: &[&str]) {
    let name = out.file_name().unwrap().to_str().unwrap();
    let got = m.dump(BUCKET, prefix);
    let mut want: Vec<String> = suffixes
        .iter()
        .map(|s| format!("{prefix}{name}{s}"))
        .collect();
    want.push(format!("{prefix}{name}"));
    want.sort();
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    let image = &got[&format!("{prefix}{name}")];
    assert_eq!(
        image.sha256,
        json(out)["image_download_sha256"].as_str().unwrap()
    );
    assert_eq!(image.sha256, sha256_hex(&std::fs::read(out).unwrap()));
    assert_eq!(
        image.size,
        json(out)["image_download_size"].as_u64().unwrap()
    );
    for s in suffixes {
        let local = std::fs::read(side(out, s)).unwrap();
        assert_eq!(
            got[&format!("{prefix}{name}{s}")].sha256,
            sha256_hex(&local),
            "{s}"
        );
    }
    let times = m.last_modified(BUCKET, prefix);
    let t = |s: &str| times[&format!("{prefix}{name}{s}")];
    assert!(
        t(".json") >= t(""),
        "the JSON is older than the image: {times:?}"
    );
}

/// A raw OUTPUT with its bmap and a `.zst` OUTPUT (a prefix without the
/// trailing `/`) are published whole; `--check` shows each object's URL,
/// in upload order, and writes nothing.
#[test]
fn publish_raw_and_zst_outputs() {
    let (env, cfg) = world(1, 10 * MIB + 7);
    let Some(m) = moto(&env) else {
        return;
    };
    let raw = env.path("out.img");
    let progress = env.path("p.json");
    let (code, log) = build(
        &cfg,
        &raw,
        "s3://pub/a/",
        &m.env(),
        &["--bmap", "--progress-file", progress.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{log}");
    assert_published(&m, "a/", &raw, &[".bmap", ".json"]);
    assert!(log.contains("s3://pub/a/out.img.json"), "{log}");

    // The upload's bytes, as reported.
    let p = common::progress_snapshot(&progress).unwrap();
    let items = p["items"].as_array().unwrap();
    let item = items
        .iter()
        .find(|i| i["name"] == "s3://pub/a/out.img")
        .unwrap();
    assert_eq!(item["state"], "done");
    assert_eq!(
        item["bytes_done"].as_u64(),
        Some(std::fs::metadata(&raw).unwrap().len())
    );

    let zst = env.path("out.img.zst");
    let (code, log) = build(&cfg, &zst, "s3://pub/z", &m.env(), &["--torrent"]);
    assert_eq!(code, 0, "{log}");
    assert_published(&m, "z/", &zst, &[".torrent", ".json"]);

    let before = m.dump(BUCKET, "");
    let chk = env.path("chk.img");
    let (code, out) = build(
        &cfg,
        &chk,
        "s3://pub/a/",
        &m.env(),
        &["--check", "--bmap", "--torrent"],
    );
    assert_eq!(code, 0, "{out}");
    let urls: Vec<usize> = [
        "chk.img  to",
        "chk.img.bmap  to",
        "chk.img.torrent  to",
        "chk.img.json  to",
    ]
    .iter()
    .map(|u| out.find(u).unwrap_or_else(|| panic!("{u}: {out}")))
    .collect();
    assert!(urls.windows(2).all(|w| w[0] < w[1]), "JSON last: {out}");
    assert!(out.contains("s3://pub/a/chk.img.json"), "{out}");
    assert!(!chk.exists());
    assert_eq!(m.dump(BUCKET, ""), before);
}

/// An object at the image's key is refused without `-X` before anything
/// is built (and by `--check`); `-X` replaces the set.
#[test]
fn publish_an_existing_object_needs_overwrite() {
    let (env, cfg) = world(2, 3 * MIB);
    let Some(m) = moto(&env) else {
        return;
    };
    let first = env.path("out.img");
    let (code, log) = build(&cfg, &first, "s3://pub/x/", &m.env(), &[]);
    assert_eq!(code, 0, "{log}");
    let before = m.dump(BUCKET, "x/");

    std::fs::create_dir(env.path("again")).unwrap();
    let again = env.path("again/out.img");
    let other = config(&env, "other.yaml", 3, 3 * MIB);
    for extra in [&[][..], &["--check"]] {
        let (code, log) = build(&other, &again, "s3://pub/x/", &m.env(), extra);
        assert_eq!(code, 3, "{extra:?}: {log}");
        assert!(
            log.contains("s3://pub/x/out.img already exists (use -X/--overwrite"),
            "{log}"
        );
        assert!(!again.exists());
        assert_eq!(m.dump(BUCKET, "x/"), before);
    }

    let (code, log) = build(&other, &again, "s3://pub/x/", &m.env(), &["-X"]);
    assert_eq!(code, 0, "{log}");
    assert_published(&m, "x/", &again, &[".json"]);
    assert_ne!(m.dump(BUCKET, "x/"), before);
}

/// Stores that refuse us: unreachable from the start (exit 4 at planning,
/// nothing built), a missing bucket (found when the upload starts: exit 1,
/// OUTPUT kept, no bucket made), credentials refused at planning (exit 4)
/// or only once the upload starts (exit 1, OUTPUT kept). Each error names
/// the object's URL.
#[test]
fn publish_to_a_store_that_refuses() {
    let (env, cfg) = world(4, MIB);
    let Some(m) = moto(&env) else {
        return;
    };
    let dead = client_env(&format!("http://127.0.0.1:{}", free_port()));
    let out = env.path("u.img");
    let (code, log) = build(&cfg, &out, "s3://pub/u/", &dead, &["--attempts", "2"]);
    assert_eq!(code, 4, "{log}");
    assert!(
        log.contains("s3://pub/u/u.img: checking for an existing object"),
        "{log}"
    );
    assert!(!out.exists());

    let out = env.path("nb.img");
    let (code, log) = build(&cfg, &out, "s3://nobucket/p/", &m.env(), &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("error: s3://nobucket/p/nb.img: "), "{log}");
    assert!(log.contains("nb.img is kept"), "{log}");
    assert!(out.exists() && side(&out, ".json").exists());
    assert_eq!(m.buckets(), [BUCKET]);

    // moto checks credentials once it has served
    // INITIAL_NO_AUTH_ACTION_COUNT requests (the bucket's creation is
    // one, our HEAD the next): ours are unknown to it.
    for (count, expect) in [("1", 4), ("2", 1)] {
        let strict =
            Moto::start(env.tmp.path(), &[("INITIAL_NO_AUTH_ACTION_COUNT", count)]).unwrap();
        strict.create_bucket(BUCKET);
        let out = env.path(&format!("cred{count}.img"));
        let (code, log) = build(&cfg, &out, "s3://pub/c/", &strict.env(), &[]);
        assert_eq!(code, expect, "{log}");
        assert!(
            log.contains(&format!("s3://pub/c/cred{count}.img")),
            "{log}"
        );
        assert!(log.contains("403"), "{log}");
        assert_eq!(out.exists(), expect == 1, "{log}");
    }
}

/// A part whose first attempt fails is sent again and the set is whole; a
/// part that always fails exhausts `--attempts`, the upload is aborted
/// (nothing at the key, no unfinished upload), OUTPUT is kept, and the
/// error names the object and the part.
#[test]
fn publish_retries_a_part_then_aborts() {
    // The image is ~40 MiB: several 8 MiB parts.
    let (env, cfg) = world(5, 24 * MIB);
    let Some(m) = moto(&env) else {
        return;
    };
    let once = S3Proxy::start(m.port, vec![Fault::Fail { part: 2, times: 1 }]);
    let out = env.path("r.img");
    let (code, log) = build(
        &cfg,
        &out,
        "s3://pub/r/",
        &client_env(&once.endpoint()),
        &[],
    );
    assert_eq!(code, 0, "{log}");
    assert_eq!(once.part_attempts(2), 2, "{:?}", once.requests());
    assert_eq!(once.part_attempts(1), 1);
    assert_published(&m, "r/", &out, &[".json"]);

    let always = S3Proxy::start(
        m.port,
        vec![Fault::Fail {
            part: 3,
            times: usize::MAX,
        }],
    );
    let out = env.path("f.img");
    let (code, log) = build(
        &cfg,
        &out,
        "s3://pub/f/",
        &client_env(&always.endpoint()),
        &["--attempts", "3"],
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("error: s3://pub/f/f.img: uploading part 3 (bytes 16777216..25165824)"),
        "{log}"
    );
    assert!(log.contains("f.img is kept"), "{log}");
    assert_eq!(always.part_attempts(3), 3, "{:?}", always.requests());
    assert!(out.exists() && side(&out, ".json").exists());
    assert!(m.dump(BUCKET, "f/").is_empty());
    assert_eq!(m.multipart_uploads(BUCKET), 0, "aborted");
}

/// `kill -9` while the image is uploading (a slow store; killed once the
/// server has acknowledged a part): nothing at the key, the upload left
/// unfinished (for the bucket's lifecycle rule).
#[test]
fn publish_killed_mid_upload_leaves_no_object() {
    // ~56 MiB: 7 parts, 4 at a time, each held 2 s by the proxy.
    let (env, cfg) = world(6, 40 * MIB);
    let Some(m) = moto(&env) else {
        return;
    };
    let slow = S3Proxy::start(
        m.port,
        vec![Fault::Slow {
            part: 0,
            delay: Duration::from_secs(2),
        }],
    );
    let out = env.path("k.img");
    let mut child = build_cmd(
        &cfg,
        &out,
        "s3://pub/k/",
        &client_env(&slow.endpoint()),
        &[],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let uploading = wait_for_event(&mut child, Duration::from_secs(120), || {
        slow.parts_done() >= 1
    });
    assert!(uploading, "no upload progress: {:?}", slow.requests());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(slow.parts_done() >= 1);
    assert!(
        m.dump(BUCKET, "k/").is_empty(),
        "{:?}",
        m.dump(BUCKET, "k/").keys()
    );
    assert_eq!(
        m.multipart_uploads(BUCKET),
        1,
        "the killed upload, unfinished"
    );
}
