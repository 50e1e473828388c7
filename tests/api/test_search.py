"""test_search.py - FHIR search as a client uses it: every parameter type, modifier and
prefix, chains, _has, _include/_revinclude, _sort, _summary/_elements, _total, strict and
lenient handling, paging through more than 1,000 matches while resources are added, POST
_search, conditional operations through search, and the CapabilityStatement.

The cases are data: cases/search_data.json holds the resources (created once per database,
with ids and a tag of their own so that other tests' data never shows up) and
cases/search_cases.json the searches and what they must find. Every case runs as GET and as
POST _search, and both must give the same result."""
import json
import re
import threading
from urllib.parse import quote

from run import (FHIR, expect, expect_eq, expect_outcome, expect_status, load_cases, next_link,
                 uniq)

TAG_SYSTEM = "urn:jiankang:test:search"
FORM = "application/x-www-form-urlencoded"
SUBSETTED = "SUBSETTED"
_datasets = {}  # database URL -> Dataset
_lock = threading.Lock()


def encode(query):
    """'Patient?family=王&x=a|b' -> ('Patient', 'family=%E7%8E%8B&x=a%7Cb')."""
    rtype, _, qs = query.partition("?")
    parts = []
    for kv in qs.split("&") if qs else []:
        k, _, v = kv.partition("=")
        parts.append(quote(k, safe=":._-") + "=" + quote(v, safe=":/,._-"))
    return rtype, "&".join(parts)


class Dataset:
    """The resources of search_data.json, created with ids {run}-{label}."""

    def __init__(self, t):
        self.run = "s" + uniq("")[1:9]
        self.base = t.server.base
        self.ids = {}
        data = json.dumps(load_cases("search_data.json")["resources"], ensure_ascii=False)
        data = data.replace("{RUN}", self.run).replace("{BASE}", self.base)
        for item in json.loads(data):
            res = item["resource"]
            rid = "%s-%s" % (self.run, item["label"])
            res["id"] = rid
            res.setdefault("meta", {}).setdefault("tag", []).append(
                {"system": TAG_SYSTEM, "code": self.run})
            r = t.put("%s/%s/%s" % (FHIR, res["resourceType"], rid), res)
            expect_status(r, 201, "create %s" % item["label"])
            self.ids[rid] = item["label"]

    def sub(self, text):
        return text.replace("{RUN}", self.run).replace("{BASE}", self.base)

    def tag(self):
        return "_tag=%s" % quote("%s|%s" % (TAG_SYSTEM, self.run), safe=":/")

    def label(self, rid):
        return self.ids.get(rid, "?" + rid)


def dataset(t):
    with _lock:
        key = t.server.db_url
        if key not in _datasets:
            _datasets[key] = Dataset(t)
        return _datasets[key]


def entries(bundle, mode):
    return [e for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == mode]


def search(t, query, headers=None, post=False, scoped=True):
    """Runs query ('Patient?family=x') as GET or POST _search; returns the response."""
    ds = dataset(t)
    rtype, qs = encode(ds.sub(query))
    if scoped:
        qs = "&".join(p for p in (qs, ds.tag()) if p)
    if "_count=" not in qs:
        qs += "&_count=100"
    if post:
        h = dict(headers or {})
        h["Content-Type"] = FORM
        return t.post("%s/%s/_search" % (FHIR, rtype), qs, h)
    return t.get("%s/%s?%s" % (FHIR, rtype, qs), headers)


def expect_searchset(r, what):
    expect_status(r, 200, what)
    b = r.json
    expect(b.get("resourceType") == "Bundle" and b.get("type") == "searchset",
           "%s: not a searchset Bundle: %s" % (what, r.snippet()))
    return b


def run_case(t, case):
    ds = dataset(t)
    what = "%s (%s)" % (case["name"], case["query"])
    results = []
    for post in (False, True):
        r = search(t, case["query"], case.get("headers"), post)
        w = what + (" by POST _search" if post else "")
        if case.get("status", 200) != 200:
            expect_outcome(r, case["status"], case.get("code"), case.get("expression"), w)
            continue
        b = expect_searchset(r, w)
        matches = [ds.label(e["resource"]["id"]) for e in entries(b, "match")]
        includes = sorted(ds.label(e["resource"]["id"]) for e in entries(b, "include"))
        if case.get("ordered"):
            expect_eq(matches, case["expect"], w + ": matches in order")
        else:
            expect_eq(sorted(matches), sorted(case["expect"]), w + ": matches")
        if "include" in case:
            expect_eq(includes, sorted(case["include"]), w + ": included")
        else:
            expect_eq(includes, [], w + ": nothing included")
        outcomes = entries(b, "outcome")
        if "outcome" in case:
            text = json.dumps(outcomes, ensure_ascii=False)
            expect(outcomes and case["outcome"] in text,
                   "%s: expected an OperationOutcome entry naming %r, got %s" % (
                       w, case["outcome"], text[:300]))
        else:
            expect_eq(outcomes, [], w + ": no OperationOutcome entry")
        for e in entries(b, "match") + entries(b, "include"):
            res = e["resource"]
            expect_eq(e.get("fullUrl"), "%s%s/%s/%s" % (t.server.base, FHIR, res["resourceType"],
                                                        res["id"]), w + ": fullUrl")
        results.append((matches, includes))
    if len(results) == 2:
        expect_eq(results[1], results[0], what + ": POST _search gives what GET gives")


def generate_tests():
    tests = []
    for case in load_cases("search_cases.json"):
        slug = re.sub(r"[^a-z0-9]+", "_", case["name"].lower()).strip("_")
        tests.append(("case_" + slug, lambda t, c=case: run_case(t, c)))
    return tests


# ---- paging ----

def create_many(t, n, tag, threads=8):
    """Creates n Basic resources tagged tag, concurrently; returns their ids."""
    ids, errors = [], []
    lock = threading.Lock()

    def worker(count):
        c = t.server.client()
        try:
            for _ in range(count):
                r = c.request("POST", FHIR + "/Basic", {
                    "resourceType": "Basic", "code": {"text": "paging"},
                    "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag}]}},
                    {"Content-Type": "application/fhir+json"})
                with lock:
                    if r.status == 201:
                        ids.append(r.json["id"])
                    else:
                        errors.append(r.status)
        finally:
            c.close()

    per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(k,)) for k in per if k]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    expect(not errors, "creating %d resources: statuses %s" % (n, sorted(set(errors))))
    return ids


def page_through(t, url, add=None, max_pages=100):
    """Follows next links from url; calls add() after the third page. Returns (pages, last
    Bundle)."""
    pages, b = [], None
    while url:
        r = t.get(url)
        b = expect_searchset(r, "page %d" % (len(pages) + 1))
        pages.append([e["resource"]["id"] for e in entries(b, "match")])
        if len(pages) == 3 and add:
            add()
        url = next_link(b, t.server.base)
        expect(len(pages) <= max_pages, "more than %d pages" % max_pages)
    return pages, b


def prev_link(bundle, base):
    for link in bundle.get("link", []):
        if link.get("relation") == "previous":
            expect(link["url"].startswith(base), "previous link is not under %s" % base)
            return link["url"][len(base):]
    return None


def check_paging(t, sort):
    tag = uniq("page")
    first = set(create_many(t, 1050, tag))
    added = []
    q = "%s/Basic?_tag=%s&_count=100&_total=accurate%s" % (
        FHIR, quote("%s|%s" % (TAG_SYSTEM, tag), safe=":/"), "&_sort=" + sort if sort else "")
    r = t.get(q)
    b = expect_searchset(r, "first page")
    expect_eq(b.get("total"), 1050, "total of the first page")
    pages, last = page_through(t, q, add=lambda: added.extend(create_many(t, 30, tag, 4)))
    seen = [i for p in pages for i in p]
    dups = sorted({i for i in seen if seen.count(i) > 1})
    expect(not dups, "paging (%s) repeated %d resources, e.g. %s" % (sort or "default", len(dups),
                                                                     dups[:3]))
    missing = first - set(seen)
    expect(not missing, "paging (%s) skipped %d of the resources that existed before it "
           "started, e.g. %s" % (sort or "default", len(missing), sorted(missing)[:3]))
    expect(set(seen) <= first | set(added), "paging returned resources it should not")
    expect(all(len(p) == 100 for p in pages[:-1]), "every page but the last is full: %s" % [
        len(p) for p in pages])
    # Backwards from the last page: the same pages, in reverse.
    back, url = [], prev_link(last, t.server.base)
    while url:
        r = t.get(url)
        bb = expect_searchset(r, "previous page")
        back.append([e["resource"]["id"] for e in entries(bb, "match")])
        url = prev_link(bb, t.server.base)
        expect(len(back) <= len(pages), "more previous pages than pages")
    expect_eq(list(reversed(back)), pages[:-1], "previous links give the pages again")
    return added


def test_paging_over_1000_matches_neither_skips_nor_repeats(t):
    added = check_paging(t, None)
    # In the default order (of last change) what was added during paging comes at the end.
    expect(added, "test setup: resources were added while paging")


def test_paging_sorted_by_id_neither_skips_nor_repeats(t):
    check_paging(t, "_id")


def test_paging_with_a_multi_key_sort(t):
    """Five patients in pages of two, by gender then birthdate descending: the pages joined
    are the whole order; the previous link of the last page is the second page."""
    whole = search(t, "Patient?_sort=gender,-birthdate")
    order = [e["resource"]["id"] for e in entries(expect_searchset(whole, "whole"), "match")]
    ds = dataset(t)
    rtype, qs = encode("Patient?_sort=gender,-birthdate&_count=2")
    pages, last = page_through(t, "%s/%s?%s&%s" % (FHIR, rtype, qs, ds.tag()))
    expect_eq([i for p in pages for i in p], order, "pages of two joined")
    expect_eq([len(p) for p in pages], [2, 2, 1], "page sizes")
    r = t.get(prev_link(last, t.server.base))
    expect_eq([e["resource"]["id"] for e in entries(expect_searchset(r, "previous"), "match")],
              pages[1], "previous page")


# ---- result parameters ----

def test_summary_and_elements(t):
    ds = dataset(t)

    def one(query):
        b = expect_searchset(search(t, query), query)
        m = entries(b, "match")
        expect_eq(len(m), 1, query + ": one match")
        return m[0]["resource"]

    def subsetted(res, what):
        tags = res.get("meta", {}).get("tag", [])
        expect(any(x.get("code") == SUBSETTED for x in tags), "%s: no SUBSETTED tag" % what)
        expect(any(x.get("code") == ds.run for x in tags), "%s: the resource's own tag is lost"
               % what)

    full = one("Patient?_id={RUN}-pat-wang")
    expect("text" in full and "maritalStatus" in full and "contact" in full, "test data")
    expect(not any(x.get("code") == SUBSETTED for x in full["meta"].get("tag", [])),
           "a full resource is not SUBSETTED")
    s = one("Patient?_id={RUN}-pat-wang&_summary=true")
    for k in ("name", "gender", "birthDate", "identifier", "id", "meta"):
        expect(k in s, "_summary=true keeps %s" % k)
    for k in ("text", "maritalStatus", "contact"):
        expect(k not in s, "_summary=true drops %s" % k)
    subsetted(s, "_summary=true")
    s = one("Patient?_id={RUN}-pat-wang&_summary=text")
    expect("text" in s and "name" not in s and "gender" not in s, "_summary=text: %s" % list(s))
    subsetted(s, "_summary=text")
    s = one("Patient?_id={RUN}-pat-wang&_summary=data")
    expect("text" not in s and "contact" in s and "name" in s, "_summary=data: %s" % list(s))
    subsetted(s, "_summary=data")
    s = one("Patient?_id={RUN}-pat-wang&_summary=false")
    expect_eq(s, full, "_summary=false is the whole resource")
    s = one("Patient?_id={RUN}-pat-wang&_elements=gender,birthDate")
    expect_eq(sorted(s), ["birthDate", "gender", "id", "meta", "resourceType"], "_elements")
    subsetted(s, "_elements")
    s = one("Observation?_id={RUN}-obs-bp1&_elements=value,status")
    expect("valueQuantity" in s and "status" in s and "code" not in s,
           "_elements=value keeps valueQuantity: %s" % list(s))
    b = expect_searchset(search(t, "Patient?_summary=count"), "_summary=count")
    expect_eq(b.get("total"), 5, "_summary=count: total")
    expect_eq(b.get("entry", []), [], "_summary=count: no entries")


def test_total(t):
    b = expect_searchset(search(t, "Patient?_total=accurate&_count=2"), "_total=accurate")
    expect_eq(b.get("total"), 5, "_total=accurate")
    expect_eq(len(entries(b, "match")), 2, "_count=2")
    expect(next_link(b, t.server.base), "a next link when more remain")
    b = expect_searchset(search(t, "Patient?_total=none"), "_total=none")
    expect("total" not in b, "_total=none: no total")
    b = expect_searchset(search(t, "Patient?_count=0"), "_count=0")
    expect_eq(b.get("total"), 5, "_count=0: total")
    expect_eq(b.get("entry", []), [], "_count=0: no entries")
    b = expect_searchset(search(t, "Patient?_total=estimate&family=王"), "_total=estimate")
    expect_eq(b.get("total"), 1, "_total=estimate")
    b = expect_searchset(search(t, "Patient"), "one page")
    expect_eq(b.get("total"), 5, "a single page tells its total")
    b = expect_searchset(search(t, "Patient?_count=100000"), "_count over the maximum")
    self_url = [x["url"] for x in b["link"] if x["relation"] == "self"][0]
    expect("_count=1000" in self_url, "_count is lowered to 1000: %s" % self_url)


def test_links_reproduce_the_search(t):
    ds = dataset(t)
    r = search(t, "Patient?family=王,汪&_sort=-birthdate&_count=1")
    b = expect_searchset(r, "search")
    links = {x["relation"]: x["url"] for x in b["link"]}
    expect("self" in links and "next" in links and "previous" not in links, "links: %s" % links)
    again = t.get(links["self"][len(t.server.base):])
    expect_eq([e["resource"]["id"] for e in entries(expect_searchset(again, "self"), "match")],
              [ds.run + "-pat-wang"], "the self link gives the same page")
    nxt = expect_searchset(t.get(next_link(b, t.server.base)), "next")
    expect_eq([e["resource"]["id"] for e in entries(nxt, "match")], [ds.run + "-pat-wang2"],
              "next page")
    expect(prev_link(nxt, t.server.base), "the second page has a previous link")
    expect(not next_link(nxt, t.server.base), "the last page has no next link")


def test_post_search_takes_url_and_body_parameters(t):
    ds = dataset(t)
    r = t.post("%s/Patient/_search?family=%s" % (FHIR, quote("王")), "gender=male&" + ds.tag(),
               {"Content-Type": FORM})
    b = expect_searchset(r, "POST _search")
    expect_eq([e["resource"]["id"] for e in entries(b, "match")], [ds.run + "-pat-wang"],
              "URL and body parameters together")
    r = t.post("%s/Patient/_search" % FHIR, "name=%E7%8E%8B+%E5%B0%8F&" + ds.tag(),
               {"Content-Type": FORM})
    expect_eq(entries(expect_searchset(r, "a + in a form"), "match"), [],
              "+ is a space in a form body ('王 小' is not a prefix of 王小明)")
    expect_outcome(t.post("%s/Patient/_search" % FHIR, '{"family":"x"}',
                          {"Content-Type": "application/json"}), 415,
                   what="POST _search with a JSON body")
    expect_outcome(t.post("%s/Unicorn/_search" % FHIR, "", {"Content-Type": FORM}), 404,
                   what="POST _search of an unknown type")


def test_limits_are_400(t):
    values = ",".join("v%d" % i for i in range(33))
    expect_outcome(search(t, "Patient?family=" + values), 400, "too-costly", "family",
                   what="33 values of one parameter")
    many = "&".join("family=x%d" % i for i in range(65))
    expect_outcome(search(t, "Patient?" + many), 400, what="65 parameters")
    expect_outcome(search(t, "Patient?_sort=family,given,birthdate,gender,name"), 400,
                   what="5 sort keys")
    r = t.get("%s/Patient?family=%s" % (FHIR, "%FF%FE"))
    expect_outcome(r, 400, what="a value that is not UTF-8")
    t.healthy("after the limits")


# ---- conditional operations search with every parameter ----

def test_conditional_operations_use_search(t):
    family = uniq("cond")
    pat = {"resourceType": "Patient", "name": [{"family": family}], "birthDate": "1970-01-02"}
    rid, _ = t.create(pat)
    ine = "family=%s&birthdate=1970-01-02" % family
    r = t.post(FHIR + "/Patient", pat, {"If-None-Exist": ine})
    expect_status(r, 200, "If-None-Exist with family and birthdate")
    expect_eq(r.json.get("id"), rid, "If-None-Exist finds the existing patient")
    r = t.post(FHIR + "/Patient", dict(pat, birthDate="1970-01-03"),
               {"If-None-Exist": "family=%s&birthdate=1970-01-03" % family})
    expect_status(r, 201, "If-None-Exist that matches nothing creates")
    rid2 = r.json["id"]
    r = t.put("%s/Patient?family=%s&birthdate=le1970-01-02" % (FHIR, family),
              dict(pat, gender="female"))
    expect_status(r, 200, "conditional update by name and a date prefix")
    expect_eq(r.json.get("id"), rid, "conditional update updates the matched patient")
    expect_outcome(t.put("%s/Patient?family=%s" % (FHIR, family), dict(pat, gender="male")), 412,
                   what="conditional update matching two")
    expect_outcome(t.put("%s/Patient?nosuch=%s" % (FHIR, family), pat), 400, "not-supported",
                   what="conditional update with an unknown parameter")
    expect_outcome(t.put("%s/Patient?family=%s&_count=1" % (FHIR, family), pat), 400,
                   what="conditional update with a result parameter")
    expect_outcome(t.put("%s/Patient?birthdate=notadate" % FHIR, pat), 400, "invalid",
                   "birthdate", what="conditional update with a bad date")
    expect_status(t.delete("%s/Patient?family=%s&birthdate=1970-01-03" % (FHIR, family)),
                  (200, 204), "conditional delete by name and date")
    t.read("Patient", rid2, 410)
    t.read("Patient", rid, 200)


# ---- the CapabilityStatement ----

def test_capability_statement_lists_search_parameters(t):
    r = t.get(FHIR + "/metadata")
    expect_status(r, 200, "metadata")
    res = {x["type"]: x for x in r.json["rest"][0]["resource"]}
    pat = res.get("Patient")
    expect(pat, "Patient in the CapabilityStatement")
    params = {p["name"]: p["type"] for p in pat.get("searchParam", [])}
    for name, typ in (("family", "string"), ("birthdate", "date"), ("identifier", "token"),
                      ("general-practitioner", "reference"), ("_id", "token"),
                      ("_lastUpdated", "date"), ("_tag", "token")):
        expect_eq(params.get(name), typ, "Patient searchParam %s" % name)
    expect(any(i["code"] == "search-type" for i in pat["interaction"]),
           "Patient supports search-type")
    obs = {p["name"]: p["type"] for p in res["Observation"].get("searchParam", [])}
    expect_eq(obs.get("code-value-quantity"), "composite", "Observation code-value-quantity")
    expect_eq(obs.get("value-quantity"), "quantity", "Observation value-quantity")


def test_include_fan_out_is_bounded(t):
    """A patient with 1,005 observations: _revinclude brings 1,000 of them and says, in an
    OperationOutcome entry, that the rest were left out."""
    rid, _ = t.create({"resourceType": "Patient", "name": [{"family": uniq("fan")}]})
    ids, errors = [], []
    lock = threading.Lock()

    def worker(count):
        c = t.server.client()
        try:
            for _ in range(count):
                r = c.request("POST", FHIR + "/Observation", {
                    "resourceType": "Observation", "status": "final", "code": {"text": "fan"},
                    "subject": {"reference": "Patient/" + rid}},
                    {"Content-Type": "application/fhir+json"})
                with lock:
                    (ids if r.status == 201 else errors).append(r.status)
        finally:
            c.close()

    ts = [threading.Thread(target=worker, args=(k,)) for k in (126,) * 7 + (123,)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    expect(not errors and len(ids) == 1005, "creating observations: %s" % sorted(set(errors)))
    r = t.get("%s/Patient?_id=%s&_revinclude=Observation:subject" % (FHIR, rid))
    b = expect_searchset(r, "_revinclude of 1,005")
    expect_eq(len(entries(b, "match")), 1, "the patient")
    expect_eq(len(entries(b, "include")), 1000, "included, at most 1000")
    out = entries(b, "outcome")
    expect(out and "left out" in json.dumps(out), "an outcome entry says some were left out")
