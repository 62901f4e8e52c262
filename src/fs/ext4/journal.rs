//! The journal: its jbd2 superblock (big-endian), clean and empty, and the
//! journal inode (inode 8) with the superblock's backup of its block map.

use super::builder::Ext4Builder;
use super::bytes::{get_u32, hi32, lo32, put_be32, put_u8, u64_of};
use super::csum;
use super::error::Ext4Error;
use super::extent::{self, runs_to_extents};
use super::inode::{RawInode, EXTENTS_FL, S_IFREG};
use super::layout::BLOCK_SIZE;
use super::params::InodeMeta;
use super::superblock::JOURNAL_INO;
use super::units::BlockCount;

const JBD2_MAGIC: u32 = 0xC03B_3998;
/// `JBD2_SUPERBLOCK_V2`.
const BLOCKTYPE_SB_V2: u32 = 4;
/// `JBD2_FEATURE_INCOMPAT_64BIT`: block numbers in descriptors are 64-bit
/// (the filesystem is `64bit`).
const INCOMPAT_64BIT: u32 = 0x2;
/// `JBD2_FEATURE_INCOMPAT_CSUM_V3`: checksummed journal (what the kernel
/// selects for a `metadata_csum` filesystem).
const INCOMPAT_CSUM_V3: u32 = 0x10;
/// `JBD2_CRC32C_CHKSUM`.
const CHECKSUM_TYPE_CRC32C: u8 = 4;
/// `sizeof(journal_superblock_t)`, the range covered by its checksum.
pub(crate) const JSB_SIZE: usize = 1024;

/// A v2 superblock for an internal journal of `maxlen` blocks: clean
/// (`s_start = 0`), expecting transaction 1, one user (the filesystem).
pub(crate) fn superblock(block_size: u32, maxlen: u32, fs_uuid: &[u8; 16]) -> Vec<u8> {
    let mut b = vec![0u8; JSB_SIZE];
    put_be32(&mut b, 0x00, JBD2_MAGIC); // h_magic
    put_be32(&mut b, 0x04, BLOCKTYPE_SB_V2); // h_blocktype
    put_be32(&mut b, 0x08, 0); // h_sequence
    put_be32(&mut b, 0x0C, block_size); // s_blocksize
    put_be32(&mut b, 0x10, maxlen); // s_maxlen
    put_be32(&mut b, 0x14, 1); // s_first
    put_be32(&mut b, 0x18, 1); // s_sequence
    put_be32(&mut b, 0x1C, 0); // s_start: 0 = clean, nothing to replay
    put_be32(&mut b, 0x28, INCOMPAT_64BIT | INCOMPAT_CSUM_V3); // s_feature_incompat
    b[0x30..0x40].copy_from_slice(fs_uuid); // s_uuid
    put_be32(&mut b, 0x40, 1); // s_nr_users
    put_u8(&mut b, 0x50, CHECKSUM_TYPE_CRC32C); // s_checksum_type
                                                // s_users stays zero: an internal journal has no external users list.
    let c = csum::raw(!0, &b);
    put_be32(&mut b, 0xFC, c); // s_checksum
    b
}

impl Ext4Builder {
    /// The journal inode's extent tree over the runs the layout placed.
    fn journal_extent_tree(&self) -> Result<extent::Tree, Ext4Error> {
        let extents = runs_to_extents(&self.layout.journal)?;
        let seed = csum::inode_seed(self.fs_seed, JOURNAL_INO, 0);
        extent::build(&extents, &self.journal_tree, seed).map_err(Ext4Error::Internal)
    }

    /// The journal inode (writing its extent tree blocks, if any).
    pub(super) fn journal_inode(&self) -> Result<RawInode, Ext4Error> {
        let tree = self.journal_extent_tree()?;
        self.write_tree(&tree)?;
        let tree_blocks = BlockCount(u64_of(self.journal_tree.len()));
        let blocks = self.layout.journal_blocks.add(tree_blocks)?;
        Ok(RawInode {
            mode: S_IFREG | 0o600,
            meta: InodeMeta::new(0o600, self.params.time),
            size: self.layout.journal_blocks.bytes()?,
            links: 1,
            sectors: blocks.sectors()?,
            flags: EXTENTS_FL,
            i_block: tree.i_block,
        })
    }

    /// Write the journal superblock into the journal's first block.
    pub(super) fn write_journal_superblock(&self) -> Result<(), Ext4Error> {
        let jsb = superblock(
            lo32(BLOCK_SIZE),
            lo32(self.layout.journal_blocks.get()), // <= 262144 (layout.rs)
            &self.uuid,
        );
        let j0 = self
            .layout
            .journal
            .first()
            .map(|r| r.start)
            .ok_or_else(|| Ext4Error::Internal("no journal".into()))?;
        self.window.write_at(j0.byte_offset()?, &jsb)?;
        Ok(())
    }

    /// `s_jnl_blocks`: the journal inode's `i_block` words, then
    /// `i_size_high` and `i_size`, so e2fsck can rebuild a lost journal inode.
    pub(super) fn journal_backup(&self) -> Result<[u32; 17], Ext4Error> {
        let jtree = self.journal_extent_tree()?;
        let mut jnl_blocks = [0u32; 17];
        for (w, word) in jnl_blocks.iter_mut().zip(jtree.i_block.chunks_exact(4)) {
            *w = get_u32(word, 0);
        }
        let jsize = self.layout.journal_blocks.bytes()?;
        jnl_blocks[15] = hi32(jsize);
        jnl_blocks[16] = lo32(jsize);
        Ok(jnl_blocks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_covers_the_superblock() {
        let b = superblock(4096, 4096, &[7; 16]);
        let mut z = b.clone();
        z[0xFC..0x100].fill(0);
        let c = csum::raw(!0, &z);
        assert_eq!(&b[0xFC..0x100], &c.to_be_bytes());
        assert_eq!(&b[..4], &[0xC0, 0x3B, 0x39, 0x98]);
    }
}
