//! The forwarded-header resolver fed arbitrary header lines, peers and trusted sets.
//!
//! * Never panics.
//! * The client is the transport peer or an address written in the input.
//! * The port is unknown exactly when the resolution says so; a port taken from the port
//!   header is its item at the chosen address's position (the only one for a single-value
//!   header).
//! * With a chain that trusted proxies appended to (`client text, real, hop, hop`), the
//!   recursive strategy returns `real`, with its port or none, whatever the client wrote:
//!   a client-written entry never wins. Without recursion, the rightmost entry.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use realip_core::{TrustedProxies, canonical_ip};
use realip_tower::{Outcome, PeerAddr, PortSource, RealIpLayer};

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    fn ip(self) -> IpAddr {
        match self {
            Self::V4(b) => IpAddr::V4(Ipv4Addr::from(b)),
            Self::V6(b) => IpAddr::V6(Ipv6Addr::from(b)),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Net {
    ip: Ip,
    prefix: u8,
}

#[derive(Arbitrary, Debug)]
struct Hop {
    /// Index of the trusted network the hop's address is taken from.
    net: u8,
    offset: u32,
    port: Option<u16>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    strategy: u8,
    hops_count: u8,
    recursive: bool,
    unconditional: bool,
    trusted: Vec<Net>,
    peer: Option<(Ip, u16)>,
    lines: Vec<String>,
    port_lines: Vec<String>,
    // The structured chain.
    forwarded: bool,
    client_text: Vec<String>,
    client_text_same_line: bool,
    real: (Ip, Option<u16>),
    hops: Vec<Hop>,
}

fn trusted_set(nets: &[Net]) -> TrustedProxies {
    nets.iter()
        .filter_map(|n| {
            let max = if matches!(n.ip, Ip::V4(_)) { 32 } else { 128 };
            format!("{}/{}", n.ip.ip(), n.prefix % (max + 1))
                .parse::<TrustedProxies>()
                .ok()
        })
        .flat_map(|t| t.networks().to_vec())
        .collect()
}

fn layer(input: &Input, trusted: TrustedProxies) -> RealIpLayer {
    let xff = if input.recursive {
        RealIpLayer::x_forwarded_for_recursive
    } else {
        RealIpLayer::x_forwarded_for
    };
    let layer = match input.strategy % 6 {
        0 => xff(trusted),
        1 => RealIpLayer::trusted_hops(usize::from(input.hops_count % 5)),
        2 => RealIpLayer::leftmost(trusted),
        3 if input.recursive => RealIpLayer::forwarded_recursive(trusted),
        3 => RealIpLayer::forwarded(trusted),
        4 => RealIpLayer::x_real_ip(trusted),
        _ => xff(trusted).port_header(HeaderName::from_static("x-port")),
    };
    if input.unconditional {
        layer.trust_headers_unconditionally()
    } else {
        layer
    }
}

/// Every IP address written in `text`: each maximal run of characters an address can be
/// spelled with, as is, or without a trailing `:port`.
fn addresses_in(text: &str, out: &mut Vec<IpAddr>) {
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
    for run in text
        .split(|c: char| !is_addr_char(c))
        .filter(|r| !r.is_empty())
    {
        if let Ok(ip) = run.parse::<IpAddr>() {
            out.push(canonical_ip(ip));
        }
        if let Some((ip, _)) = run.rsplit_once(':') {
            if let Ok(ip) = ip.parse::<IpAddr>() {
                out.push(canonical_ip(ip));
            }
        }
    }
}

fn peer(input: &Input) -> Option<PeerAddr> {
    input
        .peer
        .map(|(ip, port)| PeerAddr::Inet(SocketAddr::new(ip.ip(), port)))
}

fn arbitrary_lines(input: &Input) {
    let trusted = trusted_set(&input.trusted);
    let layer = layer(input, trusted);
    let mut headers = HeaderMap::new();
    let name = layer.header_name().clone();
    for line in &input.lines {
        if let Ok(value) = HeaderValue::from_str(line) {
            headers.append(name.clone(), value);
        }
    }
    for line in &input.port_lines {
        if let Ok(value) = HeaderValue::from_str(line) {
            headers.append(HeaderName::from_static("x-port"), value.clone());
            headers.append(HeaderName::from_static("x-forwarded-port"), value);
        }
    }
    let peer = peer(input);
    let resolution = layer.resolve(&headers, peer.as_ref());
    let client = resolution.client();
    match resolution.outcome() {
        Outcome::Fallback(_) => {
            // The peer, its address canonical (an IPv4-mapped peer is reported as IPv4).
            let peer = peer.as_ref().and_then(PeerAddr::inet);
            let canonical = |a: SocketAddr| (canonical_ip(a.ip()), a.port());
            assert_eq!(
                client.and_then(|c| c.socket_addr()).map(canonical),
                peer.map(canonical)
            );
        }
        Outcome::Header(choice) => {
            let client = client.expect("a header entry decided but no client");
            let mut written = Vec::new();
            for line in headers.get_all(&name) {
                addresses_in(&String::from_utf8_lossy(line.as_bytes()), &mut written);
            }
            assert!(
                written.contains(&canonical_ip(client.ip())),
                "{client} not in {headers:?}"
            );
            assert!(choice.position_from_right() < choice.entries().max(1));
            match choice.port_source() {
                PortSource::None => assert_eq!(client.port(), None),
                PortSource::Entry => assert!(client.port().is_some()),
                PortSource::PortHeader => {
                    let port = client.port().expect("port from the port header");
                    let port_name = layer.port_header_name().expect("a port header").clone();
                    // Items over all lines, empty ones included, counted from the right.
                    let items: Vec<String> = headers
                        .get_all(&port_name)
                        .iter()
                        .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned())
                        .flat_map(|l| {
                            l.split(',')
                                .map(|e| e.trim().to_owned())
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let at = if layer.strategy() == realip_tower::Strategy::SingleValue {
                        assert_eq!(items.len(), 1, "{items:?}");
                        0
                    } else {
                        items.len() - 1 - choice.position_from_right()
                    };
                    let entries = items;
                    assert_eq!(entries[at].parse::<u16>().ok(), Some(port), "{entries:?}");
                }
                _ => {}
            }
        }
        _ => {}
    }
}

/// An address of `net`: its network address with `offset` in the host bits.
fn address_in(net: &IpNet, offset: u32) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let mask = u32::from(n.hostmask());
            IpAddr::V4((u32::from(n.network()) | offset & mask).into())
        }
        IpNet::V6(n) => {
            let mask = u128::from(n.hostmask());
            IpAddr::V6((u128::from(n.network()) | u128::from(offset) & mask).into())
        }
    }
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
    if !forwarded {
        addr
    } else if addr.contains(':') {
        format!("for=\"{addr}\"")
    } else {
        format!("for={addr}")
    }
}

fn appended_chain(input: &Input) {
    let trusted = trusted_set(&input.trusted);
    let nets = trusted.networks();
    if nets.is_empty() {
        return;
    }
    let real = canonical_ip(input.real.0.ip());
    if trusted.contains(real) {
        return;
    }
    let hops: Vec<(IpAddr, Option<u16>)> = input
        .hops
        .iter()
        .map(|h| {
            (
                address_in(&nets[usize::from(h.net) % nets.len()], h.offset),
                h.port,
            )
        })
        .collect();
    // The peer is the proxy nearest to us: trusted.
    let peer_ip = address_in(&nets[0], input.hops.len() as u32);
    let peer = PeerAddr::Inet(SocketAddr::new(peer_ip, 443));

    let layer = |recursive: bool| {
        match (input.forwarded, recursive) {
            (true, true) => RealIpLayer::forwarded_recursive(trusted.clone()),
            (true, false) => RealIpLayer::forwarded(trusted.clone()),
            (false, true) => RealIpLayer::x_forwarded_for_recursive(trusted.clone()),
            (false, false) => RealIpLayer::x_forwarded_for(trusted.clone()),
        }
        .without_port_header()
    };
    let name = layer(true).header_name().clone();
    let mut appended: Vec<String> = vec![render(real, input.real.1, input.forwarded)];
    appended.extend(
        hops.iter()
            .map(|&(ip, port)| render(ip, port, input.forwarded)),
    );
    let appended = appended.join(", ");

    let mut headers = HeaderMap::new();
    let client_text: Vec<&String> = input
        .client_text
        .iter()
        .filter(|t| HeaderValue::from_str(t).is_ok())
        .collect();
    if input.client_text_same_line && !client_text.is_empty() {
        // `proxy_set_header X-Forwarded-For "$http_x_forwarded_for, $remote_addr"`.
        let mut line = client_text
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        line.push_str(", ");
        line.push_str(&appended);
        let Ok(value) = HeaderValue::from_str(&line) else {
            return;
        };
        headers.append(name.clone(), value);
    } else {
        for text in &client_text {
            headers.append(name.clone(), HeaderValue::from_str(text).unwrap());
        }
        headers.append(name.clone(), HeaderValue::from_str(&appended).unwrap());
    }

    let recursive = layer(true).resolve(&headers, Some(&peer));
    let client = recursive.client().expect("a client");
    assert_eq!(
        (canonical_ip(client.ip()), client.port()),
        (real, known(input.real.1)),
        "recursive: {headers:?}, trusted {trusted:?}: {recursive:?}"
    );
    let rightmost = hops.last().copied().unwrap_or((real, input.real.1));
    let single = layer(false).resolve(&headers, Some(&peer));
    let client = single.client().expect("a client");
    assert_eq!(
        (canonical_ip(client.ip()), client.port()),
        (canonical_ip(rightmost.0), known(rightmost.1)),
        "non-recursive: {headers:?}: {single:?}"
    );
}

/// Header lines as a proxy wrote them, with a fixed setting: `bytes[0]` picks the
/// strategy, `bytes[1]` the flags (bit 0 recursive, bit 1 unconditional), then lines
/// separated by `\n`; a line starting with `port:` goes to the port headers. The peer is
/// 127.0.0.1, and loopback and 10.0.0.0/8 are trusted.
fn captured_lines(bytes: &[u8]) -> Option<Input> {
    let (&strategy, rest) = bytes.split_first()?;
    let (&flags, rest) = rest.split_first()?;
    let text = String::from_utf8_lossy(rest);
    let (port_lines, lines): (Vec<&str>, Vec<&str>) =
        text.split('\n').partition(|l| l.starts_with("port:"));
    Some(Input {
        strategy,
        hops_count: flags >> 2,
        recursive: flags & 1 == 1,
        unconditional: flags & 2 == 2,
        trusted: vec![
            Net {
                ip: Ip::V4([127, 0, 0, 0]),
                prefix: 8,
            },
            Net {
                ip: Ip::V4([10, 0, 0, 0]),
                prefix: 8,
            },
        ],
        peer: Some((Ip::V4([127, 0, 0, 1]), 40000)),
        lines: lines.into_iter().map(str::to_owned).collect(),
        port_lines: port_lines
            .into_iter()
            .map(|l| l["port:".len()..].to_owned())
            .collect(),
        forwarded: false,
        client_text: Vec::new(),
        client_text_same_line: false,
        real: (Ip::V4([0, 0, 0, 0]), None),
        hops: Vec::new(),
    })
}

// The first byte chooses: even, header lines as real proxies write them (seeds captured from
// NGINX and HAProxy are `[0, strategy, flags]` followed by the lines); odd, arbitrary
// settings, lines and an appended chain.
fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        if let Some(input) = captured_lines(rest) {
            arbitrary_lines(&input);
        }
    } else if let Ok(input) = Input::arbitrary_take_rest(arbitrary::Unstructured::new(rest)) {
        arbitrary_lines(&input);
        appended_chain(&input);
    }
});
