//! The output stage (docs/spec.md §10), checked with tools nobody here
//! wrote: `bmaptool copy` onto a file of random bytes, then e2fsck,
//! fsck.fat and debugfs on what landed there; `zstd -d`, `xz -d` and
//! `sha256sum` against the raw image and `OUTPUT.json`.
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::{
    self, extract, files_config, image_creator_env, make_base, read_p3, sfdisk_json, write_config,
};
use common::{digest, have, run};

const EPOCH: (&str, &str) = ("SOURCE_DATE_EPOCH", "1700000000");

/// Build `config` into `out` with `args` before the positionals.
fn build(config: &Path, out: &Path, args: &[&str]) -> (i32, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.push(config.to_str().unwrap());
    all.push(out.to_str().unwrap());
    image_creator_env(&all, &[EPOCH])
}

/// A file of `len` bytes with data at its start and end and a hole of
/// zeros (a real hole) in between: its zeros are "relied on" on a card.
fn sparse_source(path: &Path, len: u64) -> Vec<u8> {
    let mut f = std::fs::File::create(path).unwrap();
    let head = common::bytes(7, 100_000);
    let tail = common::bytes(8, 50_000);
    f.write_all(&head).unwrap();
    f.set_len(len).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&tail, len - tail.len() as u64).unwrap();
    std::fs::read(path).unwrap()
}

/// The sha256 of `bytes`, by sha256sum.
fn sha256_of(dir: &Path, bytes: &[u8]) -> String {
    let p = dir.join("sha-input");
    std::fs::write(&p, bytes).unwrap();
    digest("sha256sum", &p)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn side(out: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", out.display()))
}

/// The `<Range>`s of a bmap file, as (first, last) blocks.
fn bmap_ranges(bmap: &Path) -> Vec<(u64, u64)> {
    let text = std::fs::read_to_string(bmap).unwrap();
    text.lines()
        .filter(|l| l.trim_start().starts_with("<Range"))
        .map(|l| {
            let span = l
                .split('>')
                .nth(1)
                .unwrap()
                .split('<')
                .next()
                .unwrap()
                .trim();
            match span.split_once('-') {
                Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
                None => (span.parse().unwrap(), span.parse().unwrap()),
            }
        })
        .collect()
}

#[test]
fn bmaptool_copy_over_random_bytes_gives_clean_filesystems() {
    if !image::tools(&[
        "bmaptool",
        "e2fsck",
        "fsck.fat",
        "debugfs",
        "sfdisk",
        "sha256sum",
    ]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let src = d.join("sparse.bin");
    let sparse = sparse_source(&src, 3 << 20);
    let cfg = files_config(
        d,
        &base,
        rootfs,
        &format!(
            "  - to: /data/sparse.bin\n    url: {}\n  - to: /data/dir/hello.txt\n    content: hello\n\
             offspot:\n  ap:\n    ssid: bmap test\n",
            src.display()
        ),
    );
    let out = d.join("out.img");
    let (code, log) = build(&cfg, &out, &["--bmap"]);
    assert_eq!(code, 0, "{log}");
    let bmap = side(&out, ".bmap");
    let img = std::fs::read(&out).unwrap();

    // The card: as large as the image, full of old (random) data.
    let card = d.join("card.img");
    std::fs::write(&card, common::bytes(99, img.len())).unwrap();
    // bmaptool checks the bmap file's checksum and every range's.
    let (code, log) = run(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(&bmap)
        .arg(&out)
        .arg(&card));
    assert_eq!(code, 0, "bmaptool copy: {log}");

    let flashed = std::fs::read(&card).unwrap();
    let ranges = bmap_ranges(&bmap);
    assert!(!ranges.is_empty());
    let mut mapped = 0;
    for (a, b) in &ranges {
        let s = (a * 4096) as usize;
        let e = (((b + 1) * 4096) as usize).min(img.len());
        assert!(flashed[s..e] == img[s..e], "mapped blocks {a}-{b} differ");
        mapped += e - s;
    }
    // Far from everything is mapped (the free space of p3 and the holes).
    assert!(
        mapped < img.len() / 2,
        "{mapped} of {} bytes mapped",
        img.len()
    );

    let (_, parts) = sfdisk_json(&card);
    let p1 = d.join("p1");
    extract(&card, &parts[0], &p1);
    let (code, log) = run(Command::new("fsck.fat").arg("-n").arg(&p1));
    assert_eq!(code, 0, "fsck.fat -n p1: {log}");
    for (i, name) in [(1, "p2"), (2, "p3")] {
        let p = d.join(name);
        extract(&card, &parts[i], &p);
        let (code, log) = run(Command::new("e2fsck").arg("-fn").arg(&p));
        assert_eq!(code, 0, "e2fsck -fn {name}: {log}");
    }
    // The file with a hole: its zeros are zeros on the card too.
    let got = read_p3(&card, "/sparse.bin", &d.join("got.bin"));
    assert!(got == sparse, "the sparse file differs after flashing");
    let got = read_p3(&card, "/dir/hello.txt", &d.join("hello.txt"));
    assert_eq!(got, b"hello");
}

#[test]
fn compressed_outputs_decompress_to_the_raw_image() {
    if !image::tools(&["zstd", "xz", "sha256sum"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let cfg = files_config(d, &base, rootfs, "  - to: /data/a.txt\n    content: a\n");
    let raw = d.join("out.img");
    let (code, log) = build(&cfg, &raw, &["--json"]);
    assert_eq!(code, 0, "{log}");
    let raw_bytes = std::fs::read(&raw).unwrap();
    let raw_sha = digest("sha256sum", &raw);
    let j = json(&side(&raw, ".json"));
    assert_eq!(j["extract_size"], raw_bytes.len() as u64);
    assert_eq!(j["extract_sha256"], raw_sha.as_str());
    assert_eq!(j["image_download_size"], raw_bytes.len() as u64);
    assert_eq!(j["image_download_sha256"], raw_sha.as_str());

    // By suffix, by --compress (any name), by output.compress (xz).
    let xz_cfg = write_config(
        d,
        &base,
        rootfs,
        "output:\n  compress: true\nfiles:\n  - to: /data/a.txt\n    content: a\n",
    );
    let cases: [(&str, &[&str], &Path, &str); 4] = [
        ("out.img.zst", &[], &cfg, "zstd"),
        ("out.img.xz", &[], &cfg, "xz"),
        ("zstd-named.img", &["--compress", "zstd"], &cfg, "zstd"),
        ("config.img", &[], &xz_cfg, "xz"),
    ];
    for (name, args, config, tool) in cases {
        let out = d.join(name);
        let build_dir = d.join(format!("build-{name}"));
        let mut all = args.to_vec();
        all.extend(["--build-dir", build_dir.to_str().unwrap()]);
        let (code, log) = build(config, &out, &all);
        assert_eq!(code, 0, "{name}: {log}");
        let (code, dec) = {
            let o = Command::new(tool).arg("-dc").arg(&out).output().unwrap();
            (o.status.code().unwrap_or(-1), o.stdout)
        };
        assert_eq!(code, 0, "{tool} -dc {name}");
        assert!(
            dec == raw_bytes,
            "{name}: {tool} -d does not give the raw image"
        );
        let j = json(&side(&out, ".json"));
        assert_eq!(j["extract_size"], raw_bytes.len() as u64, "{name}");
        assert_eq!(j["extract_sha256"], raw_sha.as_str(), "{name}");
        assert_eq!(
            j["image_download_size"],
            std::fs::metadata(&out).unwrap().len(),
            "{name}"
        );
        assert_eq!(
            j["image_download_sha256"],
            digest("sha256sum", &out).as_str(),
            "{name}"
        );
        // The raw image was temporary.
        let left: Vec<_> = std::fs::read_dir(&build_dir).unwrap().collect();
        assert!(left.is_empty(), "{name}: build dir not empty: {left:?}");
    }
    // Contradictory: exit 3 before anything is written.
    let out = d.join("bad.img.zst");
    let (code, log) = build(&cfg, &out, &["--compress", "xz"]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("--compress xz"), "{log}");
    assert!(!out.exists() && !side(&out, ".json").exists());
    let _ = sha256_of;
}

#[test]
fn a_failed_compressed_build_leaves_nothing() {
    if !image::tools(&[]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    // A local file that is shorter than its declared size fails step 4.
    let src = d.join("short.bin");
    std::fs::write(&src, b"short").unwrap();
    let cfg = files_config(
        d,
        &base,
        rootfs,
        &format!(
            "  - to: /data/x\n    url: {}\n    checksum:\n      algo: sha-256\n      value: {}\n",
            src.display(),
            "0".repeat(64)
        ),
    );
    let out = d.join("out.img.zst");
    let build_dir = d.join("b");
    std::fs::create_dir(&build_dir).unwrap();
    let (code, log) = build(
        &cfg,
        &out,
        &["--bmap", "--build-dir", build_dir.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("[4/7]"), "failed in step 4: {log}");
    for p in [out.clone(), side(&out, ".json"), side(&out, ".bmap")] {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    let left: Vec<_> = std::fs::read_dir(&build_dir).unwrap().collect();
    assert!(left.is_empty(), "build dir not empty: {left:?}");
    image::assert_no_partials(d);
    let _ = have;
}

/// `--no-hash`: no OUTPUT.json and no hashing of the image, so a 1 TB
/// image with little content is built in seconds and stays sparse; side
/// files an earlier image left (`.bmap` without `--bmap`, `.json` with
/// `--no-hash`) are removed, not left describing an image that is gone.
/// Not with `portable`: its fallbacks write a 1 TB image's zeros (no
/// holes), what that feature gives up (as tests/scale.rs).
#[cfg(not(feature = "portable"))]
#[test]
fn no_hash_builds_a_terabyte_image_sparse_and_stale_side_files_go() {
    if !image::tools(&["e2fsck"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let files = "files:\n  - to: /data/hello.txt\n    content: hello\n";
    let out = d.join("out.img");
    let small = write_config(d, &base, rootfs, files);
    let (code, log) = build(&small, &out, &["--bmap", "--json"]);
    assert_eq!(code, 0, "{log}");
    assert!(side(&out, ".json").exists() && side(&out, ".bmap").exists());

    // -X without --bmap: the old image's bmap goes.
    let (code, log) = build(&small, &out, &["-X", "--json"]);
    assert_eq!(code, 0, "{log}");
    assert!(side(&out, ".json").exists(), "{log}");
    assert!(!side(&out, ".bmap").exists(), "a stale bmap was left");

    // -X --no-hash, 1 TB: no json either.
    let big = write_config(d, &base, rootfs, &format!("output:\n  size: 1TB\n{files}"));
    let (code, log) = build(&big, &out, &["-X", "--no-hash"]);
    assert_eq!(code, 0, "{log}");
    assert!(
        !side(&out, ".json").exists(),
        "a stale OUTPUT.json was left"
    );
    assert!(!side(&out, ".bmap").exists());
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(&out).unwrap();
    assert!(md.len() >= 1_000_000_000_000, "{} bytes", md.len());
    let allocated = md.blocks() * 512;
    assert!(
        allocated < 2 << 30,
        "not sparse: {allocated} bytes allocated"
    );
    let (_, parts) = sfdisk_json(&out);
    let p3 = &parts[2];
    assert!(p3.size > 990_000_000_000, "p3 is {} bytes", p3.size);
    let fs = format!("{}?offset={}", out.display(), p3.start);
    let (code, log) = run(Command::new("e2fsck").args(["-fn", &fs]));
    assert_eq!(code, 0, "e2fsck -fn {fs}: {log}");
    let (code, log) = run(Command::new("debugfs").args(["-R", "cat /hello.txt", &fs]));
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("hello"), "{log}");
}

/// Step 7 reads the image only for an output that needs it (docs/spec.md
/// §10): a plain raw build reads nothing back (no `output_pass` in the
/// progress file) and writes no OUTPUT.json (a stale one beside an absent
/// OUTPUT goes); `--bmap` alone reads it for its range hashes but writes
/// no json; `--torrent --no-hash` a torrent and no json; `--json` the
/// json, whose sha256 is sha256sum's.
#[test]
fn the_image_is_read_only_for_an_output_that_needs_it() {
    if !image::tools(&["sha256sum"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let cfg = files_config(d, &base, rootfs, "  - to: /data/a.txt\n    content: a\n");
    let progress = d.join("p.json");
    let pf = progress.to_str().unwrap();
    let out = d.join("out.img");
    let pass_of = || json(&progress)["output_pass"].clone();
    std::fs::write(side(&out, ".json"), "stale").unwrap();
    let (code, log) = build(&cfg, &out, &["--progress-file", pf]);
    assert_eq!(code, 0, "{log}");
    assert!(pass_of().is_null(), "a plain raw build read the image");
    assert!(!side(&out, ".json").exists(), "a json without --json");
    let len = std::fs::metadata(&out).unwrap().len();

    let (code, log) = build(&cfg, &out, &["-X", "--bmap", "--progress-file", pf]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(pass_of()["bytes_read"], len, "--bmap reads the image");
    assert!(side(&out, ".bmap").exists() && !side(&out, ".json").exists());

    let (code, log) = build(&cfg, &out, &["-X", "--torrent", "--no-hash"]);
    assert_eq!(code, 0, "{log}");
    assert!(side(&out, ".torrent").exists() && !side(&out, ".json").exists());
    assert!(!side(&out, ".bmap").exists(), "a stale bmap was left");

    let (code, log) = build(&cfg, &out, &["-X", "--json", "--progress-file", pf]);
    assert_eq!(code, 0, "{log}");
    assert_eq!(pass_of()["bytes_read"], len);
    let j = json(&side(&out, ".json"));
    assert_eq!(j["extract_sha256"], digest("sha256sum", &out).as_str());
    assert!(!side(&out, ".torrent").exists(), "a stale torrent was left");
}
