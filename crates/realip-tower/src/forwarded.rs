//! RFC 7239 `Forwarded` elements: parameters, values and the `for` node.
//!
//! Elements are split from the right of each line by [`RevItems`](crate::parse::RevItems)
//! (commas outside quoted strings), so the elements appended by the proxies nearest to this
//! server are read first and are not affected by a malformed element further left (an
//! unclosed quote, a stray `;`): such an element only stops the walk when it is reached.
//!
//! Values follow RFC 7230 §3.2.6: a token, or a quoted-string whose quoted-pairs are
//! unescaped (`"192.0.2.\3"` is `192.0.2.3`). A node follows RFC 7239 §6 exactly:
//!
//! ```text
//! node     = nodename [ ":" node-port ]
//! nodename = IPv4address / "[" IPv6address "]" / "unknown" / obfnode
//! obfnode  = "_" 1*( ALPHA / DIGIT / "." / "_" / "-")
//! node-port = port / obfport     ; port = 1*5DIGIT, obfport = "_" 1*( ... )
//! ```
//!
//! so IPv6 is only `"[v6]"` or `"[v6]:port"` (quoted, as `:` and `[` are not token
//! characters); `for=2001:db8::1`, `for="2001:db8::1"` and `for="2001:db8::1:8080"` are
//! malformed. A zone inside the brackets (`"[fe80::1%eth0]"`) is dropped.

use std::net::{IpAddr, Ipv4Addr};

use crate::parse::{Node, StopReason, parse_port_bytes, parse_v4_prefix, split_bracketed};

/// `tchar` (RFC 7230 §3.2.6): a byte of a token.
const TCHAR: u8 = 1;
/// `qdtext` or the byte of a `quoted-pair`: HTAB, SP, VCHAR, obs-text (`"` and `\` are
/// told apart before this class is looked at).
const TEXT: u8 = 2;
/// The classes of each byte, so that a class check is one lookup.
const CLASSES: [u8; 256] = {
    let mut classes = [0; 256];
    let mut b = 0;
    while b < 256 {
        let byte = b as u8;
        if is_tchar(byte) {
            classes[b] |= TCHAR;
        }
        if matches!(byte, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff) {
            classes[b] |= TEXT;
        }
        b += 1;
    }
    classes
};

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

fn has_class(b: u8, class: u8) -> bool {
    CLASSES[usize::from(b)] & class != 0
}

/// Parses one element (`for=…;proto=…;by=…`) and returns its `for` node.
///
/// ```text
/// forwarded-element = [ forwarded-pair ] *( ";" [ forwarded-pair ] )
/// forwarded-pair    = token "=" value          ; value = token / quoted-string
/// ```
///
/// with optional whitespace around each pair. Parameter names are case-insensitive
/// tokens. The pairs are checked left to right in one pass over the bytes, and the first
/// fault decides: a pair that is not `token=value` makes the element
/// [`StopReason::MalformedElement`], a second `for` [`StopReason::MissingFor`]. The `for`
/// node is parsed once the element is known to be well formed (a plain IPv4 address as it
/// is read). Parsing allocates only to unescape a quoted `for` value that holds a
/// quoted-pair.
pub(crate) fn parse_element(element: &[u8]) -> Node {
    const MALFORMED_ELEMENT: Node = Node::Stop(StopReason::MalformedElement);
    let ows = |i: &mut usize| {
        while element.get(*i).is_some_and(|&b| b == b' ' || b == b'\t') {
            *i += 1;
        }
    };
    let tokens = |i: &mut usize| {
        while element.get(*i).is_some_and(|&b| has_class(b, TCHAR)) {
            *i += 1;
        }
    };
    let mut node = None;
    let mut i = 0;
    loop {
        ows(&mut i);
        match element.get(i) {
            None => break,
            // An empty pair.
            Some(b';') => {
                i += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = i;
        tokens(&mut i);
        if i == name || element.get(i) != Some(&b'=') {
            return MALFORMED_ELEMENT;
        }
        let is_for = element[name..i].eq_ignore_ascii_case(b"for");
        i += 1;
        // The common `for=a.b.c.d`, read as an address at once: it is the whole token when no
        // token byte follows it.
        let v4 = if is_for {
            parse_v4_prefix(&element[i..])
                .filter(|(_, after)| !after.first().is_some_and(|&b| has_class(b, TCHAR)))
        } else {
            None
        };
        let value = if let Some((ip, after)) = v4 {
            i = element.len() - after.len();
            Value::Ipv4(ip)
        } else if element.get(i) == Some(&b'"') {
            // quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
            i += 1;
            let inner = i;
            let mut escaped = false;
            loop {
                match element.get(i) {
                    Some(b'"') => break,
                    Some(b'\\') => match element.get(i + 1) {
                        Some(&b) if has_class(b, TEXT) => {
                            escaped = true;
                            i += 2;
                        }
                        // A control after the backslash, or the end: no closing quote.
                        _ => return MALFORMED_ELEMENT,
                    },
                    Some(&b) if has_class(b, TEXT) => i += 1,
                    _ => return MALFORMED_ELEMENT,
                }
            }
            let value = Value::Quoted {
                inner: &element[inner..i],
                escaped,
            };
            i += 1;
            value
        } else {
            let token = i;
            tokens(&mut i);
            if i == token {
                return MALFORMED_ELEMENT;
            }
            Value::Token(&element[token..i])
        };
        // The value ends the pair.
        ows(&mut i);
        match element.get(i) {
            None => {}
            Some(b';') => i += 1,
            Some(_) => return MALFORMED_ELEMENT,
        }
        if is_for {
            if node.is_some() {
                return Node::Stop(StopReason::MissingFor);
            }
            node = Some(value);
        }
    }
    match node {
        Some(value) => value.node(),
        None => Node::Stop(StopReason::MissingFor),
    }
}

/// A parameter value, checked but not yet unescaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    /// A token: the bytes as they are.
    Token(&'a [u8]),
    /// A token that is a dotted-quad IPv4 address, parsed while it was read.
    Ipv4(Ipv4Addr),
    /// The inside of a quoted-string, quoted-pairs still escaped.
    Quoted {
        inner: &'a [u8],
        /// Whether `inner` holds a quoted-pair.
        escaped: bool,
    },
}

impl Value<'_> {
    /// The node the value names: its content (a token as it is, a quoted-string without
    /// its quotes and with each quoted-pair replaced by the byte it escapes) parsed by
    /// [`parse_node`].
    fn node(self) -> Node {
        match self {
            Self::Ipv4(ip) => Node::Ip(IpAddr::V4(ip), None),
            Self::Token(inner)
            | Self::Quoted {
                inner,
                escaped: false,
            } => parse_node(inner),
            Self::Quoted {
                inner,
                escaped: true,
            } => parse_node(&unescape(inner)),
        }
    }
}

/// The inside of a quoted-string with each quoted-pair replaced by the byte it escapes.
fn unescape(inner: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if b == b'\\' && !escaped {
            escaped = true;
        } else {
            out.push(b);
            escaped = false;
        }
    }
    out
}

/// Parses a node (RFC 7239 §6, see the module docs): an address with an optional port,
/// `unknown`, or an obfuscated identifier; an obfuscated port (`"[2001:db8::1]:_p1"`) is
/// dropped, keeping the address.
fn parse_node(node: &[u8]) -> Node {
    const MALFORMED: Node = Node::Stop(StopReason::Malformed);
    // The name ends at `]` for IPv6, else at the first `:`.
    let (ip, after) = if node.first() == Some(&b'[') {
        match split_bracketed(node) {
            Some((ip, after)) => (Some(IpAddr::V6(ip)), after),
            None => return MALFORMED,
        }
    } else if let Some((ip, after @ ([] | [b':', ..]))) = parse_v4_prefix(node) {
        // The common `a.b.c.d` and `a.b.c.d:port`, without looking for the `:` first.
        (Some(IpAddr::V4(ip)), after)
    } else {
        let colon = node.iter().position(|&b| b == b':').unwrap_or(node.len());
        let name = &node[..colon];
        let ip = match parse_v4_prefix(name) {
            Some((ip, [])) => Some(IpAddr::V4(ip)),
            _ if name.eq_ignore_ascii_case(b"unknown") => None,
            _ if is_obfuscated(name) => return port_or(node, colon, StopReason::ObfuscatedNode),
            _ => return MALFORMED,
        };
        (ip, &node[colon..])
    };
    let port = match after {
        [] => None,
        [b':', port @ ..] if is_obfuscated(port) => None,
        [b':', port @ ..] => match parse_port_bytes(port) {
            Some(port) => port,
            None => return MALFORMED,
        },
        _ => return MALFORMED,
    };
    match ip {
        Some(ip) => Node::Ip(ip, port),
        None => Node::Stop(StopReason::UnknownNode),
    }
}

/// `reason` when the rest of `node` after `at` is empty or a valid `:node-port`, else
/// malformed.
fn port_or(node: &[u8], at: usize, reason: StopReason) -> Node {
    let valid = match &node[at..] {
        [] => true,
        [b':', port @ ..] => is_obfuscated(port) || parse_port_bytes(port).is_some(),
        _ => false,
    };
    Node::Stop(if valid { reason } else { StopReason::Malformed })
}

/// `"_" 1*( ALPHA / DIGIT / "." / "_" / "-" )`: an obfuscated node name or port.
fn is_obfuscated(s: &[u8]) -> bool {
    match s {
        [b'_', rest @ ..] => {
            !rest.is_empty()
                && rest
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        }
        _ => false,
    }
}

/// The element parser as it was before the one-pass parser above (split at `;`, then each
/// pair checked on its own), kept to check that the two give the same answer on any input.
#[cfg(test)]
pub(crate) mod reference {
    use std::borrow::Cow;

    use super::{is_tchar, parse_node, unescape};
    use crate::parse::{Node, StopReason, trim_ows};

    /// The first `sep` outside a quoted string, scanning from the left; `Err` on an unclosed quote.
    ///
    /// Inside a quoted string a backslash escapes the next byte. The scan jumps between the
    /// bytes that matter: `sep` or `"` outside quotes, `\` or `"` inside.
    pub(super) fn find_unquoted(s: &[u8], sep: u8) -> Result<Option<usize>, ()> {
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

    /// Parses one element (`for=…;proto=…;by=…`) and returns its `for` node.
    ///
    /// Parameter names are case-insensitive tokens; values are tokens or quoted-strings.
    /// Parsing allocates only to unescape a quoted `for` value that holds a quoted-pair.
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
                let Some(value) = parse_value(value) else {
                    return Node::Stop(StopReason::MalformedElement);
                };
                if name.eq_ignore_ascii_case(b"for") {
                    if node.is_some() {
                        return Node::Stop(StopReason::MissingFor);
                    }
                    node = Some(parse_node(&value.unescape()));
                }
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
        node.unwrap_or(Node::Stop(StopReason::MissingFor))
    }

    /// A parameter value, checked but not yet unescaped.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Value<'a> {
        /// A token: the bytes as they are.
        Token(&'a [u8]),
        /// The inside of a quoted-string, quoted-pairs still escaped.
        Quoted(&'a [u8]),
    }

    impl<'a> Value<'a> {
        /// The value's content: a token as it is, a quoted-string without its quotes and with
        /// each quoted-pair replaced by the byte it escapes.
        fn unescape(self) -> Cow<'a, [u8]> {
            match self {
                Self::Token(token) => Cow::Borrowed(token),
                Self::Quoted(inner) if !inner.contains(&b'\\') => Cow::Borrowed(inner),
                Self::Quoted(inner) => Cow::Owned(unescape(inner)),
            }
        }
    }

    /// `token / quoted-string` (RFC 7230 §3.2.6):
    ///
    /// ```text
    /// quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    /// qdtext        = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
    /// quoted-pair   = "\" ( HTAB / SP / VCHAR / obs-text )
    /// ```
    fn parse_value(value: &[u8]) -> Option<Value<'_>> {
        let Some(quoted) = value.strip_prefix(b"\"") else {
            let token = !value.is_empty() && value.iter().all(|&b| is_tchar(b));
            return token.then_some(Value::Token(value));
        };
        let mut escaped = false;
        for (i, &b) in quoted.iter().enumerate() {
            let text = matches!(b, b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff);
            match b {
                _ if escaped => {
                    if !text {
                        return None;
                    }
                    escaped = false;
                }
                b'\\' => escaped = true,
                // The closing quote must end the value.
                b'"' => return (i + 1 == quoted.len()).then_some(Value::Quoted(&quoted[..i])),
                _ if !text => return None,
                _ => {}
            }
        }
        // No closing quote.
        None
    }

    /// `Forwarded` elements as senders write them and as they go wrong: pairs of known and
    /// odd names, token values, quoted nodes (IPv4 and bracketed IPv6 with ports,
    /// obfuscated, `unknown`) with quoted-pairs, quoted strings holding `,`, `;`, `=`
    /// and escaped quotes, unclosed quotes, controls, and whitespace in and around pairs.
    pub(crate) fn element() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let ows = prop_oneof![4 => Just("".to_owned()), 1 => "[ \t]{1,2}"];
        let name = prop_oneof![
            5 => Just("for".to_owned()),
            1 => Just("FOR".to_owned()),
            1 => Just("For".to_owned()),
            3 => Just("proto".to_owned()),
            2 => Just("by".to_owned()),
            1 => Just("host".to_owned()),
            1 => "[a-z!#_~]{1,4}",
            1 => "|f r|\"for\"|for |f,r",
        ];
        let node = prop_oneof![
            "(10\\.[0-3]\\.0\\.1|203\\.0\\.113\\.7|192\\.0\\.2\\.[0-9]{1,3})(:[0-9]{1,6}|:_[a-z0-9]{0,3})?",
            "\\[(2001:db8::[0-9a-f]{1,4}|fe80::1%[a-z0-9 ]{0,4}|10\\.0\\.0\\.1|::)\\]?(:[0-9]{0,6}|:_p1)?",
            "2001:db8::[0-9a-f]{1,4}(:[0-9]{1,4})?",
            "unknown(:[0-9]{1,4}|:_x)?|UNKNOWN|_[a-zA-Z0-9._-]{0,6}(:_[a-z]{1,2}|:[0-9]{1,3})?",
        ];
        let quoted_node =
            (node.clone(), proptest::collection::vec(any::<bool>(), 8)).prop_map(|(node, mask)| {
                let escaped: String = node
                    .chars()
                    .zip(mask.iter().cycle())
                    .map(|(c, &escape)| {
                        if escape {
                            format!("\\{c}")
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                format!("\"{escaped}\"")
            });
        let value = prop_oneof![
            4 => "(10\\.[0-3]\\.0\\.1|203\\.0\\.113\\.7|192\\.0\\.2\\.[0-9]{1,3}|unknown|_[a-zA-Z0-9._-]{1,4})",
            1 => node,
            // An address followed by more token bytes: one token, not an address.
            1 => "(10\\.0\\.0\\.1|192\\.0\\.2\\.[0-9]{1,4})([.a-z0-9_!-]|\\.[0-9]{1,3})",
            6 => quoted_node,
            1 => "[a-zA-Z0-9_.-]{0,6}",
            1 => "\"([a-z0-9 ,;=:\\[\\]\t\u{1}\u{7f}\u{e9}]|\\\\[ -~\u{1}]|\\\\\"){0,6}\"?[a-z\" ]{0,1}",
        ];
        let eq = prop_oneof![40 => Just("=".to_owned()), 1 => Just("".to_owned()), 1 => Just(" = ".to_owned()), 1 => Just("==".to_owned())];
        let pair =
            (ows.clone(), name, eq, value, ows).prop_map(|(before, name, eq, value, after)| {
                format!("{before}{name}{eq}{value}{after}")
            });
        let sep = prop_oneof![40 => Just(";".to_owned()), 1 => Just(";;".to_owned()), 1 => Just(" ; ".to_owned()), 1 => Just(",".to_owned())];
        (proptest::collection::vec((pair, sep), 1..4), "[ \t;]{0,1}").prop_map(|(pairs, end)| {
            let last = pairs.len().saturating_sub(1);
            let mut element = String::new();
            for (i, (pair, sep)) in pairs.into_iter().enumerate() {
                element.push_str(&pair);
                if i < last {
                    element.push_str(&sep);
                }
            }
            element + &end
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn node(s: &str) -> Node {
        parse_element(s.as_bytes())
    }

    const MALFORMED: Node = Node::Stop(StopReason::Malformed);
    const MALFORMED_ELEMENT: Node = Node::Stop(StopReason::MalformedElement);

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
        assert_eq!(node("for=unknown"), Node::Stop(StopReason::UnknownNode));
        assert_eq!(node("for=\"UNKNOWN\""), Node::Stop(StopReason::UnknownNode));
        assert_eq!(
            node("for=\"unknown:8080\""),
            Node::Stop(StopReason::UnknownNode)
        );
        assert_eq!(node("for=_hidden"), Node::Stop(StopReason::ObfuscatedNode));
        assert_eq!(
            node("for=\"_SEVKISEK\""),
            Node::Stop(StopReason::ObfuscatedNode)
        );
        assert_eq!(
            node("for=\"_gazonk:_p1\""),
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
        assert_eq!(node("for=\"1.1.1.1"), MALFORMED_ELEMENT);
        assert_eq!(node("for"), MALFORMED_ELEMENT);
        assert_eq!(node("for="), MALFORMED_ELEMENT);
        assert_eq!(node("f r=1.1.1.1"), MALFORMED_ELEMENT);
        assert_eq!(node("for=example.com"), MALFORMED);
        assert_eq!(node("for=\"1.1.1.1\"x"), MALFORMED_ELEMENT);
        // Empty pairs are allowed by the grammar; quoted `;` does not split.
        assert_eq!(
            node("x=\"a\\\"b\";for=1.1.1.1"),
            Node::Ip(ip("1.1.1.1"), None)
        );
        assert_eq!(
            node(";for=1.1.1.1;;host=\"a;b\";"),
            Node::Ip(ip("1.1.1.1"), None)
        );
    }

    /// RFC 7239 §6: IPv6 only as `"[v6]"` or `"[v6]:port"`; everything else is malformed
    /// and stops the walk.
    #[test]
    fn nodes_follow_rfc7239_section_6_exactly() {
        for bad in [
            // The sender meant `"[2001:db8::1]:8080"`; read as an address it is another host.
            "for=\"2001:db8::1:8080\"",
            "for=\"2001:db8::abcd\"",
            "for=\"::ffff:192.0.2.1\"",
            "for=\"2001:db8::1:_p\"",
            "for=\"[2001:db8::1]8080\"",
            "for=\"[2001:db8::1]:\"",
            "for=\"[2001:db8::1]:65536\"",
            "for=\"[2001:db8::1]:+80\"",
            "for=\"[2001:db8::1\"",
            "for=\"[192.0.2.1]\"",
            "for=\"192.0.2.1:\"",
            "for=\"192.0.2.1:80:81\"",
            "for=\"192.0.2.1:_\"",
            "for=\"192.0.2.01\"",
            "for=\"_\"",
            "for=\"_a b\"",
            "for=\"_hidden:x\"",
            "for=\"unknown:\"",
            "for=\" 192.0.2.1\"",
            "for=\"\"",
        ] {
            assert_eq!(node(bad), MALFORMED, "{bad}");
        }
        // Not a token (`:`, `[`, `]` are not token characters) and not quoted.
        for bad in [
            "for=2001:db8::abcd",
            "for=[2001:db8::1]",
            "for=[2001:db8::1]:8443",
            "for=192.0.2.1:80",
            "for=unknown:80",
            "for=a\"b",
        ] {
            assert_eq!(node(bad), MALFORMED_ELEMENT, "{bad}");
        }
    }

    /// RFC 7230 §3.2.6 quoted-strings: quoted-pairs are unescaped, controls are not text.
    #[test]
    fn quoted_strings_are_unescaped() {
        assert_eq!(node("for=\"192.0.2.\\3\""), Node::Ip(ip("192.0.2.3"), None));
        assert_eq!(
            node("for=\"\\[2001:db8::1\\]:\\8\\0\""),
            Node::Ip(ip("2001:db8::1"), Some(80))
        );
        // An escaped backslash is a backslash: not an address.
        assert_eq!(node("for=\"192.0.2.3\\\\\""), MALFORMED);
        // A zone inside the brackets is dropped, whatever its text.
        assert_eq!(
            node("for=\"[fe80::1%vEthernet (Default Switch)]:443\""),
            Node::Ip(ip("fe80::1"), Some(443))
        );
        assert_eq!(
            node("for=\"[fe80::1%25eth0]\""),
            Node::Ip(ip("fe80::1"), None)
        );
        // A backslash before the closing quote escapes it: the string is unclosed.
        assert_eq!(node("for=\"192.0.2.3\\\""), MALFORMED_ELEMENT);
        assert_eq!(node("for=\"192.0.2.3\\\u{7f}\""), MALFORMED_ELEMENT);
        assert_eq!(node("for=\"192.0.2.3\u{1}\""), MALFORMED_ELEMENT);
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
        /// The one-pass parser gives the answer of the split-then-check one on every
        /// element, well formed or not.
        #[test]
        fn one_pass_parser_agrees_with_the_reference(
            element in reference::element(),
            raw in "[fo FrR=;,\"\\\\\t0-9.:\\[\\]_a-z\u{1}\u{7f}]{0,24}",
        ) {
            for s in [&element, &raw] {
                proptest::prop_assert_eq!(
                    parse_element(s.as_bytes()),
                    reference::parse_element(s.as_bytes()),
                    "{:?}",
                    s
                );
            }
        }

        /// A quoted-pair means the byte it escapes: escaping any bytes of a quoted node
        /// never changes what it names.
        #[test]
        fn quoted_pairs_mean_the_bytes_they_escape(
            node in "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}(:[0-9]{1,5})?|\\[[0-9a-f:]{2,12}(%[ -~&&[^\\]\"\\\\]]{1,8})?\\](:[0-9_a-z]{1,5})?|unknown|_[a-z.]{1,6}",
            mask in proptest::collection::vec(proptest::bool::ANY, 40),
        ) {
            let escaped: String = node
                .chars()
                .zip(mask.iter().cycle())
                .map(|(c, &escape)| if escape { format!("\\{c}") } else { c.to_string() })
                .collect();
            let plain = parse_element(format!("for=\"{node}\"").as_bytes());
            let unescaped = parse_element(format!("for=\"{escaped}\"").as_bytes());
            proptest::prop_assert_eq!(plain, unescaped, "{}", escaped);
        }

        #[test]
        fn quote_aware_scan_agrees_with_the_byte_by_byte_reference(s in "[a;,\"\\\\ ]{0,16}") {
            for sep in [b',', b';'] {
                proptest::prop_assert_eq!(
                    reference::find_unquoted(s.as_bytes(), sep),
                    find_unquoted_reference(s.as_bytes(), sep)
                );
            }
        }
    }
}
