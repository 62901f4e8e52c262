//! Hashing off the receive path: a download hands each written batch to
//! tokio's blocking pool to be hashed while it receives the next one, so
//! the digest costs no wall time as long as hashing keeps up with the
//! network (sha-256 runs at ~0.6–1.5 GB/s per core here).
//!
//! At most one batch is in flight per download: memory stays at two
//! batches whatever the file size, and the digest sees the batches in
//! order.

use tokio::task::JoinHandle;

use crate::io::{ChecksumMismatch, StreamVerifier};

/// A [`StreamVerifier`] (or none) fed from the background.
#[derive(Debug)]
pub(crate) struct BackgroundVerifier {
    state: State,
    capacity: usize,
}

// One per download, moved once per 1 MiB batch: the size gap is harmless.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum State {
    /// Nothing in flight.
    Idle(Option<StreamVerifier>),
    /// A batch being hashed; the verifier and the buffer come back.
    Busy(JoinHandle<(StreamVerifier, Vec<u8>)>),
}

impl BackgroundVerifier {
    /// Verify with `verifier` (nothing to do when `None`); spare buffers
    /// are allocated with `capacity`.
    pub(crate) fn new(verifier: Option<StreamVerifier>, capacity: usize) -> Self {
        Self {
            state: State::Idle(verifier),
            capacity,
        }
    }

    /// Wait for the batch in flight; returns its buffer, emptied.
    async fn settle(&mut self) -> Option<Vec<u8>> {
        let state = std::mem::replace(&mut self.state, State::Idle(None));
        match state {
            State::Idle(v) => {
                self.state = State::Idle(v);
                None
            }
            State::Busy(job) => match job.await {
                Ok((v, mut buf)) => {
                    self.state = State::Idle(Some(v));
                    buf.clear();
                    Some(buf)
                }
                // The hashing task cannot fail but by panicking: re-raise
                // it here rather than report a wrong digest.
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            },
        }
    }

    /// Hash `batch` in the background (after the previous batch is done);
    /// returns an empty buffer to fill next.
    pub(crate) async fn submit(&mut self, mut batch: Vec<u8>) -> Vec<u8> {
        let spare = self.settle().await;
        match std::mem::replace(&mut self.state, State::Idle(None)) {
            State::Idle(Some(mut v)) => {
                self.state = State::Busy(tokio::task::spawn_blocking(move || {
                    v.update(&batch);
                    (v, batch)
                }));
                spare.unwrap_or_else(|| Vec::with_capacity(self.capacity))
            }
            // No digest to compute: the batch is its own next buffer.
            _ => {
                batch.clear();
                batch
            }
        }
    }

    /// Wait for the last batch and compare; the digest when there is one.
    pub(crate) async fn finish(mut self) -> Result<Option<String>, ChecksumMismatch> {
        self.settle().await;
        match self.state {
            State::Idle(Some(v)) => v.finish().map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashAlgo;
    use crate::io::Hasher;

    fn digest(data: &[u8]) -> String {
        let mut h = Hasher::new(HashAlgo::Sha256);
        h.update(data);
        h.finalize_hex()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_are_hashed_in_order() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = digest(&data);
        let mut bg = BackgroundVerifier::new(
            Some(StreamVerifier::new(HashAlgo::Sha256, &expected, "x")),
            1 << 16,
        );
        let mut buf = Vec::new();
        for chunk in data.chunks(100_003) {
            buf.extend_from_slice(chunk);
            buf = bg.submit(std::mem::take(&mut buf)).await;
            assert!(buf.is_empty());
        }
        assert_eq!(bg.finish().await.ok().flatten(), Some(expected));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mismatch_and_no_verifier() {
        let mut bg = BackgroundVerifier::new(
            Some(StreamVerifier::new(HashAlgo::Sha256, &"0".repeat(64), "y")),
            16,
        );
        let _ = bg.submit(b"abc".to_vec()).await;
        let err = bg.finish().await.expect_err("mismatch");
        assert!(err.to_string().contains(&digest(b"abc")), "{err}");

        let mut none = BackgroundVerifier::new(None, 16);
        let back = none.submit(b"abc".to_vec()).await;
        assert!(back.is_empty() && back.capacity() >= 3);
        assert_eq!(none.finish().await.ok().flatten(), None);
    }
}
