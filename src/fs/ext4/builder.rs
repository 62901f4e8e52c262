//! `Ext4Builder`: a streaming `mke2fs -d`.
//!
//! Create the tree (directories, files with their sizes, symlinks, hard
//! links); every regular file gets its blocks reserved at once and a
//! [`FileWriter`] to stream its bytes into them, from any thread. `finish()`
//! writes all metadata: directories, extent trees, inode tables, bitmaps,
//! group descriptors, the journal, the resize inode and the superblocks.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::alloc::{Allocator, Run};
use super::bytes::{get_u32, hi32, lo16, lo32, put_u32, u64_of, us};
use super::csum;
use super::dir;
use super::error::Ext4Error;
use super::extent::{self, Extent};
use super::file::FileWriter;
use super::group::{set_bits, GroupDesc, BG_INODE_UNINIT, BG_INODE_ZEROED};
use super::inode::{self, RawInode, EXTENTS_FL, S_IFDIR, S_IFLNK, S_IFREG};
use super::journal;
use super::layout::{
    Layout, ADDR_PER_BLOCK, BLOCKS_PER_GROUP, BLOCK_SIZE, BLOCK_SIZE_USIZE, DESC_SIZE, FIRST_INO,
    INODE_SIZE,
};
use super::params::{Ext4Params, InodeMeta, Timestamp};
use super::superblock::{self, SuperInfo, JOURNAL_INO};
use crate::partition::PartitionWindow;

/// An inode of the filesystem being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ino(pub(crate) u32);

impl Ino {
    /// The inode number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// The root directory.
pub const ROOT_INO: Ino = Ino(2);
const RESIZE_INO: u32 = 7;
const LOST_FOUND_INO: u32 = FIRST_INO;
/// `lost+found` gets 4 blocks (16 KiB) like mke2fs makes it, so e2fsck can
/// reconnect files without allocating.
const LOST_FOUND_BLOCKS: usize = 4;
/// ext4's link count limit (`EXT4_LINK_MAX`); a directory with more
/// subdirectories gets link count 1 (`dir_nlink`).
const LINK_MAX: u32 = 65_000;
/// Symlink targets shorter than this live in the inode ("fast" symlinks).
const FAST_SYMLINK_MAX: usize = 60;
/// Largest file: 2^32 logical blocks of 4 KiB (16 TiB), ext4's extent limit.
const MAX_FILE_SIZE: u64 = (1u64 << 32) * BLOCK_SIZE;

/// Special file kinds (for carried-over trees and archives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecialKind {
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
    /// Character device with (major, minor).
    CharDevice(u32, u32),
    /// Block device with (major, minor).
    BlockDevice(u32, u32),
}

#[derive(Debug)]
enum Kind {
    Dir {
        children: BTreeMap<Box<[u8]>, u32>,
        subdirs: u32,
        min_blocks: usize,
    },
    File {
        runs: Vec<Run>,
        tree: Vec<u64>,
        limit: Arc<AtomicU64>,
    },
    Symlink {
        target: Box<[u8]>,
        block: Option<u64>,
    },
    Special(SpecialKind),
}

#[derive(Debug)]
struct Node {
    perm_meta: InodeMeta,
    links: u32,
    /// Parent directory and name of the first link (for paths in messages).
    parent: u32,
    name: Box<[u8]>,
    kind: Kind,
}

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

/// Builds an ext4 filesystem inside a [`PartitionWindow`].
#[derive(Debug)]
pub struct Ext4Builder {
    window: PartitionWindow,
    params: Ext4Params,
    layout: Layout,
    alloc: Allocator,
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    fs_seed: u32,
    /// `nodes[ino - 1]`; reserved inodes are `None`.
    nodes: Vec<Option<Node>>,
    journal_tree: Vec<u64>,
}

fn is_valid_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("empty name")
    } else if name.len() > 255 {
        Err("longer than 255 bytes")
    } else if name.contains(&b'/') || name.contains(&0) {
        Err("contains '/' or NUL")
    } else if name == b"." || name == b".." {
        Err("'.' and '..' are reserved")
    } else {
        Ok(())
    }
}

/// Derive 16 bytes from the inputs (reproducible builds) or take them from
/// the OS's random source.
fn make_id(
    deterministic: bool,
    purpose: &str,
    label: &str,
    size: u64,
    time: Timestamp,
) -> [u8; 16] {
    let mut out = [0u8; 16];
    if !deterministic {
        use std::io::Read;
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            if f.read_exact(&mut out).is_ok() {
                return out;
            }
        }
    }
    for (i, chunk) in out.chunks_mut(4).enumerate() {
        let mut c = crc32c::crc32c(format!("image-creator:{purpose}:{i}:").as_bytes());
        c = crc32c::crc32c_append(c, label.as_bytes());
        c = crc32c::crc32c_append(c, &size.to_le_bytes());
        c = crc32c::crc32c_append(c, &time.secs.to_le_bytes());
        chunk.copy_from_slice(&c.to_le_bytes());
    }
    out
}

fn as_uuid_v4(mut b: [u8; 16]) -> [u8; 16] {
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    b
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
        let uuid = params.uuid.unwrap_or_else(|| {
            as_uuid_v4(make_id(
                params.deterministic,
                "uuid",
                &params.label,
                size,
                params.time,
            ))
        });
        let hash_seed = params.hash_seed.unwrap_or_else(|| {
            as_uuid_v4(make_id(
                params.deterministic,
                "hash-seed",
                &params.label,
                size,
                params.time,
            ))
        });
        let fs_seed = csum::fs_seed(&uuid);
        // Journal extent tree blocks (only for journals of more than 4 runs).
        let jtree = extent::tree_blocks(layout.journal.len()) as u64;
        let journal_tree = alloc
            .alloc_runs(jtree, 1)
            .ok_or_else(|| Ext4Error::NoSpace {
                what: "journal".into(),
                needed: jtree * BLOCK_SIZE,
                available: 0,
                size,
            })?
            .iter()
            .map(|r| r.start)
            .collect();
        window.zero_range(0, window.len())?;
        let mut b = Self {
            window,
            params,
            layout,
            alloc,
            uuid,
            hash_seed,
            fs_seed,
            nodes: Vec::new(),
            journal_tree,
        };
        b.nodes.resize_with(us(u64::from(FIRST_INO - 1)), || None);
        let t = b.params.time;
        b.nodes[1] = Some(Node {
            perm_meta: InodeMeta::new(0o755, t),
            links: 2,
            parent: 2,
            name: Box::from(&b""[..]),
            kind: Kind::Dir {
                children: BTreeMap::new(),
                subdirs: 0,
                min_blocks: 1,
            },
        });
        let lf = b.mkdir(ROOT_INO, b"lost+found", InodeMeta::new(0o700, t))?;
        debug_assert_eq!(lf.0, LOST_FOUND_INO);
        if let Some(Some(Node {
            kind: Kind::Dir { min_blocks, .. },
            ..
        })) = b.nodes.get_mut(us(u64::from(LOST_FOUND_INO - 1)))
        {
            *min_blocks = LOST_FOUND_BLOCKS;
        }
        Ok(b)
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
        self.alloc.free_after_cursor() * BLOCK_SIZE
    }

    /// Inodes still free.
    pub fn free_inodes(&self) -> u64 {
        self.layout
            .inodes_count()
            .saturating_sub(self.nodes.len() as u64)
    }

    fn node(&self, ino: u32) -> Result<&Node, Ext4Error> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get(us(u64::from(i))))
            .and_then(Option::as_ref)
            .ok_or(Ext4Error::UnknownInode { ino })
    }

    fn node_mut(&mut self, ino: u32) -> Result<&mut Node, Ext4Error> {
        ino.checked_sub(1)
            .and_then(|i| self.nodes.get_mut(us(u64::from(i))))
            .and_then(Option::as_mut)
            .ok_or(Ext4Error::UnknownInode { ino })
    }

    /// `/a/b/c` path of an inode's first link, for messages.
    pub fn path_of(&self, ino: Ino) -> String {
        let mut parts: Vec<String> = Vec::new();
        let mut cur = ino.0;
        let mut guard = 0;
        while cur != ROOT_INO.0 && guard < 4096 {
            match self.node(cur) {
                Ok(n) => {
                    parts.push(String::from_utf8_lossy(&n.name).into_owned());
                    cur = n.parent;
                }
                Err(_) => break,
            }
            guard += 1;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn child_path(&self, parent: Ino, name: &[u8]) -> String {
        let p = self.path_of(parent);
        let sep = if p.ends_with('/') { "" } else { "/" };
        format!("{p}{sep}{}", String::from_utf8_lossy(name))
    }

    /// Look up `name` in directory `dir`.
    pub fn lookup_in(&self, dir: Ino, name: &[u8]) -> Option<Ino> {
        match &self.node(dir.0).ok()?.kind {
            Kind::Dir { children, .. } => children.get(name).map(|&i| Ino(i)),
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

    fn check_new_entry(&self, parent: Ino, name: &[u8]) -> Result<(), Ext4Error> {
        if let Err(reason) = is_valid_name(name) {
            return Err(Ext4Error::BadName {
                dir: self.path_of(parent),
                name: String::from_utf8_lossy(name).into_owned(),
                reason,
            });
        }
        match &self.node(parent.0)?.kind {
            Kind::Dir { children, .. } => {
                if children.contains_key(name) {
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

    fn new_inode(
        &mut self,
        parent: Ino,
        name: &[u8],
        meta: InodeMeta,
        kind: Kind,
    ) -> Result<Ino, Ext4Error> {
        let next = self.nodes.len() as u64 + 1;
        if next > self.layout.inodes_count() {
            return Err(Ext4Error::NoInodes {
                path: self.child_path(parent, name),
                count: self.layout.inodes_count(),
            });
        }
        let ino =
            u32::try_from(next).map_err(|_| Ext4Error::Internal("inode number overflow".into()))?;
        let is_dir = matches!(kind, Kind::Dir { .. });
        self.nodes.push(Some(Node {
            perm_meta: InodeMeta {
                perm: meta.perm & 0o7777,
                ..meta
            },
            links: if is_dir { 2 } else { 1 },
            parent: parent.0,
            name: Box::from(name),
            kind,
        }));
        let p = self.node_mut(parent.0)?;
        if let Kind::Dir {
            children, subdirs, ..
        } = &mut p.kind
        {
            children.insert(Box::from(name), ino);
            if is_dir {
                *subdirs += 1;
            }
        }
        Ok(Ino(ino))
    }

    /// Create directory `name` in `parent`.
    pub fn mkdir(&mut self, parent: Ino, name: &[u8], meta: InodeMeta) -> Result<Ino, Ext4Error> {
        self.check_new_entry(parent, name)?;
        self.new_inode(
            parent,
            name,
            meta,
            Kind::Dir {
                children: BTreeMap::new(),
                subdirs: 0,
                min_blocks: 1,
            },
        )
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

    /// Create regular file `name` of exactly `size` bytes in `parent` and
    /// reserve its blocks now (allocation order = call order, so the layout
    /// never depends on when data arrives). Stream the bytes with the
    /// returned writer; bytes never written read as zeros.
    pub fn create_file(
        &mut self,
        parent: Ino,
        name: &[u8],
        size: u64,
        meta: InodeMeta,
    ) -> Result<FileWriter, Ext4Error> {
        self.check_new_entry(parent, name)?;
        let path = self.child_path(parent, name);
        if size > MAX_FILE_SIZE {
            return Err(Ext4Error::BadSize {
                path,
                size,
                reason: "larger than ext4's 16 TiB file limit",
            });
        }
        let nblocks = size.div_ceil(BLOCK_SIZE);
        let runs = self.alloc_data(&path, nblocks)?;
        let tree_n = extent::tree_blocks(runs.len()) as u64;
        let tree = match self.alloc_data(&path, tree_n) {
            Ok(t) => t.iter().flat_map(|r| r.start..r.end()).collect(),
            Err(e) => {
                for r in &runs {
                    self.release(*r)?;
                }
                return Err(e);
            }
        };
        let limit = Arc::new(AtomicU64::new(size));
        let runs_arc: Arc<[Run]> = Arc::from(runs.as_slice());
        let ino = match self.new_inode(
            parent,
            name,
            meta,
            Kind::File {
                runs,
                tree,
                limit: limit.clone(),
            },
        ) {
            Ok(i) => i,
            Err(e) => {
                for r in runs_arc.iter() {
                    self.release(*r)?;
                }
                return Err(e);
            }
        };
        Ok(FileWriter::new(
            ino.0,
            Arc::from(path.as_str()),
            self.window.clone(),
            runs_arc,
            limit,
        ))
    }

    fn release(&mut self, r: Run) -> Result<(), Ext4Error> {
        self.alloc
            .release(r.start, r.len)
            .map_err(Ext4Error::Internal)
    }

    fn alloc_data(&mut self, what: &str, nblocks: u64) -> Result<Vec<Run>, Ext4Error> {
        if nblocks == 0 {
            return Ok(Vec::new());
        }
        self.alloc
            .alloc_runs(nblocks, u64::from(self.params.max_extent_blocks.max(1)))
            .ok_or_else(|| Ext4Error::NoSpace {
                what: what.to_string(),
                needed: nblocks * BLOCK_SIZE,
                available: self.alloc.free_after_cursor() * BLOCK_SIZE,
                size: self.layout.blocks_count * BLOCK_SIZE,
            })
    }

    /// Shrink a file to `len` bytes (at most its reserved size), releasing
    /// the blocks past it. Use when a stream turned out shorter than planned.
    pub fn set_len(&mut self, file: Ino, len: u64) -> Result<(), Ext4Error> {
        let path = self.path_of(file);
        let node = self.node_mut(file.0)?;
        let Kind::File { runs, tree, limit } = &mut node.kind else {
            return Err(Ext4Error::BadSize {
                path,
                size: len,
                reason: "not a regular file",
            });
        };
        let cur = limit.load(Ordering::Relaxed);
        if len > cur {
            return Err(Ext4Error::BadSize {
                path,
                size: len,
                reason: "files can only shrink after creation",
            });
        }
        limit.store(len, Ordering::Relaxed);
        let keep = len.div_ceil(BLOCK_SIZE);
        let mut kept = 0u64;
        let mut new_runs = Vec::new();
        let mut freed = Vec::new();
        for r in runs.iter() {
            if kept >= keep {
                freed.push(*r);
            } else if kept + r.len > keep {
                let k = keep - kept;
                new_runs.push(Run {
                    start: r.start,
                    len: k,
                });
                freed.push(Run {
                    start: r.start + k,
                    len: r.len - k,
                });
                kept = keep;
            } else {
                new_runs.push(*r);
                kept += r.len;
            }
        }
        let need_tree = extent::tree_blocks(new_runs.len());
        let extra_tree: Vec<u64> = tree.drain(need_tree..).collect();
        *runs = new_runs;
        for r in freed {
            self.release(r)?;
        }
        for b in extra_tree {
            self.release(Run { start: b, len: 1 })?;
        }
        Ok(())
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
            Some(self.alloc_data(&path, 1)?[0].start)
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
        node.links += 1;
        if let Kind::Dir { children, .. } = &mut self.node_mut(parent.0)?.kind {
            children.insert(Box::from(name), target.0);
        }
        Ok(())
    }

    /// Replace the owner, permissions and times of an inode.
    pub fn set_meta(&mut self, ino: Ino, meta: InodeMeta) -> Result<(), Ext4Error> {
        self.node_mut(ino.0)?.perm_meta = InodeMeta {
            perm: meta.perm & 0o7777,
            ..meta
        };
        Ok(())
    }

    /// Write all metadata. Every `FileWriter` should be done writing: data
    /// written after this point lands in place but may race a later sync.
    pub fn finish(mut self) -> Result<FinishStats, Ext4Error> {
        let size = self.layout.blocks_count * BLOCK_SIZE;
        // 1. Directory blocks (allocated now that their sizes are known).
        let mut dir_blocks: BTreeMap<u32, (Vec<Run>, Vec<u64>)> = BTreeMap::new();
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
            dir_blocks.insert(ino, (runs, tree));
        }
        let _ = size;

        // 2. Inodes, directory contents, extent trees, symlink blocks.
        let mut group_used_inodes = vec![0u64; us(self.layout.groups)];
        let mut group_dirs = vec![0u32; us(self.layout.groups)];
        let ipg = self.layout.inodes_per_group;
        let last_ino = self.nodes.len() as u64;
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
            group_used_inodes[us(g)] = ino - g * ipg;
            let raw = self.inode_for(lo32(ino), &dir_blocks)?;
            if let Some(raw) = raw {
                if raw.mode & 0o170000 == S_IFDIR {
                    group_dirs[us(g)] += 1;
                }
                let off = us((ino - 1 - g * ipg) * INODE_SIZE);
                table[off..off + us(INODE_SIZE)]
                    .copy_from_slice(&raw.encode(lo32(ino), self.fs_seed));
            }
        }
        self.flush_table(table_group, &table)?;

        // 3. Journal superblock, resize inode blocks.
        let jsb = journal::superblock(
            lo32(BLOCK_SIZE),
            lo32(self.layout.journal_blocks),
            &self.uuid,
        );
        let j0 = self
            .layout
            .journal
            .first()
            .map(|r| r.start)
            .ok_or_else(|| Ext4Error::Internal("no journal".into()))?;
        self.window.write_at(j0 * BLOCK_SIZE, &jsb)?;
        self.write_resize_blocks()?;

        // 4. Bitmaps and group descriptors.
        let mut descs = Vec::with_capacity(us(self.layout.groups));
        let runs: Vec<Run> = self.alloc.used_runs().collect();
        let mut run_idx = 0usize;
        for g in 0..self.layout.groups {
            let gstart = g * BLOCKS_PER_GROUP;
            let gblocks = self.layout.blocks_in_group(g);
            let gend = gstart + gblocks;
            let mut bb = vec![0u8; BLOCK_SIZE_USIZE];
            let mut used = 0u64;
            while run_idx < runs.len() && runs[run_idx].end() <= gstart {
                run_idx += 1;
            }
            let mut k = run_idx;
            while k < runs.len() && runs[k].start < gend {
                let s = runs[k].start.max(gstart);
                let e = runs[k].end().min(gend);
                set_bits(&mut bb, us(s - gstart), us(e - gstart));
                used += e - s;
                k += 1;
            }
            // Bits past the end of a short last group are set (in use).
            set_bits(&mut bb, us(gblocks), BLOCK_SIZE_USIZE * 8);
            let meta = self.layout.groups_meta[us(g)];
            self.window.write_at(meta.block_bitmap * BLOCK_SIZE, &bb)?;
            let bb_csum = csum::raw(self.fs_seed, &bb[..us(BLOCKS_PER_GROUP / 8)]);

            let used_inodes = group_used_inodes[us(g)];
            let mut ib = vec![0u8; BLOCK_SIZE_USIZE];
            set_bits(&mut ib, 0, us(used_inodes));
            set_bits(&mut ib, us(ipg), BLOCK_SIZE_USIZE * 8);
            self.window.write_at(meta.inode_bitmap * BLOCK_SIZE, &ib)?;
            let ib_csum = csum::raw(self.fs_seed, &ib[..us(ipg / 8)]);
            let mut flags = BG_INODE_ZEROED;
            if used_inodes == 0 {
                flags |= BG_INODE_UNINIT;
            }
            descs.push(GroupDesc {
                block_bitmap: meta.block_bitmap,
                inode_bitmap: meta.inode_bitmap,
                inode_table: meta.inode_table,
                free_blocks: lo32(gblocks - used),    // <= 32768
                free_inodes: lo32(ipg - used_inodes), // <= 32768
                used_dirs: group_dirs[us(g)],
                flags,
                block_bitmap_csum: bb_csum,
                inode_bitmap_csum: ib_csum,
                itable_unused: lo32(ipg - used_inodes),
            });
        }
        let mut gdt = vec![0u8; us(self.layout.desc_blocks * BLOCK_SIZE)];
        for (g, d) in descs.iter().enumerate() {
            let off = g * us(DESC_SIZE);
            gdt[off..off + us(DESC_SIZE)].copy_from_slice(&d.encode(lo32(u64_of(g)), self.fs_seed));
        }

        // 5. Superblocks and descriptor tables, primary and backups.
        let free_blocks = self.alloc.free_count();
        let free_inodes = self.layout.inodes_count() - last_ino;
        let mut label = [0u8; 16];
        label[..self.params.label.len()].copy_from_slice(self.params.label.as_bytes());
        let jtree = self.journal_extent_tree()?;
        let mut jnl_blocks = [0u32; 17];
        for (i, w) in jnl_blocks.iter_mut().take(15).enumerate() {
            *w = get_u32(&jtree.i_block, 4 * i);
        }
        let jsize = self.layout.journal_blocks * BLOCK_SIZE;
        jnl_blocks[15] = hi32(jsize);
        jnl_blocks[16] = lo32(jsize);
        let info = SuperInfo {
            layout: &self.layout,
            free_blocks,
            free_inodes,
            uuid: self.uuid,
            label,
            hash_seed: self.hash_seed,
            signed_hash: self.params.signed_hash,
            time: self.params.time.encode().0,
            jnl_blocks,
        };
        for g in std::iter::once(0).chain(self.layout.backup_groups()) {
            let sb = superblock::encode(&info, g);
            let at = g * BLOCKS_PER_GROUP * BLOCK_SIZE;
            // The primary superblock sits 1024 bytes into block 0; backups at
            // the start of their group's first block.
            self.window.write_at(if g == 0 { 1024 } else { at }, &sb)?;
            self.window.write_at(at + BLOCK_SIZE, &gdt)?;
        }
        Ok(FinishStats {
            blocks: self.layout.blocks_count,
            free_blocks,
            inodes: self.layout.inodes_count(),
            used_inodes: last_ino,
            uuid: self.uuid,
        })
    }

    fn flush_table(&self, group: u64, table: &[u8]) -> Result<(), Ext4Error> {
        if group == u64::MAX || table.is_empty() {
            return Ok(());
        }
        let at = self.layout.groups_meta[us(group)].inode_table * BLOCK_SIZE;
        self.window.write_at(at, table)?;
        Ok(())
    }

    fn journal_extent_tree(&self) -> Result<extent::Tree, Ext4Error> {
        let extents = runs_to_extents(&self.layout.journal)?;
        let seed = csum::inode_seed(self.fs_seed, JOURNAL_INO, 0);
        extent::build(&extents, &self.journal_tree, seed).map_err(Ext4Error::Internal)
    }

    fn write_tree(&self, tree: &extent::Tree) -> Result<(), Ext4Error> {
        for (at, buf) in &tree.blocks {
            self.window.write_at(at * BLOCK_SIZE, buf)?;
        }
        Ok(())
    }

    /// The inode record for `ino` (writing its directory blocks, extent tree
    /// and symlink block on the way), or `None` for an unused reserved inode.
    fn inode_for(
        &self,
        ino: u32,
        dir_blocks: &BTreeMap<u32, (Vec<Run>, Vec<u64>)>,
    ) -> Result<Option<RawInode>, Ext4Error> {
        let t = self.params.time;
        let seed = csum::inode_seed(self.fs_seed, ino, 0);
        if ino == JOURNAL_INO {
            let tree = self.journal_extent_tree()?;
            self.write_tree(&tree)?;
            let blocks = self.layout.journal_blocks + self.journal_tree.len() as u64;
            return Ok(Some(RawInode {
                mode: S_IFREG | 0o600,
                meta: InodeMeta::new(0o600, t),
                size: self.layout.journal_blocks * BLOCK_SIZE,
                links: 1,
                sectors: blocks * (BLOCK_SIZE / 512),
                flags: EXTENTS_FL,
                i_block: tree.i_block,
            }));
        }
        if ino == RESIZE_INO {
            let Some(dind) = self.layout.resize_dind else {
                return Ok(None);
            };
            let mut i_block = [0u8; 60];
            put_u32(&mut i_block, 13 * 4, lo32(dind)); // < 2^32: resize inode only exists then // i_block[EXT2_DIND_BLOCK]
            let rsv = self.layout.reserved_gdt_blocks;
            let backups = self.layout.backup_groups().count() as u64;
            let apb = ADDR_PER_BLOCK;
            return Ok(Some(RawInode {
                mode: S_IFREG | 0o600,
                meta: InodeMeta::new(0o600, t),
                // What mke2fs records: the span a double-indirect map covers.
                size: (apb * apb + apb + 12) * BLOCK_SIZE,
                links: 1,
                sectors: (1 + rsv * (1 + backups)) * (BLOCK_SIZE / 512),
                flags: 0,
                i_block,
            }));
        }
        let Some(Some(node)) = self.nodes.get(us(u64::from(ino)).wrapping_sub(1)) else {
            return Ok(None);
        };
        let meta = node.perm_meta;
        let perm = meta.perm & 0o7777;
        let raw = match &node.kind {
            Kind::Dir {
                children, subdirs, ..
            } => {
                let (runs, tree_at) = dir_blocks.get(&ino).ok_or_else(|| {
                    Ext4Error::Internal(format!("no blocks for directory inode {ino}"))
                })?;
                let parent = if ino == ROOT_INO.0 {
                    ROOT_INO.0
                } else {
                    node.parent
                };
                let mut entries = vec![
                    dir::Entry {
                        name: b".",
                        ino,
                        file_type: dir::FT_DIR,
                    },
                    dir::Entry {
                        name: b"..",
                        ino: parent,
                        file_type: dir::FT_DIR,
                    },
                ];
                for (name, &child) in children {
                    let ft = self.file_type_of(child)?;
                    entries.push(dir::Entry {
                        name,
                        ino: child,
                        file_type: ft,
                    });
                }
                let nblocks: u64 = runs.iter().map(|r| r.len).sum();
                let blocks =
                    dir::build_blocks(&entries, us(nblocks), seed).map_err(Ext4Error::Internal)?;
                let mut bi = blocks.iter();
                for r in runs {
                    for b in r.start..r.end() {
                        let data = bi
                            .next()
                            .ok_or_else(|| Ext4Error::Internal("directory block count".into()))?;
                        self.window.write_at(b * BLOCK_SIZE, data)?;
                    }
                }
                let tree = extent::build(&runs_to_extents(runs)?, tree_at, seed)
                    .map_err(Ext4Error::Internal)?;
                self.write_tree(&tree)?;
                let links = 2 + subdirs;
                RawInode {
                    mode: S_IFDIR | perm,
                    meta,
                    size: nblocks * BLOCK_SIZE,
                    links: if links > LINK_MAX { 1 } else { lo16(links) },
                    sectors: (nblocks + tree_at.len() as u64) * (BLOCK_SIZE / 512),
                    flags: EXTENTS_FL,
                    i_block: tree.i_block,
                }
            }
            Kind::File { runs, tree, limit } => {
                let t = extent::build(&runs_to_extents(runs)?, tree, seed)
                    .map_err(Ext4Error::Internal)?;
                self.write_tree(&t)?;
                let nblocks: u64 = runs.iter().map(|r| r.len).sum();
                RawInode {
                    mode: S_IFREG | perm,
                    meta,
                    size: limit.load(Ordering::Relaxed),
                    links: lo16(node.links), // <= LINK_MAX
                    sectors: (nblocks + tree.len() as u64) * (BLOCK_SIZE / 512),
                    flags: EXTENTS_FL,
                    i_block: t.i_block,
                }
            }
            Kind::Symlink { target, block } => {
                let mut i_block = [0u8; 60];
                let (flags, sectors) = match block {
                    None => {
                        i_block[..target.len()].copy_from_slice(target);
                        (0, 0)
                    }
                    Some(b) => {
                        let mut data = vec![0u8; BLOCK_SIZE_USIZE];
                        data[..target.len()].copy_from_slice(target);
                        self.window.write_at(b * BLOCK_SIZE, &data)?;
                        let t = extent::build(
                            &[Extent {
                                logical: 0,
                                len: 1,
                                physical: *b,
                            }],
                            &[],
                            seed,
                        )
                        .map_err(Ext4Error::Internal)?;
                        i_block = t.i_block;
                        (EXTENTS_FL, BLOCK_SIZE / 512)
                    }
                };
                RawInode {
                    mode: S_IFLNK | 0o777,
                    meta: InodeMeta {
                        perm: 0o777,
                        ..meta
                    },
                    size: target.len() as u64,
                    links: lo16(node.links), // <= LINK_MAX
                    sectors,
                    flags,
                    i_block,
                }
            }
            Kind::Special(kind) => {
                let mut i_block = [0u8; 60];
                let (ty, dev) = match *kind {
                    SpecialKind::Fifo => (inode::S_IFIFO, None),
                    SpecialKind::Socket => (inode::S_IFSOCK, None),
                    SpecialKind::CharDevice(ma, mi) => (inode::S_IFCHR, Some((ma, mi))),
                    SpecialKind::BlockDevice(ma, mi) => (inode::S_IFBLK, Some((ma, mi))),
                };
                if let Some((major, minor)) = dev {
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
                    mode: ty | perm,
                    meta,
                    size: 0,
                    links: lo16(node.links), // <= LINK_MAX
                    sectors: 0,
                    flags: 0,
                    i_block,
                }
            }
        };
        Ok(Some(raw))
    }

    fn file_type_of(&self, ino: u32) -> Result<u8, Ext4Error> {
        let n = self.node(ino)?;
        let mode = match &n.kind {
            Kind::Dir { .. } => S_IFDIR,
            Kind::File { .. } => S_IFREG,
            Kind::Symlink { .. } => S_IFLNK,
            Kind::Special(SpecialKind::Fifo) => inode::S_IFIFO,
            Kind::Special(SpecialKind::Socket) => inode::S_IFSOCK,
            Kind::Special(SpecialKind::CharDevice(..)) => inode::S_IFCHR,
            Kind::Special(SpecialKind::BlockDevice(..)) => inode::S_IFBLK,
        };
        Ok(inode::dirent_type(mode))
    }

    /// The resize inode's double-indirect block and the primary reserved GDT
    /// blocks, which (as its indirect blocks) list their backup copies.
    fn write_resize_blocks(&self) -> Result<(), Ext4Error> {
        let Some(dind) = self.layout.resize_dind else {
            return Ok(());
        };
        let rsv = self.layout.reserved_gdt_blocks;
        let desc = self.layout.desc_blocks;
        let backups: Vec<u64> = self.layout.backup_groups().collect();
        let mut dind_buf = vec![0u8; BLOCK_SIZE_USIZE];
        for i in 0..rsv {
            let pblk = 1 + desc + i;
            let slot = us((desc + i) % ADDR_PER_BLOCK);
            put_u32(&mut dind_buf, slot * 4, lo32(pblk));
            let mut ind = vec![0u8; BLOCK_SIZE_USIZE];
            for (k, g) in backups.iter().enumerate().take(us(ADDR_PER_BLOCK)) {
                put_u32(&mut ind, k * 4, lo32(pblk + g * BLOCKS_PER_GROUP));
            }
            self.window.write_at(pblk * BLOCK_SIZE, &ind)?;
        }
        self.window.write_at(dind * BLOCK_SIZE, &dind_buf)?;
        Ok(())
    }
}

fn runs_to_extents(runs: &[Run]) -> Result<Vec<Extent>, Ext4Error> {
    let mut logical = 0u64;
    let mut out = Vec::with_capacity(runs.len());
    for r in runs {
        out.push(Extent {
            logical: u32::try_from(logical)
                .map_err(|_| Ext4Error::Internal("logical block past 2^32".into()))?,
            len: u16::try_from(r.len)
                .map_err(|_| Ext4Error::Internal("extent longer than 32768 blocks".into()))?,
            physical: r.start,
        });
        logical += r.len;
    }
    Ok(out)
}
