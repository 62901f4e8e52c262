//! `Ext4Builder::finish`: write all metadata, one step per kind.
//!
//! 1. directory blocks are allocated (their sizes are known only now);
//! 2. inode tables, group by group, each inode writing what it points to
//!    (directory blocks, extent trees, slow symlink blocks: `inodes.rs`);
//! 3. the journal superblock (`journal.rs`);
//! 4. the resize inode's blocks (`resize.rs`);
//! 5. block and inode bitmaps, giving each group's descriptor (`bitmaps.rs`);
//! 6. the group descriptor table;
//! 7. the superblock and its backups, each followed by a descriptor table copy.

use std::collections::BTreeMap;

use super::alloc::Run;
use super::builder::Ext4Builder;
use super::bytes::{lo32, u64_of, us};
use super::dir;
use super::error::Ext4Error;
use super::extent;
use super::group::GroupDesc;
use super::htree::HtreePlan;
use super::inode::S_IFDIR;
use super::layout::{DESC_SIZE_USIZE, INODE_SIZE, INODE_SIZE_USIZE};
use super::node::{Ino, Kind, Node};
use super::superblock::{self, SuperInfo};
use super::units::{BlockCount, BlockNo, GroupNo};

/// The primary superblock sits 1024 bytes into block 0 (the first 1024
/// bytes are left for a boot sector); backups start their group's block.
const PRIMARY_SUPERBLOCK_OFFSET: u64 = 1024;

/// Figures about a finished filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishStats {
    /// Blocks in the filesystem.
    pub blocks: u64,
    /// Free blocks left.
    pub free_blocks: u64,
    /// Inodes in the filesystem.
    pub inodes: u64,
    /// Inodes in use (including the reserved ones).
    pub used_inodes: u64,
    /// The filesystem UUID.
    pub uuid: [u8; 16],
}

/// Blocks of one directory: its data runs and its extent tree blocks.
pub(super) struct DirBlocks {
    pub runs: Vec<Run>,
    pub tree: Vec<BlockNo>,
}

/// True when a directory's entries (with `.` and `..`) do not fit one
/// linear block: it gets a hash index.
pub(super) fn needs_index<'a>(children: impl Iterator<Item = (&'a [u8], u32)>) -> bool {
    let names = [1usize, 2]
        .into_iter()
        .chain(children.map(|(name, _)| name.len()));
    dir::blocks_needed(names) > 1
}

/// Directory inode → its blocks.
pub(super) type DirBlockMap = BTreeMap<u32, DirBlocks>;

/// Inode use per group, counted while writing the inode tables.
pub(super) struct InodeUsage {
    /// Highest inode number in use (inodes are handed out densely).
    pub last_ino: u64,
    /// Per group: inodes in use (a prefix of the group's table).
    pub used: Vec<u64>,
    /// Per group: directories.
    pub dirs: Vec<u32>,
}

impl Ext4Builder {
    /// Write all metadata. Every `FileWriter` should be done writing: data
    /// written after this point lands in place but may race a later sync.
    pub fn finish(mut self) -> Result<FinishStats, Ext4Error> {
        // No more lookups: each directory's entries become a sorted slice.
        self.names.freeze();
        let dir_blocks = self.allocate_dir_blocks()?;
        let usage = self.write_inode_tables(&dir_blocks)?;
        self.write_journal_superblock()?;
        self.write_resize_blocks()?;
        let descs = self.write_bitmaps(&usage)?;
        let gdt = self.group_descriptor_table(&descs)?;
        self.write_superblocks(&gdt, &usage)
    }

    /// Step 1: blocks (and extent tree blocks) for every directory, in inode
    /// order, now that their entries are known.
    fn allocate_dir_blocks(&mut self) -> Result<DirBlockMap, Ext4Error> {
        let mut out = DirBlockMap::new();
        for (idx, ino) in (0..self.nodes.len()).zip(1u32..) {
            let n = match self.nodes.get(idx) {
                Some(Some(Node {
                    kind: Kind::Dir { min_blocks, .. },
                    ..
                })) => BlockCount(u64_of(self.dir_block_count(ino, *min_blocks)?)),
                _ => continue,
            };
            let what = format!("directory {}", self.path_of(Ino(ino)));
            let runs = self.alloc_data(&what, n)?;
            let tree = self
                .alloc_data(&what, extent::tree_block_count(runs.len()))?
                .iter()
                .flat_map(Run::blocks)
                .collect();
            out.insert(ino, DirBlocks { runs, tree });
        }
        Ok(out)
    }

    /// Blocks of directory `ino` (its entries frozen): one linear block
    /// (or `min_blocks`) when its entries fit one, else an htree's root,
    /// leaves and index nodes.
    pub(super) fn dir_block_count(&self, ino: u32, min_blocks: u32) -> Result<usize, Ext4Error> {
        let children = self.names.children(ino);
        if !needs_index(children.clone()) {
            return Ok(us(u64::from(min_blocks.max(1))));
        }
        let names: Vec<&[u8]> = children.map(|(name, _)| name).collect();
        let plan = HtreePlan::new(&self.dir_hasher(), &names).map_err(|reason| {
            Ext4Error::Internal(format!("directory too large for an htree: {reason}"))
        })?;
        Ok(plan.blocks())
    }

    /// Step 2: the inode tables, one buffer per group holding its used
    /// prefix (rounded up to a block), written as the inode walk leaves it.
    fn write_inode_tables(&self, dir_blocks: &DirBlockMap) -> Result<InodeUsage, Ext4Error> {
        let groups = us(self.layout.groups);
        let last_ino = u64_of(self.nodes.len());
        let mut usage = InodeUsage {
            last_ino,
            used: vec![0u64; groups],
            dirs: vec![0u32; groups],
        };
        let ipg = self.layout.inodes_per_group;
        let mut table: Vec<u8> = Vec::new();
        let mut table_group = None;
        for (ino, index) in (1..=last_ino).zip(0u64..) {
            let (Some(g), Some(slot)) = (index.checked_div(ipg), index.checked_rem(ipg)) else {
                return Err(Ext4Error::Internal("zero inodes per group".into()));
            };
            let g = GroupNo(g);
            if table_group != Some(g) {
                if let Some(prev) = table_group {
                    self.flush_table(prev, &table)?;
                }
                table_group = Some(g);
                table = self.empty_table(last_ino.saturating_sub(index).min(ipg));
            }
            if let Some(u) = usage.used.get_mut(g.index()) {
                *u = slot.saturating_add(1);
            }
            let Some(raw) = self.inode_for(lo32(ino), dir_blocks)? else {
                continue;
            };
            if raw.mode & 0o170000 == S_IFDIR {
                if let Some(d) = usage.dirs.get_mut(g.index()) {
                    *d = d.saturating_add(1);
                }
            }
            let off = us(slot.saturating_mul(INODE_SIZE));
            table
                .get_mut(off..off.saturating_add(INODE_SIZE_USIZE))
                .ok_or_else(|| Ext4Error::Internal(format!("inode {ino} past its table")))?
                .copy_from_slice(&raw.encode(lo32(ino), self.fs_seed));
        }
        if let Some(g) = table_group {
            self.flush_table(g, &table)?;
        }
        Ok(usage)
    }

    /// A zeroed buffer for `used` inodes (<= inodes per group <= 32768),
    /// rounded up to whole blocks.
    fn empty_table(&self, used: u64) -> Vec<u8> {
        let bytes = used.saturating_mul(INODE_SIZE);
        vec![0u8; us(BlockCount::for_bytes(bytes).bytes_saturating())]
    }

    fn flush_table(&self, group: GroupNo, table: &[u8]) -> Result<(), Ext4Error> {
        if table.is_empty() {
            return Ok(());
        }
        let at = self.layout.group_meta(group)?.inode_table.byte_offset()?;
        self.window.write_at(at, table)?;
        Ok(())
    }

    /// Step 6: all descriptors, packed into the table's blocks.
    fn group_descriptor_table(&self, descs: &[GroupDesc]) -> Result<Vec<u8>, Ext4Error> {
        let mut gdt = vec![0u8; us(self.layout.desc_blocks.bytes()?)];
        for ((g, d), slot) in descs
            .iter()
            .enumerate()
            .zip(gdt.chunks_exact_mut(DESC_SIZE_USIZE))
        {
            slot.copy_from_slice(&d.encode(lo32(u64_of(g)), self.fs_seed));
        }
        Ok(gdt)
    }

    /// Step 7: the primary superblock (1024 bytes into block 0) and the
    /// backups (at the start of their group), each followed by the group
    /// descriptor table.
    fn write_superblocks(&self, gdt: &[u8], usage: &InodeUsage) -> Result<FinishStats, Ext4Error> {
        let free_blocks = self.alloc.free_count().get();
        let free_inodes = self.layout.inodes_count().saturating_sub(usage.last_ino);
        let mut label = [0u8; 16];
        let name = self.params.label.as_bytes();
        label
            .get_mut(..name.len())
            .ok_or_else(|| Ext4Error::Internal("label longer than 16 bytes".into()))?
            .copy_from_slice(name);
        let info = SuperInfo {
            layout: &self.layout,
            free_blocks,
            free_inodes,
            uuid: self.uuid,
            label,
            hash_seed: self.hash_seed,
            signed_hash: self.params.signed_hash,
            time: self.params.time.encode().0,
            jnl_blocks: self.journal_backup()?,
        };
        for g in std::iter::once(GroupNo(0)).chain(self.layout.backup_groups()) {
            let sb = superblock::encode(&info, g.get());
            let first = g.first_block()?;
            let at = if g.get() == 0 {
                PRIMARY_SUPERBLOCK_OFFSET
            } else {
                first.byte_offset()?
            };
            self.window.write_at(at, &sb)?;
            let gdt_at = first.add(BlockCount(1))?.byte_offset()?;
            self.window.write_at(gdt_at, gdt)?;
        }
        Ok(FinishStats {
            blocks: self.layout.blocks_count.get(),
            free_blocks,
            inodes: self.layout.inodes_count(),
            used_inodes: usage.last_ino,
            uuid: self.uuid,
        })
    }
}
