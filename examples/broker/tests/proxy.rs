//! PROXY protocol on the TCP listener (`--tcp-proxy-protocol`) and on the WebSocket listener
//! (`--ws-proxy-protocol`): the admin API and `ctl` show the client from the header, the
//! socket peer is the proxy, and headers from the wrong sources are refused.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{
    BIN, BrokerProcess, Paho, RawClient, WsClient, connect_packet, have_mosquitto, have_paho,
};
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

    // Silence: reset after the header timeout.
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

/// What the broker did with one connection attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// CONNACK 0; the client is listed (or, for a client that left, logged) with this
    /// `peername`.
    Served(String),
    /// Closed before any CONNACK.
    Closed,
}

use Outcome::{Closed, Served};

/// A trusted load balancer's address (inside `--proxy-from 127.0.0.40/30`).
const LB: &str = "127.0.0.41";
/// A host outside `--proxy-from 127.0.0.40/30`.
const OUTSIDER: &str = "127.0.0.50";
/// The client every header in the matrix claims.
const CLAIMED: &str = "203.0.113.60:4000";

fn header_for(to: SocketAddr) -> Vec<u8> {
    ProxyHeader::v1(CLAIMED.parse().unwrap(), to).to_bytes()
}

/// TCP with a PROXY v1 header, then CONNECT, in one write.
fn tcp_with_header(broker: &BrokerProcess, from: &str, id: &str) -> Outcome {
    let mut bytes = header_for(broker.tcp());
    let mut connect = BytesMut::new();
    connect_packet(id, 60).write(&mut connect).unwrap();
    bytes.extend_from_slice(&connect);
    let mut client = RawClient::connect_from(from, broker.tcp(), &bytes);
    match client.recv() {
        Some(Packet::ConnAck(ack)) if ack.code as u8 == 0 => {
            Served(broker.client(id)["peername"].as_str().unwrap().to_owned())
        }
        None => Closed,
        other => panic!("expected CONNACK or a close, got {other:?}"),
    }
}

/// `mosquitto_pub` from `from`, no header; the `peername` comes from the audit log.
fn tcp_without_header(broker: &BrokerProcess, from: &str, id: &str) -> Outcome {
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(["-A", from, "-i", id, "-V", "mqttv311", "-q", "1"])
        .args(["-t", "matrix/t", "-m", "m"])
        .output()
        .unwrap();
    if !out.status.success() {
        return Closed;
    }
    let needle = format!("event=\"connected\" client={id} ");
    let logs = broker.wait_log(&needle);
    let line = logs.lines().find(|l| l.contains(&needle)).unwrap();
    let peername = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("peername="))
        .unwrap();
    Served(peername.to_owned())
}

/// A WebSocket upgrade after a PROXY v1 header, then CONNECT.
fn ws_with_header(broker: &BrokerProcess, from: &str, id: &str) -> Outcome {
    let Some(mut ws) = WsClient::try_connect(from, broker.ws(), &header_for(broker.ws()), "")
    else {
        return Closed;
    };
    let mut connect = BytesMut::new();
    connect_packet(id, 60).write(&mut connect).unwrap();
    ws.send(&connect);
    assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    Served(broker.client(id)["peername"].as_str().unwrap().to_owned())
}

/// paho-mqtt over WebSocket from `from`, no header.
fn ws_without_header(broker: &BrokerProcess, from: &str, id: &str) -> Outcome {
    match Paho::try_connect_with(broker.ws(), id, from, &[], &[]) {
        Ok(_paho) => Served(broker.client(id)["peername"].as_str().unwrap().to_owned()),
        Err(_) => Closed,
    }
}

/// Runs the four cases (header or not, from the LB or the outsider) on both listeners.
/// The answers are, per listener: LB with header, LB without, outsider with, outsider without.
fn matrix(broker: &BrokerProcess, tag: &str) -> Vec<(&'static str, Outcome)> {
    let mut outcomes = Vec::new();
    for (listener, with, without) in [
        (
            "tcp",
            tcp_with_header as fn(&BrokerProcess, &str, &str) -> Outcome,
            tcp_without_header as fn(&BrokerProcess, &str, &str) -> Outcome,
        ),
        ("ws", ws_with_header, ws_without_header),
    ] {
        for (from, who) in [(LB, "lb"), (OUTSIDER, "outsider")] {
            outcomes.push((
                listener,
                with(broker, from, &format!("{tag}-{listener}-{who}-header")),
            ));
            outcomes.push((
                listener,
                without(broker, from, &format!("{tag}-{listener}-{who}-plain")),
            ));
        }
    }
    outcomes
}

fn served_from(host: &str) -> Outcome {
    Served(format!("{host}:PORT"))
}

/// The outcomes with socket ports replaced by `PORT` (they are ephemeral).
fn without_ports(outcomes: Vec<(&'static str, Outcome)>) -> Vec<(&'static str, Outcome)> {
    outcomes
        .into_iter()
        .map(|(listener, outcome)| match outcome {
            Served(peer) if peer.starts_with("127.") => {
                let host = peer.rsplit_once(':').unwrap().0.to_owned();
                (listener, served_from(&host))
            }
            other => (listener, other),
        })
        .collect()
}

#[test]
fn without_proxy_protocol_every_peer_is_served_as_itself_and_a_header_is_not_mqtt() {
    if !have_mosquitto() || !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[]);
    let outcomes = without_ports(matrix(&broker, "off"));
    let expected = [
        // The header's bytes are read as MQTT: not a CONNECT, so the client is closed.
        ("tcp", Closed),
        ("tcp", served_from(LB)),
        ("tcp", Closed),
        ("tcp", served_from(OUTSIDER)),
        // An HTTP server answers `PROXY ...` with an error and closes.
        ("ws", Closed),
        ("ws", served_from(LB)),
        ("ws", Closed),
        ("ws", served_from(OUTSIDER)),
    ];
    assert_eq!(outcomes, expected, "logs:\n{}", broker.logs());
}

#[test]
fn proxy_protocol_without_proxy_from_requires_and_believes_every_header() {
    if !have_mosquitto() || !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&["--tcp-proxy-protocol", "--ws-proxy-protocol"]);
    let outcomes = without_ports(matrix(&broker, "any"));
    let claimed = Served(CLAIMED.to_owned());
    let expected = [
        ("tcp", claimed.clone()),
        ("tcp", Closed),
        ("tcp", claimed.clone()),
        ("tcp", Closed),
        ("ws", claimed.clone()),
        ("ws", Closed),
        ("ws", claimed.clone()),
        ("ws", Closed),
    ];
    assert_eq!(outcomes, expected, "logs:\n{}", broker.logs());
    // Each refusal is logged with the peer that was refused.
    let logs = broker.logs();
    for host in [LB, OUTSIDER] {
        assert!(
            logs.lines().any(|l| l.contains("WARN")
                && l.contains(&format!("peer={host}:"))
                && l.contains("reason=\"missing\"")),
            "no warn line about {host} without a header:\n{logs}"
        );
    }
}

#[test]
fn proxy_from_decides_whose_header_is_believed_and_everyone_needs_one() {
    if !have_mosquitto() || !have_paho() {
        return;
    }
    let broker = BrokerProcess::start(&[
        "--tcp-proxy-protocol",
        "--ws-proxy-protocol",
        "--proxy-from",
        "127.0.0.40/30",
    ]);
    let outcomes = without_ports(matrix(&broker, "from"));
    let claimed = Served(CLAIMED.to_owned());
    let expected = [
        ("tcp", claimed.clone()),
        ("tcp", Closed),
        ("tcp", Closed),
        ("tcp", Closed),
        ("ws", claimed.clone()),
        ("ws", Closed),
        ("ws", Closed),
        ("ws", Closed),
    ];
    assert_eq!(outcomes, expected, "logs:\n{}", broker.logs());

    // The outsider's header is not believed, and the warn line names the outsider, for a
    // connection with a header and for one without.
    let logs = broker.logs();
    let warns: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&format!("connection from {OUTSIDER}:")))
        .collect();
    assert!(
        warns
            .iter()
            .filter(|l| l.contains("outside --proxy-from"))
            .count()
            >= 2
            && warns
                .iter()
                .filter(|l| l.contains("no PROXY protocol header"))
                .count()
                >= 2,
        "{logs}"
    );
    // Nothing is attributed to the claimed address of a refused header: only the two LB
    // connections ever carried it.
    let claimed_by: Vec<&str> = logs
        .lines()
        .filter(|l| {
            l.contains("event=\"connected\"") && l.contains(&format!("peername={CLAIMED} "))
        })
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix("socket_peer="))
        })
        .collect();
    assert_eq!(claimed_by.len(), 2, "{logs}");
    assert!(
        claimed_by
            .iter()
            .all(|peer| peer.starts_with(&format!("{LB}:"))),
        "{logs}"
    );
}

#[test]
fn proxy_from_without_proxy_protocol_is_a_configuration_error() {
    let out = Command::new(BIN)
        .args(["--tcp", "127.0.0.1:0", "--ws", "off", "--admin", "off"])
        .args(["--proxy-from", "10.0.0.0/8"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--proxy-from needs --tcp-proxy-protocol or --ws-proxy-protocol"),
        "{stderr}"
    );
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
