//! What a build says about itself (docs/spec.md §13, docs/lock.md): the
//! record of every input as resolved ([`record`]: the lock file of
//! `--lock`, read back by `--locked`); the signed list of the files a
//! build wrote ([`sums`]: `OUTPUT.SHA256SUMS` and its minisign
//! signature, `--sign`, `verify --pubkey`); the SBOM ([`sbom`]:
//! `OUTPUT.spdx.json`, `--sbom`); the provenance ([`provenance`]:
//! `OUTPUT.intoto.jsonl`, `--provenance`).
//!
//! Nothing here reads an image or a download: the pipeline fills the
//! record from what planning resolved and the hashes the build computed
//! anyway.

pub mod provenance;
pub mod record;
pub mod sbom;
pub mod sums;

pub use record::{ConfigInput, ImageInput, Input, InputKind, LayerInput, Lock, LockError};
