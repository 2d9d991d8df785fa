//! The bounded table of PROXY v2 flows: which client each proxy address and port speaks for.
//!
//! A flow starts with a datagram that carries a v2 header; later datagrams from the same
//! proxy address and port without a header belong to its client until the flow has been idle
//! for the [idle timeout](DEFAULT_FLOW_IDLE_TIMEOUT). The table holds at most
//! [`DEFAULT_MAX_FLOWS`] flows by default.
//!
//! **At the cap, the flow idle the longest is evicted** to make room for the new one (after
//! the expired ones). The alternative, refusing new flows, would lock every new client out
//! until old flows expire, minutes later; eviction instead costs the evicted flow's later
//! datagrams, which carry no header. Those are dropped (counted as `no-flow`), never
//! attributed to anyone: a datagram is only ever given the client of a live flow of its
//! own proxy address and port. Only sources whose policy is
//! [`V2PerFlow`](super::UdpPolicy::V2PerFlow), the trusted proxies, can start flows.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use realip_listener::udp::{DEFAULT_FLOW_IDLE_TIMEOUT, DEFAULT_MAX_FLOWS};
//!
//! assert_eq!(DEFAULT_MAX_FLOWS, 65_536);
//! assert_eq!(DEFAULT_FLOW_IDLE_TIMEOUT, Duration::from_secs(300));
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use lru::LruCache;
use tokio::time::Instant;

use crate::ProxiedAddr;

/// Default maximum number of v2 flows remembered at once.
///
/// A flow holds its key, its [`ProxiedAddr`] with the parsed header, and the table's links:
/// a few hundred bytes, so a full table stays in the tens of MiB. One proxy address has at
/// most 65,535 source ports, so one proxy address cannot have more live flows than this;
/// raise it for several busy proxy addresses.
pub const DEFAULT_MAX_FLOWS: usize = 65_536;

/// Default idle time after which a v2 flow is forgotten.
///
/// It should be at least the proxy's own idle timeout for the flow: when the proxy still
/// forwards a flow this table forgot, its datagrams (which carry no header) are dropped. A
/// longer timeout never misattributes a datagram, since a proxy that reuses a source port
/// for a new client sends a new header, which replaces the flow; it only keeps memory
/// longer. 300 s is longer than common UDP idle timeouts of proxies and NATs (Linux
/// conntrack keeps an established UDP stream for 120 s).
pub const DEFAULT_FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

struct Flow {
    addr: ProxiedAddr,
    last_seen: Instant,
}

/// Totals since the table was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowTotals {
    /// Flows started or restarted by a header.
    pub(crate) started: u64,
    /// Live flows evicted at the cap.
    pub(crate) evicted: u64,
    /// Flows removed after their idle timeout.
    pub(crate) expired: u64,
}

/// Flows keyed by the proxy's address and port, least recently seen first.
pub(crate) struct FlowTable {
    flows: LruCache<SocketAddr, Flow>,
    max: usize,
    idle: Duration,
    totals: FlowTotals,
}

impl FlowTable {
    /// An empty table of at most `max` flows (at least 1) forgotten after `idle`.
    pub(crate) fn new(max: usize, idle: Duration) -> Self {
        Self {
            flows: LruCache::unbounded(),
            max: max.max(1),
            idle,
            totals: FlowTotals::default(),
        }
    }

    fn is_expired(&self, flow: &Flow, now: Instant) -> bool {
        now.saturating_duration_since(flow.last_seen) > self.idle
    }

    /// Starts (or restarts) the flow of `proxy` for `addr`. At the cap, after removing the
    /// expired flows, the flow seen least recently is evicted.
    pub(crate) fn start(&mut self, proxy: SocketAddr, addr: ProxiedAddr, now: Instant) {
        self.totals.started += 1;
        let flow = Flow {
            addr,
            last_seen: now,
        };
        if let Some(existing) = self.flows.get_mut(&proxy) {
            *existing = flow;
            return;
        }
        self.expire(now);
        if self.flows.len() >= self.max && self.flows.pop_lru().is_some() {
            self.totals.evicted += 1;
        }
        self.flows.push(proxy, flow);
    }

    /// The client of the live flow of `proxy`, which is marked as seen now.
    pub(crate) fn touch(&mut self, proxy: &SocketAddr, now: Instant) -> Option<ProxiedAddr> {
        let flow = self.flows.peek(proxy)?;
        if self.is_expired(flow, now) {
            self.flows.pop(proxy);
            self.totals.expired += 1;
            return None;
        }
        let flow = self.flows.get_mut(proxy)?;
        flow.last_seen = now;
        Some(flow.addr.clone())
    }

    /// Forgets the flow of `proxy`, if any.
    pub(crate) fn remove(&mut self, proxy: &SocketAddr) -> bool {
        self.flows.pop(proxy).is_some()
    }

    /// Removes the expired flows, oldest first; returns how many.
    pub(crate) fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while self
            .flows
            .peek_lru()
            .is_some_and(|(_, flow)| self.is_expired(flow, now))
        {
            self.flows.pop_lru();
            n += 1;
        }
        self.totals.expired += n as u64;
        n
    }

    /// The number of flows held (expired ones not removed yet included).
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }

    /// The totals since the table was created.
    pub(crate) const fn totals(&self) -> FlowTotals {
        self.totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use realip_core::PeerAddr;

    fn addr(port: u16) -> ProxiedAddr {
        let client: SocketAddr = ([192, 0, 2, 1], port).into();
        ProxiedAddr::from_connection(PeerAddr::from(client), None, None)
    }

    fn key(port: u16) -> SocketAddr {
        ([10, 0, 0, 1], port).into()
    }

    #[test]
    fn least_recently_seen_is_evicted_at_the_cap() {
        let now = Instant::now();
        let mut table = FlowTable::new(2, Duration::from_secs(60));
        table.start(key(1), addr(1), now);
        table.start(key(2), addr(2), now);
        // Flow 1 is seen again: flow 2 is now the one idle the longest.
        assert!(table.touch(&key(1), now).is_some());
        table.start(key(3), addr(3), now);
        assert_eq!(table.totals().evicted, 1);
        assert_eq!(table.touch(&key(2), now), None);
        assert_eq!(table.touch(&key(1), now), Some(addr(1)));
        assert_eq!(table.touch(&key(3), now), Some(addr(3)));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn expired_flows_go_before_live_ones() {
        let t0 = Instant::now();
        let mut table = FlowTable::new(2, Duration::from_secs(10));
        table.start(key(1), addr(1), t0);
        table.start(key(2), addr(2), t0 + Duration::from_secs(8));
        table.start(key(3), addr(3), t0 + Duration::from_secs(11));
        assert_eq!(
            table.totals(),
            FlowTotals {
                started: 3,
                evicted: 0,
                expired: 1
            }
        );
        assert!(table.touch(&key(2), t0 + Duration::from_secs(12)).is_some());
        assert_eq!(table.touch(&key(2), t0 + Duration::from_secs(23)), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_new_header_replaces_the_flow() {
        let now = Instant::now();
        let mut table = FlowTable::new(4, Duration::from_secs(10));
        table.start(key(1), addr(1), now);
        table.start(key(1), addr(7), now);
        assert_eq!(table.touch(&key(1), now), Some(addr(7)));
        assert!(table.remove(&key(1)));
        assert_eq!(table.touch(&key(1), now), None);
    }
}
