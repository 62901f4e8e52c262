//! Progress reporting: library code reports events to a [`Reporter`]; it
//! never prints. Renderers turn the events into a text history
//! ([`TextHistory`]), live bars ([`Bars`]) and a JSON progress file
//! ([`ProgressFile`], schema in `docs/progress.md`); [`Console`] is the
//! terminal (history, bars, warnings, `--debug` logs); [`Tee`] feeds several.
//!
//! The event model:
//! - `step(i, n, name)` starts step `i` of `n` and ends the previous one
//!   successfully; the last step ends with `finished`.
//! - `items_planned` lists items with their sizes before they start (the
//!   base image and every data item once planned; again, with the same
//!   names, when the data step begins).
//! - `item_started` → `item_progress`* → `item_done` | `item_failed`.
//! - `pass_started` → `pass_progress`*: step 7's read of the image (when
//!   it reads it), its bytes adding up to the total it announced.
//! - `finished` ends the build: success (with the image) or the error.

mod bars;
mod console;
mod file;
mod meter;
mod recorder;

mod text;
mod time;

pub use bars::Bars;
pub use console::{Console, ConsoleOptions};
pub use file::{ProgressFile, ProgressFileOptions, SCHEMA_VERSION};
pub use meter::{human_duration, Meter};
pub use recorder::{Event, Recorder};

pub use text::{human_bytes, TextHistory};
pub use time::{civil_from_days, rfc3339};

use std::path::PathBuf;

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The image was written.
    Succeeded {
        /// Output path.
        image: PathBuf,
        /// Image size in bytes.
        image_bytes: u64,
        /// Bytes of content written into the data partition.
        content_bytes: u64,
    },
    /// `--check`: planned only.
    Checked,
    /// `flash` ended: `succeeded` of `devices` were written (and
    /// verified unless `--no-verify`); the others failed.
    Flashed {
        /// The image flashed (path or URL).
        source: String,
        /// Its size.
        image_bytes: u64,
        /// Devices given.
        devices: usize,
        /// Devices written (and verified).
        succeeded: usize,
    },
    /// The build failed with this message.
    Failed {
        /// The error, as shown to the user.
        message: String,
    },
}

/// Receives build events. Every method but the first three has a no-op
/// default, so a reporter implements only what it renders.
pub trait Reporter: Send + Sync {
    /// A step starts (`index` of `count`); the previous step, if any, ended
    /// successfully.
    fn step(&self, index: usize, count: usize, name: &str);
    /// An item (file, archive, image) is done: `bytes` written, and its
    /// digest when one was computed.
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>);
    /// Something the user should know but that does not stop the build.
    fn warn(&self, message: &str);

    /// Items with their sizes, before they start. May come again with the
    /// same names (after a re-plan): the new sizes replace the old ones.
    fn items_planned(&self, _items: &[(String, u64)]) {}
    /// An item starts; `total_bytes` when known.
    fn item_started(&self, _name: &str, _total_bytes: Option<u64>) {}
    /// `bytes_delta` more bytes of an item are written.
    fn item_progress(&self, _name: &str, _bytes_delta: u64) {}
    /// An item failed (the build will fail too).
    fn item_failed(&self, _name: &str, _error: &str) {}
    /// An item's bytes came from the download cache (sent before its
    /// `item_done`).
    fn item_cached(&self, _name: &str) {}
    /// A device's write is done and its read-back starts (`flash`):
    /// `total_bytes` to read and check. The item stays running until its
    /// `item_done` or `item_failed`.
    fn item_verifying(&self, _name: &str, _total_bytes: u64) {}
    /// `bytes_delta` more bytes of a device were read back and hashed.
    fn item_verified(&self, _name: &str, _bytes_delta: u64) {}
    /// `bytes` of an item share their blocks with the download cache's
    /// copy (cloned on XFS or btrfs, not written; sent before its
    /// `item_done`).
    fn item_cloned(&self, _name: &str, _bytes: u64) {}
    /// Step 7's pass starts reading the image: `total_bytes`, holes
    /// included (they are not read, but count as they go by). Not sent
    /// when step 7 reads nothing (a raw OUTPUT with no hash, bmap or
    /// torrent asked for, a device).
    fn pass_started(&self, _total_bytes: u64) {}
    /// Step 7's pass went `bytes_delta` further through the image.
    fn pass_progress(&self, _bytes_delta: u64) {}
    /// The build ended; the current step ends with it.
    fn finished(&self, _how: &Finish) {}
}

/// A reporter that drops everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _: usize, _: usize, _: &str) {}
    fn item_done(&self, _: &str, _: u64, _: Option<&str>) {}
    fn warn(&self, _: &str) {}
}

/// Sends every event to each reporter, in order.
pub struct Tee<'a>(pub Vec<&'a dyn Reporter>);

impl Reporter for Tee<'_> {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.0.iter().for_each(|r| r.step(index, count, name));
    }
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        self.0.iter().for_each(|r| r.item_done(name, bytes, digest));
    }
    fn warn(&self, message: &str) {
        self.0.iter().for_each(|r| r.warn(message));
    }
    fn items_planned(&self, items: &[(String, u64)]) {
        self.0.iter().for_each(|r| r.items_planned(items));
    }
    fn item_started(&self, name: &str, total_bytes: Option<u64>) {
        self.0
            .iter()
            .for_each(|r| r.item_started(name, total_bytes));
    }
    fn item_progress(&self, name: &str, bytes_delta: u64) {
        self.0
            .iter()
            .for_each(|r| r.item_progress(name, bytes_delta));
    }
    fn item_failed(&self, name: &str, error: &str) {
        self.0.iter().for_each(|r| r.item_failed(name, error));
    }
    fn item_cached(&self, name: &str) {
        self.0.iter().for_each(|r| r.item_cached(name));
    }
    fn item_verifying(&self, name: &str, total_bytes: u64) {
        self.0
            .iter()
            .for_each(|r| r.item_verifying(name, total_bytes));
    }
    fn item_verified(&self, name: &str, bytes_delta: u64) {
        self.0
            .iter()
            .for_each(|r| r.item_verified(name, bytes_delta));
    }
    fn item_cloned(&self, name: &str, bytes: u64) {
        self.0.iter().for_each(|r| r.item_cloned(name, bytes));
    }
    fn pass_started(&self, total_bytes: u64) {
        self.0.iter().for_each(|r| r.pass_started(total_bytes));
    }
    fn pass_progress(&self, bytes_delta: u64) {
        self.0.iter().for_each(|r| r.pass_progress(bytes_delta));
    }
    fn finished(&self, how: &Finish) {
        self.0.iter().for_each(|r| r.finished(how));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_forwards_in_order() {
        let (a, b) = (Recorder::default(), Recorder::default());
        let tee = Tee(vec![&a, &b]);
        tee.step(1, 2, "one");
        tee.item_started("x", Some(3));
        tee.item_progress("x", 3);
        tee.item_done("x", 3, None);
        tee.warn("w");
        tee.pass_started(9);
        tee.pass_progress(9);
        tee.finished(&Finish::Checked);
        assert_eq!(a.events(), b.events());
        assert_eq!(a.events().len(), 8);
    }
}
