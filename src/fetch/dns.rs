//! Host names to addresses without the C library: [hickory-resolver]
//! speaking DNS itself, so a statically linked binary in an empty root
//! (a `FROM scratch` container) resolves names with no NSS modules, no
//! `libnss_dns.so` and no `getaddrinfo`.
//!
//! Where the servers come from ([`DnsConfig`]):
//!
//! - [`RESOLV_CONF`] when it exists: its `nameserver`, `search`/`domain`,
//!   `ndots`, `timeout`, `attempts` and `edns0` lines (resolv.conf(5));
//!   a file that can't be read or names no server is an error naming it;
//! - when it does not exist, the fallback is what the C library does
//!   then (resolv.conf(5): "the default is to use the name server on the
//!   local machine"): port 53 on `127.0.0.1` and `::1`. A container
//!   runtime always provides the file; an empty chroot without it can
//!   still use `--resolve HOST:ADDRESS` or IP-literal URLs.
//!
//! `/etc/hosts` is read as well when present, and `localhost` answers
//! `127.0.0.1`/`::1` without asking anyone (RFC 6761 §6.3).
//!
//! Every answer still goes through the network policy:
//! [`super::CheckedResolver`] calls [`Dns::lookup`] and checks what it
//! returns.
//!
//! [hickory-resolver]: https://docs.rs/hickory-resolver

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::system_conf::parse_resolv_conf;
use hickory_resolver::TokioResolver;

/// The resolver configuration file read by [`DnsConfig::System`].
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// The DNS port (RFC 1035 §4.2).
const DNS_PORT: u16 = 53;

/// Where [`Dns`] sends its queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DnsConfig {
    /// [`RESOLV_CONF`], or the local-machine fallback when it is absent
    /// (the module documentation says which).
    #[default]
    System,
    /// These servers (UDP, then TCP for truncated answers), with
    /// hickory's default options.
    Servers(Vec<SocketAddr>),
}

/// Why no resolver could be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct DnsConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub message: String,
}

/// The servers and options [`Dns`] was built from, and where they came
/// from.
#[derive(Debug, Clone)]
struct Settings {
    config: ResolverConfig,
    opts: ResolverOpts,
}

impl Settings {
    /// `path` parsed; its absence gives the local-machine fallback.
    fn from_file(path: &Path) -> Result<Self, DnsConfigError> {
        let err = |message: String| DnsConfigError {
            path: path.to_path_buf(),
            message,
        };
        match std::fs::read(path) {
            Ok(text) => {
                let (config, opts) = parse_resolv_conf(text).map_err(|e| err(e.to_string()))?;
                Ok(Self { config, opts })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Self::servers(&local_servers())),
            Err(e) => Err(err(e.to_string())),
        }
    }

    fn servers(addrs: &[SocketAddr]) -> Self {
        let mut group = NameServerConfigGroup::new();
        for a in addrs {
            // UDP and TCP for each, as resolv.conf servers get them.
            group.merge(NameServerConfigGroup::from_ips_clear(
                &[a.ip()],
                a.port(),
                false,
            ));
        }
        Self {
            config: ResolverConfig::from_parts(None, vec![], group),
            opts: ResolverOpts::default(),
        }
    }

    /// The servers queried, in order (UDP and TCP entries collapsed).
    fn server_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for ns in self.config.name_servers() {
            if !out.contains(&ns.socket_addr) {
                out.push(ns.socket_addr);
            }
        }
        out
    }
}

/// The fallback when [`RESOLV_CONF`] does not exist: port 53 on this
/// machine, IPv4 then IPv6.
fn local_servers() -> Vec<SocketAddr> {
    vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT),
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), DNS_PORT),
    ]
}

/// A DNS resolver (hickory, on the tokio runtime of the caller).
#[derive(Clone)]
pub struct Dns {
    resolver: TokioResolver,
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// A resolver configured by `config`.
    pub fn new(config: &DnsConfig) -> Result<Self, DnsConfigError> {
        match config {
            DnsConfig::System => Self::from_resolv_conf(Path::new(RESOLV_CONF)),
            DnsConfig::Servers(addrs) => Ok(Self::build(Settings::servers(addrs))),
        }
    }

    /// A resolver configured by the resolv.conf at `path`, or by the
    /// local-machine fallback when `path` does not exist.
    pub fn from_resolv_conf(path: &Path) -> Result<Self, DnsConfigError> {
        Settings::from_file(path).map(Self::build)
    }

    fn build(settings: Settings) -> Self {
        let servers = settings.server_addrs();
        let mut builder =
            TokioResolver::builder_with_config(settings.config, TokioConnectionProvider::default());
        *builder.options_mut() = settings.opts;
        Self {
            resolver: builder.build(),
            servers,
        }
    }

    /// The servers queried, in order.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Every address of `host` (A and AAAA records, `/etc/hosts`).
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, hickory_resolver::ResolveError> {
        let answer = self.resolver.lookup_ip(host).await?;
        Ok(answer.iter().collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::UdpSocket;

    /// A DNS server on loopback answering every A query with `answers`
    /// and every other query with no record; its thread stops after
    /// `max_queries` queries.
    pub(crate) fn fake_dns(answers: Vec<Ipv4Addr>, max_queries: usize) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let addr = sock.local_addr().expect("local addr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..max_queries {
                let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                    return;
                };
                if let Some(reply) = reply(&buf[..n], &answers) {
                    let _ = sock.send_to(&reply, peer);
                }
            }
        });
        addr
    }

    /// The answer to `query` (RFC 1035 §4.1): its header and question,
    /// then one A record per address for a type-A question.
    fn reply(query: &[u8], answers: &[Ipv4Addr]) -> Option<Vec<u8>> {
        // The question: labels up to the zero length, then QTYPE, QCLASS.
        let mut end = 12;
        while *query.get(end)? != 0 {
            end += usize::from(*query.get(end)?) + 1;
        }
        let qtype = u16::from_be_bytes([*query.get(end + 1)?, *query.get(end + 2)?]);
        let question = query.get(12..end + 5)?;
        let records: &[Ipv4Addr] = if qtype == 1 { answers } else { &[] };
        let mut out = Vec::new();
        out.extend_from_slice(query.get(0..2)?); // ID
        out.extend_from_slice(&[0x81, 0x80]); // QR, RD, RA; NOERROR
        out.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
        out.extend_from_slice(&u16::try_from(records.len()).ok()?.to_be_bytes()); // ANCOUNT
        out.extend_from_slice(&[0, 0, 0, 0]); // NSCOUNT, ARCOUNT
        out.extend_from_slice(question);
        for ip in records {
            out.extend_from_slice(&[0xc0, 0x0c]); // name: pointer to the question
            out.extend_from_slice(&[0, 1, 0, 1]); // TYPE A, CLASS IN
            out.extend_from_slice(&60u32.to_be_bytes()); // TTL
            out.extend_from_slice(&4u16.to_be_bytes()); // RDLENGTH
            out.extend_from_slice(&ip.octets());
        }
        Some(out)
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn queries_the_configured_server() {
        let server = fake_dns(vec![Ipv4Addr::new(192, 0, 2, 7)], 16);
        let dns = Dns::new(&DnsConfig::Servers(vec![server])).expect("dns");
        let ips = rt().block_on(dns.lookup("mirror.example")).expect("lookup");
        assert_eq!(ips, vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))]);
    }

    #[test]
    fn localhost_needs_no_server() {
        // A server that never answers: localhost must not reach it.
        let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = silent.local_addr().expect("addr");
        let dns = Dns::new(&DnsConfig::Servers(vec![addr])).expect("dns");
        let ips = rt().block_on(dns.lookup("localhost")).expect("lookup");
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)), "{ips:?}");
    }

    #[test]
    fn resolv_conf_is_read_and_its_absence_falls_back_to_this_machine() {
        let dir = tempfile::tempdir().expect("tmp");
        let conf = dir.path().join("resolv.conf");
        std::fs::write(
            &conf,
            "# comment\nsearch lan\nnameserver 192.0.2.53\nnameserver 2001:db8::53\noptions ndots:2\n",
        )
        .expect("write");
        let dns = Dns::from_resolv_conf(&conf).expect("parses");
        let want: Vec<SocketAddr> = vec![
            "192.0.2.53:53".parse().expect("addr"),
            "[2001:db8::53]:53".parse().expect("addr"),
        ];
        assert_eq!(dns.servers(), want.as_slice());

        let missing = Dns::from_resolv_conf(&dir.path().join("absent")).expect("fallback");
        assert_eq!(missing.servers(), local_servers().as_slice());

        std::fs::write(&conf, "search lan\n").expect("write");
        let e = Dns::from_resolv_conf(&conf).expect_err("no nameserver");
        assert_eq!(e.path, conf);
        assert!(e.to_string().contains("resolv.conf"), "{e}");
    }
}
