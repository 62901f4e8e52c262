//! Streaming digests for the seven checksum algorithms of docs/spec.md §4.

use sha1::Digest as _;

use crate::config::HashAlgo;

/// An in-progress digest.
#[derive(Clone)]
pub enum Hasher {
    /// SHA-1.
    Sha1(sha1::Sha1),
    /// SHA-224.
    Sha224(sha2::Sha224),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-384.
    Sha384(sha2::Sha384),
    /// SHA-512.
    Sha512(sha2::Sha512),
    /// MD5.
    Md5(md5::Md5),
    /// Adler-32.
    Adler32(adler2::Adler32),
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hasher({})", self.algo())
    }
}

/// Lowercase hex of `bytes`, two digits a byte (how digests are written
/// everywhere: configs, bmaps, OCI names, `OUTPUT.json`).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

impl Hasher {
    /// A fresh hasher for `algo`.
    pub fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Sha1 => Self::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha224 => Self::Sha224(sha2::Sha224::new()),
            HashAlgo::Sha256 => Self::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha384 => Self::Sha384(sha2::Sha384::new()),
            HashAlgo::Sha512 => Self::Sha512(sha2::Sha512::new()),
            HashAlgo::Md5 => Self::Md5(md5::Md5::new()),
            HashAlgo::Adler32 => Self::Adler32(adler2::Adler32::new()),
        }
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        match self {
            Self::Sha1(_) => HashAlgo::Sha1,
            Self::Sha224(_) => HashAlgo::Sha224,
            Self::Sha256(_) => HashAlgo::Sha256,
            Self::Sha384(_) => HashAlgo::Sha384,
            Self::Sha512(_) => HashAlgo::Sha512,
            Self::Md5(_) => HashAlgo::Md5,
            Self::Adler32(_) => HashAlgo::Adler32,
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(data),
            Self::Sha224(h) => h.update(data),
            Self::Sha256(h) => h.update(data),
            Self::Sha384(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
            Self::Md5(h) => h.update(data),
            Self::Adler32(h) => h.write_slice(data),
        }
    }

    /// Lowercase hex digest (Adler-32: 8 digits, big-endian, as `%08x`).
    pub fn finalize_hex(self) -> String {
        match self {
            Self::Sha1(h) => hex(&h.finalize()),
            Self::Sha224(h) => hex(&h.finalize()),
            Self::Sha256(h) => hex(&h.finalize()),
            Self::Sha384(h) => hex(&h.finalize()),
            Self::Sha512(h) => hex(&h.finalize()),
            Self::Md5(h) => hex(&h.finalize()),
            Self::Adler32(h) => format!("{:08x}", h.checksum()),
        }
    }
}

/// A payload's digest did not match the declared one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: {algo} checksum mismatch: expected {expected}, got {actual}")]
pub struct ChecksumMismatch {
    /// File or URL.
    pub source_name: String,
    /// Algorithm.
    pub algo: HashAlgo,
    /// Declared digest.
    pub expected: String,
    /// Computed digest.
    pub actual: String,
}

/// What to do with a payload's bytes as they pass: check a declared
/// digest, and (a recorded build: `--lock`, `--sbom`, `--provenance`,
/// `--locked`) learn its sha256 on the same pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Check {
    /// The declared digest: algorithm and lowercase hex (`kind: url`
    /// already resolved).
    pub declared: Option<(HashAlgo, String)>,
    /// Also compute the sha256 (free when the declared digest is one).
    pub sha256: bool,
}

impl Check {
    /// Check `declared`, learn nothing more.
    pub fn declared(declared: Option<(HashAlgo, String)>) -> Self {
        Self {
            declared,
            sha256: false,
        }
    }

    /// The same, also learning the sha256 when `on`.
    #[must_use]
    pub fn recording(mut self, on: bool) -> Self {
        self.sha256 |= on;
        self
    }

    /// Whether the bytes need hashing at all.
    pub fn is_active(&self) -> bool {
        self.declared.is_some() || self.sha256
    }

    /// The verifier for a stream named `name` (a path or URL, for the
    /// mismatch message); `None` when nothing is asked.
    pub fn verifier(&self, name: &str) -> Option<StreamVerifier> {
        let mut v = match &self.declared {
            Some((algo, value)) => StreamVerifier::new(*algo, value, name),
            None if self.sha256 => StreamVerifier {
                hasher: Hasher::new(HashAlgo::Sha256),
                expected: None,
                sha256: None,
                source_name: name.to_string(),
            },
            None => return None,
        };
        if self.sha256 && v.hasher.algo() != HashAlgo::Sha256 {
            v.sha256 = Some(Hasher::new(HashAlgo::Sha256));
        }
        Some(v)
    }
}

/// Hash a stream as it passes and compare at the end.
#[derive(Debug)]
pub struct StreamVerifier {
    hasher: Hasher,
    /// `None`: compute only ([`Check::verifier`] without a declared digest).
    expected: Option<String>,
    /// A second hasher learning the sha256 beside another declared
    /// algorithm ([`Check::sha256`]).
    sha256: Option<Hasher>,
    source_name: String,
}

impl StreamVerifier {
    /// Verify against `expected` (lowercase hex).
    pub fn new(algo: HashAlgo, expected: &str, source_name: &str) -> Self {
        Self {
            hasher: Hasher::new(algo),
            expected: Some(expected.to_ascii_lowercase()),
            sha256: None,
            source_name: source_name.to_string(),
        }
    }

    /// Feed bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        if let Some(h) = self.sha256.as_mut() {
            h.update(data);
        }
    }

    /// Compare; returns the digest on success: the sha256 when the
    /// [`Check`] asked for it, else the declared algorithm's.
    pub fn finish(self) -> Result<String, ChecksumMismatch> {
        let algo = self.hasher.algo();
        let actual = self.hasher.finalize_hex();
        match self.expected {
            Some(expected) if actual != expected => Err(ChecksumMismatch {
                source_name: self.source_name,
                algo,
                expected,
                actual,
            }),
            _ => Ok(self.sha256.map_or(actual, Hasher::finalize_hex)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(algo: HashAlgo, data: &[u8]) -> String {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finalize_hex()
    }

    #[test]
    fn known_vectors() {
        assert_eq!(
            digest(HashAlgo::Md5, b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            digest(HashAlgo::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            digest(HashAlgo::Sha224, b"abc"),
            "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
        );
        assert_eq!(
            digest(HashAlgo::Sha256, b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(digest(HashAlgo::Sha384, b"abc").starts_with("cb00753f45a35e8b"));
        assert!(digest(HashAlgo::Sha512, b"abc").starts_with("ddaf35a193617aba"));
        // zlib.adler32(b"abc") == 0x024d0127
        assert_eq!(digest(HashAlgo::Adler32, b"abc"), "024d0127");
        assert_eq!(digest(HashAlgo::Adler32, b""), "00000001");
    }

    #[test]
    fn hex_is_two_lowercase_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn checks_learn_the_sha256_beside_the_declared_digest() {
        let sha = digest(HashAlgo::Sha256, b"abc");
        let md5 = "900150983cd24fb0d6963f7d28e17f72".to_string();
        let run = |c: Check| {
            let mut v = c.verifier("x").expect("a verifier");
            v.update(b"abc");
            v.finish()
        };
        assert!(Check::default().verifier("x").is_none());
        assert_eq!(run(Check::default().recording(true)), Ok(sha.clone()));
        let declared = Check::declared(Some((HashAlgo::Md5, md5.clone())));
        assert_eq!(run(declared.clone()), Ok(md5));
        assert_eq!(run(declared.recording(true)), Ok(sha.clone()));
        let wrong = Check::declared(Some((HashAlgo::Md5, "0".repeat(32)))).recording(true);
        assert!(run(wrong).is_err(), "the declared digest is still checked");
        let sha_declared = Check::declared(Some((HashAlgo::Sha256, sha.clone()))).recording(true);
        assert_eq!(run(sha_declared), Ok(sha));
    }

    #[test]
    fn verifier_reports_both_digests() {
        let mut v = StreamVerifier::new(HashAlgo::Md5, "00000000000000000000000000000000", "f.bin");
        v.update(b"abc");
        let e = v.finish().expect_err("mismatch");
        let msg = e.to_string();
        assert!(
            msg.contains("f.bin")
                && msg.contains("md5")
                && msg.contains("900150983cd24fb0d6963f7d28e17f72"),
            "{msg}"
        );
    }
}
