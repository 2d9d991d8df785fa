//! The pure resolution step: configuration + header lines + transport peer → [`Resolution`].
//!
//! The header's lines are split into items from the right ([`RevItems`]); each strategy
//! walks them, then the port is looked up at the chosen position.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use realip_core::{AddrSource, ClientAddr, Live, LogThrottle, TrustedProxies};

use crate::forwarded::parse_element;
use crate::lines::{LineIter, Lines, PortHeader, may_contain};
use crate::parse::{Node, RevItems, Split, StopReason, parse_entry, parse_port_bytes, trim_ows};
use crate::peer::Peer;
use crate::resolution::{Fallback, HeaderChoice, PortSource, Resolution};
use crate::strategy::Strategy;

/// Resolution settings (shared by the layer through an `Arc`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) strategy: Strategy,
    pub(crate) header: HeaderName,
    pub(crate) source: AddrSource,
    pub(crate) port_header: Option<HeaderName>,
    pub(crate) trusted: Arc<TrustedProxies>,
    /// Replaces `trusted` when set: loaded per request.
    pub(crate) live_trusted: Option<Live<TrustedProxies>>,
    pub(crate) websocket_only: bool,
    pub(crate) unconditional: bool,
    /// Throttles the `warn` lines of rejected headers and of walks stopped early, each on its
    /// own ([`RealIpLayer::rejection_log`](crate::RealIpLayer::rejection_log)).
    pub(crate) rejected_log: LogThrottle,
    pub(crate) stopped_log: LogThrottle,
}

impl Config {
    pub(crate) fn new(strategy: Strategy, trusted: TrustedProxies) -> Self {
        let header = strategy.default_header();
        let port_header = match strategy {
            Strategy::Forwarded { .. } => None,
            _ => Some(HeaderName::from_static("x-forwarded-port")),
        };
        Self {
            strategy,
            source: AddrSource::header(header.as_str()),
            header,
            port_header,
            trusted: Arc::new(trusted),
            live_trusted: None,
            websocket_only: false,
            unconditional: false,
            rejected_log: LogThrottle::default(),
            stopped_log: LogThrottle::default(),
        }
    }

    pub(crate) fn set_header(&mut self, header: HeaderName) {
        self.source = AddrSource::header(header.as_str());
        self.header = header;
    }
}

/// Resolves the client of one request (the WebSocket-only setting is applied by the
/// caller, which knows the method).
///
/// The header is found once ([`Lines::find`]); the walk counts the items it passes and then
/// only counts (without parsing) the ones to the left of where it stopped, for
/// [`HeaderChoice::entries`]. The port header is looked up only when the chosen entry has no
/// port and the map may hold it.
pub(crate) fn resolve(config: &Config, headers: &HeaderMap, peer: Option<&Peer<'_>>) -> Resolution {
    let (all, port_header) = Lines::find(headers, &config.header, config.port_header.as_ref());
    let mut lines = all.iter();
    let Some(first_line) = lines.next() else {
        return Resolution::fallback(peer, Fallback::NoHeader);
    };
    if config.strategy == Strategy::TrustedHops(0) {
        // Decided before the trust check: a header that is ignored by configuration is not
        // a rejected (possibly forged) one, whoever sent it.
        return Resolution::fallback(peer, Fallback::HeadersIgnored);
    }
    // One load per request: the whole decision uses one set, whatever a reload does.
    let live = config.live_trusted.as_ref().map(Live::load);
    let trusted: &TrustedProxies = live.as_deref().unwrap_or(&*config.trusted);
    let peer_trusted = match peer {
        Some(peer) => peer.is_trusted(trusted),
        None => false,
    };
    if !(peer_trusted || config.unconditional) {
        let fallback = match peer {
            Some(_) => Fallback::UntrustedPeer,
            None => Fallback::NoTransportPeer,
        };
        return Resolution::fallback(peer, fallback);
    }
    let entries = || RevItems::new(all.iter(), Split::Commas);
    let walk = match config.strategy {
        Strategy::TrustedProxies { recursive } => {
            walk_trusted(entries(), parse_entry, recursive, trusted)
        }
        Strategy::Forwarded { recursive } => walk_trusted(
            RevItems::new(all.iter(), Split::CommasOutsideQuotes),
            parse_element,
            recursive,
            trusted,
        ),
        Strategy::TrustedHops(hops) => walk_hops(entries, hops),
        Strategy::Leftmost => walk_leftmost(entries()),
        Strategy::SingleValue => {
            if lines.next().is_some() {
                let lines = 2 + lines.count();
                return Resolution::fallback(peer, Fallback::MultipleLines(lines));
            }
            walk_single(first_line.as_bytes())
        }
    };
    match walk {
        Walk::Found(found) => {
            let Found {
                ip,
                port,
                position,
                entries,
                stopped,
            } = found;
            let single = config.strategy == Strategy::SingleValue;
            let (port, port_source) = match port {
                Some(port) => (Some(port), PortSource::Entry),
                None => match header_port(config, headers, port_header, single, position) {
                    Some(port) => (Some(port), PortSource::PortHeader),
                    None => (None, PortSource::None),
                },
            };
            let choice = HeaderChoice {
                header: config.header.clone(),
                position,
                entries,
                port: port_source,
                stopped,
            };
            let client = ClientAddr::new(ip.get(), port, config.source.clone());
            Resolution::header(client, peer, choice)
        }
        Walk::Empty => Resolution::fallback(peer, Fallback::NoHeader),
        Walk::Invalid(reason) => Resolution::fallback(peer, Fallback::Invalid(reason)),
        Walk::TooFewHops { entries, hops } => {
            Resolution::fallback(peer, Fallback::TooFewHops { entries, hops })
        }
    }
}

/// The entry that decided: its position from the right and the number of positions of the
/// whole header, empty items included.
#[derive(Debug, PartialEq, Eq)]
struct Found {
    ip: PackedIp,
    port: Option<u16>,
    position: usize,
    entries: usize,
    stopped: Option<StopReason>,
}

/// An address as a flag and a 128-bit word while the walk and the port lookup run. An
/// [`IpAddr`] is an enum of byte arrays: kept across calls, it is split into its bytes, each
/// saved and moved on its own; this is two registers, and becomes an `IpAddr` once, in the
/// [`ClientAddr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PackedIp {
    v4: bool,
    bits: u128,
}

impl PackedIp {
    #[inline]
    fn new(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self {
                v4: true,
                bits: u128::from(v4.to_bits()),
            },
            IpAddr::V6(v6) => Self {
                v4: false,
                bits: v6.to_bits(),
            },
        }
    }

    #[inline]
    fn get(self) -> IpAddr {
        if self.v4 {
            // `bits` came from a `u32`: the truncation keeps all of it.
            IpAddr::V4(Ipv4Addr::from_bits(self.bits as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from_bits(self.bits))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Walk {
    Found(Found),
    /// No item holds anything.
    Empty,
    /// The first entry examined is not an address.
    Invalid(StopReason),
    /// Fewer non-empty entries than trusted hops.
    TooFewHops {
        entries: usize,
        hops: usize,
    },
}

/// NGINX's `ngx_http_get_forwarded_addr_internal`: from the right, take an entry; continue
/// (recursive only) while it is trusted; stop at a non-address, keeping the last good one.
/// Empty items are passed over (as NGINX does) but keep their position.
///
/// `items` yields the raw items from the right; those left of where the walk ends are
/// counted, not parsed.
fn walk_trusted<'a>(
    mut items: RevItems<'a>,
    parse: impl Fn(&'a [u8]) -> Node,
    recursive: bool,
    trusted: &TrustedProxies,
) -> Walk {
    let mut found: Option<(PackedIp, Option<u16>, usize)> = None;
    let mut position = 0;
    while let Some(item) = items.next() {
        if !item.is_empty() {
            match parse(item) {
                Node::Ip(ip, port) => {
                    found = Some((PackedIp::new(ip), port, position));
                    if !recursive || !trusted.contains(ip) {
                        return finish(found, None, position + 1 + items.count());
                    }
                }
                Node::Stop(reason) => {
                    return match found {
                        Some(_) => finish(found, Some(reason), position + 1 + items.count()),
                        None => Walk::Invalid(reason),
                    };
                }
            }
        }
        position += 1;
    }
    finish(found, None, position)
}

/// The walk's result once the total number of positions is known.
fn finish(
    found: Option<(PackedIp, Option<u16>, usize)>,
    stopped: Option<StopReason>,
    entries: usize,
) -> Walk {
    match found {
        Some((ip, port, position)) => Walk::Found(Found {
            ip,
            port,
            position,
            entries,
            stopped,
        }),
        None => Walk::Empty,
    }
}

/// Envoy's `xff_num_trusted_hops`: the `hops`th non-empty entry from the right. With fewer
/// entries the request did not pass every trusted hop, so nothing in the header is
/// believed (Envoy then uses the downstream connection's address). A non-address among the
/// `hops` rightmost entries stops the walk, keeping the last good one (written by a hop).
fn walk_hops<'a>(items: impl Fn() -> RevItems<'a>, hops: usize) -> Walk {
    // Counted first, so that a malformed entry cannot hide that the header is too short.
    let available = items().filter(|item| !item.is_empty()).take(hops).count();
    if available == 0 {
        return Walk::Empty;
    }
    if available < hops {
        return Walk::TooFewHops {
            entries: available,
            hops,
        };
    }
    let mut items = items();
    let mut found: Option<(PackedIp, Option<u16>, usize)> = None;
    let mut seen = 0;
    let mut position = 0;
    while seen < hops {
        let Some(item) = items.next() else { break };
        if !item.is_empty() {
            match parse_entry(item) {
                Node::Ip(ip, port) => found = Some((PackedIp::new(ip), port, position)),
                Node::Stop(reason) => {
                    return match found {
                        Some(_) => finish(found, Some(reason), position + 1 + items.count()),
                        None => Walk::Invalid(reason),
                    };
                }
            }
            seen += 1;
        }
        position += 1;
    }
    finish(found, None, position + items.count())
}

/// The leftmost non-empty entry (EMQX), and its position from the right.
fn walk_leftmost(items: RevItems<'_>) -> Walk {
    let mut leftmost = None;
    let mut positions = 0;
    for item in items {
        if !item.is_empty() {
            leftmost = Some((item, positions));
        }
        positions += 1;
    }
    let Some((item, position)) = leftmost else {
        return Walk::Empty;
    };
    match parse_entry(item) {
        Node::Ip(ip, port) => Walk::Found(Found {
            ip: PackedIp::new(ip),
            port,
            position,
            entries: positions,
            stopped: None,
        }),
        Node::Stop(reason) => Walk::Invalid(reason),
    }
}

/// The one address of a single-value header line (a comma-separated list is malformed).
fn walk_single(line: &[u8]) -> Walk {
    let line = trim_ows(line);
    if line.is_empty() {
        return Walk::Empty;
    }
    match parse_entry(line) {
        Node::Ip(ip, port) => Walk::Found(Found {
            ip: PackedIp::new(ip),
            port,
            position: 0,
            entries: 1,
            stopped: None,
        }),
        Node::Stop(reason) => Walk::Invalid(reason),
    }
}

/// The port header's value for the entry at `position` from the right: the port header's
/// item at the same position (empty items count), over all its lines. An empty, missing or
/// malformed item is no port: never a neighbour's value.
///
/// A single-value header is set, not appended, by the proxy in front of this server; its
/// port is believed only when the port header holds a single value too (a list there was
/// appended hop by hop, and its items describe the hops, not the client).
fn header_port(
    config: &Config,
    headers: &HeaderMap,
    present: PortHeader,
    single: bool,
    position: usize,
) -> Option<u16> {
    let name = config.port_header.as_ref()?;
    let present = match present {
        PortHeader::Absent => false,
        PortHeader::Present => true,
        PortHeader::Unknown => may_contain(headers, name),
    };
    if !present {
        return None;
    }
    let mut items = RevItems::new(LineIter::Map(headers.get_all(name).iter()), Split::Commas);
    let item = if single {
        let only = items.next()?;
        if items.next().is_some() {
            return None;
        }
        only
    } else {
        items.nth(position)?
    };
    parse_port_bytes(item)?
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;
    use realip_core::PeerAddr;

    use super::*;
    use crate::resolution::Outcome;

    proptest::proptest! {
        /// The `Forwarded` walk with the one-pass element parser ends where the walk with
        /// the split-then-check parser ended, with the same address, position, count and
        /// reason, on headers of one or two lines of generated elements.
        #[test]
        fn forwarded_walk_agrees_with_the_reference_parser(
            lines in proptest::collection::vec(
                proptest::collection::vec((proptest::prop_oneof![
                        9 => crate::forwarded::reference::element(),
                        1 => proptest::strategy::Just(String::new()),
                    ], "[ \t]{0,2}"), 0..5),
                1..3,
            ),
            recursive in proptest::bool::ANY,
        ) {
            let trusted =
                TrustedProxies::parse_list(["10.0.0.0/8", "2001:db8::/32", "192.0.2.0/28"]).unwrap();
            let mut headers = HeaderMap::new();
            for elements in &lines {
                let line = elements
                    .iter()
                    .map(|(element, ows)| format!("{ows}{element}"))
                    .collect::<Vec<_>>()
                    .join(",")
                    // Controls other than HTAB cannot be in a header value.
                    .replace(['\u{1}', '\u{7f}'], "\t");
                headers.append(http::header::FORWARDED, HeaderValue::from_str(&line).unwrap());
            }
            let walk = |parse: fn(&[u8]) -> Node| {
                let lines = LineIter::Map(headers.get_all(http::header::FORWARDED).iter());
                walk_trusted(RevItems::new(lines, Split::CommasOutsideQuotes), parse, recursive, &trusted)
            };
            proptest::prop_assert_eq!(
                walk(parse_element),
                walk(crate::forwarded::reference::parse_element),
                "{:?}",
                headers
            );
        }
    }

    proptest::proptest! {
        /// A packed address is the address it was made from, IPv4 and IPv6 alike (an
        /// IPv4-mapped IPv6 address stays IPv6 until `ClientAddr` canonicalizes it).
        #[test]
        fn a_packed_address_is_the_address(ip in proptest::arbitrary::any::<IpAddr>()) {
            proptest::prop_assert_eq!(PackedIp::new(ip).get(), ip);
        }
    }

    /// The port header is found (or not) whatever the number of other headers, on both
    /// sides of the size up to which the map is scanned instead of hashed.
    #[test]
    fn the_port_header_is_found_in_maps_of_every_size() {
        let config = Config::new(
            Strategy::TrustedProxies { recursive: false },
            "10.0.0.0/8".parse().unwrap(),
        );
        let addr = PeerAddr::Inet("10.0.0.1:4000".parse().unwrap());
        let peer = Peer::socket(std::borrow::Cow::Borrowed(&addr));
        for others in 0..24 {
            for with_port in [false, true] {
                let mut headers = HeaderMap::new();
                for i in 0..others {
                    let name = HeaderName::from_bytes(format!("x-other-{i}").as_bytes()).unwrap();
                    headers.insert(name, HeaderValue::from_static("1"));
                }
                headers.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
                if with_port {
                    headers.insert("x-forwarded-port", HeaderValue::from_static("41000"));
                }
                let resolution = resolve(&config, &headers, Some(&peer));
                let client = resolution.client().unwrap();
                assert_eq!(client.ip().to_string(), "203.0.113.7");
                assert_eq!(client.port(), with_port.then_some(41000), "{others} others");
                let Outcome::Header(choice) = resolution.outcome() else {
                    panic!("header outcome expected");
                };
                let source = if with_port {
                    PortSource::PortHeader
                } else {
                    PortSource::None
                };
                assert_eq!(choice.port_source(), source, "{others} others");
            }
        }
    }
}
