//! Every header form through a real listener: the address the application sees and the
//! bytes it reads.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use realip_core::{AddrSource, PeerAddr};
use realip_listener::{
    Command, Family, HandshakeError, HeaderError, Policy, ProxyHeader, ProxyListener, ProxyVersion,
    SslInfo, Transport, parse_header, tlv_type,
};
use support::*;
use tokio::io::AsyncWriteExt;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn v2_raw(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(version_command);
    out.push(family);
    out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Sends `header` followed by `data` in one write; returns the accepted connection after
/// checking that the application reads exactly `data`.
async fn accept_with(header: &[u8]) -> realip_listener::ProxiedAddr {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(b"after-header");
    let (_client, result) = send(&mut listener, addr, &bytes).await;
    let (mut stream, proxied) = result.unwrap();
    assert_eq!(read_n(&mut stream, 12).await, b"after-header");
    assert_eq!(stream.proxied_addr(), &proxied);
    proxied
}

#[tokio::test]
async fn v1_tcp4() {
    let header = ProxyHeader::v1(sa("192.0.2.10:40000"), sa("10.0.0.1:1883")).to_bytes();
    let proxied = accept_with(&header).await;
    let client = proxied.client().unwrap();
    assert_eq!(client.to_string(), "192.0.2.10:40000");
    assert_eq!(client.source(), &AddrSource::ProxyProtocol);
    let info = proxied.proxy_info().unwrap();
    assert_eq!(info.version(), ProxyVersion::V1);
    assert_eq!(info.command(), Command::Proxy);
    assert_eq!(info.family(), Family::Inet);
    assert_eq!(info.transport(), Transport::Stream);
    assert_eq!(info.destination_inet(), Some(sa("10.0.0.1:1883")));
    assert!(proxied.socket_peer().ip().unwrap().is_loopback());
    assert!(proxied.local_addr().unwrap().ip().is_loopback());
}

#[tokio::test]
async fn v1_tcp6() {
    let header = b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n";
    let proxied = accept_with(header).await;
    assert_eq!(proxied.client().unwrap().to_string(), "[2001:db8::7]:51000");
    let info = proxied.proxy_info().unwrap();
    assert_eq!(info.family(), Family::Inet6);
    assert_eq!(info.destination_inet(), Some(sa("[2001:db8::1]:443")));
}

#[tokio::test]
async fn v1_lines_of_mixed_families_name_the_source() {
    for (header, client, destination) in [
        (
            &b"PROXY TCP6 2001:db8::1 127.0.0.21 51512 15001\r\n"[..],
            "[2001:db8::1]:51512",
            "127.0.0.21:15001",
        ),
        (
            b"PROXY TCP4 192.0.2.1 ::1 51512 15003\r\n",
            "192.0.2.1:51512",
            "[::1]:15003",
        ),
        (
            b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:127.0.0.1 51512 15001\r\n",
            "192.0.2.1:51512",
            "[::ffff:127.0.0.1]:15001",
        ),
        (
            b"PROXY TCP6 fe80::1%eth0 ::1 51512 15001\r\n",
            "[fe80::1]:51512",
            "[::1]:15001",
        ),
    ] {
        let proxied = accept_with(header).await;
        let client_addr = proxied.client().unwrap();
        assert_eq!(client_addr.to_string(), client);
        assert_eq!(client_addr.source(), &AddrSource::ProxyProtocol);
        let info = proxied.proxy_info().unwrap();
        assert_eq!(info.destination_inet(), Some(sa(destination)));
    }
}

#[tokio::test]
async fn v1_unknown_uses_the_socket_peer() {
    for header in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
    ] {
        let proxied = accept_with(header).await;
        let client = proxied.client().unwrap();
        assert_eq!(client.source(), &AddrSource::Socket);
        assert_eq!(Some(client.ip()), proxied.socket_peer().ip());
        let info = proxied.proxy_info().unwrap();
        assert_eq!(
            (info.version(), info.family()),
            (ProxyVersion::V1, Family::Unspec)
        );
        assert!(info.source().is_none());
    }
}

#[tokio::test]
async fn v2_inet_and_inet6() {
    let proxied =
        accept_with(&ProxyHeader::v2(sa("198.51.100.1:1234"), sa("10.0.0.1:80")).to_bytes()).await;
    assert_eq!(proxied.client().unwrap().to_string(), "198.51.100.1:1234");
    let info = proxied.proxy_info().unwrap();
    assert_eq!(
        (info.version(), info.family(), info.transport()),
        (ProxyVersion::V2, Family::Inet, Transport::Stream)
    );

    let proxied =
        accept_with(&ProxyHeader::v2(sa("[2001:db8::9]:1234"), sa("[2001:db8::1]:80")).to_bytes())
            .await;
    assert_eq!(proxied.client().unwrap().to_string(), "[2001:db8::9]:1234");
    assert_eq!(proxied.proxy_info().unwrap().family(), Family::Inet6);
}

#[tokio::test]
async fn v2_ipv4_mapped_source_is_canonical() {
    let header = ProxyHeader::v2(sa("[::ffff:192.0.2.5]:7"), sa("[2001:db8::1]:80")).to_bytes();
    let proxied = accept_with(&header).await;
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.5:7");
}

#[tokio::test]
async fn v2_datagram_and_unspecified_transport() {
    let header = ProxyHeader::v2(sa("192.0.2.1:53"), sa("10.0.0.1:53"))
        .with_transport(Transport::Datagram)
        .to_bytes();
    assert_eq!(header[13], 0x12);
    let proxied = accept_with(&header).await;
    assert_eq!(
        proxied.proxy_info().unwrap().transport(),
        Transport::Datagram
    );
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.1:53");

    let header = ProxyHeader::v2(sa("192.0.2.1:53"), sa("10.0.0.1:53"))
        .with_transport(Transport::Unspec)
        .to_bytes();
    let proxied = accept_with(&header).await;
    assert_eq!(proxied.proxy_info().unwrap().transport(), Transport::Unspec);
}

#[tokio::test]
async fn v2_unix_addresses_use_the_socket_peer() {
    let header = ProxyHeader::v2_unix("/run/client.sock", "/run/haproxy.sock").to_bytes();
    assert_eq!(header.len(), 16 + 216);
    let proxied = accept_with(&header).await;
    let info = proxied.proxy_info().unwrap();
    assert_unix_paths(info, b"/run/client.sock", b"/run/haproxy.sock");
    assert_eq!(
        info.source().unwrap().unix_path(),
        Some(std::path::Path::new("/run/client.sock"))
    );
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
}

#[tokio::test]
async fn v2_unspec_uses_the_socket_peer() {
    let proxied = accept_with(&ProxyHeader::v2_unspec().to_bytes()).await;
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
    let info = proxied.proxy_info().unwrap();
    assert_eq!(
        (info.command(), info.family()),
        (Command::Proxy, Family::Unspec)
    );
}

#[tokio::test]
async fn v2_local_without_address_block() {
    let header = ProxyHeader::v2_local().to_bytes();
    assert_eq!(header.len(), 16);
    let proxied = accept_with(&header).await;
    let client = proxied.client().unwrap();
    assert_eq!(client.source(), &AddrSource::Socket);
    assert_eq!(
        Some(client.socket_addr().unwrap()),
        proxied.socket_peer().inet()
    );
    assert_eq!(proxied.proxy_info().unwrap().command(), Command::Local);
}

#[tokio::test]
async fn v2_local_with_address_block_is_skipped() {
    // AWS NLB style: LOCAL with an INET address block and a TLV; none of it may reach
    // the application.
    let header = ProxyHeader::v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"))
        .with_command(Command::Local)
        .with_aws_vpce_id("vpce-0123")
        .to_bytes();
    assert_eq!(header[12], 0x20);
    let proxied = accept_with(&header).await;
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
    assert_eq!(proxied.proxy_info().unwrap().command(), Command::Local);

    // LOCAL with an undefined family byte and an odd-sized block.
    let proxied = accept_with(&v2_raw(0x20, 0x77, &[9; 5])).await;
    assert_eq!(proxied.proxy_info().unwrap().command(), Command::Local);
}

#[tokio::test]
async fn v2_local_block_of_any_shape_is_skipped() {
    // LOCAL, AF_UNSPEC, yet 12 bytes of IPv4 addresses: not a TLV list, still discarded
    // whole, and the health check goes on with the socket's own addresses.
    let block = [10, 0, 0, 1, 10, 0, 0, 2, 0x1F, 0x90, 0, 0x50];
    let proxied = accept_with(&v2_raw(0x20, 0x00, &block)).await;
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
    let info = proxied.proxy_info().unwrap();
    assert_eq!(info.command(), Command::Local);
    assert!(info.tlvs().is_empty());

    // LOCAL, AF_INET, with padding after the address block.
    let mut padded = block.to_vec();
    padded.extend_from_slice(&[0; 4]);
    let proxied = accept_with(&v2_raw(0x20, 0x11, &padded)).await;
    assert_eq!(proxied.proxy_info().unwrap().command(), Command::Local);
}

#[tokio::test]
async fn v1_unknown_with_anything_before_the_crlf() {
    for header in [
        &b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2 extra\r\n"[..],
        b"PROXY UNKNOWN \xc3\x28 binary\r\n",
    ] {
        let proxied = accept_with(header).await;
        assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
        assert_eq!(proxied.proxy_info().unwrap().family(), Family::Unspec);
    }
}

#[tokio::test]
async fn v2_tlvs_are_exposed() {
    let ssl = SslInfo::new(SslInfo::CLIENT_SSL | SslInfo::CLIENT_CERT_CONN, 0)
        .with_version("TLSv1.3")
        .with_client_cn("device-42")
        .with_cipher("TLS_AES_128_GCM_SHA256")
        .with_sig_alg("SHA256")
        .with_key_alg("EC256");
    let header = ProxyHeader::v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"))
        .with_alpn("mqtt")
        .with_authority("broker.example")
        .with_unique_id(vec![1, 2, 3])
        .with_ssl(&ssl)
        .with_netns("blue")
        .with_aws_vpce_id("vpce-08d2bf15fac5001c9")
        .with_azure_link_id(0x0102_0304)
        .with_gcp_psc_connection_id(0x1122_3344_5566_7788)
        .with_tlv(tlv_type::NOOP, vec![0; 3])
        .with_crc32c()
        .to_bytes();
    let proxied = accept_with(&header).await;
    let tlvs = proxied.proxy_info().unwrap().tlvs();
    assert_eq!(tlvs.alpn(), Some(&b"mqtt"[..]));
    assert_eq!(tlvs.authority(), Some("broker.example"));
    assert_eq!(tlvs.unique_id(), Some(&[1, 2, 3][..]));
    assert_eq!(tlvs.netns(), Some("blue"));
    assert_eq!(tlvs.aws_vpce_id(), Some("vpce-08d2bf15fac5001c9"));
    assert_eq!(tlvs.azure_private_endpoint_link_id(), Some(0x0102_0304));
    assert_eq!(tlvs.gcp_psc_connection_id(), Some(0x1122_3344_5566_7788));
    assert!(tlvs.crc32c().is_some());
    let got = tlvs.ssl().unwrap();
    assert!(got.is_ssl() && got.has_client_cert() && got.verified());
    assert_eq!(got.version(), Some("TLSv1.3"));
    assert_eq!(got.client_cn(), Some("device-42"));
    assert_eq!(got.cipher(), Some("TLS_AES_128_GCM_SHA256"));
    assert_eq!(got.sig_alg(), Some("SHA256"));
    assert_eq!(got.key_alg(), Some("EC256"));
    let kinds: Vec<u8> = tlvs.raw().iter().map(|t| t.kind()).collect();
    assert_eq!(
        kinds,
        [0x01, 0x02, 0x05, 0x20, 0x30, 0xEA, 0xEE, 0xE0, 0x04, 0x03]
    );
}

/// Every form the listener accepts, for the split tests.
fn all_forms() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "v1 tcp4",
            ProxyHeader::v1(sa("192.0.2.10:40000"), sa("10.0.0.1:1883")).to_bytes(),
        ),
        (
            "v1 tcp6",
            ProxyHeader::v1(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:2")).to_bytes(),
        ),
        ("v1 unknown", ProxyHeader::v1_unknown().to_bytes()),
        (
            "v2 inet tlvs crc",
            ProxyHeader::v2(sa("192.0.2.10:40000"), sa("10.0.0.1:1883"))
                .with_authority("a.example")
                .with_unique_id(vec![7; 20])
                .with_crc32c()
                .to_bytes(),
        ),
        (
            "v2 inet6",
            ProxyHeader::v2(sa("[2001:db8::7]:1"), sa("[2001:db8::1]:2")).to_bytes(),
        ),
        ("v2 unix", ProxyHeader::v2_unix("/a", "/b").to_bytes()),
        ("v2 local", ProxyHeader::v2_local().to_bytes()),
    ]
}

#[test]
fn every_prefix_is_incomplete_and_the_whole_is_complete() {
    for (name, header) in all_forms() {
        for k in 0..header.len() {
            assert!(
                parse_header(&header[..k], 4096).unwrap().is_none(),
                "{name}: prefix of {k} bytes"
            );
        }
        let (_, len) = parse_header(&header, 4096).unwrap().unwrap();
        assert_eq!(len, header.len(), "{name}");
    }
}

#[tokio::test]
async fn header_split_at_every_byte_boundary() {
    for (name, header) in all_forms() {
        let (mut listener, addr) = listen(ProxyListener::builder()).await;
        for k in 1..header.len() {
            let mut client = connect(addr).await;
            client.write_all(&header[..k]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
            let mut rest = header[k..].to_vec();
            rest.extend_from_slice(b"DATA");
            client.write_all(&rest).await.unwrap();
            let (mut stream, proxied) = next(&mut listener)
                .await
                .unwrap_or_else(|e| panic!("{name}, split at {k}: {e}"));
            assert!(proxied.proxy_info().is_some(), "{name}");
            assert_eq!(
                read_n(&mut stream, 4).await,
                b"DATA",
                "{name}, split at {k}"
            );
        }
    }
}

#[tokio::test]
async fn header_delivered_one_byte_at_a_time() {
    for (name, header) in all_forms() {
        let (mut listener, addr) = listen(ProxyListener::builder()).await;
        let mut client = connect(addr).await;
        let mut bytes = header.clone();
        bytes.extend_from_slice(b"xyz");
        let writer = tokio::spawn(async move {
            for b in bytes {
                client.write_all(&[b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            client
        });
        let (mut stream, proxied) =
            tokio::time::timeout(Duration::from_secs(5), listener.try_accept())
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(proxied.proxy_info().is_some(), "{name}");
        assert_eq!(read_n(&mut stream, 3).await, b"xyz", "{name}");
        drop(writer.await.unwrap());
    }
}

/// Connects and lets `listener` accept the silent connection, so that its handshake waits
/// with nothing read; then sends `bytes` in one write and returns the listener's result.
/// The header is then read by a handshake that has already waited, not at accept.
async fn send_after_accept(
    listener: &mut ProxyListener<tokio::net::TcpListener>,
    addr: SocketAddr,
    bytes: &[u8],
) -> (
    tokio::net::TcpStream,
    Result<realip_listener::Connection<tokio::net::TcpStream>, HandshakeError>,
) {
    let mut client = connect(addr).await;
    within("accepting the silent connection", async {
        while listener.pending() == 0 {
            let polled =
                tokio::time::timeout(Duration::from_millis(5), listener.try_accept()).await;
            assert!(
                polled.is_err(),
                "a connection that sent nothing finished its handshake"
            );
        }
    })
    .await;
    client.write_all(bytes).await.unwrap();
    let result = next(listener).await;
    (client, result)
}

#[tokio::test]
async fn header_sent_after_the_handshake_waited_gives_the_same_address_and_data() {
    let big_tlvs = ProxyHeader::v2(sa("198.51.100.20:52000"), sa("10.0.0.1:1883"))
        .with_tlv(tlv_type::NOOP, vec![0; 600])
        .with_authority(&"a".repeat(300))
        .to_bytes();
    let mut forms = all_forms();
    forms.push(("v2 with 900 bytes of TLVs", big_tlvs));
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    // Data shorter than what is left of a 256-byte first read, and longer than it.
    for data_len in [4, 300] {
        let data: Vec<u8> = (0..data_len).map(|i| (i % 251) as u8).collect();
        for (name, header) in &forms {
            let (info, len) = parse_header(header, 4096).unwrap().unwrap();
            assert_eq!(len, header.len(), "{name}");
            let mut bytes = header.clone();
            bytes.extend_from_slice(&data);
            let (_client, result) = send_after_accept(&mut listener, addr, &bytes).await;
            let (mut stream, proxied) =
                result.unwrap_or_else(|e| panic!("{name}, {data_len} bytes of data: {e}"));
            assert_eq!(proxied.proxy_info(), Some(&info), "{name}");
            if let Some(source) = info.source_inet() {
                assert_eq!(
                    proxied.client().unwrap().to_string(),
                    source.to_string(),
                    "{name}"
                );
            }
            assert_eq!(
                read_n(&mut stream, data.len()).await,
                data,
                "{name}, {data_len} bytes of data"
            );
        }
    }
}

#[tokio::test]
async fn optional_peer_without_a_header_after_the_handshake_waited_keeps_its_bytes() {
    let (mut listener, addr) = listen(ProxyListener::builder().policy(Policy::Optional)).await;
    for data in [b"\x10\x0c\x00\x04MQTT".to_vec(), vec![b'x'; 300]] {
        let (_client, result) = send_after_accept(&mut listener, addr, &data).await;
        let (mut stream, proxied) = result.unwrap();
        assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);
        assert_eq!(read_n(&mut stream, data.len()).await, data);
    }
}

#[tokio::test]
async fn large_application_data_in_the_same_write_arrives_intact() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for header in [
        ProxyHeader::v1(sa("192.0.2.1:1"), sa("192.0.2.2:2")).to_bytes(),
        ProxyHeader::v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"))
            .with_crc32c()
            .to_bytes(),
    ] {
        let mut bytes = header;
        bytes.extend_from_slice(&data);
        let mut client = connect(addr).await;
        let writer = tokio::spawn(async move {
            client.write_all(&bytes).await.unwrap();
            client
        });
        let (mut stream, proxied) = next(&mut listener).await.unwrap();
        assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.1:1");
        assert_eq!(read_n(&mut stream, data.len()).await, data);
        drop(writer.await.unwrap());
    }
}

/// Sends `bytes` without closing and expects an immediate rejection.
async fn expect_rejected(bytes: &[u8]) -> HandshakeError {
    let (mut listener, addr) =
        listen(ProxyListener::builder().header_timeout(Duration::from_secs(30))).await;
    let start = Instant::now();
    let (mut client, result) = send(&mut listener, addr, bytes).await;
    let err = result.expect_err("connection should be rejected");
    assert!(
        start.elapsed() < QUICK,
        "rejection took {:?}",
        start.elapsed()
    );
    assert!(matches!(err.peer(), PeerAddr::Inet(_)));
    assert_closed(&mut client).await;
    err
}

#[tokio::test]
async fn oversized_v1_is_rejected_immediately() {
    let mut bytes = b"PROXY TCP4 ".to_vec();
    bytes.resize(107, b'1');
    let err = expect_rejected(&bytes).await;
    assert!(
        matches!(
            err.header_error(),
            Some(HeaderError::Oversized { max: 107, .. })
        ),
        "{err}"
    );
    assert_eq!(err.reason(), "oversized");
}

#[tokio::test]
async fn oversized_v2_is_rejected_without_waiting_for_the_body() {
    // Only the 16-byte fixed part, announcing 65535 bytes.
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    bytes.extend_from_slice(&[0x21, 0x11, 0xFF, 0xFF]);
    let err = expect_rejected(&bytes).await;
    assert!(
        matches!(
            err.header_error(),
            Some(HeaderError::Oversized {
                len: 65551,
                max: 4096
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn v2_cap_is_configurable() {
    let header = ProxyHeader::v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"))
        .with_tlv(0xE5, vec![0; 200])
        .to_bytes();
    let (mut listener, addr) = listen(ProxyListener::builder().max_header_len(128)).await;
    let (_c, result) = send(&mut listener, addr, &header).await;
    assert_eq!(result.err().unwrap().reason(), "oversized");
    let (mut listener, addr) = listen(ProxyListener::builder().max_header_len(1024)).await;
    let (_c, result) = send(&mut listener, addr, &header).await;
    assert!(result.is_ok());
}

#[tokio::test]
async fn bad_signatures_are_rejected() {
    for bytes in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c",
    ] {
        let err = expect_rejected(bytes).await;
        assert!(matches!(err, HandshakeError::Missing { .. }), "{err}");
    }
}

#[tokio::test]
async fn invalid_v1_lines_are_rejected() {
    for bytes in [
        &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
        b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 +02\r\n",
    ] {
        let err = expect_rejected(bytes).await;
        assert_eq!(err.reason(), "invalid", "{err}");
    }
}

#[tokio::test]
async fn invalid_v2_version_command_family_transport() {
    let body = [192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2];
    type Check = fn(&HeaderError) -> bool;
    let cases: [(u8, u8, Check); 5] = [
        (0x11, 0x11, |e| matches!(e, HeaderError::Version(0x11))),
        (0x31, 0x11, |e| matches!(e, HeaderError::Version(0x31))),
        (0x22, 0x11, |e| matches!(e, HeaderError::Command(0x22))),
        (0x21, 0x41, |e| matches!(e, HeaderError::Family(0x41))),
        (0x21, 0x13, |e| matches!(e, HeaderError::Transport(0x13))),
    ];
    for (vc, fam, check) in cases {
        let err = expect_rejected(&v2_raw(vc, fam, &body)).await;
        assert!(
            check(err.header_error().unwrap()),
            "{vc:#x}/{fam:#x}: {err}"
        );
    }
    // PROXY with a block too short for its family.
    let err = expect_rejected(&v2_raw(0x21, 0x21, &body)).await;
    assert!(
        matches!(
            err.header_error(),
            Some(HeaderError::AddressBlock { len: 12, need: 36 })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn crc32c_good_and_bad() {
    let good = ProxyHeader::v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"))
        .with_unique_id(b"abc".to_vec())
        .with_crc32c()
        .to_bytes();
    let proxied = accept_with(&good).await;
    assert_eq!(proxied.client().unwrap().to_string(), "192.0.2.1:1");

    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    let err = expect_rejected(&bad).await;
    assert!(
        matches!(err.header_error(), Some(HeaderError::Crc32c { .. })),
        "{err}"
    );
    assert_eq!(err.reason(), "crc32c");

    // The address changed after the checksum was computed (a tampering proxy).
    let mut tampered = good;
    tampered[16] = 10;
    assert_eq!(expect_rejected(&tampered).await.reason(), "crc32c");
}

#[tokio::test]
async fn tlv_overrun_is_rejected_at_parse_time() {
    let mut body = vec![192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2];
    body.extend_from_slice(&[0x02, 0x00, 0x10, b'a', b'b']); // claims 16 bytes, has 2
    let err = expect_rejected(&v2_raw(0x21, 0x11, &body)).await;
    assert!(
        matches!(
            err.header_error(),
            Some(HeaderError::TlvOverrun {
                kind: 0x02,
                offset: 28
            })
        ),
        "{err}"
    );

    // A TLV cut inside its 3-byte type/length.
    let mut body = vec![192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2];
    body.extend_from_slice(&[0x05, 0x00]);
    let err = expect_rejected(&v2_raw(0x21, 0x11, &body)).await;
    assert!(
        matches!(err.header_error(), Some(HeaderError::TlvOverrun { .. })),
        "{err}"
    );

    // A unique id over 128 bytes.
    let long = ProxyHeader::v2(sa("192.0.2.1:1"), sa("192.0.2.2:2"))
        .with_unique_id(vec![1; 129])
        .to_bytes();
    let err = expect_rejected(&long).await;
    assert!(
        matches!(
            err.header_error(),
            Some(HeaderError::TlvLength {
                kind: 0x05,
                len: 129
            })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn peer_that_closes_mid_header_is_truncated() {
    let (mut listener, addr) = listen(ProxyListener::builder()).await;
    let mut client = connect(addr).await;
    client.write_all(b"PROXY TCP4 1.2.").await.unwrap();
    drop(client);
    let err = next(&mut listener).await.err().unwrap();
    assert!(
        matches!(err, HandshakeError::Truncated { received: 15, .. }),
        "{err}"
    );
    assert!(!err.is_quiet());
}

#[tokio::test]
async fn v2_local_tlvs_are_checked_and_exposed() {
    // HAProxy health checks with `proxy-v2-options crc32c,unique-id`: LOCAL, AF_UNSPEC, TLVs.
    let good = ProxyHeader::v2_local()
        .with_unique_id(b"check-1".to_vec())
        .with_crc32c()
        .to_bytes();
    let proxied = accept_with(&good).await;
    let info = proxied.proxy_info().unwrap();
    assert_eq!(info.command(), Command::Local);
    assert_eq!(info.tlvs().unique_id(), Some(&b"check-1"[..]));
    assert!(info.tlvs().crc32c().is_some());
    assert_eq!(proxied.client().unwrap().source(), &AddrSource::Socket);

    let mut bad = good;
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    assert_eq!(expect_rejected(&bad).await.reason(), "crc32c");
}
