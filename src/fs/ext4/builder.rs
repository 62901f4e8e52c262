//! `Ext4Builder`: a streaming `mke2fs -d`.
//!
//! Create the tree (directories, files with their sizes, symlinks, hard
//! links); every regular file gets its blocks reserved at once (see
//! `reserve.rs`) and a [`FileWriter`] to stream its bytes into them, from any
//! thread. `finish()` (see `finish.rs`) writes all metadata.
//!
//! [`FileWriter`]: super::FileWriter

use super::alloc::Allocator;
use super::bytes::{u64_of, us};
use super::csum;
use super::error::Ext4Error;
use super::extent;
use super::file::Sizes;
use super::hash::DirHasher;
use super::ids::{IdPurpose, IdSource};
use super::layout::{Layout, BLOCK_SIZE_USIZE, FIRST_INO};
use super::names::NameTable;
use super::node::{
    is_valid_name, Ino, Kind, Node, PackedMeta, SpecialKind, FAST_SYMLINK_MAX, LINK_MAX,
    LOST_FOUND_BLOCKS, LOST_FOUND_INO, NO_NAME, ROOT_INO,
};
use super::params::{Ext4Params, InodeMeta};
use super::units::{BlockCount, BlockNo};
use crate::partition::PartitionWindow;
use std::sync::Arc;

/// Builds an ext4 filesystem inside a [`PartitionWindow`].
#[derive(Debug)]
pub struct Ext4Builder {
    pub(super) window: PartitionWindow,
    pub(super) params: Ext4Params,
    pub(super) layout: Layout,
    pub(super) alloc: Allocator,
    pub(super) uuid: [u8; 16],
    pub(super) hash_seed: [u8; 16],
    pub(super) fs_seed: u32,
    /// `nodes[ino - 1]`; reserved inodes are `None`.
    pub(super) nodes: Vec<Option<Node>>,
    /// Every directory entry: (directory, name) → inode.
    pub(super) names: NameTable,
    /// Regular files' sizes, shared with their writers.
    pub(super) sizes: Arc<Sizes>,
    /// Extent tree blocks of the journal inode (none for a journal of at
    /// most 4 runs).
    pub(super) journal_tree: Vec<BlockNo>,
}

impl Ext4Builder {
    /// Lay out a new filesystem over the whole window. The window is zeroed
    /// first (a hole is punched where the platform allows), so whatever was
    /// there before is gone: read an old filesystem before calling this.
    pub fn new(window: PartitionWindow, params: Ext4Params) -> Result<Self, Ext4Error> {
        if params.label.len() > 16 {
            return Err(Ext4Error::BadName {
                dir: "filesystem label".into(),
                name: params.label.clone(),
                reason: "labels are at most 16 bytes",
            });
        }
        let size = window.len();
        let (layout, mut alloc) = Layout::new(size, &params)?;
        let ids = IdSource::new(&params, size);
        let uuid = params.uuid.unwrap_or_else(|| ids.uuid_v4(IdPurpose::Uuid));
        let hash_seed = params
            .hash_seed
            .unwrap_or_else(|| ids.uuid_v4(IdPurpose::HashSeed));
        let journal_tree = Self::reserve_journal_tree(&layout, &mut alloc, size)?;
        window.zero_range(0, window.len())?;
        let sizes = Arc::new(Sizes::new(layout.inodes_count()));
        let mut b = Self {
            window,
            params,
            layout,
            alloc,
            uuid,
            hash_seed,
            fs_seed: csum::fs_seed(&uuid),
            nodes: Vec::new(),
            names: NameTable::new(),
            sizes,
            journal_tree,
        };
        b.add_root_and_lost_found()?;
        Ok(b)
    }

    /// Blocks for the journal's extent tree (only for journals of more
    /// than 4 runs).
    fn reserve_journal_tree(
        layout: &Layout,
        alloc: &mut Allocator,
        size: u64,
    ) -> Result<Vec<BlockNo>, Ext4Error> {
        let jtree = extent::tree_block_count(layout.journal.len());
        Ok(alloc
            .alloc_runs(jtree, BlockCount(1))
            .ok_or_else(|| Ext4Error::NoSpace {
                what: "journal".into(),
                needed: jtree.bytes_saturating(),
                available: 0,
                size,
            })?
            .iter()
            .map(|r| r.start)
            .collect())
    }

    /// The root directory (inode 2) and `lost+found` (inode 11, 4 blocks).
    fn add_root_and_lost_found(&mut self) -> Result<(), Ext4Error> {
        self.nodes
            .resize_with(us(u64::from(FIRST_INO - 1)), || None);
        let t = self.params.time;
        self.nodes[1] = Some(Node {
            meta: PackedMeta::pack(&InodeMeta::new(0o755, t)),
            links: 2,
            parent: ROOT_INO.0,
            name_at: NO_NAME,
            kind: Kind::empty_dir(),
        });
        let lf = self.mkdir(ROOT_INO, b"lost+found", InodeMeta::new(0o700, t))?;
        debug_assert_eq!(lf.0, LOST_FOUND_INO);
        if let Kind::Dir { min_blocks, .. } = &mut self.node_mut(LOST_FOUND_INO)?.kind {
            *min_blocks = LOST_FOUND_BLOCKS;
        }
        Ok(())
    }

    /// The directory name hasher of this filesystem (its seed and signedness).
    pub(super) fn dir_hasher(&self) -> DirHasher {
        DirHasher::new(&self.hash_seed, self.params.signed_hash)
    }

    /// The filesystem UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// Total inodes of the layout.
    pub fn inode_count(&self) -> u64 {
        self.layout.inodes_count()
    }

    /// Bytes still free for file data (blocks after the allocation cursor).
    pub fn free_bytes(&self) -> u64 {
        self.alloc.free_after_cursor().bytes_saturating()
    }

    /// Inodes still free.
    pub fn free_inodes(&self) -> u64 {
        self.layout
            .inodes_count()
            .saturating_sub(self.nodes.len() as u64)
    }

    pub(super) fn node(&self, ino: u32) -> Result<&Node, Ext4Error> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(us(u64::from(i))))
            .and_then(Option::as_ref)
            .ok_or(Ext4Error::UnknownInode { ino })
    }

    pub(super) fn node_mut(&mut self, ino: u32) -> Result<&mut Node, Ext4Error> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get_mut(us(u64::from(i))))
            .and_then(Option::as_mut)
            .ok_or(Ext4Error::UnknownInode { ino })
    }

    /// `/a/b/c` path of an inode's first link, for messages.
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = ino.0;
        // At most 4096 levels: a cycle (a bug) can not hang a message.
        for _ in 0..4096 {
            if cur == ROOT_INO.0 {
                break;
            }
            match self.node(cur) {
                Ok(n) => {
                    parts.push(String::from_utf8_lossy(self.names.name(n.name_at)).into_owned());
                    cur = n.parent;
                }
                Err(_) => break,
            }
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// The path of `ino`'s first link below directory `from`, as bytes
    /// (`a/b/c`); `None` when `ino` is not below `from`.
    pub(super) fn relative_path(&self, from: Ino, ino: Ino) -> Option<Vec<u8>> {
        let mut parts: Vec<&[u8]> = Vec::new();
        let mut cur = ino.0;
        // At most 4096 levels, as path_of.
        for _ in 0..4096 {
            if cur == from.0 {
                parts.reverse();
                return Some(parts.join(&b'/'));
            }
            if cur == ROOT_INO.0 {
                return None;
            }
            let n = self.node(cur).ok()?;
            parts.push(self.names.name(n.name_at));
            cur = n.parent;
        }
        None
    }

    pub(super) fn child_path(&self, parent: Ino, name: &[u8]) -> String {
        let p = self.path_of(parent);
        let sep = if p.ends_with('/') { "" } else { "/" };
        format!("{p}{sep}{}", String::from_utf8_lossy(name))
    }

    /// Look up `name` in directory `dir`.
    pub fn lookup_in(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        match &self.node(dir.0).ok()?.kind {
            Kind::Dir { .. } => self.names.get(dir.0, name).map(Ino),
            _ => None,
        }
    }

    /// Look up a `/`-separated path from the root.
    pub fn lookup(&self, path: impl AsRef<[u8]>) -> Option<Ino> {
        let mut cur = ROOT_INO;
        for comp in path
            .as_ref()
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            cur = self.lookup_in(cur, comp)?;
        }
        Some(cur)
    }

    /// True if `ino` is a directory.
    pub fn is_dir(&self, ino: Ino) -> bool {
        matches!(self.node(ino.0).map(|n| &n.kind), Ok(Kind::Dir { .. }))
    }

    /// True if `ino` is a symbolic link.
    pub fn is_symlink(&self, ino: Ino) -> bool {
        matches!(self.node(ino.0).map(|n| &n.kind), Ok(Kind::Symlink { .. }))
    }

    pub(super) fn check_new_entry(&self, parent: Ino, name: &[u8]) -> Result<(), Ext4Error> {
        if let Err(reason) = is_valid_name(name) {
            return Err(Ext4Error::BadName {
                dir: self.path_of(parent),
                name: String::from_utf8_lossy(name).into_owned(),
                reason,
            });
        }
        match &self.node(parent.0)?.kind {
            Kind::Dir { .. } => {
                if self.names.get(parent.0, name).is_some() {
                    return Err(Ext4Error::Exists {
                        path: self.child_path(parent, name),
                    });
                }
                Ok(())
            }
            _ => Err(Ext4Error::NotADirectory {
                path: self.path_of(parent),
                reason: "not a directory",
            }),
        }
    }

    pub(super) fn new_inode(
        &mut self,
        parent: Ino,
        name: &[u8],
        meta: InodeMeta,
        kind: Kind,
    ) -> Result<Ino, Ext4Error> {
        let next = u64_of(self.nodes.len()).saturating_add(1); // <= 2^32 + 1
        if next > self.layout.inodes_count() {
            return Err(Ext4Error::NoInodes {
                path: self.child_path(parent, name),
                count: self.layout.inodes_count(),
            });
        }
        let ino =
            u32::try_from(next).map_err(|_| Ext4Error::Internal("inode number overflow".into()))?;
        let is_dir = matches!(kind, Kind::Dir { .. });
        let name_at = self.add_name(parent, name, ino)?;
        self.nodes.push(Some(Node {
            meta: PackedMeta::pack(&meta),
            links: if is_dir { 2 } else { 1 },
            parent: parent.0,
            name_at,
            kind,
        }));
        if let Kind::Dir { subdirs, .. } = &mut self.node_mut(parent.0)?.kind {
            if is_dir {
                *subdirs = subdirs.saturating_add(1); // < inode count <= 2^32
            }
        }
        Ok(Ino(ino))
    }

    /// Enter `name` → `ino` in directory `parent` (checked: a directory
    /// without that name); returns the name's offset in the name table.
    fn add_name(&mut self, parent: Ino, name: &[u8], ino: u32) -> Result<u32, Ext4Error> {
        self.names.insert(parent.0, name, ino).map_err(|_| {
            Ext4Error::Internal(format!(
                "{}: names take more than 4 GiB",
                self.child_path(parent, name)
            ))
        })
    }

    /// Create directory `name` in `parent`.
    pub fn mkdir(&mut self, parent: Ino, name: &[u8], meta: InodeMeta) -> Result<Ino, Ext4Error> {
        self.check_new_entry(parent, name)?;
        self.new_inode(parent, name, meta, Kind::empty_dir())
    }

    /// Create every missing directory of `path` (from the root) with `meta`;
    /// returns the last one. Existing directories are kept as they are.
    pub fn mkdir_all(&mut self, path: impl AsRef<[u8]>, meta: InodeMeta) -> Result<Ino, Ext4Error> {
        let mut cur = ROOT_INO;
        for comp in path
            .as_ref()
            .split(|&c| c == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            cur = match self.lookup_in(cur, comp) {
                Some(i) if self.is_dir(i) => i,
                Some(_) => {
                    return Err(Ext4Error::NotADirectory {
                        path: self.child_path(cur, comp),
                        reason: "exists and is not a directory",
                    })
                }
                None => self.mkdir(cur, comp, meta)?,
            };
        }
        Ok(cur)
    }

    /// Create symlink `name` → `target` in `parent`.
    pub fn symlink(
        &mut self,
        parent: Ino,
        name: &[u8],
        target: &[u8],
        meta: InodeMeta,
    ) -> Result<Ino, Ext4Error> {
        self.check_new_entry(parent, name)?;
        let path = self.child_path(parent, name);
        if target.is_empty() || target.len() >= BLOCK_SIZE_USIZE || target.contains(&0) {
            return Err(Ext4Error::BadSize {
                path,
                size: target.len() as u64,
                reason: "symlink targets must be 1 to 4095 bytes, without NUL",
            });
        }
        let block = if target.len() < FAST_SYMLINK_MAX {
            None
        } else {
            let runs = self.alloc_data(&path, BlockCount(1))?;
            Some(runs.first().map(|r| r.start).ok_or_else(|| {
                Ext4Error::Internal(format!("{path}: no block for the symlink target"))
            })?)
        };
        self.new_inode(
            parent,
            name,
            meta,
            Kind::Symlink {
                target: Box::from(target),
                block,
            },
        )
    }

    /// Create a FIFO, socket or device node.
    pub fn mknod(
        &mut self,
        parent: Ino,
        name: &[u8],
        kind: SpecialKind,
        meta: InodeMeta,
    ) -> Result<Ino, Ext4Error> {
        self.check_new_entry(parent, name)?;
        self.new_inode(parent, name, meta, Kind::Special(kind))
    }

    /// Add a hard link `name` in `parent` to the existing non-directory `target`.
    pub fn hard_link(&mut self, parent: Ino, name: &[u8], target: Ino) -> Result<(), Ext4Error> {
        self.check_new_entry(parent, name)?;
        let path = self.child_path(parent, name);
        let node = self.node_mut(target.0)?;
        if matches!(node.kind, Kind::Dir { .. }) {
            return Err(Ext4Error::NotADirectory {
                path,
                reason: "hard links to directories are not allowed",
            });
        }
        if node.links >= LINK_MAX {
            return Err(Ext4Error::TooManyLinks { path });
        }
        node.links = node.links.saturating_add(1); // < LINK_MAX (checked above)
        self.add_name(parent, name, target.0)?;
        Ok(())
    }

    /// Replace the owner, permissions and times of an inode.
    pub fn set_meta(&mut self, ino: Ino, meta: InodeMeta) -> Result<(), Ext4Error> {
        self.node_mut(ino.0)?.meta = PackedMeta::pack(&meta);
        Ok(())
    }
}
