//! [`Resolution`], the decision record the middleware inserts into request extensions next
//! to the [`ClientAddr`]: who the client is, the peer whose trust was checked, and which
//! header entry decided or why none did.

use http::HeaderName;
use realip_core::{ClientAddr, PeerAddr};

use crate::parse::StopReason;
use crate::peer::Peer;

/// Where the port of a header-derived address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortSource {
    /// Written in the address entry itself (`1.2.3.4:5678`, `"[v6]:443"`).
    Entry,
    /// Taken from the port header (`X-Forwarded-Port`).
    PortHeader,
    /// Unknown.
    None,
}

/// Which header entry decided the client address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderChoice {
    pub(crate) header: HeaderName,
    pub(crate) position: usize,
    pub(crate) entries: usize,
    pub(crate) port: PortSource,
    pub(crate) stopped: Option<StopReason>,
}

impl HeaderChoice {
    /// The header that was read (lowercase).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Position of the chosen entry counted from the **right**, starting at 0 (the entry
    /// appended by the nearest proxy), over all lines of the header. Empty items (`a,,b`,
    /// or the leading one of `, 42342`) count as positions: this is the position the port
    /// is taken from in the port header.
    pub const fn position_from_right(&self) -> usize {
        self.position
    }

    /// Number of positions (entries, or elements for `Forwarded`) over all lines of the
    /// header, empty items included.
    pub const fn entries(&self) -> usize {
        self.entries
    }

    /// Position of the chosen entry counted from the left, starting at 0.
    pub const fn position_from_left(&self) -> usize {
        self.entries.saturating_sub(self.position + 1)
    }

    /// Where the port came from.
    pub const fn port_source(&self) -> PortSource {
        self.port
    }

    /// Set when the walk stopped early at the entry to the left of the chosen one, which
    /// is not an address (fail closed: the last good address reached is kept, as NGINX does).
    pub const fn stopped_by(&self) -> Option<StopReason> {
        self.stopped
    }
}

/// Why no header entry decided the client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fallback {
    /// The configured header is absent (or empty): the client is the transport peer.
    NoHeader,
    /// The header is present but the transport peer is not a trusted proxy: the header is
    /// ignored as possibly forged.
    UntrustedPeer,
    /// No transport peer is known and headers are not trusted unconditionally; no client
    /// address can be given.
    NoTransportPeer,
    /// The layer only resolves WebSocket upgrade requests and this is not one: the client
    /// is the transport peer.
    NotWebSocket,
    /// The strategy ignores headers ([`Strategy::TrustedHops`](crate::Strategy::TrustedHops) with 0 hops).
    HeadersIgnored,
    /// The first entry examined is not an address: the client is the transport peer.
    Invalid(StopReason),
    /// A single-value header arrived in several lines (`lines` of them): rejected.
    MultipleLines(usize),
    /// [`Strategy::TrustedHops`](crate::Strategy::TrustedHops): the header holds fewer non-empty entries than there are
    /// trusted hops, so the request did not pass every hop and nothing in it is believed
    /// (Envoy's `xff_num_trusted_hops` uses the downstream connection's address then): the
    /// client is the transport peer.
    TooFewHops {
        /// Non-empty entries in the header.
        entries: usize,
        /// Trusted hops configured.
        hops: usize,
    },
}

impl Fallback {
    /// A short, lowercase description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoHeader => "header absent",
            Self::UntrustedPeer => "transport peer is not a trusted proxy",
            Self::NoTransportPeer => "no transport peer known",
            Self::NotWebSocket => "not a websocket upgrade",
            Self::HeadersIgnored => "headers ignored by configuration",
            Self::Invalid(reason) => reason.as_str(),
            Self::MultipleLines(_) => "single-value header has several lines",
            Self::TooFewHops { .. } => "header has fewer entries than trusted hops",
        }
    }

    /// Whether this outcome means a header was present but rejected (a forged or broken
    /// header, logged at `warn`).
    pub const fn is_rejection(self) -> bool {
        matches!(
            self,
            Self::UntrustedPeer
                | Self::Invalid(_)
                | Self::MultipleLines(_)
                | Self::TooFewHops { .. }
        )
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client address was decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A header entry decided.
    Header(HeaderChoice),
    /// No header entry decided; the client (if any) is the transport peer.
    Fallback(Fallback),
}

/// The result of resolving one request: the client address and how it was decided.
///
/// [`RealIp`](crate::RealIp) inserts it into the request extensions next to the
/// [`ClientAddr`], so handlers and admin APIs can show which header decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resolution {
    client: Option<ClientAddr>,
    peer: Option<PeerAddr>,
    outcome: Outcome,
}

impl Resolution {
    /// The resolved client, `None` when no transport peer is known and no header applied
    /// (or the peer is a Unix socket).
    pub const fn client(&self) -> Option<&ClientAddr> {
        self.client.as_ref()
    }

    /// The transport peer the headers' trust was checked against: the socket's peer, or,
    /// behind `realip-listener`'s PROXY listener, the PROXY header's source.
    pub const fn peer(&self) -> Option<&PeerAddr> {
        self.peer.as_ref()
    }

    /// How the client was decided.
    pub const fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Consumes the resolution, returning the client address.
    pub fn into_client(self) -> Option<ClientAddr> {
        self.client
    }

    /// The transport peer is the client: no header decided.
    pub(crate) fn fallback(peer: Option<&Peer<'_>>, fallback: Fallback) -> Self {
        Self {
            client: peer.and_then(Peer::client),
            peer: peer.map(|peer| peer.addr().clone()),
            outcome: Outcome::Fallback(fallback),
        }
    }

    /// A header entry decided.
    #[inline]
    pub(crate) fn header(
        client: ClientAddr,
        peer: Option<&Peer<'_>>,
        choice: HeaderChoice,
    ) -> Self {
        Self {
            client: Some(client),
            peer: peer.map(|peer| peer.addr().clone()),
            outcome: Outcome::Header(choice),
        }
    }
}
