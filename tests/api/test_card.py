"""test_card.py - the electronic health card as residents and registration desks use it, with
security on: a resident issues a card for themself and their ward (one active card per person),
staff issue one at a desk for a patient they may see; the dynamic QR code (SVG, content, expiry
and refresh times) verifies once at a nurse's desk with the person's demographics and a masked
identity number; residents cannot verify; a replayed, changed, expired or malformed code and
a revoked card's code are refused with stable reasons; a revoked card can be issued again;
numbers bound to a card are masked, never stored in clear, and cannot be bound to another
person's card; every verification is in the card's use log (organisation and role, never the
staff member's name) and in the audit trail the resident reads.

The module runs its own servers on the demo region (`jiankang demo`: demo-resident is pat-1,
guardian of pat-5; demo-doctor has an open encounter with pat-2)."""
import json
import os
import re
import subprocess
import time

from run import ROOT, expect, expect_eq, expect_status, short
from test_auth import expect_token, login

ON = {"JIANKANG_SECURITY": "on"}
RESULT_SYSTEM = "https://jiankang.example/fhir/CodeSystem/health-card-verification"
CODE = re.compile(r"^JKHC1\.[0-9A-F]{64}\.[0-9]{10}\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{60,96}$")
PASSWORDS = {"demo-resident": "Jiankang-Resident-2025", "demo-doctor": "Jiankang-Doctor-2025",
             "demo-nurse": "Jiankang-Nurse-2025", "demo-pharmacist": "Jiankang-Pharmacist-2025"}
SOCIAL = "350102199003071234"


def card_rules(t, name, ttl):
    with open(os.path.join(ROOT, "rules", "card.json"), encoding="utf-8") as f:
        rules = json.load(f)
    rules["rules"]["card.code.ttl_seconds"]["value"] = ttl
    rules["rules"]["card.code.refresh_margin_seconds"]["value"] = min(30, ttl - 1)
    path = os.path.join(t.workdir, "card-%s.json" % name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rules, f, ensure_ascii=False)
    return path


class Env:
    """The module's demo database, server and tokens (made once)."""

    def __init__(self, t):
        self.t = t
        self.db = t.fresh_db_url("card")
        r = subprocess.run([t.binary, "demo", "--db", self.db], capture_output=True, timeout=300,
                           env=dict(os.environ, JIANKANG_ACCESS_LOG="off"), cwd=ROOT,
                           stdin=subprocess.DEVNULL)
        expect_eq(r.returncode, 0, "jiankang demo (stderr: %s)" % short(r.stderr.decode(), 2000))
        self.srv = t.start_server("card", self.db, env=ON)
        self.tokens = {}

    def token(self, user):
        if user not in self.tokens:
            self.tokens[user] = expect_token(login(self.srv, user, PASSWORDS[user]),
                                             "login " + user)["access_token"]
        return self.tokens[user]

    def call(self, method, path, user=None, body=None, srv=None):
        h = {"Content-Type": "application/json"}
        if user:
            h["Authorization"] = "Bearer " + self.token(user)
        data = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        return (srv or self.srv).request(method, path, data, h)


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def issue(e, user, patient=None, status=201):
    r = e.call("POST", "/api/cards", user, {"patient": patient} if patient else None)
    expect_status(r, status, "%s issues a card for %s" % (user, patient or "themself"))
    return r.json


def card_of(e, user, patient):
    """The active card of patient, issued when there is none."""
    r = e.call("GET", "/api/cards?patient=" + patient, user)
    expect_status(r, 200, "cards of " + patient)
    for c in r.json["cards"]:
        if c["status"] == "active":
            return c
    return issue(e, user, patient)


def qr(e, card, user="demo-resident", srv=None, status=200):
    r = e.call("GET", "/api/cards/%s/qr" % card["id"], user, srv=srv)
    expect_status(r, status, "QR code of card %s" % card["id"])
    return r.json


def verify(e, content, user="demo-nurse"):
    return e.call("POST", "/api/cards/verify", user, {"content": content})


def expect_refused(r, status, reason, what):
    expect_status(r, status, what)
    issue_ = r.json["issue"][0]
    codes = [c.get("code") for c in issue_.get("details", {}).get("coding", [])
             if c.get("system") == RESULT_SYSTEM]
    expect_eq(codes, [reason], what + ": the stable reason")
    expect_eq(issue_.get("expression"), ["content"], what + ": expression")


# ---- issuing ----

def test_issue_for_self_ward_and_at_a_desk(t):
    e = env_of(t)
    expect_status(e.call("POST", "/api/cards", None, {}), 401, "no token")
    mine = card_of(e, "demo-resident", "Patient/pat-1")
    expect(re.fullmatch(r"[0-9A-F]{64}", mine["number"]), "card number %r" % mine["number"])
    expect_eq((mine["patient"], mine["status"]), ("Patient/pat-1", "active"), "my card")
    expect(mine["person"], "the card names the golden person")
    again = e.call("POST", "/api/cards", "demo-resident", {})
    expect_status(again, 409, "a second active card for the same person")
    expect_eq(again.json["issue"][0]["expression"], ["patient"], "409 names the field")
    ward = card_of(e, "demo-resident", "Patient/pat-5")
    expect_eq(ward["patient"], "Patient/pat-5", "the ward's card")
    expect(ward["person"] != mine["person"], "the ward is another person")
    listed = e.call("GET", "/api/cards", "demo-resident")
    expect_status(listed, 200, "my cards")
    ids = {c["id"] for c in listed.json["cards"]}
    expect({mine["id"], ward["id"]} <= ids, "the list has mine and my ward's: %s" % ids)
    # Not for someone else; not for a Patient that does not exist; bad references.
    issue(e, "demo-resident", "Patient/pat-3", status=403)
    issue(e, "demo-resident", "Organization/hosp-fz-1", status=400)
    expect_status(e.call("POST", "/api/cards", "demo-resident", {"patient": "Patient/pat-1",
                                                                 "extra": 1}),
                  400, "an unknown member")
    expect_status(e.call("GET", "/api/cards?patient=Patient/pat-3", "demo-resident"), 403,
                  "someone else's cards")
    # At a desk: a doctor for a patient in their care, not for anyone else.
    desk = card_of(e, "demo-doctor", "Patient/pat-2")
    expect_eq(desk["patient"], "Patient/pat-2", "issued at the desk")
    unseen = [p for p in ("pat-3", "pat-4", "pat-6")
              if e.call("GET", "/fhir/R4/Patient/" + p, "demo-doctor").status == 403]
    expect(unseen, "a demo patient the doctor may not see")
    issue(e, "demo-doctor", "Patient/" + unseen[0], status=403)
    issue(e, "demo-doctor", None, status=400)  # staff must name the patient


# ---- the QR code and verification ----

def test_qr_verifies_once_with_masked_demographics(t):
    e = env_of(t)
    card = card_of(e, "demo-resident", "Patient/pat-1")
    before = time.time()
    code = qr(e, card)
    expect(CODE.match(code["content"]), "content %r" % code["content"])
    expect(card["number"] in code["content"], "the content carries the card number")
    expect(code["svg"].startswith("<svg xmlns=\"http://www.w3.org/2000/svg\""), "an SVG")
    expect("<path" in code["svg"] and code["svg"].endswith("</svg>"), "the QR modules drawn")
    exp = time.mktime(time.strptime(code["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    refresh = time.mktime(time.strptime(code["refresh_at"][:19],
                                        "%Y-%m-%dT%H:%M:%S")) - time.timezone
    expect(before + 60 <= exp <= time.time() + 301, "expires in 60-300 s: %s" % code["expires_at"])
    expect(refresh < exp, "refresh before expiry")
    qr(e, card, user="demo-nurse", status=403)  # only the holder shows the code
    r = verify(e, code["content"])
    expect_status(r, 200, "the nurse verifies")
    got = r.json
    expect_eq((got["result"], got["card"], got["person"], got["patient"]),
              ("accepted", card["id"], card["person"], "Patient/pat-1"), "who it is")
    expect_eq((got["name"], got["sex"], got["birthDate"]), ("王小明", "male", "1985-03-12"),
              "demographics for the desk")
    expect(re.fullmatch(r"\d{6}\*{8}\d{3}[\dX]", got["identity"]),
           "identity masked: %r" % got["identity"])
    expect_eq(r.header("Cache-Control"), "no-store", "not cached")
    expect_refused(verify(e, code["content"]), 409, "replayed", "the same code again")
    # A resident cannot verify; nor can an unauthenticated client.
    code2 = qr(e, card)
    expect_status(verify(e, code2["content"], user="demo-resident"), 403, "a resident verifies")
    expect_status(e.call("POST", "/api/cards/verify", None, {"content": code2["content"]}), 401,
                  "no token")
    # Changed by one character: the number, the expiry, the signature.
    parts = code2["content"].split(".")
    for i, what in ((1, "card number"), (2, "expiry"), (4, "signature")):
        p = list(parts)
        ch = p[i][5]
        p[i] = p[i][:5] + ("1" if ch != "1" else "2") + p[i][6:]
        expect_refused(verify(e, ".".join(p)), 400, "signature", "changed " + what)
    expect_refused(verify(e, "hello"), 400, "malformed", "not a code")
    r = e.call("POST", "/api/cards/verify", "demo-nurse", {})
    expect_status(r, 400, "no content")
    expect_eq(r.json["issue"][0]["expression"], ["content"], "names the field")
    # The untouched code still verifies once (the refusals did not use it up).
    expect_status(verify(e, code2["content"], user="demo-pharmacist"), 200, "the real code")


def test_expired_code_refused(t):
    e = env_of(t)
    card = card_of(e, "demo-resident", "Patient/pat-1")
    fast = t.start_server("card-ttl", e.db, env=dict(
        ON, JIANKANG_CARD_RULES=card_rules(t, "ttl1", 1)))
    try:
        code = qr(e, card, srv=fast)
        time.sleep(2.2)
        expect_refused(verify(e, code["content"]), 422, "expired", "a code past its expiry")
    finally:
        fast.stop()


def test_revoke_then_refused_then_issue_again(t):
    e = env_of(t)
    card = card_of(e, "demo-resident", "Patient/pat-5")
    r = e.call("POST", "/api/cards/%s/bindings" % card["id"], "demo-resident",
               {"kind": "medical-insurance", "number": "MI-5500123"})
    expect_status(r, 201, "bind before revoking")
    code = qr(e, card)
    expect_status(e.call("POST", "/api/cards/%s/revoke" % card["id"], "demo-resident", {}), 400,
                  "a revocation needs a reason")
    r = e.call("POST", "/api/cards/%s/revoke" % card["id"], "demo-resident", {"reason": "lost"})
    expect_status(r, 200, "revoke")
    expect_eq((r.json["status"], r.json["revoke_reason"]), ("revoked", "lost"), "revoked")
    expect_refused(verify(e, code["content"]), 410, "revoked", "a revoked card's code")
    qr(e, card, status=410)
    expect_status(e.call("POST", "/api/cards/%s/revoke" % card["id"], "demo-resident",
                         {"reason": "again"}), 410, "revoked twice")
    new = issue(e, "demo-resident", "Patient/pat-5")
    expect(new["number"] != card["number"] and new["person"] == card["person"],
           "a new number for the same person")
    expect_eq([b["kind"] for b in new["bindings"]], ["medical-insurance"],
              "bound numbers follow the person to the new card")
    expect_status(verify(e, qr(e, new)["content"]), 200, "the new card verifies")


# ---- bindings ----

def raw_store_bytes(db_url):
    if not db_url.startswith("sqlite:"):
        return None
    data = b""
    for suffix in ("", "-wal"):
        try:
            with open(db_url[len("sqlite:"):] + suffix, "rb") as f:
                data += f.read()
        except OSError:
            pass
    return data


def test_bindings_masked_sealed_and_unique(t):
    e = env_of(t)
    card = card_of(e, "demo-resident", "Patient/pat-1")
    path = "/api/cards/%s/bindings" % card["id"]
    hosp = "0099" + str(int(time.time() * 1000))[-8:]
    desk = card_of(e, "demo-doctor", "Patient/pat-2")
    r = e.call("POST", "/api/cards/%s/bindings" % desk["id"], "demo-doctor",
               {"kind": "hospital-card", "number": hosp})
    expect_status(r, 201, "the hospital binds its card (its own organization by default)")
    b = r.json["binding"]
    expect_eq((b["kind"], b["organization"]), ("hospital-card", "Organization/hosp-fz-1"), "binding")
    expect(hosp not in r.body.decode() and "*" in b["number"], "masked: %r" % b["number"])
    expect_status(e.call("POST", path, "demo-doctor", {"kind": "hospital-card", "number": "1"}),
                  403, "staff bind only for patients they may see")
    r = e.call("POST", path, "demo-resident", {"kind": "social-security", "number": SOCIAL})
    expect_status(r, 201, "the resident binds a social security card")
    expect_eq(r.json["binding"]["number"], "350102********1234", "masked like an identity number")
    listed = e.call("GET", "/api/cards", "demo-resident")
    body = listed.body.decode()
    expect(SOCIAL not in body and hosp not in body, "the list shows numbers masked")
    # The same number again on the same card: fine; on another person's card: refused.
    expect_status(e.call("POST", path, "demo-resident", {"kind": "social-security",
                                                         "number": SOCIAL}), 201, "again")
    ward = card_of(e, "demo-resident", "Patient/pat-5")
    r = e.call("POST", "/api/cards/%s/bindings" % ward["id"], "demo-resident",
               {"kind": "social-security", "number": "350102 19900307 1234"})
    expect_status(r, 409, "a number bound to another person's card (typed with spaces)")
    expect_eq(r.json["issue"][0]["expression"], ["number"], "409 names the field")
    # The same hospital card number at another hospital is another card.
    expect_status(e.call("POST", "/api/cards/%s/bindings" % ward["id"], "demo-resident",
                         {"kind": "hospital-card", "number": hosp,
                          "organization": "Organization/chc-xm-siming"}), 201, "another hospital")
    for body_, field in (({"kind": "library-card", "number": "1"}, "kind"),
                         ({"kind": "social-security"}, "number"),
                         ({"kind": "social-security", "number": "12*34"}, "number"),
                         ({"kind": "hospital-card", "number": "77"}, "organization"),
                         ({"kind": "social-security", "number": "1",
                           "organization": "Organization/x"}, "organization")):
        r = e.call("POST", path, "demo-resident", body_)
        expect_status(r, 400, "bad binding %r" % body_)
        expect_eq(r.json["issue"][0]["expression"], [field], "names %s" % field)
    raw = raw_store_bytes(e.db)
    if raw is not None:
        expect(SOCIAL.encode() not in raw and hosp.encode() not in raw,
               "no bound number in clear in the database file")


# ---- the use log and the audit trail ----

def test_uses_log_and_audit_trail(t):
    e = env_of(t)
    card = card_of(e, "demo-resident", "Patient/pat-1")
    code = qr(e, card)
    expect_status(verify(e, code["content"], user="demo-doctor"), 200, "the doctor verifies")
    expect_status(verify(e, code["content"], user="demo-doctor"), 409, "and replays")
    r = e.call("GET", "/api/cards/%s/uses?limit=5" % card["id"], "demo-resident")
    expect_status(r, 200, "my card's use log")
    uses = r.json["uses"]
    expect_eq([(u["result"], u["role"], u["organization"]) for u in uses[:2]],
              [("replayed", "doctor", "Organization/hosp-fz-1"),
               ("accepted", "doctor", "Organization/hosp-fz-1")], "the newest uses")
    expect(all(re.match(r"^\d{4}-\d\d-\d\dT", u["at"]) for u in uses), "times")
    text = r.body.decode()
    expect(not any(name in text for name in PASSWORDS), "no staff user name in the log")
    expect_status(e.call("GET", "/api/cards/%s/uses" % card["id"], "demo-nurse"), 403,
                  "staff do not read the use log")
    log = e.call("GET", "/api/me/access-log?limit=200", "demo-resident")
    expect_status(log, 200, "my access log")
    mine = [x for x in log.json["entries"] if x["action"] == "card-verify"]
    expect(len(mine) >= 2, "verifications are in the audit trail: %s" % short(str(mine), 600))
    expect_eq([(x["role"], x["outcome"], x.get("resource_id")) for x in mine[:2]],
              [("doctor", "refused", card["id"]), ("doctor", "success", card["id"])],
              "the replay refused, the verification recorded")
    expect(not any(x["actor"] in PASSWORDS for x in mine), "staff shown by pseudonym")
    issued = [x for x in log.json["entries"] if x["action"] in ("card-issue", "card-qr")]
    expect(issued, "issuing and showing codes are audited too")
