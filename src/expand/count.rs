//! A [`Target`] that only measures: members, directories and blocks an
//! archive needs, with the same path rules as the real expansion. Used to
//! plan local archives exactly (and refuse bad ones before anything is
//! written).

use std::io::Read;

use super::error::MemberError;
use super::member::Components;
use super::target::Target;
use crate::fs::ext4::{file_blocks, InodeMeta, NameTable, MAX_EXTENT_BLOCKS};

/// What an archive needs in the filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Inodes (files, directories, symlinks; hard links take none).
    pub inodes: u64,
    /// Directory entries (names).
    pub names: u64,
    /// Directories among the inodes.
    pub dirs: u64,
    /// Data blocks of files and long symlinks, extent trees included.
    pub blocks: u64,
    /// File bytes.
    pub bytes: u64,
}

/// Measures instead of writing.
#[derive(Debug, Default)]
pub struct Counter {
    /// (parent node, name) → node; node 0 is the target directory. One
    /// step per path component, so a member costs O(its name's length);
    /// names are stored once, in one arena (about 20 bytes a member
    /// besides its name).
    children: NameTable,
    /// Kind of node `n` at index `n - 1`.
    kinds: Vec<Node>,
    /// The totals.
    pub needs: Needs,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    Symlink,
}

/// Symlink targets of this many bytes or more take a block (ext4 "fast"
/// symlinks hold up to 59 bytes in the inode).
const FAST_SYMLINK_MAX: usize = 60;

/// The target directory's node.
const ROOT: u32 = 0;

impl Counter {
    fn kind(&self, node: u32) -> Node {
        match node.checked_sub(1).and_then(|i| self.kinds.get(i as usize)) {
            Some(k) => *k,
            None => Node::Dir,
        }
    }

    fn lookup(&self, parent: u32, name: &[u8]) -> Option<u32> {
        self.children.get(parent, name)
    }

    fn insert(&mut self, parent: u32, name: &[u8], kind: Node) -> Result<u32, MemberError> {
        let id = u32::try_from(self.kinds.len().saturating_add(1))
            .map_err(|_| MemberError::Bad("too many members to count".into()))?;
        self.children
            .insert(parent, name, id)
            .map_err(|_| MemberError::Bad("member names too long to count".into()))?;
        self.kinds.push(kind);
        Ok(id)
    }

    /// Walk the parents like the ext4 target: implied directories are
    /// counted, non-directories refused. Returns the parent's node.
    fn parents(&mut self, path: &Components<'_>) -> Result<u32, MemberError> {
        let mut cur = ROOT;
        for c in path.iter().take(path.len().saturating_sub(1)) {
            cur = match self.lookup(cur, c) {
                Some(n) if self.kind(n) == Node::Dir => n,
                Some(_) => {
                    return Err(MemberError::Unsafe("path goes through a symlink or a file"))
                }
                None => {
                    self.needs.inodes += 1;
                    self.needs.names += 1;
                    self.needs.dirs += 1;
                    self.insert(cur, c, Node::Dir)?
                }
            };
        }
        Ok(cur)
    }

    fn add(&mut self, path: &Components<'_>, kind: Node) -> Result<(), MemberError> {
        let parent = self.parents(path)?;
        let Some(name) = path.last() else {
            return Ok(());
        };
        match self.lookup(parent, name) {
            Some(n) if kind == Node::Dir && self.kind(n) == Node::Dir => return Ok(()),
            Some(_) => {
                return Err(MemberError::Bad(
                    "a member of that name already exists".into(),
                ))
            }
            None => {}
        }
        self.insert(parent, name, kind)?;
        self.needs.inodes += 1;
        self.needs.names += 1;
        if kind == Node::Dir {
            self.needs.dirs += 1;
        }
        Ok(())
    }

    /// The node `path` names, through earlier directories only.
    fn find(&self, path: &Components<'_>) -> Option<u32> {
        let mut cur = ROOT;
        for (i, c) in path.iter().enumerate() {
            let n = self.lookup(cur, c)?;
            if i + 1 < path.len() && self.kind(n) != Node::Dir {
                return None;
            }
            cur = n;
        }
        Some(cur)
    }
}

impl Target for Counter {
    fn dir(&mut self, path: &Components<'_>, _: InodeMeta) -> Result<(), MemberError> {
        self.add(path, Node::Dir)
    }

    fn file(
        &mut self,
        path: &Components<'_>,
        size: u64,
        _: InodeMeta,
        data: &mut dyn Read,
    ) -> Result<(), MemberError> {
        self.add(path, Node::File)?;
        self.needs.blocks += file_blocks(size, MAX_EXTENT_BLOCKS);
        self.needs.bytes += size;
        // Read it through: compressed streams must be decoded to go on, and
        // a short member is found now rather than during the build.
        let got = std::io::copy(&mut data.take(size), &mut std::io::sink())?;
        if got != size {
            return Err(MemberError::Bad(format!(
                "data ends at byte {got} of {size}"
            )));
        }
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &Components<'_>,
        target: &[u8],
        _: InodeMeta,
    ) -> Result<(), MemberError> {
        self.add(path, Node::Symlink)?;
        if target.len() >= FAST_SYMLINK_MAX {
            self.needs.blocks += 1;
        }
        Ok(())
    }

    fn hard_link(&mut self, path: &Components<'_>, to: &Components<'_>) -> Result<(), MemberError> {
        let not_earlier = MemberError::Unsafe("hard link to a path that is not an earlier member");
        let target = match (to.is_empty(), self.find(to)) {
            (false, Some(n)) => n,
            _ => return Err(not_earlier),
        };
        match self.kind(target) {
            Node::File => {}
            Node::Dir => return Err(MemberError::Unsafe("hard link to a directory")),
            Node::Symlink => return Err(MemberError::Unsafe("hard link to a symlink")),
        }
        let parent = self.parents(path)?;
        let Some(name) = path.last() else {
            return Err(MemberError::Bad("a hard link needs a name".into()));
        };
        if self.lookup(parent, name).is_some() {
            return Err(MemberError::Bad(
                "a member of that name already exists".into(),
            ));
        }
        // A second name for an existing inode: one more entry, no inode.
        self.insert(parent, name, Node::File)?;
        self.needs.names += 1;
        Ok(())
    }
}
