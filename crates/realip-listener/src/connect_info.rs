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
/// [`client`](Self::client) is the real client: the PROXY header's source address when a
/// header with a PROXY command and an IP family was accepted (source
/// [`AddrSource::ProxyProtocol`]), else the socket peer (source [`AddrSource::Socket`]). It
/// is `None` only for a Unix socket peer with no usable header.
///
/// A `ProxiedAddr` is one pointer: the addresses and the header live in one shared
/// allocation, so a clone (the listener hands out one next to the stream, axum takes one
/// per connection) only counts a reference, and the stream that carries one stays small.
/// The client is not stored a second time: it is read from the header or the socket peer
/// when asked for.
///
/// [`AddrSource::ProxyProtocol`]: realip_core::AddrSource::ProxyProtocol
/// [`AddrSource::Socket`]: realip_core::AddrSource::Socket
#[derive(Clone)]
pub struct ProxiedAddr(Arc<Addrs>);

struct Addrs {
    socket_peer: PeerAddr,
    local_addr: Option<SocketAddr>,
    proxy: Option<ProxyInfo>,
    client: Client,
}

/// Where the client address comes from.
enum Client {
    /// The header's source or the socket peer, by the rule of [`ProxiedAddr::client`].
    Derived,
    /// Given to [`ProxiedAddr::new`] and different from what the rule gives (boxed: rare,
    /// and it keeps the common case one pointer smaller).
    Given(Box<Option<ClientAddr>>),
}

impl Addrs {
    /// The client by the rule: the header's source for a PROXY command with an IP family,
    /// else the socket peer.
    fn derived_client(&self) -> Option<ClientAddr> {
        let from_header = self
            .proxy
            .as_ref()
            .filter(|info| info.command() == Command::Proxy)
            .and_then(ProxyInfo::source_inet)
            .map(|sa| ClientAddr::from_socket_addr(sa, AddrSource::ProxyProtocol));
        from_header.or_else(|| {
            self.socket_peer
                .inet()
                .map(|sa| ClientAddr::from_socket_addr(sa, AddrSource::Socket))
        })
    }

    fn client(&self) -> Option<ClientAddr> {
        match &self.client {
            Client::Derived => self.derived_client(),
            Client::Given(client) => (**client).clone(),
        }
    }
}

impl PartialEq for ProxiedAddr {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.socket_peer == other.0.socket_peer
                && self.0.local_addr == other.0.local_addr
                && self.0.proxy == other.0.proxy
                && self.client() == other.client())
    }
}

impl Eq for ProxiedAddr {}

impl fmt::Debug for ProxiedAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxiedAddr")
            .field("client", &self.client())
            .field("socket_peer", &self.0.socket_peer)
            .field("local_addr", &self.0.local_addr)
            .field("proxy", &self.0.proxy)
            .finish()
    }
}

impl ProxiedAddr {
    /// Creates the addresses of a connection. The header is copied out of its `Arc` when
    /// that is shared.
    pub fn new(
        client: Option<ClientAddr>,
        socket_peer: PeerAddr,
        local_addr: Option<SocketAddr>,
        proxy: Option<Arc<ProxyInfo>>,
    ) -> Self {
        let mut addrs = Addrs {
            socket_peer,
            local_addr,
            proxy: proxy.map(Arc::unwrap_or_clone),
            client: Client::Derived,
        };
        if addrs.derived_client() != client {
            addrs.client = Client::Given(Box::new(client));
        }
        Self(Arc::new(addrs))
    }

    /// The addresses of a connection from its socket and the header it sent: the client is
    /// the header's source for a PROXY command with an IP family, else the socket peer.
    pub(crate) fn from_connection(
        peer: PeerAddr,
        local: Option<SocketAddr>,
        info: Option<ProxyInfo>,
    ) -> Self {
        Self(Arc::new(Addrs {
            socket_peer: peer,
            local_addr: local,
            proxy: info,
            client: Client::Derived,
        }))
    }

    /// The real client: PROXY header source, else the socket peer (see the type's docs).
    pub fn client(&self) -> Option<ClientAddr> {
        self.0.client()
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
        self.0.proxy.as_ref()
    }

    /// The real client as a socket address, when it has an IP and a port.
    pub fn client_socket_addr(&self) -> Option<SocketAddr> {
        self.client().as_ref().and_then(ClientAddr::socket_addr)
    }

    /// Whether the client address came from a PROXY header (rather than the socket).
    pub fn is_proxied(&self) -> bool {
        self.client()
            .is_some_and(|c| c.source() == &AddrSource::ProxyProtocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::parse::parse_header;
    use crate::header::write::ProxyHeader;

    fn lb() -> PeerAddr {
        PeerAddr::Inet("10.0.0.5:41000".parse().unwrap())
    }

    fn header(source: &str, local: bool) -> ProxyInfo {
        let bytes = if local {
            ProxyHeader::v2_local().to_bytes()
        } else {
            ProxyHeader::v2(source.parse().unwrap(), "10.0.0.9:443".parse().unwrap()).to_bytes()
        };
        parse_header(&bytes, 4096).unwrap().unwrap().0
    }

    #[test]
    fn addresses_are_stored_once() {
        // The socket peer, the local address and the header (whose source is the client):
        // the shared allocation of an accepted IPv4 or IPv6 connection, besides the
        // reference counts.
        let size = std::mem::size_of::<Addrs>();
        assert!(size <= 152, "{size} bytes");
    }

    #[test]
    fn client_is_the_header_source_for_proxy_else_the_socket_peer() {
        let proxied = ProxiedAddr::from_connection(
            lb(),
            None,
            Some(header("[::ffff:203.0.113.7]:5555", false)),
        );
        let client = proxied.client().unwrap();
        assert_eq!(client.to_string(), "203.0.113.7:5555");
        assert_eq!(client.source(), &AddrSource::ProxyProtocol);
        assert!(proxied.is_proxied());

        for info in [None, Some(header("", true))] {
            let direct = ProxiedAddr::from_connection(lb(), None, info);
            let client = direct.client().unwrap();
            assert_eq!(client.to_string(), "10.0.0.5:41000");
            assert_eq!(client.source(), &AddrSource::Socket);
            assert!(!direct.is_proxied());
        }
        let unix = ProxiedAddr::from_connection(PeerAddr::Unix(None), None, None);
        assert_eq!(unix.client(), None);
    }

    #[test]
    fn new_keeps_the_client_it_is_given() {
        let header_client = ClientAddr::new(
            "198.51.100.1".parse().unwrap(),
            None,
            AddrSource::header("X-Forwarded-For"),
        );
        for client in [None, Some(header_client)] {
            let addr = ProxiedAddr::new(client.clone(), lb(), None, None);
            assert_eq!(addr.client(), client);
        }
        // The same as the rule gives: equal to the listener's value.
        let info = header("192.0.2.7:51000", false);
        let given = ClientAddr::from_socket_addr(
            "192.0.2.7:51000".parse().unwrap(),
            AddrSource::ProxyProtocol,
        );
        let made = ProxiedAddr::new(Some(given), lb(), None, Some(Arc::new(info.clone())));
        assert_eq!(made, ProxiedAddr::from_connection(lb(), None, Some(info)));
        assert_ne!(made, ProxiedAddr::new(None, lb(), None, None));
    }
}
