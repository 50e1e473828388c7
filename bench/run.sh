#!/bin/sh
# run.sh - the platform-core benchmarks: GET and POST Patient on SQLite, and resident memory
# after 100,000 patients. Prints the figures and the machine; copy them into
# docs/performance.md. Usage: bench/run.sh [seconds per run, default 10]
set -eu
cd "$(dirname "$0")/.."
secs=${1:-10}
port=${JK_BENCH_PORT:-18500}
dir=$(mktemp -d /tmp/jk-bench.XXXXXX)
export JIANKANG_KEYS="$dir/jiankang.keys" # the keys that seal identity numbers
url="http://127.0.0.1:$port"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

./jiankang demo --db "sqlite:$dir/db" >/dev/null 2>&1
JIANKANG_SECURITY=off JIANKANG_ACCESS_LOG=off ./jiankang serve --listen "127.0.0.1:$port" --db "sqlite:$dir/db" \
    >"$dir/out" 2>"$dir/err" &
server_pid=$!
until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done

wrk_run() { # name, then wrk arguments
    name=$1
    shift
    line=$(wrk "$@" 2>&1 | grep "^RESULT" || true)
    echo "$name: $line"
}

count_patients() {
    python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"select count(distinct id) from resource_version where type='Patient'\").fetchone()[0])" "$dir/db"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
     "$(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

# Writes: validated, durable POST of a ~500-byte Chinese patient, 32 connections.
cat bench/post_patient.lua bench/report.lua >"$dir/post.lua"
wrk_run "POST /fhir/R4/Patient (c=32, ${secs}s)" -t2 -c32 -d"${secs}s" --latency -s "$dir/post.lua" "$url"

# Fill up to 100,000 patients, then reads and memory.
while [ "$(count_patients)" -lt 100000 ]; do
    wrk -t2 -c32 -d5s -s bench/post_patient.lua "$url" >/dev/null 2>&1
done
echo "patients stored: $(count_patients)"
cat bench/get.lua bench/report.lua >"$dir/get.lua"
wrk_run "GET /fhir/R4/Patient/{id} (c=32, ${secs}s)" -t2 -c32 -d"${secs}s" --latency -s "$dir/get.lua" "$url"
echo "server resident memory: $(awk '/VmRSS/ {print $2, $3}' /proc/$server_pid/status)"
