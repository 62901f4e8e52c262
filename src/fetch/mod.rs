//! Getting bytes: digests, local sources, xz decoding, sparse copies.

pub mod channel;
mod digest;
mod holes;
mod http;
mod overlap;
mod sparse;

pub use digest::{ChecksumMismatch, Hasher, StreamVerifier};
pub use holes::data_regions;
pub use http::{
    error_chain, first_token, redact, ChunkSink, FetchOptions, Http, HttpError, Probe, BATCH,
};
pub use sparse::{sparse_copy, CopyStats, SPARSE_BUF};
