//! A debugging server that answers every request with the client address it resolved.
//!
//! Run it behind a proxy chain to see what the server will believe (like Traefik's whoami);
//! the end-to-end tests use its JSON as their contract.
//!
//! ```text
//! cargo run --example whoami -- --bind 127.0.0.1:8080 \
//!     [--trusted-proxy CIDR]... [--recursive] [--header NAME] [--port-header NAME] \
//!     [--strategy trusted|hops:N|single|leftmost|forwarded] \
//!     [--proxy-protocol [--proxy-from CIDR]...]
//! ```
//!
//! `GET` on any path answers `200` with
//!
//! ```json
//! {"client_ip": "203.0.113.7", "client_port": 52662, "source": "x-forwarded-for",
//!  "socket_peer": "127.0.0.12:40001", "transport_peer": "127.0.0.12:40001",
//!  "decision": "header x-forwarded-for entry 1 of 2 from the right",
//!  "headers": {"x-forwarded-for": ["203.0.113.7, 127.0.0.11"], "x-forwarded-port": ["52662, 40001"]}}
//! ```
//!
//! `client_port` is `null` when unknown; `source` is `socket`, `proxy-protocol` or the
//! header's name; `headers` lists every forwarding-related header line as received. With
//! `--proxy-protocol` the listener requires a PROXY header (v1 or v2) from every peer, or
//! only from the `--proxy-from` ranges (others must not send one), and the header's source
//! address is the transport peer whose forwarded headers are trusted (scenario W6).

use std::net::SocketAddr;

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Request};
use clap::Parser;
use http::{HeaderMap, HeaderName};
use realip_core::{ClientAddr, TrustedProxies};
use realip_listener::{Policy, ProxiedAddr, ProxyListener};
use realip_tower::{Outcome, RealIpLayer, Resolution, Strategy};
use serde_json::{Map, Value, json};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "Answers every request with the client address realip resolved")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// A trusted proxy (IP or CIDR, or `unix:`); repeat for several.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxy: Vec<String>,
    /// Walk the header right to left over trusted proxies (NGINX `real_ip_recursive on`).
    #[arg(long)]
    recursive: bool,
    /// Address header (default: the strategy's, e.g. X-Forwarded-For).
    #[arg(long, value_name = "NAME")]
    header: Option<HeaderName>,
    /// Port header (default: X-Forwarded-Port, none for `forwarded`).
    #[arg(long = "port-header", value_name = "NAME")]
    port_header: Option<HeaderName>,
    /// trusted | hops:N | single | leftmost | forwarded
    #[arg(long, default_value = "trusted")]
    strategy: Strategy,
    /// Require a PROXY protocol header on every connection (see `--proxy-from`).
    #[arg(long = "proxy-protocol")]
    proxy_protocol: bool,
    /// With `--proxy-protocol`: only these peers send PROXY headers; repeat for several.
    #[arg(long = "proxy-from", value_name = "CIDR")]
    proxy_from: Vec<String>,
}

/// Headers that carry forwarding information.
const FORWARDING_HEADERS: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-port",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "cf-connecting-ip",
    "true-client-ip",
    "fly-client-ip",
    "via",
];

fn layer(args: &Args) -> Result<RealIpLayer, Box<dyn std::error::Error>> {
    let trusted = TrustedProxies::parse_list(&args.trusted_proxy)?;
    let strategy = args
        .strategy
        .with_recursive(args.recursive)
        .ok_or("--recursive applies to the trusted and forwarded strategies only")?;
    let mut layer = match strategy {
        Strategy::TrustedHops(hops) if trusted.is_empty() => RealIpLayer::trusted_hops(hops),
        strategy => RealIpLayer::new(strategy, trusted),
    };
    if let Some(header) = &args.header {
        layer = layer.header(header.clone());
    }
    if let Some(header) = &args.port_header {
        layer = layer.port_header(header.clone());
    }
    Ok(layer)
}

fn header_lines(headers: &HeaderMap, extra: &[&HeaderName]) -> Map<String, Value> {
    let names = FORWARDING_HEADERS
        .iter()
        .map(|n| HeaderName::from_static(n))
        .chain(extra.iter().map(|n| (*n).clone()));
    let mut out = Map::new();
    for name in names {
        let lines: Vec<Value> = headers
            .get_all(&name)
            .iter()
            .map(|v| Value::from(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if !lines.is_empty() {
            out.insert(name.as_str().to_owned(), Value::Array(lines));
        }
    }
    out
}

fn decision(resolution: Option<&Resolution>) -> String {
    match resolution.map(Resolution::outcome) {
        Some(Outcome::Header(choice)) => format!(
            "header {} entry {} of {} from the right{}",
            choice.header(),
            choice.position_from_right(),
            choice.entries(),
            match choice.stopped_by() {
                Some(reason) => format!(" (walk stopped: {reason})"),
                None => String::new(),
            }
        ),
        Some(Outcome::Fallback(fallback)) => format!("transport peer: {fallback}"),
        Some(_) => "unknown".to_owned(),
        None => "layer not installed".to_owned(),
    }
}

async fn whoami(layer: RealIpLayer, request: Request) -> Json<Value> {
    let extensions = request.extensions();
    let client = extensions.get::<ClientAddr>();
    let resolution = extensions.get::<Resolution>();
    let socket_peer = extensions
        .get::<ConnectInfo<ProxiedAddr>>()
        .map(|ConnectInfo(addr)| addr.socket_peer().to_string())
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.to_string())
        });
    let mut extra = vec![layer.header_name()];
    extra.extend(layer.port_header_name());
    Json(json!({
        "client_ip": client.map(|c| c.ip().to_string()),
        "client_port": client.and_then(ClientAddr::port),
        "source": client.map(|c| c.source().to_string()),
        "socket_peer": socket_peer,
        "transport_peer": resolution.and_then(Resolution::peer).map(ToString::to_string),
        "decision": decision(resolution),
        "headers": header_lines(request.headers(), &extra),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,realip_tower=debug,realip_listener=debug".into()),
        )
        .init();
    let args = Args::parse();
    let layer = layer(&args)?;
    tracing::info!(?layer, "realip configuration");

    let handler_layer = layer.clone();
    let app = Router::new()
        .fallback(move |request: Request| whoami(handler_layer.clone(), request))
        .layer(layer);

    if args.proxy_protocol {
        let mut builder = ProxyListener::builder().policy(Policy::Require);
        if !args.proxy_from.is_empty() {
            builder = builder.trusted(TrustedProxies::parse_list(&args.proxy_from)?);
        }
        let listener = builder.bind(args.bind).await?;
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
