//! `Builder::defer_accept` (Linux `TCP_DEFER_ACCEPT`): the kernel hands a connection over
//! only with its first bytes, so a header sent after connecting is read at accept, and a
//! peer that sends nothing stays out of the listener until the wait is over.
#![cfg(any(target_os = "linux", target_os = "android"))]

mod support;

use std::time::{Duration, Instant};

use realip_listener::{
    HandshakeError, Policy, ProxyHeader, ProxyListener, defer_accept, set_defer_accept,
};
use support::{connect, listen, read_n, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Polls `listener` for `period` (accepting whatever the kernel hands over), then returns
/// how many handshakes it holds.
async fn pending_after(listener: &mut ProxyListener<TcpListener>, period: Duration) -> usize {
    let accepted = tokio::time::timeout(period, listener.try_accept()).await;
    assert!(accepted.is_err(), "nothing may finish yet: {accepted:?}");
    listener.pending()
}

#[tokio::test]
async fn a_deferred_listener_takes_a_connection_with_its_header_and_a_silent_one_late() {
    let (mut listener, addr) = listen(
        ProxyListener::builder()
            .policy(Policy::Require)
            .header_timeout(Duration::from_millis(200))
            .defer_accept(Duration::from_secs(1)),
    )
    .await;
    assert_eq!(
        defer_accept(listener.get_ref()).unwrap(),
        Some(Duration::from_secs(1))
    );

    let silent_since = Instant::now();
    let _silent = connect(addr).await;
    let mut proxy = connect(addr).await;
    // Both are connected, neither has sent a byte: the kernel keeps both.
    assert_eq!(
        pending_after(&mut listener, Duration::from_millis(200)).await,
        0
    );

    let header = ProxyHeader::v2("203.0.113.7:4000".parse().unwrap(), addr).to_bytes();
    let mut sent = header.clone();
    sent.extend_from_slice(b"CONNECT");
    proxy.write_all(&sent).await.unwrap();
    let (mut stream, proxied) = within("the proxied connection", listener.try_accept())
        .await
        .expect("its header is valid");
    assert_eq!(proxied.client().unwrap().to_string(), "203.0.113.7:4000");
    assert_eq!(read_n(&mut stream, 7).await, b"CONNECT");
    assert_eq!(
        listener.pending(),
        0,
        "the silent peer is still in the kernel"
    );

    // The silent peer is handed over after the wait, and only then timed out.
    let failed = tokio::time::timeout(Duration::from_secs(10), listener.try_accept())
        .await
        .expect("the silent peer is accepted after the wait");
    assert!(
        matches!(failed, Err(HandshakeError::Timeout { .. })),
        "{failed:?}"
    );
    assert!(
        silent_since.elapsed() >= Duration::from_millis(900),
        "accepted before the wait was over: {:?}",
        silent_since.elapsed()
    );
}

#[tokio::test]
async fn without_defer_accept_a_silent_peer_is_a_pending_handshake_at_once() {
    let (mut listener, addr) = listen(ProxyListener::builder().policy(Policy::Require)).await;
    assert_eq!(defer_accept(listener.get_ref()).unwrap(), None);
    let _silent = connect(addr).await;
    assert_eq!(
        pending_after(&mut listener, Duration::from_millis(200)).await,
        1
    );
}

#[tokio::test]
async fn set_defer_accept_sets_and_clears_the_option_on_a_listener_bound_elsewhere() {
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    set_defer_accept(&tcp, Duration::from_secs(1)).unwrap();
    assert_eq!(defer_accept(&tcp).unwrap(), Some(Duration::from_secs(1)));
    // Rounded up to whole seconds, then to the kernel's SYN-ACK retransmissions (1 s, then
    // 2 s, 4 s, ... apart): 1.5 s is 2 s, two retransmissions, which the kernel gives
    // back as the 3 s they take.
    set_defer_accept(&tcp, Duration::from_millis(1500)).unwrap();
    assert_eq!(defer_accept(&tcp).unwrap(), Some(Duration::from_secs(3)));
    set_defer_accept(&tcp, Duration::ZERO).unwrap();
    assert_eq!(defer_accept(&tcp).unwrap(), None);
}
