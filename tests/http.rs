//! Downloads: from a real nginx (sizes, checksums of every algorithm,
//! `kind: url`, remote bases and configs) and from an in-process server for
//! faults (drops resumed with Range, 503 + Retry-After, endless bodies,
//! short bodies, stalls, 404, wrong checksums).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::image::{self, assert_nothing_left, fsck_p3, ic, make_base, read_p3, BIN};
use common::servers::{Behaviour, Faulty, Nginx};
use common::{digest, run, CHECKSUM_TOOLS};

const MIB: usize = 1 << 20;

fn tools() -> bool {
    image::tools(&["e2fsck", "debugfs", "xz", "sha256sum", "md5sum", "python3"])
}

#[test]
fn nginx_downloads_of_many_sizes_with_every_checksum() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(ng) = Nginx::start(tmp.path()) else {
        return;
    };
    let (base, rootfs) = make_base(tmp.path());
    // Sizes 0 to 120 MiB; 120 MiB from a repeated random block.
    let block = common::bytes(9, MIB);
    let sizes = [0usize, 1, 4095, 4097, 3 * MIB + 5, 120 * MIB, 65_537];
    let algos = CHECKSUM_TOOLS;
    let mut files = String::from("files:\n");
    for (i, &size) in sizes.iter().enumerate() {
        let data: Vec<u8> = block.iter().cycle().take(size).copied().collect();
        let p = ng.root.join(format!("f{i}.bin"));
        std::fs::write(&p, &data).unwrap();
        let (algo, tool) = algos[i % algos.len()];
        let d = digest(tool, &p);
        if i % 2 == 0 {
            files.push_str(&format!("  - to: /data/dl/f{i}.bin\n    url: {}\n    checksum: {{algo: {algo}, value: {d}}}\n", ng.url(&format!("f{i}.bin"))));
        } else {
            // kind: url, MirrorBrain / md5sum format "digest  name".
            std::fs::write(
                ng.root.join(format!("f{i}.sum")),
                format!("{d}  f{i}.bin\n"),
            )
            .unwrap();
            files.push_str(&format!("  - to: /data/dl/f{i}.bin\n    url: {}\n    size: {size}\n    checksum: {{algo: {algo}, kind: url, value: {}}}\n", ng.url(&format!("f{i}.bin")), ng.url(&format!("f{i}.sum"))));
        }
    }
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base: {{source: {}, rootfs_size: {rootfs}}}\n{files}",
            base.display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out.img");
    let (code, log) = ic(&["-T", "3", cfg.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    fsck_p3(&out);
    for (i, _) in sizes.iter().enumerate() {
        let got = read_p3(&out, &format!("/dl/f{i}.bin"), &tmp.path().join("back"));
        assert!(
            got == std::fs::read(ng.root.join(format!("f{i}.bin"))).unwrap(),
            "f{i} differs"
        );
    }
}

#[test]
fn remote_base_plain_xz_and_versioned_and_remote_config() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(ng) = Nginx::start(tmp.path()) else {
        return;
    };
    let (base, rootfs) = make_base(tmp.path());
    std::fs::copy(&base, ng.root.join("offspot-base-arm64-9.9.9.img")).unwrap();
    let md5 = digest("md5sum", &base);
    std::fs::write(
        ng.root.join("offspot-base-arm64-9.9.9.img.md5"),
        format!("{md5}  offspot-base-arm64-9.9.9.img\n"),
    )
    .unwrap();
    let xz = Command::new("xz")
        .args(["-T1", "-c"])
        .arg(&base)
        .output()
        .unwrap();
    std::fs::write(ng.root.join("base.img.xz"), &xz.stdout).unwrap();

    for (i, source) in [
        ng.url("offspot-base-arm64-9.9.9.img"),
        ng.url("base.img.xz"),
        "9.9.9".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let cfg = ng.root.join(format!("c{i}.yaml"));
        std::fs::write(&cfg, format!("base: {{source: {source}, rootfs_size: {rootfs}}}\nfiles:\n  - to: /data/x.txt\n    content: remote {i}\n")).unwrap();
        let out = tmp.path().join(format!("out{i}.img"));
        // The config itself comes over HTTP too.
        let (code, log) = ic(&[
            "--base-url",
            &ng.url(""),
            &ng.url(&format!("c{i}.yaml")),
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "{source}: {log}");
        fsck_p3(&out);
        assert_eq!(
            read_p3(&out, "/x.txt", &tmp.path().join("x")),
            format!("remote {i}").into_bytes()
        );
    }

    // A versioned base whose md5 does not match is refused.
    std::fs::write(
        ng.root.join("offspot-base-arm64-9.9.9.img.md5"),
        "0123456789abcdef0123456789abcdef  x\n",
    )
    .unwrap();
    let cfg = tmp.path().join("v.yaml");
    std::fs::write(
        &cfg,
        format!("base: {{source: 9.9.9, rootfs_size: {rootfs}}}\n"),
    )
    .unwrap();
    let out = tmp.path().join("bad.img");
    let (code, log) = ic(&[
        "--base-url",
        &ng.url(""),
        cfg.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("0123456789abcdef0123456789abcdef") && log.contains(&md5),
        "{log}"
    );
    assert!(!out.exists());
}

fn faulty_build(dir: &Path, url: &str, extra: &str, args: &[&str]) -> (i32, String, PathBuf) {
    let (base, rootfs) = make_base(dir);
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, format!("base: {{source: {}, rootfs_size: {rootfs}}}\nfiles:\n  - to: /data/f\n    url: {url}\n{extra}", base.display())).unwrap();
    let out = dir.join("out.img");
    let mut all: Vec<&str> = args.to_vec();
    all.push(cfg.to_str().unwrap());
    all.push(out.to_str().unwrap());
    let (code, log) = ic(&all);
    (code, log, out)
}

#[test]
fn dropped_connection_is_resumed_with_range() {
    if !tools() {
        return;
    }
    let body = Arc::new(common::bytes(10, 5 * MIB));
    let srv = Faulty::start(vec![(
        "blob",
        Behaviour::DropThenResume {
            body: body.clone(),
            fail_first: 1,
        },
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let (code, log, out) = faulty_build(tmp.path(), &srv.url("blob"), "", &[]);
    assert_eq!(code, 0, "{log}");
    assert!(
        srv.requests()
            .iter()
            .any(|r| r.starts_with("GET blob range=Some(")),
        "resumed with Range: {:?}",
        srv.requests()
    );
    assert!(read_p3(&out, "/f", &tmp.path().join("f")) == *body);
}

#[test]
fn service_unavailable_then_success() {
    if !tools() {
        return;
    }
    let body = Arc::new(common::bytes(11, 100_000));
    let srv = Faulty::start(vec![(
        "b",
        Behaviour::Unavailable {
            body: body.clone(),
            times: 2,
        },
    )]);
    let tmp = tempfile::tempdir().unwrap();
    let (code, log, out) = faulty_build(tmp.path(), &srv.url("b"), "    size: 100000\n", &[]);
    assert_eq!(code, 0, "{log}");
    assert!(
        srv.requests()
            .iter()
            .filter(|r| r.starts_with("GET b"))
            .count()
            >= 3
    );
    assert!(read_p3(&out, "/f", &tmp.path().join("f")) == *body);
}

#[test]
fn endless_body_stops_at_the_declared_size() {
    if !tools() {
        return;
    }
    let srv = Faulty::start(vec![("inf", Behaviour::Endless)]);
    let tmp = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let (code, log, out) = faulty_build(tmp.path(), &srv.url("inf"), "    size: 1MiB\n", &[]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("more than the expected 1048576 bytes") && log.contains("/inf"),
        "{log}"
    );
    assert!(start.elapsed().as_secs() < 60, "must fail quickly");
    assert_nothing_left(tmp.path(), &out);
}

#[test]
fn short_body_is_retried_then_an_error() {
    if !tools() {
        return;
    }
    let srv = Faulty::start(vec![("short", Behaviour::Short { len: 10_000 })]);
    let tmp = tempfile::tempdir().unwrap();
    let (code, log, out) = faulty_build(tmp.path(), &srv.url("short"), "", &["--attempts", "2"]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("/short") && (log.contains("ended at") || log.contains("5000 of 10000")),
        "{log}"
    );
    assert!(
        srv.requests()
            .iter()
            .filter(|r| r.starts_with("GET short"))
            .count()
            >= 2,
        "{:?}",
        srv.requests()
    );
    assert_nothing_left(tmp.path(), &out);
}

#[test]
fn stalled_server_times_out() {
    if !tools() {
        return;
    }
    let srv = Faulty::start(vec![("stall", Behaviour::Stall { len: 10_000 })]);
    let tmp = tempfile::tempdir().unwrap();
    let start = std::time::Instant::now();
    let (code, log, out) = faulty_build(
        tmp.path(),
        &srv.url("stall"),
        "",
        &["--attempts", "1", "--idle-timeout", "1"],
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("/stall") && log.contains("no data"), "{log}");
    assert!(start.elapsed().as_secs() < 20);
    assert_nothing_left(tmp.path(), &out);
}

#[test]
fn not_found_is_exit_4_and_check_lists_every_unreachable_source() {
    if !tools() {
        return;
    }
    let srv = Faulty::start(vec![("ok", Behaviour::Ok(Arc::new(b"fine".to_vec())))]);
    let tmp = tempfile::tempdir().unwrap();
    let (code, log, out) = faulty_build(tmp.path(), &srv.url("missing"), "", &[]);
    assert_eq!(code, 4, "{log}");
    assert!(log.contains("/missing") && log.contains("404"), "{log}");
    assert_nothing_left(tmp.path(), &out);
    let extra = format!(
        "  - to: /data/g\n    url: {}\n  - to: /data/h\n    url: {}\n",
        srv.url("gone"),
        srv.url("ok")
    );
    let tmp = tempfile::tempdir().unwrap();
    let (code, log, _) = faulty_build(tmp.path(), &srv.url("missing"), &extra, &["--check"]);
    assert_eq!(code, 4, "{log}");
    assert!(
        log.contains("/missing") && log.contains("/gone") && !log.contains("/ok:"),
        "{log}"
    );
}

#[test]
fn wrong_checksum_fails_naming_url_and_digests() {
    if !tools() {
        return;
    }
    let srv = Faulty::start(vec![("b", Behaviour::Ok(Arc::new(b"abc".to_vec())))]);
    let tmp = tempfile::tempdir().unwrap();
    let (code, log, out) = faulty_build(
        tmp.path(),
        &srv.url("b"),
        "    checksum: {algo: sha-1, value: 0000000000000000000000000000000000000000}\n",
        &[],
    );
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("/b")
            && log.contains("sha-1")
            && log.contains("a9993e364706816aba3e25717850c26c9cd0d89d"),
        "{log}"
    );
    assert_nothing_left(tmp.path(), &out);
}

#[test]
fn same_config_gives_identical_images_whatever_the_concurrency() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let Some(ng) = Nginx::start(tmp.path()) else {
        return;
    };
    let (base, rootfs) = make_base(tmp.path());
    // Sizes chosen so that downloads finish in a different order than
    // the config lists them.
    let mut files = String::from("files:\n");
    for (i, size) in [9 * MIB, 1, 3 * MIB + 7, 0, 200_000].iter().enumerate() {
        std::fs::write(
            ng.root.join(format!("r{i}")),
            common::bytes(i as u64, *size),
        )
        .unwrap();
        files.push_str(&format!(
            "  - to: /data/r/{i}.bin\n    url: {}\n",
            ng.url(&format!("r{i}"))
        ));
    }
    let cfg = tmp.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!(
            "base: {{source: {}, rootfs_size: {rootfs}}}\n{files}",
            base.display()
        ),
    )
    .unwrap();
    let mut images = Vec::new();
    for t in ["1", "5"] {
        let out = tmp.path().join(format!("out{t}.img"));
        let (code, log) = run(Command::new(BIN)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args(["-T", t, cfg.to_str().unwrap(), out.to_str().unwrap()]));
        assert_eq!(code, 0, "{log}");
        fsck_p3(&out);
        images.push(std::fs::read(&out).unwrap());
    }
    assert!(images[0] == images[1], "-T 1 and -T 5 images differ");
}
