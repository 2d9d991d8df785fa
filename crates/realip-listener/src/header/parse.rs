//! Detection and validation of PROXY protocol v1 and v2 headers.
//!
//! The signature is detected here. A v1 line is parsed here too (the forms real proxies
//! write, see the crate documentation); a v2 header's address block is read by `ppp`'s v2
//! parser, called directly on exactly the header bytes (never its v2-then-v1 fallback), with
//! our own size cap, LOCAL handling, TLV walk and CRC32C check around it.
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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::error::HeaderError;
use crate::header::info::{Command, Family, ProxyAddr, ProxyInfo, ProxyVersion, Transport};
use crate::header::tlv::parse_tlvs;

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
    // A line whose CRLF cannot end within 107 bytes is oversized, whatever comes after:
    // the answer must not depend on how many of the following bytes have arrived.
    let oversized = HeaderError::Oversized {
        len: V1_MAX_LEN + 1,
        max: V1_MAX_LEN,
    };
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let len = match memchr::memchr2(b'\r', b'\n', window) {
        Some(i) if window[i] == b'\n' => return Err(HeaderError::LineBreak),
        Some(i) if i + 2 > V1_MAX_LEN => return Err(oversized),
        Some(i) => match buf.get(i + 1) {
            Some(b'\n') => i + 2,
            Some(_) => return Err(HeaderError::LineBreak),
            None => return Ok(None),
        },
        None if buf.len() >= V1_MAX_LEN => return Err(oversized),
        None => return Ok(None),
    };
    let (family, source, destination) = parse_v1_line(&buf[V1_PREFIX.len()..len - 2])?;
    Ok(Some((v1_info(family, source, destination), len)))
}

/// Parses what lies between `PROXY ` and the CRLF of a v1 line.
///
/// The forms accepted are listed in the crate documentation ("Accepted v1 lines").
fn parse_v1_line(
    line: &[u8],
) -> Result<(Family, Option<ProxyAddr>, Option<ProxyAddr>), HeaderError> {
    if let Some((source, destination)) = tcp4_line(line) {
        return Ok((
            Family::Inet,
            Some(ProxyAddr::Inet(source)),
            Some(ProxyAddr::Inet(destination)),
        ));
    }
    parse_v1_fields(line)
}

/// The usual v1 line, `TCP4 <dotted quad> <dotted quad> <port> <port>`, read in one pass
/// over its bytes; `None` for any other line, which [`parse_v1_fields`] then reads. Of the
/// lines of this form, accepts exactly those `parse_v1_fields` accepts, with the same
/// addresses.
fn tcp4_line(line: &[u8]) -> Option<(SocketAddr, SocketAddr)> {
    let mut rest = line.strip_prefix(b"TCP4 ")?;
    let source = leading_quad(&mut rest)?;
    skip_byte(&mut rest, b' ')?;
    let destination = leading_quad(&mut rest)?;
    skip_byte(&mut rest, b' ')?;
    let source_port = leading_decimal(&mut rest, 5)?;
    skip_byte(&mut rest, b' ')?;
    let destination_port = leading_decimal(&mut rest, 5)?;
    if !rest.is_empty() {
        return None;
    }
    Some((
        SocketAddr::new(IpAddr::V4(source), u16::try_from(source_port).ok()?),
        SocketAddr::new(
            IpAddr::V4(destination),
            u16::try_from(destination_port).ok()?,
        ),
    ))
}

/// The dotted quad at the start of `rest` ([`dotted_quad`]'s form), consumed.
fn leading_quad(rest: &mut &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0; 4];
    for (i, octet) in octets.iter_mut().enumerate() {
        if i > 0 {
            skip_byte(rest, b'.')?;
        }
        *octet = u8::try_from(leading_decimal(rest, 3)?).ok()?;
    }
    Some(Ipv4Addr::from(octets))
}

/// The digits at the start of `rest`, consumed, as [`decimal`] reads them: one to
/// `max_digits` (at most 9) without a leading zero (`0` itself excepted).
fn leading_decimal(rest: &mut &[u8], max_digits: usize) -> Option<u32> {
    let mut n = 0;
    let mut len = 0;
    while let Some(&byte) = rest.get(len) {
        if !byte.is_ascii_digit() {
            break;
        }
        if len == max_digits {
            return None;
        }
        n = n * 10 + u32::from(byte - b'0');
        len += 1;
    }
    let (field, tail) = rest.split_at_checked(len)?;
    if field.is_empty() || (len > 1 && field.first() == Some(&b'0')) {
        return None;
    }
    *rest = tail;
    Some(n)
}

/// Consumes `byte` at the start of `rest`; `None` if something else is there.
fn skip_byte(rest: &mut &[u8], byte: u8) -> Option<()> {
    let (&first, tail) = rest.split_first()?;
    (first == byte).then(|| *rest = tail)
}

/// [`parse_v1_line`] for any line: split at single spaces, each field read on its own.
fn parse_v1_fields(
    line: &[u8],
) -> Result<(Family, Option<ProxyAddr>, Option<ProxyAddr>), HeaderError> {
    let invalid = |what: &str| HeaderError::V1(what.to_owned());
    // `UNKNOWN`: whatever comes before the CRLF is ignored (spec section 2.1).
    if let Some(rest) = line.strip_prefix(b"UNKNOWN") {
        if rest.is_empty() || rest[0] == b' ' {
            return Ok((Family::Unspec, None, None));
        }
    }
    let mut fields = line.split(|&b| b == b' ');
    let family = match fields.next() {
        Some(b"TCP4") => Family::Inet,
        Some(b"TCP6") => Family::Inet6,
        _ => return Err(invalid("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(invalid(
            "expected four fields after the protocol, separated by single spaces",
        ));
    };
    let src = v1_ip(src).ok_or_else(|| invalid("source address is not an IP address"))?;
    // The protocol names the source's family (NGINX writes the family of the client it
    // re-encodes); the destination is the proxy's own address, of either family.
    if (family == Family::Inet) != src.is_ipv4() {
        return Err(invalid(
            "source address is not of the family the protocol names",
        ));
    }
    let dst = v1_ip(dst).ok_or_else(|| invalid("destination address is not an IP address"))?;
    let sport = v1_port(sport).ok_or_else(|| invalid("source port is not a decimal number"))?;
    let dport =
        v1_port(dport).ok_or_else(|| invalid("destination port is not a decimal number"))?;
    Ok((
        family,
        Some(ProxyAddr::Inet(SocketAddr::new(src, sport))),
        Some(ProxyAddr::Inet(SocketAddr::new(dst, dport))),
    ))
}

/// A v1 address: dotted-quad IPv4 or IPv6 text (RFC 4291 section 2.2, IPv4-mapped and
/// embedded forms included), an IPv6 one optionally followed by a zone (`%` and at least one
/// byte, up to the end of the field), which is dropped. The forms accepted are those of
/// `Ipv4Addr` and `Ipv6Addr`'s `FromStr`.
fn v1_ip(field: &[u8]) -> Option<IpAddr> {
    // Most lines carry dotted quads: read without the general parser.
    if let Some(v4) = dotted_quad(field) {
        return Some(IpAddr::V4(v4));
    }
    let (addr, zone) = match field.iter().position(|&b| b == b'%') {
        Some(i) => (&field[..i], Some(&field[i + 1..])),
        None => (field, None),
    };
    let addr = std::str::from_utf8(addr).ok()?;
    match zone {
        None => addr.parse().ok(),
        Some(zone) if !zone.is_empty() => addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
        Some(_) => None,
    }
}

/// A dotted-quad IPv4 address in the form `Ipv4Addr`'s `FromStr` accepts: four decimal
/// numbers of at most 255, without a sign or a leading zero, separated by dots. `None` for
/// anything else.
fn dotted_quad(field: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0; 4];
    let mut parts = field.split(|&b| b == b'.');
    for octet in &mut octets {
        *octet = u8::try_from(decimal(parts.next()?, 3)?).ok()?;
    }
    match parts.next() {
        None => Some(Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

/// A v1 port: 1 to 5 decimal digits without a sign or a leading zero, at most 65535.
fn v1_port(field: &[u8]) -> Option<u16> {
    u16::try_from(decimal(field, 5)?).ok()
}

/// One to `max_digits` decimal digits without a sign or a leading zero (`0` itself
/// excepted), as a number.
fn decimal(digits: &[u8], max_digits: usize) -> Option<u32> {
    match digits {
        [b'0'] => Some(0),
        [b'1'..=b'9', ..] if digits.len() <= max_digits => {
            digits.iter().try_fold(0, |n: u32, &d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        }
        _ => None,
    }
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
    use crate::header::tlv::{CRC32C, tlv_type};

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

    proptest::proptest! {
        #[test]
        fn dotted_quads_are_read_as_the_standard_parser_reads_them(
            field in "[0-9.]{0,18}|([0-9]{0,4}\\.){3}[0-9]{0,4}(\\.[0-9]{1,3})?",
        ) {
            proptest::prop_assert_eq!(dotted_quad(field.as_bytes()), field.parse::<Ipv4Addr>().ok());
        }

        #[test]
        fn the_tcp4_fast_path_reads_what_the_general_reading_reads(
            line in "TCP4 ((0|[1-9][0-9]?|1[0-9][0-9]|2[0-5][0-9]|0[0-9]|[0-9]{0,4})\\.){3}(0|[1-9][0-9]?|2[0-5][0-9]|[0-9]{0,4}) (([0-9]{1,3}\\.){3}[0-9]{1,3}|[0-9a-f:.]{0,16})( |  )(0|[1-9][0-9]{0,4}|[+0-9]{0,6}) (0|[1-9][0-9]{0,4}|[0-9]{0,6})( ?| x)",
        ) {
            let general = parse_v1_fields(line.as_bytes()).ok();
            match tcp4_line(line.as_bytes()) {
                Some((source, destination)) => proptest::prop_assert_eq!(
                    general,
                    Some((
                        Family::Inet,
                        Some(ProxyAddr::Inet(source)),
                        Some(ProxyAddr::Inet(destination))
                    ))
                ),
                // Left to the general reading: only lines of other forms, or invalid ones.
                None => proptest::prop_assert!(
                    general.as_ref().is_none_or(|(_, _, destination)| !matches!(
                        destination,
                        Some(ProxyAddr::Inet(d)) if d.is_ipv4()
                    )),
                    "{line:?} is a plain TCP4 line the fast path refused: {general:?}"
                ),
            }
        }

        #[test]
        fn the_tcp4_fast_path_takes_every_plain_tcp4_line(
            source: [u8; 4],
            destination: [u8; 4],
            source_port: u16,
            destination_port: u16,
        ) {
            let source = SocketAddr::from((source, source_port));
            let destination = SocketAddr::from((destination, destination_port));
            let line = format!(
                "TCP4 {} {} {} {}",
                source.ip(),
                destination.ip(),
                source_port,
                destination_port
            );
            proptest::prop_assert_eq!(tcp4_line(line.as_bytes()), Some((source, destination)));
        }

        #[test]
        fn v1_ports_are_read_as_plain_decimal_numbers(field in "[+-]?[0-9]{0,7}") {
            let plain = field == "0" || (!field.starts_with(['0', '+', '-']) && !field.is_empty());
            let expected = field.parse::<u16>().ok().filter(|_| plain);
            proptest::prop_assert_eq!(v1_port(field.as_bytes()), expected);
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

    /// Parses a complete header and returns its family, source and destination.
    fn v1_addrs(line: &str) -> (Family, Option<SocketAddr>, Option<SocketAddr>) {
        let (info, len) = parse_header(line.as_bytes(), 4096)
            .unwrap_or_else(|e| panic!("{line:?}: {e}"))
            .unwrap_or_else(|| panic!("{line:?}: incomplete"));
        assert_eq!(len, line.len(), "{line:?}");
        (info.family(), info.source_inet(), info.destination_inet())
    }

    fn sa(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn v1_lines_real_proxies_write() {
        use Family::{Inet, Inet6, Unspec};
        for (sender, line, expected) in [
            (
                "HAProxy, NGINX, Envoy, GCP, Spectrum: TCP4",
                "PROXY TCP4 192.0.2.1 198.51.100.2 51512 443\r\n",
                (Inet, sa("192.0.2.1:51512"), sa("198.51.100.2:443")),
            ),
            (
                "TCP6",
                "PROXY TCP6 2001:db8::1 2001:db8::2 51512 443\r\n",
                (Inet6, sa("[2001:db8::1]:51512"), sa("[2001:db8::2]:443")),
            ),
            (
                "NGINX stream: IPv6 client re-encoded over an IPv4 upstream",
                "PROXY TCP6 2001:db8::1 127.0.0.21 51512 15001\r\n",
                (Inet6, sa("[2001:db8::1]:51512"), sa("127.0.0.21:15001")),
            ),
            (
                "NGINX stream: IPv4 client re-encoded over an IPv6 upstream",
                "PROXY TCP4 192.0.2.1 ::1 51512 15003\r\n",
                (Inet, sa("192.0.2.1:51512"), sa("[::1]:15003")),
            ),
            (
                "HAProxy dual-stack bind: IPv4 client as IPv4-mapped IPv6",
                "PROXY TCP6 ::ffff:192.0.2.1 ::ffff:127.0.0.1 51512 15001\r\n",
                (
                    Inet6,
                    sa("[::ffff:192.0.2.1]:51512"),
                    sa("[::ffff:127.0.0.1]:15001"),
                ),
            ),
            (
                "HAProxy: mapped destination only",
                "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 1 2\r\n",
                (Inet6, sa("[2001:db8::1]:1"), sa("[::ffff:10.0.0.1]:2")),
            ),
            (
                "link-local addresses with zones (dropped)",
                "PROXY TCP6 fe80::1%eth0 fe80::2%25 5 6\r\n",
                (Inet6, sa("[fe80::1]:5"), sa("[fe80::2]:6")),
            ),
            (
                "a zone is everything up to the end of the field",
                "PROXY TCP6 fe80::d806:a55d:eb1b:49cc%vEthernet(vmxnet3) ::1 64692 1\r\n",
                (
                    Inet6,
                    sa("[fe80::d806:a55d:eb1b:49cc]:64692"),
                    sa("[::1]:1"),
                ),
            ),
            (
                "port bounds",
                "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
                (Inet, sa("0.0.0.0:0"), sa("255.255.255.255:65535")),
            ),
            (
                "HAProxy, NGINX: unknown source",
                "PROXY UNKNOWN\r\n",
                (Unspec, None, None),
            ),
            (
                "UNKNOWN with the fields of a TCP line (spec: ignored)",
                "PROXY UNKNOWN 192.0.2.1 198.51.100.2 51512 443\r\n",
                (Unspec, None, None),
            ),
        ] {
            assert_eq!(v1_addrs(line), expected, "{sender}: {line:?}");
        }
    }

    #[test]
    fn v1_lines_that_are_not_headers() {
        for line in [
            // The source must be of the family the protocol names.
            "PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
            "PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n",
            "PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
            "PROXY tcp4 192.0.2.1 192.0.2.2 1 2\r\n",
            "PROXY UDP4 192.0.2.1 192.0.2.2 1 2\r\n",
            "PROXY  TCP4 192.0.2.1 192.0.2.2 1 2\r\n",
            "PROXY TCP4  192.0.2.1 192.0.2.2 1 2\r\n",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 \r\n",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
            "PROXY TCP4\r\n",
            "PROXY \r\n",
            "PROXY TCP4 192.0.2.1 192.0.2 1 2\r\n",
            "PROXY TCP4 192.0.2.01 192.0.2.2 1 2\r\n",
            "PROXY TCP4 192.0.2.256 192.0.2.2 1 2\r\n",
            "PROXY TCP4 [192.0.2.1] 192.0.2.2 1 2\r\n",
            "PROXY TCP6 [2001:db8::1] 2001:db8::2 1 2\r\n",
            "PROXY TCP6 2001:db8::1:1 2001:db8::2:2:2:2:2:2 1 2\r\n",
            "PROXY TCP4 192.0.2.1%eth0 192.0.2.2 1 2\r\n",
            "PROXY TCP6 fe80::1% ::1 1 2\r\n",
            "PROXY TCP6 %eth0 ::1 1 2\r\n",
            "PROXY TCP4 192.0.2.1\t192.0.2.2 1 2\r\n",
            "PROXY TCP4 192.0.2.1 192.0.2.2 0x1 2\r\n",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 00002\r\n",
            "PROXY TCP4 192.0.2.1 192.0.2.2 1 655350\r\n",
        ] {
            assert!(
                matches!(parse_header(line.as_bytes(), 4096), Err(HeaderError::V1(_))),
                "{line:?}: {:?}",
                parse_header(line.as_bytes(), 4096).map(|r| r.map(|(_, n)| n))
            );
        }
        // Not UTF-8 in an address.
        assert!(matches!(
            parse_header(b"PROXY TCP4 192.0.2.\xff 192.0.2.2 1 2\r\n", 4096),
            Err(HeaderError::V1(_))
        ));
    }

    /// The first answer a reader gets when `bytes` arrive in pieces ending at `cuts` (the
    /// reader stops at the first answer that is not "incomplete").
    fn answer_in_pieces(bytes: &[u8], cuts: &[usize]) -> Result<Option<usize>, String> {
        for &end in cuts.iter().chain([&bytes.len()]) {
            match parse_header(&bytes[..end], 4096) {
                Ok(None) => {}
                Ok(Some((_, len))) => return Ok(Some(len)),
                Err(err) => return Err(err.to_string()),
            }
        }
        Ok(None)
    }

    #[test]
    fn a_rejection_is_the_same_for_every_split() {
        let a100 = [b"PROXY ".as_slice(), &[b'A'; 100], b"\r"].concat();
        assert_eq!(a100.len(), 107);
        let mut inputs = vec![
            a100.clone(),
            [a100.as_slice(), b"\n"].concat(),
            [a100.as_slice(), b"X"].concat(),
            [a100.as_slice(), b"\nGET / HTTP/1.1\r\n"].concat(),
            [b"PROXY ".as_slice(), &[b'A'; 101]].concat(),
            [b"PROXY ".as_slice(), &[b'A'; 300]].concat(),
            [b"PROXY ".as_slice(), &[b'A'; 100], b"\n"].concat(),
            [b"PROXY ".as_slice(), &[b'A'; 99], b"\r", b"X"].concat(),
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\rX".to_vec(),
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n".to_vec(),
            b"PROXY TCP4 192.0.2.1 192.0.2.2 1 +2\r\nmore".to_vec(),
            b"PROXY TCP4 192.0.2.1\r\n".to_vec(),
            b"PROXX TCP4".to_vec(),
            b"GET / HTTP/1.1\r\n".to_vec(),
        ];
        let mut oversized_v2 = V2_SIGNATURE.to_vec();
        oversized_v2.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF, 1, 2, 3]);
        inputs.push(oversized_v2);
        inputs.push(v2(0x31, 0x11, &[0; 12]));
        inputs.push(v2(0x21, 0x11, &[0; 8]));
        inputs.push(v2(0x21, 0x41, &[0; 12]));
        inputs.push(v2(
            0x21,
            0x11,
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0, 9],
        ));
        for bytes in &inputs {
            let whole = answer_in_pieces(bytes, &[]);
            assert!(whole.is_err(), "{bytes:?} is not rejected: {whole:?}");
            for a in 0..bytes.len() {
                assert_eq!(
                    answer_in_pieces(bytes, &[a]),
                    whole,
                    "{bytes:?} split at {a}"
                );
                for b in a..bytes.len() {
                    assert_eq!(
                        answer_in_pieces(bytes, &[a, b]),
                        whole,
                        "{bytes:?} split at {a} and {b}"
                    );
                }
            }
        }
        // One more byte after a CR that ends the 107-byte window changes nothing.
        for more in [&b""[..], b"\n", b"X"] {
            assert_eq!(
                answer_in_pieces(&[a100.as_slice(), more].concat(), &[]),
                Err("header of 108 bytes exceeds the maximum of 107".to_owned())
            );
        }
    }

    #[test]
    fn v2_headers_real_senders_write() {
        let inet = [192, 0, 2, 1, 10, 0, 0, 1, 0xC9, 0x38, 0x01, 0xBB];
        let mut inet6 = [0; 36];
        inet6[..16].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        inet6[16..32].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        inet6[32..].copy_from_slice(&[0xC9, 0x38, 0x01, 0xBB]);
        let mut mapped = inet6;
        mapped[..16].copy_from_slice(&"::ffff:192.0.2.1".parse::<Ipv6Addr>().unwrap().octets());
        let with = |block: &[u8], tlvs: &[&[u8]]| [&[block], tlvs].concat().concat();
        let aws = [&[tlv_type::AWS, 0, 23, 0x01][..], b"vpce-08d2bf15fac5001c9"].concat();
        let azure = [tlv_type::AZURE, 0, 5, 0x01, 0x78, 0x56, 0x34, 0x12];
        let gcp = [tlv_type::GCP, 0, 8, 0, 0, 0, 0, 0, 0, 0x30, 0x39];
        for (sender, header, command, family, transport, source) in [
            (
                "HAProxy, Envoy, Spectrum TCP: PROXY INET STREAM",
                v2(0x21, 0x11, &inet),
                Command::Proxy,
                Family::Inet,
                Transport::Stream,
                sa("192.0.2.1:51512"),
            ),
            (
                "PROXY INET6 STREAM",
                v2(0x21, 0x21, &inet6),
                Command::Proxy,
                Family::Inet6,
                Transport::Stream,
                sa("[2001:db8::1]:51512"),
            ),
            (
                "HAProxy, mixed families: IPv4 client as IPv4-mapped INET6",
                v2(0x21, 0x21, &mapped),
                Command::Proxy,
                Family::Inet6,
                Transport::Stream,
                sa("[::ffff:192.0.2.1]:51512"),
            ),
            (
                "Spectrum UDP: PROXY INET DGRAM",
                v2(0x21, 0x12, &inet),
                Command::Proxy,
                Family::Inet,
                Transport::Datagram,
                sa("192.0.2.1:51512"),
            ),
            (
                "AWS NLB: VPC endpoint TLV",
                v2(0x21, 0x11, &with(&inet, &[&aws])),
                Command::Proxy,
                Family::Inet,
                Transport::Stream,
                sa("192.0.2.1:51512"),
            ),
            (
                "Azure Private Link: link id TLV",
                v2(0x21, 0x21, &with(&inet6, &[&azure])),
                Command::Proxy,
                Family::Inet6,
                Transport::Stream,
                sa("[2001:db8::1]:51512"),
            ),
            (
                "GCP Private Service Connect: connection id TLV",
                v2(0x21, 0x11, &with(&inet, &[&gcp])),
                Command::Proxy,
                Family::Inet,
                Transport::Stream,
                sa("192.0.2.1:51512"),
            ),
            (
                "HAProxy without a client address: PROXY UNSPEC with a TLV",
                v2(0x21, 0x00, &[tlv_type::NOOP, 0, 0]),
                Command::Proxy,
                Family::Unspec,
                Transport::Unspec,
                None,
            ),
            (
                "Envoy, HAProxy checks: bare LOCAL",
                v2(0x20, 0x00, &[]),
                Command::Local,
                Family::Unspec,
                Transport::Unspec,
                None,
            ),
            (
                "AWS NLB health check: LOCAL with an INET block",
                v2(0x20, 0x11, &inet),
                Command::Local,
                Family::Unspec,
                Transport::Stream,
                None,
            ),
            (
                "LOCAL with an INET6 family and a block too short for it",
                v2(0x20, 0x21, &inet),
                Command::Local,
                Family::Unspec,
                Transport::Stream,
                None,
            ),
        ] {
            let (info, len) = parse_header(&header, 4096)
                .unwrap_or_else(|e| panic!("{sender}: {e}"))
                .unwrap_or_else(|| panic!("{sender}: incomplete"));
            assert_eq!(len, header.len(), "{sender}");
            assert_eq!(
                (
                    info.command(),
                    info.family(),
                    info.transport(),
                    info.source_inet()
                ),
                (command, family, transport, source),
                "{sender}"
            );
        }
        let tlvs = |header: Vec<u8>| parse_header(&header, 4096).unwrap().unwrap().0;
        let info = tlvs(v2(0x21, 0x11, &with(&inet, &[&aws])));
        assert_eq!(info.tlvs().aws_vpce_id(), Some("vpce-08d2bf15fac5001c9"));
        let info = tlvs(v2(0x21, 0x21, &with(&inet6, &[&azure])));
        assert_eq!(
            info.tlvs().azure_private_endpoint_link_id(),
            Some(0x1234_5678)
        );
        let info = tlvs(v2(0x21, 0x11, &with(&inet, &[&gcp])));
        assert_eq!(info.tlvs().gcp_psc_connection_id(), Some(12345));
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
