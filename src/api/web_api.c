/* web_api.c - the web pages: static files of the web directory, served without a token. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api_int.h"
#include "core/arena.h"

#define WEB_MAX_FILE_BYTES (4L << 20) /* the pages are small; a larger file is a mistake */
#define WEB_MAX_DEPTH      8          /* directories below the web directory */

/* Only these kinds of file are served; anything else is not found. */
static const struct web_type {
    const char *ext;
    const char *type;
} web_types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".ico", "image/x-icon"},
    {".txt", "text/plain; charset=utf-8"},
    {".woff2", "font/woff2"},
};

/* Scripts, styles and images only from the server itself; no inline script or style, no
 * plug-ins, no framing; the pages talk only to this server. blob: and data: images are the QR
 * codes the pages draw. */
static const char web_csp[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'";

static const char *web_type_of(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot) return NULL;
    for (size_t i = 0; i < sizeof web_types / sizeof web_types[0]; i++)
        if (!strcmp(dot, web_types[i].ext)) return web_types[i].type;
    return NULL;
}

/* A path below the web directory is segments of [A-Za-z0-9_.-], none empty and none starting
 * with a dot: no "..", no hidden files, no backslashes, no encoded anything. */
static int web_path_ok(const char *rel)
{
    size_t seg_len = 0;
    int depth = 0;
    for (const char *p = rel;; p++) {
        if (*p == '/' || !*p) {
            if (!seg_len || ++depth > WEB_MAX_DEPTH) return 0;
            if (!*p) return 1;
            seg_len = 0;
            continue;
        }
        if (*p == '.' && !seg_len) return 0;
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-' || *p == '.'))
            return 0;
        seg_len++;
    }
}

/* Opens rel below the directory root, one segment at a time, following no symbolic link
 * (so nothing outside root can be reached through one). Returns the descriptor of a regular
 * file, or -1. */
static int web_open(const char *root, const char *rel, struct stat *st)
{
    int dir = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    char seg[256];
    const char *p = rel;
    while (dir >= 0) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n >= sizeof seg) break;
        memcpy(seg, p, n);
        seg[n] = '\0';
        int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (slash ? O_DIRECTORY : O_NONBLOCK);
        int fd = openat(dir, seg, flags);
        close(dir);
        if (fd < 0) return -1;
        if (slash) {
            dir = fd;
            p = slash + 1;
            continue;
        }
        if (fstat(fd, st) || !S_ISREG(st->st_mode) || st->st_size > WEB_MAX_FILE_BYTES) {
            close(fd);
            return -1;
        }
        return fd;
    }
    if (dir >= 0) close(dir);
    return -1;
}

static jk_rc web_not_found(struct jk_http_req *rq)
{
    return jk_diag_add(&rq->diag, JK_ENOTFOUND, NULL, NULL, "there is no page %s", rq->path);
}

/* Reads the whole of fd into the arena; *len its size. NULL on a read error. */
static char *web_read(struct jk_http_req *rq, int fd, size_t size, size_t *len)
{
    char *body = jk_arena_alloc(rq->arena, size + 1);
    size_t got = 0;
    while (body && got < size) {
        ssize_t n = read(fd, body + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return NULL;
        got += (size_t)n;
    }
    *len = got;
    return body;
}

static jk_rc web_send(struct jk_http_req *rq, const char *rel)
{
    const char *type = web_type_of(rel);
    const char *root = jk_api_app(rq)->web_dir;
    if (!root || !*root || !type || !web_path_ok(rel)) return web_not_found(rq);
    struct stat st;
    int fd = web_open(root, rel, &st);
    if (fd < 0) return web_not_found(rq);
    /* No build step gives the files versioned names, so the browser asks again every time and
     * gets 304 while the file is unchanged. */
    char etag[80];
    snprintf(etag, sizeof etag, "\"%llx-%llx-%lx\"", (unsigned long long)st.st_size,
             (unsigned long long)st.st_mtim.tv_sec, (unsigned long)st.st_mtim.tv_nsec);
    jk_rc rc = JK_OK;
    static const char *const hdr[][2] = {
        {"Content-Security-Policy", web_csp}, {"X-Content-Type-Options", "nosniff"},
        {"Referrer-Policy", "no-referrer"},   {"X-Frame-Options", "DENY"},
        {"Cache-Control", "no-cache"},
    };
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0] && !rc; i++)
        rc = jk_http_add_header(rq, hdr[i][0], hdr[i][1]);
    if (!rc) rc = jk_http_add_header(rq, "ETag", etag);
    const char *inm = jk_http_header(rq, "If-None-Match");
    if (!rc && inm && strstr(inm, etag)) {
        close(fd);
        return jk_http_respond(rq, 304, NULL, "", 0);
    }
    size_t len = 0;
    char *body = rc ? NULL : web_read(rq, fd, (size_t)st.st_size, &len);
    close(fd);
    if (rc) return rc;
    if (!body) return JK_EINTERNAL;
    return jk_http_respond(rq, 200, type, body, len);
}

jk_rc jk_api_web_index(struct jk_http_req *rq)
{
    return web_send(rq, "index.html");
}

jk_rc jk_api_web_file(struct jk_http_req *rq)
{
    const char *rel = jk_http_param(rq, "rest");
    return rel ? web_send(rq, rel) : web_not_found(rq);
}
