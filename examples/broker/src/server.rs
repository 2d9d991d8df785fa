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
use realip_core::{AddrSource, ClientAddr, PeerAddr};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::acl::Acl;
use crate::broker::{Broker, ConnMeta};
use crate::config::{Config, RunArgs};
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

async fn bind(name: &str, addr: Option<SocketAddr>) -> Result<Option<TcpListener>, String> {
    match addr {
        Some(addr) => TcpListener::bind(addr)
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
    let broker = Broker::new(Acl::new(config.allow.clone(), config.deny.clone()));
    let tcp = bind("tcp", config.tcp).await?;
    let ws = bind("ws", config.ws).await?;
    let admin = bind("admin", config.admin).await?;

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
    if let Some(listener) = tcp {
        tasks.spawn(tcp_loop(listener, Arc::clone(&broker), stop.clone()));
    }
    if let Some(listener) = ws {
        let app = ws_router(&config, Arc::clone(&broker), listener.local_addr().ok());
        let stop = stop.clone();
        tasks.spawn(async move {
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
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

async fn tcp_loop(listener: TcpListener, broker: Arc<Broker>, mut stop: watch::Receiver<bool>) {
    let local_addr = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let meta = ConnMeta {
                    listener: TCP_LISTENER,
                    client: ClientAddr::from_socket_addr(peer, AddrSource::Socket),
                    socket_peer: PeerAddr::Inet(peer),
                    sockname: stream.local_addr().ok().or(local_addr),
                    proxy: None,
                    forwarded: None,
                };
                spawn_session(stream, meta, &broker);
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, as axum does.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn spawn_session(stream: TcpStream, meta: ConnMeta, broker: &Arc<Broker>) {
    let _ = stream.set_nodelay(true);
    tokio::spawn(session::run(stream, meta, Arc::clone(broker)));
}

#[derive(Clone, Debug)]
struct WsState {
    broker: Arc<Broker>,
    local_addr: Option<SocketAddr>,
}

fn ws_router(config: &Config, broker: Arc<Broker>, local_addr: Option<SocketAddr>) -> Router {
    Router::new()
        .route(&config.ws_path, get(ws_upgrade))
        .with_state(WsState { broker, local_addr })
}

async fn ws_upgrade(State(state): State<WsState>, request: Request) -> Response {
    let (mut parts, _body) = request.into_parts();
    let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned() else {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "no connect info: serve the router with into_make_service_with_connect_info",
        )
            .into_response();
    };
    let meta = ConnMeta {
        listener: WS_LISTENER,
        client: ClientAddr::from_socket_addr(peer, AddrSource::Socket),
        socket_peer: PeerAddr::Inet(peer),
        sockname: state.local_addr,
        proxy: None,
        forwarded: None,
    };
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
