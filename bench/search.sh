#!/bin/sh
# search.sh - the search benchmark (not a test): 100,000 patients and 1,000,000 observations
# loaded through the server's own write path (`jiankang import`: validation, index extraction,
# the same store functions as POST/PUT, 256 resources per transaction), then the latency of
#   Patient?family=王&_count=10
#   Observation?subject=Patient/bp-N&code=http://loinc.org|8480-6&date=ge2022-01-01  (N varies)
# measured with wrk on one connection (p50, p99). Prints the figures and the machine; copy them
# into docs/internals/search.md ("Query plans"). Targets: p50 under 2 ms and under 5 ms.
#
#   bench/search.sh [sqlite|postgresql] [seconds per run, default 10]
#
# Environment: JK_BENCH_PATIENTS (100000), JK_BENCH_OBSERVATIONS (1000000), JK_BENCH_PORT
# (18510), JK_BENCH_DIR (a directory to keep the data and database in between runs: loading
# takes minutes; a second run with the same directory measures at once).
set -eu
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
secs=${2:-10}
npat=${JK_BENCH_PATIENTS:-100000}
nobs=${JK_BENCH_OBSERVATIONS:-1000000}
port=${JK_BENCH_PORT:-18510}
url="http://127.0.0.1:$port"
if [ -n "${JK_BENCH_DIR:-}" ]; then
    dir=$JK_BENCH_DIR
    keep=1
    mkdir -p "$dir"
else
    dir=$(mktemp -d /tmp/jk-bench-search.XXXXXX)
    keep=0
fi
export JIANKANG_KEYS="$dir/jiankang.keys" # the keys that seal identity numbers
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    [ "$backend" = postgresql ] && [ "$keep" = 0 ] && tools/pg-test-cluster.sh stop "$dir/pg" >/dev/null 2>&1
    [ "$keep" = 0 ] && rm -rf "$dir"
    return 0
}
trap cleanup EXIT INT TERM

[ -x ./jiankang ] || { echo "build it first: make jiankang" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
     "$(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

case $backend in
sqlite) db="sqlite:$dir/search.db" ;;
postgresql)
    if [ -f "$dir/pg.url" ]; then
        db=$(cat "$dir/pg.url")
        tools/pg-test-cluster.sh start "$dir/pg" >/dev/null 2>&1 || true
    else
        db=$(tools/pg-test-cluster.sh start "$dir/pg")
        echo "$db" >"$dir/pg.url"
    fi
    ;;
*) echo "usage: bench/search.sh [sqlite|postgresql] [seconds]" >&2; exit 2 ;;
esac

# The data: deterministic, so that runs compare. 30 surnames, 王 three times as often as the
# rest (10 % of patients); observations of 20 LOINC codes over 2020-2026, ten per patient on
# average.
if [ ! -f "$dir/loaded-$backend" ]; then
    mkdir -p "$dir/data"
    python3 - "$dir/data" "$npat" "$nobs" <<'EOF'
import json, os, random, sys
out, npat, nobs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
FAM = "王 王 王 李 李 张 张 刘 陈 杨 黄 赵 吴 周 徐 孙 马 朱 胡 郭 何 林 高 罗 郑 梁 谢 宋 唐 汪".split()
GIV = "伟 芳 娜 秀英 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀兰 霞 小明 建国".split()
CODES = ("8480-6 8462-4 8867-4 9279-1 8310-5 29463-7 8302-2 39156-5 2339-0 2093-3 2085-9 "
         "18262-6 2571-8 4548-4 718-7 789-8 6690-2 777-3 2160-0 3094-0").split()
with open(os.path.join(out, "0-patients.ndjson"), "w") as f:
    for n in range(1, npat + 1):
        h = n * 2654435761 % 4294967296
        fam, giv = FAM[h % len(FAM)], GIV[(h // 64) % len(GIV)]
        f.write(json.dumps({"resourceType": "Patient", "id": "bp-%d" % n,
            "identifier": [{"system": "urn:jiankang:bench:mrn", "value": "M%d" % n}],
            "active": True, "name": [{"use": "official", "text": fam + giv, "family": fam,
                                      "given": [giv]}],
            "gender": "male" if h % 2 == 0 else "female",
            "birthDate": "%04d-%02d-%02d" % (1930 + h % 70, 1 + h % 12, 1 + h % 28),
            "address": [{"city": "福州市", "state": "福建省", "country": "CN"}]},
            ensure_ascii=False, separators=(",", ":")) + "\n")
rnd = random.Random(42)
step = 100000
for k in range(0, nobs, step):
    with open(os.path.join(out, "1-observations-%03d.ndjson" % (k // step)), "w") as f:
        for i in range(k, min(nobs, k + step)):
            f.write(('{"resourceType":"Observation","id":"bo-%07d","status":"final",'
                     '"category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/'
                     'observation-category","code":"vital-signs"}]}],"code":{"coding":[{"system":'
                     '"http://loinc.org","code":"%s"}]},"subject":{"reference":"Patient/bp-%d"},'
                     '"effectiveDateTime":"%04d-%02d-%02dT%02d:%02d:00+08:00","valueQuantity":'
                     '{"value":%d.%d,"unit":"mmHg","system":"http://unitsofmeasure.org",'
                     '"code":"mm[Hg]"}}\n') % (
                     i, rnd.choice(CODES), rnd.randint(1, npat), 2020 + rnd.randint(0, 6),
                     rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 23),
                     rnd.randint(0, 59), rnd.randint(50, 200), rnd.randint(0, 9)))
EOF
    echo "loading $npat patients and $nobs observations with jiankang import ..."
    start=$(date +%s)
    if ! ./jiankang import --db "$db" "$dir/data" >"$dir/import.out" 2>"$dir/import.log"; then
        echo "import failed:" >&2
        tail -5 "$dir/import.out" "$dir/import.log" >&2
        exit 1
    fi
    tail -3 "$dir/import.out"
    echo "loaded in $(($(date +%s) - start)) s"
    if [ "$backend" = postgresql ]; then
        psql -q "$db" -c "VACUUM ANALYZE" # what autovacuum would do after a bulk load
    fi
    touch "$dir/loaded-$backend"
fi

JIANKANG_SECURITY=off JIANKANG_ACCESS_LOG=off ./jiankang serve --listen "127.0.0.1:$port" --db "$db" \
    >"$dir/serve.out" 2>"$dir/serve.err" &
server_pid=$!
until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done

# Both queries must find something, or the figures mean nothing.
family=$(curl -s "$url/fhir/R4/Patient?family=%E7%8E%8B&_count=10" |
    python3 -c "import json,sys; print(len(json.load(sys.stdin).get('entry', [])))")
obs=$(curl -s "$url/fhir/R4/Observation?subject=Patient/bp-1&_summary=count" |
    python3 -c "import json,sys; print(json.load(sys.stdin).get('total'))")
echo "check: Patient?family=王&_count=10 gives $family entries; Patient/bp-1 has $obs observations"

cat >"$dir/family.lua" <<'EOF'
request = function()
  return wrk.format("GET", "/fhir/R4/Patient?family=%E7%8E%8B&_count=10")
end
EOF
cat >"$dir/obs.lua" <<EOF
local n = 0
request = function()
  n = n + 1
  local p = (n * 7919) % $npat + 1
  return wrk.format("GET", "/fhir/R4/Observation?subject=Patient/bp-" .. p ..
                    "&code=http://loinc.org%7C8480-6&date=ge2022-01-01")
end
EOF
cat bench/report.lua >>"$dir/family.lua"
cat bench/report.lua >>"$dir/obs.lua"

run() { # name, script, connections
    # Warm the caches as long as the run: the observation query reads random patients' rows
    # of a 3 GB database, and cold pages come from disk.
    wrk -t1 -c1 -d"${secs}s" -s "$2" "$url" >/dev/null 2>&1
    line=$(wrk -t1 -c"$3" -d"${secs}s" --latency -s "$2" "$url" 2>&1 | grep "^RESULT" || true)
    echo "$1 (c=$3, ${secs}s, $backend): $line"
}
run "Patient?family=王&_count=10" "$dir/family.lua" 1
run "Observation?subject=..&code=..&date=ge.." "$dir/obs.lua" 1
run "Patient?family=王&_count=10" "$dir/family.lua" 8
run "Observation?subject=..&code=..&date=ge.." "$dir/obs.lua" 8
