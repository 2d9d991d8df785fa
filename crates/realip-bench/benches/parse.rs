//! PROXY header parsing: `realip_listener::parse_header` against `ppp` called directly (the
//! floor: the parser ours wraps, zero-copy, TLVs walked once so that they are validated as
//! ours does) and the peer crate `proxy-protocol-rs`. Each input is a header followed by
//! 16 bytes of application data, as it arrives in the first read.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use realip_bench::header::{self, dst4, dst6, sample_tlvs, src4, src6};

/// Application data after the header.
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n";

fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let tlvs = sample_tlvs();
    [
        ("v1 TCP4", header::v1(src4(), dst4())),
        ("v1 TCP6", header::v1(src6(), dst6())),
        ("v2 INET", header::v2(src4(), dst4(), &[])),
        ("v2 INET +3 TLVs", header::v2(src4(), dst4(), &tlvs)),
        ("v2 INET6", header::v2(src6(), dst6(), &[])),
        ("v2 INET6 +3 TLVs", header::v2(src6(), dst6(), &tlvs)),
    ]
    .into_iter()
    .map(|(name, mut h)| {
        h.extend_from_slice(REQUEST);
        (name, h)
    })
    .collect()
}

/// Ours: signature detection, `ppp`, size cap, TLV validation, owned `ProxyInfo`.
fn ours(buf: &[u8]) -> usize {
    let (info, len) = realip_listener::parse_header(buf, realip_listener::DEFAULT_MAX_HEADER_LEN)
        .expect("valid header")
        .expect("complete header");
    black_box(&info);
    len
}

/// The floor: `ppp`'s v1 or v2 parser on the same bytes, borrowing, TLVs walked.
fn floor(buf: &[u8]) -> usize {
    if buf[0] == b'P' {
        let h = ppp::v1::Header::try_from(buf).expect("valid v1");
        black_box(&h.addresses);
        h.header.len()
    } else {
        let h = ppp::v2::Header::try_from(buf).expect("valid v2");
        for tlv in h.tlvs() {
            black_box(tlv.expect("valid TLV"));
        }
        black_box(&h.addresses);
        h.len()
    }
}

/// The peer crate: its own parser, owned `ProxyInfo` with decoded TLVs.
fn peer(buf: &[u8]) -> usize {
    let (info, len) = proxy_protocol_rs::parse(buf).expect("valid header");
    black_box(&info);
    len
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, buf) in inputs() {
        let header_len = buf.len() - REQUEST.len();
        // Same input, same answer, before timing anything.
        assert_eq!(ours(&buf), header_len, "{name}: ours");
        assert_eq!(floor(&buf), header_len, "{name}: ppp");
        assert_eq!(peer(&buf), header_len, "{name}: peer");
        group.throughput(Throughput::Bytes(header_len as u64));
        group.bench_with_input(BenchmarkId::new("realip", name), &buf, |b, buf| {
            b.iter(|| ours(black_box(buf)));
        });
        group.bench_with_input(BenchmarkId::new("ppp (floor)", name), &buf, |b, buf| {
            b.iter(|| floor(black_box(buf)));
        });
        group.bench_with_input(
            BenchmarkId::new("proxy-protocol-rs", name),
            &buf,
            |b, buf| {
                b.iter(|| peer(black_box(buf)));
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
