#!/bin/bash
# make bench: the benchmarks of issue #6, from the repository root, after `make all`.
#
#   tests/bench/run.sh [capture] [mailer] [writer] [growth] [soak]
#       (default: the first four; soak, ten minutes of memory samples under alerts, only when named)
#
# Installs what it needs (nginx-light, wrk, postfix for smtp-sink/smtp-source) with apt-get,
# builds the references (bare_h2o.c, nosync.c) into BENCH_DIR and tokens.c with the Makefile,
# runs each part and writes the tables to BENCH_DIR/results.md. Nothing here is part of `make test`.
#
# Environment (defaults in brackets):
#   BENCH_DIR [build/bench]   BENCH_ROUNDS [3]   BENCH_SECONDS [10]   BENCH_CONNS [64]
#   BENCH_PORT [18080] (leadloopd, nginx, bare h2o)   BENCH_SMTP_PORT [18025] (smtp-sink)
#   BENCH_RECIPIENTS [100000] (capture: the click targets spread over this many contacts)
#   BENCH_MESSAGES [5000] (mailer)   BENCH_SESSIONS [4] (parallel SMTP sessions)
#   BENCH_GROWTH_SIZES [1000000,10000000] (log sizes)   BENCH_GROWTH_CONTACTS [100000,1000000]
#   BENCH_SOAK_SECONDS [600]   BENCH_SOAK_INTERVAL [30] (soak: run length, seconds between samples)
#   LEADLOOPD, LEADLOOP, LEADLOOP_MAILER [bin/...]
#   BENCH_EXTRA_LEADLOOPD ["LABEL=PATH ..."]: other leadloopd builds (candidate fixes) whose
#       pixel and click join the capture alternation
#   BENCH_EXTRA_MAILER ["LABEL=PATH ..."]: other leadloop-mailer builds in the mailer's alternation
#   BENCH_ONLY [""]: capture targets whose names contain one of these comma-separated words
# The Makefile runs it with sh: come back under bash.
if [ -z "${BASH_VERSION:-}" ]; then exec bash "$0" "$@"; fi
set -euo pipefail

cd "$(dirname "$0")/../.."
BENCH_DIR=${BENCH_DIR:-build/bench}
mkdir -p "$BENCH_DIR"
BENCH_DIR=$(cd "$BENCH_DIR" && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PARTS=${*:-capture mailer writer growth}
LEADLOOPD=${LEADLOOPD:-bin/leadloopd}
LEADLOOP=${LEADLOOP:-bin/leadloop}
LEADLOOP_MAILER=${LEADLOOP_MAILER:-bin/leadloop-mailer}
SERVER_CPU=1
CLIENT_CPU=0
[ "$(nproc)" -ge 2 ] || { SERVER_CPU=; CLIENT_CPU=; }

say() { printf 'bench: %s\n' "$*" >&2; }

# ---- what the benchmarks need ----

need_pkgs=()
command -v wrk >/dev/null || need_pkgs+=(wrk)
[ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
[ -x /usr/sbin/smtp-sink ] && [ -x /usr/sbin/smtp-source ] || need_pkgs+=(postfix)
command -v taskset >/dev/null || need_pkgs+=(util-linux)
command -v openssl >/dev/null || need_pkgs+=(openssl)
pkg-config --exists libh2o-evloop || need_pkgs+=(libh2o-evloop-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    say "installing ${need_pkgs[*]}"
    $SUDO apt-get update -qq
    # postfix asks questions and starts a system MTA: answer "No configuration" and stop it.
    echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need_pkgs[@]}" >&2
    for svc in postfix nginx; do
        if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
            $SUDO systemctl stop "$svc" && $SUDO systemctl disable --quiet "$svc" || true
        fi
    done
fi

# ---- the references, built here and never by `make all` ----

CC=${CC:-cc}
WARN="-Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter -Werror"
# shellcheck disable=SC2046
$CC -O2 -g -std=gnu11 $WARN -DH2O_USE_LIBUV=0 $(pkg-config --cflags libh2o-evloop) \
    -o "$BENCH_DIR/bare_h2o" tests/bench/bare_h2o.c $(pkg-config --libs libh2o-evloop)
$CC -O2 -g $WARN -shared -fPIC -o "$BENCH_DIR/nosync.so" tests/bench/nosync.c -ldl
$CC -O2 -g $WARN -shared -fPIC -o "$BENCH_DIR/nodelay.so" tests/bench/nodelay.c -ldl
# tokens links the library, so the Makefile (its flags and libraries) builds it.
make --no-print-directory -s build/bench/tokens

RESULTS=$BENCH_DIR/results.md

{
    echo "# leadloop benchmarks: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (work tree modified)'); binaries: $LEADLOOPD, $LEADLOOP, $LEADLOOP_MAILER"
    echo "- machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM"
    echo "- kernel: $(uname -sr); $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "- nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), h2o $(pkg-config --modversion libh2o-evloop), postfix $(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo '?')"
    echo
} > "$RESULTS"

for part in $PARTS; do
    case $part in
    capture)
        say "capture: rounds ${BENCH_ROUNDS:-3} x ${BENCH_SECONDS:-10} s per target"
        echo "## Capture and durability" >> "$RESULTS"
        echo >> "$RESULTS"
        extra=()
        for e in ${BENCH_EXTRA_LEADLOOPD:-}; do extra+=(--extra-leadloopd "$e"); done
        $PY tests/bench/capture.py "${extra[@]}" --dir "$BENCH_DIR/capture" --leadloopd "$LEADLOOPD" --leadloop "$LEADLOOP" \
            --bare-h2o "$BENCH_DIR/bare_h2o" --nosync "$BENCH_DIR/nosync.so" --tokens build/bench/tokens \
            --recipients "${BENCH_RECIPIENTS:-100000}" --port "${BENCH_PORT:-18080}" \
            --rounds "${BENCH_ROUNDS:-3}" --seconds "${BENCH_SECONDS:-10}" --conns "${BENCH_CONNS:-64}" \
            --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --only "${BENCH_ONLY:-}" \
            --json "$BENCH_DIR/capture.json" >> "$RESULTS"
        ;;
    mailer)
        [ -f tests/bench/mailer.py ] || continue
        say "mailer: ${BENCH_MESSAGES:-5000} messages, ${BENCH_SESSIONS:-4} sessions"
        echo "## Mailer" >> "$RESULTS"
        echo >> "$RESULTS"
        extra=()
        for e in ${BENCH_EXTRA_MAILER:-}; do extra+=(--extra-mailer "$e"); done
        $PY tests/bench/mailer.py --dir "$BENCH_DIR/mailer" --leadloop "$LEADLOOP" --mailer "$LEADLOOP_MAILER" \
            "${extra[@]}" --port "${BENCH_SMTP_PORT:-18025}" --messages "${BENCH_MESSAGES:-5000}" --sessions "${BENCH_SESSIONS:-4}" \
            --nodelay "$BENCH_DIR/nodelay.so" --nosync "$BENCH_DIR/nosync.so" --dkim \
            --rounds "${BENCH_ROUNDS:-3}" --json "$BENCH_DIR/mailer.json" >> "$RESULTS"
        ;;
    writer)
        [ -f tests/bench/writer.py ] || continue
        say "writer: scoring on and off"
        echo "## Writer: scoring on and off" >> "$RESULTS"
        echo >> "$RESULTS"
        $PY tests/bench/writer.py --dir "$BENCH_DIR/writer" --leadloopd "$LEADLOOPD" --leadloop "$LEADLOOP" \
            --port "${BENCH_PORT:-18080}" --rounds "${BENCH_ROUNDS:-3}" --seconds "${BENCH_SECONDS:-10}" \
            --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --json "$BENCH_DIR/writer.json" >> "$RESULTS"
        ;;
    growth)
        [ -f tests/bench/growth.py ] || continue
        say "growth: log ${BENCH_GROWTH_SIZES:-1000000,10000000} events, ${BENCH_GROWTH_CONTACTS:-100000,1000000} contacts"
        echo "## Growth" >> "$RESULTS"
        echo >> "$RESULTS"
        $PY tests/bench/growth.py --dir "$BENCH_DIR/growth" --leadloopd "$LEADLOOPD" --leadloop "$LEADLOOP" \
            --nosync "$BENCH_DIR/nosync.so" --port "${BENCH_PORT:-18080}" \
            --sizes "${BENCH_GROWTH_SIZES:-1000000,10000000}" --contacts "${BENCH_GROWTH_CONTACTS:-100000,1000000}" \
            --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --json "$BENCH_DIR/growth.json" >> "$RESULTS"
        ;;
    soak)
        say "soak: ${BENCH_SOAK_SECONDS:-600} s with alerts, memory every ${BENCH_SOAK_INTERVAL:-30} s"
        echo "## Soak: memory under a long run with alerts" >> "$RESULTS"
        echo >> "$RESULTS"
        $PY tests/bench/soak.py --dir "$BENCH_DIR/soak" --leadloopd "$LEADLOOPD" --leadloop "$LEADLOOP" \
            --tokens build/bench/tokens --port "${BENCH_PORT:-18080}" \
            --seconds "${BENCH_SOAK_SECONDS:-600}" --interval "${BENCH_SOAK_INTERVAL:-30}" \
            --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" --json "$BENCH_DIR/soak.json" >> "$RESULTS"
        ;;
    *) say "unknown part '$part' (capture, mailer, writer, growth, soak)"; exit 2 ;;
    esac
    echo >> "$RESULTS"
done

cat "$RESULTS"
say "results in $RESULTS"
