# Helpers shared by the etcd comparison scripts (sourced by them, not run).
# Each function exits the script with a message on failure.

# Prints the calling script's header comment (its --help).
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

require_tools() { # tool...
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "missing tool: $tool" >&2; exit 1; }
    done
}

# Sets repo, stamp, out (absolute; default bench-results/<name>-<stamp>.jsonl,
# or the --out the caller parsed into $out) and metrics_dir.
setup_output() { # name
    repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    stamp="$(date -u +%Y%m%dT%H%M%SZ)"
    out="${out:-$repo/bench-results/$1-$stamp.jsonl}"
    mkdir -p "$(dirname "$out")"
    out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
    metrics_dir="${out%.jsonl}.metrics"
}

# Unsets environment that would change either server's or the client's settings
# (MERIDIAN_BENCH_BIN, the scripts' own setting read by build_meridian, stays).
scrub_env() {
    local var
    while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(MERIDIAN_|ETCD_|ETCDCTL_)' \
        | grep -vx 'MERIDIAN_BENCH_BIN' || true)
}

# Builds meridian with etcd support and sets bin to the binary.
build_meridian() {
    # MERIDIAN_BENCH_BIN: measure that binary instead (an earlier build kept
    # aside, for a before/after comparison with the same script); it must
    # have been built with --features etcd.
    if [[ -n "${MERIDIAN_BENCH_BIN:-}" ]]; then
        bin="$MERIDIAN_BENCH_BIN"
        [[ -x "$bin" ]] || { echo "MERIDIAN_BENCH_BIN=$bin is not an executable" >&2; exit 1; }
        echo "== measuring $bin (MERIDIAN_BENCH_BIN; not building)"
        return
    fi
    echo "== building (cargo build --release --features etcd)"
    (cd "$repo" && cargo build --release --features etcd)
    local target_dir
    target_dir="$(cd "$repo" && cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
    bin="$target_dir/release/meridian"
    [[ -x "$bin" ]] || { echo "no binary at $bin" >&2; exit 1; }
}

port_in_use() { # proto port
    local flag; [[ "$1" == udp ]] && flag=-lun || flag=-ltn
    [[ -n "$(ss -H "$flag" "sport = :$2")" ]]
}

require_free_ports() { # hint proto:port...
    local hint="$1" p; shift
    for p in "$@"; do
        if port_in_use "${p%%:*}" "${p##*:}"; then
            echo "port ${p##*:}/${p%%:*} is already in use; $hint" >&2
            exit 1
        fi
    done
}

# Process helpers (STOP_TIMEOUT_SECS and, for is_our_node, $work come from the caller).
alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

wait_gone() { # pid secs: true once pid is gone
    local pid="$1" waited=0
    while alive "$pid" && (( waited < $2 * 10 )); do sleep 0.1; waited=$((waited + 1)); done
    ! alive "$pid"
}

stop_child() { # name pid (a child of this shell)
    local name="$1" pid="$2"
    alive "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$STOP_TIMEOUT_SECS"; then
        echo "$name (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT_SECS}s; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# A node `meridian dev` started, still running from our binary (a pid is only
# signalled if it still is that process, never a reused pid).
is_our_node() { # pid
    alive "$1" && [[ "$(readlink "/proc/$1/cwd" 2>/dev/null)" == "$work/meridian-dev" ]] \
        && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -q -- ' serve --config '
}

# The `meridian serve` pids a `meridian dev` printed to $work/dev.log, into
# node_pids (as soon as they are printed, so cleanup can find them).
dev_node_pids() {
    mapfile -t node_pids < <(sed -n 's/^meridian dev: [^ ]* (region [^)]*) pid \([0-9]*\) .*/\1/p' "$work/dev.log")
}

# Waits up to READY_TIMEOUT_SECS until the `meridian dev` with pid $dev_pid
# (logging to $work/dev.log) serves, then checks it started $1 nodes.
wait_dev_serving() { # expected_nodes
    local deadline=$((SECONDS + READY_TIMEOUT_SECS))
    until grep -q '^meridian dev: serving until Ctrl-C' "$work/dev.log"; do
        dev_node_pids
        alive "$dev_pid" || { cat "$work/dev.log" >&2; echo "meridian dev exited during startup" >&2; exit 1; }
        (( SECONDS < deadline )) || { cat "$work/dev.log" >&2; echo "meridian dev not serving within ${READY_TIMEOUT_SECS}s" >&2; exit 1; }
        sleep 0.2
    done
    dev_node_pids
    (( ${#node_pids[@]} == $1 )) || { echo "expected $1 Meridian nodes, dev.log lists ${#node_pids[@]}" >&2; exit 1; }
}
