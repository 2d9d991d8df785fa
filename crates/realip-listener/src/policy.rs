//! Whether a connection must, may, or must not start with a PROXY header.
//!
//! The policy is chosen per connection from the socket peer's address, as
//! `go-proxyproto` does: a [`PolicySource`] maps a [`PeerAddr`] to a [`Policy`].
//!
//! # Example
//!
//! ```
//! use realip_core::{PeerAddr, TrustedProxies};
//! use realip_listener::{Policy, PolicySource};
//!
//! // Headers only from the load balancers; everybody else must not send one.
//! let source = PolicySource::trusted("10.0.0.0/8".parse::<TrustedProxies>().unwrap(), Policy::Require);
//! let lb = PeerAddr::from("10.1.2.3:4000".parse::<std::net::SocketAddr>().unwrap());
//! let other = PeerAddr::from("192.0.2.1:4000".parse::<std::net::SocketAddr>().unwrap());
//! assert_eq!(source.policy_for(&lb), Policy::Require);
//! assert_eq!(source.policy_for(&other), Policy::Reject);
//! assert_eq!("optional".parse::<Policy>().unwrap(), Policy::Optional);
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use realip_core::{PeerAddr, TrustedProxies};

/// What to do with a PROXY header on one connection.
///
/// `Optional`, `Ignore` and `Reject` decide from the first bytes the client sends, so they
/// suit protocols where the client speaks first (HTTP, MQTT, TLS). A client of a
/// server-speaks-first protocol (SMTP, MySQL) sends nothing and would be closed at the
/// header timeout: use `Require` (behind a proxy) or `Skip` for such peers.
///
/// ```
/// use realip_listener::Policy;
/// assert_eq!(Policy::default(), Policy::Require);
/// assert_eq!("skip".parse::<Policy>().unwrap().to_string(), "skip");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Policy {
    /// A valid header must come first; a connection without one is closed. The default.
    #[default]
    Require,
    /// Use a header if the connection starts with one, else use the socket address. Only
    /// sensible for peers that are trusted proxies (anyone else could forge a header).
    Optional,
    /// Read and discard a header if present; always use the socket address.
    Ignore,
    /// Close the connection if it starts with a header; otherwise use the socket address.
    Reject,
    /// Do not look at the bytes at all: the connection is handed over without waiting
    /// for a byte, with the socket address.
    Skip,
}

impl Policy {
    /// The lowercase name: `require`, `optional`, `ignore`, `reject`, `skip`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::Optional => "optional",
            Self::Ignore => "ignore",
            Self::Reject => "reject",
            Self::Skip => "skip",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Policy`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown PROXY policy {0:?}: expected require, optional, ignore, reject or skip")]
pub struct ParsePolicyError(String);

impl FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "require" | "required" => Ok(Self::Require),
            "optional" | "use" => Ok(Self::Optional),
            "ignore" => Ok(Self::Ignore),
            "reject" => Ok(Self::Reject),
            "skip" => Ok(Self::Skip),
            _ => Err(ParsePolicyError(s.to_owned())),
        }
    }
}

type SelectFn<P> = dyn Fn(&PeerAddr) -> P + Send + Sync;

/// A policy chosen from the socket peer: the inside of [`PolicySource`] and of the UDP
/// policy source, which differ only in their policy type.
#[derive(Clone)]
pub(crate) enum Selector<P> {
    Fixed(P),
    Trusted(Arc<TrustedProxies>, P),
    Fn(Arc<SelectFn<P>>),
}

impl<P: Copy> Selector<P> {
    /// The policy for `peer`; `untrusted` for a peer outside a trusted set.
    pub(crate) fn select(&self, peer: &PeerAddr, untrusted: P) -> P {
        match self {
            Self::Fixed(policy) => *policy,
            Self::Trusted(set, policy) if set.contains_peer(peer) => *policy,
            Self::Trusted(..) => untrusted,
            Self::Fn(f) => f(peer),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for Selector<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(policy) => f.debug_tuple("Fixed").field(policy).finish(),
            Self::Trusted(set, policy) => f
                .debug_struct("Trusted")
                .field("trusted", set)
                .field("policy", policy)
                .finish(),
            Self::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

/// Chooses the [`Policy`] of each connection from its socket peer.
#[derive(Clone)]
pub struct PolicySource(Selector<Policy>);

impl PolicySource {
    /// The same policy for every peer.
    pub const fn fixed(policy: Policy) -> Self {
        Self(Selector::Fixed(policy))
    }

    /// `policy` for peers in `trusted`, [`Policy::Reject`] for everyone else: only trusted
    /// proxies may send a header; a header from anyone else closes the connection, and
    /// their connections without a header are served with the socket address.
    pub fn trusted(trusted: TrustedProxies, policy: Policy) -> Self {
        Self(Selector::Trusted(Arc::new(trusted), policy))
    }

    /// A function of the socket peer.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: Fn(&PeerAddr) -> Policy + Send + Sync + 'static,
    {
        Self(Selector::Fn(Arc::new(f)))
    }

    /// The policy for a connection from `peer`.
    pub fn policy_for(&self, peer: &PeerAddr) -> Policy {
        self.0.select(peer, Policy::Reject)
    }
}

impl Default for PolicySource {
    fn default() -> Self {
        Self::fixed(Policy::Require)
    }
}

impl From<Policy> for PolicySource {
    fn from(policy: Policy) -> Self {
        Self::fixed(policy)
    }
}

impl fmt::Debug for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
