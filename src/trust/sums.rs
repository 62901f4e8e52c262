//! `OUTPUT.SHA256SUMS` and its minisign signature (`--sign`, `verify
//! --pubkey`; docs/spec.md §13).
//!
//! The list is `sha256sum`'s format: one line per file, `<64 hex>  <name>`
//! (two spaces), names relative to OUTPUT's directory, so `sha256sum -c`
//! checks it there. The signature is minisign's own file (untrusted
//! comment, prehashed Ed25519 signature, trusted comment, global
//! signature), so `minisign -V -p KEY.pub -m OUTPUT.SHA256SUMS` checks
//! it. The keys are minisign's files: a secret key unencrypted
//! (`minisign -G -W`) or encrypted (its password from
//! `IMAGE_CREATOR_SIGN_PASSWORD`; nothing is ever prompted).

use std::path::{Path, PathBuf};

/// Where `--sign` reads the secret key's password.
pub const PASSWORD_ENV: &str = "IMAGE_CREATOR_SIGN_PASSWORD";

/// A key, list or signature that can't be used.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// A file can't be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key can't be used (malformed, encrypted without a password, a
    /// wrong password).
    #[error("{}: {message}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Signing failed.
    #[error("signing {name}: {message}")]
    Sign {
        /// The list's file name.
        name: String,
        /// Why.
        message: String,
    },
}

impl SignError {
    /// A key or file the user gave: exit 3.
    pub fn exit_kind(&self) -> crate::error::ExitKind {
        match self {
            Self::Sign { .. } => crate::error::ExitKind::Failure,
            _ => crate::error::ExitKind::BadInput,
        }
    }
}

/// Read a key file (at most 64 KiB: a minisign key is ~200 bytes).
fn read_key(path: &Path) -> Result<String, SignError> {
    use std::io::Read;
    let err = |source| SignError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(64 << 10)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(text)
}

/// An unencrypted secret key file's key. Not through the crate's
/// `into_unencrypted_secret_key`: minisign 0.11's `-G -W` leaves the
/// checksum of an unencrypted key zero, as minisign itself never checks
/// it there (the key then proves itself: [`Signer::sign`] checks each
/// signature with the key's public half).
fn unencrypted(text: &str) -> Result<minisign::SecretKey, String> {
    use base64::Engine as _;
    let line = text
        .lines()
        .nth(1)
        .ok_or_else(|| "not a minisign secret key (no key line)".to_string())?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|e| format!("not a minisign secret key ({e})"))?;
    let sk = minisign::SecretKey::from_bytes(&bytes)
        .map_err(|e| format!("not a minisign secret key ({e})"))?;
    if sk.is_encrypted() {
        return Err(format!(
            "an encrypted key: its password goes in {PASSWORD_ENV}"
        ));
    }
    Ok(sk)
}

/// A loaded secret key.
pub struct Signer {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
    path: PathBuf,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", self.path.display())
    }
}

impl Signer {
    /// Load the minisign secret key in `path`, decrypted with `password`
    /// when given; without one the key must be unencrypted.
    pub fn load(path: &Path, password: Option<String>) -> Result<Self, SignError> {
        let text = read_key(path)?;
        let key_err = |message: String| SignError::Key {
            path: path.to_path_buf(),
            message,
        };
        let sk = match password {
            Some(p) => minisign::SecretKeyBox::from_string(&text)
                .and_then(|b| b.into_secret_key(Some(p)))
                .map_err(|e| key_err(format!("{e}")))?,
            None => unencrypted(&text).map_err(key_err)?,
        };
        // The key's own public half checks each signature it makes: a
        // corrupt key fails here, not in the hands of those who verify.
        let pk = minisign::PublicKey::from_secret_key(&sk)
            .map_err(|e| key_err(format!("no public key in it ({e})")))?;
        Ok(Self {
            sk,
            pk,
            path: path.to_path_buf(),
        })
    }

    /// The signature file (`.minisig`) of `data`, the list named `name`,
    /// its trusted comment `timestamp:T\tfile:NAME\thashed` as minisign
    /// writes it (T: `SOURCE_DATE_EPOCH` when set, else now).
    pub fn sign(&self, data: &[u8], name: &str, timestamp: i64) -> Result<Vec<u8>, SignError> {
        let trusted = format!("timestamp:{timestamp}\tfile:{name}\thashed");
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            std::io::Cursor::new(data),
            Some(&trusted),
            Some("signature from image-creator"),
        )
        .map_err(|e| SignError::Sign {
            name: name.to_string(),
            message: e.to_string(),
        })?;
        Ok(sig.into_string().into_bytes())
    }
}

/// A minisign public key: a key file (`untrusted comment:` line, then
/// the key) or the bare base64 key `minisign -P` takes.
pub struct PublicKey(minisign::PublicKey);

impl PublicKey {
    /// Read it from `path`.
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let text = read_key(path)?;
        minisign::PublicKeyBox::from_string(&text)
            .and_then(minisign::PublicKeyBox::into_public_key)
            .or_else(|_| minisign::PublicKey::from_base64(text.trim()))
            .map(Self)
            .map_err(|e| SignError::Key {
                path: path.to_path_buf(),
                message: format!("not a minisign public key ({e})"),
            })
    }
}

/// Check `sig` (a `.minisig` file's text, from `sig_path`) of `data` with
/// `pk`. `Err`: why it does not hold.
pub fn check_signature(
    pk: &PublicKey,
    data: &[u8],
    sig: &str,
    sig_path: &Path,
) -> Result<(), String> {
    let pk = &pk.0;
    let sig = minisign::SignatureBox::from_string(sig)
        .map_err(|e| format!("{}: not a minisign signature ({e})", sig_path.display()))?;
    minisign::verify(pk, &sig, std::io::Cursor::new(data), true, false, false)
        .map_err(|e| format!("{}: {e}", sig_path.display()))
}

/// The list's text: `<sha256>  <name>` a line, in the order given.
pub fn render(entries: &[(String, String)]) -> Vec<u8> {
    let mut s = String::new();
    for (name, sha256) in entries {
        s.push_str(sha256);
        s.push_str("  ");
        s.push_str(name);
        s.push('\n');
    }
    s.into_bytes()
}

/// Parse a list (`sha256sum`'s format, text or binary mode marker),
/// refusing a name that is not a plain file name (a `/`, `..`, empty):
/// `verify` only opens files beside the list. `(name, sha256)` a line.
pub fn parse(text: &str, path: &Path) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("{} line {}: {why}", path.display(), n + 1);
        if line.is_empty() {
            continue;
        }
        let (hash, rest) = line.split_at_checked(64).ok_or_else(|| bad("too short"))?;
        if !crate::trust::record::is_sha256_hex(hash) {
            return Err(bad("not a sha256"));
        }
        let name = rest
            .strip_prefix("  ")
            .or_else(|| rest.strip_prefix(" *"))
            .ok_or_else(|| bad("expected two spaces after the sha256"))?;
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(bad(&format!("{name:?} is not a file name beside the list")));
        }
        out.push((name.to_string(), hash.to_ascii_lowercase()));
    }
    if out.is_empty() {
        return Err(format!("{}: no file listed", path.display()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_round_trips_and_refuses_paths() {
        let e = vec![
            ("o.img".to_string(), "a".repeat(64)),
            ("o.img.json".to_string(), "b".repeat(64)),
        ];
        let text = String::from_utf8(render(&e)).expect("utf-8");
        assert_eq!(
            text.lines().next(),
            Some(format!("{}  o.img", "a".repeat(64)).as_str())
        );
        assert_eq!(parse(&text, Path::new("S")).expect("parses"), e);
        let p = Path::new("S");
        for bad in [
            format!("{}  ../etc/passwd", "a".repeat(64)),
            format!("{}  a/b", "a".repeat(64)),
            format!("{} o.img", "a".repeat(64)),
            "xyz  o.img".to_string(),
            String::new(),
        ] {
            assert!(parse(&bad, p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_signature_checks_with_its_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("keys");
        let sk_path = dir.path().join("k.key");
        let pk_path = dir.path().join("k.pub");
        std::fs::write(&sk_path, kp.sk.to_box(None).expect("box").into_string()).expect("w");
        std::fs::write(&pk_path, kp.pk.to_box().expect("box").into_string()).expect("w");
        let signer = Signer::load(&sk_path, None).expect("loads");
        let sig = signer.sign(b"list\n", "o.SHA256SUMS", 1).expect("signs");
        let sig = String::from_utf8(sig).expect("utf-8");
        assert!(sig.contains("trusted comment: timestamp:1\tfile:o.SHA256SUMS\thashed"));
        let sp = Path::new("o.SHA256SUMS.minisig");
        let pk = PublicKey::load(&pk_path).expect("a key");
        assert_eq!(check_signature(&pk, b"list\n", &sig, sp), Ok(()));
        assert!(check_signature(&pk, b"list!\n", &sig, sp).is_err());
        let other = minisign::KeyPair::generate_unencrypted_keypair().expect("keys");
        let other_path = dir.path().join("o.pub");
        std::fs::write(&other_path, other.pk.to_base64()).expect("w");
        let other = PublicKey::load(&other_path).expect("a bare key");
        assert!(check_signature(&other, b"list\n", &sig, sp).is_err());
        assert!(
            PublicKey::load(&sk_path).is_err(),
            "a secret key is no public key"
        );
        // Not a key: a clear error naming the file, no panic.
        std::fs::write(&sk_path, "garbage").expect("w");
        let e = Signer::load(&sk_path, None).expect_err("not a key");
        assert!(e.to_string().contains("k.key"), "{e}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in ".{0,300}") {
            let _ = parse(&text, Path::new("x"));
        }
    }
}
