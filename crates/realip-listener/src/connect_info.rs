//! Per-connection addresses: the real client, the socket peer and the PROXY header.
//!
//! [`ProxiedAddr`] is returned with every accepted connection, kept in the
//! [`ProxiedStream`](crate::stream::ProxiedStream), and is the axum connect-info type (feature
//! `axum`): `app.into_make_service_with_connect_info::<ProxiedAddr>()`.
//!
//! # Example
//!
//! ```
//! use realip_core::{AddrSource, ClientAddr, PeerAddr};
//! use realip_listener::ProxiedAddr;
//!
//! let lb: std::net::SocketAddr = "10.0.0.5:41000".parse().unwrap();
//! let client = ClientAddr::new("203.0.113.7".parse().unwrap(), Some(5555), AddrSource::ProxyProtocol);
//! let addr = ProxiedAddr::new(Some(client), PeerAddr::from(lb), Some("10.0.0.9:1883".parse().unwrap()), None);
//! assert_eq!(addr.client().unwrap().to_string(), "203.0.113.7:5555");
//! assert_eq!(addr.client_socket_addr(), Some("203.0.113.7:5555".parse().unwrap()));
//! assert_eq!(addr.socket_peer().inet(), Some(lb));
//! assert!(addr.is_proxied());
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use realip_core::{AddrSource, ClientAddr, PeerAddr};

use crate::header::info::{Command, ProxyInfo};

/// The addresses of one accepted connection, also its axum connect-info type.
///
/// `client` is the real client: the PROXY header's source address when a header with a
/// PROXY command and an IP family was accepted (source [`AddrSource::ProxyProtocol`]), else
/// the socket peer (source [`AddrSource::Socket`]). It is `None` only for a Unix socket peer
/// with no usable header.
///
/// A `ProxiedAddr` is one pointer: the addresses and the header live in one shared
/// allocation, so a clone (the listener hands out one next to the stream, axum takes one
/// per connection) only counts a reference, and the stream that carries one stays small.
///
/// [`AddrSource::ProxyProtocol`]: realip_core::AddrSource::ProxyProtocol
/// [`AddrSource::Socket`]: realip_core::AddrSource::Socket
#[derive(Clone, PartialEq, Eq)]
pub struct ProxiedAddr(Arc<Addrs>);

#[derive(PartialEq, Eq)]
struct Addrs {
    client: Option<ClientAddr>,
    socket_peer: PeerAddr,
    local_addr: Option<SocketAddr>,
    proxy: Header,
}

/// The header of a connection: read by the listener (stored here, in the one allocation),
/// or shared with the caller of [`ProxiedAddr::new`]. Equal when the headers are.
enum Header {
    None,
    Owned(ProxyInfo),
    Shared(Arc<ProxyInfo>),
}

impl Header {
    fn get(&self) -> Option<&ProxyInfo> {
        match self {
            Self::None => None,
            Self::Owned(info) => Some(info),
            Self::Shared(info) => Some(info),
        }
    }
}

impl PartialEq for Header {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Header {}

impl fmt::Debug for ProxiedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxiedAddr")
            .field("client", &self.0.client)
            .field("socket_peer", &self.0.socket_peer)
            .field("local_addr", &self.0.local_addr)
            .field("proxy", &self.0.proxy.get())
            .finish()
    }
}

impl ProxiedAddr {
    /// Creates the addresses of a connection.
    pub fn new(
        client: Option<ClientAddr>,
        socket_peer: PeerAddr,
        local_addr: Option<SocketAddr>,
        proxy: Option<Arc<ProxyInfo>>,
    ) -> Self {
        Self(Arc::new(Addrs {
            client,
            socket_peer,
            local_addr,
            proxy: proxy.map_or(Header::None, Header::Shared),
        }))
    }

    /// The addresses of a connection from its socket and the header it sent: the client is
    /// the header's source for a PROXY command with an IP family, else the socket peer.
    pub(crate) fn from_connection(
        peer: PeerAddr,
        local: Option<SocketAddr>,
        info: Option<ProxyInfo>,
    ) -> Self {
        let from_header = info
            .as_ref()
            .filter(|i| i.command() == Command::Proxy)
            .and_then(ProxyInfo::source_inet)
            .map(|sa| ClientAddr::from_socket_addr(sa, AddrSource::ProxyProtocol));
        let client = from_header.or_else(|| {
            peer.inet()
                .map(|sa| ClientAddr::from_socket_addr(sa, AddrSource::Socket))
        });
        Self(Arc::new(Addrs {
            client,
            socket_peer: peer,
            local_addr: local,
            proxy: info.map_or(Header::None, Header::Owned),
        }))
    }

    /// The real client: PROXY header source, else the socket peer.
    pub fn client(&self) -> Option<&ClientAddr> {
        self.0.client.as_ref()
    }

    /// The transport socket's peer (the proxy, when there is one).
    pub fn socket_peer(&self) -> &PeerAddr {
        &self.0.socket_peer
    }

    /// The socket's local address, for internet sockets.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.0.local_addr
    }

    /// The PROXY header, when one was received and used.
    pub fn proxy_info(&self) -> Option<&ProxyInfo> {
        self.0.proxy.get()
    }

    /// The real client as a socket address, when it has an IP and a port.
    pub fn client_socket_addr(&self) -> Option<SocketAddr> {
        self.0.client.as_ref().and_then(ClientAddr::socket_addr)
    }

    /// Whether the client address came from a PROXY header (rather than the socket).
    pub fn is_proxied(&self) -> bool {
        self.0
            .client
            .as_ref()
            .is_some_and(|c| c.source() == &AddrSource::ProxyProtocol)
    }
}
