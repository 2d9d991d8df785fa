//! The datagram decoder without I/O: which client a datagram speaks for, and where its
//! payload starts.
//!
//! [`ProxyUdpSocket`](super::ProxyUdpSocket) is a `tokio` socket around a [`UdpDecoder`];
//! use the decoder directly with other UDP I/O (a QUIC library's socket abstraction,
//! batched receives, ...).
//!
//! # Example
//!
//! ```
//! use realip_listener::ProxyHeader;
//! use realip_listener::udp::{UdpDecoder, UdpPolicy};
//!
//! let decoder = UdpDecoder::builder().policy(UdpPolicy::V2PerFlow).decoder(None);
//! let proxy = "10.0.0.2:40000".parse().unwrap();
//! let mut first = ProxyHeader::v2_datagram("203.0.113.5:5000".parse().unwrap(), "10.0.0.1:53".parse().unwrap()).to_bytes();
//! first.extend_from_slice(b"hello");
//!
//! let (header_len, addr) = decoder.decode(proxy, &first).unwrap();
//! assert_eq!(&first[header_len..], b"hello");
//! assert_eq!(addr.client().unwrap().to_string(), "203.0.113.5:5000");
//!
//! // The rest of the flow has no header and the same client.
//! let (header_len, addr) = decoder.decode(proxy, b"again").unwrap();
//! assert_eq!(header_len, 0);
//! assert_eq!(addr.client().unwrap().to_string(), "203.0.113.5:5000");
//! assert_eq!(decoder.stats().flows, 1);
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use realip_core::PeerAddr;
use tokio::time::Instant;

use super::error::DatagramError;
use super::flow::FlowTable;
use super::policy::{UdpPolicy, UdpPolicySource};
use super::socket::UdpBuilder;
use super::spp::{SPP_HEADER_LEN, SppHeader};
use crate::ProxiedAddr;
use crate::header::info::{Command, Family, ProxyAddr, ProxyInfo, ProxyVersion, Transport};
use crate::header::parse::{V2_SIGNATURE, parse_header};

/// Counters of a [`UdpDecoder`] (and so of a [`ProxyUdpSocket`](super::ProxyUdpSocket)),
/// since it was created.
///
/// Every datagram is counted once in `datagrams`, then once in `delivered` or in one of
/// the `dropped_*` counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpStats {
    /// Datagrams decoded.
    pub datagrams: u64,
    /// Datagrams delivered with a client.
    pub delivered: u64,
    /// Dropped: a malformed v2 or SPP header, or a datagram that ends inside its header.
    pub dropped_malformed: u64,
    /// Dropped: a header from a source whose policy is [`UdpPolicy::Reject`].
    pub dropped_forbidden: u64,
    /// Dropped: no header from a source whose policy requires one on every datagram.
    pub dropped_missing: u64,
    /// Dropped: no header and no live flow (policy [`UdpPolicy::V2PerFlow`]).
    pub dropped_no_flow: u64,
    /// Flows in the table now (expired ones not removed yet included).
    pub flows: usize,
    /// Flows started or restarted by a header.
    pub flows_started: u64,
    /// Live flows evicted at the flow cap.
    pub flows_evicted: u64,
    /// Flows removed after their idle timeout.
    pub flows_expired: u64,
}

#[derive(Debug, Default)]
struct Counters {
    datagrams: AtomicU64,
    delivered: AtomicU64,
    malformed: AtomicU64,
    forbidden: AtomicU64,
    missing: AtomicU64,
    no_flow: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Decodes datagrams from proxies: the client each one speaks for and where its payload
/// starts. Shared by reference (`&self`); the flow table is behind a mutex held for one
/// lookup.
pub struct UdpDecoder {
    source: UdpPolicySource,
    local: Option<SocketAddr>,
    max_header_len: usize,
    flows: Mutex<FlowTable>,
    counters: Counters,
}

impl std::fmt::Debug for UdpDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpDecoder")
            .field("source", &self.source)
            .field("local", &self.local)
            .field("max_header_len", &self.max_header_len)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl UdpDecoder {
    /// The settings shared with [`ProxyUdpSocket`](super::ProxyUdpSocket); finish with
    /// [`UdpBuilder::decoder`].
    pub const fn builder() -> UdpBuilder {
        UdpBuilder::new()
    }

    pub(crate) fn new(
        source: UdpPolicySource,
        local: Option<SocketAddr>,
        max_header_len: usize,
        flows: FlowTable,
    ) -> Self {
        Self {
            source,
            local,
            max_header_len,
            flows: Mutex::new(flows),
            counters: Counters::default(),
        }
    }

    /// Decodes one datagram received from `peer`: returns the length of the header it
    /// starts with (`0` when it has none; the payload is `datagram[len..]`) and the
    /// addresses to use for it.
    ///
    /// # Errors
    ///
    /// The datagram must be dropped: see [`DatagramError`]. Never
    /// [`DatagramError::Io`].
    pub fn decode(
        &self,
        peer: SocketAddr,
        datagram: &[u8],
    ) -> Result<(usize, ProxiedAddr), DatagramError> {
        let peer_addr = PeerAddr::from(peer);
        let policy = self.source.policy_for(&peer_addr);
        let has_v2 = datagram.starts_with(&V2_SIGNATURE);
        let result = match policy {
            UdpPolicy::V2PerFlow => self.decode_flow(peer, peer_addr, datagram, has_v2),
            UdpPolicy::V2PerDatagram if has_v2 => self.decode_v2(peer_addr, datagram),
            UdpPolicy::V2PerDatagram => Err(DatagramError::Missing {
                peer: peer_addr,
                policy,
            }),
            UdpPolicy::Spp => match SppHeader::parse(datagram) {
                Ok((header, _)) => Ok((SPP_HEADER_LEN, self.spp_addr(peer_addr, header))),
                Err(source) => Err(DatagramError::Spp {
                    peer: peer_addr,
                    source,
                }),
            },
            UdpPolicy::Reject if has_v2 => Err(DatagramError::Forbidden {
                peer: peer_addr,
                policy,
            }),
            UdpPolicy::Reject => Ok((0, ProxiedAddr::from_connection(peer_addr, self.local, None))),
        };
        let c = &self.counters;
        bump(&c.datagrams);
        bump(match &result {
            Ok(_) => &c.delivered,
            Err(DatagramError::Forbidden { .. }) => &c.forbidden,
            Err(DatagramError::Missing { .. }) => &c.missing,
            Err(DatagramError::NoFlow { .. }) => &c.no_flow,
            Err(_) => &c.malformed,
        });
        result
    }

    fn decode_v2(
        &self,
        peer: PeerAddr,
        datagram: &[u8],
    ) -> Result<(usize, ProxiedAddr), DatagramError> {
        match parse_header(datagram, self.max_header_len) {
            Ok(Some((info, len))) => Ok((
                len,
                ProxiedAddr::from_connection(peer, self.local, Some(info)),
            )),
            Ok(None) => Err(DatagramError::Truncated {
                peer,
                len: datagram.len(),
            }),
            Err(source) => Err(DatagramError::Header { peer, source }),
        }
    }

    fn decode_flow(
        &self,
        key: SocketAddr,
        peer: PeerAddr,
        datagram: &[u8],
        has_v2: bool,
    ) -> Result<(usize, ProxiedAddr), DatagramError> {
        let now = Instant::now();
        if !has_v2 {
            return match self.lock_flows().touch(&key, now) {
                Some(addr) => Ok((0, addr)),
                None => Err(DatagramError::NoFlow { peer }),
            };
        }
        match self.decode_v2(peer, datagram) {
            Ok((len, addr)) => {
                self.lock_flows().start(key, addr.clone(), now);
                Ok((len, addr))
            }
            Err(err) => {
                // The proxy meant to start a new flow here: the old client must not keep it.
                self.lock_flows().remove(&key);
                Err(err)
            }
        }
    }

    fn spp_addr(&self, peer: PeerAddr, header: SppHeader) -> ProxiedAddr {
        let info = ProxyInfo {
            version: ProxyVersion::Spp,
            command: Command::Proxy,
            family: if header.client().is_ipv4() {
                Family::Inet
            } else {
                Family::Inet6
            },
            transport: Transport::Datagram,
            source: Some(ProxyAddr::Inet(header.client())),
            destination: Some(ProxyAddr::Inet(header.proxy())),
            tlvs: None,
        };
        ProxiedAddr::from_connection(peer, self.local, Some(info))
    }

    fn lock_flows(&self) -> std::sync::MutexGuard<'_, FlowTable> {
        self.flows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the flows idle for longer than the flow timeout now, rather than when the
    /// table needs room; returns how many.
    pub fn expire_flows(&self) -> usize {
        self.lock_flows().expire(Instant::now())
    }

    /// The counters since the decoder was created.
    pub fn stats(&self) -> UdpStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (flows, totals) = {
            let table = self.lock_flows();
            (table.len(), table.totals())
        };
        UdpStats {
            datagrams: get(&c.datagrams),
            delivered: get(&c.delivered),
            dropped_malformed: get(&c.malformed),
            dropped_forbidden: get(&c.forbidden),
            dropped_missing: get(&c.missing),
            dropped_no_flow: get(&c.no_flow),
            flows,
            flows_started: totals.started,
            flows_evicted: totals.evicted,
            flows_expired: totals.expired,
        }
    }

    /// The header a reply to `to` must start with: the SPP header of the datagram `to`
    /// came from, when it came with one (Cloudflare's SPP carries the header back on
    /// replies); `None` for every other format, whose replies are the bare payload.
    pub fn reply_header(to: &ProxiedAddr) -> Option<SppHeader> {
        let info = to.proxy_info()?;
        if info.version() != ProxyVersion::Spp {
            return None;
        }
        Some(SppHeader::new(
            info.source_inet()?,
            info.destination_inet()?,
        ))
    }
}
