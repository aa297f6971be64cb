#!/bin/sh
# make test: unit, integration, CLI and browser suites; the last line totals them as
# "N passed, N failed" and the exit code is non-zero if anything failed.
BINDIR=${BINDIR:-bin}
export LEADLOOPD=${LEADLOOPD:-$BINDIR/leadloopd} LEADLOOP=${LEADLOOP:-$BINDIR/leadloop}
export LEADLOOP_MAILER=${LEADLOOP_MAILER:-$BINDIR/leadloop-mailer}
log=$(mktemp)
status=0
rcf=$(mktemp)
suite() {
    { "$@"; echo $? > "$rcf"; } 2>&1 | tee -a "$log"
    [ "$(cat "$rcf")" = 0 ] || status=1
}
suite sh tests/run-unit.sh "$@"
suite python3 tests/integration/run.py
suite sh tests/integration/test_cli.sh
suite sh tests/browser/run.sh
suite python3 tests/integration/mailer_test.py
suite python3 tests/integration/alerts_test.py
suite python3 tests/integration/scanner_test.py
suite sh tests/fuzz/run-replay.sh
pass=0; fail=0
for suite in unit integration cli browser mailer alerts scanner fuzz; do
    line=$(grep -E "^$suite: [0-9]+ passed, [0-9]+ failed" "$log" | tail -1)
    if [ -z "$line" ]; then
        echo "$suite: no result line (the suite did not run to the end)"
        fail=$((fail + 1)); status=1; continue
    fi
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
    pass=$((pass + p)); fail=$((fail + f))
done
rm -f "$log" "$rcf"
echo "total: $pass passed, $fail failed"
[ $status -eq 0 ] && [ $fail -eq 0 ]
