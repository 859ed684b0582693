#!/usr/bin/env bash
# CPU used by running Meridian processes over a window: the sum of each
# process's user+system time deltas (/proc/PID/stat fields 14 and 15) over
# SECONDS, in cores. Used for the idle-CPU figures in docs/benchmarks.md:
#
#   target/release/meridian dev &                     # in an empty directory
#   sleep 40; benches/idle_cpu.sh 20 'release/meridian'
#
# usage: benches/idle_cpu.sh SECONDS PGREP_PATTERN
set -euo pipefail
secs=${1:?usage: idle_cpu.sh SECONDS PGREP_PATTERN}
pattern=${2:?usage: idle_cpu.sh SECONDS PGREP_PATTERN}
ticks=$(getconf CLK_TCK)
mapfile -t pids < <(pgrep -f -- "$pattern" | grep -vx "$$" || true)
if ((${#pids[@]} == 0)); then
    echo "no process matches '$pattern'" >&2
    exit 1
fi
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
declare -A before
for p in "${pids[@]}"; do before[$p]=$(cpu_ticks "$p"); done
sleep "$secs"
total=0
for p in "${pids[@]}"; do
    [[ -r /proc/$p/cmdline ]] || continue
    d=$(($(cpu_ticks "$p") - before[$p]))
    total=$((total + d))
    printf '%8s %6.3f  %s\n' "$p" "$(echo "$d / $ticks / $secs" | bc -l)" \
        "$(tr '\0' ' ' < "/proc/$p/cmdline" | cut -c1-80)"
done
printf 'total %.3f cores over %s s\n' "$(echo "$total / $ticks / $secs" | bc -l)" "$secs"
