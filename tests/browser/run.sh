#!/bin/sh
# Headless-Chromium test of the website snippet against bin/leadloopd (see snippet.test.mjs).
# Installs playwright-core from the lock file when node_modules is missing; never a browser:
# the test drives Debian's /usr/bin/chromium.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$here/node_modules/playwright-core" ]; then
    (cd "$here" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --silent --no-audit --no-fund)
fi
cd "$here/../.."
exec env PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 node "$here/snippet.test.mjs"
