#!/bin/sh
# make test: replays every fuzz corpus (tests/fuzz/corpus/<name>/) through its ASan+UBSan
# replay binary ($FUZZ_DIR/replay_<name>); one pass per target whose corpus replays without a
# crash, a sanitizer report or a failed property. Last line: "fuzz: N passed, N failed".
FUZZ_DIR=${FUZZ_DIR:-build/fuzz}
here=$(dirname "$0")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(cd "$here/.." && pwd)/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
pass=0; fail=0
for src in "$here"/fuzz_*.c; do
    name=$(basename "$src" .c); name=${name#fuzz_}
    bin=$FUZZ_DIR/replay_$name
    if [ ! -x "$bin" ]; then
        echo "fuzz $name: no replay binary $bin"; fail=$((fail + 1)); continue
    fi
    out=$("$bin" "$here/corpus/$name" 2>&1); rc=$?
    if [ $rc -eq 0 ]; then
        echo "fuzz $name: $(echo "$out" | tail -1)"
        pass=$((pass + 1))
    else
        echo "$out" | grep -v '^replay: ' | tail -40 | sed 's/^/  /'
        echo "  last input: $(echo "$out" | grep '^replay: ' | tail -1 | sed 's/^replay: //')"
        echo "fuzz $name: FAILED (exit $rc)"
        fail=$((fail + 1))
    fi
done
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
