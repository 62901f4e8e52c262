//! The config's entries as [`Item`]s: container images, files and
//! archives, each with its size probed (HEAD, registry manifest, local
//! stat) or measured (local archives, by a dry run).

use std::path::Path;

use super::base::resolve_checksum;
use super::cached::CacheUse;
use super::cached::{validators, Lookup, Planner};
use super::error::PlanError;
use super::item::{data_path, Item, ItemSource, OciPull};
use super::spool::Spool;
use crate::cache::{Key, Validators};
use crate::config::{FileEntry, ImageConfig, OciEntry, Payload, Source};
use crate::expand::{self, ArchivePlan, ArchiveSource, Format, Limits, Needs};
use crate::fetch::{redact, Net};
use crate::oci::{Platform, Registry};

/// The items of the config, in write order (images, files, `image.yaml`),
/// and the bytes the Pi needs free to unpack the prebuilt images.
/// Unreachable sources are all reported together.
pub fn plan_items(
    config: &ImageConfig,
    net: &Net,
    cache: &mut Planner<'_>,
) -> Result<(Vec<Item>, u64), PlanError> {
    let mut unreachable = Unreachable::default();
    let (mut items, oci_free) = oci_items(&config.oci_images, &Platform::default(), net, cache)?;
    for (i, f) in config.files.iter().enumerate() {
        let key = format!("files[{i}]");
        let source = file_source(&key, f, net, cache, &mut unreachable)?;
        items.push(match Format::of(f.via) {
            Some(format) => archive_item(&key, f, format, source, net, cache, &mut unreachable)?,
            None => file_item(&key, f, source, net, cache, &mut unreachable)?,
        });
    }
    unreachable.check()?;
    if config.write_config {
        if items.iter().any(|i| i.dest == "image.yaml") {
            return Err(PlanError::ImageYamlClash);
        }
        items.push(Item {
            key: "write_config".into(),
            dest: "image.yaml".into(),
            size: config.raw_text.len() as u64,
            source: ItemSource::Bytes(config.raw_text.clone().into_bytes()),
            archive: None,
            cache: None,
            spool: None,
        });
    }
    Ok((items, oci_free))
}

/// Unreachable sources, collected so one run reports them all.
#[derive(Debug, Default)]
struct Unreachable(Vec<String>);

impl Unreachable {
    /// Note `e` under `key` when it means "unreachable"; other errors stop
    /// planning. Returns `Ok(None)` for a noted error.
    fn note<T>(
        &mut self,
        key: &str,
        r: Result<T, crate::fetch::HttpError>,
    ) -> Result<Option<T>, PlanError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_unreachable() => {
                self.0.push(format!("{key}: {e}"));
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn check(self) -> Result<(), PlanError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(PlanError::Unreachable(self.0))
        }
    }
}

/// One item per image at `images/<archive file name>`, plus the bytes the
/// Pi needs free to unpack them: Σ `fullsize` of prebuilt `url` tars (for
/// pulled images the reservation itself is `filesize + fullsize`, shrunk
/// to the archive's exact size once written, which leaves `fullsize` free).
fn oci_items(
    entries: &[OciEntry],
    platform: &Platform,
    net: &Net,
    cache: &mut Planner<'_>,
) -> Result<(Vec<Item>, u64), PlanError> {
    let registry = Registry::new(net.http.clone());
    let mut items = Vec::new();
    let mut extra_free = 0u64;
    for (i, e) in entries.iter().enumerate() {
        let mut cached = None;
        let dest = format!(
            "images/{}",
            e.ident.archive_file_name(&platform.normalized())
        );
        let (source, size) = match &e.url {
            Some(Source::Http(url)) => {
                extra_free = extra_free.saturating_add(e.fullsize);
                let probe = net
                    .block_on(net.http.probe(url))
                    .map_err(crate::oci::OciError::from)?;
                let source = ItemSource::Http {
                    url: url.clone(),
                    checksum: super::Expected::default(),
                };
                (source, probe.size.unwrap_or(e.filesize))
            }
            Some(Source::Local(path)) => {
                extra_free = extra_free.saturating_add(e.fullsize);
                let size = std::fs::metadata(path)
                    .map_err(|source| PlanError::OciArchive {
                        ident: e.ident.repo_tag(),
                        path: path.clone(),
                        source,
                    })?
                    .len();
                let source = ItemSource::Local {
                    path: path.clone(),
                    checksum: super::Expected::default(),
                };
                (source, size)
            }
            None => {
                let size = e.filesize.saturating_add(e.fullsize);
                let key = format!("oci_images[{i}].ident");
                let (pull, use_) = image_pull(e, &key, platform, &registry, net, cache)?;
                cached = use_;
                (ItemSource::Oci(Box::new(pull)), size)
            }
        };
        items.push(Item {
            key: format!("oci_images[{i}].ident"),
            dest,
            size,
            source,
            archive: None,
            cache: cached.map(Box::new),
            spool: None,
        });
    }
    Ok((items, extra_free))
}

/// An image to pull, and the cache's part in it: a hit not due for a check
/// needs no registry at all; one due is compared by its platform manifest
/// digest (a registry that can't be reached keeps it). With `--locked`,
/// the lock's manifest digest is pulled, whatever the tag names now, and
/// a hit is used only when it is that digest (without asking the
/// registry).
fn image_pull(
    e: &OciEntry,
    item_key: &str,
    platform: &Platform,
    registry: &Registry,
    net: &Net,
    cache: &mut Planner<'_>,
) -> Result<(OciPull, Option<CacheUse>), PlanError> {
    let pin = cache
        .locked
        .and_then(|l| l.item(item_key))
        .and_then(|i| i.image.as_ref())
        .map(|i| i.manifest_digest.clone());
    if let Some(pin) = pin {
        return pinned_pull(e, &pin, platform, registry, net, cache);
    }
    let mut pull = OciPull {
        reference: e.ident.clone(),
        platform: platform.clone(),
        resolved: None,
        pin: None,
    };
    let key = Key::image(
        &e.ident.registry,
        &e.ident.repository,
        &e.ident.name,
        Some(&e.ident.tag),
        e.ident.digest.as_deref(),
        &platform.normalized(),
    );
    let name = e.ident.repo_tag();
    let digest_of = |r: &crate::oci::Resolved| Validators {
        digest: Some(r.manifest_digest.clone()),
        ..Validators::default()
    };
    let use_ = match cache.find(key, &name) {
        Lookup::Hit(hit) if !hit.is_due_for_check() => Some(Planner::hit(hit)),
        Lookup::Hit(hit) => match net.block_on(registry.resolve(&e.ident, platform)) {
            Ok(r) => {
                let now = digest_of(&r);
                let fresh = hit.validators().digest == now.digest;
                pull.resolved = Some(r);
                if fresh {
                    cache.checked(hit.key(), &now);
                    Some(Planner::hit(hit))
                } else {
                    let replaces = Some(hit.entry().sha256.clone());
                    cache.fill(hit.key().clone(), now, replaces, e.filesize)
                }
            }
            Err(err) if err.exit_kind() == crate::error::ExitKind::Unreachable => {
                cache.check_failed(&name, &err);
                Some(Planner::hit(hit))
            }
            Err(err) => return Err(err.into()),
        },
        Lookup::Miss(m) => {
            let r = net.block_on(registry.resolve(&e.ident, platform))?;
            let v = digest_of(&r);
            pull.resolved = Some(r);
            cache.fill(m.key, v, m.replaces, e.filesize)
        }
        Lookup::No => {
            pull.resolved = Some(net.block_on(registry.resolve(&e.ident, platform))?);
            None
        }
    };
    Ok((pull, use_))
}

/// `--locked`'s pull of the image of `e` at manifest digest `pin`.
fn pinned_pull(
    e: &OciEntry,
    pin: &str,
    platform: &Platform,
    registry: &Registry,
    net: &Net,
    cache: &mut Planner<'_>,
) -> Result<(OciPull, Option<CacheUse>), PlanError> {
    let key = Key::image(
        &e.ident.registry,
        &e.ident.repository,
        &e.ident.name,
        Some(&e.ident.tag),
        e.ident.digest.as_deref(),
        &platform.normalized(),
    );
    let mut pull = OciPull {
        reference: e.ident.clone(),
        platform: platform.clone(),
        resolved: None,
        pin: Some(pin.to_string()),
    };
    let (fill_key, replaces) = match cache.find(key, &e.ident.repo_tag()) {
        Lookup::Hit(hit) if hit.validators().digest.as_deref() == Some(pin) => {
            return Ok((pull, Some(Planner::hit(hit))));
        }
        Lookup::Hit(hit) => (Some(hit.key().clone()), Some(hit.entry().sha256.clone())),
        Lookup::Miss(m) => (Some(m.key), m.replaces),
        Lookup::No => (None, None),
    };
    let r = net.block_on(registry.resolve_at(&e.ident, platform, Some(pin)))?;
    let v = Validators {
        digest: Some(r.manifest_digest.clone()),
        ..Validators::default()
    };
    pull.resolved = Some(r);
    let use_ = fill_key.and_then(|k| cache.fill(k, v, replaces, e.filesize));
    Ok((pull, use_))
}

/// Where `files[i]` (`key`) comes from, its checksum resolved.
fn file_source(
    key: &str,
    f: &FileEntry,
    net: &Net,
    planner: &Planner<'_>,
    unreachable: &mut Unreachable,
) -> Result<ItemSource, PlanError> {
    let checksum_key = format!("{key}.checksum");
    let checksum = |unreachable: &mut Unreachable| match resolve_checksum(
        f.checksum.as_ref(),
        net,
        &checksum_key,
    ) {
        Err(PlanError::Http(e)) => Ok(unreachable.note(&checksum_key, Err(e))?.unwrap_or_default()),
        other => other,
    };
    let item_key = format!("{key}.to");
    let checksum =
        |unreachable: &mut Unreachable| planner.check_for(&item_key, || checksum(unreachable));
    Ok(match &f.payload {
        Payload::Content(bytes) => ItemSource::Bytes(bytes.clone()),
        Payload::Source(Source::Local(p)) => ItemSource::Local {
            path: p.clone(),
            checksum: checksum(unreachable)?,
        },
        Payload::Source(Source::Http(u)) => ItemSource::Http {
            url: u.clone(),
            checksum: checksum(unreachable)?,
        },
    })
}

/// A plain file: its size probed (or known from the cache), checked
/// against the declared one.
fn file_item(
    key: &str,
    f: &FileEntry,
    source: ItemSource,
    net: &Net,
    cache: &mut Planner<'_>,
    unreachable: &mut Unreachable,
) -> Result<Item, PlanError> {
    let mut cached = None;
    let size = match &source {
        ItemSource::Bytes(b) => b.len() as u64,
        ItemSource::Oci(_) => 0, // files[] entries are never images
        ItemSource::Local { path, .. } => local_file_size(key, path)?,
        ItemSource::Http { url, .. } => {
            let (size, use_) = http_size(key, f.size, url, net, cache, unreachable)?;
            cached = use_;
            size
        }
    };
    if let Some(declared) = f.size.filter(|&d| d != size) {
        return Err(PlanError::SizeMismatch {
            key: key.to_string(),
            declared,
            what: data_path(&f.to),
            actual: size,
        });
    }
    Ok(Item {
        key: format!("{key}.to"),
        dest: f.to.clone(),
        size,
        source,
        archive: None,
        cache: cached.map(Box::new),
        spool: None,
    })
}

/// The size of a download and the cache's part in it: a hit's size needs
/// no network; otherwise the server's size (checked against `declared`).
fn http_size(
    key: &str,
    declared: Option<u64>,
    url: &str,
    net: &Net,
    cache: &mut Planner<'_>,
    unreachable: &mut Unreachable,
) -> Result<(u64, Option<CacheUse>), PlanError> {
    let (fill_key, remote, replaces) = match cache.lookup(url, net) {
        // A declared size the entry does not have: the config changed;
        // the download decides.
        Lookup::Hit(hit) if declared.is_none_or(|d| d == hit.size()) => {
            return Ok((hit.size(), Some(Planner::hit(hit))))
        }
        Lookup::Hit(hit) => (
            Some(hit.key().clone()),
            None,
            Some(hit.entry().sha256.clone()),
        ),
        Lookup::Miss(m) => (Some(m.key), m.remote, m.replaces),
        Lookup::No => (None, None, None),
    };
    // A cacheable miss asks for the validators to store (and the size);
    // a probe (HEAD, then GET headers) when they give no size.
    let remote = match (&fill_key, remote) {
        (Some(_), None) => net.block_on(net.http.validators(url, &[])).ok(),
        (_, r) => r,
    };
    let size = match remote.as_ref().and_then(|r| r.size) {
        Some(s) => Some(s),
        None => {
            let probe = net.block_on(net.http.probe(url));
            match unreachable.note(&format!("{key}.url"), probe)? {
                None => return Ok((0, None)),
                Some(p) => p.size,
            }
        }
    };
    let size = match (declared, size) {
        (Some(d), Some(s)) if d != s => {
            return Err(PlanError::SizeMismatch {
                key: key.to_string(),
                declared: d,
                what: redact(url),
                actual: s,
            })
        }
        (Some(d), _) => d,
        (None, Some(s)) => s,
        (None, None) => {
            return Err(PlanError::NoSize {
                key: key.to_string(),
                url: redact(url),
            })
        }
    };
    let validators = remote.as_ref().map(validators).unwrap_or_default();
    let use_ = fill_key.and_then(|k| cache.fill(k, validators, replaces, size));
    Ok((size, use_))
}

/// An archive (`via: tar`, ...): `to` is the directory to expand into;
/// `size` is the expanded size and limit. Local archives are measured by
/// a dry run, remote ones estimated (src/expand).
fn archive_item(
    key: &str,
    f: &FileEntry,
    format: Format,
    source: ItemSource,
    net: &Net,
    cache: &mut Planner<'_>,
    unreachable: &mut Unreachable,
) -> Result<Item, PlanError> {
    let mut cached = None;
    let mut spool = None;
    let (archive_size, name) = match &source {
        ItemSource::Bytes(b) => (Some(b.len() as u64), format!("{key}.content")),
        ItemSource::Local { path, .. } => (
            Some(local_file_size(key, path)?),
            path.display().to_string(),
        ),
        ItemSource::Http { url, .. } => match cache.lookup(url, net) {
            // The archive's size is the entry's: no network.
            Lookup::Hit(hit) => {
                let size = hit.size();
                cached = Some(Planner::hit(hit));
                (Some(size), redact(url))
            }
            found => {
                let probe = net.block_on(net.http.probe(url));
                let size = unreachable
                    .note(&format!("{key}.url"), probe)?
                    .map_or(Some(0), |p| p.size);
                if let (Lookup::Miss(m), Some(s)) = (found, size) {
                    // Validators to store (a plain miss has not asked yet).
                    let remote = match m.remote {
                        Some(r) => Some(r),
                        None => net.block_on(net.http.validators(url, &[])).ok(),
                    };
                    let v = remote.as_ref().map(validators).unwrap_or_default();
                    cached = cache.fill(m.key, v, m.replaces, s);
                }
                (size, redact(url))
            }
        },
        // files[] entries are never images.
        ItemSource::Oci(_) => (Some(0), key.to_string()),
    };
    // Downloads are bounded by the server's Content-Length (docs/spec.md §9,
    // download bomb): an archive served without one can't be fetched
    // safely, so say so now rather than after the base is copied.
    let archive_size = archive_size.ok_or_else(|| PlanError::UnboundedArchive {
        key: key.to_string(),
        url: name.clone(),
    })?;
    let limits = Limits::new(key, f.size, archive_size, format);
    // Remote tar-family archives are pre-scanned (src/expand/sizing.rs).
    let exact = !matches!(source, ItemSource::Http { .. }) || format != Format::Zip;
    let needs = match source.as_archive() {
        Some(ArchiveSource::Http { url, checksum }) if unreachable.is_empty() => {
            let remote = Remote {
                format,
                url,
                checksum,
                size: Some(archive_size).filter(|&s| s > 0),
                name: &name,
                limits: &limits,
            };
            remote_needs(&remote, &mut cached, &mut spool, net, cache)?
        }
        Some(a) if unreachable.is_empty() || !a.is_remote() => {
            expand::measure(format, a, &name, &limits)?
        }
        _ => Needs::default(),
    };
    Ok(Item {
        key: format!("{key}.to"),
        dest: f.to.clone(),
        size: needs.bytes,
        source,
        archive: Some(ArchivePlan {
            format,
            limits,
            archive_size: Some(archive_size).filter(|&s| s > 0),
            needs,
            exact,
        }),
        cache: cached.map(Box::new),
        spool,
    })
}

/// Size of the local file `files[i].url` (`key`) names; exit 4 when it is
/// missing or not a regular file.
fn local_file_size(key: &str, path: &Path) -> Result<u64, PlanError> {
    let md = std::fs::metadata(path).map_err(|source| PlanError::LocalSource {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    if !md.is_file() {
        return Err(PlanError::NotAFile {
            key: key.to_string(),
            path: path.to_path_buf(),
        });
    }
    Ok(md.len())
}

/// A remote archive being planned.
struct Remote<'a> {
    format: Format,
    url: &'a str,
    checksum: crate::expand::source::Expected<'a>,
    size: Option<u64>,
    name: &'a str,
    limits: &'a Limits,
}

/// What a remote archive needs: measured from its cached blob (no network,
/// the same exact needs as a cold pre-scan), pre-scanned while filling the
/// cache (one download in all), pre-scanned into a spool of the build
/// directory (`spooled`: one download in all, without the cache), or
/// estimated (`--check`, zips).
fn remote_needs(
    r: &Remote<'_>,
    cached: &mut Option<CacheUse>,
    spooled: &mut Option<std::fs::File>,
    net: &Net,
    cache: &mut Planner<'_>,
) -> Result<Needs, PlanError> {
    let prescan = |tap: &mut dyn crate::io::ChunkSink| {
        expand::measure_remote(r.format, r.url, r.checksum, r.size, r.limits, net, tap)
    };
    let prescanned = cache.prescan && r.format != Format::Zip;
    Ok(match cached.take() {
        // Measured from the cached blob: no network, and the same
        // needs as the cold build's pre-scan.
        Some(CacheUse::Hit(hit)) if r.format != Format::Zip => {
            // (A blob in an object store is spooled to a local file: if
            // that fails, estimate; the build then downloads it.)
            let measured = hit.file().ok().map(|file| {
                let blob = ArchiveSource::Open {
                    file,
                    name: r.name,
                    checksum: r.checksum,
                };
                expand::measure(r.format, blob, r.name, r.limits)
            });
            *cached = Some(CacheUse::Hit(hit));
            match measured {
                Some(m) => m?,
                None => expand::estimate(r.limits),
            }
        }
        // A miss the policy caches: the pre-scan fills the cache, and
        // the build expands from it (one download in all).
        Some(fill @ CacheUse::Fill { .. }) if prescanned => {
            let mut spool = cache.spool(r.size);
            let (measured, use_) = cache.prescan_filling(fill, r.url, &mut spool, prescan);
            *cached = use_;
            *spooled = finish_spool(spool, r, cache);
            measured?
        }
        other if prescanned => {
            *cached = other;
            let mut spool = cache.spool(r.size);
            let needs = prescan(&mut spool)?;
            *spooled = finish_spool(spool, r, cache);
            needs
        }
        // --check downloads nothing: an upper bound.
        other => {
            *cached = other;
            expand::estimate(r.limits)
        }
    })
}

/// The spooled archive when the pre-scan filled it whole; why not, as a
/// warning, when a write to it was refused (no room, an I/O error).
fn finish_spool(spool: Spool, r: &Remote<'_>, cache: &mut Planner<'_>) -> Option<std::fs::File> {
    if let Some(why) = spool.dropped() {
        cache.warnings.push(format!(
            "{}: not kept for the build ({why}); it is downloaded again",
            r.name
        ));
    }
    spool.finish(r.size.unwrap_or(0))
}
