//! Partitions of a disk image: the MBR and bounded positional I/O windows.

mod window;

pub use window::{PartitionWindow, WindowError};
