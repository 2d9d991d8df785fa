//! UDP: PROXY v2 (per flow, per datagram) and Simple Proxy Protocol datagrams through
//! `ProxyUdpSocket`, behind a small proxy that speaks each format, with IPv4 and IPv6
//! clients; idle flows, reused proxy ports, the flow cap, and dropped datagrams.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use realip_core::{AddrSource, TrustedProxies};
use realip_listener::udp::{
    DatagramError, ProxyUdpSocket, SPP_HEADER_LEN, SppError, SppHeader, UdpDecoder, UdpPolicy,
};
use realip_listener::{HeaderError, ProxyHeader, ProxyVersion, Transport};
use tokio::net::UdpSocket;
use tokio::sync::Mutex;

const WAIT: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {WAIT:?}"))
}

/// The echo service of the example: `peer=CLIENT\n` then the payload, to the proxy.
async fn echo_server(policy: UdpPolicy) -> (SocketAddr, Arc<ProxyUdpSocket>) {
    let socket = ProxyUdpSocket::builder()
        .trusted(TrustedProxies::loopback())
        .policy(policy)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = socket.local_addr().unwrap();
    let socket = Arc::new(socket);
    let server = Arc::clone(&socket);
    tokio::spawn(async move {
        let mut buf = vec![0; 65_536];
        loop {
            let (len, from) = server.recv_from(&mut buf).await.unwrap();
            let mut reply = format!("peer={}\n", from.client().unwrap()).into_bytes();
            reply.extend_from_slice(&buf[..len]);
            server.send_to(&reply, &from).await.unwrap();
        }
    });
    (addr, socket)
}

/// A proxy in the shape of Spectrum: one upstream socket (own source port) per client,
/// a header per the format, and replies relayed back to the client (the SPP header is
/// checked against the client and stripped).
struct TestProxy {
    front: Arc<UdpSocket>,
}

impl TestProxy {
    async fn start(bind: &str, server: SocketAddr, format: UdpPolicy) -> Self {
        let front = Arc::new(UdpSocket::bind(bind).await.unwrap());
        let proxy_addr = front.local_addr().unwrap();
        let relay = Arc::clone(&front);
        tokio::spawn(async move {
            let flows: Mutex<HashMap<SocketAddr, Arc<UdpSocket>>> = Mutex::default();
            let mut buf = vec![0; 65_536];
            loop {
                let (len, client) = relay.recv_from(&mut buf).await.unwrap();
                let mut flows = flows.lock().await;
                let first = !flows.contains_key(&client);
                let upstream = flows.entry(client).or_insert_with(|| {
                    let std = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    std.set_nonblocking(true).unwrap();
                    let upstream = Arc::new(UdpSocket::from_std(std).unwrap());
                    tokio::spawn(replies(
                        Arc::clone(&upstream),
                        Arc::clone(&relay),
                        client,
                        proxy_addr,
                        format,
                    ));
                    upstream
                });
                let mut datagram = match format {
                    UdpPolicy::V2PerFlow if !first => Vec::new(),
                    UdpPolicy::V2PerFlow | UdpPolicy::V2PerDatagram => {
                        ProxyHeader::v2_datagram(client, proxy_addr).to_bytes()
                    }
                    UdpPolicy::Spp => SppHeader::new(client, proxy_addr).to_bytes().to_vec(),
                    other => panic!("the test proxy does not speak {other}"),
                };
                datagram.extend_from_slice(&buf[..len]);
                upstream.send_to(&datagram, server).await.unwrap();
            }
        });
        Self { front }
    }

    fn addr(&self) -> SocketAddr {
        self.front.local_addr().unwrap()
    }
}

async fn replies(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    proxy_addr: SocketAddr,
    format: UdpPolicy,
) {
    let mut buf = vec![0; 65_536];
    loop {
        let Ok(len) = upstream.recv(&mut buf).await else {
            return;
        };
        let payload = if format == UdpPolicy::Spp {
            match SppHeader::parse(&buf[..len]) {
                // A reply for someone else, or without its header, is not forwarded.
                Ok((header, payload)) if header == SppHeader::new(client, proxy_addr) => payload,
                _ => continue,
            }
        } else {
            &buf[..len]
        };
        front.send_to(payload, client).await.unwrap();
    }
}

async fn client(bind: &str) -> UdpSocket {
    UdpSocket::bind(bind).await.unwrap()
}

async fn exchange(client: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    client.send_to(payload, to).await.unwrap();
    let mut buf = vec![0; 65_536];
    let (len, _) = within("reply", client.recv_from(&mut buf)).await.unwrap();
    buf.truncate(len);
    buf
}

fn expected(client: &UdpSocket, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("peer={}\n", client.local_addr().unwrap()).into_bytes();
    out.extend_from_slice(payload);
    out
}

#[tokio::test]
async fn each_format_reaches_the_right_ipv4_and_ipv6_clients_and_back() {
    for format in [
        UdpPolicy::V2PerFlow,
        UdpPolicy::V2PerDatagram,
        UdpPolicy::Spp,
    ] {
        let (server, socket) = echo_server(format).await;
        let proxy_v4 = TestProxy::start("127.0.0.1:0", server, format).await;
        let proxy_v6 = TestProxy::start("[::1]:0", server, format).await;
        // Clients on other loopback addresses than the proxy's upstream sockets.
        let a = client("127.0.0.2:0").await;
        let b = client("127.0.0.3:0").await;
        let c = client("[::1]:0").await;
        let clients = [
            (&a, proxy_v4.addr()),
            (&b, proxy_v4.addr()),
            (&c, proxy_v6.addr()),
        ];
        // Interleaved rounds: every flow stays with its own client.
        for round in 0..3 {
            for (i, (client, proxy)) in clients.iter().enumerate() {
                let payload = format!("{format} round {round} from client {i}");
                assert_eq!(
                    exchange(client, *proxy, payload.as_bytes()).await,
                    expected(client, payload.as_bytes()),
                    "{format}"
                );
            }
        }
        // Payloads of any size and content, empty included, come back intact.
        for payload in [&b""[..], &[0u8; 1200][..], &[0x56, 0xEC, 0, 1][..]] {
            assert_eq!(
                exchange(&c, proxy_v6.addr(), payload).await,
                expected(&c, payload)
            );
        }
        let stats = socket.stats();
        assert_eq!(stats.datagrams, 12, "{format}");
        assert_eq!(stats.delivered, 12, "{format}");
        let flows = if format == UdpPolicy::V2PerFlow { 3 } else { 0 };
        assert_eq!((stats.flows, stats.flows_started), (flows, flows as u64));
    }
}

#[tokio::test]
async fn the_client_address_and_header_are_reported() {
    let socket = ProxyUdpSocket::builder()
        .policy(UdpPolicy::V2PerDatagram)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let server = socket.local_addr().unwrap();
    let proxy = client("127.0.0.1:0").await;
    let client_addr: SocketAddr = "[2001:db8::7]:6000".parse().unwrap();
    let mut datagram = ProxyHeader::v2_datagram(client_addr, "[2001:db8::1]:443".parse().unwrap())
        .with_authority("quic.example")
        .with_crc32c()
        .to_bytes();
    datagram.extend_from_slice(b"payload");
    proxy.send_to(&datagram, server).await.unwrap();
    let mut buf = [0; 1500];
    let (len, from) = within("datagram", socket.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf[..len], b"payload");
    let client = from.client().unwrap();
    assert_eq!(client.socket_addr(), Some(client_addr));
    assert_eq!(client.source(), &AddrSource::ProxyProtocol);
    assert_eq!(from.socket_peer().inet(), Some(proxy.local_addr().unwrap()));
    assert_eq!(from.local_addr(), Some(server));
    let info = from.proxy_info().unwrap();
    assert_eq!(info.transport(), Transport::Datagram);
    assert_eq!(info.tlvs().authority(), Some("quic.example"));

    // An IPv4 client in SPP's mapped form is reported as IPv4.
    let socket = ProxyUdpSocket::builder()
        .policy(UdpPolicy::Spp)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let header = SppHeader::new(
        "198.51.100.4:9".parse().unwrap(),
        "[2001:db8::1]:53".parse().unwrap(),
    );
    proxy
        .send_to(&header.to_bytes(), socket.local_addr().unwrap())
        .await
        .unwrap();
    let (len, from) = within("datagram", socket.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(len, 0);
    assert_eq!(from.client().unwrap().to_string(), "198.51.100.4:9");
    let info = from.proxy_info().unwrap();
    assert_eq!(info.version(), ProxyVersion::Spp);
    assert_eq!(
        info.destination_inet(),
        Some("[2001:db8::1]:53".parse().unwrap())
    );
}

/// A proxy-side socket that sends each datagram to the server with the given prefix.
async fn send(proxy: &UdpSocket, server: SocketAddr, header: Option<SocketAddr>, payload: &[u8]) {
    let mut datagram = header.map_or_else(Vec::new, |client| {
        ProxyHeader::v2_datagram(client, server).to_bytes()
    });
    datagram.extend_from_slice(payload);
    proxy.send_to(&datagram, server).await.unwrap();
}

async fn next(socket: &ProxyUdpSocket) -> Result<(Vec<u8>, String), DatagramError> {
    let mut buf = vec![0; 65_536];
    let (len, from) = within("datagram", socket.try_recv_from(&mut buf)).await?;
    buf.truncate(len);
    Ok((buf, from.client().unwrap().to_string()))
}

fn ok(payload: &[u8], client: &str) -> (Vec<u8>, String) {
    (payload.to_vec(), client.to_owned())
}

#[tokio::test]
async fn an_idle_flow_ends_and_a_new_client_on_the_same_proxy_port_is_its_own() {
    let socket = ProxyUdpSocket::builder()
        .flow_idle_timeout(Duration::from_millis(300))
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let server = socket.local_addr().unwrap();
    let proxy = client("127.0.0.1:0").await;
    let a = "192.0.2.1:1000".parse().unwrap();
    let b = "[2001:db8::2]:2000".parse().unwrap();

    send(&proxy, server, Some(a), b"a1").await;
    send(&proxy, server, None, b"a2").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"a1", "192.0.2.1:1000"));
    assert_eq!(next(&socket).await.unwrap(), ok(b"a2", "192.0.2.1:1000"));

    // The proxy gives the port to a new client before the flow is idle: its header wins.
    send(&proxy, server, Some(b), b"b1").await;
    send(&proxy, server, None, b"b2").await;
    assert_eq!(
        next(&socket).await.unwrap(),
        ok(b"b1", "[2001:db8::2]:2000")
    );
    assert_eq!(
        next(&socket).await.unwrap(),
        ok(b"b2", "[2001:db8::2]:2000")
    );

    // Idle past the timeout: a bare datagram belongs to nobody.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(&proxy, server, None, b"late").await;
    assert!(matches!(
        next(&socket).await,
        Err(DatagramError::NoFlow { .. })
    ));

    // The port reused for another client, with its header, after the timeout.
    send(&proxy, server, Some(a), b"a3").await;
    send(&proxy, server, None, b"a4").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"a3", "192.0.2.1:1000"));
    assert_eq!(next(&socket).await.unwrap(), ok(b"a4", "192.0.2.1:1000"));

    let stats = socket.stats();
    assert_eq!(
        (
            stats.flows_started,
            stats.flows_expired,
            stats.dropped_no_flow
        ),
        (3, 1, 1)
    );
}

#[tokio::test]
async fn a_local_header_starts_a_flow_of_the_proxy_itself() {
    let socket = ProxyUdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    let proxy = client("127.0.0.1:0").await;
    let own = proxy.local_addr().unwrap().to_string();
    send(&proxy, server, Some("192.0.2.1:1".parse().unwrap()), b"x").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"x", "192.0.2.1:1"));
    // A health check on the same port: LOCAL, so the proxy speaks for itself from now on.
    let mut local = ProxyHeader::v2_local().to_bytes();
    local.extend_from_slice(b"check");
    proxy.send_to(&local, server).await.unwrap();
    assert_eq!(next(&socket).await.unwrap(), ok(b"check", &own));
    send(&proxy, server, None, b"after").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"after", &own));
}

#[tokio::test]
async fn at_the_flow_cap_the_least_recently_seen_flow_is_evicted_never_misattributed() {
    let socket = ProxyUdpSocket::builder()
        .max_flows(2)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let server = socket.local_addr().unwrap();
    let p1 = client("127.0.0.1:0").await;
    let p2 = client("127.0.0.1:0").await;
    let p3 = client("127.0.0.1:0").await;
    let c = |i: u8| SocketAddr::from(([192, 0, 2, i], 5000));

    send(&p1, server, Some(c(1)), b"1").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"1", "192.0.2.1:5000"));
    send(&p2, server, Some(c(2)), b"2").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"2", "192.0.2.2:5000"));
    send(&p1, server, None, b"1 again").await;
    assert_eq!(
        next(&socket).await.unwrap(),
        ok(b"1 again", "192.0.2.1:5000")
    );
    // Full: the flow of p2, seen least recently, makes room for p3's.
    send(&p3, server, Some(c(3)), b"3").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"3", "192.0.2.3:5000"));

    send(&p2, server, None, b"2 again").await;
    assert!(matches!(
        next(&socket).await,
        Err(DatagramError::NoFlow { .. })
    ));
    send(&p1, server, None, b"1 still").await;
    assert_eq!(
        next(&socket).await.unwrap(),
        ok(b"1 still", "192.0.2.1:5000")
    );
    send(&p3, server, None, b"3 still").await;
    assert_eq!(
        next(&socket).await.unwrap(),
        ok(b"3 still", "192.0.2.3:5000")
    );

    let stats = socket.stats();
    assert_eq!(
        (stats.flows, stats.flows_evicted, stats.dropped_no_flow),
        (2, 1, 1)
    );
}

#[tokio::test]
async fn a_malformed_header_ends_the_flow_of_its_proxy_port() {
    let socket = ProxyUdpSocket::bind("127.0.0.1:0").await.unwrap();
    let server = socket.local_addr().unwrap();
    let proxy = client("127.0.0.1:0").await;
    send(&proxy, server, Some("192.0.2.1:1".parse().unwrap()), b"x").await;
    assert_eq!(next(&socket).await.unwrap(), ok(b"x", "192.0.2.1:1"));

    let mut bad = ProxyHeader::v2_datagram("192.0.2.9:9".parse().unwrap(), server)
        .with_crc32c()
        .to_bytes();
    bad[20] ^= 0xFF;
    proxy.send_to(&bad, server).await.unwrap();
    assert!(matches!(
        next(&socket).await,
        Err(DatagramError::Header {
            source: HeaderError::Crc32c { .. },
            ..
        })
    ));
    // The next bare datagram was meant for the new client: it is not given to the old one.
    send(&proxy, server, None, b"y").await;
    assert!(matches!(
        next(&socket).await,
        Err(DatagramError::NoFlow { .. })
    ));
}

#[tokio::test]
async fn malformed_missing_and_untrusted_datagrams_are_dropped_and_counted() {
    for policy in [
        UdpPolicy::V2PerFlow,
        UdpPolicy::V2PerDatagram,
        UdpPolicy::Spp,
    ] {
        let socket = ProxyUdpSocket::builder()
            .trusted("127.0.0.1/32".parse().unwrap())
            .policy(policy)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        let server = socket.local_addr().unwrap();
        let trusted = client("127.0.0.1:0").await;
        let untrusted = client("127.0.0.2:0").await;
        let forged = "203.0.113.66:666".parse().unwrap();

        // An untrusted source: a v2 header is forbidden, SPP's magic is only payload, and
        // either way its client is its socket address.
        send(&untrusted, server, Some(forged), b"forged").await;
        assert!(matches!(
            next(&socket).await,
            Err(DatagramError::Forbidden {
                policy: UdpPolicy::Reject,
                ..
            })
        ));
        let spp = SppHeader::new(forged, server).to_bytes();
        untrusted.send_to(&spp, server).await.unwrap();
        let own = untrusted.local_addr().unwrap().to_string();
        assert_eq!(next(&socket).await.unwrap(), ok(&spp, &own));

        // A trusted source with a broken header of its format.
        let header = match policy {
            UdpPolicy::Spp => SppHeader::new(forged, server).to_bytes().to_vec(),
            _ => ProxyHeader::v2_datagram(forged, server).to_bytes(),
        };
        trusted.send_to(&header[..20], server).await.unwrap();
        let err = next(&socket).await.unwrap_err();
        assert_eq!(err.reason(), "malformed", "{policy}: {err}");
        match policy {
            UdpPolicy::Spp => assert!(matches!(
                err,
                DatagramError::Spp {
                    source: SppError::Short { len: 20 },
                    ..
                }
            )),
            _ => assert!(matches!(err, DatagramError::Truncated { len: 20, .. })),
        }
        // A wrong SPP magic number; a v2 header of version 3.
        let mut wrong = header.clone();
        match policy {
            UdpPolicy::Spp => wrong[1] ^= 0xFF,
            _ => wrong[12] = 0x31,
        }
        trusted.send_to(&wrong, server).await.unwrap();
        assert_eq!(next(&socket).await.unwrap_err().reason(), "malformed");

        // A trusted source without any header.
        trusted.send_to(b"bare", server).await.unwrap();
        let err = next(&socket).await.unwrap_err();
        let expected = match policy {
            UdpPolicy::V2PerFlow => "no-flow",
            UdpPolicy::V2PerDatagram => "missing",
            _ => "malformed",
        };
        assert_eq!(err.reason(), expected, "{policy}: {err}");
        assert_eq!(
            err.peer().unwrap().inet(),
            Some(trusted.local_addr().unwrap())
        );

        // `recv_from` goes past dropped datagrams to the next good one.
        send(&untrusted, server, Some(forged), b"forged").await;
        let mut good = header.clone();
        good.extend_from_slice(b"good");
        trusted.send_to(&good, server).await.unwrap();
        let mut buf = [0; 1500];
        let (len, from) = within("datagram", socket.recv_from(&mut buf))
            .await
            .unwrap();
        assert_eq!(&buf[..len], b"good");
        assert_eq!(from.client().unwrap().to_string(), "203.0.113.66:666");

        let stats = socket.stats();
        assert_eq!(stats.dropped_forbidden, 2, "{policy}");
        assert_eq!(
            stats.dropped_malformed
                + stats.dropped_missing
                + stats.dropped_no_flow
                + stats.dropped_forbidden,
            stats.datagrams - stats.delivered,
            "{policy}"
        );
        assert_eq!((stats.datagrams, stats.delivered), (7, 2), "{policy}");
    }
}

#[tokio::test]
async fn replies_to_sources_without_a_header_are_bare() {
    let socket = ProxyUdpSocket::builder()
        .policy(UdpPolicy::Reject)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let direct = client("127.0.0.2:0").await;
    direct
        .send_to(b"hi", socket.local_addr().unwrap())
        .await
        .unwrap();
    let mut buf = [0; 64];
    let (len, from) = within("datagram", socket.recv_from(&mut buf))
        .await
        .unwrap();
    assert_eq!(from.client().unwrap().source(), &AddrSource::Socket);
    assert_eq!(UdpDecoder::reply_header(&from), None);
    socket.send_to(&buf[..len], &from).await.unwrap();
    let (len, _) = within("reply", direct.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..len], b"hi");
    // An SPP proxy gets exactly its header back first.
    let (server, _socket) = echo_server(UdpPolicy::Spp).await;
    let spp_client = client("127.0.0.1:0").await;
    let header = SppHeader::new(
        "192.0.2.44:4444".parse().unwrap(),
        "192.0.2.1:53".parse().unwrap(),
    );
    let mut datagram = header.to_bytes().to_vec();
    datagram.extend_from_slice(b"q");
    let reply = exchange(&spp_client, server, &datagram).await;
    assert_eq!(&reply[..SPP_HEADER_LEN], &header.to_bytes());
    assert_eq!(&reply[SPP_HEADER_LEN..], b"peer=192.0.2.44:4444\nq");
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

proptest! {
    /// Writer then parser: a v2 datagram header gives back the client (canonical, as
    /// every `ClientAddr`) and leaves the payload untouched.
    #[test]
    fn v2_datagram_round_trip(src in socket_addr(), dst in socket_addr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let decoder = UdpDecoder::builder().policy(UdpPolicy::V2PerDatagram).decoder(None);
        let mut datagram = ProxyHeader::v2_datagram(src, dst).to_bytes();
        datagram.extend_from_slice(&payload);
        let (len, addr) = decoder.decode("10.0.0.1:1".parse().unwrap(), &datagram).unwrap();
        prop_assert_eq!(&datagram[len..], &payload[..]);
        let client = addr.client().unwrap();
        prop_assert_eq!(client.ip(), realip_core::canonical_ip(src.ip()));
        prop_assert_eq!(client.port(), Some(src.port()));
        prop_assert_eq!(addr.proxy_info().unwrap().transport(), Transport::Datagram);
    }

    /// Writer then parser, and parser then writer, for SPP: the same addresses, and the
    /// same 38 bytes back on the reply.
    #[test]
    fn spp_round_trip(client in socket_addr(), proxy in socket_addr(), raw in any::<[u8; 36]>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let header = SppHeader::new(client, proxy);
        let mut datagram = header.to_bytes().to_vec();
        datagram.extend_from_slice(&payload);
        let (parsed, rest) = SppHeader::parse(&datagram).unwrap();
        prop_assert_eq!(parsed, header);
        prop_assert_eq!(parsed.client().ip(), realip_core::canonical_ip(client.ip()));
        prop_assert_eq!(rest, &payload[..]);

        let mut wire = vec![0x56, 0xEC];
        wire.extend_from_slice(&raw);
        let (parsed, _) = SppHeader::parse(&wire).unwrap();
        prop_assert_eq!(&parsed.to_bytes()[..], &wire[..]);
        let decoder = UdpDecoder::builder().policy(UdpPolicy::Spp).decoder(None);
        let (_, addr) = decoder.decode("10.0.0.1:1".parse().unwrap(), &wire).unwrap();
        prop_assert_eq!(UdpDecoder::reply_header(&addr), Some(parsed));
    }
}
