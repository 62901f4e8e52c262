//! Where expanded members go: the [`Target`] trait, and its ext4 builder
//! implementation (the real expansion).

use std::io::Read;

use super::error::MemberError;
use super::member::Components;
use crate::fs::ext4::{Ext4Builder, Ext4Error, Ino, InodeMeta, SmallFiles};
use crate::io::COPY_BUF;

/// Receives the members of an archive, already checked by the walker
/// (limits, names, symlink targets).
pub trait Target {
    /// A directory (existing ones get `meta`).
    fn dir(&mut self, path: &Components<'_>, meta: InodeMeta) -> Result<(), MemberError>;
    /// A regular file of exactly `size` bytes read from `data`.
    fn file(
        &mut self,
        path: &Components<'_>,
        size: u64,
        meta: InodeMeta,
        data: &mut dyn Read,
    ) -> Result<(), MemberError>;
    /// A symbolic link.
    fn symlink(
        &mut self,
        path: &Components<'_>,
        target: &[u8],
        meta: InodeMeta,
    ) -> Result<(), MemberError>;
    /// A hard link to the earlier member `to`.
    fn hard_link(&mut self, path: &Components<'_>, to: &Components<'_>) -> Result<(), MemberError>;
}

/// Expands into an [`Ext4Builder`] below directory `root`.
#[derive(Debug)]
pub struct Ext4Target<'a> {
    builder: &'a mut Ext4Builder,
    root: Ino,
    /// Metadata of directories the archive implies but does not list.
    dir_meta: InodeMeta,
    buf: Vec<u8>,
    /// Small members' data, written a MiB at a time.
    small: SmallFiles,
}

impl<'a> Ext4Target<'a> {
    /// Expand below `root` (a directory of `builder`).
    pub fn new(builder: &'a mut Ext4Builder, root: Ino, dir_meta: InodeMeta) -> Self {
        Self {
            builder,
            root,
            dir_meta,
            buf: vec![0; COPY_BUF],
            small: SmallFiles::new(),
        }
    }

    /// Write the small members' data still gathered; call once the
    /// expansion succeeded, before the builder finishes.
    pub fn flush(&mut self) -> Result<(), Ext4Error> {
        self.small.flush()
    }

    /// The parent directory of `path`, creating missing ones; refuses to go
    /// through anything but a directory (a symlink made by the archive).
    fn parent<'p>(&mut self, path: &Components<'p>) -> Result<(Ino, &'p [u8]), MemberError> {
        let (name, dirs) = path.split_last().ok_or(MemberError::Unsafe("empty name"))?;
        let mut cur = self.root;
        for c in dirs {
            cur = match self.builder.lookup_in(cur, c) {
                Some(i) if self.builder.is_dir(i) => i,
                Some(_) => {
                    return Err(MemberError::Unsafe("path goes through a symlink or a file"))
                }
                None => self.builder.mkdir(cur, c, self.dir_meta)?,
            };
        }
        Ok((cur, name))
    }
}

impl Target for Ext4Target<'_> {
    fn dir(&mut self, path: &Components<'_>, meta: InodeMeta) -> Result<(), MemberError> {
        let (parent, name) = self.parent(path)?;
        match self.builder.lookup_in(parent, name) {
            Some(i) if self.builder.is_dir(i) => self.builder.set_meta(i, meta)?,
            Some(_) => return Err(MemberError::Unsafe("a non-directory of that name exists")),
            None => {
                self.builder.mkdir(parent, name, meta)?;
            }
        }
        Ok(())
    }

    fn file(
        &mut self,
        path: &Components<'_>,
        size: u64,
        meta: InodeMeta,
        data: &mut dyn Read,
    ) -> Result<(), MemberError> {
        let (parent, name) = self.parent(path)?;
        let w = self.builder.create_file(parent, name, size, meta)?;
        self.small.copy(&w, data, &mut self.buf)?;
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &Components<'_>,
        target: &[u8],
        meta: InodeMeta,
    ) -> Result<(), MemberError> {
        let (parent, name) = self.parent(path)?;
        self.builder.symlink(parent, name, target, meta)?;
        Ok(())
    }

    fn hard_link(&mut self, path: &Components<'_>, to: &Components<'_>) -> Result<(), MemberError> {
        let mut cur = self.root;
        for (i, c) in to.iter().enumerate() {
            let last = i + 1 == to.len();
            cur = match self.builder.lookup_in(cur, c) {
                Some(n) if last || self.builder.is_dir(n) => n,
                _ => {
                    return Err(MemberError::Unsafe(
                        "hard link to a path that is not an earlier member",
                    ))
                }
            };
        }
        if to.is_empty() || self.builder.is_dir(cur) {
            return Err(MemberError::Unsafe("hard link to a directory"));
        }
        // A relative symlink is safe only at the depth it was checked at: a
        // hard link elsewhere would move its `..` (docs/spec.md §9 path safety).
        if self.builder.is_symlink(cur) {
            return Err(MemberError::Unsafe("hard link to a symlink"));
        }
        let (parent, name) = self.parent(path)?;
        self.builder.hard_link(parent, name, cur)?;
        Ok(())
    }
}
