//! The download cache end to end, with the real binary: `--cache-dir` builds
//! against a real nginx (and in-process servers for a MirrorBrain-style
//! redirect and a slow download), `--check`, `--show-cache [--json]`,
//! `policy.yaml` errors and eviction, concurrent processes on one cache and
//! `kill -9` during a cached download. Images are read back with e2fsck and
//! debugfs; the cache tree is checked with sha256 of its blobs.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::env::{sha256_hex, Env};
use common::image::{self, fsck_p3, read_p3, BIN};
use common::run;
use common::servers::{Behaviour, Faulty, Nginx};
use sha2::{Digest, Sha256};

const MIB: usize = 1 << 20;
const EPOCH: &str = "1700000000";

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs"])
}

/// Run a build with `--cache-dir`, `SOURCE_DATE_EPOCH` fixed and a progress
/// file beside the output (`OUT.progress.json`).
fn build(cfg: &Path, out: &Path, cache: &Path, extra: &[&str]) -> (i32, String) {
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
    run(&mut c)
}

fn progress_path(out: &Path) -> PathBuf {
    PathBuf::from(format!("{}.progress.json", out.display()))
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

/// Every file under `dir` with its size, mtime and sha256 (directories too,
/// as `None`).
fn snapshot(dir: &Path) -> BTreeMap<String, Option<(u64, i64, String)>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = e
                .path()
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let md = e.metadata().unwrap();
            if md.is_dir() {
                out.insert(rel, None);
                stack.push(e.path());
            } else {
                let data = std::fs::read(e.path()).unwrap();
                out.insert(rel, Some((md.len(), md.mtime_nsec(), sha256_hex(&data))));
            }
        }
    }
    out
}

/// The entries (parsed JSON) under `CACHE/v1/entries/*/*.json`.
fn entries(cache: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let dir = cache.join("v1/entries");
    let Ok(shards) = std::fs::read_dir(&dir) else {
        return out;
    };
    for shard in shards {
        for f in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push(serde_json::from_str(&text).unwrap());
            }
        }
    }
    out
}

fn blob_path(cache: &Path, sha: &str) -> PathBuf {
    cache.join("v1/blobs/sha256").join(&sha[..2]).join(sha)
}

/// Every entry's blob exists with its size and sha256; `v1/tmp` is empty.
/// Returns the entries.
fn assert_consistent(cache: &Path) -> Vec<serde_json::Value> {
    let es = entries(cache);
    for e in &es {
        let sha = e["sha256"].as_str().unwrap();
        let blob =
            std::fs::read(blob_path(cache, sha)).unwrap_or_else(|err| panic!("blob of {e}: {err}"));
        assert_eq!(
            blob.len() as u64,
            e["size"].as_u64().unwrap(),
            "size of {e}"
        );
        assert_eq!(sha256_hex(&blob), sha, "content of the blob of {e}");
    }
    let left: Vec<_> = std::fs::read_dir(cache.join("v1/tmp"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "leftovers in v1/tmp: {left:?}");
    es
}

/// The entry whose source is `url`.
fn entry_of(cache: &Path, url: &str) -> Option<serde_json::Value> {
    entries(cache)
        .into_iter()
        .find(|e| e["source"].as_str() == Some(url))
}

fn access_log_lines(dir: &Path, path: &str) -> usize {
    std::fs::read_to_string(dir.join("nginx-access.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!(" /{path} ")))
        .count()
}

/// A warm rebuild with the origin stopped is byte-identical to the cold
/// build that filled the cache (same `SOURCE_DATE_EPOCH`), its filesystem is
/// clean, and both the progress file (`from_cache: true`) and the text
/// history ("(from the cache)") say the items came from the cache. Without
/// `check_after` every hit is due for a check; the check fails (nginx is
/// down) and a failed check keeps the entry.
#[test]
fn warm_rebuild_with_the_origin_stopped_is_byte_identical() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let big = common::bytes(1, 3 * MIB + 123);
    let small = common::bytes(2, 4097);
    std::fs::write(ng.root.join("big.bin"), &big).unwrap();
    std::fs::write(ng.root.join("small.bin"), &small).unwrap();
    let (ub, us) = (ng.url("big.bin"), ng.url("small.bin"));
    let cfg = env.config("c.yaml", &[("big.bin", &ub), ("sub/small.bin", &us)]);
    let cache = env.path("cache");
    let cold = env.path("cold.img");
    let (code, log) = build(&cfg, &cold, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(
        !from_cache(&cold, "big.bin"),
        "cold build: not from the cache"
    );
    assert_eq!(assert_consistent(&cache).len(), 2);
    assert!(cache.join("CACHEDIR.TAG").is_file());

    drop(ng);
    let warm = env.path("warm.img");
    let (code, log) = build(&cfg, &warm, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(from_cache(&warm, "big.bin") && from_cache(&warm, "small.bin"));
    assert!(
        log.matches("(from the cache)").count() >= 2,
        "text history: {log}"
    );
    assert!(
        std::fs::read(&cold).unwrap() == std::fs::read(&warm).unwrap(),
        "warm image differs from the cold one"
    );
    fsck_p3(&warm);
    assert!(read_p3(&warm, "/big.bin", &env.path("b")) == big);
    assert!(read_p3(&warm, "/sub/small.bin", &env.path("s")) == small);
    // Used once more each.
    for e in assert_consistent(&cache) {
        assert_eq!(e["use_count"].as_u64(), Some(1), "{e}");
    }
}

/// Content and ETag change on the server. With `check_after: 30d` (not
/// expired) the cached copy is used without asking the server at all (the
/// access log has no request for the file); with `check_after: 0` (always
/// due) the change is seen, the new content is downloaded into the image
/// and replaces the cache entry; the next build is a hit again.
#[test]
fn changed_etag_is_refetched_once_check_after_has_passed_and_not_before() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let v1 = common::bytes(3, 300_000);
    let v2 = common::bytes(4, 300_001);
    std::fs::write(ng.root.join("f.bin"), &v1).unwrap();
    let url = ng.url("f.bin");
    let cfg = env.config("c.yaml", &[("f.bin", &url)]);
    let cache = env.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("policy.yaml"), "check_after: 30d\n").unwrap();
    let out = env.path("out.img");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    let etag1 = entry_of(&cache, &url).unwrap()["validators"]["etag"].clone();
    assert!(etag1.is_string(), "the ETag is stored");

    std::fs::write(ng.root.join("f.bin"), &v2).unwrap();
    let before = access_log_lines(env.tmp.path(), "f.bin");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        access_log_lines(env.tmp.path(), "f.bin"),
        before,
        "check_after not passed: the server must not be asked"
    );
    assert!(from_cache(&out, "f.bin"));
    assert!(read_p3(&out, "/f.bin", &env.path("a")) == v1, "cached copy");

    std::fs::write(cache.join("policy.yaml"), "check_after: 0\n").unwrap();
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    assert!(
        read_p3(&out, "/f.bin", &env.path("b")) == v2,
        "check_after passed, ETag changed: the image must hold the new content, not the outdated entry's"
    );
    assert!(!from_cache(&out, "f.bin"), "outdated: downloaded");
    let es = assert_consistent(&cache);
    assert_eq!(es.len(), 1, "the entry was replaced: {es:?}");
    assert_eq!(es[0]["sha256"].as_str().unwrap(), sha256_hex(&v2));
    assert_ne!(es[0]["validators"]["etag"], etag1);

    // Unchanged since: a hit again, after a conditional check (a HEAD with
    // If-None-Match, answered 304 by nginx; no GET).
    let log_before = std::fs::read_to_string(env.tmp.path().join("nginx-access.log")).unwrap();
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(from_cache(&out, "f.bin"));
    assert!(read_p3(&out, "/f.bin", &env.path("c")) == v2);
    let access = std::fs::read_to_string(env.tmp.path().join("nginx-access.log")).unwrap();
    let new: Vec<&str> = access[log_before.len()..]
        .lines()
        .filter(|l| l.contains(" /f.bin "))
        .collect();
    assert!(
        new.len() == 1 && new[0].contains("HEAD") && new[0].contains("\" 304 "),
        "one conditional HEAD answered 304: {new:?}"
    );
}

/// A MirrorBrain-style origin: `GET|HEAD /file` answers 302 with
/// `Digest: SHA-256=<base64>` and `Location: /mirror/file`; the mirror's
/// ETag changes on every request. Requests are logged.
struct Mirror {
    port: u16,
    state: Arc<Mutex<(Arc<Vec<u8>>, u64)>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    fn start(body: Vec<u8>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new((Arc::new(body), 0u64)));
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s2, l2) = (state.clone(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (s, l) = (s2.clone(), l2.clone());
                std::thread::spawn(move || {
                    let _ = Self::serve(stream, &s, &l);
                });
            }
        });
        Self { port, state, log }
    }

    fn serve(
        mut stream: TcpStream,
        state: &Mutex<(Arc<Vec<u8>>, u64)>,
        log: &Mutex<Vec<String>>,
    ) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h == "\r\n" {
                break;
            }
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("/").to_string();
        log.lock().unwrap().push(format!("{method} {path}"));
        let (body, n) = {
            let mut st = state.lock().unwrap();
            st.1 += 1;
            (st.0.clone(), st.1)
        };
        match path.as_str() {
            "/file" => {
                let digest = base64_lite(&Sha256::digest(body.as_slice()));
                write!(stream, "HTTP/1.1 302 Found\r\nLocation: /mirror/file\r\nDigest: SHA-256={digest}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            }
            "/mirror/file" => {
                write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nETag: \"mirror-{n}\"\r\nConnection: close\r\n\r\n", body.len())?;
                if method != "HEAD" {
                    stream.write_all(&body)?;
                }
            }
            _ => write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?,
        }
        stream.flush()?;
        let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
        let _ = stream.read_to_end(&mut Vec::new());
        Ok(())
    }

    fn set_body(&self, body: Vec<u8>) {
        self.state.lock().unwrap().0 = Arc::new(body);
    }

    fn gets_of_mirror(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| *l == "GET /mirror/file")
            .count()
    }
}

/// Standard base64 (RFC 4648, padded), as MirrorBrain sends it.
fn base64_lite(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The MirrorBrain `Digest` header (sent on the redirect) is preferred over
/// the mirror's ETag, which changes on every request: with the digest
/// unchanged the entry stays fresh (a hit, no GET of the mirror) although
/// the ETag differs; when the digest changes, the entry is outdated and the
/// new content is downloaded and cached. No `check_after`: always checked.
#[test]
fn mirrorbrain_digest_is_preferred_over_a_changing_etag() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let v1 = common::bytes(5, 200_000);
    let v2 = common::bytes(6, 200_000);
    let srv = Mirror::start(v1.clone());
    let url = format!("http://127.0.0.1:{}/file", srv.port);
    let cfg = env.config("c.yaml", &[("f.zim", &url)]);
    let cache = env.path("cache");
    let out = env.path("out.img");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(srv.gets_of_mirror(), 1);
    let e = entry_of(&cache, &url).expect("cached");
    assert!(
        e["validators"]["digest"]
            .as_str()
            .is_some_and(|d| d.contains(&base64_lite(&Sha256::digest(&v1)))),
        "the redirect's Digest is stored: {e}"
    );

    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(from_cache(&out, "f.zim"), "same digest, new ETag: fresh");
    assert_eq!(srv.gets_of_mirror(), 1, "no download: {:?}", srv.log);
    assert!(read_p3(&out, "/f.zim", &env.path("a")) == v1);

    srv.set_body(v2.clone());
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    assert!(
        read_p3(&out, "/f.zim", &env.path("b")) == v2,
        "digest changed: the image must hold the new content, not the outdated entry's"
    );
    assert!(!from_cache(&out, "f.zim"), "digest changed: outdated");
    assert_eq!(srv.gets_of_mirror(), 2);
    let es = assert_consistent(&cache);
    assert_eq!(es.len(), 1);
    assert_eq!(es[0]["sha256"].as_str().unwrap(), sha256_hex(&v2));
}

/// `--check` with a cache prints, per item, "(cache hit)" or "(miss, will
/// be cached)", and creates or changes nothing in the cache directory (the
/// whole tree, contents and mtimes, is the same) nor writes an output; on a
/// cache directory that does not exist, it creates none.
#[test]
fn check_reports_hits_and_misses_and_changes_nothing() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    std::fs::write(ng.root.join("a.bin"), common::bytes(7, 100_000)).unwrap();
    std::fs::write(ng.root.join("b.bin"), common::bytes(8, 50_000)).unwrap();
    let (ua, ub) = (ng.url("a.bin"), ng.url("b.bin"));
    let cache = env.path("cache");
    let out = env.path("out.img");
    let (code, log) = build(&env.config("a.yaml", &[("a.bin", &ua)]), &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");

    let both = env.config("ab.yaml", &[("a.bin", &ua), ("b.bin", &ub)]);
    let before = snapshot(&cache);
    let checked = env.path("checked.img");
    let (code, log) = build(&both, &checked, &cache, &["--check"]);
    assert_eq!(code, 0, "{log}");
    let line = |name: &str| {
        log.lines()
            .find(|l| l.contains(name) && l.contains("bytes  from"))
            .unwrap_or_else(|| panic!("no plan line for {name}: {log}"))
            .to_string()
    };
    assert!(line("a.bin").ends_with("(cache hit)"), "{log}");
    assert!(line("b.bin").ends_with("(miss, will be cached)"), "{log}");
    assert_eq!(snapshot(&cache), before, "--check changed the cache");
    assert!(!checked.exists());

    let none = env.path("no-cache-here");
    let (code, log) = build(&both, &checked, &none, &["--check"]);
    assert_eq!(code, 0, "{log}");
    assert!(line("b.bin").contains("miss"), "{log}");
    assert!(!none.exists(), "--check created the cache dir");
}

/// `--show-cache`: "Cache is empty." for an absent or empty cache; after
/// builds, one row per entry with its size and source URL, and `--json`
/// with the same entries, sizes, sources and a summary.
#[test]
fn show_cache_text_and_json_after_builds() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let cache = env.path("cache");
    let show = |json: bool| {
        let mut c = Command::new(BIN);
        c.arg("--show-cache").arg("--cache-dir").arg(&cache);
        if json {
            c.arg("--json");
        }
        run(&mut c)
    };
    let (code, text) = show(false);
    assert_eq!((code, text.trim()), (0, "Cache is empty."));
    assert!(!cache.exists(), "--show-cache created the cache dir");
    std::fs::create_dir_all(&cache).unwrap();
    assert_eq!(show(false).1.trim(), "Cache is empty.");

    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    std::fs::write(ng.root.join("one.bin"), common::bytes(9, 2 * MIB)).unwrap();
    std::fs::write(ng.root.join("two.bin"), common::bytes(10, 1000)).unwrap();
    let (u1, u2) = (ng.url("one.bin"), ng.url("two.bin"));
    let cfg = env.config("c.yaml", &[("one.bin", &u1), ("two.bin", &u2)]);
    let (code, log) = build(&cfg, &env.path("o.img"), &cache, &[]);
    assert_eq!(code, 0, "{log}");

    let (code, text) = show(false);
    assert_eq!(code, 0, "{text}");
    for h in [
        "Size",
        "Entries",
        "Oldest",
        "Newest",
        "Added On",
        "Nb. Used",
        "Last Used",
        "Source",
    ] {
        assert!(text.contains(h), "header {h}: {text}");
    }
    let row1 = text.lines().find(|l| l.contains(&u1)).expect(&text);
    assert!(
        row1.contains("2.0 MiB") || row1.contains("2 MiB") || row1.contains("2.1 MB"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.contains(&u2)), "{text}");

    let (code, json) = show(true);
    assert_eq!(code, 0, "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["summary"]["entries"].as_u64(), Some(2), "{json}");
    assert_eq!(v["summary"]["size"].as_u64(), Some(2 * MIB as u64 + 1000));
    let rows = v["entries"].as_array().unwrap();
    let size_of = |u: &str| {
        rows.iter()
            .find(|r| r["source"].as_str() == Some(u))
            .unwrap_or_else(|| panic!("{u} in {json}"))["size"]
            .as_u64()
    };
    assert_eq!(size_of(&u1), Some(2 * MIB as u64));
    assert_eq!(size_of(&u2), Some(1000));
}

/// A flipped byte in a blob is detected while it is copied: the rebuild
/// downloads the file instead (server up), the image holds the right bytes,
/// and the cache holds a good blob for it afterwards.
#[test]
fn a_flipped_byte_in_a_blob_is_detected_and_downloaded_again() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let data = common::bytes(11, MIB + 17);
    std::fs::write(ng.root.join("f.bin"), &data).unwrap();
    let url = ng.url("f.bin");
    let cfg = env.config("c.yaml", &[("f.bin", &url)]);
    let cache = env.path("cache");
    let out = env.path("out.img");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    let sha = entry_of(&cache, &url).unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = blob_path(&cache, &sha);
    {
        use std::os::unix::fs::{FileExt, PermissionsExt};
        let _ = std::fs::set_permissions(&blob, std::fs::Permissions::from_mode(0o644));
        let f = std::fs::OpenOptions::new().write(true).open(&blob).unwrap();
        let mut b = [0u8];
        std::fs::File::open(&blob)
            .unwrap()
            .read_exact_at(&mut b, 500_000)
            .unwrap();
        f.write_all_at(&[b[0] ^ 0x40], 500_000).unwrap();
    }
    let before = access_log_lines(env.tmp.path(), "f.bin");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert!(
        access_log_lines(env.tmp.path(), "f.bin") > before,
        "downloaded again"
    );
    assert!(!from_cache(&out, "f.bin"), "not reported as a hit");
    fsck_p3(&out);
    assert!(read_p3(&out, "/f.bin", &env.path("a")) == data);
    assert_consistent(&cache);
    let e = entry_of(&cache, &url).expect("the cache holds the file again after the rebuild");
    assert_eq!(e["sha256"].as_str().unwrap(), sha256_hex(&data));
}

/// A cache directory that can't be used (under a regular file: fails even
/// as root) is a warning: exit 0 and a correct image.
#[test]
fn an_unusable_cache_dir_is_a_warning_and_the_build_succeeds() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let data = common::bytes(12, 70_000);
    std::fs::write(ng.root.join("f.bin"), &data).unwrap();
    let cfg = env.config("c.yaml", &[("f.bin", &ng.url("f.bin"))]);
    let file = env.path("regular");
    std::fs::write(&file, "x").unwrap();
    let out = env.path("out.img");
    let (code, log) = build(&cfg, &out, &file.join("cache"), &[]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("warning:") && log.contains("cache"), "{log}");
    fsck_p3(&out);
    assert!(read_p3(&out, "/f.bin", &env.path("a")) == data);
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

/// A malformed `policy.yaml` (an unknown key; a bad value) is bad input:
/// exit 3, the message names the key and its line, and there is no output
/// image; `--show-cache` refuses it the same way.
#[test]
fn a_malformed_policy_is_exit_3_naming_key_and_line() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let cfg = env.config("c.yaml", &[("f.bin", "http://127.0.0.1:9/f.bin")]);
    let cache = env.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for (policy, key, line) in [
        ("enabled: true\nmax_sise: 1GB\n", "max_sise", 2),
        ("max_num: 3\nfiles:\n  eviction: fifo\n", "eviction", 3),
        (
            "max_size: 1GB\nfiles:\n  filters:\n    - pattern: x\n      max_size: 2GB\n",
            "max_size",
            5,
        ),
    ] {
        std::fs::write(cache.join("policy.yaml"), policy).unwrap();
        let out = env.path("out.img");
        let (code, log) = build(&cfg, &out, &cache, &[]);
        assert_eq!(code, 3, "{policy}: {log}");
        assert!(log.contains(key), "{policy}: names {key}: {log}");
        assert!(
            log.contains(&format!("line {line}")),
            "{policy}: line {line}: {log}"
        );
        assert!(!out.exists(), "no output");
        let (code, log) = run(Command::new(BIN)
            .arg("--show-cache")
            .arg("--cache-dir")
            .arg(&cache));
        assert_eq!(code, 3, "--show-cache: {log}");
    }
}

/// `enabled: false`: the cache directory is left exactly as it was (only
/// `policy.yaml`), and the build succeeds.
#[test]
fn a_disabled_cache_creates_nothing() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let data = common::bytes(13, 10_000);
    std::fs::write(ng.root.join("f.bin"), &data).unwrap();
    let cfg = env.config("c.yaml", &[("f.bin", &ng.url("f.bin"))]);
    let cache = env.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("policy.yaml"), "enabled: false\nmax_num: 3\n").unwrap();
    let before = snapshot(&cache);
    let out = env.path("out.img");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(snapshot(&cache), before);
    assert!(read_p3(&out, "/f.bin", &env.path("a")) == data);
    assert!(!from_cache(&out, "f.bin"));
}

/// Eviction by the policy at the end of a build: `max_num: 1` with two
/// cacheable files leaves one entry (and its blob only), and a `files`
/// filter with `ignore: true` keeps its URL out of the cache altogether
/// (and `--check` does not announce it as cached).
#[test]
fn eviction_at_the_end_of_a_build_and_ignore_filters() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    for (i, n) in ["a.bin", "b.bin", "ignored.bin"].iter().enumerate() {
        std::fs::write(ng.root.join(n), common::bytes(20 + i as u64, 30_000 + i)).unwrap();
    }
    let urls: Vec<String> = ["a.bin", "b.bin", "ignored.bin"]
        .iter()
        .map(|n| ng.url(n))
        .collect();
    let cfg = env.config(
        "c.yaml",
        &[
            ("a.bin", &urls[0]),
            ("b.bin", &urls[1]),
            ("ignored.bin", &urls[2]),
        ],
    );
    let cache = env.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(
        cache.join("policy.yaml"),
        "max_num: 1\nfiles:\n  filters:\n    - pattern: \"ignored\"\n      ignore: true\n",
    )
    .unwrap();
    let out = env.path("out.img");
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    let es = assert_consistent(&cache);
    assert_eq!(es.len(), 1, "max_num: 1: {es:?}");
    assert!(
        es.iter()
            .all(|e| !e["source"].as_str().unwrap().contains("ignored")),
        "{es:?}"
    );
    let blobs: usize = std::fs::read_dir(cache.join("v1/blobs/sha256"))
        .unwrap()
        .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(blobs, 1, "evicted blobs are removed");
    let (code, log) = build(&cfg, &env.path("chk.img"), &cache, &["--check"]);
    assert_eq!(code, 0, "{log}");
    let ignored = log
        .lines()
        .find(|l| l.contains("ignored.bin") && l.contains("bytes  from"))
        .expect(&log);
    assert!(!ignored.contains("cache"), "{ignored}");
}

/// Three builds in parallel processes on one cache, with overlapping URLs,
/// twice each (a cold and a warm round), while a fourth process keeps
/// evicting (builds of other files under a shared `max_num: 2` policy, so
/// every build evicts at its end): every image holds exactly the served
/// bytes, and afterwards every entry's blob exists with its size and
/// sha256 and `v1/tmp` is empty.
#[test]
fn parallel_builds_and_an_evictor_keep_images_and_cache_correct() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let names = ["a", "b", "c", "d", "e", "f", "g"];
    let mut data = BTreeMap::new();
    for (i, n) in names.iter().enumerate() {
        let d = common::bytes(40 + i as u64, MIB + 1000 * i);
        std::fs::write(ng.root.join(format!("{n}.bin")), &d).unwrap();
        data.insert(*n, d);
    }
    let cache = env.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("policy.yaml"), "max_num: 2\n").unwrap();
    // Same order everywhere (see the report on claim order).
    let sets: [&[&str]; 4] = [
        &["a", "b", "c"],
        &["b", "c", "d"],
        &["a", "c", "d"],
        &["e", "f", "g"],
    ];
    let cfgs: Vec<PathBuf> = sets
        .iter()
        .enumerate()
        .map(|(i, set)| {
            let files: Vec<(String, String)> = set
                .iter()
                .map(|n| (format!("{n}.bin"), ng.url(&format!("{n}.bin"))))
                .collect();
            let refs: Vec<(&str, &str)> = files
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect();
            env.config(&format!("p{i}.yaml"), &refs)
        })
        .collect();
    let spawn = |i: usize, round: usize| {
        let out = env.path(&format!("p{i}-{round}.img"));
        let child = Command::new(BIN)
            .arg("-X")
            .arg("--cache-dir")
            .arg(&cache)
            .arg(&cfgs[i])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        (i, out, child)
    };
    for round in 0..2 {
        let mut children: Vec<_> = (0..3).map(|i| spawn(i, round)).collect();
        // The evictor: builds until the three are done.
        let mut evictions = 0;
        loop {
            let (i, out, c) = spawn(3, 10 + evictions);
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "evictor: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            check_image(&env, &out, sets[i], &data);
            evictions += 1;
            if evictions >= 2
                && children
                    .iter_mut()
                    .all(|(_, _, c)| c.try_wait().unwrap().is_some())
            {
                break;
            }
        }
        for (i, out, c) in children.drain(..) {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "build {i}: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            check_image(&env, &out, sets[i], &data);
        }
        let es = assert_consistent(&cache);
        assert!(
            es.len() <= 2,
            "max_num: 2 after the last build: {}",
            es.len()
        );
    }
}

fn check_image(env: &Env, out: &Path, set: &[&str], data: &BTreeMap<&str, Vec<u8>>) {
    fsck_p3(out);
    for n in set {
        let back = env.path(&format!(
            "back-{}",
            out.file_name().unwrap().to_string_lossy()
        ));
        let got = read_p3(out, &format!("/{n}.bin"), &back);
        assert!(got == data[n], "{}: /{n}.bin differs", out.display());
        std::fs::remove_file(back).unwrap();
    }
    std::fs::remove_file(out).unwrap();
}

/// `kill -9` of a build in the middle of a cached download (a slow server;
/// killed once its progress file shows bytes): nothing is published, and
/// as this server sends neither `ETag` nor `Last-Modified` (nothing an
/// `If-Range` could check) the fill was a temp file, not a partial
/// download to continue (tests/resume.rs has those): the next run removes
/// the orphan from `v1/tmp`, and its image is correct (and the cache then
/// holds the file).
#[test]
fn kill_9_during_a_cached_download_then_a_rebuild() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let body = Arc::new(common::bytes(14, 4 * MIB));
    let srv = Faulty::start(vec![(
        "slow",
        Behaviour::Slow {
            body: body.clone(),
            chunk: 64 * 1024,
            pause: Duration::from_millis(40),
        },
    )]);
    let cache = env.path("cache");
    let out = env.path("out.img");
    let cfg = env.config("slow.yaml", &[("f.bin", &srv.url("slow"))]);
    let progress = progress_path(&out);
    let mut child = Command::new(BIN)
        .arg("--cache-dir")
        .arg(&cache)
        .arg("--progress-file")
        .arg(&progress)
        .arg(&cfg)
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let done = std::fs::read_to_string(&progress)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            // The download's own item: the first one is the base image,
            // whose copy reports bytes too (for long without SEEK_DATA,
            // as with --features portable).
            .and_then(|v| {
                v["items"]
                    .as_array()
                    .and_then(|a| a.iter().find(|i| i["name"] == "/data/f.bin").cloned())
            })
            .and_then(|i| i["bytes_done"].as_u64())
            .unwrap_or(0);
        if done > 0 {
            break;
        }
        assert!(child.try_wait().unwrap().is_none(), "build ended early");
        assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let tmp_left = std::fs::read_dir(cache.join("v1/tmp")).unwrap().count();
    assert!(tmp_left >= 1, "the fill was in v1/tmp when killed");
    assert_eq!(
        std::fs::read_dir(cache.join("v1/partial")).unwrap().count(),
        0,
        "no validators: nothing to continue"
    );
    assert!(
        entries(&cache).is_empty(),
        "nothing published by a killed fill"
    );

    // The rebuild opens the cache: orphans go.
    let (code, log) = build(&cfg, &out, &cache, &[]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    assert!(read_p3(&out, "/f.bin", &env.path("a")) == *body);
    let es = assert_consistent(&cache);
    assert_eq!(es.len(), 1, "{es:?}");
    assert_eq!(es[0]["sha256"].as_str().unwrap(), sha256_hex(&body));
    assert_eq!(std::fs::read_dir(cache.join("v1/tmp")).unwrap().count(), 0);
}

/// A build waiting for a key that another build is filling (here the test
/// holds that key's lock, as a long download by another build would) holds
/// no other key's lock meanwhile and gets on with its other downloads.
/// Holding one key while waiting for another is how two builds with the
/// same URLs in different orders deadlock (each waits for the other until
/// the 1 h key-lock timeout).
#[test]
fn a_build_waiting_for_one_key_holds_no_other_key() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let x = common::bytes(60, 10_000);
    let y = common::bytes(61, 20_000);
    std::fs::write(ng.root.join("x.bin"), &x).unwrap();
    std::fs::write(ng.root.join("y.bin"), &y).unwrap();
    let (ux, uy) = (ng.url("x.bin"), ng.url("y.bin"));
    let cache = env.path("cache");
    let lock_of = |url: &str| {
        let h = image_creator::cache::Key::file(url).unwrap().hash();
        cache.join("v1/locks").join(format!("{h}.lock"))
    };
    std::fs::create_dir_all(cache.join("v1/locks")).unwrap();
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
            .unwrap()
    };
    let held_y = open(&lock_of(&uy));
    held_y.lock().unwrap();

    let cfg = env.config("c.yaml", &[("x.bin", &ux), ("y.bin", &uy)]);
    let out = env.path("out.img");
    let mut child = Command::new(BIN)
        .arg("--cache-dir")
        .arg(&cache)
        .arg(&cfg)
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the state a correct build reaches while it waits for y: x
    // downloaded and x's key lock free. A build that holds x's lock while
    // waiting for y never gets there; the deadline only bounds that failure.
    let deadline = Instant::now() + Duration::from_secs(120);
    let x_free_and_fetched = loop {
        let fetched = access_log_lines(env.tmp.path(), "x.bin") > 0;
        let lx = lock_of(&ux);
        if fetched && (!lx.exists() || open(&lx).try_lock().is_ok()) {
            break true;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let x_held = lock_of(&ux).exists() && open(&lock_of(&ux)).try_lock().is_err();
    let still_waiting = child.try_wait().unwrap().is_none();
    held_y.unlock().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        still_waiting,
        "the build ended while the test held y's key lock"
    );
    assert!(read_p3(&out, "/x.bin", &env.path("a")) == x);
    assert!(read_p3(&out, "/y.bin", &env.path("b")) == y);
    assert!(
        x_free_and_fetched,
        "while waiting for y's key lock the build held x's key lock (held now: {x_held}) \
         and had not downloaded x within 120 s: hold-and-wait, so two builds listing x, y \
         in opposite orders can deadlock until the key-lock timeout"
    );
}

/// Every cached kind of source besides plain files: a remote base (plain
/// and xz), remote archives (a tar.gz streamed, a zip spooled) and a
/// container image pulled from a real registry. Cold builds fill the cache;
/// with nginx and the registry stopped, warm builds are byte-identical,
/// every item says it came from the cache, and e2fsck is clean.
#[test]
fn bases_archives_and_images_are_cached_too() {
    if !tools() || !image::tools(&["xz", "gzip", "zip", "umoci", "skopeo"]) {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let Some(reg) = common::registry::DockerRegistry::start(env.tmp.path()) else {
        return;
    };
    let layout = common::registry::umoci_image(
        env.tmp.path(),
        "arm",
        "arm64",
        &[("/etc/hello.txt", b"hello arm\n")],
    );
    reg.push(&layout, "arm", "test/app:1", &[]);
    std::fs::copy(&env.base, ng.root.join("base.img")).unwrap();
    let (c, log) = run(Command::new("xz")
        .args(["-k", "-T1"])
        .arg(ng.root.join("base.img")));
    assert_eq!(c, 0, "{log}");
    let src = common::archives::make_tree(env.tmp.path());
    common::archives::pack("gztar", &src, &ng.root.join("app.tgz"));
    common::archives::pack("zip", &src, &ng.root.join("app.zip"));
    let ident = format!("{}/test/app:1", reg.host());
    for base in ["base.img", "base.img.xz"] {
        let cfg = env.path(&format!("{base}.yaml"));
        std::fs::write(
            &cfg,
            format!(
                "base: {{source: {}, rootfs_size: {}}}\n\
                 files:\n  - to: /data/t\n    url: {}\n    via: gztar\n  \
                 - to: /data/z\n    url: {}\n    via: zip\n\
                 oci_images:\n  - {{ident: '{ident}', filesize: 20000, fullsize: 20000}}\n",
                ng.url(base),
                env.rootfs,
                ng.url("app.tgz"),
                ng.url("app.zip"),
            ),
        )
        .unwrap();
        let cache = env.path(&format!("cache-{base}"));
        let cold = env.path(&format!("cold-{base}.img"));
        let (code, log) = build(&cfg, &cold, &cache, &[]);
        assert_eq!(code, 0, "{log}");
        assert_eq!(
            assert_consistent(&cache).len(),
            4,
            "{base}: base, 2 archives, 1 image"
        );
        // The tar.gz is pre-scanned at planning (its exact needs), which
        // fills the cache: the cold build's expansion already reads it from
        // there (one download in all).
        for suffix in [base, "/z", ".tar"] {
            assert!(!from_cache(&cold, suffix), "{base}: cold {suffix}");
        }
        assert!(
            from_cache(&cold, "/t"),
            "{base}: pre-scanned into the cache"
        );
    }
    // Two cold builds (one cache each): the tar.gz was downloaded once per
    // build, the pre-scan's download serving the build too.
    let gets = std::fs::read_to_string(env.tmp.path().join("nginx-access.log"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"GET /app.tgz "))
        .count();
    assert_eq!(gets, 2, "one GET of the archive per cold build");
    drop(ng);
    drop(reg);
    for base in ["base.img", "base.img.xz"] {
        let cfg = env.path(&format!("{base}.yaml"));
        let cache = env.path(&format!("cache-{base}"));
        let warm = env.path(&format!("warm-{base}.img"));
        let (code, log) = build(&cfg, &warm, &cache, &[]);
        assert_eq!(code, 0, "{base}: {log}");
        for suffix in [base, "/t", "/z", ".tar"] {
            assert!(from_cache(&warm, suffix), "{base}: warm {suffix}: {log}");
        }
        let cold = env.path(&format!("cold-{base}.img"));
        assert!(
            std::fs::read(&cold).unwrap() == std::fs::read(&warm).unwrap(),
            "{base}: warm image differs from the cold one"
        );
        fsck_p3(&warm);
        let got = common::rdump(
            &PathBuf::from(image::p3_spec(&warm)),
            &env.path(&format!("dump-{base}")),
        );
        common::archives::assert_same_tree(&src, &got.join("t"), 0o777, "gztar");
        common::archives::assert_same_tree(&src, &got.join("z"), 0o777, "zip");
    }
}

/// Hits keep their blobs open from planning to copy (an eviction can't take
/// them away), so a config of many cached files needs more descriptors than
/// a low soft limit: the tool raises it to the hard limit. Under `ulimit -Sn
/// 128`, a warm build of 300 cached files takes every one from the cache,
/// with no warning.
#[test]
fn many_hits_are_not_limited_by_a_low_soft_descriptor_limit() {
    if !tools() {
        return;
    }
    let env = Env::new();
    let Some(ng) = Nginx::start(env.tmp.path()) else {
        return;
    };
    let mut files = Vec::new();
    for i in 0..300 {
        let name = format!("f{i}.bin");
        std::fs::write(ng.root.join(&name), common::bytes(i, 1000)).unwrap();
        files.push((format!("d/{name}"), ng.url(&name)));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let cfg = env.config("c.yaml", &refs);
    let cache = env.path("cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("policy.yaml"), "check_after: 30d\n").unwrap();
    let (code, log) = build(&cfg, &env.path("cold.img"), &cache, &[]);
    assert_eq!(code, 0, "{log}");
    let warm = env.path("warm.img");
    let script = format!(
        "ulimit -Sn 128 && exec {} -X --cache-dir {} --progress-file {} {} {}",
        BIN,
        cache.display(),
        progress_path(&warm).display(),
        cfg.display(),
        warm.display()
    );
    let (code, log) = run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    assert_eq!(code, 0, "{log}");
    assert!(!log.contains("download cache"), "no cache warning: {log}");
    for i in [0, 150, 299] {
        assert!(from_cache(&warm, &format!("/d/f{i}.bin")), "{log}");
    }
}
