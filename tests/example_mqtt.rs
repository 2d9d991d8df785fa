//! The `mqtt_tcp` and `mqtt_ws` examples as processes, behind real NGINX, with real MQTT
//! clients (paho-mqtt and `mosquitto_pub`) on distinct loopback addresses `127.N.0.x`: the
//! line each example prints for a CONNECT names the client's own address.
#![cfg(all(feature = "listener", feature = "tower", feature = "axum"))]

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use realip_test_support::Block::{Http, Stream};
use realip_test_support::{
    ConnectOutcome, PahoOpts, STEP_TIMEOUT, Scenario, Tool, connect_from, example_bin,
    raw_mqtt_connect, say, wait_for,
};

/// Waits for the example's stdout line for `client_id` and returns it.
fn connect_line(out: &Path, client_id: &str) -> String {
    let prefix = format!("client_id={client_id} ");
    wait_for(STEP_TIMEOUT, || {
        let stdout = fs::read_to_string(out).unwrap_or_default();
        stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| {
        panic!(
            "no line for {client_id} on stdout: {}",
            fs::read_to_string(out).unwrap_or_default()
        )
    })
}

/// The value of `key=` in a `key=value key=value` line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Starts example `name` with `args` on `127.N.0.2`; returns its address and stdout file.
fn start_example(
    s: &mut Scenario,
    name: &str,
    args: &[String],
) -> (SocketAddr, std::path::PathBuf) {
    let bind = s.addr(2);
    let probe_from = s.ip(12);
    let out = s.process(
        name,
        Command::new(example_bin(name))
            .arg(bind.to_string())
            .args(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1"),
        &[(bind, probe_from)],
    );
    (bind, out)
}

/// paho-mqtt and mosquitto_pub → NGINX `stream` (`proxy_protocol on`) → `mqtt_tcp`: the
/// example prints each client's own address, and NGINX's as the peer; a client that connects
/// directly, without a PROXY header, is closed and printed nowhere.
#[test]
fn mqtt_tcp_prints_the_real_client_behind_nginx() {
    let tools = [Tool::Nginx, Tool::Paho, Tool::Mosquitto];
    let Some(mut s) = Scenario::start("example-mqtt-tcp", 61, &tools) else {
        return;
    };
    let (tcp, out) = start_example(&mut s, "mqtt_tcp", &[]);
    let lb = s.nginx_lb("lb1", Stream, "stream_send_proxy.conf", (11, 12), tcp, &[]);

    let paho = s
        .paho("paho", PahoOpts::tcp(lb, s.ip(101), "tcp-paho"))
        .expect("paho connects through NGINX");
    let line = connect_line(&out, "tcp-paho");
    assert_eq!(field(&line, "client"), paho.local.to_string(), "{line}");
    let peer: SocketAddr = field(&line, "peer").parse().expect("peer is IP:PORT");
    assert_eq!(
        peer.ip(),
        s.ip(12),
        "the peer is NGINX's bind address: {line}"
    );
    say(format_args!(
        "example mqtt_tcp: paho {} -> {line}",
        paho.local
    ));

    let status = Command::new("mosquitto_pub")
        .args(["-h", &lb.ip().to_string(), "-p", &lb.port().to_string()])
        .args(["-A", &s.ip(102).to_string(), "-V", "mqttv311"])
        .args(["-i", "tcp-mosquitto", "-t", "realip/example", "-m", "hello"])
        .status()
        .expect("run mosquitto_pub");
    assert!(status.success(), "mosquitto_pub: {status}");
    let line = connect_line(&out, "tcp-mosquitto");
    let client: SocketAddr = field(&line, "client").parse().expect("client is IP:PORT");
    assert_eq!(client.ip(), s.ip(102), "mosquitto_pub's address: {line}");
    say(format_args!(
        "example mqtt_tcp: mosquitto_pub {} -> {line}",
        s.ip(102)
    ));

    let mut direct = connect_from(s.ip(66), tcp).expect("connect directly");
    assert_eq!(
        raw_mqtt_connect(&mut direct, b"", "tcp-direct"),
        ConnectOutcome::Closed,
        "a connection without a PROXY header is closed"
    );
    let stdout = fs::read_to_string(&out).unwrap_or_default();
    assert!(!stdout.contains("tcp-direct"), "{stdout}");
}

/// paho-mqtt over WebSocket → NGINX `http` (overwrites `X-Forwarded-For`/`-Port`) →
/// `mqtt_ws` trusting NGINX's range: the example prints the client's own address and port. A
/// client that forges `X-Forwarded-For`, directly or through an appending NGINX, is printed
/// with its own address.
#[test]
fn mqtt_ws_prints_the_real_client_behind_nginx() {
    let Some(mut s) = Scenario::start("example-mqtt-ws", 62, &[Tool::Nginx, Tool::Paho]) else {
        return;
    };
    let range = s.lb_range();
    let (ws, out) = start_example(&mut s, "mqtt_ws", &[range]);
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), ws, &[]);
    let lb2 = s.nginx_lb("lb2", Http, "http_ws_append.conf", (21, 22), ws, &[]);

    let paho = s
        .paho("paho", PahoOpts::ws(lb1, s.ip(101), "ws-paho"))
        .expect("paho connects through NGINX");
    let line = connect_line(&out, "ws-paho");
    assert_eq!(field(&line, "client"), paho.local.to_string(), "{line}");
    assert_eq!(field(&line, "source"), "x-forwarded-for", "{line}");
    say(format_args!(
        "example mqtt_ws: paho {} -> {line}",
        paho.local
    ));

    let forged = format!("X-Forwarded-For: {}", s.ip(99));
    for (target, client_id) in [(ws, "ws-forged-direct"), (lb2, "ws-forged-appended")] {
        let mut opts = PahoOpts::ws(target, s.ip(101), client_id);
        opts.headers.push(forged.clone());
        let paho = s.paho(client_id, opts).expect("paho connects");
        let line = connect_line(&out, client_id);
        let client = field(&line, "client");
        let ip = client.rsplit_once(':').map_or(client, |(ip, _)| ip);
        assert_eq!(
            ip,
            s.ip(101).to_string(),
            "the forged header is ignored: {line}"
        );
        say(format_args!(
            "example mqtt_ws: {client_id} {} -> {line}",
            paho.local
        ));
    }
}
