#!/usr/bin/env bash
# Meridian vs etcd on one machine, in one run.
#
# Builds `meridian` with etcd support, starts a single-member etcd and a
# single Meridian node in a fresh temporary directory (loopback only), and
# runs the same closed-loop workloads against both with `meridian bench`:
# put and get, 256-byte values, 1, 16 and 64 clients. For every
# (workload, clients) row both systems run back to back, and the one that
# goes first alternates from row to row, so slow drift on the machine hits
# both. Results are appended as JSON lines to one file and summarised at the
# end with ratios (meridian ops/s / etcd ops/s, etcd p99 / meridian p99:
# above 1 means Meridian is ahead on both).
#
# Durability is the same on both sides: Meridian runs with its default
# `storage.fsync = always` (every acknowledged write is in an fsynced
# journal, one fsync per group commit) and etcd always fsyncs its WAL
# before acknowledging a write.
#
# Usage: benches/compare_etcd.sh [--duration-secs N] [--conns N] [--out FILE]
#                                 [--workloads W,W] [--clients N,N]
#                                 [--meridian-env MERIDIAN_SECTION__FIELD=VALUE]...
#   --duration-secs N  seconds per run (default 10; env BENCH_SECS)
#   --workloads W,W    `meridian bench` workloads (default put,get; `lock`:
#                      clients contend for one lock, acquire then release,
#                      against etcd's lock API)
#   --clients N,N      concurrent clients per row (default 1,16,64)
#   --conns N          client connections the load generator opens to each
#                      system (default 1; env BENCH_CONNS)
#   --out FILE         JSON lines output (default bench-results/compare_etcd-<time>.jsonl)
#   --meridian-env V   a config override for the Meridian node (repeatable), e.g.
#                      MERIDIAN_STORAGE__GC_INTERVAL_MS=3600000 for a diagnostic
#                      run; recorded in the label. Default: none (stock config).
# Env: KEEP_WORK=1 keeps the temporary directory (server logs, data).
#
# Needs: cargo, protoc (Debian: protobuf-compiler), etcd, curl, python3, ss.
set -euo pipefail

# Bounds on every wait, in seconds.
readonly READY_TIMEOUT_SECS=30     # server start until healthy
readonly STOP_TIMEOUT_SECS=10      # SIGTERM until SIGKILL
readonly BENCH_SLACK_SECS=180      # per bench call beyond its duration (connect, get preload)
readonly WARMUP_SECS=2             # unrecorded put load per system before the first row

# Loopback addresses only. Meridian's are the defaults of `meridian serve`.
readonly HOST=127.0.0.1
readonly MERIDIAN_QUIC_PORT=7379
readonly MERIDIAN_HTTP_PORT=7380
readonly ETCD_CLIENT_PORT=23790
readonly ETCD_PEER_PORT=23800

WORKLOADS=(put get)
CLIENTS=(1 16 64)
readonly VALUE_SIZE=256

secs="${BENCH_SECS:-10}"
conns="${BENCH_CONNS:-1}"
out=""
meridian_env=()

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration-secs) secs="${2:?--duration-secs needs a value}"; shift 2 ;;
        --conns) conns="${2:?--conns needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --workloads) IFS=, read -r -a WORKLOADS <<<"${2:?--workloads needs a value}"; shift 2 ;;
        --clients) IFS=, read -r -a CLIENTS <<<"${2:?--clients needs a value}"; shift 2 ;;
        --meridian-env)
            [[ "${2:-}" =~ ^MERIDIAN_[A-Z0-9_]+__[A-Z0-9_]+=.*$ ]] \
                || { echo "--meridian-env takes MERIDIAN_<SECTION>__<FIELD>=VALUE" >&2; exit 2; }
            meridian_env+=("$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "--duration-secs must be a positive integer" >&2; exit 2; }
[[ "$conns" =~ ^[1-9][0-9]*$ ]] || { echo "--conns must be a positive integer" >&2; exit 2; }

require_tools cargo etcd curl python3 ss timeout
setup_output compare_etcd
scrub_env
build_meridian

require_free_ports "stop whatever listens there first" \
    "tcp:$MERIDIAN_HTTP_PORT" "udp:$MERIDIAN_QUIC_PORT" "tcp:$ETCD_CLIENT_PORT" "tcp:$ETCD_PEER_PORT"

work="$(mktemp -d -t meridian-vs-etcd.XXXXXX)"
meridian_pid=""
etcd_pid=""

stop_server() { # name pid
    local name="$1" pid="$2" waited=0
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && (( waited < STOP_TIMEOUT_SECS * 10 )); do
        sleep 0.1; waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT_SECS}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_server meridian "$meridian_pid"
    stop_server etcd "$etcd_pid"
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

echo "== starting meridian in $work/meridian (fsync=always${meridian_env[*]:+; ${meridian_env[*]}})"
mkdir -p "$work/meridian"
(cd "$work/meridian" && exec env "${meridian_env[@]}" "$bin" serve) >"$work/meridian.log" 2>&1 &
meridian_pid=$!

wait_ready etcd "$etcd_pid" "http://$HOST:$ETCD_CLIENT_PORT/health" '"health":"true"'
wait_ready meridian "$meridian_pid" "http://$HOST:$MERIDIAN_HTTP_PORT/ready" '"ready"'

# One bench call. The load generator runs in Meridian's directory so it finds
# the node's development client certificate, exactly as the CLI does.
bench() { # system workload clients secs [json]
    local system="$1" workload="$2" clients="$3" run_secs="$4" json="${5:-}" label
    label="run=$stamp conns=$conns"
    if [[ "$system" == meridian ]]; then
        label+=" durability=fsync-always${meridian_env[*]:+ ${meridian_env[*]}}"
    else
        label+=" durability=wal-fsync"
    fi
    local args=(bench --system "$system" --workload "$workload" --clients "$clients"
        --duration-secs "$run_secs" --value-size "$VALUE_SIZE" --conns "$conns"
        --etcd-endpoints "http://$HOST:$ETCD_CLIENT_PORT"
        --label "$label")
    if [[ -n "$json" ]]; then args+=(--json-out "$json"); fi
    (cd "$work/meridian" && timeout --kill-after=5 $((run_secs + BENCH_SLACK_SECS)) "$bin" "${args[@]}") \
        | sed -n '2p'
}

# Meridian's server-side metrics around each of its runs, for the group-commit
# figures in the summary. Best effort: a failed scrape only loses those figures.
scrape() { # file
    curl -fsS --max-time 5 "http://$HOST:$MERIDIAN_HTTP_PORT/metrics" >"$1" 2>/dev/null || rm -f "$1"
}

mkdir -p "$metrics_dir"
echo "== warm-up (${WARMUP_SECS}s of puts per system, not recorded)"
bench meridian put 16 "$WARMUP_SECS" >/dev/null
bench etcd put 16 "$WARMUP_SECS" >/dev/null

echo "== ${secs}s per run, $conns connection(s) per system; results: $out"
printf '%-9s %-5s %7s %10s %8s %12s %9s %9s %9s\n' \
    system op clients ops errors ops/s p50_us p99_us p999_us
row=0
for workload in "${WORKLOADS[@]}"; do
    for clients in "${CLIENTS[@]}"; do
        if (( row % 2 == 0 )); then order=(meridian etcd); else order=(etcd meridian); fi
        for system in "${order[@]}"; do
            if [[ "$system" == meridian ]]; then scrape "$metrics_dir/$workload-c$clients.before.prom"; fi
            bench "$system" "$workload" "$clients" "$secs" "$out"
            if [[ "$system" == meridian ]]; then scrape "$metrics_dir/$workload-c$clients.after.prom"; fi
        done
        row=$((row + 1))
    done
done

echo
echo "== summary ($out)"
python3 - "$out" "$stamp" "$metrics_dir" <<'PY'
import json
import re
import os
import sys

path, stamp, metrics_dir = sys.argv[1], sys.argv[2], sys.argv[3]
runs = {}
with open(path) as f:
    for line in f:
        r = json.loads(line)
        if f"run={stamp}" in r["label"].split():
            runs[(r["workload"], r["clients"], r["system"])] = r

rows = sorted({(w, c) for (w, c, _) in runs}, key=lambda k: (k[0] != "put", k[1]))
head = ("op", "clients", "meridian ops/s", "etcd ops/s", "ops ratio",
        "meridian p50/p99/p999 us", "etcd p50/p99/p999 us", "p99 ratio", "errors m/e")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for w, c in rows:
    m, e = runs.get((w, c, "meridian")), runs.get((w, c, "etcd"))
    if not m or not e:
        continue
    lat = lambda r: f"{r['p50_us']}/{r['p99_us']}/{r['p999_us']}"
    cells = (w, str(c), f"{m['ops_per_sec']:.0f}", f"{e['ops_per_sec']:.0f}",
             f"{m['ops_per_sec'] / e['ops_per_sec']:.2f}", lat(m), lat(e),
             f"{e['p99_us'] / m['p99_us']:.2f}", f"{m['errors']}/{e['errors']}")
    print("| " + " | ".join(cells) + " |")
print()
print("ops ratio = meridian ops/s / etcd ops/s; p99 ratio = etcd p99 / meridian p99 (above 1: Meridian ahead)")


def counters(file):
    """The _sum and _count lines of a Prometheus text scrape, by metric name."""
    out = {}
    with open(file) as f:
        for line in f:
            if line.startswith("meridian_") and re.match(r"^\S+_(sum|count)(\{.*\})? ", line):
                name, value = line.rsplit(None, 1)
                out[name] = float(value)
    return out


print()
print("Meridian log group commit during its put runs (from /metrics deltas):")
print("| clients | log fsyncs | appends per fsync | fsync ms | propose-to-applied ms |")
print("|---|---|---|---|---|")
for c in sorted({c for (w, c, _) in runs if w == "put"}):
    files = [os.path.join(metrics_dir, f"put-c{c}.{when}.prom") for when in ("before", "after")]
    if not all(os.path.exists(f) for f in files):
        continue
    a, b = counters(files[0]), counters(files[1])
    d = lambda k: b.get(k, 0.0) - a.get(k, 0.0)
    syncs = d("meridian_raft_log_sync_appends_count")
    if syncs <= 0:
        continue
    appends = d("meridian_raft_log_sync_appends_sum") / syncs
    sync_ms = d("meridian_raft_log_sync_seconds_sum") / syncs * 1e3
    proposals = sum(v for k, v in b.items() if k.startswith("meridian_raft_proposal_duration_seconds_count")) - sum(
        v for k, v in a.items() if k.startswith("meridian_raft_proposal_duration_seconds_count"))
    propose_s = sum(v for k, v in b.items() if k.startswith("meridian_raft_proposal_duration_seconds_sum")) - sum(
        v for k, v in a.items() if k.startswith("meridian_raft_proposal_duration_seconds_sum"))
    propose_ms = propose_s / proposals * 1e3 if proposals > 0 else float("nan")
    print(f"| {c} | {syncs:.0f} | {appends:.1f} | {sync_ms:.3f} | {propose_ms:.3f} |")
PY
