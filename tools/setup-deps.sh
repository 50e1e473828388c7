#!/bin/sh
# setup-deps.sh - install the Debian packages a make target needs, saying what it does.
# Usage: tools/setup-deps.sh build|test|check|bench
set -eu

build="pkg-config gcc make libmicrohttpd-dev libjson-c-dev libsqlite3-dev libpq-dev libssl-dev libsodium-dev libicu-dev libopencc-dev libqrencode-dev"
test_pkgs="$build libcmocka-dev python3 postgresql-15 npm chromium"
check="$build clang-format cppcheck python3 npm"
bench="$build wrk python3 curl"

case "${1:-build}" in
build) want=$build ;;
test) want=$test_pkgs ;;
check) want=$check ;;
bench) want=$bench ;;
*) echo "setup-deps: unknown target '$1' (build, test, check, bench)" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# node and npm may come from outside Debian's packages; a working npm is enough.
case " $missing " in *" npm "*) command -v npm >/dev/null 2>&1 && missing=$(echo "$missing" | sed 's/ npm//') ;; esac
[ -z "$missing" ] && exit 0

echo "setup-deps: installing Debian packages:$missing"
if [ "$(id -u)" != 0 ]; then
    echo "setup-deps: not root; run: sudo apt-get install$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "setup-deps: done"
