//! A headless Chromium driven over the DevTools protocol: open a page, read what it computed.
//!
//! The browser runs as one of a [`Scenario`](crate::Scenario)'s processes (killed and its
//! output printed with the others); the test talks to it over the WebSocket the DevTools
//! protocol listens on (`--remote-debugging-port=0`, whose port Chromium writes to
//! `DevToolsActivePort` in its profile directory).

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::tools::{CHROMIUM, is_root, which};
use crate::wait::STEP_TIMEOUT;

/// The flags without which headless Chromium, in a closed network, spends its time on
/// connections that are refused (updates, sync, QUIC probes) or cannot start as root.
const FLAGS: &[&str] = &[
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
];

/// The command that starts headless Chromium with a fresh profile in `profile` and the
/// DevTools protocol on a free loopback port; `about:blank` is its first page.
pub(crate) fn command(profile: &Path) -> Command {
    let mut command = Command::new(which(CHROMIUM).expect("chromium"));
    command
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()));
    if is_root() {
        // Chromium refuses to run as root with its sandbox.
        command.arg("--no-sandbox");
    }
    command.arg("about:blank");
    command
}

/// The browser-wide DevTools endpoint, `ws://127.0.0.1:PORT/devtools/browser/ID`, once
/// Chromium has written it to `<profile>/DevToolsActivePort`; `None` until then.
pub(crate) fn endpoint(profile: &Path) -> Option<String> {
    let text = fs::read_to_string(profile.join("DevToolsActivePort")).ok()?;
    let mut lines = text.lines();
    let port: u16 = lines.next()?.trim().parse().ok()?;
    let path = lines.next()?.trim();
    path.starts_with("/devtools/browser/")
        .then(|| format!("ws://127.0.0.1:{port}{path}"))
}

/// A connection to a browser's DevTools endpoint.
pub struct DevTools {
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl std::fmt::Debug for DevTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevTools").finish_non_exhaustive()
    }
}

impl DevTools {
    /// Connects to `endpoint` (a `ws://` DevTools URL).
    pub fn connect(endpoint: &str) -> DevTools {
        let (socket, _) = tungstenite::connect(endpoint)
            .unwrap_or_else(|e| panic!("DevTools connection to {endpoint}: {e}"));
        if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
            stream
                .set_read_timeout(Some(STEP_TIMEOUT))
                .expect("read timeout");
        }
        DevTools { socket, next_id: 1 }
    }

    /// Calls `method` (in the page `session`, or on the browser) and returns its `result`, or
    /// the protocol's `error` object.
    pub fn call(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut request = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            request["sessionId"] = session.into();
        }
        self.socket
            .send(Message::text(request.to_string()))
            .unwrap_or_else(|e| panic!("DevTools {method}: {e}"));
        loop {
            let message = self
                .socket
                .read()
                .unwrap_or_else(|e| panic!("DevTools {method}: no answer: {e}"));
            let Message::Text(text) = message else {
                continue;
            };
            let answer: Value = serde_json::from_str(&text).expect("DevTools JSON");
            // Events (no id) and answers to earlier calls are not ours.
            if answer["id"] != id {
                continue;
            }
            return match answer.get("error") {
                Some(error) => Err(error.clone()),
                None => Ok(answer["result"].clone()),
            };
        }
    }

    /// Opens `url` in a new tab and returns the tab, attached.
    pub fn open(&mut self, url: &str) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .unwrap_or_else(|e| panic!("Target.createTarget {url}: {e}"));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .unwrap_or_else(|e| panic!("Target.attachToTarget {url}: {e}"));
        let session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        Page {
            devtools: self,
            session,
        }
    }

    /// Asks the browser to close (`Browser.close`); the process then exits.
    pub fn close_browser(mut self) {
        // The browser may close the connection before it answers.
        let _ = self.call(None, "Browser.close", json!({}));
    }
}

/// One tab of a [`DevTools`] browser.
#[derive(Debug)]
pub struct Page<'a> {
    devtools: &'a mut DevTools,
    session: String,
}

impl Page<'_> {
    /// Evaluates `expression` in the page, awaiting it if it is a promise, and returns its value
    /// (as JSON). `Err` holds the exception the page threw, or the promise's rejection.
    ///
    /// A page that is still loading has no context to evaluate in, or loses it when it
    /// navigates: the call is repeated until `timeout`.
    pub fn eval(&mut self, expression: &str, timeout: Duration) -> Result<Value, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.devtools.call(
                Some(&self.session),
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            );
            match answer {
                Ok(result) => {
                    return match result.get("exceptionDetails") {
                        Some(details) => Err(details.to_string()),
                        None => Ok(result["result"]["value"].clone()),
                    };
                }
                Err(error) => assert!(
                    Instant::now() < deadline,
                    "Runtime.evaluate failed until {timeout:?}: {error}"
                ),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
