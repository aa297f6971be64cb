#!/bin/sh
# Installs the Debian packages leadloop builds and runs with (`install-deps.sh`), or also those
# its tests use (`install-deps.sh test`). Idempotent and silent when everything is present;
# needs root (or sudo) only when something is missing.
set -e
PKGS="build-essential pkg-config libh2o-evloop-dev liblmdb-dev lmdb-utils libmaxminddb-dev mmdb-bin
libssl-dev libyaml-dev libjansson-dev libcjson-dev libcurl4-openssl-dev libesmtp-dev libgumbo-dev libcsv-dev libopendkim-dev tor-geoipdb
libmaxmind-db-writer-perl perl tzdata"
if [ "$1" = test ]; then
    PKGS="$PKGS curl python3 chromium chromium-driver python3-aiosmtpd openssl"
    # Node.js for the browser test; keep an existing install (it may come with its own npm).
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || PKGS="$PKGS nodejs npm"
fi
# `install-deps.sh fuzz` (make fuzz): clang and its libFuzzer runtime.
[ "$1" = fuzz ] && PKGS="$PKGS clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
