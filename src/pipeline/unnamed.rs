//! Files without a name until they are finished: Linux's `O_TMPFILE`
//! (open(2)), linked into place with `linkat(2)` through
//! `/proc/self/fd/N` (`AT_SYMLINK_FOLLOW`; the `AT_EMPTY_PATH` form needs
//! `CAP_DAC_READ_SEARCH`). Such a file disappears with the last descriptor
//! to it, so a build killed by `kill -9` or a power loss leaves nothing
//! (after a crash, the filesystem's orphan list frees its blocks on the
//! next mount or e2fsck).
//!
//! Elsewhere, on Linux filesystems without `O_TMPFILE` support or without
//! `/proc`, and with the feature `portable` (so CI runs the fallback),
//! [`create`] returns `None` and the caller falls back to a predictable
//! name protected by a lock ([`super::lock`]).

use std::fs::File;
use std::path::{Path, PathBuf};

/// An unnamed regular file in `dir` (mode 0644 before the umask), or
/// `None` when this platform or filesystem can't make one that can later
/// be linked.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub fn create(dir: &Path) -> Option<File> {
    use rustix::fs::{Mode, OFlags};
    // Without O_EXCL, so the file may be linked later (open(2)).
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .ok()?;
    let file = File::from(fd);
    // linkat needs /proc; without it the file could never be named.
    proc_path(&file).exists().then_some(file)
}

/// Not Linux: no unnamed files.
#[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
pub fn create(_dir: &Path) -> Option<File> {
    None
}

/// `/proc/self/fd/N` for `file`: a path that opens the same inode, for
/// code that reopens the output by path.
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub fn proc_path(file: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Not Linux: never called, as [`create`] never returns a file.
#[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
pub fn proc_path(_file: &File) -> PathBuf {
    PathBuf::new()
}

/// Give the unnamed `file` the name `target`; fails with `AlreadyExists`
/// when `target` exists (linkat never replaces).
#[cfg(all(target_os = "linux", not(feature = "portable")))]
pub fn link(file: &File, target: &Path) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, CWD};
    rustix::fs::linkat(CWD, proc_path(file), CWD, target, AtFlags::SYMLINK_FOLLOW)?;
    Ok(())
}

/// Not Linux: never called, as [`create`] never returns a file.
#[cfg(not(all(target_os = "linux", not(feature = "portable"))))]
pub fn link(_file: &File, _target: &Path) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(all(test, target_os = "linux", not(feature = "portable")))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    #[test]
    fn unnamed_until_linked_and_never_replacing() {
        let dir = tempfile::tempdir().unwrap();
        let Some(mut f) = create(dir.path()) else {
            eprintln!("SKIP: no O_TMPFILE on this filesystem");
            return;
        };
        f.write_all(b"image").unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // Reopening by the /proc path reads the same inode.
        assert_eq!(std::fs::read(proc_path(&f)).unwrap(), b"image");
        let target = dir.path().join("out.img");
        link(&f, &target).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"image");
        let g = create(dir.path()).unwrap();
        let e = link(&g, &target).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        drop(g);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
