//! The resolved client address and where it came from.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Returns `ip` with IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) turned into IPv4.
///
/// Dual-stack sockets report IPv4 peers in this form; every comparison in `realip` goes
/// through this function so that `::ffff:10.0.0.1` and `10.0.0.1` are the same host.
///
/// ```
/// use realip_core::canonical_ip;
/// assert_eq!(canonical_ip("::ffff:10.0.0.1".parse().unwrap()), "10.0.0.1".parse::<std::net::IpAddr>().unwrap());
/// assert_eq!(canonical_ip("2001:db8::1".parse().unwrap()), "2001:db8::1".parse::<std::net::IpAddr>().unwrap());
/// ```
#[inline]
pub const fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Where a [`ClientAddr`] was learned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AddrSource {
    /// The transport socket's peer address: no proxy information applied.
    Socket,
    /// The source address of a PROXY protocol header (v1 or v2), or of the Simple Proxy
    /// Protocol header of a UDP datagram.
    ProxyProtocol,
    /// A forwarded-request header, by its name in lowercase (for example `x-forwarded-for`,
    /// `x-real-ip`, `forwarded`).
    Header(HeaderSource),
}

impl AddrSource {
    /// Creates [`AddrSource::Header`] from a header name (stored in lowercase).
    pub fn header(name: &str) -> Self {
        Self::Header(HeaderSource::new(name))
    }

    /// A short label for logs and JSON: `socket`, `proxy-protocol`, or the header name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Socket => "socket",
            Self::ProxyProtocol => "proxy-protocol",
            Self::Header(name) => name.as_str(),
        }
    }
}

impl fmt::Display for AddrSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The header a [`ClientAddr`] was read from ([`AddrSource::Header`]): its name in
/// lowercase. It dereferences to `str` and compares with strings.
///
/// The names of the headers `realip` reads out of the box (`x-forwarded-for`, `forwarded`,
/// `x-real-ip`, `cf-connecting-ip`, `true-client-ip`, `fly-client-ip`) are kept as static
/// strings, so that the address resolved for every request is cloned and dropped without
/// allocating or counting references; other names are allocated once, when the
/// configuration is built, and shared (`Arc<str>`).
///
/// ```
/// use realip_core::{AddrSource, HeaderSource};
///
/// let name = HeaderSource::new("X-Forwarded-For");
/// assert_eq!(name, "x-forwarded-for");
/// assert_eq!(HeaderSource::new("X-Client-IP").as_str(), "x-client-ip");
/// assert_eq!(AddrSource::header("X-Real-IP"), AddrSource::Header(HeaderSource::new("x-real-ip")));
/// assert!(name.starts_with("x-")); // any `str` method
/// ```
#[derive(Clone)]
pub struct HeaderSource(Name);

#[derive(Clone)]
enum Name {
    Static(&'static str),
    Shared(Arc<str>),
}

/// Lowercase header names stored without allocation (see [`HeaderSource`]).
const STATIC_NAMES: [&str; 6] = [
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "cf-connecting-ip",
    "true-client-ip",
    "fly-client-ip",
];

impl HeaderSource {
    /// The source named `name`, stored in lowercase.
    pub fn new(name: &str) -> Self {
        match STATIC_NAMES
            .iter()
            .find(|known| known.eq_ignore_ascii_case(name))
        {
            Some(known) => Self(Name::Static(known)),
            None => Self(Name::Shared(Arc::from(name.to_ascii_lowercase()))),
        }
    }

    /// The header's name, in lowercase.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Name::Static(name) => name,
            Name::Shared(name) => name,
        }
    }
}

impl Deref for HeaderSource {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for HeaderSource {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for HeaderSource {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for HeaderSource {}

impl PartialEq<str> for HeaderSource {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for HeaderSource {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for HeaderSource {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for HeaderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The real client's address: an IP, an optional port, and where it came from.
///
/// The IP is always canonical (see [`canonical_ip`]).
///
/// ```
/// use realip_core::{AddrSource, ClientAddr};
///
/// let addr = ClientAddr::new("2001:db8::7".parse().unwrap(), Some(443), AddrSource::header("X-Forwarded-For"));
/// assert_eq!(addr.to_string(), "[2001:db8::7]:443");
/// assert_eq!(addr.source().as_str(), "x-forwarded-for");
/// assert_eq!(addr.socket_addr(), Some("[2001:db8::7]:443".parse().unwrap()));
///
/// let no_port = ClientAddr::new("192.0.2.1".parse().unwrap(), None, AddrSource::Socket);
/// assert_eq!(no_port.to_string(), "192.0.2.1");
/// assert_eq!(no_port.socket_addr(), None);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr {
    ip: IpAddr,
    port: Option<u16>,
    source: AddrSource,
}

impl ClientAddr {
    /// Creates a client address; `ip` is canonicalized.
    #[inline]
    pub const fn new(ip: IpAddr, port: Option<u16>, source: AddrSource) -> Self {
        Self {
            ip: canonical_ip(ip),
            port,
            source,
        }
    }

    /// Creates a client address from a socket address.
    #[inline]
    pub const fn from_socket_addr(addr: SocketAddr, source: AddrSource) -> Self {
        Self::new(addr.ip(), Some(addr.port()), source)
    }

    /// The client's IP address.
    pub const fn ip(&self) -> IpAddr {
        self.ip
    }

    /// The client's port, when known.
    pub const fn port(&self) -> Option<u16> {
        self.port
    }

    /// Where this address was learned.
    pub const fn source(&self) -> &AddrSource {
        &self.source
    }

    /// The address as a `SocketAddr`, when the port is known.
    pub const fn socket_addr(&self) -> Option<SocketAddr> {
        match self.port {
            Some(port) => Some(SocketAddr::new(self.ip, port)),
            None => None,
        }
    }
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, Some(port)) => SocketAddr::new(ip, port).fmt(f),
            (ip, None) => ip.fmt(f),
        }
    }
}

/// A transport-level peer: an internet socket address, or a Unix socket peer.
///
/// ```
/// use realip_core::PeerAddr;
/// let peer = PeerAddr::from("127.0.0.1:4000".parse::<std::net::SocketAddr>().unwrap());
/// assert_eq!(peer.to_string(), "127.0.0.1:4000");
/// assert_eq!(PeerAddr::Unix(None).to_string(), "unix:");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PeerAddr {
    /// An IPv4 or IPv6 socket address.
    Inet(SocketAddr),
    /// A Unix domain socket peer, with its path when the peer is bound to one.
    Unix(Option<PathBuf>),
}

impl PeerAddr {
    /// The socket address, for internet peers.
    #[inline]
    pub const fn inet(&self) -> Option<SocketAddr> {
        match self {
            Self::Inet(addr) => Some(*addr),
            Self::Unix(_) => None,
        }
    }

    /// The IP of an internet peer, canonicalized.
    #[inline]
    pub const fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Inet(addr) => Some(canonical_ip(addr.ip())),
            Self::Unix(_) => None,
        }
    }

    /// Whether this is a Unix domain socket peer.
    pub const fn is_unix(&self) -> bool {
        matches!(self, Self::Unix(_))
    }

    /// The Unix socket path, if any.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Self::Unix(path) => path.as_deref(),
            Self::Inet(_) => None,
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        Self::Inet(addr)
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inet(addr) => addr.fmt(f),
            Self::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Self::Unix(None) => f.write_str("unix:"),
        }
    }
}
