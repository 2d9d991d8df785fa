//! UDP echo servers (a plain `tokio::net::UdpSocket` and `realip_listener`'s
//! `ProxyUdpSocket` in each format) and a pipelined load client, for datagrams per second.
//!
//! The load is `flows` client sockets, each a proxy flow with its own source port, each
//! keeping `window` datagrams in flight: a reply is answered with the next datagram. Every
//! datagram carries the header its format requires (none for plain; for `v2-flow` only
//! the first datagram of each flow).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use realip_listener::ProxyHeader;
use realip_listener::udp::{ProxyUdpSocket, SppHeader, UdpPolicy};
use tokio::net::UdpSocket;

use crate::header;

/// Which UDP server answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum UdpKind {
    /// `tokio::net::UdpSocket`, no header (the limit).
    Plain,
    /// `ProxyUdpSocket`, PROXY v2 on the first datagram of each flow.
    V2Flow,
    /// `ProxyUdpSocket`, PROXY v2 on every datagram.
    V2Datagram,
    /// `ProxyUdpSocket`, Simple Proxy Protocol on every datagram and reply.
    Spp,
}

impl UdpKind {
    /// Every kind, plain first.
    pub const ALL: [Self; 4] = [Self::Plain, Self::V2Flow, Self::V2Datagram, Self::Spp];

    /// The name used on the command line and in tables.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::V2Flow => "v2-flow",
            Self::V2Datagram => "v2-datagram",
            Self::Spp => "spp",
        }
    }

    const fn policy(self) -> Option<UdpPolicy> {
        match self {
            Self::Plain => None,
            Self::V2Flow => Some(UdpPolicy::V2PerFlow),
            Self::V2Datagram => Some(UdpPolicy::V2PerDatagram),
            Self::Spp => Some(UdpPolicy::Spp),
        }
    }
}

/// Binds the echo server of `kind` on 127.0.0.1 and returns its address and the loop.
///
/// # Errors
///
/// Binding errors.
pub async fn bind(kind: UdpKind) -> io::Result<(SocketAddr, impl Future<Output = io::Result<()>>)> {
    enum Server {
        Plain(UdpSocket),
        Ours(Box<ProxyUdpSocket>),
    }
    let server = match kind.policy() {
        None => Server::Plain(UdpSocket::bind("127.0.0.1:0").await?),
        Some(policy) => Server::Ours(Box::new(
            ProxyUdpSocket::builder()
                .policy(policy)
                .bind("127.0.0.1:0")
                .await?,
        )),
    };
    let addr = match &server {
        Server::Plain(s) => s.local_addr()?,
        Server::Ours(s) => s.local_addr()?,
    };
    Ok((addr, async move {
        let mut buf = vec![0; 65_536];
        match server {
            Server::Plain(socket) => loop {
                let (len, from) = socket.recv_from(&mut buf).await?;
                socket.send_to(&buf[..len], from).await?;
            },
            Server::Ours(socket) => loop {
                let (len, from) = socket.recv_from(&mut buf).await?;
                socket.send_to(&buf[..len], &from).await?;
            },
        }
    }))
}

/// What one load run did.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpLoad {
    /// Replies received in the window.
    pub replies: u64,
    /// Datagrams given up on (no reply within the loss timeout).
    pub lost: u64,
    /// The measured window.
    pub elapsed: Duration,
}

impl UdpLoad {
    /// Replies per second.
    pub fn per_sec(&self) -> f64 {
        self.replies as f64 / self.elapsed.as_secs_f64()
    }
}

/// A reply not back within this is counted lost and replaced.
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

/// Runs `flows` pipelined flows of `window` datagrams of `payload` bytes against a server
/// of `kind` at `server` for `duration`.
///
/// # Errors
///
/// Socket errors.
pub async fn load(
    server: SocketAddr,
    kind: UdpKind,
    flows: usize,
    window: usize,
    payload: usize,
    duration: Duration,
) -> io::Result<UdpLoad> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(flows);
    for i in 0..flows {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let client = SocketAddr::new(header::src4().ip(), 10_000 + i as u16);
        tasks.push(tokio::spawn(flow(
            socket, server, kind, client, window, payload, deadline,
        )));
    }
    let mut total = UdpLoad::default();
    for task in tasks {
        let r = task.await.map_err(io::Error::other)??;
        total.replies += r.replies;
        total.lost += r.lost;
    }
    total.elapsed = start.elapsed();
    Ok(total)
}

async fn flow(
    socket: Arc<UdpSocket>,
    server: SocketAddr,
    kind: UdpKind,
    client: SocketAddr,
    window: usize,
    payload: usize,
    deadline: Instant,
) -> io::Result<UdpLoad> {
    let body = vec![b'x'; payload];
    let with = |header: &[u8]| [header, &body].concat();
    let (first, rest) = match kind {
        UdpKind::Plain => (body.clone(), body.clone()),
        UdpKind::V2Flow => (
            with(&ProxyHeader::v2_datagram(client, server).to_bytes()),
            body.clone(),
        ),
        UdpKind::V2Datagram => {
            let d = with(&ProxyHeader::v2_datagram(client, server).to_bytes());
            (d.clone(), d)
        }
        UdpKind::Spp => {
            let d = with(&SppHeader::new(client, server).to_bytes());
            (d.clone(), d)
        }
    };
    let mut buf = vec![0; 65_536];
    let mut r = UdpLoad::default();
    // The flow's first datagram alone, so that it arrives before the bare ones.
    loop {
        socket.send_to(&first, server).await?;
        if tokio::time::timeout(LOSS_TIMEOUT, socket.recv_from(&mut buf))
            .await
            .is_ok()
        {
            break;
        }
        if Instant::now() >= deadline {
            return Ok(r);
        }
    }
    let mut in_flight = 0;
    while Instant::now() < deadline {
        while in_flight < window {
            socket.send_to(&rest, server).await?;
            in_flight += 1;
        }
        match tokio::time::timeout(LOSS_TIMEOUT, socket.recv_from(&mut buf)).await {
            Ok(received) => {
                received?;
                in_flight -= 1;
                r.replies += 1;
            }
            Err(_) => {
                r.lost += in_flight as u64;
                in_flight = 0;
            }
        }
    }
    Ok(r)
}
