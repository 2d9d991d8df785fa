//! Shared subscriptions (`$share/{group}/{filter}`, one member of the group gets each message,
//! in turn) and MQTT 5 Subscription Identifiers (sent with every message a subscription
//! matches), with mosquitto_sub and paho-mqtt, and the refusals the spec requires.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::{
    BrokerProcess, Paho, RawClient, have_mosquitto, have_paho, read_to_close, v5_connect,
};
use rumqttc::v5::mqttbytes::{QoS, v5};
use serde_json::json;

fn sub(broker: &BrokerProcess, version: &str, id: &str, topic: &str, count: &str) -> Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(["-V", version, "-i", id, "-q", "1", "-t", topic])
        .args(["-C", count, "-W", "10", "-F", "%p"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn received(child: Child) -> Vec<String> {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_shared_subscription_gives_each_message_to_one_member_in_turn() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let members = [("sh-1", "mqttv5"), ("sh-2", "mqttv5"), ("sh-3", "mqttv311")]
        .map(|(id, version)| sub(&broker, version, id, "$share/g/sh/#", "2"));
    let everything = sub(&broker, "mqttv5", "sh-all", "sh/#", "6");
    for id in ["sh-1", "sh-2", "sh-3", "sh-all"] {
        common::wait_for(Duration::from_secs(10), || {
            (broker.client(id)["subscriptions_cnt"] == 1).then_some(())
        })
        .unwrap();
    }
    for i in 1..=6 {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
            .args([
                "-V",
                "mqttv5",
                "-q",
                "1",
                "-t",
                "sh/x",
                "-m",
                &format!("m{i}"),
            ])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut shared: Vec<String> = Vec::new();
    for member in members {
        let got = received(member);
        assert_eq!(got.len(), 2, "each member gets two of six: {got:?}");
        shared.extend(got);
    }
    shared.sort();
    assert_eq!(
        shared,
        ["m1", "m2", "m3", "m4", "m5", "m6"],
        "each exactly once"
    );
    assert_eq!(received(everything), ["m1", "m2", "m3", "m4", "m5", "m6"]);
}

#[test]
fn subscription_identifiers_come_back_with_the_messages_they_matched() {
    if !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let v5 = ["--mqtt", "5"];
    let mut paho = Paho::connect_with(broker.ws(), "si-paho", "127.0.0.200", &[], &v5);
    assert_eq!(paho.connack["props"]["SubscriptionIdentifierAvailable"], 1);
    assert_eq!(paho.connack["props"]["SharedSubscriptionAvailable"], 1);
    paho.command(json!({"op": "sub", "topic": "si/#", "qos": 1, "sub_id": 7}));
    paho.expect("subscribed");
    paho.command(json!({"op": "sub", "topic": "si/a", "qos": 1, "sub_id": 9}));
    paho.expect("subscribed");
    paho.command(json!({"op": "sub", "topic": "si/+/none", "qos": 1}));
    paho.expect("subscribed");

    let mut publisher = Paho::connect_with(broker.ws(), "si-pub", "127.0.0.201", &[], &v5);
    publisher.publish("si/a", "both", 1, false);
    let got = paho.expect("message");
    let mut ids: Vec<u64> = got["props"]["subscription_identifiers"]
        .as_array()
        .unwrap_or_else(|| panic!("{got}"))
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, [7, 9], "{got}");
    publisher.publish("si/b", "one", 1, false);
    let got = paho.expect("message");
    assert_eq!(
        got["props"]["subscription_identifiers"],
        json!([7]),
        "{got}"
    );
    publisher.publish("si/c/none", "no id", 1, false);
    let got = paho.expect("message");
    assert_eq!(
        got["props"]["subscription_identifiers"],
        json!([7]),
        "{got}"
    );
}

fn subscribe_bytes(filter: &str, no_local: bool, id: Option<usize>) -> Vec<u8> {
    let mut f = v5::Filter::new(filter, QoS::AtLeastOnce);
    f.nolocal = no_local;
    let properties = id.map(|id| v5::SubscribeProperties {
        id: Some(id),
        user_properties: Vec::new(),
    });
    let mut subscribe = v5::Subscribe::new(f, properties);
    subscribe.pkid = 1;
    let mut out = BytesMut::new();
    subscribe.write(&mut out).unwrap();
    out.to_vec()
}

#[test]
fn what_the_spec_refuses_is_refused() {
    let broker = BrokerProcess::start(&[]);
    // No Local on a shared subscription: Protocol Error [MQTT-3.8.3-4].
    let mut c = RawClient::connect_from("127.0.0.202", broker.tcp(), &v5_connect("ref-1", 60));
    c.send_bytes(&subscribe_bytes("$share/g/t", true, None));
    assert!(read_to_close(&mut c).ends_with(&[0xE0, 0x01, 0x82]));
    // Subscription Identifier 0: Protocol Error.
    let mut c = RawClient::connect_from("127.0.0.203", broker.tcp(), &v5_connect("ref-2", 60));
    c.send_bytes(&subscribe_bytes("t", false, Some(0)));
    assert!(read_to_close(&mut c).ends_with(&[0xE0, 0x01, 0x82]));
    // A malformed shared filter gets SUBACK 0x8F (Topic Filter invalid).
    for filter in ["$share/g+/t", "$share//t", "$share/g", "$share/g/a#"] {
        let mut c = RawClient::connect_from("127.0.0.204", broker.tcp(), &v5_connect("ref-3", 60));
        c.send_bytes(&subscribe_bytes(filter, false, None));
        c.send_bytes(&[0xE0, 0x00]);
        let rest = read_to_close(&mut c);
        // CONNACK, then SUBACK: 0x90, length, packet id 1, properties 0, reason 0x8F.
        let connack_len = 2 + usize::from(rest[1]);
        assert_eq!(
            rest[connack_len..],
            [0x90, 0x04, 0x00, 0x01, 0x00, 0x8F],
            "{filter}: {rest:x?}"
        );
    }
}
