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
use super::inode::S_IFDIR;
use super::layout::{BLOCKS_PER_GROUP, BLOCK_SIZE, INODE_SIZE};
use super::node::{Ino, Kind, Node};
use super::superblock::{self, SuperInfo};

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
    pub tree: Vec<u64>,
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
        let dir_blocks = self.allocate_dir_blocks()?;
        let usage = self.write_inode_tables(&dir_blocks)?;
        self.write_journal_superblock()?;
        self.write_resize_blocks()?;
        let descs = self.write_bitmaps(&usage)?;
        let gdt = self.group_descriptor_table(&descs);
        self.write_superblocks(&gdt, &usage)
    }

    /// Step 1: blocks (and extent tree blocks) for every directory, in inode
    /// order, now that their entries are known.
    fn allocate_dir_blocks(&mut self) -> Result<DirBlockMap, Ext4Error> {
        let mut out = DirBlockMap::new();
        for idx in 0..self.nodes.len() {
            let ino = u32::try_from(idx + 1)
                .map_err(|_| Ext4Error::Internal("inode number overflow".into()))?;
            let n = match &self.nodes[idx] {
                Some(Node {
                    kind:
                        Kind::Dir {
                            children,
                            min_blocks,
                            ..
                        },
                    ..
                }) => {
                    let names = [1usize, 2]
                        .into_iter()
                        .chain(children.keys().map(|k| k.len()));
                    dir::blocks_needed(names).max(*min_blocks) as u64
                }
                _ => continue,
            };
            let what = format!("directory {}", self.path_of(Ino(ino)));
            let runs = self.alloc_data(&what, n)?;
            let tn = extent::tree_blocks(runs.len()) as u64;
            let tree = self
                .alloc_data(&what, tn)?
                .iter()
                .flat_map(|r| r.start..r.end())
                .collect();
            out.insert(ino, DirBlocks { runs, tree });
        }
        Ok(out)
    }

    /// Step 2: the inode tables, one buffer per group holding its used
    /// prefix (rounded up to a block), written as the inode walk leaves it.
    fn write_inode_tables(&self, dir_blocks: &DirBlockMap) -> Result<InodeUsage, Ext4Error> {
        let groups = us(self.layout.groups);
        let mut usage = InodeUsage {
            last_ino: self.nodes.len() as u64,
            used: vec![0u64; groups],
            dirs: vec![0u32; groups],
        };
        let ipg = self.layout.inodes_per_group;
        let last_ino = usage.last_ino;
        let mut table: Vec<u8> = Vec::new();
        let mut table_group = u64::MAX;
        for ino in 1..=last_ino {
            let g = (ino - 1) / ipg;
            if g != table_group {
                self.flush_table(table_group, &table)?;
                table_group = g;
                let used_here = (last_ino - g * ipg).min(ipg);
                table = vec![0u8; us((used_here * INODE_SIZE).next_multiple_of(BLOCK_SIZE))];
            }
            usage.used[us(g)] = ino - g * ipg;
            if let Some(raw) = self.inode_for(lo32(ino), dir_blocks)? {
                if raw.mode & 0o170000 == S_IFDIR {
                    usage.dirs[us(g)] += 1;
                }
                let off = us((ino - 1 - g * ipg) * INODE_SIZE);
                table[off..off + us(INODE_SIZE)]
                    .copy_from_slice(&raw.encode(lo32(ino), self.fs_seed));
            }
        }
        self.flush_table(table_group, &table)?;
        Ok(usage)
    }

    fn flush_table(&self, group: u64, table: &[u8]) -> Result<(), Ext4Error> {
        if group == u64::MAX || table.is_empty() {
            return Ok(());
        }
        let at = self.layout.groups_meta[us(group)].inode_table * BLOCK_SIZE;
        self.window.write_at(at, table)?;
        Ok(())
    }

    /// Step 6: all descriptors, packed into the table's blocks.
    fn group_descriptor_table(&self, descs: &[GroupDesc]) -> Vec<u8> {
        let mut gdt = vec![0u8; us(self.layout.desc_blocks * BLOCK_SIZE)];
        for ((g, d), slot) in descs
            .iter()
            .enumerate()
            .zip(gdt.chunks_exact_mut(super::layout::DESC_SIZE_USIZE))
        {
            slot.copy_from_slice(&d.encode(lo32(u64_of(g)), self.fs_seed));
        }
        gdt
    }

    /// Step 7: the primary superblock (1024 bytes into block 0) and the
    /// backups (at the start of their group), each followed by the group
    /// descriptor table.
    fn write_superblocks(&self, gdt: &[u8], usage: &InodeUsage) -> Result<FinishStats, Ext4Error> {
        let free_blocks = self.alloc.free_count();
        let free_inodes = self.layout.inodes_count() - usage.last_ino;
        let mut label = [0u8; 16];
        label[..self.params.label.len()].copy_from_slice(self.params.label.as_bytes());
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
        for g in std::iter::once(0).chain(self.layout.backup_groups()) {
            let sb = superblock::encode(&info, g);
            let at = g * BLOCKS_PER_GROUP * BLOCK_SIZE;
            self.window.write_at(if g == 0 { 1024 } else { at }, &sb)?;
            self.window.write_at(at + BLOCK_SIZE, gdt)?;
        }
        Ok(FinishStats {
            blocks: self.layout.blocks_count,
            free_blocks,
            inodes: self.layout.inodes_count(),
            used_inodes: usage.last_ino,
            uuid: self.uuid,
        })
    }
}
