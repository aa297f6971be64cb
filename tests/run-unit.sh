#!/bin/sh
# Runs each unit-test binary; prints the total as "N passed, N failed".
pass=0; fail=0
for t in "$@"; do
    out=$("$t" 2>&1); rc=$?
    echo "$out" | grep -v ': [0-9]* passed, [0-9]* failed$' | sed 's/^/  /'
    line=$(echo "$out" | grep -E ': [0-9]+ passed, [0-9]+ failed$' | tail -1)
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/'); f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
    [ -n "$line" ] || { p=0; f=1; echo "  $t: crashed or printed no result (exit $rc)"; }
    [ $rc -eq 0 ] || [ "$f" -gt 0 ] || f=1
    echo "unit $(basename "$t"): $p passed, $f failed"
    pass=$((pass + p)); fail=$((fail + f))
done
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ]
