//! The listeners (TCP, WebSocket, admin), the stable `listening ...` line, and shutdown.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use realip_listener::ProxiedAddr;
use realip_tower::Resolution;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::acl::Acl;
use crate::broker::Broker;
use crate::config::{Config, RunArgs};
use crate::realip::{
    MqttListener, WsPeer, conn_meta, forwarded_json, insert_proxied_addr, real_ip_layer,
};
use crate::ws::WsIo;
use crate::{admin, session};

/// Time connections get to close after SIGINT/SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Listener names, as EMQX spells them.
const TCP_LISTENER: &str = "tcp:default";
const WS_LISTENER: &str = "ws:default";

/// Runs the broker until SIGINT/SIGTERM.
pub(crate) async fn run(args: RunArgs) -> ExitCode {
    let config = match Config::load(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("realip-broker: {e}");
            return ExitCode::from(2);
        }
    };
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("realip-broker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bind(
    name: &str,
    addr: Option<SocketAddr>,
    backlog: u32,
) -> Result<Option<TcpListener>, String> {
    match addr {
        Some(addr) => realip_listener::bind_tcp(addr, backlog)
            .await
            .map(Some)
            .map_err(|e| format!("cannot bind the {name} listener on {addr}: {e}")),
        None => Ok(None),
    }
}

fn local(listener: &Option<TcpListener>) -> String {
    listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or_else(|| "off".to_owned(), |a| a.to_string())
}

async fn serve(config: Config) -> Result<(), String> {
    let broker = Broker::new(
        Acl::new(config.allow.clone(), config.deny.clone()),
        config.limits,
    );
    let layer = config.forwarding.as_ref().map(real_ip_layer).transpose()?;
    let tcp = bind("tcp", config.tcp, config.backlog).await?;
    let ws = bind("ws", config.ws, config.backlog).await?;
    let admin = bind("admin", config.admin, config.backlog).await?;

    // The stable line scripts wait for: every listener is bound when it is printed.
    let line = format!(
        "listening tcp={} ws={} admin={}",
        local(&tcp),
        local(&ws),
        local(&admin)
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
        admin = %local(&admin),
        "realip-broker started"
    );

    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sweep_loop(Arc::clone(&broker), stop.clone()));
    if let Some(listener) = tcp {
        let listener = MqttListener::new(
            listener,
            "--tcp-proxy-protocol",
            config.tcp_proxy_protocol,
            config.proxy_from.as_ref(),
            config.proxy_protocol_timeout,
        );
        tasks.spawn(tcp_loop(listener, Arc::clone(&broker), stop.clone()));
    }
    if let Some(listener) = ws {
        let listener = MqttListener::new(
            listener,
            "--ws-proxy-protocol",
            config.ws_proxy_protocol,
            config.proxy_from.as_ref(),
            config.proxy_protocol_timeout,
        );
        let mut app = ws_router(&config, Arc::clone(&broker));
        if let Some(layer) = layer {
            app = app.layer(layer);
        }
        // Outermost: the forwarded-header layer and the handler read `ConnectInfo<ProxiedAddr>`.
        let app = app.layer(axum::middleware::map_request(insert_proxied_addr));
        let stop = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<WsPeer>(),
            )
            .with_graceful_shutdown(stopped(stop))
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "websocket listener failed");
            }
        });
    }
    if let Some(listener) = admin {
        let app = admin::router(Arc::clone(&broker));
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
        let _ = stream.get_ref().set_nodelay(true);
        let meta = conn_meta(TCP_LISTENER, &addr);
        tokio::spawn(session::run(stream, meta, Arc::clone(&broker)));
    }
}

#[derive(Clone, Debug)]
struct WsState {
    broker: Arc<Broker>,
    port_header: Option<String>,
}

fn ws_router(config: &Config, broker: Arc<Broker>) -> Router {
    let port_header = config
        .forwarding
        .as_ref()
        .and_then(|f| f.port_header.clone());
    Router::new()
        .route(&config.ws_path, get(ws_upgrade))
        .with_state(WsState {
            broker,
            port_header,
        })
}

async fn ws_upgrade(State(state): State<WsState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<ProxiedAddr>>().cloned()
    else {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "no connect info: serve the router with into_make_service_with_connect_info::<ProxiedAddr>()",
        )
            .into_response();
    };
    let mut meta = conn_meta(WS_LISTENER, &addr);
    // With the forwarded-header layer installed, its answer wins (it already accounts for
    // the PROXY-derived transport peer).
    if let Some(resolution) = parts.extensions.get::<Resolution>() {
        if let Some(client) = resolution.client() {
            meta.client = client.clone();
        }
        meta.forwarded = forwarded_json(resolution, &parts.headers, state.port_header.as_deref());
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let broker = state.broker;
    upgrade
        .protocols(["mqtt", "mqttv3.1"])
        .on_upgrade(move |socket| async move {
            session::run(WsIo::new(socket), meta, broker).await;
        })
}
