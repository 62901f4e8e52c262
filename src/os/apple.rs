//! The macOS backend. Compiled on macOS only: each function is one system
//! call; what surrounds it (the alignment rule, the region walk, the
//! `/dev/rdiskN` mapping) is shared code tested on Linux too.

use std::fs::File;
use std::os::fd::AsRawFd;

use super::portable::copy_by_buffer;

pub(super) const NAME: &str = "macos";
pub(super) const RAW_DISKS: bool = true;

pub(super) use super::portable::{map_in, Mapped};
pub(super) use super::seek::{data_bytes, data_regions};

/// Whether a file written here can keep holes ([`super::KEEPS_HOLES`]).
pub(super) const KEEPS_HOLES: bool = true;

/// `fcntl(F_PUNCHHOLE)` (macOS 10.12+). It needs a range aligned to the
/// filesystem's block size (fcntl(2)); other ranges are "can't".
#[allow(unsafe_code)]
pub(super) fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    let Ok(meta) = file.metadata() else {
        return false;
    };
    let block = std::os::unix::fs::MetadataExt::blksize(&meta);
    if !super::aligned(offset, len, block) {
        return false;
    }
    let (Ok(fp_offset), Ok(fp_length)) =
        (libc::off_t::try_from(offset), libc::off_t::try_from(len))
    else {
        return false;
    };
    let arg = libc::fpunchhole_t {
        fp_flags: 0,
        reserved: 0,
        fp_offset,
        fp_length,
    };
    // SAFETY: F_PUNCHHOLE's third argument is a pointer to one
    // `fpunchhole_t` (fcntl(2)). `arg` is a fully initialised local that
    // outlives the call, and the kernel only reads it. The descriptor is
    // borrowed from `file`, which stays open for the whole call.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_PUNCHHOLE, &arg) };
    r == 0
}

/// No in-kernel range copy on macOS (`copyfile(3)` copies whole files by
/// path): reads and writes.
pub(super) fn copy_range(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> std::io::Result<()> {
    copy_by_buffer(src, src_offset, dst, dst_offset, len)
}

/// No range clones here: the caller copies.
pub(super) fn clone_range(
    _src: &File,
    _src_offset: u64,
    _dst: &File,
    _dst_offset: u64,
    _len: u64,
) -> std::io::Result<bool> {
    Ok(false)
}

/// `clonefile(2)` needs paths, not open files: "can't".
pub(super) fn reflink(_src: &File, _dst: &File) -> bool {
    false
}

/// Nothing: the kernel's own readahead.
pub(super) fn will_need(_file: &File, _offset: u64, _len: u64) -> bool {
    false
}

/// `fcntl(F_NOCACHE, 1)` (rustix, no `unsafe` here).
pub(super) fn drop_cache(file: &File) -> bool {
    rustix::fs::fcntl_nocache(file, true).is_ok()
}

/// macOS has no `O_DIRECT` (its `F_NOCACHE` is [`drop_cache`]; raw disks
/// are `/dev/rdiskN`): the caller uses a plain descriptor.
pub(super) fn open_direct(_path: &std::path::Path, _write: bool) -> Option<File> {
    None
}
