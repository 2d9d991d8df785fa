//! `--ws-strategy` and `--ws-recursive` (and their TOML keys): every combination either
//! decides the client as its help line says, or is refused at startup with a message naming
//! the flags, never silently ignored.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{BIN, BrokerProcess, WsClient, connect_packet};
use serde_json::Value;

/// Runs the broker with `args` and returns its stderr; fails when it does not exit with
/// status 2 (a configuration error) within ten seconds.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args([
            "--tcp",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--admin",
            "off",
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker started with {args:?}; expected a configuration error");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    stderr
}

/// A TOML file in a directory of its own, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "realip-broker-ws-strategy-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("broker.toml");
        std::fs::write(&path, text).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Upgrades from `from` with `headers`, connects as `id`, and returns the client's record
/// in the admin API.
fn ws_record(broker: &BrokerProcess, from: &str, id: &str, headers: &str) -> Value {
    let mut ws = WsClient::connect(from, broker.ws(), b"", headers);
    let mut connect = BytesMut::new();
    connect_packet(id, 60).write(&mut connect).unwrap();
    ws.send(&connect);
    assert_eq!(ws.recv(), [0x20, 0x02, 0x00, 0x00], "CONNACK accepted");
    broker.client(id)
}

#[test]
fn ws_recursive_with_a_strategy_that_does_not_walk_is_refused() {
    for strategy in ["leftmost", "hops:2", "single"] {
        let stderr = refused(&[
            "--ws-header",
            "X-Forwarded-For",
            "--ws-strategy",
            strategy,
            "--ws-recursive",
        ]);
        assert!(
            stderr.contains(&format!(
                "--ws-recursive does not apply to --ws-strategy {strategy}: only trusted and \
                 forwarded walk over trusted proxies"
            )),
            "{strategy}: {stderr}"
        );
    }
    // The strategy implied by a single-value header is named as the default.
    let stderr = refused(&["--ws-header", "X-Real-IP", "--ws-recursive"]);
    assert!(
        stderr.contains(
            "--ws-recursive does not apply to --ws-strategy single (the default for X-Real-IP)"
        ),
        "{stderr}"
    );
    // The same from the TOML file.
    let file = ConfigFile::new(
        "leftmost",
        "ws-header = \"X-Forwarded-For\"\nws-strategy = \"leftmost\"\nws-recursive = true\n",
    );
    let stderr = refused(&["--config", file.path()]);
    assert!(
        stderr.contains("--ws-recursive does not apply to --ws-strategy leftmost"),
        "{stderr}"
    );
    // And from the file's flag with the command line's strategy.
    let file = ConfigFile::new("recursive-only", "ws-recursive = true\n");
    let stderr = refused(&[
        "--config",
        file.path(),
        "--ws-header",
        "X-Forwarded-For",
        "--ws-strategy",
        "hops:1",
    ]);
    assert!(
        stderr.contains("--ws-recursive does not apply to --ws-strategy hops:1"),
        "{stderr}"
    );
}

#[test]
fn strategy_names_that_decide_nothing_or_nobody_knows_are_refused() {
    let stderr = refused(&["--ws-header", "X-Forwarded-For", "--ws-strategy", "hops:0"]);
    assert!(stderr.contains("hops:N needs N >= 1"), "{stderr}");
    let stderr = refused(&[
        "--ws-header",
        "X-Forwarded-For",
        "--ws-strategy",
        "rightmost",
    ]);
    assert!(stderr.contains("invalid --ws-strategy"), "{stderr}");
    assert!(stderr.contains("\"rightmost\""), "{stderr}");
    assert!(stderr.contains("trusted-recursive"), "{stderr}");
    let stderr = refused(&["--ws-recursive"]);
    assert!(
        stderr.contains("--ws-recursive needs --ws-header"),
        "{stderr}"
    );
    let stderr = refused(&["--ws-strategy", "leftmost"]);
    assert!(
        stderr.contains("--ws-strategy needs --ws-header"),
        "{stderr}"
    );
}

#[test]
fn the_walking_strategies_take_the_recursive_flag_or_name() {
    let xff = "X-Forwarded-For: 198.51.100.9, 127.0.0.11\r\n";
    let forwarded = "Forwarded: for=198.51.100.9, for=127.0.0.11\r\n";
    let trusted = ["--trusted-proxy", "127.0.0.0/8"];
    // (flags, request headers, client the admin API shows)
    let cases: [(&[&str], &str, &str); 8] = [
        // Non-recursive: the rightmost entry, although it is a trusted proxy.
        (&["--ws-header", "X-Forwarded-For"], xff, "127.0.0.11"),
        (
            &["--ws-header", "X-Forwarded-For", "--ws-recursive"],
            xff,
            "198.51.100.9",
        ),
        (
            &[
                "--ws-header",
                "X-Forwarded-For",
                "--ws-strategy",
                "trusted-recursive",
            ],
            xff,
            "198.51.100.9",
        ),
        (
            &[
                "--ws-header",
                "X-Forwarded-For",
                "--ws-strategy",
                "Trusted",
                "--ws-recursive",
            ],
            xff,
            "198.51.100.9",
        ),
        (&["--ws-strategy", "forwarded"], forwarded, "127.0.0.11"),
        (
            &["--ws-strategy", "forwarded", "--ws-recursive"],
            forwarded,
            "198.51.100.9",
        ),
        (
            &[
                "--ws-header",
                "Forwarded",
                "--ws-strategy",
                "forwarded-recursive",
            ],
            forwarded,
            "198.51.100.9",
        ),
        // `Forwarded` as the header implies the RFC 7239 strategy, which takes the flag.
        (
            &["--ws-header", "Forwarded", "--ws-recursive"],
            forwarded,
            "198.51.100.9",
        ),
    ];
    for (i, (flags, headers, expected)) in cases.into_iter().enumerate() {
        let mut args = flags.to_vec();
        args.extend(trusted);
        let broker = BrokerProcess::start(&args);
        let id = format!("walk-{i}");
        let record = ws_record(&broker, "127.0.0.151", &id, headers);
        assert_eq!(record["ip_address"], expected, "{flags:?}");
    }
}

#[test]
fn toml_keys_set_the_same_strategy_as_the_flags() {
    // (file, request headers, record field, value the admin API shows)
    let cases = [
        (
            "ws-header = \"X-Forwarded-For\"\nws-port-header = \"X-Forwarded-Port\"\n\
             ws-strategy = \"trusted\"\nws-recursive = true\ntrusted-proxy = [\"127.0.0.0/8\"]\n",
            "X-Forwarded-For: 198.51.100.9, 127.0.0.11\r\nX-Forwarded-Port: 4711, 5000\r\n",
            "peername",
            "198.51.100.9:4711",
        ),
        // hops:N counts hops from any peer unless --trusted-proxy narrows it.
        (
            "ws-header = \"X-Forwarded-For\"\nws-strategy = \"hops:2\"\n",
            "X-Forwarded-For: 203.0.113.1, 198.51.100.9, 127.0.0.11\r\n",
            "ip_address",
            "198.51.100.9",
        ),
    ];
    for (i, (text, headers, field, expected)) in cases.into_iter().enumerate() {
        let file = ConfigFile::new(&format!("toml-{i}"), text);
        let broker = BrokerProcess::start(&["--config", file.path()]);
        let record = ws_record(&broker, "127.0.0.152", &format!("toml-{i}"), headers);
        assert_eq!(record[field], expected, "{text}");
        assert_eq!(record["ip_source"], "x-forwarded-for", "{text}");
    }
}
