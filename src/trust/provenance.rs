//! `OUTPUT.intoto.jsonl` (`--provenance`; docs/spec.md §13): one in-toto
//! Statement v1, one JSON line, whose subjects are the files the build
//! wrote (by sha256) and whose predicate is SLSA provenance v1: the build
//! type (a URI of ours, defined by docs/spec.md §13), the config as the
//! external parameter by digest, the record's inputs as resolved
//! dependencies, the builder with its version, start and end.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use super::record::{Input, Lock};

/// The in-toto Statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The SLSA provenance predicate type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// Our build type: an image built from a config (docs/spec.md §13 says
/// what its parameters mean).
pub const BUILD_TYPE: &str = "https://offspot.it/image-creator/buildtypes/image/v1";

/// What the run was.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    /// `(file name, sha256)` of each file the build wrote: OUTPUT, its
    /// side files.
    pub subjects: &'a [(String, String)],
    /// OUTPUT's file name.
    pub output: &'a str,
    /// When the build started.
    pub started: SystemTime,
    /// When it ended (its last output made).
    pub finished: SystemTime,
}

/// The builder's id: the tool, at its version.
pub fn builder_id() -> String {
    format!(
        "https://offspot.it/image-creator/builder@v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// An input as a resolved dependency (an in-toto ResourceDescriptor).
fn dependency(input: &Input, platform: &str) -> Value {
    let mut d = Map::new();
    d.insert("name".into(), input.key.clone().into());
    let uri = match (&input.image, &input.url, &input.path) {
        (Some(img), _, _) => Some(super::sbom::oci_purl(img, platform)),
        (None, Some(u), _) => Some(u.clone()),
        (None, None, Some(p)) if p.is_absolute() => Some(format!("file://{}", p.display())),
        _ => None,
    };
    if let Some(u) = uri {
        d.insert("uri".into(), u.into());
    }
    let digest = match (&input.image, &input.sha256) {
        (Some(img), _) => img
            .manifest_digest
            .strip_prefix("sha256:")
            .map(str::to_string),
        (None, s) => s.clone(),
    };
    if let Some(hex) = digest {
        d.insert("digest".into(), json!({ "sha256": hex }));
    }
    if let Some(f) = &input.final_url {
        d.insert("downloadLocation".into(), f.clone().into());
    }
    let mut notes = Map::new();
    notes.insert("kind".into(), json!(input.kind));
    if let Some(dest) = &input.dest {
        notes.insert("dest".into(), dest.clone().into());
    }
    if let Some(p) = &input.path {
        notes.insert("path".into(), p.display().to_string().into());
    }
    d.insert("annotations".into(), notes.into());
    d.into()
}

/// The statement's bytes: one JSON line and a newline (JSON Lines).
pub fn statement(lock: &Lock, run: &Run<'_>) -> Vec<u8> {
    let subjects: Vec<Value> = run
        .subjects
        .iter()
        .map(|(name, sha)| json!({ "name": name, "digest": { "sha256": sha } }))
        .collect();
    let deps: Vec<Value> = std::iter::once(&lock.base)
        .chain(&lock.items)
        .map(|i| dependency(i, &lock.platform))
        .collect();
    let mut external = json!({
        "config": {
            "uri": lock.config.source,
            "digest": { "sha256": lock.config.sha256 },
        },
        "output": run.output,
        "platform": lock.platform,
    });
    if let Some(epoch) = lock.source_date_epoch {
        external["sourceDateEpoch"] = epoch.into();
    }
    let doc = json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": builder_id(),
                    "version": { "image-creator": env!("CARGO_PKG_VERSION") },
                },
                "metadata": {
                    "startedOn": crate::progress::rfc3339(run.started),
                    "finishedOn": crate::progress::rfc3339(run.finished),
                },
            },
        },
    });
    let mut out = serde_json::to_vec(&doc).unwrap_or_default();
    out.push(b'\n');
    out
}
