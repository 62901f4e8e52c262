//! Extent trees: up to 4 extents in the inode, else leaf blocks of 340
//! extents under index levels (depth 1, 2, ...), each block with its crc32c tail.

use super::alloc::Run;
use super::bytes::{field16, hi32, lo32, put_u16, put_u32, u64_of};
use super::csum;
use super::error::Ext4Error;
use super::layout::BLOCK_SIZE_USIZE;
use super::units::{BlockCount, BlockNo};

const EXT4_EXT_MAGIC: u16 = 0xF30A;
const HEADER: usize = 12;
const ENTRY: usize = 12;
/// Entries in the inode's 60-byte i_block after the 12-byte header.
pub(crate) const IN_INODE: usize = 4;
/// Entries per tree block: (4096 - 12) / 12 = 340; the 4 bytes left hold the
/// `ext4_extent_tail` checksum.
pub(crate) const PER_BLOCK: usize = (BLOCK_SIZE_USIZE - HEADER) / ENTRY;
const TAIL: usize = HEADER + PER_BLOCK * ENTRY;

/// One extent: `len` blocks of a file from logical block `logical`, stored at
/// physical block `physical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Extent {
    pub logical: u32,
    pub len: u16,
    pub physical: BlockNo,
}

/// [`tree_blocks`] as a block count.
pub(crate) fn tree_block_count(n: usize) -> BlockCount {
    BlockCount(u64_of(tree_blocks(n)))
}

/// Tree blocks needed for `n` extents (0 when they fit in the inode).
pub(crate) fn tree_blocks(n: usize) -> usize {
    let mut total = 0usize;
    let mut level = n;
    while level > IN_INODE {
        let blocks = level.div_ceil(PER_BLOCK);
        total = total.saturating_add(blocks); // < n
        level = blocks;
    }
    total
}

fn header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, EXT4_EXT_MAGIC); // eh_magic
    put_u16(buf, 2, field16(entries)); // eh_entries (<= 340)
    put_u16(buf, 4, field16(max)); // eh_max
    put_u16(buf, 6, depth); // eh_depth
    put_u32(buf, 8, 0); // eh_generation
}

/// Serialise `e` into a 12-byte `ext4_extent` slot.
fn leaf_entry(slot: &mut [u8], e: &Extent) {
    put_u32(slot, 0, e.logical); // ee_block
    put_u16(slot, 4, e.len); // ee_len
    put_u16(slot, 6, (hi32(e.physical.get()) & 0xFFFF) as u16); // ee_start_hi
    put_u32(slot, 8, lo32(e.physical.get())); // ee_start_lo
}

/// Serialise an `ext4_extent_idx` into a 12-byte slot.
fn index_entry(slot: &mut [u8], logical: u32, child: BlockNo) {
    let child = child.get();
    put_u32(slot, 0, logical); // ei_block
    put_u32(slot, 4, lo32(child)); // ei_leaf_lo
    put_u16(slot, 8, (hi32(child) & 0xFFFF) as u16); // ei_leaf_hi
    put_u16(slot, 10, 0); // ei_unused
}

/// The entry slots after a node's header (4 in the inode, 340 in a block).
fn slots(node: &mut [u8]) -> std::slice::ChunksExactMut<'_, u8> {
    node[HEADER..].chunks_exact_mut(ENTRY)
}

/// A built tree: the inode's i_block and the tree blocks to write.
pub(crate) struct Tree {
    pub i_block: [u8; 60],
    pub blocks: Vec<(BlockNo, Vec<u8>)>,
}

/// Build the tree for `extents` (sorted by logical block) using exactly
/// `tree_blocks(extents.len())` blocks from `tree_at` (in order).
pub(crate) fn build(
    extents: &[Extent],
    tree_at: &[BlockNo],
    inode_seed: u32,
) -> Result<Tree, String> {
    if tree_at.len() != tree_blocks(extents.len()) {
        return Err(format!(
            "{} tree blocks given for {} extents",
            tree_at.len(),
            extents.len()
        ));
    }
    let mut i_block = [0u8; 60];
    let mut blocks = Vec::with_capacity(tree_at.len());
    if extents.len() <= IN_INODE {
        header(&mut i_block, extents.len(), IN_INODE, 0);
        for (slot, e) in slots(&mut i_block).zip(extents) {
            leaf_entry(slot, e);
        }
        return Ok(Tree { i_block, blocks });
    }
    let mut next_block = tree_at.iter().copied();
    // Level 0: leaves.
    let mut children: Vec<(u32, BlockNo)> = Vec::new();
    for chunk in extents.chunks(PER_BLOCK) {
        let at = next_block.next().ok_or("ran out of tree blocks")?;
        let mut buf = vec![0u8; BLOCK_SIZE_USIZE];
        header(&mut buf, chunk.len(), PER_BLOCK, 0);
        for (slot, e) in slots(&mut buf).zip(chunk) {
            leaf_entry(slot, e);
        }
        seal(&mut buf, inode_seed);
        children.push((chunk[0].logical, at));
        blocks.push((at, buf));
    }
    let mut depth: u16 = 1;
    while children.len() > IN_INODE {
        let mut parents = Vec::new();
        for chunk in children.chunks(PER_BLOCK) {
            let at = next_block.next().ok_or("ran out of tree blocks")?;
            let mut buf = vec![0u8; BLOCK_SIZE_USIZE];
            header(&mut buf, chunk.len(), PER_BLOCK, depth);
            for (slot, &(logical, child)) in slots(&mut buf).zip(chunk) {
                index_entry(slot, logical, child);
            }
            seal(&mut buf, inode_seed);
            parents.push((chunk[0].0, at));
            blocks.push((at, buf));
        }
        children = parents;
        depth = depth.saturating_add(1); // <= 5: 4 * 340^4 extents exceed 2^32 blocks
    }
    header(&mut i_block, children.len(), IN_INODE, depth);
    for (slot, &(logical, child)) in slots(&mut i_block).zip(&children) {
        index_entry(slot, logical, child);
    }
    Ok(Tree { i_block, blocks })
}

/// Extents for `runs` laid end to end from logical block 0.
pub(crate) fn runs_to_extents(runs: &[Run]) -> Result<Vec<Extent>, Ext4Error> {
    let mut logical = BlockCount::ZERO;
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        out.push(Extent {
            logical: u32::try_from(logical.get())
                .map_err(|_| Ext4Error::Internal("logical block past 2^32".into()))?,
            len: u16::try_from(r.len.get()).map_err(|_| {
                Ext4Error::Internal(format!("extent of {} blocks at {:?}", r.len.get(), r.start))
            })?,
            physical: r.start,
        });
        logical = logical.add(r.len)?;
    }
    Ok(out)
}

/// `ext4_extent_tail.et_checksum`: crc32c of the block up to the tail.
fn seal(buf: &mut [u8], inode_seed: u32) {
    let c = csum::raw(inode_seed, &buf[..TAIL]);
    put_u32(buf, TAIL, c);
}

#[cfg(test)]
mod tests {
    use super::super::bytes::{get_u16, get_u32};
    use super::*;

    #[test]
    fn tree_block_counts() {
        assert_eq!(tree_blocks(0), 0);
        assert_eq!(tree_blocks(4), 0);
        assert_eq!(tree_blocks(5), 1);
        assert_eq!(tree_blocks(340 * 4), 4);
        assert_eq!(tree_blocks(340 * 4 + 1), 5 + 1); // 5 leaves need an index level
        assert_eq!(tree_blocks(800), 3); // a 100 GB file
    }

    #[test]
    fn depth_two_tree_structure() {
        let n = 340 * 4 + 1;
        let extents: Vec<Extent> = (0..n)
            .map(|i| Extent {
                logical: u32::try_from(i).expect("test sizes are small"),
                len: 1,
                physical: BlockNo(1000 + 2 * i as u64),
            })
            .collect();
        let tb = tree_blocks(n);
        let at: Vec<BlockNo> = (0..tb as u64).map(|i| BlockNo(10 + i)).collect();
        let t = build(&extents, &at, 0).expect("build");
        assert_eq!(get_u16(&t.i_block, 0), EXT4_EXT_MAGIC);
        assert_eq!(get_u16(&t.i_block, 6), 2, "depth");
        assert_eq!(get_u16(&t.i_block, 2), 1, "one index block under the inode");
        // the index block points at 5 leaves
        let (idx_at, idx) = t.blocks.last().expect("index block");
        assert_eq!(
            get_u32(&t.i_block, 16),
            u32::try_from(idx_at.get()).expect("small")
        );
        assert_eq!(get_u16(idx, 2), 5);
        assert_eq!(get_u16(idx, 6), 1);
    }
}
