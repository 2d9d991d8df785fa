//! Harness for the end-to-end scenarios of `tests/SCENARIOS.md`.
//!
//! Every scenario starts **real** processes — NGINX, HAProxy, the example broker
//! (`realip-broker`) and real MQTT clients (`mosquitto_pub`/`mosquitto_sub`, and the paho-mqtt
//! script `tests/e2e/mqtt_client.py`) — on its own loopback network `127.N.0.0/24`:
//!
//! | host            | address        |
//! |-----------------|----------------|
//! | broker          | `127.N.0.2`    |
//! | LB1 listen/bind | `127.N.0.11` / `127.N.0.12` |
//! | LB2 listen/bind | `127.N.0.21` / `127.N.0.22` |
//! | LB3 listen/bind | `127.N.0.31` / `127.N.0.32` |
//! | attacker        | `127.N.0.66`   |
//! | forged address  | `127.N.0.99`   |
//! | client (behind a client-side proxy) | `127.N.0.100` |
//! | client host     | `127.N.0.101`  |
//! | client-side proxy listen | `127.N.0.102` |
//! | second broker (scale-out) | `127.N.0.3` |
//! | the harness's readiness probes | `127.N.0.250` |
//!
//! (The IPv6 scenario runs every hop on `::1`.)
//!
//! so the load balancers are exactly `127.N.0.0/26` and every hop has a distinct address.
//! Configurations are rendered from `tests/templates/` into a per-scenario temporary directory,
//! ports are picked at run time, and [`Scenario`] kills and reaps every process when it is dropped,
//! printing every log it captured when the test is failing.
// Each test binary (`e2e_tcp`, `e2e_ws`) uses a different part of this module.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any single step (a process becoming ready, a client connecting, a message
/// arriving) may take before the scenario fails.
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Builds example `name` with `features` (once per test binary, so that no test runs a stale
/// binary) and returns its path, `target/<profile>/examples/<name>`, next to the running test's
/// own directory.
pub(crate) fn example_binary(name: &str, features: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<BTreeMap<String, PathBuf>> =
        std::sync::Mutex::new(BTreeMap::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--features",
            features,
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap_or_else(|e| panic!("cargo build --example {name}: {e}"));
    assert!(status.success(), "building the example {name} failed");
    let mut dir = std::env::current_exe().unwrap();
    dir.pop();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join(name);
    built.insert(name.to_owned(), path.clone());
    path
}

/// Starts example `name` (built with `features`) as `name --bind 127.0.0.1:0 ARGS…` with
/// `RUST_LOG=info`, its stdout piped and its stderr piped or discarded, waits for its documented
/// first line `listening on IP:PORT` and returns the process (killed on drop) and that address.
pub(crate) async fn start_example(
    name: &'static str,
    features: &'static str,
    args: &[&str],
    stderr: bool,
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let path = tokio::task::spawn_blocking(move || example_binary(name, features))
        .await
        .unwrap();
    let mut child = tokio::process::Command::new(path)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(if stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("example {name} did not start"))
        .unwrap()
        .unwrap();
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("example {name}: unexpected first line {first:?}"));
    (child, addr)
}

const NGINX: &str = "nginx";
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const HAPROXY: &str = "haproxy";
const PYTHON: &str = "python3";
/// Host part of the address the harness probes proxies from (`127.N.0.250`).
const HARNESS: u8 = 250;

/// External programs a scenario needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    /// `nginx` with the dynamic stream module.
    Nginx,
    /// `haproxy`.
    Haproxy,
    /// `mosquitto_pub` and `mosquitto_sub`.
    Mosquitto,
    /// `python3` with `paho-mqtt` 2.x.
    Paho,
}

impl Tool {
    fn missing(self) -> Option<String> {
        static PAHO: OnceLock<bool> = OnceLock::new();
        match self {
            Tool::Nginx => {
                if which(NGINX).is_none() {
                    Some("nginx not found in PATH".into())
                } else if !Path::new(NGINX_STREAM_MODULE).exists() {
                    Some(format!(
                        "{NGINX_STREAM_MODULE} missing (libnginx-mod-stream)"
                    ))
                } else {
                    None
                }
            }
            Tool::Haproxy => which(HAPROXY)
                .is_none()
                .then(|| "haproxy not found in PATH".into()),
            Tool::Mosquitto => (which("mosquitto_pub").is_none()
                || which("mosquitto_sub").is_none())
            .then(|| "mosquitto_pub/mosquitto_sub not found (mosquitto-clients)".into()),
            Tool::Paho => {
                let ok = *PAHO.get_or_init(|| {
                    Command::new(PYTHON)
                        .args(["-c", "import paho.mqtt.client as m; m.CallbackAPIVersion"])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success())
                });
                (!ok).then(|| {
                    "python3 with paho-mqtt>=2 not available (pip install paho-mqtt)".into()
                })
            }
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .chain([PathBuf::from("/usr/sbin").join(program)])
        .find(|p| p.is_file())
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Path of the broker binary: `REALIP_BROKER_BIN`, else `target/<profile>/realip-broker` next to
/// this test executable's `deps/` directory.
pub(crate) fn broker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("REALIP_BROKER_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let bin = profile_dir.join("realip-broker");
    assert!(
        bin.is_file(),
        "broker binary {} not found: run `cargo build -p realip-broker` first \
         (or set REALIP_BROKER_BIN)",
        bin.display()
    );
    warn_if_stale(&bin);
    bin
}

/// `cargo test -p realip` alone does not rebuild the broker: say so loudly when its binary is
/// older than its sources (once per test binary).
fn warn_if_stale(bin: &Path) {
    static WARNED: OnceLock<()> = OnceLock::new();
    WARNED.get_or_init(|| {
        let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        let Some(built) = modified(bin) else { return };
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/broker/src");
        let newest = fs::read_dir(src)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| modified(&e.path()))
            .max();
        if newest.is_some_and(|n| n > built) {
            say(format_args!(
                "!!!!!!!! {} is older than examples/broker/src: run `cargo build -p realip-broker` \
                 (cargo test --workspace does) !!!!!!!!",
                bin.display()
            ));
        }
    });
}

fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/templates")
}

/// Reads `tests/templates/<name>` and replaces every `{{KEY}}` with its value.
pub(crate) fn render(template: &str, vars: &[(&str, String)]) -> String {
    let path = templates_dir().join(template);
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("template {}: {e}", path.display()));
    for (key, value) in vars {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(pos) = text.find("{{") {
        let end = text[pos..].find("}}").map_or(text.len(), |e| pos + e + 2);
        panic!(
            "template {template}: unfilled placeholder {}",
            &text[pos..end]
        );
    }
    text
}

/// Which top-level NGINX block a snippet belongs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Block {
    /// `stream { … }` (TCP proxying, PROXY protocol).
    Stream,
    /// `http { … }` (WebSocket proxying, forwarded headers).
    Http,
}

struct Proc {
    name: String,
    child: Child,
}

/// One running scenario: its temporary directory and every process it started.
///
/// Dropping it kills and reaps the processes; if the thread is panicking (the test failed) it
/// prints every log and configuration file first and keeps the directory.
pub(crate) struct Scenario {
    id: &'static str,
    net: u8,
    dir: PathBuf,
    procs: Vec<Proc>,
    handed_out: RefCell<HashSet<u16>>,
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("id", &self.id)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Scenario {
    /// Starts scenario `id` on the loopback network `127.<net>.0.0/24`.
    ///
    /// Returns `None` (after printing one loud line) when a required tool is missing, unless
    /// `CI=true`, where a missing tool fails the test.
    pub(crate) fn start(id: &'static str, net: u8, tools: &[Tool]) -> Option<Scenario> {
        let missing: Vec<String> = tools.iter().filter_map(|t| t.missing()).collect();
        if !missing.is_empty() {
            let why = missing.join("; ");
            assert!(
                !is_ci(),
                "scenario {id}: required tool missing with CI=true: {why}"
            );
            say(format_args!(
                "!!!!!!!! SKIPPED scenario {id}: {why} !!!!!!!!"
            ));
            return None;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "realip-e2e-{}-{}-{nanos}",
            id.to_lowercase(),
            std::process::id()
        ));
        fs::create_dir_all(&dir).expect("create scenario dir");
        Some(Scenario {
            id,
            net,
            dir,
            procs: Vec::new(),
            handed_out: RefCell::new(HashSet::new()),
        })
    }

    /// The scenario id (`T1`, `W4b`, …).
    pub(crate) fn id(&self) -> &'static str {
        self.id
    }

    /// The scenario's temporary directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host `127.<net>.0.<host>`.
    pub(crate) fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.net, 0, host))
    }

    /// The load balancers' range, `127.<net>.0.0/26` (hosts .0–.63).
    pub(crate) fn lb_range(&self) -> String {
        format!("127.{}.0.0/26", self.net)
    }

    /// A currently free port on host `127.<net>.0.<host>`, never one handed out before in this
    /// scenario (the kernel may offer a just-released port again).
    pub(crate) fn addr(&self, host: u8) -> SocketAddr {
        loop {
            let listener = TcpListener::bind((self.ip(host), 0)).expect("bind for a free port");
            let addr = listener.local_addr().expect("local_addr");
            if self.handed_out.borrow_mut().insert(addr.port()) {
                return addr;
            }
        }
    }

    /// A currently free port on `::1` (IPv6 has a single loopback address, so every hop shares
    /// it and only ports tell them apart).
    pub(crate) fn addr_v6(&self) -> SocketAddr {
        loop {
            let listener = TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).expect("bind [::1]:0");
            let addr = listener.local_addr().expect("local_addr");
            if self.handed_out.borrow_mut().insert(addr.port()) {
                return addr;
            }
        }
    }

    /// Starts a process whose stdout/stderr go to `<dir>/<name>.out` and `<name>.err`.
    /// Starts a proxy and waits until it accepts connections (from the harness address) on
    /// every address in `listen`.
    fn spawn_proxy(&mut self, name: &str, cmd: &mut Command, listen: &[SocketAddr]) {
        let idx = self.spawn(name, cmd);
        for &addr in listen {
            self.wait_listening(idx, addr, Some(self.ip(HARNESS)));
        }
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> usize {
        let out = fs::File::create(self.dir.join(format!("{name}.out"))).expect("log file");
        let err = fs::File::create(self.dir.join(format!("{name}.err"))).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("scenario {}: cannot start {name}: {e}", self.id));
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        self.procs.len() - 1
    }

    fn ensure_running(&mut self, idx: usize) {
        let proc = &mut self.procs[idx];
        if let Ok(Some(status)) = proc.child.try_wait() {
            panic!(
                "scenario {}: {} exited early with {status}",
                self.id, proc.name
            );
        }
    }

    /// Polls until `addr` accepts a TCP connection (from `from` if given), failing early if the
    /// process `idx` dies.
    fn wait_listening(&mut self, idx: usize, addr: SocketAddr, from: Option<IpAddr>) {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            self.ensure_running(idx);
            let attempt = match from {
                Some(src) if src.is_ipv4() == addr.is_ipv4() => connect_from(src, addr),
                _ => TcpStream::connect_timeout(&addr, Duration::from_millis(200)),
            };
            if attempt.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "scenario {}: {} not listening on {addr} after {STEP_TIMEOUT:?}",
                self.id,
                self.procs[idx].name
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Renders `tests/templates/nginx/<snippet>` inside a `stream {}` or `http {}` block of a
    /// complete configuration, starts `nginx -p PREFIX -c CONF -g 'daemon off;'` and waits for
    /// every address in `listen`.
    pub(crate) fn nginx(
        &mut self,
        name: &str,
        block: Block,
        snippet: &str,
        vars: &[(&str, String)],
        listen: &[SocketAddr],
    ) {
        let prefix = self.dir.join(name);
        fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let p = prefix.display().to_string();
        let body = render(&format!("nginx/{snippet}"), vars);
        let plumbing = match block {
            Block::Stream => format!(
                "    log_format e2e '$remote_addr $remote_port $status';\n    \
                 access_log {p}/access.log e2e;\n"
            ),
            Block::Http => format!(
                "    client_body_temp_path {p}/client_body;\n    proxy_temp_path {p}/proxy;\n    \
                 fastcgi_temp_path {p}/fastcgi;\n    uwsgi_temp_path {p}/uwsgi;\n    \
                 scgi_temp_path {p}/scgi;\n    \
                 log_format e2e '$remote_addr $remote_port \"$http_x_forwarded_for\" \
                 \"$http_x_forwarded_port\" $status';\n    \
                 access_log {p}/access.log e2e;\n"
            ),
        };
        let block_name = match block {
            Block::Stream => "stream",
            Block::Http => "http",
        };
        let body = indent(&body, "    ");
        let conf = render(
            "nginx/main.conf",
            &[
                (
                    "USER",
                    if is_root() {
                        "user root;".into()
                    } else {
                        String::new()
                    },
                ),
                ("PREFIX", p.clone()),
                ("STREAM_MODULE", NGINX_STREAM_MODULE.into()),
                ("BLOCK", format!("{block_name} {{\n{plumbing}\n{body}}}")),
            ],
        );
        let conf_path = prefix.join("nginx.conf");
        fs::write(&conf_path, conf).expect("write nginx.conf");
        self.spawn_proxy(
            name,
            Command::new(which(NGINX).expect("nginx"))
                .arg("-p")
                .arg(&prefix)
                .arg("-c")
                .arg(&conf_path)
                .arg("-e")
                .arg(prefix.join("error.log"))
                .args(["-g", "daemon off;"]),
            listen,
        );
    }

    /// An NGINX load balancer: `tests/templates/nginx/<snippet>` in a `block`, listening on
    /// `127.N.0.<listen_host>` and connecting to `upstream` from `127.N.0.<bind_host>` (the
    /// variables `LISTEN`, `BIND` and `UPSTREAM`, plus `extra`). Returns the listen address.
    pub(crate) fn nginx_lb(
        &mut self,
        name: &str,
        block: Block,
        snippet: &str,
        (listen_host, bind_host): (u8, u8),
        upstream: SocketAddr,
        extra: &[(&str, String)],
    ) -> SocketAddr {
        let listen = self.addr(listen_host);
        let mut vars = vec![
            ("LISTEN", listen.to_string()),
            ("BIND", self.ip(bind_host).to_string()),
            ("UPSTREAM", upstream.to_string()),
        ];
        vars.extend(extra.iter().cloned());
        self.nginx(name, block, snippet, &vars, &[listen]);
        listen
    }

    /// Renders `tests/templates/haproxy/<template>` and runs `haproxy -f CONF -db`, waiting for
    /// every address in `listen`. The variable `PREFIX` (the instance's directory) is provided.
    pub(crate) fn haproxy(
        &mut self,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
        listen: &[SocketAddr],
    ) -> PathBuf {
        let prefix = self.dir.join(name);
        fs::create_dir_all(&prefix).expect("haproxy dir");
        let mut all = vars.to_vec();
        all.push(("PREFIX", prefix.display().to_string()));
        let conf = render(&format!("haproxy/{template}"), &all);
        let conf_path = prefix.join("haproxy.cfg");
        fs::write(&conf_path, conf).expect("write haproxy.cfg");
        self.spawn_proxy(
            name,
            Command::new(which(HAPROXY).expect("haproxy"))
                .arg("-f")
                .arg(&conf_path)
                .arg("-db"),
            listen,
        );
        prefix
    }

    /// Starts any program (e.g. an example binary) as one of the scenario's processes, its
    /// stdout/stderr in `<dir>/<name>.out` and `<name>.err`, and waits until it accepts
    /// connections on each `(addr, probe source)` in `listen`.
    pub(crate) fn process(
        &mut self,
        name: &str,
        cmd: &mut Command,
        listen: &[(SocketAddr, IpAddr)],
    ) -> PathBuf {
        let idx = self.spawn(name, cmd);
        for &(addr, from) in listen {
            self.wait_listening(idx, addr, Some(from));
        }
        self.dir.join(format!("{name}.out"))
    }

    /// Starts the broker with `args` plus `--admin <admin>`; waits for the admin port and for each
    /// `(addr, probe source)` in `listen` (probe from a trusted proxy address so that a PROXY
    /// listener sees an ordinary health-check connect-and-close).
    pub(crate) fn broker(
        &mut self,
        name: &str,
        args: &[String],
        listen: &[(SocketAddr, IpAddr)],
    ) -> Broker {
        let admin = self.addr(2);
        let bin = broker_bin();
        let idx = self.spawn(
            name,
            Command::new(&bin)
                .args(args)
                .arg("--admin")
                .arg(admin.to_string())
                .env("RUST_LOG", "debug")
                .env("NO_COLOR", "1"),
        );
        self.wait_listening(idx, admin, None);
        for &(addr, from) in listen {
            self.wait_listening(idx, addr, Some(from));
        }
        Broker {
            admin,
            log: [
                self.dir.join(format!("{name}.out")),
                self.dir.join(format!("{name}.err")),
            ],
        }
    }

    /// Starts `tests/e2e/mqtt_client.py` and waits for its CONNACK.
    pub(crate) fn paho(&mut self, name: &str, opts: PahoOpts) -> Result<Paho, String> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/mqtt_client.py");
        let err_path = self.dir.join(format!("{name}.err"));
        let mut cmd = Command::new(PYTHON);
        cmd.arg("-u")
            .arg(script)
            .args(["--host", &opts.target.ip().to_string()])
            .args(["--port", &opts.target.port().to_string()])
            .args(["--bind", &opts.bind.to_string()])
            .args(["--client-id", &opts.client_id])
            .args(["--topic", &format!("e2e/{}", opts.client_id)])
            .args(["--payload", &format!("hello from {}", opts.client_id)]);
        if opts.websocket {
            cmd.args(["--transport", "websockets"]);
        }
        for header in &opts.headers {
            cmd.args(["--header", header]);
        }
        if let Some(sni) = &opts.tls_sni {
            cmd.args(["--tls-sni", sni]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&err_path).expect("client log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let out_path = self.dir.join(format!("{name}.out"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut log = fs::File::create(out_path).ok();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(log) = log.as_mut() {
                    let _ = writeln!(log, "{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut paho = Paho {
            child,
            lines,
            err_path,
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            client_id: opts.client_id,
        };
        let event = paho.next_event();
        match event["event"].as_str() {
            Some("connected") => {
                let ip: IpAddr = event["local"][0]
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .expect("client reports its local ip");
                let port = event["local"][1]
                    .as_u64()
                    .expect("client reports its local port");
                paho.local = SocketAddr::new(ip, u16::try_from(port).expect("port"));
                Ok(paho)
            }
            _ => Err(event.to_string()),
        }
    }

    /// A full round trip with the real `mosquitto_sub`/`mosquitto_pub` bound to `bind`: the
    /// subscriber must be reported by the broker with address `bind`, and must receive what the
    /// publisher sends. Returns the broker's record of the subscriber.
    pub(crate) fn mosquitto_roundtrip(
        &mut self,
        broker: &Broker,
        target: SocketAddr,
        bind: IpAddr,
        tag: &str,
    ) -> Value {
        let sub_id = format!("{}-{tag}-mosquitto-sub", self.id.to_lowercase());
        let pub_id = format!("{}-{tag}-mosquitto-pub", self.id.to_lowercase());
        let topic = format!("e2e/{sub_id}");
        let message = format!("hello from {pub_id}");
        let common = |id: &str| {
            vec![
                "-h".to_owned(),
                target.ip().to_string(),
                "-p".to_owned(),
                target.port().to_string(),
                "-A".to_owned(),
                bind.to_string(),
                "-i".to_owned(),
                id.to_owned(),
                "-t".to_owned(),
                topic.clone(),
            ]
        };
        let out_path = self.dir.join(format!("{sub_id}.out"));
        let sub_idx = {
            let out = fs::File::create(&out_path).expect("log");
            let err = fs::File::create(self.dir.join(format!("{sub_id}.err"))).expect("log");
            let child = Command::new("mosquitto_sub")
                .args(common(&sub_id))
                .args(["-q", "1", "-C", "1", "-W", "30"])
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start mosquitto_sub");
            self.procs.push(Proc {
                name: sub_id.clone(),
                child,
            });
            self.procs.len() - 1
        };
        let record = broker.wait_client(&sub_id);
        let publish = Command::new("mosquitto_pub")
            .args(common(&pub_id))
            .args(["-q", "1", "-m", &message])
            .stdin(Stdio::null())
            .output()
            .expect("run mosquitto_pub");
        assert!(
            publish.status.success(),
            "mosquitto_pub failed: {}",
            String::from_utf8_lossy(&publish.stderr)
        );
        let status = wait_child(&mut self.procs[sub_idx].child, STEP_TIMEOUT)
            .unwrap_or_else(|| panic!("mosquitto_sub did not receive within {STEP_TIMEOUT:?}"));
        assert!(status.success(), "mosquitto_sub exited with {status}");
        let received = fs::read_to_string(&out_path).unwrap_or_default();
        assert_eq!(received.trim(), message, "mosquitto_sub output");
        assert_eq!(
            record["ip_address"].as_str(),
            Some(bind.to_string().as_str()),
            "scenario {}: broker's ip_address for mosquitto_sub (bound to {bind}): {record}",
            self.id
        );
        say(format_args!(
            "scenario {}: ok mosquitto client={bind} reported={}",
            self.id,
            reported(&record)
        ));
        record
    }

    /// Generates a self-signed certificate for `cn` (rcgen); returns the path of a PEM file
    /// holding the certificate followed by the key (HAProxy's `crt` format).
    pub(crate) fn self_signed_pem(&self, cn: &str) -> PathBuf {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![cn.to_owned()]).expect("self-signed cert");
        let pem = self.dir.join("server.pem");
        fs::write(
            &pem,
            format!("{}{}", cert.pem(), signing_key.serialize_pem()),
        )
        .expect("write pem");
        pem
    }

    /// Asserts that the broker reports `client` for `record` and prints the scenario line.
    pub(crate) fn assert_reported(&self, record: &Value, client: SocketAddr) {
        assert_eq!(
            record["ip_address"].as_str(),
            Some(client.ip().to_string().as_str()),
            "scenario {}: ip_address (real client {client}): {record}",
            self.id
        );
        assert_eq!(
            record["port"].as_u64(),
            Some(u64::from(client.port())),
            "scenario {}: port (real client {client}): {record}",
            self.id
        );
        say(format_args!(
            "scenario {}: ok client={client} reported={}",
            self.id,
            reported(record)
        ));
    }

    /// Connects a paho client named "client" with `opts` (`expect`: the failure message if it
    /// cannot connect), asserts that `broker` reports the client's own address and port, and
    /// runs a publish → receive round trip. Returns the broker's record of the client.
    pub(crate) fn paho_reported(&mut self, broker: &Broker, opts: PahoOpts, expect: &str) -> Value {
        let client_id = opts.client_id.clone();
        let client = self.paho("client", opts).expect(expect);
        let record = broker.wait_client(&client_id);
        self.assert_reported(&record, client.local);
        client.roundtrip();
        record
    }

    /// The process id of the scenario's process `name`.
    pub(crate) fn pid(&self, name: &str) -> u32 {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("scenario {}: no process {name}", self.id))
            .child
            .id()
    }

    /// Kills the scenario's process `name` with `SIGKILL` (by its process id) and reaps it.
    pub(crate) fn kill(&mut self, name: &str) {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        proc.child.kill().expect("kill");
        proc.child.wait().expect("reap");
    }

    /// The current content of a file of a proxy instance (e.g. `lb2/access.log`), or "".
    pub(crate) fn read_file(&self, name: &str, file: &str) -> String {
        fs::read_to_string(self.dir.join(name).join(file)).unwrap_or_default()
    }

    /// Reads a file of an NGINX instance (e.g. `access.log`) once it is non-empty.
    pub(crate) fn wait_file(&self, name: &str, file: &str) -> String {
        let path = self.dir.join(name).join(file);
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let text = fs::read_to_string(&path).unwrap_or_default();
            if !text.trim().is_empty() {
                return text;
            }
            assert!(Instant::now() < deadline, "{} stayed empty", path.display());
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
        if std::thread::panicking() {
            let mut report = format!(
                "\n======== scenario {} FAILED; files kept in {} ========\n",
                self.id,
                self.dir.display()
            );
            for path in files_under(&self.dir) {
                let name = path.display().to_string();
                if name.ends_with(".pem") || name.ends_with(".sock") || name.ends_with(".pid") {
                    continue;
                }
                let text = fs::read(&path).unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                let tail: String = if text.len() > 20_000 {
                    let mut start = text.len() - 20_000;
                    while !text.is_char_boundary(start) {
                        start += 1;
                    }
                    format!("[… {} bytes cut …]\n{}", start, &text[start..])
                } else {
                    text.into_owned()
                };
                let _ = writeln!(report, "-------- {name} --------\n{tail}");
            }
            eprintln!("{report}");
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("{prefix}{l}\n")
            }
        })
        .collect()
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Prints one line straight to stderr, past libtest's output capture, so that the scenario
/// lines (`scenario T1: ok …`, `SKIPPED scenario …`) show in a plain `cargo test` run.
pub(crate) fn say(line: std::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}

/// `ip:port` as the broker reported it.
pub(crate) fn reported(record: &Value) -> String {
    let ip = record["ip_address"].as_str().unwrap_or("?");
    match (ip.parse::<IpAddr>(), record["port"].as_u64()) {
        (Ok(ip), Some(port)) if u16::try_from(port).is_ok() => {
            SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)).to_string()
        }
        _ => format!("{ip}:{}", record["port"]),
    }
}

/// Options for [`Scenario::paho`].
#[derive(Debug, Clone)]
pub(crate) struct PahoOpts {
    /// Where to connect.
    pub(crate) target: SocketAddr,
    /// Source address to bind.
    pub(crate) bind: IpAddr,
    /// MQTT client id; also names the topic `e2e/<client_id>`.
    pub(crate) client_id: String,
    /// MQTT over WebSocket (`/mqtt`, subprotocol `mqtt`) instead of TCP.
    pub(crate) websocket: bool,
    /// Extra WebSocket handshake headers, `Name: value`.
    pub(crate) headers: Vec<String>,
    /// TLS with this SNI (certificate not verified).
    pub(crate) tls_sni: Option<String>,
}

impl PahoOpts {
    /// MQTT over TCP.
    pub(crate) fn tcp(target: SocketAddr, bind: IpAddr, client_id: &str) -> Self {
        PahoOpts {
            target,
            bind,
            client_id: client_id.to_owned(),
            websocket: false,
            headers: Vec::new(),
            tls_sni: None,
        }
    }

    /// MQTT over WebSocket.
    pub(crate) fn ws(target: SocketAddr, bind: IpAddr, client_id: &str) -> Self {
        PahoOpts {
            websocket: true,
            ..Self::tcp(target, bind, client_id)
        }
    }
}

/// A connected paho-mqtt client, waiting for [`Paho::roundtrip`].
#[derive(Debug)]
pub(crate) struct Paho {
    child: Child,
    lines: Receiver<String>,
    err_path: PathBuf,
    /// The client's own socket address (`getsockname()` after connect).
    pub(crate) local: SocketAddr,
    /// The MQTT client id.
    pub(crate) client_id: String,
}

impl Paho {
    fn next_event(&mut self) -> Value {
        match self.lines.recv_timeout(STEP_TIMEOUT) {
            Ok(line) => serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("client printed non-JSON {line:?}: {e}")),
            Err(e) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let stderr = fs::read_to_string(&self.err_path).unwrap_or_default();
                serde_json::json!({"event": "error", "reason": format!("no output ({e}); stderr: {stderr}")})
            }
        }
    }

    /// Subscribes to its topic, publishes to it and waits for the message to come back.
    pub(crate) fn roundtrip(mut self) {
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").expect("write to client");
        stdin.flush().expect("flush client stdin");
        let event = self.next_event();
        assert_eq!(
            event["event"], "received",
            "client {}: publish → receive failed: {event}",
            self.client_id
        );
        assert_eq!(
            event["payload"].as_str(),
            Some(format!("hello from {}", self.client_id).as_str()),
            "client {} received the wrong message",
            self.client_id
        );
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running broker: its admin API address and log files.
#[derive(Debug, Clone)]
pub(crate) struct Broker {
    /// `--admin` address.
    pub(crate) admin: SocketAddr,
    log: [PathBuf; 2],
}

impl Broker {
    /// `GET path` on the admin API: (status, body).
    pub(crate) fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The full body of `GET /api/v5/clients`.
    pub(crate) fn clients_body(&self) -> String {
        let (status, body) = self.get("/api/v5/clients");
        assert_eq!(status, 200, "GET /api/v5/clients: {body}");
        body
    }

    /// Every client record of `GET /api/v5/clients` (a bare array or EMQX's `{"data": [...]}`).
    pub(crate) fn clients(&self) -> Vec<Value> {
        let body = self.clients_body();
        let value: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET /api/v5/clients is not JSON ({e}): {body}"));
        match value {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("data") {
                Some(Value::Array(items)) => items,
                _ => panic!("GET /api/v5/clients: no data array: {body}"),
            },
            _ => panic!("GET /api/v5/clients: unexpected shape: {body}"),
        }
    }

    /// Polls `GET /api/v5/clients/{id}` until the client is known.
    pub(crate) fn wait_client(&self, client_id: &str) -> Value {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let (status, body) = self.get(&format!("/api/v5/clients/{client_id}"));
            if status == 200 {
                return serde_json::from_str(&body)
                    .unwrap_or_else(|e| panic!("client record is not JSON ({e}): {body}"));
            }
            assert!(
                status == 404 && Instant::now() < deadline,
                "GET /api/v5/clients/{client_id}: {status} {body}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `GET /api/v5/clients/{id}` must be 404.
    pub(crate) fn assert_unknown(&self, client_id: &str) {
        let (status, body) = self.get(&format!("/api/v5/clients/{client_id}"));
        assert_eq!(status, 404, "client {client_id} should be unknown: {body}");
    }

    /// Asserts that `ip` appears nowhere in the full `GET /api/v5/clients` body (as an address,
    /// not as a prefix of a longer one).
    pub(crate) fn assert_absent(&self, ip: IpAddr, what: &str) {
        let body = self.clients_body();
        assert!(
            !contains_ip(&body, &ip.to_string()),
            "{what} {ip} must appear nowhere in GET /api/v5/clients: {body}"
        );
        say(format_args!(
            "scenario {what} {ip}: ok, appears nowhere in GET /api/v5/clients"
        ));
    }

    /// The broker's stdout and stderr so far.
    pub(crate) fn log(&self) -> String {
        self.log
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls the log until a line satisfies `pred`; returns that line.
    pub(crate) fn wait_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Some(line) = self.log().lines().find(|l| pred(l)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "broker never logged {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Whether `text` contains the address `ip` delimited by non-address characters.
pub(crate) fn contains_ip(text: &str, ip: &str) -> bool {
    let bytes = text.as_bytes();
    let is_addr_char = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
    text.match_indices(ip).any(|(pos, _)| {
        let before = pos.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(pos + ip.len()).copied();
        !before.is_some_and(is_addr_char)
            && !after.is_some_and(|b| b.is_ascii_hexdigit() || b == b'.')
    })
}

/// Minimal HTTP/1.1 GET (the admin API), handling `Content-Length` and chunked bodies.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, STEP_TIMEOUT)
        .unwrap_or_else(|e| panic!("admin API {addr}: {e}"));
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .expect("send admin request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read admin response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed admin response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("malformed status line: {head:?}"));
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Connects to `dst` from source address `src` (any port).
pub(crate) fn connect_from(src: IpAddr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stream = rt.block_on(async {
        let socket = match src {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(src, 0))?;
        let stream = tokio::time::timeout(Duration::from_secs(2), socket.connect(dst))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.into_std()
    })?;
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// An MQTT 3.1.1 CONNECT packet (clean session, keep-alive 30 s).
pub(crate) fn mqtt_connect_packet(client_id: &str) -> Vec<u8> {
    let mut var = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    let id_len = u16::try_from(client_id.len()).expect("short id");
    var.extend_from_slice(&id_len.to_be_bytes());
    var.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, u8::try_from(var.len()).expect("short packet")];
    packet.extend(var);
    packet
}

/// What a raw MQTT connection got back after sending CONNECT.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ConnectOutcome {
    /// CONNACK with this return code.
    Connack(u8),
    /// The broker closed (or reset) the connection without a CONNACK.
    Closed,
}

/// Sends `prefix` (e.g. a PROXY header) and a CONNECT for `client_id`, then reads the answer.
pub(crate) fn raw_mqtt_connect(
    stream: &mut TcpStream,
    prefix: &[u8],
    client_id: &str,
) -> ConnectOutcome {
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .expect("timeout");
    let mut bytes = prefix.to_vec();
    bytes.extend(mqtt_connect_packet(client_id));
    if stream.write_all(&bytes).is_err() {
        return ConnectOutcome::Closed;
    }
    let mut connack = [0u8; 4];
    match stream.read_exact(&mut connack) {
        Ok(()) => {
            assert_eq!(connack[0], 0x20, "expected CONNACK, got {connack:?}");
            ConnectOutcome::Connack(connack[3])
        }
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("broker neither answered nor closed within {STEP_TIMEOUT:?}")
        }
        Err(_) => ConnectOutcome::Closed,
    }
}

/// PROXY protocol v2 signature.
pub(crate) const PP2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// CRC32C (Castagnoli), as the PROXY v2 `PP2_TYPE_CRC32C` TLV uses it.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PROXY v2 `PROXY` TCP/IPv4 header with a CRC32C TLV; `corrupt` flips one bit of the
/// checksum.
pub(crate) fn pp2_with_crc32c(src: SocketAddr, dst: SocketAddr, corrupt: bool) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    let mut h = PP2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12 + 7]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h.extend_from_slice(&[0x03, 0, 4, 0, 0, 0, 0]);
    let crc = crc32c(&h) ^ u32::from(corrupt);
    let at = h.len() - 4;
    h[at..].copy_from_slice(&crc.to_be_bytes());
    h
}

/// A PROXY v2 `LOCAL` header that still carries a (meaningless) TCP/IPv4 address block, as some
/// load balancers send: the receiver must skip it and use the socket's own addresses.
pub(crate) fn pp2_local_with_addresses(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    let mut h = PP2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x20, 0x11, 0, 12]);
    h.extend_from_slice(&s.octets());
    h.extend_from_slice(&d.octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

/// Every string and number in a JSON value, keyed by its path (`.proxy.tlvs[0].type`).
pub(crate) fn json_strings(value: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    fn walk(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
        match v {
            Value::String(s) => {
                out.insert(path, s.clone());
            }
            Value::Number(n) => {
                out.insert(path, n.to_string());
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, format!("{path}[{i}]"), out);
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    walk(item, format!("{path}.{k}"), out);
                }
            }
            _ => {}
        }
    }
    walk(value, String::new(), &mut out);
    out
}
