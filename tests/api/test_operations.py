"""test_operations.py - the FHIR operations: $validate (valid, invalid, wrapped in Parameters,
modes), $meta / $meta-add / $meta-delete (in place, no new version), and Patient/$everything:
exactly the patient's compartment and what it refers to, never another patient's data, with
_type, _since and paging that neither repeats nor skips; and, when ../shared/data/synthea-r4
exists, a Synthea bundle POSTed as a transaction and read back whole through $everything."""
import json
import os
import threading
import time

from run import (FHIR, ROOT, Skip, expect, expect_eq, expect_outcome, expect_status, next_link,
                 patient, uniq)

SYNTHEA = os.path.join(os.path.dirname(ROOT), "shared", "data", "synthea-r4")


# ---- $validate ----

def test_validate_valid_and_invalid(t):
    before = t.newest()
    r = t.post(FHIR + "/Patient/$validate", patient(birthDate="1990-02-03", gender="male"))
    issues = expect_outcome(r, 200, what="$validate of a valid Patient")
    expect(all(i["severity"] == "information" for i in issues),
           "a valid resource gets information issues only: %s" % issues)
    r = t.post(FHIR + "/Patient/$validate", patient(birthDate="1990-13-01", gender="robot"))
    issues = expect_outcome(r, 200, what="$validate of an invalid Patient")
    exprs = {x for i in issues for x in i.get("expression", [])}
    expect({"Patient.birthDate", "Patient.gender"} <= exprs,
           "$validate names each bad element: %s" % issues)
    expect(all(i["severity"] in ("error", "fatal") for i in issues),
           "problems are errors: %s" % issues)
    # Wrapped in Parameters, as the OperationDefinition gives it.
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": patient(birthDate="1990-13-01")}]}
    issues = expect_outcome(t.post(FHIR + "/Patient/$validate", params), 200,
                            what="$validate with Parameters")
    expect("Patient.birthDate" in {x for i in issues for x in i.get("expression", [])},
           "Parameters: the resource inside is validated: %s" % issues)
    issues = expect_outcome(t.post(FHIR + "/Observation/$validate", patient()), 200,
                            what="$validate of a Patient at Observation")
    expect(any(i["severity"] == "error" for i in issues), "a type mismatch is an error")
    expect_eq(t.newest(), before, "$validate stores nothing")
    expect_outcome(t.request("POST", FHIR + "/Patient/$validate", "{",
                             {"Content-Type": "application/fhir+json"}), 400,
                   what="$validate of text that is not JSON")
    expect_outcome(t.post(FHIR + "/Nonsense/$validate", patient()), 404,
                   what="$validate of an unknown type")


def test_validate_modes(t):
    rid, _ = t.create(patient(gender="male"))
    ok = {"resourceType": "Parameters", "parameter": [
        {"name": "mode", "valueCode": "update"},
        {"name": "resource", "resource": patient(id=rid, gender="female")}]}
    issues = expect_outcome(t.post("%s/Patient/%s/$validate" % (FHIR, rid), ok), 200,
                            what="$validate mode=update")
    expect(all(i["severity"] == "information" for i in issues), "mode=update ok: %s" % issues)
    bad = json.loads(json.dumps(ok))
    bad["parameter"][1]["resource"]["id"] = "someone-else"
    issues = expect_outcome(t.post("%s/Patient/%s/$validate" % (FHIR, rid), bad), 200,
                            what="$validate mode=update with another id")
    expect(any(i["severity"] == "error" for i in issues), "mode=update: id mismatch is an error")
    expect_outcome(t.post(FHIR + "/Patient/$validate?mode=update", patient()), 400,
                   what="mode=update without an id in the URL")
    expect_outcome(t.post(FHIR + "/Patient/$validate?mode=sometimes", patient()), 400,
                   what="an unknown mode")


# ---- $meta ----

def params_meta(**meta):
    return {"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]}


def returned_meta(r, what):
    expect_status(r, 200, what)
    p = r.json
    expect_eq(p.get("resourceType"), "Parameters", what + ": resourceType")
    ret = [x for x in p.get("parameter", []) if x.get("name") == "return"]
    expect(len(ret) == 1 and "valueMeta" in ret[0], what + ": one 'return' with valueMeta")
    return ret[0]["valueMeta"]


def test_meta_add_and_delete_change_no_version(t):
    rid, created = t.create(patient(meta={"tag": [{"system": "http://t", "code": "a"}]}))
    base = "%s/Patient/%s" % (FHIR, rid)
    m = returned_meta(t.get(base + "/$meta"), "$meta")
    expect_eq(m.get("tag"), [{"system": "http://t", "code": "a"}], "$meta: the tag")
    expect_eq(m.get("versionId"), "1", "$meta: versionId")
    add = params_meta(tag=[{"system": "http://t", "code": "a", "display": "again"},
                           {"system": "http://t", "code": "b"}],
                      security=[{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                 "code": "R"}],
                      profile=["http://example.org/StructureDefinition/p"])
    m = returned_meta(t.post(base + "/$meta-add", add), "$meta-add")
    expect_eq([x["code"] for x in m.get("tag", [])], ["a", "b"],
              "$meta-add: tags are a set (system+code), no duplicate")
    expect_eq(m.get("profile"), ["http://example.org/StructureDefinition/p"], "$meta-add: profile")
    expect_eq([x["code"] for x in m.get("security", [])], ["R"], "$meta-add: security")
    r = t.read("Patient", rid)
    expect_eq(r.header("ETag"), 'W/"1"', "$meta-add makes no new version")
    expect_eq(r.json["meta"].get("lastUpdated"), created.json["meta"]["lastUpdated"],
              "$meta-add leaves lastUpdated")
    expect_eq([x["code"] for x in r.json["meta"].get("tag", [])], ["a", "b"],
              "the read shows the added tag")
    expect_eq(len(t.history(base + "/_history")), 1, "history: still one version")
    m = returned_meta(t.post(base + "/$meta-delete", params_meta(
        tag=[{"system": "http://t", "code": "a"}],
        profile=["http://example.org/StructureDefinition/p"])), "$meta-delete")
    expect_eq([x["code"] for x in m.get("tag", [])], ["b"], "$meta-delete removes the tag")
    expect("profile" not in m, "$meta-delete removes the profile")
    # A historical version can be changed too.
    expect_status(t.put(base, patient(id=rid, gender="male")), 200, "version 2")
    m = returned_meta(t.post(base + "/_history/1/$meta-add", params_meta(
        tag=[{"system": "http://t", "code": "old"}])), "$meta-add on version 1")
    expect_eq(m.get("versionId"), "1", "the version's own meta")
    v1 = t.get(base + "/_history/1").json
    expect("old" in [x["code"] for x in v1["meta"].get("tag", [])], "version 1 has the tag")
    expect("old" not in [x["code"] for x in t.read("Patient", rid).json["meta"].get("tag", [])],
           "the current version does not")


def test_concurrent_meta_add_loses_no_tag(t):
    rid, _ = t.create(patient())
    n = 16
    results = [None] * n
    gate = threading.Barrier(n)

    def worker(i):
        c = t.server.client()
        try:
            gate.wait(30)
            r = c.request("POST", "%s/Patient/%s/$meta-add" % (FHIR, rid),
                          params_meta(tag=[{"system": "http://t", "code": "c%02d" % i}]))
            results[i] = r.status
        finally:
            c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    expect(all(s in (200, 409) for s in results), "statuses: %s" % results)
    ok = {"c%02d" % i for i in range(n) if results[i] == 200}
    got = t.read("Patient", rid)
    expect_eq({x["code"] for x in got.json["meta"].get("tag", [])}, ok,
              "every tag added with 200 is there")
    expect_eq(got.header("ETag"), 'W/"1"', "concurrent $meta-add makes no version")


def test_meta_errors(t):
    rid, _ = t.create(patient())
    base = "%s/Patient/%s" % (FHIR, rid)
    expect_outcome(t.get("%s/Patient/%s/$meta" % (FHIR, uniq("nobody"))), 404,
                   what="$meta of an unknown id")
    expect_outcome(t.post(base + "/$meta-add", patient()), 400, what="$meta-add of a Patient")
    expect_outcome(t.post(base + "/$meta-add", {"resourceType": "Parameters"}), 400,
                   what="$meta-add without meta")
    expect_outcome(t.post(base + "/$meta-add", params_meta(tag=[{"system": 5}])), 400,
                   what="$meta-add with an invalid tag")
    expect_outcome(t.get(base + "/_history/9/$meta"), 404, what="$meta of a missing version")
    t.delete(base)
    expect_outcome(t.post(base + "/$meta-add", params_meta(tag=[{"code": "x"}])), 410,
                   what="$meta-add on a deleted resource")


# ---- Patient/$everything ----

def make_patient_record(t, tag):
    """A patient with two encounters, three observations, a condition and an organisation its
    encounters name; returns (patient id, {(type, id): mode})."""
    org, _ = t.create({"resourceType": "Organization", "name": "Clinic " + tag})
    pid, _ = t.create(patient(name=[{"family": tag}]))
    want = {("Patient", pid): "match", ("Organization", org): "include"}
    for i in range(2):
        eid, _ = t.create({"resourceType": "Encounter", "status": "finished",
                           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                     "code": "AMB"},
                           "subject": {"reference": "Patient/" + pid},
                           "serviceProvider": {"reference": "Organization/" + org}})
        want[("Encounter", eid)] = "match"
    for i in range(3):
        oid, _ = t.create({"resourceType": "Observation", "status": "final",
                           "code": {"text": "pulse %d" % i},
                           "subject": {"reference": "Patient/" + pid}})
        want[("Observation", oid)] = "match"
    cid, _ = t.create({"resourceType": "Condition", "subject": {"reference": "Patient/" + pid},
                       "code": {"text": "asthma"}})
    want[("Condition", cid)] = "match"
    return pid, want


def everything(t, pid, query="", count=None):
    """Every entry of $everything, following next links: [(type, id, mode)], pages."""
    q = [query] if query else []
    if count is not None:
        q.append("_count=%d" % count)
    url = "%s/Patient/%s/$everything%s" % (FHIR, pid, "?" + "&".join(q) if q else "")
    got, pages, total = [], 0, None
    while url:
        r = t.get(url)
        expect_status(r, 200, "$everything page")
        b = r.json
        expect_eq((b.get("resourceType"), b.get("type")), ("Bundle", "searchset"),
                  "$everything: a searchset Bundle")
        if pages == 0:
            total = b.get("total")
        for e in b.get("entry", []):
            res = e["resource"]
            expect(e.get("fullUrl", "").endswith("/%s/%s" % (res["resourceType"], res["id"])),
                   "fullUrl %r" % e.get("fullUrl"))
            got.append((res["resourceType"], res["id"], e.get("search", {}).get("mode")))
        url = next_link(b, t.server.base)
        pages += 1
        expect(pages < 1000, "$everything: more than 1000 pages")
    return got, pages, total


def test_everything_is_exactly_the_compartment(t):
    pid, want = make_patient_record(t, uniq("ev"))
    other, other_want = make_patient_record(t, uniq("other"))
    got, _, total = everything(t, pid)
    expect_eq(got[0][:2], ("Patient", pid), "$everything: the patient comes first")
    expect_eq(len(got), len(set(got)), "$everything: no duplicates")
    expect_eq({(ty, i): m for ty, i, m in got}, want,
              "$everything: the patient's compartment and the organisation it refers to")
    expect_eq(total, sum(1 for m in want.values() if m == "match"), "$everything: total")
    leaked = {k for k in other_want if k[0] != "Organization"} & {(ty, i) for ty, i, _ in got}
    expect(not leaked, "another patient's data must not appear: %s" % leaked)
    # Deleted resources leave the compartment.
    obs = [k for k in want if k[0] == "Observation"][0]
    expect_status(t.delete("%s/%s/%s" % (FHIR, obs[0], obs[1])), (200, 204), "delete one")
    got, _, _ = everything(t, pid)
    expect(obs not in {(ty, i) for ty, i, _ in got}, "a deleted resource is not returned")


def test_everything_type_since_and_paging(t):
    pid, want = make_patient_record(t, uniq("evp"))
    got, _, _ = everything(t, pid, "_type=Observation,Condition")
    expect_eq({(ty, i) for ty, i, _ in got},
              {k for k in want if k[0] in ("Observation", "Condition")},
              "_type=Observation,Condition")
    time.sleep(0.01)
    later, r = t.create({"resourceType": "Observation", "status": "final",
                         "code": {"text": "later"}, "subject": {"reference": "Patient/" + pid}})
    since = r.json["meta"]["lastUpdated"]
    got, _, _ = everything(t, pid, "_since=" + since.replace("+", "%2B"))
    expect_eq([(ty, i) for ty, i, _ in got], [("Observation", later)],
              "_since: only what changed since")
    want[("Observation", later)] = "match"
    full = {(ty, i) for ty, i, _ in everything(t, pid)[0]}
    for count in (1, 2, 3):
        got, pages, _ = everything(t, pid, count=count)
        keys = [(ty, i) for ty, i, _ in got]
        expect_eq(len(keys), len(set(keys)), "_count=%d: no duplicates across pages" % count)
        expect_eq(set(keys), full, "_count=%d: the pages together hold everything" % count)
        expect(pages >= len(full) // count, "_count=%d: %d pages for %d" % (count, pages,
                                                                            len(full)))
    # A resource added between two pages is neither repeated nor does it shift the pages.
    r = t.get("%s/Patient/%s/$everything?_count=2" % (FHIR, pid))
    seen = [(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json["entry"]]
    nxt = next_link(r.json, t.server.base)
    t.create({"resourceType": "Observation", "status": "final", "code": {"text": "between"},
              "subject": {"reference": "Patient/" + pid}})
    while nxt:
        r = t.get(nxt)
        expect_status(r, 200, "next page")
        seen += [(e["resource"]["resourceType"], e["resource"]["id"]) for e in r.json["entry"]]
        nxt = next_link(r.json, t.server.base)
    expect_eq(len(seen), len(set(seen)), "paging while a resource is added: no duplicates")
    expect(full <= set(seen), "paging while a resource is added: nothing skipped")


def test_everything_errors(t):
    pid, _ = t.create(patient())
    expect_outcome(t.get("%s/Patient/%s/$everything" % (FHIR, uniq("nobody"))), 404,
                   what="$everything of an unknown patient")
    for q, what in (("_type=Nonsense", "unknown _type"), ("_count=many", "bad _count"),
                    ("_since=yesterday", "bad _since"), ("start=2020", "unsupported start"),
                    ("_cursor=nonsense", "bad _cursor")):
        expect_outcome(t.get("%s/Patient/%s/$everything?%s" % (FHIR, pid, q)), 400, what=what)
    t.delete("%s/Patient/%s" % (FHIR, pid))
    expect_outcome(t.get("%s/Patient/%s/$everything" % (FHIR, pid)), 410,
                   what="$everything of a deleted patient")


# ---- Synthea ----

def test_synthea_transaction_and_everything(t):
    if not os.path.isdir(SYNTHEA):
        raise Skip("%s does not exist" % SYNTHEA)
    files = sorted((os.path.getsize(os.path.join(SYNTHEA, f)), f) for f in os.listdir(SYNTHEA)
                   if f.endswith(".json"))
    if not files:
        raise Skip("no Synthea bundle in %s" % SYNTHEA)
    with open(os.path.join(SYNTHEA, files[0][1]), "rb") as f:
        raw = f.read()
    sent = json.loads(raw)
    r = t.request("POST", FHIR, raw, {"Content-Type": "application/fhir+json",
                                      "Prefer": "return=minimal"})
    expect_status(r, 200, "Synthea transaction %s" % files[0][1])
    out = r.json["entry"]
    expect_eq(len(out), len(sent["entry"]), "one response entry per entry")
    expect(all(e["response"]["status"].startswith("201") for e in out),
           "every Synthea entry is created: %s" % sorted({e["response"]["status"] for e in out}))
    created = set()
    for e in out:
        parts = e["fullUrl"].rsplit("/", 2)
        created.add((parts[1], parts[2]))
    pid = [i for ty, i in created if ty == "Patient"]
    expect_eq(len(pid), 1, "one Patient in the bundle")
    got, _, _ = everything(t, pid[0], count=200)
    keys = {(ty, i) for ty, i, _ in got}
    expect_eq(len(got), len(keys), "$everything of the Synthea patient: no duplicates")
    missing = created - keys
    expect(not missing, "$everything misses %d of the bundle's resources, e.g. %s" % (
        len(missing), sorted(missing)[:5]))
    # No reference still points at a urn:uuid.
    for ty, i in sorted(created)[:50]:
        body = t.read(ty, i).body
        expect(b'"urn:uuid:' not in body, "%s/%s still has a urn:uuid: reference" % (ty, i))


# ---- the CapabilityStatement ----

def test_capability_statement_lists_bundles_patch_and_operations(t):
    r = t.get(FHIR + "/metadata")
    expect_status(r, 200, "metadata")
    rest = r.json["rest"][0]
    system = {i["code"] for i in rest.get("interaction", [])}
    expect({"transaction", "batch", "history-system"} <= system,
           "system interactions: %s" % sorted(system))
    ops = {o["name"]: o.get("definition") for o in rest.get("operation", [])}
    for name in ("validate", "meta", "meta-add", "meta-delete"):
        expect(name in ops and ops[name].startswith("http://hl7.org/fhir/OperationDefinition/"),
               "operation %s is listed with its definition: %s" % (name, ops))
    pat = [x for x in rest["resource"] if x["type"] == "Patient"][0]
    expect("patch" in {i["code"] for i in pat["interaction"]}, "Patient lists patch")
    expect("everything" in {o["name"] for o in pat.get("operation", [])},
           "Patient lists $everything")
