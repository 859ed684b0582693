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

# Unsets environment that would change either server's or the client's settings.
scrub_env() {
    local var
    while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(MERIDIAN_|ETCD_|ETCDCTL_)' || true)
}

# Builds meridian with etcd support and sets bin to the binary.
build_meridian() {
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
