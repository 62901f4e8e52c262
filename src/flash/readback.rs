//! The read-back: each written range of every card read from the device
//! and checked against its expected sha256 (the bmap's, or the one the
//! source's stream gave when there is no bmap).
//!
//! - **From the device, not the page cache** that the writes may have
//!   filled: each card is read through an `O_DIRECT` descriptor (reads go
//!   to the device whatever the cache holds). Where the device or
//!   platform has no direct I/O, the card is synced and its cached pages
//!   dropped (`posix_fadvise(DONTNEED)`, which evicts a block device's
//!   clean pages; `BLKFLSBUF` would do the same through an ioctl, which
//!   the crate has none of) before a plain read: the best available, and
//!   said in the summary.
//! - **One hash for all cards.** The cards are read in lockstep, each by
//!   a thread of its own (4 MiB aligned reads, two buffers queued); this
//!   thread hashes the first card's bytes and compares every other card's
//!   with them byte for byte. A card whose bytes are the first's has the
//!   first's hash; one that differs gets a hash of its own from that
//!   piece on (the hasher's state cloned where they parted), so each card
//!   is still checked against the expected sha256, and a bad first card
//!   fails alone. Hashing N copies would cost N × sha256 of the image;
//!   this costs one, plus memory-speed comparisons.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
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
    /// Bytes read back and checked.
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
/// Buffers per card: one being read, one queued, one being compared.
const BUFFERS: usize = 3;

/// One aligned read: `len` bytes at `at`, of which `[from, to)` lie in
/// range `range`; `last` ends the range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    range: usize,
    at: u64,
    len: usize,
    from: usize,
    to: usize,
    last: bool,
}

/// The reads that cover `expected`, in order: each range's blocks read
/// whole (a direct read needs an aligned offset and length), at most
/// [`READ_BUF`] at a time.
fn pieces(expected: &[Expected]) -> impl Iterator<Item = Piece> + '_ {
    let align = DIRECT_ALIGN as u64;
    expected.iter().enumerate().flat_map(move |(range, e)| {
        let first = e.start / align * align;
        let mut at = first;
        std::iter::from_fn(move || {
            if at >= e.end {
                return None;
            }
            let len = ((e.end - at).div_ceil(align) * align).min(READ_BUF as u64);
            let from = e.start.saturating_sub(at);
            let to = (e.end - at).min(len);
            let p = Piece {
                range,
                at,
                len: usize::try_from(len).unwrap_or(READ_BUF),
                from: usize::try_from(from).unwrap_or(0),
                to: usize::try_from(to).unwrap_or(0),
                last: at + len >= e.end,
            };
            at += len;
            Some(p)
        })
    })
}

/// A card's reader thread: every piece read into a buffer and sent,
/// until the pieces end, a read fails (sent as the error) or the
/// checker hangs up.
fn reader(
    file: &File,
    path: &Path,
    expected: &[Expected],
    out: &SyncSender<std::io::Result<AlignedBuf>>,
    back: &Receiver<AlignedBuf>,
) {
    let mut made = 0;
    for p in pieces(expected) {
        let mut buf = if made < BUFFERS {
            made += 1;
            AlignedBuf::new(READ_BUF)
        } else {
            match back.recv() {
                Ok(b) => b,
                Err(_) => return,
            }
        };
        let got = read_some(file, path, &mut buf.as_mut_slice()[..p.len], p.at).and_then(|n| {
            if n < p.to {
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("{} ends at byte {}", path.display(), p.at + n as u64),
                ))
            } else {
                Ok(buf)
            }
        });
        let failed = got.is_err();
        if out.send(got).is_err() || failed {
            return;
        }
    }
}

/// A card being checked.
struct Checked {
    name: String,
    rx: Option<Receiver<std::io::Result<AlignedBuf>>>,
    back: Option<SyncSender<AlignedBuf>>,
    /// Its own hasher, once its bytes parted from the reference's in the
    /// current range.
    own: Option<Sha256>,
    result: ReadBack,
}

/// Read every card back and check every range of `expected` (see the
/// module's doc). One result per card, in order.
pub fn read_back_all(
    cards: &[&Card],
    expected: &[Expected],
    reporter: &dyn Reporter,
) -> Vec<ReadBack> {
    let total: u64 = expected.iter().map(|e| e.end - e.start).sum();
    let files: Vec<(Option<File>, &Card)> = cards
        .iter()
        .map(|c| {
            let direct = blockdev::open_direct(&c.path, false);
            if direct.is_none() {
                // Synced when written: its pages are clean and can go.
                let _ = c.sync();
                crate::os::drop_cache(c.plain());
            }
            (direct, *c)
        })
        .collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        let mut checked: Vec<Checked> = Vec::new();
        for (direct, card) in &files {
            let (tx, rx) = sync_channel(1);
            let (back_tx, back_rx) = sync_channel(BUFFERS);
            let file = direct.as_ref().unwrap_or(card.plain());
            let path = card.path.as_path();
            s.spawn(move || reader(file, path, expected, &tx, &back_rx));
            let name = card.path.display().to_string();
            reporter.item_verifying(&name, total);
            checked.push(Checked {
                name,
                rx: Some(rx),
                back: Some(back_tx),
                own: None,
                result: ReadBack {
                    direct: direct.is_some(),
                    ..ReadBack::default()
                },
            });
        }
        check(&mut checked, expected, reporter);
        for c in &mut checked {
            // Hang up: a reader still running stops.
            c.rx = None;
            c.back = None;
            c.result.took = started.elapsed();
        }
        checked.into_iter().map(|c| c.result).collect()
    })
}

/// The checker: each piece of every live card, compared with the
/// reference (the first live card's), hashed once.
fn check(cards: &mut [Checked], expected: &[Expected], reporter: &dyn Reporter) {
    let mut reference = Sha256::new();
    for p in pieces(expected) {
        let mut bufs: Vec<Option<AlignedBuf>> = Vec::with_capacity(cards.len());
        for c in cards.iter_mut() {
            let got = match c.rx.as_ref().map(Receiver::recv) {
                None => None,
                Some(Ok(Ok(b))) => Some(b),
                Some(Ok(Err(e))) => {
                    fail(c, format!("reading back at byte {}: {e}", p.at));
                    None
                }
                Some(Err(_)) => {
                    fail(
                        c,
                        format!("reading back at byte {}: the reader stopped", p.at),
                    );
                    None
                }
            };
            bufs.push(got);
        }
        let Some(r) = bufs.iter().position(Option::is_some) else {
            return;
        };
        fn slice(b: &Option<AlignedBuf>, p: Piece) -> Option<&[u8]> {
            b.as_ref().map(|b| &b.as_slice()[p.from..p.to])
        }
        let ref_bytes = slice(&bufs[r], p).unwrap_or(&[]);
        for (c, b) in cards.iter_mut().zip(&bufs) {
            let Some(bytes) = slice(b, p) else { continue };
            if c.own.is_none() && bytes != ref_bytes {
                // Parted here: its own hash from the common prefix on.
                c.own = Some(reference.clone());
            }
            if let Some(h) = c.own.as_mut() {
                h.update(bytes);
            }
            reporter.item_verified(&c.name, bytes.len() as u64);
        }
        reference.update(ref_bytes);
        for (c, b) in cards.iter_mut().zip(bufs) {
            if let (Some(back), Some(b)) = (&c.back, b) {
                let _ = back.send(b);
            }
        }
        if p.last {
            let e = &expected[p.range];
            let common = crate::io::hex(&std::mem::take(&mut reference).finalize());
            for c in cards.iter_mut().filter(|c| c.rx.is_some()) {
                let got = c
                    .own
                    .take()
                    .map_or_else(|| common.clone(), |h| crate::io::hex(&h.finalize()));
                if got == e.sha256 {
                    c.result.bytes += e.end - e.start;
                } else {
                    let why = format!(
                        "bytes {}-{} read back differ: sha256 {got}, expected {}",
                        e.start,
                        e.end - 1,
                        e.sha256
                    );
                    fail(c, why);
                }
            }
        }
    }
}

/// Stop checking `c`: `why` is its result.
fn fail(c: &mut Checked, why: String) {
    c.result.error = Some(why);
    c.rx = None;
    c.back = None;
    c.own = None;
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
#[allow(clippy::cast_possible_truncation)] // test offsets of a few MiB
mod tests {
    use super::*;
    use crate::progress::Silent;

    /// Cards fed from memory: `images[i]` is what card i reads back.
    fn run_check(images: &[Vec<u8>], expected: &[Expected]) -> Vec<ReadBack> {
        let mut cards: Vec<Checked> = images
            .iter()
            .enumerate()
            .map(|(i, img)| {
                let (tx, rx) = sync_channel(1024);
                let (back, _back_rx) = sync_channel(1024);
                for p in pieces(expected) {
                    let mut b = AlignedBuf::new(p.len);
                    let end = (p.at as usize + p.len).min(img.len());
                    b.as_mut_slice()[..end - p.at as usize]
                        .copy_from_slice(&img[p.at as usize..end]);
                    tx.send(Ok(b)).expect("queued");
                }
                // (The buffers sent back are dropped with `_back_rx`.)
                std::mem::forget(_back_rx);
                Checked {
                    name: format!("card{i}"),
                    rx: Some(rx),
                    back: Some(back),
                    own: None,
                    result: ReadBack::default(),
                }
            })
            .collect();
        check(&mut cards, expected, &Silent);
        cards.into_iter().map(|c| c.result).collect()
    }

    #[test]
    fn one_hash_checks_every_card_and_a_bad_one_fails_alone() {
        let good: Vec<u8> = (0..3 * READ_BUF + 8192)
            .map(|i| u8::try_from(i % 251).unwrap_or(0))
            .collect();
        let sha = |b: &[u8]| crate::io::hex(&Sha256::digest(b));
        let expected = vec![
            Expected {
                start: 0,
                end: 2 * READ_BUF as u64 + 100,
                sha256: sha(&good[..2 * READ_BUF + 100]),
            },
            Expected {
                start: 3 * READ_BUF as u64,
                end: 3 * READ_BUF as u64 + 8192,
                sha256: sha(&good[3 * READ_BUF..]),
            },
        ];
        let mut late = good.clone();
        late[READ_BUF + 7] ^= 1; // differs in range 0's second piece
        let mut early = good.clone();
        early[5] ^= 1; // the reference itself is bad
        let got = run_check(&[early, good.clone(), late, good.clone()], &expected);
        let total = 2 * READ_BUF as u64 + 100 + 8192;
        assert!(
            got[0]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("bytes 0-")),
            "{got:?}"
        );
        assert!(got[2].error.is_some(), "{got:?}");
        for i in [1, 3] {
            assert_eq!(
                (got[i].error.as_deref(), got[i].bytes),
                (None, total),
                "card {i}"
            );
        }
        // A difference outside every range does not matter.
        let mut outside = good.clone();
        outside[3 * READ_BUF - 1] ^= 1;
        let got = run_check(&[good, outside], &expected);
        assert!(
            got.iter().all(|r| r.error.is_none() && r.bytes == total),
            "{got:?}"
        );
    }

    #[test]
    fn pieces_cover_each_range_in_aligned_reads() {
        let ex = |start, end| Expected {
            start,
            end,
            sha256: String::new(),
        };
        let ranges = [ex(8192, 8192 + 2 * READ_BUF as u64 + 5)];
        let ps: Vec<Piece> = pieces(&ranges).collect();
        assert_eq!(ps.len(), 3);
        assert!(ps.iter().all(|p| p.at % 4096 == 0 && p.len % 4096 == 0));
        assert_eq!(ps[2].to, 5);
        assert!(ps[2].last && !ps[1].last);
        let covered: u64 = ps.iter().map(|p| (p.to - p.from) as u64).sum();
        assert_eq!(covered, 2 * READ_BUF as u64 + 5);
        // An unaligned start: read from its block, cut at the range.
        let p: Vec<Piece> = pieces(&[ex(5000, 6000)]).collect();
        assert_eq!(
            p,
            [Piece {
                range: 0,
                at: 4096,
                len: 4096,
                from: 904,
                to: 1904,
                last: true
            }]
        );
    }
}
