#!/bin/sh
# auth.sh - what authentication, authorisation and the audit trail cost on a read: GET
# /fhir/R4/Patient/{id} with security off (a development-only setting) against the same
# build and request with a resident's bearer token (token lookup, the decision, and one audit
# record committed before the response). Prints both and the overhead; copy them into
# docs/performance.md. Usage: bench/auth.sh [seconds per run, default 10]
set -eu
cd "$(dirname "$0")/.."
secs=${1:-10}
port=${JK_BENCH_PORT:-18510}
conns=${JK_BENCH_CONNS:-32}
dir=$(mktemp -d /tmp/jk-bench.XXXXXX)
url="http://127.0.0.1:$port"
server_pid=""
stop() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    server_pid=""
}
trap 'stop; rm -rf "$dir"' EXIT INT TERM

start() { # the value of the security setting
    JIANKANG_SECURITY=$1 JIANKANG_ACCESS_LOG=off JIANKANG_KEYS="$dir/keys" ./jiankang serve \
        --listen "127.0.0.1:$port" --db "sqlite:$dir/db" >"$dir/out" 2>"$dir/err" &
    server_pid=$!
    until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done
}

rate() { # wrk arguments; prints requests/s and p99
    wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "$url/fhir/R4/Patient/pat-1" 2>&1 |
        awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} END {print r, p}'
}

JIANKANG_KEYS="$dir/keys" ./jiankang demo --db "sqlite:$dir/db" >/dev/null 2>&1
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

start off
off=$(rate)
stop
start on
token=$(curl -sf -X POST "$url/auth/token" \
    -d 'grant_type=password&username=demo-resident&password=Jiankang-Resident-2025' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
on=$(rate -H "Authorization: Bearer $token")
audited=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('select count(*) from audit_event').fetchone()[0])" "$dir/db")
stop
echo "security off: $off (requests/s, p99)"
echo "security on (resident reads own record): $on (requests/s, p99); audit records: $audited"
echo "$off $on" | awk '{printf "throughput overhead: %.1f%%\n", 100 * (1 - $3 / $1)}'
