//! External programs a test needs, and what happens when one is missing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::wait::say;

pub(crate) const NGINX: &str = "nginx";
pub(crate) const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
pub(crate) const HAPROXY: &str = "haproxy";
pub(crate) const PYTHON: &str = "python3";
pub(crate) const CHROMIUM: &str = "chromium";

/// The MQTT.js browser bundle, installed by `npm ci --prefix tests/browser` (`.ci/run` does).
pub(crate) fn mqtt_js_bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/browser/node_modules/mqtt/dist/mqtt.min.js")
}

/// External programs a test needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// `nginx` with the dynamic stream module.
    Nginx,
    /// `haproxy`.
    Haproxy,
    /// `mosquitto_pub` and `mosquitto_sub`.
    Mosquitto,
    /// `python3` with `paho-mqtt` 2.x.
    Paho,
    /// Debian's `chromium`, run headless.
    Chromium,
    /// MQTT.js's browser bundle from npm (`tests/browser/node_modules`).
    MqttJs,
}

impl Tool {
    /// Why the tool cannot be used here, or `None` when it can.
    pub fn missing(self) -> Option<String> {
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
            Tool::Chromium => which(CHROMIUM)
                .is_none()
                .then(|| "chromium not found in PATH (apt-get install chromium)".into()),
            Tool::MqttJs => (!mqtt_js_bundle().is_file()).then(|| {
                format!(
                    "{} missing (npm ci --prefix tests/browser)",
                    mqtt_js_bundle().display()
                )
            }),
        }
    }
}

/// Whether every tool in `tools` is usable for `what` (e.g. `scenario T1`).
///
/// When one is not: with `CI=true` this panics (a CI run never passes by skipping); otherwise
/// it prints one loud `SKIPPED` line and returns `false`, and the caller returns.
pub fn require(what: &str, tools: &[Tool]) -> bool {
    let missing: Vec<String> = tools.iter().filter_map(|t| t.missing()).collect();
    if missing.is_empty() {
        return true;
    }
    skip_or_fail(what, &missing.join("; "))
}

/// Whether the running test may go on with a program that is `usable` or not (`tool` names it
/// in the messages): the rule of [`require`] for programs that are not a [`Tool`].
pub fn have(tool: &str, usable: bool) -> bool {
    usable || skip_or_fail(&current_test(), &format!("{tool} is not usable here"))
}

/// With `CI=true`, panics; otherwise prints one loud `SKIPPED` line. Returns `false`.
fn skip_or_fail(what: &str, why: &str) -> bool {
    assert!(
        !is_ci(),
        "{what}: required tool missing with CI=true: {why}"
    );
    say(format_args!("!!!!!!!! SKIPPED {what}: {why} !!!!!!!!"));
    false
}

/// [`require`] of `mosquitto_pub`/`mosquitto_sub` for the running test.
pub fn have_mosquitto() -> bool {
    require(&current_test(), &[Tool::Mosquitto])
}

/// [`require`] of paho-mqtt for the running test.
pub fn have_paho() -> bool {
    require(&current_test(), &[Tool::Paho])
}

fn current_test() -> String {
    let thread = std::thread::current();
    format!("test {}", thread.name().unwrap_or("?"))
}

pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .chain([PathBuf::from("/usr/sbin").join(program)])
        .find(|p| p.is_file())
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub(crate) fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
