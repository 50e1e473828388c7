"""test_audit_trail.py - the audit trail as its readers meet it: a regulator reads logins,
failed logins, logouts and account changes as FHIR AuditEvent (and nobody else may); a resident
reads who looked at their own records, with staff shown by role, institution and a pseudonym;
nobody can change the trail through the API; paging; every read of the trail is recorded; a
clean stop leaves `jiankang audit verify` intact with the last record signed, and an edited
row is reported.

This module runs its own servers with security on (whatever the shared server runs with), on
a database of its own, with accounts made by `jiankang user add` as in test_auth.py."""
import re
import sqlite3
import subprocess
import uuid

from run import FHIR, ROOT, SANITIZER_MARKS, expect, expect_eq, expect_outcome, expect_status, \
    short
from test_auth import THRESHOLD, cli, cli_env, expect_token, form, fresh_code_window, login, \
    rules_file, totp

AUDIT = FHIR + "/AuditEvent"
ON = {"JIANKANG_SECURITY": "on"}
PSEUDONYM = re.compile(r"^actor-[0-9a-f]{12}$")


class Env:
    """The module's database, accounts, server and a regulator's token (made once)."""

    def __init__(self, t):
        self.t = t
        self.rules = rules_file(t, "trail", **{
            "rate.login.per_address": (100000, 60), "rate.login.per_account": (100000, 60),
            "rate.expensive.per_address": (100000, 60),
            "rate.expensive.per_account": (100000, 60)})
        self.env = cli_env(self.rules)
        self.db = t.fresh_db_url("trail")
        self.pw, self.totp = {}, {}
        self.add("dr.trail", "doctor", "--org", "Organization/hosp-fz-1")
        self.add("nurse.trail", "nurse", "--org", "Organization/hosp-fz-1")
        self.add("res.a", "resident", "--link", "Patient/pat-a")
        self.add("res.b", "resident", "--link", "Patient/pat-b")
        self.add("res.none", "resident")
        self.add("reg.trail", "regulator", "--org", "Organization/region-350000")
        self.srv = t.start_server("trail", self.db, env=dict(
            ON, JIANKANG_SECURITY_RULES=self.rules))
        fresh_code_window()
        self.reg = expect_token(login(self.srv, "reg.trail", self.pw["reg.trail"],
                                      totp=totp(self.totp["reg.trail"])),
                                "regulator login")["access_token"]

    def add(self, name, role, *args):
        pw = "Pw-%s-X9" % uuid.uuid4().hex[:10]
        out = cli(self.t, self.env, self.db, "add", name, "--role", role, *args, password=pw)
        m = re.search(r"secret: ([A-Z2-7]+)", out)
        if m:
            self.totp[name] = m.group(1)
        self.pw[name] = pw

    def token(self, name):
        return expect_token(login(self.srv, name, self.pw[name]), "login " + name)["access_token"]


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


def bearer(token):
    return {"Authorization": "Bearer " + token}


def search(e, query="", token=None, status=200):
    """GET AuditEvent?query as the regulator (or token): the Bundle."""
    r = e.srv.get(AUDIT + ("?" + query if query else ""), bearer(token or e.reg))
    expect_status(r, status, "AuditEvent?" + query)
    return r.json


def events(bundle):
    return [x["resource"] for x in bundle.get("entry", [])]


def next_url(bundle, base):
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            expect(link["url"].startswith(base), "next link %r is not under %s" % (
                link["url"], base))
            return link["url"][len(base):]
    return None


def actor(ev):
    return ev["agent"][0]["who"]["identifier"]["value"]


def subtype(ev):
    return (ev.get("subtype") or [{}])[0].get("code")


def patients(ev):
    return [x["what"]["reference"] for x in ev.get("entity", [])
            if x.get("what", {}).get("reference", "").startswith("Patient/")]


def access_log(e, token, query="", status=200):
    r = e.srv.get("/api/me/access-log" + ("?" + query if query else ""), bearer(token))
    expect_status(r, status, "access-log?" + query)
    return r


def verify(e, db):
    """`jiankang audit verify --db DB` with the run's key file: (exit code, output)."""
    r = subprocess.run([e.t.binary, "audit", "verify", "--db", db], capture_output=True,
                       timeout=120, env=e.env, cwd=ROOT)
    out = r.stdout.decode("utf-8", "replace") + r.stderr.decode("utf-8", "replace")
    for mark in SANITIZER_MARKS:
        expect(mark not in out, "audit verify: a sanitizer report:\n%s" % out[:3000])
    return r.returncode, out


# ---- what a regulator reads ----

def test_logins_failed_logins_and_logouts_are_in_the_trail(t):
    e = env_of(t)
    tok = e.token("dr.trail")
    login(e.srv, "dr.trail", "Wrong-Password-1")
    ghost = "ghost-" + uuid.uuid4().hex[:8]
    login(e.srv, ghost, "Typed-Secret-77")
    expect_status(form(e.srv, "/auth/revoke", {"token": tok}), 200, "revoke")
    evs = events(search(e, "_count=50"))
    mine = [ev for ev in evs if actor(ev) == "dr.trail"]
    expect(len(mine) >= 3, "login, failed login and logout of dr.trail: %s" % short(str(mine), 900))
    logout, failed, ok = mine[0], mine[1], mine[2]  # newest first
    expect_eq((subtype(logout), logout["outcome"]), ("110123", "0"), "the logout")
    expect_eq((subtype(failed), failed["outcome"]), ("110122", "4"), "the failed login")
    expect_eq(failed.get("outcomeDesc"), "EUNAUTH: bad_secret", "why the login failed")
    expect_eq((subtype(ok), ok["outcome"]), ("110122", "0"), "the login")
    for ev in (logout, failed, ok):
        expect_eq(ev["type"]["code"], "110114", "User Authentication")
        expect_eq(ev["agent"][0]["role"][0]["coding"][0]["code"], "doctor", "the actor's role")
        expect_eq(ev["agent"][1]["who"]["reference"], "Organization/hosp-fz-1", "the institution")
        expect_eq(ev["agent"][0]["network"]["address"], "127.0.0.1", "where from")
    expect(int(failed["id"]) < int(logout["id"]), "ids are the chain's seq, newest first")
    unknown = [ev for ev in evs if ev.get("outcomeDesc") == "EUNAUTH: unknown_account"]
    expect(unknown and actor(unknown[0]) == "anonymous", "a login by an unknown name: %s" % (
        short(str(unknown), 600)))
    text = str(evs)
    for secret in (ghost, "Typed-Secret-77", "Wrong-Password-1", e.pw["dr.trail"], tok):
        expect(secret not in text, "the trail holds what was typed or a token: %r" % secret)
    # The regulator's own login, with its second factor, is there too.
    expect(any(actor(ev) == "reg.trail" and subtype(ev) == "110122" and ev["outcome"] == "0"
               for ev in evs), "the regulator's login")


def test_lockout_and_account_changes_are_in_the_trail(t):
    e = env_of(t)
    e.add("locked.out", "pharmacist", "--org", "Organization/chc-xm-siming")
    for i in range(THRESHOLD):
        login(e.srv, "locked.out", "Wrong-Password-%d" % i)
    cli(t, e.env, e.db, "lock", "locked.out")
    evs = events(search(e, "_count=20"))
    descs = [ev.get("outcomeDesc") for ev in evs if actor(ev) == "locked.out"]
    expect("EUNAUTH: lockout" in descs, "the failure that locks is recorded: %s" % descs)
    admin = [ev for ev in evs if actor(ev).startswith("cli:")]
    expect(admin, "`user lock` is recorded: %s" % short(str(evs[:3]), 900))
    ev = admin[0]
    expect_eq(ev.get("outcomeDesc"), "lock", "what the administrator did")
    expect_eq(ev["entity"][0]["what"]["identifier"]["value"], "locked.out", "which account")
    expect_eq(subtype(ev), "110137", "User Security Attributes Changed")
    adds = [x for x in evs if actor(x).startswith("cli:") and x.get("outcomeDesc") == "add"]
    expect(adds, "`user add` is recorded")


def test_read_one_audit_event_and_unknown_ids(t):
    e = env_of(t)
    ev = events(search(e, "_count=1"))[0]
    r = e.srv.get(AUDIT + "/" + ev["id"], bearer(e.reg))
    expect_status(r, 200, "read AuditEvent/" + ev["id"])
    got = r.json
    expect_eq((got["resourceType"], got["id"], got["recorded"]),
              ("AuditEvent", ev["id"], ev["recorded"]), "the same record")
    expect_eq(r.header("Cache-Control"), "no-store", "the trail is not cached")
    for bad in ("999999999", "abc", "0"):
        expect_outcome(e.srv.get(AUDIT + "/" + bad, bearer(e.reg)), 404, "not-found",
                       what="AuditEvent/" + bad)
    expect_outcome(e.srv.get(AUDIT + "/a_b", bearer(e.reg)), 400, what="not an id")
    expect_outcome(e.srv.get(AUDIT + "/1/_history", bearer(e.reg)), 404, what="history")
    # The read itself was recorded, as a read of that AuditEvent.
    newest = events(search(e, "_count=2"))
    reads = [x for x in newest if subtype(x) == "read"]
    expect(reads and actor(reads[0]) == "reg.trail", "the reads are recorded: %s" % short(
        str(newest), 900))


def test_search_parameters(t):
    e = env_of(t)
    for query, param in (("date=2026", "date"), ("_count=abc", "_count"), ("_count=0", "_count"),
                         ("_cursor=x", "_cursor"), ("patient=a/b/c", "patient"),
                         ("patient=pat-a&patient=pat-b", "patient"), ("_sort=date", "_sort")):
        r = e.srv.get(AUDIT + "?" + query, bearer(e.reg))
        issues = expect_outcome(r, 400, expression=param, what=query)
        expect(any(param in i["diagnostics"] for i in issues), "%s: the message names %s: %s" % (
            query, param, issues))
    b = search(e, "_count=5000")
    expect(len(events(b)) <= 1000, "_count is capped at 1000")
    expect_eq(b["type"], "searchset", "a searchset Bundle")
    expect(any(x["relation"] == "self" for x in b["link"]), "a self link")
    expect_eq(events(search(e, "patient=Patient/pat-zz")), [], "Patient/id is accepted")


def test_only_regulators_read_the_trail(t):
    e = env_of(t)
    expect_outcome(e.srv.get(AUDIT), 401, what="no token")
    expect_outcome(e.srv.get(AUDIT, bearer("A" * 43)), 401, what="an unknown token")
    for name in ("dr.trail", "nurse.trail", "res.a"):
        tok = e.token(name)
        expect_outcome(e.srv.get(AUDIT, bearer(tok)), 403, "forbidden", what=name + " searches")
        expect_outcome(e.srv.get(AUDIT + "/1", bearer(tok)), 403, "forbidden",
                       what=name + " reads")
    # The refusals are in the trail, as searches and reads refused.
    evs = events(search(e, "_count=30"))
    refused = [(actor(ev), subtype(ev)) for ev in evs if ev.get("outcomeDesc") == "EFORBIDDEN"]
    for name in ("dr.trail", "nurse.trail", "res.a"):
        expect((name, "search-type") in refused and (name, "read") in refused,
               "%s's refused attempts are recorded: %s" % (name, refused))


def test_the_trail_cannot_be_changed_through_the_api(t):
    e = env_of(t)
    body = {"resourceType": "AuditEvent", "type": {"code": "rest"}, "recorded": "2026-01-01T00:00:00Z",
            "agent": [{"requestor": True}], "source": {"observer": {"display": "x"}}}
    first = events(search(e, "_count=1"))[0]["id"]
    for method, path in (("POST", AUDIT), ("PUT", AUDIT + "/1"), ("PATCH", AUDIT + "/1"),
                         ("DELETE", AUDIT + "/1"), ("DELETE", AUDIT), ("PUT", AUDIT),
                         ("POST", AUDIT + "/_search"), ("POST", AUDIT + "/1/$meta-add"),
                         ("PUT", AUDIT + "/1/_history/1")):
        for headers in ({}, bearer(e.reg)):
            r = e.srv.request(method, path, body if method in ("POST", "PUT") else None,
                              dict(headers, **{"Content-Type": "application/fhir+json"}))
            issues = expect_outcome(r, 405, "not-supported", what="%s %s" % (method, path))
            expect(any("cannot be changed" in i["diagnostics"] for i in issues),
                   "%s %s: %s" % (method, path, issues))
            expect_eq(r.header("Allow"), "GET", "%s %s: Allow" % (method, path))
    expect_status(e.srv.get(AUDIT + "/" + first, bearer(e.reg)), 200, "the record is still there")
    # Attempts with a token are recorded, as the interaction refused.
    evs = events(search(e, "_count=40"))
    tried = {(subtype(ev), ev.get("outcomeDesc")) for ev in evs if actor(ev) == "reg.trail"}
    for sub in ("create", "update", "patch", "delete"):
        expect((sub, "EMETHOD") in tried, "a refused %s is recorded: %s" % (sub, tried))


def test_paging_newest_first(t):
    e = env_of(t)
    for i in range(4):
        login(e.srv, "nurse.trail", "Wrong-Password-p%d" % i)
    url, seen, pages = AUDIT + "?_count=3", [], 0
    while url:
        b = e.srv.get(url, bearer(e.reg))
        expect_status(b, 200, "page %d" % pages)
        b = b.json
        page = [int(ev["id"]) for ev in events(b)]
        expect(len(page) <= 3, "a page holds at most _count records")
        seen += page
        url = next_url(b, e.srv.base)
        pages += 1
        expect(pages < 1000, "too many pages")
    expect(pages >= 3, "several pages: %d" % pages)
    expect_eq(seen, sorted(seen, reverse=True), "newest first, no record twice")
    expect_eq(len(seen), len(set(seen)), "no record twice")
    full = [int(ev["id"]) for ev in events(search(e, "_count=1000"))]
    expect_eq(seen, [s for s in full if s <= seen[0]], "the pages together hold every record")
    expect_eq(seen[-1], 1, "down to the first record")


# ---- what a resident reads ----

def test_resident_sees_who_accessed_their_own_records(t):
    e = env_of(t)
    for q in ("patient=pat-a", "patient=Patient/pat-a", "patient=pat-b"):
        search(e, q)  # a regulator looking into a patient's trail is an access to it
    ta, tb = e.token("res.a"), e.token("res.b")
    r = access_log(e, ta)
    expect_eq(r.header("Cache-Control"), "no-store", "the access log is not cached")
    log = r.json
    expect_eq(log.get("patient"), "pat-a", "whose log")
    seqs = [x["seq"] for x in log["entries"]]
    # The regulator sees which records are about pat-a: the resident sees exactly those.
    about_a = [int(ev["id"]) for ev in events(search(e, "_count=1000"))
               if "Patient/pat-a" in patients(ev)]
    expect_eq(seqs, [s for s in about_a if s <= max(seqs)], "exactly pat-a's records")
    regs = [x for x in log["entries"] if x.get("role") == "regulator"]
    expect_eq(len(regs), 2, "two searches by the regulator about pat-a")
    for x in regs:
        expect(PSEUDONYM.match(x["actor"]), "a pseudonym, not the user name: %r" % x["actor"])
        expect_eq((x["organization"], x["role_label"], x["action"], x["resource_type"],
                   x["outcome"], x["is_self"]),
                  ("Organization/region-350000", "监管人员", "search", "AuditEvent", "success",
                   False), "what the resident sees")
        expect(re.match(r"^\d{4}-\d\d-\d\dT", x["time"]), "when")
    expect_eq(regs[0]["actor"], regs[1]["actor"], "one actor, one stable pseudonym")
    text = r.body.decode("utf-8")
    for hidden in ("reg.trail", "127.0.0.1", "X-Request-Id", "cli:"):
        expect(hidden not in text, "the access log shows %r: %s" % (hidden, short(text, 600)))
    # Reading the log is an access too: the next read shows it, as the resident's own.
    again = access_log(e, ta).json["entries"]
    expect(again[0]["is_self"] and again[0]["actor"] == "you", "my own read: %s" % again[0])
    # Resident B sees B's records only.
    logb = access_log(e, tb).json
    expect_eq(logb["patient"], "pat-b", "B's log")
    about_b = [int(ev["id"]) for ev in events(search(e, "_count=1000"))
               if "Patient/pat-b" in patients(ev)]
    expect(set(x["seq"] for x in logb["entries"]) <= set(about_b), "B sees none of A's records")
    expect_eq(len([x for x in logb["entries"] if x.get("role") == "regulator"]), 1,
              "the one search about pat-b")


def test_access_log_paging_and_refusals(t):
    e = env_of(t)
    ta = e.token("res.a")
    for i in range(3):
        access_log(e, ta)
    url, seen = "/api/me/access-log?limit=2", []
    while url:
        b = e.srv.get(url, bearer(ta))
        expect_status(b, 200, url)
        b = b.json
        expect(len(b["entries"]) <= 2, "limit")
        seen += [x["seq"] for x in b["entries"]]
        url = b.get("next")
        if url:
            expect(url.startswith(e.srv.base), "next %r" % url)
            url = url[len(e.srv.base):]
    expect(len(seen) >= 4, "several pages: %s" % seen)
    expect_eq(seen, sorted(set(seen), reverse=True), "newest first, each once")
    for q in ("before=x", "limit=0", "patient=pat-b"):
        expect_outcome(access_log(e, ta, q, 400), 400, what=q)
    expect_outcome(e.srv.get("/api/me/access-log"), 401, what="no token")
    for name in ("dr.trail", "res.none"):
        expect_outcome(access_log(e, e.token(name), status=403), 403, "forbidden", what=name)
    expect_outcome(access_log(e, e.reg, status=403), 403, "forbidden", what="a regulator")


# ---- security off, and the chain after a stop ----

def test_security_off_is_loud_and_records_nothing(t):
    e = env_of(t)
    db = t.fresh_db_url("trailoff")
    cli(t, e.env, db, "add", "dr.off", "--role", "doctor", "--org", "Organization/hosp-fz-1",
        password="Off-Password-123")
    srv = t.start_server("trail-off", db, env={"JIANKANG_SECURITY": "off",
                                               "JIANKANG_SECURITY_RULES": e.rules})
    try:
        with open(srv.out_path, encoding="utf-8") as f:
            out = f.read()
        expect("security is off: development only" in out, "the warning on stdout: %s" % out)
        expect_status(login(srv, "dr.off", "Off-Password-123"), 200, "login")
        b = srv.get(AUDIT)
        expect_status(b, 200, "AuditEvent without a token")
        evs = events(b.json)
        expect(len(evs) == 1 and actor(evs[0]).startswith("cli:") and
               evs[0].get("outcomeDesc") == "add",
               "only the `user add` of the command line; no login, no read: %s" % short(
                   str(evs), 900))
    finally:
        expect_eq(srv.stop(), 0, "the security-off server stops cleanly")
    with open(srv.log_path, encoding="utf-8") as f:
        expect("security is off" in f.read(), "the warning in the log")


def test_zz_clean_stop_leaves_the_chain_intact_and_signed(t):
    e = env_of(t)
    ta = e.token("res.a")
    label = [x["actor"] for x in access_log(e, ta).json["entries"]
             if x.get("role") == "regulator"][0]
    expect_eq(e.srv.stop(), 0, "the audit server stops cleanly")
    rc, out = verify(e, e.db)
    expect_eq(rc, 0, "audit verify after a clean stop: %s" % out)
    m = re.search(r"audit trail intact: (\d+) records \(seq 1 to (\d+)\), (\d+) checkpoints", out)
    expect(m and int(m.group(3)) >= 1, "intact with checkpoints: %s" % out)
    expect("covered by the chain only" not in out,
           "the last record is signed by the checkpoint at shutdown: %s" % out)
    n = int(m.group(2))

    # The pseudonyms come from the key file: the same after a restart.
    e.srv.start()
    ta = e.token("res.a")
    again = [x["actor"] for x in access_log(e, ta).json["entries"] if x.get("role") == "regulator"]
    expect_eq(again[0], label, "a pseudonym is stable across restarts")
    expect_eq(e.srv.stop(), 0, "stops cleanly again")
    rc, out = verify(e, e.db)
    expect(rc == 0 and "seq 1 to %d" % n not in out, "verify after more records: %s" % out)

    if t.backend != "sqlite":
        return  # editing a row by hand is shown once, on the SQLite file
    path = e.db[len("sqlite:"):]
    victim = n // 2
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE audit_event SET actor = 'someone-else' WHERE seq = ?", (victim,))
    rc, out = verify(e, e.db)
    expect_eq(rc, 1, "audit verify after an edit: %s" % out)
    expect("first broken link at seq %d:" % victim in out, "the edited seq is named: %s" % out)
