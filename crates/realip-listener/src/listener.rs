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
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, Stream, StreamExt};
use realip_core::{LogThrottle, TrustedProxies};
use tokio::net::{TcpListener, ToSocketAddrs, UnixListener};
use tokio::time::Sleep;

use crate::accept::{
    Accept, bind_tcp, bind_unix, default_backlog, is_connection_error, set_defer_accept,
};
use crate::connect_info::ProxiedAddr;
use crate::error::{HandshakeError, LOGGED_REASONS};
use crate::handshake::{Connection, Handshake, Limits, Started, start};
use crate::metrics;
use crate::policy::{Policy, PolicySource};
use crate::stream::ProxiedStream;

/// Default time a peer has to send its complete header: 3 seconds (one TCP retransmit).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(3);
/// Default cap on handshakes in progress: 16384; accepting pauses while it is reached.
///
/// The cap decides how many stalled peers (connected, header not finished) it takes to lock
/// good clients out: at the cap, new connections wait in the kernel's accept queue until a
/// header timeout frees a slot, which is seconds. The default is high enough that a flood of
/// some thousand stalled connections does not reach it, while keeping the worst case bounded.
/// A stalled handshake holds its small state and tokio's socket registration (a silent peer
/// no read buffer, a stalled one only the bytes it sent), plus the kernel's socket memory and
/// one file descriptor: raise `RLIMIT_NOFILE` above the cap (until
/// then, `EMFILE` pauses accepting the same way, with back-off). Lower the cap on small
/// hosts; raise it, or shorten the [header timeout](DEFAULT_HEADER_TIMEOUT), where more
/// stalled peers are expected.
pub const DEFAULT_MAX_PENDING: usize = 16384;
/// Default number of sockets accepted per poll before finished handshakes are looked at,
/// and of failed handshakes ended per turn of the runtime: 16.
///
/// When thousands of stalled peers time out together and reconnect at once, each turn of
/// the listener ends a batch of them and accepts the reconnections of the batch before,
/// so a good client's connection waits behind about one batch of both. Measured with 5,000
/// stalled peers on one core: with 64, 13 to 17 of a good client's ~620 requests per round
/// took over 0.7 ms; with 16, 6 to 14 (2 to 9 without the attack); 8 did no better than 16
/// (BENCHMARKS.md, goal 3). A smaller batch costs one more turn of the runtime (an
/// `epoll_wait`) per batch, only when there is that much to do.
pub const DEFAULT_ACCEPT_BATCH: usize = 16;
/// Default maximum length of a v2 header, its 16-byte fixed part included.
pub const DEFAULT_MAX_HEADER_LEN: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

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
    reset_on_timeout: bool,
    backlog: Option<u32>,
    defer_accept: Duration,
    rejection_log: (Duration, u32),
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default settings: [`Policy::Require`] for every peer, [`DEFAULT_HEADER_TIMEOUT`],
    /// [`DEFAULT_MAX_PENDING`], [`DEFAULT_ACCEPT_BATCH`], [`DEFAULT_MAX_HEADER_LEN`], and
    /// timed-out peers reset ([`reset_on_timeout`](Self::reset_on_timeout)).
    pub const fn new() -> Self {
        Self {
            policy: Policy::Require,
            trusted: None,
            source: None,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            accept_batch: DEFAULT_ACCEPT_BATCH,
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            reset_on_timeout: true,
            backlog: None,
            defer_accept: Duration::ZERO,
            rejection_log: (LogThrottle::DEFAULT_INTERVAL, LogThrottle::DEFAULT_BURST),
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
    ///
    /// The connection is never closed earlier. It is closed later by the time the listener
    /// takes to get to it: the listener keeps one timer for all its waiting handshakes and,
    /// when it fires, ends those whose deadline has passed and sets it for the next
    /// deadline, or 1/64 of the timeout later if that is later (between 1 ms and 100 ms: at
    /// 3 s, 47 ms), so a handshake may end up to that much after its deadline (tokio's
    /// timer also rounds up to the millisecond); and when many timeouts fall due at once,
    /// the listener ends
    /// [`accept_batch`](Self::accept_batch) of them per turn of the runtime, so each waits
    /// for the turns the ones before it take, in which the other tasks run too.
    #[must_use]
    pub const fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// Whether a connection whose [header timeout](Self::header_timeout) ran out is reset
    /// (closed with a TCP RST, through `SO_LINGER` 0) instead of closed with a FIN; `true`
    /// by default. Only sockets that have one are reset ([`Accept::reset`]: TCP); the
    /// others are closed.
    ///
    /// As NGINX's `reset_timedout_connection`: a handshake that timed out has nothing left
    /// to send, so the reset loses nothing, and it frees the socket at once, where an
    /// orderly close leaves it in `FIN_WAIT` and then, for 60 s on Linux, `TIME_WAIT`
    /// (2,000 peers that stalled and timed out left 1,940 such sockets; BENCHMARKS.md,
    /// goal 3). The peer's next read fails with `ECONNRESET` instead of returning the end
    /// of the stream. Other failed handshakes are closed as usual.
    #[must_use]
    pub const fn reset_on_timeout(mut self, reset: bool) -> Self {
        self.reset_on_timeout = reset;
        self
    }

    /// How many handshakes may be in progress at once, counting finished ones not handed
    /// out yet; accepting pauses at the cap, and further connections wait in the kernel's
    /// accept queue (its size is the [listen backlog](Self::backlog); once that is full too,
    /// the kernel drops new handshakes and clients retry). At least 1;
    /// [`DEFAULT_MAX_PENDING`] by default.
    ///
    /// The trade-off: each pending handshake holds a socket, a file descriptor and its small
    /// state until its header arrives or its header timeout ends it, while a cap below the
    /// number of peers that stall at once shuts everyone else out until timeouts free slots.
    /// See [`DEFAULT_MAX_PENDING`].
    #[must_use]
    pub const fn max_pending(mut self, max: usize) -> Self {
        self.max_pending = if max == 0 { 1 } else { max };
        self
    }

    /// How many sockets are accepted (or per-connection accept errors skipped) in one poll
    /// before finished handshakes are handed out, how many handshakes whose header timeout
    /// has passed are woken, and how many failed handshakes (timed out, refused, closed by
    /// the peer) are ended, between two returns of the listener to the runtime; past that, a
    /// connection that finished is still handed out, and the listener then yields until the
    /// runtime has polled its I/O and run its other tasks. At least 1;
    /// [`DEFAULT_ACCEPT_BATCH`] by default.
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

    /// The listen backlog of the socket [`bind`](Self::bind) or
    /// [`bind_unix`](Self::bind_unix) creates: how many connections the kernel queues until
    /// they are accepted. [`default_backlog()`] (the system's maximum) by default. At least
    /// 1; the kernel may cap it (Linux: to `net.core.somaxconn`). It does not apply to
    /// [`listen`](Self::listen), whose listener is already listening.
    #[must_use]
    pub const fn backlog(mut self, backlog: u32) -> Self {
        self.backlog = Some(if backlog == 0 { 1 } else { backlog });
        self
    }

    /// Has the kernel hand over the connections of the socket [`bind`](Self::bind) creates
    /// only once their first bytes (the PROXY header) have arrived, or after `wait` if none
    /// have: Linux's `TCP_DEFER_ACCEPT`, as NGINX's `listen ... deferred` and HAProxy's
    /// `defer-accept`. Off ([`Duration::ZERO`]) by default; 1 second is HAProxy's choice.
    ///
    /// With it, a header is read at accept and no handshake waits for it, which saves the
    /// server a wake-up per connection; a peer that sends nothing waits in the kernel for
    /// about `wait` (whole seconds, rounded up), and only then gets the
    /// [header timeout](Self::header_timeout). Use it only when every peer speaks first:
    /// under [`Policy::Optional`] or [`Policy::Skip`], a client whose protocol waits for the
    /// server (SMTP, ...) is delayed by `wait`. See [`set_defer_accept`] for a listener bound
    /// elsewhere. Linux and Android only: elsewhere `bind` fails with
    /// [`io::ErrorKind::Unsupported`] when it is set. It does not apply to
    /// [`listen`](Self::listen) or [`bind_unix`](Self::bind_unix).
    ///
    /// [`set_defer_accept`]: crate::set_defer_accept
    #[must_use]
    pub const fn defer_accept(mut self, wait: Duration) -> Self {
        self.defer_accept = wait;
        self
    }

    /// How many rejected connections of each reason (`timeout`, `invalid`, `missing`, ...)
    /// are logged at their level (`info` for a timeout, `warn` for the others): at most
    /// `burst` per `interval`, counted from the first; by default 10 per 5 seconds, the
    /// Linux kernel's `printk_ratelimit` ([`LogThrottle`]). Beyond that, rejections of the
    /// same reason are logged at `debug`, and the next line at its level carries their count
    /// as `suppressed`. A peer can be rejected as often as it connects: a wave of 5,000
    /// header timeouts is then 10 `info` lines, not 5,000. [`Duration::ZERO`] logs every
    /// rejection at its level. The `metrics` feature counts every rejection whatever this
    /// says.
    ///
    /// [`LogThrottle`]: realip_core::LogThrottle
    #[must_use]
    pub const fn rejection_log(mut self, interval: Duration, burst: u32) -> Self {
        self.rejection_log = (interval, burst);
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
            limits: Limits {
                timeout: self.header_timeout,
                max_len: self.max_header_len,
                reset_on_timeout: self.reset_on_timeout,
            },
            max_pending: self.max_pending,
            accept_batch: self.accept_batch,
            pending: pending_set(),
            ready: VecDeque::new(),
            failures_this_turn: 0,
            expired_to_wake: VecDeque::new(),
            woke_expired_this_turn: false,
            backoff: None,
            backoff_delay: BACKOFF_MIN,
            expiry: None,
            since_expiry_poll: 0,
            accept_failures: 0,
            shared_local: None,
            rejection_log: RejectionLog::new(self.rejection_log),
        }
    }

    /// Binds a TCP listener with the [listen backlog](Self::backlog) and wraps it.
    ///
    /// Like `TcpListener::bind`, `addr` may resolve to several addresses: the first that
    /// can be bound is used.
    pub async fn bind(self, addr: impl ToSocketAddrs) -> io::Result<ProxyListener<TcpListener>> {
        let backlog = self.backlog.unwrap_or_else(default_backlog);
        let listener = bind_tcp(addr, backlog).await?;
        if !self.defer_accept.is_zero() {
            set_defer_accept(&listener, self.defer_accept)?;
        }
        Ok(self.listen(listener))
    }

    /// Binds a Unix socket listener at `path` with the [listen backlog](Self::backlog) and
    /// wraps it.
    pub fn bind_unix(self, path: impl AsRef<Path>) -> io::Result<ProxyListener<UnixListener>> {
        let backlog = self.backlog.unwrap_or_else(default_backlog);
        Ok(self.listen(bind_unix(path, backlog)?))
    }
}

/// A listener that reads each connection's PROXY header concurrently and hands out the
/// connection with the real client address.
///
/// * [`accept`](Self::accept) (cancel-safe) never fails: a bad connection is logged and
///   closed, accept errors such as `EMFILE` are logged and retried with back-off.
/// * [`try_accept`](Self::try_accept) and the
///   [`Stream`](https://docs.rs/futures-core/0.3/futures_core/stream/trait.Stream.html)
///   implementation also yield each failed connection's [`HandshakeError`], for
///   applications that count or report them.
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
///             let client = proxied.client().map(|client| client.to_string()).unwrap_or_default();
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
    /// The header timeout, the longest header, and what happens at the timeout.
    limits: Limits,
    max_pending: usize,
    accept_batch: usize,
    /// The handshakes waiting for their header, and one idle entry ([`Handshake::idle`]).
    pending: FuturesUnordered<Handshake<L>>,
    /// Handshakes that finished at accept (their header had arrived with the connection,
    /// or [`Policy::Skip`]), not handed out yet: no pending-set node for them.
    ready: VecDeque<Result<Connection<L::Io>, HandshakeError>>,
    /// Failed handshakes ended (closed, or returned by `try_accept`) since the listener last
    /// returned `Pending`: at most [`accept_batch`](Builder::accept_batch) per turn of the
    /// runtime.
    failures_this_turn: usize,
    backoff: Option<Pin<Box<Sleep>>>,
    backoff_delay: Duration,
    /// While handshakes wait: the one timer that ends them, due at the earliest deadline
    /// of a waiting handshake, or a little later (see [`ProxyListener::poll_expiry`]).
    expiry: Option<Pin<Box<Sleep>>>,
    /// Polls of the listener since the expiry timer was last polled (it is polled at least
    /// every `accept_batch` of them, even when every poll hands out a connection).
    since_expiry_poll: usize,
    /// The wakers of handshakes the expiry walk marked expired, not woken yet: a batch is
    /// woken per turn of the runtime, so that a wave of timeouts never queues ahead of a
    /// handshake whose header arrived by more than one batch.
    expired_to_wake: VecDeque<Waker>,
    /// Whether this turn's batch of `expired_to_wake` was woken.
    woke_expired_this_turn: bool,
    /// Accept errors (`EMFILE`, ...) since the last socket accepted: a burst is logged at its
    /// first failure and when it ends, not at every retry.
    accept_failures: u64,
    /// [`Accept::shared_local_addr`], asked at the first accept (`None` until then).
    shared_local: Option<Option<SocketAddr>>,
    /// Throttles the `info`/`warn` lines of rejected connections.
    rejection_log: RejectionLog,
}

impl<L: Accept + fmt::Debug> fmt::Debug for ProxyListener<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyListener")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("header_timeout", &self.limits.timeout)
            .field("max_pending", &self.max_pending)
            .field("accept_batch", &self.accept_batch)
            .field("max_header_len", &self.limits.max_len)
            .field("reset_on_timeout", &self.limits.reset_on_timeout)
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl ProxyListener<TcpListener> {
    /// Binds a TCP listener with default settings ([`Policy::Require`], the
    /// [default backlog](default_backlog)).
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Builder::new().bind(addr).await
    }
}

impl ProxyListener<UnixListener> {
    /// Binds a Unix socket listener with default settings ([`Policy::Require`], the
    /// [default backlog](default_backlog)).
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
        self.waiting() + self.ready.len()
    }

    /// Handshakes waiting in the pending set (its idle entry not counted).
    fn waiting(&self) -> usize {
        self.pending.len().saturating_sub(1)
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
    pub async fn try_accept(&mut self) -> Result<Connection<L::Io>, HandshakeError> {
        poll_fn(|cx| self.poll_try_accept(cx)).await
    }

    /// Polls for the next accepted connection, skipping failed ones.
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Connection<L::Io>> {
        loop {
            match self.poll_finished(cx, Failures::Close) {
                Poll::Ready(Ok(conn)) => return Poll::Ready(conn),
                // A failure at accept (closed, refused at its first read): already logged.
                Poll::Ready(Err(_)) => continue,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Polls for the next connection or handshake failure.
    pub fn poll_try_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Connection<L::Io>, HandshakeError>> {
        self.poll_finished(cx, Failures::Return)
    }

    /// Accepts a batch of sockets, then hands out the next finished handshake.
    ///
    /// Failed handshakes (header timeouts above all, which come in waves when many peers
    /// stalled at once) are ended at most [`accept_batch`](Builder::accept_batch) per turn
    /// of the runtime: past that, connections that finished are still handed out, and the
    /// listener then yields until the runtime has polled its I/O driver and run its other
    /// tasks, so the handlers of connections already handed out, and the sockets waiting
    /// in the accept queue, are not held up behind a whole wave of closes.
    fn poll_finished(
        &mut self,
        cx: &mut Context<'_>,
        failures: Failures,
    ) -> Poll<Result<Connection<L::Io>, HandshakeError>> {
        if self.expiry.is_some() && self.since_expiry_poll >= self.accept_batch {
            // Handed out a batch without waiting: timeouts may be due.
            self.poll_expiry(cx);
        }
        self.since_expiry_poll += 1;
        let (first, more_to_accept) = self.poll_accept_batch(cx);
        if let Some(done) = first {
            if more_to_accept {
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(self.handed_out(done));
        }
        if !self.woke_expired_this_turn {
            self.woke_expired_this_turn = true;
            let batch = self.expired_to_wake.len().min(self.accept_batch);
            for waker in self.expired_to_wake.drain(..batch) {
                waker.wake();
            }
            if self.expired_to_wake.is_empty()
                && self.expired_to_wake.capacity() > self.accept_batch
            {
                // A wave's queue is not kept.
                self.expired_to_wake.shrink_to(self.accept_batch);
            }
        }
        while self.failures_this_turn < self.accept_batch {
            match self.pending.poll_next_unpin(cx) {
                Poll::Ready(Some(result)) => {
                    metrics::finished(&result);
                    if result.is_err() {
                        self.failures_this_turn += 1;
                        if failures == Failures::Close {
                            // Logged; its socket was closed when the handshake ended.
                            let _ = self.handed_out(result);
                            continue;
                        }
                    }
                    if self.ready.is_empty() {
                        if more_to_accept {
                            cx.waker().wake_by_ref();
                        }
                        return Poll::Ready(self.handed_out(result));
                    }
                    // Behind the connections that finished at accept.
                    self.ready.push_back(result);
                    break;
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        if let Some(result) = self.ready.pop_front() {
            if self.ready.is_empty() && self.ready.capacity() > self.accept_batch {
                // A burst's queue is not kept.
                self.ready.shrink_to(self.accept_batch);
            }
            if more_to_accept {
                cx.waker().wake_by_ref();
            }
            return Poll::Ready(self.handed_out(result));
        }
        if self.expiry.is_some() {
            // Polled on the way to `Pending` (and after every batch handed out without
            // waiting): when it fires it wakes this task.
            self.poll_expiry(cx);
        }
        if self.failures_this_turn >= self.accept_batch || !self.expired_to_wake.is_empty() {
            // More failures may be due: back after the runtime's other work, as tokio's
            // own cooperative yield does.
            yield_to_runtime(cx);
        } else if more_to_accept {
            cx.waker().wake_by_ref();
        }
        self.failures_this_turn = 0;
        self.woke_expired_this_turn = false;
        Poll::Pending
    }

    /// Accepts up to [`accept_batch`](Builder::accept_batch) sockets and starts their
    /// handshakes. Returns a connection that finished at accept when nothing else waits
    /// (to be handed out at once), and whether more sockets may be waiting.
    fn poll_accept_batch(&mut self, cx: &mut Context<'_>) -> (Option<Finished<L::Io>>, bool) {
        let mut accepted = 0;
        let mut more_to_accept = false;
        let mut first = None;
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
                    let done = if policy == Policy::Skip {
                        metrics::skipped();
                        let addr = ProxiedAddr::from_connection(peer, local, None);
                        Ok((ProxiedStream::new(io, addr.clone()), addr))
                    } else {
                        let started = start::<L>(io, peer, local, policy, self.limits, cx);
                        match started {
                            Started::Done(result) => {
                                metrics::finished(&result);
                                result
                            }
                            // The pending set polls it at once, with its own waker.
                            Started::Pending(handshake) => {
                                if self.expiry.is_none() {
                                    if let Some(deadline) = handshake.deadline() {
                                        let mut timer =
                                            Box::pin(tokio::time::sleep_until(deadline));
                                        // A timer is set when first polled.
                                        let _ = timer.as_mut().poll(cx);
                                        self.expiry = Some(timer);
                                        self.since_expiry_poll = 0;
                                    }
                                }
                                self.pending.push(handshake);
                                continue 'accept;
                            }
                        }
                    };
                    // A connection finished here (skipped, or its header already there) is
                    // returned by this poll at once when nothing else waited before it; the
                    // next poll, which a server makes as soon as it has taken this one,
                    // accepts the rest. (Accepting on until the accept queue is empty would
                    // end most batches in a failed `accept4` when peers arrive one at a time;
                    // a little later, the next peer has often arrived.) Otherwise it is
                    // queued: returning it before the handshakes already waiting would leave
                    // them unpolled for as long as more such peers keep connecting. The
                    // pending set is polled before the queue.
                    if first.is_none() && self.waiting() == 0 && self.ready.is_empty() {
                        first = Some(done);
                        break 'accept;
                    } else {
                        self.ready.push_back(done);
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
        (first, more_to_accept)
    }
}

impl<L: Accept> ProxyListener<L> {
    /// Logs what is handed out ([`RejectionLog::log`]) and returns it.
    fn handed_out(&self, result: Finished<L::Io>) -> Finished<L::Io> {
        self.rejection_log.log(&result);
        result
    }

    /// Polls the expiry timer; when it has fired, walks the waiting handshakes: those whose
    /// deadline has passed are marked expired and queued to be woken, at most
    /// [`accept_batch`](Builder::accept_batch) per turn (the pending set then ends them, as
    /// many per turn; a handshake whose header arrived meanwhile is woken by its socket and
    /// waits behind at most one batch of them, not behind the whole wave), and the timer is set again
    /// for the earliest deadline still to come, or [`expiry_step`] from now if that is
    /// later; with nothing left to wait for, it is dropped.
    ///
    /// One timer for the whole pending set instead of one per handshake: starting and
    /// ending a handshake touches no timer (tokio's timer wheel takes a lock for each, and
    /// wakes its driver, a system call, whenever a timer is set earlier than all the others,
    /// as a lone handshake's is), a waiting handshake holds 16 bytes for its deadline instead
    /// of a 112-byte timer, and a wave of timeouts due together is found by one walk.
    fn poll_expiry(&mut self, cx: &mut Context<'_>) {
        self.since_expiry_poll = 0;
        let Some(timer) = self.expiry.as_mut() else {
            return;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut next: Option<tokio::time::Instant> = None;
        for handshake in Pin::new(&mut self.pending).iter_pin_mut() {
            if let Some(deadline) = handshake.expire_if_due(now, &mut self.expired_to_wake) {
                next = Some(next.map_or(deadline, |next| next.min(deadline)));
            }
        }
        match next {
            Some(deadline) => {
                let step = now.checked_add(expiry_step(self.limits.timeout));
                timer
                    .as_mut()
                    .reset(step.map_or(deadline, |step| deadline.max(step)));
                let _ = timer.as_mut().poll(cx);
            }
            None => self.expiry = None,
        }
    }
}

/// An empty pending set: its idle entry only ([`Handshake::idle`]).
fn pending_set<L: Accept>() -> FuturesUnordered<Handshake<L>> {
    let set = FuturesUnordered::new();
    set.push(Handshake::idle());
    set
}

/// The least time between two walks of the pending set for expired handshakes: 1/64 of
/// the header timeout, between 1 ms and 100 ms. A handshake ends at most that long after
/// its deadline (at 3 s, 47 ms), and a stream of stalled peers costs at most one walk per
/// step.
fn expiry_step(header_timeout: Duration) -> Duration {
    (header_timeout / 64).clamp(Duration::from_millis(1), Duration::from_millis(100))
}

/// A handshake's end: the connection, or why it was refused.
type Finished<IO> = Result<Connection<IO>, HandshakeError>;

/// What [`ProxyListener::poll_finished`] does with a failed handshake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failures {
    /// Logs it and goes on (`accept`).
    Close,
    /// Returns it (`try_accept`).
    Return,
}

/// Schedules the current task to be polled again once the runtime has polled its I/O
/// driver and run the tasks already waiting (tokio's `yield_now`; outside a tokio runtime,
/// at once).
fn yield_to_runtime(cx: &mut Context<'_>) {
    let mut yielding = std::pin::pin!(tokio::task::yield_now());
    // Its first poll schedules the wake-up and returns `Pending`.
    let _ = yielding.as_mut().poll(cx);
}

/// One [`LogThrottle`] per reason logged above `debug` (`closed` is logged at `debug` only):
/// see [`Builder::rejection_log`].
#[derive(Debug)]
struct RejectionLog([LogThrottle; LOGGED_REASONS]);

impl RejectionLog {
    fn new((interval, burst): (Duration, u32)) -> Self {
        Self(std::array::from_fn(|_| LogThrottle::new(interval, burst)))
    }

    /// Logs a connection or handshake failure as it is handed out: a rejection at `info`
    /// (timeout) or `warn` (the others) within its reason's limit, with the count of those
    /// of the same reason logged at `debug` since (`suppressed`).
    fn log<IO>(&self, result: &Result<Connection<IO>, HandshakeError>) {
        match result {
            Ok((_, addr)) => {
                let info = addr.proxy_info();
                tracing::debug!(
                    peer = %addr.socket_peer(),
                    client = %DisplayOpt(addr.client().as_ref()),
                    version = info.map_or("none", |i| i.version().as_str()),
                    command = info.map_or("none", |i| i.command().as_str()),
                    "accepted",
                );
            }
            Err(err) if err.is_quiet() => {
                tracing::debug!(peer = %err.peer(), reason = err.reason(), "connection closed before a header");
            }
            // Nothing above `debug` would be written: no need to count.
            Err(_) if !tracing::enabled!(tracing::Level::WARN) => {}
            Err(err) => {
                let reason = err.reason();
                let throttle = err.logged_reason_slot().and_then(|i| self.0.get(i));
                let admitted = match throttle {
                    Some(throttle) => throttle.admit(Instant::now()),
                    None => Some(0),
                };
                match admitted {
                    None => {
                        tracing::debug!(peer = %err.peer(), reason, error = %err, "connection rejected");
                    }
                    Some(suppressed) if matches!(err, HandshakeError::Timeout { .. }) => {
                        tracing::info!(peer = %err.peer(), reason, error = %err, suppressed, "connection rejected");
                    }
                    Some(suppressed) => {
                        tracing::warn!(peer = %err.peer(), reason, error = %err, suppressed, "connection rejected");
                    }
                }
            }
        }
    }
}

impl<L: Accept + Unpin> Stream for ProxyListener<L> {
    type Item = Result<Connection<L::Io>, HandshakeError>;

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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::AsyncWriteExt;

    use super::*;

    /// Polls `listener` until `done` holds of it (each poll may accept and start
    /// handshakes; real sockets need a few turns of the runtime).
    async fn poll_until(listener: &mut ProxyListener, done: impl Fn(&ProxyListener) -> bool) {
        for _ in 0..1000 {
            if done(listener) {
                return;
            }
            let polled = poll_fn(|cx| Poll::Ready(listener.poll_try_accept(cx))).await;
            assert!(polled.is_pending(), "nothing should finish here");
            tokio::task::yield_now().await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn one_expiry_timer_is_kept_only_while_handshakes_wait() {
        let timeout = Duration::from_millis(400);
        let mut listener = Builder::new()
            .header_timeout(timeout)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listener.expiry.is_none());

        // A client that has not written yet: its handshake waits, and the expiry timer is
        // set for its deadline.
        let started = tokio::time::Instant::now();
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        poll_until(&mut listener, |l| l.pending() == 1).await;
        let due = listener.expiry.as_ref().expect("set").deadline();
        assert!(due >= started + timeout && due <= tokio::time::Instant::now() + timeout);

        // The header arrives: the connection comes out; when the timer fires nothing
        // waits any more, and it is dropped.
        let header = crate::ProxyHeader::v2("192.0.2.1:4000".parse().unwrap(), addr).to_bytes();
        client.write_all(&header).await.unwrap();
        let (_stream, got) = listener.try_accept().await.unwrap();
        assert_eq!(got.client().unwrap().ip().to_string(), "192.0.2.1");
        assert!(listener.expiry.is_some(), "kept until it fires");
        tokio::time::sleep_until(due).await;
        let polled = poll_fn(|cx| Poll::Ready(listener.poll_try_accept(cx))).await;
        assert!(polled.is_pending());
        assert!(listener.expiry.is_none(), "dropped once nothing waits");

        // Silent clients accepted at different times: each times out after its own
        // deadline, never before, and at most one expiry step after.
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let first_at = tokio::time::Instant::now();
        poll_until(&mut listener, |l| l.pending() == 1).await;
        tokio::time::sleep(timeout / 2).await;
        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let second_at = tokio::time::Instant::now();
        // Ended by the expiry walk or never: a broken walk fails here instead of hanging.
        let late = expiry_step(timeout) + Duration::from_millis(250);
        for (accepted, left) in [(first_at, 1), (second_at, 0)] {
            let err = tokio::time::timeout(timeout + late, listener.try_accept())
                .await
                .expect("no timeout fired")
                .unwrap_err();
            assert!(matches!(err, HandshakeError::Timeout { .. }), "{err:?}");
            let waited = accepted.elapsed();
            assert!(waited >= timeout && waited < timeout + late, "{waited:?}");
            assert_eq!(
                listener.pending(),
                left,
                "the second is not due with the first"
            );
            assert_eq!(
                listener.expiry.is_some(),
                left > 0,
                "set again for the second only"
            );
        }
    }

    #[test]
    fn the_expiry_step_is_a_sixty_fourth_of_the_timeout_within_bounds() {
        assert_eq!(
            expiry_step(Duration::from_secs(3)),
            Duration::from_micros(46_875)
        );
        assert_eq!(
            expiry_step(Duration::from_millis(10)),
            Duration::from_millis(1)
        );
        assert_eq!(
            expiry_step(Duration::from_secs(60)),
            Duration::from_millis(100)
        );
        assert_eq!(expiry_step(Duration::MAX), Duration::from_millis(100));
    }

    #[test]
    fn default_cap_bounds_handshake_memory() {
        // The handshake state, plus the pending set's node around it (pointers, flags and
        // reference counts): what a full default set holds besides the sockets.
        let per_handshake = std::mem::size_of::<Handshake<TcpListener>>() + 128;
        let total = per_handshake * DEFAULT_MAX_PENDING;
        assert!(total <= 8 << 20, "{total} bytes at the default cap");
        assert_eq!(Builder::new().max_pending, DEFAULT_MAX_PENDING);
    }
}
