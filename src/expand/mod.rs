//! Archive expansion (docs/spec.md §4 `files[].via`: tar, gztar, bztar, xztar,
//! zip) into the data partition, with the hard limits and path rules of
//! docs/spec.md §9. Planning calls [`measure`] (and [`Limits::new`]); the build
//! calls [`expand_archive`]. One concept per file:
//!
//! - [`format`]: the archive formats and the compression in front of a tar;
//! - [`source`]: where an archive's bytes come from;
//! - [`allowance`]: bounds what the tar reader decodes between members;
//! - [`member`]: names (absolute, `..`, symlink targets) and the junk filter;
//! - [`limits`]: expanded bytes and entry count;
//! - [`tar`], [`zip`]: the two walkers;
//! - [`target`] (into the ext4 builder), [`count`] (dry run for planning);
//! - [`sizing`] (planning) and [`pipeline`] (the build's expansion).
//!
//! The network → expansion hand-over is `crate::io::channel`.
//!
//! Owners: tar's numeric uid/gid are kept (names are ignored); zip members
//! are root's (zip stores none). Permission bits (incl. setuid/setgid/
//! sticky) and mtimes (seconds) are kept. Device nodes and FIFOs are
//! refused, naming the member: an image's data partition has no use for
//! them and they are a classic archive attack.

pub mod allowance;
pub mod count;
pub mod error;
pub mod format;
pub mod limits;
pub mod member;
pub mod pipeline;
pub mod sizing;
pub mod source;
pub mod tar;
pub mod target;
pub mod zip;

pub use count::{Counter, Needs};
pub use error::{ExpandError, MemberError};
pub use format::Format;
pub use limits::{Limits, DEFAULT_MAX_ENTRIES, DEFAULT_RATIO, MAX_ENTRIES_ENV, RATIO_ENV};
pub use pipeline::{expand_archive, Expansion};
pub use sizing::{estimate, measure, measure_remote, ArchivePlan, ESTIMATE_AVG_MEMBER};
pub use source::ArchiveSource;
pub use target::{Ext4Target, Target};
