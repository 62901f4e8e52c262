//! The in-memory tree the builder grows: one `Node` per inode, with what
//! each kind needs at `finish()` (children, reserved runs, link targets).

use super::alloc::Run;
use super::inode::{self, S_IFDIR, S_IFLNK, S_IFREG};
use super::layout::FIRST_INO;
use super::params::{InodeMeta, Timestamp};
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
pub(super) const LOST_FOUND_BLOCKS: u32 = 4;
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

/// A file's reserved runs, in logical order: most files have one, held
/// inline (no allocation).
#[derive(Debug)]
pub(super) enum Runs {
    One(Run),
    Many(Box<[Run]>),
}

impl Runs {
    pub(super) fn new(runs: Vec<Run>) -> Self {
        match runs.as_slice() {
            [one] => Self::One(*one),
            _ => Self::Many(runs.into_boxed_slice()),
        }
    }

    pub(super) fn as_slice(&self) -> &[Run] {
        match self {
            Self::One(r) => std::slice::from_ref(r),
            Self::Many(runs) => runs,
        }
    }
}

/// What an inode is, with what `finish()` needs to write it. A
/// directory's entries live in the builder's name table; a file's size in
/// its size table.
#[derive(Debug)]
pub(super) enum Kind {
    Dir {
        subdirs: u32,
        min_blocks: u32,
    },
    File {
        runs: Runs,
        tree: Box<[BlockNo]>,
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
    pub meta: PackedMeta,
    pub links: u32,
    /// Parent directory and name of the first link (for paths in
    /// messages): the name's offset in the builder's name table.
    pub parent: u32,
    pub name_at: u32,
    pub kind: Kind,
}

/// `name_at` of the root, which has no name.
pub(super) const NO_NAME: u32 = u32::MAX;

/// [`InodeMeta`] in 44 bytes instead of 88: each time as ext4 stores it
/// (32-bit seconds and the `_extra` word of epoch bits and nanoseconds),
/// which is all the builder ever writes of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PackedMeta {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    /// (seconds, extra) of atime, mtime, ctime, crtime.
    times: [(u32, u32); 4],
}

/// The timestamp whose ext4 encoding is (`lo`, `extra`): the one that
/// encodes the same way, with seconds in ext4's range (1901 to 2446).
pub(super) fn decode_time(lo: u32, extra: u32) -> Timestamp {
    let epoch = i64::from(extra & 3);
    Timestamp {
        secs: i64::from(lo as i32).wrapping_add(epoch << 32),
        nanos: extra >> 2,
    }
}

impl PackedMeta {
    pub(super) fn pack(m: &InodeMeta) -> Self {
        let times = [m.atime, m.mtime, m.ctime, m.crtime].map(Timestamp::encode);
        Self {
            perm: m.perm & 0o7777,
            uid: m.uid,
            gid: m.gid,
            times,
        }
    }

    /// The metadata back; it encodes exactly as the packed one did.
    pub(super) fn unpack(&self) -> InodeMeta {
        let [atime, mtime, ctime, crtime] = self.times.map(|(lo, extra)| decode_time(lo, extra));
        InodeMeta {
            perm: self.perm,
            uid: self.uid,
            gid: self.gid,
            atime,
            mtime,
            ctime,
            crtime,
        }
    }
}

/// Why `name` can not be a directory entry, if it can not.
pub fn is_valid_name(name: &[u8]) -> Result<(), &'static str> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_stays_small() {
        // What a file costs in the tree (issue 14: 150 bytes per file in all).
        assert!(std::mem::size_of::<Option<Node>>() <= 104);
        assert_eq!(std::mem::size_of::<PackedMeta>(), 44);
    }

    #[test]
    fn known_times_round_trip() {
        for (secs, nanos) in [
            (0i64, 0u32),
            (-1, 999_999_999),
            (-(1 << 31), 1), // 1901-12-13, ext4's first second
            (1_700_000_000, 123_456_789),
            ((1 << 31) - 1, 0),                       // 2038-01-19
            (1 << 31, 5),                             // one second later
            (4_102_444_800, 7),                       // 2100
            ((1 << 34) - (1 << 31) - 1, 999_999_999), // 2446, ext4's last second
        ] {
            let t = Timestamp { secs, nanos };
            let (lo, extra) = t.encode();
            assert_eq!(decode_time(lo, extra), t, "{secs}.{nanos}");
        }
    }

    proptest! {
        /// Any time (in ext4's range or not, nanoseconds valid or not)
        /// packs to what encodes like the original: the output is the same.
        #[test]
        fn packed_meta_encodes_the_same(
            perm in any::<u16>(), uid in any::<u32>(), gid in any::<u32>(),
            times in proptest::array::uniform4((any::<i64>(), any::<u32>())),
            in_range in proptest::array::uniform4((-(1i64 << 31)..(1i64 << 34) - (1i64 << 31), 0u32..1_000_000_000)),
        ) {
            for ts in [times, in_range] {
                let [a, m, c, cr] = ts.map(|(secs, nanos)| Timestamp { secs, nanos });
                let meta = InodeMeta { perm, uid, gid, atime: a, mtime: m, ctime: c, crtime: cr };
                let back = PackedMeta::pack(&meta).unpack();
                prop_assert_eq!(back.perm, perm & 0o7777);
                prop_assert_eq!((back.uid, back.gid), (uid, gid));
                for (x, y) in [(a, back.atime), (m, back.mtime), (c, back.ctime), (cr, back.crtime)] {
                    prop_assert_eq!(x.encode(), y.encode());
                }
                if ts == in_range {
                    prop_assert_eq!([a, m, c, cr], [back.atime, back.mtime, back.ctime, back.crtime]);
                }
            }
        }
    }
}
