//! image-creator: a rootless builder of Offspot / Kiwix Raspberry Pi disk images.
//!
//! The library does the work; `main.rs` only parses the command line and maps
//! errors to exit codes. See `shared/docs/DESIGN.md` for the architecture.

pub mod build;
pub mod cache;
pub mod cli;
pub mod config;
pub mod error;
pub mod expand;
pub mod fetch;
pub mod fs;
pub mod oci;
pub mod partition;
pub mod plan;
pub mod progress;
