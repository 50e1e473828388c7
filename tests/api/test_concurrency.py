"""test_concurrency.py - many clients at once: concurrent creates all succeed and are all
readable (SQLite group commit), and racing updates with the same If-Match have exactly one
winner."""
import threading

from run import FHIR, expect, expect_eq, expect_status, patient, uniq

N_WRITERS, N_CREATES = 16, 30
N_RACERS, N_ROUNDS = 8, 5


def in_threads(n, fn):
    """Runs fn(i) in n threads released together; returns their results (an exception
    counts as the result)."""
    gate = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            gate.wait(30)
            results[i] = fn(i)
        except Exception as e:  # reported by the caller, with the thread's index
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    return results


def test_concurrent_creates_all_succeed_and_are_readable(t):
    system = "urn:jk:conc:" + uniq()

    def writer(i):
        c = t.server.client()
        out = []
        try:
            for k in range(N_CREATES):
                value = "%02d-%02d" % (i, k)
                r = c.request("POST", FHIR + "/Patient", patient(
                    identifier=[{"system": system, "value": value}]))
                out.append((value, r.status, r.json.get("id") if r.status == 201 else
                            r.snippet()))
        finally:
            c.close()
        return out

    results = in_threads(N_WRITERS, writer)
    created = {}
    for i, res in enumerate(results):
        expect(not isinstance(res, Exception), "writer %d failed: %r" % (i, res))
        for value, status, rid in res:
            expect_eq(status, 201, "concurrent create %s (%s)" % (value, rid))
            created[value] = rid
    ids = list(created.values())
    expect_eq(len(created), N_WRITERS * N_CREATES, "creates")
    expect_eq(len(set(ids)), len(ids), "distinct ids")

    def reader(i):
        c = t.server.client()
        bad = []
        try:
            for value, rid in list(created.items())[i::4]:
                r = c.request("GET", "%s/Patient/%s" % (FHIR, rid))
                if r.status != 200 or r.json["identifier"][0]["value"] != value:
                    bad.append("%s: %d %s" % (rid, r.status, r.snippet(100)))
        finally:
            c.close()
        return bad

    for i, bad in enumerate(in_threads(4, reader)):
        expect(not isinstance(bad, Exception), "reader %d failed: %r" % (i, bad))
        expect(not bad, "%d acknowledged creates are not readable as sent, e.g. %s" % (
            len(bad), bad[:3]))


def test_racing_updates_with_the_same_if_match_have_one_winner(t):
    rid, _ = t.create(patient(gender="unknown"))
    for version in range(1, N_ROUNDS + 1):
        def racer(i):
            r = t.request("PUT", "%s/Patient/%s" % (FHIR, rid), patient(
                id=rid, gender=("male", "female", "other")[i % 3],
                name=[{"text": "racer %d round %d" % (i, version)}]),
                {"If-Match": 'W/"%d"' % version})
            return r.status, r.snippet(150)

        results = in_threads(N_RACERS, racer)
        for i, res in enumerate(results):
            expect(not isinstance(res, Exception), "racer %d failed: %r" % (i, res))
        statuses = sorted(s for s, _ in results)
        winners = [i for i, (s, _) in enumerate(results) if s == 200]
        expect_eq(len(winners), 1, "round %d: winners with 200 (statuses %s)" % (
            version, statuses))
        losers = [(s, b) for s, b in results if s != 200]
        expect(all(s in (409, 412) for s, _ in losers),
               "round %d: the losers must get 412 or 409, got %s" % (version, losers))
        r = t.read("Patient", rid)
        expect_eq(r.header("ETag"), 'W/"%d"' % (version + 1), "round %d: version after" % version)
        expect_eq(r.json["name"][0]["text"], "racer %d round %d" % (winners[0], version),
                  "round %d: the stored content is the winner's" % version)
    expect_eq(len(t.history("%s/Patient/%s/_history" % (FHIR, rid))), N_ROUNDS + 1,
              "versions after the races")
