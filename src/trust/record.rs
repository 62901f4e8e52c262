//! The record of a build's inputs ([`Lock`]), and its file format: JSON,
//! pretty-printed, one field a line, keys in a fixed order (the order of
//! the fields below), absent values left out. docs/lock.md documents it.
//!
//! JSON, not YAML: the SBOM and the provenance are JSON, so one parser
//! reads all three; a JSON string has one spelling (YAML's `no`, `0x1`,
//! `1e3` and line folding make "the same lock, the same bytes" a matter
//! of emitter settings); and `serde_json`'s pretty printer with a fixed
//! field order gives line-per-field diffs.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The lock format's version; a lock of another version is refused.
pub const LOCK_VERSION: u32 = 1;

/// Every input of a build, as resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// [`LOCK_VERSION`].
    pub lock_version: u32,
    /// `image-creator VERSION`, the tool that wrote it.
    pub tool: String,
    /// `SOURCE_DATE_EPOCH` when the build had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_date_epoch: Option<i64>,
    /// The config.
    pub config: ConfigInput,
    /// The container images' platform (`linux/arm64/v8`).
    pub platform: String,
    /// The base image.
    pub base: Input,
    /// The config's items, in plan order (images, files, `image.yaml`).
    pub items: Vec<Input>,
}

/// The config, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigInput {
    /// CONFIG_SRC as given (a path or URL).
    pub source: String,
    /// sha256 of its text.
    pub sha256: String,
}

/// What an input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// The base image.
    Base,
    /// A file written as it is.
    File,
    /// An archive expanded into a directory.
    Archive,
    /// A container image pulled from a registry.
    Image,
    /// Bytes in the config (`content`, `image.yaml`).
    Inline,
}

/// One input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The config key (`files[2].to`, `oci_images[0].ident`,
    /// `write_config`, `base.source`).
    pub key: String,
    /// What it is.
    pub kind: InputKind,
    /// Where it goes, as the Pi sees it (`/data/...`); none for the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// The URL asked (credentials removed), for a download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL the bytes came from after redirects, when it differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_url: Option<String>,
    /// A local file's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Bytes of the payload (an archive's as downloaded; an image's
    /// docker-archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// sha256 of the payload (an archive's as downloaded); none for an
    /// image (its digests are in `image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The server's `ETag`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The server's `Last-Modified`, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// A container image's reference and digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageInput>,
}

impl Input {
    /// An input with only its key and kind.
    pub fn new(key: &str, kind: InputKind) -> Self {
        Self {
            key: key.to_string(),
            kind,
            dest: None,
            url: None,
            final_url: None,
            path: None,
            size: None,
            sha256: None,
            etag: None,
            last_modified: None,
            image: None,
        }
    }

    /// How messages name it: its URL, path, image or key.
    pub fn name(&self) -> String {
        if let Some(i) = &self.image {
            return i.reference();
        }
        self.url
            .clone()
            .or_else(|| self.path.as_ref().map(|p| p.display().to_string()))
            .unwrap_or_else(|| self.key.clone())
    }
}

/// A container image as pulled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageInput {
    /// Registry host (`ghcr.io`).
    pub registry: String,
    /// `repository/name` as the registry's API names it.
    pub repository: String,
    /// The tag asked.
    pub tag: String,
    /// The digest of the index (manifest list) the tag named, when it
    /// named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// The digest of the platform's image manifest: what `--locked` pulls.
    pub manifest_digest: String,
    /// The image config's digest, when the registry was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_digest: Option<String>,
    /// The layers, bottom first, when the registry was asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerInput>,
}

impl ImageInput {
    /// `registry/repository@manifest_digest`.
    pub fn reference(&self) -> String {
        format!(
            "{}/{}@{}",
            self.registry, self.repository, self.manifest_digest
        )
    }
}

/// One layer blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerInput {
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// A lock file that can't be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Unreadable.
    #[error("lock file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a lock (bad JSON, unknown field, another version).
    #[error("lock file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the line when the parser knows it.
        message: String,
    },
}

impl LockError {
    /// Always a bad input: exit 3.
    pub fn exit_kind(&self) -> crate::error::ExitKind {
        crate::error::ExitKind::BadInput
    }
}

/// A lock file is at most this large (a config is at most 16 MiB; its
/// lock is a few hundred bytes an item).
pub const MAX_LOCK_FILE: u64 = 64 << 20;

impl Lock {
    /// The file's bytes: pretty JSON, fields in their fixed order, a
    /// final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut s = serde_json::to_vec_pretty(self).unwrap_or_default();
        s.push(b'\n');
        s
    }

    /// Parse a lock file's bytes; `path` names it in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, LockError> {
        let invalid = |message: String| LockError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let lock: Self = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if lock.lock_version != LOCK_VERSION {
            return Err(invalid(format!(
                "lock_version {} (this image-creator reads {LOCK_VERSION})",
                lock.lock_version
            )));
        }
        for (i, item) in lock.items.iter().enumerate() {
            let hex = |what: &str, v: &Option<String>| match v {
                Some(v) if !is_sha256_hex(v) => Err(invalid(format!(
                    "items[{i}] ({}): {what} is not 64 hex digits: {v}",
                    item.key
                ))),
                _ => Ok(()),
            };
            hex("sha256", &item.sha256)?;
            if let Some(img) = &item.image {
                if !img
                    .manifest_digest
                    .strip_prefix("sha256:")
                    .is_some_and(is_sha256_hex)
                {
                    return Err(invalid(format!(
                        "items[{i}] ({}): manifest_digest is not sha256:<64 hex digits>: {}",
                        item.key, img.manifest_digest
                    )));
                }
            }
        }
        if !is_sha256_hex(&lock.config.sha256) {
            return Err(invalid("config.sha256 is not 64 hex digits".into()));
        }
        Ok(lock)
    }

    /// Read and parse `path` (at most [`MAX_LOCK_FILE`] bytes).
    pub fn read(path: &Path) -> Result<Self, LockError> {
        use std::io::Read;
        let read = |source| LockError::Read {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read)?;
        let mut bytes = Vec::new();
        f.take(MAX_LOCK_FILE + 1)
            .read_to_end(&mut bytes)
            .map_err(read)?;
        if bytes.len() as u64 > MAX_LOCK_FILE {
            return Err(LockError::Invalid {
                path: path.to_path_buf(),
                message: format!("larger than {MAX_LOCK_FILE} bytes"),
            });
        }
        Self::parse(&bytes, path)
    }

    /// The locked input of config key `key`.
    pub fn item(&self, key: &str) -> Option<&Input> {
        self.items.iter().find(|i| i.key == key)
    }
}

/// 64 lowercase or uppercase hex digits.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let mut file = Input::new("files[0].to", InputKind::File);
        file.dest = Some("/data/a.bin".into());
        file.url = Some("http://127.0.0.1/a.bin".into());
        file.size = Some(3);
        file.sha256 = Some("a".repeat(64));
        file.etag = Some("\"x\"".into());
        let mut image = Input::new("oci_images[0].ident", InputKind::Image);
        image.image = Some(ImageInput {
            registry: "ghcr.io".into(),
            repository: "offspot/kiwix-serve".into(),
            tag: "3.8.1".into(),
            index_digest: Some(format!("sha256:{}", "b".repeat(64))),
            manifest_digest: format!("sha256:{}", "c".repeat(64)),
            config_digest: None,
            layers: vec![LayerInput {
                digest: format!("sha256:{}", "d".repeat(64)),
                size: 10,
            }],
        });
        let mut base = Input::new("base.source", InputKind::Base);
        base.path = Some("/b.img".into());
        base.sha256 = Some("e".repeat(64));
        Lock {
            lock_version: LOCK_VERSION,
            tool: "image-creator 0.1.0".into(),
            source_date_epoch: Some(1_700_000_000),
            config: ConfigInput {
                source: "c.yaml".into(),
                sha256: "f".repeat(64),
            },
            platform: "linux/arm64/v8".into(),
            base,
            items: vec![image, file],
        }
    }

    #[test]
    fn round_trips_with_fields_in_their_order() {
        let lock = sample();
        let bytes = lock.to_json();
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        let order = [
            "\"lock_version\"",
            "\"tool\"",
            "\"source_date_epoch\"",
            "\"config\"",
            "\"platform\"",
            "\"base\"",
            "\"items\"",
        ];
        let at: Vec<usize> = order.iter().map(|k| text.find(k).expect(k)).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(!text.contains("null"), "absent values are left out: {text}");
        assert_eq!(
            Lock::parse(&bytes, Path::new("l.json")).expect("parses"),
            lock
        );
    }

    #[test]
    fn refuses_what_is_not_a_lock() {
        let p = Path::new("bad.lock");
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).expect("json");
        v["lock_version"] = 2.into();
        let e = Lock::parse(v.to_string().as_bytes(), p).expect_err("version");
        assert!(
            e.to_string().contains("bad.lock") && e.to_string().contains("lock_version 2"),
            "{e}"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).expect("json");
        v["items"][1]["sha256"] = "zz".into();
        let e = Lock::parse(v.to_string().as_bytes(), p).expect_err("hex");
        assert!(e.to_string().contains("files[0].to"), "{e}");
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_json()).expect("json");
        v["surprise"] = 1.into();
        assert!(Lock::parse(v.to_string().as_bytes(), p).is_err());
        assert!(Lock::parse(b"{", p).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Lock::parse(&bytes, Path::new("x"));
        }
    }
}
