//! Property test: the recursive strategy against a small reference model of NGINX's
//! `real_ip_recursive on` over random chains, trusted sets and header line splits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use proptest::prelude::*;
use realip_core::TrustedProxies;
use realip_tower::{PeerAddr, RealIpLayer};

/// One entry of the chain, before rendering.
#[derive(Clone, Debug)]
enum Entry {
    /// An address, rendered in one of several legal spellings.
    Addr { ip: IpAddr, port: u16, form: u8 },
    /// Something that is not an address.
    Garbage(&'static str),
    /// An empty entry (`a,,b`).
    Empty,
}

const GARBAGE: &[&str] = &[
    "unknown",
    "_hidden",
    "example.com",
    "1.2.3",
    "[::1",
    "1.2.3.4:x",
];

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4, 0u8..4).prop_map(|(net, host)| IpAddr::V4(Ipv4Addr::new(10, 0, net, host))),
        (0u16..4, 0u16..4)
            .prop_map(|(net, host)| IpAddr::V6(Ipv6Addr::new(0xfd00, net, 0, 0, 0, 0, 0, host))),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        6 => (addr(), 1u16.., 0u8..4).prop_map(|(ip, port, form)| Entry::Addr { ip, port, form }),
        1 => prop::sample::select(GARBAGE).prop_map(Entry::Garbage),
        1 => Just(Entry::Empty),
    ]
}

fn render(entry: &Entry) -> String {
    match entry {
        Entry::Addr { ip, port, form } => match (ip, form) {
            (IpAddr::V4(v4), 0 | 2) => v4.to_string(),
            (IpAddr::V4(v4), _) => format!("{v4}:{port}"),
            (IpAddr::V6(v6), 0) => v6.to_string(),
            (IpAddr::V6(v6), 1) => format!("[{v6}]:{port}"),
            (IpAddr::V6(v6), 2) => format!("[{v6}]"),
            (IpAddr::V6(v6), _) => format!("{v6}%eth0"),
        },
        Entry::Garbage(g) => (*g).to_owned(),
        Entry::Empty => String::new(),
    }
}

/// The reference: NGINX's walk, stated as "drop the longest suffix of trusted addresses".
///
/// `None` means "the transport peer". Entries are already without empties.
fn reference(chain: &[Option<IpAddr>], trusted: &TrustedProxies) -> Option<IpAddr> {
    let trusted_suffix = chain
        .iter()
        .rev()
        .take_while(|e| matches!(e, Some(ip) if trusted.contains(*ip)))
        .count();
    if trusted_suffix == chain.len() {
        // Every entry is a trusted address (or there are none): the leftmost, if any.
        return chain.first().copied().flatten();
    }
    match chain[chain.len() - trusted_suffix - 1] {
        Some(untrusted) => Some(untrusted),
        // A non-address stops the walk: the last good address reached, else the peer.
        None if trusted_suffix > 0 => chain[chain.len() - trusted_suffix],
        None => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn recursive_walk_matches_nginx_model(
        chain in prop::collection::vec(entry(), 0..10),
        nets in prop::collection::vec((any::<bool>(), 0u8..4), 0..5),
        splits in prop::collection::vec(any::<bool>(), 10),
        spaces in prop::collection::vec(0u8..3, 10),
        peer_trusted in any::<bool>(),
    ) {
        let mut trusted = TrustedProxies::new();
        for (v6, net) in nets {
            let cidr = if v6 { format!("fd00:{net}::/32") } else { format!("10.0.{net}.0/24") };
            trusted.add(&cidr).unwrap();
        }
        let peer_ip: IpAddr = if peer_trusted { "10.9.9.9" } else { "203.0.113.1" }.parse().unwrap();
        trusted.add(if peer_trusted { "10.9.9.9" } else { "10.9.9.10" }).unwrap();
        let peer = PeerAddr::Inet(SocketAddr::new(peer_ip, 4000));

        // Render into lines: each boundary either separates lines or is a comma with
        // random spacing.
        let mut headers = HeaderMap::new();
        let mut line = String::new();
        for (i, e) in chain.iter().enumerate() {
            if i > 0 {
                if splits[i] {
                    headers.append("x-forwarded-for", line.parse().unwrap());
                    line.clear();
                } else {
                    line.push_str([",", ", ", " ,  "][spaces[i] as usize]);
                }
            }
            line.push_str(&render(e));
        }
        if !chain.is_empty() {
            headers.append("x-forwarded-for", line.parse().unwrap());
        }

        let layer = RealIpLayer::x_forwarded_for_recursive(trusted.clone());
        let got = layer.resolve(&headers, Some(&peer));
        let model_chain: Vec<Option<IpAddr>> = chain
            .iter()
            .filter_map(|e| match e {
                Entry::Addr { ip, .. } => Some(Some(*ip)),
                Entry::Garbage(_) => Some(None),
                Entry::Empty => None,
            })
            .collect();
        let want = if peer_trusted { reference(&model_chain, &trusted) } else { None };
        let got_ip = got.client().map(|c| c.ip());
        match want {
            Some(ip) => {
                prop_assert_eq!(got_ip, Some(ip));
                prop_assert_eq!(got.client().unwrap().source().as_str(), "x-forwarded-for");
            }
            None => {
                prop_assert_eq!(got_ip, Some(peer_ip));
                prop_assert_eq!(got.client().unwrap().source().as_str(), "socket");
            }
        }
    }
}

fn forwarded_element() -> impl Strategy<Value = (IpAddr, String)> {
    (addr(), 1u16.., 0u8..4, 0u8..3).prop_map(|(ip, port, form, extra)| {
        let node = match (ip, form) {
            (IpAddr::V4(v4), 0) => v4.to_string(),
            (IpAddr::V4(v4), 1) => format!("\"{v4}:{port}\""),
            (IpAddr::V4(v4), _) => format!("\"{v4}\""),
            (IpAddr::V6(v6), 0 | 1) => format!("\"[{v6}]:{port}\""),
            (IpAddr::V6(v6), _) => format!("\"[{v6}]\""),
        };
        let element = match extra {
            0 => format!("for={node}"),
            1 => format!("proto=wss;FOR={node}"),
            _ => format!("For={node};by=\"[2001:db8::1]\";host=\"a,b;c\""),
        };
        (ip, element)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// Whatever a client puts on the left of a `Forwarded` header (unclosed quotes, stray
    /// separators, forged nodes), the elements appended by proxies on the right decide.
    #[test]
    fn forwarded_prefix_cannot_sabotage_the_right_elements(
        prefix in "[ -~]{0,40}",
        elements in prop::collection::vec(forwarded_element(), 1..6),
        same_line in any::<bool>(),
    ) {
        let trusted: TrustedProxies = "10.0.0.0/16, fd00::/16".parse().unwrap();
        let peer = PeerAddr::Inet("10.0.9.9:4000".parse().unwrap());
        // Make sure an untrusted address exists among the proxies' elements.
        let mut elements = elements;
        elements.insert(0, (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)), "for=203.0.113.7".to_owned()));
        let appended: Vec<String> = elements.iter().map(|(_, e)| e.clone()).collect();
        let mut headers = HeaderMap::new();
        if same_line {
            headers.append("forwarded", format!("{prefix}, {}", appended.join(", ")).parse().unwrap());
        } else {
            headers.append("forwarded", prefix.parse().unwrap());
            headers.append("forwarded", appended.join(",").parse().unwrap());
        }
        let want = elements
            .iter()
            .rev()
            .map(|(ip, _)| *ip)
            .find(|ip| !trusted.contains(*ip))
            .unwrap();
        let got = RealIpLayer::forwarded_recursive(trusted).resolve(&headers, Some(&peer));
        prop_assert_eq!(got.client().map(|c| c.ip()), Some(want));
    }

    /// Arbitrary header bytes never panic and never yield anything but an IP from the
    /// header or the transport peer.
    #[test]
    fn arbitrary_headers_never_panic(
        lines in prop::collection::vec(prop::collection::vec(
            prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..40), 0..4),
        ports in prop::collection::vec(prop::collection::vec(0x20u8..0x7f, 0..12), 0..3),
        which in 0usize..6,
    ) {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let layer = match which {
            0 => RealIpLayer::x_forwarded_for_recursive(trusted),
            1 => RealIpLayer::x_forwarded_for(trusted),
            2 => RealIpLayer::forwarded_recursive(trusted),
            3 => RealIpLayer::x_real_ip(trusted),
            4 => RealIpLayer::leftmost(trusted),
            _ => RealIpLayer::trusted_hops(3),
        };
        let mut headers = HeaderMap::new();
        for line in &lines {
            let value = http::HeaderValue::from_bytes(line).unwrap();
            headers.append(layer.header_name().clone(), value);
        }
        for port in &ports {
            headers.append("x-forwarded-port", http::HeaderValue::from_bytes(port).unwrap());
        }
        let peer = PeerAddr::Inet("10.0.0.1:4000".parse().unwrap());
        let got = layer.resolve(&headers, Some(&peer));
        let client = got.client().unwrap();
        let from_header = client.source().as_str() == layer.header_name().as_str();
        prop_assert!(from_header || client.to_string() == "10.0.0.1:4000");
    }
}
