//! Shared helpers for the broker's integration tests: spawn the real binary, talk to its
//! admin API, and a small raw MQTT client (built on the codec the broker uses) for the cases
//! real clients cannot express (PROXY headers, garbage bytes, silence).

#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ChildStdin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{self, Connect, Packet, Publish, Subscribe};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_realip-broker");

/// A running broker process, killed on drop.
pub struct BrokerProcess {
    child: Child,
    pub tcp: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub admin: SocketAddr,
    logs: Arc<Mutex<String>>,
}

fn addr(line: &str, key: &str) -> Option<SocketAddr> {
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")))?;
    if value == "off" {
        None
    } else {
        Some(value.parse().unwrap())
    }
}

impl BrokerProcess {
    /// Starts the broker on free loopback ports (port 0) plus `args`, and waits for its
    /// `listening tcp=... ws=... admin=...` line.
    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command.args([
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ]);
        command.args(args);
        Self::spawn(command)
    }

    pub fn spawn(mut command: Command) -> Self {
        command
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn realip-broker");
        let logs = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = stdout.read_to_end(&mut rest);
        });
        assert!(
            line.starts_with("listening "),
            "expected the listening line, got {line:?}; logs:\n{}",
            logs.lock().unwrap()
        );
        Self {
            child,
            tcp: addr(&line, "tcp"),
            ws: addr(&line, "ws"),
            admin: addr(&line, "admin").expect("admin listener"),
            logs,
        }
    }

    pub fn tcp(&self) -> SocketAddr {
        self.tcp.expect("tcp listener")
    }

    pub fn ws(&self) -> SocketAddr {
        self.ws.expect("ws listener")
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the logs contain `needle`.
    pub fn wait_log(&self, needle: &str) -> String {
        let logs = wait_for(Duration::from_secs(10), || {
            let logs = self.logs();
            logs.contains(needle).then_some(logs)
        });
        logs.unwrap_or_else(|| panic!("no log line with {needle:?}; logs:\n{}", self.logs()))
    }

    /// `GET` on the admin API: (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, Value) {
        http_get(self.admin, path)
    }

    /// The admin API's record of `clientid`, waiting for it to appear.
    pub fn client(&self, clientid: &str) -> Value {
        let path = format!("/api/v5/clients/{clientid}");
        wait_for(Duration::from_secs(10), || {
            let (status, body) = self.get(&path);
            (status == 200).then_some(body)
        })
        .unwrap_or_else(|| panic!("client {clientid} never showed up; logs:\n{}", self.logs()))
    }

    /// Waits until `clientid` has `count` subscriptions.
    pub fn wait_subscriptions(&self, clientid: &str, count: u64) {
        wait_for(Duration::from_secs(10), || {
            (self.client(clientid)["subscriptions_cnt"] == count).then_some(())
        })
        .unwrap_or_else(|| panic!("{clientid} never had {count} subscriptions"));
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal with kill(1) and waits for the exit status.
    pub fn signal_and_wait(mut self, signal: &str) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "GET", path)
}

pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8(response).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap()
    };
    (status, body)
}

/// Whether an external tool is usable (`runs`). When it is not: with `CI=true` the test
/// fails with a clear message; otherwise it prints a loud SKIPPED line and the caller returns.
pub fn have(tool: &str, runs: bool) -> bool {
    if runs {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{tool} is required when CI=true but is not usable here \
             (apt-get install mosquitto-clients python3-paho-mqtt, or pip install paho-mqtt)"
        );
    }
    eprintln!("\n*** SKIPPED: {tool} is not installed; this test did not run ***\n");
    false
}

/// `mosquitto_pub` or `mosquitto_sub` (`bin`) pointed at the broker's TCP listener, speaking
/// `version` (`mqttv311`, `mqttv5`).
pub fn mosquitto_cmd(bin: &str, broker: &BrokerProcess, version: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(["-V", version]);
    command
}

pub fn have_mosquitto() -> bool {
    // `mosquitto_pub --help` exits non-zero on some versions: that it ran is enough.
    let runs = ["mosquitto_pub", "mosquitto_sub"].iter().all(|bin| {
        Command::new(bin)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    });
    have("mosquitto_pub/mosquitto_sub", runs)
}

pub fn have_paho() -> bool {
    let runs = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    have("python3 with paho-mqtt", runs)
}

/// A raw MQTT 3.1.1 client over a blocking TCP stream.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    next_pkid: u16,
}

impl RawClient {
    /// Connects from `bind` (a loopback address such as 127.0.0.101), sends `prefix` (e.g. a
    /// PROXY header) and nothing else.
    pub fn connect_from(bind: &str, to: SocketAddr, prefix: &[u8]) -> Self {
        let stream = bind_connect(bind, to);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
            next_pkid: 0,
        };
        if !prefix.is_empty() {
            client.stream.write_all(prefix).unwrap();
        }
        client
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    pub fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        match packet {
            Packet::Connect(p) => p.write(&mut out),
            Packet::Publish(p) => p.write(&mut out),
            Packet::Subscribe(p) => p.write(&mut out),
            Packet::PubAck(p) => p.write(&mut out),
            Packet::PubRec(p) => p.write(&mut out),
            Packet::PubRel(p) => p.write(&mut out),
            Packet::PubComp(p) => p.write(&mut out),
            Packet::PingReq => v4::PingReq.write(&mut out),
            Packet::Disconnect => v4::Disconnect.write(&mut out),
            other => panic!("raw client cannot send {other:?}"),
        }
        .unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next packet; `None` when the broker closed the connection.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("broker sent a malformed packet: {e:?}"),
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read from broker: {e}"),
            }
        }
    }

    /// CONNECT and return the CONNACK return code (0 = accepted).
    pub fn handshake(&mut self, connect: Connect) -> u8 {
        self.send(Packet::Connect(connect));
        match self.recv() {
            Some(Packet::ConnAck(ack)) => ack.code as u8,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.next_pkid += 1;
        let mut subscribe = Subscribe::new(filter, qos);
        subscribe.pkid = self.next_pkid;
        self.send(Packet::Subscribe(subscribe));
        match self.recv() {
            Some(Packet::SubAck(ack)) => assert_eq!(ack.pkid, self.next_pkid),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
        let mut publish = Publish::new(topic, qos, payload.to_vec());
        publish.retain = retain;
        if qos != QoS::AtMostOnce {
            self.next_pkid += 1;
            publish.pkid = self.next_pkid;
        }
        self.send(Packet::Publish(publish));
        if qos == QoS::AtLeastOnce {
            match self.recv() {
                Some(Packet::PubAck(ack)) => assert_eq!(ack.pkid, self.next_pkid),
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// The next PUBLISH (acknowledging QoS 1).
    pub fn next_publish(&mut self) -> Publish {
        match self.recv() {
            Some(Packet::Publish(p)) => {
                if p.qos == QoS::AtLeastOnce {
                    self.send(Packet::PubAck(v4::PubAck::new(p.pkid)));
                }
                p
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    pub fn ping(&mut self) {
        self.send(Packet::PingReq);
        assert!(matches!(self.recv(), Some(Packet::PingResp)));
    }
}

pub fn connect_packet(clientid: &str, keep_alive: u16) -> Connect {
    let mut connect = Connect::new(clientid);
    connect.keep_alive = keep_alive;
    connect
}

/// A blocking TCP connection from a chosen loopback source address.
pub fn bind_connect(bind: &str, to: SocketAddr) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{bind}:0").parse().unwrap()).unwrap();
        let stream = socket
            .connect(to)
            .await
            .unwrap_or_else(|e| panic!("connect {bind} -> {to}: {e}"));
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// A minimal WebSocket client: PROXY header, upgrade request, masked binary frames.
pub struct WsClient {
    pub stream: TcpStream,
}

impl WsClient {
    pub fn connect(bind: &str, to: SocketAddr, prefix: &[u8], headers: &str) -> Self {
        match Self::try_connect(bind, to, prefix, headers) {
            Some(client) => client,
            None => panic!("the broker closed the WebSocket connection before answering"),
        }
    }

    /// Like [`connect`](Self::connect); `None` when the broker closes the connection
    /// before answering the upgrade.
    pub fn try_connect(bind: &str, to: SocketAddr, prefix: &[u8], headers: &str) -> Option<Self> {
        let mut stream = bind_connect(bind, to);
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Prefix and request in one write: a broker that closes after the prefix must not
        // make the second write fail.
        let mut request = prefix.to_vec();
        write!(
            request,
            "GET /mqtt HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n{headers}\r\n"
        )
        .unwrap();
        if stream.write_all(&request).is_err() {
            return None;
        }
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if stream.read_exact(&mut byte).is_err() {
                return None;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        if !head.starts_with("HTTP/1.1 101") {
            // Refused (an HTTP error, after which the server closes).
            return None;
        }
        assert!(
            head.to_ascii_lowercase()
                .contains("sec-websocket-protocol: mqtt"),
            "{head}"
        );
        Some(Self { stream })
    }

    pub fn send(&mut self, payload: &[u8]) {
        assert!(payload.len() < 126);
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut frame = vec![0x82, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).unwrap();
    }

    pub fn recv(&mut self) -> Vec<u8> {
        let mut head = [0u8; 2];
        self.stream.read_exact(&mut head).unwrap();
        assert_eq!(head[0], 0x82, "expected a final binary frame");
        assert!(head[1] < 126);
        let mut payload = vec![0; head[1] as usize];
        self.stream.read_exact(&mut payload).unwrap();
        payload
    }
}

pub const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ws_client.py");

/// A paho-mqtt WebSocket client process.
pub struct Paho {
    /// The `connected` event (MQTT 5: with the CONNACK properties).
    pub connack: Value,
    child: Child,
    stdin: ChildStdin,
    events: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Paho {
    pub fn connect(ws: SocketAddr, clientid: &str, bind: &str, headers: &[&str]) -> Self {
        Self::connect_with(ws, clientid, bind, headers, &[])
    }

    pub fn connect_with(
        ws: SocketAddr,
        clientid: &str,
        bind: &str,
        headers: &[&str],
        extra: &[&str],
    ) -> Self {
        match Self::try_connect_with(ws, clientid, bind, headers, extra) {
            Ok(paho) => paho,
            Err(event) => panic!("paho CONNECT failed: {event}"),
        }
    }

    /// Starts the client; `Err` with paho's event when it got no accepting CONNACK
    /// (`error`: the connection or upgrade failed; `disconnected`: closed before CONNACK;
    /// `connected` with a non-zero `rc`: refused).
    pub fn try_connect_with(
        ws: SocketAddr,
        clientid: &str,
        bind: &str,
        headers: &[&str],
        extra: &[&str],
    ) -> Result<Self, Value> {
        let mut command = Command::new("python3");
        command.args([
            SCRIPT,
            "--host",
            &ws.ip().to_string(),
            "--port",
            &ws.port().to_string(),
            "--client-id",
            clientid,
            "--bind",
            bind,
        ]);
        for header in headers {
            command.args(["--header", header]);
        }
        command.args(extra);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let event: Value = serde_json::from_str(&line).expect("ws_client.py prints JSON");
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut paho = Self {
            connack: Value::Null,
            child,
            stdin,
            events,
            seen: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match paho.events.recv_timeout(left) {
                Ok(event) if event["event"] == "connected" && event["rc"] == 0 => {
                    paho.connack = event;
                    return Ok(paho);
                }
                Ok(event)
                    if ["connected", "error", "disconnected"]
                        .contains(&event["event"].as_str().unwrap_or_default()) =>
                {
                    return Err(event);
                }
                Ok(event) => paho.seen.push(event),
                // Closed without an event: paho exited.
                Err(_) => return Err(json!({"event": "error", "error": "no event from paho"})),
            }
        }
    }

    pub fn command(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next event named `name` (earlier events of other kinds are kept for later).
    pub fn expect(&mut self, name: &str) -> Value {
        if let Some(i) = self.seen.iter().position(|e| e["event"] == name) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if event["event"] == name => return event,
                Ok(event) if event["event"] == "error" => panic!("ws_client.py: {event}"),
                Ok(event) => self.seen.push(event),
                Err(_) => panic!("no {name:?} event from paho; seen: {:?}", self.seen),
            }
        }
    }

    pub fn subscribe(&mut self, topic: &str, qos: u8) {
        self.command(json!({"op": "sub", "topic": topic, "qos": qos}));
        let subscribed = self.expect("subscribed");
        assert_eq!(subscribed["granted"], json!([qos]));
    }

    pub fn publish(&mut self, topic: &str, payload: &str, qos: u8, retain: bool) {
        self.command(
            json!({"op": "pub", "topic": topic, "payload": payload, "qos": qos, "retain": retain}),
        );
        self.expect("published");
    }
}

impl Drop for Paho {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads everything until the broker closes the connection.
pub fn read_to_close(client: &mut RawClient) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = client.stream.read_to_end(&mut rest);
    rest
}

/// An MQTT 5 CONNECT with clean start and no properties.
pub fn v5_connect(client_id: &str, keep_alive: u16) -> Vec<u8> {
    v5_connect_with(client_id, keep_alive, None)
}

/// An MQTT 5 CONNECT with clean start and `properties`.
pub fn v5_connect_with(
    client_id: &str,
    keep_alive: u16,
    properties: Option<rumqttc::v5::mqttbytes::v5::ConnectProperties>,
) -> Vec<u8> {
    let connect = rumqttc::v5::mqttbytes::v5::Connect {
        keep_alive,
        client_id: client_id.to_owned(),
        clean_start: true,
        properties,
    };
    let mut out = BytesMut::new();
    connect.write(&None, &None, &mut out).unwrap();
    out.to_vec()
}

/// An MQTT 5 QoS 0 PUBLISH of "x" with a Topic Alias (and `topic`, which may be empty).
pub fn v5_aliased_publish(topic: &str, alias: u16) -> Vec<u8> {
    use rumqttc::v5::mqttbytes::{QoS as V5QoS, v5};
    let properties = v5::PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: Some(alias),
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    };
    let mut out = BytesMut::new();
    v5::Publish::new(topic, V5QoS::AtMostOnce, "x", Some(properties))
        .write(&mut out)
        .unwrap();
    out.to_vec()
}

/// Reads MQTT 5 packets from `client` until `n` PUBLISHes arrived, or until a read times out
/// (set a read timeout first); other packets are skipped.
pub fn v5_publishes(
    client: &mut RawClient,
    buf: &mut BytesMut,
    n: usize,
) -> Vec<rumqttc::v5::mqttbytes::v5::Publish> {
    use rumqttc::v5::mqttbytes::v5;
    let mut got = Vec::new();
    loop {
        match v5::Packet::read(buf, None) {
            Ok(v5::Packet::Publish(p)) => {
                got.push(p);
                if got.len() == n {
                    return got;
                }
                continue;
            }
            Ok(_) => continue,
            Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => panic!("{e:?}"),
        }
        let mut chunk = [0u8; 4096];
        match client.stream.read(&mut chunk) {
            Ok(0) => panic!("the broker closed the connection"),
            Ok(k) => buf.extend_from_slice(&chunk[..k]),
            Err(_) => return got,
        }
    }
}
