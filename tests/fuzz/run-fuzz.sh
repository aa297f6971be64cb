#!/bin/sh
# make fuzz: runs each libFuzzer target for the given seconds. Usage: run-fuzz.sh DIR SECONDS NAME...
# New inputs go to DIR/corpus/<name> (not committed), seeded from tests/fuzz/corpus/<name>;
# a crash leaves DIR/artifacts/<name>-crash-* (minimise it, fix, add it to the seed corpus).
dir=$1 secs=$2; shift 2
here=$(dirname "$0")
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(cd "$here/.." && pwd)/lsan.supp:print_suppressions=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
status=0
for name in "$@"; do
    mkdir -p "$dir/corpus/$name" "$dir/artifacts"
    log=$dir/$name.log
    "$dir/fuzz_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/$name-" "$dir/corpus/$name" "$here/corpus/$name" >"$log" 2>&1
    rc=$?
    execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
    cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
    if [ $rc -eq 0 ]; then
        echo "fuzz $name: ${secs}s, ${execs:-?} executions, cov ${cov:-?}, corpus $(ls "$dir/corpus/$name" | wc -l)"
    else
        echo "fuzz $name: FAILED (exit $rc), see $log"
        grep -E 'ERROR|SUMMARY|property failed|runtime error' "$log" | head -5 | sed 's/^/  /'
        status=1
    fi
done
exit $status
