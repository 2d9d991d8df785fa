//! Reloading `--config` at runtime: on `SIGHUP` and `POST /api/v5/realip/reload`.
//!
//! The file is read again and merged with the command line exactly as at start (the command
//! line still wins). When the result is valid, the settings that can change without a
//! restart are swapped through their [`Live`] handles, which listeners and the WebSocket
//! layer read per connection or request: connections already open are not touched, new ones
//! get the new settings. Those are `--trusted-proxy`, `--proxy-from`, `--proxy-optional`,
//! `--proxy-default`, `--allow` and `--deny`. Any other setting that differs is reported as
//! needing a restart and left as it is. A file that cannot be read or is invalid changes
//! nothing: the error is logged and returned.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use realip_core::{Live, TrustedProxies};
use serde_json::{Value, json};

use crate::acl::Acl;
use crate::config::{Config, RunArgs};
use crate::prom::RELOADS_TOTAL;
use crate::proxy_rules::ProxyRules;
use crate::realip::trusted_proxies;

/// What a reload swaps, and the configuration in force.
#[derive(Debug)]
pub(crate) struct Reloader {
    /// The command line the broker was started with.
    args: RunArgs,
    /// The configuration in force (what was loaded last, with the unreloadable settings
    /// of the start).
    current: Mutex<Config>,
    proxy_rules: Live<ProxyRules>,
    /// The WebSocket layer's trusted proxies, when `--ws-header` is on.
    trusted: Option<Live<TrustedProxies>>,
    acl: Live<Acl>,
}

/// The outcome of a reload that applied: which settings changed, and which differ from the
/// running ones but need a restart.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub(crate) changed: Vec<&'static str>,
    pub(crate) restart_required: Vec<&'static str>,
    pub(crate) warnings: Vec<String>,
}

impl Applied {
    fn json(&self) -> Value {
        json!({
            "result": "ok",
            "changed": self.changed,
            "restart_required": self.restart_required,
            "warnings": self.warnings,
        })
    }
}

impl Reloader {
    pub(crate) fn new(
        args: RunArgs,
        config: Config,
        proxy_rules: Live<ProxyRules>,
        trusted: Option<Live<TrustedProxies>>,
        acl: Live<Acl>,
    ) -> Self {
        Self {
            args,
            current: Mutex::new(config),
            proxy_rules,
            trusted,
            acl,
        }
    }

    /// Re-reads the configuration and swaps what changed; logs the outcome (`info`, or
    /// `warn` for an error, which keeps every running setting). `trigger` names the cause
    /// in the log (`SIGHUP`, `admin API`).
    pub(crate) fn reload(&self, trigger: &str) -> Result<Applied, String> {
        let result = Config::load(self.args.clone()).map(|new| self.apply(new));
        match &result {
            Ok(applied) => {
                metrics::counter!(RELOADS_TOTAL, "result" => "ok").increment(1);
                for warning in &applied.warnings {
                    tracing::warn!("{warning}");
                }
                tracing::info!(
                    trigger,
                    changed = ?applied.changed,
                    restart_required = ?applied.restart_required,
                    "configuration reloaded"
                );
            }
            Err(e) => {
                metrics::counter!(RELOADS_TOTAL, "result" => "error").increment(1);
                tracing::warn!(
                    trigger,
                    error = %e,
                    "configuration reload failed, the running settings are kept: {e}"
                );
            }
        }
        result
    }

    fn apply(&self, new: Config) -> Applied {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let mut applied = Applied {
            warnings: new.warnings.clone(),
            ..Applied::default()
        };
        if new.proxy_rules != current.proxy_rules {
            self.proxy_rules.store(new.proxy_rules.clone());
            current.proxy_rules = new.proxy_rules.clone();
            applied.changed.push("proxy-rules");
        }
        if new.allow != current.allow || new.deny != current.deny {
            if new.allow != current.allow {
                applied.changed.push("allow");
            }
            if new.deny != current.deny {
                applied.changed.push("deny");
            }
            self.acl
                .store(Acl::new(new.allow.clone(), new.deny.clone()));
            current.allow = new.allow.clone();
            current.deny = new.deny.clone();
        }
        // The trusted proxies swap only when the rest of the header settings stay: a new
        // header or strategy is a new layer, built at start.
        match (&self.trusted, &current.forwarding, &new.forwarding) {
            (Some(live), Some(old), Some(fwd))
                if old.header == fwd.header
                    && old.port_header == fwd.port_header
                    && old.strategy == fwd.strategy =>
            {
                let trusted = trusted_proxies(fwd);
                if trusted != trusted_proxies(old) {
                    live.store(trusted);
                    applied.changed.push("trusted-proxy");
                }
                current.forwarding = Some(fwd.clone());
            }
            (_, old, fwd) => {
                if differs(old, fwd) {
                    applied
                        .restart_required
                        .push("ws-header, ws-port-header, ws-strategy, ws-recursive");
                }
            }
        }
        let fixed: [(&'static str, bool); 15] = [
            ("tcp", differs(&current.tcp, &new.tcp)),
            ("ws", differs(&current.ws, &new.ws)),
            ("tls", differs(&current.tls, &new.tls)),
            ("wss", differs(&current.wss, &new.wss)),
            ("admin", differs(&current.admin, &new.admin)),
            ("ws-path", differs(&current.ws_path, &new.ws_path)),
            (
                "tcp-proxy-protocol, ws-proxy-protocol, tls-proxy-protocol, wss-proxy-protocol",
                (
                    current.tcp_proxy_protocol,
                    current.ws_proxy_protocol,
                    current.tls_proxy_protocol,
                    current.wss_proxy_protocol,
                ) != (
                    new.tcp_proxy_protocol,
                    new.ws_proxy_protocol,
                    new.tls_proxy_protocol,
                    new.wss_proxy_protocol,
                ),
            ),
            (
                "proxy-protocol-timeout",
                current.proxy_protocol_timeout != new.proxy_protocol_timeout,
            ),
            (
                "tls-cert, tls-key, tls-client-ca",
                differs(&current.tls_files, &new.tls_files),
            ),
            ("tls-identity", current.cn_as_username != new.cn_as_username),
            ("backlog", current.backlog != new.backlog),
            ("defer-accept", current.defer_accept != new.defer_accept),
            (
                "max-packet-size",
                current.limits.max_packet_size != new.limits.max_packet_size,
            ),
            ("max-qos", current.limits.max_qos != new.limits.max_qos),
            (
                "receive-maximum, topic-alias-maximum",
                (
                    current.limits.receive_maximum,
                    current.limits.topic_alias_maximum,
                ) != (new.limits.receive_maximum, new.limits.topic_alias_maximum),
            ),
        ];
        applied.restart_required.extend(
            fixed
                .into_iter()
                .filter_map(|(name, differs)| differs.then_some(name)),
        );
        applied
    }
}

/// Whether two settings without `PartialEq` differ, by their debug form.
fn differs<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

/// `POST /api/v5/realip/reload`: 200 with `{"result": "ok", "changed": [...],
/// "restart_required": [...], "warnings": [...]}`, or 400 with `{"code": "BAD_CONFIG",
/// "message": ...}` when the configuration is invalid (nothing changed).
pub(crate) fn router(reloader: Arc<Reloader>) -> Router {
    Router::new()
        .route("/api/v5/realip/reload", post(reload))
        .with_state(reloader)
}

async fn reload(State(reloader): State<Arc<Reloader>>) -> Response {
    // Reading the file is blocking I/O; it is small and rare.
    match tokio::task::spawn_blocking(move || reloader.reload("admin API")).await {
        Ok(Ok(applied)) => Json(applied.json()).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": "BAD_CONFIG", "message": e })),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "code": "INTERNAL_ERROR", "message": e.to_string() })),
        )
            .into_response(),
    }
}

/// The `SIGHUP` stream, installed before the broker says it is listening (so that a
/// `SIGHUP` right after that line reloads rather than ends the process).
#[cfg(unix)]
pub(crate) fn sighup() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the admin API");
            None
        }
    }
}

/// Reloads on every `SIGHUP` until the broker stops.
#[cfg(unix)]
pub(crate) async fn on_sighup(
    mut hup: tokio::signal::unix::Signal,
    reloader: Arc<Reloader>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let received = tokio::select! {
            received = hup.recv() => received.is_some(),
            _ = stop.wait_for(|stopped| *stopped) => false,
        };
        if !received {
            return;
        }
        let reloader = Arc::clone(&reloader);
        let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
    }
}
