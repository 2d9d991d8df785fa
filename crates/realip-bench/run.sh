#!/usr/bin/env bash
# Regenerates the measured tables of BENCHMARKS.md: accept throughput, slow-client isolation,
# memory, header parse and layer micro-benchmarks, UDP, and realip-broker against mosquitto
# (needs `mosquitto` on PATH), all in one run.
# Usage: crates/realip-bench/run.sh [extra `load all` flags]
# The Markdown goes to stdout and to target/realip-bench/results.md; progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/../.."
# 10,000 held connections need ~10,100 descriptors per process: raise the soft limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cargo build --release -p realip-bench --bin load -p realip-broker --bin realip-broker
mkdir -p target/realip-bench
{
    echo "Run started $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    dirty=$(git status --short -- crates/realip-core crates/realip-listener crates/realip-tower 2>/dev/null || true)
    if [ -n "$dirty" ]; then
        echo "Uncommitted changes in the measured crates (built as they were):"
        echo '```'
        echo "$dirty"
        echo '```'
    fi
} | tee target/realip-bench/results.md
# `load` re-executes itself under `taskset -c 0` and starts each server under `taskset -c 1`.
target/release/load all "$@" | tee -a target/realip-bench/results.md
