//! `PartitionWindow`: positional I/O confined to one byte range of an image file.
//!
//! Filesystem code never sees the whole image: it gets a window `(start, len)`
//! and every read or write is checked against it, so a bug in a builder can not
//! scribble over a neighbouring partition. All I/O is positional (`pread` /
//! `pwrite`), so a window can be shared by several threads without locking.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An error from a window operation; always names the image and the offset.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The access would leave the window.
    #[error("{path}: access of {len} bytes at partition offset {offset} leaves the partition (size {size})")]
    OutOfBounds {
        /// Image file.
        path: PathBuf,
        /// Offset inside the window.
        offset: u64,
        /// Length of the access.
        len: u64,
        /// Size of the window.
        size: u64,
    },
    /// The image file ended before the requested range did.
    #[error("{path}: unexpected end of file at image offset {image_offset}")]
    UnexpectedEof {
        /// Image file.
        path: PathBuf,
        /// Absolute offset in the image file where the read found nothing.
        image_offset: u64,
    },
    /// The underlying read or write failed.
    #[error("{path}: I/O error at image offset {image_offset}: {source}")]
    Io {
        /// Image file.
        path: PathBuf,
        /// Absolute offset in the image file.
        image_offset: u64,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Told of every byte range a window writes (absolute image offsets,
/// `[start, end)`), zeros made by [`PartitionWindow::zero_range`]
/// included: a build onto a device writes zeros wherever the image needs
/// them and nothing was written (`pipeline::device`).
pub trait WriteLog: Send + Sync {
    /// `[start, end)` of the image now holds what the image should.
    fn wrote(&self, start: u64, end: u64);

    /// [`PartitionWindow::zero_range`] of `[start, end)`: true when the
    /// log's owner takes the zeroing over (a device build zeros, at the
    /// end, whatever the filesystems need and nothing wrote since), and
    /// forgets any earlier write there; the window then writes nothing.
    /// Only for windows nobody reads before writing.
    fn defer_zeros(&self, start: u64, end: u64) -> bool {
        let _ = (start, end);
        false
    }
}

/// A bounded view over `[start, start + len)` of an image file.
#[derive(Clone)]
pub struct PartitionWindow {
    file: Arc<File>,
    path: Arc<Path>,
    start: u64,
    len: u64,
    log: Option<Arc<dyn WriteLog>>,
}

impl std::fmt::Debug for PartitionWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionWindow")
            .field("file", &self.file)
            .field("path", &self.path)
            .field("start", &self.start)
            .field("len", &self.len)
            .field("log", &self.log.is_some())
            .finish()
    }
}

/// Chunk used when zeros must really be written (no hole punching): 1 MiB keeps
/// syscall overhead negligible while staying small in memory (two buffers:
/// the zeros, and the bytes read to see whether they already are zeros).
const ZERO_CHUNK: usize = 1 << 20;

impl PartitionWindow {
    /// A window over `[start, start + len)` of `file` (named `path` in errors).
    pub fn new(file: Arc<File>, path: impl Into<PathBuf>, start: u64, len: u64) -> Self {
        let path: PathBuf = path.into();
        Self {
            file,
            path: Arc::from(path.as_path()),
            start,
            len,
            log: None,
        }
    }

    /// The same window, telling `log` of every write (and of the windows
    /// made from it by [`PartitionWindow::sub`]).
    #[must_use]
    pub fn with_log(mut self, log: Option<Arc<dyn WriteLog>>) -> Self {
        self.log = log;
        self
    }

    /// Tell the log (if any) that `[abs, abs + len)` was written.
    fn record(&self, abs: u64, len: u64) {
        if let Some(l) = &self.log {
            // `check` made sure abs + len fits.
            l.wrote(abs, abs.saturating_add(len));
        }
    }

    /// Size of the window in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Absolute offset of the window in the image file.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The image file's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The absolute offset of `[offset, offset + len)`, refused unless the
    /// range lies in the window and its absolute end fits in `u64` (so sums
    /// up to `abs + len` are safe afterwards).
    fn check(&self, offset: u64, len: u64) -> Result<u64, WindowError> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len);
        let abs = self.start.checked_add(offset);
        match (end, abs) {
            (Some(_), Some(abs)) if abs.checked_add(len).is_some() => Ok(abs),
            _ => Err(WindowError::OutOfBounds {
                path: self.path.to_path_buf(),
                offset,
                len,
                size: self.len,
            }),
        }
    }

    fn io(&self, image_offset: u64, source: std::io::Error) -> WindowError {
        WindowError::Io {
            path: self.path.to_path_buf(),
            image_offset,
            source,
        }
    }

    /// Write all of `buf` at `offset` (relative to the window).
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<(), WindowError> {
        let abs = self.check(offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, abs)
            .map_err(|e| self.io(abs, e))?;
        self.record(abs, buf.len() as u64);
        Ok(())
    }

    /// Copy `len` bytes of `src` at `src_offset` to `offset` (relative to
    /// the window), sharing blocks where the filesystem can (XFS, btrfs:
    /// `os::clone_or_copy`, its blocks those of the image file), in the
    /// kernel where the platform can (`os::copy_range`). Returns the bytes
    /// shared, not written.
    pub fn copy_from(
        &self,
        src: &File,
        src_offset: u64,
        offset: u64,
        len: u64,
    ) -> Result<u64, WindowError> {
        use std::os::unix::fs::MetadataExt;
        let abs = self.check(offset, len)?;
        let block = self.file.metadata().map_or(0, |m| m.blksize());
        let shared = crate::os::clone_or_copy(src, src_offset, &self.file, abs, len, block)
            .map_err(|e| self.io(abs, e))?;
        self.record(abs, len);
        Ok(shared)
    }

    /// Fill all of `buf` from `offset` (relative to the window).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), WindowError> {
        let abs = self.check(offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, abs)
            .map_err(|e| self.io(abs, e))
    }

    /// One positional read of at most `buf.len()` bytes at `offset` (relative
    /// to the window), retried on `Interrupted`. The whole of `buf` must lie
    /// inside the window. `Ok(0)` from the file (the image is shorter than
    /// the window says) is [`WindowError::UnexpectedEof`] with the offset,
    /// never a silent zero-length read.
    pub(super) fn read_some_at(&self, offset: u64, buf: &mut [u8]) -> Result<usize, WindowError> {
        let abs = self.check(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.file.read_at(buf, abs) {
                Ok(0) => {
                    return Err(WindowError::UnexpectedEof {
                        path: self.path.to_path_buf(),
                        image_offset: abs,
                    })
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(abs, e)),
            }
        }
    }

    /// Make `[offset, offset + len)` read as zeros, punching a hole where the
    /// platform allows it (no data written), writing zeros otherwise.
    pub fn zero_range(&self, offset: u64, len: u64) -> Result<(), WindowError> {
        let abs = self.check(offset, len)?;
        if len == 0
            || self
                .log
                .as_ref()
                .is_some_and(|l| l.defer_zeros(abs, abs.saturating_add(len)))
        {
            return Ok(());
        }
        if crate::os::punch_hole(&self.file, abs, len) {
            self.record(abs, len);
            return Ok(());
        }
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut seen = vec![0u8; ZERO_CHUNK];
        let mut done = 0u64;
        while done < len {
            // done < len and abs + len fits (checked above): no overflow.
            let left = len.saturating_sub(done);
            let n = usize::try_from(left).map_or(ZERO_CHUNK, |left| left.min(ZERO_CHUNK));
            let at = abs.saturating_add(done);
            // Chunks that already read as zeros (the holes of a grown
            // file) are left alone: without hole punching a sparse image
            // still stays sparse, and reading a hole costs no disk I/O.
            if !self.reads_as_zeros(at, &mut seen[..n]) {
                self.file
                    .write_all_at(&zeros[..n], at)
                    .map_err(|e| self.io(at, e))?;
            }
            done = done.saturating_add(n as u64);
        }
        self.record(abs, len);
        Ok(())
    }

    /// True when `buf.len()` bytes at absolute offset `at` can be read and
    /// are all zero. A failed or short read is false: the caller then
    /// writes, and a real I/O error is reported by the write.
    fn reads_as_zeros(&self, at: u64, buf: &mut [u8]) -> bool {
        self.file.read_exact_at(buf, at).is_ok() && buf.iter().all(|&b| b == 0)
    }

    /// A narrower window `[offset, offset + len)` inside this one.
    pub fn sub(&self, offset: u64, len: u64) -> Result<Self, WindowError> {
        let abs = self.check(offset, len)?;
        Ok(Self {
            file: self.file.clone(),
            path: self.path.clone(),
            start: abs,
            len,
            log: self.log.clone(),
        })
    }

    /// Flush the image file's data to stable storage.
    pub fn sync_data(&self) -> Result<(), WindowError> {
        self.file.sync_data().map_err(|e| self.io(self.start, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(total: u64, start: u64, len: u64) -> (tempfile::NamedTempFile, PartitionWindow) {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        tmp.as_file().set_len(total).expect("set_len");
        let file = Arc::new(tmp.reopen().expect("reopen"));
        let w = PartitionWindow::new(file, tmp.path(), start, len);
        (tmp, w)
    }

    #[test]
    fn writes_land_at_window_offset() {
        let (tmp, w) = window(100, 10, 50);
        w.write_at(5, b"abc").expect("write");
        let all = std::fs::read(tmp.path()).expect("read");
        assert_eq!(&all[15..18], b"abc");
        let mut back = [0u8; 3];
        w.read_at(5, &mut back).expect("read back");
        assert_eq!(&back, b"abc");
    }

    #[test]
    fn refuses_access_past_the_end() {
        let (_tmp, w) = window(100, 10, 50);
        let err = w.write_at(48, b"abc").expect_err("must refuse");
        assert!(
            matches!(
                err,
                WindowError::OutOfBounds {
                    offset: 48,
                    len: 3,
                    size: 50,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            w.write_at(u64::MAX, b"a").is_err(),
            "overflowing offset must be refused"
        );
        let mut b = [0u8; 1];
        assert!(w.read_at(50, &mut b).is_err());
    }

    #[test]
    fn zero_range_keeps_a_sparse_file_sparse() {
        use std::os::unix::fs::MetadataExt;
        // With hole punching or without (feature `portable`), zeroing a
        // mostly-empty range allocates nothing new.
        let (tmp, w) = window(64 << 20, 0, 64 << 20);
        w.write_at(20 << 20, &[7u8; 1 << 20]).expect("write");
        w.zero_range(0, 64 << 20).expect("zero");
        let mut back = vec![1u8; 1 << 20];
        w.read_at(20 << 20, &mut back).expect("read");
        assert!(back.iter().all(|&b| b == 0));
        let allocated = tmp.as_file().metadata().expect("meta").blocks() * 512;
        assert!(allocated <= 2 << 20, "allocated {allocated} bytes");
    }

    #[test]
    fn zero_range_clears_only_its_range() {
        let (tmp, w) = window(64, 0, 64);
        w.write_at(0, &[0xAA; 64]).expect("fill");
        w.zero_range(8, 16).expect("zero");
        let all = std::fs::read(tmp.path()).expect("read");
        assert!(all[..8].iter().all(|&b| b == 0xAA));
        assert!(all[8..24].iter().all(|&b| b == 0));
        assert!(all[24..].iter().all(|&b| b == 0xAA));
    }

    #[test]
    fn sub_window_is_bounded_by_parent() {
        let (_tmp, w) = window(100, 10, 50);
        let s = w.sub(10, 20).expect("sub");
        assert_eq!(s.start(), 20);
        assert!(s.write_at(19, b"ab").is_err());
        assert!(w.sub(40, 20).is_err());
    }
}
