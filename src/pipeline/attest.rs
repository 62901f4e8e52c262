//! What a build says about the image it wrote (docs/spec.md §13): the
//! SBOM (`--sbom`, `OUTPUT.spdx.json`, [`crate::trust::sbom`]) and the
//! provenance (`--provenance`, `OUTPUT.intoto.jsonl`,
//! [`crate::trust::provenance`]), made after step 7 from the record of
//! the inputs and the download file's sha256 (step 7's pass). Side
//! files, published with the others (and listed by `--sign`'s list).

use super::error::BuildError;
use super::output::{side_path, SideFiles};
use super::BuildOptions;
use crate::trust::provenance::{self, Run};
use crate::trust::sbom::{self, Described};
use crate::trust::Lock;

/// The suffix of the SBOM.
pub const SBOM: &str = ".spdx.json";
/// The suffix of the provenance.
pub const PROVENANCE: &str = ".intoto.jsonl";

/// Add the SBOM (with `--sbom`) and the provenance (with
/// `--provenance`; the build started at `started`) to `sides`, before
/// `OUTPUT.json`.
pub fn add_sides(
    opts: &BuildOptions,
    sides: &mut SideFiles,
    lock: Option<&Lock>,
    started: std::time::SystemTime,
) -> Result<(), BuildError> {
    if !opts.trust.sbom && !opts.trust.provenance {
        return Ok(());
    }
    let output = &opts.output;
    let missing = |what: &str| BuildError::OutputPass {
        path: output.clone(),
        source: std::io::Error::other(format!("--sbom, --provenance: {what}")),
    };
    let lock = lock.ok_or_else(|| missing("the inputs were not recorded"))?;
    let sha = sides
        .download_sha256
        .clone()
        .ok_or_else(|| missing("step 7 did not hash the image"))?;
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| missing("OUTPUT has no file name"))?;
    if opts.trust.sbom {
        let doc = sbom::spdx(
            lock,
            &Described {
                name: &name,
                sha256: &sha,
                size: sides.download_size,
                created: crate::fs::ext4::Timestamp::build_time().secs,
            },
        );
        insert_before_json(opts, sides, side_path(output, SBOM), doc);
    }
    if opts.trust.provenance {
        // The subjects: OUTPUT and every side file made so far (OUTPUT.json
        // included); the statement can't name itself.
        let mut subjects = vec![(name.clone(), sha)];
        for (path, bytes) in &sides.files {
            if let Some(n) = path.file_name() {
                let n = n.to_string_lossy().into_owned();
                subjects.push((n, super::record::sha256_hex(bytes)));
            }
        }
        let run = Run {
            subjects: &subjects,
            output: &name,
            started,
            finished: std::time::SystemTime::now(),
        };
        let doc = provenance::statement(lock, &run);
        insert_before_json(opts, sides, side_path(output, PROVENANCE), doc);
    }
    Ok(())
}

/// Put a side file before `OUTPUT.json` (the order of docs/spec.md §10).
fn insert_before_json(
    opts: &BuildOptions,
    sides: &mut SideFiles,
    path: std::path::PathBuf,
    bytes: Vec<u8>,
) {
    let json = side_path(&opts.output, ".json");
    let at = sides
        .files
        .iter()
        .position(|(p, _)| *p == json)
        .unwrap_or(sides.files.len());
    sides.files.insert(at, (path, bytes));
}
