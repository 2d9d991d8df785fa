//! The refresher against a local HTTP server on 127.0.0.1 serving fixture files: a good
//! list is stored, every kind of broken fetch keeps the last good set, a changed list
//! replaces it. The fixtures use documentation ranges (RFC 5737, RFC 3849).
#![cfg(feature = "presets-refresh")]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use realip_core::presets::refresh::{RefreshError, Refresher, Source};
use realip_core::presets::{Preset, PresetError};
use realip_core::{Live, TrustedProxies};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const V4: &str = include_str!("fixtures/list-v4.txt");
const V4_CHANGED: &str = include_str!("fixtures/list-v4-changed.txt");
const V6: &str = include_str!("fixtures/list-v6.txt");
const ERROR_PAGE: &str = include_str!("fixtures/error-page.html");
const AWS: &str = include_str!("fixtures/aws-ip-ranges.json");

/// What the server answers on a path: raw HTTP/1.1 response bytes, or no answer at all.
#[derive(Clone)]
enum Reply {
    Bytes(Vec<u8>),
    Hang,
}

fn ok(body: &str) -> Reply {
    Reply::Bytes(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

fn status(line: &str) -> Reply {
    Reply::Bytes(
        format!("HTTP/1.1 {line}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").into_bytes(),
    )
}

/// A 200 whose body stops halfway through the length it announced.
fn truncated(body: &str) -> Reply {
    let half = &body[..body.len() / 2];
    Reply::Bytes(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{half}",
            body.len()
        )
        .into_bytes(),
    )
}

fn redirect(location: &str) -> Reply {
    Reply::Bytes(
        format!(
            "HTTP/1.1 301 Moved Permanently\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
        .into_bytes(),
    )
}

#[derive(Clone, Default)]
struct Server {
    replies: Arc<Mutex<HashMap<String, Reply>>>,
    addr: Option<SocketAddr>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server {
            addr: Some(listener.local_addr().unwrap()),
            ..Server::default()
        };
        let replies = Arc::clone(&server.replies);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let replies = Arc::clone(&replies);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let request = String::from_utf8_lossy(&request);
                    let path = request.split(' ').nth(1).unwrap_or_default().to_owned();
                    let reply = replies.lock().unwrap().get(&path).cloned();
                    match reply.unwrap_or_else(|| status("404 Not Found")) {
                        Reply::Bytes(bytes) => {
                            let _ = stream.write_all(&bytes).await;
                            let _ = stream.shutdown().await;
                        }
                        Reply::Hang => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        server
    }

    fn serve(&self, path: &str, reply: Reply) {
        self.replies.lock().unwrap().insert(path.to_owned(), reply);
    }

    fn url(&self, path: &str) -> Source {
        Source::url(&format!("http://{}{path}", self.addr.unwrap())).unwrap()
    }
}

fn has(live: &Live<TrustedProxies>, ip: &str) -> bool {
    live.load().contains(ip.parse().unwrap())
}

#[tokio::test]
async fn a_broken_fetch_of_any_kind_keeps_the_last_good_set_and_a_changed_list_replaces_it() {
    let server = Server::start().await;
    server.serve("/v4", ok(V4));
    server.serve("/v6", ok(V6));
    let live = Live::new(TrustedProxies::new());
    let refresher = Refresher::new(Preset::Cloudflare, live.clone())
        .sources([server.url("/v4"), server.url("/v6")]);

    // Both lists, joined.
    assert_eq!(refresher.refresh().await.unwrap(), 6);
    assert!(has(&live, "192.0.2.1") && has(&live, "198.51.100.7") && has(&live, "2001:db8:2::1"));
    assert!(!has(&live, "203.0.113.1"));
    let good = live.load_full();

    let broken = [
        ("500", status("500 Internal Server Error")),
        ("404", status("404 Not Found")),
        ("empty", ok("")),
        ("truncated", truncated(V4)),
        ("error page", ok(ERROR_PAGE)),
        ("halved", ok("192.0.2.0/26\n")),
    ];
    for (what, reply) in broken {
        server.serve("/v4", reply);
        server.serve("/v6", ok(""));
        let err = refresher.refresh().await.unwrap_err();
        let expected = match what {
            "500" | "404" => matches!(err, RefreshError::Status { .. }),
            "empty" => matches!(err, RefreshError::Invalid(PresetError::Empty { .. })),
            "truncated" => matches!(err, RefreshError::Http { .. }),
            "error page" => matches!(err, RefreshError::Invalid(PresetError::Entry { .. })),
            "halved" => matches!(
                err,
                RefreshError::Invalid(PresetError::Shrunk {
                    before: 6,
                    after: 1
                })
            ),
            _ => unreachable!(),
        };
        assert!(expected, "{what}: {err}");
        assert_eq!(*live.load(), *good, "{what}: the last good set stays");
    }

    server.serve("/v4", ok(V4_CHANGED));
    server.serve("/v6", ok(V6));
    assert_eq!(refresher.refresh().await.unwrap(), 7);
    assert!(has(&live, "203.0.113.1") && has(&live, "192.0.2.1"));
}

#[tokio::test]
async fn redirects_are_followed_and_a_silent_server_times_out() {
    let server = Server::start().await;
    server.serve("/ips-v4", redirect("/ips-v4/"));
    server.serve("/ips-v4/", ok(V4));
    server.serve("/loop", redirect("/loop"));
    server.serve("/hang", Reply::Hang);
    let live = Live::new(TrustedProxies::new());
    let refresher =
        Refresher::new(Preset::CloudflareV4, live.clone()).sources([server.url("/ips-v4")]);
    assert_eq!(refresher.refresh().await.unwrap(), 4);
    assert!(has(&live, "198.51.100.1"));

    let looping = refresher.clone().sources([server.url("/loop")]);
    assert!(matches!(
        looping.refresh().await,
        Err(RefreshError::TooLarge { .. })
    ));
    let silent = refresher
        .clone()
        .sources([server.url("/hang")])
        .timeout(Duration::from_millis(300));
    let started = Instant::now();
    assert!(matches!(
        silent.refresh().await,
        Err(RefreshError::Timeout(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(has(&live, "198.51.100.1"));
}

#[tokio::test]
async fn aws_keeps_the_origin_facing_service_only() {
    let server = Server::start().await;
    server.serve("/ip-ranges.json", ok(AWS));
    let live = Live::new(TrustedProxies::new());
    let refresher = Refresher::new(Preset::AwsCloudFrontOriginFacing, live.clone())
        .sources([server.url("/ip-ranges.json")]);
    assert_eq!(refresher.refresh().await.unwrap(), 2);
    assert!(has(&live, "192.0.2.1") && has(&live, "2001:db8:1::1"));
    // CloudFront's edge, EC2 and the rest of AWS are not CloudFront's origin-facing proxies.
    assert!(!has(&live, "198.51.100.1") && !has(&live, "203.0.113.1"));
    assert!(!has(&live, "2001:db8:2::1"));
}

#[tokio::test]
async fn a_file_source_is_read_and_a_missing_file_keeps_the_set() {
    let path = std::env::temp_dir().join(format!("realip-refresh-{}.txt", std::process::id()));
    std::fs::write(&path, V4).unwrap();
    let live = Live::new(Preset::GoogleLoadBalancers.snapshot());
    // Google publishes no list to fetch: without a source, nothing to do.
    let refresher = Refresher::new(Preset::GoogleLoadBalancers, live.clone());
    assert!(matches!(
        refresher.refresh().await,
        Err(RefreshError::NoSource { .. })
    ));
    let refresher = refresher.sources([Source::file(&path)]);
    assert_eq!(refresher.refresh().await.unwrap(), 4);
    assert!(has(&live, "192.0.2.1"));
    std::fs::remove_file(&path).unwrap();
    assert!(matches!(
        refresher.refresh().await,
        Err(RefreshError::Io { .. })
    ));
    assert!(has(&live, "192.0.2.1"));
}

#[tokio::test]
async fn the_running_refresher_swaps_in_changes_and_rides_out_failures() {
    let server = Server::start().await;
    server.serve("/v4", ok(V4));
    let live = Live::new(TrustedProxies::new());
    let task = Refresher::new(Preset::CloudflareV4, live.clone())
        .sources([server.url("/v4")])
        .interval(Duration::from_millis(20))
        .spawn();
    let eventually = |ip: &'static str, live: Live<TrustedProxies>| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !has(&live, ip) {
            assert!(Instant::now() < deadline, "{ip} never trusted");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    eventually("192.0.2.1", live.clone()).await;
    server.serve("/v4", status("503 Service Unavailable"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        live.load().networks().len(),
        4,
        "kept through failed refreshes"
    );
    server.serve("/v4", ok(V4_CHANGED));
    eventually("203.0.113.1", live.clone()).await;
    task.abort();
}
