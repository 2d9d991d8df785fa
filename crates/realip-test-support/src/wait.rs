//! Timeouts, polling and the lines a test prints past libtest's capture.

use std::io::Write as _;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long any single step (a process becoming ready, a client connecting, a message
/// arriving) may take before the test fails.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// Calls `f` every 25 ms until it returns `Some`, or `None` after `timeout`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The exit status of `child` once it exits, or `None` after `timeout`.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    wait_for(timeout, || child.try_wait().ok().flatten())
}

/// Prints one line straight to stderr, past libtest's output capture, so that the scenario
/// lines (`scenario T1: ok …`, `SKIPPED …`) show in a plain `cargo test` run.
pub fn say(line: std::fmt::Arguments<'_>) {
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{line}");
}
