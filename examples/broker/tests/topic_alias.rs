//! MQTT 5 topic aliases in both directions: a client may set up to the broker's Topic Alias
//! Maximum (CONNACK) and then publish with an empty topic; the broker sets aliases up to the
//! client's Topic Alias Maximum (CONNECT) and sends later messages with an empty topic
//! (MQTT 5 §3.3.2.3.4); alias 0 or above the maximum is DISCONNECT 0x94, an alias never set
//! is a Protocol Error.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::{
    BrokerProcess, Paho, RawClient, have_mosquitto, have_paho, read_to_close, v5_aliased_publish,
    v5_connect, v5_connect_with, v5_publishes,
};
use rumqttc::v5::mqttbytes::{QoS, v5};
use serde_json::json;

#[test]
fn paho_publishes_through_an_alias_and_subscribers_get_the_topic() {
    if !have_paho() || !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    // mosquitto_sub offers no aliases of its own (libmosquitto 2.0.11 cannot resolve the ones
    // it receives), so it gets the full topic every time.
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(["-V", "mqttv5", "-i", "ta-sub", "-t", "ta/#", "-q", "1"])
        .args(["-C", "3", "-W", "10", "-F", "%t %p"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    broker.wait_subscriptions("ta-sub", 1);

    let mut paho = Paho::connect_with(broker.ws(), "ta-pub", "127.0.0.210", &[], &["--mqtt", "5"]);
    assert_eq!(paho.connack["props"]["TopicAliasMaximum"], 64);
    for (topic, payload) in [
        ("ta/long/topic/name", "first"),
        ("", "second"),
        ("", "third"),
    ] {
        paho.command(json!({
            "op": "pub", "topic": topic, "payload": payload, "qos": 1,
            "props": {"topic_alias": 3}
        }));
        paho.expect("published");
    }
    let out = sub.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ta/long/topic/name first\nta/long/topic/name second\nta/long/topic/name third\n"
    );
}

fn v5_connect_with_aliases(id: &str, max: u16) -> Vec<u8> {
    let mut properties = v5::ConnectProperties::new();
    properties.topic_alias_max = Some(max);
    v5_connect_with(id, 60, Some(properties))
}

#[test]
fn the_broker_sends_the_topic_once_then_only_the_alias() {
    let broker = BrokerProcess::start(&[]);
    let mut sub = RawClient::connect_from(
        "127.0.0.211",
        broker.tcp(),
        &v5_connect_with_aliases("ta-raw", 1),
    );
    let mut subscribe = v5::Subscribe::new(v5::Filter::new("tr/#", QoS::AtMostOnce), None);
    subscribe.pkid = 1;
    let mut out = BytesMut::new();
    subscribe.write(&mut out).unwrap();
    sub.send_bytes(&out);
    broker.wait_subscriptions("ta-raw", 1);
    let mut publisher =
        RawClient::connect_from("127.0.0.212", broker.tcp(), &v5_connect("ta-p", 60));
    for topic in ["tr/a", "tr/a", "tr/b", "tr/b"] {
        let mut out = BytesMut::new();
        v5::Publish::new(topic, QoS::AtMostOnce, "x", None)
            .write(&mut out)
            .unwrap();
        publisher.send_bytes(&out);
    }
    let mut buf = BytesMut::new();
    sub.stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let got: Vec<_> = v5_publishes(&mut sub, &mut buf, 4)
        .into_iter()
        .map(|p| {
            let alias = p.properties.and_then(|p| p.topic_alias);
            (String::from_utf8(p.topic.to_vec()).unwrap(), alias)
        })
        .collect();
    // One alias allowed: tr/a takes it; tr/b goes with its topic every time.
    assert_eq!(
        got,
        [
            ("tr/a".to_owned(), Some(1)),
            (String::new(), Some(1)),
            ("tr/b".to_owned(), None),
            ("tr/b".to_owned(), None)
        ]
    );
}

#[test]
fn invalid_aliases_are_refused_with_the_specs_reason_codes() {
    let broker = BrokerProcess::start(&["--topic-alias-maximum", "2"]);
    for (id, topic, alias, code) in [
        ("ta-0", "t", 0, 0x94),
        ("ta-3", "t", 3, 0x94),
        ("ta-unset", "", 2, 0x82),
    ] {
        let mut c = RawClient::connect_from("127.0.0.213", broker.tcp(), &v5_connect(id, 60));
        c.send_bytes(&v5_aliased_publish(topic, alias));
        let rest = read_to_close(&mut c);
        assert!(rest.ends_with(&[0xE0, 0x01, code]), "{id}: {rest:x?}");
    }
}
