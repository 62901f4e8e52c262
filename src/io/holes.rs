//! Data regions of a local file (`SEEK_DATA` / `SEEK_HOLE`), so a sparse
//! base image is copied without reading or writing its holes.

use std::fs::File;

/// The `[start, end)` byte ranges of `file` that hold data, up to `len`.
/// Where the platform can't tell, the whole file is one region.
pub fn data_regions(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        target_os = "freebsd"
    ))]
    {
        use rustix::fs::{seek, SeekFrom};
        let mut out = Vec::new();
        let mut pos = 0u64;
        while pos < len {
            let data = match seek(file, SeekFrom::Data(pos)) {
                Ok(d) => d,
                // ENXIO: no data after pos.
                Err(rustix::io::Errno::NXIO) => break,
                // Filesystems without SEEK_DATA support: treat all as data.
                Err(
                    rustix::io::Errno::INVAL
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP,
                ) => {
                    return Ok(vec![(0, len)]);
                }
                Err(e) => return Err(e.into()),
            };
            if data >= len {
                break;
            }
            let hole = seek(file, SeekFrom::Hole(data))
                .map_err(std::io::Error::from)?
                .min(len);
            out.push((data, hole));
            pos = hole;
        }
        Ok(out)
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_vendor = "apple",
        target_os = "freebsd"
    )))]
    {
        let _ = file;
        Ok(vec![(0, len)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn finds_data_between_holes() {
        let f = tempfile::tempfile().expect("tmp");
        f.set_len(64 << 20).expect("len");
        f.write_all_at(b"x", 10 << 20).expect("write");
        let regions = data_regions(&f, 64 << 20).expect("regions");
        let covered: u64 = regions.iter().map(|(a, b)| b - a).sum();
        assert!(
            regions.iter().any(|&(a, b)| a <= 10 << 20 && b > 10 << 20),
            "{regions:?}"
        );
        // On filesystems with hole support only a few KiB are data.
        assert!(covered == 64 << 20 || covered < 1 << 20, "{regions:?}");
    }
}
