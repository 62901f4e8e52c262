//! Filesystems written from userspace: the ext4 data partition builder and FAT boot partition edits.
#![deny(clippy::arithmetic_side_effects)]

pub mod ext4;
pub mod fat;
