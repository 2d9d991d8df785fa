//! One connection's handshake: read the PROXY header under the header timeout, then hand
//! out the connection with its addresses, or the reason it was refused.
//!
//! The listener starts a handshake for every accepted socket ([`start`]); one whose
//! header is there at accept finishes at once, the others wait in the listener's pending
//! set as a [`Handshake`] future. Reads go through a buffer on the stack, so a silent peer
//! costs no heap buffer, and the header is parsed by [`parse_header`] on every read until
//! it is complete, known to be absent, or refused.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use realip_core::PeerAddr;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::time::Instant;
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::accept::{Accept, is_connection_error};
use crate::connect_info::ProxiedAddr;
use crate::error::{HandshakeError, HeaderError};
use crate::header::info::ProxyInfo;
use crate::header::parse::{Detected, V2_SIGNATURE, detect, parse_header, v2_total_len};
use crate::metrics::{self, PendingGuard};
use crate::policy::Policy;
use crate::stream::{ProxiedStream, Replay};

/// One accepted connection, ready for the application.
pub type Connection<IO> = (ProxiedStream<IO>, ProxiedAddr);

/// Size of the stack buffer each handshake read goes through: a v1 header (107 bytes) or a
/// v2 header with a Unix address block (232 bytes) fits, with the data that followed it; a
/// longer v2 header is read to its announced length. Only what arrived is kept, so a silent
/// client costs no buffer at all.
pub(crate) const STACK_READ: usize = 256;

/// What a listener's handshakes are held to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// The header timeout.
    pub(crate) timeout: Duration,
    /// The longest v2 header.
    pub(crate) max_len: usize,
    /// Whether a socket whose header timeout ran out is reset ([`Accept::reset`]).
    pub(crate) reset_on_timeout: bool,
}

/// How a handshake ended without an error.
enum Outcome {
    /// A header of this many bytes, and what it said (`None` when it is discarded).
    Header(Option<ProxyInfo>, usize),
    /// No header: every byte read is application data.
    NoHeader,
}

/// What [`start`] made of a socket accepted just now.
pub(crate) enum Started<L: Accept> {
    /// The handshake finished at its first read (the header had arrived with the
    /// connection), or failed there.
    Done(Result<Connection<L::Io>, HandshakeError>),
    /// The handshake waits for more bytes.
    Pending(Handshake<L>),
}

/// Starts the handshake of a socket accepted just now with a first read: a header that
/// arrived with the connection finishes it here, and is parsed where it was read, on the
/// stack (only the bytes after it are copied out, to be replayed); otherwise the handshake
/// is returned to be polled, with what was read, its header timeout counted from here.
pub(crate) fn start<L: Accept>(
    mut io: L::Io,
    peer: PeerAddr,
    local: Option<SocketAddr>,
    policy: Policy,
    limits: Limits,
    cx: &mut Context<'_>,
) -> Started<L> {
    let max_len = limits.max_len;
    let mut first = [0; STACK_READ];
    let read = match L::read_accepted(&io, &mut first) {
        Some(read) => Poll::Ready(read),
        // No direct read for this listener's sockets: the first read goes through
        // `AsyncRead`, here with the listener's waker.
        None => poll_first_read::<L>(&mut io, &mut first, false, cx),
    };
    let buf = match read {
        Poll::Ready(Ok(n)) => {
            let got = &first[..n];
            if let Some(outcome) = examine_read(got, n, policy, max_len) {
                return Started::Done(finish(io, got, peer, local, outcome));
            }
            got.to_vec()
        }
        Poll::Ready(Err(err)) if !is_not_ready(&err) => {
            let failure = Failure::from_read_error(err, 0);
            return Started::Done(Err(failure.into_error(peer)));
        }
        Poll::Ready(Err(_)) | Poll::Pending => Vec::new(),
    };
    let mut read = ReadHandshake::new(io, peer, local, policy, limits.timeout, max_len);
    read.buf = buf;
    read.reset_on_timeout = limits.reset_on_timeout;
    // Tried above: the pending set's polls wait for the runtime's readiness.
    read.direct = false;
    Started::Pending(Handshake::new(read))
}

/// Whether a read error only says that nothing has arrived yet.
fn is_not_ready(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

pin_project! {
    /// One entry of [`ProxyListener`](crate::listener::ProxyListener)'s pending set, stored
    /// inline in the set's node: one allocation per connection for the whole handshake
    /// state.
    #[project = HandshakeProj]
    pub(crate) enum Handshake<L: Accept> {
        /// Reading the header.
        Read { #[pin] read: ReadHandshake<L> },
        /// Reading the header inside its `proxy_protocol` span, when a subscriber wants it
        /// (boxed so that untraced handshakes do not carry the span).
        Traced { read: Pin<Box<Instrumented<ReadHandshake<L>>>> },
        /// Not a handshake: the entry the listener keeps in its pending set for as long as
        /// the set lives ([`Handshake::idle`]). Never finishes, never wakes.
        Idle,
    }
}

impl<L: Accept> Handshake<L> {
    /// The pending set's idle entry. `futures::stream::FuturesUnordered` yields to the
    /// runtime (wakes its task and returns `Pending`) whenever one poll has polled as many
    /// futures as it holds; with one handshake waiting, that is every time the handshake is
    /// first polled, so the listener would be polled again, and the runtime would poll its
    /// I/O driver, for nothing, once per connection. An entry that is never ready keeps
    /// the count of futures above the count of those polled. It costs one node, allocated
    /// once per listener.
    pub(crate) const fn idle() -> Self {
        Self::Idle
    }

    /// Runs `read` in its `proxy_protocol` span when a subscriber wants the span.
    fn new(read: ReadHandshake<L>) -> Self {
        let span = tracing::debug_span!("proxy_protocol", peer = %read.peer);
        if span.is_disabled() {
            Self::Read { read }
        } else {
            Self::Traced {
                read: Box::pin(read.instrument(span)),
            }
        }
    }
}

impl<L: Accept> Handshake<L> {
    /// When its header timeout falls due (`None`: never).
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Read { read } => read.deadline,
            Self::Traced { read } => read.inner().deadline,
            Self::Idle => None,
        }
    }

    /// [`ReadHandshake::expire_if_due`].
    pub(crate) fn expire_if_due(
        self: Pin<&mut Self>,
        now: Instant,
        to_wake: &mut VecDeque<Waker>,
    ) -> Option<Instant> {
        match self.project() {
            HandshakeProj::Read { read } => read.expire_if_due(now, to_wake),
            HandshakeProj::Traced { read } => {
                read.as_mut().inner_pin_mut().expire_if_due(now, to_wake)
            }
            HandshakeProj::Idle => None,
        }
    }
}

impl<L: Accept> Future for Handshake<L> {
    type Output = Result<Connection<L::Io>, HandshakeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HandshakeProj::Read { read } => read.poll(cx),
            HandshakeProj::Traced { read } => read.as_mut().poll(cx),
            HandshakeProj::Idle => Poll::Pending,
        }
    }
}

pin_project! {
    /// The handshake of one socket: reads its header under the header timeout. Written out
    /// by hand rather than as an `async fn` so that each field is stored once; nothing is
    /// allocated until bytes arrive.
    pub(crate) struct ReadHandshake<L: Accept> {
        // `None` once the handshake has finished.
        io: Option<L::Io>,
        // The bytes read so far (no capacity before the first byte).
        buf: Vec<u8>,
        peer: PeerAddr,
        local: Option<SocketAddr>,
        max_len: usize,
        timeout: Duration,
        policy: Policy,
        // When the header timeout falls due, fixed at accept (`None`: the timeout is too
        // long to be a deadline). No timer of its own: the listener's expiry walk
        // ([`Self::expire_if_due`]) marks it expired and has it woken.
        deadline: Option<Instant>,
        // Set by the expiry walk once the deadline has passed.
        expired: bool,
        // Whether the socket is reset when the timeout ends the handshake ([`Accept::reset`]).
        reset_on_timeout: bool,
        // The waker of the last poll that waited, for the expiry walk.
        waker: Option<Waker>,
        // Whether the first read may still go around the runtime's readiness
        // ([`Accept::read_accepted`]); `start` has already tried it.
        direct: bool,
        // Counted as pending while alive (zero-sized).
        pending: PendingGuard,
    }
}

impl<L: Accept> ReadHandshake<L> {
    fn new(
        io: L::Io,
        peer: PeerAddr,
        local: Option<SocketAddr>,
        policy: Policy,
        timeout: Duration,
        max_len: usize,
    ) -> Self {
        Self {
            io: Some(io),
            buf: Vec::new(),
            peer,
            local,
            max_len,
            timeout,
            policy,
            deadline: Instant::now().checked_add(timeout),
            expired: false,
            reset_on_timeout: true,
            waker: None,
            direct: true,
            pending: PendingGuard::new(),
        }
    }

    /// The expiry walk's step: marks the handshake expired when its deadline is at or
    /// before `now`, and hands its waker to `to_wake` (the listener wakes them a batch per
    /// turn; its next poll then ends it with [`HandshakeError::Timeout`] unless the header
    /// has arrived meanwhile); otherwise returns the deadline still to come. `None` when
    /// there is none to come (no deadline, or already expired).
    pub(crate) fn expire_if_due(
        self: Pin<&mut Self>,
        now: Instant,
        to_wake: &mut VecDeque<Waker>,
    ) -> Option<Instant> {
        let this = self.project();
        let deadline = (*this.deadline)?;
        if *this.expired {
            return None;
        }
        if deadline > now {
            return Some(deadline);
        }
        *this.expired = true;
        if let Some(waker) = this.waker.take() {
            to_wake.push_back(waker);
        }
        None
    }
}

impl<L: Accept> Future for ReadHandshake<L> {
    type Output = Result<Connection<L::Io>, HandshakeError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(io) = this.io.as_mut() else {
            panic!("handshake polled after completion");
        };
        // Nothing read yet: the first read goes to the stack and is examined there, as
        // `start` does, so that a header arriving whole (the usual case) finishes the
        // handshake without a buffer; only a partial header is copied into `buf`.
        let mut first = [0; STACK_READ];
        let mut on_stack = None;
        let polled = if this.buf.is_empty() {
            let direct = std::mem::replace(this.direct, false);
            match poll_first_read::<L>(io, &mut first, direct, cx) {
                Poll::Ready(Ok(n)) => {
                    let got = &first[..n];
                    match examine_read(got, n, *this.policy, *this.max_len) {
                        Some(outcome) => {
                            on_stack = Some(n);
                            Poll::Ready(outcome)
                        }
                        None => {
                            this.buf.extend_from_slice(got);
                            poll_read_header::<L>(io, this.buf, *this.policy, *this.max_len, cx)
                        }
                    }
                }
                Poll::Ready(Err(err)) => Poll::Ready(Err(Failure::from_read_error(err, 0))),
                Poll::Pending => Poll::Pending,
            }
        } else {
            poll_read_header::<L>(io, this.buf, *this.policy, *this.max_len, cx)
        };
        let accepted = this
            .deadline
            .and_then(|deadline| deadline.checked_sub(*this.timeout));
        let outcome = match polled {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => {
                // As `tokio::time::timeout`: the read first, then the deadline.
                if *this.expired {
                    if let Some(accepted) = accepted {
                        metrics::header_wait(accepted);
                    }
                    // Reset, or else closed as it drops.
                    if let Some(io) = this.io.take() {
                        if *this.reset_on_timeout {
                            L::reset(io);
                        }
                    }
                    *this.waker = None;
                    let peer = std::mem::replace(this.peer, PeerAddr::Unix(None));
                    return Poll::Ready(Err(HandshakeError::Timeout {
                        peer,
                        timeout: *this.timeout,
                    }));
                }
                match this.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *this.waker = Some(cx.waker().clone()),
                }
                return Poll::Pending;
            }
        };
        *this.waker = None;
        if let Some(accepted) = accepted {
            metrics::header_wait(accepted);
        }
        let io = this.io.take().expect("checked above");
        let peer = std::mem::replace(this.peer, PeerAddr::Unix(None));
        let buf = std::mem::take(this.buf);
        let read = on_stack.map_or(&buf[..], |n| &first[..n]);
        Poll::Ready(finish(io, read, peer, *this.local, outcome))
    }
}

/// The connection (or the error) a finished header read makes from what was read.
fn finish<IO>(
    io: IO,
    read: &[u8],
    peer: PeerAddr,
    local: Option<SocketAddr>,
    outcome: Result<Outcome, Failure>,
) -> Result<Connection<IO>, HandshakeError> {
    let (info, header_len) = match outcome {
        Ok(Outcome::Header(info, len)) => (info, len),
        Ok(Outcome::NoHeader) => (None, 0),
        Err(failure) => return Err(failure.into_error(peer)),
    };
    // What follows the header is copied out (an allocation only when there is something
    // to replay), so that neither the header's bytes nor the read buffer's spare room are
    // kept.
    let replay = Replay::copy_of(&read[header_len..]);
    let addr = ProxiedAddr::from_connection(peer, local, info);
    Ok((ProxiedStream::with_replay(io, replay, addr.clone()), addr))
}

/// A handshake failure before the peer is attached.
enum Failure {
    Closed,
    Truncated(usize),
    Header(HeaderError),
    Missing,
    Forbidden(Policy),
    Io(io::Error),
}

impl Failure {
    /// A read failed after `received` bytes. A probe that resets the connection without
    /// sending a byte (HAProxy's checks close with RST) is as routine as one that closes
    /// cleanly.
    fn from_read_error(err: io::Error, received: usize) -> Self {
        if received == 0 && is_connection_error(&err) {
            Self::Closed
        } else {
            Self::Io(err)
        }
    }

    fn into_error(self, peer: PeerAddr) -> HandshakeError {
        match self {
            Self::Closed => HandshakeError::Closed { peer },
            Self::Truncated(received) => HandshakeError::Truncated { peer, received },
            Self::Header(source) => HandshakeError::Header { peer, source },
            Self::Missing => HandshakeError::Missing { peer },
            Self::Forbidden(policy) => HandshakeError::Forbidden { peer, policy },
            Self::Io(source) => HandshakeError::Io { peer, source },
        }
    }
}

/// What the bytes read so far make of the header: `None` while more are needed.
fn examine(buf: &[u8], policy: Policy, max_len: usize) -> Option<Result<Outcome, Failure>> {
    match detect(buf) {
        Detected::Incomplete => None,
        Detected::None => Some(match policy {
            Policy::Require => Err(Failure::Missing),
            _ => Ok(Outcome::NoHeader),
        }),
        Detected::V1 | Detected::V2 if policy == Policy::Reject => {
            Some(Err(Failure::Forbidden(policy)))
        }
        Detected::V1 | Detected::V2 => match parse_header(buf, max_len) {
            Ok(Some((info, len))) => {
                let info = (policy != Policy::Ignore).then_some(info);
                Some(Ok(Outcome::Header(info, len)))
            }
            Ok(None) => None,
            Err(err) => Some(Err(Failure::Header(err))),
        },
    }
}

/// [`examine`] after a read of `n` bytes, the last of `buf`: a read of none is the end
/// of the stream.
fn examine_read(
    buf: &[u8],
    n: usize,
    policy: Policy,
    max_len: usize,
) -> Option<Result<Outcome, Failure>> {
    if n > 0 {
        return examine(buf, policy, max_len);
    }
    Some(match (policy, buf.len()) {
        (Policy::Require, 0) => Err(Failure::Closed),
        (Policy::Require, received) => Err(Failure::Truncated(received)),
        // An incomplete signature prefix at EOF is application data for the
        // policies that accept connections without a header.
        (_, _) if detect(buf) == Detected::Incomplete => Ok(Outcome::NoHeader),
        (_, received) => Err(Failure::Truncated(received)),
    })
}

/// Reads until the header is complete (or known to be absent); `buf` keeps what was read.
fn poll_read_header<L: Accept>(
    io: &mut L::Io,
    buf: &mut Vec<u8>,
    policy: Policy,
    max_len: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Outcome, Failure>> {
    if let Some(outcome) = examine(buf, policy, max_len) {
        return Poll::Ready(outcome);
    }
    loop {
        // A v2 header longer than a stack read is read to its announced length (already
        // checked against `max_len` by `parse_header`).
        let need = if buf.starts_with(&V2_SIGNATURE) {
            v2_total_len(buf).map_or(0, |total| total.saturating_sub(buf.len()))
        } else {
            0
        };
        let old = buf.len();
        let n = match ready!(poll_read_some::<L>(io, buf, need, cx)) {
            Ok(n) => n,
            Err(err) => return Poll::Ready(Err(Failure::from_read_error(err, old))),
        };
        if let Some(outcome) = examine_read(buf, n, policy, max_len) {
            return Poll::Ready(outcome);
        }
    }
}

/// Reads once, appending to `buf`, which grows only by what arrived: the bytes go through
/// a buffer on the stack, and a socket that is not readable yet costs no allocation. When
/// more than a stack read is `need`ed, exactly that is reserved and read into `buf`'s
/// spare capacity.
fn poll_read_some<L: Accept>(
    io: &mut L::Io,
    buf: &mut Vec<u8>,
    need: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if need > STACK_READ {
        buf.reserve_exact(need);
        // Stateless between polls: a fresh `read_buf` each time loses nothing.
        return std::pin::pin!(io.read_buf(buf)).poll(cx);
    }
    let mut stack = [MaybeUninit::<u8>::uninit(); STACK_READ];
    let mut read = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

/// The first read of a handshake that has read nothing yet, into `first`: the number of
/// bytes read. When `direct` and its listener can ([`Accept::read_accepted`]), the socket
/// is read directly first: tokio knows a socket is readable only once its driver has
/// polled it, which for a socket accepted just now is after a turn of the runtime, while
/// the header is usually there already.
fn poll_first_read<L: Accept>(
    io: &mut L::Io,
    first: &mut [u8; STACK_READ],
    direct: bool,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if direct {
        match L::read_accepted(io, first) {
            Some(Ok(n)) => return Poll::Ready(Ok(n)),
            Some(Err(err)) if !is_not_ready(&err) => return Poll::Ready(Err(err)),
            Some(Err(_)) | None => {}
        }
    }
    let mut read = ReadBuf::new(first);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    Poll::Ready(Ok(read.filled().len()))
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::net::TcpListener;

    use super::*;
    use crate::accept::Accepted;
    use crate::header::write::ProxyHeader;
    use crate::listener::{DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_LEN};

    /// The listener type of handshakes on in-memory pipes (never asked to accept).
    struct Pipes;

    impl Accept for Pipes {
        type Io = tokio::io::DuplexStream;
        type LocalAddr = ();

        fn poll_accept_io(&mut self, _: &mut Context<'_>) -> Poll<io::Result<Accepted<Self::Io>>> {
            Poll::Pending
        }

        fn local_addr(&self) -> io::Result<()> {
            Ok(())
        }

        fn local_peer_addr(&self) -> io::Result<PeerAddr> {
            Ok(PeerAddr::Unix(None))
        }
    }

    #[tokio::test]
    async fn pending_handshake_state_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, peer) = listener.accept().await.unwrap();
        let fut = Handshake::<TcpListener>::new(ReadHandshake::new(
            io,
            PeerAddr::Inet(peer),
            Some(addr),
            Policy::Require,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        ));
        // The same size for every variant (a traced one boxes its span).
        // Stored inline in the pending set's node, the one allocation of a handshake. No
        // buffer until the first bytes arrive, then only what arrived.
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 192, "pending handshake state is {size} bytes");
    }

    /// A handshake on one end of an in-memory pipe, not boxed, so its buffer can be seen.
    fn pipe_handshake(policy: Policy) -> (tokio::io::DuplexStream, ReadHandshake<Pipes>) {
        let (client, server) = tokio::io::duplex(8192);
        let peer = PeerAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 1000)));
        let hs = ReadHandshake::new(
            server,
            peer,
            None,
            policy,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        );
        (client, hs)
    }

    async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
    }

    /// Asserts that a handshake finished at this poll with the client 203.0.113.9:40000
    /// and `ping\n` to replay.
    fn assert_client_then_ping<IO>(polled: Poll<Result<Connection<IO>, HandshakeError>>) {
        let Poll::Ready(Ok((stream, addr))) = polled else {
            panic!("handshake not finished at this poll");
        };
        assert_eq!(stream.buffered(), b"ping\n");
        assert_eq!(
            addr.client_socket_addr(),
            Some("203.0.113.9:40000".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn stalled_handshake_holds_only_what_arrived() {
        use tokio::io::AsyncWriteExt;

        let (mut client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        assert!(poll_once(&mut hs).await.is_pending());
        assert_eq!(
            hs.buf.capacity(),
            0,
            "nothing allocated before a byte arrives"
        );

        let header = ProxyHeader::v2(
            "203.0.113.9:40000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        )
        .to_bytes();
        client.write_all(&header[..14]).await.unwrap();
        assert!(poll_once(&mut hs).await.is_pending());
        assert_eq!(hs.buf, &header[..14]);
        assert_eq!(hs.buf.capacity(), 14, "only what arrived");

        client.write_all(&header[14..]).await.unwrap();
        client.write_all(b"ping\n").await.unwrap();
        assert_client_then_ping(poll_once(&mut hs).await);
    }

    #[tokio::test]
    async fn header_longer_than_a_stack_read_in_pieces() {
        use tokio::io::AsyncWriteExt;

        let (mut client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        let header = ProxyHeader::v2(
            "203.0.113.9:40000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        )
        .with_authority(&"a".repeat(600))
        .with_unique_id(vec![7; 128])
        .with_alpn(b"h2".to_vec())
        .to_bytes();
        assert!(header.len() > 300 + STACK_READ);
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"request");
        // The fixed part split, then the rest of the header and the request in chunks.
        for chunk in [&bytes[..5], &bytes[5..20], &bytes[20..300], &bytes[300..]] {
            assert!(poll_once(&mut hs).await.is_pending());
            client.write_all(chunk).await.unwrap();
        }
        let Poll::Ready(Ok((mut stream, addr))) = poll_once(&mut hs).await else {
            panic!("handshake not finished");
        };
        let info = addr.proxy_info().unwrap();
        assert_eq!(info.tlvs().authority(), Some("a".repeat(600).as_str()));
        assert_eq!(info.tlvs().unique_id(), Some(&[7; 128][..]));
        // The rest of the header was longer than a stack read: it was read to its
        // announced length, nothing past it.
        assert!(stream.buffered().is_empty());
        drop(client);
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"request");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn header_there_at_accept_is_read_at_the_first_poll() {
        use tokio::io::AsyncWriteExt;

        // Accepted outside tokio and registered just before the first poll: tokio's driver
        // has not seen it yet.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut bytes = ProxyHeader::v2("203.0.113.9:40000".parse().unwrap(), addr).to_bytes();
        bytes.extend_from_slice(b"ping\n");
        client.write_all(&bytes).await.unwrap();
        let (io, peer) = listener.accept().unwrap();
        // Loopback: the bytes are in the accepted socket's queue once the write returns.
        let mut peek = [0; 64];
        assert_eq!(io.peek(&mut peek).unwrap(), bytes.len());
        io.set_nonblocking(true).unwrap();
        let io = tokio::net::TcpStream::from_std(io).unwrap();
        let mut hs = Box::pin(ReadHandshake::<TcpListener>::new(
            io,
            PeerAddr::Inet(peer),
            Some(addr),
            Policy::Require,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        ));
        // Before tokio's driver has seen the socket: read directly, nothing to wake.
        assert_client_then_ping(poll_once(&mut hs).await);
        assert!(hs.waker.is_none());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn start_finishes_a_header_already_there_and_waits_for_one_that_is_not() {
        use tokio::io::AsyncWriteExt;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = || {
            let (io, peer) = listener.accept().unwrap();
            io.set_nonblocking(true).unwrap();
            (
                tokio::net::TcpStream::from_std(io).unwrap(),
                PeerAddr::Inet(peer),
            )
        };
        let start_now = |io, peer| {
            let mut socket = Some((io, peer));
            poll_fn(move |cx| {
                let (io, peer) = socket.take().expect("polled once");
                let started = start::<TcpListener>(
                    io,
                    peer,
                    Some(addr),
                    Policy::Require,
                    Limits {
                        timeout: DEFAULT_HEADER_TIMEOUT,
                        max_len: DEFAULT_MAX_HEADER_LEN,
                        reset_on_timeout: true,
                    },
                    cx,
                );
                Poll::Ready(started)
            })
        };

        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut bytes = ProxyHeader::v2("203.0.113.9:40000".parse().unwrap(), addr).to_bytes();
        bytes.extend_from_slice(b"ping\n");
        client.write_all(&bytes).await.unwrap();
        let (io, peer) = accept();
        // Loopback: the bytes are in the accepted socket's queue once the write returns.
        let mut peek = [0; 64];
        assert_eq!(io.peek(&mut peek).await.unwrap(), bytes.len());
        let Started::Done(done) = start_now(io, peer).await else {
            panic!("a header already there must finish at accept");
        };
        assert_client_then_ping(Poll::Ready(done));

        // Nothing sent yet: the handshake waits, holding no buffer, and finishes once the
        // header arrives.
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, peer) = accept();
        let Started::Pending(hs) = start_now(io, peer).await else {
            panic!("a handshake without bytes must wait");
        };
        let mut hs = Box::pin(hs);
        assert!(poll_once(&mut hs).await.is_pending());
        client.write_all(&bytes).await.unwrap();
        let done = poll_fn(|cx| hs.as_mut().poll(cx)).await;
        assert_client_then_ping(Poll::Ready(done));
    }

    #[tokio::test]
    async fn data_without_header_is_kept_whole() {
        use tokio::io::AsyncWriteExt;

        let (mut client, hs) = pipe_handshake(Policy::Optional);
        let mut hs = Box::pin(hs);
        let request = vec![b'x'; 3 * STACK_READ];
        client.write_all(&request).await.unwrap();
        let Poll::Ready(Ok((mut stream, addr))) = poll_once(&mut hs).await else {
            panic!("handshake not finished");
        };
        assert!(addr.proxy_info().is_none());
        drop(client);
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, request);
    }

    #[tokio::test]
    async fn handshake_runs_in_its_span_when_a_subscriber_wants_it() {
        use tokio::io::AsyncWriteExt;

        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let (mut client, server) = tokio::io::duplex(64);
        let peer = PeerAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 1000)));
        let hs = Handshake::<Pipes>::new(ReadHandshake::new(
            server,
            peer,
            None,
            Policy::Optional,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        ));
        assert!(matches!(hs, Handshake::Traced { .. }));
        let mut hs = Box::pin(hs);
        assert!(poll_once(&mut hs).await.is_pending());
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let Poll::Ready(Ok((stream, addr))) = poll_once(&mut hs).await else {
            panic!("handshake not finished");
        };
        assert!(addr.proxy_info().is_none());
        assert_eq!(stream.buffered(), b"GET / HTTP/1.1\r\n");
    }

    /// A v1 header from 203.0.113.9:40000.
    fn v1_header() -> Vec<u8> {
        ProxyHeader::v1(
            "203.0.113.9:40000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        )
        .to_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_accept_and_only_the_expiry_walk_ends_it() {
        use tokio::io::AsyncWriteExt;

        // The header is there at the first read: done, nothing kept to wake.
        let (mut client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        client.write_all(&v1_header()).await.unwrap();
        assert!(matches!(poll_once(&mut hs).await, Poll::Ready(Ok(_))));

        // First polled just before the deadline: the deadline runs from accept, not from
        // that poll.
        let accepted = Instant::now();
        let (_client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        assert_eq!(hs.deadline, Some(accepted + DEFAULT_HEADER_TIMEOUT));
        tokio::time::advance(DEFAULT_HEADER_TIMEOUT - Duration::from_millis(10)).await;
        assert!(poll_once(&mut hs).await.is_pending());
        assert!(
            hs.waker.is_some(),
            "a waiting poll leaves its waker for the walk"
        );
        // Not due yet: the walk gives the deadline back and leaves it alone.
        assert_eq!(expire_now(&mut hs), Some(accepted + DEFAULT_HEADER_TIMEOUT));
        tokio::time::advance(Duration::from_millis(10)).await;
        // Due, but no walk has marked it: still waiting (the walk is the only clock).
        assert!(poll_once(&mut hs).await.is_pending());
        let mut to_wake = VecDeque::new();
        assert_eq!(
            hs.as_mut().expire_if_due(Instant::now(), &mut to_wake),
            None
        );
        assert!(hs.waker.is_none(), "its waker went to the walk");
        assert_eq!(to_wake.len(), 1, "handed to the listener to wake");
        assert!(matches!(
            poll_once(&mut hs).await,
            Poll::Ready(Err(HandshakeError::Timeout { .. }))
        ));
    }

    /// One step of the listener's expiry walk over `hs` alone, at the current time.
    fn expire_now(hs: &mut Pin<Box<ReadHandshake<Pipes>>>) -> Option<Instant> {
        hs.as_mut()
            .expire_if_due(Instant::now(), &mut VecDeque::new())
    }

    #[tokio::test(start_paused = true)]
    async fn a_header_that_arrived_beats_an_expiry_not_yet_polled() {
        use tokio::io::AsyncWriteExt;

        let (mut client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        assert!(poll_once(&mut hs).await.is_pending());
        tokio::time::advance(DEFAULT_HEADER_TIMEOUT).await;
        assert_eq!(expire_now(&mut hs), None);
        client.write_all(&v1_header()).await.unwrap();
        // As `tokio::time::timeout`: the read first, then the deadline.
        assert!(matches!(poll_once(&mut hs).await, Poll::Ready(Ok(_))));
    }

    #[tokio::test]
    async fn a_timeout_too_long_for_a_deadline_means_none() {
        let (_client, server) = tokio::io::duplex(64);
        let peer = PeerAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 1000)));
        let hs =
            ReadHandshake::<Pipes>::new(server, peer, None, Policy::Require, Duration::MAX, 4096);
        let mut hs = Box::pin(hs);
        assert_eq!(hs.deadline, None);
        assert!(poll_once(&mut hs).await.is_pending());
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        assert_eq!(hs.as_mut().expire_if_due(far, &mut VecDeque::new()), None);
        assert!(!hs.expired);
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_handshake_times_out() {
        let (_client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        assert!(poll_once(&mut hs).await.is_pending());
        tokio::time::sleep(DEFAULT_HEADER_TIMEOUT).await;
        assert_eq!(expire_now(&mut hs), None);
        match poll_once(&mut hs).await {
            Poll::Ready(Err(HandshakeError::Timeout { timeout, .. })) => {
                assert_eq!(timeout, DEFAULT_HEADER_TIMEOUT);
            }
            other => panic!("expected a timeout, got {:?}", other.map(|r| r.map(|_| ()))),
        }
    }
}
