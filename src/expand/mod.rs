//! Archive expansion (SPEC §4 `files[].via`: tar, gztar, bztar, xztar,
//! zip) into the data partition, with the hard limits and path rules of
//! SPEC §9. One concept per file:
//!
//! - [`decode`]: the decompressor in front of a tar stream;
//! - `crate::fetch::channel`: the bounded network → expansion thread hand-over;
//! - [`allowance`]: bounds what the tar reader decodes between members;
//! - [`member`]: names (absolute, `..`, symlink targets) and the junk filter;
//! - [`limits`]: expanded bytes and entry count;
//! - [`tar`], [`zip`]: the two walkers;
//! - [`target`] (into the ext4 builder), [`count`] (dry run for planning);
//! - [`sizing`] (plan) and [`pipeline`] (build hook).
//!
//! Owners: tar's numeric uid/gid are kept (names are ignored); zip members
//! are root's (zip stores none). Permission bits (incl. setuid/setgid/
//! sticky) and mtimes (seconds) are kept. Device nodes and FIFOs are
//! refused, naming the member: an image's data partition has no use for
//! them and they are a classic archive attack.

pub mod allowance;
pub mod count;
pub mod decode;
pub mod error;
pub mod limits;
pub mod member;
pub mod pipeline;
pub mod sizing;
pub mod tar;
pub mod target;
pub mod zip;

pub use count::{Counter, Needs};
pub use decode::{decoder, Format};
pub use error::{ExpandError, MemberError};
pub use limits::{Limits, DEFAULT_MAX_ENTRIES, DEFAULT_RATIO, MAX_ENTRIES_ENV, RATIO_ENV};
pub use pipeline::expand_archives;
pub use sizing::{estimate, plan_archive_item, ArchivePlan, ESTIMATE_AVG_MEMBER};
pub use target::{Ext4Target, Target};
