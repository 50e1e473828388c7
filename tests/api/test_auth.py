"""test_auth.py - logging in, as a client sees it: the token endpoint with the password and
client_credentials grants and RFC 6749 error responses, lockout after failed logins and unlock,
the TOTP second factor of administrators, revocation (RFC 7009), GET /auth/me, rate limits
(429 with Retry-After), and that no password, token or secret ends up in the server's log.

Accounts are made the way an operator makes them, with `jiankang user add` on a fresh database
of the run's backend, before a server of this module's own starts on it. That server reads a
rules file of its own (JIANKANG_SECURITY_RULES): the cheapest password hash, a lockout after
3 failures, and rate limits high enough for these tests; the rate-limit test starts one more
server with low limits."""
import base64
import hashlib
import hmac
import json
import os
import re
import struct
import subprocess
import time
import uuid
from urllib.parse import urlencode

from run import ROOT, SANITIZER_MARKS, expect, expect_eq, expect_status, short

THRESHOLD = 5
SECRETS = []  # every password, secret and token used: none may appear in a server log

# ---- helpers ----


def rules_file(t, name, **limits):
    """A copy of rules/security.json with the cheapest hash, the lockout threshold above and
    the rate limits given as code=(limit, window_seconds)."""
    with open(os.path.join(ROOT, "rules", "security.json"), encoding="utf-8") as f:
        rules = json.load(f)
    r = rules["rules"]
    r["password.hash_cost"]["value"] = {"ops_limit": 1, "mem_limit_kib": 8}
    r["login.lockout_threshold"]["value"] = THRESHOLD
    for code, (limit, window) in limits.items():
        r[code]["value"] = {"limit": limit, "window_seconds": window}
    path = os.path.join(t.workdir, "rules-%s.json" % name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rules, f, ensure_ascii=False, indent=1)
    return path


def cli_env(rules_path):
    e = dict(os.environ)
    e.update({"JIANKANG_SECURITY_RULES": rules_path, "JIANKANG_ACCESS_LOG": "off",
              "ASAN_OPTIONS": e.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
              "UBSAN_OPTIONS": e.get("UBSAN_OPTIONS", "print_stacktrace=1")})
    return e


def cli(t, env, db, *args, password=None, status=0):
    """Runs `jiankang user ARGS --db DB`; returns stdout. password goes to standard input."""
    cmd = [t.binary, "user"] + list(args) + ["--db", db]
    if password is not None:
        cmd.append("--password-stdin")
    r = subprocess.run(cmd, input=(password + "\n").encode() if password is not None else None,
                       capture_output=True, timeout=120, env=env, cwd=ROOT)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    for mark in SANITIZER_MARKS:
        expect(mark not in err, "jiankang user %s: a sanitizer report:\n%s" % (
            " ".join(args), err[:3000]))
    expect(r.returncode == status, "jiankang user %s: exit %d (expected %d); stderr: %s" % (
        " ".join(args), r.returncode, status, short(err, 600)))
    return out + err


def totp(secret, at=None):
    """The RFC 6238 code of secret (base32) at time at (seconds; default now)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // 30)
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    off = mac[-1] & 15
    return "%06d" % ((struct.unpack(">I", mac[off:off + 4])[0] & 0x7fffffff) % 1000000)


def form(srv, path, fields, headers=None):
    h = {"Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers or {})
    return srv.request("POST", path, urlencode(fields), h)


def login(srv, username, password, **extra):
    fields = {"grant_type": "password", "username": username, "password": password}
    fields.update(extra)
    return form(srv, "/auth/token", fields)


def expect_oauth_error(r, status, error, reason=None, what=""):
    """An RFC 6749 section 5.2 error: JSON with error and error_description, never cached."""
    expect_status(r, status, what)
    expect("json" in (r.header("Content-Type") or ""), "%s: Content-Type %r" % (
        what, r.header("Content-Type")))
    body = r.json
    expect_eq(body.get("error"), error, what + ": error")
    expect(isinstance(body.get("error_description"), str) and body["error_description"],
           "%s: no error_description in %s" % (what, r.snippet()))
    expect(all(0x20 <= ord(ch) < 0x7f and ch not in '"\\' for ch in body["error_description"]),
           "%s: error_description must be plain ASCII (RFC 6749): %r" % (
               what, body["error_description"]))
    if reason is not None:
        expect_eq(body.get("reason"), reason, what + ": reason")
    expect_eq(r.header("Cache-Control"), "no-store", what + ": Cache-Control")
    return body


def expect_token(r, what=""):
    expect_status(r, 200, what)
    body = r.json
    expect_eq(body.get("token_type"), "Bearer", what + ": token_type")
    tok = body.get("access_token")
    expect(isinstance(tok, str) and re.match(r"^[A-Za-z0-9_-]{43}$", tok),
           "%s: access_token %r is not 32 random bytes in base64url" % (what, tok))
    expect(isinstance(body.get("expires_in"), int) and body["expires_in"] > 0,
           "%s: expires_in %r" % (what, body.get("expires_in")))
    expect_eq(r.header("Cache-Control"), "no-store", what + ": Cache-Control")
    expect_eq(r.header("Pragma"), "no-cache", what + ": Pragma")
    SECRETS.append(tok)
    return body


def me(srv, token):
    return srv.request("GET", "/auth/me", headers={"Authorization": "Bearer " + token})


def fresh_code_window():
    """Waits, if need be, so that the next few seconds stay inside one 30 s TOTP step."""
    left = 30 - time.time() % 30
    if left < 5:
        time.sleep(left + 0.2)


class Env:
    """The module's database, accounts and server (made once, on first use)."""

    def __init__(self, t):
        self.t = t
        self.rules = rules_file(t, "auth", **{
            "rate.login.per_address": (100000, 60), "rate.login.per_account": (100000, 60),
            "rate.expensive.per_address": (100000, 60),
            "rate.expensive.per_account": (100000, 60)})
        self.env = cli_env(self.rules)
        self.db = t.fresh_db_url("auth")
        self.pw = {}
        self.totp = {}
        self.add("li.wei", "doctor", "--org", "Organization/hosp-fz-1", "--link",
                 "PractitionerRole/prac-1-role")
        self.add("wang.xm", "resident", "--link", "Patient/pat-1")
        self.add("root", "platform-admin")
        self.add("his-fz-1", "system", "--org", "Organization/hosp-fz-1")
        self.srv = t.start_server("auth", self.db, env={"JIANKANG_SECURITY_RULES": self.rules,
                                                        "JIANKANG_SECURITY": "on"})

    def add(self, name, role, *args):
        pw = "Pw-%s-%s" % (uuid.uuid4().hex[:10], "X9")
        out = cli(self.t, self.env, self.db, "add", name, "--role", role, *args, password=pw)
        expect("created account %s" % name in out, "user add %s: %s" % (name, short(out, 400)))
        m = re.search(r"secret: ([A-Z2-7]+)", out)
        if m:
            self.totp[name] = m.group(1)
            SECRETS.append(m.group(1))
        self.pw[name] = pw
        SECRETS.append(pw)
        return pw


ENV = {}


def env_of(t):
    if id(t) not in ENV:
        ENV[id(t)] = Env(t)
    return ENV[id(t)]


# ---- the token endpoint ----

def test_password_grant_gives_a_bearer_token_and_me(t):
    e = env_of(t)
    body = expect_token(login(e.srv, "li.wei", e.pw["li.wei"]), "doctor login")
    expect_eq(body.get("scope"), "user/*.cruds", "doctor scope")
    expect_eq(body.get("expires_in"), 3600, "token lifetime from the rules")
    # User names are not case-sensitive.
    expect_token(login(e.srv, "Li.Wei", e.pw["li.wei"]), "login with capitals")
    r = me(e.srv, body["access_token"])
    expect_status(r, 200, "/auth/me")
    who = r.json
    for k, v in (("username", "li.wei"), ("role", "doctor"),
                 ("organization", "Organization/hosp-fz-1"),
                 ("link", "PractitionerRole/prac-1-role"), ("scope", "user/*.cruds"),
                 ("second_factor", False)):
        expect_eq(who.get(k), v, "/auth/me " + k)
    expect(re.match(r"^\d{4}-\d\d-\d\dT", who.get("expires_at", "")), "/auth/me expires_at")
    text = r.body.decode("utf-8")
    for secret in (e.pw["li.wei"], body["access_token"], "argon2"):
        expect(secret not in text, "/auth/me must not show secrets: %s" % text)


def test_resident_gets_the_patient_scope_and_context(t):
    e = env_of(t)
    body = expect_token(login(e.srv, "wang.xm", e.pw["wang.xm"]), "resident login")
    expect_eq(body.get("scope"), "patient/*.rs patient/Consent.cud", "resident scope")
    expect_eq(body.get("patient"), "pat-1", "SMART patient context")
    narrow = expect_token(login(e.srv, "wang.xm", e.pw["wang.xm"],
                                scope="patient/Observation.rs patient/Patient.r"), "narrower")
    expect_eq(narrow.get("scope"), "patient/Observation.rs patient/Patient.r", "narrowed scope")
    expect_oauth_error(login(e.srv, "wang.xm", e.pw["wang.xm"], scope="user/*.cruds"), 400,
                       "invalid_scope", what="a resident asking for staff scopes")
    expect_oauth_error(login(e.srv, "wang.xm", e.pw["wang.xm"], scope="patient/*.cruds"), 400,
                       "invalid_scope", what="a resident asking to write")
    expect_oauth_error(login(e.srv, "wang.xm", e.pw["wang.xm"], scope="patient/Observation.c"),
                       400, "invalid_scope", what="a resident asking to write records")


def test_wrong_password_and_unknown_user_look_the_same(t):
    e = env_of(t)
    e.add("chen.j", "nurse", "--org", "Organization/hosp-fz-1")
    wrong = expect_oauth_error(login(e.srv, "chen.j", "Not-The-Password-1"), 400,
                               "invalid_grant", "invalid_credentials", "wrong password")
    unknown = expect_oauth_error(login(e.srv, "nobody-" + uuid.uuid4().hex[:6], "Whatever-123"),
                                 400, "invalid_grant", "invalid_credentials", "unknown user")
    expect_eq(unknown, wrong, "an unknown user name gets the same answer as a wrong password")
    expect_oauth_error(login(e.srv, "bad name!", "Whatever-123"), 400, "invalid_grant",
                       "invalid_credentials", "a user name that cannot exist")
    expect_token(login(e.srv, "chen.j", e.pw["chen.j"]), "the right password still works")


def test_malformed_token_requests_are_invalid_request(t):
    e = env_of(t)
    s = e.srv
    expect_oauth_error(form(s, "/auth/token", {"username": "li.wei", "password": "x"}), 400,
                       "invalid_request", what="no grant_type")
    expect_oauth_error(form(s, "/auth/token", {"grant_type": "authorization_code", "code": "x"}),
                       400, "unsupported_grant_type", what="another grant")
    expect_oauth_error(form(s, "/auth/token", {"grant_type": "password", "username": "li.wei"}),
                       400, "invalid_request", what="no password")
    expect_oauth_error(form(s, "/auth/token", {"grant_type": "password", "username": "li.wei",
                                               "password": ""}),
                       400, "invalid_request", what="an empty password is no password")
    dup = "grant_type=password&username=li.wei&password=a&password=b"
    expect_oauth_error(s.request("POST", "/auth/token", dup, {
        "Content-Type": "application/x-www-form-urlencoded"}), 400, "invalid_request",
        what="a parameter twice")
    expect_oauth_error(s.request("POST", "/auth/token", {"grant_type": "password"}), 400,
                       "invalid_request", what="JSON instead of a form")
    expect_status(s.get("/auth/token"), 405, "GET /auth/token")


def test_form_encoding_of_passwords(t):
    """A password with spaces, '+', '&', '%' and Chinese arrives as typed."""
    e = env_of(t)
    pw = "Ab1 +&%=密码 x"
    SECRETS.append(pw)
    cli(t, e.env, e.db, "add", "zhang.w", "--role", "doctor", "--org", "Organization/hosp-fz-1",
        password=pw)
    expect_token(login(e.srv, "zhang.w", pw), "login with an awkward password")
    expect_oauth_error(login(e.srv, "zhang.w", pw.replace(" ", "+")), 400, "invalid_grant",
                       what="'+' and ' ' are different characters")


def test_client_credentials_grant(t):
    e = env_of(t)
    s, secret = e.srv, e.pw["his-fz-1"]
    body = expect_token(form(s, "/auth/token", {"grant_type": "client_credentials",
                                                "client_id": "his-fz-1",
                                                "client_secret": secret}), "client in the form")
    expect_eq(body.get("scope"), "system/*.cruds", "system scope")
    basic = base64.b64encode(("his-fz-1:" + secret).encode()).decode()
    expect_token(form(s, "/auth/token", {"grant_type": "client_credentials"},
                      {"Authorization": "Basic " + basic}), "client with Basic")
    r = form(s, "/auth/token", {"grant_type": "client_credentials", "client_id": "his-fz-1",
                                "client_secret": "Wrong-Secret-123"})
    expect_oauth_error(r, 401, "invalid_client", "invalid_credentials", "wrong client secret")
    expect(r.header("WWW-Authenticate"), "401 invalid_client needs WWW-Authenticate")
    bad = base64.b64encode(b"his-fz-1:Wrong-Secret-123").decode()
    expect_oauth_error(form(s, "/auth/token", {"grant_type": "client_credentials"},
                            {"Authorization": "Basic " + bad}), 401, "invalid_client",
                       what="wrong secret in Basic")
    # A person is not a client, and a client is not a person.
    expect_oauth_error(form(s, "/auth/token", {"grant_type": "client_credentials",
                                               "client_id": "li.wei",
                                               "client_secret": e.pw["li.wei"]}),
                       401, "invalid_client", "wrong_grant", "a person as a client")
    expect_oauth_error(login(s, "his-fz-1", secret), 400, "invalid_grant", "wrong_grant",
                       "a client with the password grant")
    who = me(s, body["access_token"]).json
    expect_eq(who.get("role"), "system", "client /auth/me role")


# ---- lockout ----

def test_lockout_after_failures_and_unlock(t):
    e = env_of(t)
    pw = e.add("lock.me", "pharmacist", "--org", "Organization/chc-xm-siming")
    s = e.srv
    for i in range(THRESHOLD - 1):
        expect_oauth_error(login(s, "lock.me", "Wrong-Password-%d" % i), 400, "invalid_grant",
                           "invalid_credentials", "failure %d" % (i + 1))
    expect_oauth_error(login(s, "lock.me", "Wrong-Password-x"), 400, "invalid_grant",
                       "locked", "the failure that locks")
    body = expect_oauth_error(login(s, "lock.me", pw), 400, "invalid_grant", "locked",
                              "the right password while locked out")
    expect("15" in body["error_description"], "the lockout says how long: %r" %
           body["error_description"])
    out = cli(t, e.env, e.db, "list")
    expect(re.search(r"lock\.me .*locked out until", out), "user list shows the lockout: %s" %
           short(out, 800))
    cli(t, e.env, e.db, "unlock", "lock.me")
    tok = expect_token(login(s, "lock.me", pw), "after unlock")["access_token"]

    # An administrator's lock refuses the password and ends the tokens already given.
    cli(t, e.env, e.db, "lock", "lock.me")
    expect_oauth_error(login(s, "lock.me", pw), 400, "invalid_grant", "disabled",
                       "locked by an administrator")
    expect_status(me(s, tok), 401, "a token of a locked account")
    cli(t, e.env, e.db, "unlock", "lock.me")
    expect_token(login(s, "lock.me", pw), "unlocked again")
    expect_status(me(s, tok), 401, "a revoked token stays revoked")


def test_cli_refuses_weak_passwords_and_shows_no_secrets(t):
    e = env_of(t)
    out = cli(t, e.env, e.db, "add", "weak.pw", "--role", "nurse", "--org",
              "Organization/hosp-fz-1", password="short", status=1)
    expect("security.password.min_length" in out, "the refusal names the rule: %s" % out)
    out = cli(t, e.env, e.db, "add", "li.wei", "--role", "nurse", "--org",
              "Organization/hosp-fz-1", password="Another-Password-1", status=1)
    expect("taken" in out, "a second li.wei: %s" % out)
    out = cli(t, e.env, e.db, "add", "no.org", "--role", "doctor", password="Correct-Horse-9",
              status=2)
    # A generated password is printed once and works.
    out = cli(t, e.env, e.db, "add", "gen.pw", "--role", "public-health", "--org",
              "Organization/region-350100")
    m = re.search(r"password \(shown once\): (\S+)", out)
    expect(m, "user add prints the generated password: %s" % out)
    SECRETS.append(m.group(1))
    expect_token(login(e.srv, "gen.pw", m.group(1)), "the generated password")
    out = cli(t, e.env, e.db, "passwd", "gen.pw", password="Brand-New-Pass-7")
    SECRETS.append("Brand-New-Pass-7")
    expect_oauth_error(login(e.srv, "gen.pw", m.group(1)), 400, "invalid_grant",
                       what="the old password after passwd")
    expect_token(login(e.srv, "gen.pw", "Brand-New-Pass-7"), "the new password")
    listing = cli(t, e.env, e.db, "list")
    for name in ("li.wei", "root", "his-fz-1", "gen.pw"):
        expect(name in listing, "user list shows %s: %s" % (name, short(listing, 600)))
    for secret in SECRETS + ["argon2"]:
        expect(secret not in listing, "user list shows a secret")


# ---- the second factor ----

def test_totp_required_for_platform_admin(t):
    e = env_of(t)
    s, pw, secret = e.srv, e.pw["root"], e.totp.get("root")
    expect(secret, "user add root (platform-admin) prints a TOTP secret")
    expect_oauth_error(login(s, "root", pw), 400, "invalid_grant", "totp_required",
                       "no code")
    fresh_code_window()
    now = time.time()
    wrong = "%06d" % ((int(totp(secret, now)) + 1) % 1000000)
    expect_oauth_error(login(s, "root", pw, totp=wrong), 400, "invalid_grant", "totp_invalid",
                       "a wrong code")
    expect_oauth_error(login(s, "root", pw, totp=totp(secret, now - 90)), 400, "invalid_grant",
                       "totp_invalid", "a code three steps old")
    expect_oauth_error(login(s, "root", "Wrong-Password-1", totp=totp(secret, now)), 400,
                       "invalid_grant", "invalid_credentials", "a right code, a wrong password")
    # The previous step's code is still accepted (clock drift), once.
    body = expect_token(login(s, "root", pw, totp=totp(secret, now - 30)), "code of step -1")
    expect_oauth_error(login(s, "root", pw, totp=totp(secret, now - 30)), 400, "invalid_grant",
                       "totp_invalid", "the same code again")
    expect_token(login(s, "root", pw, totp=totp(secret, now)), "the current code")
    expect_eq(me(s, body["access_token"]).json.get("second_factor"), True,
              "/auth/me second_factor")
    # A new secret from `user totp` replaces the old one.
    out = cli(t, e.env, e.db, "totp", "root")
    m = re.search(r"secret: ([A-Z2-7]+)", out)
    expect(m and "otpauth://totp/Jiankang:root?secret=" in out, "user totp: %s" % out)
    SECRETS.append(m.group(1))
    fresh_code_window()
    expect_oauth_error(login(s, "root", pw, totp=totp(secret)), 400, "invalid_grant",
                       "totp_invalid", "the old secret")
    expect_token(login(s, "root", pw, totp=totp(m.group(1))), "the new secret")


# ---- revocation and /auth/me ----

def test_revoke_ends_a_token(t):
    e = env_of(t)
    s = e.srv
    tok = expect_token(login(s, "li.wei", e.pw["li.wei"]), "login")["access_token"]
    other = expect_token(login(s, "li.wei", e.pw["li.wei"]), "second login")["access_token"]
    expect_status(me(s, tok), 200, "before revoke")
    r = form(s, "/auth/revoke", {"token": tok, "token_type_hint": "access_token"})
    expect_status(r, 200, "revoke")
    r = me(s, tok)
    expect_status(r, 401, "after revoke")
    expect('error="invalid_token"' in (r.header("WWW-Authenticate") or ""),
           "401 names invalid_token: %r" % r.header("WWW-Authenticate"))
    expect_status(me(s, other), 200, "the other token lives on")
    # Unknown tokens and repeated revocations are fine (RFC 7009 section 2.2).
    expect_status(form(s, "/auth/revoke", {"token": tok}), 200, "revoke twice")
    expect_status(form(s, "/auth/revoke", {"token": "no-such-token"}), 200, "revoke junk")
    expect_oauth_error(form(s, "/auth/revoke", {}), 400, "invalid_request", what="no token")


def test_me_needs_a_valid_bearer_token(t):
    e = env_of(t)
    s = e.srv
    r = s.get("/auth/me")
    expect_status(r, 401, "no Authorization")
    expect((r.header("WWW-Authenticate") or "").startswith("Bearer"), "WWW-Authenticate Bearer")
    for bad in ("Bearer ", "Bearer abc", "Bearer " + "A" * 43, "Basic " + "A" * 43,
                "Bearer " + "A" * 42 + "=", "Bearer " + "A" * 4000):
        expect_status(s.get("/auth/me", headers={"Authorization": bad}), 401, repr(bad[:20]))


# ---- rate limits ----

def test_repeated_logins_get_429_with_retry_after(t):
    e = env_of(t)
    rules = rules_file(t, "rate", **{"rate.login.per_address": (6, 60),
                                     "rate.login.per_account": (3, 60)})
    srv = t.start_server("auth-rate", e.db, env={"JIANKANG_SECURITY_RULES": rules,
                                               "JIANKANG_SECURITY": "on"})
    try:
        pw = e.pw["wang.xm"]
        for i in range(3):
            expect_token(login(srv, "wang.xm", pw), "login %d of 3 for one account" % (i + 1))
        r = login(srv, "wang.xm", pw)
        expect_oauth_error(r, 429, "slow_down", "rate_limited", "a fourth login within a minute")
        retry = r.header("Retry-After")
        expect(retry and retry.isdigit() and 1 <= int(retry) <= 60,
               "Retry-After must be seconds, got %r" % retry)
        # Other accounts from the same address go on until the address limit (6).
        for i in range(2):
            expect_status(login(srv, "li.wei", e.pw["li.wei"]), 200, "another account")
        r = login(srv, "chen.j", e.pw["chen.j"])
        expect_oauth_error(r, 429, "slow_down", what="the address limit")
        expect(r.header("Retry-After"), "Retry-After on the address limit")
        # The limit is per address: the healthy check and other endpoints are untouched.
        expect_status(srv.get("/healthz"), 200, "healthz while rate limited")
    finally:
        expect_eq(srv.stop(), 0, "the rate-limit server stops cleanly")


# ---- last: the logs ----

def test_zz_no_secret_in_server_logs(t):
    e = env_of(t)
    expect_eq(e.srv.stop(), 0, "the auth server stops cleanly")
    for s in [e.srv] + [x for x in t.extra if x.name.startswith("auth")]:
        for path in s.logs:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
            for secret in SECRETS:
                expect(secret not in text, "%s holds a password, token or secret" % path)
            expect("argon2" not in text, "%s holds a password hash" % path)
