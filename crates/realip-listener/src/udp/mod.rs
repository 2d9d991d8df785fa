//! PROXY protocol v2 and Cloudflare's Simple Proxy Protocol over UDP (feature `udp`): the
//! real client of every datagram.
//!
//! [`ProxyUdpSocket`] wraps a `tokio::net::UdpSocket`. `recv_from` strips the header so
//! that `buf[..len]` is exactly the client's payload and returns a [`ProxiedAddr`] with the
//! client; `send_to(payload, &addr)` sends the reply to the proxy the datagram came from,
//! with the header the format requires.
//!
//! # Formats, and who sends them
//!
//! | [`UdpPolicy`] | what arrives | replies | senders |
//! |---------------|--------------|---------|---------|
//! | `V2PerFlow` | a PROXY v2 header (`DGRAM`) on the **first datagram of each flow**, bare datagrams after | bare | Cloudflare Spectrum UDP applications with Proxy Protocol v2 |
//! | `V2PerDatagram` | a PROXY v2 header on **every** datagram | bare | proxies that keep no flow state ([`ProxyHeader::v2_datagram`] before each datagram) |
//! | `Spp` | a 38-byte [`SppHeader`] on **every** datagram | **with the same header** | Cloudflare Spectrum UDP applications with Simple Proxy Protocol; Tencent EdgeOne L4 proxy (SPP) |
//! | `Reject` | no header; a datagram with a v2 signature is dropped | bare | anyone who is not a trusted proxy |
//!
//! A *flow* is the proxy's address and port: a proxy such as Spectrum gives each client its
//! own source port towards the server. The PROXY v2 specification (HAProxy's
//! `proxy-protocol.txt`, section 2.2) defines `DGRAM` as the transport of a UDP header but
//! not how a header relates to the datagrams after it; the per-flow reading is Cloudflare's.
//!
//! The policy is chosen per socket source, like the TCP [`Policy`](crate::Policy): with
//! [`UdpBuilder::trusted`], trusted proxies get the chosen format and every other source
//! gets `Reject`, so a header from them is never believed. A datagram that cannot be
//! attributed (malformed header, header from an untrusted source, missing header, no live
//! flow) is dropped, counted in [`UdpStats`] and logged at a rate-limited `warn`: it is
//! never delivered with a forged or stale address.
//!
//! # The flow table trade-off
//!
//! `V2PerFlow` must remember, per proxy address and port, which client the flow belongs
//! to. The table is bounded: [`DEFAULT_MAX_FLOWS`] flows, each forgotten after
//! [`DEFAULT_FLOW_IDLE_TIMEOUT`] without a datagram. At the cap, the flow idle the longest
//! is evicted (new clients keep being served; the evicted flow's later datagrams are
//! dropped, not misattributed). A new header from the same proxy port always replaces the
//! flow, so a proxy that reuses a port for a new client is followed at once; a malformed
//! one ends the flow. The idle timeout should be no shorter than the proxy's: see
//! [`DEFAULT_FLOW_IDLE_TIMEOUT`].
//!
//! # Example
//!
//! ```
//! use realip_listener::ProxyHeader;
//! use realip_listener::udp::ProxyUdpSocket;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let socket = ProxyUdpSocket::bind("127.0.0.1:0").await?; // v2 per flow
//! let server = socket.local_addr()?;
//!
//! let proxy = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let mut first = ProxyHeader::v2_datagram("203.0.113.7:6000".parse().unwrap(), server).to_bytes();
//! first.extend_from_slice(b"hello");
//! proxy.send_to(&first, server).await?;
//! proxy.send_to(b"world", server).await?;
//!
//! let mut buf = [0; 1500];
//! for expected in [&b"hello"[..], b"world"] {
//!     let (len, from) = socket.recv_from(&mut buf).await?;
//!     assert_eq!(&buf[..len], expected);
//!     assert_eq!(from.client().unwrap().to_string(), "203.0.113.7:6000");
//!     assert_eq!(from.socket_peer().inet(), Some(proxy.local_addr()?));
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`ProxiedAddr`]: crate::ProxiedAddr
//! [`ProxyHeader::v2_datagram`]: crate::ProxyHeader::v2_datagram

mod decoder;
mod error;
mod flow;
mod policy;
mod socket;
mod spp;

pub use decoder::{UdpDecoder, UdpStats};
pub use error::DatagramError;
pub use flow::{DEFAULT_FLOW_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS};
pub use policy::{ParseUdpPolicyError, UdpPolicy, UdpPolicySource};
pub use socket::{DEFAULT_DROP_LOG_INTERVAL, ProxyUdpSocket, UdpBuilder};
pub use spp::{SPP_HEADER_LEN, SPP_MAGIC, SppError, SppHeader};
