#!/bin/sh
# import.sh - the bulk ingest benchmark: `jiankang import` of the Synthea transaction bundles
# into a fresh SQLite database (WAL, synchronous=FULL: durable) and into a fresh database of a
# throwaway PostgreSQL cluster (fsync and synchronous_commit on). Prints resources/s of each
# run, the processor time it took, and the machine; copy the figures into docs/import.md.
#
#   bench/import.sh [DIR]     DIR defaults to ../shared/data/synthea-r4
#   JK_BENCH_RUNS=N           runs per backend (default 3); JK_BENCH_PG=0 skips PostgreSQL
#   JK_BENCH_JOBS=N           passed as --jobs (default: the command's own, one per core)
set -eu
cd "$(dirname "$0")/.."
data=${1:-../shared/data/synthea-r4}
runs=${JK_BENCH_RUNS:-3}
jobs=${JK_BENCH_JOBS:-}
pgbin=${PGBIN:-/usr/lib/postgresql/15/bin}
[ -d "$data" ] || { echo "import.sh: no directory $data" >&2; exit 2; }
[ -x ./jiankang ] || make --no-print-directory jiankang
dir=$(mktemp -d /tmp/jk-bench-import.XXXXXX)
export JIANKANG_KEYS="$dir/jiankang.keys" # the keys that seal identity numbers
pg_started=""
cleanup() {
    [ -n "$pg_started" ] && tools/pg-test-cluster.sh stop "$dir/pg" >/dev/null 2>&1
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

n_files=$(find "$data" -name '*.json' -o -name '*.ndjson' | wc -l)
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')," \
    "$(free -g | awk '/Mem:/ {print $2}') GiB, kernel $(uname -r), $(df -hT "$dir" | awk 'NR==2 {print $2}') on $dir"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "data: $data, $n_files files, $(du -sh "$data" | cut -f1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"

# Processor seconds the PostgreSQL server has used so far: the postmaster, its living
# children, and the backends that have exited (counted in the postmaster's cutime/cstime).
pg_cpu() {
    base=$dir/pg
    [ -f "$base/base" ] && base=$(cat "$base/base")
    pm=$(head -1 "$base/data/postmaster.pid")
    ticks=$(getconf CLK_TCK)
    { echo "$pm"; pgrep -P "$pm"; } | while read -r pid; do
        cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null | awk -v pm="$pm" -v pid="$pid" \
            '{ t = $12 + $13; if (pid == pm) t += $14 + $15; print t }'
    done | awk -v hz="$ticks" '{ s += $1 } END { printf "%.2f", s / hz }'
}

# One import: prints its summary line and the processor time (user + system) it used.
import_once() { # label, database URL
    label=$1
    db=$2
    pg_before=""
    [ -n "$pg_started" ] && pg_before=$(pg_cpu)
    /usr/bin/time -f "%U %S %e" -o "$dir/time" ./jiankang import ${jobs:+--jobs "$jobs"} \
        --db "$db" "$data" >"$dir/out" 2>"$dir/err" || {
        echo "$label: import failed:"
        tail -5 "$dir/err"
        return 1
    }
    rate=$(awk '/^time:/ {print $4}' "$dir/out")
    res=$(awk '/^resources:/ {print $2, "written,", $4, "unchanged"}' "$dir/out")
    cpu=$(awk '{printf "%.2f s processor (%.2f user + %.2f system), %.2f s wall", $1 + $2, $1, $2, $3}' "$dir/time")
    if [ -n "$pg_before" ]; then
        sleep 1 # the backends of the import's connections exit and are counted
        cpu="$cpu; PostgreSQL server $(echo "$pg_before $(pg_cpu)" | awk '{printf "%.2f", $2 - $1}') s processor"
    fi
    echo "$label: $rate resources/s ($res; import $cpu)"
}

echo
echo "SQLite (sqlite:$dir/db):"
for i in $(seq "$runs"); do
    rm -f "$dir"/db "$dir"/db-wal "$dir"/db-shm
    import_once "  run $i, fresh database" "sqlite:$dir/db"
done
import_once "  again, same files (all unchanged)" "sqlite:$dir/db"

if [ "${JK_BENCH_PG:-1}" != 0 ]; then
    echo
    url=$(tools/pg-test-cluster.sh start "$dir/pg" | tail -1)
    pg_started=1
    echo "PostgreSQL ($("$pgbin/postgres" --version | awk '{print $3}'), throwaway cluster):"
    for i in $(seq "$runs"); do
        "$pgbin/psql" -q "$url" -c "DROP SCHEMA public CASCADE; CREATE SCHEMA public;" \
            >/dev/null 2>&1
        import_once "  run $i, fresh database" "$url"
    done
    import_once "  again, same files (all unchanged)" "$url"
fi
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
