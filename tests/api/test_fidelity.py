"""test_fidelity.py - the official R4 examples (node_modules/hl7.fhir.r4.examples): each one is
POSTed as is and either comes back exactly as sent (ignoring only id, meta.versionId and
meta.lastUpdated; decimals and integers compared by their text) or is refused with a 4xx
OperationOutcome whose reason is allowed in tests/api/fidelity-allowed.tsv. Never a 5xx, never
a dropped connection.

Writes build/fidelity-BACKEND.tsv: one row per example that did not round-trip (file, status,
first issue code, expression, diagnostics) and prints a summary by reason.

fidelity-allowed.tsv rows are `file<TAB>status<TAB>reason`; file may be `*` (any file) and the
reason is the first issue's code, then a space and its first expression when it has one
(`too-long`, `value Observation.valueQuantity.value`). Lines starting with # are comments."""
import collections
import json
import os
import queue
import threading
import time

from run import FHIR, FHIR_JSON, HERE, ROOT, Skip, expect

EXAMPLES = os.path.join(ROOT, "node_modules", "hl7.fhir.r4.examples")
ALLOWED = os.path.join(HERE, "fidelity-allowed.tsv")
N_WORKERS = 4
IGNORED_META = ("versionId", "lastUpdated")


def parse(data):
    """JSON with every number kept as its text, so 1.50 and 1.5 differ."""
    return json.loads(data, parse_float=str, parse_int=str)


def comparable(res):
    """res without what the server owns: id, meta.versionId, meta.lastUpdated."""
    res = dict(res)
    res.pop("id", None)
    meta = res.get("meta")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in IGNORED_META}
        if meta:
            res["meta"] = meta
        else:
            del res["meta"]
    return res


def first_diff(sent, got, path):
    """The first place where got differs from sent, as text, or None."""
    if type(sent) is not type(got):
        return "%s: sent %s, got %s" % (path, clip(sent), clip(got))
    if isinstance(sent, dict):
        for k in sent:
            if k not in got:
                return "%s.%s: missing from the response" % (path, k)
            d = first_diff(sent[k], got[k], "%s.%s" % (path, k))
            if d:
                return d
        extra = [k for k in got if k not in sent]
        return "%s.%s: added by the server" % (path, extra[0]) if extra else None
    if isinstance(sent, list):
        for i, (a, b) in enumerate(zip(sent, got)):
            d = first_diff(a, b, "%s[%d]" % (path, i))
            if d:
                return d
        if len(sent) != len(got):
            return "%s: sent %d elements, got %d" % (path, len(sent), len(got))
        return None
    return None if sent == got else "%s: sent %s, got %s" % (path, clip(sent), clip(got))


def clip(v):
    s = json.dumps(v, ensure_ascii=True)
    return s if len(s) <= 80 else s[:80] + "..."


def load_allowed():
    allowed = set()
    if os.path.exists(ALLOWED):
        with open(ALLOWED, encoding="utf-8") as f:
            for line in f:
                line = line.rstrip("\n")
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.split("\t")
                if len(parts) >= 3:
                    allowed.add((parts[0], parts[1], parts[2]))
    return allowed


def is_allowed(allowed, name, status, reason):
    return (name, str(status), reason) in allowed or ("*", str(status), reason) in allowed


def check_one(client, name, data):
    """POSTs one example. Returns (kind, status, code, expression, diagnostics) with kind
    ok | rejected | not-round-tripped | error | not-a-resource."""
    try:
        sent = parse(data)
    except ValueError as e:
        return ("not-a-resource", "", "", "", "not JSON: %s" % e)
    rtype = sent.get("resourceType") if isinstance(sent, dict) else None
    if not isinstance(rtype, str):
        return ("not-a-resource", "", "", "", "no resourceType")
    try:
        r = client.request("POST", "%s/%s" % (FHIR, rtype), data, {"Content-Type": FHIR_JSON})
    except Exception as e:
        return ("error", "", "", "", "POST: %s: %s" % (type(e).__name__, e))
    if r.status >= 500 or r.status < 200:
        return ("error", r.status, "", "", "POST: %s" % r.snippet(200))
    if r.status != 201:
        try:
            issue = r.outcome_issues()[0]
        except AssertionError as e:  # Failure: not an OperationOutcome
            return ("error", r.status, "", "", "POST: %d without an OperationOutcome: %s" % (
                r.status, e))
        if r.status < 400:
            return ("error", r.status, issue.get("code", ""), "", "POST: status %d" % r.status)
        return ("rejected", r.status, issue.get("code", ""),
                (issue.get("expression") or [""])[0], issue.get("diagnostics", ""))
    rid = r.json.get("id")
    try:
        g = client.request("GET", "%s/%s/%s" % (FHIR, rtype, rid))
    except Exception as e:
        return ("error", "", "", "", "GET: %s: %s" % (type(e).__name__, e))
    if g.status != 200:
        return ("error", g.status, "", "", "GET after 201: %s" % g.snippet(200))
    try:
        got = parse(g.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        return ("not-round-tripped", 201, "", "", "the read body is not UTF-8 JSON: %s" % e)
    d = first_diff(comparable(sent), comparable(got), rtype)
    if d is None and (got.get("id") != rid or got.get("resourceType") != rtype):
        d = "resourceType/id: got %s/%s" % (got.get("resourceType"), got.get("id"))
    return ("ok", 201, "", "", "") if d is None else ("not-round-tripped", 201, "", "", d)


def test_official_examples_round_trip_or_are_refused(t):
    if not os.path.isdir(EXAMPLES):
        raise Skip("%s is missing: run `npm ci` (make test does) to get hl7.fhir.r4.examples"
                   % EXAMPLES)
    files = sorted(f for f in os.listdir(EXAMPLES) if f.endswith(".json"))
    if not files:
        raise Skip("no *.json in %s" % EXAMPLES)
    # Largest first, so the slow ones do not end up alone at the end.
    files.sort(key=lambda f: -os.path.getsize(os.path.join(EXAMPLES, f)))
    work = queue.Queue()
    for f in files:
        work.put(f)
    results = {}
    lock = threading.Lock()
    t0 = time.time()

    def worker():
        client = t.server.client()
        try:
            while True:
                try:
                    name = work.get_nowait()
                except queue.Empty:
                    return
                with open(os.path.join(EXAMPLES, name), "rb") as fh:
                    data = fh.read()
                res = check_one(client, name, data)
                if res[0] == "error":  # the connection may be unusable now
                    client.close()
                    client = t.server.client()
                with lock:
                    results[name] = res
        finally:
            client.close()

    threads = [threading.Thread(target=worker) for _ in range(N_WORKERS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    took = time.time() - t0

    allowed = load_allowed()
    by_kind = collections.Counter(r[0] for r in results.values())
    reasons = collections.Counter()
    not_allowed, bad = [], []
    rows = []
    for name in sorted(results):
        kind, status, code, expr, diag = results[name]
        if kind == "ok":
            continue
        reason = (code + (" " + expr if expr else "")) if kind == "rejected" else kind
        rows.append((name, str(status), code or kind, expr, diag))
        if kind == "rejected":
            reasons[(status, reason)] += 1
            if not is_allowed(allowed, name, status, reason):
                not_allowed.append("%s: %s %s (%s)" % (name, status, reason, diag[:120]))
        elif kind in ("error", "not-round-tripped"):
            bad.append("%s: %s %s: %s" % (name, kind, status, diag[:300]))
    out_dir = os.path.join(ROOT, "build")
    os.makedirs(out_dir, exist_ok=True)
    tsv = os.path.join(out_dir, "fidelity-%s.tsv" % t.backend)
    with open(tsv, "w", encoding="utf-8") as f:
        f.write("file\tstatus\tcode\texpression\tdiagnostics\n")
        for row in rows:
            f.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row) + "\n")

    print("fidelity (%s): %d files in %.0f s: %d round-tripped, %d rejected, %d not "
          "round-tripped, %d errors, %d not resources; details in %s" % (
              t.backend, len(results), took, by_kind["ok"], by_kind["rejected"],
              by_kind["not-round-tripped"], by_kind["error"], by_kind["not-a-resource"],
              os.path.relpath(tsv, ROOT)))
    for (status, reason), n in sorted(reasons.items(), key=lambda x: (-x[1], str(x[0]))):
        print("  rejected %5d x %s %s" % (n, status, reason))
    for name, res in sorted(results.items()):
        if res[0] == "not-a-resource":
            print("  not a resource, not sent: %s (%s)" % (name, res[4]))
    problems = bad + ["rejected for a reason not in fidelity-allowed.tsv: " + x
                      for x in not_allowed]
    expect(not problems, "%d examples failed (first 10):\n    %s" % (
        len(problems), "\n    ".join(problems[:10])))
