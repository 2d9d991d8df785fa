//! End-to-end scenarios T1–T7 and the HAProxy scale-out (MQTT over TCP with PROXY protocol):
//! real NGINX / HAProxy in front of the real `realip-broker`, real MQTT clients.
//! See `tests/SCENARIOS.md` for the topologies and the exact proxy configurations.

use realip_test_support as e2e;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use e2e::Block::Stream;
use e2e::{Broker, ConnectOutcome, PahoOpts, STEP_TIMEOUT, Scenario, Tool};

/// Broker with one MQTT/TCP listener on `127.N.0.<host>` that requires a PROXY header, accepted
/// from `proxy_from` (none: from anyone).
fn tcp_broker(
    s: &mut Scenario,
    name: &str,
    host: u8,
    proxy_from: Option<&str>,
) -> (Broker, SocketAddr) {
    let tcp = s.addr(host);
    let mut args = vec![
        "--tcp".to_owned(),
        tcp.to_string(),
        "--tcp-proxy-protocol".to_owned(),
        "--ws".to_owned(),
        "off".to_owned(),
    ];
    if let Some(range) = proxy_from {
        args.extend(["--proxy-from".to_owned(), range.to_owned()]);
    }
    let probe_from = s.ip(12);
    let broker = s.broker(name, &args, &[(tcp, probe_from)]);
    (broker, tcp)
}

/// [`tcp_broker`] on `127.N.0.2` accepting PROXY headers from the load balancers' range.
fn broker_behind_lbs(s: &mut Scenario) -> (Broker, SocketAddr) {
    let range = s.lb_range();
    tcp_broker(s, "broker", 2, Some(&range))
}

/// LB2 (`127.N.0.21`, connecting from `.22`; NGINX `stream` from `lb2_snippet` with
/// `lb2_extra`) in front of `upstream`, and LB1 (`127.N.0.11`, from `.12`, sends PROXY) in
/// front of LB2. Returns LB1's address.
fn lb1_then_lb2(
    s: &mut Scenario,
    lb2_snippet: &str,
    lb2_extra: &[(&str, String)],
    upstream: SocketAddr,
) -> SocketAddr {
    let lb2 = s.nginx_lb("lb2", Stream, lb2_snippet, (21, 22), upstream, lb2_extra);
    s.nginx_lb("lb1", Stream, "stream_send_proxy.conf", (11, 12), lb2, &[])
}

/// A paho client on `127.N.0.101` through `lb` is reported with its own address and port, with
/// `127.N.0.<last_proxy>` as the socket peer; a mosquitto client through `lb` works too.
fn assert_clients_through(
    s: &mut Scenario,
    broker: &Broker,
    lb: SocketAddr,
    client_id: &str,
    last_proxy: u8,
    expect: &str,
) {
    let record = s.paho_reported(broker, PahoOpts::tcp(lb, s.ip(101), client_id), expect);
    assert_socket_peer(&record, s.ip(last_proxy));
    s.mosquitto_roundtrip(broker, lb, s.ip(101), "a");
}

fn socket_peer_ip(record: &serde_json::Value) -> String {
    let peer = match &record["socket_peer"] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    peer.rsplit_once(':').map_or(peer.clone(), |(ip, _)| {
        ip.trim_matches(['[', ']']).to_owned()
    })
}

fn assert_socket_peer(record: &serde_json::Value, ip: IpAddr) {
    assert_eq!(
        socket_peer_ip(record),
        ip.to_string(),
        "socket_peer should be the last proxy {ip}: {record}"
    );
}

/// Client → NGINX (`proxy_protocol on`) → broker.
#[test]
fn t1_nginx_sends_proxy_protocol() {
    let Some(mut s) = Scenario::start("T1", 1, &[Tool::Nginx, Tool::Paho, Tool::Mosquitto]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb1 = s.nginx_lb("lb1", Stream, "stream_send_proxy.conf", (11, 12), tcp, &[]);

    assert_clients_through(
        &mut s,
        &broker,
        lb1,
        "t1-paho",
        12,
        "client connects through LB1",
    );
}

/// Client → LB1 (sends PROXY) → LB2 (plain pass-through) → broker.
#[test]
fn t2_passthrough_keeps_first_header() {
    let Some(mut s) = Scenario::start("T2", 2, &[Tool::Nginx, Tool::Paho, Tool::Mosquitto]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb1 = lb1_then_lb2(&mut s, "stream_passthrough.conf", &[], tcp);

    assert_clients_through(
        &mut s,
        &broker,
        lb1,
        "t2-paho",
        22,
        "client connects through LB1 and LB2",
    );
}

/// Misconfiguration: LB2 sends its own PROXY header without parsing LB1's, so the broker gets two
/// headers. It must parse only the first (vouching for LB1) and treat the second as the start of
/// the MQTT stream: the client is refused and its address (inside the second header) is never
/// attributed.
#[test]
fn t2_double_header_is_not_parsed_twice() {
    let Some(mut s) = Scenario::start("T2-double", 11, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb1 = lb1_then_lb2(&mut s, "stream_send_proxy.conf", &[], tcp);

    let refused = s.paho("client", PahoOpts::tcp(lb1, s.ip(101), "t2d-paho"));
    let Err(reason) = refused else {
        panic!("T2-double: a second PROXY header must not be parsed as a header");
    };
    e2e::say(format_args!("scenario T2-double: client refused: {reason}"));
    broker.assert_unknown("t2d-paho");
    broker.assert_absent(
        s.ip(101),
        "T2-double: the client address inside the second header",
    );
}

/// Client → LB1 (sends PROXY) → LB2 (parses, trusts LB1, sends its own) → broker.
#[test]
fn t3_reproxy_with_trusted_lb1() {
    let Some(mut s) = Scenario::start("T3", 3, &[Tool::Nginx, Tool::Paho, Tool::Mosquitto]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let trusted = vec![("TRUSTED", s.ip(12).to_string())];
    let lb1 = lb1_then_lb2(&mut s, "stream_reproxy.conf", &trusted, tcp);

    assert_clients_through(
        &mut s,
        &broker,
        lb1,
        "t3-paho",
        22,
        "client connects through LB1 and LB2",
    );
}

/// As T3, but LB2 does not trust LB1: LB2 vouches for LB1's address, never the client's.
#[test]
fn t3n_reproxy_without_trust_reports_lb1() {
    let Some(mut s) = Scenario::start("T3n", 4, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    // LB2 trusts some other host, not LB1 (127.N.0.12)
    let trusted = vec![("TRUSTED", format!("{}/32", s.ip(200)))];
    let lb1 = lb1_then_lb2(&mut s, "stream_reproxy.conf", &trusted, tcp);

    let client = s
        .paho("client", PahoOpts::tcp(lb1, s.ip(101), "t3n-paho"))
        .expect("client connects through LB1 and LB2");
    let record = broker.wait_client("t3n-paho");
    broker.assert_absent(
        client.local.ip(),
        "T3n: the client address LB2 did not trust",
    );
    let client_local = client.local;
    client.roundtrip();
    // LB2 logs its peer, LB1's connection, when the session ends: that is what it vouched for
    let lb1_conn = SocketAddr::new(
        s.ip(12),
        record["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("T3n: a port is reported: {record}")),
    );
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !s
        .read_file("lb2", "access.log")
        .lines()
        .any(|l| l.starts_with(&format!("{} {} ", lb1_conn.ip(), lb1_conn.port())))
    {
        assert!(
            Instant::now() < deadline,
            "T3n: LB2 never logged a session from {lb1_conn}, which the broker reported: {record}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    e2e::say(format_args!(
        "scenario T3n: client {client_local} is not trusted by LB2: expecting LB1's connection"
    ));
    s.assert_reported(&record, lb1_conn);
}

fn haproxy_tcp(
    s: &mut Scenario,
    upstream: SocketAddr,
    bind_options: &str,
    server_options: &str,
) -> SocketAddr {
    let listen = s.addr(11);
    let vars = vec![
        ("LISTEN", listen.to_string()),
        ("BIND_OPTIONS", bind_options.to_owned()),
        ("SOURCE", s.ip(12).to_string()),
        ("UPSTREAM", upstream.to_string()),
        ("SERVER_OPTIONS", server_options.to_owned()),
    ];
    s.haproxy("haproxy", "tcp.cfg", &vars, &[listen]);
    listen
}

/// Every string and number of a JSON value, flattened (the broker's PROXY/TLV report).
fn json_text(value: &serde_json::Value) -> String {
    e2e::json_strings(value)
        .into_iter()
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect()
}

/// Asserts that the broker's `proxy` report lists a TLV of each type in `types`.
fn assert_tlv_types(record: &serde_json::Value, types: &[(u8, &str)]) {
    let strings = e2e::json_strings(&record["proxy"]);
    for (kind, name) in types {
        assert!(
            strings
                .iter()
                .any(|(k, v)| k.ends_with(".type") && *v == kind.to_string()),
            "T4: a {name} TLV (type {kind:#04x}) should be listed in the broker's record: {record}"
        );
    }
}

/// Client → HAProxy `send-proxy` (v1) → broker.
#[test]
fn t4_haproxy_send_proxy_v1() {
    let Some(mut s) = Scenario::start("T4-v1", 5, &[Tool::Haproxy, Tool::Paho, Tool::Mosquitto])
    else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb = haproxy_tcp(&mut s, tcp, "", "send-proxy");

    assert_clients_through(
        &mut s,
        &broker,
        lb,
        "t4v1-paho",
        12,
        "client connects through HAProxy",
    );
}

/// Client → HAProxy `send-proxy-v2` with `crc32c,unique-id,authority` TLVs → broker.
#[test]
fn t4_haproxy_send_proxy_v2_tlvs() {
    let Some(mut s) = Scenario::start("T4-v2", 6, &[Tool::Haproxy, Tool::Paho]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb = haproxy_tcp(
        &mut s,
        tcp,
        "",
        "send-proxy-v2 proxy-v2-options crc32c,unique-id,authority",
    );

    let client = s
        .paho("client", PahoOpts::tcp(lb, s.ip(101), "t4v2-paho"))
        .expect("client connects through HAProxy");
    let record = broker.wait_client("t4v2-paho");
    s.assert_reported(&record, client.local);
    let unique_id = format!("e2e-{}-{}", client.local.ip(), client.local.port());
    let proxy = json_text(&record["proxy"]);
    assert!(
        proxy.contains(&unique_id),
        "T4: the UNIQUE_ID TLV {unique_id:?} should be visible in the broker's record: {record}"
    );
    assert_tlv_types(&record, &[(0x03, "CRC32C"), (0x05, "UNIQUE_ID")]);
    client.roundtrip();

    // CRC32C is checked: the same kind of header from the LB's address, once with a correct
    // checksum (accepted) and once with one bit flipped (rejected, nothing attributed)
    let lb_addr = s.ip(12);
    for (corrupt, host) in [(false, 77), (true, 99)] {
        let claimed = SocketAddr::new(s.ip(host), 4444);
        let id = format!("t4v2-crc-{}", if corrupt { "bad" } else { "good" });
        let mut stream = e2e::connect_from(lb_addr, tcp).expect("connect as the LB");
        let outcome = e2e::raw_mqtt_connect(
            &mut stream,
            &e2e::pp2_with_crc32c(claimed, tcp, corrupt),
            &id,
        );
        if corrupt {
            assert_eq!(
                outcome,
                ConnectOutcome::Closed,
                "T4: a wrong CRC32C must be rejected"
            );
            broker.assert_unknown(&id);
            broker.assert_absent(
                claimed.ip(),
                "T4-v2: the address of a header with a bad CRC32C",
            );
        } else {
            assert_eq!(
                outcome,
                ConnectOutcome::Connack(0),
                "T4: a correct CRC32C is accepted"
            );
            s.assert_reported(&broker.wait_client(&id), claimed);
        }
    }
}

/// Client → HAProxy TLS frontend, `send-proxy-v2-ssl` (SSL TLV) + authority (SNI) → broker.
#[test]
fn t4_haproxy_tls_send_proxy_v2_ssl() {
    let Some(mut s) = Scenario::start("T4-tls", 7, &[Tool::Haproxy, Tool::Paho]) else {
        return;
    };
    let sni = "broker.e2e.test";
    let pem = s.self_signed_pem(sni);
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb = haproxy_tcp(
        &mut s,
        tcp,
        &format!(" ssl crt {}", pem.display()),
        "send-proxy-v2-ssl proxy-v2-options crc32c,unique-id,authority",
    );

    let mut opts = PahoOpts::tcp(lb, s.ip(101), "t4tls-paho");
    opts.tls_sni = Some(sni.to_owned());
    let record = s.paho_reported(&broker, opts, "TLS client connects through HAProxy");
    let proxy = json_text(&record["proxy"]);
    assert!(
        proxy.contains(sni),
        "T4: the AUTHORITY TLV (SNI {sni}) should be visible in the broker's record: {record}"
    );
    assert!(
        proxy.contains("TLSv1."),
        "T4: the SSL TLV (version sub-TLV) should be visible in the broker's record: {record}"
    );
    assert_tlv_types(
        &record,
        &[
            (0x02, "AUTHORITY"),
            (0x03, "CRC32C"),
            (0x05, "UNIQUE_ID"),
            (0x20, "SSL"),
        ],
    );
}

/// A client that talks MQTT straight to a listener requiring PROXY is closed; LB clients work.
#[test]
fn t5_direct_client_without_header_is_closed() {
    let Some(mut s) = Scenario::start("T5", 8, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    // requires a PROXY header from everybody
    let (broker, tcp) = tcp_broker(&mut s, "broker", 2, None);
    let lb1 = s.nginx_lb("lb1", Stream, "stream_send_proxy.conf", (11, 12), tcp, &[]);

    let direct = s.paho("direct", PahoOpts::tcp(tcp, s.ip(66), "t5-direct"));
    let Err(refused) = direct else {
        panic!("T5: a client without PROXY header must not get a CONNACK");
    };
    e2e::say(format_args!(
        "scenario T5: direct client refused: {refused}"
    ));
    let line = broker.wait_log_line("a line about the direct client", |l| {
        e2e::contains_ip(l, &s.ip(66).to_string())
    });
    e2e::say(format_args!("scenario T5: broker log: {line}"));

    s.paho_reported(
        &broker,
        PahoOpts::tcp(lb1, s.ip(101), "t5-paho"),
        "clients behind the LB are unaffected",
    );
    broker.assert_unknown("t5-direct");
    broker.assert_absent(s.ip(66), "T5: the direct client's address");
}

/// An untrusted host sends a forged PROXY header: rejected, nothing attributed to the forgery.
#[test]
fn t6_forged_header_from_untrusted_host() {
    let Some(mut s) = Scenario::start("T6", 9, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let lb1 = s.nginx_lb("lb1", Stream, "stream_send_proxy.conf", (11, 12), tcp, &[]);

    let attacker = s.ip(66);
    let forged = s.ip(99);
    let v1 = format!("PROXY TCP4 {forged} {} 4444 {}\r\n", tcp.ip(), tcp.port()).into_bytes();
    let forged_v2 = {
        let mut h = e2e::PP2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0, 12]);
        if let (IpAddr::V4(f), IpAddr::V4(d)) = (forged, tcp.ip()) {
            h.extend_from_slice(&f.octets());
            h.extend_from_slice(&d.octets());
        }
        h.extend_from_slice(&4444u16.to_be_bytes());
        h.extend_from_slice(&tcp.port().to_be_bytes());
        h
    };
    for (tag, header) in [("v1", v1), ("v2", forged_v2)] {
        let mut stream = e2e::connect_from(attacker, tcp).expect("attacker connects");
        let outcome = e2e::raw_mqtt_connect(&mut stream, &header, &format!("t6-forged-{tag}"));
        assert_eq!(
            outcome,
            ConnectOutcome::Closed,
            "T6: a forged {tag} header from an untrusted host must be rejected"
        );
    }

    let line = broker.wait_log_line("a line about the rejected attacker", |l| {
        e2e::contains_ip(l, &attacker.to_string())
    });
    e2e::say(format_args!("scenario T6: broker log: {line}"));

    s.paho_reported(
        &broker,
        PahoOpts::tcp(lb1, s.ip(101), "t6-paho"),
        "clients behind the LB are unaffected",
    );
    broker.assert_unknown("t6-forged-v1");
    broker.assert_unknown("t6-forged-v2");
    broker.assert_absent(forged, "T6: the forged address");
    broker.assert_absent(attacker, "T6: the attacker's address");
}

/// `show stat` over HAProxy's stats socket: `check_status` of every server of `backend`.
fn haproxy_check_status(socket: &std::path::Path, backend: &str) -> Vec<(String, String)> {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::os::unix::net::UnixStream::connect(socket) else {
        return Vec::new();
    };
    let _ = conn.write_all(b"show stat\n");
    let mut csv = String::new();
    let _ = conn.read_to_string(&mut csv);
    let mut lines = csv.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cols: Vec<&str> = header.trim_start_matches("# ").split(',').collect();
    let col = |name: &str| cols.iter().position(|c| *c == name);
    let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("check_status")) else {
        return Vec::new();
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f.get(px) == Some(&backend) && f.get(sv) != Some(&"BACKEND"))
        .map(|f| {
            // "* L4OK": HAProxy marks a check that is running right now with "* "
            let status = f.get(st).copied().unwrap_or("").trim_start_matches("* ");
            (f[sv].to_owned(), status.to_owned())
        })
        .collect()
}

/// HAProxy health checks (PROXY v2 LOCAL, and connect-and-close) are quiet; a LOCAL header
/// means "use the socket's own addresses" even when it carries an address block.
#[test]
fn t7_health_checks_and_local_command() {
    let Some(mut s) = Scenario::start("T7", 10, &[Tool::Haproxy, Tool::Paho]) else {
        return;
    };
    let (broker, tcp) = broker_behind_lbs(&mut s);
    let log_before = broker.log().len();
    let listen = s.addr(11);
    let vars = vec![
        ("LISTEN", listen.to_string()),
        ("SOURCE", s.ip(12).to_string()),
        ("UPSTREAM", tcp.to_string()),
        ("PORT", tcp.port().to_string()),
    ];
    let dir = s.haproxy("haproxy", "health.cfg", &vars, &[listen]);
    let socket = dir.join("haproxy.sock");

    // both servers' checks pass (L4OK) ...
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let status = haproxy_check_status(&socket, "brokers");
        if status.len() == 2 && status.iter().all(|(_, st)| st == "L4OK") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "T7: HAProxy checks never passed: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // ... and keep running every 200 ms: let a few more rounds hit the broker
    std::thread::sleep(Duration::from_millis(1200));
    let status = haproxy_check_status(&socket, "brokers");
    assert!(
        status.iter().all(|(_, st)| st == "L4OK"),
        "T7: checks must stay up: {status:?}"
    );
    let log = broker.log();
    // checked at the end, so that the other T7 checks still run and report
    // the checks did reach the broker (it logs connections at debug level), so the absence of
    // warnings below means something
    let lb_ip = s.ip(12).to_string();
    let check_lines = log[log_before..]
        .lines()
        .filter(|l| e2e::contains_ip(l, &lb_ip))
        .count();
    assert!(
        check_lines >= 4,
        "T7: expected the broker to log (at debug) the health-check connections from {lb_ip}, \
         found {check_lines} lines"
    );
    // (the harness's own readiness probe through HAProxy, from 127.N.0.250, is not a check)
    let probe = s.ip(250).to_string();
    let noisy: Vec<String> = log[log_before..]
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .filter(|l| !e2e::contains_ip(l, &probe))
        .map(str::to_owned)
        .collect();

    // a LOCAL header carrying a (meaningless) address block, then MQTT: socket addresses win
    let lb_addr = s.ip(12);
    let mut stream = e2e::connect_from(lb_addr, tcp).expect("connect as the LB");
    let local = stream.local_addr().expect("local addr");
    let header = e2e::pp2_local_with_addresses(SocketAddr::new(s.ip(99), 4444), tcp);
    assert_eq!(
        e2e::raw_mqtt_connect(&mut stream, &header, "t7-local"),
        ConnectOutcome::Connack(0),
        "T7: MQTT after a LOCAL header must work"
    );
    let record = broker.wait_client("t7-local");
    s.assert_reported(&record, local);
    broker.assert_absent(s.ip(99), "T7: the address block of a LOCAL header");
    drop(stream);

    s.paho_reported(
        &broker,
        PahoOpts::tcp(listen, s.ip(101), "t7-paho"),
        "client connects through the checked HAProxy",
    );

    assert!(
        noisy.is_empty(),
        "T7: health checks must close quietly (no warn/error log lines), got:\n{}",
        noisy.join("\n")
    );
    e2e::say(format_args!(
        "scenario T7: ok health checks (LOCAL and connect-and-close) logged no warning"
    ));
}

/// HAProxy balancing over two brokers with `send-proxy-v2`: each client is reported with its real
/// address by whichever broker it landed on.
#[test]
fn scale_out_haproxy_two_brokers() {
    let Some(mut s) = Scenario::start("SCALE", 30, &[Tool::Haproxy, Tool::Paho]) else {
        return;
    };
    let range = s.lb_range();
    let (broker1, tcp1) = tcp_broker(&mut s, "broker1", 2, Some(&range));
    let (broker2, tcp2) = tcp_broker(&mut s, "broker2", 3, Some(&range));
    let listen = s.addr(11);
    let vars = vec![
        ("LISTEN", listen.to_string()),
        ("SOURCE", s.ip(12).to_string()),
        ("UPSTREAM1", tcp1.to_string()),
        ("UPSTREAM2", tcp2.to_string()),
    ];
    s.haproxy("haproxy", "scale.cfg", &vars, &[listen]);

    let mut clients = Vec::new();
    let mut landed = [0usize; 2];
    for n in 0..4u8 {
        let id = format!("scale-paho-{n}");
        let client = s
            .paho(&id, PahoOpts::tcp(listen, s.ip(101 + n), &id))
            .expect("client connects through HAProxy");
        let deadline = Instant::now() + STEP_TIMEOUT;
        let (which, record) = loop {
            let found = [&broker1, &broker2].iter().enumerate().find_map(|(i, b)| {
                let (status, body) = b.get(&format!("/api/v5/clients/{id}"));
                (status == 200).then(|| (i, serde_json::from_str::<serde_json::Value>(&body)))
            });
            if let Some((i, record)) = found {
                break (i, record.expect("client record is JSON"));
            }
            assert!(Instant::now() < deadline, "{id} is known to neither broker");
            std::thread::sleep(Duration::from_millis(25));
        };
        landed[which] += 1;
        s.assert_reported(&record, client.local);
        e2e::say(format_args!(
            "scenario SCALE: {id} landed on broker{}",
            which + 1
        ));
        clients.push(client);
    }
    assert!(
        landed.iter().all(|&n| n > 0),
        "round robin should spread 4 clients over both brokers: {landed:?}"
    );
    for client in clients {
        client.roundtrip();
    }
}

/// `tests/SCENARIOS.md` shows every configuration template verbatim, so the documented snippets
/// are exactly the ones the scenarios run.
#[test]
fn templates_in_scenarios_md_match() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let doc = std::fs::read_to_string(root.join("SCENARIOS.md")).expect("tests/SCENARIOS.md");
    let mut checked = 0;
    for dir in ["nginx", "haproxy"] {
        for entry in std::fs::read_dir(root.join("templates").join(dir)).expect("templates") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("template");
            assert!(
                doc.contains(&text),
                "tests/SCENARIOS.md does not show {} verbatim",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "expected the NGINX and HAProxy templates, found {checked}"
    );
}

/// T1 and T4 over IPv6 (`::1`): NGINX sends a v1 `TCP6` header, HAProxy a v2 INET6 one; the
/// broker reports the client's IPv6 address and port. Every hop is `::1`, so the port is what
/// proves the header was used: it is the client's, not the proxy's outgoing one.
#[test]
fn t1_t4_ipv6_loopback() {
    // an extra scenario: containers sometimes run without IPv6, even on loopback
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        e2e::say(format_args!(
            "!!!!!!!! SKIPPED scenario T1-T4-v6: no IPv6 loopback ({e}) !!!!!!!!"
        ));
        return;
    }
    let Some(mut s) = Scenario::start("T1-T4-v6", 12, &[Tool::Nginx, Tool::Haproxy, Tool::Paho])
    else {
        return;
    };
    let loopback = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
    let tcp = s.addr_v6();
    let args = [
        "--tcp".to_owned(),
        tcp.to_string(),
        "--tcp-proxy-protocol".to_owned(),
        "--proxy-from".to_owned(),
        "::1/128".to_owned(),
        "--ws".to_owned(),
        "off".to_owned(),
    ];
    let broker = s.broker("broker", &args, &[(tcp, loopback)]);
    let nginx = s.addr_v6();
    let vars = vec![
        ("LISTEN", nginx.to_string()),
        ("BIND", loopback.to_string()),
        ("UPSTREAM", tcp.to_string()),
    ];
    s.nginx("nginx", Stream, "stream_send_proxy.conf", &vars, &[nginx]);
    let haproxy = s.addr_v6();
    let vars = vec![
        ("LISTEN", haproxy.to_string()),
        ("BIND_OPTIONS", String::new()),
        // HAProxy reads `::1` as host `:` port 1: IPv6 needs brackets here
        ("SOURCE", format!("[{loopback}]")),
        ("UPSTREAM", tcp.to_string()),
        (
            "SERVER_OPTIONS",
            "send-proxy-v2 proxy-v2-options crc32c,unique-id".to_owned(),
        ),
    ];
    s.haproxy("haproxy", "tcp.cfg", &vars, &[haproxy]);

    for (via, lb) in [("nginx", nginx), ("haproxy", haproxy)] {
        let id = format!("v6-{via}-paho");
        let client = s
            .paho(&id, PahoOpts::tcp(lb, loopback, &id))
            .expect("client connects over IPv6");
        let record = broker.wait_client(&id);
        assert_eq!(
            record["proxy"]["source"].as_str().map(str::to_owned),
            Some(client.local.to_string()),
            "{via}: the header's source is the client's [::1]:port: {record}"
        );
        s.assert_reported(&record, client.local);
        client.roundtrip();
    }
}

/// T3 across address families: NGINX's stream realip module re-encodes the client it
/// trusts with its own listening address as the destination, so a middle tier of the other
/// family writes a v1 line that mixes them (`PROXY TCP6 <v6 client> <v4 LB2> ...`, or
/// `PROXY TCP4 <v4 client> <v6 LB2> ...`). The broker reports the client's address and port.
#[test]
fn t3_mixed_families_ipv6_client_through_an_ipv4_middle_tier() {
    t3_mixed_families("T3-mixed-v6v4", 13, true);
}

/// The reverse of [`t3_mixed_families_ipv6_client_through_an_ipv4_middle_tier`]: an IPv4
/// client, LB2 on `[::1]`, and an IPv6 hop to the broker.
#[test]
fn t3_mixed_families_ipv4_client_through_an_ipv6_middle_tier() {
    t3_mixed_families("T3-mixed-v4v6", 14, false);
}

/// Client → LB1 (NGINX, sends PROXY) → LB2 (NGINX `stream_reproxy.conf`, trusting LB1) →
/// broker, with the client and LB1's listener in one family (IPv6 when `client_v6`) and every
/// other hop in the other: IPv4 hops are `127.N.0.x` (LB1 on `.11`, connecting from `.12`; LB2
/// on `.21`, from `.22`; the broker on `.2`), IPv6 hops are `[::1]`.
fn t3_mixed_families(name: &'static str, net: u8, client_v6: bool) {
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        e2e::say(format_args!(
            "!!!!!!!! SKIPPED scenario {name}: no IPv6 loopback ({e}) !!!!!!!!"
        ));
        return;
    }
    let Some(mut s) = Scenario::start(name, net, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let v6 = IpAddr::from(std::net::Ipv6Addr::LOCALHOST);
    // A listening address and a source address on the client's side or the other one.
    let client_side = |s: &Scenario, host: u8| {
        if client_v6 { s.addr_v6() } else { s.addr(host) }
    };
    let middle_side = |s: &Scenario, host: u8| {
        if client_v6 { s.addr(host) } else { s.addr_v6() }
    };
    let middle_ip = |s: &Scenario, host: u8| if client_v6 { s.ip(host) } else { v6 };

    let tcp = middle_side(&s, 2);
    let trusted = if client_v6 {
        s.lb_range()
    } else {
        "::1/128".to_owned()
    };
    let args = [
        "--tcp".to_owned(),
        tcp.to_string(),
        "--tcp-proxy-protocol".to_owned(),
        "--proxy-from".to_owned(),
        trusted,
        "--ws".to_owned(),
        "off".to_owned(),
    ];
    let broker = s.broker("broker", &args, &[(tcp, middle_ip(&s, 12))]);
    let lb2 = middle_side(&s, 21);
    let vars = vec![
        ("LISTEN", lb2.to_string()),
        ("BIND", middle_ip(&s, 22).to_string()),
        ("UPSTREAM", tcp.to_string()),
        ("TRUSTED", middle_ip(&s, 12).to_string()),
    ];
    s.nginx("lb2", Stream, "stream_reproxy.conf", &vars, &[lb2]);
    let lb1 = client_side(&s, 11);
    let vars = vec![
        ("LISTEN", lb1.to_string()),
        ("BIND", middle_ip(&s, 12).to_string()),
        ("UPSTREAM", lb2.to_string()),
    ];
    s.nginx("lb1", Stream, "stream_send_proxy.conf", &vars, &[lb1]);

    let (client_ip, id, line) = if client_v6 {
        (v6, "t3-mixed-v6", "a TCP6 line with its own IPv4 address")
    } else {
        (
            s.ip(101),
            "t3-mixed-v4",
            "a TCP4 line with its own IPv6 address",
        )
    };
    let client = s
        .paho("client", PahoOpts::tcp(lb1, client_ip, id))
        .expect("the client connects through LB1 and LB2 of the other family");
    let record = broker.wait_client(id);
    assert_eq!(
        record["proxy"]["destination"].as_str().map(str::to_owned),
        Some(lb2.to_string()),
        "LB2 wrote {line} as the destination: {record}"
    );
    s.assert_reported(&record, client.local);
    assert_socket_peer(&record, middle_ip(&s, 22));
    client.roundtrip();
}
