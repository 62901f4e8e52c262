//! Checksums declared in the config (docs/spec.md §4 `checksum`).

use serde::Deserialize;

/// Digest algorithms, spelled as the config spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum HashAlgo {
    /// SHA-1.
    #[serde(rename = "sha-1")]
    Sha1,
    /// SHA-224.
    #[serde(rename = "sha-224")]
    Sha224,
    /// SHA-256.
    #[serde(rename = "sha-256")]
    Sha256,
    /// SHA-384.
    #[serde(rename = "sha-384")]
    Sha384,
    /// SHA-512.
    #[serde(rename = "sha-512")]
    Sha512,
    /// MD5.
    #[serde(rename = "md5")]
    Md5,
    /// Adler-32 (8 hex digits, as zlib.adler32 `%08x`).
    #[serde(rename = "adler32")]
    Adler32,
}

impl HashAlgo {
    /// Length of the hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            Self::Sha1 => 40,
            Self::Sha224 => 56,
            Self::Sha256 => 64,
            Self::Sha384 => 96,
            Self::Sha512 => 128,
            Self::Md5 => 32,
            Self::Adler32 => 8,
        }
    }

    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha-1",
            Self::Sha224 => "sha-224",
            Self::Sha256 => "sha-256",
            Self::Sha384 => "sha-384",
            Self::Sha512 => "sha-512",
            Self::Md5 => "md5",
            Self::Adler32 => "adler32",
        }
    }
}

impl std::fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether `value` is the digest or a URL to fetch it from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    /// `value` is the hex digest.
    #[default]
    Digest,
    /// `value` is a URL whose first token is the digest.
    Url,
}

/// A checksum as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checksum {
    /// Algorithm.
    pub algo: HashAlgo,
    /// Hex digest, or a URL when `kind: url`.
    pub value: String,
    /// Digest (default) or URL.
    #[serde(default)]
    pub kind: ChecksumKind,
}

impl Checksum {
    /// Normalise a digest value (lowercase) and check its form.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.kind == ChecksumKind::Digest {
            let v = self.value.trim().to_ascii_lowercase();
            if v.len() != self.algo.hex_len() || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "{} digest must be {} hex digits, got {:?}",
                    self.algo,
                    self.algo.hex_len(),
                    self.value
                ));
            }
            self.value = v;
        } else if !(self.value.starts_with("http://") || self.value.starts_with("https://")) {
            return Err(format!(
                "checksum URL must be http(s), got {:?}",
                self.value
            ));
        }
        Ok(())
    }
}
