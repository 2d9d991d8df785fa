//! A burst of connections to a listener that has just started: every one is queued by the
//! kernel and accepted, none dropped, with the listen backlog the builder chose.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use realip_listener::{ProxyHeader, ProxyListener, default_backlog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Clients in the burst.
const CLIENTS: usize = 5000;

/// Linux's initial retransmission timeout: a client whose handshake the kernel dropped
/// (accept queue full) connects no sooner than this.
const SYN_RETRY: Duration = Duration::from_secs(1);

/// Both ends of every connection live in this process: raises the soft limit on open
/// files to what the burst needs, or fails saying what to raise.
fn raise_open_files_limit(needed: u64) {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft >= needed {
        return;
    }
    assert!(
        hard >= needed,
        "the burst test needs {needed} open files; the hard limit is {hard} (raise it with `ulimit -Hn`)"
    );
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).unwrap();
}

/// The listen backlog of the TCP listener on `port` (or the Unix one at `path`), as `ss`
/// reports it (its `Send-Q` column for a listening socket). `None` when `ss` is missing and
/// `CI` is not `true` (the check is skipped, loudly).
fn ss_backlog(args: &[&str], filter: impl Fn(&str) -> bool) -> Option<u32> {
    let out = match Command::new("ss").args(args).output() {
        Ok(out) => out,
        Err(err) if std::env::var("CI").as_deref() != Ok("true") => {
            eprintln!("SKIPPED: `ss` (iproute2) cannot be run: {err}");
            return None;
        }
        Err(err) => panic!("`ss` (iproute2) is required with CI=true: {err}"),
    };
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| filter(l))
        .unwrap_or_else(|| panic!("no listening socket in `ss` output:\n{text}"));
    // [Netid] State Recv-Q Send-Q Local Peer: the Netid column is there for Unix sockets.
    let fields: Vec<&str> = line.split_whitespace().collect();
    let send_q = if fields[0] == "LISTEN" {
        fields[2]
    } else {
        fields[3]
    };
    Some(send_q.parse().unwrap())
}

fn tcp_backlog(port: u16) -> Option<u32> {
    let suffix = format!(":{port}");
    ss_backlog(&["-ltnH"], |line| {
        line.split_whitespace()
            .nth(3)
            .is_some_and(|local| local.ends_with(&suffix))
    })
}

#[tokio::test]
async fn tcp_and_unix_listeners_get_the_backlog_asked_for() {
    let default = default_backlog();
    let listener = ProxyListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    if let Some(backlog) = tcp_backlog(port) {
        assert_eq!(backlog, default, "default backlog of a TCP listener");
    }
    let listener = ProxyListener::builder()
        .backlog(300)
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    if let Some(backlog) = tcp_backlog(listener.local_addr().unwrap().port()) {
        assert_eq!(backlog, 300);
    }

    let dir = std::env::temp_dir().join(format!("realip-backlog-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (asked, expected) in [(None, default), (Some(200), 200)] {
        let path = dir.join(format!("{expected}.sock"));
        let _ = std::fs::remove_file(&path);
        let builder = match asked {
            Some(n) => ProxyListener::builder().backlog(n),
            None => ProxyListener::builder(),
        };
        let _listener = builder.bind_unix(&path).unwrap();
        let name = path.to_str().unwrap().to_owned();
        if let Some(backlog) = ss_backlog(&["-lxH"], |line| line.contains(&name)) {
            assert_eq!(backlog, expected, "Unix listener at {name}");
        }
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::remove_dir(&dir).unwrap();
}

/// One client of the burst: connects, sends a header naming `client` and reads back the
/// client address the application saw. Returns how long the connect took.
async fn burst_client(addr: SocketAddr, client: SocketAddr) -> Result<Duration, String> {
    let start = Instant::now();
    let mut conn = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{client}: connect: {e}"))?;
    let connected = start.elapsed();
    conn.write_all(&ProxyHeader::v1(client, addr).to_bytes())
        .await
        .map_err(|e| format!("{client}: write: {e}"))?;
    let mut seen = String::new();
    conn.read_to_string(&mut seen)
        .await
        .map_err(|e| format!("{client}: read: {e}"))?;
    if seen != client.to_string() {
        return Err(format!("{client}: the application saw {seen:?}"));
    }
    Ok(connected)
}

/// Runs the application, as its own process would: on its own thread and runtime, it
/// accepts `CLIENTS` connections and answers each with the client address it saw.
fn spawn_server() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut listener = ProxyListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            let mut replies = tokio::task::JoinSet::new();
            for _ in 0..CLIENTS {
                let (mut stream, proxied) = listener.accept().await;
                let client = proxied.client().unwrap().to_string();
                replies.spawn(async move {
                    let _ = stream.write_all(client.as_bytes()).await;
                });
            }
            replies.join_all().await;
        });
    });
    (rx.recv().unwrap(), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_5000_connections_is_accepted_without_a_drop() {
    raise_open_files_limit(2 * CLIENTS as u64 + 200);
    let (addr, server) = spawn_server();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = SocketAddr::from(([198, 51, 100, (i % 250) as u8 + 1], 10_000 + i as u16));
            tokio::spawn(burst_client(addr, client))
        })
        .collect();

    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for client in clients {
        match tokio::time::timeout(Duration::from_secs(60), client).await {
            Ok(Ok(Ok(connected))) => slowest = slowest.max(connected),
            Ok(Ok(Err(err))) => failures.push(err),
            Ok(Err(join)) => failures.push(join.to_string()),
            Err(_) => failures.push("client did not finish within 60 s".to_owned()),
        }
    }
    server.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed, first: {:?}",
        failures.len(),
        failures.first()
    );
    // A handshake dropped by a full accept queue is retried after a second at the earliest.
    assert!(
        slowest < SYN_RETRY,
        "the slowest connect took {slowest:?}: a handshake was dropped and retried"
    );
}
