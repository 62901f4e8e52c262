//! `flash --cache-dir DIR` with an http(s) SOURCE: the build's download
//! cache (docs/spec.md §8), used as a build uses it for a base image. A
//! hit (checked against the server once `check_after` has passed, as in
//! a build) is flashed from its blob, verified whole against its entry
//! first, with no download; a miss the policy caches is downloaded once,
//! into the cards and the cache in the same pass, and published only
//! when the whole download arrived. A cache that can't be used is a
//! warning; a bad `policy.yaml` is exit 3.

use std::fs::File;
use std::path::Path;

use super::error::FlashError;
use crate::cache::{Cache, FillMeta, Filler, Validators};
use crate::fetch::Net;
use crate::pipeline::cache::{claim, BuildCache, ClaimSpec, Claimed};
use crate::plan::cached::{validators, Lookup, Planner};
use crate::progress::Reporter;

/// What the cache does for the source.
// One per run, moved once: the size gap between variants costs nothing
// worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Side {
    /// Nothing: download it.
    Plain,
    /// Flash from this blob, already verified against its entry.
    Hit(File),
    /// Download it and fill this entry on the way.
    Fill(Filler, Validators),
}

/// Open the cache in `dir`: `None` when its policy disables it, or (with
/// a warning) when it can't be used.
pub fn open(dir: &Path, reporter: &dyn Reporter) -> Result<Option<Cache>, FlashError> {
    match Cache::open(dir) {
        Ok(c) => Ok(c),
        Err(e) if e.is_bad_policy() => Err(FlashError::Usage(format!(
            "--cache-dir {}: {e}",
            dir.display()
        ))),
        Err(e) => {
            reporter.warn(&format!(
                "download cache {}: {e}; flashing without it",
                dir.display()
            ));
            Ok(None)
        }
    }
}

/// What the cache has for `url`, and the claim of a miss.
pub fn prepare(cache: &Cache, url: &str, net: &Net, reporter: &dyn Reporter) -> Side {
    let warn = |e: &dyn std::fmt::Display| reporter.warn(&format!("download cache: {e}"));
    let mut planner = Planner::new(Some(cache));
    let looked = planner.lookup(url, net);
    for w in &planner.warnings {
        reporter.warn(w);
    }
    let miss = match looked {
        Lookup::No => return Side::Plain,
        Lookup::Hit(hit) => {
            return match hit.verified_file() {
                Ok((_, f)) => Side::Hit(f),
                Err(e) => {
                    warn(&e);
                    Side::Plain
                }
            }
        }
        Lookup::Miss(m) => m,
    };
    let remote = match miss.remote {
        Some(r) => r,
        None => match net.block_on(net.http.validators(url, &[])) {
            Ok(r) => r,
            Err(e) => {
                warn(&e);
                return Side::Plain;
            }
        },
    };
    let v = validators(&remote);
    let Some(size) = remote.size else {
        return Side::Plain;
    };
    if planner
        .fill(miss.key.clone(), v.clone(), miss.replaces.clone(), size)
        .is_none()
    {
        // The policy does not admit this size.
        return Side::Plain;
    }
    let spec = ClaimSpec {
        key: miss.key,
        validators: v,
        replaces: miss.replaces,
    };
    match claim(cache, spec) {
        Claimed::Hit(hit) => match hit.verified_file() {
            Ok((_, f)) => Side::Hit(f),
            Err(e) => {
                warn(&e);
                Side::Plain
            }
        },
        Claimed::Fill(f, v) => Side::Fill(f, v),
        Claimed::Failed(e) => {
            warn(&e);
            Side::Plain
        }
    }
}

/// After the run: publish a complete fill (`end` bytes, no error on the
/// cache's side), apply the policy, make it durable.
pub fn settle(
    cache: &Cache,
    fill: Option<(Filler, Validators)>,
    end: Option<u64>,
    url: &str,
    reporter: &dyn Reporter,
) {
    let build = BuildCache::new(cache, reporter);
    if let (Some((filler, v)), Some(end)) = (fill, end) {
        let meta = FillMeta {
            validators: v,
            source: url.to_string(),
        };
        if let Err(e) = filler.commit(end, meta) {
            build.warn(&e);
        }
    }
    build.evict();
}
