"""test_bundle.py - transaction and batch Bundles (POST /fhir/R4) and PATCH: urn:uuid: and
conditional references rewritten to the ids the server assigns, all or nothing (a transaction
whose last entry fails leaves nothing behind, whether the entry is refused before the
transaction or fails inside it), the processing order of the specification, conditional
creates, batches that answer each entry on its own, malformed Bundles refused with the entry
named, and JSON Patch (RFC 6902) with If-Match, inside and outside a transaction."""
import base64
import json
import re
import threading

from run import FHIR, expect, expect_eq, expect_outcome, expect_status, patient, uniq

SYSTEM = "urn:jk:test:bundle"


def ident(value, system=SYSTEM):
    return [{"system": system, "value": value}]


def urn():
    return "urn:uuid:" + uniq("x")[2:10] + "-0000-4000-8000-" + uniq("y")[2:14]


def obs(subject, encounter=None, text="pulse"):
    o = {"resourceType": "Observation", "status": "final", "code": {"text": text},
         "subject": {"reference": subject}}
    if encounter:
        o["encounter"] = {"reference": encounter}
    return o


def encounter(subject):
    return {"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "AMB"},
            "subject": {"reference": subject}}


def entry(method, url, resource=None, full_url=None, **request):
    e = {"request": dict(method=method, url=url, **request)}
    if resource is not None:
        e["resource"] = resource
    if full_url:
        e["fullUrl"] = full_url
    return e


def bundle(kind, *entries):
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def post_bundle(t, b, status=200, what="bundle", headers=None):
    r = t.post(FHIR, b, headers)
    expect_status(r, status, what)
    if status == 200:
        body = r.json
        expect_eq(body.get("resourceType"), "Bundle", what + ": response resourceType")
        expect_eq(body.get("type"), b["type"] + "-response", what + ": response type")
        expect_eq(len(body.get("entry", [])), len(b["entry"]),
                  what + ": one response entry per entry")
    return r


def ref_id(reference, rtype):
    m = re.match(r"^%s/([A-Za-z0-9\-.]{1,64})$" % rtype, reference or "")
    expect(m, "reference %r is not %s/id" % (reference, rtype))
    return m.group(1)


def loc_id(e, rtype):
    """(id, version) from a response entry's location."""
    loc = e["response"].get("location", "")
    m = re.search(r"/fhir/R4/%s/([^/]+)/_history/(\d+)$" % rtype, loc)
    expect(m, "response.location %r is not .../%s/id/_history/n" % (loc, rtype))
    return m.group(1), int(m.group(2))


def issue_exprs(r):
    return [x for i in r.outcome_issues() for x in i.get("expression", [])]


def expect_names_entry(r, index, what):
    exprs = issue_exprs(r)
    expect(any(x.startswith("Bundle.entry[%d]" % index) for x in exprs),
           "%s: the OperationOutcome must name Bundle.entry[%d], got %s" % (what, index, exprs))


# ---- transactions ----

def test_transaction_resolves_urn_uuid_references(t):
    p, e = urn(), urn()
    value = uniq("tx")
    b = bundle("transaction",
               entry("POST", "Observation", obs(p, e), urn()),
               entry("POST", "Patient", patient(identifier=ident(value), gender="female"), p),
               entry("POST", "Encounter", encounter(p), e))
    r = post_bundle(t, b, what="transaction of three creates")
    out = r.json["entry"]
    oid, ov = loc_id(out[0], "Observation")
    pid, pv = loc_id(out[1], "Patient")
    eid, ev = loc_id(out[2], "Encounter")
    expect_eq((ov, pv, ev), (1, 1, 1), "versions of the created resources")
    for e_, rtype, rid in ((out[0], "Observation", oid), (out[1], "Patient", pid),
                           (out[2], "Encounter", eid)):
        expect_eq(e_["response"]["status"][:3], "201", "%s: response.status" % rtype)
        expect_eq(e_["response"].get("etag"), 'W/"1"', "%s: response.etag" % rtype)
        expect(re.match(r"^\d{4}-\d\d-\d\dT", e_["response"].get("lastModified", "")),
               "%s: response.lastModified %r" % (rtype, e_["response"].get("lastModified")))
        expect(e_.get("fullUrl", "").endswith("/fhir/R4/%s/%s" % (rtype, rid)),
               "%s: fullUrl %r" % (rtype, e_.get("fullUrl")))
    o = t.read("Observation", oid).json
    expect_eq(ref_id(o["subject"]["reference"], "Patient"), pid, "Observation.subject rewritten")
    expect_eq(ref_id(o["encounter"]["reference"], "Encounter"), eid,
              "Observation.encounter rewritten")
    expect_eq(ref_id(t.read("Encounter", eid).json["subject"]["reference"], "Patient"), pid,
              "Encounter.subject rewritten")
    expect_eq(t.read("Patient", pid).json.get("identifier"), ident(value), "the Patient stored")
    # The response carries the stored resources, references and all.
    expect_eq(out[0]["resource"], o, "response resource equals what a read gives")


def test_transaction_rewrites_nested_contained_and_extension_references(t):
    p = urn()
    o = obs(p)
    o["contained"] = [{"resourceType": "Practitioner", "id": "pr1",
                       "extension": [{"url": "http://example.org/ext/patient",
                                      "valueReference": {"reference": p}}]}]
    o["performer"] = [{"reference": "#pr1"}]
    o["extension"] = [{"url": "http://example.org/ext/about",
                       "valueReference": {"reference": p}}]
    o["component"] = [{"code": {"text": "x"}, "extension": [{
        "url": "http://example.org/ext/who", "valueReference": {"reference": p}}]}]
    r = post_bundle(t, bundle("transaction", entry("POST", "Observation", o),
                              entry("POST", "Patient", patient(), p)), what="nested references")
    oid, _ = loc_id(r.json["entry"][0], "Observation")
    pid, _ = loc_id(r.json["entry"][1], "Patient")
    got = t.read("Observation", oid).json
    want = "Patient/" + pid
    expect_eq(got["contained"][0]["extension"][0]["valueReference"]["reference"], want,
              "reference in a contained resource's extension")
    expect_eq(got["extension"][0]["valueReference"]["reference"], want,
              "valueReference of an extension")
    expect_eq(got["component"][0]["extension"][0]["valueReference"]["reference"], want,
              "valueReference nested in a component")
    expect_eq(got["performer"][0]["reference"], "#pr1", "a local reference stays as it is")


def test_transaction_whose_last_entry_is_invalid_leaves_nothing(t):
    pid, eid = uniq("txa-p"), uniq("txa-e")
    value = uniq("txa")
    before = t.newest()
    b = bundle("transaction",
               entry("PUT", "Patient/" + pid, patient(id=pid, identifier=ident(value))),
               entry("PUT", "Encounter/" + eid, dict(encounter("Patient/" + pid), id=eid)),
               entry("POST", "Observation", dict(obs("Patient/" + pid), status="sort-of")))
    r = t.post(FHIR, b)
    expect_outcome(r, 400, what="transaction whose last entry is invalid")
    expect_names_entry(r, 2, "invalid last entry")
    expect("Bundle.entry[2].resource.status" in issue_exprs(r),
           "the issue names the element: %s" % issue_exprs(r))
    t.read("Patient", pid, 404)
    t.read("Encounter", eid, 404)
    expect_eq(t.newest(), before, "nothing written anywhere (system history)")
    # The same Bundle, fixed, goes through whole.
    b["entry"][2]["resource"]["status"] = "final"
    post_bundle(t, b, what="the corrected transaction")
    t.read("Patient", pid)
    t.read("Encounter", eid)


def test_transaction_failing_inside_the_store_transaction_leaves_nothing(t):
    """The last entry passes every check before the transaction and fails inside it (a stale
    If-Match, a conditional reference that matches nothing): the writes of the entries before
    it are rolled back by the store."""
    existing, _ = t.create(patient(gender="male"))
    expect_status(t.put("%s/Patient/%s" % (FHIR, existing), patient(id=existing, gender="other")),
                  200, "make version 2")
    for what, last in (
            ("stale ifMatch", entry("PUT", "Patient/" + existing,
                                    patient(id=existing, gender="female"), ifMatch='W/"1"')),
            ("conditional reference with no match",
             entry("POST", "Observation",
                   obs("Patient?identifier=%s|%s" % (SYSTEM, uniq("nobody")))))):
        pid, value = uniq("txb"), uniq("txb")
        p = urn()
        before = t.newest()
        b = bundle("transaction",
                   entry("POST", "Patient", patient(identifier=ident(value)), p),
                   entry("PUT", "Patient/" + pid, patient(id=pid)),
                   entry("POST", "Observation", obs(p)),
                   last)
        r = t.post(FHIR, b)
        expect_outcome(r, (400, 404, 409, 412, 422), what="transaction failing on " + what)
        expect_names_entry(r, 3, what)
        t.read("Patient", pid, 404)
        expect_eq(t.newest(), before, what + ": nothing written anywhere")
        got = t.read("Patient", existing).json
        expect_eq((got["meta"]["versionId"], got.get("gender")), ("2", "other"),
                  what + ": the existing Patient is unchanged")


def test_transaction_processing_order(t):
    """DELETE, then POST, then PUT, then GET, whatever the order of the entries: the GET
    (first in the Bundle) sees the Patient that the POST (second) creates after the DELETE
    (last) removed the old one with the same identifier."""
    value = uniq("order")
    old, _ = t.create(patient(identifier=ident(value), gender="male"))
    q = "identifier=%s|%s" % (SYSTEM, value)
    b = bundle("transaction",
               entry("GET", "Patient?" + q),
               entry("POST", "Patient", patient(identifier=ident(value), gender="female"),
                     ifNoneExist=q),
               entry("DELETE", "Patient?" + q))
    r = post_bundle(t, b, what="GET, POST and DELETE of one identifier")
    out = r.json["entry"]
    expect_eq(out[2]["response"]["status"][:3], "204", "the DELETE's status")
    expect_eq(out[1]["response"]["status"][:3], "201",
              "the POST creates: its ifNoneExist ran after the DELETE")
    new, _ = loc_id(out[1], "Patient")
    expect(new != old, "a new Patient")
    found = out[0]["resource"]
    expect_eq(found.get("resourceType"), "Bundle", "the GET's resource is a searchset")
    expect_eq([e["resource"]["id"] for e in found.get("entry", [])], [new],
              "the GET sees only the Patient created in the same transaction")
    t.read("Patient", old, 410)
    expect_eq(t.read("Patient", new).json.get("gender"), "female", "the new Patient")


def test_conditional_create_in_a_transaction_twice(t):
    value = uniq("cc")
    q = "identifier=%s|%s" % (SYSTEM, value)

    def run():
        p = urn()
        return post_bundle(t, bundle(
            "transaction",
            entry("POST", "Patient", patient(identifier=ident(value)), p, ifNoneExist=q),
            entry("POST", "Observation", obs(p))), what="conditional create").json["entry"]

    first = run()
    expect_eq(first[0]["response"]["status"][:3], "201", "first run creates the Patient")
    pid, _ = loc_id(first[0], "Patient")
    before = t.history("%s/Patient/%s/_history" % (FHIR, pid))
    second = run()
    expect_eq(second[0]["response"]["status"][:3], "200",
              "second run: the Patient exists, nothing created")
    expect_eq(loc_id(second[0], "Patient"), (pid, 1), "second run names the existing Patient")
    expect_eq(t.history("%s/Patient/%s/_history" % (FHIR, pid)), before,
              "second run: the Patient gets no new version")
    oid, _ = loc_id(second[1], "Observation")
    expect_eq(t.read("Observation", oid).json["subject"]["reference"], "Patient/" + pid,
              "a reference to the conditional create's fullUrl points at the existing Patient")
    found = post_bundle(t, bundle("transaction", entry("GET", "Patient?" + q)),
                        what="count").json["entry"][0]["resource"]
    expect_eq(len(found.get("entry", [])), 1, "one Patient with the identifier after two runs")


def test_conditional_references(t):
    value = uniq("cref")
    pid, _ = t.create(patient(identifier=ident(value)))
    ref = "Patient?identifier=%s|%s" % (SYSTEM, value)
    r = post_bundle(t, bundle("transaction", entry("POST", "Observation", obs(ref)),
                              entry("POST", "Observation", obs(ref, text="again"))),
                    what="conditional reference")
    for e in r.json["entry"]:
        oid, _ = loc_id(e, "Observation")
        expect_eq(t.read("Observation", oid).json["subject"]["reference"], "Patient/" + pid,
                  "conditional reference resolved")
    # No match and two matches fail the transaction, naming the reference.
    before = t.newest()
    r = t.post(FHIR, bundle("transaction", entry("POST", "Patient", patient()),
                            entry("POST", "Observation",
                                  obs("Patient?identifier=%s|%s" % (SYSTEM, uniq("none"))))))
    expect_outcome(r, 400, what="conditional reference with no match")
    expect("Bundle.entry[1].resource.subject.reference" in issue_exprs(r),
           "the issue names the reference: %s" % issue_exprs(r))
    expect_eq(t.newest(), before, "a conditional reference with no match wrote nothing")
    t.create(patient(identifier=ident(value)))
    before = t.newest()
    r = t.post(FHIR, bundle("transaction", entry("POST", "Observation", obs(ref))))
    expect_outcome(r, 412, what="conditional reference with two matches")
    expect_names_entry(r, 0, "two matches")
    expect_eq(t.newest(), before, "a conditional reference with two matches wrote nothing")


def test_conditional_update_and_delete_in_a_transaction(t):
    value, gone = uniq("cu"), uniq("cd")
    pid, _ = t.create(patient(identifier=ident(value), gender="male"))
    did, _ = t.create(patient(identifier=ident(gone)))
    b = bundle("transaction",
               entry("PUT", "Patient?identifier=%s|%s" % (SYSTEM, value),
                     patient(identifier=ident(value), gender="female")),
               entry("DELETE", "Patient?identifier=%s|%s" % (SYSTEM, gone)),
               entry("PUT", "Patient?identifier=%s|%s" % (SYSTEM, uniq("new")),
                     patient(identifier=ident("fresh"))))
    out = post_bundle(t, b, what="conditional update and delete").json["entry"]
    expect_eq(loc_id(out[0], "Patient"), (pid, 2), "conditional update updates the match")
    expect_eq(t.read("Patient", pid).json.get("gender"), "female", "the update is stored")
    t.read("Patient", did, 410)
    expect_eq(out[2]["response"]["status"][:3], "201", "conditional update with no match creates")


def test_if_match_in_a_transaction(t):
    pid, _ = t.create(patient(gender="male"))
    b = bundle("transaction", entry("PUT", "Patient/" + pid, patient(id=pid, gender="female"),
                                    ifMatch='W/"1"'))
    out = post_bundle(t, b, what="ifMatch current").json["entry"]
    expect_eq(loc_id(out[0], "Patient"), (pid, 2), "update with the current ifMatch")
    r = t.post(FHIR, b)
    expect_outcome(r, 412, what="ifMatch stale")
    expect_names_entry(r, 0, "ifMatch stale")


def test_transaction_may_change_a_resource_only_once(t):
    pid, _ = t.create(patient())
    before = t.newest()
    r = t.post(FHIR, bundle("transaction",
                            entry("PUT", "Patient/" + pid, patient(id=pid, gender="male")),
                            entry("DELETE", "Patient/" + pid)))
    expect_outcome(r, 400, what="a PUT and a DELETE of one resource")
    expect_names_entry(r, 1, "overlap")
    expect_eq(t.newest(), before, "overlap: nothing written")


def test_prefer_in_a_transaction(t):
    b = bundle("transaction", entry("POST", "Patient", patient(gender="male")))
    e = post_bundle(t, b, headers={"Prefer": "return=minimal"}).json["entry"][0]
    expect("resource" not in e, "return=minimal: no resource in the entry")
    loc_id(e, "Patient")
    e = post_bundle(t, b, headers={"Prefer": "return=OperationOutcome"}).json["entry"][0]
    expect_eq(e["response"].get("outcome", {}).get("resourceType"), "OperationOutcome",
              "return=OperationOutcome: response.outcome")


# ---- batches ----

def test_batch_answers_each_entry(t):
    pid, _ = t.create(patient(gender="male"))
    expect_status(t.put("%s/Patient/%s" % (FHIR, pid), patient(id=pid, gender="other")), 200,
                  "version 2")
    value = uniq("batch")
    b = bundle("batch",
               entry("POST", "Patient", patient(identifier=ident(value))),
               entry("POST", "Patient", patient(birthDate="1990-13-45")),
               entry("PUT", "Patient/" + pid, patient(id=pid, gender="female"), ifMatch='W/"1"'),
               entry("GET", "Patient/" + uniq("nobody")),
               entry("GET", "Patient/" + pid),
               entry("POST", "Observation", obs("Patient/" + pid)),
               entry("DELETE", "Patient"))
    out = post_bundle(t, b, what="batch").json["entry"]
    statuses = [e["response"]["status"][:3] for e in out]
    expect_eq(statuses, ["201", "400", "412", "404", "200", "201", "400"], "batch statuses")
    for i in (1, 2, 3, 6):
        oc = out[i]["response"].get("outcome", {})
        expect_eq(oc.get("resourceType"), "OperationOutcome", "entry %d: response.outcome" % i)
        exprs = [x for is_ in oc.get("issue", []) for x in is_.get("expression", [])]
        expect(any(x.startswith("Bundle.entry[%d]" % i) for x in exprs),
               "entry %d: the outcome names the entry: %s" % (i, exprs))
        expect(all(is_.get("diagnostics") for is_ in oc.get("issue", [])),
               "entry %d: every issue has diagnostics" % i)
    expect("Bundle.entry[1].resource.birthDate" in [
        x for is_ in out[1]["response"]["outcome"]["issue"] for x in is_.get("expression", [])],
        "the invalid entry's issue names the element")
    created, _ = loc_id(out[0], "Patient")
    expect_eq(t.read("Patient", created).json.get("identifier"), ident(value),
              "the good entry is stored")
    expect_eq(out[4]["resource"]["id"], pid, "the GET entry returns the resource")
    got = t.read("Patient", pid).json
    expect_eq((got["meta"]["versionId"], got["gender"]), ("2", "other"),
              "the refused PUT changed nothing")


def test_batch_entries_cannot_link_by_urn(t):
    p = urn()
    out = post_bundle(t, bundle("batch", entry("POST", "Patient", patient(), p),
                                entry("POST", "Observation", obs(p))),
                      what="batch with a urn reference").json["entry"]
    expect_eq([e["response"]["status"][:3] for e in out], ["201", "400"],
              "a batch entry cannot refer to another by its fullUrl")


# ---- malformed Bundles ----

def test_malformed_bundles_are_refused_naming_the_entry(t):
    p = urn()
    before = t.newest()
    cases = [
        ("a collection", {"resourceType": "Bundle", "type": "collection", "entry": []}, None),
        ("not a Bundle", patient(), None),
        ("duplicate fullUrl", bundle("transaction", entry("POST", "Patient", patient(), p),
                                     entry("POST", "Patient", patient(), p)), 1),
        ("POST without a resource", bundle("transaction", entry("POST", "Patient", None)), 0),
        ("POST to Type/id", bundle("transaction", entry("POST", "Patient/abc", patient())), 0),
        ("unknown method", bundle("transaction", entry("PUT", "Patient/a", patient(id="a")),
                                  entry("FETCH", "Patient/abc")), 1),
        ("missing request", {"resourceType": "Bundle", "type": "transaction",
                             "entry": [{"resource": patient()}]}, 0),
        ("foreign absolute url", bundle("transaction", entry(
            "PUT", "http://elsewhere.example/fhir/Patient/a", patient(id="a"))), 0),
        ("unknown type in url", bundle("transaction", entry("GET", "Nonsense/1")), 0),
        ("resourceType differs from url", bundle("transaction",
                                                 entry("POST", "Observation", patient())), 0),
        ("PUT id differs from url", bundle("transaction",
                                           entry("PUT", "Patient/a", patient(id="b"))), 0),
        ("unresolvable urn", bundle("transaction", entry("POST", "Observation", obs(urn()))), 0),
        ("ifNoneExist on PUT", bundle("transaction", entry("PUT", "Patient/a", patient(id="a"),
                                                           ifNoneExist="identifier=x")), 0),
        ("bad ifMatch", bundle("transaction", entry("PUT", "Patient/a", patient(id="a"),
                                                    ifMatch="soon")), 0),
        ("entry not an object", {"resourceType": "Bundle", "type": "transaction",
                                 "entry": [17]}, 0),
    ]
    for what, b, index in cases:
        r = t.post(FHIR, b)
        expect_outcome(r, 400, what=what)
        if index is not None:
            expect_names_entry(r, index, what)
    for what, body, ctype in (("not JSON", "{", "application/fhir+json"),
                              ("XML", "<Bundle/>", "application/fhir+xml")):
        r = t.request("POST", FHIR, body, {"Content-Type": ctype})
        expect_outcome(r, (400, 415), what=what)
    expect_eq(t.newest(), before, "refused Bundles wrote nothing")
    t.healthy("after malformed Bundles")


# ---- PATCH ----

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def patch(t, rtype, rid, ops, headers=None):
    h = dict(JSON_PATCH)
    h.update(headers or {})
    body = ops if isinstance(ops, (str, bytes)) else json.dumps(ops)
    return t.request("PATCH", "%s/%s/%s" % (FHIR, rtype, rid), body, h)


def test_patch_add_replace_remove(t):
    rid, _ = t.create(patient(gender="male", active=True,
                              name=[{"family": "Zhang", "given": ["Wei"]}]))
    r = patch(t, "Patient", rid, [
        {"op": "replace", "path": "/gender", "value": "female"},
        {"op": "add", "path": "/name/0/given/-", "value": "Lan"},
        {"op": "add", "path": "/name/0/given/0", "value": "Xiao"},
        {"op": "remove", "path": "/active"},
        {"op": "add", "path": "/birthDate", "value": "1990-02-03"},
        {"op": "test", "path": "/name/0/family", "value": "Zhang"},
        {"op": "copy", "from": "/name/0", "path": "/name/-"},
        {"op": "move", "from": "/name/1/family", "path": "/name/1/text"}])
    expect_status(r, 200, "patch")
    expect_eq(r.header("ETag"), 'W/"2"', "patch makes version 2")
    got = t.read("Patient", rid).json
    expect_eq(got.get("gender"), "female", "replace")
    expect_eq(got["name"][0]["given"], ["Xiao", "Wei", "Lan"], "add at an index and at the end")
    expect("active" not in got, "remove")
    expect_eq(got.get("birthDate"), "1990-02-03", "add a new element")
    expect_eq(got["name"][1], {"text": "Zhang", "given": ["Xiao", "Wei", "Lan"]}, "copy + move")
    expect_eq(r.json, got, "the response is the stored resource")
    # JSON Pointer escapes: ~1 is '/', ~0 is '~'.
    r = patch(t, "Patient", rid, [{"op": "add", "path": "/extension", "value": [
        {"url": "http://example.org/a~b/c", "valueString": "x"}]},
        {"op": "test", "path": "/extension/0/url", "value": "http://example.org/a~b/c"},
        {"op": "replace", "path": "/extension/0/valueString", "value": "y"}])
    expect_status(r, 200, "patch with an extension")


def test_patch_errors(t):
    rid, _ = t.create(patient(gender="male"))
    cases = [
        ("failed test", [{"op": "test", "path": "/gender", "value": "female"}], 422),
        ("path that does not exist", [{"op": "replace", "path": "/birthDate",
                                       "value": "2000"}], 422),
        ("index out of range", [{"op": "add", "path": "/name/5", "value": {}}], 422),
        ("pointer without a slash", [{"op": "add", "path": "gender", "value": "x"}], 400),
        ("bad ~ escape", [{"op": "add", "path": "/a~2b", "value": 1}], 400),
        ("unknown op", [{"op": "merge", "path": "/gender", "value": "x"}], 400),
        ("missing value", [{"op": "add", "path": "/gender"}], 400),
        ("not an array", {"op": "add", "path": "/gender", "value": "x"}, 400),
        ("not JSON", "[{", 400),
        ("changes the id", [{"op": "replace", "path": "/id", "value": "other"}], 422),
        ("changes resourceType", [{"op": "replace", "path": "/resourceType",
                                   "value": "Group"}], 422),
        ("result is invalid", [{"op": "replace", "path": "/gender", "value": "robot"}], 422),
    ]
    for what, ops, status in cases:
        r = patch(t, "Patient", rid, ops)
        issues = expect_outcome(r, status, what="patch: " + what)
        if isinstance(ops, list) and status == 422 and what not in ("changes the id",
                                                                   "changes resourceType",
                                                                   "result is invalid"):
            expect(any("operation [0]" in i["diagnostics"] for i in issues),
                   "patch %s: the issue names the operation: %s" % (what, issues))
    # The second of two operations fails: the first is not applied either.
    r = patch(t, "Patient", rid, [{"op": "replace", "path": "/gender", "value": "female"},
                                  {"op": "remove", "path": "/nothing"}])
    issues = expect_outcome(r, 422, what="patch whose second operation fails")
    expect(any("operation [1]" in i["diagnostics"] for i in issues), "names operation [1]")
    got = t.read("Patient", rid).json
    expect_eq((got["meta"]["versionId"], got["gender"]), ("1", "male"),
              "failed patches changed nothing")
    r = t.request("PATCH", "%s/Patient/%s" % (FHIR, rid), "[]",
                  {"Content-Type": "application/fhir+json"})
    expect_outcome(r, 415, what="patch with a FHIR JSON content type")
    expect_outcome(patch(t, "Patient", uniq("nobody"), []), 404, what="patch of an unknown id")
    t.delete("%s/Patient/%s" % (FHIR, rid))
    expect_outcome(patch(t, "Patient", rid, []), 410, what="patch of a deleted resource")


def test_patch_if_match(t):
    rid, _ = t.create(patient(gender="male"))
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    expect_outcome(patch(t, "Patient", rid, ops, {"If-Match": 'W/"7"'}), 412,
                   what="patch with a stale If-Match")
    r = patch(t, "Patient", rid, ops, {"If-Match": 'W/"1"'})
    expect_status(r, 200, "patch with the current If-Match")
    expect_eq(r.header("ETag"), 'W/"2"', "patch with If-Match: version")
    expect_outcome(patch(t, "Patient", rid, ops, {"If-Match": 'W/"1"'}), 412,
                   what="the same If-Match again")


def test_concurrent_patches_lose_no_update(t):
    """Many clients patch one resource at once without If-Match: each patch that is answered
    200 is in the final resource (none is lost by applying it to a stale version); a 409 is
    the only other answer allowed (a concurrent writer won the version)."""
    for rnd in range(3):
        rid, _ = t.create(patient(name=[{"family": "Race", "given": ["start"]}]))
        n = 24
        results = [None] * n
        gate = threading.Barrier(n)

        def worker(i):
            c = t.server.client()
            try:
                gate.wait(30)
                r = c.request("PATCH", "%s/Patient/%s" % (FHIR, rid), json.dumps(
                    [{"op": "add", "path": "/name/0/given/-", "value": "g%02d" % i}]),
                    JSON_PATCH)
                results[i] = r.status
            finally:
                c.close()

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        what = "round %d" % rnd
        expect(all(s in (200, 409) for s in results), "%s: statuses %s" % (what, results))
        ok = {"g%02d" % i for i in range(n) if results[i] == 200}
        expect(ok, what + ": at least one patch succeeds")
        got = t.read("Patient", rid).json
        expect_eq(set(got["name"][0]["given"]), ok | {"start"},
                  what + ": every successful patch is in the resource")
        expect_eq(got["meta"]["versionId"], str(1 + len(ok)),
                  what + ": one version per successful patch")


def test_conditional_patch(t):
    value = uniq("cp")
    rid, _ = t.create(patient(identifier=ident(value), gender="male"))
    h = dict(JSON_PATCH)
    url = "%s/Patient?identifier=%s%%7C%s" % (FHIR, SYSTEM, value)
    r = t.request("PATCH", url, json.dumps([{"op": "replace", "path": "/gender",
                                             "value": "other"}]), h)
    expect_status(r, 200, "conditional patch")
    expect_eq(t.read("Patient", rid).json.get("gender"), "other", "conditional patch stored")
    r = t.request("PATCH", "%s/Patient?identifier=%s" % (FHIR, uniq("none")), "[]", h)
    expect_outcome(r, 404, what="conditional patch with no match")


def test_patch_in_a_transaction(t):
    rid, _ = t.create(patient(gender="male"))
    p = urn()
    ops = [{"op": "add", "path": "/link", "value": [{"other": {"reference": p},
                                                      "type": "seealso"}]}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    out = post_bundle(t, bundle("transaction", entry("PATCH", "Patient/" + rid, binary),
                                entry("POST", "Patient", patient(gender="female"), p)),
                      what="PATCH entry").json["entry"]
    other, _ = loc_id(out[1], "Patient")
    expect_eq(loc_id(out[0], "Patient"), (rid, 2), "the PATCH entry makes version 2")
    expect_eq(t.read("Patient", rid).json["link"][0]["other"]["reference"], "Patient/" + other,
              "a urn:uuid: added by the patch is resolved too")
    bad = dict(binary, data=base64.b64encode(b'[{"op":"test","path":"/gender",'
                                             b'"value":"female"}]').decode())
    r = t.post(FHIR, bundle("transaction", entry("PATCH", "Patient/" + rid, bad)))
    expect_outcome(r, 422, what="PATCH entry whose test fails")
    expect_names_entry(r, 0, "failing PATCH entry")


def test_bundle_entry_limit(t):
    s = t.start_server("bundlelimit", env={"JIANKANG_MAX_BUNDLE_ENTRIES": "2"})
    try:
        two = bundle("transaction", entry("POST", "Patient", patient()),
                     entry("POST", "Patient", patient()))
        r = s.request("POST", FHIR, two)
        expect_status(r, 200, "a transaction at the entry limit")
        three = bundle("batch", *(two["entry"] + [entry("GET", "Patient?_count=1")]))
        expect_outcome(s.request("POST", FHIR, three), 413, what="a batch over the entry limit")
    finally:
        expect_eq(s.stop(), 0, "the limited server stops cleanly")
