//! Eviction planning: a pure function of (policy, entries, now). Partial
//! downloads (`Entry::partial`) are planned with the entries: they count
//! toward `max_size` (by the bytes they hold) and age like entries, but not
//! toward `max_num` nor as versions.
//!
//! In order:
//! 1. entries the policy no longer caches (sub-policy disabled, `ignore`);
//! 2. `max_age` (the entry's most specific setting), age counted from `added`;
//! 3. `keep_identified_versions`: per identity, versions ranked highest first
//!    (natural order); an entry whose version ranks at or past its N goes;
//! 4. `max_num` and `max_size`, each level over its own entries, most
//!    specific level first (every filter, then `files`/`oci_images`, then the
//!    main policy), removing entries in that level's eviction order until it
//!    fits.

use std::cmp::Ordering;
use std::collections::HashMap;

use super::entry::Entry;
use super::policy::{Decision, Eviction, Limits, NotCached, Policy, Scope};
use super::version::natural_cmp;

/// Why an entry is evicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictReason {
    /// The policy no longer caches it.
    NotCached(NotCached),
    /// Older than `max_age` seconds.
    MaxAge(u64),
    /// More than `keep_identified_versions` newer versions exist.
    KeepVersions(u64),
    /// Its level has more than `max_num` entries.
    MaxNum(Scope),
    /// Its level holds more than `max_size` bytes.
    MaxSize(Scope),
}

impl std::fmt::Display for EvictReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EvictReason::NotCached(n) => write!(f, "not cached: {n}"),
            EvictReason::MaxAge(s) => write!(f, "older than max_age ({s} s)"),
            EvictReason::KeepVersions(n) => write!(f, "more than {n} newer versions kept"),
            EvictReason::MaxNum(s) => write!(f, "{s}: over max_num"),
            EvictReason::MaxSize(s) => write!(f, "{s}: over max_size"),
        }
    }
}

/// What an eviction did (`Cache::evict`).
#[derive(Debug, Default)]
pub struct EvictReport {
    /// Removed, and why.
    pub evicted: Vec<(Entry, EvictReason)>,
    /// Planned but skipped: another build holds the key.
    pub busy: Vec<Entry>,
}

/// One planned eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Index into the entries given to [`plan`].
    pub index: usize,
    /// Why.
    pub reason: EvictReason,
}

/// Entries to evict, in the order they should go.
pub fn plan(policy: &Policy, entries: &[Entry], now: u64) -> Vec<Planned> {
    let decisions: Vec<Decision> = entries.iter().map(|e| policy.decide(&e.key())).collect();
    let mut out = Vec::new();
    let mut gone = vec![false; entries.len()];
    let mut evict = |i: usize, reason: EvictReason, gone: &mut Vec<bool>| {
        gone[i] = true;
        out.push(Planned { index: i, reason });
    };

    // 1 and 2.
    for (i, (e, d)) in entries.iter().zip(&decisions).enumerate() {
        match d {
            Decision::NotCached(n) => evict(i, EvictReason::NotCached(*n), &mut gone),
            Decision::Cached(eff) => {
                if let Some(age) = Limits::limit(eff.limits.max_age) {
                    if now.saturating_sub(e.added) > age {
                        evict(i, EvictReason::MaxAge(age), &mut gone);
                    }
                }
            }
        }
    }

    // 3.
    let mut by_identity = groups_into_vec(entries, &gone);
    by_identity.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, members) in by_identity {
        let versions: Vec<String> = members
            .iter()
            .filter_map(|&i| entries[i].key().identity().map(|id| id.version.clone()))
            .collect();
        for (pos, &i) in members.iter().enumerate() {
            let Decision::Cached(eff) = &decisions[i] else {
                continue;
            };
            let Some(keep) = Limits::limit(eff.limits.keep_identified_versions) else {
                continue;
            };
            let mine = &versions[pos];
            let mut higher: Vec<&String> = versions
                .iter()
                .filter(|v| natural_cmp(v, mine) == Ordering::Greater)
                .collect();
            higher.sort_by(|a, b| natural_cmp(a, b));
            higher.dedup_by(|a, b| natural_cmp(a, b) == Ordering::Equal);
            if u64::try_from(higher.len()).unwrap_or(u64::MAX) >= keep {
                evict(i, EvictReason::KeepVersions(keep), &mut gone);
            }
        }
    }

    // 4.
    let mut scopes: Vec<Scope> = decisions
        .iter()
        .filter_map(|d| match d {
            Decision::Cached(eff) => Some(eff.scopes.clone()),
            Decision::NotCached(_) => None,
        })
        .flatten()
        .collect();
    scopes.push(Scope::Main);
    scopes.sort_by_key(|s| match s {
        Scope::Filter(..) => (0, *s),
        Scope::Sub(_) => (1, *s),
        Scope::Main => (2, *s),
    });
    scopes.dedup();
    for scope in scopes {
        let own = policy.own_limits(scope);
        let max_num = Limits::limit(own.max_num);
        let max_size = Limits::limit(own.max_size);
        if max_num.is_none() && max_size.is_none() {
            continue;
        }
        let mut members: Vec<usize> = (0..entries.len())
            .filter(|&i| !gone[i])
            .filter(
                |&i| matches!(&decisions[i], Decision::Cached(eff) if eff.scopes.contains(&scope)),
            )
            .collect();
        let order = policy.eviction_of(scope);
        members.sort_by(|&a, &b| eviction_order(order, &entries[a], &entries[b]));
        // Partial downloads count toward the size, not the number.
        let complete = members.iter().filter(|&&i| entries[i].partial.is_none());
        let mut count = u64::try_from(complete.count()).unwrap_or(u64::MAX);
        let mut total: u64 = members.iter().map(|&i| entries[i].size).sum();
        for i in members {
            let reason = if max_num.is_some_and(|m| count > m) {
                EvictReason::MaxNum(scope)
            } else if max_size.is_some_and(|m| total > m) {
                EvictReason::MaxSize(scope)
            } else {
                break;
            };
            evict(i, reason, &mut gone);
            if entries[i].partial.is_none() {
                count = count.saturating_sub(1);
            }
            total -= entries[i].size;
        }
    }
    out
}

fn groups_into_vec(entries: &[Entry], gone: &[bool]) -> Vec<(String, Vec<usize>)> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        // A partial download is no version to keep (nor one that makes an
        // older, complete one go).
        if gone[i] || e.partial.is_some() {
            continue;
        }
        if let Some(id) = e.key().identity() {
            map.entry(id.name.clone()).or_default().push(i);
        }
    }
    map.into_iter().collect()
}

/// `a` before `b` when `a` should be evicted first.
pub fn eviction_order(order: Eviction, a: &Entry, b: &Entry) -> Ordering {
    let primary = match order {
        Eviction::Oldest => a.added.cmp(&b.added),
        Eviction::Newest => b.added.cmp(&a.added),
        Eviction::Largest => b.size.cmp(&a.size),
        Eviction::Smallest => a.size.cmp(&b.size),
        Eviction::Lru => a.last_used.cmp(&b.last_used).then(a.added.cmp(&b.added)),
    };
    primary
        .then_with(|| a.key.cmp(&b.key))
        .then_with(|| a.platform.cmp(&b.platform))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::cache::entry::Validators;
    use crate::cache::key::Key;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Path::new("policy.yaml")).expect("valid policy")
    }

    fn entry(key: &Key, size: u64, added: u64, last_used: u64) -> Entry {
        Entry {
            key: key.as_str().to_string(),
            kind: key.kind(),
            platform: key.platform().map(str::to_string),
            size,
            sha256: format!("{:064x}", size),
            validators: Validators::default(),
            source: String::new(),
            added,
            checked: added,
            last_used,
            use_count: 0,
            partial: None,
        }
    }

    fn file(name: &str, size: u64, added: u64, last_used: u64) -> Entry {
        let key = Key::file(&format!("http://h/{name}")).expect("http");
        entry(&key, size, added, last_used)
    }

    fn image(name: &str, tag: &str, size: u64, added: u64) -> Entry {
        let key = Key::image(
            "ghcr.io",
            "offspot",
            name,
            Some(tag),
            None,
            "linux/arm64/v8",
        );
        entry(&key, size, added, added)
    }

    /// The file names of what the plan evicts, in order.
    fn evicted(p: &Policy, entries: &[Entry], now: u64) -> Vec<String> {
        plan(p, entries, now)
            .into_iter()
            .map(|x| {
                let k = &entries[x.index].key;
                k.rsplit('/').next().unwrap_or(k).to_string()
            })
            .collect()
    }

    /// a: added first, smallest, used last; d: added last, largest, used first.
    fn four() -> Vec<Entry> {
        vec![
            file("a", 10, 100, 900),
            file("b", 20, 200, 700),
            file("c", 30, 300, 800),
            file("d", 40, 400, 600),
        ]
    }

    #[test]
    fn every_strategy_orders_as_named() {
        for (strategy, expected) in [
            ("oldest", ["a", "b"]),
            ("newest", ["d", "c"]),
            ("largest", ["d", "c"]),
            ("smallest", ["a", "b"]),
            ("lru", ["d", "b"]),
        ] {
            let p = policy(&format!("max_num: 2\neviction: {strategy}\n"));
            assert_eq!(evicted(&p, &four(), 1000), expected, "{strategy}");
        }
    }

    #[test]
    fn max_size_removes_until_it_fits() {
        // 100 bytes held; 55 allowed: lru removes d (40) then b (20).
        let p = policy("max_size: 55\n");
        assert_eq!(evicted(&p, &four(), 1000), ["d", "b"]);
        let p = policy("max_size: 100\n");
        assert!(evicted(&p, &four(), 1000).is_empty());
    }

    #[test]
    fn max_age_at_each_level_most_specific_wins() {
        let entries = vec![
            file("old.zim", 1, 0, 0),
            file("keep-old", 1, 0, 0),
            image("x", "1", 1, 0),
            file("new", 1, 900, 900),
        ];
        // main 1000 s: nothing is that old at now = 1000.
        assert!(evicted(&policy("max_age: 1000\n"), &entries, 1000).is_empty());
        // files 500 s: both old files, not the old image, not the new file.
        assert_eq!(
            evicted(
                &policy("max_age: 1000\nfiles:\n  max_age: 500\n"),
                &entries,
                1000
            ),
            ["old.zim", "keep-old"]
        );
        // a filter's 50 s applies to its own entries only.
        let p = policy("files:\n  filters:\n    - pattern: '\\.zim$'\n      max_age: 50\n");
        assert_eq!(evicted(&p, &entries, 1000), ["old.zim"]);
        // the image sub-policy.
        let p = policy("oci_images:\n  max_age: 10\n");
        assert_eq!(evicted(&p, &entries, 1000), ["x:1"]);
    }

    #[test]
    fn max_num_and_max_size_per_level() {
        let entries = vec![
            file("a.zim", 10, 1, 1),
            file("b.zim", 10, 2, 2),
            file("c.bin", 10, 3, 3),
            image("x", "1", 10, 4),
            image("y", "1", 10, 5),
        ];
        // files max_num 2 leaves images alone; lru: a.zim goes.
        assert_eq!(
            evicted(&policy("files:\n  max_num: 2\n"), &entries, 10),
            ["a.zim"]
        );
        // a filter's max_num counts only its entries.
        let p = policy(
            "files:\n  filters:\n    - pattern: zim\n      max_num: 1\n      eviction: newest\n",
        );
        assert_eq!(evicted(&p, &entries, 10), ["b.zim"]);
        // oci_images max_size 15: one image of 10 goes (oldest added = x).
        let p = policy("oci_images:\n  max_size: 15\n  eviction: oldest\n");
        assert_eq!(evicted(&p, &entries, 10), ["x:1"]);
        // levels combine: filter first, then the main limit over what is left.
        let p = policy("max_num: 3\neviction: largest\nfiles:\n  filters:\n    - pattern: zim\n      max_num: 1\n      eviction: oldest\n");
        let got = evicted(&p, &entries, 10);
        assert_eq!(got[0], "a.zim");
        assert_eq!(got.len(), 2, "{got:?}");
        // main's max_size over everything (50 held, 30 allowed, oldest first).
        let p = policy("max_size: 30\neviction: oldest\n");
        assert_eq!(evicted(&p, &entries, 10), ["a.zim", "b.zim"]);
    }

    #[test]
    fn ignored_and_disabled_entries_are_evicted() {
        let entries = vec![
            file("tmp.iso", 1, 1, 1),
            file("k.zim", 1, 1, 1),
            image("x", "1", 1, 1),
        ];
        let p = policy("files:\n  filters:\n    - pattern: iso\n      ignore: true\noci_images:\n  enabled: false\n");
        let got = plan(&p, &entries, 10);
        assert_eq!(got.len(), 2);
        assert!(matches!(
            got[0].reason,
            EvictReason::NotCached(NotCached::Ignored(_))
        ));
        assert!(matches!(
            got[1].reason,
            EvictReason::NotCached(NotCached::SubPolicyDisabled(_))
        ));
    }

    #[test]
    fn keeps_the_n_highest_identified_versions() {
        let entries = vec![
            file("wikipedia_en_all_2023-10.zim", 1, 1, 1),
            file("wikipedia_en_all_2024-01.zim", 1, 2, 2),
            file("wikipedia_en_all_2023-12.zim", 1, 3, 3),
            file("wiktionary_fr_all_2020-01.zim", 1, 4, 4),
            image("kiwix-serve", "1.9", 1, 5),
            image("kiwix-serve", "1.10", 1, 6),
            image("kiwix-serve", "1.2", 1, 7),
            image("other", "0.1", 1, 8),
        ];
        let got = evicted(&policy("keep_identified_versions: 2\n"), &entries, 10);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains(&"wikipedia_en_all_2023-10.zim".to_string()));
        assert!(got.contains(&"kiwix-serve:1.2".to_string()));
        // Only images keep 1: 1.10 is the highest naturally.
        let got = evicted(
            &policy("oci_images:\n  keep_identified_versions: 1\n"),
            &entries,
            10,
        );
        let mut got = got;
        got.sort();
        assert_eq!(got, ["kiwix-serve:1.2", "kiwix-serve:1.9"]);
    }

    #[test]
    fn partials_count_by_size_not_by_number_nor_as_versions() {
        let partial = |name: &str, size: u64, added: u64| Entry {
            partial: Some(1000),
            sha256: String::new(),
            ..file(name, size, added, added)
        };
        let mut entries = four();
        entries.push(partial("p", 50, 500));
        // Five rows, but four entries: max_num 4 keeps them all.
        assert!(evicted(&policy("max_num: 4\n"), &entries, 1000).is_empty());
        // 150 bytes held with the partial's 50; 110 allowed: lru removes
        // the partial (last written at 500, before d's use at 600).
        assert_eq!(evicted(&policy("max_size: 110\n"), &entries, 1000), ["p"]);
        // Newest first, a partial is a row like the others.
        assert_eq!(
            evicted(&policy("max_size: 60\neviction: newest\n"), &entries, 1000),
            ["p", "d"]
        );
        // A partial newer version does not make the complete one go.
        let versions = vec![
            file("wikipedia_en_all_2023-10.zim", 1, 1, 1),
            partial("wikipedia_en_all_2024-01.zim", 1, 2),
        ];
        let keep_one = policy("keep_identified_versions: 1\n");
        assert!(evicted(&keep_one, &versions, 10).is_empty());
    }
}
