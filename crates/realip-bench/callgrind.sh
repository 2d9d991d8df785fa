#!/usr/bin/env bash
# Server instructions and allocations per connection, counted by callgrind and the server's
# counting allocator (independent of machine load): each
# server (`load serve --kind plain|ours|peer`) runs under `valgrind --tool=callgrind`, then
# under `strace -f -c` (system calls, by name; `epoll_wait` counts the runtime's waits for
# events, i.e. its wake-ups from the kernel), a client
# makes N and then 3N closed-loop connections (connect, header + `ping\n` in one write and the
# end of its writes, read `pong\n` and the server's close; one at a time: the server sees the
# same events on every connection however fast the client runs), and the per-connection cost
# is the difference of the two
# totals divided by 2N, so start-up and shutdown cancel out. The allocations come from the
# server's own counter (`stats` on its stdin), asked after the last connection.
# Usage: crates/realip-bench/callgrind.sh [N]   (default 1000; needs valgrind, strace, python3)
# LOAD=<path> runs that `load` binary instead of building one (to compare two builds);
# OUT=<dir> keeps the callgrind files there instead of target/realip-bench/callgrind/.
# DELAY_MS=<ms> makes the client wait that long between connect and its write, so that the
# header is never there when the server accepts: the handshake waits in the pending set with
# its timer (the closed loop's usual case), and plain's handler waits for its first read.
# ACCEPT_ONLY=1 skips the forwarded-header middleware's figures.
# DEFER=<secs> sets `TCP_DEFER_ACCEPT` on every server's listening socket (with DELAY_MS: the
# kernel then hands the connection over only once the header has arrived).
# Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
load=${LOAD:-target/release/load}
if [ -z "${LOAD:-}" ]; then
    cargo build -p realip-bench --release --bin load >&2
fi
out=${OUT:-target/realip-bench/callgrind}
mkdir -p "$out"

# One run: tool (callgrind|strace), kind, header (none|v1|v2), connections. Prints, for
# callgrind, the total Ir, the allocations and the bytes allocated; for strace, one
# `name=calls` per system call.
run() {
    local tool=$1 kind=$2 header=$3 conns=$4 file="$out/$2-$3-$4.$1"
    if [ "$tool" = callgrind ]; then
        coproc SERVER { exec valgrind --tool=callgrind --callgrind-out-file="$file" \
            "$load" serve --kind "$kind" --defer-accept-secs "${DEFER:-0}" 2>/dev/null; }
    else
        coproc SERVER { exec strace -f -c -o "$file" "$load" serve --kind "$kind" --defer-accept-secs "${DEFER:-0}" 2>/dev/null; }
    fi
    local line addr
    read -r line <&"${SERVER[0]}"
    addr=${line#LISTENING }
    python3 - "$addr" "$header" "$conns" "${DELAY_MS:-0}" <<'EOF'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
kind, n, delay = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) / 1000
if kind == "v1":
    head = b"PROXY TCP4 192.0.2.1 198.51.100.1 40000 443\r\n"
elif kind == "v2":
    body = bytes([192, 0, 2, 1, 198, 51, 100, 1]) + struct.pack("!HH", 40000, 443)
    head = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
else:
    head = b""
for _ in range(n):
    s = socket.create_connection((host, int(port)))
    if delay:
        time.sleep(delay)
    s.sendall(head + b"ping\n")
    # The end of the request goes with it, so that the server reads the same events on
    # every connection, however fast this client runs.
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(16)
        if not chunk:
            break
        got += chunk
    assert got == b"pong\n", got
    s.close()
EOF
    # The server's allocator counts (the last connection's close may still be on its way).
    sleep 1
    echo stats >&"${SERVER[1]}"
    local stats
    read -r stats <&"${SERVER[0]}"
    # Closing the server's stdin ends it; callgrind or strace then writes its totals.
    exec {SERVER[1]}>&-
    wait "$SERVER_PID" || true
    if [ "$tool" = strace ]; then
        # `% time  seconds  usecs/call  calls  [errors]  syscall`, then a `total` line.
        awk '$NF != "total" && $NF != "syscall" && $4 ~ /^[0-9]+$/ {printf "%s=%s ", $NF, $4}' "$file"
        echo
        return
    fi
    local allocs=${stats#*allocations=} bytes=${stats#*bytes=}
    echo "$(grep '^summary:' "$file" | awk '{print $2}') ${allocs%% *} ${bytes%% *}"
}

# System calls per connection from two strace runs (N and 3N connections): the calls by
# name, then `|total|epoll_wait`.
per_conn_syscalls() {
    python3 - "$1" "$2" "$3" <<'EOF'
import sys
small = dict(kv.split("=") for kv in sys.argv[1].split())
large = dict(kv.split("=") for kv in sys.argv[2].split())
n = int(sys.argv[3])
per = {k: (int(large.get(k, 0)) - int(small.get(k, 0))) / (2 * n) for k in set(small) | set(large)}
per = {k: v for k, v in per.items() if abs(v) >= 0.005}
total = sum(per.values())
print(" ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])), end="")
print(f"|{total:.2f}|{per.get('epoll_wait', 0):.2f}")
EOF
}

declare -A per allocs bytes sys
for case in "plain none" "ours v1" "ours v2" "peer v2"; do
    set -- $case
    read -r small small_a small_b < <(run callgrind "$1" "$2" "$n")
    read -r large large_a large_b < <(run callgrind "$1" "$2" $((3 * n)))
    per[$1-$2]=$(( (large - small) / (2 * n) ))
    allocs[$1-$2]=$(echo "($large_a - $small_a) / (2 * $n)" | bc -l)
    bytes[$1-$2]=$(echo "($large_b - $small_b) / (2 * $n)" | bc -l)
    echo "$1 $2: $small Ir, $small_a allocations at $n conns; $large Ir, $large_a at $((3 * n))" >&2
    sys[$1-$2]=$(per_conn_syscalls "$(run strace "$1" "$2" "$n")" \
        "$(run strace "$1" "$2" $((3 * n)))" "$n")
done
echo "| server | header | Ir per connection | ÷ plain | ÷ proxy-protocol-rs | allocations per connection | bytes allocated per connection | syscalls per connection | epoll_wait per connection |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for case in "plain none" "ours v1" "ours v2" "peer v2"; do
    set -- $case
    v=${per[$1-$2]}
    IFS='|' read -r _ total epoll <<<"${sys[$1-$2]}"
    printf '| %s | %s | %d | %.3f | %.3f | %.2f | %.0f | %s | %s |\n' "$1" "$2" "$v" \
        "$(echo "$v / ${per[plain-none]}" | bc -l)" "$(echo "$v / ${per[peer-v2]}" | bc -l)" \
        "${allocs[$1-$2]}" "${bytes[$1-$2]}" "$total" "$epoll"
done

# The system calls of each server, by name.
print_syscalls() {
    echo
    echo "System calls per connection, by name:"
    echo
    for case in "plain none" "ours v1" "ours v2" "peer v2"; do
        set -- $case
        echo "* $1 $2: ${sys[$1-$2]%%|*}"
    done
}
if [ -n "${ACCEPT_ONLY:-}" ]; then
    print_syscalls
    exit 0
fi

# The forwarded-header middleware: `RealIp::call` per request (XFF, 4 entries, 16 CIDRs),
# and, on the rightmost-only crates' work, each implementation's instructions per request.
# Arguments: requests, then `load layer-calls` flags.
layer_ir() {
    local n=$1
    shift
    local file="$out/layer-$n-$(echo "$*" | tr -c 'a-z0-9\n' '_').callgrind"
    valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$load" layer-calls --requests "$n" "$@" 2>/dev/null
    grep '^summary:' "$file" | awk '{print $2}'
}
# Instructions per request of one `layer-calls` configuration (difference of 10N and 30N).
layer_per_request() {
    local small large
    small=$(layer_ir $((10 * n)) "$@")
    large=$(layer_ir $((30 * n)) "$@")
    echo $(( (large - small) / (20 * n) ))
}
echo
echo "Forwarded-header middleware (\`RealIp::call\`, X-Forwarded-For with 4 entries, 16 trusted CIDRs): $(layer_per_request --case 1) Ir per request."
echo
echo "Recursive resolve (\`RealIpLayer::resolve\`, X-Forwarded-For with 4 entries), Ir per request: $(layer_per_request --case 1 --step resolve) with 16 trusted CIDRs, $(layer_per_request --case 2 --step resolve) with 10,000."
echo
# The layer table's Forwarded row, and real-ip's, in instructions.
fwd_resolve=$(layer_per_request --case 3 --step resolve)
fwd_real_ip=$(layer_per_request --case 3 --step real-ip)
printf 'Recursive resolve on `Forwarded` (4 elements, 16 trusted CIDRs), Ir per request: %d; real-ip on the same header: %d (%.2f x).\n' \
    "$fwd_resolve" "$fwd_real_ip" "$(echo "$fwd_real_ip / $fwd_resolve" | bc -l)"
echo
echo "Same work as the rightmost-only crates (non-recursive, one X-Forwarded-For line, trusted peer), Ir per request:"
echo
echo "| input | resolve (default) | resolve (\`without_port_header\`) | client-ip | axum-client-ip |"
echo "|---|---:|---:|---:|---:|"
for case in "0 XFF 1 entry" "1 XFF 4 entries" "2 XFF 1 entry + 12 typical headers"; do
    set -- $case
    index=$1
    shift
    printf '| %s | %d | %d | %d | %d |\n' "$*" \
        "$(layer_per_request --same-work --case "$index" --step resolve)" \
        "$(layer_per_request --same-work --case "$index" --step resolve-without-port)" \
        "$(layer_per_request --same-work --case "$index" --step client-ip)" \
        "$(layer_per_request --same-work --case "$index" --step axum-client-ip)"
done
print_syscalls
