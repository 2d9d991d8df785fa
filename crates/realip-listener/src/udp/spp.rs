//! Cloudflare's Simple Proxy Protocol (SPP): a fixed 38-byte header on every UDP datagram.
//!
//! Layout (Cloudflare Spectrum, "Simple Proxy Protocol Header"; every field in network byte
//! order):
//!
//! | offset | size | field |
//! |-------:|-----:|-------|
//! | 0      | 2    | magic number `0x56EC` |
//! | 2      | 16   | client address (IPv6, or IPv4-mapped IPv6 for an IPv4 client) |
//! | 18     | 16   | proxy address (the address the client sent to), same encoding |
//! | 34     | 2    | client port |
//! | 36     | 2    | proxy port |
//! | 38     | …    | payload |
//!
//! The header comes on every datagram from the proxy, and a reply must carry the same
//! header back (the proxy reads the client to forward it to from it, and strips it).
//!
//! # Example
//!
//! ```
//! use realip_listener::udp::{SPP_HEADER_LEN, SppHeader};
//!
//! let header = SppHeader::new("203.0.113.9:5353".parse().unwrap(), "198.51.100.1:53".parse().unwrap());
//! let mut datagram = header.to_bytes().to_vec();
//! datagram.extend_from_slice(b"query");
//! assert_eq!(datagram.len(), SPP_HEADER_LEN + 5);
//!
//! let (parsed, payload) = SppHeader::parse(&datagram).unwrap();
//! assert_eq!(parsed, header);
//! assert_eq!(parsed.client().to_string(), "203.0.113.9:5353");
//! assert_eq!(payload, b"query");
//! ```

use std::net::{Ipv6Addr, SocketAddr};

/// The SPP magic number, the first two bytes of every SPP header.
pub const SPP_MAGIC: u16 = 0x56EC;
/// Length of an SPP header: magic, two 16-byte addresses, two ports.
pub const SPP_HEADER_LEN: usize = 38;

/// Why a datagram does not start with an SPP header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SppError {
    /// The datagram is shorter than the 38-byte header.
    #[error("datagram of {len} bytes is shorter than the 38-byte SPP header")]
    Short {
        /// The datagram's length.
        len: usize,
    },
    /// The first two bytes are not the SPP magic number `0x56EC`.
    #[error("no SPP magic number (found {found:#06x}, expected 0x56ec)")]
    Magic {
        /// The first two bytes, big endian.
        found: u16,
    },
}

/// The addresses an SPP header carries: the client, and the proxy address it sent to.
///
/// IPv4-mapped IPv6 addresses on the wire are IPv4 addresses here, and are written back
/// mapped, so [`parse`](Self::parse) then [`to_bytes`](Self::to_bytes) gives back the same
/// 38 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SppHeader {
    client: SocketAddr,
    proxy: SocketAddr,
}

impl SppHeader {
    /// A header for a datagram from `client`, received by the proxy on `proxy`.
    pub const fn new(client: SocketAddr, proxy: SocketAddr) -> Self {
        Self {
            client: canonical(client),
            proxy: canonical(proxy),
        }
    }

    /// The client: the source address and port of the datagram the proxy received.
    pub const fn client(&self) -> SocketAddr {
        self.client
    }

    /// The proxy's address and port the client sent the datagram to.
    pub const fn proxy(&self) -> SocketAddr {
        self.proxy
    }

    /// Parses the header at the start of `datagram` and returns it with the payload that
    /// follows.
    ///
    /// # Errors
    ///
    /// [`SppError::Short`] for a datagram shorter than [`SPP_HEADER_LEN`], and
    /// [`SppError::Magic`] when it does not start with [`SPP_MAGIC`].
    pub fn parse(datagram: &[u8]) -> Result<(Self, &[u8]), SppError> {
        let Some((header, payload)) = datagram.split_first_chunk::<SPP_HEADER_LEN>() else {
            return Err(SppError::Short {
                len: datagram.len(),
            });
        };
        let found = u16::from_be_bytes([header[0], header[1]]);
        if found != SPP_MAGIC {
            return Err(SppError::Magic { found });
        }
        let addr = |at: usize| {
            let mut ip = [0; 16];
            ip.copy_from_slice(&header[at..at + 16]);
            Ipv6Addr::from(ip)
        };
        let port = |at: usize| u16::from_be_bytes([header[at], header[at + 1]]);
        let client = SocketAddr::new(addr(2).to_canonical(), port(34));
        let proxy = SocketAddr::new(addr(18).to_canonical(), port(36));
        Ok((Self { client, proxy }, payload))
    }

    /// The 38 header bytes.
    pub fn to_bytes(&self) -> [u8; SPP_HEADER_LEN] {
        let mut out = [0; SPP_HEADER_LEN];
        out[..2].copy_from_slice(&SPP_MAGIC.to_be_bytes());
        out[2..18].copy_from_slice(&mapped(self.client).octets());
        out[18..34].copy_from_slice(&mapped(self.proxy).octets());
        out[34..36].copy_from_slice(&self.client.port().to_be_bytes());
        out[36..38].copy_from_slice(&self.proxy.port().to_be_bytes());
        out
    }
}

const fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(realip_core::canonical_ip(addr.ip()), addr.port())
}

fn mapped(addr: SocketAddr) -> Ipv6Addr {
    match addr {
        SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
        SocketAddr::V6(v6) => *v6.ip(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_layout() {
        let header = SppHeader::new(
            "192.0.2.1:258".parse().unwrap(),
            "[2001:db8::2]:772".parse().unwrap(),
        );
        let bytes = header.to_bytes();
        assert_eq!(&bytes[..2], &[0x56, 0xEC]);
        assert_eq!(
            &bytes[2..18],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 192, 0, 2, 1]
        );
        assert_eq!(
            &bytes[18..34],
            &"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&bytes[34..], &[1, 2, 3, 4]);
    }

    #[test]
    fn short_and_wrong_magic() {
        let bytes = SppHeader::new(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        )
        .to_bytes();
        assert_eq!(
            SppHeader::parse(&bytes[..37]),
            Err(SppError::Short { len: 37 })
        );
        let mut wrong = bytes;
        wrong[1] = 0xED;
        assert_eq!(
            SppHeader::parse(&wrong),
            Err(SppError::Magic { found: 0x56ED })
        );
        let (_, payload) = SppHeader::parse(&bytes).unwrap();
        assert!(payload.is_empty());
    }
}
