//! [`Net`]: the HTTP client and the runtime it runs on, shared by planning
//! and the build (async stays at the network edge).

use super::http::{FetchOptions, Http, HttpError};

/// Async workers: 2 (downloads are I/O-bound; the bytes are written from
/// blocking sections, so more workers would only add threads).
const WORKERS: usize = 2;

/// Network access: the client and a multi-threaded tokio runtime.
#[derive(Debug)]
pub struct Net {
    /// The client.
    pub http: Http,
    /// The runtime.
    pub rt: tokio::runtime::Runtime,
}

impl Net {
    /// A runtime with [`WORKERS`] workers and a client.
    pub fn new(opts: FetchOptions) -> Result<Self, HttpError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .map_err(|e| HttpError::Setup {
                message: format!("starting the network runtime: {e}"),
            })?;
        let http = Http::new(opts)?;
        Ok(Self { http, rt })
    }

    /// Run `f` to completion on the runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}
