//! On-disk inode (256 bytes, `extra_isize` 32) with its crc32c.

use super::bytes::{hi16, hi32, lo16, lo32, put_u16, put_u32};
use super::csum;
use super::layout::INODE_SIZE_USIZE;
use super::params::InodeMeta;

pub(crate) const S_IFIFO: u16 = 0o010000;
pub(crate) const S_IFCHR: u16 = 0o020000;
pub(crate) const S_IFDIR: u16 = 0o040000;
pub(crate) const S_IFBLK: u16 = 0o060000;
pub(crate) const S_IFREG: u16 = 0o100000;
pub(crate) const S_IFLNK: u16 = 0o120000;
pub(crate) const S_IFSOCK: u16 = 0o140000;

/// `EXT4_EXTENTS_FL`: i_block holds an extent tree.
pub(crate) const EXTENTS_FL: u32 = 0x0008_0000;

/// `i_extra_isize`: the fields through `i_projid` (0x80..0xA0).
pub(crate) const EXTRA_ISIZE: u16 = 32;

/// The fields of one inode that the builder sets.
#[derive(Debug, Clone)]
pub(crate) struct RawInode {
    pub mode: u16,
    pub meta: InodeMeta,
    pub size: u64,
    pub links: u16,
    /// Blocks used (data + tree), in 512-byte sectors.
    pub sectors: u64,
    pub flags: u32,
    pub i_block: [u8; 60],
}

impl RawInode {
    /// Serialise at the offsets of the kernel's `struct ext4_inode`, with the
    /// crc32c of `metadata_csum` in `l_i_checksum_lo` / `i_checksum_hi`.
    pub fn encode(&self, ino: u32, fs_seed: u32) -> [u8; INODE_SIZE_USIZE] {
        let mut b = [0u8; INODE_SIZE_USIZE];
        let m = &self.meta;
        put_u16(&mut b, 0x00, self.mode); // i_mode
        put_u16(&mut b, 0x02, lo16(m.uid)); // i_uid
        put_u32(&mut b, 0x04, lo32(self.size)); // i_size_lo
        let (atime, atime_x) = m.atime.encode();
        let (ctime, ctime_x) = m.ctime.encode();
        let (mtime, mtime_x) = m.mtime.encode();
        let (crtime, crtime_x) = m.crtime.encode();
        put_u32(&mut b, 0x08, atime); // i_atime
        put_u32(&mut b, 0x0C, ctime); // i_ctime
        put_u32(&mut b, 0x10, mtime); // i_mtime
        put_u16(&mut b, 0x18, lo16(m.gid)); // i_gid
        put_u16(&mut b, 0x1A, self.links); // i_links_count
        put_u32(&mut b, 0x1C, lo32(self.sectors)); // i_blocks_lo
        put_u32(&mut b, 0x20, self.flags); // i_flags
        b[0x28..0x28 + 60].copy_from_slice(&self.i_block); // i_block
        put_u32(&mut b, 0x64, 0); // i_generation
        put_u32(&mut b, 0x6C, hi32(self.size)); // i_size_high
        put_u16(&mut b, 0x74, (hi32(self.sectors) & 0xFFFF) as u16); // l_i_blocks_high
        put_u16(&mut b, 0x78, hi16(m.uid)); // l_i_uid_high
        put_u16(&mut b, 0x7A, hi16(m.gid)); // l_i_gid_high
        put_u16(&mut b, 0x80, EXTRA_ISIZE); // i_extra_isize
        put_u32(&mut b, 0x84, ctime_x); // i_ctime_extra
        put_u32(&mut b, 0x88, mtime_x); // i_mtime_extra
        put_u32(&mut b, 0x8C, atime_x); // i_atime_extra
        put_u32(&mut b, 0x90, crtime); // i_crtime
        put_u32(&mut b, 0x94, crtime_x); // i_crtime_extra
                                         // Checksum over the whole inode with both checksum fields zero
                                         // (they are: nothing above wrote 0x7C or 0x82).
        let seed = csum::inode_seed(fs_seed, ino, 0);
        let c = csum::raw(seed, &b);
        put_u16(&mut b, 0x7C, lo16(c)); // l_i_checksum_lo
        put_u16(&mut b, 0x82, hi16(c)); // i_checksum_hi
        b
    }
}

/// ext4 directory entry file type for an inode mode.
pub(crate) fn dirent_type(mode: u16) -> u8 {
    match mode & 0o170000 {
        S_IFREG => 1,
        S_IFDIR => 2,
        S_IFCHR => 3,
        S_IFBLK => 4,
        S_IFIFO => 5,
        S_IFSOCK => 6,
        S_IFLNK => 7,
        _ => 0,
    }
}
