//! Partitions of a disk image: the MBR and bounded positional I/O windows.

mod mbr;
mod window;

pub use mbr::{Lba, Mbr, MbrError, Partition, SECTOR};

pub use window::{PartitionWindow, WindowError};
