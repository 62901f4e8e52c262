//! OUTPUT as a block device (`/dev/sdX`, `/dev/mmcblkN`, `/dev/loopN`),
//! Linux only.
//!
//! Refused (exit 3, before anything is written), naming the reason, as
//! [`crate::os::blockdev::check_usable`] says (a partition, mounted, swap,
//! held, a fixed disk without `--force`; `flash` applies the same), or
//! smaller than the image. It is then opened `O_EXCL`, so the kernel
//! refuses it while anything else has it open exclusively (a mount,
//! another build).
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
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use super::error::BuildError;
use crate::os::blockdev;
use crate::output::RangeSet;
use crate::partition::{Mbr, WriteLog, SECTOR};

/// True when `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    blockdev::is_block_device(path)
}

fn refused(path: &Path, why: impl Into<String>) -> BuildError {
    BuildError::DeviceRefused {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Refuse a device that must not be written ([`blockdev::check_usable`]).
pub fn check_usable(path: &Path, force: bool) -> Result<(), BuildError> {
    blockdev::check_usable(path, force).map_err(|why| refused(path, why))
}

/// The device's size in bytes.
pub fn size(path: &Path) -> Result<u64, BuildError> {
    blockdev::size(path).map_err(|e| refused(path, format!("reading its size: {e}")))
}

/// Open the device for writing, exclusively.
pub fn open_exclusive(path: &Path) -> Result<File, BuildError> {
    blockdev::open_exclusive(path)
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
