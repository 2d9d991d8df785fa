//! TLS (tokio-rustls) running over an accepted stream after the PROXY header: the bytes of
//! the TLS handshake that arrive with the header must reach rustls intact and in order.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use realip_core::AddrSource;
use realip_listener::{Policy, ProxyHeader, ProxyListener, ProxyVersion};
use support::{Prefixed, bind, client_v4, localhost, tls_configs, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A payload larger than any single TLS record or socket buffer, with a recognizable pattern.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// TLS configs for both ends and a listener under `policy`.
async fn setup(policy: Policy) -> (TlsAcceptor, Arc<ClientConfig>, ProxyListener, SocketAddr) {
    let (server_config, client_config) = tls_configs();
    let (listener, addr) = bind(policy).await;
    (
        TlsAcceptor::from(server_config),
        client_config,
        listener,
        addr,
    )
}

/// Accepts one connection, runs a TLS server over it that echoes everything back, and
/// returns the listener's view of the connection's addresses.
async fn serve_one_tls_echo(
    listener: &mut ProxyListener,
    acceptor: TlsAcceptor,
) -> (realip_listener::ProxiedAddr, tokio::task::JoinHandle<()>) {
    let (stream, addr) = within("accept", listener.accept()).await;
    let task = tokio::spawn(async move {
        let mut tls = acceptor.accept(stream).await.expect("server TLS handshake");
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = tls.read(&mut buf).await.expect("server read");
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n]).await.expect("server write");
        }
        tls.shutdown().await.ok();
    });
    (addr, task)
}

/// Runs `client` against one TLS echo session accepted from `listener`; returns what the
/// client returned and the listener's view of the connection, once the server side is done.
async fn echo_session<T>(
    listener: &mut ProxyListener,
    acceptor: TlsAcceptor,
    client: impl Future<Output = T>,
) -> (T, realip_listener::ProxiedAddr) {
    let server = serve_one_tls_echo(listener, acceptor);
    let (out, (addr, task)) = within("TLS echo", async { tokio::join!(client, server) }).await;
    within("server task", task).await.unwrap();
    (out, addr)
}

/// Client side: TLS over `io`, send `data`, read the echo of all of it.
async fn tls_echo_client<IO>(client_config: Arc<ClientConfig>, io: IO, data: &[u8]) -> Vec<u8>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let connector = TlsConnector::from(client_config);
    let mut tls = connector
        .connect(localhost(), io)
        .await
        .expect("client TLS handshake");
    let (mut rd, mut wr) = tokio::io::split(&mut tls);
    let write = async {
        wr.write_all(data).await.expect("client write");
        wr.flush().await.expect("client flush");
    };
    let read = async {
        let mut echoed = vec![0; data.len()];
        rd.read_exact(&mut echoed).await.expect("client read echo");
        echoed
    };
    let ((), echoed) = tokio::join!(write, read);
    // close_notify, then wait for the server's own close.
    tls.shutdown().await.expect("client shutdown");
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .await
        .expect("client read to end");
    assert!(rest.is_empty(), "unexpected bytes after the echo");
    echoed
}

#[tokio::test]
async fn tls_after_v2_header_sharing_the_first_segment() {
    let (acceptor, client_config, mut listener, server_addr) = setup(Policy::Require).await;

    let header = ProxyHeader::v2(client_v4(), server_addr)
        .with_alpn("mqtt")
        .with_authority("localhost")
        .with_crc32c()
        .to_bytes();
    let data = payload(256 * 1024);

    let client = async {
        let tcp = TcpStream::connect(server_addr).await.unwrap();
        // The header goes out in the same write as the ClientHello.
        tls_echo_client(client_config.clone(), Prefixed::new(tcp, header), &data).await
    };
    let (echoed, addr) = echo_session(&mut listener, acceptor, client).await;

    assert!(echoed == data, "TLS payload came back altered");
    let client_addr = addr.client().expect("client address");
    assert_eq!(client_addr.socket_addr(), Some(client_v4()));
    assert_eq!(client_addr.source(), &AddrSource::ProxyProtocol);
    let info = addr.proxy_info().expect("PROXY info");
    assert_eq!(info.version(), ProxyVersion::V2);
    assert_eq!(info.tlvs().alpn(), Some(&b"mqtt"[..]));
    assert_eq!(info.tlvs().authority(), Some("localhost"));
    assert!(info.tlvs().crc32c().is_some());
}

#[tokio::test]
async fn tls_after_v1_header_sent_one_byte_at_a_time() {
    let (acceptor, client_config, mut listener, server_addr) = setup(Policy::Require).await;
    let header = ProxyHeader::v1(client_v4(), server_addr).to_bytes();
    let data = payload(40_000);

    let client = async {
        let mut tcp = TcpStream::connect(server_addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        for byte in &header {
            tcp.write_all(std::slice::from_ref(byte)).await.unwrap();
            tcp.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        tls_echo_client(client_config.clone(), tcp, &data).await
    };
    let (echoed, addr) = echo_session(&mut listener, acceptor, client).await;

    assert!(echoed == data, "TLS payload came back altered");
    assert_eq!(addr.client().unwrap().socket_addr(), Some(client_v4()));
    assert_eq!(addr.proxy_info().unwrap().version(), ProxyVersion::V1);
}

#[tokio::test]
async fn tls_without_header_under_optional_policy_replays_the_client_hello() {
    let (acceptor, client_config, mut listener, server_addr) = setup(Policy::Optional).await;
    let data = payload(10_000);

    let client = async {
        let tcp = TcpStream::connect(server_addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        (
            tls_echo_client(client_config.clone(), tcp, &data).await,
            local,
        )
    };
    let ((echoed, client_local), addr) = echo_session(&mut listener, acceptor, client).await;

    assert!(echoed == data, "TLS payload came back altered");
    // No header: the client is the socket peer.
    let client_addr = addr.client().unwrap();
    assert_eq!(client_addr.socket_addr(), Some(client_local));
    assert_eq!(client_addr.source(), &AddrSource::Socket);
    assert!(addr.proxy_info().is_none());
}

#[tokio::test]
async fn tls_client_hello_without_header_is_closed_under_require() {
    let (acceptor, client_config, mut listener, server_addr) = setup(Policy::Require).await;

    // The listener keeps accepting (handshakes progress only while it is polled).
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        loop {
            let (addr, task) = serve_one_tls_echo(&mut listener, acceptor.clone()).await;
            if tx.send((addr, task)).is_err() {
                break;
            }
        }
    });

    // A direct TLS client (no PROXY header) must fail its handshake: the listener closes it.
    let direct = async {
        let tcp = TcpStream::connect(server_addr).await.unwrap();
        TlsConnector::from(client_config.clone())
            .connect(localhost(), tcp)
            .await
            .is_err()
    };
    // Meanwhile a proxied client is served.
    let header = ProxyHeader::v2(client_v4(), server_addr).to_bytes();
    let data = payload(1000);
    let proxied = async {
        let tcp = TcpStream::connect(server_addr).await.unwrap();
        tls_echo_client(client_config.clone(), Prefixed::new(tcp, header), &data).await
    };
    let (direct_failed, echoed) =
        within("both clients", async { tokio::join!(direct, proxied) }).await;

    assert!(
        direct_failed,
        "a TLS client without a PROXY header must not get a session"
    );
    assert!(echoed == data);
    let (addr, task) = within("accepted connection", rx.recv()).await.unwrap();
    assert_eq!(addr.client().unwrap().socket_addr(), Some(client_v4()));
    within("server task", task).await.unwrap();
    // Only the proxied connection was handed out.
    assert!(rx.try_recv().is_err());
    server.abort();
}
