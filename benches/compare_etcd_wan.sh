#!/usr/bin/env bash
# Three regions behind the WAN emulator: Meridian (three nodes per region)
# against etcd stretched over the same regions (one member per region),
# through the same emulator, in one run.
#
# Builds `meridian` with etcd support and starts `meridian dev` with a
# topology generated from regions/wan-3.toml (us-east, eu-west, ap-south;
# 70 / 140 / 200 ms round trips; ports shifted by --port-offset). The
# generated file adds, for the in-process WAN emulator of `meridian dev`,
# TCP fronts for a three-member etcd cluster (member i binds 127.0.i.10).
#
# etcd dials its peers from 127.0.0.1, so the emulator cannot tell the
# sender's region by source address. Each member therefore gets one front
# per sending region (chaos/README.md, "Fixed-source listeners"), and runs
# in a mount namespace of its own (`unshare --mount`) whose /etc/hosts maps
# the other members' names (its peer URLs are http://etcd-REGION:PORT) to
# the fronts for senders in its region. Every member sees the same peer
# URLs, so the cluster is an ordinary one. The etcd leader is moved to
# us-east, the home region of Meridian's strong prefixes. etcd runs with
# --heartbeat-interval 100 --election-timeout 2000 (etcd's tuning guide:
# election timeout about ten times the largest round trip).
#
# For every region and every --clients value, Meridian and etcd run their
# rows back to back (the one that goes first alternates). A client in a
# region sends from that region's address and is given its own region's
# endpoints: Meridian's REGION.env (three nodes, through their fronts: the
# emulator's UDP path, no delay inside a region), etcd's local member
# (directly: inside a region the emulator adds no delay, but its TCP path
# rounds every chunk up to tokio's 1 ms timer tick, about 2.5 ms per local
# request; --etcd-clients-via-emulator measures that way instead). Meridian
# rows, 256-byte values, --keys keys per prefix:
#   strong put           bench/ (default policy: strong, home us-east, async)
#   linearizable get     bench/ (at the home region's leader)
#   bounded get          bench/, bounded:1000 (local if the region's
#                        frontier is under 1 s old, else sent home)
#   causal put / get     sessions/bench/ (causal), get at causal level
#                        without a token
#   eventual put / get   ads/bench/ (eventual), get at eventual level
# etcd rows: put, linearizable get, serializable get.
#
# Replication lag (the `lag` workload of `meridian bench`): a writer in one
# region puts one key every 10 ms for --duration-secs, a reader in each
# other region polls it (Meridian: eventual reads, etcd: serializable)
# every 1 ms; lag = first seen - acknowledged, per region pair. Meridian:
# ads/bench/ from every region and bench/ from us-east; etcd: from every
# region.
#
# The summary prints p50/p99 per (system, region, operation), the p99
# ratios (etcd p99 / Meridian p99 of the comparable etcd operation: above
# 1 means Meridian is faster), the lag table and the issue's targets.
#
# Usage: benches/compare_etcd_wan.sh [--duration-secs N] [--clients LIST]
#                                     [--keys N] [--out FILE]
#                                     [--port-offset N] [--no-lag]
#                                     [--etcd-clients-via-emulator]
#   --duration-secs N  seconds per run (default 10; env BENCH_SECS)
#   --clients LIST     comma-separated concurrencies (default 1,16)
#   --keys N           key space per prefix (default 1000)
#   --out FILE         JSON lines output (default
#                      bench-results/compare_etcd_wan-<time>.jsonl)
#   --port-offset N    shift of every topology port (default 2000: Meridian
#                      QUIC 9379..., the emulator's control API 9390); etcd
#                      clients 2379+N, peers 2380+N on 127.0.{1,2,3}.10
#   --no-lag           skip the replication lag runs
#   --etcd-clients-via-emulator
#                      etcd clients reach their own region's member through
#                      the emulator's front for that region (default: its
#                      own address; peer traffic always crosses the emulator)
# Env: KEEP_WORK=1 keeps the temporary directory (logs, data, topology).
#
# Needs: cargo, protoc (Debian: protobuf-compiler), etcd, etcdctl,
# python3, ss, unshare and mount (root, or unprivileged user namespaces).
set -euo pipefail

# Bounds on every wait, in seconds.
readonly READY_TIMEOUT_SECS=180    # meridian dev: start, elect, run its demo
readonly ETCD_READY_TIMEOUT_SECS=60
readonly STOP_TIMEOUT_SECS=20      # SIGTERM until SIGKILL (meridian dev stops its nodes within 10)
readonly BENCH_SLACK_SECS=180      # per bench call beyond its duration (connect, preload, lag drain)
readonly LEADER_MOVE_SECS=30
readonly REPLICATE_SETTLE_SECS=3   # after the preloads, before remote regions read

readonly REGIONS=(us-east eu-west ap-south)   # file order of regions/wan-3.toml
readonly HOME_REGION=us-east
readonly VALUE_SIZE=256
readonly CONNS=3
readonly BOUNDED_MS=1000
readonly ETCD_BASE_CLIENT_PORT=2379   # before the offset, like the topology's ports
readonly ETCD_BASE_PEER_PORT=2380

secs="${BENCH_SECS:-10}"
clients_list="1,16"
keys=1000
out=""
port_offset=2000
lag=1
etcd_via_emulator=0

# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration-secs) secs="${2:?--duration-secs needs a value}"; shift 2 ;;
        --clients) clients_list="${2:?--clients needs a value}"; shift 2 ;;
        --keys) keys="${2:?--keys needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --port-offset) port_offset="${2:?--port-offset needs a value}"; shift 2 ;;
        --no-lag) lag=0; shift ;;
        --etcd-clients-via-emulator) etcd_via_emulator=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown argument: $1 (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "--duration-secs must be a positive integer" >&2; exit 2; }
[[ "$keys" =~ ^[1-9][0-9]*$ ]] || { echo "--keys must be a positive integer" >&2; exit 2; }
[[ "$clients_list" =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "--clients takes e.g. 1,16" >&2; exit 2; }
[[ "$port_offset" =~ ^[0-9]+$ ]] && (( port_offset <= 50000 )) \
    || { echo "--port-offset must be 0..=50000" >&2; exit 2; }
IFS=, read -r -a CLIENTS <<<"$clients_list"

readonly ETCD_CLIENT_PORT=$((ETCD_BASE_CLIENT_PORT + port_offset))
readonly ETCD_PEER_PORT=$((ETCD_BASE_PEER_PORT + port_offset))

require_tools cargo etcd etcdctl python3 ss timeout unshare mount
setup_output compare_etcd_wan
scrub_env

# A private mount namespace per etcd member (see the header).
UNSHARE=(unshare --mount --propagation private)
(( EUID == 0 )) || UNSHARE=(unshare --map-root-user --mount --propagation private)
"${UNSHARE[@]}" true 2>/dev/null \
    || { echo "cannot create a mount namespace (${UNSHARE[*]}); run as root or enable user namespaces" >&2; exit 1; }

build_meridian

# Every port of the topology, shifted, plus the control API and etcd's.
ports_to_check=("tcp:$((7390 + port_offset))" "tcp:$ETCD_CLIENT_PORT" "tcp:$ETCD_PEER_PORT")
while read -r kind port; do
    case "$kind" in
        http_port) ports_to_check+=("tcp:$((port + port_offset))") ;;
        *) ports_to_check+=("udp:$((port + port_offset))") ;;
    esac
done < <(sed -n 's/^\(quic_port\|http_port\|gossip_port\) = \([0-9]*\)$/\1 \2/p' "$repo/regions/wan-3.toml")
require_free_ports "stop whatever listens there or pick another --port-offset" "${ports_to_check[@]}"

work="$(mktemp -d -t meridian-wan-vs-etcd.XXXXXX)"
dev_pid=""
node_pids=()   # the `meridian serve` children of `meridian dev` (not our children)
etcd_pids=()

cleanup() {
    local rc=$? pid i
    trap - EXIT INT TERM
    # `meridian dev` stops its nodes, then its emulator, on SIGTERM.
    stop_child "meridian dev" "$dev_pid"
    for pid in "${node_pids[@]}"; do
        if is_our_node "$pid"; then
            echo "meridian node (pid $pid) outlived meridian dev; stopping it" >&2
            kill -TERM "$pid" 2>/dev/null || true
            wait_gone "$pid" "$STOP_TIMEOUT_SECS" || kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    for i in "${!etcd_pids[@]}"; do stop_child "etcd ${REGIONS[i]}" "${etcd_pids[i]}"; done
    if [[ "${KEEP_WORK:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $work (logs: dev.log, meridian-dev/*.log, etcd-*.log)" >&2
    else
        rm -rf "$work"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- addresses ------------------------------------------------------------------
# Region r (0-based, file order): Meridian node j binds 127.0.(r+1).j; the etcd
# member binds 127.0.(r+1).10. A front for senders in region s (0-based) to the
# member of region r is 127.(s+2).(r+1).10 (LoopbackPlan::fixed_source_front).
etcd_bind() { echo "127.0.$(($1 + 1)).10"; }
etcd_front() { echo "127.$(($1 + 2)).$(($2 + 1)).10"; }   # source-region dest-region

# --- the topology: wan-3.toml plus etcd's fronts ---------------------------------
topology="$work/wan-3-etcd.toml"
{
    cat "$repo/regions/wan-3.toml"
    cat <<EOF

# Added by benches/compare_etcd_wan.sh. etcd: one member per region. Ports
# are before --port-offset, like every port above (meridian dev shifts them).
EOF
    for r in 0 1 2; do
        for s in 0 1 2; do
            if (( s == r )); then
                # The member's clients in its own region (no delay, but through the emulator).
                name="etcd-${REGIONS[r]}-client" port=$ETCD_BASE_CLIENT_PORT
            else
                name="etcd-${REGIONS[r]}-peer-from-${REGIONS[s]}" port=$ETCD_BASE_PEER_PORT
            fi
            cat <<EOF
[[wan.listeners]]
name = "$name"
protocol = "tcp"
listen = "$(etcd_front "$s" "$r"):$port"
upstream = "$(etcd_bind "$r"):$port"
region = "${REGIONS[r]}"
source_region = "${REGIONS[s]}"

EOF
        done
    done
} >"$topology"

# --- Meridian: three regions via `meridian dev` ----------------------------------
echo "== starting Meridian: meridian dev --topology $topology --port-offset $port_offset (9 nodes, WAN emulator)"
(cd "$work" && exec "$bin" dev --topology "$topology" --dir "$work/meridian-dev" --port-offset "$port_offset") \
    >"$work/dev.log" 2>&1 &
dev_pid=$!

# --- etcd: one member per region, each with its own view of the peers' names -----
initial_cluster=""
for r in 0 1 2; do
    initial_cluster+="${initial_cluster:+,}${REGIONS[r]}=http://etcd-${REGIONS[r]}:$ETCD_PEER_PORT"
done
# The emulator's fronts must exist before etcd dials them: wait for dev to start it.
deadline=$((SECONDS + READY_TIMEOUT_SECS))
until grep -q '^meridian dev: WAN emulator between regions' "$work/dev.log"; do
    alive "$dev_pid" || { cat "$work/dev.log" >&2; echo "meridian dev exited during startup" >&2; exit 1; }
    (( SECONDS < deadline )) || { echo "the WAN emulator did not start within ${READY_TIMEOUT_SECS}s" >&2; exit 1; }
    sleep 0.2
done
echo "== starting a 3-member etcd $(etcd --version | sed -n 's/^etcd Version: //p'), one member per region, in $work/etcd-*"
for r in 0 1 2; do
    hosts="$work/hosts-${REGIONS[r]}"
    {
        cat /etc/hosts
        for p in 0 1 2; do
            if (( p == r )); then echo "$(etcd_bind "$r") etcd-${REGIONS[p]}"
            else echo "$(etcd_front "$r" "$p") etcd-${REGIONS[p]}"; fi
        done
    } >"$hosts"
    bind_ip="$(etcd_bind "$r")"
    "${UNSHARE[@]}" sh -c 'mount --bind "$1" /etc/hosts && shift && exec "$@"' sh "$hosts" \
        etcd --name "${REGIONS[r]}" --data-dir "$work/etcd-${REGIONS[r]}" \
        --listen-client-urls "http://$bind_ip:$ETCD_CLIENT_PORT" \
        --advertise-client-urls "http://$bind_ip:$ETCD_CLIENT_PORT" \
        --listen-peer-urls "http://$bind_ip:$ETCD_PEER_PORT" \
        --initial-advertise-peer-urls "http://etcd-${REGIONS[r]}:$ETCD_PEER_PORT" \
        --initial-cluster "$initial_cluster" --initial-cluster-state new \
        --initial-cluster-token "bench-wan-$stamp" \
        --heartbeat-interval 100 --election-timeout 2000 \
        --logger zap --log-outputs stderr >"$work/etcd-${REGIONS[r]}.log" 2>&1 &
    etcd_pids+=($!)
done

until grep -q '^meridian dev: serving until Ctrl-C' "$work/dev.log"; do
    # Record node pids as soon as they are printed, so cleanup can find them.
    mapfile -t node_pids < <(sed -n 's/^meridian dev: [^ ]* (region [^)]*) pid \([0-9]*\) .*/\1/p' "$work/dev.log")
    alive "$dev_pid" || { cat "$work/dev.log" >&2; echo "meridian dev exited during startup" >&2; exit 1; }
    (( SECONDS < deadline )) || { cat "$work/dev.log" >&2; echo "meridian dev not serving within ${READY_TIMEOUT_SECS}s" >&2; exit 1; }
    sleep 0.5
done
mapfile -t node_pids < <(sed -n 's/^meridian dev: [^ ]* (region [^)]*) pid \([0-9]*\) .*/\1/p' "$work/dev.log")
(( ${#node_pids[@]} == 9 )) || { echo "expected 9 Meridian nodes, dev.log lists ${#node_pids[@]}" >&2; exit 1; }
grep '^demo: ' "$work/dev.log" | sed 's/^/   /'

etcdctl_at() { # region-index args...: etcdctl against a member's own address (no emulator)
    local r="$1"; shift
    ETCDCTL_API=3 timeout 20 etcdctl --endpoints "http://$(etcd_bind "$r"):$ETCD_CLIENT_PORT" "$@"
}
deadline=$((SECONDS + ETCD_READY_TIMEOUT_SECS))
for r in 0 1 2; do
    until etcdctl_at "$r" endpoint health >/dev/null 2>&1; do
        alive "${etcd_pids[r]}" || { echo "etcd ${REGIONS[r]} exited; see $work/etcd-${REGIONS[r]}.log" >&2; exit 1; }
        (( SECONDS < deadline )) || { echo "etcd ${REGIONS[r]} not healthy within ${ETCD_READY_TIMEOUT_SECS}s" >&2; exit 1; }
        sleep 0.5
    done
done

# The leader to us-east, where Meridian's strong prefixes are homed.
etcd_status() { # region-index -> "member_id leader_id" (decimal)
    etcdctl_at "$1" endpoint status -w json \
        | python3 -c 'import json, sys; s = json.load(sys.stdin)[0]["Status"]; print(s["header"]["member_id"], s["leader"])'
}
read -r home_id leader_id < <(etcd_status 0)
deadline=$((SECONDS + LEADER_MOVE_SECS))
while [[ "$leader_id" != "$home_id" ]]; do
    (( SECONDS < deadline )) || { echo "could not move the etcd leader to $HOME_REGION" >&2; exit 1; }
    for r in 1 2; do
        read -r id _ < <(etcd_status "$r")
        if [[ "$id" == "$leader_id" ]]; then
            etcdctl_at "$r" move-leader "$(printf '%x' "$home_id")" >/dev/null || true
        fi
    done
    sleep 1
    read -r home_id leader_id < <(etcd_status 0)
done
echo "   etcd leader: ${REGIONS[0]} (member $(printf '%x' "$home_id")); pids ${etcd_pids[*]}"
echo "   meridian node pids ${node_pids[*]}"

# --- runs ----------------------------------------------------------------------------
region_env() { echo "$work/meridian-dev/$1.env"; }
region_index() { local r; for r in 0 1 2; do [[ "${REGIONS[r]}" == "$1" ]] && echo "$r"; done; }
etcd_url_from() { # region: the URL its clients reach their own member at
    local r; r="$(region_index "$1")"
    if (( etcd_via_emulator )); then
        echo "http://$(etcd_front "$r" "$r"):$ETCD_CLIENT_PORT"
    else
        echo "http://$(etcd_bind "$r"):$ETCD_CLIENT_PORT"
    fi
}

bench() { # system region op secs [extra bench args...]: one `meridian bench` from a region
    local system="$1" region="$2" op="$3" run_secs="$4"; shift 4
    local args=(bench --system "$system" --region "$region" --duration-secs "$run_secs"
        --value-size "$VALUE_SIZE" --keys "$keys" --conns "$CONNS"
        --etcd-endpoints "$(etcd_url_from "$region")"
        --label "run=$stamp topology=wan-3 op=$op etcd-clients-via-emulator=$etcd_via_emulator"
        --json-out "$out" "$@")
    # shellcheck source=/dev/null
    (cd "$work" && source "$(region_env "$region")" \
        && timeout --kill-after=5 $((run_secs + BENCH_SLACK_SECS)) "$bin" "${args[@]}") \
        | sed -n '2,$p' | sed "s/^/   [$region $op] /"
}

# Meridian rows: op-name, then bench arguments.
MERIDIAN_ROWS=(
    "strong-put|--workload put --key-prefix bench/"
    "linearizable-get|--workload get --key-prefix bench/"
    "bounded-get|--workload get --key-prefix bench/ --consistency bounded:$BOUNDED_MS"
    "causal-put|--workload put --key-prefix sessions/bench/"
    "causal-get|--workload get --key-prefix sessions/bench/ --consistency causal"
    "eventual-put|--workload put --key-prefix ads/bench/"
    "eventual-get|--workload get --key-prefix ads/bench/ --consistency eventual"
)
ETCD_ROWS=(
    "put|--workload put"
    "linearizable-get|--workload get"
    "serializable-get|--workload serializable"
)

run_rows() { # system region clients rows...
    local system="$1" region="$2" clients="$3" row op extra; shift 3
    for row in "$@"; do
        op="${row%%|*}" extra="${row#*|}"
        # shellcheck disable=SC2086  # extra is a list of words
        if ! bench "$system" "$region" "$op" "$secs" --clients "$clients" --preload skip $extra; then
            echo "$system $region $op clients=$clients: bench call FAILED" >&2
            failed+=("$system/$region/$op/$clients")
        fi
    done
}

echo "== preloading $keys keys per prefix (Meridian from each prefix's home region, etcd from us-east)"
failed=()
bench meridian us-east preload 1 --workload get --preload only --key-prefix bench/
bench meridian eu-west preload 1 --workload get --preload only --key-prefix sessions/bench/
bench meridian us-east preload 1 --workload get --preload only --key-prefix ads/bench/
bench etcd us-east preload 1 --workload get --preload only
sleep "$REPLICATE_SETTLE_SECS"

echo "== ${secs}s per run; results: $out"
row=0
for region in "${REGIONS[@]}"; do
    for clients in "${CLIENTS[@]}"; do
        if (( row % 2 == 0 )); then order=(meridian etcd); else order=(etcd meridian); fi
        for system in "${order[@]}"; do
            if [[ "$system" == meridian ]]; then
                run_rows meridian "$region" "$clients" "${MERIDIAN_ROWS[@]}"
            else
                run_rows etcd "$region" "$clients" "${ETCD_ROWS[@]}"
            fi
        done
        row=$((row + 1))
    done
done

if (( lag )); then
    echo "== replication lag: ${secs}s of writes per origin, one every 10 ms; readers poll every 1 ms"
    lag_readers() { # system origin -> --lag-reader arguments for every other region
        local system="$1" origin="$2" region
        for region in "${REGIONS[@]}"; do
            [[ "$region" == "$origin" ]] && continue
            if [[ "$system" == meridian ]]; then
                # shellcheck source=/dev/null
                echo "--lag-reader $region=$(source "$(region_env "$region")" && echo "$MERIDIAN_BIND@$MERIDIAN_ENDPOINTS")"
            else
                echo "--lag-reader $region=$(etcd_url_from "$region")"
            fi
        done
    }
    for origin in "${REGIONS[@]}"; do
        # shellcheck disable=SC2046  # one word per argument
        bench meridian "$origin" lag-eventual "$secs" --workload lag --key-prefix ads/bench/ \
            $(lag_readers meridian "$origin") || failed+=("meridian/$origin/lag")
        # shellcheck disable=SC2046
        bench etcd "$origin" lag "$secs" --workload lag $(lag_readers etcd "$origin") \
            || failed+=("etcd/$origin/lag")
    done
    # shellcheck disable=SC2046
    bench meridian "$HOME_REGION" lag-strong "$secs" --workload lag --key-prefix bench/ \
        $(lag_readers meridian "$HOME_REGION") || failed+=("meridian/$HOME_REGION/lag-strong")
fi

echo
echo "== summary ($out)"
python3 - "$out" "$stamp" "$topology" <<'PY'
import json
import re
import sys

path, stamp, topology = sys.argv[1:4]
REGIONS = ["us-east", "eu-west", "ap-south"]
HOME = "us-east"
runs, lags = {}, []
with open(path) as f:
    for line in f:
        r = json.loads(line)
        labels = dict(t.split("=", 1) for t in r["label"].split() if "=" in t)
        if labels.get("run") != stamp:
            continue
        r["op"] = labels.get("op", r["workload"])
        if r["workload"] == "lag":
            lags.append(r)
        else:
            runs[(r["system"], r["region"], r["op"], r["clients"])] = r

# One-way delays from the topology's [[links]].
one_way = {}
text = open(topology).read()
for a, b, rtt in re.findall(r'regions = \["([^"]+)", "([^"]+)"\]\s*\nrtt_ms = (\d+)', text):
    one_way[(a, b)] = one_way[(b, a)] = int(rtt) / 2

# The etcd operation each Meridian row is compared with.
ETCD_OF = {
    "strong-put": "put", "causal-put": "put", "eventual-put": "put",
    "linearizable-get": "linearizable-get",
    "bounded-get": "serializable-get", "causal-get": "serializable-get",
    "eventual-get": "serializable-get",
}
ms = lambda us: f"{us / 1000:,.2f}"
clients = sorted({c for (_, _, _, c) in runs})

print("Latency per region and operation, ms (p50 / p99); ratio = etcd p99 / Meridian p99 of the")
print("etcd operation named (above 1: Meridian faster). Failed requests shown when not zero.")
head = ("region", "clients", "Meridian operation", "ops/s", "Meridian p50 / p99",
        "etcd operation", "etcd p50 / p99", "p99 ratio")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for region in REGIONS:
    for c in clients:
        for op, eop in ETCD_OF.items():
            m, e = runs.get(("meridian", region, op, c)), runs.get(("etcd", region, eop, c))
            if not m:
                continue
            err = lambda r: f" ({r['errors']} failed)" if r and r["errors"] else ""
            cells = [region, str(c), op, f"{m['ops_per_sec']:,.0f}",
                     f"{ms(m['p50_us'])} / {ms(m['p99_us'])}{err(m)}", eop,
                     f"{ms(e['p50_us'])} / {ms(e['p99_us'])}{err(e)}" if e else "-",
                     f"{e['p99_us'] / m['p99_us']:.2f}" if e else "-"]
            print("| " + " | ".join(cells) + " |")
print()
print("etcd alone (ops/s; p50 / p99 ms):")
for region in REGIONS:
    for c in clients:
        row = []
        for eop in ("put", "linearizable-get", "serializable-get"):
            e = runs.get(("etcd", region, eop, c))
            if e:
                row.append(f"{eop} {e['ops_per_sec']:,.0f}/s {ms(e['p50_us'])} / {ms(e['p99_us'])}"
                           + (f" ({e['errors']} errors)" if e["errors"] else ""))
        print(f"  {region:<9} c={c:<3} " + "; ".join(row))

print()
print("Replication lag: acknowledged in the origin region -> first seen by a reader polling in the")
print("destination (ms). Target: p99 under the one-way delay + 20 ms.")
head = ("system", "prefix", "origin -> destination", "one-way", "writes (lost)", "write p50 / p99",
        "lag p50 / p99 / max", "from send p99", "poll", "target p99", "met")
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for r in lags:
    ow = one_way.get((r["region"], r["reader"]))
    target = ow + 20 if ow is not None else None
    met = "-" if target is None or r["seen"] == 0 else ("yes" if r["p99_us"] / 1000 < target else "**no**")
    cells = [r["system"], r["key_prefix"] if r["system"] == "meridian" else "-",
             f"{r['region']} -> {r['reader']}", f"{ow:g}" if ow is not None else "?",
             f"{r['writes']} ({r['lost']})", f"{ms(r['write_p50_us'])} / {ms(r['write_p99_us'])}",
             f"{ms(r['p50_us'])} / {ms(r['p99_us'])} / {ms(r['max_us'])}",
             ms(r["from_send_p99_us"]), ms(r["poll_mean_us"]),
             f"{target:g}" if target is not None else "?", met]
    print("| " + " | ".join(cells) + " |")
    if r.get("first_error"):
        print(f"  {r['system']} {r['region']} -> {r['reader']}: first error: {r['first_error']}")

print()
print("Targets (issue 9):")
def check(what, rows, limit_us):
    for r in rows:
        ok = r["p99_us"] < limit_us and r["errors"] == 0
        print(f"  {'met   ' if ok else 'MISSED'} {what}: {r['region']} c={r['clients']} p99 "
              f"{ms(r['p99_us'])} ms (limit {ms(limit_us)})" + (f", {r['errors']} errors" if r["errors"] else ""))
remote = [r for (s, reg, op, c), r in sorted(runs.items())
          if s == "meridian" and reg != HOME and op in ("eventual-get", "bounded-get")]
check("eventual/bounded read in a remote region", remote, 2000)
home_w = [r for (s, reg, op, c), r in sorted(runs.items())
          if s == "meridian" and reg == HOME and op == "strong-put"]
check("strong write at home", home_w, 5000)
for r in lags:
    if r["system"] != "meridian":
        continue
    ow = one_way.get((r["region"], r["reader"]))
    ok = ow is not None and r["seen"] > 0 and r["lost"] == 0 and r["p99_us"] / 1000 < ow + 20
    print(f"  {'met   ' if ok else 'MISSED'} replication lag {r['key_prefix']} {r['region']} -> "
          f"{r['reader']}: p99 {ms(r['p99_us'])} ms (limit {ow + 20:g})")
PY
if (( ${#failed[@]} > 0 )); then
    echo "FAILED bench calls (no row for them above): ${failed[*]}" >&2
    exit 1
fi
