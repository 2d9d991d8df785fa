//! A gRPC server (tonic) behind HTTP/2 reverse proxies that set `X-Forwarded-For` (NGINX
//! `grpc_pass`, Envoy, cloud load balancers): [`RealIpLayer`] resolves the real client of every
//! call, and a handler reads it from the request extensions as a [`ClientAddr`].
//!
//! ```text
//! cargo run --example tonic_grpc -- 127.0.0.1:50051 10.0.0.0/8
//! grpcurl -plaintext -H 'x-forwarded-for: 203.0.113.7' 127.0.0.1:50051 grpc.health.v1.Health/Check
//! ```
//!
//! tonic records the TCP peer as its own `TcpConnectInfo`; the layer needs to know the peer to
//! decide whether to believe the header, so one `map_request` step hands it over as a
//! [`PeerAddr`]. The arguments are the address to listen on and the trusted proxies
//! (CIDRs, space-separated; default `127.0.0.0/8 ::1`). Prints `listening on IP:PORT`, then
//! `grpc PATH client=IP[:PORT]` per call.

use std::net::SocketAddr;

use realip::tower::RealIpLayer;
use realip::{ClientAddr, PeerAddr, TrustedProxies};
use tonic::transport::Server;
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceBuilder;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind: SocketAddr = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.1:50051")
        .parse()?;
    // Headers are believed from these proxies only; anyone else is their own client.
    let trusted: TrustedProxies = args
        .next()
        .as_deref()
        .unwrap_or("127.0.0.0/8 ::1")
        .parse()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let layers = ServiceBuilder::new()
        .map_request(peer_from_tonic)
        .layer(RealIpLayer::x_forwarded_for_recursive(trusted))
        .map_request(log_client);
    let listener = tokio::net::TcpListener::bind(bind).await?;
    println!("listening on {}", listener.local_addr()?);
    Server::builder()
        .layer(layers)
        .add_service(health)
        .serve_with_incoming(tokio_stream_of(listener))
        .await?;
    Ok(())
}

/// Hands tonic's record of the TCP peer to the layer.
fn peer_from_tonic<B>(mut request: http::Request<B>) -> http::Request<B> {
    let peer = request
        .extensions()
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr);
    if let Some(peer) = peer {
        request.extensions_mut().insert(PeerAddr::Inet(peer));
    }
    request
}

/// What a handler sees: the resolved client in the request's extensions.
fn log_client<B>(request: http::Request<B>) -> http::Request<B> {
    if let Some(client) = request.extensions().get::<ClientAddr>() {
        println!("grpc {} client={client}", request.uri().path());
    }
    request
}

/// The accepted TCP connections as the stream tonic serves.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    })
}
