//! MQTT over TCP behind a load balancer that sends the PROXY protocol (NGINX `stream` with
//! `proxy_protocol on`, HAProxy `send-proxy-v2`, cloud network load balancers): the accept loop
//! sees the real client, not the load balancer.
//!
//! ```text
//! cargo run --example mqtt_tcp -- 127.0.0.1:1883
//! ```
//!
//! Prints `listening on IP:PORT`, then for every MQTT 3.1.1 CONNECT one line
//! `client_id=ID client=IP:PORT peer=IP:PORT` (the real client from the PROXY header, and the
//! load balancer's own socket address) and answers CONNACK (accepted). It is no broker: other
//! packets are read and dropped. A connection without a valid PROXY header is closed and
//! logged on stderr.

use bytes::BytesMut;
use realip::listener::{ProxiedAddr, ProxyListener};
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Packet, PingResp};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest MQTT packet this server reads.
const MAX_PACKET: usize = 64 * 1024;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let bind = std::env::args().nth(1);
    // Every connection must start with a PROXY header (v1 or v2, auto-detected).
    let mut listener = ProxyListener::bind(bind.as_deref().unwrap_or("127.0.0.1:1883")).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        // Never fails: headers are read concurrently, bad connections are logged and closed.
        let (stream, addr) = listener.accept().await;
        tokio::spawn(async move {
            if let Err(e) = serve(stream, &addr).await {
                tracing::warn!(peer = %addr.socket_peer(), error = %e, "connection closed");
            }
        });
    }
}

/// Reads MQTT packets (the stream starts right after the PROXY header): CONNECT is answered
/// with CONNACK, PINGREQ with PINGRESP, DISCONNECT ends the connection.
async fn serve(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    addr: &ProxiedAddr,
) -> Result<(), Error> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = BytesMut::new();
    loop {
        let packet = match Packet::read(&mut buf, MAX_PACKET) {
            Ok(packet) => packet,
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(format!("malformed MQTT packet: {e:?}").into()),
        };
        match packet {
            Packet::Connect(connect) => {
                // The header's source; a LOCAL header (a health check) has none: the socket peer.
                let client = addr.client().map_or_else(
                    || addr.socket_peer().to_string(),
                    |client| client.to_string(),
                );
                let peer = addr.socket_peer();
                println!(
                    "client_id={} client={client} peer={peer}",
                    connect.client_id
                );
                ConnAck::new(ConnectReturnCode::Success, false).write(&mut out)?;
            }
            Packet::PingReq => {
                PingResp.write(&mut out)?;
            }
            Packet::Disconnect => return Ok(()),
            _ => {}
        }
        stream.write_all_buf(&mut out).await?;
    }
}
