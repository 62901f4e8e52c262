//! `image-creator verify`: passes on good outputs (raw and compressed),
//! names the file after one byte of it is flipped in p3 (found by
//! debugfs), and names the bmap range after one byte of it is flipped,
//! also with our bmap written another way (single quotes, one line).
#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]

mod common;
// Only `seal` and `MARK`: the rest serves tests/bmap.rs.
#[allow(dead_code)]
#[path = "bmap/style.rs"]
mod style;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::image::{self, debugfs_p3, files_config, image_creator_env, make_base, p3_offset};

fn ic(args: &[&str]) -> (i32, String) {
    image_creator_env(args, &[("SOURCE_DATE_EPOCH", "1700000000")])
}

fn flip(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x55;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn verify_passes_on_good_outputs_and_names_what_was_flipped() {
    if !image::tools(&["debugfs", "sfdisk"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let payload = d.join("payload.bin");
    std::fs::write(&payload, common::bytes(5, 200_000)).unwrap();
    let sha = common::digest("sha256sum", &payload);
    let cfg = files_config(
        d,
        &base,
        rootfs,
        &format!(
            "  - to: /data/payload.bin\n    url: {}\n    size: 200000\n    checksum:\n      algo: sha-256\n      value: {sha}\n\
             \x20 - to: /data/notes/a.txt\n    content: hello\n\
             offspot:\n  ap:\n    ssid: verify\n",
            payload.display()
        ),
    );
    let c = cfg.to_str().unwrap();
    for name in ["out.img", "out.img.zst", "out.img.xz"] {
        let out = d.join(name);
        let o = out.to_str().unwrap();
        let (code, log) = ic(&["--bmap", c, o]);
        assert_eq!(code, 0, "{log}");
        let bmap = format!("{o}.bmap");
        let (code, log) = ic(&["verify", "--bmap", &bmap, "--config", c, o]);
        assert_eq!(code, 0, "verify {name}: {log}");
        assert!(log.contains("OK"), "{log}");
    }

    let out = d.join("out.img");
    let o = out.to_str().unwrap();
    let bmap = format!("{o}.bmap");
    // One byte of payload.bin's first block, found by debugfs.
    let blocks = debugfs_p3(&out, "blocks /payload.bin");
    let first: u64 = blocks.split_whitespace().next().unwrap().parse().unwrap();
    let at = p3_offset(&out) + first * 4096 + 10;
    flip(&out, at);
    let (code, log) = ic(&["verify", "--config", c, o]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains("/payload.bin") && log.contains("sha-256"),
        "{log}"
    );
    assert!(
        !log.contains("a.txt"),
        "only the flipped file differs: {log}"
    );
    let (code, log) = ic(&["verify", "--bmap", &bmap, o]);
    assert_eq!(code, 1, "{log}");
    let block = at / 4096;
    let named = log
        .lines()
        .filter(|l| l.starts_with("differs: bmap range"))
        .collect::<Vec<_>>();
    assert_eq!(named.len(), 1, "{log}");
    let span = named[0].split_whitespace().nth(3).unwrap();
    let (a, b) = span.split_once('-').unwrap();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(a <= block && block <= b, "{block} not in {span}: {log}");
    flip(&out, at);
    let (code, log) = ic(&["verify", "--bmap", &bmap, "--config", c, o]);
    assert_eq!(code, 0, "flipped back: {log}");

    // A byte of the MBR gap (mapped, no file): only --bmap sees it.
    flip(&out, 4096 * 3);
    let (code, log) = ic(&["verify", "--bmap", &bmap, o]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("differs: bmap range 0-"), "{log}");

    // Nothing to check with: exit 3.
    let (code, log) = ic(&["verify", o]);
    assert_eq!(code, 3, "{log}");
}

/// The block ranges of our own bmap, read from its lines
/// (`<Range chksum="…"> A-B </Range>` or `> A </Range>`).
fn ranges_of(ours: &str) -> Vec<(u64, u64)> {
    ours.lines()
        .filter_map(|l| l.trim().strip_prefix("<Range chksum=\""))
        .map(|rest| {
            let span = rest.split_once('>').unwrap().1;
            let span = span.split_once('<').unwrap().0.trim();
            let (a, b) = span.split_once('-').unwrap_or((span, span));
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// Our bmap as another tool might write it: `chksum` in single quotes, a
/// comment before each range, everything on one line; its own checksum
/// computed again (bmaptool checks it, and so do we).
fn single_quoted_on_one_line(ours: &str) -> String {
    let mut t = String::new();
    for line in ours.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("<Range chksum=\"") {
            let (hex, tail) = rest.split_once('"').unwrap();
            t.push_str(&format!("<!-- a range --><Range chksum='{hex}'{tail}"));
        } else if line.starts_with("<BmapFileChecksum>") {
            t.push_str(&format!(
                "<BmapFileChecksum>{}</BmapFileChecksum>",
                style::MARK
            ));
        } else {
            t.push_str(line);
            t.push(' ');
        }
    }
    style::seal(&t)
}

#[test]
fn verify_reads_a_bmap_written_another_way_and_still_catches_a_flipped_byte() {
    if !image::tools(&["sfdisk"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let (base, rootfs) = make_base(d);
    let payload = d.join("payload.bin");
    std::fs::write(&payload, common::bytes(9, 300_000)).unwrap();
    let cfg = files_config(
        d,
        &base,
        rootfs,
        &format!(
            "  - to: /data/payload.bin\n    url: {}\n",
            payload.display()
        ),
    );
    let out = d.join("out.img");
    let o = out.to_str().unwrap();
    let (code, log) = ic(&["--bmap", cfg.to_str().unwrap(), o]);
    assert_eq!(code, 0, "{log}");
    let ours = std::fs::read_to_string(format!("{o}.bmap")).unwrap();
    let ranges = ranges_of(&ours);
    assert!(ranges.len() > 2, "{ours}");
    let text = single_quoted_on_one_line(&ours);
    assert_eq!(text.lines().count(), 1);
    let other = d.join("other.bmap");
    std::fs::write(&other, &text).unwrap();
    let b = other.to_str().unwrap();

    let (code, log) = ic(&["verify", "--bmap", b, o]);
    assert_eq!(code, 0, "{log}");
    let all = format!("OK ({} checks passed)", ranges.len());
    assert!(log.contains(&all), "every range is checked: {log}");

    // One byte inside a range in the middle of the map.
    let (first, last) = ranges[ranges.len() / 2];
    flip(&out, first * 4096 + 100);
    let (code, log) = ic(&["verify", "--bmap", b, o]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(&format!("differs: bmap range {first}-{last} ")),
        "{log}"
    );
}
