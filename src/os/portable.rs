//! The fallbacks: plain positional reads and writes, and "can't" for
//! what has no portable form. Always compiled: the native backends fall
//! back to [`copy_by_buffer`] when their system call refuses a pair of
//! files; with feature `portable` (or off Linux and macOS) this module is
//! the backend.

// With a native backend (Linux or macOS without `portable`), only
// `copy_by_buffer` and its helpers are used outside the tests.
#![cfg_attr(
    all(
        any(target_os = "linux", target_os = "android", target_vendor = "apple"),
        not(feature = "portable")
    ),
    allow(dead_code)
)]

use std::fs::File;
use std::io::{Error, ErrorKind};
use std::os::unix::fs::FileExt;

/// Name of this backend ([`super::BACKEND`]).
pub(super) const NAME: &str = "portable";

/// Whether `/dev/rdiskN` devices exist ([`super::raw_device_path`]).
pub(super) const RAW_DISKS: bool = false;

/// The block [`super::can_clone`] clones to find out: 64 KiB, a multiple
/// of every block size XFS and btrfs use (4 KiB; 64 KiB pages on some
/// arm64 kernels).
pub(super) const PROBE_BLOCK: usize = 64 << 10;

/// Buffer of [`copy_by_buffer`]: 1 MiB, the size of the download path's
/// batches (`fetch::BATCH`), so a copy holds no more memory than a
/// download does, whatever the range's length.
pub const COPY_BUFFER: usize = 1 << 20;

pub(super) fn punch_hole(_file: &File, _offset: u64, _len: u64) -> bool {
    false
}

pub(super) fn data_regions(_file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    Ok(if len == 0 { Vec::new() } else { vec![(0, len)] })
}

/// Every byte is data: the apparent size.
pub(super) fn data_bytes(_file: &File, len: u64) -> std::io::Result<u64> {
    Ok(len)
}

/// Whether a file written here can keep holes ([`super::KEEPS_HOLES`]):
/// no (no hole punching, no `SEEK_DATA`), so sizes are apparent sizes.
pub(super) const KEEPS_HOLES: bool = false;

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

pub(super) fn reflink(_src: &File, _dst: &File) -> bool {
    false
}

pub(super) fn will_need(_file: &File, _offset: u64, _len: u64) -> bool {
    false
}

pub(super) fn drop_cache(_file: &File) -> bool {
    false
}

/// [`super::copy_range`] by reads and writes through a [`COPY_BUFFER`]
/// buffer.
pub(super) fn copy_by_buffer(
    src: &File,
    src_offset: u64,
    dst: &File,
    dst_offset: u64,
    len: u64,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; usize::try_from(len).map_or(COPY_BUFFER, |l| l.min(COPY_BUFFER))];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from(len - done).map_or(buf.len(), |l| l.min(buf.len()));
        let (from, to) = offsets(src_offset, dst_offset, done)?;
        let n = match src.read_at(&mut buf[..want], from) {
            Ok(0) => return Err(short_source(from)),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all_at(&buf[..n], to)?;
        done += n as u64;
    }
    Ok(())
}

/// The source and destination offsets `done` bytes into a copy.
pub(super) fn offsets(src: u64, dst: u64, done: u64) -> std::io::Result<(u64, u64)> {
    match (src.checked_add(done), dst.checked_add(done)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("copy range past 2^64 (offsets {src}, {dst} + {done})"),
        )),
    }
}

/// The error for a source that ends at `offset`, before the range does.
pub(super) fn short_source(offset: u64) -> Error {
    Error::new(
        ErrorKind::UnexpectedEof,
        format!("source ends at offset {offset}, inside the range to copy"),
    )
}

/// No mapping here: never made ([`map_in`] says `None`).
pub(super) enum Mapped {}

impl Mapped {
    pub(super) fn as_slice(&self) -> &[u8] {
        match *self {}
    }
}

/// No mapping: the caller reads.
///
/// # Safety
/// None needed (nothing is mapped); the signature is the Linux one's.
#[allow(unsafe_code, clippy::unnecessary_safety_doc)]
pub(super) unsafe fn map_in(_file: &File, _offset: u64, _len: usize) -> Option<Mapped> {
    None
}

/// No direct I/O: the caller uses a plain descriptor.
pub(super) fn open_direct(_path: &std::path::Path, _write: bool) -> Option<File> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffered_copy_in_several_buffers() {
        let len = COPY_BUFFER * 2 + 123;
        let data: Vec<u8> = (0..len)
            .map(|i| u8::try_from(i % 253).unwrap_or(0))
            .collect();
        let src = tempfile::tempfile().expect("tmp");
        src.write_all_at(&data, 5).expect("write");
        let dst = tempfile::tempfile().expect("tmp");
        copy_by_buffer(&src, 5, &dst, 9, len as u64).expect("copy");
        let mut back = vec![0u8; len];
        dst.read_exact_at(&mut back, 9).expect("read");
        assert_eq!(back, data);
        let e = copy_by_buffer(&src, 5, &dst, 0, len as u64 + 1).expect_err("short");
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
        assert!(offsets(u64::MAX, 0, 1).is_err());
    }

    #[test]
    fn fallbacks_do_nothing_and_say_so() {
        let f = tempfile::tempfile().expect("tmp");
        assert!(!punch_hole(&f, 0, 4096));
        assert!(!reflink(&f, &f));
        assert!(!drop_cache(&f));
        assert_eq!(data_regions(&f, 0).expect("regions"), vec![]);
        assert_eq!(data_regions(&f, 9).expect("regions"), vec![(0, 9)]);
    }
}
