#!/bin/bash
# A/B pairs of leadloopd builds on one target, for a candidate fix: each round runs every build
# in turn from a fresh copy of the capture seed, 2 s of warm-up, then SECONDS of wrk, and prints
# req/s, p99, the server's CPU µs per request per thread (/proc/PID/task/*/stat) and, with
# SYSCALLS=1, its system calls per request (perf stat tracepoints).
#
#   tests/bench/pair.sh open|clicks|click1|beacon|form durable|queued|journal BIN[@YAML] [BIN[@YAML]...]
#
# form: the default contact form posted urlencoded by 100,000 people in turn, as growth.py posts
# it (each round's first pass creates them, later passes update them); forms are answered after
# their commit whatever the mode.
# BIN@YAML appends the file YAML to that build's configuration (a configuration A/B: the same
# BIN twice, with and without, e.g. bin/leadloopd bin/leadloopd@/tmp/batch.yaml).
# Needs a capture run first (`sh tests/bench/run.sh capture`: the seed, clicks.txt and the wrk
# scripts in build/bench/capture) and bin/leadloop. Environment: SECONDS_EACH [8], ROUNDS [3],
# PAIR_PORT [18090], SYSCALLS [0]. Same pinning as capture.py: the server on CPU 1, wrk on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 3 ] || { sed -n 2,13p "$0" >&2; exit 2; }
what=$1 mode=$2
shift 2
B=$PWD/build/bench/capture
PORT=${PAIR_PORT:-18090}
[ -d "$B/seed" ] || { echo "pair.sh: $B/seed missing: run tests/bench/run.sh capture first" >&2; exit 1; }
UA='Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36'
lua=()
case $what in
open) path=$(bin/leadloop -d "$B/seed" pixel --to bench@example.com --send 1 | grep -o '/o/.*') ;;
clicks) path=$(head -1 "$B/clicks.txt"); lua=(-s "$B/clicks.lua") ;;
click1) path=$(head -1 "$B/clicks.txt") ;; # one recipient over and over (a flood)
beacon) path=/e; lua=(-s "$B/beacon.lua") ;;
form) path=/f/contact; lua=(-s "$PWD/tests/bench/form.lua") ;;
*) echo "pair.sh: target is open, clicks, click1, beacon or form, not $what" >&2; exit 2 ;;
esac
case $mode in durable | queued | journal) ;; *) echo "pair.sh: mode is durable, queued or journal, not $mode" >&2; exit 2 ;; esac
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT
wrk_run() { taskset -c 0 wrk -t1 -c64 --latency -H "User-Agent: $UA" -H 'Accept: image/avif,image/webp,*/*' \
    "${lua[@]}" -d"$1" "http://127.0.0.1:$PORT$path"; }
threads() { for t in /proc/$pid/task/*; do echo "$(basename "$t") $(awk '{print $14+$15}' "$t/stat")"; done; }

one() {
    local bin=${1%%@*} extra= label
    [ "$bin" = "$1" ] || extra=${1#*@}
    label=$(basename "$(dirname "$(dirname "$bin")")")${extra:+@$(basename "$extra")}
    rm -rf "$work/data"
    cp -a "$B/seed" "$work/data"
    printf 'listen: 127.0.0.1:%s\npublic_url: http://127.0.0.1:%s\ndata_dir: %s\nmap_size: 8G\nlog_level: warn\n' \
        "$PORT" "$PORT" "$work/data" >"$work/conf.yaml"
    [ "$mode" = durable ] || echo "ack: $mode" >>"$work/conf.yaml"
    [ "$what" != form ] || echo 'form_rate_per_min: 1000000' >>"$work/conf.yaml" # every form comes from one address
    [ -z "$extra" ] || cat "$extra" >>"$work/conf.yaml"
    (cd "$(dirname "$(dirname "$bin")")" && exec taskset -c 1 "$bin" -c "$work/conf.yaml" 2>"$work/err") &
    pid=$!
    for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
    kill -0 $pid 2>/dev/null || { echo "pair.sh: $bin did not start:" >&2; cat "$work/err" >&2; exit 1; }
    wrk_run 2s >/dev/null
    local t0 out t1 stat=()
    t0=$(threads)
    if [ "${SYSCALLS:-0}" = 1 ]; then
        local ev=
        for s in read writev pwrite64 futex epoll_ctl epoll_wait fdatasync getpid; do ev+="syscalls:sys_enter_$s,"; done
        perf stat -e "${ev}context-switches" -p $pid -o "$work/perf" -- sleep "${SECONDS_EACH:-8}" &
        stat=($!)
    fi
    out=$(wrk_run "${SECONDS_EACH:-8}s")
    t1=$(threads)
    [ ${#stat[@]} -eq 0 ] || wait "${stat[0]}"
    kill $pid
    wait $pid || true
    pid=
    local req
    req=$(echo "$out" | awk '/requests in/{print $1}')
    printf '%-10s %s %s  %9s req/s  p99 %-8s CPU µs/req by thread:' "$label" "$what" "$mode" \
        "$(echo "$out" | awk '/Requests\/sec/{printf "%.0f", $2}')" "$(echo "$out" | awk '/ 99%/{print $2}')"
    join <(echo "$t0" | sort) <(echo "$t1" | sort) | awk -v n="$req" '{ d = ($3 - $2) * 10000 / n; s += d;
        if (d >= 0.05) printf " %.2f", d } END { printf "  total %.2f\n", s }'
    if [ ${#stat[@]} -gt 0 ]; then
        awk -v n="$req" '$2 ~ /syscalls|context/ { gsub(",", "", $1); sub("syscalls:sys_enter_", "", $2);
            if ($1 > 0) printf "    %s %.3f", $2, $1 / n } END { print "   (per request)" }' "$work/perf"
    fi
}

for r in $(seq "${ROUNDS:-3}"); do
    for spec in "$@"; do
        bin=${spec%%@*}
        one "$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")${spec#"$bin"}"
    done
done
