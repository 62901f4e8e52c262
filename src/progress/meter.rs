//! [`Meter`]: bytes done of a known total since a start, with the mean
//! rate and the time left at that rate; what step 7's pass shows in the
//! history, the bars' neighbours and the progress file.

use std::time::{Duration, Instant};

/// Progress of one run of bytes (step 7's read of the image).
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    /// Bytes to go through.
    pub total: u64,
    /// Bytes gone through.
    pub done: u64,
    started: Instant,
}

impl Meter {
    /// Nothing done of `total`; the clock starts now.
    pub fn start(total: u64) -> Self {
        Self {
            total,
            done: 0,
            started: Instant::now(),
        }
    }

    /// `delta` more bytes (never past the total).
    pub fn advance(&mut self, delta: u64) {
        self.done = self.done.saturating_add(delta).min(self.total);
    }

    /// Whether every byte is done.
    pub fn complete(&self) -> bool {
        self.done >= self.total
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Mean bytes per second since the start; None before any time or
    /// byte has passed.
    pub fn rate(&self) -> Option<f64> {
        let s = self.elapsed().as_secs_f64();
        #[allow(clippy::cast_precision_loss)] // a display figure
        let done = self.done as f64;
        (s > 0.0 && self.done > 0).then(|| done / s)
    }

    /// Seconds left at the mean rate; 0 when complete, None before a rate.
    pub fn seconds_left(&self) -> Option<f64> {
        if self.complete() {
            return Some(0.0);
        }
        #[allow(clippy::cast_precision_loss)] // a display figure
        let left = (self.total - self.done) as f64;
        self.rate().map(|r| left / r)
    }
}

/// `75` → `1m 15s`; `4000` → `1h 06m`; `9.4` → `10s` (rounded up).
pub fn human_duration(secs: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    // display only; negative and NaN clamp to 0, huge to u64::MAX
    let s = secs.max(0.0).ceil() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_to_the_total_and_no_further() {
        let mut m = Meter::start(100);
        assert_eq!((m.rate(), m.seconds_left()), (None, None));
        m.advance(40);
        std::thread::sleep(Duration::from_millis(5));
        assert!(m.rate().is_some_and(|r| r > 0.0));
        assert!(m.seconds_left().is_some_and(|s| s > 0.0));
        m.advance(100);
        assert_eq!(m.done, 100);
        assert!(m.complete());
        assert_eq!(m.seconds_left(), Some(0.0));
    }

    #[test]
    fn durations() {
        assert_eq!(human_duration(0.0), "0s");
        assert_eq!(human_duration(9.4), "10s");
        assert_eq!(human_duration(75.0), "1m 15s");
        assert_eq!(human_duration(4000.0), "1h 06m");
        assert_eq!(human_duration(-3.0), "0s");
    }
}
