//! axum 0.8: `axum::serve` over a `ProxyListener` with `ConnectInfo<ProxiedAddr>`.

#![cfg(feature = "axum")]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use realip_listener::{Policy, ProxiedAddr, ProxyHeader, ProxyListener};
use support::{bind, client_v4, client_v6, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// `client=<real client> socket=<socket peer> version=<v1|v2|none> command=<..>`.
async fn whoami(ConnectInfo(addr): ConnectInfo<ProxiedAddr>) -> String {
    let info = addr.proxy_info();
    format!(
        "client={} socket={} version={} command={} authority={}",
        addr.client()
            .map(|client| client.to_string())
            .unwrap_or_else(|| "-".into()),
        addr.socket_peer(),
        info.map_or("none", |i| i.version().as_str()),
        info.map_or("none", |i| i.command().as_str()),
        info.and_then(|i| i.tlvs().authority()).unwrap_or("-"),
    )
}

fn app() -> Router {
    Router::new().route("/", get(whoami))
}

/// Serves `app()` on `listener` in the background.
fn serve<L>(listener: ProxyListener<L>) -> tokio::task::JoinHandle<()>
where
    L: realip_listener::Accept + 'static,
{
    tokio::spawn(async move {
        axum::serve(
            listener,
            app().into_make_service_with_connect_info::<ProxiedAddr>(),
        )
        .await
        .unwrap();
    })
}

/// Sends `prefix` (a PROXY header, or nothing), then one `GET /` with `Connection: close`,
/// and returns the response body.
async fn get_body<IO: AsyncRead + AsyncWrite + Unpin>(mut io: IO, prefix: &[u8]) -> String {
    let mut request = prefix.to_vec();
    request.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    io.write_all(&request).await.unwrap();
    let mut response = String::new();
    io.read_to_string(&mut response).await.unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "unexpected response: {response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// Serves `app()` under `policy`, sends one request over TCP behind `prefix(server address)`
/// (a PROXY header, or nothing) and returns the response body and the client socket's own
/// address.
async fn tcp_whoami(
    policy: Policy,
    what: &str,
    prefix: impl FnOnce(SocketAddr) -> Vec<u8>,
) -> (String, SocketAddr) {
    let (listener, addr) = bind(policy).await;
    let server = serve(listener);
    let tcp = TcpStream::connect(addr).await.unwrap();
    let socket = tcp.local_addr().unwrap();
    let body = within(what, get_body(tcp, &prefix(addr))).await;
    server.abort();
    (body, socket)
}

#[tokio::test]
async fn connect_info_is_the_v1_source() {
    let (body, socket) = tcp_whoami(Policy::Require, "request", |addr| {
        ProxyHeader::v1(client_v4(), addr).to_bytes()
    })
    .await;
    assert_eq!(
        body,
        format!(
            "client={} socket={socket} version=v1 command=proxy authority=-",
            client_v4()
        )
    );
}

#[tokio::test]
async fn connect_info_is_the_v2_source_with_tlvs() {
    let (body, socket) = tcp_whoami(Policy::Require, "request", |_| {
        ProxyHeader::v2(client_v6(), "[2001:db8::1]:443".parse().unwrap())
            .with_authority("example.com")
            .with_crc32c()
            .to_bytes()
    })
    .await;
    assert_eq!(
        body,
        format!(
            "client={} socket={socket} version=v2 command=proxy authority=example.com",
            client_v6()
        )
    );
}

#[tokio::test]
async fn connect_info_for_local_and_for_no_header() {
    // LOCAL (a health check): the socket peer is the client.
    let (body, socket) = tcp_whoami(Policy::Require, "LOCAL request", |_| {
        ProxyHeader::v2_local().to_bytes()
    })
    .await;
    assert_eq!(
        body,
        format!("client={socket} socket={socket} version=v2 command=local authority=-")
    );

    // Optional policy, no header: the socket peer.
    let (body, socket) = tcp_whoami(Policy::Optional, "plain request", |_| Vec::new()).await;
    assert_eq!(
        body,
        format!("client={socket} socket={socket} version=none command=none authority=-")
    );
}

#[tokio::test]
async fn keep_alive_requests_share_the_connection_address() {
    let (listener, addr) = bind(Policy::Require).await;
    let server = serve(listener);
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = ProxyHeader::v1(client_v4(), addr).to_bytes();
    // Two pipelined requests right behind the header, in one write.
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n");
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tcp.write_all(&bytes).await.unwrap();
    let mut response = String::new();
    within("responses", tcp.read_to_string(&mut response))
        .await
        .unwrap();
    let expected = format!("client={}", client_v4());
    assert_eq!(response.matches("HTTP/1.1 200").count(), 2, "{response}");
    assert_eq!(response.matches(&expected).count(), 2, "{response}");
    server.abort();
}

#[tokio::test]
async fn silent_connections_do_not_delay_axum() {
    let timeout = Duration::from_secs(5);
    let listener = ProxyListener::builder()
        .policy(Policy::Require)
        .header_timeout(timeout)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let server = serve(listener);

    // Ten clients connect and send nothing (or half a header) before the good one.
    let mut silent = Vec::new();
    for i in 0..10 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            tcp.write_all(b"PROXY TCP4 10.").await.unwrap();
        }
        silent.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;

    let started = Instant::now();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let body = within(
        "request",
        get_body(tcp, &ProxyHeader::v1(client_v4(), addr).to_bytes()),
    )
    .await;
    let elapsed = started.elapsed();
    assert!(
        body.starts_with(&format!("client={}", client_v4())),
        "{body}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "served after {elapsed:?}, header timeout is {timeout:?}"
    );
    drop(silent);
    server.abort();
}

#[cfg(unix)]
#[tokio::test]
async fn axum_over_a_unix_socket_listener() {
    let dir = std::env::temp_dir().join(format!("realip-b-axum-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("axum.sock");
    let _ = std::fs::remove_file(&path);
    let listener = ProxyListener::builder()
        .policy(Policy::Optional)
        .bind_unix(&path)
        .unwrap();
    let server = serve(listener);

    // Through a local proxy that sends PROXY: the header's source.
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let header = ProxyHeader::v2(client_v4(), "127.0.0.1:80".parse().unwrap()).to_bytes();
    let body = within("proxied request", get_body(stream, &header)).await;
    assert!(
        body.starts_with(&format!("client={} socket=unix:", client_v4())),
        "{body}"
    );
    assert!(body.contains("version=v2 command=proxy"), "{body}");

    // Without a header, a Unix peer has no IP address.
    let stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    let body = within("plain request", get_body(stream, b"")).await;
    assert!(body.starts_with("client=- socket=unix:"), "{body}");

    server.abort();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
}
