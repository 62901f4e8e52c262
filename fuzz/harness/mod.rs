//! The fuzz harness: one function per target, each taking the raw input.
//! Shared by the cargo-fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly)
//! and by `tests/fuzz_replay.rs`, which feeds them every committed corpus
//! and crash file on stable Rust. A harness function panics only when a
//! property fails (a bug); every other outcome, errors included, is fine.
//! Bounds on time and memory come from the fuzzer (`-timeout`,
//! `-rss_limit_mb`) and from the replay test's clock.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod ext4;

use std::io::Cursor;
use std::path::Path;

use image_creator::cache::Policy;
use image_creator::config::{check_yaml_bounds, render_offspot_yaml, HashAlgo, ImageConfig};
use image_creator::expand::count::Counter;
use image_creator::expand::{tar::expand_tar_from, zip::expand_zip, Format, Limits};
use image_creator::io::Hasher;
use image_creator::oci::{resolve_documents, Platform};
use image_creator::output::Bmap;
use image_creator::partition::Mbr;
use serde_norway::{Mapping, Value};

/// A harness function.
pub type Target = fn(&[u8]);

/// Every target, by name: the replay test walks `fuzz/corpus/<name>` and
/// `fuzz/regressions/<name>`.
pub const TARGETS: [(&str, Target); 9] = [
    ("config", config),
    ("offspot", offspot),
    ("tar", tar),
    ("zip", zip),
    ("oci", oci),
    ("mbr", mbr),
    ("ext4_carry", ext4::carry),
    ("cache_policy", cache_policy),
    ("bmap", bmap),
];

/// A config: bounds, YAML, schema and validation.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = ImageConfig::parse(&text, "fuzz.yaml", Path::new("/nonexistent"));
}

/// The `offspot.yaml` emitter: whatever mapping parses, its rendering
/// parses back, renders to the same text, and (for plain data: string
/// keys, no tags) gives back the same mapping.
pub fn offspot(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if check_yaml_bounds(&text).is_err() {
        return;
    }
    let Ok(m) = serde_norway::from_str::<Mapping>(&text) else {
        return;
    };
    let out = render_offspot_yaml(&m);
    let back: Mapping = if out.trim().is_empty() {
        Mapping::new()
    } else {
        serde_norway::from_str(&out)
            .unwrap_or_else(|e| panic!("rendered offspot.yaml does not parse: {e}\n{out}"))
    };
    assert_eq!(render_offspot_yaml(&back), out, "rendering is not stable");
    if plain(&Value::Mapping(m.clone())) {
        assert_eq!(back, m, "round trip changed the mapping:\n{out}");
    }
}

/// Data the emitter promises to keep exactly: string keys, no tags, no
/// NaN (which is never equal to itself).
fn plain(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m
            .iter()
            .all(|(k, v)| matches!(k, Value::String(_)) && plain(v)),
        Value::Sequence(s) => s.iter().all(plain),
        Value::Tagged(_) => false,
        Value::Number(n) => !n.is_nan(),
        _ => true,
    }
}

/// Limits for the archive targets: the declared size is 64 MiB, so the
/// byte budget and the entry limit are both reachable.
fn limits(len: usize) -> Limits {
    Limits::new("files[0]", Some(64 << 20), len as u64, Format::Tar)
}

/// The tar planner (the dry-run counter, with the path rules and limits
/// of a real expansion); the first byte picks the compression.
pub fn tar(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let format = match sel % 4 {
        0 => Format::Tar,
        1 => Format::Gztar,
        2 => Format::Bztar,
        _ => Format::Xztar,
    };
    let mut counter = Counter::default();
    let _ = expand_tar_from(body, format, "fuzz.tar", &limits(body.len()), &mut counter);
}

/// The zip planner.
pub fn zip(data: &[u8]) {
    let mut counter = Counter::default();
    let _ = expand_zip(
        Cursor::new(data),
        "fuzz.zip",
        &limits(data.len()),
        &mut counter,
    );
}

/// OCI documents: the input is up to three JSON documents separated by
/// NUL bytes (manifest or index, the platform manifest, the config), read
/// for the platform named by the first byte.
pub fn oci(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let platform = match sel % 4 {
        0 => Platform::default(),
        1 => Platform::parse("linux/amd64").unwrap(),
        2 => Platform::parse("linux/arm").unwrap(),
        _ => Platform::parse("linux/arm64").unwrap(),
    };
    let mut parts = rest.splitn(3, |&b| b == 0);
    let first = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or_default().to_vec();
    let config = parts.next().unwrap_or_default();
    if let Ok(layers) = resolve_documents("fuzz/image:1", first, |_| second, config, &platform) {
        for l in layers {
            assert!(l.digest.starts_with("sha256:") && l.diff_id.starts_with("sha256:"));
        }
    }
    // Platform strings too.
    if let Ok(s) = std::str::from_utf8(rest) {
        if let Ok(p) = Platform::parse(s) {
            let again = Platform::parse(&p.to_string()).expect("a platform's own text parses");
            assert!(again.matches(&p), "{p} does not match its own text");
        }
    }
}

/// The MBR reader: a sector, then the image length (8 bytes LE). A table
/// that validates survives growing p3 and a write-read round trip.
pub fn mbr(data: &[u8]) {
    let Some(sector) = data.get(..512) else {
        return;
    };
    let sector: [u8; 512] = sector.try_into().expect("512 bytes");
    let image_len = data.get(512..520).map_or(u64::MAX, |b| {
        u64::from_le_bytes(b.try_into().expect("8 bytes"))
    });
    let Ok(mut m) = Mbr::parse(&sector) else {
        return;
    };
    for n in 0..6 {
        let _ = m.partition(n);
    }
    if m.validate(3, image_len).is_err() {
        return;
    }
    let back = Mbr::parse(&m.to_bytes()).expect("our own table parses");
    assert_eq!(back.to_bytes(), m.to_bytes(), "write-read round trip");
    let p3 = m.partition(3).expect("validated");
    let grown = p3.len() / 512 + u64::from(sector[0]);
    if m.set_sectors(3, grown).is_ok() {
        let again = Mbr::parse(&m.to_bytes()).expect("a grown table parses");
        assert_eq!(again.partition(3).expect("p3").len(), grown * 512);
    }
}

/// The cache's `policy.yaml`.
pub fn cache_policy(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = Policy::parse(&text, Path::new("policy.yaml"));
}

/// A bmap file (`verify --bmap`). The fuzzer can't forge a file's own
/// sha256, so an input holding `@@SUM@@` gets it computed there (the seeds
/// do): mutations then reach the ranges. What parses is a map `verify`
/// can check (ranges inside the image, each with a sha256, at least one),
/// and our rendering of it parses back the same.
pub fn bmap(data: &[u8]) {
    const MARK: &str = "@@SUM@@";
    let text = String::from_utf8_lossy(data);
    let text = if text.contains(MARK) {
        let mut h = Hasher::new(HashAlgo::Sha256);
        h.update(text.replacen(MARK, &"0".repeat(64), 1).as_bytes());
        text.replacen(MARK, &h.finalize_hex(), 1)
    } else {
        text.into_owned()
    };
    let path = Path::new("fuzz.bmap");
    let b = match Bmap::parse(path, &text) {
        Ok(b) => b,
        Err(e) => {
            assert!(
                e.line >= 1 && e.to_string().starts_with("fuzz.bmap:"),
                "{e}"
            );
            return;
        }
    };
    let blocks = b.image_size.div_ceil(b.block_size);
    assert!(!b.ranges.is_empty(), "a map without ranges was accepted");
    for r in &b.ranges {
        assert!(r.first <= r.last && r.last < blocks, "{r:?} of {blocks}");
        let hex = |c: u8| c.is_ascii_digit() || (b'a'..=b'f').contains(&c);
        assert!(r.sha256.len() == 64 && r.sha256.bytes().all(hex), "{r:?}");
    }
    let again = Bmap::parse(path, &b.render()).expect("our rendering of a map parses");
    assert_eq!(again, b, "render and parse again");
}
