//! Eviction planning: a pure function of (policy, entries, now).
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
            .filter(|&i| matches!(&decisions[i], Decision::Cached(eff) if eff.scopes.contains(&scope)))
            .collect();
        let order = policy.eviction_of(scope);
        members.sort_by(|&a, &b| eviction_order(order, &entries[a], &entries[b]));
        let mut count = u64::try_from(members.len()).unwrap_or(u64::MAX);
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
            count -= 1;
            total -= entries[i].size;
        }
    }
    out
}

fn groups_into_vec(entries: &[Entry], gone: &[bool]) -> Vec<(String, Vec<usize>)> {
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, e) in entries.iter().enumerate() {
        if gone[i] {
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
