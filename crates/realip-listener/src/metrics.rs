//! What the listener counts, through the [`metrics`](https://docs.rs/metrics) facade when the
//! `metrics` feature is on (and nothing at all when it is off).
//!
//! | Name | Type | Labels | Meaning |
//! |------|------|--------|---------|
//! | `realip_listener_handshakes_total` | counter | `outcome`: `v1`, `v2_proxy`, `v2_local`, `none`, `skipped` | connections handed to the application, by what their first bytes held (`none`: no header, or one read and discarded under `ignore`; `skipped`: policy `skip`, nothing read) |
//! | `realip_listener_rejections_total` | counter | `reason`: `missing`, `malformed`, `oversized`, `crc`, `policy`, `timeout`, `closed_before_header` | connections closed by the handshake, by [`HandshakeError`] |
//! | `realip_listener_pending_handshakes` | gauge | | handshakes waiting for their header's bytes |
//! | `realip_listener_header_wait_seconds` | histogram | | from accept to the end of a handshake that had to wait for bytes, whatever its outcome |
//!
//! Without a recorder installed the `metrics` macros do nothing but look one up; without
//! the feature, nothing is recorded. The names are constants here for dashboards and tests.
//!
//! # Example
//!
//! ```
//! use realip_listener::metrics;
//! assert_eq!(metrics::HANDSHAKES_TOTAL, "realip_listener_handshakes_total");
//! assert!(metrics::HEADER_WAIT_SECONDS.ends_with("_seconds"));
//! ```

use tokio::time::Instant;

use crate::error::HandshakeError;
use crate::handshake::Connection;
use crate::header::info::{Command, ProxyVersion};

/// Counter of connections handed to the application, by `outcome`.
pub const HANDSHAKES_TOTAL: &str = "realip_listener_handshakes_total";
/// Counter of connections the handshake closed, by `reason`.
pub const REJECTIONS_TOTAL: &str = "realip_listener_rejections_total";
/// Gauge of handshakes waiting for bytes.
pub const PENDING_HANDSHAKES: &str = "realip_listener_pending_handshakes";
/// Histogram of the time from accept to the end of a handshake that waited, in seconds.
pub const HEADER_WAIT_SECONDS: &str = "realip_listener_header_wait_seconds";

/// The `outcome` label of a connection handed out.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn outcome<IO>(connection: &Connection<IO>) -> &'static str {
    match connection.1.proxy_info() {
        None => "none",
        Some(info) => match (info.version(), info.command()) {
            (ProxyVersion::V1, _) => "v1",
            (ProxyVersion::V2, Command::Local) => "v2_local",
            (ProxyVersion::V2, _) => "v2_proxy",
            // Simple Proxy Protocol is UDP only: a TCP handshake never yields it.
            (ProxyVersion::Spp, _) => "spp",
        },
    }
}

/// The `reason` label of a handshake failure, from [`HandshakeError::reason`].
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
fn reason(err: &HandshakeError) -> &'static str {
    match err.reason() {
        "invalid" => "malformed",
        "crc32c" => "crc",
        "forbidden" => "policy",
        reason @ ("missing" | "oversized" | "timeout") => reason,
        // Closed, reset or failed before a complete header (`closed`, `truncated`, `io`).
        _ => "closed_before_header",
    }
}

/// Increments counter `$name` (the literal of one of the name constants above) with label
/// `$label` set to `$value`. The name and each value listed are written out as literals, so
/// that their key is a static, hashed at compile time: no allocation and no hashing per
/// connection, what a connection costs with the feature on and no recorder installed.
#[cfg(feature = "metrics")]
macro_rules! count_with_label {
    ($name:literal, $label:literal, $value:expr, [$($known:literal),*]) => {
        match $value {
            $($known => metrics::counter!($name, $label => $known).increment(1),)*
            other => metrics::counter!($name, $label => other).increment(1),
        }
    };
}

/// Counts a finished handshake (not a skipped connection: [`skipped`]).
#[inline]
pub(crate) fn finished<IO>(result: &Result<Connection<IO>, HandshakeError>) {
    #[cfg(feature = "metrics")]
    match result {
        Ok(connection) => count_with_label!(
            "realip_listener_handshakes_total",
            "outcome",
            outcome(connection),
            ["none", "v1", "v2_proxy", "v2_local"]
        ),
        Err(err) => count_with_label!(
            "realip_listener_rejections_total",
            "reason",
            reason(err),
            [
                "closed_before_header",
                "timeout",
                "missing",
                "malformed",
                "oversized",
                "crc",
                "policy"
            ]
        ),
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// Counts a connection handed out under [`Policy::Skip`](crate::Policy::Skip).
#[inline]
pub(crate) fn skipped() {
    #[cfg(feature = "metrics")]
    metrics::counter!(HANDSHAKES_TOTAL, "outcome" => "skipped").increment(1);
}

/// Records how long a handshake that waited took, from its accept at `accepted`.
#[inline]
pub(crate) fn header_wait(accepted: Instant) {
    #[cfg(feature = "metrics")]
    metrics::histogram!(HEADER_WAIT_SECONDS).record(accepted.elapsed().as_secs_f64());
    #[cfg(not(feature = "metrics"))]
    let _ = accepted;
}

/// Counts one handshake in [`PENDING_HANDSHAKES`] for as long as it lives (a zero-sized
/// value either way).
#[derive(Debug)]
pub(crate) struct PendingGuard(());

impl PendingGuard {
    #[inline]
    pub(crate) fn new() -> Self {
        #[cfg(feature = "metrics")]
        metrics::gauge!(PENDING_HANDSHAKES).increment(1.0);
        Self(())
    }
}

impl Drop for PendingGuard {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!(PENDING_HANDSHAKES).decrement(1.0);
    }
}
