//! Import a directory tree of the host into a builder (what `mke2fs -d` does).
//!
//! Used by the `mkext4` example and the tests: the walk creates every
//! directory, symlink, special file and hard link and reserves every regular
//! file in a stable order (sorted names, depth first), then the data is
//! copied by a pool of threads straight into the reserved blocks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::builder::Ext4Builder;
use super::error::Ext4Error;
use super::file::{CopyError, FileWriter, SmallFiles};
use super::node::{Ino, SpecialKind};
use super::params::{InodeMeta, Timestamp};

/// Copy buffer per thread. 1 MiB: large enough that syscall overhead is
/// negligible (measured: 256 KiB, 1 MiB and 4 MiB copy a 3 GiB file at the
/// same speed here), small enough to keep memory flat.
pub const COPY_BUF: usize = 1 << 20;

fn io(what: impl std::fmt::Display, path: &Path, source: std::io::Error) -> Ext4Error {
    Ext4Error::Io {
        what: format!("{what} {}", path.display()),
        source,
    }
}

/// Owner, permissions and times of a host file.
pub fn host_meta(md: &std::fs::Metadata) -> InodeMeta {
    let ts = |s: i64, n: i64| Timestamp {
        secs: s,
        nanos: u32::try_from(n).unwrap_or(0),
    };
    InodeMeta {
        perm: u16::try_from(md.mode() & 0o7777).unwrap_or(0),
        uid: md.uid(),
        gid: md.gid(),
        atime: ts(md.atime(), md.atime_nsec()),
        mtime: ts(md.mtime(), md.mtime_nsec()),
        ctime: ts(md.ctime(), md.ctime_nsec()),
        // Linux `stat` has no portable birth time; use mtime.
        crtime: ts(md.mtime(), md.mtime_nsec()),
    }
}

/// glibc's `dev_t` layout (`gnu_dev_major` / `gnu_dev_minor`).
fn dev_major(dev: u64) -> u32 {
    u32::try_from(((dev >> 32) & 0xFFFF_F000) | ((dev >> 8) & 0x0000_0FFF)).unwrap_or(0)
}
fn dev_minor(dev: u64) -> u32 {
    u32::try_from(((dev >> 12) & 0xFFFF_FF00) | (dev & 0x0000_00FF)).unwrap_or(0)
}

/// Files reserved by [`add_host_tree`] whose bytes still have to be copied:
/// 4 bytes each (the inode; its host path is rebuilt from the builder's
/// names when it is copied).
#[derive(Debug)]
pub struct PendingCopies {
    src: PathBuf,
    dest: Ino,
    files: Vec<Ino>,
}

impl PendingCopies {
    /// Number of files to copy.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when nothing is left to copy.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Copy every file into `builder` (the one [`add_host_tree`] filled)
    /// with `threads` threads. A file that changed size since it was
    /// reserved is an error naming it.
    pub fn copy(self, builder: &Ext4Builder, threads: usize) -> Result<(), Ext4Error> {
        let next = AtomicUsize::new(0);
        let files = &self.files;
        let (src, dest) = (&self.src, self.dest);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    s.spawn(|| -> Result<(), Ext4Error> {
                        let mut buf = vec![0u8; COPY_BUF];
                        let mut small = SmallFiles::new();
                        // Batches of files reserved one after another, so
                        // small ones are gathered into few writes.
                        loop {
                            let first = next.fetch_add(BATCH, Ordering::Relaxed);
                            let Some(batch) = files.get(first..) else {
                                break;
                            };
                            for &ino in batch.iter().take(BATCH) {
                                let rel = builder.relative_path(dest, ino).ok_or_else(|| {
                                    Ext4Error::Internal(format!(
                                        "{}: not under the copied tree",
                                        builder.path_of(ino)
                                    ))
                                })?;
                                let path = src.join(OsStr::from_bytes(&rel));
                                copy_one(&path, &builder.writer(ino)?, &mut buf, &mut small)?;
                            }
                        }
                        small.flush()
                    })
                })
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .map_err(|_| Ext4Error::Internal("copy thread panicked".into()))?
            })
        })
    }
}

/// Files a copy thread takes at a time.
const BATCH: usize = 256;

fn copy_one(
    src: &Path,
    w: &FileWriter,
    buf: &mut [u8],
    small: &mut SmallFiles,
) -> Result<(), Ext4Error> {
    let mut f = File::open(src).map_err(|e| io("opening", src, e))?;
    small.copy(w, &mut f, buf).map_err(|e| match e {
        CopyError::Read(e) => io("reading", src, e),
        CopyError::Write(e) => e,
        CopyError::Short { got, .. } => Ext4Error::BadSize {
            path: src.display().to_string(),
            size: got,
            reason: "the file changed size while being copied",
        },
    })?;
    // One byte more: it grew since it was measured.
    if f.read(&mut [0u8; 1]).map_err(|e| io("reading", src, e))? > 0 {
        return Err(Ext4Error::BadSize {
            path: src.display().to_string(),
            size: w.size(),
            reason: "the file changed size while being copied",
        });
    }
    Ok(())
}

/// Count the entries under `dir` (for the inode policy's `expected_inodes`).
pub fn count_host_entries(dir: &Path) -> Result<u64, Ext4Error> {
    let mut n = 0u64;
    for e in std::fs::read_dir(dir).map_err(|e| io("reading directory", dir, e))? {
        let e = e.map_err(|e| io("reading directory", dir, e))?;
        n = n.saturating_add(1);
        if e.file_type()
            .map_err(|err| io("stat", &e.path(), err))?
            .is_dir()
        {
            n = n.saturating_add(count_host_entries(&e.path())?);
        }
    }
    Ok(n)
}

/// Create `src`'s tree (not `src` itself) under directory `dest`. Returns
/// the regular files whose data must then be copied.
pub fn add_host_tree(
    builder: &mut Ext4Builder,
    src: &Path,
    dest: Ino,
) -> Result<PendingCopies, Ext4Error> {
    let mut links = HashMap::new();
    let mut pending = PendingCopies {
        src: src.to_path_buf(),
        dest,
        files: Vec::new(),
    };
    walk(builder, src, dest, &mut links, &mut pending)?;
    Ok(pending)
}

/// Threads that `stat` a directory's entries.
const STAT_THREADS: usize = 16;

/// `lstat` of each of `entries` (relative to their directory's descriptor,
/// no path walk), in order; a big directory's by [`STAT_THREADS`] threads,
/// since each `stat` of a cold tree waits on the disk for an inode.
fn stat_all(entries: &[std::fs::DirEntry]) -> Vec<std::io::Result<std::fs::Metadata>> {
    if entries.len() < 4 * STAT_THREADS {
        return entries.iter().map(std::fs::DirEntry::metadata).collect();
    }
    let per = entries.len().div_ceil(STAT_THREADS);
    std::thread::scope(|s| {
        let handles: Vec<_> = entries
            .chunks(per)
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(std::fs::DirEntry::metadata)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A thread that panicked leaves its part out: the caller checks
        // the count.
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .flatten()
            .collect()
    })
}

fn walk(
    b: &mut Ext4Builder,
    src: &Path,
    dir: Ino,
    links: &mut HashMap<(u64, u64), Ino>,
    pending: &mut PendingCopies,
) -> Result<(), Ext4Error> {
    let mut entries = std::fs::read_dir(src)
        .map_err(|e| io("reading directory", src, e))?
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|e| io("reading directory", src, e))?;
    entries.sort_by_key(|e| e.file_name());
    let stats = stat_all(&entries);
    if stats.len() != entries.len() {
        return Err(Ext4Error::Internal(format!(
            "{}: a stat thread stopped",
            src.display()
        )));
    }
    for (e, md) in entries.into_iter().zip(stats) {
        let path = e.path();
        let name = e.file_name();
        let name = name.as_bytes();
        let md = md.map_err(|e| io("stat", &path, e))?;
        let ft = md.file_type();
        let meta = host_meta(&md);
        if ft.is_dir() {
            let ino = b.mkdir(dir, name, meta)?;
            walk(b, &path, ino, links, pending)?;
            continue;
        }
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(&target) = links.get(&key) {
                b.hard_link(dir, name, target)?;
                continue;
            }
        }
        let ino = if ft.is_file() {
            let ino = b.create_file(dir, name, md.len(), meta)?.ino();
            pending.files.push(ino);
            ino
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| io("readlink", &path, e))?;
            b.symlink(dir, name, target.as_os_str().as_bytes(), meta)?
        } else {
            let (major, minor) = (dev_major(md.rdev()), dev_minor(md.rdev()));
            let kind = if ft.is_fifo() {
                SpecialKind::Fifo
            } else if ft.is_socket() {
                SpecialKind::Socket
            } else if ft.is_char_device() {
                SpecialKind::CharDevice(major, minor)
            } else {
                SpecialKind::BlockDevice(major, minor)
            };
            b.mknod(dir, name, kind, meta)?
        };
        if md.nlink() > 1 {
            links.insert(key, ino);
        }
    }
    Ok(())
}
