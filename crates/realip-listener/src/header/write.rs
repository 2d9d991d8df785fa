//! Writing PROXY headers, for clients, tests and proxies written in Rust.
//!
//! [`ProxyHeader`] builds a v1 or v2 header (with TLVs and an optional CRC32C) on top of
//! `ppp`'s builder, and writes it to bytes or to any `AsyncWrite`.
//!
//! # Example
//!
//! ```
//! use realip_listener::{ProxyHeader, parse_header};
//!
//! let src = "192.0.2.10:40000".parse().unwrap();
//! let dst = "10.0.0.1:1883".parse().unwrap();
//! assert_eq!(
//!     ProxyHeader::v1(src, dst).to_bytes(),
//!     b"PROXY TCP4 192.0.2.10 10.0.0.1 40000 1883\r\n"
//! );
//!
//! let v2 = ProxyHeader::v2(src, dst).with_alpn("mqtt").with_crc32c().to_bytes();
//! let (info, len) = parse_header(&v2, 4096).unwrap().unwrap();
//! assert_eq!(len, v2.len());
//! assert_eq!(info.tlvs().alpn(), Some(&b"mqtt"[..]));
//! assert!(info.tlvs().crc32c().is_some());
//!
//! let local = ProxyHeader::v2_local().to_bytes();
//! assert_eq!(local.len(), 16);
//! ```

use std::io;
use std::net::{SocketAddr, SocketAddrV6};

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::header::info::{Command, Transport};
use crate::header::parse::V2_MAX_LEN;
use crate::header::tlv::{CRC32C, SslInfo, Tlv, tlv_type};

/// A PROXY protocol header to send.
///
/// ```
/// use realip_listener::{ProxyHeader, SslInfo};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let header = ProxyHeader::v2("192.0.2.1:40000".parse().unwrap(), "10.0.0.1:443".parse().unwrap())
///     .with_authority("example.com")
///     .with_ssl(&SslInfo::new(SslInfo::CLIENT_SSL, 0).with_version("TLSv1.3"))
///     .with_crc32c();
/// let mut out = Vec::new(); // any AsyncWrite: a TcpStream, a duplex pipe, ...
/// header.write_to(&mut out).await?;
/// assert_eq!(out, header.to_bytes());
/// assert_eq!(&out[..12], b"\r\n\r\n\0\r\nQUIT\n");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyHeader {
    repr: Repr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    V1(Option<(SocketAddr, SocketAddr)>),
    V2 {
        command: Command,
        transport: Transport,
        addrs: V2Addrs,
        tlvs: Vec<Tlv>,
        crc32c: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum V2Addrs {
    Unspec,
    Inet(SocketAddr, SocketAddr),
    Unix(Vec<u8>, Vec<u8>),
}

/// Puts both addresses in the same family (IPv4 becomes IPv4-mapped IPv6 when mixed).
fn same_family(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    fn to_v6(a: SocketAddr) -> SocketAddr {
        match a {
            SocketAddr::V4(v4) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            v6 => v6,
        }
    }
    if src.is_ipv4() == dst.is_ipv4() {
        (src, dst)
    } else {
        (to_v6(src), to_v6(dst))
    }
}

impl ProxyHeader {
    /// A v1 header, `PROXY TCP4|TCP6 src dst sport dport\r\n`. With one IPv4 and one IPv6
    /// address, the IPv4 one is sent as IPv4-mapped IPv6 (`TCP6`).
    pub fn v1(src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            repr: Repr::V1(Some(same_family(src, dst))),
        }
    }

    /// The v1 header `PROXY UNKNOWN\r\n`.
    pub const fn v1_unknown() -> Self {
        Self {
            repr: Repr::V1(None),
        }
    }

    fn v2_with(command: Command, addrs: V2Addrs, transport: Transport) -> Self {
        Self {
            repr: Repr::V2 {
                command,
                transport,
                addrs,
                tlvs: Vec::new(),
                crc32c: false,
            },
        }
    }

    /// A v2 PROXY header for a TCP connection (`INET` or `INET6`, `STREAM`). Mixed families
    /// are sent as IPv6 with the IPv4 address mapped.
    pub fn v2(src: SocketAddr, dst: SocketAddr) -> Self {
        let (src, dst) = same_family(src, dst);
        Self::v2_with(Command::Proxy, V2Addrs::Inet(src, dst), Transport::Stream)
    }

    /// A v2 PROXY header for a UDP flow (`INET` or `INET6`, `DGRAM`), as a proxy prepends to
    /// a datagram. Mixed families are sent as IPv6 with the IPv4 address mapped.
    pub fn v2_datagram(src: SocketAddr, dst: SocketAddr) -> Self {
        Self::v2(src, dst).with_transport(Transport::Datagram)
    }

    /// A v2 LOCAL header (a proxy's own connection, such as a health check), `AF_UNSPEC`.
    pub fn v2_local() -> Self {
        Self::v2_with(Command::Local, V2Addrs::Unspec, Transport::Unspec)
    }

    /// A v2 PROXY header with family `AF_UNSPEC` (no addresses).
    pub fn v2_unspec() -> Self {
        Self::v2_with(Command::Proxy, V2Addrs::Unspec, Transport::Unspec)
    }

    /// A v2 PROXY header with Unix socket paths (`AF_UNIX`, `STREAM`). Paths longer than
    /// 108 bytes are truncated.
    pub fn v2_unix(src: impl AsRef<[u8]>, dst: impl AsRef<[u8]>) -> Self {
        Self::v2_with(
            Command::Proxy,
            V2Addrs::Unix(src.as_ref().to_vec(), dst.as_ref().to_vec()),
            Transport::Stream,
        )
    }

    /// Sets the v2 command; `Command::Local` keeps any address block (receivers skip it).
    /// No effect on v1.
    #[must_use]
    pub fn with_command(mut self, command: Command) -> Self {
        if let Repr::V2 { command: c, .. } = &mut self.repr {
            *c = command;
        }
        self
    }

    /// Sets the v2 transport (`STREAM` by default for addresses). No effect on v1.
    #[must_use]
    pub fn with_transport(mut self, transport: Transport) -> Self {
        if let Repr::V2 { transport: t, .. } = &mut self.repr {
            *t = transport;
        }
        self
    }

    /// Adds a TLV (v2 only; no effect on v1). TLVs are written in the order added.
    #[must_use]
    pub fn with_tlv(mut self, kind: u8, value: impl Into<Vec<u8>>) -> Self {
        if let Repr::V2 { tlvs, .. } = &mut self.repr {
            tlvs.push(Tlv::new(kind, value.into()));
        }
        self
    }

    /// Adds an ALPN TLV (`PP2_TYPE_ALPN`).
    #[must_use]
    pub fn with_alpn(self, alpn: impl Into<Vec<u8>>) -> Self {
        self.with_tlv(tlv_type::ALPN, alpn)
    }

    /// Adds an authority (SNI host name) TLV (`PP2_TYPE_AUTHORITY`).
    #[must_use]
    pub fn with_authority(self, authority: &str) -> Self {
        self.with_tlv(tlv_type::AUTHORITY, authority)
    }

    /// Adds a unique id TLV (`PP2_TYPE_UNIQUE_ID`, at most 128 bytes for receivers).
    #[must_use]
    pub fn with_unique_id(self, id: impl Into<Vec<u8>>) -> Self {
        self.with_tlv(tlv_type::UNIQUE_ID, id)
    }

    /// Adds a network namespace TLV (`PP2_TYPE_NETNS`).
    #[must_use]
    pub fn with_netns(self, netns: &str) -> Self {
        self.with_tlv(tlv_type::NETNS, netns)
    }

    /// Adds an SSL TLV (`PP2_TYPE_SSL`) with its sub-TLVs.
    #[must_use]
    pub fn with_ssl(self, ssl: &SslInfo) -> Self {
        self.with_tlv(tlv_type::SSL, ssl.to_value())
    }

    /// Adds an AWS VPC endpoint id TLV (`0xEA`, sub-type `0x01`).
    #[must_use]
    pub fn with_aws_vpce_id(self, id: &str) -> Self {
        let mut value = vec![0x01];
        value.extend_from_slice(id.as_bytes());
        self.with_tlv(tlv_type::AWS, value)
    }

    /// Adds an Azure private endpoint link id TLV (`0xEE`, sub-type `0x01`).
    #[must_use]
    pub fn with_azure_link_id(self, id: u32) -> Self {
        let mut value = vec![0x01];
        value.extend_from_slice(&id.to_le_bytes());
        self.with_tlv(tlv_type::AZURE, value)
    }

    /// Adds a Google Cloud PSC connection id TLV (`0xE0`).
    #[must_use]
    pub fn with_gcp_psc_connection_id(self, id: u64) -> Self {
        self.with_tlv(tlv_type::GCP, id.to_be_bytes())
    }

    /// Adds a CRC32C TLV (`PP2_TYPE_CRC32C`), computed over the whole header when it is
    /// serialized. No effect on v1.
    #[must_use]
    pub fn with_crc32c(mut self) -> Self {
        if let Repr::V2 { crc32c, .. } = &mut self.repr {
            *crc32c = true;
        }
        self
    }

    /// The header's bytes.
    ///
    /// # Panics
    ///
    /// If the TLVs make a v2 header longer than 65 551 bytes; see
    /// [`try_to_bytes`](Self::try_to_bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.try_to_bytes() {
            Ok(bytes) => bytes,
            Err(err) => panic!("PROXY header cannot be serialized: {err}"),
        }
    }

    /// The header's bytes, or an `InvalidInput` error when the TLVs make a v2 header
    /// longer than the 16-bit length field allows.
    pub fn try_to_bytes(&self) -> io::Result<Vec<u8>> {
        match &self.repr {
            Repr::V1(None) => Ok(b"PROXY UNKNOWN\r\n".to_vec()),
            Repr::V1(Some(addrs)) => Ok(ppp::v1::Addresses::from(*addrs).to_string().into_bytes()),
            Repr::V2 {
                command,
                transport,
                addrs,
                tlvs,
                crc32c,
            } => {
                use ppp::v2::{Addresses, Builder, Protocol, Unix, Version};
                let version_command = Version::Two
                    | match command {
                        Command::Proxy => ppp::v2::Command::Proxy,
                        Command::Local => ppp::v2::Command::Local,
                    };
                let protocol = match transport {
                    Transport::Unspec => Protocol::Unspecified,
                    Transport::Stream => Protocol::Stream,
                    Transport::Datagram => Protocol::Datagram,
                };
                let addresses = match addrs {
                    V2Addrs::Unspec => Addresses::Unspecified,
                    V2Addrs::Inet(src, dst) => Addresses::from((*src, *dst)),
                    V2Addrs::Unix(src, dst) => {
                        Addresses::Unix(Unix::new(path108(src), path108(dst)))
                    }
                };
                let invalid = |_: io::Error| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "v2 header longer than 65551 bytes",
                    )
                };
                let mut builder = Builder::with_addresses(version_command, protocol, addresses);
                for tlv in tlvs {
                    builder = builder
                        .write_tlv(tlv.kind(), tlv.value())
                        .map_err(invalid)?;
                }
                if *crc32c {
                    builder = builder
                        .write_tlv(tlv_type::CRC32C, &[0; 4])
                        .map_err(invalid)?;
                }
                let mut bytes = builder.build().map_err(invalid)?;
                if bytes.len() > V2_MAX_LEN {
                    return Err(invalid(io::ErrorKind::InvalidInput.into()));
                }
                if *crc32c {
                    let at = bytes.len() - 4;
                    let crc = CRC32C.checksum(&bytes);
                    bytes[at..].copy_from_slice(&crc.to_be_bytes());
                }
                Ok(bytes)
            }
        }
    }

    /// Writes the header to `writer` (without flushing).
    pub async fn write_to<W>(&self, writer: &mut W) -> io::Result<()>
    where
        W: AsyncWrite + Unpin + ?Sized,
    {
        let bytes = self.try_to_bytes()?;
        writer.write_all(&bytes).await
    }
}

fn path108(path: &[u8]) -> [u8; 108] {
    let mut out = [0; 108];
    let n = path.len().min(108);
    out[..n].copy_from_slice(&path[..n]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HeaderError;
    use crate::header::parse::parse_header;

    #[test]
    fn v1_forms() {
        let src: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::2]:2".parse().unwrap();
        assert_eq!(
            ProxyHeader::v1(src, dst).to_bytes(),
            b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"
        );
        assert_eq!(ProxyHeader::v1_unknown().to_bytes(), b"PROXY UNKNOWN\r\n");
        let mixed = ProxyHeader::v1("192.0.2.1:1".parse().unwrap(), dst).to_bytes();
        assert_eq!(mixed, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 1 2\r\n");
    }

    #[test]
    fn crc32c_round_trip_and_tamper() {
        let mut bytes = ProxyHeader::v2(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        )
        .with_authority("a.example")
        .with_crc32c()
        .to_bytes();
        assert!(parse_header(&bytes, 4096).unwrap().is_some());
        bytes[17] ^= 1;
        assert!(matches!(
            parse_header(&bytes, 4096),
            Err(HeaderError::Crc32c { .. })
        ));
    }

    #[test]
    fn oversized_tlvs_are_an_error() {
        let header = ProxyHeader::v2_local()
            .with_tlv(0xE1, vec![0; 40000])
            .with_tlv(0xE1, vec![0; 40000]);
        assert_eq!(
            header.try_to_bytes().unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
