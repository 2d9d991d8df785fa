//! The sockets under a [`ProxyListener`](crate::listener::ProxyListener): the [`Accept`]
//! trait, its implementations for tokio's TCP and Unix listeners, and binding with a listen
//! backlog sized for bursts.
//!
//! # Example
//!
//! ```
//! use realip_listener::{Policy, ProxyListener, bind_tcp};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // A listener bound elsewhere, here with a backlog of 8192, wrapped afterwards.
//! let tcp = bind_tcp("127.0.0.1:0", 8192).await?;
//! let listener = ProxyListener::builder().policy(Policy::Optional).listen(tcp);
//! assert!(listener.local_addr()?.ip().is_loopback());
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll};
use std::time::Duration;

use realip_core::PeerAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, ToSocketAddrs, UnixListener};

/// A socket as [`Accept`] returns it: the socket, its peer, and its local address when it
/// has one.
pub type Accepted<IO> = (IO, PeerAddr, Option<SocketAddr>);

/// A socket listener that [`ProxyListener`](crate::listener::ProxyListener) can wrap:
/// implemented for tokio's
/// [`TcpListener`](https://docs.rs/tokio/1/tokio/net/struct.TcpListener.html) and
/// [`UnixListener`](https://docs.rs/tokio/1/tokio/net/struct.UnixListener.html).
pub trait Accept: Send {
    /// The accepted socket.
    type Io: AsyncRead + AsyncWrite + Unpin + Send;
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
    /// [`ProxyListener`](crate::listener::ProxyListener) calls it once, at its first accept, and passes the result to
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

    /// Reads from a socket this listener accepted just now directly, bypassing the
    /// runtime's readiness: the number of bytes read, `WouldBlock` when nothing has arrived
    /// yet, or `None`, the default, when the socket can only be read through `AsyncRead`.
    ///
    /// The handshake's first read uses it: tokio knows a socket is readable only once its
    /// driver has polled it, which for a socket accepted just now is after a turn of the
    /// runtime (and a header timer started meanwhile), while the header is usually there
    /// already. Tokio's `TcpListener` sockets are read this way on Linux.
    fn read_accepted(io: &Self::Io, buf: &mut [u8]) -> Option<io::Result<usize>> {
        let _ = (io, buf);
        None
    }

    /// Closes a socket this listener accepted with a reset rather than an orderly close,
    /// where its kind of socket has one; the default closes it. Used on the sockets whose
    /// header timeout ran out (see
    /// [`Builder::reset_on_timeout`](crate::listener::Builder::reset_on_timeout)). Tokio's
    /// TCP sockets are reset (`SO_LINGER` 0: the close sends an RST and frees the socket
    /// at once, without `FIN_WAIT` or `TIME_WAIT`).
    fn reset(io: Self::Io) {
        drop(io);
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

    fn reset(io: Self::Io) {
        // On failure (the socket is already gone), a plain close is all there is.
        let _ = socket2::SockRef::from(&io).set_linger(Some(std::time::Duration::ZERO));
        drop(io);
    }

    #[cfg(target_os = "linux")]
    fn read_accepted(io: &Self::Io, buf: &mut [u8]) -> Option<io::Result<usize>> {
        use std::io::Read;

        // The socket is non-blocking: this never waits. It goes through `try_io` when tokio
        // believes the socket readable (since tokio 1.54, an accepted socket is, before its
        // driver has polled it), so that tokio learns what the read found, as its own reads
        // tell it: a read that finds nothing (`WouldBlock`), or fewer bytes than asked for
        // (the socket is drained: answered to `try_io` as `WouldBlock`, the bytes kept
        // aside), clears that belief, and the next read (the handshake's, or the
        // application's after its reply) waits for the driver's event instead of trying the
        // socket in vain. `try_io` clears only if no event arrived since it was called.
        let sock = socket2::SockRef::from(io);
        let mut sock: &socket2::Socket = &sock;
        let mut tried = false;
        let mut drained = None;
        let read = io.try_io(tokio::io::Interest::READABLE, || {
            tried = true;
            let n = sock.read(buf)?;
            if n > 0 && n < buf.len() {
                drained = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        if let Some(n) = drained {
            Some(Ok(n))
        } else if tried {
            Some(read)
        } else {
            // Tokio does not know yet (before 1.54): read around it.
            Some(sock.read(buf))
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

/// Whether `e` is the failure of one connection (refused, aborted or reset by the peer),
/// not of the listener or the host.
pub(crate) fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The listen backlog used when the system's maximum cannot be read: 4096, Linux's
/// `net.core.somaxconn` since 5.4.
pub const FALLBACK_BACKLOG: u32 = 4096;

/// The listen backlog [`Builder::bind`](crate::listener::Builder::bind) and
/// [`Builder::bind_unix`](crate::listener::Builder::bind_unix) use by default: the
/// system's maximum, as Go's `net.Listen` and NGINX (`listen ... backlog=`, whose default on
/// Linux is `-1`, the maximum) do.
///
/// On Linux it is `/proc/sys/net/core/somaxconn` (the kernel caps any larger backlog to
/// it); where that cannot be read, or elsewhere, [`FALLBACK_BACKLOG`].
///
/// A burst of connections arriving faster than they are accepted waits in this queue;
/// tokio's `TcpListener::bind` uses 128 (as the standard library does), which a few
/// thousand clients reconnecting at once overflow: the kernel then drops their handshakes
/// and they retry a second later, or give up.
pub fn default_backlog() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(FALLBACK_BACKLOG)
}

/// Binds a TCP listener to the first of `addr`'s addresses that can be bound (as
/// `TcpListener::bind` does, `SO_REUSEADDR` set on Unix) with a listen backlog of `backlog`
/// (see [`default_backlog`]).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let listener = realip_listener::bind_tcp("127.0.0.1:0", 8192).await?;
/// assert!(listener.local_addr()?.ip().is_loopback());
/// # Ok(())
/// # }
/// ```
pub async fn bind_tcp(addr: impl ToSocketAddrs, backlog: u32) -> io::Result<TcpListener> {
    let mut last_err = None;
    for addr in tokio::net::lookup_host(addr).await? {
        match bind_tcp_addr(addr, backlog) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "could not resolve to any address",
        )
    }))
}

fn bind_tcp_addr(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Has the kernel hand `listener`'s connections over only once their first bytes have
/// arrived, or after `wait` if none have: Linux's `TCP_DEFER_ACCEPT` (man 7 tcp), as NGINX's
/// `listen ... deferred` and HAProxy's `defer-accept` set it. [`Duration::ZERO`] turns it
/// off.
///
/// A proxy sends its PROXY header as soon as it has connected, so on a deferred listener
/// the header is there when the connection is accepted: the handshake finishes at its
/// first read, and the server is woken once per connection instead of once for the
/// connection and once for its header (BENCHMARKS.md, goal 1). A peer that connects and
/// sends nothing is held in the kernel (its SYN-ACK retransmitted) and accepted after about
/// `wait`; the header timeout then runs as usual.
///
/// Only for protocols whose client speaks first (PROXY, HTTP, TLS, MQTT): a peer that waits
/// for the server to speak (SMTP, ...) is accepted only after `wait`, on every connection.
///
/// `wait` is rounded up to whole seconds (at most `i32::MAX`); the kernel then counts it in
/// SYN-ACK retransmissions, 1 s, 2 s, 4 s, ... apart, so the wait is what the retransmissions
/// that cover it take (2 s takes two, 3 s), and [`defer_accept`] reports that.
///
/// # Errors
/// The system's error if the option cannot be set; [`io::ErrorKind::Unsupported`] outside
/// Linux and Android.
pub fn set_defer_accept(listener: &TcpListener, wait: Duration) -> io::Result<()> {
    let secs = wait
        .as_secs()
        .saturating_add(u64::from(wait.subsec_nanos() > 0));
    let secs = i32::try_from(secs).unwrap_or(i32::MAX);
    tcp_defer::set(listener, secs)
}

/// The wait of `TCP_DEFER_ACCEPT` on `listener`, as the kernel keeps it (see
/// [`set_defer_accept`]); `None` when the option is off.
///
/// # Errors
/// As [`set_defer_accept`].
pub fn defer_accept(listener: &TcpListener) -> io::Result<Option<Duration>> {
    tcp_defer::get(listener).map(|secs| {
        u64::try_from(secs)
            .ok()
            .filter(|&secs| secs > 0)
            .map(Duration::from_secs)
    })
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod tcp_defer {
    use std::io;

    use nix::sys::socket::{getsockopt, setsockopt};
    use nix::{getsockopt_impl, setsockopt_impl, sockopt_impl};
    use tokio::net::TcpListener;

    // nix declares the options it knows with this macro and exports it for the others;
    // `TCP_DEFER_ACCEPT` takes and gives an `int` of seconds.
    sockopt_impl!(
        /// `TCP_DEFER_ACCEPT`, seconds.
        TcpDeferAccept,
        Both,
        libc::IPPROTO_TCP,
        libc::TCP_DEFER_ACCEPT,
        libc::c_int
    );

    pub(super) fn set(listener: &TcpListener, secs: i32) -> io::Result<()> {
        setsockopt(listener, TcpDeferAccept, &secs).map_err(io::Error::from)
    }

    pub(super) fn get(listener: &TcpListener) -> io::Result<i32> {
        getsockopt(listener, TcpDeferAccept).map_err(io::Error::from)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod tcp_defer {
    use std::io;

    use tokio::net::TcpListener;

    fn unsupported() -> io::Error {
        io::Error::new(
            io::ErrorKind::Unsupported,
            "TCP_DEFER_ACCEPT is a Linux option",
        )
    }

    pub(super) fn set(_listener: &TcpListener, _secs: i32) -> io::Result<()> {
        Err(unsupported())
    }

    pub(super) fn get(_listener: &TcpListener) -> io::Result<i32> {
        Err(unsupported())
    }
}

/// Binds a Unix socket listener at `path` with a listen backlog of `backlog` (see
/// [`default_backlog`]; tokio's `UnixListener::bind` uses the system's maximum on Linux
/// and 128 on some other systems).
pub fn bind_unix(path: impl AsRef<Path>, backlog: u32) -> io::Result<UnixListener> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    socket.bind(&socket2::SockAddr::unix(path)?)?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    socket.set_nonblocking(true)?;
    UnixListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::ProxyListener;
    use crate::policy::Policy;

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
}
