//! What operators see: a probe is a quiet `debug`, a forged header a `warn` naming the peer
//! and the reason, an accepted connection a `debug` with the real client.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use realip_core::TrustedProxies;
use realip_listener::{Policy, ProxyHeader, ProxyListener};
use support::*;
use tracing::Level;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(Level::DEBUG)
        .with_ansi(false)
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test(flavor = "current_thread")]
async fn probe_is_debug_forgery_is_warn_success_is_debug() {
    let (captured, _guard) = capture();
    let trusted: TrustedProxies = "127.0.0.1/32".parse().unwrap();
    let (mut listener, addr) = listen(
        ProxyListener::builder()
            .trusted(trusted)
            .policy(Policy::Require),
    )
    .await;

    // A load balancer's probe: connect and close.
    drop(connect_from("127.0.0.1", addr).await);
    assert!(next(&mut listener).await.is_err());
    let lines = captured.lines();
    assert!(lines.iter().all(|l| !l.contains("WARN")), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("closed")),
        "{lines:#?}"
    );

    // A forged header from an untrusted host.
    let mut forged = connect_from("127.0.0.2", addr).await;
    let port = forged.local_addr().unwrap().port();
    ProxyHeader::v1("203.0.113.1:1".parse().unwrap(), addr)
        .write_to(&mut forged)
        .await
        .unwrap();
    assert!(next(&mut listener).await.is_err());
    let lines = captured.lines();
    let warn = lines
        .iter()
        .find(|l| l.contains("WARN"))
        .unwrap_or_else(|| panic!("no warning: {lines:#?}"));
    assert!(warn.contains(&format!("127.0.0.2:{port}")), "{warn}");
    assert!(warn.contains("forbidden"), "{warn}");

    // A good connection.
    let mut good = connect_from("127.0.0.1", addr).await;
    ProxyHeader::v2("198.51.100.3:3".parse().unwrap(), addr)
        .write_to(&mut good)
        .await
        .unwrap();
    assert!(next(&mut listener).await.is_ok());
    let lines = captured.lines();
    let accepted = lines.iter().rev().find(|l| l.contains("accepted")).unwrap();
    assert!(accepted.contains("DEBUG"), "{accepted}");
    assert!(accepted.contains("client=198.51.100.3:3"), "{accepted}");
    assert!(
        accepted.contains("version=\"v2\"") || accepted.contains("version=v2"),
        "{accepted}"
    );
}
