//! Opening an object store from a URL (`--cache-dir`, `--publish`): which
//! scheme, the client's options (timeouts, retries, trust roots,
//! resolver), and the standard environment's credentials and endpoint.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreScheme, RetryConfig};

/// Why a store URL can't be opened: the user's mistake (exit 3). The
/// caller names the URL and the flag.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Not a URL.
    #[error(transparent)]
    Parse(#[from] url::ParseError),
    /// A URL `object_store` does not recognise (its parser's error, a type
    /// it does not export).
    #[error(transparent)]
    Scheme(Box<dyn std::error::Error + Send + Sync>),
    /// A scheme we don't open (`file://`, `memory://`, `http://`…).
    #[error("unsupported URL scheme ({0:?}): the object stores are s3://, gs:// and az://")]
    Unsupported(ObjectStoreScheme),
    /// The client refused the URL or the environment (a bad bucket name, a
    /// malformed `AWS_*` value…).
    #[error(transparent)]
    Build(object_store::Error),
}

/// Whether `dir` names an object store (`scheme://…`) rather than a path.
pub fn is_url(dir: &FsPath) -> bool {
    dir.to_str().is_some_and(|s| {
        s.split_once("://")
            .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'))
    })
}

/// How long a client waits and how often it tries: every request (a
/// multipart part included) is retried by `object_store` on 5xx answers,
/// connection errors and timeouts, with capped exponential backoff (and
/// jitter), never on 4xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patience {
    /// Attempts per request, at least 1.
    pub attempts: u32,
    /// The first wait between attempts; each next one about doubles.
    pub backoff_initial: Duration,
    /// The longest wait between attempts.
    pub backoff_max: Duration,
    /// No new attempt this long after the first one began.
    pub retry_within: Duration,
    /// One request's timeout, its body included.
    pub request_timeout: Duration,
}

/// Connecting takes at most this long (an unreachable endpoint must cost
/// seconds, not minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The store for `text` and the prefix under it: AWS, GCS or Azure from the
/// standard environment (`AWS_*`: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for
/// a plain-http S3-compatible server; `GOOGLE_*`; `AZURE_*`), retrying and
/// timing out as `patience` says.
pub fn open(text: &str, patience: &Patience) -> Result<(Arc<dyn ObjectStore>, Path), ClientError> {
    let url = url::Url::parse(text)?;
    let (scheme, prefix) =
        ObjectStoreScheme::parse(&url).map_err(|e| ClientError::Scheme(Box::new(e)))?;
    let retry = RetryConfig {
        max_retries: usize::try_from(patience.attempts.max(1) - 1).unwrap_or(usize::MAX),
        retry_timeout: patience.retry_within,
        backoff: BackoffConfig {
            init_backoff: patience.backoff_initial,
            max_backoff: patience.backoff_max,
            base: 2.0,
        },
    };
    let client = client_options(patience.request_timeout);
    use object_store::ObjectStoreScheme as S;
    // Our client options and retries first, then the environment (as the
    // builders' `from_env` reads it: `AWS_ALLOW_HTTP` is a client option,
    // which a later `with_client_options` would throw away), then the URL.
    let store: Arc<dyn ObjectStore> = match scheme {
        S::AmazonS3 => {
            // UNSIGNED-PAYLOAD: no SigV4 sha256 of every uploaded part (a
            // second hash pass over each blob, on both ends): a blob's own
            // sha256 is in its entry and checked on every read.
            // `AWS_UNSIGNED_PAYLOAD=false` (below) signs payloads again.
            let mut b = object_store::aws::AmazonS3Builder::new()
                .with_unsigned_payload(true)
                .with_retry(retry)
                .with_client_options(client);
            for (k, v) in env("AWS_") {
                if let Ok(k) = k.parse() {
                    b = b.with_config(k, v);
                }
            }
            Arc::new(b.with_url(text).build().map_err(ClientError::Build)?)
        }
        S::GoogleCloudStorage => {
            let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_retry(retry)
                .with_client_options(client);
            for (k, v) in env("GOOGLE_") {
                if let Ok(k) = k.parse() {
                    b = b.with_config(k, v);
                }
            }
            Arc::new(b.with_url(text).build().map_err(ClientError::Build)?)
        }
        S::MicrosoftAzure => {
            let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                .with_retry(retry)
                .with_client_options(client);
            for (k, v) in env("AZURE_") {
                if let Ok(k) = k.parse() {
                    b = b.with_config(k, v);
                }
            }
            Arc::new(b.with_url(text).build().map_err(ClientError::Build)?)
        }
        other => return Err(ClientError::Unsupported(other)),
    };
    Ok((store, prefix))
}

/// Connect timeout [`CONNECT_TIMEOUT`], request timeout `timeout`, the
/// downloads' trust roots and resolver.
fn client_options(timeout: Duration) -> ClientOptions {
    // The same trust roots as the downloads (the system's, else the
    // built-in set): reqwest has no platform verifier here to merge with.
    let mut client = ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(timeout)
        .with_no_system_certificates(true);
    // Names resolved as the downloads' are (hickory, /etc/resolv.conf): the
    // static binary has no NSS for getaddrinfo.
    if let Ok(dns) = crate::fetch::Dns::new(&crate::fetch::DnsConfig::System) {
        client = client.with_dns_resolver(Arc::new(Resolver(std::panic::AssertUnwindSafe(
            Arc::new(dns),
        ))));
    }
    for der in crate::fetch::trust_roots().certs {
        if let Ok(c) = object_store::Certificate::from_der(&der) {
            client = client.with_root_certificate(c);
        }
    }
    client
}

/// The environment variables starting with `prefix`, names lowercased (as
/// the builders' config keys parse them).
fn env(prefix: &str) -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// Our DNS resolver for the store's client.
#[derive(Debug)]
struct Resolver(std::panic::AssertUnwindSafe<Arc<crate::fetch::Dns>>);

impl object_store::client::DnsResolver for Resolver {
    fn resolve(&self, host: &str) -> object_store::client::DnsFuture {
        let (dns, host) = (Arc::clone(&self.0), host.to_string());
        Box::pin(async move {
            dns.lookup(&host)
                .await
                .map_err(|e| Box::new(e) as object_store::client::DnsError)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_paths() {
        for url in ["s3://b/p", "gs://b", "az://c/p", "ftp://h/x", "http://h/x"] {
            assert!(is_url(FsPath::new(url)), "{url}");
        }
        for path in ["/var/cache", "cache", "./a://b", "/x/s3://y", "://x"] {
            assert!(!is_url(FsPath::new(path)), "{path}");
        }
    }

    const PATIENT: Patience = Patience {
        attempts: 1,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
        retry_within: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
    };

    #[test]
    fn each_refusal_says_why() {
        assert!(matches!(
            open("s3:/nothing", &PATIENT),
            Err(ClientError::Parse(_)) | Err(ClientError::Scheme(_))
        ));
        assert!(matches!(
            open("ftp://h/x", &PATIENT),
            Err(ClientError::Scheme(_))
        ));
        match open("http://h/x", &PATIENT) {
            Err(e @ ClientError::Unsupported(_)) => {
                assert!(e.to_string().starts_with("unsupported URL scheme"), "{e}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
