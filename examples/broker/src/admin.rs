//! The admin REST API, shaped like EMQX's `/api/v5`.
//!
//! - `GET /api/v5/clients` → `{"data": [CLIENT, ...], "meta": {"count": N, "page": 1, "limit": N, "hasnext": false}}`
//! - `GET /api/v5/clients/{clientid}` → `CLIENT`, or 404 `{"code": "CLIENTID_NOT_FOUND", "message": ...}`
//! - `DELETE /api/v5/clients/{clientid}` → 204 (the client is disconnected), or 404 as above
//!
//! Every session is listed, connected or not (a disconnected persistent session shows its last
//! connection, `connected: false`, `disconnected_at` and `expires_in`), as EMQX does; `DELETE`
//! on a disconnected session discards it.
//!
//! `CLIENT` has `clientid`, `listener`, `ip_address` and `port` (the real client), `peername`
//! (`IP:PORT` of the real client), `ip_source`, `sockname`, `socket_peer` (`IP:PORT` of the TCP
//! peer), `proto_name`, `proto_ver`, `clean_start`, `keepalive`, `connected`, `connected_at`,
//! `expiry_interval` (seconds; `null`: never), `subscriptions_cnt`, `subscriptions`
//! (`[{"topic", "qos"}]`), `mqueue_len` (messages waiting), `inflight_cnt` (QoS 1/2 messages
//! not completed), and `proxy` (PROXY protocol header) or `forwarded` (header lines) when they
//! decided the address.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::broker::{Broker, SessionView};

/// The admin router.
pub(crate) fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/api/v5/clients", get(list))
        .route("/api/v5/clients/{clientid}", get(show).delete(kick))
        .with_state(broker)
}

async fn list(State(broker): State<Arc<Broker>>) -> Json<Value> {
    let data: Vec<Value> = broker.clients().iter().map(client_json).collect();
    let count = data.len();
    Json(json!({
        "data": data,
        "meta": { "count": count, "page": 1, "limit": count.max(1), "hasnext": false },
    }))
}

async fn show(State(broker): State<Arc<Broker>>, Path(clientid): Path<String>) -> Response {
    match broker.client(&clientid) {
        Some(view) => Json(client_json(&view)).into_response(),
        None => not_found(),
    }
}

async fn kick(State(broker): State<Arc<Broker>>, Path(clientid): Path<String>) -> Response {
    if broker.kick(&clientid) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found()
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "code": "CLIENTID_NOT_FOUND", "message": "Client ID not found" })),
    )
        .into_response()
}

/// The JSON record of one client (session).
pub(crate) fn client_json(view: &SessionView) -> Value {
    let info = &view.info;
    let meta = &info.meta;
    let mut value = json!({
        "clientid": info.clientid,
        "listener": meta.listener,
        "ip_address": meta.client.ip().to_string(),
        "port": meta.client.port(),
        "peername": meta.client.to_string(),
        "ip_source": meta.client.source().as_str(),
        "sockname": meta.sockname.map(|s| s.to_string()),
        "socket_peer": meta.socket_peer.to_string(),
        "proto_name": "MQTT",
        "proto_ver": info.proto_ver,
        "clean_start": info.clean_start,
        "keepalive": info.keepalive,
        "connected": view.connected,
        "connected_at": rfc3339(info.connected_at),
        "expiry_interval": view.expiry.secs(),
        "subscriptions_cnt": view.subscriptions.len(),
        "subscriptions": view
            .subscriptions
            .iter()
            .map(|(topic, qos)| json!({"topic": topic, "qos": *qos as u8}))
            .collect::<Vec<_>>(),
        "mqueue_len": view.queued,
        "inflight_cnt": view.inflight,
        "tls": meta.tls,
    });
    if let Some(at) = view.disconnected_at {
        value["disconnected_at"] = json!(rfc3339(at));
    }
    if let Some(left) = view.expires_in {
        value["expires_in"] = json!(left.as_secs());
    }
    if let Some(proxy) = &meta.proxy {
        value["proxy"] = proxy.clone();
    }
    if let Some(forwarded) = &meta.forwarded {
        value["forwarded"] = forwarded.clone();
    }
    value
}

/// `2026-01-02T03:04:05.678Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123);
        assert_eq!(rfc3339(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_868_800);
        assert_eq!(rfc3339(t), "2000-03-01T00:00:00.000Z");
    }
}
