//! Sizing (docs/spec.md §6): the blocks and inodes the content needs in the new
//! data partition, the smallest filesystem that holds them, and the image
//! size, checked against `output.size` and `--max-size`.

use std::collections::BTreeSet;

use super::error::PlanError;
use super::item::Item;
use crate::config::OutputSize;
use crate::fs::ext4::{self, Ext4Params, InodePolicy, OldSummary, BLOCK_SIZE};
use crate::partition::SECTOR;

/// Average bytes of a directory entry: its 8-byte header and a name of
/// ~32 bytes (ext4 `dirent` records are `8 + name` rounded up to 4).
const AVG_DIRENT: u64 = 40;
/// Bytes of entries a directory block holds at least: 4096 less the
/// 12-byte checksum tail of metadata_csum, less the 20 % an htree leaf
/// leaves free (src/fs/ext4/htree.rs).
const DIR_BLOCK_PAYLOAD: u64 = (BLOCK_SIZE - 12) * 4 / 5;
/// Blocks of `lost+found`: 4 (16 KiB, as mke2fs makes it).
const LOST_FOUND_BLOCKS: u64 = 4;
/// Slack for extent index blocks of fragmented files and directory
/// growth, as a divisor: 1/200 = 0.5% of the blocks needed...
const SLACK_DIVISOR: u64 = 200;
/// ...plus 64 blocks (256 KiB) for small filesystems. A margin, not a
/// measurement: a file of `n` blocks in extents of 32768 needs
/// `n / 32768 / 340` index blocks (0.0001%), so 0.5% is far above the
/// worst fragmentation the allocator produces; the test suite and 600
/// proptest trees fit with it. Tightening it needs a measured worst case.
const SLACK_BLOCKS: u64 = 64;
/// Inodes beyond the counted entries: 16 (root, lost+found and the
/// reserved inodes 1-10 are counted by the builder; this is margin).
const SPARE_INODES: u64 = 16;

/// What the content needs, and the sizes that follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Inodes expected in the new filesystem.
    pub inodes_expected: u64,
    /// Smallest image that fits.
    pub min_image_size: u64,
    /// The image size (`output.size`, or the minimum for `auto`).
    pub image_size: u64,
    /// The new data partition (filesystem) size.
    pub fs_size: u64,
}

/// The partition start, sizes and constraints sizing works from.
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    /// Data partition offset in the image.
    pub p3_start: u64,
    /// The base image's size (an image is never smaller).
    pub base_size: u64,
    /// `output.size`.
    pub output: OutputSize,
    /// `--max-size`.
    pub max_size: Option<u64>,
}

/// Size the data partition and the image for `items`, what the base's
/// data partition carries over (`old`) and `oci_free` bytes left free for
/// the Pi to unpack images.
pub fn size_image(
    items: &[Item],
    old: &OldSummary,
    oci_free: u64,
    frame: Frame,
) -> Result<Sizes, PlanError> {
    let mut dirs: BTreeSet<&str> = BTreeSet::new();
    for it in items {
        dirs.extend(parent_dirs(&it.dest));
    }
    // What archives expand to (measured or estimated by src/expand).
    let (arch_names, arch_dirs) = items
        .iter()
        .filter_map(|i| i.archive.as_ref())
        .fold((0, 0), |(n, d), a| (n + a.needs.names, d + a.needs.dirs));
    let entries = old.entries + items.len() as u64 + dirs.len() as u64 + arch_names;
    // Root and lost+found are directories too.
    let ndirs = old.dirs + dirs.len() as u64 + 2 + arch_dirs;
    let file_blocks: u64 = items
        .iter()
        .map(|i| match &i.archive {
            Some(a) => a.needs.blocks,
            None => ext4::file_blocks(i.size, ext4::MAX_EXTENT_BLOCKS),
        })
        .sum::<u64>()
        + old.file_blocks;
    // Directory blocks: one per directory plus the names.
    // Htree roots and index nodes: a directory indexed has at least two
    // leaves, so at most one root per two name blocks.
    let name_blocks = (entries * AVG_DIRENT).div_ceil(DIR_BLOCK_PAYLOAD);
    let dir_blocks = ndirs + name_blocks + name_blocks.div_ceil(2) + LOST_FOUND_BLOCKS;
    let need = file_blocks + dir_blocks + oci_free.div_ceil(BLOCK_SIZE);
    let need = need + need / SLACK_DIVISOR + SLACK_BLOCKS;
    let params = Ext4Params {
        inodes: InodePolicy {
            expected_inodes: entries,
            ..Default::default()
        },
        ..Default::default()
    };
    let min_fs = ext4::min_size(need, entries + SPARE_INODES, &params)?;
    let min_image = (frame.p3_start + min_fs)
        .max(frame.base_size)
        .next_multiple_of(SECTOR);
    let image_size = match frame.output {
        OutputSize::Auto => min_image,
        OutputSize::Bytes(n) if n < min_image => {
            return Err(PlanError::OutputTooSmall {
                min: min_image,
                size: n,
            })
        }
        OutputSize::Bytes(n) => n / SECTOR * SECTOR,
    };
    if let Some(max) = frame.max_size.filter(|&m| image_size > m) {
        return Err(PlanError::OverMaxSize {
            size: image_size,
            max,
        });
    }
    Ok(Sizes {
        inodes_expected: entries,
        min_image_size: min_image,
        image_size,
        fs_size: (image_size - frame.p3_start) / BLOCK_SIZE * BLOCK_SIZE,
    })
}

/// The parent directories of `dest` (`a/b/c` → `a`, `a/b`).
fn parent_dirs(dest: &str) -> impl Iterator<Item = &str> {
    dest.char_indices()
        .filter(|&(_, c)| c == '/')
        .map(move |(i, _)| &dest[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_of_a_destination() {
        assert_eq!(parent_dirs("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(parent_dirs("file").count(), 0);
    }
}
