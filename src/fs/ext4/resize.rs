//! The resize inode (inode 7): a double-indirect map whose indirect blocks
//! are the primary reserved GDT blocks, each listing its backup copies, so
//! `resize2fs` can grow the descriptor table online or offline.

use super::builder::Ext4Builder;
use super::bytes::{lo32, put_u32, us};
use super::error::Ext4Error;
use super::inode::{RawInode, S_IFREG};
use super::layout::{ADDR_PER_BLOCK, BLOCKS_PER_GROUP, BLOCK_SIZE, BLOCK_SIZE_USIZE};
use super::params::InodeMeta;

/// `EXT2_DIND_BLOCK`: index of the double-indirect pointer in `i_block`.
const DIND_BLOCK: usize = 13;

impl Ext4Builder {
    /// The resize inode, or `None` when the layout reserves no GDT blocks.
    pub(super) fn resize_inode(&self) -> Option<RawInode> {
        let dind = self.layout.resize_dind?;
        let mut i_block = [0u8; 60];
        // < 2^32: the layout only has a resize inode below 2^32 blocks.
        put_u32(&mut i_block, DIND_BLOCK * 4, lo32(dind));
        let rsv = self.layout.reserved_gdt_blocks;
        let backups = self.layout.backup_groups().count() as u64;
        let apb = ADDR_PER_BLOCK;
        Some(RawInode {
            mode: S_IFREG | 0o600,
            meta: InodeMeta::new(0o600, self.params.time),
            // What mke2fs records: the span a double-indirect map covers.
            size: (apb * apb + apb + 12) * BLOCK_SIZE,
            links: 1,
            sectors: (1 + rsv * (1 + backups)) * (BLOCK_SIZE / 512),
            flags: 0,
            i_block,
        })
    }

    /// The resize inode's double-indirect block and the primary reserved GDT
    /// blocks, which (as its indirect blocks) list their backup copies.
    pub(super) fn write_resize_blocks(&self) -> Result<(), Ext4Error> {
        let Some(dind) = self.layout.resize_dind else {
            return Ok(());
        };
        let rsv = self.layout.reserved_gdt_blocks;
        let desc = self.layout.desc_blocks;
        let backups: Vec<u64> = self.layout.backup_groups().collect();
        let mut dind_buf = vec![0u8; BLOCK_SIZE_USIZE];
        for i in 0..rsv {
            let pblk = 1 + desc + i;
            let slot = us((desc + i) % ADDR_PER_BLOCK);
            put_u32(&mut dind_buf, slot * 4, lo32(pblk));
            let mut ind = vec![0u8; BLOCK_SIZE_USIZE];
            for (k, g) in backups.iter().enumerate().take(us(ADDR_PER_BLOCK)) {
                put_u32(&mut ind, k * 4, lo32(pblk + g * BLOCKS_PER_GROUP));
            }
            self.window.write_at(pblk * BLOCK_SIZE, &ind)?;
        }
        self.window.write_at(dind * BLOCK_SIZE, &dind_buf)?;
        Ok(())
    }
}
