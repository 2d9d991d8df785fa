//! Captures what real proxies write and stores it as the seed corpora of the fuzz targets
//! (`fuzz/corpus/<target>/seed-*`, not versioned: ports differ at every run).
//!
//! * HAProxy `send-proxy`, `send-proxy-v2` (plain, with CRC32C and UNIQUE_ID) and NGINX
//!   `proxy_protocol on`, each carrying a real MQTT 3.1.1 or 5.0 session (`mosquitto_pub`
//!   through the proxy): seeds of `header_reader`, `parse_roundtrip` and `mqtt_decode`.
//! * NGINX (`$proxy_add_x_forwarded_for`, appended `X-Forwarded-Port`) and HAProxy
//!   (`option forwardfor`) HTTP forwarding headers over a client-written
//!   `X-Forwarded-For`: seeds of `forwarded_resolver`.
//!
//! Every capture is also checked: the header names the real client, and the bytes after it
//! are the client's.

use realip_test_support as e2e;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use e2e::Block::{Http, Stream};
use e2e::{STEP_TIMEOUT, Scenario, Tool};
use realip::listener::parse_header;

const CLIENT: u8 = 101;

/// A TCP server on `127.N.0.2` that records each connection's bytes, answering an MQTT
/// CONNECT with a CONNACK and an HTTP request with `204`.
struct Capture {
    addr: SocketAddr,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Capture {
    fn start(s: &Scenario) -> Self {
        let listener = TcpListener::bind(s.addr(2)).expect("capture listener");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.send(record(stream));
                });
            }
        });
        Self { addr, rx }
    }

    /// The next recorded connection whose bytes contain `needle` (the proxies' readiness
    /// probes and health checks are skipped).
    fn next_with(&self, needle: &[u8]) -> Vec<u8> {
        loop {
            let bytes = self
                .rx
                .recv_timeout(STEP_TIMEOUT)
                .expect("a connection through the proxy");
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return bytes;
            }
        }
    }
}

/// Reads until the peer closes (or goes quiet for a second), answering as a broker or a web
/// server would so that the client goes on.
fn record(mut stream: TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut bytes = Vec::new();
    let mut answered = false;
    let mut buf = [0; 4096];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
        if answered {
            continue;
        }
        if let Some(mqtt) = after_header(&bytes).filter(|m| m.first() == Some(&0x10)) {
            // CONNACK (3.1.1, or 5.0 with no properties).
            let level = mqtt.get(8).copied().unwrap_or(4);
            let connack: &[u8] = if level == 5 {
                &[0x20, 3, 0, 0, 0]
            } else {
                &[0x20, 2, 0, 0]
            };
            answered = stream.write_all(connack).is_ok();
        } else if bytes.windows(4).any(|w| w == b"\r\n\r\n") && bytes.starts_with(b"GET ") {
            answered = stream
                .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                .is_ok();
        }
    }
    bytes
}

/// The bytes after a complete PROXY header.
fn after_header(bytes: &[u8]) -> Option<&[u8]> {
    match parse_header(bytes, 4096) {
        Ok(Some((_, len))) => Some(&bytes[len..]),
        _ => None,
    }
}

fn corpus(target: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    dir
}

fn write_seed(target: &str, name: &str, prefix: &[u8], bytes: &[u8]) {
    let mut seed = prefix.to_vec();
    seed.extend_from_slice(bytes);
    std::fs::write(corpus(target).join(format!("seed-{name}")), seed).expect("write seed");
}

/// `mosquitto_pub` from the client address through `front`: CONNECT, PUBLISH, DISCONNECT.
fn mosquitto_pub(s: &Scenario, front: SocketAddr, v5: bool, id: &str) {
    let status = Command::new("mosquitto_pub")
        .args([
            "-h",
            &front.ip().to_string(),
            "-p",
            &front.port().to_string(),
        ])
        .args(["-A", &s.ip(CLIENT).to_string()])
        .args(["-V", if v5 { "mqttv5" } else { "mqttv311" }])
        .args(["-i", id, "-t", "seed/topic", "-m", "payload"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("mosquitto_pub");
    assert!(status.success(), "mosquitto_pub through {front}: {status}");
}

/// Checks a captured PROXY connection and writes it as seeds of the header and MQTT targets.
fn seeds_from_proxy(s: &Scenario, bytes: &[u8], name: &str, v5: bool) {
    let (info, len) = parse_header(bytes, 4096)
        .expect("a valid header")
        .expect("a complete header");
    let client = info.source_inet().expect("the client's address");
    assert_eq!(client.ip(), s.ip(CLIENT), "{name}: {info:?}");
    let mqtt = &bytes[len..];
    assert_eq!(
        mqtt.first(),
        Some(&0x10),
        "{name}: MQTT CONNECT after the header"
    );
    assert_eq!(
        mqtt.get(8),
        Some(&if v5 { 5 } else { 4 }),
        "{name}: protocol level"
    );

    write_seed("header_reader", name, &[0, 0], bytes);
    // Optional policy; and the bytes in chunks of 1, 6 and 11 bytes, then the rest.
    write_seed("header_reader", &format!("{name}-optional"), &[1, 0], bytes);
    write_seed(
        "header_reader",
        &format!("{name}-split"),
        &[0, 3, 0, 5, 10],
        bytes,
    );
    write_seed("parse_roundtrip", name, &[0], bytes);
    write_seed(
        "parse_roundtrip",
        &format!("{name}-header"),
        &[0],
        &bytes[..len],
    );
    write_seed("mqtt_decode", name, &[u8::from(v5) | 2, 0], mqtt);
}

#[test]
fn capture_proxy_protocol_seeds() {
    let Some(mut s) = Scenario::start("SEEDS", 60, &[Tool::Haproxy, Tool::Nginx, Tool::Mosquitto])
    else {
        return;
    };
    let capture = Capture::start(&s);

    for (n, (name, options, v5)) in [
        ("haproxy-v1", "send-proxy", false),
        ("haproxy-v2", "send-proxy-v2", true),
        (
            "haproxy-v2-crc32c-unique-id",
            "send-proxy-v2 proxy-v2-options crc32c,unique-id",
            false,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let listen = s.addr(11);
        let vars = vec![
            ("LISTEN", listen.to_string()),
            ("BIND_OPTIONS", String::new()),
            ("SOURCE", s.ip(12).to_string()),
            ("UPSTREAM", capture.addr.to_string()),
            ("SERVER_OPTIONS", options.to_owned()),
        ];
        s.haproxy(&format!("haproxy{n}"), "tcp.cfg", &vars, &[listen]);
        mosquitto_pub(&s, listen, v5, name);
        let bytes = capture.next_with(b"seed/topic");
        seeds_from_proxy(&s, &bytes, name, v5);
    }

    let nginx = s.nginx_lb(
        "nginx",
        Stream,
        "stream_send_proxy.conf",
        (21, 22),
        capture.addr,
        &[],
    );
    mosquitto_pub(&s, nginx, true, "nginx-v1");
    let bytes = capture.next_with(b"seed/topic");
    seeds_from_proxy(&s, &bytes, "nginx-v1", true);
    e2e::say(format_args!(
        "fuzz seeds: HAProxy v1/v2 and NGINX v1 headers with MQTT sessions written to {}",
        corpus("header_reader").display()
    ));
}

/// The values of header `name` in a captured HTTP request, one per line.
fn header_lines(request: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(request);
    text.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

fn http_through(s: &Scenario, front: SocketAddr) {
    let mut stream = e2e::connect_from(s.ip(CLIENT), front).expect("connect to the proxy");
    stream
        .write_all(
            b"GET /mqtt HTTP/1.1\r\nHost: seeds\r\nX-Forwarded-For: 198.51.100.7, 127.60.0.99\r\n\
              X-Forwarded-Port: 4444\r\nConnection: close\r\n\r\n",
        )
        .expect("request");
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    assert!(
        response.starts_with(b"HTTP/1.1 204"),
        "{}",
        String::from_utf8_lossy(&response)
    );
}

#[test]
fn capture_forwarded_header_seeds() {
    let Some(mut s) = Scenario::start("SEEDS-HTTP", 61, &[Tool::Haproxy, Tool::Nginx]) else {
        return;
    };
    let capture = Capture::start(&s);
    let client = s.ip(CLIENT).to_string();

    let nginx = s.nginx_lb(
        "nginx",
        Http,
        "http_ws_append.conf",
        (11, 12),
        capture.addr,
        &[],
    );
    http_through(&s, nginx);
    let nginx_request = capture.next_with(b"GET /mqtt");

    let listen = s.addr(21);
    let vars = vec![
        ("LISTEN", listen.to_string()),
        ("SOURCE", s.ip(22).to_string()),
        ("UPSTREAM", capture.addr.to_string()),
    ];
    s.haproxy("haproxy", "http_ws_forwardfor.cfg", &vars, &[listen]);
    http_through(&s, listen);
    let haproxy_request = capture.next_with(b"GET /mqtt");

    for (name, request) in [("nginx", &nginx_request), ("haproxy", &haproxy_request)] {
        let xff = header_lines(request, "x-forwarded-for");
        let ports = header_lines(request, "x-forwarded-port");
        // The proxy appended the client it saw after what the client wrote.
        assert!(xff.join(", ").ends_with(&client), "{name}: {xff:?}");
        assert!(
            xff.join(", ").starts_with("198.51.100.7"),
            "{name}: {xff:?}"
        );
        let mut lines: Vec<String> = xff.clone();
        lines.extend(ports.iter().map(|p| format!("port:{p}")));
        let text = lines.join("\n");
        // Strategies: x_forwarded_for, trusted_hops, leftmost, and with a port header;
        // flags: recursive or not.
        for (strategy, flags) in [(0u8, 0u8), (0, 1), (1, 4), (2, 0), (5, 1)] {
            write_seed(
                "forwarded_resolver",
                &format!("{name}-{strategy}-{flags}"),
                &[0, strategy, flags],
                text.as_bytes(),
            );
        }
    }
    e2e::say(format_args!(
        "fuzz seeds: NGINX and HAProxy X-Forwarded-For/-Port lines written to {}",
        corpus("forwarded_resolver").display()
    ));
}
