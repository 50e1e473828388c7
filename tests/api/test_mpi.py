"""test_mpi.py - the master patient index: Patients written by different institutions under
their own numbers are linked to one golden person (by identity number; by name, birth date,
sex and phone when there is none), searching the person reaches every linked record, a
steward links, unlinks, merges and unmerges with full history, and Patient/$match grades
candidates and discloses only a certain, unique match to roles that are not stewards. Every
steward change is in the audit trail."""
import json
import os
import random
import subprocess

from run import FHIR, ROOT, expect, expect_eq, expect_outcome, expect_status, short, uniq
from test_protect import CITIZEN, mobile
from test_register import citizen_id


def idn_for(birth, sex):
    """A valid citizen ID of someone born on birth (YYYY-MM-DD) of sex."""
    return citizen_id(birth.replace("-", ""), male=sex == "male")

JSON = {"Content-Type": "application/json"}


def mrn_system(org):
    return "urn:jiankang:mrn:" + org


def person_patient(name, birth, sex, idn=None, phone=None, org="hosp-fz-1", city="福州市"):
    p = {"resourceType": "Patient",
         "identifier": [{"system": mrn_system(org), "value": uniq("mrn")}],
         "name": [{"text": name}], "birthDate": birth, "gender": sex,
         "address": [{"city": city}]}
    if idn:
        p["identifier"].append({"system": CITIZEN, "value": idn})
    if phone:
        p["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    return p


def random_birth():
    return "%04d-%02d-%02d" % (random.randint(1950, 2005), random.randint(1, 12),
                               random.randint(1, 28))


def person_of(srv_or_t, pid, headers=None):
    r = srv_or_t.request("GET", "/api/mpi/persons?patient=Patient/" + pid, headers=headers)
    expect_status(r, 200, "person of Patient/" + pid)
    return r.json


def linked(person):
    return sorted(r["patient"] for r in person["records"])


def post(t, path, body, status=200, headers=None):
    r = t.request("POST", path, json.dumps(body).encode(), dict(JSON, **(headers or {})))
    expect_status(r, status, "POST %s %s" % (path, short(json.dumps(body, ensure_ascii=False))))
    return r


def match(t, patient, headers=None, **params):
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient}]}
    if "only_certain" in params:
        body["parameter"].append({"name": "onlyCertainMatches",
                                  "valueBoolean": params["only_certain"]})
    h = {"Content-Type": "application/fhir+json"}
    h.update(headers or {})
    return t.request("POST", FHIR + "/Patient/$match", json.dumps(body).encode(), h)


def test_identity_number_links_records_of_two_institutions(t):
    """The same citizen ID at two hospitals, written in Simplified and Traditional characters:
    one person; a third record with another number is another person."""
    birth = random_birth()
    idn = idn_for(birth, "male")
    a, _ = t.create(person_patient("张伟", birth, "male", idn, org="hosp-fz-1"))
    b, _ = t.create(person_patient("張偉", birth, "male", idn, org="hosp-xm-1"))
    c, _ = t.create(person_patient("张伟", birth, "male", idn_for(birth, "male"),
                                   org="hosp-xm-1"))
    pa, pb, pc = person_of(t, a), person_of(t, b), person_of(t, c)
    expect_eq(pa["id"], pb["id"], "same identity number, same person")
    expect(pc["id"] != pa["id"], "a different identity number is a different person")
    rec = [r for r in pb["records"] if r["patient"] == "Patient/" + b][0]
    expect_eq((rec["state"], rec["how"]), ("match", "identity"), "linked by identity number")
    expect_eq(linked(pa), sorted(["Patient/" + a, "Patient/" + b]), "the person's records")


def test_demographics_link_records_without_an_identity_number(t):
    """Name (Simplified / Traditional / pinyin), birth date, sex and the same mobile number:
    certain enough to link without review."""
    birth, phone = random_birth(), mobile()
    name = random.choice(["刘芳", "陈静", "杨秀英", "黄丽"])
    a, _ = t.create(person_patient(name, birth, "female", phone=phone))
    b, _ = t.create(person_patient(name, birth, "female", phone=phone, org="hosp-xm-1"))
    expect_eq(person_of(t, a)["id"], person_of(t, b)["id"],
              "same name, birth date, sex and phone: one person")


def test_search_by_golden_person_reaches_every_linked_record(t):
    birth = random_birth()
    idn = idn_for(birth, "female")
    a, _ = t.create(person_patient("王芳", birth, "female", idn, org="hosp-fz-1"))
    b, _ = t.create(person_patient("王芳", birth, "female", idn, org="hosp-xm-1"))
    for pid in (a, b):
        t.create({"resourceType": "Observation", "status": "final",
                  "code": {"text": "血压"}, "subject": {"reference": "Patient/" + pid}})
    person = person_of(t, a)["id"]
    r = t.get("%s/Patient?empi=%s" % (FHIR, person))
    expect_status(r, 200, "Patient?empi=")
    expect_eq(sorted(e["resource"]["id"] for e in r.json.get("entry", [])), sorted([a, b]),
              "Patient?empi= finds both institutions' records")
    r = t.get("%s/Observation?patient.empi=%s" % (FHIR, person))
    expect_status(r, 200, "Observation?patient.empi=")
    expect_eq(sorted(e["resource"]["subject"]["reference"] for e in r.json.get("entry", [])),
              sorted(["Patient/" + a, "Patient/" + b]),
              "the person's observations from every institution")


def test_link_unlink_merge_unmerge_keep_history(t):
    """Two persons (different identity numbers) are merged, then unmerged: the previous links
    come back exactly; a record is unlinked into a person of its own and linked back."""
    birth = random_birth()
    idn1, idn2 = idn_for(birth, "female"), idn_for(birth, "female")
    a1, _ = t.create(person_patient("李娜", birth, "female", idn1))
    a2, _ = t.create(person_patient("李娜", birth, "female", idn1, org="hosp-xm-1"))
    b1, _ = t.create(person_patient("李娜", birth, "female", idn2, org="hosp-xm-1"))
    pa, pb = person_of(t, a1)["id"], person_of(t, b1)["id"]
    expect(pa != pb, "two identity numbers, two persons")
    before = (linked(person_of(t, a1)), linked(person_of(t, b1)))

    merged = post(t, "/api/mpi/merge", {"from": pb, "into": pa}).json
    expect_eq(merged["id"], pa, "merge answers with the surviving person")
    expect_eq(linked(merged), sorted(before[0] + before[1]), "merge moves every record")
    r = t.get("/api/mpi/persons/" + pb)
    expect_eq((r.json["status"], r.json["mergedInto"]), ("merged", pa), "the merged person")
    # the merged person's id still reaches its records
    r = t.get("%s/Patient?empi=%s" % (FHIR, pb))
    expect(b1 in [e["resource"]["id"] for e in r.json.get("entry", [])],
           "Patient?empi=<merged person> reaches the records through the survivor")
    post(t, "/api/mpi/merge", {"from": pb, "into": pa}, 409)  # merged already

    post(t, "/api/mpi/unmerge", {"person": pb})
    expect_eq((linked(person_of(t, a1)), linked(person_of(t, b1))), before,
              "unmerge restores the links as they were")
    expect_eq(t.get("/api/mpi/persons/" + pb).json["status"], "active", "unmerged is active")
    post(t, "/api/mpi/unmerge", {"person": pb}, 409)  # not merged

    unlinked = post(t, "/api/mpi/unlink", {"patient": "Patient/" + a2}).json
    expect_eq(linked(unlinked), ["Patient/" + a2], "unlink gives the record a person of its own")
    expect(unlinked["id"] not in (pa, pb), "a new person")
    expect_eq(linked(person_of(t, a1)), ["Patient/" + a1], "the old person keeps the rest")
    relinked = post(t, "/api/mpi/link", {"patient": "Patient/" + a2, "person": pa}).json
    expect_eq(linked(relinked), sorted(["Patient/" + a1, "Patient/" + a2]), "linked back")
    post(t, "/api/mpi/link", {"patient": "Patient/" + a2, "person": pa}, 409)  # already

    hist = t.get("/api/mpi/persons/%s/history" % pa).json["history"]
    actions = [h["action"] for h in hist]
    for want in ("merge", "unmerge", "unlink", "link"):
        expect(want in actions, "history of %s has %s: %s" % (pa, want, actions))
    # refusals name the field
    expect_outcome(t.request("POST", "/api/mpi/link", json.dumps(
        {"patient": "Patient/" + a1, "person": "no-such-person"}).encode(), JSON), 404,
        expression="person")
    expect_outcome(t.request("POST", "/api/mpi/merge", json.dumps(
        {"from": pa}).encode(), JSON), 400, expression="into")
    expect_outcome(t.request("POST", "/api/mpi/merge", b"{not json", JSON), 400)


def test_possible_match_is_queued_and_decided(t):
    """Same name and sex, a birth date one digit apart, another city, no phone on one: not
    certain enough to link, queued for review; a steward decides it."""
    birth = random_birth()
    d = int(birth[-1])
    other = birth[:-1] + str(d - 1 if d > 1 else d + 1)  # another day, one digit apart
    name = random.choice(["周杰", "吴磊", "郑浩"])
    a, _ = t.create(person_patient(name, birth, "male", phone=mobile(), city="福州市"))
    b, _ = t.create(person_patient(name, other, "male", org="hosp-xm-1", city="厦门市"))
    pa, pb = person_of(t, a)["id"], person_of(t, b)["id"]
    expect(pa != pb, "a possible match is not linked without review")
    reviews = t.get("/api/mpi/reviews").json["reviews"]
    mine = [r for r in reviews if r["patient"] == "Patient/" + b]
    expect(mine, "the pair is in the review queue: %s" % short(json.dumps(reviews), 600))
    expect_eq(mine[0]["person"], pa, "queued with the candidate person")
    expect(mine[0]["grade"] in ("possible", "probable"), "graded: %r" % mine[0]["grade"])
    expect_eq(mine[0]["patient_summary"]["birthDate"], other, "summary for the steward")
    post(t, "/api/mpi/reviews/decide", {"patient": "Patient/" + b, "person": pa,
                                        "decision": "link"})
    expect_eq(person_of(t, b)["id"], pa, "linked after review")
    expect(not [r for r in t.get("/api/mpi/reviews").json["reviews"]
                if r["patient"] == "Patient/" + b], "the decided review left the queue")
    post(t, "/api/mpi/reviews/decide", {"patient": "Patient/" + b, "person": pa,
                                        "decision": "link"}, 404)  # decided already
    post(t, "/api/mpi/reviews/decide", {"patient": "Patient/" + b, "person": pa,
                                        "decision": "maybe"}, 400)


def test_match_grades_candidates(t):
    birth, phone = random_birth(), mobile()
    idn = idn_for(birth, "female")
    a, _ = t.create(person_patient("赵敏", birth, "female", idn, phone))
    r = match(t, person_patient("趙敏", birth, "female", idn))
    expect_status(r, 200, "$match")
    b = r.json
    expect_eq((b["resourceType"], b["type"]), ("Bundle", "searchset"), "$match answers a Bundle")
    top = b["entry"][0]
    expect_eq(top["resource"]["id"], a, "the record with the same identity number comes first")
    grade = [x["valueCode"] for x in top["search"]["extension"]
             if x["url"].endswith("match-grade")]
    expect_eq(grade, ["certain"], "graded certain")
    expect(0.5 < top["search"]["score"] <= 1, "a score in (0.5, 1]: %r" % top["search"]["score"])
    person = [x["valueString"] for x in top["search"]["extension"]
              if x["url"].endswith("empi-person")]
    expect_eq(person, [person_of(t, a)["id"]], "the entry names its golden person")
    # without the identity number: name, birth date, sex and phone
    r = match(t, person_patient("Zhao Min", birth, "female", phone=phone))
    expect_status(r, 200, "$match by pinyin")
    expect(a in [e["resource"]["id"] for e in r.json.get("entry", []) if "resource" in e and
                 e["resource"]["resourceType"] == "Patient"], "found by pinyin spelling")
    # refusals
    expect_outcome(t.request("POST", FHIR + "/Patient/$match", json.dumps(
        {"resourceType": "Parameters", "parameter": [{"name": "count", "valueInteger": 0}]}
    ).encode(), {"Content-Type": "application/fhir+json"}), 400,
        expression="Parameters.parameter[0]")
    expect_outcome(t.request("POST", FHIR + "/Patient/$match", json.dumps(
        {"resourceType": "Parameters", "parameter": []}).encode(),
        {"Content-Type": "application/fhir+json"}), 400, expression="Parameters.parameter")


def test_disclosure_and_audit_with_security_on(t):
    """With security on: a doctor's $match shows only a certain, unique match; a steward sees
    every candidate; a resident may not match or use the steward API; steward changes are in
    the audit trail."""
    from test_auth import expect_token, form, login, rules_file
    db = t.fresh_db_url("mpi-sec")
    env = dict(os.environ, JIANKANG_ACCESS_LOG="off")
    r = subprocess.run([t.binary, "demo", "--db", db], capture_output=True, timeout=300,
                       env=env, cwd=ROOT, stdin=subprocess.DEVNULL)
    expect_eq(r.returncode, 0, "jiankang demo (stderr: %s)" % short(r.stderr.decode(), 2000))
    rules = rules_file(t, "mpi")
    with open(rules, encoding="utf-8") as f:
        doc = json.load(f)
    doc["rules"]["login.second_factor_roles"]["value"] = []  # the demo admin has no TOTP app
    with open(rules, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    srv = t.start_server("mpi-sec", db, env={"JIANKANG_SECURITY": "on",
                                             "JIANKANG_SECURITY_RULES": rules})
    try:
        def token(user, pw):
            return {"Authorization": "Bearer " +
                    expect_token(login(srv, user, pw), user)["access_token"]}
        doctor = token("demo-doctor", "Jiankang-Doctor-2025")
        admin = token("demo-institution-admin", "Jiankang-InstAdmin-2025")
        resident = token("demo-resident", "Jiankang-Resident-2025")
        birth = random_birth()
        his = form(srv, "/auth/token", {"grant_type": "client_credentials",
                                        "client_id": "demo-his",
                                        "client_secret": "Jiankang-HIS-Secret-2025"})
        his = {"Authorization": "Bearer " + expect_token(his, "system")["access_token"]}
        made = []
        # two people with the same name and birth date, nothing else (a name no demo Patient
        # has: the demo's 张伟 could be a candidate when the random birth date is near his)
        for _ in range(2):
            r = srv.request("POST", FHIR + "/Patient", json.dumps(person_patient(
                "赵建华", birth, "male", idn_for(birth, "male"))).encode(),
                dict(his, **{"Content-Type": "application/fhir+json"}))
            expect_status(r, 201, "the hospital system registers a patient")
            made.append(r.json["id"])
        probe = person_patient("赵建华", birth, "male")
        r = match(srv, probe, doctor)
        expect_status(r, 200, "doctor's $match")
        shown = [e for e in r.json.get("entry", []) if e["search"]["mode"] == "match"]
        expect_eq(shown, [], "two uncertain candidates: none disclosed to a doctor")
        expect([e for e in r.json["entry"] if e["search"]["mode"] == "outcome"],
               "the doctor is told candidates were withheld")
        r = match(srv, probe, admin)
        expect_status(r, 200, "steward's $match")
        got = sorted(e["resource"]["id"] for e in r.json.get("entry", [])
                     if e["search"]["mode"] == "match")
        expect_eq(got, sorted(made), "the steward sees every candidate")
        r = match(srv, person_patient("赵建华", birth, "male", idn=None), resident)
        expect_status(r, 403, "a resident may not search the person index")
        expect_status(srv.get("/api/mpi/reviews", resident), 403, "nor read its reviews")
        expect_status(srv.get("/api/mpi/reviews", doctor), 403, "nor a doctor")

        pa = person_of(srv, made[0], admin)["id"]
        pb = person_of(srv, made[1], admin)["id"]
        post(srv, "/api/mpi/merge", {"from": pb, "into": pa}, headers=admin)
        post(srv, "/api/mpi/unmerge", {"person": pb}, headers=admin)
        post(srv, "/api/mpi/merge", {"from": pb, "into": pa}, 403, headers=doctor)
        reg = token("demo-regulator", "Jiankang-Regulator-2025")
        r = srv.get(FHIR + "/AuditEvent?_count=200&patient=Patient/" + made[1], reg)
        expect_status(r, 200, "the regulator reads the trail")
        subtypes = [c.get("code") for e in r.json.get("entry", [])
                    for c in e["resource"].get("subtype", [])]
        for want in ("mpi-merge", "mpi-unmerge"):
            expect(want in subtypes, "the trail holds %s: %s" % (want, subtypes))
    finally:
        srv.stop()
