//! The ext4 superblock (1024 bytes) and its backups.

use super::bytes::{hi32, lo32, put_u16, put_u32, put_u64, put_u8};
use super::csum;
use super::layout::{
    Layout, BLOCKS_PER_GROUP, DESC_SIZE_U16, FIRST_INO, INODE_SIZE_U16, LOG_BLOCK_SIZE,
    LOG_GROUPS_PER_FLEX_U8,
};

pub(crate) const EXT4_SUPER_MAGIC: u16 = 0xEF53;

// s_feature_compat
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_EXT_ATTR: u32 = 0x8;
const COMPAT_RESIZE_INODE: u32 = 0x10;
const COMPAT_DIR_INDEX: u32 = 0x20;
// s_feature_incompat
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_EXTENTS: u32 = 0x40;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_FLEX_BG: u32 = 0x200;
// s_feature_ro_compat
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_HUGE_FILE: u32 = 0x8;
const RO_COMPAT_DIR_NLINK: u32 = 0x20;
const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
// s_default_mount_opts: user_xattr and acl, as mke2fs.conf's default_mntopts.
const DEFM_XATTR_USER: u32 = 0x4;
const DEFM_ACL: u32 = 0x8;
// s_flags
const FLAGS_SIGNED_HASH: u32 = 0x1;
const FLAGS_UNSIGNED_HASH: u32 = 0x2;
/// `s_def_hash_version`: half MD4, mke2fs's default.
const HASH_HALF_MD4: u8 = 1;
/// `s_jnl_backup_type`: `EXT3_JNL_BACKUP_BLOCKS`.
const JNL_BACKUP_BLOCKS: u8 = 1;
/// `s_checksum_type`: crc32c.
const CHECKSUM_CRC32C: u8 = 1;
/// Journal inode number.
pub(crate) const JOURNAL_INO: u32 = 8;

/// Everything the superblock says that is not in the layout.
pub(crate) struct SuperInfo<'a> {
    pub layout: &'a Layout,
    pub free_blocks: u64,
    pub free_inodes: u64,
    pub uuid: [u8; 16],
    pub label: [u8; 16],
    pub hash_seed: [u8; 16],
    pub signed_hash: bool,
    pub time: u32,
    /// The journal inode's i_block, i_size_high and i_size (`s_jnl_blocks`).
    pub jnl_blocks: [u32; 17],
}

/// Serialise the superblock copy stored in group `group`.
pub(crate) fn encode(info: &SuperInfo<'_>, group: u64) -> Vec<u8> {
    let l = info.layout;
    let mut b = vec![0u8; 1024];
    let inodes = l.inodes_count();
    put_u32(&mut b, 0x00, lo32(inodes)); // s_inodes_count
    put_u32(&mut b, 0x04, lo32(l.blocks_count.get())); // s_blocks_count_lo
    put_u32(&mut b, 0x08, lo32(l.reserved_blocks.get())); // s_r_blocks_count_lo
    put_u32(&mut b, 0x0C, lo32(info.free_blocks)); // s_free_blocks_count_lo
    put_u32(&mut b, 0x10, lo32(info.free_inodes)); // s_free_inodes_count
    put_u32(&mut b, 0x14, 0); // s_first_data_block (0 for 4 KiB blocks)
    put_u32(&mut b, 0x18, LOG_BLOCK_SIZE); // s_log_block_size
    put_u32(&mut b, 0x1C, LOG_BLOCK_SIZE); // s_log_cluster_size
    put_u32(&mut b, 0x20, lo32(BLOCKS_PER_GROUP)); // s_blocks_per_group
    put_u32(&mut b, 0x24, lo32(BLOCKS_PER_GROUP)); // s_clusters_per_group
    put_u32(&mut b, 0x28, lo32(l.inodes_per_group)); // s_inodes_per_group
    put_u32(&mut b, 0x2C, 0); // s_mtime: never mounted
    put_u32(&mut b, 0x30, info.time); // s_wtime
    put_u16(&mut b, 0x34, 0); // s_mnt_count
    put_u16(&mut b, 0x36, 0xFFFF); // s_max_mnt_count: -1, no forced checks
    put_u16(&mut b, 0x38, EXT4_SUPER_MAGIC); // s_magic
    put_u16(&mut b, 0x3A, 1); // s_state: cleanly unmounted
    put_u16(&mut b, 0x3C, 1); // s_errors: continue
    put_u32(&mut b, 0x40, info.time); // s_lastcheck
    put_u32(&mut b, 0x48, 0); // s_creator_os: Linux
    put_u32(&mut b, 0x4C, 1); // s_rev_level: dynamic
    put_u32(&mut b, 0x54, FIRST_INO); // s_first_ino
    put_u16(&mut b, 0x58, INODE_SIZE_U16); // s_inode_size
    put_u16(&mut b, 0x5A, (group & 0xFFFF) as u16); // s_block_group_nr
    let mut compat = COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX;
    if l.reserved_gdt_blocks.get() > 0 {
        compat |= COMPAT_RESIZE_INODE;
    }
    put_u32(&mut b, 0x5C, compat); // s_feature_compat
    put_u32(
        &mut b,
        0x60,
        INCOMPAT_FILETYPE | INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG,
    ); // s_feature_incompat
    put_u32(
        &mut b,
        0x64,
        RO_COMPAT_SPARSE_SUPER
            | RO_COMPAT_LARGE_FILE
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
            | RO_COMPAT_METADATA_CSUM,
    ); // s_feature_ro_compat
    b[0x68..0x78].copy_from_slice(&info.uuid); // s_uuid
    b[0x78..0x88].copy_from_slice(&info.label); // s_volume_name
    put_u16(&mut b, 0xCE, (l.reserved_gdt_blocks.get() & 0xFFFF) as u16); // s_reserved_gdt_blocks (<= 1024)
    put_u32(&mut b, 0xE0, JOURNAL_INO); // s_journal_inum
    b[0xEC..0xFC].copy_from_slice(&info.hash_seed); // s_hash_seed
    put_u8(&mut b, 0xFC, HASH_HALF_MD4); // s_def_hash_version
    put_u8(&mut b, 0xFD, JNL_BACKUP_BLOCKS); // s_jnl_backup_type
    put_u16(&mut b, 0xFE, DESC_SIZE_U16); // s_desc_size
    put_u32(&mut b, 0x100, DEFM_XATTR_USER | DEFM_ACL); // s_default_mount_opts
    put_u32(&mut b, 0x108, info.time); // s_mkfs_time
    for (slot, w) in b[0x10C..0x150].chunks_exact_mut(4).zip(info.jnl_blocks) {
        put_u32(slot, 0, w); // s_jnl_blocks[i]
    }
    put_u32(&mut b, 0x150, hi32(l.blocks_count.get())); // s_blocks_count_hi
    put_u32(&mut b, 0x154, hi32(l.reserved_blocks.get())); // s_r_blocks_count_hi
    put_u32(&mut b, 0x158, hi32(info.free_blocks)); // s_free_blocks_count_hi
    put_u16(&mut b, 0x15C, super::inode::EXTRA_ISIZE); // s_min_extra_isize
    put_u16(&mut b, 0x15E, super::inode::EXTRA_ISIZE); // s_want_extra_isize
    let flags = if info.signed_hash {
        FLAGS_SIGNED_HASH
    } else {
        FLAGS_UNSIGNED_HASH
    };
    put_u32(&mut b, 0x160, flags); // s_flags
    put_u8(&mut b, 0x174, LOG_GROUPS_PER_FLEX_U8); // s_log_groups_per_flex
    put_u8(&mut b, 0x175, CHECKSUM_CRC32C); // s_checksum_type
    put_u64(&mut b, 0x178, 0); // s_kbytes_written
    let c = csum::raw(!0, &b[..0x3FC]);
    put_u32(&mut b, 0x3FC, c); // s_checksum
    b
}

/// Fields read back from an existing superblock that the new one keeps.
#[derive(Debug, Clone)]
pub struct OldSuperblock {
    /// `s_uuid`.
    pub uuid: [u8; 16],
    /// `s_volume_name`, trailing NULs stripped.
    pub label: String,
    /// `s_hash_seed`.
    pub hash_seed: [u8; 16],
    /// Signed directory hash (`s_flags`).
    pub signed_hash: bool,
    /// `s_reserved`-percentage equivalent: reserved / total blocks, in percent.
    pub reserved_percent: u8,
}

impl OldSuperblock {
    /// Parse the 1024-byte superblock at byte 1024 of an ext4 filesystem.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 1024 || super::bytes::get_u16(b, 0x38) != EXT4_SUPER_MAGIC {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[0x68..0x78]);
        let mut hash_seed = [0u8; 16];
        hash_seed.copy_from_slice(&b[0xEC..0xFC]);
        let label_raw = &b[0x78..0x88];
        let end = label_raw.iter().position(|&c| c == 0).unwrap_or(16);
        let label = String::from_utf8_lossy(&label_raw[..end]).into_owned();
        let flags = super::bytes::get_u32(b, 0x160);
        let blocks = u64::from(super::bytes::get_u32(b, 0x04))
            | (u64::from(super::bytes::get_u32(b, 0x150)) << 32);
        let reserved = u64::from(super::bytes::get_u32(b, 0x08))
            | (u64::from(super::bytes::get_u32(b, 0x154)) << 32);
        let reserved_percent = if blocks == 0 {
            0
        } else {
            u8::try_from(reserved.saturating_mul(100).div_ceil(blocks).min(50)).unwrap_or(0)
        };
        Some(Self {
            uuid,
            label,
            hash_seed,
            signed_hash: flags & FLAGS_UNSIGNED_HASH == 0,
            reserved_percent,
        })
    }
}
