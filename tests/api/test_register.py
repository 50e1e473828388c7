"""test_register.py - identity documents and real-name registration, as a client sees them.

The FHIR write path (on the shared server): a Patient's citizen ID is checked (wrong check
digit, impossible date: 400 naming Patient.identifier[N].value, in Chinese by default and in
English with Accept-Language: en), normalised (lower-case x, the 15-digit legacy number made 18,
so that search finds both forms), its birth date and sex filled in when absent and refused when
contradicted; in transaction Bundles and PATCH too.

Registration (a server of this module's own, security on, its own rules files): the code goes
out through the `log` SMS adapter and is read back from the server log; a resident registers,
logs in and reads their own Patient; wrong, expired and over-tried codes; invalid documents with
the message saying what is wrong; sex or birth date contradicting the number; the same document
registered twice (409, also in its 15-digit form); a newborn registered by its guardian, who
can then read the child's record."""
import json
import os
import random
import time
from datetime import date, timedelta

from run import FHIR, ROOT, expect, expect_eq, expect_outcome, expect_status, short, uniq
from test_auth import cli_env, expect_token, login, rules_file

CITIZEN = "urn:oid:2.16.156.10011.1.3"
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
JSON = {"Content-Type": "application/json"}


def check_char(body17):
    return "10X98765432"[sum(int(c) * w for c, w in zip(body17, WEIGHTS)) % 11]


def citizen_id(birth=None, male=True, area="350102"):
    """A valid citizen ID (GB 11643) born on birth (YYYYMMDD; random when None)."""
    if birth is None:
        birth = "%04d%02d%02d" % (random.randint(1940, 1999), random.randint(1, 12),
                                  random.randint(1, 28))
    seq = 2 * random.randint(0, 499) + (1 if male else 0)
    body = "%s%s%03d" % (area, birth, seq)
    return body + check_char(body)


def wrong_check(idn):
    """idn with another check character; and the right one."""
    right = idn[17]
    other = "0" if right != "0" else "1"
    return idn[:17] + other, right


def iso(d8):
    return "%s-%s-%s" % (d8[:4], d8[4:6], d8[6:8])


def mobile():
    return "139%08d" % random.randint(0, 99999999)


def post_json(srv, path, body, headers=None, token=None):
    h = dict(JSON)
    if token:
        h["Authorization"] = "Bearer " + token
    h.update(headers or {})
    return srv.request("POST", path, json.dumps(body, ensure_ascii=False).encode("utf-8"), h)


def diagnostics(r):
    return [i.get("diagnostics", "") for i in r.json.get("issue", [])]


def expect_refused(r, status, expression, code, what, words=None):
    """An OperationOutcome naming expression whose diagnostics start with the stable code."""
    issues = expect_outcome(r, status, expression=expression, what=what)
    msgs = [i.get("diagnostics", "") for i in issues if expression in i.get("expression", [])]
    expect(any(m.startswith(code + ": ") for m in msgs),
           "%s: expected a message starting %r, got %s" % (what, code, msgs))
    if words:
        expect(any(words in m for m in msgs), "%s: expected %r in %s" % (what, words, msgs))
    return msgs


# ---- the FHIR write path (shared server, security off) ----

def patient(idn, **more):
    p = {"resourceType": "Patient", "identifier": [{"system": CITIZEN, "value": idn}],
         "name": [{"text": "林小梅"}]}
    p.update(more)
    return p


def test_fhir_citizen_id_checked_and_normalised(t):
    birth = "19850412"
    idn = citizen_id(birth, male=False)
    # lower-case x: pick a number whose check character is X
    while idn[17] != "X":
        idn = citizen_id(birth, male=False)
    r = t.post(FHIR + "/Patient", json.dumps(patient(idn.lower())),
               {"Content-Type": "application/fhir+json"})
    expect_status(r, 201, "a citizen ID with a lower-case x")
    got = r.json
    expect_eq(got["identifier"][0]["value"], idn, "the x made upper-case")
    expect_eq(got.get("birthDate"), iso(birth), "birthDate taken from the number")
    expect_eq(got.get("gender"), "female", "gender taken from the number")
    r = t.get(FHIR + "/Patient?identifier=%s%%7C%s" % (CITIZEN, idn.lower()))
    expect_eq([e["resource"]["id"] for e in r.json.get("entry", [])], [got["id"]],
              "found by either case")


def test_fhir_legacy_15_digit_number_upgraded(t):
    idn = citizen_id("19%02d0615" % random.randint(30, 99), male=True)
    legacy = idn[:6] + idn[8:17]
    r = t.post(FHIR + "/Patient", json.dumps(patient(legacy, gender="male")),
               {"Content-Type": "application/fhir+json"})
    expect_status(r, 201, "a 15-digit legacy number")
    expect_eq(r.json["identifier"][0]["value"], idn, "stored as its 18-digit form")
    r = t.get(FHIR + "/Patient?identifier=%s%%7C%s" % (CITIZEN, idn))
    expect(r.json.get("total", len(r.json.get("entry", []))) >= 1, "found by the 18-digit form")


def test_fhir_invalid_citizen_ids_refused_naming_the_element(t):
    good = citizen_id("19900307", male=True)
    bad, right = wrong_check(good)
    ct = {"Content-Type": "application/fhir+json"}
    p = patient(good)
    p["identifier"].insert(0, {"system": "urn:jiankang:mrn:hosp-fz-1", "value": uniq("mrn")})
    p["identifier"][1]["value"] = bad
    r = t.post(FHIR + "/Patient", json.dumps(p), ct)
    expect_refused(r, 400, "Patient.identifier[1].value", "idnum.check_digit", "check digit",
                   "公民身份号码校验位错误，应为 %s" % right)
    r = t.post(FHIR + "/Patient", json.dumps(p), dict(ct, **{"Accept-Language": "en-US,en;q=0.9"}))
    expect_refused(r, 400, "Patient.identifier[1].value", "idnum.check_digit", "in English",
                   "check digit is wrong: it should be %s" % right)
    body = "35010219900230123"
    r = t.post(FHIR + "/Patient", json.dumps(patient(body + check_char(body))), ct)
    expect_refused(r, 400, "Patient.identifier[0].value", "idnum.birth_date", "19900230")
    body = "990102199003071" + "23"
    r = t.post(FHIR + "/Patient", json.dumps(patient(body + check_char(body))), ct)
    expect_refused(r, 400, "Patient.identifier[0].value", "idnum.region_province", "province 99")
    r = t.post(FHIR + "/Patient", json.dumps(patient(good, gender="female")), ct)
    expect_refused(r, 400, "Patient.gender", "idnum.sex_mismatch", "gender contradicts")
    r = t.post(FHIR + "/Patient", json.dumps(patient(good, birthDate="1990-03-08")), ct)
    expect_refused(r, 400, "Patient.birthDate", "idnum.birth_date_mismatch", "birthDate")
    r = t.post(FHIR + "/Patient", json.dumps(patient(good, birthDate="1990-03")), ct)
    expect_status(r, 201, "a birthDate of lower precision that agrees")
    # Other systems are not citizen IDs: an MRN of 18 digits is nobody's business here.
    r = t.post(FHIR + "/Patient", json.dumps({"resourceType": "Patient", "identifier": [
        {"system": "urn:jiankang:mrn:hosp-fz-1", "value": bad}]}), ct)
    expect_status(r, 201, "an MRN that looks like a bad citizen ID")


def test_fhir_bundle_and_patch_share_the_check(t):
    good = citizen_id("19900307", male=True)
    bad, _ = wrong_check(good)
    ct = {"Content-Type": "application/fhir+json"}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(citizen_id()), "request": {"method": "POST", "url": "Patient"}},
        {"resource": patient(bad), "request": {"method": "POST", "url": "Patient"}}]}
    r = t.post(FHIR, json.dumps(bundle), ct)
    expect_status(r, 400, "a transaction with a bad citizen ID")
    expect("idnum.check_digit" in r.body.decode("utf-8"), "the bundle's refusal says why: %s" %
           short(r.body.decode("utf-8"), 400))
    r = t.post(FHIR + "/Patient", json.dumps(patient(good)), ct)
    expect_status(r, 201, "create for PATCH")
    pid = r.json["id"]
    patch = [{"op": "replace", "path": "/gender", "value": "female"}]
    r = t.request("PATCH", "%s/Patient/%s" % (FHIR, pid), json.dumps(patch),
                  {"Content-Type": "application/json-patch+json"})
    expect_refused(r, 400, "Patient.gender", "idnum.sex_mismatch", "PATCH contradicting gender")
    patch = [{"op": "replace", "path": "/identifier/0/value", "value": bad}]
    r = t.request("PATCH", "%s/Patient/%s" % (FHIR, pid), json.dumps(patch),
                  {"Content-Type": "application/json-patch+json"})
    expect_refused(r, 400, "Patient.identifier[0].value", "idnum.check_digit", "PATCH bad number")


# ---- registration (a security-on server of this module's own) ----

class Env:
    def __init__(self, t, name="register", ttl=300):
        self.t = t
        self.sec = rules_file(t, name, **{
            "rate.login.per_address": (100000, 60), "rate.login.per_account": (100000, 60),
            "rate.expensive.per_address": (100000, 60),
            "rate.expensive.per_account": (100000, 60)})
        with open(os.path.join(ROOT, "rules", "registration.json"), encoding="utf-8") as f:
            reg = json.load(f)
        r = reg["rules"]
        r["code.ttl_seconds"]["value"] = ttl
        r["code.resend_seconds"]["value"] = 0
        for k in ("rate.code.per_address", "rate.code.per_phone", "rate.register.per_address"):
            r[k]["value"] = {"limit": 100000, "window_seconds": 60}
        self.reg = os.path.join(t.workdir, "registration-%s.json" % name)
        with open(self.reg, "w", encoding="utf-8") as f:
            json.dump(reg, f, ensure_ascii=False)
        self.srv = t.start_server(name, env={
            "JIANKANG_SECURITY": "on", "JIANKANG_SECURITY_RULES": self.sec,
            "JIANKANG_REGISTRATION_RULES": self.reg})
        self.secrets = []

    def code_for(self, phone):
        """Asks for a code for phone and reads it from the log the `log` adapter writes."""
        r = post_json(self.srv, "/api/residents/register/code", {"phone": phone})
        expect_status(r, 202, "ask for a code")
        expect_eq(r.json.get("expires_in") is not None, True, "expires_in")
        masked = phone[:3] + "****" + phone[-4:]
        for _ in range(50):
            code = None
            with open(self.srv.log_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:
                        continue
                    msg = rec.get("msg", "")
                    if rec.get("module") == "sms" and msg.startswith("to %s:" % masked):
                        digits = [w for w in msg.replace("，", " ").split() if w.isdigit()]
                        code = digits[0] if digits else None
            if code:
                return code
            time.sleep(0.1)
        raise AssertionError("no SMS for %s in the server log" % masked)

    def register(self, phone, code, idn, username=None, password=None, headers=None, **more):
        body = {"name": "陈志远", "document": {"type": "citizen-id", "number": idn},
                "phone": phone, "code": code, "username": username or uniq("res").lower(),
                "password": password or "Reg-%s-Pw9" % uniq()[2:12]}
        body.update(more)
        self.secrets += [body["password"], idn, phone]
        return post_json(self.srv, "/api/residents/register", body, headers), body


ENVS = {}


def env_of(t, name="register", ttl=300):
    key = (id(t), name)
    if key not in ENVS:
        ENVS[key] = Env(t, name, ttl)
    return ENVS[key]


def test_register_log_in_and_read_own_patient(t):
    e = env_of(t)
    phone, birth = mobile(), "19880521"
    idn = citizen_id(birth, male=True)
    code = e.code_for(phone)
    r, body = e.register(phone, code, idn)
    expect_status(r, 201, "registration")
    expect_eq(r.json.get("username"), body["username"], "username")
    ref = r.json.get("patient", "")
    expect(ref.startswith("Patient/"), "patient reference: %r" % ref)
    expect(isinstance(r.json.get("person"), str) and len(r.json["person"]) > 8,
           "the golden person the Patient is linked to: %r" % r.json.get("person"))
    tok = expect_token(login(e.srv, body["username"], body["password"]), "the new resident logs in")
    expect_eq(tok.get("patient"), ref[8:], "the token's patient context")
    r = e.srv.request("GET", "%s/%s" % (FHIR, ref),
                      headers={"Authorization": "Bearer " + tok["access_token"]})
    expect_status(r, 200, "the resident reads their own Patient")
    p = r.json
    expect_eq(p.get("gender"), "male", "gender from the number")
    expect_eq(p.get("birthDate"), iso(birth), "birthDate from the number")
    expect_eq(p["name"][0]["text"], "陈志远", "name")
    shown = p["identifier"][0]["value"]
    expect(shown in (idn, idn[:6] + "*" * 8 + idn[-4:]), "the number shown or masked: %r" % shown)
    expect_eq(p["telecom"][0].get("use"), "mobile", "the phone as a mobile number")
    # The code is spent: the same code cannot register anyone else.
    r, _ = e.register(phone, code, citizen_id())
    expect_refused(r, 400, "code", "registration.code_missing", "a used code")
    # Neither the number, the phone nor the password reaches the log.
    with open(e.srv.log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    for s in (idn, phone, body["password"]):
        expect(s not in log, "the server log holds %r" % s)


def test_wrong_code_and_too_many_tries(t):
    e = env_of(t)
    phone = mobile()
    code = e.code_for(phone)
    wrong = "%06d" % ((int(code) + 1) % 1000000)
    idn = citizen_id()
    for i in range(4):
        r, _ = e.register(phone, wrong, idn)
        expect_refused(r, 400, "code", "registration.code_wrong", "wrong code %d" % (i + 1),
                       "还可尝试 %d 次" % (4 - i))
    r, _ = e.register(phone, wrong, idn)
    expect_refused(r, 400, "code", "registration.code_attempts", "the fifth wrong code")
    r, _ = e.register(phone, code, idn)
    expect_refused(r, 400, "code", "registration.code_attempts", "the right code, too late")
    # A new code works again.
    r, _ = e.register(phone, e.code_for(phone), idn)
    expect_status(r, 201, "with a new code")


def test_expired_code(t):
    e = env_of(t, "register-ttl", ttl=1)
    phone = mobile()
    code = e.code_for(phone)
    time.sleep(2.2)
    r, _ = e.register(phone, code, citizen_id())
    expect_refused(r, 400, "code", "registration.code_expired", "an expired code")
    e.srv.stop()


def test_invalid_documents_say_what_is_wrong(t):
    e = env_of(t)
    phone = mobile()
    code = e.code_for(phone)
    bad, right = wrong_check(citizen_id())
    r, _ = e.register(phone, code, bad)
    expect_refused(r, 400, "document.number", "idnum.check_digit", "Chinese by default",
                   "公民身份号码校验位错误，应为 %s" % right)
    r, _ = e.register(phone, code, bad, headers={"Accept-Language": "en"})
    expect_refused(r, 400, "document.number", "idnum.check_digit", "English",
                   "check digit is wrong: it should be %s" % right)
    body = "35010220300101123"
    r, _ = e.register(phone, code, body + check_char(body))
    expect_refused(r, 400, "document.number", "idnum.birth_date_future", "born in 2030")
    r, _ = e.register(phone, code, "E1234567", document={"type": "passport", "number": "E1234567",
                                                          "country": "CHN"})
    expect_refused(r, 400, "document.number", "idnum.format", "a short Chinese passport")
    r, _ = e.register(phone, code, "X", document={"type": "driving-licence", "number": "1"})
    expect_refused(r, 400, "document.type", "registration.document_type", "unknown type")
    # Every field is named at once.
    r = post_json(e.srv, "/api/residents/register", {"name": "", "document": {
        "type": "citizen-id", "number": bad}, "phone": "12345", "code": "12",
        "username": "-x", "password": "short"})
    issues = expect_outcome(r, 400, what="everything wrong")
    exprs = {x for i in issues for x in i.get("expression", [])}
    for f in ("name", "document.number", "phone", "code", "username"):
        expect(f in exprs, "the refusal names %s: %s" % (f, sorted(exprs)))
    # None of that spent the code.
    r, _ = e.register(phone, code, citizen_id())
    expect_status(r, 201, "the code still works")


def test_sex_and_birth_date_must_agree_with_the_number(t):
    e = env_of(t)
    phone = mobile()
    code = e.code_for(phone)
    idn = citizen_id("19750102", male=False)
    r, _ = e.register(phone, code, idn, sex="male")
    expect_refused(r, 400, "sex", "idnum.sex_mismatch", "sex contradicts", "男")
    r, _ = e.register(phone, code, idn, birthDate="1975-01-03")
    expect_refused(r, 400, "birthDate", "idnum.birth_date_mismatch", "birth date contradicts")
    r, _ = e.register(phone, code, idn, sex="female", birthDate="1975-01-02")
    expect_status(r, 201, "agreeing sex and birth date")
    # A passport holds neither: both are needed.
    phone2 = mobile()
    code2 = e.code_for(phone2)
    doc = {"type": "passport", "number": "P%07d" % random.randint(0, 9999999), "country": "usa"}
    r, _ = e.register(phone2, code2, "-", document=doc)
    expect_outcome(r, 400, expression="sex", what="a passport without sex")
    r, _ = e.register(phone2, code2, "-", document=doc, sex="female", birthDate="1992-08-30")
    expect_status(r, 201, "a passport with sex and birth date")


def test_same_document_registered_twice_is_409(t):
    e = env_of(t)
    idn = citizen_id("19%02d0704" % random.randint(30, 99), male=True)
    phone = mobile()
    r, _ = e.register(phone, e.code_for(phone), idn)
    expect_status(r, 201, "first registration")
    phone2 = mobile()
    code2 = e.code_for(phone2)
    r, _ = e.register(phone2, code2, idn)
    expect_refused(r, 409, "document.number", "registration.duplicate", "the same number")
    r, _ = e.register(phone2, code2, idn[:6] + idn[8:17])
    expect_refused(r, 409, "document.number", "registration.duplicate", "its 15-digit form")
    taken = uniq("res").lower()
    r, _ = e.register(phone2, code2, citizen_id(), username=taken)
    expect_status(r, 201, "another person")
    phone3 = mobile()
    r, _ = e.register(phone3, e.code_for(phone3), citizen_id(), username=taken)
    expect_refused(r, 409, "username", "registration.username_taken", "the user name taken")


def test_newborn_registered_by_guardian_who_reads_the_child(t):
    e = env_of(t)
    phone = mobile()
    r, body = e.register(phone, e.code_for(phone), citizen_id("19920315", male=False))
    expect_status(r, 201, "the mother registers")
    tok = expect_token(login(e.srv, body["username"], body["password"]), "login")["access_token"]
    born = (date.today() - timedelta(days=10)).isoformat()
    r = post_json(e.srv, "/api/residents/newborns", {"name": "陈小宝", "sex": "male",
                                                      "birthDate": born})
    expect_status(r, 401, "a newborn without a token")
    r = post_json(e.srv, "/api/residents/newborns", {"name": "陈小宝", "sex": "male",
                                                      "birthDate": born}, token=tok)
    expect_status(r, 201, "a newborn registered")
    child = r.json.get("patient", "")
    expect(child.startswith("Patient/"), "child reference: %r" % child)
    auth = {"Authorization": "Bearer " + tok}
    r = e.srv.request("GET", "%s/%s" % (FHIR, child), headers=auth)
    expect_status(r, 200, "the guardian reads the child's Patient")
    expect_eq(r.json.get("birthDate"), born, "the child's birth date")
    expect("identifier" not in r.json, "a newborn has no ID number")
    r = e.srv.request("GET", "%s/RelatedPerson?patient=%s" % (FHIR, child), headers=auth)
    expect_status(r, 200, "the guardian finds the RelatedPerson")
    rels = [x["resource"] for x in r.json.get("entry", [])]
    expect(len(rels) == 1 and rels[0]["relationship"][0]["coding"][0]["code"] == "GUARD",
           "one guardian RelatedPerson: %s" % short(json.dumps(rels, ensure_ascii=False), 400))
    # Too old, or not born yet.
    old = (date.today() - timedelta(days=800)).isoformat()
    r = post_json(e.srv, "/api/residents/newborns", {"name": "陈大宝", "sex": "female",
                                                      "birthDate": old}, token=tok)
    expect_refused(r, 400, "birthDate", "registration.newborn.max_age_days", "800 days old")
    soon = (date.today() + timedelta(days=3)).isoformat()
    r = post_json(e.srv, "/api/residents/newborns", {"name": "陈二宝", "sex": "female",
                                                      "birthDate": soon}, token=tok)
    expect_refused(r, 400, "birthDate", "idnum.birth_date_future", "not born yet")
