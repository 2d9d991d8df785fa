//! Table tests for the forwarded-headers items of the correctness reference.

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName};
use realip_core::{AddrSource, TrustedProxies};
use realip_tower::{Fallback, Outcome, PeerAddr, PortSource, RealIpLayer, Resolution, StopReason};

fn trusted(s: &str) -> TrustedProxies {
    s.parse().unwrap()
}

fn peer(s: &str) -> PeerAddr {
    PeerAddr::Inet(s.parse::<SocketAddr>().unwrap())
}

fn headers(lines: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in lines {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

fn xff(lines: &[&str]) -> HeaderMap {
    headers(
        &lines
            .iter()
            .map(|l| ("X-Forwarded-For", *l))
            .collect::<Vec<_>>(),
    )
}

/// The client as `ip` or `ip:port`, plus its source label.
fn client(res: &Resolution) -> (String, String) {
    let c = res.client().expect("a client address");
    (c.to_string(), c.source().as_str().to_owned())
}

fn ip_of(res: &Resolution) -> String {
    res.client().expect("a client address").ip().to_string()
}

const PROXY: &str = "10.0.0.2:41000";

// 1. The leftmost entry is attacker-controlled; trust comes from the right.
#[test]
fn item01_leftmost_entry_is_not_trusted() {
    let layer = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8"));
    let res = layer.resolve(&xff(&["6.6.6.6, 203.0.113.7"]), Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "203.0.113.7");
    let layer = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    let res = layer.resolve(
        &xff(&["6.6.6.6, 203.0.113.7, 10.0.0.1"]),
        Some(&peer(PROXY)),
    );
    assert_eq!(ip_of(&res), "203.0.113.7");
}

// 2. Headers only from trusted peers; IPv4-mapped peers match IPv4 ranges.
#[test]
fn item02_headers_only_from_trusted_peers() {
    let layer = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8"));
    let forged = xff(&["1.2.3.4"]);
    let res = layer.resolve(&forged, Some(&peer("198.51.100.9:5000")));
    assert_eq!(client(&res), ("198.51.100.9:5000".into(), "socket".into()));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::UntrustedPeer));

    let mapped = peer("[::ffff:10.1.2.3]:5000");
    let res = layer.resolve(&forged, Some(&mapped));
    assert_eq!(client(&res), ("1.2.3.4".into(), "x-forwarded-for".into()));

    // Unix peers are trusted only when the set says so.
    let unix = PeerAddr::Unix(None);
    let res = layer.resolve(&forged, Some(&unix));
    assert_eq!(res.client(), None);
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::UntrustedPeer));
    let res =
        RealIpLayer::x_forwarded_for(TrustedProxies::loopback()).resolve(&forged, Some(&unix));
    assert_eq!(ip_of(&res), "1.2.3.4");

    // No peer known: headers are not believed, and no address is invented.
    let res = layer.resolve(&forged, None);
    assert_eq!(res.client(), None);
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::NoTransportPeer));
    let res = layer
        .clone()
        .trust_headers_unconditionally()
        .resolve(&forged, None);
    assert_eq!(ip_of(&res), "1.2.3.4");
    let res = layer
        .trust_headers_unconditionally()
        .resolve(&forged, Some(&peer("198.51.100.9:5000")));
    assert_eq!(ip_of(&res), "1.2.3.4");
}

// 3. All header lines are combined in order.
#[test]
fn item03_all_lines_combined_in_order() {
    let layer = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    // A first-line-only reader would return the forged 6.6.6.6.
    let lines = xff(&["6.6.6.6", "203.0.113.7, 10.0.0.1", "10.0.0.3"]);
    let res = layer.resolve(&lines, Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "203.0.113.7");
    // HAProxy `option forwardfor` adds its own line after the client's.
    let res = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8"))
        .resolve(&xff(&["6.6.6.6", "203.0.113.7"]), Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "203.0.113.7");
    // A last-line-only reader would miss the chain; here the last line is all trusted.
    let res = layer.resolve(&xff(&["203.0.113.7", "10.0.0.1"]), Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "203.0.113.7");
}

// 4. Split on commas, trim, tolerate empty entries.
#[test]
fn item04_splitting_and_trimming() {
    let layer = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    for value in [
        "203.0.113.7,10.0.0.1",
        "203.0.113.7, 10.0.0.1",
        "203.0.113.7 ,10.0.0.1 ",
        "203.0.113.7,,10.0.0.1",
        ",203.0.113.7, ,10.0.0.1,",
        "  203.0.113.7\t,\t10.0.0.1",
    ] {
        let res = layer.resolve(&xff(&[value]), Some(&peer(PROXY)));
        assert_eq!(ip_of(&res), "203.0.113.7", "{value:?}");
    }
    // Only empty entries: as if absent.
    let res = layer.resolve(&xff(&[" , ,"]), Some(&peer(PROXY)));
    assert_eq!(client(&res), (PROXY.into(), "socket".into()));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::NoHeader));
}

// 5. Entry forms; zones stripped; never a non-IP.
#[test]
fn item05_entry_forms() {
    let layer = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8")).without_port_header();
    let cases = [
        ("1.2.3.4", "1.2.3.4"),
        ("1.2.3.4:5678", "1.2.3.4:5678"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25]:8080", "[fe80::1]:8080"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
    ];
    for (entry, want) in cases {
        let res = layer.resolve(&xff(&[entry]), Some(&peer(PROXY)));
        assert_eq!(client(&res).0, want, "{entry}");
        assert_eq!(client(&res).1, "x-forwarded-for");
    }
    for bad in [
        "unknown",
        "example.com",
        "1.2.3.4:99999",
        "1.2.3",
        "[::1",
        "_hidden",
        "1.2.3.4/32",
    ] {
        let res = layer.resolve(&xff(&[bad]), Some(&peer(PROXY)));
        assert_eq!(client(&res), (PROXY.into(), "socket".into()), "{bad}");
        assert_eq!(
            res.outcome(),
            &Outcome::Fallback(Fallback::Invalid(StopReason::Malformed)),
            "{bad}"
        );
    }
}

// 6. Recursive walk and non-recursive rightmost.
#[test]
fn item06_recursive_and_rightmost() {
    let set = trusted("10.0.0.0/8, 192.168.0.0/16");
    let chain = xff(&["203.0.113.7, 192.168.1.1, 10.0.0.1"]);
    let flat = RealIpLayer::x_forwarded_for(set.clone());
    assert_eq!(ip_of(&flat.resolve(&chain, Some(&peer(PROXY)))), "10.0.0.1");
    let rec = RealIpLayer::x_forwarded_for_recursive(set);
    let res = rec.resolve(&chain, Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "203.0.113.7");
    match res.outcome() {
        Outcome::Header(choice) => {
            assert_eq!(choice.position_from_right(), 2);
            assert_eq!(choice.position_from_left(), 0);
            assert_eq!(choice.entries(), 3);
            assert_eq!(choice.stopped_by(), None);
        }
        other => panic!("{other:?}"),
    }
    // Every entry trusted: the leftmost, as NGINX does.
    let res = rec.resolve(
        &xff(&["10.9.9.9, 192.168.1.1, 10.0.0.1"]),
        Some(&peer(PROXY)),
    );
    assert_eq!(ip_of(&res), "10.9.9.9");
    // The first untrusted one wins even with more untrusted entries to its left.
    let res = rec.resolve(&xff(&["1.1.1.1, 2.2.2.2, 10.0.0.1"]), Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "2.2.2.2");
}

// 7. Fail closed: an unparsable entry stops the walk; the last good address is kept.
#[test]
fn item07_fail_closed() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    let res = rec.resolve(&xff(&["203.0.113.66, evil, 10.0.0.5"]), Some(&peer(PROXY)));
    assert_eq!(ip_of(&res), "10.0.0.5");
    match res.outcome() {
        Outcome::Header(choice) => assert_eq!(choice.stopped_by(), Some(StopReason::Malformed)),
        other => panic!("{other:?}"),
    }
    // Bad entry first: the transport peer.
    let res = rec.resolve(
        &xff(&["203.0.113.66, 10.0.0.5:notaport"]),
        Some(&peer(PROXY)),
    );
    assert_eq!(client(&res), (PROXY.into(), "socket".into()));
    assert_eq!(
        res.outcome(),
        &Outcome::Fallback(Fallback::Invalid(StopReason::Malformed))
    );
    // Non-UTF-8 (obs-text) entries are malformed too.
    let mut map = HeaderMap::new();
    map.append(
        "x-forwarded-for",
        http::HeaderValue::from_bytes(b"203.0.113.66, \xe9vil, 10.0.0.5").unwrap(),
    );
    assert_eq!(ip_of(&rec.resolve(&map, Some(&peer(PROXY)))), "10.0.0.5");
}

// 8. Hop counting for load balancers with unknown addresses.
#[test]
fn item08_trusted_hops() {
    let chain = xff(&["6.6.6.6, 203.0.113.7, 34.1.1.1"]);
    let anywhere = peer("35.2.2.2:1000");
    let ip = |hops: usize| ip_of(&RealIpLayer::trusted_hops(hops).resolve(&chain, Some(&anywhere)));
    assert_eq!(ip(1), "34.1.1.1");
    assert_eq!(ip(2), "203.0.113.7");
    assert_eq!(ip(3), "6.6.6.6");
    // Fewer entries than hops: the request did not pass every hop, so the header is not
    // believed (Envoy uses the downstream address): the transport peer, never an entry.
    for hops in [4, 5, 50] {
        let res = RealIpLayer::trusted_hops(hops).resolve(&chain, Some(&anywhere));
        assert_eq!(client(&res), ("35.2.2.2:1000".into(), "socket".into()));
        assert_eq!(
            res.outcome(),
            &Outcome::Fallback(Fallback::TooFewHops { entries: 3, hops })
        );
        assert!(Fallback::TooFewHops { entries: 3, hops }.is_rejection());
    }
    let short = RealIpLayer::trusted_hops(3).resolve(&xff(&["1.1.1.1, 2.2.2.2"]), Some(&anywhere));
    assert_eq!(client(&short), ("35.2.2.2:1000".into(), "socket".into()));
    // Empty items are not entries; a malformed entry does not hide that the header is short.
    for short in ["1.1.1.1,, 2.2.2.2,", "bad, 2.2.2.2", "1.1.1.1, bad"] {
        let res = RealIpLayer::trusted_hops(3).resolve(&xff(&[short]), Some(&anywhere));
        assert_eq!(
            res.outcome(),
            &Outcome::Fallback(Fallback::TooFewHops {
                entries: 2,
                hops: 3
            }),
            "{short}"
        );
    }
    // Only empty items: no header.
    let res = RealIpLayer::trusted_hops(2).resolve(&xff(&[" , "]), Some(&anywhere));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::NoHeader));
    // Zero hops ignores the header.
    let res = RealIpLayer::trusted_hops(0).resolve(&chain, Some(&anywhere));
    assert_eq!(client(&res), ("35.2.2.2:1000".into(), "socket".into()));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::HeadersIgnored));
    // Whoever sends it: a header ignored by configuration is not a rejected (warned) one.
    let res = RealIpLayer::trusted_hops(0)
        .trusted_proxies(trusted("35.0.0.0/8"))
        .resolve(&chain, Some(&peer("198.51.100.1:1")));
    assert_eq!(client(&res), ("198.51.100.1:1".into(), "socket".into()));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::HeadersIgnored));
    assert!(!Fallback::HeadersIgnored.is_rejection());
    // A bad entry within the trusted hops stops the count.
    let res =
        RealIpLayer::trusted_hops(3).resolve(&xff(&["6.6.6.6, bad, 34.1.1.1"]), Some(&anywhere));
    assert_eq!(ip_of(&res), "34.1.1.1");
    // The peer can be restricted too.
    let res = RealIpLayer::trusted_hops(2)
        .trusted_proxies(trusted("35.0.0.0/8"))
        .resolve(&chain, Some(&peer("198.51.100.1:1")));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::UntrustedPeer));
}

fn fwd(lines: &[&str]) -> HeaderMap {
    headers(&lines.iter().map(|l| ("Forwarded", *l)).collect::<Vec<_>>())
}

// 9. RFC 7239 Forwarded.
#[test]
fn item09_forwarded() {
    let layer = RealIpLayer::forwarded_recursive(trusted("10.0.0.0/8"));
    let at = Some(peer(PROXY));
    let cases: &[(&[&str], Option<&str>)] = &[
        (&["for=203.0.113.7"], Some("203.0.113.7")),
        (
            &["For=\"[2001:db8:cafe::17]:4711\""],
            Some("[2001:db8:cafe::17]:4711"),
        ),
        (
            &["FOR=203.0.113.7;proto=wss;by=10.0.0.2"],
            Some("203.0.113.7"),
        ),
        (
            &["for=203.0.113.7;proto=ws, for=10.0.0.1"],
            Some("203.0.113.7"),
        ),
        (&["for=203.0.113.7", "for=10.0.0.1"], Some("203.0.113.7")),
        (
            &["for=\"203.0.113.7:_port\", for=10.0.0.1"],
            Some("203.0.113.7"),
        ),
        // Sabotage: a malformed element on the left does not hide the right ones.
        (
            &["for=\"[::1, for=203.0.113.7, for=10.0.0.1"],
            Some("203.0.113.7"),
        ),
        (&["for=1.1.1.1;;;=;, for=203.0.113.7"], Some("203.0.113.7")),
        // unknown / obfuscated stop the walk, never skipped: the last good is kept.
        (
            &["for=6.6.6.6, for=unknown, for=10.0.0.1"],
            Some("10.0.0.1"),
        ),
        (
            &["for=6.6.6.6, for=_hidden, for=10.0.0.1"],
            Some("10.0.0.1"),
        ),
        (
            &["for=6.6.6.6, proto=https, for=10.0.0.1"],
            Some("10.0.0.1"),
        ),
        // The first element examined is not an address: the transport peer.
        (&["for=6.6.6.6, for=unknown"], None),
        (&["for=6.6.6.6, for=\"[::1"], None),
    ];
    for (lines, want) in cases {
        let res = layer.resolve(&fwd(lines), at.as_ref());
        match want {
            Some(want) => {
                assert_eq!(
                    client(&res),
                    ((*want).into(), "forwarded".into()),
                    "{lines:?}"
                )
            }
            None => assert_eq!(client(&res), (PROXY.into(), "socket".into()), "{lines:?}"),
        }
    }
    let res = layer.resolve(
        &fwd(&["for=6.6.6.6, for=_hidden, for=10.0.0.1"]),
        at.as_ref(),
    );
    match res.outcome() {
        Outcome::Header(choice) => {
            assert_eq!(choice.stopped_by(), Some(StopReason::ObfuscatedNode))
        }
        other => panic!("{other:?}"),
    }
    let res = layer.resolve(&fwd(&["for=unknown"]), at.as_ref());
    assert_eq!(
        res.outcome(),
        &Outcome::Fallback(Fallback::Invalid(StopReason::UnknownNode))
    );
    // Non-recursive: the rightmost element.
    let flat = RealIpLayer::forwarded(trusted("10.0.0.0/8"));
    let res = flat.resolve(&fwd(&["for=203.0.113.7, for=10.0.0.1"]), at.as_ref());
    assert_eq!(ip_of(&res), "10.0.0.1");
}

// 10. Single-value headers.
#[test]
fn item10_single_value_headers() {
    let at = Some(peer(PROXY));
    let presets = [
        (RealIpLayer::x_real_ip(trusted("10.0.0.0/8")), "X-Real-IP"),
        (
            RealIpLayer::cf_connecting_ip(trusted("10.0.0.0/8")),
            "CF-Connecting-IP",
        ),
        (
            RealIpLayer::true_client_ip(trusted("10.0.0.0/8")),
            "True-Client-IP",
        ),
        (
            RealIpLayer::fly_client_ip(trusted("10.0.0.0/8")),
            "Fly-Client-IP",
        ),
        (
            RealIpLayer::single_value(
                HeaderName::from_static("x-client-ip"),
                trusted("10.0.0.0/8"),
            ),
            "X-Client-IP",
        ),
    ];
    for (layer, name) in presets {
        let lower = name.to_ascii_lowercase();
        let res = layer.resolve(&headers(&[(name, "203.0.113.7")]), at.as_ref());
        assert_eq!(
            client(&res),
            ("203.0.113.7".into(), lower.clone()),
            "{name}"
        );
        let res = layer.resolve(&headers(&[(name, "[2001:db8::5]:8443")]), at.as_ref());
        assert_eq!(client(&res), ("[2001:db8::5]:8443".into(), lower.clone()));
        // Several lines: an error, not "take the first".
        let res = layer.resolve(
            &headers(&[(name, "1.1.1.1"), (name, "203.0.113.7")]),
            at.as_ref(),
        );
        assert_eq!(client(&res), (PROXY.into(), "socket".into()));
        assert_eq!(
            res.outcome(),
            &Outcome::Fallback(Fallback::MultipleLines(2))
        );
        // A list in a single-value header is malformed.
        let res = layer.resolve(&headers(&[(name, "1.1.1.1, 203.0.113.7")]), at.as_ref());
        assert_eq!(
            res.outcome(),
            &Outcome::Fallback(Fallback::Invalid(StopReason::Malformed))
        );
        // Untrusted peer: ignored.
        let res = layer.resolve(
            &headers(&[(name, "1.1.1.1")]),
            Some(&peer("198.51.100.1:2")),
        );
        assert_eq!(client(&res), ("198.51.100.1:2".into(), "socket".into()));
    }
}

// 11. Ports: in the entry, or from the port header at the same position.
#[test]
fn item11_ports() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    let at = Some(peer(PROXY));
    let h = |xff: &str, xfp: &[&str]| {
        let mut map = headers(&[("x-forwarded-for", xff)]);
        for line in xfp {
            map.append("x-forwarded-port", line.parse().unwrap());
        }
        map
    };
    // Same length: same position.
    let res = rec.resolve(&h("203.0.113.7, 10.0.0.1", &["50000, 40001"]), at.as_ref());
    assert_eq!(client(&res).0, "203.0.113.7:50000");
    assert!(
        matches!(res.outcome(), Outcome::Header(c) if c.port_source() == PortSource::PortHeader)
    );
    // `"$http_x_forwarded_port, $remote_port"` with no incoming header starts with an empty
    // item: positions are counted from the right, so the client's port is still aligned.
    let res = rec.resolve(
        &h("203.0.113.7, 10.0.0.1", &[", 50000, 40001"]),
        at.as_ref(),
    );
    assert_eq!(client(&res).0, "203.0.113.7:50000");
    // Lines combine for the port header too.
    let res = rec.resolve(
        &h("203.0.113.7, 10.0.0.1", &["50000", "40001"]),
        at.as_ref(),
    );
    assert_eq!(client(&res).0, "203.0.113.7:50000");
    // A port in the entry wins.
    let res = rec.resolve(
        &h("203.0.113.7:1234, 10.0.0.1", &["50000, 40001"]),
        at.as_ref(),
    );
    assert_eq!(client(&res).0, "203.0.113.7:1234");
    assert!(matches!(res.outcome(), Outcome::Header(c) if c.port_source() == PortSource::Entry));
    // A port header shorter than the chosen position has no port for it: the single value
    // there belongs to the nearest hop, not to the client.
    let res = rec.resolve(&h("203.0.113.7, 10.0.0.1", &["50000"]), at.as_ref());
    assert_eq!(client(&res).0, "203.0.113.7");
    assert!(matches!(res.outcome(), Outcome::Header(c) if c.port_source() == PortSource::None));
    // A malformed port is no port.
    let res = rec.resolve(&h("203.0.113.7", &["http"]), at.as_ref());
    assert_eq!(client(&res).0, "203.0.113.7");
    // A configured port header name, case-insensitive.
    let custom = rec
        .clone()
        .port_header(HeaderName::from_bytes(b"X-Client-Port").unwrap());
    let mut map = h("203.0.113.7", &["1"]);
    map.append("X-Client-Port", "2222".parse().unwrap());
    assert_eq!(
        client(&custom.resolve(&map, at.as_ref())).0,
        "203.0.113.7:2222"
    );
    // No port header configured.
    let none = rec.without_port_header();
    assert_eq!(client(&none.resolve(&map, at.as_ref())).0, "203.0.113.7");
}

// Configurable header names (EMQX `proxy_address_header`), case-insensitive.
#[test]
fn configurable_header_names() {
    let layer = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8"))
        .header(HeaderName::from_bytes(b"X-Original-Forwarded-For").unwrap());
    let res = layer.resolve(
        &headers(&[
            ("x-original-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "6.6.6.6"),
        ]),
        Some(&peer(PROXY)),
    );
    assert_eq!(
        res.client().unwrap().source(),
        &AddrSource::header("X-Original-Forwarded-For")
    );
    assert_eq!(ip_of(&res), "203.0.113.7");
}

// Leftmost (EMQX compatibility) takes the leftmost entry and port.
#[test]
fn leftmost_strategy() {
    let layer = RealIpLayer::leftmost(trusted("10.0.0.0/8"));
    let map = headers(&[
        ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
        ("x-forwarded-port", "50000, 40001"),
    ]);
    let res = layer.resolve(&map, Some(&peer(PROXY)));
    assert_eq!(client(&res).0, "203.0.113.7:50000");
    match res.outcome() {
        Outcome::Header(c) => assert_eq!((c.position_from_left(), c.position_from_right()), (0, 1)),
        other => panic!("{other:?}"),
    }
    let res = layer.resolve(&xff(&["garbage, 10.0.0.1"]), Some(&peer(PROXY)));
    assert_eq!(client(&res), (PROXY.into(), "socket".into()));
    let res = layer.resolve(&xff(&["1.1.1.1"]), Some(&peer("198.51.100.1:1")));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::UntrustedPeer));
}

// No header: the transport peer, with its own source.
#[test]
fn no_header_means_transport_peer() {
    let layer = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8"));
    let res = layer.resolve(&HeaderMap::new(), Some(&peer(PROXY)));
    assert_eq!(client(&res), (PROXY.into(), "socket".into()));
    assert_eq!(res.outcome(), &Outcome::Fallback(Fallback::NoHeader));
    assert_eq!(layer.resolve(&HeaderMap::new(), None).client(), None);
    // Behind the PROXY listener, the PROXY header's source, labelled as such.
    #[cfg(feature = "listener")]
    {
        use realip_core::ClientAddr;
        let pp: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(realip_listener::ProxiedAddr::new(
                Some(ClientAddr::from_socket_addr(pp, AddrSource::ProxyProtocol)),
                peer(PROXY),
                None,
                None,
            ));
        let res = layer.resolve_request(&req);
        assert_eq!(
            client(&res),
            ("203.0.113.7:5555".into(), "proxy-protocol".into())
        );
        assert_eq!(res.peer(), Some(&PeerAddr::Inet(pp)));
    }
}

// Adversarial inputs beyond the reference items: each must fail closed or decide from the
// entries the trusted proxies wrote.

// `010.0.0.1` is not 10.0.0.1 (nor octal 8.0.0.1): it stops the walk, so it can neither
// pass as a trusted proxy nor be returned.
#[test]
fn octal_looking_and_short_ipv4_forms_stop_the_walk() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    for bad in [
        "010.0.0.1",
        "10.0.0.01",
        "0x0a.0.0.1",
        "10.1",
        "167772161",
        "::ffff:010.0.0.1",
    ] {
        let chain = format!("6.6.6.6, {bad}, 10.0.0.5");
        let res = rec.resolve(&xff(&[&chain]), Some(&peer(PROXY)));
        assert_eq!(client(&res).0, "10.0.0.5", "{bad}");
        match res.outcome() {
            Outcome::Header(c) => assert_eq!(c.stopped_by(), Some(StopReason::Malformed), "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
        let res = rec.resolve(&xff(&[bad]), Some(&peer(PROXY)));
        assert_eq!(
            res.outcome(),
            &Outcome::Fallback(Fallback::Invalid(StopReason::Malformed)),
            "{bad}"
        );
    }
}

// IPv4-mapped IPv6 entries are the IPv4 host: skipped when in an IPv4 trusted range, and
// returned in IPv4 form.
#[test]
fn ipv4_mapped_entries_match_ipv4_trusted_ranges() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    let res = rec.resolve(
        &xff(&["6.6.6.6, 203.0.113.7, ::ffff:10.0.0.1, [::ffff:10.0.0.2]:80"]),
        Some(&peer(PROXY)),
    );
    assert_eq!(client(&res).0, "203.0.113.7");
    let res = rec.resolve(
        &xff(&["[::ffff:203.0.113.7]:5000, 10.0.0.1"]),
        Some(&peer(PROXY)),
    );
    assert_eq!(client(&res).0, "203.0.113.7:5000");
    // A trusted set written in mapped form matches plain IPv4 entries too.
    let mapped = RealIpLayer::x_forwarded_for_recursive(trusted("::ffff:10.0.0.0/104"));
    let res = mapped.resolve(&xff(&["203.0.113.7, 10.0.0.1"]), Some(&peer(PROXY)));
    assert_eq!(client(&res).0, "203.0.113.7");
}

// A line boundary separates entries like a comma: commas at the boundary make no empty
// address, and an address split across two lines is two malformed entries, never joined.
#[test]
fn line_boundaries_separate_entries() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    let res = rec.resolve(&xff(&["203.0.113.9,", ",10.0.0.1"]), Some(&peer(PROXY)));
    assert_eq!(client(&res).0, "203.0.113.9");
    let res = rec.resolve(&xff(&["203.0.113.9", "", "10.0.0.1,"]), Some(&peer(PROXY)));
    assert_eq!(client(&res).0, "203.0.113.9");
    let res = rec.resolve(&xff(&["10.0.0.", "1"]), Some(&peer(PROXY)));
    assert_eq!(
        res.outcome(),
        &Outcome::Fallback(Fallback::Invalid(StopReason::Malformed))
    );
}

// Bad ports and brackets stop the walk; they are never read as a bare address.
#[test]
fn bad_ports_and_brackets_stop_the_walk() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    for bad in [
        "1.2.3.4:",
        "1.2.3.4:-1",
        "1.2.3.4: 80",
        "1.2.3.4:80:80",
        "1.2.3.4:65536",
        "[2001:db8::1",
        "[2001:db8::1]:",
        "[2001:db8::1]:65536",
        "[2001:db8::1]x",
        "2001:db8::1]",
        "[1.2.3.4]:80",
        "fe80::1%",
        "[fe80::1%]:80",
        "[fe80::1%eth0]x",
        "1.2.3.4%eth0",
    ] {
        let chain = format!("6.6.6.6, {bad}, 10.0.0.5");
        let res = rec.resolve(&xff(&[&chain]), Some(&peer(PROXY)));
        assert_eq!(client(&res).0, "10.0.0.5", "{bad}");
    }
}

// Forwarded: escapes, repeated `for` in any case, quoted obfuscated nodes, and a malformed
// middle element with quoted elements on its right.
#[test]
fn forwarded_adversarial_elements() {
    let layer = RealIpLayer::forwarded_recursive(trusted("10.0.0.0/8"));
    let at = Some(peer(PROXY));
    let stops = [
        ("for=203.0.113.7;FoR=6.6.6.6", StopReason::MissingFor),
        ("for=\"\\\"203.0.113.7\"", StopReason::Malformed),
        ("for=\"2001:db8::1:8080\"", StopReason::Malformed),
        ("for=\"2001:db8::abcd\"", StopReason::Malformed),
        ("for=2001:db8::abcd", StopReason::MalformedElement),
        ("for=[2001:db8::1]:8080", StopReason::MalformedElement),
        ("for=\"_hidden\"", StopReason::ObfuscatedNode),
        ("for=\"Unknown\"", StopReason::UnknownNode),
        ("for=\"203.0.113.7", StopReason::MalformedElement),
        ("for=203.0.113.7\"", StopReason::MalformedElement),
        ("for=\"203.0.113.7\"x", StopReason::MalformedElement),
    ];
    for (element, reason) in stops {
        let res = layer.resolve(
            &fwd(&[&format!("for=6.6.6.6, {element}, for=10.0.0.5")]),
            at.as_ref(),
        );
        assert_eq!(client(&res).0, "10.0.0.5", "{element}");
        match res.outcome() {
            Outcome::Header(c) => assert_eq!(c.stopped_by(), Some(reason), "{element}"),
            other => panic!("{element}: {other:?}"),
        }
    }
    // Quoted `,` and `;` on the right of an unclosed quote are read correctly.
    let res = layer.resolve(
        &fwd(&["for=6.6.6.6, for=\"[::1, for=\"[2001:db8::7]:443\";host=\"a,b;c\", for=10.0.0.1"]),
        at.as_ref(),
    );
    assert_eq!(client(&res).0, "[2001:db8::7]:443");
    // A trailing backslash in the client's part cannot escape the proxy's separator.
    let res = layer.resolve(
        &fwd(&["for=\"6.6.6.6\\, for=203.0.113.7, for=10.0.0.1"]),
        at.as_ref(),
    );
    assert_eq!(client(&res).0, "203.0.113.7");
}

// When every proxy appends to both lists, entries a client adds on the left of either list
// leave the port right: positions are counted from the right, the end the proxies write.
#[test]
fn client_added_entries_never_choose_the_port() {
    let rec = RealIpLayer::x_forwarded_for_recursive(trusted("10.0.0.0/8"));
    let at = Some(peer(PROXY));
    let h = |xff: &str, xfp: &str| headers(&[("x-forwarded-for", xff), ("x-forwarded-port", xfp)]);
    // LB 1 and LB 2 appended "203.0.113.7"/"50000" and "10.0.0.1"/"40001".
    let cases = [
        h("203.0.113.7, 10.0.0.1", "1111, 50000, 40001"),
        h("203.0.113.7, 10.0.0.1", "1111, 2222, 50000, 40001"),
        h("203.0.113.7, 10.0.0.1", ", 50000, 40001"),
        h("6.6.6.6, 203.0.113.7, 10.0.0.1", "1111, 50000, 40001"),
        h("6.6.6.6, 203.0.113.7, 10.0.0.1", "50000, 40001"),
        h("6.6.6.6:1111, 203.0.113.7, 10.0.0.1", "50000, 40001"),
        h(
            "6.6.6.6, 7.7.7.7, 203.0.113.7, 10.0.0.1",
            "1111, 50000, 40001",
        ),
    ];
    for map in cases {
        let res = rec.resolve(&map, at.as_ref());
        assert_eq!(client(&res).0, "203.0.113.7:50000", "{map:?}");
    }
}

/// The port is the port header's item at the chosen address's position from the right,
/// empty items counted, over all lines: for every strategy. An empty or missing position is
/// "port unknown", never a neighbour's value.
#[test]
fn ports_come_from_the_chosen_position_for_every_strategy() {
    let at = Some(peer(PROXY));
    let set = || trusted("10.0.0.0/8");
    let port_of = |layer: &RealIpLayer, map: &HeaderMap| {
        let res = layer.resolve(map, at.as_ref());
        let source = match res.outcome() {
            Outcome::Header(c) => c.port_source(),
            other => panic!("{map:?}: {other:?}"),
        };
        (res.client().unwrap().to_string(), source)
    };
    let h = |xff: &[&str], xfp: &[&str]| {
        let mut map = HeaderMap::new();
        for line in xff {
            map.append("x-forwarded-for", line.parse().unwrap());
        }
        for line in xfp {
            map.append("x-forwarded-port", line.parse().unwrap());
        }
        map
    };
    let unknown = |ip: &str| (ip.to_owned(), PortSource::None);
    let known = |addr: &str| (addr.to_owned(), PortSource::PortHeader);

    // Client 127.0.0.101 → LB1 (`X-Forwarded-For $remote_addr`, no port header) → LB2
    // (`$proxy_add_x_forwarded_for`, `"$http_x_forwarded_port, $remote_port"`): 42342 is
    // LB1's port on the LB1 → LB2 hop, and the client's port is unknown.
    let nginx = h(&["127.0.0.101, 127.0.0.13"], &[", 42342"]);
    let lbs = trusted("127.0.0.0/28");
    let from_lb2 = Some(peer("127.0.0.14:8080"));
    for layer in [
        RealIpLayer::x_forwarded_for_recursive(lbs.clone()),
        RealIpLayer::leftmost(lbs.clone()),
        RealIpLayer::trusted_hops(2),
    ] {
        let res = layer.resolve(&nginx, from_lb2.as_ref());
        assert_eq!(client(&res).0, "127.0.0.101", "{:?}", layer.strategy());
    }
    // Non-recursive and one hop choose LB1, whose port is the 42342 at the same position.
    for layer in [
        RealIpLayer::x_forwarded_for(lbs.clone()),
        RealIpLayer::trusted_hops(1),
    ] {
        let res = layer.resolve(&nginx, from_lb2.as_ref());
        assert_eq!(client(&res).0, "127.0.0.13:42342", "{:?}", layer.strategy());
    }

    // Recursive: position 1 from the right in both headers; empty items count.
    let rec = RealIpLayer::x_forwarded_for_recursive(set());
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7, 10.0.0.1"], &["50000, 40001"])),
        known("203.0.113.7:50000")
    );
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7, 10.0.0.1"], &[", 40001"])),
        unknown("203.0.113.7")
    );
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7, 10.0.0.1"], &["50000,,40001"])),
        unknown("203.0.113.7")
    );
    // Empty address items are positions too (NGINX passes over them in the walk).
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7,, 10.0.0.1"], &["50000, 1, 40001"])),
        known("203.0.113.7:50000")
    );
    // Across lines, in order, for both headers.
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7", "10.0.0.1"], &["50000", "40001"])),
        known("203.0.113.7:50000")
    );
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7", "10.0.0.1"], &["", "40001"])),
        unknown("203.0.113.7")
    );
    // Missing position, malformed item: unknown.
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7, 10.0.0.1"], &["40001"])),
        unknown("203.0.113.7")
    );
    assert_eq!(
        port_of(&rec, &h(&["203.0.113.7, 10.0.0.1"], &["http, 40001"])),
        unknown("203.0.113.7")
    );

    // Non-recursive: position 0.
    let nonrec = RealIpLayer::x_forwarded_for(set());
    assert_eq!(
        port_of(&nonrec, &h(&["203.0.113.7, 10.0.0.1"], &["50000, 40001"])),
        known("10.0.0.1:40001")
    );
    assert_eq!(
        port_of(&nonrec, &h(&["203.0.113.7, 10.0.0.1"], &["50000, "])),
        unknown("10.0.0.1")
    );

    // Hops: the hop's position, empty items counted for the port.
    let hops = RealIpLayer::trusted_hops(2);
    assert_eq!(
        port_of(&hops, &h(&["203.0.113.7, 10.0.0.1"], &["50000, 40001"])),
        known("203.0.113.7:50000")
    );
    assert_eq!(
        port_of(&hops, &h(&["203.0.113.7,, 10.0.0.1"], &["50000, , 40001"])),
        known("203.0.113.7:50000")
    );
    assert_eq!(
        port_of(&hops, &h(&["203.0.113.7, 10.0.0.1"], &[", 40001"])),
        unknown("203.0.113.7")
    );

    // Leftmost: the leftmost entry's position from the right.
    let leftmost = RealIpLayer::leftmost(set());
    assert_eq!(
        port_of(
            &leftmost,
            &h(&["203.0.113.7, 10.0.0.1"], &["9, 50000, 40001"])
        ),
        known("203.0.113.7:50000")
    );
    assert_eq!(
        port_of(&leftmost, &h(&["203.0.113.7, 10.0.0.1"], &["40001"])),
        unknown("203.0.113.7")
    );
    assert_eq!(
        port_of(&leftmost, &h(&[" , 203.0.113.7, 10.0.0.1"], &["1, , 2"])),
        unknown("203.0.113.7")
    );

    // Single value: set, not appended, so only a single-valued port header belongs to it.
    let single = RealIpLayer::x_real_ip(set());
    let real = |xfp: &[&str]| {
        let mut map = headers(&[("x-real-ip", "203.0.113.7")]);
        for line in xfp {
            map.append("x-forwarded-port", line.parse().unwrap());
        }
        map
    };
    assert_eq!(
        port_of(&single, &real(&["50000"])),
        known("203.0.113.7:50000")
    );
    assert_eq!(
        port_of(&single, &real(&["50000, 40001"])),
        unknown("203.0.113.7")
    );
    assert_eq!(
        port_of(&single, &real(&[", 40001"])),
        unknown("203.0.113.7")
    );
    assert_eq!(
        port_of(&single, &real(&["50000", "40001"])),
        unknown("203.0.113.7")
    );
    assert_eq!(port_of(&single, &real(&[""])), unknown("203.0.113.7"));

    // Forwarded with a port header configured: elements are positions, empty ones too.
    let forwarded = RealIpLayer::forwarded_recursive(set())
        .port_header(HeaderName::from_static("x-forwarded-port"));
    let mut map = fwd(&["for=203.0.113.7, , for=10.0.0.1"]);
    map.append("x-forwarded-port", "50000, 1, 40001".parse().unwrap());
    assert_eq!(port_of(&forwarded, &map), known("203.0.113.7:50000"));
}

/// Every strategy, given a header shorter than it needs, answers with the transport peer
/// or an address a trusted proxy wrote; never a value from an untrusted client.
#[test]
fn short_headers_never_yield_a_client_written_value() {
    let at = Some(peer(PROXY));
    let set = || trusted("10.0.0.0/8");
    let socket = (PROXY.to_owned(), "socket".to_owned());
    // No entry at all, for each strategy.
    let layers = [
        RealIpLayer::x_forwarded_for(set()),
        RealIpLayer::x_forwarded_for_recursive(set()),
        RealIpLayer::trusted_hops(2),
        RealIpLayer::leftmost(set()),
        RealIpLayer::x_real_ip(set()),
        RealIpLayer::forwarded_recursive(set()),
    ];
    for layer in &layers {
        for empty in ["", " ", ",", " , ,"] {
            let map = headers(&[(layer.header_name().as_str(), empty)]);
            let res = layer.resolve(&map, at.as_ref());
            if layer.strategy() == realip_tower::Strategy::SingleValue && empty.contains(',') {
                // A list in a single-value header is malformed.
                assert!(matches!(
                    res.outcome(),
                    Outcome::Fallback(Fallback::Invalid(_))
                ));
            } else {
                assert_eq!(
                    res.outcome(),
                    &Outcome::Fallback(Fallback::NoHeader),
                    "{:?} {empty:?}",
                    layer.strategy()
                );
            }
            assert_eq!(client(&res), socket, "{:?} {empty:?}", layer.strategy());
        }
    }
    // Recursive walk running out of entries: every one is trusted, so the leftmost was
    // written by a trusted proxy (NGINX gives the same).
    let rec = RealIpLayer::x_forwarded_for_recursive(set());
    let res = rec.resolve(&xff(&["10.0.0.7, 10.0.0.1"]), at.as_ref());
    assert_eq!(ip_of(&res), "10.0.0.7");
    let rec = RealIpLayer::forwarded_recursive(set());
    let res = rec.resolve(&fwd(&["for=10.0.0.7, for=10.0.0.1"]), at.as_ref());
    assert_eq!(ip_of(&res), "10.0.0.7");
    // Hops: fewer entries than hops, the transport peer.
    let res = RealIpLayer::trusted_hops(3).resolve(&xff(&["6.6.6.6, 34.1.1.1"]), at.as_ref());
    assert_eq!(client(&res), socket);
}

/// Zones run to `]` or the end of the entry, whatever their text, wherever addresses are
/// parsed: X-Forwarded-For, single-value headers, Forwarded.
#[test]
fn zones_are_stripped_wherever_addresses_are_parsed() {
    let at = Some(peer(PROXY));
    let windows =
        "[fe80::d806:a55d:eb1b:49cc%vEthernet (vmxnet3 Ethernet Adapter - Virtual Switch)]:64692";
    let want = "[fe80::d806:a55d:eb1b:49cc]:64692";
    let layer = RealIpLayer::x_forwarded_for(trusted("10.0.0.0/8"));
    assert_eq!(
        client(&layer.resolve(&xff(&[windows]), at.as_ref())).0,
        want
    );
    let layer = RealIpLayer::x_real_ip(trusted("10.0.0.0/8"));
    let map = headers(&[("x-real-ip", windows)]);
    assert_eq!(client(&layer.resolve(&map, at.as_ref())).0, want);
    let map = headers(&[("x-real-ip", "fe80::1%Local Area Connection 2")]);
    assert_eq!(client(&layer.resolve(&map, at.as_ref())).0, "fe80::1");
    let layer = RealIpLayer::forwarded(trusted("10.0.0.0/8"));
    let node = format!("for=\"{windows}\";proto=wss");
    assert_eq!(client(&layer.resolve(&fwd(&[&node]), at.as_ref())).0, want);
    // The recursive walk passes a trusted zoned proxy address too.
    let layer = RealIpLayer::x_forwarded_for_recursive(trusted("fe80::/10"));
    let res = layer.resolve(
        &xff(&["203.0.113.7, fe80::2%eth0, [fe80::3%Wi-Fi 2]:80"]),
        Some(&peer("[fe80::4]:1")),
    );
    assert_eq!(ip_of(&res), "203.0.113.7");
}

// Cost is linear in the header size, whatever its shape: a quadratic scan over these
// ~128 KiB values would take minutes, a linear one takes milliseconds.
#[test]
fn huge_headers_resolve_in_linear_time() {
    let big = 128 * 1024;
    let set = trusted("10.0.0.0/8");
    let layers = [
        RealIpLayer::x_forwarded_for_recursive(set.clone()),
        RealIpLayer::forwarded_recursive(set.clone()),
        RealIpLayer::trusted_hops(usize::MAX),
        RealIpLayer::leftmost(set.clone()),
    ];
    let shapes = [
        "10.0.0.1,".repeat(big / 9),
        "for=10.0.0.1, ".repeat(big / 14),
        ",".repeat(big),
        " ".repeat(big),
        "\"".repeat(big),
        "\\\"".repeat(big / 2),
        "\\".repeat(big),
        "for=\"a,".repeat(big / 7),
        "x=\"\\\"\";".repeat(big / 7),
        format!("for=\"{}\"", ";,".repeat(big / 2)),
    ];
    let start = std::time::Instant::now();
    for layer in &layers {
        for shape in &shapes {
            let mut map = headers(&[(layer.header_name().as_str(), shape.as_str())]);
            map.append("x-forwarded-port", shape.parse().unwrap());
            let res = layer.resolve(&map, Some(&peer(PROXY)));
            assert!(res.client().is_some());
        }
    }
    let elapsed = start.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
}
