//! The servers under test: a plain tokio `TcpListener`, `realip-listener`, and the peer crate
//! `proxy-protocol-rs`. Each accepted connection gets the same handler: read [`REQUEST`], write
//! [`REPLY`], then read until the client closes.
//!
//! [`REQUEST`]: crate::client::REQUEST
//! [`REPLY`]: crate::client::REPLY

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::client::{REPLY, REQUEST};

/// Which listener serves the connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum ServerKind {
    /// `tokio::net::TcpListener`, no PROXY header (the limit).
    Plain,
    /// `realip_listener::ProxyListener`.
    Ours,
    /// `proxy_protocol_rs::ProxyProtocolListener` (reads the header inside `accept`).
    Peer,
}

impl ServerKind {
    /// The name used on the command line and in tables.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Ours => "ours",
            Self::Peer => "peer",
        }
    }
}

/// Settings shared by every server kind, so that they are compared like for like.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// How long a connection may take to send its PROXY header.
    pub header_timeout: Duration,
    /// realip-listener's cap on handshakes in progress (`None`: its default).
    pub max_pending: Option<usize>,
    /// realip-listener's accept batch (`None`: its default).
    pub accept_batch: Option<usize>,
    /// `TCP_DEFER_ACCEPT` on the listening socket, whatever the server kind (zero: off).
    pub defer_accept: Duration,
}

/// Serves connections from `listener` until the process ends.
pub async fn serve(kind: ServerKind, listener: TcpListener, opts: ServeOptions) -> io::Result<()> {
    match kind {
        ServerKind::Plain => serve_plain(listener).await,
        ServerKind::Ours => serve_ours(listener, opts).await,
        ServerKind::Peer => serve_peer(listener, opts).await,
    }
}

async fn serve_plain(listener: TcpListener) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream));
            }
            Err(_) => backoff().await,
        }
    }
}

async fn serve_ours(listener: TcpListener, opts: ServeOptions) -> io::Result<()> {
    let mut builder = realip_listener::ProxyListener::builder().header_timeout(opts.header_timeout);
    if let Some(max) = opts.max_pending {
        builder = builder.max_pending(max);
    }
    if let Some(batch) = opts.accept_batch {
        builder = builder.accept_batch(batch);
    }
    let mut listener = builder.listen(listener);
    loop {
        // Never fails: bad connections are dropped inside, accept errors retried with back-off.
        let (stream, _addr) = listener.accept().await;
        tokio::spawn(handle(stream));
    }
}

async fn serve_peer(listener: TcpListener, opts: ServeOptions) -> io::Result<()> {
    use proxy_protocol_rs::{ProxyProtocolConfig, ProxyProtocolListener};

    let config = ProxyProtocolConfig::builder()
        .header_timeout(opts.header_timeout)
        .build()
        .map_err(io::Error::other)?;
    let listener = ProxyProtocolListener::new(listener, config);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tokio::spawn(handle(stream));
            }
            // A bad or slow connection is that connection's error (the listener has dropped it).
            Err(proxy_protocol_rs::AcceptError::Io(_)) => backoff().await,
            Err(_) => {}
        }
    }
}

/// After an accept error such as EMFILE, wait a little as axum's serve loop does.
async fn backoff() {
    tokio::time::sleep(Duration::from_millis(5)).await;
}

/// The size of the per-connection handler's future over a stream `S`: what each connection's
/// task stores besides tokio's own fields (tokio's task cell is that plus about 100 bytes,
/// allocated in 128-byte steps on x86_64).
pub fn handler_future_size<S: AsyncRead + AsyncWrite + Unpin>() -> usize {
    fn output_size<A, R>(_: fn(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    output_size(handle::<S>)
}

/// The per-connection handler, identical for every server kind.
async fn handle<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut request = [0u8; REQUEST.len()];
    if stream.read_exact(&mut request).await.is_err() || request != REQUEST {
        return;
    }
    if stream.write_all(REPLY).await.is_err() {
        return;
    }
    let mut sink = [0u8; 16];
    while let Ok(n) = stream.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}
