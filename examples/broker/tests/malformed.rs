//! Every packet the MQTT specifications call malformed closes that client, and only that
//! client: in 3.1.1 the connection is closed ([MQTT-4.8.0-1]); in 5.0 the broker first sends
//! DISCONNECT with reason code 0x81 (Malformed Packet), or 0x82 (Protocol Error) where the
//! MQTT 5 specification names the fault so (§4.13).

mod common;

use std::time::Duration;

use common::{BrokerProcess, RawClient, connect_packet, read_to_close, v5_connect};
use rumqttc::mqttbytes::QoS;

const MALFORMED: u8 = 0x81;
const PROTOCOL_ERROR: u8 = 0x82;

/// (what, 3.1.1 frame, 5.0 frame, 5.0 reason code). A frame is `None` where the form does not
/// exist in that version.
type Case = (
    &'static str,
    Option<&'static [u8]>,
    Option<&'static [u8]>,
    u8,
);

const CASES: &[Case] = &[
    // Packet identifier 0 [MQTT-2.3.1-1], in every packet that carries one.
    (
        "SUBSCRIBE with packet identifier 0",
        Some(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
        Some(&[0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
        MALFORMED,
    ),
    (
        "UNSUBSCRIBE with packet identifier 0",
        Some(&[0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, b'a']),
        Some(&[0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, b'a']),
        MALFORMED,
    ),
    (
        "PUBLISH QoS 1 with packet identifier 0",
        Some(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00]),
        Some(&[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00]),
        MALFORMED,
    ),
    (
        "PUBLISH QoS 2 with packet identifier 0",
        Some(&[0x34, 0x05, 0x00, 0x01, b'a', 0x00, 0x00]),
        Some(&[0x34, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, 0x00]),
        MALFORMED,
    ),
    (
        "PUBACK with packet identifier 0",
        Some(&[0x40, 0x02, 0x00, 0x00]),
        Some(&[0x40, 0x02, 0x00, 0x00]),
        MALFORMED,
    ),
    (
        "PUBREC with packet identifier 0",
        Some(&[0x50, 0x02, 0x00, 0x00]),
        Some(&[0x50, 0x02, 0x00, 0x00]),
        MALFORMED,
    ),
    (
        "PUBREL with packet identifier 0",
        Some(&[0x62, 0x02, 0x00, 0x00]),
        Some(&[0x62, 0x02, 0x00, 0x00]),
        MALFORMED,
    ),
    (
        "PUBCOMP with packet identifier 0",
        Some(&[0x70, 0x02, 0x00, 0x00]),
        Some(&[0x70, 0x02, 0x00, 0x00]),
        MALFORMED,
    ),
    // Reserved fixed-header flags [MQTT-2.2.2-2].
    (
        "SUBSCRIBE with flags 0000",
        Some(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]),
        Some(&[0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00]),
        MALFORMED,
    ),
    (
        "UNSUBSCRIBE with flags 0000",
        Some(&[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
        Some(&[0xA0, 0x06, 0x00, 0x01, 0x00, 0x00, 0x01, b'a']),
        MALFORMED,
    ),
    (
        "PUBREL with flags 0000",
        Some(&[0x60, 0x02, 0x00, 0x01]),
        Some(&[0x60, 0x02, 0x00, 0x01]),
        MALFORMED,
    ),
    (
        "PUBACK with flags 0001",
        Some(&[0x41, 0x02, 0x00, 0x01]),
        Some(&[0x41, 0x02, 0x00, 0x01]),
        MALFORMED,
    ),
    (
        "PINGREQ with flags 0001",
        Some(&[0xC1, 0x00]),
        Some(&[0xC1, 0x00]),
        MALFORMED,
    ),
    (
        "DISCONNECT with flags 0001",
        Some(&[0xE1, 0x00]),
        Some(&[0xE1, 0x00]),
        MALFORMED,
    ),
    (
        "reserved packet type 0",
        Some(&[0x00, 0x00]),
        Some(&[0x00, 0x00]),
        MALFORMED,
    ),
    // Packet type 15: reserved in 3.1.1; AUTH in 5.0, out of place without an
    // Authentication Method (which the broker refuses in CONNECT).
    (
        "packet type 15 (AUTH)",
        Some(&[0xF0, 0x00]),
        Some(&[0xF0, 0x00]),
        PROTOCOL_ERROR,
    ),
    // Empty topic filter lists [MQTT-3.8.3-3], [MQTT-3.10.3-2] (5.0: a Protocol Error).
    (
        "SUBSCRIBE without a topic filter",
        Some(&[0x82, 0x02, 0x00, 0x01]),
        Some(&[0x82, 0x03, 0x00, 0x01, 0x00]),
        PROTOCOL_ERROR,
    ),
    (
        "UNSUBSCRIBE without a topic filter",
        Some(&[0xA2, 0x02, 0x00, 0x01]),
        Some(&[0xA2, 0x03, 0x00, 0x01, 0x00]),
        PROTOCOL_ERROR,
    ),
    // Invalid UTF-8 [MQTT-1.5.3-1] and U+0000 [MQTT-1.5.3-2].
    (
        "PUBLISH topic that is not UTF-8",
        Some(&[0x30, 0x04, 0x00, 0x02, 0xC3, 0x28]),
        Some(&[0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, 0x00]),
        MALFORMED,
    ),
    (
        "PUBLISH topic with U+0000",
        Some(&[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b']),
        Some(&[0x30, 0x06, 0x00, 0x03, b'a', 0x00, b'b', 0x00]),
        MALFORMED,
    ),
    (
        "SUBSCRIBE filter that is not UTF-8",
        Some(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, 0xC3, 0x28, 0x00]),
        Some(&[0x82, 0x08, 0x00, 0x01, 0x00, 0x00, 0x02, 0xC3, 0x28, 0x00]),
        MALFORMED,
    ),
    (
        "UNSUBSCRIBE filter that is not UTF-8",
        Some(&[0xA2, 0x06, 0x00, 0x01, 0x00, 0x02, 0xC3, 0x28]),
        Some(&[0xA2, 0x07, 0x00, 0x01, 0x00, 0x00, 0x02, 0xC3, 0x28]),
        MALFORMED,
    ),
    (
        "user property that is not UTF-8",
        None,
        Some(&[
            0x30, 0x0A, 0x00, 0x01, b'a', 0x06, 0x26, 0x00, 0x01, 0xFF, 0x00, 0x00,
        ]),
        MALFORMED,
    ),
    // Wildcards in a PUBLISH topic [MQTT-3.3.2-2].
    (
        "PUBLISH topic with #",
        Some(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']),
        Some(&[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00]),
        MALFORMED,
    ),
    (
        "PUBLISH topic with +",
        Some(&[0x30, 0x05, 0x00, 0x03, b'+', b'/', b'a']),
        Some(&[0x30, 0x06, 0x00, 0x03, b'+', b'/', b'a', 0x00]),
        MALFORMED,
    ),
    // QoS 3 [MQTT-3.3.1-4], [MQTT-3.8.3-4]; DUP on QoS 0 [MQTT-3.3.1-2].
    (
        "PUBLISH QoS 3",
        Some(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01]),
        Some(&[0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, 0x00]),
        MALFORMED,
    ),
    (
        "SUBSCRIBE asking for QoS 3",
        Some(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
        Some(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03]),
        MALFORMED,
    ),
    (
        "PUBLISH QoS 0 with DUP",
        Some(&[0x38, 0x03, 0x00, 0x01, b'a']),
        Some(&[0x38, 0x04, 0x00, 0x01, b'a', 0x00]),
        MALFORMED,
    ),
    // Reserved bits of the subscription options [MQTT-3.8.3-5] (3.1.1: [MQTT-3-8.3-4]).
    (
        "SUBSCRIBE options with reserved bits",
        Some(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04]),
        Some(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0xC0]),
        MALFORMED,
    ),
    (
        "SUBSCRIBE with retain handling 3",
        None,
        Some(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]),
        PROTOCOL_ERROR,
    ),
    // Bytes the packet cannot hold.
    (
        "PINGREQ with a body",
        Some(&[0xC0, 0x01, 0x00]),
        Some(&[0xC0, 0x01, 0x00]),
        MALFORMED,
    ),
    (
        "PUBACK with a trailing byte",
        Some(&[0x40, 0x03, 0x00, 0x01, 0x00]),
        None,
        MALFORMED,
    ),
    (
        "UNSUBSCRIBE filter longer than the packet",
        Some(&[0xA2, 0x05, 0x00, 0x01, 0x00, 0x09, b'a']),
        Some(&[0xA2, 0x06, 0x00, 0x01, 0x00, 0x00, 0x09, b'a']),
        MALFORMED,
    ),
];

#[test]
fn every_malformed_packet_closes_that_client_with_the_specs_reason_code() {
    let broker = BrokerProcess::start(&[]);
    let mut watcher = RawClient::connect_from("127.0.0.150", broker.tcp(), b"");
    assert_eq!(watcher.handshake(connect_packet("mal-watcher", 60)), 0);
    watcher.subscribe("mal/#", QoS::AtLeastOnce);

    let mut checked = 0;
    for (i, (what, v4, v5, code)) in CASES.iter().enumerate() {
        if let Some(frame) = v4 {
            let id = format!("mal-v4-{i}");
            let mut client = RawClient::connect_from("127.0.0.151", broker.tcp(), b"");
            assert_eq!(client.handshake(connect_packet(&id, 60)), 0);
            client.send_bytes(frame);
            let rest = read_to_close(&mut client);
            assert!(
                rest.is_empty(),
                "3.1.1 {what}: expected the connection closed, got {rest:x?}"
            );
            let needle = format!("client={id} ");
            let line = common::wait_for(Duration::from_secs(10), || {
                broker
                    .logs()
                    .lines()
                    .find(|l| l.contains(&needle) && l.contains("event=\"disconnected\""))
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("3.1.1 {what}: no disconnect line:\n{}", broker.logs()));
            assert!(
                line.contains("malformed packet") || line.contains("protocol error"),
                "3.1.1 {what}: {line}"
            );
            checked += 1;
        }
        if let Some(frame) = v5 {
            let id = format!("mal-v5-{i}");
            let mut client =
                RawClient::connect_from("127.0.0.152", broker.tcp(), &v5_connect(&id, 60));
            client.send_bytes(frame);
            let rest = read_to_close(&mut client);
            // CONNACK (fixed header, flags, reason 0, properties), then DISCONNECT and close.
            assert_eq!(rest.first(), Some(&0x20), "5.0 {what}: {rest:x?}");
            let connack_len = 2 + usize::from(rest[1]);
            assert_eq!(
                &rest[connack_len..],
                [0xE0, 0x01, *code],
                "5.0 {what}: expected DISCONNECT 0x{code:02X} then close, got {rest:x?}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 60, "{checked} cases");

    // A malformed CONNECT (reserved flag set [MQTT-3.1.2-3]) gets no CONNACK, in either version.
    for level in [4u8, 5] {
        let mut connect = vec![0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', level, 0x03];
        connect.extend_from_slice(&[0x00, 0x3C]);
        if level == 5 {
            connect[1] += 1;
            connect.push(0x00);
        }
        connect.extend_from_slice(&[0x00, 0x01, b'c']);
        let mut client = RawClient::connect_from("127.0.0.153", broker.tcp(), &connect);
        assert!(
            read_to_close(&mut client).is_empty(),
            "level {level}: a malformed CONNECT was answered"
        );
    }

    // Nobody else noticed.
    let mut publisher = RawClient::connect_from("127.0.0.154", broker.tcp(), b"");
    assert_eq!(publisher.handshake(connect_packet("mal-pub", 60)), 0);
    publisher.publish("mal/ok", b"still here", QoS::AtLeastOnce, false);
    let got = watcher.next_publish();
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("mal/ok", &b"still here"[..])
    );
    watcher.ping();
}
