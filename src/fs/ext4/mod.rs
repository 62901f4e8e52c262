//! A streaming ext4 builder: lays out a fresh ext4 filesystem inside a
//! [`PartitionWindow`](crate::partition::PartitionWindow) and streams file
//! data straight into the blocks it reserved (see docs/design.md, "The ext4 builder").

mod alloc;
mod bitmaps;
mod builder;
mod bytes;
mod capacity;
mod carry;
mod csum;
mod dir;
mod error;
mod extent;
mod file;
mod finish;
mod group;
mod hash;
mod host;
mod htree;
mod ids;
mod inode;
mod inodes;
mod journal;
mod layout;
mod names;
mod node;
mod params;
mod reserve;
mod resize;
mod superblock;
mod units;
mod view;

pub use builder::Ext4Builder;
pub use capacity::{capacity, dir_blocks, file_blocks, min_size, Capacity};
pub use carry::{scan_old, OldNames, OldPath, OldSummary, OldTree};
pub use error::Ext4Error;
pub use file::{CopyError, FileWriter, SequentialWriter, SmallFiles};
pub use finish::FinishStats;
pub use hash::dir_hash;
pub use host::{add_host_tree, count_host_entries, host_meta, PendingCopies, COPY_BUF};
pub use names::{NameTable, NamesFull};
pub use node::{is_valid_name, Ino, SpecialKind, ROOT_INO};
pub use params::{
    source_date_epoch, Ext4Params, InodeMeta, InodePolicy, Timestamp, MAX_EXTENT_BLOCKS,
};
pub use superblock::OldSuperblock;
pub use units::BLOCK_SIZE;
pub use view::WindowRead;
