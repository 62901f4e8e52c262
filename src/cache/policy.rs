//! `policy.yaml` (docs/spec.md §8, the old tool's schema) and what it decides for
//! one key.
//!
//! ```yaml
//! enabled: true
//! max_size: 10GiB        # 0 = unlimited
//! max_age: 30d
//! max_num: 0             # 0 = unlimited
//! check_after: 1d
//! keep_identified_versions: 2
//! eviction: lru          # oldest | newest | largest | smallest | lru
//! files:                 # also oci_images:
//!   enabled: true
//!   max_size: 8GiB       # may not exceed the main policy's
//!   filters:
//!     - pattern: "wikipedia_.+_maxi"   # Python-style regex, case-insensitive, searched in the key
//!       ignore: false
//!       max_size: 4GiB   # may not exceed its sub-policy's
//! ```
//!
//! Defaults apply only when the file is absent: enabled, `max_size: 10GiB`,
//! `eviction: lru`. A present file that sets no limit has none; the order of
//! eviction is then `lru`.
//!
//! Resolution for an entry: its sub-policy (by kind); if that is disabled the
//! entry is not cached; else the first filter whose pattern matches the key
//! owns it; an `ignore` filter means not cached. For per-entry settings
//! (`check_after`, `max_age`, `keep_identified_versions`) the most specific
//! level that sets one wins (the old tool let the main `check_after` win).
//! Count and size limits apply to each level's own set of entries.

use std::path::Path;

use serde::Deserialize;

use super::error::CacheError;
use super::key::{EntryKind, Key};
use super::locate::{line_of, Seg};
use crate::config::{Duration, Size};

/// Which entries go first when a limit is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Eviction {
    /// Earliest added first.
    Oldest,
    /// Latest added first.
    Newest,
    /// Biggest first.
    Largest,
    /// Smallest first.
    Smallest,
    /// Least recently used first.
    Lru,
}

/// The settings one level of the policy may give (`None` = not set there).
///
/// Limits of 0 (`max_size`, `max_num`, `max_age`, `keep_identified_versions`)
/// mean unlimited and are stored as `Some(0)`: see [`Limits::limit`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub max_size: Option<u64>,
    /// Seconds since added.
    pub max_age: Option<u64>,
    /// Entries.
    pub max_num: Option<u64>,
    /// Seconds between outdatedness checks.
    pub check_after: Option<u64>,
    /// Versions kept per identity.
    pub keep_identified_versions: Option<u64>,
    /// Eviction order.
    pub eviction: Option<Eviction>,
}

impl Limits {
    /// A set, non-zero limit.
    pub fn limit(v: Option<u64>) -> Option<u64> {
        v.filter(|&n| n != 0)
    }

    /// `self`'s settings, falling back to `parent`'s where unset.
    pub fn or(self, parent: Limits) -> Limits {
        Limits {
            max_size: self.max_size.or(parent.max_size),
            max_age: self.max_age.or(parent.max_age),
            max_num: self.max_num.or(parent.max_num),
            check_after: self.check_after.or(parent.check_after),
            keep_identified_versions: self
                .keep_identified_versions
                .or(parent.keep_identified_versions),
            eviction: self.eviction.or(parent.eviction),
        }
    }
}

/// One `filters[]` item.
#[derive(Debug, Clone)]
pub struct Filter {
    /// The pattern as written.
    pub pattern: String,
    /// Compiled, case-insensitive.
    pub regex: regex::Regex,
    /// Matching entries are not cached.
    pub ignore: bool,
    /// This filter's own settings.
    pub limits: Limits,
}

/// The `files` or `oci_images` sub-policy.
#[derive(Debug, Clone)]
pub struct SubPolicy {
    /// `enabled: false` → nothing of this kind is cached.
    pub enabled: bool,
    /// Its own settings.
    pub limits: Limits,
    /// First match owns an entry.
    pub filters: Vec<Filter>,
}

impl Default for SubPolicy {
    fn default() -> Self {
        SubPolicy {
            enabled: true,
            limits: Limits::default(),
            filters: Vec::new(),
        }
    }
}

/// A whole `policy.yaml`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `enabled: false` → the cache is off: nothing read, nothing written.
    pub enabled: bool,
    /// Main settings.
    pub limits: Limits,
    /// `oci_images:`.
    pub oci_images: SubPolicy,
    /// `files:`.
    pub files: SubPolicy,
}

/// `max_size` when `policy.yaml` is absent: 10 GiB (docs/spec.md §8).
pub const DEFAULT_MAX_SIZE: u64 = 10 << 30;

impl Default for Policy {
    /// The policy of a cache without `policy.yaml`.
    fn default() -> Self {
        Policy {
            enabled: true,
            limits: Limits {
                max_size: Some(DEFAULT_MAX_SIZE),
                eviction: Some(Eviction::Lru),
                ..Limits::default()
            },
            oci_images: SubPolicy::default(),
            files: SubPolicy::default(),
        }
    }
}

/// A level of the policy: what owns an entry, or applies a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// The main policy.
    Main,
    /// `files` / `oci_images`.
    Sub(EntryKind),
    /// `files.filters[i]` / `oci_images.filters[i]`.
    Filter(EntryKind, usize),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sub = |k: &EntryKind| match k {
            EntryKind::File => "files",
            EntryKind::Image => "oci_images",
        };
        match self {
            Scope::Main => f.write_str("main policy"),
            Scope::Sub(k) => f.write_str(sub(k)),
            Scope::Filter(k, i) => write!(f, "{}.filters[{i}]", sub(k)),
        }
    }
}

/// Why a key is not cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCached {
    /// Its sub-policy says `enabled: false`.
    SubPolicyDisabled(EntryKind),
    /// A filter with `ignore: true` owns it.
    Ignored(Scope),
}

impl std::fmt::Display for NotCached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotCached::SubPolicyDisabled(k) => write!(f, "{} is disabled", Scope::Sub(*k)),
            NotCached::Ignored(s) => write!(f, "ignored by {s}"),
        }
    }
}

/// The policy that applies to one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The most specific level that owns the entry.
    pub owner: Scope,
    /// The levels whose count/size limits include the entry, most specific
    /// first (filter?, sub-policy, main).
    pub scopes: Vec<Scope>,
    /// Per-entry settings, most specific first.
    pub limits: Limits,
    /// The smallest `max_size` of its scopes: a larger payload is not cached.
    pub max_entry_size: Option<u64>,
}

impl Effective {
    /// Whether a payload of `size` bytes may be cached at all.
    pub fn admits(&self, size: u64) -> bool {
        self.max_entry_size.is_none_or(|m| size <= m)
    }

    /// Whether an entry last checked at `checked` is due for an outdatedness
    /// check at `now` (unix seconds). No `check_after` anywhere: always.
    pub fn is_due(&self, checked: u64, now: u64) -> bool {
        match self.limits.check_after {
            None => true,
            Some(after) => now.saturating_sub(checked) >= after,
        }
    }
}

/// What the policy says about a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Don't cache it (and evict any entry of it).
    NotCached(NotCached),
    /// Cache it under this policy.
    Cached(Effective),
}

impl Policy {
    /// Read `<dir>/policy.yaml`; absent → [`Policy::default`].
    pub fn load(dir: &Path) -> Result<Policy, CacheError> {
        let path = dir.join("policy.yaml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Policy::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
            // `dir` is a regular file, say: no policy there either; opening
            // the cache will report the real problem when it creates dirs.
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(Policy::default()),
            Err(e) => Err(CacheError::io(&path, "reading")(e)),
        }
    }

    /// Parse the text of a `policy.yaml` named `path` (for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Policy, CacheError> {
        let err = |message: String| CacheError::Policy {
            path: path.to_path_buf(),
            message,
        };
        // Before the YAML parser sees it (quadratic in depth; aliases).
        crate::config::check_yaml_bounds(text).map_err(|e| err(e.to_string()))?;
        let raw: RawMain = if text.trim().is_empty() {
            RawMain::default()
        } else {
            serde_norway::from_str::<Option<RawMain>>(text)
                .map_err(|e| err(e.to_string()))?
                .unwrap_or_default()
        };
        let at = |segs: &[Seg<'_>]| {
            let name = key_path(segs);
            match line_of(text, segs) {
                Some(line) => format!("{name} (line {line})"),
                None => name,
            }
        };
        let main = raw.limits();
        let mut policy = Policy {
            enabled: raw.enabled.unwrap_or(true),
            limits: main,
            oci_images: SubPolicy::default(),
            files: SubPolicy::default(),
        };
        for (name, raw_sub) in [("oci_images", raw.oci_images), ("files", raw.files)] {
            let Some(raw_sub) = raw_sub else { continue };
            let sub_limits = raw_sub.limits();
            check_within(&sub_limits, &main, &[Seg::Key(name)], "the main policy's")
                .map_err(|(segs, m)| err(format!("{}: {m}", at(&segs))))?;
            let inherited = sub_limits.or(main);
            let mut filters = Vec::new();
            for (i, f) in raw_sub.filters.unwrap_or_default().into_iter().enumerate() {
                let segs = [Seg::Key(name), Seg::Key("filters"), Seg::Index(i)];
                let limits = f.limits();
                check_within(&limits, &inherited, &segs, &format!("{name}'s"))
                    .map_err(|(segs, m)| err(format!("{}: {m}", at(&segs))))?;
                let regex = regex::RegexBuilder::new(&f.pattern)
                    .case_insensitive(true)
                    .build()
                    .map_err(|e| {
                        let mut p = segs.to_vec();
                        p.push(Seg::Key("pattern"));
                        err(format!("{}: invalid regex {:?}: {e}", at(&p), f.pattern))
                    })?;
                filters.push(Filter {
                    pattern: f.pattern,
                    regex,
                    ignore: f.ignore.unwrap_or(false),
                    limits,
                });
            }
            let sub = SubPolicy {
                enabled: raw_sub.enabled.unwrap_or(true),
                limits: sub_limits,
                filters,
            };
            if name == "files" {
                policy.files = sub;
            } else {
                policy.oci_images = sub;
            }
        }
        Ok(policy)
    }

    /// The sub-policy for a kind.
    pub fn sub(&self, kind: EntryKind) -> &SubPolicy {
        match kind {
            EntryKind::File => &self.files,
            EntryKind::Image => &self.oci_images,
        }
    }

    /// The settings a scope gives itself (not inherited).
    pub fn own_limits(&self, scope: Scope) -> Limits {
        match scope {
            Scope::Main => self.limits,
            Scope::Sub(k) => self.sub(k).limits,
            Scope::Filter(k, i) => self
                .sub(k)
                .filters
                .get(i)
                .map(|f| f.limits)
                .unwrap_or_default(),
        }
    }

    /// The eviction order of a scope: its own, else its parents', else `lru`.
    pub fn eviction_of(&self, scope: Scope) -> Eviction {
        let chain = match scope {
            Scope::Main => vec![Scope::Main],
            Scope::Sub(k) => vec![Scope::Sub(k), Scope::Main],
            Scope::Filter(k, i) => vec![Scope::Filter(k, i), Scope::Sub(k), Scope::Main],
        };
        chain
            .into_iter()
            .find_map(|s| self.own_limits(s).eviction)
            .unwrap_or(Eviction::Lru)
    }

    /// What the policy says about a key.
    pub fn decide(&self, key: &Key) -> Decision {
        let kind = key.kind();
        let sub = self.sub(kind);
        if !sub.enabled {
            return Decision::NotCached(NotCached::SubPolicyDisabled(kind));
        }
        let mut scopes = vec![Scope::Sub(kind), Scope::Main];
        if let Some(i) = sub
            .filters
            .iter()
            .position(|f| f.regex.is_match(key.as_str()))
        {
            if sub.filters[i].ignore {
                return Decision::NotCached(NotCached::Ignored(Scope::Filter(kind, i)));
            }
            scopes.insert(0, Scope::Filter(kind, i));
        }
        let limits = scopes
            .iter()
            .fold(Limits::default(), |acc, s| acc.or(self.own_limits(*s)));
        let max_entry_size = scopes
            .iter()
            .filter_map(|s| Limits::limit(self.own_limits(*s).max_size))
            .min();
        Decision::Cached(Effective {
            owner: scopes[0],
            scopes,
            limits,
            max_entry_size,
        })
    }
}

fn key_path(segs: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// A child's explicit limits may not exceed the parent's effective ones
/// (0 = unlimited exceeds any limit).
fn check_within<'a>(
    child: &Limits,
    parent: &Limits,
    at: &[Seg<'a>],
    parent_name: &str,
) -> Result<(), (Vec<Seg<'a>>, String)> {
    let pairs: [(&'static str, Option<u64>, Option<u64>); 4] = [
        ("max_size", child.max_size, parent.max_size),
        ("max_age", child.max_age, parent.max_age),
        ("max_num", child.max_num, parent.max_num),
        (
            "keep_identified_versions",
            child.keep_identified_versions,
            parent.keep_identified_versions,
        ),
    ];
    for (name, c, p) in pairs {
        let (Some(c), Some(p)) = (c, Limits::limit(p)) else {
            continue;
        };
        if c == 0 || c > p {
            let mut segs = at.to_vec();
            segs.push(Seg::Key(name));
            let shown = if c == 0 {
                "0 (unlimited)".to_string()
            } else {
                c.to_string()
            };
            return Err((segs, format!("{shown} exceeds {parent_name} {name} ({p})")));
        }
    }
    Ok(())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMain {
    enabled: Option<bool>,
    max_size: Option<Size>,
    max_age: Option<Duration>,
    max_num: Option<u64>,
    check_after: Option<Duration>,
    keep_identified_versions: Option<u64>,
    eviction: Option<Eviction>,
    oci_images: Option<RawSub>,
    files: Option<RawSub>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSub {
    enabled: Option<bool>,
    max_size: Option<Size>,
    max_age: Option<Duration>,
    max_num: Option<u64>,
    check_after: Option<Duration>,
    keep_identified_versions: Option<u64>,
    eviction: Option<Eviction>,
    filters: Option<Vec<RawFilter>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFilter {
    pattern: String,
    ignore: Option<bool>,
    max_size: Option<Size>,
    max_age: Option<Duration>,
    max_num: Option<u64>,
    check_after: Option<Duration>,
    keep_identified_versions: Option<u64>,
    eviction: Option<Eviction>,
}

macro_rules! raw_limits {
    ($t:ty) => {
        impl $t {
            fn limits(&self) -> Limits {
                Limits {
                    max_size: self.max_size.map(|s| s.0),
                    max_age: self.max_age.map(|d| d.0),
                    max_num: self.max_num,
                    check_after: self.check_after.map(|d| d.0),
                    keep_identified_versions: self.keep_identified_versions,
                    eviction: self.eviction,
                }
            }
        }
    };
}
raw_limits!(RawMain);
raw_limits!(RawSub);
raw_limits!(RawFilter);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, CacheError> {
        Policy::parse(text, Path::new("/c/policy.yaml"))
    }

    fn parse_err(text: &str) -> String {
        parse(text).expect_err("must be rejected").to_string()
    }

    fn file(url: &str) -> Key {
        Key::file(url).expect("http url")
    }

    fn image(name: &str, tag: &str) -> Key {
        Key::image(
            "ghcr.io",
            "offspot",
            name,
            Some(tag),
            None,
            "linux/arm64/v8",
        )
    }

    #[test]
    fn absent_file_gives_the_defaults_and_present_file_does_not() -> Result<(), CacheError> {
        let dir = tempfile::tempdir().map_err(CacheError::io("tmp", "creating"))?;
        let p = Policy::load(dir.path())?;
        assert!(p.enabled);
        assert_eq!(p.limits.max_size, Some(10 * 1024 * 1024 * 1024));
        assert_eq!(p.limits.eviction, Some(Eviction::Lru));
        let p = parse("")?;
        assert!(p.enabled);
        assert_eq!(p.limits, Limits::default());
        let p = parse("max_num: 3\n")?;
        assert_eq!(p.limits.max_size, None);
        assert_eq!(p.eviction_of(Scope::Main), Eviction::Lru);
        assert!(!parse("enabled: false\n")?.enabled);
        Ok(())
    }

    #[test]
    fn full_schema_parses_with_config_units() -> Result<(), CacheError> {
        let p = parse(
            "enabled: true\nmax_size: 10G\nmax_age: 30d\nmax_num: 100\ncheck_after: 12h\n\
             keep_identified_versions: 2\neviction: oldest\n\
             oci_images:\n  enabled: true\n  max_size: 2GiB\n  eviction: largest\n\
             files:\n  max_age: 1w\n  filters:\n    - pattern: wikipedia\n      ignore: false\n      \
             max_size: 500M\n      check_after: 3600\n      keep_identified_versions: 1\n      eviction: smallest\n    \
             - pattern: '\\.tmp$'\n      ignore: true\n",
        )?;
        assert_eq!(p.limits.max_size, Some(10_000_000_000));
        assert_eq!(p.limits.max_age, Some(30 * 86_400));
        assert_eq!(p.limits.check_after, Some(12 * 3600));
        assert_eq!(p.oci_images.limits.max_size, Some(2 << 30));
        assert_eq!(p.files.limits.max_age, Some(7 * 86_400));
        let f = &p.files.filters[0];
        assert_eq!(f.limits.max_size, Some(500_000_000));
        assert_eq!(f.limits.check_after, Some(3600));
        assert!(p.files.filters[1].ignore);
        assert_eq!(
            p.eviction_of(Scope::Filter(EntryKind::File, 0)),
            Eviction::Smallest
        );
        assert_eq!(
            p.eviction_of(Scope::Filter(EntryKind::File, 1)),
            Eviction::Oldest
        );
        assert_eq!(
            p.eviction_of(Scope::Sub(EntryKind::Image)),
            Eviction::Largest
        );
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_values_name_key_and_line() {
        let e = parse_err("max_size: 1G\nmax_sise: 2G\n");
        assert!(e.contains("max_sise") && e.contains("line 2"), "{e}");
        let e = parse_err("files:\n  filters:\n    - pattern: x\n      ignored: true\n");
        assert!(e.contains("ignored") && e.contains("line 4"), "{e}");
        let e = parse_err("oci_images:\n  max_size: 12X\n");
        assert!(
            e.contains("max_size") && e.contains("12X") && e.contains("line 2"),
            "{e}"
        );
        let e = parse_err("eviction: random\n");
        assert!(e.contains("random") && e.contains("line 1"), "{e}");
        let e = parse_err("max_age: 1.5d\n");
        assert!(e.contains("max_age") && e.contains("line 1"), "{e}");
        let e = parse_err("files:\n  filters:\n    - pattern: '(unclosed'\n");
        assert!(e.contains("files.filters[0].pattern (line 3)"), "{e}");
        assert!(e.contains("/c/policy.yaml"), "{e}");
        assert!(parse("max_num: -1\n").is_err());
    }

    #[test]
    fn limits_may_not_exceed_the_parent() {
        let e = parse_err("max_size: 1G\nfiles:\n  max_size: 2G\n");
        assert!(
            e.contains("files.max_size (line 3)") && e.contains("exceeds"),
            "{e}"
        );
        let e = parse_err("max_num: 5\noci_images:\n  max_num: 0\n");
        assert!(e.contains("oci_images.max_num (line 3)"), "{e}");
        let e = parse_err(
            "files:\n  max_age: 1d\n  filters:\n  - pattern: a\n  - pattern: b\n    max_age: 2d\n",
        );
        assert!(e.contains("files.filters[1].max_age (line 6)"), "{e}");
        // A filter is bounded by the main policy through its sub-policy.
        let e = parse_err("keep_identified_versions: 2\nfiles:\n  filters:\n    - pattern: a\n      keep_identified_versions: 3\n");
        assert!(
            e.contains("files.filters[0].keep_identified_versions (line 5)"),
            "{e}"
        );
        // Equal or smaller is fine; an unlimited parent allows anything.
        assert!(parse("max_size: 2G\nfiles:\n  max_size: 2G\n  filters:\n    - pattern: a\n      max_size: 1G\n").is_ok());
        assert!(parse("files:\n  max_size: 0\n").is_ok());
    }

    #[test]
    fn decisions_follow_sub_policies_and_first_matching_filter() -> Result<(), CacheError> {
        let p = parse(
            "check_after: 1d\nfiles:\n  check_after: 2h\n  filters:\n    \
             - pattern: WIKIPEDIA_EN\n      check_after: 1h\n    \
             - pattern: wikipedia\n      ignore: true\n\
             oci_images:\n  enabled: false\n",
        )?;
        let en = file("https://m.org/zim/wikipedia_en_all_2024-01.zim");
        let Decision::Cached(eff) = p.decide(&en) else {
            panic!("cached")
        };
        assert_eq!(eff.owner, Scope::Filter(EntryKind::File, 0));
        // The filter's check_after wins over the sub-policy's and the main one's.
        assert_eq!(eff.limits.check_after, Some(3600));
        assert!(!eff.is_due(1000, 1000 + 3599));
        assert!(eff.is_due(1000, 1000 + 3600));
        assert_eq!(
            p.decide(&file("https://m.org/zim/wikipedia_fr_all_2024-01.zim")),
            Decision::NotCached(NotCached::Ignored(Scope::Filter(EntryKind::File, 1)))
        );
        let other = file("https://m.org/other.bin");
        let Decision::Cached(eff) = p.decide(&other) else {
            panic!("cached")
        };
        assert_eq!(eff.owner, Scope::Sub(EntryKind::File));
        assert_eq!(eff.limits.check_after, Some(7200));
        // enabled: false on a sub-policy is honoured.
        assert_eq!(
            p.decide(&image("kiwix-serve", "3.8.1")),
            Decision::NotCached(NotCached::SubPolicyDisabled(EntryKind::Image))
        );
        // No check_after anywhere: always due.
        let Decision::Cached(eff) = parse("")?.decide(&other) else {
            panic!("cached")
        };
        assert!(eff.is_due(5, 5));
        Ok(())
    }

    #[test]
    fn patterns_are_searched_in_the_key_text() -> Result<(), CacheError> {
        let p = parse("oci_images:\n  filters:\n    - pattern: 'offspot/kiwix-serve:3\\.'\n      ignore: true\nfiles:\n  filters:\n    - pattern: ^files/https/\n      ignore: true\n")?;
        assert!(matches!(
            p.decide(&image("kiwix-serve", "3.8.1")),
            Decision::NotCached(_)
        ));
        assert!(matches!(
            p.decide(&image("kiwix-serve", "4.0")),
            Decision::Cached(_)
        ));
        assert!(matches!(
            p.decide(&file("https://h/x")),
            Decision::NotCached(_)
        ));
        assert!(matches!(p.decide(&file("http://h/x")), Decision::Cached(_)));
        Ok(())
    }

    #[test]
    fn max_entry_size_is_the_tightest_scope() -> Result<(), CacheError> {
        let p = parse("max_size: 10G\nfiles:\n  max_size: 5G\n  filters:\n    - pattern: big\n      max_size: 1G\n")?;
        let Decision::Cached(eff) = p.decide(&file("http://h/big")) else {
            panic!("cached")
        };
        assert!(eff.admits(1_000_000_000));
        assert!(!eff.admits(1_000_000_001));
        Ok(())
    }
}
