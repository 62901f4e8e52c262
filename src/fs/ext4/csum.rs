//! crc32c in the form ext4 and jbd2 use it.
//!
//! The kernel's `crc32c(seed, data)` is the raw CRC register update: no
//! initial or final inversion. The `crc32c` crate implements the standard
//! CRC-32C (initial value and final xor `0xFFFF_FFFF`), and its `append`
//! continues a standard value. So `raw(seed, d) = !append(!seed, d)`.

/// The kernel's `crc32c(seed, data)` (no pre- or post-inversion).
pub(crate) fn raw(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

/// Per-filesystem checksum seed: `crc32c(~0, uuid)` (no `metadata_csum_seed`).
pub(crate) fn fs_seed(uuid: &[u8; 16]) -> u32 {
    raw(!0, uuid)
}

/// Per-inode seed used by inodes, extent blocks and directory blocks:
/// `crc32c(crc32c(fs_seed, inode number), generation)`.
pub(crate) fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    raw(raw(fs_seed, &ino.to_le_bytes()), &generation.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_relates_to_standard_crc32c() {
        // Standard CRC-32C check value of "123456789" is 0xE3069283.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(!raw(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn raw_chains() {
        let whole = raw(7, b"hello world");
        let split = raw(raw(7, b"hello "), b"world");
        assert_eq!(whole, split);
    }
}
