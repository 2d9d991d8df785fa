//! The policy matrix: each policy, with and without a header, from trusted and untrusted
//! peers.

mod support;

use std::net::SocketAddr;

use realip_core::{AddrSource, PeerAddr, TrustedProxies};
use realip_listener::{HandshakeError, Policy, PolicySource, ProxyHeader, ProxyListener};
use support::*;
use tokio::io::AsyncWriteExt;

const TRUSTED_PEER: &str = "127.0.0.1";
const UNTRUSTED_PEER: &str = "127.0.0.2";
const FORGED: &str = "203.0.113.66:6666";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Input {
    V1,
    V2,
    Plain,
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// Served with the header's address; the application reads only its data.
    FromHeader,
    /// Served with the socket address; the application reads only its data.
    Socket,
    /// Served with the socket address; the application reads the header bytes too.
    SocketRaw,
    /// Closed: header required but missing.
    Missing,
    /// Closed: header not allowed.
    Forbidden,
}

fn bytes_for(input: Input, dst: SocketAddr) -> Vec<u8> {
    let src: SocketAddr = FORGED.parse().unwrap();
    match input {
        Input::V1 => ProxyHeader::v1(src, dst).to_bytes(),
        Input::V2 => ProxyHeader::v2(src, dst).with_crc32c().to_bytes(),
        Input::Plain => Vec::new(),
    }
}

async fn run(listener: &mut ProxyListener, addr: SocketAddr, from: &str, input: Input) -> Outcome {
    let header = bytes_for(input, addr);
    let mut client = connect_from(from, addr).await;
    let mut bytes = header.clone();
    bytes.extend_from_slice(b"MQTT-CONNECT");
    client.write_all(&bytes).await.unwrap();
    match next(listener).await {
        Ok((mut stream, proxied)) => {
            let peer = proxied.socket_peer().ip().unwrap();
            assert_eq!(peer.to_string(), from);
            let client_addr = proxied.client().unwrap();
            let mut raw = read_n(&mut stream, 12).await;
            if client_addr.source() == &AddrSource::ProxyProtocol {
                assert_eq!(client_addr.to_string(), FORGED);
                assert!(proxied.proxy_info().is_some());
                assert_eq!(raw, b"MQTT-CONNECT");
                Outcome::FromHeader
            } else {
                assert_eq!(
                    Some(client_addr.socket_addr().unwrap()),
                    proxied.socket_peer().inet()
                );
                assert!(proxied.proxy_info().is_none());
                if raw == b"MQTT-CONNECT" {
                    Outcome::Socket
                } else {
                    raw.extend(read_n(&mut stream, bytes.len() - 12).await);
                    assert_eq!(raw, bytes);
                    Outcome::SocketRaw
                }
            }
        }
        Err(err) => {
            assert_eq!(err.peer().ip().unwrap().to_string(), from);
            assert_closed(&mut client).await;
            match err {
                HandshakeError::Missing { .. } => Outcome::Missing,
                HandshakeError::Forbidden { .. } => Outcome::Forbidden,
                other => panic!("unexpected error {other}"),
            }
        }
    }
}

fn expected(policy: Policy, trusted: bool, input: Input) -> Outcome {
    use Outcome::*;
    let has_header = input != Input::Plain;
    // Untrusted peers are always under Policy::Reject.
    let policy = if trusted { policy } else { Policy::Reject };
    match (policy, has_header) {
        (Policy::Require, true) | (Policy::Optional, true) => FromHeader,
        (Policy::Require, false) => Missing,
        (Policy::Ignore, true) => Socket,
        (Policy::Reject, true) => Forbidden,
        (Policy::Skip, true) => SocketRaw,
        (_, false) => Socket,
        _ => unreachable!(),
    }
}

const POLICIES: [Policy; 5] = [
    Policy::Require,
    Policy::Optional,
    Policy::Ignore,
    Policy::Reject,
    Policy::Skip,
];

/// Under each policy, every input from each peer (with whether the peer is trusted, that is,
/// gets the policy rather than `Reject`) has the expected outcome.
async fn check_matrix(trusted: Option<&TrustedProxies>, peers: [(&str, bool); 2]) {
    for policy in POLICIES {
        let mut builder = ProxyListener::builder().policy(policy);
        if let Some(trusted) = trusted {
            builder = builder.trusted(trusted.clone());
        }
        let (mut listener, addr) = listen(builder).await;
        for (from, is_trusted) in peers {
            for input in [Input::V1, Input::V2, Input::Plain] {
                let got = run(&mut listener, addr, from, input).await;
                assert_eq!(
                    got,
                    expected(policy, is_trusted, input),
                    "policy {policy}, peer {from}, input {input:?}"
                );
            }
        }
    }
}

#[tokio::test]
async fn policy_matrix_with_trusted_and_untrusted_peers() {
    let trusted: TrustedProxies = format!("{TRUSTED_PEER}/32").parse().unwrap();
    check_matrix(
        Some(&trusted),
        [(TRUSTED_PEER, true), (UNTRUSTED_PEER, false)],
    )
    .await;
}

#[tokio::test]
async fn fixed_policy_applies_to_every_peer() {
    // Without a trusted set, the policy applies to both peers.
    check_matrix(None, [(TRUSTED_PEER, true), (UNTRUSTED_PEER, true)]).await;
}

#[tokio::test]
async fn policy_from_a_function_of_the_peer() {
    let source = PolicySource::from_fn(|peer: &PeerAddr| {
        if peer.ip() == Some("127.0.0.1".parse().unwrap()) {
            Policy::Require
        } else {
            Policy::Skip
        }
    });
    let (mut listener, addr) = listen(ProxyListener::builder().policy_source(source)).await;
    assert_eq!(
        run(&mut listener, addr, TRUSTED_PEER, Input::V2).await,
        Outcome::FromHeader
    );
    assert_eq!(
        run(&mut listener, addr, TRUSTED_PEER, Input::Plain).await,
        Outcome::Missing
    );
    assert_eq!(
        run(&mut listener, addr, UNTRUSTED_PEER, Input::V1).await,
        Outcome::SocketRaw
    );
}

#[tokio::test]
async fn optional_policy_waits_for_a_partial_signature() {
    // "PRO" could still become "PROXY ": the listener waits, then sees plain data.
    let (mut listener, addr) = listen(ProxyListener::builder().policy(Policy::Optional)).await;
    let mut client = connect(addr).await;
    client.write_all(b"PRO").await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    client.write_all(b"TOCOL").await.unwrap();
    let (mut stream, proxied) = next(&mut listener).await.unwrap();
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
    assert_eq!(read_n(&mut stream, 8).await, b"PROTOCOL");
}

#[tokio::test]
async fn optional_policy_passes_a_half_closed_short_message_through() {
    let (mut listener, addr) = listen(ProxyListener::builder().policy(Policy::Optional)).await;
    let mut client = connect(addr).await;
    client.write_all(b"P").await.unwrap();
    client.shutdown().await.unwrap();
    let (mut stream, _) = next(&mut listener).await.unwrap();
    assert_eq!(read_n(&mut stream, 1).await, b"P");
}

#[test]
fn policy_names_round_trip() {
    for policy in POLICIES {
        assert_eq!(policy.to_string().parse::<Policy>().unwrap(), policy);
    }
    assert!("sometimes".parse::<Policy>().is_err());
    assert_eq!(Policy::default(), Policy::Require);
}
