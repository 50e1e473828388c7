"""test_schedule.py - where slots come from, as institutions and regulators see it, with security
on: the demo's Schedules have their Slots (made by `jiankang demo` up to the rolling horizon),
searchable by schedule, at local times (UTC+8) and never on an exception day;
Schedule/$generate extends a Schedule's slots for the institution's administrator or system,
makes nothing new when run again, refuses other roles and other institutions, and refuses a bad
session template with an OperationOutcome naming the element; an exception added later closes
the free slots it covers; GET /api/booking/stats counts the places published per institution,
department and day and the share of specialist places bookable online, for an institution's
administrator (their own institution only) and for regulators (every institution); both are in
the audit trail.

Bookings by channel, cancellations and no-shows in the statistics need bookings, made through
the booking API: those numbers are checked where that API is tested."""
import datetime
import json
import os
import subprocess

from run import FHIR, ROOT, expect, expect_eq, expect_outcome, expect_status, short
from test_auth import cli, cli_env, expect_token, form, login, rules_file

SESSION = "https://jiankang.example/fhir/StructureDefinition/schedule-session"
EXCEPTION = "https://jiankang.example/fhir/StructureDefinition/schedule-exception"
CAPACITY = "https://jiankang.example/fhir/StructureDefinition/slot-capacity"
PASSWORDS = {"demo-institution-admin": "Jiankang-InstAdmin-2025",
             "demo-doctor": "Jiankang-Doctor-2025", "demo-resident": "Jiankang-Resident-2025",
             "demo-regulator": "Jiankang-Regulator-2025",
             "demo-platform-admin": "Jiankang-PlatformAdmin-2025",
             "chc-admin": "Chc-Gulou-Admin-2025!"}
WEEKDAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CST = datetime.timezone(datetime.timedelta(hours=8))


def booking_rules():
    with open(os.path.join(ROOT, "rules", "booking.json"), encoding="utf-8") as f:
        return {k: v["value"] for k, v in json.load(f)["rules"].items()}


RULES = booking_rules()
HOLIDAYS = {h["date"] for h in RULES["holiday.dates"]}


def split(capacity):
    """The places per channel of a slice: quota.percent by largest remainder, ties to the lower
    channel (window, online, phone, referral, family)."""
    order = ["window", "online", "phone", "referral", "family"]
    q = RULES["quota.percent"]
    counts = {ch: capacity * q[ch] // 100 for ch in order}
    rem = {ch: capacity * q[ch] % 100 for ch in order}
    while sum(counts.values()) < capacity:
        best = max(order, key=lambda ch: (rem[ch], -order.index(ch)))
        counts[best] += 1
        rem[best] = -1
    return counts


def online_share_places(capacity):
    """Places of a slice bookable online at some time: online ones and reserved ones (which
    return to the public before the slot)."""
    c = split(capacity)
    return c["online"] + sum(c[ch] for ch in RULES["reserve.channels"])


def today():
    return datetime.datetime.now(CST).date()


def session(days, start, end, slice_minutes, per):
    ext = [{"url": "day", "valueCode": d} for d in days]
    ext += [{"url": "start", "valueTime": start}, {"url": "end", "valueTime": end},
            {"url": "sliceMinutes", "valuePositiveInt": slice_minutes},
            {"url": "perSlice", "valuePositiveInt": per}]
    return {"url": SESSION, "extension": ext}


def exception(start, end, reason):
    return {"url": EXCEPTION, "extension": [
        {"url": "start", "valueDate": start}, {"url": "end", "valueDate": end},
        {"url": "reason", "valueString": reason}]}


def schedule(sid, service, exts, practitioner=None):
    actor = [{"reference": "HealthcareService/" + service}]
    if practitioner:
        actor.append({"reference": "Practitioner/" + practitioner})
    return {"resourceType": "Schedule", "id": sid, "active": True, "actor": actor, "extension": exts}


def slices(days_of_week, start, end, minutes, first, last):
    """Slices of a template (weekday codes, HH:MM) on the days first..last (dates), skipping
    public holidays: {date: count}."""
    (h0, m0), (h1, m1) = [map(int, x.split(":")) for x in (start, end)]
    per_day = ((h1 * 60 + m1) - (h0 * 60 + m0)) // minutes
    out, d = {}, first
    while d <= last:
        if WEEKDAYS[d.weekday()] in days_of_week and d.isoformat() not in HOLIDAYS:
            out[d.isoformat()] = per_day
        d += datetime.timedelta(days=1)
    return out


class Env:
    """The module's demo database, server and tokens (made once)."""

    def __init__(self, t):
        self.t = t
        self.db = t.fresh_db_url("schedule")
        r = subprocess.run([t.binary, "demo", "--db", self.db], capture_output=True, timeout=300,
                           env=dict(os.environ, JIANKANG_ACCESS_LOG="off"), cwd=ROOT,
                           stdin=subprocess.DEVNULL)
        expect_eq(r.returncode, 0, "jiankang demo (stderr: %s)" % short(r.stderr.decode(), 2000))
        expect("generated" in r.stdout.decode(), "demo says it generated slots: %s" % short(
            r.stdout.decode(), 2000))
        rules = rules_file(t, "schedule")
        with open(rules, encoding="utf-8") as f:
            doc = json.load(f)
        doc["rules"]["login.second_factor_roles"]["value"] = []  # the demo admins have no TOTP app
        with open(rules, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        cli(t, cli_env(rules), self.db, "add", "chc-admin", "--role", "institution-admin",
            "--org", "Organization/chc-fz-gulou", password=PASSWORDS["chc-admin"])
        self.srv = t.start_server("schedule", self.db, env={"JIANKANG_SECURITY": "on",
                                                            "JIANKANG_SECURITY_RULES": rules})
        self.tokens = {}

    def headers(self, user):
        if user not in self.tokens:
            if user == "demo-his":
                r = form(self.srv, "/auth/token", {"grant_type": "client_credentials",
                                                   "client_id": "demo-his",
                                                   "client_secret": "Jiankang-HIS-Secret-2025"})
            else:
                r = login(self.srv, user, PASSWORDS[user])
            self.tokens[user] = expect_token(r, "login " + user)["access_token"]
        return {"Authorization": "Bearer " + self.tokens[user],
                "Content-Type": "application/fhir+json"}

    def call(self, method, path, user, body=None):
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        return self.srv.request(method, path, data, self.headers(user))


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def generate(e, sid, user, through=None, status=200):
    body = None
    if through is not None:
        body = {"resourceType": "Parameters",
                "parameter": [{"name": "through", "valueDate": str(through)}]}
    r = e.call("POST", "%s/Schedule/%s/$generate" % (FHIR, sid), user, body)
    expect_status(r, status, "%s: $generate of %s" % (user, sid))
    if status != 200:
        return r
    expect_eq(r.json.get("resourceType"), "Parameters", "$generate answers Parameters")
    return {p["name"]: p.get("valueInteger", p.get("valueDate")) for p in r.json["parameter"]
            if "part" not in p}


def slots_of(e, sid, user="demo-doctor"):
    out, path = [], "%s/Slot?schedule=Schedule/%s&_count=500" % (FHIR, sid)
    while path:
        r = e.call("GET", path, user)
        expect_status(r, 200, "Slots of " + sid)
        out += [x["resource"] for x in r.json.get("entry", []) if x["search"]["mode"] == "match"]
        nxt = [link["url"] for link in r.json.get("link", []) if link["relation"] == "next"]
        path = nxt[0][nxt[0].index("/fhir/"):] if nxt else None
    return out


def horizon():
    return today() + datetime.timedelta(days=RULES["release.days_ahead"] + RULES["reserve.advance_days"])


def test_demo_slots_are_searchable_at_local_times(t):
    """The demo made the expert's slots up to the horizon: Tuesday and Thursday mornings, 30
    minutes, 3 places, at +08:00, none on its exception day (2026-12-03)."""
    e = env_of(t)
    got = slots_of(e, "sched-fz1-cardio-prac1")
    # a slice already started today is not made
    want = slices(["tue", "thu"], "08:00", "11:30", 30, today() + datetime.timedelta(days=1),
                  horizon())
    want.pop("2026-12-03", None)
    by_day = {}
    for s in got:
        by_day[s["start"][:10]] = by_day.get(s["start"][:10], 0) + 1
        expect(s["start"].endswith("+08:00") and s["end"].endswith("+08:00"),
               "local times: %s" % s["start"])
        expect_eq(s["id"], "sched-fz1-cardio-prac1-" + s["start"][:16].replace("-", "").replace(
            "T", "").replace(":", ""), "the Slot's id is its schedule and local start")
        expect_eq(s["status"], "free", "a new slot is free")
        cap = [x for x in s.get("extension", []) if x["url"] == CAPACITY]
        expect_eq(cap[0]["valuePositiveInt"] if cap else None, 3, "capacity")
    by_day.pop(today().isoformat(), None)
    expect_eq(by_day, want, "the expert's slots per day")
    expect("2026-12-03" not in by_day, "no slot on the exception day")


def test_generate_extends_once_for_the_institution_only(t):
    """The institution's administrator extends the general cardiology schedule 9 more days;
    the second run makes nothing; its system may too; a doctor, a resident, a regulator and
    another institution's administrator may not."""
    e = env_of(t)
    h = horizon()
    through = h + datetime.timedelta(days=9)
    am = slices(WEEKDAYS[:5], "08:00", "12:00", 15, h + datetime.timedelta(days=1), through)
    pm = slices(["mon", "wed", "fri"], "14:30", "17:00", 30, h + datetime.timedelta(days=1),
                through)
    out = generate(e, "sched-fz1-cardio", "demo-institution-admin", through)
    expect_eq(out.get("created"), sum(am.values()) + sum(pm.values()), "slots made past the horizon")
    expect_eq(out.get("through"), through.isoformat(), "through")
    expect_eq(out.get("closed"), 0, "nothing closed")
    expect_eq(generate(e, "sched-fz1-cardio", "demo-institution-admin", through)["created"], 0,
              "the second run makes nothing new")
    expect_eq(generate(e, "sched-fz1-cardio", "demo-his")["created"], 0,
              "the default is the horizon, made already")
    for user in ("demo-doctor", "demo-resident", "demo-regulator"):
        expect_outcome(generate(e, "sched-fz1-cardio", user, status=403), 403, "forbidden",
                       what=user + " generates")
    expect_outcome(generate(e, "sched-fz1-cardio", "chc-admin", status=403), 403, "forbidden",
                   what="another institution's administrator")
    out = generate(e, "sched-chc-gulou-gp", "chc-admin")
    expect_eq(out["created"], 0, "the community centre's own schedule (at its horizon)")
    expect_outcome(generate(e, "no-such-schedule", "demo-institution-admin", status=404), 404)
    r = generate(e, "sched-fz1-cardio", "demo-institution-admin", "2020-01-01", status=400)
    expect_outcome(r, 400, expression="Parameters.parameter")
    r = e.call("POST", FHIR + "/Schedule/sched-fz1-cardio/$generate", "demo-institution-admin",
               {"resourceType": "Parameters", "parameter": [{"name": "thru", "valueDate": "2026"}]})
    expect_outcome(r, 400, "invalid", "Parameters.parameter[0]")


def test_bad_template_is_refused_naming_the_element(t):
    """A slice longer than slot.max_minutes, an end before the start, no HealthcareService:
    400 with the element's path, and no slot made."""
    e = env_of(t)
    cases = [
        ([session(["mon"], "08:00:00", "12:00:00", RULES["slot.max_minutes"] + 15, 4)],
         "Schedule.extension[0].extension[3]", "business-rule"),
        ([exception("2026-12-24", "2026-12-25", "x"),
          session(["tue"], "12:00:00", "08:00:00", 15, 4)],
         "Schedule.extension[1].extension[2]", "value"),
        ([session(["wed"], "08:00:00", "12:00:00", 15, 0)],
         "Schedule.extension[0].extension[4]", None),
    ]
    for i, (exts, expr, code) in enumerate(cases):
        r = e.call("PUT", FHIR + "/Schedule/sched-bad", "demo-his",
                   schedule("sched-bad", "hs-fz1-cardio", exts))
        if r.status == 400:  # perSlice 0 is not a positiveInt: refused when stored already
            expect_outcome(r, 400, what="case %d stored" % i)
            continue
        expect_status(r, (200, 201), "the hospital's system stores the schedule (case %d)" % i)
        r = generate(e, "sched-bad", "demo-institution-admin", status=400)
        expect_outcome(r, 400, code, expr, what="case %d" % i)
    r = e.call("PUT", FHIR + "/Schedule/sched-bad", "demo-his",
               {"resourceType": "Schedule", "id": "sched-bad", "actor": [
                   {"reference": "Practitioner/prac-1"}]})
    expect_status(r, 200, "a schedule without its department")
    # The caller's institution cannot be known: refused before any write.
    expect_outcome(generate(e, "sched-bad", "demo-institution-admin", status=400), 400,
                   "required", "Schedule.actor")
    expect_eq(slots_of(e, "sched-bad"), [], "no slot of a bad schedule")


def test_exception_added_later_closes_free_slots(t):
    """The hospital system's own schedule: generated, then an exception for its first day closes
    that day's slots (busy-unavailable, with the reason) and leaves the others."""
    e = env_of(t)
    first = today() + datetime.timedelta(days=2)
    while first.isoformat() in HOLIDAYS or first.weekday() > 4:
        first += datetime.timedelta(days=1)
    days = [WEEKDAYS[first.weekday()]]
    exts = [session(days, "08:00:00", "09:00:00", 30, 2)]
    r = e.call("PUT", FHIR + "/Schedule/sched-leave", "demo-his",
               schedule("sched-leave", "hs-fz1-gastro", exts))
    expect_status(r, 201, "the hospital's system publishes a schedule")
    through = first + datetime.timedelta(days=7)
    out = generate(e, "sched-leave", "demo-institution-admin", through)
    expect_eq(out["created"], 4, "two weeks of one weekday, two slices each")
    exts.append(exception(first.isoformat(), first.isoformat(), "停诊"))
    r = e.call("PUT", FHIR + "/Schedule/sched-leave", "demo-his",
               schedule("sched-leave", "hs-fz1-gastro", exts))
    expect_status(r, 200, "the hospital's system adds an exception")
    out = generate(e, "sched-leave", "demo-institution-admin", through)
    expect_eq((out["created"], out["closed"]), (0, 2), "the exception day's two slots close")
    slots = {s["start"][:10]: s for s in slots_of(e, "sched-leave")}
    closed = slots[first.isoformat()]
    expect_eq(closed["status"], "busy-unavailable", "the closed Slot")
    expect_eq(closed.get("comment"), "停诊", "with the reason")
    expect_eq(slots[(first + datetime.timedelta(days=7)).isoformat()]["status"], "free",
              "the next week's slot stays")


def stats(e, user, query, status=200):
    r = e.call("GET", "/api/booking/stats?" + query, user)
    expect_status(r, status, "%s: stats %s" % (user, query))
    return r.json if status == 200 else r


def test_stats_published_and_specialist_online_share(t):
    """A Tuesday of the demo: per department, the places published; the expert's places
    bookable online over all of them; every institution for a regulator; an administrator
    sees their own institution only."""
    e = env_of(t)
    day = today() + datetime.timedelta(days=1)
    while WEEKDAYS[day.weekday()] != "tue" or day.isoformat() in HOLIDAYS or \
            day.isoformat() == "2026-12-03":
        day += datetime.timedelta(days=1)
    q = "org=hosp-fz-1&from=%s&to=%s" % (day, day)
    body = stats(e, "demo-institution-admin", q)
    rows = {r["service"]: r for r in body["rows"]}
    expect_eq(body["org"], "hosp-fz-1", "org")
    expect_eq(rows["hs-fz1-cardio"]["published"], 16 * 4, "general cardiology: 16 slices of 4")
    expect_eq(rows["hs-fz1-cardio-expert"]["published"], 7 * 3, "the expert: 7 slices of 3")
    expect_eq(rows["hs-fz1-ct"]["published"], 14 * 6, "CT: 14 slices of 6")
    expect("hs-fz1-gastro" not in rows, "no gastroenterology on Tuesdays")
    expert = rows["hs-fz1-cardio-expert"]
    expect_eq(expert["specialistPlaces"], 21, "every expert place is a specialist place")
    expect_eq(expert["specialistOnline"], 7 * online_share_places(3), "bookable online")
    expect_eq(expert["specialistOnlineShare"], round(online_share_places(3) / 3, 4), "share")
    expect_eq(rows["hs-fz1-cardio"]["specialistPlaces"], 0, "general places are not")
    expect_eq(rows["hs-fz1-cardio"]["specialistOnlineShare"], None, "no share without places")
    expect_eq(body["total"]["published"], 64 + 21 + 84, "the institution's total")
    expect_eq(body["total"]["bookedTotal"], 0, "nothing booked yet")
    for r in body["rows"]:
        expect_eq(sorted(r["booked"]), sorted(["window", "online", "phone", "referral", "family"]),
                  "booked by channel")
        expect_eq(r["day"], day.isoformat(), "day")
    # an administrator: their own institution by default, never another's
    expect_eq(stats(e, "demo-institution-admin", "from=%s&to=%s" % (day, day))["org"], "hosp-fz-1",
              "the default institution")
    expect_outcome(stats(e, "demo-institution-admin", "org=chc-fz-gulou", 403), 403, "forbidden")
    expect_outcome(stats(e, "demo-doctor", q, 403), 403, "forbidden")
    expect_outcome(stats(e, "demo-resident", q, 403), 403, "forbidden")
    # a regulator and the platform's administrator: every institution
    for user in ("demo-regulator", "demo-platform-admin"):
        body = stats(e, user, "from=%s&to=%s" % (day, day))
        orgs = {r["org"] for r in body["rows"]}
        expect(orgs >= {"hosp-fz-1", "chc-fz-gulou"}, "%s sees every institution: %s" % (user, orgs))
    expect_outcome(stats(e, "demo-regulator", "from=2026-13-01", 400), 400, "value", "from")
    expect_outcome(stats(e, "demo-regulator", "from=%s&to=%s" % (day, day - datetime.timedelta(
        days=1)), 400), 400, "value", "to")
    # both reads and the generations are in the audit trail
    r = e.call("GET", FHIR + "/AuditEvent?_count=500", "demo-regulator")
    expect_status(r, 200, "the regulator reads the trail")
    subtypes = {c.get("code") for x in r.json.get("entry", [])
                for c in x["resource"].get("subtype", [])}
    for want in ("booking-stats", "schedule-generate"):
        expect(want in subtypes, "the trail holds %s: %s" % (want, sorted(subtypes)))


def book(e, user, slot, patient):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "slot", "valueReference": {"reference": slot}},
        {"name": "patient", "valueReference": {"reference": patient}}]}
    r = e.call("POST", FHIR + "/Appointment/$book", user, body)
    expect_status(r, 201, "%s books %s for %s" % (user, slot, patient))
    return r.json


def test_stats_count_bookings_by_channel(t):
    """Two bookings of a day of general cardiology, one online by a resident and one at the
    window by a doctor, then the resident cancels: booked by channel, cancelled."""
    e = env_of(t)
    day = today() + datetime.timedelta(days=1)
    while day.weekday() > 4 or day.isoformat() in HOLIDAYS:
        day += datetime.timedelta(days=1)
    expect(day <= today() + datetime.timedelta(days=RULES["release.days_ahead"] - 1),
           "a weekday within the days open online")
    r = e.call("GET", "/api/slots?service=HealthcareService/hs-fz1-cardio&date=%s&days=1" % day,
               "demo-resident")
    expect_status(r, 200, "the resident finds slots")
    free = [s["slot"] for s in r.json["slots"] if s["remaining"] > 0]
    expect(len(free) >= 2, "slots with online places: %s" % short(r.body.decode(), 500))
    mine = book(e, "demo-resident", free[0], "Patient/pat-1")
    book(e, "demo-doctor", free[1], "Patient/pat-2")
    q = "org=hosp-fz-1&from=%s&to=%s" % (day, day)
    row = {x["service"]: x for x in stats(e, "demo-institution-admin", q)["rows"]}["hs-fz1-cardio"]
    expect_eq((row["booked"]["online"], row["booked"]["window"], row["bookedTotal"]), (1, 1, 2),
              "booked online and at the window")
    expect_eq((row["cancelled"], row["referralShare"]), (0, 0.0), "nothing cancelled or referred")
    r = e.call("POST", FHIR + "/Appointment/%s/$cancel" % mine["id"], "demo-resident",
               {"resourceType": "Parameters", "parameter": []})
    expect_status(r, 200, "the resident cancels")
    row = {x["service"]: x for x in stats(e, "demo-regulator", q)["rows"]}["hs-fz1-cardio"]
    expect_eq((row["booked"]["online"], row["bookedTotal"], row["cancelled"]), (0, 1, 1),
              "the cancellation counted, not the booking")
