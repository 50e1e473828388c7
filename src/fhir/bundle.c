/* bundle.c - transaction and batch Bundles (R4 http.html#trules): entries checked and
 * rendered before the transaction, searches and writes inside it, the response after the
 * commit; and the searchset Bundle of Patient/$everything. */
#include "fhir/bundle.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/rc.h"
#include "core/time.h"
#include "fhir/patch.h"
#include "fhir/rest.h"
#include "fhir/search.h"
#include "fhir/searchparam.h"
#include "fhir/validate.h"
#include "store/resource.h"

#define SEARCH_DEFAULT_COUNT 50   /* resources a GET search entry returns without _count */
#define SEARCH_MAX_COUNT     1000 /* and at most */
#define WALK_PATH_MAX        512  /* FHIRPath of a reference, for messages */

static const struct jk_json_limits default_limits = {64, 50000};

enum method { M_GET, M_HEAD, M_POST, M_PUT, M_PATCH, M_DELETE, N_METHODS };
static const char *const method_names[N_METHODS] = {"GET", "HEAD",  "POST",
                                                    "PUT", "PATCH", "DELETE"};

/* Decoded query arguments. */
struct qs {
    const char **keys, **values;
    size_t n;
};

struct entry {
    size_t index; /* in Bundle.entry */
    enum method method;
    const char *full_url;        /* NULL when none */
    struct json_object *res;     /* entry.resource; not owned */
    const char *url;             /* request.url as sent */
    const char *type, *id;       /* from the url; id NULL for a type-level url */
    int64_t vid;                 /* GET Type/id/_history/vid */
    int has_query;               /* the url has a search part */
    struct qs query;             /* its arguments */
    int has_ine;                 /* request.ifNoneExist */
    struct qs ine;               /* its arguments */
    int64_t if_match;            /* request.ifMatch, 0 for none */
    struct jk_diag diag;         /* this entry's problems */
    int is_failed;               /* (batch) answered with its outcome */
    jk_rc rc;                    /* why it failed */
    int is_late;                 /* references can only be resolved in the transaction */
    int is_resolved;             /* target_id is final */
    const char *target_id;       /* the id this entry writes (its fullUrl resolves to type/this) */
    const char *new_id;          /* an id for a create, assigned before the transaction */
    int is_existing;             /* a conditional create matched target_id: nothing written */
    struct jk_fhir_write w;      /* POST, PUT, DELETE */
    struct jk_fhir_patch *patch; /* PATCH */
    struct json_object *patch_ops; /* owned */
    /* result */
    int status;
    int has_out;
    struct jk_res out; /* the version written or read */
    const char *search_text;
    size_t search_len;
};

/* fullUrl -> entry, sorted by url. */
struct url_map {
    const char *url;
    struct entry *e;
};

/* A conditional reference already resolved in this transaction. */
struct cref {
    const char *ref, *target;
    struct cref *next;
};

struct jk_bundle_job {
    struct jk_bundle_ctx *bx;
    int is_batch;
    struct entry *e;
    size_t n;
    struct url_map *map;
    size_t n_map;
    struct cref *crefs;
};

/* ---- small helpers ---- */

static const char *status_text(int status)
{
    static const struct {
        int status;
        const char *text;
    } t[] = {{200, "200 OK"},
             {201, "201 Created"},
             {204, "204 No Content"},
             {400, "400 Bad Request"},
             {401, "401 Unauthorized"},
             {403, "403 Forbidden"},
             {404, "404 Not Found"},
             {405, "405 Method Not Allowed"},
             {409, "409 Conflict"},
             {410, "410 Gone"},
             {412, "412 Precondition Failed"},
             {413, "413 Payload Too Large"},
             {415, "415 Unsupported Media Type"},
             {422, "422 Unprocessable Entity"}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (t[i].status == status) return t[i].text;
    return "500 Internal Server Error";
}

static const char *entry_expr(struct jk_bundle_job *job, const struct entry *e, const char *sub)
{
    return jk_arena_printf(job->bx->arena, "Bundle.entry[%zu]%s", e->index, sub ? sub : "");
}

static jk_rc entry_fail(struct jk_bundle_job *job, struct entry *e, jk_rc rc, const char *code,
                        const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Marks e failed with one issue at Bundle.entry[i]<sub>. Returns rc. */
static jk_rc entry_fail(struct jk_bundle_job *job, struct entry *e, jk_rc rc, const char *code,
                        const char *sub, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = jk_arena_vprintf(job->bx->arena, fmt, ap);
    va_end(ap);
    e->is_failed = 1;
    e->rc = rc;
    return jk_diag_add(&e->diag, rc, code, entry_expr(job, e, sub), "%s", msg ? msg : "");
}

/* The expression of an issue of e, placed under Bundle.entry[i]: the write and patch code
 * names elements from the resource type ("Patient.id") or not at all. */
static const char *issue_expr(struct jk_bundle_job *job, const struct entry *e, const char *expr)
{
    if (!expr) return entry_expr(job, e, NULL);
    if (strncmp(expr, "Bundle.entry[", 13) == 0) return expr;
    const char *dot = strchr(expr, '.');
    if (dot && jk_fhir_is_resource_type(expr, (size_t)(dot - expr)))
        return jk_arena_printf(job->bx->arena, "Bundle.entry[%zu].resource%s", e->index, dot);
    if (jk_fhir_is_resource_type(expr, strlen(expr))) return entry_expr(job, e, ".resource");
    return jk_arena_printf(job->bx->arena, "Bundle.entry[%zu].resource.%s", e->index, expr);
}

/* Copies e's issues into dst, each naming the entry. Returns the rc of the first. */
static jk_rc copy_issues(struct jk_bundle_job *job, struct entry *e, struct jk_diag *dst)
{
    jk_rc rc = e->rc ? e->rc : jk_diag_rc(&e->diag);
    /* "Bundle.entry[2] (POST Observation)", once request.url is known */
    const char *what = e->url ? jk_arena_printf(job->bx->arena, "Bundle.entry[%zu] (%s %s)",
                                                e->index, method_names[e->method], e->url)
                              : jk_arena_printf(job->bx->arena, "Bundle.entry[%zu]", e->index);
    if (!what) return JK_ENOMEM;
    if (!e->diag.head)
        return jk_diag_add(dst, rc, NULL, entry_expr(job, e, NULL), "%s failed (%s)", what,
                           jk_rc_name(rc));
    for (struct jk_issue *is = e->diag.head; is; is = is->next) {
        if (strncmp(is->msg, "Bundle.entry[", 13) == 0)
            jk_diag_add(dst, is->rc, is->code, issue_expr(job, e, is->expr), "%s", is->msg);
        else
            jk_diag_add(dst, is->rc, is->code, issue_expr(job, e, is->expr), "%s: %s", what,
                        is->msg);
    }
    return rc ? rc : JK_EINVAL;
}

/* The transaction fails because of e: its issues become the call's. */
static jk_rc tx_fail(struct jk_bundle_job *job, struct entry *e, jk_rc rc)
{
    if (!e->rc) e->rc = rc;
    e->is_failed = 1;
    jk_rc out = copy_issues(job, e, job->bx->diag);
    return rc ? rc : out;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* p[0..n) with %XX decoded (except %00, which would cut the text short). */
static char *pct_decode(struct jk_arena *a, const char *p, size_t n)
{
    char *out = jk_arena_alloc(a, n + 1);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hexval(p[i + 1])) >= 0 &&
            (lo = hexval(p[i + 2])) >= 0 && (hi | lo)) {
            out[k++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[k++] = p[i];
        }
    }
    out[k] = '\0';
    return out;
}

/* Splits "a=1&b=%7Cx" into decoded arguments. */
static jk_rc split_query(struct jk_arena *a, const char *text, struct qs *out)
{
    size_t cap = 1;
    for (const char *p = text; *p; p++)
        cap += *p == '&';
    out->keys = jk_arena_alloc(a, cap * sizeof *out->keys);
    out->values = jk_arena_alloc(a, cap * sizeof *out->values);
    out->n = 0;
    if (!out->keys || !out->values) return JK_ENOMEM;
    const char *p = text;
    while (*p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len) {
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            out->keys[out->n] = pct_decode(a, p, klen);
            out->values[out->n] = eq ? pct_decode(a, eq + 1, len - klen - 1) : "";
            if (!out->keys[out->n] || !out->values[out->n]) return JK_ENOMEM;
            out->n++;
        }
        if (!end) break;
        p = end + 1;
    }
    return JK_OK;
}

/* Decodes standard base64 (RFC 4648, padding optional, whitespace skipped) into the arena. */
static char *base64_decode(struct jk_arena *a, const char *s, size_t n, size_t *out_len)
{
    char *out = jk_arena_alloc(a, n / 4 * 3 + 4);
    if (!out) return NULL;
    size_t k = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '+'             ? 62
                : c == '/'             ? 63
                                       : -1;
        if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        if (v < 0 || pad) return NULL;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (char)((acc >> bits) & 0xff);
        }
    }
    out[k] = '\0';
    *out_len = k;
    return out;
}

static jk_rc put_str(struct jk_buf *b, const char *s)
{
    jk_rc rc = jk_buf_puts(b, "\"");
    if (!rc) rc = jk_buf_json_escape(b, s, strlen(s));
    if (!rc) rc = jk_buf_puts(b, "\"");
    return rc;
}

/* An OperationOutcome with d's issues (severity error) or one information issue. */
static jk_rc outcome_json(struct jk_buf *b, const struct jk_diag *d, const char *info)
{
    jk_rc rc = jk_buf_puts(b, "{\"resourceType\":\"OperationOutcome\",\"issue\":[");
    if (info) {
        if (!rc)
            rc = jk_buf_puts(b, "{\"severity\":\"information\",\"code\":\"informational\","
                                "\"diagnostics\":");
        if (!rc) rc = put_str(b, info);
        if (!rc) rc = jk_buf_puts(b, "}");
    }
    const struct jk_issue *first = info || !d ? NULL : d->head;
    for (const struct jk_issue *is = first; is && !rc; is = is->next) {
        rc = jk_buf_printf(
            b, "%s{\"severity\":\"%s\",\"code\":\"%s\",\"diagnostics\":", is == first ? "" : ",",
            is->rc >= JK_ENOMEM ? "fatal" : "error", is->code);
        if (!rc) rc = put_str(b, is->msg ? is->msg : "");
        if (!rc && is->expr) {
            rc = jk_buf_puts(b, ",\"expression\":[");
            if (!rc) rc = put_str(b, is->expr);
            if (!rc) rc = jk_buf_puts(b, "]");
        }
        if (!rc) rc = jk_buf_puts(b, "}");
    }
    if (!rc) rc = jk_buf_puts(b, "]}");
    return rc;
}

/* ---- parsing the entries ---- */

static int is_method(const char *s, enum method *m)
{
    for (int i = 0; i < N_METHODS; i++)
        if (!strcmp(s, method_names[i])) {
            *m = (enum method)i;
            return 1;
        }
    return 0;
}

/* request.url: [base/fhir/R4/]Type[/id[/_history/vid]][?query]. */
static jk_rc parse_url(struct jk_bundle_job *job, struct entry *e)
{
    struct jk_arena *a = job->bx->arena;
    const char *p = e->url, *base = job->bx->base_url;
    size_t bl = base ? strlen(base) : 0;
    if (bl && !strncmp(p, base, bl) && !strncmp(p + bl, "/fhir/R4/", 9))
        p += bl + 9;
    else if (!strncmp(p, "http://", 7) || !strncmp(p, "https://", 8))
        return entry_fail(job, e, JK_EINVAL, "not-supported", ".request.url",
                          "request.url '%s' is not on this server; give it relative to the base, "
                          "such as Patient/123",
                          e->url);
    if (*p == '/') p++;
    const char *q = strchr(p, '?');
    size_t plen = q ? (size_t)(q - p) : strlen(p);
    const char *seg[5];
    size_t seg_len[5], n = 0;
    const char *s = p, *end = p + plen;
    while (s <= end && n < 5) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *stop = slash ? slash : end;
        seg[n] = s;
        seg_len[n++] = (size_t)(stop - s);
        if (!slash) break;
        s = slash + 1;
    }
    int is_history = n == 4 && seg_len[2] == 8 && !memcmp(seg[2], "_history", 8);
    if (n == 0 || n == 3 || n > 4 || (n == 4 && !is_history) ||
        !jk_fhir_is_resource_type(seg[0], seg_len[0]))
        return entry_fail(job, e, JK_EINVAL, "not-supported", ".request.url",
                          "request.url '%s' is not supported in a Bundle entry: expected Type, "
                          "Type/id, Type/id/_history/version or Type?search, where Type is a "
                          "FHIR R4 resource type",
                          e->url);
    e->type = jk_arena_strndup(a, seg[0], seg_len[0]);
    if (n >= 2) {
        e->id = jk_arena_strndup(a, seg[1], seg_len[1]);
        if (e->id && !jk_fhir_id_ok(e->id))
            return entry_fail(job, e, JK_EINVAL, "value", ".request.url",
                              "request.url '%s' has an invalid id '%s' (1 to 64 letters, "
                              "digits, '-' or '.')",
                              e->url, e->id);
    }
    if (is_history) {
        char *vend;
        const char *v = jk_arena_strndup(a, seg[3], seg_len[3]);
        long long vid = v ? strtoll(v, &vend, 10) : 0;
        if (!v || *vend || vid <= 0)
            return entry_fail(job, e, JK_EINVAL, "value", ".request.url",
                              "request.url '%s': '%s' is not a version number", e->url, v ? v : "");
        e->vid = vid;
    }
    if (!e->type || (n >= 2 && !e->id)) return JK_ENOMEM;
    if (q) {
        e->has_query = 1;
        jk_rc rc = split_query(a, q + 1, &e->query);
        if (rc) return rc;
    }
    return JK_OK;
}

/* The JSON Patch of a PATCH entry: a Binary with contentType application/json-patch+json. */
static jk_rc parse_patch_entry(struct jk_bundle_job *job, struct entry *e)
{
    const char *rt = e->res ? jk_json_str(e->res, "resourceType") : NULL;
    const char *ct = rt ? jk_json_str(e->res, "contentType") : NULL;
    const char *data = rt ? jk_json_str(e->res, "data") : NULL;
    if (!rt || strcmp(rt, "Binary") || !ct || strncmp(ct, "application/json-patch+json", 27) ||
        !data)
        return entry_fail(job, e, JK_EINVAL, "not-supported", ".resource",
                          "a PATCH entry needs a Binary resource with contentType "
                          "application/json-patch+json and the JSON Patch document in data "
                          "(base64); FHIRPath Patch is not supported");
    size_t len;
    const char *doc = base64_decode(job->bx->arena, data, strlen(data), &len);
    if (!doc)
        return entry_fail(job, e, JK_EINVAL, "value", ".resource.data",
                          "Binary.data is not valid base64");
    const struct jk_json_limits *lim =
        job->bx->json_limits ? job->bx->json_limits : &default_limits;
    jk_rc rc = jk_fhir_patch_parse(doc, len, lim, &e->diag, &e->patch_ops);
    if (rc) {
        e->is_failed = 1;
        e->rc = rc;
    }
    return rc;
}

static jk_rc parse_entry(struct jk_bundle_job *job, struct entry *e, struct json_object *je)
{
    struct jk_arena *a = job->bx->arena;
    struct json_object *req, *v;
    if (!json_object_is_type(je, json_type_object))
        return entry_fail(job, e, JK_EINVAL, "structure", NULL, "an entry must be a JSON object");
    if (json_object_object_get_ex(je, "fullUrl", &v)) {
        if (!json_object_is_type(v, json_type_string))
            return entry_fail(job, e, JK_EINVAL, "structure", ".fullUrl",
                              "fullUrl must be a string");
        e->full_url = json_object_get_string(v);
    }
    if (json_object_object_get_ex(je, "resource", &v) && json_object_is_type(v, json_type_object))
        e->res = v;
    if (!json_object_object_get_ex(je, "request", &req) ||
        !json_object_is_type(req, json_type_object))
        return entry_fail(job, e, JK_EINVAL, "required", ".request",
                          "every entry of a %s needs request.method and request.url",
                          job->is_batch ? "batch" : "transaction");
    const char *method = jk_json_str(req, "method");
    if (!method || !is_method(method, &e->method))
        return entry_fail(job, e, JK_EINVAL, method ? "code-invalid" : "required",
                          ".request.method",
                          "request.method '%s' is not one of GET, HEAD, POST, PUT, PATCH, DELETE",
                          method ? method : "(missing)");
    if (!(e->url = jk_json_str(req, "url")) || !*e->url)
        return entry_fail(job, e, JK_EINVAL, "required", ".request.url", "request.url is missing");
    jk_rc rc = parse_url(job, e);
    if (rc) return rc;
    const char *ine = jk_json_str(req, "ifNoneExist");
    const char *im = jk_json_str(req, "ifMatch");
    if (im) {
        if (e->method != M_PUT && e->method != M_PATCH && e->method != M_DELETE)
            return entry_fail(job, e, JK_EINVAL, "not-supported", ".request.ifMatch",
                              "request.ifMatch applies to PUT, PATCH and DELETE, not %s",
                              method_names[e->method]);
        if ((e->if_match = jk_fhir_parse_etag(im)) < 0)
            return entry_fail(job, e, JK_EINVAL, "value", ".request.ifMatch",
                              "request.ifMatch '%s' is not a version tag such as W/\"3\"", im);
    }
    if (ine) {
        if (e->method != M_POST)
            return entry_fail(job, e, JK_EINVAL, "not-supported", ".request.ifNoneExist",
                              "request.ifNoneExist applies to POST only");
        const char *qm = strchr(ine, '?');
        e->has_ine = 1;
        if ((rc = split_query(a, qm ? qm + 1 : ine, &e->ine))) return rc;
        if (!e->ine.n)
            return entry_fail(job, e, JK_EINVAL, "invalid", ".request.ifNoneExist",
                              "request.ifNoneExist '%s' has no search parameter", ine);
    }
    int has_id = e->id != NULL;
    if (job->bx->hooks && (e->method == M_GET || e->method == M_HEAD))
        return entry_fail(job, e, JK_EFORBIDDEN, "forbidden", ".request.method",
                          "reads inside a Bundle are not available on this server; read with "
                          "GET %s instead",
                          e->url);
    switch (e->method) {
    case M_POST:
        if (has_id || e->has_query)
            return entry_fail(job, e, JK_EINVAL, "invalid", ".request.url",
                              "a POST entry creates a resource: request.url must be the type "
                              "alone (such as Patient), not '%s'",
                              e->url);
        break;
    case M_PUT:
    case M_PATCH:
    case M_DELETE:
        if (e->vid || (has_id && e->has_query) || (!has_id && !e->has_query))
            return entry_fail(job, e, JK_EINVAL, "invalid", ".request.url",
                              "a %s entry needs request.url Type/id or Type?search (a "
                              "conditional %s), not '%s'",
                              method_names[e->method],
                              e->method == M_DELETE ? "delete"
                              : e->method == M_PUT  ? "update"
                                                    : "patch",
                              e->url);
        if (e->has_query && !e->query.n)
            return entry_fail(job, e, JK_EINVAL, "invalid", ".request.url",
                              "the conditional %s '%s' has no search parameter",
                              method_names[e->method], e->url);
        break;
    default: break;
    }
    if ((e->method == M_POST || e->method == M_PUT) && !e->res)
        return entry_fail(job, e, JK_EINVAL, "required", ".resource", "a %s entry needs a resource",
                          method_names[e->method]);
    if (e->method == M_POST || e->method == M_PUT) {
        const char *rt = jk_json_str(e->res, "resourceType");
        if (!rt || strcmp(rt, e->type))
            return entry_fail(job, e, JK_EINVAL, "invalid", ".resource.resourceType",
                              "resourceType is '%s' but request.url is for %s",
                              rt ? rt : "(missing)", e->type);
    }
    if (e->method == M_PUT && has_id) {
        const char *body_id = jk_json_str(e->res, "id");
        if (!body_id)
            return entry_fail(job, e, JK_EINVAL, "required", ".resource.id",
                              "the resource has no id; an update must carry the id of "
                              "request.url ('%s')",
                              e->id);
        if (strcmp(body_id, e->id))
            return entry_fail(job, e, JK_EINVAL, "invalid", ".resource.id",
                              "the resource id '%s' differs from the id in request.url ('%s')",
                              body_id, e->id);
    }
    if (e->method == M_PATCH) return parse_patch_entry(job, e);
    return JK_OK;
}

/* ---- fullUrl map ---- */

static int map_cmp(const void *x, const void *y)
{
    const struct url_map *a = x, *b = y;
    int c = strcmp(a->url, b->url);
    if (c) return c;
    return a->e->index < b->e->index ? -1 : a->e->index > b->e->index;
}

static struct entry *map_find(struct jk_bundle_job *job, const char *url)
{
    size_t lo = 0, hi = job->n_map;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(job->map[mid].url, url);
        if (c == 0) return job->map[mid].e;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static jk_rc build_map(struct jk_bundle_job *job)
{
    job->map = jk_arena_alloc(job->bx->arena, (job->n ? job->n : 1) * sizeof *job->map);
    if (!job->map) return JK_ENOMEM;
    for (size_t i = 0; i < job->n; i++)
        if (job->e[i].full_url && !job->e[i].is_failed)
            job->map[job->n_map++] = (struct url_map){job->e[i].full_url, &job->e[i]};
    qsort(job->map, job->n_map, sizeof *job->map, map_cmp);
    for (size_t i = 1; i < job->n_map; i++)
        if (!strcmp(job->map[i].url, job->map[i - 1].url))
            return jk_diag_add(job->bx->diag, JK_EINVAL, "invalid",
                               entry_expr(job, job->map[i].e, ".fullUrl"),
                               "Bundle.entry[%zu].fullUrl '%s' is also the fullUrl of "
                               "Bundle.entry[%zu]; fullUrls must be unique",
                               job->map[i].e->index, job->map[i].url, job->map[i - 1].e->index);
    return JK_OK;
}

/* ---- validation ---- */

/* Validates the whole Bundle (nested resources get Bundle.entry[i].resource... expressions)
 * and hands each issue to its entry; an issue outside every entry fails the call. */
static jk_rc validate_bundle(struct jk_bundle_job *job, struct json_object *bundle)
{
    struct jk_diag vd;
    jk_diag_init(&vd, job->bx->arena);
    vd.max_issues = (size_t)-1;
    if (!jk_fhir_validate(bundle, &vd)) return JK_OK;
    jk_rc rc = JK_OK;
    for (struct jk_issue *is = vd.head; is; is = is->next) {
        char *end = NULL;
        unsigned long long i = is->expr && !strncmp(is->expr, "Bundle.entry[", 13)
                                   ? strtoull(is->expr + 13, &end, 10)
                                   : 0;
        if (!end || *end != ']' || i >= job->n) {
            rc = jk_diag_add(job->bx->diag, is->rc, is->code, is->expr, "%s", is->msg);
            continue;
        }
        struct entry *e = &job->e[i];
        jk_diag_add(&e->diag, is->rc, is->code, is->expr, "%s", is->msg);
        if (!e->is_failed) {
            e->is_failed = 1;
            e->rc = is->rc ? is->rc : JK_EINVAL;
        }
        if (!job->is_batch)
            rc = jk_diag_add(job->bx->diag, is->rc, is->code, is->expr, "Bundle.entry[%zu]: %s",
                             e->index, is->msg);
    }
    return rc ? rc : JK_OK;
}

/* ---- references ---- */

struct walk {
    struct jk_bundle_job *job;
    jk_conn *c; /* NULL before the transaction */
    struct entry *e;
    int needs_tx;
    int in_bundle; /* inside a Bundle resource, whose own fullUrls its references may use */
    size_t len;
    char path[WALK_PATH_MAX];
};

/* Appends to the path: ".key" (key set) or "[i]". Returns the length to go back to. */
static size_t path_push(struct walk *w, const char *key, size_t i)
{
    size_t mark = w->len, room = sizeof w->path - w->len;
    int n = key ? snprintf(w->path + w->len, room, ".%s", key)
                : snprintf(w->path + w->len, room, "[%zu]", i);
    if (n > 0 && (size_t)n < room)
        w->len += (size_t)n;
    else
        w->path[w->len] = '\0'; /* too deep for the message: keep the start */
    return mark;
}

static void path_pop(struct walk *w, size_t mark)
{
    w->len = mark;
    w->path[mark] = '\0';
}

static jk_rc set_ref(struct json_object *obj, const char *target)
{
    struct json_object *s = json_object_new_string(target);
    if (!s) return JK_ENOMEM;
    return json_object_object_add(obj, "reference", s) ? JK_ENOMEM : JK_OK;
}

/* Fails w's entry with an issue at the reference being resolved. */
static jk_rc ref_fail(struct walk *w, jk_rc rc, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static jk_rc ref_fail(struct walk *w, jk_rc rc, const char *code, const char *fmt, ...)
{
    struct jk_arena *a = w->job->bx->arena;
    va_list ap;
    va_start(ap, fmt);
    char *msg = jk_arena_vprintf(a, fmt, ap);
    va_end(ap);
    w->e->is_failed = 1;
    w->e->rc = rc;
    return jk_diag_add(&w->e->diag, rc, code, jk_arena_printf(a, "%s.reference", w->path), "%s",
                       msg ? msg : "");
}

/* A conditional reference Type?query, resolved by a search inside the transaction. */
static jk_rc resolve_conditional(struct walk *w, struct json_object *obj, const char *ref,
                                 size_t type_len)
{
    struct jk_bundle_job *job = w->job;
    struct jk_arena *a = job->bx->arena;
    for (struct cref *cr = job->crefs; cr; cr = cr->next)
        if (!strcmp(cr->ref, ref)) return set_ref(obj, cr->target);
    const char *type = jk_arena_strndup(a, ref, type_len);
    struct qs q;
    jk_rc rc = type ? split_query(a, ref + type_len + 1, &q) : JK_ENOMEM;
    if (rc) return rc;
    if (!q.n)
        return ref_fail(w, JK_EINVAL, "invalid",
                        "conditional reference '%s' has no search "
                        "parameter",
                        ref);
    const char **ids;
    size_t n;
    if ((rc = jk_fhir_search_match(w->c, a, &w->e->diag, type, q.keys, q.values, q.n, 2, &ids, &n)))
        return rc;
    if (n != 1)
        return ref_fail(w, n ? JK_EPRECOND : JK_EINVAL, n ? "multiple-matches" : "not-found",
                        "conditional reference '%s' matches %s %s resource; it must match "
                        "exactly one",
                        ref, n ? "more than one" : "no", type);
    struct cref *cr = jk_arena_alloc(a, sizeof *cr);
    if (!cr || !(cr->target = jk_arena_printf(a, "%s/%s", type, ids[0])) ||
        !(cr->ref = jk_arena_strdup(a, ref))) /* ref dies when the reference is replaced */
        return JK_ENOMEM;
    cr->next = job->crefs;
    job->crefs = cr;
    return set_ref(obj, cr->target);
}

/* One Reference.reference string of obj: a fullUrl of another entry (transaction only), a
 * urn: that names none (an error), or a conditional reference Type?query. */
static jk_rc resolve_ref(struct walk *w, struct json_object *obj, const char *ref)
{
    struct jk_bundle_job *job = w->job;
    if (ref[0] == '#') return JK_OK;
    int is_urn = !strncmp(ref, "urn:uuid:", 9) || !strncmp(ref, "urn:oid:", 8);
    /* A batch has no links between its entries. */
    struct entry *t = job->is_batch ? NULL : map_find(job, ref);
    if (t) {
        if (t->method != M_POST && t->method != M_PUT && t->method != M_PATCH)
            return ref_fail(w, JK_EINVAL, "invalid",
                            "reference '%s' names Bundle.entry[%zu], which creates or updates "
                            "no resource (%s)",
                            ref, t->index, method_names[t->method]);
        if (!t->is_resolved) {
            if (!w->c) {
                w->needs_tx = 1;
                return JK_OK;
            }
            return JK_EINTERNAL; /* every target is resolved before the writes */
        }
        const char *target = jk_arena_printf(job->bx->arena, "%s/%s", t->type, t->target_id);
        return target ? set_ref(obj, target) : JK_ENOMEM;
    }
    if (is_urn) {
        if (w->in_bundle) return JK_OK; /* a document's own links */
        if (job->is_batch)
            return ref_fail(w, JK_EINVAL, "not-found",
                            "reference '%s': the entries of a batch cannot refer to one "
                            "another; send a transaction to link new resources",
                            ref);
        return ref_fail(w, JK_EINVAL, "not-found",
                        "reference '%s' names no entry of this Bundle (no entry has that "
                        "fullUrl)",
                        ref);
    }
    size_t t_len = strcspn(ref, "/?");
    if (ref[t_len] == '?' && jk_fhir_is_resource_type(ref, t_len)) {
        if (!w->c) {
            w->needs_tx = 1;
            return JK_OK;
        }
        return resolve_conditional(w, obj, ref, t_len);
    }
    return JK_OK;
}

static jk_rc walk_value(struct walk *w, struct json_object *v)
{
    jk_rc rc = JK_OK;
    if (json_object_is_type(v, json_type_array)) {
        size_t n = json_object_array_length(v);
        for (size_t i = 0; i < n && !rc; i++) {
            struct json_object *item = json_object_array_get_idx(v, i);
            if (!json_object_is_type(item, json_type_object) &&
                !json_object_is_type(item, json_type_array))
                continue;
            size_t mark = path_push(w, NULL, i);
            rc = walk_value(w, item);
            path_pop(w, mark);
        }
        return rc;
    }
    if (!json_object_is_type(v, json_type_object)) return JK_OK;
    int saved_in_bundle = w->in_bundle;
    const char *rt = jk_json_str(v, "resourceType");
    if (rt && !strcmp(rt, "Bundle")) w->in_bundle = 1;
    const char *ref = jk_json_str(v, "reference");
    if (ref && (rc = resolve_ref(w, v, ref))) return rc;
    json_object_object_foreach(v, k, child)
    {
        if (!json_object_is_type(child, json_type_object) &&
            !json_object_is_type(child, json_type_array))
            continue;
        size_t mark = path_push(w, k, 0);
        rc = walk_value(w, child);
        path_pop(w, mark);
        if (rc) break;
    }
    w->in_bundle = saved_in_bundle;
    return rc;
}

/* Rewrites the references of res (e's resource, or its patched resource). Outside the
 * transaction (c NULL) *needs_tx tells that some can only be resolved inside it. */
static jk_rc rewrite_refs(struct jk_bundle_job *job, jk_conn *c, struct entry *e,
                          struct json_object *res, int *needs_tx)
{
    struct walk *w = jk_arena_zalloc(job->bx->arena, sizeof *w);
    if (!w) return JK_ENOMEM;
    w->job = job;
    w->c = c;
    w->e = e;
    int n = snprintf(w->path, sizeof w->path, "Bundle.entry[%zu].resource", e->index);
    w->len = n > 0 && (size_t)n < sizeof w->path ? (size_t)n : 0;
    jk_rc rc = walk_value(w, res);
    if (needs_tx) *needs_tx = w->needs_tx;
    if (rc && !e->rc) {
        e->is_failed = 1;
        e->rc = rc;
    }
    return rc;
}

/* ---- prepare ---- */

static void job_release(struct jk_bundle_job *job)
{
    for (size_t i = 0; i < job->n; i++) {
        struct entry *e = &job->e[i];
        json_object_put(e->patch_ops);
        e->patch_ops = NULL;
        if (e->patch) jk_fhir_patch_release(e->patch);
    }
}

static void write_init(struct jk_bundle_job *job, struct entry *e, enum jk_fhir_write_kind kind,
                       const char *id)
{
    struct jk_fhir_write *w = &e->w;
    memset(w, 0, sizeof *w);
    w->kind = kind;
    w->type = e->type;
    w->id = id;
    w->res = kind == JK_FHIR_DELETE ? NULL : e->res;
    w->if_match = e->if_match;
    w->arena = job->bx->arena;
    w->diag = &e->diag;
    w->now_ms = job->bx->now_ms;
    w->hooks = job->bx->hooks;
}

/* Ids, and what can be rendered before the transaction. */
static jk_rc plan_entry(struct jk_bundle_job *job, struct entry *e)
{
    if (e->method == M_POST || (e->method == M_PUT && e->has_query)) {
        if (!(e->new_id = jk_fhir_new_id(job->bx->arena))) return JK_EINTERNAL;
    }
    switch (e->method) {
    case M_POST:
        write_init(job, e, JK_FHIR_CREATE, e->new_id);
        if (!e->has_ine) {
            e->target_id = e->new_id;
            e->is_resolved = 1;
        }
        break;
    case M_PUT:
        write_init(job, e, JK_FHIR_UPDATE, e->id);
        if (e->id) {
            e->target_id = e->id;
            e->is_resolved = 1;
        }
        break;
    case M_PATCH:
        if (e->id) {
            e->target_id = e->id;
            e->is_resolved = 1;
        }
        if (!(e->patch = jk_arena_zalloc(job->bx->arena, sizeof *e->patch))) return JK_ENOMEM;
        return JK_OK;
    default: break;
    }
    return JK_OK;
}

/* References and rendering of POST and PUT entries, where possible before the transaction. */
static jk_rc render_early(struct jk_bundle_job *job, struct entry *e)
{
    int needs_tx = 0;
    jk_rc rc = rewrite_refs(job, NULL, e, e->res, &needs_tx);
    if (rc) return rc;
    if (needs_tx) {
        e->is_late = 1;
        return JK_OK;
    }
    rc = jk_fhir_write_prepare(&e->w);
    if (rc && !e->rc) {
        e->is_failed = 1;
        e->rc = rc;
    }
    return rc;
}

jk_rc jk_fhir_bundle_prepare(struct jk_bundle_ctx *bx, struct json_object *bundle,
                             struct jk_bundle_job **out)
{
    *out = NULL;
    const char *type = jk_json_str(bundle, "type");
    if (!type || (strcmp(type, "transaction") && strcmp(type, "batch")))
        return jk_diag_add(bx->diag, JK_EINVAL, "invalid", "Bundle.type",
                           "Bundle.type is '%s'; POST to the base accepts a transaction or a "
                           "batch (store other Bundles with POST Bundle)",
                           type ? type : "(missing)");
    struct jk_bundle_job *job = jk_arena_zalloc(bx->arena, sizeof *job);
    if (!job) return JK_ENOMEM;
    job->bx = bx;
    job->is_batch = type[0] == 'b';
    struct json_object *entries = NULL;
    json_object_object_get_ex(bundle, "entry", &entries);
    if (entries && !json_object_is_type(entries, json_type_array))
        return jk_diag_add(bx->diag, JK_EINVAL, "structure", "Bundle.entry",
                           "Bundle.entry must be an array");
    job->n = entries ? json_object_array_length(entries) : 0;
    job->e = jk_arena_zalloc(bx->arena, (job->n ? job->n : 1) * sizeof *job->e);
    if (!job->e) return JK_ENOMEM;
    jk_rc rc = JK_OK;
    for (size_t i = 0; i < job->n; i++) {
        struct entry *e = &job->e[i];
        e->index = i;
        jk_diag_init(&e->diag, bx->arena);
        e->diag.is_en = bx->diag->is_en; /* the request's language */
    }
    for (size_t i = 0; i < job->n && !rc; i++) {
        struct entry *e = &job->e[i];
        jk_rc erc = parse_entry(job, e, json_object_array_get_idx(entries, i));
        if (erc == JK_ENOMEM) rc = erc;
        if (erc && !job->is_batch) rc = tx_fail(job, e, erc);
    }
    if (!rc) rc = build_map(job);
    if (!rc) rc = validate_bundle(job, bundle);
    for (size_t i = 0; i < job->n && !rc; i++) {
        struct entry *e = &job->e[i];
        if (e->is_failed) continue;
        jk_rc erc = plan_entry(job, e);
        if (!erc && (e->method == M_POST || e->method == M_PUT)) erc = render_early(job, e);
        if (erc == JK_ENOMEM || erc == JK_EINTERNAL) rc = erc;
        if (erc && !job->is_batch) rc = tx_fail(job, e, erc);
    }
    if (rc) {
        job_release(job);
        return rc;
    }
    *out = job;
    return JK_OK;
}

/* ---- inside the transaction ---- */

/* Matches of a conditional interaction: at most 2, which is enough to tell 0, 1 or many. */
static jk_rc cond_match(jk_conn *c, struct jk_bundle_job *job, struct entry *e, const struct qs *q,
                        const char ***ids, size_t *n)
{
    jk_rc rc = jk_fhir_search_match(c, job->bx->arena, &e->diag, e->type, q->keys, q->values, q->n,
                                    2, ids, n);
    if (rc) {
        e->is_failed = 1;
        e->rc = rc;
    }
    return rc;
}

static jk_rc many_matches(struct jk_bundle_job *job, struct entry *e, const char *what)
{
    return entry_fail(job, e, JK_EPRECOND, "multiple-matches", NULL,
                      "the %s matches more than one %s resource; it must match at most one", what,
                      e->type);
}

/* DELETE Type/id or Type?search. */
static jk_rc do_delete(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    const char *id = e->id;
    jk_rc rc;
    if (e->has_query) {
        const char **ids;
        size_t n;
        if ((rc = cond_match(c, job, e, &e->query, &ids, &n))) return rc;
        if (n > 1) return many_matches(job, e, "conditional delete");
        if (n == 0) {
            e->status = 204; /* nothing matched: nothing to delete */
            return JK_OK;
        }
        id = ids[0];
    }
    e->target_id = id;
    e->is_resolved = 1;
    write_init(job, e, JK_FHIR_DELETE, id);
    if ((rc = jk_fhir_write_tx(c, &e->w))) {
        e->is_failed = 1;
        e->rc = rc;
        return rc;
    }
    e->status = 204;
    return JK_OK;
}

/* POST with ifNoneExist: the one match stands, or the create goes ahead. */
static jk_rc resolve_create(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    const char **ids;
    size_t n;
    jk_rc rc;
    if (!e->has_ine || e->is_resolved) return JK_OK;
    if ((rc = cond_match(c, job, e, &e->ine, &ids, &n))) return rc;
    if (n > 1) return many_matches(job, e, "ifNoneExist condition");
    e->is_resolved = 1;
    e->is_existing = n == 1;
    e->target_id = n == 1 ? ids[0] : e->new_id;
    return JK_OK;
}

/* PUT or PATCH with Type?search: find the one resource it changes. */
static jk_rc resolve_update(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    const char **ids;
    size_t n;
    jk_rc rc;
    if (!e->has_query || e->is_resolved) return JK_OK;
    if ((rc = cond_match(c, job, e, &e->query, &ids, &n))) return rc;
    const char *what = e->method == M_PUT ? "conditional update" : "conditional patch";
    if (n > 1) return many_matches(job, e, what);
    if (e->method == M_PATCH) {
        if (n == 0)
            return entry_fail(job, e, JK_ENOTFOUND, "not-found", ".request.url",
                              "the conditional patch '%s' matches no %s resource", e->url, e->type);
        e->target_id = ids[0];
    } else if (n == 1) {
        const char *body_id = jk_json_str(e->res, "id");
        if (body_id && strcmp(body_id, ids[0]))
            return entry_fail(job, e, JK_EINVAL, "invalid", ".resource.id",
                              "the resource id '%s' differs from the matched %s/%s", body_id,
                              e->type, ids[0]);
        e->target_id = ids[0];
        e->w.kind = JK_FHIR_UPDATE;
    } else {
        /* No match: an update-as-create with the body's id, or a create. */
        const char *body_id = jk_json_str(e->res, "id");
        e->target_id = body_id ? body_id : e->new_id;
        e->w.kind = body_id ? JK_FHIR_UPDATE : JK_FHIR_CREATE;
    }
    e->w.id = e->target_id;
    e->is_resolved = 1;
    return JK_OK;
}

static int str_cmp(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

/* R4: if any resource identities (including resolved identities from conditional
 * update/delete) overlap in steps 1-3, the transaction fails. */
static jk_rc check_overlap(struct jk_bundle_job *job)
{
    struct jk_arena *a = job->bx->arena;
    const char **keys = jk_arena_alloc(a, (job->n ? job->n : 1) * sizeof *keys);
    size_t n = 0;
    if (!keys) return JK_ENOMEM;
    for (size_t i = 0; i < job->n; i++) {
        struct entry *e = &job->e[i];
        if (e->method == M_GET || e->method == M_HEAD || !e->target_id) continue;
        /* "Type/id#index": sorted, equal identities end up next to each other */
        if (!(keys[n++] = jk_arena_printf(a, "%s/%s#%zu", e->type, e->target_id, i)))
            return JK_ENOMEM;
    }
    qsort(keys, n, sizeof *keys, str_cmp);
    for (size_t i = 1; i < n; i++) {
        size_t l1 = strcspn(keys[i - 1], "#"), l2 = strcspn(keys[i], "#");
        if (l1 != l2 || memcmp(keys[i - 1], keys[i], l1)) continue;
        size_t i1 = strtoul(keys[i - 1] + l1 + 1, NULL, 10),
               i2 = strtoul(keys[i] + l2 + 1, NULL, 10);
        struct entry *later = &job->e[i1 > i2 ? i1 : i2];
        entry_fail(job, later, JK_EINVAL, "invalid", NULL,
                   "%.*s is also changed by Bundle.entry[%zu]; a transaction may change each "
                   "resource once",
                   (int)l1, keys[i], i1 > i2 ? i2 : i1);
        return tx_fail(job, later, JK_EINVAL);
    }
    return JK_OK;
}

static void take_out(struct entry *e, const struct jk_fhir_write *w)
{
    e->out = w->out;
    e->has_out = 1;
    e->status = w->status;
}

/* A PATCH entry's patched resource gets its references rewritten like any other. */
struct patch_fixup {
    struct jk_bundle_job *job;
    jk_conn *c;
    struct entry *e;
};

static jk_rc patch_fixup(void *arg, struct json_object *res)
{
    struct patch_fixup *fx = arg;
    return rewrite_refs(fx->job, fx->c, fx->e, res, NULL);
}

/* POST, PUT or PATCH, once every target is known. */
static jk_rc do_write(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    jk_rc rc;
    if (e->method == M_POST && e->is_existing) {
        if ((rc = jk_res_read(c, job->bx->arena, e->type, e->target_id, &e->out))) return rc;
        e->has_out = 1;
        e->status = 200;
        return JK_OK;
    }
    if (e->method == M_PATCH) {
        struct jk_fhir_patch *p = e->patch;
        p->type = e->type;
        p->id = e->target_id;
        p->ops = e->patch_ops;
        p->if_match = e->if_match;
        p->arena = job->bx->arena;
        p->diag = &e->diag;
        p->now_ms = job->bx->now_ms;
        struct patch_fixup *fx = jk_arena_alloc(job->bx->arena, sizeof *fx);
        if (!fx) return JK_ENOMEM;
        *fx = (struct patch_fixup){job, c, e};
        jk_fhir_patch_release(p);
        p->fixup = patch_fixup;
        p->fixup_arg = fx;
        p->hooks = job->bx->hooks;
        if ((rc = jk_fhir_patch_tx(c, p))) goto fail;
        take_out(e, &p->w);
        return JK_OK;
    }
    if (e->is_late &&
        ((rc = rewrite_refs(job, c, e, e->res, NULL)) || (rc = jk_fhir_write_prepare(&e->w))))
        goto fail;
    if ((rc = jk_fhir_write_tx(c, &e->w))) goto fail;
    take_out(e, &e->w);
    return JK_OK;
fail:
    e->is_failed = 1;
    if (!e->rc) e->rc = rc;
    return rc;
}

static int is_result_param(const char *k)
{
    static const char *const result[] = {"_count",   "_sort",     "_include",      "_revinclude",
                                         "_summary", "_elements", "_total",        "_contained",
                                         "_format",  "_pretty",   "_containedType"};
    for (size_t i = 0; i < sizeof result / sizeof result[0]; i++)
        if (!strcmp(k, result[i])) return 1;
    return 0;
}

/* GET Type?search inside the Bundle: one searchset page of at most _count resources. */
static jk_rc do_search(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    struct jk_arena *a = job->bx->arena;
    const char **keys = jk_arena_alloc(a, (e->query.n + 1) * sizeof *keys);
    const char **values = jk_arena_alloc(a, (e->query.n + 1) * sizeof *values);
    size_t n = 0, count = SEARCH_DEFAULT_COUNT;
    if (!keys || !values) return JK_ENOMEM;
    for (size_t i = 0; i < e->query.n; i++) {
        if (!strcmp(e->query.keys[i], "_count")) {
            char *end;
            long long v = strtoll(e->query.values[i], &end, 10);
            if (*end || v < 0)
                return entry_fail(job, e, JK_EINVAL, "value", ".request.url",
                                  "_count '%s' is not a whole number", e->query.values[i]);
            count = v > SEARCH_MAX_COUNT ? SEARCH_MAX_COUNT : (size_t)v;
            continue;
        }
        if (is_result_param(e->query.keys[i])) continue;
        keys[n] = e->query.keys[i];
        values[n++] = e->query.values[i];
    }
    const char **ids = NULL;
    size_t n_ids = 0;
    jk_rc rc =
        jk_fhir_search_match(c, a, &e->diag, e->type, keys, values, n, count + 1, &ids, &n_ids);
    if (rc) {
        e->is_failed = 1;
        e->rc = rc;
        return rc;
    }
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_puts(&b, "{\"resourceType\":\"Bundle\",\"type\":\"searchset\"");
    if (!rc && n_ids <= count) rc = jk_buf_printf(&b, ",\"total\":%zu", n_ids);
    if (!rc) rc = jk_buf_puts(&b, ",\"link\":[{\"relation\":\"self\",\"url\":");
    if (!rc) {
        const char *self = jk_arena_printf(a, "%s/fhir/R4/%s", job->bx->base_url, e->url);
        rc = self ? put_str(&b, self) : JK_ENOMEM;
    }
    if (!rc) rc = jk_buf_puts(&b, "}],\"entry\":[");
    size_t emitted = 0;
    for (size_t i = 0; i < n_ids && i < count && !rc; i++) {
        struct jk_res r;
        jk_rc rrc = jk_res_read(c, a, e->type, ids[i], &r);
        if (rrc == JK_ENOTFOUND || rrc == JK_EGONE) continue;
        if ((rc = rrc)) break;
        rc = jk_buf_printf(&b, "%s{\"fullUrl\":", emitted++ ? "," : "");
        const char *full = jk_arena_printf(a, "%s/fhir/R4/%s/%s", job->bx->base_url, r.type, r.id);
        if (!rc) rc = full ? put_str(&b, full) : JK_ENOMEM;
        if (!rc) rc = jk_buf_puts(&b, ",\"resource\":");
        if (!rc) rc = jk_buf_append(&b, r.body, r.body_len);
        if (!rc) rc = jk_buf_puts(&b, ",\"search\":{\"mode\":\"match\"}}");
    }
    if (!rc) rc = jk_buf_puts(&b, "]}");
    if (!rc && !(e->search_text = jk_arena_strndup(a, b.p, b.len))) rc = JK_ENOMEM;
    e->search_len = b.len;
    jk_buf_free(&b);
    if (!rc) e->status = 200;
    return rc;
}

/* GET or HEAD: read, vread or search. */
static jk_rc do_read(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    if (!e->id) return do_search(c, job, e);
    if (e->has_query)
        return entry_fail(job, e, JK_EINVAL, "not-supported", ".request.url",
                          "request.url '%s': a read takes no search parameters", e->url);
    jk_rc rc = e->vid ? jk_res_vread(c, job->bx->arena, e->type, e->id, e->vid, &e->out)
                      : jk_res_read(c, job->bx->arena, e->type, e->id, &e->out);
    if (rc == JK_ENOTFOUND)
        return entry_fail(job, e, rc, "not-found", ".request.url", "%s is not known", e->url);
    if (rc == JK_EGONE)
        return entry_fail(job, e, rc, "deleted", ".request.url", "%s was deleted", e->url);
    if (rc) return rc;
    e->has_out = 1;
    e->status = 200;
    return JK_OK;
}

static jk_rc tx_transaction(jk_conn *c, struct jk_bundle_job *job)
{
    jk_rc rc;
    struct entry *e;
    /* 1. deletes; 2. creates (conditional ones resolved first, so that every fullUrl is known
     * before any resource that refers to one is written); 3. updates and patches; 4. reads. */
    for (size_t i = 0; i < job->n; i++)
        if ((e = &job->e[i])->method == M_DELETE && (rc = do_delete(c, job, e)))
            return tx_fail(job, e, rc);
    for (size_t i = 0; i < job->n; i++)
        if ((e = &job->e[i])->method == M_POST && (rc = resolve_create(c, job, e)))
            return tx_fail(job, e, rc);
    for (size_t i = 0; i < job->n; i++)
        if (((e = &job->e[i])->method == M_PUT || e->method == M_PATCH) &&
            (rc = resolve_update(c, job, e)))
            return tx_fail(job, e, rc);
    if ((rc = check_overlap(job))) return rc;
    for (size_t i = 0; i < job->n; i++)
        if ((e = &job->e[i])->method == M_POST && (rc = do_write(c, job, e)))
            return tx_fail(job, e, rc);
    for (size_t i = 0; i < job->n; i++)
        if (((e = &job->e[i])->method == M_PUT || e->method == M_PATCH) &&
            (rc = do_write(c, job, e)))
            return tx_fail(job, e, rc);
    for (size_t i = 0; i < job->n; i++)
        if (((e = &job->e[i])->method == M_GET || e->method == M_HEAD) && (rc = do_read(c, job, e)))
            return tx_fail(job, e, rc);
    return JK_OK;
}

static const char sql_savepoint[] = "SAVEPOINT jk_entry",
                  sql_rollback_to[] = "ROLLBACK TO SAVEPOINT jk_entry",
                  sql_release[] = "RELEASE SAVEPOINT jk_entry";

static jk_rc batch_entry(jk_conn *c, struct jk_bundle_job *job, struct entry *e)
{
    switch (e->method) {
    case M_DELETE: return do_delete(c, job, e);
    case M_POST: {
        jk_rc rc = resolve_create(c, job, e);
        return rc ? rc : do_write(c, job, e);
    }
    case M_PUT:
    case M_PATCH: {
        jk_rc rc = resolve_update(c, job, e);
        return rc ? rc : do_write(c, job, e);
    }
    default: return do_read(c, job, e);
    }
}

/* A batch: each entry in its own savepoint, so a failing one undoes only itself. */
static jk_rc tx_batch(jk_conn *c, struct jk_bundle_job *job)
{
    for (size_t i = 0; i < job->n; i++) {
        struct entry *e = &job->e[i];
        if (e->is_failed) continue;
        jk_rc rc = jk_conn_exec(c, sql_savepoint);
        if (rc) return rc;
        rc = batch_entry(c, job, e);
        if (rc) {
            e->is_failed = 1;
            if (!e->rc) e->rc = rc;
            e->has_out = 0;
            if (jk_conn_exec(c, sql_rollback_to)) return JK_EDB;
        }
        if (jk_conn_exec(c, sql_release)) return JK_EDB;
    }
    return JK_OK;
}

jk_rc jk_fhir_bundle_tx(jk_conn *c, void *arg)
{
    struct jk_bundle_job *job = arg;
    job->crefs = NULL;
    return job->is_batch ? tx_batch(c, job) : tx_transaction(c, job);
}

/* ---- the response ---- */

static jk_rc render_entry(struct jk_bundle_job *job, struct entry *e, struct jk_buf *b)
{
    struct jk_bundle_ctx *bx = job->bx;
    const struct jk_res *r = e->has_out ? &e->out : NULL;
    jk_rc rc = jk_buf_puts(b, "{");
    int is_write = e->method == M_POST || e->method == M_PUT || e->method == M_PATCH;
    if (!rc && r && !e->is_failed) {
        const char *full =
            jk_arena_printf(bx->arena, "%s/fhir/R4/%s/%s", bx->base_url, r->type, r->id);
        rc = jk_buf_puts(b, "\"fullUrl\":");
        if (!rc) rc = full ? put_str(b, full) : JK_ENOMEM;
        int with_body = r->body && (e->method == M_GET ||
                                    (is_write && bx->prefer == JK_BUNDLE_RETURN_REPRESENTATION));
        if (!rc && with_body) {
            rc = jk_buf_puts(b, ",\"resource\":");
            if (!rc) rc = jk_buf_append(b, r->body, r->body_len);
        }
        if (!rc) rc = jk_buf_puts(b, ",");
    } else if (!rc && e->search_text && !e->is_failed) {
        rc = jk_buf_puts(b, "\"resource\":");
        if (!rc && e->method == M_GET) rc = jk_buf_append(b, e->search_text, e->search_len);
        if (!rc && e->method == M_HEAD)
            rc = jk_buf_puts(b, "{\"resourceType\":\"Bundle\","
                                "\"type\":\"searchset\"}");
        if (!rc) rc = jk_buf_puts(b, ",");
    }
    if (rc) return rc;
    if (e->is_failed) {
        jk_rc erc = e->rc ? e->rc : jk_diag_rc(&e->diag);
        struct jk_diag od;
        jk_diag_init(&od, bx->arena);
        if (jk_rc_http_status(erc) >= 500)
            jk_diag_add(&od, erc, NULL, entry_expr(job, e, NULL),
                        "an internal error occurred while processing this entry (%s)",
                        jk_rc_name(erc));
        else
            copy_issues(job, e, &od);
        rc = jk_buf_printf(b, "\"response\":{\"status\":\"%s\",\"outcome\":",
                           status_text(jk_rc_http_status(erc ? erc : JK_EINVAL)));
        if (!rc) rc = outcome_json(b, &od, NULL);
        if (!rc) rc = jk_buf_puts(b, "}}");
        return rc;
    }
    rc = jk_buf_printf(b, "\"response\":{\"status\":\"%s\"", status_text(e->status));
    if (!rc && r && is_write) {
        const char *loc = jk_arena_printf(bx->arena, "%s/fhir/R4/%s/%s/_history/%lld", bx->base_url,
                                          r->type, r->id, (long long)r->version);
        rc = jk_buf_puts(b, ",\"location\":");
        if (!rc) rc = loc ? put_str(b, loc) : JK_ENOMEM;
    }
    if (!rc && r)
        rc = jk_buf_printf(b, ",\"etag\":\"W/\\\"%lld\\\"\",\"lastModified\":\"%s\"",
                           (long long)r->version, r->last_updated);
    if (!rc && r && is_write && bx->prefer == JK_BUNDLE_RETURN_OUTCOME) {
        const char *info = jk_arena_printf(bx->arena, "%s/%s version %lld %s", r->type, r->id,
                                           (long long)r->version,
                                           e->status == 201 ? "created"
                                           : e->is_existing ? "already exists"
                                                            : "updated");
        rc = jk_buf_puts(b, ",\"outcome\":");
        if (!rc) rc = info ? outcome_json(b, NULL, info) : JK_ENOMEM;
    }
    if (!rc) rc = jk_buf_puts(b, "}}");
    return rc;
}

jk_rc jk_fhir_bundle_finish(struct jk_bundle_job *job, jk_rc tx_rc, const char **out,
                            size_t *out_len)
{
    struct jk_bundle_ctx *bx = job->bx;
    *out = NULL;
    *out_len = 0;
    jk_rc rc = tx_rc;
    if (!rc) {
        struct jk_buf b;
        jk_buf_init(&b, 0);
        const char *id = jk_fhir_new_id(bx->arena);
        rc = id ? jk_buf_printf(&b,
                                "{\"resourceType\":\"Bundle\",\"id\":\"%s\",\"type\":\"%s\","
                                "\"entry\":[",
                                id, job->is_batch ? "batch-response" : "transaction-response")
                : JK_EINTERNAL;
        for (size_t i = 0; i < job->n && !rc; i++) {
            if (i) rc = jk_buf_puts(&b, ",");
            if (!rc) rc = render_entry(job, &job->e[i], &b);
        }
        if (!rc) rc = jk_buf_puts(&b, "]}");
        if (!rc && !(*out = jk_arena_strndup(bx->arena, b.p, b.len))) rc = JK_ENOMEM;
        if (!rc) *out_len = b.len;
        jk_buf_free(&b);
    }
    job_release(job);
    return rc;
}

jk_rc jk_fhir_bundle_process(struct jk_bundle_ctx *bx, struct json_object *bundle, const char **out,
                             size_t *out_len)
{
    struct jk_bundle_job *job;
    *out = NULL;
    *out_len = 0;
    jk_rc rc = jk_fhir_bundle_prepare(bx, bundle, &job);
    if (rc) return rc;
    rc = jk_store_tx(bx->db, jk_fhir_bundle_tx, job);
    return jk_fhir_bundle_finish(job, rc, out, out_len);
}

/* ---- Patient/$everything ---- */

/* Rows linking resources to the patient, and what those resources refer to. */
static const char sql_ev_members[] = "SELECT DISTINCT type, id, param FROM idx_reference"
                                     " WHERE target_type = 'Patient' AND target_id = ?";
static const char sql_ev_refs[] =
    "SELECT DISTINCT r.type, r.id, r.target_type, r.target_id FROM idx_reference p"
    " JOIN idx_reference r ON r.type = p.type AND r.id = p.id"
    " WHERE p.target_type = 'Patient' AND p.target_id = ?";
static const char sql_ev_own_refs[] = "SELECT DISTINCT target_type, target_id FROM idx_reference"
                                      " WHERE type = 'Patient' AND id = ?";

struct ev_item {
    const char *key; /* "Type/id" */
    int is_include;
};

static int ev_cmp(const void *x, const void *y)
{
    const struct ev_item *a = x, *b = y;
    return strcmp(a->key, b->key);
}

struct ev_list {
    struct jk_arena *a;
    struct ev_item *items;
    size_t n, cap;
};

static jk_rc ev_add(struct ev_list *l, const char *type, size_t tl, const char *id, size_t il,
                    int is_include)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct ev_item *items = jk_arena_alloc(l->a, cap * sizeof *items);
        if (!items) return JK_ENOMEM;
        if (l->n) memcpy(items, l->items, l->n * sizeof *items);
        l->items = items;
        l->cap = cap;
    }
    char *key = jk_arena_alloc(l->a, tl + il + 2);
    if (!key) return JK_ENOMEM;
    memcpy(key, type, tl);
    key[tl] = '/';
    memcpy(key + tl + 1, id, il);
    key[tl + il + 1] = '\0';
    l->items[l->n++] = (struct ev_item){key, is_include};
    return JK_OK;
}

/* Whether param links type to a patient (the Patient CompartmentDefinition). */
static int in_compartment(const char *type, const char *param, size_t pl)
{
    const char *const *params = jk_sp_patient_compartment(type);
    for (size_t i = 0; params && params[i]; i++)
        if (strlen(params[i]) == pl && !memcmp(params[i], param, pl)) return 1;
    return 0;
}

static int ev_find(const struct ev_list *l, const char *key)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(l->items[mid].key, key);
        if (!c) return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* Sorts and removes duplicates (a match wins over an include of the same resource). */
static void ev_sort(struct ev_list *l)
{
    qsort(l->items, l->n, sizeof *l->items, ev_cmp);
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (k && !strcmp(l->items[k - 1].key, l->items[i].key)) {
            if (!l->items[i].is_include) l->items[k - 1].is_include = 0;
            continue;
        }
        l->items[k++] = l->items[i];
    }
    l->n = k;
}

static int type_wanted(const struct jk_everything_req *q, const char *key)
{
    if (!q->types) return 1;
    size_t tl = strcspn(key, "/");
    for (size_t i = 0; i < q->n_types; i++)
        if (strlen(q->types[i]) == tl && !memcmp(q->types[i], key, tl)) return 1;
    return 0;
}

/* Every member and include of the patient's compartment, sorted, the patient excluded. */
static jk_rc ev_collect(jk_conn *c, struct jk_arena *a, const char *pid, struct ev_list *out)
{
    struct ev_list m = {a, NULL, 0, 0};
    jk_stmt *s;
    int has_row;
    size_t tl, il, pl;
    jk_rc rc = jk_conn_prepare(c, sql_ev_members, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, pid, strlen(pid));
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        const char *type = jk_stmt_col_text(s, 0, &tl), *id = jk_stmt_col_text(s, 1, &il),
                   *param = jk_stmt_col_text(s, 2, &pl);
        char *tn = jk_arena_strndup(a, type, tl);
        if (!tn) rc = JK_ENOMEM;
        if (rc || !in_compartment(tn, param, pl)) continue;
        if (tl == 7 && !memcmp(type, "Patient", 7) && il == strlen(pid) && !memcmp(id, pid, il))
            continue;
        rc = ev_add(&m, type, tl, id, il, 0);
    }
    jk_stmt_reset(s);
    if (rc) return rc;
    ev_sort(&m);
    /* What the members and the patient refer to: practitioners, organisations, ... */
    struct ev_list inc = {a, NULL, 0, 0};
    if ((rc = jk_conn_prepare(c, sql_ev_refs, &s))) return rc;
    jk_stmt_text_arg(s, 1, pid, strlen(pid));
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        const char *type = jk_stmt_col_text(s, 0, &tl), *id = jk_stmt_col_text(s, 1, &il);
        const char *key = jk_arena_printf(a, "%.*s/%.*s", (int)tl, type, (int)il, id);
        if (!key) rc = JK_ENOMEM;
        if (rc || !ev_find(&m, key)) continue;
        const char *tt = jk_stmt_col_text(s, 2, &tl), *tid = jk_stmt_col_text(s, 3, &il);
        /* Another patient's record is never pulled in through a reference. */
        if (!jk_fhir_is_resource_type(tt, tl) || (tl == 7 && !memcmp(tt, "Patient", 7)) || !il)
            continue;
        rc = ev_add(&inc, tt, tl, tid, il, 1);
    }
    jk_stmt_reset(s);
    if (rc) return rc;
    if ((rc = jk_conn_prepare(c, sql_ev_own_refs, &s))) return rc;
    jk_stmt_text_arg(s, 1, pid, strlen(pid));
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        const char *tt = jk_stmt_col_text(s, 0, &tl), *tid = jk_stmt_col_text(s, 1, &il);
        if (!jk_fhir_is_resource_type(tt, tl) || (tl == 7 && !memcmp(tt, "Patient", 7)) || !il)
            continue;
        rc = ev_add(&inc, tt, tl, tid, il, 1);
    }
    jk_stmt_reset(s);
    if (rc) return rc;
    for (size_t i = 0; i < inc.n && !rc; i++) {
        size_t k = strcspn(inc.items[i].key, "/");
        rc = ev_add(&m, inc.items[i].key, k, inc.items[i].key + k + 1,
                    strlen(inc.items[i].key + k + 1), 1);
    }
    if (rc) return rc;
    ev_sort(&m);
    *out = m;
    return JK_OK;
}

/* Appends one entry when the resource is current and passes _since; *added tells. */
static jk_rc ev_entry(jk_conn *c, struct jk_arena *a, const struct jk_everything_req *q,
                      const char *key, int is_include, struct jk_buf *b, int first, int dry,
                      int *added)
{
    size_t tl = strcspn(key, "/");
    const char *type = jk_arena_strndup(a, key, tl);
    struct jk_res r;
    *added = 0;
    if (!type) return JK_ENOMEM;
    jk_rc rc = jk_res_read(c, a, type, key + tl + 1, &r);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE) return JK_OK;
    if (rc) return rc;
    if (q->since && strcmp(r.last_updated, q->since) < 0) return JK_OK;
    if (q->is_visible && !q->is_visible(q->visible_arg, type, key + tl + 1)) return JK_OK;
    *added = 1;
    if (dry) return JK_OK;
    rc = jk_buf_printf(b, "%s{\"fullUrl\":", first ? "" : ",");
    const char *full = jk_arena_printf(a, "%s/fhir/R4/%s", q->base_url, key);
    if (!rc) rc = full ? put_str(b, full) : JK_ENOMEM;
    if (!rc) rc = jk_buf_puts(b, ",\"resource\":");
    if (!rc) rc = jk_buf_append(b, r.body, r.body_len);
    if (!rc)
        rc = jk_buf_printf(b, ",\"search\":{\"mode\":\"%s\"}}", is_include ? "include" : "match");
    return rc;
}

jk_rc jk_fhir_everything(jk_conn *c, struct jk_arena *a, struct jk_diag *d,
                         const struct jk_everything_req *q, struct jk_buf *out)
{
    struct jk_res pat;
    jk_rc rc = jk_res_read(c, a, "Patient", q->patient_id, &pat);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(d, rc, "not-found", NULL, "Patient/%s is not known", q->patient_id);
    if (rc == JK_EGONE)
        return jk_diag_add(d, rc, "deleted", NULL, "Patient/%s was deleted", q->patient_id);
    if (rc) return rc;
    struct ev_list l;
    if ((rc = ev_collect(c, a, q->patient_id, &l))) return rc;
    const char *self_key = jk_arena_printf(a, "Patient/%s", q->patient_id);
    if (!self_key) return JK_ENOMEM;
    /* The sequence is the patient, then l in order; the cursor is the last key sent. */
    size_t start = 0;
    int with_self = !q->cursor && type_wanted(q, self_key);
    if (q->cursor && strcmp(q->cursor, self_key)) {
        size_t lo = 0, hi = l.n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(l.items[mid].key, q->cursor) <= 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        start = lo;
    }
    size_t total = type_wanted(q, self_key);
    for (size_t i = 0; i < l.n; i++)
        total += !l.items[i].is_include && type_wanted(q, l.items[i].key);
    rc = jk_buf_puts(out, "{\"resourceType\":\"Bundle\",\"type\":\"searchset\"");
    if (!rc && !q->since) rc = jk_buf_printf(out, ",\"total\":%zu", total);
    struct jk_buf entries;
    jk_buf_init(&entries, 0);
    size_t n = 0;
    int added, has_more = 0;
    const char *last = NULL;
    if (!rc && with_self && q->count) {
        rc = ev_entry(c, a, q, self_key, 0, &entries, 1, 0, &added);
        if (added) {
            n++;
            last = self_key;
        }
    }
    for (size_t i = start; i < l.n && q->count && !rc; i++) {
        if (!type_wanted(q, l.items[i].key)) continue;
        rc = ev_entry(c, a, q, l.items[i].key, l.items[i].is_include, &entries, n == 0,
                      n >= q->count, &added);
        if (!added) continue;
        if (n >= q->count) {
            has_more = 1; /* one more exists: the next page starts after last */
            break;
        }
        n++;
        last = l.items[i].key;
    }
    const char *self =
        jk_arena_printf(a, "%s/fhir/R4/Patient/%s/$everything", q->base_url, q->patient_id);
    const char *amp = q->next_query && *q->next_query ? "&" : "";
    const char *nq = q->next_query ? q->next_query : "";
    if (!rc) rc = self ? jk_buf_puts(out, ",\"link\":[{\"relation\":\"self\",\"url\":") : JK_ENOMEM;
    if (!rc) {
        const char *url = jk_arena_printf(a, "%s?_count=%zu%s%s%s%s", self, q->count, amp, nq,
                                          q->cursor ? "&_cursor=" : "", q->cursor ? q->cursor : "");
        rc = url ? put_str(out, url) : JK_ENOMEM;
    }
    if (!rc && has_more && last) {
        const char *url =
            jk_arena_printf(a, "%s?_count=%zu%s%s&_cursor=%s", self, q->count, amp, nq, last);
        rc = jk_buf_puts(out, "},{\"relation\":\"next\",\"url\":");
        if (!rc) rc = url ? put_str(out, url) : JK_ENOMEM;
    }
    if (!rc) rc = jk_buf_puts(out, "}],\"entry\":[");
    if (!rc && entries.len) rc = jk_buf_append(out, entries.p, entries.len);
    if (!rc) rc = jk_buf_puts(out, "]}");
    jk_buf_free(&entries);
    return rc;
}
