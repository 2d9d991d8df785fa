//! A live policy source: a reload that trusts a new proxy applies to the next connection,
//! while a session accepted before it stays up.

mod support;

use std::net::SocketAddr;

use realip_core::{AddrSource, Live, TrustedProxies};
use realip_listener::{HandshakeError, Policy, PolicySource, ProxyHeader, ProxyListener};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LB1: &str = "127.0.0.1";
const LB2: &str = "127.0.0.5";

fn trusting(list: &str) -> PolicySource {
    PolicySource::trusted(list.parse::<TrustedProxies>().unwrap(), Policy::Require)
}

#[tokio::test]
async fn a_reload_trusts_a_new_proxy_for_the_next_connection_and_keeps_sessions() {
    let live = Live::new(trusting(LB1));
    let (mut listener, addr) =
        listen(ProxyListener::builder().policy_source(PolicySource::live(live.clone()))).await;
    let first: SocketAddr = "198.51.100.1:40001".parse().unwrap();
    let second: SocketAddr = "198.51.100.2:40002".parse().unwrap();

    // A session through LB1.
    let mut session = connect_from(LB1, addr).await;
    session
        .write_all(&ProxyHeader::v2(first, addr).to_bytes())
        .await
        .unwrap();
    let (mut session_server, proxied) = next(&mut listener).await.unwrap();
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(first));

    // LB2 is not trusted yet: its header closes the connection.
    let mut refused = connect_from(LB2, addr).await;
    refused
        .write_all(&ProxyHeader::v2(second, addr).to_bytes())
        .await
        .unwrap();
    let err = next(&mut listener).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Forbidden { .. }), "{err}");
    assert_closed(&mut refused).await;

    // The reload.
    live.store(trusting(&format!("{LB1}, {LB2}")));

    let mut through_lb2 = connect_from(LB2, addr).await;
    let mut bytes = ProxyHeader::v2(second, addr).to_bytes();
    bytes.extend_from_slice(b"hello");
    through_lb2.write_all(&bytes).await.unwrap();
    let (mut server, proxied) = next(&mut listener).await.unwrap();
    let client = proxied.client().unwrap();
    assert_eq!(client.socket_addr(), Some(second));
    assert_eq!(client.source(), &AddrSource::ProxyProtocol);
    assert_eq!(read_n(&mut server, 5).await, b"hello");

    // The session from before the reload is still up, both ways.
    session.write_all(b"ping").await.unwrap();
    assert_eq!(read_n(&mut session_server, 4).await, b"ping");
    session_server.write_all(b"pong").await.unwrap();
    let mut pong = [0; 4];
    within("pong", session.read_exact(&mut pong)).await.unwrap();
    assert_eq!(&pong, b"pong");

    // A reload that drops LB1 does not touch its open session either.
    live.store(trusting(LB2));
    session_server.write_all(b"still").await.unwrap();
    let mut still = [0; 5];
    within("still", session.read_exact(&mut still))
        .await
        .unwrap();
    assert_eq!(&still, b"still");
    let mut again = connect_from(LB1, addr).await;
    again
        .write_all(&ProxyHeader::v1(first, addr).to_bytes())
        .await
        .unwrap();
    let err = next(&mut listener).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Forbidden { .. }), "{err}");
}
