#!/usr/bin/env python3
"""run.py - the API test harness: starts the real server and speaks HTTP to it.

    python3 tests/api/run.py --binary build/jiankang-san --backend sqlite|postgresql [-k PATTERN]

Creates a temporary directory (and, for postgresql, a throwaway cluster with
tools/pg-test-cluster.sh), starts `BINARY serve` on 127.0.0.1 with a free port and a fresh
database, runs every test of the tests/api/test_*.py modules, stops the server with SIGTERM
and checks that it exited 0 and that its standard error holds no sanitizer report. Prints one
line per failing test and ends with `api-BACKEND: N passed, N failed[, N skipped]`; exits 1
on any failure.

A test is a function `test_NAME(t)` of a test module, or one of the (name, function) pairs its
`generate_tests()` returns (data-driven tests read tests/api/cases/). `t` is the Ctx below:
the running server, HTTP helpers, and helpers that check FHIR responses. A test fails by
raising Failure (through the expect* helpers) or any other exception; Skip skips it.
Python 3 standard library only.
"""
import argparse
import fnmatch
import http.client
import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import uuid
from urllib.parse import urlsplit

if __name__ == "__main__":  # test modules `import run`: make that this very module
    sys.modules.setdefault("run", sys.modules["__main__"])

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASES = os.path.join(HERE, "cases")
FHIR = "/fhir/R4"
FHIR_JSON = "application/fhir+json"
# Test modules in this order (cheap and broad first, the long fidelity run last); any other
# test_*.py runs after them in name order.
MODULE_ORDER = ["test_rest", "test_hostile", "test_concurrency", "test_shutdown", "test_fidelity"]
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer", "ThreadSanitizer")
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 40


class Failure(AssertionError):
    """A test's expectation was not met."""


class Skip(Exception):
    """The test cannot run here (missing data); it is counted as skipped."""


# ---- checks ----

def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def expect_eq(actual, expected, what):
    if actual != expected:
        raise Failure("%s: expected %r, got %r" % (what, expected, actual))


def expect_status(resp, status, what=""):
    """status: an int, or a collection of acceptable ints."""
    ok = resp.status in status if isinstance(status, (list, tuple, set, range)) else \
        resp.status == status
    if not ok:
        raise Failure("%s%s %s: expected status %s, got %d; body: %s" % (
            what + ": " if what else "", resp.method, short(resp.path), status, resp.status,
            resp.snippet()))


def expect_outcome(resp, status, code=None, expression=None, what=""):
    """resp has status (int or collection) and an OperationOutcome body whose every issue has
    a code and diagnostics; code (str or collection) must be the code of some issue and
    expression that of some issue. Returns the issues."""
    expect_status(resp, status, what)
    issues = resp.outcome_issues(what)
    codes = [i.get("code") for i in issues]
    if code is not None:
        wanted = [code] if isinstance(code, str) else list(code)
        expect(any(c in wanted for c in codes), "%s%s %s: expected an issue code in %s, got %s" % (
            what + ": " if what else "", resp.method, short(resp.path), wanted, codes))
    if expression is not None:
        exprs = [e for i in issues for e in i.get("expression", [])]
        expect(expression in exprs, "%s%s %s: expected an issue with expression %r, got %s" % (
            what + ": " if what else "", resp.method, short(resp.path), expression, exprs))
    return issues


def short(s, n=120):
    s = s if isinstance(s, str) else repr(s)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


# ---- HTTP ----

class Response:
    def __init__(self, method, path, status, reason, headers, body):
        self.method, self.path, self.status, self.reason = method, path, status, reason
        self.headers = headers  # list of (name, value) as received
        self.body = body        # raw bytes
        self._json = None

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    @property
    def json(self):
        """The body parsed. Bytes that are not UTF-8 become lone surrogates instead of failing
        here (one bad stored string must not fail every later test that reads a page holding
        it); tests of text fidelity check the raw bytes with is_utf8()."""
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8", "surrogateescape"))
            except ValueError as e:
                raise Failure("%s %s: the body (status %d) is not JSON (%s): %s" % (
                    self.method, short(self.path), self.status, e, self.snippet()))
        return self._json

    def is_utf8(self):
        try:
            self.body.decode("utf-8")
            return True
        except UnicodeDecodeError:
            return False

    def snippet(self, n=300):
        text = self.body[:n].decode("utf-8", "replace")
        return text + ("...(%d bytes)" % len(self.body) if len(self.body) > n else "")

    def outcome_issues(self, what=""):
        ctype = self.header("Content-Type") or ""
        prefix = (what + ": " if what else "") + "%s %s (status %d)" % (
            self.method, short(self.path), self.status)
        expect("json" in ctype, "%s: expected an OperationOutcome, got Content-Type %r: %s" % (
            prefix, ctype, self.snippet()))
        body = self.json
        expect(isinstance(body, dict) and body.get("resourceType") == "OperationOutcome",
               "%s: expected an OperationOutcome, got %s" % (prefix, self.snippet()))
        issues = body.get("issue")
        expect(isinstance(issues, list) and issues, "%s: OperationOutcome without issue: %s" % (
            prefix, self.snippet()))
        for i in issues:
            expect(isinstance(i.get("code"), str) and i.get("severity") in (
                "fatal", "error", "warning", "information"),
                "%s: an issue lacks code or severity: %s" % (prefix, i))
            expect(isinstance(i.get("diagnostics"), str) and i["diagnostics"],
                   "%s: an issue lacks diagnostics: %s" % (prefix, i))
        return issues


def send(conn, method, path, body=None, headers=None, chunked=False):
    """Sends one request on conn (http.client) and returns a Response. When the server
    answers before taking the whole body (a refused upload), the response is still read."""
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body, ensure_ascii=False).encode("utf-8")
        hdrs.setdefault("Content-Type", FHIR_JSON)
    elif isinstance(body, str):
        body = body.encode("utf-8")
    try:
        if chunked:  # an iterable body goes out with Transfer-Encoding: chunked
            conn.request(method, path, body=chunks_of(body or b""), headers=hdrs,
                         encode_chunked=True)
        else:
            conn.request(method, path, body=body, headers=hdrs)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server refused the upload; its answer may be waiting
    resp = conn.getresponse()
    data = resp.read()
    out = Response(method, path, resp.status, resp.reason, resp.getheaders(), data)
    if resp.will_close:
        conn.close()
    return out


class Client:
    """A keep-alive connection to a server, for one thread at a time."""

    def __init__(self, port, timeout=120):
        self.port, self.timeout = port, timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, chunked=False):
        try:
            return send(self.conn, method, path, body, headers, chunked)
        except Exception:
            self.close()
            raise

    def close(self):
        self.conn.close()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def chunks_of(data, n=65536):
    """An iterable body, so http.client sends it with chunked transfer encoding."""
    for i in range(0, len(data), n):
        yield data[i:i + n]


# ---- the server under test ----

class Server:
    """One `jiankang serve` process on a database; stderr goes to NAME.log in the work dir."""

    def __init__(self, binary, db_url, workdir, name, env=None):
        self.binary, self.db_url, self.workdir, self.name = binary, db_url, workdir, name
        self.env = dict(env or {})
        self.proc = None
        self.port = None
        self.n_starts = 0
        self.logs = []  # every stderr log this server wrote, one per start

    @property
    def base(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.n_starts += 1
        self.port = free_port()
        suffix = "" if self.n_starts == 1 else "-%d" % self.n_starts
        self.log_path = os.path.join(self.workdir, self.name + suffix + ".log")
        self.out_path = os.path.join(self.workdir, self.name + suffix + ".out")
        self.logs.append(self.log_path)
        env = dict(os.environ)
        env.update({"JIANKANG_ACCESS_LOG": "off", "ASAN_OPTIONS": env.get(
            "ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
            "UBSAN_OPTIONS": env.get("UBSAN_OPTIONS", "print_stacktrace=1")})
        env.update(self.env)
        with open(self.out_path, "wb") as out, open(self.log_path, "wb") as err:
            self.proc = subprocess.Popen(
                [self.binary, "serve", "--listen", "127.0.0.1:%d" % self.port, "--db",
                 self.db_url], stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                cwd=ROOT)
        deadline = time.time() + START_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure("server %s exited with %d while starting; log:\n%s" % (
                    self.name, self.proc.returncode, self.log_tail()))
            try:
                with open(self.out_path, "rb") as f:
                    running = b"is running." in f.read()
                if running and self.get("/healthz", timeout=5).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise Failure("server %s did not answer /healthz within %ds; log:\n%s" % (
            self.name, START_TIMEOUT_S, self.log_tail()))

    def is_alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout=STOP_TIMEOUT_S):
        """Waits for the exit; returns the exit code, or None after killing a hung server."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def stop(self):
        """SIGTERM and wait: returns the exit code (None: it hung and was killed)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def sanitizer_report(self, n_lines=24, latest_only=False):
        """The first sanitizer report in this server's logs (all of them, or the latest
        start's): its first n_lines, the error and the top of its stack; or None."""
        for path in self.logs[-1:] if latest_only else self.logs:
            try:
                with open(path, "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            for i, line in enumerate(lines):
                if any(m in line for m in SANITIZER_MARKS):
                    return "%s:\n%s" % (path, "\n".join(
                        "    | " + l for l in lines[i:i + n_lines]))
        return None

    def responds(self):
        """Whether /healthz answers 200 within a few seconds."""
        try:
            return self.is_alive() and self.get("/healthz", timeout=10).status == 200
        except OSError:
            return False

    def log_tail(self, n=40):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    | " + l for l in lines[-n:])

    # HTTP, on a new connection per request
    def request(self, method, path, body=None, headers=None, chunked=False, timeout=120):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            return send(conn, method, path, body, headers, chunked)
        finally:
            conn.close()

    def get(self, path, headers=None, timeout=120):
        return self.request("GET", path, headers=headers, timeout=timeout)

    def client(self):
        return Client(self.port)


# ---- the context a test receives ----

class Ctx:
    def __init__(self, args, workdir, pg_url):
        self.args, self.workdir, self.pg_url = args, workdir, pg_url
        self.backend = args.backend
        self.binary = args.binary
        self.server = None   # the shared server
        self.extra = []      # servers tests started, checked at the end
        self.n_dbs = 0

    # databases and servers
    def fresh_db_url(self, name):
        """A new empty database of the run's backend."""
        self.n_dbs += 1
        name = "%s%d" % (re.sub(r"[^a-z0-9]", "", name.lower()), self.n_dbs)
        if self.backend == "sqlite":
            return "sqlite:" + os.path.join(self.workdir, name + ".db")
        u = urlsplit(self.pg_url)
        pgbin = os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin")
        r = subprocess.run([os.path.join(pgbin, "createdb"), "-h", u.hostname, "-p",
                            str(u.port), "-U", u.username or "postgres", name],
                           capture_output=True, text=True, cwd="/")
        if r.returncode:
            raise Failure("createdb %s failed: %s" % (name, r.stderr.strip()))
        return u._replace(path="/" + name).geturl()

    def start_server(self, name, db_url=None, env=None):
        """Starts another server (on db_url, or a fresh database). The harness checks it for
        sanitizer reports at the end; the test stops it. Security is off unless env says
        JIANKANG_SECURITY=on (the security tests do)."""
        env = dict({"JIANKANG_SECURITY": "off"}, **(env or {}))
        s = Server(self.binary, db_url or self.fresh_db_url(name), self.workdir, name, env)
        self.extra.append(s)
        return s.start()

    # HTTP on the shared server
    def request(self, method, path, body=None, headers=None, chunked=False, timeout=120):
        return self.server.request(method, path, body, headers, chunked, timeout)

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def put(self, path, body, headers=None):
        return self.request("PUT", path, body, headers)

    def delete(self, path, headers=None):
        return self.request("DELETE", path, headers=headers)

    # FHIR helpers
    def create(self, resource, headers=None):
        """POSTs resource, expects 201, returns (id, response)."""
        r = self.post("%s/%s" % (FHIR, resource["resourceType"]), resource, headers)
        expect_status(r, 201, "create")
        rid = r.json.get("id")
        expect(isinstance(rid, str) and rid, "create: no id in %s" % r.snippet())
        return rid, r

    def read(self, rtype, rid, status=200):
        r = self.get("%s/%s/%s" % (FHIR, rtype, rid))
        expect_status(r, status, "read")
        return r

    def history(self, path, count=None, since=None):
        """Every entry of the history at path (…/_history), following next links."""
        q = []
        if count is not None:
            q.append("_count=%d" % count)
        if since is not None:
            q.append("_since=" + since)
        url = path + ("?" + "&".join(q) if q else "")
        entries, pages = [], 0
        while url:
            r = self.get(url)
            expect_status(r, 200, "history page")
            b = r.json
            expect(b.get("resourceType") == "Bundle" and b.get("type") == "history",
                   "history: not a history Bundle: %s" % r.snippet())
            entries.extend(b.get("entry", []))
            url = next_link(b, self.server.base)
            pages += 1
            expect(pages < 10000, "history: more than 10000 pages")
        return entries

    def newest(self):
        """The newest entry of the system history (fullUrl and etag), to prove that nothing
        was written: any write anywhere changes it."""
        r = self.get(FHIR + "/_history?_count=1")
        expect_status(r, 200, "system history")
        e = r.json.get("entry") or [{}]
        return (e[0].get("fullUrl"), (e[0].get("response") or {}).get("etag"))

    def healthy(self, what=""):
        r = self.get("/healthz")
        expect_status(r, 200, (what + ": " if what else "") + "the server must stay up")


def next_link(bundle, base):
    for link in bundle.get("link", []):
        if link.get("relation") == "next":
            url = link["url"]
            expect(url.startswith(base), "next link %r is not under %s" % (url, base))
            return url[len(base):]
    return None


def uniq(prefix="t"):
    """A fresh token, for identifiers and ids that no other test uses."""
    return "%s-%s" % (prefix, uuid.uuid4().hex[:16])


def patient(**fields):
    p = {"resourceType": "Patient"}
    p.update(fields)
    return p


def load_cases(name):
    with open(os.path.join(CASES, name), encoding="utf-8") as f:
        return json.load(f)


# ---- the runner ----

def discover(pattern):
    sys.path.insert(0, HERE)
    names = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    names = [m for m in MODULE_ORDER if m in names] + [m for m in names if m not in MODULE_ORDER]
    tests = []
    for m in names:
        mod = importlib.import_module(m)
        found = [(k, v) for k, v in vars(mod).items() if k.startswith("test_") and callable(v)]
        if hasattr(mod, "generate_tests"):
            found += list(mod.generate_tests())
        for k, fn in found:
            full = "%s.%s" % (m[5:], k[5:] if k.startswith("test_") else k)
            if not pattern or pattern in full or fnmatch.fnmatch(full, pattern):
                tests.append((full, fn))
    return tests


def start_pg(workdir):
    """Starts the throwaway cluster; returns (url, None) or (None, why)."""
    script = os.path.join(ROOT, "tools", "pg-test-cluster.sh")
    if not os.access(script, os.X_OK):
        return None, "%s is missing or not executable" % script
    try:
        r = subprocess.run([script, "start", os.path.join(workdir, "pg")], capture_output=True,
                           text=True, timeout=180, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return None, "pg-test-cluster.sh start took more than 180 s"
    url = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    if r.returncode or not url.startswith("postgres"):
        return None, "pg-test-cluster.sh start failed (exit %d): %s" % (
            r.returncode, (r.stderr.strip() or r.stdout.strip())[-2000:])
    return url, None


def stop_pg(workdir):
    script = os.path.join(ROOT, "tools", "pg-test-cluster.sh")
    r = subprocess.run([script, "stop", os.path.join(workdir, "pg")], capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    if r.returncode:
        print("warning: pg-test-cluster.sh stop failed: %s" % r.stderr.strip(), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", default="build/jiankang-san")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("-k", dest="pattern", help="run only tests whose name contains PATTERN "
                    "(or matches it as a glob), e.g. -k rest. or -k 'hostile.*utf*'")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every test as it runs")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    args.binary = os.path.abspath(os.path.join(os.getcwd(), args.binary))
    label = "api-%s" % args.backend
    t0 = time.time()

    if not os.access(args.binary, os.X_OK):
        print("error: %s is not an executable (build it: make build/jiankang-san)" % args.binary)
        print("%s: 0 passed, 1 failed" % label)
        return 1
    tests = discover(args.pattern)
    if not tests:
        print("error: no test matches -k %r" % args.pattern)
        print("%s: 0 passed, 1 failed" % label)
        return 1

    workdir = tempfile.mkdtemp(prefix="jk-api-%s-" % args.backend)
    # One key file for every server and command of the run (they share databases), created
    # by the first of them; never the checkout's var/jiankang.keys.
    os.environ["JIANKANG_KEYS"] = os.path.join(workdir, "jiankang.keys")
    pg_url = t = None
    passed = failed = skipped = 0
    failures = []
    try:
        if args.backend == "postgresql":
            pg_url, why = start_pg(workdir)
            if not pg_url:
                print("FAIL harness.postgresql: cannot start the PostgreSQL test cluster: %s" % why)
                print("%s: 0 passed, 1 failed" % label)
                return 1
        t = Ctx(args, workdir, pg_url)
        db_url = pg_url if pg_url else "sqlite:" + os.path.join(workdir, "main.db")
        # The legacy tests speak FHIR without tokens: their server runs with security off;
        # the security tests (test_authz, test_audit_trail, test_protect) start their own.
        t.server = Server(args.binary, db_url, workdir, "server",
                          env={"JIANKANG_SECURITY": "off"})
        try:
            t.server.start()
        except Failure as e:
            print("FAIL harness.start: %s" % e)
            print("%s: 0 passed, 1 failed" % label)
            return 1

        for name, fn in tests:
            if args.verbose:
                print("... %s" % name, flush=True)
            started = time.time()
            if not t.server.is_alive():
                # An earlier test killed it: the crash is reported; restart for the rest.
                try:
                    t.server.start()
                except Failure as e:
                    failed += 1
                    failures.append(name)
                    print("FAIL %s: the server is down and does not restart: %s" % (name, e))
                    continue
            try:
                fn(t)
                status, why = "pass", None
            except Skip as e:
                status, why = "skip", str(e)
            except Failure as e:
                status, why = "fail", str(e)
            except Exception as e:  # an unexpected error is a failure too
                tb = traceback.extract_tb(e.__traceback__)
                where = next((f for f in reversed(tb) if f.filename.startswith(HERE)), tb[-1])
                status, why = "fail", "%s: %s (at %s:%d)" % (
                    type(e).__name__, e, os.path.basename(where.filename), where.lineno)
            if status == "fail" and not t.server.responds():
                # It crashed (a sanitizer report takes a moment to write) or hangs.
                rc = t.server.wait(10)
                status = "fail"
                why += "; the server %s; %s" % (
                    "hung and was killed" if rc is None else "died (exit %d)" % rc,
                    t.server.sanitizer_report(10, True) or "log:\n" + t.server.log_tail())
            elif not t.server.is_alive():
                status = "fail"
                why = (why + "; " if why else "") + "the server died (exit %s); log:\n%s" % (
                    t.server.proc.returncode, t.server.log_tail())
            if status == "pass":
                passed += 1
            elif status == "skip":
                skipped += 1
                print("SKIP %s: %s" % (name, why))
            else:
                failed += 1
                failures.append(name)
                print("FAIL %s: %s" % (name, why), flush=True)
            if args.verbose:
                print("    %s in %.1fs" % (status, time.time() - started), flush=True)

        # The shared server must stop cleanly; no server may have a sanitizer report.
        rc = t.server.stop()
        if rc != 0:
            failed += 1
            print("FAIL harness.shutdown: the server %s on SIGTERM (expected exit 0); log:\n%s" % (
                "hung and was killed" if rc is None else "exited with %d" % rc,
                t.server.log_tail()))
        else:
            passed += 1
        for s in [t.server] + t.extra:
            s.kill()
            report = s.sanitizer_report()
            if report:
                failed += 1
                print("FAIL harness.sanitizer (%s): a sanitizer report in %s" % (s.name, report))
    finally:
        if t is not None:
            for s in [t.server] + t.extra:
                if s is not None:
                    s.kill()
        if os.path.isdir(os.path.join(workdir, "pg")):  # also after a half-done start
            stop_pg(workdir)
        if args.keep:
            print("work directory kept: %s" % workdir)
        elif failed:  # keep the logs, drop the databases (the fidelity run fills ~100 MB)
            for f in os.listdir(workdir):
                if re.search(r"\.db(-wal|-shm|-journal)?$", f) or f == "pg":
                    path = os.path.join(workdir, f)
                    shutil.rmtree(path, True) if os.path.isdir(path) else os.remove(path)
            print("server logs kept in %s (--keep keeps the SQLite databases too)" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = "%s: %d passed, %d failed" % (label, passed, failed)
    if skipped:
        summary += ", %d skipped" % skipped
    if args.verbose:
        print("(%.0f s)" % (time.time() - t0))
    print(summary, flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
