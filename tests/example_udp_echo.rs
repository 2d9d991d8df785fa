//! The `udp_echo` example's documented contract, driven as a separate process.
#![cfg(feature = "udp")]

mod e2e;

use std::net::SocketAddr;
use std::time::Duration;

use realip::listener::ProxyHeader;
use realip::listener::udp::SppHeader;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UdpSocket;
use tokio::process::Child;
use tokio::sync::mpsc;

struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: mpsc::UnboundedReceiver<String>,
}

impl Server {
    async fn start(args: &[&str]) -> Self {
        let (mut child, addr) = e2e::start_example("udp_echo", "udp", args, true).await;
        let (tx, stderr) = mpsc::unbounded_channel();
        let mut errors = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            addr,
            stderr,
        }
    }

    /// Waits for a stderr line that contains every one of `parts`.
    async fn logged(&mut self, parts: &[&str]) -> String {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let line = self.stderr.recv().await.expect("stderr closed");
                if parts.iter().all(|p| line.contains(p)) {
                    return line;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no stderr line with {parts:?}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn reply(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut buf))
        .await
        .expect("no reply within 5 s")
        .unwrap();
    buf.truncate(len);
    buf
}

fn with_header(header: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    [header, payload.to_vec()].concat()
}

#[tokio::test]
async fn v2_flow_by_default_answers_every_datagram_of_the_flow_with_the_client() {
    let server = Server::start(&[]).await;
    let proxy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let header = ProxyHeader::v2_datagram("192.0.2.1:5000".parse().unwrap(), server.addr);
    proxy
        .send_to(&with_header(header.to_bytes(), b"hello"), server.addr)
        .await
        .unwrap();
    assert_eq!(reply(&proxy).await, b"peer=192.0.2.1:5000\nhello");
    proxy.send_to(b"\0binary\xff", server.addr).await.unwrap();
    assert_eq!(reply(&proxy).await, b"peer=192.0.2.1:5000\n\0binary\xff");
}

#[tokio::test]
async fn spp_replies_carry_the_header_back() {
    let server = Server::start(&["--format", "spp"]).await;
    let proxy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let header = SppHeader::new(
        "[2001:db8::5]:7000".parse().unwrap(),
        "198.51.100.1:53".parse().unwrap(),
    );
    proxy
        .send_to(&with_header(header.to_bytes().to_vec(), b"q"), server.addr)
        .await
        .unwrap();
    let answer = reply(&proxy).await;
    let (back, payload) = SppHeader::parse(&answer).unwrap();
    assert_eq!(back, header);
    assert_eq!(payload, b"peer=[2001:db8::5]:7000\nq");
}

#[tokio::test]
async fn v2_datagram_drops_a_datagram_without_header_and_logs_why() {
    let mut server = Server::start(&["--format", "v2-datagram"]).await;
    let proxy = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    proxy.send_to(b"bare", server.addr).await.unwrap();
    let line = server.logged(&["datagram dropped", "missing"]).await;
    assert!(line.contains("WARN"), "{line}");
    let header = ProxyHeader::v2_datagram("[2001:db8::9]:9".parse().unwrap(), server.addr);
    proxy
        .send_to(&with_header(header.to_bytes(), b"x"), server.addr)
        .await
        .unwrap();
    // The first answer is this one's: the bare datagram got none.
    assert_eq!(reply(&proxy).await, b"peer=[2001:db8::9]:9\nx");
}

#[tokio::test]
async fn untrusted_sources_cannot_send_a_header_and_are_answered_as_themselves() {
    let mut server = Server::start(&["--trusted", "127.0.0.1/32"]).await;
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let forged = ProxyHeader::v2_datagram("203.0.113.1:1".parse().unwrap(), server.addr);
    other
        .send_to(&with_header(forged.to_bytes(), b"forged"), server.addr)
        .await
        .unwrap();
    server.logged(&["datagram dropped", "forbidden"]).await;
    other.send_to(b"plain", server.addr).await.unwrap();
    let expected = format!("peer={}\nplain", other.local_addr().unwrap());
    assert_eq!(reply(&other).await, expected.as_bytes());
}
