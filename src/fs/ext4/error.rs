//! Errors of the ext4 builder; each names the path, inode or block concerned.

use crate::partition::WindowError;

/// What can go wrong while building a filesystem.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// The window is too small for any filesystem.
    #[error(
        "a filesystem of {size} bytes is too small: ext4 with a journal needs at least {min} bytes"
    )]
    TooSmall {
        /// Window size.
        size: u64,
        /// Minimum size.
        min: u64,
    },
    /// Not enough free blocks.
    #[error("filesystem full while adding {what}: needs {needed} more bytes, {available} bytes free (filesystem size {size} bytes)")]
    NoSpace {
        /// Path or structure being added.
        what: String,
        /// Bytes needed.
        needed: u64,
        /// Bytes still free.
        available: u64,
        /// Filesystem size.
        size: u64,
    },
    /// All inodes are used.
    #[error("no free inode for {path}: all {count} inodes are used (raise the inode policy's expected_inodes)")]
    NoInodes {
        /// Path being created.
        path: String,
        /// Inode count of the filesystem.
        count: u64,
    },
    /// The inode policy asks for more inodes than the layout can hold.
    #[error("{wanted} inodes requested but a filesystem this size holds at most {max}")]
    TooManyInodes {
        /// Requested.
        wanted: u64,
        /// Possible.
        max: u64,
    },
    /// A name is empty, contains `/` or NUL, is `.`/`..`, or is over 255 bytes.
    #[error("invalid name {name:?} in {dir}: {reason}")]
    BadName {
        /// Directory.
        dir: String,
        /// Offending name (lossy).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The name already exists in that directory.
    #[error("{path} already exists")]
    Exists {
        /// Path.
        path: String,
    },
    /// A path component is missing or not a directory.
    #[error("{path}: {reason}")]
    NotADirectory {
        /// Path.
        path: String,
        /// Why.
        reason: &'static str,
    },
    /// A write past the size reserved for a file.
    #[error(
        "{path}: write of {len} bytes at offset {offset} is past the file's reserved size {size}"
    )]
    WritePastEnd {
        /// File.
        path: String,
        /// Offset in the file.
        offset: u64,
        /// Length of the write.
        len: u64,
        /// Reserved size.
        size: u64,
    },
    /// A size that is not representable (too large for ext4, or a grow request).
    #[error("{path}: invalid size {size}: {reason}")]
    BadSize {
        /// File.
        path: String,
        /// Size requested.
        size: u64,
        /// Why.
        reason: &'static str,
    },
    /// Too many links to one inode.
    #[error("{path}: too many links (ext4 allows 65000)")]
    TooManyLinks {
        /// Path.
        path: String,
    },
    /// An inode handle that does not belong to this builder.
    #[error("unknown inode {ino}")]
    UnknownInode {
        /// Inode number.
        ino: u32,
    },
    /// I/O through the partition window failed.
    #[error(transparent)]
    Window(#[from] WindowError),
    /// Reading the old filesystem failed.
    #[error("reading the existing ext4 filesystem: {path}: {message}")]
    Read {
        /// Path inside the old filesystem.
        path: String,
        /// What failed.
        message: String,
    },
    /// Reading or spilling carried-over file content failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// OS error.
        source: std::io::Error,
    },
    /// An internal invariant broke; always a bug in the builder.
    #[error("ext4 builder internal error: {0}")]
    Internal(String),
}
