//! Hand-built PROXY v2 headers for what a real proxy never sends (a corrupt checksum, a
//! `LOCAL` command with an address block), so the tests do not rely on the writer under test.

use std::net::{IpAddr, SocketAddr};

/// PROXY protocol v2 signature.
pub const PP2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// CRC32C (Castagnoli), as the PROXY v2 `PP2_TYPE_CRC32C` TLV uses it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISCSI).checksum(bytes)
}

/// A PROXY v2 `PROXY` TCP/IPv4 header with a CRC32C TLV; `corrupt` flips one bit of the
/// checksum.
pub fn pp2_with_crc32c(src: SocketAddr, dst: SocketAddr, corrupt: bool) -> Vec<u8> {
    let mut h = v4_header(0x21, src, dst, 7);
    h.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]);
    let crc = crc32c(&h) ^ u32::from(corrupt);
    let at = h.len() - 4;
    h[at..].copy_from_slice(&crc.to_be_bytes());
    h
}

/// A PROXY v2 `LOCAL` header that still carries a (meaningless) TCP/IPv4 address block, as some
/// load balancers send: the receiver must skip it and use the socket's own addresses.
pub fn pp2_local_with_addresses(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    v4_header(0x20, src, dst, 0)
}

/// Signature, `version_command`, TCP/IPv4, length, and the address block (TLVs to follow).
fn v4_header(version_command: u8, src: SocketAddr, dst: SocketAddr, tlv_len: u16) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    let mut h = PP2_SIGNATURE.to_vec();
    h.extend_from_slice(&[version_command, 0x11]);
    h.extend_from_slice(&(12 + tlv_len).to_be_bytes());
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}
