//! A UDP echo server behind a proxy that sends PROXY v2 or Simple Proxy Protocol headers.
//!
//! ```text
//! cargo run --example udp_echo --features udp -- --bind ADDR
//!     [--format v2-flow|v2-datagram|spp] [--trusted CIDR]...
//! ```
//!
//! Contract (tests and users rely on it):
//!
//! * On start, one line `listening on IP:PORT` is printed on stdout (useful with port 0).
//! * Every delivered datagram is answered with one datagram: `peer=IP:PORT\n` followed by
//!   the payload, byte for byte. `peer` is the real client (the header's source; the socket
//!   source for a source without a header). The reply goes to the proxy the datagram came
//!   from, with the SPP header first when the format is `spp`.
//! * `--format` (default `v2-flow`) is the header format of the trusted sources: `v2-flow`
//!   (PROXY v2 on the first datagram of each proxy flow), `v2-datagram` (on every datagram),
//!   `spp` (Cloudflare's Simple Proxy Protocol on every datagram), or `none`.
//! * `--trusted` CIDRs or IPs (repeatable; default `127.0.0.0/8` and `::1`) are the sources
//!   whose headers are believed. Every other source must not send a header: its datagrams
//!   with a PROXY v2 signature are dropped, the others are answered with `peer` = its
//!   socket address.
//! * A dropped datagram gets no answer and is logged on stderr (`WARN`) with its source and
//!   reason (`malformed`, `forbidden`, `missing`, `no-flow`).
//! * Logs go to stderr; `RUST_LOG` overrides the default filter (`info`).

use clap::Parser;
use realip::TrustedProxies;
use realip::listener::udp::{DatagramError, ProxyUdpSocket, UdpPolicy};

#[derive(Debug, Parser)]
#[command(about = "UDP echo server behind a PROXY v2 or SPP proxy")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:5353 (port 0 picks a free port).
    #[arg(long)]
    bind: String,
    /// Header format of trusted sources: v2-flow, v2-datagram, spp or none.
    #[arg(long, default_value = "v2-flow")]
    format: UdpPolicy,
    /// Trusted proxy (IP or CIDR), repeatable; loopback by default. Others get `none`.
    #[arg(long)]
    trusted: Vec<String>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    let trusted = if args.trusted.is_empty() {
        TrustedProxies::loopback()
    } else {
        TrustedProxies::parse_list(&args.trusted)?
    };
    let socket = ProxyUdpSocket::builder()
        .trusted(trusted)
        .policy(args.format)
        .bind(&args.bind)
        .await?;
    println!("listening on {}", socket.local_addr()?);

    let mut buf = vec![0; 65_536];
    loop {
        let (len, from) = match socket.try_recv_from(&mut buf).await {
            Ok(received) => received,
            Err(DatagramError::Io(err)) => {
                tracing::warn!(error = %err, "receive error");
                continue;
            }
            Err(err) => {
                let peer = err.peer().map(ToString::to_string).unwrap_or_default();
                tracing::warn!(%peer, reason = err.reason(), error = %err, "datagram dropped");
                continue;
            }
        };
        let peer = from.client().map_or_else(
            || from.socket_peer().to_string(),
            |client| client.to_string(),
        );
        let mut reply = format!("peer={peer}\n").into_bytes();
        reply.extend_from_slice(&buf[..len]);
        if let Err(err) = socket.send_to(&reply, &from).await {
            tracing::warn!(%peer, socket = %from.socket_peer(), error = %err, "reply failed");
        }
    }
}
