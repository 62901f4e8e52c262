//! HTTP(S) client at the network edge: probes, small fetches and resilient
//! streaming downloads (retries with capped exponential backoff honouring
//! `Retry-After`, `Range` resume guarded by `If-Range`, idle timeouts, and a
//! hard cap at the expected size).
//!
//! Async (tokio + reqwest) lives here only; bytes leave through a
//! [`ChunkSink`] in bounded 1 MiB batches written from a blocking section,
//! so memory does not grow with file size or slow disks, while a task of
//! its own receives the body a few chunks ahead ([`pump`]).

use std::time::Duration;

use reqwest::header::{
    HeaderMap, ACCEPT_ENCODING, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED,
    RANGE, RETRY_AFTER,
};
use reqwest::StatusCode;

use super::guard::{check_url_str, Blocked, CheckedResolver, HopBlocked, ResolveError};
use super::guard::{redirect_policy, ResolveOverride};
use super::overlap::BackgroundVerifier;
use super::policy::NetworkPolicy;
use super::redact::redact;
use crate::error::ExitKind;
use crate::io::{Check, ChecksumMismatch, ChunkSink, StreamVerifier};

/// Download batch: bytes are handed to the sink 1 MiB at a time (a multiple
/// of the 4 KiB block, large enough that per-write overhead is negligible).
pub const BATCH: usize = 1 << 20;

/// Most header fields accepted in a response: 100 (hyper's default, set
/// here so a dependency update can't loosen it); hyper refuses more while
/// parsing, on every response, redirects included.
pub const MAX_HEADERS: usize = 100;

/// Most bytes of header names and values accepted in a response: 64 KiB
/// (CDN and registry responses carry under 8 KiB). Checked on each
/// response we read; underneath, hyper stops reading any head, redirects
/// included, once its buffer passes 408 KiB (`DEFAULT_MAX_BUFFER_SIZE`,
/// 8 KiB + 100 × 4 KiB, which reqwest does not let us change), so memory
/// stays bounded either way.
pub const MAX_HEAD_BYTES: usize = 64 << 10;

/// Refuse `headers` of a response from `url` over [`MAX_HEAD_BYTES`].
pub fn check_headers(url: &str, headers: &HeaderMap) -> Result<(), HttpError> {
    let bytes = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .fold(0usize, usize::saturating_add);
    if bytes > MAX_HEAD_BYTES {
        return Err(HttpError::HeadersTooLarge { url: redact(url) });
    }
    Ok(())
}

/// Network behaviour, with documented defaults.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// TCP/TLS connect timeout (default 30 s).
    pub connect_timeout: Duration,
    /// Longest wait for the next bytes of a body (default 60 s): a stalled
    /// server is an error (then retried), not a hang.
    pub idle_timeout: Duration,
    /// Attempts per request, first included (default 5).
    pub max_attempts: u32,
    /// First retry delay (default 1 s), doubled each time...
    pub backoff_initial: Duration,
    /// ...up to this (default 30 s). `Retry-After` is honoured up to it too.
    pub backoff_max: Duration,
    /// Where requests may go (default [`NetworkPolicy::Private`]): checked
    /// on every resolved address, IP-literal URL and redirect hop.
    pub network: NetworkPolicy,
    /// Names answered without DNS (`--resolve HOST:ADDRESS`; default
    /// none); their addresses are checked like DNS answers.
    pub resolve: Vec<ResolveOverride>,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_attempts: 5,
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            network: NetworkPolicy::default(),
            resolve: Vec::new(),
        }
    }
}

/// A failed request; every variant names the URL (credentials redacted).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A final HTTP status (404, 403, 5xx after retries...).
    #[error("{url}: HTTP {status}")]
    Status {
        /// URL.
        url: String,
        /// Status code.
        status: u16,
    },
    /// Connection, TLS or timeout failure after every attempt.
    #[error("{url}: {message}")]
    Transport {
        /// URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The body kept breaking off (idle timeout, reset) after the server
    /// answered: the source is reachable, the transfer failed (exit 1).
    #[error("{url}: {message}")]
    Broken {
        /// URL.
        url: String,
        /// What failed, with the offset reached and the attempts made.
        message: String,
    },
    /// The server sent more than expected (download bomb).
    #[error(
        "{url}: the server sent more than the expected {expected} bytes; refusing to write past it"
    )]
    TooLong {
        /// URL.
        url: String,
        /// Expected size.
        expected: u64,
    },
    /// The body kept ending early.
    #[error("{url}: the body ended at {got} of {expected} bytes ({attempts} attempts)")]
    Short {
        /// URL.
        url: String,
        /// Bytes received.
        got: u64,
        /// Expected size.
        expected: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// The server's size disagrees with the declared one.
    #[error("{url}: the server says {server} bytes but {declared} were declared")]
    SizeMismatch {
        /// URL.
        url: String,
        /// Content-Length.
        server: u64,
        /// Declared size.
        declared: u64,
    },
    /// No size known (no `size` and no Content-Length).
    #[error("{url}: size unknown: the server sends no Content-Length; declare `size`")]
    NoSize {
        /// URL.
        url: String,
    },
    /// Payload checksum mismatch.
    #[error(transparent)]
    Checksum(#[from] ChecksumMismatch),
    /// Writing the bytes failed (or the reader of a stream stopped: see
    /// [`crate::io::ReaderStopped`]).
    #[error("{url}: writing: {source}")]
    Sink {
        /// URL.
        url: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// The network policy refused the destination (an address, or a URL
    /// that is not http(s)); nothing was sent to it.
    #[error("{url}: {reason}")]
    Blocked {
        /// URL (redacted).
        url: String,
        /// Why.
        reason: Blocked,
    },
    /// A redirect was not followed: its destination is refused, or the
    /// chain is longer than [`super::MAX_REDIRECTS`].
    #[error("{url}: {hop}")]
    BlockedRedirect {
        /// The URL first requested (redacted).
        url: String,
        /// The hop and why.
        hop: HopBlocked,
    },
    /// The response head is over [`MAX_HEADERS`] fields or
    /// [`MAX_HEAD_BYTES`] bytes.
    #[error(
        "{url}: response headers over the limit ({MAX_HEADERS} fields, {MAX_HEAD_BYTES} bytes)"
    )]
    HeadersTooLarge {
        /// URL (redacted).
        url: String,
    },
    /// A small body (config, checksum file, manifest, token) is larger
    /// than its limit.
    #[error("{url}: the response body is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// URL (redacted).
        url: String,
        /// The limit.
        limit: u64,
    },
    /// The client or its runtime could not be set up.
    #[error("{message}")]
    Setup {
        /// What failed.
        message: String,
    },
}

impl HttpError {
    /// True for "the source can't be reached" (exit code 4), refusals by
    /// the network policy included.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            Self::Status { .. }
                | Self::Transport { .. }
                | Self::NoSize { .. }
                | Self::Blocked { .. }
                | Self::BlockedRedirect { .. }
        )
    }

    /// True when retrying can't help: the policy refused, or a limit was
    /// exceeded.
    fn is_final(&self) -> bool {
        matches!(
            self,
            Self::Blocked { .. } | Self::BlockedRedirect { .. } | Self::HeadersTooLarge { .. }
        )
    }

    /// The error of a request to `url` that failed before a response:
    /// refusals (from the resolver or the redirect policy) and an
    /// oversized head are told apart from transport failures.
    pub fn from_reqwest(url: &str, e: &reqwest::Error) -> Self {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(c) = cur {
            if let Some(hop) = c.downcast_ref::<HopBlocked>() {
                return Self::BlockedRedirect {
                    url: redact(url),
                    hop: hop.clone(),
                };
            }
            if let Some(ResolveError::Refused(r)) = c.downcast_ref::<ResolveError>() {
                return Self::Blocked {
                    url: redact(url),
                    reason: Blocked::Refused(r.clone()),
                };
            }
            // hyper has `is_parse_too_large` only with its server feature:
            // a parse error with the TooLarge message is the same test
            // (too many fields or too many bytes; pinned by
            // tests/untrusted.rs).
            if c.downcast_ref::<hyper::Error>().is_some_and(|h| {
                h.is_parse() && h.to_string().starts_with("message head is too large")
            }) {
                return Self::HeadersTooLarge { url: redact(url) };
            }
            cur = c.source();
        }
        Self::Transport {
            url: redact(url),
            message: error_chain(e),
        }
    }

    /// Exit 4 when the source can't be reached (status, connection), 1
    /// otherwise (bad body, checksum, disk).
    pub fn exit_kind(&self) -> ExitKind {
        if self.is_unreachable() {
            ExitKind::Unreachable
        } else {
            ExitKind::Failure
        }
    }
}

/// What a probe learned about a URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// Content-Length.
    pub size: Option<u64>,
    /// ETag.
    pub etag: Option<String>,
    /// Last-Modified.
    pub last_modified: Option<String>,
}

/// What a download learnt besides its bytes (a recorded build's lock).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// The digest its check computed ([`Check::verifier`]): the sha256
    /// when it was asked for, else the declared algorithm's.
    pub digest: Option<String>,
    /// The URL the bytes came from, after redirects (credentials removed).
    pub final_url: String,
    /// The last response's `ETag`.
    pub etag: Option<String>,
    /// The last response's `Last-Modified`.
    pub last_modified: Option<String>,
}

/// Retryable statuses: 408 Request Timeout, 429 Too Many Requests, 5xx.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

pub(super) fn header(h: &HeaderMap, name: reqwest::header::HeaderName) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

pub(super) fn content_length(h: &HeaderMap) -> Option<u64> {
    header(h, CONTENT_LENGTH).and_then(|v| v.trim().parse().ok())
}

/// The HTTP client.
#[derive(Debug, Clone)]
pub struct Http {
    /// Private: every request goes through [`Http::send`] or
    /// [`Http::get`], which check the URL against the policy first.
    client: reqwest::Client,
    /// The same, without following redirects: [`Http::validators`] reads
    /// each hop's headers (MirrorBrain puts `Digest` on the redirect).
    pub(super) no_redirect: reqwest::Client,
    pub(super) opts: FetchOptions,
}

impl Http {
    /// A client with rustls (ring provider), the system's roots or the
    /// built-in ones ([`super::trust_roots`]), redirects
    /// followed (at most [`super::MAX_REDIRECTS`], each hop checked),
    /// names resolved by a [`CheckedResolver`], at most [`MAX_HEADERS`]
    /// response headers, `Accept-Encoding: identity` and our User-Agent.
    ///
    /// Proxies from the environment (`HTTP_PROXY`...) are used only with
    /// [`NetworkPolicy::Any`]: a proxy resolves names itself, where the
    /// policy can't check them.
    pub fn new(opts: FetchOptions) -> Result<Self, HttpError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let roots = super::trust_roots();
        let builder = || {
            let certs = roots.certs.iter().filter_map(|der| {
                // Already parsed once by trust_roots: from_der only copies.
                reqwest::Certificate::from_der(der).ok()
            });
            let b = reqwest::Client::builder()
                .tls_certs_only(certs)
                .user_agent(concat!("image-creator/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(opts.connect_timeout)
                .dns_resolver(CheckedResolver::new(opts.network, &opts.resolve))
                .http1_max_headers(MAX_HEADERS);
            if opts.network == NetworkPolicy::Any {
                b
            } else {
                b.no_proxy()
            }
        };
        let setup = |e: reqwest::Error| HttpError::Setup {
            message: format!("building the HTTP client: {e}"),
        };
        let client = builder()
            .redirect(redirect_policy(opts.network))
            .build()
            .map_err(setup)?;
        // Hops are followed (and checked) by hand: see Http::validators.
        let no_redirect = builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(setup)?;
        Ok(Self {
            client,
            no_redirect,
            opts,
        })
    }

    fn backoff(&self, attempt: u32, retry_after: Option<&str>) -> Duration {
        if let Some(secs) = retry_after.and_then(|v| v.trim().parse::<u64>().ok()) {
            return Duration::from_secs(secs).min(self.opts.backoff_max);
        }
        let exp = self
            .opts
            .backoff_initial
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        exp.min(self.opts.backoff_max)
    }

    /// The network policy of this client.
    pub fn network(&self) -> NetworkPolicy {
        self.opts.network
    }

    /// Check `url` against the policy before it is requested: its scheme,
    /// and its host when it is an IP literal (names are checked by the
    /// resolver, redirect hops by the redirect policy).
    pub fn check_url(&self, url: &str) -> Result<(), HttpError> {
        check_url_str(self.opts.network, url).map_err(|reason| HttpError::Blocked {
            url: redact(url),
            reason,
        })
    }

    /// A GET of `url`, checked by [`Http::check_url`] (for the OCI
    /// registry client's small JSON requests; send it and map its errors
    /// with [`HttpError::from_reqwest`]).
    pub fn get(&self, url: &str) -> Result<reqwest::RequestBuilder, HttpError> {
        self.check_url(url)?;
        Ok(self.client.get(url))
    }

    /// Send with retries on connection errors and retryable statuses;
    /// `url` is checked by [`Http::check_url`] first and `build` must
    /// request it.
    async fn send(
        &self,
        url: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, HttpError> {
        self.check_url(url)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = tokio::time::timeout(
                self.opts.idle_timeout,
                build().header(ACCEPT_ENCODING, "identity").send(),
            )
            .await;
            if let Ok(Ok(r)) = &res {
                check_headers(url, r.headers())?;
            }
            let (err, retry_after) = match res {
                Ok(Ok(r)) if r.status().is_success() => return Ok(r),
                Ok(Ok(r)) if retryable(r.status()) => {
                    let ra = header(r.headers(), RETRY_AFTER);
                    (
                        HttpError::Status {
                            url: redact(url),
                            status: r.status().as_u16(),
                        },
                        ra,
                    )
                }
                Ok(Ok(r)) => {
                    return Err(HttpError::Status {
                        url: redact(url),
                        status: r.status().as_u16(),
                    })
                }
                Ok(Err(e)) => match HttpError::from_reqwest(url, &e) {
                    final_error if final_error.is_final() => return Err(final_error),
                    transport => (transport, None),
                },
                Err(_) => (
                    HttpError::Transport {
                        url: redact(url),
                        message: "timed out waiting for a response".into(),
                    },
                    None,
                ),
            };
            if attempt >= self.opts.max_attempts {
                return Err(err);
            }
            tokio::time::sleep(self.backoff(attempt, retry_after.as_deref())).await;
        }
    }

    /// HEAD the URL (falling back to a GET's headers when HEAD fails or
    /// gives no Content-Length).
    pub async fn probe(&self, url: &str) -> Result<Probe, HttpError> {
        let from = |h: &HeaderMap| Probe {
            size: content_length(h),
            etag: header(h, ETAG),
            last_modified: header(h, LAST_MODIFIED),
        };
        match self.send(url, || self.client.head(url)).await {
            Ok(r) => {
                let p = from(r.headers());
                if p.size.is_some() {
                    return Ok(p);
                }
            }
            Err(e) if e.is_final() => return Err(e),
            Err(_) => {}
        }
        let r = self.send(url, || self.client.get(url)).await?;
        Ok(from(r.headers()))
    }

    /// GET a small body (checksum files, configs): at most `max` bytes.
    pub async fn get_small(&self, url: &str, max: usize) -> Result<Vec<u8>, HttpError> {
        let mut r = self.send(url, || self.client.get(url)).await?;
        let mut out = Vec::new();
        loop {
            let chunk = tokio::time::timeout(self.opts.idle_timeout, r.chunk())
                .await
                .map_err(|_| HttpError::Transport {
                    url: redact(url),
                    message: "timed out reading the body".into(),
                })?
                .map_err(|e| HttpError::Transport {
                    url: redact(url),
                    message: error_chain(&e),
                })?;
            let Some(c) = chunk else { return Ok(out) };
            if out.len() + c.len() > max {
                return Err(HttpError::BodyTooLarge {
                    url: redact(url),
                    limit: max as u64,
                });
            }
            out.extend_from_slice(&c);
        }
    }

    /// The first `n` bytes of `url` (asked with `Range`; a server that
    /// ignores it is read only that far).
    pub async fn get_prefix(&self, url: &str, n: usize) -> Result<Vec<u8>, HttpError> {
        let mut r = self
            .send(url, || {
                self.client
                    .get(url)
                    .header(RANGE, format!("bytes=0-{}", n.saturating_sub(1)))
            })
            .await?;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let chunk = tokio::time::timeout(self.opts.idle_timeout, r.chunk())
                .await
                .map_err(|_| HttpError::Transport {
                    url: redact(url),
                    message: "timed out reading the body".into(),
                })?
                .map_err(|e| HttpError::Transport {
                    url: redact(url),
                    message: error_chain(&e),
                })?;
            let Some(c) = chunk else { break };
            let take = c.len().min(n - out.len());
            out.extend_from_slice(&c[..take]);
        }
        Ok(out)
    }

    /// Stream `url` into `sink`. `expected` is the declared size (the
    /// Content-Length when `None`); nothing past it is ever written. The
    /// digest, when `verify` is given, is checked at the end.
    pub async fn download(
        &self,
        url: &str,
        expected: Option<u64>,
        verify: Check,
        sink: &mut dyn ChunkSink,
    ) -> Result<Option<String>, HttpError> {
        self.download_auth(url, None, expected, verify, sink).await
    }

    /// [`Http::download`], with what the responses said: the URL after
    /// redirects and the validators.
    pub async fn download_fetched(
        &self,
        url: &str,
        expected: Option<u64>,
        verify: Check,
        sink: &mut dyn ChunkSink,
    ) -> Result<Fetched, HttpError> {
        let t = Transfer::new(url, expected, verify);
        self.transfer(url, None, t, sink).await
    }

    /// [`Http::download_fetched`] of a payload whose first bytes the sink
    /// already has (a partial download kept by the cache, `from`): asked
    /// from `from.offset` with `Range`, guarded by `If-Range`; a server that
    /// sends the whole payload instead (it changed, or ignores `Range`)
    /// makes the sink [`ChunkSink::restart`] and the digest start over.
    /// `from.verifier` has hashed the first bytes already.
    pub async fn download_from(
        &self,
        url: &str,
        expected: u64,
        verify: Check,
        from: Continue,
        sink: &mut dyn ChunkSink,
    ) -> Result<Fetched, HttpError> {
        let mut t = Transfer::new(url, Some(expected), verify);
        t.offset = from.offset;
        t.validator = Some(from.if_range);
        t.verifier = BackgroundVerifier::new(from.verifier, BATCH);
        self.transfer(url, None, t, sink).await
    }

    /// [`Http::download`] with an `Authorization` header value (a registry
    /// bearer token) sent on every request; reqwest drops it on redirects
    /// to another host (blob storage).
    pub async fn download_auth(
        &self,
        url: &str,
        auth: Option<&str>,
        expected: Option<u64>,
        verify: Check,
        sink: &mut dyn ChunkSink,
    ) -> Result<Option<String>, HttpError> {
        let t = Transfer::new(url, expected, verify);
        Ok(self.transfer(url, auth, t, sink).await?.digest)
    }

    /// Run `t` to its end: its requests, retried with backoff, each from
    /// where the payload stopped; what the responses said.
    async fn transfer(
        &self,
        url: &str,
        auth: Option<&str>,
        mut t: Transfer,
        sink: &mut dyn ChunkSink,
    ) -> Result<Fetched, HttpError> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let resp = self.request(url, auth, &t).await?;
            t.accept(&resp, sink)?;
            let failure = self.receive(resp, &mut t, sink).await?;
            if Some(t.offset) == t.expected {
                let mut fetched = std::mem::take(&mut t.fetched);
                fetched.digest = t.verifier.finish().await?;
                return Ok(fetched);
            }
            if attempt >= self.opts.max_attempts {
                return Err(t.gave_up(failure, attempt));
            }
            tokio::time::sleep(self.backoff(attempt, None)).await;
        }
    }

    /// One GET of a transfer: from its offset (`Range`, guarded by
    /// `If-Range`) when resuming.
    async fn request(
        &self,
        url: &str,
        auth: Option<&str>,
        t: &Transfer,
    ) -> Result<reqwest::Response, HttpError> {
        let offset = t.offset;
        self.send(url, || {
            let mut rq = self.client.get(url);
            if let Some(a) = auth {
                rq = rq.header(reqwest::header::AUTHORIZATION, a);
            }
            if offset > 0 {
                rq = rq.header(RANGE, format!("bytes={offset}-"));
                if let Some(v) = &t.validator {
                    rq = rq.header(IF_RANGE, v.as_str());
                }
            }
            rq
        })
        .await
    }

    /// Receive the body into `t`'s batches until it ends or breaks off;
    /// returns why it broke off, if it did.
    async fn receive(
        &self,
        resp: reqwest::Response,
        t: &mut Transfer,
        sink: &mut dyn ChunkSink,
    ) -> Result<Option<String>, HttpError> {
        let total = t.expected.unwrap_or(0);
        let (mut body, _pump) = pump(resp, self.opts.idle_timeout);
        let failure = loop {
            match body.recv().await {
                None => break Some("the body's receiving task ended".into()),
                Some(Err(message)) => break Some(message),
                Some(Ok(None)) => break None,
                Some(Ok(Some(chunk))) => {
                    let pending = t.offset + t.buf.len() as u64;
                    if pending + chunk.len() as u64 > total {
                        return Err(HttpError::TooLong {
                            url: t.name.clone(),
                            expected: total,
                        });
                    }
                    t.buf.extend_from_slice(&chunk);
                    if t.buf.len() >= BATCH {
                        t.flush(sink).await?;
                    }
                }
            }
        };
        t.flush(sink).await?;
        Ok(failure)
    }
}

/// Body chunks received ahead of the writer at most (hyper's are at most
/// its 408 KiB buffer, mostly 16-64 KiB: a few MiB in the worst case).
const AHEAD: usize = 16;

/// What the receiving task hands on: the next chunk, the body's end
/// (`None`), or why it broke off.
type Received = Result<Option<bytes::Bytes>, String>;

/// Ends the receiving task (and so drops its response, closing the
/// connection) when the download stops listening to it.
struct Pump(tokio::task::JoinHandle<()>);

impl Drop for Pump {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Receive `resp`'s body on a task of its own, [`AHEAD`] chunks ahead:
/// the socket is read while the previous batch is written (a `ChunkSink`
/// write blocks its task, and hyper reads the body only when asked), so
/// receiving and writing overlap instead of taking turns. An idle body
/// (no bytes for `idle`) is a break, as before.
fn pump(
    mut resp: reqwest::Response,
    idle: Duration,
) -> (tokio::sync::mpsc::Receiver<Received>, Pump) {
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    let task = tokio::spawn(async move {
        loop {
            let next = match tokio::time::timeout(idle, resp.chunk()).await {
                Err(_) => Err(format!("no data for {}s", idle.as_secs())),
                Ok(Err(e)) => Err(error_chain(&e)),
                Ok(Ok(c)) => Ok(c),
            };
            let more = matches!(next, Ok(Some(_)));
            if tx.send(next).await.is_err() || !more {
                return;
            }
        }
    });
    (rx, Pump(task))
}

/// Where [`Http::download_from`] continues a payload.
#[derive(Debug)]
pub struct Continue {
    /// Bytes the sink already has: `[0, offset)`.
    pub offset: u64,
    /// `If-Range`'s value: the strong ETag or `Last-Modified` those bytes
    /// came with.
    pub if_range: String,
    /// The config's digest, fed `[0, offset)` already.
    pub verifier: Option<StreamVerifier>,
}

/// The state of one download across its attempts.
struct Transfer {
    /// The URL, redacted.
    name: String,
    verify: Check,
    verifier: BackgroundVerifier,
    /// Declared size, else the first response's Content-Length.
    expected: Option<u64>,
    /// Bytes written to the sink.
    offset: u64,
    /// What `If-Range` sends on resume: a strong ETag or Last-Modified.
    validator: Option<String>,
    /// The batch being received.
    buf: Vec<u8>,
    /// What the last response said (its URL, validators).
    fetched: Fetched,
}

impl Transfer {
    fn new(url: &str, expected: Option<u64>, verify: Check) -> Self {
        let name = redact(url);
        let verifier = BackgroundVerifier::new(verify.verifier(&name), BATCH);
        Self {
            name,
            verify,
            verifier,
            expected,
            offset: 0,
            validator: None,
            buf: Vec::with_capacity(BATCH),
            fetched: Fetched::default(),
        }
    }

    /// Check a response against the transfer: a resumed one must continue
    /// at our offset; a full one restarts the payload and must agree with
    /// the expected size.
    fn accept(
        &mut self,
        resp: &reqwest::Response,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), HttpError> {
        let headers = resp.headers();
        self.fetched = Fetched {
            digest: None,
            final_url: redact(resp.url().as_str()),
            etag: header(headers, ETAG),
            last_modified: header(headers, LAST_MODIFIED),
        };
        let resume = self.offset > 0;
        if resume && resp.status() == StatusCode::PARTIAL_CONTENT {
            let start = header(headers, CONTENT_RANGE).and_then(|v| {
                v.strip_prefix("bytes ")
                    .and_then(|r| r.split('-').next())
                    .and_then(|s| s.trim().parse::<u64>().ok())
            });
            if start != Some(self.offset) {
                return Err(HttpError::Transport {
                    url: self.name.clone(),
                    message: format!(
                        "resume at {}: unexpected Content-Range {:?}",
                        self.offset,
                        header(headers, CONTENT_RANGE)
                    ),
                });
            }
            return Ok(());
        }
        if resume {
            // The server ignored Range (or the resource changed): start over.
            if !sink.restart() {
                return Err(HttpError::Transport {
                    url: self.name.clone(),
                    message: "the server does not support resuming and this stream can not restart"
                        .into(),
                });
            }
            self.offset = 0;
            self.verifier = BackgroundVerifier::new(self.verify.verifier(&self.name), BATCH);
        }
        match (self.expected, content_length(headers)) {
            (Some(d), Some(s)) if d != s => {
                return Err(HttpError::SizeMismatch {
                    url: self.name.clone(),
                    server: s,
                    declared: d,
                })
            }
            (None, Some(s)) => self.expected = Some(s),
            (None, None) => {
                return Err(HttpError::NoSize {
                    url: self.name.clone(),
                })
            }
            _ => {}
        }
        self.validator = header(headers, ETAG)
            .filter(|e| !e.starts_with("W/"))
            .or_else(|| header(headers, LAST_MODIFIED));
        Ok(())
    }

    /// Write the batch at its offset, then hash it in the background while
    /// the next one is received ([`BackgroundVerifier`]); the batch comes
    /// back empty.
    async fn flush(&mut self, sink: &mut dyn ChunkSink) -> Result<(), HttpError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // Disk writes are blocking: run them off the async workers' hot path.
        tokio::task::block_in_place(|| sink.write(self.offset, &self.buf)).map_err(|source| {
            HttpError::Sink {
                url: self.name.clone(),
                source,
            }
        })?;
        self.offset += self.buf.len() as u64;
        self.buf = self.verifier.submit(std::mem::take(&mut self.buf)).await;
        Ok(())
    }

    /// The error after the last attempt.
    fn gave_up(self, failure: Option<String>, attempts: u32) -> HttpError {
        let (offset, total) = (self.offset, self.expected.unwrap_or(0));
        match failure {
            Some(message) => HttpError::Broken {
                url: self.name,
                message: format!("{message} (at byte {offset} of {total}, {attempts} attempts)"),
            },
            None => HttpError::Short {
                url: self.name,
                got: offset,
                expected: total,
                attempts,
            },
        }
    }
}

/// An error and its sources, `: `-separated (reqwest hides the cause in them).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The first whitespace-separated token of a checksum file (`md5sum` /
/// MirrorBrain format `digest  filename`).
pub fn first_token(body: &[u8]) -> Option<String> {
    String::from_utf8_lossy(body)
        .split_whitespace()
        .next()
        .map(str::to_ascii_lowercase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert_eq!(
            first_token(b"ABC123  file.zim\n").as_deref(),
            Some("abc123")
        );
        assert_eq!(first_token(b"  \n"), None);
    }
}
