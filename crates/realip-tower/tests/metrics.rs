//! The layer's metrics after a scripted mix of believed, rejected and absent headers, read
//! from `metrics-util`'s debugging recorder.

use std::collections::BTreeMap;
use std::convert::Infallible;

use http::Request;
use realip_core::TrustedProxies;
use realip_test_support::metrics::{read, record};
use realip_tower::{PeerAddr, RealIpLayer, metrics as names};
use tower::{Layer, ServiceExt, service_fn};

fn request(peer: PeerAddr, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = Request::new(());
    for (name, value) in headers {
        req.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    req.extensions_mut().insert(peer);
    req
}

fn inet(addr: &str) -> PeerAddr {
    PeerAddr::Inet(addr.parse().unwrap())
}

async fn script() {
    let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
    let lb = || inet("10.0.0.2:41000");
    let cases = [
        // Believed.
        (
            RealIpLayer::x_forwarded_for_recursive(trusted.clone()),
            request(lb(), &[("x-forwarded-for", "203.0.113.7")]),
        ),
        (
            RealIpLayer::x_real_ip(trusted.clone()),
            request(lb(), &[("x-real-ip", "203.0.113.8")]),
        ),
        // A direct client's own header.
        (
            RealIpLayer::x_forwarded_for_recursive(trusted.clone()),
            request(
                inet("192.0.2.1:5000"),
                &[("x-forwarded-for", "198.51.100.1")],
            ),
        ),
        // Not an address.
        (
            RealIpLayer::x_forwarded_for_recursive(trusted.clone()),
            request(lb(), &[("x-forwarded-for", "not-an-ip")]),
        ),
        // A single-value header twice.
        (
            RealIpLayer::x_real_ip(trusted.clone()),
            request(
                lb(),
                &[("x-real-ip", "203.0.113.8"), ("x-real-ip", "198.51.100.9")],
            ),
        ),
        // One entry behind two trusted hops.
        (
            RealIpLayer::trusted_hops(2),
            request(lb(), &[("x-forwarded-for", "203.0.113.7")]),
        ),
        // No header, from a TCP peer and from a Unix-socket peer.
        (
            RealIpLayer::x_forwarded_for_recursive(trusted.clone()),
            request(lb(), &[]),
        ),
        (
            RealIpLayer::x_forwarded_for_recursive(trusted.clone()),
            request(PeerAddr::Unix(None), &[]),
        ),
    ];
    #[cfg(feature = "listener")]
    let cases = cases.into_iter().chain([{
        use realip_core::{AddrSource, ClientAddr};
        let mut req = request(lb(), &[]);
        req.extensions_mut()
            .insert(realip_listener::ProxiedAddr::new(
                Some(ClientAddr::from_socket_addr(
                    "203.0.113.9:5555".parse().unwrap(),
                    AddrSource::ProxyProtocol,
                )),
                lb(),
                None,
                None,
            ));
        (RealIpLayer::x_forwarded_for_recursive(trusted.clone()), req)
    }]);
    for (layer, req) in cases {
        let svc = layer.layer(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(())
        }));
        svc.oneshot(req).await.unwrap();
    }
}

#[test]
fn counts_requests_by_source_and_fallbacks_by_reason() {
    let counts = read(&record(|_| script()));
    let expected: BTreeMap<String, f64> = [
        (names::REQUESTS_TOTAL, "source=x_forwarded_for", 1),
        (names::REQUESTS_TOTAL, "source=x_real_ip", 1),
        (names::REQUESTS_TOTAL, "source=socket", 5),
        (names::REQUESTS_TOTAL, "source=none", 1),
        (names::FALLBACKS_TOTAL, "reason=untrusted_peer", 1),
        (names::FALLBACKS_TOTAL, "reason=malformed_entry", 1),
        (names::FALLBACKS_TOTAL, "reason=multiple_lines", 1),
        (names::FALLBACKS_TOTAL, "reason=too_few_entries", 1),
        (names::FALLBACKS_TOTAL, "reason=no_header", 2),
    ]
    .into_iter()
    .map(|(name, label, n)| (format!("{name}{{{label}}}"), f64::from(n)))
    .collect();
    // Behind the PROXY listener: the PROXY header's address, and one more request without a
    // forwarded header.
    #[cfg(feature = "listener")]
    let expected = {
        let mut expected = expected;
        expected.insert(
            format!("{}{{source=proxy_protocol}}", names::REQUESTS_TOTAL),
            1.0,
        );
        *expected
            .get_mut(&format!("{}{{reason=no_header}}", names::FALLBACKS_TOTAL))
            .unwrap() += 1.0;
        expected
    };
    assert_eq!(counts, expected);
}
