//! Why the output pass failed: the read of the raw image, one of its
//! consumers (each named, with the offset of the stream it had reached),
//! or a thread that could not be started or died.

use std::path::PathBuf;

/// An output pass that failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// Reading the raw image.
    #[error("reading {} at byte {offset}: {source}", path.display())]
    Read {
        /// The raw image.
        path: PathBuf,
        /// Where the read started.
        offset: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A consumer of the image or of the download file failed.
    #[error("{sink} at byte {offset}: {source}")]
    Sink {
        /// The consumer ([`super::DownloadSink::name`]).
        sink: String,
        /// The offset of the stream it was given, or its length at the end.
        offset: u64,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A consumer's thread could not be started.
    #[error("starting the thread of {sink}: {source}")]
    Spawn {
        /// The consumer.
        sink: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A consumer's thread panicked.
    #[error("the thread of {sink} panicked")]
    Panicked {
        /// The consumer.
        sink: String,
    },
    /// The stream stopped because another part of the pass failed; that
    /// part's error is the one reported (never shown unless it is the only
    /// one, which would be a bug).
    #[error("the output pass stopped: {0} ended early")]
    Stopped(String),
}

impl PassError {
    /// An error caused by another one (the stream ended under a consumer,
    /// or a consumer left): not the root cause.
    pub fn is_consequence(&self) -> bool {
        matches!(self, Self::Stopped(_))
    }
}

/// The error a producer inside the pass (the encoder) gets from its own
/// output once a consumer of that output is gone: that consumer's error
/// is the one reported.
#[derive(Debug, thiserror::Error)]
#[error("a consumer of the stream stopped")]
pub struct ConsumerGone;

impl ConsumerGone {
    /// As an I/O error, for a `Write` impl.
    pub fn io() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, Self)
    }

    /// Whether `e` is one (unwrapped, or wrapped once by an encoder).
    pub fn is(e: &std::io::Error) -> bool {
        let inner = e.get_ref();
        inner.is_some_and(|r| r.is::<Self>())
            || inner
                .and_then(|r| r.downcast_ref::<std::io::Error>())
                .is_some_and(|e| e.get_ref().is_some_and(|r| r.is::<Self>()))
    }
}
