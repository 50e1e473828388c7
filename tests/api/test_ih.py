"""test_ih.py - online follow-up visits of the internet hospital as residents and doctors use
them, with security on: the gate refuses a first visit with a pointer to booking, an old
diagnosis, a junior doctor and a young child without a guardian, each with its rule as a
stable code; a recent in-person diagnosis opens a visit; an uploaded record waits for the
doctor's confirmation; text and image chat as Communications that only the patient, their
guardian and the visit's doctor read or write; a video room from the adapter; the doctor ends
the visit or sends the patient to in-person care, after which no message is taken; every
change is in the audit trail.

The module runs its own server on the demo region (`jiankang demo`: demo-resident is pat-1,
guardian of pat-5 who is under 6; demo-doctor is prac-1 of hosp-fz-1 with a practising licence
since 2008; pat-1 has a hypertension (I10) diagnosis recorded at hosp-fz-1 40 days ago)."""
import base64
import datetime
import json
import os

from run import FHIR, expect, expect_eq, expect_status, short, uniq
from test_auth import cli, cli_env, expect_token, form, login, rules_file
from test_booking import cli_run
from test_register import citizen_id

REFUSAL = "https://jiankang.example/fhir/CodeSystem/internet-hospital-refusal"
END_REASON = "https://jiankang.example/fhir/StructureDefinition/visit-end-reason"
BASIS = "https://jiankang.example/fhir/StructureDefinition/follow-up-basis"
LICENCE = "https://jiankang.example/fhir/CodeSystem/practitioner-qualification"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
CITIZEN = "urn:oid:2.16.156.10011.1.3"
CST = datetime.timezone(datetime.timedelta(hours=8))
PASSWORDS = {"demo-resident": "Jiankang-Resident-2025", "demo-nurse": "Jiankang-Nurse-2025",
             "demo-doctor": "Jiankang-Doctor-2025"}
OTHER_PW = "Visit-Other-User-2025!"
# the smallest PNG (1x1): what a phone camera sends, in miniature
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")).decode()
HTN = {"system": ICD10, "code": "I10", "display": "高血压"}


def days_ago(n):
    return (datetime.datetime.now(CST).date() - datetime.timedelta(days=n)).isoformat()


class Env:
    """The demo database with the server, a junior doctor of hosp-fz-1 (licensed a year ago),
    a doctor account of another hospital (prac-3), another real-name resident, and the
    tokens."""

    def __init__(self, t):
        self.t = t
        self.db = t.fresh_db_url("ih")
        self.tokens = {}
        r = cli_run(t, ["demo", "--db", self.db])
        expect_eq(r.returncode, 0, "jiankang demo: %s" % short(r.stderr.decode(), 600))
        self.sec = rules_file(t, "ih")
        with open(self.sec, encoding="utf-8") as f:
            doc = json.load(f)
        doc["rules"]["login.second_factor_roles"]["value"] = []  # the demo has no TOTP app
        with open(self.sec, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        self.srv = t.start_server("ih", self.db, env={"JIANKANG_SECURITY": "on",
                                                      "JIANKANG_SECURITY_RULES": self.sec})
        env = cli_env(self.sec)
        # a doctor of another hospital, and a resident with a real name of their own
        cli(t, env, self.db, "add", "ih-doctor-xm", "--role", "doctor", "--org",
            "Organization/hosp-xm-1", "--link", "PractitionerRole/prac-3-role", password=OTHER_PW)
        self.other_patient = self.patient()
        cli(t, env, self.db, "add", "ih-resident-b", "--role", "resident", "--link",
            "Patient/" + self.other_patient, password=OTHER_PW)
        PASSWORDS["ih-doctor-xm"] = PASSWORDS["ih-resident-b"] = OTHER_PW
        self.junior = self.doctor("ih-junior", days_ago(365))

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

    def put(self, res, what):
        r = self.call("PUT", "%s/%s/%s" % (FHIR, res["resourceType"], res["id"]), "demo-his", res)
        expect_status(r, (200, 201), what)
        return res["id"]

    def patient(self):
        pid, idn = uniq("ihp"), citizen_id()
        return self.put({"resourceType": "Patient", "id": pid, "name": [{"text": "复诊乙"}],
                         "birthDate": "%s-%s-%s" % (idn[6:10], idn[10:12], idn[12:14]),
                         "identifier": [{"system": CITIZEN, "value": idn}]}, "a patient")

    def doctor(self, name, licensed):
        """A Practitioner of hosp-fz-1 licensed on licensed, and their PractitionerRole."""
        pid = self.put({"resourceType": "Practitioner", "id": uniq(name), "active": True,
                        "name": [{"text": "新医生"}],
                        "qualification": [{"code": {"coding": [{"system": LICENCE,
                                                                "code": "practising-licence"}]},
                                           "period": {"start": licensed}}]}, "a practitioner")
        return self.put({"resourceType": "PractitionerRole", "id": uniq(name + "-role"),
                         "active": True, "practitioner": {"reference": "Practitioner/" + pid},
                         "organization": {"reference": "Organization/hosp-fz-1"}}, "a role")

    def condition(self, patient, code, recorded):
        """A confirmed diagnosis of patient recorded by prac-1 of hosp-fz-1 on recorded."""
        return self.put({"resourceType": "Condition", "id": uniq("ihc"),
                         "verificationStatus": {"coding": [{
                             "system": "http://terminology.hl7.org/CodeSystem/"
                                       "condition-ver-status", "code": "confirmed"}]},
                         "code": {"coding": [{"system": ICD10, "code": code}]},
                         "subject": {"reference": "Patient/" + patient},
                         "recorder": {"reference": "PractitionerRole/prac-1-role"},
                         "recordedDate": recorded}, "a diagnosis")

    def open(self, user="demo-resident", status=201, **body):
        body.setdefault("doctor", "PractitionerRole/prac-1-role")
        body.setdefault("condition", HTN)
        r = self.call("POST", "/api/ih/visits", user, body)
        expect_status(r, status, "%s opens a visit" % user)
        return r


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def refusal(r, status, rule, what):
    expect_status(r, status, what)
    issue = r.json["issue"][0]
    codes = [c.get("code") for c in issue.get("details", {}).get("coding", [])
             if c.get("system") == REFUSAL]
    expect_eq(codes, [rule], what + ": the rule")
    return issue["diagnostics"]


# ---- the gate ----

def test_first_visit_is_refused_with_where_to_book(t):
    e = env_of(t)
    r = e.open(condition={"system": ICD10, "code": "J45", "display": "哮喘"}, status=422)
    text = refusal(r, 422, "first-visit", "no diagnosis of asthma at all")
    expect("/api/slots" in text and "复诊" in text, "points to booking, in Chinese: %s" % text)
    r = e.srv.request("POST", "/api/ih/visits",
                      json.dumps({"doctor": "PractitionerRole/prac-1-role",
                                  "condition": {"code": "J45"}}).encode(),
                      dict(e.headers("demo-resident"), **{"Accept-Language": "en"}))
    expect("book an in-person visit" in refusal(r, 422, "first-visit", "in English"), "English")


def test_follow_up_with_a_recent_diagnosis_opens(t):
    e = env_of(t)
    v = e.open().json
    expect_eq((v["status"], v["patient"], v["doctor"], v["org"], v["condition"]["code"]),
              ("open", "Patient/pat-1", "PractitionerRole/prac-1-role", "Organization/hosp-fz-1",
               "I10"), "the visit")
    expect(v["basis"] in ("Condition/cond-pat1-htn", "Encounter/enc-pat1-htn"),
           "the demo's diagnosis is the basis: %s" % v["basis"])
    expect_eq(v["amountFen"], 1500, "the institution's fee (visit.fee_fen override)")
    expect("replyBy" in v, "a reply is due")
    enc = e.call("GET", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-doctor")
    expect_status(enc, 200, "the doctor reads the Encounter")
    enc = enc.json
    expect_eq((enc["status"], enc["class"]["code"], enc["subject"]["reference"],
               enc["serviceProvider"]["reference"]),
              ("in-progress", "VR", "Patient/pat-1", "Organization/hosp-fz-1"), "Encounter")
    ext = [x for x in enc.get("extension", []) if x["url"] == BASIS]
    expect_eq(ext[0]["valueReference"]["reference"], v["basis"], "the basis extension")
    q = e.call("GET", "/api/ih/visits", "demo-doctor")
    expect_status(q, 200, "the doctor's queue")
    expect(v["id"] in [x["id"] for x in q.json["visits"]], "the visit is in the queue")
    mine = e.call("GET", "/api/ih/visits", "demo-resident")
    expect(v["id"] in [x["id"] for x in mine.json["visits"]], "and in the resident's list")
    # a basis named by the patient counts too when it qualifies
    r = e.open(basis="Condition/cond-pat1-htn")
    expect_eq(r.json["basis"], "Condition/cond-pat1-htn", "the named basis")


def test_old_diagnosis_is_refused(t):
    e = env_of(t)
    e.condition("pat-1", "E11", days_ago(800))
    r = e.open(condition={"system": ICD10, "code": "E11"}, status=422)
    text = refusal(r, 422, "no-diagnosis", "a diabetes diagnosis 800 days old")
    expect("365" in text and "/api/slots" in text, "names the window and booking: %s" % text)
    cond = e.condition("pat-1", "E11", days_ago(10))
    v = e.open(condition={"system": ICD10, "code": "E11"}).json
    expect_eq(v["basis"], "Condition/" + cond, "a recent one counts")
    # a diagnosis made online is not a basis
    r = e.open(condition={"system": ICD10, "code": "E11"}, basis="Encounter/" + v["id"],
               status=422)
    refusal(r, 422, "no-diagnosis", "an online visit as the basis")


def test_uploaded_record_waits_for_the_doctor(t):
    e = env_of(t)
    k21 = {"system": ICD10, "code": "K21", "display": "胃食管反流"}
    r = e.open(condition=k21, record={"contentType": "image/png", "data": PNG,
                                      "title": "门诊病历"})
    v = r.json
    expect_eq(v["status"], "pending", "waits for the doctor")
    expect(v["basis"].startswith("DocumentReference/"), "the record is the basis")
    doc = e.call("GET", "%s/%s" % (FHIR, v["basis"]), "demo-doctor")
    expect_status(doc, 200, "the doctor reads the record")
    expect_eq(doc.json["content"][0]["attachment"]["data"], PNG, "stored as sent")
    expect_status(e.call("POST", "/api/ih/visits/%s/confirm" % v["id"], "demo-resident"), 403,
                  "the patient does not confirm")
    q = e.call("GET", "/api/ih/visits?status=pending", "demo-doctor")
    expect(v["id"] in [x["id"] for x in q.json["visits"]], "in the pending queue")
    r = e.call("POST", "/api/ih/visits/%s/confirm" % v["id"], "demo-doctor")
    expect_status(r, 200, "the doctor confirms")
    expect_eq(r.json["status"], "open", "open now")
    enc = e.call("GET", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-doctor").json
    expect_eq(enc["status"], "in-progress", "Encounter in progress")
    expect_eq([x["valueReference"]["reference"] for x in enc["extension"] if x["url"] == BASIS],
              [v["basis"]], "the confirmed record is the basis")
    expect_status(e.call("POST", "/api/ih/visits/%s/confirm" % v["id"], "demo-doctor"), 409,
                  "confirmed twice")
    bad = e.open(condition=k21, record={"contentType": "image/png", "data": "bm90IGEgcG5n"},
                 status=400)
    expect_eq(bad.json["issue"][0]["expression"], ["record"], "not a PNG")
    bad = e.open(condition=k21, record={"contentType": "text/html", "data": PNG}, status=400)
    expect_eq(bad.json["issue"][0]["expression"], ["record"], "not an allowed type")


def test_junior_doctor_is_refused(t):
    e = env_of(t)
    r = e.open(doctor="PractitionerRole/" + e.junior, status=422)
    text = refusal(r, 422, "doctor-unqualified", "licensed a year ago")
    expect("3" in text, "names the years: %s" % text)
    r = e.open(doctor="PractitionerRole/prac-3-role", status=422)
    refusal(r, 422, "doctor-unqualified", "the demo's junior prac-3")
    r = e.open(doctor="PractitionerRole/prac-2-role", status=422)
    refusal(r, 422, "doctor-unqualified", "a nurse has no practising licence")


def test_young_child_needs_a_guardian(t):
    e = env_of(t)
    e.condition("pat-5", "J45", days_ago(20))
    asthma = {"system": ICD10, "code": "J45"}
    r = e.open(patient="Patient/pat-5", condition=asthma, status=422)
    text = refusal(r, 422, "guardian-required", "a 3-year-old without a guardian")
    expect("6" in text, "names the age: %s" % text)
    r = e.open(patient="Patient/pat-5", condition=asthma, guardian="Patient/" + e.other_patient,
               status=422)
    refusal(r, 422, "guardian-required", "someone else named as guardian")
    v = e.open(patient="Patient/pat-5", condition=asthma, guardian="Patient/pat-1").json
    expect_eq((v["status"], v["guardian"]), ("open", "Patient/pat-1"), "with the guardian")
    v = e.open(patient="Patient/pat-5", condition=asthma,
               guardian="RelatedPerson/rp-pat1-for-pat5").json
    expect_eq(v["guardian"], "RelatedPerson/rp-pat1-for-pat5", "the child's RelatedPerson")
    enc = e.call("GET", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-doctor").json
    expect("RelatedPerson/rp-pat1-for-pat5" in json.dumps(enc["participant"]),
           "the guardian takes part in the Encounter")
    # nobody opens a visit for someone who is not theirs
    r = e.open(user="ih-resident-b", patient="Patient/pat-5", condition=asthma,
               guardian="Patient/" + e.other_patient, status=403)
    expect_status(e.open(user="demo-doctor", patient="Patient/pat-1", status=403), 403,
                  "a doctor does not open visits")


def test_bad_input(t):
    e = env_of(t)
    for body, expr in [({"condition": HTN}, "doctor"),
                       ({"doctor": "Practitioner/prac-1", "condition": HTN}, "doctor"),
                       ({"doctor": "PractitionerRole/prac-1-role"}, "condition"),
                       ({"doctor": "PractitionerRole/prac-1-role", "condition": {"system": ICD10}},
                        "condition.code"),
                       ({"doctor": "PractitionerRole/prac-1-role", "condition": HTN, "x": 1}, "x"),
                       ({"doctor": "PractitionerRole/nope", "condition": HTN}, "doctor"),
                       ({"doctor": "PractitionerRole/prac-1-role", "condition": HTN,
                         "basis": "Observation/o1"}, "basis")]:
        r = e.call("POST", "/api/ih/visits", "demo-resident", body)
        expect_status(r, 400, "bad body %s" % body)
        expect_eq(r.json["issue"][0].get("expression"), [expr], "names %s" % expr)
    expect_status(e.srv.request("POST", "/api/ih/visits", b"{}",
                                {"Content-Type": "application/json"}), 401, "no token")
    expect_status(e.call("GET", "/api/ih/visits/nope", "demo-resident"), 404, "unknown visit")
    expect_status(e.call("GET", "/api/ih/visits?status=lost", "demo-doctor"), 400, "bad status")


# ---- chat, video, end ----

def test_chat_video_end_and_access(t):
    e = env_of(t)
    v = e.open().json
    base = "/api/ih/visits/%s" % v["id"]
    r = e.call("POST", base + "/messages", "demo-resident", {"text": "最近血压 150/95，头晕"})
    expect_status(r, 201, "the patient writes")
    m = r.json
    expect_eq((m["resourceType"], m["sender"]["reference"], m["recipient"][0]["reference"],
               m["encounter"]["reference"], m["payload"][0]["contentString"]),
              ("Communication", "Patient/pat-1", "PractitionerRole/prac-1-role",
               "Encounter/" + v["id"], "最近血压 150/95，头晕"), "a Communication")
    r = e.call("POST", base + "/messages", "demo-doctor",
               {"image": {"contentType": "image/png", "data": PNG, "title": "血压记录表"}})
    expect_status(r, 201, "the doctor sends an image")
    expect_eq(r.json["payload"][0]["contentAttachment"]["data"], PNG, "the image")
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * (2 * 1024 * 1024)).decode()
    r = e.call("POST", base + "/messages", "demo-resident",
               {"image": {"contentType": "image/png", "data": big}})
    expect_status(r, 413, "an image past visit.image_max_bytes")
    expect_status(e.call("POST", base + "/messages", "demo-resident", {}), 400, "empty message")
    expect_status(e.call("POST", base + "/messages", "demo-resident",
                         {"text": "x", "image": {"contentType": "image/png", "data": PNG}}),
                  400, "both text and image")
    # video through the log adapter
    r = e.call("POST", base + "/video", "demo-doctor")
    expect_status(r, 201, "a video room")
    expect(r.json["url"].startswith("https://video.invalid/rooms/") and r.json["room"],
           "the log adapter's room: %s" % r.json)
    # who reads and writes
    for user in ("demo-resident", "demo-doctor"):
        r = e.call("GET", base + "/messages", user)
        expect_status(r, 200, "%s reads the chat" % user)
        entries = [x["resource"] for x in r.json["entry"]]
        expect_eq(len(entries), 3, "text, image and the video room")
        expect_eq(entries[0]["payload"][0].get("contentString"), "最近血压 150/95，头晕",
                  "oldest first")
        expect_eq(entries[2]["payload"][0]["contentAttachment"]["url"],
                  json.loads(json.dumps(entries[2]))["payload"][0]["contentAttachment"]["url"],
                  "the room is in the record")
    for user in ("ih-resident-b", "ih-doctor-xm", "demo-nurse", "demo-his"):
        expect_status(e.call("GET", base + "/messages", user), 403, "%s reads" % user)
        expect_status(e.call("POST", base + "/messages", user, {"text": "hello"}), 403,
                      "%s writes" % user)
        expect_status(e.call("GET", base, user), 403, "%s sees the visit" % user)
        expect_status(e.call("POST", base + "/video", user), 403, "%s opens video" % user)
    expect_status(e.call("POST", base + "/end", "demo-resident", {"outcome": "finished"}), 403,
                  "the patient does not end the visit")
    # the doctor sends the patient to in-person care
    expect_status(e.call("POST", base + "/end", "demo-doctor", {"outcome": "redirect"}), 400,
                  "a redirect needs a reason")
    r = e.call("POST", base + "/end", "demo-doctor",
               {"outcome": "redirect", "reason": "血压控制不佳伴头晕，需线下查体"})
    expect_status(r, 200, "redirected")
    expect_eq((r.json["status"], r.json["endReason"]),
              ("redirected", "血压控制不佳伴头晕，需线下查体"), "the visit")
    expect(r.json["book"].startswith("/api/slots?org=Organization/hosp-fz-1"), "where to book")
    enc = e.call("GET", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-resident")
    expect_status(enc, 200, "the patient reads the Encounter")
    enc = enc.json
    expect_eq(enc["status"], "cancelled", "Encounter cancelled")
    expect_eq([x["valueString"] for x in enc["extension"] if x["url"] == END_REASON],
              ["血压控制不佳伴头晕，需线下查体"], "the reason")
    expect("end" in enc["period"], "ended")
    r = e.call("POST", base + "/messages", "demo-resident", {"text": "还在吗？"})
    refusal(r, 422, "visit-ended", "a message after the end")
    refusal(e.call("POST", base + "/video", "demo-doctor"), 422, "visit-ended", "video after")
    expect_status(e.call("POST", base + "/end", "demo-doctor", {"outcome": "finished"}), 409,
                  "ended twice")
    q = e.call("GET", "/api/ih/visits", "demo-doctor").json["visits"]
    expect(v["id"] not in [x["id"] for x in q], "no longer in the queue")
    # a visit that simply finishes
    w = e.open().json
    r = e.call("POST", "/api/ih/visits/%s/end" % w["id"], "demo-doctor", {"outcome": "finished"})
    expect_eq(r.json["status"], "finished", "finished")
    enc = e.call("GET", "%s/Encounter/%s" % (FHIR, w["id"]), "demo-doctor").json
    expect_eq(enc["status"], "finished", "Encounter finished")


def test_audit_trail(t):
    e = env_of(t)
    v = e.open().json
    base = "/api/ih/visits/%s" % v["id"]
    expect_status(e.call("POST", base + "/messages", "demo-resident", {"text": "你好"}), 201, "")
    expect_status(e.call("POST", base + "/video", "demo-resident"), 201, "")
    expect_status(e.call("POST", base + "/end", "demo-doctor", {"outcome": "finished"}), 200, "")
    expect_status(e.call("GET", base + "/messages", "ih-resident-b"), 403, "")
    log = e.call("GET", "/api/me/access-log?limit=200", "demo-resident")
    expect_status(log, 200, "the resident's access log")
    acts = [(x["action"], x.get("resource_id"), x["outcome"]) for x in log.json["entries"]]
    for action, rid in (("ih-visit-open", v["id"]), ("ih-video", None), ("ih-message", None),
                        ("ih-visit-end", v["id"])):
        expect(any(a == action and (rid is None or r == rid) and o == "success"
                   for a, r, o in acts), "%s recorded: %s" % (action, short(str(acts), 800)))


def test_visit_record_changes_only_through_the_visit(t):
    e = env_of(t)
    v = e.open().json
    enc = e.call("GET", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-doctor").json
    r = e.call("PUT", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-doctor",
               dict(enc, status="finished"))
    expect_status(r, 422, "a plain update of the visit's Encounter")
    expect("/api/ih/visits" in r.json["issue"][0]["diagnostics"], "says how")
    msg = e.call("POST", "/api/ih/visits/%s/messages" % v["id"], "demo-resident",
                 {"text": "血压还是偏高"})
    expect_status(msg, 201, "a message")
    cid = msg.json["id"] if "id" in msg.json else msg.json["communication"].split("/")[-1]
    r = e.call("DELETE", "%s/Communication/%s" % (FHIR, cid), "demo-doctor")
    expect_status(r, 422, "deleting a message of the visit")
    again = e.call("GET", "%s/Encounter/%s" % (FHIR, v["id"]), "demo-doctor").json
    expect_eq(again["status"], "in-progress", "unchanged")
