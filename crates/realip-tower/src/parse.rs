//! Allocation-free splitting of header lines into items, and parsing of address entries
//! (`X-Forwarded-For`, `X-Real-IP`, ports).
//!
//! All lines of a header are combined in order, as RFC 9110 §5.3 combines field lines (the
//! lines joined by commas), then split at every comma (outside quoted strings for
//! `Forwarded`). Items are trimmed of optional whitespace. An empty item is still a
//! *position*: NGINX's `X-Forwarded-Port "$http_x_forwarded_port, $remote_port"` writes
//! `, 42342` when the previous hop sent no port, and the empty first item says "no port for
//! the entry at this position". Iteration runs from the right (the items written by the
//! proxies nearest to this server come first), without allocating.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::lines::LineIter;

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
    /// The entry is not `ip`, `ip:port`, `[v6]`, `[v6]:port`, `v6%zone` or
    /// `[v6%zone]:port`, or (in `Forwarded`) the node is not an RFC 7239 §6 node.
    Malformed,
    /// An RFC 7239 element whose `for` node is `unknown`.
    UnknownNode,
    /// An RFC 7239 element whose `for` node is obfuscated (`_hidden`).
    ObfuscatedNode,
    /// An RFC 7239 element without a `for` parameter, or with two.
    MissingFor,
    /// An RFC 7239 element that does not follow the `pair;pair` syntax, or a value that is
    /// neither a token nor a quoted-string (RFC 7230 §3.2.6).
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

/// How a header's lines split into items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Split {
    /// At every comma (`X-Forwarded-For`, `X-Forwarded-Port`).
    Commas,
    /// At commas outside quoted strings (RFC 7239 `Forwarded` elements).
    CommasOutsideQuotes,
}

/// The items of all lines of a header, right to left, trimmed; empty items included.
///
/// A line without a comma is one item (an empty line is one empty item); `a,,b` is three.
#[derive(Debug)]
pub(crate) struct RevItems<'a> {
    lines: LineIter<'a>,
    /// What is left of the current line, left of the last item taken; `None` once the line
    /// is used up.
    rest: Option<&'a [u8]>,
    split: Split,
}

impl<'a> RevItems<'a> {
    /// The items of a header's `lines`.
    pub(crate) fn new(lines: LineIter<'a>, split: Split) -> Self {
        Self {
            lines,
            rest: None,
            split,
        }
    }

    fn last_separator(&self, s: &[u8]) -> Option<usize> {
        match self.split {
            Split::Commas => rposition_either(s, b',', b','),
            Split::CommasOutsideQuotes => rfind_unquoted(s, b','),
        }
    }
}

impl<'a> Iterator for RevItems<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = match self.rest {
            Some(rest) => rest,
            None => self.lines.next_back()?.as_bytes(),
        };
        let (item, left) = match self.last_separator(rest) {
            Some(i) => (&rest[i + 1..], Some(&rest[..i])),
            None => (rest, None),
        };
        self.rest = left;
        Some(trim_ows(item))
    }

    /// Counts the remaining items in one pass, without splitting them out.
    fn count(self) -> usize {
        match self.split {
            Split::Commas => {
                let items = |s: &[u8]| 1 + count_commas(s);
                self.lines.fold(self.rest.map_or(0, items), |n, line| {
                    n + items(line.as_bytes())
                })
            }
            Split::CommasOutsideQuotes => {
                let mut items = self;
                let mut n = 0;
                while items.next().is_some() {
                    n += 1;
                }
                n
            }
        }
    }
}

/// The number of commas in `s`, eight bytes at a time: in `x = word ^ ",,,,,,,,"` a comma is
/// a zero byte, found exactly (no carry crosses a byte) by setting the high bit of every
/// byte that is not zero: `((x & 0x7f…) + 0x7f…) | x`. The zero bytes' flags, one per byte,
/// are summed by a multiplication into the top byte. The bytes after the last whole word
/// are read as the last eight bytes of `s`, those already counted masked off; only a
/// string shorter than a word is read byte by byte.
#[inline(never)]
fn count_commas(s: &[u8]) -> usize {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const LOW7: u64 = ONES * 0x7f;
    const COMMAS: u64 = ONES * b',' as u64;
    // One flag (the byte's high bit) per comma of `word`.
    let comma_flags = |word: &[u8; 8]| {
        let x = u64::from_le_bytes(*word) ^ COMMAS;
        !(((x & LOW7) + LOW7) | x) & !LOW7
    };
    let sum_flags = |flags: u64| ((flags >> 7).wrapping_mul(ONES) >> 56) as usize;
    let Some((_, last)) = s.split_last_chunk::<8>() else {
        return s.iter().filter(|&&b| b == b',').count();
    };
    let mut rest = s;
    let mut n = 0;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        n += sum_flags(comma_flags(word));
        rest = tail;
    }
    if rest.is_empty() {
        return n;
    }
    // Little-endian: the `rest.len()` (1 to 7) bytes not yet counted are the word's top ones.
    let uncounted = u64::MAX << (8 * (8 - rest.len()));
    n + sum_flags(comma_flags(last) & uncounted)
}

/// The position of the last byte of `s` that is `a` or `b`, eight bytes at a time (the
/// exact zero-byte test of [`count_commas`] on the word XORed with each byte): a word
/// without either byte costs about as much as one byte of a byte loop.
fn rposition_either(s: &[u8], a: u8, b: u8) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([1; 8]);
    const LOW7: u64 = ONES * 0x7f;
    let zero_flags = |x: u64| !(((x & LOW7) + LOW7) | x) & !LOW7;
    let (a_word, b_word) = (ONES * u64::from(a), ONES * u64::from(b));
    let mut rest = s;
    while let Some((head, word)) = rest.split_last_chunk::<8>() {
        let word = u64::from_le_bytes(*word);
        let flags = zero_flags(word ^ a_word) | zero_flags(word ^ b_word);
        if flags != 0 {
            // Little-endian: the highest flag is the last matching byte.
            return Some(head.len() + (63 - flags.leading_zeros() as usize) / 8);
        }
        rest = head;
    }
    rest.iter().rposition(|&x| x == a || x == b)
}

/// Whether the `"` at `i` is escaped by an odd number of backslashes before it.
fn is_escaped(s: &[u8], i: usize) -> bool {
    s[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The last `sep` outside a quoted string, scanning from the right.
///
/// A `"` toggles quoting unless escaped (an odd number of backslashes before it). The scan
/// jumps between the bytes that matter: `sep` or `"` outside quotes, `"` inside. An
/// unclosed quote on the left swallows only what lies to its left, so a malformed element
/// only affects itself.
pub(crate) fn rfind_unquoted(s: &[u8], sep: u8) -> Option<usize> {
    let mut end = s.len();
    loop {
        // Outside quotes.
        let i = rposition_either(&s[..end], sep, b'"')?;
        end = i;
        if s[i] == sep {
            return Some(i);
        }
        if is_escaped(s, i) {
            continue;
        }
        // Inside quotes: up to the opening quote; none means quoted to the start.
        loop {
            end = rposition_either(&s[..end], b'"', b'"')?;
            if !is_escaped(s, end) {
                break;
            }
        }
    }
}

/// Parses one address entry: `ip`, `ip:port`, `[v6]`, `[v6]:port`, `v6%zone`,
/// `[v6%zone]:port`.
///
/// A zone is everything after `%` up to `]` (bracketed) or the end of the entry, whatever
/// its bytes (Windows names interfaces `vEthernet (… - Virtual Switch)`); it is dropped. A
/// port of `0` is treated as "no port". Anything else is [`StopReason::Malformed`].
#[inline]
pub(crate) fn parse_entry(entry: &[u8]) -> Node {
    match parse_addr(entry) {
        Some((ip, port)) => Node::Ip(ip, port),
        None => Node::Stop(StopReason::Malformed),
    }
}

/// Inlined into the walks, so that an IPv4 address reaches the caller in registers: a
/// returned `Node` goes through memory, written as a tag byte and four address bytes and
/// read back as wider words, a load the CPU cannot serve from its pending stores (it
/// waits for them to reach the cache).
#[inline(always)]
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
    if entry.first() == Some(&b'[') {
        let (ip, after) = split_bracketed(entry)?;
        let port = match after {
            [] => None,
            [b':', port @ ..] => parse_port_bytes(port)?,
            _ => return None,
        };
        return Some((IpAddr::V6(ip), port));
    }
    if entry.contains(&b'%') {
        // An unbracketed zone runs to the end of the entry: no port can follow it.
        return parse_v6_zoned(entry).map(|ip| (IpAddr::V6(ip), None));
    }
    let entry = std::str::from_utf8(entry).ok()?;
    match entry.bytes().filter(|&b| b == b':').count() {
        0 => entry
            .parse::<Ipv4Addr>()
            .ok()
            .map(|ip| (IpAddr::V4(ip), None)),
        1 => {
            let (ip, port) = entry.split_once(':')?;
            let ip = ip.parse::<Ipv4Addr>().ok()?;
            Some((IpAddr::V4(ip), parse_port_bytes(port.as_bytes())?))
        }
        _ => entry
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| (IpAddr::V6(ip), None)),
    }
}

/// `[v6]` or `[v6%zone]` at the start of `s`: the address (zone dropped) and the bytes after
/// the `]`. `X-Forwarded-For` entries and RFC 7239 nodes write IPv6 the same way.
pub(crate) fn split_bracketed(s: &[u8]) -> Option<(Ipv6Addr, &[u8])> {
    let inner = s.strip_prefix(b"[")?;
    // A zone runs up to `]`, which cannot occur in the address before it.
    let close = inner.iter().position(|&b| b == b']')?;
    Some((parse_v6_zoned(&inner[..close])?, &inner[close + 1..]))
}

/// An IPv6 address, optionally followed by `%` and a non-empty zone (any bytes), which is
/// dropped.
fn parse_v6_zoned(s: &[u8]) -> Option<Ipv6Addr> {
    let addr = match s.iter().position(|&b| b == b'%') {
        Some(i) if i + 1 < s.len() => &s[..i],
        Some(_) => return None,
        None => s,
    };
    std::str::from_utf8(addr).ok()?.parse().ok()
}

/// Parses a decimal port: one to five ASCII digits, at most 65535. `0` means "no port".
///
/// Returns `None` for invalid input (including an empty one) and `Some(None)` for port 0.
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
/// (four decimal octets of one to three digits, at most 255, no leading zero: RFC 3986's
/// `IPv4address`, which RFC 7239 nodes use too), and the bytes after it.
#[inline]
pub(crate) fn parse_v4_prefix(s: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
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
            ("[fe80::1%]:80", None),
            ("fe80::1%a b", Some(("fe80::1", None))),
            // A zone runs to the end of an unbracketed entry, so nothing after it is a port.
            ("fe80::1%eth0:80", Some(("fe80::1", None))),
            (
                "[fe80::d806:a55d:eb1b:49cc%vEthernet (vmxnet3 Ethernet Adapter - Virtual Switch)]:64692",
                Some(("fe80::d806:a55d:eb1b:49cc", Some(64692))),
            ),
            (
                "fe80::1%vEthernet (Default Switch)",
                Some(("fe80::1", None)),
            ),
            ("[fe80::1%25eth0]", Some(("fe80::1", None))),
            ("[fe80::1%eth0]x", None),
            ("1.2.3.4%eth0", None),
            ("[1.2.3.4%eth0]", None),
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

    fn items(lines: &[&str], split: Split) -> Vec<String> {
        let headers = map(lines);
        RevItems::new(
            LineIter::Map(headers.get_all("x-forwarded-for").iter()),
            split,
        )
        .map(|e| String::from_utf8(e.to_vec()).unwrap())
        .collect()
    }

    #[test]
    fn items_combine_lines_and_keep_empty_positions() {
        assert_eq!(
            items(&["a, b", "", ",c,,d ,", " e\t"], Split::Commas),
            ["e", "", "d", "", "c", "", "", "b", "a"]
        );
        // NGINX's `"$http_x_forwarded_port, $remote_port"` with no incoming port.
        assert_eq!(items(&[", 42342"], Split::Commas), ["42342", ""]);
        let empty = HeaderMap::new();
        let none = || {
            RevItems::new(
                LineIter::Map(empty.get_all("x-forwarded-for").iter()),
                Split::Commas,
            )
        };
        assert_eq!(none().next(), None);
        assert_eq!(none().count(), 0);
    }

    #[test]
    fn forwarded_items_split_outside_quotes() {
        let split = Split::CommasOutsideQuotes;
        assert_eq!(
            items(
                &["for=a, for=\"b,c\";proto=ws", "", "for=d ,, for=e"],
                split
            ),
            ["for=e", "", "for=d", "", "for=\"b,c\";proto=ws", "for=a"]
        );
        // An unclosed quote on the left swallows only what lies to its left.
        assert_eq!(
            items(&["for=1.1.1.1, for=\"2.2.2.2, for=3.3.3.3"], split),
            ["for=3.3.3.3", "for=1.1.1.1, for=\"2.2.2.2"]
        );
        // Escaped quotes inside a quoted string do not toggle.
        assert_eq!(
            items(&["x=\"a\\\",b\", for=1.1.1.1"], split),
            ["for=1.1.1.1", "x=\"a\\\",b\""]
        );
    }

    proptest::proptest! {
        #[test]
        fn ipv4_fast_path_agrees_with_the_general_parser(
            entry in "[0-9.:]{0,24}|([0-2]?[0-9]{0,3}\\.){3}[0-2]?[0-9]{1,2}(:[0-9]{0,6})?[a-z%:. ]{0,2}",
        ) {
            proptest::prop_assert_eq!(parse_addr(entry.as_bytes()), parse_addr_slow(entry.as_bytes()));
        }

        /// The dotted-quad parser of the fast path accepts exactly what the standard
        /// library's `Ipv4Addr` parser accepts, with the same result, on any bytes.
        #[test]
        fn ipv4_prefix_parser_agrees_with_std(
            entry in "[0-9.]{0,20}|([0-9]{1,4}\\.){3}[0-9]{1,4}|\\PC{0,16}",
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..20),
        ) {
            let whole = |s: &[u8]| parse_v4_prefix(s).filter(|(_, rest)| rest.is_empty()).map(|(ip, _)| ip);
            let std = |s: &[u8]| std::str::from_utf8(s).ok().and_then(|s| s.parse::<Ipv4Addr>().ok());
            proptest::prop_assert_eq!(whole(entry.as_bytes()), std(entry.as_bytes()));
            proptest::prop_assert_eq!(whole(&raw), std(&raw));
        }

        #[test]
        fn comma_count_agrees_with_a_byte_loop(
            bytes in proptest::collection::vec(proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b',')], 0..80),
        ) {
            let want = bytes.iter().filter(|&&b| b == b',').count();
            proptest::prop_assert_eq!(count_commas(&bytes), want);
        }

        #[test]
        fn word_scan_agrees_with_a_byte_loop(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b','), proptest::strategy::Just(b'"')],
                0..40,
            ),
            a in proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b',')],
            b in proptest::prop_oneof![proptest::num::u8::ANY, proptest::strategy::Just(b'"')],
        ) {
            let want = bytes.iter().rposition(|&x| x == a || x == b);
            proptest::prop_assert_eq!(rposition_either(&bytes, a, b), want);
        }

        #[test]
        fn counting_agrees_with_iterating(
            lines in proptest::collection::vec("[a ,\t\"\\\\]{0,30}", 0..5),
            skip in 0usize..8,
        ) {
            let headers = map(&lines.iter().map(String::as_str).collect::<Vec<_>>());
            for split in [Split::Commas, Split::CommasOutsideQuotes] {
                let items = || RevItems::new(LineIter::Map(headers.get_all("x-forwarded-for").iter()), split);
                let mut counted = items();
                let mut iterated = items();
                for _ in 0..skip {
                    counted.next();
                    iterated.next();
                }
                let mut by_next = 0;
                while iterated.next().is_some() {
                    by_next += 1;
                }
                proptest::prop_assert_eq!(counted.count(), by_next);
            }
        }

        /// The quote-aware scan agrees with a byte-by-byte one.
        #[test]
        fn quote_aware_scan_agrees_with_the_byte_by_byte_reference(s in "[a;,\"\\\\ ]{0,40}") {
            let reference = |s: &[u8], sep: u8| {
                let mut quoted = false;
                for i in (0..s.len()).rev() {
                    match s[i] {
                        b'"' if !is_escaped(s, i) => quoted = !quoted,
                        b if b == sep && !quoted => return Some(i),
                        _ => {}
                    }
                }
                None
            };
            for sep in [b',', b';'] {
                proptest::prop_assert_eq!(rfind_unquoted(s.as_bytes(), sep), reference(s.as_bytes(), sep));
            }
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
