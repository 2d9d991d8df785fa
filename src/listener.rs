//! PROXY protocol (v1 and v2) listener: the real client of every TCP or Unix connection
//! that a load balancer forwards (NGINX `stream` with `proxy_protocol on`, HAProxy
//! `send-proxy[-v2]`, cloud network load balancers).
//!
//! [`ProxyListener`] goes where a `tokio::net::TcpListener` (or `UnixListener`) was. Each
//! accepted connection comes with a [`ProxiedAddr`]: the client from the header, the socket's
//! own peer (the load balancer), and the whole header as [`ProxyInfo`]. The stream is a
//! [`ProxiedStream`] that first replays the bytes that arrived with the header. Headers are
//! read concurrently under a timeout, a malformed or forged one closes that connection with a
//! log line, and `accept` never fails. This module re-exports the `realip-listener` crate.
//!
//! # Example
//!
//! ```
//! use realip::AddrSource;
//! use realip::listener::{ProxyHeader, ProxyListener};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // Every connection must start with a PROXY header (v1 or v2, detected per connection).
//! let mut listener = ProxyListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//!
//! tokio::spawn(async move {
//!     // A load balancer: the header, then the client's bytes, in one write.
//!     let mut lb = tokio::net::TcpStream::connect(addr).await.unwrap();
//!     let mut bytes = ProxyHeader::v1("203.0.113.50:61000".parse().unwrap(), addr).to_bytes();
//!     bytes.extend_from_slice(b"ping");
//!     lb.write_all(&bytes).await.unwrap();
//! });
//!
//! let (mut stream, proxied) = listener.accept().await;
//! let client = proxied.client().unwrap();
//! assert_eq!(client.to_string(), "203.0.113.50:61000");
//! assert_eq!(client.source(), &AddrSource::ProxyProtocol);
//! let mut ping = [0; 4];
//! stream.read_exact(&mut ping).await?;
//! assert_eq!(&ping, b"ping");
//! # Ok(())
//! # }
//! ```
//!
//! # TLS after the PROXY header
//!
//! A load balancer that passes TLS through (HAProxy `mode tcp` with `send-proxy-v2`, a network
//! load balancer) sends the header in clear, then the client's TLS handshake. The accepted
//! stream starts right after the header, so it goes to a TLS acceptor such as
//! [tokio-rustls](https://docs.rs/tokio-rustls) unchanged:
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! use realip::listener::ProxyListener;
//! use tokio_rustls::TlsAcceptor;
//! use tokio_rustls::rustls::ServerConfig;
//!
//! # async fn serve(config: ServerConfig) -> std::io::Result<()> {
//! let acceptor = TlsAcceptor::from(Arc::new(config));
//! let mut listener = ProxyListener::bind("0.0.0.0:8883").await?;
//! loop {
//!     let (stream, proxied) = listener.accept().await;
//!     let acceptor = acceptor.clone();
//!     tokio::spawn(async move {
//!         // The header is already read and stripped: the TLS handshake starts here.
//!         match acceptor.accept(stream).await {
//!             Ok(_tls) => println!("TLS client {:?}", proxied.client()),
//!             Err(e) => eprintln!("TLS handshake from {:?}: {e}", proxied.client()),
//!         }
//!     });
//! }
//! # }
//! ```

pub use realip_listener::*;
