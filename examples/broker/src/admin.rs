//! The admin REST API, shaped like EMQX's `/api/v5` (EMQX 5 REST API reference).
//!
//! - `GET /api/v5/clients` → `{"data": [CLIENT, ...], "meta": {"page", "limit", "count", "hasnext"}}`;
//!   query parameters as EMQX: `_page` (from 1) and `_limit` (1 to 10000, default 100),
//!   `clientid`, `username`, `ip_address`, `conn_state` (`connected` / `disconnected`),
//!   `proto_ver` (exact), `_like_clientid`, `_like_username` (substring). `count` is the number
//!   of matching clients, `hasnext` whether a later page has some.
//! - `GET /api/v5/clients/{clientid}` → `CLIENT`
//! - `DELETE /api/v5/clients/{clientid}` → 204 (the client is disconnected; a disconnected
//!   session is discarded)
//! - `GET /api/v5/clients/{clientid}/subscriptions` → `[{"clientid", "topic", "qos"}, ...]`
//! - `GET /api/v5/subscriptions` → `{"data": [{"clientid", "topic", "qos"}, ...], "meta"}`, with
//!   `_page`, `_limit`, `clientid`, `topic` (exact filter), `qos`
//! - `GET /api/v5/stats` → `{"connections.count", "live_connections.count", "sessions.count",
//!   "subscriptions.count", "topics.count", "retained.count"}`
//! - `GET /api/v5/status` → `text/plain`: `Node realip-broker@HOST is started` and
//!   `realip-broker is running`
//! - `POST /api/v5/publish` with `{"topic", "payload", "qos", "retain"}` (`payload_encoding`
//!   `plain` only) → `{"id": "..."}`
//!
//! Every 4xx answer is JSON `{"code": ..., "message": ...}` as EMQX's: `CLIENTID_NOT_FOUND`
//! (404), `NOT_FOUND` (404, unknown path), `METHOD_NOT_ALLOWED` (405), `BAD_REQUEST` (400, a
//! bad query parameter or body).
//!
//! Every session is listed, connected or not (a disconnected persistent session shows its last
//! connection, `connected: false`, `disconnected_at` and `expires_in`), as EMQX does.
//!
//! `CLIENT` has `clientid`, `username` (`null` without one), `listener`, `ip_address` and
//! `port` (the real client; `port` is `null` when no port can be attributed to it), `peername`
//! (`IP:PORT` of the real client, or `IP` alone), `ip_source`, `sockname`, `socket_peer`
//! (`IP:PORT` of the TCP peer), `proto_name`, `proto_ver`, `clean_start`, `keepalive`,
//! `connected`, `connected_at` and `created_at` (RFC 3339; `created_at` is when this
//! connection's CONNECT was accepted), `expiry_interval` (seconds; `null`: never),
//! `subscriptions_cnt`, `subscriptions` (`[{"topic", "qos"}]`), `mqueue_len` (messages
//! waiting), `mqueue_dropped` (messages a full queue dropped), `inflight_cnt` (QoS 1/2 messages not
//! completed), `recv_msg` / `send_msg`
//! (PUBLISH packets received / sent on this connection), `recv_oct` / `send_oct` (bytes),
//! `tls` (`{"version", "cipher", "sni", "client_cn"}` on the TLS listeners, else `null`), and
//! `proxy` (PROXY protocol header) or `forwarded` (header lines) when they decided the address.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rumqttc::mqttbytes::QoS;
use serde_json::{Value, json};

use crate::broker::{Broker, Delivery, SessionView, valid_topic};

/// Default and largest `_limit` (EMQX's).
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

/// The admin router.
pub(crate) fn router(broker: Arc<Broker>) -> Router {
    Router::new()
        .route("/api/v5/clients", get(list))
        .route("/api/v5/clients/{clientid}", get(show).delete(kick))
        .route(
            "/api/v5/clients/{clientid}/subscriptions",
            get(client_subscriptions),
        )
        .route("/api/v5/subscriptions", get(subscriptions))
        .route("/api/v5/stats", get(stats))
        .route("/api/v5/status", get(status))
        .route("/api/v5/publish", post(publish))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "NOT_FOUND", "Request path not found") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Method not allowed on this path",
            )
        })
        .with_state(broker)
}

/// An EMQX-shaped error: `{"code": ..., "message": ...}`.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "code": code, "message": message }))).into_response()
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "CLIENTID_NOT_FOUND",
        "Client ID not found",
    )
}

type Params = Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>;

/// `_page` and `_limit`, validated; `Err` is the 400's message.
fn paging(params: &HashMap<String, String>) -> Result<(usize, usize), String> {
    let number = |name: &str, default: usize, max: usize| match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("invalid {name} {v:?}: expected an integer from 1 to {max}")),
    };
    Ok((
        number("_page", 1, usize::MAX)?,
        number("_limit", DEFAULT_LIMIT, MAX_LIMIT)?,
    ))
}

/// One page of `items`, with EMQX's `meta`.
fn page(items: Vec<Value>, (page, limit): (usize, usize)) -> Json<Value> {
    let count = items.len();
    let skip = (page - 1).saturating_mul(limit);
    let data: Vec<Value> = items.into_iter().skip(skip).take(limit).collect();
    let hasnext = skip.saturating_add(limit) < count;
    Json(json!({
        "data": data,
        "meta": { "page": page, "limit": limit, "count": count, "hasnext": hasnext },
    }))
}

/// An unknown query parameter is an error, not silently ignored.
fn known_only(params: &HashMap<String, String>, known: &[&str]) -> Result<(), String> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(format!(
            "unknown query parameter {unknown:?}: expected one of {}",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// Whether a session matches the clients query parameters; `Err` is the 400's message.
fn client_filter(
    params: &HashMap<String, String>,
) -> Result<impl Fn(&SessionView) -> bool, String> {
    const KNOWN: [&str; 9] = [
        "_page",
        "_limit",
        "clientid",
        "username",
        "ip_address",
        "conn_state",
        "proto_ver",
        "_like_clientid",
        "_like_username",
    ];
    known_only(params, &KNOWN)?;
    let connected = match params.get("conn_state").map(String::as_str) {
        None => None,
        Some("connected") => Some(true),
        Some("disconnected") => Some(false),
        Some(other) => {
            return Err(format!(
                "invalid conn_state {other:?}: expected connected or disconnected"
            ));
        }
    };
    let ip = match params.get("ip_address") {
        None => None,
        Some(v) => Some(
            v.parse::<std::net::IpAddr>()
                .map_err(|_| format!("invalid ip_address {v:?}: expected an IP address"))?,
        ),
    };
    let proto_ver = match params.get("proto_ver") {
        None => None,
        Some(v) => Some(
            v.parse::<u8>()
                .map_err(|_| format!("invalid proto_ver {v:?}: expected 4 or 5"))?,
        ),
    };
    let params = params.clone();
    Ok(move |view: &SessionView| {
        let info = &view.info;
        let username = info.username.as_deref();
        params.get("clientid").is_none_or(|c| *c == info.clientid)
            && params
                .get("username")
                .is_none_or(|u| Some(u.as_str()) == username)
            && params
                .get("_like_clientid")
                .is_none_or(|c| info.clientid.contains(c.as_str()))
            && params
                .get("_like_username")
                .is_none_or(|u| username.is_some_and(|name| name.contains(u.as_str())))
            && ip.is_none_or(|ip| ip == info.meta.client.ip())
            && connected.is_none_or(|c| c == view.connected)
            && proto_ver.is_none_or(|v| v == info.proto_ver)
    })
}

async fn list(State(broker): State<Arc<Broker>>, params: Params) -> Response {
    let Ok(Query(params)) = params else {
        return bad_request("malformed query string");
    };
    let (paging, filter) = match (paging(&params), client_filter(&params)) {
        (Ok(paging), Ok(filter)) => (paging, filter),
        (Err(e), _) | (_, Err(e)) => return bad_request(&e),
    };
    let items = broker
        .clients()
        .iter()
        .filter(|view| filter(view))
        .map(client_json)
        .collect();
    page(items, paging).into_response()
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

fn subscription_json(clientid: &str, topic: &str, qos: QoS) -> Value {
    json!({ "clientid": clientid, "topic": topic, "qos": qos as u8 })
}

async fn client_subscriptions(
    State(broker): State<Arc<Broker>>,
    Path(clientid): Path<String>,
) -> Response {
    match broker.client(&clientid) {
        Some(view) => Json(
            view.subscriptions
                .iter()
                .map(|(topic, qos)| subscription_json(&clientid, topic, *qos))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        None => not_found(),
    }
}

async fn subscriptions(State(broker): State<Arc<Broker>>, params: Params) -> Response {
    let Ok(Query(params)) = params else {
        return bad_request("malformed query string");
    };
    if let Err(e) = known_only(&params, &["_page", "_limit", "clientid", "topic", "qos"]) {
        return bad_request(&e);
    }
    let paging = match paging(&params) {
        Ok(paging) => paging,
        Err(e) => return bad_request(&e),
    };
    let qos = match params.get("qos").map(|q| q.parse::<u8>()) {
        None => None,
        Some(Ok(q @ 0..=2)) => Some(q),
        Some(_) => return bad_request("invalid qos: expected 0, 1 or 2"),
    };
    let mut items = Vec::new();
    for view in broker.clients() {
        let clientid = &view.info.clientid;
        if params.get("clientid").is_some_and(|c| c != clientid) {
            continue;
        }
        for (topic, granted) in &view.subscriptions {
            if params.get("topic").is_some_and(|t| t != topic)
                || qos.is_some_and(|q| q != *granted as u8)
            {
                continue;
            }
            items.push(subscription_json(clientid, topic, *granted));
        }
    }
    page(items, paging).into_response()
}

async fn stats(State(broker): State<Arc<Broker>>) -> Json<Value> {
    let clients = broker.clients();
    let live = clients.iter().filter(|v| v.connected).count();
    let subscriptions: usize = clients.iter().map(|v| v.subscriptions.len()).sum();
    let topics: std::collections::BTreeSet<&str> = clients
        .iter()
        .flat_map(|v| v.subscriptions.iter().map(|(t, _)| t.as_str()))
        .collect();
    Json(json!({
        "connections.count": clients.len(),
        "live_connections.count": live,
        "sessions.count": clients.len(),
        "subscriptions.count": subscriptions,
        "topics.count": topics.len(),
        "retained.count": broker.retained_count(),
    }))
}

async fn status() -> Response {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned());
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("Node realip-broker@{host} is started\nrealip-broker is running\n"),
    )
        .into_response()
}

async fn publish(State(broker): State<Arc<Broker>>, body: Bytes) -> Response {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let body: Value = match serde_json::from_slice(&body) {
        Ok(body @ Value::Object(_)) => body,
        _ => {
            return bad_request(
                "expected a JSON object {\"topic\", \"payload\", \"qos\", \"retain\"}",
            );
        }
    };
    let Some(topic) = body["topic"].as_str().filter(|t| valid_topic(t)) else {
        return bad_request("\"topic\" must be a topic name without wildcards");
    };
    let payload = match &body["payload"] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        _ => return bad_request("\"payload\" must be a string"),
    };
    match body["payload_encoding"].as_str() {
        None | Some("plain") => {}
        Some(other) => {
            return bad_request(&format!(
                "payload_encoding {other:?} is not supported: only plain"
            ));
        }
    }
    let qos = match body["qos"].as_u64() {
        None | Some(0) => QoS::AtMostOnce,
        Some(1) => QoS::AtLeastOnce,
        Some(2) => QoS::ExactlyOnce,
        Some(_) => return bad_request("\"qos\" must be 0, 1 or 2"),
    };
    let retain = match &body["retain"] {
        Value::Bool(b) => *b,
        Value::Null => false,
        _ => return bad_request("\"retain\" must be true or false"),
    };
    broker.publish(
        None,
        Delivery {
            topic: Arc::from(topic),
            payload: payload.into(),
            qos,
            retain,
            props: Arc::default(),
            sub_ids: Vec::new(),
        },
    );
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    Json(json!({ "id": format!("{id:032X}") })).into_response()
}

/// The JSON record of one client (session).
pub(crate) fn client_json(view: &SessionView) -> Value {
    let info = &view.info;
    let meta = &info.meta;
    let (recv_msg, send_msg, recv_oct, send_oct) = info.counters.snapshot();
    let mut value = json!({
        "clientid": info.clientid,
        "username": info.username,
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
        "created_at": rfc3339(info.connected_at),
        "expiry_interval": view.expiry.secs(),
        "subscriptions_cnt": view.subscriptions.len(),
        "subscriptions": view
            .subscriptions
            .iter()
            .map(|(topic, qos)| json!({"topic": topic, "qos": *qos as u8}))
            .collect::<Vec<_>>(),
        "mqueue_len": view.queued,
        "mqueue_dropped": view.dropped,
        "inflight_cnt": view.inflight,
        "recv_msg": recv_msg,
        "send_msg": send_msg,
        "recv_oct": recv_oct,
        "send_oct": send_oct,
        "tls": meta.tls(),
    });
    if let Some(at) = view.disconnected_at {
        value["disconnected_at"] = json!(rfc3339(at));
    }
    if let Some(left) = view.expires_in {
        value["expires_in"] = json!(left.as_secs());
    }
    if let Some(proxy) = meta.proxy() {
        value["proxy"] = proxy.clone();
    }
    if let Some(forwarded) = meta.forwarded() {
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
