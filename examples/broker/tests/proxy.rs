//! PROXY protocol on the TCP listener (`--tcp-proxy-protocol`) and on the WebSocket listener
//! (`--ws-proxy-protocol`): the admin API and `ctl` show the client from the header, the
//! socket peer is the proxy, and headers from the wrong sources are refused.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{BIN, BrokerProcess, RawClient, WsClient, connect_packet};
use realip_listener::ProxyHeader;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Packet;

fn dst(broker: &BrokerProcess) -> SocketAddr {
    broker.tcp()
}

#[test]
fn proxy_v1_header_gives_the_real_client_to_the_admin_api_and_ctl() {
    let broker = BrokerProcess::start(&["--tcp-proxy-protocol"]);
    let header = format!(
        "PROXY TCP4 203.0.113.7 {} 51000 {}\r\n",
        dst(&broker).ip(),
        dst(&broker).port()
    );
    let mut client = RawClient::connect_from("127.0.0.31", broker.tcp(), header.as_bytes());
    assert_eq!(client.handshake(connect_packet("pp-v1", 60)), 0);

    let record = broker.client("pp-v1");
    assert_eq!(record["ip_address"], "203.0.113.7");
    assert_eq!(record["port"], 51000);
    assert_eq!(record["peername"], "203.0.113.7:51000");
    assert_eq!(record["ip_source"], "proxy-protocol");
    assert_eq!(record["socket_peer"], client.local_addr().to_string());
    assert_eq!(record["sockname"], dst(&broker).to_string());
    assert_eq!(record["proxy"]["version"], "v1");
    assert_eq!(record["proxy"]["command"], "proxy");
    assert_eq!(record["proxy"]["source"], "203.0.113.7:51000");
    assert_eq!(record["proxy"]["destination"], dst(&broker).to_string());

    let show = Command::new(BIN)
        .args([
            "ctl",
            "--admin",
            &broker.admin.to_string(),
            "clients",
            "show",
            "pp-v1",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(show.stdout).unwrap(),
        format!(
            "Client(pp-v1, listener=tcp:default, peername=203.0.113.7:51000, sockname={}, socket_peer={})\n",
            dst(&broker),
            client.local_addr()
        )
    );
    let logs = broker.wait_log("client=pp-v1");
    assert!(logs.contains("peername=203.0.113.7:51000"), "{logs}");
}

#[test]
fn proxy_v2_header_with_tlvs_and_mqtt_in_the_same_segment() {
    let broker = BrokerProcess::start(&["--tcp-proxy-protocol"]);
    let header = ProxyHeader::v2("198.51.100.20:40000".parse().unwrap(), dst(&broker))
        .with_authority("mqtt.example.com")
        .with_unique_id(b"conn-42".to_vec())
        .with_crc32c()
        .to_bytes();
    // Header and CONNECT in one write: nothing after the header may be lost.
    let mut bytes = header.clone();
    let mut connect = BytesMut::new();
    connect_packet("pp-v2", 60).write(&mut connect).unwrap();
    bytes.extend_from_slice(&connect);
    let mut client = RawClient::connect_from("127.0.0.32", broker.tcp(), &bytes);
    match client.recv() {
        Some(Packet::ConnAck(ack)) => assert_eq!(ack.code as u8, 0),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client.subscribe("pp/#", QoS::AtLeastOnce);

    let record = broker.client("pp-v2");
    assert_eq!(record["peername"], "198.51.100.20:40000");
    assert_eq!(record["ip_source"], "proxy-protocol");
    let proxy = &record["proxy"];
    assert_eq!(proxy["version"], "v2");
    assert_eq!(proxy["authority"], "mqtt.example.com");
    assert_eq!(proxy["unique_id"], "conn-42");
    assert!(proxy["crc32c"].is_string());
    let names: Vec<_> = proxy["tlvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert!(
        names.contains(&"authority".into())
            && names.contains(&"unique_id".into())
            && names.contains(&"crc32c".into())
    );

    // The session works end to end through the header.
    let header = ProxyHeader::v2("198.51.100.21:40001".parse().unwrap(), dst(&broker)).to_bytes();
    let mut publisher = RawClient::connect_from("127.0.0.33", broker.tcp(), &header);
    assert_eq!(publisher.handshake(connect_packet("pp-pub", 60)), 0);
    publisher.publish("pp/x", b"through the proxy", QoS::AtLeastOnce, false);
    assert_eq!(&client.next_publish().payload[..], b"through the proxy");

    // A LOCAL header (a load balancer's health check) uses the socket's own addresses.
    let mut local = RawClient::connect_from(
        "127.0.0.34",
        broker.tcp(),
        &ProxyHeader::v2_local().to_bytes(),
    );
    assert_eq!(local.handshake(connect_packet("pp-local", 60)), 0);
    let record = broker.client("pp-local");
    assert_eq!(record["ip_address"], "127.0.0.34");
    assert_eq!(record["socket_peer"], local.local_addr().to_string());
}

#[test]
fn direct_clients_without_a_header_are_closed_and_others_are_unaffected() {
    let broker = BrokerProcess::start(&["--tcp-proxy-protocol", "--proxy-protocol-timeout", "1"]);
    let header = ProxyHeader::v1("203.0.113.8:52000".parse().unwrap(), dst(&broker)).to_bytes();
    let mut good = RawClient::connect_from("127.0.0.35", broker.tcp(), &header);
    assert_eq!(good.handshake(connect_packet("pp-good", 60)), 0);

    // MQTT straight away, no header: refused.
    let mut direct = RawClient::connect_from("127.0.0.36", broker.tcp(), b"");
    direct.send(Packet::Connect(connect_packet("pp-direct", 60)));
    assert!(
        direct.recv().is_none(),
        "a client without a PROXY header was served"
    );

    // Silence: closed after the header timeout.
    let start = Instant::now();
    let mut silent = RawClient::connect_from("127.0.0.37", broker.tcp(), b"");
    assert!(silent.recv().is_none());
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    good.ping();
    assert_eq!(broker.get("/api/v5/clients/pp-direct").0, 404);
    assert_eq!(broker.client("pp-good")["peername"], "203.0.113.8:52000");
}

#[test]
fn headers_from_outside_proxy_from_are_refused_and_nothing_is_attributed_to_them() {
    let broker = BrokerProcess::start(&["--tcp-proxy-protocol", "--proxy-from", "127.0.0.40/30"]);
    let forged = ProxyHeader::v1("198.51.100.66:1234".parse().unwrap(), dst(&broker)).to_bytes();
    let mut attacker = RawClient::connect_from("127.0.0.50", broker.tcp(), &forged);
    attacker.send(Packet::Connect(connect_packet("forged", 60)));
    assert!(attacker.recv().is_none(), "a forged header was accepted");
    assert_eq!(broker.get("/api/v5/clients/forged").0, 404);

    // The same host without a header is served as itself.
    let mut plain = RawClient::connect_from("127.0.0.50", broker.tcp(), b"");
    assert_eq!(plain.handshake(connect_packet("plain-50", 60)), 0);
    assert_eq!(broker.client("plain-50")["ip_address"], "127.0.0.50");
    assert_eq!(broker.client("plain-50")["ip_source"], "socket");

    // A proxy in the range is believed.
    let header = ProxyHeader::v1("203.0.113.9:53000".parse().unwrap(), dst(&broker)).to_bytes();
    let mut lb = RawClient::connect_from("127.0.0.41", broker.tcp(), &header);
    assert_eq!(lb.handshake(connect_packet("via-lb", 60)), 0);
    assert_eq!(broker.client("via-lb")["peername"], "203.0.113.9:53000");
    let (_, list) = broker.get("/api/v5/clients");
    assert!(!list.to_string().contains("198.51.100.66"));
}

#[test]
fn deny_applies_to_the_address_from_the_proxy_header() {
    let broker = BrokerProcess::start(&["--tcp-proxy-protocol", "--deny", "203.0.113.0/24"]);
    let header = ProxyHeader::v1("203.0.113.10:54000".parse().unwrap(), dst(&broker)).to_bytes();
    let mut denied = RawClient::connect_from("127.0.0.42", broker.tcp(), &header);
    assert_eq!(denied.handshake(connect_packet("denied-pp", 60)), 5);
    let logs = broker.wait_log("client denied");
    let line = logs.lines().find(|l| l.contains("client denied")).unwrap();
    assert!(
        line.contains("peername=203.0.113.10:54000") && line.contains("socket_peer=127.0.0.42:"),
        "{line}"
    );

    let header = ProxyHeader::v1("198.51.100.10:54001".parse().unwrap(), dst(&broker)).to_bytes();
    let mut allowed = RawClient::connect_from("127.0.0.42", broker.tcp(), &header);
    assert_eq!(allowed.handshake(connect_packet("allowed-pp", 60)), 0);
}

#[test]
fn proxy_protocol_on_the_websocket_listener() {
    let broker = BrokerProcess::start(&["--ws-proxy-protocol"]);
    let header = ProxyHeader::v2("203.0.113.77:45000".parse().unwrap(), broker.ws()).to_bytes();
    let mut ws = WsClient::connect("127.0.0.43", broker.ws(), &header, "");
    let mut connect = BytesMut::new();
    connect_packet("ws-pp", 60).write(&mut connect).unwrap();
    ws.send(&connect);
    assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");

    let record = broker.client("ws-pp");
    assert_eq!(record["listener"], "ws:default");
    assert_eq!(record["peername"], "203.0.113.77:45000");
    assert_eq!(record["ip_source"], "proxy-protocol");
    assert_eq!(record["proxy"]["version"], "v2");
    assert_eq!(
        record["socket_peer"],
        ws.stream.local_addr().unwrap().to_string()
    );
    assert_eq!(record["sockname"], broker.ws().to_string());
}

#[test]
fn proxy_protocol_and_forwarded_headers_compose_on_the_websocket_listener() {
    // W6 + W1: the PROXY-derived peer (a trusted LB) vouches for the forwarded header.
    let broker = BrokerProcess::start(&[
        "--ws-proxy-protocol",
        "--ws-header",
        "X-Forwarded-For",
        "--ws-port-header",
        "X-Forwarded-Port",
        "--trusted-proxy",
        "10.0.0.0/8",
    ]);
    let header = ProxyHeader::v1("10.1.2.3:45001".parse().unwrap(), broker.ws()).to_bytes();
    let mut ws = WsClient::connect(
        "127.0.0.44",
        broker.ws(),
        &header,
        "X-Forwarded-For: 192.0.2.55\r\nX-Forwarded-Port: 6001\r\n",
    );
    let mut connect = BytesMut::new();
    connect_packet("ws-pp-xff", 60).write(&mut connect).unwrap();
    ws.send(&connect);
    assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00]);
    let record = broker.client("ws-pp-xff");
    assert_eq!(record["peername"], "192.0.2.55:6001");
    assert_eq!(record["ip_source"], "x-forwarded-for");
    assert_eq!(record["proxy"]["source"], "10.1.2.3:45001");
    assert_eq!(
        record["forwarded"]["lines"],
        serde_json::json!(["x-forwarded-for: 192.0.2.55", "x-forwarded-port: 6001"])
    );
}
