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
//! Nothing on a device reads as zeros unless written. The build streams
//! onto the device as into a file, with two differences:
//! - the base image is copied into an unnamed temporary file in the build
//!   dir first (it is small: the boot and root partitions and the old
//!   p3), and every block of its map ([`crate::output::map`]) is copied
//!   to the device, zeros included, so p1, p2 and the old p3 (read for
//!   carry-over) are exactly the base's;
//! - every write to p1 and p3 is recorded ([`DeviceLog`], a coalescing
//!   [`RangeSet`]) and the builder's "make this read as zeros" is left to
//!   the end ([`WriteLog::defer_zeros`]); after step 6 the map of the
//!   finished device, minus what was written, is zeroed (by
//!   `fallocate(PUNCH_HOLE)`, which a block device does as a guaranteed
//!   zeroing, else by writing zeros): inode tables, the journal, holes
//!   inside files, the tails of last blocks.
//!
//! The partition table goes last: the first MiB and the last 64 KiB (MBR,
//! GPT headers) are zeroed and synced before anything else; sector 0 is
//! never copied from the base; after the zeros, a sync, then the final
//! MBR and a sync. A build that fails in between leaves a device with no
//! valid partition table.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use super::error::BuildError;
use crate::output::RangeSet;
use crate::partition::{Mbr, WriteLog, SECTOR};

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

/// What a device build wrote: a coalescing set of absolute byte ranges.
#[derive(Debug, Default)]
pub struct DeviceLog(Mutex<RangeSet>);

impl WriteLog for DeviceLog {
    fn wrote(&self, start: u64, end: u64) {
        if let Ok(mut r) = self.0.lock() {
            r.insert(start, end);
        }
    }
    fn defer_zeros(&self, start: u64, end: u64) -> bool {
        if let Ok(mut r) = self.0.lock() {
            r.remove(start, end);
        }
        true
    }
}

impl DeviceLog {
    fn snapshot(&self) -> RangeSet {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// The device being written.
pub struct Device {
    /// The device, opened `O_EXCL`.
    pub file: Arc<File>,
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub len: u64,
    /// What was written.
    pub log: Arc<DeviceLog>,
    /// The final MBR, once step 6 made it.
    mbr: Mutex<Option<[u8; 512]>>,
}

const CHUNK: u64 = 1 << 20;
/// [`CHUNK`] as a buffer length.
const CHUNK_LEN: usize = 1 << 20;

impl Device {
    /// Open `path` exclusively and zero its partition tables.
    pub fn open(path: &Path) -> Result<Self, BuildError> {
        let file = open_exclusive(path)?;
        let len = size(path)?;
        invalidate(&file, path, len)?;
        let t = Self {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len,
            log: Arc::new(DeviceLog::default()),
            mbr: Mutex::new(None),
        };
        t.log.wrote(0, len.min(1 << 20));
        t.log
            .wrote(len.saturating_sub(64 << 10).max(len.min(1 << 20)), len);
        Ok(t)
    }

    /// The log, as windows take it.
    pub fn write_log(&self) -> Arc<dyn WriteLog> {
        self.log.clone()
    }

    fn io(&self, source: std::io::Error) -> BuildError {
        BuildError::OutputPass {
            path: self.path.clone(),
            source,
        }
    }

    /// Copy every mapped block of the staged base `src` (`len` bytes),
    /// zeros included, but sector 0, to the device.
    pub fn copy_base(&self, src: &File, src_path: &Path, len: u64) -> Result<(), BuildError> {
        let src = Arc::new(src.try_clone().map_err(|e| self.io(e))?);
        let map = crate::output::map_image(&src, src_path, len).map_err(|e| self.io(e))?;
        let blocks = map.ranges.to_blocks(crate::output::bmap::BLOCK, len);
        let mut buf = vec![0u8; CHUNK_LEN];
        for (s, e) in blocks.iter() {
            let mut at = s.max(SECTOR);
            while at < e {
                let n = (e - at).min(CHUNK);
                let b = &mut buf[..usize::try_from(n).unwrap_or(0)];
                src.read_exact_at(b, at).map_err(|e| self.io(e))?;
                self.file.write_all_at(b, at).map_err(|e| self.io(e))?;
                at += n;
            }
            self.log.wrote(s.max(SECTOR), e);
        }
        Ok(())
    }

    /// Step 6 on a device: keep the final MBR for the end.
    pub fn set_mbr(&self, mbr: [u8; 512]) {
        if let Ok(mut m) = self.mbr.lock() {
            *m = Some(mbr);
        }
    }

    /// Step 7: zero what the image (`image_size` bytes) needs and nothing
    /// wrote, sync, write the MBR, sync.
    pub fn finish(&self, image_size: u64) -> Result<(), BuildError> {
        let Some(mbr) = self.mbr.lock().ok().and_then(|m| *m) else {
            return Err(BuildError::Panicked(
                "the device build (no partition table)",
            ));
        };
        let parsed = Mbr::parse(&mbr)?;
        let map = crate::output::map_partitions(&self.file, &self.path, image_size, &parsed);
        let need = map
            .ranges
            .to_blocks(crate::output::bmap::BLOCK, image_size)
            .minus(&self.log.snapshot());
        let zeros = vec![0u8; CHUNK_LEN];
        for (s, e) in need.iter() {
            let aligned = s % SECTOR == 0 && e % SECTOR == 0;
            if !(aligned && crate::os::punch_hole(&self.file, s, e - s)) {
                let mut at = s;
                while at < e {
                    let n = (e - at).min(CHUNK);
                    self.file
                        .write_all_at(&zeros[..usize::try_from(n).unwrap_or(0)], at)
                        .map_err(|e| self.io(e))?;
                    at += n;
                }
            }
        }
        self.file.sync_all().map_err(|e| self.io(e))?;
        self.file.write_all_at(&mbr, 0).map_err(|e| self.io(e))?;
        self.file.sync_all().map_err(|e| self.io(e))?;
        Ok(())
    }
}
