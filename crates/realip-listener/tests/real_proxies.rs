//! The listener against headers written by real proxies: HAProxy (`send-proxy`,
//! `send-proxy-v2` with CRC32C, unique id and the SSL/authority TLVs of a TLS frontend, and
//! LOCAL health checks with CRC32C) and NGINX (`proxy_protocol on` in a `stream` server).
//!
//! The client binds its source to `127.77.0.101`, an address no proxy uses, so the test
//! can tell the real client from the proxy. `haproxy` and `nginx` (with the stream module)
//! must be installed: the project's CI installs them, and a missing binary fails the test.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use realip_core::AddrSource;
use realip_listener::{Command, ProxiedAddr, ProxiedStream, ProxyListener, ProxyVersion};
use support::{client_config, localhost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::Child;

const CLIENT_IP: [u8; 4] = [127, 77, 0, 101];
const PROXY_IP: [u8; 4] = [127, 77, 0, 11];
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
const READY: Duration = Duration::from_secs(15);

/// A per-test directory for configs and logs.
fn work_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("realip-b-proxies-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free port on the proxy address (the socket is closed again before the proxy binds it).
fn free_port() -> u16 {
    std::net::TcpListener::bind(SocketAddr::from((PROXY_IP, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running proxy, killed when dropped; its log is printed if the test fails.
struct Proxy {
    child: Child,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            if let Ok(log) = std::fs::read_to_string(&self.log) {
                eprintln!("---- {} ----\n{log}", self.log.display());
            }
        }
    }
}

fn spawn(program: &str, args: &[&str], dir: &Path) -> Proxy {
    let log = dir.join(format!("{program}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| panic!("{program} could not be started (is it installed?): {err}"));
    Proxy { child, log }
}

fn haproxy(dir: &Path, config: &str) -> Proxy {
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    spawn("haproxy", &["-f", path.to_str().unwrap(), "-db"], dir)
}

fn nginx(dir: &Path, config: &str) -> Proxy {
    let path = dir.join("nginx.conf");
    std::fs::write(&path, config).unwrap();
    spawn(
        "nginx",
        &[
            "-p",
            dir.to_str().unwrap(),
            "-c",
            path.to_str().unwrap(),
            "-e",
            "stderr",
            "-g",
            "daemon off; master_process off;",
        ],
        dir,
    )
}

/// Connects from [`CLIENT_IP`] to `target`, retrying until the proxy listens.
async fn connect_from_client(target: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + READY;
    loop {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((CLIENT_IP, 0))).unwrap();
        match socket.connect(target).await {
            Ok(stream) => return stream,
            Err(err) if Instant::now() < deadline => {
                let _ = err;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => panic!("proxy at {target} did not accept connections: {err}"),
        }
    }
}

/// Accepts until the connection whose real client is `client` arrives (earlier connections,
/// such as health checks, are skipped), then returns it after checking that a PROXY header
/// of `version` from the proxy named the client.
async fn accept_client(
    listener: &mut ProxyListener,
    client: SocketAddr,
    version: ProxyVersion,
) -> (ProxiedStream<TcpStream>, ProxiedAddr) {
    let deadline = tokio::time::Instant::now() + READY;
    loop {
        let (stream, addr) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .unwrap_or_else(|_| panic!("no connection from {client} through the proxy"));
        if addr.client().and_then(|c| c.socket_addr()) == Some(client) {
            assert_client(&addr, client, version);
            return (stream, addr);
        }
    }
}

/// Sends `ping` through the proxy and checks it arrives, and that the reply comes back.
async fn roundtrip(
    client: &mut (impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin),
    server: &mut ProxiedStream<TcpStream>,
) {
    client.write_all(b"ping").await.unwrap();
    client.flush().await.unwrap();
    let mut ping = [0; 4];
    tokio::time::timeout(READY, server.read_exact(&mut ping))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&ping, b"ping");
    server.write_all(b"pong").await.unwrap();
    let mut pong = [0; 4];
    tokio::time::timeout(READY, client.read_exact(&mut pong))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&pong, b"pong");
}

fn haproxy_config(frontend_bind: &str, server_options: &str, backend: SocketAddr) -> String {
    format!(
        "global\n    maxconn 100\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend fe\n    bind {frontend_bind}\n    unique-id-format %ci:%cp-%Ts\n    default_backend be\n\n\
         backend be\n    server app {backend} {server_options}\n"
    )
}

/// A listener with the default policy, and HAProxy in front of it with a frontend on a free
/// port of [`PROXY_IP`] (plus `bind_options`) whose server line has `server_options`; returns
/// the proxy, the listener and the frontend address.
async fn behind_haproxy(
    dir: &Path,
    bind_options: &str,
    server_options: &str,
) -> (Proxy, ProxyListener, SocketAddr) {
    let (listener, backend_addr) = backend().await;
    let front = SocketAddr::from((PROXY_IP, free_port()));
    let config = haproxy_config(
        &format!("{front}{bind_options}"),
        server_options,
        backend_addr,
    );
    (haproxy(dir, &config), listener, front)
}

async fn backend() -> (ProxyListener, SocketAddr) {
    let listener = ProxyListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// A client connects through the proxy at `front`, which sends a v1 header naming the client
/// and `front`; then data flows both ways.
async fn assert_v1_client_through(listener: &mut ProxyListener, front: SocketAddr) {
    let mut client = connect_from_client(front).await;
    let client_addr = client.local_addr().unwrap();
    let (mut stream, addr) = accept_client(listener, client_addr, ProxyVersion::V1).await;
    assert_eq!(addr.proxy_info().unwrap().destination_inet(), Some(front));
    roundtrip(&mut client, &mut stream).await;
}

fn assert_client(addr: &ProxiedAddr, client: SocketAddr, version: ProxyVersion) {
    let real = addr.client().unwrap();
    assert_eq!(real.socket_addr(), Some(client));
    assert_eq!(real.source(), &AddrSource::ProxyProtocol);
    assert_eq!(addr.socket_peer().ip(), Some(IpAddr::from([127, 0, 0, 1])));
    let info = addr.proxy_info().unwrap();
    assert_eq!(info.version(), version);
    assert_eq!(info.command(), Command::Proxy);
}

#[tokio::test]
async fn haproxy_send_proxy_v1() {
    let dir = work_dir("haproxy-v1");
    let (_haproxy, mut listener, front) = behind_haproxy(&dir, "", "send-proxy").await;

    assert_v1_client_through(&mut listener, front).await;
}

#[tokio::test]
async fn haproxy_send_proxy_v2_with_crc32c_and_unique_id() {
    let dir = work_dir("haproxy-v2");
    let (_haproxy, mut listener, front) =
        behind_haproxy(&dir, "", "send-proxy-v2 proxy-v2-options crc32c,unique-id").await;

    let mut client = connect_from_client(front).await;
    let client_addr = client.local_addr().unwrap();
    let (mut stream, addr) = accept_client(&mut listener, client_addr, ProxyVersion::V2).await;
    let tlvs = addr.proxy_info().unwrap().tlvs();
    // HAProxy computed this checksum; the listener verified it.
    assert!(tlvs.crc32c().is_some(), "{tlvs:?}");
    let unique_id = String::from_utf8(tlvs.unique_id().expect("unique id TLV").to_vec()).unwrap();
    assert!(
        unique_id.contains(&format!("127.77.0.101:{}", client_addr.port())),
        "{unique_id}"
    );
    roundtrip(&mut client, &mut stream).await;
}

#[tokio::test]
async fn haproxy_tls_frontend_sends_ssl_and_authority_tlvs() {
    let dir = work_dir("haproxy-ssl");
    // HAProxy terminates TLS with a certificate for localhost.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = dir.join("localhost.pem");
    std::fs::write(
        &pem,
        format!(
            "{}{}",
            certified.cert.pem(),
            certified.signing_key.serialize_pem()
        ),
    )
    .unwrap();
    let (_haproxy, mut listener, front) = behind_haproxy(
        &dir,
        &format!(" ssl crt {}", pem.display()),
        "send-proxy-v2 proxy-v2-options ssl,ssl-cipher,cert-sig,cert-key,authority,crc32c",
    )
    .await;

    // The client trusts exactly that certificate.
    let client_config = client_config(certified.cert.der().clone());
    let tcp = connect_from_client(front).await;
    let client_addr = tcp.local_addr().unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(client_config)
        .connect(localhost(), tcp)
        .await
        .expect("TLS handshake with HAProxy");

    let (mut stream, addr) = accept_client(&mut listener, client_addr, ProxyVersion::V2).await;
    let tlvs = addr.proxy_info().unwrap().tlvs();
    assert_eq!(tlvs.authority(), Some("localhost"), "{tlvs:?}");
    assert!(tlvs.crc32c().is_some());
    let ssl = tlvs.ssl().expect("SSL TLV");
    assert!(ssl.is_ssl(), "{ssl:?}");
    assert!(!ssl.has_client_cert());
    let version = ssl.version().expect("TLS version sub-TLV");
    assert!(version.starts_with("TLSv1."), "{version}");
    assert!(ssl.cipher().is_some_and(|c| !c.is_empty()), "{ssl:?}");
    roundtrip(&mut tls, &mut stream).await;
}

#[tokio::test]
async fn haproxy_health_checks_send_local() {
    let dir = work_dir("haproxy-check");
    let (_haproxy, mut listener, _) = behind_haproxy(
        &dir,
        "",
        "send-proxy-v2 proxy-v2-options crc32c check check-send-proxy inter 200ms",
    )
    .await;

    // The first connection is a health check: a LOCAL header, so the socket peer is used.
    let (_stream, addr) = tokio::time::timeout(READY, listener.accept())
        .await
        .expect("a health check");
    let info = addr.proxy_info().expect("health check header");
    assert_eq!(info.version(), ProxyVersion::V2);
    assert_eq!(info.command(), Command::Local);
    // HAProxy puts a CRC32C TLV on its LOCAL headers; the listener verified it.
    assert!(info.tlvs().crc32c().is_some(), "{info:?}");
    let client = addr.client().unwrap();
    assert_eq!(client.source(), &AddrSource::Socket);
    assert_eq!(Some(client.ip()), addr.socket_peer().ip());
}

#[tokio::test]
async fn nginx_stream_proxy_protocol_v1() {
    let dir = work_dir("nginx");
    assert!(
        Path::new(NGINX_STREAM_MODULE).exists(),
        "{NGINX_STREAM_MODULE} missing (libnginx-mod-stream)"
    );
    let (mut listener, backend_addr) = backend().await;
    let front = SocketAddr::from((PROXY_IP, free_port()));
    let config = format!(
        "load_module {NGINX_STREAM_MODULE};\npid {pid};\nerror_log stderr info;\nevents {{ worker_connections 64; }}\n\
         stream {{\n    server {{\n        listen {front};\n        proxy_pass {backend_addr};\n        proxy_protocol on;\n    }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
    );
    let _nginx = nginx(&dir, &config);

    assert_v1_client_through(&mut listener, front).await;
}

/// A certificate and its PKCS#8 key, PEM encoded together for HAProxy.
fn write_pem(path: &Path, cert: &rcgen::Certificate, key: &rcgen::KeyPair) {
    std::fs::write(path, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
}

/// A client certificate whose subject CN is `cn`, signed by `issuer`.
fn client_cert(
    cn: &str,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    (params.signed_by(&key, issuer).unwrap(), key)
}

/// HAProxy terminates TLS with `verify optional` against a CA, ignoring verification errors
/// so that an unverifiable certificate still gets through, and sends `send-proxy-v2-ssl-cn`:
/// the identity is the CN of a verified certificate only, never of a missing or unverified
/// one.
#[tokio::test]
async fn haproxy_ssl_cn_is_an_identity_only_for_a_verified_client_certificate() {
    use realip_listener::UnverifiedIdentity;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

    let dir = work_dir("haproxy-ssl-cn");
    let server = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let server_pem = dir.join("localhost.pem");
    write_pem(&server_pem, &server.cert, &server.signing_key);

    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "realip test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    // Signed by a CA HAProxy does not know.
    let rogue_ca = rcgen::CertifiedIssuer::self_signed(
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap(),
        rcgen::KeyPair::generate().unwrap(),
    )
    .unwrap();

    let (_haproxy, mut listener, front) = behind_haproxy(
        &dir,
        &format!(
            " ssl crt {} ca-file {} verify optional ca-ignore-err all crt-ignore-err all",
            server_pem.display(),
            ca_pem.display()
        ),
        "send-proxy-v2-ssl-cn",
    )
    .await;

    let trusted_client = client_cert("device-42", &ca);
    let rogue_client = client_cert("admin", &rogue_ca);
    // Whether the client certificate, if any, is signed by the CA HAProxy verifies against.
    let cases = [
        (Some(&trusted_client), true),
        (None, false),
        (Some(&rogue_client), false),
    ];
    for (cert, signed_by_ca) in cases {
        let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        roots.add(server.cert.der().clone()).unwrap();
        let builder = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match cert {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let tcp = connect_from_client(front).await;
        let client_addr = tcp.local_addr().unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(localhost(), tcp)
            .await
            .expect("TLS handshake with HAProxy");

        let (mut stream, addr) = accept_client(&mut listener, client_addr, ProxyVersion::V2).await;
        let tlvs = addr.proxy_info().unwrap().tlvs();
        let identity = tlvs.verified_client_cn();
        let ssl = tlvs.ssl().expect("SSL TLV");
        match (cert, signed_by_ca) {
            (Some(_), true) => assert_eq!(identity, Ok("device-42"), "{ssl:?}"),
            (None, _) => {
                // HAProxy leaves verify at 0 when no certificate was presented.
                assert_eq!(ssl.verify(), 0, "{ssl:?}");
                assert_eq!(
                    identity,
                    Err(UnverifiedIdentity::NoClientCertificate),
                    "{ssl:?}"
                );
            }
            (Some(_), false) => {
                // HAProxy's OpenSSL verify result for an unknown issuer, whatever its number.
                assert!(ssl.has_client_cert(), "{ssl:?}");
                assert_ne!(ssl.verify(), 0, "{ssl:?}");
                assert_eq!(
                    identity,
                    Err(UnverifiedIdentity::NotVerified {
                        verify: ssl.verify()
                    })
                );
                // The CN was sent all the same: reading it directly would have let it in.
                assert_eq!(ssl.client_cn(), Some("admin"));
            }
        }
        roundtrip(&mut tls, &mut stream).await;
    }
}
