//! The paho-mqtt client (`mqtt_client.py` beside this crate's manifest), as a process driven
//! one JSON line at a time.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::tools::PYTHON;
use crate::wait::{STEP_TIMEOUT, wait_child};

/// The script's path.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/mqtt_client.py");

/// Where and how a [`Paho`] client connects.
#[derive(Debug, Clone)]
pub struct PahoOpts {
    /// Where to connect.
    pub target: SocketAddr,
    /// Source address to bind.
    pub bind: IpAddr,
    /// MQTT client id; also names the topic `e2e/<client_id>` of [`Paho::roundtrip`].
    pub client_id: String,
    /// MQTT over WebSocket (`/mqtt`, subprotocol `mqtt`) instead of TCP.
    pub websocket: bool,
    /// Extra WebSocket handshake headers, `Name: value`.
    pub headers: Vec<String>,
    /// TLS with this SNI (certificate not verified).
    pub tls_sni: Option<String>,
    /// More arguments for the script (`--mqtt 5`, `--keepalive 5`, …).
    pub extra: Vec<String>,
}

impl PahoOpts {
    /// MQTT 3.1.1 over TCP.
    pub fn tcp(target: SocketAddr, bind: IpAddr, client_id: &str) -> Self {
        PahoOpts {
            target,
            bind,
            client_id: client_id.to_owned(),
            websocket: false,
            headers: Vec::new(),
            tls_sni: None,
            extra: Vec::new(),
        }
    }

    /// MQTT 3.1.1 over WebSocket.
    pub fn ws(target: SocketAddr, bind: IpAddr, client_id: &str) -> Self {
        PahoOpts {
            websocket: true,
            ..Self::tcp(target, bind, client_id)
        }
    }
}

/// A connected paho-mqtt client; killed on drop.
#[derive(Debug)]
pub struct Paho {
    child: Child,
    stdin: ChildStdin,
    events: Receiver<Value>,
    seen: Vec<Value>,
    /// The client's own socket address (`getsockname()` after connect).
    pub local: SocketAddr,
    /// The MQTT client id.
    pub client_id: String,
    /// The `connected` event: the CONNACK's return code and, for MQTT 5, its properties.
    pub connack: Value,
}

impl Paho {
    /// Starts a client and waits for its first event: the client once the server accepted its
    /// CONNECT, else the event that says why not (refused, closed, cannot connect).
    ///
    /// With `log` (a path prefix), stdout lines are copied to `<log>.out` and stderr goes to
    /// `<log>.err`.
    pub fn start(opts: &PahoOpts, log: Option<&Path>) -> Result<Paho, String> {
        Self::try_start(opts, log).map_err(|event| event.to_string())
    }

    /// [`Paho::start`] with paho's event as the error: `error` (the connection or upgrade
    /// failed), `disconnected` (closed before CONNACK), or `connected` with a non-zero `rc`
    /// (refused).
    pub fn try_start(opts: &PahoOpts, log: Option<&Path>) -> Result<Paho, Value> {
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(SCRIPT)
            .args(["--host", &opts.target.ip().to_string()])
            .args(["--port", &opts.target.port().to_string()])
            .args(["--bind", &opts.bind.to_string()])
            .args(["--client-id", &opts.client_id])
            .args([
                "--transport",
                if opts.websocket { "websockets" } else { "tcp" },
            ]);
        for header in &opts.headers {
            cmd.args(["--header", header]);
        }
        if let Some(sni) = &opts.tls_sni {
            cmd.args(["--tls-sni", sni]);
        }
        cmd.args(&opts.extra);
        let stderr = match log {
            Some(prefix) => {
                Stdio::from(fs::File::create(with_suffix(prefix, "err")).expect("client log"))
            }
            None => Stdio::inherit(),
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut copy = log.and_then(|prefix| fs::File::create(with_suffix(prefix, "out")).ok());
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(copy) = copy.as_mut() {
                    let _ = writeln!(copy, "{line}");
                }
                let event = serde_json::from_str(&line).unwrap_or_else(
                    |e| json!({"event": "error", "reason": format!("not JSON ({e}): {line}")}),
                );
                if tx.send(event).is_err() {
                    break;
                }
            }
        });
        let mut paho = Paho {
            child,
            stdin,
            events,
            seen: Vec::new(),
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            client_id: opts.client_id.clone(),
            connack: Value::Null,
        };
        let deadline = Instant::now() + STEP_TIMEOUT;
        let event = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match paho.events.recv_timeout(left) {
                Ok(event) if event["event"] == "connected" && event["rc"] == 0 => break event,
                Ok(event)
                    if ["connected", "error", "disconnected"]
                        .contains(&event["event"].as_str().unwrap_or_default()) =>
                {
                    return Err(event);
                }
                Ok(event) => paho.seen.push(event),
                Err(e) => {
                    let reason = format!("no event from the client within {STEP_TIMEOUT:?} ({e})");
                    return Err(json!({"event": "error", "reason": reason}));
                }
            }
        };
        let ip: IpAddr = event["local"][0]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("client reports its local ip: {event}"));
        let port = event["local"][1]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("client reports its local port: {event}"));
        paho.local = SocketAddr::new(ip, port);
        paho.connack = event;
        Ok(paho)
    }

    /// MQTT 3.1.1 over WebSocket from `bind` with extra handshake `headers`; the server must
    /// accept the CONNECT.
    pub fn connect(ws: SocketAddr, clientid: &str, bind: &str, headers: &[&str]) -> Self {
        Self::connect_with(ws, clientid, bind, headers, &[])
    }

    /// [`Paho::connect`] with more script arguments (`--mqtt 5`, `--transport tcp`, …).
    pub fn connect_with(
        target: SocketAddr,
        clientid: &str,
        bind: &str,
        headers: &[&str],
        extra: &[&str],
    ) -> Self {
        Self::try_connect_with(target, clientid, bind, headers, extra)
            .unwrap_or_else(|event| panic!("paho client {clientid}: CONNECT failed: {event}"))
    }

    /// [`Paho::connect_with`], with paho's event as the error (see [`Paho::try_start`]).
    pub fn try_connect_with(
        target: SocketAddr,
        clientid: &str,
        bind: &str,
        headers: &[&str],
        extra: &[&str],
    ) -> Result<Self, Value> {
        let bind = bind
            .parse()
            .unwrap_or_else(|e| panic!("source address {bind:?}: {e}"));
        let mut opts = PahoOpts::ws(target, bind, clientid);
        opts.headers = headers.iter().map(|h| (*h).to_owned()).collect();
        opts.extra = extra.iter().map(|a| (*a).to_owned()).collect();
        Self::try_start(&opts, None)
    }

    /// Sends one command (`{"op": "sub", …}`, `{"op": "pub", …}`, `{"op": "quit"}`).
    pub fn command(&mut self, command: Value) {
        writeln!(self.stdin, "{command}").expect("write to the client");
        self.stdin.flush().expect("flush the client's stdin");
    }

    /// The next event named `name` (earlier events of other kinds are kept for later).
    pub fn expect(&mut self, name: &str) -> Value {
        if let Some(i) = self.seen.iter().position(|e| e["event"] == name) {
            return self.seen.remove(i);
        }
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) if event["event"] == name => return event,
                Ok(event) if event["event"] == "error" => {
                    panic!("client {}: {event}", self.client_id)
                }
                Ok(event) => self.seen.push(event),
                Err(_) => panic!(
                    "client {}: no {name:?} event; seen: {:?}",
                    self.client_id, self.seen
                ),
            }
        }
    }

    /// SUBSCRIBE and wait until `qos` is granted.
    pub fn subscribe(&mut self, topic: &str, qos: u8) {
        self.command(json!({"op": "sub", "topic": topic, "qos": qos}));
        let subscribed = self.expect("subscribed");
        assert_eq!(subscribed["granted"], json!([qos]), "{subscribed}");
    }

    /// PUBLISH and wait until the client library reports it sent (acknowledged at QoS > 0).
    pub fn publish(&mut self, topic: &str, payload: &str, qos: u8, retain: bool) {
        self.command(
            json!({"op": "pub", "topic": topic, "payload": payload, "qos": qos, "retain": retain}),
        );
        self.expect("published");
    }

    /// Subscribes to `e2e/<client_id>`, publishes `hello from <client_id>` to it at QoS 1, waits
    /// for the message to come back, and disconnects cleanly.
    pub fn roundtrip(mut self) {
        let topic = format!("e2e/{}", self.client_id);
        let payload = format!("hello from {}", self.client_id);
        self.subscribe(&topic, 1);
        self.publish(&topic, &payload, 1, false);
        let message = self.expect("message");
        assert_eq!(
            message["payload"].as_str(),
            Some(payload.as_str()),
            "client {} received the wrong message: {message}",
            self.client_id
        );
        self.command(json!({"op": "quit"}));
        let status = wait_child(&mut self.child, STEP_TIMEOUT).expect("client exits");
        assert!(
            status.success(),
            "client {} exited with {status}",
            self.client_id
        );
    }
}

impl Drop for Paho {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "{}", json!({"op": "quit"}));
        let _ = self.stdin.flush();
        if wait_child(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `<prefix>.<suffix>` (a client id may hold dots, so not `with_extension`).
fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}.{suffix}", prefix.display()))
}
