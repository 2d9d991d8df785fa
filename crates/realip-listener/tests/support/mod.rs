//! Helpers shared by the listener's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use realip_listener::{Builder, Connection, Error, ProxyListener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Upper bound for anything that should be immediate.
pub const QUICK: Duration = Duration::from_secs(2);

pub async fn listen(builder: Builder) -> (ProxyListener<TcpListener>, SocketAddr) {
    let listener = builder.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
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
) -> Result<Connection<tokio::net::TcpStream>, Error> {
    tokio::time::timeout(QUICK, listener.try_accept())
        .await
        .expect("no connection or error within 2 s")
}

/// Sends `bytes` on a new connection and returns the listener's result.
pub async fn send(
    listener: &mut ProxyListener<TcpListener>,
    addr: SocketAddr,
    bytes: &[u8],
) -> (TcpStream, Result<Connection<TcpStream>, Error>) {
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
