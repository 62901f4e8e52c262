//! The network edge: the HTTP client (retries, resume, size caps, digests
//! checked off the receive path), [`Net`], the client with its runtime,
//! and the network policy every request obeys ([`NetworkPolicy`]: the
//! address classifier in `policy`, its enforcement on reqwest in `guard`).

mod dns;
mod guard;
mod http;
mod net;
mod overlap;
mod policy;
mod redact;
mod roots;
mod validators;

pub use dns::{Dns, DnsConfig, DnsConfigError, RESOLV_CONF};
pub use guard::{
    check_hop, check_url, Blocked, CheckedResolver, HopBlocked, ResolveError, ResolveOverride,
    MAX_REDIRECTS,
};
pub use http::{
    check_headers, error_chain, first_token, Continue, FetchOptions, Fetched, Http, HttpError,
    Probe, BATCH, MAX_HEADERS, MAX_HEAD_BYTES,
};
pub use net::Net;
pub use policy::{classify, embedded_v4, AddressClass, NetworkPolicy, Refusal};
pub use redact::redact;
pub use roots::{trust_roots, RootsSource, TrustRoots};
pub use validators::RemoteValidators;
