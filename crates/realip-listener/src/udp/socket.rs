//! [`ProxyUdpSocket`]: a `tokio` UDP socket that strips proxy headers and reports the real
//! client of every datagram, and its settings, [`UdpBuilder`].
//!
//! # Example
//!
//! ```
//! use realip_core::TrustedProxies;
//! use realip_listener::udp::{ProxyUdpSocket, SppHeader, UdpPolicy};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! let socket = ProxyUdpSocket::builder()
//!     .trusted(TrustedProxies::loopback())
//!     .policy(UdpPolicy::Spp)
//!     .bind("127.0.0.1:0")
//!     .await?;
//! let server = socket.local_addr()?;
//!
//! // The proxy: an SPP header on the datagram, and on the reply.
//! let proxy = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
//! let header = SppHeader::new("203.0.113.7:6000".parse().unwrap(), "198.51.100.1:53".parse().unwrap());
//! proxy.send_to(&[&header.to_bytes()[..], b"ping"].concat(), server).await?;
//!
//! let mut buf = [0; 1500];
//! let (len, from) = socket.recv_from(&mut buf).await?;
//! assert_eq!(&buf[..len], b"ping");
//! assert_eq!(from.client().unwrap().to_string(), "203.0.113.7:6000");
//! socket.send_to(b"pong", &from).await?;
//!
//! let (len, _) = proxy.recv_from(&mut buf).await?;
//! assert_eq!(SppHeader::parse(&buf[..len]).unwrap(), (header, &b"pong"[..]));
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use realip_core::{LogThrottle, TrustedProxies};
use tokio::net::{ToSocketAddrs, UdpSocket};

use super::decoder::{UdpDecoder, UdpStats};
use super::error::DatagramError;
use super::flow::{DEFAULT_FLOW_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS, FlowTable};
use super::policy::{UdpPolicy, UdpPolicySource};
use super::spp::SPP_HEADER_LEN;
use crate::ProxiedAddr;
use crate::listener::DEFAULT_MAX_HEADER_LEN;

/// Default minimum time between two `warn` lines about dropped datagrams; the drops in
/// between are logged at `debug` and counted in the next `warn` line (`suppressed`).
///
/// A source that sends a flood of forged or malformed datagrams then costs one `warn` line
/// per interval, while an operator still sees that it happens, from whom, and how often.
pub const DEFAULT_DROP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Settings of a [`ProxyUdpSocket`] or a [`UdpDecoder`]; start from
/// [`ProxyUdpSocket::builder`].
#[derive(Clone, Debug)]
pub struct UdpBuilder {
    policy: UdpPolicy,
    trusted: Option<TrustedProxies>,
    source: Option<UdpPolicySource>,
    max_flows: usize,
    flow_idle_timeout: Duration,
    max_header_len: usize,
    drop_log_interval: Duration,
}

impl Default for UdpBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl UdpBuilder {
    /// Default settings: [`UdpPolicy::V2PerFlow`] for every source, [`DEFAULT_MAX_FLOWS`],
    /// [`DEFAULT_FLOW_IDLE_TIMEOUT`], [`DEFAULT_MAX_HEADER_LEN`],
    /// [`DEFAULT_DROP_LOG_INTERVAL`].
    pub const fn new() -> Self {
        Self {
            policy: UdpPolicy::V2PerFlow,
            trusted: None,
            source: None,
            max_flows: DEFAULT_MAX_FLOWS,
            flow_idle_timeout: DEFAULT_FLOW_IDLE_TIMEOUT,
            max_header_len: DEFAULT_MAX_HEADER_LEN,
            drop_log_interval: DEFAULT_DROP_LOG_INTERVAL,
        }
    }

    /// The policy for every source (or, with [`trusted`](Self::trusted), for trusted
    /// sources).
    #[must_use]
    pub const fn policy(mut self, policy: UdpPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Only sources in `trusted` get the [`policy`](Self::policy); everyone else gets
    /// [`UdpPolicy::Reject`]. See [`UdpPolicySource::trusted`].
    #[must_use]
    pub fn trusted(mut self, trusted: TrustedProxies) -> Self {
        self.trusted = Some(trusted);
        self
    }

    /// Chooses the policy of each datagram with `source`, overriding
    /// [`policy`](Self::policy) and [`trusted`](Self::trusted).
    #[must_use]
    pub fn policy_source(mut self, source: UdpPolicySource) -> Self {
        self.source = Some(source);
        self
    }

    /// The most v2 flows remembered at once (at least 1); at the cap the flow idle the
    /// longest is evicted. See [`DEFAULT_MAX_FLOWS`] and
    /// [the flow table trade-off](super#the-flow-table-trade-off).
    #[must_use]
    pub const fn max_flows(mut self, max: usize) -> Self {
        self.max_flows = max;
        self
    }

    /// How long a v2 flow lives without a datagram. See [`DEFAULT_FLOW_IDLE_TIMEOUT`].
    #[must_use]
    pub const fn flow_idle_timeout(mut self, timeout: Duration) -> Self {
        self.flow_idle_timeout = timeout;
        self
    }

    /// The maximum length of a v2 header, its 16-byte fixed part included.
    #[must_use]
    pub const fn max_header_len(mut self, max: usize) -> Self {
        self.max_header_len = max;
        self
    }

    /// The minimum time between two `warn` lines about dropped datagrams. See
    /// [`DEFAULT_DROP_LOG_INTERVAL`].
    #[must_use]
    pub const fn drop_log_interval(mut self, interval: Duration) -> Self {
        self.drop_log_interval = interval;
        self
    }

    /// A decoder with these settings, for datagrams received on `local`.
    pub fn decoder(&self, local: Option<SocketAddr>) -> UdpDecoder {
        let source = match (&self.source, &self.trusted) {
            (Some(source), _) => source.clone(),
            (None, Some(trusted)) => UdpPolicySource::trusted(trusted.clone(), self.policy),
            (None, None) => UdpPolicySource::fixed(self.policy),
        };
        UdpDecoder::new(
            source,
            local,
            self.max_header_len,
            FlowTable::new(self.max_flows, self.flow_idle_timeout),
        )
    }

    /// Wraps a bound socket.
    pub fn build(&self, socket: UdpSocket) -> ProxyUdpSocket {
        let local = socket.local_addr().ok();
        ProxyUdpSocket {
            socket,
            decoder: self.decoder(local),
            log: DropLog::new(self.drop_log_interval),
        }
    }

    /// Binds a UDP socket to `addr` and wraps it.
    ///
    /// # Errors
    ///
    /// As `tokio::net::UdpSocket::bind`.
    pub async fn bind(&self, addr: impl ToSocketAddrs) -> io::Result<ProxyUdpSocket> {
        Ok(self.build(UdpSocket::bind(addr).await?))
    }
}

/// A UDP socket whose datagrams come from proxies: each received datagram comes without its
/// header, with the real client as a [`ProxiedAddr`], and replies go back through the proxy
/// with the header the format requires.
///
/// `recv_from` and `send_to` take `&self`, so the socket can be shared (`Arc`) between a
/// receiving task and replying ones, as a `tokio::net::UdpSocket` can.
///
/// The buffer given to `recv_from` must hold the header and the payload: a datagram longer
/// than the buffer is cut by the kernel, and a cut header is dropped as malformed.
#[derive(Debug)]
pub struct ProxyUdpSocket {
    socket: UdpSocket,
    decoder: UdpDecoder,
    log: DropLog,
}

impl ProxyUdpSocket {
    /// The settings, to finish with [`UdpBuilder::bind`] or [`UdpBuilder::build`].
    pub const fn builder() -> UdpBuilder {
        UdpBuilder::new()
    }

    /// Binds with the default settings ([`UdpPolicy::V2PerFlow`] for every source).
    ///
    /// # Errors
    ///
    /// As `tokio::net::UdpSocket::bind`.
    pub async fn bind(addr: impl ToSocketAddrs) -> io::Result<Self> {
        UdpBuilder::new().bind(addr).await
    }

    /// Receives the next datagram that is delivered: its payload is copied to the start
    /// of `buf` (`buf[..len]` is exactly what the client sent) and its addresses are
    /// returned.
    ///
    /// Dropped datagrams are counted (see [`stats`](Self::stats)) and logged (`warn`, at
    /// most once per [drop log interval](DEFAULT_DROP_LOG_INTERVAL), else `debug`), and
    /// receiving goes on. Cancel-safe: a datagram is either returned or not taken from the
    /// socket.
    ///
    /// # Errors
    ///
    /// Only the socket's receive errors.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, ProxiedAddr)> {
        loop {
            match self.try_recv_from(buf).await {
                Ok(received) => return Ok(received),
                Err(DatagramError::Io(err)) => return Err(err),
                Err(err) => self.log.dropped(&err),
            }
        }
    }

    /// Receives the next datagram, delivered or dropped: like [`recv_from`](Self::recv_from)
    /// but a dropped datagram is returned as its error (counted, not logged).
    ///
    /// # Errors
    ///
    /// [`DatagramError`]: why this datagram was dropped, or a receive error.
    pub async fn try_recv_from(
        &self,
        buf: &mut [u8],
    ) -> Result<(usize, ProxiedAddr), DatagramError> {
        let (len, peer) = self
            .socket
            .recv_from(buf)
            .await
            .map_err(DatagramError::Io)?;
        let (header_len, addr) = self.decoder.decode(peer, &buf[..len])?;
        buf.copy_within(header_len..len, 0);
        Ok((len - header_len, addr))
    }

    /// Sends `payload` to the client of `to` through the proxy it came from (its socket
    /// peer), with the SPP header first when `to` came with one; returns the number of
    /// payload bytes sent.
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `to` has no internet socket peer, else the socket's send errors.
    pub async fn send_to(&self, payload: &[u8], to: &ProxiedAddr) -> io::Result<usize> {
        let Some(target) = to.socket_peer().inet() else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the reply's address has no internet socket peer",
            ));
        };
        match UdpDecoder::reply_header(to) {
            None => self.socket.send_to(payload, target).await,
            Some(header) => {
                let mut datagram = Vec::with_capacity(SPP_HEADER_LEN + payload.len());
                datagram.extend_from_slice(&header.to_bytes());
                datagram.extend_from_slice(payload);
                let sent = self.socket.send_to(&datagram, target).await?;
                Ok(sent.saturating_sub(SPP_HEADER_LEN))
            }
        }
    }

    /// The socket's local address.
    ///
    /// # Errors
    ///
    /// As `tokio::net::UdpSocket::local_addr`.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Counters of received, delivered and dropped datagrams and of flows.
    pub fn stats(&self) -> UdpStats {
        self.decoder.stats()
    }

    /// The decoder (its flow table and counters).
    pub const fn decoder(&self) -> &UdpDecoder {
        &self.decoder
    }

    /// The wrapped socket.
    pub const fn get_ref(&self) -> &UdpSocket {
        &self.socket
    }

    /// The wrapped socket, without the decoder.
    pub fn into_inner(self) -> UdpSocket {
        self.socket
    }
}

impl From<UdpSocket> for ProxyUdpSocket {
    /// Wraps a bound socket with the default settings.
    fn from(socket: UdpSocket) -> Self {
        UdpBuilder::new().build(socket)
    }
}

/// Rate-limited `warn` lines for dropped datagrams.
#[derive(Debug)]
struct DropLog(LogThrottle);

impl DropLog {
    fn new(interval: Duration) -> Self {
        Self(LogThrottle::new(interval, 1))
    }

    fn dropped(&self, err: &DatagramError) {
        let peer = err.peer().map(ToString::to_string);
        let peer = peer.as_deref().unwrap_or("-");
        match self.0.admit(std::time::Instant::now()) {
            Some(suppressed) => tracing::warn!(
                peer,
                reason = err.reason(),
                error = %err,
                suppressed,
                "datagram dropped"
            ),
            None => tracing::debug!(peer, reason = err.reason(), error = %err, "datagram dropped"),
        }
    }
}
