//! The bmap parser reads what bmaptool reads: our own bmaps, written again
//! with other whitespace, quotes, attribute and element order, comments,
//! character references, on one line or many (tests/bmap/style.rs), parse
//! back to the same ranges; and `bmaptool copy` (the oracle) accepts such
//! files and checks their ranges.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "bmap/style.rs"]
mod style;

use std::path::Path;
use std::process::Command;

use image_creator::output::{Bmap, BmapRange};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use style::{write, Style};

/// A bmap: block size, sorted disjoint ranges, an image that ends at or
/// after the last one (its last block maybe cut short).
fn bmaps() -> impl Strategy<Value = Bmap> {
    let block_size = prop_oneof![Just(512u64), Just(4096), Just(65536), 1u64..10_000];
    let ranges = proptest::collection::vec((0u64..1_000_000, 1u64..5000, "[0-9a-f]{64}"), 1..24);
    (block_size, ranges, 0u64..1000, any::<u64>()).prop_map(|(bs, raw, extra, cut)| {
        let mut ranges = Vec::new();
        let mut next = 0u64;
        for (gap, len, sha256) in raw {
            let first = next + gap;
            let last = first + len - 1;
            ranges.push(BmapRange {
                first,
                last,
                sha256,
            });
            next = last + 1 + u64::from(gap % 2 == 1);
        }
        let blocks = next + extra;
        Bmap {
            image_size: (blocks - 1) * bs + 1 + cut % bs,
            block_size: bs,
            ranges,
        }
    })
}

fn styles() -> impl Strategy<Value = Style> {
    let order = Just((0..7).collect::<Vec<usize>>()).prop_shuffle();
    (
        proptest::collection::vec(any::<u8>(), 1..256),
        any::<bool>(),
        order,
    )
        .prop_map(|(bytes, one_line, order)| Style::new(bytes, one_line, order))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Our own rendering, and any re-serialisation of it, read back the
    /// same.
    #[test]
    fn any_layout_reads_back_the_same_ranges(bmap in bmaps(), mut style in styles()) {
        let ours = bmap.render();
        let back = Bmap::parse(Path::new("ours.bmap"), &ours).ok();
        prop_assert_eq!(back.as_ref(), Some(&bmap));
        let text = write(&bmap, &mut style);
        match Bmap::parse(Path::new("p.bmap"), &text) {
            Ok(back) => prop_assert_eq!(back, bmap, "{}", text),
            Err(e) => prop_assert!(false, "{e}\n{text}"),
        }
    }

    /// Any one byte changed in such a file (not sealed again) is refused,
    /// whatever it hits: markup, a number, a checksum, whitespace.
    #[test]
    fn any_changed_byte_is_refused(bmap in bmaps(), mut style in styles(), at in any::<prop::sample::Index>(), to in 0x20u8..0x7f) {
        let mut bytes = write(&bmap, &mut style).into_bytes();
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        bytes[i] = to;
        let text = String::from_utf8(bytes).unwrap();
        prop_assert!(Bmap::parse(Path::new("p.bmap"), &text).is_err(), "{}", text);
    }
}

/// Blocks of `data` as bmaptool hashes them (the last block cut at the end).
fn range(data: &[u8], bs: u64, first: u64, last: u64) -> BmapRange {
    let start = usize::try_from(first * bs).unwrap();
    let end = usize::try_from((last + 1) * bs).unwrap().min(data.len());
    BmapRange {
        first,
        last,
        sha256: image_creator::io::hex(&Sha256::digest(&data[start..end])),
    }
}

fn bmaptool_copy(bmap: &Path, image: &Path, dest: &Path) -> (i32, String) {
    common::run(
        Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(bmap)
            .arg(image)
            .arg(dest),
    )
}

#[test]
fn bmaptool_copy_accepts_re_serialised_bmaps_and_checks_their_ranges() {
    if !common::have("bmaptool") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let bs = 4096u64;
    let data = common::bytes(7, 40 * 4096 - 100);
    let image = d.join("img");
    std::fs::write(&image, &data).unwrap();
    let bmap = Bmap {
        image_size: data.len() as u64,
        block_size: bs,
        ranges: [(0, 2), (5, 5), (9, 20), (39, 39)]
            .iter()
            .map(|&(a, b)| range(&data, bs, a, b))
            .collect(),
    };
    let file = d.join("f.bmap");
    let dest = d.join("out.img");
    for seed in 0..6u64 {
        let mut order: Vec<usize> = (0..7).collect();
        order.rotate_left(usize::try_from(seed % 7).unwrap());
        if seed % 2 == 1 {
            order.reverse();
        }
        let mut style = Style::new(common::bytes(seed, 256), seed % 3 == 0, order);
        let text = write(&bmap, &mut style);
        std::fs::write(&file, &text).unwrap();
        assert_eq!(
            Bmap::parse(&file, &text).ok().as_ref(),
            Some(&bmap),
            "{text}"
        );
        let (code, log) = bmaptool_copy(&file, &image, &dest);
        assert_eq!(
            code, 0,
            "bmaptool copy refused variant {seed}:\n{text}\n{log}"
        );
        assert_eq!(std::fs::read(&dest).unwrap()[..3 * 4096], data[..3 * 4096]);
    }
    // bmaptool checks the ranges with the checksums as we wrote them.
    let mut flipped = data.clone();
    flipped[9 * 4096 + 5] ^= 0x55;
    std::fs::write(&image, &flipped).unwrap();
    let (code, log) = bmaptool_copy(&file, &image, &dest);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("checksum mismatch for blocks range 9-20"),
        "{log}"
    );
}
