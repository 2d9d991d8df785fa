//! The listener's handshake, driven for real over an in-memory stream that delivers the
//! input in arbitrary chunks.
//!
//! For every input and chunking:
//! * nothing panics;
//! * the handshake never reads past the chunk in which the header ends;
//! * the bytes handed to the application are exactly the input after the header (the whole
//!   input when there is no header and the policy allows that);
//! * the header is the one `parse_header` reads from the whole input;
//! * the outcome (accepted with the same header and bytes, or rejected with the same error)
//!   is the same as when the input arrives in one piece.

#![no_main]

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use libfuzzer_sys::fuzz_target;
use realip_core::PeerAddr;
use realip_listener::{
    Accept, Accepted, DEFAULT_MAX_HEADER_LEN, Policy, ProxyInfo, ProxyListener, parse_header,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The fuzzer's bytes: a flags byte (bit 0: `Policy::Optional` instead of
/// `Policy::Require`), a count `n`, `n` chunk sizes (each 1 + value, used in turn; the rest
/// of the input is the last chunk), then the connection's bytes. Seeds captured from real
/// proxies are `[0, 0]` followed by what the proxy sent.
struct Input<'a> {
    optional: bool,
    sizes: Vec<usize>,
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let (flags, sizes, data) = realip_fuzz::chunked_input(bytes)?;
        Some(Self {
            optional: flags & 1 == 1,
            sizes,
            data,
        })
    }
}

/// A stream that delivers its chunks one read at a time, then end of stream, counting what
/// it delivered.
struct Chunked {
    chunks: VecDeque<Vec<u8>>,
    delivered: Arc<AtomicUsize>,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut chunk) = self.chunks.pop_front() {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            if n < chunk.len() {
                self.chunks.push_front(chunk.split_off(n));
            }
            self.delivered.fetch_add(n, Ordering::Relaxed);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Chunked {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A listener that accepts one in-memory connection, then nothing.
struct OneConnection(Option<Chunked>);

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);
const LOCAL: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 443);

impl Accept for OneConnection {
    type Io = Chunked;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<Accepted<Chunked>>> {
        match self.0.take() {
            Some(io) => Poll::Ready(Ok((io, PeerAddr::Inet(PEER), Some(LOCAL)))),
            None => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(LOCAL)
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr::Inet(LOCAL))
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted {
        info: Option<ProxyInfo>,
        client: Option<SocketAddr>,
        app_bytes: Vec<u8>,
        /// Bytes taken from the stream when the handshake finished.
        delivered: usize,
    },
    Rejected(&'static str),
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    })
}

fn handshake(data: &[u8], sizes: &[usize], policy: Policy) -> Outcome {
    let mut chunks = VecDeque::new();
    let mut rest = data;
    for &size in sizes {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push_back(chunk.to_vec());
        rest = tail;
    }
    if !rest.is_empty() {
        chunks.push_back(rest.to_vec());
    }
    let delivered = Arc::new(AtomicUsize::new(0));
    let io = Chunked {
        chunks,
        delivered: delivered.clone(),
    };
    let mut listener = ProxyListener::builder()
        .policy(policy)
        .listen(OneConnection(Some(io)));
    runtime().block_on(async {
        match listener.try_accept().await {
            Ok((mut stream, addr)) => {
                let delivered = delivered.load(Ordering::Relaxed);
                let mut app_bytes = Vec::new();
                stream.read_to_end(&mut app_bytes).await.unwrap();
                Outcome::Accepted {
                    info: addr.proxy_info().cloned(),
                    client: addr.client_socket_addr(),
                    app_bytes,
                    delivered,
                }
            }
            // The reason, not the message: a message may say how many bytes had arrived.
            Err(err) => Outcome::Rejected(err.reason()),
        }
    })
}

/// The end of the chunk holding byte `len - 1`: how far a reader may have read when it
/// stops right after `len` bytes.
fn chunk_end(sizes: &[usize], total: usize, len: usize) -> usize {
    let mut end = 0;
    for &size in sizes {
        if end >= len || end >= total {
            return end.min(total);
        }
        end += size;
    }
    if end >= len { end.min(total) } else { total }
}

fuzz_target!(|bytes: &[u8]| {
    let Some(input) = Input::parse(bytes) else {
        return;
    };
    let policy = if input.optional {
        Policy::Optional
    } else {
        Policy::Require
    };
    let sizes = &input.sizes;
    let whole = handshake(input.data, &[], policy);
    let chunked = handshake(input.data, sizes, policy);

    // The same decision at every chunking; how much was taken depends on the chunking.
    match (&whole, &chunked) {
        (
            Outcome::Accepted {
                info,
                client,
                app_bytes,
                ..
            },
            Outcome::Accepted {
                info: info2,
                client: client2,
                app_bytes: app_bytes2,
                ..
            },
        ) => {
            assert_eq!(info, info2);
            assert_eq!(client, client2);
            assert_eq!(app_bytes, app_bytes2);
        }
        (Outcome::Rejected(a), Outcome::Rejected(b)) => assert_eq!(a, b),
        _ => panic!("whole: {whole:?}\nchunked {sizes:?}: {chunked:?}"),
    }

    if let Outcome::Accepted {
        info,
        app_bytes,
        delivered,
        ..
    } = chunked
    {
        match parse_header(&input.data, DEFAULT_MAX_HEADER_LEN) {
            Ok(Some((parsed, len))) => {
                assert_eq!(info.as_ref(), Some(&parsed));
                assert_eq!(app_bytes, input.data[len..]);
                let limit = chunk_end(sizes, input.data.len(), len);
                assert!(
                    delivered <= limit,
                    "read {delivered} bytes, header {len}, chunk ends at {limit}"
                );
            }
            // Accepted without a header: every byte goes to the application.
            _ => {
                assert!(input.optional, "accepted without a header under Require");
                assert_eq!(info, None);
                assert_eq!(app_bytes, input.data);
            }
        }
    }
});
