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

use crate::resolution::Resolution;
#[cfg(feature = "metrics")]
use crate::resolution::{Fallback, Outcome};

/// Counter of resolved requests, by `source`.
pub const REQUESTS_TOTAL: &str = "realip_tower_requests_total";
/// Counter of requests whose header did not decide, by `reason`.
pub const FALLBACKS_TOTAL: &str = "realip_tower_fallbacks_total";

/// Counts one resolved request. Not inlined with the feature on: its recorder lookups would
/// grow `RealIp::call` past the size at which the compiler still inlines the request's
/// extension insert into it (about 70 instructions per request more, measured with
/// callgrind).
#[cfg_attr(feature = "metrics", inline(never))]
#[cfg_attr(not(feature = "metrics"), inline)]
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
        // The `reason` label of a fallback, its key static as well.
        macro_rules! fallback {
            ($reason:literal) => {
                metrics::counter!("realip_tower_fallbacks_total", "reason" => $reason)
                    .increment(1)
            };
        }
        if let Outcome::Fallback(fallback) = resolution.outcome() {
            match fallback {
                Fallback::UntrustedPeer => fallback!("untrusted_peer"),
                Fallback::Invalid(_) => fallback!("malformed_entry"),
                Fallback::MultipleLines(_) => fallback!("multiple_lines"),
                Fallback::TooFewHops { .. } => fallback!("too_few_entries"),
                Fallback::NoHeader => fallback!("no_header"),
                Fallback::NoTransportPeer => fallback!("no_transport_peer"),
                Fallback::NotWebSocket => fallback!("not_websocket"),
                Fallback::HeadersIgnored => fallback!("headers_ignored"),
            }
        }
    }
    #[cfg(not(feature = "metrics"))]
    let _ = resolution;
}
