//! Live progress bars on stderr (indicatif): the current step, overall bytes
//! and one bar per running item; in step 7, the read of the image (bytes
//! of the total, rate, time left). The binary creates them only when stderr is
//! a terminal and neither `NO_COLOR` nor `--quiet` is set.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Finish, Reporter};

/// Spinner redraw period: 10 Hz keeps "still working" visible at no cost.
const TICK: Duration = Duration::from_millis(100);

/// The bars; see the module documentation.
pub struct Bars {
    multi: MultiProgress,
    step: ProgressBar,
    overall: ProgressBar,
    overall_shown: AtomicBool,
    planned: Mutex<HashMap<String, u64>>,
    items: Mutex<HashMap<String, ProgressBar>>,
    item_style: ProgressStyle,
    /// Step 7's read of the image, once it starts.
    pass: Mutex<Option<ProgressBar>>,
}

impl Bars {
    /// Bars drawn on stderr.
    pub fn stderr() -> Self {
        Self::new(ProgressDrawTarget::stderr())
    }

    /// Bars drawn on `target` (hidden in tests).
    pub fn new(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let step = multi.add(ProgressBar::new_spinner());
        if let Ok(s) = ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]") {
            step.set_style(s);
        }
        step.enable_steady_tick(TICK);
        let overall = ProgressBar::hidden();
        let item_style = ProgressStyle::with_template(
            "  {wide_msg} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        Self {
            multi,
            step,
            overall,
            overall_shown: AtomicBool::new(false),
            planned: Mutex::new(HashMap::new()),
            items: Mutex::new(HashMap::new()),
            item_style,
            pass: Mutex::new(None),
        }
    }

    /// Run `f` (which writes to the terminal) with the bars cleared.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.multi.suspend(f)
    }

    fn remove(&self, name: &str) {
        if let Some(pb) = self.items.lock().ok().and_then(|mut m| m.remove(name)) {
            pb.finish_and_clear();
            self.multi.remove(&pb);
        }
    }
}

impl Reporter for Bars {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.step.set_message(format!("[{index}/{count}] {name}"));
    }

    fn items_planned(&self, items: &[(String, u64)]) {
        let total = match self.planned.lock() {
            Ok(mut m) => {
                // Planned again (after a re-plan): replace the old sizes.
                m.extend(items.iter().cloned());
                m.values().sum()
            }
            Err(_) => items.iter().map(|(_, b)| *b).sum(),
        };
        self.overall.set_length(total);
        if !self.overall_shown.swap(true, Ordering::Relaxed) {
            if let Ok(s) = ProgressStyle::with_template(
                "{bar:40} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}",
            ) {
                self.overall.set_style(s);
            }
            let _ = self.multi.insert_after(&self.step, self.overall.clone());
        }
    }

    fn item_started(&self, name: &str, total_bytes: Option<u64>) {
        let pb = self
            .multi
            .add(ProgressBar::new(total_bytes.unwrap_or(0)).with_style(self.item_style.clone()));
        pb.set_message(name.to_string());
        if let Ok(mut m) = self.items.lock() {
            m.insert(name.to_string(), pb);
        }
    }

    fn item_progress(&self, name: &str, bytes_delta: u64) {
        self.overall.inc(bytes_delta);
        if let Some(pb) = self.items.lock().ok().and_then(|m| m.get(name).cloned()) {
            pb.inc(bytes_delta);
        }
    }

    fn item_done(&self, name: &str, _bytes: u64, _digest: Option<&str>) {
        self.remove(name);
    }

    /// The device's bar starts over for its read-back.
    fn item_verifying(&self, name: &str, total_bytes: u64) {
        if let Some(pb) = self.items.lock().ok().and_then(|m| m.get(name).cloned()) {
            pb.set_length(total_bytes);
            pb.set_position(0);
            pb.reset_eta();
            pb.set_message(format!("{name} (reading back)"));
        }
    }

    fn item_verified(&self, name: &str, bytes_delta: u64) {
        if let Some(pb) = self.items.lock().ok().and_then(|m| m.get(name).cloned()) {
            pb.inc(bytes_delta);
        }
    }

    fn item_failed(&self, name: &str, _error: &str) {
        self.remove(name);
    }

    fn warn(&self, _message: &str) {}

    fn pass_started(&self, total_bytes: u64) {
        let pb = self.multi.add(ProgressBar::new(total_bytes));
        if let Ok(s) = ProgressStyle::with_template(
            "  image read {bar:30} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta}",
        ) {
            pb.set_style(s);
        }
        if let Ok(mut p) = self.pass.lock() {
            if let Some(old) = p.replace(pb) {
                old.finish_and_clear();
                self.multi.remove(&old);
            }
        }
    }

    fn pass_progress(&self, bytes_delta: u64) {
        if let Some(pb) = self.pass.lock().ok().and_then(|p| p.clone()) {
            pb.inc(bytes_delta);
        }
    }

    fn finished(&self, _how: &Finish) {
        if let Some(pb) = self.pass.lock().ok().and_then(|mut p| p.take()) {
            pb.finish_and_clear();
        }
        if let Ok(mut m) = self.items.lock() {
            for (_, pb) in m.drain() {
                pb.finish_and_clear();
            }
        }
        self.overall.finish_and_clear();
        self.step.finish_and_clear();
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_bars_follow_events() {
        let b = Bars::new(ProgressDrawTarget::hidden());
        b.step(4, 6, "data");
        b.items_planned(&[("a".into(), 9), ("b".into(), 5)]);
        b.items_planned(&[("a".into(), 10), ("b".into(), 5)]);
        b.item_started("a", Some(10));
        b.item_progress("a", 7);
        assert_eq!(b.overall.position(), 7);
        assert_eq!(b.overall.length(), Some(15));
        b.item_done("a", 10, None);
        assert!(b.items.lock().map(|m| m.is_empty()).unwrap_or(false));
        b.pass_started(100);
        b.pass_progress(40);
        let pass = b
            .pass
            .lock()
            .ok()
            .and_then(|p| p.clone())
            .expect("a pass bar");
        assert_eq!((pass.position(), pass.length()), (40, Some(100)));
        b.finished(&Finish::Checked);
        assert!(pass.is_finished());
    }
}
