//! Block and inode bitmaps of every group (step 5 of `finish`), and the
//! group descriptors they determine (free counts, bitmap checksums, flags).

use super::alloc::Run;
use super::builder::Ext4Builder;
use super::bytes::{lo32, us};
use super::csum;
use super::error::Ext4Error;
use super::finish::InodeUsage;
use super::group::{set_bits, GroupDesc, BG_INODE_UNINIT, BG_INODE_ZEROED};
use super::layout::{BLOCKS_PER_GROUP, BLOCK_SIZE_USIZE};
use super::units::{BlockCount, GroupNo};

/// Bits in one bitmap block.
const BITS: usize = BLOCK_SIZE_USIZE * 8;

impl Ext4Builder {
    /// Write both bitmaps of every group; returns the groups' descriptors.
    pub(super) fn write_bitmaps(&self, usage: &InodeUsage) -> Result<Vec<GroupDesc>, Ext4Error> {
        let mut descs = Vec::with_capacity(us(self.layout.groups));
        let runs: Vec<Run> = self.alloc.used_runs().collect();
        let mut first_run = 0usize;
        let ipg = self.layout.inodes_per_group;
        for g in (0..self.layout.groups).map(GroupNo) {
            let meta = self.layout.group_meta(g)?;
            let (bb, used_blocks) = self.block_bitmap(g, &runs, &mut first_run)?;
            self.window
                .write_at(meta.block_bitmap.byte_offset()?, &bb)?;
            let used_inodes = usage.used.get(g.index()).copied().unwrap_or(0);
            let ib = self.inode_bitmap(used_inodes);
            self.window
                .write_at(meta.inode_bitmap.byte_offset()?, &ib)?;
            let mut flags = BG_INODE_ZEROED;
            if used_inodes == 0 {
                flags |= BG_INODE_UNINIT;
            }
            // Both differences are <= 32768: a group's used blocks are a
            // subset of its blocks, its used inodes a prefix of its inodes.
            let free_blocks = self.layout.blocks_in_group(g).saturating_sub(used_blocks);
            let free_inodes = lo32(ipg.saturating_sub(used_inodes));
            descs.push(GroupDesc {
                block_bitmap: meta.block_bitmap,
                inode_bitmap: meta.inode_bitmap,
                inode_table: meta.inode_table,
                free_blocks: lo32(free_blocks.get()),
                free_inodes,
                used_dirs: usage.dirs.get(g.index()).copied().unwrap_or(0),
                flags,
                block_bitmap_csum: csum::raw(self.fs_seed, &bb[..us(BLOCKS_PER_GROUP / 8)]),
                inode_bitmap_csum: csum::raw(self.fs_seed, &ib[..us(ipg / 8)]),
                itable_unused: free_inodes,
            });
        }
        Ok(descs)
    }

    /// Group `g`'s block bitmap and its used block count, from the
    /// allocator's sorted used runs; `first_run` advances past runs that end
    /// before this group (groups are visited in order).
    fn block_bitmap(
        &self,
        g: GroupNo,
        runs: &[Run],
        first_run: &mut usize,
    ) -> Result<(Vec<u8>, BlockCount), Ext4Error> {
        let gstart = g.first_block()?;
        let gblocks = self.layout.blocks_in_group(g);
        let gend = gstart.add(gblocks)?;
        let mut bb = vec![0u8; BLOCK_SIZE_USIZE];
        let mut used = BlockCount::ZERO;
        while runs.get(*first_run).is_some_and(|r| r.end() <= gstart) {
            *first_run = first_run.saturating_add(1);
        }
        let in_group = runs.get(*first_run..).unwrap_or_default();
        for r in in_group.iter().take_while(|r| r.start < gend) {
            // Clipped to the group: s <= e, both within [gstart, gend).
            let s = r.start.max(gstart);
            let e = r.end().min(gend);
            let (from, to) = (s.since(gstart), e.since(gstart));
            let (Some(from), Some(to)) = (from, to) else {
                return Err(Ext4Error::Internal(format!(
                    "run {r:?} outside group {g:?}"
                )));
            };
            set_bits(&mut bb, us(from.get()), us(to.get()));
            used = used.add(to.saturating_sub(from))?;
        }
        // Bits past the end of a short last group are set (in use).
        set_bits(&mut bb, us(gblocks.get()), BITS);
        Ok((bb, used))
    }

    /// An inode bitmap with the first `used` inodes in use; bits past the
    /// group's inode count are set, as the format requires.
    fn inode_bitmap(&self, used: u64) -> Vec<u8> {
        let mut ib = vec![0u8; BLOCK_SIZE_USIZE];
        set_bits(&mut ib, 0, us(used));
        set_bits(&mut ib, us(self.layout.inodes_per_group), BITS);
        ib
    }
}
