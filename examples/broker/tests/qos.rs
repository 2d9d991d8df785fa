//! QoS 2 end to end and redelivery: subscriptions are granted the QoS asked for, outgoing
//! QoS 2 runs PUBLISH → PUBREC → PUBREL → PUBCOMP, and a session resumed with messages in
//! flight gets them again, with DUP set, in order, each delivered exactly once.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{BrokerProcess, Paho, RawClient, connect_packet, have_mosquitto, have_paho};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PubComp, PubRec, Publish};

fn mosquitto_pub(broker: &BrokerProcess, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "mosquitto_pub {args:?}");
}

#[test]
fn qos_2_is_granted_and_delivered_as_qos_2_to_mosquitto_and_paho() {
    if !have_mosquitto() || !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let mut paho = Paho::connect(broker.ws(), "q2-paho", "127.0.0.160", &[]);
    // Asserts SUBACK granted [2].
    paho.subscribe("q2/#", 2);

    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(["-V", "mqttv5", "-i", "q2-mosq", "-q", "2", "-t", "q2/#"])
        .args(["-C", "2", "-W", "10", "-d", "-F", "%q %t %p"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    common::wait_for(Duration::from_secs(10), || {
        (broker.client("q2-mosq")["subscriptions_cnt"] == 1).then_some(())
    })
    .unwrap();

    mosquitto_pub(
        &broker,
        &["-V", "mqttv5", "-q", "2", "-t", "q2/a", "-m", "two"],
    );
    // QoS 1 publishes are delivered at QoS 1 (the lower of the two).
    mosquitto_pub(
        &broker,
        &["-V", "mqttv311", "-q", "1", "-t", "q2/b", "-m", "one"],
    );

    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mosquitto_sub failed:\n{text}");
    // `-d` shows the packets: SUBACK granted QoS 2, PUBLISH q2, PUBREC, PUBREL, PUBCOMP.
    assert!(text.contains("Subscribed (mid: 1): 2"), "{text}");
    assert!(
        text.contains("received PUBLISH") && text.contains("q2, r0"),
        "{text}"
    );
    assert!(text.contains("sending PUBREC"), "{text}");
    assert!(text.contains("received PUBREL"), "{text}");
    assert!(text.contains("sending PUBCOMP"), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("1 ") || l.starts_with("2 "))
        .collect();
    assert_eq!(lines, ["2 q2/a two", "1 q2/b one"], "{text}");

    // Two topics: MQTT orders messages per topic only, and paho hands a QoS 2 message to the
    // application after its PUBREL, so the two may arrive in either order.
    let mut got: Vec<(String, u64)> = (0..2)
        .map(|_| {
            let m = paho.expect("message");
            (
                m["topic"].as_str().unwrap_or_default().to_owned(),
                m["qos"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [("q2/a".to_owned(), 2), ("q2/b".to_owned(), 1)],
        "paho's messages"
    );
}

/// A persistent 3.1.1 session (clean session = 0) on a raw client.
fn persistent(broker: &BrokerProcess, id: &str) -> (RawClient, bool) {
    let mut client = RawClient::connect_from("127.0.0.161", broker.tcp(), b"");
    let mut connect = connect_packet(id, 60);
    connect.clean_session = false;
    client.send(Packet::Connect(connect));
    match client.recv() {
        Some(Packet::ConnAck(ack)) => {
            assert_eq!(ack.code as u8, 0);
            (client, ack.session_present)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn publish(client: &mut RawClient) -> Publish {
    match client.recv() {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[test]
fn a_subscriber_killed_mid_flow_gets_every_message_exactly_once_after_resuming() {
    let broker = BrokerProcess::start(&[]);
    let (mut sub, present) = persistent(&broker, "eo-sub");
    assert!(!present);
    sub.subscribe("eo/#", QoS::ExactlyOnce);

    let mut publisher = RawClient::connect_from("127.0.0.162", broker.tcp(), b"");
    assert_eq!(publisher.handshake(connect_packet("eo-pub", 60)), 0);
    publisher.publish("eo/1", b"one", QoS::AtLeastOnce, false);
    publisher.publish("eo/2", b"two", QoS::AtLeastOnce, false);
    // QoS 2 from the publisher, with its own flow.
    let mut q2 = Publish::new("eo/3", QoS::ExactlyOnce, b"three".to_vec());
    q2.pkid = 77;
    publisher.send(Packet::Publish(q2.clone()));
    assert!(matches!(publisher.recv(), Some(Packet::PubRec(r)) if r.pkid == 77));
    // The publisher re-sends it with DUP before PUBREL: not delivered a second time.
    q2.dup = true;
    publisher.send(Packet::Publish(q2));
    assert!(matches!(publisher.recv(), Some(Packet::PubRec(r)) if r.pkid == 77));
    publisher.send(Packet::PubRel(rumqttc::mqttbytes::v4::PubRel::new(77)));
    assert!(matches!(publisher.recv(), Some(Packet::PubComp(c)) if c.pkid == 77));

    // The subscriber gets the three messages; it completes none of them: PUBREC for the
    // first (QoS 1 messages are granted QoS 1: they get PUBACK, not sent here), then dies.
    let m1 = publish(&mut sub);
    let m2 = publish(&mut sub);
    let m3 = publish(&mut sub);
    assert_eq!(
        [&m1, &m2, &m3].map(|m| (m.topic.as_str(), m.qos, m.dup)),
        [
            ("eo/1", QoS::AtLeastOnce, false),
            ("eo/2", QoS::AtLeastOnce, false),
            ("eo/3", QoS::ExactlyOnce, false)
        ]
    );
    sub.send(Packet::PubRec(PubRec::new(m3.pkid)));
    assert!(matches!(sub.recv(), Some(Packet::PubRel(r)) if r.pkid == m3.pkid));
    drop(sub);

    // Resumed: the QoS 1 messages again with DUP and their packet identifiers, in order,
    // then PUBREL (not the message) for the QoS 2 one, which the client already has.
    let (mut sub, present) = persistent(&broker, "eo-sub");
    assert!(present, "session present");
    let again1 = publish(&mut sub);
    let again2 = publish(&mut sub);
    assert_eq!(
        [&again1, &again2].map(|m| (m.topic.as_str(), m.pkid, m.dup, &m.payload[..])),
        [
            ("eo/1", m1.pkid, true, &b"one"[..]),
            ("eo/2", m2.pkid, true, &b"two"[..])
        ]
    );
    assert!(matches!(sub.recv(), Some(Packet::PubRel(r)) if r.pkid == m3.pkid));
    sub.send(Packet::PubComp(PubComp::new(m3.pkid)));
    sub.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(m1.pkid)));
    sub.send(Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(m2.pkid)));
    sub.ping();
    drop(sub);

    // A new QoS 2 message while offline; the subscriber dies before PUBREC this time.
    publisher.publish("eo/4", b"four", QoS::AtLeastOnce, false);
    let mut q2 = Publish::new("eo/5", QoS::ExactlyOnce, b"five".to_vec());
    q2.pkid = 78;
    publisher.send(Packet::Publish(q2));
    assert!(matches!(publisher.recv(), Some(Packet::PubRec(_))));
    let (mut sub, _) = persistent(&broker, "eo-sub");
    let m4 = publish(&mut sub);
    let m5 = publish(&mut sub);
    assert_eq!(
        [&m4, &m5].map(|m| (m.topic.as_str(), m.dup)),
        [("eo/4", false), ("eo/5", false)]
    );
    drop(sub);

    // Resumed by a real client: mosquitto_sub takes the re-sent messages (DUP) and
    // completes their flows; nothing else is pending, so each message is delivered once.
    if have_mosquitto() {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
            .args([
                "-V", "mqttv311", "-i", "eo-sub", "-c", "-q", "2", "-t", "eo/#",
            ])
            .args(["-W", "3", "-d", "-F", "%q %t %p"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("1 ") || l.starts_with("2 "))
            .collect();
        assert_eq!(lines, ["1 eo/4 four", "2 eo/5 five"], "{text}");
        assert!(text.contains("d1, q1") && text.contains("d1, q2"), "{text}");
    }

    // Everything is complete: a last resume gets nothing.
    let (mut sub, present) = persistent(&broker, "eo-sub");
    assert!(present);
    sub.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let read = std::io::Read::read(&mut sub.stream, &mut byte);
    assert!(read.is_err(), "nothing may be re-sent: {read:?} {byte:?}");
}
