//! Accept errors (EMFILE, aborted connections) never end the listener.

mod support;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use realip_core::PeerAddr;
use realip_listener::{Accept, Accepted, ProxyHeader, ProxyListener};
use support::*;
use tokio::net::{TcpListener, TcpStream};

/// A listener that fails with the queued errors before accepting from a real one.
#[derive(Debug)]
struct Flaky {
    errors: VecDeque<io::Error>,
    inner: TcpListener,
}

impl Accept for Flaky {
    type Io = TcpStream;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<TcpStream>>> {
        if let Some(err) = self.errors.pop_front() {
            return Poll::Ready(Err(err));
        }
        self.inner
            .poll_accept(cx)
            .map_ok(|(io, peer)| (io, PeerAddr::Inet(peer), None))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        self.inner.local_addr().map(PeerAddr::Inet)
    }
}

fn emfile() -> io::Error {
    io::Error::from_raw_os_error(24)
}

#[tokio::test]
async fn emfile_is_retried_with_back_off() {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let errors = VecDeque::from([emfile(), emfile(), emfile()]);
    let mut listener = ProxyListener::builder().listen(Flaky { errors, inner });

    let mut client = connect(addr).await;
    ProxyHeader::v1("192.0.2.4:4".parse().unwrap(), addr)
        .write_to(&mut client)
        .await
        .unwrap();
    let start = Instant::now();
    let (_stream, proxied) = tokio::time::timeout(QUICK, listener.accept())
        .await
        .unwrap();
    // Three back-offs of 5, 10 and 20 ms.
    assert!(
        start.elapsed() >= Duration::from_millis(30),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.4:4");
}

#[tokio::test]
async fn connection_errors_are_skipped_at_once() {
    let inner = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let errors = VecDeque::from([
        io::Error::from(io::ErrorKind::ConnectionAborted),
        io::Error::from(io::ErrorKind::ConnectionReset),
    ]);
    let mut listener = ProxyListener::builder().listen(Flaky { errors, inner });
    let mut client = connect(addr).await;
    ProxyHeader::v2_local().write_to(&mut client).await.unwrap();
    let (_stream, proxied) = tokio::time::timeout(QUICK, listener.accept())
        .await
        .unwrap();
    assert!(proxied.proxy_info().is_some());
    assert!(
        proxied.local_addr().is_none(),
        "Flaky reports no local address"
    );
}
