//! A three-level table over IPv4 ranges: at most three dependent loads per lookup, whatever
//! the number of ranges.
//!
//! Level 1 has one entry per /16 (the top 16 bits of the address), level 2 one block of 256
//! entries (by the third octet) per /16 that the ranges cover in part, and level 3 one
//! 256-bit map (by the last octet) per /24 that they cover in part. An entry is empty, full,
//! or the index of the next level's block, so an address inside a range covering whole /16s
//! is answered by one load, one inside whole /24s by two, any other by three. This is the
//! multibit trie of router forwarding tables with strides 16, 8 and 8 (Gupta, Lin and
//! McKeown's DIR-24-8, with a second 8-bit level in place of a 2^24-entry first one).
//!
//! Memory: 128 KiB for level 1, then 512 B per partly covered /16 and 32 B per partly covered
//! /24. [`V4Table::build`] gives up (and the caller keeps its binary search) when that would
//! exceed [`MAX_BYTES`] or a level's block count does not fit an entry.

/// Level 1's entries: one per /16.
const L1_LEN: usize = 1 << 16;
/// An entry whose block holds no address of the set.
const EMPTY: u16 = 0;
/// An entry whose block is wholly inside the set.
const FULL: u16 = 1;
/// Entry `FIRST_BLOCK + i` points to block `i` of the next level.
const FIRST_BLOCK: u16 = 2;

/// The most memory a table may take (levels 1 to 3 together): beyond it, the set is looked
/// up by binary search.
pub(super) const MAX_BYTES: usize = 4 << 20;

/// The table of a set of IPv4 ranges (see the module docs).
#[derive(Clone, PartialEq, Eq)]
pub(super) struct V4Table {
    /// By the address's top 16 bits: [`EMPTY`], [`FULL`], or [`FIRST_BLOCK`] + the /16's
    /// block in `l2`.
    l1: Box<[u16; L1_LEN]>,
    /// By the third octet, per partly covered /16: [`EMPTY`], [`FULL`], or [`FIRST_BLOCK`] +
    /// the /24's map in `l3`.
    l2: Vec<[u16; 256]>,
    /// Per partly covered /24: bit `h % 64` of word `h / 64` is set when host `h` (the last
    /// octet) is in the set.
    l3: Vec<[u64; 4]>,
}

impl V4Table {
    /// The table of `ranges` (inclusive `(first, last)` pairs, sorted and disjoint, as
    /// `merge` makes them), or `None` when it would take more than [`MAX_BYTES`].
    pub(super) fn build(ranges: &[(u32, u32)]) -> Option<Self> {
        let l1: Box<[u16; L1_LEN]> = vec![EMPTY; L1_LEN].into_boxed_slice().try_into().ok()?;
        let mut table = Self {
            l1,
            l2: Vec::new(),
            l3: Vec::new(),
        };
        for &(first, last) in ranges {
            // The part of the range inside each /16 it meets.
            let mut lo = first;
            loop {
                let hi = last.min(lo | 0xffff);
                table.insert_in_16(lo, hi)?;
                if hi == last {
                    break;
                }
                lo = hi + 1;
            }
        }
        table.l2.shrink_to_fit();
        table.l3.shrink_to_fit();
        Some(table)
    }

    /// Adds `lo..=hi`, which lie in the same /16.
    fn insert_in_16(&mut self, lo: u32, hi: u32) -> Option<()> {
        let slot = (lo >> 16) as usize;
        if lo & 0xffff == 0 && hi & 0xffff == 0xffff {
            self.l1[slot] = FULL;
            return Some(());
        }
        // Ranges are disjoint, so a /16 met in part is never full.
        let block = match self.l1[slot] {
            EMPTY => {
                let entry = self.next_entry(self.l2.len(), 512)?;
                self.l2.push([EMPTY; 256]);
                self.l1[slot] = entry;
                self.l2.len() - 1
            }
            entry => usize::from(entry - FIRST_BLOCK),
        };
        // The part inside each /24.
        let mut lo = lo;
        loop {
            let hi_24 = hi.min(lo | 0xff);
            self.insert_in_24(block, lo, hi_24)?;
            if hi_24 == hi {
                return Some(());
            }
            lo = hi_24 + 1;
        }
    }

    /// Adds `lo..=hi`, which lie in the same /24, whose /16 is level 2's `block`.
    fn insert_in_24(&mut self, block: usize, lo: u32, hi: u32) -> Option<()> {
        let [.., third, lo_host] = lo.to_be_bytes();
        let [.., hi_host] = hi.to_be_bytes();
        let slot = usize::from(third);
        if lo_host == 0 && hi_host == 0xff {
            self.l2[block][slot] = FULL;
            return Some(());
        }
        let map = match self.l2[block][slot] {
            EMPTY => {
                let entry = self.next_entry(self.l3.len(), 32)?;
                self.l3.push([0; 4]);
                self.l2[block][slot] = entry;
                self.l3.len() - 1
            }
            entry => usize::from(entry - FIRST_BLOCK),
        };
        for host in lo_host..=hi_host {
            self.l3[map][usize::from(host >> 6)] |= 1 << (host & 63);
        }
        Some(())
    }

    /// The entry pointing at a new block after `blocks` others, if the table stays within
    /// [`MAX_BYTES`] with `block_bytes` more.
    fn next_entry(&self, blocks: usize, block_bytes: usize) -> Option<u16> {
        if self.bytes() + block_bytes > MAX_BYTES {
            return None;
        }
        u16::try_from(blocks)
            .ok()
            .and_then(|i| i.checked_add(FIRST_BLOCK))
    }

    /// Whether `addr` is in the set.
    #[inline]
    pub(super) fn contains(&self, addr: u32) -> bool {
        let [a, b, c, d] = addr.to_be_bytes();
        let entry = self.l1[usize::from(u16::from_be_bytes([a, b]))];
        if entry < FIRST_BLOCK {
            return entry == FULL;
        }
        // `build` makes every entry point at a block that exists: `get` only spares the
        // caller a panic path.
        let Some(block) = self.l2.get(usize::from(entry - FIRST_BLOCK)) else {
            return false;
        };
        let entry = block[usize::from(c)];
        if entry < FIRST_BLOCK {
            return entry == FULL;
        }
        let Some(map) = self.l3.get(usize::from(entry - FIRST_BLOCK)) else {
            return false;
        };
        map[usize::from(d >> 6)] >> (d & 63) & 1 == 1
    }

    /// The bytes the three levels take (their heap memory).
    pub(super) fn bytes(&self) -> usize {
        size_of::<[u16; L1_LEN]>()
            + self.l2.len() * size_of::<[u16; 256]>()
            + self.l3.len() * size_of::<[u64; 4]>()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{lookup, merge};
    use super::*;
    use proptest::prelude::*;

    /// Merged inclusive ranges of `(address, prefix length)` networks.
    fn ranges(nets: &[(u32, u8)]) -> Vec<(u32, u32)> {
        merge(nets.iter().map(|&(addr, len)| bounds(addr, len)).collect())
    }

    /// The first and last address of `addr/len`.
    fn bounds(addr: u32, len: u8) -> (u32, u32) {
        let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        (addr & !host, addr | host)
    }

    /// Probes at both ends of every range and of every network, and one either side.
    fn edges(nets: &[(u32, u8)], merged: &[(u32, u32)]) -> Vec<u32> {
        let mut probes = vec![0, 1, u32::MAX - 1, u32::MAX];
        let nets = nets.iter().map(|&(addr, len)| bounds(addr, len));
        for (first, last) in nets.chain(merged.iter().copied()) {
            probes.extend([
                first.wrapping_sub(1),
                first,
                first.wrapping_add(1),
                last.wrapping_sub(1),
                last,
                last.wrapping_add(1),
            ]);
        }
        probes
    }

    #[test]
    fn the_ends_of_the_address_space() {
        let nets = [(0, 32), (u32::MAX, 32), (0x0a00_0000, 8)];
        let table = V4Table::build(&ranges(&nets)).unwrap();
        for (addr, expected) in [
            (0, true),
            (1, false),
            (u32::MAX, true),
            (u32::MAX - 1, false),
            (0x09ff_ffff, false),
            (0x0a00_0000, true),
            (0x0aff_ffff, true),
            (0x0b00_0000, false),
        ] {
            assert_eq!(table.contains(addr), expected, "{addr:#010x}");
        }
        for whole in [(0, 0), (0x8000_0000, 1), (0, 1)] {
            let table = V4Table::build(&ranges(&[whole])).unwrap();
            let (first, last) = bounds(whole.0, whole.1);
            for addr in [0, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
                assert_eq!(table.contains(addr), (first..=last).contains(&addr));
            }
            assert_eq!(table.bytes(), L1_LEN * 2, "whole /16s need no other level");
        }
        let empty = V4Table::build(&[]).unwrap();
        assert!(!empty.contains(0) && !empty.contains(u32::MAX));
    }

    /// 10,000 /24s in 78 /16s (the shape of `trusted_cidrs` in realip-bench): level 1 and one
    /// level-2 block per /16, 17 bytes per network.
    #[test]
    fn memory_of_many_24s_and_of_scattered_hosts() {
        let nets: Vec<(u32, u8)> = (0..10_000u32)
            .map(|i| {
                (
                    (100 << 24) | ((64 + i / 128) << 16) | ((i % 128) * 2) << 8,
                    24,
                )
            })
            .collect();
        let table = V4Table::build(&ranges(&nets)).unwrap();
        assert_eq!(table.bytes(), 131_072 + 79 * 512);
        // The worst case per network: a host alone in its /16 takes a level-2 block and a
        // level-3 map; the cap stops the table at about 7,500 of them.
        let hosts = |n: u32| -> Vec<(u32, u8)> { (0..n).map(|i| ((i << 16) | 1, 32)).collect() };
        let table = V4Table::build(&ranges(&hosts(7_000))).unwrap();
        assert_eq!(table.bytes(), 131_072 + 7_000 * (512 + 32));
        assert!(V4Table::build(&ranges(&hosts(8_000))).is_none());
        // Level 3 is indexed by 16 bits: at most 65,534 partly covered /24s.
        let hosts: Vec<(u32, u8)> = (0..70_000u32).map(|i| ((i << 8) | 1, 32)).collect();
        assert!(V4Table::build(&ranges(&hosts)).is_none());
    }

    /// A network: mostly of a length that splits the table's levels, mostly within
    /// `2^spread` addresses of `base` so that networks overlap and touch.
    fn net(base: u32, spread: u32) -> impl Strategy<Value = (u32, u8)> {
        let len = prop_oneof![
            1 => Just(16u8),
            4 => Just(23),
            4 => Just(24),
            4 => Just(25),
            4 => Just(31),
            4 => Just(32),
            6 => 17u8..=32,
        ];
        let addr = prop_oneof![
            3 => (0u32..1 << spread).prop_map(move |off| base.wrapping_add(off)),
            1 => any::<u32>(),
        ];
        (addr, len)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The table answers as the binary search over the same merged ranges, at every
        /// range's edges and at random addresses.
        #[test]
        fn agrees_with_the_binary_search(
            (wide, mut nets, touching) in (any::<u32>(), 12u32..=24).prop_flat_map(|(base, spread)| (
                prop::collection::vec(
                    (any::<u32>(), prop::sample::select(vec![0u8, 1, 8, 8, 12, 16, 16])),
                    0..3,
                ),
                prop::collection::vec(net(base, spread), 0..5000),
                prop::collection::vec(any::<prop::sample::Index>(), 0..500),
            )),
            random in prop::collection::vec(any::<u32>(), 0..256),
        ) {
            // Some networks' neighbours of the same size: adjacent ranges to merge.
            if !nets.is_empty() {
                for index in touching {
                    let (addr, len) = nets[index.index(nets.len())];
                    let (_, last) = bounds(addr, len);
                    nets.push((last.wrapping_add(1), len));
                }
            }
            nets.extend(wide);
            let merged = ranges(&nets);
            let table = V4Table::build(&merged);
            prop_assert!(table.is_some(), "{} ranges over the cap", merged.len());
            let table = table.unwrap();
            prop_assert!(table.bytes() <= MAX_BYTES);
            for addr in edges(&nets, &merged).into_iter().chain(random) {
                prop_assert_eq!(table.contains(addr), lookup(&merged, addr), "{:#010x}", addr);
            }
        }
    }
}
