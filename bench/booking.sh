#!/bin/sh
# booking.sh - the booking benchmarks (not tests; docs/performance.md, "Booking"), with security
# on and the release build:
#
# 1. Finding slots: GET /api/slots for one department over 7 days (16 slices a day, 8 of 10
#    places and 8 of 4: 112 slots, each with its live remaining places), as the demo resident,
#    with wrk on 1 and then 8 connections.
# 2. The release-time burst: 1,000 places of one department (5 schedules x 20 slices of 10 on
#    one day, every place at the window) open at one instant; wrk starts a few seconds before
#    it with 200 connections posting $book as the demo nurse for random (patient, slot) pairs
#    over 2,400 real-name Patients (made beforehand by the hospital system demo-his in
#    transaction Bundles). Attempts before the opening are refused (release.time), then the
#    places go, then every attempt is refused as full (or by the patient's one booking a day
#    in a department). The RESULT line is wrk's over the whole run; the BOOKING line splits
#    it (bench/booking_burst.lua); afterwards the database is checked: places booked = 201s
#    <= 1,000, no slot over its capacity, no person over a limit.
#
# The places open at a whole minute (release.time is HH:MM), so the script waits for the next
# one that leaves time for the setup: a run takes about two minutes.
#
#   bench/booking.sh [sqlite|postgresql] [seconds of the burst, default 15]
#
# Environment: JK_BENCH_CONNS (200), JK_BENCH_PATIENTS (2400), JK_BENCH_FIND_SECS (10; 0: no find),
# JK_BENCH_LEAD (seconds wrk starts before the opening, 3), JK_BENCH_PORT (18530),
# JK_BENCH_PERF (a file: `perf record -g` of the server for 4 s from the opening).
set -eu
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
secs=${2:-15}
conns=${JK_BENCH_CONNS:-200}
npat=${JK_BENCH_PATIENTS:-2400}
find_secs=${JK_BENCH_FIND_SECS:-10}
lead=${JK_BENCH_LEAD:-3}
port=${JK_BENCH_PORT:-18530}
threads=2
url="http://127.0.0.1:$port"
dir=$(mktemp -d /tmp/jk-bench-booking.XXXXXX)
server_pid=""
stop() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    server_pid=""
}
cleanup() {
    stop
    [ "$backend" = postgresql ] && tools/pg-test-cluster.sh stop "$dir/pg" >/dev/null 2>&1
    rm -rf "$dir"
    return 0
}
trap cleanup EXIT INT TERM
export JIANKANG_KEYS="$dir/keys" JIANKANG_ACCESS_LOG=off JIANKANG_SECURITY=on

[ -x ./jiankang ] || { echo "build it first: make jiankang" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is not installed" >&2; exit 1; }
case $backend in
sqlite) db="sqlite:$dir/db" ;;
postgresql) db=$(tools/pg-test-cluster.sh start "$dir/pg") ;;
*) echo "usage: bench/booking.sh [sqlite|postgresql] [seconds]" >&2; exit 2 ;;
esac

serve() { # [booking rules file]
    if [ -n "${1:-}" ]; then
        JIANKANG_BOOKING_RULES=$1 ./jiankang serve --listen "127.0.0.1:$port" --db "$db" \
            >>"$dir/out" 2>>"$dir/err" &
    else
        ./jiankang serve --listen "127.0.0.1:$port" --db "$db" >>"$dir/out" 2>>"$dir/err" &
    fi
    server_pid=$!
    until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done
}
sql() { # one query, one value
    if [ "$backend" = sqlite ]; then
        python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])" "$dir/db" "$1"
    else
        psql -qAt "$db" -c "$1"
    fi
}
setup() {
    python3 bench/booking_setup.py "$@"
}

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'),"\
     "$(free -g | awk '/Mem:/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "jiankang: $(./jiankang --version), $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $backend"

./jiankang demo --db "$db" >/dev/null 2>&1
serve
echo "making $npat real-name patients ..." >&2
setup patients "$url" "$npat" "$dir/patients"
service=$(setup find "$url")
tomorrow=$(TZ=Asia/Shanghai date -d tomorrow +%F)
resident=$(setup token "$url" demo-resident Jiankang-Resident-2025)
found=$(curl -sf -H "Authorization: Bearer $resident" \
    "$url/api/slots?service=HealthcareService/$service&date=$tomorrow&days=7" |
    python3 -c 'import json,sys; s=json.load(sys.stdin)["slots"]; print(len(s), sum(x["capacity"] for x in s))')
echo "find: $found (slots, places) of HealthcareService/$service over 7 days from $tomorrow"
cat >"$dir/find.lua" <<EOF
request = function()
  return wrk.format("GET", "/api/slots?service=HealthcareService/$service&date=$tomorrow&days=7",
                    {["Authorization"] = "Bearer $resident"})
end
EOF
cat bench/report.lua >>"$dir/find.lua"
for c in 1 8; do
    [ "$find_secs" -gt 0 ] || break
    line=$(wrk -t1 -c$c -d"${find_secs}s" --latency -s "$dir/find.lua" "$url" 2>&1 | grep "^RESULT" || true)
    echo "GET /api/slots (7 days, c=$c, ${find_secs}s): $line"
done
stop

# The burst's rules: every place at the window, released at the next whole minute at least
# 20 s away, for the next day.
now=$(date +%s)
open_s=$(((now + 20 + 59) / 60 * 60))
open_ms=$((open_s * 1000))
release=$(TZ=Asia/Shanghai date -d "@$open_s" +%H:%M)
day=$(TZ=Asia/Shanghai date -d "@$((open_s + 86400))" +%F)
python3 - "$dir/booking.json" "$release" <<'PY'
import json, sys
doc = json.load(open("rules/booking.json", encoding="utf-8"))
r = doc["rules"]
r["release.time"]["value"] = sys.argv[2]
r["release.days_ahead"]["value"] = 1
# hosp-fz-1 has overrides of its own (rules/booking.json, institutions): the same there
r["institutions"]["value"]["hosp-fz-1"] = {"release.time": sys.argv[2], "release.days_ahead": 1}
r["quota.percent"]["value"] = {"window": 100, "online": 0, "phone": 0, "referral": 0, "family": 0}
json.dump(doc, open(sys.argv[1], "w", encoding="utf-8"), ensure_ascii=False)
PY
serve "$dir/booking.json"
setup burst "$url" "$day" "$open_ms" "$dir/slots"
nurse=$(setup token "$url" demo-nurse Jiankang-Nurse-2025)
echo "burst: $(wc -l <"$dir/slots") slots of 10 places on $day, opening at $release (+08:00)"
cat bench/report.lua bench/booking_burst.lua >"$dir/burst.lua"
wait_ms=$((open_ms - lead * 1000 - $(date +%s%3N)))
[ "$wait_ms" -gt 0 ] && sleep "$(echo "$wait_ms" | awk '{printf "%.3f", $1 / 1000}')"
if [ -n "${JK_BENCH_PERF:-}" ]; then # a profile of the server from the opening, for 4 s
    (sleep "$lead" && perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$server_pid" -o "$JK_BENCH_PERF" \
        -- sleep 4 >/dev/null 2>&1) &
fi
(exec python3 bench/booking_setup.py sched "$server_pid" "$dir/sched") &
sched_pid=$!
JK_BOOK_PATIENTS="$dir/patients" JK_BOOK_SLOTS="$dir/slots" JK_BOOK_OPEN_MS=$open_ms \
    JK_BENCH_THREADS=$threads JK_TOKEN=$nurse \
    wrk -t$threads -c"$conns" -d"${secs}s" --timeout 60s --latency -s "$dir/burst.lua" "$url" >"$dir/wrk.out" 2>&1 || true
grep -E "^(RESULT|BOOKING|TIMELINE)" "$dir/wrk.out" || cat "$dir/wrk.out"
ok=$(sed -n 's/^BOOKING 201=\([0-9]*\).*/\1/p' "$dir/wrk.out")
kill "$sched_pid" 2>/dev/null || true
wait "$sched_pid" 2>/dev/null || true
win=$(sed -n 's/^BOOKING .* window_s=\([0-9.]*\) .*/\1/p' "$dir/wrk.out")
printf "before the opening (%s s): " "$lead"
setup window "$dir/sched" $((open_ms - lead * 1000 + 200)) "$open_ms"
printf "from the opening to the last 201 (%s s): " "$win"
setup window "$dir/sched" "$open_ms" "$(echo "$open_ms $win" | awk '{printf "%.0f", $1 + $2 * 1000}')"
stop

# What the database says.
w="service = 'bench-burst'"
booked=$(sql "SELECT count(*) FROM bk_booking WHERE $w AND state = 'booked'")
other=$(sql "SELECT count(*) FROM bk_booking WHERE $w AND state <> 'booked'")
taken=$(sql "SELECT count(*) FROM bk_place p JOIN bk_slot s ON s.slot_id = p.slot_id WHERE s.$w AND p.state <> 'free'")
over=$(sql "SELECT count(*) FROM bk_slot s WHERE s.$w AND (SELECT count(*) FROM bk_booking b WHERE b.slot_id = s.slot_id AND b.state IN ('held', 'booked')) > s.capacity")
counted=$(sql "SELECT count(*) FROM bk_slot s WHERE s.$w AND s.n_booked <> (SELECT count(*) FROM bk_booking b WHERE b.slot_id = s.slot_id AND b.state = 'booked')")
twice=$(sql "SELECT count(*) FROM (SELECT person FROM bk_booking WHERE $w AND state IN ('held', 'booked') GROUP BY person, day HAVING count(*) > 1) x")
limit=$(sql "SELECT count(*) FROM bk_count WHERE k LIKE 'department/%/day/%' AND n > 1")
appts=$(sql "SELECT count(*) FROM bk_booking b JOIN resource_version r ON r.type = 'Appointment' AND r.id = b.appointment_id WHERE b.$w")
echo "database: $booked booked ($other in other states), $taken places taken of 1000," \
     "$over slots over capacity, $counted slots whose count differs, $twice persons with two" \
     "bookings a day, $limit day counters over the limit, $appts Appointments; 201s: ${ok:-?}"
# A run that ends leaves up to one request per connection unanswered, whose booking may
# have committed: then the 201s are up to that many fewer than the bookings.
if [ -n "$ok" ] && [ "$booked" -ge "$ok" ] && [ "$booked" -le $((ok + conns)) ] &&
    [ "$taken" = "$booked" ] && [ "$booked" -le 1000 ] && [ "$over" = 0 ] &&
    [ "$counted" = 0 ] && [ "$twice" = 0 ] && [ "$limit" = 0 ] && [ "$appts" = "$booked" ]; then
    echo "check: no over-booking, every 201 is a booking ($((booked - ok)) more committed" \
         "after wrk stopped waiting), no limit exceeded"
else
    echo "check: FAILED" >&2
    exit 1
fi
