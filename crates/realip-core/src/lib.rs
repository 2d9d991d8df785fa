//! Shared types for `realip`: trusted-proxy sets and the resolved client address.
//!
//! This crate is small on purpose. [`realip-listener`] (PROXY protocol) and [`realip-tower`]
//! (forwarded headers) both decide *whom to believe* with a [`TrustedProxies`] set, and both
//! report *who the client is* as a [`ClientAddr`].
//!
//! # Example
//!
//! ```
//! use realip_core::{AddrSource, ClientAddr, TrustedProxies};
//!
//! let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.1, ::1".parse().unwrap();
//! assert!(trusted.contains("10.1.2.3".parse().unwrap()));
//! // IPv4-mapped IPv6 peers (from a dual-stack socket) match IPv4 ranges.
//! assert!(trusted.contains("::ffff:10.1.2.3".parse().unwrap()));
//! assert!(!trusted.contains("203.0.113.7".parse().unwrap()));
//!
//! let client = ClientAddr::new("203.0.113.7".parse().unwrap(), Some(51234), AddrSource::Socket);
//! assert_eq!(client.to_string(), "203.0.113.7:51234");
//! ```
//!
//! [`realip-listener`]: https://docs.rs/realip-listener
//! [`realip-tower`]: https://docs.rs/realip-tower

mod addr;
mod live;
#[cfg(feature = "presets")]
pub mod presets;
mod throttle;
mod trusted;

pub use addr::{AddrSource, ClientAddr, HeaderSource, PeerAddr, canonical_ip};
pub use live::Live;
pub use throttle::LogThrottle;
pub use trusted::{ParseTrustedProxiesError, TrustedProxies};

/// The former name of [`ParseTrustedProxiesError`].
#[deprecated(since = "0.1.0", note = "renamed to `ParseTrustedProxiesError`")]
pub type ParseError = ParseTrustedProxiesError;
