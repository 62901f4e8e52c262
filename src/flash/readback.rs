//! The read-back: each written range of a card read from the device and
//! its sha256 compared with the expected one (the bmap's, or the one the
//! source's stream gave when there is no bmap).
//!
//! The bytes must come from the device, not from the page cache that the
//! writes may have filled: the card is read through an `O_DIRECT`
//! descriptor (reads go to the device whatever the cache holds). Where
//! the device or platform has no direct I/O, the card was synced and its
//! cached pages are dropped (`posix_fadvise(DONTNEED)`, which evicts a
//! block device's clean pages; `BLKFLSBUF` would do the same through an
//! ioctl, which the crate has none of) before a plain read: the best
//! available, and said in the report.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::card::Card;
use crate::os::blockdev::{self, AlignedBuf, DIRECT_ALIGN};
use crate::progress::Reporter;

/// One range to check: `[start, end)` and its lowercase hex sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// First byte.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// Its sha256.
    pub sha256: String,
}

/// How the read-back of a card went.
#[derive(Debug, Clone, Default)]
pub struct ReadBack {
    /// Bytes read back and hashed.
    pub bytes: u64,
    /// How long it took.
    pub took: Duration,
    /// Whether the reads bypassed the page cache by `O_DIRECT`.
    pub direct: bool,
    /// The first range that differs, or the error that stopped it.
    pub error: Option<String>,
}

/// Bytes per read: 4 MiB, as the writes.
const READ_BUF: usize = 4 << 20;

/// Read every range of `expected` back from `card`.
pub fn read_back(card: &Card, expected: &[Expected], reporter: &dyn Reporter) -> ReadBack {
    let name = card.path.display().to_string();
    let total = expected.iter().map(|e| e.end - e.start).sum();
    reporter.item_verifying(&name, total);
    let started = Instant::now();
    let direct = blockdev::open_direct(&card.path, false);
    let mut out = ReadBack {
        direct: direct.is_some(),
        ..ReadBack::default()
    };
    if direct.is_none() {
        // Synced when written: its pages are clean and can be dropped.
        let _ = card.sync();
        crate::os::drop_cache(card.plain());
    }
    let file = direct.as_ref().unwrap_or(card.plain());
    let mut buf = AlignedBuf::new(READ_BUF);
    for e in expected {
        match hash_range(file, &card.path, e, &mut buf, &|n| {
            reporter.item_verified(&name, n);
        }) {
            Ok(got) if got == e.sha256 => out.bytes += e.end - e.start,
            Ok(got) => {
                out.error = Some(format!(
                    "bytes {}-{} read back differ: sha256 {got}, expected {}",
                    e.start,
                    e.end - 1,
                    e.sha256
                ));
                break;
            }
            Err(err) => {
                out.error = Some(format!("reading back at byte {}: {err}", e.start));
                break;
            }
        }
    }
    out.took = started.elapsed();
    out
}

/// The sha256 of `[e.start, e.end)` of `file`, read in aligned pieces
/// (a direct read needs an aligned offset and length: the range's blocks
/// are read whole and the hash cut at its end).
fn hash_range(
    file: &File,
    path: &Path,
    e: &Expected,
    buf: &mut AlignedBuf,
    progress: &dyn Fn(u64),
) -> std::io::Result<String> {
    let align = DIRECT_ALIGN as u64;
    let mut sha = Sha256::new();
    let mut at = e.start / align * align;
    while at < e.end {
        let want = (e.end - at).div_ceil(align) * align;
        let n = usize::try_from(want.min(READ_BUF as u64)).unwrap_or(READ_BUF);
        let got = read_some(file, path, &mut buf.as_mut_slice()[..n], at)?;
        // The part of what was read that lies in the range.
        let from = e.start.saturating_sub(at);
        let to = (e.end - at).min(got as u64);
        if to <= from {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{} ends at byte {}", path.display(), at + got as u64),
            ));
        }
        let (f, t) = (
            usize::try_from(from).unwrap_or(0),
            usize::try_from(to).unwrap_or(0),
        );
        sha.update(&buf.as_slice()[f..t]);
        progress(to - from);
        at += to;
    }
    Ok(crate::io::hex(&sha.finalize()))
}

/// Fill `buf` from `at`, short only at the device's end.
fn read_some(file: &File, path: &Path, buf: &mut [u8], at: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{} at byte {}: {e}", path.display(), at + n as u64),
                ))
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        crate::io::hex(&Sha256::digest(b))
    }

    #[test]
    fn unaligned_ranges_are_read_in_blocks_and_hashed_exactly() {
        let data: Vec<u8> = (0..3 * READ_BUF + 999)
            .map(|i| u8::try_from(i % 241).unwrap_or(0))
            .collect();
        let f = tempfile::NamedTempFile::new().expect("tmp");
        f.as_file().write_all_at(&data, 0).expect("write");
        let mut buf = AlignedBuf::new(READ_BUF);
        for (s, e) in [
            (0, 10),
            (4096, 8192),
            (5000, 3 * READ_BUF + 999),
            (100, 2 * READ_BUF + 7),
        ] {
            let ex = Expected {
                start: s as u64,
                end: e as u64,
                sha256: String::new(),
            };
            let seen = std::cell::Cell::new(0);
            let got = hash_range(f.as_file(), f.path(), &ex, &mut buf, &|n| {
                seen.set(seen.get() + n);
            })
            .expect("read");
            assert_eq!(got, sha(&data[s..e]), "{s}..{e}");
            assert_eq!(seen.get(), (e - s) as u64);
        }
        let past = Expected {
            start: data.len() as u64 - 5,
            end: data.len() as u64 + 5,
            sha256: String::new(),
        };
        let e = hash_range(f.as_file(), f.path(), &past, &mut buf, &|_| {}).expect_err("short");
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
