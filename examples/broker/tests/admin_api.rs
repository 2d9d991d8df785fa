//! The admin API as EMQX users script against it: fields, query parameters with `meta`, the
//! subscriptions, stats, status and publish endpoints, and JSON errors on every 4xx.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{BrokerProcess, RawClient, connect_packet, wait_for};
use realip_test_support::http_json;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Login;
use serde_json::{Value, json};

/// A raw HTTP/1.0 exchange: (status, content type, body text).
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

fn connect(
    broker: &BrokerProcess,
    bind: &str,
    clientid: &str,
    username: Option<&str>,
) -> RawClient {
    let mut client = RawClient::connect_from(bind, broker.tcp(), b"");
    let mut connect = connect_packet(clientid, 60);
    connect.login = username.map(|u| Login::new(u, "secret"));
    assert_eq!(client.handshake(connect), 0);
    client
}

fn ids(body: &Value) -> Vec<String> {
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["clientid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn clients_fields_counters_and_query_parameters() {
    let broker = BrokerProcess::start(&[]);
    let mut a = connect(&broker, "127.0.0.151", "sensor-a", Some("alice"));
    let _b = connect(&broker, "127.0.0.152", "sensor-b", Some("bob"));
    let _c = connect(&broker, "127.0.0.153", "gateway-1", None);
    a.subscribe("t/#", QoS::AtLeastOnce);
    a.publish("t/x", b"12345", QoS::AtMostOnce, false);
    let echoed = a.next_publish();
    assert_eq!(&echoed.payload[..], b"12345");

    let record = wait_for(Duration::from_secs(10), || {
        let record = broker.client("sensor-a");
        // `send_msg` counts a PUBLISH when it is queued for the socket, `send_oct` once written.
        (record["recv_msg"] == 1
            && record["send_msg"] == 1
            && record["send_oct"].as_u64().unwrap() >= 4 + 5 + 5)
            .then_some(record)
    })
    .unwrap_or_else(|| panic!("counters: {}", broker.client("sensor-a")));
    assert_eq!(record["username"], "alice");
    assert_eq!(record["ip_address"], "127.0.0.151");
    // CONNECT, SUBSCRIBE and PUBLISH in; CONNACK, SUBACK and PUBLISH out.
    assert!(record["recv_oct"].as_u64().unwrap() > 20, "{record}");
    assert!(
        record["send_oct"].as_u64().unwrap() >= 4 + 5 + 5,
        "{record}"
    );
    assert_eq!(record["mqueue_len"], 0);
    assert_eq!(record["inflight_cnt"], 0);
    assert_eq!(record["created_at"], record["connected_at"]);
    assert_eq!(record["expiry_interval"], 0);
    assert_eq!(broker.client("gateway-1")["username"], Value::Null);

    let all = broker.get("/api/v5/clients").1;
    assert_eq!(ids(&all), ["gateway-1", "sensor-a", "sensor-b"]);
    assert_eq!(
        all["meta"],
        json!({"page": 1, "limit": 100, "count": 3, "hasnext": false})
    );
    let page1 = broker.get("/api/v5/clients?_page=1&_limit=2").1;
    assert_eq!(ids(&page1), ["gateway-1", "sensor-a"]);
    assert_eq!(
        page1["meta"],
        json!({"page": 1, "limit": 2, "count": 3, "hasnext": true})
    );
    let page2 = broker.get("/api/v5/clients?_page=2&_limit=2").1;
    assert_eq!(ids(&page2), ["sensor-b"]);
    assert_eq!(page2["meta"]["hasnext"], false);
    for (query, expected) in [
        ("clientid=sensor-b", &["sensor-b"][..]),
        ("username=alice", &["sensor-a"]),
        ("ip_address=127.0.0.153", &["gateway-1"]),
        ("_like_clientid=sensor", &["sensor-a", "sensor-b"]),
        ("_like_username=o", &["sensor-b"]),
        (
            "conn_state=connected&proto_ver=4",
            &["gateway-1", "sensor-a", "sensor-b"],
        ),
        ("conn_state=disconnected", &[]),
        ("clientid=nobody", &[]),
    ] {
        let (status, body) = broker.get(&format!("/api/v5/clients?{query}"));
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), expected, "{query}");
        assert_eq!(body["meta"]["count"], expected.len(), "{query}");
    }
}

#[test]
fn subscriptions_stats_status_and_publish() {
    let broker = BrokerProcess::start(&[]);
    let mut sub = connect(&broker, "127.0.0.154", "listener-1", None);
    sub.subscribe("alerts/#", QoS::AtLeastOnce);
    sub.subscribe("news", QoS::AtMostOnce);

    let (status, body) = broker.get("/api/v5/clients/listener-1/subscriptions");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!([
            {"clientid": "listener-1", "topic": "alerts/#", "qos": 1},
            {"clientid": "listener-1", "topic": "news", "qos": 0},
        ])
    );
    let (status, body) = broker.get("/api/v5/subscriptions?qos=1");
    assert_eq!(status, 200);
    assert_eq!(
        body["data"],
        json!([{"clientid": "listener-1", "topic": "alerts/#", "qos": 1}])
    );
    assert_eq!(body["meta"]["count"], 1);
    assert_eq!(broker.get("/api/v5/subscriptions").1["meta"]["count"], 2);

    let (status, content_type, body) = request(
        broker.admin,
        "POST",
        "/api/v5/publish",
        r#"{"topic": "alerts/fire", "payload": "from the API", "qos": 1, "retain": true}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("application/json"));
    let id: Value = serde_json::from_str(&body).unwrap();
    assert!(id["id"].as_str().is_some_and(|id| !id.is_empty()));
    let message = sub.next_publish();
    assert_eq!(message.topic, "alerts/fire");
    assert_eq!(&message.payload[..], b"from the API");

    let (status, stats) = broker.get("/api/v5/stats");
    assert_eq!(status, 200);
    assert_eq!(stats["connections.count"], 1);
    assert_eq!(stats["live_connections.count"], 1);
    assert_eq!(stats["subscriptions.count"], 2);
    assert_eq!(stats["retained.count"], 1);

    let (status, content_type, body) = request(broker.admin, "GET", "/api/v5/status", "");
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/plain"));
    assert!(body.contains("is started") && body.contains("realip-broker is running"));
}

#[test]
fn every_4xx_is_an_emqx_json_error() {
    let broker = BrokerProcess::start(&[]);
    let expect = |method: &str, path: &str, body: &str, status: u16, code: &str| {
        let (got, content_type, text) = request(broker.admin, method, path, body);
        assert_eq!(got, status, "{method} {path}: {text}");
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}"
        );
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["code"], code, "{method} {path}: {text}");
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    expect(
        "GET",
        "/api/v5/clients/nobody",
        "",
        404,
        "CLIENTID_NOT_FOUND",
    );
    expect(
        "DELETE",
        "/api/v5/clients/nobody",
        "",
        404,
        "CLIENTID_NOT_FOUND",
    );
    expect(
        "GET",
        "/api/v5/clients/nobody/subscriptions",
        "",
        404,
        "CLIENTID_NOT_FOUND",
    );
    expect("GET", "/api/v5/nothing-here", "", 404, "NOT_FOUND");
    expect("PUT", "/api/v5/clients", "", 405, "METHOD_NOT_ALLOWED");
    expect("GET", "/api/v5/publish", "", 405, "METHOD_NOT_ALLOWED");
    expect("GET", "/api/v5/clients?_page=0", "", 400, "BAD_REQUEST");
    expect("GET", "/api/v5/clients?_limit=abc", "", 400, "BAD_REQUEST");
    expect(
        "GET",
        "/api/v5/clients?conn_state=maybe",
        "",
        400,
        "BAD_REQUEST",
    );
    expect(
        "GET",
        "/api/v5/clients?ip_address=nope",
        "",
        400,
        "BAD_REQUEST",
    );
    expect(
        "GET",
        "/api/v5/clients?_like_clientld=typo",
        "",
        400,
        "BAD_REQUEST",
    );
    expect("GET", "/api/v5/subscriptions?qos=3", "", 400, "BAD_REQUEST");
    expect("POST", "/api/v5/publish", "not json", 400, "BAD_REQUEST");
    expect(
        "POST",
        "/api/v5/publish",
        r#"{"topic": "a/+"}"#,
        400,
        "BAD_REQUEST",
    );
    expect(
        "POST",
        "/api/v5/publish",
        r#"{"topic": "a", "qos": 3}"#,
        400,
        "BAD_REQUEST",
    );
    expect(
        "POST",
        "/api/v5/publish",
        r#"{"topic": "a", "payload": "aGk=", "payload_encoding": "base64"}"#,
        400,
        "BAD_REQUEST",
    );
    // The common helper's plain GET still sees the same shape.
    assert_eq!(
        http_json(broker.admin, "GET", "/api/v5/x").1["code"],
        "NOT_FOUND"
    );
}
