//! Know who your client really is behind reverse proxies and load balancers.
//!
//! Behind NGINX, HAProxy or a cloud load balancer, a server sees the proxy's address. `realip`
//! recovers the client's address from the two standard carriers:
//!
//! - **PROXY protocol** (v1 text, v2 binary) on TCP and Unix listeners: [`listener`] (feature
//!   `listener`, on by default) wraps a `tokio` listener, reads and strips the header of every
//!   connection concurrently, and hands out streams that carry the real addresses. Over UDP
//!   (feature `udp`), `listener::udp::ProxyUdpSocket` does the same per datagram, for PROXY v2
//!   and Cloudflare's Simple Proxy Protocol.
//! - **Forwarded headers** (`X-Forwarded-For`, `X-Real-IP`, RFC 7239 `Forwarded`, …) on HTTP
//!   requests, including WebSocket upgrades: [`tower`] (feature `tower`, on by default) is a
//!   tower layer that resolves the client with trusted-proxy ranges, and ignores forged headers.
//!
//! Both decide whom to believe with a [`TrustedProxies`] set and report a [`ClientAddr`].
//! The `axum` feature adds axum 0.8 integration to both.
//!
//! # Example
//!
//! ```
//! use realip::{AddrSource, ClientAddr, TrustedProxies};
//!
//! // NGINX: set_real_ip_from 10.0.0.0/8; set_real_ip_from unix:;
//! let trusted: TrustedProxies = "10.0.0.0/8 unix:".parse().unwrap();
//! assert!(trusted.contains("10.20.30.40".parse().unwrap()));
//! assert!(trusted.contains_unix());
//!
//! let client = ClientAddr::new("198.51.100.7".parse().unwrap(), Some(40000), AddrSource::ProxyProtocol);
//! assert_eq!(client.to_string(), "198.51.100.7:40000");
//! ```

pub use realip_core::{
    AddrSource, ClientAddr, HeaderSource, Live, ParseTrustedProxiesError, PeerAddr, TrustedProxies,
    canonical_ip,
};

#[cfg(feature = "presets")]
#[doc(inline)]
pub use realip_core::presets;

#[cfg(feature = "listener")]
pub mod listener;

#[cfg(feature = "tower")]
pub mod tower;

/// The README's code blocks, compiled as doctests.
#[cfg(all(
    doctest,
    feature = "listener",
    feature = "tower",
    feature = "axum",
    feature = "presets-refresh"
))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
