//! hyper / hyper-util: an accept loop over a `ProxyListener`, and the `Stream` of results.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;

use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use realip_listener::{HandshakeError, Policy, ProxiedAddr, ProxyHeader, ProxyListener};
use support::{bind, client_v4, client_v6, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Serves every accepted connection with hyper's HTTP/1 server; the response body is the
/// real client address.
fn spawn_hyper(mut listener: ProxyListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (stream, proxied) = listener.accept().await;
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |mut req: hyper::Request<hyper::body::Incoming>| {
                        // The per-connection addresses, as a tower layer would find them.
                        req.extensions_mut().insert(proxied.clone());
                        async move {
                            let addr = req.extensions().get::<ProxiedAddr>().unwrap();
                            let body = addr
                                .client()
                                .map(|client| client.to_string())
                                .unwrap_or_default();
                            Ok::<_, Infallible>(hyper::Response::new(body))
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn request(addr: SocketAddr, header: Vec<u8>) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = header;
    bytes.extend_from_slice(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    tcp.write_all(&bytes).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test]
async fn hyper_accept_loop_sees_each_connections_client() {
    let (listener, addr) = bind(Policy::Require).await;
    let server = spawn_hyper(listener);

    let (a, b) = within("requests", async {
        tokio::join!(
            request(addr, ProxyHeader::v1(client_v4(), addr).to_bytes()),
            request(
                addr,
                ProxyHeader::v2(client_v6(), "[2001:db8::1]:80".parse().unwrap()).to_bytes()
            ),
        )
    })
    .await;
    assert_eq!(a, client_v4().to_string());
    assert_eq!(b, client_v6().to_string());
    server.abort();
}

#[tokio::test]
async fn stream_yields_connections_and_failures_in_completion_order() {
    let (mut listener, addr) = bind(Policy::Require).await;

    // A bad signature, then a good header.
    let mut bad = TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let first = within("first item", listener.next()).await.unwrap();
    let Err(err) = first else {
        panic!("a connection without a header is an error under require");
    };
    assert!(matches!(err, HandshakeError::Missing { .. }), "{err}");
    assert_eq!(err.peer().inet(), Some(bad.local_addr().unwrap()));

    let mut good = TcpStream::connect(addr).await.unwrap();
    good.write_all(&ProxyHeader::v1(client_v4(), addr).to_bytes())
        .await
        .unwrap();
    let (_stream, proxied) = within("second item", listener.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));

    // The rejected socket was closed by the listener.
    let mut rest = Vec::new();
    let read = within("bad closed", bad.read_to_end(&mut rest)).await;
    assert!(read.is_err() || rest.is_empty());
}
