//! The TLS listeners with real clients: mosquitto (`--cafile`, client certificates) and
//! paho-mqtt (MQTT over TLS and over secure WebSocket), on certificates made at test time with
//! rcgen; and HAProxy in front, both as a TCP passthrough of TLS with `send-proxy-v2` and as a
//! TLS terminator with `send-proxy-v2-ssl-cn`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{BIN, BrokerProcess, have, have_mosquitto, have_paho, wait_for};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;

/// A CA, a server certificate for `localhost` and `127.0.0.1`, and a client certificate
/// with the common name `device-42`, as PEM files in a fresh directory.
struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "realip-broker-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();

        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "realip test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server = server.signed_by(&server_key, &ca).unwrap();

        let (client, client_key) = client_certificate("device-42", &ca);

        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let pki = Self {
            ca: write("ca.pem", &ca.pem()),
            cert: write("server.pem", &server.pem()),
            key: write("server.key", &server_key.serialize_pem()),
            client_cert: write("client.pem", &client.pem()),
            client_key: write("client.key", &client_key.serialize_pem()),
            dir: dir.clone(),
        };
        // HAProxy's `crt` takes the chain and the key in one file.
        write(
            "server-with-key.pem",
            &format!("{}{}", server.pem(), server_key.serialize_pem()),
        );
        pki
    }

    fn broker_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

/// A client certificate (`clientAuth`) with the common name `cn`, signed by `issuer`.
fn client_certificate(
    cn: &str,
    issuer: &CertifiedIssuer<'_, KeyPair>,
) -> (rcgen::Certificate, KeyPair) {
    let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
    client.distinguished_name.push(DnType::CommonName, cn);
    client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = client.signed_by(&key, issuer).unwrap();
    (cert, key)
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(pki: &Pki, extra: &[&str]) -> (BrokerProcess, SocketAddr, SocketAddr) {
    let tls_args = pki.broker_args();
    let mut args = vec!["--tls", "127.0.0.1:0", "--wss", "127.0.0.1:0"];
    args.extend(tls_args.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let broker = BrokerProcess::start(&args);
    let (tls, wss) = listening(&broker);
    (broker, tls, wss)
}

/// The `tls=` and `wss=` addresses of the listening line, from the listener's own logs.
fn listening(broker: &BrokerProcess) -> (SocketAddr, SocketAddr) {
    let logs = broker.wait_log("realip-broker started");
    let field = |key: &str| -> SocketAddr {
        let line = logs
            .lines()
            .find(|l| l.contains("realip-broker started"))
            .unwrap();
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
        value.parse().unwrap()
    };
    (field("tls"), field("wss"))
}

fn client(broker: &BrokerProcess, clientid: &str) -> Value {
    broker.client(clientid)
}

/// mosquitto_sub over TLS (verifying the server against the test CA, SNI `localhost`), a
/// mosquitto_pub message to it, and the admin API's record of the TLS session.
#[test]
fn mosquitto_over_tls_with_cafile() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    let (broker, tls, _) = start(&pki, &[]);
    let port = tls.port().to_string();
    let ca = pki.ca.display().to_string();
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
        .args([
            "-i", "tls-sub", "-t", "t/tls", "-q", "1", "-C", "1", "-W", "15",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record = client(&broker, "tls-sub");
    assert_eq!(record["listener"], "ssl:default");
    assert_eq!(record["ip_address"], "127.0.0.1");
    assert_eq!(record["socket_peer"], record["peername"]);
    let version = record["tls"]["version"].as_str().unwrap();
    assert!(version == "TLSv1.3" || version == "TLSv1.2", "{record}");
    assert!(
        record["tls"]["cipher"]
            .as_str()
            .is_some_and(|c| c.starts_with("TLS"))
    );
    assert_eq!(record["tls"]["sni"], "localhost");
    assert_eq!(record["tls"]["client_cn"], Value::Null);
    // Subscribed once the subscription shows in the admin API.
    wait_for(Duration::from_secs(10), || {
        (client(&broker, "tls-sub")["subscriptions_cnt"] == 1).then_some(())
    })
    .expect("subscription");

    let status = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
        .args(["-i", "tls-pub", "-t", "t/tls", "-q", "1", "-m", "over tls"])
        .status()
        .unwrap();
    assert!(status.success());
    let out = sub.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");

    // A client that does not trust the server's CA is refused, and the broker says why.
    let other = Pki::new();
    let status = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile"])
        .arg(&other.ca)
        .args(["-i", "tls-untrusting", "-t", "t/tls", "-m", "x"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
    broker.wait_log("TLS handshake with 127.0.0.1:");
}

/// With `--tls-client-ca` a client without a certificate is refused; one with a certificate
/// signed by that CA is accepted and its common name shows in the admin API.
#[test]
fn client_certificates_are_verified_and_named() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    let ca = pki.ca.display().to_string();
    let (broker, tls, _) = start(&pki, &["--tls-client-ca", &ca]);
    let port = tls.port().to_string();
    let without = Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
        .args(["-i", "no-cert", "-t", "t", "-m", "x"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(!without.success());
    assert!(broker.get("/api/v5/clients/no-cert").0 == 404);

    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
        .arg("--cert")
        .arg(&pki.client_cert)
        .arg("--key")
        .arg(&pki.client_key)
        .args(["-i", "with-cert", "-t", "t", "-W", "15"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let record = client(&broker, "with-cert");
    assert_eq!(record["tls"]["client_cn"], "device-42");
    assert_eq!(record["listener"], "ssl:default");
    let _ = sub.kill();
    let _ = sub.wait();
}

/// A paho-mqtt client over TLS or secure WebSocket, from a chosen source address, that
/// subscribes, publishes to itself at QoS 1 and prints what it got; it disconnects when its
/// stdin closes.
const PAHO_TLS: &str = r#"
import json, sys, threading
import paho.mqtt.client as mqtt

host, port, ca, cid, transport, bind = sys.argv[1:7]
cert = sys.argv[7] if len(sys.argv) > 8 else None
key = sys.argv[8] if len(sys.argv) > 8 else None
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid, transport=transport)
if transport == "websockets":
    c.ws_set_options(path="/mqtt")
c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)

def out(**event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()

def on_connect(client, userdata, flags, rc, props):
    sock = client.socket()
    sock = getattr(sock, "_socket", sock)  # under a WebSocket wrapper
    out(event="connected", rc=rc.value, sockname=list(sock.getsockname()[:2]))
    client.subscribe("t/paho", qos=1)

def on_subscribe(client, userdata, mid, rcs, props):
    client.publish("t/paho", "round trip", qos=1)

def on_message(client, userdata, msg):
    out(event="message", topic=msg.topic, payload=msg.payload.decode(), qos=msg.qos)

c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
try:
    c.connect(host, int(port), bind_address=bind)
except Exception as e:
    out(event="error", error=str(e))
    sys.exit(1)
c.loop_start()
sys.stdin.readline()
c.disconnect()
c.loop_stop()
"#;

struct PahoTls {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl PahoTls {
    fn start(to: SocketAddr, ca: &Path, clientid: &str, transport: &str, bind: &str) -> Self {
        Self::start_with(to, ca, clientid, transport, bind, &[])
    }

    fn start_with(
        to: SocketAddr,
        ca: &Path,
        clientid: &str,
        transport: &str,
        bind: &str,
        cert_and_key: &[&Path],
    ) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", PAHO_TLS])
            .arg(to.ip().to_string())
            .arg(to.port().to_string())
            .arg(ca)
            .args([clientid, transport, bind])
            .args(cert_and_key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn event(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("an event from paho within 20 s");
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("paho printed {line:?}"))
    }

    /// The client's own address, once connected.
    fn connected(&mut self) -> SocketAddr {
        let event = self.event();
        assert_eq!(event["event"], "connected", "{event}");
        assert_eq!(event["rc"], 0, "{event}");
        format!(
            "{}:{}",
            event["sockname"][0].as_str().unwrap(),
            event["sockname"][1]
        )
        .parse()
        .unwrap()
    }

    fn round_trip(&mut self) {
        let event = self.event();
        assert_eq!(event["event"], "message", "{event}");
        assert_eq!(event["payload"], "round trip");
        assert_eq!(event["qos"], 1);
    }
}

impl Drop for PahoTls {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin);
        }
        if wait_for(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten()
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// paho over TLS and over secure WebSocket: a QoS 1 round trip on each, and the admin API
/// shows the client's own address and the TLS facts.
#[test]
fn paho_over_tls_and_secure_websocket() {
    if !have_paho() {
        return;
    }
    let pki = Pki::new();
    let (broker, tls, wss) = start(&pki, &[]);

    let mut paho = PahoTls::start(tls, &pki.ca, "paho-tls", "tcp", "127.0.0.141");
    let me = paho.connected();
    paho.round_trip();
    let record = client(&broker, "paho-tls");
    assert_eq!(record["listener"], "ssl:default");
    assert_eq!(record["peername"], me.to_string());
    assert!(record["tls"]["version"].as_str().is_some());
    // paho sends no SNI for an IP address (RFC 6066 §3).
    assert_eq!(record["tls"]["sni"], Value::Null);

    let mut paho = PahoTls::start(wss, &pki.ca, "paho-wss", "websockets", "127.0.0.142");
    let me = paho.connected();
    paho.round_trip();
    let record = client(&broker, "paho-wss");
    assert_eq!(record["listener"], "wss:default");
    assert_eq!(record["peername"], me.to_string());
    assert_eq!(record["ip_source"], "socket");
    assert!(record["tls"]["cipher"].as_str().is_some());
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// HAProxy with `conf`, killed on drop.
struct Haproxy {
    child: Child,
}

impl Haproxy {
    fn start(pki: &Pki, conf: &str, listen: SocketAddr) -> Option<Self> {
        let runs = Command::new("haproxy")
            .arg("-v")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have("haproxy", runs) {
            return None;
        }
        let path = pki.dir.join("haproxy.cfg");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&path)
            .arg("-db")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(Duration::from_secs(10), || TcpStream::connect(listen).ok())
            .expect("haproxy listening");
        Some(Self { child })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HAPROXY_GLOBAL: &str = "global\n    maxconn 100\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n";

/// TLS passed through HAProxy (`mode tcp`) with a PROXY v2 header in front: the broker reads
/// the header, then runs the TLS handshake; the client's own address and the TLS facts show.
/// The health check connects and closes without a header or a handshake and is not a client.
#[test]
fn haproxy_passes_tls_through_with_proxy_v2() {
    if !have_paho() {
        return;
    }
    let pki = Pki::new();
    let (broker, tls, _) = start(
        &pki,
        &["--tls-proxy-protocol", "--proxy-from", "127.0.0.1/32"],
    );
    let front = free_port();
    let conf = format!(
        "{HAPROXY_GLOBAL}frontend mqtts\n    bind {front}\n    default_backend broker\n\
         backend broker\n    server b1 {tls} send-proxy-v2 check\n"
    );
    let Some(_haproxy) = Haproxy::start(&pki, &conf, front) else {
        return;
    };
    let mut paho = PahoTls::start(front, &pki.ca, "through-haproxy", "tcp", "127.0.0.143");
    let me = paho.connected();
    paho.round_trip();
    let record = client(&broker, "through-haproxy");
    assert_eq!(record["listener"], "ssl:default");
    assert_eq!(record["peername"], me.to_string());
    assert_eq!(record["ip_source"], "proxy-protocol");
    assert_eq!(record["proxy"]["version"], "v2");
    assert_eq!(record["proxy"]["destination"], front.to_string());
    assert!(record["tls"]["version"].as_str().is_some());
    assert_eq!(
        broker.get("/api/v5/clients").1["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

/// The broker on plain TCP with `--tcp-proxy-protocol` and `extra` flags, behind HAProxy
/// terminating TLS on `front` (`verify optional` against the test CA, then `verify_options`)
/// and sending `send-proxy-v2-ssl-cn`; `None` when HAProxy is missing (skipped loudly).
fn behind_tls_terminator(
    pki: &Pki,
    extra: &[&str],
    verify_options: &str,
) -> Option<(BrokerProcess, Haproxy, SocketAddr)> {
    let mut command = Command::new(BIN);
    command.args([
        "--tcp",
        "127.0.0.1:0",
        "--ws",
        "off",
        "--admin",
        "127.0.0.1:0",
        "--tcp-proxy-protocol",
    ]);
    command.args(extra);
    let broker = BrokerProcess::spawn(command);
    let front = free_port();
    let conf = format!(
        "{HAPROXY_GLOBAL}frontend mqtts\n    bind {front} ssl crt {} ca-file {} verify optional{verify_options}\n    default_backend broker\n\
         backend broker\n    server b1 {} send-proxy-v2-ssl-cn\n",
        pki.dir.join("server-with-key.pem").display(),
        pki.ca.display(),
        broker.tcp(),
    );
    let haproxy = Haproxy::start(pki, &conf, front)?;
    Some((broker, haproxy, front))
}

/// HAProxy terminates TLS (verifying an optional client certificate) and sends
/// `send-proxy-v2-ssl-cn` to the broker's plain TCP port: the admin API shows the client's
/// address and the SSL TLV's version and common name.
#[test]
fn haproxy_terminates_tls_and_sends_proxy_v2_ssl() {
    if !have_paho() {
        return;
    }
    let pki = Pki::new();
    let Some((broker, _haproxy, front)) = behind_tls_terminator(&pki, &[], "") else {
        return;
    };
    let mut paho = PahoTls::start_with(
        front,
        &pki.ca,
        "terminated",
        "tcp",
        "127.0.0.144",
        &[&pki.client_cert, &pki.client_key],
    );
    let me = paho.connected();
    paho.round_trip();
    let record = client(&broker, "terminated");
    assert_eq!(record["listener"], "tcp:default");
    assert_eq!(record["peername"], me.to_string());
    let ssl = &record["proxy"]["ssl"];
    assert_eq!(ssl["cn"], "device-42", "{record}");
    assert_eq!(ssl["verified"], true, "{record}");
    assert!(
        ssl["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{record}"
    );
    // The broker itself ran no TLS handshake.
    assert_eq!(record["tls"], Value::Null);
}

/// `--tls-identity cn-as-username` behind HAProxy terminating TLS with
/// `send-proxy-v2-ssl-cn` (`verify optional`, verification errors ignored so that every
/// client reaches the broker): a CA-signed client certificate's CN is the username, whatever
/// the client sent; a client without a certificate or with one from an unknown issuer is
/// refused with CONNACK 0x86 (MQTT 5) / 0x05 (3.1.1) and never appears.
#[test]
fn haproxy_verified_cn_becomes_the_username_and_others_are_refused() {
    if !have_mosquitto() {
        return;
    }
    let pki = Pki::new();
    // A client certificate from a CA HAProxy does not know.
    let rogue_ca = CertifiedIssuer::self_signed(
        {
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "rogue CA");
            ca
        },
        KeyPair::generate().unwrap(),
    )
    .unwrap();
    let (rogue, rogue_key) = client_certificate("device-42", &rogue_ca);
    let rogue_cert = pki.dir.join("rogue.pem");
    let rogue_key_path = pki.dir.join("rogue.key");
    std::fs::write(&rogue_cert, rogue.pem()).unwrap();
    std::fs::write(&rogue_key_path, rogue_key.serialize_pem()).unwrap();

    let Some((broker, _haproxy, front)) = behind_tls_terminator(
        &pki,
        &[
            "--proxy-from",
            "127.0.0.1",
            "--tls-identity",
            "cn-as-username",
        ],
        " ca-ignore-err all crt-ignore-err all",
    ) else {
        return;
    };
    let port = front.port().to_string();
    let ca = pki.ca.display().to_string();
    let mosquitto = |bin: &str, version: &str, clientid: &str, cert: Option<(&Path, &Path)>| {
        let mut command = Command::new(bin);
        command
            .args(["-h", "localhost", "-p", &port, "--cafile", &ca])
            .args([
                "-V",
                version,
                "-i",
                clientid,
                "-u",
                "chosen-by-client",
                "-d",
            ]);
        if let Some((cert, key)) = cert {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        command
    };

    // Verified: the username is the certificate's CN, not what the client sent.
    for (version, clientid) in [("mqttv5", "cn-v5"), ("mqttv311", "cn-v311")] {
        let mut sub = mosquitto(
            "mosquitto_sub",
            version,
            clientid,
            Some((&pki.client_cert, &pki.client_key)),
        )
        .args(["-t", "t/cn", "-W", "15"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let record = client(&broker, clientid);
        assert_eq!(record["username"], "device-42", "{record}");
        assert_eq!(record["proxy"]["ssl"]["cn"], "device-42", "{record}");
        let _ = sub.kill();
        let _ = sub.wait();
    }

    // No certificate, or one HAProxy could not verify: refused, with the code of the
    // protocol version, and never registered.
    let refused = [
        ("mqttv5", "none-v5", None, "CONNACK (134)"),
        ("mqttv311", "none-v311", None, "CONNACK (5)"),
        (
            "mqttv5",
            "rogue-v5",
            Some((rogue_cert.as_path(), rogue_key_path.as_path())),
            "CONNACK (134)",
        ),
        (
            "mqttv311",
            "rogue-v311",
            Some((rogue_cert.as_path(), rogue_key_path.as_path())),
            "CONNACK (5)",
        ),
    ];
    for (version, clientid, cert, connack) in refused {
        let out = mosquitto("mosquitto_pub", version, clientid, cert)
            .args(["-t", "t/cn", "-m", "x"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{clientid}");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(connack), "{clientid}: {said}");
        assert_eq!(
            broker.get(&format!("/api/v5/clients/{clientid}")).0,
            404,
            "{clientid}"
        );
    }
    let logs = broker.logs();
    assert!(
        logs.contains("the client presented no certificate"),
        "{logs}"
    );
    assert!(
        logs.contains("the client certificate was not verified (verify result"),
        "{logs}"
    );
    let (_, metrics) = realip_test_support::http(broker.admin, "GET", "/metrics");
    assert!(
        metrics.contains("realip_broker_rejections_total{reason=\"no_verified_certificate\"} 4"),
        "{metrics}"
    );
}
