//! Headers are read concurrently: silent or slow clients never delay others, time out,
//! and are capped.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use realip_listener::{HandshakeError, ProxyHeader, ProxyListener};
use support::*;
use tokio::io::AsyncWriteExt;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

async fn send_good(addr: SocketAddr, client: &str) -> tokio::net::TcpStream {
    let mut conn = connect(addr).await;
    let mut bytes = ProxyHeader::v1(sa(client), addr).to_bytes();
    bytes.extend_from_slice(b"hi");
    conn.write_all(&bytes).await.unwrap();
    conn
}

#[tokio::test]
async fn silent_client_does_not_delay_a_good_one() {
    // Default header timeout: 3 s.
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    let _silent = connect(addr).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let _good = send_good(addr, "192.0.2.1:1000").await;
    let (mut stream, proxied) = next(&mut listener).await.unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_millis(500),
        "good client served after {elapsed:?}"
    );
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.1:1000");
    assert_eq!(read_n(&mut stream, 2).await, b"hi");
    assert_eq!(
        listener.pending(),
        1,
        "the silent handshake is still pending"
    );
}

#[tokio::test]
async fn a_crowd_of_silent_and_slow_clients_does_not_delay_a_good_one() {
    let (mut listener, addr) = listen(ProxyListener::builder().accept_batch(8)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        loop {
            let conn = listener.accept().await;
            if tx.send((conn, listener.pending())).is_err() {
                break;
            }
        }
    });
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut conn = connect(addr).await;
        if i % 2 == 0 {
            // Half of them send the start of a header and stall.
            conn.write_all(b"PROXY TCP4 192.0.2.").await.unwrap();
        }
        idle.push(conn);
    }
    let start = Instant::now();
    let _good = send_good(addr, "192.0.2.99:9").await;
    let ((_stream, proxied), pending) = tokio::time::timeout(QUICK, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "served after {:?}",
        start.elapsed()
    );
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.99:9");
    assert!(
        pending >= 150,
        "the idle clients should still be pending, got {pending}"
    );
    server.abort();
}

#[tokio::test]
async fn timeout_closes_a_silent_client() {
    let timeout = Duration::from_millis(300);
    let (mut listener, addr) = listen(ProxyListener::builder().header_timeout(timeout)).await;
    let mut silent = connect(addr).await;
    let start = Instant::now();
    let err = next(&mut listener).await.err().unwrap();
    let elapsed = start.elapsed();
    assert!(matches!(err, HandshakeError::Timeout { .. }), "{err}");
    assert_eq!(err.reason(), "timeout");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_closed(&mut silent).await;
    assert_eq!(listener.pending(), 0);
}

#[tokio::test]
async fn timeout_covers_a_dribbling_header() {
    let timeout = Duration::from_millis(300);
    let (mut listener, addr) = listen(ProxyListener::builder().header_timeout(timeout)).await;
    let mut slow = connect(addr).await;
    let writer = tokio::spawn(async move {
        for b in b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2" {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        slow
    });
    let err = next(&mut listener).await.err().unwrap();
    assert!(matches!(err, HandshakeError::Timeout { .. }), "{err}");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn accepting_pauses_at_the_pending_cap() {
    let timeout = Duration::from_millis(400);
    let (mut listener, addr) = listen(
        ProxyListener::builder()
            .max_pending(2)
            .header_timeout(timeout),
    )
    .await;
    let _silent1 = connect(addr).await;
    let _silent2 = connect(addr).await;
    // Let the listener pick both up.
    let nothing = tokio::time::timeout(Duration::from_millis(100), listener.try_accept()).await;
    assert!(nothing.is_err());
    assert_eq!(listener.pending(), 2);

    let start = Instant::now();
    let _good = send_good(addr, "192.0.2.5:5").await;
    // The good connection waits in the kernel backlog until the silent ones time out.
    let mut served = None;
    while served.is_none() {
        match next(&mut listener).await {
            Ok(conn) => served = Some(conn),
            Err(err) => assert!(matches!(err, HandshakeError::Timeout { .. }), "{err}"),
        }
        assert!(listener.pending() <= 2);
    }
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250),
        "cap not enforced: served after {elapsed:?}"
    );
    assert_eq!(
        served.unwrap().1.client().unwrap().to_string(),
        "192.0.2.5:5"
    );
}

#[tokio::test]
async fn probe_that_closes_without_a_byte_is_quiet() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    drop(connect(addr).await);
    let err = next(&mut listener).await.err().unwrap();
    assert!(matches!(err, HandshakeError::Closed { .. }), "{err}");
    assert!(err.is_quiet());
    assert_eq!(err.reason(), "closed");
    // The listener keeps going.
    let _good = send_good(addr, "192.0.2.1:2").await;
    assert!(next(&mut listener).await.is_ok());
}

#[tokio::test]
async fn accept_skips_failures_and_is_cancel_safe() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    // A bad connection first: accept() never returns it.
    let mut bad = connect(addr).await;
    bad.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // The good header arrives slowly while accept() is cancelled again and again.
    let header = ProxyHeader::v2(sa("192.0.2.77:7"), addr).to_bytes();
    let mut good = connect(addr).await;
    let writer = tokio::spawn(async move {
        for chunk in header.chunks(5) {
            good.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        good
    });
    let start = Instant::now();
    let (_stream, proxied) = loop {
        if let Ok(conn) = tokio::time::timeout(Duration::from_millis(5), listener.accept()).await {
            break conn;
        }
        assert!(start.elapsed() < QUICK, "never accepted");
    };
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.77:7");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn stream_yields_connections_and_errors() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    drop(connect(addr).await);
    let first = tokio::time::timeout(QUICK, listener.next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_err());
    let _good = send_good(addr, "192.0.2.8:8").await;
    let (_stream, proxied) = tokio::time::timeout(QUICK, listener.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.8:8");
}

#[tokio::test]
async fn many_concurrent_clients_all_get_their_own_address() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    let clients: Vec<_> = (0..100u16)
        .map(|i| {
            tokio::spawn(async move {
                let mut conn = connect(addr).await;
                let header = if i % 2 == 0 {
                    ProxyHeader::v1(sa(&format!("192.0.2.{}:{}", i % 250, 1000 + i)), addr)
                } else {
                    ProxyHeader::v2(sa(&format!("192.0.2.{}:{}", i % 250, 1000 + i)), addr)
                };
                let mut bytes = header.to_bytes();
                bytes.extend_from_slice(&i.to_be_bytes());
                conn.write_all(&bytes).await.unwrap();
                conn
            })
        })
        .collect();
    for _ in 0..100 {
        let (mut stream, proxied) = next(&mut listener).await.unwrap();
        let id = u16::from_be_bytes(read_n(&mut stream, 2).await.try_into().unwrap());
        assert_eq!(
            proxied.client().unwrap().to_string(),
            format!("192.0.2.{}:{}", id % 250, 1000 + id)
        );
    }
    for c in clients {
        drop(c.await.unwrap());
    }
}

#[tokio::test]
async fn probe_that_resets_without_a_byte_is_quiet() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    let probe = connect(addr).await;
    // SO_LINGER 0: close with RST, as HAProxy's health checks do. (Deprecated because a
    // non-zero linger blocks on drop; a zero linger does not.)
    #[allow(deprecated)]
    probe.set_linger(Some(Duration::ZERO)).unwrap();
    drop(probe);
    let err = next(&mut listener).await.err().unwrap();
    assert!(err.is_quiet(), "{err}");
}
