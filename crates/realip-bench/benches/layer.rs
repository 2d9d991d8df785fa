//! Forwarded-header resolution: `realip-tower` against the peer crates doing the same work
//! where they can. `real-ip` walks the chain against its CIDR list (the same work as ours);
//! `client-ip` and `axum-client-ip` only take the rightmost entry (less work, and a different
//! answer for a chain: they have no trusted-proxy walk), so they are a lower bound.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::extract::FromRequestParts;
use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request};
use realip_core::TrustedProxies;
use realip_tower::{RealIp, RealIpLayer, TransportPeer};
use tower_service::Service;

/// The real client, leftmost in every chain.
const CLIENT: [u8; 4] = [203, 0, 113, 7];
/// The socket peer: the last proxy, trusted.
const PEER: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(10, 9, 0, 1)), 443);

/// The proxy networks every trusted list contains (the peer's and the chain's).
fn proxy_nets() -> Vec<String> {
    ["10.9.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"]
        .map(str::to_owned)
        .to_vec()
}

/// `n` trusted CIDRs: the proxy networks plus disjoint, non-adjacent /24s (so that interval
/// merging cannot collapse them), in a fixed shuffled order.
fn trusted_cidrs(n: usize) -> Vec<String> {
    let mut nets = proxy_nets();
    for i in 0..n - nets.len() {
        nets.push(format!("100.{}.{}.0/24", 64 + i / 128, (i % 128) * 2));
    }
    // Fisher–Yates with a fixed LCG, so the proxy networks are not first in real-ip's list.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in (1..nets.len()).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        nets.swap(i, (state >> 33) as usize % (i + 1));
    }
    nets
}

struct Case {
    name: &'static str,
    header: &'static str,
    value: &'static str,
    cidrs: usize,
    rightmost: IpAddr,
}

fn cases() -> Vec<Case> {
    let chain4 = "203.0.113.7, 10.1.0.1, 10.2.0.1, 10.3.0.1";
    vec![
        Case {
            name: "XFF 1 entry, 16 CIDRs",
            header: "x-forwarded-for",
            value: "203.0.113.7",
            cidrs: 16,
            rightmost: IpAddr::from(CLIENT),
        },
        Case {
            name: "XFF 4 entries, 16 CIDRs",
            header: "x-forwarded-for",
            value: chain4,
            cidrs: 16,
            rightmost: IpAddr::from([10, 3, 0, 1]),
        },
        Case {
            name: "XFF 4 entries, 10000 CIDRs",
            header: "x-forwarded-for",
            value: chain4,
            cidrs: 10_000,
            rightmost: IpAddr::from([10, 3, 0, 1]),
        },
        Case {
            name: "Forwarded 4 elements, 16 CIDRs",
            header: "forwarded",
            value: "for=203.0.113.7;proto=https, for=10.1.0.1, for=\"10.2.0.1:8080\", for=10.3.0.1;by=10.9.0.1",
            cidrs: 16,
            rightmost: IpAddr::from([10, 3, 0, 1]),
        },
    ]
}

/// Polls a future that completes without waiting (the axum extractors do).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future did not complete at once"),
    }
}

/// The innermost service: hands the request back.
#[derive(Clone, Copy)]
struct Echo;

impl Service<Request<()>> for Echo {
    type Response = Request<()>;
    type Error = Infallible;
    type Future = Ready<Result<Request<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        ready(Ok(request))
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("layer");
    let peer = TransportPeer::socket(PEER);
    let client = IpAddr::from(CLIENT);
    for case in cases() {
        let cidrs = trusted_cidrs(case.cidrs);
        let trusted = TrustedProxies::parse_list(&cidrs).expect("valid CIDRs");
        let nets: Vec<real_ip::IpNet> = cidrs.iter().map(|c| c.parse().unwrap()).collect();
        let layer = if case.header == "forwarded" {
            RealIpLayer::forwarded(trusted)
        } else {
            RealIpLayer::x_forwarded_for(trusted)
        }
        .recursive(true);
        let mut headers = HeaderMap::new();
        headers.insert(case.header, HeaderValue::from_static(case.value));
        let request = || {
            let mut r = Request::new(());
            *r.headers_mut() = headers.clone();
            r.extensions_mut().insert(peer.clone());
            r
        };
        let (mut parts, ()) = request().into_parts();

        // Same input, checked answers, before timing anything.
        let ours = |h: &HeaderMap| layer.resolve(h, Some(&peer)).client().map(|c| c.ip());
        assert_eq!(ours(&headers), Some(client), "{}: ours", case.name);
        assert_eq!(
            real_ip::real_ip(&headers, PEER.ip(), &nets),
            Some(client),
            "{}: real-ip",
            case.name
        );
        let mut service = RealIp::new(Echo, layer.clone());
        let via_service = now(service.call(request())).unwrap();
        assert_eq!(
            via_service
                .extensions()
                .get::<realip_core::ClientAddr>()
                .map(|c| c.ip()),
            Some(client)
        );
        let forwarded = case.header == "forwarded";
        let client_ip_peer = |h: &HeaderMap| {
            if forwarded {
                client_ip::rightmost_forwarded(h)
            } else {
                client_ip::rightmost_x_forwarded_for(h)
            }
        };
        assert_eq!(client_ip_peer(&headers), Ok(case.rightmost));
        let axum_peer = |p: &mut http::request::Parts| {
            if forwarded {
                now(axum_client_ip::RightmostForwarded::from_request_parts(
                    p,
                    &(),
                ))
                .map(|ip| ip.0)
                .ok()
            } else {
                now(axum_client_ip::RightmostXForwardedFor::from_request_parts(
                    p,
                    &(),
                ))
                .map(|ip| ip.0)
                .ok()
            }
        };
        assert_eq!(axum_peer(&mut parts), Some(case.rightmost));

        group.bench_function(BenchmarkId::new("realip resolve", case.name), |b| {
            b.iter(|| ours(black_box(&headers)));
        });
        group.bench_function(
            BenchmarkId::new("realip RealIp service call", case.name),
            |b| {
                b.iter_batched(
                    request,
                    |r| now(service.call(black_box(r))),
                    BatchSize::SmallInput,
                );
            },
        );
        group.bench_function(BenchmarkId::new("real-ip (CIDR walk)", case.name), |b| {
            b.iter(|| real_ip::real_ip(black_box(&headers), PEER.ip(), &nets));
        });
        group.bench_function(
            BenchmarkId::new("client-ip (rightmost only)", case.name),
            |b| {
                b.iter(|| client_ip_peer(black_box(&headers)));
            },
        );
        group.bench_function(
            BenchmarkId::new("axum-client-ip (rightmost only)", case.name),
            |b| {
                b.iter(|| axum_peer(black_box(&mut parts)));
            },
        );
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
