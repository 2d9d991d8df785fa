//! Which header format datagrams from each source carry.
//!
//! Like the TCP [`Policy`](crate::Policy), the format is chosen per datagram from its
//! socket source: a [`UdpPolicySource`] maps a [`PeerAddr`] to a [`UdpPolicy`].
//!
//! # Example
//!
//! ```
//! use realip_core::{PeerAddr, TrustedProxies};
//! use realip_listener::udp::{UdpPolicy, UdpPolicySource};
//!
//! // Cloudflare's SPP from the proxies; everybody else must not send a header.
//! let source = UdpPolicySource::trusted("10.0.0.0/8".parse::<TrustedProxies>().unwrap(), UdpPolicy::Spp);
//! let proxy = PeerAddr::from("10.1.2.3:4000".parse::<std::net::SocketAddr>().unwrap());
//! let other = PeerAddr::from("192.0.2.1:4000".parse::<std::net::SocketAddr>().unwrap());
//! assert_eq!(source.policy_for(&proxy), UdpPolicy::Spp);
//! assert_eq!(source.policy_for(&other), UdpPolicy::Reject);
//! assert_eq!("v2-flow".parse::<UdpPolicy>().unwrap(), UdpPolicy::V2PerFlow);
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use realip_core::{PeerAddr, TrustedProxies};

use crate::policy::Selector;

/// The header format of the datagrams from one source.
///
/// | policy | header | client of a datagram without one |
/// |--------|--------|----------------------------------|
/// | `V2PerFlow` | PROXY v2 on the first datagram of each flow (same proxy address and port) | the flow's client, until it is idle for the flow timeout; dropped when there is no live flow |
/// | `V2PerDatagram` | PROXY v2 on every datagram | dropped |
/// | `Spp` | Simple Proxy Protocol on every datagram; replies carry it back | dropped |
/// | `Reject` | none: a datagram that starts with the PROXY v2 signature is dropped | the socket source |
///
/// With `V2PerFlow`, every datagram that starts with the 12-byte v2 signature is read as a
/// header (and restarts the flow). The specification (section 2.2) chose the signature so
/// that common protocols' data does not start with it; a client payload that does would be
/// read as a header, and dropped as malformed unless it is one.
///
/// `Reject` looks for the 12-byte v2 signature only: SPP's two-byte magic number is common at
/// the start of other protocols' datagrams (a QUIC short header can begin with `0x56`), so
/// presence of SPP cannot be guessed. Such a datagram is delivered as payload with the socket
/// source as its client, which no one can forge.
///
/// ```
/// use realip_listener::udp::UdpPolicy;
/// assert_eq!(UdpPolicy::default(), UdpPolicy::V2PerFlow);
/// assert_eq!("none".parse::<UdpPolicy>().unwrap(), UdpPolicy::Reject);
/// assert_eq!(UdpPolicy::Spp.to_string(), "spp");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UdpPolicy {
    /// PROXY v2 on the first datagram of each proxy flow (Cloudflare Spectrum's
    /// `proxy_protocol = v2` on a UDP application). The default.
    #[default]
    V2PerFlow,
    /// PROXY v2 on every datagram.
    V2PerDatagram,
    /// Cloudflare's Simple Proxy Protocol on every datagram, and on every reply.
    Spp,
    /// No header: a datagram that starts with one is dropped; others are delivered with the
    /// socket source as the client.
    Reject,
}

impl UdpPolicy {
    /// The lowercase name: `v2-flow`, `v2-datagram`, `spp`, `reject`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V2PerFlow => "v2-flow",
            Self::V2PerDatagram => "v2-datagram",
            Self::Spp => "spp",
            Self::Reject => "reject",
        }
    }
}

impl fmt::Display for UdpPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`UdpPolicy`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown UDP header format {0:?}: expected v2-flow, v2-datagram, spp or none")]
pub struct ParseUdpPolicyError(String);

impl FromStr for UdpPolicy {
    type Err = ParseUdpPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "v2-flow" | "v2" => Ok(Self::V2PerFlow),
            "v2-datagram" => Ok(Self::V2PerDatagram),
            "spp" | "simple" => Ok(Self::Spp),
            "none" | "reject" => Ok(Self::Reject),
            _ => Err(ParseUdpPolicyError(s.to_owned())),
        }
    }
}

/// Chooses the [`UdpPolicy`] of each datagram from its socket source.
#[derive(Clone)]
pub struct UdpPolicySource(Selector<UdpPolicy>);

impl UdpPolicySource {
    /// The same policy for every source.
    pub const fn fixed(policy: UdpPolicy) -> Self {
        Self(Selector::Fixed(policy))
    }

    /// `policy` for sources in `trusted`, [`UdpPolicy::Reject`] for everyone else: only
    /// trusted proxies may send a header, a datagram with one from anyone else is dropped,
    /// and their datagrams without one are delivered with the socket source.
    pub fn trusted(trusted: TrustedProxies, policy: UdpPolicy) -> Self {
        Self(Selector::Trusted(Arc::new(trusted), policy))
    }

    /// A function of the socket source.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&PeerAddr) -> UdpPolicy + Send + Sync + 'static,
    {
        Self(Selector::Fn(Arc::new(f)))
    }

    /// The policy for a datagram from `peer`.
    pub fn policy_for(&self, peer: &PeerAddr) -> UdpPolicy {
        self.0.select(peer, UdpPolicy::Reject)
    }
}

impl Default for UdpPolicySource {
    /// [`UdpPolicy::V2PerFlow`] for every source (as the TCP default requires a header
    /// from every peer).
    fn default() -> Self {
        Self::fixed(UdpPolicy::V2PerFlow)
    }
}

impl From<UdpPolicy> for UdpPolicySource {
    fn from(policy: UdpPolicy) -> Self {
        Self::fixed(policy)
    }
}

impl fmt::Debug for UdpPolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
