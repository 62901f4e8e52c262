//! `SEEK_DATA` / `SEEK_HOLE` through rustix, for the native backends
//! (Linux and macOS have both; lseek(2)).

use std::fs::File;
use std::io::{Error, ErrorKind};

use rustix::fs::{seek, SeekFrom};
use rustix::io::Errno;

/// The data regions of `file` up to `len` ([`super::regions::walk`]).
pub(super) fn data_regions(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    super::regions::walk(
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
    )
}
