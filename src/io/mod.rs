//! Stream adapters, one per file, composed by the build's pipelines:
//!
//! - [`digest`]: streaming digests and the verifier that checks one at EOF;
//! - [`hashing`]: a `Read` that feeds a verifier;
//! - [`sink`]: [`ChunkSink`], where a download's bytes go, and the file sinks;
//! - [`progress`]: a sink adapter that reports an item's bytes;
//! - [`channel`]: the bounded download → decoder hand-over;
//! - [`decode`]: decompressors by compression;
//! - [`sparse`]: copies that leave holes for zero blocks; [`holes`]: a
//!   local file's data regions.
//!
//! A reader into a file reserved in the ext4 builder is
//! `fs::ext4::FileWriter::copy_from` (it serves the builder's own carry-over
//! too, below this layer).

pub mod channel;
pub mod decode;
mod digest;
pub mod hashing;
mod holes;
pub mod progress;
pub mod sink;
mod sparse;

pub use channel::{channel, ChannelReader, ChannelSink, ReaderStopped};
pub use decode::{decoder, drain, xz, zstd, Compression, ZSTD_WINDOW_LOG_MAX};
pub use digest::{hex, Check, ChecksumMismatch, Hasher, StreamVerifier};
pub use hashing::HashingReader;
pub use holes::data_regions;
pub use progress::ProgressSink;
pub use sink::{ChunkSink, FileSink, SparseFileSink, Tee, WriterSink};
pub use sparse::{sparse_copy, CopyStats, SPARSE_BUF};

/// Copy buffer for reads into reserved files: 1 MiB, as [`SPARSE_BUF`]
/// (large sequential reads; a multiple of the 4 KiB block).
pub const COPY_BUF: usize = 1 << 20;
