//! A reporter that records every event, for tests.

use std::sync::Mutex;

use super::{Finish, Reporter};

/// One reported event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// [`Reporter::step`].
    Step {
        /// 1-based index.
        index: usize,
        /// Number of steps.
        count: usize,
        /// Step name.
        name: String,
    },
    /// [`Reporter::items_planned`].
    ItemsPlanned(Vec<(String, u64)>),
    /// [`Reporter::item_started`].
    ItemStarted {
        /// Item name.
        name: String,
        /// Expected size.
        total: Option<u64>,
    },
    /// [`Reporter::item_progress`].
    ItemProgress {
        /// Item name.
        name: String,
        /// Bytes written since the last event.
        bytes: u64,
    },
    /// [`Reporter::item_cached`].
    ItemCached(String),
    /// [`Reporter::item_cloned`]: the item and its bytes shared.
    ItemCloned(String, u64),
    /// [`Reporter::item_done`].
    ItemDone {
        /// Item name.
        name: String,
        /// Size.
        bytes: u64,
        /// Digest, when computed.
        digest: Option<String>,
    },
    /// [`Reporter::item_failed`].
    ItemFailed {
        /// Item name.
        name: String,
        /// Error message.
        error: String,
    },
    /// [`Reporter::item_verifying`].
    ItemVerifying {
        /// Item name.
        name: String,
        /// Bytes to read back.
        total: u64,
    },
    /// [`Reporter::item_verified`].
    ItemVerified {
        /// Item name.
        name: String,
        /// Bytes read back since the last event.
        bytes: u64,
    },
    /// [`Reporter::warn`].
    Warn(String),
    /// [`Reporter::pass_started`].
    PassStarted {
        /// Bytes the pass goes through.
        total: u64,
    },
    /// [`Reporter::pass_progress`].
    PassProgress {
        /// Bytes since the last event.
        bytes: u64,
    },
    /// [`Reporter::finished`].
    Finished(Finish),
}

/// Records events in the order they arrive.
#[derive(Debug, Default)]
pub struct Recorder(Mutex<Vec<Event>>);

impl Recorder {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.0.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn push(&self, e: Event) {
        if let Ok(mut g) = self.0.lock() {
            g.push(e);
        }
    }
}

impl Reporter for Recorder {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.push(Event::Step {
            index,
            count,
            name: name.into(),
        });
    }
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        self.push(Event::ItemDone {
            name: name.into(),
            bytes,
            digest: digest.map(Into::into),
        });
    }
    fn warn(&self, message: &str) {
        self.push(Event::Warn(message.into()));
    }
    fn item_cached(&self, name: &str) {
        self.push(Event::ItemCached(name.into()));
    }
    fn item_verifying(&self, name: &str, total_bytes: u64) {
        self.push(Event::ItemVerifying {
            name: name.into(),
            total: total_bytes,
        });
    }
    fn item_verified(&self, name: &str, bytes_delta: u64) {
        self.push(Event::ItemVerified {
            name: name.into(),
            bytes: bytes_delta,
        });
    }
    fn item_cloned(&self, name: &str, bytes: u64) {
        self.push(Event::ItemCloned(name.into(), bytes));
    }
    fn items_planned(&self, items: &[(String, u64)]) {
        self.push(Event::ItemsPlanned(items.to_vec()));
    }
    fn item_started(&self, name: &str, total_bytes: Option<u64>) {
        self.push(Event::ItemStarted {
            name: name.into(),
            total: total_bytes,
        });
    }
    fn item_progress(&self, name: &str, bytes_delta: u64) {
        self.push(Event::ItemProgress {
            name: name.into(),
            bytes: bytes_delta,
        });
    }
    fn item_failed(&self, name: &str, error: &str) {
        self.push(Event::ItemFailed {
            name: name.into(),
            error: error.into(),
        });
    }
    fn pass_started(&self, total_bytes: u64) {
        self.push(Event::PassStarted { total: total_bytes });
    }
    fn pass_progress(&self, bytes_delta: u64) {
        self.push(Event::PassProgress { bytes: bytes_delta });
    }
    fn finished(&self, how: &Finish) {
        self.push(Event::Finished(how.clone()));
    }
}
