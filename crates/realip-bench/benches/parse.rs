//! PROXY header parsing (criterion): `realip_listener::parse_header` against `ppp` called
//! directly (the floor) and the peer crate `proxy-protocol-rs`. See `realip_bench::cases`.
//! The interleaved ratio table of `BENCHMARKS.md` comes from `load micro`, same functions.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use realip_bench::cases::{parse_cases, parse_peer, parse_ppp, parse_realip};

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for case in parse_cases() {
        // Same input, same answer, before timing anything.
        assert_eq!(parse_realip(&case.buf), case.header_len, "{}", case.name);
        assert_eq!(parse_ppp(&case.buf), case.header_len, "{}", case.name);
        assert_eq!(parse_peer(&case.buf), case.header_len, "{}", case.name);
        group.throughput(Throughput::Bytes(case.header_len as u64));
        let buf = &case.buf;
        group.bench_function(BenchmarkId::new("realip", case.name), |b| {
            b.iter(|| parse_realip(black_box(buf)));
        });
        group.bench_function(BenchmarkId::new("ppp (floor)", case.name), |b| {
            b.iter(|| parse_ppp(black_box(buf)));
        });
        group.bench_function(BenchmarkId::new("proxy-protocol-rs", case.name), |b| {
            b.iter(|| parse_peer(black_box(buf)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
