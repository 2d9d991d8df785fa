//! Property tests of the resolver's invariants over random chains, client-written prefixes,
//! header line splits, peers and port headers:
//!
//! * the client is the transport peer or an address written in the header;
//! * a chain that trusted proxies appended to resolves, recursively, to the address the
//!   first trusted proxy saw, whatever the client wrote before it (`X-Forwarded-For` and
//!   `Forwarded`); without recursion, to the rightmost entry;
//! * the port is the chosen entry's own, or the port header's item at the chosen position,
//!   or unknown.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use realip_core::{TrustedProxies, canonical_ip};
use realip_tower::{Outcome, PeerAddr, PortSource, RealIpLayer};

fn trusted() -> TrustedProxies {
    "10.0.0.0/8, fd00::/8".parse().unwrap()
}

fn trusted_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 3]>().prop_map(|[a, b, c]| IpAddr::V4(Ipv4Addr::new(10, a, b, c))),
        any::<u64>()
            .prop_map(|low| IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(low)))),
    ]
}

fn untrusted_ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u8>().prop_map(|d| IpAddr::V4(Ipv4Addr::new(203, 0, 113, d))),
        any::<u8>().prop_map(|d| IpAddr::V4(Ipv4Addr::new(198, 51, 100, d))),
        any::<u16>().prop_map(|d| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, d))),
        // IPv4-mapped: the same client, spelled as IPv6.
        any::<u8>().prop_map(|d| IpAddr::V6(Ipv4Addr::new(192, 0, 2, d).to_ipv6_mapped())),
    ]
}

/// What a client may write in front of the proxies' entries.
fn client_entry() -> impl Strategy<Value = String> {
    prop_oneof![
        (untrusted_ip(), any::<Option<u16>>()).prop_map(|(ip, port)| render(ip, port, false)),
        (trusted_ip(), any::<Option<u16>>()).prop_map(|(ip, port)| render(ip, port, false)),
        (untrusted_ip(), any::<Option<u16>>()).prop_map(|(ip, port)| render(ip, port, true)),
        Just("unknown".to_owned()),
        Just("for=_hidden".to_owned()),
        Just("for=\"[2001:db8::66]:1".to_owned()),
        Just("\"".to_owned()),
        Just(String::new()),
        "[ -~]{0,24}",
    ]
}

/// A written port as the resolver reports it: port 0 is unknown.
fn known(port: Option<u16>) -> Option<u16> {
    port.filter(|&p| p != 0)
}

fn render(ip: IpAddr, port: Option<u16>, forwarded: bool) -> String {
    let addr = match (ip, port) {
        (IpAddr::V4(v4), Some(p)) => format!("{v4}:{p}"),
        (IpAddr::V4(v4), None) => v4.to_string(),
        (IpAddr::V6(v6), Some(p)) => format!("[{v6}]:{p}"),
        (IpAddr::V6(v6), None) if forwarded => format!("[{v6}]"),
        (IpAddr::V6(v6), None) => v6.to_string(),
    };
    match (forwarded, addr.contains(':')) {
        (false, _) => addr,
        (true, true) => format!("for=\"{addr}\""),
        (true, false) => format!("for={addr}"),
    }
}

#[derive(Debug, Clone)]
struct Chain {
    forwarded: bool,
    client_text: Vec<String>,
    same_line: bool,
    real: (IpAddr, Option<u16>),
    hops: Vec<(IpAddr, Option<u16>)>,
    peer: IpAddr,
}

fn chain() -> impl Strategy<Value = Chain> {
    (
        any::<bool>(),
        prop::collection::vec(client_entry(), 0..5),
        any::<bool>(),
        (untrusted_ip(), any::<Option<u16>>()),
        prop::collection::vec((trusted_ip(), any::<Option<u16>>()), 0..4),
        trusted_ip(),
    )
        .prop_map(
            |(forwarded, client_text, same_line, real, hops, peer)| Chain {
                forwarded,
                client_text,
                same_line,
                real,
                hops,
                peer,
            },
        )
}

impl Chain {
    fn layer(&self, recursive: bool) -> RealIpLayer {
        match (self.forwarded, recursive) {
            (true, true) => RealIpLayer::forwarded_recursive(trusted()),
            (true, false) => RealIpLayer::forwarded(trusted()),
            (false, true) => RealIpLayer::x_forwarded_for_recursive(trusted()),
            (false, false) => RealIpLayer::x_forwarded_for(trusted()),
        }
        .without_port_header()
    }

    /// The header lines: what the client wrote, then what the proxies appended (on the
    /// same line, as `$http_x_forwarded_for, $remote_addr` does, or on a line of its own).
    fn headers(&self) -> Option<HeaderMap> {
        let name = self.layer(true).header_name().clone();
        let appended: Vec<String> = std::iter::once(self.real)
            .chain(self.hops.iter().copied())
            .map(|(ip, port)| render(ip, port, self.forwarded))
            .collect();
        let appended = appended.join(", ");
        let mut lines = Vec::new();
        if self.same_line && !self.client_text.is_empty() {
            lines.push(format!("{}, {appended}", self.client_text.join(", ")));
        } else {
            lines.extend(self.client_text.iter().filter(|t| !t.is_empty()).cloned());
            lines.push(appended);
        }
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(name.clone(), HeaderValue::from_str(&line).ok()?);
        }
        Some(headers)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn client_written_entries_never_win(chain in chain()) {
        let Some(headers) = chain.headers() else { return Ok(()) };
        let peer = PeerAddr::Inet(SocketAddr::new(chain.peer, 443));

        let recursive = chain.layer(true).resolve(&headers, Some(&peer));
        let client = recursive.client().unwrap();
        prop_assert_eq!(
            (canonical_ip(client.ip()), client.port()),
            (canonical_ip(chain.real.0), known(chain.real.1)),
            "{:?}", recursive
        );

        let rightmost = chain.hops.last().copied().unwrap_or(chain.real);
        let single = chain.layer(false).resolve(&headers, Some(&peer));
        let client = single.client().unwrap();
        prop_assert_eq!(
            (canonical_ip(client.ip()), client.port()),
            (canonical_ip(rightmost.0), known(rightmost.1))
        );

        // Not from a trusted peer: the header is not read at all.
        let direct = PeerAddr::Inet(SocketAddr::new(chain.real.0, 1));
        let ignored = chain.layer(true).resolve(&headers, Some(&direct));
        prop_assert_eq!(ignored.client().unwrap().ip(), canonical_ip(chain.real.0));
        prop_assert!(matches!(ignored.outcome(), Outcome::Fallback(_)));
    }

    #[test]
    fn client_is_the_peer_or_a_written_address_and_the_port_follows_its_position(
        entries in prop::collection::vec(
            prop_oneof![
                (untrusted_ip(), any::<Option<u16>>()).prop_map(|(ip, p)| (Some(ip), p)),
                (trusted_ip(), any::<Option<u16>>()).prop_map(|(ip, p)| (Some(ip), p)),
                Just((None, None)),
            ],
            0..6,
        ),
        ports in prop::collection::vec(any::<u16>(), 0..7),
        recursive in any::<bool>(),
        hops in 0usize..4,
        peer_trusted in any::<bool>(),
    ) {
        let text: Vec<String> = entries
            .iter()
            .map(|(ip, port)| ip.map_or_else(|| "junk".to_owned(), |ip| render(ip, *port, false)))
            .collect();
        let mut headers = HeaderMap::new();
        if !text.is_empty() {
            headers.append("x-forwarded-for", HeaderValue::from_str(&text.join(", ")).unwrap());
        }
        let port_line: Vec<String> = ports.iter().map(u16::to_string).collect();
        if !ports.is_empty() {
            headers.append("x-forwarded-port", HeaderValue::from_str(&port_line.join(", ")).unwrap());
        }
        let peer_ip = if peer_trusted { "10.9.9.9" } else { "192.0.2.200" };
        let peer_addr = SocketAddr::new(peer_ip.parse().unwrap(), 5);
        let peer = PeerAddr::Inet(peer_addr);
        let written: Vec<IpAddr> = entries.iter().filter_map(|(ip, _)| ip.map(canonical_ip)).collect();

        for layer in [
            if recursive {
                RealIpLayer::x_forwarded_for_recursive(trusted())
            } else {
                RealIpLayer::x_forwarded_for(trusted())
            },
            RealIpLayer::trusted_hops(hops),
            RealIpLayer::leftmost(trusted()),
        ] {
            let resolution = layer.resolve(&headers, Some(&peer));
            let client = resolution.client().unwrap();
            match resolution.outcome() {
                Outcome::Header(choice) => {
                    prop_assert!(written.contains(&canonical_ip(client.ip())), "{:?}", resolution);
                    let chosen = &entries[choice.position_from_left()];
                    prop_assert_eq!(chosen.0.map(canonical_ip), Some(canonical_ip(client.ip())));
                    match choice.port_source() {
                        PortSource::Entry => prop_assert_eq!(client.port(), known(chosen.1)),
                        PortSource::PortHeader => {
                            // The port header's item at the chosen entry's position.
                            prop_assert_eq!(known(chosen.1), None);
                            let at = ports.len().checked_sub(1 + choice.position_from_right());
                            prop_assert_eq!(client.port(), known(at.map(|at| ports[at])));
                        }
                        _ => prop_assert_eq!(client.port(), None),
                    }
                }
                _ => prop_assert_eq!(client.socket_addr(), Some(peer_addr)),
            }
        }
    }
}
