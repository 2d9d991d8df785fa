//! MQTT 3.1.1 load against two brokers, `realip-broker` and mosquitto: RSS per idle session,
//! connection rate (CONNECT → CONNACK), and QoS 0 / QoS 1 fan-out (1 → N) and fan-in
//! (N → 1) throughput and latency. The client is this module's minimal MQTT 3.1.1 client,
//! the same for both brokers.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore};

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// `realip-broker` (examples/broker), TCP listener only, no PROXY protocol.
    Realip,
    /// Debian's mosquitto 2.x, anonymous, no persistence, no logging.
    Mosquitto,
}

impl BrokerKind {
    /// Table label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Realip => "realip-broker",
            Self::Mosquitto => "mosquitto",
        }
    }
}

/// A broker process on 127.0.0.1, stopped (SIGKILL by PID) when dropped.
#[derive(Debug)]
pub struct BrokerProc {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    _dir: Option<TempDir>,
}

#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl BrokerProc {
    /// Starts `kind` on a free loopback port (under `taskset -c 1` if `pin`; realip-broker
    /// with `realip_args` added) and waits until it accepts connections.
    pub async fn start(
        kind: BrokerKind,
        realip_bin: &Path,
        realip_args: &[String],
        mosquitto_bin: &Path,
        pin: bool,
    ) -> io::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut dir = None;
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.args(["-c", "1"]);
            c
        } else {
            Command::new("env")
        };
        match kind {
            BrokerKind::Realip => {
                cmd.arg(realip_bin)
                    .args(["--tcp", &addr.to_string(), "--ws", "off", "--admin", "off"])
                    .args(realip_args)
                    // Per-connection log lines off, as mosquitto's below.
                    .env("RUST_LOG", "warn");
            }
            BrokerKind::Mosquitto => {
                let d = std::env::temp_dir().join(format!(
                    "realip-bench-mosquitto-{}-{port}",
                    std::process::id()
                ));
                std::fs::create_dir_all(&d)?;
                let conf = d.join("mosquitto.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                         log_dest none\nmax_connections -1\nmax_queued_messages 100000\n\
                         set_tcp_nodelay true\n"
                    ),
                )?;
                cmd.arg(mosquitto_bin).arg("-c").arg(&conf);
                dir = Some(TempDir(d));
            }
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", kind.name())))?;
        let mut proc = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(addr).await.is_ok() {
                break;
            }
            if let Some(status) = proc.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited at start: {status}",
                    kind.name()
                )));
            }
            if Instant::now() > deadline {
                return Err(io::Error::other(format!("{} did not listen", kind.name())));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The probe connection above is gone again before anything is measured.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = &mut proc;
        Ok(proc)
    }

    /// The broker's PID (`taskset` execs it, so this is the broker itself).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for BrokerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Encodes an MQTT remaining length.
fn remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).expect("short string").to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    remaining_length(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// MQTT 3.1.1 CONNECT, clean session, keep alive 0 (none).
pub fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, "MQTT");
    body.extend_from_slice(&[0x04, 0x02, 0x00, 0x00]);
    string(&mut body, client_id);
    packet(0x10, &body)
}

fn subscribe_packet(topic: &str, qos: u8) -> Vec<u8> {
    let mut body = vec![0x00, 0x01];
    string(&mut body, topic);
    body.push(qos);
    packet(0x82, &body)
}

fn publish_packet(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&pkid.to_be_bytes());
    }
    body.extend_from_slice(payload);
    packet(0x30 | (qos << 1), &body)
}

/// Reads one packet: (first byte, body).
async fn read_packet(r: &mut BufReader<OwnedReadHalf>) -> io::Result<(u8, Vec<u8>)> {
    let first = r.read_u8().await?;
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let b = r.read_u8().await?;
        len |= usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(io::Error::other("bad remaining length"));
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).await?;
    Ok((first, body))
}

/// A connected MQTT session.
#[derive(Debug)]
pub struct Session {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
}

impl Session {
    /// Connects and completes CONNECT → CONNACK (return code 0).
    pub async fn connect(addr: SocketAddr, client_id: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (r, mut w) = stream.into_split();
        w.write_all(&connect_packet(client_id)).await?;
        let mut r = BufReader::new(r);
        let (first, body) = read_packet(&mut r).await?;
        if first != 0x20 || body.len() != 2 || body[1] != 0 {
            return Err(io::Error::other(format!(
                "CONNACK expected, got {first:#04x} {body:?}"
            )));
        }
        Ok(Self { r, w })
    }

    async fn subscribe(&mut self, topic: &str, qos: u8) -> io::Result<()> {
        self.w.write_all(&subscribe_packet(topic, qos)).await?;
        let (first, body) = read_packet(&mut self.r).await?;
        if first != 0x90 || body.len() != 3 || body[2] != qos {
            return Err(io::Error::other(format!(
                "SUBACK for QoS {qos} expected, got {first:#04x} {body:?}"
            )));
        }
        Ok(())
    }
}

/// Result of opening idle sessions.
#[derive(Debug)]
pub struct IdleResult {
    /// Sessions that got their CONNACK.
    pub sessions: usize,
    /// Sessions per second from the first CONNECT to the last CONNACK.
    pub rate: f64,
    /// CONNECT → CONNACK latencies, sorted.
    pub latencies: Vec<Duration>,
    /// RSS growth of the broker per session, bytes.
    pub rss_per_session: f64,
    /// The broker's CPU time (all its threads) from the first CONNECT to the last CONNACK,
    /// per session, microseconds.
    pub cpu_us_per_session: f64,
    /// The CPU time of this process (the load client) over the same time, per session,
    /// microseconds. When it is about the time per session (1 ÷ rate), the client's core,
    /// not the broker, sets the rate.
    pub client_cpu_us_per_session: f64,
    /// Times the broker's threads went to sleep over the same time, per session. Each time,
    /// the next packet that arrives for it has to wake it up, and over loopback the sender
    /// (the client's core) does that work.
    pub broker_sleeps_per_session: f64,
    /// The sessions, still open.
    pub held: Vec<Session>,
}

/// Sessions opened by [`connect_many`].
#[derive(Debug)]
pub struct Opened {
    /// The sessions that got their CONNACK, still open.
    pub held: Vec<Session>,
    /// Their CONNECT → CONNACK latencies (TCP connect included), sorted.
    pub latencies: Vec<Duration>,
    /// CONNECTs that failed.
    pub errors: usize,
    /// From the first CONNECT to the last CONNACK.
    pub elapsed: Duration,
}

/// Opens `n` MQTT 3.1.1 sessions (client ids `{tag}-{i}`) to `addr`, `in_flight` handshakes
/// at a time (each: TCP connect, CONNECT, CONNACK), and keeps them open.
pub async fn connect_many(addr: SocketAddr, n: usize, in_flight: usize, tag: &str) -> Opened {
    let sem = Arc::new(Semaphore::new(in_flight));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let permit = Arc::clone(&sem)
            .acquire_owned()
            .await
            .expect("open semaphore");
        let id = format!("{tag}-{i}");
        tasks.spawn(async move {
            let t = Instant::now();
            let s = Session::connect(addr, &id).await;
            drop(permit);
            s.map(|s| (s, t.elapsed()))
        });
    }
    let mut held = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok((s, l))) => {
                held.push(s);
                latencies.push(l);
            }
            Ok(Err(_)) | Err(_) => errors += 1,
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Opened {
        held,
        latencies,
        errors,
        elapsed,
    }
}

/// Result of [`connect_bursts`].
#[derive(Debug)]
pub struct BurstResult {
    /// Sessions that got their CONNACK.
    pub sessions: usize,
    /// Sessions per second of the broker's time: sessions ÷ the sum over the bursts of the
    /// time from resuming the broker to the burst's last CONNACK.
    pub rate: f64,
    /// The broker's CPU time over the bursts (from resuming it to the last CONNACK), per
    /// session, microseconds.
    pub cpu_us_per_session: f64,
    /// The sessions, still open.
    pub held: Vec<Session>,
}

/// Connects and sends CONNECT, without waiting for CONNACK.
async fn send_connect(
    addr: SocketAddr,
    client_id: &str,
) -> io::Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    w.write_all(&connect_packet(client_id)).await?;
    Ok((BufReader::new(r), w))
}

/// Opens `n` MQTT 3.1.1 sessions in bursts of `burst`, with the broker as the bottleneck:
/// per burst the broker is stopped (SIGSTOP), `burst` clients connect and send their CONNECT
/// (the kernel completes the TCP handshakes into the listen backlog and queues the CONNECTs,
/// so `burst` must stay within the broker's backlog: mosquitto's is 100), the broker is
/// resumed (SIGCONT) and the time until the burst's last CONNACK is taken. Meanwhile this
/// runtime polls its sockets without sleeping, so that a CONNACK never has to wake the
/// client: the broker works through a full queue and neither side waits for the other.
///
/// The connection rate of [`connect_many`] is set by the client's core on a two-core
/// machine (over loopback the client's core also does most of the kernel's TCP work); a
/// broker that sleeps between arrivals then costs the client a wake-up per sleep, so a
/// broker that is idle more often, because it is quicker, measures slower there. This
/// measures what the broker itself takes per CONNECT, including its waits on its own
/// runtime.
pub async fn connect_bursts(
    broker: &BrokerProc,
    n: usize,
    burst: usize,
    tag: &str,
) -> io::Result<BurstResult> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(
        i32::try_from(broker.pid()).map_err(|_| io::Error::other("broker PID out of range"))?,
    );
    let signal = |s: Signal| kill(pid, s).map_err(io::Error::from);
    let burst = burst.max(1);
    let mut held = Vec::with_capacity(n);
    let mut busy = Duration::ZERO;
    let mut cpu = 0;
    let mut i = 0;
    while i < n {
        let k = burst.min(n - i);
        signal(Signal::SIGSTOP)?;
        let mut waiting = Vec::with_capacity(k);
        for j in i..i + k {
            // A connection beyond the stopped broker's backlog would wait for SYN
            // retransmissions, seconds.
            let sent = tokio::time::timeout(
                Duration::from_secs(2),
                send_connect(broker.addr, &format!("{tag}-{j}")),
            )
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::other(format!(
                    "connection {} of a burst of {burst} not established in 2 s: \
                     more than the broker's listen backlog?",
                    j - i + 1
                )))
            });
            match sent {
                Ok(half) => waiting.push(half),
                Err(e) => {
                    signal(Signal::SIGCONT)?;
                    return Err(e);
                }
            }
        }
        // Every CONNECT is in its socket; the broker runs from here on.
        let spinning = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let spinner = {
            let spinning = Arc::clone(&spinning);
            tokio::spawn(async move {
                while spinning.load(Ordering::Relaxed) {
                    tokio::task::yield_now().await;
                }
            })
        };
        let cpu_before = crate::procfs::cpu_ns(broker.pid())?;
        let start = Instant::now();
        signal(Signal::SIGCONT)?;
        let mut tasks = tokio::task::JoinSet::new();
        for (mut r, w) in waiting {
            tasks.spawn(async move {
                let (first, body) = read_packet(&mut r).await?;
                if first != 0x20 || body.len() != 2 || body[1] != 0 {
                    return Err(io::Error::other(format!(
                        "CONNACK expected, got {first:#04x} {body:?}"
                    )));
                }
                Ok(Session { r, w })
            });
        }
        let mut result = Ok(());
        while let Some(done) = tasks.join_next().await {
            match done.map_err(io::Error::other).and_then(|s| s) {
                Ok(session) => held.push(session),
                Err(e) => result = Err(e),
            }
        }
        busy += start.elapsed();
        cpu += crate::procfs::cpu_ns(broker.pid())?.saturating_sub(cpu_before);
        spinning.store(false, Ordering::Relaxed);
        let _ = spinner.await;
        result?;
        i += k;
    }
    let sessions = held.len();
    Ok(BurstResult {
        sessions,
        rate: sessions as f64 / busy.as_secs_f64(),
        cpu_us_per_session: cpu as f64 / 1e3 / sessions.max(1) as f64,
        held,
    })
}

/// Opens `n` sessions (`in_flight` handshakes at a time) and measures the broker's RSS per
/// session once they are idle.
pub async fn idle_sessions(
    broker: &BrokerProc,
    n: usize,
    in_flight: usize,
    tag: &str,
) -> io::Result<IdleResult> {
    let before = crate::procfs::vm_rss_kib(broker.pid())?;
    let client = std::process::id();
    let cpu_before = crate::procfs::cpu_ns(broker.pid())?;
    let sleeps_before = crate::procfs::voluntary_switches(broker.pid())?;
    let client_before = crate::procfs::cpu_ns(client)?;
    let Opened {
        held,
        latencies,
        errors,
        elapsed,
    } = connect_many(broker.addr, n, in_flight, tag).await;
    let client_cpu = crate::procfs::cpu_ns(client)?.saturating_sub(client_before);
    let cpu = crate::procfs::cpu_ns(broker.pid())?.saturating_sub(cpu_before);
    let sleeps = crate::procfs::voluntary_switches(broker.pid())?.saturating_sub(sleeps_before);
    if errors > 0 {
        eprintln!("  {errors} of {n} CONNECTs failed");
    }
    // Let the broker finish what it does after CONNACK (registration, logging).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = crate::procfs::vm_rss_kib(broker.pid())?;
    let sessions = held.len();
    Ok(IdleResult {
        sessions,
        rate: sessions as f64 / elapsed.as_secs_f64(),
        latencies,
        rss_per_session: (after.saturating_sub(before) * 1024) as f64 / sessions.max(1) as f64,
        cpu_us_per_session: cpu as f64 / 1e3 / sessions.max(1) as f64,
        client_cpu_us_per_session: client_cpu as f64 / 1e3 / sessions.max(1) as f64,
        broker_sleeps_per_session: sleeps as f64 / sessions.max(1) as f64,
        held,
    })
}

/// Result of one fan-out or fan-in run.
#[derive(Debug)]
pub struct FanResult {
    /// Messages delivered to subscribers per second.
    pub deliveries_per_sec: f64,
    /// Deliveries counted.
    pub delivered: u64,
    /// Deliveries expected.
    pub expected: u64,
    /// Publish → delivery latencies, sorted.
    pub latencies: Vec<Duration>,
}

/// `publishers` publishers send `messages` messages in total (QoS `qos`, 64-byte payload
/// carrying the send time) to topics that `subscribers` subscribers all match; at most
/// `window` messages are published and not yet delivered to every subscriber. Subscribers
/// PUBACK QoS 1 deliveries; publishers keep QoS 1 PUBLISHes unacknowledged within the window.
pub async fn fan(
    broker: &BrokerProc,
    publishers: usize,
    subscribers: usize,
    messages: u64,
    qos: u8,
    window: u64,
    tag: &str,
) -> io::Result<FanResult> {
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let expected = messages * subscribers as u64;
    let mut subs = tokio::task::JoinSet::new();
    for i in 0..subscribers {
        let mut s = Session::connect(broker.addr, &format!("{tag}-sub-{i}")).await?;
        s.subscribe(&format!("{tag}/#"), qos).await?;
        let delivered = Arc::clone(&delivered);
        let progress = Arc::clone(&progress);
        subs.spawn(async move {
            let mut lat = Vec::new();
            let mut got = 0u64;
            while got < messages {
                let (first, body) = match read_packet(&mut s.r).await {
                    Ok(p) => p,
                    Err(_) => break,
                };
                if first & 0xf0 != 0x30 {
                    continue;
                }
                let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let mut at = 2 + tlen;
                if (first >> 1) & 0x03 > 0 {
                    let pkid = [body[at], body[at + 1]];
                    at += 2;
                    if s.w
                        .write_all(&[0x40, 0x02, pkid[0], pkid[1]])
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                let sent = u64::from_be_bytes(body[at..at + 8].try_into().expect("8 bytes"));
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                lat.push(Duration::from_nanos(now.saturating_sub(sent)));
                got += 1;
                delivered.fetch_add(1, Ordering::Relaxed);
                progress.notify_waiters();
            }
            lat
        });
    }
    let per_pub = messages / publishers as u64;
    let mut pubs = Vec::new();
    for i in 0..publishers {
        pubs.push(Session::connect(broker.addr, &format!("{tag}-pub-{i}")).await?);
    }
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut pub_tasks = tokio::task::JoinSet::new();
    for (i, s) in pubs.into_iter().enumerate() {
        let (delivered, progress, sent) = (
            Arc::clone(&delivered),
            Arc::clone(&progress),
            Arc::clone(&sent),
        );
        let topic = format!("{tag}/{i}");
        let fanout = subscribers as u64;
        pub_tasks.spawn(async move {
            let Session { mut r, mut w } = s;
            // QoS 1: read PUBACKs on the side.
            let acks = tokio::spawn(async move {
                for _ in 0..per_pub {
                    if read_packet(&mut r).await.is_err() {
                        break;
                    }
                }
            });
            let mut payload = [0u8; 64];
            for k in 0..per_pub {
                loop {
                    let notified = progress.notified();
                    let done = delivered.load(Ordering::Relaxed) / fanout;
                    if sent.load(Ordering::Relaxed) < done + window {
                        break;
                    }
                    notified.await;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
                payload[..8].copy_from_slice(&now.to_be_bytes());
                let pkid = u16::try_from(k % 65_535 + 1).expect("pkid");
                w.write_all(&publish_packet(&topic, qos, pkid, &payload))
                    .await?;
            }
            if qos > 0 {
                let _ = acks.await;
            } else {
                acks.abort();
            }
            Ok::<_, io::Error>(w)
        });
    }
    // Subscribers end when they have every message, or time out below.
    let mut latencies = Vec::new();
    let collect = async {
        while let Some(r) = subs.join_next().await {
            latencies.extend(r.map_err(io::Error::other)?);
        }
        Ok::<_, io::Error>(())
    };
    let timed_out = tokio::time::timeout(Duration::from_secs(60), collect)
        .await
        .is_err();
    let elapsed = start.elapsed();
    subs.abort_all();
    pub_tasks.abort_all();
    let got = delivered.load(Ordering::Relaxed);
    if timed_out {
        eprintln!("  fan run timed out with {got} of {expected} delivered");
    }
    latencies.sort();
    Ok(FanResult {
        deliveries_per_sec: got as f64 / elapsed.as_secs_f64(),
        delivered: got,
        expected,
        latencies,
    })
}
