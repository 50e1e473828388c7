"""test_hostile.py - bad and hostile input. Each case of cases/hostile.json must get a 4xx with
an OperationOutcome (MHD's own page only where the case allows it), leave the server up and
store nothing. Text outside the BMP and combining sequences must come back byte for byte.

A case: {"name", "method" (POST), "path" or "path_gen" (/fhir/R4/Patient), one of "body"
(text), "body_bytes" (each character is one byte, for invalid UTF-8 and NUL) or "body_gen",
"headers" (a value may be a gen), "n_headers" (that many extra headers), "chunked", "raw" (the
whole request as text, sent on a socket), "absent" (a path that must not be readable
afterwards), "expect": {"status" (int or list), "code", "expression", "mhd_page_ok"}}.
A gen is {"head", "repeat", "times", "tail"}: head + repeat * times + tail."""
import http.client
import json
import re
import socket

from run import (FHIR, FHIR_JSON, Response, expect, expect_eq, expect_outcome, expect_status,
                 load_cases, patient, short)


def gen(spec):
    if isinstance(spec, str):
        return spec
    return spec.get("head", "") + spec["repeat"] * spec["times"] + spec.get("tail", "")


def raw_request(t, text):
    sock = socket.create_connection(("127.0.0.1", t.server.port), timeout=60)
    try:
        sock.sendall(text.encode("latin-1"))
        resp = http.client.HTTPResponse(sock, method=text.split(" ", 1)[0])
        resp.begin()
        return Response(text.split(" ", 1)[0], text.split(" ")[1], resp.status, resp.reason,
                        resp.getheaders(), resp.read())
    finally:
        sock.close()


def is_outcome(r):
    try:
        return json.loads(r.body).get("resourceType") == "OperationOutcome"
    except (ValueError, AttributeError):
        return False


def run_case(t, case):
    name = case["name"]
    method = case.get("method", "POST")
    path = gen(case["path_gen"]) if "path_gen" in case else case.get("path", FHIR + "/Patient")
    body = None
    if "body" in case:
        body = case["body"].encode("utf-8")
    elif "body_bytes" in case:
        body = case["body_bytes"].encode("latin-1")
    elif "body_gen" in case:
        body = gen(case["body_gen"]).encode("utf-8")
    headers = {k: gen(v) for k, v in case.get("headers", {}).items()}
    if body is not None:
        headers.setdefault("Content-Type", FHIR_JSON)
    for i in range(case.get("n_headers", 0)):
        headers["X-Junk-%05d" % i] = "v"
    before = t.newest()
    if "raw" in case:
        r = raw_request(t, case["raw"])
    else:
        r = t.request(method, path, body, headers, chunked=case.get("chunked", False))
    exp = case["expect"]
    if exp.get("mhd_page_ok") and not is_outcome(r):
        expect_status(r, exp["status"], name + " (MHD's own answer)")
    else:
        expect_outcome(r, exp["status"], exp.get("code"), exp.get("expression"), name)
        expect(r.header("X-Request-Id"), "%s: the response has no X-Request-Id" % name)
    t.healthy(name)
    expect_eq(t.newest(), before, "%s: the refused request must store nothing" % name)
    if "absent" in case:
        a = t.get(case["absent"])
        expect(a.status in (404, 410), "%s: %s must not exist afterwards, got %d: %s" % (
            name, case["absent"], a.status, a.snippet()))


def generate_tests():
    for case in load_cases("hostile.json"):
        slug = re.sub(r"[^a-z0-9]+", "_", case["name"].lower()).strip("_")
        yield slug, (lambda c: lambda t: run_case(t, c))(case)


# Text a Chinese regional platform meets: CJK Extension B (outside the BMP), decomposed Latin,
# Tibetan stacks, Thai and Devanagari combining marks, Hangul jamo, Arabic harakat, emoji
# sequences and an ideographic variation selector.
TEXTS = [
    "\U00020000",
    "\U00020000\U00020001\U0002A6A5 \u738b",
    "e\u0301",
    "Zoe\u0308 Mu\u0308ller",
    "a\u0300\u0301\u0302\u0303\u0304",
    "\u0f56\u0f7c\u0f51\u0f0b\u0f66\u0f90\u0f51\u0f0b \u0f56\u0f66\u0f9f\u0f53\u0f0b\u0f60\u0f5b\u0f72\u0f53",
    "\u0e19\u0e49\u0e33 \u0e01\u0e33 \u0e2a\u0e38\u0e02\u0e2a\u0e31\u0e19\u0e15\u0e4c",
    "\u0915\u094d\u0937\u0924\u094d\u0930\u093f\u092f",
    "\u1100\u1161\u11a8",
    "\u0645\u064f\u062d\u064e\u0645\u0651\u064e\u062f",
    "\U0001F469\u200d\u2695\ufe0f \U0001F1E8\U0001F1F3 \U0001F44D\U0001F3FD",
    "\u845b\U000E0100",
    "\u00e9 \u1e9b\u0323 \ufb01",
]


def test_unicode_text_round_trips_byte_for_byte(t):
    for text in TEXTS:
        want = text.encode("utf-8")
        for escaped in (False, True):
            body = json.dumps(patient(name=[{"text": text, "given": [text]}]),
                              ensure_ascii=escaped).encode("utf-8")
            r = t.post(FHIR + "/Patient", body, {"Content-Type": FHIR_JSON})
            what = "name.text %s (%s)" % (ascii(text), "\\u escapes" if escaped else "raw UTF-8")
            expect_status(r, 201, what)
            for step, resp in (("create", r), ("read", t.read("Patient", r.json["id"]))):
                got = resp.json["name"][0]
                expect_eq(got["text"].encode("utf-8"), want, "%s: %s: name.text bytes" % (
                    what, step))
                expect_eq(got["given"][0].encode("utf-8"), want, "%s: %s: given bytes" % (
                    what, step))
                expect(want in resp.body, "%s: %s: the raw body lacks the UTF-8 bytes %r: %s" % (
                    what, step, want, short(resp.body.decode("utf-8", "replace"))))


def test_lone_surrogate_escape_is_refused(t):
    before = t.newest()
    for s in ("\\ud800", "\\udc00x", "a\\ud83d"):
        body = ('{"resourceType":"Patient","name":[{"text":"%s"}]}' % s).encode()
        r = t.post(FHIR + "/Patient", body, {"Content-Type": FHIR_JSON})
        expect_outcome(r, 400, what="a lone surrogate escape %s" % s)
    t.healthy()
    expect_eq(t.newest(), before, "lone surrogates: nothing stored")


def test_many_hostile_requests_on_one_connection(t):
    """A keep-alive client that sends refused requests one after another keeps getting answers
    on the same connection, and a good request after them works."""
    c = t.server.client()
    try:
        for body in (b"{", b"[]", b"", b'{"resourceType":"Patient","gender":"x","gender":"y"}'):
            r = c.request("POST", FHIR + "/Patient", body, {"Content-Type": FHIR_JSON})
            expect_outcome(r, 400, what="refused request on a kept-alive connection")
        r = c.request("POST", FHIR + "/Patient", patient(gender="male"))
        expect_status(r, 201, "a good request after refused ones on the same connection")
    finally:
        c.close()
