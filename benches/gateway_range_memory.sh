#!/usr/bin/env bash
# Peak resident memory of one `meridian serve` while 200 clients read a
# maximum-size range page from its HTTP gateway at once (issue 12: "200
# concurrent maximum-size range pages keep the node within a documented
# bound"). A measurement, not a test: it prints figures and asserts nothing.
#
# Usage: benches/gateway_range_memory.sh [--bin PATH] [--budget BYTES]
#            [--clients N] [--port-base P]
#   --bin      meridian binary (default: cargo build --release, then its binary)
#   --budget   server.http_response_budget_bytes (default: the node's default,
#              256 MiB); a huge value (68719476736) shows the node without it
#   --clients  concurrent range requests (default 200)
#   --port-base  QUIC on P, HTTP on P+1 (default 26379: loopback only)
#
# The node stores 96 pairs of 64 KiB values (6 MiB) under bench/, so every
# `GET /v1/kv?prefix=bench/&limit=10000` ends at limits.max_scan_page_bytes
# (4 MiB): a maximum-size page (about 9.6 MB of JSON: each value appears as
# `value` and `value_b64`). Prints VmRSS before, VmHWM (peak) after, and the
# statuses of the replies (200, or 503 MER-3003 for a request that waited
# 10 s for the budget).
# Needs: curl, xargs, a Linux /proc.
set -euo pipefail

bin=""
budget=""
clients=200
port_base=26379
readonly PAIRS=96
readonly VALUE_BYTES=65536
readonly READY_TIMEOUT_SECS=30
readonly STOP_TIMEOUT_SECS=10

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --bin) bin="$2"; shift 2 ;;
        --budget) budget="$2"; shift 2 ;;
        --clients) clients="$2"; shift 2 ;;
        --port-base) port_base="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done

require_tools curl xargs head
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "$bin" ]]; then
    (cd "$repo" && cargo build --release)
    bin="${CARGO_TARGET_DIR:-$repo/target}/release/meridian"
fi
[[ -x "$bin" ]] || { echo "no meridian binary at $bin" >&2; exit 1; }
scrub_env
http_port=$((port_base + 1))
require_free_ports "pick another --port-base" "udp:$port_base" "tcp:$http_port"

work="$(mktemp -d)"
node_pid=""
cleanup() {
    stop_child meridian "$node_pid"
    rm -rf "$work"
}
trap cleanup EXIT

{
    echo '[node]'
    echo 'data_dir = "data"'
    echo '[server]'
    echo "listen_addr = \"127.0.0.1:$port_base\""
    echo "http_addr = \"127.0.0.1:$http_port\""
    [[ -n "$budget" ]] && echo "http_response_budget_bytes = $budget"
    echo '[storage]'
    echo 'fsync = "never"'
    echo '[tls]'
    echo 'ca_cert = "certs/ca.pem"'
    echo 'cert = "certs/node1.pem"'
    echo 'key = "certs/node1.key"'
} >"$work/node.toml"
(cd "$work" && "$bin" certs init --dir certs >/dev/null \
    && "$bin" certs issue --dir certs --role node node1 >/dev/null)
(cd "$work" && exec "$bin" serve --config node.toml) >"$work/node.log" 2>&1 &
node_pid=$!

base="http://127.0.0.1:$http_port"
for _ in $(seq $((READY_TIMEOUT_SECS * 10))); do
    curl -fsS --max-time 1 "$base/ready" >/dev/null 2>&1 && break
    alive "$node_pid" || { cat "$work/node.log" >&2; exit 1; }
    sleep 0.1
done
curl -fsS --max-time 1 "$base/ready" >/dev/null

head -c $((VALUE_BYTES * 3 / 4)) /dev/urandom | base64 -w0 | head -c "$VALUE_BYTES" >"$work/value"
for i in $(seq -w 1 "$PAIRS"); do
    curl -fsS --max-time 10 -X PUT --data-binary "@$work/value" "$base/v1/kv/bench/$i" >/dev/null
done
page_bytes="$(curl -fsS --max-time 30 "$base/v1/kv?prefix=bench/&limit=10000" | wc -c)"

vm() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$node_pid/status"; }
rss_before_kib="$(vm VmRSS)"
started="$(date +%s.%N)"
seq "$clients" | xargs -P "$clients" -I{} \
    curl -sS --max-time 300 -o /dev/null -w '%{http_code}\n' "$base/v1/kv?prefix=bench/&limit=10000" \
    >"$work/statuses" || true  # a curl that timed out prints 000
elapsed="$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')"
hwm_kib="$(vm VmHWM)"
rss_after_kib="$(vm VmRSS)"

echo "binary: $bin"
echo "budget: ${budget:-default (256 MiB)}; page reservation: 4 MiB + 128 B x 10000 entries"
echo "one page: $page_bytes bytes of JSON ($PAIRS pairs of $VALUE_BYTES B stored, page ends at 4 MiB)"
echo "clients: $clients concurrent, all done in ${elapsed}s"
echo "statuses: $(sort "$work/statuses" | uniq -c | tr '\n' ' ')"
echo "VmRSS before: $((rss_before_kib / 1024)) MiB; VmHWM (peak): $((hwm_kib / 1024)) MiB; VmRSS after: $((rss_after_kib / 1024)) MiB"
