//! MQTT over WebSocket with a real client (Python paho-mqtt, `transport="websockets"`,
//! driven through tests/ws_client.py), and forwarded headers on the upgrade request.

mod common;

use common::{BrokerProcess, Paho, RawClient, connect_packet, have_paho};
use rumqttc::mqttbytes::QoS;
use serde_json::json;

#[test]
fn paho_over_websocket_publishes_subscribes_and_shows_its_real_peer() {
    if !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);

    let mut publisher = Paho::connect(broker.ws(), "ws-pub", "127.0.0.122", &[]);
    publisher.publish("ws/retained", "kept", 1, true);

    let mut subscriber = Paho::connect(broker.ws(), "ws-sub", "127.0.0.121", &[]);
    subscriber.subscribe("ws/#", 1);
    let retained = subscriber.expect("message");
    assert_eq!(
        retained,
        json!({"event": "message", "topic": "ws/retained", "payload": "kept", "qos": 1, "retain": true})
    );

    // A TCP subscriber sees WebSocket publishes too.
    let mut tcp = RawClient::connect_from("127.0.0.123", broker.tcp(), b"");
    assert_eq!(tcp.handshake(connect_packet("tcp-watch", 60)), 0);
    tcp.subscribe("ws/+", QoS::AtLeastOnce);
    assert!(
        tcp.next_publish().retain,
        "the retained message comes first"
    );

    publisher.publish("ws/zero", "0", 0, false);
    publisher.publish("ws/one", "1", 1, false);
    for (topic, payload, qos) in [("ws/zero", "0", 0), ("ws/one", "1", 1)] {
        let got = subscriber.expect("message");
        assert_eq!(
            got,
            json!({"event": "message", "topic": topic, "payload": payload, "qos": qos, "retain": false})
        );
        let got = tcp.next_publish();
        assert_eq!(
            (got.topic.as_str(), &got.payload[..]),
            (topic, payload.as_bytes())
        );
    }

    let client = broker.client("ws-sub");
    assert_eq!(client["listener"], "ws:default");
    assert_eq!(client["ip_address"], "127.0.0.121");
    assert_eq!(client["ip_source"], "socket");
    let port = client["port"].as_u64().unwrap();
    assert_eq!(client["socket_peer"], format!("127.0.0.121:{port}"));
    assert_eq!(client["sockname"], broker.ws().to_string());
    assert_eq!(client["proto_ver"], 4);
}

#[test]
fn forwarded_headers_from_a_trusted_proxy_decide_the_client_over_websocket() {
    if !have_paho() {
        return;
    }
    // W2/W4b: LB1 overwrote, LB2 appended; the broker walks right to left past trusted hops.
    let broker = BrokerProcess::start(&[
        "--ws-header",
        "X-Forwarded-For",
        "--ws-port-header",
        "X-Forwarded-Port",
        "--ws-recursive",
        "--trusted-proxy",
        "127.0.0.0/8",
    ]);
    let _client = Paho::connect(
        broker.ws(),
        "ws-xff",
        "127.0.0.124",
        &[
            "X-Forwarded-For: 198.51.100.9, 127.0.0.11",
            "X-Forwarded-Port: 4711, 5000",
        ],
    );
    let record = broker.client("ws-xff");
    assert_eq!(record["ip_address"], "198.51.100.9");
    assert_eq!(record["port"], 4711);
    assert_eq!(record["ip_source"], "x-forwarded-for");
    let port = record["socket_peer"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(record["socket_peer"], format!("127.0.0.124:{port}"));
    assert_eq!(
        record["forwarded"]["lines"],
        json!([
            "x-forwarded-for: 198.51.100.9, 127.0.0.11",
            "x-forwarded-port: 4711, 5000"
        ])
    );
    assert_eq!(record["forwarded"]["position_from_right"], 1);
    let logs = broker.wait_log("client=ws-xff");
    assert!(logs.contains("peername=198.51.100.9:4711"), "{logs}");
}

#[test]
fn a_forged_header_from_an_untrusted_client_is_ignored_over_websocket() {
    if !have_paho() {
        return;
    }
    // W5: the client connects directly and sends its own X-Forwarded-For / X-Real-IP.
    let broker = BrokerProcess::start(&[
        "--ws-header",
        "X-Forwarded-For",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    let _client = Paho::connect(
        broker.ws(),
        "ws-forged",
        "127.0.0.125",
        &["X-Forwarded-For: 127.0.0.1"],
    );
    let record = broker.client("ws-forged");
    assert_eq!(record["ip_address"], "127.0.0.125");
    assert_eq!(record["ip_source"], "socket");
    assert!(record.get("forwarded").is_none());

    // X-Real-IP (single strategy) from a trusted peer is believed.
    let real_ip =
        BrokerProcess::start(&["--ws-header", "X-Real-IP", "--trusted-proxy", "127.0.0.126"]);
    let _client = Paho::connect(
        real_ip.ws(),
        "ws-real-ip",
        "127.0.0.126",
        &["X-Real-IP: 192.0.2.33"],
    );
    let record = real_ip.client("ws-real-ip");
    assert_eq!(record["ip_address"], "192.0.2.33");
    assert_eq!(record["port"], serde_json::Value::Null);
    assert_eq!(record["peername"], "192.0.2.33");
    assert_eq!(record["ip_source"], "x-real-ip");
}

#[test]
fn paho_mqtt5_over_websocket_with_no_local_and_retain_as_published() {
    if !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let v5 = ["--mqtt", "5"];
    let mut me = Paho::connect_with(broker.ws(), "v5-me", "127.0.0.127", &[], &v5);
    let mut other = Paho::connect_with(broker.ws(), "v5-other", "127.0.0.128", &[], &v5);

    me.command(json!({"op": "sub", "topic": "v5/#", "qos": 1, "no_local": true}));
    assert_eq!(me.expect("subscribed")["granted"], json!([1]));
    // No-local: my own publish does not come back; the next message is the other client's.
    me.publish("v5/own", "mine", 1, false);
    other.publish("v5/b", "kept", 1, true);
    assert_eq!(
        me.expect("message"),
        json!({"event": "message", "topic": "v5/b", "payload": "kept", "qos": 1, "retain": false, "dup": false, "props": {}})
    );

    // Retain handling 1 (send if new subscription): the retained message once...
    let sub = json!({"op": "sub", "topic": "v5/b", "qos": 1, "retain_as_published": true, "retain_handling": 1});
    me.command(sub.clone());
    me.expect("subscribed");
    assert_eq!(me.expect("message")["retain"], true);
    // ...and not again for the same subscription.
    me.command(sub);
    me.expect("subscribed");
    // Retain-as-published: a live retained publish keeps its flag (one copy for both filters).
    other.publish("v5/b", "again", 1, true);
    assert_eq!(
        me.expect("message"),
        json!({"event": "message", "topic": "v5/b", "payload": "again", "qos": 1, "retain": true, "dup": false, "props": {}})
    );
    other.publish("v5/c", "end", 0, false);
    assert_eq!(
        me.expect("message")["payload"],
        "end",
        "no duplicate or stale message before this one"
    );

    let record = broker.client("v5-me");
    assert_eq!(record["proto_ver"], 5);
    assert_eq!(record["listener"], "ws:default");
    assert_eq!(record["ip_address"], "127.0.0.127");
}
