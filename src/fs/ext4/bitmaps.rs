//! Block and inode bitmaps of every group (step 5 of `finish`), and the
//! group descriptors they determine (free counts, bitmap checksums, flags).

use super::alloc::Run;
use super::builder::Ext4Builder;
use super::bytes::{lo32, us};
use super::csum;
use super::error::Ext4Error;
use super::finish::InodeUsage;
use super::group::{set_bits, GroupDesc, BG_INODE_UNINIT, BG_INODE_ZEROED};
use super::layout::{BLOCKS_PER_GROUP, BLOCK_SIZE, BLOCK_SIZE_USIZE};

impl Ext4Builder {
    /// Write both bitmaps of every group; returns the groups' descriptors.
    pub(super) fn write_bitmaps(&self, usage: &InodeUsage) -> Result<Vec<GroupDesc>, Ext4Error> {
        let mut descs = Vec::with_capacity(us(self.layout.groups));
        let runs: Vec<Run> = self.alloc.used_runs().collect();
        let mut first_run = 0usize;
        for g in 0..self.layout.groups {
            let meta = self.layout.groups_meta[us(g)];
            let (bb, used_blocks) = self.block_bitmap(g, &runs, &mut first_run);
            self.window.write_at(meta.block_bitmap * BLOCK_SIZE, &bb)?;
            let used_inodes = usage.used[us(g)];
            let ib = self.inode_bitmap(used_inodes);
            self.window.write_at(meta.inode_bitmap * BLOCK_SIZE, &ib)?;
            let ipg = self.layout.inodes_per_group;
            let mut flags = BG_INODE_ZEROED;
            if used_inodes == 0 {
                flags |= BG_INODE_UNINIT;
            }
            descs.push(GroupDesc {
                block_bitmap: meta.block_bitmap,
                inode_bitmap: meta.inode_bitmap,
                inode_table: meta.inode_table,
                free_blocks: lo32(self.layout.blocks_in_group(g) - used_blocks), // <= 32768
                free_inodes: lo32(ipg - used_inodes),                            // <= 32768
                used_dirs: usage.dirs[us(g)],
                flags,
                block_bitmap_csum: csum::raw(self.fs_seed, &bb[..us(BLOCKS_PER_GROUP / 8)]),
                inode_bitmap_csum: csum::raw(self.fs_seed, &ib[..us(ipg / 8)]),
                itable_unused: lo32(ipg - used_inodes),
            });
        }
        Ok(descs)
    }

    /// Group `g`'s block bitmap and its used block count, from the
    /// allocator's sorted used runs; `first_run` advances past runs that end
    /// before this group (groups are visited in order).
    fn block_bitmap(&self, g: u64, runs: &[Run], first_run: &mut usize) -> (Vec<u8>, u64) {
        let gstart = g * BLOCKS_PER_GROUP;
        let gblocks = self.layout.blocks_in_group(g);
        let gend = gstart + gblocks;
        let mut bb = vec![0u8; BLOCK_SIZE_USIZE];
        let mut used = 0u64;
        while *first_run < runs.len() && runs[*first_run].end() <= gstart {
            *first_run += 1;
        }
        for r in runs[*first_run..].iter().take_while(|r| r.start < gend) {
            let s = r.start.max(gstart);
            let e = r.end().min(gend);
            set_bits(&mut bb, us(s - gstart), us(e - gstart));
            used += e - s;
        }
        // Bits past the end of a short last group are set (in use).
        set_bits(&mut bb, us(gblocks), BLOCK_SIZE_USIZE * 8);
        (bb, used)
    }

    /// An inode bitmap with the first `used` inodes in use; bits past the
    /// group's inode count are set, as the format requires.
    fn inode_bitmap(&self, used: u64) -> Vec<u8> {
        let mut ib = vec![0u8; BLOCK_SIZE_USIZE];
        set_bits(&mut ib, 0, us(used));
        set_bits(
            &mut ib,
            us(self.layout.inodes_per_group),
            BLOCK_SIZE_USIZE * 8,
        );
        ib
    }
}
