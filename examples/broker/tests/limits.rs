//! Limits the broker sets (`--max-packet-size`, `--max-qos`, `--receive-maximum`): a 1 MiB
//! payload passes by default, CONNACK advertises the limits, an oversize packet gets
//! DISCONNECT 0x95 (MQTT 5) or a close (3.1.1), QoS above the maximum is granted lower or
//! refused with 0x9B.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::{
    BrokerProcess, Paho, RawClient, connect_packet, have_mosquitto, have_paho, read_to_close,
    v5_connect,
};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, Publish};
use rumqttc::v5::mqttbytes::{QoS as V5QoS, v5};

#[test]
fn a_one_mib_payload_passes_by_default() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let file = std::env::temp_dir().join(format!("realip-broker-1mib-{}", std::process::id()));
    std::fs::write(&file, vec![b'x'; 1_048_576]).unwrap();
    for version in ["mqttv311", "mqttv5"] {
        let id = format!("big-sub-{version}");
        let sub = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
            .args(["-V", version, "-i", &id, "-t", "big/#", "-q", "1"])
            .args(["-C", "1", "-W", "20", "-F", "%t %l"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        common::wait_for(Duration::from_secs(10), || {
            (broker.client(&id)["subscriptions_cnt"] == 1).then_some(())
        })
        .unwrap();
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
            .args(["-V", version, "-q", "1", "-t", "big/one", "-f"])
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success(), "{version}: mosquitto_pub of 1 MiB failed");
        let out = sub.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "big/one 1048576\n",
            "{version}"
        );
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn connack_advertises_the_limits_to_paho() {
    if !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[
        "--max-packet-size",
        "65536",
        "--max-qos",
        "1",
        "--receive-maximum",
        "16",
        "--topic-alias-maximum",
        "0",
    ]);
    let mut paho = Paho::connect_with(
        broker.tcp(),
        "limits-paho",
        "127.0.0.180",
        &[],
        &["--mqtt", "5", "--transport", "tcp"],
    );
    let props = &paho.connack["props"];
    assert_eq!(props["MaximumPacketSize"], 65536, "{}", paho.connack);
    assert_eq!(props["ReceiveMaximum"], 16);
    assert_eq!(props["MaximumQoS"], 1);
    assert!(
        props.get("TopicAliasMaximum").is_none(),
        "no topic aliases offered"
    );
    // A subscription asking for QoS 2 is granted the maximum, 1.
    paho.command(serde_json::json!({"op": "sub", "topic": "l/#", "qos": 2}));
    assert_eq!(paho.expect("subscribed")["granted"], serde_json::json!([1]));

    // Defaults: 1 MiB + 64 KiB, Receive Maximum 1024, Maximum QoS absent (2), 64 aliases.
    let broker = BrokerProcess::start(&[]);
    let paho = Paho::connect_with(
        broker.tcp(),
        "limits-default",
        "127.0.0.181",
        &[],
        &["--mqtt", "5", "--transport", "tcp"],
    );
    let props = &paho.connack["props"];
    assert_eq!(props["MaximumPacketSize"], 1_114_112, "{}", paho.connack);
    assert_eq!(props["ReceiveMaximum"], 1024);
    assert!(props.get("MaximumQoS").is_none());
    assert_eq!(props["TopicAliasMaximum"], 64);
}

fn v5_publish(topic: &str, qos: V5QoS, payload: usize, pkid: u16) -> Vec<u8> {
    let mut publish = v5::Publish::new(topic, qos, vec![b'y'; payload], None);
    publish.pkid = pkid;
    let mut out = BytesMut::new();
    publish.write(&mut out).unwrap();
    out.to_vec()
}

#[test]
fn oversize_packets_get_0x95_and_qos_above_the_maximum_gets_0x9b() {
    let broker = BrokerProcess::start(&["--max-packet-size", "1000", "--max-qos", "1"]);

    // MQTT 5: DISCONNECT 0x95 (Packet too large), not 0x81.
    let mut v5c = RawClient::connect_from("127.0.0.182", broker.tcp(), &v5_connect("big-v5", 60));
    let q0 = V5QoS::AtMostOnce;
    v5c.send_bytes(&v5_publish("t", q0, 2000, 0));
    let rest = read_to_close(&mut v5c);
    assert!(rest.ends_with(&[0xE0, 0x01, 0x95]), "{rest:x?}");
    let logs = broker.wait_log("packet too large");
    assert!(
        logs.lines()
            .any(|l| l.contains("client=big-v5 ") && l.contains("packet too large")),
        "{logs}"
    );

    // Exactly at the limit passes: 1000 bytes in all.
    let mut fits = RawClient::connect_from("127.0.0.183", broker.tcp(), &v5_connect("fits-v5", 60));
    let q0 = V5QoS::AtMostOnce;
    let exact = v5_publish("t", q0, 1000 - 7, 0);
    assert_eq!(exact.len(), 1000);
    fits.send_bytes(&exact);
    fits.send_bytes(&[0xC0, 0x00]);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(&[0xD0, 0x00]) {
        let n = std::io::Read::read(&mut fits.stream, &mut buf).unwrap();
        assert!(n > 0, "closed: {got:x?}");
        got.extend_from_slice(&buf[..n]);
    }

    // 3.1.1: closed.
    let mut v4c = RawClient::connect_from("127.0.0.184", broker.tcp(), b"");
    assert_eq!(v4c.handshake(connect_packet("big-v4", 60)), 0);
    v4c.send(Packet::Publish(Publish::new(
        "t",
        QoS::AtMostOnce,
        vec![0u8; 2000],
    )));
    assert!(read_to_close(&mut v4c).is_empty());

    // MQTT 5 PUBLISH at QoS 2 above Maximum QoS 1: DISCONNECT 0x9B.
    let mut q2 = RawClient::connect_from("127.0.0.185", broker.tcp(), &v5_connect("q2-v5", 60));
    let q = V5QoS::ExactlyOnce;
    q2.send_bytes(&v5_publish("t", q, 1, 1));
    let rest = read_to_close(&mut q2);
    assert!(rest.ends_with(&[0xE0, 0x01, 0x9B]), "{rest:x?}");

    // A real client is told the limit in CONNACK and does not send a larger packet:
    // libmosquitto drops it before sending and disconnects normally.
    if have_mosquitto() {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
            .args(["-d", "-i", "big-mosq", "-V", "mqttv5", "-q", "1", "-t", "t"])
            .args(["-m", &"z".repeat(2000)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("received CONNACK"), "{text}");
        assert!(!text.contains("sending PUBLISH"), "{text}");
        let logs = broker.wait_log("client=big-mosq ");
        assert!(
            !logs
                .lines()
                .any(|l| l.contains("client=big-mosq ") && l.contains("too large")),
            "{logs}"
        );
    }
}

#[test]
fn receive_maximum_exceeded_by_a_v5_publisher_gets_0x93() {
    let broker = BrokerProcess::start(&["--receive-maximum", "2"]);
    let mut c = RawClient::connect_from("127.0.0.186", broker.tcp(), &v5_connect("rm-v5", 60));
    for pkid in 1..=3 {
        let q = V5QoS::ExactlyOnce;
        c.send_bytes(&v5_publish("rm", q, 1, pkid));
    }
    let rest = read_to_close(&mut c);
    assert!(rest.ends_with(&[0xE0, 0x01, 0x93]), "{rest:x?}");
}
