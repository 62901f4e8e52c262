//! The JSON progress file (`--progress-file`, schema in `docs/progress.md`):
//! a state machine fed by [`Reporter`] events, written whole to a temporary
//! file in the same directory and renamed over the target, so a reader never
//! sees a partial file. Writes happen at every step change and at the end
//! at once; otherwise a timer thread writes at most every `min_interval`
//! when something moved, and at least every `heartbeat` even when nothing
//! did, so a watcher can tell a stall (fresh `updated_at`, same bytes) from
//! a dead process (stale `updated_at`).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use super::meter::Meter;
use super::{rfc3339, Finish, Reporter};

/// Version of the file's schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Timing of the writes.
#[derive(Debug, Clone, Copy)]
pub struct ProgressFileOptions {
    /// Least time between two writes caused by progress: 0.5 s, so a build
    /// with thousands of items does not rewrite the file thousands of times
    /// a second.
    pub min_interval: Duration,
    /// Most time between two writes, even when nothing moves: 2 s.
    pub heartbeat: Duration,
}

impl Default for ProgressFileOptions {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_millis(500),
            heartbeat: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct StepInfo {
    index: usize,
    count: usize,
    name: String,
}

#[derive(Debug, Clone, Serialize)]
struct ItemInfo {
    name: String,
    /// `pending`, `running`, `done`, `failed`.
    state: &'static str,
    bytes_done: u64,
    bytes_total: Option<u64>,
    digest: Option<String>,
    error: Option<String>,
    /// The bytes came from the download cache.
    from_cache: bool,
    /// `flash`: bytes of the device read back and checked so far; null
    /// before its read-back starts.
    bytes_verified: Option<u64>,
    /// `flash`: bytes its read-back checks; null before it starts.
    bytes_to_verify: Option<u64>,
    /// Bytes that share their blocks with the download cache's copy
    /// (cloned on XFS or btrfs, not written).
    cloned_bytes: u64,
}

/// Step 7's read of the image.
#[derive(Debug, Clone, Serialize)]
struct PassInfo {
    bytes_read: u64,
    bytes_total: u64,
    /// Mean since the pass started; null before a byte was read.
    bytes_per_second: Option<f64>,
    /// At that rate; 0 when done, null before a rate.
    seconds_left: Option<f64>,
}

impl From<&Meter> for PassInfo {
    fn from(m: &Meter) -> Self {
        Self {
            bytes_read: m.done,
            bytes_total: m.total,
            bytes_per_second: m.rate(),
            seconds_left: m.seconds_left(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
struct ImageInfo {
    path: PathBuf,
    bytes: u64,
    content_bytes: u64,
}

/// The file's content.
#[derive(Debug, Clone, Serialize)]
struct Snapshot {
    schema: u32,
    /// `running`, `succeeded`, `failed`.
    status: &'static str,
    started_at: String,
    updated_at: String,
    elapsed_seconds: f64,
    step: Option<StepInfo>,
    bytes_done: u64,
    bytes_total: u64,
    items_done: usize,
    items_failed: usize,
    items: Vec<ItemInfo>,
    warnings: Vec<String>,
    error: Option<String>,
    image: Option<ImageInfo>,
    /// Step 7's read of the image, once it started (null before, and
    /// when step 7 reads nothing).
    output_pass: Option<PassInfo>,
}

struct State {
    snap: Snapshot,
    pass: Option<Meter>,
    index: HashMap<String, usize>,
    started: Instant,
    last_write: Instant,
    dirty: bool,
    stop: bool,
    writes: u64,
    error: Option<String>,
}

impl State {
    fn item(&mut self, name: &str) -> &mut ItemInfo {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.snap.items.push(ItemInfo {
                    name: name.to_string(),
                    state: "pending",
                    bytes_done: 0,
                    bytes_total: None,
                    digest: None,
                    error: None,
                    from_cache: false,
                    bytes_verified: None,
                    bytes_to_verify: None,
                    cloned_bytes: 0,
                });
                let i = self.snap.items.len() - 1;
                self.index.insert(name.to_string(), i);
                i
            }
        };
        &mut self.snap.items[i]
    }
}

struct Inner {
    path: PathBuf,
    opts: ProgressFileOptions,
    state: Mutex<State>,
    wake: Condvar,
    /// Held while a snapshot is taken and written, so writes land in order.
    writing: Mutex<()>,
}

impl Inner {
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// Take a snapshot and write it (temp file + rename).
    fn write_now(&self) {
        let Ok(_w) = self.writing.lock() else { return };
        let json = {
            let Some(mut st) = self.lock() else { return };
            let now = SystemTime::now();
            st.snap.updated_at = rfc3339(now);
            st.snap.elapsed_seconds = st.started.elapsed().as_secs_f64();
            st.dirty = false;
            st.last_write = Instant::now();
            st.snap.output_pass = st.pass.as_ref().map(PassInfo::from);
            st.writes += 1;
            serde_json::to_vec_pretty(&st.snap)
        };
        let res = json
            .map_err(std::io::Error::other)
            .and_then(|j| write_atomic(&self.path, &j));
        if let Err(e) = res {
            if let Some(mut st) = self.lock() {
                st.error
                    .get_or_insert_with(|| format!("writing {}: {e}", self.path.display()));
            }
        }
    }

    fn timer(&self) {
        loop {
            let Some(st) = self.lock() else { return };
            let Ok((st, _)) = self.wake.wait_timeout(st, self.opts.min_interval) else {
                return;
            };
            if st.stop {
                return;
            }
            let since = st.last_write.elapsed();
            let due = (st.dirty && since >= self.opts.min_interval) || since >= self.opts.heartbeat;
            drop(st);
            if due {
                self.write_now();
            }
        }
    }
}

/// Write `data` to a temporary file beside `path`, then rename it over `path`.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "progress".into(), |n| n.to_string_lossy());
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Keeps the JSON progress file up to date; see the module documentation.
pub struct ProgressFile {
    inner: Arc<Inner>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl ProgressFile {
    /// Write the first snapshot (`running`, no step yet) to `path` and start
    /// the timer. Fails if the file can't be written.
    pub fn create(path: &Path, opts: ProgressFileOptions) -> std::io::Result<Self> {
        let now = Instant::now();
        let snap = Snapshot {
            schema: SCHEMA_VERSION,
            status: "running",
            started_at: rfc3339(SystemTime::now()),
            updated_at: String::new(),
            elapsed_seconds: 0.0,
            step: None,
            bytes_done: 0,
            bytes_total: 0,
            items_done: 0,
            items_failed: 0,
            items: Vec::new(),
            warnings: Vec::new(),
            error: None,
            image: None,
            output_pass: None,
        };
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            opts,
            state: Mutex::new(State {
                snap,
                pass: None,
                index: HashMap::new(),
                started: now,
                last_write: now,
                dirty: false,
                stop: false,
                writes: 0,
                error: None,
            }),
            wake: Condvar::new(),
            writing: Mutex::new(()),
        });
        inner.write_now();
        if let Some(e) = inner.lock().and_then(|mut s| s.error.take()) {
            return Err(std::io::Error::other(e));
        }
        let worker = inner.clone();
        let timer = std::thread::Builder::new()
            .name("progress-file".into())
            .spawn(move || worker.timer())?;
        Ok(Self {
            inner,
            timer: Mutex::new(Some(timer)),
        })
    }

    /// The first write error, if any (the build goes on without the file).
    pub fn error(&self) -> Option<String> {
        self.inner.lock().and_then(|s| s.error.clone())
    }

    /// How many times the file was written.
    pub fn writes(&self) -> u64 {
        self.inner.lock().map_or(0, |s| s.writes)
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        if let Some(mut st) = self.inner.lock() {
            f(&mut st);
            st.dirty = true;
        }
    }

    fn stop_timer(&self) {
        if let Some(mut st) = self.inner.lock() {
            st.stop = true;
        }
        self.inner.wake.notify_all();
        if let Some(h) = self.timer.lock().ok().and_then(|mut t| t.take()) {
            let _ = h.join();
        }
    }
}

impl Drop for ProgressFile {
    fn drop(&mut self) {
        self.stop_timer();
    }
}

impl Reporter for ProgressFile {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.update(|st| {
            st.snap.step = Some(StepInfo {
                index,
                count,
                name: name.to_string(),
            });
        });
        self.inner.write_now();
    }

    fn items_planned(&self, items: &[(String, u64)]) {
        self.update(|st| {
            for (name, bytes) in items {
                let it = st.item(name);
                // Planned again (after a re-plan): replace the old size.
                let old = it.bytes_total.replace(*bytes).unwrap_or(0);
                st.snap.bytes_total = st.snap.bytes_total.saturating_sub(old) + bytes;
            }
        });
    }

    fn item_started(&self, name: &str, total_bytes: Option<u64>) {
        self.update(|st| {
            let it = st.item(name);
            it.state = "running";
            let added = match (it.bytes_total, total_bytes) {
                (None, Some(t)) => {
                    it.bytes_total = Some(t);
                    t
                }
                _ => 0,
            };
            st.snap.bytes_total += added;
        });
    }

    fn item_progress(&self, name: &str, bytes_delta: u64) {
        self.update(|st| {
            st.item(name).bytes_done += bytes_delta;
            st.snap.bytes_done += bytes_delta;
        });
    }

    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        self.update(|st| {
            let it = st.item(name);
            it.state = "done";
            it.digest = digest.map(str::to_string);
            // Items written without progress events count in full here.
            let missing = bytes.saturating_sub(it.bytes_done);
            it.bytes_done += missing;
            let done = it.bytes_done;
            // Finished smaller than planned (a container image's
            // reservation is cut to the archive's size): the total follows,
            // so a finished build reads done == total.
            let (added, removed) = match it.bytes_total {
                None => (done, 0),
                Some(t) if t > done => (0, t - done),
                Some(_) => (0, 0),
            };
            if added > 0 || removed > 0 || it.bytes_total.is_none() {
                it.bytes_total = Some(done);
            }
            st.snap.bytes_done += missing;
            st.snap.bytes_total = (st.snap.bytes_total + added).saturating_sub(removed);
            st.snap.items_done += 1;
        });
    }

    fn item_cached(&self, name: &str) {
        self.update(|st| st.item(name).from_cache = true);
    }

    fn item_verifying(&self, name: &str, total_bytes: u64) {
        self.update(|st| {
            let it = st.item(name);
            it.state = "verifying";
            it.bytes_verified = Some(0);
            it.bytes_to_verify = Some(total_bytes);
        });
        self.inner.write_now();
    }

    fn item_verified(&self, name: &str, bytes_delta: u64) {
        self.update(|st| {
            let it = st.item(name);
            it.bytes_verified = Some(it.bytes_verified.unwrap_or(0) + bytes_delta);
        });
    }

    fn item_cloned(&self, name: &str, bytes: u64) {
        self.update(|st| st.item(name).cloned_bytes = bytes);
    }

    fn item_failed(&self, name: &str, error: &str) {
        self.update(|st| {
            let it = st.item(name);
            it.state = "failed";
            it.error = Some(error.to_string());
            st.snap.items_failed += 1;
        });
    }

    fn warn(&self, message: &str) {
        self.update(|st| st.snap.warnings.push(message.to_string()));
    }

    fn pass_started(&self, total_bytes: u64) {
        self.update(|st| st.pass = Some(Meter::start(total_bytes)));
        self.inner.write_now();
    }

    fn pass_progress(&self, bytes_delta: u64) {
        self.update(|st| {
            if let Some(m) = st.pass.as_mut() {
                m.advance(bytes_delta);
            }
        });
    }

    fn finished(&self, how: &Finish) {
        self.stop_timer();
        self.update(|st| match how {
            Finish::Succeeded {
                image,
                image_bytes,
                content_bytes,
            } => {
                st.snap.status = "succeeded";
                st.snap.image = Some(ImageInfo {
                    path: image.clone(),
                    bytes: *image_bytes,
                    content_bytes: *content_bytes,
                });
            }
            Finish::Checked => st.snap.status = "succeeded",
            Finish::Flashed {
                devices, succeeded, ..
            } if succeeded == devices => st.snap.status = "succeeded",
            Finish::Flashed {
                devices, succeeded, ..
            } => {
                st.snap.status = "failed";
                st.snap.error = Some(format!(
                    "{} of {devices} device(s) failed",
                    devices - succeeded
                ));
            }
            Finish::Failed { message } => {
                st.snap.status = "failed";
                st.snap.error = Some(message.clone());
                let mut failed = 0;
                for it in &mut st.snap.items {
                    if it.state == "running" || it.state == "verifying" {
                        it.state = "failed";
                        failed += 1;
                    }
                }
                st.snap.items_failed += failed;
            }
        });
        self.inner.write_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(p: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(p).expect("read")).expect("parse")
    }

    fn fast() -> ProgressFileOptions {
        ProgressFileOptions {
            min_interval: Duration::from_millis(20),
            heartbeat: Duration::from_millis(60),
        }
    }

    #[test]
    fn states_and_byte_counts() {
        let dir = tempfile::tempdir().expect("tempdir or file");
        let path = dir.path().join("p.json");
        let pf =
            ProgressFile::create(&path, ProgressFileOptions::default()).expect("tempdir or file");
        assert_eq!(read(&path)["status"], "running");
        assert_eq!(read(&path)["schema"], SCHEMA_VERSION);
        pf.step(4, 6, "writing the data partition");
        let v = read(&path);
        assert_eq!(v["step"]["index"], 4);
        assert_eq!(v["step"]["count"], 6);
        pf.items_planned(&[("/data/a".into(), 9), ("/data/b".into(), 5)]);
        // Planning again replaces sizes, it does not add them.
        pf.items_planned(&[("/data/a".into(), 10), ("/data/b".into(), 5)]);
        pf.item_started("/data/a", Some(10));
        pf.item_progress("/data/a", 4);
        pf.item_progress("/data/a", 6);
        pf.item_done("/data/a", 10, Some("abc"));
        // b reports no progress: done counts it in full.
        pf.item_started("/data/b", Some(5));
        pf.item_done("/data/b", 5, None);
        pf.step(5, 6, "boot");
        let v = read(&path);
        assert_eq!(v["bytes_done"], 15);
        assert_eq!(v["bytes_total"], 15);
        assert_eq!(v["items_done"], 2);
        assert_eq!(v["items"][0]["state"], "done");
        assert_eq!(v["items"][0]["digest"], "abc");
        pf.finished(&Finish::Succeeded {
            image: "o.img".into(),
            image_bytes: 100,
            content_bytes: 15,
        });
        let v = read(&path);
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["image"]["bytes"], 100);
        assert!(v["error"].is_null());
        // Only the target file is left: temp files were renamed.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("tempdir or file")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("p.json")]);
    }

    #[test]
    fn failure_marks_running_items_and_keeps_the_message() {
        let dir = tempfile::tempdir().expect("tempdir or file");
        let path = dir.path().join("p.json");
        let pf = ProgressFile::create(&path, fast()).expect("tempdir or file");
        pf.step(4, 6, "data");
        pf.item_started("/data/a", Some(10));
        pf.item_started("/data/b", Some(10));
        pf.item_failed("/data/b", "checksum mismatch");
        pf.finished(&Finish::Failed {
            message: "boom".into(),
        });
        let v = read(&path);
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"], "boom");
        assert_eq!(v["items"][0]["state"], "failed");
        assert_eq!(v["items"][1]["error"], "checksum mismatch");
        assert_eq!(v["items_failed"], 2);
    }

    #[test]
    fn heartbeat_rewrites_when_nothing_moves_and_progress_is_throttled() {
        let dir = tempfile::tempdir().expect("tempdir or file");
        let path = dir.path().join("p.json");
        let pf = ProgressFile::create(&path, fast()).expect("tempdir or file");
        let first = read(&path)["updated_at"].clone();
        // Nothing moves: the heartbeat rewrites the file on its own
        // (waited for; a loaded machine may delay the timer's thread).
        wait_for("3 heartbeats", || pf.writes() >= 3);
        assert_ne!(read(&path)["updated_at"], first);
        // 10,000 progress events write only on the timer: at most one write
        // per min_interval (20 ms) of the loop's time, plus the edges.
        let before = pf.writes();
        let start = std::time::Instant::now();
        pf.item_started("x", Some(10_000));
        for _ in 0..10_000 {
            pf.item_progress("x", 1);
        }
        let allowed = u64::try_from(start.elapsed().as_millis() / 20).unwrap_or(u64::MAX) + 2;
        let wrote = pf.writes() - before;
        assert!(wrote <= allowed, "{wrote} writes, {allowed} allowed");
        // The last count reaches the file with the next timer write.
        wait_for("bytes_done = 10000", || read(&path)["bytes_done"] == 10_000);
    }

    /// Polls `done` until it holds; fails after 10 s (a timer that never
    /// fires, not a slow one).
    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn step_seven_pass_has_its_own_object_and_the_rest_stays() {
        let dir = tempfile::tempdir().expect("tempdir or file");
        let path = dir.path().join("p.json");
        let pf = ProgressFile::create(&path, fast()).expect("tempdir or file");
        assert!(read(&path)["output_pass"].is_null());
        pf.step(7, 7, "hashing and writing the output");
        pf.pass_started(1000);
        let v = read(&path);
        assert_eq!(v["output_pass"]["bytes_read"], 0);
        assert_eq!(v["output_pass"]["bytes_total"], 1000);
        assert!(v["output_pass"]["bytes_per_second"].is_null());
        std::thread::sleep(Duration::from_millis(5));
        pf.pass_progress(250);
        pf.finished(&Finish::Checked);
        let v = read(&path);
        let p = &v["output_pass"];
        assert_eq!(p["bytes_read"], 250);
        assert!(
            p["bytes_per_second"].as_f64().is_some_and(|r| r > 0.0),
            "{v}"
        );
        assert!(p["seconds_left"].as_f64().is_some_and(|s| s > 0.0), "{v}");
        // The items' counters are not the pass's.
        assert_eq!(
            (v["bytes_done"].clone(), v["bytes_total"].clone()),
            (0.into(), 0.into())
        );
    }

    #[test]
    fn unwritable_path_fails_at_creation() {
        let r = ProgressFile::create(
            Path::new("/nonexistent-dir/p.json"),
            ProgressFileOptions::default(),
        );
        assert!(r.is_err());
    }
}
