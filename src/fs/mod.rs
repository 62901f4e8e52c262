//! Filesystems written from userspace: the ext4 data partition builder and FAT boot partition edits.
#![warn(clippy::arithmetic_side_effects)]

pub mod ext4;
pub mod fat;
