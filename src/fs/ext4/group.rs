//! Block group descriptors (64 bytes, `64bit`) and bitmap checksums.

use super::bytes::{hi16, hi32, lo16, lo32, put_u16, put_u32};
use super::csum;
use super::layout::DESC_SIZE_USIZE;
use super::units::BlockNo;

/// `EXT4_BG_INODE_UNINIT`: no inode of the group is in use; its inode
/// bitmap and table need not be read.
pub(crate) const BG_INODE_UNINIT: u16 = 0x1;
/// `EXT4_BG_INODE_ZEROED`: the inode table is zeroed (the builder zeroes
/// the whole window before laying out).
pub(crate) const BG_INODE_ZEROED: u16 = 0x4;

/// What one group descriptor says.
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupDesc {
    pub block_bitmap: BlockNo,
    pub inode_bitmap: BlockNo,
    pub inode_table: BlockNo,
    pub free_blocks: u32,
    pub free_inodes: u32,
    pub used_dirs: u32,
    pub flags: u16,
    pub block_bitmap_csum: u32,
    pub inode_bitmap_csum: u32,
    pub itable_unused: u32,
}

impl GroupDesc {
    /// Serialise descriptor `group` with its crc32c (low 16 bits).
    pub fn encode(&self, group: u32, fs_seed: u32) -> [u8; DESC_SIZE_USIZE] {
        let mut b = [0u8; DESC_SIZE_USIZE];
        put_u32(&mut b, 0x00, lo32(self.block_bitmap.get())); // bg_block_bitmap_lo
        put_u32(&mut b, 0x04, lo32(self.inode_bitmap.get())); // bg_inode_bitmap_lo
        put_u32(&mut b, 0x08, lo32(self.inode_table.get())); // bg_inode_table_lo
        put_u16(&mut b, 0x0C, lo16(self.free_blocks)); // bg_free_blocks_count_lo
        put_u16(&mut b, 0x0E, lo16(self.free_inodes)); // bg_free_inodes_count_lo
        put_u16(&mut b, 0x10, lo16(self.used_dirs)); // bg_used_dirs_count_lo
        put_u16(&mut b, 0x12, self.flags); // bg_flags
        put_u16(&mut b, 0x18, lo16(self.block_bitmap_csum)); // bg_block_bitmap_csum_lo
        put_u16(&mut b, 0x1A, lo16(self.inode_bitmap_csum)); // bg_inode_bitmap_csum_lo
        put_u16(&mut b, 0x1C, lo16(self.itable_unused)); // bg_itable_unused_lo
        put_u32(&mut b, 0x20, hi32(self.block_bitmap.get())); // bg_block_bitmap_hi
        put_u32(&mut b, 0x24, hi32(self.inode_bitmap.get())); // bg_inode_bitmap_hi
        put_u32(&mut b, 0x28, hi32(self.inode_table.get())); // bg_inode_table_hi
        put_u16(&mut b, 0x2C, hi16(self.free_blocks)); // bg_free_blocks_count_hi
        put_u16(&mut b, 0x2E, hi16(self.free_inodes)); // bg_free_inodes_count_hi
        put_u16(&mut b, 0x30, hi16(self.used_dirs)); // bg_used_dirs_count_hi
        put_u16(&mut b, 0x32, hi16(self.itable_unused)); // bg_itable_unused_hi
        put_u16(&mut b, 0x38, hi16(self.block_bitmap_csum)); // bg_block_bitmap_csum_hi
        put_u16(&mut b, 0x3A, hi16(self.inode_bitmap_csum)); // bg_inode_bitmap_csum_hi
                                                             // bg_checksum (0x1E) is zero here; the crc covers the group number
                                                             // then the whole descriptor.
        let c = csum::raw(csum::raw(fs_seed, &group.to_le_bytes()), &b);
        put_u16(&mut b, 0x1E, lo16(c));
        b
    }
}

/// Set bits `[from, to)` of a bitmap (`to` is clamped to the bitmap).
// `to <= bitmap.len() * 8 <= isize::MAX` after the clamp and `i <= to`
// throughout, so `i + 8` and the increments can not overflow.
#[allow(clippy::arithmetic_side_effects)]
pub(crate) fn set_bits(bitmap: &mut [u8], from: usize, to: usize) {
    let to = to.min(bitmap.len().saturating_mul(8));
    let mut i = from;
    while i < to && !i.is_multiple_of(8) {
        bitmap[i / 8] |= 1 << (i % 8);
        i += 1;
    }
    while i + 8 <= to {
        bitmap[i / 8] = 0xFF;
        i += 8;
    }
    while i < to {
        bitmap[i / 8] |= 1 << (i % 8);
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_bits_ranges() {
        let mut b = [0u8; 4];
        set_bits(&mut b, 3, 19);
        assert_eq!(b, [0xF8, 0xFF, 0x07, 0x00]);
        let mut c = [0u8; 2];
        set_bits(&mut c, 0, 16);
        assert_eq!(c, [0xFF, 0xFF]);
    }
}
