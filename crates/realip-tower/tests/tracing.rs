//! The layer's logs: the client recorded on the request span, `debug` for a resolution,
//! `warn` for a rejected header, a burst per interval in a flood.

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Request;
use realip_core::TrustedProxies;
use realip_tower::{PeerAddr, RealIpLayer};
use tower::{Layer, ServiceExt, service_fn};
use tracing::Instrument;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// Records this thread's events at `debug` and above, as text, while the guard lives.
fn capture() -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

async fn run(headers: &[(&str, &str)], peer: &str) -> String {
    let (buffer, _guard) = capture();

    let svc =
        RealIpLayer::x_forwarded_for_recursive("10.0.0.0/8".parse::<TrustedProxies>().unwrap())
            .layer(service_fn(|_req: Request<()>| async move {
                tracing::info!("handler");
                Ok::<_, Infallible>(())
            }));
    let mut builder = Request::get("/");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut req = builder.body(()).unwrap();
    req.extensions_mut()
        .insert(PeerAddr::Inet(peer.parse().unwrap()));
    let span = tracing::info_span!("request", client = tracing::field::Empty);
    svc.oneshot(req).instrument(span).await.unwrap();
    buffer.text()
}

#[tokio::test]
async fn client_is_recorded_on_the_request_span() {
    let logs = run(
        &[
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
            ("x-forwarded-port", "52662, 40001"),
        ],
        "10.0.0.2:4000",
    )
    .await;
    let handler = logs.lines().find(|l| l.contains("handler")).unwrap();
    assert!(
        handler.contains("request{client=203.0.113.7:52662}"),
        "{logs}"
    );
    let resolved = logs
        .lines()
        .find(|l| l.contains("client resolved from header"))
        .unwrap();
    assert!(resolved.contains("DEBUG"), "{logs}");
}

#[tokio::test]
async fn forged_header_is_a_warning() {
    let logs = run(&[("x-forwarded-for", "10.0.0.1")], "198.51.100.7:4000").await;
    let warning = logs.lines().find(|l| l.contains("WARN")).unwrap();
    assert!(
        warning.contains("header rejected")
            && warning.contains("transport peer is not a trusted proxy"),
        "{logs}"
    );
    assert!(warning.contains("peer=198.51.100.7:4000"), "{logs}");
    let handler = logs.lines().find(|l| l.contains("handler")).unwrap();
    assert!(
        handler.contains("request{client=198.51.100.7:4000}"),
        "{logs}"
    );
}

#[tokio::test]
async fn malformed_entry_is_a_warning() {
    let logs = run(
        &[("x-forwarded-for", "6.6.6.6, evil, 10.0.0.1")],
        "10.0.0.2:4000",
    )
    .await;
    let warning = logs.lines().find(|l| l.contains("WARN")).unwrap();
    assert!(warning.contains("entry is not an IP address"), "{logs}");
    assert!(warning.contains("client=10.0.0.1"), "{logs}");
}

/// The events carry the peer, the client, the header name and a fixed reason, never bytes
/// of the header: a request cannot write text into the logs.
#[tokio::test]
async fn header_bytes_never_reach_the_logs() {
    let forged = "evil\" level=ERROR msg=\"injected, 10.0.0.1";
    let untrusted = run(&[("x-forwarded-for", forged)], "198.51.100.7:4000").await;
    let malformed = run(&[("x-forwarded-for", forged)], "10.0.0.2:4000").await;
    for logs in [untrusted, malformed] {
        assert!(logs.contains("WARN"), "{logs}");
        assert!(
            !logs.contains("evil") && !logs.contains("injected"),
            "{logs}"
        );
    }
}

/// `n` requests with a forged `X-Forwarded-For` from an untrusted peer through one layer.
async fn forged_requests(layer: RealIpLayer, n: usize) -> String {
    let (buffer, _guard) = capture();
    let svc = layer.layer(service_fn(|_req: Request<()>| async move {
        Ok::<_, Infallible>(())
    }));
    for _ in 0..n {
        let mut req = Request::get("/")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(PeerAddr::Inet("198.51.100.7:4000".parse().unwrap()));
        svc.clone().oneshot(req).await.unwrap();
    }
    buffer.text()
}

/// Any client can send a forged header with every request: a burst of `warn` lines per
/// interval, the others at `debug`.
#[tokio::test]
async fn a_flood_of_forged_headers_is_one_warning_per_interval() {
    let trusted = || "10.0.0.0/8".parse::<TrustedProxies>().unwrap();
    let rejected = |logs: &str, level: &str| {
        logs.lines()
            .filter(|l| l.contains("header rejected") && l.contains(level))
            .count()
    };
    // The default: 10 per 5 seconds.
    let logs = forged_requests(RealIpLayer::x_forwarded_for(trusted()), 25).await;
    assert_eq!(rejected(&logs, "WARN"), 10, "{logs}");
    assert_eq!(rejected(&logs, "DEBUG"), 15, "{logs}");
    assert!(logs.contains("suppressed=0"), "{logs}");

    let two = RealIpLayer::x_forwarded_for(trusted()).rejection_log(Duration::from_secs(60), 2);
    let logs = forged_requests(two, 5).await;
    assert_eq!(rejected(&logs, "WARN"), 2, "{logs}");

    let every = RealIpLayer::x_forwarded_for(trusted()).rejection_log(Duration::ZERO, 1);
    let logs = forged_requests(every, 5).await;
    assert_eq!(rejected(&logs, "WARN"), 5, "{logs}");
}
