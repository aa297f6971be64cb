#!/bin/sh
# Headless-Chromium tests against the real binaries: the website snippet (snippet.test.mjs)
# and the mailer's messages rendered and clicked (email_render.py, which drives
# email_render.test.mjs). Each part prints "browser: N passed, N failed"; shown here as
# "browser (PART): ...", and the last line totals them as "browser: N passed, N failed".
# Installs playwright-core from the lock file when node_modules is missing; never a browser:
# the tests drive Debian's /usr/bin/chromium.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/node_modules/playwright-core" ]; then
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund) || exit 1
fi
cd "$here/../.."
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
out=$(mktemp) rcf=$(mktemp)
pass=0 fail=0 status=0
part() { # NAME COMMAND...
    name=$1; shift
    { "$@"; echo $? >"$rcf"; } 2>&1 | tee "$out" | sed "s/^browser: /browser ($name): /"
    [ "$(cat "$rcf")" = 0 ] || status=1
    line=$(grep -E '^browser: [0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
    if [ -z "$line" ]; then
        echo "browser ($name): no result line (it did not run to the end)"
        fail=$((fail + 1)); status=1; return
    fi
    pass=$((pass + $(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')))
    fail=$((fail + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
}
part snippet node "$here/snippet.test.mjs"
part email python3 "$here/email_render.py"
rm -f "$out" "$rcf"
echo "browser: $pass passed, $fail failed"
[ $status -eq 0 ] && [ $fail -eq 0 ]
