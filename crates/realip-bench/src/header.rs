//! PROXY protocol header bytes, written by hand so the load is independent of the crates under test.

use std::net::{IpAddr, SocketAddr};

/// The 12-byte PROXY protocol v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// TLV types used by [`sample_tlvs`].
const PP2_TYPE_ALPN: u8 = 0x01;
const PP2_TYPE_AUTHORITY: u8 = 0x02;
const PP2_TYPE_UNIQUE_ID: u8 = 0x05;

/// A v1 (text) header: `PROXY TCP4|TCP6 src dst sport dport\r\n`.
///
/// # Panics
///
/// If `src` and `dst` are of different families.
pub fn v1(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(_), IpAddr::V4(_)) => "TCP4",
        (IpAddr::V6(_), IpAddr::V6(_)) => "TCP6",
        _ => panic!("source and destination must be of the same family"),
    };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}

/// A v2 (binary) PROXY/STREAM header with the given TLVs after the address block.
///
/// # Panics
///
/// If `src` and `dst` are of different families, or the header would exceed 65,535 bytes.
pub fn v2(src: SocketAddr, dst: SocketAddr, tlvs: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(36);
    let family = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x11
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            body.extend_from_slice(&s.octets());
            body.extend_from_slice(&d.octets());
            0x21
        }
        _ => panic!("source and destination must be of the same family"),
    };
    body.extend_from_slice(&src.port().to_be_bytes());
    body.extend_from_slice(&dst.port().to_be_bytes());
    for (kind, value) in tlvs {
        body.push(*kind);
        let len = u16::try_from(value.len()).expect("TLV value too long");
        body.extend_from_slice(&len.to_be_bytes());
        body.extend_from_slice(value);
    }
    let len = u16::try_from(body.len()).expect("v2 header too long");
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    out.push(family);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// TLVs a TLS-terminating load balancer typically sends: ALPN, authority (SNI) and a
/// 32-byte unique id (63 bytes of TLVs in total).
pub fn sample_tlvs() -> Vec<(u8, Vec<u8>)> {
    vec![
        (PP2_TYPE_ALPN, b"h2".to_vec()),
        (PP2_TYPE_AUTHORITY, b"api.example.com".to_vec()),
        (PP2_TYPE_UNIQUE_ID, (0u8..32).collect()),
    ]
}

/// A source address for IPv4 headers (TEST-NET-3).
pub fn src4() -> SocketAddr {
    SocketAddr::from(([203, 0, 113, 7], 51_234))
}

/// A destination address for IPv4 headers (TEST-NET-1).
pub fn dst4() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], 443))
}

/// A source address for IPv6 headers (documentation prefix).
pub fn src6() -> SocketAddr {
    SocketAddr::from(([0x2001, 0xdb8, 0x85a3, 0, 0, 0x8a2e, 0x370, 0x7334], 51_234))
}

/// A destination address for IPv6 headers (documentation prefix).
pub fn dst6() -> SocketAddr {
    SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10], 443))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_tcp4_line() {
        assert_eq!(
            v1(src4(), dst4()),
            b"PROXY TCP4 203.0.113.7 192.0.2.10 51234 443\r\n"
        );
    }

    #[test]
    fn v2_inet_lengths() {
        let h = v2(src4(), dst4(), &[]);
        assert_eq!(h.len(), 16 + 12);
        assert_eq!(&h[14..16], &12u16.to_be_bytes());
        let h = v2(src6(), dst6(), &sample_tlvs());
        assert_eq!(h.len(), 16 + 36 + 3 * 3 + 2 + 15 + 32);
    }

    #[test]
    fn peer_crate_parses_our_headers() {
        for h in [
            v1(src4(), dst4()),
            v1(src6(), dst6()),
            v2(src4(), dst4(), &[]),
            v2(src6(), dst6(), &sample_tlvs()),
        ] {
            let (info, used) = proxy_protocol_rs::parse(&h).expect("valid header");
            assert_eq!(used, h.len());
            assert!(info.source_inet().is_some());
        }
    }
}
