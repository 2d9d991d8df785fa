//! What a PROXY protocol header said about a connection: version, command, family,
//! transport, addresses, and its TLVs.
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

use crate::header::tlv::Tlvs;

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

/// What the PROXY protocol header of one connection carried.
///
/// Obtained from [`ProxiedAddr::proxy_info`](crate::connect_info::ProxiedAddr::proxy_info) or
/// [`parse_header`](crate::header::parse::parse_header).
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

static NO_TLVS: Tlvs = Tlvs::EMPTY;

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
