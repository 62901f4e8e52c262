//! The certificate authorities HTTPS trusts ([`trust_roots`]).
//!
//! - The system's store when it has one: `SSL_CERT_FILE`/`SSL_CERT_DIR`
//!   when set, else the distribution's bundle (`/etc/ssl/certs`...) or the
//!   macOS keychain, read by `rustls-native-certs`. Administrators add
//!   their own authorities there and remove distrusted ones, so it wins.
//! - Otherwise the Mozilla roots built into the binary
//!   (`webpki-root-certs`, the CCADB list), so a static binary in an
//!   empty container (no `/etc/ssl`) still verifies servers.
//!
//! The two are never merged: a system store that exists is the whole
//! truth, as it is for curl.

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

/// Where the roots in use came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootsSource {
    /// The system's store.
    System,
    /// The roots compiled into the binary.
    BuiltIn,
}

/// The trusted roots, each parsed once already (so none makes the
/// client's set-up fail), and where they came from.
#[derive(Debug, Clone)]
pub struct TrustRoots {
    /// DER certificates.
    pub certs: Vec<CertificateDer<'static>>,
    /// Their origin.
    pub source: RootsSource,
}

/// The roots to trust: the system's (when any of them parses), else the
/// built-in ones.
pub fn trust_roots() -> TrustRoots {
    // Unreadable files and unparsable certificates are skipped: they are
    // the system's to fix, and the rest of its store is still the store.
    choose(rustls_native_certs::load_native_certs().certs)
}

/// [`trust_roots`] given the system's certificates.
fn choose(system: Vec<CertificateDer<'static>>) -> TrustRoots {
    let usable = usable(system);
    if usable.is_empty() {
        TrustRoots {
            certs: usable_built_in(),
            source: RootsSource::BuiltIn,
        }
    } else {
        TrustRoots {
            certs: usable,
            source: RootsSource::System,
        }
    }
}

fn usable_built_in() -> Vec<CertificateDer<'static>> {
    usable(webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec())
}

/// The certificates rustls accepts as trust anchors.
fn usable(certs: Vec<CertificateDer<'static>>) -> Vec<CertificateDer<'static>> {
    let mut store = RootCertStore::empty();
    certs
        .into_iter()
        .filter(|c| store.add(c.clone()).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_roots_when_the_system_has_none() {
        let r = choose(Vec::new());
        assert_eq!(r.source, RootsSource::BuiltIn);
        // The CCADB list holds well over 100 roots; every one parses.
        assert!(r.certs.len() > 100, "{}", r.certs.len());
        assert_eq!(
            r.certs.len(),
            webpki_root_certs::TLS_SERVER_ROOT_CERTS.len()
        );
    }

    #[test]
    fn garbage_is_not_a_store() {
        let r = choose(vec![CertificateDer::from(b"not a certificate".to_vec())]);
        assert_eq!(r.source, RootsSource::BuiltIn);
    }

    #[test]
    fn the_system_store_wins_when_present() {
        let one = webpki_root_certs::TLS_SERVER_ROOT_CERTS[0].clone();
        let junk = CertificateDer::from(vec![0u8; 8]);
        let r = choose(vec![junk, one.clone()]);
        assert_eq!(r.source, RootsSource::System);
        assert_eq!(r.certs, vec![one]);
    }
}
