//! A tiny TCP echo server behind a PROXY protocol listener: the shape a broker uses.
//!
//! ```text
//! cargo run --example tokio_listener -- --bind ADDR [--policy require|optional|ignore|reject|skip]
//!     [--trusted CIDR]... [--header-timeout SECS]
//! ```
//!
//! Contract (tests and users rely on it):
//!
//! * On start, one line `listening on IP:PORT` is printed on stdout (useful with port 0).
//! * Every accepted connection first receives one line
//!   `peer=IP:PORT socket=IP:PORT version=v1|v2|none command=proxy|local|none\n`, where
//!   `peer` is the real client (the PROXY header's source for a PROXY command with an IP
//!   family, else the socket peer) and `socket` is the TCP peer. Then every byte the
//!   connection sends is echoed back until it closes.
//! * A rejected connection (invalid, oversized, forged or missing header, timeout) is
//!   closed without that line, and the reason is logged on stderr (`WARN`, or `INFO` for a
//!   timeout; a peer that closes without sending a byte is only logged at `DEBUG`).
//! * `--policy` (default `require`) applies to every peer. With one or more `--trusted`
//!   CIDRs (or IPs), peers inside them get `--policy` and every other peer gets `reject`: a
//!   PROXY header from them closes the connection, and their connections without a header
//!   are served with `peer` = `socket`.
//! * `--header-timeout` (default 3, fractions allowed) is how long a peer has to send its
//!   complete header.
//! * Logs go to stderr; `RUST_LOG` overrides the default filter (`info`).

use std::time::Duration;

use clap::Parser;
use realip::TrustedProxies;
use realip::listener::{Policy, ProxiedAddr, ProxyListener};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Parser)]
#[command(about = "Echo server behind a PROXY protocol listener")]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:1883 (port 0 picks a free port).
    #[arg(long)]
    bind: String,
    /// What to do with PROXY headers: require, optional, ignore, reject or skip.
    #[arg(long, default_value = "require")]
    policy: Policy,
    /// Trusted proxy (IP or CIDR), repeatable. Others get the `reject` policy.
    #[arg(long)]
    trusted: Vec<String>,
    /// Seconds a peer has to send its complete header.
    #[arg(long, default_value_t = 3.0)]
    header_timeout: f64,
}

fn banner(addr: &ProxiedAddr) -> String {
    let info = addr.proxy_info();
    let peer = addr.client().map_or_else(
        || addr.socket_peer().to_string(),
        |client| client.to_string(),
    );
    format!(
        "peer={peer} socket={} version={} command={}\n",
        addr.socket_peer(),
        info.map_or("none", |i| i.version().as_str()),
        info.map_or("none", |i| i.command().as_str()),
    )
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

    let timeout = Duration::try_from_secs_f64(args.header_timeout)
        .map_err(|e| format!("invalid --header-timeout: {e}"))?;
    let mut builder = ProxyListener::builder()
        .policy(args.policy)
        .header_timeout(timeout);
    if !args.trusted.is_empty() {
        builder = builder.trusted(TrustedProxies::parse_list(&args.trusted)?);
    }
    let mut listener = builder.bind(&args.bind).await?;
    println!("listening on {}", listener.local_addr()?);

    loop {
        let (mut stream, addr) = listener.accept().await;
        tracing::info!(
            peer = %addr.client().map_or_else(|| "-".to_owned(), |client| client.to_string()),
            socket = %addr.socket_peer(),
            "connection"
        );
        tokio::spawn(async move {
            let line = banner(&addr);
            if stream.write_all(line.as_bytes()).await.is_err() {
                return;
            }
            let (mut reader, mut writer) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.shutdown().await;
        });
    }
}
