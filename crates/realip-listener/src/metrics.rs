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
#[cfg(feature = "metrics")]
use crate::header::info::{Command, ProxyVersion};

/// Counter of connections handed to the application, by `outcome`.
pub const HANDSHAKES_TOTAL: &str = "realip_listener_handshakes_total";
/// Counter of connections the handshake closed, by `reason`.
pub const REJECTIONS_TOTAL: &str = "realip_listener_rejections_total";
/// Gauge of handshakes waiting for bytes.
pub const PENDING_HANDSHAKES: &str = "realip_listener_pending_handshakes";
/// Histogram of the time from accept to the end of a handshake that waited, in seconds.
pub const HEADER_WAIT_SECONDS: &str = "realip_listener_header_wait_seconds";

// The `metrics` macros below are given each name and label value as a literal (the
// constants above, written out): their key is then a static hashed at compile time, so that
// a connection costs no allocation and no hashing, only the recorder lookup, when no
// recorder is installed. The metrics test reads them back through the constants.

/// Counts a finished handshake (not a skipped connection: [`skipped`]): the connection
/// handed out by what its first bytes held, or the rejection by [`HandshakeError::reason`].
#[inline]
pub(crate) fn finished<IO>(result: &Result<Connection<IO>, HandshakeError>) {
    #[cfg(feature = "metrics")]
    {
        macro_rules! handed_out {
            ($outcome:literal) => {
                metrics::counter!("realip_listener_handshakes_total", "outcome" => $outcome)
                    .increment(1)
            };
        }
        macro_rules! rejected {
            ($reason:literal) => {
                metrics::counter!("realip_listener_rejections_total", "reason" => $reason)
                    .increment(1)
            };
        }
        match result {
            Ok(connection) => match connection.1.proxy_info() {
                None => handed_out!("none"),
                Some(info) => match (info.version(), info.command()) {
                    (ProxyVersion::V1, _) => handed_out!("v1"),
                    (ProxyVersion::V2, Command::Local) => handed_out!("v2_local"),
                    (ProxyVersion::V2, _) => handed_out!("v2_proxy"),
                    // Simple Proxy Protocol is UDP only: a TCP handshake never yields it.
                    (ProxyVersion::Spp, _) => handed_out!("spp"),
                },
            },
            Err(err) => match err.reason() {
                "invalid" => rejected!("malformed"),
                "crc32c" => rejected!("crc"),
                "forbidden" => rejected!("policy"),
                "missing" => rejected!("missing"),
                "oversized" => rejected!("oversized"),
                "timeout" => rejected!("timeout"),
                // Closed, reset or failed before a complete header (`closed`, `truncated`,
                // `io`).
                _ => rejected!("closed_before_header"),
            },
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = result;
}

/// Counts a connection handed out under [`Policy::Skip`](crate::Policy::Skip).
#[inline]
pub(crate) fn skipped() {
    #[cfg(feature = "metrics")]
    metrics::counter!("realip_listener_handshakes_total", "outcome" => "skipped").increment(1);
}

/// Records how long a handshake that waited took, from its accept at `accepted`.
#[inline]
pub(crate) fn header_wait(accepted: Instant) {
    #[cfg(feature = "metrics")]
    metrics::histogram!("realip_listener_header_wait_seconds")
        .record(accepted.elapsed().as_secs_f64());
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
        metrics::gauge!("realip_listener_pending_handshakes").increment(1.0);
        Self(())
    }
}

impl Drop for PendingGuard {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("realip_listener_pending_handshakes").decrement(1.0);
    }
}
