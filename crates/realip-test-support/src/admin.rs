//! The broker's EMQX-shaped admin API and logs, as the tests read them.

use std::collections::BTreeMap;
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::Value;

use crate::net::http_get;
use crate::wait::{STEP_TIMEOUT, say, wait_for};

/// A running broker: its admin API address and log files.
#[derive(Debug, Clone)]
pub struct Broker {
    /// `--admin` address.
    pub admin: SocketAddr,
    pub(crate) log: [PathBuf; 2],
}

impl Broker {
    /// `GET path` on the admin API: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.admin, path)
    }

    /// The full body of `GET /api/v5/clients` (up to 10,000 clients, the API's largest page).
    pub fn clients_body(&self) -> String {
        let (status, body) = self.get("/api/v5/clients?_limit=10000");
        assert_eq!(status, 200, "GET /api/v5/clients: {body}");
        body
    }

    /// Every client record of `GET /api/v5/clients` (a bare array or EMQX's `{"data": [...]}`).
    pub fn clients(&self) -> Vec<Value> {
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
    pub fn wait_client(&self, client_id: &str) -> Value {
        wait_client(self.admin, client_id)
    }

    /// `GET /api/v5/clients/{id}` must be 404.
    pub fn assert_unknown(&self, client_id: &str) {
        let (status, body) = self.get(&format!("/api/v5/clients/{client_id}"));
        assert_eq!(status, 404, "client {client_id} should be unknown: {body}");
    }

    /// Asserts that `ip` appears nowhere in the full `GET /api/v5/clients` body (as an address,
    /// not as a prefix of a longer one).
    pub fn assert_absent(&self, ip: IpAddr, what: &str) {
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
    pub fn log(&self) -> String {
        self.log
            .iter()
            .map(|p| fs::read_to_string(p).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls the log until a line satisfies `pred`; returns that line.
    pub fn wait_log_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        wait_for(STEP_TIMEOUT, || {
            self.log().lines().find(|l| pred(l)).map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("broker never logged {what}"))
    }
}

/// Polls `GET /api/v5/clients/{id}` on the admin API at `admin` until the client is known (any
/// status but 200 and 404 fails at once); returns its record.
pub fn wait_client(admin: SocketAddr, client_id: &str) -> Value {
    let path = format!("/api/v5/clients/{client_id}");
    let mut last = (0, String::new());
    wait_for(STEP_TIMEOUT, || {
        last = http_get(admin, &path);
        assert!(
            last.0 == 200 || last.0 == 404,
            "GET {path}: {} {}",
            last.0,
            last.1
        );
        (last.0 == 200).then(|| {
            serde_json::from_str(&last.1)
                .unwrap_or_else(|e| panic!("client record is not JSON ({e}): {}", last.1))
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "GET {path}: still {} after {STEP_TIMEOUT:?}: {}",
            last.0, last.1
        )
    })
}

/// `ip:port` as the broker reported it.
pub fn reported(record: &Value) -> String {
    let ip = record["ip_address"].as_str().unwrap_or("?");
    match (ip.parse::<IpAddr>(), record["port"].as_u64()) {
        (Ok(ip), Some(port)) if u16::try_from(port).is_ok() => {
            SocketAddr::new(ip, u16::try_from(port).unwrap_or(0)).to_string()
        }
        _ => format!("{ip}:{}", record["port"]),
    }
}

/// Whether `text` contains the address `ip` delimited by non-address characters.
pub fn contains_ip(text: &str, ip: &str) -> bool {
    let bytes = text.as_bytes();
    let is_addr_char = |b: u8| b.is_ascii_hexdigit() || b == b'.' || b == b':';
    text.match_indices(ip).any(|(pos, _)| {
        let before = pos.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(pos + ip.len()).copied();
        !before.is_some_and(is_addr_char)
            && !after.is_some_and(|b| b.is_ascii_hexdigit() || b == b'.')
    })
}

/// Every string and number in a JSON value, keyed by its path (`.proxy.tlvs[0].type`).
pub fn json_strings(value: &Value) -> BTreeMap<String, String> {
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
