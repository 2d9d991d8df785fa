//! Scenarios W1–W6 at the request level: headers exactly as the NGINX configurations of the
//! EMQX + NGINX guide produce them, sent through the middleware.
//!
//! Hosts (from the guide): client 1.94.170.163, LB 1 172.16.0.116, LB 2 172.16.0.200,
//! LB 3 172.16.0.225; the load balancers' range is 172.16.0.0/24.

use std::convert::Infallible;
use std::net::SocketAddr;

use http::Request;
use realip_core::{AddrSource, ClientAddr, PeerAddr, TrustedProxies};
use realip_listener::ProxiedAddr;
use realip_tower::{Outcome, RealIpLayer, Resolution};
use tower::{Layer, ServiceExt, service_fn};

const CLIENT: &str = "1.94.170.163";
const CLIENT_PORT: u16 = 52662;
const LB1: &str = "172.16.0.116";
const LB2: &str = "172.16.0.200";
const LB3: &str = "172.16.0.225";

fn lb_range() -> TrustedProxies {
    "172.16.0.0/24".parse().unwrap()
}

fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Sends a WebSocket upgrade request to `/mqtt` through `layer` and returns what the handler
/// saw in its extensions.
async fn upgrade(
    layer: RealIpLayer,
    headers: &[(&str, &str)],
    peer: impl Clone + Send + Sync + 'static,
) -> (Option<ClientAddr>, Resolution) {
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        let client = req.extensions().get::<ClientAddr>().cloned();
        let resolution = req.extensions().get::<Resolution>().cloned();
        Ok::<_, Infallible>((client, resolution.expect("resolution recorded")))
    }));
    let mut builder = Request::get("/mqtt")
        .header("upgrade", "websocket")
        .header("connection", "Upgrade")
        .header("sec-websocket-protocol", "mqtt");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(()).unwrap();
    req.extensions_mut().insert(peer);
    svc.oneshot(req).await.unwrap()
}

fn emqx_style() -> RealIpLayer {
    // websocket.proxy_address_header = X-Forwarded-For; proxy_port_header = X-Forwarded-Port
    RealIpLayer::leftmost(lb_range()).websocket_only(true)
}

fn nginx_recursive() -> RealIpLayer {
    RealIpLayer::x_forwarded_for_recursive(lb_range()).websocket_only(true)
}

fn want(ip: &str, port: Option<u16>, source: &str) -> Option<ClientAddr> {
    Some(ClientAddr::new(
        ip.parse().unwrap(),
        port,
        AddrSource::header(source),
    ))
}

/// W1: client → LB → broker; the LB overwrites `X-Forwarded-For: $remote_addr` and
/// `X-Forwarded-Port: $remote_port`.
#[tokio::test]
async fn w1_single_lb_overwrites() {
    let headers = [("X-Forwarded-For", CLIENT), ("X-Forwarded-Port", "52662")];
    let peer = PeerAddr::Inet(sock(LB1, 40001));
    for layer in [
        emqx_style(),
        nginx_recursive(),
        RealIpLayer::x_forwarded_for(lb_range()),
    ] {
        let (client, _) = upgrade(layer, &headers, peer.clone()).await;
        assert_eq!(client, want(CLIENT, Some(CLIENT_PORT), "x-forwarded-for"));
    }
}

/// W2 headers at the broker: LB 1 overwrote, LB 2 appended with
/// `$proxy_add_x_forwarded_for` and `"$http_x_forwarded_port, $remote_port"`.
fn w2_headers() -> [(&'static str, &'static str); 2] {
    [
        ("X-Forwarded-For", "1.94.170.163, 172.16.0.116"),
        ("X-Forwarded-Port", "52662, 40001"),
    ]
}

/// W2: LB 1 overwrites, LB 2 appends.
#[tokio::test]
async fn w2_outer_lb_overwrites_inner_appends() {
    let peer = PeerAddr::Inet(sock(LB2, 40002));
    for layer in [emqx_style(), nginx_recursive()] {
        let (client, _) = upgrade(layer, &w2_headers(), peer.clone()).await;
        assert_eq!(client, want(CLIENT, Some(CLIENT_PORT), "x-forwarded-for"));
    }
    // NGINX without recursion stops at the rightmost entry: LB 1, with LB 1's port.
    let (client, _) = upgrade(
        RealIpLayer::x_forwarded_for(lb_range()),
        &w2_headers(),
        peer,
    )
    .await;
    assert_eq!(client, want(LB1, Some(40001), "x-forwarded-for"));
}

/// W3: an attacker-side proxy sets `X-Forwarded-For: 127.0.0.1` before LB 1, which
/// overwrites it; the broker sees the attacker host's real address.
#[tokio::test]
async fn w3_forged_header_overwritten_by_lb1() {
    // Attacker's proxy → LB 1 sent `X-Forwarded-For: 127.0.0.1, X-Forwarded-Port: 50000`;
    // LB 1 replaced both with its peer, LB 2 appended.
    let peer = PeerAddr::Inet(sock(LB2, 40002));
    for layer in [emqx_style(), nginx_recursive()] {
        let (client, _) = upgrade(layer, &w2_headers(), peer.clone()).await;
        let client = client.unwrap();
        assert_eq!(client.ip().to_string(), CLIENT);
        assert_ne!(client.ip().to_string(), "127.0.0.1");
    }
    // Had LB 1 appended instead, only the right-to-left walk stays correct: the leftmost
    // entry is the forged one.
    let appended = [
        ("X-Forwarded-For", "127.0.0.1, 1.94.170.163, 172.16.0.116"),
        ("X-Forwarded-Port", "50000, 52662, 40001"),
    ];
    let (client, _) = upgrade(nginx_recursive(), &appended, peer.clone()).await;
    assert_eq!(client, want(CLIENT, Some(CLIENT_PORT), "x-forwarded-for"));
    let (client, _) = upgrade(emqx_style(), &appended, peer).await;
    assert_eq!(client.unwrap().ip().to_string(), "127.0.0.1");
}

/// W4 headers at the broker. The client-side proxy set `X-Forwarded-For: 127.0.0.1` and
/// `X-Forwarded-Port: 50000`; LB 1 and LB 2 appended; LB 3 ran realip (recursive) and set
/// `X-Forwarded-For "$http_x_forwarded_for, $realip_remote_addr"`,
/// `X-Forwarded-Port "$http_x_forwarded_port, $realip_remote_port"`, `X-Real-IP $remote_addr`.
fn w4_headers(x_real_ip: &'static str) -> [(&'static str, &'static str); 3] {
    [
        (
            "X-Forwarded-For",
            "127.0.0.1, 1.94.170.163, 172.16.0.116, 172.16.0.200",
        ),
        ("X-Forwarded-Port", "50000, 52662, 40001, 40002"),
        ("X-Real-IP", x_real_ip),
    ]
}

/// W4: every LB appends; LB 3 resolves with NGINX realip and passes `X-Real-IP`.
#[tokio::test]
async fn w4_lb3_realip_sets_x_real_ip() {
    let peer = PeerAddr::Inet(sock(LB3, 40003));
    let layer = RealIpLayer::x_real_ip(lb_range()).websocket_only(true);
    let (client, resolution) = upgrade(layer.clone(), &w4_headers(CLIENT), peer.clone()).await;
    // X-Real-IP is one value and X-Forwarded-Port has four: the port is not guessed.
    assert_eq!(client, want(CLIENT, None, "x-real-ip"));
    assert!(matches!(resolution.outcome(), Outcome::Header(_)));
    // With recursion off at LB 3, NGINX would have put LB 1's address into X-Real-IP.
    let (client, _) = upgrade(layer, &w4_headers(LB1), peer).await;
    assert_eq!(client, want(LB1, None, "x-real-ip"));
}

/// W4b: the broker walks the X-Forwarded-For chain itself.
#[tokio::test]
async fn w4b_broker_walks_the_chain() {
    let peer = PeerAddr::Inet(sock(LB3, 40003));
    let (client, resolution) = upgrade(nginx_recursive(), &w4_headers(CLIENT), peer).await;
    assert_eq!(client, want(CLIENT, Some(CLIENT_PORT), "x-forwarded-for"));
    match resolution.outcome() {
        Outcome::Header(choice) => {
            assert_eq!(choice.position_from_right(), 2);
            assert_eq!(choice.entries(), 4);
        }
        other => panic!("{other:?}"),
    }
}

/// W5: the client connects directly and sends its own X-Forwarded-For.
#[tokio::test]
async fn w5_direct_client_forged_header_ignored() {
    let forged = [
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Port", "1"),
        ("X-Real-IP", "127.0.0.1"),
        ("Forwarded", "for=127.0.0.1"),
    ];
    let direct = sock(CLIENT, CLIENT_PORT);
    for layer in [
        emqx_style(),
        nginx_recursive(),
        RealIpLayer::x_real_ip(lb_range()),
        RealIpLayer::forwarded(lb_range()),
    ] {
        let (client, _) = upgrade(layer, &forged, PeerAddr::Inet(direct)).await;
        assert_eq!(
            client,
            Some(ClientAddr::from_socket_addr(direct, AddrSource::Socket))
        );
    }
}

fn proxied(client: SocketAddr, lb: SocketAddr) -> ProxiedAddr {
    ProxiedAddr::new(
        Some(ClientAddr::from_socket_addr(
            client,
            AddrSource::ProxyProtocol,
        )),
        PeerAddr::Inet(lb),
        Some(sock("172.16.0.71", 8083)),
        None,
    )
}

/// W6: client → NGINX `stream` with PROXY → the broker's WebSocket listener with PROXY.
#[tokio::test]
async fn w6_proxy_protocol_on_the_websocket_port() {
    let client = sock(CLIENT, CLIENT_PORT);
    let addr = proxied(client, sock(LB1, 40001));
    let expected = Some(ClientAddr::from_socket_addr(
        client,
        AddrSource::ProxyProtocol,
    ));
    // No forwarded headers: the PROXY-derived address.
    let (got, _) = upgrade(nginx_recursive(), &[], addr.clone()).await;
    assert_eq!(got, expected);
    // The client also sends a forged header: the transport peer for header trust is the
    // PROXY-derived client address, which is not a trusted proxy, so it is ignored, even
    // though the socket peer (LB 1) is in the trusted range.
    let forged = [("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-Port", "1")];
    let (got, resolution) = upgrade(nginx_recursive(), &forged, addr.clone()).await;
    assert_eq!(got, expected);
    assert_eq!(resolution.peer(), Some(&PeerAddr::Inet(client)));
    // Through axum's connect info too.
    #[cfg(feature = "axum")]
    {
        let (got, _) = upgrade(nginx_recursive(), &forged, axum::extract::ConnectInfo(addr)).await;
        assert_eq!(got, expected);
    }
    // An HTTP proxy (LB 2, appending) in front of the stream proxy: the PROXY source is
    // LB 2, trusted, so its X-Forwarded-For is honoured.
    let chained = proxied(sock(LB2, 40002), sock(LB1, 40001));
    let headers = [
        ("X-Forwarded-For", "127.0.0.1, 1.94.170.163"),
        ("X-Forwarded-Port", "50000, 52662"),
    ];
    let (got, _) = upgrade(nginx_recursive(), &headers, chained).await;
    assert_eq!(got, want(CLIENT, Some(CLIENT_PORT), "x-forwarded-for"));
}

/// WebSocket-only: other requests get the transport peer even with a valid header.
#[tokio::test]
async fn websocket_only_skips_plain_requests() {
    let svc = nginx_recursive().layer(service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(req.extensions().get::<ClientAddr>().cloned())
    }));
    let lb = sock(LB2, 40002);
    let mut req = Request::get("/mqtt")
        .header("x-forwarded-for", "1.94.170.163")
        .body(())
        .unwrap();
    req.extensions_mut().insert(PeerAddr::Inet(lb));
    let got = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(
        got,
        Some(ClientAddr::from_socket_addr(lb, AddrSource::Socket))
    );
    // Same request without websocket_only: resolved from the header.
    let svc =
        RealIpLayer::x_forwarded_for(lb_range()).layer(service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(req.extensions().get::<ClientAddr>().cloned())
        }));
    let mut req = Request::get("/")
        .header("x-forwarded-for", "1.94.170.163")
        .body(())
        .unwrap();
    req.extensions_mut().insert(PeerAddr::Inet(lb));
    let got = svc.oneshot(req).await.unwrap();
    assert_eq!(got, want(CLIENT, None, "x-forwarded-for"));
}

/// An address set by an outer layer is never overridden.
#[tokio::test]
async fn existing_client_addr_is_kept() {
    let svc = nginx_recursive().layer(service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(req.extensions().get::<ClientAddr>().cloned())
    }));
    let preset = ClientAddr::new("192.0.2.1".parse().unwrap(), None, AddrSource::Socket);
    let mut req = Request::get("/mqtt")
        .header("upgrade", "websocket")
        .header("connection", "keep-alive, Upgrade")
        .header("x-forwarded-for", "1.94.170.163")
        .body(())
        .unwrap();
    req.extensions_mut().insert(PeerAddr::Inet(sock(LB2, 1)));
    req.extensions_mut().insert(preset.clone());
    assert_eq!(svc.oneshot(req).await.unwrap(), Some(preset));
}
