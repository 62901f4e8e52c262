//! Device paths.

use std::path::{Path, PathBuf};

/// macOS's raw (character) device for a disk: `/dev/disk4` →
/// `/dev/rdisk4`, `/dev/disk4s2` → `/dev/rdisk4s2`; `None` for any other
/// path. The raw device bypasses the buffer cache (disk(4) on macOS).
/// Pure string logic, compiled and tested everywhere; only the macOS
/// backend uses it ([`super::raw_device_path`]).
pub(super) fn rdisk_of(path: &Path) -> Option<PathBuf> {
    let name = path.to_str()?.strip_prefix("/dev/disk")?;
    // diskN or diskNsM: digits, then optionally 's' and digits.
    let (unit, slice) = match name.split_once('s') {
        Some((u, s)) => (u, Some(s)),
        None => (name, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(unit) || slice.is_some_and(|s| !digits(s)) {
        return None;
    }
    Some(PathBuf::from(format!("/dev/rdisk{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_and_slices_map_to_their_raw_device() {
        let r = |p: &str| rdisk_of(Path::new(p));
        assert_eq!(r("/dev/disk4"), Some(PathBuf::from("/dev/rdisk4")));
        assert_eq!(r("/dev/disk12s3"), Some(PathBuf::from("/dev/rdisk12s3")));
        for other in [
            "/dev/rdisk4",
            "/dev/disk",
            "/dev/disks",
            "/dev/disk4s",
            "/dev/disk4x1",
            "/dev/sda",
            "disk4",
            "/tmp/out.img",
        ] {
            assert_eq!(r(other), None, "{other}");
        }
    }
}
