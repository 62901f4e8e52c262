//! Nothing half-made is left behind, and one build per OUTPUT.
//!
//! - [`claim`] takes OUTPUT's lock ([`super::lock`]) before anything is
//!   written: a second build to the same OUTPUT fails at once, naming the
//!   first one's pid. It also removes what dead builds left beside OUTPUT
//!   and in the build dir.
//! - [`PendingOutput`] is the image being written. On Linux it has no name
//!   (`O_TMPFILE`, [`super::unnamed`]) until [`PendingOutput::commit`]
//!   links it to OUTPUT, so a build killed by `kill -9` or a power loss
//!   leaves nothing. Elsewhere it is `.<OUTPUT name>.image-creator.part`,
//!   a name only the lock holder uses, so the next build removes it when
//!   its owner is gone.
//! - The lock is held until the image has its final name (after the
//!   rename with `-X`), so a second build never races the first's rename.
//! - A failure (or SIGINT/SIGTERM) removes the image, unless `--keep`.
//!
//! The other temporary files of a build (the old p3's spill file, spooled
//! zips) are created unnamed in the build dir (`tempfile::tempfile_in`:
//! `O_TMPFILE` where available, else created and unlinked at once).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::BuildError;
use super::lock::{self, LockFailure, OutputLock};
use super::unnamed;

/// What a signal handler must undo: see [`cleanup_after_signal`].
struct InProgress {
    /// The named temporary output, if any.
    part: Option<PathBuf>,
    /// The lock file.
    lock: PathBuf,
    /// `--keep`: the image and where it goes.
    keep: Option<Publish>,
}

/// The in-progress build, for [`cleanup_after_signal`].
static IN_PROGRESS: Mutex<Option<InProgress>> = Mutex::new(None);

/// Undo the in-progress build; for signal handlers (the process exits
/// next, which closes the unnamed image and releases the lock). With
/// `--keep` the image is moved to OUTPUT when that is free (or `-X`).
pub fn cleanup_after_signal() {
    let Some(p) = take_in_progress() else {
        return;
    };
    match &p.keep {
        Some(publish) => {
            if publish.run().is_err() {
                if let Some(part) = &p.part {
                    let _ = std::fs::remove_file(part);
                }
            }
        }
        None => {
            if let Some(part) = &p.part {
                let _ = std::fs::remove_file(part);
            }
        }
    }
    let _ = std::fs::remove_file(&p.lock);
}

fn take_in_progress() -> Option<InProgress> {
    IN_PROGRESS.lock().ok().and_then(|mut g| g.take())
}

/// What to do with OUTPUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputPolicy {
    /// Replace an existing OUTPUT (`-X`).
    pub overwrite: bool,
    /// Keep a failed output (`-K`).
    pub keep: bool,
}

/// OUTPUT, locked for this build. Dropping it releases the lock (and
/// tells the signal handler there is nothing left to undo).
#[derive(Debug)]
pub struct Claim {
    lock: OutputLock,
    output: PathBuf,
    dir: PathBuf,
    name: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Before the lock file goes: a handler running later must not
        // remove a lock file that another build may have created since.
        take_in_progress();
    }
}

/// Lock OUTPUT (in `dir`, its directory) for this build, then remove what
/// dead builds left in `dir` and in `build_dir`. Fails at once with
/// [`BuildError::OutputBusy`] when another build holds the lock.
pub fn claim(output: &Path, dir: &Path, build_dir: &Path) -> Result<Claim, BuildError> {
    let name = output
        .file_name()
        .map_or_else(|| "image".into(), |n| n.to_string_lossy().into_owned());
    let lock_path = lock::lock_path(dir, &name);
    let lock = OutputLock::acquire(&lock_path).map_err(|e| match e {
        LockFailure::Busy(pid) => BuildError::OutputBusy {
            output: output.to_path_buf(),
            pid,
            lock: lock_path.clone(),
        },
        LockFailure::Io(source) => BuildError::OutputLock {
            path: lock_path.clone(),
            source,
        },
    })?;
    if let Ok(mut g) = IN_PROGRESS.lock() {
        *g = Some(InProgress {
            part: None,
            lock: lock_path.clone(),
            keep: None,
        });
    }
    lock::sweep(dir, Some(&name));
    if build_dir != dir {
        lock::sweep(build_dir, Some(&name));
    }
    Ok(Claim {
        lock,
        output: output.to_path_buf(),
        dir: dir.to_path_buf(),
        name,
    })
}

/// How the finished image gets OUTPUT's name.
struct Publish {
    /// The image (for `linkat` when it is unnamed).
    file: File,
    /// The named temporary output, or `None` when unnamed.
    part: Option<PathBuf>,
    /// Where an unnamed image is linked before a replacing rename.
    link_tmp: PathBuf,
    output: PathBuf,
    overwrite: bool,
}

impl Publish {
    /// Give the image OUTPUT's name: without `-X` never replacing a file
    /// that appeared meanwhile; with `-X` by an atomic rename.
    fn run(&self) -> std::io::Result<()> {
        match (&self.part, self.overwrite) {
            (None, false) => unnamed::link(&self.file, &self.output),
            (None, true) => {
                // Only the lock holder uses this name: a file there is a
                // dead build's.
                let _ = std::fs::remove_file(&self.link_tmp);
                unnamed::link(&self.file, &self.link_tmp)?;
                std::fs::rename(&self.link_tmp, &self.output).inspect_err(|_| {
                    let _ = std::fs::remove_file(&self.link_tmp);
                })
            }
            (Some(part), true) => std::fs::rename(part, &self.output),
            (Some(part), false) => rename_no_replace(part, &self.output),
        }
    }
}

/// Rename `from` to `to` unless `to` exists: a hard link then an unlink;
/// where the filesystem has no hard links, a check then a rename (the
/// output lock keeps other builds out of that gap).
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Ok(()) => std::fs::remove_file(from),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) if to.exists() => Err(std::io::ErrorKind::AlreadyExists.into()),
        Err(_) => std::fs::rename(from, to),
    }
}

/// The side files a build may write beside OUTPUT (docs/spec.md §10).
pub const SIDE_SUFFIXES: [&str; 7] = [
    ".json",
    ".bmap",
    ".torrent",
    ".spdx.json",
    ".intoto.jsonl",
    ".SHA256SUMS",
    ".SHA256SUMS.minisig",
];

/// The image being written.
pub struct PendingOutput {
    publish: Publish,
    /// A path that opens the image ([`PendingOutput::reopen_path`]).
    reopen: PathBuf,
    claim: Claim,
    keep: bool,
}

impl std::fmt::Debug for PendingOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingOutput")
            .field("output", &self.claim.output)
            .field("part", &self.publish.part)
            .finish_non_exhaustive()
    }
}

impl PendingOutput {
    /// The image file for `claim`: unnamed in OUTPUT's directory where the
    /// platform allows (so the final link stays on one filesystem), else
    /// `.<OUTPUT name>.image-creator.part` there (truncated if a dead
    /// build left one).
    pub fn create(claim: Claim, policy: OutputPolicy) -> Result<Self, BuildError> {
        Self::create_as(claim, policy, true)
    }

    /// [`PendingOutput::create`]; `try_unnamed: false` goes straight to
    /// the named fallback (what platforms without `O_TMPFILE` get).
    fn create_as(
        claim: Claim,
        policy: OutputPolicy,
        try_unnamed: bool,
    ) -> Result<Self, BuildError> {
        let link_tmp = lock::part_path(&claim.dir, &claim.name);
        let unnamed = if try_unnamed {
            unnamed::create(&claim.dir)
        } else {
            None
        };
        let (file, part, reopen) = match unnamed {
            Some(f) => {
                let reopen = unnamed::proc_path(&f);
                (f, None, reopen)
            }
            None => {
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&link_tmp)
                    .map_err(|source| BuildError::OutputCreate {
                        path: link_tmp.clone(),
                        source,
                    })?;
                (f, Some(link_tmp.clone()), link_tmp.clone())
            }
        };
        let publish = Publish {
            file,
            part,
            link_tmp,
            output: claim.output.clone(),
            overwrite: policy.overwrite,
        };
        let keep = if policy.keep {
            Some(Publish {
                file: publish.file.try_clone()?,
                part: publish.part.clone(),
                link_tmp: publish.link_tmp.clone(),
                output: publish.output.clone(),
                overwrite: publish.overwrite,
            })
        } else {
            None
        };
        if let Ok(mut g) = IN_PROGRESS.lock() {
            *g = Some(InProgress {
                part: publish.part.clone(),
                lock: claim.lock.path().to_path_buf(),
                keep,
            });
        }
        Ok(Self {
            publish,
            reopen,
            claim,
            keep: policy.keep,
        })
    }

    /// The file.
    pub fn file(&self) -> &File {
        &self.publish.file
    }

    /// A path that opens the image being written (`/proc/self/fd/N` when
    /// it is unnamed).
    pub fn reopen_path(&self) -> &Path {
        &self.reopen
    }

    /// The name the image is written for (OUTPUT), for messages.
    pub fn output(&self) -> &Path {
        &self.claim.output
    }

    /// Move the finished image to OUTPUT (0644, like any output file),
    /// make the name durable, then release the lock.
    pub fn commit(self) -> Result<(), BuildError> {
        self.commit_with(&[])
    }

    /// [`PendingOutput::commit`], then, still holding the lock, write
    /// each `(path, bytes)` side file beside OUTPUT (`OUTPUT.json`,
    /// `OUTPUT.bmap`, `OUTPUT.torrent`), in order, each unnamed (or under OUTPUT's temporary name,
    /// free again now) until it is complete, then given its name like
    /// the image (replacing a stale one: OUTPUT was absent, or `-X`).
    pub fn commit_with(self, sides: &[(PathBuf, Vec<u8>)]) -> Result<(), BuildError> {
        take_in_progress();
        let persist = |source| BuildError::Persist {
            path: self.claim.output.clone(),
            source,
        };
        let done = self
            .publish
            .file
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .and_then(|()| self.publish.run());
        if let Err(e) = done {
            if let Some(part) = &self.publish.part {
                let _ = std::fs::remove_file(part);
            }
            return Err(persist(e));
        }
        for (path, bytes) in sides {
            self.write_side(path, bytes)
                .map_err(|source| BuildError::Persist {
                    path: path.clone(),
                    source,
                })?;
        }
        // A side file of an earlier image that this build doesn't write
        // (no `--bmap`, no `--torrent`, no json) would describe the old
        // image: gone.
        for suffix in SIDE_SUFFIXES {
            let path = crate::pipeline::output::side_path(&self.claim.output, suffix);
            if !sides.iter().any(|(p, _)| *p == path) {
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(BuildError::Persist { path, source: e });
                    }
                    _ => {}
                }
            }
        }
        // The new directory entries survive a power loss once the
        // directory is synced (fsync(2)); the image itself was synced by
        // the last step.
        if let Ok(d) = File::open(&self.claim.dir) {
            let _ = d.sync_all();
        }
        Ok(())
        // `self.claim` drops here: the lock goes once OUTPUT has its name.
    }

    /// One side file, published as the image was ([`Publish::run`]).
    fn write_side(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        let part = lock::part_path(&self.claim.dir, &self.claim.name);
        let (mut file, named) = match unnamed::create(&self.claim.dir) {
            Some(f) => (f, None),
            None => {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&part)?;
                (f, Some(part.clone()))
            }
        };
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| file.set_permissions(std::fs::Permissions::from_mode(0o644)));
        let publish = Publish {
            file,
            part: named.clone(),
            link_tmp: part,
            output: path.to_path_buf(),
            // OUTPUT was absent (or `-X`): a side file there is stale.
            overwrite: true,
        };
        let done = written.and_then(|()| publish.run());
        if done.is_err() {
            if let Some(p) = &named {
                let _ = std::fs::remove_file(p);
            }
        }
        done
    }

    /// The build failed: remove the image, or with `--keep` move it to
    /// OUTPUT when that is free (or may be replaced).
    pub fn abandon(self) {
        take_in_progress();
        let kept = self.keep && self.publish.run().is_ok();
        if !kept {
            if let Some(part) = &self.publish.part {
                let _ = std::fs::remove_file(part);
            }
        }
        // An unnamed image goes with its last descriptor, and the lock
        // with the claim, both dropped here.
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn pending_as(dir: &Path, overwrite: bool, keep: bool, unnamed: bool) -> PendingOutput {
        let out = dir.join("out.img");
        let c = claim(&out, dir, dir).unwrap();
        PendingOutput::create_as(c, OutputPolicy { overwrite, keep }, unnamed).unwrap()
    }

    fn pending(dir: &Path, overwrite: bool, keep: bool) -> PendingOutput {
        pending_as(dir, overwrite, keep, true)
    }

    #[test]
    fn the_named_fallback_publishes_removes_and_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = pending_as(d, false, false, false);
        p.file().write_all(b"one").unwrap();
        assert_eq!(
            names(d),
            [".out.img.image-creator.lock", ".out.img.image-creator.part"]
        );
        p.commit().unwrap();
        assert_eq!(names(d), ["out.img"]);
        let p = pending_as(d, true, false, false);
        p.file().write_all(b"two").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(d.join("out.img")).unwrap(), b"two");
        let p = pending_as(d, false, false, false);
        p.abandon();
        assert_eq!(names(d), ["out.img"]);
        // A dead build's part and lock (files nobody holds a lock on) go
        // with the next build to the directory, whatever its OUTPUT.
        std::fs::write(d.join(".old.img.image-creator.part"), b"half").unwrap();
        std::fs::write(d.join(".old.img.image-creator.lock"), b"1\n").unwrap();
        let p = pending(d, true, false);
        p.abandon();
        assert_eq!(names(d), ["out.img"]);
    }

    #[test]
    fn commit_publishes_and_leaves_only_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), false, false);
        p.file().write_all(b"one").unwrap();
        p.commit().unwrap();
        assert_eq!(names(dir.path()), ["out.img"]);
        assert_eq!(std::fs::read(dir.path().join("out.img")).unwrap(), b"one");
        // Without -X an output that appeared meanwhile is not replaced.
        let p = pending(dir.path(), false, false);
        p.file().write_all(b"two").unwrap();
        assert!(matches!(p.commit(), Err(BuildError::Persist { .. })));
        assert_eq!(std::fs::read(dir.path().join("out.img")).unwrap(), b"one");
        assert_eq!(names(dir.path()), ["out.img"]);
        // With -X it is.
        let p = pending(dir.path(), true, false);
        p.file().write_all(b"three").unwrap();
        p.commit().unwrap();
        assert_eq!(std::fs::read(dir.path().join("out.img")).unwrap(), b"three");
        assert_eq!(names(dir.path()), ["out.img"]);
    }

    #[test]
    fn abandon_removes_everything_unless_keep() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), false, false);
        p.file().write_all(b"half").unwrap();
        p.abandon();
        assert!(names(dir.path()).is_empty());
        let p = pending(dir.path(), false, true);
        p.file().write_all(b"half").unwrap();
        p.abandon();
        assert_eq!(names(dir.path()), ["out.img"]);
    }

    #[test]
    fn a_second_claim_is_busy_and_names_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = pending(dir.path(), false, false);
        let out = dir.path().join("out.img");
        let e = claim(&out, dir.path(), dir.path()).unwrap_err();
        assert_eq!(e.exit_kind(), crate::error::ExitKind::BadInput);
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())) && msg.contains("out.img"),
            "{msg}"
        );
        p.abandon();
        claim(&out, dir.path(), dir.path()).unwrap();
    }
}
