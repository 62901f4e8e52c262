//! Walk a zip file into a [`Target`]. A zip's central directory is at its
//! end, so it is read from a seekable file (remote zips are downloaded to
//! the build directory first).

use std::io::{Read, Seek};

use super::error::{ExpandError, MemberError};
use super::limits::{Budget, Limits};
use super::member::{check_symlink, components, is_junk};
use super::target::Target;
use crate::fs::ext4::{InodeMeta, Timestamp};

/// Longest symlink target ext4 stores (one 4 KiB block, NUL excluded).
const MAX_LINK: u64 = 4095;

/// `S_IFMT` and the file types of `st_mode` (Linux `stat.h`), as zip's
/// Unix "external attributes" carry them.
const S_IFMT: u32 = 0o170_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFREG: u32 = 0o100_000;

/// Expand zip `file` (named `archive` in errors) into `target`; returns
/// the file bytes written. Owners are root (zip has none).
pub fn expand_zip<R: Read + Seek>(
    file: R,
    archive: &str,
    limits: &Limits,
    target: &mut dyn Target,
) -> Result<u64, ExpandError> {
    let mut zip = ::zip::ZipArchive::new(file)
        .map_err(|e| ExpandError::archive(archive, format!("not a readable zip: {e}")))?;
    let mut budget = Budget::new(limits);
    // The central directory says how many members there are: refuse
    // before expanding anything.
    if zip.len() as u64 > limits.max_entries {
        return Err(ExpandError::archive(
            archive,
            MemberError::TooManyEntries {
                limit: limits.max_entries,
                limit_name: limits.entries_from.clone(),
            },
        ));
    }
    for i in 0..zip.len() {
        let mut f = zip
            .by_index(i)
            .map_err(|e| ExpandError::archive(archive, format!("member #{i}: {e}")))?;
        let raw = f.name_raw().to_vec();
        let member = String::from_utf8_lossy(&raw).into_owned();
        let wrap = |error: MemberError| ExpandError::Member {
            archive: archive.to_string(),
            member: member.clone(),
            error,
        };
        budget.entry().map_err(wrap)?;
        one(&mut f, &raw, &mut budget, target).map_err(wrap)?;
    }
    Ok(budget.bytes)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A zip DOS time (local time of the zipping machine, no zone, 2 s steps)
/// taken as UTC.
fn mtime(dt: Option<::zip::DateTime>) -> Timestamp {
    dt.map_or_else(Timestamp::build_time, |t| {
        let days = days_from_civil(
            i64::from(t.year()),
            i64::from(t.month()),
            i64::from(t.day()),
        );
        Timestamp::from_secs(
            days * 86_400
                + i64::from(t.hour()) * 3600
                + i64::from(t.minute()) * 60
                + i64::from(t.second()),
        )
    })
}

fn one<R: Read + Seek>(
    f: &mut ::zip::read::ZipFile<'_, R>,
    raw: &[u8],
    budget: &mut Budget<'_>,
    target: &mut dyn Target,
) -> Result<(), MemberError> {
    let mode = f.unix_mode();
    let ftype = mode.map(|m| m & S_IFMT).filter(|&t| t != 0);
    let is_dir = f.is_dir() || ftype == Some(S_IFDIR);
    match ftype {
        None | Some(S_IFDIR | S_IFLNK | S_IFREG) => {}
        Some(_) => return Err(MemberError::Special("device, FIFO or socket")),
    }
    let path = components(raw)?;
    if is_junk(&path) {
        return Ok(());
    }
    if path.is_empty() {
        return Err(MemberError::Unsafe("empty name"));
    }
    let default = if is_dir { 0o755 } else { 0o644 };
    let perm = mode.map_or(default, |m| u16::try_from(m & 0o7777).unwrap_or(default));
    // Info-ZIP's extended timestamp (UTC seconds) wins over the DOS time.
    let exact = f.extra_data_fields().find_map(|x| match x {
        ::zip::extra_fields::ExtraField::ExtendedTimestamp(t) => t.mod_time(),
        _ => None,
    });
    let at = exact.map_or_else(
        || mtime(f.last_modified()),
        |t| Timestamp::from_secs(i64::from(t)),
    );
    let meta = InodeMeta::new(perm, at);
    if is_dir {
        return target.dir(&path, meta);
    }
    let size = f.size();
    if ftype == Some(S_IFLNK) {
        if size > MAX_LINK {
            return Err(MemberError::Bad(format!(
                "symlink target of {size} bytes (ext4 allows {MAX_LINK})"
            )));
        }
        let mut link = Vec::new();
        f.take(MAX_LINK).read_to_end(&mut link)?;
        check_symlink(&path, &link)?;
        return target.symlink(&path, &link, meta);
    }
    budget.claim(size)?;
    target.file(&path, size, meta, f)?;
    // The zip reader checks the CRC once the data is read to its end.
    let mut rest = [0u8; 1];
    if f.read(&mut rest)? != 0 {
        return Err(MemberError::Bad(format!(
            "data longer than the {size} bytes its header declares"
        )));
    }
    Ok(())
}
