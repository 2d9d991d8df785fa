//! Allocation-free parsing of address lists (`X-Forwarded-For`) and address entries.
//!
//! All lines of a header are combined in order, then split on `,`; entries are trimmed and
//! empty entries are skipped. Iteration runs from the right (the entries written by the
//! proxies nearest to this server come first) or from the left, without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{GetAll, HeaderValue, ValueIter};

/// One parsed address entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// An IP address with an optional port.
    Ip(IpAddr, Option<u16>),
    /// Not an address: the walk must stop here.
    Stop(StopReason),
}

/// Why an entry stopped the walk.
///
/// Every variant means "this entry does not name an IP address"; the walk never continues
/// to the left of such an entry (fail closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// The entry is not `ip`, `ip:port`, `[v6]`, `[v6]:port` or `v6%zone`, or is not ASCII.
    Malformed,
    /// An RFC 7239 element whose `for` node is `unknown`.
    UnknownNode,
    /// An RFC 7239 element whose `for` node is obfuscated (`_hidden`).
    ObfuscatedNode,
    /// An RFC 7239 element without a `for` parameter, or with two.
    MissingFor,
    /// An RFC 7239 element that does not follow the `pair;pair` syntax.
    MalformedElement,
}

impl StopReason {
    /// A short, lowercase description for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "entry is not an IP address",
            Self::UnknownNode => "forwarded node is \"unknown\"",
            Self::ObfuscatedNode => "forwarded node is obfuscated",
            Self::MissingFor => "forwarded element has no single \"for\" parameter",
            Self::MalformedElement => "forwarded element is malformed",
        }
    }
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Trims ASCII spaces and horizontal tabs (HTTP optional whitespace).
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

/// Non-empty, trimmed, comma-separated entries of all lines of a header, right to left.
#[derive(Debug)]
pub(crate) struct RevEntries<'a> {
    lines: ValueIter<'a, HeaderValue>,
    rest: &'a [u8],
}

impl<'a> RevEntries<'a> {
    pub(crate) fn new(all: GetAll<'a, HeaderValue>) -> Self {
        Self {
            lines: all.iter(),
            rest: &[],
        }
    }
}

impl<'a> Iterator for RevEntries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                self.rest = self.lines.next_back()?.as_bytes();
            }
            // One backward scan: skip trailing whitespace, then the entry up to its comma.
            let rest = self.rest;
            let end = rest
                .iter()
                .rposition(|&b| !matches!(b, b' ' | b'\t'))
                .map_or(0, |i| i + 1);
            let start = rest[..end]
                .iter()
                .rposition(|&b| b == b',')
                .map_or(0, |i| i + 1);
            self.rest = &rest[..start.saturating_sub(1)];
            let entry = &rest[start..end];
            if let Some(first) = entry.iter().position(|&b| !matches!(b, b' ' | b'\t')) {
                return Some(&entry[first..]);
            }
        }
    }

    /// Counts the remaining entries in one pass, without splitting them out.
    fn count(self) -> usize {
        self.lines.fold(count_entries(self.rest), |n, line| {
            n + count_entries(line.as_bytes())
        })
    }
}

/// The number of comma-separated entries of `s` that are not empty once trimmed (those
/// holding a byte other than optional whitespace), as [`RevEntries`] and [`Entries`] yield.
fn count_entries(s: &[u8]) -> usize {
    let mut count = 0;
    let mut blank = true;
    for &b in s {
        match b {
            b',' => {
                count += usize::from(!blank);
                blank = true;
            }
            b' ' | b'\t' => {}
            _ => blank = false,
        }
    }
    count + usize::from(!blank)
}

/// Non-empty, trimmed, comma-separated entries of all lines of a header, left to right.
#[derive(Debug)]
pub(crate) struct Entries<'a> {
    lines: ValueIter<'a, HeaderValue>,
    rest: Option<&'a [u8]>,
}

impl<'a> Entries<'a> {
    pub(crate) fn new(all: GetAll<'a, HeaderValue>) -> Self {
        Self {
            lines: all.iter(),
            rest: None,
        }
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let rest = match self.rest {
                Some(rest) => rest,
                None => self.lines.next()?.as_bytes(),
            };
            let (entry, rest) = match rest.iter().position(|&b| b == b',') {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            self.rest = rest;
            let entry = trim_ows(entry);
            if !entry.is_empty() {
                return Some(entry);
            }
        }
    }

    /// Counts the remaining entries in one pass, without splitting them out.
    fn count(self) -> usize {
        let rest = self.rest.map_or(0, count_entries);
        self.lines
            .fold(rest, |n, line| n + count_entries(line.as_bytes()))
    }
}

/// Parses one address entry: `ip`, `ip:port`, `[v6]`, `[v6]:port`, `v6%zone`, `[v6%zone]:port`.
///
/// Zones are stripped. A port of `0` is treated as "no port". Anything else is
/// [`StopReason::Malformed`].
#[inline]
pub(crate) fn parse_entry(entry: &[u8]) -> Node {
    match parse_addr(entry) {
        Some((ip, port)) => Node::Ip(ip, port),
        None => Node::Stop(StopReason::Malformed),
    }
}

#[inline]
fn parse_addr(entry: &[u8]) -> Option<(IpAddr, Option<u16>)> {
    // Fast path for the common `a.b.c.d` and `a.b.c.d:port`; anything it does not accept
    // whole goes through the general parser below, which gives the same answer for
    // everything the fast path accepts.
    if let Some((ip, rest)) = parse_v4_prefix(entry) {
        match rest {
            [] => return Some((IpAddr::V4(ip), None)),
            [b':', port @ ..] => {
                if let Some(port) = parse_port_bytes(port) {
                    return Some((IpAddr::V4(ip), port));
                }
            }
            _ => {}
        }
    }
    parse_addr_slow(entry)
}

/// The general entry parser (every form); [`parse_addr`] tries plain IPv4 first.
#[inline(never)]
fn parse_addr_slow(entry: &[u8]) -> Option<(IpAddr, Option<u16>)> {
    let entry = std::str::from_utf8(entry).ok()?;
    if let Some(bracketed) = entry.strip_prefix('[') {
        let close = bracketed.find(']')?;
        let ip = parse_v6(&bracketed[..close])?;
        let after = &bracketed[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => parse_port(port)?,
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((IpAddr::V6(ip), port));
    }
    match entry.bytes().filter(|&b| b == b':').count() {
        0 => entry
            .parse::<Ipv4Addr>()
            .ok()
            .map(|ip| (IpAddr::V4(ip), None)),
        1 => {
            let (ip, port) = entry.split_once(':')?;
            let ip = ip.parse::<Ipv4Addr>().ok()?;
            Some((IpAddr::V4(ip), parse_port(port)?))
        }
        _ => parse_v6(entry).map(|ip| (IpAddr::V6(ip), None)),
    }
}

fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    let addr = match s.split_once('%') {
        Some((addr, zone)) if !zone.is_empty() && zone.bytes().all(is_zone_byte) => addr,
        Some(_) => return None,
        None => s,
    };
    addr.parse().ok()
}

const fn is_zone_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')
}

/// Parses a decimal port: one to five digits, at most 65535. `0` means "no port".
///
/// Returns `None` for invalid input and `Some(None)` for port 0.
pub(crate) fn parse_port(s: &str) -> Option<Option<u16>> {
    parse_port_bytes(s.as_bytes())
}

/// [`parse_port`] on bytes: one to five ASCII digits, at most 65535; `Some(None)` for 0.
pub(crate) fn parse_port_bytes(s: &[u8]) -> Option<Option<u16>> {
    if s.is_empty() || s.len() > 5 {
        return None;
    }
    let mut port: u32 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        port = port * 10 + u32::from(b - b'0');
    }
    let port = u16::try_from(port).ok()?;
    Some((port != 0).then_some(port))
}

/// A dotted-quad IPv4 address at the start of `s`, as [`Ipv4Addr`]'s `FromStr` accepts it
/// (four decimal octets of one to three digits, at most 255, no leading zero), and the
/// bytes after it.
#[inline]
fn parse_v4_prefix(s: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let digit = |i: usize| s.get(i).filter(|b| b.is_ascii_digit()).map(|b| b - b'0');
    let mut octets = [0u8; 4];
    let mut i = 0;
    for (n, octet) in octets.iter_mut().enumerate() {
        if n > 0 {
            if s.get(i) != Some(&b'.') {
                return None;
            }
            i += 1;
        }
        let first = digit(i)?;
        let mut value = u32::from(first);
        i += 1;
        // A leading 0 is the whole octet; otherwise up to two more digits.
        if first != 0 {
            for _ in 0..2 {
                let Some(d) = digit(i) else { break };
                value = value * 10 + u32::from(d);
                i += 1;
            }
        }
        // A digit here is a leading zero (`01`) or a fourth digit: not an octet.
        if digit(i).is_some() {
            return None;
        }
        *octet = u8::try_from(value).ok()?;
    }
    Some((Ipv4Addr::from(octets), &s[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entry_forms() {
        type Case<'a> = (&'a str, Option<(&'a str, Option<u16>)>);
        let cases: &[Case<'_>] = &[
            ("1.2.3.4", Some(("1.2.3.4", None))),
            ("1.2.3.4:5678", Some(("1.2.3.4", Some(5678)))),
            ("2001:db8::1", Some(("2001:db8::1", None))),
            ("[2001:db8::1]", Some(("2001:db8::1", None))),
            ("[2001:db8::1]:443", Some(("2001:db8::1", Some(443)))),
            ("fe80::1%eth0", Some(("fe80::1", None))),
            ("[fe80::1%eth0]:80", Some(("fe80::1", Some(80)))),
            ("::ffff:10.0.0.1", Some(("::ffff:10.0.0.1", None))),
            ("1.2.3.4:0", Some(("1.2.3.4", None))),
            ("1.2.3.4:65535", Some(("1.2.3.4", Some(65535)))),
            ("1.2.3.4:65536", None),
            ("1.2.3.4:+80", None),
            ("1.2.3.4:", None),
            ("1.2.3.4:80:90", None),
            ("[2001:db8::1]443", None),
            ("[2001:db8::1", None),
            ("[1.2.3.4]", None),
            ("01.2.3.4", None),
            ("1.2.3", None),
            ("unknown", None),
            ("_hidden", None),
            ("example.com", None),
            ("fe80::1%", None),
            ("fe80::1%a b", None),
            ("1.2.3.4%eth0", None),
            ("1.2.3.4 5.6.7.8", None),
            ("2001:db8::1:80:x", None),
        ];
        for (input, want) in cases {
            let got = parse_entry(input.as_bytes());
            let want = match want {
                Some((addr, port)) => Node::Ip(ip(addr), *port),
                None => Node::Stop(StopReason::Malformed),
            };
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(
            parse_entry(b"\xff1.2.3.4"),
            Node::Stop(StopReason::Malformed)
        );
    }

    fn map(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }
        headers
    }

    #[test]
    fn entries_combine_lines_and_skip_empty_entries_in_both_directions() {
        let headers = map(&["a, b", "", ",c,,d ,", " e\t"]);
        let all = || headers.get_all("x-forwarded-for");
        let rev: Vec<&[u8]> = RevEntries::new(all()).collect();
        assert_eq!(rev, [&b"e"[..], b"d", b"c", b"b", b"a"]);
        let fwd: Vec<&[u8]> = Entries::new(all()).collect();
        assert_eq!(fwd, [&b"a"[..], b"b", b"c", b"d", b"e"]);
        let empty = HeaderMap::new();
        assert_eq!(RevEntries::new(empty.get_all("x-forwarded-for")).count(), 0);
        assert_eq!(Entries::new(empty.get_all("x-forwarded-for")).count(), 0);
    }

    proptest::proptest! {
        #[test]
        fn ipv4_fast_path_agrees_with_the_general_parser(
            entry in "[0-9.:]{0,24}|([0-2]?[0-9]{0,3}\\.){3}[0-2]?[0-9]{1,2}(:[0-9]{0,6})?[a-z%:. ]{0,2}",
        ) {
            proptest::prop_assert_eq!(parse_addr(entry.as_bytes()), parse_addr_slow(entry.as_bytes()));
        }

        #[test]
        fn counting_agrees_with_iterating(
            lines in proptest::collection::vec("[a ,\t]{0,12}", 0..5),
            skip in 0usize..8,
        ) {
            let mut headers = HeaderMap::new();
            for line in &lines {
                headers.append("x-forwarded-for", line.parse().unwrap());
            }
            let all = || headers.get_all("x-forwarded-for");
            let mut rev = RevEntries::new(all());
            let mut fwd = Entries::new(all());
            for _ in 0..skip {
                rev.next();
                fwd.next();
            }
            let by_next = |it: &mut dyn Iterator<Item = &[u8]>| {
                let mut n = 0;
                while it.next().is_some() {
                    n += 1;
                }
                n
            };
            let mut rev2 = RevEntries::new(all());
            let mut fwd2 = Entries::new(all());
            for _ in 0..skip {
                rev2.next();
                fwd2.next();
            }
            proptest::prop_assert_eq!(rev.count(), by_next(&mut rev2));
            proptest::prop_assert_eq!(fwd.count(), by_next(&mut fwd2));
        }
    }

    #[test]
    fn ipv4_fast_path_edges() {
        type Case<'a> = (&'a str, Option<(&'a str, Option<u16>)>);
        let cases: &[Case<'_>] = &[
            ("0.0.0.0", Some(("0.0.0.0", None))),
            (
                "255.255.255.255:65535",
                Some(("255.255.255.255", Some(65535))),
            ),
            ("1.2.3.4:00080", Some(("1.2.3.4", Some(80)))),
            ("1.2.3.4:00000", Some(("1.2.3.4", None))),
            ("256.1.1.1", None),
            ("1.2.3.04", None),
            ("1.2.3.0004", None),
            ("1.2.3.4.5", None),
            ("1.2.3.4:123456", None),
            ("1.2.3.4::", None),
            ("1..3.4", None),
            (".1.2.3.4", None),
        ];
        for (input, want) in cases {
            let want = want.map(|(addr, port)| (ip(addr), port));
            assert_eq!(parse_addr(input.as_bytes()), want, "{input}");
            assert_eq!(parse_addr_slow(input.as_bytes()), want, "{input}");
        }
    }

    #[test]
    fn trims_only_optional_whitespace() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b""), b"");
    }
}
