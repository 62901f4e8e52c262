//! `CacheError`: every failure of the download cache, each naming its path,
//! store URL, key or policy line; and `CopyError`, how a hit's verified copy
//! fails (both backends and [`super::hit`] use it, so it lives here, below
//! all of them).
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
    #[error("--cache-dir {url}: {source}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong (the URL parser's or the store client's error).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An object-store request failed (unreachable, refused credentials,
    /// missing bucket, server errors after retries), or the cache's own
    /// runtime or upload thread could not run it.
    #[error("{url}: {action}: {source}")]
    Store {
        /// The cache URL (never empty: every store call is made for one).
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

/// A verified copy of a hit failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The sink (the image) failed: a build error.
    #[error("writing cached {key} at offset {offset}: {source}")]
    Sink {
        /// The key.
        key: String,
        /// Payload offset of the failed write.
        offset: u64,
        /// The sink's error.
        source: std::io::Error,
    },
    /// The blob is bad or unreadable: its entry is dropped; fetch from the
    /// network instead, over the same range.
    #[error(transparent)]
    Corrupt(CacheError),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant, as the code builds them: every message starts
    /// with the object it is about (a path, a URL, a key), never with ": ".
    #[test]
    fn every_message_names_its_object() {
        let io = || std::io::Error::other("boom");
        let cases: Vec<(CacheError, &str)> = vec![
            (
                CacheError::Policy {
                    path: "/c/policy.yaml".into(),
                    message: "line 3: unknown key".into(),
                },
                "/c/policy.yaml: line 3: unknown key",
            ),
            (
                CacheError::io("/c/v1/tmp", "listing")(io()),
                "/c/v1/tmp: listing: boom",
            ),
            (
                CacheError::LockTimeout {
                    path: "/c/.lock".into(),
                    seconds: 60,
                },
                "/c/.lock: still locked by another process after 60 s",
            ),
            (
                CacheError::CorruptBlob {
                    key: "files/https/h/a".into(),
                    path: "/c/v1/blobs/sha256/ab/abc".into(),
                    reason: "3 bytes, its entry says 4".into(),
                },
                "cache entry \"files/https/h/a\": blob /c/v1/blobs/sha256/ab/abc is corrupt: \
                 3 bytes, its entry says 4",
            ),
            (
                CacheError::ReadOnly {
                    path: "s3://b/p".into(),
                    action: "evicting",
                },
                "s3://b/p: evicting: the cache was opened read-only",
            ),
            (
                CacheError::BadUrl {
                    url: "ftp://h/x".into(),
                    source: "unsupported".into(),
                },
                "--cache-dir ftp://h/x: unsupported",
            ),
            (
                CacheError::Store {
                    url: "s3://b/p".into(),
                    action: "reading an entry",
                    source: Box::new(io()),
                },
                "s3://b/p: reading an entry: boom",
            ),
            (
                CacheError::IncompleteFill {
                    key: "files/https/h/a".into(),
                    reason: "expected bytes 0..4, wrote []".into(),
                },
                "cache fill of \"files/https/h/a\": expected bytes 0..4, wrote []",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        let sink = CopyError::Sink {
            key: "files/https/h/a".into(),
            offset: 7,
            source: io(),
        };
        assert_eq!(
            sink.to_string(),
            "writing cached files/https/h/a at offset 7: boom"
        );
    }
}
