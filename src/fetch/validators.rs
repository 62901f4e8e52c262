//! Outdatedness checks of cached downloads: what the server says of a URL
//! now, walked hop by hop so the MirrorBrain `Digest` on a redirect is seen
//! (each mirror has its own ETag), conditionally where the server supports
//! it.

use reqwest::header::{ACCEPT_ENCODING, ETAG, LAST_MODIFIED, LOCATION};
use reqwest::StatusCode;

use super::guard::{check_hop, HopBlocked, MAX_REDIRECTS};
use super::http::{check_headers, content_length, header, Http, HttpError};
use super::redact::redact;

/// `Digest` (RFC 3230), which MirrorBrain sends on its redirects, e.g.
/// `SHA-256=…`.
const DIGEST: &str = "digest";

/// What the server says of a URL now, for outdatedness checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteValidators {
    /// The first `Digest` header on the way (the redirector's).
    pub digest: Option<String>,
    /// The final answer's `ETag`.
    pub etag: Option<String>,
    /// Its `Last-Modified`.
    pub last_modified: Option<String>,
    /// Its `Content-Length`.
    pub size: Option<u64>,
    /// The server answered a conditional request `304 Not Modified`.
    pub not_modified: bool,
}

impl Http {
    /// What the server says of `url` now, to tell whether a cached copy is
    /// outdated: `HEAD` hop by hop (at most [`MAX_REDIRECTS`]), keeping the
    /// first MirrorBrain `Digest` header seen on the way (each mirror has
    /// its own ETag, the redirector's digest is the content's), and the
    /// final answer's size, `ETag` and `Last-Modified`.
    /// `conditional` headers (`If-None-Match`, `If-Modified-Since`) are
    /// sent on every hop: a `304 Not Modified` ends the walk with
    /// [`RemoteValidators::not_modified`].
    pub async fn validators(
        &self,
        url: &str,
        conditional: &[(&str, String)],
    ) -> Result<RemoteValidators, HttpError> {
        let mut cur = reqwest::Url::parse(url).map_err(|e| HttpError::Transport {
            url: redact(url),
            message: format!("not a URL: {e}"),
        })?;
        let mut digest = None;
        self.check_url(url)?;
        for hop in 1..=MAX_REDIRECTS + 1 {
            // One attempt per hop: a check is best-effort (a failed one
            // keeps the cached copy), so no retries.
            let mut rq = self
                .no_redirect
                .head(cur.clone())
                .header(ACCEPT_ENCODING, "identity");
            for (name, value) in conditional {
                rq = rq.header(*name, value.as_str());
            }
            let sent = rq.send();
            let r = tokio::time::timeout(self.opts.idle_timeout, sent)
                .await
                .map_err(|_| HttpError::Transport {
                    url: redact(url),
                    message: "timed out waiting for a response".into(),
                })?
                .map_err(|e| HttpError::from_reqwest(url, &e))?;
            check_headers(url, r.headers())?;
            if r.status() == StatusCode::NOT_MODIFIED {
                return Ok(RemoteValidators {
                    digest,
                    not_modified: true,
                    ..RemoteValidators::default()
                });
            }
            if !(r.status().is_success() || r.status().is_redirection()) {
                return Err(HttpError::Status {
                    url: redact(url),
                    status: r.status().as_u16(),
                });
            }
            let h = r.headers();
            digest = digest.or_else(|| header(h, reqwest::header::HeaderName::from_static(DIGEST)));
            if r.status().is_redirection() {
                let Some(next) = header(h, LOCATION).and_then(|l| cur.join(&l).ok()) else {
                    break;
                };
                // Each hop is checked, as the redirect policy checks them.
                check_hop(self.opts.network, &next, hop).map_err(|blocked| {
                    HttpError::BlockedRedirect {
                        url: redact(url),
                        hop: HopBlocked {
                            url: redact(next.as_str()),
                            blocked,
                        },
                    }
                })?;
                cur = next;
                continue;
            }
            return Ok(RemoteValidators {
                digest,
                etag: header(h, ETAG),
                last_modified: header(h, LAST_MODIFIED),
                size: content_length(h),
                not_modified: false,
            });
        }
        Err(HttpError::Transport {
            url: redact(url),
            message: format!("more than {MAX_REDIRECTS} redirects"),
        })
    }
}
