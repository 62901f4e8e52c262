//! The jbd2 journal superblock (big-endian), clean and empty.

use super::bytes::{put_be32, put_u8};
use super::csum;

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
