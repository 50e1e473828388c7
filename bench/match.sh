#!/bin/sh
# match.sh - Patient/$match over a large person index: a generated population of N persons
# (default 1,000,000; tests/mpi_population.h) and 5 % duplicate records from other
# institutions is imported with `jiankang import` (every Patient sealed, indexed and linked by
# the person index, as in production), then wrk POSTs $match with 1,000 duplicate records not
# in the index, one connection at a time and then with 8 connections. Prints the latency
# percentiles; copy them into docs/performance.md.
#   bench/match.sh [N]     JK_BENCH_KEEP=DIR reuses (or keeps) the database in DIR
set -eu
cd "$(dirname "$0")/.."
n=${1:-1000000}
secs=${JK_BENCH_SECS:-20}
port=${JK_BENCH_PORT:-18520}
dir=${JK_BENCH_KEEP:-$(mktemp -d /tmp/jk-bench-match.XXXXXX)}
mkdir -p "$dir"
url="http://127.0.0.1:$port"
export JIANKANG_KEYS="$dir/jiankang.keys"
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ -n "${JK_BENCH_KEEP:-}" ] || rm -rf "$dir"
}
trap cleanup EXIT INT TERM
make --no-print-directory jiankang build/bench/mpi_gen >/dev/null

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "$(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r)"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ ! -f "$dir/db" ]; then
    dups=$((n / 20))
    build/bench/mpi_gen "$n" "$dups" 1000 "$dir/patients.ndjson" "$dir/probes.txt"
    start=$(date +%s)
    ./jiankang import --db "sqlite:$dir/db" "$dir/patients.ndjson" | tail -2
    echo "import of $n persons and $dups duplicates: $(($(date +%s) - start)) s"
    rm -f "$dir/patients.ndjson"
fi
python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print('index: %d records, %d persons' % (c.execute('select count(*) from mpi_record').fetchone()[0], c.execute('select count(distinct person_id) from mpi_record').fetchone()[0]))" "$dir/db"

JIANKANG_SECURITY=off JIANKANG_ACCESS_LOG=off ./jiankang serve --listen "127.0.0.1:$port" \
    --db "sqlite:$dir/db" >"$dir/out" 2>"$dir/err" &
server_pid=$!
until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done
cat bench/match.lua bench/report.lua >"$dir/match.lua"
for conns in 1 8; do
    printf "\$match, %d connection(s): " "$conns"
    JK_PROBES="$dir/probes.txt" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$dir/match.lua" \
        "$url" 2>&1 | grep "^RESULT"
done
