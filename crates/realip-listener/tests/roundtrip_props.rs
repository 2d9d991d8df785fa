//! Property test: whatever [`ProxyHeader`] writes, for every version, family, command,
//! transport and mix of TLVs, comes back the same through `parse_header` and through the
//! listener's handshake (the header split anywhere, application bytes after it), and the
//! application reads exactly the bytes that followed the header.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Context, Poll};

use proptest::prelude::*;
use realip_core::{AddrSource, PeerAddr, canonical_ip};
use realip_listener::{
    Accept, Accepted, Command, Family, ProxyAddr, ProxyHeader, ProxyListener, ProxyVersion,
    SslInfo, Transport, parse_header, tlv_type,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40000);
const LOCAL: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 443);

#[derive(Clone, Debug)]
enum Addrs {
    Inet(SocketAddr, SocketAddr),
    Unix(Vec<u8>, Vec<u8>),
    Unspec,
}

#[derive(Clone, Debug)]
enum TlvSpec {
    Alpn(Vec<u8>),
    Authority(String),
    UniqueId(Vec<u8>),
    Netns(String),
    Noop(Vec<u8>),
    Ssl(u8, u32, String, String),
    Aws(String),
    Azure(u32),
    Gcp(u64),
    Custom(u8, Vec<u8>),
}

#[derive(Clone, Debug)]
struct Spec {
    v1: bool,
    addrs: Addrs,
    command: Command,
    transport: Transport,
    tlvs: Vec<TlvSpec>,
    crc32c: bool,
    data: Vec<u8>,
    split: usize,
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
    ]
}

fn addrs() -> impl Strategy<Value = Addrs> {
    let path = prop::collection::vec(1u8.., 0..120);
    prop_oneof![
        4 => (socket_addr(), socket_addr()).prop_map(|(s, d)| Addrs::Inet(s, d)),
        1 => (path.clone(), path).prop_map(|(s, d)| Addrs::Unix(s, d)),
        1 => Just(Addrs::Unspec),
    ]
}

fn tlv() -> impl Strategy<Value = TlvSpec> {
    let bytes = || prop::collection::vec(any::<u8>(), 0..40);
    prop_oneof![
        bytes().prop_map(TlvSpec::Alpn),
        "[a-z0-9.-]{0,30}".prop_map(TlvSpec::Authority),
        prop::collection::vec(any::<u8>(), 0..=128).prop_map(TlvSpec::UniqueId),
        "[a-z]{0,10}".prop_map(TlvSpec::Netns),
        bytes().prop_map(TlvSpec::Noop),
        (any::<u8>(), any::<u32>(), "TLSv1\\.[23]", "[a-z ]{0,20}")
            .prop_map(|(c, v, version, cn)| TlvSpec::Ssl(c, v, version, cn)),
        "vpce-[0-9a-f]{0,17}".prop_map(TlvSpec::Aws),
        any::<u32>().prop_map(TlvSpec::Azure),
        any::<u64>().prop_map(TlvSpec::Gcp),
        // Types the listener stores without interpreting (custom range, unassigned).
        (
            prop::sample::select(vec![0x06u8, 0x10, 0x31, 0xE1, 0xE5, 0xEF, 0xF0]),
            bytes()
        )
            .prop_map(|(k, v)| TlvSpec::Custom(k, v)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        addrs(),
        prop_oneof![Just(Command::Proxy), Just(Command::Local)],
        prop_oneof![
            Just(Transport::Stream),
            Just(Transport::Datagram),
            Just(Transport::Unspec)
        ],
        prop::collection::vec(tlv(), 0..6),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..64),
        any::<usize>(),
    )
        .prop_map(
            |(v1, addrs, command, transport, tlvs, crc32c, data, split)| Spec {
                v1,
                addrs,
                command,
                transport,
                tlvs,
                crc32c,
                data,
                split,
            },
        )
}

fn build(spec: &Spec) -> ProxyHeader {
    if spec.v1 {
        return match &spec.addrs {
            Addrs::Inet(s, d) => ProxyHeader::v1(*s, *d),
            _ => ProxyHeader::v1_unknown(),
        };
    }
    let mut header = match &spec.addrs {
        Addrs::Inet(s, d) => ProxyHeader::v2(*s, *d),
        Addrs::Unix(s, d) => ProxyHeader::v2_unix(s, d),
        Addrs::Unspec => ProxyHeader::v2_unspec(),
    }
    .with_command(spec.command)
    .with_transport(spec.transport);
    for tlv in &spec.tlvs {
        header = match tlv {
            TlvSpec::Alpn(v) => header.with_alpn(v.clone()),
            TlvSpec::Authority(s) => header.with_authority(s),
            TlvSpec::UniqueId(v) => header.with_unique_id(v.clone()),
            TlvSpec::Netns(s) => header.with_netns(s),
            TlvSpec::Noop(v) => header.with_tlv(tlv_type::NOOP, v.clone()),
            TlvSpec::Ssl(c, v, version, cn) => header.with_ssl(
                &SslInfo::new(*c, *v)
                    .with_version(version)
                    .with_client_cn(cn),
            ),
            TlvSpec::Aws(s) => header.with_aws_vpce_id(s),
            TlvSpec::Azure(id) => header.with_azure_link_id(*id),
            TlvSpec::Gcp(id) => header.with_gcp_psc_connection_id(*id),
            TlvSpec::Custom(kind, v) => header.with_tlv(*kind, v.clone()),
        };
    }
    if spec.crc32c {
        header.with_crc32c()
    } else {
        header
    }
}

/// How a header sends `addr` when the other end is `other`: mixed families as IPv6, with
/// the IPv4 address mapped.
fn sent(addr: SocketAddr, other: SocketAddr) -> SocketAddr {
    match (addr, other) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => addr,
    }
}

/// The source the reader must report, `None` when the header carries none (LOCAL, UNKNOWN,
/// UNSPEC).
fn expected_source(spec: &Spec) -> Option<ProxyAddr> {
    if !spec.v1 && spec.command == Command::Local {
        return None;
    }
    match &spec.addrs {
        Addrs::Inet(s, d) => Some(ProxyAddr::Inet(sent(*s, *d))),
        // The writer truncates paths to the block's 108 bytes.
        Addrs::Unix(s, _) if !spec.v1 => Some(ProxyAddr::Unix(s[..s.len().min(108)].to_vec())),
        _ => None,
    }
}

fn check_info(spec: &Spec, info: &realip_listener::ProxyInfo) {
    let version = if spec.v1 {
        ProxyVersion::V1
    } else {
        ProxyVersion::V2
    };
    assert_eq!(info.version(), version);
    assert_eq!(info.source().cloned(), expected_source(spec));
    if spec.v1 {
        assert!(info.tlvs().is_empty());
        return;
    }
    assert_eq!(info.command(), spec.command);
    assert_eq!(info.transport(), spec.transport);
    let family = match &spec.addrs {
        // LOCAL: the address block is skipped, whatever its family.
        _ if spec.command == Command::Local => Family::Unspec,
        Addrs::Inet(s, d) if sent(*s, *d).is_ipv4() => Family::Inet,
        Addrs::Inet(..) => Family::Inet6,
        Addrs::Unix(..) => Family::Unix,
        Addrs::Unspec => Family::Unspec,
    };
    assert_eq!(info.family(), family);
    let kinds: Vec<u8> = info.tlvs().raw().iter().map(|t| t.kind()).collect();
    let mut expected: Vec<u8> = spec
        .tlvs
        .iter()
        .map(|t| match t {
            TlvSpec::Alpn(_) => tlv_type::ALPN,
            TlvSpec::Authority(_) => tlv_type::AUTHORITY,
            TlvSpec::UniqueId(_) => tlv_type::UNIQUE_ID,
            TlvSpec::Netns(_) => tlv_type::NETNS,
            TlvSpec::Noop(_) => tlv_type::NOOP,
            TlvSpec::Ssl(..) => tlv_type::SSL,
            TlvSpec::Aws(_) => tlv_type::AWS,
            TlvSpec::Azure(_) => tlv_type::AZURE,
            TlvSpec::Gcp(_) => tlv_type::GCP,
            TlvSpec::Custom(kind, _) => *kind,
        })
        .collect();
    if spec.crc32c {
        expected.push(tlv_type::CRC32C);
    }
    assert_eq!(kinds, expected);
    let tlvs = info.tlvs();
    for tlv in &spec.tlvs {
        match tlv {
            TlvSpec::Alpn(v) => assert!(tlvs.raw().iter().any(|t| t.value() == &v[..])),
            TlvSpec::Authority(s) => {
                assert!(tlvs.raw().iter().any(|t| t.value() == s.as_bytes()));
            }
            TlvSpec::UniqueId(v) => {
                assert!(tlvs.raw().iter().any(|t| t.value() == &v[..]));
            }
            TlvSpec::Custom(kind, v) => {
                assert!(
                    tlvs.raw()
                        .iter()
                        .any(|t| t.kind() == *kind && t.value() == &v[..])
                );
            }
            _ => {}
        }
    }
    // The first of each kind is what the typed accessors return.
    let first = |f: &dyn Fn(&TlvSpec) -> bool| spec.tlvs.iter().find(|t| f(t));
    if let Some(TlvSpec::Ssl(c, v, version, cn)) = first(&|t| matches!(t, TlvSpec::Ssl(..))) {
        let ssl = tlvs.ssl().unwrap();
        assert_eq!((ssl.client_flags(), ssl.verify()), (*c, *v));
        assert_eq!(ssl.version(), Some(version.as_str()));
        assert_eq!(ssl.client_cn(), Some(cn.as_str()));
    }
    if let Some(TlvSpec::Aws(id)) = first(&|t| matches!(t, TlvSpec::Aws(_))) {
        assert_eq!(tlvs.aws_vpce_id(), Some(id.as_str()));
    }
    if let Some(TlvSpec::Azure(id)) = first(&|t| matches!(t, TlvSpec::Azure(_))) {
        assert_eq!(tlvs.azure_private_endpoint_link_id(), Some(*id));
    }
    if let Some(TlvSpec::Gcp(id)) = first(&|t| matches!(t, TlvSpec::Gcp(_))) {
        assert_eq!(tlvs.gcp_psc_connection_id(), Some(*id));
    }
    assert_eq!(tlvs.crc32c().is_some(), spec.crc32c);
}

/// A listener over one in-memory connection.
struct OneConnection(Option<DuplexStream>);

impl Accept for OneConnection {
    type Io = DuplexStream;
    type LocalAddr = SocketAddr;

    fn poll_accept_io(&mut self, _: &mut Context<'_>) -> Poll<io::Result<Accepted<DuplexStream>>> {
        match self.0.take() {
            Some(io) => Poll::Ready(Ok((io, PeerAddr::Inet(PEER), Some(LOCAL)))),
            None => Poll::Pending,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(LOCAL)
    }

    fn local_peer_addr(&self) -> io::Result<PeerAddr> {
        Ok(PeerAddr::Inet(LOCAL))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn writer_to_reader_round_trip(spec in spec()) {
        let header = build(&spec).to_bytes();
        let mut bytes = header.clone();
        bytes.extend_from_slice(&spec.data);

        // The parser: the header, whatever follows it.
        let (info, len) = parse_header(&bytes, 1 << 17).unwrap().unwrap();
        prop_assert_eq!(len, header.len());
        check_info(&spec, &info);

        // The listener: the header split at any point, the data after it.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (got_info, client, app) = rt.block_on(async {
            let (mut proxy, server) = tokio::io::duplex(1 << 17);
            let mut listener = ProxyListener::builder()
                .max_header_len(1 << 17)
                .listen(OneConnection(Some(server)));
            let split = spec.split % (bytes.len() + 1);
            let (first, second) = bytes.split_at(split);
            let (first, second) = (first.to_vec(), second.to_vec());
            let writer = tokio::spawn(async move {
                proxy.write_all(&first).await.unwrap();
                tokio::task::yield_now().await;
                proxy.write_all(&second).await.unwrap();
                proxy.shutdown().await.unwrap();
            });
            let (mut stream, addr) = listener.try_accept().await.unwrap();
            let mut app = Vec::new();
            stream.read_to_end(&mut app).await.unwrap();
            writer.await.unwrap();
            (addr.proxy_info().cloned(), addr.client(), app)
        });
        prop_assert_eq!(got_info.as_ref(), Some(&info));
        prop_assert_eq!(app, spec.data.clone());
        let client = client.unwrap();
        match expected_source(&spec) {
            Some(ProxyAddr::Inet(addr)) => {
                prop_assert_eq!(canonical_ip(client.ip()), canonical_ip(addr.ip()));
                prop_assert_eq!(client.port(), Some(addr.port()));
                prop_assert_eq!(client.source(), &AddrSource::ProxyProtocol);
            }
            // LOCAL, UNKNOWN, UNSPEC, Unix: the socket's peer.
            _ => {
                prop_assert_eq!(client.socket_addr(), Some(PEER));
                prop_assert_eq!(client.source(), &AddrSource::Socket);
            }
        }
    }
}
