//! `FileWriter`: positional writes of one file's data into its reserved blocks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::alloc::Run;
use super::error::Ext4Error;
use super::layout::BLOCK_SIZE;
use crate::partition::PartitionWindow;

/// Why [`FileWriter::copy_from`] failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// Reading the source failed.
    #[error("{0}")]
    Read(#[source] std::io::Error),
    /// The source ended before the file's size.
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

/// Inodes per segment of the size table.
const SIZES_PER_SEGMENT: usize = 4096;

/// The size of every regular file by inode, shared by the builder and its
/// writers (a later `set_len` shrink bounds the writers too): segments of
/// 4096 sizes made on first use, instead of a shared allocation per file.
#[derive(Debug)]
pub(crate) struct Sizes {
    segments: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl Sizes {
    /// Room for inodes `1..=inodes`.
    pub(crate) fn new(inodes: u64) -> Self {
        let n = inodes.div_ceil(SIZES_PER_SEGMENT as u64);
        Self {
            segments: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    fn place(ino: u32) -> Option<(usize, usize)> {
        let i = usize::try_from(ino.checked_sub(1)?).ok()?;
        Some((i / SIZES_PER_SEGMENT, i % SIZES_PER_SEGMENT))
    }

    /// The size of `ino` (0 when never set).
    pub(crate) fn get(&self, ino: u32) -> u64 {
        Self::place(ino)
            .and_then(|(s, i)| self.segments.get(s)?.get()?.get(i))
            .map_or(0, |a| a.load(Ordering::Relaxed))
    }

    /// Set the size of `ino`; false when `ino` is past the table.
    pub(crate) fn set(&self, ino: u32, size: u64) -> bool {
        let Some((s, i)) = Self::place(ino) else {
            return false;
        };
        let Some(seg) = self.segments.get(s) else {
            return false;
        };
        let seg = seg.get_or_init(|| (0..SIZES_PER_SEGMENT).map(|_| AtomicU64::new(0)).collect());
        seg.get(i)
            .map(|a| a.store(size, Ordering::Relaxed))
            .is_some()
    }
}

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
    /// Current sizes (bytes); shared with the builder so a later
    /// `set_len` shrink also bounds this writer.
    sizes: Arc<Sizes>,
}

impl FileWriter {
    pub(crate) fn new(
        ino: u32,
        path: Arc<str>,
        window: PartitionWindow,
        runs: Arc<[Run]>,
        sizes: Arc<Sizes>,
    ) -> Self {
        Self {
            ino,
            path,
            window,
            runs,
            sizes,
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
        self.sizes.get(self.ino)
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
        let overflow =
            |at: u64| Ext4Error::Internal(format!("{}: offset past 2^64 near {at}", self.path));
        let mut rest = data;
        let mut pos = offset; // file offset of rest[0]
        let mut run_start = 0u64; // file offset where the current run starts
        for run in self.runs.iter() {
            let run_bytes = run.len.bytes()?;
            let run_end = run_start
                .checked_add(run_bytes)
                .ok_or_else(|| overflow(run_start))?;
            // Runs are walked in order and pos only moves forward, so
            // run_start <= pos once pos < run_end.
            if let Some(within) = pos.checked_sub(run_start).filter(|_| pos < run_end) {
                let room = run_bytes.saturating_sub(within);
                let n = usize::try_from(room).map_or(rest.len(), |r| r.min(rest.len()));
                let (now, later) = rest.split_at(n);
                let at = run
                    .start
                    .byte_offset()?
                    .checked_add(within)
                    .ok_or_else(|| overflow(pos))?;
                self.window.write_at(at, now)?;
                rest = later;
                if rest.is_empty() {
                    return Ok(());
                }
                pos = pos.checked_add(n as u64).ok_or_else(|| overflow(pos))?;
            }
            run_start = run_end;
        }
        if rest.is_empty() {
            Ok(())
        } else {
            Err(Ext4Error::Internal(format!(
                "{}: reserved blocks do not cover offset {pos}",
                self.path
            )))
        }
    }

    /// Where the file's first `len` bytes lie in the file the partition
    /// window is over (the image): `(offset, length)` byte ranges in the
    /// file's order, the last cut at `len`. `len` may not exceed the
    /// file's size.
    pub fn image_spans(&self, len: u64) -> Result<Vec<(u64, u64)>, Ext4Error> {
        if len > self.size() {
            return Err(Ext4Error::WritePastEnd {
                path: self.path.to_string(),
                offset: 0,
                len,
                size: self.size(),
            });
        }
        let overflow =
            |at: u64| Ext4Error::Internal(format!("{}: offset past 2^64 near {at}", self.path));
        let mut spans = Vec::new();
        let mut pos = 0u64;
        for run in self.runs.iter() {
            if pos >= len {
                break;
            }
            let n = run.len.bytes()?.min(len.saturating_sub(pos));
            let at = self
                .window
                .start()
                .checked_add(run.start.byte_offset()?)
                .ok_or_else(|| overflow(pos))?;
            spans.push((at, n));
            pos = pos.checked_add(n).ok_or_else(|| overflow(pos))?;
        }
        if pos < len {
            return Err(Ext4Error::Internal(format!(
                "{}: reserved blocks do not cover offset {pos}",
                self.path
            )));
        }
        Ok(spans)
    }

    /// Copy the first `len` bytes of the file `src` to the start of this
    /// one, run by run, sharing the blocks where the filesystem can
    /// (FICLONERANGE on XFS and btrfs: nothing written but the unaligned
    /// tail) and in the kernel where the platform can (no trip through
    /// user space; a cached download is copied this way, and hashed from
    /// the page cache afterwards). `len` may not exceed the file's size.
    /// Returns the bytes shared with `src`.
    pub fn copy_file_from(&self, src: &std::fs::File, len: u64) -> Result<u64, Ext4Error> {
        if len > self.size() {
            return Err(Ext4Error::WritePastEnd {
                path: self.path.to_string(),
                offset: 0,
                len,
                size: self.size(),
            });
        }
        let size = len;
        let overflow =
            |at: u64| Ext4Error::Internal(format!("{}: offset past 2^64 near {at}", self.path));
        let mut pos = 0u64; // file offset copied so far
        let mut shared = 0u64;
        for run in self.runs.iter() {
            if pos >= size {
                break;
            }
            let n = run.len.bytes()?.min(size.saturating_sub(pos));
            let at = run.start.byte_offset()?;
            shared = shared.saturating_add(self.window.copy_from(src, pos, at, n)?);
            pos = pos.checked_add(n).ok_or_else(|| overflow(pos))?;
        }
        if pos < size {
            return Err(Ext4Error::Internal(format!(
                "{}: reserved blocks do not cover offset {pos}",
                self.path
            )));
        }
        Ok(shared)
    }

    /// Copy exactly [`FileWriter::size`] bytes of `src` into the file, from
    /// offset 0, calling `on_chunk` with each chunk written (hashing,
    /// progress). `buf` is the copy buffer, reused by callers that copy
    /// many files. A source that ends early is [`CopyError::Short`].
    pub fn copy_from(
        &self,
        src: &mut dyn std::io::Read,
        buf: &mut [u8],
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<(), CopyError> {
        let size = self.size();
        let mut off = 0u64;
        while off < size {
            let left = size.saturating_sub(off); // off < size
            let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            let chunk = buf.get_mut(..want).unwrap_or_default();
            let n = match src.read(chunk) {
                Ok(0) => return Err(CopyError::Short { got: off, size }),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(CopyError::Read(e)),
            };
            let data = chunk.get(..n).unwrap_or_default();
            self.write_at(off, data)?;
            on_chunk(data);
            // write_at refused anything past the size, so off + n <= size.
            off = off.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        }
        Ok(())
    }

    /// [`FileWriter::copy_from`] for a local file whose data lies only in
    /// `regions` (sorted `[start, end)` byte ranges, as `SEEK_DATA` /
    /// `SEEK_HOLE` report them): only those are read and written; the
    /// holes between them are left alone, since reserved blocks read as
    /// zeros (the builder zeroes its window first and hands each block out
    /// once). So a 100 GB sparse file with a few written regions costs a
    /// few writes, and the image stays sparse. `on_chunk` still sees every
    /// byte in order, holes as zeros (for digests and progress).
    pub fn copy_regions_from(
        &self,
        src: &std::fs::File,
        regions: &[(u64, u64)],
        buf: &mut [u8],
        mut on_chunk: impl FnMut(&[u8]),
    ) -> Result<(), CopyError> {
        use std::os::unix::fs::FileExt;
        let size = self.size();
        let mut off = 0u64;
        fn zeros_for(from: u64, to: u64, buf: &mut [u8], on_chunk: &mut impl FnMut(&[u8])) {
            buf.fill(0);
            let mut at = from;
            while at < to {
                let n =
                    usize::try_from(to.saturating_sub(at)).map_or(buf.len(), |l| l.min(buf.len()));
                on_chunk(buf.get(..n).unwrap_or_default());
                at = at.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            }
        }
        for &(start, end) in regions {
            let (start, end) = (start.max(off).min(size), end.min(size));
            if start >= end {
                continue;
            }
            zeros_for(off, start, buf, &mut on_chunk);
            off = start;
            while off < end {
                let left = end.saturating_sub(off);
                let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let chunk = buf.get_mut(..want).unwrap_or_default();
                let n = match src.read_at(chunk, off) {
                    Ok(0) => return Err(CopyError::Short { got: off, size }),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(CopyError::Read(e)),
                };
                let data = chunk.get(..n).unwrap_or_default();
                self.write_at(off, data)?;
                on_chunk(data);
                off = off.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            }
        }
        zeros_for(off, size, buf, &mut on_chunk);
        Ok(())
    }

    /// The window offset of the file's data when it lies in one run of
    /// exactly its size rounded up to whole blocks (every file of at most
    /// a run's length that [`Ext4Builder::create_file`] made in one piece).
    ///
    /// [`Ext4Builder::create_file`]: super::Ext4Builder::create_file
    fn one_run(&self) -> Option<(u64, u64)> {
        let [run] = &*self.runs else { return None };
        let bytes = run.len.bytes().ok()?;
        let size = self.size();
        let whole = size.div_ceil(BLOCK_SIZE).checked_mul(BLOCK_SIZE)?;
        (size > 0 && bytes == whole).then_some((run.start.byte_offset().ok()?, bytes))
    }

    /// A `std::io::Write` that appends from offset 0.
    pub fn sequential(self) -> SequentialWriter {
        SequentialWriter {
            inner: self,
            pos: 0,
        }
    }
}

/// Most bytes [`SmallFiles`] gathers before writing them.
const GATHER: usize = 1 << 20;
/// Largest file [`SmallFiles`] gathers; bigger ones are written directly.
const SMALL: u64 = 64 * 1024;

/// Gathers the data of small files whose blocks follow each other (files
/// created one after another get consecutive blocks) and writes them with
/// one positional write per MiB, tails of blocks as zeros, instead of one
/// write per file: a tree of 100-byte files costs a syscall and a
/// partially written page cache page per file otherwise (half the CPU of
/// a million-file tar, measured).
///
/// Used with the files of one builder only. Nothing gathered reaches the
/// image before [`SmallFiles::flush`], which the owner calls once done (a
/// failed build drops it unwritten); memory is at most 1 MiB.
#[derive(Debug, Default)]
pub struct SmallFiles {
    window: Option<PartitionWindow>,
    /// Window offset of `buf[0]`.
    start: u64,
    buf: Vec<u8>,
}

impl SmallFiles {
    /// An empty gatherer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Copy exactly [`FileWriter::size`] bytes of `src` into `w`, as
    /// [`FileWriter::copy_from`] does (`buf` is its copy buffer for files
    /// that are not gathered).
    pub fn copy(
        &mut self,
        w: &FileWriter,
        src: &mut dyn std::io::Read,
        buf: &mut [u8],
    ) -> Result<(), CopyError> {
        let size = w.size();
        let gathered = w
            .one_run()
            .filter(|_| size <= SMALL)
            .and_then(|(at, bytes)| {
                Some((
                    at,
                    usize::try_from(size).ok()?,
                    usize::try_from(bytes).ok()?,
                ))
            });
        let Some((at, size, bytes)) = gathered else {
            return w.copy_from(src, buf, |_| {});
        };
        let end = self.buf.len().checked_add(bytes);
        let follows = self.start.checked_add(self.buf.len() as u64) == Some(at);
        if !self.buf.is_empty() && (!follows || end.is_none_or(|e| e > GATHER)) {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.start = at;
            self.window = Some(w.window.clone());
            self.buf.reserve(GATHER);
        }
        let from = self.buf.len();
        // At most GATHER + SMALL: no overflow.
        self.buf.resize(from.saturating_add(bytes), 0);
        let dst = self
            .buf
            .get_mut(from..)
            .and_then(|b| b.get_mut(..size))
            .unwrap_or_default();
        let mut got = 0usize;
        let failed = loop {
            let Some(rest) = dst.get_mut(got..).filter(|r| !r.is_empty()) else {
                break None;
            };
            match src.read(rest) {
                Ok(0) => {
                    break Some(CopyError::Short {
                        got: got as u64,
                        size: size as u64,
                    })
                }
                Ok(n) => got = got.saturating_add(n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(CopyError::Read(e)),
            }
        };
        match failed {
            None => Ok(()),
            Some(e) => {
                self.buf.truncate(from);
                Err(e)
            }
        }
    }

    /// Write what is gathered.
    pub fn flush(&mut self) -> Result<(), Ext4Error> {
        if let (Some(w), false) = (&self.window, self.buf.is_empty()) {
            w.write_at(self.start, &self.buf)?;
        }
        self.buf.clear();
        Ok(())
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
        // A file is at most 16 TiB (checked at creation): no overflow.
        self.pos = self.pos.saturating_add(buf.len() as u64);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;
    use crate::fs::ext4::Timestamp;

    /// A builder on a 64 MiB image whose bytes start as 0xAA, so bytes
    /// nobody wrote show.
    fn builder(dir: &std::path::Path) -> (crate::fs::ext4::Ext4Builder, PartitionWindow) {
        use std::io::Write;
        let path = dir.join("img");
        let mut f = std::fs::File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("image");
        let len = 64u64 << 20;
        let junk = vec![0xAAu8; 1 << 20];
        for _ in 0..(len >> 20) {
            f.write_all(&junk).expect("junk");
        }
        let w = PartitionWindow::new(Arc::new(f), &path, 0, len);
        let b = crate::fs::ext4::Ext4Builder::new(w.clone(), Default::default()).expect("builder");
        (b, w)
    }

    /// The file's bytes in the image, whole blocks.
    fn blocks_of(w: &PartitionWindow, f: &FileWriter) -> Vec<u8> {
        let mut out = Vec::new();
        for r in f.runs.iter() {
            let mut b = vec![0u8; r.len.bytes().expect("len") as usize];
            w.read_at(r.start.byte_offset().expect("at"), &mut b)
                .expect("read");
            out.extend(b);
        }
        out
    }

    #[test]
    fn small_files_gathered_are_written_at_flush_with_zero_tails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut b, w) = builder(dir.path());
        let root = crate::fs::ext4::ROOT_INO;
        let meta = crate::fs::ext4::InodeMeta::new(0o644, Timestamp::default());
        // Small ones (gathered), an empty one, one too big to gather (it
        // breaks the run: the next small one starts a new gather), one
        // whose source is short, and small ones after it.
        let sizes: [u64; 8] = [100, 4096, 5000, 0, 70_000, 1, 300, 7];
        let mut small = SmallFiles::new();
        let mut buf = vec![0u8; 4096];
        let mut files = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let name = format!("f{i}");
            let f = b
                .create_file(root, name.as_bytes(), size, meta)
                .expect("create");
            let byte = u8::try_from(i + 1).expect("small");
            let data = vec![byte; size as usize];
            let r = if i == 6 {
                // 300 bytes promised, 120 given.
                small.copy(&f, &mut &data[..120], &mut buf)
            } else {
                small.copy(&f, &mut &data[..], &mut buf)
            };
            assert_eq!(r.is_err(), i == 6, "file {i}: {r:?}");
            files.push((f, data));
        }
        // Before the flush, the last gathered files are not in the image.
        let last = &files[7].0;
        assert!(blocks_of(&w, last).iter().all(|&x| x == 0 || x == 0xAA));
        small.flush().expect("flush");
        for (i, (f, data)) in files.iter().enumerate() {
            if i == 6 || data.is_empty() {
                continue;
            }
            let got = blocks_of(&w, f);
            assert_eq!(&got[..data.len()], &data[..], "file {i}");
            if i != 4 {
                assert!(
                    got[data.len()..].iter().all(|&x| x == 0),
                    "file {i}: the block's tail is zeros"
                );
            }
        }
    }

    #[test]
    fn sizes_by_inode() {
        let s = Sizes::new(5000);
        assert_eq!(s.get(1), 0);
        assert!(s.set(1, 7));
        assert!(s.set(4097, 9), "second segment");
        assert!(s.set(5000, 11));
        assert!(!s.set(0, 1), "no inode 0");
        assert!(!s.set(8193, 1), "past the table");
        assert_eq!(
            (s.get(1), s.get(4096), s.get(4097), s.get(5000)),
            (7, 0, 9, 11)
        );
        assert_eq!((s.get(0), s.get(9000)), (0, 0));
    }
}
