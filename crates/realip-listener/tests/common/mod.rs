//! Helpers shared by the TLS, axum, hyper, Unix/IPv6 and real-proxy integration tests.

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
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

/// A server certificate for `localhost` and configs for both ends, on the ring provider.
pub fn tls_configs() -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());

    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();

    let mut roots = RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
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
