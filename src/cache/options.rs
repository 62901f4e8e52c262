//! What a cache is opened with ([`CacheOptions`]: lock timeouts, ranged
//! GETs in flight) and the read size of its copies ([`COPY_BUFFER`]).

use std::time::Duration;

/// Read size for copies and read-backs: 1 MiB, as the rest of the pipeline
/// (docs/design.md, "I/O model"); larger buys nothing on a page-cache-backed read.
pub const COPY_BUFFER: usize = 1 << 20;

/// Lock timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheOptions {
    /// Waiting for `.lock` (only an exclusive garbage collection holds it
    /// against builds, for seconds). Default 60 s.
    pub global_lock_timeout: Duration,
    /// Waiting for another build's download of the same key in
    /// `Cache::claim` / `Cache::begin_fill`. Default 1 h (a 100 GB ZIM
    /// at 30 MB/s takes ~1 h); on timeout, download without the cache.
    pub key_lock_timeout: Duration,
    /// Waiting for an entry's metadata lock (held for one small write).
    /// Default 30 s.
    pub meta_lock_timeout: Duration,
    /// Ranged GETs in flight when a hit streams from an object store
    /// (`-T`). Default 4.
    pub parallel: usize,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            global_lock_timeout: Duration::from_secs(60),
            key_lock_timeout: Duration::from_secs(3600),
            meta_lock_timeout: Duration::from_secs(30),
            parallel: 4,
        }
    }
}
