//! image-creator: a rootless builder of Offspot / Kiwix Raspberry Pi disk images.
//!
//! The library does the work; `main.rs` only parses the command line,
//! renders progress and maps errors to exit codes. Layers run one way
//! (docs/design.md): a module uses the ones listed before it, never one
//! after.
//!
//! - [`partition`]: the MBR and bounded positional I/O over one partition;
//! - [`fs`]: the ext4 builder and the FAT edit, from userspace;
//! - [`config`], [`progress`], [`error`], [`os`]: leaves: the config
//!   schema, progress events and their renderers (and calendar dates), exit
//!   codes, the platform layer (hole punching, `SEEK_DATA`, range copies,
//!   reflinks, each with a portable fallback);
//! - [`io`]: stream adapters (digests, sinks, the download → decoder
//!   channel, decoders, sparse copies);
//! - [`fetch`]: the HTTP client and its runtime ([`fetch::Net`]);
//! - [`objstore`]: object storage clients, their runtime, the streaming
//!   multipart upload;
//! - [`expand`], [`oci`]: archives; registry pulls into docker-archives;
//! - [`output`]: the block map, the hashing / compressing output pass,
//!   `OUTPUT.json`;
//! - [`plan`]: config + probes → items and sizes;
//! - [`pipeline`]: the run, one file per step, in order, with cleanup;
//! - [`verify`]: `image-creator verify`: an image or a card read back;
//! - [`flash`]: `image-creator flash`: one image onto many cards at once;
//! - [`cli`]: the command line.

pub mod cache;
pub mod cli;
pub mod config;
pub mod error;
pub mod expand;
pub mod fetch;
pub mod flash;
pub mod fs;
pub mod io;
pub mod objstore;
pub mod oci;
pub mod os;
pub mod output;
pub mod partition;
pub mod pipeline;
pub mod plan;
pub mod progress;
pub mod trust;
pub mod verify;

pub use error::ExitKind;
pub use pipeline::{run, BuildError, BuildOptions, Outcome};
pub use plan::{make_plan, Plan, PlanError};
