//! `--proxy-from` (must send a PROXY header), `--proxy-optional` (health checkers, which
//! connect without one) and `--proxy-default` (everyone else) on the TCP listener.

mod common;

use std::io::Write;

use bytes::BytesMut;
use common::{BrokerProcess, RawClient, connect_packet};
use realip_listener::ProxyHeader;

/// Connects from `bind`, with a PROXY v2 header saying `client` when given, and sends a
/// CONNECT: the CONNACK code, or `None` when the broker closed the connection. The
/// connection is kept open (in `OPEN`) so that the admin API keeps showing the client.
fn connack(broker: &BrokerProcess, bind: &str, client: Option<&str>, clientid: &str) -> Option<u8> {
    let header = client
        .map(|c| ProxyHeader::v2(c.parse().unwrap(), broker.tcp()).to_bytes())
        .unwrap_or_default();
    let mut raw = RawClient::connect_from(bind, broker.tcp(), &header);
    let mut bytes = BytesMut::new();
    connect_packet(clientid, 60).write(&mut bytes).unwrap();
    if raw.stream.write_all(&bytes).is_err() {
        return None;
    }
    let code = match raw.recv() {
        Some(rumqttc::mqttbytes::v4::Packet::ConnAck(ack)) => Some(ack.code as u8),
        None => None,
        other => panic!("expected CONNACK, got {other:?}"),
    };
    OPEN.lock().unwrap().push(raw);
    code
}

/// The connections of the running test, closed when the process ends.
static OPEN: std::sync::Mutex<Vec<RawClient>> = std::sync::Mutex::new(Vec::new());

#[test]
fn health_checkers_connect_without_a_header_the_balancer_must_send_one_others_are_refused() {
    let broker = BrokerProcess::start(&[
        "--tcp-proxy-protocol",
        "--proxy-from",
        "127.0.0.91",
        "--proxy-optional",
        "127.0.0.92/32",
    ]);
    // The load balancer: with a header, the client is the header's.
    assert_eq!(
        connack(&broker, "127.0.0.91", Some("198.51.100.1:5000"), "lb"),
        Some(0)
    );
    assert_eq!(broker.client("lb")["ip_address"], "198.51.100.1");
    // ...and without one, closed.
    assert_eq!(connack(&broker, "127.0.0.91", None, "lb-bare"), None);
    broker.wait_log("missing");

    // The health checker: without a header, served as itself.
    assert_eq!(connack(&broker, "127.0.0.92", None, "probe"), Some(0));
    let record = broker.client("probe");
    assert_eq!(record["ip_address"], "127.0.0.92");
    assert_eq!(record["ip_source"], "socket");
    // A header from it is believed (it is in a range whose headers are read).
    assert_eq!(
        connack(&broker, "127.0.0.92", Some("198.51.100.2:5000"), "probe-pp"),
        Some(0)
    );
    assert_eq!(broker.client("probe-pp")["ip_address"], "198.51.100.2");

    // Anyone else: refused with or without a header (--proxy-default reject).
    assert_eq!(connack(&broker, "127.0.0.93", None, "other"), None);
    assert_eq!(
        connack(&broker, "127.0.0.93", Some("198.51.100.3:5000"), "other-pp"),
        None
    );
    broker.wait_log("connection from 127.0.0.93");
    let (_, metrics) = realip_test_support::http(broker.admin, "GET", "/metrics");
    for series in [
        "realip_broker_rejections_total{reason=\"missing_proxy_header\"} 1",
        "realip_broker_rejections_total{reason=\"untrusted_proxy_header\"} 1",
        "realip_listener_rejections_total{reason=\"missing\"} 1",
        "realip_listener_handshakes_total{outcome=\"v2_proxy\"} 2",
    ] {
        assert!(metrics.contains(series), "{series} in:\n{metrics}");
    }
}

#[test]
fn proxy_default_none_serves_other_peers_as_themselves_but_never_believes_their_header() {
    let broker = BrokerProcess::start(&[
        "--tcp-proxy-protocol",
        "--proxy-from",
        "127.0.0.94",
        "--proxy-default",
        "none",
    ]);
    assert_eq!(connack(&broker, "127.0.0.95", None, "direct"), Some(0));
    assert_eq!(broker.client("direct")["ip_address"], "127.0.0.95");
    // A forged header from a peer that is not a proxy closes its connection.
    assert_eq!(
        connack(&broker, "127.0.0.95", Some("203.0.113.9:5000"), "forged"),
        None
    );
    assert_eq!(broker.get("/api/v5/clients/forged").0, 404);
    assert_eq!(
        connack(&broker, "127.0.0.94", Some("198.51.100.4:5000"), "via-lb"),
        Some(0)
    );
    assert_eq!(broker.client("via-lb")["ip_address"], "198.51.100.4");
}

#[test]
fn policy_flags_are_checked() {
    for (args, error) in [
        (
            &["--proxy-default", "none", "--tcp-proxy-protocol"][..],
            "--proxy-default needs --proxy-from or --proxy-optional",
        ),
        (
            &["--proxy-optional", "10.0.0.0/8"][..],
            "--proxy-optional needs --tcp-proxy-protocol",
        ),
        (
            &[
                "--tcp-proxy-protocol",
                "--proxy-from",
                "10.0.0.0/8",
                "--proxy-default",
                "drop",
            ][..],
            "invalid --proxy-default \"drop\"",
        ),
    ] {
        let out = std::process::Command::new(common::BIN)
            .args(["--tcp", "127.0.0.1:0", "--ws", "off", "--admin", "off"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(error), "{args:?}: {stderr}");
    }
}
