//! `WindowReader`: a `Read + Seek` cursor over a byte range of a partition.
//!
//! Built by [`PartitionWindow::reader`]. Every read is one positional `pread`
//! (no shared seek state: many readers may share the image file), bounded by
//! the range `[start, end)` given in window offsets. End of the range is
//! `Ok(0)`; end of the *file* before the end of the range is an error of kind
//! `UnexpectedEof` that names the image and the absolute offset (a truncated
//! image must fail loudly, never read as a short partition).

use std::io::{Read, Seek, SeekFrom};

use super::window::{PartitionWindow, WindowError};

/// Reads `[start, end)` of a [`PartitionWindow`] (offsets relative to the
/// window). Seek positions are relative to `start`, like a file holding
/// just that range.
#[derive(Debug, Clone)]
pub struct WindowReader {
    window: PartitionWindow,
    /// Window offset of the range start.
    start: u64,
    /// Window offset just past the range (`start <= end <= window.len()`).
    end: u64,
    /// Window offset of the cursor; `>= start`, may be past `end` after a
    /// seek (reads there return `Ok(0)`, as for a file).
    pos: u64,
}

impl PartitionWindow {
    /// A reader over `[start, end)` of this window (window offsets).
    /// Fails, naming the image, when the range is reversed or leaves the
    /// window.
    pub fn reader(&self, start: u64, end: u64) -> Result<WindowReader, WindowError> {
        let len = end
            .checked_sub(start)
            .ok_or_else(|| WindowError::OutOfBounds {
                path: self.path().to_path_buf(),
                offset: start,
                len: 0,
                size: self.len(),
            })?;
        // Bounds check only: the narrowed window is not kept.
        self.sub(start, len)?;
        Ok(WindowReader {
            window: self.clone(),
            start,
            end,
            pos: start,
        })
    }
}

impl WindowReader {
    /// Length of the range in bytes.
    pub fn len(&self) -> u64 {
        // start <= end is checked by `PartitionWindow::reader`.
        self.end.saturating_sub(self.start)
    }

    /// True when the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Position of the cursor relative to the range start.
    pub fn position(&self) -> u64 {
        self.pos.saturating_sub(self.start)
    }

    /// Position of the cursor relative to the window (for positional writes
    /// at the same place, as the FAT adapter does).
    pub fn window_offset(&self) -> u64 {
        self.pos
    }

    /// Absolute offset of the cursor in the image file (for messages).
    pub fn image_offset(&self) -> u64 {
        self.window.start().saturating_add(self.pos)
    }

    /// Bytes left before the end of the range.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.pos)
    }

    /// The window this reader reads from.
    pub fn window(&self) -> &PartitionWindow {
        &self.window
    }
}

impl From<WindowError> for std::io::Error {
    /// Keep the error (path and offset) as the payload and pick the kind a
    /// caller can act on: `UnexpectedEof` for a short image, the OS error's
    /// kind for I/O failures, `InvalidInput` for an access outside the window.
    fn from(e: WindowError) -> Self {
        let kind = match &e {
            WindowError::UnexpectedEof { .. } => std::io::ErrorKind::UnexpectedEof,
            WindowError::Io { source, .. } => source.kind(),
            WindowError::OutOfBounds { .. } => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

impl Read for WindowReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.remaining();
        let n = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let Some(dst) = buf.get_mut(..n) else {
            return Ok(0);
        };
        if dst.is_empty() {
            return Ok(0);
        }
        let got = self.window.read_some_at(self.pos, dst)?;
        // got <= n <= remaining, so pos stays <= end.
        self.pos = self.pos.saturating_add(got as u64);
        Ok(got)
    }
}

impl Seek for WindowReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let target = match to {
            SeekFrom::Start(p) => self.start.checked_add(p),
            SeekFrom::End(d) => self.end.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(t) if t >= self.start => {
                self.pos = t;
                Ok(self.position())
            }
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{}: seek {to:?} from image offset {} leaves the range",
                    self.window.path().display(),
                    self.image_offset()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A 100-byte image holding 0, 1, 2, ... with a window over bytes 10..60.
    fn image() -> (tempfile::NamedTempFile, PartitionWindow) {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        let data: Vec<u8> = (0u8..100).collect();
        std::fs::write(tmp.path(), &data).expect("write");
        let file = Arc::new(tmp.reopen().expect("reopen"));
        let w = PartitionWindow::new(file, tmp.path(), 10, 50);
        (tmp, w)
    }

    #[test]
    fn reads_exactly_the_range() {
        let (_tmp, w) = image();
        let mut r = w.reader(5, 15).expect("reader");
        assert_eq!(r.len(), 10);
        let mut out = Vec::new();
        r.read_to_end(&mut out).expect("read");
        assert_eq!(out, (15u8..25).collect::<Vec<_>>());
        assert_eq!(r.position(), 10);
        assert_eq!(r.read(&mut [0u8; 4]).expect("at end"), 0);
    }

    #[test]
    fn small_buffers_and_seeks() {
        let (_tmp, w) = image();
        let mut r = w.reader(0, 50).expect("reader");
        let mut b = [0u8; 3];
        r.read_exact(&mut b).expect("read");
        assert_eq!(b, [10, 11, 12]);
        assert_eq!(r.seek(SeekFrom::End(-2)).expect("seek"), 48);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("read");
        assert_eq!(rest, [58, 59]);
        assert_eq!(r.seek(SeekFrom::Current(-50)).expect("seek"), 0);
        assert!(r.seek(SeekFrom::Current(-1)).is_err(), "before the start");
        assert_eq!(r.seek(SeekFrom::Start(70)).expect("past end"), 70);
        assert_eq!(r.read(&mut b).expect("past end reads nothing"), 0);
    }

    #[test]
    fn refuses_ranges_outside_the_window() {
        let (_tmp, w) = image();
        assert!(w.reader(40, 51).is_err());
        assert!(w.reader(20, 10).is_err());
        assert!(w.reader(0, u64::MAX).is_err());
        assert!(w.reader(50, 50).expect("empty at end").is_empty());
    }

    #[test]
    fn short_file_is_unexpected_eof_with_offset() {
        let (tmp, w) = image();
        std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .expect("open")
            .set_len(30)
            .expect("truncate");
        let mut r = w.reader(0, 50).expect("reader");
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).expect_err("image is short");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(out, (10u8..30).collect::<Vec<_>>());
        let msg = e.to_string();
        assert!(msg.contains("image offset 30"), "{msg}");
        assert!(
            msg.contains(&tmp.path().display().to_string()),
            "names the image: {msg}"
        );
    }

    #[test]
    fn readers_share_no_cursor() {
        let (_tmp, w) = image();
        let mut a = w.reader(0, 10).expect("a");
        let mut b = w.reader(10, 20).expect("b");
        let mut x = [0u8; 2];
        let mut y = [0u8; 2];
        a.read_exact(&mut x).expect("a");
        b.read_exact(&mut y).expect("b");
        a.read_exact(&mut x).expect("a again");
        assert_eq!(x, [12, 13]);
        assert_eq!(y, [20, 21]);
    }
}
