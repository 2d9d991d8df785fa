//! RFC 7239 `Forwarded` header parsing, element by element from the right.
//!
//! Each header line is split into elements on commas outside quoted strings, scanning from
//! the right end of the line. Elements appended by the proxies nearest to this server are
//! therefore read first and are not affected by a malformed element further left (an
//! unclosed quote, a stray `;`): such an element only stops the walk when it is reached.

use http::header::{GetAll, HeaderValue, ValueIter};

use crate::parse::{Node, StopReason, parse_entry, trim_ows};

/// Non-empty, trimmed elements of all lines of a `Forwarded` header, right to left.
#[derive(Debug)]
pub(crate) struct RevElements<'a> {
    lines: ValueIter<'a, HeaderValue>,
    rest: &'a [u8],
}

impl<'a> RevElements<'a> {
    pub(crate) fn new(all: GetAll<'a, HeaderValue>) -> Self {
        Self {
            lines: all.iter(),
            rest: &[],
        }
    }
}

impl<'a> Iterator for RevElements<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            if self.rest.is_empty() {
                self.rest = self.lines.next_back()?.as_bytes();
                if self.rest.is_empty() {
                    continue;
                }
            }
            let (element, rest) = match rfind_unquoted(self.rest, b',') {
                Some(i) => (&self.rest[i + 1..], &self.rest[..i]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            let element = trim_ows(element);
            if !element.is_empty() {
                return Some(element);
            }
        }
    }
}

/// Whether the `"` at `i` is escaped by an odd number of backslashes before it.
fn is_escaped(s: &[u8], i: usize) -> bool {
    s[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// The last `sep` outside a quoted string, scanning from the right.
///
/// A `"` toggles quoting unless escaped (an odd number of backslashes before it). The scan
/// jumps between the bytes that matter: `sep` or `"` outside quotes, `"` inside.
fn rfind_unquoted(s: &[u8], sep: u8) -> Option<usize> {
    let mut end = s.len();
    loop {
        // Outside quotes.
        let i = s[..end].iter().rposition(|&b| b == sep || b == b'"')?;
        end = i;
        if s[i] == sep {
            return Some(i);
        }
        if is_escaped(s, i) {
            continue;
        }
        // Inside quotes: up to the opening quote; none means quoted to the start.
        loop {
            end = s[..end].iter().rposition(|&b| b == b'"')?;
            if !is_escaped(s, end) {
                break;
            }
        }
    }
}

/// The first `sep` outside a quoted string, scanning from the left; `Err` on an unclosed quote.
///
/// Inside a quoted string a backslash escapes the next byte. The scan jumps between the
/// bytes that matter: `sep` or `"` outside quotes, `\` or `"` inside.
fn find_unquoted(s: &[u8], sep: u8) -> Result<Option<usize>, ()> {
    let mut start = 0;
    loop {
        // Outside quotes.
        let Some(i) = s[start..].iter().position(|&b| b == sep || b == b'"') else {
            return Ok(None);
        };
        let i = start + i;
        if s[i] == sep {
            return Ok(Some(i));
        }
        // Inside quotes, after the opening quote at `i`.
        start = i + 1;
        loop {
            let Some(j) = s[start..].iter().position(|&b| b == b'\\' || b == b'"') else {
                return Err(());
            };
            let j = start + j;
            if s[j] == b'"' {
                start = j + 1;
                break;
            }
            // Skip the escaped byte; a backslash at the end leaves the quote open.
            start = j + 2;
            if start > s.len() {
                return Err(());
            }
        }
    }
}

const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Parses one element (`for=…;proto=…;by=…`) and returns its `for` node.
///
/// Parameter names are case-insensitive; values are tokens or quoted strings. The `for`
/// value is also accepted unquoted when it contains `:` or brackets (a common deviation),
/// since its meaning is unambiguous.
pub(crate) fn parse_element(element: &[u8]) -> Node {
    let mut node = None;
    let mut rest = element;
    loop {
        let (pair, next) = match find_unquoted(rest, b';') {
            Ok(Some(i)) => (&rest[..i], Some(&rest[i + 1..])),
            Ok(None) => (rest, None),
            Err(()) => return Node::Stop(StopReason::MalformedElement),
        };
        let pair = trim_ows(pair);
        if !pair.is_empty() {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                return Node::Stop(StopReason::MalformedElement);
            };
            let (name, value) = (&pair[..eq], &pair[eq + 1..]);
            if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                return Node::Stop(StopReason::MalformedElement);
            }
            let Some(value) = unquote(value) else {
                return Node::Stop(StopReason::MalformedElement);
            };
            if name.eq_ignore_ascii_case(b"for") {
                if node.is_some() {
                    return Node::Stop(StopReason::MissingFor);
                }
                node = Some(parse_node(value));
            }
        }
        match next {
            Some(next) => rest = next,
            None => break,
        }
    }
    node.unwrap_or(Node::Stop(StopReason::MissingFor))
}

/// The content of a value: a quoted string without its quotes (escapes are kept; a node
/// never contains one, so an escaped node is malformed), or a token (any visible ASCII but
/// `"`, tolerating unquoted `[v6]:port`).
fn unquote(value: &[u8]) -> Option<&[u8]> {
    if let Some(inner) = value.strip_prefix(b"\"") {
        let mut escaped = false;
        for (i, &b) in inner.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => return (i + 1 == inner.len()).then_some(&inner[..i]),
                _ => {}
            }
        }
        return None;
    }
    if value.is_empty() || !value.iter().all(|&b| b.is_ascii_graphic() && b != b'"') {
        return None;
    }
    Some(value)
}

/// Parses a node: `unknown`, `_obfuscated`, or an address with an optional port, where the
/// port may itself be obfuscated (`"[2001:db8::1]:_p1"` is the address with no port).
fn parse_node(value: &[u8]) -> Node {
    if value.eq_ignore_ascii_case(b"unknown") {
        return Node::Stop(StopReason::UnknownNode);
    }
    if value.first() == Some(&b'_') {
        return Node::Stop(StopReason::ObfuscatedNode);
    }
    // Obfuscated port: keep the address, drop the port.
    if let Some(i) = value.iter().rposition(|&b| b == b':') {
        let port = &value[i + 1..];
        if port.first() == Some(&b'_') {
            if port.len() < 2 || !port[1..].iter().all(|&b| is_obf_char(b)) {
                return Node::Stop(StopReason::Malformed);
            }
            let addr = &value[..i];
            let bracketed = addr.first() == Some(&b'[') && addr.last() == Some(&b']');
            let v4 = !addr.contains(&b':');
            if !(bracketed || v4) {
                return Node::Stop(StopReason::Malformed);
            }
            return match parse_entry(addr) {
                Node::Ip(ip, _) => Node::Ip(ip, None),
                stop => stop,
            };
        }
    }
    parse_entry(value)
}

const fn is_obf_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node(s: &str) -> Node {
        parse_element(s.as_bytes())
    }

    #[test]
    fn element_nodes() {
        assert_eq!(node("for=192.0.2.60"), Node::Ip(ip("192.0.2.60"), None));
        assert_eq!(
            node("for=192.0.2.60;proto=http;by=203.0.113.43"),
            Node::Ip(ip("192.0.2.60"), None)
        );
        assert_eq!(
            node("proto=wss; FOR=\"[2001:db8:cafe::17]:4711\""),
            Node::Ip(ip("2001:db8:cafe::17"), Some(4711))
        );
        assert_eq!(
            node("For=\"[2001:db8::1]\""),
            Node::Ip(ip("2001:db8::1"), None)
        );
        assert_eq!(
            node("for=\"192.0.2.43:47011\""),
            Node::Ip(ip("192.0.2.43"), Some(47011))
        );
        assert_eq!(
            node("for=\"192.0.2.43:_p1\""),
            Node::Ip(ip("192.0.2.43"), None)
        );
        assert_eq!(
            node("for=\"[2001:db8::1]:_p1\""),
            Node::Ip(ip("2001:db8::1"), None)
        );
        assert_eq!(
            node("for=[2001:db8::1]:8443"),
            Node::Ip(ip("2001:db8::1"), Some(8443))
        );
        assert_eq!(node("for=unknown"), Node::Stop(StopReason::UnknownNode));
        assert_eq!(node("for=\"UNKNOWN\""), Node::Stop(StopReason::UnknownNode));
        assert_eq!(node("for=_hidden"), Node::Stop(StopReason::ObfuscatedNode));
        assert_eq!(
            node("for=\"_SEVKISEK\""),
            Node::Stop(StopReason::ObfuscatedNode)
        );
        assert_eq!(
            node("proto=https;by=10.0.0.1"),
            Node::Stop(StopReason::MissingFor)
        );
        assert_eq!(
            node("for=1.1.1.1;for=2.2.2.2"),
            Node::Stop(StopReason::MissingFor)
        );
        assert_eq!(
            node("for=\"1.1.1.1"),
            Node::Stop(StopReason::MalformedElement)
        );
        assert_eq!(node("for"), Node::Stop(StopReason::MalformedElement));
        assert_eq!(node("for="), Node::Stop(StopReason::MalformedElement));
        assert_eq!(
            node("f r=1.1.1.1"),
            Node::Stop(StopReason::MalformedElement)
        );
        assert_eq!(node("for=example.com"), Node::Stop(StopReason::Malformed));
        assert_eq!(
            node("for=\"2001:db8::1:_p\""),
            Node::Stop(StopReason::Malformed)
        );
        // Empty pairs are allowed by the grammar; quoted `;` does not split.
        assert_eq!(
            node("for=\"1.1.1.1\"x"),
            Node::Stop(StopReason::MalformedElement)
        );
        assert_eq!(node("for=\"1.1.1\\.1\""), Node::Stop(StopReason::Malformed));
        assert_eq!(
            node("x=\"a\\\"b\";for=1.1.1.1"),
            Node::Ip(ip("1.1.1.1"), None)
        );
        assert_eq!(
            node(";for=1.1.1.1;;host=\"a;b\";"),
            Node::Ip(ip("1.1.1.1"), None)
        );
    }

    fn elements(lines: &[&str]) -> Vec<String> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("forwarded", line.parse().unwrap());
        }
        RevElements::new(headers.get_all("forwarded"))
            .map(|e| String::from_utf8(e.to_vec()).unwrap())
            .collect()
    }

    /// The byte-by-byte scans the faster ones must agree with.
    fn rfind_unquoted_reference(s: &[u8], sep: u8) -> Option<usize> {
        let mut quoted = false;
        for i in (0..s.len()).rev() {
            match s[i] {
                b'"' if !is_escaped(s, i) => quoted = !quoted,
                b if b == sep && !quoted => return Some(i),
                _ => {}
            }
        }
        None
    }

    fn find_unquoted_reference(s: &[u8], sep: u8) -> Result<Option<usize>, ()> {
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in s.iter().enumerate() {
            if quoted {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => quoted = false,
                    _ => {}
                }
            } else if b == b'"' {
                quoted = true;
            } else if b == sep {
                return Ok(Some(i));
            }
        }
        if quoted { Err(()) } else { Ok(None) }
    }

    proptest::proptest! {
        #[test]
        fn quote_aware_scans_agree_with_the_byte_by_byte_reference(s in "[a;,\"\\\\ ]{0,16}") {
            for sep in [b',', b';'] {
                proptest::prop_assert_eq!(
                    rfind_unquoted(s.as_bytes(), sep),
                    rfind_unquoted_reference(s.as_bytes(), sep)
                );
                proptest::prop_assert_eq!(
                    find_unquoted(s.as_bytes(), sep),
                    find_unquoted_reference(s.as_bytes(), sep)
                );
            }
        }
    }

    #[test]
    fn splits_elements_from_the_right_outside_quotes() {
        assert_eq!(
            elements(&["for=a, for=\"b,c\";proto=ws", "", "for=d ,, for=e"]),
            ["for=e", "for=d", "for=\"b,c\";proto=ws", "for=a"]
        );
        // An unclosed quote on the left swallows only what lies to its left.
        assert_eq!(
            elements(&["for=1.1.1.1, for=\"2.2.2.2, for=3.3.3.3"]),
            ["for=3.3.3.3", "for=1.1.1.1, for=\"2.2.2.2"]
        );
        // Escaped quotes inside a quoted string do not toggle.
        assert_eq!(
            elements(&["x=\"a\\\",b\", for=1.1.1.1"]),
            ["for=1.1.1.1", "x=\"a\\\",b\""]
        );
    }
}
