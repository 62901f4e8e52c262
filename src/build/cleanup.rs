//! Nothing half-made is left behind: the image is written to a temporary
//! file beside OUTPUT and moved there only on success; a failure (or a
//! signal) removes it, unless `--keep`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::error::BuildError;

/// The in-progress output and `--keep`, for [`cleanup_after_signal`].
static IN_PROGRESS: Mutex<Option<(PathBuf, bool)>> = Mutex::new(None);

/// Remove the in-progress output (unless `--keep`); for signal handlers.
pub fn cleanup_after_signal() {
    if let Some((p, keep)) = take_in_progress() {
        if !keep {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn take_in_progress() -> Option<(PathBuf, bool)> {
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

/// The image being written: a temporary file beside OUTPUT.
#[derive(Debug)]
pub struct PendingOutput {
    tmp: tempfile::NamedTempFile,
    output: PathBuf,
    policy: OutputPolicy,
}

impl PendingOutput {
    /// A new temporary file in `dir` (OUTPUT's directory, so the final
    /// rename stays on one filesystem), named `.<OUTPUT name>.XXXXXX.part`.
    pub fn create(output: &Path, dir: &Path, policy: OutputPolicy) -> Result<Self, BuildError> {
        let name = output
            .file_name()
            .map_or_else(|| "image".into(), |n| n.to_string_lossy());
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".part")
            .tempfile_in(dir)?;
        if let Ok(mut g) = IN_PROGRESS.lock() {
            *g = Some((tmp.path().to_path_buf(), policy.keep));
        }
        Ok(Self {
            tmp,
            output: output.to_path_buf(),
            policy,
        })
    }

    /// The file.
    pub fn file(&self) -> &File {
        self.tmp.as_file()
    }

    /// Its path (for messages and windows).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Move the finished image to OUTPUT (0644, like any output file).
    pub fn commit(self) -> Result<(), BuildError> {
        use std::os::unix::fs::PermissionsExt;
        take_in_progress();
        // tempfile creates 0600; an image is an ordinary output file.
        self.tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        let persisted = if self.policy.overwrite {
            self.tmp.persist(&self.output).map(|_| ())
        } else {
            self.tmp.persist_noclobber(&self.output).map(|_| ())
        };
        persisted.map_err(|e| {
            let _ = std::fs::remove_file(e.file.path());
            BuildError::Persist {
                path: self.output.clone(),
                source: e.error,
            }
        })
    }

    /// The build failed: remove the file, or with `--keep` move it to
    /// OUTPUT when that is free (or may be replaced).
    pub fn abandon(self) {
        take_in_progress();
        if self.policy.keep && (!self.output.exists() || self.policy.overwrite) {
            if let Ok((_, path)) = self.tmp.keep() {
                let _ = std::fs::rename(&path, &self.output);
            }
        }
        // Otherwise dropping the NamedTempFile removes it.
    }
}
