//! Block allocator: a sorted set of used block ranges.
//!
//! Allocation is deterministic: it depends only on the order of requests
//! (the plan's order), never on timing. Data goes forward from a cursor, so a
//! file's blocks are as contiguous as the fixed metadata allows.

use std::collections::BTreeMap;

use super::units::{BlockCount, BlockNo};

/// A run of physical blocks `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: BlockNo,
    pub len: BlockCount,
}

impl Run {
    /// The block just past the run. Runs come from the allocator, inside a
    /// filesystem of at most 2^64 / 4096 blocks, so the sum never saturates.
    pub fn end(&self) -> BlockNo {
        BlockNo(self.start.0.saturating_add(self.len.0))
    }

    /// Every block of the run, in order.
    pub fn blocks(&self) -> impl Iterator<Item = BlockNo> {
        (self.start.0..self.end().0).map(BlockNo)
    }
}

/// Sorted, merged set of used block ranges with a data allocation cursor.
/// Invariant: every range lies in `[0, total)`, ranges never overlap, and
/// `used_count` is the sum of their lengths (so `used_count <= total`).
#[derive(Debug, Clone)]
pub(crate) struct Allocator {
    /// start -> end (exclusive) of used ranges; never overlapping, merged
    /// when adjacent.
    used: BTreeMap<u64, u64>,
    total: u64,
    used_count: u64,
    /// Data allocation cursor: requests are served at or after it.
    cursor: u64,
}

impl Allocator {
    pub fn new(total: BlockCount) -> Self {
        Self {
            used: BTreeMap::new(),
            total: total.0,
            used_count: 0,
            cursor: 0,
        }
    }

    #[cfg(test)]
    pub fn used_count(&self) -> u64 {
        self.used_count
    }

    pub fn free_count(&self) -> BlockCount {
        // used_count <= total (struct invariant).
        BlockCount(self.total.saturating_sub(self.used_count))
    }

    /// Iterate used ranges in ascending order.
    pub fn used_runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.used.iter().map(|(&s, &e)| Run {
            start: BlockNo(s),
            // e > s for every stored range.
            len: BlockCount(e.saturating_sub(s)),
        })
    }

    /// Mark `[start, start+len)` used. It must be free and inside the
    /// filesystem (layout code only; a violation is a builder bug).
    pub fn mark(&mut self, start: BlockNo, len: BlockCount) -> Result<(), String> {
        let (start, len) = (start.0, len.0);
        if len == 0 {
            return Ok(());
        }
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.total)
            .ok_or_else(|| {
                format!(
                    "block range {start}+{len} is past the end of the filesystem ({} blocks)",
                    self.total
                )
            })?;
        if let Some((&s, &e)) = self.used.range(..end).next_back() {
            if e > start {
                return Err(format!(
                    "block range {start}..{end} overlaps used range {s}..{e}"
                ));
            }
        }
        let mut new_start = start;
        let mut new_end = end;
        if let Some((&s, &e)) = self.used.range(..start).next_back() {
            if e == start {
                new_start = s;
                self.used.remove(&s);
            }
        }
        if let Some(&e) = self.used.get(&end) {
            new_end = e;
            self.used.remove(&end);
        }
        self.used.insert(new_start, new_end);
        // The range was free and inside [0, total): the count stays <= total.
        self.used_count = self.used_count.saturating_add(len);
        Ok(())
    }

    /// Release `[start, start+len)`, which must be used.
    pub fn release(&mut self, start: BlockNo, len: BlockCount) -> Result<(), String> {
        let (start, len) = (start.0, len.0);
        if len == 0 {
            return Ok(());
        }
        let end = start
            .checked_add(len)
            .ok_or_else(|| format!("releasing blocks {start}+{len}: past 2^64"))?;
        let (s, e) = match self.used.range(..=start).next_back() {
            Some((&s, &e)) if e >= end => (s, e),
            _ => {
                return Err(format!(
                    "releasing blocks {start}..{end} that are not allocated"
                ))
            }
        };
        self.used.remove(&s);
        if s < start {
            self.used.insert(s, start);
        }
        if end < e {
            self.used.insert(end, e);
        }
        // The range was inside a used range, so it is counted in used_count.
        self.used_count = self.used_count.saturating_sub(len);
        Ok(())
    }

    /// First position `>= from` where `len` free blocks follow contiguously.
    pub fn find_contiguous(&self, from: BlockNo, len: BlockCount) -> Option<BlockNo> {
        let len = len.0;
        let mut pos = from.0;
        if let Some((_, &e)) = self.used.range(..=pos).next_back() {
            pos = pos.max(e);
        }
        for (&s, &e) in self.used.range(pos..) {
            if s.checked_sub(pos).is_some_and(|gap| gap >= len) {
                return Some(BlockNo(pos));
            }
            pos = pos.max(e);
        }
        (self.total.checked_sub(pos)? >= len).then_some(BlockNo(pos))
    }

    /// Allocate `len` contiguous blocks at or after `from`.
    pub fn alloc_contiguous(&mut self, from: BlockNo, len: BlockCount) -> Option<BlockNo> {
        let at = self.find_contiguous(from, len)?;
        self.mark(at, len).ok()?;
        Some(at)
    }

    /// Allocate `count` blocks from the data cursor, as runs of at most
    /// `max_run` blocks, skipping used ranges. All or nothing: `None` when the
    /// filesystem has fewer free blocks after the cursor.
    pub fn alloc_runs(&mut self, count: BlockCount, max_run: BlockCount) -> Option<Vec<Run>> {
        let max_run = max_run.0.max(1);
        let mut runs: Vec<Run> = Vec::new();
        let mut left = count.0;
        let mut pos = self.cursor;
        while left > 0 {
            // Skip a used range covering pos.
            if let Some((_, &e)) = self.used.range(..=pos).next_back() {
                pos = pos.max(e);
            }
            let next_used = self
                .used
                .range(pos..)
                .next()
                .map_or(self.total, |(&s, _)| s);
            // The gap [pos, next_used) is free; none left past the end.
            let gap = next_used.checked_sub(pos).filter(|&g| g > 0)?;
            let mut take = gap.min(left);
            while take > 0 {
                let n = take.min(max_run);
                match runs.last_mut() {
                    Some(r) if r.end().0 == pos && r.len.0.saturating_add(n) <= max_run => {
                        r.len.0 = r.len.0.saturating_add(n);
                    }
                    _ => runs.push(Run {
                        start: BlockNo(pos),
                        len: BlockCount(n),
                    }),
                }
                // n <= take <= gap and n <= left: pos stays <= next_used <= total.
                pos = pos.saturating_add(n);
                take = take.saturating_sub(n);
                left = left.saturating_sub(n);
            }
        }
        for r in &runs {
            // The runs were carved out of free gaps just above.
            self.mark(r.start, r.len).ok()?;
        }
        self.cursor = pos;
        Some(runs)
    }

    /// Free blocks at or after the data cursor (what `alloc_runs` can still give).
    pub fn free_after_cursor(&self) -> BlockCount {
        let used_after = self
            .used
            .iter()
            .filter(|(_, &e)| e > self.cursor)
            .map(|(&s, &e)| e.saturating_sub(s.max(self.cursor)))
            .fold(0u64, u64::saturating_add);
        BlockCount(
            self.total
                .saturating_sub(self.cursor)
                .saturating_sub(used_after),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, len: u64) -> Run {
        Run {
            start: BlockNo(start),
            len: BlockCount(len),
        }
    }

    fn b(n: u64) -> BlockNo {
        BlockNo(n)
    }

    fn n(n: u64) -> BlockCount {
        BlockCount(n)
    }

    #[test]
    fn marks_merge_and_count() {
        let mut a = Allocator::new(n(100));
        a.mark(b(10), n(5)).expect("mark");
        a.mark(b(15), n(5)).expect("adjacent");
        a.mark(b(5), n(5)).expect("adjacent before");
        assert_eq!(a.used_runs().collect::<Vec<_>>(), vec![run(5, 15)]);
        assert_eq!(a.used_count(), 15);
        assert!(a.mark(b(19), n(2)).is_err(), "overlap refused");
        assert!(a.mark(b(99), n(2)).is_err(), "past end refused");
    }

    #[test]
    fn runs_skip_used_ranges_and_respect_max() {
        let mut a = Allocator::new(n(100));
        a.mark(b(3), n(2)).expect("mark");
        let runs = a.alloc_runs(n(10), n(4)).expect("fits");
        assert_eq!(runs, vec![run(0, 3), run(5, 4), run(9, 3)]);
        assert_eq!(a.used_count(), 12);
        assert!(a.alloc_runs(n(89), n(100)).is_none(), "only 88 left");
        assert_eq!(a.free_after_cursor(), n(88));
    }

    #[test]
    fn release_splits() {
        let mut a = Allocator::new(n(100));
        a.mark(b(0), n(10)).expect("mark");
        a.release(b(3), n(2)).expect("release");
        assert_eq!(
            a.used_runs().collect::<Vec<_>>(),
            vec![run(0, 3), run(5, 5)]
        );
        assert!(a.release(b(3), n(1)).is_err());
        assert_eq!(a.find_contiguous(b(0), n(2)), Some(b(3)));
        assert_eq!(a.find_contiguous(b(0), n(3)), Some(b(10)));
    }
}
