//! Binaries built by Cargo for the running test: never a path that may hold a stale build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;

/// The `realip-broker` binary, built (once per test process) by `cargo build -p realip-broker`.
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
    let output = Command::new(cargo)
        .arg("build")
        .args(args)
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
