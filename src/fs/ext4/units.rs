//! Units of the filesystem as newtypes: a block number ([`BlockNo`]), a
//! number of blocks ([`BlockCount`]) and a block group ([`GroupNo`]), so
//! blocks, bytes and groups can not be mixed up.
//!
//! Conversions to bytes and every sum that could leave `u64` are checked and
//! fail with [`Ext4Error::Internal`] naming the value: the layout bounds all
//! of them far below 2^64 (a filesystem has at most 2^64 / 4096 blocks), so a
//! failure is a builder bug, never a consequence of input.

use super::error::Ext4Error;

/// The block size: 4 KiB (docs/design.md, "The ext4 builder"): the ext4
/// default and the page size. The unit every other type here counts in,
/// so it lives here and the layout takes it from here (never both ways).
pub const BLOCK_SIZE: u64 = 4096;
/// [`BLOCK_SIZE`] for buffer lengths.
pub(crate) const BLOCK_SIZE_USIZE: usize = 4096;
/// `s_log_block_size`: the block size is `1024 << 2`.
pub(crate) const LOG_BLOCK_SIZE: u32 = 2;
/// Blocks per group: one bitmap block's bits.
pub(crate) const BLOCKS_PER_GROUP: u64 = 8 * BLOCK_SIZE;

/// `i_blocks` counts 512-byte sectors.
const SECTORS_PER_BLOCK: u64 = BLOCK_SIZE / 512;

fn overflow(what: &str, a: u64, b: u64) -> Ext4Error {
    Ext4Error::Internal(format!("{what} overflows 64 bits ({a}, {b})"))
}

/// A physical block number: 4 KiB blocks from the start of the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct BlockNo(pub u64);

/// A number of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct BlockCount(pub u64);

/// A block group number (groups of [`BLOCKS_PER_GROUP`] blocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct GroupNo(pub u64);

impl BlockNo {
    /// The raw block number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Byte offset of the block in the filesystem.
    pub fn byte_offset(self) -> Result<u64, Ext4Error> {
        self.0
            .checked_mul(BLOCK_SIZE)
            .ok_or_else(|| overflow("byte offset of block", self.0, BLOCK_SIZE))
    }

    /// The block `n` blocks further, if it is representable.
    pub fn checked_add(self, n: BlockCount) -> Option<Self> {
        self.0.checked_add(n.0).map(Self)
    }

    /// The block `n` blocks further.
    pub fn add(self, n: BlockCount) -> Result<Self, Ext4Error> {
        self.checked_add(n)
            .ok_or_else(|| overflow("block number", self.0, n.0))
    }

    /// Blocks from `base` to `self`, if `base <= self`.
    pub fn since(self, base: Self) -> Option<BlockCount> {
        self.0.checked_sub(base.0).map(BlockCount)
    }
}

impl BlockCount {
    /// No blocks.
    pub const ZERO: Self = Self(0);

    /// The raw count.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Blocks needed to hold `bytes` bytes.
    pub const fn for_bytes(bytes: u64) -> Self {
        Self(bytes.div_ceil(BLOCK_SIZE))
    }

    /// Size in bytes.
    pub fn bytes(self) -> Result<u64, Ext4Error> {
        self.0
            .checked_mul(BLOCK_SIZE)
            .ok_or_else(|| overflow("byte size of blocks", self.0, BLOCK_SIZE))
    }

    /// Size in bytes, saturating at `u64::MAX` (for figures in messages).
    pub fn bytes_saturating(self) -> u64 {
        self.0.saturating_mul(BLOCK_SIZE)
    }

    /// Size in the 512-byte sectors of `i_blocks`.
    pub fn sectors(self) -> Result<u64, Ext4Error> {
        self.0
            .checked_mul(SECTORS_PER_BLOCK)
            .ok_or_else(|| overflow("sector count of blocks", self.0, SECTORS_PER_BLOCK))
    }

    /// Sum, if representable.
    pub fn checked_add(self, n: Self) -> Option<Self> {
        self.0.checked_add(n.0).map(Self)
    }

    /// Sum.
    pub fn add(self, n: Self) -> Result<Self, Ext4Error> {
        self.checked_add(n)
            .ok_or_else(|| overflow("block count", self.0, n.0))
    }

    /// Difference, or zero.
    pub fn saturating_sub(self, n: Self) -> Self {
        Self(self.0.saturating_sub(n.0))
    }

    /// Sum of `counts`.
    pub fn sum(counts: impl IntoIterator<Item = Self>) -> Result<Self, Ext4Error> {
        counts.into_iter().try_fold(Self::ZERO, Self::add)
    }
}

impl GroupNo {
    /// The raw group number.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The group's first block.
    pub fn first_block(self) -> Result<BlockNo, Ext4Error> {
        self.0
            .checked_mul(BLOCKS_PER_GROUP)
            .map(BlockNo)
            .ok_or_else(|| overflow("first block of group", self.0, BLOCKS_PER_GROUP))
    }

    /// Index into per-group tables.
    pub fn index(self) -> usize {
        super::bytes::us(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_are_checked() {
        assert_eq!(BlockNo(3).byte_offset().expect("small"), 3 * 4096);
        assert!(BlockNo(u64::MAX / 4096 + 1).byte_offset().is_err());
        assert_eq!(BlockCount::for_bytes(0), BlockCount(0));
        assert_eq!(BlockCount::for_bytes(4097), BlockCount(2));
        assert_eq!(BlockCount(2).sectors().expect("small"), 16);
        assert!(BlockCount(u64::MAX).bytes().is_err());
        assert_eq!(BlockCount(u64::MAX).bytes_saturating(), u64::MAX);
        assert_eq!(GroupNo(2).first_block().expect("small"), BlockNo(65_536));
        assert!(BlockNo(u64::MAX).checked_add(BlockCount(1)).is_none());
        assert_eq!(BlockNo(10).since(BlockNo(4)), Some(BlockCount(6)));
        assert_eq!(BlockNo(4).since(BlockNo(10)), None);
        assert_eq!(
            BlockCount::sum([BlockCount(1), BlockCount(2)]).expect("small"),
            BlockCount(3)
        );
        assert!(BlockCount::sum([BlockCount(u64::MAX), BlockCount(1)]).is_err());
    }
}
