"""test_shutdown.py - SIGTERM while writes are in flight: the server exits 0, and every write it
acknowledged with a 2xx is there after a restart on the same database."""
import http.client
import json
import signal
import threading
import time

from run import FHIR, Server, expect, expect_eq, patient, uniq

N_CLIENTS = 12
MIN_ACKED_BEFORE_SIGTERM = 60


def test_sigterm_during_writes_keeps_acknowledged_writes(t):
    srv = t.start_server("shutdown")
    system = "urn:jk:shutdown:" + uniq()
    lock = threading.Lock()
    acked = {}          # identifier value -> id, for each 2xx
    statuses = {}       # status -> count, for the report
    errors = []         # connection errors (expected once the server stops listening)
    stop = threading.Event()

    def client(i):
        k = 0
        keep_alive = i % 2 == 0  # half reuse a connection, half open one per request
        conn = None
        while not stop.is_set():
            value = "%02d-%04d" % (i, k)
            k += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
                conn.request("POST", FHIR + "/Patient", body=(
                    '{"resourceType":"Patient","identifier":[{"system":"%s","value":"%s"}]}'
                    % (system, value)).encode(), headers={"Content-Type": "application/fhir+json"})
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if 200 <= resp.status < 300:
                        acked[value] = json.loads(body)["id"]
                if not keep_alive or resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(type(e).__name__)
                if conn is not None:
                    conn.close()
                    conn = None
                if srv.proc.poll() is not None or stop.is_set():
                    break
                time.sleep(0.01)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(N_CLIENTS)]
    for th in threads:
        th.start()
    deadline = time.time() + 30
    while len(acked) < MIN_ACKED_BEFORE_SIGTERM and time.time() < deadline:
        time.sleep(0.005)
    n_before = len(acked)
    srv.signal(signal.SIGTERM)
    t_term = time.time()
    time.sleep(0.05)  # requests sent in these 50 ms meet a stopping server
    stop.set()
    rc = srv.wait(40)
    took = time.time() - t_term
    for th in threads:
        th.join(60)
    expect(n_before >= MIN_ACKED_BEFORE_SIGTERM, "only %d writes were acknowledged in 30 s "
           "before SIGTERM" % n_before)
    expect_eq(rc, 0, "exit code after SIGTERM with writes in flight (took %.1fs; log:\n%s\n)" % (
        took, srv.log_tail(15)))
    bad = {s: n for s, n in statuses.items() if s >= 500 and s != 503}
    expect(not bad, "writes during shutdown got server errors: %s" % bad)

    again = Server(t.binary, srv.db_url, t.workdir, "shutdown-restart", srv.env)
    t.extra.append(again)
    again.start()
    try:
        missing = []
        c = again.client()
        for value, rid in sorted(acked.items()):
            r = c.request("GET", "%s/Patient/%s" % (FHIR, rid))
            if r.status != 200 or r.json["identifier"][0]["value"] != value:
                missing.append("%s (%s): %d" % (rid, value, r.status))
        c.close()
        expect(not missing, "%d of %d acknowledged writes are lost after the restart, e.g. %s "
               "(statuses %s)" % (len(missing), len(acked), missing[:3], statuses))
    finally:
        rc2 = again.stop()
    expect_eq(rc2, 0, "exit code of the restarted server")
