//! `GET /metrics` on the admin listener: the Prometheus text format (version 0.0.4), rendered
//! by `metrics-exporter-prometheus` from everything recorded through the `metrics` facade:
//! `realip-listener`'s handshakes, `realip-tower`'s resolutions and the broker's own counters
//! below.
//!
//! | Name | Type | Labels | Meaning |
//! |------|------|--------|---------|
//! | `realip_broker_connections_total` | counter | `listener` | connections handed to the MQTT session, by listener (`tcp:default`, `ws:default`, `ssl:default`, `wss:default`) |
//! | `realip_broker_connections` | gauge | `listener` | those connections open now |
//! | `realip_broker_messages_received_total` | counter | | PUBLISH packets received from clients |
//! | `realip_broker_messages_sent_total` | counter | | PUBLISH packets sent to clients (redeliveries included) |
//! | `realip_broker_received_bytes_total` | counter | | MQTT bytes received (under WebSocket, the frames' payloads) |
//! | `realip_broker_sent_bytes_total` | counter | | MQTT bytes sent |
//! | `realip_broker_rejections_total` | counter | `reason` | connections the broker refused or closed before a session, by [`Reject`] |
//! | `realip_broker_reloads_total` | counter | `result`: `ok`, `error` | configuration reloads (SIGHUP or the admin API) |

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Counter of connections handed to the MQTT session, by `listener`.
pub(crate) const CONNECTIONS_TOTAL: &str = "realip_broker_connections_total";
/// Gauge of open connections, by `listener`.
pub(crate) const CONNECTIONS: &str = "realip_broker_connections";
// The traffic series, counted per connection by `crate::metrics`.
pub(crate) use crate::metrics::{
    MESSAGES_RECEIVED_TOTAL, MESSAGES_SENT_TOTAL, RECEIVED_BYTES_TOTAL, SENT_BYTES_TOTAL,
};
/// Counter of refused connections, by `reason`.
pub(crate) const REJECTIONS_TOTAL: &str = "realip_broker_rejections_total";
/// Counter of configuration reloads, by `result`.
pub(crate) const RELOADS_TOTAL: &str = "realip_broker_reloads_total";

/// Buckets of `realip_listener_header_wait_seconds`, in seconds: a PROXY header normally
/// arrives in well under a millisecond; the top buckets catch peers near the timeout.
const HEADER_WAIT_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0];

/// How often the recorder's histograms are compacted.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Why the broker refused a connection: the `reason` label of
/// `realip_broker_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// A connection without a PROXY header from a peer that must send one.
    MissingProxyHeader,
    /// A PROXY header from a peer whose headers are not believed.
    UntrustedProxyHeader,
    /// The real client address is outside `--allow` or inside `--deny`.
    Denied,
    /// `--tls-identity cn-as-username` and no verified client certificate.
    NoVerifiedCertificate,
    /// An empty client id with a persistent session (MQTT 3.1.1).
    ClientId,
    /// MQTT 5 enhanced authentication, which is not supported.
    AuthenticationMethod,
    /// An MQTT protocol level other than 3.1.1 and 5.
    ProtocolVersion,
    /// No CONNECT within the broker's connect timeout.
    ConnectTimeout,
    /// A first packet that is not a well-formed CONNECT.
    MalformedConnect,
}

impl Reject {
    const ALL: [Self; 9] = [
        Self::MissingProxyHeader,
        Self::UntrustedProxyHeader,
        Self::Denied,
        Self::NoVerifiedCertificate,
        Self::ClientId,
        Self::AuthenticationMethod,
        Self::ProtocolVersion,
        Self::ConnectTimeout,
        Self::MalformedConnect,
    ];

    /// The label value.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::MissingProxyHeader => "missing_proxy_header",
            Self::UntrustedProxyHeader => "untrusted_proxy_header",
            Self::Denied => "denied",
            Self::NoVerifiedCertificate => "no_verified_certificate",
            Self::ClientId => "client_id",
            Self::AuthenticationMethod => "authentication_method",
            Self::ProtocolVersion => "protocol_version",
            Self::ConnectTimeout => "connect_timeout",
            Self::MalformedConnect => "malformed_connect",
        }
    }

    /// Counts one refused connection.
    pub(crate) fn count(self) {
        counter!(REJECTIONS_TOTAL, "reason" => self.as_str()).increment(1);
    }
}

/// Installs the Prometheus recorder as the process's `metrics` recorder, describes the
/// broker's series and registers every labelled counter at zero (a series that exists before
/// its first event lets `rate()` and alerts see that first event). `listeners` are the names
/// of the listeners that are on.
pub(crate) fn install(listeners: &[&'static str]) -> Result<PrometheusHandle, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(realip_listener::metrics::HEADER_WAIT_SECONDS.to_owned()),
            &HEADER_WAIT_BUCKETS,
        )
        .map_err(|e| format!("metrics: {e}"))?
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    describe_counter!(
        CONNECTIONS_TOTAL,
        Unit::Count,
        "Connections handed to the MQTT session, by listener."
    );
    describe_gauge!(CONNECTIONS, Unit::Count, "Open connections, by listener.");
    describe_counter!(
        MESSAGES_RECEIVED_TOTAL,
        Unit::Count,
        "PUBLISH packets received from clients."
    );
    describe_counter!(
        MESSAGES_SENT_TOTAL,
        Unit::Count,
        "PUBLISH packets sent to clients, redeliveries included."
    );
    describe_counter!(RECEIVED_BYTES_TOTAL, Unit::Bytes, "MQTT bytes received.");
    describe_counter!(SENT_BYTES_TOTAL, Unit::Bytes, "MQTT bytes sent.");
    describe_counter!(
        REJECTIONS_TOTAL,
        Unit::Count,
        "Connections the broker refused, by reason."
    );
    describe_counter!(
        RELOADS_TOTAL,
        Unit::Count,
        "Configuration reloads, by result."
    );
    let series = listeners
        .iter()
        .map(|&listener| {
            let series = ListenerSeries {
                listener,
                total: counter!(CONNECTIONS_TOTAL, "listener" => listener),
                open: gauge!(CONNECTIONS, "listener" => listener),
            };
            series.total.absolute(0);
            series.open.set(0.0);
            series
        })
        .collect();
    // Installed once per process: a second call fails at `install_recorder` above.
    let _ = LISTENER_SERIES.set(series);
    for reject in Reject::ALL {
        counter!(REJECTIONS_TOTAL, "reason" => reject.as_str()).absolute(0);
    }
    for name in [
        MESSAGES_RECEIVED_TOTAL,
        MESSAGES_SENT_TOTAL,
        RECEIVED_BYTES_TOTAL,
        SENT_BYTES_TOTAL,
    ] {
        counter!(name).absolute(0);
    }
    for result in ["ok", "error"] {
        counter!(RELOADS_TOTAL, "result" => result).absolute(0);
    }
    Ok(handle)
}

/// Compacts the recorder's histograms every few seconds, until the broker stops.
pub(crate) async fn upkeep(handle: PrometheusHandle, stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    let mut stop = stop;
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// `GET /metrics`.
pub(crate) fn router(handle: PrometheusHandle) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .with_state(handle)
}

async fn render(State(handle): State<PrometheusHandle>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
}

/// The connection series of one listener, looked up once when the recorder is installed:
/// `counter!` with a label builds the key (and allocates its label list) on every call, which
/// the connection path then did twice per connection.
#[derive(Debug)]
struct ListenerSeries {
    listener: &'static str,
    total: Counter,
    open: Gauge,
}

/// Set by [`install`]; without a recorder (no admin listener) nothing is counted.
static LISTENER_SERIES: OnceLock<Vec<ListenerSeries>> = OnceLock::new();

/// One open connection on `listener`: counted at once, and in the gauge until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    series: Option<&'static ListenerSeries>,
}

impl OpenConnection {
    pub(crate) fn new(listener: &'static str) -> Self {
        let series = LISTENER_SERIES
            .get()
            .and_then(|all| all.iter().find(|s| s.listener == listener));
        if let Some(series) = series {
            series.total.increment(1);
            series.open.increment(1.0);
        }
        Self { series }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(series) = self.series {
            series.open.decrement(1.0);
        }
    }
}
