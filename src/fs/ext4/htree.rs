//! Hash-indexed ("htree") directories, laid out as `e2fsck -fD` lays them
//! out, so that a later `e2fsck -D` finds nothing to improve.
//!
//! Format (kernel Documentation/filesystems/ext4/directory.rst, "Hash Tree
//! Directories"): logical block 0 is the `dx_root`: fake `.` (rec_len 12)
//! and `..` (rec_len 4084, covering the rest of the block) entries, then
//! `dx_root_info` (8 bytes at offset 24: reserved, hash version, info length
//! 8, indirect levels, flags), then the `dx_countlimit` + `dx_entry` array at
//! offset 32 and the 8-byte `dx_tail` (reserved, crc32c) right after `limit`
//! entries. A `dx_node` is one fake empty entry (inode 0, rec_len 4096)
//! followed by the same count/limit array at offset 8 and a tail. Each
//! `dx_entry` is (hash, block); the first entry's hash is replaced by the
//! count/limit and means "0". Leaf blocks are ordinary directory blocks
//! with the `metadata_csum` dirent tail.
//!
//! Packing (e2fsprogs' `e2fsck/rehash.c` behaviour, as documented by its
//! `indexed_dir_slack_percentage` option, default 20): entries sorted by
//! (major hash, minor hash, name); a leaf is closed once less than 20 % of
//! its 4084 usable bytes is left, or when the next entry does not fit.
//! A leaf whose first entry has the same major hash as the previous leaf's
//! last entry is indexed by that hash with the low "collision" bit set.
//! Leaves are logical blocks 1..=L; with more than 507 leaves one level of
//! `dx_node`s (510 entries each, all full but the last) follows the leaves.
//! Larger directories would need a third level (`largedir`), refused here.

use super::bytes::{field16, put_u16, put_u32, put_u8};
use super::csum;
use super::dir::{self, Entry, USABLE};
use super::hash::{DirHasher, NameHash};
use super::layout::BLOCK_SIZE_USIZE;

/// `dx_root_info.hash_version`: half MD4, the `s_def_hash_version` the
/// superblock records (the signedness comes from `s_flags` at lookup).
const HASH_VERSION_HALF_MD4: u8 = 1;
/// Offset of the root's count/limit: after `.` (12), `..` header (12) and
/// `dx_root_info` (8).
const ROOT_COUNT_OFFSET: usize = 32;
/// Offset of a node's count/limit: after its 8-byte fake entry header.
const NODE_COUNT_OFFSET: usize = 8;
/// `struct dx_entry`: hash and block, 4 bytes each.
const DX_ENTRY: usize = 8;
/// `struct dx_tail`: reserved word and checksum.
const DX_TAIL: usize = 8;
/// Index entries in the root: (4096 - 32 - 8) / 8.
pub(crate) const ROOT_LIMIT: usize = (BLOCK_SIZE_USIZE - ROOT_COUNT_OFFSET - DX_TAIL) / DX_ENTRY;
/// Index entries in a node: (4096 - 8 - 8) / 8.
pub(crate) const NODE_LIMIT: usize = (BLOCK_SIZE_USIZE - NODE_COUNT_OFFSET - DX_TAIL) / DX_ENTRY;
/// A leaf is closed when fewer bytes than this are left: 20 % of the usable
/// 4084 bytes, e2fsck's default `indexed_dir_slack_percentage`.
const SLACK: usize = USABLE / 5;
/// Largest directory: two index levels (root + nodes) of leaves.
const MAX_LEAVES: usize = ROOT_LIMIT * NODE_LIMIT;
/// `EXT4_INDEX_FL`: the directory has a hash index.
pub(crate) const INDEX_FL: u32 = 0x1000;

/// A directory's entries in hash order, split into leaves.
pub(crate) struct HtreePlan {
    /// (hash, index into the caller's names), sorted as e2fsck sorts.
    order: Vec<(NameHash, u32)>,
    /// Where each leaf starts in `order`; the first is 0.
    leaf_starts: Vec<usize>,
}

impl HtreePlan {
    /// Hash and sort `names` (the directory's entries without `.` and
    /// `..`), then split them into leaves.
    pub fn new(hasher: &DirHasher, names: &[&[u8]]) -> Result<Self, String> {
        let mut order: Vec<(NameHash, u32)> = Vec::with_capacity(names.len());
        for (name, i) in names.iter().zip(0u32..) {
            order.push((hasher.hash(name), i));
        }
        if order.len() != names.len() {
            return Err(format!("{} entries in one directory", names.len()));
        }
        let name = |i: u32| names.get(usize::try_from(i).unwrap_or(usize::MAX));
        // Ties on both hashes fall back to the name (unique in a
        // directory), as e2fsck's comparison does.
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| name(a.1).cmp(&name(b.1))));
        let mut leaf_starts = Vec::new();
        let mut left = 0usize; // bytes left in the current leaf; 0: none open
        for (pos, &(_, i)) in order.iter().enumerate() {
            let len = dir::entry_len(name(i).map_or(0, |n| n.len()));
            if len > left {
                leaf_starts.push(pos);
                left = USABLE;
            }
            left = left.saturating_sub(len);
            if left < SLACK {
                left = 0;
            }
        }
        if leaf_starts.len() > MAX_LEAVES {
            return Err(format!(
                "{} entries need {} leaf blocks; an htree of two levels indexes at most {MAX_LEAVES}",
                names.len(),
                leaf_starts.len()
            ));
        }
        Ok(Self { order, leaf_starts })
    }

    /// Leaf blocks.
    pub fn leaves(&self) -> usize {
        self.leaf_starts.len()
    }

    /// `dx_node` blocks: none when the root indexes every leaf.
    pub fn nodes(&self) -> usize {
        if self.leaves() <= ROOT_LIMIT {
            0
        } else {
            self.leaves().div_ceil(NODE_LIMIT)
        }
    }

    /// All blocks: root, leaves, nodes (at most 1 + 258,570 + 507).
    pub fn blocks(&self) -> usize {
        self.leaves().saturating_add(self.nodes()).saturating_add(1)
    }

    /// The index hash of leaf `k`: its first entry's major hash, with the
    /// collision bit when the previous leaf ends on the same hash.
    fn leaf_hash(&self, k: usize) -> u32 {
        let Some(&start) = self.leaf_starts.get(k) else {
            return 0;
        };
        let first = self.order.get(start).map_or(0, |e| e.0.major);
        let prev = start
            .checked_sub(1)
            .and_then(|p| self.order.get(p))
            .map(|e| e.0.major);
        if prev == Some(first) {
            first | 1
        } else {
            first
        }
    }

    /// Serialise the directory: `emit(logical block, bytes)` is called for
    /// every block in logical order (root, leaves, nodes). `entries` are
    /// the names given to [`HtreePlan::new`], in the same order, with
    /// their inodes and types; `dot`/`dotdot` the directory's own inode
    /// and its parent's.
    pub fn write(
        &self,
        entries: &[Entry<'_>],
        dot: u32,
        dotdot: u32,
        seed: u32,
        mut emit: impl FnMut(usize, &[u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        let leaves = self.leaves();
        let nodes = self.nodes();
        // Root entries: the leaves, or the nodes (each over NODE_LIMIT leaves).
        let root_targets: Vec<(u32, usize)> = if nodes == 0 {
            (0..leaves)
                .map(|k| (self.leaf_hash(k), k.saturating_add(1)))
                .collect()
        } else {
            (0..nodes)
                .map(|n| {
                    let first_leaf = n.saturating_mul(NODE_LIMIT);
                    (
                        self.leaf_hash(first_leaf),
                        leaves.saturating_add(1).saturating_add(n),
                    )
                })
                .collect()
        };
        let mut root = vec![0u8; BLOCK_SIZE_USIZE];
        // `.` and `..`, the second covering the rest of the block.
        put_u32(&mut root, 0, dot);
        put_u16(&mut root, 4, 12);
        put_u8(&mut root, 6, 1);
        put_u8(&mut root, 7, dir::FT_DIR);
        put_u8(&mut root, 8, b'.');
        put_u32(&mut root, 12, dotdot);
        put_u16(&mut root, 16, field16(BLOCK_SIZE_USIZE - 12));
        put_u8(&mut root, 18, 2);
        put_u8(&mut root, 19, dir::FT_DIR);
        put_u8(&mut root, 20, b'.');
        put_u8(&mut root, 21, b'.');
        // dx_root_info: reserved_zero, hash_version, info_length, indirect_levels, unused_flags.
        put_u32(&mut root, 24, 0);
        put_u8(&mut root, 28, HASH_VERSION_HALF_MD4);
        put_u8(&mut root, 29, 8);
        put_u8(&mut root, 30, u8::from(nodes > 0));
        put_u8(&mut root, 31, 0);
        index_block(
            &mut root,
            ROOT_COUNT_OFFSET,
            ROOT_LIMIT,
            &root_targets,
            seed,
        )?;
        emit(0, &root)?;
        // Leaves.
        let mut buf = vec![0u8; BLOCK_SIZE_USIZE];
        for (k, &start) in self.leaf_starts.iter().enumerate() {
            let end = self
                .leaf_starts
                .get(k.saturating_add(1))
                .copied()
                .unwrap_or(self.order.len());
            buf.fill(0);
            let mut used = 0usize;
            let mut last = None;
            for &(_, i) in self.order.get(start..end).unwrap_or_default() {
                let e = entries
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
                    .ok_or("htree entry index out of range")?;
                let len = dir::put_entry(&mut buf, used, e)?;
                last = Some(used);
                used = used.saturating_add(len);
            }
            dir::finish_block(&mut buf, last, seed);
            emit(k.saturating_add(1), &buf)?;
        }
        // Nodes: NODE_LIMIT leaves each, the last one partly filled.
        for n in 0..nodes {
            let first = n.saturating_mul(NODE_LIMIT);
            let last = first.saturating_add(NODE_LIMIT).min(leaves);
            let targets: Vec<(u32, usize)> = (first..last)
                .map(|k| (self.leaf_hash(k), k.saturating_add(1)))
                .collect();
            let mut node = vec![0u8; BLOCK_SIZE_USIZE];
            // Fake empty entry: inode 0, rec_len 4096 (whole block).
            put_u32(&mut node, 0, 0);
            put_u16(&mut node, 4, field16(BLOCK_SIZE_USIZE));
            index_block(&mut node, NODE_COUNT_OFFSET, NODE_LIMIT, &targets, seed)?;
            emit(leaves.saturating_add(1).saturating_add(n), &node)?;
        }
        Ok(())
    }
}

/// Fill the count/limit + `dx_entry` array at `at` with `targets` (hash,
/// logical block; the first hash is implied 0) and seal the `dx_tail`.
fn index_block(
    block: &mut [u8],
    at: usize,
    limit: usize,
    targets: &[(u32, usize)],
    seed: u32,
) -> Result<(), String> {
    if targets.is_empty() || targets.len() > limit {
        return Err(format!(
            "{} index entries for a block of {limit}",
            targets.len()
        ));
    }
    for (k, &(hash, lblk)) in targets.iter().enumerate() {
        let off = at.saturating_add(k.saturating_mul(DX_ENTRY));
        if k > 0 {
            put_u32(block, off, hash); // dx_entry.hash
        }
        let lblk = u32::try_from(lblk).map_err(|_| "htree block number overflow")?;
        put_u32(block, off.saturating_add(4), lblk); // dx_entry.block
    }
    put_u16(block, at, field16(limit)); // dx_countlimit.limit (<= 510)
    put_u16(block, at.saturating_add(2), field16(targets.len())); // count
                                                                  // dx_tail right after `limit` entries: dt_reserved 0, then the crc32c of
                                                                  // the block up to the last used entry, the reserved word and a zero
                                                                  // checksum field (the kernel's ext4_dx_csum).
    let tail = at.saturating_add(limit.saturating_mul(DX_ENTRY));
    let covered = at.saturating_add(targets.len().saturating_mul(DX_ENTRY));
    put_u32(block, tail, 0);
    let head = block.get(..covered).ok_or("htree index past its block")?;
    let c = csum::raw(seed, head);
    let c = csum::raw(c, &[0u8; 4]); // dt_reserved
    let c = csum::raw(c, &[0u8; 4]); // dt_checksum, as zero
    put_u32(block, tail.saturating_add(4), c);
    debug_assert_eq!(tail.saturating_add(DX_TAIL), BLOCK_SIZE_USIZE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("name-{i:07}").into_bytes())
            .collect()
    }

    #[test]
    fn limits_leave_room_for_the_tail() {
        assert_eq!(ROOT_LIMIT, 507);
        assert_eq!(NODE_LIMIT, 510);
        assert_eq!(SLACK, 816);
    }

    #[test]
    fn leaves_fill_to_eighty_percent() {
        let owned = names(10_000);
        let refs: Vec<&[u8]> = owned.iter().map(|n| n.as_slice()).collect();
        let plan = HtreePlan::new(&DirHasher::new(&[3; 16], true), &refs).expect("plan");
        // 12-byte names: 20-byte records; a leaf takes entries until fewer
        // than 816 of 4084 bytes are left: 164 entries (3280 bytes).
        assert_eq!(plan.leaves(), 10_000usize.div_ceil(164));
        assert_eq!(plan.nodes(), 0);
        assert_eq!(plan.blocks(), plan.leaves() + 1);
        let big = names(100_000);
        let refs: Vec<&[u8]> = big.iter().map(|n| n.as_slice()).collect();
        let plan = HtreePlan::new(&DirHasher::new(&[3; 16], true), &refs).expect("plan");
        assert!(plan.leaves() > ROOT_LIMIT);
        assert_eq!(plan.nodes(), plan.leaves().div_ceil(NODE_LIMIT));
    }

    #[test]
    fn blocks_are_emitted_in_order_with_valid_tails() {
        let owned = names(2_000);
        let refs: Vec<&[u8]> = owned.iter().map(|n| n.as_slice()).collect();
        let entries: Vec<Entry<'_>> = refs
            .iter()
            .map(|n| Entry {
                name: n,
                ino: 20,
                file_type: 1,
            })
            .collect();
        let plan = HtreePlan::new(&DirHasher::new(&[0; 16], true), &refs).expect("plan");
        let mut seen = 0usize;
        plan.write(&entries, 12, 2, 99, |k, b| {
            assert_eq!(k, seen);
            assert_eq!(b.len(), BLOCK_SIZE_USIZE);
            seen += 1;
            Ok(())
        })
        .expect("write");
        assert_eq!(seen, plan.blocks());
    }
}
