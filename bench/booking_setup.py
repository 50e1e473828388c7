"""booking_setup.py - the data of bench/booking.sh, made through the API as the institutions'
systems make it: real-name Patients in transaction Bundles (as the hospital system demo-his),
departments, Schedules and $generate; the slots as a desk sees them. Standard library only.

  booking_setup.py patients URL N OUT            N Patients of hosp-fz-1, ids into OUT
  booking_setup.py burst URL DAY OPEN_MS OUT     the burst's department: 5 schedules of 20
                                                 slices of 10 on DAY only; the slot ids into OUT
  booking_setup.py find URL                      the find department: 16 slices a day (8 of
                                                 10 places, 8 of 4) for 7 days from tomorrow;
                                                 prints its HealthcareService id
  booking_setup.py token URL USER PASSWORD       a bearer token
  booking_setup.py sched PID OUT                 every 50 ms until killed, the CPU time of
                                                 each thread of PID and its time waiting for
                                                 a core (/proc schedstat) into OUT
  booking_setup.py window OUT FROM_MS TO_MS      from OUT: the CPU time and wait for a core of
                                                 the request threads and of the others
                                                 between the two instants
"""
import datetime
import json
import random
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

CITIZEN = "urn:oid:2.16.156.10011.1.3"
SESSION = "https://jiankang.example/fhir/StructureDefinition/schedule-session"
FEE = "https://jiankang.example/fhir/CodeSystem/fee-level"
CST = datetime.timezone(datetime.timedelta(hours=8))
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def call(url, method, path, token, body=None, form=None):
    data, headers = None, {}
    if token:
        headers["Authorization"] = "Bearer " + token
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode()
        headers["Content-Type"] = "application/fhir+json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    rq = urllib.request.Request(url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(rq, timeout=600) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def expect(status, want, what, answer):
    if status != want:
        sys.exit("booking_setup: %s: HTTP %d (expected %d): %s" % (what, status, want,
                                                                    str(answer)[:600]))


def token(url, user, password):
    if user == "demo-his":
        form = {"grant_type": "client_credentials", "client_id": user, "client_secret": password}
    else:
        form = {"grant_type": "password", "username": user, "password": password}
    status, r = call(url, "POST", "/auth/token", None, form=form)
    expect(status, 200, "token of " + user, r)
    return r["access_token"]


def his(url):
    return token(url, "demo-his", "Jiankang-HIS-Secret-2025")


def citizen_ids(n, rnd):
    """n distinct valid citizen ids (GB 11643), born 1940-1999 in Fuzhou."""
    out = set()
    while len(out) < n:
        body = "350102%04d%02d%02d%03d" % (rnd.randint(1940, 1999), rnd.randint(1, 12),
                                           rnd.randint(1, 28), rnd.randint(0, 999))
        out.add(body + "10X98765432"[sum(int(c) * w for c, w in zip(body, WEIGHTS)) % 11])
    return sorted(out)


def patients(url, n, out):
    tok = his(url)
    rnd = random.Random(7)
    ids = []
    numbers = citizen_ids(n, rnd)
    for k in range(0, n, 400):
        entries = []
        for i in range(k, min(n, k + 400)):
            pid, idn = "bkb-%05d" % i, numbers[i]
            entries.append({"fullUrl": "Patient/" + pid,
                            "request": {"method": "PUT", "url": "Patient/" + pid},
                            "resource": {"resourceType": "Patient", "id": pid,
                                         "name": [{"text": "压测%d" % i, "family": "压",
                                                   "given": ["测%d" % i]}],
                                         "identifier": [{"system": CITIZEN, "value": idn}],
                                         "birthDate": "%s-%s-%s" % (idn[6:10], idn[10:12],
                                                                    idn[12:14]),
                                         "gender": "male" if int(idn[16]) % 2 else "female"}})
            ids.append(pid)
        status, r = call(url, "POST", "/fhir/R4", tok, {"resourceType": "Bundle",
                                                        "type": "transaction", "entry": entries})
        expect(status, 200, "the patients' Bundle", r)
    with open(out, "w") as f:
        f.write("\n".join(ids) + "\n")


def session(days, start, end, minutes, per):
    ext = [{"url": "day", "valueCode": d} for d in days]
    ext += [{"url": "start", "valueTime": start + ":00"}, {"url": "end", "valueTime": end + ":00"},
            {"url": "sliceMinutes", "valuePositiveInt": minutes},
            {"url": "perSlice", "valuePositiveInt": per}]
    return {"url": SESSION, "extension": ext}


def department(url, tok, sid, name, fee="general"):
    hs = {"resourceType": "HealthcareService", "id": sid, "active": True,
          "providedBy": {"reference": "Organization/hosp-fz-1"}, "name": name,
          "characteristic": [{"coding": [{"system": FEE, "code": fee}]}]}
    status, r = call(url, "PUT", "/fhir/R4/HealthcareService/" + sid, tok, hs)
    expect(status, 201, "the department " + sid, r)


def schedule(url, tok, sid, service, sessions, through):
    s = {"resourceType": "Schedule", "id": sid, "active": True,
         "actor": [{"reference": "HealthcareService/" + service}], "extension": sessions}
    status, r = call(url, "PUT", "/fhir/R4/Schedule/" + sid, tok, s)
    expect(status, 201, "the schedule " + sid, r)
    status, r = call(url, "POST", "/fhir/R4/Schedule/%s/$generate" % sid, tok,
                     {"resourceType": "Parameters",
                      "parameter": [{"name": "through", "valueDate": through}]})
    expect(status, 200, "$generate " + sid, r)


def burst(url, day, open_ms, out):
    """1,000 places of the window channel on day, all opening at open_ms (the rules file of
    bench/booking.sh puts every place at the window and the release at that instant)."""
    tok = his(url)
    department(url, tok, "bench-burst", "压测内科")
    weekday = WEEKDAYS[datetime.date.fromisoformat(day).weekday()]
    for room in range(1, 6):  # five consulting rooms, 08:00-11:20 in 10-minute slices of 10
        schedule(url, tok, "bench-burst-%d" % room, "bench-burst",
                 [session([weekday], "08:00", "11:20", 10, 10)], day)
    nurse = token(url, "demo-nurse", "Jiankang-Nurse-2025")
    status, r = call(url, "GET", "/api/slots?service=HealthcareService/bench-burst&date=%s&days=1"
                     % day, nurse)
    expect(status, 200, "the burst's slots", r)
    slots = r["slots"]
    places = sum(s["capacity"] for s in slots)
    opens = {s.get("opens") for s in slots}
    want = datetime.datetime.fromtimestamp(int(open_ms) / 1000, datetime.timezone.utc)
    want = want.strftime("%Y-%m-%dT%H:%M:%S")
    if places != 1000 or any(s["remaining"] for s in slots) or len(opens) != 1 or \
            not list(opens)[0] or not list(opens)[0].startswith(want):
        sys.exit("booking_setup: the burst's slots are not 1,000 places opening at %s: %d "
                 "places in %d slots, opening %s" % (want, places, len(slots), sorted(opens)))
    with open(out, "w") as f:
        f.write("\n".join(s["slot"][len("Slot/"):] for s in slots) + "\n")


def find(url):
    tok = his(url)
    department(url, tok, "bench-find", "压测心内科", "expert")
    today = datetime.datetime.now(CST).date()
    through = (today + datetime.timedelta(days=7)).isoformat()
    schedule(url, tok, "bench-find-am", "bench-find",
             [session(WEEKDAYS, "08:00", "12:00", 30, 10)], through)
    schedule(url, tok, "bench-find-pm", "bench-find",
             [session(WEEKDAYS, "14:00", "18:00", 30, 4)], through)
    print("bench-find")


def sched(pid, out):
    with open(out, "w") as f:
        while True:
            row = ["%.0f" % (time.time() * 1000)]
            for tid in os.listdir("/proc/%s/task" % pid):
                try:
                    with open("/proc/%s/task/%s/comm" % (pid, tid)) as c:
                        comm = c.read().strip()
                    with open("/proc/%s/task/%s/schedstat" % (pid, tid)) as c:
                        cpu, wait = c.read().split()[:2]
                except OSError:
                    continue
                row.append("%s:%s:%s:%s" % (tid, comm, cpu, wait))
            f.write(" ".join(row) + "\n")
            f.flush()
            time.sleep(0.05)


def window(path, from_ms, to_ms):
    """Request threads are libmicrohttpd's (MHD-worker); the others are the store's (the
    SQLite writer, the PostgreSQL pool) and the background threads (sweeper, outbox)."""
    rows = []
    for line in open(path):
        f = line.split()
        rows.append((float(f[0]), {x.split(":")[0]: x.split(":")[1:] for x in f[1:]}))

    def at(ms):  # the last sample at or before ms
        best = rows[0]
        for r in rows:
            if r[0] <= ms:
                best = r
        return best
    a, b = at(float(from_ms)), at(float(to_ms))
    use = {}
    for tid, (comm, cpu, wait) in b[1].items():
        if tid in a[1]:
            use[tid] = (comm, (int(cpu) - int(a[1][tid][1])) / 1e9,
                        (int(wait) - int(a[1][tid][2])) / 1e9)
    store = [u for u in use.values() if u[0] != "MHD-worker"]
    workers = [u for u in use.values() if u[0] == "MHD-worker"]
    print("server threads over %.2f s: store and background %.2f s CPU, %.2f s waiting for a "
          "core; %d request threads %.2f s CPU, %.2f s waiting for a core" % (
              (b[0] - a[0]) / 1000, sum(u[1] for u in store), sum(u[2] for u in store),
              len(workers), sum(u[1] for u in workers), sum(u[2] for u in workers)))


def main(argv):
    what = argv[1]
    url = argv[2] if len(argv) > 2 else None
    if what == "patients":
        patients(url, int(argv[3]), argv[4])
    elif what == "burst":
        burst(url, argv[3], argv[4], argv[5])
    elif what == "find":
        find(url)
    elif what == "sched":
        sched(argv[2], argv[3])
    elif what == "window":
        window(argv[2], argv[3], argv[4])
    elif what == "token":
        print(token(url, argv[3], argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
