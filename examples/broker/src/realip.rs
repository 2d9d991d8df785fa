//! Glue to `realip-listener` and `realip-tower`: listener and layer from the configuration,
//! and the connection record's `proxy` / `forwarded` JSON.

use std::io;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::http::{HeaderMap, HeaderName};
use axum::serve::{IncomingStream, Listener};
use std::net::SocketAddr;

use realip_core::{AddrSource, ClientAddr, Live, PeerAddr, TrustedProxies};
use realip_listener::{
    Connection, HandshakeError, Policy, PolicySource, ProxiedAddr, ProxiedStream, ProxyInfo,
    ProxyListener, tlv_type,
};
use realip_tower::{Outcome, PortSource, RealIpLayer, Resolution, Strategy};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::broker::ConnMeta;
use crate::config::Forwarding;
use crate::prom::Reject;
use crate::proxy_rules::ProxyRules;
use crate::tls::{TlsAddr, TlsFacts, TlsListener};

/// A broker listener: TCP, or the TCP under the WebSocket server.
///
/// With `--tcp-proxy-protocol` / `--ws-proxy-protocol` every connection must start with a
/// PROXY protocol header, whoever sends it (EMQX `proxy_protocol = true`, NGINX
/// `listen ... proxy_protocol`): a connection without one is closed. `--proxy-from` decides
/// whose header is believed (NGINX `set_real_ip_from`), `--proxy-optional` who may also
/// connect without one (health checkers), and `--proxy-default` what happens to everyone
/// else ([`ProxyRules`]): a header from a peer outside both ranges is not read, and that
/// connection is closed with a `warn` line naming the peer. The rules are read per
/// connection from a [`Live`] handle that a reload replaces. Without the flag the bytes are
/// not looked at and the socket peer is the client.
pub(crate) struct MqttListener {
    inner: ProxyListener,
    /// The flag that requires a header, when it is on, and the rules.
    require: Option<(&'static str, Live<ProxyRules>)>,
    /// Accepted sockets have `TCP_NODELAY` from the listener (see [`nodelay_on_listener`]);
    /// otherwise `accept` sets it on each.
    nodelay_inherited: bool,
}

impl MqttListener {
    /// Wraps a bound listener; `flag` names the flag that turns PROXY protocol on
    /// (`--tcp-proxy-protocol` or `--ws-proxy-protocol`) for the log lines.
    pub(crate) fn new(
        listener: TcpListener,
        flag: &'static str,
        proxy_protocol: bool,
        rules: &Live<ProxyRules>,
        timeout: Duration,
    ) -> Self {
        let nodelay_inherited = nodelay_on_listener(&listener);
        let builder = ProxyListener::builder().header_timeout(timeout);
        let builder = if proxy_protocol {
            // Peers outside the ranges get `Policy::Reject`: their header is refused unread,
            // and their connections without a header are closed by `accept` below unless
            // `--proxy-default none`.
            let live = rules.clone();
            builder.policy_source(PolicySource::from_fn(move |peer| {
                live.load().policy_for(peer)
            }))
        } else {
            builder.policy(Policy::Skip)
        };
        Self {
            inner: builder.listen(listener),
            require: proxy_protocol.then(|| (flag, rules.clone())),
            nodelay_inherited,
        }
    }

    /// The next connection that may be served, with `TCP_NODELAY` on. Connections refused by
    /// the rules above are logged and closed here (bad or missing headers from trusted peers
    /// are logged by `realip-listener`). Cancel-safe.
    pub(crate) async fn accept(&mut self) -> Connection<TcpStream> {
        let (stream, addr) = self.accept_any().await;
        if !self.nodelay_inherited {
            let _ = stream.get_ref().set_nodelay(true);
        }
        (stream, addr)
    }

    async fn accept_any(&mut self) -> Connection<TcpStream> {
        loop {
            match self.inner.try_accept().await {
                Ok((stream, addr)) => match &self.require {
                    Some((flag, rules))
                        if addr.proxy_info().is_none()
                            && rules.load().refuses_without_header(addr.socket_peer()) =>
                    {
                        Reject::MissingProxyHeader.count();
                        tracing::warn!(
                            peer = %addr.socket_peer(),
                            "connection from {} closed: no PROXY protocol header, which {flag} \
                             requires from every peer outside --proxy-optional",
                            addr.socket_peer()
                        );
                    }
                    _ => return (stream, addr),
                },
                Err(HandshakeError::Forbidden { peer, .. }) => {
                    Reject::UntrustedProxyHeader.count();
                    tracing::warn!(
                        peer = %peer,
                        "connection from {peer} closed: PROXY protocol header from a peer \
                         outside --proxy-from and --proxy-optional, not believed"
                    );
                }
                // Logged by the listener.
                Err(_) => {}
            }
        }
    }
}

/// Sets `TCP_NODELAY` on a listening socket; true where accepted sockets inherit it (Linux
/// copies the listener's options into each accepted socket), which then need no
/// `setsockopt` of their own. MQTT traffic is small packets answered at once, on every
/// transport: with Nagle's algorithm, a PUBLISH written right after a PUBACK on the same
/// connection waits for the peer's delayed ACK (40 ms on Linux).
pub(crate) fn nodelay_on_listener(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

/// The WebSocket server's connect info: the [`ProxiedAddr`] of the connection, and the TLS
/// handshake's facts on `--wss`. [`insert_proxied_addr`] turns it into the
/// `ConnectInfo<ProxiedAddr>` that `realip-tower` and the upgrade handler read (and a
/// [`TlsFacts`] extension).
#[derive(Clone, Debug)]
pub(crate) struct WsPeer(pub(crate) ProxiedAddr, pub(crate) Option<TlsFacts>);

impl Listener for MqttListener {
    type Io = ProxiedStream<TcpStream>;
    type Addr = ProxiedAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        MqttListener::accept(self).await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Listener::local_addr(&self.inner)
    }
}

impl Connected<IncomingStream<'_, MqttListener>> for WsPeer {
    fn connect_info(stream: IncomingStream<'_, MqttListener>) -> Self {
        Self(stream.remote_addr().clone(), None)
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for WsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let TlsAddr { addr, tls } = stream.remote_addr().clone();
        Self(addr, tls)
    }
}

/// Middleware: copies [`WsPeer`] into the request as `ConnectInfo<ProxiedAddr>` (and its
/// [`TlsFacts`], when there are some).
pub(crate) async fn insert_proxied_addr(
    ConnectInfo(WsPeer(addr, tls)): ConnectInfo<WsPeer>,
    mut request: axum::extract::Request,
) -> axum::extract::Request {
    request.extensions_mut().insert(ConnectInfo(addr));
    if let Some(tls) = tls {
        request.extensions_mut().insert(tls);
    }
    request
}

/// The forwarded-header layer for the WebSocket listener: `--ws-strategy` (with
/// `--ws-recursive` folded in by the configuration), headers believed from `--trusted-proxy`,
/// by default loopback, or any peer for `hops:N` (Envoy trusts its hop count, not addresses).
pub(crate) fn real_ip_layer(fwd: &Forwarding) -> Result<RealIpLayer, String> {
    let header = HeaderName::from_bytes(fwd.header.as_bytes())
        .map_err(|_| format!("invalid header name {:?}", fwd.header))?;
    let layer = RealIpLayer::new(fwd.strategy, trusted_proxies(fwd)).header(header);
    Ok(match &fwd.port_header {
        Some(name) => layer.port_header(
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?,
        ),
        None => layer.without_port_header(),
    })
}

/// The proxies whose headers the WebSocket layer believes: `--trusted-proxy`, by default
/// loopback, or any peer for `hops:N`.
pub(crate) fn trusted_proxies(fwd: &Forwarding) -> TrustedProxies {
    match (&fwd.trusted, fwd.strategy) {
        (Some(set), _) => set.clone(),
        (None, Strategy::TrustedHops(_)) => TrustedProxies::any(),
        (None, _) => TrustedProxies::loopback(),
    }
}

/// The connection record's addresses, from what the PROXY listener accepted.
pub(crate) fn conn_meta(listener: &'static str, addr: &ProxiedAddr) -> ConnMeta {
    // One spelling for an IPv4 client on a dual-stack (`[::]`) listener: 127.0.0.1:5000,
    // as in `peername`, not [::ffff:127.0.0.1]:5000.
    let socket_peer = match addr.socket_peer() {
        PeerAddr::Inet(peer) => PeerAddr::Inet(canonical(*peer)),
        other => other.clone(),
    };
    let client = addr.client().unwrap_or_else(|| {
        // A Unix socket peer without a header: no IP to show. (The broker listens on TCP
        // only, so this does not happen; keep a well-formed record anyway.)
        ClientAddr::new(
            std::net::Ipv4Addr::UNSPECIFIED.into(),
            None,
            AddrSource::Socket,
        )
    });
    let proxy = addr.proxy_info();
    ConnMeta {
        listener,
        client,
        socket_peer,
        sockname: proxy
            .and_then(ProxyInfo::destination_inet)
            .or_else(|| addr.local_addr())
            .map(canonical),
        proxy: proxy.map(proxy_json),
        forwarded: None,
        tls: None,
        verified_cn: match proxy {
            Some(info) => info
                .tlvs()
                .verified_client_cn()
                .map(str::to_owned)
                .map_err(|e| e.to_string().into()),
            None => Err("the connection has no PROXY protocol header".into()),
        },
    }
}

/// An IPv4-mapped IPv6 socket address as IPv4.
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        v4 => v4,
    }
}

/// `{"version": "v2", "command": "proxy", "source": ..., "destination": ..., "tlvs": [...]}`.
pub(crate) fn proxy_json(info: &ProxyInfo) -> Value {
    let tlvs: Vec<Value> = info
        .tlvs()
        .raw()
        .iter()
        .map(|tlv| {
            let value = tlv.value();
            let mut json = json!({
                "type": tlv.kind(),
                "name": tlv_name(tlv.kind()),
                "hex": hex(value),
            });
            if tlv.kind() != tlv_type::CRC32C && tlv.kind() != tlv_type::SSL {
                if let Some(text) = printable(value) {
                    json["text"] = json!(text);
                }
            }
            json
        })
        .collect();
    let mut json = json!({
        "version": info.version().as_str(),
        "command": info.command().as_str(),
        "source": info.source().map(|a| a.to_string()),
        "destination": info.destination().map(|a| a.to_string()),
        "tlvs": tlvs,
    });
    let parsed = info.tlvs();
    if let Some(authority) = parsed.authority() {
        json["authority"] = json!(authority);
    }
    if let Some(id) = parsed.unique_id() {
        // HAProxy's unique ids are text; anything else is shown as hex.
        json["unique_id"] = json!(printable(id).map_or_else(|| hex(id), str::to_owned));
    }
    if let Some(crc) = parsed.crc32c() {
        json["crc32c"] = json!(format!("{crc:08x}"));
    }
    if let Some(ssl) = parsed.ssl() {
        json["ssl"] = json!({
            "client_flags": ssl.client_flags(),
            "verified": ssl.verified(),
            "version": ssl.version(),
            "cn": ssl.client_cn(),
            "cipher": ssl.cipher(),
        });
    }
    json
}

fn tlv_name(kind: u8) -> &'static str {
    match kind {
        tlv_type::ALPN => "alpn",
        tlv_type::AUTHORITY => "authority",
        tlv_type::CRC32C => "crc32c",
        tlv_type::NOOP => "noop",
        tlv_type::UNIQUE_ID => "unique_id",
        tlv_type::SSL => "ssl",
        tlv_type::NETNS => "netns",
        tlv_type::GCP => "gcp",
        tlv_type::AWS => "aws",
        tlv_type::AZURE => "azure",
        _ => "custom",
    }
}

/// `bytes` as text, when it is non-empty printable ASCII.
fn printable(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() || !bytes.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// When a header decided the client: the header lines that did (address header and port
/// header, every line in order), and which entry was chosen.
pub(crate) fn forwarded_json(
    resolution: &Resolution,
    headers: &HeaderMap,
    port_header: Option<&str>,
) -> Option<Value> {
    let Outcome::Header(choice) = resolution.outcome() else {
        return None;
    };
    let lines = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .map(|v| format!("{name}: {}", String::from_utf8_lossy(v.as_bytes())))
            .collect()
    };
    let mut all = lines(choice.header().as_str());
    if choice.port_source() == PortSource::PortHeader {
        if let Some(port_header) = port_header {
            all.extend(lines(&port_header.to_ascii_lowercase()));
        }
    }
    Some(json!({
        "header": choice.header().as_str(),
        "lines": all,
        "entries": choice.entries(),
        "position_from_right": choice.position_from_right(),
        "port_source": match choice.port_source() {
            PortSource::Entry => "entry",
            PortSource::PortHeader => "port-header",
            _ => "none",
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use realip_listener::{ProxyHeader, parse_header};

    #[test]
    fn proxy_json_shows_addresses_and_tlvs() {
        let bytes = ProxyHeader::v2(
            "192.0.2.7:51000".parse().unwrap(),
            "10.0.0.1:1883".parse().unwrap(),
        )
        .with_authority("mqtt.example.com")
        .with_unique_id(b"\x01id".to_vec())
        .to_bytes();
        let (info, _) = parse_header(&bytes, 4096).unwrap().unwrap();
        let json = proxy_json(&info);
        assert_eq!(json["version"], "v2");
        assert_eq!(json["command"], "proxy");
        assert_eq!(json["source"], "192.0.2.7:51000");
        assert_eq!(json["destination"], "10.0.0.1:1883");
        assert_eq!(json["authority"], "mqtt.example.com");
        assert_eq!(json["unique_id"], "016964");
        let tlvs = json["tlvs"].as_array().unwrap();
        assert!(
            tlvs.iter()
                .any(|t| t["name"] == "authority" && t["text"] == "mqtt.example.com")
        );
        // Binary values are shown as hex only.
        assert!(
            tlvs.iter()
                .any(|t| t["name"] == "unique_id" && t.get("text").is_none())
        );
    }

    fn resolve(
        strategy: Strategy,
        header: &str,
        value: &str,
        trusted: Option<&str>,
        peer: &str,
    ) -> String {
        let fwd = Forwarding {
            header: header.into(),
            port_header: None,
            strategy,
            trusted: trusted.map(|t| t.parse().unwrap()),
        };
        let mut headers = HeaderMap::new();
        headers.append(
            HeaderName::from_bytes(header.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        let peer = realip_core::PeerAddr::Inet(peer.parse().unwrap());
        real_ip_layer(&fwd)
            .unwrap()
            .resolve(&headers, Some(&peer))
            .client()
            .unwrap()
            .to_string()
    }

    #[test]
    fn every_strategy_flag_maps_to_the_layer() {
        let xff = "192.0.2.1, 198.51.100.2, 10.0.0.3";
        // trusted, non-recursive: the rightmost entry, from a trusted (default loopback) peer.
        assert_eq!(
            resolve(
                Strategy::TrustedProxies { recursive: false },
                "X-Forwarded-For",
                xff,
                None,
                "127.0.0.1:1"
            ),
            "10.0.0.3"
        );
        // ...and nothing from an untrusted peer.
        assert_eq!(
            resolve(
                Strategy::TrustedProxies { recursive: false },
                "X-Forwarded-For",
                xff,
                None,
                "192.0.2.9:1"
            ),
            "192.0.2.9:1"
        );
        // hops:2 from any peer when no --trusted-proxy is given.
        assert_eq!(
            resolve(
                Strategy::TrustedHops(2),
                "X-Forwarded-For",
                xff,
                None,
                "192.0.2.9:1"
            ),
            "198.51.100.2"
        );
        // hops:2 restricted by an explicit --trusted-proxy.
        assert_eq!(
            resolve(
                Strategy::TrustedHops(2),
                "X-Forwarded-For",
                xff,
                Some("10.0.0.0/8"),
                "192.0.2.9:1"
            ),
            "192.0.2.9:1"
        );
        assert_eq!(
            resolve(
                Strategy::Leftmost,
                "X-Forwarded-For",
                xff,
                None,
                "127.0.0.1:1"
            ),
            "192.0.2.1"
        );
        assert_eq!(
            resolve(
                Strategy::SingleValue,
                "X-Real-IP",
                "203.0.113.4",
                None,
                "127.0.0.1:1"
            ),
            "203.0.113.4"
        );
        assert_eq!(
            resolve(
                Strategy::Forwarded { recursive: false },
                "Forwarded",
                "for=\"[2001:db8::7]:4711\"",
                None,
                "127.0.0.1:1"
            ),
            "[2001:db8::7]:4711"
        );
    }

    #[test]
    fn forwarded_json_lists_every_line_that_decided() {
        let fwd = Forwarding {
            header: "X-Forwarded-For".into(),
            port_header: Some("X-Forwarded-Port".into()),
            strategy: Strategy::TrustedProxies { recursive: true },
            trusted: Some("127.0.0.0/8".parse().unwrap()),
        };
        let layer = real_ip_layer(&fwd).unwrap();
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "198.51.100.9".parse().unwrap());
        headers.append("x-forwarded-for", "127.0.0.11".parse().unwrap());
        headers.append("x-forwarded-port", "4711, 5000".parse().unwrap());
        let peer = realip_core::PeerAddr::Inet("127.0.0.12:6000".parse().unwrap());
        let resolution = layer.resolve(&headers, Some(&peer));
        assert_eq!(
            resolution.client().unwrap().to_string(),
            "198.51.100.9:4711"
        );
        let json = forwarded_json(&resolution, &headers, Some("X-Forwarded-Port")).unwrap();
        assert_eq!(
            json["lines"],
            json!([
                "x-forwarded-for: 198.51.100.9",
                "x-forwarded-for: 127.0.0.11",
                "x-forwarded-port: 4711, 5000"
            ])
        );
        assert_eq!(json["port_source"], "port-header");

        // From an untrusted peer the header decides nothing.
        let peer = realip_core::PeerAddr::Inet("192.0.2.1:6000".parse().unwrap());
        let resolution = layer.resolve(&headers, Some(&peer));
        assert!(forwarded_json(&resolution, &headers, None).is_none());
        assert_eq!(resolution.client().unwrap().to_string(), "192.0.2.1:6000");
    }
}
