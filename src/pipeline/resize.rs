//! Step 3, its second half: the plan sized again, exactly, from the copied
//! base. This is the one part of planning that waits for a write, and why:
//!
//! Planning sizes the data partition from what the base's p3 carries over
//! (its entries, directories and blocks, `fs::ext4::OldSummary`). A plain
//! local base is read where it lies, at planning. A compressed (`.xz`)
//! base's p3 is the end of its xz stream: the stream's index gives the
//! uncompressed size, not p3's content, which only decoding the whole
//! stream reaches; a remote base's p3 would have to be downloaded. Reading
//! either twice (once to plan, once to copy) would double the base's cost,
//! so planning bounds the old p3 by its whole partition (`--check` shows
//! that bound), and once the copy is on disk this step reads p3 there and
//! sizes the same items again: nothing is probed or downloaded again.

use std::path::Path;

use super::error::BuildError;
use super::Ctx;
use crate::plan::{self, BaseInfo, BaseLocation, BaseSpec, Plan};

/// True when `base` could not be read at planning (see the module's doc).
pub fn needed(base: &BaseInfo) -> bool {
    base.xz || matches!(base.location, BaseLocation::Http(_))
}

/// `plan` sized on the copy of `base` that `copy` opens, when planning
/// could not read the base; else `plan` as it is.
pub fn exact(plan: Plan, base: &BaseInfo, copy: &Path, ctx: &Ctx<'_>) -> Result<Plan, BuildError> {
    if !needed(base) {
        return Ok(plan);
    }
    let copied = BaseSpec {
        location: BaseLocation::Local(copy.to_path_buf()),
        xz: false,
        checksum: crate::plan::Expected::default(),
        cache: None,
    };
    let copied = plan::inspect_base(&copied, ctx.net)?;
    Ok(plan::resize(plan, ctx.config, &copied, ctx.opts.max_size)?)
}
