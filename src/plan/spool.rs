//! A remote archive's pre-scan kept for the build: without the download
//! cache, the bytes the pre-scan downloads (src/expand/sizing.rs) also go
//! to an unnamed file in the build directory, and the build expands the
//! archive from it. One download per remote archive, cache or not.
//!
//! The spool is a convenience, never a reason to fail: when the build
//! directory has no room for the archive (asked before the first byte)
//! or a write fails, the spool is dropped, the pre-scan goes on, and the
//! build downloads the archive again, as it did before spools.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::io::ChunkSink;

/// Room left free in the build directory beside a spool: 64 MiB, for the
/// old data partition's spill file and the filesystem's own metadata (a
/// spool that fills the disk would fail other writers, not just itself).
const SPOOL_MARGIN: u64 = 64 << 20;

/// The pre-scan's second destination: an unnamed file of the build
/// directory, written at the payload's offsets. Made at the first write
/// (a pre-scan that fills the cache instead never makes one).
#[derive(Debug)]
pub struct Spool {
    state: State,
    /// The end of the furthest write.
    end: u64,
}

#[derive(Debug)]
enum State {
    /// Nothing written yet: where the file goes, and the archive's size.
    Unmade(std::path::PathBuf, u64),
    /// Being written.
    Open(File),
    /// Not kept, and why.
    Dropped(String),
}

impl Spool {
    /// A spool for an archive of `size` bytes in `dir`.
    pub fn new(dir: &Path, size: u64) -> Self {
        Self {
            state: State::Unmade(dir.to_path_buf(), size),
            end: 0,
        }
    }

    /// A spool that keeps nothing (no build directory: `--check`).
    pub fn none() -> Self {
        Self {
            state: State::Dropped(String::new()),
            end: 0,
        }
    }

    /// Why a spool that was written to was not kept.
    pub fn dropped(&self) -> Option<&str> {
        match &self.state {
            State::Dropped(why) if !why.is_empty() => Some(why),
            _ => None,
        }
    }

    /// The spooled archive, when it holds exactly `[0, size)`: the whole
    /// download the pre-scan verified.
    pub fn finish(self, size: u64) -> Option<File> {
        match self.state {
            State::Open(file) if self.end == size && size > 0 => Some(file),
            _ => None,
        }
    }

    /// The file, made on the first call when `dir` has room for `size`.
    fn open(&mut self) -> Option<&File> {
        if let State::Unmade(dir, size) = &self.state {
            self.state = match make(dir, *size) {
                Ok(file) => State::Open(file),
                Err(why) => State::Dropped(why),
            };
        }
        match &self.state {
            State::Open(file) => Some(file),
            _ => None,
        }
    }
}

/// An unnamed file in `dir` when its filesystem has room for `size`
/// bytes and [`SPOOL_MARGIN`].
fn make(dir: &Path, size: u64) -> Result<File, String> {
    let free = free_bytes(dir)?;
    if free < size.saturating_add(SPOOL_MARGIN) {
        return Err(format!(
            "the build directory {} has {free} bytes free, the archive is {size}",
            dir.display()
        ));
    }
    tempfile::tempfile_in(dir).map_err(|e| format!("creating a file in {}: {e}", dir.display()))
}

impl ChunkSink for Spool {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let Some(file) = self.open() else {
            return Ok(());
        };
        match file.write_all_at(data, offset) {
            Ok(()) => {
                let len = u64::try_from(data.len()).unwrap_or(u64::MAX);
                self.end = self.end.max(offset.saturating_add(len));
            }
            Err(e) => {
                self.state = State::Dropped(format!("writing at offset {offset}: {e}"));
            }
        }
        // The pre-scan goes on without the spool.
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use in `dir`'s filesystem.
fn free_bytes(dir: &Path) -> Result<u64, String> {
    rustix::fs::statvfs(dir)
        .map(|st| st.f_bavail.saturating_mul(st.f_frsize))
        .map_err(|e| format!("free space of {}: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_spool_is_kept_and_reads_back() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut s = Spool::new(dir.path(), 10);
        s.write(5, b"world")?;
        s.write(0, b"hello")?;
        let f = s.finish(10).ok_or("kept")?;
        let mut buf = [0u8; 10];
        f.read_exact_at(&mut buf, 0)?;
        assert_eq!(&buf, b"helloworld");
        // Unnamed: nothing in the directory.
        assert_eq!(std::fs::read_dir(dir.path())?.count(), 0);
        Ok(())
    }

    #[test]
    fn a_short_or_empty_spool_is_not_kept() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut s = Spool::new(dir.path(), 10);
        s.write(0, b"hello")?;
        assert!(s.finish(10).is_none());
        assert!(Spool::new(dir.path(), 0).finish(0).is_none());
        Ok(())
    }

    #[test]
    fn no_room_means_no_spool_and_says_why() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut s = Spool::new(dir.path(), u64::MAX - 1);
        assert!(s.dropped().is_none(), "nothing asked before a write");
        s.write(0, b"x")?;
        let why = s.dropped().ok_or("dropped")?.to_string();
        assert!(why.contains("bytes free"), "{why}");
        assert!(s.finish(1).is_none());
        let mut gone = Spool::new(&dir.path().join("missing"), 1);
        gone.write(0, b"x")?;
        assert!(gone.dropped().is_some());
        let mut none = Spool::none();
        none.write(0, b"x")?;
        assert!(none.dropped().is_none() && none.finish(1).is_none());
        Ok(())
    }
}
