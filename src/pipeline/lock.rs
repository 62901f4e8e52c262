//! One build per OUTPUT: an exclusive `flock` on `.<OUTPUT name>.image-creator.lock`
//! beside OUTPUT, held from before the output file exists until after it
//! is linked or renamed into place, and the removal of what dead builds
//! left in a directory (their lock files and named temporary outputs).
//!
//! The lock file is removed by its holder while still locked, so nothing
//! stays behind after a clean exit. That makes the classic race possible
//! (B opens the file, A unlinks it and unlocks, B locks an unlinked inode
//! while C creates and locks a new one), so every acquisition checks, while
//! holding the lock, that the path still names the inode it locked, and
//! starts again when it does not.
//!
//! `flock` locks belong to the open file description, so the kernel
//! releases them when the holder dies, even by `kill -9` or a power loss:
//! a lock file that can be locked belongs to nobody.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// Lock files end with this, after `.<OUTPUT file name>`.
pub const LOCK_SUFFIX: &str = ".image-creator.lock";

/// Named temporary outputs (where the output can't be created unnamed)
/// end with this, after `.<OUTPUT file name>`.
pub const PART_SUFFIX: &str = ".image-creator.part";

/// How long a busy lock is retried before it counts as held by another
/// build. A live build holds its lock for the whole build and writes its
/// pid at once, so a wait only matters when the lock is held for an
/// instant by a build sweeping dead leftovers ([`sweep`]) or by a build
/// that has not written its pid yet; both take microseconds. 500 ms keeps
/// "fails at once" true for a person and leaves room on a loaded machine.
const BUSY_GRACE: Duration = Duration::from_millis(500);

/// Pause between attempts while a lock is busy.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// The lock file of `output` (in `dir`, OUTPUT's directory).
pub fn lock_path(dir: &Path, output_name: &str) -> PathBuf {
    dir.join(format!(".{output_name}{LOCK_SUFFIX}"))
}

/// The named temporary output of `output` (in `dir`).
pub fn part_path(dir: &Path, output_name: &str) -> PathBuf {
    dir.join(format!(".{output_name}{PART_SUFFIX}"))
}

/// Why a lock was not taken.
#[derive(Debug)]
pub enum LockFailure {
    /// Another live build holds it; its pid when it could be read.
    Busy(Option<u32>),
    /// The lock file can't be created, read or locked.
    Io(std::io::Error),
}

/// A held output lock. Released (the file removed, then unlocked) by
/// [`OutputLock::release`] or when dropped.
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Take the lock at `path`, retrying a busy lock for [`BUSY_GRACE`]
    /// unless its holder is known to be alive. Writes our pid into it.
    pub fn acquire(path: &Path) -> Result<Self, LockFailure> {
        let deadline = Instant::now() + BUSY_GRACE;
        loop {
            match Self::attempt(path).map_err(LockFailure::Io)? {
                Some(mut lock) => {
                    lock.write_pid().map_err(LockFailure::Io)?;
                    return Ok(lock);
                }
                None => {
                    let holder = read_pid(path);
                    if holder.is_some_and(alive) || Instant::now() >= deadline {
                        return Err(LockFailure::Busy(holder));
                    }
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        }
    }

    /// One attempt, for [`sweep`]: `None` when the lock is busy (or the
    /// file can't be opened).
    fn try_stale(path: &Path) -> Option<Self> {
        Self::attempt(path).ok().flatten()
    }

    /// Open (creating) and lock `path` without waiting; `Ok(None)` when
    /// another holder has it. Starts again when the locked inode is no
    /// longer the one at `path` (its holder removed it meanwhile).
    fn attempt(path: &Path) -> std::io::Result<Option<Self>> {
        use std::os::unix::fs::OpenOptionsExt;
        loop {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
            let held = rustix::fs::fstat(&file)?;
            match rustix::fs::stat(path) {
                Ok(now) if now.st_dev == held.st_dev && now.st_ino == held.st_ino => {
                    return Ok(Some(Self {
                        file,
                        path: path.to_path_buf(),
                    }));
                }
                // Removed or replaced by its previous holder: try the new one.
                Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Record who holds the lock, for the error of a second build.
    fn write_pid(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        writeln!(self.file, "{}", std::process::id())?;
        self.file.flush()
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the lock file, then unlock (by closing it).
    pub fn release(self) {
        drop(self);
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still locked; `self.file` closes (unlocks) after.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The pid written in the lock file at `path`.
fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    // A pid is at most 10 digits; anything longer is not ours.
    File::open(path)
        .ok()?
        .take(32)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// True when a process with this pid exists (EPERM: it exists, owned by
/// someone else).
fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => true,
        Err(_) => false,
    }
}

/// The OUTPUT file name a leftover of ours in a directory belongs to:
/// `.<name>.image-creator.lock` or `.<name>.image-creator.part`.
fn leftover_of(file_name: &str) -> Option<&str> {
    let inner = file_name.strip_prefix('.')?;
    inner
        .strip_suffix(LOCK_SUFFIX)
        .or_else(|| inner.strip_suffix(PART_SUFFIX))
        .filter(|n| !n.is_empty())
}

/// Remove what builds that are gone left in `dir`: for every OUTPUT name
/// with a lock or temporary file there (other than `ours`), take its lock
/// without waiting; when that succeeds its build is dead (or finished), so
/// its temporary output and then its lock file are removed. A live build's
/// files are never touched: it holds its lock for as long as they exist.
/// Returns the paths removed. Errors are ignored: a leftover that can't
/// be removed now is tried again by the next build.
pub fn sweep(dir: &Path, ours: Option<&str>) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(leftover_of)
                .map(String::from)
        })
        .filter(|n| Some(n.as_str()) != ours)
        .collect();
    names.sort();
    names.dedup();
    let mut removed = Vec::new();
    for name in names {
        let Some(lock) = OutputLock::try_stale(&lock_path(dir, &name)) else {
            continue;
        };
        let part = part_path(dir, &name);
        if std::fs::remove_file(&part).is_ok() {
            removed.push(part);
        }
        removed.push(lock.path().to_path_buf());
        lock.release();
    }
    removed
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn leftover_names() {
        assert_eq!(leftover_of(".out.img.image-creator.lock"), Some("out.img"));
        assert_eq!(leftover_of(".out.img.image-creator.part"), Some("out.img"));
        assert_eq!(leftover_of(".image-creator.part"), None);
        assert_eq!(leftover_of("out.img.image-creator.part"), None);
        assert_eq!(leftover_of(".out.img.part"), None);
        assert_eq!(leftover_of(".x.lock"), None);
    }

    #[test]
    fn second_acquire_is_busy_naming_the_holder_and_release_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = lock_path(dir.path(), "o.img");
        let held = OutputLock::acquire(&p).unwrap();
        let t0 = Instant::now();
        match OutputLock::acquire(&p) {
            Err(LockFailure::Busy(Some(pid))) => assert_eq!(pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        // The holder is alive: no waiting for the grace period.
        assert!(t0.elapsed() < BUSY_GRACE, "{:?}", t0.elapsed());
        held.release();
        assert!(!p.exists());
        let again = OutputLock::acquire(&p).unwrap();
        again.release();
    }

    #[test]
    fn an_unlocked_lock_file_is_swept_with_its_part_but_a_held_one_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A dead build's leftovers: files, no lock held.
        std::fs::write(lock_path(d, "dead.img"), "999999999\n").unwrap();
        std::fs::write(part_path(d, "dead.img"), b"half an image").unwrap();
        // A part file whose lock file is gone.
        std::fs::write(part_path(d, "orphan.img"), b"x").unwrap();
        // A live build and ours.
        let live = OutputLock::acquire(&lock_path(d, "live.img")).unwrap();
        std::fs::write(part_path(d, "live.img"), b"y").unwrap();
        let mine = OutputLock::acquire(&lock_path(d, "mine.img")).unwrap();
        // Unrelated files.
        std::fs::write(d.join(".x.lock"), b"").unwrap();
        std::fs::write(d.join("dead.img"), b"finished").unwrap();
        let removed = sweep(d, Some("mine.img"));
        assert_eq!(removed.len(), 4, "{removed:?}");
        let mut left: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".live.img.image-creator.lock",
                ".live.img.image-creator.part",
                ".mine.img.image-creator.lock",
                ".x.lock",
                "dead.img"
            ]
        );
        live.release();
        mine.release();
    }

    #[test]
    fn a_lock_removed_by_its_holder_is_not_shared() {
        // B opened the old inode before A removed it: B must not count
        // the unlinked inode as the lock once C holds the new file.
        let dir = tempfile::tempdir().unwrap();
        let p = lock_path(dir.path(), "r.img");
        for _ in 0..50 {
            let a = OutputLock::acquire(&p).unwrap();
            let stale = File::open(&p).unwrap();
            a.release();
            let c = OutputLock::acquire(&p).unwrap();
            // Locking the stale inode works, but the check sees it is gone.
            // Blocking: a process another test forks in this window holds a
            // copy of A's descriptor (and so its flock) until it execs.
            rustix::fs::flock(&stale, FlockOperation::LockExclusive).unwrap();
            assert!(matches!(OutputLock::acquire(&p), Err(LockFailure::Busy(_))));
            c.release();
        }
    }
}
