//! Whole-disk block devices (`/dev/sdX`, `/dev/mmcblkN`, `/dev/loopN`):
//! whether one may be written, opening it exclusively, direct I/O. Used by
//! a build onto a device (`pipeline::device`) and by `flash`, which apply
//! the same refusals (docs/spec.md §10, §14).
//!
//! A device is refused, with the reason, when it is a partition rather
//! than a whole disk; when it or a partition of it is mounted (its
//! major:minor in `/proc/self/mountinfo`), used as swap (`/proc/swaps`)
//! or held by another device (device mapper, md:
//! `/sys/dev/block/M:m/holders`); when it is a fixed disk and `force` is
//! not given (allowed without it: `removable` in sysfs, SD cards
//! `mmcblk*`, loop devices, which are files). These read Linux's `/proc`
//! and `/sys`; where they don't exist nothing is found in use, and the
//! exclusive open (`O_EXCL`, which the kernel refuses while anything else
//! holds the device: a mount, another build) is the remaining guard.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Alignment of direct I/O: offsets, lengths and buffer addresses are
/// multiples of 4096, the largest logical block size of SD cards, USB
/// sticks and disks (512 or 4096; Linux's `O_DIRECT` needs the device's
/// logical block size, open(2) "O_DIRECT").
pub const DIRECT_ALIGN: usize = 4096;

/// True when `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The device number of the block device `path` (two paths of one disk,
/// `/dev/loop3` and a symlink to it, have the same).
pub fn device_number(path: &Path) -> std::io::Result<u64> {
    let m = std::fs::metadata(path)?;
    if !m.file_type().is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a block device",
        ));
    }
    Ok(m.rdev())
}

/// `major:minor` of a device number.
fn dev_name(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

/// The sysfs directory of `rdev` (`/sys/dev/block/M:m`, resolved).
fn sysfs(rdev: u64) -> PathBuf {
    let p = PathBuf::from(format!("/sys/dev/block/{}", dev_name(rdev)));
    std::fs::canonicalize(&p).unwrap_or(p)
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The disk's partitions: (name, `major:minor`).
fn partitions(sys: &Path) -> Vec<(String, String)> {
    let Ok(entries) = std::fs::read_dir(sys) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("partition").exists())
        .filter_map(|e| {
            let dev = read_trim(&e.path().join("dev"))?;
            Some((e.file_name().to_string_lossy().into_owned(), dev))
        })
        .collect()
}

/// What uses the disk `sys` (`major:minor` `own`) or its partitions.
fn users(sys: &Path, disk: &str, own: &str) -> Vec<String> {
    let mut devs = vec![(disk.to_string(), own.to_string(), sys.to_path_buf())];
    for (name, dev) in partitions(sys) {
        let dir = sys.join(&name);
        devs.push((name, dev, dir));
    }
    let mut found = Vec::new();
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in info.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let (Some(majmin), Some(mnt)) = (f.get(2), f.get(4)) else {
                continue;
            };
            if let Some((name, _, _)) = devs.iter().find(|(_, d, _)| d == majmin) {
                found.push(format!(
                    "{name} is mounted on {}",
                    mnt.replace("\\040", " ")
                ));
            }
        }
    }
    if let Ok(swaps) = std::fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            let Some(p) = line.split_whitespace().next() else {
                continue;
            };
            let p = p.replace("\\040", " ");
            let Ok(m) = std::fs::metadata(&p) else {
                continue;
            };
            if !m.file_type().is_block_device() {
                continue;
            }
            let d = dev_name(m.rdev());
            if let Some((name, _, _)) = devs.iter().find(|(_, x, _)| *x == d) {
                found.push(format!("{name} is used as swap ({p})"));
            }
        }
    }
    for (name, _, dir) in &devs {
        if let Ok(h) = std::fs::read_dir(dir.join("holders")) {
            let held: Vec<String> = h
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            if !held.is_empty() {
                found.push(format!("{name} is held by {}", held.join(", ")));
            }
        }
    }
    found
}

/// Why the device `path` must not be written (see the module's doc), or
/// `Ok`.
pub fn check_usable(path: &Path, force: bool) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !m.file_type().is_block_device() {
        return Err("not a block device".into());
    }
    let rdev = m.rdev();
    let sys = sysfs(rdev);
    let name = sys
        .file_name()
        .map_or_else(|| dev_name(rdev), |n| n.to_string_lossy().into_owned());
    if sys.join("partition").exists() {
        return Err(format!("{name} is a partition; give the whole disk"));
    }
    let found = users(&sys, &name, &dev_name(rdev));
    if !found.is_empty() {
        return Err(format!("in use: {}", found.join("; ")));
    }
    let removable = read_trim(&sys.join("removable")).as_deref() == Some("1")
        || name.starts_with("loop")
        || name.starts_with("mmcblk");
    if !removable && !force {
        return Err(format!(
            "{name} is not a removable disk (use --force to write it anyway)"
        ));
    }
    Ok(())
}

/// The device's size in bytes (where its end is).
pub fn size(path: &Path) -> std::io::Result<u64> {
    File::open(path)?.seek(SeekFrom::End(0))
}

/// Open the device for reading and writing, exclusively (`O_EXCL` on a
/// block device: refused while it is mounted or opened so by another).
pub fn open_exclusive(path: &Path) -> std::io::Result<File> {
    let excl = i32::try_from(rustix::fs::OFlags::EXCL.bits()).unwrap_or(0);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(excl)
        .open(path)
}

/// `path` opened for direct I/O (reads, and writes when `write`), past
/// the page cache: what is read is what the device returns. `None` where
/// the platform or the device can't (the caller uses a plain descriptor:
/// [`super::drop_cache`] after a sync is then the best it has).
pub fn open_direct(path: &Path, write: bool) -> Option<File> {
    super::native::open_direct(path, write)
}

/// A buffer of `len` bytes whose address is a multiple of
/// [`DIRECT_ALIGN`], as direct I/O needs, made in safe code: a vector
/// `DIRECT_ALIGN` bytes longer, used from its first aligned byte.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros, aligned.
    pub fn new(len: usize) -> Self {
        let raw = vec![0u8; len + DIRECT_ALIGN];
        // `align_offset` may say "can't" (usize::MAX) in const contexts
        // only; at run time on a u8 pointer it is below DIRECT_ALIGN.
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN).min(DIRECT_ALIGN);
        Self { raw, start, len }
    }

    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// The bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

impl Default for AlignedBuf {
    /// An empty buffer (what a buffer handed on leaves behind).
    fn default() -> Self {
        Self {
            raw: Vec::new(),
            start: 0,
            len: 0,
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.as_mut_slice()
    }
}

/// True when `offset` and `len` suit direct I/O ([`DIRECT_ALIGN`]).
pub fn direct_aligned(offset: u64, len: usize) -> bool {
    offset.is_multiple_of(DIRECT_ALIGN as u64) && len.is_multiple_of(DIRECT_ALIGN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned() {
        for len in [0, 1, 4096, 1 << 20, (1 << 20) + 17] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
            b.as_mut_slice().fill(7);
            assert!(b.as_slice().iter().all(|&x| x == 7));
        }
        assert!(direct_aligned(8192, 4096));
        assert!(!direct_aligned(512, 4096));
        assert!(!direct_aligned(0, 100));
    }

    #[test]
    fn a_file_is_not_a_device() {
        let f = tempfile::NamedTempFile::new().expect("tmp");
        assert!(!is_block_device(f.path()));
        assert!(device_number(f.path()).is_err());
        let why = check_usable(f.path(), true).expect_err("a file");
        assert!(why.contains("not a block device"), "{why}");
        let gone = check_usable(Path::new("/nonexistent/dev"), true).expect_err("missing");
        assert!(!gone.is_empty());
    }
}
