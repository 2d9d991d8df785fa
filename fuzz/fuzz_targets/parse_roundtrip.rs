//! `parse_header` against the writer: whatever `ProxyHeader` writes parses back to the same
//! version, command, transport, addresses and TLVs, whatever follows it; and `parse_header`
//! on arbitrary bytes never panics and decides the same with or without trailing data.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use realip_listener::{
    Command, Family, ProxyAddr, ProxyHeader, ProxyVersion, SslInfo, Transport, parse_header,
    tlv_type,
};

const MAX: usize = 16 + u16::MAX as usize;

#[derive(Arbitrary, Debug)]
enum Ip {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Ip {
    fn with_port(&self, port: u16) -> SocketAddr {
        match *self {
            Self::V4(b) => SocketAddr::new(IpAddr::V4(Ipv4Addr::from(b)), port),
            Self::V6(b) => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(b)), port),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Addrs {
    V1 {
        src: Ip,
        sport: u16,
        dst: Ip,
        dport: u16,
    },
    V1Unknown,
    Inet {
        src: Ip,
        sport: u16,
        dst: Ip,
        dport: u16,
    },
    Local,
    Unspec,
    Unix {
        src: Vec<u8>,
        dst: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum TlvSpec {
    Alpn(Vec<u8>),
    Authority(String),
    UniqueId(Vec<u8>),
    Netns(String),
    Noop(Vec<u8>),
    Ssl {
        client: u8,
        verify: u32,
        version: Option<String>,
        cn: Option<String>,
        sub: Vec<(u8, Vec<u8>)>,
    },
    Aws(String),
    Azure(u32),
    Gcp(u64),
    /// A type the parser does not interpret (custom range and unassigned types).
    Other(u8, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    addrs: Addrs,
    /// Applied to v2 headers: LOCAL instead of PROXY.
    local: bool,
    /// Applied to v2 headers: 0 keeps the constructor's, 1 STREAM, 2 DGRAM, 3 UNSPEC.
    transport: u8,
    tlvs: Vec<TlvSpec>,
    crc32c: bool,
    trailing: Vec<u8>,
}

fn is_interpreted(kind: u8) -> bool {
    matches!(kind, tlv_type::CRC32C | tlv_type::UNIQUE_ID | tlv_type::SSL)
}

fn build(input: &Input) -> ProxyHeader {
    let header = match &input.addrs {
        Addrs::V1 {
            src,
            sport,
            dst,
            dport,
        } => {
            return ProxyHeader::v1(src.with_port(*sport), dst.with_port(*dport));
        }
        Addrs::V1Unknown => return ProxyHeader::v1_unknown(),
        Addrs::Inet {
            src,
            sport,
            dst,
            dport,
        } => ProxyHeader::v2(src.with_port(*sport), dst.with_port(*dport)),
        Addrs::Local => ProxyHeader::v2_local(),
        Addrs::Unspec => ProxyHeader::v2_unspec(),
        Addrs::Unix { src, dst } => ProxyHeader::v2_unix(src, dst),
    };
    let mut header = if input.local {
        header.with_command(Command::Local)
    } else {
        header
    };
    header = match input.transport % 4 {
        1 => header.with_transport(Transport::Stream),
        2 => header.with_transport(Transport::Datagram),
        3 => header.with_transport(Transport::Unspec),
        _ => header,
    };
    for tlv in &input.tlvs {
        header = match tlv {
            TlvSpec::Alpn(v) => header.with_alpn(v.clone()),
            TlvSpec::Authority(s) => header.with_authority(s),
            TlvSpec::UniqueId(v) => header.with_unique_id(v[..v.len().min(128)].to_vec()),
            TlvSpec::Netns(s) => header.with_netns(s),
            TlvSpec::Noop(v) => header.with_tlv(tlv_type::NOOP, v.clone()),
            TlvSpec::Ssl {
                client,
                verify,
                version,
                cn,
                sub,
            } => {
                let mut ssl = SslInfo::new(*client, *verify);
                if let Some(v) = version {
                    ssl = ssl.with_version(v);
                }
                if let Some(cn) = cn {
                    ssl = ssl.with_client_cn(cn);
                }
                for (kind, value) in sub {
                    ssl = ssl.with_sub_tlv(*kind, value.clone());
                }
                header.with_ssl(&ssl)
            }
            TlvSpec::Aws(s) => header.with_aws_vpce_id(s),
            TlvSpec::Azure(id) => header.with_azure_link_id(*id),
            TlvSpec::Gcp(id) => header.with_gcp_psc_connection_id(*id),
            TlvSpec::Other(kind, v) if !is_interpreted(*kind) => header.with_tlv(*kind, v.clone()),
            TlvSpec::Other(..) => header,
        };
    }
    if input.crc32c {
        header.with_crc32c()
    } else {
        header
    }
}

/// The address a v1 header or the v2 writer sends for `addr` when the other side is `other`:
/// mixed families go as IPv6 with the IPv4 address mapped.
fn sent(addr: SocketAddr, other: SocketAddr) -> SocketAddr {
    match (addr, other) {
        (SocketAddr::V4(v4), SocketAddr::V6(_)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => addr,
    }
}

fn unix_path(raw: &[u8]) -> Vec<u8> {
    let raw = &raw[..raw.len().min(108)];
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    raw[..end].to_vec()
}

/// Arbitrary bytes: no panic, and the decision on a complete header does not depend on what
/// follows it.
fn raw(bytes: &[u8]) {
    if let Ok(Some((info, len))) = parse_header(bytes, MAX) {
        let again = parse_header(&bytes[..len], MAX).unwrap().unwrap();
        assert_eq!((info, len), again);
        // Nor on how many trailing bytes there are.
        for cut in [len + 1, len + (bytes.len() - len) / 2] {
            if cut <= bytes.len() {
                assert_eq!(parse_header(&bytes[..cut], MAX).unwrap().unwrap().1, len);
            }
        }
    }
}

// The first byte chooses: even, the rest is raw bytes for `parse_header` (seeds captured from
// real proxies are `[0]` followed by what the proxy sent); odd, the rest describes a header
// for the writer.
fuzz_target!(|bytes: &[u8]| {
    let Some((&mode, rest)) = bytes.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) {
        roundtrip(&input);
    }
});

fn roundtrip(input: &Input) {
    let header = build(input);
    let Ok(bytes) = header.try_to_bytes() else {
        return; // TLVs longer than a v2 header can hold: refused by the writer.
    };
    let mut with_trailing = bytes.clone();
    with_trailing.extend_from_slice(&input.trailing);
    let (info, len) = parse_header(&bytes, MAX)
        .unwrap_or_else(|e| panic!("writer output rejected: {e}: {bytes:02x?}"))
        .expect("writer output incomplete");
    assert_eq!(len, bytes.len());
    let (info2, len2) = parse_header(&with_trailing, MAX).unwrap().unwrap();
    assert_eq!(
        (&info, len),
        (&info2, len2),
        "trailing data changed the header"
    );
    // Every proper prefix is incomplete, never an error or another header.
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(parse_header(&bytes[..cut], MAX), Ok(None)),
            "prefix {cut}"
        );
    }

    match &input.addrs {
        Addrs::V1 {
            src,
            sport,
            dst,
            dport,
        } => {
            let (src, dst) = (src.with_port(*sport), dst.with_port(*dport));
            assert_eq!(info.version(), ProxyVersion::V1);
            assert_eq!(info.command(), Command::Proxy);
            assert_eq!(info.source_inet(), Some(sent(src, dst)));
            assert_eq!(info.destination_inet(), Some(sent(dst, src)));
            assert!(info.tlvs().is_empty());
            return;
        }
        Addrs::V1Unknown => {
            assert_eq!(info.version(), ProxyVersion::V1);
            assert_eq!(info.family(), Family::Unspec);
            assert!(info.source().is_none() && info.destination().is_none());
            return;
        }
        Addrs::Inet {
            src,
            sport,
            dst,
            dport,
        } => {
            let (src, dst) = (src.with_port(*sport), dst.with_port(*dport));
            let (s, d) = (sent(src, dst), sent(dst, src));
            // LOCAL: the address block is skipped, whatever its family.
            let family = if input.local {
                Family::Unspec
            } else if s.is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            };
            assert_eq!(info.family(), family);
            if !input.local {
                assert_eq!(info.source_inet(), Some(s));
                assert_eq!(info.destination_inet(), Some(d));
            }
        }
        Addrs::Local | Addrs::Unspec => {
            assert_eq!(info.family(), Family::Unspec);
            assert!(info.source().is_none());
        }
        Addrs::Unix { src, dst } => {
            let family = if input.local {
                Family::Unspec
            } else {
                Family::Unix
            };
            assert_eq!(info.family(), family);
            if !input.local {
                assert_eq!(info.source(), Some(&ProxyAddr::Unix(unix_path(src))));
                assert_eq!(info.destination(), Some(&ProxyAddr::Unix(unix_path(dst))));
            }
        }
    }
    assert_eq!(info.version(), ProxyVersion::V2);
    let local = input.local || matches!(input.addrs, Addrs::Local);
    assert_eq!(
        info.command(),
        if local {
            Command::Local
        } else {
            Command::Proxy
        }
    );
    if local {
        // LOCAL: the address block is skipped whatever it holds.
        assert!(info.source().is_none() && info.destination().is_none());
    }

    // The TLVs come back in order, byte for byte, the checksum last.
    let raw: Vec<(u8, Vec<u8>)> = info
        .tlvs()
        .raw()
        .iter()
        .map(|t| (t.kind(), t.value().to_vec()))
        .collect();
    let expected_count = input
        .tlvs
        .iter()
        .filter(|t| !matches!(t, TlvSpec::Other(kind, _) if is_interpreted(*kind)))
        .count()
        + usize::from(input.crc32c);
    assert_eq!(raw.len(), expected_count);
    let mut first_ssl = true;
    let specs = input
        .tlvs
        .iter()
        .filter(|t| !matches!(t, TlvSpec::Other(kind, _) if is_interpreted(*kind)));
    for (spec, (kind, value)) in specs.zip(&raw) {
        match spec {
            TlvSpec::Alpn(v) => assert_eq!((*kind, value), (tlv_type::ALPN, v)),
            TlvSpec::Authority(s) => assert_eq!(
                (*kind, value.as_slice()),
                (tlv_type::AUTHORITY, s.as_bytes())
            ),
            TlvSpec::UniqueId(v) => assert_eq!(
                (*kind, value.as_slice()),
                (tlv_type::UNIQUE_ID, &v[..v.len().min(128)])
            ),
            TlvSpec::Netns(s) => {
                assert_eq!((*kind, value.as_slice()), (tlv_type::NETNS, s.as_bytes()))
            }
            TlvSpec::Noop(v) => assert_eq!((*kind, value), (tlv_type::NOOP, v)),
            TlvSpec::Ssl {
                client,
                verify,
                version,
                cn,
                ..
            } => {
                assert_eq!(*kind, tlv_type::SSL);
                assert_eq!(value[0], *client);
                assert_eq!(value[1..5], verify.to_be_bytes());
                if std::mem::take(&mut first_ssl) {
                    // `Tlvs::ssl` is the first SSL TLV, with its sub-TLVs.
                    let ssl = info.tlvs().ssl().unwrap();
                    assert_eq!((ssl.client_flags(), ssl.verify()), (*client, *verify));
                    if version.is_some() {
                        assert_eq!(ssl.version(), version.as_deref());
                    }
                    if cn.is_some() {
                        assert_eq!(ssl.client_cn(), cn.as_deref());
                    }
                }
            }
            TlvSpec::Aws(_) => assert_eq!(*kind, tlv_type::AWS),
            TlvSpec::Azure(_) => assert_eq!(*kind, tlv_type::AZURE),
            TlvSpec::Gcp(_) => assert_eq!(*kind, tlv_type::GCP),
            TlvSpec::Other(k, v) => assert_eq!((kind, value), (k, v)),
        }
    }
    if input.crc32c {
        assert_eq!(raw.last().map(|t| t.0), Some(tlv_type::CRC32C));
        assert!(info.tlvs().crc32c().is_some());
    }
}
