//! MQTT 5 specifics: reason-coded server DISCONNECTs (takeover, keep-alive timeout,
//! administrative kick) seen by a real client (paho-mqtt over TCP) and by a raw client.

mod common;

use std::time::{Duration, Instant};

use common::{
    BrokerProcess, Paho, RawClient, have_paho, read_to_close, v5_aliased_publish, v5_connect,
    v5_connect_with,
};
use rumqttc::v5::mqttbytes::v5;

#[test]
fn takeover_and_kick_send_reason_coded_disconnects_to_paho() {
    if !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let tcp = ["--mqtt", "5", "--transport", "tcp"];
    let mut first = Paho::connect_with(broker.tcp(), "v5-dup", "127.0.0.140", &[], &tcp);
    let _second = Paho::connect_with(broker.tcp(), "v5-dup", "127.0.0.141", &[], &tcp);
    // 0x8E: session taken over.
    assert_eq!(first.expect("disconnected")["rc"], 0x8E);
    assert_eq!(broker.client("v5-dup")["ip_address"], "127.0.0.141");

    let mut kicked = Paho::connect_with(broker.tcp(), "v5-kick", "127.0.0.142", &[], &tcp);
    assert_eq!(
        common::http(broker.admin, "DELETE", "/api/v5/clients/v5-kick").0,
        204
    );
    // 0x98: administrative action.
    assert_eq!(kicked.expect("disconnected")["rc"], 0x98);
}

#[test]
fn keepalive_timeout_and_protocol_errors_are_reason_coded() {
    let broker = BrokerProcess::start(&[]);

    let mut silent =
        RawClient::connect_from("127.0.0.143", broker.tcp(), &v5_connect("v5-silent", 1));
    let start = Instant::now();
    let rest = read_to_close(&mut silent);
    let waited = start.elapsed();
    // CONNACK (v5: flags, reason 0, properties), then DISCONNECT 0x8D (keep alive timeout).
    assert_eq!(&rest[..1], [0x20], "CONNACK first: {rest:x?}");
    assert_eq!(rest[3], 0x00, "CONNACK reason success: {rest:x?}");
    assert!(
        rest.ends_with(&[0xE0, 0x01, 0x8D]),
        "DISCONNECT 0x8D last: {rest:x?}"
    );
    assert!(
        waited >= Duration::from_millis(1300) && waited < Duration::from_secs(4),
        "{waited:?}"
    );

    // A PUBLISH with a topic alias above the Topic Alias Maximum (64): DISCONNECT 0x94.
    let mut alias =
        RawClient::connect_from("127.0.0.144", broker.tcp(), &v5_connect("v5-alias", 60));
    alias.send_bytes(&v5_aliased_publish("a/b", 65));
    let rest = read_to_close(&mut alias);
    assert!(
        rest.ends_with(&[0xE0, 0x01, 0x94]),
        "DISCONNECT 0x94 last: {rest:x?}"
    );

    // An empty DISCONNECT (reason 0 and properties omitted) is a normal disconnect.
    let mut normal =
        RawClient::connect_from("127.0.0.145", broker.tcp(), &v5_connect("v5-normal", 60));
    normal.send_bytes(&[0xE0, 0x00]);
    let rest = read_to_close(&mut normal);
    assert_eq!(rest[0], 0x20, "only the CONNACK: {rest:x?}");
    // Only v5-normal ends normally in this test.
    let logs = broker.wait_log("reason=normal");
    assert!(
        logs.lines()
            .any(|l| l.contains("client=v5-normal") && l.contains("reason=normal")),
        "{logs}"
    );
    assert!(logs.contains("keepalive timeout"), "{logs}");
}

#[test]
fn an_authentication_method_is_refused_with_0x8c() {
    let broker = BrokerProcess::start(&[]);
    let mut properties = v5::ConnectProperties::new();
    properties.authentication_method = Some("SCRAM-SHA-1".into());
    let out = v5_connect_with("v5-auth", 60, Some(properties));
    let mut client = RawClient::connect_from("127.0.0.146", broker.tcp(), &out);
    let rest = read_to_close(&mut client);
    // CONNACK with reason 0x8C (Bad authentication method), then the connection is closed.
    assert_eq!(&rest[..4], [0x20, 0x03, 0x00, 0x8C], "{rest:x?}");
    assert_eq!(broker.get("/api/v5/clients/v5-auth").0, 404);
}
