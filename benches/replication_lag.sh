#!/usr/bin/env bash
# Replication lag between the three regions of `meridian dev` (regions/wan-3.toml
# behind the WAN emulator: 70 ms us-east<->eu-west, 140 ms eu-west<->ap-south,
# 200 ms us-east<->ap-south round trips), Meridian alone: the lag rows of
# benches/compare_etcd_wan.sh without etcd, the other rows or the build for
# etcd, so a change to the streams can be measured in a few minutes.
#
# From each region in turn, `meridian bench --workload lag` writes one key
# every 10 ms to ads/bench/ (eventual) for --duration-secs while a reader in
# each other region polls it (eventual reads, every 1 ms); then the same from
# us-east to bench/ (strong, homed there). Lag = first seen - acknowledged,
# p50 / p99 / max per region pair. The issue 9 target: p99 within the one-way
# delay (35 / 70 / 100 ms) plus 20 ms.
#
# Usage: benches/replication_lag.sh [--duration-secs N] [--out FILE]
#                                   [--port-offset N]
#   --duration-secs N  seconds of writes per origin (default 20)
#   --out FILE         JSON lines output (default
#                      bench-results/replication_lag-<time>.jsonl)
#   --port-offset N    shift of every topology port (default 2600)
# Env: MERIDIAN_BENCH_BIN=PATH measures that binary instead of building
# (cargo build --release --features etcd); KEEP_WORK=1 keeps the directory.
set -euo pipefail

readonly READY_TIMEOUT_SECS=180   # meridian dev: start, elect, run its demo
readonly STOP_TIMEOUT_SECS=20     # SIGINT to meridian dev until SIGKILL
readonly BENCH_SLACK_SECS=120     # per bench call beyond its duration
readonly REGIONS=(us-east eu-west ap-south)

secs=20
out=""
port_offset=2600

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration-secs) secs="${2:?--duration-secs needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --port-offset) port_offset="${2:?--port-offset needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "--duration-secs must be a positive integer" >&2; exit 2; }
[[ "$port_offset" =~ ^[0-9]+$ ]] && (( port_offset <= 50000 )) \
    || { echo "--port-offset must be 0..=50000" >&2; exit 2; }

require_tools cargo python3 timeout
setup_output replication_lag
scrub_env
build_meridian

work="$(mktemp -d "${TMPDIR:-/tmp}/meridian-lag.XXXXXX")"
dev_pid=""
cleanup() {
    if [[ -n "$dev_pid" ]] && alive "$dev_pid"; then
        kill -INT "$dev_pid" 2>/dev/null || true
        wait_gone "$dev_pid" "$STOP_TIMEOUT_SECS" || kill -KILL "$dev_pid" 2>/dev/null || true
    fi
    if [[ "${KEEP_WORK:-}" == 1 ]]; then echo "== kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

echo "== starting meridian dev --port-offset $port_offset (9 nodes, WAN emulator)"
(cd "$work" && exec "$bin" dev --dir "$work/meridian-dev" --port-offset "$port_offset") \
    >"$work/dev.log" 2>&1 &
dev_pid=$!
waited=0
until grep -q 'serving until Ctrl-C' "$work/dev.log"; do
    if ! alive "$dev_pid" || (( waited >= READY_TIMEOUT_SECS * 5 )); then
        echo "meridian dev did not become ready:" >&2; tail -20 "$work/dev.log" >&2; exit 1
    fi
    sleep 0.2; waited=$((waited + 1))
done

reader() { # region: its --lag-reader value (client address @ endpoints)
    # shellcheck source=/dev/null
    (source "$work/meridian-dev/$1.env" && echo "$1=$MERIDIAN_BIND@$MERIDIAN_ENDPOINTS")
}

lag_from() { # origin prefix
    local origin="$1" prefix="$2" r readers=()
    for r in "${REGIONS[@]}"; do
        [[ "$r" == "$origin" ]] || readers+=(--lag-reader "$(reader "$r")")
    done
    # shellcheck source=/dev/null
    (cd "$work" && source "$work/meridian-dev/$origin.env" \
        && timeout --kill-after=5 $((secs + BENCH_SLACK_SECS)) "$bin" bench --system meridian \
            --region "$origin" --workload lag --key-prefix "$prefix" --duration-secs "$secs" \
            --value-size 256 --keys 1000 --conns 3 --label "run=$stamp op=lag prefix=$prefix" \
            --json-out "$out" "${readers[@]}") \
        | grep 'lag after ack' | sed -e 's/^ *meridian *lag //' -e "s|^|   [$prefix] |"
}

echo "== replication lag: ${secs}s of writes per origin, one every 10 ms"
for origin in "${REGIONS[@]}"; do lag_from "$origin" ads/bench/; done
lag_from us-east bench/
echo "== results in $out"
