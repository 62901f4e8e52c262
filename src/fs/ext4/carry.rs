//! Carry an existing ext4 filesystem's tree over into a new one.
//!
//! The base image's data partition holds a few files (`master_fs`,
//! `images/base-httpd-1.0.tar`) that the new filesystem must keep, along with
//! its UUID, label and directory hash seed (fstab mounts `/data` by them).
//! The old and new filesystems share the same byte range, so everything is
//! read first: the tree's metadata into memory, file contents into a spill
//! file in a directory the caller chooses (the build dir). Then the window
//! may be overwritten.
//!
//! What is kept: directories, regular files, symlinks, FIFOs and sockets, with
//! permissions, owner and access/modification/creation times (ext4-view does
//! not expose the change time: it is set to the modification time). Not kept:
//! extended attributes, and hard links (each name becomes its own copy since
//! ext4-view does not expose inode numbers). Device nodes are refused with an
//! error because their device numbers can not be read.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use ext4_view::{Ext4, Metadata};

use super::builder::Ext4Builder;
use super::error::Ext4Error;
use super::file::CopyError;
use super::node::{SpecialKind, ROOT_INO};
use super::params::{Ext4Params, InodeMeta, Timestamp};
use super::superblock::OldSuperblock;
use super::view::WindowRead;
use crate::partition::PartitionWindow;

#[derive(Debug)]
enum OldKind {
    Dir,
    /// Content at `[offset, offset + len)` of the spill file.
    File {
        offset: u64,
        len: u64,
    },
    Symlink(Vec<u8>),
    Special(SpecialKind),
}

#[derive(Debug)]
struct OldEntry {
    /// Path relative to the root, `/`-separated, no leading slash.
    path: Vec<u8>,
    kind: OldKind,
    meta: InodeMeta,
}

/// The tree of an old filesystem, read and held aside.
#[derive(Debug)]
pub struct OldTree {
    superblock: OldSuperblock,
    root_meta: InodeMeta,
    entries: Vec<OldEntry>,
    spill: File,
    spill_len: u64,
}

/// How many more directories a walk may enter. A valid ext4 has no
/// hard-linked directories, so a walk enters each directory once and at
/// most `s_inodes_count − s_free_inodes_count` of them. A corrupted one can
/// link a directory into its own subtree: without this bound the walk
/// would follow the loop until ext4-view refuses a 4 KiB path (16 s for
/// one loop in a debug build), or, with two such links, for ever.
#[derive(Debug)]
struct DirBudget(u64);

impl DirBudget {
    /// From the raw superblock: inodes in use (`s_inodes_count` at 0x0,
    /// `s_free_inodes_count` at 0x10).
    fn of(sb: &[u8]) -> Self {
        let count = super::bytes::get_u32(sb, 0x0);
        let free = super::bytes::get_u32(sb, 0x10);
        Self(u64::from(count.saturating_sub(free)))
    }

    /// Enter directory `path`, or fail when the budget is spent.
    fn enter(&mut self, path: &[u8]) -> Result<(), Ext4Error> {
        self.0 = self.0.checked_sub(1).ok_or_else(|| {
            err(
                path,
                "more directories than inodes in use: a directory loop (corrupted filesystem)",
            )
        })?;
        Ok(())
    }
}

fn err(path: &[u8], e: impl std::fmt::Display) -> Ext4Error {
    Ext4Error::Read {
        path: format!("/{}", String::from_utf8_lossy(path)),
        message: e.to_string(),
    }
}

fn meta_of(m: &Metadata) -> InodeMeta {
    let ts = |t: ext4_view::Timestamp| Timestamp {
        secs: t.seconds(),
        nanos: t.nanoseconds(),
    };
    let mtime = ts(m.modified());
    InodeMeta {
        perm: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        atime: ts(m.accessed()),
        mtime,
        ctime: mtime,
        crtime: m.created().map_or(mtime, ts),
    }
}

/// What an old filesystem holds, from metadata only (no file content read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OldSummary {
    /// Entries (files, dirs, links), root and `lost+found` excluded.
    pub entries: u64,
    /// Directories among them.
    pub dirs: u64,
    /// Bytes of regular file content.
    pub bytes: u64,
    /// Blocks the regular files will take in a new filesystem (trees included).
    pub file_blocks: u64,
}

/// Summarise the ext4 filesystem in `window` without reading file contents.
pub fn scan_old(window: &PartitionWindow) -> Result<OldSummary, Ext4Error> {
    let mut sb_buf = vec![0u8; 1024];
    window.read_at(1024, &mut sb_buf)?;
    if OldSuperblock::parse(&sb_buf).is_none() {
        return Err(Ext4Error::Read {
            path: "/".into(),
            message: format!(
                "no ext4 superblock at offset {} of {}",
                window.start().saturating_add(1024),
                window.path().display()
            ),
        });
    }
    let fs = Ext4::load(Box::new(WindowRead(window.clone()))).map_err(|e| err(b"", e))?;
    let mut sum = OldSummary::default();
    scan_dir(&fs, b"", &mut sum, &mut DirBudget::of(&sb_buf))?;
    Ok(sum)
}

/// What a path names in an old data partition ([`OldNames::kind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldPath {
    /// Nothing.
    Missing,
    /// A directory.
    Dir,
    /// A file, symlink or special file.
    Other,
}

/// Paths looked up in an old data partition, without reading its tree:
/// planning checks the destinations of a config against what the build
/// will carry over (`plan::dest`, a layer above).
pub struct OldNames(Ext4);

impl OldNames {
    /// Open the ext4 filesystem in `window`.
    pub fn open(window: &PartitionWindow) -> Result<Self, Ext4Error> {
        Ext4::load(Box::new(WindowRead(window.clone())))
            .map(Self)
            .map_err(|e| err(b"", e))
    }

    /// What `path` (relative to the root, `/`-separated) names. A symlink
    /// on the way is not followed (the builder does not follow them).
    pub fn kind(&self, path: &str) -> Result<OldPath, Ext4Error> {
        let abs = format!("/{path}");
        match self.0.symlink_metadata(ext4_view::Path::new(&abs)) {
            Ok(md) if md.is_dir() => Ok(OldPath::Dir),
            Ok(_) => Ok(OldPath::Other),
            Err(ext4_view::Ext4Error::NotFound) => Ok(OldPath::Missing),
            // A component on the way is not a directory: the first
            // component that is not is reported by the caller's walk.
            Err(ext4_view::Ext4Error::NotADirectory) => Ok(OldPath::Missing),
            Err(e) => Err(err(path.as_bytes(), e)),
        }
    }
}

fn scan_dir(
    fs: &Ext4,
    dir: &[u8],
    sum: &mut OldSummary,
    budget: &mut DirBudget,
) -> Result<(), Ext4Error> {
    let abs = [b"/".as_slice(), dir].concat();
    for e in fs
        .read_dir(ext4_view::Path::new(&abs))
        .map_err(|e| err(dir, e))?
    {
        let e = e.map_err(|e| err(dir, e))?;
        let name = e.file_name().as_ref().to_vec();
        if name == b"." || name == b".." || (dir.is_empty() && name == b"lost+found") {
            continue;
        }
        let rel = if dir.is_empty() {
            name.clone()
        } else {
            [dir, b"/", &name].concat()
        };
        let md = e.metadata().map_err(|e| err(&rel, e))?;
        // Sizing figures: saturating, so an absurd old filesystem asks for
        // an impossible size (and fails the size check) instead of wrapping.
        sum.entries = sum.entries.saturating_add(1);
        if md.is_dir() {
            sum.dirs = sum.dirs.saturating_add(1);
            budget.enter(&rel)?;
            scan_dir(fs, &rel, sum, budget)?;
        } else if md.file_type().is_regular_file() {
            sum.bytes = sum.bytes.saturating_add(md.len());
            let blocks = super::capacity::file_blocks(md.len(), super::params::MAX_EXTENT_BLOCKS);
            sum.file_blocks = sum.file_blocks.saturating_add(blocks);
        }
    }
    Ok(())
}

fn spill_overflow(path: &[u8]) -> Ext4Error {
    err(path, "spill file offset past 2^64 bytes")
}

/// Spill copy buffer: 1 MiB, like the host copy.
const SPILL_BUF: usize = 1 << 20;

impl OldTree {
    /// Read the ext4 filesystem in `window`, spilling file contents to an
    /// anonymous temporary file in `spill_dir`.
    pub fn read(window: &PartitionWindow, spill_dir: &Path) -> Result<Self, Ext4Error> {
        let mut sb_buf = vec![0u8; 1024];
        window.read_at(1024, &mut sb_buf)?;
        let superblock = OldSuperblock::parse(&sb_buf).ok_or_else(|| Ext4Error::Read {
            path: "/".into(),
            message: format!(
                "no ext4 superblock at offset {} of {} (bad magic)",
                window.start().saturating_add(1024),
                window.path().display()
            ),
        })?;
        let fs = Ext4::load(Box::new(WindowRead(window.clone()))).map_err(|e| err(b"", e))?;
        let spill = tempfile::tempfile_in(spill_dir).map_err(|e| Ext4Error::Io {
            what: format!("creating a spill file in {}", spill_dir.display()),
            source: e,
        })?;
        let root_meta = meta_of(&fs.metadata("/").map_err(|e| err(b"", e))?);
        let mut tree = Self {
            superblock,
            root_meta,
            entries: Vec::new(),
            spill,
            spill_len: 0,
        };
        tree.walk(&fs, b"", &mut DirBudget::of(&sb_buf))?;
        Ok(tree)
    }

    fn walk(&mut self, fs: &Ext4, dir: &[u8], budget: &mut DirBudget) -> Result<(), Ext4Error> {
        let abs = [b"/".as_slice(), dir].concat();
        let mut names: Vec<Vec<u8>> = Vec::new();
        for e in fs
            .read_dir(ext4_view::Path::new(&abs))
            .map_err(|e| err(dir, e))?
        {
            let e = e.map_err(|e| err(dir, e))?;
            let name = e.file_name().as_ref().to_vec();
            if name == b"." || name == b".." || (dir.is_empty() && name == b"lost+found") {
                continue;
            }
            names.push(name);
        }
        names.sort();
        let mut buf = vec![0u8; SPILL_BUF];
        for name in names {
            let rel = if dir.is_empty() {
                name.clone()
            } else {
                [dir, b"/", &name].concat()
            };
            let full = [b"/".as_slice(), &rel].concat();
            let p = ext4_view::Path::new(&full);
            let md = fs.symlink_metadata(p).map_err(|e| err(&rel, e))?;
            let ft = md.file_type();
            let meta = meta_of(&md);
            let kind = if ft.is_dir() {
                OldKind::Dir
            } else if ft.is_regular_file() {
                let offset = self.spill_len;
                let mut f = fs.open(p).map_err(|e| err(&rel, e))?;
                let mut len = 0u64;
                loop {
                    let n = f.read_bytes(&mut buf).map_err(|e| err(&rel, e))?;
                    if n == 0 {
                        break;
                    }
                    self.spill.write_all(&buf[..n]).map_err(|e| Ext4Error::Io {
                        what: "writing the spill file".into(),
                        source: e,
                    })?;
                    len = len
                        .checked_add(n as u64)
                        .ok_or_else(|| spill_overflow(&rel))?;
                }
                self.spill_len = self
                    .spill_len
                    .checked_add(len)
                    .ok_or_else(|| spill_overflow(&rel))?;
                OldKind::File { offset, len }
            } else if ft.is_symlink() {
                let t = fs.read_link(p).map_err(|e| err(&rel, e))?;
                OldKind::Symlink(t.as_ref().to_vec())
            } else if ft.is_fifo() {
                OldKind::Special(SpecialKind::Fifo)
            } else if ft.is_socket() {
                OldKind::Special(SpecialKind::Socket)
            } else {
                return Err(err(
                    &rel,
                    "device nodes can not be carried over (their device numbers are not readable)",
                ));
            };
            let is_dir = matches!(kind, OldKind::Dir);
            self.entries.push(OldEntry {
                path: rel.clone(),
                kind,
                meta,
            });
            if is_dir {
                budget.enter(&rel)?;
                self.walk(fs, &rel, budget)?;
            }
        }
        Ok(())
    }

    /// The old superblock's identity (UUID, label, hash seed...).
    pub fn superblock(&self) -> &OldSuperblock {
        &self.superblock
    }

    /// Entries in the tree (not counting the root and `lost+found`).
    pub fn entry_count(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Bytes of file content held aside.
    pub fn content_bytes(&self) -> u64 {
        self.spill_len
    }

    /// Apply the old filesystem's identity to new parameters: UUID, label,
    /// hash seed and hash signedness. Count its entries in `expected_inodes`.
    pub fn apply_identity(&self, params: &mut Ext4Params) {
        params.uuid = Some(self.superblock.uuid);
        params.hash_seed = Some(self.superblock.hash_seed);
        params.label = self.superblock.label.clone();
        params.signed_hash = self.superblock.signed_hash;
        params.inodes.expected_inodes = params
            .inodes
            .expected_inodes
            .saturating_add(self.entry_count());
    }

    /// Recreate the tree in `builder` (root metadata included) and copy the
    /// file contents into place.
    pub fn write_into(mut self, builder: &mut Ext4Builder) -> Result<(), Ext4Error> {
        builder.set_meta(ROOT_INO, self.root_meta)?;
        let mut buf = vec![0u8; SPILL_BUF];
        for e in &self.entries {
            let (parent, name) = match e.path.iter().rposition(|&c| c == b'/') {
                Some(i) => {
                    let (dir, slash_name) = e.path.split_at(i);
                    let p = builder
                        .lookup(dir)
                        .ok_or_else(|| err(&e.path, "parent directory missing"))?;
                    (p, slash_name.get(1..).unwrap_or_default())
                }
                None => (ROOT_INO, e.path.as_slice()),
            };
            match &e.kind {
                OldKind::Dir => {
                    builder.mkdir(parent, name, e.meta)?;
                }
                OldKind::Symlink(t) => {
                    builder.symlink(parent, name, t, e.meta)?;
                }
                OldKind::Special(k) => {
                    builder.mknod(parent, name, *k, e.meta)?;
                }
                OldKind::File { offset, len } => {
                    let w = builder.create_file(parent, name, *len, e.meta)?;
                    self.spill
                        .seek(SeekFrom::Start(*offset))
                        .map_err(|e| Ext4Error::Io {
                            what: "reading the spill file".into(),
                            source: e,
                        })?;
                    let mut spilled = (&mut self.spill).take(*len);
                    w.copy_from(&mut spilled, &mut buf, |_| {})
                        .map_err(|e| match e {
                            CopyError::Write(e) => e,
                            other => Ext4Error::Io {
                                what: "reading the spill file".into(),
                                source: std::io::Error::other(other),
                            },
                        })?;
                }
            }
        }
        Ok(())
    }
}
