//! `ProxiedStream` forwards every write method to the socket and replays what came with
//! the header before reading the socket again.

mod support;

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use realip_core::PeerAddr;
use realip_listener::{Policy, ProxiedAddr, ProxiedStream, ProxyHeader};
use support::{bind, client_v4, within};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What the stream did to the wrapped I/O object.
#[derive(Debug, Default, PartialEq, Eq)]
struct Calls {
    writes: Vec<Vec<u8>>,
    vectored: Vec<Vec<Vec<u8>>>,
    flushes: usize,
    shutdowns: usize,
}

/// An I/O object that records every write-side call and reads from a fixed buffer.
#[derive(Debug)]
struct Recorder {
    calls: Arc<Mutex<Calls>>,
    to_read: Vec<u8>,
}

impl AsyncRead for Recorder {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.to_read.len().min(buf.remaining());
        let chunk: Vec<u8> = self.to_read.drain(..n).collect();
        buf.put_slice(&chunk);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.calls.lock().unwrap().writes.push(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let slices: Vec<Vec<u8>> = bufs.iter().map(|b| b.to_vec()).collect();
        let n = slices.iter().map(Vec::len).sum();
        self.calls.lock().unwrap().vectored.push(slices);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.calls.lock().unwrap().flushes += 1;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.calls.lock().unwrap().shutdowns += 1;
        Poll::Ready(Ok(()))
    }
}

fn some_addr() -> ProxiedAddr {
    ProxiedAddr::new(None, PeerAddr::from(client_v4()), None, None)
}

#[tokio::test]
async fn every_write_method_reaches_the_wrapped_io() {
    let calls = Arc::new(Mutex::new(Calls::default()));
    let io = Recorder {
        calls: calls.clone(),
        to_read: b"socket".to_vec(),
    };
    let mut stream = ProxiedStream::with_leftover(io, b"left".to_vec(), some_addr());

    assert!(
        stream.is_write_vectored(),
        "is_write_vectored must be forwarded"
    );
    stream.write_all(b"plain").await.unwrap();
    let n = stream
        .write_vectored(&[IoSlice::new(b"vec"), IoSlice::new(b"tored")])
        .await
        .unwrap();
    assert_eq!(n, 8);
    stream.flush().await.unwrap();
    stream.shutdown().await.unwrap();

    assert_eq!(
        *calls.lock().unwrap(),
        Calls {
            writes: vec![b"plain".to_vec()],
            vectored: vec![vec![b"vec".to_vec(), b"tored".to_vec()]],
            // shutdown flushes nothing by itself in tokio's AsyncWriteExt; one explicit flush.
            flushes: 1,
            shutdowns: 1,
        }
    );

    // Reads: the leftover first, then the wrapped I/O.
    let mut out = Vec::new();
    let mut buf = [0; 3];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, b"leftsocket");
}

/// A TCP client that sent `header(listener address)` followed by `data` to a listener that
/// requires a header, and the connection the listener accepted from it.
async fn accepted_after(
    header: impl FnOnce(SocketAddr) -> Vec<u8>,
    data: &[u8],
) -> (TcpStream, ProxiedStream<TcpStream>, ProxiedAddr) {
    let (mut listener, addr) = bind(Policy::Require).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut bytes = header(addr);
    bytes.extend_from_slice(data);
    client.write_all(&bytes).await.unwrap();
    let (stream, proxied) = within("accept", listener.accept()).await;
    (client, stream, proxied)
}

#[tokio::test]
async fn tcp_stream_keeps_vectored_writes_and_half_close() {
    let (mut client, mut stream, proxied) = accepted_after(
        |addr| ProxyHeader::v2(client_v4(), addr).to_bytes(),
        b"request",
    )
    .await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
    assert!(stream.is_write_vectored());
    assert_eq!(
        stream.get_ref().peer_addr().unwrap(),
        client.local_addr().unwrap()
    );

    let mut request = [0; 7];
    stream.read_exact(&mut request).await.unwrap();
    assert_eq!(&request, b"request");

    // A vectored reply, then the server half-closes: the client sees the reply and EOF...
    let reply = [IoSlice::new(b"hello "), IoSlice::new(b"world")];
    let written = stream.write_vectored(&reply).await.unwrap();
    assert!(written > 0);
    // A vectored write may be partial; the rest goes out plainly.
    stream.write_all(&b"hello world"[written..]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    within("client reads to EOF", client.read_to_end(&mut got))
        .await
        .unwrap();
    assert_eq!(got, b"hello world");

    // ...and can still send: the server's read side is open.
    client.write_all(b"more").await.unwrap();
    client.shutdown().await.unwrap();
    let mut more = Vec::new();
    within("server reads to EOF", stream.read_to_end(&mut more))
        .await
        .unwrap();
    assert_eq!(more, b"more");
}

#[tokio::test]
async fn into_parts_returns_the_bytes_not_yet_replayed() {
    let (mut client, mut stream, _) = accepted_after(
        |addr| ProxyHeader::v1(client_v4(), addr).to_bytes(),
        b"0123456789",
    )
    .await;
    let mut first = [0; 4];
    stream.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"0123");
    // Whatever the handshake read past the header and was not read yet is still buffered.
    let buffered = stream.buffered().to_vec();
    assert!(b"456789".starts_with(&buffered), "{buffered:?}");
    let (mut socket, rest, proxied) = stream.into_parts();
    assert_eq!(rest, buffered);
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));

    // The raw socket continues exactly where the buffered bytes end.
    client.write_all(b"after").await.unwrap();
    let mut tail = vec![0; 6 - buffered.len() + 5];
    within("socket read", socket.read_exact(&mut tail))
        .await
        .unwrap();
    let mut whole = rest;
    whole.extend_from_slice(&tail);
    assert_eq!(whole, b"456789after");
}
