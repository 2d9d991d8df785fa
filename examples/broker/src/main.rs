//! `realip-broker`: an example MQTT 3.1.1 and 5.0 broker that reports each client's real address
//! behind reverse proxies, like EMQX's `peername`.
//!
//! It serves MQTT over TCP (optionally behind PROXY protocol, via `realip-listener`) and over
//! WebSocket (axum, with forwarded headers resolved by `realip-tower`), and an EMQX-shaped
//! admin API that shows who every client really is. `realip-broker ctl clients show ID` asks a
//! running broker from the command line.
//!
//! Run `realip-broker --help` for the flags; see `examples/broker/README.md`.
//!
//! Once every listener is bound, the broker prints one line on stdout (a stable interface for
//! scripts and tests; `off` marks a disabled listener):
//!
//! ```text
//! listening tcp=0.0.0.0:1883 ws=0.0.0.0:8083 admin=127.0.0.1:18083
//! ```

mod acl;
mod admin;
mod broker;
mod codec;
mod config;
mod ctl;
#[cfg(target_os = "linux")]
mod fd_table;
mod metrics;
mod presets;
mod prom;
mod proxy_rules;
mod realip;
mod reload;
mod server;
mod session;
mod tls;
mod wellformed;
mod ws;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::config::{Cli, Command};

/// jemalloc instead of the system allocator: memory freed when clients leave goes back to the
/// OS (pages unused for `dirty_decay_ms`, 10 s by default, are purged by jemalloc's background
/// thread, so an idle broker shrinks too), where glibc's malloc keeps it mapped and, with its
/// per-thread arenas, spreads the same live data over more memory from one wave of clients to
/// the next. Tunable at run time with `_RJEM_MALLOC_CONF` (jemalloc's `MALLOC_CONF` options).
/// The `jemalloc` feature (on by default) turns it on.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Before the runtime starts its threads (see `fd_table`).
    #[cfg(target_os = "linux")]
    let fd_slots = fd_table::reserve();
    #[cfg(not(target_os = "linux"))]
    let fd_slots = None;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("realip-broker: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(fd_slots))
}

async fn run(fd_slots: Option<usize>) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Ctl(args)) => ctl::run(args).await,
        None => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            if let Some(slots) = fd_slots {
                tracing::debug!(slots, "file descriptor table grown at start-up");
            }
            server::run(cli.run).await
        }
    }
}
