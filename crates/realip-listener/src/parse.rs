//! Detection and validation of PROXY protocol v1 and v2 headers.
//!
//! The signature is detected here, then `ppp`'s v1 or v2 parser is called directly on
//! exactly the header bytes (never its v2-then-v1 fallback), with our own size cap, v1
//! `UNKNOWN` and port checks, LOCAL handling, TLV walk and CRC32C check around it.
//!
//! # Example
//!
//! ```
//! use realip_listener::{Command, parse_header};
//!
//! // Incomplete: more bytes are needed.
//! assert!(parse_header(b"PROXY TCP4 192.0.2.1", 4096).unwrap().is_none());
//!
//! // Complete, followed by application data.
//! let buf = b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 80\r\nGET / HTTP/1.1\r\n";
//! let (info, len) = parse_header(buf, 4096).unwrap().unwrap();
//! assert_eq!(&buf[len..], b"GET / HTTP/1.1\r\n");
//! assert_eq!(info.command(), Command::Proxy);
//! assert_eq!(info.source_inet(), Some("192.0.2.1:5000".parse().unwrap()));
//! ```

use std::net::SocketAddr;

use crate::error::HeaderError;
use crate::info::{
    Command, Family, ProxyAddr, ProxyInfo, ProxyVersion, SslInfo, Tlv, Tlvs, Transport, tlv_type,
};

/// The 12-byte v2 signature.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 prefix, including the space.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Maximum v1 header length, CRLF included.
pub(crate) const V1_MAX_LEN: usize = 107;
/// Fixed part of a v2 header.
pub(crate) const V2_FIXED_LEN: usize = 16;
/// Largest possible v2 header.
pub(crate) const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

pub(crate) const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Detected {
    /// Too few bytes to tell.
    Incomplete,
    /// Not a PROXY header.
    None,
    /// The v1 prefix.
    V1,
    /// The v2 signature.
    V2,
}

/// Looks at the signature only.
pub(crate) fn detect(buf: &[u8]) -> Detected {
    fn check(buf: &[u8], sig: &[u8]) -> Option<bool> {
        let n = buf.len().min(sig.len());
        if buf[..n] != sig[..n] {
            Some(false)
        } else if n == sig.len() {
            Some(true)
        } else {
            None
        }
    }
    match buf.first() {
        None => Detected::Incomplete,
        Some(b'P') => match check(buf, V1_PREFIX) {
            Some(true) => Detected::V1,
            Some(false) => Detected::None,
            None => Detected::Incomplete,
        },
        Some(b'\r') => match check(buf, &V2_SIGNATURE) {
            Some(true) => Detected::V2,
            Some(false) => Detected::None,
            None => Detected::Incomplete,
        },
        Some(_) => Detected::None,
    }
}

/// The total length of a v2 header whose fixed part is in `buf`, if known yet.
pub(crate) fn v2_total_len(buf: &[u8]) -> Option<usize> {
    if buf.len() < V2_FIXED_LEN {
        return None;
    }
    Some(V2_FIXED_LEN + usize::from(u16::from_be_bytes([buf[14], buf[15]])))
}

/// Parses a PROXY header at the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is a valid beginning of a header but more bytes are
/// needed, and `Ok(Some((info, len)))` when a complete header of `len` bytes was parsed
/// (anything after `len` is application data). A v2 header longer than `max_len` bytes (its
/// 16-byte fixed part included) is rejected as soon as its length field arrives; a v1 header
/// must end within 107 bytes.
///
/// Errors are final: a connection that produced one cannot become valid with more bytes.
pub fn parse_header(buf: &[u8], max_len: usize) -> Result<Option<(ProxyInfo, usize)>, HeaderError> {
    match detect(buf) {
        Detected::Incomplete => Ok(None),
        Detected::None => Err(HeaderError::Signature),
        Detected::V1 => parse_v1(buf),
        Detected::V2 => parse_v2(buf, max_len),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, HeaderError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let len = match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(i) if window[i] == b'\n' => return Err(HeaderError::LineBreak),
        Some(i) => match buf.get(i + 1) {
            Some(b'\n') if i + 2 <= V1_MAX_LEN => i + 2,
            Some(b'\n') => {
                return Err(HeaderError::Oversized {
                    len: i + 2,
                    max: V1_MAX_LEN,
                });
            }
            Some(_) => return Err(HeaderError::LineBreak),
            None if i + 2 > V1_MAX_LEN => {
                return Err(HeaderError::Oversized {
                    len: i + 2,
                    max: V1_MAX_LEN,
                });
            }
            None => return Ok(None),
        },
        None if buf.len() >= V1_MAX_LEN => {
            return Err(HeaderError::Oversized {
                len: buf.len(),
                max: V1_MAX_LEN,
            });
        }
        None => return Ok(None),
    };
    let line = &buf[..len - 2];
    // `UNKNOWN`: whatever comes before the CRLF is ignored (ppp rejects some of it: bytes
    // that are not UTF-8, five fields or more).
    if let Some(rest) = line.strip_prefix(b"PROXY UNKNOWN") {
        if rest.is_empty() || rest[0] == b' ' {
            return Ok(Some((v1_info(Family::Unspec, None, None), len)));
        }
    }
    let header =
        ppp::v1::Header::try_from(&buf[..len]).map_err(|e| HeaderError::V1(e.to_string()))?;
    // ppp leaves the ports to `u16::from_str`, which takes a leading `+` (and so `+080`).
    let mut fields = line.rsplit(|&b| b == b' ');
    for end in ["destination", "source"] {
        if !fields
            .next()
            .is_some_and(|port| !port.is_empty() && port.iter().all(u8::is_ascii_digit))
        {
            return Err(HeaderError::V1(format!(
                "{end} port is not a decimal number"
            )));
        }
    }
    let (family, source, destination) = match header.addresses {
        ppp::v1::Addresses::Unknown => (Family::Unspec, None, None),
        ppp::v1::Addresses::Tcp4(a) => (
            Family::Inet,
            Some(ProxyAddr::Inet(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
            Some(ProxyAddr::Inet(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            )))),
        ),
        ppp::v1::Addresses::Tcp6(a) => (
            Family::Inet6,
            Some(ProxyAddr::Inet(SocketAddr::from((
                a.source_address,
                a.source_port,
            )))),
            Some(ProxyAddr::Inet(SocketAddr::from((
                a.destination_address,
                a.destination_port,
            )))),
        ),
    };
    Ok(Some((v1_info(family, source, destination), len)))
}

fn v1_info(family: Family, source: Option<ProxyAddr>, destination: Option<ProxyAddr>) -> ProxyInfo {
    ProxyInfo {
        version: ProxyVersion::V1,
        command: Command::Proxy,
        family,
        transport: if family == Family::Unspec {
            Transport::Unspec
        } else {
            Transport::Stream
        },
        source,
        destination,
        tlvs: None,
    }
}

fn family_of(byte: u8) -> Result<(Family, usize), HeaderError> {
    match byte >> 4 {
        0x0 => Ok((Family::Unspec, 0)),
        0x1 => Ok((Family::Inet, 12)),
        0x2 => Ok((Family::Inet6, 36)),
        0x3 => Ok((Family::Unix, 216)),
        _ => Err(HeaderError::Family(byte)),
    }
}

fn transport_of(byte: u8) -> Result<Transport, HeaderError> {
    match byte & 0x0F {
        0x0 => Ok(Transport::Unspec),
        0x1 => Ok(Transport::Stream),
        0x2 => Ok(Transport::Datagram),
        _ => Err(HeaderError::Transport(byte)),
    }
}

fn parse_v2(buf: &[u8], max_len: usize) -> Result<Option<(ProxyInfo, usize)>, HeaderError> {
    let Some(total) = v2_total_len(buf) else {
        return Ok(None);
    };
    let version_command = buf[12];
    if version_command >> 4 != 0x2 {
        return Err(HeaderError::Version(version_command));
    }
    let command = match version_command & 0x0F {
        0x0 => Command::Local,
        0x1 => Command::Proxy,
        _ => return Err(HeaderError::Command(version_command)),
    };
    let family_transport = buf[13];
    // LOCAL: the address block is discarded whatever its family and length.
    let (family, addr_len, transport) = if command == Command::Proxy {
        let (family, addr_len) = family_of(family_transport)?;
        let transport = transport_of(family_transport)?;
        if total - V2_FIXED_LEN < addr_len {
            return Err(HeaderError::AddressBlock {
                len: total - V2_FIXED_LEN,
                need: addr_len,
            });
        }
        (family, addr_len, transport)
    } else {
        (
            Family::Unspec,
            0,
            transport_of(family_transport).unwrap_or(Transport::Unspec),
        )
    };
    if total > max_len {
        return Err(HeaderError::Oversized {
            len: total,
            max: max_len,
        });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let header = &buf[..total];
    if command == Command::Local {
        // The address block is skipped, whatever its length. When the family is defined,
        // its block fits and the bytes behind it form a TLV list, the TLVs are exposed and
        // a CRC32C among them is checked (HAProxy's health checks send `crc32c`);
        // otherwise the whole block is discarded unread, as the specification asks.
        let tlvs = match family_of(family_transport) {
            Ok((_, addr_len)) if addr_len <= total - V2_FIXED_LEN => {
                match parse_tlvs(header, V2_FIXED_LEN + addr_len) {
                    Ok(tlvs) => tlvs,
                    // A checksum that does not match is corruption, LOCAL or not.
                    Err(err @ HeaderError::Crc32c { .. }) => return Err(err),
                    Err(_) => None,
                }
            }
            _ => None,
        };
        return Ok(Some((
            ProxyInfo {
                version: ProxyVersion::V2,
                command,
                family,
                transport,
                source: None,
                destination: None,
                tlvs,
            },
            total,
        )));
    }

    let parsed = ppp::v2::Header::try_from(header).map_err(|e| HeaderError::V2(e.to_string()))?;
    let (source, destination) = match parsed.addresses {
        ppp::v2::Addresses::Unspecified => (None, None),
        ppp::v2::Addresses::IPv4(a) => inet_pair(
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        ppp::v2::Addresses::IPv6(a) => inet_pair(
            (a.source_address, a.source_port).into(),
            (a.destination_address, a.destination_port).into(),
        ),
        ppp::v2::Addresses::Unix(u) => (
            Some(ProxyAddr::Unix(unix_path(&u.source))),
            Some(ProxyAddr::Unix(unix_path(&u.destination))),
        ),
    };
    let tlvs = parse_tlvs(header, V2_FIXED_LEN + addr_len)?;
    Ok(Some((
        ProxyInfo {
            version: ProxyVersion::V2,
            command,
            family,
            transport,
            source,
            destination,
            tlvs,
        },
        total,
    )))
}

fn unix_path(raw: &[u8]) -> Vec<u8> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end].to_vec()
}

/// Walks `data[start..end]` as a TLV list, calling `f(kind, value_offset, value)` for each.
fn walk(
    data: &[u8],
    start: usize,
    end: usize,
    mut f: impl FnMut(u8, usize, &[u8]) -> Result<(), HeaderError>,
) -> Result<(), HeaderError> {
    let mut off = start;
    while off < end {
        let kind = data[off];
        if end - off < 3 {
            return Err(HeaderError::TlvOverrun { kind, offset: off });
        }
        let len = usize::from(u16::from_be_bytes([data[off + 1], data[off + 2]]));
        let value_start = off + 3;
        if len > end - value_start {
            return Err(HeaderError::TlvOverrun { kind, offset: off });
        }
        f(kind, value_start, &data[value_start..value_start + len])?;
        off = value_start + len;
    }
    Ok(())
}

/// Walks and validates the TLVs from `start` to the end of `header`; `None` when there
/// are none.
fn parse_tlvs(header: &[u8], start: usize) -> Result<Option<Box<Tlvs>>, HeaderError> {
    let mut tlvs = Tlvs::default();
    let mut crc_at = Vec::new();
    walk(header, start, header.len(), |kind, at, value| {
        match kind {
            tlv_type::CRC32C => {
                if value.len() != 4 {
                    return Err(HeaderError::TlvLength {
                        kind,
                        len: value.len(),
                    });
                }
                crc_at.push(at);
            }
            tlv_type::UNIQUE_ID if value.len() > 128 => {
                return Err(HeaderError::TlvLength {
                    kind,
                    len: value.len(),
                });
            }
            tlv_type::SSL => {
                if value.len() < 5 {
                    return Err(HeaderError::TlvLength {
                        kind,
                        len: value.len(),
                    });
                }
                let mut ssl = SslInfo {
                    client: value[0],
                    verify: u32::from_be_bytes([value[1], value[2], value[3], value[4]]),
                    sub_tlvs: Vec::new(),
                };
                walk(header, at + 5, at + value.len(), |kind, _, value| {
                    ssl.sub_tlvs.push(Tlv::new(kind, value));
                    Ok(())
                })?;
                if tlvs.ssl.is_none() {
                    tlvs.ssl = Some(ssl);
                }
            }
            _ => {}
        }
        tlvs.raw.push(Tlv::new(kind, value));
        Ok(())
    })?;
    // Each CRC32C TLV is checked (normally there is one): `Tlvs::crc32c` returns the
    // first, and it must not be one nobody verified.
    for at in crc_at {
        let expected =
            u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
        let mut digest = CRC32C.digest();
        digest.update(&header[..at]);
        digest.update(&[0; 4]);
        digest.update(&header[at + 4..]);
        let computed = digest.finalize();
        if computed != expected {
            return Err(HeaderError::Crc32c { expected, computed });
        }
    }
    Ok((!tlvs.raw.is_empty()).then(|| Box::new(tlvs)))
}

/// Source and destination of an INET or INET6 address block.
fn inet_pair(
    source: SocketAddr,
    destination: SocketAddr,
) -> (Option<ProxyAddr>, Option<ProxyAddr>) {
    (
        Some(ProxyAddr::Inet(source)),
        Some(ProxyAddr::Inet(destination)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(cmd);
        out.push(fam);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn detect_prefixes() {
        assert_eq!(detect(b""), Detected::Incomplete);
        assert_eq!(detect(b"PRO"), Detected::Incomplete);
        assert_eq!(detect(b"PROXY "), Detected::V1);
        assert_eq!(detect(b"PROXX"), Detected::None);
        assert_eq!(detect(b"GET /"), Detected::None);
        assert_eq!(detect(b"\r\n\r\n\0"), Detected::Incomplete);
        assert_eq!(detect(&V2_SIGNATURE), Detected::V2);
        assert_eq!(detect(b"\r\n\r\nX"), Detected::None);
    }

    #[test]
    fn v1_lone_cr_and_lf() {
        assert!(matches!(
            parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 4096),
            Err(HeaderError::LineBreak)
        ));
        assert!(matches!(
            parse_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", 4096),
            Err(HeaderError::LineBreak)
        ));
    }

    #[test]
    fn v1_exactly_107_bytes_is_accepted() {
        let line = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(line.len(), 104);
        let (info, len) = parse_header(line.as_bytes(), 4096).unwrap().unwrap();
        assert_eq!(len, 104);
        assert_eq!(info.family(), Family::Inet6);
        let unknown = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 16));
        assert_eq!(unknown.len(), 107);
        let (info, len) = parse_header(unknown.as_bytes(), 4096).unwrap().unwrap();
        assert_eq!((len, info.family()), (107, Family::Unspec));
        let too_long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(107 - 15));
        assert!(matches!(
            parse_header(too_long.as_bytes(), 4096),
            Err(HeaderError::Oversized { .. })
        ));
    }

    #[test]
    fn v1_ports_are_plain_decimal_numbers() {
        for ports in ["0 65535", "80 443", "1 0"] {
            let line = format!("PROXY TCP4 192.0.2.1 192.0.2.2 {ports}\r\n");
            assert!(
                parse_header(line.as_bytes(), 4096).unwrap().is_some(),
                "{line}"
            );
        }
        for ports in [
            "+80 443", "80 +443", "+080 443", "01 443", "80 65536", "-1 443", "80 4 43",
        ] {
            let line = format!("PROXY TCP4 192.0.2.1 192.0.2.2 {ports}\r\n");
            assert!(
                matches!(parse_header(line.as_bytes(), 4096), Err(HeaderError::V1(_))),
                "{line}"
            );
        }
    }

    #[test]
    fn v1_unknown_ignores_the_rest_of_the_line() {
        for line in [
            &b"PROXY UNKNOWN\r\n"[..],
            b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY UNKNOWN a b c d e f g\r\n",
            b"PROXY UNKNOWN \xff\xfe\0\r\n",
            b"PROXY UNKNOWN  \r\n",
        ] {
            let (info, len) = parse_header(line, 4096).unwrap().unwrap();
            assert_eq!(len, line.len());
            assert_eq!(
                (info.family(), info.transport()),
                (Family::Unspec, Transport::Unspec)
            );
            assert!(info.source().is_none());
        }
        assert!(parse_header(b"PROXY UNKNOWNX\r\n", 4096).is_err());
        assert!(parse_header(b"PROXY UNKNOWN a\rb\r\n", 4096).is_err());
    }

    #[test]
    fn v2_local_block_that_is_not_a_tlv_list_is_skipped() {
        // AF_UNSPEC with an IPv4 address block, and AF_INET with padding after its block.
        for buf in [
            v2(0x20, 0x00, &[10, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90, 0, 0x50]),
            v2(
                0x20,
                0x11,
                &[10, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90, 0, 0x50, 0, 0, 0, 0],
            ),
            v2(0x20, 0x00, &[tlv_type::UNIQUE_ID, 0, 200]),
        ] {
            let (info, len) = parse_header(&buf, 4096).unwrap().unwrap();
            assert_eq!(len, buf.len());
            assert_eq!(info.command(), Command::Local);
            assert!(info.tlvs().is_empty());
        }
    }

    #[test]
    fn every_crc32c_tlv_is_checked() {
        let mut body = vec![192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2];
        body.extend_from_slice(&[tlv_type::CRC32C, 0, 4, 0xDE, 0xAD, 0xBE, 0xEF]);
        body.extend_from_slice(&[tlv_type::CRC32C, 0, 4, 0, 0, 0, 0]);
        let mut buf = v2(0x21, 0x11, &body);
        // The second checksum is right; the first, the one `crc32c()` returns, is not.
        let at = buf.len() - 4;
        let crc = CRC32C.checksum(&buf);
        buf[at..].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            parse_header(&buf, 4096),
            Err(HeaderError::Crc32c {
                expected: 0xDEAD_BEEF,
                ..
            })
        ));
    }

    #[test]
    fn v2_local_with_undefined_family_is_skipped() {
        let buf = v2(0x20, 0xFF, &[1, 2, 3]);
        let (info, len) = parse_header(&buf, 4096).unwrap().unwrap();
        assert_eq!(len, buf.len());
        assert_eq!(info.command(), Command::Local);
        assert!(info.source().is_none());
    }

    #[test]
    fn v2_short_address_block() {
        let buf = v2(0x21, 0x11, &[0; 8]);
        assert!(matches!(
            parse_header(&buf, 4096),
            Err(HeaderError::AddressBlock { len: 8, need: 12 })
        ));
    }

    #[test]
    fn v2_oversized_rejected_from_fixed_part() {
        let mut buf = V2_SIGNATURE.to_vec();
        buf.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
        assert!(matches!(
            parse_header(&buf, 4096),
            Err(HeaderError::Oversized {
                len: 65551,
                max: 4096
            })
        ));
    }

    #[test]
    fn ssl_sub_tlv_overrun() {
        let mut body = vec![127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
        // SSL TLV of 8 bytes: flags, verify, then a sub-TLV claiming 9 bytes.
        body.extend_from_slice(&[0x20, 0, 8, 1, 0, 0, 0, 0, 0x21, 0, 9]);
        assert!(matches!(
            parse_header(&v2(0x21, 0x11, &body), 4096),
            Err(HeaderError::TlvOverrun { kind: 0x21, .. })
        ));
    }
}
