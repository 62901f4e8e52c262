//! Lock files: `std::fs::File` advisory locks (`flock` on Unix), held for as
//! long as the returned [`LockFile`] lives, and released by the kernel when
//! the process dies, so a `kill -9` never leaves a lock behind.
//!
//! The standard library only offers blocking and non-blocking attempts; a
//! wait with a deadline polls `try_lock`, backing off from 5 ms to 200 ms
//! (a lock held for a download is held for seconds to hours: polling costs
//! nothing noticeable, and a freed lock is seen within 200 ms).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::CacheError;

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Many holders.
    Shared,
    /// One holder.
    Exclusive,
}

/// A held lock.
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    fn open(path: &Path) -> Result<File, CacheError> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(CacheError::io(path, "opening lock file"))
    }

    /// Take the lock, waiting at most `timeout`.
    pub fn acquire(path: &Path, mode: Mode, timeout: Duration) -> Result<LockFile, CacheError> {
        let file = Self::open(path)?;
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(5);
        loop {
            match try_lock(&file, mode) {
                Ok(()) => {
                    return Ok(LockFile {
                        file,
                        path: path.to_path_buf(),
                    })
                }
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(CacheError::io(path, "locking")(e));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(CacheError::LockTimeout {
                    path: path.to_path_buf(),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Take the lock if nobody holds it; `None` when busy.
    pub fn try_acquire(path: &Path, mode: Mode) -> Result<Option<LockFile>, CacheError> {
        let file = Self::open(path)?;
        match try_lock(&file, mode) {
            Ok(()) => Ok(Some(LockFile {
                file,
                path: path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(CacheError::io(path, "locking")(e)),
        }
    }

    /// Switch between shared and exclusive without waiting; `false` when
    /// another holder prevents it (the lock is then still held as before).
    pub fn try_convert(&self, mode: Mode) -> Result<bool, CacheError> {
        match try_lock(&self.file, mode) {
            Ok(()) => Ok(true),
            Err(TryLockError::WouldBlock) => Ok(false),
            Err(TryLockError::Error(e)) => Err(CacheError::io(&self.path, "locking")(e)),
        }
    }
}

pub(crate) fn try_lock(file: &File, mode: Mode) -> Result<(), TryLockError> {
    match mode {
        Mode::Shared => file.try_lock_shared(),
        Mode::Exclusive => file.try_lock(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_times_out_naming_the_path() -> Result<(), CacheError> {
        let dir = tempfile::tempdir().map_err(CacheError::io("tmp", "creating"))?;
        let p = dir.path().join("k.lock");
        let held = LockFile::acquire(&p, Mode::Exclusive, Duration::from_secs(1))?;
        assert!(LockFile::try_acquire(&p, Mode::Shared)?.is_none());
        let err = LockFile::acquire(&p, Mode::Exclusive, Duration::from_millis(50))
            .expect_err("held elsewhere");
        assert!(err.to_string().contains("k.lock"), "{err}");
        drop(held);
        let a = LockFile::acquire(&p, Mode::Shared, Duration::from_secs(1))?;
        let b = LockFile::try_acquire(&p, Mode::Shared)?;
        assert!(b.is_some());
        assert!(!a.try_convert(Mode::Exclusive)?);
        drop(b);
        assert!(a.try_convert(Mode::Exclusive)?);
        assert!(LockFile::try_acquire(&p, Mode::Shared)?.is_none());
        Ok(())
    }
}
