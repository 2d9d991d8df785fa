//! The broker as a process for its integration tests; the clients, the HTTP getter and the
//! tool checks come from `realip-test-support`, shared with the workspace's end-to-end suite.

#![allow(dead_code, unused_imports, unreachable_pub, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use realip_test_support::{
    Paho, RawClient, WsClient, bind_connect, connect_packet, have, have_mosquitto, have_paho, http,
    read_to_close, v5_aliased_publish, v5_connect, v5_connect_with, v5_publishes, wait_for,
};

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
        realip_test_support::http_json(self.admin, "GET", path)
    }

    /// The admin API's record of `clientid`, waiting for it to appear.
    pub fn client(&self, clientid: &str) -> Value {
        realip_test_support::wait_client(self.admin, clientid)
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

/// `mosquitto_pub` or `mosquitto_sub` (`bin`) pointed at the broker's TCP listener, speaking
/// `version` (`mqttv311`, `mqttv5`).
pub fn mosquitto_cmd(bin: &str, broker: &BrokerProcess, version: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["-h", "127.0.0.1", "-p", &broker.tcp().port().to_string()])
        .args(["-V", version]);
    command
}
