//! `GET /metrics` on the admin listener: after a scripted mix of good, malformed, timed-out
//! and denied connections and MQTT traffic, every relevant series has the exact count.

mod common;

use std::io::Read;
use std::time::Duration;

use bytes::BytesMut;
use common::{BrokerProcess, RawClient, WsClient, connect_packet, wait_for};
use realip_listener::ProxyHeader;
use realip_test_support::mqtt_connect_packet;
use rumqttc::mqttbytes::QoS;

/// The value of the series `name{labels}` (`labels` as rendered, e.g. `reason="timeout"`;
/// empty for none) in a Prometheus text exposition.
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    let series = if labels.is_empty() {
        format!("{name} ")
    } else {
        format!("{name}{{{labels}}} ")
    };
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
}

fn scrape(broker: &BrokerProcess) -> String {
    let (status, body) = realip_test_support::http(broker.admin, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    body
}

#[test]
fn metrics_count_handshakes_rejections_connections_messages_and_bytes() {
    let broker = BrokerProcess::start(&[
        "--tcp-proxy-protocol",
        "--proxy-protocol-timeout",
        "0.5",
        "--deny",
        "203.0.113.99",
        "--ws-header",
        "X-Forwarded-For",
    ]);
    let dst = broker.tcp();

    // Before anything happened: every broker series is there, at zero.
    let before = scrape(&broker);
    for (name, labels) in [
        (
            "realip_broker_connections_total",
            "listener=\"tcp:default\"",
        ),
        ("realip_broker_rejections_total", "reason=\"denied\""),
        ("realip_broker_messages_received_total", ""),
        ("realip_broker_received_bytes_total", ""),
    ] {
        assert_eq!(value(&before, name, labels), Some(0.0), "{name}: {before}");
    }
    assert!(
        before.contains("# TYPE realip_broker_connections gauge"),
        "{before}"
    );

    // Good: a v2 subscriber and a v1 publisher.
    let v2 = ProxyHeader::v2("198.51.100.1:40001".parse().unwrap(), dst).to_bytes();
    let mut sub = RawClient::connect_from("127.0.0.61", dst, &v2);
    assert_eq!(sub.handshake(connect_packet("m-sub", 60)), 0);
    sub.subscribe("m/t", QoS::AtMostOnce);
    let v1 = format!(
        "PROXY TCP4 198.51.100.2 {} 40002 {}\r\n",
        dst.ip(),
        dst.port()
    );
    let mut publisher = RawClient::connect_from("127.0.0.62", dst, v1.as_bytes());
    assert_eq!(publisher.handshake(connect_packet("m-pub", 60)), 0);
    publisher.publish("m/t", b"one", QoS::AtMostOnce, false);
    publisher.publish("m/t", b"two", QoS::AtMostOnce, false);
    assert_eq!(&sub.next_publish().payload[..], b"one");
    assert_eq!(&sub.next_publish().payload[..], b"two");

    // Denied by --deny after a good header: CONNACK 5.
    let denied_header = ProxyHeader::v2("203.0.113.99:40003".parse().unwrap(), dst).to_bytes();
    let mut denied = RawClient::connect_from("127.0.0.63", dst, &denied_header);
    let mut denied_connect = BytesMut::new();
    connect_packet("m-denied", 60)
        .write(&mut denied_connect)
        .unwrap();
    assert_eq!(denied.handshake(connect_packet("m-denied", 60)), 5);

    // Malformed header: closed by the listener.
    let mut malformed = RawClient::connect_from("127.0.0.64", dst, b"PROXY garbage here\r\n");
    assert!(malformed.recv().is_none());

    // Timed out: nothing sent; the listener closes it after 0.5 s.
    let mut silent = RawClient::connect_from("127.0.0.65", dst, b"");
    let mut byte = [0u8; 1];
    assert_eq!(silent.stream.read(&mut byte).unwrap_or(0), 0);

    // One WebSocket client behind a loopback proxy's X-Forwarded-For.
    let mut ws = WsClient::connect(
        "127.0.0.1",
        broker.ws(),
        b"",
        "X-Forwarded-For: 192.0.2.77\r\n",
    );
    ws.send(&mqtt_connect_packet("m-ws"));
    assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00]);
    broker.client("m-ws");

    let sub_record = broker.client("m-sub");
    let pub_record = broker.client("m-pub");
    let ws_record = broker.client("m-ws");
    let oct = |field: &str| {
        [&sub_record, &pub_record, &ws_record]
            .iter()
            .map(|r| r[field].as_u64().unwrap())
            .sum::<u64>()
    };
    // The denied client's CONNECT in, its 4-byte CONNACK out.
    let received = oct("recv_oct") + denied_connect.len() as u64;
    let sent = oct("send_oct") + 4;

    // The denied connection's gauge decrement and the timeout are asynchronous.
    let text = wait_for(Duration::from_secs(10), || {
        let text = scrape(&broker);
        (value(
            &text,
            "realip_broker_connections",
            "listener=\"tcp:default\"",
        ) == Some(2.0)
            && value(
                &text,
                "realip_listener_rejections_total",
                "reason=\"timeout\"",
            ) == Some(1.0))
        .then_some(text)
    })
    .unwrap_or_else(|| panic!("metrics never settled: {}", scrape(&broker)));

    let expect = [
        (
            "realip_listener_handshakes_total",
            "outcome=\"v2_proxy\"",
            2.0,
        ),
        ("realip_listener_handshakes_total", "outcome=\"v1\"", 1.0),
        // The WebSocket listener does not look for a PROXY header.
        (
            "realip_listener_handshakes_total",
            "outcome=\"skipped\"",
            1.0,
        ),
        (
            "realip_listener_rejections_total",
            "reason=\"malformed\"",
            1.0,
        ),
        (
            "realip_listener_rejections_total",
            "reason=\"timeout\"",
            1.0,
        ),
        (
            "realip_tower_requests_total",
            "source=\"x-forwarded-for\"",
            1.0,
        ),
        (
            "realip_broker_connections_total",
            "listener=\"tcp:default\"",
            3.0,
        ),
        (
            "realip_broker_connections_total",
            "listener=\"ws:default\"",
            1.0,
        ),
        ("realip_broker_connections", "listener=\"tcp:default\"", 2.0),
        ("realip_broker_connections", "listener=\"ws:default\"", 1.0),
        ("realip_broker_rejections_total", "reason=\"denied\"", 1.0),
        (
            "realip_broker_rejections_total",
            "reason=\"missing_proxy_header\"",
            0.0,
        ),
        ("realip_broker_messages_received_total", "", 2.0),
        ("realip_broker_messages_sent_total", "", 2.0),
        ("realip_broker_received_bytes_total", "", received as f64),
        ("realip_broker_sent_bytes_total", "", sent as f64),
    ];
    for (name, labels, want) in expect {
        assert_eq!(
            value(&text, name, labels),
            Some(want),
            "{name}{{{labels}}} in:\n{text}"
        );
    }
    // Nothing else was rejected by the listener.
    for reason in [
        "missing",
        "oversized",
        "crc",
        "policy",
        "closed_before_header",
    ] {
        assert_eq!(
            value(
                &text,
                "realip_listener_rejections_total",
                &format!("reason=\"{reason}\"")
            )
            .unwrap_or(0.0),
            0.0,
            "{reason}: {text}"
        );
    }
    assert!(
        text.contains("# TYPE realip_listener_header_wait_seconds histogram"),
        "{text}"
    );
}
