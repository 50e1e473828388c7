"""test_rest.py - the FHIR REST interactions a client depends on: create, read, vread, update,
delete, versions and If-Match, conditional create/update/delete, Prefer, history and its
paging, the CapabilityStatement, formats, errors as OperationOutcome, decimals, health and
metrics. The error cases are data: cases/rest_errors.json."""
import re
import time
from urllib.parse import quote

from run import (FHIR, expect, expect_eq, expect_outcome, expect_status, load_cases, patient,
                 uniq, Failure)

LAST_UPDATED = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
HTTP_DATE = re.compile(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$")


def ident(system, value):
    return [{"system": system, "value": value}]


def expect_version(r, version, what):
    expect_eq(r.header("ETag"), 'W/"%d"' % version, what + ": ETag")
    if r.body:
        expect_eq(r.json.get("meta", {}).get("versionId"), str(version), what + ": meta.versionId")


def expect_location(t, r, rtype, rid, version, what):
    expect_eq(r.header("Location"), "%s%s/%s/%s/_history/%d" % (
        t.server.base, FHIR, rtype, rid, version), what + ": Location")


def cond(params):
    """A query string with each value percent-encoded (| becomes %7C)."""
    return "&".join("%s=%s" % (k, quote(v, safe="")) for k, v in params)


# ---- create, read, vread, update, delete ----

def test_create_returns_201_with_location_etag_and_meta(t):
    sent = patient(gender="female", birthDate="1984-03-02", name=[{"family": "Wang",
                                                                   "given": ["Fang"]}])
    r = t.post(FHIR + "/Patient", sent)
    expect_status(r, 201, "create")
    body = r.json
    rid = body.get("id")
    expect(isinstance(rid, str) and re.match(r"^[A-Za-z0-9\-.]{1,64}$", rid),
           "create: the server must assign a valid id, got %r" % rid)
    expect_location(t, r, "Patient", rid, 1, "create")
    expect_version(r, 1, "create")
    expect(LAST_UPDATED.match(body["meta"].get("lastUpdated", "")),
           "create: meta.lastUpdated %r is not an instant" % body["meta"].get("lastUpdated"))
    expect(HTTP_DATE.match(r.header("Last-Modified") or ""),
           "create: Last-Modified %r is not an HTTP date" % r.header("Last-Modified"))
    expect("fhir+json" in (r.header("Content-Type") or ""), "create: Content-Type %r" %
           r.header("Content-Type"))
    for k in ("gender", "birthDate", "name"):
        expect_eq(body.get(k), sent[k], "create: echoed " + k)
    # A client id in a POST body is replaced by the server's.
    r2 = t.post(FHIR + "/Patient", patient(id="client-chosen-" + uniq()))
    expect_status(r2, 201, "create with a body id")
    expect(not r2.json["id"].startswith("client-chosen-"),
           "create: POST must ignore the body id, got %r" % r2.json["id"])


def test_minimal_resources_are_accepted(t):
    """A resource with nothing but its type is valid R4 (ele-1 is about elements inside it)."""
    for rtype in ("Patient", "Practitioner", "Organization"):
        r = t.post("%s/%s" % (FHIR, rtype), {"resourceType": rtype})
        expect_status(r, 201, "create a bare %s" % rtype)
        rid = "bare-" + uniq(rtype.lower())
        expect_status(t.put("%s/%s/%s" % (FHIR, rtype, rid), {"resourceType": rtype, "id": rid}),
                      201, "update-as-create a %s with only an id" % rtype)


def test_read_and_vread(t):
    rid, created = t.create(patient(gender="male"))
    r = t.read("Patient", rid)
    expect_eq(r.json, created.json, "read: body equals the created resource")
    expect_version(r, 1, "read")
    expect(HTTP_DATE.match(r.header("Last-Modified") or ""), "read: Last-Modified missing")
    v = t.get("%s/Patient/%s/_history/1" % (FHIR, rid))
    expect_status(v, 200, "vread 1")
    expect_eq(v.json, created.json, "vread 1: body")
    expect_outcome(t.get("%s/Patient/%s/_history/2" % (FHIR, rid)), 404, "not-found",
                   what="vread of a version that does not exist")
    expect_outcome(t.get("%s/Patient/%s" % (FHIR, uniq("nobody"))), 404, "not-found",
                   what="read of an unknown id")


def test_update_makes_version_2(t):
    rid, created = t.create(patient(gender="male"))
    r = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="female"))
    expect_status(r, 200, "update")
    expect_version(r, 2, "update")
    expect_location(t, r, "Patient", rid, 2, "update")
    expect_eq(r.json.get("gender"), "female", "update: body")
    expect_eq(t.read("Patient", rid).json.get("gender"), "female", "read after update")
    old = t.get("%s/Patient/%s/_history/1" % (FHIR, rid))
    expect_status(old, 200, "vread 1 after update")
    expect_eq(old.json, created.json, "vread 1 after update keeps the old content")


def test_update_as_create_with_client_id(t):
    rid = uniq("client")
    r = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="other"))
    expect_status(r, 201, "update-as-create")
    expect_version(r, 1, "update-as-create")
    expect_location(t, r, "Patient", rid, 1, "update-as-create")
    expect_eq(t.read("Patient", rid).json.get("id"), rid, "read the client id")
    # The longest id allowed (64 characters) works too.
    long_id = (uniq("long") + "x" * 64)[:64]
    expect_eq(len(long_id), 64, "test setup: id length")
    expect_status(t.put("%s/Patient/%s" % (FHIR, long_id), patient(id=long_id)), 201,
                  "update-as-create with a 64-character id")


def test_delete_then_gone_then_recreate(t):
    rid, created = t.create(patient(gender="male"))
    d = t.delete("%s/Patient/%s" % (FHIR, rid))
    expect_status(d, (200, 204), "delete")
    if d.status == 204:
        expect_eq(d.body, b"", "delete 204: empty body")
    expect_outcome(t.get("%s/Patient/%s" % (FHIR, rid)), 410, what="read after delete")
    old = t.get("%s/Patient/%s/_history/1" % (FHIR, rid))
    expect_status(old, 200, "vread 1 after delete")
    expect_eq(old.json, created.json, "vread 1 after delete")
    expect_status(t.delete("%s/Patient/%s" % (FHIR, rid)), (200, 204), "deleting twice")
    hist = t.history("%s/Patient/%s/_history" % (FHIR, rid))
    expect_eq([e["request"]["method"] for e in hist], ["DELETE", "POST"],
              "history after delete: methods, newest first")
    expect("resource" not in hist[0], "history: a deletion carries no resource")
    r = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="female"))
    expect_status(r, (200, 201), "update after delete")
    expect_version(r, 3, "update after delete")
    expect_eq(t.read("Patient", rid).json.get("gender"), "female", "read after re-create")


def test_if_match(t):
    rid, _ = t.create(patient(gender="male"))
    expect_status(t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="female")), 200,
                  "update to version 2")
    stale = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="other"),
                  {"If-Match": 'W/"1"'})
    expect_outcome(stale, 412, what="update with a stale If-Match")
    now = t.read("Patient", rid)
    expect_version(now, 2, "after the refused update")
    expect_eq(now.json.get("gender"), "female", "the refused update changed nothing")
    expect_outcome(t.delete("%s/Patient/%s" % (FHIR, rid), {"If-Match": 'W/"1"'}), 412,
                   what="delete with a stale If-Match")
    t.read("Patient", rid)
    ok = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="other"),
               {"If-Match": 'W/"2"'})
    expect_status(ok, 200, "update with the current If-Match")
    expect_version(ok, 3, "update with the current If-Match")
    expect_outcome(t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid), {"If-Match": "soon"}),
                   400, what="If-Match that is not a version tag")


# ---- conditional interactions ----

def test_conditional_create(t):
    system, value = "urn:jk:test", uniq("cc")
    ine = {"If-None-Exist": "identifier=%s|%s" % (system, value)}
    r1 = t.post(FHIR + "/Patient", patient(identifier=ident(system, value)), ine)
    expect_status(r1, 201, "first conditional create")
    rid = r1.json["id"]
    for n in (2, 3):
        r = t.post(FHIR + "/Patient", patient(identifier=ident(system, value), gender="male"),
                   ine)
        expect_status(r, 200, "conditional create #%d (one match)" % n)
        expect_eq(r.json.get("id"), rid, "conditional create #%d returns the existing id" % n)
        expect_version(r, 1, "conditional create #%d leaves the resource as it was" % n)
    expect_eq(len(t.history("%s/Patient/%s/_history" % (FHIR, rid))), 1,
              "conditional create: versions of the existing resource")
    # Without the system, the value alone matches too.
    r = t.post(FHIR + "/Patient", patient(active=True), {"If-None-Exist": "identifier=" + value})
    expect_status(r, 200, "conditional create by value only")
    expect_eq(r.json.get("id"), rid, "conditional create by value only")
    r = t.post(FHIR + "/Patient", patient(active=True), {"If-None-Exist": "_id=" + rid})
    expect_status(r, 200, "conditional create by _id")


def test_conditional_create_with_two_matches_is_412(t):
    system, value = "urn:jk:test", uniq("cc2")
    for _ in range(2):
        t.create(patient(identifier=ident(system, value)))
    before = t.newest()
    r = t.post(FHIR + "/Patient", patient(identifier=ident(system, value)),
               {"If-None-Exist": "identifier=%s|%s" % (system, value)})
    expect_outcome(r, 412, what="conditional create matching 2")
    expect_eq(t.newest(), before, "conditional create matching 2 must store nothing")
    expect_outcome(t.post(FHIR + "/Patient", patient(active=True), {"If-None-Exist": "nosuchparam=x"}),
                   400, what="If-None-Exist with an unknown parameter")


def test_conditional_update(t):
    system, value = "urn:jk:test", uniq("cu")
    q = "%s/Patient?%s" % (FHIR, cond([("identifier", "%s|%s" % (system, value))]))
    r = t.put(q, patient(identifier=ident(system, value), gender="male"))
    expect_status(r, 201, "conditional update with no match creates")
    rid = r.json["id"]
    expect_location(t, r, "Patient", rid, 1, "conditional update with no match")
    r = t.put(q, patient(identifier=ident(system, value), gender="female"))
    expect_status(r, 200, "conditional update with one match")
    expect_eq(r.json.get("id"), rid, "conditional update updates the matched id")
    expect_version(r, 2, "conditional update with one match")
    expect_eq(t.read("Patient", rid).json.get("gender"), "female", "read after conditional update")
    r = t.put(q, patient(id=uniq("other"), identifier=ident(system, value)))
    expect_outcome(r, 400, what="conditional update whose body id is not the matched id")
    r = t.put("%s/Patient?_id=%s" % (FHIR, rid), patient(id=rid, identifier=ident(system, value),
                                                          gender="other"))
    expect_status(r, 200, "conditional update by _id")
    expect_version(r, 3, "conditional update by _id")
    t.create(patient(identifier=ident(system, value)))
    before = t.newest()
    expect_outcome(t.put(q, patient(identifier=ident(system, value))), 412,
                   what="conditional update matching 2")
    expect_eq(t.newest(), before, "conditional update matching 2 must store nothing")
    expect_version(t.read("Patient", rid), 3, "the matched resources are unchanged")


def test_conditional_delete(t):
    system, value = "urn:jk:test", uniq("cd")
    q = "%s/Patient?%s" % (FHIR, cond([("identifier", "%s|%s" % (system, value))]))
    rid, _ = t.create(patient(identifier=ident(system, value)))
    expect_status(t.delete(q), (200, 204), "conditional delete with one match")
    expect_outcome(t.get("%s/Patient/%s" % (FHIR, rid)), 410, what="read after conditional delete")
    expect_status(t.delete(q), (200, 204, 404), "conditional delete with no match")
    a, _ = t.create(patient(identifier=ident(system, value)))
    b, _ = t.create(patient(identifier=ident(system, value)))
    expect_outcome(t.delete(q), 412, what="conditional delete matching 2")
    t.read("Patient", a)
    t.read("Patient", b)
    expect_outcome(t.delete(FHIR + "/Patient"), 400, what="conditional delete without criteria")
    t.read("Patient", a)


# ---- Prefer ----

def test_prefer_return(t):
    r = t.post(FHIR + "/Patient", patient(active=True), {"Prefer": "return=minimal"})
    expect_status(r, 201, "create with return=minimal")
    expect_eq(r.body, b"", "return=minimal: body")
    loc = r.header("Location") or ""
    m = re.search(r"/fhir/R4/Patient/([^/]+)/_history/1$", loc)
    expect(m, "return=minimal: Location %r" % loc)
    expect_eq(r.header("ETag"), 'W/"1"', "return=minimal: ETag")
    rid = m.group(1)
    r = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="male"),
              {"Prefer": "return=OperationOutcome"})
    expect_status(r, 200, "update with return=OperationOutcome")
    issues = r.outcome_issues("return=OperationOutcome")
    expect(all(i["severity"] == "information" for i in issues),
           "return=OperationOutcome: the issues of a success are information: %s" % issues)
    expect_eq(r.header("ETag"), 'W/"2"', "return=OperationOutcome: ETag")
    r = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender="female"),
              {"Prefer": "return=representation"})
    expect_status(r, 200, "update with return=representation")
    expect_eq((r.json.get("id"), r.json.get("gender")), (rid, "female"),
              "return=representation: body")


# ---- history ----

def make_versions(t, n, **fields):
    """A Patient with n versions (created, then updated n-1 times). Returns its id."""
    rid, _ = t.create(patient(gender="male", **fields))
    for v in range(2, n + 1):
        expect_status(t.put("%s/Patient/%s" % (FHIR, rid), patient(
            id=rid, gender="male" if v % 2 else "female", **fields)), 200, "update to v%d" % v)
    return rid


def versions_of(entries):
    return [int(e["response"]["etag"].strip('W/"')) for e in entries]


def test_history_instance_newest_first(t):
    rid = make_versions(t, 5)
    expect_status(t.delete("%s/Patient/%s" % (FHIR, rid)), (200, 204), "delete")
    entries = t.history("%s/Patient/%s/_history" % (FHIR, rid))
    expect_eq(versions_of(entries), [6, 5, 4, 3, 2, 1], "instance history versions")
    expect_eq([e["request"]["method"] for e in entries],
              ["DELETE", "PUT", "PUT", "PUT", "PUT", "POST"], "instance history methods")
    for e in entries[1:]:
        expect_eq(e["resource"]["id"], rid, "history entry resource id")
        expect_eq(e["resource"]["meta"]["versionId"], e["response"]["etag"].strip('W/"'),
                  "history entry versionId matches its etag")
        expect(e["fullUrl"].endswith("/fhir/R4/Patient/" + rid), "fullUrl %r" % e["fullUrl"])
    expect_eq(entries[-1]["response"]["status"][:3], "201", "the create's response status")
    expect_outcome(t.get("%s/Patient/%s/_history" % (FHIR, uniq("nobody"))), 404,
                   what="history of an unknown id")


def test_history_paging_has_no_gaps_or_duplicates(t):
    rid = make_versions(t, 5)
    path = "%s/Patient/%s/_history" % (FHIR, rid)
    entries = t.history(path, count=2)
    expect_eq(versions_of(entries), [5, 4, 3, 2, 1], "paging _count=2 through 5 versions")
    # A version added between two pages neither shifts nor repeats the later pages.
    r = t.get(path + "?_count=2")
    expect_status(r, 200, "history page 1")
    seen = versions_of(r.json.get("entry", []))
    expect_eq(seen, [5, 4], "page 1")
    nxt = next((l["url"] for l in r.json.get("link", []) if l["relation"] == "next"), None)
    expect(nxt, "page 1 of 3 has a next link")
    expect_status(t.put(path[: -len("/_history")], patient(id=rid, gender="other")), 200,
                  "update between pages")
    url = nxt[len(t.server.base):]
    while url:
        r = t.get(url)
        expect_status(r, 200, "history next page")
        seen += versions_of(r.json.get("entry", []))
        url = next((l["url"][len(t.server.base):] for l in r.json.get("link", [])
                    if l["relation"] == "next"), None)
    expect_eq(seen, [5, 4, 3, 2, 1], "paging while a version is added")
    expect_eq(versions_of(t.history(path, count=2))[:1], [6], "the new version is on top")


def test_history_type_and_system(t):
    rid, _ = t.create(patient(active=True))
    top = t.get(FHIR + "/Patient/_history?_count=1")
    expect_status(top, 200, "type history")
    e = top.json["entry"][0]
    expect_eq((e["resource"]["id"], e["request"]["method"], e["request"]["url"]),
              (rid, "POST", "Patient"), "type history: the newest entry")
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"}}
    oid, _ = t.create(obs)
    top = t.get(FHIR + "/_history?_count=2")
    expect_status(top, 200, "system history")
    got = [(x["resource"]["resourceType"], x["resource"]["id"]) for x in top.json["entry"]]
    expect_eq(got, [("Observation", oid), ("Patient", rid)], "system history, newest first")
    types = {x["resource"]["resourceType"] for x in t.get(
        FHIR + "/Patient/_history?_count=50").json["entry"] if "resource" in x}
    expect_eq(types, {"Patient"}, "type history holds only its type")
    expect_outcome(t.get(FHIR + "/Patient/_history?_count=many"), 400, what="_count=many")


def test_history_since(t):
    rid, _ = t.create(patient(active=True))
    stamps = []
    for g in ("male", "female", "other"):
        time.sleep(0.01)
        r = t.put("%s/Patient/%s" % (FHIR, rid), patient(id=rid, gender=g))
        expect_status(r, 200, "update")
        stamps.append(r.json["meta"]["lastUpdated"])
    path = "%s/Patient/%s/_history" % (FHIR, rid)
    expect_eq(versions_of(t.history(path, since=stamps[1])), [4, 3],
              "_since the lastUpdated of version 3")
    expect_eq(versions_of(t.history(path, since="2000-01-01T00:00:00Z")), [4, 3, 2, 1],
              "_since long ago")
    expect_eq(t.history(path, since="2999-01-01T00:00:00Z"), [], "_since in the future")
    sys_since = t.history(FHIR + "/_history", since=stamps[2])
    expect((rid, "4") in [(x["resource"]["id"], x["resource"]["meta"]["versionId"])
                          for x in sys_since if "resource" in x],
           "system history _since holds the newest version")
    expect_outcome(t.get(path + "?_since=yesterday"), 400, what="_since=yesterday")


# ---- capability, formats, errors ----

def test_metadata_is_a_capability_statement(t):
    r = t.get(FHIR + "/metadata")
    expect_status(r, 200, "metadata")
    cs = r.json
    expect_eq(cs.get("resourceType"), "CapabilityStatement", "metadata resourceType")
    expect_eq(cs.get("fhirVersion"), "4.0.1", "fhirVersion")
    expect("json" in cs.get("format", []), "format lists json: %s" % cs.get("format"))
    rest = cs["rest"][0]
    pat = [x for x in rest["resource"] if x["type"] == "Patient"]
    expect_eq(len(pat), 1, "Patient in the CapabilityStatement")
    codes = {i["code"] for i in pat[0]["interaction"]}
    want = {"read", "vread", "update", "delete", "history-instance", "history-type", "create"}
    expect(want <= codes, "Patient interactions: missing %s" % sorted(want - codes))
    expect("history-system" in {i["code"] for i in rest.get("interaction", [])},
           "history-system is listed")
    types = {x["type"] for x in rest["resource"]}
    expect({"Observation", "Encounter", "Bundle"} <= types and "DomainResource" not in types,
           "the resource list holds the concrete resource types only")


def test_format_parameter(t):
    rid, _ = t.create(patient(active=True))
    for f in ("json", "application/fhir+json"):
        r = t.get("%s/Patient/%s?_format=%s" % (FHIR, rid, quote(f, safe="")))
        expect_status(r, 200, "_format=" + f)
        expect_eq(r.json.get("id"), rid, "_format=%s body" % f)
    for f in ("xml", "application/fhir+xml", "turtle"):
        expect_outcome(t.get("%s/Patient/%s?_format=%s" % (FHIR, rid, quote(f, safe=""))),
                       range(400, 500), what="_format=" + f)
    expect_outcome(t.get(FHIR + "/metadata?_format=xml"), range(400, 500),
                   what="metadata?_format=xml")


def test_decimals_keep_their_digits(t):
    body = (b'{"resourceType":"Observation","status":"final","code":{"text":"glucose"},'
            b'"valueQuantity":{"value":1.50,"unit":"mmol/L"},'
            b'"referenceRange":[{"low":{"value":0.10},"high":{"value":100.000},'
            b'"text":"3.14159265358979323846264338327950288"}],'
            b'"component":[{"code":{"text":"x"},"valueQuantity":{"value":3.14159265358979323846}},'
            b'{"code":{"text":"y"},"valueQuantity":{"value":-0.0}},'
            b'{"code":{"text":"z"},"valueQuantity":{"value":1e2}}]}')
    r = t.post(FHIR + "/Observation", body, {"Content-Type": "application/fhir+json"})
    expect_status(r, 201, "create Observation with decimals")
    rid = r.json["id"]
    for what, resp in (("create response", r), ("read", t.read("Observation", rid))):
        raw = resp.body
        for digits in (b'"value":1.50', b'"value":0.10', b'"value":100.000',
                       b'"value":3.14159265358979323846', b'"value":-0.0', b'"value":1e2'):
            expect(digits in raw, "%s: the raw body lacks %s (decimals must keep their text): %s"
                   % (what, digits.decode(), resp.snippet(600)))


def generate_tests():
    """One test per case of cases/rest_errors.json: request -> status + OperationOutcome."""
    def make(case):
        def run_case(t):
            before = t.newest()
            headers = case.get("headers", {})
            body = case.get("body")
            if isinstance(body, str):
                body = body.encode("utf-8")
            r = t.request(case["method"], case["path"], body, headers)
            exp = case["expect"]
            expect_outcome(r, exp["status"], exp.get("code"), exp.get("expression"),
                           case["name"])
            expect(r.header("X-Request-Id"), "%s: no X-Request-Id" % case["name"])
            expect_eq(t.newest(), before, "%s: a refused request must store nothing" %
                      case["name"])
        return run_case
    for case in load_cases("rest_errors.json"):
        yield "error_" + re.sub(r"[^a-z0-9]+", "_", case["name"].lower()).strip("_"), make(case)


# ---- operations ----

def test_healthz_and_metrics(t):
    r = t.get("/healthz")
    expect_status(r, 200, "healthz")
    expect_eq(r.json.get("status"), "ok", "healthz body")

    def count_posts():
        m = t.get("/metrics")
        expect_status(m, 200, "metrics")
        text = m.body.decode()
        line = re.search(r'^jk_http_requests_total\{method="POST",route="/fhir/R4/:type",'
                         r'status="201"\} (\d+)$', text, re.M)
        return text, int(line.group(1)) if line else 0

    t.create(patient(active=True))
    text, n0 = count_posts()
    expect(n0 >= 1, "metrics: no jk_http_requests_total line for POST /fhir/R4/:type 201")
    expect(re.search(r'^jk_http_request_duration_seconds_bucket\{method="POST",'
                     r'route="/fhir/R4/:type",le="\+Inf"\} \d+$', text, re.M),
           "metrics: no jk_http_request_duration_seconds_bucket with the route label")
    expect(re.search(r'^jk_http_request_duration_seconds_bucket\{method="GET",route="/healthz",'
                     r'le="[0-9.e+-]+"\} \d+$', text, re.M),
           "metrics: no latency bucket for /healthz")
    t.create(patient(active=True))
    deadline = time.time() + 3
    while count_posts()[1] < n0 + 1 and time.time() < deadline:
        time.sleep(0.05)
    expect(count_posts()[1] >= n0 + 1, "metrics: the POST counter did not grow after a create")


def test_every_response_has_a_request_id(t):
    rid, _ = t.create(patient(active=True))
    requests = [("GET", "/healthz", None, {}), ("GET", "/metrics", None, {}),
                ("GET", FHIR + "/metadata", None, {}), ("GET", "%s/Patient/%s" % (FHIR, rid),
                                                         None, {}),
                ("GET", FHIR + "/Patient/" + uniq("no"), None, {}),
                ("POST", FHIR + "/Patient", b"{", {"Content-Type": "application/fhir+json"}),
                ("POST", FHIR + "/Patient", b"{}", {"Content-Type": "text/plain"}),
                ("PATCH", FHIR + "/Patient/x", None, {}), ("GET", "/nowhere", None, {}),
                ("GET", "/fhir/R4/Patient?" + "q" * 9000, None, {})]
    ids = set()
    for method, path, body, headers in requests:
        r = t.request(method, path, body, headers)
        rqid = r.header("X-Request-Id")
        expect(rqid, "%s %s (status %d) has no X-Request-Id" % (method, path[:60], r.status))
        expect(rqid not in ids, "X-Request-Id %s was used twice" % rqid)
        ids.add(rqid)

