//! The readable history (stdout): each step with ✓/✗ and its duration,
//! each finished item with size, speed and digest, step 7's read of the
//! image (a line every [`PASS_LINE_EVERY`] while it runs, with bytes, rate
//! and time left, and one when it is complete), and a final summary.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::meter::{human_duration, Meter};
use super::{Finish, Reporter};

/// Least time between two lines of step 7's progress: 10 s, so a 1 TB
/// image read at 600 MB/s adds ~170 lines, a 10 GB one a couple.
pub const PASS_LINE_EVERY: Duration = Duration::from_secs(10);

/// `1536` → `1.5 KiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    #[allow(clippy::cast_precision_loss)] // display only
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn rate(bytes: u64, d: Duration) -> Option<String> {
    let s = d.as_secs_f64();
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    // display only; sign and range checked by the guard
    (s > 0.0).then(|| format!("{}/s", human_bytes((bytes as f64 / s) as u64)))
}

struct State<W> {
    out: W,
    step: Option<(String, Instant)>,
    items: HashMap<String, Instant>,
    /// Items whose bytes came from the download cache.
    cached: std::collections::HashSet<String>,
    /// Items' bytes shared with the download cache (cloned).
    cloned: HashMap<String, u64>,
    start: Instant,
    /// Step 7's pass, and when its last line was written.
    pass: Option<(Meter, Instant)>,
}

/// Writes the history to `W`. With `quiet`, only the final summary.
pub struct TextHistory<W> {
    state: Mutex<State<W>>,
    quiet: bool,
    pass_every: Duration,
}

impl<W: Write + Send> TextHistory<W> {
    /// A history written to `out`; the build's clock starts now.
    pub fn new(out: W, quiet: bool) -> Self {
        Self {
            state: Mutex::new(State {
                out,
                step: None,
                items: HashMap::new(),
                cached: std::collections::HashSet::new(),
                cloned: HashMap::new(),
                start: Instant::now(),
                pass: None,
            }),
            quiet,
            pass_every: PASS_LINE_EVERY,
        }
    }

    /// Step 7's progress lines at most every `every` (default
    /// [`PASS_LINE_EVERY`]).
    #[must_use]
    pub fn with_pass_interval(mut self, every: Duration) -> Self {
        self.pass_every = every;
        self
    }

    /// `delta` more bytes of step 7's pass; the history line that calls
    /// for, if one is due (the [`super::Console`] writes it with its bars
    /// cleared).
    pub(super) fn pass_line(&self, delta: u64) -> Option<String> {
        let mut st = self.state.lock().ok()?;
        let (meter, last) = st.pass.as_mut()?;
        if meter.complete() {
            return None;
        }
        meter.advance(delta);
        if self.quiet {
            return None;
        }
        let rate = meter.rate().map(|r| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            // display only; a rate is positive
            let r = r as u64;
            human_bytes(r)
        });
        if meter.complete() {
            let mut line = format!("    ✓ image read  {}", human_bytes(meter.total));
            if let Some(r) = rate {
                line.push_str(&format!("  {r}/s"));
            }
            return Some(line);
        }
        if last.elapsed() < self.pass_every {
            return None;
        }
        *last = Instant::now();
        let pct = meter.done.saturating_mul(100) / meter.total.max(1);
        let mut line = format!(
            "    image read  {} of {} ({pct}%)",
            human_bytes(meter.done),
            human_bytes(meter.total)
        );
        if let (Some(r), Some(left)) = (rate, meter.seconds_left()) {
            line.push_str(&format!("  {r}/s  {} left", human_duration(left)));
        }
        Some(line)
    }

    /// One line of the history.
    pub(super) fn write_line(&self, line: &str) {
        self.with(|st| writeln!(st.out, "{line}"));
    }

    /// The writer back (tests).
    pub fn into_inner(self) -> Option<W> {
        self.state.into_inner().ok().map(|s| s.out)
    }

    fn with(&self, f: impl FnOnce(&mut State<W>) -> std::io::Result<()>) {
        if let Ok(mut st) = self.state.lock() {
            // A closed stdout must not stop the build.
            let _ = f(&mut st).and_then(|()| st.out.flush());
        }
    }

    fn end_step(&self, st: &mut State<W>, ok: bool) -> std::io::Result<()> {
        if let Some((name, t)) = st.step.take() {
            if !self.quiet || !ok {
                let mark = if ok { '✓' } else { '✗' };
                writeln!(st.out, "{mark} {name} ({:.1}s)", t.elapsed().as_secs_f64())?;
            }
        }
        Ok(())
    }
}

impl<W: Write + Send> Reporter for TextHistory<W> {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.with(|st| {
            self.end_step(st, true)?;
            let label = format!("[{index}/{count}] {name}");
            if !self.quiet {
                writeln!(st.out, "{label}")?;
            }
            st.step = Some((label, Instant::now()));
            Ok(())
        });
    }

    fn item_started(&self, name: &str, _total: Option<u64>) {
        self.with(|st| {
            st.items.insert(name.to_string(), Instant::now());
            Ok(())
        });
    }

    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        self.with(|st| {
            let started = st.items.remove(name);
            if self.quiet {
                return Ok(());
            }
            write!(st.out, "    ✓ {name}  {}", human_bytes(bytes))?;
            if let Some(r) = started.and_then(|t| rate(bytes, t.elapsed())) {
                write!(st.out, "  {r}")?;
            }
            if let Some(d) = digest {
                write!(st.out, "  {d}")?;
            }
            if st.cached.remove(name) {
                write!(st.out, "  (from the cache)")?;
            }
            if let Some(n) = st.cloned.remove(name) {
                write!(
                    st.out,
                    "  ({} cloned, shared with the cache)",
                    human_bytes(n)
                )?;
            }
            writeln!(st.out)
        });
    }

    /// A line for the device's write, and its clock restarted for the
    /// read-back (whose `item_done` line follows).
    fn item_verifying(&self, name: &str, total_bytes: u64) {
        self.with(|st| {
            let started = st.items.insert(name.to_string(), Instant::now());
            if self.quiet {
                return Ok(());
            }
            write!(st.out, "    ✓ {name} written  {}", human_bytes(total_bytes))?;
            if let Some(r) = started.and_then(|t| rate(total_bytes, t.elapsed())) {
                write!(st.out, "  {r}")?;
            }
            writeln!(st.out, "; reading it back")
        });
    }

    fn item_cloned(&self, name: &str, bytes: u64) {
        self.with(|st| {
            st.cloned.insert(name.to_string(), bytes);
            Ok(())
        });
    }

    fn item_cached(&self, name: &str) {
        self.with(|st| {
            st.cached.insert(name.to_string());
            Ok(())
        });
    }

    fn item_failed(&self, name: &str, error: &str) {
        self.with(|st| {
            st.items.remove(name);
            writeln!(st.out, "    ✗ {name}: {error}")
        });
    }

    fn warn(&self, _message: &str) {}

    fn pass_started(&self, total_bytes: u64) {
        self.with(|st| {
            st.pass = Some((Meter::start(total_bytes), Instant::now()));
            Ok(())
        });
    }

    fn pass_progress(&self, bytes_delta: u64) {
        if let Some(line) = self.pass_line(bytes_delta) {
            self.write_line(&line);
        }
    }

    fn finished(&self, how: &Finish) {
        self.with(|st| {
            let ok = match how {
                Finish::Failed { .. } => false,
                Finish::Flashed {
                    devices, succeeded, ..
                } => succeeded == devices,
                _ => true,
            };
            self.end_step(st, ok)?;
            if let Finish::Succeeded {
                image,
                image_bytes,
                content_bytes,
            } = how
            {
                let took = st.start.elapsed();
                write!(
                    st.out,
                    "✓ {}: {} image, {} of content, in {:.1}s",
                    image.display(),
                    human_bytes(*image_bytes),
                    human_bytes(*content_bytes),
                    took.as_secs_f64()
                )?;
                if let Some(r) = rate(*content_bytes, took) {
                    write!(st.out, " ({r})")?;
                }
                writeln!(st.out)?;
            }
            if let Finish::Flashed {
                source,
                image_bytes,
                devices,
                succeeded,
            } = how
            {
                let mark = if succeeded == devices { '✓' } else { '✗' };
                writeln!(
                    st.out,
                    "{mark} {source} ({}): {succeeded} of {devices} device(s) done, in {:.1}s",
                    human_bytes(*image_bytes),
                    st.start.elapsed().as_secs_f64()
                )?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history(quiet: bool, f: impl FnOnce(&TextHistory<Vec<u8>>)) -> String {
        let h = TextHistory::new(Vec::new(), quiet);
        f(&h);
        String::from_utf8(h.into_inner().expect("writer")).expect("utf-8")
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn steps_items_and_summary() {
        let out = history(false, |h| {
            h.step(1, 2, "reading");
            h.step(2, 2, "writing");
            h.item_started("/data/a", Some(2048));
            h.item_done("/data/a", 2048, Some("md5:abc"));
            h.finished(&Finish::Succeeded {
                image: "out.img".into(),
                image_bytes: 1 << 20,
                content_bytes: 2048,
            });
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "[1/2] reading");
        assert!(lines[1].starts_with("✓ [1/2] reading ("), "{out}");
        assert_eq!(lines[2], "[2/2] writing");
        assert!(lines[3].starts_with("    ✓ /data/a  2.0 KiB  "), "{out}");
        assert!(lines[3].ends_with("  md5:abc"), "{out}");
        assert!(lines[4].starts_with("✓ [2/2] writing ("), "{out}");
        assert!(
            lines[5].starts_with("✓ out.img: 1.0 MiB image, 2.0 KiB of content, in "),
            "{out}"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn failure_marks_the_step() {
        let out = history(false, |h| {
            h.step(1, 1, "writing");
            h.item_failed("/data/x", "checksum mismatch");
            h.finished(&Finish::Failed {
                message: "boom".into(),
            });
        });
        assert!(out.contains("    ✗ /data/x: checksum mismatch\n"), "{out}");
        assert!(out.contains("✗ [1/1] writing ("), "{out}");
    }

    #[test]
    fn step_seven_shows_bytes_rate_and_time_left_then_a_last_line() {
        let h = TextHistory::new(Vec::new(), false).with_pass_interval(Duration::ZERO);
        h.step(7, 7, "hashing");
        h.pass_started(4 << 20);
        h.pass_progress(1 << 20);
        std::thread::sleep(Duration::from_millis(2));
        h.pass_progress(1 << 20);
        h.pass_progress(2 << 20);
        // Past the end: nothing more.
        h.pass_progress(1);
        let out = String::from_utf8(h.into_inner().expect("writer")).expect("utf-8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(
            lines[1].starts_with("    image read  1.0 MiB of 4.0 MiB (25%)"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("    image read  2.0 MiB of 4.0 MiB (50%)  ")
                && lines[2].contains("/s  ")
                && lines[2].ends_with(" left"),
            "{out}"
        );
        assert!(lines[3].starts_with("    ✓ image read  4.0 MiB  "), "{out}");
        assert!(lines[3].ends_with("/s"), "{out}");
    }

    #[test]
    fn step_seven_lines_are_spaced_and_quiet_has_none() {
        let h = TextHistory::new(Vec::new(), false);
        h.pass_started(100);
        for _ in 0..99 {
            h.pass_progress(1);
        }
        h.pass_progress(1);
        let out = String::from_utf8(h.into_inner().expect("writer")).expect("utf-8");
        // 99 events within 10 s: no line until the last.
        assert_eq!(out.lines().count(), 1, "{out}");
        let out = history(true, |h| {
            h.pass_started(10);
            h.pass_progress(10);
        });
        assert!(out.is_empty(), "{out}");
    }

    #[test]
    fn quiet_prints_only_the_summary() {
        let out = history(true, |h| {
            h.step(1, 1, "writing");
            h.item_done("/data/a", 1, None);
            h.finished(&Finish::Succeeded {
                image: "o.img".into(),
                image_bytes: 1,
                content_bytes: 1,
            });
        });
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(out.starts_with("✓ o.img: "));
    }
}
