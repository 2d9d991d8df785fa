//! Log levels chosen for operators: a load balancer's probe is `debug`, a forged or
//! malformed header is `warn` with the peer and the reason, a timeout is `info`.
//!
//! A flood of rejections is a burst of lines per interval and reason at its level, the rest `debug`.
//!
//! Tests in their own binary, each with a recording subscriber set for its thread only.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use realip_core::TrustedProxies;
use realip_listener::{Policy, ProxyHeader, ProxyListener};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// One recorded event: its level and fields (`message` included).
#[derive(Clone, Debug)]
struct Logged {
    level: Level,
    fields: BTreeMap<String, String>,
}

impl Logged {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Logged>>>,
    next_id: Arc<AtomicU64>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Recorder {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::always()
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if !event.metadata().target().starts_with("realip_listener") {
            return;
        }
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.events.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

impl Recorder {
    /// Takes the events recorded so far.
    fn take(&self) -> Vec<Logged> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

fn assert_one(events: &[Logged], level: Level, reason: &str, peer: SocketAddr) {
    let matching: Vec<_> = events
        .iter()
        .filter(|e| e.field("reason") == Some(reason))
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one `{reason}` event: {events:#?}"
    );
    assert_eq!(matching[0].level, level, "{reason}: {events:#?}");
    assert_eq!(
        matching[0].field("peer"),
        Some(peer.to_string().as_str()),
        "{events:#?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| e.level == Level::ERROR || (e.level == Level::WARN && level != Level::WARN)),
        "unexpected louder event: {events:#?}"
    );
}

#[tokio::test]
async fn log_levels_and_fields_for_each_kind_of_connection() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());

    // Loopback peers must send a header; a listener on another address trusts nobody.
    let mut listener = ProxyListener::builder()
        .trusted(TrustedProxies::loopback())
        .policy(Policy::Require)
        .header_timeout(Duration::from_millis(300))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();

    // A probe: connect and close without a byte -> debug, reason "closed".
    let probe = TcpStream::connect(addr).await.unwrap();
    let peer = probe.local_addr().unwrap();
    drop(probe);
    assert!(listener.try_accept().await.is_err());
    assert_one(&recorder.take(), Level::DEBUG, "closed", peer);

    // A malformed header -> warn, reason "invalid".
    let mut bad = TcpStream::connect(addr).await.unwrap();
    let peer = bad.local_addr().unwrap();
    bad.write_all(b"PROXY TCP4 1.2.3.4 nonsense\r\n")
        .await
        .unwrap();
    assert!(listener.try_accept().await.is_err());
    assert_one(&recorder.take(), Level::WARN, "invalid", peer);

    // No header from a peer that must send one -> warn, reason "missing".
    let mut direct = TcpStream::connect(addr).await.unwrap();
    let peer = direct.local_addr().unwrap();
    direct.write_all(b"CONNECT").await.unwrap();
    assert!(listener.try_accept().await.is_err());
    assert_one(&recorder.take(), Level::WARN, "missing", peer);

    // Silence until the header timeout -> info, reason "timeout".
    let silent = TcpStream::connect(addr).await.unwrap();
    let peer = silent.local_addr().unwrap();
    assert!(listener.try_accept().await.is_err());
    assert_one(&recorder.take(), Level::INFO, "timeout", peer);
    drop(silent);

    // A good connection -> debug with the real client.
    let mut good = TcpStream::connect(addr).await.unwrap();
    good.write_all(&ProxyHeader::v1("198.51.100.23:40123".parse().unwrap(), addr).to_bytes())
        .await
        .unwrap();
    let (_stream, _) = listener.try_accept().await.unwrap();
    let events = recorder.take();
    assert!(
        events
            .iter()
            .any(|e| e.level == Level::DEBUG && e.field("client") == Some("198.51.100.23:40123")),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.level == Level::DEBUG || e.level == Level::TRACE),
        "an accepted connection is not worth more than debug: {events:#?}"
    );

    // A forged header from an untrusted peer (the set trusts only 10.0.0.0/8) -> warn,
    // reason "forbidden".
    let mut listener = ProxyListener::builder()
        .trusted("10.0.0.0/8".parse::<TrustedProxies>().unwrap())
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut forged = TcpStream::connect(addr).await.unwrap();
    let peer = forged.local_addr().unwrap();
    forged
        .write_all(&ProxyHeader::v2("192.0.2.66:1".parse().unwrap(), addr).to_bytes())
        .await
        .unwrap();
    assert!(listener.try_accept().await.is_err());
    assert_one(&recorder.take(), Level::WARN, "forbidden", peer);
}

/// The events of rejected connections for `reason`, by level.
fn rejections(events: &[Logged], reason: &str) -> (Vec<Logged>, Vec<Logged>) {
    events
        .iter()
        .filter(|e| e.field("reason") == Some(reason))
        .cloned()
        .partition(|e| e.level == Level::DEBUG)
}

/// Connects `n` peers that send nothing and waits for each to time out.
async fn time_out(listener: &mut ProxyListener, addr: SocketAddr, n: usize) {
    let mut silent = Vec::new();
    for _ in 0..n {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    for _ in 0..n {
        let failed = tokio::time::timeout(Duration::from_secs(5), listener.try_accept())
            .await
            .expect("every silent peer times out");
        assert!(failed.is_err());
    }
}

#[tokio::test]
async fn a_wave_of_rejections_is_a_burst_of_lines_per_interval_and_reason_and_the_rest_debug() {
    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let mut listener = ProxyListener::builder()
        .policy(Policy::Require)
        .header_timeout(Duration::from_millis(100))
        .rejection_log(Duration::from_millis(700), 3)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();

    // 20 timeouts within a few milliseconds: three `info` lines, 17 at `debug`.
    time_out(&mut listener, addr, 20).await;
    let (debug, louder) = rejections(&recorder.take(), "timeout");
    assert_eq!(louder.len(), 3, "{louder:#?}");
    assert!(
        louder
            .iter()
            .all(|e| e.level == Level::INFO && e.field("suppressed") == Some("0")),
        "{louder:#?}"
    );
    assert_eq!(debug.len(), 17, "{debug:#?}");

    // Another reason in the same interval has its own limit.
    let mut direct = TcpStream::connect(addr).await.unwrap();
    direct.write_all(b"CONNECT").await.unwrap();
    assert!(listener.try_accept().await.is_err());
    let (debug, louder) = rejections(&recorder.take(), "missing");
    assert_eq!((louder.len(), debug.len()), (1, 0));
    assert_eq!(louder[0].level, Level::WARN);

    // After the interval, the next timeout's line counts the 17.
    tokio::time::sleep(Duration::from_millis(800)).await;
    time_out(&mut listener, addr, 1).await;
    let (debug, louder) = rejections(&recorder.take(), "timeout");
    assert_eq!((louder.len(), debug.len()), (1, 0));
    assert_eq!(louder[0].field("suppressed"), Some("17"));

    // The default (10 per 5 s) and zero (every rejection at its level).
    for (builder, logged) in [
        (ProxyListener::builder(), 10),
        (
            ProxyListener::builder().rejection_log(Duration::ZERO, 1),
            12,
        ),
    ] {
        let mut listener = builder
            .policy(Policy::Require)
            .header_timeout(Duration::from_millis(100))
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        time_out(&mut listener, addr, 12).await;
        let (debug, louder) = rejections(&recorder.take(), "timeout");
        assert_eq!((louder.len(), debug.len()), (logged, 12 - logged));
    }
}
