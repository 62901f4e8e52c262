//! Entry keys in the old tool's forms (docs/spec.md §8), so users' filter patterns
//! written for it still match:
//! - files: `files/<scheme>/<netloc>/<path>[;params][?query]`, a root path
//!   being `__ROOT__` (Python's `urlparse` split, fragment dropped);
//! - images: `images/<registry>/<repo>/<name>[:tag][@digest]`.
//!
//! An image's docker-archive depends on the platform too, so an image key
//! carries it: two platforms of one image are two entries (their file name
//! hash differs) that show and match as the same text.

use sha2::{Digest, Sha256};

use super::version::Identity;
use crate::io::hex;

/// What an entry holds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// An http(s) download, exactly as downloaded.
    File,
    /// An OCI image exported as a docker-archive.
    Image,
}

/// The key of a cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    kind: EntryKind,
    text: String,
    platform: Option<String>,
    identity: Option<Identity>,
}

impl Key {
    /// The key of an http(s) download; `None` for anything else (`file://`,
    /// local paths, other schemes): those are never cached.
    pub fn file(url: &str) -> Option<Key> {
        let (scheme, rest) = url.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return None;
        }
        let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        let (netloc, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if netloc.is_empty() {
            return None;
        }
        // Python's urlparse: `;params` only in the last path segment.
        let last_slash = path.rfind('/').unwrap_or(0);
        let (path, params) = match path[last_slash..].find(';') {
            Some(i) => (&path[..last_slash + i], &path[last_slash + i + 1..]),
            None => (path, ""),
        };
        let path = path.strip_prefix('/').unwrap_or(path);
        let path = if path.is_empty() { "__ROOT__" } else { path };
        let mut text = format!("files/{scheme}/{netloc}/{path}");
        if !params.is_empty() {
            text.push(';');
            text.push_str(params);
        }
        if !query.is_empty() {
            text.push('?');
            text.push_str(query);
        }
        let file_name = path.rsplit('/').next().unwrap_or(path);
        Some(Key {
            kind: EntryKind::File,
            identity: Identity::from_zim_name(file_name),
            text,
            platform: None,
        })
    }

    /// The key of an OCI image's docker-archive for one platform, from the
    /// parsed reference (registry `ghcr.io`, repository `offspot`, name
    /// `kiwix-serve`, tag `3.8.1`, digest `sha256:…`, platform `linux/arm64/v8`).
    pub fn image(
        registry: &str,
        repository: &str,
        name: &str,
        tag: Option<&str>,
        digest: Option<&str>,
        platform: &str,
    ) -> Key {
        let base = format!("{registry}/{repository}/{name}");
        let mut text = format!("images/{base}");
        if let Some(tag) = tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = digest {
            text.push('@');
            text.push_str(digest);
        }
        Key {
            kind: EntryKind::Image,
            identity: tag.map(|t| Identity::new(format!("{base} {platform}"), t)),
            text,
            platform: Some(platform.to_string()),
        }
    }

    /// Rebuild a key from a stored entry.
    pub(crate) fn from_parts(kind: EntryKind, text: &str, platform: Option<&str>) -> Key {
        match kind {
            EntryKind::File => {
                let file_name = text.rsplit('/').next().unwrap_or(text);
                let file_name = file_name.split(['?', ';']).next().unwrap_or(file_name);
                Key {
                    kind,
                    text: text.to_string(),
                    platform: None,
                    identity: Identity::from_zim_name(file_name),
                }
            }
            EntryKind::Image => {
                let rest = text.strip_prefix("images/").unwrap_or(text);
                let rest = rest.split_once('@').map_or(rest, |(r, _)| r);
                let last_slash = rest.rfind('/').unwrap_or(0);
                let identity = rest[last_slash..].find(':').map(|i| {
                    let (base, tag) = rest.split_at(last_slash + i);
                    Identity::new(format!("{base} {}", platform.unwrap_or("")), &tag[1..])
                });
                Key {
                    kind,
                    text: text.to_string(),
                    platform: platform.map(str::to_string),
                    identity,
                }
            }
        }
    }

    /// File or image.
    pub fn kind(&self) -> EntryKind {
        self.kind
    }

    /// The key text, as filter patterns see it and `--show-cache` prints it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The platform of an image key.
    pub fn platform(&self) -> Option<&str> {
        self.platform.as_deref()
    }

    /// Identity and version, for `keep_identified_versions`.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Hex sha256 naming the entry's files: of the text, plus the platform
    /// for images.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.text.as_bytes());
        if let Some(p) = &self.platform {
            h.update(b"\n");
            h.update(p.as_bytes());
        }
        hex(&h.finalize())
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)?;
        if let Some(p) = &self.platform {
            write!(f, " ({p})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(url: &str) -> Option<String> {
        Key::file(url).map(|k| k.as_str().to_string())
    }

    #[test]
    fn file_keys_follow_python_urlparse() {
        // Expected values worked out from Python's urllib.parse.urlparse
        // (scheme, netloc, path, params, query) and the old tool's format.
        assert_eq!(
            text("https://mirror.download.kiwix.org/zim/wikipedia/wikipedia_en_all_maxi_2024-01.zim").as_deref(),
            Some("files/https/mirror.download.kiwix.org/zim/wikipedia/wikipedia_en_all_maxi_2024-01.zim")
        );
        assert_eq!(
            text("http://example.com").as_deref(),
            Some("files/http/example.com/__ROOT__")
        );
        assert_eq!(
            text("http://example.com/").as_deref(),
            Some("files/http/example.com/__ROOT__")
        );
        assert_eq!(
            text("HTTPS://user@h:8080/a/b;p=1?q=2&r#frag").as_deref(),
            Some("files/https/user@h:8080/a/b;p=1?q=2&r")
        );
        // `;` in a non-final segment is part of the path.
        assert_eq!(
            text("http://h/a;x/b").as_deref(),
            Some("files/http/h/a;x/b")
        );
        assert_eq!(
            text("http://h?x=1").as_deref(),
            Some("files/http/h/__ROOT__?x=1")
        );
    }

    #[test]
    fn only_http_is_cached() {
        assert_eq!(text("file:///etc/hosts"), None);
        assert_eq!(text("/etc/hosts"), None);
        assert_eq!(text("ftp://h/x"), None);
        assert_eq!(text("http:///x"), None);
    }

    #[test]
    fn image_keys_and_platforms() {
        let a = Key::image(
            "ghcr.io",
            "offspot",
            "kiwix-serve",
            Some("3.8.1"),
            None,
            "linux/arm64/v8",
        );
        let b = Key::image(
            "ghcr.io",
            "offspot",
            "kiwix-serve",
            Some("3.8.1"),
            None,
            "linux/arm/v7",
        );
        assert_eq!(a.as_str(), "images/ghcr.io/offspot/kiwix-serve:3.8.1");
        assert_eq!(a.as_str(), b.as_str());
        assert_ne!(a.hash(), b.hash());
        let d = Key::image("r", "l", "n", None, Some("sha256:ab"), "linux/arm64/v8");
        assert_eq!(d.as_str(), "images/r/l/n@sha256:ab");
        assert!(d.identity().is_none());
        let back = Key::from_parts(EntryKind::Image, a.as_str(), a.platform());
        assert_eq!(back, a);
        let f = Key::file("http://h/d/wikipedia_fr_all_2023-10.zim?x=1").expect("http");
        assert_eq!(Key::from_parts(EntryKind::File, f.as_str(), None), f);
    }
}
