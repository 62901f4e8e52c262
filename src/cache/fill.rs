//! `Filler`: a download being written into the cache, through the
//! backend's [`Fill`]: a temp file under the key's lock (`local.rs`), or a
//! multipart upload (`remote/upload.rs`). Dropping a [`Filler`] abandons the
//! fill; only [`Filler::commit`] publishes an entry, and only for exactly
//! the bytes `[0, size)`.

use super::entry::{Entry, FillMeta};
use super::error::CacheError;
use super::key::Key;

/// The backend's side of a [`Filler`].
pub(crate) trait Fill: std::fmt::Debug + Send + Sync {
    /// Write `data` (not empty) at `offset` of `key`'s payload. Called from
    /// any thread.
    fn write_at(&self, key: &Key, offset: u64, data: &[u8]) -> Result<(), CacheError>;

    /// Publish the payload, `size` bytes, as `key`'s entry.
    fn commit(self: Box<Self>, key: &Key, size: u64, meta: FillMeta) -> Result<Entry, CacheError>;
}

/// An in-flight cache fill. Dropping it abandons the fill (the temp file is
/// removed, the key lock released; an object store's multipart upload is
/// aborted).
#[derive(Debug)]
pub struct Filler {
    key: Key,
    fill: Box<dyn Fill>,
}

impl Filler {
    pub(crate) fn new(key: Key, fill: Box<dyn Fill>) -> Self {
        Filler { key, fill }
    }

    /// The key being filled.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Write `data` at `offset` of the payload. Callable from any thread.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), CacheError> {
        if data.is_empty() {
            return Ok(());
        }
        self.fill.write_at(&self.key, offset, data)
    }

    /// Publish the payload as the entry of the key, `size` bytes long.
    ///
    /// Checks that exactly `[0, size)` was written, computes the sha256 of
    /// what was written, puts the blob in place and then writes the entry
    /// (made durable by `Cache::sync`). The caller verifies the config's
    /// checksum before committing (a wrong payload must be dropped, not
    /// committed).
    pub fn commit(self, size: u64, meta: FillMeta) -> Result<Entry, CacheError> {
        self.fill.commit(&self.key, size, meta)
    }
}

/// The cache side of a download: writes into a [`Filler`]; its first
/// error is kept and ends the filling, never the download.
pub struct FillSink<'f> {
    filler: Option<&'f Filler>,
    /// The first cache error.
    pub failed: Option<CacheError>,
    /// The end of the furthest write: the payload's size once complete.
    pub end: u64,
}

impl<'f> FillSink<'f> {
    /// Fill `filler` (None: a no-op side).
    pub fn new(filler: Option<&'f Filler>) -> Self {
        Self {
            filler,
            failed: None,
            end: 0,
        }
    }
}

impl crate::io::ChunkSink for FillSink<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.end = self
            .end
            .max(offset.saturating_add(u64::try_from(data.len()).unwrap_or(u64::MAX)));
        if let Some(f) = self.filler {
            if let Err(e) = f.write_at(offset, data) {
                self.failed = Some(e);
                self.filler = None;
            }
        }
        Ok(())
    }
}
