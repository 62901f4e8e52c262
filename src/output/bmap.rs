//! bmaptool's block map, format 2.0 (sha256): written from the image map
//! and the range hashes of the output pass; read back by `verify`.
//!
//! The file's own checksum is computed as bmaptool checks it: the sha256
//! of the whole file with the checksum's 64 hex digits replaced by `0`s.

mod parse;

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

pub use parse::{BmapError, BmapErrorKind};

/// bmap's block size.
pub const BLOCK: u64 = 4096;

/// One mapped range: blocks `first..=last` and the sha256 of their bytes
/// (the last block cut at the image's end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapRange {
    /// First block.
    pub first: u64,
    /// Last block (inclusive).
    pub last: u64,
    /// Lowercase hex sha256.
    pub sha256: String,
}

/// A block map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    /// Image size in bytes.
    pub image_size: u64,
    /// Block size (4096 for ours; any for one read back).
    pub block_size: u64,
    /// The mapped ranges, in order.
    pub ranges: Vec<BmapRange>,
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    #[allow(clippy::cast_precision_loss)]
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

impl Bmap {
    /// Blocks in the image.
    pub fn blocks_count(&self) -> u64 {
        self.image_size.div_ceil(self.block_size)
    }

    /// Mapped blocks (saturating: a map read from a user's file may list
    /// a block more than once).
    pub fn mapped_count(&self) -> u64 {
        self.ranges.iter().fold(0, |n, r| {
            n.saturating_add(r.last.saturating_sub(r.first).saturating_add(1))
        })
    }

    /// The file, as bmaptool 3.x writes it, with its checksum.
    pub fn render(&self) -> String {
        let mapped = self.mapped_count();
        let blocks = self.blocks_count();
        #[allow(clippy::cast_precision_loss)]
        let percent = if blocks == 0 {
            0.0
        } else {
            mapped as f64 * 100.0 / blocks as f64
        };
        let mut s = String::new();
        s.push_str("<?xml version=\"1.0\" ?>\n");
        s.push_str(
            "<!-- This file contains the block map for an image file, which is basically\n     \
             a list of useful (mapped) block numbers in the image file. In other\n     \
             words, it lists only those blocks which contain data (boot sector,\n     \
             partition table, file-system metadata, files, directories, extents,\n     \
             etc) or which must read as zeros. These blocks have to be copied to\n     \
             the target device. The other blocks do not contain any useful data and\n     \
             do not have to be copied to the target device.\n\n     \
             Written by image-creator from the filesystems' own allocation\n     \
             metadata (not from the image file's holes). -->\n\n",
        );
        s.push_str("<bmap version=\"2.0\">\n");
        let _ = writeln!(
            s,
            "    <!-- Image size in bytes: {} -->\n    <ImageSize> {} </ImageSize>\n",
            human(self.image_size),
            self.image_size
        );
        let _ = writeln!(
            s,
            "    <!-- Size of a block in bytes -->\n    <BlockSize> {} </BlockSize>\n",
            self.block_size
        );
        let _ = writeln!(
            s,
            "    <!-- Count of blocks in the image file -->\n    <BlocksCount> {blocks} </BlocksCount>\n"
        );
        let _ = writeln!(
            s,
            "    <!-- Count of mapped blocks: {} or {percent:.1}% -->\n    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n",
            human(mapped.saturating_mul(self.block_size))
        );
        s.push_str(
            "    <!-- Type of checksum used in this file -->\n    <ChecksumType> sha256 </ChecksumType>\n\n",
        );
        s.push_str(
            "    <!-- The checksum of this bmap file. When it is calculated, the value of\n         \
             the checksum has be zero (all ASCII \"0\" symbols).  -->\n",
        );
        const MARK: &str = "@@BMAP_FILE_CHECKSUM@@";
        let _ = writeln!(s, "    <BmapFileChecksum> {MARK} </BmapFileChecksum>\n");
        s.push_str(
            "    <!-- The block map which consists of elements which may either be a\n         \
             range of blocks or a single block. The 'chksum' attribute\n         \
             (if present) is the checksum of this blocks range. -->\n    <BlockMap>\n",
        );
        for r in &self.ranges {
            if r.first == r.last {
                let _ = writeln!(
                    s,
                    "        <Range chksum=\"{}\"> {} </Range>",
                    r.sha256, r.first
                );
            } else {
                let _ = writeln!(
                    s,
                    "        <Range chksum=\"{}\"> {}-{} </Range>",
                    r.sha256, r.first, r.last
                );
            }
        }
        s.push_str("    </BlockMap>\n</bmap>\n");
        let zeros = "0".repeat(64);
        let with_zeros = s.replacen(MARK, &zeros, 1);
        let sum = crate::io::hex(&Sha256::digest(with_zeros.as_bytes()));
        s.replacen(MARK, &sum, 1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    proptest! {
        /// Any text, and any edit of a valid file, parses or is refused
        /// with a message naming the file; never a panic.
        #[test]
        fn parse_never_panics(text in ".{0,400}", at in 0usize..2000, junk in ".{0,20}") {
            let _ = Bmap::parse(Path::new("f.bmap"), &text);
            let good = Bmap {
                image_size: 1 << 30,
                block_size: 4096,
                ranges: vec![BmapRange { first: 1, last: u64::MAX / 4096, sha256: "c".repeat(64) }],
            }
            .render();
            let mut cut = at.min(good.len());
            while !good.is_char_boundary(cut) {
                cut -= 1;
            }
            let edited = format!("{}{junk}{}", &good[..cut], &good[cut..]);
            if let Err(e) = Bmap::parse(Path::new("f.bmap"), &edited) {
                let e = e.to_string();
                prop_assert!(e.starts_with("f.bmap:"), "{}", e);
            }
        }
    }

    #[test]
    fn renders_and_parses_back() {
        let b = Bmap {
            image_size: 10 * 4096 + 100,
            block_size: 4096,
            ranges: vec![
                BmapRange {
                    first: 0,
                    last: 2,
                    sha256: "a".repeat(64),
                },
                BmapRange {
                    first: 10,
                    last: 10,
                    sha256: "b".repeat(64),
                },
            ],
        };
        let text = b.render();
        assert!(
            text.contains("<MappedBlocksCount> 4 </MappedBlocksCount>"),
            "{text}"
        );
        assert!(text.contains("<BlocksCount> 11 </BlocksCount>"));
        let back = Bmap::parse(Path::new("x.bmap"), &text).unwrap();
        assert_eq!(back, b);
        // A changed byte breaks the file checksum.
        let bad = text.replacen("> 10 <", "> 9 <", 1);
        let e = Bmap::parse(Path::new("x.bmap"), &bad).unwrap_err();
        assert!(matches!(e.kind, BmapErrorKind::Changed { .. }), "{e}");
        let line = text
            .lines()
            .position(|l| l.contains("<BmapFileChecksum>"))
            .unwrap()
            + 1;
        assert_eq!(e.line, line, "{e}");
        assert!(
            e.to_string().starts_with(&format!("x.bmap:{line}: ")),
            "{e}"
        );
    }
}
