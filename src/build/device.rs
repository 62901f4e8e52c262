//! OUTPUT as a block device (`/dev/sdX`, `/dev/mmcblkN`, `/dev/loopN`),
//! Linux only.
//!
//! Refused (exit 3, before anything is written), naming the reason: a
//! partition rather than a whole disk; a disk with a mounted filesystem
//! (its own or a partition's major:minor in `/proc/self/mountinfo`), used
//! as swap (`/proc/swaps`) or held by another device (device mapper, md:
//! `/sys/dev/block/M:m/holders`); a fixed disk without `--force` (allowed
//! without it: `removable` in sysfs, SD cards `mmcblk*`, loop devices,
//! which are files); a disk smaller than the image. It is then opened
//! `O_EXCL`, so the kernel refuses it while anything else has it open
//! exclusively (a mount, another build).
//!
//! Nothing on a device reads as zeros unless written, so the image is
//! built into a temporary raw file in the build dir and every block of
//! its map ([`crate::output::map`]) is written to the device, zeros
//! included, as `bmaptool copy` does; free space is never written. The
//! partition table goes last: the first MiB and the last 64 KiB (MBR,
//! GPT headers) are zeroed and synced before the build, the map written
//! and synced, then sector 0 written and synced. A build that fails in
//! between leaves a device with no valid partition table.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::error::BuildError;
use crate::output::RangeSet;
use crate::progress::Reporter;

/// True when `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

fn refused(path: &Path, why: impl Into<String>) -> BuildError {
    BuildError::DeviceRefused {
        path: path.to_path_buf(),
        why: why.into(),
    }
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

/// Refuse a device that must not be written (see the module's doc).
pub fn check_usable(path: &Path, force: bool) -> Result<(), BuildError> {
    let m = std::fs::metadata(path).map_err(|e| refused(path, e.to_string()))?;
    let rdev = m.rdev();
    let sys = sysfs(rdev);
    let name = sys
        .file_name()
        .map_or_else(|| dev_name(rdev), |n| n.to_string_lossy().into_owned());
    if sys.join("partition").exists() {
        return Err(refused(
            path,
            format!("{name} is a partition; give the whole disk"),
        ));
    }
    let found = users(&sys, &name, &dev_name(rdev));
    if !found.is_empty() {
        return Err(refused(path, format!("in use: {}", found.join("; "))));
    }
    let removable = read_trim(&sys.join("removable")).as_deref() == Some("1")
        || name.starts_with("loop")
        || name.starts_with("mmcblk");
    if !removable && !force {
        return Err(refused(
            path,
            format!("{name} is not a removable disk (use --force to write it anyway)"),
        ));
    }
    Ok(())
}

/// The device's size in bytes.
pub fn size(path: &Path) -> Result<u64, BuildError> {
    let mut f = File::open(path).map_err(|e| refused(path, e.to_string()))?;
    f.seek(SeekFrom::End(0))
        .map_err(|e| refused(path, format!("reading its size: {e}")))
}

/// Open the device for writing, exclusively.
pub fn open_exclusive(path: &Path) -> Result<File, BuildError> {
    let excl = i32::try_from(rustix::fs::OFlags::EXCL.bits()).unwrap_or(0);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(excl)
        .open(path)
        .map_err(|e| refused(path, format!("opening it exclusively (O_EXCL): {e}")))
}

/// Zero the partition tables (the first MiB, the last 64 KiB) and sync:
/// from here on a failed build leaves no valid partition table.
pub fn invalidate(dev: &File, path: &Path, len: u64) -> Result<(), BuildError> {
    let io = |source| BuildError::OutputPass {
        path: path.to_path_buf(),
        source,
    };
    let zeros = vec![0u8; 1 << 20];
    let head = len.min(1 << 20);
    dev.write_all_at(&zeros[..usize::try_from(head).unwrap_or(0)], 0)
        .map_err(io)?;
    let tail = len.saturating_sub(64 << 10).max(head);
    dev.write_all_at(&zeros[..usize::try_from(len - tail).unwrap_or(0)], tail)
        .map_err(io)?;
    dev.sync_all().map_err(io)
}

/// Write every mapped block of `raw` (`len` bytes) to `dev`, zeros
/// included, sector 0 last; sync before and after it.
pub fn flash(
    raw: &File,
    len: u64,
    map: &RangeSet,
    dev: &File,
    path: &Path,
    reporter: &dyn Reporter,
) -> Result<(), BuildError> {
    let io = |source| BuildError::OutputPass {
        path: path.to_path_buf(),
        source,
    };
    const CHUNK: u64 = 1 << 20;
    let blocks = map.to_blocks(crate::output::bmap::BLOCK, len);
    let name = path.display().to_string();
    reporter.item_started(&name, Some(blocks.total()));
    let mut buf = vec![0u8; CHUNK as usize];
    for (s, e) in blocks.iter() {
        let mut at = s.max(crate::partition::SECTOR);
        while at < e {
            let n = (e - at).min(CHUNK);
            let b = &mut buf[..usize::try_from(n).unwrap_or(0)];
            raw.read_exact_at(b, at).map_err(io)?;
            dev.write_all_at(b, at).map_err(io)?;
            reporter.item_progress(&name, n);
            at += n;
        }
    }
    dev.sync_all().map_err(io)?;
    let mut sector = [0u8; 512];
    raw.read_exact_at(&mut sector, 0).map_err(io)?;
    dev.write_all_at(&sector, 0).map_err(io)?;
    dev.sync_all().map_err(io)?;
    reporter.item_done(&name, blocks.total(), None);
    Ok(())
}
