//! Unix socket listeners and IPv6 (and dual-stack) TCP listeners.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use realip_core::{AddrSource, PeerAddr, TrustedProxies};
use realip_listener::{
    Command, Family, HandshakeError, Policy, ProxyHeader, ProxyListener, ProxyVersion,
};
use support::{assert_unix_paths, client_v4, client_v6, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// A fresh socket path in a per-test directory.
fn socket_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realip-b-unix-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("listener.sock");
    let _ = std::fs::remove_file(&path);
    path
}

/// Writes `bytes` and returns the client socket (kept open by the caller).
async fn unix_send(path: &PathBuf, bytes: &[u8]) -> UnixStream {
    let mut stream = UnixStream::connect(path).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

#[tokio::test]
async fn unix_listener_takes_the_client_from_an_inet_header() {
    let path = socket_path("inet");
    let mut listener = ProxyListener::bind_unix(&path).unwrap();
    let mut bytes = ProxyHeader::v2(client_v4(), "10.0.0.1:1883".parse().unwrap()).to_bytes();
    bytes.extend_from_slice(b"after");
    let _client = unix_send(&path, &bytes).await;

    let (mut stream, addr) = within("accept", listener.accept()).await;
    let client = addr.client().unwrap();
    assert_eq!(client.socket_addr(), Some(client_v4()));
    assert_eq!(client.source(), &AddrSource::ProxyProtocol);
    assert!(addr.socket_peer().is_unix());
    assert_eq!(addr.local_addr(), None);
    let mut after = [0; 5];
    stream.read_exact(&mut after).await.unwrap();
    assert_eq!(&after, b"after");
}

#[tokio::test]
async fn unix_family_header_leaves_the_client_unknown() {
    let path = socket_path("unixfamily");
    let mut listener = ProxyListener::bind_unix(&path).unwrap();
    let header = ProxyHeader::v2_unix(b"/run/client.sock", b"/run/broker.sock").to_bytes();
    let _client = unix_send(&path, &header).await;

    let (_stream, addr) = within("accept", listener.accept()).await;
    // No IP anywhere: the client is unknown, the header's paths are reported as they are.
    assert_eq!(addr.client(), None);
    let info = addr.proxy_info().unwrap();
    assert_unix_paths(info, b"/run/client.sock", b"/run/broker.sock");
}

#[tokio::test]
async fn unix_peer_without_header_under_optional_has_no_client_ip() {
    let path = socket_path("optional");
    let mut listener = ProxyListener::builder()
        .policy(Policy::Optional)
        .bind_unix(&path)
        .unwrap();
    let _client = unix_send(&path, b"hello").await;

    let (mut stream, addr) = within("accept", listener.accept()).await;
    assert_eq!(addr.client(), None);
    assert!(addr.proxy_info().is_none());
    assert!(matches!(addr.socket_peer(), PeerAddr::Unix(_)));
    let mut hello = [0; 5];
    stream.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"hello");
}

#[tokio::test]
async fn unix_peers_trusted_by_the_set_must_send_a_header() {
    let path = socket_path("trusted");
    let mut listener = ProxyListener::builder()
        .trusted(TrustedProxies::new().with_unix())
        .policy(Policy::Require)
        .bind_unix(&path)
        .unwrap();

    // No header from a trusted Unix peer: closed with "missing".
    let mut plain = unix_send(&path, b"plain data").await;
    let err = within("first result", listener.try_accept())
        .await
        .unwrap_err();
    assert!(matches!(err, HandshakeError::Missing { .. }), "{err}");
    assert!(err.peer().is_unix());
    let mut rest = Vec::new();
    let _ = within("closed", plain.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());

    // With a header: accepted.
    let _client = unix_send(
        &path,
        &ProxyHeader::v1(client_v4(), "127.0.0.1:80".parse().unwrap()).to_bytes(),
    )
    .await;
    let (_stream, addr) = within("accept", listener.accept()).await;
    assert_eq!(addr.client().unwrap().socket_addr(), Some(client_v4()));
}

#[tokio::test]
async fn unix_peers_not_in_the_set_may_not_send_a_header() {
    let path = socket_path("untrusted");
    let mut listener = ProxyListener::builder()
        .trusted("10.0.0.0/8".parse::<TrustedProxies>().unwrap())
        .policy(Policy::Require)
        .bind_unix(&path)
        .unwrap();

    let _forged = unix_send(
        &path,
        &ProxyHeader::v2(client_v4(), "127.0.0.1:80".parse().unwrap()).to_bytes(),
    )
    .await;
    let err = within("forged", listener.try_accept()).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Forbidden { .. }), "{err}");
}

/// Binds on `[::1]:0` (the test machine has ::1 on lo).
async fn bind_v6(builder: realip_listener::Builder) -> (ProxyListener, SocketAddr) {
    let listener = builder.bind("[::1]:0").await.expect("bind [::1]:0");
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

#[tokio::test]
async fn ipv6_listener_with_v1_tcp6_header() {
    let (mut listener, addr) = bind_v6(ProxyListener::builder()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let socket = tcp.local_addr().unwrap();
    tcp.write_all(&ProxyHeader::v1(client_v6(), addr).to_bytes())
        .await
        .unwrap();
    let (_stream, proxied) = within("accept", listener.accept()).await;

    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v6()));
    assert_eq!(proxied.socket_peer(), &PeerAddr::Inet(socket));
    assert_eq!(proxied.local_addr(), Some(addr));
    let info = proxied.proxy_info().unwrap();
    assert_eq!(info.version(), ProxyVersion::V1);
    assert_eq!(info.family(), Family::Inet6);
    assert_eq!(info.destination_inet(), Some(addr));
}

#[tokio::test]
async fn ipv6_listener_canonicalizes_an_ipv4_mapped_source() {
    let (mut listener, addr) = bind_v6(ProxyListener::builder()).await;
    let mapped: SocketAddr = "[::ffff:198.51.100.23]:40123".parse().unwrap();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&ProxyHeader::v2(mapped, addr).to_bytes())
        .await
        .unwrap();
    let (_stream, proxied) = within("accept", listener.accept()).await;

    let client = proxied.client().unwrap();
    assert_eq!(client.ip(), "198.51.100.23".parse::<IpAddr>().unwrap());
    assert_eq!(client.socket_addr(), Some(client_v4()));
    assert_eq!(proxied.proxy_info().unwrap().family(), Family::Inet6);
}

#[tokio::test]
async fn ipv6_peer_trust_is_decided_by_its_ipv6_address() {
    // ::1 is trusted: its header is used.
    let builder = ProxyListener::builder().trusted("::1".parse::<TrustedProxies>().unwrap());
    let (mut listener, addr) = bind_v6(builder).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&ProxyHeader::v2(client_v4(), addr).to_bytes())
        .await
        .unwrap();
    let (_stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));

    // Only 127.0.0.0/8 is trusted: ::1 is not, its header is refused, and a plain
    // connection from it is served with its socket address.
    let builder =
        ProxyListener::builder().trusted(TrustedProxies::parse_list(["127.0.0.0/8"]).unwrap());
    let (mut listener, addr) = bind_v6(builder).await;
    let mut forged = TcpStream::connect(addr).await.unwrap();
    forged
        .write_all(&ProxyHeader::v1(client_v6(), addr).to_bytes())
        .await
        .unwrap();
    let err = within("forged", listener.try_accept()).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Forbidden { .. }), "{err}");

    let mut plain = TcpStream::connect(addr).await.unwrap();
    let socket = plain.local_addr().unwrap();
    plain.write_all(b"MQTT").await.unwrap();
    let (mut stream, proxied) = within("plain", listener.accept()).await;
    let client = proxied.client().unwrap();
    assert_eq!(client.socket_addr(), Some(socket));
    assert_eq!(client.source(), &AddrSource::Socket);
    let mut data = [0; 4];
    stream.read_exact(&mut data).await.unwrap();
    assert_eq!(&data, b"MQTT");
}

#[tokio::test]
async fn dual_stack_listener_matches_ipv4_peers_against_ipv4_ranges() {
    // A listener on [::] sees IPv4 peers as ::ffff:127.0.0.1; trust in 127.0.0.0/8 must
    // still apply (net.ipv6.bindv6only is 0 on the test machine).
    let listener = ProxyListener::builder()
        .trusted(TrustedProxies::parse_list(["127.0.0.0/8"]).unwrap())
        .policy(Policy::Require)
        .bind("[::]:0")
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut listener = listener;
    let v4_addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut tcp = TcpStream::connect(v4_addr).await.unwrap();
    tcp.write_all(&ProxyHeader::v1(client_v4(), v4_addr).to_bytes())
        .await
        .unwrap();
    let (_stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
    assert_eq!(
        proxied.socket_peer().ip(),
        Some("127.0.0.1".parse::<IpAddr>().unwrap())
    );
}

#[tokio::test]
async fn v2_local_over_ipv6_uses_the_socket_addresses() {
    let (mut listener, addr) = bind_v6(ProxyListener::builder()).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let socket = tcp.local_addr().unwrap();
    // LOCAL with an IPv6 address block that must be skipped, then data.
    let mut bytes = ProxyHeader::v2(client_v6(), addr)
        .with_command(Command::Local)
        .to_bytes();
    bytes.extend_from_slice(b"probe");
    tcp.write_all(&bytes).await.unwrap();
    let (mut stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(socket));
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
    assert_eq!(proxied.proxy_info().unwrap().command(), Command::Local);
    let mut data = [0; 5];
    stream.read_exact(&mut data).await.unwrap();
    assert_eq!(&data, b"probe");
}
