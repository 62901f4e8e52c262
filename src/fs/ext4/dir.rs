//! Linear directory blocks with the `metadata_csum` tail.
//!
//! Entries are `ext4_dir_entry_2` (inode, rec_len, name_len, file_type, name)
//! padded to 4 bytes; the last entry of a block stretches to the 12-byte
//! `ext4_dir_entry_tail` that holds the block's crc32c.

use super::bytes::{field16, field8, put_u16, put_u32, put_u8};
use super::csum;
use super::layout::BLOCK_SIZE_USIZE;

const TAIL_SIZE: usize = 12;
/// Bytes of entries a block holds: all but the checksum tail.
pub(crate) const USABLE: usize = BLOCK_SIZE_USIZE - TAIL_SIZE;
/// Directory entry file type for directories (`EXT4_FT_DIR`).
pub(crate) const FT_DIR: u8 = 2;

/// Bytes one entry needs: 8-byte header plus the name, 4-byte aligned.
pub(crate) fn entry_len(name_len: usize) -> usize {
    name_len
        .saturating_add(8)
        .checked_next_multiple_of(4)
        .unwrap_or(usize::MAX)
}

/// One entry to write.
pub(crate) struct Entry<'a> {
    pub name: &'a [u8],
    pub ino: u32,
    pub file_type: u8,
}

/// How many blocks the given entries (including `.` and `..`) need.
pub(crate) fn blocks_needed(names: impl Iterator<Item = usize>) -> usize {
    let mut blocks = 1usize;
    let mut used = 0usize;
    for n in names {
        let len = entry_len(n);
        if used.saturating_add(len) > USABLE {
            blocks = blocks.saturating_add(1);
            used = 0;
        }
        used = used.saturating_add(len);
    }
    blocks
}

/// Write `e` at byte `at` of `block` with its minimal rec_len; returns
/// that length.
pub(crate) fn put_entry(block: &mut [u8], at: usize, e: &Entry<'_>) -> Result<usize, String> {
    let len = entry_len(e.name.len());
    // Names are 1..=255 bytes (checked by the builder): an entry is at
    // most 264 bytes and fits an empty block's 4084.
    let slot = block
        .get_mut(at..)
        .and_then(|rest| rest.get_mut(..len))
        .filter(|_| at.saturating_add(len) <= USABLE)
        .ok_or_else(|| format!("directory entry of {len} bytes does not fit a block"))?;
    put_u32(slot, 0, e.ino); // inode
    put_u16(slot, 4, field16(len)); // rec_len (<= 4084)
    put_u8(slot, 6, field8(e.name.len())); // name_len (<= 255)
    put_u8(slot, 7, e.file_type); // file_type
    slot[8..][..e.name.len()].copy_from_slice(e.name); // name
    Ok(len)
}

/// Serialise `entries` into exactly `nblocks` blocks (extra blocks are empty),
/// each sealed with the checksum seeded by the directory's inode.
pub(crate) fn build_blocks(
    entries: &[Entry<'_>],
    nblocks: usize,
    inode_seed: u32,
) -> Result<Vec<Vec<u8>>, String> {
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(nblocks);
    let mut cur = vec![0u8; BLOCK_SIZE_USIZE];
    let mut used = 0usize;
    let mut last_off: Option<usize> = None;
    for e in entries {
        let len = entry_len(e.name.len());
        if used.saturating_add(len) > USABLE {
            finish_block(&mut cur, last_off, inode_seed);
            blocks.push(std::mem::replace(&mut cur, vec![0u8; BLOCK_SIZE_USIZE]));
            used = 0;
        }
        put_entry(&mut cur, used, e)?;
        last_off = Some(used);
        used = used.saturating_add(len); // <= USABLE
    }
    finish_block(&mut cur, last_off, inode_seed);
    blocks.push(cur);
    if blocks.len() > nblocks {
        return Err(format!(
            "directory needs {} blocks, {nblocks} reserved",
            blocks.len()
        ));
    }
    while blocks.len() < nblocks {
        let mut b = vec![0u8; BLOCK_SIZE_USIZE];
        finish_block(&mut b, None, inode_seed);
        blocks.push(b);
    }
    Ok(blocks)
}

/// Seal a block: stretch its last entry (at `last_off`) to the tail, or
/// make it one empty entry, and write the tail with its checksum.
pub(crate) fn finish_block(b: &mut [u8], last_off: Option<usize>, inode_seed: u32) {
    match last_off {
        // Stretch the last entry (starting at off < USABLE) over the free space.
        Some(off) => put_u16(&mut b[off..], 4, field16(USABLE.saturating_sub(off))),
        // An empty block: one unused entry (inode 0) covering it.
        None => put_u16(b, 4, field16(USABLE)),
    }
    // ext4_dir_entry_tail: det_reserved_zero1 = 0, det_rec_len = 12,
    // det_reserved_zero2 = 0, det_reserved_ft = 0xDE, det_checksum.
    put_u32(b, USABLE, 0);
    put_u16(b, USABLE + 4, field16(TAIL_SIZE));
    put_u8(b, USABLE + 6, 0);
    put_u8(b, USABLE + 7, 0xDE);
    let c = csum::raw(inode_seed, &b[..USABLE]);
    put_u32(b, USABLE + 8, c);
}

#[cfg(test)]
mod tests {
    use super::super::bytes::get_u16;
    use super::*;

    #[test]
    fn entry_lengths() {
        assert_eq!(entry_len(1), 12);
        assert_eq!(entry_len(4), 12);
        assert_eq!(entry_len(5), 16);
        assert_eq!(entry_len(255), 264);
    }

    #[test]
    fn block_count_matches_build() {
        let names: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("file-{i:05}").into_bytes())
            .collect();
        let entries: Vec<Entry<'_>> = names
            .iter()
            .map(|n| Entry {
                name: n,
                ino: 12,
                file_type: 1,
            })
            .collect();
        let n = blocks_needed(entries.iter().map(|e| e.name.len()));
        let blocks = build_blocks(&entries, n, 0).expect("fits");
        assert_eq!(blocks.len(), n);
        // walk the rec_lens of each block: they end exactly at the tail
        for b in &blocks {
            let mut off = 0usize;
            while off < USABLE {
                let rl = get_u16(b, off + 4) as usize;
                assert!(rl >= 8, "rec_len too small at {off}");
                off += rl;
            }
            assert_eq!(off, USABLE);
        }
        assert!(build_blocks(&entries, n - 1, 0).is_err());
    }
}
