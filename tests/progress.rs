//! Progress reporting end to end: the JSON progress file read over and over
//! while a real build runs (every read parses; the last says `succeeded`, or
//! `failed` with the message), the history on stdout, and the events the
//! library reports (in order, with byte counts that add up).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bytes;
use common::image::{self, files_config, make_base, BIN};
use common::servers::{Behaviour, Faulty};
use image_creator::fetch::FetchOptions;
use image_creator::pipeline::{self, BuildOptions, OutputOptions};
use image_creator::progress::{Event, Recorder};
use serde_json::Value;

const MIB: usize = 1 << 20;

fn tools() -> bool {
    image::tools(&[])
}

/// A base image from the committed fixture script and a config that adds
/// `files` to it.
fn setup(dir: &Path, files: &str) -> PathBuf {
    let (base, rootfs) = make_base(dir);
    files_config(dir, &base, rootfs, files)
}

struct Watched {
    code: i32,
    stdout: String,
    stderr: String,
    /// Every snapshot read while the build ran, then the final one.
    reads: Vec<Value>,
}

/// Run a build with `--progress-file`, reading the file every 5 ms until
/// the process exits. Every read must parse.
fn watch(dir: &Path, cfg: &Path, extra: &[&str]) -> Watched {
    let pf = dir.join("progress.json");
    let out = dir.join("out.img");
    let mut child = Command::new(BIN)
        .arg("--progress-file")
        .arg(&pf)
        .args(extra)
        .arg(cfg)
        .arg(&out)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drain the pipes on threads so the child never blocks on them.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut so, &mut s).unwrap();
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut se, &mut s).unwrap();
        s
    });
    let mut reads = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the build did not end");
        match std::fs::read(&pf) {
            Ok(data) => reads.push(serde_json::from_slice::<Value>(&data).unwrap_or_else(|e| {
                panic!(
                    "read {} did not parse ({e}): {:?}",
                    reads.len(),
                    String::from_utf8_lossy(&data)
                )
            })),
            // Not yet created by the child; never missing afterwards.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && reads.is_empty() => {}
            Err(e) => panic!("reading the progress file: {e}"),
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    reads.push(serde_json::from_slice(&std::fs::read(&pf).unwrap()).unwrap());
    // Only the file itself: every temporary file was renamed.
    let stray: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("progress.json."))
        .collect();
    assert!(stray.is_empty(), "temporary files left: {stray:?}");
    Watched {
        code: status.code().unwrap_or(-1),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        reads,
    }
}

#[test]
fn progress_file_parses_at_every_read_and_ends_succeeded() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 4 MiB in 128 KiB chunks, 60 ms apart: about 2 s to watch (4 or so
    // timer writes at 0.5 s).
    let slow = Arc::new(bytes(7, 4 * MIB));
    let srv = Faulty::start(vec![(
        "slow.bin",
        Behaviour::Slow {
            body: slow.clone(),
            chunk: 128 << 10,
            pause: Duration::from_millis(60),
        },
    )]);
    let local = tmp.path().join("local.bin");
    std::fs::write(&local, bytes(8, 3 * MIB + 5)).unwrap();
    let cfg = setup(
        tmp.path(),
        &format!(
            "  - to: /data/slow.bin\n    url: {}\n  - to: /data/local.bin\n    url: {}\n  - to: /data/hi.txt\n    content: hi\n",
            srv.url("slow.bin"),
            local.display()
        ),
    );
    let w = watch(tmp.path(), &cfg, &[]);
    assert_eq!(w.code, 0, "{}{}", w.stdout, w.stderr);
    let last = w.reads.last().unwrap();
    // The base image (an item of step 3) and the three data items.
    let items = last["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{last}");
    assert!(items[0]["name"].as_str().unwrap().ends_with("base.img"));
    let base = items[0]["bytes_total"].as_u64().unwrap();
    let total = base + (4 * MIB + 3 * MIB + 5 + 2) as u64;

    // Reads were taken while the download ran, with bytes moving.
    let slow_item = |v: &Value| -> Value {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "/data/slow.bin")
            .cloned()
            .unwrap_or_default()
    };
    let mid: Vec<&Value> = w
        .reads
        .iter()
        .filter(|v| {
            let it = slow_item(v);
            v["status"] == "running"
                && v["step"]["index"] == 4
                && it["state"] == "running"
                && it["bytes_done"]
                    .as_u64()
                    .is_some_and(|b| b > 0 && b < (4 * MIB) as u64)
        })
        .collect();
    assert!(mid.len() >= 2, "{} mid-transfer reads", mid.len());
    for v in &w.reads {
        assert_eq!(v["schema"], 1);
        // Known from the plan on, and then fixed.
        let t = v["bytes_total"].as_u64().unwrap();
        assert!(t == 0 || t == total, "{t} vs {total}");
    }
    // Never going backwards.
    let done: Vec<u64> = w
        .reads
        .iter()
        .map(|v| v["bytes_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|p| p[0] <= p[1]), "{done:?}");
    let steps: Vec<u64> = w
        .reads
        .iter()
        .filter_map(|v| v["step"]["index"].as_u64())
        .collect();
    assert!(steps.windows(2).all(|p| p[0] <= p[1]), "{steps:?}");

    assert_eq!(last["status"], "succeeded", "{last}");
    assert_eq!(last["bytes_done"], total);
    assert_eq!(last["bytes_total"], total);
    assert_eq!(last["items_done"], 4);
    assert_eq!(last["step"]["index"], 7);
    assert!(last["error"].is_null());
    assert!(last["image"]["path"].as_str().unwrap().ends_with("out.img"));
    assert!(last["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["state"] == "done" && i["bytes_done"] == i["bytes_total"]));
    for key in ["started_at", "updated_at"] {
        let t = last[key].as_str().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }

    // The history on stdout; no bars on stderr (not a terminal).
    for step in 1..=7 {
        assert!(w.stdout.contains(&format!("✓ [{step}/7] ")), "{}", w.stdout);
    }
    assert!(
        w.stdout.contains("    ✓ /data/slow.bin  4.0 MiB  "),
        "{}",
        w.stdout
    );
    assert!(
        w.stdout.contains("    ✓ /data/local.bin  3.0 MiB"),
        "{}",
        w.stdout
    );
    assert!(
        w.stdout.lines().last().unwrap().starts_with("✓ "),
        "{}",
        w.stdout
    );
    assert!(
        !w.stderr.contains('\r') && !w.stderr.contains('\x1b'),
        "{:?}",
        w.stderr
    );
}

#[test]
fn failing_build_leaves_failed_with_the_message() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let srv = Faulty::start(vec![("b", Behaviour::Ok(Arc::new(b"abc".to_vec())))]);
    let cfg = setup(
        tmp.path(),
        &format!(
            "  - to: /data/b\n    url: {}\n    checksum: {{algo: sha-1, value: 0000000000000000000000000000000000000000}}\n",
            srv.url("b")
        ),
    );
    let w = watch(tmp.path(), &cfg, &["--quiet"]);
    assert_eq!(w.code, 1, "{}{}", w.stdout, w.stderr);
    let last = w.reads.last().unwrap();
    assert_eq!(last["status"], "failed", "{last}");
    let msg = last["error"].as_str().unwrap();
    assert!(
        msg.contains("a9993e364706816aba3e25717850c26c9cd0d89d"),
        "{msg}"
    );
    assert_eq!(last["step"]["index"], 4);
    assert_eq!(last["items"][0]["state"], "done", "the base image");
    assert_eq!(last["items"][1]["name"], "/data/b");
    assert_eq!(last["items"][1]["state"], "failed");
    assert!(last["items"][1]["error"].is_string(), "{last}");
    assert!(last["image"].is_null());
    // --quiet: the failed step is still shown, nothing else.
    assert!(!w.stdout.contains("[1/7]"), "{}", w.stdout);
    assert!(w.stdout.contains("✗ [4/7] "), "{}", w.stdout);
}

#[test]
fn bad_progress_file_path_is_refused_up_front() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--progress-file")
        .arg(tmp.path().join("missing-dir/p.json"))
        .arg("c.yaml")
        .arg(tmp.path().join("o.img"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--progress-file"));
}

/// Step 7's read as the Recorder saw it: (announced total, bytes added
/// up), every event in step 7, each delta positive, never past the total.
fn step_seven(events: &[Event]) -> (u64, u64) {
    let mut step = 0;
    let mut pass: Option<(u64, u64)> = None;
    for e in events {
        match e {
            Event::Step { index, .. } => step = *index,
            Event::PassStarted { total } => {
                assert_eq!(step, 7, "{e:?}");
                assert!(pass.replace((*total, 0)).is_none(), "{e:?}");
            }
            Event::PassProgress { bytes } => {
                assert_eq!(step, 7, "{e:?}");
                let (total, done) = pass.as_mut().expect("progress after the start");
                assert!(*bytes > 0 && *done + bytes <= *total, "{e:?}");
                *done += bytes;
            }
            _ => {}
        }
    }
    pass.expect("step 7 read the image")
}

#[test]
fn recorded_events_are_in_order_and_bytes_add_up() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let body = Arc::new(bytes(3, 2 * MIB + 17));
    let srv = Faulty::start(vec![("d.bin", Behaviour::Ok(body.clone()))]);
    let local = tmp.path().join("l.bin");
    std::fs::write(&local, bytes(4, MIB + 3)).unwrap();
    let cfg = setup(
        tmp.path(),
        &format!(
            "  - to: /data/d.bin\n    url: {}\n  - to: /data/l.bin\n    url: {}\n  - to: /data/c.txt\n    content: hello\n",
            srv.url("d.bin"),
            local.display()
        ),
    );
    let rec = Recorder::default();
    let opts = BuildOptions {
        config_src: cfg.display().to_string(),
        output: tmp.path().join("o.img"),
        build_dir: None,
        check: false,
        keep: false,
        overwrite: false,
        max_size: None,
        base_url: image_creator::plan::DEFAULT_BASE_URL.to_string(),
        concurrency: 2,
        fetch: FetchOptions::default(),
        cache_dir: None,
        allow_local_files: false,
        // --json: step 7 reads the image (and reports it: `step_seven`).
        output_options: OutputOptions {
            hash: true,
            json: true,
            ..OutputOptions::default()
        },
        trust: image_creator::pipeline::TrustOptions::default(),
    };
    pipeline::run(&opts, &rec).unwrap();
    let events = rec.events();

    let steps: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            Event::Step { index, count, .. } => {
                assert_eq!(*count, 7);
                Some(*index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6, 7]);

    let base_name = tmp.path().join("base.img").display().to_string();
    let mut sizes = HashMap::from([
        ("/data/d.bin".to_string(), body.len() as u64),
        ("/data/l.bin".to_string(), (MIB + 3) as u64),
        ("/data/c.txt".to_string(), 5),
    ]);
    // Per item: planned → started → progress* → done; the base image in
    // step 3, the data items in step 4.
    let mut step = 0;
    let mut planned = 0;
    let mut started = HashMap::new();
    let mut progressed: HashMap<String, u64> = HashMap::new();
    let mut done = HashMap::new();
    for e in &events {
        match e {
            Event::Step { index, .. } => step = *index,
            Event::ItemsPlanned(items) => {
                let mut got: HashMap<String, u64> = items.iter().cloned().collect();
                if planned == 0 {
                    // After planning: the base, then every data item.
                    assert_eq!(step, 2);
                    assert_eq!(items[0].0, base_name);
                    sizes.insert(base_name.clone(), items[0].1);
                } else {
                    assert_eq!(step, 4);
                    got.insert(base_name.clone(), sizes[&base_name]);
                }
                assert_eq!(got, sizes);
                planned += 1;
            }
            Event::ItemStarted { name, total } => {
                let want_step = if *name == base_name { 3 } else { 4 };
                assert!(planned > 0 && step == want_step, "{e:?}");
                assert_eq!(*total, Some(sizes[name]));
                assert!(started.insert(name.clone(), ()).is_none(), "{e:?}");
            }
            Event::ItemProgress { name, bytes } => {
                assert!(
                    started.contains_key(name) && !done.contains_key(name),
                    "{e:?}"
                );
                *progressed.entry(name.clone()).or_default() += bytes;
            }
            Event::ItemDone { name, bytes, .. } => {
                assert!(started.contains_key(name), "{e:?}");
                assert_eq!(*bytes, sizes[name]);
                done.insert(name.clone(), ());
            }
            Event::PassStarted { .. } | Event::PassProgress { .. } => {} // step_seven
            Event::ItemFailed { .. } | Event::Finished(_) => panic!("{e:?}"),
            Event::Warn(_) => {}
            // No cache in this build, and no device read back.
            Event::ItemCached(_)
            | Event::ItemCloned(..)
            | Event::ItemVerifying { .. }
            | Event::ItemVerified { .. } => panic!("{e:?}"),
        }
    }
    assert_eq!((planned, done.len()), (2, 4));
    let image_len = std::fs::metadata(tmp.path().join("o.img")).unwrap().len();
    assert_eq!(step_seven(&events), (image_len, image_len));
    for (name, size) in &sizes {
        if *name == base_name {
            // Holes of the base are neither read nor counted.
            assert!(progressed.get(name).is_some_and(|p| p <= size && *p > 0));
        } else {
            assert_eq!(progressed.get(name), Some(size), "bytes of {name}");
        }
    }
}

/// Step 7's read of a sizeable image shows in the progress file while it
/// runs: `output_pass.bytes_read` grows (with a rate and the time left)
/// up to `bytes_total`, the image's size; the items' counters are left as
/// they were. 4 GiB, sparse: `--json` hashes it all, holes included, so
/// the pass outlasts several of the file's half-second writes. Not with
/// `portable`, whose fallbacks write the image's zeros (as
/// tests/output.rs's terabyte build).
#[cfg(not(feature = "portable"))]
#[test]
fn step_seven_progress_grows_in_the_progress_file() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let cfg = image::write_config(
        tmp.path(),
        &base,
        rootfs,
        "output:\n  size: 4GiB\nfiles:\n  - to: /data/hi.txt\n    content: hi\n",
    );
    let w = watch(tmp.path(), &cfg, &["--json"]);
    assert_eq!(w.code, 0, "{}{}", w.stdout, w.stderr);
    let total = 4u64 << 30;
    let mut seen: Vec<u64> = Vec::new();
    let mut mid_with_rate = false;
    for r in &w.reads {
        let p = &r["output_pass"];
        if p.is_null() {
            // Before step 7 starts reading.
            assert!(seen.is_empty(), "output_pass went away: {r}");
            continue;
        }
        assert_eq!(r["step"]["index"], 7, "{r}");
        assert_eq!(p["bytes_total"], total, "{r}");
        let read = p["bytes_read"].as_u64().unwrap();
        assert!(seen.last().is_none_or(|&l| l <= read), "went back: {r}");
        if read > 0 && read < total {
            mid_with_rate |=
                p["bytes_per_second"].as_f64().is_some() && p["seconds_left"].as_f64().is_some();
        }
        if seen.last() != Some(&read) {
            seen.push(read);
        }
        // The items' bytes are the data written, not the pass's.
        assert_eq!(r["bytes_done"], r["bytes_total"], "{r}");
    }
    assert_eq!(seen.last(), Some(&total), "{seen:?}");
    assert!(
        seen.iter().any(|&b| b > 0 && b < total),
        "no snapshot while step 7 ran: {seen:?}"
    );
    assert!(mid_with_rate, "no rate or time left mid-way");
    // The history has the pass's last line, the json its hashes.
    assert!(w.stdout.contains("✓ image read  4.0 GiB"), "{}", w.stdout);
    assert!(tmp.path().join("out.img.json").exists());
}
