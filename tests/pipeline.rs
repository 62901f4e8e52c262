//! The whole build, end to end, checked with tools nobody here wrote:
//! sfdisk, fsck.fat, mtools, e2fsck, debugfs, dumpe2fs, resize2fs, PyYAML.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::Path;
use std::process::Command;

use common::image::{
    self, assert_no_partials, extract, image_creator, make_base, part_spec, sfdisk_json,
    write_config, BIN,
};
use common::{digest, have, is_root, run, CHECKSUM_TOOLS};

const MIB: u64 = 1 << 20;

fn tools() -> bool {
    image::tools(&["mtype", "fsck.fat", "e2fsck", "debugfs", "dumpe2fs", "xz"])
}

#[test]
fn demo_build_passes_every_oracle() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tmp.path().join("demo.img");
    let (code, log) = image_creator(&[
        root.join("examples/demo.yaml").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    // The base, decompressed, to compare with.
    let base = tmp.path().join("base.img");
    let dec = Command::new("xz")
        .arg("-dc")
        .arg(root.join("examples/demo/base.img.xz"))
        .output()
        .unwrap();
    std::fs::write(&base, &dec.stdout).unwrap();

    let (id0, b) = sfdisk_json(&base);
    let (id1, o) = sfdisk_json(&out);
    assert_eq!(id0, id1, "disk id kept");
    assert_eq!(
        (o[0].start, o[0].size, o[1].start, o[1].size),
        (b[0].start, b[0].size, b[1].start, b[1].size),
        "p1, p2 unchanged"
    );
    assert_eq!(o[2].start, b[2].start, "p3 starts where it did");
    let len = std::fs::metadata(&out).unwrap().len();
    assert!(o[2].start + o[2].size <= len, "p3 ends inside the file");
    let (bd, od) = (std::fs::read(&base).unwrap(), std::fs::read(&out).unwrap());
    let p2 = b[1].start as usize..(b[1].start + b[1].size) as usize;
    assert!(bd[p2.clone()] == od[p2], "p2 bytes identical");

    // Boot partition: fsck.fat clean, new offspot.yaml, other files intact.
    let p1 = tmp.path().join("p1.img");
    extract(&out, &o[0], &p1);
    let (code, log) = run(Command::new("fsck.fat").arg("-n").arg(&p1));
    assert_eq!(code, 0, "fsck.fat -n: {log}");
    let at = format!("{}@@{}", out.display(), o[0].start);
    let base_at = format!("{}@@{}", base.display(), b[0].start);
    let (_, yaml) = run(Command::new("mtype").args(["-i", &at, "::offspot.yaml"]));
    assert!(
        yaml.contains("ssid: Offspot Demo") && yaml.contains("enabled: \"yes\""),
        "{yaml}"
    );
    for f in [
        "::cmdline.txt",
        "::config.txt",
        "::kernel8.img",
        "::overlays/README",
    ] {
        let (c1, a) = run(Command::new("mtype").args(["-i", &at, f]));
        let (c2, bb) = run(Command::new("mtype").args(["-i", &base_at, f]));
        assert!(c1 == 0 && c2 == 0 && a == bb, "{f} differs");
    }

    // Data partition.
    let spec = part_spec(&out, &o[2]);
    let (code, log) = run(Command::new("e2fsck").arg("-fn").arg(&spec));
    assert_eq!(code, 0, "e2fsck: {log}");
    let (_, h) = run(Command::new("dumpe2fs").arg("-h").arg(&spec));
    assert!(
        h.contains("0e9f5c44-2f0b-4b3e-9c62-1a2b3c4d5e6f") && h.contains("volume name:   data"),
        "{h}"
    );
    let cat = |p: &str| {
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {p}"))
            .arg(&spec))
        .1
    };
    assert!(cat("/contents/hello.txt").contains("Hello from the image-creator demo!"));
    assert!(
        !cat("/contents/hello.txt").contains("demo!\n"),
        "content is stripped"
    );
    assert!(cat("/contents/logo.txt").contains("offline knowledge for everyone"));
    assert!(cat("/image.yaml")
        .contains(&std::fs::read_to_string(root.join("examples/demo.yaml")).unwrap()));
    let bspec = part_spec(&base, &b[2]);
    let bcat = |p: &str| {
        run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {p}"))
            .arg(&bspec))
        .1
    };
    assert_eq!(
        cat("/images/base-httpd-1.0.tar"),
        bcat("/images/base-httpd-1.0.tar"),
        "carried over"
    );
    let (_, st) = run(Command::new("debugfs")
        .arg("-R")
        .arg("stat /master_fs")
        .arg(&spec));
    assert!(st.contains("Type: regular"), "{st}");
}

#[test]
fn pi_first_boot_growth_is_clean() {
    if !tools() || !have("resize2fs") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let blob = tmp.path().join("blob.bin");
    std::fs::write(&blob, common::bytes(1, 3 * MIB as usize)).unwrap();
    let cfg = write_config(
        tmp.path(),
        &base,
        rootfs,
        "files:\n  - to: /data/blob.bin\n    url: blob.bin\n",
    );
    let out = tmp.path().join("out.img");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    // What the Pi does: grow p3 to the card, resize2fs, then it must be clean.
    let f = std::fs::OpenOptions::new().write(true).open(&out).unwrap();
    f.set_len(std::fs::metadata(&out).unwrap().len() + 2048 * MIB)
        .unwrap();
    let grow = Command::new("sfdisk")
        .args(["--quiet", "-N", "3"])
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b", +\n")?;
            c.wait_with_output()
        });
    assert!(grow.unwrap().status.success());
    let (_, parts) = sfdisk_json(&out);
    let p3 = tmp.path().join("p3.img");
    extract(&out, &parts[2], &p3);
    let (code, log) = run(Command::new("resize2fs").arg(&p3));
    assert_eq!(code, 0, "resize2fs: {log}");
    let (code, log) = run(Command::new("e2fsck").arg("-fn").arg(&p3));
    assert_eq!(code, 0, "e2fsck after growth: {log}");
    let (_, cat) = run(Command::new("debugfs")
        .args(["-R", "dump /blob.bin /dev/stdout"])
        .arg(&p3));
    assert!(cat.len() >= 3 * MIB as usize);
}

#[test]
fn unprivileged_build_succeeds() {
    if !tools() {
        return;
    }
    if !is_root() {
        // Not a skip: every other test of this run already built images
        // unprivileged, which is what this test checks when run as root.
        eprintln!("not root: every other test already ran unprivileged, nothing more to check");
        return;
    }
    if !have("setpriv") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let cfg = write_config(
        tmp.path(),
        &base,
        rootfs,
        "files:\n  - to: /data/a.txt\n    content: hi\n",
    );
    let outdir = tmp.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    for p in [tmp.path(), outdir.as_path()] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    for p in [&base, &cfg] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // Copy the binary somewhere `nobody` can execute it.
    let bin = tmp.path().join("image-creator");
    std::fs::copy(BIN, &bin).unwrap();
    let out = outdir.join("out.img");
    let (code, log) = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg(&cfg)
        .arg(&out));
    assert_eq!(code, 0, "build as nobody: {log}");
    let (_, parts) = sfdisk_json(&out);
    let (code, log) = run(Command::new("e2fsck")
        .arg("-fn")
        .arg(part_spec(&out, &parts[2])));
    assert_eq!(code, 0, "{log}");
}

#[test]
fn checksums_of_every_algorithm_are_verified() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let blob = tmp.path().join("blob.bin");
    std::fs::write(&blob, common::bytes(2, 100_000)).unwrap();
    // Digests from the coreutils tools and python's zlib, not from us.
    let mut files = String::from("files:\n");
    for (i, (algo, tool)) in CHECKSUM_TOOLS
        .iter()
        .filter(|(algo, _)| *algo != "adler32")
        .enumerate()
    {
        let digest = digest(tool, &blob);
        files.push_str(&format!("  - to: /data/f{i}\n    url: blob.bin\n    checksum: {{algo: {algo}, value: {digest}}}\n"));
    }
    if have("python3") {
        files.push_str(&format!(
            "  - to: /data/adler\n    url: blob.bin\n    checksum: {{algo: adler32, value: {}}}\n",
            digest("adler32", &blob)
        ));
    }
    let cfg = write_config(tmp.path(), &base, rootfs, &files);
    let out = tmp.path().join("ok.img");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");

    // A wrong digest fails, names the file, both digests, and leaves nothing.
    let cfg = write_config(tmp.path(), &base, rootfs, "files:\n  - to: /data/x\n    url: blob.bin\n    checksum: {algo: md5, value: 00000000000000000000000000000000}\n");
    let bad = tmp.path().join("bad.img");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("blob.bin")
            && log.contains("md5")
            && log.contains("00000000000000000000000000000000"),
        "{log}"
    );
    assert!(!bad.exists(), "no output left behind");
    assert_no_partials(tmp.path());
}

#[test]
fn errors_have_the_right_codes_and_leave_nothing() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let out = d.join("out.img");
    let o = out.to_str().unwrap();

    // Unknown key: exit 3, naming it.
    let cfg = write_config(
        d,
        &base,
        rootfs,
        "files:\n  - to: /data/a\n    content: x\n    sise: 1\n",
    );
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), o]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("sise"), "{log}");
    assert!(!out.exists());

    // Existing output without -X: exit 3, untouched.
    std::fs::write(&out, b"precious").unwrap();
    let cfg = write_config(
        d,
        &base,
        rootfs,
        "files:\n  - to: /data/a\n    content: x\n",
    );
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), o]);
    assert_eq!(code, 3, "{log}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // --check: prints the plan, changes nothing anywhere.
    let snapshot = |p: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = snapshot(d);
    let (code, log) = image_creator(&["--check", "-X", cfg.to_str().unwrap(), o]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("/data/a") && log.contains("image size"),
        "{log}"
    );
    assert!(before == snapshot(d), "--check changed files");

    // With -X it is replaced.
    let (code, log) = image_creator(&["-X", cfg.to_str().unwrap(), o]);
    assert_eq!(code, 0, "{log}");
    assert_ne!(std::fs::read(&out).unwrap(), b"precious");
    std::fs::remove_file(&out).unwrap();
    // A side file left beside a removed OUTPUT is stale: a build without
    // -X replaces it.
    let json = format!("{o}.json");
    std::fs::write(&json, "stale").unwrap();
    let (code, log) = image_creator(&["--json", cfg.to_str().unwrap(), o]);
    assert_eq!(code, 0, "{log}");
    let meta = std::fs::read_to_string(&json).unwrap();
    assert!(meta.contains("extract_sha256"), "{meta}");
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(&json).unwrap();

    // Missing base: exit 4.
    let cfg = write_config(d, &d.join("nope.img"), rootfs, "");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), o]);
    assert_eq!(code, 4, "{log}");
    assert!(log.contains("nope.img"), "{log}");

    // Corrupt bases: no MBR; p3 not ext4.
    let junk = d.join("junk.img");
    std::fs::write(&junk, vec![0u8; 4 * MIB as usize]).unwrap();
    let cfg = write_config(d, &junk, rootfs, "");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), o]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("MBR") || log.contains("partition table"),
        "{log}"
    );
    let broken = d.join("broken.img");
    let mut data = std::fs::read(&base).unwrap();
    let (_, parts) = sfdisk_json(&base);
    let p3 = parts[2].start as usize;
    data[p3..p3 + 2 * MIB as usize].fill(0);
    std::fs::write(&broken, &data).unwrap();
    let cfg = write_config(d, &broken, rootfs, "");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), o]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("p3") && log.contains("superblock"), "{log}");
    assert!(!out.exists());

    // Content larger than an explicit size: exit 3, naming both sizes.
    let big = d.join("big.bin");
    std::fs::write(&big, common::bytes(3, 40 * MIB as usize)).unwrap();
    let cfg = write_config(
        d,
        &base,
        rootfs,
        "output:\n  size: 80MiB\nfiles:\n  - to: /data/big\n    url: big.bin\n",
    );
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), o]);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("output.size") && log.contains(&(80 * MIB).to_string()),
        "{log}"
    );
    // --max-size below the need.
    let cfg = write_config(
        d,
        &base,
        rootfs,
        "files:\n  - to: /data/big\n    url: big.bin\n",
    );
    let (code, log) = image_creator(&["--max-size", "50MB", cfg.to_str().unwrap(), o]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("--max-size"), "{log}");
    assert!(!out.exists());
    assert_no_partials(d);
}

#[test]
fn explicit_size_is_honoured_and_base_holes_stay_holes() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    let cfg = write_config(
        tmp.path(),
        &base,
        rootfs,
        "output:\n  size: 1GiB\nfiles:\n  - to: /data/deep/er/file.txt\n    content: deep\n",
    );
    let out = tmp.path().join("out.img");
    let (code, log) = image_creator(&[cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    let md = std::fs::metadata(&out).unwrap();
    assert_eq!(md.len(), 1 << 30);
    use std::os::unix::fs::MetadataExt;
    // A 1 GiB image of a ~70 MiB mostly-empty base: only a few MiB allocated.
    assert!(
        md.blocks() * 512 < 16 * MIB,
        "allocated {} bytes",
        md.blocks() * 512
    );
    let (_, parts) = sfdisk_json(&out);
    assert_eq!(parts[2].start + parts[2].size, 1 << 30);
    let spec = part_spec(&out, &parts[2]);
    let (code, log) = run(Command::new("e2fsck").arg("-fn").arg(&spec));
    assert_eq!(code, 0, "{log}");
    let (_, st) = run(Command::new("debugfs")
        .args(["-R", "cat /deep/er/file.txt"])
        .arg(&spec));
    assert!(st.contains("deep"));
}

#[test]
fn sigterm_mid_build_leaves_nothing() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (base, rootfs) = make_base(tmp.path());
    // A download that stops half-way until the test opens its gate: the
    // signal lands mid-build whatever the machine's speed or load.
    let gate = common::servers::Gate::new();
    let srv = common::servers::Faulty::start(vec![(
        "slow",
        common::servers::Behaviour::Gated {
            // 2 MiB before the gate: more than one 1 MiB batch
            // (`fetch::BATCH`) reaches the image while it is closed.
            body: std::sync::Arc::new(common::bytes(1, 4 << 20)),
            gate: gate.clone(),
        },
    )]);
    let cfg = write_config(
        tmp.path(),
        &base,
        rootfs,
        &format!("files:\n  - to: /data/big\n    url: {}\n", srv.url("slow")),
    );
    let out = tmp.path().join("out.img");
    let progress = tmp.path().join("progress.json");
    let mut child = Command::new(BIN)
        .arg("--progress-file")
        .arg(&progress)
        .arg(&cfg)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // SIGTERM once the download's first half is in the image (the
    // progress file says so): the signal handler is installed and the
    // build is mid-write, held there by the gate.
    let writing = common::wait_for_event(&mut child, std::time::Duration::from_secs(120), || {
        common::progress_bytes_done(&progress, "/data/big") > 0
    });
    assert!(writing, "the build never started writing /data/big");
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    gate.open();
    assert_eq!(status.code(), Some(130), "interrupted builds exit 130");
    let last = common::progress_snapshot(&progress).unwrap();
    assert_eq!(
        (last["status"].as_str(), last["error"].as_str()),
        (Some("failed"), Some("interrupted")),
        "the progress file's last word: {last}"
    );
    assert!(!out.exists(), "no output after SIGTERM");
    assert_no_partials(tmp.path());
    assert!(
        !tmp.path().join(".out.img.image-creator.lock").exists(),
        "the lock file is removed on SIGTERM"
    );
}

/// The production command line (docs/spec.md §7) works: `--cache-dir`
/// turns the download cache on (the demo downloads nothing, so it stays
/// empty) and `--show-cache` says so.
#[test]
fn production_command_line_runs_with_the_cache() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tmp.path().join("demo.img");
    let cache = tmp.path().join("cache");
    let build = tmp.path().join("build");
    let (code, log) = image_creator(&[
        "--max-size",
        "1TB",
        "--debug",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--build-dir",
        build.to_str().unwrap(),
        root.join("examples/demo.yaml").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    assert!(out.is_file() && build.is_dir(), "{log}");
    // The cache is in use (the demo has nothing to download, so it stays empty).
    assert!(cache.join("CACHEDIR.TAG").is_file(), "{log}");
    let (code, log) = image_creator(&["--show-cache", "--cache-dir", cache.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("Cache is empty."), "{log}");
}

/// Every kind of item in one build — inline, base64, local file, archive,
/// prebuilt container image, image.yaml, offspot.yaml — gives a clean
/// filesystem with each in place, and (with SOURCE_DATE_EPOCH) the same
/// bytes whatever the concurrency.
#[test]
fn every_kind_of_item_in_one_reproducible_build() {
    if !image::tools(&["e2fsck", "debugfs", "gzip", "python3"]) {
        return;
    }
    // IC_COMBINED_DIR=DIR builds in DIR (kept) instead of a temp dir, so
    // two versions of the tool can be compared byte for byte.
    let tmp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("IC_COMBINED_DIR").map(std::path::PathBuf::from);
    if let Some(k) = &kept {
        let _ = std::fs::remove_dir_all(k);
        std::fs::create_dir_all(k).unwrap();
    }
    let d = kept.as_deref().unwrap_or(tmp.path());
    let (base, rootfs) = make_base(d);
    let src = common::archives::make_tree(d);
    let tgz = d.join("app.tgz");
    common::archives::pack("gztar", &src, &tgz);
    std::fs::write(d.join("blob.bin"), common::bytes(3, 2_000_000)).unwrap();
    // A prebuilt docker-archive given by `url` is copied as is.
    std::fs::write(d.join("img.tar"), common::bytes(4, 300_000)).unwrap();
    let extra = format!(
        "files:\n  - to: /data/a/inline.txt\n    content: hello\n  \
         - to: /data/a/b64\n    via: base64\n    content: aGk=\n  \
         - to: /data/a/blob.bin\n    url: {}\n  \
         - to: /data/apps/x\n    url: {}\n    via: gztar\n\
         oci_images:\n  - ident: ghcr.io/offspot/demo:1.0\n    filesize: 300000\n    fullsize: 900000\n    url: {}\n\
         write_config: true\noffspot:\n  timezone: UTC\n",
        d.join("blob.bin").display(),
        tgz.display(),
        d.join("img.tar").display()
    );
    let cfg = write_config(d, &base, rootfs, &extra);
    let mut images = Vec::new();
    for t in ["1", "4"] {
        let out = d.join(format!("out{t}.img"));
        let progress = d.join(format!("progress{t}.json"));
        let (code, log) = image::image_creator_env(
            &[
                "-T",
                t,
                "--progress-file",
                progress.to_str().unwrap(),
                cfg.to_str().unwrap(),
                out.to_str().unwrap(),
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        assert_eq!(code, 0, "{log}");
        // The last snapshot: succeeded, every item done, bytes add up (the
        // container image's reservation was cut to its archive's size).
        let p: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&progress).unwrap()).unwrap();
        assert_eq!(p["status"], "succeeded", "{p}");
        assert_eq!(p["bytes_done"], p["bytes_total"], "{p}");
        let items = p["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["state"] == "done"), "{p}");
        assert!(
            items.iter().any(|i| i["name"]
                == "/data/images/ghcr.io_offspot_demo_1.0_linuxarm64v8.tar"
                && i["bytes_done"] == 300_000),
            "{p}"
        );
        image::fsck_p3(&out);
        images.push(std::fs::read(&out).unwrap());
    }
    assert!(images[0] == images[1], "-T 1 and -T 4 images differ");
    let out = d.join("out1.img");
    let back = d.join("back");
    assert_eq!(image::read_p3(&out, "/a/inline.txt", &back), b"hello");
    assert_eq!(image::read_p3(&out, "/a/b64", &back), b"hi");
    assert!(image::read_p3(&out, "/a/blob.bin", &back) == common::bytes(3, 2_000_000));
    assert!(
        image::read_p3(
            &out,
            "/images/ghcr.io_offspot_demo_1.0_linuxarm64v8.tar",
            &back
        ) == common::bytes(4, 300_000)
    );
    assert!(
        String::from_utf8(image::read_p3(&out, "/image.yaml", &back))
            .unwrap()
            .contains("ghcr.io/offspot/demo:1.0")
    );
    let got = common::rdump(
        &std::path::PathBuf::from(image::p3_spec(&out)),
        &d.join("dump"),
    );
    common::archives::assert_same_tree(&src, &got.join("apps").join("x"), 0o777, "gztar");
    // The base's data partition content is carried over beside it all.
    let ls = image::debugfs_p3(&out, "ls -l /");
    assert!(ls.contains("master_fs") && ls.contains("images"), "{ls}");
}
