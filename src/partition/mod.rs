//! Partitions of a disk image: the MBR and bounded positional I/O windows.
#![deny(clippy::arithmetic_side_effects)]

mod mbr;
mod reader;
mod window;

pub use mbr::{Lba, Mbr, MbrError, Partition, SECTOR};

pub use reader::WindowReader;
pub use window::{PartitionWindow, WindowError, WriteLog};
