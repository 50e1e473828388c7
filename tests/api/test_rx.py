"""test_rx.py - prescribing in the internet hospital with security on: the doctor of an open
visit checks a prescription (findings, nothing written) and makes it (MedicationRequests in
draft, signed, a Provenance, the amount due); refusals list every rule that refused, with its
code, in Chinese and English, and write nothing; nobody but the visit's doctor prescribes;
bad input is a 4xx naming the field; anyone with a token checks a signature, which a new dose
written over a signed MedicationRequest breaks.

The module runs its own server on the demo region: demo-resident (pat-1, a man born in 1985
with a hypertension diagnosis at hosp-fz-1) opens follow-up visits with demo-doctor
(PractitionerRole/prac-1-role of hosp-fz-1) through POST /api/ih/visits; the module adds a
penicillin allergy and an active simvastatin MedicationRequest to pat-1's records."""
import json

from run import FHIR, expect, expect_eq, expect_status, uniq
from test_auth import cli, cli_env, expect_token, login, form, rules_file
from test_booking import cli_run

CHECK = "https://jiankang.example/fhir/CodeSystem/prescription-check"
GROUP = "https://jiankang.example/fhir/sid/prescription"
DRUG = "https://jiankang.example/fhir/sid/drug-code"
PASSWORDS = {"demo-resident": "Jiankang-Resident-2025", "demo-nurse": "Jiankang-Nurse-2025",
             "demo-doctor": "Jiankang-Doctor-2025"}
DOCTOR2_PW = "Rx-Other-Doctor-2025!"

AMLODIPINE, ATORVASTATIN, SIMVASTATIN = "JK-C08CA01-01", "JK-C10AA05-01", "JK-C10AA01-01"
AMOXICILLIN, MORPHINE, ESTRADIOL = "JK-J01CA04-01", "JK-N02AA01-01", "JK-G03CA03-01"
HTN = {"system": "http://hl7.org/fhir/sid/icd-10", "code": "I10", "display": "高血压"}


def item(drug, dose, tpd=1, days=7, qty=1, **kw):
    out = {"drug": drug, "dose": dose, "timesPerDay": tpd, "days": days, "quantity": qty}
    out.update(kw)
    return out


class Env:
    def __init__(self, t):
        self.t = t
        self.db = t.fresh_db_url("rx")
        self.tokens = {}
        r = cli_run(t, ["demo", "--db", self.db])
        expect_eq(r.returncode, 0, "jiankang demo")
        self.sec = rules_file(t, "rx")
        with open(self.sec, encoding="utf-8") as f:
            doc = json.load(f)
        doc["rules"]["login.second_factor_roles"]["value"] = []  # the demo has no TOTP app
        with open(self.sec, "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False)
        # a doctor of another hospital
        cli(t, cli_env(self.sec), self.db, "add", "rx-doctor-2", "--role", "doctor", "--org",
            "Organization/hosp-xm-1", "--link", "PractitionerRole/prac-3-role",
            password=DOCTOR2_PW)
        PASSWORDS["rx-doctor-2"] = DOCTOR2_PW
        self.srv = t.start_server("rx", self.db, env={"JIANKANG_SECURITY": "on",
                                                      "JIANKANG_SECURITY_RULES": self.sec})
        # pat-1 is allergic to penicillin and takes simvastatin
        self.patient = "pat-1"
        entries = [
            {"resourceType": "AllergyIntolerance", "id": uniq("rxa"),
             "clinicalStatus": {"coding": [{
                 "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                 "code": "active"}]},
             "code": {"coding": [{"system": "https://jiankang.example/fhir/CodeSystem/allergen",
                                  "code": "penicillin", "display": "青霉素"}]},
             "patient": {"reference": "Patient/" + self.patient}},
            {"resourceType": "MedicationRequest", "id": uniq("rxm"), "status": "active",
             "intent": "order", "subject": {"reference": "Patient/" + self.patient},
             "medicationCodeableConcept": {"coding": [{"system": DRUG, "code": SIMVASTATIN}]}},
        ]
        r = self.call("POST", FHIR, "demo-his", {
            "resourceType": "Bundle", "type": "transaction",
            "entry": [{"request": {"method": "PUT", "url": "%s/%s" % (e["resourceType"],
                                                                       e["id"])},
                       "resource": e} for e in entries]})
        expect_status(r, 200, "the patient's records")
        self.visit = self.open_visit()

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
             "Content-Type": "application/json"}
        if lang:
            h["Accept-Language"] = lang
        return h

    def call(self, method, path, user, body=None, lang=None):
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        h = self.headers(user, lang) if user else {"Content-Type": "application/json"}
        return self.srv.request(method, path, data, h)

    def open_visit(self, is_ended=False):
        """A follow-up visit of pat-1 with demo-doctor (ended when is_ended)."""
        r = self.call("POST", "/api/ih/visits", "demo-resident",
                      {"doctor": "PractitionerRole/prac-1-role", "condition": HTN})
        expect_status(r, 201, "a visit")
        vid = r.json["id"]
        if is_ended:
            r = self.call("POST", "/api/ih/visits/%s/end" % vid, "demo-doctor",
                          {"outcome": "finished"})
            expect_status(r, 200, "the visit ended")
        return vid

    def prescribe(self, items, user="demo-doctor", visit=None, lang=None, path="prescriptions",
                  **kw):
        body = {"visit": "Encounter/" + (visit or self.visit), "items": items}
        body.update(kw)
        return self.call("POST", "/api/rx/" + path, user, body, lang)

    def verify(self, prescription, user="demo-resident"):
        r = self.call("POST", FHIR + "/MedicationRequest/$verify-signature", user, {
            "resourceType": "Parameters",
            "parameter": [{"name": "prescription", "valueString": prescription}]})
        expect_status(r, 200, "$verify-signature")
        return {p["name"]: list(v for k, v in p.items() if k.startswith("value"))[0]
                for p in r.json["parameter"]}

    def n_requests(self):
        r = self.call("GET", "%s/MedicationRequest?patient=Patient/%s&_summary=count" % (
            FHIR, self.patient), "demo-doctor")
        expect_status(r, 200, "count MedicationRequests")
        return r.json["total"]


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def codes_of(r):
    return sorted(c["code"] for i in r.json["issue"]
                  for c in i.get("details", {}).get("coding", []) if c.get("system") == CHECK)


def test_rx_check_then_prescribe_signed(t):
    e = env_of(t)
    items = [item(AMLODIPINE, 5), item(ATORVASTATIN, 20)]
    before = e.n_requests()
    r = e.prescribe(items, path="check")
    expect_status(r, 200, "check")
    expect_eq(r.json["refused"], False, "refused")
    expect_eq(r.json["amountFen"], 1560 + 980, "amount")
    expect_eq([f["code"] for f in r.json["findings"]], ["duplicate"], "findings")
    expect("辛伐他汀片" in r.json["findings"][0]["message"], "the message names the drug")
    expect_eq(e.n_requests(), before, "nothing written by the check")

    r = e.prescribe(items)
    expect_status(r, 201, "prescribe")
    rx = r.json
    expect_eq(rx["status"], "pending", "status")
    expect_eq(rx["amountFen"], 2540, "amountFen")
    expect_eq(rx["requester"], "PractitionerRole/prac-1-role", "requester")
    expect_eq(len(rx["medicationRequests"]), 2, "two MedicationRequests")
    for i, mr in enumerate(rx["medicationRequests"]):
        expect_eq(mr["status"], "draft", "draft")
        expect_eq(mr["groupIdentifier"], {"system": GROUP, "value": rx["prescription"]},
                  "groupIdentifier")
        expect_eq(mr["encounter"]["reference"], "Encounter/" + e.visit, "encounter")
        expect_eq(mr["subject"]["reference"], "Patient/" + e.patient, "subject")
        expect_eq(mr["medicationCodeableConcept"]["coding"][0]["code"], items[i]["drug"], "drug")
        expect_eq(mr["dispenseRequest"]["expectedSupplyDuration"]["value"], 7, "days")
        expect("validityPeriod" in mr["dispenseRequest"], "validity period")
    expect_eq(e.n_requests(), before + 2, "two new MedicationRequests")
    r = e.call("GET", "%s/%s" % (FHIR, rx["provenance"]), "demo-doctor")
    expect_status(r, 200, "the Provenance")
    expect_eq(r.json["signature"][0]["data"], rx["signature"], "the signature in the Provenance")
    expect_eq(r.json["signature"][0]["sigFormat"], "application/sm2-signature", "sigFormat")

    # anyone with a token checks it; a new dose written over a signed request breaks it
    v = e.verify(rx["prescription"])
    expect_eq(v["valid"], True, "valid")
    mr = rx["medicationRequests"][0]
    mr["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]["value"] = 10
    r = e.call("PUT", "%s/MedicationRequest/%s" % (FHIR, mr["id"]), "demo-his", mr)
    expect_status(r, 200, "a new dose written over the signed one")
    v = e.verify(rx["prescription"], user="demo-nurse")
    expect_eq(v["valid"], False, "valid after the change")
    expect("changed" in v["reason"], "why: %s" % v["reason"])


def test_rx_refusals_name_every_rule(t):
    e = env_of(t)
    before = e.n_requests()
    items = [item(MORPHINE, 30, 2, 3), item(AMOXICILLIN, 500, 3, 5, 2),
             item(AMLODIPINE, 5, 1, 14, 1), item(ESTRADIOL, 1)]
    r = e.prescribe(items)
    expect_status(r, 422, "refused")
    expect_eq(codes_of(r), ["allergy", "rx.max_days", "rx.online_forbidden_classes", "sex"],
              "the refusals' codes")
    text = " ".join(i["diagnostics"] for i in r.json["issue"])
    expect("互联网诊疗不得开具" in text and "7 天" in text, "Chinese messages: %s" % text)
    exprs = sorted(x for i in r.json["issue"] for x in i.get("expression", []))
    expect_eq(exprs, ["items[0]", "items[1]", "items[2]", "items[3]"], "the items named")
    r = e.prescribe(items, lang="en")
    expect_status(r, 422, "refused (English)")
    text = " ".join(i["diagnostics"] for i in r.json["issue"])
    expect("never prescribed online" in text and "rx.max_days" in text, "English: %s" % text)
    # six drugs
    r = e.prescribe([item(AMLODIPINE, 5)] * 6)
    expect_status(r, 422, "six drugs")
    expect("rx.max_items" in codes_of(r), "rx.max_items")
    expect_eq(e.n_requests(), before, "nothing written")
    # a long-term prescription of a chronic drug with a reason is made
    r = e.prescribe([item(AMLODIPINE, 5, 1, 28, 1)], longTermReason="高血压病情稳定")
    expect_status(r, 201, "long-term")


def test_rx_only_the_visits_doctor(t):
    e = env_of(t)
    items = [item(AMLODIPINE, 5)]
    for user in ("demo-nurse", "rx-doctor-2", "demo-resident"):
        r = e.prescribe(items, user=user)
        expect_status(r, 403, user + " prescribes")
        r = e.prescribe(items, user=user, path="check")
        expect_status(r, 403, user + " checks")
    r = e.prescribe(items, user=None)
    expect_status(r, 401, "no token")


def test_rx_bad_input_names_the_field(t):
    e = env_of(t)
    cases = [
        ({"items": [item(AMLODIPINE, 5)]}, 400, "visit"),
        ({"visit": "Encounter/" + e.visit}, 400, "items"),
        ({"visit": "Encounter/" + e.visit, "items": [item(AMLODIPINE, 0)]}, 400,
         "items[0].dose"),
        ({"visit": "Encounter/" + e.visit, "items": [item(AMLODIPINE, 5, days=0)]}, 400,
         "items[0].days"),
        ({"visit": "Encounter/" + e.visit, "items": [item(AMLODIPINE, 5, colour="red")]}, 400,
         "items[0]"),
        ({"visit": "Encounter/nope", "items": [item(AMLODIPINE, 5)]}, 404, "visit"),
    ]
    for body, status, expr in cases:
        r = e.call("POST", "/api/rx/prescriptions", "demo-doctor", body)
        expect_status(r, status, expr)
        exprs = [x for i in r.json["issue"] for x in i.get("expression", [])]
        expect(expr in exprs, "%s: expressions %s" % (expr, exprs))
    ended = e.open_visit(is_ended=True)
    r = e.prescribe([item(AMLODIPINE, 5)], visit=ended)
    expect_status(r, 409, "an ended visit")
    r = e.call("POST", FHIR + "/MedicationRequest/$verify-signature", "demo-resident", {
        "resourceType": "Parameters", "parameter": [{"name": "prescription",
                                                     "valueString": "nope"}]})
    expect_status(r, 404, "an unknown prescription")
    r = e.call("POST", FHIR + "/MedicationRequest/$verify-signature", "demo-resident",
               {"resourceType": "Parameters"})
    expect_status(r, 400, "no prescription parameter")


def test_rx_formulary_lists_the_institutions_drugs(t):
    e = env_of(t)
    r = e.call("GET", "/api/rx/formulary", "demo-doctor")
    expect_status(r, 200, "the doctor's institution's formulary")
    drugs = r.json["drugs"]
    expect(len(drugs) >= 20, "the hospital lists the whole formulary: %d" % len(drugs))
    codes = [d["code"] for d in drugs]
    expect_eq(codes, sorted(codes), "in code order")
    expect(all(d["name"] and d["unit"] and d["priceFen"] >= 0 for d in drugs),
           "names, units, prices")
    chc = e.call("GET", "/api/rx/formulary?org=Organization/chc-fz-gulou", "demo-doctor")
    expect_status(chc, 200, "a community centre's formulary")
    expect(0 < len(chc.json["drugs"]) < len(drugs), "its own shorter list")
    expect_status(e.call("GET", "/api/rx/formulary?org=bad%20id", "demo-doctor"), 400, "a bad org")
