#!/bin/sh
# rx.sh - throughput of POST /api/rx/prescriptions (docs/performance.md, "Prescriptions"), with
# security on and the release build: the demo doctor prescribes two drugs for one open
# follow-up visit of the demo resident, over and over; each request is the rule check, two
# MedicationRequests, the SM2 signature over their canonical form, the Provenance, the
# prescription row and the audit record, committed before the 201. Prints wrk's RESULT line
# and the prescriptions in the database afterwards (which must equal the 201s).
# Usage: bench/rx.sh [sqlite|postgresql] [seconds, default 10]   (JK_BENCH_CONNS, JK_BENCH_PORT)
set -eu
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
secs=${2:-10}
port=${JK_BENCH_PORT:-18540}
conns=${JK_BENCH_CONNS:-32}
threads=2
dir=$(mktemp -d /tmp/jk-bench-rx.XXXXXX)
url="http://127.0.0.1:$port"
server_pid=""
stop() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    server_pid=""
}
pg_stop() { :; }
trap 'stop; pg_stop; rm -rf "$dir"' EXIT INT TERM
export JIANKANG_KEYS="$dir/keys" JIANKANG_ACCESS_LOG=off JIANKANG_SECURITY=on

if [ "$backend" = postgresql ]; then
    db=$(tools/pg-test-cluster.sh start "$dir/pg")
    pg_stop() { tools/pg-test-cluster.sh stop "$dir/pg" >/dev/null 2>&1 || true; }
else
    db="sqlite:$dir/db"
fi
# no second factor for the demo doctor (the demo has no TOTP app)
python3 - "$dir/security.json" <<'PY'
import json, sys
rules = json.load(open("rules/security.json", encoding="utf-8"))
rules["rules"]["login.second_factor_roles"]["value"] = []
json.dump(rules, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
PY
export JIANKANG_SECURITY_RULES="$dir/security.json"

./jiankang demo --db "$db" >/dev/null 2>&1
./jiankang serve --listen "127.0.0.1:$port" --db "$db" >"$dir/out" 2>"$dir/err" &
server_pid=$!
until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done
token() { # user password
    curl -sf -X POST "$url/auth/token" -d "grant_type=password&username=$1&password=$2" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
resident=$(token demo-resident Jiankang-Resident-2025)
doctor=$(token demo-doctor Jiankang-Doctor-2025)
visit=$(curl -sf -X POST "$url/api/ih/visits" -H "Authorization: Bearer $resident" \
    -H 'Content-Type: application/json' \
    -d '{"doctor":"PractitionerRole/prac-1-role","condition":{"system":"http://hl7.org/fhir/sid/icd-10","code":"I10"}}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $backend"
cat bench/rx_prescribe.lua bench/report.lua >"$dir/rx.lua"
JK_TOKEN=$doctor JK_VISIT=$visit \
    wrk -t$threads -c"$conns" -d"${secs}s" --latency -s "$dir/rx.lua" "$url" | grep RESULT
n=$(curl -sf -X POST "$url/fhir/R4/MedicationRequest/\$verify-signature" \
    -H "Authorization: Bearer $doctor" -H 'Content-Type: application/fhir+json' -o /dev/null \
    -w '%{http_code}' -d '{"resourceType":"Parameters","parameter":[{"name":"prescription","valueString":"none"}]}' || true)
echo "verify of an unknown prescription: HTTP $n (404 expected)"
