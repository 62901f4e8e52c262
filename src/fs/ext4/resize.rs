//! The resize inode (inode 7): a double-indirect map whose indirect blocks
//! are the primary reserved GDT blocks, each listing its backup copies, so
//! `resize2fs` can grow the descriptor table online or offline.

use super::builder::Ext4Builder;
use super::bytes::{lo32, put_u32, u64_of, us};
use super::error::Ext4Error;
use super::inode::{RawInode, S_IFREG};
use super::layout::{ADDR_PER_BLOCK, BLOCK_SIZE, BLOCK_SIZE_USIZE};
use super::params::InodeMeta;
use super::units::{BlockCount, BlockNo};

/// `EXT2_DIND_BLOCK`: index of the double-indirect pointer in `i_block`.
const DIND_BLOCK: usize = 13;
/// What mke2fs records as the resize inode's size: the span a
/// double-indirect map covers, `(apb^2 + apb + 12)` blocks.
const RESIZE_INODE_SIZE: u64 = (ADDR_PER_BLOCK * ADDR_PER_BLOCK + ADDR_PER_BLOCK + 12) * BLOCK_SIZE;

impl Ext4Builder {
    /// The resize inode, or `None` when the layout reserves no GDT blocks.
    pub(super) fn resize_inode(&self) -> Result<Option<RawInode>, Ext4Error> {
        let Some(dind) = self.layout.resize_dind else {
            return Ok(None);
        };
        let mut i_block = [0u8; 60];
        // < 2^32: the layout only has a resize inode below 2^32 blocks.
        put_u32(&mut i_block, DIND_BLOCK * 4, lo32(dind.get()));
        // The dind block, plus each reserved GDT block and its backups:
        // rsv <= 1024 and backups < 2^37, so the product fits.
        let rsv = self.layout.reserved_gdt_blocks.get();
        let copies = u64_of(self.layout.backup_groups().count()).saturating_add(1);
        let blocks = BlockCount(rsv.saturating_mul(copies).saturating_add(1));
        Ok(Some(RawInode {
            mode: S_IFREG | 0o600,
            meta: InodeMeta::new(0o600, self.params.time),
            size: RESIZE_INODE_SIZE,
            links: 1,
            sectors: blocks.sectors()?,
            flags: 0,
            i_block,
        }))
    }

    /// The resize inode's double-indirect block and the primary reserved GDT
    /// blocks, which (as its indirect blocks) list their backup copies.
    pub(super) fn write_resize_blocks(&self) -> Result<(), Ext4Error> {
        let Some(dind) = self.layout.resize_dind else {
            return Ok(());
        };
        let rsv = self.layout.reserved_gdt_blocks.get();
        let desc = self.layout.desc_blocks.get();
        let backups: Vec<BlockNo> = self
            .layout
            .backup_groups()
            .map(|g| g.first_block())
            .collect::<Result<_, _>>()?;
        let mut dind_buf = vec![0u8; BLOCK_SIZE_USIZE];
        // Reserved GDT block i sits right after the superblock (block 0) and
        // the descriptor table: block 1 + desc + i, well below 2^32 here.
        for i in 0..rsv {
            let index = desc.saturating_add(i);
            let pblk = BlockCount(index.saturating_add(1));
            let slot = us(index % ADDR_PER_BLOCK);
            put_u32(&mut dind_buf, slot.saturating_mul(4), lo32(pblk.get())); // < 4096
            let mut ind = vec![0u8; BLOCK_SIZE_USIZE];
            for (entry, group_start) in ind.chunks_exact_mut(4).zip(&backups) {
                put_u32(entry, 0, lo32(group_start.add(pblk)?.get()));
            }
            self.window
                .write_at(BlockNo(pblk.get()).byte_offset()?, &ind)?;
        }
        self.window.write_at(dind.byte_offset()?, &dind_buf)?;
        Ok(())
    }
}
