"""test_rx_flow.py - a prescription after the doctor signed it, end to end with security on, on
the demo region: the hospital pharmacist's review queue and decision (approve with a code shown
to the patient as text and QR, reject with coded reasons, never twice); nothing dispensed
before approval; the patient's choice of pharmacy; redemption of the code at that pharmacy
only; dispensing once, also when many pharmacy clients race for it; delivery orders step by
step with the address sealed; cancellation; an expired prescription refused; who may see and
do what between patient, doctor, reviewing pharmacist, the pharmacy and a pharmacy it was not
presented to; the regulator's supervision lists and the daily export; the audit trail.

Until the prescribing endpoint exists on this branch, prescriptions are written into
rx_prescription as the prescribing service writes them (sqlite3, or psql for PostgreSQL) and
their MedicationRequests through the FHIR API as the hospital's system (demo-his)."""
import datetime
import json
import os
import subprocess
import threading
import time

from run import FHIR, ROOT, expect, expect_eq, expect_status, uniq
from test_auth import expect_token, form, login, rules_file

CST = datetime.timezone(datetime.timedelta(hours=8))
REFUSAL = "https://jiankang.example/fhir/CodeSystem/internet-hospital-refusal"
GROUP = "https://jiankang.example/fhir/sid/prescription"
PASSWORDS = {"demo-resident": "Jiankang-Resident-2025", "demo-doctor": "Jiankang-Doctor-2025",
             "demo-rx-reviewer": "Jiankang-Reviewer-2025",
             "demo-pharmacy": "Jiankang-Pharmacy-2025",
             "demo-pharmacist": "Jiankang-Pharmacist-2025",
             "demo-regulator": "Jiankang-Regulator-2025", "demo-nurse": "Jiankang-Nurse-2025"}
DAY_MS = 86400000


def now_ms():
    return int(time.time() * 1000)


class Env:
    """The demo database (a hospital, its reviewing pharmacist, a pharmacy and its pharmacist)
    and a server with security on; the regulator logs in without a second factor here."""

    def __init__(self, t):
        self.t = t
        self.db = t.fresh_db_url("rxflow")
        self.tokens = {}
        r = subprocess.run([t.binary, "demo", "--db", self.db], capture_output=True, timeout=300,
                           cwd=ROOT, env=dict(os.environ, JIANKANG_ACCESS_LOG="off"),
                           stdin=subprocess.DEVNULL)
        expect_eq(r.returncode, 0, "jiankang demo: %s" % r.stderr[-500:])
        self.sec = rules_file(t, "rxflow")
        with open(self.sec, encoding="utf-8") as f:
            doc = json.load(f)
        doc["rules"]["login.second_factor_roles"]["value"] = []
        with open(self.sec, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        self.srv = t.start_server("rxflow", self.db, env={"JIANKANG_SECURITY": "on",
                                                          "JIANKANG_SECURITY_RULES": self.sec})

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
                "Content-Type": "application/json"}

    def call(self, method, path, user, body=None):
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        return self.srv.request(method, path, data, self.headers(user))

    def sql(self, text):
        if self.db.startswith("sqlite:"):
            import sqlite3
            c = sqlite3.connect(self.db[7:], timeout=30)
            c.executescript(text)
            c.commit()
            c.close()
            return
        psql = os.path.join(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"), "psql")
        r = subprocess.run([psql, self.db, "-v", "ON_ERROR_STOP=1", "-q", "-c", text],
                           capture_output=True, text=True, timeout=60)
        expect(r.returncode == 0, "psql: %s" % r.stderr)

    def prescription(self, n_items=2, created_ms=None, status="pending", extra=""):
        """A signed prescription of demo-doctor (prac-1-role, hosp-fz-1) for pat-1, with its
        draft MedicationRequests; its id."""
        rid = uniq("rx")
        visit = uniq("v")
        created = created_ms or now_ms()
        for i in range(n_items):
            mr = {"resourceType": "MedicationRequest", "status": "draft", "intent": "order",
                  "groupIdentifier": {"system": GROUP, "value": rid},
                  "medicationCodeableConcept": {"coding": [{
                      "system": "https://jiankang.example/fhir/sid/drug-code",
                      "code": "D%d" % i, "display": "药品%d" % i}]},
                  "subject": {"reference": "Patient/pat-1"},
                  "encounter": {"reference": "Encounter/" + visit},
                  "requester": {"reference": "PractitionerRole/prac-1-role"},
                  "dispenseRequest": {"quantity": {"value": 2},
                                      "expectedSupplyDuration": {"value": 7, "unit": "d"}}}
            expect_status(self.call("POST", FHIR + "/MedicationRequest", "demo-his", mr), 201,
                          "MedicationRequest")
        self.sql("INSERT INTO rx_prescription (id, visit_id, patient_id, person, doctor, org,"
                 " status, created_ms, digest, signature, warnings, amount_fen%s) VALUES ('%s',"
                 " '%s', 'pat-1', 'P-pat-1', 'prac-1-role', 'hosp-fz-1', '%s', %d, 'd', 's',"
                 " '[{\"code\":\"duplicate\",\"severity\":\"warn\"}]', 3150%s)"
                 % (", " + extra.split("=")[0] if extra else "", rid, visit, status, created,
                    ", " + extra.split("=", 1)[1] if extra else ""))
        return rid

    def review(self, rid, decision="approve", user="demo-rx-reviewer", status=200, **kw):
        body = dict(decision=decision, **kw)
        r = self.call("POST", "/api/rx/prescriptions/%s/review" % rid, user, body)
        expect_status(r, status, "review %s as %s" % (rid, user))
        return r

    def get(self, rid, user, status=200):
        r = self.call("GET", "/api/rx/prescriptions/" + rid, user)
        expect_status(r, status, "GET %s as %s" % (rid, user))
        return r.json


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def refusal(r, status, rule, what):
    expect_status(r, status, what)
    codes = [c.get("code") for i in r.json.get("issue", [])
             for c in i.get("details", {}).get("coding", []) if c.get("system") == REFUSAL]
    expect(rule in codes, "%s: expected the rule %s, got %s" % (what, rule, r.json))


def test_review_queue_and_decision(t):
    e = env_of(t)
    rid = e.prescription()
    # only pharmacists who review for the institution see the queue
    r = e.call("GET", "/api/rx/review-queue?order=newest&limit=200", "demo-rx-reviewer")
    expect_status(r, 200, "queue")
    mine = [p for p in r.json["prescriptions"] if p["id"] == rid]
    expect(len(mine) == 1, "the new prescription is in the queue")
    expect_eq(mine[0]["warnings"][0]["code"], "duplicate", "its findings")
    expect_eq(mine[0]["patient"], "Patient/pat-1", "its patient")
    expect(r.json["total"] >= 1, "a total")
    for user in ("demo-doctor", "demo-resident", "demo-nurse"):
        expect_status(e.call("GET", "/api/rx/review-queue", user), 403, "queue as " + user)
    for user in ("demo-pharmacist", "demo-pharmacy"):  # pharmacists of other institutions
        r = e.call("GET", "/api/rx/review-queue?limit=200", user)
        expect_status(r, 200, "queue as " + user)
        expect(all(p["id"] != rid for p in r.json["prescriptions"]), "not in their queue")
    expect_status(e.call("GET", "/api/rx/review-queue?limit=0", "demo-rx-reviewer"), 400, "limit")
    # nothing is dispensed before approval
    refusal(e.call("POST", "/api/rx/prescriptions/%s/pharmacy" % rid, "demo-resident",
                   {"pharmacy": "Organization/pharm-fz-1"}), 422, "not-reviewed", "choose early")
    expect_status(e.call("POST", "/api/rx/prescriptions/%s/dispense" % rid, "demo-pharmacy"), 403,
                  "dispense early")
    # a rejection names coded reasons of the rules
    r = e.review(rid, "reject", status=400)
    r = e.review(rid, "reject", codes=["9-9"], status=400)
    e.review(rid, "approve", user="demo-pharmacist", status=403)
    e.review(rid, "approve", user="demo-doctor", status=403)
    r = e.review(rid, "approve", text="用法用量适宜")
    expect_eq(r.json["status"], "approved", "approved")
    expect(r.json["review"]["turnaroundMs"] >= 0, "the turnaround is measured")
    refusal(e.review(rid, "reject", codes=["2-7"], status=409), 409, "already-reviewed",
            "a second decision")
    # the MedicationRequests are active, with a Provenance of the approval
    mrs = e.call("GET", FHIR + "/MedicationRequest?encounter=Encounter/" +
                 e.get(rid, "demo-doctor")["visit"].split("/")[1], "demo-his")
    expect_status(mrs, 200, "the requests")
    expect_eq(sorted(x["resource"]["status"] for x in mrs.json.get("entry", [])),
              ["active", "active"], "MedicationRequest.status")
    # reject another one with reasons
    rid2 = e.prescription(1)
    r = e.review(rid2, "reject", codes=["2-7", "1-11"], text="重复给药")
    expect_eq(r.json["status"], "rejected", "rejected")
    expect_eq([c["code"] for c in r.json["review"]["codes"]], ["2-7", "1-11"], "the codes")
    expect("display" in r.json["review"]["codes"][0], "the reason's text")
    refusal(e.call("POST", "/api/rx/prescriptions/%s/pharmacy" % rid2, "demo-resident",
                   {"pharmacy": "Organization/pharm-fz-1"}), 409, "rejected", "rejected: no pharmacy")


def test_code_pharmacy_and_dispense_once(t):
    e = env_of(t)
    rid = e.prescription(2)
    e.review(rid)
    # the patient sees the code as text and QR; nobody else does
    p = e.get(rid, "demo-resident")
    code = p.get("code")
    expect(code and len(code) == 12 and code.isdigit(), "a 12-digit code: %r" % code)
    expect(p.get("qrSvg", "").startswith("<svg"), "a QR code")
    expect_eq(p["payment"], "unpaid", "the payment interface has no provider")
    for user in ("demo-doctor", "demo-rx-reviewer"):
        expect("code" not in e.get(rid, user), "no code for " + user)
    # a pharmacy sees nothing that was not presented to it
    e.get(rid, "demo-pharmacy", 403)
    e.get(rid, "demo-nurse", 403)
    expect_status(e.call("POST", "/api/rx/prescriptions/%s/pharmacy" % rid, "demo-resident",
                         {"pharmacy": "Organization/region-350100"}), 400, "not a pharmacy")
    expect_status(e.call("POST", "/api/rx/prescriptions/%s/pharmacy" % rid, "demo-doctor",
                         {"pharmacy": "Organization/pharm-fz-1"}), 403, "the doctor chooses")
    r = e.call("POST", "/api/rx/prescriptions/%s/pharmacy" % rid, "demo-resident",
               {"pharmacy": "Organization/pharm-fz-1", "delivery": "pickup"})
    expect_status(r, 200, "choose")
    # another pharmacy cannot redeem the code; a wrong code is refused
    refusal(e.call("POST", "/api/rx/redeem", "demo-pharmacist", {"code": code}), 403,
            "other-pharmacy", "another pharmacy")
    expect_status(e.call("POST", "/api/rx/redeem", "demo-pharmacy", {"code": "12"}), 400, "short")
    expect_status(e.call("POST", "/api/rx/redeem", "demo-resident", {"code": code}), 403,
                  "a resident redeems")
    r = e.call("POST", "/api/rx/redeem", "demo-pharmacy", {"code": code[:4] + "-" + code[4:]})
    expect_status(r, 200, "redeem")
    expect_eq(r.json["id"], rid, "the prescription of the code")
    expect("code" not in r.json, "the pharmacy is not shown the code")
    expect(any(x["id"] == rid for x in e.call("GET", "/api/rx/prescriptions", "demo-pharmacy")
               .json["prescriptions"]), "in the pharmacy's list")
    e.get(rid, "demo-pharmacist", 403)
    # dispensing races: exactly one
    results = []

    def go():
        c = e.srv.client()
        try:
            resp = c.request("POST", "/api/rx/prescriptions/%s/dispense" % rid, None,
                             e.headers("demo-pharmacy"))
            results.append(resp.status)
        finally:
            c.close()
    threads = [threading.Thread(target=go) for _ in range(12)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    expect_eq(sorted(results), [200] + [409] * 11, "twelve pharmacy clients dispensing at once")
    refusal(e.call("POST", "/api/rx/prescriptions/%s/dispense" % rid, "demo-pharmacy"), 409,
            "dispensed", "dispensing twice")
    expect_eq(e.get(rid, "demo-resident")["status"], "dispensed", "dispensed")
    refusal(e.call("POST", "/api/rx/redeem", "demo-pharmacy", {"code": code}), 409, "dispensed",
            "the code after dispensing")
    expect_status(e.call("POST", "/api/rx/prescriptions/%s/cancel" % rid, "demo-resident"), 409,
                  "cancel after dispensing")


def test_delivery_and_cancel(t):
    e = env_of(t)
    rid = e.prescription(1)
    e.review(rid)
    path = "/api/rx/prescriptions/%s/" % rid
    expect_status(e.call("POST", path + "pharmacy", "demo-resident",
                         {"pharmacy": "Organization/pharm-fz-1", "delivery": "delivery"}), 400,
                  "delivery without an address")
    addr = "福建省福州市鼓楼区东街 8 号"
    expect_status(e.call("POST", path + "pharmacy", "demo-resident",
                         {"pharmacy": "Organization/pharm-fz-1", "delivery": "delivery",
                          "address": addr}), 200, "delivery")
    p = e.get(rid, "demo-pharmacy")  # the order presents it to the pharmacy
    expect_eq(p["deliveryOrder"]["status"], "requested", "the order")
    expect_eq(p["deliveryOrder"]["address"], addr, "the pharmacy sees the address")
    expect("address" not in e.get(rid, "demo-doctor").get("deliveryOrder", {}), "not the doctor")
    refusal(e.call("POST", path + "delivery", "demo-pharmacy", {"status": "packed"}), 422,
            "delivery-step", "a skipped step")
    expect_status(e.call("POST", path + "delivery", "demo-pharmacy", {"status": "accepted"}), 200,
                  "accepted")
    refusal(e.call("POST", path + "delivery", "demo-pharmacy", {"status": "packed"}), 422,
            "not-dispensed", "packed before dispensing")
    expect_status(e.call("POST", path + "dispense", "demo-pharmacy"), 200, "dispense")
    expect_status(e.call("POST", path + "delivery", "demo-pharmacist", {"status": "packed"}), 403,
                  "another pharmacy")
    expect_status(e.call("POST", path + "delivery", "demo-pharmacy", {"status": "packed"}), 200,
                  "packed")
    expect_status(e.call("POST", path + "delivery", "demo-pharmacy", {"status": "shipped"}), 400,
                  "shipped without a waybill")
    expect_status(e.call("POST", path + "delivery", "demo-pharmacy",
                         {"status": "shipped", "carrier": "顺丰速运", "waybill": "SF100200"}),
                  200, "shipped")
    for st in ("delivered", "signed"):
        expect_status(e.call("POST", path + "delivery", "demo-pharmacy", {"status": st}), 200, st)
    p = e.get(rid, "demo-resident")
    expect_eq([h["status"] for h in p["deliveryOrder"]["history"]],
              ["requested", "accepted", "packed", "shipped", "delivered", "signed"], "history")
    expect_eq(p["deliveryOrder"]["waybill"], "SF100200", "waybill")
    # the address is sealed at rest
    if e.db.startswith("sqlite:"):
        import sqlite3
        c = sqlite3.connect(e.db[7:], timeout=30)
        stored = c.execute("SELECT address_sealed FROM rx_delivery WHERE prescription_id = ?",
                           (rid,)).fetchone()[0]
        c.close()
        expect(addr.encode().hex() not in stored and "东街" not in stored, "sealed")
    # cancellation: the patient or the doctor, before dispensing; it releases the order
    rid2 = e.prescription(1)
    e.review(rid2)
    code = e.get(rid2, "demo-resident")["code"]
    expect_status(e.call("POST", "/api/rx/prescriptions/%s/cancel" % rid2, "demo-pharmacy"), 403,
                  "the pharmacy cancels")
    r = e.call("POST", "/api/rx/prescriptions/%s/cancel" % rid2, "demo-doctor",
               {"reason": "病情变化"})
    expect_status(r, 200, "the doctor cancels")
    expect_eq(r.json["status"], "cancelled", "cancelled")
    expect_status(e.call("POST", "/api/rx/redeem", "demo-pharmacy", {"code": code}), 404,
                  "a cancelled prescription's code")


def test_expired_refused(t):
    e = env_of(t)
    # a prescription too old to approve (its validity ended before review)
    old = e.prescription(1, created_ms=now_ms() - 5 * DAY_MS)
    refusal(e.review(old, status=422), 422, "expired", "approving an expired prescription")
    # an approved prescription presented to the pharmacy whose validity has ended: no job
    # needed for the refusal
    rid = e.prescription(1, created_ms=now_ms() - 5 * DAY_MS, status="approved",
                         extra="valid_until_ms, pharmacy, delivery, presented_ms, reviewer,"
                         " reviewed_ms=%d, 'pharm-fz-1', 'pickup', %d, 'PractitionerRole/"
                         "prac-7-role', %d" % (now_ms() - 1000, now_ms() - 2 * DAY_MS,
                                                now_ms() - 4 * DAY_MS))
    refusal(e.call("POST", "/api/rx/prescriptions/%s/dispense" % rid, "demo-pharmacy"), 422,
            "expired", "dispensing an expired prescription")
    refusal(e.call("POST", "/api/rx/prescriptions/%s/pharmacy" % rid, "demo-resident",
                   {"pharmacy": "Organization/pharm-fz-1"}), 422, "expired", "choosing")
    expect("code" not in e.get(rid, "demo-resident"), "no code once expired")


def test_supervision_and_export(t):
    e = env_of(t)
    rid = e.prescription(2)
    e.review(rid)
    today = datetime.datetime.now(CST).date().isoformat()
    r = e.call("GET", "/api/supervision/prescriptions?from=%s&to=%s" % (today, today),
               "demo-regulator")
    expect_status(r, 200, "supervision")
    row = [p for p in r.json["prescriptions"] if p["id"] == rid]
    expect(len(row) == 1, "the prescription is there")
    expect_eq(row[0]["outcome"], "approved", "outcome")
    expect_eq(row[0]["reviewer"], "PractitionerRole/prac-7-role", "reviewer")
    expect(row[0]["turnaroundMs"] >= 0, "turnaround")
    expect(r.json["turnaround"]["reviewed"] >= 1, "turnaround statistics")
    expect_status(e.call("GET", "/api/supervision/visits", "demo-regulator"), 200, "visits")
    for user in ("demo-resident", "demo-doctor", "demo-rx-reviewer"):
        expect_status(e.call("GET", "/api/supervision/prescriptions", user), 403, user)
    expect_status(e.call("GET", "/api/supervision/prescriptions?from=2026-13-01",
                         "demo-regulator"), 400, "a bad date")
    # the daily export for the provincial platform
    out = os.path.join(t.workdir, "supervision-%s.ndjson" % uniq("x"))
    r = subprocess.run([t.binary, "supervision", "export", "--date", today, "--db", e.db,
                        "--out", out], capture_output=True, timeout=120, cwd=ROOT,
                       env=dict(os.environ, JIANKANG_ACCESS_LOG="off"), stdin=subprocess.DEVNULL)
    expect_eq(r.returncode, 0, "export: %s" % r.stderr[-400:])
    with open(out, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    expect(any(x["kind"] == "prescription" and x["id"] == rid for x in rows), "exported")
    # every access is in the audit trail
    r = e.call("GET", FHIR + "/AuditEvent?_count=200", "demo-regulator")
    expect_status(r, 200, "the trail")
    subtypes = {s.get("code") for x in r.json.get("entry", [])
                for s in x["resource"].get("subtype", [])}
    for action in ("rx-review", "rx-queue", "supervision-read", "supervision-export"):
        expect(action in subtypes, "%s in the audit trail: %s" % (action, sorted(subtypes)))
