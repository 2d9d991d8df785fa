//! Reloading `--config` (admin API and SIGHUP): a proxy that was not trusted is trusted for
//! the next connection, open sessions stay up, and a broken file changes nothing.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{BrokerProcess, RawClient, WsClient, connect_packet, wait_for};
use realip_listener::ProxyHeader;
use realip_test_support::{http_json, mqtt_connect_packet};
use rumqttc::mqttbytes::QoS;

fn config_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realip-broker-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    write(&path, text);
    path
}

fn write(path: &Path, text: &str) {
    // Written to a temporary file and renamed: a reader never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn start(config: &Path) -> BrokerProcess {
    BrokerProcess::start(&["--config", config.to_str().unwrap()])
}

/// A CONNECT through a PROXY v2 header from `proxy` saying `client`: the CONNACK code, or
/// `None` when the broker closed the connection without one.
fn connect_via(
    broker: &BrokerProcess,
    proxy: &str,
    client: &str,
    clientid: &str,
) -> (RawClient, Option<u8>) {
    let header = ProxyHeader::v2(client.parse().unwrap(), broker.tcp()).to_bytes();
    let mut raw = RawClient::connect_from(proxy, broker.tcp(), &header);
    let mut bytes = bytes::BytesMut::new();
    connect_packet(clientid, 60).write(&mut bytes).unwrap();
    // The broker may already have closed the connection: a failed write is a refusal too.
    if std::io::Write::write_all(&mut raw.stream, &bytes).is_err() {
        return (raw, None);
    }
    let code = match raw.recv() {
        Some(rumqttc::mqttbytes::v4::Packet::ConnAck(ack)) => Some(ack.code as u8),
        None => None,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    (raw, code)
}

fn ws_client_ip(broker: &BrokerProcess, bind: &str, xff: &str, clientid: &str) -> String {
    let mut ws = WsClient::connect(
        bind,
        broker.ws(),
        b"",
        &format!("X-Forwarded-For: {xff}\r\n"),
    );
    ws.send(&mqtt_connect_packet(clientid));
    assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00]);
    let ip = broker.client(clientid)["ip_address"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(ws);
    ip
}

fn reload(admin: SocketAddr) -> (u16, serde_json::Value) {
    http_json(admin, "POST", "/api/v5/realip/reload")
}

const BEFORE: &str = r#"
tcp-proxy-protocol = true
proxy-from = ["127.0.0.71"]
ws-header = "X-Forwarded-For"
trusted-proxy = ["127.0.0.1"]
"#;

const AFTER: &str = r#"
tcp-proxy-protocol = true
proxy-from = ["127.0.0.71", "127.0.0.72"]
ws-header = "X-Forwarded-For"
trusted-proxy = ["127.0.0.1", "127.0.0.73"]
deny = ["198.51.100.66"]
"#;

#[test]
fn admin_reload_trusts_a_new_proxy_for_the_next_connection_and_keeps_sessions() {
    let path = config_file("admin.toml", BEFORE);
    let broker = start(&path);

    // An open session through the trusted proxy.
    let (mut session, code) = connect_via(&broker, "127.0.0.71", "198.51.100.71:4000", "kept");
    assert_eq!(code, Some(0));
    session.subscribe("reload/t", QoS::AtMostOnce);

    // Not trusted yet: its header is refused (the connection closed), and the WebSocket
    // layer ignores the header from 127.0.0.73.
    let (_, code) = connect_via(&broker, "127.0.0.72", "198.51.100.72:4000", "early");
    assert_eq!(code, None);
    assert_eq!(
        ws_client_ip(&broker, "127.0.0.73", "192.0.2.9", "ws-early"),
        "127.0.0.73"
    );
    let (_, code) = connect_via(
        &broker,
        "127.0.0.71",
        "198.51.100.66:4000",
        "not-denied-yet",
    );
    assert_eq!(code, Some(0));

    write(&path, AFTER);
    let (status, body) = reload(broker.admin);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "ok");
    assert_eq!(
        body["changed"],
        serde_json::json!(["proxy-rules", "deny", "trusted-proxy"])
    );
    assert_eq!(body["restart_required"], serde_json::json!([]));

    // The next connection from the new proxy is believed.
    let (mut late, code) = connect_via(&broker, "127.0.0.72", "198.51.100.72:4000", "late");
    assert_eq!(code, Some(0));
    let record = broker.client("late");
    assert_eq!(record["ip_address"], "198.51.100.72");
    assert_eq!(record["socket_peer"], late.local_addr().to_string());
    assert_eq!(
        ws_client_ip(&broker, "127.0.0.73", "192.0.2.9", "ws-late"),
        "192.0.2.9"
    );
    let (_, code) = connect_via(&broker, "127.0.0.71", "198.51.100.66:4000", "denied-now");
    assert_eq!(code, Some(5));

    // The session opened before the reload is still served, both ways.
    late.publish("reload/t", b"after", QoS::AtMostOnce, false);
    assert_eq!(&session.next_publish().payload[..], b"after");
    session.publish("reload/t", b"mine", QoS::AtMostOnce, false);
    assert_eq!(&session.next_publish().payload[..], b"mine");
    assert_eq!(broker.client("kept")["connected"], true);

    // A broken file: refused with the error, nothing changes.
    write(
        &path,
        "proxy-from = [\"not-an-address\"]\ntcp-proxy-protocol = true\n",
    );
    let (status, body) = reload(broker.admin);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "BAD_CONFIG");
    assert!(
        body["message"].as_str().unwrap().contains("not-an-address"),
        "{body}"
    );
    broker.wait_log("configuration reload failed, the running settings are kept");
    let (_, code) = connect_via(&broker, "127.0.0.72", "198.51.100.72:4001", "still");
    assert_eq!(code, Some(0));
    assert_eq!(
        ws_client_ip(&broker, "127.0.0.73", "192.0.2.10", "ws-still"),
        "192.0.2.10"
    );
    session.publish("reload/t", b"still", QoS::AtMostOnce, false);
    assert_eq!(&session.next_publish().payload[..], b"still");

    // A file with a setting that needs a restart: the rest applies, that one is reported.
    write(
        &path,
        &format!("{BEFORE}\nmax-qos = 1\n")
            .replace("127.0.0.71\"]", "127.0.0.71\", \"127.0.0.72\"]"),
    );
    let (status, body) = reload(broker.admin);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["changed"],
        serde_json::json!(["deny", "trusted-proxy"])
    );
    assert_eq!(body["restart_required"], serde_json::json!(["max-qos"]));

    let (status, metrics) = realip_test_support::http(broker.admin, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("realip_broker_reloads_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("realip_broker_reloads_total{result=\"error\"} 1"),
        "{metrics}"
    );
}

#[test]
fn sighup_reloads_the_file_and_the_broker_keeps_running() {
    let path = config_file(
        "sighup.toml",
        "tcp-proxy-protocol = true\nproxy-from = [\"127.0.0.81\"]\n",
    );
    let broker = start(&path);
    let (mut session, code) = connect_via(&broker, "127.0.0.81", "198.51.100.81:4000", "hup-kept");
    assert_eq!(code, Some(0));
    session.subscribe("hup/t", QoS::AtMostOnce);
    let (_, code) = connect_via(&broker, "127.0.0.82", "198.51.100.82:4000", "hup-early");
    assert_eq!(code, None);

    write(
        &path,
        "tcp-proxy-protocol = true\nproxy-from = [\"127.0.0.81\", \"127.0.0.82\"]\n",
    );
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let logs = broker.wait_log("configuration reloaded");
    assert!(logs.contains("trigger=\"SIGHUP\""), "{logs}");

    let (mut late, code) = connect_via(&broker, "127.0.0.82", "198.51.100.82:4000", "hup-late");
    assert_eq!(code, Some(0));
    assert_eq!(broker.client("hup-late")["ip_address"], "198.51.100.82");
    late.publish("hup/t", b"after-hup", QoS::AtMostOnce, false);
    assert_eq!(&session.next_publish().payload[..], b"after-hup");

    // A broken file on SIGHUP: logged, nothing changes, the broker runs on.
    write(&path, "tcp-proxy-protocol = maybe\n");
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    broker.wait_log("configuration reload failed");
    let (_, code) = connect_via(&broker, "127.0.0.82", "198.51.100.82:4001", "hup-still");
    assert_eq!(code, Some(0));
    session.ping();
    wait_for(Duration::from_secs(5), || {
        (broker.client("hup-kept")["connected"] == true).then_some(())
    })
    .expect("the session opened before SIGHUP is still connected");
}
