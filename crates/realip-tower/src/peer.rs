//! The transport peer of a request: whom the headers' trust is checked against, found in
//! the request extensions.

use std::borrow::Cow;

use realip_core::{AddrSource, ClientAddr, PeerAddr, TrustedProxies};
#[cfg(feature = "listener")]
use realip_listener::ProxiedAddr;

/// The peer of one request as the layer sees it: the address whose trust decides whether
/// headers are believed, and the client it stands for when no header applies. It borrows
/// what it can from the request: resolving copies only what the [`Resolution`] keeps.
///
/// [`Resolution`]: crate::Resolution
#[derive(Clone, Debug)]
pub(crate) struct Peer<'a> {
    addr: Cow<'a, PeerAddr>,
    /// The client a PROXY header named; `None` when the socket peer itself is the client.
    proxied: Option<ClientAddr>,
}

impl PartialEq for Peer<'_> {
    /// The same address, standing for the same client.
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr && self.client() == other.client()
    }
}

impl<'a> Peer<'a> {
    /// A transport socket's peer ([`AddrSource::Socket`]).
    #[inline]
    pub(crate) fn socket(addr: Cow<'a, PeerAddr>) -> Self {
        Self {
            addr,
            proxied: None,
        }
    }

    /// The peer of a connection accepted by `realip-listener`: its real client (the PROXY
    /// header's source, else the socket peer), so that PROXY protocol and forwarded headers
    /// compose: a PROXY-derived peer is the one whose headers are judged.
    #[cfg(feature = "listener")]
    pub(crate) fn proxied(proxied: &'a ProxiedAddr) -> Self {
        match proxied.client() {
            Some(client) => Self {
                // A PROXY source always has a port; without one the IP alone still decides
                // trust, and the client keeps "port unknown".
                addr: Cow::Owned(PeerAddr::Inet(
                    client
                        .socket_addr()
                        .unwrap_or_else(|| std::net::SocketAddr::new(client.ip(), 0)),
                )),
                proxied: Some(client),
            },
            None => Self::socket(Cow::Borrowed(proxied.socket_peer())),
        }
    }

    /// Finds the transport peer in request extensions, in this order:
    ///
    /// 1. `realip_listener::ProxiedAddr` (feature `listener`; hyper-util users insert it
    ///    per connection),
    /// 2. `axum::extract::ConnectInfo<ProxiedAddr>` (features `axum` and `listener`),
    /// 3. `axum::extract::ConnectInfo<SocketAddr>` (feature `axum`),
    /// 4. axum's `MockConnectInfo` of either type, the test stand-in for `ConnectInfo`
    ///    (feature `axum`; as in axum, a real `ConnectInfo` takes precedence),
    /// 5. a [`PeerAddr`] inserted by the application (for servers such as tonic that expose
    ///    the peer in their own type).
    pub(crate) fn from_extensions(extensions: &'a http::Extensions) -> Option<Self> {
        #[cfg(feature = "listener")]
        if let Some(addr) = extensions.get::<ProxiedAddr>() {
            return Some(Self::proxied(addr));
        }
        #[cfg(feature = "axum")]
        {
            use axum::extract::ConnectInfo;
            use axum::extract::connect_info::MockConnectInfo;
            #[cfg(feature = "listener")]
            if let Some(ConnectInfo(addr)) = extensions.get::<ConnectInfo<ProxiedAddr>>() {
                return Some(Self::proxied(addr));
            }
            if let Some(ConnectInfo(addr)) = extensions.get::<ConnectInfo<std::net::SocketAddr>>() {
                return Some(Self::socket(Cow::Owned(PeerAddr::Inet(*addr))));
            }
            #[cfg(feature = "listener")]
            if let Some(MockConnectInfo(addr)) = extensions.get::<MockConnectInfo<ProxiedAddr>>() {
                return Some(Self::proxied(addr));
            }
            if let Some(MockConnectInfo(addr)) =
                extensions.get::<MockConnectInfo<std::net::SocketAddr>>()
            {
                return Some(Self::socket(Cow::Owned(PeerAddr::Inet(*addr))));
            }
        }
        extensions
            .get::<PeerAddr>()
            .map(|addr| Self::socket(Cow::Borrowed(addr)))
    }

    /// The peer's address (for a PROXY-derived peer, the header's source).
    pub(crate) fn addr(&self) -> &PeerAddr {
        &self.addr
    }

    /// The client this peer stands for when no header applies: the socket peer, or a PROXY
    /// header's source; `None` for a Unix socket peer.
    pub(crate) fn client(&self) -> Option<ClientAddr> {
        match &self.proxied {
            Some(client) => Some(client.clone()),
            None => self
                .addr
                .inet()
                .map(|inet| ClientAddr::from_socket_addr(inet, AddrSource::Socket)),
        }
    }

    /// Whether headers from this peer are believed.
    #[inline]
    pub(crate) fn is_trusted(&self, trusted: &TrustedProxies) -> bool {
        trusted.contains_peer(&self.addr)
    }
}

#[cfg(test)]
mod tests {
    #[cfg(any(feature = "axum", feature = "listener"))]
    use std::net::SocketAddr;

    use super::*;

    fn socket(s: &str) -> Peer<'static> {
        Peer::socket(Cow::Owned(PeerAddr::Inet(s.parse().unwrap())))
    }

    #[test]
    fn an_inserted_peer_addr_is_a_socket_peer() {
        let mut ext = http::Extensions::new();
        assert_eq!(Peer::from_extensions(&ext), None);
        ext.insert(PeerAddr::Inet("192.0.2.9:9".parse().unwrap()));
        let peer = Peer::from_extensions(&ext).unwrap();
        assert_eq!(peer, socket("192.0.2.9:9"));
        assert_eq!(peer.client().unwrap().source(), &AddrSource::Socket);

        let unix = Peer::socket(Cow::Owned(PeerAddr::Unix(None)));
        assert_eq!(unix.client(), None);
        assert!(unix.is_trusted(&TrustedProxies::loopback()));
        assert!(!unix.is_trusted(&"127.0.0.1".parse().unwrap()));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn axum_connect_info_comes_before_an_inserted_peer() {
        use axum::extract::connect_info::MockConnectInfo;
        let mut ext = http::Extensions::new();
        ext.insert(PeerAddr::Inet("192.0.2.9:9".parse().unwrap()));
        // axum's test stand-in for `ConnectInfo` (what `ConnectInfo` itself honours).
        let mock: SocketAddr = "192.0.2.7:7".parse().unwrap();
        ext.insert(MockConnectInfo(mock));
        assert_eq!(Peer::from_extensions(&ext), Some(socket("192.0.2.7:7")));
        let sock: SocketAddr = "192.0.2.8:8".parse().unwrap();
        ext.insert(axum::extract::ConnectInfo(sock));
        assert_eq!(Peer::from_extensions(&ext), Some(socket("192.0.2.8:8")));
    }

    #[cfg(feature = "listener")]
    #[test]
    fn the_proxied_address_comes_first_and_its_client_is_the_peer() {
        let mut ext = http::Extensions::new();
        ext.insert(PeerAddr::Inet("192.0.2.9:9".parse().unwrap()));
        let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        let proxied = ProxiedAddr::new(
            Some(ClientAddr::from_socket_addr(
                client,
                AddrSource::ProxyProtocol,
            )),
            PeerAddr::Inet("10.0.0.1:4000".parse().unwrap()),
            None,
            None,
        );
        let client_addr = ClientAddr::from_socket_addr(client, AddrSource::ProxyProtocol);
        let want = Peer {
            addr: Cow::Owned(PeerAddr::Inet(client)),
            proxied: Some(client_addr),
        };
        #[cfg(feature = "axum")]
        {
            let mut mocked = http::Extensions::new();
            mocked.insert(axum::extract::connect_info::MockConnectInfo(
                proxied.clone(),
            ));
            assert_eq!(Peer::from_extensions(&mocked), Some(want.clone()));
            ext.insert(axum::extract::ConnectInfo(proxied.clone()));
            assert_eq!(Peer::from_extensions(&ext), Some(want.clone()));
        }
        ext.insert(proxied);
        assert_eq!(Peer::from_extensions(&ext), Some(want));
        assert!(
            !Peer::from_extensions(&ext)
                .unwrap()
                .is_trusted(&"10.0.0.0/8".parse().unwrap())
        );

        // A Unix socket connection without a PROXY header.
        let unix = ProxiedAddr::new(None, PeerAddr::Unix(None), None, None);
        assert_eq!(
            Peer::proxied(&unix),
            Peer::socket(Cow::Owned(PeerAddr::Unix(None)))
        );
        // A TCP connection without a header: the socket peer.
        let no_header = ProxiedAddr::new(
            Some(ClientAddr::from_socket_addr(
                "10.0.0.1:4000".parse().unwrap(),
                AddrSource::Socket,
            )),
            PeerAddr::Inet("10.0.0.1:4000".parse().unwrap()),
            None,
            None,
        );
        assert_eq!(Peer::proxied(&no_header), socket("10.0.0.1:4000"));
    }
}
