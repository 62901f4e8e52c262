//! Block allocator: a sorted set of used block ranges.
//!
//! Allocation is deterministic: it depends only on the order of requests
//! (the plan's order), never on timing. Data goes forward from a cursor, so a
//! file's blocks are as contiguous as the fixed metadata allows.

use std::collections::BTreeMap;

/// A run of physical blocks `[start, start + len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: u64,
    pub len: u64,
}

impl Run {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

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
    pub fn new(total: u64) -> Self {
        Self {
            used: BTreeMap::new(),
            total,
            used_count: 0,
            cursor: 0,
        }
    }

    #[cfg(test)]
    pub fn used_count(&self) -> u64 {
        self.used_count
    }

    pub fn free_count(&self) -> u64 {
        self.total - self.used_count
    }

    /// Iterate used ranges in ascending order.
    pub fn used_runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.used.iter().map(|(&s, &e)| Run {
            start: s,
            len: e - s,
        })
    }

    /// Mark `[start, start+len)` used. It must be free and inside the
    /// filesystem (layout code only; a violation is a builder bug).
    pub fn mark(&mut self, start: u64, len: u64) -> Result<(), String> {
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
        self.used_count += len;
        Ok(())
    }

    /// Release `[start, start+len)`, which must be used.
    pub fn release(&mut self, start: u64, len: u64) -> Result<(), String> {
        if len == 0 {
            return Ok(());
        }
        let end = start + len;
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
        self.used_count -= len;
        Ok(())
    }

    /// First position `>= from` where `len` free blocks follow contiguously.
    pub fn find_contiguous(&self, from: u64, len: u64) -> Option<u64> {
        let mut pos = from;
        if let Some((_, &e)) = self.used.range(..=pos).next_back() {
            pos = pos.max(e);
        }
        for (&s, &e) in self.used.range(pos..) {
            if s >= pos && s - pos >= len {
                return Some(pos);
            }
            pos = pos.max(e);
        }
        (self.total.checked_sub(pos)? >= len).then_some(pos)
    }

    /// Allocate `len` contiguous blocks at or after `from`.
    pub fn alloc_contiguous(&mut self, from: u64, len: u64) -> Option<u64> {
        let at = self.find_contiguous(from, len)?;
        self.mark(at, len).ok()?;
        Some(at)
    }

    /// Allocate `count` blocks from the data cursor, as runs of at most
    /// `max_run` blocks, skipping used ranges. All or nothing: `None` when the
    /// filesystem has fewer free blocks after the cursor.
    pub fn alloc_runs(&mut self, count: u64, max_run: u64) -> Option<Vec<Run>> {
        let mut runs = Vec::new();
        let mut left = count;
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
            if pos >= self.total {
                return None;
            }
            let gap = next_used - pos;
            if gap == 0 {
                continue;
            }
            let mut take = gap.min(left);
            while take > 0 {
                let n = take.min(max_run);
                match runs.last_mut() {
                    Some(Run { start, len }) if *start + *len == pos && *len + n <= max_run => {
                        *len += n
                    }
                    _ => runs.push(Run { start: pos, len: n }),
                }
                pos += n;
                take -= n;
                left -= n;
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
    pub fn free_after_cursor(&self) -> u64 {
        let used_after: u64 = self
            .used
            .iter()
            .filter(|(_, &e)| e > self.cursor)
            .map(|(&s, &e)| e - s.max(self.cursor))
            .sum();
        self.total.saturating_sub(self.cursor) - used_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_merge_and_count() {
        let mut a = Allocator::new(100);
        a.mark(10, 5).expect("mark");
        a.mark(15, 5).expect("adjacent");
        a.mark(5, 5).expect("adjacent before");
        assert_eq!(
            a.used_runs().collect::<Vec<_>>(),
            vec![Run { start: 5, len: 15 }]
        );
        assert_eq!(a.used_count(), 15);
        assert!(a.mark(19, 2).is_err(), "overlap refused");
        assert!(a.mark(99, 2).is_err(), "past end refused");
    }

    #[test]
    fn runs_skip_used_ranges_and_respect_max() {
        let mut a = Allocator::new(100);
        a.mark(3, 2).expect("mark");
        let runs = a.alloc_runs(10, 4).expect("fits");
        assert_eq!(
            runs,
            vec![
                Run { start: 0, len: 3 },
                Run { start: 5, len: 4 },
                Run { start: 9, len: 3 }
            ]
        );
        assert_eq!(a.used_count(), 12);
        assert!(a.alloc_runs(89, 100).is_none(), "only 88 left");
        assert_eq!(a.free_after_cursor(), 88);
    }

    #[test]
    fn release_splits() {
        let mut a = Allocator::new(100);
        a.mark(0, 10).expect("mark");
        a.release(3, 2).expect("release");
        assert_eq!(
            a.used_runs().collect::<Vec<_>>(),
            vec![Run { start: 0, len: 3 }, Run { start: 5, len: 5 }]
        );
        assert!(a.release(3, 1).is_err());
        assert_eq!(a.find_contiguous(0, 2), Some(3));
        assert_eq!(a.find_contiguous(0, 3), Some(10));
    }
}
