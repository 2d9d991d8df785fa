//! Command line and TOML configuration, merged into one [`Config`].
//!
//! Every run flag can also be set in the TOML file given with `--config`, under the same name
//! without the leading dashes (`tcp = "0.0.0.0:1883"`, `tcp-proxy-protocol = true`,
//! `trusted-proxy = ["10.0.0.0/8"]`). A flag given on the command line overrides the file;
//! a repeatable flag given on the command line replaces the file's whole list; a boolean flag
//! is on when either the command line or the file turns it on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use realip_core::TrustedProxies;
use realip_tower::Strategy;
use rumqttc::mqttbytes::QoS;
use serde::Deserialize;

use crate::broker::{
    DEFAULT_MAX_PACKET_SIZE, DEFAULT_RECEIVE_MAXIMUM, DEFAULT_TOPIC_ALIAS_MAXIMUM, Limits,
};
use crate::proxy_rules::{ProxyDefault, ProxyRules};

/// Default MQTT over TCP listener.
pub(crate) const DEFAULT_TCP: &str = "0.0.0.0:1883";
/// Default MQTT over WebSocket listener.
pub(crate) const DEFAULT_WS: &str = "0.0.0.0:8083";
/// Default admin (REST API) listener.
pub(crate) const DEFAULT_ADMIN: &str = "127.0.0.1:18083";
/// Port of `--tls` when only an address is given (EMQX's `ssl:default`).
pub(crate) const DEFAULT_TLS_PORT: u16 = 8883;
/// Port of `--wss` when only an address is given (EMQX's `wss:default`).
pub(crate) const DEFAULT_WSS_PORT: u16 = 8084;
/// Default WebSocket path.
pub(crate) const DEFAULT_WS_PATH: &str = "/mqtt";
/// Default time allowed for a PROXY protocol header, in seconds.
pub(crate) const DEFAULT_PROXY_PROTOCOL_TIMEOUT_SECS: f64 = 3.0;
/// Default `TCP_DEFER_ACCEPT` of the MQTT listeners, in seconds: HAProxy's `defer-accept`
/// (one SYN-ACK retransmission). Every client of an MQTT listener speaks first: a PROXY
/// header, a TLS ClientHello, the WebSocket upgrade request, or CONNECT [MQTT-3.1.0-1].
pub(crate) const DEFAULT_DEFER_ACCEPT_SECS: u32 = 1;

/// An MQTT 3.1.1 / 5.0 broker that knows who its clients really are behind reverse proxies.
#[derive(Debug, Parser)]
#[command(
    name = "realip-broker",
    version,
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Query a running broker through its admin API (like `emqx ctl`).
    Ctl(CtlArgs),
}

/// `realip-broker ctl ...`
///
/// Exit status: 0 done; 1 the client asked for does not exist; 2 a usage error, or the admin
/// API could not be reached or gave an unexpected answer.
#[derive(Debug, Args)]
pub(crate) struct CtlArgs {
    /// Admin API address of the running broker (accepted before or after the subcommand).
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_ADMIN, global = true)]
    pub(crate) admin: String,
    #[command(subcommand)]
    pub(crate) command: CtlCommand,
}

/// `ctl` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CtlCommand {
    /// Client sessions.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// Subscriptions of every client.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
}

/// `ctl subscriptions ...`
#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionsCommand {
    /// One line per subscription: `CLIENTID -> topic:FILTER qos:N`.
    List,
}

/// `ctl clients ...`
#[derive(Debug, Subcommand)]
pub(crate) enum ClientsCommand {
    /// One line per client session (connected or not).
    List,
    /// One client, by client id.
    Show {
        /// The MQTT client id.
        clientid: String,
    },
    /// Disconnect a client (a disconnected session is discarded).
    Kick {
        /// The MQTT client id.
        clientid: String,
    },
}

/// Flags of the broker itself (no subcommand).
#[derive(Clone, Debug, Default, Args)]
pub(crate) struct RunArgs {
    /// TOML file with the same keys as these flags (CLI overrides the file).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,

    /// MQTT over TCP listener address, or `off` [default: 0.0.0.0:1883].
    #[arg(long, value_name = "ADDR")]
    pub(crate) tcp: Option<String>,
    /// Require a PROXY protocol header (v1 or v2) from every peer on the TCP listener;
    /// a connection without one is closed.
    #[arg(long)]
    pub(crate) tcp_proxy_protocol: bool,
    /// Seconds allowed for a PROXY protocol header to arrive [default: 3].
    #[arg(long, value_name = "SECS")]
    pub(crate) proxy_protocol_timeout: Option<f64>,
    /// Peers that must send a PROXY header, whose headers are believed (repeatable; CIDRs or
    /// preset:NAME); every other peer gets --proxy-optional or --proxy-default [default: every
    /// peer must send one].
    #[arg(long, value_name = "CIDR")]
    pub(crate) proxy_from: Vec<String>,
    /// Peers that may connect with or without a PROXY header (repeatable): health checkers
    /// that cannot send one; without a header the peer itself is the client, and a header
    /// from them is believed.
    #[arg(long, value_name = "CIDR")]
    pub(crate) proxy_optional: Vec<String>,
    /// Every other peer, once --proxy-from or --proxy-optional is given: `reject` closes
    /// their connections; `none` serves them with their socket address when they send no
    /// header [default: reject].
    #[arg(long, value_name = "reject|none")]
    pub(crate) proxy_default: Option<String>,
    /// `cn-as-username`: the MQTT username becomes the client-certificate common name that
    /// a trusted proxy verified (PROXY v2 SSL TLV, HAProxy `send-proxy-v2-ssl-cn`); a client
    /// without one is refused (CONNACK 0x86 in MQTT 5, 0x05 in 3.1.1) [default: off].
    #[arg(long, value_name = "MODE")]
    pub(crate) tls_identity: Option<String>,

    /// MQTT over WebSocket listener address, or `off` [default: 0.0.0.0:8083].
    #[arg(long, value_name = "ADDR")]
    pub(crate) ws: Option<String>,
    /// WebSocket path [default: /mqtt].
    #[arg(long, value_name = "PATH")]
    pub(crate) ws_path: Option<String>,
    /// Require a PROXY protocol header from every peer on the WebSocket listener (same
    /// --proxy-from and timeout); a connection without one is closed.
    #[arg(long)]
    pub(crate) ws_proxy_protocol: bool,
    /// Header carrying the client address on the WebSocket upgrade request
    /// (X-Forwarded-For, X-Real-IP, Forwarded, ...); none = the transport peer.
    #[arg(long, value_name = "NAME")]
    pub(crate) ws_header: Option<String>,
    /// Header carrying the client port (e.g. X-Forwarded-Port).
    #[arg(long, value_name = "NAME")]
    pub(crate) ws_port_header: Option<String>,
    /// How to pick the address from the header: trusted|trusted-recursive|hops:N|single|
    /// leftmost|forwarded|forwarded-recursive.
    #[arg(long, value_name = "STRATEGY")]
    pub(crate) ws_strategy: Option<String>,
    /// Walk the header from the right past every trusted proxy (NGINX `real_ip_recursive on`);
    /// only for the trusted and forwarded strategies.
    #[arg(long)]
    pub(crate) ws_recursive: bool,
    /// Proxies whose forwarded headers are believed (repeatable): CIDRs, or preset:NAME
    /// for a provider's shipped ranges (preset:cloudflare) [default: loopback].
    #[arg(long, value_name = "CIDR")]
    pub(crate) trusted_proxy: Vec<String>,

    /// MQTT over TLS listener address (`IP` alone means port 8883) [default: off].
    /// Needs --tls-cert and --tls-key.
    #[arg(long, value_name = "ADDR")]
    pub(crate) tls: Option<String>,
    /// MQTT over secure WebSocket listener address (`IP` alone means port 8084), on the
    /// WebSocket path and forwarded-header settings of --ws [default: off].
    #[arg(long, value_name = "ADDR")]
    pub(crate) wss: Option<String>,
    /// PEM file with the server certificate chain, leaf first (--tls and --wss).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM file with the server's private key (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM file with the CAs that sign client certificates: every TLS client must then
    /// present a certificate they verify [default: no client certificate asked].
    #[arg(long, value_name = "FILE")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Require a PROXY protocol header in front of the TLS handshake from every peer on the
    /// --tls listener (same --proxy-from and timeout).
    #[arg(long)]
    pub(crate) tls_proxy_protocol: bool,
    /// Require a PROXY protocol header in front of the TLS handshake from every peer on the
    /// --wss listener (same --proxy-from and timeout).
    #[arg(long)]
    pub(crate) wss_proxy_protocol: bool,

    /// Admin REST API listener address, or `off` [default: 127.0.0.1:18083].
    #[arg(long, value_name = "ADDR")]
    pub(crate) admin: Option<String>,
    /// Listen backlog of every listener: connections the kernel queues until the broker
    /// accepts them [default: the system's maximum, net.core.somaxconn on Linux].
    #[arg(long, value_name = "N")]
    pub(crate) backlog: Option<u32>,
    /// Seconds the kernel holds a new connection on the MQTT listeners until its first bytes
    /// arrive (Linux TCP_DEFER_ACCEPT; every client of these listeners speaks first); 0 turns
    /// it off [default: 1].
    #[arg(long, value_name = "SECS")]
    pub(crate) defer_accept: Option<u32>,

    /// Only clients whose real address is in one of these ranges may connect (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub(crate) allow: Vec<String>,
    /// Clients whose real address is in one of these ranges are refused (repeatable; wins over --allow).
    #[arg(long, value_name = "CIDR")]
    pub(crate) deny: Vec<String>,

    /// Largest MQTT packet accepted, in bytes, fixed header included; larger ones close the
    /// connection (MQTT 5: DISCONNECT 0x95) [default: 1114112 = 1 MiB + 64 KiB].
    #[arg(long, value_name = "BYTES")]
    pub(crate) max_packet_size: Option<u32>,
    /// Highest QoS granted to subscriptions and accepted from MQTT 5 publishers (0, 1 or 2)
    /// [default: 2].
    #[arg(long, value_name = "QOS")]
    pub(crate) max_qos: Option<u8>,
    /// Inbound QoS 2 messages an MQTT 5 client may have unreleased (MQTT 5 Receive Maximum)
    /// [default: 1024].
    #[arg(long, value_name = "N")]
    pub(crate) receive_maximum: Option<u16>,
    /// Topic aliases an MQTT 5 client may set (MQTT 5 Topic Alias Maximum; 0 offers none)
    /// [default: 64].
    #[arg(long, value_name = "N")]
    pub(crate) topic_alias_maximum: Option<u16>,
}

/// The TOML file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    tcp: Option<String>,
    tcp_proxy_protocol: Option<bool>,
    proxy_protocol_timeout: Option<f64>,
    proxy_from: Option<Vec<String>>,
    proxy_optional: Option<Vec<String>>,
    proxy_default: Option<String>,
    tls_identity: Option<String>,
    ws: Option<String>,
    ws_path: Option<String>,
    ws_proxy_protocol: Option<bool>,
    ws_header: Option<String>,
    ws_port_header: Option<String>,
    ws_strategy: Option<String>,
    ws_recursive: Option<bool>,
    trusted_proxy: Option<Vec<String>>,
    tls: Option<String>,
    wss: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    tls_proxy_protocol: Option<bool>,
    wss_proxy_protocol: Option<bool>,
    admin: Option<String>,
    backlog: Option<u32>,
    defer_accept: Option<u32>,
    allow: Option<Vec<String>>,
    deny: Option<Vec<String>>,
    max_packet_size: Option<u32>,
    max_qos: Option<u8>,
    receive_maximum: Option<u16>,
    topic_alias_maximum: Option<u16>,
}

/// Forwarded-header settings of the WebSocket listener.
#[derive(Clone, Debug)]
pub(crate) struct Forwarding {
    /// The address header, as given (e.g. `X-Forwarded-For`).
    pub(crate) header: String,
    /// The port header, when configured.
    pub(crate) port_header: Option<String>,
    /// `--ws-strategy` with `--ws-recursive` folded in.
    pub(crate) strategy: Strategy,
    /// `--trusted-proxy`, when given: loopback for every strategy but `hops:N`, which
    /// accepts the header from any peer unless this is set.
    pub(crate) trusted: Option<TrustedProxies>,
}

/// The PEM files of the TLS listeners.
#[derive(Clone, Debug)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
}

/// The merged, validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) tcp: Option<SocketAddr>,
    pub(crate) tcp_proxy_protocol: bool,
    pub(crate) proxy_protocol_timeout: Duration,
    /// `--proxy-from`, `--proxy-optional`, `--proxy-default`.
    pub(crate) proxy_rules: ProxyRules,
    /// `--tls-identity cn-as-username`.
    pub(crate) cn_as_username: bool,
    pub(crate) ws: Option<SocketAddr>,
    pub(crate) ws_path: String,
    pub(crate) ws_proxy_protocol: bool,
    pub(crate) forwarding: Option<Forwarding>,
    pub(crate) tls: Option<SocketAddr>,
    pub(crate) tls_proxy_protocol: bool,
    pub(crate) wss: Option<SocketAddr>,
    pub(crate) wss_proxy_protocol: bool,
    /// Certificate, key and client CA, when --tls or --wss is on.
    pub(crate) tls_files: Option<TlsFiles>,
    pub(crate) admin: Option<SocketAddr>,
    /// What the broker logs as `warn` lines at start (e.g. networks with host bits set).
    pub(crate) warnings: Vec<String>,
    /// Listen backlog of every listener.
    pub(crate) backlog: u32,
    /// `TCP_DEFER_ACCEPT` of the MQTT listeners (zero: off).
    pub(crate) defer_accept: Duration,
    pub(crate) allow: Option<TrustedProxies>,
    pub(crate) deny: TrustedProxies,
    pub(crate) limits: Limits,
}

impl Config {
    /// Merges the command line over the `--config` file (if any) and validates the result.
    pub(crate) fn load(args: RunArgs) -> Result<Self, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, file)
    }

    fn merge(args: RunArgs, file: FileConfig) -> Result<Self, String> {
        let mut warnings = Vec::new();
        let list = |cli: Vec<String>, file: Option<Vec<String>>| {
            if cli.is_empty() {
                file.unwrap_or_default()
            } else {
                cli
            }
        };
        let tcp = listen_addr("tcp", args.tcp.or(file.tcp), DEFAULT_TCP)?;
        let ws = listen_addr("ws", args.ws.or(file.ws), DEFAULT_WS)?;
        let admin = listen_addr("admin", args.admin.or(file.admin), DEFAULT_ADMIN)?;
        let tls = tls_addr("tls", args.tls.or(file.tls), DEFAULT_TLS_PORT)?;
        let wss = tls_addr("wss", args.wss.or(file.wss), DEFAULT_WSS_PORT)?;
        let tls_proxy_protocol =
            args.tls_proxy_protocol || file.tls_proxy_protocol.unwrap_or(false);
        let wss_proxy_protocol =
            args.wss_proxy_protocol || file.wss_proxy_protocol.unwrap_or(false);
        let tls_files = tls_files(
            tls.is_some() || wss.is_some(),
            args.tls_cert.or(file.tls_cert),
            args.tls_key.or(file.tls_key),
            args.tls_client_ca.or(file.tls_client_ca),
        )?;
        if tls.is_none() && tls_proxy_protocol {
            return Err("--tls-proxy-protocol needs --tls".to_owned());
        }
        if wss.is_none() && wss_proxy_protocol {
            return Err("--wss-proxy-protocol needs --wss".to_owned());
        }
        if tcp.is_none() && ws.is_none() && tls.is_none() && wss.is_none() {
            return Err(
                "no MQTT listener: --tcp and --ws are off and neither --tls nor --wss is given"
                    .to_owned(),
            );
        }
        let backlog = match args.backlog.or(file.backlog) {
            Some(0) => return Err("invalid --backlog 0: expected at least 1".to_owned()),
            Some(n) => n,
            None => realip_listener::default_backlog(),
        };
        let defer_accept = Duration::from_secs(u64::from(
            args.defer_accept
                .or(file.defer_accept)
                .unwrap_or(DEFAULT_DEFER_ACCEPT_SECS),
        ));

        let timeout_given = args.proxy_protocol_timeout.or(file.proxy_protocol_timeout);
        let timeout = timeout_given.unwrap_or(DEFAULT_PROXY_PROTOCOL_TIMEOUT_SECS);
        if !(timeout.is_finite() && timeout > 0.0 && timeout <= 3600.0) {
            return Err(format!(
                "invalid --proxy-protocol-timeout {timeout}: expected seconds in (0, 3600]"
            ));
        }

        let proxy_from = optional_cidrs(
            "proxy-from",
            &list(args.proxy_from, file.proxy_from),
            &mut warnings,
        )?;
        let proxy_optional = optional_cidrs(
            "proxy-optional",
            &list(args.proxy_optional, file.proxy_optional),
            &mut warnings,
        )?;
        let proxy_default = args
            .proxy_default
            .or(file.proxy_default)
            .map(|d| ProxyDefault::parse(&d))
            .transpose()?;
        if proxy_default.is_some() && proxy_from.is_none() && proxy_optional.is_none() {
            return Err("--proxy-default needs --proxy-from or --proxy-optional".to_owned());
        }
        let cn_as_username = match args.tls_identity.or(file.tls_identity) {
            None => false,
            Some(mode) if mode.trim().eq_ignore_ascii_case("cn-as-username") => true,
            Some(mode) if mode.trim().eq_ignore_ascii_case("off") => false,
            Some(mode) => {
                return Err(format!(
                    "invalid --tls-identity {mode:?}: expected cn-as-username or off"
                ));
            }
        };

        let tcp_proxy_protocol =
            args.tcp_proxy_protocol || file.tcp_proxy_protocol.unwrap_or(false);
        let ws_proxy_protocol = args.ws_proxy_protocol || file.ws_proxy_protocol.unwrap_or(false);
        // A flag that would decide nothing is an error, not silently ignored.
        if !tcp_proxy_protocol && !ws_proxy_protocol && !tls_proxy_protocol && !wss_proxy_protocol {
            for (flag, given) in [
                ("--proxy-from", proxy_from.is_some()),
                ("--proxy-optional", proxy_optional.is_some()),
                ("--tls-identity", cn_as_username),
            ] {
                if given {
                    return Err(format!(
                        "{flag} needs --tcp-proxy-protocol or --ws-proxy-protocol \
                         (or --tls-proxy-protocol, --wss-proxy-protocol)"
                    ));
                }
            }
            if timeout_given.is_some() {
                return Err(
                    "--proxy-protocol-timeout needs --tcp-proxy-protocol or --ws-proxy-protocol \
                     (or --tls-proxy-protocol, --wss-proxy-protocol)"
                        .to_owned(),
                );
            }
        }
        if tcp_proxy_protocol && tcp.is_none() {
            return Err("--tcp-proxy-protocol needs the TCP listener (--tcp is off)".to_owned());
        }
        if ws_proxy_protocol && ws.is_none() {
            return Err(
                "--ws-proxy-protocol needs the WebSocket listener (--ws is off)".to_owned(),
            );
        }

        let trusted_list = list(args.trusted_proxy, file.trusted_proxy);
        let trusted = if trusted_list.is_empty() {
            None
        } else {
            Some(cidrs("trusted-proxy", &trusted_list, &mut warnings)?)
        };

        let ws_path = args
            .ws_path
            .or(file.ws_path)
            .unwrap_or_else(|| DEFAULT_WS_PATH.to_owned());
        if !ws_path.starts_with('/') {
            return Err(format!(
                "invalid --ws-path {ws_path:?}: must start with '/'"
            ));
        }

        let header = args.ws_header.or(file.ws_header).filter(|h| !h.is_empty());
        let port_header = args
            .ws_port_header
            .or(file.ws_port_header)
            .filter(|h| !h.is_empty());
        let strategy = args
            .ws_strategy
            .or(file.ws_strategy)
            .map(|s| parse_strategy(&s))
            .transpose()?;
        let recursive = args.ws_recursive || file.ws_recursive.unwrap_or(false);
        for name in header.iter().chain(port_header.iter()) {
            if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(format!("invalid header name {name:?}"));
            }
        }
        let forwarding = match (header, strategy) {
            (Some(header), strategy) => {
                let strategy = match strategy {
                    Some(strategy) => with_recursive(strategy, recursive, "")?,
                    None => with_recursive(
                        default_strategy(&header),
                        recursive,
                        &format!(" (the default for {header})"),
                    )?,
                };
                Some(Forwarding {
                    header,
                    port_header,
                    strategy,
                    trusted: trusted.clone(),
                })
            }
            (None, _) if port_header.is_some() => {
                return Err("--ws-port-header needs --ws-header".to_owned());
            }
            (None, Some(strategy @ Strategy::Forwarded { .. })) => Some(Forwarding {
                header: "Forwarded".to_owned(),
                port_header: None,
                strategy: with_recursive(strategy, recursive, "")?,
                trusted: trusted.clone(),
            }),
            (None, Some(_)) => {
                return Err("--ws-strategy needs --ws-header".to_owned());
            }
            (None, None) => None,
        };
        if forwarding.is_none() && (recursive || trusted.is_some()) {
            return Err(format!(
                "{} needs --ws-header (or --ws-strategy forwarded)",
                if recursive {
                    "--ws-recursive"
                } else {
                    "--trusted-proxy"
                }
            ));
        }

        let allow = optional_cidrs("allow", &list(args.allow, file.allow), &mut warnings)?;
        let deny = cidrs("deny", &list(args.deny, file.deny), &mut warnings)?;

        let max_packet_size = args
            .max_packet_size
            .or(file.max_packet_size)
            .unwrap_or(DEFAULT_MAX_PACKET_SIZE);
        // The largest size MQTT can express: a remaining length of 268,435,455 and its
        // five-byte fixed header.
        if !(64..=268_435_460).contains(&max_packet_size) {
            return Err(format!(
                "invalid --max-packet-size {max_packet_size}: expected 64 to 268435460 bytes"
            ));
        }
        let max_qos = match args.max_qos.or(file.max_qos).unwrap_or(2) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => return Err(format!("invalid --max-qos {other}: expected 0, 1 or 2")),
        };
        let receive_maximum = args
            .receive_maximum
            .or(file.receive_maximum)
            .unwrap_or(DEFAULT_RECEIVE_MAXIMUM);
        if receive_maximum == 0 {
            return Err("invalid --receive-maximum 0: expected 1 to 65535".to_owned());
        }

        Ok(Self {
            tcp,
            tcp_proxy_protocol,
            proxy_protocol_timeout: Duration::from_secs_f64(timeout),
            proxy_rules: ProxyRules::new(
                proxy_from,
                proxy_optional,
                proxy_default.unwrap_or_default(),
            ),
            cn_as_username,
            ws,
            ws_path,
            ws_proxy_protocol,
            forwarding,
            tls,
            tls_proxy_protocol,
            wss,
            wss_proxy_protocol,
            tls_files,
            admin,
            backlog,
            defer_accept,
            warnings,
            allow,
            deny,
            limits: Limits {
                max_packet_size,
                max_qos,
                receive_maximum,
                topic_alias_maximum: args
                    .topic_alias_maximum
                    .or(file.topic_alias_maximum)
                    .unwrap_or(DEFAULT_TOPIC_ALIAS_MAXIMUM),
            },
        })
    }
}

/// `Forwarded` implies the RFC 7239 parser, a single-value header implies `single`,
/// everything else the right-to-left walk over trusted proxies.
fn default_strategy(header: &str) -> Strategy {
    match header.to_ascii_lowercase().as_str() {
        "forwarded" => Strategy::Forwarded { recursive: false },
        "x-real-ip" | "cf-connecting-ip" | "true-client-ip" | "fly-client-ip" => {
            Strategy::SingleValue
        }
        _ => Strategy::TrustedProxies { recursive: false },
    }
}

/// `--ws-strategy`, by the names of [`Strategy`]'s `FromStr` (case-insensitive). `hops:0`,
/// which would ignore the header, is refused: leave out `--ws-header` instead.
fn parse_strategy(name: &str) -> Result<Strategy, String> {
    let name = name.trim();
    match name.to_ascii_lowercase().parse::<Strategy>() {
        Ok(Strategy::TrustedHops(0)) => Err(format!(
            "invalid --ws-strategy {name:?}: hops:N needs N >= 1 (hops:0 would ignore the header)"
        )),
        Ok(strategy) => Ok(strategy),
        Err(e) => match name.get(..5).filter(|p| p.eq_ignore_ascii_case("hops:")) {
            Some(_) => Err(format!(
                "invalid --ws-strategy {name:?}: {:?} is not a number; hops:N takes a whole \
                 number N >= 1",
                &name[5..]
            )),
            None => Err(format!("invalid --ws-strategy: {e}")),
        },
    }
}

/// `strategy` with `--ws-recursive` applied; an error when the flag is on and `strategy`
/// has no walk over trusted proxies (`hops:N`, `single`, `leftmost`), where it would decide
/// nothing. `default` says where `strategy` came from when `--ws-strategy` was not given.
fn with_recursive(strategy: Strategy, recursive: bool, default: &str) -> Result<Strategy, String> {
    if !recursive {
        return Ok(strategy);
    }
    strategy.with_recursive(true).ok_or_else(|| {
        format!(
            "--ws-recursive does not apply to --ws-strategy {strategy}{default}: only trusted \
             and forwarded walk over trusted proxies"
        )
    })
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("invalid config file {}: {e}", path.display()))
}

fn listen_addr(
    flag: &str,
    value: Option<String>,
    default: &str,
) -> Result<Option<SocketAddr>, String> {
    let value = value.unwrap_or_else(|| default.to_owned());
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| {
        format!("invalid --{flag} {value:?}: expected IP:PORT (port 0 = any free port) or off")
    })
}

/// `--tls` / `--wss`: off unless given; an address without a port gets `default_port`.
fn tls_addr(
    flag: &str,
    value: Option<String>,
    default_port: u16,
) -> Result<Option<SocketAddr>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let value = value.trim();
    if value.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(Some(addr));
    }
    let ip = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    ip.parse::<std::net::IpAddr>()
        .map(|ip| Some(SocketAddr::new(ip, default_port)))
        .map_err(|_| {
            format!("invalid --{flag} {value:?}: expected IP:PORT, IP (port {default_port}) or off")
        })
}

fn tls_files(
    needed: bool,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsFiles>, String> {
    match (needed, cert, key) {
        (true, Some(cert), Some(key)) => Ok(Some(TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (true, None, _) => Err("--tls and --wss need --tls-cert FILE (PEM)".to_owned()),
        (true, _, None) => Err("--tls and --wss need --tls-key FILE (PEM)".to_owned()),
        (false, cert, key) => match (cert, key, client_ca) {
            (None, None, None) => Ok(None),
            _ => Err("--tls-cert, --tls-key and --tls-client-ca need --tls or --wss".to_owned()),
        },
    }
}

/// Parses a list flag of addresses and networks; `warnings` gets one line per network written
/// with host bits set (`10.0.0.7/8`), which is used as its network (`10.0.0.0/8`), as NGINX
/// warns for `set_real_ip_from` and `allow`/`deny`.
fn cidrs(
    flag: &str,
    entries: &[String],
    warnings: &mut Vec<String>,
) -> Result<TrustedProxies, String> {
    let (presets, entries) = crate::presets::split(flag, entries, warnings)?;
    for entry in &entries {
        if TrustedProxies::parse_list([entry]).is_err() {
            return Err(format!(
                "invalid --{flag} {entry:?}: expected an IP address (10.0.0.1, ::1), a \
                 network in CIDR notation (10.0.0.0/8, fd00::/8) or preset:NAME \
                 (preset:cloudflare)"
            ));
        }
        if let Some(network) = host_bits_dropped(entry) {
            warnings.push(format!(
                "--{flag} {entry}: host bits are set; using the network {network}"
            ));
        }
    }
    let mut set = TrustedProxies::parse_list(entries).map_err(|e| format!("--{flag}: {e}"))?;
    set.extend(presets.networks().iter().copied());
    Ok(set)
}

/// [`cidrs`] of a list flag that means "not set" when empty.
fn optional_cidrs(
    flag: &str,
    entries: &[String],
    warnings: &mut Vec<String>,
) -> Result<Option<TrustedProxies>, String> {
    if entries.is_empty() {
        Ok(None)
    } else {
        cidrs(flag, entries, warnings).map(Some)
    }
}

/// `Some(network)` when `entry` is `IP/PREFIX` with bits set after the prefix.
fn host_bits_dropped(entry: &str) -> Option<String> {
    let (ip, prefix) = entry.trim().split_once('/')?;
    let prefix: u32 = prefix.parse().ok()?;
    match ip
        .trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .ok()?
    {
        std::net::IpAddr::V4(ip) => {
            let bits = u32::from(ip);
            let mask = u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0);
            (bits & !mask != 0)
                .then(|| format!("{}/{prefix}", std::net::Ipv4Addr::from(bits & mask)))
        }
        std::net::IpAddr::V6(ip) => {
            let bits = u128::from(ip);
            let mask = u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0);
            (bits & !mask != 0)
                .then(|| format!("{}/{prefix}", std::net::Ipv6Addr::from(bits & mask)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunArgs {
        let mut argv = vec!["realip-broker"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().run
    }

    #[test]
    fn defaults_need_no_file() {
        let config = Config::merge(parse(&[]), FileConfig::default()).unwrap();
        assert_eq!(config.tcp, Some("0.0.0.0:1883".parse().unwrap()));
        assert_eq!(config.ws, Some("0.0.0.0:8083".parse().unwrap()));
        assert_eq!(config.admin, Some("127.0.0.1:18083".parse().unwrap()));
        assert_eq!(config.ws_path, "/mqtt");
        assert!(!config.tcp_proxy_protocol && !config.ws_proxy_protocol);
        assert_eq!(config.proxy_protocol_timeout, Duration::from_secs(3));
        assert!(
            config.proxy_rules == ProxyRules::default()
                && config.forwarding.is_none()
                && config.allow.is_none()
        );
        assert!(config.deny.is_empty());
        assert_eq!(config.backlog, realip_listener::default_backlog());
    }

    #[test]
    fn backlog_from_the_flag_or_the_file() {
        let file: FileConfig = toml::from_str("backlog = 2048").unwrap();
        let config = Config::merge(parse(&[]), file).unwrap();
        assert_eq!(config.backlog, 2048);
        let file: FileConfig = toml::from_str("backlog = 2048").unwrap();
        let config = Config::merge(parse(&["--backlog", "8192"]), file).unwrap();
        assert_eq!(config.backlog, 8192);
        assert!(
            Config::merge(parse(&["--backlog", "0"]), FileConfig::default())
                .unwrap_err()
                .contains("backlog")
        );
    }

    #[test]
    fn defer_accept_is_a_second_unless_the_flag_or_the_file_says_otherwise() {
        let config = Config::merge(parse(&[]), FileConfig::default()).unwrap();
        assert_eq!(config.defer_accept, Duration::from_secs(1));
        let file: FileConfig = toml::from_str("defer-accept = 5").unwrap();
        let config = Config::merge(parse(&[]), file).unwrap();
        assert_eq!(config.defer_accept, Duration::from_secs(5));
        let file: FileConfig = toml::from_str("defer-accept = 5").unwrap();
        let config = Config::merge(parse(&["--defer-accept", "0"]), file).unwrap();
        assert_eq!(config.defer_accept, Duration::ZERO);
    }

    #[test]
    fn cli_overrides_file_and_lists_replace() {
        let file: FileConfig = toml::from_str(
            r#"
            tcp = "127.0.0.1:1999"
            ws = "off"
            tcp-proxy-protocol = true
            proxy-protocol-timeout = 1.5
            trusted-proxy = ["10.0.0.0/8"]
            deny = ["192.0.2.0/24"]
            ws-header = "X-Forwarded-For"
            ws-port-header = "X-Forwarded-Port"
            ws-recursive = true
            "#,
        )
        .unwrap();
        let config = Config::merge(
            parse(&["--tcp", "127.0.0.1:0", "--trusted-proxy", "127.0.0.0/8"]),
            file,
        )
        .unwrap();
        assert_eq!(config.tcp, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.ws, None);
        assert!(config.tcp_proxy_protocol);
        assert_eq!(config.proxy_protocol_timeout, Duration::from_millis(1500));
        assert!(config.deny.contains("192.0.2.7".parse().unwrap()));
        let fwd = config.forwarding.unwrap();
        let trusted = fwd.trusted.clone().unwrap();
        assert!(trusted.contains("127.0.0.9".parse().unwrap()));
        assert!(!trusted.contains("10.0.0.1".parse().unwrap()));
        assert_eq!(fwd.header, "X-Forwarded-For");
        assert_eq!(fwd.port_header.as_deref(), Some("X-Forwarded-Port"));
        assert_eq!(fwd.strategy, Strategy::TrustedProxies { recursive: true });
    }

    #[test]
    fn presets_by_name_in_flags_and_the_file() {
        use realip_core::PeerAddr;
        use realip_core::presets::Preset;
        use realip_listener::Policy;

        let file: FileConfig = toml::from_str(
            r#"
            ws-header = "X-Forwarded-For"
            trusted-proxy = ["preset:cloudflare", "10.0.0.0/8"]
            tcp-proxy-protocol = true
            proxy-from = ["preset:google-load-balancers"]
            "#,
        )
        .unwrap();
        let config = Config::merge(parse(&[]), file).unwrap();
        let trusted = config.forwarding.unwrap().trusted.unwrap();
        let mut expected = Preset::Cloudflare.snapshot().networks().to_vec();
        expected.push("10.0.0.0/8".parse().unwrap());
        let mut got = trusted.networks().to_vec();
        got.sort();
        expected.sort();
        assert_eq!(got, expected);
        // Every range of the preset must send a header; a peer outside them is refused.
        for net in Preset::GoogleLoadBalancers.snapshot().networks() {
            let peer = PeerAddr::Inet(std::net::SocketAddr::new(net.addr(), 1));
            assert_eq!(
                config.proxy_rules.policy_for(&peer),
                Policy::Require,
                "{net}"
            );
        }
        let outside = PeerAddr::Inet("192.0.2.1:1".parse().unwrap());
        assert_eq!(config.proxy_rules.policy_for(&outside), Policy::Reject);

        let config = Config::merge(
            parse(&[
                "--ws-header",
                "X-Forwarded-For",
                "--trusted-proxy",
                "preset:fastly",
            ]),
            FileConfig::default(),
        )
        .unwrap();
        let trusted = config.forwarding.unwrap().trusted.unwrap();
        assert_eq!(trusted, Preset::Fastly.snapshot());
        assert!(!trusted.contains("127.0.0.1".parse().unwrap()));

        let err = Config::merge(
            parse(&[
                "--ws-header",
                "X-Forwarded-For",
                "--trusted-proxy",
                "preset:cloudfront",
            ]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(err.contains("unknown preset \"cloudfront\""), "{err}");
    }

    #[test]
    fn strategies_parse_and_bad_values_are_errors() {
        assert_eq!(parse_strategy("hops:2").unwrap(), Strategy::TrustedHops(2));
        assert_eq!(parse_strategy(" Leftmost").unwrap(), Strategy::Leftmost);
        assert!(parse_strategy("hops:0").unwrap_err().contains("N >= 1"));
        assert!(parse_strategy("random").unwrap_err().contains("random"));
        assert!(Config::merge(parse(&["--tcp", "nonsense"]), FileConfig::default()).is_err());
        assert!(
            Config::merge(parse(&["--deny", "10.0.0.0/33"]), FileConfig::default())
                .unwrap_err()
                .contains("10.0.0.0/33")
        );
        assert!(toml::from_str::<FileConfig>("unknown-key = 1").is_err());
        let real_ip =
            Config::merge(parse(&["--ws-header", "X-Real-IP"]), FileConfig::default()).unwrap();
        assert_eq!(real_ip.forwarding.unwrap().strategy, Strategy::SingleValue);
    }

    #[test]
    fn flags_that_would_decide_nothing_are_errors() {
        let err = |args: &[&str]| Config::merge(parse(args), FileConfig::default()).unwrap_err();
        assert_eq!(
            err(&["--proxy-from", "10.0.0.0/8"]),
            "--proxy-from needs --tcp-proxy-protocol or --ws-proxy-protocol \
             (or --tls-proxy-protocol, --wss-proxy-protocol)"
        );
        assert!(err(&["--ws-recursive"]).starts_with("--ws-recursive needs --ws-header"));
        assert!(
            err(&[
                "--ws-header",
                "X-Forwarded-For",
                "--ws-strategy",
                "leftmost",
                "--ws-recursive"
            ])
            .starts_with("--ws-recursive does not apply to --ws-strategy leftmost")
        );
        assert!(
            err(&["--trusted-proxy", "10.0.0.0/8"])
                .starts_with("--trusted-proxy needs --ws-header")
        );
        assert!(
            err(&["--proxy-protocol-timeout", "2"]).starts_with("--proxy-protocol-timeout needs")
        );
        assert!(
            err(&["--tcp", "off", "--tcp-proxy-protocol"])
                .starts_with("--tcp-proxy-protocol needs")
        );
        assert!(
            err(&["--ws", "off", "--ws-proxy-protocol"]).starts_with("--ws-proxy-protocol needs")
        );
        assert!(err(&["--max-qos", "3"]).contains("--max-qos 3"));
        assert!(err(&["--receive-maximum", "0"]).contains("--receive-maximum 0"));
        assert!(err(&["--max-packet-size", "10"]).contains("--max-packet-size 10"));
        for ok in [
            &["--proxy-from", "10.0.0.0/8", "--ws-proxy-protocol"][..],
            &[
                "--trusted-proxy",
                "10.0.0.0/8",
                "--ws-strategy",
                "forwarded",
            ],
        ] {
            assert!(
                Config::merge(parse(ok), FileConfig::default()).is_ok(),
                "{ok:?}"
            );
        }
    }

    #[test]
    fn tls_listeners_default_ports_and_need_files() {
        let err = |args: &[&str]| Config::merge(parse(args), FileConfig::default()).unwrap_err();
        let config = Config::merge(
            parse(&[
                "--tls",
                "127.0.0.1",
                "--wss",
                "[::1]",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(config.tls, Some("127.0.0.1:8883".parse().unwrap()));
        assert_eq!(config.wss, Some("[::1]:8084".parse().unwrap()));
        assert_eq!(config.tls_files.unwrap().cert, PathBuf::from("c.pem"));
        let config = Config::merge(parse(&[]), FileConfig::default()).unwrap();
        assert!(config.tls.is_none() && config.wss.is_none() && config.tls_files.is_none());
        assert!(err(&["--tls", "0.0.0.0:8883"]).contains("--tls-cert"));
        assert!(err(&["--tls", "0.0.0.0", "--tls-cert", "c"]).contains("--tls-key"));
        assert!(err(&["--tls-cert", "c"]).contains("need --tls or --wss"));
        assert!(err(&["--tls-proxy-protocol"]).contains("needs --tls"));
        assert!(err(&["--tls", "nonsense"]).contains("invalid --tls"));
    }

    #[test]
    fn list_flags_name_themselves_and_warn_about_host_bits() {
        let err = |args: &[&str]| Config::merge(parse(args), FileConfig::default()).unwrap_err();
        let e = err(&["--allow", "foo"]);
        assert!(
            e.starts_with("invalid --allow \"foo\": expected an IP address"),
            "{e}"
        );
        assert!(!e.contains("trusted proxy"), "{e}");
        assert!(err(&["--deny", "10.0.0.0/33"]).starts_with("invalid --deny \"10.0.0.0/33\""));
        let e = err(&["--ws-header", "X-Forwarded-For", "--ws-strategy", "hops:x"]);
        assert!(e.contains("\"x\" is not a number"), "{e}");
        let config = Config::merge(
            parse(&[
                "--deny",
                "127.0.0.131/24",
                "--deny",
                "2001:db8::1/64",
                "--allow",
                "10.0.0.0/8",
            ]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(
            config.warnings,
            [
                "--deny 127.0.0.131/24: host bits are set; using the network 127.0.0.0/24",
                "--deny 2001:db8::1/64: host bits are set; using the network 2001:db8::/64",
            ]
        );
        assert!(config.deny.contains("127.0.0.7".parse().unwrap()));
        assert_eq!(host_bits_dropped("10.0.0.0/8"), None);
        assert_eq!(host_bits_dropped("10.0.0.1"), None);
        assert_eq!(
            host_bits_dropped("10.0.0.1/0").as_deref(),
            Some("0.0.0.0/0")
        );
    }

    #[test]
    fn proxy_rules_and_tls_identity_from_the_file() {
        let file: FileConfig = toml::from_str(
            r#"
            tcp-proxy-protocol = true
            proxy-from = ["10.0.0.0/24"]
            proxy-optional = ["10.0.9.0/24"]
            proxy-default = "none"
            tls-identity = "cn-as-username"
            "#,
        )
        .unwrap();
        let config = Config::merge(parse(&[]), file).unwrap();
        assert_eq!(
            config.proxy_rules.to_string(),
            "10.0.0.0/24=require; 10.0.9.0/24=optional; *=reject; default=none"
        );
        assert!(config.cn_as_username);
        let err = |args: &[&str]| Config::merge(parse(args), FileConfig::default()).unwrap_err();
        assert!(
            err(&["--tcp-proxy-protocol", "--tls-identity", "cn"])
                .starts_with("invalid --tls-identity \"cn\"")
        );
        assert!(err(&["--tls-identity", "cn-as-username"]).starts_with("--tls-identity needs"));
    }

    #[test]
    fn a_broker_without_listeners_is_refused() {
        let err = Config::merge(
            parse(&["--tcp", "off", "--ws", "off"]),
            FileConfig::default(),
        )
        .unwrap_err();
        assert!(err.starts_with("no MQTT listener"), "{err}");
    }

    #[test]
    fn ctl_takes_admin_before_or_after_the_subcommand() {
        for argv in [
            &[
                "realip-broker",
                "ctl",
                "--admin",
                "127.0.0.1:9",
                "clients",
                "kick",
                "c9",
            ][..],
            &[
                "realip-broker",
                "ctl",
                "clients",
                "kick",
                "c9",
                "--admin",
                "127.0.0.1:9",
            ],
            &[
                "realip-broker",
                "ctl",
                "clients",
                "--admin",
                "127.0.0.1:9",
                "kick",
                "c9",
            ],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let Some(Command::Ctl(ctl)) = cli.command else {
                panic!("no ctl in {argv:?}");
            };
            assert_eq!(ctl.admin, "127.0.0.1:9", "{argv:?}");
            assert!(
                matches!(ctl.command, CtlCommand::Clients(ClientsCommand::Kick { ref clientid }) if clientid == "c9"),
                "{argv:?}"
            );
        }
        let cli = Cli::try_parse_from(["realip-broker", "ctl", "subscriptions", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Ctl(CtlArgs {
                command: CtlCommand::Subscriptions(SubscriptionsCommand::List),
                ..
            }))
        ));
    }

    #[test]
    fn ctl_parses() {
        let cli = Cli::try_parse_from([
            "realip-broker",
            "ctl",
            "--admin",
            "127.0.0.1:1",
            "clients",
            "show",
            "c1",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Ctl(ctl)) => {
                assert_eq!(ctl.admin, "127.0.0.1:1");
                assert!(
                    matches!(ctl.command, CtlCommand::Clients(ClientsCommand::Show { clientid }) if clientid == "c1")
                );
            }
            None => panic!("no subcommand"),
        }
    }
}
