//! Filesystems written from userspace: the ext4 data partition builder and FAT boot partition edits.
#![deny(clippy::arithmetic_side_effects)]

pub mod ext4;
// Exempt for its civil-date helper only (days -> year/month/day on an i64
// day count of at most 2^63 / 86400 < 2^47, so every intermediate stays
// below 2^58): that helper is being unified with progress/time.rs (issue
// 11); drop this `allow` when it leaves fat.rs.
#[allow(clippy::arithmetic_side_effects)]
pub mod fat;
