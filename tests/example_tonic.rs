//! The `tonic_grpc` example as a process, called by a real gRPC client (tonic's generated
//! `grpc.health.v1` client) from distinct loopback addresses: the line the example prints for a
//! call names the forwarded client only when the call comes from a trusted proxy.
#![cfg(all(feature = "listener", feature = "tower", feature = "axum"))]

use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;

use realip_test_support::{STEP_TIMEOUT, example_bin, say};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// One Health/Check call from `from`, with `x-forwarded-for: forwarded`.
async fn check_from(server: SocketAddr, from: IpAddr, forwarded: &str) {
    let channel = Endpoint::from_shared(format!("http://{server}"))
        .expect("endpoint")
        .local_address(Some(from))
        .connect()
        .await
        .expect("connect to the example");
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.metadata_mut().insert(
        "x-forwarded-for",
        forwarded.parse().expect("metadata value"),
    );
    HealthClient::new(channel)
        .check(request)
        .await
        .expect("Health/Check answers");
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(STEP_TIMEOUT, lines.next_line())
        .await
        .expect("the example prints a line")
        .expect("read stdout")
        .expect("the example is running")
}

#[tokio::test]
async fn tonic_grpc_believes_x_forwarded_for_from_trusted_proxies_only() {
    let path = tokio::task::spawn_blocking(|| example_bin("tonic_grpc"))
        .await
        .expect("build the example");
    let mut child = Command::new(path)
        .args(["127.0.0.1:0", "127.0.0.1/32"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the example");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = next_line(&mut lines).await;
    let server: SocketAddr = first
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));

    // From the trusted proxy 127.0.0.1: the header's client.
    check_from(server, [127, 0, 0, 1].into(), "203.0.113.7").await;
    let line = next_line(&mut lines).await;
    assert_eq!(line, "grpc /grpc.health.v1.Health/Check client=203.0.113.7");
    say(format_args!("example tonic_grpc: trusted proxy -> {line}"));

    // From 127.0.0.2, not trusted: the header is ignored, the client is the peer itself.
    check_from(server, [127, 0, 0, 2].into(), "203.0.113.7").await;
    let line = next_line(&mut lines).await;
    let client = line
        .strip_prefix("grpc /grpc.health.v1.Health/Check client=")
        .and_then(|c| c.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    assert_eq!(client.ip(), IpAddr::from([127, 0, 0, 2]), "{line}");
    say(format_args!("example tonic_grpc: untrusted peer -> {line}"));
}
