//! `EMFILE` for real: the listener runs in a child process whose `RLIMIT_NOFILE` is 64, and
//! more clients connect than it has descriptors for. Accepting fails; the listener backs off,
//! logs the burst once (not every retry), keeps every established connection working, and
//! serves the clients that waited in the kernel's queue as soon as descriptors are free.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use realip_listener::{Policy, ProxyHeader, ProxyListener};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

const CHILD_ENV: &str = "REALIP_EMFILE_CHILD";
const FD_LIMIT: u32 = 64;
/// More than the child has descriptors for, and at most twice what it can hold at once.
const CLIENTS: u16 = 90;

/// The child: a PROXY listener whose connections greet with the client address, then echo
/// lines. Logs at `info` to stderr; exits when stdin closes.
fn serve() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut listener = ProxyListener::builder()
            .policy(Policy::Require)
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        println!("LISTENING {}", listener.local_addr().unwrap());
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        loop {
            let (stream, addr) = listener.accept().await;
            tokio::spawn(async move {
                let (read, mut write) = tokio::io::split(stream);
                let client = addr.client_socket_addr().unwrap();
                if write
                    .write_all(format!("{client}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                let mut lines = tokio::io::BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
}

struct Client {
    real: SocketAddr,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(listener: SocketAddr, n: u16) -> Self {
        let real = SocketAddr::from(([203, 0, 113, (n % 200) as u8 + 1], 20000 + n));
        let mut tcp = TcpStream::connect(listener).unwrap();
        tcp.write_all(&ProxyHeader::v2(real, listener).to_bytes())
            .unwrap();
        Self {
            real,
            reader: BufReader::new(tcp),
        }
    }

    /// The greeting line, if it comes within `wait`.
    fn greeting(&mut self, wait: Duration) -> Option<String> {
        self.reader.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line.trim_end().to_owned()),
            _ => None,
        }
    }

    fn echo(&mut self, text: &str) -> String {
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        self.reader
            .get_mut()
            .write_all(format!("{text}\n").as_bytes())
            .unwrap();
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_owned()
    }
}

#[test]
fn emfile_backs_off_logs_once_per_burst_and_recovers() {
    if std::env::var_os(CHILD_ENV).is_some() {
        serve();
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" \"$@\""))
        .arg(&exe)
        .args([
            "emfile_backs_off_logs_once_per_burst_and_recovers",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert_ne!(stdout.read_line(&mut line).unwrap(), 0, "child exited");
        // The test harness may have written the test's name on the same line.
        if let Some(addr) = line.split("LISTENING ").nth(1) {
            break addr.trim().parse().unwrap();
        }
    };

    // More clients than descriptors: the first ones are served, the others wait in the
    // kernel's accept queue while accepting fails with EMFILE.
    let mut clients: Vec<Client> = (0..CLIENTS).map(|n| Client::connect(addr, n)).collect();
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    for mut client in clients.drain(..) {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(20));
        match client.greeting(wait) {
            Some(greeting) => {
                assert_eq!(greeting, client.real.to_string());
                served.push(client);
            }
            None => waiting.push(client),
        }
    }
    assert!(
        !waiting.is_empty(),
        "all {CLIENTS} clients were served with {FD_LIMIT} descriptors"
    );
    assert!(
        served.len() >= waiting.len(),
        "{} served, {} waiting",
        served.len(),
        waiting.len()
    );

    // Established connections keep working while accepting fails.
    for (i, client) in served.iter_mut().enumerate() {
        assert_eq!(
            client.echo(&format!("still here {i}")),
            format!("still here {i}")
        );
    }

    // Descriptors free up: every waiting client is served, with its own address.
    let freed = served.len();
    drop(served);
    for client in &mut waiting {
        let greeting = client
            .greeting(Duration::from_secs(10))
            .expect("served once descriptors are free");
        assert_eq!(greeting, client.real.to_string());
        assert_eq!(client.echo("after"), "after");
    }
    let recovered = waiting.len();
    drop(waiting);

    drop(child.stdin.take());
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child.wait().unwrap();
    eprintln!("---- child log ----\n{log}");
    let errors = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("accept error, backing off"))
        .count();
    let recoveries: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("accepting again after accept errors"))
        .map(|l| {
            let n = l.split("failures=").nth(1).unwrap();
            n.split_whitespace().next().unwrap().parse().unwrap()
        })
        .collect();
    assert!(errors >= 1, "no accept error logged:\n{log}");
    // One error line per burst, however many retries the burst had.
    assert_eq!(errors, recoveries.len(), "{log}");
    assert!(
        recoveries.iter().sum::<u64>() > errors as u64,
        "each burst was a single failure, nothing to show: {recoveries:?}"
    );
    eprintln!(
        "EMFILE: {freed} served at the limit, {recovered} waited and were served after; \
         {errors} burst(s) logged, {recoveries:?} failures in them"
    );
}
