//! Accept errors never end the listener: per-connection errors are skipped, resource
//! exhaustion (`EMFILE`) is retried with back-off, and a custom `Accept` works.

mod support;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use realip_core::PeerAddr;
use realip_listener::{Accept, Accepted, ProxyHeader, ProxyListener};
use support::{client_v4, within};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A TCP listener that first fails with the given errors, one per poll.
#[derive(Debug)]
struct Flaky {
    inner: TcpListener,
    errors: VecDeque<io::Error>,
    polls_with_error: usize,
}

impl Accept for Flaky {
    type Io = TcpStream;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<TcpStream>>> {
        if let Some(err) = self.errors.pop_front() {
            self.polls_with_error += 1;
            return Poll::Ready(Err(err));
        }
        self.inner.poll_accept(cx).map_ok(|(io, peer)| {
            let local = io.local_addr().ok();
            (io, PeerAddr::Inet(peer), local)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        self.inner.local_addr().map(PeerAddr::Inet)
    }
}

async fn flaky(errors: Vec<io::Error>) -> (ProxyListener<Flaky>, SocketAddr) {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = ProxyListener::new(Flaky {
        inner,
        errors: errors.into(),
        polls_with_error: 0,
    });
    (listener, addr)
}

async fn send_header(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&ProxyHeader::v1(client_v4(), addr).to_bytes())
        .await
        .unwrap();
    tcp
}

#[tokio::test]
async fn emfile_is_retried_with_back_off_and_the_listener_goes_on() {
    // EMFILE (24) three times in a row, then the connection is accepted.
    let errors = (0..3).map(|_| io::Error::from_raw_os_error(24)).collect();
    let (mut listener, addr) = flaky(errors).await;
    let _client = send_header(addr).await;

    let started = Instant::now();
    let (_stream, proxied) = within("accept after EMFILE", listener.accept()).await;
    let elapsed = started.elapsed();
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
    assert_eq!(listener.get_ref().polls_with_error, 3);
    // The listener paused between the failures instead of spinning on them.
    assert!(
        elapsed >= Duration::from_millis(10),
        "no back-off: accepted after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "back-off too long: {elapsed:?}"
    );

    // And it keeps working afterwards.
    let _client = send_header(addr).await;
    let (_stream, proxied) = within("next accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
}

#[tokio::test]
async fn per_connection_accept_errors_are_skipped_at_once() {
    let errors = vec![
        io::Error::from(io::ErrorKind::ConnectionAborted),
        io::Error::from(io::ErrorKind::ConnectionReset),
        io::Error::from(io::ErrorKind::ConnectionRefused),
    ];
    let (mut listener, addr) = flaky(errors).await;
    let _client = send_header(addr).await;
    let started = Instant::now();
    let (_stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
    assert_eq!(listener.get_ref().polls_with_error, 3);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn accept_future_dropped_during_back_off_loses_nothing() {
    let errors = (0..4).map(|_| io::Error::from_raw_os_error(24)).collect();
    let (mut listener, addr) = flaky(errors).await;
    let _client = send_header(addr).await;
    // Poll accept a few times with a short deadline, dropping the future each time.
    for _ in 0..3 {
        let _ = tokio::time::timeout(Duration::from_millis(3), listener.accept()).await;
    }
    let (_stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
}
