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

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use realip_core::{ClientAddr, PeerAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connect_info::ProxiedAddr;
use crate::header::info::ProxyInfo;

pin_project! {
    /// A connection accepted by [`ProxyListener`](crate::listener::ProxyListener): the socket, the
    /// bytes that followed the header in the same reads, and the connection's addresses.
    #[derive(Debug)]
    pub struct ProxiedStream<IO> {
        #[pin]
        inner: IO,
        leftover: Box<[u8]>,
        pos: usize,
        addr: ProxiedAddr,
    }
}

impl<IO> ProxiedStream<IO> {
    /// Wraps `inner` with no bytes to replay.
    pub fn new(inner: IO, addr: ProxiedAddr) -> Self {
        Self::with_leftover(inner, Vec::new(), addr)
    }

    /// Wraps `inner`; `leftover` is returned by the first reads, before `inner` is read.
    pub fn with_leftover(inner: IO, leftover: Vec<u8>, addr: ProxiedAddr) -> Self {
        Self::with_buffer(inner, leftover, 0, addr)
    }

    /// Wraps `inner`; `buf[start..]` is returned by the first reads.
    pub(crate) fn with_buffer(inner: IO, buf: Vec<u8>, start: usize, addr: ProxiedAddr) -> Self {
        debug_assert!(start <= buf.len());
        let (leftover, pos) = if start == buf.len() {
            (Box::default(), 0)
        } else {
            (buf.into_boxed_slice(), start)
        };
        Self {
            inner,
            leftover,
            pos,
            addr,
        }
    }

    /// The connection's addresses (also the axum connect-info value).
    pub fn proxied_addr(&self) -> &ProxiedAddr {
        &self.addr
    }

    /// The real client (see [`ProxiedAddr::client`]).
    pub fn client(&self) -> Option<&ClientAddr> {
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
        &self.leftover[self.pos..]
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
        let rest = self.leftover[self.pos..].to_vec();
        (self.inner, rest, self.addr)
    }

    /// The wrapped socket. Bytes not yet replayed are lost; use
    /// [`into_parts`](Self::into_parts) to keep them.
    pub fn into_inner(self) -> IO {
        self.inner
    }
}

impl<IO: AsyncRead> AsyncRead for ProxiedStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.pos < this.leftover.len() {
            let rest = &this.leftover[*this.pos..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            *this.pos += n;
            if *this.pos == this.leftover.len() {
                // Replay finished: release the buffer.
                *this.leftover = Box::default();
                *this.pos = 0;
            }
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
        // The replay buffer and its position, and the addresses (one pointer to their
        // shared allocation): what moving an accepted stream copies besides the socket.
        let overhead = std::mem::size_of::<ProxiedStream<tokio::net::TcpStream>>()
            - std::mem::size_of::<tokio::net::TcpStream>();
        assert!(overhead <= 32, "{overhead} bytes");
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
    async fn replay_starts_at_the_given_offset() {
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        let mut stream = ProxiedStream::with_buffer(server, b"HEADERabc".to_vec(), 6, addr());
        assert_eq!(stream.buffered(), b"abc");
        let mut one = [0u8; 1];
        stream.read_exact(&mut one).await.unwrap();
        assert_eq!(&one, b"a");
        let (io, rest, _) = stream.into_parts();
        assert_eq!(rest, b"bc");
        let mut stream = ProxiedStream::with_buffer(io, b"HEADERabc".to_vec(), 6, addr());
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"abc");
        assert!(stream.buffered().is_empty());

        let (_client, server) = tokio::io::duplex(64);
        let stream = ProxiedStream::with_buffer(server, b"HEADER".to_vec(), 6, addr());
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
