//! What a build hands over besides the raw image (docs/spec.md §10): the
//! block map of what the card needs ([`map`], written as bmaptool's
//! format by [`bmap`]), the one sequential pass over the finished image
//! ([`pass`]) and what it feeds, `OUTPUT.json` ([`meta`]) and
//! `OUTPUT.torrent` ([`torrent`]); [`publish`] uploads them to an object
//! store (`--publish`). [`ranges`] is the coalescing range set they share.
//!
//! The pass's parts, one per file: the hand-over of chunks to consumer
//! threads ([`chunk`]); the consumer trait ([`sink`]: [`DownloadSink`],
//! where an upload plugs in); the consumers: sha256 of a stream
//! ([`digest`]), the bmap's range hashes ([`range_hash`]), the encoder
//! ([`encode`]), the compressed file ([`file_out`]), the torrent's pieces
//! ([`pieces`]); its errors ([`error`]). [`feed`] is the producing end of
//! one stream and the fan-out around it, which `flash` uses too.

pub mod bmap;
mod chunk;
pub mod digest;
pub mod encode;
pub mod error;
pub mod feed;
pub mod file_hash;
pub mod file_out;
pub mod map;
pub mod meta;
pub mod pass;
pub mod pieces;
pub mod publish;
pub mod range_hash;
pub mod ranges;
pub mod sink;
pub mod torrent;

pub use bmap::{Bmap, BmapError, BmapErrorKind, BmapRange};
pub use digest::Sha256Sink;
pub use encode::Compression;
pub use error::PassError;
pub use feed::{fan_out, Feed};
pub use file_hash::{FileHashes, FileSpans};
pub use map::{map_image, map_partitions, ImageMap};
pub use pass::{run_pass, Compress, Pass, PassResult};
pub use pieces::Pieces;
pub use publish::{ImageUpload, PublishError, Publisher};
pub use ranges::RangeSet;
pub use sink::DownloadSink;
pub use torrent::{piece_length, Torrent, TorrentError, TorrentOptions};
