//! ext4 builder
