//! End to end: a real tokio-tungstenite client talks to an axum WebSocket server with the
//! layer, over TCP on 127.0.0.1; the handler reports the address it saw.
#![cfg(feature = "axum")]

use std::net::SocketAddr;

use axum::Router;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use realip_core::TrustedProxies;
use realip_tower::{PeerAddr, RealClient, RealIpLayer, Resolution};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

async fn mqtt(ws: WebSocketUpgrade, RealClient(client): RealClient) -> Response {
    ws.protocols(["mqtt"])
        .on_upgrade(move |mut socket| async move {
            let report = format!("{client} {}", client.source());
            let _ = socket.send(Message::Text(report.into())).await;
            let _ = socket.close().await;
        })
}

/// Serves `app` on 127.0.0.1 with `ConnectInfo<SocketAddr>`; returns its address.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Opens a WebSocket to `/mqtt` with `headers`; returns the first text message and the
/// client's local address.
async fn ask(server: SocketAddr, headers: &[(&'static str, &'static str)]) -> (String, SocketAddr) {
    ask_after(server, &[], headers).await
}

/// As [`ask`], sending `preamble` (a PROXY header) first on the same connection.
async fn ask_after(
    server: SocketAddr,
    preamble: &[u8],
    headers: &[(&'static str, &'static str)],
) -> (String, SocketAddr) {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream.write_all(preamble).await.unwrap();
    let mut request = format!("ws://{server}/mqtt").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
    for (name, value) in headers {
        request.headers_mut().append(*name, value.parse().unwrap());
    }
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "mqtt");
    let message = ws.next().await.unwrap().unwrap();
    (message.into_text().unwrap().to_string(), local)
}

#[tokio::test]
async fn handler_sees_the_forwarded_client_from_a_trusted_proxy() {
    let app = Router::new().route("/mqtt", get(mqtt)).layer(
        RealIpLayer::x_forwarded_for_recursive(TrustedProxies::loopback()).websocket_only(true),
    );
    let server = serve(app).await;
    // As NGINX LB 2 sends it in scenario W2 (the test client plays the proxy on 127.0.0.1).
    let (seen, _) = ask(
        server,
        &[
            ("x-forwarded-for", "203.0.113.7, 127.0.0.2"),
            ("x-forwarded-port", "52662, 40001"),
        ],
    )
    .await;
    assert_eq!(seen, "203.0.113.7:52662 x-forwarded-for");
}

#[tokio::test]
async fn handler_sees_the_socket_peer_when_the_header_is_forged() {
    let app =
        Router::new()
            .route("/mqtt", get(mqtt))
            .layer(RealIpLayer::x_forwarded_for_recursive(
                "10.0.0.0/8".parse().unwrap(),
            ));
    let server = serve(app).await;
    let (seen, local) = ask(server, &[("x-forwarded-for", "10.0.0.1")]).await;
    assert_eq!(seen, format!("{local} socket"));
}

/// Sends a plain HTTP/1.1 GET and returns the whole response.
async fn raw_get(server: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(server).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn missing_layer_or_connect_info_is_named_in_the_rejection() {
    async fn plain(RealClient(client): RealClient) -> String {
        client.to_string()
    }
    // No layer at all.
    let server = serve(Router::new().route("/", get(plain))).await;
    let response = raw_get(server, "/").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(
        response.contains("`RealIpLayer` is not installed on this route"),
        "{response}"
    );

    // Layer installed, but the app is served without connect info.
    let app = Router::new()
        .route("/", get(plain))
        .layer(RealIpLayer::x_forwarded_for(TrustedProxies::loopback()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let response = raw_get(server, "/").await;
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(
        response.contains("into_make_service_with_connect_info"),
        "{response}"
    );

    // Option<RealClient> and Resolution extract without the address.
    async fn optional(client: Option<RealClient>, resolution: Resolution) -> String {
        format!("{} {:?}", client.is_some(), resolution.outcome())
    }
    let app = Router::new()
        .route("/", get(optional))
        .layer(RealIpLayer::x_forwarded_for(TrustedProxies::loopback()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let response = raw_get(server, "/").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("false Fallback(NoHeader)"), "{response}");
}

/// A tokio-tungstenite server (no tower stack): the handshake callback resolves the client
/// with the same configuration through [`RealIpLayer::resolve`].
#[tokio::test]
// tungstenite's `Callback` trait fixes the (large) error response type.
#[allow(clippy::result_large_err)]
async fn tokio_tungstenite_server_resolves_in_the_handshake_callback() {
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response as WsResponse};

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let layer = RealIpLayer::x_forwarded_for(TrustedProxies::loopback());
    tokio::spawn(async move {
        let (stream, peer) = listener.accept().await.unwrap();
        let mut client = None;
        let callback = |request: &Request, mut response: WsResponse| {
            let resolution = layer.resolve(request.headers(), Some(&PeerAddr::Inet(peer)));
            client = resolution.into_client();
            response
                .headers_mut()
                .insert("sec-websocket-protocol", "mqtt".parse().unwrap());
            Ok(response)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(stream, callback)
            .await
            .unwrap();
        let report = client
            .map(|c| format!("{c} {}", c.source()))
            .unwrap_or_default();
        ws.send(tokio_tungstenite::tungstenite::Message::text(report))
            .await
            .unwrap();
        ws.close(None).await.unwrap();
    });
    let (seen, _) = ask(
        server,
        &[
            ("x-forwarded-for", "[2001:db8::7]:443"),
            ("x-forwarded-port", "1"),
        ],
    )
    .await;
    assert_eq!(seen, "[2001:db8::7]:443 x-forwarded-for");
}

/// Scenario W6 end to end: PROXY protocol on the WebSocket port (the `realip-listener`
/// listener with axum's `ConnectInfo<ProxiedAddr>`), forwarded headers on top.
#[cfg(feature = "listener")]
#[tokio::test]
async fn proxy_protocol_listener_composes_with_forwarded_headers() {
    use realip_listener::{Policy, ProxiedAddr, ProxyHeader, ProxyListener};

    // The stream load balancer's PROXY header says who connected to it; only 127.0.0.11
    // (an HTTP proxy in front of it) may vouch for someone else with X-Forwarded-For.
    let app = Router::new().route("/mqtt", get(mqtt)).layer(
        RealIpLayer::x_forwarded_for_recursive("127.0.0.11".parse().unwrap()).websocket_only(true),
    );
    let listener = ProxyListener::builder()
        .policy(Policy::Require)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let server = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ProxiedAddr>(),
        )
        .await
        .unwrap();
    });

    // A client with a forged header behind the stream LB: the PROXY address, not the header.
    let header = ProxyHeader::v1("127.0.0.101:52662".parse().unwrap(), server).to_bytes();
    let (seen, _) = ask_after(server, &header, &[("x-forwarded-for", "127.0.0.11")]).await;
    assert_eq!(seen, "127.0.0.101:52662 proxy-protocol");

    // The PROXY source is the trusted HTTP proxy: its header is believed (v2 this time).
    let header = ProxyHeader::v2("127.0.0.11:40001".parse().unwrap(), server).to_bytes();
    let (seen, _) = ask_after(
        server,
        &header,
        &[
            ("x-forwarded-for", "127.0.0.1, 127.0.0.102"),
            ("x-forwarded-port", "1, 52663"),
        ],
    )
    .await;
    assert_eq!(seen, "127.0.0.102:52663 x-forwarded-for");
}
