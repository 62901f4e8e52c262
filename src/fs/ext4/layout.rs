//! Geometry of a new filesystem: groups, backups, flex_bg metadata, journal.
//!
//! Fixed choices (with the reason): 4 KiB blocks (the ext4 default and the
//! page size), 32768 blocks per group (one bitmap block's bits), 256-byte
//! inodes (room for nanosecond times and crtime), 64-byte group descriptors
//! (`64bit`), 16 groups per flex group (mke2fs's default `-G 16`).

use super::alloc::{Allocator, Run};
use super::error::Ext4Error;
use super::params::Ext4Params;
use super::units::{BlockCount, BlockNo, GroupNo};
// The block size is the unit of `units` (defined there, so `units` needs
// nothing of the layout); the geometry's users take it from here with the
// rest of the geometry.
pub(crate) use super::units::{BLOCKS_PER_GROUP, BLOCK_SIZE, BLOCK_SIZE_USIZE, LOG_BLOCK_SIZE};
pub(crate) const INODE_SIZE: u64 = 256;
pub(crate) const INODE_SIZE_U16: u16 = 256;
pub(crate) const INODE_SIZE_USIZE: usize = 256;
pub(crate) const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
pub(crate) const DESC_SIZE: u64 = 64;
pub(crate) const DESC_SIZE_U16: u16 = 64;
pub(crate) const DESC_SIZE_USIZE: usize = 64;
pub(crate) const DESCS_PER_BLOCK: u64 = BLOCK_SIZE / DESC_SIZE;
pub(crate) const LOG_GROUPS_PER_FLEX: u32 = 4;
pub(crate) const LOG_GROUPS_PER_FLEX_U8: u8 = 4;
pub(crate) const GROUPS_PER_FLEX: u64 = 1 << LOG_GROUPS_PER_FLEX;
/// First non-reserved inode (`s_first_ino`); inodes 1..=10 are reserved.
pub(crate) const FIRST_INO: u32 = 11;
/// Block pointers per indirect block (resize inode).
pub(crate) const ADDR_PER_BLOCK: u64 = BLOCK_SIZE / 4;
/// Smallest filesystem we lay out: mke2fs refuses a journal below 2048
/// blocks, and a journal is required.
pub(crate) const MIN_BLOCKS: u64 = 2048;

/// Where one group's bitmaps and inode table live.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupMeta {
    pub block_bitmap: BlockNo,
    pub inode_bitmap: BlockNo,
    pub inode_table: BlockNo,
}

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub blocks_count: BlockCount,
    /// Number of groups (`>= 1`).
    pub groups: u64,
    pub inodes_per_group: u64,
    pub desc_blocks: BlockCount,
    pub reserved_gdt_blocks: BlockCount,
    pub groups_meta: Vec<GroupMeta>,
    pub journal: Vec<Run>,
    pub journal_blocks: BlockCount,
    /// Double-indirect block of the resize inode (when `reserved_gdt_blocks > 0`).
    pub resize_dind: Option<BlockNo>,
    pub reserved_blocks: BlockCount,
}

/// sparse_super: groups 0, 1 and powers of 3, 5 and 7 hold superblock backups.
pub(crate) fn group_has_super(g: GroupNo) -> bool {
    let g = g.0;
    if g <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&b| {
        let mut p = b;
        while p < g {
            match p.checked_mul(b) {
                Some(next) => p = next,
                None => return false,
            }
        }
        p == g
    })
}

/// Journal blocks for a filesystem of `blocks` 4 KiB blocks, following the
/// size table of e2fsprogs' `ext2fs_default_journal_size` (mke2fs 1.47):
/// 4 MiB below 128 MiB, 16 MiB below 1 GiB, 32 MiB below 2 GiB, 64 MiB below
/// 16 GiB, 128 MiB below 32 GiB, 256 MiB below 64 GiB, 512 MiB below 128 GiB,
/// 1 GiB above.
pub(crate) fn default_journal_blocks(blocks: u64) -> u64 {
    match blocks {
        b if b < 32_768 => 1024,
        b if b < 256 * 1024 => 4096,
        b if b < 512 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 8192 * 1024 => 32_768,
        b if b < 16_384 * 1024 => 65_536,
        b if b < 32_768 * 1024 => 131_072,
        _ => 262_144,
    }
}

/// Reserved GDT blocks so that `resize2fs` can grow the filesystem to 1024×
/// its size or 2^32 blocks, whichever is smaller (mke2fs's rule), capped at
/// one indirect block's worth of pointers.
fn reserved_gdt_blocks(blocks: u64, desc_blocks: u64) -> u64 {
    if blocks > u64::from(u32::MAX) {
        return 0; // the resize inode has 32-bit block pointers
    }
    let max_blocks = blocks.saturating_mul(1024).min(u64::from(u32::MAX));
    let rsv_groups = max_blocks.div_ceil(BLOCKS_PER_GROUP);
    let rsv = rsv_groups
        .div_ceil(DESCS_PER_BLOCK)
        .saturating_sub(desc_blocks);
    rsv.min(ADDR_PER_BLOCK)
}

fn inodes_per_group(params: &Ext4Params, blocks: u64, groups: u64) -> Result<u64, Ext4Error> {
    let bytes = blocks.saturating_mul(BLOCK_SIZE);
    let by_ratio = bytes
        .checked_div(params.inodes.bytes_per_inode.max(1024))
        .unwrap_or(0);
    let expected = params.inodes.expected_inodes;
    let wanted = by_ratio.max(expected.saturating_add(expected / 4).saturating_add(1024));
    let per_group = wanted
        .div_ceil(groups.max(1))
        .checked_next_multiple_of(INODES_PER_BLOCK)
        .unwrap_or(u64::MAX)
        .max(INODES_PER_BLOCK);
    // An inode bitmap is one block: at most 8 * 4096 inodes per group.
    let max = 8 * BLOCK_SIZE;
    if per_group > max || per_group.saturating_mul(groups) > u64::from(u32::MAX) {
        return Err(Ext4Error::TooManyInodes {
            wanted,
            max: max.saturating_mul(groups).min(u64::from(u32::MAX)),
        });
    }
    Ok(per_group)
}

/// Sizes of one candidate geometry, before anything is placed.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    blocks: u64,
    groups: u64,
    /// Inodes per group.
    ipg: u64,
    /// Inode table blocks per group.
    itb: u64,
    desc_blocks: u64,
    /// Reserved GDT blocks.
    rsv: u64,
}

impl Geometry {
    /// The geometry of `blocks` blocks (`>= MIN_BLOCKS`). Every figure is
    /// bounded: blocks < 2^52 (a byte size / 4096), groups < 2^37, ipg <=
    /// 32768, so the products below stay far inside `u64`.
    #[allow(clippy::arithmetic_side_effects)] // bounds in the doc comment
    fn new(params: &Ext4Params, blocks: u64) -> Result<Self, Ext4Error> {
        let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
        let ipg = inodes_per_group(params, blocks, groups)?;
        let desc_blocks = groups.div_ceil(DESCS_PER_BLOCK);
        Ok(Self {
            blocks,
            groups,
            ipg,
            itb: ipg * INODE_SIZE / BLOCK_SIZE,
            desc_blocks,
            rsv: reserved_gdt_blocks(blocks, desc_blocks),
        })
    }

    /// Blocks of a too-small last group to drop, like mke2fs: one that
    /// can not hold its own overhead plus 50 blocks. Zero when it is fine.
    #[allow(clippy::arithmetic_side_effects)] // groups >= 1; rem <= blocks; small sums
    fn tiny_last_group(&self) -> u64 {
        let last = self.groups - 1;
        let rem = self.blocks - last * BLOCKS_PER_GROUP;
        let sb_overhead = if group_has_super(GroupNo(last)) {
            1 + self.desc_blocks + self.rsv
        } else {
            0
        };
        let overhead = sb_overhead + 2 + self.itb;
        if self.groups > 1 && rem < overhead + 50 {
            rem
        } else {
            0
        }
    }
}

impl Layout {
    /// Lay out a filesystem in `size_bytes`; returns the layout and an
    /// allocator with every fixed metadata block marked used.
    pub fn new(size_bytes: u64, params: &Ext4Params) -> Result<(Self, Allocator), Ext4Error> {
        let mut blocks = size_bytes / BLOCK_SIZE;
        if blocks < MIN_BLOCKS {
            return Err(Ext4Error::TooSmall {
                size: size_bytes,
                min: MIN_BLOCKS * BLOCK_SIZE,
            });
        }
        loop {
            let geo = Geometry::new(params, blocks)?;
            match geo.tiny_last_group() {
                0 => return Self::place(geo, params),
                drop => blocks = blocks.saturating_sub(drop),
            }
        }
    }

    fn place(geo: Geometry, params: &Ext4Params) -> Result<(Self, Allocator), Ext4Error> {
        let blocks = geo.blocks;
        let too_small = |what: &str| Ext4Error::NoSpace {
            what: what.to_string(),
            needed: 0,
            available: 0,
            size: blocks.saturating_mul(BLOCK_SIZE),
        };
        let mut alloc = Allocator::new(BlockCount(blocks));
        // Superblock, descriptor table and reserved GDT blocks of each group
        // with a backup: 1 + desc_blocks + rsv <= 1 + 2^31 + 1024 blocks.
        let sb_len = BlockCount(geo.desc_blocks.saturating_add(geo.rsv).saturating_add(1));
        for g in (0..geo.groups).map(GroupNo).filter(|&g| group_has_super(g)) {
            alloc
                .mark(g.first_block()?, sb_len)
                .map_err(|_| too_small("superblock backups"))?;
        }
        let groups_meta = place_group_metadata(&mut alloc, &geo).map_err(too_small)?;
        // The resize inode's double-indirect block, right after group 0's
        // metadata.
        let resize_dind = if geo.rsv > 0 {
            Some(
                alloc
                    .alloc_contiguous(BlockNo(0), BlockCount(1))
                    .ok_or_else(|| too_small("resize inode"))?,
            )
        } else {
            None
        };
        // Journal: mke2fs puts it at the start of the middle group (rounded
        // down to a flex group when there are more than 16 groups).
        let journal_blocks = default_journal_blocks(blocks);
        let mut mid = (blocks / 2) / BLOCKS_PER_GROUP;
        if geo.groups > GROUPS_PER_FLEX {
            mid &= !(GROUPS_PER_FLEX - 1);
        }
        let journal = alloc_from(
            &mut alloc,
            GroupNo(mid).first_block()?,
            journal_blocks,
            u64::from(params.max_extent_blocks),
        )
        .ok_or_else(|| too_small("journal"))?;
        // <= blocks * 50 / 100: the product fits (blocks < 2^52).
        let reserved_blocks =
            blocks.saturating_mul(u64::from(params.reserved_percent.min(50))) / 100;
        let layout = Self {
            blocks_count: BlockCount(blocks),
            groups: geo.groups,
            inodes_per_group: geo.ipg,
            desc_blocks: BlockCount(geo.desc_blocks),
            reserved_gdt_blocks: BlockCount(geo.rsv),
            groups_meta,
            journal,
            journal_blocks: BlockCount(journal_blocks),
            resize_dind,
            reserved_blocks: BlockCount(reserved_blocks),
        };
        Ok((layout, alloc))
    }

    pub fn inodes_count(&self) -> u64 {
        // ipg * groups <= 2^32 (checked by `inodes_per_group`).
        self.inodes_per_group.saturating_mul(self.groups)
    }

    /// Blocks in group `g` (the last one may be short; zero past the end).
    pub fn blocks_in_group(&self, g: GroupNo) -> BlockCount {
        let start = g.0.saturating_mul(BLOCKS_PER_GROUP);
        BlockCount(
            self.blocks_count
                .0
                .saturating_sub(start)
                .min(BLOCKS_PER_GROUP),
        )
    }

    /// Groups (other than 0) that carry superblock/GDT backups, ascending.
    pub fn backup_groups(&self) -> impl Iterator<Item = GroupNo> + '_ {
        (1..self.groups)
            .map(GroupNo)
            .filter(|&g| group_has_super(g))
    }

    /// Where group `g`'s bitmaps and inode table are.
    pub fn group_meta(&self, g: GroupNo) -> Result<GroupMeta, Ext4Error> {
        self.groups_meta
            .get(g.index())
            .copied()
            .ok_or_else(|| Ext4Error::Internal(format!("no group {}", g.0)))
    }
}

/// flex_bg: each flex group's bitmaps and inode tables are packed at the
/// start of its first group (block bitmaps, then inode bitmaps, then inode
/// tables), as mke2fs does. On failure, names what did not fit.
fn place_group_metadata(
    alloc: &mut Allocator,
    geo: &Geometry,
) -> Result<Vec<GroupMeta>, &'static str> {
    let mut groups_meta = Vec::with_capacity(usize::try_from(geo.groups).unwrap_or(0));
    let mut flex_start = 0;
    while flex_start < geo.groups {
        let n = GROUPS_PER_FLEX.min(geo.groups.saturating_sub(flex_start));
        let mut pos = GroupNo(flex_start)
            .first_block()
            .map_err(|_| "block bitmaps")?;
        let mut place = |len: u64, what: &'static str| -> Result<Vec<BlockNo>, &'static str> {
            (0..n)
                .map(|_| {
                    let b = alloc.alloc_contiguous(pos, BlockCount(len)).ok_or(what)?;
                    pos = b.checked_add(BlockCount(len)).ok_or(what)?;
                    Ok(b)
                })
                .collect()
        };
        let bbs = place(1, "block bitmaps")?;
        let ibs = place(1, "inode bitmaps")?;
        let its = place(geo.itb, "inode tables")?;
        for ((block_bitmap, inode_bitmap), inode_table) in bbs.into_iter().zip(ibs).zip(its) {
            groups_meta.push(GroupMeta {
                block_bitmap,
                inode_bitmap,
                inode_table,
            });
        }
        flex_start = flex_start.saturating_add(n);
    }
    Ok(groups_meta)
}

/// Allocate `count` blocks starting the search at `from`, as runs of at most
/// `max_run` (wrapping to the start of the filesystem if needed).
fn alloc_from(alloc: &mut Allocator, from: BlockNo, count: u64, max_run: u64) -> Option<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    let mut left = count;
    let mut pos = from;
    let mut wrapped = false;
    let one = BlockCount(1);
    while left > 0 {
        let want = left.min(max_run);
        // Largest free run available at pos, up to `want`.
        let at = match alloc.find_contiguous(pos, one) {
            Some(at) => at,
            None if !wrapped => {
                wrapped = true;
                pos = BlockNo(0);
                continue;
            }
            None => return None,
        };
        let mut len = BlockCount(1);
        while len.0 < want {
            let next = at.checked_add(len)?;
            if alloc.find_contiguous(next, one) != Some(next) {
                break;
            }
            len = len.checked_add(one)?;
        }
        alloc.mark(at, len).ok()?;
        match runs.last_mut() {
            Some(r) if r.end() == at && r.len.0.saturating_add(len.0) <= max_run => {
                r.len = r.len.checked_add(len)?;
            }
            _ => runs.push(Run { start: at, len }),
        }
        left = left.saturating_sub(len.0);
        pos = at.checked_add(len)?;
    }
    Some(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Ext4Params {
        Ext4Params {
            inodes: super::super::params::InodePolicy {
                bytes_per_inode: 1 << 20,
                expected_inodes: 0,
            },
            ..Ext4Params::default()
        }
    }

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..130).filter(|&g| group_has_super(GroupNo(g))).collect();
        assert_eq!(with, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81, 125]);
    }

    #[test]
    fn journal_sizes_follow_mke2fs_table() {
        assert_eq!(default_journal_blocks(65_536), 4096); // 256 MiB -> 16 MiB
        assert_eq!(default_journal_blocks(2048), 1024);
        assert_eq!(default_journal_blocks(4096 * 1024 - 1), 16_384); // just below 16 GiB
        assert_eq!(default_journal_blocks(4096 * 1024), 32_768);
        assert_eq!(default_journal_blocks(100 << 30 >> 12), 131_072);
        assert_eq!(default_journal_blocks(1 << 40 >> 12), 262_144);
    }

    #[test]
    fn reserved_gdt_matches_mke2fs_for_256_mib() {
        // mke2fs -T largefile on 256 MiB: "Reserved GDT blocks: 31".
        assert_eq!(reserved_gdt_blocks(65_536, 1), 31);
    }

    #[test]
    fn layout_256_mib_like_mke2fs() {
        let mut p = params();
        p.inodes.bytes_per_inode = 1 << 20;
        let (l, a) = Layout::new(256 << 20, &p).expect("layout");
        assert_eq!(l.groups, 2);
        // mke2fs -T largefile gives 128 per group; our policy's floor of 1024
        // inodes gives 512 (32 inode table blocks).
        assert_eq!(l.inodes_per_group, 512);
        assert_eq!(
            l.groups_meta[1]
                .inode_table
                .since(l.groups_meta[0].inode_table),
            Some(BlockCount(32))
        );
        assert_eq!(l.reserved_gdt_blocks, BlockCount(31));
        assert_eq!(l.groups_meta[0].block_bitmap, BlockNo(33));
        assert_eq!(l.groups_meta[1].inode_bitmap, BlockNo(36));
        assert_eq!(l.groups_meta[1].inode_table, BlockNo(69));
        assert_eq!(
            l.journal,
            vec![Run {
                start: BlockNo(32_801),
                len: BlockCount(4096)
            }]
        );
        assert!(a.used_count() > 4096);
    }

    #[test]
    fn tiny_last_group_is_dropped() {
        let (l, _) = Layout::new((32_768 + 40) * 4096, &params()).expect("layout");
        assert_eq!(l.groups, 1);
        assert_eq!(l.blocks_count, BlockCount(32_768));
    }

    #[test]
    fn too_small_is_an_error() {
        assert!(matches!(
            Layout::new(1 << 20, &params()),
            Err(Ext4Error::TooSmall { .. })
        ));
    }
}
