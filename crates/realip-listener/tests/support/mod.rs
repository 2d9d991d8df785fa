//! Helpers shared by the listener's integration tests: listeners and clients on loopback,
//! timeouts, fixed client addresses, TLS configs and a writer that joins a header to the
//! first application bytes.

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use realip_listener::{
    Builder, Connection, Family, HandshakeError, Policy, ProxyAddr, ProxyInfo, ProxyListener,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName,
};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Upper bound for anything a test waits for; far above what a passing test needs.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Runs `fut` under [`LIMIT`], failing the test with `what` if it does not finish.
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(LIMIT, fut).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: did not finish within {LIMIT:?}"),
    }
}

/// A client address that is distinct from every loopback address the tests use.
pub fn client_v4() -> SocketAddr {
    "198.51.100.23:40123".parse().unwrap()
}

/// An IPv6 client address (documentation range).
pub fn client_v6() -> SocketAddr {
    "[2001:db8::23]:40123".parse().unwrap()
}

/// Asserts that `info` is an `AF_UNIX` header from the path `source` to `destination`.
pub fn assert_unix_paths(info: &ProxyInfo, source: &[u8], destination: &[u8]) {
    assert_eq!(info.family(), Family::Unix);
    assert_eq!(info.source(), Some(&ProxyAddr::Unix(source.to_vec())));
    assert_eq!(
        info.destination(),
        Some(&ProxyAddr::Unix(destination.to_vec()))
    );
}

/// A server certificate for `localhost` and configs for both ends, on the ring provider.
pub fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());

    let server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();

    (Arc::new(server), client_config(cert))
}

/// A client config (ring provider) that trusts exactly `cert`.
pub fn client_config(cert: CertificateDer<'static>) -> Arc<ClientConfig> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(client)
}

/// The server name the test certificate is valid for.
pub fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A writer that sends `prefix` in the same write call as the first bytes written through
/// it, so a PROXY header and the first application bytes share one TCP segment.
#[derive(Debug)]
pub struct Prefixed<IO> {
    io: IO,
    prefix: Vec<u8>,
    sent: usize,
}

impl<IO> Prefixed<IO> {
    pub fn new(io: IO, prefix: Vec<u8>) -> Self {
        Self {
            io,
            prefix,
            sent: 0,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Prefixed<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.sent < this.prefix.len() {
            // One buffer with the rest of the prefix and the caller's bytes.
            let mut joined = this.prefix[this.sent..].to_vec();
            joined.extend_from_slice(buf);
            let n = match Pin::new(&mut this.io).poll_write(cx, &joined) {
                Poll::Ready(Ok(n)) => n,
                other => return other,
            };
            let from_prefix = n.min(this.prefix.len() - this.sent);
            this.sent += from_prefix;
            let from_buf = n - from_prefix;
            if from_buf == 0 {
                // Only prefix bytes went out; ask to be polled again for the caller's bytes.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            return Poll::Ready(Ok(from_buf));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Upper bound for anything that should be immediate.
pub const QUICK: Duration = Duration::from_secs(2);

/// Binds `builder` to a free port on 127.0.0.1.
pub async fn listen(builder: Builder) -> (ProxyListener<TcpListener>, SocketAddr) {
    let listener = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A listener on a free port on 127.0.0.1 under `policy`, otherwise with the defaults.
pub async fn bind(policy: Policy) -> (ProxyListener<TcpListener>, SocketAddr) {
    listen(ProxyListener::builder().policy(policy)).await
}

/// Connects from a chosen loopback source address.
pub async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let socket = if dst.is_ipv4() {
        TcpSocket::new_v4().unwrap()
    } else {
        TcpSocket::new_v6().unwrap()
    };
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(dst).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub async fn connect(dst: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(dst).await.unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

/// The next connection or handshake failure, failing the test if none comes quickly.
pub async fn next(
    listener: &mut ProxyListener<TcpListener>,
) -> Result<Connection<tokio::net::TcpStream>, HandshakeError> {
    tokio::time::timeout(QUICK, listener.try_accept())
        .await
        .expect("no connection or error within 2 s")
}

/// Sends `bytes` on a new connection and returns the listener's result.
pub async fn send(
    listener: &mut ProxyListener<TcpListener>,
    addr: SocketAddr,
    bytes: &[u8],
) -> (TcpStream, Result<Connection<TcpStream>, HandshakeError>) {
    let mut client = connect(addr).await;
    client.write_all(bytes).await.unwrap();
    let result = next(listener).await;
    (client, result)
}

/// Reads exactly `n` bytes from an accepted stream.
pub async fn read_n<R: AsyncReadExt + Unpin>(r: &mut R, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(QUICK, r.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .unwrap();
    buf
}

/// Asserts that the server closed the client's connection.
pub async fn assert_closed(client: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(QUICK, client.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("expected a closed connection, read {n} bytes"),
        Err(_) => panic!("connection still open"),
    }
}
