"""test_protect.py - identity numbers and phone numbers protected at rest: a client writes a
Patient with a citizen ID and a mobile number and reads them back; finds the Patient by
identifier (system|value and value alone), by telecom and by phone; conditional create and
conditional references by identifier find it again; the raw database files never hold the
numbers in clear (their bytes are searched), nor does the server log; a sealed value changed in
the database reads as ****, never as an error; `demo` and `import` seal too. Masking per role
per role: with security on, each role sees them whole or masked as the access rules say (the
main test server runs with security off, which shows them whole)."""
import json
import os
import random
import re
import subprocess
from urllib.parse import quote

from run import FHIR, ROOT, Skip, expect, expect_eq, expect_outcome, expect_status, short, uniq
from test_import import run_import, summary_counts, workdir, write_ndjson

CITIZEN = "urn:oid:2.16.156.10011.1.3"
PASSPORT = "https://jiankang.example/fhir/sid/passport"
MRN = "urn:jiankang:mrn:hosp-fz-1"
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def citizen_id(area="350102"):
    """A random citizen ID number with a valid GB 11643 check character, of a woman (an even
    sequence number) as the Patients here are."""
    body = "%s%04d%02d%02d%03d" % (area, random.randint(1940, 2020), random.randint(1, 12),
                                   random.randint(1, 28), 2 * random.randint(0, 499))
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, WEIGHTS)) % 11]


def mobile():
    return "139%08d" % random.randint(0, 99999999)


def masked(value, first, last):
    return value[:first] + "*" * (len(value) - first - last) + value[-last:]


def expect_shown(got, clear, first, last, what):
    """A number in a response: clear, or masked as the rules say (which one depends on the
    reader's role); never the sealed marker."""
    expect(got in (clear, masked(clear, first, last)),
           "%s: expected %r or its masked form %r, got %r" % (
               what, clear, masked(clear, first, last), got))


def patient_with(idn, phone, mrn):
    return {"resourceType": "Patient",
            "identifier": [{"system": CITIZEN, "value": idn}, {"system": MRN, "value": mrn}],
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"},
                        {"system": "email", "value": mrn + "@example.cn"}],
            "name": [{"family": "林", "given": ["小梅"]}], "gender": "female"}


def search_ids(srv, query):
    r = srv.get("%s/Patient?%s" % (FHIR, query))
    expect_status(r, 200, "search " + query)
    expect("jkenc:" not in r.body.decode("utf-8", "replace"), "search %s: a sealed value "
           "reached the client" % query)
    return [e["resource"]["id"] for e in r.json.get("entry", [])]


def q(*pairs):
    return "&".join("%s=%s" % (k, quote(v, safe="")) for k, v in pairs)


# ---- the raw database ----

def psql(url, sql):
    pgbin = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
    r = subprocess.run([os.path.join(pgbin, "psql"), url, "-At", "-v", "ON_ERROR_STOP=1", "-c",
                        sql], capture_output=True, text=True, timeout=60, cwd="/")
    expect(r.returncode == 0, "psql %s: %s" % (sql, r.stderr.strip()))
    return r.stdout.strip()


def raw_files(db_url):
    """The files that hold the database: SQLite's file and its WAL; PostgreSQL's relation
    files of this database after a CHECKPOINT (so the rows are on disk, not only in the WAL)."""
    if db_url.startswith("sqlite:"):
        path = db_url[len("sqlite:"):]
        return [p for p in (path, path + "-wal") if os.path.exists(p)]
    psql(db_url, "CHECKPOINT")
    data = psql(db_url, "SHOW data_directory")
    oid = psql(db_url, "SELECT oid FROM pg_database WHERE datname = current_database()")
    base = os.path.join(data, "base", oid)
    try:
        return [os.path.join(base, f) for f in os.listdir(base)]
    except OSError as e:
        raise Skip("cannot read PostgreSQL's files in %s: %s" % (base, e))


def expect_raw_bytes(db_url, secrets, present, what):
    """secrets (ASCII) appear in no byte of the database files; present (a control value
    written in clear alongside) does, so the files searched are the right ones."""
    files = raw_files(db_url)
    expect(files, "%s: no database files for %s" % (what, db_url))
    found_present = False
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise Skip("cannot read %s: %s" % (path, e))
        for s in secrets:
            expect(s.encode() not in data, "%s: %s holds %r in clear" % (what, path, s))
        found_present = found_present or present.encode() in data
    expect(found_present, "%s: the control value %r is in none of %s: the search is blind" % (
        what, present, files))


def stored_body(db_url, rid):
    sql = ("SELECT body FROM resource_version WHERE type = 'Patient' AND id = '%s' "
           "AND is_current = 1" % rid)
    if db_url.startswith("sqlite:"):
        import sqlite3
        with sqlite3.connect(db_url[len("sqlite:"):], timeout=30) as c:
            return c.execute(sql).fetchone()[0]
    return psql(db_url, sql)


def replace_in_store(db_url, rid, old, new):
    sql = ("UPDATE resource_version SET body = replace(body, '%s', '%s') WHERE type = 'Patient' "
           "AND id = '%s' AND is_current = 1" % (old, new, rid))
    if db_url.startswith("sqlite:"):
        import sqlite3
        with sqlite3.connect(db_url[len("sqlite:"):], timeout=30) as c:
            c.execute(sql)
    else:
        psql(db_url, sql)


def server_log(srv):
    text = ""
    for path in srv.logs:
        with open(path, "rb") as f:
            text += f.read().decode("utf-8", "replace")
    return text


# ---- tests ----

def test_numbers_sealed_at_rest_found_by_search_and_never_logged(t):
    # A server of its own: a small database to search byte by byte, and every log line on.
    srv = t.start_server("protect", env={"JIANKANG_LOG_LEVEL": "debug",
                                         "JIANKANG_ACCESS_LOG": "on"})
    try:
        idn, phone, mrn = citizen_id(), mobile(), uniq("mrn")
        sent = patient_with(idn, phone, mrn)
        r = srv.request("POST", FHIR + "/Patient", sent)
        expect_status(r, 201, "create")
        rid = r.json["id"]
        for resp in (r, srv.get("%s/Patient/%s" % (FHIR, rid))):
            body = resp.json
            expect_shown(body["identifier"][0]["value"], idn, 6, 4, "Patient.identifier[0]")
            expect_shown(body["telecom"][0]["value"], phone, 3, 4, "Patient.telecom[0]")
            expect_eq(body["identifier"][1]["value"], mrn, "an MRN is not an identity number")
            expect_eq(body["telecom"][1]["value"], mrn + "@example.cn", "an email is kept")
            expect("jkenc:" not in resp.body.decode(), "a sealed value reached the client")
        # Until responses choose the view by role, every reader sees the numbers as sent.
        expect_eq(body["identifier"][0]["value"], idn, "read: the citizen ID")
        expect_eq(body["telecom"][0]["value"], phone, "read: the phone")

        # Found by identifier, however the number is typed; not by another number.
        expect_eq(search_ids(srv, q(("identifier", CITIZEN + "|" + idn))), [rid], "system|value")
        expect_eq(search_ids(srv, q(("identifier", idn))), [rid], "value alone")
        spaced = "%s %s %s" % (idn[:6], idn[6:14], idn[14:].lower())
        expect_eq(search_ids(srv, q(("identifier", spaced))), [rid], "value with spaces")
        wrong = idn[:-2] + ("0" if idn[-2] != "0" else "1") + idn[-1]
        expect_eq(search_ids(srv, q(("identifier", CITIZEN + "|" + wrong))), [], "another number")
        expect_eq(search_ids(srv, q(("identifier", PASSPORT + "|" + idn))), [], "another system")
        expect_eq(search_ids(srv, q(("identifier", MRN + "|" + mrn))), [rid], "the MRN")
        expect_eq(search_ids(srv, q(("telecom", phone))), [rid], "telecom")
        expect_eq(search_ids(srv, q(("phone", phone))), [rid], "phone")
        expect_eq(search_ids(srv, q(("phone", mobile()))), [], "another phone")
        expect_eq(search_ids(srv, q(("phone", idn))), [], "an ID number is no phone")

        # Conditional create and update by identifier find it again.
        cond = "identifier=" + quote(CITIZEN + "|" + idn, safe="")
        r = srv.request("POST", FHIR + "/Patient", sent, {"If-None-Exist": cond})
        expect_status(r, 200, "conditional create of an existing patient")
        expect_eq(r.json["id"], rid, "conditional create: the existing id")
        upd = dict(sent, active=True)
        r = srv.request("PUT", "%s/Patient?%s" % (FHIR, cond), upd)
        expect_status(r, 200, "conditional update")
        expect_eq(r.json["id"], rid, "conditional update: the same patient")
        # A transaction: ifNoneExist by identifier, and a conditional reference to it.
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": sent, "request": {"method": "POST", "url": "Patient",
                                           "ifNoneExist": "identifier=%s|%s" % (CITIZEN, idn)}},
            {"resource": {"resourceType": "Observation", "status": "final",
                          "code": {"text": "体温"},
                          "subject": {"reference": "Patient?identifier=%s|%s" % (CITIZEN, idn)}},
             "request": {"method": "POST", "url": "Observation"}}]}
        r = srv.request("POST", FHIR, bundle)
        expect_status(r, 200, "transaction")
        entries = r.json["entry"]
        expect_eq(entries[0]["response"]["status"][:3], "200", "ifNoneExist finds the patient")
        m = re.search(r"/fhir/R4/Observation/([^/]+)/_history/", entries[1]["response"]["location"])
        expect(m, "transaction: Observation location %r" % entries[1]["response"]["location"])
        obs = srv.get("%s/Observation/%s" % (FHIR, m.group(1)))
        expect_eq(obs.json["subject"]["reference"], "Patient/" + rid, "conditional reference")

        # PATCH works on the clear values: a test of the number, a new phone.
        phone2 = mobile()
        r = srv.request("PATCH", "%s/Patient/%s" % (FHIR, rid), [
            {"op": "test", "path": "/identifier/0/value", "value": idn},
            {"op": "replace", "path": "/telecom/0/value", "value": phone2}],
            {"Content-Type": "application/json-patch+json"})
        expect_status(r, 200, "patch")
        expect_shown(r.json["telecom"][0]["value"], phone2, 3, 4, "patched phone")
        expect_eq(search_ids(srv, q(("phone", phone2))), [rid], "the patched phone")

        # Nobody can plant a sealed value, or send a masked number back as the number.
        planted = patient_with(stored_body(srv.db_url, rid).split('"value":"')[1].split('"')[0],
                               mobile(), uniq("mrn"))
        expect(planted["identifier"][0]["value"].startswith("jkenc:1:id:"),
               "the stored identifier is a marker: %s" % short(planted["identifier"][0]["value"]))
        expect_outcome(srv.request("POST", FHIR + "/Patient", planted), 400, "value",
                       "Patient.identifier[0].value", "a marker sent as a value")
        back = patient_with(masked(idn, 6, 4), mobile(), uniq("mrn"))
        expect_outcome(srv.request("PUT", "%s/Patient/%s" % (FHIR, rid), dict(back, id=rid)),
                       400, "value", "Patient.identifier[0].value", "a masked number sent back")

        # The raw database: neither number in clear, old phone included; the MRN is.
        expect_raw_bytes(srv.db_url, [idn, phone, phone2], mrn, "database files")

        # A sealed value changed in the database reads as ****, and is logged, not a 5xx.
        body = stored_body(srv.db_url, rid)
        marker = body.split('"value":"')[1].split('"')[0]
        tampered = marker[:-3] + ("AAA" if marker[-3:] != "AAA" else "BBB")
        replace_in_store(srv.db_url, rid, marker, tampered)
        r = srv.get("%s/Patient/%s" % (FHIR, rid))
        expect_status(r, 200, "read of a tampered patient")
        expect_eq(r.json["identifier"][0]["value"], "****", "a tampered identity number")
        expect_shown(r.json["telecom"][0]["value"], phone2, 3, 4, "the phone still opens")
    finally:
        srv.stop()
    log = server_log(srv)
    expect("did not open" in log, "the tampered value must be logged: %s" % short(log[-2000:]))
    expect('"module":"access"' in log, "the access log was on: %s" % short(log[-500:]))
    for s in (idn, phone, phone2, idn[:6] + " " + idn[6:14]):
        expect(s not in log, "the server log holds %r" % s)


def test_demo_patients_have_sealed_citizen_ids(t):
    db = t.fresh_db_url("protect-demo")
    env = dict(os.environ, JIANKANG_ACCESS_LOG="off")
    r = subprocess.run([t.binary, "demo", "--db", db], capture_output=True, timeout=300, env=env,
                       cwd=ROOT, stdin=subprocess.DEVNULL)
    expect_eq(r.returncode, 0, "jiankang demo (stderr: %s)" % short(r.stderr.decode(), 2000))
    with open(os.path.join(ROOT, "demo", "region.json"), encoding="utf-8") as f:
        region = json.load(f)
    ids = {}
    for e in region["entry"]:
        res = e["resource"]
        if res["resourceType"] == "Patient":
            ids[res["id"]] = [i["value"] for i in res["identifier"] if i["system"] == CITIZEN][0]
    expect(len(ids) >= 6, "the demo region has its patients with citizen IDs: %s" % ids)
    for rid, idn in ids.items():
        body = idn[:17]
        expect_eq(idn[17], "10X98765432"[sum(int(c) * w for c, w in zip(body, WEIGHTS)) % 11],
                  "GB 11643 check character of %s's citizen ID" % rid)
    srv = t.start_server("protect-demo", db)
    try:
        for rid, idn in ids.items():
            expect_eq(search_ids(srv, q(("identifier", CITIZEN + "|" + idn))), [rid],
                      "demo patient %s by citizen ID" % rid)
            got = srv.get("%s/Patient/%s" % (FHIR, rid)).json
            shown = [i["value"] for i in got["identifier"] if i["system"] == CITIZEN][0]
            expect_shown(shown, idn, 6, 4, "demo %s citizen ID" % rid)
        mrn = [i["value"] for i in got["identifier"] if i["system"] != CITIZEN][0]
        expect_raw_bytes(db, list(ids.values()), mrn, "demo database files")
    finally:
        srv.stop()


def test_import_seals_and_reimport_changes_nothing(t):
    d = workdir(t, "protect")
    people = []
    for i in range(3):
        p = patient_with(citizen_id("350203"), mobile(), uniq("mrn"))
        p["id"] = "imp-" + uniq()[2:]
        people.append(p)
    write_ndjson(os.path.join(d, "patients.ndjson"), people[:2])
    with open(os.path.join(d, "bundle.json"), "w", encoding="utf-8") as f:
        json.dump({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": people[2], "request": {"method": "PUT",
                                                "url": "Patient/" + people[2]["id"]}}]},
            f, ensure_ascii=False)
    db = t.fresh_db_url("protect-import")
    rc, out, err = run_import(t, db, d)
    expect_eq(rc, 0, "import (stderr: %s)" % short(err, 2000))
    expect_eq(summary_counts(out), (3, 0, 0), "first import: written, unchanged, refused")
    # Sealed values differ at every sealing; the content does not: nothing is written again.
    rc, out, err = run_import(t, db, d)
    expect_eq(rc, 0, "second import (stderr: %s)" % short(err, 2000))
    expect_eq(summary_counts(out), (0, 3, 0), "second import: written, unchanged, refused")
    for p in people:
        for s in (p["identifier"][0]["value"], p["telecom"][0]["value"]):
            expect(s not in out + err, "import output holds %r" % s)
    srv = t.start_server("protect-import", db)
    try:
        for p in people:
            idn = p["identifier"][0]["value"]
            expect_eq(search_ids(srv, q(("identifier", idn))), [p["id"]], "imported, by number")
            got = srv.get("%s/Patient/%s" % (FHIR, p["id"])).json
            expect_eq(got["meta"]["versionId"], "1", "imported twice, one version")
            expect_shown(got["identifier"][0]["value"], idn, 6, 4, "imported citizen ID")
        secrets = [s for p in people for s in (p["identifier"][0]["value"],
                                               p["telecom"][0]["value"])]
        expect_raw_bytes(db, secrets, people[0]["identifier"][1]["value"], "imported database")
    finally:
        srv.stop()



def test_masking_per_role(t):
    """With security on, each role sees the numbers as access.show_identity_roles and
    access.show_phone_roles say: a resident masked, a doctor the phone whole and the citizen ID
    masked, the hospital's own system both whole (it matches patients by them)."""
    from test_auth import expect_token, form, login
    db = t.fresh_db_url("protect-roles")
    r = subprocess.run([t.binary, "demo", "--db", db], capture_output=True, timeout=300,
                       env=dict(os.environ, JIANKANG_ACCESS_LOG="off"), cwd=ROOT,
                       stdin=subprocess.DEVNULL)
    expect_eq(r.returncode, 0, "jiankang demo (stderr: %s)" % short(r.stderr.decode(), 2000))
    srv = t.start_server("protect-roles", db, env={"JIANKANG_SECURITY": "on"})
    try:
        def token(user, pw):
            return expect_token(login(srv, user, pw), user)["access_token"]

        def numbers(tok, rid):
            got = srv.get("%s/Patient/%s" % (FHIR, rid), {"Authorization": "Bearer " + tok})
            expect_status(got, 200, "read Patient/%s" % rid)
            res = got.json
            return ([i["value"] for i in res["identifier"] if i.get("system") == CITIZEN][0],
                    [c["value"] for c in res["telecom"] if c.get("system") == "phone"][0])

        resident = token("demo-resident", "Jiankang-Resident-2025")
        idn, phone = numbers(resident, "pat-1")
        expect(re.fullmatch(r"350102\*{8}\d{3}[\dX]", idn), "resident sees %r" % idn)
        expect(re.fullmatch(r"\d{3}\*{4}\d{4}", phone), "resident sees phone %r" % phone)
        doctor = token("demo-doctor", "Jiankang-Doctor-2025")
        idn, phone = numbers(doctor, "pat-2")  # in an open encounter with the doctor
        expect(re.fullmatch(r"\d{6}\*{8}\d{3}[\dX]", idn), "doctor sees %r" % idn)
        expect(re.fullmatch(r"\d{11}", phone), "doctor sees phone %r" % phone)
        his = form(srv, "/auth/token", {"grant_type": "client_credentials",
                                        "client_id": "demo-his",
                                        "client_secret": "Jiankang-HIS-Secret-2025"})
        his = expect_token(his, "hospital system")["access_token"]
        idn_c, phone_c = citizen_id(), mobile()
        made = srv.request("POST", FHIR + "/Patient", json.dumps(patient_with(
            idn_c, phone_c, uniq("mrn"))).encode(), {"Content-Type": "application/fhir+json",
                                                     "Authorization": "Bearer " + his})
        expect_status(made, 201, "the hospital system registers a patient")
        expect_eq(numbers(his, made.json["id"]), (idn_c, phone_c), "system sees them whole")
    finally:
        srv.stop()
