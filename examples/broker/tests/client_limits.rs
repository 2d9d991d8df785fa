//! Limits an MQTT 5 client sets in CONNECT: the broker never sends it a packet larger than
//! its Maximum Packet Size (such a message is dropped for that client) [MQTT-3.1.2-24/-25],
//! nor more unacknowledged QoS 1/2 PUBLISHes than its Receive Maximum [MQTT-3.3.4-9].

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::BytesMut;
use common::{
    BrokerProcess, RawClient, connect_packet, have_mosquitto, v5_connect_with, v5_publishes,
};
use rumqttc::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5;

#[test]
fn messages_larger_than_the_clients_maximum_packet_size_are_not_sent_to_it() {
    if !have_mosquitto() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let port = broker.tcp().port().to_string();
    let sub = |id: &str, extra: &[&str], count: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-i", id])
            .args(extra)
            .args([
                "-t", "mps/#", "-q", "1", "-C", count, "-W", "10", "-F", "%t %l",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let small = sub(
        "mps-small",
        &["-D", "connect", "maximum-packet-size", "200"],
        "2",
    );
    let any = sub("mps-any", &[], "3");
    broker.wait_subscriptions("mps-small", 1);
    broker.wait_subscriptions("mps-any", 1);
    for (topic, size) in [("mps/1", 100), ("mps/2", 500), ("mps/3", 150)] {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
            .args(["-t", topic, "-m", &"p".repeat(size)])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let small = small.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&small.stdout),
        "mps/1 100\nmps/3 150\n",
        "the 500-byte message is dropped for the client that takes 200 bytes"
    );
    let any = any.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&any.stdout),
        "mps/1 100\nmps/2 500\nmps/3 150\n"
    );
}

fn v5_connect_with_receive_maximum(id: &str, receive_maximum: u16) -> Vec<u8> {
    let mut properties = v5::ConnectProperties::new();
    properties.receive_maximum = Some(receive_maximum);
    v5_connect_with(id, 60, Some(properties))
}

fn puback(client: &mut RawClient, pkid: u16) {
    let mut out = BytesMut::new();
    v5::PubAck::new(pkid, None).write(&mut out).unwrap();
    client.send_bytes(&out);
}

#[test]
fn no_more_unacknowledged_publishes_than_the_clients_receive_maximum() {
    let broker = BrokerProcess::start(&[]);
    let mut sub = RawClient::connect_from(
        "127.0.0.190",
        broker.tcp(),
        &v5_connect_with_receive_maximum("rm-sub", 2),
    );
    let mut buf = BytesMut::new();
    let mut subscribe = BytesMut::new();
    v5::Subscribe::new(
        v5::Filter::new("rm/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce),
        None,
    )
    .write(&mut subscribe)
    .unwrap();
    // Set a packet identifier: rumqttc leaves it 0, which the broker refuses.
    subscribe[3] = 1;
    sub.send_bytes(&subscribe);
    broker.wait_subscriptions("rm-sub", 1);

    let mut publisher = RawClient::connect_from("127.0.0.191", broker.tcp(), b"");
    assert_eq!(publisher.handshake(connect_packet("rm-pub", 60)), 0);
    for i in 1..=5u8 {
        publisher.publish("rm/t", &[b'0' + i], QoS::AtLeastOnce, false);
    }

    sub.stream
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let first = v5_publishes(&mut sub, &mut buf, 3);
    assert_eq!(
        first.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        b"12",
        "two in flight at most"
    );
    puback(&mut sub, first[0].pkid);
    let next = v5_publishes(&mut sub, &mut buf, 2);
    assert_eq!(next.iter().map(|p| p.payload[0]).collect::<Vec<_>>(), b"3");
    puback(&mut sub, first[1].pkid);
    puback(&mut sub, next[0].pkid);
    let rest = v5_publishes(&mut sub, &mut buf, 3);
    assert_eq!(
        rest.iter().map(|p| p.payload[0]).collect::<Vec<_>>(),
        b"45",
        "in order"
    );
}
