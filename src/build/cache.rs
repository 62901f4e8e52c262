//! The download cache in a build: hits copied into their reservations
//! (hashed on the way; a corrupt blob or one that no longer matches the
//! config's checksum falls back to the network), misses downloaded once
//! into the image and into the cache, and the one warning a cache that
//! can't be used is worth. The cache may make a build faster, never make
//! it fail.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::cache::{
    unix_now, Cache, CacheError, Claim, CopyError, Entry, FillMeta, Filler, Hit, Key, Validators,
};
use crate::fs::ext4::FileWriter;
use crate::io::{ChunkSink, StreamVerifier};
use crate::plan::{CacheUse, Expected};
use crate::progress::Reporter;

use super::error::BuildError;

/// The cache of one build.
pub struct BuildCache<'a> {
    cache: &'a Cache,
    reporter: &'a dyn Reporter,
    warned: AtomicBool,
}

/// How one item gets its bytes.
pub enum Source {
    /// From this entry.
    Hit(Hit),
    /// From the network, filling the cache when there is a filler.
    Fetch(Option<(Filler, Validators)>),
}

impl<'a> BuildCache<'a> {
    /// Use `cache`, warning through `reporter`.
    pub fn new(cache: &'a Cache, reporter: &'a dyn Reporter) -> Self {
        Self {
            cache,
            reporter,
            warned: AtomicBool::new(false),
        }
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

    /// Decide an item's source from its plan: take its hit, or claim its
    /// key (waiting while another build downloads it, then a hit).
    pub fn source(&self, use_: Option<&CacheUse>) -> Source {
        match use_ {
            None => Source::Fetch(None),
            Some(CacheUse::Hit(h)) => h.take().map_or(Source::Fetch(None), Source::Hit),
            Some(CacheUse::Fill { key, validators }) => match self.cache.claim(key, unix_now()) {
                Ok(Claim::Ready(hit)) => Source::Hit(hit),
                Ok(Claim::Fill(f)) => Source::Fetch(Some((f, validators.clone()))),
                Err(e) => {
                    self.warn(&e);
                    Source::Fetch(None)
                }
            },
        }
    }

    /// Copy `hit` into `w`, verified against the config's `checksum` too
    /// (the entry may predate a change of it). `Ok(None)`: the blob was
    /// corrupt or no longer matches (its entry is dropped): download
    /// instead. `Ok(Some((entry, digest)))`: done, with the config's digest
    /// if it declares one.
    pub fn copy_hit(
        &self,
        hit: Hit,
        w: &FileWriter,
        checksum: &Expected,
        name: &str,
    ) -> Result<Option<(Entry, Option<String>)>, BuildError> {
        let key: Key = hit.key().clone();
        let mut verifier = checksum
            .as_ref()
            .map(|(a, v)| StreamVerifier::new(*a, v, name));
        let copied = hit.copy_into(|off, b| {
            if let Some(v) = verifier.as_mut() {
                v.update(b);
            }
            self.reporter.item_progress(name, b.len() as u64);
            w.write_at(off, b).map_err(std::io::Error::other)
        });
        let entry = match copied {
            Ok(entry) => entry,
            Err(CopyError::Corrupt(e)) => {
                self.warn(&e);
                return Ok(None);
            }
            Err(CopyError::Sink { source, .. }) => return Err(BuildError::Io(source)),
        };
        let digest = match verifier.map(StreamVerifier::finish).transpose() {
            Ok(d) => d,
            Err(_) => {
                // Cached under another checksum: the config changed.
                if let Err(e) = self.cache.remove(&key) {
                    self.warn(&e);
                }
                return Ok(None);
            }
        };
        if let Err(e) = self.cache.touch(&key, unix_now()) {
            self.warn(&e);
        }
        Ok(Some((entry, digest)))
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

    /// After the build: apply the policy.
    pub fn evict(&self) {
        if let Err(e) = self.cache.evict(unix_now()) {
            self.warn(&e);
        }
    }
}

/// The cache side of a download: writes into a [`Filler`]; its first
/// error is kept and ends the filling, never the download.
pub struct FillSink<'f> {
    filler: Option<&'f Filler>,
    /// The first cache error.
    pub failed: Option<CacheError>,
}

impl<'f> FillSink<'f> {
    /// Fill `filler` (None: a no-op side).
    pub fn new(filler: Option<&'f Filler>) -> Self {
        Self {
            filler,
            failed: None,
        }
    }

    /// Write `data` at `offset`, unless an earlier write failed.
    pub fn put(&mut self, offset: u64, data: &[u8]) {
        if let Some(f) = self.filler {
            if let Err(e) = f.write_at(offset, data) {
                self.failed = Some(e);
                self.filler = None;
            }
        }
    }
}

impl ChunkSink for FillSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.put(offset, data);
        Ok(())
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
