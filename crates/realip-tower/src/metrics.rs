//! What the layer counts, through the [`metrics`](https://docs.rs/metrics) facade when the
//! `metrics` feature is on (and nothing at all when it is off).
//!
//! | Name | Type | Labels | Meaning |
//! |------|------|--------|---------|
//! | `realip_tower_requests_total` | counter | `source`: `socket`, `proxy_protocol`, the header's lowercase name in snake case (`x_forwarded_for`, `x_real_ip`, …), or `none` | requests resolved by the layer, by where their client address came from (`none`: no client address, as for a Unix-socket peer) |
//! | `realip_tower_fallbacks_total` | counter | `reason`: `untrusted_peer`, `malformed_entry`, `multiple_lines`, `too_few_entries`, `no_header`, `no_transport_peer`, `not_websocket`, `headers_ignored` | requests whose header did not decide, by [`Fallback`] (the first four are rejected headers) |
//!
//! Label values are snake case in both crates, as the listener's `outcome` and `reason`
//! values are (the Prometheus convention for names, which exporters also follow for
//! enumerated values); a header name's dashes become underscores. Logs and
//! [`AddrSource::as_str`](realip_core::AddrSource::as_str) keep the header's own spelling.
//!
//! A request that already carried a [`ClientAddr`](realip_core::ClientAddr) (set by an
//! outer layer) is not resolved and not counted.
//!
//! # Example
//!
//! ```
//! use realip_tower::metrics;
//! assert_eq!(metrics::REQUESTS_TOTAL, "realip_tower_requests_total");
//! assert_eq!(metrics::FALLBACKS_TOTAL, "realip_tower_fallbacks_total");
//! ```

#[cfg(feature = "metrics")]
use crate::resolution::Outcome;
use crate::resolution::{Fallback, Resolution};

/// Counter of resolved requests, by `source`.
pub const REQUESTS_TOTAL: &str = "realip_tower_requests_total";
/// Counter of requests whose header did not decide, by `reason`.
pub const FALLBACKS_TOTAL: &str = "realip_tower_fallbacks_total";

/// The `reason` label of a fallback.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
const fn reason(fallback: Fallback) -> &'static str {
    match fallback {
        Fallback::UntrustedPeer => "untrusted_peer",
        Fallback::Invalid(_) => "malformed_entry",
        Fallback::MultipleLines(_) => "multiple_lines",
        Fallback::TooFewHops { .. } => "too_few_entries",
        Fallback::NoHeader => "no_header",
        Fallback::NoTransportPeer => "no_transport_peer",
        Fallback::NotWebSocket => "not_websocket",
        Fallback::HeadersIgnored => "headers_ignored",
    }
}

/// Counts one resolved request.
#[inline]
pub(crate) fn resolved(resolution: &Resolution) {
    #[cfg(feature = "metrics")]
    {
        use realip_core::AddrSource;
        // The name (`REQUESTS_TOTAL`) and the usual sources are written out as literals, so
        // that their keys are statics, hashed at compile time: no allocation and no hashing
        // per request with the feature on and no recorder installed. Any other header name
        // is converted per request.
        macro_rules! requests {
            ($source:literal) => {
                metrics::counter!("realip_tower_requests_total", "source" => $source).increment(1)
            };
        }
        match resolution.client().map(|c| c.source()) {
            None => requests!("none"),
            Some(AddrSource::Socket) => requests!("socket"),
            Some(AddrSource::ProxyProtocol) => requests!("proxy_protocol"),
            Some(other) => match other.as_str() {
                "x-forwarded-for" => requests!("x_forwarded_for"),
                "forwarded" => requests!("forwarded"),
                "x-real-ip" => requests!("x_real_ip"),
                "cf-connecting-ip" => requests!("cf_connecting_ip"),
                "true-client-ip" => requests!("true_client_ip"),
                "fly-client-ip" => requests!("fly_client_ip"),
                name => {
                    let source = name.replace('-', "_");
                    metrics::counter!(REQUESTS_TOTAL, "source" => source).increment(1);
                }
            },
        }
        if let Outcome::Fallback(fallback) = resolution.outcome() {
            metrics::counter!(FALLBACKS_TOTAL, "reason" => reason(*fallback)).increment(1);
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = resolution;
}
