//! The download cache in a build: hits copied into their reservations
//! (hashed on the way; a corrupt blob, or one that no longer matches the
//! config's checksum, falls back to the network and fills the cache
//! again), misses downloaded once into the image and into the cache, and
//! the one warning a cache that can't be used is worth. The cache may make
//! a build faster, never make it fail.
//!
//! A key's lock is only ever waited for by a download task that holds no
//! other (see `data::download_all`), so two builds wanting the same keys in
//! different orders never wait on each other.

use std::sync::atomic::{AtomicBool, Ordering};

pub use crate::cache::FillSink;
use crate::cache::{
    unix_now, Cache, CacheError, Claim, CopyError, Entry, FillMeta, Filler, Hit, Key, Validators,
};
use crate::fs::ext4::FileWriter;
use crate::io::StreamVerifier;
use crate::plan::{CacheUse, Expected};
use crate::progress::Reporter;

/// The cache of one build.
pub struct BuildCache<'a> {
    cache: &'a Cache,
    reporter: &'a dyn Reporter,
    warned: AtomicBool,
    /// Whether the cache's files and the image share blocks (asked once).
    clones: std::sync::OnceLock<bool>,
}

/// What the plan says the cache does for one item, at build time.
pub enum Planned {
    /// Not cached.
    Plain,
    /// Copy this entry.
    Hit(Hit),
    /// Claim the key (waiting while another build downloads it), then
    /// copy what that build published, or download and fill.
    Claim(ClaimSpec),
}

/// A key to claim.
#[derive(Debug, Clone)]
pub struct ClaimSpec {
    /// The key.
    pub key: Key,
    /// Validators to store with a new entry.
    pub validators: Validators,
    /// The sha256 of an outdated entry being replaced.
    pub replaces: Option<String>,
}

/// The outcome of a claim.
pub enum Claimed {
    /// Another build published it meanwhile.
    Hit(Hit),
    /// Ours to fill.
    Fill(Filler, Validators),
    /// The cache failed: download without it.
    Failed(CacheError),
}

/// The outcome of copying a blob into a reservation.
pub enum Copied {
    /// Done: the entry, the config's digest if it declares one, and the
    /// bytes that share their blocks with the blob (cloned).
    Done(Entry, Option<String>, u64),
    /// The blob is corrupt (its entry is dropped), or does not match the
    /// config's checksum: download instead, filling the cache again with
    /// these validators.
    Unusable(ClaimSpec, Option<CacheError>),
}

impl<'a> BuildCache<'a> {
    /// Use `cache`, warning through `reporter`.
    pub fn new(cache: &'a Cache, reporter: &'a dyn Reporter) -> Self {
        Self {
            cache,
            reporter,
            warned: AtomicBool::new(false),
            clones: std::sync::OnceLock::new(),
        }
    }

    /// Whether a download's blocks can be cloned between the cache and
    /// `image` (a directory cache on the image's filesystem, XFS with
    /// reflinks or btrfs: `os::can_clone`), asked once per build. Then a
    /// download is written once, into the cache, and the image's blocks
    /// cloned from it.
    pub fn clones_into(&self, image: &std::fs::File) -> bool {
        *self.clones.get_or_init(|| {
            self.cache
                .local_dir()
                .is_some_and(|d| crate::os::can_clone(&d.join("v1/tmp"), image))
        })
    }

    /// The cache.
    pub fn cache(&self) -> &'a Cache {
        self.cache
    }

    /// Warn once per build: after the first error the cache is still
    /// tried (an entry may fail alone), but said only once.
    pub fn warn(&self, e: &CacheError) {
        if !self.warned.swap(true, Ordering::Relaxed) {
            self.reporter.warn(&format!(
                "download cache: {e}; going on without it where it fails"
            ));
        }
    }

    /// What the plan said for an item, consumed by the step that writes it.
    pub fn planned(&self, use_: Option<CacheUse>) -> Planned {
        match use_ {
            None => Planned::Plain,
            Some(CacheUse::Hit(hit)) => Planned::Hit(hit),
            Some(CacheUse::Fill {
                key,
                validators,
                replaces,
            }) => Planned::Claim(ClaimSpec {
                key,
                validators,
                replaces,
            }),
        }
    }

    /// Record a copy's outcome (use count, dropped entries, the warning);
    /// `Some` when the item is done.
    pub fn settle(&self, copied: Copied) -> Result<(Entry, Option<String>, u64), Box<ClaimSpec>> {
        match copied {
            Copied::Done(entry, digest, shared) => {
                if let Err(e) = self.cache.touch(&entry.key(), unix_now()) {
                    self.warn(&e);
                }
                Ok((entry, digest, shared))
            }
            Copied::Unusable(spec, e) => {
                match e {
                    Some(e) => self.warn(&e),
                    // Cached under another checksum: the config changed.
                    None => {
                        if let Err(e) = self.cache.remove(&spec.key) {
                            self.warn(&e);
                        }
                    }
                }
                Err(Box::new(spec))
            }
        }
    }

    /// Publish a verified download.
    pub fn commit(&self, filler: Filler, size: u64, validators: Validators, source: &str) {
        let meta = FillMeta {
            validators,
            source: source.to_string(),
        };
        if let Err(e) = filler.commit(size, meta) {
            self.warn(&e);
        }
    }

    /// [`BuildCache::commit`] for a download task: on a blocking thread,
    /// so the thread driving every download of the build goes on with the
    /// others meanwhile (a commit to an object store waits for its upload
    /// to complete, and the store assembles the parts then).
    pub async fn commit_async(
        &self,
        filler: Filler,
        size: u64,
        validators: Validators,
        source: &str,
    ) -> Option<crate::cache::Entry> {
        let key = filler.key().to_string();
        let meta = FillMeta {
            validators,
            source: source.to_string(),
        };
        match tokio::task::spawn_blocking(move || filler.commit(size, meta)).await {
            Ok(Ok(entry)) => return Some(entry),
            Ok(Err(e)) => self.warn(&e),
            Err(_) => self.warn(&CacheError::IncompleteFill {
                key,
                reason: "its commit panicked".into(),
            }),
        }
        None
    }

    /// After the build: apply the policy, then make what this build
    /// published durable.
    pub fn evict(&self) {
        if let Err(e) = self.cache.evict(unix_now()) {
            self.warn(&e);
        }
        if let Err(e) = self.cache.sync() {
            self.warn(&e);
        }
    }
}

/// Claim `spec`'s key, waiting (up to the cache's key timeout) while
/// another build downloads it. Blocking: call it holding no other key.
pub fn claim(cache: &Cache, spec: ClaimSpec) -> Claimed {
    let now = unix_now();
    let claimed = match &spec.replaces {
        Some(old) => cache.claim_replacing(&spec.key, old, now),
        None => cache.claim(&spec.key, now),
    };
    match claimed {
        Ok(Claim::Ready(hit)) => Claimed::Hit(hit),
        Ok(Claim::Fill(f)) => Claimed::Fill(f, spec.validators),
        Err(e) => Claimed::Failed(e),
    }
}

/// Claim without waiting: `Failed` never, `Hit`/`Fill` as [`claim`], and
/// `None` when another build holds the key (download without the cache).
pub fn try_claim(cache: &Cache, spec: ClaimSpec) -> Option<Claimed> {
    let filler = match cache.try_begin_fill(&spec.key) {
        Ok(Some(f)) => f,
        Ok(None) => return None,
        Err(e) => return Some(Claimed::Failed(e)),
    };
    match cache.lookup(&spec.key, unix_now()) {
        Ok(Some(hit)) if spec.replaces.as_ref() != Some(&hit.entry().sha256) => {
            Some(Claimed::Hit(hit))
        }
        Ok(_) => Some(Claimed::Fill(filler, spec.validators)),
        Err(e) => Some(Claimed::Failed(e)),
    }
}

/// Copy `hit` into `w`, hashed (its sha256, and the config's `checksum`,
/// as the entry may predate a change of it), calling `on_chunk` with each
/// chunk's length. Bytes of an unusable blob are overwritten by the
/// download that follows. Any thread; no reporting.
pub fn copy_blob(
    hit: Hit,
    w: &FileWriter,
    checksum: &Expected,
    name: &str,
    mut on_chunk: impl FnMut(usize),
) -> std::io::Result<Copied> {
    let spec = ClaimSpec {
        key: hit.key().clone(),
        validators: hit.validators().clone(),
        replaces: None,
    };
    // The blob's sha256 is checked anyway (it is the entry's): a recorded
    // build learns it from there, not by hashing twice.
    let mut verifier = Expected::declared(checksum.declared.clone()).verifier(name);
    // A kernel copy into the reservation (its blocks shared with the blob
    // on XFS and btrfs: FICLONERANGE), then the hash read back from the
    // page cache: one disk read, no copy through user space. Every hit is
    // still checked against the blob's sha256.
    let len = hit.size();
    let mut shared = 0;
    let copied = if hit.is_local() {
        hit.copy_then_verify(
            |blob| {
                shared = w.copy_file_from(blob, len).map_err(std::io::Error::other)?;
                Ok(())
            },
            |b| {
                if let Some(v) = verifier.as_mut() {
                    v.update(b);
                }
                on_chunk(b.len());
            },
        )
    } else {
        // An object store's blob: ranged GETs in parallel, written at
        // their offsets as they arrive in order, hashed on the way.
        hit.copy_into(|off, b| {
            w.write_at(off, b).map_err(std::io::Error::other)?;
            if let Some(v) = verifier.as_mut() {
                v.update(b);
            }
            on_chunk(b.len());
            Ok(())
        })
    };
    let entry = match copied {
        Ok(entry) => entry,
        Err(CopyError::Corrupt(e)) => return Ok(Copied::Unusable(spec, Some(e))),
        Err(CopyError::Sink { source, .. }) => return Err(source),
    };
    match verifier.map(StreamVerifier::finish).transpose() {
        Ok(digest) => Ok(Copied::Done(entry, digest, shared)),
        Err(_) => Ok(Copied::Unusable(spec, None)),
    }
}

/// The cache side of an image pull (positional writes from the layer
/// decoder threads); its first error ends the filling, never the pull.
pub struct FillTap {
    filler: Filler,
    failed: std::sync::Mutex<Option<CacheError>>,
}

impl FillTap {
    /// Fill `filler`.
    pub fn new(filler: Filler) -> Self {
        Self {
            filler,
            failed: std::sync::Mutex::new(None),
        }
    }

    /// Publish what was written (`size` bytes), unless a write failed.
    pub fn commit(self, cache: &BuildCache<'_>, size: u64, validators: Validators, source: &str) {
        match self.failed.into_inner().ok().flatten() {
            Some(e) => cache.warn(&e),
            None => cache.commit(self.filler, size, validators, source),
        }
    }
}

impl crate::oci::ArchiveSink for FillTap {
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let Ok(mut failed) = self.failed.lock() else {
            return Ok(());
        };
        if failed.is_none() {
            if let Err(e) = self.filler.write_at(offset, data) {
                *failed = Some(e);
            }
        }
        Ok(())
    }
    fn capacity(&self) -> u64 {
        u64::MAX
    }
}
