//! What a build says about itself (docs/spec.md §13, docs/lock.md): the
//! record of every input as resolved ([`record`]: the lock file of
//! `--lock`, read back by `--locked`).
//!
//! Nothing here reads an image or a download: the pipeline fills the
//! record from what planning resolved and the hashes the build computed
//! anyway.

pub mod record;

pub use record::{ConfigInput, ImageInput, Input, InputKind, LayerInput, Lock, LockError};
