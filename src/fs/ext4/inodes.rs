//! Inode records at `finish()` time, one function per kind; each writes
//! what its inode points to (directory blocks, extent tree blocks, a slow
//! symlink's block) on the way.

use super::alloc::Run;
use super::builder::Ext4Builder;
use super::bytes::{lo16, put_u32, u64_of, us};
use super::csum;
use super::dir;
use super::error::Ext4Error;
use super::extent::{self, runs_to_extents, Extent};
use super::finish::{needs_index, DirBlockMap, DirBlocks};
use super::htree::{HtreePlan, INDEX_FL};
use super::inode::{self, RawInode, EXTENTS_FL, S_IFDIR, S_IFLNK, S_IFREG};
use super::layout::BLOCK_SIZE_USIZE;
use super::node::{Kind, Node, SpecialKind, LINK_MAX, RESIZE_INO, ROOT_INO};
use super::params::InodeMeta;
use super::superblock::JOURNAL_INO;
use super::units::{BlockCount, BlockNo};

/// Blocks of an extent tree.
fn tree_len(tree: &[BlockNo]) -> BlockCount {
    BlockCount(u64_of(tree.len()))
}

impl Ext4Builder {
    /// The inode record for `ino`, or `None` for an unused reserved inode.
    pub(super) fn inode_for(
        &self,
        ino: u32,
        dir_blocks: &DirBlockMap,
    ) -> Result<Option<RawInode>, Ext4Error> {
        match ino {
            JOURNAL_INO => return self.journal_inode().map(Some),
            RESIZE_INO => return self.resize_inode(),
            _ => {}
        }
        let Some(Some(node)) = ino
            .checked_sub(1)
            .and_then(|i| self.nodes.get(us(u64::from(i))))
        else {
            return Ok(None);
        };
        let seed = csum::inode_seed(self.fs_seed, ino, 0);
        let raw = match &node.kind {
            Kind::Dir { .. } => {
                let blocks = dir_blocks.get(&ino).ok_or_else(|| {
                    Ext4Error::Internal(format!("no blocks for directory inode {ino}"))
                })?;
                self.dir_inode(ino, node, blocks, seed)?
            }
            Kind::File { .. } => self.file_inode(ino, node, seed)?,
            Kind::Symlink { target, block } => self.symlink_inode(node, target, *block, seed)?,
            Kind::Special(kind) => special_inode(node, *kind),
        };
        Ok(Some(raw))
    }

    /// Write an extent tree's blocks (none when it fits in the inode).
    pub(super) fn write_tree(&self, tree: &extent::Tree) -> Result<(), Ext4Error> {
        for (at, buf) in &tree.blocks {
            self.window.write_at(at.byte_offset()?, buf)?;
        }
        Ok(())
    }

    /// A directory: its entries (`.`, `..`, then children in name order)
    /// written into its blocks, and its extent tree.
    fn dir_inode(
        &self,
        ino: u32,
        node: &Node,
        blocks: &DirBlocks,
        seed: u32,
    ) -> Result<RawInode, Ext4Error> {
        let Kind::Dir { subdirs, .. } = &node.kind else {
            return Err(Ext4Error::Internal(format!(
                "inode {ino} is not a directory"
            )));
        };
        let parent = if ino == ROOT_INO.0 {
            ROOT_INO.0
        } else {
            node.parent
        };
        let dot = |name: &'static [u8], ino| dir::Entry {
            name,
            ino,
            file_type: dir::FT_DIR,
        };
        let children = self.names.children(ino);
        let indexed = needs_index(children.clone());
        let mut entries = Vec::with_capacity(children.len().saturating_add(2));
        if !indexed {
            entries.push(dot(b".", ino));
            entries.push(dot(b"..", parent));
        }
        for (name, child) in children {
            entries.push(dir::Entry {
                name,
                ino: child,
                file_type: self.file_type_of(child)?,
            });
        }
        let nblocks = BlockCount::sum(blocks.runs.iter().map(|r| r.len))?;
        let physical: Vec<BlockNo> = blocks.runs.iter().flat_map(Run::blocks).collect();
        let put = |k: usize, buf: &[u8]| -> Result<(), Ext4Error> {
            let b = physical
                .get(k)
                .ok_or_else(|| Ext4Error::Internal("directory block count".into()))?;
            self.window.write_at(b.byte_offset()?, buf)?;
            Ok(())
        };
        if indexed {
            let names: Vec<&[u8]> = entries.iter().map(|e| e.name).collect();
            let plan = HtreePlan::new(&self.dir_hasher(), &names).map_err(Ext4Error::Internal)?;
            if plan.blocks() != physical.len() {
                return Err(Ext4Error::Internal(format!(
                    "htree of inode {ino}: {} blocks, {} reserved",
                    plan.blocks(),
                    physical.len()
                )));
            }
            let mut failed = None;
            plan.write(&entries, ino, parent, seed, |k, buf| {
                put(k, buf).map_err(|e| {
                    let msg = e.to_string();
                    failed = Some(e);
                    msg
                })
            })
            .map_err(|msg| failed.take().unwrap_or(Ext4Error::Internal(msg)))?;
        } else {
            let data = dir::build_blocks(&entries, us(nblocks.get()), seed)
                .map_err(Ext4Error::Internal)?;
            for (k, buf) in data.iter().enumerate() {
                put(k, buf)?;
            }
        }
        let tree = extent::build(&runs_to_extents(&blocks.runs)?, &blocks.tree, seed)
            .map_err(Ext4Error::Internal)?;
        self.write_tree(&tree)?;
        // `.` and the parent's entry, plus each subdirectory's `..`; past
        // LINK_MAX, dir_nlink's 1 ("many").
        let links = subdirs.saturating_add(2);
        Ok(RawInode {
            mode: S_IFDIR | (node.meta.perm & 0o7777),
            meta: node.meta.unpack(),
            size: nblocks.bytes()?,
            links: if links > LINK_MAX { 1 } else { lo16(links) },
            sectors: nblocks.add(tree_len(&blocks.tree))?.sectors()?,
            flags: if indexed {
                EXTENTS_FL | INDEX_FL
            } else {
                EXTENTS_FL
            },
            i_block: tree.i_block,
        })
    }

    /// A regular file: its extent tree over the runs reserved at creation.
    fn file_inode(&self, ino: u32, node: &Node, seed: u32) -> Result<RawInode, Ext4Error> {
        let Kind::File { runs, tree } = &node.kind else {
            return Err(Ext4Error::Internal("not a regular file".into()));
        };
        let runs = runs.as_slice();
        let t = extent::build(&runs_to_extents(runs)?, tree, seed).map_err(Ext4Error::Internal)?;
        self.write_tree(&t)?;
        let nblocks = BlockCount::sum(runs.iter().map(|r| r.len))?;
        Ok(RawInode {
            mode: S_IFREG | (node.meta.perm & 0o7777),
            meta: node.meta.unpack(),
            size: self.sizes.get(ino),
            links: lo16(node.links), // <= LINK_MAX
            sectors: nblocks.add(tree_len(tree))?.sectors()?,
            flags: EXTENTS_FL,
            i_block: t.i_block,
        })
    }

    /// A symlink: the target in `i_block` ("fast") or in its one block.
    fn symlink_inode(
        &self,
        node: &Node,
        target: &[u8],
        block: Option<BlockNo>,
        seed: u32,
    ) -> Result<RawInode, Ext4Error> {
        let mut i_block = [0u8; 60];
        let too_long = || Ext4Error::Internal(format!("symlink target of {} bytes", target.len()));
        let (flags, sectors) = match block {
            None => {
                i_block
                    .get_mut(..target.len())
                    .ok_or_else(too_long)?
                    .copy_from_slice(target);
                (0, 0)
            }
            Some(b) => {
                let mut data = vec![0u8; BLOCK_SIZE_USIZE];
                data.get_mut(..target.len())
                    .ok_or_else(too_long)?
                    .copy_from_slice(target);
                self.window.write_at(b.byte_offset()?, &data)?;
                let one = Extent {
                    logical: 0,
                    len: 1,
                    physical: b,
                };
                i_block = extent::build(&[one], &[], seed)
                    .map_err(Ext4Error::Internal)?
                    .i_block;
                (EXTENTS_FL, BlockCount(1).sectors()?)
            }
        };
        Ok(RawInode {
            mode: S_IFLNK | 0o777,
            meta: InodeMeta {
                perm: 0o777,
                ..node.meta.unpack()
            },
            size: u64_of(target.len()),
            links: lo16(node.links), // <= LINK_MAX
            sectors,
            flags,
            i_block,
        })
    }

    /// The directory entry file type of `ino`.
    fn file_type_of(&self, ino: u32) -> Result<u8, Ext4Error> {
        Ok(inode::dirent_type(self.node(ino)?.kind.mode_type()))
    }
}

/// A FIFO, socket or device node; devices keep their numbers in `i_block`.
fn special_inode(node: &Node, kind: SpecialKind) -> RawInode {
    let mut i_block = [0u8; 60];
    if let SpecialKind::CharDevice(major, minor) | SpecialKind::BlockDevice(major, minor) = kind {
        if major < 256 && minor < 256 {
            // Old encoding in i_block[0].
            put_u32(&mut i_block, 0, (major << 8) | minor);
        } else {
            // New (huge) encoding in i_block[1], as the kernel's new_encode_dev.
            let v = (minor & 0xFF) | (major << 8) | ((minor & !0xFF) << 12);
            put_u32(&mut i_block, 4, v);
        }
    }
    RawInode {
        mode: kind.mode_type() | (node.meta.perm & 0o7777),
        meta: node.meta.unpack(),
        size: 0,
        links: lo16(node.links), // <= LINK_MAX
        sectors: 0,
        flags: 0,
        i_block,
    }
}
