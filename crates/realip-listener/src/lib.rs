//! A PROXY protocol (v1/v2) listener for tokio that reads headers concurrently and never
//! loses a byte.
//!
//! Put [`ProxyListener`] where a `TcpListener` (or `UnixListener`) was. Each accepted
//! connection comes with a [`ProxiedAddr`]: the real client from the PROXY header, the
//! socket's own peer (the proxy), and the whole header as [`ProxyInfo`] (version, command,
//! addresses, TLVs). The connection itself is a [`ProxiedStream`] that first replays any
//! bytes that arrived with the header.
//!
//! * v1 (`TCP4`, `TCP6`, `UNKNOWN`) and v2 (`PROXY`/`LOCAL`; `INET`, `INET6`, `UNIX`,
//!   `UNSPEC`; `STREAM`/`DGRAM`) are detected per connection; TLVs are validated when the
//!   header is parsed, and a CRC32C TLV is checked.
//! * Headers are read concurrently, under a [header timeout](DEFAULT_HEADER_TIMEOUT),
//!   with a [cap on pending handshakes](DEFAULT_MAX_PENDING) and on
//!   [header size](DEFAULT_MAX_HEADER_LEN): a silent or slow client never delays others.
//! * [`ProxyListener::bind`] listens with a backlog sized for bursts: the system's maximum
//!   ([`default_backlog`]), or [`Builder::backlog`]. [`Builder::defer_accept`] (Linux
//!   `TCP_DEFER_ACCEPT`, as NGINX's `listen … deferred`) has the kernel hand a connection over
//!   only with its header, so that no handshake waits and the server is woken once per
//!   connection: the setting for a listener whose peers all speak first.
//! * Rejected connections are logged with the peer and the reason, at most 10 lines per 5
//!   seconds per reason at their level ([`Builder::rejection_log`]), the rest at `debug`.
//! * A [`Policy`] per peer: require (default), optional, ignore, reject, skip; or trust
//!   headers only from a [`TrustedProxies`](realip_core::TrustedProxies) set; or a
//!   [`PolicyTable`] of ranges (load balancers, health checkers) with a default.
//! * [`SslInfo::verified_client_cn`]: the client-certificate identity a TLS-terminating
//!   proxy sends, only for a certificate it verified ([`UnverifiedIdentity`] says why not).
//! * [`ProxyHeader`] writes headers, for clients, tests and proxies written in Rust.
//! * Feature `axum`: `axum::serve(listener, app)` and `ConnectInfo<ProxiedAddr>`.
//! * Feature `metrics`: handshakes, rejections, pending handshakes and header wait time
//!   through the `metrics` facade ([`metrics`] lists the names).
//! * Feature `udp`: [`udp::ProxyUdpSocket`], PROXY v2 (per flow or per datagram) and
//!   Cloudflare's Simple Proxy Protocol over UDP.
//!
//! # Accepted v1 lines
//!
//! A v1 header is `PROXY `, fields separated by single spaces, and CRLF, 107 bytes at most
//! (spec section 2.1); a lone CR or LF, a CR that cannot be followed by its LF within the 107
//! bytes, or any other shape is rejected. The forms real proxies write are all accepted:
//!
//! | Line | Client |
//! |------|--------|
//! | `PROXY TCP4 <IPv4 src> <IPv4 dst> <sport> <dport>` | `src:sport` |
//! | `PROXY TCP6 <IPv6 src> <IPv6 dst> <sport> <dport>` | `[src]:sport` |
//! | `PROXY TCP6 <IPv6 src> <IPv4 dst> ...`, `PROXY TCP4 <IPv4 src> <IPv6 dst> ...` (NGINX `stream` re-encoding a client of the other family than its upstream) | `src:sport` |
//! | `PROXY TCP6 ::ffff:a.b.c.d ...` (HAProxy on a dual-stack bind) | `a.b.c.d:sport` (IPv4-mapped addresses are canonicalized) |
//! | `PROXY TCP6 fe80::1%eth0 ...` (an IPv6 address with a zone) | `[fe80::1]:sport`: the zone, everything from `%` to the end of the field, is dropped |
//! | `PROXY UNKNOWN`, or `PROXY UNKNOWN` followed by a space and anything up to the CRLF (ignored, as the spec asks) | the socket peer |
//!
//! The protocol token names the source's family (`TCP4` needs an IPv4 source, `TCP6` an
//! IPv6 one, IPv4-mapped included); the destination, the proxy's own address, may be of
//! either family. Addresses are dotted-quad IPv4 (no leading zeros) or RFC 4291 IPv6 text,
//! without brackets; a zone is allowed only on IPv6 and must not be empty. Ports are
//! decimal, `0` to `65535`, without a sign or leading zeros. [`ProxyInfo::source`] keeps
//! the address as written (zone dropped); the client address is the canonical IP.
//!
//! A connection that fails its handshake is closed and logged (`warn` for a forged or
//! malformed header, `debug` for a probe that closes without sending anything); it never
//! ends the listener.
//!
//! # Example
//!
//! ```
//! use realip_core::{AddrSource, TrustedProxies};
//! use realip_listener::{Policy, ProxyHeader, ProxyListener, ProxyVersion};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! // Headers are required from loopback proxies; anyone else must not send one.
//! let mut listener = ProxyListener::builder()
//!     .trusted(TrustedProxies::loopback())
//!     .policy(Policy::Require)
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let addr = listener.local_addr()?;
//!
//! tokio::spawn(async move {
//!     let mut lb = tokio::net::TcpStream::connect(addr).await.unwrap();
//!     // Header and data in one write: nothing after the header is lost.
//!     let mut bytes = ProxyHeader::v1("203.0.113.50:61000".parse().unwrap(), addr).to_bytes();
//!     bytes.extend_from_slice(b"ping");
//!     lb.write_all(&bytes).await.unwrap();
//! });
//!
//! let (mut stream, proxied) = listener.accept().await;
//! let client = proxied.client().unwrap();
//! assert_eq!(client.to_string(), "203.0.113.50:61000");
//! assert_eq!(client.source(), &AddrSource::ProxyProtocol);
//! assert_eq!(proxied.proxy_info().unwrap().version(), ProxyVersion::V1);
//! assert!(proxied.socket_peer().ip().unwrap().is_loopback());
//! let mut ping = [0; 4];
//! stream.read_exact(&mut ping).await?;
//! assert_eq!(&ping, b"ping");
//! # Ok(())
//! # }
//! ```

// In the order the data flows: socket, listener, handshake, header, then what the
// application receives.
mod accept;
#[cfg(feature = "axum")]
mod axum;
mod connect_info;
mod error;
mod handshake;
mod header;
mod listener;
pub mod metrics;
mod policy;
mod policy_table;
mod stream;
#[cfg(feature = "udp")]
pub mod udp;

pub use accept::{
    Accept, Accepted, FALLBACK_BACKLOG, bind_tcp, bind_unix, default_backlog, defer_accept,
    set_defer_accept,
};
pub use connect_info::ProxiedAddr;
pub use error::{HandshakeError, HeaderError};
pub use handshake::Connection;
pub use header::{
    Command, Family, ProxyAddr, ProxyHeader, ProxyInfo, ProxyVersion, SslInfo, Tlv, Tlvs,
    Transport, UnverifiedIdentity, parse_header, tlv_type,
};
pub use listener::{
    Builder, DEFAULT_ACCEPT_BATCH, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_HEADER_LEN,
    DEFAULT_MAX_PENDING, ProxyListener,
};
pub use policy::{ParsePolicyError, Policy, PolicySource};
pub use policy_table::{ParsePolicyTableError, PolicyTable};
pub use stream::ProxiedStream;
