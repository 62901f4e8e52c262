//! Step 2: planning, before anything is written. The download cache is
//! opened, the base located and inspected, every item probed or measured
//! and sized (`crate::plan`). What comes out ([`Planned`]) is all the
//! writing steps need, the cache's pinned hits included, as data they
//! consume.

use std::path::Path;

use super::error::BuildError;
use super::BuildOptions;
use crate::cache::Cache;
use crate::config::ImageConfig;
use crate::fetch::Net;
use crate::plan::{self, BaseInfo, CacheUse, Plan};
use crate::progress::Reporter;
use crate::trust::Lock;

/// What planning decided.
#[derive(Debug)]
pub struct Planned {
    /// The base image as found.
    pub base: BaseInfo,
    /// The download cache's part in a remote base; step 3 consumes it.
    pub base_cache: Option<CacheUse>,
    /// The items and sizes.
    pub plan: Plan,
}

/// Locate and inspect the base, then plan the config's items on it.
/// Warnings go to `reporter`. A remote archive's pre-scan is kept in
/// `build_dir` for the build (None: `--check`, which downloads nothing).
pub fn plan(
    opts: &BuildOptions,
    config: &ImageConfig,
    net: &Net,
    (cache, build_dir): (Option<&Cache>, Option<&Path>),
    reporter: &dyn Reporter,
    locked: Option<&Lock>,
) -> Result<Planned, BuildError> {
    let record = opts.trust.records();
    let pin = locked.and_then(|l| l.base.sha256.as_deref());
    let mut spec = plan::locate_base(config, &opts.base_url, net, record, pin)?;
    let mut base_cache = plan::Planner::new(cache);
    if let Some(l) = locked {
        base_cache.pin_to(l);
    }
    plan::cache_base(&mut spec, &mut base_cache, net);
    for w in &base_cache.warnings {
        reporter.warn(w);
    }
    let base = plan::inspect_base(&spec, net)?;
    let plan_opts = plan::PlanOptions {
        max_size: opts.max_size,
        cache,
        check: opts.check,
        spool_dir: build_dir,
        record,
        locked,
    };
    let the_plan = plan::make_plan(config, &base, net, &plan_opts)?;
    for w in &the_plan.warnings {
        reporter.warn(w);
    }
    Ok(Planned {
        base,
        base_cache: spec.cache,
        plan: the_plan,
    })
}

/// Tell the reporter every item the build will write, the base first.
pub fn announce(planned: &Planned, reporter: &dyn Reporter) {
    let mut items = vec![(planned.base.location.name(), planned.base.size)];
    items.extend(planned.plan.items.iter().map(|i| (i.name(), i.size)));
    reporter.items_planned(&items);
}

/// The download cache of `--cache-dir`: read-only for `--check` (nothing
/// is created or changed). A bad `policy.yaml` is bad input (exit 3); a
/// cache that can't be used otherwise is a warning, and the build goes on
/// without it. `None` also when the policy disables it.
pub fn open_cache(
    opts: &BuildOptions,
    reporter: &dyn Reporter,
) -> Result<Option<Cache>, BuildError> {
    let Some(dir) = &opts.cache_dir else {
        return Ok(None);
    };
    let opened = if opts.check {
        Cache::open_read_only(dir)
    } else {
        let options = crate::cache::CacheOptions {
            parallel: opts.concurrency.max(1),
            ..crate::cache::CacheOptions::default()
        };
        Cache::open_with(dir, options)
    };
    match opened {
        Ok(c) => Ok(c),
        Err(e) if e.is_bad_policy() => Err(BuildError::CachePolicy(e)),
        Err(e) => {
            reporter.warn(&format!(
                "download cache {}: {e}; building without it",
                dir.display()
            ));
            Ok(None)
        }
    }
}

/// `--check`: what eviction would remove now.
pub fn report_eviction(cache: &Cache, reporter: &dyn Reporter) {
    match cache.plan_eviction(crate::cache::unix_now()) {
        Ok(planned) => {
            for (entry, why) in planned {
                reporter.warn(&format!(
                    "download cache: eviction would remove {} ({why})",
                    entry.source
                ));
            }
        }
        Err(e) => reporter.warn(&format!("download cache: {e}")),
    }
}
