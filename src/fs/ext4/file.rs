//! `FileWriter`: positional writes of one file's data into its reserved blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::alloc::Run;
use super::error::Ext4Error;
use super::layout::BLOCK_SIZE;
use crate::partition::PartitionWindow;

/// Writes one regular file's bytes straight to their final blocks.
///
/// Cheap to clone, `Send + Sync`: several threads may write different
/// ranges of the same file, or different files, at once; each call is one or
/// a few `pwrite`s with no shared state but the window's file descriptor.
#[derive(Debug, Clone)]
pub struct FileWriter {
    ino: u32,
    path: Arc<str>,
    window: PartitionWindow,
    /// Physical runs in logical order.
    runs: Arc<[Run]>,
    /// Current size limit (bytes); shared with the builder so a later
    /// `set_len` shrink also bounds this writer.
    limit: Arc<AtomicU64>,
}

impl FileWriter {
    pub(crate) fn new(
        ino: u32,
        path: Arc<str>,
        window: PartitionWindow,
        runs: Arc<[Run]>,
        limit: Arc<AtomicU64>,
    ) -> Self {
        Self {
            ino,
            path,
            window,
            runs,
            limit,
        }
    }

    /// The file's inode number.
    pub fn ino(&self) -> super::Ino {
        super::Ino(self.ino)
    }

    /// The file's path in the filesystem (for messages).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Bytes reserved for the file (its size in the finished filesystem).
    pub fn size(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Write `data` at byte `offset` of the file. Bytes never written read
    /// as zeros. A write reaching past the file's size is refused whole.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), Ext4Error> {
        let len = data.len() as u64;
        let size = self.size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Ext4Error::WritePastEnd {
                path: self.path.to_string(),
                offset,
                len,
                size,
            });
        }
        let mut done = 0usize;
        let mut logical_byte = 0u64; // file offset where the current run starts
        for run in self.runs.iter() {
            let run_bytes = run.len * BLOCK_SIZE;
            let run_end = logical_byte + run_bytes;
            let pos = offset + done as u64;
            if pos < run_end {
                let within = pos - logical_byte;
                let n = usize::try_from((run_bytes - within).min((data.len() - done) as u64))
                    .map_err(|_| {
                        Ext4Error::Internal("write chunk does not fit in memory".into())
                    })?;
                self.window
                    .write_at(run.start * BLOCK_SIZE + within, &data[done..done + n])?;
                done += n;
                if done == data.len() {
                    return Ok(());
                }
            }
            logical_byte = run_end;
        }
        if done == data.len() {
            Ok(())
        } else {
            Err(Ext4Error::Internal(format!(
                "{}: reserved blocks do not cover offset {}",
                self.path,
                offset + done as u64
            )))
        }
    }

    /// A `std::io::Write` that appends from offset 0.
    pub fn sequential(self) -> SequentialWriter {
        SequentialWriter {
            inner: self,
            pos: 0,
        }
    }
}

/// Sequential `Write` adapter over a [`FileWriter`].
#[derive(Debug)]
pub struct SequentialWriter {
    inner: FileWriter,
    pos: u64,
}

impl SequentialWriter {
    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The underlying writer.
    pub fn writer(&self) -> &FileWriter {
        &self.inner
    }
}

impl std::io::Write for SequentialWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner
            .write_at(self.pos, buf)
            .map_err(std::io::Error::other)?;
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
