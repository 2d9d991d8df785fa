//! The listener's metrics after a scripted mix of good, bad, skipped and timed-out
//! connections, read from `metrics-util`'s debugging recorder.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use realip_listener::{ProxyHeader, ProxyListener, metrics as names};
use realip_test_support::metrics::{Snapshotter, read, record};
use support::*;
use tokio::io::AsyncWriteExt;

const LB: &str = "127.0.0.1";
const CHECKER: &str = "127.0.0.2";
const SKIPPED: &str = "127.0.0.3";
const OTHER: &str = "127.0.0.4";
const TIMEOUT: Duration = Duration::from_millis(150);

async fn send_from(from: &str, addr: SocketAddr, bytes: &[u8]) -> tokio::net::TcpStream {
    let mut client = connect_from(from, addr).await;
    client.write_all(bytes).await.unwrap();
    client
}

async fn script(snapshotter: &Snapshotter) {
    let table = format!("{LB}=require; {CHECKER}=optional; {SKIPPED}=skip; *=reject")
        .parse::<realip_listener::PolicyTable>()
        .unwrap();
    let (mut listener, addr) = listen(
        ProxyListener::builder()
            .policy_source(table.into())
            .header_timeout(TIMEOUT)
            .max_header_len(256),
    )
    .await;
    let client: SocketAddr = "198.51.100.7:4000".parse().unwrap();
    let mut clients = Vec::new();

    // Good: v1, v2 PROXY, v2 LOCAL (a health check), no header from the checker, skipped.
    for (from, bytes) in [
        (LB, ProxyHeader::v1(client, addr).to_bytes()),
        (LB, ProxyHeader::v2(client, addr).with_crc32c().to_bytes()),
        (LB, ProxyHeader::v2_local().to_bytes()),
        (CHECKER, b"GET /health HTTP/1.1\r\n\r\n".to_vec()),
        (SKIPPED, Vec::new()),
    ] {
        clients.push(send_from(from, addr, &bytes).await);
        next(&mut listener).await.expect("accepted");
    }

    // Bad: missing, malformed, oversized, CRC, forbidden by policy, closed before a header.
    let mut bad_crc = ProxyHeader::v2(client, addr).with_crc32c().to_bytes();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 1;
    let mut oversized = ProxyHeader::v2(client, addr)
        .with_unique_id(vec![b'u'; 100])
        .with_authority(&"a".repeat(200))
        .to_bytes();
    oversized.extend_from_slice(b"data");
    for (from, bytes, reason) in [
        (LB, b"GET / HTTP/1.1\r\n\r\n".to_vec(), "missing"),
        (LB, b"PROXY TCP4 nonsense\r\n".to_vec(), "invalid"),
        (LB, oversized, "oversized"),
        (LB, bad_crc, "crc32c"),
        (OTHER, ProxyHeader::v1(client, addr).to_bytes(), "forbidden"),
    ] {
        clients.push(send_from(from, addr, &bytes).await);
        let err = next(&mut listener).await.expect_err(reason);
        assert_eq!(err.reason(), reason, "{err}");
    }
    drop(connect_from(LB, addr).await);
    let err = next(&mut listener).await.expect_err("closed");
    assert_eq!(err.reason(), "closed");

    // Timed out: two silent connections, pending until the header timeout.
    let silent = [connect_from(LB, addr).await, connect_from(LB, addr).await];
    tokio::time::sleep(TIMEOUT / 3).await;
    // Polling accepts them into the pending set; nothing is ready yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(10), listener.try_accept())
            .await
            .is_err()
    );
    let during = read(snapshotter);
    assert_eq!(
        during.get(names::PENDING_HANDSHAKES),
        Some(&2.0),
        "{during:#?}"
    );
    for _ in &silent {
        let err = within("timeout", listener.try_accept())
            .await
            .expect_err("timeout");
        assert_eq!(err.reason(), "timeout");
    }
    let after = read(snapshotter);
    // The recorder drained the gauge at the first read: the two timed-out handshakes left.
    assert_eq!(
        after.get(names::PENDING_HANDSHAKES),
        Some(&-2.0),
        "{after:#?}"
    );
    // Both waited (and `during` drained the samples of the ones before them, if any).
    assert_eq!(
        after.get(names::HEADER_WAIT_SECONDS),
        Some(&2.0),
        "{after:#?}"
    );

    let counted = |m: &BTreeMap<String, f64>, name: &str, label: &str, value: &str| {
        m.get(&format!("{name}{{{label}={value}}}"))
            .copied()
            .unwrap_or(0.0)
    };
    let total = |name: &str, label: &str, value: &str| {
        counted(&during, name, label, value) + counted(&after, name, label, value)
    };
    for outcome in ["v1", "v2_proxy", "v2_local", "none", "skipped"] {
        assert_eq!(
            total(names::HANDSHAKES_TOTAL, "outcome", outcome),
            1.0,
            "outcome {outcome}: {during:#?} {after:#?}"
        );
    }
    for reason in [
        "missing",
        "malformed",
        "oversized",
        "crc",
        "policy",
        "closed_before_header",
    ] {
        assert_eq!(
            total(names::REJECTIONS_TOTAL, "reason", reason),
            1.0,
            "reason {reason}: {during:#?} {after:#?}"
        );
    }
    assert_eq!(total(names::REJECTIONS_TOTAL, "reason", "timeout"), 2.0);
    drop(clients);
}

#[test]
fn counts_after_good_bad_skipped_and_timed_out_connections() {
    record(|snapshotter| async move { script(&snapshotter).await });
}
