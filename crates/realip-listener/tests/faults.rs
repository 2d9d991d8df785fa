//! Faults on the PROXY port: a client that resets in the middle of its header, the header
//! timeout while many peers stall at once, and a flood of junk (random bytes, half headers,
//! HTTP, a TLS ClientHello). None of them ends the listener, leaks a pending handshake or
//! keeps a good client waiting.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use realip_listener::{HandshakeError, Policy, ProxyHeader, ProxyListener};
use support::{connect, connect_from, listen, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Serves `listener` forever: each accepted connection gets its client address back.
fn serve(mut listener: ProxyListener<TcpListener>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (mut stream, addr) = listener.accept().await;
            tokio::spawn(async move {
                let client = addr.client_socket_addr().unwrap();
                let _ = stream.write_all(format!("{client}\n").as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    })
}

/// One good client: connects from `src`, sends its header, reads its address back; returns
/// how long that took.
async fn good_client(addr: SocketAddr, src: &str, port: u16) -> Duration {
    let started = Instant::now();
    let mut tcp = connect_from(src, addr).await;
    let real = SocketAddr::new("198.51.100.1".parse().unwrap(), port);
    tcp.write_all(&ProxyHeader::v2(real, addr).to_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    tcp.read_to_string(&mut reply).await.unwrap();
    assert_eq!(
        reply.trim_end(),
        real.to_string(),
        "a good client's address"
    );
    started.elapsed()
}

#[tokio::test]
async fn client_reset_mid_header_fails_that_connection_only() {
    let (mut listener, addr) = listen(ProxyListener::builder().policy(Policy::Require)).await;
    let header = ProxyHeader::v2("203.0.113.5:5000".parse().unwrap(), addr).to_bytes();

    for cut in [1, 8, 15, header.len() - 1] {
        let mut tcp = connect(addr).await;
        tcp.write_all(&header[..cut]).await.unwrap();
        tcp.set_zero_linger().unwrap();
        drop(tcp); // RST
        let Err(err) = within("the reset connection's error", listener.try_accept()).await else {
            panic!("a reset mid-header must be that connection's error");
        };
        assert!(
            matches!(
                err,
                HandshakeError::Truncated { .. } | HandshakeError::Io { .. }
            ),
            "cut at {cut}: {err:?}"
        );
        assert_eq!(listener.pending(), 0, "nothing left pending");

        // The next client is served, with its own address.
        let mut good = connect(addr).await;
        good.write_all(&ProxyHeader::v1("192.0.2.9:9".parse().unwrap(), addr).to_bytes())
            .await
            .unwrap();
        let (_stream, proxied) = within("the next client", listener.accept()).await;
        assert_eq!(
            proxied.client_socket_addr(),
            Some("192.0.2.9:9".parse().unwrap())
        );
    }
}

/// What a peer that stalled mid-header reads once its header timeout has run out, with
/// `reset_on_timeout` set to `reset`.
async fn read_after_header_timeout(reset: bool) -> std::io::Result<usize> {
    let (mut listener, addr) = listen(
        ProxyListener::builder()
            .policy(Policy::Require)
            .header_timeout(Duration::from_millis(100))
            .reset_on_timeout(reset),
    )
    .await;
    let header = ProxyHeader::v2("203.0.113.5:5000".parse().unwrap(), addr).to_bytes();
    let mut tcp = connect(addr).await;
    tcp.write_all(&header[..10]).await.unwrap();
    let Err(err) = within("the stalled peer's timeout", listener.try_accept()).await else {
        panic!("a stalled peer must time out");
    };
    assert!(matches!(err, HandshakeError::Timeout { .. }), "{err:?}");
    let mut buf = [0u8; 16];
    within("the stalled peer's read", tcp.read(&mut buf)).await
}

#[tokio::test]
async fn a_timed_out_peer_is_reset_by_default_and_closed_when_asked() {
    let reset = read_after_header_timeout(true).await;
    assert_eq!(
        reset.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionReset),
        "default: the timeout resets the connection, got {reset:?}"
    );
    let closed = read_after_header_timeout(false).await;
    assert_eq!(
        closed.ok(),
        Some(0),
        "reset_on_timeout(false): an orderly close, the end of the stream"
    );
}

#[tokio::test]
async fn header_timeout_under_load_frees_every_stalled_peer() {
    const STALLED: usize = 1000;
    let timeout = Duration::from_millis(500);
    let (listener, addr) = listen(
        ProxyListener::builder()
            .policy(Policy::Require)
            .header_timeout(timeout),
    )
    .await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        let mut listener = listener;
        loop {
            let result = listener.try_accept().await;
            let pending = listener.pending();
            if tx.send((result.map(|(_, a)| a), pending)).is_err() {
                return;
            }
        }
    });

    // Stalled peers: half send nothing, half a partial header.
    let header = ProxyHeader::v2("203.0.113.5:5000".parse().unwrap(), addr).to_bytes();
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let mut tcp = connect(addr).await;
        if i % 2 == 1 {
            tcp.write_all(&header[..10]).await.unwrap();
        }
        stalled.push(tcp);
    }
    // A good client meanwhile is served at once.
    let mut good = connect(addr).await;
    let real: SocketAddr = "198.51.100.7:7".parse().unwrap();
    let started = Instant::now();
    good.write_all(&ProxyHeader::v2(real, addr).to_bytes())
        .await
        .unwrap();
    let mut timeouts = 0;
    let mut served_after = None;
    let deadline = Instant::now() + timeout * 20;
    while timeouts < STALLED || served_after.is_none() {
        let (result, pending) = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("{timeouts} of {STALLED} stalled peers timed out, good client served: {served_after:?}")
            })
            .unwrap();
        match result {
            Ok(proxied) => {
                assert_eq!(proxied.client_socket_addr(), Some(real));
                served_after = Some(started.elapsed());
            }
            Err(HandshakeError::Timeout { timeout: t, .. }) => {
                assert_eq!(t, timeout);
                timeouts += 1;
                if timeouts == STALLED {
                    assert_eq!(pending, 0, "a stalled handshake outlived its timeout");
                }
            }
            Err(other) => panic!("unexpected: {other:?}"),
        }
    }
    let served_after = served_after.unwrap();
    assert!(
        served_after < timeout,
        "the good client waited {served_after:?}, as long as the stalled ones"
    );
    // Every stalled peer was closed by the listener.
    for tcp in &mut stalled {
        let mut buf = [0; 1];
        let n = within("closed by the listener", tcp.read(&mut buf))
            .await
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    server.abort();
}

/// A TLS 1.2/1.3 ClientHello's first bytes (record header, handshake header, version).
const CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, 0x5a, 0x5b, 0x5c, 0x5d, 0x5e,
    0x5f, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c,
];

/// xorshift64*: deterministic junk.
fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// Opens junk connections until `stop`; returns how many were opened and how many of them
/// the listener closed (the rest were still open when the flood ended).
async fn flood(addr: SocketAddr, stop: Instant) -> (usize, usize) {
    let header = ProxyHeader::v2("203.0.113.5:5000".parse().unwrap(), addr).to_bytes();
    let mut tasks = tokio::task::JoinSet::new();
    let mut opened = 0;
    while Instant::now() < stop {
        for kind in 0..5u64 {
            let bytes: Vec<u8> = match kind {
                0 => junk(opened as u64 + 1, 64),
                1 => header[..header.len() / 2].to_vec(),
                2 => b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n".to_vec(),
                3 => CLIENT_HELLO.to_vec(),
                _ => b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n".to_vec(),
            };
            opened += 1;
            tasks.spawn(async move {
                let Ok(mut tcp) = TcpStream::connect(addr).await else {
                    return false;
                };
                let _ = tcp.write_all(&bytes).await;
                let mut buf = [0; 64];
                // Closed by the listener: a rejected header at once, a half one at its
                // timeout.
                matches!(
                    tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await,
                    Ok(Ok(0) | Err(_))
                )
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut closed = 0;
    while let Some(result) = tasks.join_next().await {
        closed += usize::from(result.unwrap());
    }
    (opened, closed)
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99).div_ceil(100) - 1]
}

async fn good_clients(addr: SocketAddr, n: u16) -> Vec<Duration> {
    let mut samples = Vec::new();
    for i in 0..n {
        samples.push(good_client(addr, "127.0.0.1", 1000 + i).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_flood_does_not_delay_good_clients() {
    let (listener, addr) = listen(
        ProxyListener::builder()
            .policy(Policy::Require)
            .header_timeout(Duration::from_secs(1)),
    )
    .await;
    let server = serve(listener);

    let quiet = p99(good_clients(addr, 200).await);
    let stop = Instant::now() + Duration::from_secs(3);
    let flood = tokio::spawn(flood(addr, stop));
    let attacked = p99(good_clients(addr, 200).await);
    let (opened, closed) = flood.await.unwrap();
    server.abort();

    eprintln!(
        "good client p99: {quiet:?} quiet, {attacked:?} during a flood of {opened} junk connections"
    );
    assert_eq!(
        closed, opened,
        "every junk connection is closed by the listener"
    );
    // The bar is 1.5x; on a shared 2-core machine the test allows more, plus a fixed 20 ms
    // for scheduling noise. HARDENING.md has the measured figures.
    assert!(
        attacked <= quiet * 3 + Duration::from_millis(20),
        "p99 {attacked:?} under the flood, {quiet:?} without"
    );
}

/// Found by the `header_reader` fuzz target: a v1 line with no CRLF within 107 bytes is
/// rejected as oversized however its bytes are segmented (the error's byte count says how
/// much had arrived, which depends on the segmentation; the reason does not).
#[tokio::test]
async fn oversized_v1_is_rejected_alike_at_any_segmentation() {
    let (mut listener, addr) = listen(ProxyListener::builder().policy(Policy::Require)).await;
    let mut line = b"PROXY ".to_vec();
    line.extend_from_slice(&[b'5'; 250]);
    for chunks in [vec![line.len()], vec![1, 5, 34, 300], vec![107, 1, 300]] {
        let mut tcp = connect(addr).await;
        let mut rest = &line[..];
        for size in chunks.iter().copied() {
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            tcp.write_all(chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            rest = tail;
        }
        let Err(err) = within("the rejection", listener.try_accept()).await else {
            panic!("chunks {chunks:?}: accepted");
        };
        assert_eq!(err.reason(), "oversized", "chunks {chunks:?}: {err}");
    }
}
