//! Forwarded-header resolution (criterion): `realip-tower` against the peer crates doing the
//! same work where they can. `real-ip` walks the chain against its CIDR list (the same work
//! as our recursive layer); `client-ip` and `axum-client-ip` only take the rightmost entry,
//! which is the same work as our non-recursive layer (group `layer same work`) and less work
//! than the recursive walk (group `layer`, where they are a lower bound with a different
//! answer for a chain). See `realip_bench::cases`. The interleaved ratio tables of
//! `BENCHMARKS.md` come from `load micro`, same functions.

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use realip_bench::cases::{layer_cases, same_work_cases, trusted_cidrs};
use realip_core::TrustedProxies;

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    for mut case in layer_cases() {
        // Checked answers before timing anything.
        case.check();
        let name = case.name;
        group.bench_function(BenchmarkId::new("realip resolve", name), |b| {
            b.iter(|| case.realip_resolve());
        });
        group.bench_function(BenchmarkId::new("realip RealIp::call", name), |b| {
            b.iter(|| case.realip_service());
        });
        group.bench_function(BenchmarkId::new("real-ip (CIDR walk)", name), |b| {
            b.iter(|| case.real_ip());
        });
        group.bench_function(BenchmarkId::new("client-ip (rightmost only)", name), |b| {
            b.iter(|| case.client_ip());
        });
        group.bench_function(
            BenchmarkId::new("axum-client-ip (rightmost only)", name),
            |b| {
                b.iter(|| case.axum_client_ip());
            },
        );
    }
    group.finish();

    // Non-recursive: every implementation returns the rightmost entry.
    let mut group = c.benchmark_group("layer same work");
    for mut case in same_work_cases() {
        case.check();
        let name = case.name;
        group.bench_function(BenchmarkId::new("realip resolve", name), |b| {
            b.iter(|| case.realip_resolve());
        });
        group.bench_function(
            BenchmarkId::new("realip resolve without_port_header", name),
            |b| {
                b.iter(|| case.realip_resolve_without_port());
            },
        );
        group.bench_function(BenchmarkId::new("realip RealIp::call", name), |b| {
            b.iter(|| case.realip_service());
        });
        group.bench_function(BenchmarkId::new("client-ip", name), |b| {
            b.iter(|| case.client_ip());
        });
        group.bench_function(BenchmarkId::new("axum-client-ip", name), |b| {
            b.iter(|| case.axum_client_ip());
        });
    }
    group.finish();

    // The lookup alone: 16 vs 10,000 CIDRs.
    let mut group = c.benchmark_group("trusted lookup");
    for n in [16, 10_000] {
        let trusted = TrustedProxies::parse_list(trusted_cidrs(n)).expect("valid CIDRs");
        let probe = IpAddr::from([10, 2, 0, 1]);
        assert!(trusted.contains(probe));
        group.bench_function(BenchmarkId::new("TrustedProxies::contains", n), |b| {
            b.iter(|| trusted.contains(black_box(probe)));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
