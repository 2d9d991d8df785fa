//! The listener: accepts sockets and reads their PROXY headers concurrently.
//!
//! [`ProxyListener`] wraps a [`TcpListener`] or a [`UnixListener`] (anything that
//! implements [`Accept`]). Every accepted socket gets its own handshake, run inside the
//! listener with the others, under a header timeout; [`accept`](ProxyListener::accept)
//! returns whichever connection finishes first, so one silent client never delays another.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use realip_listener::{Policy, ProxyHeader, ProxyListener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let mut listener = ProxyListener::builder()
//!     .policy(Policy::Require)
//!     .header_timeout(Duration::from_secs(5))
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let addr = listener.local_addr()?;
//!
//! tokio::spawn(async move {
//!     let mut lb = tokio::net::TcpStream::connect(addr).await.unwrap();
//!     let header = ProxyHeader::v2("203.0.113.9:40000".parse().unwrap(), addr);
//!     header.write_to(&mut lb).await.unwrap();
//!     lb.write_all(b"hello").await.unwrap();
//! });
//!
//! let (mut stream, proxied) = listener.accept().await;
//! assert_eq!(proxied.client().unwrap().to_string(), "203.0.113.9:40000");
//! let mut hello = [0; 5];
//! stream.read_exact(&mut hello).await?;
//! assert_eq!(&hello, b"hello");
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use pin_project_lite::pin_project;
use realip_core::{AddrSource, ClientAddr, PeerAddr, TrustedProxies};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, ToSocketAddrs, UnixListener};
use tokio::time::{Instant, Sleep};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::error::{Error, HeaderError};
use crate::info::{Command, ProxyInfo};
use crate::parse::{Detected, V2_SIGNATURE, detect, parse_header, v2_total_len};
use crate::policy::{Policy, PolicySource};
use crate::{ProxiedAddr, ProxiedStream};

/// Default time a peer has to send its complete header: 3 seconds (one TCP retransmit).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Default cap on handshakes in progress: 16384; accepting pauses while it is reached.
///
/// The cap decides how many stalled peers (connected, header not finished) it takes to lock
/// good clients out: at the cap, new connections wait in the kernel's accept queue until a
/// header timeout frees a slot, which is seconds. 1024 was reached by an ordinary flood of
/// 5,000 stalled connections; 16384 isolates good clients from such a flood while keeping the
/// worst case bounded. A stalled handshake costs about 0.6 KiB of process memory (measured
/// RSS, tokio's socket registration included; a silent peer costs no read buffer and a
/// stalled one only the bytes it sent), so a full set is about 10 MiB, plus the kernel's
/// socket memory and 16384 file descriptors: raise `RLIMIT_NOFILE` above the cap (until
/// then, `EMFILE` pauses accepting the same way, with back-off). Lower the cap on small
/// hosts; raise it, or shorten the [header timeout](DEFAULT_HEADER_TIMEOUT), where more
/// stalled peers are expected.
pub const DEFAULT_MAX_PENDING: usize = 16384;
/// Default number of sockets accepted per poll before finished handshakes are looked at.
pub const DEFAULT_ACCEPT_BATCH: usize = 64;
/// Default maximum length of a v2 header, its 16-byte fixed part included.
pub const DEFAULT_MAX_HEADER_LEN: usize = 4096;

/// Size of the stack buffer each handshake read goes through: a v1 header (107 bytes) or a
/// v2 header with a Unix address block (232 bytes) fits, with the data that followed it; a
/// longer v2 header is read to its announced length. Only what arrived is kept, so a silent
/// client costs no buffer at all.
const STACK_READ: usize = 256;
/// A header up to this long stays in front of the bytes that followed it until they are
/// replayed (a v2 IPv4 or IPv6 header, a v1 TCP4 one): replaying from the read buffer saves
/// an allocation and a copy per connection.
const KEEP_HEADER_BYTES: usize = 64;
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A socket as [`Accept`] returns it: the socket, its peer, and its local address when it
/// has one.
pub type Accepted<IO> = (IO, PeerAddr, Option<SocketAddr>);

/// A socket listener that [`ProxyListener`] can wrap: implemented for [`TcpListener`] and
/// [`UnixListener`].
pub trait Accept: Send + 'static {
    /// The accepted socket.
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The listener's own address.
    type LocalAddr;

    /// Polls for one socket: the socket, its peer, and its local address when it has one.
    fn poll_accept_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<Self::Io>>>;

    /// The listener's own address.
    fn local_addr(&self) -> io::Result<Self::LocalAddr>;

    /// The listener's own address as a [`PeerAddr`].
    fn local_peer_addr(&self) -> io::Result<PeerAddr>;

    /// The local address of every socket this listener accepts, when it is known without
    /// asking each socket: for a TCP listener bound to a specific (not wildcard) address,
    /// on Linux, and without `IP_TRANSPARENT` (TPROXY delivers connections to other local
    /// addresses). `None`, the default, when each socket has to be asked.
    ///
    /// [`ProxyListener`] calls it once, at its first accept, and passes the result to
    /// [`poll_accept_io_with_local`](Self::poll_accept_io_with_local).
    fn shared_local_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Like [`poll_accept_io`](Self::poll_accept_io); `shared_local`, when `Some`, is what
    /// [`shared_local_addr`](Self::shared_local_addr) returned, to use as the socket's local
    /// address instead of looking it up (one `getsockname` per socket saved). The default
    /// ignores it and calls `poll_accept_io`.
    fn poll_accept_io_with_local(
        &mut self,
        cx: &mut Context<'_>,
        shared_local: Option<SocketAddr>,
    ) -> Poll<io::Result<Accepted<Self::Io>>> {
        let _ = shared_local;
        self.poll_accept_io(cx)
    }
}

impl Accept for TcpListener {
    type Io = tokio::net::TcpStream;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<Self::Io>>> {
        TcpListener::poll_accept(self, cx).map_ok(|(io, peer)| {
            let local = io.local_addr().ok();
            (io, PeerAddr::Inet(peer), local)
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        TcpListener::local_addr(self).map(PeerAddr::Inet)
    }

    fn shared_local_addr(&self) -> Option<SocketAddr> {
        let local = TcpListener::local_addr(self).ok()?;
        if local.ip().is_unspecified() || is_transparent(self, local) {
            return None;
        }
        Some(local)
    }

    fn poll_accept_io_with_local(
        &mut self,
        cx: &mut Context<'_>,
        shared_local: Option<SocketAddr>,
    ) -> Poll<io::Result<Accepted<Self::Io>>> {
        match shared_local {
            Some(local) => TcpListener::poll_accept(self, cx)
                .map_ok(|(io, peer)| (io, PeerAddr::Inet(peer), Some(local))),
            None => self.poll_accept_io(cx),
        }
    }
}

/// Whether connections to other local addresses can reach `listener` (`IP_TRANSPARENT`,
/// as TPROXY needs); `true` when it cannot be told.
#[cfg(target_os = "linux")]
fn is_transparent(listener: &TcpListener, local: SocketAddr) -> bool {
    let sock = socket2::SockRef::from(listener);
    let v4 = sock.ip_transparent_v4();
    let transparent = match local {
        SocketAddr::V4(_) => v4,
        // A v6 socket can carry v4-mapped traffic: either option counts.
        SocketAddr::V6(_) => sock.ip_transparent_v6().map(|v6| v6 || v4.unwrap_or(false)),
    };
    transparent.unwrap_or(true)
}

/// Elsewhere, a listener's sockets are asked for their local address one by one (BSD's
/// `ipfw fwd` delivers connections to other addresses without any socket option).
#[cfg(not(target_os = "linux"))]
fn is_transparent(_listener: &TcpListener, _local: SocketAddr) -> bool {
    true
}

impl Accept for UnixListener {
    type Io = tokio::net::UnixStream;
    type LocalAddr = tokio::net::unix::SocketAddr;

    fn poll_accept_io(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Accepted<Self::Io>>> {
        UnixListener::poll_accept(self, cx).map_ok(|(io, peer)| {
            (
                io,
                PeerAddr::Unix(peer.as_pathname().map(Path::to_path_buf)),
                None,
            )
        })
    }

    fn local_addr(&self) -> io::Result<Self::LocalAddr> {
        UnixListener::local_addr(self)
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        UnixListener::local_addr(self)
            .map(|a| PeerAddr::Unix(a.as_pathname().map(Path::to_path_buf)))
    }
}

/// Settings of a [`ProxyListener`]; start from [`ProxyListener::builder`].
#[derive(Clone, Debug)]
pub struct Builder {
    policy: Policy,
    trusted: Option<TrustedProxies>,
    source: Option<PolicySource>,
    header_timeout: Duration,
    max_pending: usize,
    accept_batch: usize,
    max_header_len: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default settings: [`Policy::Require`] for every peer, [`DEFAULT_HEADER_TIMEOUT`],
    /// [`DEFAULT_MAX_PENDING`], [`DEFAULT_ACCEPT_BATCH`], [`DEFAULT_MAX_HEADER_LEN`].
    pub const fn new() -> Self {
        Self {
            policy: Policy::Require,
            trusted: None,
            source: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            accept_batch: DEFAULT_ACCEPT_BATCH,
            max_header_len: DEFAULT_MAX_HEADER_LEN,
        }
    }

    /// The policy for every peer (or, with [`trusted`](Self::trusted), for trusted peers).
    #[must_use]
    pub const fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Only peers in `trusted` get the [`policy`](Self::policy); everyone else gets
    /// [`Policy::Reject`]: a header from them closes the connection, and their connections
    /// without a header are served with the socket address. See [`PolicySource::trusted`].
    #[must_use]
    pub fn trusted(mut self, trusted: TrustedProxies) -> Self {
        self.trusted = Some(trusted);
        self
    }

    /// Chooses the policy of each connection with `source`, overriding
    /// [`policy`](Self::policy) and [`trusted`](Self::trusted).
    #[must_use]
    pub fn policy_source(mut self, source: PolicySource) -> Self {
        self.source = Some(source);
        self
    }

    /// How long a peer has to send its complete header, counted from the moment its
    /// socket is accepted; the connection is closed after. A duration too long to be a
    /// deadline (such as `Duration::MAX`) means no timeout.
    #[must_use]
    pub const fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// How many handshakes may be in progress at once, counting finished ones not handed
    /// out yet; accepting pauses at the cap (the kernel's backlog holds further
    /// connections). At least 1; [`DEFAULT_MAX_PENDING`] by default.
    ///
    /// The trade-off: each pending handshake holds a socket, a file descriptor and about
    /// 0.6 KiB of memory until its header arrives or its header timeout ends it, while a cap
    /// below the number of peers that stall at once shuts everyone else out until timeouts
    /// free slots. See [`DEFAULT_MAX_PENDING`] for the numbers.
    #[must_use]
    pub const fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = if max == 0 { 1 } else { max };
        self
    }

    /// How many sockets are accepted (or per-connection accept errors skipped) in one poll
    /// before finished handshakes are handed out. At least 1.
    #[must_use]
    pub const fn accept_batch(mut self, batch: usize) -> Self {
        self.accept_batch = if batch == 0 { 1 } else { batch };
        self
    }

    /// The maximum length of a v2 header, its 16-byte fixed part included. A header that
    /// announces more is rejected as soon as its length field arrives. (v1 headers are
    /// always limited to 107 bytes.)
    #[must_use]
    pub const fn max_header_len(mut self, max: usize) -> Self {
        self.max_header_len = max;
        self
    }

    fn policy_source_for_build(&self) -> PolicySource {
        match (&self.source, &self.trusted) {
            (Some(source), _) => source.clone(),
            (None, Some(trusted)) => PolicySource::trusted(trusted.clone(), self.policy),
            (None, None) => PolicySource::fixed(self.policy),
        }
    }

    /// Wraps an existing listener.
    pub fn listen<L: Accept>(self, inner: L) -> ProxyListener<L> {
        ProxyListener {
            inner,
            policy: self.policy_source_for_build(),
            header_timeout: self.header_timeout,
            max_pending: self.max_pending,
            accept_batch: self.accept_batch,
            max_header_len: self.max_header_len,
            pending: FuturesUnordered::new(),
            ready: VecDeque::new(),
            backoff: None,
            backoff_delay: BACKOFF_MIN,
            accept_failures: 0,
            shared_local: None,
        }
    }

    /// Binds a TCP listener and wraps it.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<ProxyListener<TcpListener>> {
        Ok(self.listen(TcpListener::bind(addr).await?))
    }

    /// Binds a Unix socket listener at `path` and wraps it.
    pub fn bind_unix(self, path: impl AsRef<Path>) -> io::Result<ProxyListener<UnixListener>> {
        Ok(self.listen(UnixListener::bind(path)?))
    }
}

/// One accepted connection, ready for the application.
pub type Connection<IO> = (ProxiedStream<IO>, ProxiedAddr);

/// A listener that reads each connection's PROXY header concurrently and hands out the
/// connection with the real client address.
///
/// * [`accept`](Self::accept) (cancel-safe) never fails: a bad connection is logged and
///   closed, accept errors such as `EMFILE` are logged and retried with back-off.
/// * [`try_accept`](Self::try_accept) and the [`Stream`] implementation also yield each
///   failed connection's [`Error`], for applications that count or report them.
/// * With the `axum` feature, `axum::serve(listener, app)` works; see
///   [`ProxiedAddr`] for the connect-info type.
/// * Handshakes run inside the listener, so they progress (and time out) while the
///   listener is polled: keep calling `accept` in a loop and spawn the handling of each
///   connection, as `axum::serve` and the example below do.
///
/// For hyper-util, accept in a loop and serve each stream:
///
/// ```no_run
/// use hyper_util::rt::TokioIo;
/// # async fn run() -> std::io::Result<()> {
/// let mut listener = realip_listener::ProxyListener::bind("127.0.0.1:8080").await?;
/// loop {
///     let (stream, proxied) = listener.accept().await;
///     tokio::spawn(async move {
///         let service = hyper::service::service_fn(move |_req| {
///             let client = proxied.client().map(ToString::to_string).unwrap_or_default();
///             async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(client)) }
///         });
///         let _ = hyper::server::conn::http1::Builder::new()
///             .serve_connection(TokioIo::new(stream), service)
///             .await;
///     });
/// }
/// # }
/// ```
pub struct ProxyListener<L: Accept = TcpListener> {
    inner: L,
    policy: PolicySource,
    header_timeout: Duration,
    max_pending: usize,
    accept_batch: usize,
    max_header_len: usize,
    pending: FuturesUnordered<Handshake<L::Io>>,
    /// Handshakes that finished at accept (their header had arrived with the connection,
    /// or [`Policy::Skip`]), not handed out yet: no pending-set node for them.
    ready: VecDeque<Result<Connection<L::Io>, Error>>,
    backoff: Option<Pin<Box<Sleep>>>,
    backoff_delay: Duration,
    /// Accept errors (`EMFILE`, ...) since the last socket accepted: a burst is logged at its
    /// first failure and when it ends, not at every retry.
    accept_failures: u64,
    /// [`Accept::shared_local_addr`], asked at the first accept (`None` until then).
    shared_local: Option<Option<SocketAddr>>,
}

impl<L: Accept + fmt::Debug> fmt::Debug for ProxyListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyListener")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("header_timeout", &self.header_timeout)
            .field("max_pending", &self.max_pending)
            .field("accept_batch", &self.accept_batch)
            .field("max_header_len", &self.max_header_len)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl ProxyListener<TcpListener> {
    /// Binds a TCP listener with default settings ([`Policy::Require`]).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Builder::new().bind(addr).await
    }
}

impl ProxyListener<UnixListener> {
    /// Binds a Unix socket listener with default settings ([`Policy::Require`]).
    pub fn bind_unix(path: impl AsRef<Path>) -> io::Result<Self> {
        Builder::new().bind_unix(path)
    }
}

impl From<TcpListener> for ProxyListener<TcpListener> {
    fn from(inner: TcpListener) -> Self {
        Builder::new().listen(inner)
    }
}

impl From<UnixListener> for ProxyListener<UnixListener> {
    fn from(inner: UnixListener) -> Self {
        Builder::new().listen(inner)
    }
}

impl ProxyListener {
    /// Settings: policy, timeouts, caps.
    pub const fn builder() -> Builder {
        Builder::new()
    }
}

impl<L: Accept> ProxyListener<L> {
    /// Wraps an existing listener with default settings ([`Policy::Require`]).
    pub fn new(inner: L) -> Self {
        Builder::new().listen(inner)
    }

    /// The wrapped listener's address.
    pub fn local_addr(&self) -> io::Result<L::LocalAddr> {
        self.inner.local_addr()
    }

    /// The wrapped listener.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }

    /// The wrapped listener, mutably.
    pub fn get_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    /// The wrapped listener; handshakes in progress are dropped (their sockets closed).
    pub fn into_inner(self) -> L {
        self.inner
    }

    /// How many handshakes are in progress, counting finished ones not handed out yet.
    pub fn pending(&self) -> usize {
        self.pending.len() + self.ready.len()
    }

    /// Accepts the next connection whose header was read and accepted.
    ///
    /// Never fails: connections that fail their handshake are logged and dropped, and
    /// accept errors are logged and retried. Cancel-safe: all state lives in the listener,
    /// so dropping this future loses no connection.
    pub async fn accept(&mut self) -> Connection<L::Io> {
        poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Accepts the next connection, or returns the next connection's handshake failure
    /// (already logged). The listener keeps working after an error. Cancel-safe.
    pub async fn try_accept(&mut self) -> Result<Connection<L::Io>, Error> {
        poll_fn(|cx| self.poll_try_accept(cx)).await
    }

    /// Polls for the next accepted connection, skipping failed ones.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Connection<L::Io>> {
        loop {
            match self.poll_try_accept(cx) {
                Poll::Ready(Ok(conn)) => return Poll::Ready(conn),
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Polls for the next connection or handshake failure.
    pub fn poll_try_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Connection<L::Io>, Error>> {
        let mut accepted = 0;
        let mut more_to_accept = false;
        'accept: while self.pending() < self.max_pending {
            if let Some(sleep) = self.backoff.as_mut() {
                if sleep.as_mut().poll(cx).is_pending() {
                    break 'accept;
                }
                self.backoff = None;
            }
            if accepted == self.accept_batch {
                more_to_accept = true;
                break;
            }
            let shared_local = *self
                .shared_local
                .get_or_insert_with(|| self.inner.shared_local_addr());
            match self.inner.poll_accept_io_with_local(cx, shared_local) {
                Poll::Ready(Ok((io, peer, local))) => {
                    accepted += 1;
                    self.backoff_delay = BACKOFF_MIN;
                    if self.accept_failures > 0 {
                        tracing::info!(
                            failures = self.accept_failures,
                            "accepting again after accept errors"
                        );
                        self.accept_failures = 0;
                    }
                    let policy = self.policy.policy_for(&peer);
                    // A connection finished here (skipped, or its header already there) is
                    // queued, not returned: returning it from here would leave the
                    // handshakes behind it unpolled for as long as more such peers keep
                    // connecting. The pending set is polled before the queue.
                    if policy == Policy::Skip {
                        let addr = proxied_addr(peer, local, None);
                        self.ready
                            .push_back(Ok((ProxiedStream::new(io, addr.clone()), addr)));
                    } else {
                        self.start(io, peer, local, policy, cx);
                    }
                }
                Poll::Ready(Err(err)) => {
                    if is_connection_error(&err) {
                        tracing::debug!(error = %err, "accept: connection error");
                        // Counted in the batch: an `Accept` that keeps failing this way
                        // must not hold the poll.
                        accepted += 1;
                        continue;
                    }
                    if self.accept_failures == 0 {
                        tracing::error!(error = %err, backoff = ?self.backoff_delay, "accept error, backing off");
                    } else {
                        tracing::debug!(error = %err, backoff = ?self.backoff_delay, "accept error, backing off");
                    }
                    self.accept_failures += 1;
                    self.backoff = Some(Box::pin(tokio::time::sleep(self.backoff_delay)));
                    self.backoff_delay = (self.backoff_delay * 2).min(BACKOFF_MAX);
                    continue 'accept;
                }
                Poll::Pending => break,
            }
        }

        let result = match self.pending.poll_next_unpin(cx) {
            Poll::Ready(Some(result)) => result,
            Poll::Ready(None) | Poll::Pending => match self.ready.pop_front() {
                Some(result) => {
                    if self.ready.is_empty() && self.ready.capacity() > self.accept_batch {
                        // A burst's queue is not kept.
                        self.ready.shrink_to(self.accept_batch);
                    }
                    result
                }
                None => {
                    if more_to_accept {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
            },
        };
        match &result {
            Ok((_, addr)) => {
                let info = addr.proxy_info();
                tracing::debug!(
                    peer = %addr.socket_peer(),
                    client = %DisplayOpt(addr.client()),
                    version = info.map_or("none", |i| i.version().as_str()),
                    command = info.map_or("none", |i| i.command().as_str()),
                    "accepted",
                );
            }
            Err(err) if err.is_quiet() => {
                tracing::debug!(peer = %err.peer(), reason = err.reason(), "connection closed before a header");
            }
            Err(err @ Error::Timeout { .. }) => {
                tracing::info!(peer = %err.peer(), reason = err.reason(), error = %err, "connection rejected");
            }
            Err(err) => {
                tracing::warn!(peer = %err.peer(), reason = err.reason(), error = %err, "connection rejected");
            }
        }
        if more_to_accept {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(result)
    }
}

impl<L: Accept> ProxyListener<L> {
    /// Starts the handshake of a socket accepted just now with a first read: a header that
    /// arrived with the connection finishes it here, without a pending-set node or a timer;
    /// otherwise the handshake joins the pending set with what was read.
    fn start(
        &mut self,
        mut io: L::Io,
        peer: PeerAddr,
        local: Option<SocketAddr>,
        policy: Policy,
        cx: &mut Context<'_>,
    ) {
        let mut buf = Vec::new();
        match poll_read_header(&mut io, &mut buf, policy, self.max_header_len, cx) {
            Poll::Ready(outcome) => {
                self.ready
                    .push_back(finish_handshake(io, buf, peer, local, outcome));
            }
            // The pending set polls it again at once, with its own waker.
            Poll::Pending => self.pending.push(start_handshake_with(
                io,
                buf,
                peer,
                local,
                policy,
                self.header_timeout,
                self.max_header_len,
            )),
        }
    }
}

impl<L: Accept + Unpin> Stream for ProxyListener<L> {
    type Item = Result<Connection<L::Io>, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_try_accept(cx).map(Some)
    }
}

struct DisplayOpt<'a, T>(Option<&'a T>);

impl<T: fmt::Display> fmt::Display for DisplayOpt<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Builds the addresses of a connection from its socket and its header.
pub(crate) fn proxied_addr(
    peer: PeerAddr,
    local: Option<SocketAddr>,
    info: Option<ProxyInfo>,
) -> ProxiedAddr {
    let from_header = info
        .as_ref()
        .filter(|i| i.command() == Command::Proxy)
        .and_then(ProxyInfo::source_inet)
        .map(|sa| ClientAddr::from_socket_addr(sa, AddrSource::ProxyProtocol));
    let client = from_header.or_else(|| {
        peer.inet()
            .map(|sa| ClientAddr::from_socket_addr(sa, AddrSource::Socket))
    });
    ProxiedAddr::new(client, peer, local, info.map(Arc::new))
}

/// How a handshake ended without an error.
enum Outcome {
    /// A header of this many bytes, and what it said (`None` when it is discarded).
    Header(Option<ProxyInfo>, usize),
    /// No header: every byte read is application data.
    NoHeader,
}

pin_project! {
    /// One entry of [`ProxyListener`]'s pending set, stored inline in the set's node: one
    /// allocation per connection for the whole handshake state.
    #[project = HandshakeProj]
    enum Handshake<IO> {
        /// Reading the header.
        Read { #[pin] read: ReadHandshake<IO> },
        /// Reading the header inside its `proxy_protocol` span, when a subscriber wants it
        /// (boxed so that untraced handshakes do not carry the span).
        Traced { read: Pin<Box<Instrumented<ReadHandshake<IO>>>> },
    }
}

impl<IO: AsyncRead + Unpin + 'static> Future for Handshake<IO> {
    type Output = Result<Connection<IO>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HandshakeProj::Read { read } => read.poll(cx),
            HandshakeProj::Traced { read } => read.as_mut().poll(cx),
        }
    }
}

/// Starts the handshake of a socket accepted just now: its header timeout runs from here,
/// not from the handshake's first poll.
#[cfg(test)]
fn start_handshake<IO>(
    io: IO,
    peer: PeerAddr,
    local: Option<SocketAddr>,
    policy: Policy,
    timeout: Duration,
    max_len: usize,
) -> Handshake<IO>
where
    IO: AsyncRead + Unpin + 'static,
{
    start_handshake_with(io, Vec::new(), peer, local, policy, timeout, max_len)
}

/// [`start_handshake`] after a first read that left `buf`.
fn start_handshake_with<IO>(
    io: IO,
    buf: Vec<u8>,
    peer: PeerAddr,
    local: Option<SocketAddr>,
    policy: Policy,
    timeout: Duration,
    max_len: usize,
) -> Handshake<IO>
where
    IO: AsyncRead + Unpin + 'static,
{
    let span = tracing::debug_span!("proxy_protocol", peer = %peer);
    let mut read = ReadHandshake::new(io, peer, local, policy, timeout, max_len);
    read.buf = buf;
    if span.is_disabled() {
        Handshake::Read { read }
    } else {
        Handshake::Traced {
            read: Box::pin(read.instrument(span)),
        }
    }
}

pin_project! {
    /// The handshake of one socket: reads its header under the header timeout. Written out
    /// by hand rather than as an `async fn` so that each field is stored once; nothing is
    /// allocated until bytes arrive.
    struct ReadHandshake<IO> {
        // `None` once the handshake has finished.
        io: Option<IO>,
        // The bytes read so far (no capacity before the first byte).
        buf: Vec<u8>,
        peer: PeerAddr,
        local: Option<SocketAddr>,
        max_len: usize,
        timeout: Duration,
        policy: Policy,
        #[pin]
        timer: Timer,
    }
}

pin_project! {
    /// A handshake's header timeout. The deadline is fixed at accept; the timer is only
    /// started when a read has to wait, so a header that is there at the first read costs
    /// no timer at all.
    #[project = TimerProj]
    enum Timer {
        /// The timeout is too long to be a deadline.
        Never,
        /// Not started yet.
        At { deadline: Instant },
        /// Started.
        Armed { #[pin] sleep: Sleep },
    }
}

impl Timer {
    /// Whether the deadline has passed; starts the timer (registering `cx`) on first use.
    fn poll_expired(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> bool {
        if let TimerProj::At { deadline } = self.as_mut().project() {
            let sleep = tokio::time::sleep_until(*deadline);
            self.set(Self::Armed { sleep });
        }
        match self.project() {
            TimerProj::Armed { sleep } => sleep.poll(cx).is_ready(),
            TimerProj::Never | TimerProj::At { .. } => false,
        }
    }
}

impl<IO> ReadHandshake<IO> {
    fn new(
        io: IO,
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
            timer: match Instant::now().checked_add(timeout) {
                Some(deadline) => Timer::At { deadline },
                None => Timer::Never,
            },
        }
    }
}

impl<IO: AsyncRead + Unpin + 'static> Future for ReadHandshake<IO> {
    type Output = Result<Connection<IO>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(io) = this.io.as_mut() else {
            panic!("handshake polled after completion");
        };
        let outcome = match poll_read_header(io, this.buf, *this.policy, *this.max_len, cx) {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => {
                // As `tokio::time::timeout`: the read first, then the deadline.
                if this.timer.poll_expired(cx) {
                    *this.io = None;
                    let peer = std::mem::replace(this.peer, PeerAddr::Unix(None));
                    return Poll::Ready(Err(Error::Timeout {
                        peer,
                        timeout: *this.timeout,
                    }));
                }
                return Poll::Pending;
            }
        };
        let io = this.io.take().expect("checked above");
        let peer = std::mem::replace(this.peer, PeerAddr::Unix(None));
        let buf = std::mem::take(this.buf);
        Poll::Ready(finish_handshake(io, buf, peer, *this.local, outcome))
    }
}

/// The connection (or the error) a finished header read makes; `buf` holds what was read.
fn finish_handshake<IO>(
    io: IO,
    mut buf: Vec<u8>,
    peer: PeerAddr,
    local: Option<SocketAddr>,
    outcome: Result<Outcome, Failure>,
) -> Result<Connection<IO>, Error> {
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(failure) => return Err(failure.into_error(peer)),
    };
    // What follows the header is replayed from `buf` itself when the header is short
    // (no second allocation, no copy); after a long one it is copied out so that the
    // header's bytes are not kept.
    let (info, start) = match outcome {
        Outcome::Header(info, len) if len == buf.len() => {
            buf = Vec::new();
            (info, 0)
        }
        Outcome::Header(info, len) if len <= KEEP_HEADER_BYTES => (info, len),
        Outcome::Header(info, len) => {
            buf = buf[len..].to_vec();
            (info, 0)
        }
        Outcome::NoHeader => (None, 0),
    };
    let addr = proxied_addr(peer, local, info);
    Ok((
        ProxiedStream::with_buffer(io, buf, start, addr.clone()),
        addr,
    ))
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
    fn into_error(self, peer: PeerAddr) -> Error {
        match self {
            Self::Closed => Error::Closed { peer },
            Self::Truncated(received) => Error::Truncated { peer, received },
            Self::Header(source) => Error::Header { peer, source },
            Self::Missing => Error::Missing { peer },
            Self::Forbidden(policy) => Error::Forbidden { peer, policy },
            Self::Io(source) => Error::Io { peer, source },
        }
    }
}

/// Reads until the header is complete (or known to be absent); `buf` keeps what was read.
fn poll_read_header<IO: AsyncRead + Unpin + 'static>(
    io: &mut IO,
    buf: &mut Vec<u8>,
    policy: Policy,
    max_len: usize,
    cx: &mut Context<'_>,
) -> Poll<Result<Outcome, Failure>> {
    loop {
        match detect(buf) {
            Detected::Incomplete => {}
            Detected::None => {
                return Poll::Ready(match policy {
                    Policy::Require => Err(Failure::Missing),
                    _ => Ok(Outcome::NoHeader),
                });
            }
            Detected::V1 | Detected::V2 if policy == Policy::Reject => {
                return Poll::Ready(Err(Failure::Forbidden(policy)));
            }
            Detected::V1 | Detected::V2 => match parse_header(buf, max_len) {
                Ok(Some((info, len))) => {
                    let info = (policy != Policy::Ignore).then_some(info);
                    return Poll::Ready(Ok(Outcome::Header(info, len)));
                }
                Ok(None) => {}
                Err(err) => return Poll::Ready(Err(Failure::Header(err))),
            },
        }
        // A v2 header longer than a stack read is read to its announced length (already
        // checked against `max_len` by `parse_header`).
        let need = if buf.starts_with(&V2_SIGNATURE) {
            v2_total_len(buf).map_or(0, |total| total.saturating_sub(buf.len()))
        } else {
            0
        };
        let old = buf.len();
        let n = match ready!(poll_read_some(io, buf, need, cx)) {
            Ok(n) => n,
            // A probe that resets the connection without sending a byte (HAProxy's
            // checks close with RST) is as routine as one that closes cleanly.
            Err(err) if old == 0 && is_connection_error(&err) => {
                return Poll::Ready(Err(Failure::Closed));
            }
            Err(err) => return Poll::Ready(Err(Failure::Io(err))),
        };
        if n == 0 {
            return Poll::Ready(match (policy, old) {
                (Policy::Require, 0) => Err(Failure::Closed),
                (Policy::Require, received) => Err(Failure::Truncated(received)),
                // An incomplete signature prefix at EOF is application data for the
                // policies that accept connections without a header.
                (_, _) if detect(buf) == Detected::Incomplete => Ok(Outcome::NoHeader),
                (_, received) => Err(Failure::Truncated(received)),
            });
        }
    }
}

/// Reads once, appending to `buf`, which grows only by what arrived: the bytes go through
/// a buffer on the stack, and a socket that is not readable yet costs no allocation. A TCP
/// socket with nothing read yet is read directly first (see [`read_fresh_tcp`]). When more than a stack read is `need`ed, exactly
/// that is reserved and read into `buf`'s spare capacity.
fn poll_read_some<IO: AsyncRead + Unpin + 'static>(
    io: &mut IO,
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
    if buf.is_empty() {
        // Nothing read yet: tokio knows a socket is readable only once its driver has
        // polled it, which for a socket accepted just now is after a turn of the runtime
        // (and a header timer started meanwhile). The header is usually there already.
        let mut first = [0; STACK_READ];
        match read_fresh_tcp(io, &mut first) {
            Some(Ok(n)) => {
                buf.extend_from_slice(&first[..n]);
                return Poll::Ready(Ok(n));
            }
            Some(Err(err))
                if !matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Poll::Ready(Err(err));
            }
            Some(Err(_)) | None => {}
        }
    }
    let mut read = ReadBuf::uninit(&mut stack);
    ready!(Pin::new(io).poll_read(cx, &mut read))?;
    buf.extend_from_slice(read.filled());
    Poll::Ready(Ok(read.filled().len()))
}

/// Reads a TCP socket directly (it is non-blocking), bypassing tokio's readiness: `None`
/// for other sockets, `WouldBlock` when nothing has arrived (then the read goes through
/// tokio, which registers the waker).
#[cfg(target_os = "linux")]
fn read_fresh_tcp<IO: 'static>(io: &IO, buf: &mut [u8]) -> Option<io::Result<usize>> {
    use std::io::Read;

    let tcp = (io as &dyn std::any::Any).downcast_ref::<tokio::net::TcpStream>()?;
    let sock = socket2::SockRef::from(tcp);
    let mut sock: &socket2::Socket = &sock;
    Some(sock.read(buf))
}

/// Elsewhere every socket is read through tokio.
#[cfg(not(target_os = "linux"))]
fn read_fresh_tcp<IO>(_io: &IO, _buf: &mut [u8]) -> Option<io::Result<usize>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn local_addr_of_accepted(bind: &str, connect: SocketAddr) -> Option<SocketAddr> {
        let mut listener = ProxyListener::builder()
            .policy(Policy::Skip)
            .bind(bind)
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = tokio::net::TcpStream::connect(SocketAddr::new(connect.ip(), port))
            .await
            .unwrap();
        let (stream, addr) = listener.accept().await;
        assert_eq!(stream.local_addr(), addr.local_addr());
        addr.local_addr()
    }

    #[tokio::test]
    async fn local_addr_of_a_specific_bind_is_the_listeners() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let bound = listener.local_addr().unwrap();
        // Elsewhere than Linux, sockets are asked one by one (see `is_transparent`).
        let shared = cfg!(target_os = "linux").then_some(bound);
        assert_eq!(Accept::shared_local_addr(&listener), shared);
        let mut listener = ProxyListener::builder()
            .policy(Policy::Skip)
            .listen(listener);
        let _client = tokio::net::TcpStream::connect(bound).await.unwrap();
        let (_, addr) = listener.accept().await;
        assert_eq!(addr.local_addr(), Some(bound));
        assert_eq!(listener.shared_local, Some(shared));

        let to = "127.0.0.1:0".parse().unwrap();
        let local = local_addr_of_accepted("127.0.0.1:0", to).await.unwrap();
        assert_eq!(local.ip(), to.ip());

        // IPv6, where the host has it.
        if let Ok(v6) = TcpListener::bind("[::1]:0").await {
            let bound = v6.local_addr().unwrap();
            if cfg!(target_os = "linux") {
                assert_eq!(Accept::shared_local_addr(&v6), Some(bound));
            }
            drop(v6);
            let to: SocketAddr = "[::1]:0".parse().unwrap();
            let local = local_addr_of_accepted("[::1]:0", to).await.unwrap();
            assert_eq!(local.ip(), to.ip());
        }
    }

    #[tokio::test]
    async fn local_addr_of_a_wildcard_bind_is_asked_per_socket() {
        let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
        assert_eq!(Accept::shared_local_addr(&listener), None);
        // The socket's own address, not the wildcard.
        let to: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let local = local_addr_of_accepted("0.0.0.0:0", to).await.unwrap();
        assert_eq!(local.ip(), to.ip());
        assert_ne!(local.port(), 0);
        if let Ok(v6) = TcpListener::bind("[::]:0").await {
            assert_eq!(Accept::shared_local_addr(&v6), None);
            drop(v6);
            let to: SocketAddr = "[::1]:0".parse().unwrap();
            if tokio::net::TcpListener::bind(to).await.is_ok() {
                let local = local_addr_of_accepted("[::]:0", to).await.unwrap();
                assert_eq!(local.ip(), to.ip());
            }
        }
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn local_addr_of_a_transparent_listener_is_asked_per_socket() {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        // Needs CAP_NET_ADMIN; without it, the option stays off and the address is shared.
        let transparent = sock.set_ip_transparent_v4(true).is_ok();
        sock.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        sock.listen(16).unwrap();
        sock.set_nonblocking(true).unwrap();
        let listener = TcpListener::from_std(sock.into()).unwrap();
        let bound = listener.local_addr().unwrap();
        let expected = if transparent { None } else { Some(bound) };
        assert_eq!(Accept::shared_local_addr(&listener), expected);
        let mut listener = ProxyListener::builder()
            .policy(Policy::Skip)
            .listen(listener);
        let _client = tokio::net::TcpStream::connect(bound).await.unwrap();
        let (_, addr) = listener.accept().await;
        assert_eq!(addr.local_addr(), Some(bound));
    }

    #[tokio::test]
    async fn pending_handshake_state_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (io, peer) = listener.accept().await.unwrap();
        let fut = start_handshake(
            io,
            PeerAddr::Inet(peer),
            Some(addr),
            Policy::Require,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        );
        // The same size for every variant (a traced one boxes its span).
        // Stored inline in the pending set's node, the one allocation of a handshake. No
        // buffer until the first bytes arrive, then only what arrived.
        let size = std::mem::size_of_val(&fut);
        assert!(size <= 288, "pending handshake state is {size} bytes");
    }

    #[test]
    fn default_cap_bounds_handshake_memory() {
        // The handshake state, plus the pending set's node around it (pointers, flags and
        // reference counts): what a full default set holds besides the sockets.
        let per_handshake = std::mem::size_of::<Handshake<tokio::net::TcpStream>>() + 128;
        let total = per_handshake * DEFAULT_MAX_PENDING;
        assert!(total <= 8 << 20, "{total} bytes at the default cap");
        assert_eq!(Builder::new().max_pending, DEFAULT_MAX_PENDING);
    }

    /// A handshake on one end of an in-memory pipe, not boxed, so its buffer can be seen.
    fn pipe_handshake(
        policy: Policy,
    ) -> (
        tokio::io::DuplexStream,
        ReadHandshake<tokio::io::DuplexStream>,
    ) {
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

        let header = crate::ProxyHeader::v2(
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
        let Poll::Ready(Ok((stream, addr))) = poll_once(&mut hs).await else {
            panic!("handshake not finished");
        };
        assert_eq!(stream.buffered(), b"ping\n");
        assert_eq!(
            addr.client_socket_addr(),
            Some("203.0.113.9:40000".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn header_longer_than_a_stack_read_in_pieces() {
        use tokio::io::AsyncWriteExt;

        let (mut client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        let header = crate::ProxyHeader::v2(
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
        let mut bytes =
            crate::ProxyHeader::v2("203.0.113.9:40000".parse().unwrap(), addr).to_bytes();
        bytes.extend_from_slice(b"ping\n");
        client.write_all(&bytes).await.unwrap();
        let (io, peer) = listener.accept().unwrap();
        // Loopback: the bytes are in the accepted socket's queue once the write returns.
        let mut peek = [0; 64];
        assert_eq!(io.peek(&mut peek).unwrap(), bytes.len());
        io.set_nonblocking(true).unwrap();
        let io = tokio::net::TcpStream::from_std(io).unwrap();
        let mut hs = Box::pin(ReadHandshake::new(
            io,
            PeerAddr::Inet(peer),
            Some(addr),
            Policy::Require,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        ));
        // Before tokio's driver has seen the socket: read directly, no timer started.
        let Poll::Ready(Ok((stream, proxied))) = poll_once(&mut hs).await else {
            panic!("handshake not finished at the first poll");
        };
        assert!(matches!(hs.timer, Timer::At { .. }));
        assert_eq!(stream.buffered(), b"ping\n");
        assert_eq!(
            proxied.client_socket_addr(),
            Some("203.0.113.9:40000".parse().unwrap())
        );
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
        let hs = start_handshake(
            server,
            peer,
            None,
            Policy::Optional,
            DEFAULT_HEADER_TIMEOUT,
            DEFAULT_MAX_HEADER_LEN,
        );
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

    #[tokio::test(start_paused = true)]
    async fn timer_starts_only_when_a_read_waits_and_counts_from_accept() {
        use tokio::io::AsyncWriteExt;

        // The header is there at the first read: no timer.
        let (mut client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        let header = crate::ProxyHeader::v1(
            "203.0.113.9:40000".parse().unwrap(),
            "10.0.0.1:443".parse().unwrap(),
        )
        .to_bytes();
        client.write_all(&header).await.unwrap();
        assert!(matches!(hs.timer, Timer::At { .. }));
        assert!(matches!(poll_once(&mut hs).await, Poll::Ready(Ok(_))));

        // First polled just before the deadline: the timer runs from accept, not from
        // that poll.
        let (_client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        tokio::time::advance(DEFAULT_HEADER_TIMEOUT - Duration::from_millis(10)).await;
        assert!(poll_once(&mut hs).await.is_pending());
        assert!(matches!(hs.timer, Timer::Armed { .. }));
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(matches!(
            poll_once(&mut hs).await,
            Poll::Ready(Err(Error::Timeout { .. }))
        ));
    }

    #[tokio::test]
    async fn a_timeout_too_long_for_a_deadline_means_none() {
        let (_client, server) = tokio::io::duplex(64);
        let peer = PeerAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 1000)));
        let hs = ReadHandshake::new(server, peer, None, Policy::Require, Duration::MAX, 4096);
        let mut hs = Box::pin(hs);
        assert!(matches!(hs.timer, Timer::Never));
        assert!(poll_once(&mut hs).await.is_pending());
        assert!(matches!(hs.timer, Timer::Never));
    }

    #[tokio::test(start_paused = true)]
    async fn stalled_handshake_times_out() {
        let (_client, hs) = pipe_handshake(Policy::Require);
        let mut hs = Box::pin(hs);
        assert!(poll_once(&mut hs).await.is_pending());
        tokio::time::sleep(DEFAULT_HEADER_TIMEOUT).await;
        match poll_once(&mut hs).await {
            Poll::Ready(Err(Error::Timeout { timeout, .. })) => {
                assert_eq!(timeout, DEFAULT_HEADER_TIMEOUT);
            }
            other => panic!("expected a timeout, got {:?}", other.map(|r| r.map(|_| ()))),
        }
    }
}
