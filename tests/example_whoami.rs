//! The `whoami` example's documented contract (its command line, its "listening on" line and
//! its JSON answer), driven as a separate process with real HTTP/1.1 requests from distinct
//! loopback addresses `127.N.0.x` (see `tests/e2e/mod.rs` for the address plan), directly, with
//! PROXY headers, and behind a real NGINX.
#![cfg(all(feature = "listener", feature = "tower", feature = "axum"))]

mod e2e;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::Block::Http;
use e2e::{STEP_TIMEOUT, Scenario, Tool, connect_from, contains_ip};
use realip::listener::ProxyHeader;
use serde_json::{Value, json};

fn example_path() -> PathBuf {
    e2e::example_binary("whoami", "listener,tower,axum")
}

/// Starts `whoami --bind 127.N.0.2:PORT ARGS…` as one of the scenario's processes (killed when
/// the scenario is dropped), waits until it accepts connections (probed from
/// `127.N.0.<probe_host>`) and checks its documented stdout line. Returns the bound address.
fn whoami(s: &mut Scenario, args: &[&str], probe_host: u8) -> SocketAddr {
    let bind = s.addr(2);
    let probe_from = s.ip(probe_host);
    let proxy_protocol = args.contains(&"--proxy-protocol");
    let out = s.process(
        "whoami",
        Command::new(example_path())
            .arg("--bind")
            .arg(bind.to_string())
            .args(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1"),
        &[(bind, probe_from)],
    );
    let expected = if proxy_protocol {
        format!("listening on {bind} (PROXY protocol)")
    } else {
        format!("listening on {bind}")
    };
    // the line is printed right after bind(), so it may trail the first accepted probe a bit
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let stdout = fs::read_to_string(&out).unwrap_or_default();
        if stdout.lines().any(|l| l == expected) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "whoami's stdout lacks {expected:?}: {stdout}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    bind
}

/// One `GET path` over HTTP/1.1 from source address `src` to `dst`, preceded by `prefix` (a
/// PROXY header) on the same connection and carrying the extra header lines `headers` (a name
/// may repeat). Returns the client's own socket address and the JSON answer.
fn get(
    src: IpAddr,
    dst: SocketAddr,
    prefix: &[u8],
    path: &str,
    headers: &[(&str, &str)],
) -> (SocketAddr, Value) {
    let mut stream = connect_from(src, dst).unwrap_or_else(|e| panic!("connect {dst}: {e}"));
    let local = stream.local_addr().unwrap();
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    let mut request = prefix.to_vec();
    write!(request, "GET {path} HTTP/1.1\r\nHost: {dst}\r\n").unwrap();
    for (name, value) in headers {
        write!(request, "{name}: {value}\r\n").unwrap();
    }
    request.extend_from_slice(b"Connection: close\r\n\r\n");
    stream.write_all(&request).unwrap();
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("reading the answer from {dst}: {e}"));
    let text = String::from_utf8(raw).expect("UTF-8 answer");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed answer: {text:?}"));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 200 "), "status: {text}");
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("application/json"),
        "{text}"
    );
    if let Some(len) = header("content-length") {
        assert_eq!(len.parse::<usize>().ok(), Some(body.len()), "{text}");
    }
    let value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {body:?}"));
    e2e::say(format_args!("whoami from {local}: {value}"));
    (local, value)
}

/// Asserts the answer's keys, and that it reports the client `ip` (port `port`) from `source`.
fn assert_client(answer: &Value, ip: &str, port: Option<u16>, source: &str) {
    let mut keys: Vec<&str> = answer
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "client_ip",
            "client_port",
            "decision",
            "headers",
            "socket_peer",
            "source",
            "transport_peer"
        ],
        "{answer}"
    );
    assert_eq!(answer["client_ip"], ip, "client_ip: {answer}");
    assert_eq!(answer["client_port"], json!(port), "client_port: {answer}");
    assert_eq!(answer["source"], source, "source: {answer}");
}

/// (1) A direct request: the client is the request's own socket address.
#[test]
fn direct_request_reports_the_socket_address() {
    let mut s = Scenario::start("whoami-direct", 41, &[]).unwrap();
    let range = s.lb_range();
    let server = whoami(&mut s, &["--trusted-proxy", &range], 250);

    for path in ["/", "/any/path?x=1"] {
        let (local, answer) = get(s.ip(101), server, b"", path, &[]);
        assert_client(
            &answer,
            &local.ip().to_string(),
            Some(local.port()),
            "socket",
        );
        assert_eq!(answer["socket_peer"], local.to_string(), "{answer}");
        assert_eq!(answer["transport_peer"], local.to_string(), "{answer}");
        assert_eq!(answer["headers"], json!({}), "{answer}");
        let decision = answer["decision"].as_str().unwrap();
        assert!(decision.starts_with("transport peer"), "{answer}");
    }
}

/// (2) W5: a forged X-Forwarded-For (and port) from a client outside the trusted range is
/// ignored, while the same headers from a trusted peer are believed.
#[test]
fn forged_xff_from_an_untrusted_client_is_ignored() {
    let mut s = Scenario::start("whoami-forged", 42, &[]).unwrap();
    let range = s.lb_range();
    let server = whoami(&mut s, &["--trusted-proxy", &range], 250);
    let forged = s.ip(99).to_string();
    let headers = [
        ("X-Forwarded-For", forged.as_str()),
        ("X-Forwarded-Port", "1"),
    ];

    let (local, answer) = get(s.ip(101), server, b"", "/", &headers);
    assert_client(
        &answer,
        &local.ip().to_string(),
        Some(local.port()),
        "socket",
    );
    assert_eq!(answer["socket_peer"], local.to_string(), "{answer}");
    assert_eq!(answer["transport_peer"], local.to_string(), "{answer}");
    assert_eq!(
        answer["decision"], "transport peer: transport peer is not a trusted proxy",
        "{answer}"
    );
    for field in ["client_ip", "socket_peer", "transport_peer", "decision"] {
        let text = answer[field].as_str().unwrap_or_default();
        assert!(
            !contains_ip(text, &forged),
            "{field} names {forged}: {answer}"
        );
    }
    // listed as received, but not believed
    assert_eq!(
        answer["headers"],
        json!({"x-forwarded-for": [forged], "x-forwarded-port": ["1"]}),
        "{answer}"
    );

    // the same headers from the LB range are believed: the server does read them
    let (local, answer) = get(s.ip(12), server, b"", "/", &headers);
    assert_client(&answer, &forged, Some(1), "x-forwarded-for");
    assert_eq!(answer["socket_peer"], local.to_string(), "{answer}");
}

/// (3) W1: client → real NGINX (`tests/templates/nginx/http_ws_overwrite.conf`, the W1
/// configuration: overwrites X-Forwarded-For/-Port with its peer, `proxy_bind` LB1's address;
/// it proxies `/mqtt`, and whoami answers any path) → whoami trusting the LB range: the
/// client's own socket address, even when it forges X-Forwarded-For, and NGINX's address as the
/// socket peer.
#[test]
fn w1_through_nginx_reports_the_client_socket_address() {
    let Some(mut s) = Scenario::start("whoami-W1", 43, &[Tool::Nginx]) else {
        return;
    };
    let range = s.lb_range();
    let server = whoami(
        &mut s,
        &[
            "--trusted-proxy",
            &range,
            "--port-header",
            "X-Forwarded-Port",
        ],
        12,
    );
    let lb1 = s.nginx_lb("lb1", Http, "http_ws_overwrite.conf", (11, 12), server, &[]);
    let forged = s.ip(99).to_string();

    for headers in [vec![], vec![("X-Forwarded-For", forged.as_str())]] {
        let (local, answer) = get(s.ip(101), lb1, b"", "/mqtt", &headers);
        assert_client(
            &answer,
            &local.ip().to_string(),
            Some(local.port()),
            "x-forwarded-for",
        );
        let socket_peer: SocketAddr = answer["socket_peer"]
            .as_str()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("socket_peer: {answer}"));
        assert_eq!(socket_peer.ip(), s.ip(12), "NGINX's proxy_bind: {answer}");
        assert_eq!(answer["transport_peer"], answer["socket_peer"], "{answer}");
        assert_eq!(
            answer["decision"], "header x-forwarded-for entry 0 of 1 from the right",
            "{answer}"
        );
        assert_eq!(
            answer["headers"],
            json!({
                "x-forwarded-for": [local.ip().to_string()],
                "x-forwarded-port": [local.port().to_string()],
            }),
            "{answer}"
        );
        assert!(
            !contains_ip(&answer.to_string(), &forged),
            "the forged {forged} must appear nowhere: {answer}"
        );
    }
}

/// (4) `--proxy-protocol`: a PROXY v1 or v2 header, then an HTTP request on the same
/// connection; the client is the header's source.
#[test]
fn proxy_protocol_header_source_is_the_client() {
    let mut s = Scenario::start("whoami-pp", 44, &[]).unwrap();
    let server = whoami(&mut s, &["--proxy-protocol"], 250);

    let cases = [
        (
            "v1",
            ProxyHeader::v1("192.0.2.1:5000".parse().unwrap(), server).to_bytes(),
            "192.0.2.1",
            5000,
        ),
        (
            "v2",
            ProxyHeader::v2("198.51.100.9:9".parse().unwrap(), server).to_bytes(),
            "198.51.100.9",
            9,
        ),
        (
            "v2 IPv6",
            ProxyHeader::v2(
                "[2001:db8::7]:443".parse().unwrap(),
                "[2001:db8::2]:80".parse().unwrap(),
            )
            .to_bytes(),
            "2001:db8::7",
            443,
        ),
    ];
    for (version, header, ip, port) in cases {
        let (local, answer) = get(s.ip(101), server, &header, "/", &[]);
        assert_client(&answer, ip, Some(port), "proxy-protocol");
        assert_eq!(
            answer["socket_peer"],
            local.to_string(),
            "{version}: {answer}"
        );
        assert_eq!(
            answer["transport_peer"],
            SocketAddr::new(ip.parse().unwrap(), port).to_string(),
            "{version}: {answer}"
        );
        assert_eq!(answer["headers"], json!({}), "{version}: {answer}");
    }
}

/// (5) `--strategy forwarded`: RFC 7239 `Forwarded: for="[v6]:port"` from a trusted peer.
#[test]
fn forwarded_header_from_a_trusted_peer() {
    let mut s = Scenario::start("whoami-fwd", 45, &[]).unwrap();
    let range = s.lb_range();
    let server = whoami(
        &mut s,
        &["--strategy", "forwarded", "--trusted-proxy", &range],
        250,
    );
    let forwarded = r#"for="[2001:db8::1]:4711""#;

    let (local, answer) = get(s.ip(12), server, b"", "/", &[("Forwarded", forwarded)]);
    assert_client(&answer, "2001:db8::1", Some(4711), "forwarded");
    assert_eq!(answer["socket_peer"], local.to_string(), "{answer}");
    assert_eq!(answer["transport_peer"], local.to_string(), "{answer}");
    assert_eq!(
        answer["headers"],
        json!({"forwarded": [forwarded]}),
        "{answer}"
    );

    // the same header from outside the range is not believed
    let (local, answer) = get(s.ip(101), server, b"", "/", &[("Forwarded", forwarded)]);
    assert_client(
        &answer,
        &local.ip().to_string(),
        Some(local.port()),
        "socket",
    );
}

/// (6) `headers` lists every forwarding header line as received: repeated lines each, in
/// order, and nothing that is not forwarding-related.
#[test]
fn headers_lists_every_forwarding_line_in_order() {
    let mut s = Scenario::start("whoami-lines", 46, &[]).unwrap();
    let range = s.lb_range();
    let server = whoami(&mut s, &["--trusted-proxy", &range], 250);
    let lb = s.ip(11).to_string();
    let first = format!("198.51.100.1, {lb}");

    let (local, answer) = get(
        s.ip(12),
        server,
        b"",
        "/",
        &[
            ("X-Forwarded-For", first.as_str()),
            ("X-Custom", "not listed"),
            ("Via", "1.1 lb"),
            ("X-Forwarded-For", "203.0.113.7"),
            ("X-Forwarded-Proto", "http"),
            ("X-Real-IP", "192.0.2.44"),
        ],
    );
    assert_eq!(
        answer["headers"],
        json!({
            "x-forwarded-for": [first, "203.0.113.7"],
            "x-forwarded-proto": ["http"],
            "x-real-ip": ["192.0.2.44"],
            "via": ["1.1 lb"],
        }),
        "{answer}"
    );
    // the lines form one list "198.51.100.1, 127.N.0.11, 203.0.113.7"; without --recursive the
    // rightmost entry (position 0 from the right) is the client
    assert_client(&answer, "203.0.113.7", None, "x-forwarded-for");
    assert_eq!(answer["socket_peer"], local.to_string(), "{answer}");
    assert_eq!(
        answer["decision"], "header x-forwarded-for entry 0 of 3 from the right",
        "{answer}"
    );
}
