//! Per-connection addresses: the real client, the socket peer and the PROXY header.

use std::net::SocketAddr;
use std::sync::Arc;

use realip_core::{ClientAddr, PeerAddr};

use crate::ProxyInfo;

/// The addresses of one accepted connection, also its axum connect-info type.
///
/// `client` is the real client: the PROXY header's source address when a header with a
/// PROXY command and an IP family was accepted (source [`AddrSource::ProxyProtocol`]), else
/// the socket peer (source [`AddrSource::Socket`]). It is `None` only for a Unix socket peer
/// with no usable header.
///
/// [`AddrSource::ProxyProtocol`]: realip_core::AddrSource::ProxyProtocol
/// [`AddrSource::Socket`]: realip_core::AddrSource::Socket
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxiedAddr {
    client: Option<ClientAddr>,
    socket_peer: PeerAddr,
    local_addr: Option<SocketAddr>,
    proxy: Option<Arc<ProxyInfo>>,
}

impl ProxiedAddr {
    /// Creates the addresses of a connection.
    pub fn new(
        client: Option<ClientAddr>,
        socket_peer: PeerAddr,
        local_addr: Option<SocketAddr>,
        proxy: Option<Arc<ProxyInfo>>,
    ) -> Self {
        Self {
            client,
            socket_peer,
            local_addr,
            proxy,
        }
    }

    /// The real client: PROXY header source, else the socket peer.
    pub fn client(&self) -> Option<&ClientAddr> {
        self.client.as_ref()
    }

    /// The transport socket's peer (the proxy, when there is one).
    pub fn socket_peer(&self) -> &PeerAddr {
        &self.socket_peer
    }

    /// The socket's local address, for internet sockets.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The PROXY header, when one was received and used.
    pub fn proxy_info(&self) -> Option<&ProxyInfo> {
        self.proxy.as_deref()
    }
}
