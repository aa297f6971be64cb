#!/bin/bash
# A/B rounds of leadloop-mailer builds sending DKIM-signed mail: each round runs every build in
# turn on a fresh copy of the mailer benchmark's seed (5000 due messages, its RSA-2048 key), into
# Postfix's smtp-sink pinned to CPU 1, the mailer pinned to CPU 0, and prints messages/s and the
# mailer's CPU µs a message.
#
#   tests/bench/dkim_pair.sh MAILER [MAILER...]
#
# Needs a mailer run first (`sh tests/bench/run.sh mailer`: build/bench/mailer) and bin/leadloop.
# Environment: ROUNDS [4], DKIM_PORT [18026].
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { sed -n 2,10p "$0" >&2; exit 2; }
M=$PWD/build/bench/mailer
PORT=${DKIM_PORT:-18026}
[ -d "$M/seed" ] && [ -f "$M/dkim.pem" ] || { echo "dkim_pair.sh: $M missing: run tests/bench/run.sh mailer first" >&2; exit 1; }
work=$(mktemp -d)
sink=
trap '[ -n "$sink" ] && kill $sink 2>/dev/null; rm -rf "$work"' EXIT

one() {
    local bin=$1
    rm -rf "$work/data"
    cp -a "$M/seed" "$work/data"
    sed -e "s#^data_dir: .*#data_dir: $work/data#" -e "s#^  port: .*#  port: $PORT#" \
        -e "s#^  connections: \(.*\)#  connections: \1\n  dkim_key: $M/dkim.pem\n  dkim_selector: bench#" \
        "$M/leadloop.yaml" >"$work/conf.yaml"
    taskset -c 1 /usr/sbin/smtp-sink -u nobody "127.0.0.1:$PORT" 1024 &
    sink=$!
    sleep 0.3
    local out sent
    # wall seconds and the mailer's CPU seconds (rusage of taskset and the mailer it execs)
    out=$(python3 -c 'import os, subprocess, sys, time
t = time.time()
p = subprocess.Popen(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], "w"))
_, _, ru = os.wait4(p.pid, 0)
print(time.time() - t, ru.ru_utime + ru.ru_stime)' "$work/err" taskset -c 0 "$bin" -c "$work/conf.yaml" --once)
    kill $sink; wait $sink 2>/dev/null || true
    sink=
    sent=$(bin/leadloop -c "$work/conf.yaml" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["types"]["sent"])')
    [ "$sent" -gt 0 ] || { echo "dkim_pair.sh: $bin sent nothing:" >&2; cat "$work/err" >&2; exit 1; }
    set -- $out
    python3 -c "print('%-40s %6d sent  %6.0f msg/s  %6.0f CPU µs/message' % ('$bin', $sent, $sent / $1, $2 * 1e6 / $sent))"
}

for _ in $(seq "${ROUNDS:-4}"); do
    for bin in "$@"; do one "$bin"; done
done
