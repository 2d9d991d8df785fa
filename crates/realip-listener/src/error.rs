//! Why a header or a connection was refused.
//!
//! [`HeaderError`] is a problem with the header bytes; [`HandshakeError`] is one
//! connection's failure, naming the socket peer. Neither ever ends the listener.
//!
//! # Example
//!
//! ```
//! use realip_listener::{HeaderError, parse_header};
//!
//! // A v1 header whose CRLF does not come within 107 bytes.
//! let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
//! let err = parse_header(&long, 4096).unwrap_err();
//! assert!(matches!(err, HeaderError::Oversized { .. }));
//! assert!(err.to_string().contains("107"));
//! ```

use std::io;
use std::time::Duration;

use realip_core::PeerAddr;

use crate::policy::Policy;

/// A malformed, oversized or otherwise unacceptable PROXY protocol header.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The bytes start with neither the v1 nor the v2 signature.
    #[error("no PROXY protocol signature")]
    Signature,
    /// The header is longer than allowed (v1: 107 bytes; v2: the configured cap).
    #[error("header of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// The header's length (v2), or `max + 1` for a v1 line whose CRLF does not come
        /// within `max` bytes (the same however the bytes were split).
        len: usize,
        /// The maximum allowed.
        max: usize,
    },
    /// A v2 version nibble other than 2.
    #[error("unsupported v2 version {0:#x}")]
    Version(u8),
    /// A v2 command nibble other than LOCAL (0) or PROXY (1).
    #[error("invalid v2 command {0:#x}")]
    Command(u8),
    /// A v2 address family nibble that is not defined.
    #[error("invalid v2 address family {0:#x}")]
    Family(u8),
    /// A v2 transport nibble that is not defined.
    #[error("invalid v2 transport {0:#x}")]
    Transport(u8),
    /// The v2 length is too short for the announced address family.
    #[error("v2 length {len} is too short for a {need}-byte address block")]
    AddressBlock {
        /// The header's length field.
        len: usize,
        /// The address block size of the family.
        need: usize,
    },
    /// A v1 line with a CR not followed by LF, or an LF without CR.
    #[error("v1 header has a lone CR or LF")]
    LineBreak,
    /// A v1 header that does not parse.
    #[error("invalid v1 header: {0}")]
    V1(String),
    /// A v2 header that does not parse.
    #[error("invalid v2 header: {0}")]
    V2(String),
    /// A TLV whose length runs past the end of the header (or of its parent TLV).
    #[error("TLV of type {kind:#04x} at offset {offset} overruns the header")]
    TlvOverrun {
        /// The TLV type byte.
        kind: u8,
        /// Offset of the TLV from the start of the header.
        offset: usize,
    },
    /// A TLV whose value does not fit its type (a CRC32C not 4 bytes long, a short SSL TLV, ...).
    #[error("TLV of type {kind:#04x} has an invalid length {len}")]
    TlvLength {
        /// The TLV type byte.
        kind: u8,
        /// Its value length.
        len: usize,
    },
    /// The CRC32C TLV does not match the header.
    #[error("CRC32C mismatch: header says {expected:#010x}, computed {computed:#010x}")]
    Crc32c {
        /// The checksum in the header.
        expected: u32,
        /// The checksum of the received bytes.
        computed: u32,
    },
}

/// Why one accepted connection was closed before it reached the application.
///
/// Every variant names the socket peer. See [`ProxyListener::try_accept`] for how to
/// receive them; by default they are only logged.
///
/// ```
/// use realip_core::PeerAddr;
/// use realip_listener::{HandshakeError, HeaderError};
///
/// let peer = PeerAddr::from("192.0.2.9:5000".parse::<std::net::SocketAddr>().unwrap());
/// let err = HandshakeError::Header { peer, source: HeaderError::Crc32c { expected: 1, computed: 2 } };
/// assert_eq!(err.reason(), "crc32c");
/// assert!(err.to_string().starts_with("192.0.2.9:5000: CRC32C mismatch"));
/// assert!(!err.is_quiet());
/// ```
///
/// [`ProxyListener::try_accept`]: crate::listener::ProxyListener::try_accept
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The peer closed (or reset) the connection without sending a byte (a load
    /// balancer's probe).
    #[error("{peer}: closed without sending anything")]
    Closed {
        /// The socket peer.
        peer: PeerAddr,
    },
    /// The peer closed the connection in the middle of the header.
    #[error("{peer}: closed in the middle of the PROXY header ({received} bytes received)")]
    Truncated {
        /// The socket peer.
        peer: PeerAddr,
        /// Bytes received before the close.
        received: usize,
    },
    /// No complete header arrived within the header timeout.
    #[error("{peer}: no complete PROXY header within {timeout:?}")]
    Timeout {
        /// The socket peer.
        peer: PeerAddr,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The header was malformed, oversized or failed its checksum.
    #[error("{peer}: {source}")]
    Header {
        /// The socket peer.
        peer: PeerAddr,
        /// What was wrong.
        #[source]
        source: HeaderError,
    },
    /// The policy for this peer requires a header and none was sent.
    #[error("{peer}: PROXY header required but the connection does not start with one")]
    Missing {
        /// The socket peer.
        peer: PeerAddr,
    },
    /// The policy for this peer forbids a header and one was sent.
    #[error("{peer}: PROXY header sent by a peer whose policy is {policy}")]
    Forbidden {
        /// The socket peer.
        peer: PeerAddr,
        /// The peer's policy.
        policy: Policy,
    },
    /// Reading from the socket failed.
    #[error("{peer}: read error: {source}")]
    Io {
        /// The socket peer.
        peer: PeerAddr,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// How many reasons [`HandshakeError::logged_reason_slot`] tells apart.
pub(crate) const LOGGED_REASONS: usize = 8;

impl HandshakeError {
    /// The socket peer of the failed connection.
    pub fn peer(&self) -> &PeerAddr {
        match self {
            Self::Closed { peer }
            | Self::Truncated { peer, .. }
            | Self::Timeout { peer, .. }
            | Self::Header { peer, .. }
            | Self::Missing { peer }
            | Self::Forbidden { peer, .. }
            | Self::Io { peer, .. } => peer,
        }
    }

    /// A short machine-readable reason: `closed`, `truncated`, `timeout`, `oversized`,
    /// `crc32c`, `invalid`, `missing`, `forbidden`, `io`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Truncated { .. } => "truncated",
            Self::Timeout { .. } => "timeout",
            Self::Header {
                source: HeaderError::Oversized { .. },
                ..
            } => "oversized",
            Self::Header {
                source: HeaderError::Crc32c { .. },
                ..
            } => "crc32c",
            Self::Header { .. } => "invalid",
            Self::Missing { .. } => "missing",
            Self::Forbidden { .. } => "forbidden",
            Self::Io { .. } => "io",
        }
    }

    /// Where [`reason`](Self::reason) stands among the [`LOGGED_REASONS`] reasons logged
    /// above `debug`, for state kept per reason (the listener's log limits); `None` for
    /// `closed`, which is logged at `debug` only.
    pub(crate) const fn logged_reason_slot(&self) -> Option<usize> {
        Some(match self {
            Self::Closed { .. } => return None,
            Self::Truncated { .. } => 0,
            Self::Timeout { .. } => 1,
            Self::Header {
                source: HeaderError::Oversized { .. },
                ..
            } => 2,
            Self::Header {
                source: HeaderError::Crc32c { .. },
                ..
            } => 3,
            Self::Header { .. } => 4,
            Self::Missing { .. } => 5,
            Self::Forbidden { .. } => 6,
            Self::Io { .. } => 7,
        })
    }

    /// The header error, for [`HandshakeError::Header`].
    pub fn header_error(&self) -> Option<&HeaderError> {
        match self {
            Self::Header { source, .. } => Some(source),
            _ => None,
        }
    }

    /// Whether this is routine (a probe that closed without sending anything) and logged
    /// at `debug` rather than `warn`.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Self::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every reason logged above `debug` has a slot of its own, and `closed` none.
    #[test]
    fn each_logged_reason_has_its_own_slot() {
        let peer = || PeerAddr::Unix(None);
        let header = |source| HandshakeError::Header {
            peer: peer(),
            source,
        };
        let errors = [
            HandshakeError::Truncated {
                peer: peer(),
                received: 3,
            },
            HandshakeError::Timeout {
                peer: peer(),
                timeout: Duration::from_secs(3),
            },
            header(HeaderError::Oversized {
                len: 5000,
                max: 4096,
            }),
            header(HeaderError::Crc32c {
                expected: 1,
                computed: 2,
            }),
            header(HeaderError::Signature),
            HandshakeError::Missing { peer: peer() },
            HandshakeError::Forbidden {
                peer: peer(),
                policy: Policy::Reject,
            },
            HandshakeError::Io {
                peer: peer(),
                source: io::ErrorKind::ConnectionReset.into(),
            },
        ];
        let mut seen = std::collections::BTreeMap::new();
        for err in &errors {
            let slot = err.logged_reason_slot().expect("logged above debug");
            assert!(slot < LOGGED_REASONS, "{}", err.reason());
            assert_eq!(seen.insert(slot, err.reason()), None, "{}", err.reason());
        }
        assert_eq!(seen.len(), LOGGED_REASONS);
        assert_eq!(
            HandshakeError::Closed { peer: peer() }.logged_reason_slot(),
            None
        );
    }
}
