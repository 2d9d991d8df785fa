#!/usr/bin/env bash
# What one MQTT CONNECT → CONNACK costs each broker, realip-broker and mosquitto, counted
# independently of machine load: user-space instructions (callgrind), and system calls,
# `epoll_wait` calls, context switches and CPU time (`perf stat` on the broker process, the
# last one load-dependent). The broker runs on core 1 as `load broker` starts it
# (realip-broker `--tcp` only, `RUST_LOG=warn`; mosquitto anonymous, no persistence, no
# logging, `set_tcp_nodelay true`); `load mqtt-connect` on core 0 opens MQTT 3.1.1 sessions
# (clean session, keep alive 0), IN_FLIGHT CONNECTs at a time, and holds them open.
# Counts cover the CONNECT phase only (callgrind counters zeroed before it and dumped while the
# sessions are held; `perf stat` attached for it), and the per-CONNECT figure is the
# difference of an N-session and a 3N-session run divided by 2N, so one-time costs cancel.
# With IN_FLIGHT=1 the broker handles each CONNECT alone, as on a quiet machine whatever the
# load; with the default 64 it batches as much as the client lets it.
# Usage: crates/realip-bench/broker_connect.sh [N]   (default 1000; needs valgrind, perf,
# mosquitto, python3)
# BROKER=<path> measures that realip-broker build (to compare two); LOAD=<path> uses that
# `load`; KINDS="realip mosquitto" (the default) picks the brokers; OUT=<dir> keeps the
# callgrind files there.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
in_flight=${IN_FLIGHT:-64}
kinds=${KINDS:-realip mosquitto}
load=${LOAD:-target/release/load}
broker=${BROKER:-target/release/realip-broker}
if [ -z "${LOAD:-}" ] || [ -z "${BROKER:-}" ]; then
    cargo build --release -p realip-bench --bin load -p realip-broker --bin realip-broker >&2
fi
if [ -n "${OUT:-}" ]; then
    out=$OUT
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts broker `kind` on `port` under the command in the remaining arguments; sets BROKER_PID.
start() {
    local kind=$1 port=$2
    shift 2
    if [ "$kind" = realip ]; then
        RUST_LOG=warn taskset -c 1 "$@" "$broker" --tcp "127.0.0.1:$port" --ws off --admin off \
            >/dev/null 2>&1 &
    else
        printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\nmax_connections -1\nset_tcp_nodelay true\n' \
            "$port" >"$out/mosquitto-$port.conf"
        if [ "$1" = valgrind ]; then
            # Not to another user: callgrind_control could not reach it then.
            echo 'user root' >>"$out/mosquitto-$port.conf"
        fi
        taskset -c 1 "$@" mosquitto -c "$out/mosquitto-$port.conf" >/dev/null 2>&1 &
    fi
    BROKER_PID=$!
    local i
    for i in $(seq 200); do
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null; then
            sleep 0.3
            return
        fi
        sleep 0.1
    done
    echo "$kind did not listen on $port" >&2
    exit 1
}

# Opens `n` sessions to `port` and runs `after` (a command) while they are held.
sessions() {
    local port=$1 n=$2 after=$3 line
    coproc CLIENT { exec taskset -c 0 "$load" --no-pin mqtt-connect --addr "127.0.0.1:$port" \
        --sessions "$n" --in-flight "$in_flight"; }
    read -r line <&"${CLIENT[0]}"
    case $line in
    "sessions=$n errors=0 "*) ;;
    *)
        echo "CONNECTs failed: $line" >&2
        exit 1
        ;;
    esac
    $after
    exec {CLIENT[1]}>&-
    wait "$CLIENT_PID" || true
}

stop() {
    kill -TERM "$BROKER_PID" 2>/dev/null || true
    wait "$BROKER_PID" 2>/dev/null || true
}

# Instructions of `n` CONNECTs under callgrind (counters zeroed before, dumped after).
instructions() {
    local kind=$1 n=$2 port file
    port=$(free_port)
    file="$out/$kind-$n.callgrind"
    start "$kind" "$port" valgrind --tool=callgrind --callgrind-out-file="$file" --
    callgrind_control -z "$BROKER_PID" >/dev/null
    sessions "$port" "$n" "callgrind_control -d $BROKER_PID" >/dev/null
    stop
    # The dump taken while the sessions were held (file.1); the final one is their closing.
    grep -h '^summary:' "$file.1" | awk '{print $2}'
}

# `perf stat` counts over `n` CONNECTs: syscalls epoll_wait context_switches task_clock_ms.
counts() {
    local kind=$1 n=$2 port
    port=$(free_port)
    start "$kind" "$port" env
    perf stat -x, -o "$out/perf" -e raw_syscalls:sys_enter -e syscalls:sys_enter_epoll_wait \
        -e context-switches -e page-faults -e task-clock -p "$BROKER_PID" &
    local perf=$!
    sleep 0.3
    sessions "$port" "$n" "kill -INT $perf"
    wait "$perf" || true
    stop
    awk -F, '!/^#/ && NF > 2 {printf "%s ", $1} END {print ""}' "$out/perf"
}

echo "Load average at the start: $(cut -d' ' -f1-3 /proc/loadavg); N = $n, $in_flight CONNECTs in flight."
echo
echo "| broker | instructions per CONNECT | system calls | epoll_wait | context switches | page faults | CPU µs (load-dependent) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for kind in $kinds; do
    small=$(instructions "$kind" "$n")
    large=$(instructions "$kind" $((3 * n)))
    read -r -a c1 <<<"$(counts "$kind" "$n")"
    read -r -a c3 <<<"$(counts "$kind" $((3 * n)))"
    python3 - "$kind" "$n" "$small" "$large" "${c1[*]}" "${c3[*]}" <<'EOF'
import sys
kind, n, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
c1 = [float(v) for v in sys.argv[5].split()]
c3 = [float(v) for v in sys.argv[6].split()]
per = [(b - a) / (2 * n) for a, b in zip(c1, c3)]
name = "realip-broker" if kind == "realip" else "mosquitto"
print(f"| {name} | {(large - small) / (2 * n):.0f} | {per[0]:.2f} | {per[1]:.2f} | {per[2]:.2f} | {per[3]:.2f} | {per[4] * 1000:.1f} |")
EOF
done
