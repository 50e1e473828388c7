/* import.c - `jiankang import`: loads transaction Bundles, other Bundles, single resources and
 * NDJSON files, several at a time, so that parsing, validation and index extraction on worker
 * threads overlap the store's writer. The no-duplicates rule is documented in docs/import.md. */
#include "cli/import.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "auth/protect.h"
#include "mpi/mpi.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/bundle.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "fhir/search.h"
#include "fhir/validate.h"
#include "mpi/idnum.h"
#include "store/resource.h"
#include "store/store.h"

#define IMP_MAX_JSON_BYTES  ((size_t)512 << 20) /* one .json file, parsed whole */
#define IMP_UNIT_BYTES      ((size_t)8 << 20)   /* NDJSON files are split into ranges this big */
#define IMP_CHUNK_RESOURCES 1000                /* NDJSON/collection resources per transaction */
#define IMP_CHUNK_BYTES     ((size_t)8 << 20)
#define IMP_MAX_ATTEMPTS    5 /* of a transaction that lost a race with another file (409) */
#define IMP_MAX_FILES       1000000
#define IMP_MAX_DEPTH       64 /* of directories walked */
#define IMP_REDRAW_US       100000
#define IMP_MSG_BYTES       2048
#define IMP_WORKER_NICE     10    /* relative to the writer thread */
#define IMP_GROUP_RESOURCES 10000 /* Bundles are written together up to this many resources */
/* Bytes of files parsed and not yet committed, all workers together (json-c needs about ten
 * times as much memory). */
#define IMP_INFLIGHT_BYTES  ((size_t)48 << 20)
#define IMP_MIN_GROUP_BYTES ((size_t)2 << 20)
#define IMP_MAX_GROUPS      1 /* groups a worker has handed over while it fills the next */

enum imp_format { IMP_JSON, IMP_NDJSON };

/* How a problem's position is given: none (a single resource), Bundle.entry index, or the
 * byte offset of an NDJSON line (reported as its line number). */
enum imp_where { IMP_AT_FILE, IMP_AT_ENTRY, IMP_AT_LINE };

struct imp_file {
    char *path;
    enum imp_format format;
    int phase; /* 0: bundles that other bundles refer to, loaded before the rest */
    size_t bytes;
    size_t n_units_left;
    int is_failed;
    size_t n_written, n_unchanged, n_rejected;
    int64_t started_us;
};

/* A piece of work for one thread: a whole JSON file, or the NDJSON lines that start in
 * [off, end) of a file. */
struct imp_unit {
    size_t file;
    size_t off, end;
    int phase;
};

struct imp {
    const struct jk_config *cfg;
    jk_store *db;
    struct jk_json_limits lim;
    char base_url[300];
    struct imp_file *files;
    size_t n_files, cap_files;
    size_t n_missing; /* paths that could not be read at all */
    struct imp_unit *units;
    size_t n_units;
    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t cond;  /* a unit finished or a worker ended */
    size_t next_unit;
    size_t n_phase0_left;
    size_t n_workers_running;
    size_t files_done, files_failed;
    size_t n_written, n_unchanged, n_rejected;
    size_t bytes_done, bytes_total;
    size_t group_bytes; /* a worker hands its group of Bundles over at this size */
    int is_tty;
    int is_bar_drawn;
    int64_t t0_us, drawn_us;
};

/* One unit being worked on by one thread. */
struct imp_job {
    struct imp *im;
    struct imp_file *file;
    const struct imp_unit *unit;
    const char *data; /* the mapped file */
    size_t len;
    size_t line_off, line_no; /* cache for turning offsets into line numbers */
    size_t bytes_counted;     /* of the unit, in the progress display */
    int is_failed;
};

/* ---- reporting ---- */

/* Removes the progress bar before other text goes to the terminal. Under im->lock. */
static void clear_bar(struct imp *im)
{
    if (im->is_bar_drawn) fputs("\r\033[K", stderr);
    im->is_bar_drawn = 0;
}

/* The 1-based number of the line that starts at byte off of the job's file. */
static size_t line_number(struct imp_job *j, size_t off)
{
    if (off < j->line_off) {
        j->line_off = 0;
        j->line_no = 1;
    }
    const char *p = j->data + j->line_off, *end = j->data + off;
    while (p < end && (p = memchr(p, '\n', (size_t)(end - p)))) {
        j->line_no++;
        p++;
    }
    j->line_off = off;
    return j->line_no;
}

/* Reports one problem of the job's file as `FILE: entry N (Type/id): message (expression)`
 * on standard error and marks the file failed. type, id and expr may be NULL. */
static void report(struct imp_job *j, enum imp_where where, size_t pos, const char *type,
                   const char *id, const char *expr, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));
static void report(struct imp_job *j, enum imp_where where, size_t pos, const char *type,
                   const char *id, const char *expr, const char *fmt, ...)
{
    char at[64] = "", what[200] = "", msg[IMP_MSG_BYTES];
    if (where == IMP_AT_ENTRY) snprintf(at, sizeof at, " entry %zu", pos);
    if (where == IMP_AT_LINE) snprintf(at, sizeof at, " line %zu", line_number(j, pos));
    if (type) snprintf(what, sizeof what, " (%s%s%s)", type, id ? "/" : "", id ? id : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct imp *im = j->im;
    pthread_mutex_lock(&im->lock);
    clear_bar(im);
    fprintf(stderr, "%s:%s%s%s %s%s%s%s\n", j->file->path, at, what, *at || *what ? ":" : "", msg,
            expr ? " (" : "", expr ? expr : "", expr ? ")" : "");
    fflush(stderr);
    pthread_mutex_unlock(&im->lock);
    j->is_failed = 1;
}

/* A report names the entry already: "Bundle.entry[N]...: " before a message goes, and an
 * expression "Bundle.entry[N].resource.x" becomes "Type.x" (in buf). */
static void tidy_issue(const char *type, const char **msg, const char **expr, char *buf, size_t n)
{
    static const char entry[] = "Bundle.entry[", resource[] = "].resource";
    const char *colon, *r;
    if (*msg && !strncmp(*msg, entry, sizeof entry - 1) && (colon = strstr(*msg, ": ")))
        *msg = colon + 2;
    if (*expr && type && !strncmp(*expr, entry, sizeof entry - 1) &&
        (r = strstr(*expr, resource)) &&
        (r[sizeof resource - 1] == '.' || r[sizeof resource - 1] == '\0')) {
        snprintf(buf, n, "%s%s", type, r + sizeof resource - 1);
        *expr = buf;
    }
}

/* Reports the first issue of d (and how many more there are). */
static void report_diag(struct imp_job *j, enum imp_where where, size_t pos, const char *type,
                        const char *id, const struct jk_diag *d, jk_rc rc)
{
    const struct jk_issue *is = d->head;
    char more[64] = "", buf[512];
    if (d->n_issues > 1) snprintf(more, sizeof more, " (and %zu more problems)", d->n_issues - 1);
    if (!is) {
        report(j, where, pos, type, id, NULL, "failed: %s", jk_rc_name(rc));
        return;
    }
    const char *msg = is->msg, *expr = is->expr;
    tidy_issue(type, &msg, &expr, buf, sizeof buf);
    report(j, where, pos, type, id, expr, "%s%s", msg, more);
}

/* Adds counts to the file and the totals. */
static void count(struct imp_job *j, size_t written, size_t unchanged, size_t rejected)
{
    struct imp *im = j->im;
    pthread_mutex_lock(&im->lock);
    j->file->n_written += written;
    j->file->n_unchanged += unchanged;
    j->file->n_rejected += rejected;
    im->n_written += written;
    im->n_unchanged += unchanged;
    im->n_rejected += rejected;
    pthread_mutex_unlock(&im->lock);
}

/* Moves the progress display to byte off of the unit. */
static void count_bytes(struct imp_job *j, size_t off)
{
    size_t n = (off < j->unit->end ? off : j->unit->end) - j->unit->off;
    if (n <= j->bytes_counted) return;
    pthread_mutex_lock(&j->im->lock);
    j->im->bytes_done += n - j->bytes_counted;
    pthread_mutex_unlock(&j->im->lock);
    j->bytes_counted = n;
}

/* Whether p starts with the UTF-8 byte order mark, which some editors write. */
static int has_bom(const void *p, size_t n)
{
    return n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3);
}

/* ---- unchanged resources ---- */

/* Whether body, the stored current version of w's resource, has the content w would write:
 * everything but meta.versionId and meta.lastUpdated. rest.c stores resourceType, id and the
 * two stamps first and then the members w->meta_rest and w->rest as prepared; a stored text
 * of any other shape compares unequal, which costs a new version and nothing else. */
static int is_same_content(const struct jk_fhir_write *w, const char *body, size_t len)
{
    char head[200];
    int n = snprintf(head, sizeof head, "{\"resourceType\":\"%s\",\"id\":\"%s\",\"meta\":{",
                     w->type, w->id);
    if (n <= 0 || (size_t)n >= sizeof head || len < (size_t)n || memcmp(body, head, (size_t)n))
        return 0;
    const char *p = body + n, *end = body + len;
    static const char version[] = "\"versionId\":\"", updated[] = "\",\"lastUpdated\":\"";
    if ((size_t)(end - p) < sizeof version - 1 || memcmp(p, version, sizeof version - 1)) return 0;
    p += sizeof version - 1;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    if ((size_t)(end - p) < sizeof updated - 1 || memcmp(p, updated, sizeof updated - 1)) return 0;
    p = memchr(p + sizeof updated - 1, '"', (size_t)(end - p - (sizeof updated - 1)));
    if (!p) return 0;
    p++;
    /* The rest is [","] meta_rest [","] rest, where meta_rest ends meta with its "}". */
    int has_meta_rest = w->meta_rest_len > 1, has_rest = w->rest_len > 1;
    if (has_meta_rest && (p >= end || *p++ != ',')) return 0;
    if ((size_t)(end - p) < w->meta_rest_len || memcmp(p, w->meta_rest, w->meta_rest_len)) return 0;
    p += w->meta_rest_len;
    if (has_rest && (p >= end || *p++ != ',')) return 0;
    return (size_t)(end - p) == w->rest_len && !memcmp(p, w->rest, w->rest_len);
}

/* Whether the current version of w's resource (w->id set, w prepared) already has its
 * content. Read outside any transaction: a write that races this check is ordered after it. */
static int is_unchanged_in_store(struct imp_job *j, struct jk_fhir_write *w)
{
    jk_conn *c = jk_store_conn(j->im->db);
    struct jk_res cur;
    if (!c || jk_res_read(c, w->arena, w->type, w->id, &cur)) return 0;
    /* Sealed values differ at every sealing (a fresh IV): compare what they hold. */
    static const unsigned all = JK_SHOW_IDENTITY | JK_SHOW_PHONE;
    struct jk_fhir_write clear = *w;
    const char *body;
    size_t len;
    if (jk_protect_view(w->arena, cur.body, cur.body_len, all, &body, &len) ||
        jk_protect_view(w->arena, w->rest, w->rest_len, all, &clear.rest, &clear.rest_len) ||
        jk_protect_view(w->arena, w->meta_rest, w->meta_rest_len, all, &clear.meta_rest,
                        &clear.meta_rest_len))
        return 0;
    return is_same_content(&clear, body, len);
}

/* ---- resources one by one: NDJSON lines, collection entries, single resources ---- */

struct imp_item {
    struct jk_fhir_write w;
    struct jk_diag d;
    struct jk_fhir_criteria cond;
    enum jk_fhir_write_kind kind;
    struct json_object *res; /* owned when is_owned (an NDJSON line) */
    int is_owned;
    size_t pos;
};

/* Resources written together in one store transaction. */
struct imp_batch {
    struct imp_job *job;
    struct jk_arena *arena; /* reset after every transaction */
    enum imp_where where;
    struct imp_item items[IMP_CHUNK_RESOURCES];
    size_t n, bytes;
};

static jk_rc batch_tx(jk_conn *c, void *arg)
{
    struct imp_batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        jk_rc rc = jk_fhir_write_tx(c, &b->items[i].w);
        if (rc) return rc;
    }
    return JK_OK;
}

/* Makes an item ready to run (again): a transaction that failed may have changed it. */
static void item_reset(void *arg)
{
    struct imp_item *it = arg;
    jk_diag_init(&it->d, it->d.arena);
    it->w.kind = it->kind;
    it->w.status = 0;
}

/* Runs fn(arg) in a transaction, again when it lost a race with another writer (409). */
static jk_rc run_tx(struct imp_job *j, jk_tx_fn fn, void *arg, void (*reset)(void *), void *rarg)
{
    jk_rc rc = JK_OK;
    for (int attempt = 0; attempt < IMP_MAX_ATTEMPTS; attempt++) {
        if (attempt) {
            reset(rarg);
            struct timespec ts = {0, (long)(1 + attempt * attempt) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if ((rc = jk_store_tx(j->im->db, fn, arg)) != JK_ECONFLICT) break;
    }
    return rc;
}

static void batch_reset(void *arg)
{
    struct imp_batch *b = arg;
    for (size_t i = 0; i < b->n; i++)
        item_reset(&b->items[i]);
}

/* Writes the batch in one transaction; when that fails, each resource on its own, so that
 * only the bad ones are refused and each is reported. */
static void batch_flush(struct imp_batch *b)
{
    struct imp_job *j = b->job;
    size_t written = 0, existing = 0, rejected = 0;
    if (b->n && run_tx(j, batch_tx, b, batch_reset, b)) {
        for (size_t i = 0; i < b->n; i++) {
            struct imp_item *it = &b->items[i];
            item_reset(it);
            jk_rc rc = run_tx(j, jk_fhir_write_tx, &it->w, item_reset, it);
            if (!rc) {
                it->w.status = it->w.status ? it->w.status : 201;
                continue;
            }
            report_diag(j, b->where, it->pos, it->w.type,
                        it->kind == JK_FHIR_UPDATE ? it->w.id : NULL, &it->d, rc);
            it->w.status = -1;
        }
    }
    for (size_t i = 0; i < b->n; i++) {
        struct imp_item *it = &b->items[i];
        if (it->w.status < 0)
            rejected++;
        else if (it->kind == JK_FHIR_CREATE && it->w.status == 200)
            existing++; /* the If-None-Exist condition found it */
        else
            written++;
        if (it->is_owned) json_object_put(it->res);
    }
    count(j, written, existing, rejected);
    b->n = 0;
    b->bytes = 0;
    jk_arena_reset(b->arena);
}

/* The search value that finds res again by its first identifier ("system|value" or
 * "value"), or NULL when it has none. In the arena. */
static const char *identifier_value(struct jk_arena *a, struct json_object *res)
{
    struct json_object *ids;
    if (!json_object_object_get_ex(res, "identifier", &ids) ||
        !json_object_is_type(ids, json_type_array))
        return NULL;
    for (size_t i = 0; i < json_object_array_length(ids); i++) {
        struct json_object *ident = json_object_array_get_idx(ids, i);
        const char *value = jk_json_str(ident, "value"), *system = jk_json_str(ident, "system");
        if (!value || !*value) continue;
        return system ? jk_arena_printf(a, "%s|%s", system, value) : value;
    }
    return NULL;
}

/* Checks and prepares one resource and adds it to the batch (or reports it). Takes over
 * res when is_owned. text_len is its size in the file, to bound a batch's memory. */
static void batch_add(struct imp_batch *b, struct json_object *res, int is_owned, size_t pos,
                      size_t text_len)
{
    struct imp_job *j = b->job;
    struct imp_item *it = &b->items[b->n];
    memset(it, 0, sizeof *it);
    jk_diag_init(&it->d, b->arena);
    it->res = res;
    it->is_owned = is_owned;
    it->pos = pos;
    const char *type = jk_json_str(res, "resourceType"), *id = jk_json_str(res, "id");
    jk_rc rc = JK_OK;
    if (!type || !jk_fhir_is_resource_type(type, strlen(type)))
        rc = jk_diag_add(&it->d, JK_EINVAL, "invalid", "resourceType",
                         "resourceType is missing or is not an R4 resource type");
    else if (id && !jk_fhir_id_ok(id))
        rc = jk_diag_add(&it->d, JK_EINVAL, "invalid", "id", "the id is not a valid FHIR id");
    else
        rc = jk_fhir_validate(res, &it->d);
    it->w = (struct jk_fhir_write){.kind = JK_FHIR_UPDATE,
                                   .type = type,
                                   .id = id,
                                   .res = res,
                                   .arena = b->arena,
                                   .diag = &it->d,
                                   .now_ms = jk_time_now_ms()};
    if (!rc && !id) {
        /* No id: find it again by identifier (conditional create), else a new resource. */
        const char *ident = identifier_value(b->arena, res);
        static const char *const keys[] = {"identifier"};
        it->w.kind = JK_FHIR_CREATE;
        if (ident && !(rc = jk_fhir_criteria_parse(b->arena, &it->d, keys, &ident, 1, &it->cond)))
            it->w.cond = &it->cond;
    }
    it->kind = it->w.kind;
    if (!rc) rc = jk_fhir_write_prepare(&it->w);
    if (rc) {
        report_diag(j, b->where, pos, type, id, &it->d, rc);
        count(j, 0, 0, 1);
        if (is_owned) json_object_put(res);
        return;
    }
    if (id && is_unchanged_in_store(j, &it->w)) {
        count(j, 0, 1, 0);
        if (is_owned) json_object_put(res);
        return;
    }
    b->bytes += text_len;
    if (++b->n == IMP_CHUNK_RESOURCES || b->bytes >= IMP_CHUNK_BYTES) batch_flush(b);
}

static struct imp_batch *batch_new(struct imp_job *j, enum imp_where where)
{
    struct imp_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->job = j;
    b->where = where;
    if (!(b->arena = jk_arena_new(1 << 20))) {
        free(b);
        return NULL;
    }
    return b;
}

static void batch_free(struct imp_batch *b)
{
    if (!b) return;
    batch_flush(b);
    jk_arena_free(b->arena);
    free(b);
}

/* ---- transaction and batch Bundles ---- */

/* fullUrl -> "Type/id" of the entries that are written with a known id, and conditional
 * reference -> "Type/id" of its one match ("" for none or several). */
struct imp_map {
    const char **keys, **values;
    size_t cap, n_used;
};

static size_t str_hash(const char *s)
{
    size_t h = 14695981039346656037u;
    while (*s)
        h = (h ^ (unsigned char)*s++) * 1099511628211u;
    return h;
}

static const char *map_get(const struct imp_map *m, const char *key)
{
    if (!m->cap) return NULL;
    for (size_t h = str_hash(key) & (m->cap - 1); m->keys[h]; h = (h + 1) & (m->cap - 1))
        if (!strcmp(m->keys[h], key)) return m->values[h];
    return NULL;
}

/* Adds key unless the table is half full (then lookups just miss). */
static void map_put(struct imp_map *m, const char *key, const char *value)
{
    if (2 * (m->n_used + 1) > m->cap) return;
    m->n_used++;
    size_t h = str_hash(key) & (m->cap - 1);
    while (m->keys[h] && strcmp(m->keys[h], key))
        h = (h + 1) & (m->cap - 1);
    m->keys[h] = key;
    m->values[h] = value;
}

/* s percent-encoded for a query string value (all but unreserved characters, ':' and '/'). */
static const char *query_encode(struct jk_arena *a, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = jk_arena_alloc(a, 3 * n + 1), *q = out;
    if (!out) return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            strchr("-._~:/", c)) {
            *q++ = (char)c;
        } else {
            *q++ = '%';
            *q++ = hex[c >> 4];
            *q++ = hex[c & 15];
        }
    }
    *q = '\0';
    return out;
}

/* The If-None-Exist query that finds res again by its first identifier, or NULL. */
static const char *if_none_exist(struct jk_arena *a, struct json_object *res)
{
    const char *ident = identifier_value(a, res);
    const char *v = ident ? query_encode(a, ident) : NULL; /* '|' becomes %7C */
    return v ? jk_arena_printf(a, "identifier=%s", v) : NULL;
}

static void set_str(struct json_object *obj, const char *key, const char *value)
{
    json_object_object_add(obj, key, json_object_new_string(value));
}

/* The Type/id an entry is about, for reports: from its resource, else its request url. */
static void entry_names(struct json_object *entry, struct jk_arena *a, const char **type,
                        const char **id)
{
    struct json_object *res = json_object_object_get(entry, "resource");
    *type = res ? jk_json_str(res, "resourceType") : NULL;
    *id = res ? jk_json_str(res, "id") : NULL;
    if (*type) return;
    const char *url = jk_json_str(json_object_object_get(entry, "request"), "url");
    if (!url) return;
    size_t n = strcspn(url, "/?");
    *type = jk_arena_strndup(a, url, n);
    if (url[n] == '/') *id = jk_arena_strndup(a, url + n + 1, strcspn(url + n + 1, "/?"));
}

/* The entry index named by an expression "Bundle.entry[N]...", or -1. */
static long expr_entry(const char *expr)
{
    static const char pre[] = "Bundle.entry[";
    if (!expr || strncmp(expr, pre, sizeof pre - 1)) return -1;
    char *end;
    long v = strtol(expr + sizeof pre - 1, &end, 10);
    return *end == ']' && v >= 0 ? v : -1;
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* A percent-decoded copy of p[0..n) (a query string key or value), in the arena. */
static char *query_decode(struct jk_arena *a, const char *p, size_t n)
{
    char *out = jk_arena_alloc(a, n + 1), *q = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hex_value(p[i + 1])) >= 0 &&
            (lo = hex_value(p[i + 2])) >= 0) {
            *q++ = (char)(hi * 16 + lo);
            i += 2;
        } else {
            *q++ = p[i] == '+' ? ' ' : p[i];
        }
    }
    *q = '\0';
    return out;
}

/* The id of the one current resource of type that the If-None-Exist query finds, or NULL
 * when none or several do (or the query is refused). Read outside the transaction, like the
 * unchanged check; the transaction searches again. */
static const char *if_none_exist_match(struct imp_job *j, struct jk_arena *a, const char *type,
                                       const char *query)
{
    enum { MAX_ARGS = 32 };
    const char *keys[MAX_ARGS], *values[MAX_ARGS];
    size_t n = 0;
    for (const char *p = query; *p && n < MAX_ARGS;) {
        size_t len = strcspn(p, "&"), klen = strcspn(p, "=");
        if (klen < len) {
            keys[n] = query_decode(a, p, klen);
            values[n] = query_decode(a, p + klen + 1, len - klen - 1);
            if (!keys[n] || !values[n]) return NULL;
            n++;
        }
        p += len + (p[len] == '&');
    }
    jk_conn *c = jk_store_conn(j->im->db);
    struct jk_diag d;
    jk_diag_init(&d, a);
    const char **ids;
    size_t n_ids = 0;
    if (!n || !c || jk_fhir_search_match(c, a, &d, type, keys, values, n, 2, &ids, &n_ids) ||
        n_ids != 1)
        return NULL;
    return ids[0];
}

struct imp_refs {
    struct imp_job *job;
    struct jk_arena *arena;
    struct imp_map *map;
};

/* What a reference stands for: a mapped fullUrl's "Type/id", or the one match of a
 * conditional reference (Type?query) searched now, or NULL to leave it as it is. */
static const char *ref_target(struct imp_refs *r, const char *ref)
{
    const char *to = map_get(r->map, ref), *q;
    if (to) return *to ? to : NULL;
    if (!(q = strchr(ref, '?')) || memchr(ref, '/', (size_t)(q - ref)) ||
        !jk_fhir_is_resource_type(ref, (size_t)(q - ref)))
        return NULL;
    const char *type = jk_arena_strndup(r->arena, ref, (size_t)(q - ref));
    const char *id = type ? if_none_exist_match(r->job, r->arena, type, q + 1) : NULL;
    to = id ? jk_arena_printf(r->arena, "%s/%s", type, id) : NULL;
    map_put(r->map, ref, to ? to : "");
    return to;
}

/* Replaces every Reference.reference in o whose target is known now by "Type/id". */
static void rewrite_refs(struct json_object *o, struct imp_refs *r)
{
    if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0, n = json_object_array_length(o); i < n; i++)
            rewrite_refs(json_object_array_get_idx(o, i), r);
        return;
    }
    if (!json_object_is_type(o, json_type_object)) return;
    json_object_object_foreach(o, k, v)
    {
        if (json_object_is_type(v, json_type_string)) {
            const char *ref = json_object_get_string(v), *to;
            if (!strcmp(k, "reference") && (!strncmp(ref, "urn:", 4) || strchr(ref, '?')) &&
                (to = ref_target(r, ref)))
                json_object_set_string(v, to);
        } else {
            rewrite_refs(v, r);
        }
    }
}

/* Applies the import rule to the n entries of a transaction or batch: a POST of a resource
 * with an id becomes PUT Type/id; a POST without id but with an identifier gets
 * If-None-Exist, and when that already finds a resource the entry is left out (skip[i]).
 * References to the fullUrls of these entries, and conditional references (Type?query) that
 * find one resource now, are rewritten to the Type/id they stand for, as the transaction
 * would store them, so that unchanged resources compare equal to what is stored. */
static void bundle_rewrite(struct imp_job *j, struct json_object *entries, size_t n,
                           struct jk_arena *a, unsigned char *skip)
{
    struct imp_map m = {NULL, NULL, 64, 0};
    while (m.cap < 4 * n)
        m.cap *= 2;
    m.keys = jk_arena_zalloc(a, m.cap * sizeof *m.keys);
    m.values = jk_arena_zalloc(a, m.cap * sizeof *m.values);
    if (!m.keys || !m.values) return; /* process it as it is */
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(entries, i), *req, *res;
        if (!json_object_object_get_ex(e, "request", &req) ||
            !json_object_is_type(req, json_type_object) ||
            !json_object_object_get_ex(e, "resource", &res) ||
            !json_object_is_type(res, json_type_object))
            continue;
        const char *method = jk_json_str(req, "method"), *type = jk_json_str(res, "resourceType");
        const char *id = jk_json_str(res, "id"), *full = jk_json_str(e, "fullUrl");
        const char *cond = jk_json_str(req, "ifNoneExist"), *url = NULL;
        if (!method || !type || strcmp(method, "POST")) continue;
        if (id && jk_fhir_id_ok(id) && !cond) {
            if (!(url = jk_arena_printf(a, "%s/%s", type, id))) continue;
            set_str(req, "method", "PUT");
            set_str(req, "url", url);
        } else if (!id || cond) {
            if (!cond && (cond = if_none_exist(a, res))) set_str(req, "ifNoneExist", cond);
            const char *found = cond ? if_none_exist_match(j, a, type, cond) : NULL;
            if (found && (url = jk_arena_printf(a, "%s/%s", type, found))) skip[i] = 1;
        }
        if (url && full && !strncmp(full, "urn:", 4) && !map_get(&m, full)) map_put(&m, full, url);
    }
    struct imp_refs r = {j, a, &m};
    for (size_t i = 0; i < n; i++)
        rewrite_refs(json_object_object_get(json_object_array_get_idx(entries, i), "resource"), &r);
}

/* Whether entry (already rewritten) is a PUT Type/id whose resource is stored as it is. */
static int is_unchanged_entry(struct imp_job *j, struct json_object *e, struct jk_arena *a)
{
    struct json_object *req = json_object_object_get(e, "request");
    struct json_object *res = json_object_object_get(e, "resource");
    const char *method = jk_json_str(req, "method"), *url = jk_json_str(req, "url");
    const char *type = jk_json_str(res, "resourceType"), *id = jk_json_str(res, "id");
    if (!method || strcmp(method, "PUT") || !url || !type || !id || jk_json_str(req, "ifMatch"))
        return 0;
    size_t tn = strlen(type);
    if (strncmp(url, type, tn) || url[tn] != '/' || strcmp(url + tn + 1, id)) return 0;
    jk_conn *c = jk_store_conn(j->im->db);
    int64_t version;
    int is_deleted;
    if (!c || jk_res_current_version(c, type, id, &version, &is_deleted) || !version || is_deleted)
        return 0;
    /* It exists: render what would be written and compare (validation comes later). */
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct jk_fhir_write w = {
        .kind = JK_FHIR_UPDATE, .type = type, .id = id, .res = res, .arena = a, .diag = &d};
    int is_unchanged = !jk_fhir_write_prepare(&w) && is_unchanged_in_store(j, &w);
    /* Preparing sealed the entry's numbers in place: open them again, for the Bundle's own
     * write refuses sealed values in what it is given (and seals them itself). */
    return jk_protect_unseal(res, &d) ? 0 : is_unchanged;
}

/* Counts and reports what the response Bundle of a batch says about each entry. */
static void batch_outcome(struct imp_job *j, const char *out, size_t out_len,
                          struct json_object *entries, const size_t *orig, struct jk_arena *a)
{
    struct json_object *resp = json_tokener_parse(out), *rents;
    (void)out_len;
    size_t written = 0, rejected = 0;
    if (!resp || !json_object_object_get_ex(resp, "entry", &rents)) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "the batch response cannot be read");
        json_object_put(resp);
        return;
    }
    for (size_t k = 0; k < json_object_array_length(rents); k++) {
        struct json_object *r =
            json_object_object_get(json_object_array_get_idx(rents, k), "response");
        const char *status = jk_json_str(r, "status");
        if (status && status[0] == '2') {
            written++;
            continue;
        }
        rejected++;
        const char *type, *id, *msg = NULL, *expr = NULL;
        entry_names(json_object_array_get_idx(entries, k), a, &type, &id);
        struct json_object *issues =
            json_object_object_get(json_object_object_get(r, "outcome"), "issue");
        if (issues && json_object_array_length(issues)) {
            struct json_object *is = json_object_array_get_idx(issues, 0);
            msg = jk_json_str(is, "diagnostics");
            struct json_object *ex = json_object_object_get(is, "expression");
            if (ex && json_object_array_length(ex))
                expr = json_object_get_string(json_object_array_get_idx(ex, 0));
        }
        char buf[512];
        tidy_issue(type, &msg, &expr, buf, sizeof buf);
        report(j, IMP_AT_ENTRY, orig[k], type, id, expr, "%s (status %s)", msg ? msg : "refused",
               status ? status : "missing");
    }
    count(j, written, 0, rejected);
    json_object_put(resp);
}

/* A prepared transaction or batch Bundle, waiting for its commit. */
struct imp_pending {
    struct imp_job job;
    struct jk_arena *arena;
    struct json_object *root;
    struct json_object *kept; /* the entries sent (owned by root) */
    size_t *orig;             /* kept index -> index in the file */
    size_t n, n_kept, bytes;
    int is_transaction, attempt;
    struct jk_diag diag;
    struct jk_bundle_ctx bx;
    struct jk_bundle_job *bjob;
    jk_rc tx_rc;
    struct imp_pending *next;
};

/* Bundles written in one store transaction, each in its own savepoint: a big commit writes
 * each B-tree page it touched once, where one commit per file would write most of them again
 * and again (random ids spread the index rows of every file over the whole index). */
struct imp_group {
    struct imp_pending *head, *tail;
    size_t n_resources, bytes;
    int is_done; /* under the worker's lock */
    jk_rc tx_rc;
    struct imp_worker *worker;
    struct imp_group *next;
};

/* A worker fills one group while the store commits the ones it handed over before, so that
 * it parses the next files while the writer works. */
struct imp_worker {
    struct imp *im;
    pthread_mutex_t lock;
    pthread_cond_t cond;           /* a group is done */
    struct imp_group *open;        /* being filled */
    struct imp_group *head, *tail; /* handed to the store, oldest first */
    size_t n_submitted;
};

static void unit_finished(struct imp_job *j);

static void pending_free(struct imp_pending *p)
{
    json_object_put(p->root);
    jk_arena_free(p->arena);
    free(p);
}

/* Reports and counts the outcome of a committed (or failed) Bundle. */
static void bundle_outcome(struct imp_pending *p, jk_rc rc, const char *out, size_t out_len)
{
    struct imp_job *j = &p->job;
    count(j, 0, p->n - p->n_kept, 0);
    if (!rc && p->is_transaction) {
        count(j, p->n_kept, 0, 0);
        return;
    }
    if (!rc) {
        batch_outcome(j, out, out_len, p->kept, p->orig, p->arena);
        return;
    }
    const struct jk_issue *is = p->diag.head;
    long k = is ? expr_entry(is->expr) : -1;
    if (k >= 0 && (size_t)k < p->n_kept) {
        const char *type, *id;
        entry_names(json_object_array_get_idx(p->kept, (size_t)k), p->arena, &type, &id);
        report_diag(j, IMP_AT_ENTRY, p->orig[k], type, id, &p->diag, rc);
    } else {
        report_diag(j, IMP_AT_FILE, 0, NULL, NULL, &p->diag, rc);
    }
    count(j, 0, 0, p->n_kept);
}

static void import_json(struct imp_job *j, struct imp_worker *w, int attempt);

/* After the commit: the response, the report, and another attempt when the transaction
 * lost a race with another file (409: PostgreSQL, two files with the same resource). */
static void bundle_end(struct imp_pending *p)
{
    const char *out = NULL;
    size_t out_len = 0;
    jk_rc rc = jk_fhir_bundle_finish(p->bjob, p->tx_rc, &out, &out_len);
    if (rc == JK_ECONFLICT && p->attempt + 1 < IMP_MAX_ATTEMPTS) {
        struct imp_job j = p->job;
        int attempt = p->attempt + 1;
        pending_free(p);
        struct timespec ts = {0, (long)(attempt * attempt) * 5000000L};
        nanosleep(&ts, NULL);
        import_json(&j, NULL, attempt); /* parses the file again, waits for the commit */
        return;
    }
    bundle_outcome(p, rc, out, out_len);
    struct imp_job j = p->job;
    pending_free(p);
    unit_finished(&j);
}

static const char sql_savepoint[] = "SAVEPOINT jk_import",
                  sql_rollback_to[] = "ROLLBACK TO SAVEPOINT jk_import",
                  sql_release[] = "RELEASE SAVEPOINT jk_import";

/* The transaction of a group: a Bundle that fails undoes only itself. */
static jk_rc group_tx(jk_conn *c, void *arg)
{
    struct imp_group *g = arg;
    for (struct imp_pending *p = g->head; p; p = p->next) {
        jk_rc rc = jk_conn_exec(c, sql_savepoint);
        if (rc) return rc;
        p->tx_rc = jk_fhir_bundle_tx(c, p->bjob);
        if (p->tx_rc && jk_conn_exec(c, sql_rollback_to)) return JK_EDB;
        if (jk_conn_exec(c, sql_release)) return JK_EDB;
    }
    return JK_OK;
}

static void group_done(void *arg, jk_rc rc)
{
    struct imp_group *g = arg;
    pthread_mutex_lock(&g->worker->lock);
    g->tx_rc = rc;
    g->is_done = 1;
    pthread_cond_broadcast(&g->worker->cond);
    pthread_mutex_unlock(&g->worker->lock);
}

/* Waits for the oldest group w handed over and ends each of its Bundles. */
static void worker_finish_oldest(struct imp_worker *w)
{
    pthread_mutex_lock(&w->lock);
    struct imp_group *g = w->head;
    while (!g->is_done)
        pthread_cond_wait(&w->cond, &w->lock);
    w->head = g->next;
    if (!w->head) w->tail = NULL;
    w->n_submitted--;
    pthread_mutex_unlock(&w->lock);
    for (struct imp_pending *p = g->head, *next; p; p = next) {
        next = p->next;
        if (g->tx_rc && !p->tx_rc) p->tx_rc = g->tx_rc; /* the commit itself failed */
        bundle_end(p);
    }
    free(g);
}

/* Hands w's open group to the store, after waiting for an older one if too many are out. */
static void worker_submit(struct imp_worker *w)
{
    struct imp_group *g = w->open;
    if (!g) return;
    w->open = NULL;
    while (w->n_submitted >= IMP_MAX_GROUPS)
        worker_finish_oldest(w);
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = g;
    else
        w->head = g;
    w->tail = g;
    w->n_submitted++;
    pthread_mutex_unlock(&w->lock);
    jk_store_tx_async(w->im->db, group_tx, g, group_done, g);
}

/* Adds a prepared Bundle to w's open group, and hands the group over when the store is done
 * with the previous one or the group is big enough. Returns -1 when out of memory (p is
 * untouched then). */
static int worker_add(struct imp_worker *w, struct imp_pending *p)
{
    struct imp_group *g = w->open;
    if (!g) {
        if (!(g = calloc(1, sizeof *g))) return -1;
        g->worker = w;
        w->open = g;
    }
    if (g->tail)
        g->tail->next = p;
    else
        g->head = p;
    g->tail = p;
    g->n_resources += p->n_kept;
    g->bytes += p->bytes;
    /* As soon as the store is done with the group before, so that the writer never waits for
     * a full one: a group is what gathered during the previous commit, within limits. */
    pthread_mutex_lock(&w->lock);
    int is_store_idle = !w->head || w->head->is_done;
    pthread_mutex_unlock(&w->lock);
    if (is_store_idle || g->n_resources >= IMP_GROUP_RESOURCES || g->bytes >= w->im->group_bytes)
        worker_submit(w);
    return 0;
}

/* Hands over the open group and waits for every group of w. */
static void worker_drain(struct imp_worker *w)
{
    worker_submit(w);
    while (w->n_submitted)
        worker_finish_oldest(w);
}

/* Applies the import rule to a transaction or batch Bundle, leaves out what is stored
 * already, prepares the rest and hands it to the store: asynchronously through w, or (w
 * NULL) waiting for the commit. Takes over root and a. */
static void bundle_start(struct imp_job *j, struct imp_worker *w, struct json_object *root,
                         struct jk_arena *a, int is_transaction, int attempt)
{
    struct imp_pending *p = calloc(1, sizeof *p);
    struct json_object *entries;
    if (!p) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "out of memory");
        json_object_put(root);
        jk_arena_free(a);
        unit_finished(j);
        return;
    }
    *p = (struct imp_pending){.job = *j,
                              .arena = a,
                              .root = root,
                              .is_transaction = is_transaction,
                              .attempt = attempt,
                              .bytes = j->len};
    jk_diag_init(&p->diag, a);
    if (!json_object_object_get_ex(root, "entry", &entries) ||
        !json_object_is_type(entries, json_type_array) ||
        !(p->n = json_object_array_length(entries))) {
        pending_free(p); /* nothing to do */
        unit_finished(j);
        return;
    }
    unsigned char *skip = jk_arena_zalloc(a, p->n);
    p->orig = jk_arena_alloc(a, p->n * sizeof *p->orig);
    p->kept = json_object_new_array();
    if (!skip || !p->orig || !p->kept) {
        json_object_put(p->kept);
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "out of memory");
        pending_free(p);
        unit_finished(j);
        return;
    }
    bundle_rewrite(j, entries, p->n, a, skip);
    for (size_t i = 0; i < p->n; i++) {
        struct json_object *e = json_object_array_get_idx(entries, i);
        if (skip[i] || is_unchanged_entry(j, e, a)) continue;
        json_object_array_add(p->kept, json_object_get(e));
        p->orig[p->n_kept++] = i;
    }
    json_object_object_add(root, "entry", p->kept); /* frees the old array, not kept entries */
    p->bx = (struct jk_bundle_ctx){.db = j->im->db,
                                   .arena = a,
                                   .diag = &p->diag,
                                   .base_url = j->im->base_url,
                                   .now_ms = jk_time_now_ms(),
                                   .prefer = JK_BUNDLE_RETURN_MINIMAL,
                                   .json_limits = &j->im->lim};
    jk_rc rc = p->n_kept ? jk_fhir_bundle_prepare(&p->bx, root, &p->bjob) : JK_OK;
    if (rc || !p->n_kept) {
        bundle_outcome(p, rc, NULL, 0);
        struct imp_job done = p->job;
        pending_free(p);
        unit_finished(&done);
        return;
    }
    if (!w || worker_add(w, p)) {
        p->tx_rc = jk_store_tx(j->im->db, jk_fhir_bundle_tx, p->bjob);
        bundle_end(p);
    }
}

/* A .json file: a Bundle or a single resource. Transaction and batch Bundles go on through
 * w (or, w NULL, are waited for); the rest is finished here. */
static void import_json(struct imp_job *j, struct imp_worker *w, int attempt)
{
    struct imp *im = j->im;
    struct jk_arena *a = NULL;
    struct json_object *root = NULL;
    void *map = NULL;
    int fd = open(j->file->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "cannot read: %s", strerror(errno));
        goto done;
    }
    j->len = (size_t)st.st_size;
    if (!j->len) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "the file is empty");
        goto done;
    }
    if (j->len > IMP_MAX_JSON_BYTES) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL,
               "the file has %zu bytes; a .json file may have at most %zu (use NDJSON)", j->len,
               IMP_MAX_JSON_BYTES);
        goto done;
    }
    if ((map = mmap(NULL, j->len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        map = NULL;
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "cannot read: %s", strerror(errno));
        goto done;
    }
    if (!(a = jk_arena_new(1 << 20))) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "out of memory");
        goto done;
    }
    struct jk_diag d;
    jk_diag_init(&d, a);
    size_t skip = has_bom(map, j->len) ? 3 : 0;
    jk_rc rc = jk_json_parse((const char *)map + skip, j->len - skip, &im->lim, &d, &root);
    munmap(map, j->len); /* json-c made copies */
    map = NULL;
    close(fd);
    fd = -1;
    if (rc) {
        report_diag(j, IMP_AT_FILE, 0, NULL, NULL, &d, rc);
        goto done;
    }
    count_bytes(j, j->len); /* the time left is estimated from the bytes parsed */
    const char *rtype = jk_json_str(root, "resourceType");
    const char *btype = rtype && !strcmp(rtype, "Bundle") ? jk_json_str(root, "type") : NULL;
    if (btype && (!strcmp(btype, "transaction") || !strcmp(btype, "batch"))) {
        bundle_start(j, w, root, a, !strcmp(btype, "transaction"), attempt);
        return;
    }
    if (btype && (!strcmp(btype, "collection") || !strcmp(btype, "searchset"))) {
        struct imp_batch *b = batch_new(j, IMP_AT_ENTRY);
        struct json_object *entries;
        if (!b) {
            report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "out of memory");
        } else if (json_object_object_get_ex(root, "entry", &entries) &&
                   json_object_is_type(entries, json_type_array)) {
            for (size_t i = 0; i < json_object_array_length(entries); i++) {
                struct json_object *e = json_object_array_get_idx(entries, i), *res;
                if (json_object_object_get_ex(e, "resource", &res) &&
                    json_object_is_type(res, json_type_object)) {
                    batch_add(b, res, 0, i, 0);
                } else {
                    report(j, IMP_AT_ENTRY, i, NULL, NULL, NULL, "the entry has no resource");
                    count(j, 0, 0, 1);
                }
            }
        }
        batch_free(b);
    } else {
        /* Any other resource, including Bundles of other types, is stored as it is. */
        struct imp_batch *b = batch_new(j, IMP_AT_FILE);
        if (b)
            batch_add(b, root, 0, 0, 0);
        else
            report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "out of memory");
        batch_free(b);
    }
done:
    if (map) munmap(map, j->len);
    if (fd >= 0) close(fd);
    json_object_put(root);
    jk_arena_free(a);
    unit_finished(j);
}

/* The NDJSON lines that start in [unit->off, unit->end), one resource each. */
static void import_ndjson(struct imp_job *j)
{
    const char *p = j->data + j->unit->off, *end = j->data + j->len;
    const char *stop = j->data + (j->unit->end < j->len ? j->unit->end : j->len);
    if (j->unit->off > 0) { /* the line that crosses off belongs to the unit before */
        const char *nl = memchr(p - 1, '\n', (size_t)(end - p + 1));
        p = nl ? nl + 1 : end;
    } else if (has_bom(p, j->len)) {
        p += 3;
    }
    struct imp_batch *b = batch_new(j, IMP_AT_LINE);
    if (!b) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "out of memory");
        return;
    }
    size_t max_line = (size_t)j->im->cfg->max_body_bytes;
    while (p < stop) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *le = nl ? nl : end;
        size_t off = (size_t)(p - j->data), n = (size_t)(le - p);
        while (n && strchr(" \t\r", p[n - 1]))
            n--;
        const char *next = nl ? nl + 1 : end;
        if (!n) {
            p = next;
            continue;
        }
        if (n > max_line) {
            report(j, IMP_AT_LINE, off, NULL, NULL, NULL,
                   "the line has %zu bytes; the limit is max_body_bytes = %zu", n, max_line);
            count(j, 0, 0, 1);
            p = next;
            continue;
        }
        struct jk_diag d;
        jk_diag_init(&d, b->arena);
        struct json_object *res = NULL;
        jk_rc rc = jk_json_parse(p, n, &j->im->lim, &d, &res);
        if (rc) {
            report_diag(j, IMP_AT_LINE, off, NULL, NULL, &d, rc);
            count(j, 0, 0, 1);
        } else {
            batch_add(b, res, 1, off, n);
        }
        p = next;
        if (!b->n) count_bytes(j, (size_t)(p - j->data)); /* after each transaction */
    }
    batch_free(b);
}

/* An NDJSON unit, start to finish. */
static void run_ndjson_unit(struct imp_job *j)
{
    int fd = open(j->file->path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    void *map = NULL;
    if (fd < 0 || fstat(fd, &st)) {
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "cannot read: %s", strerror(errno));
    } else if ((j->len = (size_t)st.st_size) &&
               (map = mmap(NULL, j->len, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        map = NULL;
        report(j, IMP_AT_FILE, 0, NULL, NULL, NULL, "cannot read: %s", strerror(errno));
    } else {
        j->data = map ? map : "";
        if (map) madvise(map, j->len, MADV_SEQUENTIAL);
        j->line_off = 0;
        j->line_no = 1;
        import_ndjson(j);
    }
    if (map) munmap(map, j->len);
    if (fd >= 0) close(fd);
    unit_finished(j);
}

/* ---- progress ---- */

static void fmt_count(char *out, size_t n, size_t v)
{
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%zu", v);
    size_t k = 0;
    for (int i = 0; i < len && k + 2 < n; i++) {
        if (i && (len - i) % 3 == 0) out[k++] = ',';
        out[k++] = digits[i];
    }
    out[k] = '\0';
}

static void fmt_duration(char *out, size_t n, double s)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(out, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(out, n, "%ld:%02ld", t / 60, t % 60);
}

/* Draws the progress line in place. Under im->lock. */
static void draw_bar(struct imp *im, int64_t now_us)
{
    double elapsed = (double)(now_us - im->t0_us) / 1e6;
    double frac = im->bytes_total ? (double)im->bytes_done / (double)im->bytes_total : 1;
    size_t n_res = im->n_written + im->n_unchanged;
    char bar[20], res[32], rate[32], el[32], left[32] = "--:--", failed[48] = "", line[300];
    int cells = (int)(frac * 16);
    for (int i = 0; i < 16; i++)
        bar[i] = i < cells ? '#' : '.';
    bar[16] = '\0';
    fmt_count(res, sizeof res, n_res);
    fmt_count(rate, sizeof rate, elapsed > 0.05 ? (size_t)((double)n_res / elapsed) : 0);
    fmt_duration(el, sizeof el, elapsed);
    if (frac > 0.001 && elapsed > 0.2) fmt_duration(left, sizeof left, elapsed * (1 - frac) / frac);
    if (im->files_failed) snprintf(failed, sizeof failed, " (%zu failed)", im->files_failed);
    int n = snprintf(line, sizeof line, "[%s] %zu/%zu files%s  %s resources  %s/s  %s, %s left",
                     bar, im->files_done, im->n_files, failed, res, rate, el, left);
    struct winsize ws;
    size_t cols = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col ? ws.ws_col : 80;
    if (n > 0 && (size_t)n >= cols) line[cols - 1] = '\0';
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    im->is_bar_drawn = 1;
    im->drawn_us = now_us;
}

/* A unit is done: counts it, and when it was the file's last, the file. Under im->lock. */
static void unit_done(struct imp *im, const struct imp_unit *u, size_t bytes_counted, int is_failed)
{
    struct imp_file *f = &im->files[u->file];
    f->is_failed |= is_failed;
    im->bytes_done += u->end - u->off - bytes_counted;
    if (u->phase == 0) im->n_phase0_left--;
    if (--f->n_units_left) return;
    im->files_done++;
    if (f->is_failed) im->files_failed++;
    if (im->is_tty) return;
    char w[32], un[32];
    fmt_count(w, sizeof w, f->n_written);
    fmt_count(un, sizeof un, f->n_unchanged);
    fprintf(stderr, "%s: %s, %s written, %s unchanged%s (%.2f s)\n", f->path,
            f->is_failed ? "FAILED" : "ok", w, un, f->n_rejected ? ", some refused" : "",
            (double)(jk_time_mono_us() - f->started_us) / 1e6);
    fflush(stderr);
}

/* Counts a unit as done (and its file, when it was the last). */
static void unit_finished(struct imp_job *j)
{
    struct imp *im = j->im;
    pthread_mutex_lock(&im->lock);
    unit_done(im, j->unit, j->bytes_counted, j->is_failed);
    pthread_cond_broadcast(&im->cond);
    pthread_mutex_unlock(&im->lock);
}

static void *worker_main(void *arg)
{
    struct imp_worker *w = arg;
    struct imp *im = w->im;
    /* The store's single writer is what limits the rate: workers that parse the next files
     * must not take its processor (a thread's nice value is its own on Linux). */
    setpriority(PRIO_PROCESS, (id_t)gettid(), IMP_WORKER_NICE);
    for (;;) {
        pthread_mutex_lock(&im->lock);
        int is_waiting = im->next_unit < im->n_units && im->units[im->next_unit].phase > 0 &&
                         im->n_phase0_left > 0;
        if (is_waiting && (w->open || w->n_submitted)) { /* maybe the units waited for */
            pthread_mutex_unlock(&im->lock);
            worker_drain(w);
            continue;
        }
        while (im->next_unit < im->n_units && im->units[im->next_unit].phase > 0 &&
               im->n_phase0_left > 0)
            pthread_cond_wait(&im->cond, &im->lock);
        if (im->next_unit >= im->n_units) {
            pthread_mutex_unlock(&im->lock);
            break;
        }
        const struct imp_unit *u = &im->units[im->next_unit++];
        struct imp_job j = {.im = im, .file = &im->files[u->file], .unit = u};
        if (!j.file->started_us) j.file->started_us = jk_time_mono_us();
        pthread_mutex_unlock(&im->lock);
        if (j.file->format == IMP_NDJSON)
            run_ndjson_unit(&j);
        else
            import_json(&j, w, 0);
    }
    worker_drain(w);
    pthread_mutex_lock(&im->lock);
    im->n_workers_running--;
    pthread_cond_broadcast(&im->cond);
    pthread_mutex_unlock(&im->lock);
    return NULL;
}

/* ---- finding the files ---- */

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n > k && !strcasecmp(s + n - k, suffix);
}

static int add_file(struct imp *im, const char *path, size_t bytes)
{
    if (im->n_files == IMP_MAX_FILES) {
        fprintf(stderr, "jiankang: more than %d files to import\n", IMP_MAX_FILES);
        return -1;
    }
    if (im->n_files == im->cap_files) {
        size_t cap = im->cap_files ? im->cap_files * 2 : 64;
        struct imp_file *nf = realloc(im->files, cap * sizeof *nf);
        if (!nf) return -1;
        im->files = nf;
        im->cap_files = cap;
    }
    struct imp_file *f = &im->files[im->n_files];
    memset(f, 0, sizeof *f);
    if (!(f->path = strdup(path))) return -1;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    f->format = has_suffix(path, ".ndjson") || has_suffix(path, ".jsonl") ? IMP_NDJSON : IMP_JSON;
    /* Synthea writes the Organizations and Practitioners that patient bundles refer to by
     * condition into these two files; they must be there first. */
    f->phase =
        !strncmp(base, "hospitalInformation", 19) || !strncmp(base, "practitionerInformation", 23)
            ? 0
            : 1;
    f->bytes = bytes;
    im->n_files++;
    return 0;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the *.json and *.ndjson files under dir (hidden ones skipped), in name order. */
static int walk(struct imp *im, const char *dir, int depth)
{
    if (depth > IMP_MAX_DEPTH) {
        fprintf(stderr, "%s: directories nest deeper than %d; not imported\n", dir, IMP_MAX_DEPTH);
        im->n_missing++;
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "%s: cannot read the directory: %s\n", dir, strerror(errno));
        im->n_missing++;
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int r = 0;
    struct dirent *de;
    while (!r && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                r = -1;
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name)))
            r = -1;
        else
            n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;
        if (!r && snprintf(path, sizeof path, "%s/%s", dir, names[i]) < (int)sizeof path &&
            !lstat(path, &st)) {
            if (S_ISDIR(st.st_mode))
                r = walk(im, path, depth + 1);
            else if ((has_suffix(names[i], ".json") || has_suffix(names[i], ".ndjson")) &&
                     !stat(path, &st) && S_ISREG(st.st_mode))
                r = add_file(im, path, (size_t)st.st_size);
        }
        free(names[i]);
    }
    free(names);
    return r;
}

static int cmp_units(const void *a, const void *b)
{
    const struct imp_unit *x = a, *y = b;
    if (x->phase != y->phase) return x->phase < y->phase ? -1 : 1;
    size_t nx = x->end - x->off, ny = y->end - y->off; /* largest first: a short tail */
    if (nx != ny) return nx > ny ? -1 : 1;
    if (x->file != y->file) return x->file < y->file ? -1 : 1;
    return x->off < y->off ? -1 : x->off > y->off;
}

/* Splits the files into units, in the order they are handed out. */
static int plan_units(struct imp *im)
{
    size_t n = 0;
    for (size_t i = 0; i < im->n_files; i++) {
        struct imp_file *f = &im->files[i];
        f->n_units_left = f->format == IMP_NDJSON && f->bytes > IMP_UNIT_BYTES
                              ? (f->bytes + IMP_UNIT_BYTES - 1) / IMP_UNIT_BYTES
                              : 1;
        n += f->n_units_left;
        im->bytes_total += f->bytes;
    }
    if (!(im->units = calloc(n ? n : 1, sizeof *im->units))) return -1;
    for (size_t i = 0; i < im->n_files; i++) {
        struct imp_file *f = &im->files[i];
        for (size_t k = 0; k < f->n_units_left; k++) {
            struct imp_unit *u = &im->units[im->n_units++];
            u->file = i;
            u->phase = f->phase;
            u->off = k * IMP_UNIT_BYTES;
            u->end = f->n_units_left == 1 ? f->bytes : u->off + IMP_UNIT_BYTES;
            if (u->end > f->bytes) u->end = f->bytes;
            if (!u->phase) im->n_phase0_left++;
        }
    }
    qsort(im->units, im->n_units, sizeof *im->units, cmp_units);
    return 0;
}

/* ---- the command ---- */

static void summary(struct imp *im, const char *backend, int64_t now_us)
{
    double secs = (double)(now_us - im->t0_us) / 1e6;
    size_t n_res = im->n_written + im->n_unchanged;
    char w[32], un[32], rj[32], rate[32];
    fmt_count(w, sizeof w, im->n_written);
    fmt_count(un, sizeof un, im->n_unchanged);
    fmt_count(rj, sizeof rj, im->n_rejected);
    fmt_count(rate, sizeof rate, secs > 0 ? (size_t)((double)n_res / secs) : n_res);
    printf("files:     %zu imported, %zu failed\n"
           "resources: %s written, %s unchanged, %s refused\n"
           "time:      %.2f s, %s resources/s (%s)\n",
           im->files_done - im->files_failed, im->files_failed + im->n_missing, w, un, rj, secs,
           rate, backend);
    fflush(stdout);
}

static int open_db(struct imp *im)
{
    char err[JK_PROTECT_ERR];
    if (jk_protect_start(im->cfg->keys, err, sizeof err) || /* identity numbers are sealed */
        jk_idnum_init(NULL, err, sizeof err) ||             /* and checked */
        jk_mpi_start(err, sizeof err)) {                    /* and Patients linked to persons */
        fprintf(stderr, "jiankang: %s\n", err);
        return -1;
    }
    if (jk_store_open(im->cfg->db, &im->db, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        return -1;
    }
    if (jk_store_migrate(im->db, NULL)) {
        fprintf(stderr, "jiankang: the database migration failed (see the log above)\n");
        jk_store_close(im->db);
        im->db = NULL;
        return -1;
    }
    return 0;
}

int jk_cli_import(const struct jk_config *cfg, char *const *paths, int n_paths, long jobs)
{
    struct imp im = {.cfg = cfg,
                     .lim = {(int)cfg->max_json_depth, (size_t)cfg->max_array},
                     .lock = PTHREAD_MUTEX_INITIALIZER,
                     .cond = PTHREAD_COND_INITIALIZER};
    if (cfg->base_url[0])
        snprintf(im.base_url, sizeof im.base_url, "%s", cfg->base_url);
    else
        snprintf(im.base_url, sizeof im.base_url, "http://%s", cfg->listen);
    int status = 1;
    for (int i = 0; i < n_paths; i++) {
        struct stat st;
        if (stat(paths[i], &st)) {
            fprintf(stderr, "%s: %s\n", paths[i], strerror(errno));
            im.n_missing++;
        } else if (S_ISDIR(st.st_mode)) {
            size_t before = im.n_files;
            if (walk(&im, paths[i], 0)) goto out;
            if (im.n_files == before)
                fprintf(stderr, "%s: no .json or .ndjson files in this directory\n", paths[i]);
        } else if (add_file(&im, paths[i], (size_t)st.st_size)) {
            goto out;
        }
    }
    if (plan_units(&im) || open_db(&im)) goto out;

    long n_threads = jobs > 0 ? jobs : sysconf(_SC_NPROCESSORS_ONLN);
    if (n_threads < 1) n_threads = 1;
    if ((size_t)n_threads > im.n_units) n_threads = im.n_units ? (long)im.n_units : 1;
    /* Each worker has one group open and at most IMP_MAX_GROUPS handed over. */
    im.group_bytes = IMP_INFLIGHT_BYTES / (size_t)n_threads / (1 + IMP_MAX_GROUPS);
    if (im.group_bytes < IMP_MIN_GROUP_BYTES) im.group_bytes = IMP_MIN_GROUP_BYTES;
    pthread_t *threads = calloc((size_t)n_threads, sizeof *threads);
    struct imp_worker *workers = calloc((size_t)n_threads, sizeof *workers);
    if (!threads || !workers) {
        free(threads);
        free(workers);
        goto out;
    }
    im.is_tty = isatty(STDERR_FILENO);
    im.t0_us = jk_time_mono_us();
    pthread_mutex_lock(&im.lock);
    for (long i = 0; i < n_threads; i++) {
        struct imp_worker *w = &workers[i];
        w->im = &im;
        pthread_mutex_init(&w->lock, NULL);
        pthread_cond_init(&w->cond, NULL);
        if (pthread_create(&threads[i], NULL, worker_main, w)) break;
        im.n_workers_running++;
    }
    size_t n_started = im.n_workers_running;
    while (im.n_workers_running) {
        if (im.is_tty) {
            int64_t now = jk_time_mono_us();
            if (now - im.drawn_us >= IMP_REDRAW_US) draw_bar(&im, now);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += IMP_REDRAW_US * 1000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&im.cond, &im.lock, &ts);
    }
    if (im.is_tty) {
        draw_bar(&im, jk_time_mono_us());
        fputc('\n', stderr);
        im.is_bar_drawn = 0;
    }
    pthread_mutex_unlock(&im.lock);
    for (size_t i = 0; i < n_started; i++) {
        pthread_join(threads[i], NULL);
        pthread_mutex_destroy(&workers[i].lock);
        pthread_cond_destroy(&workers[i].cond);
    }
    free(threads);
    free(workers);
    if (!n_started && im.n_units) {
        fprintf(stderr, "jiankang: cannot start the import threads\n");
        goto out;
    }
    const char *backend = jk_store_backend(im.db); /* static storage */
    jk_store_close(im.db);                         /* waits until every commit is durable */
    im.db = NULL;
    summary(&im, backend, jk_time_mono_us());
    status = im.files_failed || im.n_missing ? 1 : 0;
out:
    jk_store_close(im.db);
    for (size_t i = 0; i < im.n_files; i++)
        free(im.files[i].path);
    free(im.files);
    free(im.units);
    return status;
}
