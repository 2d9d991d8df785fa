//! axum 0.8 integration: `axum::serve` on a [`ProxyListener`], and [`ProxiedAddr`] as
//! connect info.
//!
//! axum 0.8's own `ConnectInfo<SocketAddr>` only works with its own listeners, so a
//! handler extracts `ConnectInfo<ProxiedAddr>` instead: serve the app with
//! `into_make_service_with_connect_info::<ProxiedAddr>()`.
//!
//! # Example
//!
//! ```
//! use axum::{Router, extract::ConnectInfo, routing::get};
//! use realip_listener::{ProxiedAddr, ProxyHeader, ProxyListener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! async fn whoami(ConnectInfo(addr): ConnectInfo<ProxiedAddr>) -> String {
//!     addr.client().map(|client| client.to_string()).unwrap_or_default()
//! }
//!
//! let listener = ProxyListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let app = Router::new().route("/", get(whoami));
//! tokio::spawn(async move {
//!     axum::serve(listener, app.into_make_service_with_connect_info::<ProxiedAddr>()).await
//! });
//!
//! let mut conn = tokio::net::TcpStream::connect(addr).await?;
//! ProxyHeader::v1("198.51.100.4:7000".parse().unwrap(), addr).write_to(&mut conn).await?;
//! conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await?;
//! let mut response = String::new();
//! conn.read_to_string(&mut response).await?;
//! assert!(response.ends_with("198.51.100.4:7000"));
//! # Ok(())
//! # }
//! ```

use std::io;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};

use crate::accept::Accept;
use crate::connect_info::ProxiedAddr;
use crate::listener::ProxyListener;
use crate::stream::ProxiedStream;

impl<L: Accept + 'static> Listener for ProxyListener<L> {
    type Io = ProxiedStream<L::Io>;
    type Addr = ProxiedAddr;

    /// Never fails: bad connections are logged and dropped, accept errors are logged and
    /// retried with back-off.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        ProxyListener::accept(self).await
    }

    /// The listener's own address, as a `ProxiedAddr` whose
    /// [`socket_peer`](ProxiedAddr::socket_peer) and
    /// [`local_addr`](ProxiedAddr::local_addr) are the bound address (`client` is `None`).
    fn local_addr(&self) -> io::Result<Self::Addr> {
        let local = self.get_ref().local_peer_addr()?;
        let inet = local.inet();
        Ok(ProxiedAddr::new(None, local, inet, None))
    }
}

impl<L: Accept + 'static> Connected<IncomingStream<'_, ProxyListener<L>>> for ProxiedAddr {
    fn connect_info(stream: IncomingStream<'_, ProxyListener<L>>) -> Self {
        stream.remote_addr().clone()
    }
}
