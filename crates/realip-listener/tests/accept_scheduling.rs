//! How the listener schedules accepted sockets: handshakes are not starved by peers that
//! keep connecting, and each header timeout runs from the moment its socket was accepted.
//! In-memory sockets from a scripted `Accept`, so the schedule is deterministic.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use realip_core::PeerAddr;
use realip_listener::{
    Accept, Accepted, HandshakeError, Policy, PolicySource, ProxyHeader, ProxyListener,
};
use tokio::io::{AsyncWriteExt, DuplexStream};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Hands out the queued sockets, then (when `endless`) a new socket from a fresh port on
/// every poll, as a flood of connecting peers would.
#[derive(Debug)]
struct Scripted {
    queue: VecDeque<(DuplexStream, SocketAddr)>,
    endless: bool,
    next_port: u16,
    /// Client halves of the endless sockets, kept open.
    clients: Vec<DuplexStream>,
}

impl Scripted {
    fn new(queue: Vec<(DuplexStream, SocketAddr)>, endless: bool) -> Self {
        Self {
            queue: queue.into(),
            endless,
            next_port: 20000,
            clients: Vec::new(),
        }
    }
}

impl Accept for Scripted {
    type Io = DuplexStream;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<io::Result<Accepted<DuplexStream>>> {
        if let Some((io, peer)) = self.queue.pop_front() {
            return Poll::Ready(Ok((io, PeerAddr::Inet(peer), None)));
        }
        if self.endless {
            let (client, server) = tokio::io::duplex(64);
            self.clients.push(client);
            self.next_port = self.next_port.wrapping_add(1);
            let peer = SocketAddr::from(([192, 0, 2, 200], self.next_port));
            return Poll::Ready(Ok((server, PeerAddr::Inet(peer), None)));
        }
        // Nothing more will come; the tests never wait on the listener for this.
        Poll::Pending
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(sa("127.0.0.1:1883"))
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr::Inet(sa("127.0.0.1:1883")))
    }
}

/// A socket whose peer (at `peer`) has already sent a v1 header for `client`.
async fn with_header(peer: &str, client: &str) -> (DuplexStream, DuplexStream, SocketAddr) {
    let (mut lb, server) = tokio::io::duplex(1024);
    lb.write_all(&ProxyHeader::v1(sa(client), sa("127.0.0.1:1883")).to_bytes())
        .await
        .unwrap();
    (lb, server, sa(peer))
}

#[tokio::test]
async fn skipped_peers_connecting_without_pause_do_not_starve_handshakes() {
    // The load balancer (port 1) must send a header; everyone else is skipped.
    let (_lb, server, peer) = with_header("10.0.0.1:1", "198.51.100.7:4000").await;
    let source = PolicySource::from_fn(|peer: &PeerAddr| {
        if peer.inet().map(|a| a.port()) == Some(1) {
            Policy::Require
        } else {
            Policy::Skip
        }
    });
    let mut listener = ProxyListener::builder()
        .policy_source(source)
        .listen(Scripted::new(vec![(server, peer)], true));

    // The header is complete from the start: the balancer's connection must come out
    // within the first accept batch or so, whatever the skipped peers do.
    let mut skipped = 0;
    let proxied = loop {
        let (_stream, addr) = listener.accept().await;
        if addr.is_proxied() {
            break addr;
        }
        skipped += 1;
        assert!(
            skipped <= 2 * realip_listener::DEFAULT_ACCEPT_BATCH,
            "a finished handshake was starved by {skipped} skipped connections"
        );
    };
    assert_eq!(proxied.client().unwrap().to_string(), "198.51.100.7:4000");
    assert!(listener.pending() <= realip_listener::DEFAULT_MAX_PENDING);
}

#[tokio::test]
async fn skipped_connections_keep_their_bytes_and_socket_address() {
    let (mut client, server) = tokio::io::duplex(64);
    client
        .write_all(b"PROXY TCP4 looks like a header")
        .await
        .unwrap();
    let mut listener = ProxyListener::builder()
        .policy(Policy::Skip)
        .listen(Scripted::new(vec![(server, sa("192.0.2.9:9"))], false));
    let (mut stream, addr) = listener.accept().await;
    assert_eq!(addr.client().unwrap().to_string(), "192.0.2.9:9");
    assert!(addr.proxy_info().is_none());
    let mut got = [0; 30];
    tokio::io::AsyncReadExt::read_exact(&mut stream, &mut got)
        .await
        .unwrap();
    assert_eq!(&got, b"PROXY TCP4 looks like a header");
}

#[tokio::test(start_paused = true)]
async fn header_timeout_runs_from_accept_not_from_first_poll() {
    let timeout = Duration::from_secs(3);
    let (_lb, good, good_peer) = with_header("10.0.0.1:1", "198.51.100.7:4000").await;
    // Connected just before, but never sends anything: accepted in the same poll.
    let (_silent_client, silent) = tokio::io::duplex(64);
    let mut listener = ProxyListener::builder()
        .header_timeout(timeout)
        .listen(Scripted::new(
            vec![(silent, sa("10.0.0.2:2")), (good, good_peer)],
            false,
        ));

    let accepted_at = tokio::time::Instant::now();
    let (_stream, addr) = listener.try_accept().await.unwrap();
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    // The application is busy for a while before it accepts again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = listener.try_accept().await.err().unwrap();
    assert!(matches!(err, HandshakeError::Timeout { .. }), "{err}");
    let waited = accepted_at.elapsed();
    assert!(
        waited < timeout + Duration::from_millis(100),
        "the silent socket was closed {waited:?} after it was accepted (timeout {timeout:?})"
    );
}

#[tokio::test(start_paused = true)]
async fn a_header_timeout_too_long_for_a_deadline_means_no_timeout() {
    let (lb, server) = tokio::io::duplex(1024);
    let mut listener = ProxyListener::builder()
        .header_timeout(Duration::MAX)
        .listen(Scripted::new(vec![(server, sa("10.0.0.1:1"))], false));
    let writer = tokio::spawn(async move {
        let mut lb = lb;
        tokio::time::sleep(Duration::from_secs(3600)).await;
        lb.write_all(&ProxyHeader::v1(sa("198.51.100.7:4000"), sa("127.0.0.1:1883")).to_bytes())
            .await
            .unwrap();
        lb
    });
    let (_stream, addr) = listener.try_accept().await.unwrap();
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn a_flood_of_silent_peers_does_not_starve_a_finished_handshake() {
    // Every peer must send a header; all but the first stay silent, and more keep coming.
    let (_lb, server, peer) = with_header("10.0.0.1:1", "198.51.100.7:4000").await;
    let mut listener = ProxyListener::builder()
        .accept_batch(4)
        .listen(Scripted::new(vec![(server, peer)], true));
    let (_stream, addr) = listener.try_accept().await.unwrap();
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    assert!(listener.pending() <= 4, "{} pending", listener.pending());
}

#[tokio::test(start_paused = true)]
async fn pending_handshakes_never_exceed_the_cap() {
    let mut listener = ProxyListener::builder()
        .max_pending(8)
        .header_timeout(Duration::from_secs(1))
        .listen(Scripted::new(Vec::new(), true));
    for _ in 0..40 {
        let err = listener.try_accept().await.err().unwrap();
        assert!(matches!(err, HandshakeError::Timeout { .. }), "{err}");
        assert!(listener.pending() <= 8, "{} pending", listener.pending());
    }
}

/// `n` sockets whose peers sent half a v2 header (its signature) and stalled, from
/// 192.0.2.1:1000 upwards, with their client ends.
async fn stalled(n: u16) -> (Vec<DuplexStream>, Vec<(DuplexStream, SocketAddr)>) {
    let half = &ProxyHeader::v2(sa("198.51.100.1:1"), sa("127.0.0.1:1883")).to_bytes()[..14];
    let mut clients = Vec::new();
    let mut sockets = Vec::new();
    for port in 1000..1000 + n {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(half).await.unwrap();
        clients.push(client);
        sockets.push((server, SocketAddr::from(([192, 0, 2, 1], port))));
    }
    (clients, sockets)
}

/// A listener (header timeout [`WAVE_TIMEOUT`], accept batch [`WAVE_BATCH`]) that accepted
/// `n` stalled handshakes just now, with the stalled peers' client ends.
async fn stalled_listener(n: u16) -> (ProxyListener<Scripted>, Vec<DuplexStream>) {
    let (clients, sockets) = stalled(n).await;
    let mut listener = ProxyListener::builder()
        .header_timeout(WAVE_TIMEOUT)
        .accept_batch(WAVE_BATCH)
        .listen(Scripted::new(sockets, false));
    // Accepted a batch per poll; each waits for the rest of its header.
    while !listener.get_ref().queue.is_empty() {
        assert!(poll_accept_once(&mut listener).await.is_pending());
    }
    assert_eq!(listener.pending(), usize::from(n));
    (listener, clients)
}

const WAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// [`stalled_listener`] once every one of its header timeouts is due.
async fn wave_of_due_timeouts(n: u16) -> (ProxyListener<Scripted>, Vec<DuplexStream>) {
    let (listener, clients) = stalled_listener(n).await;
    // Every header timeout falls due at once.
    tokio::time::advance(WAVE_TIMEOUT + Duration::from_millis(1)).await;
    (listener, clients)
}

const WAVE_BATCH: usize = 4;

async fn poll_accept_once<L: Accept>(
    listener: &mut ProxyListener<L>,
) -> Poll<realip_listener::Connection<L::Io>> {
    std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await
}

#[tokio::test(start_paused = true)]
async fn a_finished_handshake_is_handed_out_while_a_wave_of_timeouts_is_due() {
    const STALLED: u16 = 40;
    let (mut listener, mut clients) = wave_of_due_timeouts(STALLED).await;
    let (_lb, good, peer) = with_header("10.0.0.1:1", "198.51.100.7:4000").await;
    listener.get_mut().queue.push_back((good, peer));

    // The first poll hands out the connection that is ready, after ending at most one
    // batch of the due timeouts.
    let Poll::Ready((_stream, addr)) = poll_accept_once(&mut listener).await else {
        panic!("the finished handshake was not handed out at the first poll");
    };
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    let left = listener.pending();
    assert!(
        left >= usize::from(STALLED) - WAVE_BATCH,
        "{} timeouts ended before the connection was handed out",
        usize::from(STALLED) - left
    );

    // The others end in the following polls, at most a batch per poll (the poll after the
    // connection was handed out only yields to the runtime: its batch was spent).
    let mut polls = 0;
    while listener.pending() > 0 {
        let before = listener.pending();
        assert!(poll_accept_once(&mut listener).await.is_pending());
        let ended = before - listener.pending();
        assert!(ended <= WAVE_BATCH, "{ended} timeouts ended in one poll");
        polls += 1;
        assert!(
            polls <= usize::from(STALLED) / WAVE_BATCH + 1,
            "timeouts left behind after {polls} polls"
        );
    }
    // Every stalled peer sees its connection closed.
    for client in &mut clients {
        let mut byte = [0; 1];
        let n = tokio::io::AsyncReadExt::read(client, &mut byte)
            .await
            .unwrap();
        assert_eq!(n, 0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_header_arriving_during_a_wave_of_timeouts_waits_behind_one_batch_at_most() {
    const STALLED: u16 = 40;
    let timeout = WAVE_TIMEOUT;
    let (mut listener, _clients) = stalled_listener(STALLED).await;
    // A peer accepted later, still waiting for its header when the others' timeouts fall due.
    tokio::time::advance(timeout / 2).await;
    let (mut lb, server) = tokio::io::duplex(1024);
    listener
        .get_mut()
        .queue
        .push_back((server, sa("10.0.0.1:1")));
    assert!(poll_accept_once(&mut listener).await.is_pending());
    assert_eq!(listener.pending(), usize::from(STALLED) + 1);
    tokio::time::advance(timeout / 2 + Duration::from_millis(100)).await;
    // The expiry walk finds the whole wave due; its header arrives right after.
    assert!(poll_accept_once(&mut listener).await.is_pending());
    lb.write_all(&ProxyHeader::v1(sa("198.51.100.7:4000"), sa("127.0.0.1:1883")).to_bytes())
        .await
        .unwrap();

    // Handed out after at most one batch of the due timeouts was ended, not the whole wave.
    let before = listener.pending();
    let mut polls = 0;
    let addr = loop {
        polls += 1;
        assert!(polls <= 2, "not handed out within two polls");
        if let Poll::Ready((_stream, addr)) = poll_accept_once(&mut listener).await {
            break addr;
        }
    };
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    let ended = before - listener.pending() - 1;
    assert!(
        ended <= WAVE_BATCH,
        "{ended} timeouts ended before the connection was handed out"
    );
    // The rest of the wave still ends, a batch per poll.
    let mut polls = 0;
    while listener.pending() > 0 {
        let before = listener.pending();
        assert!(poll_accept_once(&mut listener).await.is_pending());
        assert!(before - listener.pending() <= WAVE_BATCH);
        polls += 1;
        assert!(polls <= usize::from(STALLED), "timeouts left behind");
    }
}

#[tokio::test]
async fn a_connection_ready_at_accept_is_handed_out_before_the_next_accept() {
    // Nothing else waits: the first connection, header already there, is handed out at
    // once; the second stays in the accept queue until the next poll (no accept that would
    // find the queue empty when peers arrive one at a time).
    let (_lb1, first, peer1) = with_header("10.0.0.1:1", "198.51.100.7:4000").await;
    let (_lb2, second, peer2) = with_header("10.0.0.2:2", "198.51.100.8:4000").await;
    let mut listener = ProxyListener::builder()
        .listen(Scripted::new(vec![(first, peer1), (second, peer2)], false));
    let Poll::Ready((_s1, addr)) = poll_accept_once(&mut listener).await else {
        panic!("the first connection was not handed out");
    };
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    assert_eq!(
        listener.get_ref().queue.len(),
        1,
        "accepted on past a ready connection"
    );
    let Poll::Ready((_s2, addr)) = poll_accept_once(&mut listener).await else {
        panic!("the second connection was not handed out");
    };
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.8:4000");
}

/// Counts its wake-ups.
#[derive(Default)]
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_lone_waiting_handshake_does_not_wake_the_listener_again() {
    // One peer that has not sent its header yet: the listener waits for its socket, and
    // does not schedule itself to be polled again for nothing.
    let (_client, server) = tokio::io::duplex(64);
    let mut listener = ProxyListener::builder().listen(Scripted::new(Vec::new(), false));
    // A listener that has been waiting for connections (its first poll sets it up).
    assert!(poll_accept_once(&mut listener).await.is_pending());
    listener
        .get_mut()
        .queue
        .push_back((server, sa("10.0.0.1:1")));
    let counter = std::sync::Arc::new(CountingWaker::default());
    let waker = std::task::Waker::from(counter.clone());
    let mut cx = Context::from_waker(&waker);
    assert!(listener.poll_accept(&mut cx).is_pending());
    assert_eq!(listener.pending(), 1);
    assert_eq!(
        counter.0.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the listener woke itself with nothing to do"
    );
    // Its header arrives: that wakes the listener, which then hands the connection out.
    let mut client = _client;
    client
        .write_all(&ProxyHeader::v1(sa("198.51.100.7:4000"), sa("127.0.0.1:1883")).to_bytes())
        .await
        .unwrap();
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::SeqCst), 1);
    let Poll::Ready((_stream, addr)) = listener.poll_accept(&mut cx) else {
        panic!("not handed out after its header arrived");
    };
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    assert_eq!(listener.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn try_accept_returns_a_finished_connection_before_the_due_timeouts() {
    const STALLED: u16 = 12;
    let (mut listener, _clients) = wave_of_due_timeouts(STALLED).await;
    let (_lb, good, peer) = with_header("10.0.0.1:1", "198.51.100.7:4000").await;
    listener.get_mut().queue.push_back((good, peer));

    let (_stream, addr) = listener.try_accept().await.unwrap();
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    // Then every timeout, each with its peer.
    let mut peers = Vec::new();
    for _ in 0..STALLED {
        match listener.try_accept().await {
            Err(HandshakeError::Timeout { peer, timeout }) => {
                assert_eq!(timeout, Duration::from_secs(3));
                peers.push(peer.inet().unwrap().port());
            }
            Err(err) => panic!("expected a timeout, got {err}"),
            Ok((_, addr)) => panic!("unexpected connection from {addr:?}"),
        }
    }
    peers.sort_unstable();
    assert_eq!(peers, (1000..1000 + STALLED).collect::<Vec<_>>());
    assert_eq!(listener.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_header_timeout_never_ends_a_handshake_early() {
    let timeout = Duration::from_millis(250);
    let (_clients, sockets) = stalled(1).await;
    let mut listener = ProxyListener::builder()
        .header_timeout(timeout)
        .listen(Scripted::new(sockets, false));
    let accepted = tokio::time::Instant::now();
    assert!(poll_accept_once(&mut listener).await.is_pending());
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    assert!(poll_accept_once(&mut listener).await.is_pending());
    assert_eq!(listener.pending(), 1, "ended before its timeout");
    let err = listener.try_accept().await.err().unwrap();
    assert!(matches!(err, HandshakeError::Timeout { .. }), "{err}");
    assert!(accepted.elapsed() >= timeout, "{:?}", accepted.elapsed());
}

/// An `Accept` whose every poll fails with a per-connection error.
#[derive(Debug)]
struct Aborting;

impl Accept for Aborting {
    type Io = DuplexStream;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<io::Result<Accepted<DuplexStream>>> {
        Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(sa("127.0.0.1:1883"))
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr::Inet(sa("127.0.0.1:1883")))
    }
}

#[test]
fn endless_connection_errors_do_not_hold_the_poll() {
    // Polled once on another thread: the poll must return (pending) rather than spin.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut listener = ProxyListener::new(Aborting);
        let polled = futures_util::FutureExt::now_or_never(listener.try_accept());
        done.send(polled.is_none()).unwrap();
    });
    let pending = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("a poll of the listener never returned");
    assert!(pending);
}

/// Hands out borrowed sockets: neither the listener nor its sockets are `'static`.
struct Borrowed<'a>(Vec<&'a mut DuplexStream>);

impl<'a> Accept for Borrowed<'a> {
    type Io = &'a mut DuplexStream;
    type LocalAddr = ();

    fn poll_accept_io(&mut self, _: &mut Context<'_>) -> Poll<io::Result<Accepted<Self::Io>>> {
        match self.0.pop() {
            Some(io) => Poll::Ready(Ok((io, PeerAddr::Inet(sa("127.0.0.1:5000")), None))),
            None => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<()> {
        Ok(())
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr::Unix(None))
    }
}

#[tokio::test]
async fn sockets_that_borrow_are_accepted() {
    use tokio::io::AsyncReadExt;

    let (mut client, mut server) = tokio::io::duplex(1024);
    let mut bytes = ProxyHeader::v1(sa("198.51.100.7:4000"), sa("10.0.0.1:1883")).to_bytes();
    bytes.extend_from_slice(b"ping");
    client.write_all(&bytes).await.unwrap();

    let mut listener = ProxyListener::builder().listen(Borrowed(vec![&mut server]));
    let (mut stream, addr) = listener.accept().await;
    assert_eq!(addr.client().unwrap().to_string(), "198.51.100.7:4000");
    let mut ping = [0; 4];
    stream.read_exact(&mut ping).await.unwrap();
    assert_eq!(&ping, b"ping");
}
