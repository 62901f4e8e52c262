//! The in-memory tree the builder grows: one `Node` per inode, with what
//! each kind needs at `finish()` (children, reserved runs, link targets).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::alloc::Run;
use super::inode::{self, S_IFDIR, S_IFLNK, S_IFREG};
use super::layout::FIRST_INO;
use super::params::InodeMeta;
use super::units::BlockNo;

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
/// The resize inode (`EXT2_RESIZE_INO`).
pub(super) const RESIZE_INO: u32 = 7;
/// `lost+found` is the first non-reserved inode, as mke2fs makes it.
pub(super) const LOST_FOUND_INO: u32 = FIRST_INO;
/// `lost+found` gets 4 blocks (16 KiB) like mke2fs makes it, so e2fsck can
/// reconnect files without allocating.
pub(super) const LOST_FOUND_BLOCKS: usize = 4;
/// ext4's link count limit (`EXT4_LINK_MAX`); a directory with more
/// subdirectories gets link count 1 (`dir_nlink`).
pub(super) const LINK_MAX: u32 = 65_000;
/// Symlink targets shorter than this live in the inode ("fast" symlinks).
pub(super) const FAST_SYMLINK_MAX: usize = 60;

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

impl SpecialKind {
    /// The `S_IF*` type bits of the inode mode.
    pub(super) fn mode_type(self) -> u16 {
        match self {
            Self::Fifo => inode::S_IFIFO,
            Self::Socket => inode::S_IFSOCK,
            Self::CharDevice(..) => inode::S_IFCHR,
            Self::BlockDevice(..) => inode::S_IFBLK,
        }
    }
}

/// What an inode is, with what `finish()` needs to write it.
#[derive(Debug)]
pub(super) enum Kind {
    Dir {
        children: BTreeMap<Box<[u8]>, u32>,
        subdirs: u32,
        min_blocks: usize,
    },
    File {
        runs: Vec<Run>,
        tree: Vec<BlockNo>,
        limit: Arc<AtomicU64>,
    },
    Symlink {
        target: Box<[u8]>,
        block: Option<BlockNo>,
    },
    Special(SpecialKind),
}

impl Kind {
    /// An empty directory of one block.
    pub(super) fn empty_dir() -> Self {
        Self::Dir {
            children: BTreeMap::new(),
            subdirs: 0,
            min_blocks: 1,
        }
    }

    /// The `S_IF*` type bits of the inode mode.
    pub(super) fn mode_type(&self) -> u16 {
        match self {
            Self::Dir { .. } => S_IFDIR,
            Self::File { .. } => S_IFREG,
            Self::Symlink { .. } => S_IFLNK,
            Self::Special(s) => s.mode_type(),
        }
    }
}

/// One inode of the tree.
#[derive(Debug)]
pub(super) struct Node {
    pub perm_meta: InodeMeta,
    pub links: u32,
    /// Parent directory and name of the first link (for paths in messages).
    pub parent: u32,
    pub name: Box<[u8]>,
    pub kind: Kind,
}

/// Why `name` can not be a directory entry, if it can not.
pub(super) fn is_valid_name(name: &[u8]) -> Result<(), &'static str> {
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
