#!/usr/bin/env bash
# A three-node Meridian region vs a three-member etcd cluster on one machine,
# in one run.
#
# Builds `meridian` with etcd support, starts a three-node region with
# `meridian dev --topology regions/local-3.toml` (one region, ports shifted by
# --port-offset) and a three-member etcd cluster, all on 127.0.0.1 with fresh
# data directories, and runs the same closed-loop workloads against both with
# `meridian bench`: put, linearizable get and serializable get, 256-byte
# values, 1, 16, 64 and 256 clients. For every (workload, clients) row both
# systems run back to back, and the one that goes first alternates from row
# to row, so slow drift on the machine hits both. Results are appended as
# JSON lines to one file and summarised at the end with ratios (meridian
# ops/s / etcd ops/s, etcd p99 / meridian p99: above 1 means Meridian is
# ahead on both).
#
# Both clients get all three endpoints. Meridian's client connects to one and
# follows leader redirects (each of the --conns connections starts at a
# different node); etcd's client balances over all three members, and a
# member forwards writes and linearizable reads to its leader.
#
# Durability is the same on both sides: a write is acknowledged only once a
# majority of the members has it in an fsynced Raft log. Meridian fsyncs its
# Raft log (leader and followers, `persist(SyncAll)` on the log syncer
# thread) before a node reports appended entries as stored; etcd fdatasyncs
# its WAL before a member reports an entry as stored (no --unsafe-no-fsync).
#
# Usage: benches/compare_etcd_region.sh [--duration-secs N] [--conns N]
#                                        [--clients LIST] [--workloads LIST]
#                                        [--out FILE]
#                                        [--port-offset N]
#                                        [--meridian-env MERIDIAN_SECTION__FIELD=VALUE]...
#                                        [--trace-ratio R]
#   --duration-secs N  seconds per run (default 10; env BENCH_SECS)
#   --conns N          client connections per system (default 3, one per
#                      Meridian node; env BENCH_CONNS)
#   --clients LIST     comma-separated concurrencies (default 1,16,64,256)
#   --workloads LIST   comma-separated subset of put,get,serializable (default
#                      all three; `get` is linearizable)
#   --out FILE         JSON lines output (default
#                      bench-results/compare_etcd_region-<time>.jsonl)
#   --port-offset N    shift of Meridian's topology ports (default 1000:
#                      QUIC 8379/8381/8383, HTTP 8380/8382/8384, gossip
#                      8385-8387); etcd uses clients 24379/24381/24383 and
#                      peers 24380/24382/24384
#   --meridian-env V   a config override for every Meridian node (repeatable),
#                      e.g. MERIDIAN_RAFT__SNAPSHOT_AFTER_LOGS=10000000 for a
#                      diagnostic run; recorded in the label. Default: none.
#   --trace-ratio R    turn Meridian's trace export on at sampling ratio R
#                      (0.0..=1.0, e.g. 0.01): the script starts an OTLP/HTTP
#                      sink on 127.0.0.1:(7390 + port offset) that reads and
#                      discards every export request (counting them), and
#                      sets MERIDIAN_TELEMETRY__OTLP_ENDPOINT and
#                      MERIDIAN_TELEMETRY__SAMPLING_RATIO for every node
#                      (recorded in the label). Default: tracing off.
# Env: KEEP_WORK=1 keeps the temporary directory (server logs, data);
# MERIDIAN_BENCH_BIN=PATH measures that `meridian` binary (built with
# --features etcd) instead of building this checkout.
#
# If `perf` can count syscall tracepoints here, the script also counts
# fsync/fdatasync calls of every server during the put runs (best effort).
#
# Needs: cargo, protoc (Debian: protobuf-compiler), etcd, curl, python3, ss.
set -euo pipefail

# Bounds on every wait, in seconds.
readonly READY_TIMEOUT_SECS=90     # server start until healthy (meridian dev itself allows 60)
readonly STOP_TIMEOUT_SECS=20      # SIGTERM until SIGKILL (meridian dev stops its nodes within 10)
readonly BENCH_SLACK_SECS=180      # per bench call beyond its duration (connect, get preload)
readonly PERF_STOP_SECS=10         # perf stat after SIGINT
readonly WARMUP_SECS=2             # unrecorded put load per system before the first row
readonly SINK_BASE_PORT=7390       # the OTLP sink of --trace-ratio, before the offset

readonly HOST=127.0.0.1
# Ports of regions/local-3.toml, before the offset.
readonly MERIDIAN_QUIC_PORTS=(7379 7381 7383)
readonly MERIDIAN_HTTP_PORTS=(7380 7382 7384)
readonly MERIDIAN_GOSSIP_PORTS=(7385 7386 7387)
readonly ETCD_NAMES=(e1 e2 e3)
readonly ETCD_CLIENT_PORTS=(24379 24381 24383)
readonly ETCD_PEER_PORTS=(24380 24382 24384)

readonly VALUE_SIZE=256

secs="${BENCH_SECS:-10}"
conns="${BENCH_CONNS:-3}"
clients_list="1,16,64,256"
workloads_list="put,get,serializable"
out=""
port_offset=1000
meridian_env=()
trace_ratio=""

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration-secs) secs="${2:?--duration-secs needs a value}"; shift 2 ;;
        --conns) conns="${2:?--conns needs a value}"; shift 2 ;;
        --clients) clients_list="${2:?--clients needs a value}"; shift 2 ;;
        --workloads) workloads_list="${2:?--workloads needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --port-offset) port_offset="${2:?--port-offset needs a value}"; shift 2 ;;
        --meridian-env)
            [[ "${2:-}" =~ ^MERIDIAN_[A-Z0-9_]+__[A-Z0-9_]+=.*$ ]] \
                || { echo "--meridian-env takes MERIDIAN_<SECTION>__<FIELD>=VALUE" >&2; exit 2; }
            meridian_env+=("$2"); shift 2 ;;
        --trace-ratio) trace_ratio="${2:?--trace-ratio needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "--duration-secs must be a positive integer" >&2; exit 2; }
[[ "$conns" =~ ^[1-9][0-9]*$ ]] || { echo "--conns must be a positive integer" >&2; exit 2; }
[[ "$clients_list" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "--clients takes e.g. 1,16,64,256" >&2; exit 2; }
[[ "$port_offset" =~ ^[0-9]+$ ]] && (( port_offset <= 50000 )) \
    || { echo "--port-offset must be 0..=50000" >&2; exit 2; }
[[ "$workloads_list" =~ ^(put|get|serializable)(,(put|get|serializable))*$ ]] \
    || { echo "--workloads takes a subset of put,get,serializable" >&2; exit 2; }
[[ -z "$trace_ratio" || "$trace_ratio" =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] \
    || { echo "--trace-ratio takes a ratio in 0.0..=1.0, e.g. 0.01" >&2; exit 2; }
IFS=, read -r -a CLIENTS <<<"$clients_list"
IFS=, read -r -a WORKLOADS <<<"$workloads_list"

require_tools cargo etcd curl python3 ss timeout
setup_output compare_etcd_region
scrub_env
build_meridian

meridian_http_ports=()
ports_to_check=()
for i in 0 1 2; do
    meridian_http_ports+=($((MERIDIAN_HTTP_PORTS[i] + port_offset)))
    ports_to_check+=("udp:$((MERIDIAN_QUIC_PORTS[i] + port_offset))"
        "tcp:$((MERIDIAN_HTTP_PORTS[i] + port_offset))"
        "udp:$((MERIDIAN_GOSSIP_PORTS[i] + port_offset))"
        "tcp:${ETCD_CLIENT_PORTS[i]}" "tcp:${ETCD_PEER_PORTS[i]}")
done
sink_port=$((SINK_BASE_PORT + port_offset))
[[ -n "$trace_ratio" ]] && ports_to_check+=("tcp:$sink_port")
require_free_ports "stop whatever listens there or pick another --port-offset" "${ports_to_check[@]}"

work="$(mktemp -d -t meridian-region-vs-etcd.XXXXXX)"
dev_pid=""
node_pids=()   # the `meridian serve` children of `meridian dev` (not our children)
etcd_pids=()
perf_pids=()
sink_pid=""

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${perf_pids[@]}"; do
        alive "$pid" && kill -INT "$pid" 2>/dev/null
        wait_gone "$pid" "$PERF_STOP_SECS" || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    # `meridian dev` stops its nodes on SIGTERM (SIGTERM, then SIGKILL after 10 s).
    stop_child "meridian dev" "$dev_pid"
    for pid in "${node_pids[@]}"; do
        if is_our_node "$pid"; then
            echo "meridian node (pid $pid) outlived meridian dev; stopping it" >&2
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" "$STOP_TIMEOUT_SECS" || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for i in "${!etcd_pids[@]}"; do stop_child "etcd ${ETCD_NAMES[i]}" "${etcd_pids[i]}"; done
    stop_child "OTLP sink" "$sink_pid"
    [[ -f "$work/sink.log" ]] && sed 's/^/   /' "$work/sink.log"
    if [[ "${KEEP_WORK:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $work (logs: dev.log, meridian-dev/node*.log, etcd-*.log)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# curl, with the dev cluster's CA and client certificate for an https URL
# (a gateway with server.http_tls = true asks every request for one).
curl_url() { # curl-args... url (last)
    local url="${*: -1}"
    if [[ "$url" == https://* ]]; then
        curl --cacert "$MERIDIAN_CA" --cert "$MERIDIAN_CERT" --key "$MERIDIAN_KEY" "$@"
    else
        curl "$@"
    fi
}

# The scheme of Meridian node i's gateway (0-based): https when its config
# turns TLS on.
meridian_scheme() { # i
    if grep -qs '^http_tls = true' "$work/meridian-dev/node$(($1 + 1)).toml"; then
        echo https
    else
        echo http
    fi
}

wait_http() { # name pid url expected-substring
    local name="$1" pid="$2" url="$3" want="$4" body deadline=$((SECONDS + READY_TIMEOUT_SECS))
    while (( SECONDS < deadline )); do
        alive "$pid" || { echo "$name exited during startup; see its log in $work" >&2; return 1; }
        body="$(curl_url -fsS --max-time 1 "$url" 2>/dev/null || true)"
        [[ "$body" == *"$want"* ]] && return 0
        sleep 0.2
    done
    echo "$name not ready within ${READY_TIMEOUT_SECS}s ($url); see its log in $work" >&2
    return 1
}

# --- etcd: three members, one cluster ---------------------------------------
initial_cluster=""
etcd_endpoints=""
for i in 0 1 2; do
    initial_cluster+="${initial_cluster:+,}${ETCD_NAMES[i]}=http://$HOST:${ETCD_PEER_PORTS[i]}"
    etcd_endpoints+="${etcd_endpoints:+,}http://$HOST:${ETCD_CLIENT_PORTS[i]}"
done
echo "== starting a 3-member etcd $(etcd --version | sed -n 's/^etcd Version: //p') cluster in $work/etcd-*"
for i in 0 1 2; do
    name="${ETCD_NAMES[i]}"
    etcd --name "$name" --data-dir "$work/etcd-$name" \
        --listen-client-urls "http://$HOST:${ETCD_CLIENT_PORTS[i]}" \
        --advertise-client-urls "http://$HOST:${ETCD_CLIENT_PORTS[i]}" \
        --listen-peer-urls "http://$HOST:${ETCD_PEER_PORTS[i]}" \
        --initial-advertise-peer-urls "http://$HOST:${ETCD_PEER_PORTS[i]}" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token "bench-$stamp" \
        --logger zap --log-outputs stderr >"$work/etcd-$name.log" 2>&1 &
    etcd_pids+=($!)
done

# --- OTLP sink (--trace-ratio): reads and discards export requests ---------
if [[ -n "$trace_ratio" ]]; then
    # Answers every POST with an empty protobuf reply (a valid, empty
    # ExportTraceServiceResponse) and counts requests and bytes, printed at
    # exit so the run shows spans were really exported.
    python3 - "$sink_port" >"$work/sink.log" 2>&1 <<'PY' &
import http.server, signal, sys
stats = {"requests": 0, "bytes": 0}
class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(n)
        stats["requests"] += 1
        stats["bytes"] += n
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
def done(*_):
    print(f"OTLP sink: {stats['requests']} export requests, {stats['bytes']} bytes of spans", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, done)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Sink).serve_forever()
PY
    sink_pid=$!
    meridian_env+=("MERIDIAN_TELEMETRY__OTLP_ENDPOINT=http://$HOST:$sink_port"
        "MERIDIAN_TELEMETRY__SAMPLING_RATIO=$trace_ratio")
fi

# --- Meridian: a three-node region via `meridian dev` ----------------------
echo "== starting a 3-node Meridian region (meridian dev --port-offset $port_offset${meridian_env[*]:+; ${meridian_env[*]}}) in $work/meridian-dev"
# The nodes inherit the environment of `meridian dev`, so overrides reach them.
(cd "$work" && exec env "${meridian_env[@]}" "$bin" dev --topology "$repo/regions/local-3.toml" --dir "$work/meridian-dev" --port-offset "$port_offset") \
    >"$work/dev.log" 2>&1 &
dev_pid=$!
wait_dev_serving 3
# shellcheck source=/dev/null
source "$work/meridian-dev/env"   # MERIDIAN_ENDPOINTS (all three nodes), MERIDIAN_CA/CERT/KEY
[[ "$MERIDIAN_ENDPOINTS" == *,*,* ]] || { echo "env lists endpoints $MERIDIAN_ENDPOINTS, expected three" >&2; exit 1; }

for i in 0 1 2; do
    wait_http "etcd ${ETCD_NAMES[i]}" "${etcd_pids[i]}" "http://$HOST:${ETCD_CLIENT_PORTS[i]}/health" '"health":"true"'
    wait_http "meridian node$((i + 1))" "${node_pids[i]}" "$(meridian_scheme "$i")://$HOST:${meridian_http_ports[i]}/ready" '"ready"'
done
echo "   meridian: $MERIDIAN_ENDPOINTS (node pids ${node_pids[*]})"
echo "   etcd:     $etcd_endpoints (pids ${etcd_pids[*]})"

# --- fsync counting (best effort) ------------------------------------------
perf_ok=0
if command -v perf >/dev/null \
    && timeout 10 perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync -o /dev/null -- true >/dev/null 2>&1; then
    perf_ok=1
fi

start_fsync_count() { # system prefix -> starts one perf stat per server
    local system="$1" prefix="$2" i pids
    perf_pids=()
    (( perf_ok )) || return 0
    if [[ "$system" == meridian ]]; then pids=("${node_pids[@]}"); else pids=("${etcd_pids[@]}"); fi
    for i in 0 1 2; do
        perf stat -x, -e syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync \
            -p "${pids[i]}" -o "$prefix.s$((i + 1)).perf" 2>/dev/null &
        perf_pids+=($!)
    done
}

stop_fsync_count() {
    local pid
    for pid in "${perf_pids[@]}"; do
        kill -INT "$pid" 2>/dev/null || true
        wait_gone "$pid" "$PERF_STOP_SECS" || kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    perf_pids=()
}

# --- runs ---------------------------------------------------------------------
cpu_ticks() { # pid -> utime + stime of the whole process, in clock ticks
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || { echo 0; return; }
    stat="${stat##*) }"   # fields after the command name; utime, stime are the 12th, 13th
    awk '{print $12 + $13}' <<<"$stat"
}
bench() { # system workload clients secs [json]
    local system="$1" workload="$2" clients="$3" run_secs="$4" json="${5:-}" label
    label="run=$stamp topology=3-node conns=$conns"
    if [[ "$system" == meridian ]]; then
        label+=" durability=raft-log-fsync${meridian_env[*]:+ ${meridian_env[*]}}"
    else
        label+=" durability=wal-fsync"
    fi
    local args=(bench --system "$system" --workload "$workload" --clients "$clients"
        --duration-secs "$run_secs" --value-size "$VALUE_SIZE" --conns "$conns"
        --etcd-endpoints "$etcd_endpoints" --label "$label")
    if [[ -n "$json" ]]; then args+=(--json-out "$json"); fi
    (cd "$work" && timeout --kill-after=5 $((run_secs + BENCH_SLACK_SECS)) "$bin" "${args[@]}") \
        | sed -n '2p'
}

# /metrics of all three servers of a system, for the server-side figures in
# the summary, and the CPU time of all six servers and of the whole machine.
# Best effort: a failed scrape only loses those figures.
scrape() { # system prefix
    local i url pid
    {
        awk '/^cpu /{print "machine", $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat
        for pid in "${node_pids[@]}"; do echo "meridian $pid $(cpu_ticks "$pid")"; done
        for pid in "${etcd_pids[@]}"; do echo "etcd $pid $(cpu_ticks "$pid")"; done
    } >"$2.cpu"
    for i in 0 1 2; do
        if [[ "$1" == meridian ]]; then
            url="$(meridian_scheme "$i")://$HOST:${meridian_http_ports[i]}/metrics"
        else
            url="http://$HOST:${ETCD_CLIENT_PORTS[i]}/metrics"
        fi
        curl_url -fsS --max-time 5 "$url" >"$2.s$((i + 1)).prom" 2>/dev/null || rm -f "$2.s$((i + 1)).prom"
    done
}

mkdir -p "$metrics_dir"
echo "== warm-up (${WARMUP_SECS}s of puts per system, not recorded)"
bench meridian put 16 "$WARMUP_SECS" >/dev/null
bench etcd put 16 "$WARMUP_SECS" >/dev/null

echo "== ${secs}s per run, $conns connection(s) per system; results: $out"
echo "   fsync counting with perf: $([[ $perf_ok == 1 ]] && echo on || echo off)"
printf '%-9s %-5s %7s %10s %8s %12s %9s %9s %9s\n' \
    system op clients ops errors ops/s p50_us p99_us p999_us
row=0
failed=()
for workload in "${WORKLOADS[@]}"; do
    for clients in "${CLIENTS[@]}"; do
        if (( row % 2 == 0 )); then order=(meridian etcd); else order=(etcd meridian); fi
        for system in "${order[@]}"; do
            prefix="$metrics_dir/$system-$workload-c$clients"
            scrape "$system" "$prefix.before"
            [[ "$workload" == put ]] && start_fsync_count "$system" "$prefix"
            if ! bench "$system" "$workload" "$clients" "$secs" "$out"; then
                # Keep going: one failed call (its error is printed above) loses one row only.
                echo "$system $workload clients=$clients: bench call FAILED" >&2
                failed+=("$system/$workload/$clients")
            fi
            stop_fsync_count
            scrape "$system" "$prefix.after"
        done
        row=$((row + 1))
    done
done

echo
echo "== summary ($out)"
python3 - "$out" "$stamp" "$metrics_dir" "$(getconf CLK_TCK)" <<'PY'
import glob
import json
import os
import re
import sys

path, stamp, metrics_dir, clk_tck = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
runs = {}
with open(path) as f:
    for line in f:
        r = json.loads(line)
        if f"run={stamp}" in r["label"].split():
            runs[(r["workload"], r["clients"], r["system"])] = r

OPS = {"put": "put", "get": "get (linearizable)", "serializable": "get (serializable)"}
ORDER = list(OPS)
rows = sorted({(w, c) for (w, c, _) in runs}, key=lambda k: (ORDER.index(k[0]), k[1]))
head = ("op", "clients", "Meridian ops/s", "etcd ops/s", "ops ratio",
        "Meridian p50/p99/p999 us", "etcd p50/p99/p999 us", "p99 ratio", "errors M/e")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for w, c in rows:
    m, e = runs.get((w, c, "meridian")), runs.get((w, c, "etcd"))
    if not m or not e:
        continue
    lat = lambda r: f"{r['p50_us']:,} / {r['p99_us']:,} / {r['p999_us']:,}"
    cells = (OPS[w], str(c), f"{m['ops_per_sec']:,.0f}", f"{e['ops_per_sec']:,.0f}",
             f"{m['ops_per_sec'] / e['ops_per_sec']:.2f}", lat(m), lat(e),
             f"{e['p99_us'] / m['p99_us']:.2f}", f"{m['errors']}/{e['errors']}")
    print("| " + " | ".join(cells) + " |")
print()
print("ops ratio = Meridian ops/s / etcd ops/s; p99 ratio = etcd p99 / Meridian p99 (above 1: Meridian ahead)")
for r in runs.values():
    if r.get("first_error"):
        print(f"  {r['system']} {r['workload']} c={r['clients']}: {r['errors']} errors, first: {r['first_error']}")

def prom(file):
    """Prometheus text scrape -> {name{labels}: value} (summaries' quantile lines skipped)."""
    out = {}
    if not os.path.exists(file):
        return out
    with open(file) as f:
        for line in f:
            if line.startswith("#") or not line.strip() or 'quantile="' in line:
                continue
            name, _, value = line.rpartition(" ")
            try:
                out[name.strip()] = float(value)
            except ValueError:
                pass
    return out

def delta(prefix, server, name):
    a = prom(f"{prefix}.before.s{server}.prom")
    b = prom(f"{prefix}.after.s{server}.prom")
    return b.get(name, 0.0) - a.get(name, 0.0), b

def fsyncs(prefix, server):
    """fsync + fdatasync calls counted by perf stat for one server, or None."""
    file = f"{prefix}.s{server}.perf"
    if not os.path.exists(file):
        return None
    n = 0
    with open(file) as f:
        for line in f:
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[2].startswith("syscalls:") and parts[0].isdigit():
                n += int(parts[0])
    return n

print()
print("Server side during the put runs (from /metrics deltas and perf syscall counts):")
print("| system | clients | puts | leader: server-side put latency, mean | log entries per put | "
      "log fsync, mean | fsync calls per put (leader / followers) | snapshots built |")
print("|---|---:|---:|---:|---:|---:|---|---:|")
for c in sorted({c for (w, c, _) in runs if w == "put"}):
    for system in ("meridian", "etcd"):
        r = runs.get(("put", c, system))
        if not r:
            continue
        prefix = os.path.join(metrics_dir, f"{system}-put-c{c}")
        puts = r["ops"] + r["errors"]
        leader, lat, entries, fs_mean, snaps = None, "n/a", "n/a", "n/a", "n/a"
        if system == "meridian":
            # The leader of the bench keys' range: the node whose commit index moved most
            # and that reports itself leader of that range.
            best = (0.0, None, None)
            for s in (1, 2, 3):
                a = prom(f"{prefix}.before.s{s}.prom")
                b = prom(f"{prefix}.after.s{s}.prom")
                for k, v in b.items():
                    mm = re.match(r'meridian_raft_commit_index\{range="(\d+)"\}', k)
                    if mm and b.get(f'meridian_raft_is_leader{{range="{mm.group(1)}"}}') == 1.0:
                        d = v - a.get(k, 0.0)
                        if d > best[0]:
                            best = (d, s, mm.group(1))
            committed, leader, _ = best
            if leader:
                ds, _ = delta(prefix, leader, 'meridian_request_duration_seconds_sum{op="put"}')
                dn, _ = delta(prefix, leader, 'meridian_request_duration_seconds_count{op="put"}')
                if dn > 0:
                    lat = f"{ds / dn * 1e3:.3f} ms"
                entries = f"{committed / puts:.2f}" if puts else "n/a"
                ds, _ = delta(prefix, leader, "meridian_raft_log_sync_seconds_sum")
                dn, _ = delta(prefix, leader, "meridian_raft_log_sync_seconds_count")
                if dn > 0:
                    fs_mean = f"{ds / dn * 1e3:.3f} ms"
                sn = sum(delta(prefix, s, "meridian_raft_snapshots_built_total")[0] for s in (1, 2, 3))
                snaps = f"{sn:.0f} (3 nodes)"
        else:
            for s in (1, 2, 3):
                _, b = delta(prefix, s, "etcd_server_is_leader")
                if b.get("etcd_server_is_leader") == 1.0:
                    leader = s
            if leader:
                dn, _ = delta(prefix, leader, "etcd_disk_wal_fsync_duration_seconds_count")
                ds, _ = delta(prefix, leader, "etcd_disk_wal_fsync_duration_seconds_sum")
                if dn > 0:
                    fs_mean = f"{ds / dn * 1e3:.3f} ms"
                dc, _ = delta(prefix, leader, "etcd_server_proposals_committed_total")
                entries = f"{dc / puts:.2f}" if puts else "n/a"
                sn = sum(delta(prefix, s, "etcd_debugging_snap_save_total_duration_seconds_count")[0]
                         for s in (1, 2, 3))
                snaps = f"{sn:.0f} (3 members)"
        counts = {s: fsyncs(prefix, s) for s in (1, 2, 3)}
        if leader and all(v is not None for v in counts.values()) and puts:
            fol = [counts[s] / puts for s in (1, 2, 3) if s != leader]
            per_put = f"{counts[leader] / puts:.2f} / " + ", ".join(f"{x:.2f}" for x in fol)
        else:
            per_put = "n/a"
        print(f"| {system} | {c} | {puts:,} | {lat} | {entries} | {fs_mean} | {per_put} | {snaps} |")

def cpu(file):
    out = {}
    if os.path.exists(file):
        with open(file) as f:
            for line in f:
                p = line.split()
                if p[0] == "machine":
                    out["machine"] = int(p[1])
                else:
                    out.setdefault(p[0], []).append(int(p[2]))
    return out

print()
print("CPU during the put runs (from /proc, over the whole bench call; 2 cores):")
print("| clients | system | CPU of its 3 servers | per server (s1, s2, s3) | rest of the machine (load generator, idle system) | server CPU per put |")
print("|---:|---|---:|---|---:|---:|")
for w, c in rows:
    if w != "put":
        continue
    for system in ("meridian", "etcd"):
        r = runs.get((w, c, system))
        prefix = os.path.join(metrics_dir, f"{system}-{w}-c{c}")
        a, b = cpu(f"{prefix}.before.cpu"), cpu(f"{prefix}.after.cpu")
        if not r or not a or not b:
            continue
        servers = [y - x for x, y in zip(a[system], b[system])]
        other = (b["machine"] - a["machine"]) - sum(servers)
        puts = r["ops"] + r["errors"]
        print(f"| {c} | {system} | {sum(servers) / clk_tck:.1f} s | "
              + ", ".join(f"{x / clk_tck:.1f}" for x in servers)
              + f" s | {other / clk_tck:.1f} s | {sum(servers) / clk_tck / puts * 1e6:.0f} us |")
print()

print()
print("Log fsync: meridian_raft_log_sync_seconds / etcd_disk_wal_fsync_duration_seconds on the leader.")
print("etcd's server-side put latency is not exported as a metric. fsync calls are counted over each")
print("whole bench call.")
PY
if (( ${#failed[@]} > 0 )); then
    echo "FAILED bench calls (no row for them above): ${failed[*]}" >&2
    exit 1
fi
