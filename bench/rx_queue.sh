#!/bin/sh
# rx_queue.sh - the pharmacist's review queue of an institution with 10,000 pending
# prescriptions (issue 8: loads in under 50 ms). Seeds N pending rx_prescription rows of
# 福州市第一医院 (as the prescribing service writes them, each with warnings and a summary of
# three drugs), then times GET /api/rx/review-queue as demo-rx-reviewer (security on: the
# token, the view, one indexed query for the page and one count, the audit records of the
# page's patients committed before the answer): oldest first, newest first, and a deep page.
# Prints one line per kind with p50/p90/p99/max; copy them into docs/performance.md.
# Usage: bench/rx_queue.sh [sqlite|postgresql] [N, default 10000] [requests, default 200]
#        (postgresql: run under tools/with-pg.sh, which sets JK_TEST_PG_URL)
set -eu
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
n=${2:-10000}
reqs=${3:-200}
port=${JK_BENCH_PORT:-18530}
dir=$(mktemp -d /tmp/jk-bench.XXXXXX)
url="http://127.0.0.1:$port"
server_pid=""
stop() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    server_pid=""
}
trap 'stop; rm -rf "$dir"' EXIT INT TERM
export JIANKANG_KEYS="$dir/keys" JIANKANG_ACCESS_LOG=off JIANKANG_SECURITY=on
if [ "$backend" = postgresql ]; then
    db="${JK_TEST_PG_URL:?run under tools/with-pg.sh}"
else
    db="sqlite:$dir/db"
fi
./jiankang demo --db "$db" >/dev/null 2>&1
python3 bench/rx_queue_seed.py "$db" "$n"
./jiankang serve --listen "127.0.0.1:$port" --db "$db" >"$dir/out" 2>"$dir/err" &
server_pid=$!
until curl -sf "$url/healthz" >/dev/null 2>&1; do sleep 0.1; done
python3 - "$url" "$reqs" "$n" <<'PY'
import http.client, json, sys, time, urllib.parse
url, reqs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
host = urllib.parse.urlsplit(url)
c = http.client.HTTPConnection(host.hostname, host.port)
c.request("POST", "/auth/token", "grant_type=password&username=demo-rx-reviewer&password="
          "Jiankang-Reviewer-2025", {"Content-Type": "application/x-www-form-urlencoded"})
tok = json.loads(c.getresponse().read())["access_token"]
h = {"Authorization": "Bearer " + tok}
def get(path):
    t = time.perf_counter()
    c.request("GET", path, headers=h)
    r = c.getresponse()
    body = r.read()
    ms = (time.perf_counter() - t) * 1000
    assert r.status == 200, (r.status, body[:300])
    return ms, json.loads(body)
_, first = get("/api/rx/review-queue")
assert first["total"] >= n, first["total"]
deep = None
page = first
for _ in range(20):  # the cursor 20 pages in
    page = get("/api/rx/review-queue?after=" + urllib.parse.quote(page["next"]))[1]
deep = page["next"]
for name, path in (("oldest first, 50", "/api/rx/review-queue?limit=50"),
                   ("newest first, 50", "/api/rx/review-queue?order=newest&limit=50"),
                   ("page 21, 50", "/api/rx/review-queue?after=" + urllib.parse.quote(deep)),
                   ("oldest first, 200", "/api/rx/review-queue?limit=200")):
    for _ in range(10):
        get(path)
    t = sorted(get(path)[0] for _ in range(reqs))
    q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
    print("review queue (%d pending) %-18s p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms"
          % (first["total"], name + ":", q(0.5), q(0.9), q(0.99), t[-1]))
PY
