//! Benchmark harness for realip: the servers under test, load clients and `/proc`
//! measurements shared by the `load` binary and the criterion benches.
//!
//! Regenerate `BENCHMARKS.md` with `crates/realip-bench/run.sh`.

pub mod cases;
pub mod client;
pub mod header;
pub mod micro;
pub mod mqtt;
pub mod procfs;
pub mod server;
pub mod stats;
pub mod udp;
