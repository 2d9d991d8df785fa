//! Load clients: the accept-throughput loop, the well-behaved prober, stalling attackers and
//! connection holders for the memory measurement.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout};

/// The request a client sends after the PROXY header (in the same write).
pub const REQUEST: &[u8] = b"ping\n";
/// The server's reply to [`REQUEST`].
pub const REPLY: &[u8] = b"pong\n";

/// How many connects an attacker or holder group has in flight at once, so that the
/// kernel's accept queue (backlog 1024) does not overflow and turn into SYN retransmits.
const CONNECT_CONCURRENCY: usize = 128;

/// [`hold`] stops attempting connections after this many failures.
pub const HOLD_GIVE_UP: usize = 256;

/// The bytes a client sends first: `header` (may be empty) followed by [`REQUEST`].
pub fn preamble(header: &[u8]) -> Arc<[u8]> {
    let mut v = header.to_vec();
    v.extend_from_slice(REQUEST);
    v.into()
}

/// One request: connect, send `preamble`, read the reply, close (the client closes first).
pub async fn request(addr: SocketAddr, preamble: &[u8]) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(preamble).await?;
    let mut reply = [0u8; REPLY.len()];
    stream.read_exact(&mut reply).await?;
    if reply != REPLY {
        return Err(io::Error::other("unexpected reply"));
    }
    Ok(())
}

/// The outcome of one [`load`] segment.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Completed request loops.
    pub ok: u64,
    /// Failed or timed-out loops.
    pub errors: u64,
    /// Wall time of the segment.
    pub elapsed: Duration,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
}

impl LoadResult {
    /// Completed loops per second.
    pub fn per_sec(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// Runs `concurrency` client tasks against `addr` for `duration`, each looping over
/// [`request`] (with a 5 s timeout per loop).
pub async fn load(
    addr: SocketAddr,
    preamble: Arc<[u8]>,
    concurrency: usize,
    duration: Duration,
) -> LoadResult {
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let preamble = preamble.clone();
        tasks.spawn(async move {
            let mut r = LoadResult::default();
            while Instant::now() < deadline {
                match timeout(Duration::from_secs(5), request(addr, &preamble)).await {
                    Ok(Ok(())) => r.ok += 1,
                    Ok(Err(e)) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| e.to_string());
                    }
                    Err(_) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| "timed out".to_owned());
                    }
                }
            }
            r
        });
    }
    let mut total = LoadResult::default();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("load task panicked");
        total.ok += r.ok;
        total.errors += r.errors;
        if total.first_error.is_none() {
            total.first_error = r.first_error;
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// Connect→reply latencies of a well-behaved client: `None` is a request that failed or
/// did not complete within `request_timeout`.
pub async fn probe(
    addr: SocketAddr,
    preamble: &[u8],
    window: Duration,
    gap: Duration,
    request_timeout: Duration,
) -> Vec<Option<Duration>> {
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < window {
        let t = Instant::now();
        let sample = match timeout(request_timeout, request(addr, preamble)).await {
            Ok(Ok(())) => Some(t.elapsed()),
            _ => None,
        };
        samples.push(sample);
        sleep(gap).await;
    }
    samples
}

/// A group of attacker connections that each send `partial` (half a header) and stall; when
/// the server drops one (its header timeout), it reconnects, so the pressure is sustained.
#[derive(Debug)]
pub struct Attack {
    tasks: JoinSet<()>,
    stalled: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl Attack {
    /// Starts `n` attackers and waits until all are stalled or `ramp` has passed.
    pub async fn start(addr: SocketAddr, n: usize, partial: Arc<[u8]>, ramp: Duration) -> Self {
        let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
        let stalled = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            tasks.spawn(attacker(
                addr,
                partial.clone(),
                gate.clone(),
                stalled.clone(),
                dropped.clone(),
            ));
        }
        let deadline = Instant::now() + ramp;
        while stalled.load(Ordering::Relaxed) < n && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
        }
        Self {
            tasks,
            stalled,
            dropped,
        }
    }

    /// Attackers currently connected and stalled.
    pub fn stalled(&self) -> usize {
        self.stalled.load(Ordering::Relaxed)
    }

    /// Attacker connections the server has closed so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Stops every attacker and closes its connection.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn attacker(
    addr: SocketAddr,
    partial: Arc<[u8]>,
    gate: Arc<Semaphore>,
    stalled: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
) {
    loop {
        let permit = gate.acquire().await.expect("semaphore never closed");
        let stream = timeout(Duration::from_secs(10), TcpStream::connect(addr)).await;
        let Ok(Ok(mut stream)) = stream else {
            drop(permit);
            sleep(Duration::from_millis(50)).await;
            continue;
        };
        if stream.write_all(&partial).await.is_err() {
            continue;
        }
        drop(permit);
        let gauge = Gauge::inc(&stalled);
        let mut buf = [0u8; 16];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        drop(gauge);
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Increments a gauge for as long as it lives (also when its task is aborted).
struct Gauge<'a>(&'a AtomicUsize);

impl<'a> Gauge<'a> {
    fn inc(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Opens `n` connections that send `preamble` and, if `expect_reply`, read the reply; returns
/// the open connections (held until dropped) and how many failed to connect or reply within
/// `connect_timeout`. After [`HOLD_GIVE_UP`] failures the remaining connections are not
/// attempted (and count as failed): the server is not taking more.
pub async fn hold(
    addr: SocketAddr,
    preamble: Arc<[u8]>,
    n: usize,
    expect_reply: bool,
    connect_timeout: Duration,
) -> (Vec<TcpStream>, usize) {
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        let preamble = preamble.clone();
        let failures = failures.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore never closed");
            if failures.load(Ordering::Relaxed) >= HOLD_GIVE_UP {
                return None;
            }
            let r = timeout(connect_timeout, async {
                let mut stream = TcpStream::connect(addr).await?;
                stream.write_all(&preamble).await?;
                if expect_reply {
                    let mut reply = [0u8; REPLY.len()];
                    stream.read_exact(&mut reply).await?;
                }
                io::Result::Ok(stream)
            })
            .await;
            match r {
                Ok(Ok(stream)) => Some(stream),
                _ => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        });
    }
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        match r.expect("holder task panicked") {
            Some(stream) => open.push(stream),
            None => failed += 1,
        }
    }
    (open, failed)
}
