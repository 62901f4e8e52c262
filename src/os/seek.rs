//! `SEEK_DATA` / `SEEK_HOLE` through rustix, for the native backends
//! (Linux and macOS have both; lseek(2)).

use std::fs::File;
use std::io::{Error, ErrorKind};

use rustix::fs::{seek, SeekFrom};
use rustix::io::Errno;

/// The data regions of `file` up to `len` ([`super::regions::walk`]).
pub(super) fn data_regions(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for_each_region(file, len, |a, b| out.push((a, b)))?;
    Ok(out)
}

/// Bytes of `file`'s data regions up to `len`.
pub(super) fn data_bytes(file: &File, len: u64) -> std::io::Result<u64> {
    let mut sum = 0u64;
    for_each_region(file, len, |a, b| sum = sum.saturating_add(b - a))?;
    Ok(sum)
}

/// `each(start, end)` for the data regions of `file` up to `len`
/// ([`super::regions::walk_each`]).
fn for_each_region(file: &File, len: u64, each: impl FnMut(u64, u64)) -> std::io::Result<()> {
    super::regions::walk_each(
        len,
        |pos| match seek(file, SeekFrom::Data(pos)) {
            Ok(d) => Ok(Some(d)),
            // No data after pos.
            Err(Errno::NXIO) => Ok(None),
            // Filesystems (or kernels) without SEEK_DATA.
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => Err(Error::new(
                ErrorKind::Unsupported,
                "SEEK_DATA not supported here",
            )),
            Err(e) => Err(e.into()),
        },
        |pos| seek(file, SeekFrom::Hole(pos)).map_err(Error::from),
        each,
    )
}
