#!/usr/bin/env bash
# Server instructions per connection, counted by callgrind (independent of machine load): each
# server (`load serve --kind plain|ours|peer`) runs under `valgrind --tool=callgrind`, a client
# makes N and then 3N closed-loop connections (connect, header + `ping\n` in one write, read
# `pong\n`, close; one at a time), and the per-connection cost is the difference of the two
# totals divided by 2N, so start-up and shutdown cancel out.
# Usage: crates/realip-bench/callgrind.sh [N]   (default 1000; needs valgrind and python3)
# Prints a Markdown table; the callgrind files stay in target/realip-bench/callgrind/.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-1000}
cargo build -p realip-bench --release --bin load >&2
out=target/realip-bench/callgrind
mkdir -p "$out"

# One run: kind, header (none|v1|v2), connections. Prints the total Ir.
run() {
    local kind=$1 header=$2 conns=$3 file="$out/$1-$2-$3.out"
    coproc SERVER { exec valgrind --tool=callgrind --callgrind-out-file="$file" \
        target/release/load serve --kind "$kind" 2>/dev/null; }
    local line addr
    read -r line <&"${SERVER[0]}"
    addr=${line#LISTENING }
    python3 - "$addr" "$header" "$conns" <<'EOF'
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
kind, n = sys.argv[2], int(sys.argv[3])
if kind == "v1":
    head = b"PROXY TCP4 192.0.2.1 198.51.100.1 40000 443\r\n"
elif kind == "v2":
    body = bytes([192, 0, 2, 1, 198, 51, 100, 1]) + struct.pack("!HH", 40000, 443)
    head = b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body
else:
    head = b""
for _ in range(n):
    s = socket.create_connection((host, int(port)))
    s.sendall(head + b"ping\n")
    got = b""
    while not got.endswith(b"\n"):
        chunk = s.recv(16)
        if not chunk:
            sys.exit("server closed early")
        got += chunk
    assert got == b"pong\n", got
    s.close()
EOF
    # Closing the server's stdin ends it; callgrind then writes its totals.
    exec {SERVER[1]}>&-
    wait "$SERVER_PID" || true
    grep '^summary:' "$file" | awk '{print $2}'
}

echo "| server | header | Ir per connection | ÷ plain | ÷ proxy-protocol-rs |"
echo "|---|---|---:|---:|---:|"
declare -A per
for case in "plain none" "ours v1" "ours v2" "peer v2"; do
    set -- $case
    small=$(run "$1" "$2" "$n")
    large=$(run "$1" "$2" $((3 * n)))
    per[$1-$2]=$(( (large - small) / (2 * n) ))
    echo "$1 $2: $small Ir at $n conns, $large Ir at $((3 * n))" >&2
done
for case in "plain none" "ours v1" "ours v2" "peer v2"; do
    set -- $case
    v=${per[$1-$2]}
    printf '| %s | %s | %d | %.3f | %.3f |\n' "$1" "$2" "$v" \
        "$(echo "$v / ${per[plain-none]}" | bc -l)" "$(echo "$v / ${per[peer-v2]}" | bc -l)"
done
