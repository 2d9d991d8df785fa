//! MQTT over WebSocket behind HTTP reverse proxies (NGINX, HAProxy, cloud HTTP load balancers)
//! that append the client to `X-Forwarded-For`: an axum [`Router`] with [`RealIpLayer`] hands
//! every `/mqtt` upgrade its real client through the [`RealClient`] extractor.
//!
//! ```text
//! cargo run --example mqtt_ws --all-features -- 127.0.0.1:8083 10.0.0.0/8
//! ```
//!
//! The arguments are the address to listen on and the trusted proxies (CIDRs, space-separated;
//! default `127.0.0.0/8`). `X-Forwarded-For` is walked right to left over trusted proxies (NGINX
//! `real_ip_recursive on`), the port taken from `X-Forwarded-Port`. Prints
//! `listening on IP:PORT`, then for every MQTT 3.1.1 CONNECT one line
//! `client_id=ID client=IP[:PORT] source=SOURCE` and answers CONNACK (accepted). It is no
//! broker: other packets are read and dropped.

use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use axum::routing::get;
use bytes::BytesMut;
use realip::ClientAddr;
use realip::TrustedProxies;
use realip::tower::{RealClient, RealIpLayer};
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PingResp};

/// The largest MQTT packet this server reads.
const MAX_PACKET: usize = 64 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let bind = args.next().unwrap_or_else(|| "127.0.0.1:8083".into());
    let trusted: TrustedProxies = args.next().as_deref().unwrap_or("127.0.0.0/8").parse()?;
    let app = Router::new()
        .route("/mqtt", get(upgrade))
        .layer(RealIpLayer::x_forwarded_for_recursive(trusted));
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!("listening on {}", listener.local_addr()?);
    // The layer needs the TCP peer: whose headers it may believe.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app).await?;
    Ok(())
}

/// `GET /mqtt` with subprotocol `mqtt` (MQTT 3.1.1 §6): the real client is known before the
/// upgrade, from the request's headers.
async fn upgrade(ws: WebSocketUpgrade, RealClient(client): RealClient) -> Response {
    ws.protocols(["mqtt"]).on_upgrade(move |socket| async move {
        if let Err(e) = serve(socket, &client).await {
            tracing::warn!(%client, error = %e, "connection closed");
        }
    })
}

/// MQTT packets arrive in binary frames, a packet may span frames: CONNECT is answered with
/// CONNACK, PINGREQ with PINGRESP, DISCONNECT ends the connection.
async fn serve(mut socket: WebSocket, client: &ClientAddr) -> Result<(), Error> {
    let mut buf = BytesMut::new();
    let mut out = BytesMut::new();
    while let Some(message) = socket.recv().await {
        match message? {
            Message::Binary(bytes) => buf.extend_from_slice(&bytes),
            Message::Close(_) => return Ok(()),
            _ => continue,
        }
        loop {
            match Packet::read(&mut buf, MAX_PACKET) {
                Ok(Packet::Connect(connect)) => {
                    let (id, source) = (connect.client_id, client.source());
                    println!("client_id={id} client={client} source={source}");
                    ConnAck::new(ConnectReturnCode::Success, false).write(&mut out)?;
                }
                Ok(Packet::PingReq) => {
                    PingResp.write(&mut out)?;
                }
                Ok(Packet::Disconnect) => return Ok(()),
                Ok(_) => {}
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => break,
                Err(e) => return Err(format!("malformed MQTT packet: {e:?}").into()),
            }
        }
        if !out.is_empty() {
            socket.send(Message::Binary(out.split().freeze())).await?;
        }
    }
    Ok(())
}
