//! Opening an object store from `--cache-dir`'s URL: which scheme, the
//! client's options (timeouts, retries, trust roots, resolver), and the
//! standard environment's credentials and endpoint.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreScheme, RetryConfig};

/// Why a cache URL can't be opened: the user's mistake (exit 3).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// Not a URL.
    #[error(transparent)]
    Parse(#[from] url::ParseError),
    /// A URL `object_store` does not recognise (its parser's error, a type
    /// it does not export).
    #[error(transparent)]
    Scheme(Box<dyn std::error::Error + Send + Sync>),
    /// A scheme we don't open (`file://`, `memory://`, `http://`…).
    #[error("unsupported cache URL scheme ({0:?}): use a directory, s3://, gs:// or az://")]
    Unsupported(ObjectStoreScheme),
    /// The client refused the URL or the environment (a bad bucket name, a
    /// malformed `AWS_*` value…).
    #[error(transparent)]
    Build(object_store::Error),
}

/// Whether `dir` names an object store (`scheme://…`) rather than a path.
pub(crate) fn is_url(dir: &FsPath) -> bool {
    dir.to_str().is_some_and(|s| {
        s.split_once("://")
            .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains('/'))
    })
}

/// The store for `text` and the prefix under it: AWS, GCS or Azure from the
/// standard environment (`AWS_*`: `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP` for
/// a plain-http S3-compatible server; `GOOGLE_*`; `AZURE_*`). Few retries
/// and short timeouts: an unusable store must cost a build seconds, not
/// minutes.
pub(crate) fn open(text: &str) -> Result<(Arc<dyn ObjectStore>, Path), ClientError> {
    let url = url::Url::parse(text)?;
    let (scheme, prefix) =
        ObjectStoreScheme::parse(&url).map_err(|e| ClientError::Scheme(Box::new(e)))?;
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    };
    let client = client_options();
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

/// Connect timeout 5 s, request timeout 120 s, the downloads' trust roots
/// and resolver.
fn client_options() -> ClientOptions {
    // The same trust roots as the downloads (the system's, else the
    // built-in set): reqwest has no platform verifier here to merge with.
    let mut client = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
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

    #[test]
    fn each_refusal_says_why() {
        assert!(matches!(
            open("s3:/nothing"),
            Err(ClientError::Parse(_)) | Err(ClientError::Scheme(_))
        ));
        assert!(matches!(open("ftp://h/x"), Err(ClientError::Scheme(_))));
        match open("http://h/x") {
            Err(e @ ClientError::Unsupported(_)) => {
                assert!(
                    e.to_string().starts_with("unsupported cache URL scheme"),
                    "{e}"
                )
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
