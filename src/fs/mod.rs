//! Filesystems written from userspace: the ext4 data partition builder.

pub mod ext4;
