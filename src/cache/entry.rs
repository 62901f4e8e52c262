//! An entry's metadata (`v1/entries/<h[0:2]>/<h>.json`) and the validators
//! that tell whether it is outdated (docs/spec.md §8).

use serde::{Deserialize, Serialize};

use super::key::{EntryKind, Key};

/// What the remote said about the payload when it was fetched or last
/// checked. Compared in docs/spec.md §8's order: the MirrorBrain `Digest` header
/// (taken from the redirect, as each mirror has its own ETag), else `ETag`,
/// else `Content-Length` and `Last-Modified` together; for images the
/// platform manifest digest goes in `digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validators {
    /// `Digest` header value (e.g. `SHA-256=…`) or the image's platform
    /// manifest digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `ETag` header, verbatim (quotes and `W/` kept, as `If-None-Match` needs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified` header, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// `Content-Length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
}

/// The outcome of comparing stored and remote validators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// The remote has the same payload.
    Fresh,
    /// The remote changed: refetch.
    Outdated,
    /// Nothing comparable on both sides: keep the entry (a failed or
    /// inconclusive check never evicts).
    Unknown,
}

impl Validators {
    /// Compare what we stored with what the remote says now, using the first
    /// validator both sides have: digest, then ETag, then
    /// `Content-Length|Last-Modified`.
    pub fn compare(&self, remote: &Validators) -> Freshness {
        let same = |eq: bool| {
            if eq {
                Freshness::Fresh
            } else {
                Freshness::Outdated
            }
        };
        if let (Some(a), Some(b)) = (&self.digest, &remote.digest) {
            return same(a.eq_ignore_ascii_case(b));
        }
        if let (Some(a), Some(b)) = (&self.etag, &remote.etag) {
            return same(a == b);
        }
        match (
            self.content_length,
            &self.last_modified,
            remote.content_length,
            &remote.last_modified,
        ) {
            (Some(a), Some(la), Some(b), Some(lb)) => same(a == b && la == lb),
            (Some(a), None, Some(b), None) => same(a == b),
            (None, Some(la), None, Some(lb)) => same(la == lb),
            _ => Freshness::Unknown,
        }
    }

    /// What a resumed GET sends as `If-Range` (RFC 9110 §13.1.5): a
    /// strong ETag, else `Last-Modified`. `None`: nothing the server could
    /// check, so a partial can't be continued safely.
    pub fn if_range(&self) -> Option<String> {
        self.etag
            .clone()
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| self.last_modified.clone())
    }

    /// Headers for a conditional GET/HEAD: `If-None-Match` from the ETag,
    /// else `If-Modified-Since` from `Last-Modified`. A `304 Not Modified`
    /// answer means [`Freshness::Fresh`].
    pub fn conditional_headers(&self) -> Vec<(&'static str, String)> {
        if let Some(etag) = &self.etag {
            vec![("If-None-Match", etag.clone())]
        } else if let Some(lm) = &self.last_modified {
            vec![("If-Modified-Since", lm.clone())]
        } else {
            Vec::new()
        }
    }
}

/// Metadata the filler gives at commit, beside what the cache measures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FillMeta {
    /// The remote's validators at download time.
    pub validators: Validators,
    /// Where it came from (URL, or image reference), for `--show-cache`.
    pub source: String,
}

/// A cache entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Key text (see [`Key`]).
    pub key: String,
    /// File or image.
    pub kind: EntryKind,
    /// The platform of an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Payload bytes.
    pub size: u64,
    /// Hex sha256 of the payload = blob name.
    pub sha256: String,
    /// Remote validators.
    pub validators: Validators,
    /// Source URL or image reference.
    pub source: String,
    /// Unix seconds: published.
    pub added: u64,
    /// Unix seconds: last outdatedness check (or publication).
    pub checked: u64,
    /// Unix seconds: last used by a build (or publication).
    pub last_used: u64,
    /// Builds that used it.
    pub use_count: u64,
    /// Set on a partial download (`v1/partial/`, never in `v1/entries/`):
    /// the payload's full size; `size` is then the bytes it holds so far
    /// and `sha256` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<u64>,
}

impl Entry {
    /// The entry of `key` published at `now` (both backends' publish): a
    /// payload of `size` bytes with digest `sha256`, checked and used at
    /// `now`, never used by a build yet.
    pub(crate) fn published(
        key: &Key,
        size: u64,
        sha256: String,
        meta: FillMeta,
        now: u64,
    ) -> Entry {
        Entry {
            key: key.as_str().to_string(),
            kind: key.kind(),
            platform: key.platform().map(str::to_string),
            size,
            sha256,
            validators: meta.validators,
            source: meta.source,
            added: now,
            checked: now,
            last_used: now,
            use_count: 0,
            partial: None,
        }
    }

    /// The partial download of `key` (a payload of `total` bytes) started
    /// at `now`, holding nothing yet.
    pub(crate) fn partial(key: &Key, total: u64, meta: FillMeta, now: u64) -> Entry {
        Entry {
            size: 0,
            partial: Some(total),
            ..Entry::published(key, 0, String::new(), meta, now)
        }
    }

    /// For a partial download: how much of it arrived, in percent (0-100,
    /// rounded down).
    pub fn percent(&self) -> Option<u64> {
        self.partial.map(|total| {
            let pct = u128::from(self.size) * 100 / u128::from(total.max(1));
            u64::try_from(pct.min(100)).unwrap_or(100)
        })
    }

    /// Its key.
    pub fn key(&self) -> Key {
        Key::from_parts(self.kind, &self.key, self.platform.as_deref())
    }

    /// Whether this entry is `key`'s, not another key's whose hash is the
    /// same (a sha256 collision) or a hand-edited file's.
    pub(crate) fn is_for(&self, key: &Key) -> bool {
        self.key == key.as_str() && self.platform.as_deref() == key.platform()
    }

    /// A use by a build at `now`.
    pub(crate) fn record_use(&mut self, now: u64) {
        self.last_used = now;
        self.use_count = self.use_count.saturating_add(1);
    }

    /// An outdatedness check at `now` that found it fresh: `checked`, and
    /// the remote's validators merged in where given.
    pub(crate) fn record_check(&mut self, now: u64, remote: Option<&Validators>) {
        self.checked = now;
        if let Some(r) = remote {
            let v = &mut self.validators;
            v.digest = r.digest.clone().or(v.digest.take());
            v.etag = r.etag.clone().or(v.etag.take());
            v.last_modified = r.last_modified.clone().or(v.last_modified.take());
            v.content_length = r.content_length.or(v.content_length);
        }
    }
}

/// Seconds since the Unix epoch, now: the clock of entries' times.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_entry_is_its_keys_and_merges_checks() {
        let key = Key::from_parts(EntryKind::Image, "images/r/a:1", Some("linux/arm64"));
        let meta = FillMeta {
            validators: v(None, Some("\"e1\""), Some(4), None),
            source: "r/a:1".into(),
        };
        let mut e = Entry::published(&key, 4, "ab".into(), meta, 100);
        assert_eq!(e.key(), key);
        assert!(e.is_for(&key));
        assert!(!e.is_for(&Key::from_parts(
            EntryKind::Image,
            "images/r/a:1",
            Some("linux/amd64")
        )));
        assert_eq!(
            (e.added, e.checked, e.last_used, e.use_count),
            (100, 100, 100, 0)
        );
        e.record_use(150);
        e.record_use(160);
        assert_eq!((e.last_used, e.use_count), (160, 2));
        e.record_check(170, Some(&v(Some("sha256:x"), None, None, Some("lm"))));
        assert_eq!(e.checked, 170);
        assert_eq!(
            e.validators,
            v(Some("sha256:x"), Some("\"e1\""), Some(4), Some("lm"))
        );
    }

    fn v(
        digest: Option<&str>,
        etag: Option<&str>,
        len: Option<u64>,
        lm: Option<&str>,
    ) -> Validators {
        Validators {
            digest: digest.map(str::to_string),
            etag: etag.map(str::to_string),
            content_length: len,
            last_modified: lm.map(str::to_string),
        }
    }

    #[test]
    fn digest_wins_over_a_changing_etag() {
        // MirrorBrain: each mirror has its own ETag, the Digest is the content's.
        let stored = v(Some("SHA-256=abc"), Some("\"m1\""), Some(5), None);
        let remote = v(Some("sha-256=ABC"), Some("\"m2\""), Some(5), None);
        assert_eq!(stored.compare(&remote), Freshness::Fresh);
        let changed = v(Some("SHA-256=def"), Some("\"m1\""), Some(5), None);
        assert_eq!(stored.compare(&changed), Freshness::Outdated);
    }

    #[test]
    fn etag_then_length_and_date() {
        assert_eq!(
            v(None, Some("\"a\""), None, None).compare(&v(None, Some("\"b\""), None, None)),
            Freshness::Outdated
        );
        let lm = Some("Mon, 01 Jan 2024 00:00:00 GMT");
        assert_eq!(
            v(None, None, Some(3), lm).compare(&v(None, None, Some(3), lm)),
            Freshness::Fresh
        );
        assert_eq!(
            v(None, None, Some(3), lm).compare(&v(None, None, Some(4), lm)),
            Freshness::Outdated
        );
        assert_eq!(
            v(None, Some("\"a\""), None, None).compare(&v(None, None, Some(4), None)),
            Freshness::Unknown
        );
        assert_eq!(
            v(None, Some("\"a\""), None, lm).conditional_headers(),
            vec![("If-None-Match", "\"a\"".to_string())]
        );
    }
}
