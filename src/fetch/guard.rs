//! The network policy ([`NetworkPolicy`]) enforced on reqwest, at the
//! three places a destination address is decided:
//!
//! - a host name is resolved by [`CheckedResolver`] (through [`Dns`], not
//!   the C library), once per connection:
//!   every address is checked and reqwest is handed only the allowed
//!   ones, so the connection goes to a checked address (a DNS answer that
//!   changes between a check and a connect — rebinding — can't happen);
//! - an IP-literal host is never given to a resolver (hyper connects to it
//!   directly), so [`check_url`] checks it before every request, and
//! - [`redirect_policy`] checks every redirect hop the same way ([`check_hop`]),
//!   at most [`MAX_REDIRECTS`] of them.
//!
//! Refusals happen before any connection is attempted.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use super::dns::{Dns, DnsConfig, DnsConfigError};
use super::policy::{NetworkPolicy, Refusal};

/// Longest redirect chain followed: 10 hops (reqwest's and curl's
/// browsers' usual figure; mirrors chain two or three).
pub const MAX_REDIRECTS: usize = 10;

/// Why a URL may not be requested.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// The address is refused by the policy.
    #[error("{0}")]
    Refused(#[from] Refusal),
    /// Not http or https (a redirect to `file:`, `ftp:`...).
    #[error("scheme {0:?} is not allowed (http and https only)")]
    Scheme(String),
    /// No host in the URL.
    #[error("no host in the URL")]
    NoHost,
    /// Redirected more than [`MAX_REDIRECTS`] times.
    #[error("more than {limit} redirects (the limit of a redirect chain)")]
    TooManyRedirects {
        /// The limit.
        limit: usize,
    },
    /// The URL does not parse.
    #[error("not a valid URL: {0}")]
    BadUrl(String),
}

/// A refusal found on a redirect hop, with the hop's URL.
#[derive(Debug, Clone, thiserror::Error)]
#[error("redirected to {url}: {blocked}")]
pub struct HopBlocked {
    /// The URL redirected to (credentials redacted).
    pub url: String,
    /// Why it is not followed.
    pub blocked: Blocked,
}

/// Check a URL before it is requested: http(s), and an IP-literal host
/// allowed by `policy` (names are checked when they are resolved).
pub fn check_url(policy: NetworkPolicy, url: &Url) -> Result<(), Blocked> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(Blocked::Scheme(other.to_string())),
    }
    let host = url.host_str().ok_or(Blocked::NoHost)?;
    // The URL parser serializes every IPv4 form (decimal, hex, octal,
    // short) as a dotted quad and IPv6 in brackets, so every literal
    // parses here; a name is left to the resolver.
    match host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => Ok(policy.check(ip, None)?),
        Err(_) => Ok(()),
    }
}

/// [`check_url`] on a URL string.
pub fn check_url_str(policy: NetworkPolicy, url: &str) -> Result<(), Blocked> {
    let parsed = Url::parse(url).map_err(|e| Blocked::BadUrl(e.to_string()))?;
    check_url(policy, &parsed)
}

/// Check redirect hop number `hop` (1 for the first redirect) to `next`.
pub fn check_hop(policy: NetworkPolicy, next: &Url, hop: usize) -> Result<(), Blocked> {
    if hop > MAX_REDIRECTS {
        return Err(Blocked::TooManyRedirects {
            limit: MAX_REDIRECTS,
        });
    }
    check_url(policy, next)
}

/// reqwest's redirect policy: [`check_hop`] on every hop.
pub fn redirect_policy(policy: NetworkPolicy) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        // `previous` holds the first URL and every hop already followed.
        let hop = attempt.previous().len();
        match check_hop(policy, attempt.url(), hop) {
            Ok(()) => attempt.follow(),
            Err(blocked) => {
                let url = super::redact::redact(attempt.url().as_str());
                attempt.error(HopBlocked { url, blocked })
            }
        }
    })
}

/// `--resolve HOST:ADDRESS`: a name answered with a fixed address instead
/// of asking DNS (as curl's `--resolve`); the address is checked like any
/// DNS answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOverride {
    /// The name, lowercase.
    pub host: String,
    /// Its address.
    pub address: IpAddr,
}

impl std::str::FromStr for ResolveOverride {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // Host names have no ':', IPv6 addresses do: split at the first.
        let (host, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:ADDRESS"))?;
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        let address = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        if host.is_empty() {
            return Err(format!("{s:?}: empty host name"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            address,
        })
    }
}

/// The resolver reqwest uses: an override or DNS ([`Dns`]: hickory,
/// no C library), then the policy on every address.
#[derive(Debug, Clone)]
pub struct CheckedResolver {
    policy: NetworkPolicy,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
    dns_config: DnsConfig,
    /// Set up at the first lookup that needs DNS, so a build that only
    /// uses overrides and IP literals never reads `/etc/resolv.conf`.
    dns: Arc<OnceLock<Result<Dns, DnsConfigError>>>,
}

impl CheckedResolver {
    /// A resolver enforcing `policy`, with `overrides`, asking the
    /// system's DNS servers ([`DnsConfig::System`]).
    pub fn new(policy: NetworkPolicy, overrides: &[ResolveOverride]) -> Self {
        Self::with_dns(policy, overrides, DnsConfig::System)
    }

    /// The same, asking the servers of `dns`.
    pub fn with_dns(policy: NetworkPolicy, overrides: &[ResolveOverride], dns: DnsConfig) -> Self {
        let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for o in overrides {
            map.entry(o.host.clone()).or_default().push(o.address);
        }
        Self {
            policy,
            overrides: Arc::new(map),
            dns_config: dns,
            dns: Arc::new(OnceLock::new()),
        }
    }

    async fn ask_dns(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let dns = self
            .dns
            .get_or_init(|| Dns::new(&self.dns_config))
            .as_ref()
            .map_err(|e| ResolveError::Config(e.clone()))?;
        dns.lookup(host)
            .await
            .map_err(|source| ResolveError::Lookup {
                host: host.to_string(),
                source: Box::new(source),
            })
    }

    /// The addresses `host` may be connected to: every answer checked,
    /// the refused ones dropped; an error naming the first refused one
    /// when none is left.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let answers = match self.overrides.get(&host.to_ascii_lowercase()) {
            Some(addrs) => addrs.clone(),
            None => self.ask_dns(host).await?,
        };
        let mut allowed = Vec::with_capacity(answers.len());
        let mut first_refusal = None;
        for ip in answers {
            match self.policy.check(ip, Some(host)) {
                Ok(()) => allowed.push(ip),
                Err(r) => {
                    first_refusal.get_or_insert(r);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(r)) => Err(ResolveError::Refused(r)),
            (true, None) => Err(ResolveError::NoAddress {
                host: host.to_string(),
            }),
            (false, _) => Ok(allowed),
        }
    }
}

/// Why a name gave no address to connect to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address it resolves to is refused.
    #[error("{0}")]
    Refused(Refusal),
    /// DNS failed.
    #[error("resolving {host}: {source}")]
    Lookup {
        /// The name.
        host: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The DNS configuration can't be used.
    #[error("DNS configuration: {0}")]
    Config(DnsConfigError),
    /// DNS answered nothing.
    #[error("{host} resolves to no address")]
    NoAddress {
        /// The name.
        host: String,
    },
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let this = self.clone();
        Box::pin(async move {
            let ips = this.lookup(name.as_str()).await?;
            // Port 0: reqwest puts the URL's (or the scheme's) port in.
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    fn refused_address(r: Result<(), Blocked>) -> Option<IpAddr> {
        match r {
            Err(Blocked::Refused(r)) => Some(r.address),
            _ => None,
        }
    }

    #[test]
    fn literal_hosts_are_checked_in_every_form() {
        use NetworkPolicy::*;
        let meta: IpAddr = "169.254.169.254".parse().expect("ip");
        for u in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",          // decimal
            "http://0xa9fea9fe/",          // hex
            "http://0251.0376.0251.0376/", // octal
            "http://169.254.43518/",       // a.b.c with a 16-bit tail
        ] {
            assert_eq!(
                refused_address(check_url(Private, &url(u))),
                Some(meta),
                "{u}"
            );
            assert_eq!(
                refused_address(check_url(Public, &url(u))),
                Some(meta),
                "{u}"
            );
            assert!(check_url(Any, &url(u)).is_ok(), "{u}");
        }
        let mapped = url("http://[::ffff:169.254.169.254]/");
        assert!(refused_address(check_url(Private, &mapped)).is_some());
        let ec2 = url("http://[fd00:ec2::254]/");
        assert!(refused_address(check_url(Private, &ec2)).is_some());
        let lan = url("http://10.1.2.3/admin");
        assert!(check_url(Private, &lan).is_ok());
        assert!(refused_address(check_url(Public, &lan)).is_some());
        let lo = url("http://127.0.0.1:8080/");
        assert!(check_url(Private, &lo).is_ok());
        assert!(refused_address(check_url(Public, &lo)).is_some());
        // Names are left to the resolver.
        assert!(check_url(Public, &url("https://example.org/x")).is_ok());
        assert_eq!(
            check_url(Any, &url("file:///etc/hostname")),
            Err(Blocked::Scheme("file".into()))
        );
    }

    #[test]
    fn redirect_hops_are_checked_and_counted() {
        use NetworkPolicy::*;
        let next = url("http://198.51.100.7/");
        // Documentation range: refused by public only.
        assert!(check_hop(Private, &next, 1).is_ok());
        assert!(refused_address(check_hop(Public, &next, 1)).is_some());
        let meta = url("http://169.254.169.254/");
        for p in [Public, Private] {
            assert!(refused_address(check_hop(p, &meta, 3)).is_some());
        }
        assert!(refused_address(check_hop(Public, &url("http://127.0.0.1:1/"), 1)).is_some());
        assert!(refused_address(check_hop(Public, &url("http://10.0.0.1/"), 1)).is_some());
        let ok = url("https://example.org/");
        assert!(check_hop(Public, &ok, MAX_REDIRECTS).is_ok());
        assert_eq!(
            check_hop(Any, &ok, MAX_REDIRECTS + 1),
            Err(Blocked::TooManyRedirects { limit: 10 })
        );
        assert_eq!(
            check_hop(Any, &url("ftp://example.org/"), 1),
            Err(Blocked::Scheme("ftp".into()))
        );
    }

    #[test]
    fn overrides_parse() {
        let o: ResolveOverride = "Meta.Test:169.254.169.254".parse().expect("parses");
        assert_eq!(o.host, "meta.test");
        assert_eq!(o.address, "169.254.169.254".parse::<IpAddr>().expect("ip"));
        let o: ResolveOverride = "ec2.test:[fd00:ec2::254]".parse().expect("parses");
        assert_eq!(o.address, "fd00:ec2::254".parse::<IpAddr>().expect("ip"));
        let o: ResolveOverride = "ec2.test:fd00:ec2::254".parse().expect("parses");
        assert_eq!(o.address, "fd00:ec2::254".parse::<IpAddr>().expect("ip"));
        assert!("nohost".parse::<ResolveOverride>().is_err());
        assert!("h:not-an-ip".parse::<ResolveOverride>().is_err());
        assert!(":1.2.3.4".parse::<ResolveOverride>().is_err());
    }

    #[test]
    fn resolver_checks_every_answer_and_keeps_the_allowed_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let overrides: Vec<ResolveOverride> = [
            "meta.test:169.254.169.254",
            "mixed.test:127.0.0.1",
            "mixed.test:169.254.169.254",
            "lan.test:10.0.0.1",
        ]
        .iter()
        .map(|s| s.parse().expect("override"))
        .collect();
        let private = CheckedResolver::new(NetworkPolicy::Private, &overrides);
        match rt.block_on(private.lookup("META.test")) {
            Err(ResolveError::Refused(r)) => {
                assert_eq!(r.address.to_string(), "169.254.169.254");
                assert_eq!(r.host.as_deref(), Some("META.test"));
            }
            other => panic!("not refused: {other:?}"),
        }
        let mixed = rt.block_on(private.lookup("mixed.test")).expect("allowed");
        assert_eq!(mixed, vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]);
        assert!(rt.block_on(private.lookup("lan.test")).is_ok());
        let public = CheckedResolver::new(NetworkPolicy::Public, &overrides);
        assert!(matches!(
            rt.block_on(public.lookup("lan.test")),
            Err(ResolveError::Refused(_))
        ));
        assert!(matches!(
            rt.block_on(public.lookup("mixed.test")),
            Err(ResolveError::Refused(_))
        ));
        let any = CheckedResolver::new(NetworkPolicy::Any, &overrides);
        assert_eq!(rt.block_on(any.lookup("mixed.test")).expect("any").len(), 2);
    }

    #[test]
    fn dns_answers_are_checked_like_overrides() {
        use std::net::Ipv4Addr;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // One name, two answers from a DNS server on loopback: the
        // metadata address is dropped, the loopback one kept.
        let server = crate::fetch::dns::tests::fake_dns(
            vec![Ipv4Addr::LOCALHOST, Ipv4Addr::new(169, 254, 169, 254)],
            64,
        );
        let dns = DnsConfig::Servers(vec![server]);
        let private = CheckedResolver::with_dns(NetworkPolicy::Private, &[], dns.clone());
        let ips = rt
            .block_on(private.lookup("mirror.example"))
            .expect("allowed");
        assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let public = CheckedResolver::with_dns(NetworkPolicy::Public, &[], dns.clone());
        assert!(matches!(
            rt.block_on(public.lookup("mirror.example")),
            Err(ResolveError::Refused(_))
        ));
        let any = CheckedResolver::with_dns(NetworkPolicy::Any, &[], dns);
        assert_eq!(
            rt.block_on(any.lookup("mirror.example"))
                .expect("any")
                .len(),
            2
        );
    }

    #[test]
    fn overrides_never_read_the_dns_configuration() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let o: ResolveOverride = "lan.test:10.0.0.1".parse().expect("override");
        let r = CheckedResolver::new(NetworkPolicy::Private, &[o]);
        assert!(rt.block_on(r.lookup("lan.test")).is_ok());
        assert!(r.dns.get().is_none(), "resolv.conf read for an override");
    }
}
