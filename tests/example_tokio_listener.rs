//! The `tokio_listener` example's documented contract, driven as a separate process.
#![cfg(feature = "listener")]

mod e2e;

use std::net::SocketAddr;
use std::time::Duration;

use realip::listener::ProxyHeader;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Child;

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    async fn start(args: &[&str]) -> Self {
        let (child, addr) = e2e::start_example("tokio_listener", "listener", args, false).await;
        Self { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn connect_from(src: &str, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{src}:0").parse().unwrap()).unwrap();
    socket.connect(dst).await.unwrap()
}

/// Reads the banner line (or nothing, when the server closes first).
async fn banner(conn: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut byte))
            .await
            .expect("no banner and no close within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return None;
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Some(String::from_utf8(line).unwrap());
        }
    }
}

async fn echo(conn: &mut TcpStream, data: &[u8]) {
    conn.write_all(data).await.unwrap();
    let mut back = vec![0; data.len()];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
}

#[tokio::test]
async fn proxied_connections_get_the_banner_then_echo() {
    let server = Server::start(&[]).await;
    let mut conn = connect_from("127.0.0.1", server.addr).await;
    let local = conn.local_addr().unwrap();
    let mut bytes = ProxyHeader::v1("192.0.2.1:5000".parse().unwrap(), server.addr).to_bytes();
    bytes.extend_from_slice(b"early data ");
    conn.write_all(&bytes).await.unwrap();
    assert_eq!(
        banner(&mut conn).await.unwrap(),
        format!("peer=192.0.2.1:5000 socket={local} version=v1 command=proxy\n")
    );
    let mut back = [0; 11];
    conn.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"early data ");
    echo(&mut conn, b"hello").await;

    let mut conn = connect_from("127.0.0.1", server.addr).await;
    let local = conn.local_addr().unwrap();
    ProxyHeader::v2_local().write_to(&mut conn).await.unwrap();
    assert_eq!(
        banner(&mut conn).await.unwrap(),
        format!("peer={local} socket={local} version=v2 command=local\n")
    );
    echo(&mut conn, b"x").await;
}

#[tokio::test]
async fn missing_header_is_closed_without_a_banner() {
    let server = Server::start(&["--policy", "require"]).await;
    let mut conn = connect_from("127.0.0.1", server.addr).await;
    conn.write_all(b"CONNECT without header\r\n").await.unwrap();
    assert_eq!(banner(&mut conn).await, None);
}

#[tokio::test]
async fn trusted_peers_get_the_policy_others_are_rejected_if_they_send_a_header() {
    let server = Server::start(&["--trusted", "127.0.0.1/32", "--policy", "require"]).await;

    let mut trusted = connect_from("127.0.0.1", server.addr).await;
    ProxyHeader::v2("198.51.100.9:9".parse().unwrap(), server.addr)
        .with_crc32c()
        .write_to(&mut trusted)
        .await
        .unwrap();
    let line = banner(&mut trusted).await.unwrap();
    assert!(
        line.starts_with("peer=198.51.100.9:9 socket=127.0.0.1:"),
        "{line}"
    );
    assert!(line.ends_with("version=v2 command=proxy\n"), "{line}");

    let mut forged = connect_from("127.0.0.2", server.addr).await;
    ProxyHeader::v1("198.51.100.9:9".parse().unwrap(), server.addr)
        .write_to(&mut forged)
        .await
        .unwrap();
    assert_eq!(banner(&mut forged).await, None);

    let mut direct = connect_from("127.0.0.2", server.addr).await;
    let local = direct.local_addr().unwrap();
    direct.write_all(b"plain").await.unwrap();
    assert_eq!(
        banner(&mut direct).await.unwrap(),
        format!("peer={local} socket={local} version=none command=none\n")
    );
    let mut back = [0; 5];
    direct.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"plain");
}

#[tokio::test]
async fn header_timeout_closes_a_silent_client_without_delaying_others() {
    let server = Server::start(&["--header-timeout", "2"]).await;
    let mut silent = connect_from("127.0.0.1", server.addr).await;
    let mut good = connect_from("127.0.0.1", server.addr).await;
    ProxyHeader::v1("192.0.2.3:3".parse().unwrap(), server.addr)
        .write_to(&mut good)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    assert!(
        banner(&mut good)
            .await
            .unwrap()
            .starts_with("peer=192.0.2.3:3 ")
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(banner(&mut silent).await, None);
}
