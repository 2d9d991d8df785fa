//! The work measured by the micro-benchmarks, shared by the criterion benches and the
//! interleaved runner of the `load` binary (`load micro`): PROXY header parsing and
//! forwarded-header resolution, each in our crate and in the peers.
//!
//! Every function returns its answer so that a caller can check that all implementations
//! agree before timing them.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::extract::FromRequestParts;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request};
use realip_core::{ClientAddr, TrustedProxies};
use realip_tower::{PeerAddr, RealIp, RealIpLayer, Resolution};
use tower_service::Service;

use crate::header::{self, dst4, dst6, sample_tlvs, src4, src6};

// ---------------------------------------------------------------------------------------------
// Header parsing

/// Application data after the header, as it arrives in the same first read.
pub const PARSE_TRAILER: &[u8] = b"GET / HTTP/1.1\r\n";

/// One parse input: a header followed by [`PARSE_TRAILER`].
#[derive(Clone, Debug)]
pub struct ParseCase {
    /// Display name.
    pub name: &'static str,
    /// Header + trailer.
    pub buf: Vec<u8>,
    /// Length of the header alone.
    pub header_len: usize,
}

/// v1 TCP4/TCP6, v2 INET/INET6 without and with TLVs.
pub fn parse_cases() -> Vec<ParseCase> {
    let tlvs = sample_tlvs();
    [
        ("v1 TCP4", header::v1(src4(), dst4())),
        ("v1 TCP6", header::v1(src6(), dst6())),
        ("v2 INET", header::v2(src4(), dst4(), &[])),
        ("v2 INET +3 TLVs", header::v2(src4(), dst4(), &tlvs)),
        ("v2 INET6", header::v2(src6(), dst6(), &[])),
        ("v2 INET6 +3 TLVs", header::v2(src6(), dst6(), &tlvs)),
    ]
    .into_iter()
    .map(|(name, mut buf)| {
        let header_len = buf.len();
        buf.extend_from_slice(PARSE_TRAILER);
        ParseCase {
            name,
            buf,
            header_len,
        }
    })
    .collect()
}

/// Ours: `realip_listener::parse_header` (signature detection, `ppp`, size cap, TLV
/// validation, owned `ProxyInfo`). Returns the header length.
pub fn parse_realip(buf: &[u8]) -> usize {
    let (info, len) = realip_listener::parse_header(buf, realip_listener::DEFAULT_MAX_HEADER_LEN)
        .expect("valid header")
        .expect("complete header");
    black_box(&info);
    len
}

/// The floor: `ppp`'s v1 or v2 parser called directly on the same bytes (borrowing; TLVs
/// walked once, so that they are validated as ours does). Returns the header length.
pub fn parse_ppp(buf: &[u8]) -> usize {
    if buf[0] == b'P' {
        let h = ppp::v1::Header::try_from(buf).expect("valid v1");
        black_box(&h.addresses);
        h.header.len()
    } else {
        let h = ppp::v2::Header::try_from(buf).expect("valid v2");
        for tlv in h.tlvs() {
            black_box(tlv.expect("valid TLV"));
        }
        black_box(&h.addresses);
        h.len()
    }
}

/// The peer crate `proxy-protocol-rs`: its own parser, owned `ProxyInfo` with decoded TLVs.
/// Returns the header length.
pub fn parse_peer(buf: &[u8]) -> usize {
    let (info, len) = proxy_protocol_rs::parse(buf).expect("valid header");
    black_box(&info);
    len
}

// ---------------------------------------------------------------------------------------------
// Forwarded-header resolution

/// The real client, leftmost in every chain.
pub const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
/// The socket peer: the last proxy, trusted.
pub const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)), 443);

/// `n` (≥ 4) trusted CIDRs: the proxy networks of the chains (the peer's included) plus
/// disjoint, non-adjacent /24s (so that interval merging cannot collapse them), in a fixed
/// shuffled order (so that the proxies are not first in a linear scan).
pub fn trusted_cidrs(n: usize) -> Vec<String> {
    let mut nets: Vec<String> = ["10.9.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]
        .map(str::to_owned)
        .to_vec();
    for i in 0..n.saturating_sub(nets.len()) {
        nets.push(format!("100.{}.{}.0/24", 64 + i / 128, (i % 128) * 2));
    }
    // Fisher–Yates with a fixed LCG.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..nets.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        nets.swap(i, (state >> 33) as usize % (i + 1));
    }
    nets
}

/// Polls a future that completes without waiting (the axum extractors and the middleware
/// with a ready inner service do).
///
/// # Panics
///
/// If the future is pending.
pub fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future did not complete at once"),
    }
}

/// The innermost service: hands the request back.
#[derive(Clone, Copy, Debug)]
pub struct Echo;

impl Service<Request<()>> for Echo {
    type Response = Request<()>;
    type Error = Infallible;
    type Future = Ready<Result<Request<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        ready(Ok(request))
    }
}

/// One resolution input with everything each implementation needs, prepared up front.
#[derive(Debug)]
pub struct LayerCase {
    /// Display name.
    pub name: &'static str,
    /// Our answer (and `real-ip`'s, for the recursive cases).
    pub client: IpAddr,
    /// The rightmost entry (what `client-ip`/`axum-client-ip` return).
    pub rightmost: IpAddr,
    forwarded: bool,
    headers: HeaderMap,
    layer: RealIpLayer,
    /// `layer` without the port header (`RealIpLayer::without_port_header`).
    without_port: RealIpLayer,
    peer: PeerAddr,
    service: RealIp<Echo>,
    request: Option<Request<()>>,
    parts: Parts,
    nets: Vec<real_ip::IpNet>,
}

/// The 4-entry chain of the cases: the client, then three trusted proxies.
const CHAIN4: &str = "203.0.113.7, 10.1.0.1, 10.2.0.1, 10.3.0.1";
/// The last proxy of [`CHAIN4`], its rightmost entry.
const LAST_PROXY: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1));

/// XFF 1 and 4 entries with 16 trusted CIDRs, XFF 4 entries with 10,000, `Forwarded` with 4
/// elements and 16. Our layer is recursive (NGINX `real_ip_recursive on`), like `real-ip`.
pub fn layer_cases() -> Vec<LayerCase> {
    [
        ("XFF 1 entry, 16 CIDRs", "x-forwarded-for", "203.0.113.7", 16, CLIENT),
        ("XFF 4 entries, 16 CIDRs", "x-forwarded-for", CHAIN4, 16, LAST_PROXY),
        ("XFF 4 entries, 10000 CIDRs", "x-forwarded-for", CHAIN4, 10_000, LAST_PROXY),
        (
            "Forwarded 4 elements, 16 CIDRs",
            "forwarded",
            "for=203.0.113.7;proto=https, for=10.1.0.1, for=\"10.2.0.1:8080\", for=10.3.0.1;by=10.9.0.1",
            16,
            LAST_PROXY,
        ),
    ]
    .into_iter()
    .map(|(name, header, value, cidrs, rightmost)| {
        let forwarded = header == "forwarded";
        let recursive = if forwarded {
            RealIpLayer::forwarded_recursive
        } else {
            RealIpLayer::x_forwarded_for_recursive
        };
        let mut headers = HeaderMap::new();
        headers.insert(header, HeaderValue::from_static(value));
        LayerCase::new(name, headers, recursive, cidrs, CLIENT, rightmost)
    })
    .collect()
}

/// Request headers besides `X-Forwarded-For` of a browser's request behind a proxy, for the
/// row that shows our lookups in a header map of realistic size.
pub const TYPICAL_HEADERS: [(&str, &str); 12] = [
    ("host", "app.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    ),
    (
        "accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("accept-language", "en-US,en;q=0.5"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("referer", "https://app.example.com/"),
    ("cookie", "session=8f14e45fceea167a5a36dedd4bea2543"),
    ("upgrade-insecure-requests", "1"),
    ("sec-fetch-dest", "document"),
    ("sec-fetch-mode", "navigate"),
    ("x-real-ip", "203.0.113.7"),
    ("x-forwarded-proto", "https"),
];

/// The work of the rightmost-only crates (`client-ip`, `axum-client-ip`): one
/// `X-Forwarded-For` line, trusted peer, 16 trusted CIDRs, and our layer non-recursive
/// (NGINX `real_ip_recursive off`: the rightmost entry), so that every implementation
/// returns the rightmost entry. The first two rows (1 and 4 entries, no other header) are
/// the goal's; the others show a realistic header map and a request that carries
/// `X-Forwarded-Port`, which our default settings read and the peers never do.
pub fn same_work_cases() -> Vec<LayerCase> {
    let with = |extra: &[(&'static str, &'static str)], value: &'static str| {
        let mut headers = HeaderMap::new();
        for &(name, v) in extra {
            headers.insert(name, HeaderValue::from_static(v));
        }
        headers.insert("x-forwarded-for", HeaderValue::from_static(value));
        headers
    };
    [
        ("XFF 1 entry", with(&[], "203.0.113.7"), CLIENT),
        ("XFF 4 entries", with(&[], CHAIN4), LAST_PROXY),
        (
            "XFF 1 entry + 12 typical headers",
            with(&TYPICAL_HEADERS, "203.0.113.7"),
            CLIENT,
        ),
        (
            "XFF 1 entry + X-Forwarded-Port",
            with(&[("x-forwarded-port", "41000")], "203.0.113.7"),
            CLIENT,
        ),
    ]
    .into_iter()
    .map(|(name, headers, ip)| {
        LayerCase::new(name, headers, RealIpLayer::x_forwarded_for, 16, ip, ip)
    })
    .collect()
}

impl LayerCase {
    /// A case resolving `headers` from [`PEER`] with `layer` over `cidrs` trusted CIDRs
    /// ([`trusted_cidrs`]); `client` is our answer, `rightmost` the peers'.
    fn new(
        name: &'static str,
        headers: HeaderMap,
        layer: fn(TrustedProxies) -> RealIpLayer,
        cidrs: usize,
        client: IpAddr,
        rightmost: IpAddr,
    ) -> Self {
        let cidrs = trusted_cidrs(cidrs);
        let trusted = TrustedProxies::parse_list(&cidrs).expect("valid CIDRs");
        let nets = cidrs
            .iter()
            .map(|c| c.parse().expect("valid CIDR"))
            .collect();
        let layer = layer(trusted);
        let peer = PeerAddr::Inet(PEER);
        let mut request = Request::new(());
        *request.headers_mut() = headers.clone();
        request.extensions_mut().insert(peer.clone());
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.headers = headers.clone();
        Self {
            name,
            client,
            rightmost,
            forwarded: headers.contains_key(http::header::FORWARDED),
            headers,
            service: RealIp::new(Echo, layer.clone()),
            without_port: layer.clone().without_port_header(),
            layer,
            peer,
            request: Some(request),
            parts,
            nets,
        }
    }

    /// Ours: `RealIpLayer::resolve`, the pure step the middleware runs per request.
    pub fn realip_resolve(&self) -> Option<IpAddr> {
        self.layer
            .resolve(black_box(&self.headers), Some(&self.peer))
            .client()
            .map(ClientAddr::ip)
    }

    /// Ours as [`realip_resolve`](Self::realip_resolve), without the port header
    /// (`RealIpLayer::without_port_header`): no `X-Forwarded-Port` lookup.
    pub fn realip_resolve_without_port(&self) -> Option<IpAddr> {
        self.without_port
            .resolve(black_box(&self.headers), Some(&self.peer))
            .client()
            .map(ClientAddr::ip)
    }

    /// Asserts every implementation's answer: ours (resolve, without the port header, the
    /// middleware) is [`client`](Self::client), `client-ip`'s and `axum-client-ip`'s
    /// [`rightmost`](Self::rightmost); `real-ip`, which only walks recursively, is checked on
    /// the recursive cases.
    ///
    /// # Panics
    ///
    /// If one differs.
    pub fn check(&mut self) {
        let (name, client) = (self.name, Some(self.client));
        assert_eq!(self.realip_resolve(), client, "{name}");
        assert_eq!(self.realip_resolve_without_port(), client, "{name}");
        assert_eq!(self.realip_service(), client, "{name}");
        if self.layer.strategy().is_recursive() {
            assert_eq!(self.real_ip(), client, "{name}");
        }
        assert_eq!(self.client_ip(), Some(self.rightmost), "{name}");
        assert_eq!(self.axum_client_ip(), Some(self.rightmost), "{name}");
    }

    /// Ours, the whole middleware: `RealIp::call` on a request carrying the transport peer
    /// (resolution, two extension inserts, inner call). The request is reused: the two
    /// extensions it inserted are removed first (two small map removals, included).
    pub fn realip_service(&mut self) -> Option<IpAddr> {
        let mut request = self.request.take().expect("request returned");
        request.extensions_mut().remove::<ClientAddr>();
        request.extensions_mut().remove::<Resolution>();
        let request = now(self.service.call(black_box(request))).expect("infallible");
        let ip = request.extensions().get::<ClientAddr>().map(ClientAddr::ip);
        self.request = Some(request);
        ip
    }

    /// `real-ip`: the same recursive walk against its CIDR list (a linear scan per hop).
    pub fn real_ip(&self) -> Option<IpAddr> {
        real_ip::real_ip(black_box(&self.headers), PEER.ip(), &self.nets)
    }

    /// `client-ip`: the rightmost entry, no trust check.
    pub fn client_ip(&self) -> Option<IpAddr> {
        if self.forwarded {
            client_ip::rightmost_forwarded(black_box(&self.headers)).ok()
        } else {
            client_ip::rightmost_x_forwarded_for(black_box(&self.headers)).ok()
        }
    }

    /// `axum-client-ip`: its `Rightmost*` extractor (`client-ip` behind axum's
    /// `FromRequestParts`).
    pub fn axum_client_ip(&mut self) -> Option<IpAddr> {
        let parts = black_box(&mut self.parts);
        if self.forwarded {
            now(axum_client_ip::RightmostForwarded::from_request_parts(
                parts,
                &(),
            ))
            .ok()
            .map(|ip| ip.0)
        } else {
            now(axum_client_ip::RightmostXForwardedFor::from_request_parts(
                parts,
                &(),
            ))
            .ok()
            .map(|ip| ip.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_agree() {
        for case in parse_cases() {
            assert_eq!(parse_realip(&case.buf), case.header_len, "{}", case.name);
            assert_eq!(parse_ppp(&case.buf), case.header_len, "{}", case.name);
            assert_eq!(parse_peer(&case.buf), case.header_len, "{}", case.name);
        }
    }

    #[test]
    fn resolvers_agree() {
        for mut case in layer_cases().into_iter().chain(same_work_cases()) {
            case.check();
            // The middleware's request is reused: the second call gives the same answer.
            assert_eq!(case.realip_service(), Some(case.client), "{}", case.name);
        }
    }

    #[test]
    fn same_work_cases_return_the_rightmost_entry_everywhere() {
        let cases = same_work_cases();
        assert_eq!(cases.len(), 4);
        for case in &cases {
            assert!(!case.layer.strategy().is_recursive(), "{}", case.name);
            assert_eq!(case.client, case.rightmost, "{}", case.name);
        }
        // The default settings read the port header when it is there; the other layer never.
        let with_port = &cases[3];
        let resolved = with_port
            .layer
            .resolve(&with_port.headers, Some(&with_port.peer));
        assert_eq!(resolved.client().and_then(ClientAddr::port), Some(41000));
        let resolved = with_port
            .without_port
            .resolve(&with_port.headers, Some(&with_port.peer));
        assert_eq!(resolved.client().and_then(ClientAddr::port), None);
    }

    #[test]
    fn cidr_lists_are_disjoint_and_sized() {
        let nets = trusted_cidrs(10_000);
        assert_eq!(nets.len(), 10_000);
        let set = TrustedProxies::parse_list(&nets).unwrap();
        assert_eq!(set.networks().len(), 10_000);
    }
}
