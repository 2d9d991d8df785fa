//! Edge cases found by reading the parser and the handshake: policies that pass data
//! through, LOCAL headers with TLVs, headers near the size cap.

mod support;

use std::net::SocketAddr;

use realip_core::{AddrSource, PeerAddr};
use realip_listener::{
    Command, HandshakeError, Policy, PolicySource, ProxyHeader, ProxyListener, tlv_type,
};
use support::{bind, client_v4, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects, writes `bytes`, half-closes, and returns the client socket's own address.
async fn send_and_close(addr: SocketAddr, bytes: &[u8]) -> (TcpStream, SocketAddr) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(bytes).await.unwrap();
    tcp.shutdown().await.unwrap();
    (tcp, local)
}

async fn read_all(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    within("read to EOF", stream.read_to_end(&mut out))
        .await
        .unwrap();
    out
}

#[tokio::test]
async fn ignore_strips_a_v2_header_with_tlvs_and_keeps_the_socket_address() {
    let (mut listener, addr) = bind(Policy::Ignore).await;
    let mut bytes = ProxyHeader::v2(client_v4(), addr)
        .with_authority("a.example")
        .with_crc32c()
        .to_bytes();
    bytes.extend_from_slice(b"payload");
    let (_tcp, local) = send_and_close(addr, &bytes).await;

    let (mut stream, proxied) = within("accept", listener.accept()).await;
    let client = proxied.client().unwrap();
    assert_eq!(client.socket_addr(), Some(local));
    assert_eq!(client.source(), &AddrSource::Socket);
    assert!(proxied.proxy_info().is_none());
    assert_eq!(read_all(&mut stream).await, b"payload");
}

#[tokio::test]
async fn ignore_still_rejects_a_header_it_cannot_delimit() {
    let (mut listener, addr) = bind(Policy::Ignore).await;
    let (_tcp, _) = send_and_close(addr, b"PROXY TCP4 1.2.3.4\n").await;
    let err = within("result", listener.try_accept()).await.unwrap_err();
    assert!(matches!(err, HandshakeError::Header { .. }), "{err}");
}

#[tokio::test]
async fn optional_and_reject_pass_data_that_only_looks_like_a_signature_start() {
    for policy in [Policy::Optional, Policy::Reject] {
        let (mut listener, addr) = bind(policy).await;
        // "\r\n" then an HTTP request: the v2 signature's first two bytes, then not.
        // "PROPFIND": the v1 prefix's first four bytes, then not.
        for data in [
            &b"\r\nGET / HTTP/1.1\r\n\r\n"[..],
            &b"PROPFIND / HTTP/1.1\r\n\r\n"[..],
        ] {
            let (_tcp, local) = send_and_close(addr, data).await;
            let (mut stream, proxied) = within("accept", listener.accept()).await;
            assert_eq!(
                proxied.client().unwrap().socket_addr(),
                Some(local),
                "{policy}"
            );
            assert_eq!(read_all(&mut stream).await, data, "{policy}");
        }
    }
}

#[tokio::test]
async fn skip_hands_over_header_bytes_as_data() {
    let (mut listener, addr) = bind(Policy::Skip).await;
    let header = ProxyHeader::v1(client_v4(), addr).to_bytes();
    let (_tcp, local) = send_and_close(addr, &header).await;
    let (mut stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(local));
    assert_eq!(read_all(&mut stream).await, header);
}

#[tokio::test]
async fn policy_from_a_function_of_the_peer() {
    // Peers on even ports must send a header, odd ports must not.
    let listener = ProxyListener::builder()
        .policy_source(PolicySource::from_fn(|peer: &PeerAddr| match peer.inet() {
            Some(addr) if addr.port() % 2 == 0 => Policy::Require,
            _ => Policy::Reject,
        }))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let mut listener = listener;
    let mut seen = 0;
    while seen < 4 {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let even = tcp.local_addr().unwrap().port() % 2 == 0;
        tcp.write_all(&ProxyHeader::v1(client_v4(), addr).to_bytes())
            .await
            .unwrap();
        let result = within("result", listener.try_accept()).await;
        if even {
            assert_eq!(
                result.unwrap().1.client().unwrap().socket_addr(),
                Some(client_v4())
            );
        } else {
            assert!(matches!(result, Err(HandshakeError::Forbidden { .. })));
        }
        seen += 1;
    }
}

#[tokio::test]
async fn header_close_to_the_cap_with_data_behind_it() {
    let (mut listener, addr) = bind(Policy::Require).await;
    // 16 + 12 + (3 + 4000) + (3 + 4) + ... stays under the 4096-byte default cap.
    let header = ProxyHeader::v2(client_v4(), addr)
        .with_tlv(tlv_type::NOOP, vec![0xAB; 4000])
        .with_crc32c()
        .to_bytes();
    assert!(
        header.len() > 4000 && header.len() <= 4096,
        "{}",
        header.len()
    );
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut bytes = header.clone();
    bytes.extend_from_slice(&data);
    let writer = tokio::spawn(async move { send_and_close(addr, &bytes).await });

    let (mut stream, proxied) = within("accept", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(client_v4()));
    assert_eq!(
        proxied
            .proxy_info()
            .unwrap()
            .tlvs()
            .get(tlv_type::NOOP)
            .map(<[u8]>::len),
        Some(4000)
    );
    assert!(read_all(&mut stream).await == data);
    writer.await.unwrap();
}
#[tokio::test]
async fn local_header_tlvs_are_checked_and_exposed() {
    // A LOCAL header (a load balancer's health check) may carry TLVs, a CRC32C included.
    let (mut listener, addr) = bind(Policy::Require).await;
    let good = ProxyHeader::v2_local()
        .with_unique_id(b"check-1".to_vec())
        .with_crc32c()
        .to_bytes();
    let (_tcp, local) = send_and_close(addr, &good).await;
    let (_stream, proxied) = within("good LOCAL", listener.accept()).await;
    assert_eq!(proxied.client().unwrap().socket_addr(), Some(local));
    let info = proxied.proxy_info().unwrap();
    assert_eq!(info.command(), Command::Local);
    assert_eq!(info.tlvs().unique_id(), Some(&b"check-1"[..]));

    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let (_tcp, _) = send_and_close(addr, &bad).await;
    let err = within("bad LOCAL", listener.try_accept())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "crc32c", "{err}");
}
