//! Directory entry names, each stored once.
//!
//! One arena of bytes holds every name (a 2-byte length, then the name);
//! one hash table maps (parent, name) to a value (a child's inode). An
//! entry costs its name plus 2 bytes in the arena and a 12-byte slot in the
//! table, instead of a heap allocation per name (or two: a tree's node
//! and its parent's map each held a copy). Nodes refer to their first
//! name by its offset in the arena (4 bytes).
//!
//! When no more lookups are needed (the builder's `finish`), [`NameTable::
//! freeze`] turns the table into one vector sorted by (parent, name), so a
//! directory's entries are a contiguous slice in name order.

use std::hash::{BuildHasher, Hasher, RandomState};

use hashbrown::HashTable;

/// One (parent, name) → value entry; `at` is the name's offset in the arena.
#[derive(Debug, Clone, Copy)]
struct Slot {
    parent: u32,
    at: u32,
    value: u32,
}

/// The arena outgrew its 4 GiB of offsets, or a name its 64 KiB length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamesFull;

/// (parent, name) → value, with every name stored once in an arena.
#[derive(Debug, Default)]
pub struct NameTable {
    arena: Vec<u8>,
    table: HashTable<Slot>,
    /// After [`NameTable::freeze`]: every slot, sorted by (parent, name).
    sorted: Vec<Slot>,
    hasher: RandomState,
}

/// The name stored at `at` (empty when `at` is not a name's offset).
fn name_in(arena: &[u8], at: u32) -> &[u8] {
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    let Some(&[lo, hi]) = arena.get(at..at.saturating_add(2)) else {
        return &[];
    };
    let len = usize::from(u16::from_le_bytes([lo, hi]));
    arena
        .get(at.saturating_add(2)..)
        .and_then(|rest| rest.get(..len))
        .unwrap_or_default()
}

fn hash_of(hasher: &RandomState, parent: u32, name: &[u8]) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_u32(parent);
    h.write(name);
    h.finish()
}

impl NameTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries stored.
    pub fn len(&self) -> usize {
        self.table.len().max(self.sorted.len())
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name at offset `at` (as [`NameTable::insert`] returned it).
    pub fn name(&self, at: u32) -> &[u8] {
        name_in(&self.arena, at)
    }

    /// The value of (`parent`, `name`), if stored (always `None` once frozen).
    pub fn get(&self, parent: u32, name: &[u8]) -> Option<u32> {
        let arena = &self.arena;
        self.table
            .find(hash_of(&self.hasher, parent, name), |s| {
                s.parent == parent && name_in(arena, s.at) == name
            })
            .map(|s| s.value)
    }

    /// Store (`parent`, `name`) → `value`, which must not be stored yet
    /// (look it up first); returns the name's offset in the arena.
    pub fn insert(&mut self, parent: u32, name: &[u8], value: u32) -> Result<u32, NamesFull> {
        let len = u16::try_from(name.len()).map_err(|_| NamesFull)?;
        let at = u32::try_from(self.arena.len()).map_err(|_| NamesFull)?;
        // The name must end within 4 GiB too, so its offset stays readable.
        let end = self
            .arena
            .len()
            .checked_add(2)
            .and_then(|n| n.checked_add(name.len()))
            .filter(|&e| u32::try_from(e).is_ok());
        if end.is_none() {
            return Err(NamesFull);
        }
        debug_assert!(self.get(parent, name).is_none(), "inserted twice");
        self.arena.extend_from_slice(&len.to_le_bytes());
        self.arena.extend_from_slice(name);
        let Self {
            arena,
            table,
            hasher,
            ..
        } = self;
        let hash = hash_of(hasher, parent, name);
        table.insert_unique(hash, Slot { parent, at, value }, |s| {
            hash_of(hasher, s.parent, name_in(arena, s.at))
        });
        Ok(at)
    }

    /// Stop lookups and sort every entry by (parent, name), freeing the
    /// hash table; [`NameTable::children`] works from then on.
    pub fn freeze(&mut self) {
        let mut sorted: Vec<Slot> = Vec::with_capacity(self.table.len());
        sorted.extend(std::mem::take(&mut self.table));
        sorted.extend(std::mem::take(&mut self.sorted));
        let arena = &self.arena;
        sorted.sort_unstable_by(|a, b| {
            (a.parent, name_in(arena, a.at)).cmp(&(b.parent, name_in(arena, b.at)))
        });
        self.sorted = sorted;
    }

    /// The entries of `parent` in name order, as (name, value); empty
    /// unless [`NameTable::freeze`] was called.
    pub fn children(
        &self,
        parent: u32,
    ) -> impl ExactSizeIterator<Item = (&[u8], u32)> + Clone + '_ {
        let from = self.sorted.partition_point(|s| s.parent < parent);
        let to = self.sorted.partition_point(|s| s.parent <= parent);
        self.sorted
            .get(from..to)
            .unwrap_or_default()
            .iter()
            .map(|s| (name_in(&self.arena, s.at), s.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn stores_looks_up_and_sorts() {
        let mut t = NameTable::new();
        let a = t.insert(2, b"b", 10).expect("room");
        t.insert(2, b"a", 11).expect("room");
        t.insert(3, b"a", 12).expect("room");
        t.insert(2, b"", 13).expect("room");
        assert_eq!(t.name(a), b"b");
        assert_eq!(t.get(2, b"a"), Some(11));
        assert_eq!(t.get(3, b"a"), Some(12));
        assert_eq!(t.get(3, b"b"), None);
        assert_eq!(t.get(2, b""), Some(13));
        assert_eq!(t.len(), 4);
        assert_eq!(t.children(2).count(), 0, "not frozen yet");
        t.freeze();
        let kids: Vec<_> = t.children(2).collect();
        assert_eq!(kids, vec![(&b""[..], 13), (&b"a"[..], 11), (&b"b"[..], 10)]);
        assert_eq!(t.children(3).collect::<Vec<_>>(), vec![(&b"a"[..], 12)]);
        assert_eq!(t.children(1).count(), 0);
        assert_eq!(t.children(4).count(), 0);
        assert_eq!(t.name(a), b"b", "offsets survive freezing");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn refuses_names_over_64k() {
        let mut t = NameTable::new();
        assert_eq!(t.insert(1, &vec![b'x'; 65_536], 1), Err(NamesFull));
        assert!(t.insert(1, &vec![b'x'; 65_535], 1).is_ok());
        assert_eq!(t.name(0).len(), 65_535);
        assert_eq!(t.name(1_000_000), b"", "no name there");
    }

    proptest! {
        /// The table answers like a BTreeMap of (parent, name) → value,
        /// before and after freezing (then in the map's order).
        #[test]
        fn behaves_like_a_map(
            ops in proptest::collection::vec(
                (0u32..4, proptest::collection::vec(97u8..100, 0..4)), 0..200)
        ) {
            let mut t = NameTable::new();
            let mut m: BTreeMap<(u32, Vec<u8>), (u32, u32)> = BTreeMap::new();
            for (value, (parent, name)) in (0u32..).zip(ops) {
                prop_assert_eq!(t.get(parent, &name), m.get(&(parent, name.clone())).map(|v| v.0));
                if !m.contains_key(&(parent, name.clone())) {
                    let at = t.insert(parent, &name, value).expect("room");
                    m.insert((parent, name), (value, at));
                }
            }
            for ((parent, name), (value, at)) in &m {
                prop_assert_eq!(t.get(*parent, name), Some(*value));
                prop_assert_eq!(t.name(*at), &name[..]);
            }
            t.freeze();
            for parent in 0..5u32 {
                let got: Vec<(Vec<u8>, u32)> =
                    t.children(parent).map(|(n, v)| (n.to_vec(), v)).collect();
                let want: Vec<(Vec<u8>, u32)> = m
                    .range((parent, Vec::new())..)
                    .take_while(|((p, _), _)| *p == parent)
                    .map(|((_, n), (v, _))| (n.clone(), *v))
                    .collect();
                prop_assert_eq!(got, want);
            }
        }
    }
}
