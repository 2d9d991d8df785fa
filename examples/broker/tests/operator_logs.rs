//! Flags and logs that say what they mean: host bits in a network flag, a dual-stack listener's
//! IPv4 peers written as IPv4, a slow subscriber's drops counted and rate-limited, a
//! WebSocket request on the wrong path, a flood of bad first packets logged within a limit, a
//! broker with no listener.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{
    BIN, BrokerProcess, RawClient, bind_connect, connect_packet, v5_connect_with, wait_for,
};
use rumqttc::mqttbytes::QoS;

#[test]
fn host_bits_warn_and_dual_stack_peers_are_ipv4() {
    let mut command = Command::new(BIN);
    command.args([
        "--tcp",
        "[::]:0",
        "--ws",
        "off",
        "--admin",
        "127.0.0.1:0",
        "--deny",
        "192.0.2.131/24",
    ]);
    let broker = BrokerProcess::spawn(command);
    broker.wait_log("--deny 192.0.2.131/24: host bits are set; using the network 192.0.2.0/24");

    let port = broker.tcp().port();
    let to: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client = RawClient::connect_from("127.0.0.172", to, b"");
    assert_eq!(client.handshake(connect_packet("dual-stack", 60)), 0);
    let me = client.local_addr();
    let record = broker.client("dual-stack");
    assert_eq!(record["peername"], me.to_string());
    assert_eq!(record["socket_peer"], me.to_string());
    assert_eq!(record["sockname"], to.to_string());
}

/// A subscriber that never acknowledges (MQTT 5 Receive Maximum 1) under a flood of 1,200
/// QoS 1 messages: the queue's drops are counted in `mqueue_dropped` and reported in one `warn` line, not one per
/// message.
#[test]
fn a_slow_subscriber_gets_counted_rate_limited_drop_reports() {
    let broker = BrokerProcess::start(&[]);
    let mut slow = bind_connect("127.0.0.173", broker.tcp());
    let properties = rumqttc::v5::mqttbytes::v5::ConnectProperties {
        receive_maximum: Some(1),
        ..Default::default()
    };
    slow.write_all(&v5_connect_with("slow", 60, Some(properties)))
        .unwrap();
    let mut connack = [0u8; 64];
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(slow.read(&mut connack).unwrap() > 0);
    // SUBSCRIBE packet id 1, no properties, "flood" at QoS 1.
    slow.write_all(&[0x82, 11, 0, 1, 0, 0, 5, b'f', b'l', b'o', b'o', b'd', 1])
        .unwrap();
    wait_for(Duration::from_secs(10), || {
        (broker.client("slow")["subscriptions_cnt"] == 1).then_some(())
    })
    .expect("subscribed");

    let mut publisher = RawClient::connect_from("127.0.0.174", broker.tcp(), b"");
    assert_eq!(publisher.handshake(connect_packet("flooder", 60)), 0);
    for i in 0..1200 {
        publisher.publish("flood", format!("{i}").as_bytes(), QoS::AtLeastOnce, false);
    }
    publisher.ping();
    let record = wait_for(Duration::from_secs(10), || {
        let record = broker.client("slow");
        (record["mqueue_dropped"].as_u64() >= Some(199)).then_some(record)
    })
    .unwrap_or_else(|| panic!("drops: {}", broker.client("slow")));
    // One message in flight (Receive Maximum 1, never acknowledged), 1,000 queued, the
    // 199 oldest of the rest dropped.
    assert_eq!(record["inflight_cnt"], 1, "{record}");
    assert_eq!(record["mqueue_len"], 1000, "{record}");
    assert_eq!(record["mqueue_dropped"], 199, "{record}");
    let logs = broker.wait_log("session queue full");
    let lines = logs.matches("session queue full").count();
    assert_eq!(lines, 1, "{logs}");
    drop(slow);
}

/// Any peer can send a first packet that is not a CONNECT as often as it connects: a burst
/// of 10 `warn` lines per 5 seconds, the rest at `debug`; every such client is still closed,
/// and a good client is served meanwhile.
#[test]
fn a_flood_of_bad_first_packets_is_ten_warn_lines() {
    let broker = BrokerProcess::start(&[]);
    for _ in 0..15 {
        let mut junk = TcpStream::connect(broker.tcp()).unwrap();
        // PINGREQ as the first packet.
        junk.write_all(&[0xc0, 0x00]).unwrap();
        junk.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut rest = Vec::new();
        junk.read_to_end(&mut rest)
            .expect("closed by the broker, not timed out");
    }
    let mut good = RawClient::connect_from("127.0.0.175", broker.tcp(), b"");
    assert_eq!(good.handshake(connect_packet("after-the-flood", 60)), 0);
    let logs = broker.wait_log("after-the-flood");
    let warned = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("bad first packet"))
        .count();
    assert_eq!(warned, 10, "{logs}");
}

#[test]
fn a_websocket_request_on_another_path_is_404_and_logged() {
    let broker = BrokerProcess::start(&[]);
    let mut stream = TcpStream::connect(broker.ws()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 404");
    let logs = broker.wait_log("answered 404");
    let line = logs.lines().find(|l| l.contains("answered 404")).unwrap();
    assert!(line.contains(" INFO "), "{line}");
    // Logs written to a pipe or file carry no ANSI colour codes.
    assert!(!logs.contains('\x1b'), "{logs:?}");
    assert!(
        line.contains(
            r#"WebSocket request for "/" answered 404: MQTT over WebSocket is served on "/mqtt""#
        ),
        "{line}"
    );
}

#[test]
fn a_broker_that_would_listen_on_nothing_is_refused() {
    let output = Command::new(BIN)
        .args(["--tcp", "off", "--ws", "off", "--admin", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no MQTT listener"), "{stderr}");
}
