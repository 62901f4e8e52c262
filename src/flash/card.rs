//! One device being flashed: [`Card`] (opened exclusively, its partition
//! tables zeroed) and [`CardSink`], the consumer of the decoded image
//! that writes the mapped ranges onto it.
//!
//! - **Large aligned writes.** A mapped piece of a chunk of 256 KiB or
//!   more is written straight from the chunk (its buffer is aligned for
//!   direct I/O: no copy); smaller pieces are gathered in a 4 MiB aligned
//!   buffer written when it is full or the next mapped byte is not
//!   contiguous. Each write goes through an
//!   `O_DIRECT` descriptor when the device has one and the write is
//!   aligned (a map's ranges are whole 4 KiB blocks; only an image whose
//!   size is not a multiple of 4 KiB ends unaligned), else through the
//!   plain one (synced at the end). Direct writes keep N copies of the
//!   image out of the page cache and report an I/O error at the write
//!   that met it, not at a later sync.
//! - **The partition table last.** The first MiB of the device and its
//!   last 64 KiB (MBR, GPT's primary and backup headers) are zeroed and
//!   synced before anything else (as a build onto a device does); the
//!   image's own first MiB is held in memory and written after
//!   everything else is synced, then synced itself. A card that fails in
//!   between has no valid partition table. A MiB, not the MBR's 512
//!   bytes: it also covers a GPT's primary table (34 sectors) and the gap
//!   boot loaders use, and partitions are aligned to a MiB or more
//!   (Offspot's to 4 or 8 MiB), so it holds table data only.
//! - **A card that fails is dropped, not the run.** Its error is kept and
//!   reported; its sink goes on taking (and ignoring) the stream, so the
//!   other cards never wait for it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::os::blockdev::{self, AlignedBuf};
use crate::output::DownloadSink;
use crate::progress::Reporter;

/// The partition table area: the first MiB (see the module's doc).
pub const HEAD: u64 = 1 << 20;
/// The end of the device zeroed with the head: 64 KiB (a GPT's backup
/// header is its last sector, its backup table the 32 sectors before).
const TAIL: u64 = 64 << 10;
/// Bytes per gathered write: 4 MiB (an SD card's erase block is 4 MiB
/// or less, and larger writes gain nothing measurable on loop devices
/// here).
pub const WRITE_BUF: usize = 4 << 20;
/// Least piece of a chunk written straight from it: 256 KiB. A chunk is
/// 1 MiB (bmaptool writes 1 MiB at a time too); most of an image's mapped
/// bytes come in whole chunks, written with no copy (a copy per card per
/// byte was a third of the CPU of flashing four cards, scripts/
/// bench-flash.sh); smaller pieces are gathered into larger writes.
const DIRECT_MIN: usize = 256 << 10;

/// A device opened for flashing.
pub struct Card {
    /// Its path, as given.
    pub path: PathBuf,
    /// Opened `O_EXCL` (holds the device against mounts and other
    /// writers), plain I/O.
    plain: File,
    /// The same device opened `O_DIRECT`, when it accepts it.
    direct: Option<File>,
    /// Its size.
    pub len: u64,
}

impl Card {
    /// Open `path` exclusively (and a direct descriptor beside it).
    pub fn open(path: &Path) -> Result<Self, String> {
        let plain = blockdev::open_exclusive(path)
            .map_err(|e| format!("opening it exclusively (O_EXCL): {e}"))?;
        let len = blockdev::size(path).map_err(|e| format!("reading its size: {e}"))?;
        Ok(Self {
            path: path.to_path_buf(),
            plain,
            direct: blockdev::open_direct(path, true),
            len,
        })
    }

    /// Whether writes go past the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Zero the partition table areas (the first MiB, the last 64 KiB)
    /// and sync.
    pub fn invalidate(&self) -> std::io::Result<()> {
        let head = self.len.min(HEAD);
        let tail = self.len.saturating_sub(TAIL).max(head);
        let zeros = AlignedBuf::new(usize::try_from(HEAD).unwrap_or(1 << 20));
        for (at, end) in [(0, head), (tail, self.len)] {
            let n = usize::try_from(end - at).unwrap_or(0);
            self.write_at(&zeros.as_slice()[..n], at)?;
        }
        self.plain.sync_all()
    }

    /// `data` at `at`: direct when aligned and possible, else plain.
    fn write_at(&self, data: &[u8], at: u64) -> std::io::Result<()> {
        let aligned_len = data.len() / blockdev::DIRECT_ALIGN * blockdev::DIRECT_ALIGN;
        if let Some(d) = &self.direct {
            if blockdev::direct_aligned(at, aligned_len)
                && (data.as_ptr() as usize).is_multiple_of(blockdev::DIRECT_ALIGN)
                && aligned_len > 0
            {
                match d.write_all_at(&data[..aligned_len], at) {
                    Ok(()) => {
                        let rest = &data[aligned_len..];
                        return self.plain.write_all_at(rest, at + aligned_len as u64);
                    }
                    // EINVAL: the device wants another alignment (a
                    // logical block over 4 KiB): plain I/O for this one.
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.plain.write_all_at(data, at)
    }

    /// Sync what was written (plain writes' dirty pages, the device's
    /// own cache).
    pub fn sync(&self) -> std::io::Result<()> {
        self.plain.sync_all()
    }

    /// The plain descriptor (the read-back's fallback).
    pub fn plain(&self) -> &File {
        &self.plain
    }
}

/// How writing a card went.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// Bytes written (the mapped bytes; the zeroed tables not counted).
    pub bytes: u64,
    /// From the first byte of the stream to the last sync.
    pub took: Duration,
    /// Why it failed, with the offset.
    pub error: Option<String>,
    /// Whether every mapped byte was written and synced.
    pub complete: bool,
}

/// The consumer of the decoded image for one card.
pub struct CardSink<'a> {
    card: &'a Card,
    name: String,
    /// The byte ranges to write, ascending, disjoint, within the image.
    map: &'a [(u64, u64)],
    next: usize,
    /// The image's first MiB (its mapped part), written last.
    head: Vec<u8>,
    buf: AlignedBuf,
    buf_at: u64,
    buf_len: usize,
    started: Option<Instant>,
    reporter: &'a dyn Reporter,
    /// The result.
    pub written: Written,
}

impl<'a> CardSink<'a> {
    /// A sink writing `map` (byte ranges) of the image onto `card`.
    pub fn new(card: &'a Card, map: &'a [(u64, u64)], reporter: &'a dyn Reporter) -> Self {
        let head_len = map
            .iter()
            .filter(|r| r.0 < HEAD)
            .map(|r| r.1.min(HEAD))
            .max()
            .unwrap_or(0);
        Self {
            card,
            name: card.path.display().to_string(),
            map,
            next: 0,
            head: vec![0; usize::try_from(head_len).unwrap_or(0)],
            buf: AlignedBuf::new(WRITE_BUF),
            buf_at: 0,
            buf_len: 0,
            started: None,
            reporter,
            written: Written::default(),
        }
    }

    /// The card's write starts: its partition tables are zeroed first
    /// (a card that can't be is dropped at once).
    pub fn begin(&mut self) {
        let total: u64 = self.map.iter().map(|(s, e)| e - s).sum();
        self.reporter.item_started(&self.name, Some(total));
        if let Err(e) = self.card.invalidate() {
            self.fail(format!("zeroing its partition tables: {e}"));
        }
    }

    /// Drop the card with `error` (reported once).
    fn fail(&mut self, error: String) {
        if self.written.error.is_none() {
            self.reporter.item_failed(&self.name, &error);
            self.written.error = Some(error);
        }
    }

    /// Write the gathered bytes.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf_len == 0 {
            return Ok(());
        }
        let (at, n) = (self.buf_at, self.buf_len);
        self.buf_len = 0;
        self.card
            .write_at(&self.buf.as_slice()[..n], at)
            .map_err(|e| std::io::Error::new(e.kind(), format!("writing at byte {at}: {e}")))?;
        self.written.bytes += n as u64;
        self.reporter.item_progress(&self.name, n as u64);
        Ok(())
    }

    /// `data`, the image's bytes at `at`: into the head below 1 MiB;
    /// written as it is when it is a large aligned piece of a chunk (the
    /// pass's chunks are aligned buffers: no copy); else gathered.
    fn stage(&mut self, mut at: u64, mut data: &[u8]) -> std::io::Result<()> {
        if at >= HEAD
            && data.len() >= DIRECT_MIN
            && blockdev::direct_aligned(at, data.len())
            && (data.as_ptr() as usize).is_multiple_of(blockdev::DIRECT_ALIGN)
        {
            self.flush()?;
            self.card
                .write_at(data, at)
                .map_err(|e| std::io::Error::new(e.kind(), format!("writing at byte {at}: {e}")))?;
            self.written.bytes += data.len() as u64;
            self.reporter.item_progress(&self.name, data.len() as u64);
            return Ok(());
        }
        if at < HEAD {
            let n = usize::try_from((HEAD - at).min(data.len() as u64)).unwrap_or(0);
            let from = usize::try_from(at).unwrap_or(0);
            if let Some(h) = self.head.get_mut(from..from + n) {
                h.copy_from_slice(&data[..n]);
            }
            at += n as u64;
            data = &data[n..];
        }
        while !data.is_empty() {
            if self.buf_len > 0 && self.buf_at + self.buf_len as u64 != at {
                self.flush()?;
            }
            if self.buf_len == 0 {
                self.buf_at = at;
            }
            let n = (WRITE_BUF - self.buf_len).min(data.len());
            self.buf.as_mut_slice()[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            at += n as u64;
            data = &data[n..];
            if self.buf_len == WRITE_BUF {
                self.flush()?;
            }
        }
        Ok(())
    }

    fn take(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let end = offset + data.len() as u64;
        while let Some(&(rs, re)) = self.map.get(self.next) {
            if rs >= end {
                break;
            }
            let (a, b) = (rs.max(offset), re.min(end));
            if a < b {
                // Both within `data`: offset <= a < b <= end.
                let from = usize::try_from(a - offset).unwrap_or(0);
                let to = usize::try_from(b - offset).unwrap_or(0);
                self.stage(a, &data[from..to])?;
            }
            if re > end {
                break;
            }
            self.next += 1;
        }
        Ok(())
    }

    /// The end: the rest, a sync, the head, a sync.
    fn complete(&mut self, len: u64) -> std::io::Result<()> {
        if self.next < self.map.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the image ended at byte {len}, before the map's range {} of {}",
                    self.next + 1,
                    self.map.len()
                ),
            ));
        }
        self.flush()?;
        self.card.sync()?;
        let mut head = AlignedBuf::new(self.head.len());
        head.as_mut_slice().copy_from_slice(&self.head);
        for &(rs, re) in self.map.iter().take_while(|r| r.0 < HEAD) {
            let (a, b) = (rs, re.min(HEAD));
            let (from, to) = (
                usize::try_from(a).unwrap_or(0),
                usize::try_from(b).unwrap_or(0),
            );
            self.card
                .write_at(&head.as_slice()[from..to], a)
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("writing the partition table area: {e}"))
                })?;
            self.written.bytes += b - a;
            self.reporter.item_progress(&self.name, b - a);
        }
        self.card.sync()
    }
}

impl DownloadSink for CardSink<'_> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if self.written.error.is_some() {
            return Ok(());
        }
        self.started.get_or_insert_with(Instant::now);
        if let Err(e) = self.take(offset, data) {
            self.fail(e.to_string());
        }
        Ok(())
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        if self.written.error.is_some() {
            return Ok(());
        }
        match self.complete(len) {
            Ok(()) => self.written.complete = true,
            Err(e) => self.fail(e.to_string()),
        }
        self.written.took = self.started.map(|t| t.elapsed()).unwrap_or_default();
        Ok(())
    }

    fn abort(&mut self) {
        self.written.took = self.started.map(|t| t.elapsed()).unwrap_or_default();
    }
}
