//! `CacheError`: every failure of the download cache, each naming its path,
//! key or policy line.
//!
//! Only a bad `policy.yaml` is the user's mistake (exit 3, docs/spec.md §7/§8);
//! everything else means "this cache can't be used right now": the build warns
//! once and goes on without it (docs/design.md, "The download cache").

use std::path::PathBuf;

/// How the integrator should treat a [`CacheError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheErrorKind {
    /// `policy.yaml` is malformed, or `--cache-dir` is a URL of an
    /// unknown scheme or an unparsable one: a config error, exit 3.
    BadPolicy,
    /// The cache can't be used (I/O, permissions, full disk, lock timeout,
    /// corrupt blob): warn once and build without it.
    Unusable,
}

/// A download-cache failure.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// `policy.yaml` is not valid YAML or has an unknown key or bad value.
    #[error("{path}: {message}")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong, with the key path and line.
        message: String,
    },
    /// A file operation failed.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What we were doing ("creating", "renaming into place", …).
        action: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Waiting for a lock took longer than the timeout.
    #[error("{path}: still locked by another process after {seconds} s")]
    LockTimeout {
        /// The lock file.
        path: PathBuf,
        /// How long we waited.
        seconds: u64,
    },
    /// A blob's content does not match its entry (flipped byte, truncation,
    /// missing blob). The entry has been dropped.
    #[error("cache entry {key:?}: blob {path} is corrupt: {reason}")]
    CorruptBlob {
        /// The entry key.
        key: String,
        /// The blob.
        path: PathBuf,
        /// Expected vs found.
        reason: String,
    },
    /// A change was asked of a cache opened read-only (`--check`).
    #[error("{path}: {action}: the cache was opened read-only")]
    ReadOnly {
        /// The cache directory.
        path: PathBuf,
        /// What was asked.
        action: &'static str,
    },
    /// `--cache-dir` is a URL we can't use (unknown scheme, bad bucket
    /// name): the user's mistake, exit 3.
    #[error("--cache-dir {url}: {message}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// An object-store request failed (unreachable, refused credentials,
    /// missing bucket, server errors after retries).
    #[error("{url}: {action}: {source}")]
    Store {
        /// The cache URL.
        url: String,
        /// What we were doing.
        action: &'static str,
        /// The store's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A fill was committed with a size or coverage that does not match what
    /// was written.
    #[error("cache fill of {key:?}: {reason}")]
    IncompleteFill {
        /// The entry key.
        key: String,
        /// What does not match.
        reason: String,
    },
}

impl CacheError {
    /// Exit class: bad policy (exit 3) or unusable cache (warn, go on).
    pub fn kind(&self) -> CacheErrorKind {
        match self {
            Self::Policy { .. } | Self::BadUrl { .. } => CacheErrorKind::BadPolicy,
            _ => CacheErrorKind::Unusable,
        }
    }

    /// True for a malformed `policy.yaml` (exit 3).
    pub fn is_bad_policy(&self) -> bool {
        self.kind() == CacheErrorKind::BadPolicy
    }

    pub(crate) fn io(
        path: impl Into<PathBuf>,
        action: &'static str,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io {
            path,
            action,
            source,
        }
    }
}
