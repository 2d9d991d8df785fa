//! Harness for the end-to-end scenarios of `tests/SCENARIOS.md`.
//!
//! Every scenario starts **real** processes — NGINX, HAProxy, the example broker
//! (`realip-broker`, built by Cargo: [`broker_bin`]) and real MQTT clients
//! (`mosquitto_pub`/`mosquitto_sub`, and paho-mqtt: [`Paho`]) — on its own loopback network
//! `127.N.0.0/24`:
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

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::admin::{Broker, reported};
use crate::browser::{self, DevTools};
use crate::cargo::broker_bin;
use crate::net::connect_from;
use crate::paho::{Paho, PahoOpts};
use crate::tools::{HAPROXY, NGINX, NGINX_STREAM_MODULE, Tool, is_root, require, which};
use crate::wait::{STEP_TIMEOUT, say, wait_child};

/// Host part of the address the harness probes proxies from (`127.N.0.250`).
const HARNESS: u8 = 250;

/// The workspace's `tests/templates`, beside `tests/SCENARIOS.md` which shows them rendered.
fn templates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/templates")
}

/// Reads `tests/templates/<name>` and replaces every `{{KEY}}` with its value.
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
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
pub enum Block {
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
pub struct Scenario {
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
    pub fn start(id: &'static str, net: u8, tools: &[Tool]) -> Option<Scenario> {
        if !require(&format!("scenario {id}"), tools) {
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
    pub fn id(&self) -> &'static str {
        self.id
    }

    /// The scenario's temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Host `127.<net>.0.<host>`.
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.net, 0, host))
    }

    /// The load balancers' range, `127.<net>.0.0/26` (hosts .0–.63).
    pub fn lb_range(&self) -> String {
        format!("127.{}.0.0/26", self.net)
    }

    /// A currently free port on host `127.<net>.0.<host>`, never one handed out before in this
    /// scenario (the kernel may offer a just-released port again).
    pub fn addr(&self, host: u8) -> SocketAddr {
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
    pub fn addr_v6(&self) -> SocketAddr {
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
    pub fn nginx(
        &mut self,
        name: &str,
        block: Block,
        snippet: &str,
        vars: &[(&str, String)],
        listen: &[SocketAddr],
    ) {
        let body = render(&format!("nginx/{snippet}"), vars);
        self.nginx_conf(name, block, &body, listen);
    }

    /// Starts NGINX with `body` (the text of a `stream {}` or `http {}` block) inside a
    /// complete configuration, as [`Scenario::nginx`] does with a template.
    pub fn nginx_conf(&mut self, name: &str, block: Block, body: &str, listen: &[SocketAddr]) {
        let prefix = self.dir.join(name);
        fs::create_dir_all(prefix.join("logs")).expect("nginx prefix");
        let p = prefix.display().to_string();
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
        let body = indent(body, "    ");
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
    pub fn nginx_lb(
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
    pub fn haproxy(
        &mut self,
        name: &str,
        template: &str,
        vars: &[(&str, String)],
        listen: &[SocketAddr],
    ) -> PathBuf {
        let prefix = self.dir.join(name);
        let mut all = vars.to_vec();
        all.push(("PREFIX", prefix.display().to_string()));
        let conf = render(&format!("haproxy/{template}"), &all);
        self.haproxy_conf(name, &conf, listen)
    }

    /// Runs `haproxy -f CONF -db` with the configuration `conf` (in `<dir>/<name>/haproxy.cfg`),
    /// waiting for every address in `listen`; returns the instance's directory.
    pub fn haproxy_conf(&mut self, name: &str, conf: &str, listen: &[SocketAddr]) -> PathBuf {
        let prefix = self.dir.join(name);
        fs::create_dir_all(&prefix).expect("haproxy dir");
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
    pub fn process(
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

    /// Starts headless Chromium (`<dir>/<name>.out`, `.err`; its profile in `<dir>/<name>`)
    /// and connects to its DevTools endpoint.
    pub fn chromium(&mut self, name: &str) -> DevTools {
        let profile = self.dir.join(name);
        fs::create_dir_all(&profile).expect("chromium profile");
        let idx = self.spawn(name, &mut browser::command(&profile));
        let deadline = Instant::now() + STEP_TIMEOUT;
        let endpoint = loop {
            self.ensure_running(idx);
            if let Some(endpoint) = browser::endpoint(&profile) {
                break endpoint;
            }
            assert!(
                Instant::now() < deadline,
                "scenario {}: {name} wrote no DevToolsActivePort in {STEP_TIMEOUT:?}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(25));
        };
        DevTools::connect(&endpoint)
    }

    /// Starts the broker with `args` plus `--admin <admin>`; waits for the admin port and for each
    /// `(addr, probe source)` in `listen` (probe from a trusted proxy address so that a PROXY
    /// listener sees an ordinary health-check connect-and-close).
    pub fn broker(
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

    /// Starts a paho-mqtt client (its output in `<dir>/<name>.out`, `<name>.err`) and waits
    /// for the server's answer to its CONNECT: `Err` says why it was not accepted.
    pub fn paho(&mut self, name: &str, opts: PahoOpts) -> Result<Paho, String> {
        Paho::start(&opts, Some(&self.dir.join(name)))
    }

    /// A full round trip with the real `mosquitto_sub`/`mosquitto_pub` bound to `bind`: the
    /// subscriber must be reported by the broker with address `bind`, and must receive what the
    /// publisher sends. Returns the broker's record of the subscriber.
    pub fn mosquitto_roundtrip(
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
    pub fn self_signed_pem(&self, cn: &str) -> PathBuf {
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

    /// Generates a self-signed certificate for `cn` (rcgen) and writes it as
    /// `<dir>/<stem>.crt` and its key as `<dir>/<stem>.key`, both PEM; returns their paths.
    pub fn self_signed_cert_and_key(&self, cn: &str, stem: &str) -> (PathBuf, PathBuf) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![cn.to_owned()]).expect("self-signed cert");
        let paths = (
            self.dir.join(format!("{stem}.crt")),
            self.dir.join(format!("{stem}.key")),
        );
        fs::write(&paths.0, cert.pem()).expect("write certificate");
        fs::write(&paths.1, signing_key.serialize_pem()).expect("write key");
        paths
    }

    /// Asserts that the broker reports `client` for `record` and prints the scenario line.
    pub fn assert_reported(&self, record: &Value, client: SocketAddr) {
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
    pub fn paho_reported(&mut self, broker: &Broker, opts: PahoOpts, expect: &str) -> Value {
        let client_id = opts.client_id.clone();
        let client = self.paho("client", opts).expect(expect);
        let record = broker.wait_client(&client_id);
        self.assert_reported(&record, client.local);
        client.roundtrip();
        record
    }

    /// The process id of the scenario's process `name`.
    pub fn pid(&self, name: &str) -> u32 {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("scenario {}: no process {name}", self.id))
            .child
            .id()
    }

    /// Kills the scenario's process `name` with `SIGKILL` (by its process id) and reaps it.
    pub fn kill(&mut self, name: &str) {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        proc.child.kill().expect("kill");
        proc.child.wait().expect("reap");
    }

    /// Waits until the scenario's process `name` exits by itself (after it was asked to quit).
    pub fn wait_exit(&mut self, name: &str) {
        let proc = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        wait_child(&mut proc.child, STEP_TIMEOUT)
            .unwrap_or_else(|| panic!("{name} did not exit within {STEP_TIMEOUT:?}"));
    }

    /// The current content of a file of a proxy instance (e.g. `lb2/access.log`), or "".
    pub fn read_file(&self, name: &str, file: &str) -> String {
        fs::read_to_string(self.dir.join(name).join(file)).unwrap_or_default()
    }

    /// Reads a file of an NGINX instance (e.g. `access.log`) once it is non-empty.
    pub fn wait_file(&self, name: &str, file: &str) -> String {
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
