//! Data regions of a local file (`SEEK_DATA` / `SEEK_HOLE`), so a sparse
//! base image is copied without reading or writing its holes. The system
//! calls live in the platform layer ([`crate::os::data_regions`]).

use std::fs::File;

/// The `[start, end)` byte ranges of `file` that hold data, up to `len`.
/// Where the platform can't tell, the whole file is one region.
pub fn data_regions(file: &File, len: u64) -> std::io::Result<Vec<(u64, u64)>> {
    crate::os::data_regions(file, len)
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
