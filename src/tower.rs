//! Forwarded-header tower layer: the real client of every HTTP request (and WebSocket
//! upgrade) that reverse proxies forward with `X-Forwarded-For`, `X-Real-IP`, RFC 7239
//! `Forwarded` or a CDN's single-value header, believed only from trusted proxies.
//!
//! [`RealIpLayer`] works with any tower service of `http::Request`: axum, hyper, tonic. It
//! inserts the client into the request extensions as a [`ClientAddr`],
//! with the [`Resolution`] that records how it was decided; with the `axum` feature the
//! [`RealClient`] extractor reads it. A header from a peer outside the trusted set is ignored
//! (the client is then the peer itself). This module re-exports the `realip-tower` crate.
//!
//! # Example
//!
//! ```
//! use realip::tower::RealIpLayer;
//! use realip::{AddrSource, TrustedProxies};
//!
//! // NGINX: set_real_ip_from 10.0.0.0/8; real_ip_header X-Forwarded-For; real_ip_recursive on;
//! let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
//! let layer = RealIpLayer::x_forwarded_for_recursive(trusted);
//!
//! // The proxy 10.0.0.2 appended to a header that the client had filled in itself.
//! let mut request = http::Request::new(());
//! request
//!     .headers_mut()
//!     .insert("x-forwarded-for", "127.0.0.1, 203.0.113.7, 10.0.0.1".parse().unwrap());
//! request
//!     .extensions_mut()
//!     .insert(realip::PeerAddr::Inet("10.0.0.2:41000".parse().unwrap()));
//!
//! let client = layer.resolve_request(&request).into_client().unwrap();
//! assert_eq!(client.ip().to_string(), "203.0.113.7");
//! assert_eq!(client.source(), &AddrSource::header("x-forwarded-for"));
//! ```
//!
//! In a service stack, `.layer(layer)` on an axum `Router`, a `tower::ServiceBuilder` or a
//! tonic `Server::builder()` does the same for every request.

pub use realip_tower::*;
