//! The terminal: the history ([`TextHistory`]) on stdout; live bars
//! ([`Bars`]) when wanted, warnings and `--debug` logs on stderr. Every
//! write goes through the bars' `suspend`, so none tears a bar.

use std::io::{IsTerminal, Stderr, Stdout, Write};
use std::sync::Mutex;
use std::time::SystemTime;

use super::{rfc3339, Bars, Finish, Reporter, TextHistory};

/// What the console shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleOptions {
    /// `-q`: no bars and no step/item history; warnings, errors and the
    /// final summary only.
    pub quiet: bool,
    /// `-D`: a timestamped (RFC 3339 UTC) line on the log stream for every
    /// step and item event.
    pub debug: bool,
}

/// The console reporter: see the module documentation.
pub struct Console<O, E> {
    history: TextHistory<O>,
    log: Mutex<E>,
    bars: Option<Bars>,
    debug: bool,
}

impl Console<Stdout, Stderr> {
    /// The process's stdout and stderr, with bars only when stderr is a
    /// terminal, `NO_COLOR` is unset (or empty) and not `quiet`.
    pub fn terminal(opts: ConsoleOptions) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let stderr = std::io::stderr();
        let bars = (stderr.is_terminal() && !no_color && !opts.quiet).then(Bars::stderr);
        Self::new(std::io::stdout(), stderr, bars, opts)
    }
}

impl<O: Write + Send, E: Write + Send> Console<O, E> {
    /// History on `out`, warnings and logs on `log`, and `bars` if any.
    pub fn new(out: O, log: E, bars: Option<Bars>, opts: ConsoleOptions) -> Self {
        Self {
            history: TextHistory::new(out, opts.quiet),
            log: Mutex::new(log),
            bars,
            debug: opts.debug,
        }
    }

    /// The history and log writers back (tests).
    pub fn into_inner(self) -> Option<(O, E)> {
        let out = self.history.into_inner()?;
        let log = self.log.into_inner().ok()?;
        Some((out, log))
    }

    /// Run `f` with the bars cleared.
    fn print(&self, f: impl FnOnce()) {
        match &self.bars {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    /// One line on the log stream. A closed stderr must not stop the
    /// build, so write errors are dropped.
    fn line(&self, what: std::fmt::Arguments<'_>) {
        self.print(|| {
            if let Ok(mut log) = self.log.lock() {
                let _ = writeln!(log, "{what}").and_then(|()| log.flush());
            }
        });
    }

    /// A `--debug` line, timestamped.
    fn debug(&self, what: std::fmt::Arguments<'_>) {
        if self.debug {
            self.line(format_args!("{} {what}", rfc3339(SystemTime::now())));
        }
    }
}

impl<O: Write + Send, E: Write + Send> Reporter for Console<O, E> {
    fn step(&self, index: usize, count: usize, name: &str) {
        self.print(|| self.history.step(index, count, name));
        self.debug(format_args!("step {index}/{count}: {name}"));
        if let Some(b) = &self.bars {
            b.step(index, count, name);
        }
    }
    fn items_planned(&self, items: &[(String, u64)]) {
        self.debug(format_args!("{} items planned", items.len()));
        if let Some(b) = &self.bars {
            b.items_planned(items);
        }
    }
    fn item_started(&self, name: &str, total_bytes: Option<u64>) {
        match total_bytes {
            Some(n) => self.debug(format_args!("start {name} ({n} bytes)")),
            None => self.debug(format_args!("start {name} (size unknown)")),
        }
        self.history.item_started(name, total_bytes);
        if let Some(b) = &self.bars {
            b.item_started(name, total_bytes);
        }
    }
    fn item_progress(&self, name: &str, bytes_delta: u64) {
        if let Some(b) = &self.bars {
            b.item_progress(name, bytes_delta);
        }
    }
    fn item_done(&self, name: &str, bytes: u64, digest: Option<&str>) {
        self.debug(format_args!("done {name} ({bytes} bytes)"));
        if let Some(b) = &self.bars {
            b.item_done(name, bytes, digest);
        }
        self.print(|| self.history.item_done(name, bytes, digest));
    }
    fn item_verifying(&self, name: &str, total_bytes: u64) {
        self.debug(format_args!("read back {name} ({total_bytes} bytes)"));
        if let Some(b) = &self.bars {
            b.item_verifying(name, total_bytes);
        }
        self.print(|| self.history.item_verifying(name, total_bytes));
    }
    fn item_verified(&self, name: &str, bytes_delta: u64) {
        if let Some(b) = &self.bars {
            b.item_verified(name, bytes_delta);
        }
    }
    fn item_cached(&self, name: &str) {
        self.debug(format_args!("{name}: from the download cache"));
        self.history.item_cached(name);
    }
    fn item_cloned(&self, name: &str, bytes: u64) {
        self.debug(format_args!(
            "{name}: {bytes} bytes share their blocks with the download cache (cloned)"
        ));
        self.history.item_cloned(name, bytes);
    }
    fn item_failed(&self, name: &str, error: &str) {
        self.debug(format_args!("failed {name}: {error}"));
        if let Some(b) = &self.bars {
            b.item_failed(name, error);
        }
        self.print(|| self.history.item_failed(name, error));
    }
    fn warn(&self, message: &str) {
        self.line(format_args!("warning: {message}"));
    }
    fn pass_started(&self, total_bytes: u64) {
        self.debug(format_args!("output pass: reading {total_bytes} bytes"));
        self.history.pass_started(total_bytes);
        if let Some(b) = &self.bars {
            b.pass_started(total_bytes);
        }
    }
    fn pass_progress(&self, bytes_delta: u64) {
        if let Some(b) = &self.bars {
            b.pass_progress(bytes_delta);
        }
        if let Some(line) = self.history.pass_line(bytes_delta) {
            self.print(|| self.history.write_line(&line));
        }
    }
    fn finished(&self, how: &Finish) {
        self.debug(format_args!("finished: {how:?}"));
        if let Some(b) = &self.bars {
            b.finished(how);
        }
        self.history.finished(how);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a console without bars; returns (history, log).
    fn console(opts: ConsoleOptions, f: impl FnOnce(&dyn Reporter)) -> (String, String) {
        let c = Console::new(Vec::new(), Vec::new(), None, opts);
        f(&c);
        let (out, log) = c.into_inner().expect("writers");
        (
            String::from_utf8(out).expect("utf-8"),
            String::from_utf8(log).expect("utf-8"),
        )
    }

    fn events(r: &dyn Reporter) {
        r.step(1, 2, "reading");
        r.items_planned(&[("/data/a".into(), 3)]);
        r.item_started("/data/a", Some(3));
        r.item_progress("/data/a", 3);
        r.item_done("/data/a", 3, Some("md5:abc"));
        r.warn("slow mirror");
        r.item_failed("/data/b", "gone");
        r.finished(&Finish::Failed {
            message: "gone".into(),
        });
    }

    #[test]
    fn history_on_out_warnings_on_log() {
        let (out, log) = console(ConsoleOptions::default(), events);
        assert!(out.starts_with("[1/2] reading\n"), "{out}");
        assert!(out.contains("    ✓ /data/a  3 B"), "{out}");
        assert!(out.contains("    ✗ /data/b: gone\n"), "{out}");
        assert!(out.contains("✗ [1/2] reading ("), "{out}");
        assert_eq!(log, "warning: slow mirror\n");
    }

    #[test]
    fn debug_logs_every_event_timestamped() {
        let opts = ConsoleOptions {
            debug: true,
            ..ConsoleOptions::default()
        };
        let (_, log) = console(opts, events);
        let lines: Vec<&str> = log.lines().collect();
        let expected = [
            "step 1/2: reading",
            "1 items planned",
            "start /data/a (3 bytes)",
            "done /data/a (3 bytes)",
            "warning: slow mirror",
            "failed /data/b: gone",
            "finished: Failed { message: \"gone\" }",
        ];
        assert_eq!(lines.len(), expected.len(), "{log}");
        for (line, want) in lines.iter().zip(expected) {
            assert!(line.ends_with(want), "{line:?} should end with {want:?}");
        }
        // `2024-05-01T12:00:00Z step …`: RFC 3339 UTC first, but on warnings.
        assert!(lines[0].split(' ').next().is_some_and(|t| t.ends_with('Z')));
        assert!(lines[4].starts_with("warning: "));
    }

    #[test]
    fn step_seven_progress_reaches_the_history() {
        let opts = ConsoleOptions {
            debug: true,
            ..ConsoleOptions::default()
        };
        let (out, log) = console(opts, |r| {
            r.step(7, 7, "hashing and writing the output");
            r.pass_started(3 << 20);
            r.pass_progress(1 << 20);
            r.pass_progress(2 << 20);
        });
        assert!(out.contains("    ✓ image read  3.0 MiB"), "{out}");
        assert!(log.contains("output pass: reading 3145728 bytes"), "{log}");
    }

    #[test]
    fn quiet_keeps_failures_and_warnings_only() {
        let opts = ConsoleOptions {
            quiet: true,
            ..ConsoleOptions::default()
        };
        let (out, log) = console(opts, events);
        assert!(
            !out.contains("reading\n") && !out.contains("✓ /data/a"),
            "{out}"
        );
        assert!(out.contains("✗ /data/b: gone"), "{out}");
        assert_eq!(log, "warning: slow mirror\n");
    }
}
