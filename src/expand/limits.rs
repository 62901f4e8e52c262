//! Expansion limits (docs/spec.md §9 "Expansion bomb") and the budget that enforces
//! them while an archive streams.

use super::error::MemberError;
use super::format::Format;

/// Entry limit when none is configured: 10,000,000 members. A chosen
/// bound: offline websites and content apps reach a million files; the
/// builder holds about 150 bytes per file (docs/benchmarks.md), so ten
/// million members stay near 1.5 GiB of memory and 2.5 GiB of inode
/// tables, which the planned size accounts for before anything is written.
/// Archives past that are refused as bombs.
pub const DEFAULT_MAX_ENTRIES: u64 = 10_000_000;
/// Environment variable overriding [`DEFAULT_MAX_ENTRIES`].
pub const MAX_ENTRIES_ENV: &str = "IMAGE_CREATOR_MAX_ENTRIES";
/// Without a declared `size`, an archive may expand to this many times its
/// own (compressed) size: 8×, above gzip/xz ratios of text-heavy web content
/// (3-5×) and far below bombs (1000× and more).
pub const DEFAULT_RATIO: u64 = 8;
/// Environment variable overriding [`DEFAULT_RATIO`].
pub const RATIO_ENV: &str = "IMAGE_CREATOR_EXPAND_RATIO";

/// Hard limits of one archive's expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Total bytes of regular-file data.
    pub max_bytes: u64,
    /// Where `max_bytes` comes from, for messages (`files[2].size`, ...).
    pub bytes_from: String,
    /// Members (every header counts: files, directories, links, junk).
    pub max_entries: u64,
    /// Where `max_entries` comes from.
    pub entries_from: String,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

impl Limits {
    /// Limits for `files[key]`: the declared expanded `size`, else
    /// `ratio × archive_size` (ratio 1 for a plain tar, which never
    /// expands beyond itself); the entry limit from the environment
    /// or the default.
    pub fn new(key: &str, declared: Option<u64>, archive_size: u64, format: Format) -> Self {
        let (max_bytes, bytes_from) = match declared {
            Some(s) => (s, format!("{key}.size")),
            None => {
                let ratio = if format.is_compressed() {
                    env_u64(RATIO_ENV).unwrap_or(DEFAULT_RATIO)
                } else {
                    1
                };
                (
                    archive_size.saturating_mul(ratio),
                    format!("{ratio} × the archive's {archive_size} bytes, as {key}.size is not set; {RATIO_ENV}"),
                )
            }
        };
        let (max_entries, entries_from) = match env_u64(MAX_ENTRIES_ENV) {
            Some(n) => (n, format!("{MAX_ENTRIES_ENV}={n}")),
            None => (DEFAULT_MAX_ENTRIES, format!("default; {MAX_ENTRIES_ENV}")),
        };
        Self {
            max_bytes,
            bytes_from,
            max_entries,
            entries_from,
        }
    }
}

/// What is left of the limits while an archive expands.
#[derive(Debug)]
pub struct Budget<'a> {
    limits: &'a Limits,
    /// Members seen.
    pub entries: u64,
    /// File bytes claimed.
    pub bytes: u64,
}

impl<'a> Budget<'a> {
    /// A full budget.
    pub fn new(limits: &'a Limits) -> Self {
        Self {
            limits,
            entries: 0,
            bytes: 0,
        }
    }

    /// Count one member.
    pub fn entry(&mut self) -> Result<(), MemberError> {
        self.entries += 1;
        if self.entries > self.limits.max_entries {
            return Err(MemberError::TooManyEntries {
                limit: self.limits.max_entries,
                limit_name: self.limits.entries_from.clone(),
            });
        }
        Ok(())
    }

    /// Claim `size` bytes for a member: refused if more than is left.
    pub fn claim(&mut self, size: u64) -> Result<(), MemberError> {
        let left = self.limits.max_bytes.saturating_sub(self.bytes);
        if size > left {
            return Err(MemberError::TooLarge {
                size,
                limit: self.limits.max_bytes,
                limit_name: self.limits.bytes_from.clone(),
                left,
            });
        }
        self.bytes += size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_a_member_larger_than_what_is_left() {
        let l = Limits {
            max_bytes: 100,
            bytes_from: "files[0].size".into(),
            max_entries: 2,
            entries_from: "test".into(),
        };
        let mut b = Budget::new(&l);
        b.entry().unwrap_or_else(|e| panic!("{e}"));
        b.claim(60).unwrap_or_else(|e| panic!("{e}"));
        let e = b.claim(41).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("files[0].size") && e.contains("40 bytes are left"),
            "{e}"
        );
        b.entry().unwrap_or_else(|e| panic!("{e}"));
        assert!(b.entry().is_err());
    }
}
