//! The walk over a file's data regions, given the answers of
//! `SEEK_DATA` and `SEEK_HOLE` (lseek(2)); shared by every backend that
//! has them, and tested here on made-up answers.

#![cfg_attr(
    not(all(
        any(target_os = "linux", target_os = "android", target_vendor = "apple"),
        not(feature = "portable")
    )),
    allow(dead_code)
)]

use std::io::ErrorKind;

/// The `[start, end)` data regions of a file of `len` bytes, in order
/// ([`walk_each`]; collected, for the tests).
#[cfg(test)]
fn walk(
    len: u64,
    next_data: impl FnMut(u64) -> std::io::Result<Option<u64>>,
    next_hole: impl FnMut(u64) -> std::io::Result<u64>,
) -> std::io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    walk_each(len, next_data, next_hole, |a, b| out.push((a, b)))?;
    Ok(out)
}

/// Call `each(start, end)` for the data regions of a file of `len`
/// bytes, in order, holding nothing (a file of a million regions costs
/// no memory).
///
/// - `next_data(pos)`: the first data byte at or after `pos`; `Ok(None)`
///   when there is none (`ENXIO`); an `Unsupported` error when the
///   filesystem can't tell, which makes the rest of the file one region.
/// - `next_hole(pos)`: the first hole byte at or after `pos` (the end of
///   the file counts as a hole).
pub(super) fn walk_each(
    len: u64,
    mut next_data: impl FnMut(u64) -> std::io::Result<Option<u64>>,
    mut next_hole: impl FnMut(u64) -> std::io::Result<u64>,
    mut each: impl FnMut(u64, u64),
) -> std::io::Result<()> {
    let mut pos = 0u64;
    while pos < len {
        let data = match next_data(pos) {
            Ok(Some(d)) => d,
            Ok(None) => break,
            Err(e) if e.kind() == ErrorKind::Unsupported => {
                each(pos, len);
                break;
            }
            Err(e) => return Err(e),
        };
        if data >= len {
            break;
        }
        let hole = next_hole(data)?.min(len);
        if hole <= data {
            // A hole can't start before the data it follows: the file
            // changed under us or the filesystem lies. Take the rest as
            // data rather than loop.
            each(data, len);
            break;
        }
        each(data, hole);
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error;

    /// Answers for a file whose data is `regions`.
    fn fake(
        regions: &'static [(u64, u64)],
        end: u64,
    ) -> (
        impl FnMut(u64) -> std::io::Result<Option<u64>>,
        impl FnMut(u64) -> std::io::Result<u64>,
    ) {
        let data = move |pos: u64| {
            Ok(regions
                .iter()
                .find(|&&(_, b)| b > pos)
                .map(|&(a, _)| a.max(pos)))
        };
        let hole = move |pos: u64| {
            Ok(regions
                .iter()
                .find(|&&(a, b)| a <= pos && pos < b)
                .map_or(pos, |&(_, b)| b)
                .min(end))
        };
        (data, hole)
    }

    #[test]
    fn regions_in_order() {
        let (d, h) = fake(&[(0, 4096), (8192, 12288), (40960, 45056)], 1 << 20);
        assert_eq!(
            walk(1 << 20, d, h).expect("walk"),
            vec![(0, 4096), (8192, 12288), (40960, 45056)]
        );
    }

    #[test]
    fn regions_are_cut_at_len() {
        let (d, h) = fake(&[(0, 4096), (8192, 12288)], 1 << 20);
        assert_eq!(
            walk(10_000, d, h).expect("walk"),
            vec![(0, 4096), (8192, 10_000)]
        );
        let (d, h) = fake(&[(8192, 12288)], 1 << 20);
        assert_eq!(walk(4096, d, h).expect("walk"), vec![]);
    }

    #[test]
    fn unsupported_means_all_data_and_errors_pass_through() {
        let unsupported = |_| Err(Error::new(ErrorKind::Unsupported, "no SEEK_DATA"));
        assert_eq!(walk(77, unsupported, Ok).expect("walk"), vec![(0, 77)]);
        let broken = |_| Err(Error::other("EIO"));
        assert!(walk(77, broken, Ok).is_err());
    }

    #[test]
    fn a_lying_filesystem_does_not_loop() {
        assert_eq!(
            walk(100, |p| Ok(Some(p)), Ok).expect("walk"),
            vec![(0, 100)]
        );
    }
}
