//! The pure resolution step: configuration + headers + transport peer → client address.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, Method, Version, header};
use realip_core::{AddrSource, ClientAddr, TrustedProxies};
use realip_listener::ProxiedAddr;

use crate::forwarded::{RevElements, parse_element};
use crate::parse::{Entries, Node, RevEntries, StopReason, parse_entry, parse_port_bytes};

/// How the client address is chosen from the configured header.
///
/// See the [crate documentation](crate) for the proxy configuration each strategy matches
/// and its spoofing risk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// NGINX realip: `set_real_ip_from` + `real_ip_header` + `real_ip_recursive`.
    ///
    /// The header (a comma-separated list such as `X-Forwarded-For`) is honoured only when
    /// the transport peer is trusted. Non-recursive: the rightmost entry. Recursive: walk
    /// right to left, skip trusted entries, return the first untrusted one (the leftmost
    /// when every entry is trusted).
    TrustedProxies,
    /// Envoy `xff_num_trusted_hops` (with `use_remote_address`): `N` proxies in front of
    /// this server each append the address they saw; the client is the `N`th entry from
    /// the right. `0` ignores the header.
    TrustedHops(usize),
    /// A header holding exactly one address (`X-Real-IP`, `CF-Connecting-IP`, …), written
    /// by the trusted proxy in front of this server. More than one line is an error.
    SingleValue,
    /// EMQX `proxy_address_header`: the leftmost entry. Safe only when the outermost proxy
    /// overwrites the header; never use it when a proxy appends to a client-sent header.
    Leftmost,
    /// RFC 7239 `Forwarded`: the `for=` node of each element, walked like
    /// [`TrustedProxies`](Self::TrustedProxies). `unknown` and obfuscated nodes stop the walk.
    Forwarded,
}

impl Strategy {
    /// The header this strategy reads unless another is configured.
    pub const fn default_header(self) -> HeaderName {
        match self {
            Self::TrustedProxies | Self::TrustedHops(_) | Self::Leftmost => {
                HeaderName::from_static("x-forwarded-for")
            }
            Self::SingleValue => HeaderName::from_static("x-real-ip"),
            Self::Forwarded => header::FORWARDED,
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = ParseStrategyError;

    /// Parses `trusted`, `hops:N`, `single`, `leftmost` or `forwarded` (the names used by
    /// the `whoami` example's `--strategy`).
    ///
    /// ```
    /// use realip_tower::Strategy;
    /// assert_eq!("hops:2".parse::<Strategy>().unwrap(), Strategy::TrustedHops(2));
    /// assert_eq!("forwarded".parse::<Strategy>().unwrap(), Strategy::Forwarded);
    /// assert_eq!(Strategy::TrustedHops(2).to_string(), "hops:2");
    /// assert!("rightmost".parse::<Strategy>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "trusted" => Ok(Self::TrustedProxies),
            "single" => Ok(Self::SingleValue),
            "leftmost" => Ok(Self::Leftmost),
            "forwarded" => Ok(Self::Forwarded),
            _ => match s.strip_prefix("hops:").map(str::parse::<usize>) {
                Some(Ok(hops)) => Ok(Self::TrustedHops(hops)),
                _ => Err(ParseStrategyError(s.to_owned())),
            },
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TrustedProxies => f.write_str("trusted"),
            Self::TrustedHops(hops) => write!(f, "hops:{hops}"),
            Self::SingleValue => f.write_str("single"),
            Self::Leftmost => f.write_str("leftmost"),
            Self::Forwarded => f.write_str("forwarded"),
        }
    }
}

/// The error of parsing a [`Strategy`] name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {0:?}: expected trusted, hops:N, single, leftmost or forwarded")]
pub struct ParseStrategyError(String);

/// The transport-level peer of a request: whom the headers' trust is checked against.
///
/// With the `realip-listener` PROXY listener the peer is the PROXY header's source
/// ([`AddrSource::ProxyProtocol`]), so that PROXY protocol and forwarded headers compose.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportPeer {
    /// An internet peer: the socket's peer ([`AddrSource::Socket`]) or the PROXY header's
    /// source ([`AddrSource::ProxyProtocol`]).
    Inet(ClientAddr),
    /// A Unix domain socket peer, trusted when [`TrustedProxies::contains_unix`].
    Unix,
}

impl TransportPeer {
    /// A socket peer ([`AddrSource::Socket`]).
    pub const fn socket(addr: SocketAddr) -> Self {
        Self::Inet(ClientAddr::from_socket_addr(addr, AddrSource::Socket))
    }

    /// A peer learned from a PROXY protocol header ([`AddrSource::ProxyProtocol`]).
    pub const fn proxy_protocol(addr: SocketAddr) -> Self {
        Self::Inet(ClientAddr::from_socket_addr(
            addr,
            AddrSource::ProxyProtocol,
        ))
    }

    /// The peer of a connection accepted by `realip-listener`: its real client (the PROXY
    /// source, else the socket peer), or [`Unix`](Self::Unix) for a Unix socket without a
    /// usable PROXY header.
    pub fn from_proxied(addr: &ProxiedAddr) -> Self {
        match (addr.client(), addr.socket_peer().inet()) {
            (Some(client), _) => Self::Inet(client.clone()),
            (None, Some(socket)) => Self::socket(socket),
            (None, None) => Self::Unix,
        }
    }

    /// Finds the transport peer in request extensions, in this order:
    ///
    /// 1. [`ProxiedAddr`] (hyper-util users insert it per connection),
    /// 2. `axum::extract::ConnectInfo<ProxiedAddr>` (feature `axum`),
    /// 3. `axum::extract::ConnectInfo<SocketAddr>` (feature `axum`),
    /// 4. axum's `MockConnectInfo` of either type, the test stand-in for `ConnectInfo`
    ///    (feature `axum`; as in axum, a real `ConnectInfo` takes precedence),
    /// 5. a [`TransportPeer`] inserted by the application (for servers such as tonic that
    ///    expose the peer in their own type).
    pub fn from_extensions(extensions: &http::Extensions) -> Option<Self> {
        if let Some(addr) = extensions.get::<ProxiedAddr>() {
            return Some(Self::from_proxied(addr));
        }
        #[cfg(feature = "axum")]
        {
            use axum::extract::ConnectInfo;
            use axum::extract::connect_info::MockConnectInfo;
            if let Some(ConnectInfo(addr)) = extensions.get::<ConnectInfo<ProxiedAddr>>() {
                return Some(Self::from_proxied(addr));
            }
            if let Some(ConnectInfo(addr)) = extensions.get::<ConnectInfo<SocketAddr>>() {
                return Some(Self::socket(*addr));
            }
            if let Some(MockConnectInfo(addr)) = extensions.get::<MockConnectInfo<ProxiedAddr>>() {
                return Some(Self::from_proxied(addr));
            }
            if let Some(MockConnectInfo(addr)) = extensions.get::<MockConnectInfo<SocketAddr>>() {
                return Some(Self::socket(*addr));
            }
        }
        extensions.get::<Self>().cloned()
    }

    /// The peer as a client address, for internet peers.
    pub const fn client_addr(&self) -> Option<&ClientAddr> {
        match self {
            Self::Inet(addr) => Some(addr),
            Self::Unix => None,
        }
    }

    fn is_trusted(&self, trusted: &TrustedProxies) -> bool {
        match self {
            Self::Inet(addr) => trusted.contains(addr.ip()),
            Self::Unix => trusted.contains_unix(),
        }
    }
}

impl std::fmt::Display for TransportPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inet(addr) => addr.fmt(f),
            Self::Unix => f.write_str("unix:"),
        }
    }
}

/// Where the port of a header-derived address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PortSource {
    /// Written in the address entry itself (`1.2.3.4:5678`, `"[v6]:443"`).
    Entry,
    /// Taken from the port header (`X-Forwarded-Port`).
    PortHeader,
    /// Unknown.
    None,
}

/// Which header entry decided the client address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeaderChoice {
    header: HeaderName,
    position: usize,
    entries: usize,
    port: PortSource,
    stopped: Option<StopReason>,
}

impl HeaderChoice {
    /// The header that was read (lowercase).
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Position of the chosen entry counted from the **right**, starting at 0 (the entry
    /// appended by the nearest proxy). Empty entries are not counted.
    pub const fn position_from_right(&self) -> usize {
        self.position
    }

    /// Number of non-empty entries (elements for `Forwarded`) over all lines of the header.
    pub const fn entries(&self) -> usize {
        self.entries
    }

    /// Position of the chosen entry counted from the left, starting at 0.
    pub const fn position_from_left(&self) -> usize {
        self.entries.saturating_sub(self.position + 1)
    }

    /// Where the port came from.
    pub const fn port_source(&self) -> PortSource {
        self.port
    }

    /// Set when the walk stopped early at the entry to the left of the chosen one, which
    /// is not an address (fail closed: the last good address reached is kept, as NGINX does).
    pub const fn stopped_by(&self) -> Option<StopReason> {
        self.stopped
    }
}

/// Why no header entry decided the client address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fallback {
    /// The configured header is absent (or empty): the client is the transport peer.
    NoHeader,
    /// The header is present but the transport peer is not a trusted proxy: the header is
    /// ignored as possibly forged.
    UntrustedPeer,
    /// No transport peer is known and headers are not trusted unconditionally; no client
    /// address can be given.
    NoTransportPeer,
    /// The layer only resolves WebSocket upgrade requests and this is not one: the client
    /// is the transport peer.
    NotWebSocket,
    /// The strategy ignores headers ([`Strategy::TrustedHops`] with 0 hops).
    HeadersIgnored,
    /// The first entry examined is not an address: the client is the transport peer.
    Invalid(StopReason),
    /// A single-value header arrived in several lines (`lines` of them): rejected.
    MultipleLines(usize),
}

impl Fallback {
    /// A short, lowercase description for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoHeader => "header absent",
            Self::UntrustedPeer => "transport peer is not a trusted proxy",
            Self::NoTransportPeer => "no transport peer known",
            Self::NotWebSocket => "not a websocket upgrade",
            Self::HeadersIgnored => "headers ignored by configuration",
            Self::Invalid(reason) => reason.as_str(),
            Self::MultipleLines(_) => "single-value header has several lines",
        }
    }

    /// Whether this outcome means a header was present but rejected (a forged or broken
    /// header, logged at `warn`).
    pub const fn is_rejection(self) -> bool {
        matches!(
            self,
            Self::UntrustedPeer | Self::Invalid(_) | Self::MultipleLines(_)
        )
    }
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the client address was decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// A header entry decided.
    Header(HeaderChoice),
    /// No header entry decided; the client (if any) is the transport peer.
    Fallback(Fallback),
}

/// The result of resolving one request: the client address and how it was decided.
///
/// [`RealIp`](crate::RealIp) inserts it into the request extensions next to the
/// [`ClientAddr`], so handlers and admin APIs can show which header decided.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resolution {
    client: Option<ClientAddr>,
    peer: Option<TransportPeer>,
    outcome: Outcome,
}

impl Resolution {
    /// The resolved client, `None` when no transport peer is known and no header applied
    /// (or the peer is a Unix socket).
    pub const fn client(&self) -> Option<&ClientAddr> {
        self.client.as_ref()
    }

    /// The transport peer the headers' trust was checked against.
    pub const fn peer(&self) -> Option<&TransportPeer> {
        self.peer.as_ref()
    }

    /// How the client was decided.
    pub const fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Consumes the resolution, returning the client address.
    pub fn into_client(self) -> Option<ClientAddr> {
        self.client
    }

    pub(crate) fn fallback(peer: Option<&TransportPeer>, fallback: Fallback) -> Self {
        Self {
            client: peer.and_then(TransportPeer::client_addr).cloned(),
            peer: peer.cloned(),
            outcome: Outcome::Fallback(fallback),
        }
    }
}

/// Resolution settings (shared by the layer through an `Arc`).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) strategy: Strategy,
    pub(crate) header: HeaderName,
    pub(crate) source: AddrSource,
    pub(crate) port_header: Option<HeaderName>,
    pub(crate) trusted: TrustedProxies,
    pub(crate) recursive: bool,
    pub(crate) websocket_only: bool,
    pub(crate) unconditional: bool,
}

impl Config {
    pub(crate) fn new(strategy: Strategy, trusted: TrustedProxies) -> Self {
        let header = strategy.default_header();
        let port_header = match strategy {
            Strategy::Forwarded => None,
            _ => Some(HeaderName::from_static("x-forwarded-port")),
        };
        Self {
            strategy,
            source: AddrSource::header(header.as_str()),
            header,
            port_header,
            trusted,
            recursive: false,
            websocket_only: false,
            unconditional: false,
        }
    }

    pub(crate) fn set_header(&mut self, header: HeaderName) {
        self.source = AddrSource::header(header.as_str());
        self.header = header;
    }
}

/// Whether a request is a WebSocket handshake: an HTTP/1.x `Upgrade: websocket` with
/// `Connection: upgrade` (tokens case-insensitive, in any line and position, as in
/// `Connection: keep-alive, Upgrade`), or an HTTP/2 or HTTP/3 `CONNECT`.
///
/// For HTTP/2 and later, WebSockets use the extended `CONNECT` of RFC 8441, whose
/// `:protocol` pseudo-header is not part of
/// [`HeaderMap`](https://docs.rs/http/1/http/header/struct.HeaderMap.html) (hyper keeps it in an extension),
/// so every `CONNECT` counts as a handshake there.
///
/// ```
/// use http::{HeaderMap, Method, Version};
/// use realip_tower::is_websocket_upgrade;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("connection", "keep-alive, Upgrade".parse().unwrap());
/// headers.insert("upgrade", "WebSocket".parse().unwrap());
/// assert!(is_websocket_upgrade(&Method::GET, Version::HTTP_11, &headers));
/// headers.insert("upgrade", "h2c".parse().unwrap());
/// assert!(!is_websocket_upgrade(&Method::GET, Version::HTTP_11, &headers));
/// ```
pub fn is_websocket_upgrade(method: &Method, version: Version, headers: &HeaderMap) -> bool {
    if version >= Version::HTTP_2 {
        return method == Method::CONNECT;
    }
    let has_token = |name: HeaderName, token: &str| {
        headers.get_all(name).iter().any(|line| {
            line.as_bytes()
                .split(|&b| b == b',')
                .any(|t| crate::parse::trim_ows(t).eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    has_token(header::CONNECTION, "upgrade") && has_token(header::UPGRADE, "websocket")
}

/// Resolves the client of one request (the WebSocket-only setting is applied by the
/// caller, which knows the method).
///
/// The header is looked up once; the walk counts the entries it passes and then only counts
/// (without parsing) the ones to the left of where it stopped, for [`HeaderChoice::entries`].
pub(crate) fn resolve(
    config: &Config,
    headers: &HeaderMap,
    peer: Option<&TransportPeer>,
) -> Resolution {
    let all = headers.get_all(&config.header);
    let mut lines = all.iter();
    let Some(first_line) = lines.next() else {
        return Resolution::fallback(peer, Fallback::NoHeader);
    };
    if config.strategy == Strategy::TrustedHops(0) {
        // Decided before the trust check: a header that is ignored by configuration is not
        // a rejected (possibly forged) one, whoever sent it.
        return Resolution::fallback(peer, Fallback::HeadersIgnored);
    }
    let peer_trusted = match peer {
        Some(peer) => peer.is_trusted(&config.trusted),
        None => false,
    };
    if !(peer_trusted || config.unconditional) {
        let fallback = match peer {
            Some(_) => Fallback::UntrustedPeer,
            None => Fallback::NoTransportPeer,
        };
        return Resolution::fallback(peer, fallback);
    }
    let walk = match config.strategy {
        Strategy::TrustedProxies => walk_trusted(RevEntries::new(all), parse_entry, config),
        Strategy::Forwarded => walk_trusted(RevElements::new(all), parse_element, config),
        Strategy::TrustedHops(hops) => walk_hops(RevEntries::new(all), hops),
        Strategy::Leftmost => walk_leftmost(Entries::new(all)),
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
            let (port, port_source) = match port {
                Some(port) => (Some(port), PortSource::Entry),
                None => match header_port(config, headers, position, entries) {
                    Some(port) => (Some(port), PortSource::PortHeader),
                    None => (None, PortSource::None),
                },
            };
            Resolution {
                client: Some(ClientAddr::new(ip, port, config.source.clone())),
                peer: peer.cloned(),
                outcome: Outcome::Header(HeaderChoice {
                    header: config.header.clone(),
                    position,
                    entries,
                    port: port_source,
                    stopped,
                }),
            }
        }
        Walk::Empty => Resolution::fallback(peer, Fallback::NoHeader),
        Walk::Invalid(reason) => Resolution::fallback(peer, Fallback::Invalid(reason)),
    }
}

/// The entry that decided, with the number of non-empty entries of the whole header.
struct Found {
    ip: IpAddr,
    port: Option<u16>,
    position: usize,
    entries: usize,
    stopped: Option<StopReason>,
}

enum Walk {
    Found(Found),
    Empty,
    Invalid(StopReason),
}

/// NGINX's `ngx_http_get_forwarded_addr_internal`: from the right, take an entry; continue
/// (recursive only) while it is trusted; stop at a non-address, keeping the last good one.
///
/// `entries` yields the raw entries from the right; those left of where the walk ends are
/// counted, not parsed.
fn walk_trusted<'a>(
    mut entries: impl Iterator<Item = &'a [u8]>,
    parse: impl Fn(&'a [u8]) -> Node,
    config: &Config,
) -> Walk {
    let mut found: Option<(IpAddr, Option<u16>, usize)> = None;
    let mut position = 0;
    while let Some(entry) = entries.next() {
        match parse(entry) {
            Node::Ip(ip, port) => {
                found = Some((ip, port, position));
                if !config.recursive || !config.trusted.contains(ip) {
                    return finish(found, None, position + 1 + entries.count());
                }
            }
            Node::Stop(reason) => {
                return match found {
                    Some(_) => finish(found, Some(reason), position + 1 + entries.count()),
                    None => Walk::Invalid(reason),
                };
            }
        }
        position += 1;
    }
    finish(found, None, position)
}

/// The walk's result once the total number of entries is known.
fn finish(
    found: Option<(IpAddr, Option<u16>, usize)>,
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

/// The `hops`th entry from the right; the leftmost when there are fewer (every entry was
/// then written by a trusted hop); a non-address stops the walk, keeping the last good one.
fn walk_hops<'a>(mut entries: impl Iterator<Item = &'a [u8]>, hops: usize) -> Walk {
    let mut found: Option<(IpAddr, Option<u16>, usize)> = None;
    let mut position = 0;
    while position < hops {
        let Some(entry) = entries.next() else {
            return finish(found, None, position);
        };
        match parse_entry(entry) {
            Node::Ip(ip, port) => found = Some((ip, port, position)),
            Node::Stop(reason) => {
                return match found {
                    Some(_) => finish(found, Some(reason), position + 1 + entries.count()),
                    None => Walk::Invalid(reason),
                };
            }
        }
        position += 1;
    }
    finish(found, None, position + entries.count())
}

fn walk_leftmost<'a>(mut entries: impl Iterator<Item = &'a [u8]>) -> Walk {
    let Some(first) = entries.next() else {
        return Walk::Empty;
    };
    match parse_entry(first) {
        Node::Ip(ip, port) => {
            let after = entries.count();
            Walk::Found(Found {
                ip,
                port,
                position: after,
                entries: after + 1,
                stopped: None,
            })
        }
        Node::Stop(reason) => Walk::Invalid(reason),
    }
}

fn walk_single(line: &[u8]) -> Walk {
    let line = crate::parse::trim_ows(line);
    if line.is_empty() {
        return Walk::Empty;
    }
    match parse_entry(line) {
        Node::Ip(ip, port) => Walk::Found(Found {
            ip,
            port,
            position: 0,
            entries: 1,
            stopped: None,
        }),
        Node::Stop(reason) => Walk::Invalid(reason),
    }
}

/// The port header's value for the chosen entry: at the same position when both lists have
/// the same number of entries, else the header's only value, else none.
///
/// One lookup and one pass over the port header, which stops as soon as it holds more
/// entries than either rule can use.
fn header_port(
    config: &Config,
    headers: &HeaderMap,
    position: usize,
    entries: usize,
) -> Option<u16> {
    let name = config.port_header.as_ref()?;
    let limit = entries.max(1);
    let mut count = 0;
    let mut first = None;
    let mut at_position = None;
    for raw in RevEntries::new(headers.get_all(name)) {
        if count == limit {
            // More entries than the address header and more than one: neither rule applies.
            return None;
        }
        if count == 0 {
            first = Some(raw);
        }
        if count == position {
            at_position = Some(raw);
        }
        count += 1;
    }
    let raw = if count == entries {
        at_position?
    } else if count == 1 {
        first?
    } else {
        return None;
    };
    parse_port_bytes(raw)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn websocket_upgrade_detection() {
        let get = Method::GET;
        let h11 = Version::HTTP_11;
        let yes = [
            headers(&[("connection", "Upgrade"), ("upgrade", "websocket")]),
            headers(&[
                ("connection", "keep-alive, upgrade"),
                ("upgrade", "WebSocket"),
            ]),
            headers(&[
                ("connection", "keep-alive"),
                ("connection", "Upgrade"),
                ("upgrade", "h2c, websocket"),
            ]),
        ];
        for map in &yes {
            assert!(is_websocket_upgrade(&get, h11, map), "{map:?}");
        }
        let no = [
            headers(&[]),
            headers(&[("upgrade", "websocket")]),
            headers(&[("connection", "upgrade")]),
            headers(&[("connection", "upgrade"), ("upgrade", "h2c")]),
            headers(&[("connection", "upgraded"), ("upgrade", "websocket")]),
        ];
        for map in &no {
            assert!(!is_websocket_upgrade(&get, h11, map), "{map:?}");
        }
        // HTTP/2 extended CONNECT (RFC 8441).
        assert!(is_websocket_upgrade(
            &Method::CONNECT,
            Version::HTTP_2,
            &HeaderMap::new()
        ));
        assert!(!is_websocket_upgrade(&get, Version::HTTP_2, &yes[0]));
    }

    #[test]
    fn transport_peer_from_extensions_prefers_the_proxied_address() {
        use realip_core::PeerAddr;

        let mut ext = http::Extensions::new();
        assert_eq!(TransportPeer::from_extensions(&ext), None);
        let fallback = TransportPeer::socket("192.0.2.9:9".parse().unwrap());
        ext.insert(fallback.clone());
        assert_eq!(TransportPeer::from_extensions(&ext), Some(fallback));

        #[cfg(feature = "axum")]
        {
            // axum's test stand-in for `ConnectInfo` (what `ConnectInfo` itself honours).
            use axum::extract::connect_info::MockConnectInfo;
            let mock: SocketAddr = "192.0.2.7:7".parse().unwrap();
            ext.insert(MockConnectInfo(mock));
            assert_eq!(
                TransportPeer::from_extensions(&ext),
                Some(TransportPeer::socket(mock))
            );
            let mut mocked_proxied = http::Extensions::new();
            mocked_proxied.insert(MockConnectInfo(ProxiedAddr::new(
                None,
                PeerAddr::Inet("10.0.0.3:4000".parse().unwrap()),
                None,
                None,
            )));
            assert_eq!(
                TransportPeer::from_extensions(&mocked_proxied),
                Some(TransportPeer::socket("10.0.0.3:4000".parse().unwrap()))
            );

            let sock: SocketAddr = "192.0.2.8:8".parse().unwrap();
            ext.insert(axum::extract::ConnectInfo(sock));
            assert_eq!(
                TransportPeer::from_extensions(&ext),
                Some(TransportPeer::socket(sock))
            );
        }

        let client: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        let proxied = ProxiedAddr::new(
            Some(ClientAddr::from_socket_addr(
                client,
                AddrSource::ProxyProtocol,
            )),
            PeerAddr::Inet("10.0.0.1:4000".parse().unwrap()),
            None,
            None,
        );
        #[cfg(feature = "axum")]
        {
            ext.insert(axum::extract::ConnectInfo(proxied.clone()));
            assert_eq!(
                TransportPeer::from_extensions(&ext),
                Some(TransportPeer::proxy_protocol(client))
            );
        }
        ext.insert(proxied);
        assert_eq!(
            TransportPeer::from_extensions(&ext),
            Some(TransportPeer::proxy_protocol(client))
        );

        // A Unix socket connection without a PROXY header.
        let unix = ProxiedAddr::new(None, PeerAddr::Unix(None), None, None);
        assert_eq!(TransportPeer::from_proxied(&unix), TransportPeer::Unix);
        let no_header = ProxiedAddr::new(
            None,
            PeerAddr::Inet("10.0.0.1:4000".parse().unwrap()),
            None,
            None,
        );
        assert_eq!(
            TransportPeer::from_proxied(&no_header),
            TransportPeer::socket("10.0.0.1:4000".parse().unwrap())
        );
    }
}
