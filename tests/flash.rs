//! `image-creator flash SOURCE DEVICE...` (docs/spec.md §14) on loop
//! devices filled with random bytes: fsck.fat, e2fsck, the raw image and
//! `verify --bmap` on every card afterwards; a card on a small tmpfs that
//! fails midway while the others are written; refusals (mounted, too
//! small, a zram disk whose sysfs `removable` is 0) that leave every
//! device's first MiB as it was; a SOURCE served by nginx. Root, loop
//! devices and mounting are machine capabilities: without them these
//! SKIP loudly (and fail under CI when the machine has them after all).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::image::{self, image_creator_env, make_base, sfdisk_json, write_config};
use common::servers::Nginx;
use common::{have, is_root, run, skip_machine, Capability};

const MIB: u64 = 1 << 20;
/// Each card: 160 MiB (the image is about 110 MiB).
const CARD: u64 = 160 * MIB;

/// A loop device, detached on drop (also when the test fails).
struct Loop {
    dev: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Whether this machine can make loop devices (a loud SKIP otherwise).
fn can_loop() -> bool {
    if !is_root() {
        skip_machine(Capability::Root, "loop devices need root");
        return false;
    }
    have("losetup")
}

/// A loop device over `file`; `None` after a loud SKIP when there is none.
fn loop_over(file: &Path) -> Option<Loop> {
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(file)
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

/// A loop device over `dir/name`: `size` bytes of random data.
fn random_loop(dir: &Path, name: &str, size: u64) -> Option<Loop> {
    let file = dir.join(name);
    let seed = name.bytes().map(u64::from).sum::<u64>() ^ size;
    std::fs::write(&file, common::bytes(seed, size as usize)).unwrap();
    loop_over(&file)
}

fn first_mib(dev: &Path) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; MIB as usize];
    std::fs::File::open(dev)
        .unwrap()
        .read_exact(&mut b)
        .unwrap();
    b
}

/// `image.img.zst` and its bmap, built by our binary from a config with
/// 40 MiB of random content; the raw image decoded.
fn source(d: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
    let (base, rootfs) = make_base(d);
    let blob = d.join("blob.bin");
    std::fs::write(&blob, common::bytes(77, 40 << 20)).unwrap();
    let cfg = write_config(
        d,
        &base,
        rootfs,
        &format!(
            "files:\n  - to: /data/blob.bin\n    url: {}\n  - to: /data/a/b.txt\n    content: on every card\n\
             offspot:\n  ap:\n    ssid: many cards\n",
            blob.display()
        ),
    );
    let img = d.join("image.img.zst");
    let (code, log) = image_creator_env(
        &["--bmap", cfg.to_str().unwrap(), img.to_str().unwrap()],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    );
    assert_eq!(code, 0, "{log}");
    let raw = zstd::decode_all(std::fs::File::open(&img).unwrap()).unwrap();
    (img.clone(), d.join("image.img.zst.bmap"), raw)
}

fn flash(args: &[&str]) -> (i32, String) {
    let mut all = vec!["flash"];
    all.extend_from_slice(args);
    image_creator_env(&all, &[])
}

fn devs(loops: &[&Loop]) -> Vec<String> {
    loops.iter().map(|l| l.dev.display().to_string()).collect()
}

/// The bmap's ranges in bytes.
fn bmap_ranges(bmap: &Path, len: usize) -> Vec<(usize, usize)> {
    let text = std::fs::read_to_string(bmap).unwrap();
    let ranges: Vec<_> = text
        .lines()
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
            let (a, z) = span.split_once('-').unwrap_or((span, span));
            let (a, z): (usize, usize) = (a.parse().unwrap(), z.parse().unwrap());
            (a * 4096, ((z + 1) * 4096).min(len))
        })
        .collect();
    assert!(!ranges.is_empty());
    ranges
}

/// The card holds the image: fsck.fat on p1, e2fsck on p2 and p3 (on a
/// copy of the card: the oracles open files), every mapped range equal
/// to the raw image, and `verify --bmap` passes on the device.
fn check_card(d: &Path, dev: &Path, raw: &[u8], bmap: &Path) {
    let got = std::fs::read(dev).unwrap();
    for (s, e) in bmap_ranges(bmap, raw.len()) {
        assert!(
            got[s..e] == raw[s..e],
            "{}: bytes {s}..{e} differ from the image",
            dev.display()
        );
    }
    let card = d.join("card-copy.img");
    std::fs::write(&card, &got).unwrap();
    drop(got);
    let (_, parts) = sfdisk_json(&card);
    assert_eq!(parts.len(), 3, "{}", dev.display());
    let p1 = d.join("p1.img");
    image::extract(&card, &parts[0], &p1);
    let (code, log) = run(Command::new("fsck.fat").arg("-n").arg(&p1));
    assert_eq!(code, 0, "{}: fsck.fat -n p1: {log}", dev.display());
    for i in [1, 2] {
        let spec = image::part_spec(&card, &parts[i]);
        let (code, log) = run(Command::new("e2fsck").arg("-fn").arg(&spec));
        assert_eq!(code, 0, "{}: e2fsck -fn p{}: {log}", dev.display(), i + 1);
    }
    std::fs::remove_file(&card).unwrap();
    std::fs::remove_file(&p1).unwrap();
    let (code, log) = image_creator_env(
        &[
            "verify",
            "--bmap",
            bmap.to_str().unwrap(),
            dev.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, 0, "verify --bmap {}: {log}", dev.display());
}

fn tools() -> bool {
    image::tools(&["e2fsck", "fsck.fat", "sfdisk"]) && can_loop()
}

#[test]
fn four_cards_full_of_old_data_get_the_image_and_are_verified() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (img, bmap, raw) = source(d);
    let mut loops = Vec::new();
    for i in 0..4 {
        let Some(l) = random_loop(d, &format!("card{i}"), CARD) else {
            return;
        };
        loops.push(l);
    }
    let progress = d.join("progress.json");
    let mut args = vec![
        img.to_str().unwrap().to_string(),
        "--progress-file".into(),
        progress.display().to_string(),
    ];
    args.extend(devs(&loops.iter().collect::<Vec<_>>()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The bmap is found beside the source (image.img.zst.bmap).
    let (code, log) = flash(&args);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("4 of 4 device(s) written and verified"),
        "{log}"
    );
    assert!(log.contains("image.img.zst.bmap"), "{log}");
    for l in &loops {
        check_card(d, &l.dev, &raw, &bmap);
    }
    // The progress file: one item per device, written and read back.
    let snap = common::progress_snapshot(&progress).unwrap();
    assert_eq!(snap["status"], "succeeded", "{snap}");
    let items = snap["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{snap}");
    for (it, l) in items.iter().zip(&loops) {
        assert_eq!(it["name"], l.dev.display().to_string());
        assert_eq!(it["state"], "done", "{it}");
        assert_eq!(it["digest"], "verified", "{it}");
        let done = it["bytes_done"].as_u64().unwrap();
        assert!(done > 40 << 20, "{it}");
        assert_eq!(it["bytes_to_verify"].as_u64(), Some(done), "{it}");
        assert_eq!(it["bytes_verified"].as_u64(), Some(done), "{it}");
    }
    assert_eq!(
        snap["output_pass"]["bytes_read"].as_u64(),
        Some(raw.len() as u64)
    );
}

#[test]
fn a_card_that_fails_midway_is_dropped_and_the_others_are_verified() {
    if !tools() || !have("mount") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (img, bmap, raw) = source(d);
    // A card whose backing file lives on a 16 MiB tmpfs: the image maps
    // more than 40 MiB, so its writes fail midway (ENOSPC → EIO).
    let small = d.join("small-tmpfs");
    std::fs::create_dir(&small).unwrap();
    let (code, out) = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&small));
    if code != 0 {
        skip_machine(Capability::Mount, &format!("mount -t tmpfs: {out}"));
        return;
    }
    let _mounted = Mounted(small.clone());
    let backing = small.join("card");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(CARD)
        .unwrap();
    let Some(failing) = loop_over(&backing) else {
        return;
    };
    let mut good = Vec::new();
    for i in 0..3 {
        let Some(l) = random_loop(d, &format!("good{i}"), CARD) else {
            return;
        };
        good.push(l);
    }
    let mut args = vec![img.display().to_string()];
    args.extend(devs(&[&good[0], &failing, &good[1], &good[2]]));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, log) = flash(&args);
    assert_eq!(code, 1, "{log}");
    let failed_line = log
        .lines()
        .find(|l| l.starts_with(&format!("{}: ", failing.dev.display())))
        .unwrap_or_else(|| panic!("no summary line for the failing card: {log}"));
    assert!(failed_line.contains("FAILED writing"), "{log}");
    assert!(
        log.contains("3 of 4 device(s) written and verified"),
        "{log}"
    );
    for l in &good {
        let line = log
            .lines()
            .find(|x| x.starts_with(&format!("{}: ", l.dev.display())))
            .unwrap();
        assert!(line.contains(", verified "), "{line}");
        check_card(d, &l.dev, &raw, &bmap);
    }
    // The failed card has no partition table (zeroed first, never written).
    assert!(first_mib(&failing.dev)[..512].iter().all(|&b| b == 0));
}

/// A zram disk (sysfs `removable` 0), reset on drop.
struct Zram(PathBuf);

impl Drop for Zram {
    fn drop(&mut self) {
        let _ = Command::new("zramctl").arg("--reset").arg(&self.0).status();
    }
}

fn zram() -> Option<Zram> {
    if !have("zramctl") {
        return None;
    }
    // Loads the module where it isn't (no modprobe here is fine: it may
    // be loaded or built in).
    let _ = Command::new("modprobe").arg("zram").output();
    let out = Command::new("zramctl")
        .args(["--find", "--size", "256M"])
        .output()
        .unwrap();
    if !out.status.success() {
        skip_machine(
            Capability::Zram,
            &format!(
                "no zram device: zramctl: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        );
        return None;
    }
    let z = Zram(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let name = z.0.file_name().unwrap().to_string_lossy().into_owned();
    let removable = std::fs::read_to_string(format!("/sys/block/{name}/removable")).unwrap();
    assert_eq!(removable.trim(), "0", "{} is removable", z.0.display());
    Some(z)
}

#[test]
fn a_mounted_a_too_small_or_a_fixed_device_refuses_the_run_before_any_write() {
    if !tools() || !image::tools(&["mkfs.ext4", "mount"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (img, _, _) = source(d);
    let (Some(a), Some(b), Some(small), Some(mounted)) = (
        random_loop(d, "a", CARD),
        random_loop(d, "b", CARD),
        random_loop(d, "small", 32 * MIB),
        random_loop(d, "mounted", CARD),
    ) else {
        return;
    };
    let (code, log) = run(Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&mounted.dev));
    assert_eq!(code, 0, "{log}");
    let mnt = d.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let (code, log) = run(Command::new("mount")
        .args(["-o", "ro"])
        .arg(&mounted.dev)
        .arg(&mnt));
    if code != 0 {
        skip_machine(Capability::Mount, &format!("mount: {log}"));
        return;
    }
    let _guard = Mounted(mnt.clone());
    let zram = zram();
    let mut cases: Vec<(&Path, &str)> =
        vec![(&mounted.dev, "mounted on"), (&small.dev, "too small")];
    if let Some(z) = &zram {
        cases.push((&z.0, "not a removable disk (use --force"));
    }
    for (bad, why) in cases {
        let all = [&a.dev, bad, &b.dev];
        let before: Vec<Vec<u8>> = all.iter().map(|p| first_mib(p)).collect();
        let mut args = vec![img.display().to_string()];
        args.extend(all.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, log) = flash(&args);
        assert_eq!(code, 3, "{}: {log}", bad.display());
        assert!(
            log.contains(&format!("{}: ", bad.display())) && log.contains(why),
            "{}: {log}",
            bad.display()
        );
        assert!(log.contains("nothing was written to any device"), "{log}");
        for (p, was) in all.iter().zip(&before) {
            assert!(first_mib(p) == *was, "{} was written", p.display());
        }
    }
    // The same device twice is refused too.
    let dev = a.dev.display().to_string();
    let (code, log) = flash(&[img.to_str().unwrap(), &dev, &dev]);
    assert_eq!(code, 3, "{log}");
    assert!(log.contains("name each device once"), "{log}");
}

#[test]
fn a_source_served_by_nginx_is_flashed_with_the_bmap_beside_it() {
    if !tools() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (img, bmap, raw) = source(d);
    let Some(nginx) = Nginx::start(d) else {
        return;
    };
    std::fs::copy(&img, nginx.root.join("image.img.zst")).unwrap();
    std::fs::copy(&bmap, nginx.root.join("image.img.zst.bmap")).unwrap();
    let (Some(a), Some(b)) = (random_loop(d, "a", CARD), random_loop(d, "b", CARD)) else {
        return;
    };
    let url = nginx.url("image.img.zst");
    let (code, log) = flash(&[&url, a.dev.to_str().unwrap(), b.dev.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("2 of 2 device(s) written and verified"),
        "{log}"
    );
    assert!(log.contains(&format!("bmap {url}.bmap")), "{log}");
    for l in [&a, &b] {
        check_card(d, &l.dev, &raw, &bmap);
    }
    // Without a bmap (a raw image by URL, none beside it): written whole,
    // verified against the image's hash.
    std::fs::write(nginx.root.join("raw.img"), &raw).unwrap();
    let (code, log) = flash(&[&nginx.url("raw.img"), a.dev.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(&format!("{} of {} bytes mapped", raw.len(), raw.len())),
        "{log}"
    );
    check_card(d, &a.dev, &raw, &bmap);

    // --cache-dir: the first run downloads into the cards and the cache;
    // with nginx gone, the second flashes from the cache.
    let cache = d.join("cache");
    let cache_arg = cache.to_str().unwrap();
    let (code, log) = flash(&["--cache-dir", cache_arg, &url, b.dev.to_str().unwrap()]);
    assert_eq!(code, 0, "{log}");
    let entries = walk_files(&cache.join("v1/entries"));
    assert_eq!(
        entries.len(),
        1,
        "one entry for the image: {entries:?}\n{log}"
    );
    drop(nginx);
    let (code, log) = flash(&[
        "--cache-dir",
        cache_arg,
        "--attempts",
        "1",
        &url,
        a.dev.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("1 of 1 device(s) written and verified"),
        "{log}"
    );
    check_card(d, &a.dev, &raw, &bmap);
}

fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
