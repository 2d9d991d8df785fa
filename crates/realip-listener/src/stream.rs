//! The accepted connection: bytes read past the header are replayed first.
//!
//! [`ProxiedStream`] wraps the socket like hyper-util's `Rewind`: whatever arrived in the
//! same reads as the PROXY header is returned by the first reads, in order, before the
//! socket is read again. Every `AsyncRead`/`AsyncWrite` method is forwarded.
//!
//! # Example
//!
//! ```
//! use realip_core::PeerAddr;
//! use realip_listener::{ProxiedAddr, ProxiedStream};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (client, server) = tokio::io::duplex(64);
//! let peer = PeerAddr::from("127.0.0.1:9000".parse::<std::net::SocketAddr>().unwrap());
//! let addr = ProxiedAddr::new(None, peer, None, None);
//! let mut stream = ProxiedStream::with_leftover(server, b"hello ".to_vec(), addr);
//!
//! let mut client = client;
//! client.write_all(b"world").await.unwrap();
//! drop(client);
//! let mut text = String::new();
//! stream.read_to_string(&mut text).await.unwrap();
//! assert_eq!(text, "hello world");
//! # }
//! ```

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use realip_core::{ClientAddr, PeerAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connect_info::ProxiedAddr;
use crate::handshake::STACK_READ;
use crate::header::info::ProxyInfo;

pin_project! {
    /// A connection accepted by [`ProxyListener`](crate::listener::ProxyListener): the socket, the
    /// bytes that followed the header in the same reads, and the connection's addresses.
    ///
    /// Two pointers besides the socket: the bytes to replay and the addresses.
    #[derive(Debug)]
    pub struct ProxiedStream<IO> {
        #[pin]
        inner: IO,
        replay: Replay,
        addr: ProxiedAddr,
    }
}

impl<IO> ProxiedStream<IO> {
    /// Wraps `inner` with no bytes to replay.
    pub fn new(inner: IO, addr: ProxiedAddr) -> Self {
        Self::with_replay(inner, Replay::default(), addr)
    }

    /// Wraps `inner`; `leftover` is returned by the first reads, before `inner` is read.
    pub fn with_leftover(inner: IO, leftover: Vec<u8>, addr: ProxiedAddr) -> Self {
        Self::with_replay(inner, Replay::from_vec(leftover), addr)
    }

    /// Wraps `inner`; `replay` is returned by the first reads.
    pub(crate) fn with_replay(inner: IO, replay: Replay, addr: ProxiedAddr) -> Self {
        Self {
            inner,
            replay,
            addr,
        }
    }

    /// The connection's addresses (also the axum connect-info value).
    pub fn proxied_addr(&self) -> &ProxiedAddr {
        &self.addr
    }

    /// The real client (see [`ProxiedAddr::client`]).
    pub fn client(&self) -> Option<ClientAddr> {
        self.addr.client()
    }

    /// The socket's own peer: the proxy, when there is one.
    pub fn socket_peer(&self) -> &PeerAddr {
        self.addr.socket_peer()
    }

    /// The socket's own local address, for internet sockets.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr.local_addr()
    }

    /// The PROXY header, when one was received and used.
    pub fn proxy_info(&self) -> Option<&ProxyInfo> {
        self.addr.proxy_info()
    }

    /// Bytes still waiting to be replayed before the socket is read.
    pub fn buffered(&self) -> &[u8] {
        self.replay.remaining()
    }

    /// The wrapped socket.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }

    /// The wrapped socket, mutably. Reading from it directly skips the
    /// [`buffered`](Self::buffered) bytes.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.inner
    }

    /// The wrapped socket, the bytes not yet replayed, and the addresses.
    pub fn into_parts(self) -> (IO, Vec<u8>, ProxiedAddr) {
        (self.inner, self.replay.remaining().to_vec(), self.addr)
    }

    /// The wrapped socket. Bytes not yet replayed are lost; use
    /// [`into_parts`](Self::into_parts) to keep them.
    pub fn into_inner(self) -> IO {
        self.inner
    }
}

/// The bytes that arrived past the PROXY header, replayed before the socket is read again:
/// one pointer, and one allocation while there is something to replay (freed as soon as
/// the last byte is read).
#[derive(Default)]
pub(crate) struct Replay(Option<Box<ReplayBuf>>);

/// Bytes to replay and how far the replay is.
struct ReplayBuf {
    start: usize,
    end: usize,
    bytes: ReplayBytes,
}

// Always behind the replay's box: the short variant's size is its allocation's.
#[allow(clippy::large_enum_variant)]
enum ReplayBytes {
    /// At most what one handshake read brings (the usual case): copied whole into the
    /// replay's own allocation, so a connection with bytes to replay costs one allocation.
    Short([u8; STACK_READ]),
    /// More, in their own allocation.
    Long(Box<[u8]>),
}

impl Replay {
    /// A copy of `bytes`.
    pub(crate) fn copy_of(bytes: &[u8]) -> Self {
        let end = bytes.len();
        if end == 0 {
            return Self::default();
        }
        if end > STACK_READ {
            return Self::stored(ReplayBytes::Long(bytes.into()), end);
        }
        // Zeroed in its allocation, then only `bytes` copied in.
        let mut replay = Self::stored(ReplayBytes::Short([0; STACK_READ]), end);
        if let Some(ReplayBuf {
            bytes: ReplayBytes::Short(short),
            ..
        }) = replay.0.as_deref_mut()
        {
            short[..end].copy_from_slice(bytes);
        }
        replay
    }

    /// `bytes`, in the allocation they are in.
    fn from_vec(bytes: Vec<u8>) -> Self {
        if bytes.is_empty() {
            return Self::default();
        }
        let end = bytes.len();
        Self::stored(ReplayBytes::Long(bytes.into_boxed_slice()), end)
    }

    fn stored(bytes: ReplayBytes, end: usize) -> Self {
        Self(Some(Box::new(ReplayBuf {
            start: 0,
            end,
            bytes,
        })))
    }

    /// The bytes not replayed yet.
    #[inline]
    fn remaining(&self) -> &[u8] {
        match &self.0 {
            Some(buf) => {
                let bytes = match &buf.bytes {
                    ReplayBytes::Short(bytes) => &bytes[..],
                    ReplayBytes::Long(bytes) => bytes,
                };
                &bytes[buf.start..buf.end]
            }
            None => &[],
        }
    }

    /// Marks `n` more bytes as replayed; releases the buffer after the last one.
    #[inline]
    fn consume(&mut self, n: usize) {
        if let Some(buf) = &mut self.0 {
            buf.start += n;
            if buf.start >= buf.end {
                self.0 = None;
            }
        }
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Replay").field(&self.remaining()).finish()
    }
}

impl<IO: AsyncRead> AsyncRead for ProxiedStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let rest = this.replay.remaining();
        if !rest.is_empty() {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replay.consume(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for ProxiedStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn addr() -> ProxiedAddr {
        ProxiedAddr::new(
            None,
            PeerAddr::from(SocketAddr::from(([127, 0, 0, 1], 1))),
            None,
            None,
        )
    }

    #[test]
    fn per_connection_overhead_is_small() {
        // The replay buffer and the addresses, one pointer each: what moving an accepted
        // stream copies besides the socket, and what a task holding one stores besides it.
        let overhead = std::mem::size_of::<ProxiedStream<tokio::net::TcpStream>>()
            - std::mem::size_of::<tokio::net::TcpStream>();
        assert!(overhead <= 16, "{overhead} bytes");
        assert_eq!(
            std::mem::size_of::<ProxiedAddr>(),
            std::mem::size_of::<usize>()
        );
    }

    #[tokio::test]
    async fn leftover_is_replayed_in_small_reads() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ProxiedStream::with_leftover(server, b"abcdef".to_vec(), addr());
        client.write_all(b"ghi").await.unwrap();
        drop(client);
        let mut small = [0u8; 4];
        let n = stream.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"abcd");
        assert_eq!(stream.buffered(), b"ef");
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"efghi");
        assert!(stream.buffered().is_empty());
    }

    #[tokio::test]
    async fn replay_longer_than_a_handshake_read_is_kept_whole() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let long: Vec<u8> = (0..=255u8).cycle().take(3 * STACK_READ + 7).collect();
        for replay in [Replay::copy_of(&long), Replay::from_vec(long.clone())] {
            let (_client, server) = tokio::io::duplex(64);
            let mut stream = ProxiedStream::with_replay(server, replay, addr());
            let mut first = vec![0; STACK_READ + 1];
            stream.read_exact(&mut first).await.unwrap();
            assert_eq!(first, long[..=STACK_READ]);
            assert_eq!(stream.buffered(), &long[STACK_READ + 1..]);
        }
        let mut stream = ProxiedStream::with_replay(server, Replay::copy_of(&long), addr());
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, long);
        assert!(stream.buffered().is_empty());
    }

    #[tokio::test]
    async fn into_parts_keeps_unread_bytes() {
        let (_client, server) = tokio::io::duplex(64);
        let mut stream = ProxiedStream::with_leftover(server, b"abcdef".to_vec(), addr());
        let mut two = [0u8; 2];
        stream.read_exact(&mut two).await.unwrap();
        let (_io, rest, _addr) = stream.into_parts();
        assert_eq!(rest, b"cdef");
    }

    #[tokio::test]
    async fn writes_are_forwarded() {
        let (mut client, server) = tokio::io::duplex(64);
        let mut stream = ProxiedStream::new(server, addr());
        let bufs = [IoSlice::new(b"ab"), IoSlice::new(b"cd")];
        let n = stream.write_vectored(&bufs).await.unwrap();
        stream.write_all(&b"abcd"[n..]).await.unwrap();
        stream.flush().await.unwrap();
        stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abcd");
    }
}
