#!/usr/bin/env bash
# System calls and wake-ups per connection of each server in the closed loop of `load accept`
# (32 client tasks; each connection: connect, header + `ping\n` in one write, read `pong\n`,
# close), counted by `perf stat` on the server process (tracepoints, so independent of how
# fast the machine is, unlike the CPU time per connection). Each server (`load serve`) runs on
# core 1 under `perf stat`, `load client` drives it from core 0 for SECS seconds; the counts
# are divided by the connections completed. Columns: all system calls, failed `recvfrom`
# (EAGAIN: a read that found nothing), failed `accept4`, `epoll_wait` (the runtime's waits),
# context switches, and the server's CPU time per connection (load-dependent). Each server runs
# twice: as it ships, and with `TCP_DEFER_ACCEPT` (1 s) on its listening socket ("deferred").
# Usage: crates/realip-bench/syscalls.sh [SECS]   (default 5; needs perf with tracepoint access)
# LOAD=<path> runs that `load` binary instead of building one.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-5}
load=${LOAD:-target/release/load}
if [ -z "${LOAD:-}" ]; then
    cargo build -p realip-bench --release --bin load >&2
fi

# One server: kind, header, defer seconds (0: off). Prints the Markdown row.
count() {
    local kind=$1 header=$2 defer=$3 out
    out=$(mktemp)
    coproc SERVER { exec taskset -c 1 perf stat -x, -o "$out" -e task-clock -e context-switches \
        -e raw_syscalls:sys_enter -e syscalls:sys_enter_epoll_wait \
        -e syscalls:sys_exit_recvfrom --filter 'ret < 0' \
        -e syscalls:sys_exit_accept4 --filter 'ret < 0' \
        -- "$load" serve --kind "$kind" --defer-accept-secs "$defer" 2>/dev/null; }
    local line
    read -r line <&"${SERVER[0]}"
    local res
    res=$(taskset -c 0 "$load" --no-pin client --addr "${line#LISTENING }" --header "$header" --secs "$secs")
    sleep 0.3
    exec {SERVER[1]}>&-
    wait "$SERVER_PID" || true
    python3 - "$out" "$kind" "$header" "$res" "$defer" <<'PY'
import sys
path, kind, header, res, defer = sys.argv[1:6]
if defer != "0":
    kind += ", deferred"
n = int(res.split("connections=")[1].split()[0])
v = [float(l.split(",")[0]) for l in open(path) if l.strip() and not l.startswith("#")]
cpu_ms, cs, calls, epoll, recv_err, accept_err = v
print(f"| {kind} | {header} | {n} | {calls / n:.2f} | {recv_err / n:.2f} | {accept_err / n:.2f} "
      f"| {epoll / n:.2f} | {cs / n:.3f} | {cpu_ms * 1000 / n:.1f} |")
PY
    rm -f "$out"
}

echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| server | header | connections | system calls per connection | failed recvfrom | failed accept4 | epoll_wait | context switches | server CPU µs/conn |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for defer in 0 1; do
    for case in "plain none" "ours v1" "ours v2" "peer v2"; do
        count $case "$defer"
    done
done
