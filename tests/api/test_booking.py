"""test_booking.py - booking from the region's slot pool as residents, desks and institutions use
it, with security on: find with live remaining places; $hold and $book (for oneself or a ward,
never for someone else), an Appointment with its history; refusals that name the rule (one
booking per session, the per-department daily limit, a full slot) in Chinese and English; the
waiting list's offer after a cancellation; $reschedule; the desk's list, check-in and
completion; staff booking at their own window only; bad input answered with an
OperationOutcome naming the parameter; every change in the audit trail. And the races: 200
clients on 200 connections booking a slice of 10 places, and one resident booking from 30
connections at once: afterwards exactly the places are booked and the limits hold.

The module runs its own servers on the demo region (`jiankang demo`: demo-resident is pat-1,
guardian of pat-5) with a department and schedules of its own, generated for the next days."""
import datetime
import json
import os
import random
import threading

from run import FHIR, ROOT, Client, expect, expect_eq, expect_status, uniq
from test_auth import cli, cli_env, expect_token, form, login, rules_file
from test_register import citizen_id

REFUSAL = "https://jiankang.example/fhir/CodeSystem/booking-refusal"
SESSION = "https://jiankang.example/fhir/StructureDefinition/schedule-session"
CHANNEL = "https://jiankang.example/fhir/StructureDefinition/booking-channel"
CITIZEN = "urn:oid:2.16.156.10011.1.3"
CST = datetime.timezone(datetime.timedelta(hours=8))
PASSWORDS = {"demo-resident": "Jiankang-Resident-2025", "demo-nurse": "Jiankang-Nurse-2025",
             "demo-doctor": "Jiankang-Doctor-2025", "demo-regulator": "Jiankang-Regulator-2025",
             "demo-institution-admin": "Jiankang-InstAdmin-2025"}
RESIDENT_PW = "Booking-Resident-2025!"


def rules_with(t, name, **values):
    with open(os.path.join(ROOT, "rules", "booking.json"), encoding="utf-8") as f:
        doc = json.load(f)
    for k, v in values.items():
        doc["rules"][k.replace("__", ".")]["value"] = v
    path = os.path.join(t.workdir, "booking-%s.json" % name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    return path


def params(**kw):
    out = []
    for k, v in kw.items():
        if k in ("slot", "patient"):
            out.append({"name": k, "valueReference": {"reference": v}})
        else:
            out.append({"name": k, "valueString": str(v)})
    return {"resourceType": "Parameters", "parameter": out}


def session(start, end, minutes, per):
    ext = [{"url": "day", "valueCode": d} for d in ("mon", "tue", "wed", "thu", "fri", "sat",
                                                    "sun")]
    ext += [{"url": "start", "valueTime": start + ":00"}, {"url": "end", "valueTime": end + ":00"},
            {"url": "sliceMinutes", "valuePositiveInt": minutes},
            {"url": "perSlice", "valuePositiveInt": per}]
    return {"url": SESSION, "extension": ext}


class Env:
    """The demo database, a department of the module's own with a schedule (mornings and
    afternoons, 30-minute slices of 4: window 1, online 2, referral 1), residents and
    patients; the servers and tokens."""

    def __init__(self, t):
        self.t = t
        self.db = t.fresh_db_url("booking")
        self.tokens = {}
        r = cli_run(t, ["demo", "--db", self.db])
        expect_eq(r.returncode, 0, "jiankang demo")
        self.sec = rules_file(t, "booking")
        with open(self.sec, encoding="utf-8") as f:
            doc = json.load(f)
        doc["rules"]["login.second_factor_roles"]["value"] = []  # the demo has no TOTP app
        with open(self.sec, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        self.srv = t.start_server("booking", self.db, env={"JIANKANG_SECURITY": "on",
                                                           "JIANKANG_SECURITY_RULES": self.sec})
        self.service = self.make_service("hs-bk")
        self.make_schedule("sch-bk", self.service, [session("08:00", "12:00", 30, 4),
                                                    session("14:00", "17:00", 30, 4)])
        # three more residents with real names, for the waiting list
        self.residents = {}
        for name in ("bk-res-a", "bk-res-b", "bk-res-c"):
            pid = self.make_patients(1)[0]
            cli(t, cli_env(self.sec), self.db, "add", name, "--role", "resident", "--link",
                "Patient/" + pid, password=RESIDENT_PW)
            PASSWORDS[name] = RESIDENT_PW
            self.residents[name] = pid

    def headers(self, user, lang=None):
        if user not in self.tokens:
            if user == "demo-his":
                r = form(self.srv, "/auth/token", {"grant_type": "client_credentials",
                                                   "client_id": "demo-his",
                                                   "client_secret": "Jiankang-HIS-Secret-2025"})
            else:
                r = login(self.srv, user, PASSWORDS[user])
            self.tokens[user] = expect_token(r, "login " + user)["access_token"]
        h = {"Authorization": "Bearer " + self.tokens[user],
             "Content-Type": "application/fhir+json"}
        if lang:
            h["Accept-Language"] = lang
        return h

    def call(self, method, path, user, body=None, lang=None, srv=None):
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        return (srv or self.srv).request(method, path, data, self.headers(user, lang))

    def make_service(self, sid):
        hs = {"resourceType": "HealthcareService", "id": uniq(sid), "active": True,
              "providedBy": {"reference": "Organization/hosp-fz-1"}, "name": "预约测试科",
              "characteristic": [{"coding": [{
                  "system": "https://jiankang.example/fhir/CodeSystem/fee-level",
                  "code": "general"}]}]}
        r = self.call("PUT", "%s/HealthcareService/%s" % (FHIR, hs["id"]), "demo-his", hs)
        expect_status(r, 201, "the department")
        return hs["id"]

    def make_schedule(self, sid, service, sessions, srv=None):
        sid = uniq(sid)
        s = {"resourceType": "Schedule", "id": sid, "active": True,
             "actor": [{"reference": "HealthcareService/" + service}], "extension": sessions}
        expect_status(self.call("PUT", "%s/Schedule/%s" % (FHIR, sid), "demo-his", s, srv=srv),
                      201, "the schedule")
        through = (datetime.datetime.now(CST).date() + datetime.timedelta(days=6)).isoformat()
        r = self.call("POST", "%s/Schedule/%s/$generate" % (FHIR, sid), "demo-his",
                      {"resourceType": "Parameters",
                       "parameter": [{"name": "through", "valueDate": through}]}, srv=srv)
        expect_status(r, 200, "$generate")
        return sid

    def make_patients(self, n):
        """n Patients of hosp-fz-1 with citizen ids (real names), in one transaction."""
        ids = [uniq("bkp") for _ in range(n)]
        entries = [{"fullUrl": "Patient/" + pid, "request": {"method": "PUT",
                                                              "url": "Patient/" + pid},
                    "resource": {"resourceType": "Patient", "id": pid,
                                 "name": [{"text": "预约%d" % i, "family": "预",
                                           "given": ["约%d" % i]}],
                                 "identifier": [{"system": CITIZEN, "value": citizen_id()}]}}
                   for i, pid in enumerate(ids)]
        for p in entries:  # the birth date and sex the number implies
            idn = p["resource"]["identifier"][0]["value"]
            p["resource"]["birthDate"] = "%s-%s-%s" % (idn[6:10], idn[10:12], idn[12:14])
            p["resource"]["gender"] = "male" if int(idn[16]) % 2 else "female"
        r = self.call("POST", FHIR, "demo-his", {"resourceType": "Bundle", "type": "transaction",
                                                  "entry": entries})
        expect_status(r, 200, "the patients")
        return ids

    def slots(self, user="demo-resident", day=None, days=6, service=None, srv=None):
        q = "/api/slots?service=HealthcareService/%s&days=%d" % (service or self.service, days)
        if day:
            q += "&date=" + day
        r = self.call("GET", q, user, srv=srv)
        expect_status(r, 200, "find slots")
        return r.json["slots"]


def cli_run(t, args):
    import subprocess
    return subprocess.run([t.binary] + args, capture_output=True, timeout=300, cwd=ROOT,
                          env=dict(os.environ, JIANKANG_ACCESS_LOG="off"),
                          stdin=subprocess.DEVNULL)


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def day_slots(e, user="demo-resident"):
    """{day: [slots]} of the module's department, open slots only, from tomorrow."""
    tomorrow = (datetime.datetime.now(CST).date() + datetime.timedelta(days=1)).isoformat()
    out = {}
    for s in e.slots(user, day=tomorrow, days=5):
        if s["status"] == "open":
            out.setdefault(s["start"][:10], []).append(s)
    expect(len(out) >= 3, "slots on at least three days: %s" % sorted(out))
    return out


def local(s):
    return datetime.datetime.fromisoformat(s["start"].replace("Z", "+00:00")).astimezone(CST)


def book(e, user, slot, patient=None, status=201, lang=None, **kw):
    p = {"slot": slot}
    if patient:
        p["patient"] = patient
    p.update(kw)
    r = e.call("POST", FHIR + "/Appointment/$book", user, params(**p), lang=lang)
    expect_status(r, status, "%s books %s" % (user, slot))
    return r


def refusal(r, status, rule, what):
    expect_status(r, status, what)
    issue = r.json["issue"][0]
    codes = [c.get("code") for c in issue.get("details", {}).get("coding", [])
             if c.get("system") == REFUSAL]
    expect_eq(codes, [rule], what + ": the rule")
    return issue["diagnostics"]


# ---- booking, refusals, history ----

def test_find_book_refuse_and_cancel(t):
    e = env_of(t)
    days = day_slots(e)
    day = sorted(days)[1]  # more than a day ahead: the reserved place is not the public's yet
    am = [s for s in days[day] if local(s).hour < 12]
    pm = [s for s in days[day] if local(s).hour >= 14]
    expect_eq(am[0]["remaining"], 2, "online places of a slice of 4 (window 1, online 2, "
                                     "referral 1)")
    r = book(e, "demo-resident", am[0]["slot"])
    a = r.json
    expect_eq((a["resourceType"], a["status"]), ("Appointment", "booked"), "the Appointment")
    expect(r.header("Location") and a["id"] in r.header("Location"), "Location of the booking")
    expect_eq(a["slot"], [{"reference": am[0]["slot"]}], "its slot")
    expect_eq(a["participant"][0]["actor"]["reference"], "Patient/pat-1", "for the resident")
    expect_eq([x["valueCode"] for x in a["extension"] if x["url"] == CHANNEL], ["online"],
              "booked online")
    again = [s for s in e.slots(day=day, days=1) if s["slot"] == am[0]["slot"]][0]
    expect_eq((again["remaining"], again["booked"]), (1, 1), "the live count after a booking")
    mine = e.call("GET", "/api/booking/me", "demo-resident")
    expect_status(mine, 200, "my bookings")
    expect("Appointment/" + a["id"] in [b.get("appointment") for b in mine.json["bookings"]],
           "my bookings list it")
    # one booking per session, then one per department per day: refused naming the rule
    msg = refusal(book(e, "demo-resident", am[1]["slot"], status=422), 422,
                  "limit.session_scope", "a second booking in the session")
    expect("limit.session_scope" in msg and "取消" in msg, "in Chinese, naming the rule: " + msg)
    msg = refusal(book(e, "demo-resident", am[1]["slot"], status=422, lang="en"), 422,
                  "limit.session_scope", "in English")
    expect("one booking per session" in msg, msg)
    msg = refusal(book(e, "demo-resident", pm[0]["slot"], status=422), 422, "limit.counts",
                  "the afternoon of the same day and department")
    nxt = (datetime.date.fromisoformat(day) + datetime.timedelta(days=1)).isoformat()
    expect(nxt in msg, "says from when the resident may book again (%s): %s" % (nxt, msg))
    # someone else's patient: refused; a ward: allowed, with a hold first
    expect_status(book(e, "demo-resident", pm[0]["slot"], "Patient/pat-3", status=403), 403,
                  "for a stranger")
    h = e.call("POST", FHIR + "/Appointment/$hold", "demo-resident",
               params(slot=pm[0]["slot"], patient="Patient/pat-5"))
    expect_status(h, 201, "a hold for the ward")
    got = {p["name"]: p for p in h.json["parameter"]}
    expect(got["expires"]["valueInstant"] > datetime.datetime.utcnow().isoformat(), "expires later")
    ward = e.call("POST", FHIR + "/Appointment/$book", "demo-resident",
                  params(hold=got["hold"]["valueString"]))
    expect_status(ward, 201, "the ward's hold booked")
    expect_eq(ward.json["participant"][0]["actor"]["reference"], "Patient/pat-5", "the ward's")
    # cancel: the place comes back, the Appointment keeps its history
    c = e.call("POST", "%s/Appointment/%s/$cancel" % (FHIR, a["id"]), "demo-resident",
               params(reason="身体好了"))
    expect_status(c, 200, "cancel")
    expect_eq(c.json["status"], "cancelled", "cancelled")
    hist = e.call("GET", "%s/Appointment/%s/_history" % (FHIR, a["id"]), "demo-resident")
    expect_status(hist, 200, "history")
    expect_eq(sorted(x["resource"]["status"] for x in hist.json["entry"]),
              ["booked", "cancelled"], "both versions")
    back = [s for s in e.slots(day=day, days=1) if s["slot"] == am[0]["slot"]][0]
    expect_eq(back["remaining"], 2, "the place is back")
    expect_status(e.call("POST", "%s/Appointment/%s/$cancel" % (FHIR, a["id"]), "demo-resident"),
                  409, "cancelled twice")
    # the changes are in the audit trail the resident reads
    log = e.call("GET", "/api/me/access-log?limit=100", "demo-resident")
    expect_status(log, 200, "access log")
    text = json.dumps(log.json, ensure_ascii=False)
    expect("booking-book" in text and "booking-cancel" in text, "booked and cancelled recorded")


def test_bad_input(t):
    e = env_of(t)
    slot = day_slots(e)[sorted(day_slots(e))[0]][0]["slot"]
    r = e.call("POST", FHIR + "/Appointment/$book", "demo-resident",
               {"resourceType": "Parameters", "parameter": []})
    expect_status(r, 400, "no slot")
    expect_eq(r.json["issue"][0]["expression"], ["slot"], "names the parameter")
    expect_status(book(e, "demo-resident", "Slot/nope", status=404), 404, "unknown slot")
    r = e.call("POST", FHIR + "/Appointment/$book", "demo-resident", {"resourceType": "Patient"})
    expect_status(r, 400, "not Parameters")
    r = book(e, "demo-resident", slot, channel="window", status=403)
    r = book(e, "demo-nurse", slot, "Patient/pat-2", channel="carrier-pigeon", status=400)
    expect_eq(r.json["issue"][0]["expression"], ["channel"], "names the channel")
    expect_status(e.srv.request("POST", FHIR + "/Appointment/$book",
                                json.dumps(params(slot=slot)).encode(),
                                {"Content-Type": "application/fhir+json"}), 401, "no token")
    expect_status(e.call("POST", FHIR + "/Appointment/$hold", "demo-resident", None), 400,
                  "no body")
    expect_status(e.call("GET", "/api/slots", "demo-resident"), 400, "find without a key")
    expect_status(e.call("GET", "/api/slots?service=HealthcareService/%s&days=99" % e.service,
                         "demo-resident"), 400, "too many days")
    expect_status(e.call("POST", FHIR + "/Appointment/nope/$cancel", "demo-resident"), 404,
                  "an unknown appointment")
    expect(e.srv.is_alive(), "the server is up")


# ---- waiting list ----

def test_full_slot_waiting_list_offer(t):
    e = env_of(t)
    day = sorted(day_slots(e))[2]
    slot = [s for s in day_slots(e)[day] if local(s).hour == 9][0]["slot"]
    a = book(e, "bk-res-a", slot).json
    book(e, "bk-res-b", slot)
    refusal(book(e, "bk-res-c", slot, status=409), 409, "full", "the third online booking")
    w = e.call("POST", "/api/booking/waitlist", "bk-res-c", params(slot=slot))
    expect_status(w, 201, "joins the waiting list")
    expect_status(e.call("POST", "/api/booking/waitlist", "bk-res-c", params(slot=slot)), 409,
                  "joins twice")
    expect_status(e.call("POST", "%s/Appointment/%s/$cancel" % (FHIR, a["id"]), "bk-res-a"), 200,
                  "a cancels")
    mine = e.call("GET", "/api/booking/me", "bk-res-c").json["bookings"]
    held = [b for b in mine if b["state"] == "held" and b["slot"] == slot]
    expect_eq(len(held), 1, "the place is held for c: %s" % mine)
    # nobody else can take it meanwhile; c books it with the hold
    refusal(book(e, "bk-res-a", slot, status=409), 409, "full", "a tries again")
    r = e.call("POST", FHIR + "/Appointment/$book", "bk-res-c", params(hold=held[0]["hold"]))
    expect_status(r, 201, "c books the offer")


# ---- reschedule, desk ----

def test_reschedule_and_desk(t):
    e = env_of(t)
    days = day_slots(e)
    d1, d2 = sorted(days)[3], sorted(days)[4]
    pid = e.make_patients(1)[0]
    a = book(e, "demo-nurse", days[d1][0]["slot"], "Patient/" + pid).json
    expect_eq([x["valueCode"] for x in a["extension"] if x["url"] == CHANNEL], ["window"],
              "a nurse books at her institution's window")
    r = e.call("POST", "%s/Appointment/%s/$reschedule" % (FHIR, a["id"]), "demo-nurse",
               params(slot=days[d2][0]["slot"]))
    expect_status(r, 200, "moved")
    expect_eq((r.json["id"], r.json["slot"][0]["reference"], r.json["meta"]["versionId"]),
              (a["id"], days[d2][0]["slot"], "2"), "the same Appointment, a new version")
    expect_status(e.call("POST", "%s/Appointment/%s/$checkin" % (FHIR, a["id"]), "demo-resident"),
                  403, "a resident does not check in others")
    desk = e.call("GET", "/api/booking/desk?date=" + d2, "demo-nurse")
    expect_status(desk, 200, "the desk's day")
    mine = [b for b in desk.json["bookings"] if b.get("appointment") == "Appointment/" + a["id"]]
    expect_eq(len(mine), 1, "on the desk's list")
    expect(mine[0].get("name", "").startswith("预约"), "with the patient's name: %s" % mine[0])
    r = e.call("POST", "%s/Appointment/%s/$checkin" % (FHIR, a["id"]), "demo-nurse")
    expect_status(r, 200, "checked in")
    expect_eq(r.json["status"], "arrived", "arrived")
    r = e.call("POST", "%s/Appointment/%s/$complete" % (FHIR, a["id"]), "demo-doctor")
    expect_eq((r.status, r.json.get("status")), (200, "fulfilled"), "the visit fulfilled")
    expect_status(e.call("POST", "%s/Appointment/%s/$cancel" % (FHIR, a["id"]), "demo-nurse"),
                  409, "a fulfilled visit cannot be cancelled")


# ---- races ----

def race(e, n, make_request):
    """n threads, each on its own connection, released together; their statuses."""
    gate = threading.Barrier(n)
    out = [None] * n

    def run(i):
        c = Client(e.srv.port)
        method, path, body, headers = make_request(i)
        data = json.dumps(body).encode()
        gate.wait()
        try:
            out[i] = c.request(method, path, data, headers).status
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return out


def test_race_200_clients_for_10_places(t):
    e = env_of(t)
    # a department whose slices have 10 places, all at the window (a rules file of its own)
    rules = rules_with(t, "race", quota__percent={"window": 100, "online": 0, "phone": 0,
                                                  "referral": 0, "family": 0})
    srv = t.start_server("booking-race", e.db, env={"JIANKANG_SECURITY": "on",
                                                    "JIANKANG_SECURITY_RULES": e.sec,
                                                    "JIANKANG_BOOKING_RULES": rules})
    service = e.make_service("hs-race")
    e.make_schedule("sch-race", service, [session("10:00", "10:30", 30, 10)], srv=srv)
    tomorrow = (datetime.datetime.now(CST).date() + datetime.timedelta(days=2)).isoformat()
    found = [s for s in e.slots("demo-nurse", day=tomorrow, days=3, service=service, srv=srv)
             if s["status"] == "open"]
    expect(found, "race slots")
    slot = found[0]["slot"]
    expect_eq((found[0]["capacity"], found[0]["remaining"]), (10, 10), "10 window places")
    patients = e.make_patients(200)
    h = e.headers("demo-nurse")
    statuses = race(e, 200, lambda i: ("POST", FHIR + "/Appointment/$book",
                                       params(slot=slot, patient="Patient/" + patients[i]), h))
    expect_eq(statuses.count(201), 10, "exactly the places booked: %s" % sorted(set(statuses)))
    expect_eq(statuses.count(409), 190, "the rest refused as full")
    after = [s for s in e.slots("demo-nurse", day=found[0]["start"][:10], days=1,
                                service=service, srv=srv) if s["slot"] == slot][0]
    expect_eq((after["booked"], after["remaining"]), (10, 0), "the slot's counts")
    r = e.call("GET", "%s/%s" % (FHIR, slot), "demo-nurse")
    expect_eq(r.json["status"], "busy", "the Slot resource says busy")
    srv.stop()


def test_race_one_resident_many_connections(t):
    e = env_of(t)
    days = day_slots(e)
    pid = random.choice(list(e.residents.values()))
    user = [u for u, p in e.residents.items() if p == pid][0]
    day = sorted(days)[4]
    am = [s["slot"] for s in days[day] if local(s).hour < 12 and s["remaining"] > 0]
    expect(len(am) >= 4, "morning slices with places")
    h = e.headers(user)
    statuses = race(e, 30, lambda i: ("POST", FHIR + "/Appointment/$book",
                                      params(slot=am[i % len(am)]), h))
    expect_eq(statuses.count(201), 1, "one booking per session: %s" % statuses)
    expect(set(statuses) <= {201, 409, 422}, "refusals, never errors: %s" % set(statuses))
    mine = e.call("GET", "/api/booking/me", user).json["bookings"]
    expect_eq(len([b for b in mine if b["state"] == "booked" and b["start"][:10] == day]), 1,
              "one booked that day")


def test_pool_records_change_only_through_the_pool(t):
    e = env_of(t)
    days = day_slots(e)
    slot = days[sorted(days)[2]][-1]
    pid = e.make_patients(1)[0]
    a = book(e, "demo-nurse", slot["slot"], "Patient/" + pid).json
    changed = dict(a, status="cancelled")
    for method, path, body in (("PUT", "%s/Appointment/%s" % (FHIR, a["id"]), changed),
                               ("DELETE", "%s/Appointment/%s" % (FHIR, a["id"]), None),
                               ("DELETE", "%s/%s" % (FHIR, slot["slot"]), None)):
        r = e.call(method, path, "demo-his", body)
        expect_status(r, 422, "%s %s outside the pool" % (method, path))
        expect("$" in r.json["issue"][0]["diagnostics"], "says how: %s" % r.json["issue"][0])
    r = e.call("GET", "%s/Appointment/%s" % (FHIR, a["id"]), "demo-nurse")
    expect_eq((r.json["status"], r.json["meta"]["versionId"]), ("booked", "1"), "unchanged")


def test_statistics_count_bookings_by_channel(t):
    e = env_of(t)
    service = e.make_service("hs-stats")
    e.make_schedule("sch-stats", service, [session("08:00", "09:00", 30, 4)])
    days = {}
    for s in e.slots(day=(datetime.datetime.now(CST).date() + datetime.timedelta(days=2))
                     .isoformat(), days=3, service=service):
        days.setdefault(s["start"][:10], []).append(s)
    day = sorted(days)[0]
    first, second = days[day][0]["slot"], days[day][1]["slot"]
    book(e, "bk-res-a", first)
    book(e, "demo-nurse", first, "Patient/" + e.make_patients(1)[0])
    gone = book(e, "bk-res-b", second).json
    expect_status(e.call("POST", "%s/Appointment/%s/$cancel" % (FHIR, gone["id"]), "bk-res-b"),
                  200, "cancel")
    r = e.call("GET", "/api/booking/stats?org=hosp-fz-1&from=%s&to=%s" % (day, day),
               "demo-regulator")
    expect_status(r, 200, "the statistics")
    local_day = datetime.datetime.fromisoformat(days[day][0]["start"].replace("Z", "+00:00"))
    row = [x for x in r.json["rows"] if x["service"].endswith(service)]
    expect_eq(len(row), 1, "one row for the department and day (%s): %s" % (local_day, r.json))
    row = row[0]
    expect_eq((row["booked"]["online"], row["booked"]["window"], row["bookedTotal"],
               row["cancelled"], row["published"]), (1, 1, 2, 1, 8),
              "booked by channel, cancelled, published")


def test_institution_admin_publishes_a_schedule_residents_read(t):
    e = env_of(t)
    sid = uniq("sch-admin")
    s = {"resourceType": "Schedule", "id": sid, "active": True,
         "actor": [{"reference": "HealthcareService/" + e.service}],
         "extension": [session("18:00", "19:00", 30, 2)]}
    r = e.call("PUT", "%s/Schedule/%s" % (FHIR, sid), "demo-institution-admin", s)
    expect_status(r, 201, "an institution's administrator publishes a schedule")
    expect_status(e.call("GET", "%s/Schedule/%s" % (FHIR, sid), "demo-resident"), 200,
                  "residents read schedules (directory data)")
    r = e.call("POST", "%s/Schedule/%s/$generate" % (FHIR, sid), "demo-institution-admin")
    expect_status(r, 200, "and generates its slots")
    other = uniq("sch-other")
    s = dict(s, id=other, actor=[{"reference": "HealthcareService/hs-chc-gulou-gp"}])
    expect_status(e.call("PUT", "%s/Schedule/%s" % (FHIR, other), "demo-institution-admin", s),
                  201, "stored")
    expect_status(e.call("POST", "%s/Schedule/%s/$generate" % (FHIR, other),
                         "demo-institution-admin"), 403,
                  "but no slots for another institution's department")
