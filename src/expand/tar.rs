//! Walk a tar stream (already decompressed) into a [`Target`], member by
//! member, enforcing the limits and path rules as each header arrives.

use std::io::Read;

use super::allowance::{Allowance, Allowed, HEADROOM};
use super::error::{ExpandError, MemberError};
use super::format::Format;
use super::limits::{Budget, Limits};
use super::member::{check_symlink, components, is_junk};
use super::target::Target;
use crate::fs::ext4::{InodeMeta, Timestamp};
use crate::io::decoder;

/// Expand a tar-family archive of `format` read from `r` (decoded here).
pub fn expand_tar_from(
    r: impl Read,
    format: Format,
    archive: &str,
    limits: &Limits,
    target: &mut dyn Target,
) -> Result<u64, ExpandError> {
    expand_tar(
        &mut decoder(format.compression(), r),
        archive,
        limits,
        target,
    )
}

/// Expand the tar stream `r` (named `archive` in errors) into `target`;
/// returns the file bytes written. Decoding stops at the end-of-archive
/// marker.
pub fn expand_tar(
    r: &mut dyn Read,
    archive: &str,
    limits: &Limits,
    target: &mut dyn Target,
) -> Result<u64, ExpandError> {
    let mut budget = Budget::new(limits);
    let allowance = Allowance::new(HEADROOM);
    let mut ar = ::tar::Archive::new(Allowed::new(r, allowance.clone()));
    // "With seek": padding and skipped data go through Allowed's
    // forward-only seek (no zeroed buffer per member).
    let entries = ar
        .entries_with_seek()
        .map_err(|e| ExpandError::archive(archive, format!("not a tar stream: {e}")))?;
    // Data every header declares, written or skipped: at most twice the
    // byte limit (files are held to it by the budget; this bounds what
    // junk and metadata members make us decode).
    let mut declared = 0u64;
    let declared_cap = limits.max_bytes.saturating_mul(2).saturating_add(HEADROOM);
    for entry in entries {
        let mut entry =
            entry.map_err(|e| ExpandError::archive(archive, format!("reading a header: {e}")))?;
        let size = entry.header().entry_size().map_err(|e| {
            ExpandError::archive(archive, format!("unreadable size in a header: {e}"))
        })?;
        // This member's data (in 512-byte blocks), then the next headers.
        allowance.set(
            size.div_ceil(512)
                .saturating_mul(512)
                .saturating_add(HEADROOM),
        );
        let raw = entry.path_bytes().into_owned();
        let member = String::from_utf8_lossy(&raw).into_owned();
        let wrap = |error: MemberError| ExpandError::Member {
            archive: archive.to_string(),
            member: member.clone(),
            error,
        };
        budget.entry().map_err(wrap)?;
        one(&mut entry, &raw, &mut budget, target).map_err(wrap)?;
        // Checked after the member (an oversized file is refused by name
        // first) and before its unread data would be skipped.
        declared = declared.saturating_add(size);
        if declared > declared_cap {
            return Err(ExpandError::archive(
                archive,
                format!(
                    "its members declare more than {declared_cap} bytes, twice the limit of {} ({})",
                    limits.max_bytes, limits.bytes_from
                ),
            ));
        }
    }
    // Whatever follows the end-of-archive marker is not decoded (it could
    // be a bomb of its own); callers drain the raw stream for checksums.
    Ok(budget.bytes)
}

fn meta(h: &::tar::Header, perm_default: u16) -> Result<InodeMeta, MemberError> {
    let bad = |what: &str| MemberError::Bad(format!("unreadable {what} in the header"));
    let perm = h.mode().map_or(perm_default, |m| {
        u16::try_from(m & 0o7777).unwrap_or(perm_default)
    });
    let uid = u32::try_from(h.uid().map_err(|_| bad("uid"))?)
        .map_err(|_| MemberError::Bad("uid does not fit 32 bits".into()))?;
    let gid = u32::try_from(h.gid().map_err(|_| bad("gid"))?)
        .map_err(|_| MemberError::Bad("gid does not fit 32 bits".into()))?;
    let mtime = h.mtime().map_err(|_| bad("mtime"))?;
    let at = Timestamp::from_secs(i64::try_from(mtime).unwrap_or(i64::MAX));
    Ok(InodeMeta::new(perm, at).with_owner(uid, gid))
}

fn one<R: Read>(
    entry: &mut ::tar::Entry<'_, R>,
    raw: &[u8],
    budget: &mut Budget<'_>,
    target: &mut dyn Target,
) -> Result<(), MemberError> {
    use ::tar::EntryType as T;
    let kind = entry.header().entry_type();
    match kind {
        // Metadata-only headers.
        T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => return Ok(()),
        T::Char => return Err(MemberError::Special("character device")),
        T::Block => return Err(MemberError::Special("block device")),
        T::Fifo => return Err(MemberError::Special("FIFO")),
        _ => {}
    }
    let path = components(raw)?;
    if is_junk(&path) {
        return Ok(());
    }
    if path.is_empty() {
        // `./`: the target directory itself keeps the build's metadata.
        return if kind == T::Directory {
            Ok(())
        } else {
            Err(MemberError::Unsafe("empty name"))
        };
    }
    let m = meta(entry.header(), 0o644)?;
    match kind {
        T::Directory => target.dir(&path, m),
        T::Regular | T::Continuous | T::GNUSparse => {
            let size = entry.size();
            budget.claim(size)?;
            target.file(&path, size, m, entry)
        }
        T::Symlink => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| MemberError::Bad("symlink without a target".into()))?
                .into_owned();
            check_symlink(&path, &link)?;
            target.symlink(&path, &link, m)
        }
        T::Link => {
            let link = entry
                .link_name_bytes()
                .ok_or_else(|| MemberError::Bad("hard link without a target".into()))?
                .into_owned();
            let to = components(&link)?;
            target.hard_link(&path, &to)
        }
        other => Err(MemberError::Bad(format!(
            "unsupported tar entry type {:?}",
            other.as_byte() as char
        ))),
    }
}
