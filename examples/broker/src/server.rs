//! The listeners (TCP, WebSocket, admin), the stable `listening ...` line, and shutdown.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use realip_core::Live;
use realip_listener::ProxiedAddr;
use realip_tower::{RealClient, RealClientRejection, Resolution};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::acl::Acl;
use crate::broker::Broker;
use crate::config::{Config, RunArgs};
use crate::realip::{
    MqttListener, WsPeer, conn_meta, forwarded_json, insert_proxied_addr, real_ip_layer,
    trusted_proxies,
};
use crate::reload::Reloader;
use crate::tls::{TlsAddr, TlsFacts, TlsListener};
use crate::ws::WsIo;
use crate::{admin, prom, reload, session, tls};

/// Time connections get to close after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Listener names, as EMQX spells them.
const TCP_LISTENER: &str = "tcp:default";
const WS_LISTENER: &str = "ws:default";
const TLS_LISTENER: &str = "ssl:default";
const WSS_LISTENER: &str = "wss:default";
/// What a WebSocket client may ask for in `Sec-WebSocket-Protocol` (MQTT 3.1.1 §6).
const WS_PROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Runs the broker until SIGINT/SIGTERM.
pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let config = match Config::load(args.clone()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("realip-broker: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config, args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realip-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds a listener with `backlog`, and `TCP_DEFER_ACCEPT` of `defer_accept` when it is not
/// zero (where the system has no such option, it is logged and left off).
async fn bind(
    name: &str,
    addr: Option<SocketAddr>,
    backlog: u32,
    defer_accept: Duration,
) -> Result<Option<TcpListener>, String> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = realip_listener::bind_tcp(addr, backlog)
        .await
        .map_err(|e| format!("cannot bind the {name} listener on {addr}: {e}"))?;
    if !defer_accept.is_zero() {
        match realip_listener::set_defer_accept(&listener, defer_accept) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
                tracing::warn!(listener = name, "--defer-accept: {e}; left off");
            }
            Err(e) => {
                return Err(format!(
                    "cannot set TCP_DEFER_ACCEPT on the {name} listener: {e}"
                ));
            }
        }
    }
    Ok(Some(listener))
}

fn local(listener: &Option<TcpListener>) -> String {
    listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string())
}

fn local_tls<T>(listener: &Option<(TcpListener, T)>) -> String {
    listener
        .as_ref()
        .and_then(|(l, _)| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string())
}

async fn serve(config: Config, args: RunArgs) -> Result<(), String> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let broker = Broker::with_identity(
        Acl::new(config.allow.clone(), config.deny.clone()),
        config.limits,
        config.cn_as_username,
    );
    // What a reload replaces: read per connection (PROXY rules, allow/deny) or per request
    // (the WebSocket layer's trusted proxies).
    let proxy_rules = Live::new(config.proxy_rules.clone());
    let trusted = config
        .forwarding
        .as_ref()
        .map(|fwd| Live::new(trusted_proxies(fwd)));
    let layer = match (&config.forwarding, &trusted) {
        (Some(fwd), Some(trusted)) => {
            Some(real_ip_layer(fwd)?.live_trusted_proxies(trusted.clone()))
        }
        _ => None,
    };
    let reloader = Arc::new(Reloader::new(
        args,
        config.clone(),
        proxy_rules.clone(),
        trusted,
        broker.live_acl(),
    ));
    #[cfg(unix)]
    let sighup = reload::sighup();
    let defer = config.defer_accept;
    let tcp = bind("tcp", config.tcp, config.backlog, defer).await?;
    let ws = bind("ws", config.ws, config.backlog, defer).await?;
    let tls = bind("tls", config.tls, config.backlog, defer).await?;
    let wss = bind("wss", config.wss, config.backlog, defer).await?;
    // Not the admin API, where connections do not arrive in numbers.
    let admin = bind("admin", config.admin, config.backlog, Duration::ZERO).await?;
    // `Config` holds the files whenever --tls or --wss is on.
    let tls_config = |alpn: &[&[u8]]| match &config.tls_files {
        Some(files) => tls::server_config(files, alpn),
        None => Err("--tls and --wss need --tls-cert and --tls-key".to_owned()),
    };
    let tls = match tls {
        Some(listener) => Some((listener, tls_config(&[])?)),
        None => None,
    };
    // Browsers negotiate HTTP/1.1 for the WebSocket upgrade.
    let wss = match wss {
        Some(listener) => Some((listener, tls_config(&[b"http/1.1"])?)),
        None => None,
    };

    // The recorder is there to be scraped: only with the admin listener. Installed before
    // anything is accepted, so that every connection is counted.
    let metrics = match &admin {
        Some(_) => {
            let on = [
                (tcp.is_some(), TCP_LISTENER),
                (ws.is_some(), WS_LISTENER),
                (tls.is_some(), TLS_LISTENER),
                (wss.is_some(), WSS_LISTENER),
            ];
            let listeners: Vec<&'static str> = on
                .iter()
                .filter_map(|(on, name)| on.then_some(*name))
                .collect();
            Some(prom::install(&listeners)?)
        }
        None => None,
    };

    // The stable line scripts wait for: every listener is bound when it is printed.
    // New listeners are appended, so `tcp=... ws=... admin=...` keeps its order.
    let line = format!(
        "listening tcp={} ws={} admin={} tls={} wss={}",
        local(&tcp),
        local(&ws),
        local(&admin),
        local_tls(&tls),
        local_tls(&wss),
    );
    {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
    }
    tracing::info!(
        tcp = %local(&tcp),
        tcp_proxy_protocol = config.tcp_proxy_protocol,
        ws = %local(&ws),
        ws_path = %config.ws_path,
        ws_proxy_protocol = config.ws_proxy_protocol,
        ws_header = config.forwarding.as_ref().map(|f| f.header.as_str()).unwrap_or("none"),
        tls = %local_tls(&tls),
        tls_proxy_protocol = config.tls_proxy_protocol,
        wss = %local_tls(&wss),
        wss_proxy_protocol = config.wss_proxy_protocol,
        tls_client_ca = config.tls_files.as_ref().is_some_and(|f| f.client_ca.is_some()),
        admin = %local(&admin),
        defer_accept_secs = config.defer_accept.as_secs(),
        "realip-broker started"
    );

    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(handle) = &metrics {
        tasks.spawn(prom::upkeep(handle.clone(), stop.clone()));
    }
    #[cfg(unix)]
    if let Some(hup) = sighup {
        tasks.spawn(reload::on_sighup(hup, Arc::clone(&reloader), stop.clone()));
    }
    tasks.spawn(sweep_loop(Arc::clone(&broker), stop.clone()));
    if let Some(listener) = tcp {
        let listener = MqttListener::new(
            listener,
            "--tcp-proxy-protocol",
            config.tcp_proxy_protocol,
            &proxy_rules,
            config.proxy_protocol_timeout,
        );
        tasks.spawn(tcp_loop(listener, Arc::clone(&broker), stop.clone()));
    }
    let listener = |listener, flag, proxy_protocol| {
        MqttListener::new(
            listener,
            flag,
            proxy_protocol,
            &proxy_rules,
            config.proxy_protocol_timeout,
        )
    };
    if let Some((tls, tls_config)) = tls {
        let listener = listener(tls, "--tls-proxy-protocol", config.tls_proxy_protocol);
        let listener =
            TlsListener::new(listener, tls_config).map_err(|e| format!("TLS listener: {e}"))?;
        tasks.spawn(tls_loop(listener, Arc::clone(&broker), stop.clone()));
    }
    let ws_app = |name| {
        let mut app = ws_router(&config, name, Arc::clone(&broker));
        if let Some(layer) = layer.clone() {
            app = app.layer(layer);
        }
        // Outermost: the forwarded-header layer and the handler read `ConnectInfo<ProxiedAddr>`.
        app.layer(axum::middleware::map_request(insert_proxied_addr))
            .into_make_service_with_connect_info::<WsPeer>()
    };
    if let Some(ws) = ws {
        let listener = listener(ws, "--ws-proxy-protocol", config.ws_proxy_protocol);
        let served = axum::serve(listener, ws_app(WS_LISTENER));
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = served.with_graceful_shutdown(stopped(stop)).await {
                tracing::error!(error = %e, "websocket listener failed");
            }
        });
    }
    if let Some((wss, wss_config)) = wss {
        let listener = listener(wss, "--wss-proxy-protocol", config.wss_proxy_protocol);
        let listener = TlsListener::new(listener, wss_config)
            .map_err(|e| format!("secure WebSocket listener: {e}"))?;
        let served = axum::serve(listener, ws_app(WSS_LISTENER));
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = served.with_graceful_shutdown(stopped(stop)).await {
                tracing::error!(error = %e, "secure websocket listener failed");
            }
        });
    }
    if let Some(listener) = admin {
        let mut app = admin::router(Arc::clone(&broker));
        if let Some(handle) = metrics {
            app = app.merge(prom::router(handle));
        }
        app = app.merge(reload::router(Arc::clone(&reloader)));
        let stop = stop.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(stopped(stop))
                .await
            {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
    }

    let signal = shutdown_signal().await;
    tracing::info!(signal, "shutting down: no new connections, closing clients");
    stop_tx.send_replace(true);
    broker.shutdown(SHUTDOWN_GRACE).await;
    // Listeners stop accepting at once; the HTTP servers may wait for idle keep-alive
    // connections, which get the rest of the grace period.
    if tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        tasks.abort_all();
    }
    tracing::info!("stopped");
    Ok(())
}

/// Delayed wills, session expiry and retained-message expiry, four times a second.
async fn sweep_loop(broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = every.tick() => broker.sweep(std::time::Instant::now()),
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn shutdown_signal() -> &'static str {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => "SIGINT",
        () = term => "SIGTERM",
    }
}

/// MQTT over TCP.
async fn tcp_loop(
    mut listener: MqttListener,
    broker: Arc<Broker>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // `accept` never fails: bad handshakes are logged and closed by the listener.
        let (stream, addr) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let meta = conn_meta(TCP_LISTENER, &addr);
        // The session keeps the socket alone: the addresses are in `meta`, and the bytes
        // that came with the PROXY header go to its reader.
        let (socket, received, _) = stream.into_parts();
        tokio::spawn(session::run(socket, received, meta, Arc::clone(&broker)));
    }
}

async fn tls_loop(mut listener: TlsListener, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, TlsAddr { addr, tls }) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        let mut meta = conn_meta(TLS_LISTENER, &addr);
        meta.tls = tls.as_ref().map(TlsFacts::json);
        tokio::spawn(session::run(stream, Vec::new(), meta, Arc::clone(&broker)));
    }
}

#[derive(Clone, Debug)]
struct WsState {
    broker: Arc<Broker>,
    listener: &'static str,
    port_header: Option<String>,
    path: Arc<str>,
}

fn ws_router(config: &Config, listener: &'static str, broker: Arc<Broker>) -> Router {
    let port_header = config
        .forwarding
        .as_ref()
        .and_then(|f| f.port_header.clone());
    Router::new()
        .route(&config.ws_path, get(ws_upgrade))
        .fallback(ws_wrong_path)
        .with_state(WsState {
            broker,
            listener,
            port_header,
            path: Arc::from(config.ws_path.as_str()),
        })
}

/// Any other path: 404, and an `info` line naming the path asked for and the configured one
/// (MQTT.js, for one, defaults to `/` while EMQX and this broker serve `/mqtt`).
async fn ws_wrong_path(State(state): State<WsState>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<ProxiedAddr>>()
        .map(|ConnectInfo(addr)| addr.socket_peer().to_string())
        .unwrap_or_default();
    let upgrade = request
        .headers()
        .get(axum::http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    tracing::info!(
        peer = %peer,
        path = %request.uri().path(),
        ws_path = %state.path,
        websocket = upgrade,
        "{} request for {:?} answered 404: MQTT over WebSocket is served on {:?} (--ws-path)",
        if upgrade { "WebSocket" } else { "HTTP" },
        request.uri().path(),
        &*state.path,
    );
    axum::http::StatusCode::NOT_FOUND.into_response()
}

/// The upgrade handler. With the forwarded-header layer installed, [`RealClient`] is its
/// answer (which already accounts for the PROXY-derived transport peer) and [`Resolution`]
/// says which header decided; without it, the client is what the PROXY listener accepted.
async fn ws_upgrade(
    State(state): State<WsState>,
    ConnectInfo(addr): ConnectInfo<ProxiedAddr>,
    tls: Option<Extension<TlsFacts>>,
    client: Option<RealClient>,
    resolution: Result<Resolution, RealClientRejection>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let mut meta = conn_meta(state.listener, &addr);
    meta.tls = tls.map(|Extension(facts)| facts.json());
    if let Some(RealClient(client)) = client {
        meta.client = client;
    }
    if let Ok(resolution) = resolution {
        meta.forwarded = forwarded_json(&resolution, &headers, state.port_header.as_deref());
    }
    let broker = state.broker;
    upgrade
        .protocols(WS_PROTOCOLS)
        .on_upgrade(move |socket| async move {
            session::run(WsIo::new(socket), Vec::new(), meta, broker).await;
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MQTT traffic is small packets answered at once: Nagle's algorithm must be off on every
    /// accepted connection of every MQTT listener (TCP, WebSocket, TLS and secure WebSocket
    /// all accept through `MqttListener`), with or without PROXY protocol, whether the
    /// listener passes it on or each socket gets its own.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        for proxy_protocol in [false, true] {
            let listener = realip_listener::bind_tcp("127.0.0.1:0", 16)
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("address");
            let rules = Live::new(crate::proxy_rules::ProxyRules::default());
            let mut listener = MqttListener::new(
                listener,
                "--ws-proxy-protocol",
                proxy_protocol,
                &rules,
                Duration::from_secs(3),
            );
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            if proxy_protocol {
                tokio::io::AsyncWriteExt::write_all(
                    &mut client,
                    b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 1883\r\n",
                )
                .await
                .expect("write");
            }
            let (accepted, _) = listener.accept().await;
            assert!(
                accepted.get_ref().nodelay().expect("nodelay"),
                "proxy_protocol={proxy_protocol}"
            );
        }
    }

    /// The MQTT listeners are deferred by `--defer-accept`; zero leaves the socket alone.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn bind_sets_defer_accept_unless_zero() {
        let addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
        let deferred = bind("tcp", addr, 16, Duration::from_secs(1))
            .await
            .expect("bind")
            .expect("on");
        assert_eq!(
            realip_listener::defer_accept(&deferred).expect("getsockopt"),
            Some(Duration::from_secs(1))
        );
        let plain = bind("admin", addr, 16, Duration::ZERO)
            .await
            .expect("bind")
            .expect("on");
        assert_eq!(
            realip_listener::defer_accept(&plain).expect("getsockopt"),
            None
        );
    }
}
