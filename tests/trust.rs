//! Trust, end to end with the real binary (docs/spec.md §13): `--lock`
//! and `--locked` against a real nginx and Debian's `docker-registry` on
//! loopback, the images read back with debugfs and e2fsck.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::env::sha256_hex;
use common::image::{self, assert_nothing_left, fsck_p3, make_base, read_p3, BIN};
use common::registry::{umoci_image, DockerRegistry};
use common::run;
use common::servers::Nginx;

const EPOCH: &str = "1700000000";

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs"])
}

/// The binary with `SOURCE_DATE_EPOCH` fixed and `args`.
fn build(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.env("SOURCE_DATE_EPOCH", EPOCH);
    for a in args {
        c.arg(a);
    }
    run(&mut c)
}

fn lock_of(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The lock's item of config key `key`.
fn item<'a>(lock: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    lock["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .unwrap_or_else(|| panic!("no {key} in {lock}"))
}

/// A tar of one file `name` with `data`, made by tar(1).
fn make_tar(dir: &Path, name: &str, data: &[u8], to: &Path) {
    let src = dir.join("tar-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join(name), data).unwrap();
    let (code, out) = run(Command::new("tar")
        .arg("-cf")
        .arg(to)
        .arg("-C")
        .arg(&src)
        .arg(name));
    assert_eq!(code, 0, "tar: {out}");
}

struct Site {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    nginx: Option<Nginx>,
    cfg: PathBuf,
    cache: PathBuf,
    a: Vec<u8>,
    local: PathBuf,
}

/// nginx serving `a.bin` (3 MiB) and `t.tar`; a config with them, a
/// local file and inline content.
fn site() -> Option<Site> {
    if !tools() {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let nginx = Nginx::start(&dir)?;
    let a: Vec<u8> = (0..3 << 20).map(|i: u32| (i * 31 % 253) as u8).collect();
    std::fs::write(nginx.root.join("a.bin"), &a).unwrap();
    make_tar(
        &dir,
        "inner.txt",
        b"inside the tar\n",
        &nginx.root.join("t.tar"),
    );
    let local = dir.join("local.bin");
    std::fs::write(&local, b"a local file\n").unwrap();
    let (base, rootfs) = make_base(&dir);
    let cfg = image::files_config(
        &dir,
        &base,
        rootfs,
        &format!(
            "  - {{to: /data/a.bin, url: '{}'}}\n  - {{to: /data/t, url: '{}', via: tar}}\n  - {{to: /data/local.bin, url: 'file://{}'}}\n  - {{to: /data/note.txt, content: hello}}\n",
            nginx.url("a.bin"),
            nginx.url("t.tar"),
            local.display()
        ),
    );
    let cache = dir.join("cache");
    Some(Site {
        _tmp: tmp,
        dir,
        nginx: Some(nginx),
        cfg,
        cache,
        a,
        local,
    })
}

#[test]
fn a_locked_build_with_the_origin_stopped_and_the_cache_warm_is_byte_identical() {
    let Some(mut s) = site() else { return };
    let (out1, lock1) = (s.dir.join("one.img"), s.dir.join("one.lock"));
    // With --json step 7 reads the image, so the downloads that declare no
    // checksum are not hashed as they arrive: a.bin's sha256 is the one
    // its cache fill's commit computed (the SBOM test checks the other
    // route, hashed in step 7's pass; tests below, the download's own).
    let (code, log) = build(&[
        &"--cache-dir",
        &s.cache,
        &"--lock",
        &lock1,
        &"--json",
        &s.cfg,
        &out1,
    ]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out1);

    // The lock names every input with the bytes the oracles see.
    let lock = lock_of(&lock1);
    assert_eq!(lock["lock_version"], 1);
    assert_eq!(lock["source_date_epoch"], 1_700_000_000);
    assert!(lock["tool"].as_str().unwrap().starts_with("image-creator "));
    let cfg_text = std::fs::read(&s.cfg).unwrap();
    assert_eq!(lock["config"]["sha256"], sha256_hex(&cfg_text));
    let base_bytes = std::fs::read(s.dir.join("base.img")).unwrap();
    assert_eq!(lock["base"]["sha256"], sha256_hex(&base_bytes), "{lock}");
    assert_eq!(lock["base"]["size"], base_bytes.len() as u64);
    let a = item(&lock, "files[0].to");
    assert_eq!(a["kind"], "file");
    assert_eq!(a["sha256"], sha256_hex(&s.a));
    assert_eq!(a["size"], s.a.len() as u64);
    assert!(
        a["etag"].is_string() && a["last_modified"].is_string(),
        "{a}"
    );
    let tar = std::fs::read(s.nginx.as_ref().unwrap().root.join("t.tar")).unwrap();
    let t = item(&lock, "files[1].to");
    assert_eq!(t["kind"], "archive");
    assert_eq!(t["sha256"], sha256_hex(&tar));
    assert_eq!(t["size"], tar.len() as u64);
    let l = item(&lock, "files[2].to");
    assert_eq!(l["path"], s.local.display().to_string());
    assert_eq!(l["sha256"], sha256_hex(b"a local file\n"));
    assert_eq!(item(&lock, "files[3].to")["sha256"], sha256_hex(b"hello"));
    // The image has those bytes.
    let got = read_p3(&out1, "/a.bin", &s.dir.join("a.back"));
    assert_eq!(sha256_hex(&got), a["sha256"].as_str().unwrap());

    // The origin goes away; the lock and the warm cache are enough.
    drop(s.nginx.take());
    let (out2, lock2) = (s.dir.join("two.img"), s.dir.join("two.lock"));
    let (code, log) = build(&[
        &"--cache-dir",
        &s.cache,
        &"--locked",
        &lock1,
        &"--lock",
        &lock2,
        &s.cfg,
        &out2,
    ]);
    assert_eq!(code, 0, "{log}");
    assert!(
        std::fs::read(&out1).unwrap() == std::fs::read(&out2).unwrap(),
        "the locked build differs from the first"
    );
    assert_eq!(
        lock_of(&lock2),
        lock,
        "the locked build records the same inputs"
    );

    // A config with another sha256 is refused before anything is written.
    let mut text = cfg_text.clone();
    text.extend_from_slice(b"write_config: true\n");
    let other = s.dir.join("other.yaml");
    std::fs::write(&other, text).unwrap();
    let out3 = s.dir.join("three.img");
    let (code, log) = build(&[&"--cache-dir", &s.cache, &"--locked", &lock1, &other, &out3]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("sha256") && log.contains("one.lock"), "{log}");
    assert_nothing_left(&s.dir, &out3);

    // A lock that can't be written: refused before the build (exit 3).
    let nowhere = s.dir.join("no-such-dir/x.lock");
    let (code, log) = build(&[&"--lock", &nowhere, &s.cfg, &out3]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("no-such-dir"), "{log}");
    assert_nothing_left(&s.dir, &out3);

    // Not a lock: exit 3 naming the file.
    std::fs::write(s.dir.join("bad.lock"), b"{\"lock_version\": 1").unwrap();
    let (code, log) = build(&[&"--locked", &s.dir.join("bad.lock"), &s.cfg, &out3]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("bad.lock"), "{log}");
    assert_nothing_left(&s.dir, &out3);
}

#[test]
fn a_locked_build_of_a_changed_source_fails_naming_it_and_leaves_nothing() {
    let Some(s) = site() else { return };
    let lock = s.dir.join("l.lock");
    let out = s.dir.join("o.img");
    let (code, log) = build(&[&"--cache-dir", &s.cache, &"--lock", &lock, &s.cfg, &out]);
    assert_eq!(code, 0, "{log}");
    let www = &s.nginx.as_ref().unwrap().root;
    let url = s.nginx.as_ref().unwrap().url("a.bin");

    // The same size, other bytes; the cache cleared: the download is the
    // new file, and its sha256 is not the lock's.
    let mut changed = s.a.clone();
    changed[12_345] ^= 1;
    std::fs::write(www.join("a.bin"), &changed).unwrap();
    std::fs::remove_dir_all(&s.cache).unwrap();
    let out2 = s.dir.join("o2.img");
    let (code, log) = build(&[&"--cache-dir", &s.cache, &"--locked", &lock, &s.cfg, &out2]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains(&url) && log.contains("l.lock"), "{log}");
    assert_nothing_left(&s.dir, &out2);
    // Without the cache too.
    let (code, log) = build(&[&"--locked", &lock, &s.cfg, &out2]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains(&url), "{log}");
    assert_nothing_left(&s.dir, &out2);

    // Another size: refused at planning, naming the key and the URL.
    std::fs::write(www.join("a.bin"), &changed[..1000]).unwrap();
    let (code, log) = build(&[&"--locked", &lock, &s.cfg, &out2]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("files[0].to") && log.contains(&url), "{log}");
    assert_nothing_left(&s.dir, &out2);

    // A changed archive and a changed local file are named the same way.
    std::fs::write(www.join("a.bin"), &s.a).unwrap();
    let tar = std::fs::read(www.join("t.tar")).unwrap();
    make_tar(&s.dir, "inner.txt", b"inside the taR\n", &www.join("t.tar"));
    let (code, log) = build(&[&"--locked", &lock, &s.cfg, &out2]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("t.tar"), "{log}");
    assert_nothing_left(&s.dir, &out2);
    std::fs::write(www.join("t.tar"), &tar).unwrap();
    std::fs::write(&s.local, b"a local filE\n").unwrap();
    let (code, log) = build(&[&"--locked", &lock, &s.cfg, &out2]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("local.bin"), "{log}");
    assert_nothing_left(&s.dir, &out2);
    // Put back: the locked build works again, without the cache.
    std::fs::write(&s.local, b"a local file\n").unwrap();
    let (code, log) = build(&[&"--locked", &lock, &s.cfg, &out2]);
    assert_eq!(code, 0, "{log}");
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&out2).unwrap());
}

#[test]
fn a_locked_build_pulls_the_locked_digest_after_the_tag_moved() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let Some(reg) = DockerRegistry::start(dir) else {
        common::skip("docker-registry, umoci or skopeo is missing (see .ci/run)");
        return;
    };
    let layout = umoci_image(dir, "one", "arm64", &[("/etc/v", b"one\n")]);
    umoci_image(dir, "two", "arm64", &[("/etc/v", b"two, longer\n")]);
    reg.push(&layout, "one", "test/app:stable", &[]);
    let (base, rootfs) = make_base(dir);
    let host = reg.host();
    let cfg = image::write_config(
        dir,
        &base,
        rootfs,
        &format!("oci_images:\n  - {{ident: '{host}/test/app:stable', filesize: 20000, fullsize: 100}}\n"),
    );
    let name = format!("{}_test_app_stable_linuxarm64v8.tar", host.replace(':', ""));
    let tar_of = |img: &Path, tag: &str| read_p3(img, &format!("/images/{name}"), &dir.join(tag));

    let (out1, lock) = (dir.join("one.img"), dir.join("one.lock"));
    let (code, log) = build(&[&"--lock", &lock, &"--sbom", &cfg, &out1]);
    assert_eq!(code, 0, "{log}");
    let locked = lock_of(&lock);
    let img = &item(&locked, "oci_images[0].ident")["image"];
    assert_eq!(img["registry"], host);
    assert_eq!(img["repository"], "test/app");
    assert_eq!(img["tag"], "stable");
    let manifest = img["manifest_digest"].as_str().unwrap().to_string();
    assert!(manifest.starts_with("sha256:"), "{img}");
    assert_eq!(img["layers"].as_array().unwrap().len(), 1, "{img}");
    let first = tar_of(&out1, "first.tar");
    // The SBOM names the image by a purl with its manifest digest, and
    // spdx-tools takes it (the registry's address is no SPDX download
    // location: NOASSERTION, the URL in sourceInfo).
    let sbom = dir.join("one.img.spdx.json");
    if let Some(tool) = pyspdxtools() {
        let (code, o) = run(Command::new(tool).arg("-i").arg(&sbom));
        assert_eq!(code, 0, "pyspdxtools: {o}");
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sbom).unwrap()).unwrap();
    let pkg = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "CONTAINER")
        .unwrap();
    let purl = pkg["externalRefs"][0]["referenceLocator"].as_str().unwrap();
    assert_eq!(
        purl,
        format!(
            "pkg:oci/app@{}?arch=arm64&repository_url={host}/test/app&tag=stable",
            manifest.replace(':', "%3A")
        )
    );

    // The tag moves to another image.
    reg.push(&layout, "two", "test/app:stable", &[]);
    let (out2, out3) = (dir.join("two.img"), dir.join("three.img"));
    let (code, log) = build(&[&"--locked", &lock, &cfg, &out2]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out2);
    assert!(
        tar_of(&out2, "locked.tar") == first,
        "--locked pulled another image"
    );
    assert!(std::fs::read(&out1).unwrap() == std::fs::read(&out2).unwrap());
    let (code, log) = build(&[&"--lock", &dir.join("three.lock"), &cfg, &out3]);
    assert_eq!(code, 0, "{log}");
    assert!(
        tar_of(&out3, "moved.tar") != first,
        "without the lock the tag's new image comes"
    );
    let moved = lock_of(&dir.join("three.lock"));
    assert_ne!(
        item(&moved, "oci_images[0].ident")["image"]["manifest_digest"],
        manifest.as_str()
    );
}

/// `minisign -G` into `dir`: an unencrypted key pair (`u.key`, `u.pub`)
/// and one encrypted with the password `pw` (`e.key`, `e.pub`).
fn minisign_keys(dir: &Path) -> bool {
    if !common::have("minisign") {
        common::skip("minisign is not installed (CI installs it; see .ci/run)");
        return false;
    }
    let (code, out) = run(Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(dir.join("u.pub"))
        .arg("-s")
        .arg(dir.join("u.key")));
    assert_eq!(code, 0, "minisign -G -W: {out}");
    // minisign reads the password (twice) from a standard input that is
    // not a terminal.
    let mut c = Command::new("minisign");
    c.args(["-G", "-p"])
        .arg(dir.join("e.pub"))
        .arg("-s")
        .arg(dir.join("e.key"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"pw\npw\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "minisign -G: {out:?}");
    true
}

/// `verify TARGET --pubkey KEY`.
fn verify_signed(target: &Path, key: &Path) -> (i32, String) {
    run(Command::new(BIN)
        .arg("verify")
        .arg(target)
        .arg("--pubkey")
        .arg(key))
}

/// Flip one bit of byte `at` of `path`.
fn flip(path: &Path, at: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn signed_outputs_are_checked_by_minisign_sha256sum_and_verify() {
    let Some(s) = site() else { return };
    if !minisign_keys(&s.dir) {
        return;
    }
    let out = s.dir.join("o.img");
    let lock = s.dir.join("o.img.lock");
    let key = s.dir.join("u.key");
    let (code, log) = build(&[&"--sign", &key, &"--bmap", &"--lock", &lock, &s.cfg, &out]);
    assert_eq!(code, 0, "{log}");
    let sums = s.dir.join("o.img.SHA256SUMS");
    let text = std::fs::read_to_string(&sums).unwrap();
    let names: Vec<&str> = text.lines().map(|l| &l[66..]).collect();
    assert_eq!(
        names,
        ["o.img", "o.img.bmap", "o.img.json", "o.img.lock"],
        "{text}"
    );

    // The oracles: minisign checks the signature, sha256sum the list.
    let pubkey = s.dir.join("u.pub");
    let (code, o) = run(Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&pubkey)
        .arg("-m")
        .arg(&sums));
    assert_eq!(code, 0, "minisign -V: {o}");
    let (code, o) = run(Command::new("sha256sum")
        .arg("-c")
        .arg("o.img.SHA256SUMS")
        .current_dir(&s.dir));
    assert_eq!(code, 0, "sha256sum -c: {o}");

    let (code, o) = verify_signed(&out, &pubkey);
    assert_eq!(code, 0, "{o}");
    // One byte of a listed file, of the image, then the wrong key.
    for (file, at) in [(s.dir.join("o.img.bmap"), 100), (out.clone(), 5 << 20)] {
        flip(&file, at);
        let (code, o) = verify_signed(&out, &pubkey);
        assert_eq!(code, 1, "{o}");
        let name = file.display().to_string();
        assert!(
            o.lines()
                .any(|l| l.starts_with("differs:") && l.contains(&name)),
            "{o}"
        );
        flip(&file, at);
    }
    let (code, o) = verify_signed(&out, &s.dir.join("e.pub"));
    assert_eq!(code, 1, "{o}");
    assert!(
        o.contains("o.img.SHA256SUMS: the signature does not hold"),
        "{o}"
    );
    // A tampered list: minisign refuses it, and so do we.
    let mut tampered = text.clone().into_bytes();
    tampered[3] = if tampered[3] == b'0' { b'1' } else { b'0' };
    std::fs::write(&sums, &tampered).unwrap();
    let (code, _) = run(Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(&pubkey)
        .arg("-m")
        .arg(&sums));
    assert_ne!(code, 0, "minisign accepted a tampered list");
    let (code, o) = verify_signed(&out, &pubkey);
    assert_eq!(code, 1, "{o}");
    assert!(
        o.contains("o.img.SHA256SUMS: the signature does not hold"),
        "{o}"
    );
    std::fs::write(&sums, &text).unwrap();
    assert_eq!(verify_signed(&out, &pubkey).0, 0);
    // A key that is no key: exit 3 naming it.
    let (code, o) = verify_signed(&out, &s.cfg);
    assert_eq!(code, 3, "{o}");
    assert!(o.contains("image.yaml"), "{o}");

    // An encrypted key: its password from the environment; without it
    // (or with a wrong one) exit 3 naming the key, nothing written.
    let enc = s.dir.join("e.key");
    let out2 = s.dir.join("e.img");
    let signed = |pw: Option<&str>| {
        let mut c = Command::new(BIN);
        c.env("SOURCE_DATE_EPOCH", EPOCH)
            .env_remove("IMAGE_CREATOR_SIGN_PASSWORD")
            .arg("--sign")
            .arg(&enc)
            .arg(&s.cfg)
            .arg(&out2);
        if let Some(p) = pw {
            c.env("IMAGE_CREATOR_SIGN_PASSWORD", p);
        }
        run(&mut c)
    };
    for pw in [None, Some("wrong")] {
        let (code, o) = signed(pw);
        assert_eq!(code, 3, "{o}");
        assert!(o.contains("e.key"), "{o}");
        assert_nothing_left(&s.dir, &out2);
        assert!(!s.dir.join("e.img.SHA256SUMS").exists());
    }
    let (code, o) = signed(Some("pw"));
    assert_eq!(code, 0, "{o}");
    let (code, o) = run(Command::new("minisign")
        .arg("-V")
        .arg("-p")
        .arg(s.dir.join("e.pub"))
        .arg("-m")
        .arg(s.dir.join("e.img.SHA256SUMS")));
    assert_eq!(code, 0, "minisign -V: {o}");
    assert_eq!(verify_signed(&out2, &s.dir.join("e.pub")).0, 0);

    // `--sign` needs the image's hash: with --no-hash it is a usage error.
    let (code, o) = build(&[&"--sign", &key, &"--no-hash", &s.cfg, &s.dir.join("n.img")]);
    assert_eq!(code, 2, "{o}");
}

/// `--sign` with `--publish`: the list and its signature go up with the
/// other side files, before `OUTPUT.json`, byte for byte the local ones;
/// `--check` lists them as side files and in the upload order.
#[test]
fn signed_sets_are_published_before_the_json_and_listed_by_check() {
    let Some(s) = site() else { return };
    if !minisign_keys(&s.dir) {
        return;
    }
    let Some(m) = common::moto::Moto::start(&s.dir, &[]) else {
        return;
    };
    m.create_bucket("pub");
    let out = s.dir.join("o.img");
    let key = s.dir.join("u.key");
    let run_with = |extra: &[&str]| {
        let mut c = Command::new(BIN);
        c.env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["--publish", "s3://pub/p/", "--sign"])
            .arg(&key)
            .args(extra)
            .arg(&s.cfg)
            .arg(&out);
        for (k, v) in m.env() {
            c.env(k, v);
        }
        run(&mut c)
    };
    let (code, o) = run_with(&["--check", "--bmap"]);
    assert_eq!(code, 0, "{o}");
    let order = [
        "o.img.bmap  to",
        "o.img.SHA256SUMS  to",
        "o.img.SHA256SUMS.minisig  to",
        "o.img.json  to",
    ];
    let at: Vec<usize> = order
        .iter()
        .map(|u| o.find(u).unwrap_or_else(|| panic!("{u}: {o}")))
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{o}");
    assert!(
        o.contains("side files:") && o.contains("o.img.SHA256SUMS.minisig\n"),
        "{o}"
    );
    assert!(!out.exists());

    let (code, o) = run_with(&[]);
    assert_eq!(code, 0, "{o}");
    let got = m.dump("pub", "p/");
    let keys: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "p/o.img",
            "p/o.img.SHA256SUMS",
            "p/o.img.SHA256SUMS.minisig",
            "p/o.img.json"
        ]
    );
    for (k, v) in &got {
        let local = s.dir.join(k.trim_start_matches("p/"));
        assert_eq!(v.sha256, sha256_hex(&std::fs::read(&local).unwrap()), "{k}");
    }
    let t = m.last_modified("pub", "p/");
    for k in [
        "p/o.img",
        "p/o.img.SHA256SUMS",
        "p/o.img.SHA256SUMS.minisig",
    ] {
        assert!(
            t["p/o.img.json"] >= t[k],
            "the JSON went up before {k}: {t:?}"
        );
    }
    // What went up verifies with minisign, as downloaded.
    let dl = s.dir.join("dl");
    std::fs::create_dir(&dl).unwrap();
    for k in got.keys() {
        std::fs::copy(
            s.dir.join(k.trim_start_matches("p/")),
            dl.join(k.trim_start_matches("p/")),
        )
        .unwrap();
    }
    let (code, o) = verify_signed(&dl.join("o.img"), &s.dir.join("u.pub"));
    assert_eq!(code, 0, "{o}");
    // A later build without --sign leaves no stale signature beside OUTPUT.
    let mut c = Command::new(BIN);
    c.env("SOURCE_DATE_EPOCH", EPOCH)
        .arg("-X")
        .arg(&s.cfg)
        .arg(&out);
    assert_eq!(run(&mut c).0, 0);
    assert!(!s.dir.join("o.img.SHA256SUMS").exists());
    assert!(!s.dir.join("o.img.SHA256SUMS.minisig").exists());
}

/// spdx-tools' `pyspdxtools` (PyPI), in the venv `.ci/run` makes
/// (`SPDX_TOOLS`, default /opt/spdx/bin/pyspdxtools).
fn pyspdxtools() -> Option<PathBuf> {
    let p = std::env::var_os("SPDX_TOOLS")
        .map_or_else(|| PathBuf::from("/opt/spdx/bin/pyspdxtools"), PathBuf::from);
    if p.exists() {
        Some(p)
    } else {
        common::skip("pyspdxtools is missing (.ci/run installs spdx-tools in /opt/spdx)");
        None
    }
}

#[test]
fn the_sbom_validates_with_spdx_tools_and_names_each_file_by_its_bytes() {
    let Some(s) = site() else { return };
    let Some(tool) = pyspdxtools() else { return };
    // The downloads by a host name (SPDX's download locations are names,
    // not addresses), resolved to nginx on loopback.
    let cfg = s.dir.join("named.yaml");
    let text = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(&cfg, text.replace("127.0.0.1", "files.example.test")).unwrap();
    let out = s.dir.join("o.img.zst");
    let (code, log) = build(&[
        &"--sbom",
        &"--resolve",
        &"files.example.test:127.0.0.1",
        &cfg,
        &out,
    ]);
    assert_eq!(code, 0, "{log}");
    let doc = s.dir.join("o.img.zst.spdx.json");
    let (code, o) = run(Command::new(&tool).arg("-i").arg(&doc));
    assert_eq!(code, 0, "pyspdxtools: {o}");
    assert!(!o.to_lowercase().contains("invalid"), "pyspdxtools: {o}");

    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&doc).unwrap()).unwrap();
    assert_eq!(v["spdxVersion"], "SPDX-2.3");
    assert_eq!(v["creationInfo"]["created"], "2023-11-14T22:13:20Z");
    let packages = v["packages"].as_array().unwrap();
    let sha = |p: &serde_json::Value| {
        p["checksums"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["algorithm"] == "SHA256")
            .unwrap()["checksumValue"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let described = packages
        .iter()
        .find(|p| p["SPDXID"] == "SPDXRef-Image")
        .unwrap();
    assert_eq!(sha(described), sha256_hex(&std::fs::read(&out).unwrap()));
    let contained: Vec<&str> = v["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["relationshipType"] == "CONTAINS")
        .map(|r| r["relatedSpdxElement"].as_str().unwrap())
        .collect();
    assert_eq!(contained.len(), packages.len() - 1, "{v}");
    // The raw image, for debugfs: decompressed by zstd(1).
    let raw = s.dir.join("o.img");
    let (code, o) = run(Command::new("zstd")
        .args(["-d", "-q", "-f", "-o"])
        .arg(&raw)
        .arg(&out));
    assert_eq!(code, 0, "zstd -d: {o}");
    // Every content file's SHA-256 is the file's in the image.
    let mut files = 0;
    for p in packages
        .iter()
        .filter(|p| p["primaryPackagePurpose"] == "FILE")
    {
        let dest = p["packageFileName"].as_str().unwrap();
        let got = read_p3(
            &raw,
            dest.trim_start_matches("/data"),
            &s.dir.join("f.back"),
        );
        assert_eq!(sha(p), sha256_hex(&got), "{dest}");
        files += 1;
    }
    assert_eq!(files, 3, "a.bin, local.bin, note.txt: {v}");
    let a = packages
        .iter()
        .find(|p| p["packageFileName"] == "/data/a.bin")
        .unwrap();
    assert_eq!(
        a["downloadLocation"],
        s.nginx
            .as_ref()
            .unwrap()
            .url("a.bin")
            .replace("127.0.0.1", "files.example.test")
    );
    let tar = packages
        .iter()
        .find(|p| p["primaryPackagePurpose"] == "ARCHIVE")
        .unwrap();
    let tar_bytes = std::fs::read(s.nginx.as_ref().unwrap().root.join("t.tar")).unwrap();
    assert_eq!(sha(tar), sha256_hex(&tar_bytes));
    let base = packages
        .iter()
        .find(|p| p["SPDXID"] == "SPDXRef-Base")
        .unwrap();
    assert_eq!(
        sha(base),
        sha256_hex(&std::fs::read(s.dir.join("base.img")).unwrap())
    );
}

/// The in-toto attestation Python bindings (PyPI `in-toto-attestation`,
/// in the venv of [`pyspdxtools`]) parse `path` strictly (protobuf's
/// JSON parser refuses unknown fields and ill-typed values) as an in-toto
/// Statement v1 whose predicate is SLSA provenance v1, and run their
/// validations; prints the subjects as JSON `[[name, sha256], …]`.
const INTOTO_CHECK: &str = r#"
import json, sys
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, "one statement, one line"
st = json_format.Parse(lines[0], statement_pb2.Statement())
Statement.copy_from_pb(st).validate()
assert st.predicate_type == "https://slsa.dev/provenance/v1", st.predicate_type
prov = json_format.ParseDict(json.loads(lines[0])["predicate"], provenance_pb2.Provenance())
bd = prov.build_definition
assert bd.build_type and prov.run_details.builder.id
assert "config" in bd.external_parameters
for rd in bd.resolved_dependencies:
    ResourceDescriptor.copy_from_pb(rd).validate()
md = prov.run_details.metadata
assert md.started_on.seconds > 0 and md.finished_on.ToNanoseconds() >= md.started_on.ToNanoseconds()
print(json.dumps([[s.name, s.digest["sha256"]] for s in st.subject]))
print(json.dumps([[d.name, dict(d.digest)] for d in bd.resolved_dependencies]))
"#;

#[test]
fn the_provenance_is_an_in_toto_slsa_statement_of_the_files_written() {
    let Some(s) = site() else { return };
    let Some(tool) = pyspdxtools() else { return };
    let python = tool.with_file_name("python3");
    if !minisign_keys(&s.dir) {
        return;
    }
    let out = s.dir.join("o.img");
    let key = s.dir.join("u.key");
    let (code, log) = build(&[
        &"--provenance",
        &"--sbom",
        &"--bmap",
        &"--sign",
        &key,
        &s.cfg,
        &out,
    ]);
    assert_eq!(code, 0, "{log}");
    let stmt = s.dir.join("o.img.intoto.jsonl");
    let (code, o) = run(Command::new(&python).arg("-c").arg(INTOTO_CHECK).arg(&stmt));
    assert_eq!(code, 0, "in-toto bindings: {o}");
    let mut lines = o.lines().filter(|l| l.starts_with('['));
    let subjects: Vec<(String, String)> = serde_json::from_str(lines.next().unwrap()).unwrap();
    let names: Vec<&str> = subjects.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["o.img", "o.img.bmap", "o.img.spdx.json", "o.img.json"]
    );
    for (name, sha) in &subjects {
        assert_eq!(
            *sha,
            sha256_hex(&std::fs::read(s.dir.join(name)).unwrap()),
            "{name}"
        );
    }
    // Every input, by the digest the lock would give it.
    let deps: Vec<(String, serde_json::Value)> =
        serde_json::from_str(lines.next().unwrap()).unwrap();
    let keys: Vec<&str> = deps.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "base.source",
            "files[0].to",
            "files[1].to",
            "files[2].to",
            "files[3].to"
        ]
    );
    assert_eq!(deps[1].1["sha256"], sha256_hex(&s.a));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&stmt).unwrap()).unwrap();
    let p = &v["predicate"];
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["config"]["digest"]["sha256"],
        sha256_hex(&std::fs::read(&s.cfg).unwrap())
    );
    assert!(p["runDetails"]["builder"]["id"]
        .as_str()
        .unwrap()
        .ends_with(env!("CARGO_PKG_VERSION")));
    // The signed list covers the statement too.
    let sums = std::fs::read_to_string(s.dir.join("o.img.SHA256SUMS")).unwrap();
    assert!(sums.contains("  o.img.intoto.jsonl\n"), "{sums}");
    let (code, o) = verify_signed(&out, &s.dir.join("u.pub"));
    assert_eq!(code, 0, "{o}");
}

/// `verify IMG ARGS…`.
fn verify_with(img: &Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String) {
    let mut c = Command::new(BIN);
    c.arg("verify");
    for a in args {
        c.arg(a);
    }
    c.arg(img);
    run(&mut c)
}

#[test]
fn verify_checks_the_lock_archive_members_url_checksums_and_the_platform() {
    let Some(s) = site() else { return };
    let www = s.nginx.as_ref().unwrap().root.clone();
    let nginx = s.nginx.as_ref().unwrap();
    // A kind: url checksum and a prebuilt image archive (a local tar).
    std::fs::write(
        www.join("a.bin.sha256"),
        format!("{}  a.bin\n", sha256_hex(&s.a)),
    )
    .unwrap();
    let prebuilt = s.dir.join("prebuilt.tar");
    make_tar(&s.dir, "layer.txt", b"not really an image\n", &prebuilt);
    let size = std::fs::metadata(&prebuilt).unwrap().len();
    let mut text = std::fs::read_to_string(&s.cfg).unwrap();
    text = text.replacen(
        &format!("url: '{}'}}", nginx.url("a.bin")),
        &format!(
            "url: '{}', checksum: {{algo: sha-256, kind: url, value: '{}'}}}}",
            nginx.url("a.bin"),
            nginx.url("a.bin.sha256")
        ),
        1,
    );
    text.push_str(&format!(
        "oci_images:\n  - {{ident: 'ghcr.io/offspot/demo:1.0', filesize: {size}, fullsize: 100, url: '{}'}}\n",
        prebuilt.display()
    ));
    let cfg = s.dir.join("v.yaml");
    std::fs::write(&cfg, &text).unwrap();
    let (out, lock) = (s.dir.join("v.img"), s.dir.join("v.lock"));
    let (code, log) = build(&[&"--lock", &lock, &cfg, &out]);
    assert_eq!(code, 0, "{log}");

    let (code, o) = verify_with(&out, &[&"--config", &cfg, &"--lock", &lock]);
    assert_eq!(code, 0, "{o}");

    // Another platform: the image's archive has another name.
    let (code, o) = verify_with(&out, &[&"--config", &cfg, &"--platform", &"linux/amd64"]);
    assert_eq!(code, 1, "{o}");
    assert!(
        o.contains("ghcr.io_offspot_demo_1.0_linuxamd64.tar") && o.contains("missing"),
        "{o}"
    );

    // The checksum file now names other bytes: the url checksum is read.
    std::fs::write(
        www.join("a.bin.sha256"),
        format!("{}  a.bin\n", "0".repeat(64)),
    )
    .unwrap();
    let (code, o) = verify_with(&out, &[&"--config", &cfg]);
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("files[0]") && o.contains(&"0".repeat(64)), "{o}");
    std::fs::write(
        www.join("a.bin.sha256"),
        format!("{}  a.bin\n", sha256_hex(&s.a)),
    )
    .unwrap();

    // A member of the served tar changed: named by its path in p3.
    make_tar(&s.dir, "inner.txt", b"inside the taR\n", &www.join("t.tar"));
    let (code, o) = verify_with(&out, &[&"--config", &cfg]);
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("/t/inner.txt in p3"), "{o}");

    // An image of other content than the lock's: the file is named.
    std::fs::write(www.join("a.bin"), b"other").unwrap();
    let text2 = text.replace(
        &format!(
            ", checksum: {{algo: sha-256, kind: url, value: '{}'}}",
            nginx.url("a.bin.sha256")
        ),
        "",
    );
    let cfg2 = s.dir.join("v2.yaml");
    std::fs::write(&cfg2, text2).unwrap();
    let out2 = s.dir.join("v2.img");
    let (code, log) = build(&[&cfg2, &out2]);
    assert_eq!(code, 0, "{log}");
    let (code, o) = verify_with(&out2, &[&"--lock", &lock]);
    assert_eq!(code, 1, "{o}");
    assert!(o.contains("lock files[0].to (/a.bin in p3)"), "{o}");
    assert_eq!(o.matches("differs:").count(), 1, "only a.bin differs: {o}");
}
