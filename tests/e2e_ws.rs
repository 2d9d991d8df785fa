//! End-to-end scenarios W1–W6 (MQTT over WebSocket with forwarded headers): real NGINX in front
//! of the real `realip-broker`, real paho-mqtt clients over WebSocket.
//! See `tests/SCENARIOS.md` for the topologies and the exact proxy configurations.

mod e2e;

use std::net::SocketAddr;

use e2e::Block::{Http, Stream};
use e2e::{Broker, PahoOpts, Scenario, Tool};

/// Broker with one MQTT/WebSocket listener on `127.N.0.2`, plus `args`.
fn ws_broker(s: &mut Scenario, args: &[&str]) -> (Broker, SocketAddr) {
    let ws = s.addr(2);
    let mut all = vec![
        "--tcp".to_owned(),
        "off".to_owned(),
        "--ws".to_owned(),
        ws.to_string(),
    ];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let probe_from = s.ip(12);
    let broker = s.broker("broker", &all, &[(ws, probe_from)]);
    (broker, ws)
}

/// The `$remote_addr $remote_port` of the last request in an NGINX instance's access log
/// (written when the WebSocket connection closes).
fn access_log_peer(s: &Scenario, name: &str) -> SocketAddr {
    let log = s.wait_file(name, "access.log");
    let line = log.lines().last().expect("one access log line");
    let mut fields = line.split_whitespace();
    let ip = fields.next().and_then(|f| f.parse().ok());
    let port = fields.next().and_then(|f| f.parse().ok());
    match (ip, port) {
        (Some(ip), Some(port)) => SocketAddr::new(ip, port),
        _ => panic!("unexpected access log line in {name}: {line:?}"),
    }
}

/// [`ws_broker`] taking the client from X-Forwarded-For and the port from X-Forwarded-Port when
/// the peer is in the load balancers' range, plus `extra` arguments.
fn xff_broker(s: &mut Scenario, extra: &[&str]) -> (Broker, SocketAddr) {
    let range = s.lb_range();
    let mut args = vec![
        "--ws-header",
        "X-Forwarded-For",
        "--ws-port-header",
        "X-Forwarded-Port",
        "--trusted-proxy",
        &range,
    ];
    args.extend_from_slice(extra);
    ws_broker(s, &args)
}

/// LB1 and LB2 (both append) in front of `lb3`, and the client host's own proxy
/// (`127.N.0.102`, connecting from the client host `127.N.0.101`, overwrites) in front of LB1.
/// Returns the client-side proxy's address.
fn client_proxy_and_two_lbs(s: &mut Scenario, lb3: SocketAddr) -> SocketAddr {
    let lb2 = s.nginx_lb("lb2", Http, "http_ws_append.conf", (21, 22), lb3, &[]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_append.conf", (11, 12), lb2, &[]);
    s.nginx_lb(
        "client-proxy",
        Http,
        "http_ws_overwrite.conf",
        (102, 101),
        lb1,
        &[],
    )
}

/// Client → LB (overwrites X-Forwarded-For/-Port) → broker.
#[test]
fn w1_single_lb_overwrites_xff() {
    let Some(mut s) = Scenario::start("W1", 21, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &[]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), ws, &[]);

    s.paho_reported(
        &broker,
        PahoOpts::ws(lb1, s.ip(101), "w1-paho"),
        "client connects through LB1",
    );
}

/// Client → LB1 (overwrites) → LB2 (appends) → broker taking the leftmost entry (EMQX style).
#[test]
fn w2_overwrite_then_append_leftmost() {
    let Some(mut s) = Scenario::start("W2", 22, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &["--ws-strategy", "leftmost"]);
    let lb2 = s.nginx_lb("lb2", Http, "http_ws_append.conf", (21, 22), ws, &[]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), lb2, &[]);

    s.paho_reported(
        &broker,
        PahoOpts::ws(lb1, s.ip(101), "w2-paho"),
        "client connects through LB1 and LB2",
    );
}

/// Client → attacker-side proxy (forges `X-Forwarded-For: 127.0.0.1`) → LB1 (overwrites) → LB2
/// (appends) → broker: the attacker host's real address wins, never 127.0.0.1.
#[test]
fn w3_forged_xff_overwritten_by_lb1() {
    let Some(mut s) = Scenario::start("W3", 23, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &["--ws-strategy", "leftmost"]);
    let lb2 = s.nginx_lb("lb2", Http, "http_ws_append.conf", (21, 22), ws, &[]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), lb2, &[]);
    // the attacker's own proxy runs on the attacker host 127.N.0.101
    let forge = s.nginx_lb(
        "attacker-proxy",
        Http,
        "http_ws_forge.conf",
        (102, 101),
        lb1,
        &[],
    );

    let client = s
        .paho("client", PahoOpts::ws(forge, s.ip(100), "w3-paho"))
        .expect("client connects through the attacker proxy, LB1 and LB2");
    let record = broker.wait_client("w3-paho");
    let forged: std::net::IpAddr = "127.0.0.1".parse().expect("ip");
    broker.assert_absent(forged, "W3: the forged X-Forwarded-For");
    client.roundtrip();
    // LB1 logged its peer, the attacker host's outgoing connection, when the WebSocket closed
    let attacker_host = access_log_peer(&s, "lb1");
    assert_eq!(
        attacker_host.ip(),
        s.ip(101),
        "LB1's peer is the attacker host"
    );
    s.assert_reported(&record, attacker_host);
}

/// Client-side proxy → LB1 → LB2 (both append) → LB3 (NGINX realip, recursive) → broker reading
/// X-Real-IP: the client host's real address.
#[test]
fn w4_lb3_realip_recursive() {
    w4(true);
}

/// As W4 with `real_ip_recursive off` at LB3: NGINX picks the rightmost entry, LB1's address.
#[test]
fn w4_lb3_realip_not_recursive_gives_lb1() {
    w4(false);
}

fn w4(recursive: bool) {
    let (id, net) = if recursive {
        ("W4", 24)
    } else {
        ("W4-off", 25)
    };
    let Some(mut s) = Scenario::start(id, net, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let range = s.lb_range();
    let args = [
        "--ws-header",
        "X-Real-IP",
        "--ws-port-header",
        "X-Forwarded-Port",
        "--ws-strategy",
        "single",
        "--trusted-proxy",
        &range,
    ];
    let (broker, ws) = ws_broker(&mut s, &args);
    let realip = vec![
        ("TRUSTED", range.clone()),
        ("RECURSIVE", if recursive { "on" } else { "off" }.to_owned()),
    ];
    let lb3 = s.nginx_lb("lb3", Http, "http_ws_realip.conf", (31, 32), ws, &realip);
    // LB2 and LB1 append; the client host 127.N.0.101 runs its own proxy in front of the
    // client (as in the guide)
    let cp = client_proxy_and_two_lbs(&mut s, lb3);

    let client_id = format!("{}-paho", id.to_lowercase());
    let client = s
        .paho("client", PahoOpts::ws(cp, s.ip(100), &client_id))
        .expect("client connects through the client-side proxy and LB1..LB3");
    let record = broker.wait_client(&client_id);
    let expected = if recursive { s.ip(101) } else { s.ip(12) };
    assert_eq!(
        record["ip_address"].as_str(),
        Some(expected.to_string().as_str()),
        "{id}: X-Real-IP from LB3 (real_ip_recursive {}) should be {expected}: {record}",
        if recursive { "on" } else { "off" }
    );
    let client_local = client.local;
    client.roundtrip();
    // the hop whose address is expected: the client host's connection to LB1, or (recursion
    // off) LB1's connection to LB2, as those LBs logged their peer
    let hop = access_log_peer(&s, if recursive { "lb1" } else { "lb2" });
    assert_eq!(hop.ip(), expected, "{id}: access log peer");
    // X-Real-IP carries no port: the broker may report none, but never a wrong one
    assert!(
        record["port"].is_null() || record["port"].as_u64() == Some(u64::from(hop.port())),
        "{id}: port must be absent or {hop}'s port: {record}"
    );
    e2e::say(format_args!(
        "scenario {id}: ok client={} (client host {}; expected hop {hop}) reported={}",
        client_local,
        s.ip(101),
        e2e::reported(&record)
    ));
}

/// As W4, but no realip at LB3: the broker walks X-Forwarded-For from the right over the trusted
/// LBs itself and takes the port at the same position.
#[test]
fn w4b_broker_walks_xff_recursively() {
    let Some(mut s) = Scenario::start("W4b", 26, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &["--ws-strategy", "trusted", "--ws-recursive"]);
    let lb3 = s.nginx_lb("lb3", Http, "http_ws_append.conf", (31, 32), ws, &[]);
    let cp = client_proxy_and_two_lbs(&mut s, lb3);

    let client = s
        .paho("client", PahoOpts::ws(cp, s.ip(100), "w4b-paho"))
        .expect("client connects through the client-side proxy and LB1..LB3");
    let record = broker.wait_client("w4b-paho");
    client.roundtrip();
    let client_host = access_log_peer(&s, "lb1");
    assert_eq!(client_host.ip(), s.ip(101), "LB1's peer is the client host");
    s.assert_reported(&record, client_host);
}

/// A client straight to the broker with its own X-Forwarded-For: ignored (peer not trusted).
#[test]
fn w5_direct_client_forged_xff_ignored() {
    let Some(mut s) = Scenario::start("W5", 27, &[Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &[]);

    let forged = s.ip(99);
    let mut opts = PahoOpts::ws(ws, s.ip(101), "w5-paho");
    opts.headers = vec![
        format!("X-Forwarded-For: {forged}"),
        "X-Forwarded-Port: 4444".to_owned(),
    ];
    s.paho_reported(&broker, opts, "client connects directly");
    broker.assert_absent(forged, "W5: the forged X-Forwarded-For");
}

/// Client → NGINX `stream` (PROXY) → broker WebSocket listener with PROXY: the PROXY-derived
/// address is the client, and it is also the peer that header trust is decided on.
#[test]
fn w6_proxy_protocol_on_websocket_listener() {
    let Some(mut s) = Scenario::start("W6", 28, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let range = s.lb_range();
    let (broker, ws) = xff_broker(&mut s, &["--ws-proxy-protocol", "--proxy-from", &range]);
    let lb1 = s.nginx_lb("lb1", Stream, "stream_send_proxy.conf", (11, 12), ws, &[]);

    // the client also sends an X-Forwarded-For: the PROXY-derived peer (the client) is not a
    // trusted proxy, so the header must be ignored even though the socket peer (LB1) is trusted
    let forged = s.ip(99);
    let mut opts = PahoOpts::ws(lb1, s.ip(101), "w6-paho");
    opts.headers = vec![format!("X-Forwarded-For: {forged}")];
    s.paho_reported(&broker, opts, "client connects through LB1");
    broker.assert_absent(forged, "W6: the client's own X-Forwarded-For");
}

/// Client → LB1 (NGINX, overwrites) → LB2 (HAProxy `option forwardfor`, which adds a **second**
/// X-Forwarded-For line, and a second X-Forwarded-Port line) → broker walking from the right:
/// the header lines must be combined in order before the walk.
#[test]
fn w7_haproxy_forwardfor_adds_header_lines() {
    let Some(mut s) = Scenario::start("W7", 29, &[Tool::Nginx, Tool::Haproxy, Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &["--ws-strategy", "trusted", "--ws-recursive"]);
    let lb2 = s.addr(21);
    let vars = vec![
        ("LISTEN", lb2.to_string()),
        ("SOURCE", s.ip(22).to_string()),
        ("UPSTREAM", ws.to_string()),
    ];
    s.haproxy("lb2", "http_ws_forwardfor.cfg", &vars, &[lb2]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), lb2, &[]);

    let record = s.paho_reported(
        &broker,
        PahoOpts::ws(lb1, s.ip(101), "w7-paho"),
        "client connects through NGINX and HAProxy",
    );
    e2e::say(format_args!(
        "scenario W7: broker's forwarded report: {}",
        record["forwarded"]
    ));
}

/// The other half of W6: client → LB1 (NGINX `http`, overwrites X-Forwarded-For/-Port) → LB2
/// (NGINX `stream`, PROXY) → broker WebSocket listener with PROXY. The PROXY-derived peer is LB1,
/// a trusted proxy, so its X-Forwarded-For is honoured: the client's address and port.
#[test]
fn w6b_proxy_derived_peer_is_a_trusted_proxy() {
    let Some(mut s) = Scenario::start("W6b", 31, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let range = s.lb_range();
    let (broker, ws) = xff_broker(&mut s, &["--ws-proxy-protocol", "--proxy-from", &range]);
    let lb2 = s.nginx_lb("lb2", Stream, "stream_send_proxy.conf", (21, 22), ws, &[]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), lb2, &[]);

    s.paho_reported(
        &broker,
        PahoOpts::ws(lb1, s.ip(101), "w6b-paho"),
        "client connects through LB1 and LB2",
    );
}

/// Client → LB1 (overwrites X-Forwarded-For with `$remote_addr`, sets no port header) → LB2
/// (appends to X-Forwarded-For, `X-Forwarded-Port "$http_x_forwarded_port, $remote_port"`) →
/// broker walking recursively. The broker receives `X-Forwarded-Port: , <LB1's port>`: the
/// client's position in the port header is empty, so its port is unknown (JSON `null`), never
/// LB1's source port on the LB1 → LB2 hop.
#[test]
fn w8_port_unknown_when_the_first_lb_sets_none() {
    let Some(mut s) = Scenario::start("W8", 61, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, ws) = xff_broker(&mut s, &["--ws-strategy", "trusted", "--ws-recursive"]);
    let lb2 = s.nginx_lb("lb2", Http, "http_ws_append.conf", (21, 22), ws, &[]);
    let lb1 = s.nginx_lb(
        "lb1",
        Http,
        "http_ws_overwrite_addr.conf",
        (11, 12),
        lb2,
        &[],
    );

    let client = s
        .paho("client", PahoOpts::ws(lb1, s.ip(101), "w8-paho"))
        .expect("client connects through LB1 and LB2");
    let record = broker.wait_client("w8-paho");
    let client_local = client.local;
    client.roundtrip();
    assert_eq!(
        record["ip_address"].as_str(),
        Some(client_local.ip().to_string().as_str()),
        "W8: the client host's address: {record}"
    );
    assert!(
        record["port"].is_null(),
        "W8: the client's port is unknown, not LB1's: {record}"
    );
    assert_eq!(
        record["peername"].as_str(),
        Some(client_local.ip().to_string().as_str()),
        "W8: peername without a port: {record}"
    );
    assert_eq!(record["forwarded"]["port_source"], "none", "{record}");
    // The hop whose port must not be reported: LB1's connection to LB2, as LB2 logged it.
    let lb1_hop = access_log_peer(&s, "lb2");
    assert_eq!(lb1_hop.ip(), s.ip(12), "LB2's peer is LB1");
    assert_ne!(record["port"].as_u64(), Some(u64::from(lb1_hop.port())));
    e2e::say(format_args!(
        "scenario W8: ok client={client_local} reported={} (LB1 hop {lb1_hop} not used)",
        e2e::reported(&record)
    ));
}
