//! Edits of the FAT boot partition (p1) through `fatfs`, on a window of the
//! image: replace or read one file at the partition's root.

use std::io::{Read, Seek, SeekFrom, Write};

use crate::fs::ext4::Timestamp;
use crate::partition::{PartitionWindow, WindowError, WindowReader};
use crate::progress::civil_from_days;

/// A FAT operation failed.
#[derive(Debug, thiserror::Error)]
#[error("{file} in the FAT boot partition at offset {offset} of {image}: {source}")]
pub struct FatError {
    /// File inside the partition.
    pub file: String,
    /// Partition offset in the image.
    pub offset: u64,
    /// Image path.
    pub image: String,
    /// Cause.
    pub source: std::io::Error,
}

/// `Read + Write + Seek` over a window: fatfs can not leave the partition.
/// Reads and the cursor are the window's [`WindowReader`]; writes go to the
/// window at the cursor.
struct WindowIo {
    reader: WindowReader,
}

impl WindowIo {
    fn new(window: &PartitionWindow) -> Result<Self, WindowError> {
        Ok(Self {
            reader: window.reader(0, window.len())?,
        })
    }
}

impl Read for WindowIo {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Write for WindowIo {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = self.reader.window_offset();
        self.reader.window().write_at(at, buf)?;
        let len = i64::try_from(buf.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "write larger than 2^63")
        })?;
        self.reader.seek(SeekFrom::Current(len))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for WindowIo {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.reader.seek(to)
    }
}

/// File times: `SOURCE_DATE_EPOCH` when set (reproducible), else now (UTC).
#[derive(Debug)]
struct BuildTime;

static BUILD_TIME: BuildTime = BuildTime;

impl fatfs::TimeProvider for BuildTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.get_current_date_time().date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        let t = Timestamp::build_time().secs;
        let (y, month, day) = civil_from_days(t.div_euclid(86_400));
        let (month, day) = (
            u16::try_from(month).unwrap_or(1),
            u16::try_from(day).unwrap_or(1),
        );
        let secs = t.rem_euclid(86_400);
        // FAT dates cover 1980..=2107.
        let year = u16::try_from(y.clamp(1980, 2107)).unwrap_or(1980);
        let part = |v: i64| u16::try_from(v).unwrap_or(0);
        fatfs::DateTime {
            date: fatfs::Date { year, month, day },
            time: fatfs::Time {
                hour: part(secs / 3600),
                min: part(secs / 60 % 60),
                sec: part(secs % 60),
                millis: 0,
            },
        }
    }
}

fn err(window: &PartitionWindow, file: &str, source: std::io::Error) -> FatError {
    FatError {
        file: file.to_string(),
        offset: window.start(),
        image: window.path().display().to_string(),
        source,
    }
}

fn open(window: &PartitionWindow, file: &str) -> Result<fatfs::FileSystem<WindowIo>, FatError> {
    let io = WindowIo::new(window).map_err(|e| err(window, file, e.into()))?;
    let opts = fatfs::FsOptions::new()
        .update_accessed_date(false)
        .time_provider(&BUILD_TIME);
    fatfs::FileSystem::new(io, opts).map_err(|e| err(window, file, e))
}

/// Replace (or create) `name` at the root of the FAT filesystem in `window`
/// with `content`.
pub fn replace_file(window: &PartitionWindow, name: &str, content: &[u8]) -> Result<(), FatError> {
    let fs = open(window, name)?;
    {
        let root = fs.root_dir();
        let mut f = root.create_file(name).map_err(|e| err(window, name, e))?;
        f.truncate().map_err(|e| err(window, name, e))?;
        f.write_all(content).map_err(|e| err(window, name, e))?;
        f.flush().map_err(|e| err(window, name, e))?;
    }
    fs.unmount().map_err(|e| err(window, name, e))
}

/// Read `name` from the root of the FAT filesystem in `window`.
pub fn read_file(window: &PartitionWindow, name: &str) -> Result<Vec<u8>, FatError> {
    let fs = open(window, name)?;
    let mut out = Vec::new();
    {
        let root = fs.root_dir();
        let mut f = root.open_file(name).map_err(|e| err(window, name, e))?;
        f.read_to_end(&mut out).map_err(|e| err(window, name, e))?;
    }
    fs.unmount().map_err(|e| err(window, name, e))?;
    Ok(out)
}

#[cfg(test)]
mod window_tests {
    use std::process::Command;
    use std::sync::Arc;

    use super::*;

    /// mkfs.vfat makes a FAT partition 1 MiB into an image; we replace a file
    /// through the window, read it back, and fsck.fat checks the result.
    #[test]
    fn replace_then_read_back_on_a_real_fat() {
        let have = |t: &str| Command::new(t).arg("--help").output().is_ok();
        if !have("mkfs.vfat") || !have("fsck.fat") {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must install dosfstools"
            );
            eprintln!("skipping: mkfs.vfat/fsck.fat not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let part = dir.path().join("p1.img");
        std::fs::File::create(&part)
            .and_then(|f| f.set_len(32 << 20))
            .expect("create");
        let ok = Command::new("mkfs.vfat")
            .arg(&part)
            .output()
            .expect("mkfs.vfat");
        assert!(ok.status.success(), "{ok:?}");
        let fat = std::fs::read(&part).expect("read");
        let image = dir.path().join("disk.img");
        let mut disk = vec![0xAAu8; 1 << 20];
        disk.extend_from_slice(&fat);
        disk.extend_from_slice(&[0x55u8; 4096]);
        std::fs::write(&image, &disk).expect("write");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&image)
            .expect("open");
        let w = PartitionWindow::new(Arc::new(file), &image, 1 << 20, 32 << 20);
        replace_file(&w, "offspot.yaml", b"first: 1\n").expect("create");
        replace_file(&w, "offspot.yaml", b"x: 2\n").expect("replace");
        assert_eq!(read_file(&w, "offspot.yaml").expect("read"), b"x: 2\n");
        let after = std::fs::read(&image).expect("read image");
        assert!(after[..1 << 20].iter().all(|&b| b == 0xAA), "before p1");
        assert!(after[(33 << 20)..].iter().all(|&b| b == 0x55), "after p1");
        std::fs::write(&part, &after[(1 << 20)..(33 << 20)]).expect("extract");
        let fsck = Command::new("fsck.fat")
            .arg("-n")
            .arg(&part)
            .output()
            .expect("fsck.fat");
        assert!(fsck.status.success(), "{fsck:?}");
    }
}
