//! What the download cache does for each cacheable item, decided at
//! planning: copy from a pinned blob (a hit), or download and fill the
//! cache on the way (a miss the policy caches). A hit needs no network
//! unless `check_after` has passed; then the remote's validators decide
//! whether it is outdated, and a failed check keeps it.

use std::collections::{HashMap, HashSet};

use crate::cache::{
    unix_now, Cache, Claim, Decision, FillMeta, FillSink, Freshness, Hit, Key, Validators,
};
use crate::fetch::{Net, RemoteValidators};
use crate::io::ChunkSink;

use super::spool::Spool;

/// The cache's part in one item.
// One per item, moved a handful of times: the size gap (a hit is a pointer,
// a fill carries its key and validators) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CacheUse {
    /// Copy from this pinned blob (hashed while it is copied; a corrupt one
    /// falls back to the network). The plan owns it; the writing step that
    /// copies the item consumes it.
    Hit(Hit),
    /// Download, and fill the cache with the same bytes on the way.
    Fill {
        /// The entry's key.
        key: Key,
        /// What the remote said when planned, stored with the entry.
        validators: Validators,
        /// The sha256 of the outdated entry this fill replaces (an entry
        /// still pointing at it is no hit).
        replaces: Option<String>,
    },
}

impl CacheUse {
    /// For the plan's listing.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Hit(_) => "cache hit",
            Self::Fill { .. } => "miss, will be cached",
        }
    }
}

/// The cache as planning sees it: keys already used by this plan (one
/// item per key fills it; a second would wait for the first's lock) and
/// the warnings.
#[derive(Debug, Default)]
pub struct Planner<'a> {
    cache: Option<&'a Cache>,
    /// Remote archives may be pre-scanned (downloaded once at planning);
    /// false for `--check`, which downloads nothing.
    pub prescan: bool,
    /// Where a pre-scan without the cache keeps the archive for the
    /// build (the build directory; `None`: nowhere, it is downloaded
    /// again).
    pub spool_dir: Option<std::path::PathBuf>,
    seen: HashSet<String>,
    now: u64,
    /// Remarks for the plan's warnings.
    pub warnings: Vec<String>,
    /// `--locked`: the sha256 each URL must have. An entry with it is a
    /// hit whatever the remote's validators say now (no check); an entry
    /// with other bytes is replaced.
    pub pins: HashMap<String, String>,
    /// `--locked`: the lock the items are pinned to.
    pub locked: Option<&'a crate::trust::Lock>,
    /// A recorded build (`--lock`, `--sbom`, `--provenance`,
    /// `--locked`): every source's sha256 is learnt while it is written.
    pub record: bool,
}

/// The check of a source pinned to `sha256` (learning it, so recorded).
pub fn pinned(sha256: String) -> crate::io::Check {
    crate::io::Check::declared(Some((crate::config::HashAlgo::Sha256, sha256))).recording(true)
}

/// What the cache knows of a URL at planning.
#[derive(Debug)]
pub enum Lookup {
    /// Not cached (no cache, policy, `file://`, or a key already used).
    No,
    /// Use this entry: its size is the item's.
    Hit(Hit),
    /// Download (a miss, or an outdated entry) and fill the cache.
    Miss(Miss),
}

/// A miss: the key, the remote's validators when a check already asked for
/// them, and the sha256 of the outdated entry it replaces, if any.
#[derive(Debug)]
pub struct Miss {
    /// The key.
    pub key: Key,
    /// What the remote said, when asked.
    pub remote: Option<RemoteValidators>,
    /// The outdated entry's sha256.
    pub replaces: Option<String>,
}

impl<'a> Planner<'a> {
    /// Plan with `cache` (None: no cache).
    pub fn new(cache: Option<&'a Cache>) -> Self {
        Self {
            cache,
            prescan: true,
            spool_dir: None,
            seen: HashSet::new(),
            now: unix_now(),
            warnings: Vec::new(),
            pins: HashMap::new(),
            locked: None,
            record: false,
        }
    }

    /// `--locked`: pin every URL the lock gives a sha256 to it
    /// ([`Planner::pins`]).
    pub fn pin_to(&mut self, lock: &'a crate::trust::Lock) {
        let inputs = std::iter::once(&lock.base).chain(&lock.items);
        for i in inputs {
            if let (Some(url), Some(sha)) = (&i.url, &i.sha256) {
                self.pins.insert(url.clone(), sha.clone());
            }
        }
        self.locked = Some(lock);
    }

    /// The check of the source of config key `key` (`files[2].to`):
    /// `declared` learning the sha256 in a recorded build; with
    /// `--locked`, the lock's sha256 instead (the lock was made by a
    /// build that checked `declared`, and the config is the same).
    /// `declared` is only resolved (a `kind: url` checksum fetched) when
    /// the lock has no sha256 for it.
    pub fn check_for<E>(
        &self,
        key: &str,
        declared: impl FnOnce() -> Result<crate::io::Check, E>,
    ) -> Result<crate::io::Check, E> {
        let locked = self
            .locked
            .and_then(|l| l.item(key))
            .and_then(|i| i.sha256.clone());
        Ok(match locked {
            Some(sha) => pinned(sha),
            None => declared()?.recording(self.record),
        })
    }

    /// Whether a cache is in use.
    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// What the cache has for `key` (not checked for outdatedness):
    /// `Lookup::Miss` carries no validators.
    pub fn find(&mut self, key: Key, what: &str) -> Lookup {
        let Some(cache) = self.cache else {
            return Lookup::No;
        };
        if !matches!(cache.policy_for(&key), Decision::Cached(_))
            || !self.seen.insert(key.as_str().to_string())
        {
            return Lookup::No;
        }
        match cache.lookup(&key, self.now) {
            Ok(Some(hit)) => Lookup::Hit(hit),
            Ok(None) => Lookup::Miss(Miss {
                key,
                remote: None,
                replaces: None,
            }),
            Err(e) => {
                self.warnings
                    .push(format!("download cache: {e}; {what} is downloaded"));
                Lookup::No
            }
        }
    }

    /// Record that the entry of `key` was checked now and found current.
    pub fn checked(&self, key: &Key, remote: &Validators) {
        if let Some(c) = self.cache {
            let _ = c.mark_checked(key, self.now, Some(remote));
        }
    }

    /// Note that a check of `what` failed (the cached copy is used).
    pub fn check_failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        self.warnings.push(format!(
            "download cache: could not check {what} for a newer version ({e}); using the cached copy"
        ));
    }

    /// Look `url` up; a hit due for a check is compared with the remote.
    pub fn lookup(&mut self, url: &str, net: &Net) -> Lookup {
        let Some(key) = Key::file(url) else {
            return Lookup::No;
        };
        let hit = match self.find(key, url) {
            Lookup::Hit(hit) => hit,
            other => return other,
        };
        if let Some(pin) = self.pins.get(url) {
            return if hit.entry().sha256.eq_ignore_ascii_case(pin) {
                Lookup::Hit(hit)
            } else {
                Lookup::Miss(Miss {
                    key: hit.key().clone(),
                    remote: None,
                    replaces: Some(hit.entry().sha256.clone()),
                })
            };
        }
        if !hit.is_due_for_check() {
            return Lookup::Hit(hit);
        }
        let conditional = hit.validators().conditional_headers();
        match net.block_on(net.http.validators(url, &conditional)) {
            // The server says it is the same payload.
            Ok(remote) if remote.not_modified => {
                let mut now_v = hit.validators().clone();
                if remote.digest.is_some() {
                    now_v.digest = remote.digest;
                }
                self.checked(hit.key(), &now_v);
                Lookup::Hit(hit)
            }
            Err(e) => {
                // A failed check never evicts.
                self.check_failed(url, &e);
                Lookup::Hit(hit)
            }
            Ok(remote) => {
                let now_v = validators(&remote);
                if hit.validators().compare(&now_v) == Freshness::Outdated {
                    Lookup::Miss(Miss {
                        key: hit.key().clone(),
                        remote: Some(remote),
                        replaces: Some(hit.entry().sha256.clone()),
                    })
                } else {
                    self.checked(hit.key(), &now_v);
                    Lookup::Hit(hit)
                }
            }
        }
    }

    /// The cache's part in an item whose source was a miss (or outdated)
    /// and which is `size` bytes, when the policy admits that size.
    pub fn fill(
        &self,
        key: Key,
        validators: Validators,
        replaces: Option<String>,
        size: u64,
    ) -> Option<CacheUse> {
        let cache = self.cache?;
        match cache.policy_for(&key) {
            Decision::Cached(eff) if eff.admits(size) => Some(CacheUse::Fill {
                key,
                validators,
                replaces,
            }),
            _ => None,
        }
    }

    /// Where a pre-scan of an archive of `size` bytes keeps it for the
    /// build when the cache does not ([`Spool`]).
    pub fn spool(&self, size: Option<u64>) -> Spool {
        match (&self.spool_dir, size) {
            (Some(dir), Some(size)) => Spool::new(dir, size),
            _ => Spool::none(),
        }
    }

    /// Run `download` (a pre-scan of a remote archive) with the cache's
    /// filler of `use_` as its tap, and publish what it downloaded when it
    /// succeeds: the item is then a hit (the build reads the blob, no
    /// second download). Planning holds no key while it waits for this one.
    /// When the key can't be claimed, the download goes to `spare` instead.
    pub fn prescan_filling<T, E>(
        &mut self,
        use_: CacheUse,
        url: &str,
        spare: &mut dyn ChunkSink,
        download: impl FnOnce(&mut dyn ChunkSink) -> Result<T, E>,
    ) -> (Result<T, E>, Option<CacheUse>) {
        let (
            Some(cache),
            CacheUse::Fill {
                key,
                validators,
                replaces,
            },
        ) = (self.cache, &use_)
        else {
            return (download(spare), Some(use_));
        };
        let claimed = match replaces {
            Some(old) => cache.claim_replacing(key, old, self.now),
            None => cache.claim(key, self.now),
        };
        let filler = match claimed {
            Ok(Claim::Fill(f)) => f,
            // Filled by another build meanwhile: use it from now on.
            Ok(Claim::Ready(hit)) => {
                return (download(&mut FillSink::new(None)), Some(Self::hit(hit)))
            }
            Err(e) => {
                self.warnings
                    .push(format!("download cache: {e}; {url} is downloaded"));
                return (download(spare), None);
            }
        };
        let mut tap = FillSink::new(Some(&filler));
        let result = download(&mut tap);
        // An empty payload means `download` fetched nothing (it may decide
        // not to): nothing to publish.
        if result.is_err() || tap.end == 0 {
            return (result, None);
        }
        if let Some(e) = tap.failed {
            self.warnings.push(format!("download cache: {e}"));
            return (result, None);
        }
        let meta = FillMeta {
            validators: validators.clone(),
            source: url.to_string(),
        };
        let end = tap.end;
        if let Err(e) = filler.commit(end, meta) {
            self.warnings.push(format!("download cache: {e}"));
            return (result, None);
        }
        match cache.lookup(key, self.now) {
            Ok(Some(hit)) => (result, Some(Self::hit(hit))),
            _ => (result, None),
        }
    }

    /// A hit as an item's cache use.
    pub fn hit(hit: Hit) -> CacheUse {
        CacheUse::Hit(hit)
    }
}

/// The cache's validators from the remote's.
pub fn validators(r: &RemoteValidators) -> Validators {
    Validators {
        digest: r.digest.clone(),
        etag: r.etag.clone(),
        last_modified: r.last_modified.clone(),
        content_length: r.size,
    }
}
