//! A registry client for the HTTP API v2 (docs/spec.md §5): anonymous bearer
//! tokens, manifests, manifest lists / OCI indexes, configs and blobs.
//! Loopback registries (`localhost`, 127.0.0.0/8, `::1`) are spoken to over
//! plain HTTP, as Docker does by default; every other one over HTTPS.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::StatusCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::platform::Platform;
use super::OciError;
use crate::config::{HashAlgo, OciReference};
use crate::fetch::{Http, HttpError};
use crate::io::{hex, ChunkSink};

/// What we accept for a manifest: indexes/lists first, then image manifests.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest, index or config read: 4 MiB (the distribution
/// spec's manifest size limit; configs are a few KiB).
pub const MAX_JSON: usize = 4 << 20;

/// Largest token response read: 64 KiB (Docker Hub's and GHCR's JSON
/// tokens are 1–5 KiB; a few JWTs with long claims still fit).
pub const MAX_TOKEN: usize = 64 << 10;

/// Longest wait for one small JSON request (the same figure as the
/// default idle timeout of downloads).
const JSON_TIMEOUT: Duration = Duration::from_secs(60);

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// tar+gzip.
    Gzip,
    /// tar+zstd.
    Zstd,
}

/// One layer of a resolved image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Blob digest (`sha256:…`).
    pub digest: String,
    /// Blob size.
    pub size: u64,
    /// Compression, from the media type.
    pub compression: Compression,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
}

/// An image resolved for one platform: everything but the layer bytes.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The reference.
    pub reference: OciReference,
    /// The requested platform.
    pub platform: Platform,
    /// Digest of the index (manifest list) the reference named, when it
    /// named one (not when pulled by a manifest's digest).
    pub index_digest: Option<String>,
    /// Digest of the platform's image manifest.
    pub manifest_digest: String,
    /// The config JSON, exactly as served.
    pub config: Vec<u8>,
    /// Its digest.
    pub config_digest: String,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
}

impl Resolved {
    /// `registry/repository/name:tag` for messages.
    pub fn name(&self) -> String {
        self.reference.repo_tag()
    }
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Deserialize)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct ManifestJson {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct TokenJson {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// `sha256:<hex>` of bytes.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(data)))
}

/// The hex part of a `sha256:` digest (the only algorithm registries use
/// in practice); anything else is refused, as is malformed hex.
pub fn sha256_hex<'a>(image: &str, digest: &'a str) -> Result<&'a str, OciError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(h),
        _ => Err(OciError::Unsupported {
            image: image.to_string(),
            what: format!("digest {digest:?} (only sha256 is supported)"),
        }),
    }
}

fn check_digest(image: &str, what: &str, expected: &str, data: &[u8]) -> Result<(), OciError> {
    sha256_hex(image, expected)?;
    let actual = sha256_digest(data);
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(OciError::DigestMismatch {
            image: image.to_string(),
            what: what.to_string(),
            expected: expected.to_string(),
            actual,
        })
    }
}

fn compression(image: &str, media_type: &str) -> Result<Compression, OciError> {
    match media_type {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Ok(Compression::Gzip),
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.docker.image.rootfs.diff.tar.zstd" => Ok(Compression::Zstd),
        other => Err(OciError::Unsupported {
            image: image.to_string(),
            what: format!("layer media type {other:?}"),
        }),
    }
}

/// True for hosts Docker talks plain HTTP to by default.
fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host == "::1"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Base URL of a registry's API.
pub fn api_base(registry: &str) -> String {
    if registry == "index.docker.io" {
        // Docker Hub's API host.
        return "https://registry-1.docker.io".to_string();
    }
    if is_loopback(registry) {
        format!("http://{registry}")
    } else {
        format!("https://{registry}")
    }
}

/// `key="value"` pairs of a `WWW-Authenticate: Bearer …` challenge.
fn parse_challenge(h: &str) -> Option<HashMap<String, String>> {
    let rest = h.trim().strip_prefix("Bearer ")?;
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(out)
}

/// The registry client; cheap to share, tokens cached per repository.
#[derive(Debug)]
pub struct Registry {
    http: Http,
    tokens: Mutex<HashMap<String, String>>,
}

impl Registry {
    /// A client over the build's HTTP client.
    pub fn new(http: Http) -> Self {
        Self {
            http,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    fn key(r: &OciReference) -> String {
        format!("{}/{}/{}", r.registry, r.repository, r.name)
    }

    fn auth(&self, r: &OciReference) -> Option<String> {
        self.tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&Self::key(r)).cloned())
    }

    fn url(r: &OciReference, what: &str) -> String {
        format!(
            "{}/v2/{}/{}/{what}",
            api_base(&r.registry),
            r.repository,
            r.name
        )
    }

    /// GET a small body, answering a 401 bearer challenge once.
    async fn get_small(
        &self,
        r: &OciReference,
        url: &str,
        accept: Option<&str>,
    ) -> Result<(Vec<u8>, Option<String>), OciError> {
        let mut tried_token = false;
        loop {
            let mut rq = self.http.get(url)?;
            if let Some(a) = accept {
                rq = rq.header(ACCEPT, a);
            }
            if let Some(t) = self.auth(r) {
                rq = rq.header(AUTHORIZATION, t);
            }
            let resp = read_small(rq, url, MAX_JSON).await?;
            let (status, headers, body) = resp;
            if status == StatusCode::UNAUTHORIZED && !tried_token {
                tried_token = true;
                let challenge = headers
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                self.fetch_token(r, &challenge).await?;
                continue;
            }
            if !status.is_success() {
                return Err(HttpError::Status {
                    url: url.to_string(),
                    status: status.as_u16(),
                }
                .into());
            }
            let ct = headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Ok((body, ct));
        }
    }

    /// Anonymous token for `repository:<repo>/<name>:pull`.
    async fn fetch_token(&self, r: &OciReference, challenge: &str) -> Result<(), OciError> {
        let image = r.repo_tag();
        let params = parse_challenge(challenge).ok_or_else(|| OciError::Registry {
            image: image.clone(),
            message: format!(
                "the registry asks for credentials ({challenge:?}); only anonymous pulls are supported"
            ),
        })?;
        let realm = params.get("realm").ok_or_else(|| OciError::Registry {
            image: image.clone(),
            message: format!("bearer challenge without realm: {challenge:?}"),
        })?;
        let mut url = reqwest::Url::parse(realm).map_err(|e| OciError::Registry {
            image: image.clone(),
            message: format!("bad token realm {realm:?}: {e}"),
        })?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = params.get("service") {
                q.append_pair("service", s);
            }
            q.append_pair(
                "scope",
                &format!("repository:{}/{}:pull", r.repository, r.name),
            );
        }
        // The realm is the registry's word: checked by the policy like
        // any URL (and its redirects by the client's redirect policy).
        let rq = self.http.get(url.as_str())?;
        let (status, _, body) = read_small(rq, url.as_str(), MAX_TOKEN).await?;
        if !status.is_success() {
            return Err(HttpError::Status {
                url: url.to_string(),
                status: status.as_u16(),
            }
            .into());
        }
        let t: TokenJson = serde_json::from_slice(&body).map_err(|e| OciError::Registry {
            image: image.clone(),
            message: format!("token response from {realm}: {e}"),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .ok_or_else(|| OciError::Registry {
                image,
                message: format!("token response from {realm} holds no token"),
            })?;
        if let Ok(mut m) = self.tokens.lock() {
            m.insert(Self::key(r), format!("Bearer {token}"));
        }
        Ok(())
    }

    async fn manifest(
        &self,
        r: &OciReference,
        reference: &str,
    ) -> Result<(Vec<u8>, ManifestJson), OciError> {
        let url = Self::url(r, &format!("manifests/{reference}"));
        let (body, ct) = self.get_small(r, &url, Some(MANIFEST_ACCEPT)).await?;
        if reference.contains(':') {
            check_digest(&r.repo_tag(), "manifest", reference, &body)?;
        }
        let m = parse_manifest(&r.repo_tag(), reference, &body, ct)?;
        Ok((body, m))
    }

    /// Resolve `r` for `platform`: pick the platform's manifest from an
    /// index, fetch the config, check its platform, pair layers with
    /// diff_ids. Every document is checked against its digest.
    pub async fn resolve(
        &self,
        r: &OciReference,
        platform: &Platform,
    ) -> Result<Resolved, OciError> {
        self.resolve_at(r, platform, None).await
    }

    /// [`Registry::resolve`], at the manifest digest `pin` when given
    /// (`--locked`: the platform's manifest the lock names, whatever the
    /// tag names now; checked against its digest like any document).
    pub async fn resolve_at(
        &self,
        r: &OciReference,
        platform: &Platform,
        pin: Option<&str>,
    ) -> Result<Resolved, OciError> {
        let image = r.repo_tag();
        let reference = pin
            .map(str::to_string)
            .or_else(|| r.digest.clone())
            .unwrap_or_else(|| r.tag.clone());
        let (body, m) = self.manifest(r, &reference).await?;
        let mut manifest_digest = sha256_digest(&body);
        let mut index_digest = None;
        let m = match choose_manifest(&image, m, platform)? {
            ManifestStep::Image(m) => m,
            ManifestStep::Platform(digest) => {
                index_digest = Some(std::mem::replace(&mut manifest_digest, digest));
                let (_, single) = self.manifest(r, &manifest_digest).await?;
                match choose_manifest(&image, single, platform)? {
                    ManifestStep::Image(m) => m,
                    ManifestStep::Platform(_) => {
                        return Err(OciError::Unsupported {
                            image,
                            what: "an index nested in an index".into(),
                        })
                    }
                }
            }
        };
        let config_digest = config_digest(&image, &manifest_digest, &m)?;
        let config_url = Self::url(r, &format!("blobs/{config_digest}"));
        let (config, _) = self.get_small(r, &config_url, None).await?;
        check_digest(&image, "config", &config_digest, &config)?;
        let layers = pair_layers(&image, &manifest_digest, &m, &config, platform)?;
        Ok(Resolved {
            reference: r.clone(),
            platform: platform.clone(),
            index_digest,
            manifest_digest,
            config_digest,
            config,
            layers,
        })
    }

    /// Make sure a valid token is cached: re-reads the platform manifest,
    /// and a 401 (no token yet, or an expired one) fetches a new one.
    pub async fn authenticate(&self, img: &Resolved) -> Result<(), OciError> {
        self.manifest(&img.reference, &img.manifest_digest)
            .await
            .map(|_| ())
    }

    /// Stream a layer blob into `sink`, at most `layer.size` bytes, its
    /// digest checked at the end (by the download itself).
    pub async fn blob(
        &self,
        r: &OciReference,
        layer: &Layer,
        sink: &mut dyn ChunkSink,
    ) -> Result<(), OciError> {
        let hex = sha256_hex(&r.repo_tag(), &layer.digest)?.to_ascii_lowercase();
        let url = Self::url(r, &format!("blobs/{}", layer.digest));
        let auth = self.auth(r);
        self.http
            .download_auth(
                &url,
                auth.as_deref(),
                Some(layer.size),
                crate::io::Check::declared(Some((HashAlgo::Sha256, hex))),
                sink,
            )
            .await?;
        Ok(())
    }
}

/// Where a manifest document leads.
enum ManifestStep {
    /// An index: the digest of the platform's manifest, to fetch next
    /// (checked to be a well-formed sha256 digest).
    Platform(String),
    /// An image manifest.
    Image(ManifestJson),
}

/// Parse a manifest or index `body` (fetched as `reference`; `ct` is the
/// response's Content-Type).
fn parse_manifest(
    image: &str,
    reference: &str,
    body: &[u8],
    ct: Option<String>,
) -> Result<ManifestJson, OciError> {
    let mut m: ManifestJson = serde_json::from_slice(body).map_err(|e| OciError::Registry {
        image: image.to_string(),
        message: format!("manifest {reference}: {e}"),
    })?;
    if m.media_type.is_none() {
        m.media_type = ct;
    }
    Ok(m)
}

/// For an index, the manifest of `platform`; an image manifest as is.
fn choose_manifest(
    image: &str,
    mut m: ManifestJson,
    platform: &Platform,
) -> Result<ManifestStep, OciError> {
    let Some(list) = m.manifests.take() else {
        return Ok(ManifestStep::Image(m));
    };
    let of = |p: &PlatformJson| Platform::new(&p.os, &p.architecture, p.variant.as_deref());
    let chosen = list.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| platform.matches(&of(p)))
    });
    let Some(chosen) = chosen else {
        let available: Vec<String> = list
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| of(p).to_string())
            .filter(|p| p != "unknown/unknown")
            .collect();
        return Err(OciError::NoPlatform {
            image: image.to_string(),
            wanted: platform.to_string(),
            available: available.join(", "),
        });
    };
    // Checked before it goes into a URL (and so that the manifest is
    // always verified against it).
    sha256_hex(image, &chosen.digest)?;
    Ok(ManifestStep::Platform(chosen.digest.clone()))
}

/// The config digest of image manifest `m`, checked to be well formed.
fn config_digest(image: &str, manifest_digest: &str, m: &ManifestJson) -> Result<String, OciError> {
    let config_desc = m.config.as_ref().ok_or_else(|| OciError::Registry {
        image: image.to_string(),
        message: format!("manifest {manifest_digest} has no config"),
    })?;
    sha256_hex(image, &config_desc.digest)?;
    Ok(config_desc.digest.clone())
}

/// Check the image `config` is for `platform` and pair the manifest's
/// layers with its `diff_ids`.
fn pair_layers(
    image: &str,
    manifest_digest: &str,
    m: &ManifestJson,
    config: &[u8],
    platform: &Platform,
) -> Result<Vec<Layer>, OciError> {
    let c: ConfigJson = serde_json::from_slice(config).map_err(|e| OciError::Registry {
        image: image.to_string(),
        message: format!("config of {manifest_digest}: {e}"),
    })?;
    let has = Platform::new(&c.os, &c.architecture, c.variant.as_deref());
    if !platform.matches(&has) {
        return Err(OciError::NoPlatform {
            image: image.to_string(),
            wanted: platform.to_string(),
            available: has.to_string(),
        });
    }
    if c.rootfs.diff_ids.len() != m.layers.len() {
        return Err(OciError::Registry {
            image: image.to_string(),
            message: format!(
                "manifest {manifest_digest} lists {} layers but its config {} diff_ids",
                m.layers.len(),
                c.rootfs.diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::with_capacity(m.layers.len());
    for (d, diff_id) in m.layers.iter().zip(c.rootfs.diff_ids) {
        sha256_hex(image, &d.digest)?;
        sha256_hex(image, &diff_id)?;
        layers.push(Layer {
            digest: d.digest.clone(),
            size: d.size,
            compression: compression(image, &d.media_type)?,
            diff_id,
        });
    }
    Ok(layers)
}

/// What the registry documents of one image say for `platform`, without
/// the network: `first` is the manifest or index fetched for the tag;
/// `platform_manifest` is called with a digest when `first` is an index;
/// `config` is the image config. Digests are not checked here (the
/// client checks each document against its digest as it arrives). For
/// the fuzz targets and tests; [`Registry::resolve`] runs the same steps.
pub fn resolve_documents(
    image: &str,
    first: &[u8],
    platform_manifest: impl FnOnce(&str) -> Vec<u8>,
    config: &[u8],
    platform: &Platform,
) -> Result<Vec<Layer>, OciError> {
    let m = parse_manifest(image, "tag", first, None)?;
    let (digest, m) = match choose_manifest(image, m, platform)? {
        ManifestStep::Image(m) => (sha256_digest(first), m),
        ManifestStep::Platform(d) => {
            let body = platform_manifest(&d);
            match choose_manifest(image, parse_manifest(image, &d, &body, None)?, platform)? {
                ManifestStep::Image(m) => (d, m),
                ManifestStep::Platform(_) => {
                    return Err(OciError::Unsupported {
                        image: image.to_string(),
                        what: "an index nested in an index".into(),
                    })
                }
            }
        }
    };
    config_digest(image, &digest, &m)?;
    pair_layers(image, &digest, &m, config, platform)
}

type Small = (StatusCode, reqwest::header::HeaderMap, Vec<u8>);

/// Send `rq` (a GET of `url`) and read its body, at most `limit` bytes.
async fn read_small(
    rq: reqwest::RequestBuilder,
    url: &str,
    limit: usize,
) -> Result<Small, OciError> {
    let transport = |message: String| HttpError::Transport {
        url: url.to_string(),
        message,
    };
    let fut = async {
        let mut resp = rq
            .send()
            .await
            .map_err(|e| HttpError::from_reqwest(url, &e))?;
        crate::fetch::check_headers(url, resp.headers())?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(c) = resp
            .chunk()
            .await
            .map_err(|e| transport(crate::fetch::error_chain(&e)))?
        {
            if body.len() + c.len() > limit {
                return Err(HttpError::BodyTooLarge {
                    url: url.to_string(),
                    limit: limit as u64,
                });
            }
            body.extend_from_slice(&c);
        }
        Ok((status, headers, body))
    };
    Ok(tokio::time::timeout(JSON_TIMEOUT, fut)
        .await
        .map_err(|_| transport("timed out".into()))??)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_plain_http() {
        assert_eq!(api_base("localhost:5000"), "http://localhost:5000");
        assert_eq!(api_base("127.0.0.1:5000"), "http://127.0.0.1:5000");
        assert_eq!(api_base("127.3.4.5"), "http://127.3.4.5");
        assert_eq!(api_base("[::1]:5000"), "http://[::1]:5000");
        assert_eq!(api_base("ghcr.io"), "https://ghcr.io");
        assert_eq!(api_base("128.0.0.1:80"), "https://128.0.0.1:80");
        assert_eq!(api_base("index.docker.io"), "https://registry-1.docker.io");
    }

    #[test]
    fn bearer_challenge() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        )
        .expect("bearer");
        assert_eq!(c["realm"], "https://auth.docker.io/token");
        assert_eq!(c["service"], "registry.docker.io");
        assert_eq!(c["scope"], "repository:library/nginx:pull,push");
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
    }

    #[test]
    fn media_types() {
        assert_eq!(
            compression("i", "application/vnd.oci.image.layer.v1.tar+zstd").ok(),
            Some(Compression::Zstd)
        );
        assert!(compression(
            "i",
            "application/vnd.oci.image.layer.nondistributable.v1.tar"
        )
        .is_err());
    }
}
