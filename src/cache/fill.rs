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

    /// Keep what this fill writes as a partial download if it stops
    /// early, continuing the one a stopped fill of `key` left when it is
    /// the same payload (`meta`'s validators, `size` bytes). Called before
    /// the first write. Returns the offset the payload continues at (0:
    /// from its start). A backend that keeps no partials returns 0.
    fn keep_partial(
        &mut self,
        _key: &Key,
        _meta: &FillMeta,
        _size: u64,
    ) -> Result<u64, CacheError> {
        Ok(0)
    }

    /// Read back `[0, upto)` of a continued partial, in order, restoring
    /// the fill's digest, each chunk handed to `each` with its offset.
    fn read_prefix(
        &self,
        _upto: u64,
        _each: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), CacheError> {
        Ok(())
    }

    /// The payload starts over at 0 (the server sent all of it again).
    fn restart(&self) {}

    /// The local file the payload is written to (a directory cache), for
    /// a reader or a clone of its blocks; `None` in an object store.
    fn file(&self) -> Option<&std::fs::File> {
        None
    }
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

    /// Keep this fill as a partial download if it stops early (a
    /// directory cache; an object store keeps none), continuing the one a
    /// stopped fill left when it is the same payload: `meta`'s validators,
    /// `size` bytes. Call before the first write. Returns the offset the
    /// payload continues at: `[0, offset)` is then read back once with
    /// [`Filler::read_prefix`] and the download asked from there.
    pub fn keep_partial(&mut self, meta: &FillMeta, size: u64) -> Result<u64, CacheError> {
        self.fill.keep_partial(&self.key, meta, size)
    }

    /// Read back `[0, upto)` of a continued partial download, in order:
    /// the fill's sha256 is restored, and each chunk handed to `each`
    /// (the image's copy, the config's checksum) with its offset.
    pub fn read_prefix(
        &self,
        upto: u64,
        each: &mut dyn FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), CacheError> {
        self.fill.read_prefix(upto, each)
    }

    /// The local file the payload is being written to, in a directory
    /// cache (an object store's fill has none): what is written so far can
    /// be read, or its blocks cloned into the image.
    pub fn file(&self) -> Option<&std::fs::File> {
        self.fill.file()
    }

    /// The payload starts over at 0: what was written is dropped.
    pub fn restart(&self) {
        self.fill.restart();
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
    /// The server sent the whole payload again: the fill starts over.
    fn restart(&mut self) -> bool {
        if let Some(f) = self.filler {
            f.restart();
        }
        self.end = 0;
        true
    }

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
