//! What a PROXY protocol header said about a connection: addresses and TLVs.
//!
//! A [`ProxyInfo`] is built by the listener from a validated header; every TLV has been
//! walked (and a CRC32C checked) before the connection is handed to the application.
//!
//! # Example
//!
//! ```
//! use realip_listener::{Command, ProxyHeader, ProxyVersion, Transport, parse_header};
//!
//! let bytes = ProxyHeader::v2("192.0.2.7:51000".parse().unwrap(), "10.0.0.1:443".parse().unwrap())
//!     .with_authority("example.com")
//!     .with_unique_id(b"req-1".to_vec())
//!     .to_bytes();
//! let (info, len) = parse_header(&bytes, 4096).unwrap().unwrap();
//! assert_eq!(len, bytes.len());
//! assert_eq!(info.version(), ProxyVersion::V2);
//! assert_eq!(info.command(), Command::Proxy);
//! assert_eq!(info.transport(), Transport::Stream);
//! assert_eq!(info.source_inet(), Some("192.0.2.7:51000".parse().unwrap()));
//! assert_eq!(info.tlvs().authority(), Some("example.com"));
//! assert_eq!(info.tlvs().unique_id(), Some(&b"req-1"[..]));
//! ```

use std::fmt;
use std::net::SocketAddr;

/// PROXY protocol TLV type numbers (the `PP2_TYPE_*` constants of the specification).
pub mod tlv_type {
    /// Application-Layer Protocol Negotiation (`PP2_TYPE_ALPN`).
    pub const ALPN: u8 = 0x01;
    /// Host name sent by the client (SNI) (`PP2_TYPE_AUTHORITY`).
    pub const AUTHORITY: u8 = 0x02;
    /// CRC32C of the whole header (`PP2_TYPE_CRC32C`).
    pub const CRC32C: u8 = 0x03;
    /// Padding (`PP2_TYPE_NOOP`).
    pub const NOOP: u8 = 0x04;
    /// An opaque connection identifier, at most 128 bytes (`PP2_TYPE_UNIQUE_ID`).
    pub const UNIQUE_ID: u8 = 0x05;
    /// TLS information (`PP2_TYPE_SSL`), with sub-TLVs.
    pub const SSL: u8 = 0x20;
    /// TLS version sub-TLV (`PP2_SUBTYPE_SSL_VERSION`).
    pub const SSL_VERSION: u8 = 0x21;
    /// Client certificate common name sub-TLV (`PP2_SUBTYPE_SSL_CN`).
    pub const SSL_CN: u8 = 0x22;
    /// Cipher sub-TLV (`PP2_SUBTYPE_SSL_CIPHER`).
    pub const SSL_CIPHER: u8 = 0x23;
    /// Certificate signature algorithm sub-TLV (`PP2_SUBTYPE_SSL_SIG_ALG`).
    pub const SSL_SIG_ALG: u8 = 0x24;
    /// Certificate key algorithm sub-TLV (`PP2_SUBTYPE_SSL_KEY_ALG`).
    pub const SSL_KEY_ALG: u8 = 0x25;
    /// Network namespace name (`PP2_TYPE_NETNS`).
    pub const NETNS: u8 = 0x30;
    /// Google Cloud Private Service Connect: 8-byte connection id.
    pub const GCP: u8 = 0xE0;
    /// AWS: first byte is a sub-type, `0x01` = VPC endpoint id.
    pub const AWS: u8 = 0xEA;
    /// Azure: first byte is a sub-type, `0x01` = private endpoint link id (u32, little endian).
    pub const AZURE: u8 = 0xEE;
}

/// PROXY protocol version of a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyVersion {
    /// The text format (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary format.
    V2,
    /// Not a PROXY protocol version: Cloudflare's Simple Proxy Protocol, a fixed 38-byte
    /// header on every UDP datagram (see `udp::SppHeader`, feature `udp`).
    Spp,
}

impl ProxyVersion {
    /// `"v1"`, `"v2"` or `"spp"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "v2",
            Self::Spp => "spp",
        }
    }
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The command of a header: PROXY (relayed connection) or LOCAL (the proxy's own, such as a
/// health check). A v1 header is always `Proxy` (v1 `UNKNOWN` has no addresses).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Command {
    /// The connection was relayed on behalf of another node.
    Proxy,
    /// The proxy's own connection; the socket endpoints are the real ones.
    Local,
}

impl Command {
    /// `"proxy"` or `"local"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Proxy => "proxy",
            Self::Local => "local",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The address family announced by a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Family {
    /// `AF_UNSPEC` (v2) or `UNKNOWN` (v1): no addresses.
    Unspec,
    /// IPv4 (`TCP4` in v1).
    Inet,
    /// IPv6 (`TCP6` in v1).
    Inet6,
    /// Unix socket paths (v2 only).
    Unix,
}

/// The transport protocol announced by a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// Unspecified.
    Unspec,
    /// `SOCK_STREAM` (TCP; every v1 header with addresses).
    Stream,
    /// `SOCK_DGRAM` (UDP).
    Datagram,
}

/// One end of a proxied connection as the header describes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyAddr {
    /// An IPv4 or IPv6 address and port.
    Inet(SocketAddr),
    /// A Unix socket path (the raw bytes up to the first NUL).
    Unix(Vec<u8>),
}

impl ProxyAddr {
    /// The socket address of an internet endpoint.
    pub const fn inet(&self) -> Option<SocketAddr> {
        match self {
            Self::Inet(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }

    /// The path of a Unix socket endpoint.
    #[cfg(unix)]
    pub fn unix_path(&self) -> Option<&std::path::Path> {
        use std::os::unix::ffi::OsStrExt;
        match self {
            Self::Unix(raw) => Some(std::path::Path::new(std::ffi::OsStr::from_bytes(raw))),
            Self::Inet(_) => None,
        }
    }
}

impl fmt::Display for ProxyAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(addr) => addr.fmt(f),
            Self::Unix(path) => write!(f, "unix:{}", String::from_utf8_lossy(path)),
        }
    }
}

/// One raw type-length-value entry of a v2 header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlv {
    kind: u8,
    value: Box<[u8]>,
}

impl Tlv {
    /// Creates a TLV.
    pub fn new(kind: u8, value: impl Into<Box<[u8]>>) -> Self {
        Self {
            kind,
            value: value.into(),
        }
    }

    /// The type byte (see [`tlv_type`]).
    pub const fn kind(&self) -> u8 {
        self.kind
    }

    /// The value bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

/// The `PP2_TYPE_SSL` TLV: how the client connected to the proxy over TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SslInfo {
    pub(crate) client: u8,
    pub(crate) verify: u32,
    pub(crate) sub_tlvs: Vec<Tlv>,
}

impl SslInfo {
    /// `PP2_CLIENT_SSL` flag: the client connected over TLS.
    pub const CLIENT_SSL: u8 = 0x01;
    /// `PP2_CLIENT_CERT_CONN` flag: the client presented a certificate on this connection.
    pub const CLIENT_CERT_CONN: u8 = 0x02;
    /// `PP2_CLIENT_CERT_SESS` flag: the client presented a certificate in this TLS session.
    pub const CLIENT_CERT_SESS: u8 = 0x04;

    /// The raw client flags byte.
    pub const fn client_flags(&self) -> u8 {
        self.client
    }

    /// Whether the client connected over TLS (`PP2_CLIENT_SSL`).
    pub const fn is_ssl(&self) -> bool {
        self.client & Self::CLIENT_SSL != 0
    }

    /// Whether the client presented a certificate (on this connection or session).
    pub const fn has_client_cert(&self) -> bool {
        self.client & (Self::CLIENT_CERT_CONN | Self::CLIENT_CERT_SESS) != 0
    }

    /// The verify result: `0` when the client certificate was verified.
    pub const fn verify(&self) -> u32 {
        self.verify
    }

    /// Whether the client certificate was verified successfully (`verify == 0`).
    pub const fn verified(&self) -> bool {
        self.verify == 0
    }

    fn sub_str(&self, kind: u8) -> Option<&str> {
        self.sub_tlvs
            .iter()
            .find(|t| t.kind == kind)
            .and_then(|t| std::str::from_utf8(&t.value).ok())
    }

    /// The TLS version, such as `TLSv1.3`.
    pub fn version(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_VERSION)
    }

    /// The client certificate's common name.
    pub fn client_cn(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_CN)
    }

    /// The cipher suite, such as `ECDHE-RSA-AES128-GCM-SHA256`.
    pub fn cipher(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_CIPHER)
    }

    /// The certificate's signature algorithm, such as `SHA256`.
    pub fn sig_alg(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_SIG_ALG)
    }

    /// The certificate's key algorithm, such as `RSA2048`.
    pub fn key_alg(&self) -> Option<&str> {
        self.sub_str(tlv_type::SSL_KEY_ALG)
    }

    /// Every sub-TLV, in header order.
    pub fn sub_tlvs(&self) -> &[Tlv] {
        &self.sub_tlvs
    }
}

/// The TLVs of a v2 header, validated at parse time, with typed accessors.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tlvs {
    pub(crate) raw: Vec<Tlv>,
    pub(crate) ssl: Option<SslInfo>,
}

impl Tlvs {
    /// Every TLV in header order (including CRC32C and NOOP entries).
    pub fn raw(&self) -> &[Tlv] {
        &self.raw
    }

    /// Whether the header carried no TLV.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The value of the first TLV of type `kind`.
    pub fn get(&self, kind: u8) -> Option<&[u8]> {
        self.raw.iter().find(|t| t.kind == kind).map(Tlv::value)
    }

    fn get_str(&self, kind: u8) -> Option<&str> {
        self.get(kind).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The negotiated ALPN protocol (`PP2_TYPE_ALPN`), such as `h2`.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.get(tlv_type::ALPN)
    }

    /// The host name the client asked for (`PP2_TYPE_AUTHORITY`), when valid UTF-8.
    pub fn authority(&self) -> Option<&str> {
        self.get_str(tlv_type::AUTHORITY)
    }

    /// The connection's unique id (`PP2_TYPE_UNIQUE_ID`).
    pub fn unique_id(&self) -> Option<&[u8]> {
        self.get(tlv_type::UNIQUE_ID)
    }

    /// The CRC32C the header carried (already verified when present).
    pub fn crc32c(&self) -> Option<u32> {
        let v = self.get(tlv_type::CRC32C)?;
        Some(u32::from_be_bytes(v.try_into().ok()?))
    }

    /// TLS information (`PP2_TYPE_SSL`).
    pub fn ssl(&self) -> Option<&SslInfo> {
        self.ssl.as_ref()
    }

    /// The network namespace name (`PP2_TYPE_NETNS`).
    pub fn netns(&self) -> Option<&str> {
        self.get_str(tlv_type::NETNS)
    }

    /// The AWS VPC endpoint id (TLV `0xEA`, sub-type `0x01`), such as `vpce-08d2bf15fac5001c9`.
    pub fn aws_vpce_id(&self) -> Option<&str> {
        self.raw
            .iter()
            .filter(|t| t.kind == tlv_type::AWS)
            .find_map(|t| match t.value.split_first() {
                Some((0x01, rest)) => std::str::from_utf8(rest).ok(),
                _ => None,
            })
    }

    /// The Azure private endpoint link id (TLV `0xEE`, sub-type `0x01`, u32 little endian).
    pub fn azure_private_endpoint_link_id(&self) -> Option<u32> {
        self.raw
            .iter()
            .filter(|t| t.kind == tlv_type::AZURE)
            .find_map(|t| match t.value.split_first() {
                Some((0x01, rest)) => rest.try_into().ok().map(u32::from_le_bytes),
                _ => None,
            })
    }

    /// The Google Cloud Private Service Connect connection id (TLV `0xE0`, u64 big endian).
    pub fn gcp_psc_connection_id(&self) -> Option<u64> {
        let v = self.get(tlv_type::GCP)?;
        Some(u64::from_be_bytes(v.try_into().ok()?))
    }
}

/// What the PROXY protocol header of one connection carried.
///
/// Obtained from [`ProxiedAddr::proxy_info`](crate::ProxiedAddr::proxy_info) or
/// [`parse_header`](crate::parse_header).
///
/// ```
/// use realip_listener::{Command, Family, ProxyHeader, ProxyVersion, parse_header};
///
/// let (info, _) = parse_header(&ProxyHeader::v2_local().to_bytes(), 4096).unwrap().unwrap();
/// assert_eq!((info.version(), info.command()), (ProxyVersion::V2, Command::Local));
/// assert_eq!(info.family(), Family::Unspec);
/// assert!(info.source().is_none() && info.tlvs().is_empty());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyInfo {
    pub(crate) version: ProxyVersion,
    pub(crate) command: Command,
    pub(crate) family: Family,
    pub(crate) transport: Transport,
    pub(crate) source: Option<ProxyAddr>,
    pub(crate) destination: Option<ProxyAddr>,
    /// Boxed, and absent when there are none, to keep the per-connection size small.
    pub(crate) tlvs: Option<Box<Tlvs>>,
}

static NO_TLVS: Tlvs = Tlvs {
    raw: Vec::new(),
    ssl: None,
};

impl ProxyInfo {
    /// The header's version.
    pub const fn version(&self) -> ProxyVersion {
        self.version
    }

    /// PROXY or LOCAL.
    pub const fn command(&self) -> Command {
        self.command
    }

    /// The announced address family (`Unspec` for v1 `UNKNOWN`, and for LOCAL headers,
    /// whose address block is skipped).
    pub const fn family(&self) -> Family {
        self.family
    }

    /// The announced transport protocol.
    pub const fn transport(&self) -> Transport {
        self.transport
    }

    /// The source (the client), when the header carried addresses.
    pub const fn source(&self) -> Option<&ProxyAddr> {
        self.source.as_ref()
    }

    /// The destination (the address the client connected to on the proxy).
    pub const fn destination(&self) -> Option<&ProxyAddr> {
        self.destination.as_ref()
    }

    /// The source as a socket address, for IPv4/IPv6 headers.
    pub fn source_inet(&self) -> Option<SocketAddr> {
        self.source.as_ref().and_then(ProxyAddr::inet)
    }

    /// The destination as a socket address, for IPv4/IPv6 headers.
    pub fn destination_inet(&self) -> Option<SocketAddr> {
        self.destination.as_ref().and_then(ProxyAddr::inet)
    }

    /// The TLVs (always empty for v1; for LOCAL, those behind the family's address block
    /// when they form a valid TLV list, else none: the block is discarded).
    pub fn tlvs(&self) -> &Tlvs {
        match &self.tlvs {
            Some(tlvs) => tlvs,
            None => &NO_TLVS,
        }
    }
}
