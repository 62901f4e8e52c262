//! The network edge: the HTTP client (retries, resume, size caps, digests
//! checked off the receive path) and [`Net`], the client with its runtime.

mod http;
mod net;
mod overlap;

pub use http::{error_chain, first_token, redact, FetchOptions, Http, HttpError, Probe, BATCH};
pub use net::Net;
