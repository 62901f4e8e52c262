//! What a build hands over besides the raw image (docs/spec.md §10): the
//! block map of what the card needs ([`map`], written as bmaptool's
//! format by [`bmap`]), the one sequential pass that hashes and
//! compresses the finished image ([`pass`]), and `OUTPUT.json`
//! ([`meta`]); [`publish`] uploads them to an object store (`--publish`).
//! [`ranges`] is the coalescing range set they share.

pub mod bmap;
pub mod map;
pub mod meta;
pub mod pass;
pub mod publish;
pub mod ranges;

pub use bmap::{Bmap, BmapError, BmapErrorKind, BmapRange};
pub use map::{map_image, map_partitions, ImageMap};
pub use pass::{run_pass, Compression, PassResult};
pub use publish::{ImageUpload, PublishError, Publisher};
pub use ranges::RangeSet;
