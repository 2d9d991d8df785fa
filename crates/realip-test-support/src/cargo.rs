//! Binaries built by Cargo for the running test: never a path that may hold a stale build.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

use crate::wait::STEP_TIMEOUT;

/// The `realip-broker` binary, built (once per test process) by `cargo build -p realip-broker`
/// (with `--release` when the test itself is a release build).
///
/// In the broker package's own tests, prefer `env!("CARGO_BIN_EXE_realip-broker")`.
pub fn broker_bin() -> PathBuf {
    build(&["-p", "realip-broker", "--bin", "realip-broker"])
}

/// The facade's example `name`, built (once per test process) with every feature, so that all
/// examples share one build of the library.
pub fn example_bin(name: &str) -> PathBuf {
    build(&["-p", "realip", "--example", name, "--all-features"])
}

/// Runs `cargo build ARGS --message-format=json` in the workspace and returns the path of the
/// executable it reports, so the path is the one Cargo just brought up to date.
fn build(args: &[&str]) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<Vec<String>, PathBuf>>> = OnceLock::new();
    let key: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.get(&key) {
        return path.clone();
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // A test built with the release profile (`cargo test --release`, the load harness) runs
    // release binaries too.
    let profile: &[&str] = if cfg!(debug_assertions) {
        &[]
    } else {
        &["--release"]
    };
    let output = Command::new(cargo)
        .arg("build")
        .args(args)
        .args(profile)
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(&workspace)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("cargo build {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "cargo build {} failed",
        args.join(" ")
    );
    let path = String::from_utf8_lossy(&output.stdout)
        .lines()
        .rev()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo build {} reported no executable", args.join(" ")));
    built.insert(key, path.clone());
    path
}

/// Starts example `name` (see [`example_bin`]) as `name --bind 127.0.0.1:0 ARGS…` with
/// `RUST_LOG=info`, its stdout piped and its stderr piped (`stderr`) or discarded, waits for its
/// documented first line `listening on IP:PORT` and returns the process (killed on drop) and
/// that address.
pub async fn start_example(
    name: &'static str,
    args: &[&str],
    stderr: bool,
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::AsyncBufReadExt;
    let path = tokio::task::spawn_blocking(move || example_bin(name))
        .await
        .expect("build the example");
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
        .unwrap_or_else(|e| panic!("start example {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(STEP_TIMEOUT, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("example {name} did not start"))
        .expect("read the example's stdout")
        .unwrap_or_else(|| panic!("example {name} exited before its first line"));
    let addr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("example {name}: unexpected first line {first:?}"));
    (child, addr)
}
