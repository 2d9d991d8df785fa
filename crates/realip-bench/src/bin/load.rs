//! Load harness: accept throughput, slow-client isolation and memory per connection, for a
//! plain tokio listener, `realip-listener` and `proxy-protocol-rs`, each server in its own
//! process (pinned to core 1 with `taskset` when available), the load on core 0.
//!
//! `cargo run -p realip-bench --release --bin load -- all` prints the Markdown tables of
//! `BENCHMARKS.md`; progress goes to stderr.

use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use realip_bench::client::{self, Attack, LoadResult};
use realip_bench::header;
use realip_bench::procfs;
use realip_bench::server::{self, ServeOptions, ServerKind};
use realip_bench::stats::{median, percentile};
use realip_bench::udp::{self as udp_bench, UdpKind};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use tokio::time::sleep;

/// Counts allocations, so that a server can report what it allocates per connection and
/// the heap it holds (`stats` on its stdin).
#[global_allocator]
static ALLOC: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Listen backlog of every server.
const BACKLOG: u32 = 1024;

/// Set in the environment of the re-executed, pinned harness.
const PINNED_ENV: &str = "REALIP_BENCH_PINNED";

#[derive(Debug, Parser)]
#[command(about = "Load harness for realip: accept throughput, slow-client isolation, memory")]
struct Cli {
    /// Do not pin the load to core 0 and the servers to core 1 with `taskset`.
    #[arg(long, global = true)]
    no_pin: bool,
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once at start-up: `All`, which holds every section's arguments, is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one server (used by the other commands; prints `LISTENING <addr>`, exits on stdin EOF).
    Serve {
        /// Which listener.
        #[arg(long, value_enum)]
        kind: ServerKind,
        /// PROXY header timeout, milliseconds.
        #[arg(long, default_value_t = 5000)]
        header_timeout_ms: u64,
        /// realip-listener's cap on handshakes in progress (default: the crate's).
        #[arg(long)]
        max_pending: Option<usize>,
        /// realip-listener's accept batch (default: the crate's).
        #[arg(long)]
        accept_batch: Option<usize>,
        /// `TCP_DEFER_ACCEPT` on the listening socket, seconds (0: off).
        #[arg(long, default_value_t = 0)]
        defer_accept_secs: u64,
    },
    /// Run the stalled attackers of the isolation passes against `addr` (used by `load
    /// isolation`, which starts it at the lowest CPU priority on the load core): prints
    /// `STALLED <n>` once all are stalled or `ramp_secs` has passed, answers `stats` on
    /// stdin with `STATS <stalled> <dropped>`, exits on stdin EOF.
    Attack {
        #[arg(long)]
        addr: SocketAddr,
        /// Attacker connections.
        #[arg(long)]
        n: usize,
        #[arg(long)]
        ramp_secs: f64,
    },
    /// Measure how late this thread wakes from 0.5 ms sleeps for `secs` seconds (run under
    /// `taskset -c <core>`): the machine's own stalls, which set the floor of every tail
    /// latency measured here. Prints one line.
    Jitter {
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
    },
    /// Run requests through the forwarded-header middleware (`RealIp::call`) or another
    /// step of a layer case, for counting instructions per request under callgrind
    /// (`callgrind.sh`); prints nothing.
    LayerCalls {
        /// Requests to run.
        #[arg(long, default_value_t = 10_000)]
        requests: u64,
        /// Which case: of the recursive set, 0: XFF 1 entry, 1: XFF 4 entries, 2: 10,000
        /// CIDRs, 3: Forwarded; of the same-work set, 0: XFF 1 entry, 1: XFF 4 entries, 2: +12
        /// typical headers, 3: + X-Forwarded-Port.
        #[arg(long, default_value_t = 1)]
        case: usize,
        /// Take the case from the same-work set (non-recursive, the rightmost-only crates' work).
        #[arg(long)]
        same_work: bool,
        /// What to run per request.
        #[arg(long, value_enum, default_value_t = LayerStep::Call)]
        step: LayerStep,
    },
    /// Run one UDP echo server (used by `udp`; prints `LISTENING <addr>`, exits on stdin EOF).
    ServeUdp {
        /// Which socket and header format.
        #[arg(long, value_enum)]
        kind: UdpKind,
    },
    /// UDP datagrams per second: plain `UdpSocket` and `ProxyUdpSocket` per format, interleaved.
    Udp(UdpArgs),
    /// Accept throughput: plain, ours v1, ours v2, peer v2, interleaved rounds.
    Accept(AcceptArgs),
    /// The accept-throughput client alone, against a server started elsewhere (for instance
    /// `load serve` under `perf stat` or `strace -c`, to count its work per connection):
    /// prints the connections completed.
    Client(ClientArgs),
    /// MQTT sessions against a broker started elsewhere (for instance under `perf stat` or
    /// callgrind, to count its work per CONNECT, `broker_connect.sh`): opens them (CONNECT →
    /// CONNACK), prints `sessions=N errors=E secs=S`, holds them until stdin ends, then exits.
    MqttConnect {
        /// The broker's address.
        #[arg(long)]
        addr: SocketAddr,
        /// Sessions to open.
        #[arg(long, default_value_t = 3000)]
        sessions: usize,
        /// CONNECTs in flight.
        #[arg(long, default_value_t = 64)]
        in_flight: usize,
        /// Client id prefix.
        #[arg(long, default_value = "c")]
        tag: String,
    },
    /// Accept capacity: a stopped server gets a burst of queued connections, then drains them.
    Drain(DrainArgs),
    /// Slow-client isolation: a good client's latency while connections stall mid-header.
    Isolation(IsolationArgs),
    /// Memory: RSS per pending handshake and per accepted connection.
    Memory(MemoryArgs),
    /// Header parse and layer micro-benchmarks, interleaved rounds.
    Micro(MicroArgs),
    /// realip-broker against mosquitto: RSS per idle session, CONNECT rate, QoS 0/1 fan-out and fan-in.
    Broker(BrokerArgs),
    /// All of the above, in this order.
    All {
        #[command(flatten)]
        accept: AcceptArgs,
        #[command(flatten)]
        drain: DrainArgs,
        #[command(flatten)]
        isolation: IsolationArgs,
        #[command(flatten)]
        memory: MemoryArgs,
        #[command(flatten)]
        micro: MicroArgs,
        #[command(flatten)]
        udp: UdpArgs,
        #[command(flatten)]
        broker: BrokerArgs,
    },
}

/// One step of a layer case (see `realip_bench::cases::LayerCase`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LayerStep {
    /// `RealIp::call`, the whole middleware.
    Call,
    /// `RealIpLayer::resolve`.
    Resolve,
    /// `RealIpLayer::resolve` without the port header.
    ResolveWithoutPort,
    /// `client_ip::rightmost_x_forwarded_for` (or `rightmost_forwarded`).
    ClientIp,
    /// `axum-client-ip`'s rightmost extractor.
    AxumClientIp,
    /// `real_ip::real_ip`.
    RealIp,
}

#[derive(Clone, Debug, Args)]
struct BrokerArgs {
    /// Rounds (each runs both brokers once, fresh processes, interleaved; the order of the
    /// two alternates from round to round).
    #[arg(long, default_value_t = 5)]
    broker_rounds: usize,
    /// Only the idle-session measures (RSS per session, CONNECT rate and p99), no fan-out
    /// or fan-in.
    #[arg(long)]
    broker_idle_only: bool,
    /// Idle MQTT 3.1.1 sessions opened per measurement of RSS and CONNECT rate.
    #[arg(long, default_value_t = 3000)]
    idle_sessions: usize,
    /// CONNECTs in flight while opening them.
    #[arg(long, default_value_t = 64)]
    connect_in_flight: usize,
    /// CONNECTs queued per burst while the broker is stopped, for the broker-bound CONNECT
    /// rate (at most mosquitto's listen backlog, 100).
    #[arg(long, default_value_t = 64)]
    connect_burst: usize,
    /// Clients on the wide side of fan-out (1 → N) and fan-in (N → 1).
    #[arg(long, default_value_t = 100)]
    fan_width: usize,
    /// Messages published per fan-out run (each delivered to every subscriber).
    #[arg(long, default_value_t = 1000)]
    fanout_messages: u64,
    /// Messages published per fan-in run (in total, spread over the publishers).
    #[arg(long, default_value_t = 20_000)]
    fanin_messages: u64,
    /// Messages published and not yet delivered to every subscriber, at most.
    #[arg(long, default_value_t = 64)]
    fan_window: u64,
    /// The realip-broker binary.
    #[arg(long, default_value = "target/release/realip-broker")]
    realip_broker: std::path::PathBuf,
    /// One more argument for realip-broker (repeatable), e.g.
    /// `--realip-broker-arg=--defer-accept --realip-broker-arg=0`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    realip_broker_arg: Vec<String>,
    /// The mosquitto binary.
    #[arg(long, default_value = "mosquitto")]
    mosquitto: std::path::PathBuf,
}

#[derive(Clone, Debug, Args)]
struct UdpArgs {
    /// Measured UDP rounds (each runs every server once).
    #[arg(long, default_value_t = 15)]
    udp_rounds: usize,
    /// Seconds per UDP server per round.
    #[arg(long, default_value_t = 1.0)]
    udp_secs: f64,
    /// Client flows (sockets with their own source port), as a proxy has per client.
    #[arg(long, default_value_t = 8)]
    udp_flows: usize,
    /// Datagrams in flight per flow.
    #[arg(long, default_value_t = 16)]
    udp_window: usize,
    /// Payload bytes per datagram (after any header).
    #[arg(long, default_value_t = 100)]
    udp_payload: usize,
}

#[derive(Clone, Debug, Args)]
struct MicroArgs {
    /// Interleaved rounds of the micro-benchmarks.
    #[arg(long, default_value_t = 41)]
    micro_rounds: usize,
    /// Target duration of one timed batch, microseconds.
    #[arg(long, default_value_t = 2000)]
    batch_us: u64,
}

#[derive(Clone, Debug, Args)]
struct AcceptArgs {
    /// Measured rounds (each runs every server once).
    #[arg(long, default_value_t = 15)]
    rounds: usize,
    /// Seconds per server per round.
    #[arg(long, default_value_t = 1.0)]
    secs: f64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Clone, Debug, Args)]
struct ClientArgs {
    /// The server's address (the `LISTENING` line of `load serve`).
    #[arg(long)]
    addr: SocketAddr,
    /// What each connection sends before `ping\n`.
    #[arg(long, value_enum, default_value_t = HeaderKind::V2)]
    header: HeaderKind,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
    /// Concurrent client tasks.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

/// The header a client sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum HeaderKind {
    /// No header (for the plain server).
    None,
    /// A v1 TCP4 line.
    V1,
    /// A v2 PROXY TCP over IPv4 header.
    V2,
}

#[derive(Clone, Debug, Args)]
struct DrainArgs {
    /// Measured rounds (each drains every server once).
    #[arg(long, default_value_t = 61)]
    drain_rounds: usize,
    /// Connections queued per burst (below the listen backlog of 1024).
    #[arg(long, default_value_t = 1000)]
    burst: usize,
}

#[derive(Clone, Debug, Args)]
struct IsolationArgs {
    /// Rounds per pass (each runs every server and attack size once, on a fresh server process).
    #[arg(long, default_value_t = 2)]
    iso_rounds: usize,
    /// Numbers of stalled attacker connections (0, the no-attack baseline, is always run).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    attackers: Vec<usize>,
    /// Seconds the good client measures, after the attackers have stalled. Longer than the
    /// header timeout, so it covers a wave of timeouts and reconnects.
    #[arg(long, default_value_t = 4.0)]
    window_secs: f64,
    /// Header timeout of both listeners in the churn pass, milliseconds (default:
    /// realip-listener's default).
    #[arg(long, default_value_t = 3000)]
    iso_header_timeout_ms: u64,
    /// Header timeout of both listeners in the static pass, milliseconds: longer than the
    /// ramp plus the window, so no stalled connection is dropped while the good client measures.
    #[arg(long, default_value_t = 30_000)]
    static_header_timeout_ms: u64,
    /// A good-client request slower than this counts as timed out, milliseconds.
    #[arg(long, default_value_t = 5000)]
    request_timeout_ms: u64,
    /// How long to wait for all attackers to be connected and stalled, seconds.
    #[arg(long, default_value_t = 6.0)]
    ramp_secs: f64,
    /// realip-listener's max_pending in a second configuration (skipped when it equals the
    /// crate's default).
    #[arg(long, default_value_t = 1024)]
    iso_max_pending: usize,
    /// realip-listener's accept batch in further configurations (default max_pending), one
    /// per value: how the work done per turn of the runtime moves the good client's latency.
    #[arg(long, value_delimiter = ',')]
    iso_accept_batch: Vec<usize>,
    /// Which passes to run: both (static, then churn), or only one of them.
    #[arg(long, value_enum, default_value_t = IsoPass::Both)]
    iso_pass: IsoPass,
    /// Leaves `proxy-protocol-rs` out of the isolation passes (to compare builds of ours).
    #[arg(long)]
    iso_no_peer: bool,
    /// Appends every good-client request of the isolation passes to this file, one line
    /// each: server label, attackers, round, request index, latency in µs (-1: timed out).
    #[arg(long)]
    iso_samples: Option<std::path::PathBuf>,
}

/// The isolation passes to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum IsoPass {
    /// Static, then churn.
    Both,
    /// Header timeout longer than the window: no stalled connection is dropped.
    Static,
    /// Header timeouts fire inside the window and the attackers reconnect.
    Churn,
}

#[derive(Clone, Debug, Args)]
struct MemoryArgs {
    /// Rounds (each runs every server and mode once, on a fresh server process).
    #[arg(long, default_value_t = 2)]
    mem_rounds: usize,
    /// Connections opened per measurement.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let serving = matches!(
        cli.command,
        Cmd::Serve { .. }
            | Cmd::ServeUdp { .. }
            | Cmd::LayerCalls { .. }
            | Cmd::Attack { .. }
            | Cmd::Jitter { .. }
    );
    if !serving && !cli.no_pin && std::env::var_os(PINNED_ENV).is_none() && can_pin() {
        return reexec_pinned();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // The re-executed harness runs on core 0 only, where `can_pin` would say no.
    let pin = !cli.no_pin && (std::env::var_os(PINNED_ENV).is_some() || can_pin());
    let result = rt.block_on(async move {
        match cli.command {
            Cmd::Serve {
                kind,
                header_timeout_ms,
                max_pending,
                accept_batch,
                defer_accept_secs,
            } => {
                let opts = ServeOptions {
                    header_timeout: Duration::from_millis(header_timeout_ms),
                    max_pending,
                    accept_batch,
                    defer_accept: Duration::from_secs(defer_accept_secs),
                };
                run_server(kind, opts).await
            }
            Cmd::ServeUdp { kind } => run_udp_server(kind).await,
            Cmd::Attack { addr, n, ramp_secs } => run_attack(addr, n, ramp_secs).await,
            Cmd::Jitter { secs } => {
                println!("{}", jitter(Duration::from_secs_f64(secs)));
                Ok(())
            }
            Cmd::LayerCalls {
                requests,
                case,
                same_work,
                step,
            } => {
                let mut case = if same_work {
                    realip_bench::cases::same_work_cases().swap_remove(case)
                } else {
                    realip_bench::cases::layer_cases().swap_remove(case)
                };
                case.check();
                for _ in 0..requests {
                    std::hint::black_box(match step {
                        LayerStep::Call => case.realip_service(),
                        LayerStep::Resolve => case.realip_resolve(),
                        LayerStep::ResolveWithoutPort => case.realip_resolve_without_port(),
                        LayerStep::ClientIp => case.client_ip(),
                        LayerStep::AxumClientIp => case.axum_client_ip(),
                        LayerStep::RealIp => case.real_ip(),
                    });
                }
                Ok(())
            }
            Cmd::Udp(a) => {
                preface(pin);
                udp(&a, pin).await
            }
            Cmd::Accept(a) => {
                preface(pin);
                accept(&a, pin).await
            }
            Cmd::Client(a) => client_only(&a).await,
            Cmd::MqttConnect {
                addr,
                sessions,
                in_flight,
                tag,
            } => mqtt_connect(addr, sessions, in_flight, &tag).await,
            Cmd::Drain(a) => {
                preface(pin);
                drain(&a, pin).await
            }
            Cmd::Isolation(a) => {
                preface(pin);
                isolation(&a, pin).await
            }
            Cmd::Memory(a) => {
                preface(pin);
                memory(&a, pin).await
            }
            Cmd::Broker(a) => {
                preface(pin);
                broker(&a, pin).await
            }
            Cmd::Micro(a) => {
                preface(pin);
                micro(&a);
                Ok(())
            }
            Cmd::All {
                accept: a,
                drain: d,
                isolation: i,
                memory: m,
                micro: u,
                udp: p,
                broker: b,
            } => {
                preface(pin);
                accept(&a, pin).await?;
                drain(&d, pin).await?;
                isolation(&i, pin).await?;
                memory(&m, pin).await?;
                micro(&u);
                udp(&p, pin).await?;
                broker(&b, pin).await?;
                println!("\nLoad average at the end: {}", procfs::load_average());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Pinning needs `taskset` and at least two cores.
fn can_pin() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2)
        && Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Runs this harness again under `taskset -c 0`, and returns its exit status.
fn reexec_pinned() -> ExitCode {
    let exe = std::env::current_exe().expect("current executable");
    let status = Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .status();
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("load: cannot run taskset: {e}");
            ExitCode::FAILURE
        }
    }
}

fn preface(pin: bool) {
    let (soft, hard) = procfs::nofile_limit().unwrap_or_default();
    println!("Machine: {}", procfs::machine());
    println!(
        "Pinning: {}; RLIMIT_NOFILE soft {soft} hard {hard}",
        if pin {
            "load generator on core 0, each server process on core 1 (taskset)"
        } else {
            "none"
        }
    );
    if pin {
        for core in ["0", "1"] {
            match jitter_on(core) {
                Ok(line) => println!("Stalls, core {core}: {line}"),
                Err(err) => println!("Stalls, core {core}: not measured ({err})"),
            }
        }
    }
}

/// `load jitter` on `core`, one core after the other.
fn jitter_on(core: &str) -> io::Result<String> {
    let out = Command::new("taskset")
        .args(["-c", core])
        .arg(std::env::current_exe()?)
        .args(["jitter", "--secs", "3"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// How late this thread wakes from 0.5 ms sleeps during `secs`.
fn jitter(secs: Duration) -> String {
    let sleep = Duration::from_micros(500);
    let start = std::time::Instant::now();
    let mut late = Vec::new();
    let mut wakes = 0u64;
    let mut last = start;
    while last.duration_since(start) < secs {
        std::thread::sleep(sleep);
        let now = std::time::Instant::now();
        late.push(now.duration_since(last).saturating_sub(sleep));
        wakes += 1;
        last = now;
    }
    let over = |ms: u64| {
        late.iter()
            .filter(|l| **l > Duration::from_millis(ms))
            .count()
    };
    let max = late.iter().max().copied().unwrap_or_default();
    format!(
        "{wakes} wake-ups from 0.5 ms sleeps in {:.0} s: {} late by more than 1 ms, {} by \
         more than 2 ms, {} by more than 5 ms; the latest {:.1} ms",
        secs.as_secs_f64(),
        over(1),
        over(2),
        over(5),
        max.as_secs_f64() * 1e3
    )
}

async fn run_server(kind: ServerKind, opts: ServeOptions) -> io::Result<()> {
    // tokio's `TcpListener::bind` listens with a backlog of 128; servers in production
    // usually ask for more, and the drain bursts need room for their queued connections.
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let listener = socket.listen(BACKLOG)?;
    if !opts.defer_accept.is_zero() {
        realip_listener::set_defer_accept(&listener, opts.defer_accept)?;
    }
    println!("LISTENING {}", listener.local_addr()?);
    io::stdout().flush()?;
    exit_with_stdin();
    server::serve(kind, listener, opts).await
}

async fn run_udp_server(kind: UdpKind) -> io::Result<()> {
    let (addr, serve) = udp_bench::bind(kind).await?;
    println!("LISTENING {addr}");
    io::stdout().flush()?;
    exit_with_stdin();
    serve.await
}

/// The `attack` command: [`Attack`] in its own process, driven over stdin/stdout.
async fn run_attack(addr: SocketAddr, n: usize, ramp_secs: f64) -> io::Result<()> {
    use tokio::io::AsyncBufReadExt;
    // Half a v2 header (14 of its 28 bytes).
    let partial: Arc<[u8]> = v2_header()[..14].into();
    let attack = Attack::start(addr, n, partial, Duration::from_secs_f64(ramp_secs)).await;
    println!("STALLED {}", attack.stalled());
    io::stdout().flush()?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "stats" {
            println!("STATS {} {}", attack.stalled(), attack.dropped());
            io::stdout().flush()?;
        }
    }
    attack.stop().await;
    Ok(())
}

/// Ends the process when the parent, which holds our stdin, closes it. A `stats` line on
/// stdin is answered on stdout with the allocator's counts since the start: `STATS
/// allocations=<n> bytes=<bytes allocated> live=<bytes held now>`.
fn exit_with_stdin() {
    tokio::spawn(async {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim() == "stats" {
                let s = ALLOC.stats();
                let live = s.bytes_allocated as i64 - s.bytes_deallocated as i64
                    + s.bytes_reallocated as i64;
                println!(
                    "STATS allocations={} bytes={} live={live}",
                    s.allocations, s.bytes_allocated
                );
                let _ = io::stdout().flush();
            }
        }
        std::process::exit(0);
    });
}

/// The allocator's counts reported by a server process.
#[derive(Clone, Copy, Debug)]
struct AllocStats {
    /// Allocations since the start.
    allocations: u64,
    /// Bytes held now.
    live: i64,
}

/// A server in its own process; killed on drop.
#[derive(Debug)]
struct ServerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    addr: SocketAddr,
    pid: u32,
}

impl ServerProc {
    fn spawn(kind: ServerKind, opts: ServeOptions, pin: bool) -> io::Result<Self> {
        let mut args = vec![
            "serve".to_owned(),
            "--kind".to_owned(),
            kind.name().to_owned(),
            "--header-timeout-ms".to_owned(),
            opts.header_timeout.as_millis().to_string(),
        ];
        if let Some(max) = opts.max_pending {
            args.extend(["--max-pending".to_owned(), max.to_string()]);
        }
        if let Some(batch) = opts.accept_batch {
            args.extend(["--accept-batch".to_owned(), batch.to_string()]);
        }
        if !opts.defer_accept.is_zero() {
            args.extend([
                "--defer-accept-secs".to_owned(),
                opts.defer_accept.as_secs().max(1).to_string(),
            ]);
        }
        Self::spawn_with(&args, kind.name(), pin)
    }

    fn spawn_udp(kind: UdpKind, pin: bool) -> io::Result<Self> {
        let args = ["serve-udp", "--kind", kind.name()].map(str::to_owned);
        Self::spawn_with(&args, kind.name(), pin)
    }

    /// Runs this harness with `args` (a `serve` command), on core 1 when pinning.
    fn spawn_with(args: &[String], name: &str, pin: bool) -> io::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = if pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("1").arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args);
        let (child, stdin, stdout, addr) =
            spawn_announcing(cmd, "LISTENING ", &format!("{name} server"))?;
        let pid = child.id();
        Ok(Self {
            child,
            stdin,
            stdout,
            addr,
            pid,
        })
    }
}

/// Starts `cmd` with piped stdin and stdout and reads its first line, which must be `prefix`
/// followed by a value (a server's address, the attackers stalled): the child, its pipes and
/// the value. The child is killed if the line is anything else.
fn spawn_announcing<T: std::str::FromStr>(
    mut cmd: Command,
    prefix: &str,
    what: &str,
) -> io::Result<(Child, ChildStdin, BufReader<std::process::ChildStdout>, T)> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.kill();
        return Err(io::Error::other(format!("{what}: no pipes to the child")));
    };
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    match line
        .trim()
        .strip_prefix(prefix)
        .and_then(|value| value.parse().ok())
    {
        Some(value) => Ok((child, stdin, stdout, value)),
        None => {
            let _ = child.kill();
            Err(io::Error::other(format!("{what} did not start: {line:?}")))
        }
    }
}

/// The isolation passes' attackers, in their own process (`load attack`) on the load core
/// at the lowest CPU priority (`nice -n 19`), so that the good client, which shares that
/// core, is not queued behind the attack generator's own work: what is measured is how
/// the server under attack treats the good client.
struct AttackProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    /// Attackers stalled when the ramp ended.
    stalled_at_start: usize,
}

impl AttackProc {
    fn start(addr: SocketAddr, n: usize, ramp: Duration) -> io::Result<Self> {
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "19"])
            .arg(std::env::current_exe()?)
            .args(["--no-pin", "attack", "--addr"])
            .arg(addr.to_string())
            .arg("--n")
            .arg(n.to_string())
            .arg("--ramp-secs")
            .arg(ramp.as_secs_f64().to_string());
        let (child, stdin, stdout, stalled_at_start) =
            spawn_announcing(cmd, "STALLED ", "attackers")?;
        Ok(Self {
            child,
            stdin,
            stdout,
            stalled_at_start,
        })
    }

    /// Attacker connections the server has closed so far.
    fn dropped(&mut self) -> io::Result<u64> {
        self.stdin.write_all(b"stats\n")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        line.split_whitespace()
            .nth(2)
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| io::Error::other(format!("attackers' stats: {line:?}")))
    }
}

impl Drop for AttackProc {
    fn drop(&mut self) {
        // Its stdin closes with it: the attackers close their connections and exit.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    /// Asks the server for its allocator's counts.
    fn alloc_stats(&mut self) -> io::Result<AllocStats> {
        self.stdin.write_all(b"stats\n")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        let field = |name: &str| {
            line.split_whitespace().find_map(|kv| {
                kv.strip_prefix(name)?
                    .strip_prefix('=')?
                    .parse::<i64>()
                    .ok()
            })
        };
        match (field("allocations"), field("live")) {
            (Some(allocations), Some(live)) => Ok(AllocStats {
                allocations: allocations.unsigned_abs(),
                live,
            }),
            _ => Err(io::Error::other(format!("bad stats line: {line:?}"))),
        }
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One progress line on stderr: the round's rate per server.
fn progress(section: &str, round: usize, rounds: usize, rates: &[f64]) {
    let rates = rates
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect::<Vec<_>>()
        .join(" / ");
    eprintln!("{section} round {}/{rounds}: {rates}", round + 1);
}

/// The smallest and largest of `values`.
fn min_max(values: &[f64]) -> (f64, f64) {
    (
        values.iter().copied().fold(f64::INFINITY, f64::min),
        values.iter().copied().fold(0.0, f64::max),
    )
}

fn v2_header() -> Vec<u8> {
    header::v2(header::src4(), header::dst4(), &[])
}

// ---------------------------------------------------------------------------------------------
// Accept throughput

struct Scenario {
    name: &'static str,
    kind: ServerKind,
    preamble: Arc<[u8]>,
    /// The server's listening socket has `TCP_DEFER_ACCEPT` (1 s).
    deferred: bool,
}

#[derive(Default)]
struct Samples {
    per_sec: Vec<f64>,
    cpu_us_per_conn: Vec<f64>,
    cpu_util: Vec<f64>,
    errors: u64,
    first_error: Option<String>,
}

async fn accept(args: &AcceptArgs, pin: bool) -> io::Result<()> {
    let timeout = Duration::from_secs(5);
    let opts = ServeOptions {
        header_timeout: timeout,
        max_pending: None,
        accept_batch: None,
        defer_accept: Duration::ZERO,
    };
    let scenarios = accept_scenarios(true);
    let servers = scenario_servers(&scenarios, opts, pin)?;
    let duration = Duration::from_secs_f64(args.secs);
    eprintln!("accept: warm-up");
    for (s, p) in scenarios.iter().zip(&servers) {
        client::load(
            p.addr,
            s.preamble.clone(),
            args.concurrency,
            duration.min(Duration::from_millis(500)),
        )
        .await;
    }
    let mut samples: Vec<Samples> = scenarios.iter().map(|_| Samples::default()).collect();
    // ratio[i][round] = scenario i / scenario (a) or (d) in the same round.
    let mut to_plain: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut to_peer: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut cpu_to_plain: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut cpu_to_peer: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    // The deferred rows' CPU against the deferred plain (e) and peer (h) servers.
    let mut cpu_to_plain_deferred: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    let mut cpu_to_peer_deferred: Vec<Vec<f64>> = vec![Vec::new(); scenarios.len()];
    for round in 0..args.rounds {
        let mut this_round = Vec::new();
        let mut this_cpu = Vec::new();
        for ((s, acc), p) in scenarios.iter().zip(&mut samples).zip(&servers) {
            let cpu0 = procfs::cpu_ns(p.pid)?;
            let r: LoadResult =
                client::load(p.addr, s.preamble.clone(), args.concurrency, duration).await;
            let cpu1 = procfs::cpu_ns(p.pid)?;
            acc.per_sec.push(r.per_sec());
            acc.cpu_us_per_conn
                .push((cpu1 - cpu0) as f64 / 1000.0 / r.ok.max(1) as f64);
            acc.cpu_util
                .push((cpu1 - cpu0) as f64 / r.elapsed.as_nanos() as f64);
            acc.errors += r.errors;
            if acc.first_error.is_none() {
                acc.first_error = r.first_error.clone();
            }
            this_round.push(r.per_sec());
            this_cpu.push(*acc.cpu_us_per_conn.last().expect("just pushed"));
        }
        for i in 0..scenarios.len() {
            to_plain[i].push(this_round[i] / this_round[0]);
            to_peer[i].push(this_round[i] / this_round[3]);
            cpu_to_plain[i].push(this_cpu[i] / this_cpu[0]);
            cpu_to_peer[i].push(this_cpu[i] / this_cpu[3]);
            if scenarios[i].deferred {
                cpu_to_plain_deferred[i].push(this_cpu[i] / this_cpu[4]);
                cpu_to_peer_deferred[i].push(this_cpu[i] / this_cpu[7]);
            }
        }
        progress("accept", round, args.rounds, &this_round);
    }
    println!(
        "\n### Accept throughput\n\n{} rounds × {} s per server, {} concurrent client tasks, \
         interleaved (a b c … h a b c … h …); (e) to (h) are (a) to (d) with `TCP_DEFER_ACCEPT` \
         (1 s) on the listening socket (realip-listener's `Builder::defer_accept`; the same \
         socket option for the others), the last two columns their CPU against (e) and (h); \
         each loop = connect, send header + `ping\\n` in one \
         write, read `pong\\n`, close. Ratios are medians of the per-round ratios. Server CPU = \
         the server process's CPU time (sum of /proc/<pid>/task/*/schedstat) / completed \
         connections; server core busy = that CPU time / wall time. When the server core is \
         not saturated, conn/s is bounded by the load generator and the CPU columns are the \
         server's cost.\n",
        args.rounds, args.secs, args.concurrency
    );
    println!(
        "| server | conn/s (median) | min–max | ÷ (a) plain | ÷ (d) peer | server CPU µs/conn (median) | ÷ (a) | ÷ (d) | server core busy | errors | CPU ÷ (e) | CPU ÷ (h) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, (s, acc)) in scenarios.iter().zip(&samples).enumerate() {
        let (min, max) = min_max(&acc.per_sec);
        let deferred_ratio = |ratios: &[f64]| {
            if ratios.is_empty() {
                "—".to_owned()
            } else {
                format!("{:.3}", median(ratios))
            }
        };
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3} | {:.1} | {:.3} | {:.3} | {:.0} % | {} | {} | {} |",
            s.name,
            median(&acc.per_sec),
            min,
            max,
            median(&to_plain[i]),
            median(&to_peer[i]),
            median(&acc.cpu_us_per_conn),
            median(&cpu_to_plain[i]),
            median(&cpu_to_peer[i]),
            median(&acc.cpu_util) * 100.0,
            acc.errors,
            deferred_ratio(&cpu_to_plain_deferred[i]),
            deferred_ratio(&cpu_to_peer_deferred[i]),
        );
    }
    for (s, acc) in scenarios.iter().zip(&samples) {
        if let Some(e) = &acc.first_error {
            println!("\nFirst error for {}: {e}", s.name);
        }
    }
    Ok(())
}

/// `load client`: the accept-throughput loop against `args.addr`, once.
async fn client_only(args: &ClientArgs) -> io::Result<()> {
    let header = match args.header {
        HeaderKind::None => Vec::new(),
        HeaderKind::V1 => header::v1(header::src4(), header::dst4()),
        HeaderKind::V2 => v2_header(),
    };
    let r = client::load(
        args.addr,
        client::preamble(&header),
        args.concurrency,
        Duration::from_secs_f64(args.secs),
    )
    .await;
    println!(
        "connections={} errors={} secs={:.3} per_sec={:.0}",
        r.ok,
        r.errors,
        r.elapsed.as_secs_f64(),
        r.per_sec()
    );
    if let Some(e) = r.first_error {
        eprintln!("first error: {e}");
    }
    Ok(())
}

async fn mqtt_connect(
    addr: SocketAddr,
    sessions: usize,
    in_flight: usize,
    tag: &str,
) -> io::Result<()> {
    let cpu_before = procfs::cpu_ns(std::process::id())?;
    let opened = realip_bench::mqtt::connect_many(addr, sessions, in_flight, tag).await;
    let cpu = procfs::cpu_ns(std::process::id())?.saturating_sub(cpu_before);
    println!(
        "sessions={} errors={} secs={:.3} p50_us={:.0} p99_us={:.0} client_cpu_us={:.1}",
        opened.held.len(),
        opened.errors,
        opened.elapsed.as_secs_f64(),
        us(percentile(&opened.latencies, 50.0)),
        us(percentile(&opened.latencies, 99.0)),
        cpu as f64 / 1e3 / opened.held.len().max(1) as f64,
    );
    io::stdout().flush()?;
    // Held until stdin ends, so that the broker can be measured with every session open.
    tokio::task::spawn_blocking(|| io::copy(&mut io::stdin().lock(), &mut io::sink()))
        .await
        .map_err(io::Error::other)??;
    drop(opened);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Accept capacity (drain)

/// Sends `signal` (`STOP` or `CONT`) to our own server process.
fn signal(pid: u32, signal: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -{signal} {pid} failed")))
    }
}

/// One server process per scenario, so that every scenario's server has been idle for the
/// same time when its turn comes: v1 and v2 on a shared process would run one after the other,
/// the second with the first's caches and warmed-up allocator.
fn scenario_servers(
    scenarios: &[Scenario],
    opts: ServeOptions,
    pin: bool,
) -> io::Result<Vec<ServerProc>> {
    scenarios
        .iter()
        .map(|s| {
            let defer_accept = if s.deferred {
                Duration::from_secs(1)
            } else {
                Duration::ZERO
            };
            ServerProc::spawn(
                s.kind,
                ServeOptions {
                    defer_accept,
                    ..opts
                },
                pin,
            )
        })
        .collect()
}

/// Plain, ours v1, ours v2, the peer; then, with `deferred`, the same four again with
/// `TCP_DEFER_ACCEPT` on their listening sockets ((e) to (h)).
fn accept_scenarios(deferred: bool) -> Vec<Scenario> {
    let v1 = client::preamble(&header::v1(header::src4(), header::dst4()));
    let v2 = client::preamble(&v2_header());
    let none = client::preamble(&[]);
    let mut all = vec![
        Scenario {
            name: "(a) plain TcpListener",
            kind: ServerKind::Plain,
            preamble: none.clone(),
            deferred: false,
        },
        Scenario {
            name: "(b) realip-listener, v1",
            kind: ServerKind::Ours,
            preamble: v1.clone(),
            deferred: false,
        },
        Scenario {
            name: "(c) realip-listener, v2",
            kind: ServerKind::Ours,
            preamble: v2.clone(),
            deferred: false,
        },
        Scenario {
            name: "(d) proxy-protocol-rs, v2",
            kind: ServerKind::Peer,
            preamble: v2.clone(),
            deferred: false,
        },
    ];
    if deferred {
        all.extend([
            Scenario {
                name: "(e) plain TcpListener, deferred",
                kind: ServerKind::Plain,
                preamble: none,
                deferred: true,
            },
            Scenario {
                name: "(f) realip-listener, v1, deferred",
                kind: ServerKind::Ours,
                preamble: v1,
                deferred: true,
            },
            Scenario {
                name: "(g) realip-listener, v2, deferred",
                kind: ServerKind::Ours,
                preamble: v2.clone(),
                deferred: true,
            },
            Scenario {
                name: "(h) proxy-protocol-rs, v2, deferred",
                kind: ServerKind::Peer,
                preamble: v2,
                deferred: true,
            },
        ]);
    }
    all
}

/// One burst: stop the server, queue `burst` connections that have sent their header and
/// request, resume it, and time until every reply has arrived. Returns (conn/s, server CPU
/// µs per connection, server core busy fraction).
async fn drain_once(
    server: &ServerProc,
    s: &Scenario,
    burst: usize,
) -> io::Result<(f64, f64, f64)> {
    let fd0 = procfs::fd_count(server.pid)?;
    signal(server.pid, "STOP")?;
    let (open, failed) = client::hold(
        server.addr,
        s.preamble.clone(),
        burst,
        false,
        Duration::from_secs(3),
    )
    .await;
    if failed > 0 {
        signal(server.pid, "CONT")?;
        return Err(io::Error::other(format!(
            "{}: {failed} of {burst} connects failed while the server was stopped",
            s.name
        )));
    }
    let cpu0 = procfs::cpu_ns(server.pid)?;
    let start = tokio::time::Instant::now();
    let mut replies = tokio::task::JoinSet::new();
    for mut stream in open {
        replies.spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut reply = [0u8; client::REPLY.len()];
            tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut reply)).await
        });
    }
    signal(server.pid, "CONT")?;
    let mut errors = 0;
    while let Some(r) = replies.join_next().await {
        if !matches!(r, Ok(Ok(Ok(_)))) {
            errors += 1;
        }
    }
    let elapsed = start.elapsed();
    let cpu1 = procfs::cpu_ns(server.pid)?;
    if errors > 0 {
        return Err(io::Error::other(format!(
            "{}: {errors} replies missing",
            s.name
        )));
    }
    // Let the server close everything before the next burst.
    for _ in 0..200 {
        if procfs::fd_count(server.pid)? <= fd0 {
            break;
        }
        sleep(Duration::from_millis(10)).await;
    }
    let cpu = (cpu1 - cpu0) as f64;
    Ok((
        burst as f64 / elapsed.as_secs_f64(),
        cpu / 1000.0 / burst as f64,
        cpu / elapsed.as_nanos() as f64,
    ))
}

async fn drain(args: &DrainArgs, pin: bool) -> io::Result<()> {
    let opts = ServeOptions {
        header_timeout: Duration::from_secs(5),
        max_pending: None,
        accept_batch: None,
        defer_accept: Duration::ZERO,
    };
    let scenarios = accept_scenarios(false);
    let servers = scenario_servers(&scenarios, opts, pin)?;
    eprintln!("drain: warm-up");
    for (s, p) in scenarios.iter().zip(&servers) {
        drain_once(p, s, args.burst).await?;
    }
    let n = scenarios.len();
    let (mut rate, mut cpu, mut busy) = (vec![vec![]; n], vec![vec![]; n], vec![vec![]; n]);
    let (mut to_plain, mut to_peer) = (vec![vec![]; n], vec![vec![]; n]);
    let (mut cpu_to_plain, mut cpu_to_peer) = (vec![vec![]; n], vec![vec![]; n]);
    for round in 0..args.drain_rounds {
        let mut this = Vec::new();
        let mut this_cpu = Vec::new();
        for (i, (s, p)) in scenarios.iter().zip(&servers).enumerate() {
            let (r, c, b) = drain_once(p, s, args.burst).await?;
            rate[i].push(r);
            cpu[i].push(c);
            busy[i].push(b);
            this.push(r);
            this_cpu.push(c);
        }
        for i in 0..n {
            to_plain[i].push(this[i] / this[0]);
            to_peer[i].push(this[i] / this[3]);
            cpu_to_plain[i].push(this_cpu[i] / this_cpu[0]);
            cpu_to_peer[i].push(this_cpu[i] / this_cpu[3]);
        }
        eprintln!(
            "drain round {}/{}: {}",
            round + 1,
            args.drain_rounds,
            this.iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    println!(
        "\n### Accept capacity (drain)\n\n{} rounds, interleaved (a b c d …). Each burst: the \
         server process is stopped (SIGSTOP), {} clients connect and send header + `ping\\n` \
         (the kernel completes the handshakes into the listen backlog), the server is resumed \
         (SIGCONT) and the time until every client has its `pong\\n` is measured. The load \
         generator only reads replies during that time, so the server core is the bottleneck \
         (see \"server core busy\"). Ratios are medians of per-round ratios.\n",
        args.drain_rounds, args.burst
    );
    println!(
        "| server | conn/s (median) | min–max | ÷ (a) plain | ÷ (d) peer | server CPU µs/conn (median) | ÷ (a) | ÷ (d) | server core busy |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (i, s) in scenarios.iter().enumerate() {
        let min = rate[i].iter().copied().fold(f64::INFINITY, f64::min);
        let max = rate[i].iter().copied().fold(0.0, f64::max);
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.3} | {:.1} | {:.3} | {:.3} | {:.0} % |",
            s.name,
            median(&rate[i]),
            min,
            max,
            median(&to_plain[i]),
            median(&to_peer[i]),
            median(&cpu[i]),
            median(&cpu_to_plain[i]),
            median(&cpu_to_peer[i]),
            median(&busy[i]) * 100.0
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Slow-client isolation

/// The isolation passes `args` asks for: static (no header timeout fires during the window),
/// then churn.
async fn isolation(args: &IsolationArgs, pin: bool) -> io::Result<()> {
    let passes = [
        (
            IsoPass::Static,
            args.static_header_timeout_ms,
            "Slow-client isolation, static: the stalled connections stay for the whole window",
        ),
        (
            IsoPass::Churn,
            args.iso_header_timeout_ms,
            "Slow-client isolation, churn: header timeouts fire and the attackers reconnect",
        ),
    ];
    for (pass, timeout_ms, title) in passes {
        if args.iso_pass == IsoPass::Both || args.iso_pass == pass {
            isolation_pass(args, pin, Duration::from_millis(timeout_ms), title).await?;
        }
    }
    Ok(())
}

async fn isolation_pass(
    args: &IsolationArgs,
    pin: bool,
    header_timeout: Duration,
    title: &str,
) -> io::Result<()> {
    let request_timeout = Duration::from_millis(args.request_timeout_ms);
    let window = Duration::from_secs_f64(args.window_secs);
    let good = client::preamble(&v2_header());
    let mut levels = vec![0];
    levels.extend(args.attackers.iter().copied().filter(|&n| n > 0));
    // (label, kind, max_pending, accept_batch)
    let mut kinds = vec![(
        format!(
            "realip-listener (default max_pending {})",
            realip_listener::DEFAULT_MAX_PENDING
        ),
        ServerKind::Ours,
        None,
        None,
    )];
    for &batch in &args.iso_accept_batch {
        kinds.push((
            format!("realip-listener, accept_batch {batch}"),
            ServerKind::Ours,
            None,
            Some(batch),
        ));
    }
    // The other cap, unless it is the default.
    if args.iso_max_pending != realip_listener::DEFAULT_MAX_PENDING {
        kinds.push((
            format!("realip-listener, max_pending {}", args.iso_max_pending),
            ServerKind::Ours,
            Some(args.iso_max_pending),
            None,
        ));
    }
    if !args.iso_no_peer {
        kinds.push(("proxy-protocol-rs".to_owned(), ServerKind::Peer, None, None));
    }
    // samples[kind][level]
    let mut samples = vec![vec![Vec::<Option<Duration>>::new(); levels.len()]; kinds.len()];
    let mut stalled_seen = vec![vec![Vec::<usize>::new(); levels.len()]; kinds.len()];
    let mut dropped_seen = vec![vec![Vec::<u64>::new(); levels.len()]; kinds.len()];
    for round in 0..args.iso_rounds {
        for (ki, (label, kind, max_pending, accept_batch)) in kinds.iter().enumerate() {
            for (li, &n) in levels.iter().enumerate() {
                let opts = ServeOptions {
                    header_timeout,
                    max_pending: *max_pending,
                    accept_batch: *accept_batch,
                    defer_accept: Duration::ZERO,
                };
                let server = ServerProc::spawn(*kind, opts, pin)?;
                // The server must answer before the attack starts.
                client::request(server.addr, &good).await?;
                let target = server.addr;
                let mut attack = if n > 0 {
                    let ramp = Duration::from_secs_f64(args.ramp_secs);
                    // Blocks until the attackers are stalled or the ramp has passed.
                    let start =
                        tokio::task::spawn_blocking(move || AttackProc::start(target, n, ramp));
                    Some(start.await.map_err(io::Error::other)??)
                } else {
                    None
                };
                let stalled = attack.as_ref().map_or(0, |a| a.stalled_at_start);
                let dropped_before = match attack.as_mut() {
                    Some(a) => a.dropped()?,
                    None => 0,
                };
                sleep(Duration::from_millis(200)).await;
                let got =
                    probe_on_own_thread(server.addr, good.clone(), window, request_timeout).await?;
                let dropped = match attack.as_mut() {
                    Some(a) => a.dropped()? - dropped_before,
                    None => 0,
                };
                drop(attack);
                drop(server);
                if let Some(path) = &args.iso_samples {
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(path)?;
                    for (i, latency) in got.iter().enumerate() {
                        let micros = latency.map_or(-1.0, |d| d.as_secs_f64() * 1e6);
                        writeln!(file, "{label}\t{n}\t{round}\t{i}\t{micros:.0}")?;
                    }
                }
                let ok: Vec<_> = got.iter().flatten().copied().collect();
                eprintln!(
                    "isolation (header timeout {} ms) round {}/{} {label} attackers={n}: stalled \
                     at start {stalled}, dropped by server during window {dropped}, {} samples, \
                     {} timed out, p99 {:?}",
                    header_timeout.as_millis(),
                    round + 1,
                    args.iso_rounds,
                    got.len(),
                    got.len() - ok.len(),
                    percentile(&sorted(&ok), 99.0)
                );
                samples[ki][li].extend(got);
                stalled_seen[ki][li].push(stalled);
                dropped_seen[ki][li].push(dropped);
            }
        }
    }
    println!(
        "\n### {title}\n\n{} rounds; each (server, attackers) pair runs on a fresh \
         server process. Attackers send the first half (14 bytes) of a v2 header and stall; when the \
         server drops one (header timeout {} ms, both listeners) it reconnects, so the attack is \
         sustained. The good client starts once all attackers are stalled or after {} s (\
         \"stalled conns\" = how many were by then; the others are still in SYN retransmission \
         because the server stopped taking connections). The attackers run in their own \
         process on the load core at the lowest CPU priority (`nice -n 19`), so that the good \
         client is not queued behind the attack generator's own work on that core. The good \
         client, on its own thread and tokio runtime in the harness (the same core), then \
         loops connect → v2 header + `ping\\n` → `pong\\n` → close (5 ms apart) for {} s; a \
         request slower than {} ms counts as timed out (and as {} ms in the percentiles).\n",
        args.iso_rounds,
        header_timeout.as_millis(),
        args.ramp_secs,
        args.window_secs,
        args.request_timeout_ms,
        args.request_timeout_ms,
    );
    println!(
        "| server | stalled conns (median reached) | attacker conns closed by the server during the window (median) | good requests | timed out | p50 | p90 | p99 | p99 ÷ no-attack p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (ki, (label, _, _, _)) in kinds.iter().enumerate() {
        let base_p99 = p99_with_timeouts(&samples[ki][0], request_timeout);
        for (li, &n) in levels.iter().enumerate() {
            let s = &samples[ki][li];
            let timed_out = s.iter().filter(|x| x.is_none()).count();
            let all = sorted(
                &s.iter()
                    .map(|x| x.unwrap_or(request_timeout))
                    .collect::<Vec<_>>(),
            );
            let p50 = percentile(&all, 50.0);
            let p90 = percentile(&all, 90.0);
            let p99 = p99_with_timeouts(s, request_timeout);
            let stalled = median(
                &stalled_seen[ki][li]
                    .iter()
                    .map(|&v| v as f64)
                    .collect::<Vec<_>>(),
            );
            println!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                label,
                if n == 0 {
                    "0 (baseline)".to_owned()
                } else {
                    format!("{stalled:.0} of {n}")
                },
                median(
                    &dropped_seen[ki][li]
                        .iter()
                        .map(|&v| v as f64)
                        .collect::<Vec<_>>()
                ),
                s.len(),
                timed_out,
                fmt_latency(p50, timed_out > s.len() / 2, request_timeout),
                fmt_latency(p90, timed_out * 10 >= s.len(), request_timeout),
                fmt_latency(p99, timed_out * 100 >= s.len(), request_timeout),
                match (p99, base_p99) {
                    (Some(a), Some(b)) if n > 0 => format!(
                        "{}{:.2}",
                        if timed_out * 100 >= s.len() {
                            "≥ "
                        } else {
                            ""
                        },
                        a.as_secs_f64() / b.as_secs_f64()
                    ),
                    _ => "—".to_owned(),
                }
            );
        }
    }
    Ok(())
}

/// Runs the good client on its own thread and runtime, so that its latency does not include
/// waiting behind the attackers' tasks in the harness's runtime queue (the thread is still on
/// core 0 with them; the OS scheduler wakes the mostly idle prober promptly).
async fn probe_on_own_thread(
    addr: SocketAddr,
    preamble: Arc<[u8]>,
    window: Duration,
    request_timeout: Duration,
) -> io::Result<Vec<Option<Duration>>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("good-client".to_owned())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let got = rt.block_on(client::probe(
                addr,
                &preamble,
                window,
                Duration::from_millis(5),
                request_timeout,
            ));
            let _ = tx.send(got);
        })?;
    rx.await
        .map_err(|_| io::Error::other("good-client thread panicked"))
}

fn name_of(kind: ServerKind) -> &'static str {
    match kind {
        ServerKind::Plain => "plain TcpListener",
        ServerKind::Ours => "realip-listener",
        ServerKind::Peer => "proxy-protocol-rs",
    }
}

fn sorted(v: &[Duration]) -> Vec<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn p99_with_timeouts(s: &[Option<Duration>], cap: Duration) -> Option<Duration> {
    let all = sorted(&s.iter().map(|x| x.unwrap_or(cap)).collect::<Vec<_>>());
    percentile(&all, 99.0)
}

fn fmt_latency(d: Option<Duration>, capped: bool, cap: Duration) -> String {
    match d {
        None => "—".to_owned(),
        Some(_) if capped => format!("> {} s (timed out)", cap.as_secs_f64()),
        Some(d) if d < Duration::from_millis(10) => format!("{:.0} µs", d.as_secs_f64() * 1e6),
        Some(d) => format!("{:.1} ms", d.as_secs_f64() * 1e3),
    }
}

// ---------------------------------------------------------------------------------------------
// Micro-benchmarks (on core 0, the harness's own)

fn micro(args: &MicroArgs) {
    let batch = Duration::from_micros(args.batch_us);
    eprintln!("micro: header parse");
    print!(
        "{}",
        realip_bench::micro::parse_table(args.micro_rounds, batch)
    );
    eprintln!("micro: layer");
    print!(
        "{}",
        realip_bench::micro::layer_table(args.micro_rounds, batch)
    );
    eprintln!("micro: layer, same work as the rightmost-only crates");
    print!(
        "{}",
        realip_bench::micro::same_work_table(args.micro_rounds, batch)
    );
}

// ---------------------------------------------------------------------------------------------
// Memory

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Connections that sent half a header and stall.
    Pending,
    /// Connections that completed header + request + reply and stay open.
    Accepted,
}

async fn memory(args: &MemoryArgs, pin: bool) -> io::Result<()> {
    let kinds = [ServerKind::Plain, ServerKind::Ours, ServerKind::Peer];
    let modes = [Mode::Pending, Mode::Accepted];
    // results[kind][mode] = (bytes per server-side connection, server-side connections,
    // client-side open, heap bytes held per server-side connection, allocations per connection)
    let mut results =
        vec![vec![Vec::<(f64, usize, usize, f64, f64)>::new(); modes.len()]; kinds.len()];
    // Long enough that no pending handshake times out during the measurement.
    let header_timeout = Duration::from_secs(60);
    for round in 0..args.mem_rounds {
        for (ki, &kind) in kinds.iter().enumerate() {
            for (mi, &mode) in modes.iter().enumerate() {
                let opts = ServeOptions {
                    header_timeout,
                    // Room for every connection to be pending inside the listener.
                    max_pending: Some(args.conns + 1024),
                    accept_batch: None,
                    defer_accept: Duration::ZERO,
                };
                let mut server = ServerProc::spawn(kind, opts, pin)?;
                let header = if kind == ServerKind::Plain {
                    Vec::new()
                } else {
                    v2_header()
                };
                let full = client::preamble(&header);
                // Warm the allocator and the runtime.
                client::load(server.addr, full.clone(), 8, Duration::from_millis(300)).await;
                sleep(Duration::from_millis(300)).await;
                let rss0 = procfs::vm_rss_kib(server.pid)?;
                let fd0 = procfs::fd_count(server.pid)?;
                let heap0 = server.alloc_stats()?;
                let (preamble, expect_reply): (Arc<[u8]>, bool) = match mode {
                    // Plain has no handshake: its "pending" connection is an accepted, idle one.
                    Mode::Pending => (header[..header.len() / 2].into(), false),
                    Mode::Accepted => (full.clone(), true),
                };
                let (open, failed) = client::hold(
                    server.addr,
                    preamble,
                    args.conns,
                    expect_reply,
                    Duration::from_secs(3),
                )
                .await;
                // Let the server take what the kernel queued.
                settle(server.pid).await;
                let rss1 = procfs::vm_rss_kib(server.pid)?;
                let fd1 = procfs::fd_count(server.pid)?;
                let heap1 = server.alloc_stats()?;
                let server_conns = fd1.saturating_sub(fd0);
                let per = (rss1 as f64 - rss0 as f64) * 1024.0 / server_conns.max(1) as f64;
                let heap_per = (heap1.live - heap0.live) as f64 / server_conns.max(1) as f64;
                let allocs_per =
                    (heap1.allocations - heap0.allocations) as f64 / server_conns.max(1) as f64;
                eprintln!(
                    "memory round {}/{} {} {}: client open {} (failed {failed}), server fds +{server_conns}, \
                     VmRSS {rss0} → {rss1} KiB, {per:.0} B/conn, heap {heap_per:.0} B/conn",
                    round + 1,
                    args.mem_rounds,
                    kind.name(),
                    mode_name(mode),
                    open.len(),
                );
                results[ki][mi].push((per, server_conns, open.len(), heap_per, allocs_per));
                drop(open);
                drop(server);
            }
        }
    }
    println!(
        "\n### Memory\n\n{} rounds; each (server, mode) runs on a fresh server process, warmed \
         with 0.3 s of requests. {} client connections are opened (128 connects in flight, 3 s \
         connect timeout); the server's VmRSS (/proc/<pid>/status) is read before and after, \
         and divided by the number of sockets the server process actually holds (its fd count \
         delta). Pending = sent the first half of a v2 header (14 bytes) and stalls (plain: sent \
         nothing, so an accepted idle connection waiting for its request). realip-listener runs \
         with max_pending raised to {} so that every connection is pending inside it; \
         proxy-protocol-rs reads one header at a time inside `accept()`, so the other connections \
         wait in the kernel's accept queue (not in the process's RSS) and connects beyond it time \
         out. Accepted = v2 header + `ping\\n` (plain: `ping\\n` only), `pong\\n` read, \
         connection left open; the per-connection task is the same in every server and holds \
         the accepted stream (ours: `ProxiedStream<TcpStream>`, whose leftover is the 5-byte \
         `ping\\n`, replayed to the handler and then freed). Heap = the bytes the server's \
         allocator holds (a counting global allocator: bytes requested, not malloc's rounding) \
         after minus before, per server-side connection; allocations = the allocations made \
         meanwhile (setup of the connections included), per connection.\n",
        args.mem_rounds,
        args.conns,
        args.conns + 1024
    );
    println!(
        "Type sizes (bytes, inline): `TcpStream` {}, `realip_listener::ProxiedStream<TcpStream>` \
         {}, `ProxiedAddr` {}, `realip_listener::ProxyInfo` {} (behind an `Arc` in \
         `ProxiedAddr`), `proxy_protocol_rs::ProxiedStream` {}, `proxy_protocol_rs::ProxyInfo` \
         {}. The handler's future (what each connection's task holds besides tokio's own \
         fields): plain {}, realip-listener {}, proxy-protocol-rs {}.\n",
        std::mem::size_of::<tokio::net::TcpStream>(),
        std::mem::size_of::<realip_listener::ProxiedStream<tokio::net::TcpStream>>(),
        std::mem::size_of::<realip_listener::ProxiedAddr>(),
        std::mem::size_of::<realip_listener::ProxyInfo>(),
        std::mem::size_of::<proxy_protocol_rs::ProxiedStream>(),
        std::mem::size_of::<proxy_protocol_rs::ProxyInfo>(),
        server::handler_future_size::<tokio::net::TcpStream>(),
        server::handler_future_size::<realip_listener::ProxiedStream<tokio::net::TcpStream>>(),
        server::handler_future_size::<proxy_protocol_rs::ProxiedStream>(),
    );
    println!(
        "| server | mode | client conns open (median) | server-side conns (median) | bytes/conn (median) | min–max | vs plain (bytes) | heap bytes/conn (median) | heap vs plain | allocations/conn |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mi, &mode) in modes.iter().enumerate() {
        let plain = median(&results[0][mi].iter().map(|r| r.0).collect::<Vec<_>>());
        let plain_heap = median(&results[0][mi].iter().map(|r| r.3).collect::<Vec<_>>());
        for (ki, &kind) in kinds.iter().enumerate() {
            let r = &results[ki][mi];
            let per: Vec<f64> = r.iter().map(|x| x.0).collect();
            let conns: Vec<f64> = r.iter().map(|x| x.1 as f64).collect();
            let open: Vec<f64> = r.iter().map(|x| x.2 as f64).collect();
            if median(&conns) < 100.0 {
                // Nothing to divide by: the connections are not in this process.
                println!(
                    "| {} | {} | {:.0} | {:.0} | n/a (not held by the process) | | | | | |",
                    name_of(kind),
                    mode_name(mode),
                    median(&open),
                    median(&conns),
                );
                continue;
            }
            let heap = median(&r.iter().map(|x| x.3).collect::<Vec<_>>());
            let allocs = median(&r.iter().map(|x| x.4).collect::<Vec<_>>());
            let min = per.iter().copied().fold(f64::INFINITY, f64::min);
            let max = per.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            println!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0}–{:.0} | {} | {heap:.0} | {} | {allocs:.1} |",
                name_of(kind),
                mode_name(mode),
                median(&open),
                median(&conns),
                median(&per),
                min,
                max,
                if kind == ServerKind::Plain {
                    "—".to_owned()
                } else {
                    format!("{:+.0}", median(&per) - plain)
                },
                if kind == ServerKind::Plain {
                    "—".to_owned()
                } else {
                    format!("{:+.0}", heap - plain_heap)
                },
            );
        }
    }
    Ok(())
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Pending => "pending handshake",
        Mode::Accepted => "accepted",
    }
}

/// Waits until the server's fd count has not changed for 500 ms (at most 10 s).
async fn settle(pid: u32) {
    let mut last = procfs::fd_count(pid).unwrap_or(0);
    let mut stable = 0;
    for _ in 0..100 {
        sleep(Duration::from_millis(100)).await;
        let now = procfs::fd_count(pid).unwrap_or(0);
        if now == last {
            stable += 1;
            if stable >= 5 {
                break;
            }
        } else {
            stable = 0;
            last = now;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// UDP datagrams per second

async fn udp(args: &UdpArgs, pin: bool) -> io::Result<()> {
    let servers = UdpKind::ALL
        .iter()
        .map(|&k| ServerProc::spawn_udp(k, pin))
        .collect::<io::Result<Vec<_>>>()?;
    let duration = Duration::from_secs_f64(args.udp_secs);
    let run = |kind: UdpKind, server: SocketAddr, duration: Duration| {
        udp_bench::load(
            server,
            kind,
            args.udp_flows,
            args.udp_window,
            args.udp_payload,
            duration,
        )
    };
    eprintln!("udp: warm-up");
    for (kind, p) in UdpKind::ALL.iter().zip(&servers) {
        run(*kind, p.addr, duration.min(Duration::from_millis(300))).await?;
    }
    let n = UdpKind::ALL.len();
    let mut per_sec = vec![Vec::new(); n];
    let mut cpu_ns_per = vec![Vec::new(); n];
    let mut to_plain = vec![Vec::new(); n];
    let mut cpu_to_plain = vec![Vec::new(); n];
    let mut lost = vec![0u64; n];
    for round in 0..args.udp_rounds {
        let mut this_round = vec![0.0; n];
        let mut this_cpu = vec![0.0; n];
        for (i, (kind, p)) in UdpKind::ALL.iter().zip(&servers).enumerate() {
            let cpu0 = procfs::cpu_ns(p.pid)?;
            let r = run(*kind, p.addr, duration).await?;
            let cpu1 = procfs::cpu_ns(p.pid)?;
            this_round[i] = r.per_sec();
            // Each reply is one datagram received and one sent by the server.
            this_cpu[i] = (cpu1 - cpu0) as f64 / r.replies.max(1) as f64;
            per_sec[i].push(this_round[i]);
            cpu_ns_per[i].push(this_cpu[i]);
            lost[i] += r.lost;
        }
        for i in 0..n {
            to_plain[i].push(this_round[i] / this_round[0]);
            cpu_to_plain[i].push(this_cpu[i] / this_cpu[0]);
        }
        progress("udp", round, args.udp_rounds, &this_round);
    }
    println!(
        "\n### UDP datagrams per second\n\n{} rounds × {} s per server, interleaved (plain, \
         v2-flow, v2-datagram, spp, plain, …); {} client flows (own source port each) × {} \
         datagrams in flight, {}-byte payload plus the format's header; the server echoes each \
         datagram to its flow (`recv_from` then `send_to`). Ratios are medians of the per-round \
         ratios. Server CPU = the server process's CPU time / echoed datagrams.\n",
        args.udp_rounds, args.udp_secs, args.udp_flows, args.udp_window, args.udp_payload
    );
    println!(
        "| server | datagrams/s (median) | min–max | ÷ plain | server CPU ns/datagram (median) | ÷ plain | lost |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, kind) in UdpKind::ALL.iter().enumerate() {
        let (min, max) = min_max(&per_sec[i]);
        println!(
            "| {} | {:.0} | {:.0}–{:.0} | {:.3} | {:.0} | {:.3} | {} |",
            if *kind == UdpKind::Plain {
                "plain `UdpSocket`".to_owned()
            } else {
                format!("`ProxyUdpSocket` {}", kind.name())
            },
            median(&per_sec[i]),
            min,
            max,
            median(&to_plain[i]),
            median(&cpu_ns_per[i]),
            median(&cpu_to_plain[i]),
            lost[i],
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Broker against mosquitto

async fn broker(args: &BrokerArgs, pin: bool) -> io::Result<()> {
    use realip_bench::mqtt::{self, BrokerKind, BrokerProc};
    let kinds = [BrokerKind::Realip, BrokerKind::Mosquitto];
    let fans: [(&str, usize, usize, u64, u8); 4] = [
        (
            "QoS 0 fan-out 1 → N",
            1,
            args.fan_width,
            args.fanout_messages,
            0,
        ),
        (
            "QoS 1 fan-out 1 → N",
            1,
            args.fan_width,
            args.fanout_messages,
            1,
        ),
        (
            "QoS 0 fan-in N → 1",
            args.fan_width,
            1,
            args.fanin_messages,
            0,
        ),
        (
            "QoS 1 fan-in N → 1",
            args.fan_width,
            1,
            args.fanin_messages,
            1,
        ),
    ];
    // Per kind: RSS bytes/session, sessions/s, CONNACK p99 µs; per fan: deliveries/s, p99 µs.
    // Each vector has one value per round, in round order, so that [0][i] and [1][i] pair up.
    let mut rss = [Vec::new(), Vec::new()];
    let mut rate = [Vec::new(), Vec::new()];
    let mut conn_p99 = [Vec::new(), Vec::new()];
    let mut conn_cpu = [Vec::new(), Vec::new()];
    let mut client_cpu = [Vec::new(), Vec::new()];
    let mut broker_sleeps = [Vec::new(), Vec::new()];
    let mut burst_rate = [Vec::new(), Vec::new()];
    let mut burst_cpu = [Vec::new(), Vec::new()];
    let mut fan_rate = vec![[Vec::new(), Vec::new()]; fans.len()];
    let mut fan_p99 = vec![[Vec::new(), Vec::new()]; fans.len()];
    let mut lost = vec![[0u64, 0u64]; fans.len()];
    let load_before = procfs::load_average();
    let start = |kind| {
        BrokerProc::start(
            kind,
            &args.realip_broker,
            &args.realip_broker_arg,
            &args.mosquitto,
            pin,
        )
    };
    for round in 0..args.broker_rounds {
        // A B, then B A: drift over the run hits both brokers alike.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for ki in order {
            let kind = kinds[ki];
            let b = start(kind).await?;
            let idle =
                mqtt::idle_sessions(&b, args.idle_sessions, args.connect_in_flight, "idle").await?;
            eprintln!(
                "broker round {}/{}: {}: {} sessions, {:.0} B/session, {:.0} CONNECT/s, {:.1} µs CPU/CONNECT, \
                 client {:.1} µs CPU/CONNECT, broker slept {:.2} times/CONNECT",
                round + 1,
                args.broker_rounds,
                kind.name(),
                idle.sessions,
                idle.rss_per_session,
                idle.rate,
                idle.cpu_us_per_session,
                idle.client_cpu_us_per_session,
                idle.broker_sleeps_per_session,
            );
            rss[ki].push(idle.rss_per_session);
            rate[ki].push(idle.rate);
            conn_p99[ki].push(us(percentile(&idle.latencies, 99.0)));
            conn_cpu[ki].push(idle.cpu_us_per_session);
            client_cpu[ki].push(idle.client_cpu_us_per_session);
            broker_sleeps[ki].push(idle.broker_sleeps_per_session);
            drop(idle);
            drop(b);
            let b = start(kind).await?;
            let bursts =
                mqtt::connect_bursts(&b, args.idle_sessions, args.connect_burst, "burst").await?;
            eprintln!(
                "  {}: bursts of {}: {:.0} CONNECT/s of the broker's time, {:.1} µs CPU/CONNECT",
                kind.name(),
                args.connect_burst,
                bursts.rate,
                bursts.cpu_us_per_session,
            );
            burst_rate[ki].push(bursts.rate);
            burst_cpu[ki].push(bursts.cpu_us_per_session);
            drop(bursts);
            drop(b);
            if args.broker_idle_only {
                continue;
            }
            let b = start(kind).await?;
            for (fi, &(name, pubs, subs, msgs, qos)) in fans.iter().enumerate() {
                let tag = format!("f{fi}");
                let r = mqtt::fan(&b, pubs, subs, msgs, qos, args.fan_window, &tag).await?;
                eprintln!(
                    "  {}: {name}: {:.0} deliveries/s, p99 {:.0} µs",
                    kind.name(),
                    r.deliveries_per_sec,
                    us(percentile(&r.latencies, 99.0))
                );
                fan_rate[fi][ki].push(r.deliveries_per_sec);
                fan_p99[fi][ki].push(us(percentile(&r.latencies, 99.0)));
                lost[fi][ki] += r.expected - r.delivered;
            }
        }
    }
    println!("\n### realip-broker against mosquitto\n");
    println!(
        "{} rounds, realip-broker and mosquitto (Debian 2.x) in turn (A B, then B A in the next round), each measurement on a fresh broker process \
         (pinned to core 1 when pinning), the same MQTT 3.1.1 client (this harness, one core). \
         Both brokers log nothing per connection (realip-broker `RUST_LOG=warn`, mosquitto `log_dest none`), \
         mosquitto without persistence and with `set_tcp_nodelay true` (realip-broker sets `TCP_NODELAY`). Idle: {} sessions (clean session, keep alive 0, {} CONNECTs in flight); \
         RSS = VmRSS growth ÷ sessions, rate = sessions ÷ time from the first CONNECT to the last CONNACK, \
         broker CPU = the broker process's CPU time (all threads, /proc schedstat) over that time ÷ sessions; \
         load client CPU = this process's CPU time over that time ÷ sessions (about 1 ÷ rate when the client's core sets the rate); \
         broker sleeps = the times the broker's threads blocked over that time (voluntary context switches) ÷ sessions \
         (each makes the client's core wake it up, over loopback). \
         Broker-bound bursts: on another fresh broker process, as many sessions in bursts of {burst}: the broker stopped (SIGSTOP), \
         {burst} clients connect and send CONNECT into its listen backlog, the broker resumed (SIGCONT); rate = sessions ÷ the sum of the times \
         from resuming it to each burst's last CONNACK, the client polling without sleeping meanwhile. \
         {fan}Per broker: median of the rounds, min–max in brackets. Ratio = realip-broker ÷ mosquitto: the median of \
         the rounds' ratios (each round's two measurements side by side), their min–max in brackets. \
         Load average before: {load_before}; after: {}.\n",
        args.broker_rounds,
        args.idle_sessions,
        args.connect_in_flight,
        procfs::load_average(),
        burst = args.connect_burst,
        fan = if args.broker_idle_only {
            String::new()
        } else {
            format!(
                "Fan: 1 → {w} ({} messages, each to {w} subscribers) and {w} → 1 ({} messages), 64-byte \
                 payloads carrying the send time, at most {} messages published and not yet delivered \
                 everywhere; latency = publish → delivery. ",
                args.fanout_messages,
                args.fanin_messages,
                args.fan_window,
                w = args.fan_width,
            )
        },
    );
    println!("| measure | realip-broker | mosquitto | ratio | goal | verdict |");
    println!("|---|---:|---:|---:|---|---|");
    // `goal`: Some(true) is ratio ≥ 1 (rates), Some(false) ratio ≤ 1 (memory, latency), None
    // a row that explains the others (no goal); `digits` after the decimal point.
    let row = |name: &str, v: &[Vec<f64>; 2], unit: &str, goal: Option<bool>, digits: usize| {
        if v[0].is_empty() {
            return;
        }
        let (a0, a1) = min_max(&v[0]);
        let (b0, b1) = min_max(&v[1]);
        let ratios: Vec<f64> = v[0].iter().zip(&v[1]).map(|(a, b)| a / b).collect();
        let ratio = median(&ratios);
        let (r0, r1) = min_max(&ratios);
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        let (goal, verdict) = match goal {
            Some(true) => ("≥ 1.0", if ratio >= 1.0 { "met" } else { "missed" }),
            Some(false) => ("≤ 1.0", if ratio <= 1.0 { "met" } else { "missed" }),
            None => ("—", "—"),
        };
        println!(
            "| {name} | {:.digits$}{unit} [{a0:.digits$}–{a1:.digits$}] | {:.digits$}{unit} [{b0:.digits$}–{b1:.digits$}] | {ratio:.2} [{r0:.2}–{r1:.2}] | {goal} | {verdict} |",
            median(&v[0]),
            median(&v[1]),
        );
    };
    row("RSS per idle session", &rss, "B", Some(false), 0);
    row("CONNECT → CONNACK rate", &rate, "/s", Some(true), 0);
    row("CONNECT → CONNACK p99", &conn_p99, "µs", Some(false), 0);
    row(
        "CONNECT → CONNACK: broker CPU per session",
        &conn_cpu,
        "µs",
        Some(false),
        0,
    );
    row(
        "CONNECT → CONNACK: load client CPU per session",
        &client_cpu,
        "µs",
        None,
        1,
    );
    row(
        "CONNECT → CONNACK: broker sleeps per session",
        &broker_sleeps,
        "",
        None,
        2,
    );
    row(
        "CONNECT → CONNACK rate, broker-bound bursts",
        &burst_rate,
        "/s",
        Some(true),
        0,
    );
    row(
        "CONNECT → CONNACK bursts: broker CPU per session",
        &burst_cpu,
        "µs",
        Some(false),
        1,
    );
    for (fi, &(name, ..)) in fans.iter().enumerate() {
        row(
            &format!("{name}: deliveries"),
            &fan_rate[fi],
            "/s",
            Some(true),
            0,
        );
        row(
            &format!("{name}: p99 latency"),
            &fan_p99[fi],
            "µs",
            Some(false),
            0,
        );
    }
    for (fi, &(name, ..)) in fans.iter().enumerate() {
        if lost[fi] != [0, 0] {
            println!(
                "\n{name}: not delivered within 60 s: realip-broker {}, mosquitto {}.",
                lost[fi][0], lost[fi][1]
            );
        }
    }
    Ok(())
}

fn us(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}
