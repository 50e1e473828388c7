#!/bin/sh
# card.sh - throughput of POST /api/cards/verify: a nurse's system verifies dynamic QR codes of
# one card, each code once (each verification checks the code, reads the card and the
# person's demographics, and commits the nonce, the card-use row and the audit record in one
# transaction before it answers). Codes are minted beforehand with `jiankang card codes`
# (the key file signs them; minting costs one SM2 signature each, about 0.6 ms). Prints the
# RESULT line of wrk; copy it into docs/performance.md.
# Usage: bench/card.sh [seconds, default 10]   (JK_BENCH_CONNS, JK_BENCH_PORT)
set -eu
cd "$(dirname "$0")/.."
secs=${1:-10}
port=${JK_BENCH_PORT:-18520}
conns=${JK_BENCH_CONNS:-32}
threads=2
dir=$(mktemp -d /tmp/jk-bench.XXXXXX)
url="http://127.0.0.1:$port"
server_pid=""
stop() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    server_pid=""
}
trap 'stop; rm -rf "$dir"' EXIT INT TERM
export JIANKANG_KEYS="$dir/keys" JIANKANG_ACCESS_LOG=off JIANKANG_SECURITY=on

# Codes live 300 s here (the rules' upper design value), so that minting and the run fit.
python3 - "$dir/card.json" <<'PY'
import json, sys
rules = json.load(open("rules/card.json", encoding="utf-8"))
rules["rules"]["card.code.ttl_seconds"]["value"] = 300
json.dump(rules, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
PY
export JIANKANG_CARD_RULES="$dir/card.json"

./jiankang demo --db "sqlite:$dir/db" >/dev/null 2>&1
./jiankang serve --listen "127.0.0.1:$port" --db "sqlite:$dir/db" >"$dir/out" 2>"$dir/err" &
server_pid=$!
until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done
token() { # user password
    curl -sf -X POST "$url/auth/token" -d "grant_type=password&username=$1&password=$2" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
resident=$(token demo-resident Jiankang-Resident-2025)
nurse=$(token demo-nurse Jiankang-Nurse-2025)
card=$(curl -sf -X POST "$url/api/cards" -H "Authorization: Bearer $resident" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
# Enough codes for the run at up to 9,000/s, plus a margin.
n=$((secs * 9000 + 5000))
echo "minting $n codes ..." >&2
./jiankang card codes "$card" "$n" --db "sqlite:$dir/db" >"$dir/codes"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
cat bench/card_verify.lua bench/report.lua >"$dir/verify.lua"
JK_CARD_CODES="$dir/codes" JK_BENCH_THREADS=$threads JK_TOKEN=$nurse \
    wrk -t$threads -c"$conns" -d"${secs}s" --latency -s "$dir/verify.lua" "$url" | grep RESULT
accepted=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"select count(*) from card_use where result = 'accepted'\").fetchone()[0])" "$dir/db")
echo "verifications accepted and logged: $accepted"
