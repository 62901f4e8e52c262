//! `RangeSet`: sorted, disjoint, coalescing `[start, end)` byte ranges.
//!
//! The record of what an image needs on the card: each insert merges
//! with its neighbours, so the set's memory grows with the number of
//! separate runs (a few per filesystem group), never with content size.

use std::collections::BTreeMap;

/// Disjoint `[start, end)` ranges, merged when they touch or overlap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end; no two ranges touch.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add `[start, end)` (nothing when empty).
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // A range starting at or before `start` that reaches it.
        if let Some((&ps, &pe)) = self.map.range(..=s).next_back() {
            if pe >= s {
                s = ps;
                e = e.max(pe);
                self.map.remove(&ps);
            }
        }
        // Ranges starting inside [s, e].
        while let Some((&ns, &ne)) = self.map.range(s..=e).next() {
            e = e.max(ne);
            self.map.remove(&ns);
        }
        self.map.insert(s, e);
    }

    /// Remove `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut cut = RangeSet::new();
        cut.insert(start, end);
        *self = self.minus(&cut);
    }

    /// Add every range of `other`.
    pub fn extend(&mut self, other: &RangeSet) {
        for (s, e) in other.iter() {
            self.insert(s, e);
        }
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.map.iter().map(|(&s, &e)| (s, e))
    }

    /// Number of separate ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no byte is in the set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes covered.
    pub fn total(&self) -> u64 {
        self.iter().map(|(s, e)| e - s).sum()
    }

    /// True when `at` is in a range.
    pub fn contains(&self, at: u64) -> bool {
        self.map
            .range(..=at)
            .next_back()
            .is_some_and(|(_, &e)| at < e)
    }

    /// The same set widened to whole `block`-sized blocks and cut at
    /// `limit` (the image size).
    pub fn to_blocks(&self, block: u64, limit: u64) -> RangeSet {
        let mut out = RangeSet::new();
        for (s, e) in self.iter() {
            let s = s / block * block;
            let e = e.div_ceil(block).saturating_mul(block).min(limit);
            out.insert(s, e);
        }
        out
    }

    /// The parts of `[start, end)` not in the set, in order.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        for (s, e) in self.iter() {
            if e <= at {
                continue;
            }
            if s >= end {
                break;
            }
            if s > at {
                out.push((at, s.min(end)));
            }
            at = at.max(e);
            if at >= end {
                break;
            }
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// The parts of this set not in `other`.
    pub fn minus(&self, other: &RangeSet) -> RangeSet {
        let mut out = RangeSet::new();
        for (s, e) in self.iter() {
            for (gs, ge) in other.gaps(s, e) {
                out.insert(gs, ge);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::cast_possible_truncation)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn merges_touching_and_overlapping() {
        let mut r = RangeSet::new();
        r.insert(10, 20);
        r.insert(30, 40);
        r.insert(20, 30);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(10, 40)]);
        r.insert(0, 5);
        r.insert(3, 12);
        assert_eq!(r.iter().collect::<Vec<_>>(), [(0, 40)]);
        r.insert(50, 50);
        assert_eq!(r.len(), 1);
        assert_eq!(r.gaps(0, 60), [(40, 60)]);
        assert_eq!(r.to_blocks(16, 45).iter().collect::<Vec<_>>(), [(0, 45)]);
    }

    proptest! {
        /// Against a bitmap of every byte.
        #[test]
        fn same_as_a_bitmap(ops in proptest::collection::vec((0u64..200, 0u64..40), 0..30),
                            other in proptest::collection::vec((0u64..200, 0u64..40), 0..10)) {
            let mut r = RangeSet::new();
            let mut bits = vec![false; 256];
            for (s, l) in &ops {
                r.insert(*s, s + l);
                for b in &mut bits[*s as usize..(s + l) as usize] { *b = true; }
            }
            let mut o = RangeSet::new();
            let mut obits = vec![false; 256];
            for (s, l) in &other {
                o.insert(*s, s + l);
                for b in &mut obits[*s as usize..(s + l) as usize] { *b = true; }
            }
            for (i, &b) in bits.iter().enumerate() {
                prop_assert_eq!(r.contains(i as u64), b);
            }
            prop_assert_eq!(r.total(), bits.iter().filter(|&&b| b).count() as u64);
            let m = r.minus(&o);
            for i in 0..256 {
                prop_assert_eq!(m.contains(i as u64), bits[i] && !obits[i]);
            }
            let mut rm = r.clone();
            rm.remove(50, 120);
            for i in 0..256u64 {
                prop_assert_eq!(rm.contains(i), bits[i as usize] && !(50..120).contains(&i));
            }
            // Disjoint and not touching.
            let v: Vec<_> = r.iter().collect();
            for w in v.windows(2) {
                prop_assert!(w[0].1 < w[1].0);
            }
        }
    }
}
