//! [`Backend`]: what `Cache` asks of where the cache lives, a directory
//! (`local.rs`) or an object store (`remote/`). Both implement these
//! methods in this order, so they read side by side; what they share
//! (keys, [`Policy`], freshness, eviction planning, reports, the verified
//! copy of a [`Hit`]) is above them, in `Cache` and its sibling files.

use std::path::Path;
use std::sync::Arc;

use super::entry::Entry;
use super::error::CacheError;
use super::evict::EvictReport;
use super::fill::Filler;
use super::hit::Blob;
use super::key::Key;
use super::policy::Policy;

/// Whether a cache may be changed: a build's, or `--check`'s and
/// `--show-cache`'s look (nothing created, locked, repaired or removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A build's.
    ReadWrite,
    /// A look only.
    ReadOnly,
}

/// An entry found by [`Backend::lookup`] and its blob, ready to read.
pub(crate) type Found = (Entry, Box<dyn Blob>);

/// One place a cache lives. Methods that change the cache return
/// [`CacheError::ReadOnly`] on a handle opened with [`Access::ReadOnly`].
pub(crate) trait Backend: std::fmt::Debug + Send + Sync {
    /// The directory or URL, as given.
    fn shown(&self) -> &Path;

    /// The policy in force (its `policy.yaml`).
    fn policy(&self) -> &Policy;

    /// Whether it was opened with [`Access::ReadOnly`].
    fn is_read_only(&self) -> bool;

    /// `key`'s entry and its blob, checked present and of the entry's size.
    /// `None` when absent or broken (a broken entry is dropped, unless
    /// read-only). The policy was asked before.
    fn lookup(self: Arc<Self>, key: &Key) -> Result<Option<Found>, CacheError>;

    /// A fill of `key`, waiting (up to the key lock timeout) while another
    /// build fills it.
    fn begin_fill(self: Arc<Self>, key: &Key) -> Result<Filler, CacheError>;

    /// [`Backend::begin_fill`] without waiting: `None` while another build
    /// fills `key`.
    fn try_begin_fill(self: Arc<Self>, key: &Key) -> Result<Option<Filler>, CacheError>;

    /// Read-modify-write `key`'s entry with `f`. `false` if it is gone.
    fn update(&self, key: &Key, f: &dyn Fn(&mut Entry)) -> Result<bool, CacheError>;

    /// Remove `key`'s entry and its blob. `false` if there was none.
    fn remove(&self, key: &Key) -> Result<bool, CacheError>;

    /// Every readable entry, in no particular order (unreadable ones are
    /// dropped, unless read-only).
    fn entries(&self) -> Result<Vec<Entry>, CacheError>;

    /// Every partial download (`Entry::partial` set, `size` the bytes it
    /// holds), in no particular order. An object store keeps none.
    fn partials(&self) -> Result<Vec<Entry>, CacheError>;

    /// Apply the policy at `now`; entries another build holds are skipped.
    fn evict(&self, now: u64) -> Result<EvictReport, CacheError>;

    /// Remove what no entry references. `None` when skipped (another build
    /// has the cache open), else how many objects or files went.
    fn collect_garbage(&self) -> Result<Option<usize>, CacheError>;

    /// Make everything this build published durable.
    fn sync(&self) -> Result<(), CacheError>;
}
