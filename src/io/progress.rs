//! A [`ChunkSink`] adapter that reports an item's bytes as they are written.

use super::ChunkSink;
use crate::progress::Reporter;

/// A [`ChunkSink`] adapter that reports the bytes of one item as they are
/// written. It counts the high-water mark of the
/// payload, so a resumed or restarted transfer never counts a byte twice.
pub struct ProgressSink<'a, S> {
    inner: S,
    reporter: &'a dyn Reporter,
    name: &'a str,
    high: u64,
}

impl<'a, S> ProgressSink<'a, S> {
    /// The wrapped sink.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Count from `high`: the payload's first `high` bytes were reported
    /// already (a download continued from a partial one).
    #[must_use]
    pub fn starting_at(mut self, high: u64) -> Self {
        self.high = high;
        self
    }

    /// Wrap `inner`, reporting to `reporter` under `name`.
    pub fn new(inner: S, reporter: &'a dyn Reporter, name: &'a str) -> Self {
        Self {
            inner,
            reporter,
            name,
            high: 0,
        }
    }
}

impl<S: ChunkSink> ChunkSink for ProgressSink<'_, S> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.inner.write(offset, data)?;
        let end = offset.saturating_add(data.len() as u64);
        if end > self.high {
            self.reporter.item_progress(self.name, end - self.high);
            self.high = end;
        }
        Ok(())
    }
    fn restart(&mut self) -> bool {
        self.inner.restart()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::{Event, Recorder};

    struct Null;
    impl ChunkSink for Null {
        fn write(&mut self, _: u64, _: &[u8]) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn progress_sink_counts_each_byte_once() {
        let rec = Recorder::default();
        let mut s = ProgressSink::new(Null, &rec, "f");
        s.write(0, &[0; 10]).ok();
        s.write(10, &[0; 5]).ok();
        // A restart rewrites from 0: nothing new until past 15.
        assert!(s.restart());
        s.write(0, &[0; 12]).ok();
        s.write(12, &[0; 8]).ok();
        let total: u64 = rec
            .events()
            .iter()
            .map(|e| match e {
                Event::ItemProgress { bytes, .. } => *bytes,
                _ => 0,
            })
            .sum();
        assert_eq!(total, 20);
    }
}
