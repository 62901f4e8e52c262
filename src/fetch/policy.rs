//! Where requests may go (`--network public|private|any`): a pure
//! classifier of IP addresses ([`classify`]) and the policy that allows or
//! refuses each class ([`NetworkPolicy`]).
//!
//! The classes follow the IANA special-purpose address registries
//! (RFC 6890 and its updates). Addresses that carry an IPv4 address
//! (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
//! `64:ff9b::/96`, 6to4 `2002::/16`) are classified by the IPv4 address
//! they lead to, so a refused IPv4 range can't be reached in IPv6 form.
//!
//! Decisions beyond the list (docs/spec.md §9): `0.0.0.0/8`,
//! `240.0.0.0/4`, `255.255.255.255`, `192.0.0.0/24`, `100::/64`,
//! `2001::/23`, IPv6 outside `2000::/3`, and the documentation and
//! benchmarking ranges are never globally reachable, so `public` refuses
//! them too and `private` allows them (they are not the cloud-metadata
//! class). Alibaba Cloud's metadata service, `100.100.100.200` (inside
//! CGNAT), and AWS's IPv6 one, `fd00:ec2::254` (inside ULA), are in the
//! metadata class with link-local.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What an address is, for the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Globally reachable.
    Global,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 (`10/8`, `172.16/12`, `192.168/16`), ULA `fc00::/7`,
    /// the deprecated site-local `fec0::/10` and local-use NAT64
    /// `64:ff9b:1::/48`.
    Private,
    /// Shared address space for carrier-grade NAT, `100.64.0.0/10`.
    SharedCgnat,
    /// Link-local `169.254.0.0/16` (cloud metadata lives at
    /// `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// A cloud metadata service outside link-local: `fd00:ec2::254`
    /// (AWS, IPv6), `100.100.100.200` (Alibaba Cloud).
    Metadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `192.0.2/24`, `198.51.100/24`, `203.0.113/24`, `2001:db8::/32`,
    /// `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15`.
    Benchmarking,
    /// Never routed: `0.0.0.0/8` ("this network"), `192.0.0.0/24` (IETF
    /// protocol assignments), `240.0.0.0/4`, `100::/64` (discard),
    /// `2001::/23` (IETF protocol assignments: Teredo, ORCHID...), and
    /// IPv6 outside global unicast `2000::/3` not listed elsewhere.
    Reserved,
}

impl AddressClass {
    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Global => "a public address",
            Self::Loopback => "loopback",
            Self::Private => "a private network address",
            Self::SharedCgnat => "carrier-grade NAT shared space",
            Self::LinkLocal => "link-local (the cloud metadata class)",
            Self::Metadata => "a cloud metadata service",
            Self::Multicast => "multicast",
            Self::Unspecified => "unspecified",
            Self::Broadcast => "broadcast",
            Self::Documentation => "a documentation range",
            Self::Benchmarking => "a benchmarking range",
            Self::Reserved => "a reserved range",
        }
    }
}

/// `a.b.c.d` is in `net/len`.
fn in4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// `ip` is in `net/len`.
fn in6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    let net = Ipv6Addr::new(
        net[0], net[1], net[2], net[3], net[4], net[5], net[6], net[7],
    );
    u128::from(ip) & mask == u128::from(net) & mask
}

/// The class of an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    use AddressClass::*;
    let ranges: [([u8; 4], u32, AddressClass); 18] = [
        // Most specific first: the metadata hosts inside wider ranges.
        ([100, 100, 100, 200], 32, Metadata),
        ([0, 0, 0, 0], 32, Unspecified),
        ([255, 255, 255, 255], 32, Broadcast),
        ([0, 0, 0, 0], 8, Reserved),
        ([10, 0, 0, 0], 8, Private),
        ([100, 64, 0, 0], 10, SharedCgnat),
        ([127, 0, 0, 0], 8, Loopback),
        ([169, 254, 0, 0], 16, LinkLocal),
        ([172, 16, 0, 0], 12, Private),
        ([192, 0, 0, 0], 24, Reserved),
        ([192, 0, 2, 0], 24, Documentation),
        ([192, 168, 0, 0], 16, Private),
        ([198, 18, 0, 0], 15, Benchmarking),
        ([198, 51, 100, 0], 24, Documentation),
        ([203, 0, 113, 0], 24, Documentation),
        ([224, 0, 0, 0], 4, Multicast),
        ([240, 0, 0, 0], 4, Reserved),
        // (Global otherwise.)
        ([0, 0, 0, 0], 0, Global),
    ];
    ranges
        .iter()
        .find(|(net, len, _)| in4(ip, *net, *len))
        .map_or(Global, |(_, _, c)| *c)
}

/// The IPv4 address an IPv6 address leads to, when it embeds one:
/// IPv4-mapped `::ffff:0:0/96`, IPv4-compatible `::/96` (deprecated, but
/// still parsed by resolvers), NAT64 `64:ff9b::/96` and 6to4 `2002::/16`.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |a: u16, b: u16| {
        let [a1, a2] = a.to_be_bytes();
        let [b1, b2] = b.to_be_bytes();
        Ipv4Addr::new(a1, a2, b1, b2)
    };
    if in6(ip, [0, 0, 0, 0, 0, 0xffff, 0, 0], 96)
        || in6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)
        || in6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
    {
        return Some(low(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(low(s[1], s[2]));
    }
    None
}

/// The class of an IPv6 address.
pub fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    use AddressClass::*;
    if ip == Ipv6Addr::UNSPECIFIED {
        return Unspecified;
    }
    if ip == Ipv6Addr::LOCALHOST {
        return Loopback;
    }
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let ranges: [([u16; 8], u32, AddressClass); 11] = [
        ([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128, Metadata),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Private),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Reserved),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Documentation),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Reserved),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Documentation),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Private),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Private),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Multicast),
        // Global unicast is 2000::/3; IANA has allocated nothing else.
        ([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, Global),
    ];
    ranges
        .iter()
        .find(|(net, len, _)| in6(ip, *net, *len))
        .map_or(Reserved, |(_, _, c)| *c)
}

/// The class of an address.
pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// `--network`: where requests may go, checked on every address a name
/// resolves to, every IP-literal URL and every redirect hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NetworkPolicy {
    /// Only globally reachable addresses: for services that build
    /// configs written by others.
    Public,
    /// Everything but link-local and cloud metadata (the default): local
    /// test servers and LAN mirrors keep working.
    #[default]
    Private,
    /// Everything.
    Any,
}

impl NetworkPolicy {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::Any => "any",
        }
    }

    /// True when requests may go to an address of `class`.
    pub fn allows(self, class: AddressClass) -> bool {
        match self {
            Self::Any => true,
            Self::Private => !matches!(class, AddressClass::LinkLocal | AddressClass::Metadata),
            Self::Public => class == AddressClass::Global,
        }
    }

    /// `Ok` when `ip` may be connected to; else why not. `host` is the
    /// name that resolved to it (None for an IP-literal URL).
    pub fn check(self, ip: IpAddr, host: Option<&str>) -> Result<(), Refusal> {
        let class = classify(ip);
        if self.allows(class) {
            Ok(())
        } else {
            Err(Refusal {
                host: host.map(str::to_string),
                address: ip,
                class,
                policy: self,
            })
        }
    }
}

impl std::str::FromStr for NetworkPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "public" => Ok(Self::Public),
            "private" => Ok(Self::Private),
            "any" => Ok(Self::Any),
            other => Err(format!(
                "unknown network policy {other:?} (public, private or any)"
            )),
        }
    }
}

impl fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An address the policy refuses; no connection was attempted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("address {address}{} is {}; refused by --network {policy}", host_suffix(.host), .class.describe())]
pub struct Refusal {
    /// The name that resolved to it, if any.
    pub host: Option<String>,
    /// The address.
    pub address: IpAddr,
    /// Its class.
    pub class: AddressClass,
    /// The policy that refused it.
    pub policy: NetworkPolicy,
}

fn host_suffix(host: &Option<String>) -> String {
    host.as_ref()
        .map(|h| format!(" (resolved from {h})"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    fn v4(s: &str) -> AddressClass {
        classify(s.parse().expect("test address"))
    }

    #[test]
    fn ipv4_ranges_and_their_edges() {
        let cases = [
            ("0.0.0.0", Unspecified),
            ("0.0.0.1", Reserved),
            ("0.255.255.255", Reserved),
            ("1.0.0.0", Global),
            ("9.255.255.255", Global),
            ("10.0.0.0", Private),
            ("10.255.255.255", Private),
            ("11.0.0.0", Global),
            ("100.63.255.255", Global),
            ("100.64.0.0", SharedCgnat),
            ("100.100.100.199", SharedCgnat),
            ("100.100.100.200", Metadata),
            ("100.100.100.201", SharedCgnat),
            ("100.127.255.255", SharedCgnat),
            ("100.128.0.0", Global),
            ("126.255.255.255", Global),
            ("127.0.0.0", Loopback),
            ("127.0.0.1", Loopback),
            ("127.255.255.255", Loopback),
            ("128.0.0.0", Global),
            ("169.253.255.255", Global),
            ("169.254.0.0", LinkLocal),
            ("169.254.169.254", LinkLocal),
            ("169.254.255.255", LinkLocal),
            ("169.255.0.0", Global),
            ("172.15.255.255", Global),
            ("172.16.0.0", Private),
            ("172.31.255.255", Private),
            ("172.32.0.0", Global),
            ("191.255.255.255", Global),
            ("192.0.0.0", Reserved),
            ("192.0.0.255", Reserved),
            ("192.0.1.0", Global),
            ("192.0.2.0", Documentation),
            ("192.0.2.255", Documentation),
            ("192.0.3.0", Global),
            ("192.167.255.255", Global),
            ("192.168.0.0", Private),
            ("192.168.255.255", Private),
            ("192.169.0.0", Global),
            ("198.17.255.255", Global),
            ("198.18.0.0", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.20.0.0", Global),
            ("198.51.99.255", Global),
            ("198.51.100.0", Documentation),
            ("198.51.100.255", Documentation),
            ("198.51.101.0", Global),
            ("203.0.112.255", Global),
            ("203.0.113.0", Documentation),
            ("203.0.113.255", Documentation),
            ("203.0.114.0", Global),
            ("223.255.255.255", Global),
            ("224.0.0.0", Multicast),
            ("239.255.255.255", Multicast),
            ("240.0.0.0", Reserved),
            ("255.255.255.254", Reserved),
            ("255.255.255.255", Broadcast),
            ("8.8.8.8", Global),
        ];
        for (a, c) in cases {
            assert_eq!(v4(a), c, "{a}");
        }
    }

    #[test]
    fn ipv6_ranges_and_their_edges() {
        let cases = [
            ("::", Unspecified),
            ("::1", Loopback),
            ("::2", Reserved), // ::0.0.0.2, IPv4-compatible: 0.0.0.0/8
            ("fc00::", Private),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
            ("fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
            ("fe00::", Reserved),
            ("fd00:ec2::254", Metadata),
            ("fd00:ec2::253", Private),
            ("fd00:ec2::255", Private),
            ("fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
            ("fe80::", LinkLocal),
            ("fe80::1", LinkLocal),
            ("febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", LinkLocal),
            ("fec0::", Private),
            ("feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Private),
            ("ff00::", Multicast),
            ("ff02::1", Multicast),
            ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Multicast),
            ("2001:db8::", Documentation),
            ("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", Documentation),
            ("2001:db9::", Global),
            ("2001::", Reserved),
            ("2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
            ("2001:200::", Global),
            ("3fff::", Documentation),
            ("3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", Documentation),
            ("3fff:1000::", Global),
            ("100::", Reserved),
            ("100::ffff:ffff:ffff:ffff", Reserved),
            ("100:0:0:1::", Reserved),
            ("1fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Reserved),
            ("2000::", Global),
            ("3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Global),
            ("4000::", Reserved),
            ("64:ff9b:1::", Private),
            ("64:ff9b:1:ffff:ffff:ffff:ffff:ffff", Private),
            ("2606:4700::1111", Global),
            ("2a00:1450:4007:80e::200e", Global),
        ];
        for (a, c) in cases {
            assert_eq!(v4(a), c, "{a}");
        }
    }

    #[test]
    fn ipv4_in_ipv6_forms_are_classified_by_their_ipv4_address() {
        let cases = [
            // IPv4-mapped.
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.1.2.3", Private),
            ("::ffff:172.16.0.1", Private),
            ("::ffff:192.168.1.1", Private),
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:a9fe:a9fe", LinkLocal),
            ("::ffff:100.64.0.1", SharedCgnat),
            ("::ffff:100.100.100.200", Metadata),
            ("::ffff:224.0.0.1", Multicast),
            ("::ffff:0.0.0.0", Unspecified),
            ("::ffff:255.255.255.255", Broadcast),
            ("::ffff:8.8.8.8", Global),
            // IPv4-compatible (deprecated).
            ("::127.0.0.1", Loopback),
            ("::169.254.169.254", LinkLocal),
            ("::10.0.0.1", Private),
            ("::8.8.8.8", Global),
            // NAT64 well-known prefix.
            ("64:ff9b::169.254.169.254", LinkLocal),
            ("64:ff9b::127.0.0.1", Loopback),
            ("64:ff9b::8.8.8.8", Global),
            // 6to4.
            ("2002:a9fe:a9fe::", LinkLocal),
            ("2002:0a00:0001::1", Private),
            ("2002:0808:0808::1", Global),
            // Just outside the mapped prefix: an ordinary reserved v6 address.
            ("::fffe:a9fe:a9fe", Reserved),
        ];
        for (a, c) in cases {
            assert_eq!(v4(a), c, "{a}");
        }
    }

    #[test]
    fn policies() {
        let all = [
            Global,
            Loopback,
            Private,
            SharedCgnat,
            LinkLocal,
            Metadata,
            Multicast,
            Unspecified,
            Broadcast,
            Documentation,
            Benchmarking,
            Reserved,
        ];
        for c in all {
            assert!(NetworkPolicy::Any.allows(c), "any {c:?}");
            assert_eq!(NetworkPolicy::Public.allows(c), c == Global, "public {c:?}");
            assert_eq!(
                NetworkPolicy::Private.allows(c),
                !matches!(c, LinkLocal | Metadata),
                "private {c:?}"
            );
        }
        assert_eq!(NetworkPolicy::default(), NetworkPolicy::Private);
    }

    #[test]
    fn refusal_names_the_address_and_the_policy() {
        let ip: IpAddr = "169.254.169.254".parse().expect("ip");
        let e = NetworkPolicy::Private
            .check(ip, Some("metadata.test"))
            .expect_err("refused");
        assert_eq!(
            e.to_string(),
            "address 169.254.169.254 (resolved from metadata.test) is link-local (the cloud metadata class); refused by --network private"
        );
        assert!(NetworkPolicy::Any.check(ip, None).is_ok());
    }
}
