//! Building straight onto a block device (docs/spec.md §10), on loop
//! devices filled with random bytes first: e2fsck, fsck.fat and debugfs on
//! the device afterwards; refusals leave the device untouched. Root and
//! loop devices are a machine capability: without them these SKIP loudly
//! (even under CI, as the kernel-mount test does).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::{self, image_creator_env, make_base, read_p3, sfdisk_json, write_config};
use common::{digest, have, is_root, run, skip_machine, Capability};

const MIB: u64 = 1 << 20;

/// A loop device over a file, detached on drop (also when the test fails).
struct Loop {
    dev: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// A loop device over `dir/name`, `size` bytes of random data; `None`
/// (after a loud SKIP) when this machine can't.
fn random_loop(dir: &Path, name: &str, size: u64) -> Option<Loop> {
    if !is_root() {
        skip_machine(Capability::Root, "loop devices need root");
        return None;
    }
    if !have("losetup") {
        return None;
    }
    let file = dir.join(name);
    std::fs::write(&file, common::bytes(size ^ 0x5eed, size as usize)).unwrap();
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&file)
        .output()
        .unwrap();
    if !out.status.success() {
        skip_machine(
            Capability::LoopDevices,
            &format!(
                "no loop device here: losetup: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return None;
    }
    Some(Loop {
        dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
    })
}

fn build(config: &Path, out: &Path, args: &[&str], build_dir: &Path) -> (i32, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--build-dir", build_dir.to_str().unwrap()]);
    all.push(config.to_str().unwrap());
    all.push(out.to_str().unwrap());
    image_creator_env(&all, &[("SOURCE_DATE_EPOCH", "1700000000")])
}

fn config(d: &Path) -> PathBuf {
    let (base, rootfs) = make_base(d);
    let sparse = d.join("sparse.bin");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::create(&sparse).unwrap();
        f.write_all_at(&common::bytes(3, 70_000), 0).unwrap();
        f.set_len(2 * MIB).unwrap();
        f.write_all_at(b"end", 2 * MIB - 3).unwrap();
    }
    write_config(
        d,
        &base,
        rootfs,
        &format!(
            "files:\n  - to: /data/sparse.bin\n    url: {}\n  - to: /data/a/b.txt\n    content: on the card\n\
             offspot:\n  ap:\n    ssid: on a device\n",
            sparse.display()
        ),
    )
}

/// p1 passes fsck.fat, p2 and p3 e2fsck, the files read back.
fn check_card(d: &Path, dev: &Path) {
    let (_, parts) = sfdisk_json(dev);
    let card = d.join("card-copy.img");
    std::fs::write(&card, std::fs::read(dev).unwrap()).unwrap();
    let p1 = d.join("p1.img");
    image::extract(&card, &parts[0], &p1);
    let (code, log) = run(Command::new("fsck.fat").arg("-n").arg(&p1));
    assert_eq!(code, 0, "fsck.fat: {log}");
    for i in [1, 2] {
        let spec = image::part_spec(&card, &parts[i]);
        let (code, log) = run(Command::new("e2fsck").arg("-fn").arg(&spec));
        assert_eq!(code, 0, "e2fsck p{}: {log}", i + 1);
    }
    let got = read_p3(&card, "/sparse.bin", &d.join("got"));
    let want = std::fs::read(d.join("sparse.bin")).unwrap();
    assert!(got == want, "sparse.bin differs on the device");
    assert_eq!(read_p3(&card, "/a/b.txt", &d.join("b")), b"on the card");
    std::fs::remove_file(&card).unwrap();
}

#[test]
fn a_build_onto_a_loop_device_full_of_old_data_is_clean() {
    if !image::tools(&["e2fsck", "fsck.fat", "debugfs", "sfdisk"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let Some(lo) = random_loop(d, "card", 120 * MIB) else {
        return;
    };
    let cfg = config(d);
    let b = d.join("build");
    let (code, log) = build(&cfg, &lo.dev, &[], &b);
    assert_eq!(code, 0, "{log}");
    check_card(d, &lo.dev);
    // Every block the image needs (its bmap, from a build of the same
    // config into a file) is on the device, byte for byte.
    let reference = d.join("ref.img");
    let (code, log) = build(&cfg, &reference, &["--bmap"], &b);
    assert_eq!(code, 0, "{log}");
    let want = std::fs::read(&reference).unwrap();
    let got = std::fs::read(&lo.dev).unwrap();
    let bmap = std::fs::read_to_string(d.join("ref.img.bmap")).unwrap();
    let mut ranges = 0;
    for l in bmap
        .lines()
        .filter(|l| l.trim_start().starts_with("<Range"))
    {
        let span = l
            .split('>')
            .nth(1)
            .unwrap()
            .split('<')
            .next()
            .unwrap()
            .trim();
        let (a, z) = span.split_once('-').unwrap_or((span, span));
        let (a, z): (usize, usize) = (a.parse().unwrap(), z.parse().unwrap());
        let (s, e) = (a * 4096, ((z + 1) * 4096).min(want.len()));
        assert!(
            got[s..e] == want[s..e],
            "blocks {a}-{z} differ from the image"
        );
        ranges += 1;
    }
    assert!(ranges > 0);
    let (code, log) = image_creator_env(
        &[
            "verify",
            "--bmap",
            d.join("ref.img.bmap").to_str().unwrap(),
            lo.dev.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "verify --bmap on the device: {log}");
    // The image kept its planned size: p3 ends well before the device.
    let (_, parts) = sfdisk_json(&lo.dev);
    assert!(parts[2].start + parts[2].size < 100 * MIB);
    // Nothing left in the build dir (the raw image was temporary).
    let left: Vec<_> = std::fs::read_dir(&b).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");

    // verify reads the device back against the config.
    let (code, log) = image_creator_env(
        &[
            "verify",
            "--config",
            cfg.to_str().unwrap(),
            lo.dev.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "verify: {log}");

    // --grow: p3 fills the device.
    let (code, log) = build(&cfg, &lo.dev, &["--grow"], &b);
    assert_eq!(code, 0, "{log}");
    let (_, parts) = sfdisk_json(&lo.dev);
    assert_eq!(parts[2].start + parts[2].size, 120 * MIB);
    check_card(d, &lo.dev);
}

#[test]
fn a_mounted_or_too_small_device_is_refused_and_untouched() {
    if !image::tools(&["mkfs.ext4", "mount", "umount", "sha256sum"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = config(d);
    let b = d.join("build");

    // Too small.
    let Some(small) = random_loop(d, "small", 16 * MIB) else {
        return;
    };
    let before = digest("sha256sum", &small.dev);
    let (code, log) = build(&cfg, &small.dev, &[], &b);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("too small"), "{log}");
    assert_eq!(
        digest("sha256sum", &small.dev),
        before,
        "the device was written"
    );

    // Mounted (read-only, so the kernel writes nothing either).
    let Some(lo) = random_loop(d, "mounted", 120 * MIB) else {
        return;
    };
    let (code, log) = run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(&lo.dev));
    assert_eq!(code, 0, "{log}");
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (code, log) = run(Command::new("mount")
        .args(["-o", "ro"])
        .arg(&lo.dev)
        .arg(&mnt));
    if code != 0 {
        skip_machine(
            Capability::Mount,
            &format!("mounting is not permitted here: {log}"),
        );
        return;
    }
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let guard = Umount(mnt.clone());
    let before = digest("sha256sum", &lo.dev);
    let (code, log) = build(&cfg, &lo.dev, &[], &b);
    assert_eq!(code, 3, "{log}");
    assert!(
        log.contains("mounted on") && log.contains(mnt.to_str().unwrap()),
        "{log}"
    );
    assert_eq!(
        digest("sha256sum", &lo.dev),
        before,
        "the device was written"
    );
    drop(guard);

    // Options for image files are refused for a device. (Unmounting may
    // change what the device reads: hash it again.)
    let before = digest("sha256sum", &lo.dev);
    for flags in [
        &["--bmap"][..],
        &["--torrent"],
        &["--torrent", "--webseed", "http://m.example/o.img"],
        &["--json"],
    ] {
        let (code, log) = build(&cfg, &lo.dev, flags, &b);
        assert_eq!(code, 3, "{flags:?}: {log}");
        assert!(log.contains("are for image files"), "{flags:?}: {log}");
    }
    // --publish too, before anything is asked of the store (nothing
    // listens at this endpoint) or written.
    let dead = format!("http://127.0.0.1:{}", common::moto::free_port());
    let (code, log) = image_creator_env(
        &[
            "--publish",
            "s3://bucket/p/",
            "--build-dir",
            b.to_str().unwrap(),
            cfg.to_str().unwrap(),
            lo.dev.to_str().unwrap(),
        ],
        &[("AWS_ENDPOINT_URL", &dead), ("AWS_ALLOW_HTTP", "true")],
    );
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("is a block device: --publish"), "{log}");
    assert_eq!(
        digest("sha256sum", &lo.dev),
        before,
        "the device was written"
    );
}
