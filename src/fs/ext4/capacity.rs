//! Sizing: how much a filesystem of a given size holds, and the smallest
//! size that holds a given amount (for `output.size: auto`).

use super::error::Ext4Error;
use super::extent;
use super::layout::{Layout, BLOCK_SIZE, MIN_BLOCKS};
use super::params::Ext4Params;
use super::units::BlockCount;

/// What a filesystem of some size can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Filesystem size in bytes (a multiple of the block size).
    pub size: u64,
    /// Blocks free for data, directories and extent trees once the fixed
    /// metadata (superblocks, descriptors, bitmaps, inode tables, journal,
    /// resize inode) is laid out.
    pub free_blocks: u64,
    /// Inodes (reserved ones included).
    pub inodes: u64,
}

/// Capacity of a filesystem of `size` bytes with `params`.
pub fn capacity(size: u64, params: &Ext4Params) -> Result<Capacity, Ext4Error> {
    let (layout, alloc) = Layout::new(size, params)?;
    Ok(Capacity {
        size: layout.blocks_count.bytes()?,
        free_blocks: alloc.free_count().get(),
        inodes: layout.inodes_count(),
    })
}

/// Blocks a regular file of `size` bytes takes, its extent tree included,
/// in the worst case the allocator can produce (an extent break at every
/// block group).
pub fn file_blocks(size: u64, max_extent_blocks: u16) -> u64 {
    let data = size.div_ceil(BLOCK_SIZE);
    if data == 0 {
        return 0;
    }
    let per_extent = u64::from(max_extent_blocks.max(1));
    // Extents: one per max-length run, plus one break per block group crossed.
    // Saturating: a size no filesystem holds stays one (callers compare).
    let extents = data
        .div_ceil(per_extent)
        .saturating_add(data.div_ceil(32_768))
        .saturating_add(1);
    let tree = extent::tree_blocks(usize::try_from(extents).unwrap_or(usize::MAX));
    data.saturating_add(u64::try_from(tree).unwrap_or(u64::MAX))
}

/// Blocks a directory of `entries` entries whose names average `avg_name`
/// bytes takes (4 KiB blocks of `8 + name` byte records).
pub fn dir_blocks(entries: u64, avg_name: u64) -> u64 {
    // Record length of one entry: 8-byte header + name, 4-byte aligned.
    let record = avg_name
        .saturating_add(8)
        .checked_next_multiple_of(4)
        .unwrap_or(u64::MAX);
    let per_block = (BLOCK_SIZE - 12).checked_div(record).unwrap_or(0).max(1);
    entries.saturating_add(2).div_ceil(per_block)
}

/// Smallest filesystem size (a multiple of 4 KiB) with at least
/// `need_blocks` free blocks and `need_inodes` inodes.
pub fn min_size(need_blocks: u64, need_inodes: u64, params: &Ext4Params) -> Result<u64, Ext4Error> {
    let fits = |blocks: u64| -> Result<bool, Ext4Error> {
        let Ok(size) = BlockCount(blocks).bytes() else {
            return Ok(false); // past 2^64 bytes: nothing fits there
        };
        match capacity(size, params) {
            Ok(c) => Ok(c.free_blocks >= need_blocks && c.inodes >= need_inodes),
            // Too small for its metadata, or for its inodes at this size
            // (at most 32768 per group): a bigger filesystem may fit.
            Err(
                Ext4Error::TooSmall { .. }
                | Ext4Error::NoSpace { .. }
                | Ext4Error::TooManyInodes { .. },
            ) => Ok(false),
            Err(e) => Err(e),
        }
    };
    let mut lo = MIN_BLOCKS.max(need_blocks);
    if fits(lo)? {
        return BlockCount(lo).bytes();
    }
    // Exponential search for a size that fits, then bisect.
    let mut hi = lo;
    loop {
        hi = match hi.checked_mul(2) {
            // Past 2^52 blocks (2^64 bytes): nothing fits; say why.
            Some(h) if h <= u64::MAX / BLOCK_SIZE => h,
            _ => {
                return Err(Ext4Error::TooManyInodes {
                    wanted: need_inodes,
                    max: u64::from(u32::MAX),
                })
            }
        };
        if fits(hi)? {
            break;
        }
        lo = hi;
    }
    // Invariant: lo < hi, lo does not fit, hi fits.
    while hi.saturating_sub(lo) > 1 {
        let mid = lo.saturating_add(hi.saturating_sub(lo) / 2);
        if fits(mid)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    BlockCount(hi).bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_size_is_tight_and_sufficient() {
        let p = Ext4Params::default();
        for need in [0u64, 10, 5_000, 100_000, 1_000_000] {
            let s = min_size(need, 0, &p).expect("size");
            let c = capacity(s, &p).expect("capacity");
            assert!(c.free_blocks >= need, "need {need}: {c:?}");
            if s > MIN_BLOCKS * BLOCK_SIZE {
                let smaller = capacity(s - BLOCK_SIZE, &p)
                    .map(|c| c.free_blocks)
                    .unwrap_or(0);
                assert!(smaller < need, "need {need}: {s} is not the smallest");
            }
        }
    }

    #[test]
    fn inodes_grow_the_filesystem() {
        // 1.25 M inodes at 64 KiB per inode: a filesystem sized for a few
        // blocks holds too few (32768 per group at most); min_size grows it.
        let mut p = Ext4Params::default();
        p.inodes.expected_inodes = 1_000_000;
        let s = min_size(10_000, 1_252_279, &p).expect("size");
        let c = capacity(s, &p).expect("capacity");
        assert!(c.inodes >= 1_252_279, "{c:?}");
        // The smallest that fits: one block less does not.
        let smaller = s - BLOCK_SIZE;
        assert!(capacity(smaller, &p).map_or(true, |c| c.inodes < 1_252_279));
        // 2^32 inodes can never fit: a clear error, not a hang.
        p.inodes.expected_inodes = 5_000_000_000;
        assert!(matches!(
            min_size(0, 5_000_000_000, &p),
            Err(Ext4Error::TooManyInodes { .. })
        ));
    }

    #[test]
    fn file_blocks_cover_trees() {
        assert_eq!(file_blocks(0, 32768), 0);
        assert_eq!(file_blocks(1, 32768), 1);
        // 100 GB: ~24.4 M blocks, ~1500 extents worst case → a few tree blocks.
        let b = file_blocks(100_000_000_000, 32768);
        assert!(b > 24_414_063 && b < 24_414_063 + 16, "{b}");
    }
}
