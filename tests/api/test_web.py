"""test_web.py - the web pages as a browser fetches them: GET / and GET /web/<path> serve the
files of the web directory with their content type, a strict Content-Security-Policy and a
validator (ETag, 304), need no token even with security on, and refuse everything that is not
a plain file below the web directory: "..", encoded "..", hidden files, directories, symbolic
links (to a file outside or to a directory), unknown kinds of file, NUL bytes.

A server of this module's own serves a temporary web directory (JIANKANG_WEB_DIR) next to a
secret file, with security on; the shared server serves the checkout's web/."""
import os
import socket

from run import ROOT, expect, expect_eq, expect_status

SECRET = "secret-outside-the-web-directory"


class Site:
    def __init__(self, t):
        base = os.path.join(t.workdir, "site")
        self.web = os.path.join(base, "web")
        os.makedirs(os.path.join(self.web, "js"), exist_ok=True)
        os.makedirs(os.path.join(self.web, "sub.dir"), exist_ok=True)
        os.makedirs(os.path.join(base, "outside"), exist_ok=True)
        files = {
            "index.html": "<!doctype html><title>home</title>",
            "js/app.js": "export const x = 1;\n",
            "style.css": "body { margin: 0 }\n",
            "sub.dir/page.html": "<!doctype html><title>sub</title>",
            ".hidden.html": SECRET,
            "notes.md": SECRET,
            "Makefile": SECRET,
        }
        for name, text in files.items():
            with open(os.path.join(self.web, name), "w", encoding="utf-8") as f:
                f.write(text)
        for name in ("secret.html", "secret.txt"):
            with open(os.path.join(base, "outside", name), "w", encoding="utf-8") as f:
                f.write(SECRET)
        with open(os.path.join(base, "secret.html"), "w", encoding="utf-8") as f:
            f.write(SECRET)
        links = {
            "escape.html": os.path.join(base, "outside", "secret.html"),
            "outside": os.path.join(base, "outside"),
            "passwd.txt": "/etc/passwd",
            "inside.html": os.path.join(self.web, "index.html"),
        }
        for name, target in links.items():
            os.symlink(target, os.path.join(self.web, name))
        self.srv = t.start_server("web", env={"JIANKANG_SECURITY": "on",
                                              "JIANKANG_WEB_DIR": self.web})


SITE = None


def site(t):
    global SITE
    if SITE is None:
        SITE = Site(t)
    return SITE


def raw_get(port, path):
    """GET path exactly as given (no client-side normalisation); returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
                  .encode("latin-1"))
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def test_web_index_and_files_are_served_without_a_token(t):
    s = site(t).srv
    for path, ctype, text in [
            ("/", "text/html; charset=utf-8", "<title>home</title>"),
            ("/web/index.html", "text/html; charset=utf-8", "<title>home</title>"),
            ("/web/js/app.js", "text/javascript; charset=utf-8", "export const x"),
            ("/web/style.css", "text/css; charset=utf-8", "margin"),
            ("/web/sub.dir/page.html", "text/html; charset=utf-8", "<title>sub</title>"),
            ("/web/js/app.js?v=2", "text/javascript; charset=utf-8", "export const x")]:
        r = s.get(path)
        expect_status(r, 200, path)
        expect_eq(r.header("Content-Type"), ctype, path + " content type")
        expect(text in r.body.decode("utf-8"), "%s: body %r" % (path, r.body[:80]))
        expect_eq(r.header("X-Content-Type-Options"), "nosniff", path)
        expect_eq(r.header("Cache-Control"), "no-cache", path)


def test_web_pages_have_a_strict_content_security_policy(t):
    r = site(t).srv.get("/")
    expect_status(r, 200)
    csp = r.header("Content-Security-Policy") or ""
    rules = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    expect_eq(rules.get("default-src"), ["'none'"], "default-src")
    expect_eq(rules.get("script-src"), ["'self'"], "script-src: no inline script, no eval")
    expect_eq(rules.get("frame-ancestors"), ["'none'"], "frame-ancestors")
    expect("'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp, "CSP: %s" % csp)
    expect_eq(r.header("X-Frame-Options"), "DENY", "X-Frame-Options")


def test_web_unchanged_file_is_not_sent_again(t):
    s = site(t).srv
    r = s.get("/web/js/app.js")
    etag = r.header("ETag")
    expect(etag, "an ETag")
    r2 = s.get("/web/js/app.js", headers={"If-None-Match": etag})
    expect_status(r2, 304, "If-None-Match with the current ETag")
    expect_eq(r2.body, b"", "304 body")
    r3 = s.get("/web/js/app.js", headers={"If-None-Match": '"other"'})
    expect_status(r3, 200, "If-None-Match with another ETag")


def test_web_refuses_paths_outside_or_odd(t):
    st = site(t)
    port = st.srv.port
    for path in ["/web/../secret.html", "/web/..%2fsecret.html", "/web/%2e%2e/secret.html",
                 "/web/%2E%2E/%2E%2E/secret.html", "/web/js/../../secret.html",
                 "/web/./index.html", "/web/js/./app.js", "/web//index.html",
                 "/web/..\\secret.html", "/web/%5c..%5csecret.html",
                 "/web/.hidden.html", "/web/notes.md", "/web/Makefile",
                 "/web/index.html%00.css", "/web/index.html%00", "/web/escape.html",
                 "/web/outside/secret.html", "/web/outside/secret.txt", "/web/passwd.txt",
                 "/web/inside.html", "/web/js", "/web/js/", "/web/", "/web", "/web/sub.dir",
                 "/web/missing.html", "/web/js/missing.js", "/index.html", "/secret.html",
                 "/web/" + "a/" * 20 + "x.html", "/web/%ff.html", "/web/%e4%b8%ad.html"]:
        status, body = raw_get(port, path)
        expect(status in (400, 404), "%s: expected 404 (or 400), got %d" % (path, status))
        expect(SECRET.encode() not in body and b"root:" not in body,
               "%s: the body leaks a file: %r" % (path, body[:200]))
    for method in ("POST", "PUT", "DELETE"):
        r = st.srv.request(method, "/web/index.html", b"x")
        expect_status(r, (404, 405), method + " /web/index.html")


def test_web_checkout_pages_are_served(t):
    """The shared server runs from the checkout, so the default web directory is its web/."""
    r = t.get("/")
    expect_status(r, 200, "GET / on the checkout")
    expect("text/html" in (r.header("Content-Type") or ""), "GET /: a page")
    web = os.path.join(ROOT, "web")
    n = 0
    for top, dirs, files in os.walk(web):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in sorted(f for f in files if not f.startswith(".")):
            rel = os.path.relpath(os.path.join(top, name), web).replace(os.sep, "/")
            r = t.get("/web/" + rel)
            expect_status(r, 200, "/web/" + rel)
            with open(os.path.join(top, name), "rb") as f:
                expect_eq(r.body, f.read(), "/web/%s body" % rel)
            if name.endswith(".js"):
                expect_eq(r.header("Content-Type"), "text/javascript; charset=utf-8", rel)
            n += 1
    expect(n >= 5, "the pages, their modules and style sheet: %d files" % n)
