//! A recorded build (`--lock`, `--locked`; docs/spec.md §13, docs/lock.md):
//! the record of every input as resolved ([`crate::trust::Lock`]). Its
//! frame comes from the plan ([`frame`]: keys, URLs, sizes, image
//! digests, a cache hit's sha256 and validators); the build fills in what
//! only the writing learns ([`Recorder`]: each download's sha256 from the
//! check it runs anyway, the URL after redirects, the validators), and
//! step 3 the base's. Nothing is read twice for it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use super::error::BuildError;
use super::planning::Planned;
use super::BuildOptions;
use crate::cache::{Entry, Hit};
use crate::config::ImageConfig;
use crate::fetch::{redact, Fetched};
use crate::io::Hasher;
use crate::plan::{BaseLocation, CacheUse, Item, ItemSource};
use crate::trust::{ConfigInput, ImageInput, Input, InputKind, LayerInput, Lock};

/// What the writing steps learnt of an item (by its name, `/data/…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Learnt {
    /// The payload's sha256.
    pub sha256: Option<String>,
    /// The URL after redirects.
    pub final_url: Option<String>,
    /// `ETag`.
    pub etag: Option<String>,
    /// `Last-Modified`.
    pub last_modified: Option<String>,
    /// An image's platform manifest digest.
    pub manifest_digest: Option<String>,
}

impl Learnt {
    /// From a download: `digest` is the sha256 in a recorded build.
    pub fn fetched(f: Fetched) -> Self {
        Self {
            sha256: f.digest,
            final_url: Some(f.final_url),
            etag: f.etag,
            last_modified: f.last_modified,
            manifest_digest: None,
        }
    }

    /// From a cache entry: its blob's sha256 and stored validators.
    pub fn entry(e: &Entry) -> Self {
        Self {
            sha256: Some(e.sha256.clone()),
            final_url: None,
            etag: e.validators.etag.clone(),
            last_modified: e.validators.last_modified.clone(),
            manifest_digest: None,
        }
    }

    /// The sha256 alone.
    pub fn sha256(digest: Option<String>) -> Self {
        Self {
            sha256: digest,
            ..Self::default()
        }
    }
}

/// Collects what the writing steps learn, from any thread.
#[derive(Debug, Default)]
pub struct Recorder {
    learnt: Mutex<HashMap<String, Learnt>>,
}

impl Recorder {
    /// Note what was learnt of item `name`.
    pub fn learn(&self, name: &str, learnt: Learnt) {
        if let Ok(mut m) = self.learnt.lock() {
            m.insert(name.to_string(), learnt);
        }
    }

    /// Note item `name`'s sha256 (learnt after the rest: from the
    /// cache's commit, or from step 7's read of the image).
    pub fn learn_sha256(&self, name: &str, sha256: String) {
        if let Ok(mut m) = self.learnt.lock() {
            m.entry(name.to_string()).or_default().sha256 = Some(sha256);
        }
    }

    /// The record: `frame` with what was learnt, and the base's sha256.
    pub fn complete(self, mut frame: Lock, base_sha256: Option<String>) -> Lock {
        let mut learnt = self.learnt.into_inner().unwrap_or_default();
        if frame.base.sha256.is_none() {
            frame.base.sha256 = base_sha256;
        }
        for input in &mut frame.items {
            let Some(l) = input.dest.as_ref().and_then(|d| learnt.remove(d)) else {
                continue;
            };
            input.sha256 = l.sha256.or(input.sha256.take());
            input.final_url = l.final_url.filter(|u| Some(u) != input.url.as_ref());
            input.etag = l.etag.or(input.etag.take());
            input.last_modified = l.last_modified.or(input.last_modified.take());
            if let (Some(img), Some(d)) = (input.image.as_mut(), l.manifest_digest) {
                img.manifest_digest = d;
            }
        }
        frame
    }
}

/// sha256 of `bytes`, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Hasher::new(crate::config::HashAlgo::Sha256);
    h.update(bytes);
    h.finalize_hex()
}

/// `--locked`: the config must be the one the lock was made from.
pub fn check_config(config: &ImageConfig, lock: &Lock, path: &Path) -> Result<(), BuildError> {
    let now = sha256_hex(config.raw_text.as_bytes());
    if now.eq_ignore_ascii_case(&lock.config.sha256) {
        return Ok(());
    }
    Err(BuildError::Locked(format!(
        "the config's sha256 is {now}, the lock {} was made from a config with {}",
        path.display(),
        lock.config.sha256
    )))
}

/// `--locked`: what planning found must be what the lock names: the same
/// items, and each download of the size the lock gives (a source that
/// changed size is refused here, before anything is written).
pub fn check_planned(frame: &Lock, lock: &Lock) -> Result<(), BuildError> {
    for (now, then) in std::iter::once((&frame.base, &lock.base)).chain(
        frame
            .items
            .iter()
            .map(|i| (i, lock.item(&i.key)))
            .filter_map(|(i, l)| Some((i, l?))),
    ) {
        if then.size.is_some() && now.size.is_some() && now.size != then.size {
            return Err(BuildError::Locked(format!(
                "{} ({}) is {} bytes, the lock says {}",
                now.key,
                now.name(),
                now.size.unwrap_or_default(),
                then.size.unwrap_or_default()
            )));
        }
    }
    if let Some(extra) = frame.items.iter().find(|i| lock.item(&i.key).is_none()) {
        return Err(BuildError::Locked(format!(
            "{} ({}) is not in the lock",
            extra.key,
            extra.name()
        )));
    }
    Ok(())
}

/// The record's frame, from the plan (before the writing steps consume
/// it): every input with what planning knows of it.
pub fn frame(
    opts: &BuildOptions,
    config: &ImageConfig,
    planned: &Planned,
    locked: Option<&Lock>,
) -> Lock {
    let base = &planned.base;
    let mut b = Input::new("base.source", InputKind::Base);
    match &base.location {
        BaseLocation::Local(p) => b.path = Some(p.clone()),
        BaseLocation::Http(u) => b.url = Some(redact(u)),
    }
    if !base.xz {
        b.size = Some(base.size);
    }
    if let Some(CacheUse::Hit(hit)) = &planned.base_cache {
        from_hit(&mut b, hit);
    }
    let items = planned
        .plan
        .items
        .iter()
        .map(|i| item_input(i, locked))
        .collect();
    Lock {
        lock_version: crate::trust::record::LOCK_VERSION,
        tool: format!("image-creator {}", env!("CARGO_PKG_VERSION")),
        source_date_epoch: source_date_epoch(),
        config: ConfigInput {
            source: redact(&opts.config_src),
            sha256: sha256_hex(config.raw_text.as_bytes()),
        },
        platform: crate::oci::Platform::default().normalized(),
        base: b,
        items,
    }
}

/// A cache hit's sha256 and validators.
fn from_hit(input: &mut Input, hit: &Hit) {
    let l = Learnt::entry(hit.entry());
    input.sha256 = l.sha256;
    input.etag = l.etag;
    input.last_modified = l.last_modified;
}

/// One item's input as planned.
fn item_input(item: &Item, locked: Option<&Lock>) -> Input {
    let kind = match (&item.source, &item.archive) {
        (ItemSource::Oci(_), _) => InputKind::Image,
        (_, Some(_)) => InputKind::Archive,
        (ItemSource::Bytes(_), None) => InputKind::Inline,
        _ => InputKind::File,
    };
    let mut i = Input::new(&item.key, kind);
    i.dest = Some(item.name());
    i.size = match &item.archive {
        Some(a) => a.archive_size,
        None if kind == InputKind::Image => None,
        None => Some(item.size),
    };
    match &item.source {
        ItemSource::Bytes(b) => {
            i.size = Some(b.len() as u64);
            i.sha256 = Some(sha256_hex(b));
        }
        ItemSource::Local { path, .. } => i.path = Some(path.clone()),
        ItemSource::Http { url, .. } => i.url = Some(redact(url)),
        ItemSource::Oci(pull) => i.image = Some(image_input(item, pull, locked)),
    }
    match item.cache.as_deref() {
        Some(CacheUse::Hit(hit)) if kind != InputKind::Image => from_hit(&mut i, hit),
        Some(CacheUse::Fill { validators, .. }) => {
            i.etag.clone_from(&validators.etag);
            i.last_modified.clone_from(&validators.last_modified);
        }
        _ => {}
    }
    i
}

/// An image's reference and digests: as resolved at planning, else (a
/// cache hit not checked) the entry's manifest digest; the lock's index
/// digest when pulled by the lock's manifest digest.
fn image_input(item: &Item, pull: &crate::plan::OciPull, locked: Option<&Lock>) -> ImageInput {
    let r = &pull.reference;
    let from_lock = locked
        .and_then(|l| l.item(&item.key))
        .and_then(|i| i.image.as_ref());
    let mut img = ImageInput {
        registry: r.registry.clone(),
        repository: format!("{}/{}", r.repository, r.name),
        tag: r.tag.clone(),
        index_digest: None,
        manifest_digest: String::new(),
        config_digest: None,
        layers: Vec::new(),
    };
    if let Some(res) = &pull.resolved {
        img.index_digest.clone_from(&res.index_digest);
        img.manifest_digest.clone_from(&res.manifest_digest);
        img.config_digest = Some(res.config_digest.clone());
        img.layers = res
            .layers
            .iter()
            .map(|l| LayerInput {
                digest: l.digest.clone(),
                size: l.size,
            })
            .collect();
    } else if let Some(CacheUse::Hit(hit)) = item.cache.as_deref() {
        img.manifest_digest = hit.validators().digest.clone().unwrap_or_default();
    }
    if let Some(l) = from_lock.filter(|l| l.manifest_digest == img.manifest_digest) {
        if img.index_digest.is_none() {
            img.index_digest.clone_from(&l.index_digest);
        }
        if img.layers.is_empty() {
            img.config_digest.clone_from(&l.config_digest);
            img.layers.clone_from(&l.layers);
        }
    }
    img
}

/// `--lock FILE` can be written: its directory exists (checked in step 1,
/// so a typo costs no build).
pub fn check_lock_path(path: &Path) -> Result<(), BuildError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if dir.is_dir() && !path.is_dir() {
        return Ok(());
    }
    Err(BuildError::Usage(format!(
        "--lock {}: not a file in an existing directory",
        path.display()
    )))
}

/// Write the lock to `path`: a temporary file beside it, synced, renamed
/// over it.
pub fn write_lock(path: &Path, lock: &Lock) -> Result<(), BuildError> {
    use std::io::Write;
    let err = |source| BuildError::Persist {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".image-creator-lock-")
        .tempfile_in(dir)
        .map_err(err)?;
    tmp.write_all(&lock.to_json()).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}

/// `SOURCE_DATE_EPOCH`, when set to an integer.
fn source_date_epoch() -> Option<i64> {
    std::env::var("SOURCE_DATE_EPOCH").ok()?.trim().parse().ok()
}
