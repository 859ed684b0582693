#!/usr/bin/env bash
# Ranks two Meridian builds on one workload by interleaved runs: on this
# noisy 2-core machine one pair of runs of compare_etcd_region.sh ranks two
# builds only to about 30% per row (docs/benchmarks.md, R13), so a
# before/after claim needs repeats in one session, in an order that cancels
# drift (A B B A, repeated).
#
# Each run starts a fresh 3-node region (`meridian dev --topology
# regions/local-3.toml`, ports shifted by --port-offset), loads it with the
# --preload put runs (compare_etcd_region.sh runs its put rows before its read
# rows, so reads meet a store that has taken writes), then runs
# `meridian bench --workload W --clients C` with the same build as client,
# counting the three servers' CPU time (from /proc) and the client's over
# that bench call (which includes the keys a get or serializable run loads
# first, so CPU per op is an upper bound, alike for both arms).
# Prints one line per run and, per client count, the median of each arm and
# the median of B/A over the pairs.
#
# Usage: benches/ab_builds.sh --a BIN --b BIN [--workload serializable]
#            [--clients "1 16 64 256"] [--pairs 3] [--secs 10]
#            [--preload "256:25"] [--port-offset 4400] [--out FILE]
#   --a, --b      binaries built with `cargo build --release --features etcd`
#                 (the same build serves and drives the load)
#   --workload    a `meridian bench --workload` value (put, get, serializable)
#   --clients     client counts, each measured in --pairs pairs of runs,
#                 ordered A B, B A, A B, ...
#   --preload     put runs before the measured one, CLIENTS:SECS each; the
#                 default writes about as many versions as the put rows of
#                 compare_etcd_region.sh (~400,000), so reads meet a store in
#                 the same state (flushed tables, not only the memtable): a
#                 lighter preload leaves each build's store in a different
#                 state (see docs/benchmarks.md, stop 25)
#   --out         JSON lines, one per run (default bench-results/ab-<stamp>.jsonl)
set -euo pipefail

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

readonly READY_TIMEOUT_SECS=90
readonly STOP_TIMEOUT_SECS=20
readonly BENCH_SLACK_SECS=120

a="" b="" workload=serializable clients_list="1 16 64 256" pairs=3 secs=10
preload="256:25" port_offset=4400 out=""
while (( $# )); do
    case "$1" in
        --a) a="$2"; shift 2 ;;
        --b) b="$2"; shift 2 ;;
        --workload) workload="$2"; shift 2 ;;
        --clients) clients_list="$2"; shift 2 ;;
        --pairs) pairs="$2"; shift 2 ;;
        --secs) secs="$2"; shift 2 ;;
        --preload) preload="$2"; shift 2 ;;
        --port-offset) port_offset="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
for bin in "$a" "$b"; do
    [[ -n "$bin" && -x "$bin" ]] || { echo "--a and --b must name executables (got '$bin')" >&2; exit 2; }
done
[[ "$pairs" =~ ^[1-9][0-9]?$ ]] || { echo "--pairs must be 1..99" >&2; exit 2; }
[[ "$secs" =~ ^[1-9][0-9]{0,2}$ ]] || { echo "--secs must be 1..999" >&2; exit 2; }
for p in $preload; do
    [[ "$p" =~ ^[1-9][0-9]*:[1-9][0-9]*$ ]] || { echo "--preload entries are CLIENTS:SECS (got $p)" >&2; exit 2; }
done
require_tools python3 awk sed
scrub_env
setup_output ab
work="$(mktemp -d /tmp/meridian-ab.XXXXXX)"
dev_pid="" node_pids=()

cleanup() {
    local pid
    if [[ -n "$dev_pid" ]]; then stop_child "meridian dev" "$dev_pid"; fi
    for pid in "${node_pids[@]}"; do
        if is_our_node "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    done
    dev_pid="" node_pids=()
}
trap 'cleanup; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

cpu_ticks() { # pid: utime + stime
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}
servers_ticks() {
    local pid sum=0
    for pid in "${node_pids[@]}"; do sum=$((sum + $(cpu_ticks "$pid"))); done
    echo "$sum"
}

start_region() { # bin
    rm -rf "$work/meridian-dev"
    (cd "$work" && exec "$1" dev --topology "$repo/regions/local-3.toml" --dir "$work/meridian-dev" \
        --port-offset "$port_offset") >"$work/dev.log" 2>&1 &
    dev_pid=$!
    wait_dev_serving 3
}

run_bench() { # bin workload clients secs [json]
    local args=(bench --workload "$2" --clients "$3" --duration-secs "$4" --value-size 256 --conns 3)
    if [[ -n "${5:-}" ]]; then args+=(--json-out "$5"); fi
    # shellcheck source=/dev/null
    (cd "$work" && set -a && source "$work/meridian-dev/env" && set +a \
        && timeout --kill-after=5 $(($4 + BENCH_SLACK_SECS)) python3 -c "$CHILD_CPU" "$work/client.cpu" \
            "$1" "${args[@]}") | sed -n '2p'
}
# Runs argv[2:] and writes its CPU time (user + system, seconds) to argv[1].
readonly CHILD_CPU='import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(str(r.ru_utime + r.ru_stime))
sys.exit(code)'

one_run() { # arm bin clients
    local arm="$1" bin="$2" clients="$3" p before after hz json="$work/run.jsonl"
    start_region "$bin"
    for p in $preload; do run_bench "$bin" put "${p%%:*}" "${p##*:}" >/dev/null; done
    rm -f "$json"
    before=$(servers_ticks)
    run_bench "$bin" "$workload" "$clients" "$secs" "$json" >/dev/null
    after=$(servers_ticks)
    cleanup
    hz=$(getconf CLK_TCK)
    python3 - "$json" "$arm" "$bin" "$((after - before))" "$hz" "$out" "$work/client.cpu" <<'PY'
import json, sys
path, arm, binary, ticks, hz, out, client_cpu = sys.argv[1:]
row = [json.loads(l) for l in open(path) if l.strip()][-1]
row.update(arm=arm, binary=binary, server_cpu_secs=int(ticks) / int(hz),
           client_cpu_secs=float(open(client_cpu).read()))
ops = row.get("ops", 0)
row["server_cpu_us_per_op"] = row["server_cpu_secs"] * 1e6 / ops if ops else None
row["client_cpu_us_per_op"] = row["client_cpu_secs"] * 1e6 / ops if ops else None
with open(out, "a") as f:
    f.write(json.dumps(row) + "\n")
print(f"{arm} clients={row['clients']:>3} ops/s={row['ops_per_sec']:>9.0f} "
      f"p50={row['p50_us']}us p99={row['p99_us']}us errors={row['errors']} "
      f"server_cpu/op={row['server_cpu_us_per_op'] or 0:.1f}us "
      f"client_cpu/op={row['client_cpu_us_per_op'] or 0:.1f}us", flush=True)
PY
}

echo "== A: $a"
echo "== B: $b"
echo "== $workload, clients $clients_list, $pairs A-B pairs each (order A B B A ...), ${secs}s runs after puts $preload; results $out"
for clients in $clients_list; do
    for ((i = 0; i < pairs; i++)); do
        if (( i % 2 == 0 )); then order="A B"; else order="B A"; fi
        for arm in $order; do
            if [[ "$arm" == A ]]; then one_run A "$a" "$clients"; else one_run B "$b" "$clients"; fi
        done
    done
done

python3 - "$out" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("\nclients | A ops/s (median) | B ops/s (median) | B/A per pair (median, min-max) | p99 us A / B (median) | server CPU us/op A / B | client CPU us/op A / B")
for c in sorted({r["clients"] for r in rows}):
    arm = lambda a: [r for r in rows if r["clients"] == c and r["arm"] == a]
    A, B = arm("A"), arm("B")
    ratios = [b["ops_per_sec"] / a["ops_per_sec"] for a, b in zip(A, B)]
    med = lambda xs: statistics.median(xs) if xs else float("nan")
    print(f"{c:>7} | {med([r['ops_per_sec'] for r in A]):>16,.0f} | {med([r['ops_per_sec'] for r in B]):>16,.0f} | "
          f"{med(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | "
          f"{med([r['p99_us'] for r in A]):,.0f} / {med([r['p99_us'] for r in B]):,.0f} | "
          f"{med([r['server_cpu_us_per_op'] for r in A]):.1f} / {med([r['server_cpu_us_per_op'] for r in B]):.1f} | "
          f"{med([r['client_cpu_us_per_op'] for r in A]):.1f} / {med([r['client_cpu_us_per_op'] for r in B]):.1f}")
PY
