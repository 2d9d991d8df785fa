//! A real browser behind the README's NGINX WebSocket recipe: headless Chromium loads a page
//! that NGINX serves (`tests/browser/index.html` and MQTT.js's `mqtt.min.js` from npm), the
//! page connects with MQTT.js to `ws://<NGINX>/mqtt`, which NGINX proxies to the broker with
//! `X-Forwarded-For $proxy_add_x_forwarded_for`, subscribes at QoS 1, publishes at QoS 1 and
//! receives its message. The broker must attribute the connection to the browser's own address
//! and port, as NGINX saw them (its access log's `$remote_addr $remote_port`).

use realip_test_support as e2e;

use std::fs;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::time::Instant;

use e2e::{STEP_TIMEOUT, Scenario, Tool};

/// The page and the bundle it loads, as `npm ci --prefix tests/browser` installs it.
const PAGE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/index.html");
const MQTT_JS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/browser/node_modules/mqtt/dist/mqtt.min.js"
);

/// Where the README's recipe serves the web app from.
const APP_ROOT: &str = "/var/www/mqtt-app";

/// Waits in the page for `window.roundTrip` (a new tab is `about:blank` until it navigates)
/// and returns what it resolves with.
const ROUND_TRIP: &str = "(async () => { \
    while (!window.roundTrip) await new Promise((r) => setTimeout(r, 25)); \
    return await window.roundTrip; })()";

/// The `$remote_addr $remote_port` of the upgraded request (status 101) in NGINX's access log,
/// written when the WebSocket closes.
fn upgraded_peer(s: &Scenario, name: &str) -> SocketAddr {
    let line = e2e::wait_for(STEP_TIMEOUT, || {
        let log = s.read_file(name, "access.log");
        log.lines()
            .find(|l| l.split_whitespace().last() == Some("101"))
            .map(str::to_owned)
    })
    .unwrap_or_else(|| panic!("no upgraded request in {name}'s access log"));
    let mut fields = line.split_whitespace();
    match (
        fields.next().and_then(|f| f.parse::<IpAddr>().ok()),
        fields.next().and_then(|f| f.parse::<u16>().ok()),
    ) {
        (Some(ip), Some(port)) => SocketAddr::new(ip, port),
        _ => panic!("unexpected access log line in {name}: {line:?}"),
    }
}

#[test]
fn browser_mqtt_js_through_nginx_appending_xff() {
    let Some(mut s) = Scenario::start("BROWSER", 70, &[Tool::Nginx, Tool::Chromium, Tool::MqttJs])
    else {
        return;
    };
    let recipe = e2e::recipes("README.md")
        .into_iter()
        .find(|r| r.proxy == "nginx" && r.config.contains(APP_ROOT))
        .expect("README.md: the NGINX WebSocket recipe that serves the web app");

    let www = s.dir().join("www");
    fs::create_dir_all(&www).expect("www");
    for file in [PAGE, MQTT_JS] {
        let name = Path::new(file).file_name().expect("file name");
        fs::copy(file, www.join(name)).unwrap_or_else(|e| panic!("copy {file}: {e}"));
    }

    // The browser cannot choose its source address: it connects from 127.0.0.1, as NGINX does
    // when it connects to an IPv4 broker. With the broker on ::1, NGINX is the only trusted
    // peer and the walk over X-Forwarded-For stops at the browser; without IPv6, the browser's
    // port (not NGINX's) still proves the header decided.
    let (host, trusted) = if TcpListener::bind("[::1]:0").is_ok() {
        (IpAddr::V6(Ipv6Addr::LOCALHOST), "::1/128")
    } else {
        (s.ip(2), "127.0.0.1/32")
    };
    let probe_from = if host.is_ipv6() {
        host
    } else {
        "127.0.0.1".parse().expect("ip")
    };
    let broker = s.recipe_broker(&recipe, host, trusted, &[], probe_from);
    let listen = s.addr(11);
    s.recipe_proxy(
        "nginx",
        &recipe,
        listen,
        |port| broker.listener(port),
        trusted,
        &[(APP_ROOT, www.display().to_string())],
    );

    let client_id = "browser-mqtt-js";
    let started = Instant::now();
    let mut devtools = s.chromium("chromium");
    let mut page = devtools.open(&format!("http://{listen}/?clientid={client_id}"));
    let outcome = page
        .eval(ROUND_TRIP, STEP_TIMEOUT)
        .unwrap_or_else(|e| panic!("the page threw: {e}"));
    let took = started.elapsed();
    assert_eq!(outcome["state"], "done", "the page's round trip: {outcome}");
    assert_eq!(outcome["payload"], outcome["sent"], "{outcome}");
    assert_eq!(outcome["qos"], 1, "{outcome}");
    // What the page shows, as a user would read it.
    let shown = page
        .eval(
            "({title: document.title, result: JSON.parse(document.getElementById('result').textContent)})",
            STEP_TIMEOUT,
        )
        .expect("read the page");
    assert_eq!(shown["title"], "MQTT round trip: done", "{shown}");
    assert_eq!(shown["result"], outcome, "{shown}");

    let record = broker.broker.wait_client(client_id);
    // Close the WebSocket: NGINX writes the request's access log line when it ends.
    page.eval("window.mqttClient.end(); true", STEP_TIMEOUT)
        .expect("end the MQTT client");
    let browser = upgraded_peer(&s, "nginx");
    assert_eq!(
        record["peername"].as_str(),
        Some(browser.to_string().as_str()),
        "the broker's peername for the browser (NGINX saw {browser}): {record}"
    );
    assert_eq!(record["ip_source"], "x-forwarded-for", "{record}");
    assert_ne!(
        record["socket_peer"].as_str(),
        Some(browser.to_string().as_str()),
        "the socket peer is NGINX, not the browser: {record}"
    );
    devtools.close_browser();
    s.wait_exit("chromium");
    broker.assert_quiet(&recipe);
    e2e::say(format_args!(
        "scenario BROWSER: ok browser={browser} (NGINX access log) reported={} socket_peer={} \
         round trip in {took:?} ({})",
        e2e::reported(&record),
        record["socket_peer"],
        outcome["payload"]
    ));
}
