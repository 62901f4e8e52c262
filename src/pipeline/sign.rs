//! `--sign KEY` in the run (docs/spec.md §13; the formats are
//! [`crate::trust::sums`]): the key is loaded in step 1 (a key that can't
//! be used stops the build before anything is written); after step 7,
//! `OUTPUT.SHA256SUMS` lists the download file (by the sha256 step 7's
//! pass computed) and every side file this build writes (hashed from
//! their bytes in memory), and `OUTPUT.SHA256SUMS.minisig` signs it.
//! Both are side files, published with the others.

use std::path::Path;

use super::error::BuildError;
use super::output::{side_path, SideFiles};
use super::BuildOptions;
use crate::trust::sums::{self, Signer, PASSWORD_ENV};
use crate::trust::Lock;

/// The suffix of the list (`OUTPUT.SHA256SUMS`).
pub const SUMS: &str = ".SHA256SUMS";
/// The suffix of its signature (`OUTPUT.SHA256SUMS.minisig`).
pub const MINISIG: &str = ".SHA256SUMS.minisig";

/// The `--sign` key, its password from [`PASSWORD_ENV`] when set.
pub fn load_signer(opts: &BuildOptions) -> Result<Option<Signer>, BuildError> {
    let Some(path) = &opts.trust.sign else {
        return Ok(None);
    };
    let password = std::env::var(PASSWORD_ENV).ok();
    Ok(Some(Signer::load(path, password)?))
}

/// Add `OUTPUT.SHA256SUMS` (the download file, each side file in
/// `sides`, and the `--lock` file when it sits beside OUTPUT) and its
/// signature to `sides`.
pub fn sign_sides(
    opts: &BuildOptions,
    signer: &Signer,
    sides: &mut SideFiles,
    lock: Option<&Lock>,
) -> Result<(), BuildError> {
    let output = &opts.output;
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    let missing = |what: &str| BuildError::OutputPass {
        path: output.clone(),
        source: std::io::Error::other(format!("--sign: {what}")),
    };
    let image = name(output).ok_or_else(|| missing("OUTPUT has no file name"))?;
    let sha = sides
        .download_sha256
        .clone()
        .ok_or_else(|| missing("step 7 did not hash the image"))?;
    let mut entries = vec![(image, sha)];
    for (path, bytes) in &sides.files {
        if let Some(n) = name(path) {
            entries.push((n, super::record::sha256_hex(bytes)));
        }
    }
    if let (Some(path), Some(lock)) = (&opts.trust.lock, lock) {
        if same_dir(path, output) {
            if let Some(n) = name(path) {
                entries.push((n, super::record::sha256_hex(&lock.to_json())));
            }
        }
    }
    let list = sums::render(&entries);
    let sums_path = side_path(output, SUMS);
    let list_name = name(&sums_path).unwrap_or_default();
    let timestamp = crate::fs::ext4::Timestamp::build_time().secs;
    let sig = signer.sign(&list, &list_name, timestamp)?;
    sides.files.push((sums_path, list));
    sides.files.push((side_path(output, MINISIG), sig));
    Ok(())
}

/// Whether `a` and `b` are in one directory.
fn same_dir(a: &Path, b: &Path) -> bool {
    let dir = |p: &Path| {
        let d = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => std::path::PathBuf::from("."),
        };
        std::fs::canonicalize(&d).unwrap_or(d)
    };
    dir(a) == dir(b)
}
