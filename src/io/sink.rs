//! [`ChunkSink`]: where a download's bytes go, at their offsets in the
//! payload, and the plain file sinks.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::fs::ext4::FileWriter;

use super::sparse::sparse_copy;

/// Receives a download's bytes at their offsets.
pub trait ChunkSink: Send {
    /// Write `data` at `offset` of the payload.
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// The server ignored `Range`: the payload restarts at 0. Return false
    /// if this sink can't start over (a streaming decoder).
    fn restart(&mut self) -> bool {
        true
    }
}

/// Writes the payload at `base + offset` of a file (a remote zip's
/// temporary copy, a blob being filled).
#[derive(Debug)]
pub struct FileSink<'a> {
    file: &'a File,
    base: u64,
}

impl<'a> FileSink<'a> {
    /// Payload byte 0 goes to `base` of `file`.
    pub fn new(file: &'a File, base: u64) -> Self {
        Self { file, base }
    }
}

impl ChunkSink for FileSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(data, at(self.base, offset)?)
    }
}

/// Like [`FileSink`], but skips all-zero 4 KiB blocks: for a fresh
/// destination, where they already read as zeros.
#[derive(Debug)]
pub struct SparseFileSink<'a> {
    file: &'a File,
    base: u64,
}

impl<'a> SparseFileSink<'a> {
    /// Payload byte 0 goes to `base` of `file`.
    pub fn new(file: &'a File, base: u64) -> Self {
        Self { file, base }
    }
}

impl ChunkSink for SparseFileSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        sparse_copy(&mut &data[..], self.file, at(self.base, offset)?, |_| {}).map(|_| ())
    }
}

/// Streams a download into a file reserved in the ext4 builder.
#[derive(Debug)]
pub struct WriterSink(pub FileWriter);

impl ChunkSink for WriterSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write_at(offset, data).map_err(std::io::Error::other)
    }
}

/// Writes to `first`, then to `second` (e.g. the image and the cache);
/// an error of either stops the download. A side that must not fail it
/// swallows its own errors.
#[derive(Debug)]
pub struct Tee<A, B> {
    /// The first side.
    pub first: A,
    /// The second side.
    pub second: B,
}

impl<A: ChunkSink, B: ChunkSink> ChunkSink for Tee<A, B> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.first.write(offset, data)?;
        self.second.write(offset, data)
    }
    fn restart(&mut self) -> bool {
        self.first.restart() && self.second.restart()
    }
}

impl<S: ChunkSink + ?Sized> ChunkSink for &mut S {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        (**self).write(offset, data)
    }
    fn restart(&mut self) -> bool {
        (**self).restart()
    }
}

fn at(base: u64, offset: u64) -> std::io::Result<u64> {
    base.checked_add(offset).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("offset {base} + {offset} overflows"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn file_sinks_write_at_base_plus_offset() {
        let f = tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"));
        FileSink::new(&f, 2)
            .write(1, b"ab")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut sparse = SparseFileSink::new(&f, 8);
        sparse.write(0, b"cd").unwrap_or_else(|e| panic!("{e}"));
        let mut all = Vec::new();
        (&f).read_to_end(&mut all).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(all, b"\0\0\0ab\0\0\0cd");
    }

    #[test]
    fn an_overflowing_offset_is_an_error() {
        let f = tempfile::tempfile().unwrap_or_else(|e| panic!("{e}"));
        assert!(FileSink::new(&f, u64::MAX).write(1, b"x").is_err());
    }
}
