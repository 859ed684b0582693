#!/usr/bin/env bash
# Meridian vs etcd coordination on one machine, in one run (issue 10):
# watch event delivery latency and lease keepalive throughput.
#
# Builds `meridian` with etcd support, starts a single-member etcd and a
# single Meridian node in a fresh temporary directory (loopback only), and
# runs `meridian bench` against both, back to back per row, the one that
# goes first alternating from row to row:
#   watch      one writer putting a 256-byte value every 10 ms under a fresh
#              prefix, 1 and 16 watchers of that prefix; latency is from the
#              start of each put to its event at each watcher (write ->
#              event seen), so it includes the write's own commit.
#   keepalive  1000 leases (60 s TTL) kept alive by 1 and 4 loops in rounds
#              of --keepalive-batch (100): Meridian sends one LeaseKeepAlive
#              request naming the round's leases (one Raft commit, fsynced);
#              etcd sends one keepalive on each of the round's leases'
#              LeaseKeepAlive streams (etcd's client keeps a stream per
#              lease) and reads the answers. Ops are keepalives (leases kept) per second; latency
#              is per round.
# Results are appended as JSON lines to one file and summarised at the end
# with ratios.
#
# Usage: benches/compare_etcd_coord.sh [--duration-secs N] [--out FILE]
#                                       [--workload watch|keepalive] [--keepalive-batch N]
#   --duration-secs N    seconds per run (default 10; env BENCH_SECS)
#   --out FILE           JSON lines output (default bench-results/compare_etcd_coord-<time>.jsonl)
#   --workload W         run only this workload (default: both)
#   --keepalive-batch N  leases per keepalive round (default 100; 1..=1000)
# Env: KEEP_WORK=1 keeps the temporary directory (server logs, data).
#
# Needs: cargo, protoc (Debian: protobuf-compiler), etcd, curl, python3, ss.
set -euo pipefail

# Bounds on every wait, in seconds.
readonly READY_TIMEOUT_SECS=30     # server start until healthy
readonly STOP_TIMEOUT_SECS=10      # SIGTERM until SIGKILL
readonly BENCH_SLACK_SECS=120      # per bench call beyond its duration (grants, drain)

# Loopback addresses only; the ports of benches/compare_etcd.sh.
readonly HOST=127.0.0.1
readonly MERIDIAN_QUIC_PORT=7379
readonly MERIDIAN_HTTP_PORT=7380
readonly ETCD_CLIENT_PORT=23790
readonly ETCD_PEER_PORT=23800

readonly WATCH_CLIENTS=(1 16)
readonly WATCH_INTERVAL_MS=10
readonly KEEPALIVE_CLIENTS=(1 4)
readonly LEASES=1000
readonly VALUE_SIZE=256

secs="${BENCH_SECS:-10}"
out=""
only=""
keepalive_batch=100

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration-secs) secs="${2:?--duration-secs needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --workload) only="${2:?--workload needs a value}"; shift 2 ;;
        --keepalive-batch) keepalive_batch="${2:?--keepalive-batch needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "--duration-secs must be a positive integer" >&2; exit 2; }
[[ "$keepalive_batch" =~ ^[1-9][0-9]*$ ]] || { echo "--keepalive-batch must be a positive integer" >&2; exit 2; }
[[ -z "$only" || "$only" == watch || "$only" == keepalive ]] || { echo "--workload is watch or keepalive" >&2; exit 2; }

require_tools cargo etcd curl python3 ss timeout
setup_output compare_etcd_coord
scrub_env
build_meridian

require_free_ports "stop whatever listens there first" \
    "tcp:$MERIDIAN_HTTP_PORT" "udp:$MERIDIAN_QUIC_PORT" "tcp:$ETCD_CLIENT_PORT" "tcp:$ETCD_PEER_PORT"

work="$(mktemp -d -t meridian-vs-etcd-coord.XXXXXX)"
meridian_pid=""
etcd_pid=""

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_child meridian "$meridian_pid"
    stop_child etcd "$etcd_pid"
    if [[ "${KEEP_WORK:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $work (server logs: meridian.log, etcd.log)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_ready() { # name pid url expected-substring
    local name="$1" pid="$2" url="$3" want="$4" body deadline=$((SECONDS + READY_TIMEOUT_SECS))
    while (( SECONDS < deadline )); do
        kill -0 "$pid" 2>/dev/null || { echo "$name exited during startup; see $work/$name.log" >&2; return 1; }
        body="$(curl -fsS --max-time 1 "$url" 2>/dev/null || true)"
        if [[ "$body" == *"$want"* ]]; then
            return 0
        fi
        sleep 0.2
    done
    echo "$name not ready within ${READY_TIMEOUT_SECS}s; see $work/$name.log" >&2
    return 1
}

echo "== starting etcd $(etcd --version | sed -n 's/^etcd Version: //p') in $work/etcd"
etcd --name default --data-dir "$work/etcd" \
    --listen-client-urls "http://$HOST:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://$HOST:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster "default=http://$HOST:$ETCD_PEER_PORT" \
    --logger zap --log-outputs stderr >"$work/etcd.log" 2>&1 &
etcd_pid=$!

echo "== starting meridian in $work/meridian (stock config: fsync=always)"
mkdir -p "$work/meridian"
(cd "$work/meridian" && exec "$bin" serve) >"$work/meridian.log" 2>&1 &
meridian_pid=$!

wait_ready etcd "$etcd_pid" "http://$HOST:$ETCD_CLIENT_PORT/health" '"health":"true"'
wait_ready meridian "$meridian_pid" "http://$HOST:$MERIDIAN_HTTP_PORT/ready" '"ready"'

# One bench call, in Meridian's directory so it finds the node's development
# client certificate, exactly as the CLI does.
bench() { # system workload clients
    local system="$1" workload="$2" clients="$3"
    local args=(bench --system "$system" --workload "$workload" --clients "$clients"
        --duration-secs "$secs" --value-size "$VALUE_SIZE" --conns 1
        --lag-interval-ms "$WATCH_INTERVAL_MS" --leases "$LEASES"
        --keepalive-batch "$keepalive_batch" --key-prefix "coord-$system/"
        --etcd-endpoints "http://$HOST:$ETCD_CLIENT_PORT"
        --label "run=$stamp keepalive_batch=$keepalive_batch" --json-out "$out")
    (cd "$work/meridian" && timeout --kill-after=5 $((secs + BENCH_SLACK_SECS)) "$bin" "${args[@]}") \
        | sed -n '2p'
}

echo "== ${secs}s per run; results: $out"
printf '%-9s %-5s %7s %10s %8s %12s %9s %9s %9s\n' \
    system op clients ops errors ops/s p50_us p99_us p999_us
row=0
run_rows() { # workload clients...
    local workload="$1" clients system
    shift
    for clients in "$@"; do
        if (( row % 2 == 0 )); then order=(meridian etcd); else order=(etcd meridian); fi
        for system in "${order[@]}"; do
            bench "$system" "$workload" "$clients"
        done
        row=$((row + 1))
    done
}
if [[ -z "$only" || "$only" == watch ]]; then run_rows watch "${WATCH_CLIENTS[@]}"; fi
if [[ -z "$only" || "$only" == keepalive ]]; then run_rows keepalive "${KEEPALIVE_CLIENTS[@]}"; fi

echo
echo "== summary ($out)"
python3 - "$out" "$stamp" <<'PY'
import json
import sys

path, stamp = sys.argv[1], sys.argv[2]
runs = {}
with open(path) as f:
    for line in f:
        r = json.loads(line)
        if f"run={stamp}" in r["label"].split():
            runs[(r["workload"], r["clients"], r["system"])] = r

head = ("workload", "clients", "meridian ops/s", "etcd ops/s", "ops ratio",
        "meridian p50/p99 us", "etcd p50/p99 us", "p50 ratio", "p99 ratio", "errors m/e")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for w, c in sorted({(w, c) for (w, c, _) in runs}):
    m, e = runs.get((w, c, "meridian")), runs.get((w, c, "etcd"))
    if not m or not e or not m["p50_us"] or not e["ops_per_sec"]:
        continue
    lat = lambda r: f"{r['p50_us']}/{r['p99_us']}"
    cells = (w, str(c), f"{m['ops_per_sec']:.0f}", f"{e['ops_per_sec']:.0f}",
             f"{m['ops_per_sec'] / e['ops_per_sec']:.2f}", lat(m), lat(e),
             f"{e['p50_us'] / m['p50_us']:.2f}", f"{e['p99_us'] / m['p99_us']:.2f}",
             f"{m['errors']}/{e['errors']}")
    print("| " + " | ".join(cells) + " |")
print()
print("watch: ops are events seen (writes x watchers); latency from the put's start to the event.")
print("keepalive: ops are leases kept alive per second; latency per round of the batch.")
print("ratios: ops = meridian / etcd; p50 and p99 = etcd / meridian (above 1: Meridian ahead)")
PY
