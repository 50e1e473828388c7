"""test_import.py - `jiankang import`: transaction Bundles and NDJSON files land in the database
with their references resolved; a bad file is reported with file and entry and does not stop
the good ones; importing the same files twice adds nothing; the progress display on a
terminal; and, when ../shared/data/synthea-r4 exists, every Synthea bundle imports and
Patient/$everything returns every resource of each patient.

Each test imports into a fresh database of the run's backend (the `import` command runs as its
own process, like an operator would run it) and then checks the result through a server
started on that database. The test data is generated here, so the module runs anywhere."""
import json
import os
import pty
import re
import select
import subprocess
import uuid

from run import (FHIR, ROOT, SANITIZER_MARKS, Skip, expect, expect_eq, expect_status, next_link,
                 short)

SYNTHEA = os.path.join(os.path.dirname(ROOT), "shared", "data", "synthea-r4")
IMPORT_TIMEOUT_S = 900
SHARED_TYPES = ("Organization", "Practitioner")  # Synthea puts these in every bundle


# ---- helpers ----

def env():
    e = dict(os.environ)
    e.update({"JIANKANG_ACCESS_LOG": "off",
              "ASAN_OPTIONS": e.get("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
              "UBSAN_OPTIONS": e.get("UBSAN_OPTIONS", "print_stacktrace=1")})
    return e


def check_sanitizer(text, what):
    for mark in SANITIZER_MARKS:
        expect(mark not in text, "%s: a sanitizer report on standard error:\n%s" % (
            what, text[text.find(mark) - 200:][:3000]))


def run_import(t, db_url, *paths, args=()):
    """Runs `jiankang import` (standard error not a terminal); returns (exit, stdout, stderr)."""
    cmd = [t.binary, "import", "--db", db_url] + list(args) + list(paths)
    r = subprocess.run(cmd, capture_output=True, timeout=IMPORT_TIMEOUT_S, env=env(), cwd=ROOT,
                       stdin=subprocess.DEVNULL)
    out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
    check_sanitizer(err, "import")
    return r.returncode, out, err


def summary_counts(out):
    """(written, unchanged, refused) from the summary on standard output."""
    m = re.search(r"resources:\s+([\d,]+) written, ([\d,]+) unchanged, ([\d,]+) refused", out)
    expect(m, "import: no resource summary on standard output: %r" % short(out, 500))
    return tuple(int(g.replace(",", "")) for g in m.groups())


def workdir(t, name):
    d = os.path.join(t.workdir, "import-%s-%s" % (name, uuid.uuid4().hex[:8]))
    os.makedirs(d)
    return d


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)
    return path


def write_ndjson(path, resources, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for r in resources:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        for line in extra_lines:
            f.write(line + "\n")
    return path


def read(srv, rtype, rid, status=200):
    r = srv.get("%s/%s/%s" % (FHIR, rtype, rid))
    expect_status(r, status, "read %s/%s" % (rtype, rid))
    return r.json if status == 200 else None


def all_versions(srv):
    """(type, id, version) of every version in the server's history."""
    url, seen = FHIR + "/_history?_count=1000", []
    while url:
        r = srv.get(url)
        expect_status(r, 200, "system history")
        for e in r.json.get("entry", []):
            res = e.get("resource")
            if res:
                seen.append((res["resourceType"], res["id"], res["meta"]["versionId"]))
            else:  # a deletion: Type/id/_history/N in the request url or fullUrl
                seen.append(tuple(e.get("request", {}).get("url", "?").split("/")[:2]) + ("?",))
        url = next_link(r.json, srv.base)
    return seen


def synthea_like_bundle(n_obs=3):
    """A transaction Bundle written the way Synthea writes them: every entry a POST with a
    urn:uuid fullUrl and a resource whose id is that uuid, references by urn:uuid; plus an
    Organization without id but with an identifier, and one with neither."""
    pid, eid = str(uuid.uuid4()), str(uuid.uuid4())
    org_ident = "org-" + uuid.uuid4().hex[:12]
    org_urn = "urn:uuid:" + str(uuid.uuid4())
    entries = [
        {"fullUrl": org_urn,
         "resource": {"resourceType": "Organization", "name": "Clinic",
                      "identifier": [{"system": "urn:jk:test:org", "value": org_ident}]},
         "request": {"method": "POST", "url": "Organization"}},
        {"fullUrl": "urn:uuid:" + pid,
         "resource": {"resourceType": "Patient", "id": pid, "gender": "female",
                      "birthDate": "1980-02-03", "name": [{"family": "Li", "given": ["Na"]}],
                      "managingOrganization": {"reference": org_urn}},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:" + eid,
         "resource": {"resourceType": "Encounter", "id": eid, "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "AMB"},
                      "subject": {"reference": "urn:uuid:" + pid}},
         "request": {"method": "POST", "url": "Encounter"}},
    ]
    obs_ids = []
    for i in range(n_obs):
        oid = str(uuid.uuid4())
        obs_ids.append(oid)
        entries.append({
            "fullUrl": "urn:uuid:" + oid,
            "resource": {"resourceType": "Observation", "id": oid, "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                         "subject": {"reference": "urn:uuid:" + pid},
                         "encounter": {"reference": "urn:uuid:" + eid},
                         "valueQuantity": {"value": 60 + i, "unit": "/min",
                                           "system": "http://unitsofmeasure.org",
                                           "code": "/min"}},
            "request": {"method": "POST", "url": "Observation"}})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return bundle, {"patient": pid, "encounter": eid, "observations": obs_ids,
                    "org_identifier": org_ident}


def practitioners(n):
    return [{"resourceType": "Practitioner", "id": "pr-" + uuid.uuid4().hex[:16],
             "name": [{"family": "Zhang", "given": ["Wei%d" % i]}],
             "identifier": [{"system": "urn:jk:test:npi", "value": uuid.uuid4().hex}]}
            for i in range(n)]


# ---- tests ----

def test_transaction_bundle_and_ndjson_import_with_references_resolved(t):
    d = workdir(t, "basic")
    bundle, ids = synthea_like_bundle()
    write_json(os.path.join(d, "patient.json"), bundle)
    prs = practitioners(5)
    write_ndjson(os.path.join(d, "practitioners.ndjson"), prs)
    db = t.fresh_db_url("import-basic")
    rc, out, err = run_import(t, db, d)
    expect_eq(rc, 0, "import exit status (stderr: %s)" % short(err, 2000))
    written, unchanged, refused = summary_counts(out)
    expect_eq((written, unchanged, refused), (len(bundle["entry"]) + len(prs), 0, 0),
              "import summary (written, unchanged, refused)")
    expect("patient.json" in err and "practitioners.ndjson" in err,
           "import: without a terminal, one line per file on stderr: %r" % short(err, 1000))
    srv = t.start_server("import-basic", db)
    try:
        pat = read(srv, "Patient", ids["patient"])
        expect_eq(pat["name"], [{"family": "Li", "given": ["Na"]}], "imported Patient.name")
        org_ref = pat.get("managingOrganization", {}).get("reference", "")
        expect(re.match(r"^Organization/[A-Za-z0-9\-.]{1,64}$", org_ref),
               "Patient.managingOrganization must point at the created Organization, got %r"
               % org_ref)
        org = read(srv, *org_ref.split("/"))
        expect_eq(org["identifier"][0]["value"], ids["org_identifier"], "Organization identifier")
        enc = read(srv, "Encounter", ids["encounter"])
        expect_eq(enc["subject"]["reference"], "Patient/" + ids["patient"],
                  "Encounter.subject (a urn:uuid reference in the file)")
        for oid in ids["observations"]:
            obs = read(srv, "Observation", oid)
            expect_eq(obs["subject"]["reference"], "Patient/" + ids["patient"],
                      "Observation.subject")
            expect_eq(obs["encounter"]["reference"], "Encounter/" + ids["encounter"],
                      "Observation.encounter")
            expect_eq(obs["meta"]["versionId"], "1", "Observation version after one import")
        for p in prs:
            got = read(srv, "Practitioner", p["id"])
            expect_eq(got["name"], p["name"], "imported Practitioner.name")
    finally:
        srv.stop()


def test_importing_twice_leaves_the_resource_count_unchanged(t):
    d = workdir(t, "twice")
    bundle, ids = synthea_like_bundle(n_obs=20)
    write_json(os.path.join(d, "bundle.json"), bundle)
    write_ndjson(os.path.join(d, "prs.ndjson"), practitioners(30))
    write_json(os.path.join(d, "collection.json"), {
        "resourceType": "Bundle", "type": "collection",
        "entry": [{"resource": p} for p in practitioners(4)]})
    write_json(os.path.join(d, "single.json"), {
        "resourceType": "Organization", "name": "Single",
        "identifier": [{"system": "urn:jk:test:org", "value": uuid.uuid4().hex}]})
    db = t.fresh_db_url("import-twice")
    rc, out, err = run_import(t, db, d)
    expect_eq(rc, 0, "first import exit status (stderr: %s)" % short(err, 2000))
    first = summary_counts(out)
    expect_eq(first[0], len(bundle["entry"]) + 30 + 4 + 1, "resources written by the first import")
    srv = t.start_server("import-twice", db)
    try:
        before = sorted(all_versions(srv))
        # Again, with the server running on the same database, and with one job.
        rc, out, err = run_import(t, db, d, args=("--jobs", "1"))
        expect_eq(rc, 0, "second import exit status (stderr: %s)" % short(err, 2000))
        expect_eq(summary_counts(out), (0, first[0], 0),
                  "second import: (written, unchanged, refused)")
        after = sorted(all_versions(srv))
        expect_eq(len({v[:2] for v in after}), len({v[:2] for v in before}),
                  "number of resources after importing the same files again")
        expect_eq(after, before, "versions after importing unchanged files again")
        # A changed resource in a file is written as a new version of the same resource.
        bundle["entry"][1]["resource"]["gender"] = "male"
        write_json(os.path.join(d, "bundle.json"), bundle)
        rc, out, err = run_import(t, db, os.path.join(d, "bundle.json"))
        expect_eq(rc, 0, "third import exit status (stderr: %s)" % short(err, 2000))
        expect_eq(summary_counts(out)[:2], (1, len(bundle["entry"]) - 1),
                  "third import: one changed Patient written, the rest unchanged")
        pat = read(srv, "Patient", ids["patient"])
        expect_eq((pat["gender"], pat["meta"]["versionId"]), ("male", "2"),
                  "the changed Patient is version 2")
        expect_eq(len({v[:2] for v in all_versions(srv)}), len({v[:2] for v in before}),
                  "number of resources after importing a changed file")
    finally:
        srv.stop()


def test_a_bad_file_is_reported_with_file_and_entry_and_the_others_import(t):
    d = workdir(t, "bad")
    good, good_ids = synthea_like_bundle()
    write_json(os.path.join(d, "a_good.json"), good)
    prs = practitioners(3)
    write_ndjson(os.path.join(d, "b_good.ndjson"), prs)
    with open(os.path.join(d, "c_malformed.json"), "w") as f:
        f.write('{"resourceType": "Bundle", "type": "transaction", "entry": [')
    bad, bad_ids = synthea_like_bundle()
    bad["entry"][3]["resource"]["status"] = "not-a-status"  # the first Observation
    write_json(os.path.join(d, "d_bad_entry.json"), bad)
    ndjson_ok = practitioners(2)
    write_ndjson(os.path.join(d, "e_bad_line.ndjson"), ndjson_ok[:1],
                 ['{"resourceType": "Practitioner", "id": "x", "gender": "neither"}',
                  json.dumps(ndjson_ok[1])])
    os.makedirs(os.path.join(d, "sub"))
    sub_prs = practitioners(1)
    write_ndjson(os.path.join(d, "sub", "more.ndjson"), sub_prs)
    with open(os.path.join(d, "notes.txt"), "w") as f:  # neither .json nor .ndjson: ignored
        f.write("not FHIR\n")
    db = t.fresh_db_url("import-bad")
    rc, out, err = run_import(t, db, d)
    expect(rc != 0, "import with bad files must exit non-zero, got 0; stderr: %s" % err)
    lines = err.splitlines()

    def line_for(name):
        found = [l for l in lines if name in l and "ok," not in l and "FAILED," not in l]
        expect(found, "no problem reported for %s; stderr:\n%s" % (name, err))
        return found[0]

    expect(re.search(r"c_malformed\.json: .*JSON", line_for("c_malformed.json")),
           "malformed JSON report: %r" % line_for("c_malformed.json"))
    obs_id = bad["entry"][3]["resource"]["id"]
    expect("d_bad_entry.json: entry 3 (Observation/%s): " % obs_id in line_for("d_bad_entry.json"),
           "bad entry report must read 'FILE: entry 3 (Observation/%s): message', got %r"
           % (obs_id, line_for("d_bad_entry.json")))
    expect("e_bad_line.ndjson: line 2 (Practitioner/x): " in line_for("e_bad_line.ndjson"),
           "bad NDJSON line report: %r" % line_for("e_bad_line.ndjson"))
    expect("notes.txt" not in err, "notes.txt is not a .json or .ndjson file: %r" % err)
    srv = t.start_server("import-bad", db)
    try:
        read(srv, "Patient", good_ids["patient"])
        for oid in good_ids["observations"]:
            read(srv, "Observation", oid)
        for p in prs + ndjson_ok + sub_prs:
            read(srv, "Practitioner", p["id"])
        # A transaction is all or nothing: nothing of the bad bundle is there.
        read(srv, "Patient", bad_ids["patient"], status=404)
        read(srv, "Observation", bad_ids["observations"][1], status=404)
        read(srv, "Practitioner", "x", status=404)
    finally:
        srv.stop()


def test_shared_bundles_load_first_for_conditional_references(t):
    """Synthea's newer layout: hospitalInformation*.json and practitionerInformation*.json
    create Organizations and Practitioners with If-None-Exist, and the patient bundles refer to
    them by condition (Organization?identifier=...). The patient bundle is the bigger one, so
    without the rule it would be started first."""
    d = workdir(t, "shared")
    org_value, pr_value = uuid.uuid4().hex, uuid.uuid4().hex
    org_sys, npi = "https://github.com/synthetichealth/synthea", "http://hl7.org/fhir/sid/us-npi"
    write_json(os.path.join(d, "hospitalInformation1700000000.json"), {
        "resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
            "resource": {"resourceType": "Organization", "id": str(uuid.uuid4()),
                         "name": "General Hospital",
                         "identifier": [{"system": org_sys, "value": org_value}]},
            "request": {"method": "POST", "url": "Organization",
                        "ifNoneExist": "identifier=%s|%s" % (org_sys, org_value)}}]})
    write_json(os.path.join(d, "practitionerInformation1700000000.json"), {
        "resourceType": "Bundle", "type": "transaction", "entry": [{
            "fullUrl": "urn:uuid:" + str(uuid.uuid4()),
            "resource": {"resourceType": "Practitioner", "id": str(uuid.uuid4()),
                         "identifier": [{"system": npi, "value": pr_value}]},
            "request": {"method": "POST", "url": "Practitioner",
                        "ifNoneExist": "identifier=%s|%s" % (npi, pr_value)}}]})
    bundle, ids = synthea_like_bundle(n_obs=40)
    enc = bundle["entry"][2]["resource"]
    enc["serviceProvider"] = {"reference": "Organization?identifier=%s|%s" % (org_sys, org_value)}
    enc["participant"] = [{"individual": {
        "reference": "Practitioner?identifier=%s|%s" % (npi, pr_value)}}]
    write_json(os.path.join(d, "Aaron_Patient.json"), bundle)
    db = t.fresh_db_url("import-shared")
    for attempt in ("first", "second"):
        rc, out, err = run_import(t, db, d, args=("--jobs", "4"))
        expect_eq(rc, 0, "%s import exit status (stderr: %s)" % (attempt, short(err, 2000)))
    expect_eq(summary_counts(out)[:2], (0, len(bundle["entry"]) + 2),
              "second import: (written, unchanged)")
    srv = t.start_server("import-shared", db)
    try:
        got = read(srv, "Encounter", ids["encounter"])
        org_ref = got.get("serviceProvider", {}).get("reference", "")
        expect(org_ref.startswith("Organization/"), "serviceProvider resolved, got %r" % org_ref)
        expect_eq(read(srv, *org_ref.split("/"))["identifier"][0]["value"], org_value,
                  "the Organization serviceProvider points at")
        pr_ref = got["participant"][0]["individual"]["reference"]
        expect(pr_ref.startswith("Practitioner/"), "participant resolved, got %r" % pr_ref)
        r = srv.get(FHIR + "/Organization?identifier=%s%%7C%s" % (org_sys, org_value))
        expect_status(r, 200, "search the Organization by identifier")
        expect_eq(r.json.get("total", len(r.json.get("entry", []))), 1,
                  "Organizations with the identifier after two imports")
    finally:
        srv.stop()


def test_usage_errors(t):
    r = subprocess.run([t.binary, "import", "--db", t.fresh_db_url("import-usage")],
                       capture_output=True, timeout=60, env=env(), cwd=ROOT)
    expect_eq(r.returncode, 2, "import without PATH: exit status")
    expect(b"PATH" in r.stderr, "import without PATH: usage on stderr: %r" % r.stderr[:300])
    r = subprocess.run([t.binary, "import", "--jobs", "zero", "x"], capture_output=True,
                       timeout=60, env=env(), cwd=ROOT)
    expect_eq(r.returncode, 2, "import --jobs zero: exit status")
    d = workdir(t, "missing")
    rc, out, err = run_import(t, t.fresh_db_url("import-missing"), os.path.join(d, "nope.json"))
    expect_eq(rc, 1, "import of a missing file: exit status")
    expect("nope.json" in err, "import of a missing file names it: %r" % err)


def test_progress_bar_on_a_terminal(t):
    """On a terminal: one line redrawn in place with files, resources, rate and time left,
    then the summary."""
    d = workdir(t, "tty")
    for i in range(3):
        write_ndjson(os.path.join(d, "p%d.ndjson" % i), practitioners(50))
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([t.binary, "import", "--db", t.fresh_db_url("import-tty"), d],
                                stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=env(),
                                cwd=ROOT)
        os.close(slave)
        slave = None
        chunks = []
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                proc.kill()
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # the other side closed
                break
            if not data:
                break
            chunks.append(data)
        rc = proc.wait(60)
    finally:
        os.close(master)
        if slave is not None:
            os.close(slave)
    text = b"".join(chunks).decode("utf-8", "replace")
    check_sanitizer(text, "import on a terminal")
    expect_eq(rc, 0, "import on a terminal: exit status (output %r)" % short(text, 1000))
    expect("\r" in text and "\x1b[K" in text, "the progress line is redrawn in place: %r"
           % short(text, 500))
    bar = [s for s in re.split(r"[\r\n]", text) if "files" in s and "/s" in s]
    expect(bar, "no progress line: %r" % short(text, 500))
    expect(re.search(r"3/3 files\s+150 resources\s+[\d,]+/s\s+\d+:\d\d, [\d:-]+ left", text),
           "the last progress line shows 3/3 files, 150 resources, a rate and the time: %r"
           % bar[-1])
    expect("p0.ndjson: ok" not in text, "on a terminal, no per-file lines: %r" % short(text, 500))
    expect(re.search(r"resources:\s+150 written", text), "summary after the bar: %r"
           % short(text, 500))


def test_synthea_bundles_import_and_everything_returns_each_patients_resources(t):
    if not os.path.isdir(SYNTHEA):
        raise Skip("%s does not exist" % SYNTHEA)
    files = sorted(f for f in os.listdir(SYNTHEA) if f.endswith(".json"))
    expect(files, "no .json files in %s" % SYNTHEA)
    patients = {}  # patient id -> set of (type, id) of its bundle, shared types left out
    owner = {}     # (type, id) -> patient id
    n_entries = 0
    for f in files:
        with open(os.path.join(SYNTHEA, f), encoding="utf-8") as fh:
            b = json.load(fh)
        res = [e["resource"] for e in b.get("entry", [])]
        n_entries += len(res)
        pid = next(r["id"] for r in res if r["resourceType"] == "Patient")
        mine = {(r["resourceType"], r["id"]) for r in res if r["resourceType"] not in SHARED_TYPES}
        patients[pid] = mine
        for k in mine:
            owner[k] = pid
    db = t.fresh_db_url("import-synthea")
    rc, out, err = run_import(t, db, SYNTHEA)
    expect_eq(rc, 0, "Synthea import exit status (stderr: %s)" % short(err, 3000))
    written, unchanged, refused = summary_counts(out)
    expect_eq(refused, 0, "Synthea resources refused")
    # Organizations and Practitioners shared by several bundles are written once.
    expect_eq(written + unchanged, n_entries, "Synthea resources written or unchanged")
    srv = t.start_server("import-synthea", db)
    try:
        first = next(iter(patients))
        r = srv.get("%s/Patient/%s/$everything" % (FHIR, first))
        if r.status == 404:
            # Without $everything, at least every resource of one bundle must read back.
            for rtype, rid in sorted(patients[first]):
                read(srv, rtype, rid)
            raise Skip("Synthea imported (%d resources), but GET Patient/{id}/$everything "
                       "answers 404 (not implemented yet): the per-patient check was skipped"
                       % n_entries)
        for pid, mine in patients.items():
            url, got, pages = "%s/Patient/%s/$everything" % (FHIR, pid), set(), 0
            while url:
                r = srv.get(url)
                expect_status(r, 200, "$everything of Patient/%s" % pid)
                for e in r.json.get("entry", []):
                    res = e.get("resource", {})
                    got.add((res.get("resourceType"), res.get("id")))
                url = next_link(r.json, srv.base)
                pages += 1
                expect(pages < 1000, "$everything of Patient/%s: more than 1000 pages" % pid)
            missing = mine - got
            expect(not missing, "$everything of Patient/%s lacks %d of its %d resources, e.g. %s"
                   % (pid, len(missing), len(mine), sorted(missing)[:5]))
            foreign = sorted(k for k in got if owner.get(k, pid) != pid)
            expect(not foreign, "$everything of Patient/%s returns resources of other patients, "
                   "e.g. %s" % (pid, foreign[:5]))
    finally:
        srv.stop()
