//! Injected faults (issue 15), each through the real binary: a clear
//! error, nothing left behind, and never a panic (exit 101) or a signal.
//!
//! - the output filesystem fills up mid-build (a small tmpfs, as root);
//! - a local source truncated or grown while it is read;
//! - registry manifests and token responses that never end or are over
//!   4 MiB; an HTTP server whose headers never end;
//! - randomly corrupted p3 metadata in the base;
//! - `kill -9` at random moments in a loop of builds (local and HTTP
//!   sources): after the next build only finished outputs are left;
//! - two concurrent builds to one output: one succeeds, the other exits 3
//!   at once, naming the first.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::image::{fsck_p3, make_base, write_config, BIN};
use common::servers::{Behaviour, Faulty, Gate};
use common::{is_root, skip_machine, Capability};

fn tools() -> bool {
    common::image::tools(&["e2fsck", "debugfs"])
}

/// The outcome of one run of the binary.
#[derive(Debug)]
struct Ran {
    code: i32,
    log: String,
    took: Duration,
}

/// Wait for `child` at most `limit`; a run that takes longer is a hang
/// (killed, and the test fails). Exit 101 (a panic) and death by a signal
/// fail the test whatever the input.
fn finish(mut child: Child, limit: Duration, what: &str) -> Ran {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let mut log = String::from_utf8_lossy(&out.stdout).into_owned();
            log.push_str(&String::from_utf8_lossy(&out.stderr));
            let code = status.code().unwrap_or(-1);
            assert!(
                status.code().is_some(),
                "{what}: killed by a signal ({status}): {log}"
            );
            assert_ne!(code, 101, "{what}: panicked: {log}");
            return Ran {
                code,
                log,
                took: t0.elapsed(),
            };
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn spawn(args: &[&std::ffi::OsStr]) -> Child {
    Command::new(BIN)
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn build(args: &[&std::ffi::OsStr], limit: Duration, what: &str) -> Ran {
    finish(spawn(args), limit, what)
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Wait until `path` exists (the build took its output lock).
fn wait_for(path: &Path, child: &mut Child, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !path.exists() {
        if t0.elapsed() > limit || child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

fn lock_of(out: &Path) -> PathBuf {
    let name = out.file_name().unwrap().to_string_lossy();
    out.with_file_name(format!(".{name}.image-creator.lock"))
}

// ---- one build per output ---------------------------------------------------

/// A slow download keeps build A running; B, to the same OUTPUT (with and
/// without -X), exits 3 at once naming A's pid; A then succeeds and
/// leaves only OUTPUT.
#[test]
fn two_concurrent_builds_to_one_output() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    let outdir = tmp.path().join("out");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::create_dir_all(&outdir).unwrap();
    let (base, rootfs) = make_base(&inputs);
    let body = Arc::new(common::bytes(5, 1 << 20));
    // A stays mid-download until B has run twice.
    let gate = Gate::new();
    let srv = Faulty::start(vec![(
        "slow",
        Behaviour::Gated {
            body: body.clone(),
            gate: gate.clone(),
        },
    )]);
    let cfg = write_config(
        &inputs,
        &base,
        rootfs,
        &format!(
            "files:\n  - to: /data/slow.bin\n    url: {}\n",
            srv.url("slow")
        ),
    );
    let out = outdir.join("out.img");
    let mut a = spawn(&[os("--json"), cfg.as_os_str(), out.as_os_str()]);
    assert!(
        wait_for(&lock_of(&out), &mut a, Duration::from_secs(30)),
        "build A never locked its output"
    );
    for extra in [None, Some("-X")] {
        let mut args = vec![cfg.as_os_str(), out.as_os_str()];
        if let Some(x) = extra {
            args.insert(0, os(x));
        }
        let b = build(&args, Duration::from_secs(30), "build B");
        assert_eq!(b.code, 3, "{extra:?}: {}", b.log);
        assert!(
            b.took < Duration::from_secs(5),
            "B took {:?}: not at once",
            b.took
        );
        assert!(
            b.log.contains("being written by another build")
                && b.log.contains(&format!("pid {}", a.id())),
            "{}",
            b.log
        );
    }
    gate.open();
    let a = finish(a, Duration::from_secs(120), "build A");
    assert_eq!(a.code, 0, "{}", a.log);
    assert_eq!(names(&outdir), ["out.img", "out.img.json"]);
    fsck_p3(&out);
    // Without -X the finished output now refuses a second build; with -X
    // it is replaced, and still nothing else is left.
    let c = build(
        &[cfg.as_os_str(), out.as_os_str()],
        Duration::from_secs(60),
        "C",
    );
    assert_eq!(c.code, 3, "{}", c.log);
    assert!(c.log.contains("already exists"), "{}", c.log);
    let d = build(
        &[os("-X"), os("--json"), cfg.as_os_str(), out.as_os_str()],
        Duration::from_secs(120),
        "D",
    );
    assert_eq!(d.code, 0, "{}", d.log);
    assert_eq!(names(&outdir), ["out.img", "out.img.json"]);
}

// ---- kill -9 ------------------------------------------------------------------

/// Builds killed with SIGKILL at pseudo-random moments, from a local
/// source and from an HTTP one, alternately with and without -X, to two
/// outputs; then one more build. Only finished outputs remain in the
/// output dir (each passes e2fsck), and the build dir is empty.
#[test]
fn kill_9_loop_leaves_only_finished_outputs() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let inputs = tmp.path().join("in");
    let outdir = tmp.path().join("out");
    let build_dir = tmp.path().join("build");
    for d in [&inputs, &outdir, &build_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let (base, rootfs) = make_base(&inputs);
    // A 512 MiB sparse local file: a second or so to copy in a debug
    // build, little disk.
    let local = inputs.join("local.bin");
    std::fs::File::create(&local)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let body = Arc::new(common::bytes(9, 2 << 20));
    let srv = Faulty::start(vec![(
        "http",
        Behaviour::Slow {
            body: body.clone(),
            chunk: 64 << 10,
            pause: Duration::from_millis(40),
        },
    )]);
    // An archive too, so the build dir sees a spooled zip.
    let zip_src = inputs.join("z");
    std::fs::create_dir_all(zip_src.join("d")).unwrap();
    std::fs::write(zip_src.join("d/a"), common::bytes(10, 300_000)).unwrap();
    let zip = inputs.join("z.zip");
    common::archives::pack("zip", &zip_src, &zip);
    let local_cfg = write_config(
        &inputs,
        &base,
        rootfs,
        &format!(
            "files:\n  - to: /data/local.bin\n    url: {}\n  - to: /data/z\n    url: {}\n    via: zip\n",
            local.display(),
            zip.display()
        ),
    );
    let http_cfg = inputs.join("http.yaml");
    std::fs::write(
        &http_cfg,
        format!(
            "base:\n  source: {}\n  rootfs_size: {rootfs}\nfiles:\n  - to: /data/http.bin\n    url: {}\n",
            base.display(),
            srv.url("http")
        ),
    )
    .unwrap();
    let bd = build_dir.as_os_str();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let rounds = std::env::var("IC_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12u64);
    let mut killed = 0;
    for i in 0..rounds {
        let cfg = if i % 2 == 0 { &local_cfg } else { &http_cfg };
        let out = outdir.join(format!("out{}.img", rand(2)));
        let mut args = vec![os("--build-dir"), bd, cfg.as_os_str(), out.as_os_str()];
        args.insert(0, os("--json"));
        // -X whenever the output exists (else the build ends at once with
        // exit 3, and nothing is tested), and now and then when it does not.
        if out.exists() || rand(2) == 0 {
            args.insert(0, os("-X"));
        }
        let mut child = spawn(&args);
        std::thread::sleep(Duration::from_millis(rand(1500)));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let _ = child.wait();
    }
    assert!(
        killed >= rounds / 4,
        "only {killed} of {rounds} builds were killed mid-way"
    );
    // What the killed builds left: lock files (their images had no name).
    let stale = names(&outdir)
        .into_iter()
        .filter(|n| n.ends_with(".image-creator.lock"))
        .count();
    assert!(
        stale > 0 || killed < 4,
        "no stale lock after {killed} kills: the sweep is not exercised"
    );
    let last = outdir.join("last.img");
    let r = build(
        &[
            os("--json"),
            os("--build-dir"),
            bd,
            local_cfg.as_os_str(),
            last.as_os_str(),
        ],
        Duration::from_secs(120),
        "the next build",
    );
    assert_eq!(r.code, 0, "{}", r.log);
    for n in names(&outdir) {
        // A finished image comes with its OUTPUT.json (--json; docs/spec.md
        // §10).
        let image = n.strip_suffix(".json").unwrap_or(&n);
        assert!(
            image == "last.img" || image == "out0.img" || image == "out1.img",
            "left in the output dir: {n} (all: {:?})",
            names(&outdir)
        );
        if n.ends_with(".json") {
            assert!(outdir.join(image).exists(), "{n} without its image");
        } else {
            fsck_p3(&outdir.join(&n));
        }
    }
    assert!(
        names(&build_dir).is_empty(),
        "left in the build dir: {:?}",
        names(&build_dir)
    );
    eprintln!("kill -9 loop: {killed} of {rounds} builds killed, {stale} stale locks swept");
}

// ---- the output filesystem fills up -------------------------------------------

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Another writer takes the output filesystem's space after the
/// free-space check: the build fails naming the output and "No space
/// left", exit 1, and leaves nothing on that filesystem but the other
/// writer's file.
#[test]
fn output_filesystem_fills_up_mid_build() {
    if !tools() {
        return;
    }
    if !is_root() {
        skip_machine(Capability::Root, "mounting a tmpfs needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&tmp.path().join("small"), "96m") else {
        skip_machine(Capability::Mount, "this machine can't mount a tmpfs");
        return;
    };
    let (base, rootfs) = make_base(tmp.path());
    let body = Arc::new(common::bytes(11, 24 << 20));
    // The download stops half-way until the filesystem is full.
    let gate = Gate::new();
    let srv = Faulty::start(vec![(
        "big",
        Behaviour::Gated {
            body: body.clone(),
            gate: gate.clone(),
        },
    )]);
    let cfg = write_config(
        tmp.path(),
        &base,
        rootfs,
        &format!(
            "files:\n  - to: /data/big.bin\n    url: {}\n",
            srv.url("big")
        ),
    );
    let out = fs.0.join("out.img");
    let progress = tmp.path().join("progress.json");
    let mut child = spawn(&[
        os("--progress-file"),
        progress.as_os_str(),
        cfg.as_os_str(),
        out.as_os_str(),
    ]);
    // Past the free-space check once the download's first bytes are in
    // the image (the progress file says so).
    assert!(
        common::wait_for_event(&mut child, Duration::from_secs(120), || {
            common::progress_bytes_done(&progress, "/data/big.bin") > 0
        }),
        "the build never started writing /data/big.bin"
    );
    let filler = fs.0.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x55u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    gate.open();
    let r = finish(child, Duration::from_secs(120), "build on a full fs");
    assert_eq!(r.code, 1, "{}", r.log);
    assert!(
        r.log.contains("No space left on device"),
        "the error says why: {}",
        r.log
    );
    assert_eq!(names(&fs.0), ["filler"]);
}

// ---- local sources that change ------------------------------------------------

/// A 1 GiB local source truncated, or grown, after planning measured it
/// and before or while it is copied (from the moment the base copy starts:
/// the progress file is written at once on a step change): exit 1 naming the file
/// and what changed; nothing left. The source is written out, not sparse:
/// local files are copied by their data regions, so a sparse one is copied
/// before anything can change it.
#[test]
fn local_source_truncated_or_grown_while_read() {
    if !tools() {
        return;
    }
    for how in ["truncated", "grown"] {
        let tmp = tempfile::tempdir().unwrap();
        let (base, rootfs) = make_base(tmp.path());
        let big = tmp.path().join("big.bin");
        {
            let mut f = std::fs::File::create(&big).unwrap();
            let chunk = vec![0x55u8; 1 << 20];
            for _ in 0..1024 {
                f.write_all(&chunk).unwrap();
            }
        }
        let cfg = write_config(
            tmp.path(),
            &base,
            rootfs,
            "files:\n  - to: /data/big\n    url: big.bin\n",
        );
        let out = tmp.path().join("out.img");
        let progress = tmp.path().join("progress.json");
        let mut child = spawn(&[
            os("--progress-file"),
            progress.as_os_str(),
            cfg.as_os_str(),
            out.as_os_str(),
        ]);
        let t0 = Instant::now();
        loop {
            let started = std::fs::read_to_string(&progress)
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v["step"]["index"].as_u64() >= Some(3));
            if started
                || t0.elapsed() > Duration::from_secs(30)
                || child.try_wait().unwrap().is_some()
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
        match how {
            "truncated" => f.set_len(1 << 20).unwrap(),
            _ => f.set_len(2 << 30).unwrap(),
        }
        let r = finish(child, Duration::from_secs(300), how);
        if r.code == 0 {
            common::skip(&format!(
                "{how}: the copy finished before the file changed; nothing was tested"
            ));
            continue;
        }
        assert_eq!(r.code, 1, "{how}: {}", r.log);
        assert!(
            r.log.contains("big") && r.log.contains("changed"),
            "{how}: {}",
            r.log
        );
        assert!(!out.exists());
        assert!(
            names(tmp.path()).iter().all(|n| {
                ["base.img", "big.bin", "image.yaml", "progress.json"].contains(&n.as_str())
            }),
            "{how}: {:?}",
            names(tmp.path())
        );
    }
}

// ---- endless and oversized responses ------------------------------------------

/// What the raw server sends for a request path.
fn raw_reply(stream: &mut TcpStream, path: &str, port: u16) -> std::io::Result<()> {
    let endless_chunks = |stream: &mut TcpStream, head: &str| -> std::io::Result<()> {
        write!(stream, "{head}Transfer-Encoding: chunked\r\n\r\n")?;
        let chunk = vec![b' '; 64 << 10];
        loop {
            write!(stream, "{:x}\r\n", chunk.len())?;
            stream.write_all(&chunk)?;
            stream.write_all(b"\r\n")?;
        }
    };
    let json = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n";
    if path == "/v2/" || path == "/v2" {
        stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    } else if path.starts_with("/v2/library/endless/manifests/") {
        endless_chunks(stream, json)
    } else if path.starts_with("/v2/library/big/manifests/") {
        let len = (4 << 20) + 1;
        write!(stream, "{json}Content-Length: {len}\r\n\r\n")?;
        stream.write_all(&vec![b' '; len])
    } else if path.starts_with("/v2/library/tok/manifests/") {
        write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"x\"\r\nContent-Length: 0\r\n\r\n"
        )
    } else if path.starts_with("/token") {
        endless_chunks(stream, "HTTP/1.1 200 OK\r\n")
    } else if path.starts_with("/headers") {
        stream.write_all(b"HTTP/1.1 200 OK\r\n")?;
        for i in 0u64.. {
            write!(stream, "X-Pad-{i}: {}\r\n", "v".repeat(100))?;
        }
        Ok(())
    } else {
        stream
            .write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    }
}

/// A loopback server of endless and oversized answers; returns its port.
/// One request per connection, so every complete answer says `Connection:
/// close`: a client that pooled the connection would otherwise send its
/// next request (the token after a 401) into a socket being closed and
/// fail with "connection reset" instead of the limit under test.
fn raw_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    match reader.read_line(&mut h) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if h == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut stream = stream;
                let _ = raw_reply(&mut stream, &path, port);
            });
        }
    });
    port
}

/// Manifests and token responses that never end or are over 4 MiB, and
/// headers that never end: each build stops within seconds with an error
/// naming the URL and the limit (exit 4 or 1, never 101), having read a
/// bounded amount.
#[test]
fn endless_and_oversized_responses_are_cut_off() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let port = raw_server();
    let host = format!("127.0.0.1:{port}");
    let cases = [
        (
            "endless manifest",
            format!("oci_images:\n  - ident: {host}/library/endless:1\n    filesize: 1\n    fullsize: 1\n"),
            "4194304 bytes",
        ),
        (
            "manifest over 4 MiB",
            format!("oci_images:\n  - ident: {host}/library/big:1\n    filesize: 1\n    fullsize: 1\n"),
            "4194304 bytes",
        ),
        (
            "endless token",
            format!("oci_images:\n  - ident: {host}/library/tok:1\n    filesize: 1\n    fullsize: 1\n"),
            "65536 bytes",
        ),
        (
            "endless headers",
            format!("files:\n  - to: /data/h\n    url: http://{host}/headers\n"),
            "headers",
        ),
    ];
    for (what, extra, says) in cases {
        let cfg = write_config(tmp.path(), &base, rootfs, &extra);
        let out = tmp.path().join("out.img");
        for check in [true, false] {
            let mut args = vec![os("--attempts"), os("1"), cfg.as_os_str(), out.as_os_str()];
            if check {
                args.insert(0, os("-C"));
            }
            let r = build(&args, Duration::from_secs(60), what);
            assert!(
                r.code == 4 || r.code == 1,
                "{what} (check {check}): exit {}: {}",
                r.code,
                r.log
            );
            assert!(r.log.contains(says), "{what}: {}", r.log);
            assert!(
                r.took < Duration::from_secs(30),
                "{what}: took {:?}",
                r.took
            );
            assert!(!out.exists());
        }
    }
}

// ---- corrupted p3 metadata ----------------------------------------------------

/// The base's p3 with random bytes overwritten in its metadata (the first
/// 1 MiB: superblock, descriptors, bitmaps, inode tables, directories).
/// Every build ends in time with exit 0 and a clean filesystem, or a clear
/// error (exit 1 or 3) about the data partition; never a panic or hang.
#[test]
fn randomly_corrupted_p3_metadata_in_the_base() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let pristine = std::fs::read(&base).unwrap();
    let p3 = usize::try_from(rootfs).unwrap();
    let rounds = std::env::var("IC_CORRUPT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24u64);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let (mut ok, mut refused) = (0, 0);
    for round in 0..rounds {
        let mut img = pristine.clone();
        for _ in 0..1 + rand(16) {
            let at = p3 + rand(1 << 20) as usize;
            let len = 1 + rand(8) as usize;
            for b in &mut img[at..at + len] {
                *b = rand(256) as u8;
            }
        }
        let b = tmp.path().join("base.img");
        std::fs::write(&b, &img).unwrap();
        let cfg = write_config(
            tmp.path(),
            &b,
            rootfs,
            "files:\n  - to: /data/new.txt\n    content: new\n",
        );
        let out = tmp.path().join("out.img");
        let _ = std::fs::remove_file(&out);
        let r = build(
            &[cfg.as_os_str(), out.as_os_str()],
            Duration::from_secs(120),
            &format!("round {round}"),
        );
        match r.code {
            0 => {
                fsck_p3(&out);
                ok += 1;
            }
            1 | 3 => {
                assert!(!out.exists(), "round {round}: output left: {}", r.log);
                assert!(r.log.contains("error:"), "round {round}: {}", r.log);
                refused += 1;
            }
            c => panic!("round {round}: exit {c}: {}", r.log),
        }
    }
    eprintln!("corrupted p3: {ok} built clean, {refused} refused, of {rounds}");
}

/// A directory hard-linked into its own subtree, twice (made with
/// `debugfs -w ln`): the walk of the old p3 would follow the loops until
/// ext4-view refused a 4 KiB path, doubling at every level. Exit 3 at
/// once, naming the loop.
#[test]
fn a_directory_loop_in_the_base_is_refused_at_once() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let spec = format!("{}?offset={rootfs}", base.display());
    for req in ["mkdir a", "mkdir a/b", "ln a a/b/loop", "ln a a/b/loop2"] {
        let (code, log) = common::run(Command::new("debugfs").args(["-w", "-R", req, &spec]));
        assert_eq!(code, 0, "{req}: {log}");
    }
    let cfg = write_config(tmp.path(), &base, rootfs, "");
    let out = tmp.path().join("out.img");
    let r = build(
        &[cfg.as_os_str(), out.as_os_str()],
        Duration::from_secs(60),
        "directory loop",
    );
    assert_eq!(r.code, 3, "{}", r.log);
    assert!(r.log.contains("directory loop"), "{}", r.log);
    assert!(r.took < Duration::from_secs(20), "took {:?}", r.took);
    assert!(!out.exists());
}
