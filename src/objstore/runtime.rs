//! The tokio runtime of every object-store call (the cache's, the
//! publishing uploads): one per process, two worker threads, started on
//! first use and never dropped (a runtime can't be dropped from async
//! code, and a cache handle may be). The downloads' runtime is `fetch`'s;
//! this one is the stores' own, so a store call can be made from any
//! thread, also from a task of another runtime.

use std::sync::mpsc::sync_channel;
use std::sync::OnceLock;

/// The runtime could not run a call. The caller names the store.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Its threads could not be started.
    #[error("could not start the object store's threads")]
    Start,
    /// The call's task ended without an answer (it panicked, or the
    /// runtime is shutting down).
    #[error("its task ended without an answer")]
    Lost,
}

impl RuntimeError {
    /// What we were doing, for the error naming the store.
    pub fn action(&self) -> &'static str {
        match self {
            RuntimeError::Start => "starting its runtime",
            RuntimeError::Lost => "waiting for the object store",
        }
    }
}

/// The runtime, started the first time.
pub fn runtime() -> Result<&'static tokio::runtime::Runtime, RuntimeError> {
    static RT: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .ok()
    })
    .as_ref()
    .ok_or(RuntimeError::Start)
}

/// Run `f` on the runtime and wait for it, from any thread (also from a
/// task of another runtime: we block on a channel, never enter a runtime
/// here).
pub fn run<F>(f: F) -> Result<F::Output, RuntimeError>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime()?;
    let (tx, rx) = sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().map_err(|_| RuntimeError::Lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_a_plain_thread_and_from_another_runtime() {
        assert_eq!(run(async { 6 * 7 }).ok(), Some(42));
        let other = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| e.to_string());
        let got = other.map(|rt| rt.block_on(async { run(async { "in" }).ok() }));
        assert_eq!(got, Ok(Some("in")));
    }

    #[test]
    fn a_task_that_panics_is_lost_not_a_hang() {
        let got = run(async {
            if std::hint::black_box(true) {
                panic!("boom (expected by this test)");
            }
        });
        assert!(matches!(got, Err(RuntimeError::Lost)), "{got:?}");
    }
}
