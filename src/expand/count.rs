//! A [`Target`] that only measures: members, directories and blocks an
//! archive needs, with the same path rules as the real expansion. Used to
//! plan local archives exactly (and refuse bad ones before anything is
//! written).

use std::collections::BTreeMap;
use std::io::Read;

use super::error::MemberError;
use super::member::Components;
use super::target::Target;
use crate::fs::ext4::{file_blocks, InodeMeta, MAX_EXTENT_BLOCKS};

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
    /// Path → is a directory.
    nodes: BTreeMap<Vec<Vec<u8>>, bool>,
    /// Paths of symlinks (hard links to them are refused, as by the ext4 target).
    symlinks: std::collections::BTreeSet<Vec<Vec<u8>>>,
    /// The totals.
    pub needs: Needs,
}

/// Symlink targets of this many bytes or more take a block (ext4 "fast"
/// symlinks hold up to 59 bytes in the inode).
const FAST_SYMLINK_MAX: usize = 60;

impl Counter {
    fn key(path: &[&[u8]]) -> Vec<Vec<u8>> {
        path.iter().map(|c| c.to_vec()).collect()
    }

    /// Walk the parents like the ext4 target: implied directories are
    /// counted, non-directories refused.
    fn parents(&mut self, path: &Components<'_>) -> Result<(), MemberError> {
        for i in 1..path.len() {
            let k = Self::key(&path[..i]);
            match self.nodes.get(&k) {
                Some(true) => {}
                Some(false) => {
                    return Err(MemberError::Unsafe("path goes through a symlink or a file"))
                }
                None => {
                    self.nodes.insert(k, true);
                    self.needs.inodes += 1;
                    self.needs.names += 1;
                    self.needs.dirs += 1;
                }
            }
        }
        Ok(())
    }

    fn add(&mut self, path: &Components<'_>, dir: bool) -> Result<(), MemberError> {
        self.parents(path)?;
        let k = Self::key(path);
        match self.nodes.get(&k) {
            Some(true) if dir => return Ok(()),
            Some(_) => {
                return Err(MemberError::Bad(
                    "a member of that name already exists".into(),
                ))
            }
            None => {}
        }
        self.nodes.insert(k, dir);
        self.needs.inodes += 1;
        self.needs.names += 1;
        if dir {
            self.needs.dirs += 1;
        }
        Ok(())
    }
}

impl Target for Counter {
    fn dir(&mut self, path: &Components<'_>, _: InodeMeta) -> Result<(), MemberError> {
        self.add(path, true)
    }

    fn file(
        &mut self,
        path: &Components<'_>,
        size: u64,
        _: InodeMeta,
        data: &mut dyn Read,
    ) -> Result<(), MemberError> {
        self.add(path, false)?;
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
        self.add(path, false)?;
        self.symlinks.insert(Self::key(path));
        if target.len() >= FAST_SYMLINK_MAX {
            self.needs.blocks += 1;
        }
        Ok(())
    }

    fn hard_link(&mut self, path: &Components<'_>, to: &Components<'_>) -> Result<(), MemberError> {
        for i in 1..to.len() {
            if self.nodes.get(&Self::key(&to[..i])) != Some(&true) {
                return Err(MemberError::Unsafe(
                    "hard link to a path that is not an earlier member",
                ));
            }
        }
        if self.symlinks.contains(&Self::key(to)) {
            return Err(MemberError::Unsafe("hard link to a symlink"));
        }
        match self.nodes.get(&Self::key(to)) {
            Some(false) => {}
            Some(true) => return Err(MemberError::Unsafe("hard link to a directory")),
            None => {
                return Err(MemberError::Unsafe(
                    "hard link to a path that is not an earlier member",
                ))
            }
        }
        self.parents(path)?;
        let k = Self::key(path);
        if self.nodes.contains_key(&k) {
            return Err(MemberError::Bad(
                "a member of that name already exists".into(),
            ));
        }
        self.nodes.insert(k, false);
        self.needs.names += 1;
        Ok(())
    }
}
