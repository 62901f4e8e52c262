//! [`copy_into`]: a reader's bytes into a file reserved in the ext4
//! builder, exactly its size, with a callback per chunk (hashing, progress).

use std::io::Read;

use crate::fs::ext4::{Ext4Error, FileWriter};

/// Copy buffer: 1 MiB, as [`super::SPARSE_BUF`] (large sequential reads;
/// a multiple of the 4 KiB block).
pub const COPY_BUF: usize = 1 << 20;

/// Why a copy into a reserved file failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the source failed.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The source ended before the reserved size.
    #[error("data ends at byte {got} of {size}")]
    Short {
        /// Bytes read.
        got: u64,
        /// Bytes expected.
        size: u64,
    },
    /// Writing into the filesystem failed.
    #[error(transparent)]
    Write(#[from] Ext4Error),
}

/// Copy exactly `dst.size()` bytes of `src` into `dst`, from offset 0,
/// calling `on_chunk` with each chunk written. `buf` is the copy buffer
/// (reused across calls by callers that copy many files).
pub fn copy_into(
    src: &mut dyn Read,
    dst: &FileWriter,
    buf: &mut [u8],
    mut on_chunk: impl FnMut(&[u8]),
) -> Result<(), CopyError> {
    let size = dst.size();
    let mut off = 0u64;
    while off < size {
        let left = size.saturating_sub(off);
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = match src.read(chunk) {
            Ok(0) => return Err(CopyError::Short { got: off, size }),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        let data = chunk.get(..n).unwrap_or_default();
        dst.write_at(off, data)?;
        on_chunk(data);
        off = off.saturating_add(n as u64);
    }
    Ok(())
}
