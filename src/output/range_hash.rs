//! [`RangeHashes`]: one sha256 per range of the image map, for
//! `OUTPUT.bmap`, from the raw image's stream.

use sha2::{Digest, Sha256};

use super::bmap::{BmapRange, BLOCK};
use super::ranges::RangeSet;
use super::sink::{out_of_order, DownloadSink};

/// The hashes of the map's ranges, in order.
pub struct RangeHashes {
    /// Byte ranges, whole blocks cut at the image's end.
    ranges: Vec<(u64, u64)>,
    /// The block size the results are counted in.
    block: u64,
    next: usize,
    current: Sha256,
    at: u64,
    done: Vec<BmapRange>,
}

impl RangeHashes {
    /// The ranges of `map` (byte ranges, cut to whole 4 KiB blocks and
    /// the image's `len`).
    pub fn new(map: &RangeSet, len: u64) -> Self {
        Self {
            ranges: map.to_blocks(BLOCK, len).iter().collect(),
            block: BLOCK,
            next: 0,
            current: Sha256::new(),
            at: 0,
            done: Vec::new(),
        }
    }

    /// Hash exactly `ranges` (byte ranges, ascending and disjoint, each
    /// starting on a `block` boundary: a bmap's, whose adjacent ranges
    /// keep their own hashes), numbered in blocks of `block` bytes.
    pub fn exact(ranges: Vec<(u64, u64)>, block: u64) -> Self {
        Self {
            ranges,
            block: block.max(1),
            next: 0,
            current: Sha256::new(),
            at: 0,
            done: Vec::new(),
        }
    }

    /// The ranges with their hashes (complete once finished).
    pub fn into_ranges(self) -> Vec<BmapRange> {
        self.done
    }
}

impl DownloadSink for RangeHashes {
    fn name(&self) -> String {
        "the bmap's range hashes".into()
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        if offset != self.at {
            return Err(out_of_order(self.at, offset));
        }
        let end = offset + data.len() as u64;
        self.at = end;
        while let Some(&(rs, re)) = self.ranges.get(self.next) {
            if rs >= end {
                break;
            }
            let (a, b) = (rs.max(offset), re.min(end));
            if a < b {
                // Both within `data`: a - offset < b - offset <= data.len().
                let from = usize::try_from(a - offset).unwrap_or(data.len());
                let to = usize::try_from(b - offset).unwrap_or(data.len());
                self.current.update(&data[from..to]);
            }
            if re > end {
                break;
            }
            let sum = std::mem::take(&mut self.current).finalize();
            self.done.push(BmapRange {
                first: rs / self.block,
                last: re.div_ceil(self.block) - 1,
                sha256: crate::io::hex(&sum),
            });
            self.next += 1;
        }
        Ok(())
    }

    fn finish(&mut self, len: u64) -> std::io::Result<()> {
        if len != self.at || self.next != self.ranges.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "the image ended at byte {len} with {} of {} ranges hashed",
                    self.next,
                    self.ranges.len()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        crate::io::hex(&Sha256::digest(data))
    }

    #[test]
    fn ranges_across_writes_are_hashed_whole() {
        let image: Vec<u8> = (0..5 * BLOCK).map(|i| (i % 251) as u8).collect();
        let mut map = RangeSet::default();
        map.insert(0, BLOCK);
        map.insert(2 * BLOCK, 2 * BLOCK + 10);
        map.insert(4 * BLOCK, 5 * BLOCK);
        let mut h = RangeHashes::new(&map, image.len() as u64);
        // Writes that cut every range in the middle.
        let cut = 3000usize;
        let mut at = 0;
        while at < image.len() {
            let end = (at + cut).min(image.len());
            h.write(at as u64, &image[at..end]).expect("in order");
            at = end;
        }
        h.finish(image.len() as u64).expect("complete");
        let b = usize::try_from(BLOCK).unwrap_or(4096);
        let got = h.into_ranges();
        let want = [
            (0, 0, sha(&image[..b])),
            (2, 2, sha(&image[2 * b..3 * b])),
            (4, 4, sha(&image[4 * b..])),
        ];
        assert_eq!(got.len(), 3);
        for (r, (first, last, sum)) in got.iter().zip(want) {
            assert_eq!(
                (r.first, r.last, r.sha256.as_str()),
                (first, last, sum.as_str())
            );
        }
    }

    #[test]
    fn a_short_stream_is_an_error() {
        let mut map = RangeSet::default();
        map.insert(0, 2 * BLOCK);
        let mut h = RangeHashes::new(&map, 2 * BLOCK);
        h.write(0, &[0; 100]).expect("in order");
        assert!(h.finish(100).is_err());
    }
}
