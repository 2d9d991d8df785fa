//! Why a datagram was dropped.
//!
//! # Example
//!
//! ```
//! use realip_core::PeerAddr;
//! use realip_listener::udp::{DatagramError, UdpPolicy};
//!
//! let peer = PeerAddr::from("192.0.2.9:5000".parse::<std::net::SocketAddr>().unwrap());
//! let err = DatagramError::Forbidden { peer, policy: UdpPolicy::Reject };
//! assert_eq!(err.reason(), "forbidden");
//! assert_eq!(err.to_string(), "192.0.2.9:5000: PROXY header from a source whose policy is reject");
//! ```

use std::io;

use realip_core::PeerAddr;

use super::policy::UdpPolicy;
use super::spp::SppError;
use crate::error::HeaderError;

/// Why one datagram was not delivered, or why receiving failed.
///
/// Every variant but [`Io`](Self::Io) names the datagram's socket source. A dropped
/// datagram is that datagram's error, never the socket's: receiving goes on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatagramError {
    /// A PROXY v2 header that is malformed, oversized or fails its checksum.
    #[error("{peer}: {source}")]
    Header {
        /// The socket source.
        peer: PeerAddr,
        /// What was wrong.
        #[source]
        source: HeaderError,
    },
    /// A datagram that ends inside the PROXY v2 header it starts with (a datagram cannot
    /// continue in the next one).
    #[error("{peer}: datagram of {len} bytes ends inside its PROXY header")]
    Truncated {
        /// The socket source.
        peer: PeerAddr,
        /// The datagram's length.
        len: usize,
    },
    /// A datagram without a valid SPP header from a source whose policy is SPP.
    #[error("{peer}: {source}")]
    Spp {
        /// The socket source.
        peer: PeerAddr,
        /// What was wrong.
        #[source]
        source: SppError,
    },
    /// A datagram that starts with a PROXY header from a source that must not send one.
    #[error("{peer}: PROXY header from a source whose policy is {policy}")]
    Forbidden {
        /// The socket source.
        peer: PeerAddr,
        /// The source's policy.
        policy: UdpPolicy,
    },
    /// A datagram without the PROXY v2 header its source's policy requires on every
    /// datagram.
    #[error("{peer}: no PROXY header, required on every datagram by policy {policy}")]
    Missing {
        /// The socket source.
        peer: PeerAddr,
        /// The source's policy.
        policy: UdpPolicy,
    },
    /// A datagram without a header from a proxy address and port that has no live flow
    /// (never started, idle for too long, or evicted at the flow cap).
    #[error("{peer}: no PROXY header and no live flow from this address and port")]
    NoFlow {
        /// The socket source.
        peer: PeerAddr,
    },
    /// Receiving from the socket failed.
    #[error("receive error: {0}")]
    Io(#[source] io::Error),
}

impl DatagramError {
    /// The socket source of the dropped datagram (`None` for [`Io`](Self::Io)).
    pub fn peer(&self) -> Option<&PeerAddr> {
        match self {
            Self::Header { peer, .. }
            | Self::Truncated { peer, .. }
            | Self::Spp { peer, .. }
            | Self::Forbidden { peer, .. }
            | Self::Missing { peer, .. }
            | Self::NoFlow { peer } => Some(peer),
            Self::Io(_) => None,
        }
    }

    /// A short machine-readable reason: `malformed` (a bad v2 or SPP header, or a datagram
    /// that ends inside its header), `forbidden`, `missing`, `no-flow`, `io`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Header { .. } | Self::Truncated { .. } | Self::Spp { .. } => "malformed",
            Self::Forbidden { .. } => "forbidden",
            Self::Missing { .. } => "missing",
            Self::NoFlow { .. } => "no-flow",
            Self::Io(_) => "io",
        }
    }
}
