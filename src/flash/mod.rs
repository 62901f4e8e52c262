//! `image-creator flash SOURCE DEVICE... [--bmap F] [--no-verify]
//! [--force]`: one image onto many cards at once (docs/spec.md §14).
//!
//! ```text
//! SOURCE ─► one read, one decoder ─► fan-out ─┬─► card 1 (its mapped ranges, aligned, O_DIRECT)
//!  (file, or the HTTP client)                 ├─► card 2 …
//!                                             └─► the source's range hashes
//! then, each card on a thread: its written ranges read back (O_DIRECT) and hashed
//! ```
//!
//! The steps, in [`run`]:
//! 1. **Check** the source (coding, decoded size), find its bmap, and
//!    apply to every device the refusals of a build onto a device
//!    ([`crate::os::blockdev::check_usable`]), its size, and the
//!    exclusive open. One refusal refuses the run: nothing is written to
//!    any device.
//! 2. **Write**: each card's partition tables are zeroed; the source is
//!    read and decoded once ([`source::produce`]) and fanned out
//!    ([`crate::output::fan_out`]) to a [`card::CardSink`] per card and
//!    to the hashes of the map's ranges. A card that fails is dropped
//!    with its error; the others go on.
//! 3. **Read back** (unless `--no-verify`): every card written is read
//!    back past the page cache and each range's sha256 compared with the
//!    bmap's, or without a bmap with the one the source's read gave
//!    ([`readback`]).
//!
//! What is written: the bmap's ranges; without one, a local raw image's
//! data regions plus every block its filesystems rely on reading as
//! zeros ([`crate::output::map_image`]: inode tables, the FAT, the MBR
//! gap; an image it can't read is mapped whole), or a compressed or
//! remote image whole.

pub mod cached;
pub mod card;
pub mod error;
pub mod readback;
pub mod source;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use card::{Card, CardSink, Written};
pub use error::FlashError;
use readback::{read_back_all, Expected, ReadBack};
use source::{Location, Source};

use crate::cache::FillSink;
use crate::fetch::{FetchOptions, Net};
use crate::os::blockdev;
use crate::output::bmap::BLOCK;
use crate::output::range_hash::RangeHashes;
use crate::output::{fan_out, Bmap, BmapRange, DownloadSink, RangeSet};
use crate::progress::{human_bytes, Reporter};

/// What to flash where.
#[derive(Debug, Clone)]
pub struct FlashOptions {
    /// The image: a path or an http(s) URL, raw, zstd or xz.
    pub source: String,
    /// The devices.
    pub devices: Vec<PathBuf>,
    /// The bmap (default: beside SOURCE when there is one).
    pub bmap: Option<PathBuf>,
    /// Read every card back (default).
    pub verify: bool,
    /// Fixed disks may be written.
    pub force: bool,
    /// The HTTP client's options (network policy, timeouts).
    pub fetch: FetchOptions,
    /// The download cache, for an http(s) SOURCE.
    pub cache_dir: Option<PathBuf>,
}

/// How one card ended.
#[derive(Debug, Clone)]
pub struct CardReport {
    /// The device.
    pub path: PathBuf,
    /// The write.
    pub written: Written,
    /// The read-back, unless `--no-verify` or the write failed.
    pub read_back: Option<ReadBack>,
}

impl CardReport {
    /// Written completely, and verified unless verification was off.
    pub fn ok(&self, verify: bool) -> bool {
        self.written.complete
            && self.written.error.is_none()
            && (!verify || self.read_back.as_ref().is_some_and(|r| r.error.is_none()))
    }
}

/// How the run ended.
#[derive(Debug, Clone)]
pub struct FlashReport {
    /// The source, as named.
    pub source: String,
    /// The image's size.
    pub image_size: u64,
    /// The bytes written to each card.
    pub mapped: u64,
    /// The bmap used, if any.
    pub bmap: Option<PathBuf>,
    /// Whether cards were read back.
    pub verify: bool,
    /// Each card, in the order given.
    pub cards: Vec<CardReport>,
}

impl FlashReport {
    /// Every card written and (unless `--no-verify`) verified.
    pub fn all_ok(&self) -> bool {
        self.cards.iter().all(|c| c.ok(self.verify))
    }

    /// The summary: one line per card (bytes, speed, verification).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.cards {
            let w = &c.written;
            let mut line = format!("{}: ", c.path.display());
            match &w.error {
                Some(e) => {
                    let _ = write!(line, "FAILED writing: {e}");
                }
                None => {
                    let _ = write!(
                        line,
                        "written {} in {:.1}s ({})",
                        human_bytes(w.bytes),
                        w.took.as_secs_f64(),
                        speed(w.bytes, w.took)
                    );
                    match (&c.read_back, self.verify) {
                        (_, false) => line.push_str(", not verified (--no-verify)"),
                        (Some(r), true) => match &r.error {
                            None => {
                                let _ = write!(
                                    line,
                                    ", verified {} in {:.1}s ({}{})",
                                    human_bytes(r.bytes),
                                    r.took.as_secs_f64(),
                                    speed(r.bytes, r.took),
                                    if r.direct { "" } else { ", page cache dropped" }
                                );
                            }
                            Some(e) => {
                                let _ = write!(line, ", verification FAILED: {e}");
                            }
                        },
                        (None, true) => line.push_str(", not verified"),
                    }
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        let good = self.cards.iter().filter(|c| c.ok(self.verify)).count();
        let _ = writeln!(
            out,
            "{good} of {} device(s) {} with {} ({} of {} bytes mapped{})",
            self.cards.len(),
            if self.verify {
                "written and verified"
            } else {
                "written"
            },
            self.source,
            self.mapped,
            self.image_size,
            self.bmap
                .as_ref()
                .map(|b| format!(", bmap {}", b.display()))
                .unwrap_or_default()
        );
        out
    }
}

fn speed(bytes: u64, took: Duration) -> String {
    let s = took.as_secs_f64();
    if s <= 0.0 {
        return "-".into();
    }
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    // display only; a rate is positive
    let r = (bytes as f64 / s) as u64;
    format!("{}/s", human_bytes(r))
}

/// What the run writes and checks.
struct Plan {
    source: Source,
    size: u64,
    bmap: Option<(PathBuf, Bmap)>,
    /// Byte ranges written to each card, ascending and disjoint.
    map: Vec<(u64, u64)>,
}

/// Flash `opts.source` onto every device (see the module's doc). `Err`
/// when nothing could start (a refusal, the source, the bmap) or the
/// source failed while the cards were written; a card that fails is in
/// the report.
pub fn run(opts: &FlashOptions, reporter: &dyn Reporter) -> Result<FlashReport, FlashError> {
    let steps = if opts.verify { 3 } else { 2 };
    reporter.step(1, steps, "checking the source and the devices");
    let location = source::locate(&opts.source);
    let net = match &location {
        Location::Http(_) => Some(Net::new(opts.fetch.clone())?),
        Location::Local(_) => None,
    };
    let cache = match (&opts.cache_dir, &location) {
        (Some(dir), Location::Http(_)) => cached::open(dir, reporter)?,
        _ => None,
    };
    let side = match (&cache, &location, &net) {
        (Some(c), Location::Http(url), Some(n)) => cached::prepare(c, url, n, reporter),
        _ => cached::Side::Plain,
    };
    let (blob, mut fill) = match side {
        cached::Side::Plain => (None, None),
        cached::Side::Hit(f) => (Some(Arc::new(f)), None),
        cached::Side::Fill(f, v) => (None, Some((f, v))),
    };
    let plan = plan(location, opts, net.as_ref(), blob, reporter)?;
    let cards = open_cards(opts, plan.size)?;

    let name = plan.source.location.name();
    let what = format!("writing {} device(s)", cards.len());
    reporter.step(2, steps, &what);
    let mapped: u64 = plan.map.iter().map(|(s, e)| e - s).sum();
    let names: Vec<(String, u64)> = cards
        .iter()
        .map(|c| (c.path.display().to_string(), mapped))
        .collect();
    reporter.items_planned(&names);
    let mut tap = FillSink::new(fill.as_ref().map(|(f, _)| f));
    let streamed = write_all(&plan, &cards, net.as_ref(), &mut tap, reporter);
    if let Some(c) = &cache {
        // A fill is published only when the whole download arrived.
        let end = (streamed.is_ok() && tap.failed.is_none() && tap.end > 0).then_some(tap.end);
        if let Some(e) = tap.failed.take() {
            reporter.warn(&format!("download cache: {e}"));
        }
        drop(tap);
        cached::settle(c, fill.take(), end, &plan.source.location.name(), reporter);
    }
    let (written, expected) = streamed?;

    let mut reports: Vec<CardReport> = cards
        .iter()
        .zip(written)
        .map(|(c, w)| CardReport {
            path: c.path.clone(),
            written: w,
            read_back: None,
        })
        .collect();
    if opts.verify {
        reporter.step(3, steps, "reading the devices back");
        verify_all(&cards, &expected, &mut reports, reporter);
    }
    for r in &reports {
        let n = r.path.display().to_string();
        match (
            &r.written.error,
            r.read_back.as_ref().and_then(|b| b.error.as_ref()),
        ) {
            (Some(_), _) => {} // reported when it failed
            (None, Some(e)) => reporter.item_failed(&n, &format!("read back: {e}")),
            (None, None) => {
                let how = r.read_back.as_ref().map(|_| "verified");
                reporter.item_done(&n, r.written.bytes, how);
            }
        }
    }
    Ok(FlashReport {
        source: name,
        image_size: plan.size,
        mapped,
        bmap: plan.bmap.map(|(p, _)| p),
        verify: opts.verify,
        cards: reports,
    })
}

/// Step 1's source half: its coding, size, bmap and map.
fn plan(
    location: Location,
    opts: &FlashOptions,
    net: Option<&Net>,
    blob: Option<Arc<std::fs::File>>,
    reporter: &dyn Reporter,
) -> Result<Plan, FlashError> {
    let name = location.name();
    let source = source::inspect(location, net, blob)?;
    let bmap = match source::find_bmap(&source, opts.bmap.as_deref(), net) {
        // Flashing from the cache needs no server: without one to ask for
        // the bmap, the image is written whole.
        Err(FlashError::Http(e)) if source.blob.is_some() => {
            reporter.warn(&format!("{e}: no bmap; the cached image is written whole"));
            None
        }
        found => found?,
    };
    let size = match (&bmap, source.size) {
        (Some((p, b)), Some(s)) if b.image_size != s => {
            return Err(FlashError::BadMap {
                path: p.clone(),
                why: format!(
                    "its ImageSize is {} bytes but {name} is {s} bytes: not this image's bmap",
                    b.image_size
                ),
            })
        }
        (Some((_, b)), _) => b.image_size,
        (None, Some(s)) => s,
        (None, None) => return Err(FlashError::SizeUnknown(name)),
    };
    let map = match &bmap {
        Some((p, b)) => bmap_ranges(p, b)?,
        None => whole_map(&source, size)?,
    };
    Ok(Plan {
        source,
        size,
        bmap,
        map,
    })
}

/// A bmap's ranges in bytes (cut at the image's end), refused when out
/// of order or overlapping (they are written and hashed in one pass).
fn bmap_ranges(path: &Path, b: &Bmap) -> Result<Vec<(u64, u64)>, FlashError> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(b.ranges.len());
    for r in &b.ranges {
        let (s, e) = range_bytes(r, b);
        if let Some(&(_, prev)) = out.last() {
            if s < prev {
                return Err(FlashError::BadMap {
                    path: path.to_path_buf(),
                    why: format!(
                        "range {}-{} is out of order or overlaps the one before",
                        r.first, r.last
                    ),
                });
            }
        }
        out.push((s, e));
    }
    Ok(out)
}

fn range_bytes(r: &BmapRange, b: &Bmap) -> (u64, u64) {
    let s = r.first.saturating_mul(b.block_size);
    let e = r
        .last
        .saturating_add(1)
        .saturating_mul(b.block_size)
        .min(b.image_size);
    (s, e)
}

/// Without a bmap: a local raw image's data regions and what its
/// filesystems need as zeros; anything else whole.
fn whole_map(src: &Source, size: u64) -> Result<Vec<(u64, u64)>, FlashError> {
    let mut set = RangeSet::new();
    let local = |e| FlashError::Source {
        source_name: src.location.name(),
        source: e,
    };
    match (
        source::local_regions(src)?,
        src.local_file().map_err(local)?,
    ) {
        (Some(regions), Some((f, path))) => {
            for (s, e) in regions {
                set.insert(s, e);
            }
            // An image too short to hold a partition table has none.
            if let Ok(m) = crate::output::map_image(&f, &path, size) {
                set.extend(&m.ranges);
            }
        }
        _ => set.insert(0, size),
    }
    Ok(set.to_blocks(BLOCK, size).iter().collect())
}

/// Step 1's device half: each device named once, usable (the refusals
/// of a build onto a device), large enough, opened exclusively, all
/// before any is written.
fn open_cards(opts: &FlashOptions, size: u64) -> Result<Vec<Card>, FlashError> {
    if opts.devices.is_empty() {
        return Err(FlashError::Usage("flash: no DEVICE given".into()));
    }
    let refused = |path: &Path, why: String| FlashError::Refused {
        path: path.to_path_buf(),
        why,
    };
    let mut seen: Vec<(u64, &Path)> = Vec::new();
    for d in &opts.devices {
        blockdev::check_usable(d, opts.force).map_err(|why| refused(d, why))?;
        let n = blockdev::device_number(d).map_err(|e| refused(d, e.to_string()))?;
        if let Some((_, first)) = seen.iter().find(|(m, _)| *m == n) {
            return Err(refused(
                d,
                format!(
                    "the same device as {}: name each device once",
                    first.display()
                ),
            ));
        }
        seen.push((n, d));
        let have = blockdev::size(d).map_err(|e| refused(d, format!("reading its size: {e}")))?;
        if have < size {
            return Err(refused(
                d,
                format!("{have} bytes, too small for the image of {size} bytes"),
            ));
        }
    }
    // Opened only once all passed: a refusal leaves every device as it was.
    opts.devices
        .iter()
        .map(|d| Card::open(d).map_err(|why| refused(d, why)))
        .collect()
}

/// Step 2: zero each card's tables, then the one read fanned out. Each
/// card's result, and the hashes the read-back checks.
fn write_all(
    plan: &Plan,
    cards: &[Card],
    net: Option<&Net>,
    tap: &mut FillSink<'_>,
    reporter: &dyn Reporter,
) -> Result<(Vec<Written>, Vec<Expected>), FlashError> {
    let mut sinks: Vec<CardSink<'_>> = cards
        .iter()
        .map(|c| CardSink::new(c, &plan.map, reporter))
        .collect();
    for s in &mut sinks {
        s.begin();
    }
    let mut hashes = match &plan.bmap {
        Some((_, b)) => RangeHashes::exact(plan.map.clone(), b.block_size),
        None => RangeHashes::exact(plan.map.clone(), BLOCK),
    };
    reporter.pass_started(plan.size);
    let progress = |n| reporter.pass_progress(n);
    let streamed = {
        let mut consumers: Vec<&mut dyn DownloadSink> = Vec::new();
        for s in sinks.iter_mut().filter(|s| s.written.error.is_none()) {
            consumers.push(s);
        }
        consumers.push(&mut hashes);
        fan_out(consumers, &progress, |feed| {
            source::produce(&plan.source, net, plan.size, feed, tap)
        })
    };
    if let Err(e) = streamed {
        for s in &sinks {
            if s.written.error.is_none() {
                reporter.item_failed(&s.name(), &format!("{e}"));
            }
        }
        return Err(FlashError::Stream(e));
    }
    let got = hashes.into_ranges();
    let mut written: Vec<Written> = sinks.into_iter().map(|s| s.written).collect();
    let expected = match &plan.bmap {
        Some((path, b)) => {
            // The source against its bmap: a wrong source fails every card
            // here, even with --no-verify (bmaptool checks it too).
            if let Some((r, g)) = b
                .ranges
                .iter()
                .zip(&got)
                .find(|(r, g)| r.sha256 != g.sha256)
            {
                let why = format!(
                    "{} differs from its bmap {} at blocks {}-{} (sha256 {}, expected {})",
                    plan.source.location.name(),
                    path.display(),
                    r.first,
                    r.last,
                    g.sha256,
                    r.sha256
                );
                for (w, c) in written.iter_mut().zip(cards) {
                    if w.error.is_none() {
                        reporter.item_failed(&c.path.display().to_string(), &why);
                        w.error = Some(why.clone());
                    }
                }
            }
            b.ranges
                .iter()
                .map(|r| {
                    let (start, end) = range_bytes(r, b);
                    Expected {
                        start,
                        end,
                        sha256: r.sha256.clone(),
                    }
                })
                .collect()
        }
        None => plan
            .map
            .iter()
            .zip(got)
            .map(|(&(start, end), g)| Expected {
                start,
                end,
                sha256: g.sha256,
            })
            .collect(),
    };
    Ok((written, expected))
}

/// Step 3: every card written read back (together: one hash for all).
fn verify_all(
    cards: &[Card],
    expected: &[Expected],
    reports: &mut [CardReport],
    reporter: &dyn Reporter,
) {
    let written: Vec<usize> = reports
        .iter()
        .enumerate()
        .filter(|(_, r)| r.written.complete && r.written.error.is_none())
        .map(|(i, _)| i)
        .collect();
    let chosen: Vec<&Card> = written.iter().map(|&i| &cards[i]).collect();
    for (i, result) in written
        .into_iter()
        .zip(read_back_all(&chosen, expected, reporter))
    {
        reports[i].read_back = Some(result);
    }
}
