//! The Linux backend (and Android's, the same system calls).

use std::fs::File;

use rustix::fs::{copy_file_range, fadvise, fallocate, ioctl_ficlone, Advice, FallocateFlags};
use rustix::io::Errno;

use super::portable::{copy_by_buffer, offsets, short_source};

pub(super) const NAME: &str = "linux";
pub(super) const RAW_DISKS: bool = false;

pub(super) use super::mapped::{map_in, Mapped};
pub(super) use super::seek::{data_bytes, data_regions};

/// Whether a file written here can keep holes ([`super::KEEPS_HOLES`]).
pub(super) const KEEPS_HOLES: bool = true;

/// `fallocate(PUNCH_HOLE | KEEP_SIZE)` (fallocate(2)); any failure
/// (no support in the filesystem, a kernel older than 2.6.38) is "can't".
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    fallocate(file, flags, offset, len).is_ok()
}

/// Largest request handed to one `copy_file_range` call: 1 GiB (the
/// kernel copies at most `MAX_RW_COUNT`, a little under 2 GiB, per call;
/// a round figure below it keeps the `usize` conversion obvious).
const MAX_CHUNK: u64 = 1 << 30;

/// `copy_file_range(2)` until done; the buffered copy when the kernel
/// refuses the pair of files before anything was copied (`EXDEV` across
/// filesystems on kernels before 5.3, `ENOSYS`, `EOPNOTSUPP`, `EINVAL`
/// for special files).
pub(super) fn copy_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let (mut from, mut to) = offsets(src_offset, dst_offset, done)?;
        let at = from;
        let want = usize::try_from((len - done).min(MAX_CHUNK)).unwrap_or(1 << 30);
        match copy_file_range(src, Some(&mut from), dst, Some(&mut to), want) {
            Ok(0) => return Err(short_source(at)),
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::NOSYS | Errno::OPNOTSUPP | Errno::INVAL) if done == 0 => {
                return copy_by_buffer(src, src_offset, dst, dst_offset, len);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `ioctl(dst, FICLONE, src)` (ioctl_ficlone(2): btrfs, XFS, bcachefs...).
pub(super) fn reflink(src: &File, dst: &File) -> bool {
    ioctl_ficlone(dst, src).is_ok()
}

/// `struct file_clone_range` (include/uapi/linux/fs.h), FICLONERANGE's
/// argument: 32 bytes, `#[repr(C)]` as the kernel lays it out.
#[repr(C)]
#[derive(Debug)]
struct FileCloneRange {
    src_fd: i64,
    src_offset: u64,
    src_length: u64,
    dest_offset: u64,
}

/// `FICLONERANGE` = `_IOW(0x94, 13, struct file_clone_range)`
/// (ioctl_ficlonerange(2)).
const FICLONERANGE: rustix::ioctl::Opcode =
    rustix::ioctl::opcode::write::<FileCloneRange>(0x94, 13);

/// `ioctl(dst, FICLONERANGE, {src, src_offset, len, dst_offset})`
/// (ioctl_ficlonerange(2): XFS, btrfs, bcachefs...): `dst`'s range shares
/// `src`'s blocks. `Ok(false)` when this pair can't (another filesystem,
/// none with reflinks, a range the filesystem won't take: offsets and
/// length must be multiples of its block size); other errors are I/O
/// errors. A zero `len` is refused here (the ioctl reads it as "to the
/// end of `src`").
#[allow(unsafe_code)]
pub(super) fn clone_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    if len == 0 {
        return Ok(false);
    }
    let arg = FileCloneRange {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset,
        src_length: len,
        dest_offset: dst_offset,
    };
    // SAFETY: FICLONERANGE is `_IOW(0x94, 13, struct file_clone_range)`,
    // built above from that very struct, so the opcode encodes the right
    // direction (the kernel only reads the argument) and size (32 bytes).
    // `FileCloneRange` is `#[repr(C)]` with the kernel's four fields in
    // its order and widths (s64, u64, u64, u64: no padding), fully
    // initialised, and `Setter` owns it for the whole call. `src_fd` is
    // borrowed from `src` and `dst` from `dst`, both open until we return;
    // the ioctl keeps no reference to either after it returns.
    let ioctl = unsafe { rustix::ioctl::Setter::<FICLONERANGE, FileCloneRange>::new(arg) };
    // SAFETY: see above; `dst` is a regular file's descriptor.
    match unsafe { rustix::ioctl::ioctl(dst, ioctl) } {
        Ok(()) => Ok(true),
        Err(
            Errno::XDEV
            | Errno::OPNOTSUPP
            | Errno::INVAL
            | Errno::NOSYS
            | Errno::NOTTY
            | Errno::BADF,
        ) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `posix_fadvise(offset, len, WILLNEED)`.
pub(super) fn will_need(file: &File, offset: u64, len: u64) -> bool {
    std::num::NonZeroU64::new(len)
        .is_some_and(|l| fadvise(file, offset, Some(l), Advice::WillNeed).is_ok())
}

/// `posix_fadvise(0, 0, DONTNEED)` over the whole file.
pub(super) fn drop_cache(file: &File) -> bool {
    fadvise(file, 0, None, Advice::DontNeed).is_ok()
}

/// `open(O_DIRECT)`; `None` when refused (a filesystem without direct
/// I/O answers `EINVAL`).
pub(super) fn open_direct(path: &std::path::Path, write: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let direct = i32::try_from(rustix::fs::OFlags::DIRECT.bits()).ok()?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(direct)
        .open(path)
        .ok()
}
