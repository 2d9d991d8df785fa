//! UDP datagrams from proxies: `UdpDecoder::decode` under every policy, over a sequence of
//! datagrams from a few proxy ports (so v2 flows start, continue, are replaced and evicted).
//!
//! Input: one policy byte, then datagrams, each as `[port] [len hi] [len lo] [bytes...]`.
//! Checked: no panic; the header length is within the datagram; a delivered datagram
//! always has a client; `Reject` delivers only bare datagrams with the socket source as
//! the client; an SPP reply header is the received header, byte for byte; a v2 client is
//! the header's source; the flow table stays under its cap; every datagram is counted
//! once as delivered or dropped.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use realip_listener::parse_header;
use realip_listener::udp::{SPP_HEADER_LEN, UdpDecoder, UdpPolicy};

const MAX_FLOWS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, mut input)) = data.split_first() else {
        return;
    };
    let policy = match selector % 4 {
        0 => UdpPolicy::V2PerFlow,
        1 => UdpPolicy::V2PerDatagram,
        2 => UdpPolicy::Spp,
        _ => UdpPolicy::Reject,
    };
    let decoder = UdpDecoder::builder()
        .policy(policy)
        .max_flows(MAX_FLOWS)
        .decoder(None);
    while let [port, hi, lo, rest @ ..] = input {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (datagram, tail) = rest.split_at(len);
        input = tail;
        let peer = SocketAddr::from(([127, 0, 0, 1], u16::from(port % 8) + 1));
        match decoder.decode(peer, datagram) {
            Ok((header_len, addr)) => {
                assert!(header_len <= datagram.len());
                let client = addr
                    .client()
                    .expect("an internet source always has a client");
                assert_eq!(addr.socket_peer().inet(), Some(peer));
                match policy {
                    UdpPolicy::Reject => {
                        assert_eq!(header_len, 0);
                        assert_eq!(client.socket_addr(), Some(peer));
                    }
                    UdpPolicy::Spp => {
                        assert_eq!(header_len, SPP_HEADER_LEN);
                        let reply = UdpDecoder::reply_header(&addr).expect("an SPP reply header");
                        assert_eq!(reply.to_bytes()[..], datagram[..SPP_HEADER_LEN]);
                    }
                    _ if header_len > 0 => {
                        let (info, len) = parse_header(datagram, 4096).unwrap().unwrap();
                        assert_eq!(len, header_len);
                        if let Some(source) = info.source_inet() {
                            if info.command() == realip_listener::Command::Proxy {
                                assert_eq!(client.port(), Some(source.port()));
                                assert_eq!(client.ip(), realip_core::canonical_ip(source.ip()));
                            }
                        }
                    }
                    _ => assert_eq!(policy, UdpPolicy::V2PerFlow),
                }
            }
            Err(err) => assert_eq!(err.peer().and_then(|p| p.inet()), Some(peer)),
        }
    }
    let stats = decoder.stats();
    assert!(stats.flows <= MAX_FLOWS);
    assert_eq!(
        stats.datagrams,
        stats.delivered
            + stats.dropped_malformed
            + stats.dropped_forbidden
            + stats.dropped_missing
            + stats.dropped_no_flow
    );
});
