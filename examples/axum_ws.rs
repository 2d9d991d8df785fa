//! A WebSocket echo server on `/mqtt` (subprotocol `mqtt`) that logs the real client of
//! every upgrade, behind NGINX or HAProxy.
//!
//! ```text
//! cargo run --example axum_ws -- --bind 127.0.0.1:8083 --trusted-proxy 127.0.0.0/8 --recursive
//! ```
//!
//! The NGINX side (scenario W1/W2 of the EMQX guide):
//!
//! ```nginx
//! location /mqtt {
//!     proxy_pass http://127.0.0.1:8083;
//!     proxy_http_version 1.1;
//!     proxy_set_header Upgrade $http_upgrade;
//!     proxy_set_header Connection "Upgrade";
//!     proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
//!     proxy_set_header X-Forwarded-Port "$http_x_forwarded_port, $remote_port";
//! }
//! ```
//!
//! Each request runs in a span with a `client` field that the layer fills in, so every log
//! line of the connection names the real client. With `--proxy-protocol` the port expects a
//! PROXY header (NGINX `stream` with `proxy_protocol on`), and the header's source is the
//! peer whose forwarded headers are trusted.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use clap::Parser;
use realip_core::TrustedProxies;
use realip_listener::{Policy, ProxiedAddr, ProxyListener};
use realip_tower::{RealClient, RealIpLayer, Strategy};
use tracing::Instrument;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "WebSocket echo server on /mqtt that logs the real client")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8083")]
    bind: SocketAddr,
    /// A trusted proxy (IP or CIDR); repeat for several.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxy: Vec<String>,
    /// Walk X-Forwarded-For right to left over trusted proxies.
    #[arg(long)]
    recursive: bool,
    /// Require a PROXY protocol header on every connection.
    #[arg(long = "proxy-protocol")]
    proxy_protocol: bool,
}

async fn mqtt(ws: WebSocketUpgrade, RealClient(client): RealClient) -> Response {
    tracing::info!(%client, source = %client.source(), "websocket upgrade");
    let span = tracing::info_span!("ws", %client);
    ws.protocols(["mqtt"])
        .on_upgrade(|socket| echo(socket).instrument(span))
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(_) | Message::Binary(_) => message,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
    tracing::info!("websocket closed");
}

/// Runs each request in a span whose `client` field the realip layer records.
async fn request_span(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        client = tracing::field::Empty,
    );
    next.run(request).instrument(span).await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,realip_tower=debug".into()),
        )
        .init();
    let args = Args::parse();
    let trusted = TrustedProxies::parse_list(&args.trusted_proxy)?;
    let app = Router::new()
        .route("/mqtt", get(mqtt))
        .layer(
            RealIpLayer::new(
                Strategy::TrustedProxies {
                    recursive: args.recursive,
                },
                trusted,
            )
            .websocket_only(true),
        )
        .layer(middleware::from_fn(request_span));

    if args.proxy_protocol {
        let listener = ProxyListener::builder()
            .policy(Policy::Require)
            .bind(args.bind)
            .await?;
        println!("listening on {} (PROXY protocol)", listener.local_addr()?);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<ProxiedAddr>(),
        )
        .await?;
    } else {
        let listener = tokio::net::TcpListener::bind(args.bind).await?;
        println!("listening on {}", listener.local_addr()?);
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await?;
    }
    Ok(())
}
