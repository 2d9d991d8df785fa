//! Sets of trusted proxy addresses.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::addr::{PeerAddr, canonical_ip};

mod v4_table;

use v4_table::V4Table;

/// The fewest merged IPv4 ranges indexed by a [`V4Table`]. Below, the binary search takes
/// at most three steps and the ranges' 8 bytes each are all the set needs; from 9 ranges
/// on, the table's one or two reads beat the search's four or more (and the search out of
/// line, where `contains` calls it, is no faster than the table).
const MIN_TABLE_RANGES: usize = 9;

/// The error of parsing a trusted-proxy entry ([`TrustedProxies::parse_list`],
/// [`TrustedProxies::add`], `str::parse`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseTrustedProxiesError {
    /// The entry is empty.
    #[error("empty trusted proxy entry")]
    Empty,
    /// The entry is neither an IP address, a CIDR, nor `unix:`.
    #[error(
        "invalid trusted proxy {input:?}: expected an IP address (10.0.0.1, ::1), a CIDR (10.0.0.0/8, fd00::/8) or \"unix:\""
    )]
    Invalid {
        /// The entry as given.
        input: String,
    },
}

/// A set of trusted proxy addresses: IPv4 and IPv6 CIDRs, and optionally Unix socket peers.
///
/// This is NGINX's `set_real_ip_from` list. Lookups canonicalize IPv4-mapped IPv6 addresses
/// first, so `::ffff:10.0.0.1` matches `10.0.0.0/8`; networks are canonicalized the same way
/// however they are added (parsed, [`insert`](Self::insert), [`with`](Self::with),
/// [`add`](Self::add), [`Extend`], [`FromIterator`]), so `::ffff:10.0.0.0/104` is
/// `10.0.0.0/8` and the same networks always make the same set. As in NGINX, an IPv4-mapped
/// address is an IPv4 host: it is matched by IPv4 networks and by IPv6 networks inside
/// `::ffff:0:0/96`, not by wider IPv6 networks such as `::/0`.
///
/// # Cost
///
/// Ranges are merged into sorted, non-overlapping intervals (8 bytes each for IPv4, 32 for
/// IPv6). IPv6 addresses, and IPv4 addresses in a set of up to 8 merged IPv4 intervals, are
/// looked up by binary search: about log2(intervals) dependent comparisons. A set of more
/// than 8 IPv4 intervals also gets a three-level table indexed by the address's top 16 bits,
/// third octet and last octet (a multibit trie, as in router forwarding tables), so that an
/// IPv4 lookup takes at most three dependent memory reads however large the set: it costs
/// 128 KiB, plus 512 bytes per /16 the set covers in part and 32 bytes per /24 it covers in
/// part, and is built only while that stays within 4 MiB (for example, not for several
/// thousand single addresses each in its own /16); a larger set keeps the binary search.
/// Each addition rebuilds the intervals and the table, so a large set should be made in one
/// go ([`parse_list`](Self::parse_list), [`Extend`], [`FromIterator`]) rather than one
/// [`insert`](Self::insert) at a time.
///
/// An empty set (the [`Default`]) trusts nobody.
///
/// ```
/// use realip_core::TrustedProxies;
///
/// let mut trusted = TrustedProxies::parse_list(["10.0.0.0/8", "2001:db8::/32", "unix:"]).unwrap();
/// trusted.insert("192.168.0.10/32".parse().unwrap());
/// assert!(trusted.contains("10.200.0.1".parse().unwrap()));
/// assert!(trusted.contains("192.168.0.10".parse().unwrap()));
/// assert!(!trusted.contains("192.168.0.11".parse().unwrap()));
/// assert!(trusted.contains("2001:db8::42".parse().unwrap()));
/// assert!(trusted.contains_unix());
///
/// let err = TrustedProxies::parse_list(["10.0.0.0/33"]).unwrap_err();
/// assert!(err.to_string().contains("10.0.0.0/33"));
/// ```
///
/// [`contains`]: TrustedProxies::contains
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    v4: Vec<(u32, u32)>,
    /// Built from `v4` when it has at least [`MIN_TABLE_RANGES`] intervals and the table
    /// fits its memory cap; `contains` then reads it instead of searching `v4`.
    v4_table: Option<V4Table>,
    v6: Vec<(u128, u128)>,
    unix: bool,
}

impl TrustedProxies {
    /// An empty set: trusts nobody.
    pub const fn new() -> Self {
        Self {
            nets: Vec::new(),
            v4: Vec::new(),
            v4_table: None,
            v6: Vec::new(),
            unix: false,
        }
    }

    /// Loopback: `127.0.0.0/8`, `::1` and Unix socket peers.
    pub fn loopback() -> Self {
        Self::from_nets(
            [
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
            ],
            true,
        )
    }

    /// Private networks: loopback (as [`loopback`](Self::loopback)), RFC 1918
    /// (`10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`) and IPv6 unique local
    /// addresses (`fc00::/7`).
    pub fn private() -> Self {
        let mut set = Self::loopback();
        set.extend([
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8)),
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12)),
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16)),
            IpNet::V6(Ipv6Net::new_assert(
                Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0),
                7,
            )),
        ]);
        set
    }

    /// Link-local networks: `169.254.0.0/16` and `fe80::/10`.
    pub fn link_local() -> Self {
        Self::from_nets(
            [
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16)),
                IpNet::V6(Ipv6Net::new_assert(
                    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
                    10,
                )),
            ],
            false,
        )
    }

    /// Every address and Unix socket peers. Use only when every peer that can reach the
    /// socket is a proxy you control (for example a port bound to a private interface).
    pub fn any() -> Self {
        Self::from_nets(
            [
                IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0)),
                IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 0)),
            ],
            true,
        )
    }

    fn from_nets(nets: impl IntoIterator<Item = IpNet>, unix: bool) -> Self {
        let mut set = Self::new();
        set.unix = unix;
        set.extend(nets);
        set
    }

    /// Parses a list of entries: IP addresses (`10.0.0.1`, `::1`), CIDRs (`10.0.0.0/8`),
    /// or `unix:` for Unix socket peers. Host bits in a CIDR are ignored (`10.1.2.3/8` is
    /// `10.0.0.0/8`), as NGINX does.
    pub fn parse_list<I, S>(entries: I) -> Result<Self, ParseTrustedProxiesError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut nets = Vec::new();
        let mut unix = false;
        for entry in entries {
            match parse_entry(entry.as_ref())? {
                Entry::Net(net) => nets.push(net),
                Entry::Unix => unix = true,
            }
        }
        Ok(Self::from_nets(nets, unix))
    }

    /// Parses and adds one entry (see [`parse_list`](Self::parse_list)).
    pub fn add(&mut self, entry: &str) -> Result<(), ParseTrustedProxiesError> {
        match parse_entry(entry)? {
            Entry::Net(net) => self.insert(net),
            Entry::Unix => self.unix = true,
        }
        Ok(())
    }

    /// Adds a network (host bits dropped, IPv4-mapped IPv6 networks made IPv4).
    pub fn insert(&mut self, net: IpNet) {
        self.extend([net]);
    }

    /// Adds a network, builder style.
    #[must_use]
    pub fn with(mut self, net: IpNet) -> Self {
        self.insert(net);
        self
    }

    /// Trusts (or stops trusting) peers on Unix domain sockets.
    pub fn set_unix(&mut self, trusted: bool) {
        self.unix = trusted;
    }

    /// Trusts peers on Unix domain sockets, builder style.
    #[must_use]
    pub fn with_unix(mut self) -> Self {
        self.unix = true;
        self
    }

    /// Whether `ip` is in the set. IPv4-mapped IPv6 addresses match IPv4 ranges.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        // Inlined up to here, so that the searches below get the address in a register
        // rather than an `IpAddr` written to memory for them.
        match canonical_ip(ip) {
            IpAddr::V4(v4) => self.contains_v4(u32::from(v4)),
            IpAddr::V6(v6) => lookup(&self.v6, u128::from(v6)),
        }
    }

    /// IPv4 membership: through the table when the set has one, else by binary search.
    #[inline(never)]
    fn contains_v4(&self, addr: u32) -> bool {
        match &self.v4_table {
            Some(table) => table.contains(addr),
            None => lookup(&self.v4, addr),
        }
    }

    /// Whether Unix domain socket peers are trusted.
    pub const fn contains_unix(&self) -> bool {
        self.unix
    }

    /// Whether a transport peer is trusted: its IP is in the set, or it is a Unix socket
    /// peer and Unix peers are trusted.
    #[inline]
    pub fn contains_peer(&self, peer: &PeerAddr) -> bool {
        match peer.ip() {
            Some(ip) => self.contains(ip),
            None => self.unix,
        }
    }

    /// Whether the set trusts nobody.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && !self.unix
    }

    /// The networks in the order they were added, canonical (host bits dropped, IPv4-mapped
    /// IPv6 networks made IPv4) but not merged.
    pub fn networks(&self) -> &[IpNet] {
        &self.nets
    }

    fn rebuild(&mut self) {
        let mut v4: Vec<(u32, u32)> = Vec::new();
        let mut v6: Vec<(u128, u128)> = Vec::new();
        for net in &self.nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        self.v4 = merge(v4);
        self.v4_table = if self.v4.len() >= MIN_TABLE_RANGES {
            V4Table::build(&self.v4)
        } else {
            None
        };
        self.v6 = merge(v6);
    }
}

impl Extend<IpNet> for TrustedProxies {
    fn extend<T: IntoIterator<Item = IpNet>>(&mut self, iter: T) {
        let before = self.nets.len();
        self.nets
            .extend(iter.into_iter().map(|net| canonical_net(net.trunc())));
        if self.nets.len() != before {
            self.rebuild();
        }
    }
}

impl FromIterator<IpNet> for TrustedProxies {
    fn from_iter<T: IntoIterator<Item = IpNet>>(iter: T) -> Self {
        Self::from_nets(iter, false)
    }
}

impl FromStr for TrustedProxies {
    type Err = ParseTrustedProxiesError;

    /// Parses entries separated by commas and/or whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_list(
            s.split(|c: char| c == ',' || c.is_ascii_whitespace())
                .filter(|e| !e.is_empty()),
        )
    }
}

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for net in &self.nets {
            list.entry(&format_args!("{net}"));
        }
        if self.unix {
            list.entry(&format_args!("unix:"));
        }
        list.finish()
    }
}

enum Entry {
    Net(IpNet),
    Unix,
}

fn parse_entry(entry: &str) -> Result<Entry, ParseTrustedProxiesError> {
    let entry = entry.trim();
    if entry.is_empty() {
        return Err(ParseTrustedProxiesError::Empty);
    }
    if entry.eq_ignore_ascii_case("unix:") {
        return Ok(Entry::Unix);
    }
    let invalid = || ParseTrustedProxiesError::Invalid {
        input: entry.to_owned(),
    };
    // Canonicalized where every network is added (`Extend`).
    if entry.contains('/') {
        entry.parse().map(Entry::Net).map_err(|_| invalid())
    } else {
        let ip: IpAddr = entry.parse().map_err(|_| invalid())?;
        Ok(Entry::Net(IpNet::from(ip)))
    }
}

/// `::ffff:10.0.0.0/104` becomes `10.0.0.0/8`, so that mapped ranges match canonical lookups.
/// `net` has no host bits.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::V4(Ipv4Net::new_assert(v4, v6.prefix_len() - 96)),
            None => net,
        },
        _ => net,
    }
}

fn merge<T: Ord + Copy + num::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        if let Some(last) = out.last_mut() {
            // Overlapping or adjacent: extend the previous interval.
            if last.1 >= start || last.1.succ() == Some(start) {
                if end > last.1 {
                    last.1 = end;
                }
                continue;
            }
        }
        out.push((start, end));
    }
    out.shrink_to_fit();
    out
}

#[inline]
fn lookup<T: Ord + Copy>(ranges: &[(T, T)], value: T) -> bool {
    // Index of the first interval starting after `value`; the candidate is the one before it.
    let idx = ranges.partition_point(|&(start, _)| start <= value);
    idx > 0 && ranges[idx - 1].1 >= value
}

mod num {
    pub(super) trait Succ: Sized {
        fn succ(self) -> Option<Self>;
    }
    impl Succ for u32 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Option<Self> {
            self.checked_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_entry_form() {
        let set = TrustedProxies::parse_list([
            "10.0.0.0/8",
            "127.0.0.1",
            "::1",
            "unix:",
            " 2001:db8::/32 ",
            "192.168.1.77/24",
        ])
        .unwrap();
        assert!(set.contains(ip("10.255.255.255")));
        assert!(set.contains(ip("127.0.0.1")));
        assert!(!set.contains(ip("127.0.0.2")));
        assert!(set.contains(ip("::1")));
        assert!(set.contains(ip("2001:db8:ffff::1")));
        assert!(!set.contains(ip("2001:db9::1")));
        // Host bits are dropped: 192.168.1.77/24 is 192.168.1.0/24.
        assert!(set.contains(ip("192.168.1.1")));
        assert!(set.contains_unix());
        assert_eq!(set.networks()[4].to_string(), "192.168.1.0/24");
    }

    #[test]
    fn rejects_bad_entries_with_the_input_in_the_message() {
        for bad in [
            "10.0.0.0/33",
            "10.0.0",
            "example.com",
            "::1/129",
            "unix",
            "1.2.3.4:80",
        ] {
            let err = TrustedProxies::parse_list([bad]).unwrap_err();
            assert_eq!(
                err,
                ParseTrustedProxiesError::Invalid {
                    input: bad.to_owned()
                },
                "{bad}"
            );
            assert!(err.to_string().contains(bad));
        }
        assert_eq!(
            TrustedProxies::parse_list([" "]).unwrap_err(),
            ParseTrustedProxiesError::Empty
        );
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_ranges_and_mapped_ranges_match_ipv4_peers() {
        let set: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert!(set.contains(ip("::ffff:10.1.1.1")));
        assert!(!set.contains(ip("::ffff:11.1.1.1")));
        let mapped: TrustedProxies = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(mapped.contains(ip("::ffff:10.9.9.9")));
        assert!(!mapped.contains(ip("11.0.0.1")));
        // The same network added any other way is the same set.
        let net: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
        let mut inserted = TrustedProxies::new();
        inserted.insert(net);
        let mut extended = TrustedProxies::new();
        extended.extend([net]);
        let built = [
            TrustedProxies::new().with(net),
            inserted,
            extended,
            [net].into_iter().collect(),
        ];
        for set in built {
            assert!(set.contains(ip("10.1.2.3")), "{set:?}");
            assert_eq!(set, mapped);
            assert_eq!(set.networks()[0].to_string(), "10.0.0.0/8");
        }
    }

    #[test]
    fn presets() {
        let lo = TrustedProxies::loopback();
        assert!(lo.contains(ip("127.5.5.5")) && lo.contains(ip("::1")) && lo.contains_unix());
        assert!(!lo.contains(ip("10.0.0.1")));
        let private = TrustedProxies::private();
        for yes in [
            "10.1.1.1",
            "172.31.0.1",
            "192.168.0.1",
            "fd12::1",
            "127.0.0.1",
        ] {
            assert!(private.contains(ip(yes)), "{yes}");
        }
        for no in ["172.32.0.1", "8.8.8.8", "2001:db8::1", "169.254.1.1"] {
            assert!(!private.contains(ip(no)), "{no}");
        }
        assert!(TrustedProxies::link_local().contains(ip("fe80::1")));
        assert!(TrustedProxies::any().contains(ip("203.0.113.1")));
        let empty = TrustedProxies::new();
        assert!(empty.is_empty() && !empty.contains(ip("127.0.0.1")) && !empty.contains_unix());
        // Sets of a few ranges keep their 8 bytes per range and no table.
        assert!(private.v4_table.is_none() && TrustedProxies::any().v4_table.is_none());
    }

    #[test]
    fn peers() {
        let set: TrustedProxies = "127.0.0.1".parse().unwrap();
        assert!(set.contains_peer(&PeerAddr::Inet("127.0.0.1:9".parse().unwrap())));
        assert!(!set.contains_peer(&PeerAddr::Unix(None)));
        assert!(set.clone().with_unix().contains_peer(&PeerAddr::Unix(None)));
    }

    #[test]
    fn edges_of_the_address_space() {
        let set: TrustedProxies = "0.0.0.0/1, 128.0.0.0/1, ::/0".parse().unwrap();
        assert!(set.contains(ip("0.0.0.0")) && set.contains(ip("255.255.255.255")));
        assert!(set.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        let one: TrustedProxies = "255.255.255.255".parse().unwrap();
        assert!(one.contains(ip("255.255.255.255")) && !one.contains(ip("255.255.255.254")));
    }

    /// A large set: 0.0.0.0, 255.255.255.255 and 100 /24s, looked up through the table.
    #[test]
    fn edges_of_the_address_space_in_a_large_set() {
        let mut entries = vec!["0.0.0.0".to_owned(), "255.255.255.255".to_owned()];
        entries.extend((0..100).map(|i| format!("100.64.{}.0/24", 2 * i)));
        let set = TrustedProxies::parse_list(&entries).unwrap();
        assert!(set.v4_table.is_some());
        for (addr, expected) in [
            ("0.0.0.0", true),
            ("0.0.0.1", false),
            ("255.255.255.255", true),
            ("255.255.255.254", false),
            ("::ffff:0.0.0.0", true),
            ("::ffff:255.255.255.255", true),
            ("100.64.0.0", true),
            ("100.64.0.255", true),
            ("100.64.1.0", false),
            ("100.64.198.255", true),
            ("100.64.199.0", false),
            ("100.63.255.255", false),
        ] {
            assert_eq!(set.contains(ip(addr)), expected, "{addr}");
        }
        // `::` is IPv6, not the IPv4-mapped 0.0.0.0.
        assert!(!set.contains(ip("::")));
    }

    /// Past the table's memory cap (thousands of hosts, each alone in its /16), the set
    /// keeps its binary search and the same answers.
    #[test]
    fn sets_past_the_table_cap_answer_the_same() {
        let hosts: Vec<IpNet> = (0..8_000u32)
            .map(|i| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from((i << 16) | 7), 32)))
            .collect();
        let set: TrustedProxies = hosts.iter().copied().collect();
        assert!(set.v4_table.is_none());
        for i in [0u32, 1, 4_321, 7_999] {
            assert!(set.contains(IpAddr::V4(Ipv4Addr::from((i << 16) | 7))));
            assert!(!set.contains(IpAddr::V4(Ipv4Addr::from((i << 16) | 8))));
        }
        assert!(!set.contains(ip("255.255.255.255")));
        // Below the cap, the same networks are looked up through the table.
        let set: TrustedProxies = hosts[..7_000].iter().copied().collect();
        assert!(set.v4_table.is_some());
        assert!(set.contains(IpAddr::V4(Ipv4Addr::from((6_999 << 16) | 7))));
        assert!(!set.contains(IpAddr::V4(Ipv4Addr::from((7_000 << 16) | 7))));
    }

    fn naive(nets: &[IpNet], ip: IpAddr) -> bool {
        model(nets, ip)
    }

    proptest! {
        #[test]
        fn lookup_agrees_with_a_linear_scan(
            nets in prop::collection::vec((any::<u32>(), 0u8..=32), 0..64),
            probes in prop::collection::vec(any::<u32>(), 1..64),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, len)| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(a), len).trunc()))
                .collect();
            let set: TrustedProxies = nets.iter().copied().collect();
            for p in probes {
                let ip = IpAddr::V4(Ipv4Addr::from(p));
                prop_assert_eq!(set.contains(ip), naive(&nets, ip));
                // Probes near a boundary are the interesting ones.
                for n in &nets {
                    if let IpNet::V4(n) = n {
                        for edge in [n.network(), n.broadcast()] {
                            let e = u32::from(edge);
                            for v in [e.wrapping_sub(1), e, e.wrapping_add(1)] {
                                let ip = IpAddr::V4(Ipv4Addr::from(v));
                                prop_assert_eq!(set.contains(ip), naive(&nets, ip));
                            }
                        }
                    }
                }
            }
        }

        #[test]
        fn v6_lookup_agrees_with_a_linear_scan(
            nets in prop::collection::vec((any::<u128>(), 0u8..=128), 0..32),
            probes in prop::collection::vec(any::<u128>(), 1..32),
        ) {
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(a, len)| IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(a), len).trunc()))
                .collect();
            let set: TrustedProxies = nets.iter().copied().collect();
            for p in probes {
                let ip = IpAddr::V6(Ipv6Addr::from(p));
                prop_assert_eq!(set.contains(ip), naive(&nets, ip));
            }
        }

        /// The same networks make the same set whichever way they are added, and the set
        /// answers as the model does for IPv4, IPv6 and IPv4-mapped probes.
        #[test]
        fn every_constructor_builds_the_same_set(
            nets in prop::collection::vec(net(), 0..12),
            probes in prop::collection::vec(probe(), 1..32),
        ) {
            let texts: Vec<String> = nets.iter().map(ToString::to_string).collect();
            let collected: TrustedProxies = nets.iter().copied().collect();
            let mut extended = TrustedProxies::new();
            extended.extend(nets.iter().copied());
            let mut inserted = TrustedProxies::new();
            let mut added = TrustedProxies::new();
            let mut with = TrustedProxies::new();
            for (net, text) in nets.iter().zip(&texts) {
                inserted.insert(*net);
                added.add(text).unwrap();
                with = with.with(*net);
            }
            let parsed = TrustedProxies::parse_list(&texts).unwrap();
            let from_str: TrustedProxies = texts.join(", ").parse().unwrap();
            for (name, set) in [
                ("extend", &extended),
                ("insert", &inserted),
                ("add", &added),
                ("with", &with),
                ("parse_list", &parsed),
                ("from_str", &from_str),
            ] {
                prop_assert_eq!(set, &collected, "{}", name);
            }
            for p in probes {
                prop_assert_eq!(collected.contains(p), model(&nets, p), "{}", p);
            }
        }
    }

    proptest! {
        // Each case checks thousands of probes against a linear scan.
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Sets large enough for the IPv4 table, as IPv4 and IPv4-mapped probes see them.
        #[test]
        fn large_sets_agree_with_a_linear_scan(
            nets in prop::collection::vec(
                (0u32..1 << 22, prop_oneof![Just(24u8), Just(25), Just(32), 16u8..=32]),
                MIN_TABLE_RANGES..300,
            ),
            probes in prop::collection::vec(any::<u32>(), 1..64),
        ) {
            // Within 100.64.0.0/10, so that networks overlap and touch.
            let nets: Vec<IpNet> = nets
                .into_iter()
                .map(|(off, len)| {
                    let addr = Ipv4Addr::from(0x6440_0000 + off);
                    IpNet::V4(Ipv4Net::new_assert(addr, len).trunc())
                })
                .collect();
            let set: TrustedProxies = nets.iter().copied().collect();
            let mut addrs = probes;
            for n in &nets {
                if let IpNet::V4(n) = n {
                    for edge in [u32::from(n.network()), u32::from(n.broadcast())] {
                        addrs.extend([edge.wrapping_sub(1), edge, edge.wrapping_add(1)]);
                    }
                }
            }
            for a in addrs {
                let v4 = Ipv4Addr::from(a);
                for ip in [IpAddr::V4(v4), IpAddr::V6(v4.to_ipv6_mapped())] {
                    prop_assert_eq!(set.contains(ip), naive(&nets, ip), "{}", ip);
                }
            }
        }
    }

    /// Networks anywhere, with a bias towards the IPv4-mapped range `::ffff:0:0/96`.
    fn net() -> impl Strategy<Value = IpNet> {
        prop_oneof![
            (any::<u32>(), 0u8..=32)
                .prop_map(|(a, len)| IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::from(a), len))),
            (any::<u128>(), 0u8..=128)
                .prop_map(|(a, len)| IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::from(a), len))),
            (any::<u32>(), 80u8..=128).prop_map(|(a, len)| IpNet::V6(Ipv6Net::new_assert(
                Ipv4Addr::from(a).to_ipv6_mapped(),
                len
            ))),
        ]
    }

    fn probe() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
            any::<u32>().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
            any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
        ]
    }

    /// NGINX's `ngx_cidr_match`, written independently of the set: an IPv4-mapped address is
    /// the IPv4 host, which an IPv4 network matches, and so does an IPv6 network of prefix
    /// 96 or more that contains the host's mapped form.
    fn model(nets: &[IpNet], ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(v6) => v6.to_ipv4_mapped(),
        };
        nets.iter().any(|net| match (net, v4, ip) {
            (IpNet::V4(n), Some(v4), _) => n.contains(&v4),
            (IpNet::V6(n), Some(v4), _) => n.prefix_len() >= 96 && n.contains(&v4.to_ipv6_mapped()),
            (IpNet::V6(n), None, IpAddr::V6(v6)) => n.contains(&v6),
            _ => false,
        })
    }
}
