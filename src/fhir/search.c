/* search.c - FHIR search: parameters parsed into conditions, conditions turned into one SQL
 * query over the index tables, keyset paging, _include/_revinclude, and the searchset
 * Bundle. docs/internals/search.md ("Queries", "Query plans") explains the SQL. */
#include "fhir/search.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/model.h"
#include "fhir/searchparam.h"
#include "fhir/searchparam_int.h"
#include "fhir/validate.h"

#define MAX_SQL_BYTES (256 * 1024) /* one query's text */
#define MAX_SQL_ARGS  4000         /* one query's parameters */
#define PROBE_LIMIT   1000         /* a condition matching fewer drives the query */
#define PROBE_ENOUGH  100          /* ... and one matching fewer ends the probing */
#define MAX_PROBES    4            /* conditions probed */
#define MAX_BUNDLE    (256u << 20) /* bytes of one rendered Bundle */
#define SUBSETTED_TAG                                                                              \
    "{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-ObservationValue\","                   \
    "\"code\":\"SUBSETTED\",\"display\":\"subsetted\"}"

/* ---- the parsed search ---- */

enum prefix { P_EQ, P_NE, P_GT, P_LT, P_GE, P_LE, P_SA, P_EB, P_AP };
static const char *const prefix_names[] = {"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"};

enum mod {
    M_NONE,
    M_EXACT,
    M_CONTAINS,
    M_MISSING,
    M_NOT,
    M_TEXT,
    M_OF_TYPE,
    M_IDENTIFIER,
    M_TYPE, /* reference:[type] */
    M_BELOW,
    M_ABOVE
};

enum ckind { C_PARAM, C_ID, C_LASTUPDATED, C_HAS };

/* One of the comma-separated (OR) values of a parameter, parsed for its type:
 *   STRING     s1 normalised, s2 its prefix bound (NULL: none), s3 as written (:exact),
 *              s4 LIKE pattern (:contains)
 *   TOKEN      s1 system (NULL: any), s2 code (NULL: any); :text s1 normalised, s2 bound;
 *              :of-type s1 type system, s2 type code, s3 identifier value
 *   DATE       lo_ms .. hi_ms
 *   NUMBER     lo .. hi (the precision range), num (the value)
 *   QUANTITY   as NUMBER; s1 unit system (NULL: any), s2 unit code (NULL: any)
 *   REFERENCE  s1 target type (NULL: any), s2 target id; or s3 a URL as written
 *   URI        s1 the uri, s2 its prefix bound (:below)
 *   COMPOSITE  the first component as above, the second in `second` */
struct val {
    enum prefix pfx;
    const char *s1, *s2, *s3, *s4;
    int64_t lo_ms, hi_ms;
    double lo, hi, num;
    struct val *second;
};

/* One search parameter of the query (parameters are AND'ed, values OR'ed). */
struct cond {
    enum ckind kind;
    const char *key;        /* as written, for messages */
    const char *type;       /* the resource type it applies to */
    const struct jk_sp *sp; /* C_PARAM */
    enum jk_sp_type vtype;  /* the type of its values (TOKEN for :identifier rows) */
    enum jk_sp_type c1, c2; /* composite: the types of the two components */
    const char *row_param;  /* the index rows' param: "code", "subject:identifier" */
    enum mod mod;
    int is_missing; /* :missing=true */
    int is_person;  /* C_ID of Patient's "empi": the records of golden persons */
    struct val *vals;
    size_t n_vals;
    const char **chain_types; /* a chain: the condition on the target, per target type */
    struct cond **chain;
    size_t n_chain;
    const char *has_type, *has_param; /* _has:has_type:has_param:... */
    struct cond *has;
};

enum vkind { VK_TEXT, VK_INT, VK_DBL };
enum skind { SK_ID, SK_LASTUPDATED, SK_SUB };

struct sortkey {
    enum skind kind;
    const struct jk_sp *sp;
    int is_desc;
    enum vkind vk;
};

/* A value of a sort key in a cursor. */
struct kval {
    const char *s;
    size_t n;
    int64_t i;
    double d;
};

struct cursor {
    int is_prev; /* rows before the position, not after */
    struct kval k[JK_SEARCH_MAX_SORT];
    int64_t seq;
};

struct incl {
    int is_rev, is_iterate;
    const char *src_type;    /* _include: the type that holds the reference; NULL for * */
    const char *param;       /* NULL for * */
    const char *target_type; /* NULL: any */
};

enum total { T_DEFAULT, T_NONE, T_ESTIMATE, T_ACCURATE };
enum summary { S_NONE, S_TRUE, S_TEXT, S_DATA, S_COUNT };

struct jk_search {
    struct jk_arena *a;
    struct jk_diag *d;
    const char *type;
    struct jk_search_opts o;
    struct cond *conds[JK_SEARCH_MAX_PARAMS];
    size_t n_conds;
    struct sortkey sort[JK_SEARCH_MAX_SORT];
    size_t n_sort;
    size_t count;
    enum total total;
    enum summary summary;
    const char **elements;
    size_t n_elements;
    struct incl incl[JK_SEARCH_MAX_INCLUDES];
    size_t n_incl;
    int has_cursor;
    struct cursor cur;
    const char *cursor_text;
    const char **warn; /* ignored parameters, reported in an OperationOutcome entry */
    size_t n_warn;
    /* the request's parameters, for links: the ones kept (not ignored, not the cursor) */
    const char *const *keys, *const *values;
    size_t n;
    unsigned char *keep;
};

/* ---- small text helpers ---- */

static int is_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t n;
        unsigned cp;
        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            n = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        p += n + 1;
    }
    return 1;
}

/* The smallest string greater than every string that starts with s, in code point (byte)
 * order: s with its last code point incremented. NULL when there is none (s empty, or only
 * U+10FFFF). In the arena. */
static const char *prefix_bound(struct jk_arena *a, const char *s)
{
    size_t n = strlen(s);
    while (n > 0) {
        size_t start = n - 1;
        while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80)
            start--;
        const unsigned char *p = (const unsigned char *)s + start;
        unsigned cp = p[0];
        size_t len = n - start;
        if (len > 1) {
            cp &= 0xFFu >> (len + 1);
            for (size_t i = 1; i < len; i++)
                cp = (cp << 6) | (p[i] & 0x3F);
        }
        if (cp < 0x10FFFF) {
            cp = cp + 1 == 0xD800 ? 0xE000 : cp + 1;
            char enc[4];
            size_t m;
            if (cp < 0x80) {
                enc[0] = (char)cp;
                m = 1;
            } else if (cp < 0x800) {
                enc[0] = (char)(0xC0 | (cp >> 6));
                enc[1] = (char)(0x80 | (cp & 0x3F));
                m = 2;
            } else if (cp < 0x10000) {
                enc[0] = (char)(0xE0 | (cp >> 12));
                enc[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
                enc[2] = (char)(0x80 | (cp & 0x3F));
                m = 3;
            } else {
                enc[0] = (char)(0xF0 | (cp >> 18));
                enc[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
                enc[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
                enc[3] = (char)(0x80 | (cp & 0x3F));
                m = 4;
            }
            char *out = jk_arena_alloc(a, start + m + 1);
            if (!out) return NULL;
            memcpy(out, s, start);
            memcpy(out + start, enc, m);
            out[start + m] = 0;
            return out;
        }
        n = start;
    }
    return NULL;
}

/* Splits s at each sep that is not escaped with a backslash. The pieces keep their escapes.
 * Returns the count, or (size_t)-1 when there are more than max. */
static size_t split_escaped(struct jk_arena *a, const char *s, char sep, const char **out,
                            size_t max)
{
    size_t n = 0;
    const char *start = s, *p = s;
    for (;; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            continue;
        }
        if (*p == sep || !*p) {
            if (n == max) return (size_t)-1;
            out[n++] = jk_arena_strndup(a, start, (size_t)(p - start));
            if (!out[n - 1]) return (size_t)-1;
            if (!*p) break;
            start = p + 1;
        }
    }
    return n;
}

/* s without the search escapes \, \$ \| \\ (other backslashes stay). In the arena. */
static const char *unescape(struct jk_arena *a, const char *s)
{
    char *out = jk_arena_alloc(a, strlen(s) + 1), *w = out;
    if (!out) return NULL;
    for (const char *p = s; *p; p++) {
        if (*p == '\\' && (p[1] == ',' || p[1] == '$' || p[1] == '|' || p[1] == '\\')) p++;
        *w++ = *p;
    }
    *w = 0;
    return out;
}

/* A LIKE pattern that finds s anywhere (or, with is_word, at the start of a word after a
 * space), with % _ and \ escaped by a backslash. */
static const char *like_pattern(struct jk_arena *a, const char *s, int is_word)
{
    char *out = jk_arena_alloc(a, 2 * strlen(s) + 4), *w = out;
    if (!out) return NULL;
    *w++ = '%';
    if (is_word) *w++ = ' ';
    for (const char *p = s; *p; p++) {
        if (*p == '%' || *p == '_' || *p == '\\') *w++ = '\\';
        *w++ = *p;
    }
    *w++ = '%';
    *w = 0;
    return out;
}

static int is_resource_type(const char *s)
{
    return s && jk_fhir_is_resource_type(s, strlen(s));
}

/* ---- SQL text and its parameters, built together ---- */

struct sarg {
    enum vkind kind;
    const char *s;
    size_t n;
    int64_t i;
    double d;
};

/* What differs between the engines in the SQL built here. */
struct dialect {
    const char *backend;
    /* Written before a parenthesised condition to keep the planner from using an index for
     * it. Without statistics SQLite rates an index by how many of its columns are compared
     * for equality, so in a correlated check of one resource's rows it would pick the
     * parameter's value index (type, param, code, system) over (type, id, param); hiding the
     * value comparisons leaves (type, id, param), which reads only that resource's rows.
     * PostgreSQL plans from statistics and needs no hint. */
    const char *no_index;
    /* Whether to probe the conditions and choose the driving one (choose_driver). SQLite
     * follows the query's shape; PostgreSQL's planner knows from its statistics which
     * condition is selective and reorders the joins itself, so it gets the walking shape
     * and one round trip fewer. */
    int is_probing;
};

static const struct dialect dialects[] = {
    {"sqlite", "+", 1},
    {"postgresql", "", 0},
};

static const struct dialect *dialect_of(jk_conn *c)
{
    for (size_t i = 0; i < sizeof dialects / sizeof dialects[0]; i++)
        if (!strcmp(dialects[i].backend, jk_conn_backend(c))) return &dialects[i];
    return &dialects[0];
}

struct sb {
    struct jk_buf b;
    struct sarg *args;
    size_t n_args;
    struct jk_arena *a;
    const char *coll; /* the backend's byte-wise collation suffix */
    const struct dialect *dl;
    int n_alias;
    jk_rc rc;
};

static void sb_init(struct sb *sb, struct jk_arena *a, jk_conn *c)
{
    memset(sb, 0, sizeof *sb);
    jk_buf_init(&sb->b, MAX_SQL_BYTES);
    sb->a = a;
    sb->coll = jk_conn_collate_c(c);
    sb->dl = dialect_of(c);
    sb->args = jk_arena_alloc(a, MAX_SQL_ARGS * sizeof *sb->args);
    if (!sb->args) sb->rc = JK_ENOMEM;
}

static void sb_put(struct sb *sb, const char *s)
{
    if (!sb->rc) sb->rc = jk_buf_puts(&sb->b, s);
}

static void sb_fmt(struct sb *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(struct sb *sb, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        if (!sb->rc) sb->rc = JK_EINTERNAL;
        return;
    }
    sb_put(sb, tmp);
}

static struct sarg *sb_arg(struct sb *sb)
{
    if (sb->rc) return NULL;
    if (sb->n_args == MAX_SQL_ARGS) {
        sb->rc = JK_ETOOBIG;
        return NULL;
    }
    sb_put(sb, "?");
    return sb->rc ? NULL : &sb->args[sb->n_args++];
}

static void sb_text(struct sb *sb, const char *s)
{
    struct sarg *g = sb_arg(sb);
    if (g) *g = (struct sarg){VK_TEXT, s ? s : "", s ? strlen(s) : 0, 0, 0};
}

static void sb_int(struct sb *sb, int64_t v)
{
    struct sarg *g = sb_arg(sb);
    if (g) *g = (struct sarg){VK_INT, NULL, 0, v, 0};
}

static void sb_dbl(struct sb *sb, double v)
{
    struct sarg *g = sb_arg(sb);
    if (g) *g = (struct sarg){VK_DBL, NULL, 0, 0, v};
}

/* A new table alias ("t7"), in the arena. */
static const char *sb_alias(struct sb *sb)
{
    const char *al = jk_arena_printf(sb->a, "t%d", ++sb->n_alias);
    if (!al && !sb->rc) sb->rc = JK_ENOMEM;
    return al ? al : "t0";
}

/* Prepares the built SQL (uncached: it differs from query to query) and binds its
 * parameters. The caller finalises *out. */
static jk_rc sb_prepare(struct sb *sb, jk_conn *c, jk_stmt **out)
{
    *out = NULL;
    if (sb->rc) return sb->rc;
    if (jk_log_get_level() == JK_LOG_DEBUG) jk_log(JK_LOG_DEBUG, "search", "%s", sb->b.p);
    jk_rc rc = jk_conn_prepare_once(c, sb->b.p, out);
    for (size_t i = 0; i < sb->n_args && !rc; i++) {
        const struct sarg *g = &sb->args[i];
        int k = (int)i + 1;
        rc = g->kind == VK_TEXT  ? jk_stmt_text_arg(*out, k, g->s, g->n)
             : g->kind == VK_INT ? jk_stmt_int_arg(*out, k, g->i)
                                 : jk_stmt_double_arg(*out, k, g->d);
    }
    if (rc && *out) {
        jk_stmt_finalize(*out);
        *out = NULL;
    }
    return rc;
}

/* ---- parsing values ---- */

static void emit_scope(struct sb *sb, const struct jk_search *q, const char *type,
                       const char *idcol);

static jk_rc bad_value(struct jk_search *q, const char *key, const char *value, const char *why)
{
    return jk_diag_add(q->d, JK_EINVAL, "invalid", key,
                       "search parameter '%s': the value '%s' is not valid: %s", key, value, why);
}

/* Reads a comparison prefix (eq, ne, gt ...) off *s; eq when there is none. */
static jk_rc parse_prefix(struct jk_search *q, const char *key, const char **s, enum prefix *pfx)
{
    const char *p = *s;
    *pfx = P_EQ;
    if (!(p[0] >= 'a' && p[0] <= 'z' && p[1] >= 'a' && p[1] <= 'z')) return JK_OK;
    for (size_t i = 0; i < sizeof prefix_names / sizeof prefix_names[0]; i++)
        if (!strncmp(p, prefix_names[i], 2)) {
            *pfx = (enum prefix)i;
            *s = p + 2;
            return JK_OK;
        }
    return bad_value(q, key, p,
                     "it starts with an unknown prefix (eq, ne, gt, lt, ge, le, sa, eb "
                     "or ap)");
}

static jk_rc parse_date(struct jk_search *q, const char *key, const char *s, struct val *v)
{
    const char *p = s;
    jk_rc rc = parse_prefix(q, key, &p, &v->pfx);
    if (rc) return rc;
    if (jk_sp_date_range(p, strlen(p), &v->lo_ms, &v->hi_ms))
        return bad_value(q, key, s,
                         "expected a date such as 2024, 2024-03, 2024-03-05 or "
                         "2024-03-05T08:30:00+08:00, after an optional prefix");
    return JK_OK;
}

static jk_rc parse_number(struct jk_search *q, const char *key, const char *s, struct val *v)
{
    const char *p = s;
    jk_rc rc = parse_prefix(q, key, &p, &v->pfx);
    if (rc) return rc;
    char *end;
    v->num = strtod(p, &end);
    if (!*p || *end || !isfinite(v->num) || jk_sp_number_range(p, strlen(p), &v->lo, &v->hi) ||
        !isfinite(v->lo) || !isfinite(v->hi))
        return bad_value(q, key, s,
                         "expected a number such as 5.4 or 1e2, after an optional "
                         "prefix");
    return JK_OK;
}

static jk_rc parse_quantity(struct jk_search *q, const char *key, const char *s, struct val *v)
{
    const char *part[4];
    size_t n = split_escaped(q->a, s, '|', part, 3);
    if (n != 1 && n != 3)
        return bad_value(q, key, s, "expected number, number|system|code or number||code");
    jk_rc rc = parse_number(q, key, unescape(q->a, part[0]), v);
    if (rc || n == 1) return rc;
    v->s1 = *part[1] ? unescape(q->a, part[1]) : NULL;
    v->s2 = *part[2] ? unescape(q->a, part[2]) : NULL;
    return JK_OK;
}

static jk_rc parse_token(struct jk_search *q, const char *key, const char *s, struct val *v)
{
    const char *part[3];
    size_t n = split_escaped(q->a, s, '|', part, 2);
    if (n == (size_t)-1)
        return bad_value(q, key, s, "expected code, system|code, |code or system|");
    if (n == 1) {
        v->s2 = unescape(q->a, part[0]);
    } else {
        v->s1 = unescape(q->a, part[0]);
        v->s2 = *part[1] ? unescape(q->a, part[1]) : NULL;
        if (!*v->s1 && !v->s2) return bad_value(q, key, s, "both system and code are empty");
    }
    return JK_OK;
}

static jk_rc parse_string(struct jk_search *q, const char *s, struct val *v)
{
    v->s3 = unescape(q->a, s);
    if (!v->s3) return JK_ENOMEM;
    v->s1 = jk_sp_norm_string(q->a, v->s3, strlen(v->s3));
    if (!v->s1) return JK_ENOMEM;
    v->s2 = prefix_bound(q->a, v->s1);
    v->s4 = like_pattern(q->a, v->s1, 0);
    return v->s4 ? JK_OK : JK_ENOMEM;
}

/* A reference value: Type/id, id, Type/id/_history/n, or a URL. URLs under this server's
 * base are local references; other absolute URLs (and urn:) are matched as written. */
static jk_rc parse_reference(struct jk_search *q, const struct cond *c, const char *raw,
                             struct val *v)
{
    const char *s = unescape(q->a, raw);
    if (!s) return JK_ENOMEM;
    char local[256];
    int n_local = snprintf(local, sizeof local, "%s/fhir/R4/", q->o.base_url ? q->o.base_url : "");
    if (q->o.base_url && n_local > 0 && (size_t)n_local < sizeof local &&
        !strncmp(s, local, (size_t)n_local))
        s += n_local;
    else if (strstr(s, "://") || !strncmp(s, "urn:", 4)) {
        v->s3 = s;
        return JK_OK;
    }
    const char *slash = strchr(s, '/');
    if (!slash) {
        if (!*s) return bad_value(q, c->key, raw, "expected Type/id, id or a URL");
        v->s2 = s;
        return JK_OK;
    }
    const char *type = jk_arena_strndup(q->a, s, (size_t)(slash - s));
    const char *id = slash + 1, *hist = strstr(id, "/_history/");
    id = jk_arena_strndup(q->a, id, hist ? (size_t)(hist - id) : strlen(id));
    if (!type || !id) return JK_ENOMEM;
    if (!is_resource_type(type) || !*id || strchr(id, '/'))
        return bad_value(q, c->key, raw, "expected Type/id with a FHIR resource type, id or a URL");
    v->s1 = type;
    v->s2 = id;
    return JK_OK;
}

static jk_rc parse_typed(struct jk_search *q, const struct cond *c, enum jk_sp_type t,
                         const char *s, struct val *v)
{
    switch (t) {
    case JK_SP_NUMBER: return parse_number(q, c->key, unescape(q->a, s), v);
    case JK_SP_DATE: return parse_date(q, c->key, unescape(q->a, s), v);
    case JK_SP_QUANTITY: return parse_quantity(q, c->key, s, v);
    case JK_SP_TOKEN: return parse_token(q, c->key, s, v);
    case JK_SP_STRING: return parse_string(q, s, v);
    case JK_SP_REFERENCE: return parse_reference(q, c, s, v);
    case JK_SP_URI:
        v->s1 = unescape(q->a, s);
        v->s2 = v->s1 ? prefix_bound(q->a, v->s1) : NULL;
        return v->s1 ? JK_OK : JK_ENOMEM;
    default: break;
    }
    return jk_diag_add(q->d, JK_EINVAL, "not-supported", c->key,
                       "search parameter '%s' has a type this server cannot search", c->key);
}

/* One OR'ed value of condition c. */
static jk_rc parse_value(struct jk_search *q, struct cond *c, const char *s, struct val *v)
{
    memset(v, 0, sizeof *v);
    if (c->mod == M_TEXT) { /* a word of the text starts with it */
        jk_rc rc = parse_string(q, s, v);
        if (!rc && !(v->s4 = like_pattern(q->a, v->s1, 1))) rc = JK_ENOMEM;
        return rc;
    }
    if (c->mod == M_OF_TYPE) {
        const char *part[4];
        if (split_escaped(q->a, s, '|', part, 3) != 3 || !*part[1] || !*part[2])
            return bad_value(q, c->key, s,
                             "expected system|code|value (the identifier type and "
                             "value)");
        v->s1 = unescape(q->a, part[0]);
        v->s2 = unescape(q->a, part[1]);
        v->s3 = unescape(q->a, part[2]);
        return JK_OK;
    }
    if (c->vtype != JK_SP_COMPOSITE) return parse_typed(q, c, c->vtype, s, v);
    const char *part[3];
    if (split_escaped(q->a, s, '$', part, 2) != 2)
        return bad_value(q, c->key, s, "a composite value has two parts joined by $");
    if (!(v->second = jk_arena_zalloc(q->a, sizeof *v->second))) return JK_ENOMEM;
    jk_rc rc = parse_typed(q, c, c->c1, part[0], v);
    return rc ? rc : parse_typed(q, c, c->c2, part[1], v->second);
}

/* Whether c's rows may hold sealed identity or phone numbers: its paths end at Identifier or
 * ContactPoint values, or it searches references by identifier. */
static int is_protectable(const struct cond *c)
{
    if (c->vtype != JK_SP_TOKEN || c->kind != C_PARAM || !c->sp) return 0;
    if (c->mod == M_IDENTIFIER) return 1;
    if (c->mod != M_NONE && c->mod != M_NOT && c->mod != M_OF_TYPE) return 0;
    const struct jk_sp_def *d = jk_sp_def_of(c->sp);
    for (size_t i = 0; i < d->n_paths; i++) {
        uint8_t t = jk_sp_gen_paths[d->first_path + i].vtype;
        if (t == JK_SPV_IDENT || t == JK_SPV_CONTACT) return 1;
    }
    return 0;
}

/* Sealed values are indexed by blind index (auth/protect.h): each value of c also matches the
 * blind index codes it would have, as more OR'ed values. */
static jk_rc add_blind_codes(struct jk_search *q, struct cond *c)
{
    size_t n0 = c->n_vals, total = n0;
    const char **codes[JK_SEARCH_MAX_VALUES];
    size_t n_codes[JK_SEARCH_MAX_VALUES];
    for (size_t i = 0; i < n0; i++) {
        const struct val *v = &c->vals[i];
        const char *value = c->mod == M_OF_TYPE ? v->s3 : v->s2;
        const char *system = c->mod == M_OF_TYPE ? NULL : v->s1;
        jk_rc rc = jk_protect_search_codes(q->a, system, value, &codes[i], &n_codes[i]);
        if (rc) return rc;
        total += n_codes[i];
    }
    if (total == n0) return JK_OK;
    struct val *vals = jk_arena_alloc(q->a, total * sizeof *vals);
    if (!vals) return JK_ENOMEM;
    memcpy(vals, c->vals, n0 * sizeof *vals);
    for (size_t i = 0, k = n0; i < n0; i++)
        for (size_t j = 0; j < n_codes[i]; j++, k++) {
            vals[k] = c->vals[i];
            *(c->mod == M_OF_TYPE ? &vals[k].s3 : &vals[k].s2) = codes[i][j];
        }
    c->vals = vals;
    c->n_vals = total;
    return JK_OK;
}

static jk_rc parse_values(struct jk_search *q, struct cond *c, const char *value)
{
    if (c->mod == M_MISSING) {
        if (strcmp(value, "true") && strcmp(value, "false"))
            return bad_value(q, c->key, value, ":missing takes true or false");
        c->is_missing = !strcmp(value, "true");
        return JK_OK;
    }
    const char *part[JK_SEARCH_MAX_VALUES + 1];
    size_t n = split_escaped(q->a, value, ',', part, JK_SEARCH_MAX_VALUES);
    if (n == (size_t)-1)
        return jk_diag_add(q->d, JK_EINVAL, "too-costly", c->key,
                           "search parameter '%s' has more than %d values", c->key,
                           JK_SEARCH_MAX_VALUES);
    c->vals = jk_arena_zalloc(q->a, n * sizeof *c->vals);
    if (!c->vals) return JK_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (!*part[i]) continue; /* "a,,b": the empty value adds nothing */
        jk_rc rc = parse_value(q, c, part[i], &c->vals[c->n_vals]);
        if (rc) return rc;
        c->n_vals++;
    }
    if (!c->n_vals) return bad_value(q, c->key, value, "no value");
    return is_protectable(c) ? add_blind_codes(q, c) : JK_OK;
}

/* ---- parsing parameter names: code, modifier, chain, _has ---- */

/* Why a parameter name is not understood; the caller reports it (lenient) or refuses it. */
struct unknown {
    const char *why;
};

static jk_rc parse_key(struct jk_search *q, const char *type, const char *key, const char *value,
                       int depth, int has_depth, struct cond **out, struct unknown *unk);

static jk_rc parse_has(struct jk_search *q, const char *type, const char *key, const char *value,
                       int depth, int has_depth, struct cond **out, struct unknown *unk)
{
    /* _has:Observation:patient:code */
    const char *t = key + 5, *c1 = strchr(t, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2 || c2[1] == 0)
        return jk_diag_add(q->d, JK_EINVAL, "invalid", key,
                           "'%s' is not of the form _has:Type:reference:parameter", key);
    if (has_depth >= JK_SEARCH_MAX_HAS)
        return jk_diag_add(q->d, JK_EINVAL, "too-costly", key, "'%s' nests _has more than %d deep",
                           key, JK_SEARCH_MAX_HAS);
    struct cond *c = jk_arena_zalloc(q->a, sizeof *c);
    if (!c) return JK_ENOMEM;
    c->kind = C_HAS;
    c->key = key;
    c->type = type;
    c->has_type = jk_arena_strndup(q->a, t, (size_t)(c1 - t));
    c->has_param = jk_arena_strndup(q->a, c1 + 1, (size_t)(c2 - c1 - 1));
    if (!c->has_type || !c->has_param) return JK_ENOMEM;
    if (!is_resource_type(c->has_type))
        return jk_diag_add(q->d, JK_EINVAL, "invalid", key, "'%s' in '%s' is not a resource type",
                           c->has_type, key);
    const struct jk_sp *sp = jk_sp_find(c->has_type, c->has_param);
    if (!sp || sp->type != JK_SP_REFERENCE)
        return jk_diag_add(q->d, JK_EINVAL, "invalid", key,
                           "'%s' in '%s' is not a reference search parameter of %s", c->has_param,
                           key, c->has_type);
    jk_rc rc = parse_key(q, c->has_type, c2 + 1, value, depth, has_depth + 1, &c->has, unk);
    if (rc || unk->why) return rc;
    *out = c;
    return JK_OK;
}

/* The modifier text of a parameter of type t. */
static jk_rc parse_mod(struct jk_search *q, struct cond *c, const char *m)
{
    static const struct {
        const char *name;
        enum mod mod;
        unsigned types; /* bit per enum jk_sp_type */
    } mods[] = {
        {"missing", M_MISSING, 0xFFu & ~(1u << JK_SP_SPECIAL)},
        {"exact", M_EXACT, 1u << JK_SP_STRING},
        {"contains", M_CONTAINS, 1u << JK_SP_STRING},
        {"not", M_NOT, 1u << JK_SP_TOKEN},
        {"text", M_TEXT, 1u << JK_SP_TOKEN},
        {"of-type", M_OF_TYPE, 1u << JK_SP_TOKEN},
        {"identifier", M_IDENTIFIER, 1u << JK_SP_REFERENCE},
        {"below", M_BELOW, 1u << JK_SP_URI},
        {"above", M_ABOVE, 1u << JK_SP_URI},
    };
    const enum jk_sp_type t = c->sp->type;
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
        if (strcmp(m, mods[i].name)) continue;
        if (!(mods[i].types & (1u << t))) break;
        c->mod = mods[i].mod;
        return JK_OK;
    }
    if (t == JK_SP_REFERENCE && is_resource_type(m)) {
        c->mod = M_TYPE;
        return JK_OK;
    }
    return jk_diag_add(q->d, JK_EINVAL, "not-supported", c->key,
                       "search parameter '%s': the modifier ':%s' is not supported for this "
                       "parameter",
                       c->key, m);
}

/* A reference parameter followed by a chain: subject:Patient.name, subject.name. */
static jk_rc parse_chain(struct jk_search *q, struct cond *c, const char *rest, const char *value,
                         int depth, int has_depth, struct unknown *unk)
{
    if (depth >= JK_SEARCH_MAX_CHAIN)
        return jk_diag_add(q->d, JK_EINVAL, "too-costly", c->key,
                           "'%s' chains more than %d references", c->key, JK_SEARCH_MAX_CHAIN);
    const char *const *targets = c->sp->targets;
    const char *one[2] = {c->chain_types ? c->chain_types[0] : NULL, NULL};
    if (c->mod == M_TYPE) targets = one;
    size_t n_targets = 0;
    while (targets && targets[n_targets])
        n_targets++;
    c->chain_types = jk_arena_zalloc(q->a, (n_targets + 1) * sizeof *c->chain_types);
    c->chain = jk_arena_zalloc(q->a, (n_targets + 1) * sizeof *c->chain);
    if (!c->chain_types || !c->chain) return JK_ENOMEM;
    for (size_t i = 0; i < n_targets; i++) {
        struct unknown u = {NULL};
        struct cond *inner = NULL;
        jk_rc rc = parse_key(q, targets[i], rest, value, depth + 1, has_depth, &inner, &u);
        if (rc) return rc;
        if (u.why) continue; /* not a parameter of this target type */
        c->chain_types[c->n_chain] = targets[i];
        c->chain[c->n_chain++] = inner;
    }
    if (!c->n_chain)
        unk->why = jk_arena_printf(q->a,
                                   "'%s' is not a search parameter of the resources '%s' "
                                   "refers to",
                                   rest, c->sp->code);
    return JK_OK;
}

static jk_rc parse_key(struct jk_search *q, const char *type, const char *key, const char *value,
                       int depth, int has_depth, struct cond **out, struct unknown *unk)
{
    *out = NULL;
    if (!strncmp(key, "_has:", 5))
        return parse_has(q, type, key, value, depth, has_depth, out, unk);
    const char *dot = strchr(key, '.');
    const char *head = dot ? jk_arena_strndup(q->a, key, (size_t)(dot - key)) : key;
    if (!head) return JK_ENOMEM;
    const char *colon = strchr(head, ':');
    const char *code = colon ? jk_arena_strndup(q->a, head, (size_t)(colon - head)) : head;
    const char *m = colon ? colon + 1 : NULL;
    if (!code) return JK_ENOMEM;
    struct cond *c = jk_arena_zalloc(q->a, sizeof *c);
    if (!c) return JK_ENOMEM;
    c->key = key;
    c->type = type;
    c->is_person = !strcmp(code, "empi") && !strcmp(type, "Patient");
    if (!strcmp(code, "_id") || !strcmp(code, "_lastUpdated") || c->is_person) {
        c->kind = code[1] != 'l' ? C_ID : C_LASTUPDATED;
        c->vtype = c->kind == C_ID ? JK_SP_TOKEN : JK_SP_DATE;
        if (dot || m)
            return jk_diag_add(q->d, JK_EINVAL, "not-supported", key,
                               "search parameter '%s': %s takes no modifier or chain", key, code);
        jk_rc rc = JK_OK;
        const char *part[JK_SEARCH_MAX_VALUES + 1];
        size_t n = split_escaped(q->a, value, ',', part, JK_SEARCH_MAX_VALUES);
        if (n == (size_t)-1)
            return jk_diag_add(q->d, JK_EINVAL, "too-costly", key,
                               "search parameter '%s' has more than %d values", key,
                               JK_SEARCH_MAX_VALUES);
        if (!(c->vals = jk_arena_zalloc(q->a, n * sizeof *c->vals))) return JK_ENOMEM;
        for (size_t i = 0; i < n && !rc; i++) {
            if (!*part[i]) continue;
            struct val *v = &c->vals[c->n_vals++];
            if (c->kind == C_ID)
                v->s2 = unescape(q->a, part[i]);
            else
                rc = parse_date(q, key, unescape(q->a, part[i]), v);
        }
        if (!rc && !c->n_vals) rc = bad_value(q, key, value, "no value");
        if (!rc) *out = c;
        return rc;
    }
    c->kind = C_PARAM;
    c->sp = jk_sp_find(type, code);
    if (!c->sp) {
        unk->why = jk_arena_printf(q->a, "'%s' is not a search parameter of %s", code, type);
        return JK_OK;
    }
    if (c->sp->type == JK_SP_SPECIAL) {
        unk->why =
            jk_arena_printf(q->a, "the special search parameter '%s' is not supported", code);
        return JK_OK;
    }
    c->vtype = c->sp->type;
    c->row_param = c->sp->code;
    jk_rc rc = m ? parse_mod(q, c, m) : JK_OK;
    if (rc) return rc;
    if (c->mod == M_TYPE) {
        c->chain_types = jk_arena_zalloc(q->a, 2 * sizeof *c->chain_types);
        if (!c->chain_types) return JK_ENOMEM;
        c->chain_types[0] = m;
    }
    if (dot) {
        if (c->sp->type != JK_SP_REFERENCE || (c->mod != M_NONE && c->mod != M_TYPE))
            return jk_diag_add(q->d, JK_EINVAL, "invalid", key,
                               "'%s': only a reference parameter, with at most a type modifier, "
                               "can be chained",
                               key);
        rc = parse_chain(q, c, dot + 1, value, depth, has_depth, unk);
        if (!rc && !unk->why) *out = c;
        return rc;
    }
    if (c->vtype == JK_SP_COMPOSITE) {
        const char *const *comp = c->sp->components;
        const struct jk_sp *p1 = comp && comp[0] ? jk_sp_find(type, comp[0]) : NULL;
        const struct jk_sp *p2 = p1 && comp[1] ? jk_sp_find(type, comp[1]) : NULL;
        if (!p2 || comp[2]) {
            unk->why = jk_arena_printf(q->a, "the composite parameter '%s' is not supported", code);
            return JK_OK;
        }
        c->c1 = p1->type;
        c->c2 = p2->type;
    }
    if (c->mod == M_IDENTIFIER || c->mod == M_OF_TYPE) {
        c->row_param =
            jk_arena_printf(q->a, "%s:%s", code, c->mod == M_OF_TYPE ? "of-type" : "identifier");
        if (!c->row_param) return JK_ENOMEM;
        c->vtype = JK_SP_TOKEN;
    }
    if (c->mod == M_TYPE) {
        /* subject:Patient=123 is subject=Patient/123 */
        if ((rc = parse_values(q, c, value))) return rc;
        for (size_t i = 0; i < c->n_vals; i++) {
            struct val *v = &c->vals[i];
            if (v->s3 || (v->s1 && strcmp(v->s1, m)))
                return bad_value(q, key, value, "with a type modifier the value is an id");
            v->s1 = m;
        }
        c->chain_types = NULL;
        *out = c;
        return JK_OK;
    }
    if ((rc = parse_values(q, c, value))) return rc;
    *out = c;
    return JK_OK;
}

/* ---- result parameters ---- */

static jk_rc parse_count(struct jk_search *q, const char *key, const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < 0) return bad_value(q, key, v, "expected a whole number, 0 or more");
    q->count = n > JK_SEARCH_MAX_COUNT ? JK_SEARCH_MAX_COUNT : (size_t)n;
    return JK_OK;
}

/* The kind of value a parameter of type t sorts by; -1 when it cannot sort. */
static int sort_kind(enum jk_sp_type t)
{
    switch (t) {
    case JK_SP_STRING:
    case JK_SP_TOKEN:
    case JK_SP_URI:
    case JK_SP_REFERENCE: return VK_TEXT;
    case JK_SP_DATE: return VK_INT;
    case JK_SP_NUMBER:
    case JK_SP_QUANTITY: return VK_DBL;
    default: return -1;
    }
}

static jk_rc parse_sort(struct jk_search *q, const char *key, const char *v)
{
    const char *part[JK_SEARCH_MAX_SORT + 1];
    size_t n = split_escaped(q->a, v, ',', part, JK_SEARCH_MAX_SORT);
    if (n == (size_t)-1)
        return jk_diag_add(q->d, JK_EINVAL, "too-costly", key, "_sort takes at most %d keys",
                           JK_SEARCH_MAX_SORT);
    q->n_sort = 0;
    for (size_t i = 0; i < n; i++) {
        const char *p = part[i];
        struct sortkey *k = &q->sort[q->n_sort];
        memset(k, 0, sizeof *k);
        if (*p == '-') {
            k->is_desc = 1;
            p++;
        }
        if (!*p) continue;
        if (!strcmp(p, "_id") || !strcmp(p, "_lastUpdated")) {
            k->kind = p[1] == 'i' ? SK_ID : SK_LASTUPDATED;
            k->vk = VK_TEXT;
        } else {
            k->kind = SK_SUB;
            k->sp = jk_sp_find(q->type, p);
            int vk = k->sp ? sort_kind(k->sp->type) : -1;
            if (vk < 0)
                return bad_value(q, key, v,
                                 jk_arena_printf(q->a,
                                                 "'%s' is not a search parameter of %s that "
                                                 "results can be sorted by",
                                                 p, q->type));
            k->vk = (enum vkind)vk;
        }
        q->n_sort++;
    }
    return JK_OK;
}

static jk_rc parse_include(struct jk_search *q, const char *key, const char *v, int is_rev,
                           int is_iterate)
{
    if (q->n_incl == JK_SEARCH_MAX_INCLUDES)
        return jk_diag_add(q->d, JK_EINVAL, "too-costly", key,
                           "at most %d _include and _revinclude parameters",
                           JK_SEARCH_MAX_INCLUDES);
    struct incl *in = &q->incl[q->n_incl];
    memset(in, 0, sizeof *in);
    in->is_rev = is_rev;
    in->is_iterate = is_iterate;
    if (!strcmp(v, "*")) {
        q->n_incl++;
        return JK_OK;
    }
    const char *part[4];
    size_t n = split_escaped(q->a, v, ':', part, 3);
    if (n == (size_t)-1 || n < 2)
        return bad_value(q, key, v, "expected Type:parameter, Type:parameter:TargetType or *");
    if (!is_resource_type(part[0]) || (n == 3 && !is_resource_type(part[2])))
        return bad_value(q, key, v, "names a type that is not a FHIR resource type");
    in->src_type = part[0];
    in->target_type = n == 3 ? part[2] : NULL;
    if (strcmp(part[1], "*")) {
        const struct jk_sp *sp = jk_sp_find(part[0], part[1]);
        if (!sp || sp->type != JK_SP_REFERENCE)
            return bad_value(q, key, v,
                             jk_arena_printf(q->a, "'%s' is not a reference search parameter of %s",
                                             part[1], part[0]));
        in->param = sp->code;
    }
    /* A plain _include follows the matches' references: its type must be theirs. */
    if (!is_rev && !is_iterate && strcmp(in->src_type, q->type))
        return bad_value(q, key, v,
                         jk_arena_printf(q->a,
                                         "_include of a search of %s must start with %s: "
                                         "(or use _include:iterate)",
                                         q->type, q->type));
    q->n_incl++;
    return JK_OK;
}

static jk_rc parse_list(struct jk_search *q, const char *key, const char *v)
{
    const char *part[65];
    size_t n = split_escaped(q->a, v, ',', part, 64);
    if (n == (size_t)-1) return bad_value(q, key, v, "more than 64 elements");
    q->elements = jk_arena_alloc(q->a, n * sizeof *q->elements);
    if (!q->elements) return JK_ENOMEM;
    q->n_elements = 0;
    for (size_t i = 0; i < n; i++)
        if (*part[i]) q->elements[q->n_elements++] = part[i];
    return JK_OK;
}

/* Result parameters: 1 when key is one (handled), 0 when it is not, -1 on error. */
static int parse_result_param(struct jk_search *q, const char *key, const char *v, jk_rc *rc)
{
    static const char *const summaries[] = {"false", "true", "text", "data", "count"};
    static const char *const totals[] = {"", "none", "estimate", "accurate"};
    *rc = JK_OK;
    if (!strcmp(key, "_count")) {
        *rc = parse_count(q, key, v);
    } else if (!strcmp(key, "_sort")) {
        *rc = parse_sort(q, key, v);
    } else if (!strcmp(key, "_total")) {
        size_t i = 1;
        while (i < 4 && strcmp(v, totals[i]))
            i++;
        if (i == 4) *rc = bad_value(q, key, v, "expected none, estimate or accurate");
        q->total = (enum total)(i < 4 ? i : 0);
    } else if (!strcmp(key, "_summary")) {
        size_t i = 0;
        while (i < 5 && strcmp(v, summaries[i]))
            i++;
        if (i == 5) *rc = bad_value(q, key, v, "expected true, false, text, data or count");
        q->summary = (enum summary)(i < 5 ? i : 0);
    } else if (!strcmp(key, "_elements")) {
        *rc = parse_list(q, key, v);
    } else if (!strncmp(key, "_include", 8) || !strncmp(key, "_revinclude", 11)) {
        int is_rev = key[1] == 'r';
        const char *m = key + (is_rev ? 11 : 8);
        if (*m && strcmp(m, ":iterate") && strcmp(m, ":recurse")) return 0;
        *rc = parse_include(q, key, v, is_rev, *m != 0);
    } else if (!strcmp(key, "_cursor")) {
        q->cursor_text = v;
    } else {
        return 0;
    }
    return *rc ? -1 : 1;
}

/* ---- the paging cursor: direction, the boundary row's sort keys, its seq ---- */

static const char hexd[] = "0123456789abcdef";

static jk_rc cursor_text(struct jk_search *q, const struct cursor *cur, const char **out)
{
    struct jk_buf b;
    jk_buf_init(&b, 64 * 1024);
    jk_rc rc = jk_buf_puts(&b, cur->is_prev ? "p" : "n");
    for (size_t i = 0; i < q->n_sort && !rc; i++) {
        const struct kval *k = &cur->k[i];
        rc = jk_buf_puts(&b, ".");
        if (q->sort[i].vk == VK_INT) {
            if (!rc) rc = jk_buf_printf(&b, "%lld", (long long)k->i);
        } else if (q->sort[i].vk == VK_DBL) {
            uint64_t bits;
            memcpy(&bits, &k->d, sizeof bits);
            if (!rc) rc = jk_buf_printf(&b, "%016llx", (unsigned long long)bits);
        } else {
            for (size_t j = 0; j < k->n && !rc; j++) {
                char h[2] = {hexd[(unsigned char)k->s[j] >> 4], hexd[(unsigned char)k->s[j] & 15]};
                rc = jk_buf_append(&b, h, 2);
            }
        }
    }
    if (!rc) rc = jk_buf_printf(&b, ".%lld", (long long)cur->seq);
    *out = rc ? NULL : jk_arena_strndup(q->a, b.p, b.len);
    jk_buf_free(&b);
    return rc ? rc : *out ? JK_OK : JK_ENOMEM;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static jk_rc parse_cursor(struct jk_search *q)
{
    const char *s = q->cursor_text;
    const char *part[JK_SEARCH_MAX_SORT + 3];
    size_t n = split_escaped(q->a, s + (*s ? 1 : 0), '.', part, JK_SEARCH_MAX_SORT + 2);
    struct cursor *cur = &q->cur;
    if ((*s != 'n' && *s != 'p') || n != q->n_sort + 2 || *part[0]) goto bad;
    cur->is_prev = *s == 'p';
    for (size_t i = 0; i < q->n_sort; i++) {
        const char *p = part[i + 1];
        struct kval *k = &cur->k[i];
        char *end;
        if (q->sort[i].vk == VK_INT) {
            k->i = strtoll(p, &end, 10);
            if (!*p || *end) goto bad;
        } else if (q->sort[i].vk == VK_DBL) {
            unsigned long long bits = strtoull(p, &end, 16);
            if (strlen(p) != 16 || *end) goto bad;
            memcpy(&k->d, &bits, sizeof k->d);
        } else {
            size_t len = strlen(p);
            char *t = jk_arena_alloc(q->a, len / 2 + 1);
            if (!t || len % 2) goto bad;
            for (size_t j = 0; j < len / 2; j++) {
                int hi = hexval(p[2 * j]), lo = hexval(p[2 * j + 1]);
                if (hi < 0 || lo < 0) goto bad;
                t[j] = (char)(hi << 4 | lo);
            }
            t[len / 2] = 0;
            if (memchr(t, 0, len / 2) || !is_utf8(t)) goto bad;
            k->s = t;
            k->n = len / 2;
        }
    }
    char *end;
    const char *p = part[q->n_sort + 1];
    cur->seq = strtoll(p, &end, 10);
    if (!*p || *end) goto bad;
    q->has_cursor = 1;
    return JK_OK;
bad:
    return jk_diag_add(q->d, JK_EINVAL, "invalid", "_cursor",
                       "_cursor '%s' is not a page position of this search; follow the Bundle's "
                       "links",
                       s);
}

/* ---- parsing a whole search ---- */

static int is_ignored_param(const char *key)
{
    return !strcmp(key, "_format") || !strcmp(key, "_pretty");
}

jk_rc jk_fhir_search_parse(struct jk_arena *a, struct jk_diag *d, const char *type,
                           const char *const *keys, const char *const *values, size_t n,
                           const struct jk_search_opts *o, struct jk_search **out)
{
    *out = NULL;
    struct jk_search *q = jk_arena_zalloc(a, sizeof *q);
    if (!q) return JK_ENOMEM;
    q->a = a;
    q->d = d;
    q->type = type;
    q->o = *o;
    q->count = JK_SEARCH_DEFAULT_COUNT;
    q->keys = keys;
    q->values = values;
    q->n = n;
    q->keep = jk_arena_zalloc(a, n ? n : 1);
    q->warn = jk_arena_zalloc(a, (n ? n : 1) * sizeof *q->warn);
    if (!q->keep || !q->warn) return JK_ENOMEM;
    int is_criteria = (o->flags & JK_SEARCH_CRITERIA) != 0;
    int is_strict = is_criteria || (o->flags & JK_SEARCH_STRICT);
    if (n > 4 * JK_SEARCH_MAX_PARAMS)
        return jk_diag_add(d, JK_EINVAL, "too-costly", NULL,
                           "the search has %zu parameters; the limit is %d", n,
                           JK_SEARCH_MAX_PARAMS);
    for (size_t i = 0; i < n; i++) {
        const char *k = keys[i], *v = values[i];
        if (!is_utf8(k) || !is_utf8(v))
            return jk_diag_add(d, JK_EINVAL, "invalid", NULL,
                               "search parameter %zu is not valid UTF-8 text", i + 1);
        if (is_ignored_param(k)) continue;
        if (!*v) {
            if (is_criteria)
                return jk_diag_add(d, JK_EINVAL, "invalid", k,
                                   "search parameter '%s' needs a value", k);
            continue; /* a parameter without a value is ignored */
        }
        jk_rc rc;
        int r = parse_result_param(q, k, v, &rc);
        if (r && is_criteria)
            return jk_diag_add(d, JK_EINVAL, "invalid", k,
                               "'%s' is a result parameter; a conditional operation takes only "
                               "search criteria",
                               k);
        if (r < 0) return rc;
        if (r > 0) {
            q->keep[i] = strcmp(k, "_cursor") != 0;
            continue;
        }
        if (q->n_conds == JK_SEARCH_MAX_PARAMS)
            return jk_diag_add(d, JK_EINVAL, "too-costly", NULL,
                               "the search has more than %d parameters", JK_SEARCH_MAX_PARAMS);
        struct unknown unk = {NULL};
        struct cond *c = NULL;
        if ((rc = parse_key(q, type, k, v, 0, 0, &c, &unk))) return rc;
        if (unk.why) {
            if (is_strict)
                return jk_diag_add(d, JK_EINVAL, "not-supported", k,
                                   "search parameter '%s' is not understood: %s", k, unk.why);
            q->warn[q->n_warn++] =
                jk_arena_printf(a, "search parameter '%s' was ignored: %s", k, unk.why);
            continue;
        }
        q->conds[q->n_conds++] = c;
        q->keep[i] = 1;
    }
    if (is_criteria && !q->n_conds)
        return jk_diag_add(d, JK_EINVAL, "invalid", NULL,
                           "a conditional operation needs at least one search parameter");
    if (q->cursor_text) {
        jk_rc rc = parse_cursor(q);
        if (rc) return rc;
    }
    *out = q;
    return JK_OK;
}

/* ---- conditions as SQL ---- */

static const char *table_of(enum jk_sp_type t)
{
    switch (t) {
    case JK_SP_STRING: return "idx_string";
    case JK_SP_TOKEN: return "idx_token";
    case JK_SP_DATE: return "idx_date";
    case JK_SP_NUMBER: return "idx_number";
    case JK_SP_QUANTITY: return "idx_quantity";
    case JK_SP_REFERENCE: return "idx_reference";
    case JK_SP_URI: return "idx_uri";
    case JK_SP_COMPOSITE: return "idx_composite";
    default: return "idx_token";
    }
}

/* Binds an instant: ms for the index tables, or FHIR instant text for last_updated (stored
 * as jk_time_iso text, fixed width, so text order is time order). */
static void sb_ms(struct sb *sb, int64_t ms, int as_text)
{
    if (!as_text) {
        sb_int(sb, ms);
        return;
    }
    char iso[40];
    jk_time_iso(ms, iso, sizeof iso);
    const char *t = jk_arena_strdup(sb->a, iso);
    if (!t && !sb->rc) sb->rc = JK_ENOMEM;
    sb_text(sb, t);
}

/* A date value against a target range [lo, hi] (columns), per the FHIR prefix rules: eq is
 * "the search range contains the target", gt "the target reaches past the search range",
 * sa "the target starts after it", and so on. */
static void emit_date(struct sb *sb, const struct jk_search *q, const struct val *v, const char *lo,
                      const char *hi, int as_text)
{
    int64_t a = v->lo_ms, b = v->hi_ms;
    switch (v->pfx) {
    case P_EQ:
    case P_NE:
        sb_fmt(sb, v->pfx == P_EQ ? "(%s >= " : "(%s < ", lo);
        sb_ms(sb, a, as_text);
        sb_fmt(sb, v->pfx == P_EQ ? " AND %s <= " : " OR %s > ", hi);
        sb_ms(sb, b, as_text);
        sb_put(sb, ")");
        break;
    case P_GT:
    case P_SA:
        sb_fmt(sb, "%s > ", v->pfx == P_GT ? hi : lo);
        sb_ms(sb, b, as_text);
        break;
    case P_LT:
    case P_EB:
        sb_fmt(sb, "%s < ", v->pfx == P_LT ? lo : hi);
        sb_ms(sb, a, as_text);
        break;
    case P_GE:
    case P_LE:
        if (v->pfx == P_GE) {
            sb_fmt(sb, "(%s > ", hi);
            sb_ms(sb, b, as_text);
        } else {
            sb_fmt(sb, "(%s < ", lo);
            sb_ms(sb, a, as_text);
        }
        sb_fmt(sb, " OR (%s >= ", lo);
        sb_ms(sb, a, as_text);
        sb_fmt(sb, " AND %s <= ", hi);
        sb_ms(sb, b, as_text);
        sb_put(sb, "))");
        break;
    case P_AP: {
        /* Approximately: the search range widened by a tenth of its distance from now (at
         * least a day), overlapping the target. */
        int64_t mid = a / 2 + b / 2,
                gap = q->o.now_ms > mid ? q->o.now_ms - mid : mid - q->o.now_ms;
        int64_t w = gap / 10 > 86400000 ? gap / 10 : 86400000;
        sb_fmt(sb, "(%s <= ", lo);
        sb_ms(sb, b > INT64_MAX - w ? INT64_MAX : b + w, as_text);
        sb_fmt(sb, " AND %s >= ", hi);
        sb_ms(sb, a < INT64_MIN + w ? INT64_MIN : a - w, as_text);
        sb_put(sb, ")");
        break;
    }
    }
}

/* A number value against the target's value, the middle of its precision range [lo, hi]:
 * eq and ne use the search value's precision range (100 is 99.5 <= x < 100.5), gt lt ge le
 * the exact value, sa/eb the range, ap 10 % of the value. */
static void emit_number(struct sb *sb, const struct val *v, const char *lo, const char *hi)
{
    char x[160];
    snprintf(x, sizeof x, "((%s + %s) / 2)", lo, hi);
    static const char *const ops[] = {[P_GT] = ">", [P_LT] = "<", [P_GE] = ">=", [P_LE] = "<="};
    switch (v->pfx) {
    case P_EQ:
    case P_NE:
        sb_fmt(sb, v->pfx == P_EQ ? "(%s >= " : "(%s < ", x);
        sb_dbl(sb, v->lo);
        sb_fmt(sb, v->pfx == P_EQ ? " AND %s < " : " OR %s >= ", x);
        sb_dbl(sb, v->hi);
        sb_put(sb, ")");
        break;
    case P_GT:
    case P_LT:
    case P_GE:
    case P_LE:
        sb_fmt(sb, "%s %s ", x, ops[v->pfx]);
        sb_dbl(sb, v->num);
        break;
    case P_SA:
        sb_fmt(sb, "%s >= ", x);
        sb_dbl(sb, v->hi);
        break;
    case P_EB:
        sb_fmt(sb, "%s < ", x);
        sb_dbl(sb, v->lo);
        break;
    case P_AP: {
        double w = fabs(v->num) / 10;
        sb_fmt(sb, "(%s >= ", x);
        sb_dbl(sb, w > 0 ? v->num - w : v->lo);
        sb_fmt(sb, " AND %s <= ", x);
        sb_dbl(sb, w > 0 ? v->num + w : v->hi);
        sb_put(sb, ")");
        break;
    }
    }
}

static void emit_token(struct sb *sb, const struct val *v, const char *sys, const char *code)
{
    if (!v->s1 && !v->s2) {
        sb_put(sb, "1 = 0"); /* a URL as a composite's reference: never indexed so */
    } else if (v->s1 && v->s2) {
        sb_fmt(sb, "(%s = ", sys);
        sb_text(sb, v->s1);
        sb_fmt(sb, " AND %s = ", code);
        sb_text(sb, v->s2);
        sb_put(sb, ")");
    } else if (v->s1) {
        sb_fmt(sb, "%s = ", sys);
        sb_text(sb, v->s1);
    } else {
        sb_fmt(sb, "%s = ", code);
        sb_text(sb, v->s2);
    }
}

/* Starts with v->s1 (normalised), compared byte by byte so that the index range is exact. */
static void emit_prefix(struct sb *sb, const struct val *v, const char *col)
{
    if (!*v->s1 && !v->s2) {
        sb_put(sb, "1 = 1");
        return;
    }
    sb_fmt(sb, "(%s%s >= ", col, sb->coll);
    sb_text(sb, v->s1);
    if (v->s2) {
        sb_fmt(sb, " AND %s%s < ", col, sb->coll);
        sb_text(sb, v->s2);
    }
    sb_put(sb, ")");
}

static void emit_quantity(struct sb *sb, const struct val *v, const char *lo, const char *hi,
                          const char *sys, const char *code)
{
    sb_put(sb, "(");
    emit_number(sb, v, lo, hi);
    if (v->s1) {
        sb_fmt(sb, " AND %s = ", sys);
        sb_text(sb, v->s1);
    }
    if (v->s2) {
        sb_fmt(sb, " AND %s = ", code);
        sb_text(sb, v->s2);
    }
    sb_put(sb, ")");
}

/* One component (the second of a composite) against the composite row columns. */
static void emit_component(struct sb *sb, const struct jk_search *q, enum jk_sp_type t,
                           const struct val *v, const char *al)
{
    char c1[64], c2[64], c3[64], c4[64], c5[64];
    snprintf(c1, sizeof c1, "%s.system2", al);
    snprintf(c2, sizeof c2, "%s.code2", al);
    snprintf(c3, sizeof c3, "%s.lo2", al);
    snprintf(c4, sizeof c4, "%s.hi2", al);
    snprintf(c5, sizeof c5, "%s.text2", al);
    switch (t) {
    case JK_SP_TOKEN: emit_token(sb, v, c1, c2); break;
    case JK_SP_QUANTITY: emit_quantity(sb, v, c3, c4, c1, c2); break;
    case JK_SP_NUMBER: emit_number(sb, v, c3, c4); break;
    case JK_SP_DATE: emit_date(sb, q, v, c3, c4, 0); break;
    case JK_SP_STRING: emit_prefix(sb, v, c5); break;
    case JK_SP_URI:
        sb_fmt(sb, "%s = ", c2);
        sb_text(sb, v->s1);
        break;
    case JK_SP_REFERENCE: emit_token(sb, v, c1, c2); break;
    default: sb_put(sb, "1 = 0"); break;
    }
}

/* One OR'ed value of a plain condition, on the index row alias al. */
static void emit_value(struct sb *sb, const struct jk_search *q, const struct cond *c,
                       const struct val *v, const char *al)
{
    char a1[64], a2[64], a3[64], a4[64];
    switch (c->vtype) {
    case JK_SP_STRING:
        snprintf(a1, sizeof a1, "%s.norm", al);
        if (c->mod == M_EXACT) {
            sb_fmt(sb, "%s.exact = ", al);
            sb_text(sb, v->s3);
        } else if (c->mod == M_CONTAINS) {
            sb_fmt(sb, "%s LIKE ", a1);
            sb_text(sb, v->s4);
            sb_put(sb, " ESCAPE '\\'");
        } else {
            emit_prefix(sb, v, a1);
        }
        break;
    case JK_SP_TOKEN:
        snprintf(a1, sizeof a1, "%s.system", al);
        snprintf(a2, sizeof a2, "%s.code", al);
        snprintf(a3, sizeof a3, "%s.text", al);
        if (c->mod == M_TEXT) {
            sb_put(sb, "(");
            emit_prefix(sb, v, a3);
            sb_fmt(sb, " OR %s LIKE ", a3);
            sb_text(sb, v->s4);
            sb_put(sb, " ESCAPE '\\')");
        } else if (c->mod == M_OF_TYPE) {
            /* "<code>:of-type" rows: system and code of the identifier's type, the value as
             * the row's text. */
            sb_fmt(sb, "(%s = ", a1);
            sb_text(sb, v->s1);
            sb_fmt(sb, " AND %s = ", a2);
            sb_text(sb, v->s2);
            sb_fmt(sb, " AND %s = ", a3);
            sb_text(sb, v->s3);
            sb_put(sb, ")");
        } else {
            emit_token(sb, v, a1, a2);
        }
        break;
    case JK_SP_DATE:
        snprintf(a1, sizeof a1, "%s.lo", al);
        snprintf(a2, sizeof a2, "%s.hi", al);
        emit_date(sb, q, v, a1, a2, 0);
        break;
    case JK_SP_NUMBER:
        snprintf(a1, sizeof a1, "%s.lo", al);
        snprintf(a2, sizeof a2, "%s.hi", al);
        emit_number(sb, v, a1, a2);
        break;
    case JK_SP_QUANTITY:
        snprintf(a1, sizeof a1, "%s.lo", al);
        snprintf(a2, sizeof a2, "%s.hi", al);
        snprintf(a3, sizeof a3, "%s.system", al);
        snprintf(a4, sizeof a4, "%s.code", al);
        emit_quantity(sb, v, a1, a2, a3, a4);
        break;
    case JK_SP_REFERENCE:
        if (v->s3) {
            sb_fmt(sb, "%s.url = ", al);
            sb_text(sb, v->s3);
        } else if (v->s1) {
            sb_fmt(sb, "(%s.target_type = ", al);
            sb_text(sb, v->s1);
            sb_fmt(sb, " AND %s.target_id = ", al);
            sb_text(sb, v->s2);
            sb_put(sb, ")");
        } else {
            sb_fmt(sb, "%s.target_id = ", al);
            sb_text(sb, v->s2);
        }
        break;
    case JK_SP_URI:
        snprintf(a1, sizeof a1, "%s.value", al);
        if (c->mod == M_BELOW) {
            emit_prefix(sb, v, a1);
        } else if (c->mod == M_ABOVE) {
            sb_fmt(sb, "(length(%s) > 0 AND %s = substr(CAST(", a1, a1);
            sb_text(sb, v->s1);
            sb_fmt(sb, " AS TEXT), 1, length(%s)))", a1);
        } else {
            sb_fmt(sb, "%s = ", a1);
            sb_text(sb, v->s1);
        }
        break;
    case JK_SP_COMPOSITE:
        snprintf(a1, sizeof a1, "%s.system1", al);
        snprintf(a2, sizeof a2, "%s.code1", al);
        sb_put(sb, "(");
        emit_token(sb, v, a1, a2);
        sb_put(sb, " AND ");
        emit_component(sb, q, c->c2, v->second, al);
        sb_put(sb, ")");
        break;
    default: sb_put(sb, "1 = 0"); break;
    }
}

enum emode {
    E_EXISTS, /* a condition on the resource whose id is iref */
    E_IDSET,  /* SELECT ... AS id: the ids of the matching resources */
    E_DRIVER  /* E_IDSET, driving the query (duplicates are grouped away by the caller) */
};

static void emit_cond(struct sb *sb, const struct jk_search *q, const struct cond *c,
                      enum emode mode, const char *iref, const char *rv);

/* Whether c can list its matches (E_IDSET), and so drive a query. */
static int is_drivable(const struct cond *c)
{
    if (c->kind == C_HAS) return is_drivable(c->has);
    if (c->kind != C_PARAM) return 1;
    for (size_t i = 0; i < c->n_chain; i++)
        if (!is_drivable(c->chain[i])) return 0;
    return c->mod != M_MISSING && c->mod != M_NOT;
}

/* "SELECT al.col AS id FROM tbl al WHERE al.type = ?" or, correlated,
 * "EXISTS (SELECT 1 FROM tbl al WHERE al.type = ? AND al.idcol = iref"; the caller adds
 * its conditions and closes with sb_close(). */
static const char *emit_open(struct sb *sb, const char *tbl, const char *type, const char *col,
                             enum emode mode, const char *iref, int is_not)
{
    const char *al = sb_alias(sb);
    if (mode == E_EXISTS)
        sb_fmt(sb, "%sEXISTS (SELECT 1 FROM %s %s WHERE %s.type = ", is_not ? "NOT " : "", tbl, al,
               al);
    else
        sb_fmt(sb, "SELECT %s.%s AS id FROM %s %s WHERE %s.type = ", al, col, tbl, al, al);
    sb_text(sb, type);
    if (mode == E_EXISTS) sb_fmt(sb, " AND %s.%s = %s", al, col, iref);
    return al;
}

static void emit_param(struct sb *sb, const char *al, const char *param)
{
    sb_fmt(sb, " AND %s.param = ", al);
    sb_text(sb, param);
}

/* " AND (" opening a condition on an index row's values; correlated (one resource's rows),
 * hidden from the index choice (struct dialect). */
static void open_values(struct sb *sb, enum emode mode)
{
    sb_fmt(sb, " AND %s(", mode == E_EXISTS ? sb->dl->no_index : "");
}

static void sb_close(struct sb *sb, enum emode mode)
{
    if (mode == E_EXISTS) sb_put(sb, ")");
}

static void emit_values(struct sb *sb, const struct jk_search *q, const struct cond *c,
                        const char *al, enum emode mode)
{
    /* Tokens with a system and a code each: the codes alone, as IN, let the index range on
     * code (an OR of ANDs makes SQLite scan every row of the parameter). */
    int is_codes = c->vtype == JK_SP_TOKEN && c->mod == M_NONE && mode != E_EXISTS;
    for (size_t i = 0; is_codes && i < c->n_vals; i++)
        is_codes = c->vals[i].s1 && c->vals[i].s2;
    if (is_codes) {
        sb_fmt(sb, " AND %s.code IN (", al);
        for (size_t i = 0; i < c->n_vals; i++) {
            if (i) sb_put(sb, ", ");
            sb_text(sb, c->vals[i].s2);
        }
        sb_put(sb, ")");
    }
    open_values(sb, mode);
    for (size_t i = 0; i < c->n_vals; i++) {
        if (i) sb_put(sb, " OR ");
        emit_value(sb, q, c, &c->vals[i], al);
    }
    sb_put(sb, ")");
}

static void emit_cond(struct sb *sb, const struct jk_search *q, const struct cond *c,
                      enum emode mode, const char *iref, const char *rv)
{
    const char *al;
    char col[64];
    if (sb->rc) return;
    switch (c->kind) {
    case C_ID:
        if (mode == E_EXISTS) {
            sb_fmt(sb, "%s IN (", iref);
        } else {
            al = emit_open(sb, "resource_version", c->type, "id", mode, NULL, 0);
            sb_fmt(sb, " AND %s.is_current = 1 AND %s.deleted = 0 AND %s.id IN (", al, al, al);
        }
        /* a golden person's records, also when it has been merged into another since */
        for (int k = 0; k < (c->is_person ? 2 : 1); k++) {
            if (c->is_person)
                sb_put(sb, k ? ") OR person_id IN (SELECT merged_into FROM mpi_person WHERE id IN ("
                             : "SELECT patient_id FROM mpi_record WHERE person_id IN (");
            for (size_t i = 0; i < c->n_vals; i++) {
                if (i) sb_put(sb, ", ");
                sb_text(sb, c->vals[i].s2);
            }
        }
        sb_put(sb, c->is_person ? ")))" : ")");
        return;
    case C_LASTUPDATED:
        if (mode == E_EXISTS && rv) {
            snprintf(col, sizeof col, "%s.last_updated", rv);
            sb_put(sb, "(");
        } else {
            al = emit_open(sb, "resource_version", c->type, "id", mode, iref, 0);
            sb_fmt(sb, " AND %s.is_current = 1 AND %s.deleted = 0 AND (", al, al);
            snprintf(col, sizeof col, "%s.last_updated", al);
        }
        for (size_t i = 0; i < c->n_vals; i++) {
            if (i) sb_put(sb, " OR ");
            emit_date(sb, q, &c->vals[i], col, col, 1);
        }
        sb_put(sb, ")");
        if (!(mode == E_EXISTS && rv)) sb_close(sb, mode);
        return;
    case C_HAS:
        al = emit_open(sb, "idx_reference", c->has_type, "target_id", mode, iref, 0);
        sb_fmt(sb, " AND %s.param = ", al);
        sb_text(sb, c->has_param);
        sb_fmt(sb, " AND %s.target_type = ", al);
        sb_text(sb, c->type);
        snprintf(col, sizeof col, "%s.id", al);
        emit_scope(sb, q, c->has_type, col);
        if (mode == E_EXISTS || !is_drivable(c->has)) {
            sb_put(sb, " AND ");
            emit_cond(sb, q, c->has, E_EXISTS, col, NULL);
        } else {
            sb_fmt(sb, " AND %s IN (", col);
            emit_cond(sb, q, c->has, E_IDSET, NULL, NULL);
            sb_put(sb, ")");
        }
        sb_close(sb, mode);
        return;
    case C_PARAM: break;
    }
    const char *tbl = table_of(c->vtype);
    if (c->mod == M_MISSING || c->mod == M_NOT) {
        /* Only as a condition on a given resource: "has no such row". */
        al = emit_open(sb, tbl, c->type, "id", E_EXISTS, iref, c->mod == M_NOT || c->is_missing);
        emit_param(sb, al, c->row_param);
        if (c->mod == M_NOT) emit_values(sb, q, c, al, E_EXISTS);
        sb_close(sb, E_EXISTS);
        return;
    }
    al = emit_open(sb, tbl, c->type, "id", mode, iref, 0);
    emit_param(sb, al, c->row_param);
    if (c->n_chain) {
        snprintf(col, sizeof col, "%s.target_id", al);
        open_values(sb, mode);
        for (size_t i = 0; i < c->n_chain; i++) {
            sb_fmt(sb, "%s(%s.target_type = ", i ? " OR " : "", al);
            sb_text(sb, c->chain_types[i]);
            emit_scope(sb, q, c->chain_types[i], col);
            if (mode == E_EXISTS || !is_drivable(c->chain[i])) {
                sb_put(sb, " AND ");
                emit_cond(sb, q, c->chain[i], E_EXISTS, col, NULL);
            } else {
                sb_fmt(sb, " AND %s IN (", col);
                emit_cond(sb, q, c->chain[i], E_IDSET, NULL, NULL);
                sb_put(sb, ")");
            }
            sb_put(sb, ")");
        }
        sb_put(sb, ")");
    } else {
        emit_values(sb, q, c, al, mode);
    }
    sb_close(sb, mode);
}

/* ---- the query: plan, page, total ---- */

/* A resource of the result. */
struct hit {
    int64_t seq;
    const char *type, *id, *body;
    size_t body_len;
    struct kval k[JK_SEARCH_MAX_SORT];
};

static const char text_high[] = "\xF4\x8F\xBF\xBF"; /* U+10FFFF: after every other text */

/* Whether the sort needs keys computed from index rows (and so a wrapping query). */
static int has_sub_keys(const struct jk_search *q)
{
    for (size_t i = 0; i < q->n_sort; i++)
        if (q->sort[i].kind == SK_SUB) return 1;
    return 0;
}

/* The value a sort key takes for one resource: the smallest of its values ascending, the
 * largest descending; a resource without one sorts last either way. */
static void emit_sortkey(struct sb *sb, const struct jk_search *q, const struct sortkey *k)
{
    const char *tbl = table_of(k->sp->type), *al = sb_alias(sb), *col;
    switch (k->sp->type) {
    case JK_SP_STRING: col = "norm"; break;
    case JK_SP_TOKEN: col = "code"; break;
    case JK_SP_URI: col = "value"; break;
    case JK_SP_REFERENCE: col = "url"; break;
    case JK_SP_DATE: col = k->is_desc ? "hi" : "lo"; break;
    default: col = NULL; break; /* number, quantity: the value */
    }
    char e[128];
    if (col)
        snprintf(e, sizeof e, "%s.%s", al, col);
    else
        snprintf(e, sizeof e, "(%s.lo + %s.hi) / 2", al, al);
    sb_fmt(sb, "COALESCE((SELECT %s(%s) FROM %s %s WHERE %s.type = ", k->is_desc ? "MAX" : "MIN", e,
           tbl, al, al);
    sb_text(sb, q->type);
    sb_fmt(sb, " AND %s.id = r.id", al);
    emit_param(sb, al, k->sp->code);
    sb_put(sb, "), CAST(");
    if (k->vk == VK_TEXT) {
        sb_text(sb, k->is_desc ? "" : text_high);
        sb_put(sb, " AS TEXT))");
    } else if (k->vk == VK_INT) {
        sb_int(sb, k->is_desc ? INT64_MIN : INT64_MAX);
        sb_put(sb, " AS BIGINT))");
    } else {
        sb_dbl(sb, k->is_desc ? -1e308 : 1e308);
        sb_put(sb, " AS DOUBLE PRECISION))");
    }
}

static void sb_kval(struct sb *sb, enum vkind vk, const struct kval *k)
{
    if (vk == VK_TEXT) {
        struct sarg *g = sb_arg(sb);
        if (g) *g = (struct sarg){VK_TEXT, k->s ? k->s : "", k->s ? k->n : 0, 0, 0};
    } else if (vk == VK_INT) {
        sb_int(sb, k->i);
    } else {
        sb_dbl(sb, k->d);
    }
}

/* The rows after (or, for a previous page, before) the cursor in sort order. names[i] are
 * the key expressions; seq is the tie-break. */
static void emit_keyset(struct sb *sb, const struct jk_search *q, const struct cursor *cur,
                        const char *const *names, const char *seq)
{
    int tie_desc = q->n_sort && q->sort[0].is_desc, is_uniform = 1;
    for (size_t i = 0; i < q->n_sort; i++)
        is_uniform &= q->sort[i].is_desc == tie_desc;
    if (is_uniform) {
        /* One direction: a row value, (k1, k2, seq) > (?, ?, ?), which an index in that
         * order can seek to (both engines). */
        sb_put(sb, "(");
        for (size_t i = 0; i < q->n_sort; i++)
            sb_fmt(sb, "%s, ", names[i]);
        sb_fmt(sb, "%s) %s (", seq, tie_desc != cur->is_prev ? "<" : ">");
        for (size_t i = 0; i < q->n_sort; i++) {
            sb_kval(sb, q->sort[i].vk, &cur->k[i]);
            sb_put(sb, ", ");
        }
        sb_int(sb, cur->seq);
        sb_put(sb, ")");
        return;
    }
    sb_put(sb, "(");
    for (size_t i = 0; i <= q->n_sort; i++) {
        if (i) sb_put(sb, " OR ");
        sb_put(sb, "(");
        for (size_t j = 0; j < i; j++) {
            sb_fmt(sb, "%s = ", names[j]);
            sb_kval(sb, q->sort[j].vk, &cur->k[j]);
            sb_put(sb, " AND ");
        }
        int is_desc = i < q->n_sort ? q->sort[i].is_desc : tie_desc;
        sb_fmt(sb, "%s %s ", i < q->n_sort ? names[i] : seq, is_desc != cur->is_prev ? "<" : ">");
        if (i < q->n_sort)
            sb_kval(sb, q->sort[i].vk, &cur->k[i]);
        else
            sb_int(sb, cur->seq);
        sb_put(sb, ")");
    }
    sb_put(sb, ")");
}

/* FROM and WHERE of the query. With a driver, its matches are the outer loop (CROSS JOIN
 * keeps SQLite from reordering) and the other conditions are checked per candidate; without,
 * the type's current resources are walked in seq order. */
/* " AND (what the caller may see of type)" for the resource of type whose id is in column
 * idcol: the page's resources, included ones, and those a chain or _has looks into. */
static void emit_scope(struct sb *sb, const struct jk_search *q, const char *type,
                       const char *idcol)
{
    if (!q->o.scope) return;
    struct jk_search_scope sc;
    memset(&sc, 0, sizeof sc);
    q->o.scope(q->o.scope_arg, type, &sc);
    if (sc.mode == JK_SCOPE_ALL) return;
    const char *const *comp = jk_sp_patient_compartment(type);
    int is_patient = !strcmp(type, "Patient"), any = 0;
    sb_put(sb, " AND (");
    if (sc.mode == JK_SCOPE_SOME && sc.n_patients && (is_patient || comp)) {
        if (is_patient) {
            sb_fmt(sb, "%s IN (", idcol);
        } else {
            const char *z = sb_alias(sb);
            sb_fmt(sb, "EXISTS (SELECT 1 FROM idx_reference %s WHERE %s.type = ", z, z);
            sb_text(sb, type);
            sb_fmt(sb, " AND %s.id = %s AND %s.target_type = 'Patient' AND %s.param IN (", z, idcol,
                   z, z);
            for (size_t i = 0; comp[i]; i++) {
                if (i) sb_put(sb, ", ");
                sb_text(sb, comp[i]);
            }
            sb_fmt(sb, ") AND %s.target_id IN (", z);
        }
        for (size_t i = 0; i < sc.n_patients; i++) {
            if (i) sb_put(sb, ", ");
            sb_text(sb, sc.patients[i]);
        }
        sb_put(sb, is_patient ? ")" : "))");
        any = 1;
    }
    if (sc.mode == JK_SCOPE_SOME && sc.n_orgs) {
        const char *o = sb_alias(sb);
        sb_fmt(sb, "%sEXISTS (SELECT 1 FROM res_owner %s WHERE %s.type = ", any ? " OR " : "", o,
               o);
        sb_text(sb, type);
        sb_fmt(sb, " AND %s.id = %s AND %s.org IN (", o, idcol, o);
        for (size_t i = 0; i < sc.n_orgs; i++) {
            if (i) sb_put(sb, ", ");
            sb_text(sb, sc.orgs[i]);
        }
        sb_put(sb, "))");
        any = 1;
    }
    sb_put(sb, any ? ")" : "1 = 0)");
}

static void emit_from_where(struct sb *sb, const struct jk_search *q, int driver)
{
    if (driver >= 0) {
        sb_put(sb, " FROM (");
        emit_cond(sb, q, q->conds[driver], E_DRIVER, NULL, NULL);
        sb_put(sb, ") m CROSS JOIN resource_version r WHERE r.type = ");
        sb_text(sb, q->type);
        sb_put(sb, " AND r.id = m.id");
    } else {
        sb_put(sb, " FROM resource_version r WHERE r.type = ");
        sb_text(sb, q->type);
    }
    sb_put(sb, " AND r.is_current = 1 AND r.deleted = 0");
    emit_scope(sb, q, q->type, "r.id");
    for (size_t i = 0; i < q->n_conds; i++) {
        if ((int)i == driver) continue;
        sb_put(sb, " AND ");
        emit_cond(sb, q, q->conds[i], E_EXISTS, "r.id", "r");
    }
}

enum what { W_PAGE, W_IDS };

/* The page query: [SELECT seq, id, body, keys... FROM (...) q WHERE keyset] ORDER BY ...
 * LIMIT n. */
static void emit_page(struct sb *sb, const struct jk_search *q, int driver,
                      const struct cursor *cur, size_t limit, enum what what)
{
    int wrap = what == W_PAGE && has_sub_keys(q);
    size_t n_sort = what == W_PAGE ? q->n_sort : 0;
    const char *names[JK_SEARCH_MAX_SORT];
    for (size_t i = 0; i < n_sort; i++)
        names[i] = wrap                       ? jk_arena_printf(sb->a, "q.k%zu", i)
                   : q->sort[i].kind == SK_ID ? "r.id"
                                              : "r.last_updated";
    for (size_t i = 0; i < n_sort; i++)
        if (!names[i]) sb->rc = JK_ENOMEM;
    const char *seq = wrap ? "q.seq" : "r.seq";
    if (wrap) {
        sb_put(sb, "SELECT q.seq, q.id, q.body");
        for (size_t i = 0; i < n_sort; i++)
            sb_fmt(sb, ", q.k%zu", i);
        sb_put(sb, " FROM (SELECT r.seq AS seq, r.id AS id, r.body AS body");
        for (size_t i = 0; i < n_sort; i++) {
            sb_put(sb, ", ");
            if (q->sort[i].kind == SK_SUB)
                emit_sortkey(sb, q, &q->sort[i]);
            else
                sb_put(sb, q->sort[i].kind == SK_ID ? "r.id" : "r.last_updated");
            sb_fmt(sb, " AS k%zu", i);
        }
        emit_from_where(sb, q, driver);
        if (driver >= 0) sb_put(sb, " GROUP BY r.seq"); /* a resource the driver lists twice */
        sb_put(sb, ") q");
        if (cur) {
            sb_put(sb, " WHERE ");
            emit_keyset(sb, q, cur, names, seq);
        }
    } else {
        sb_put(sb, what == W_PAGE ? "SELECT r.seq, r.id, r.body" : "SELECT r.seq, r.id");
        for (size_t i = 0; i < n_sort; i++)
            sb_fmt(sb, ", %s", names[i]);
        emit_from_where(sb, q, driver);
        if (cur) {
            sb_put(sb, " AND ");
            emit_keyset(sb, q, cur, names, seq);
        }
        if (driver >= 0) sb_put(sb, " GROUP BY r.seq");
    }
    int is_prev = cur && cur->is_prev, tie_desc = n_sort && q->sort[0].is_desc;
    sb_put(sb, " ORDER BY ");
    for (size_t i = 0; i < n_sort; i++)
        sb_fmt(sb, "%s%s, ", names[i], q->sort[i].is_desc != is_prev ? " DESC" : "");
    sb_fmt(sb, "%s%s LIMIT ", seq, tie_desc != is_prev ? " DESC" : "");
    sb_int(sb, (int64_t)limit);
}

/* Runs a query that returns one integer. */
static jk_rc query_int(jk_conn *c, struct sb *sb, int64_t *out)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = sb_prepare(sb, c, &s);
    jk_buf_free(&sb->b);
    if (rc) return rc;
    rc = jk_stmt_step(s, &has_row);
    *out = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
    jk_stmt_finalize(s);
    return rc;
}

/* Which condition should drive the query, or -1 to walk the type in sort order. A
 * condition's matches are counted up to PROBE_LIMIT (an index range scan); the fewest win.
 * Walking the type is better when every condition matches many: the first page is then
 * found after a few rows. docs/internals/search.md, "Query plans". */
static int rank(const struct cond *c)
{
    if (c->kind == C_ID) return 0;
    if (c->kind == C_HAS || c->n_chain) return 4;
    if (c->kind == C_LASTUPDATED) return 6;
    switch (c->vtype) {
    case JK_SP_REFERENCE: return 1;
    case JK_SP_TOKEN: return c->mod == M_TEXT ? 5 : 2;
    case JK_SP_STRING: return c->mod == M_EXACT ? 2 : c->mod == M_CONTAINS ? 7 : 3;
    case JK_SP_URI: return 3;
    default: return 5;
    }
}

static jk_rc choose_driver(jk_conn *c, struct jk_search *q, int *driver)
{
    *driver = -1;
    if (!dialect_of(c)->is_probing) return JK_OK;
    int order[JK_SEARCH_MAX_PARAMS];
    size_t n = 0;
    for (size_t i = 0; i < q->n_conds; i++)
        if (is_drivable(q->conds[i])) order[n++] = (int)i;
    for (size_t i = 1; i < n; i++) /* stable insertion sort by rank */
        for (size_t j = i; j > 0 && rank(q->conds[order[j]]) < rank(q->conds[order[j - 1]]); j--) {
            int t = order[j];
            order[j] = order[j - 1];
            order[j - 1] = t;
        }
    int64_t best = INT64_MAX;
    for (size_t i = 0; i < n && i < MAX_PROBES; i++) {
        struct sb sb;
        sb_init(&sb, q->a, c);
        sb_put(&sb, "SELECT COUNT(*) FROM (");
        emit_cond(&sb, q, q->conds[order[i]], E_IDSET, NULL, NULL);
        sb_put(&sb, " LIMIT ");
        sb_int(&sb, PROBE_LIMIT);
        sb_put(&sb, ") p");
        int64_t count;
        jk_rc rc = query_int(c, &sb, &count);
        if (rc) return rc;
        if (count < best) {
            best = count;
            *driver = order[i];
        }
        if (count < PROBE_ENOUGH) break;
    }
    if (best >= PROBE_LIMIT && !has_sub_keys(q)) *driver = -1;
    return JK_OK;
}

static jk_rc count_matches(jk_conn *c, struct jk_search *q, int driver, int64_t *total)
{
    struct sb sb;
    sb_init(&sb, q->a, c);
    sb_put(&sb, driver >= 0 ? "SELECT COUNT(DISTINCT r.seq)" : "SELECT COUNT(*)");
    emit_from_where(&sb, q, driver);
    return query_int(c, &sb, total);
}

/* Runs the page query; rows go to hits (at most max). */
static jk_rc fetch_page(jk_conn *c, struct jk_search *q, int driver, const struct cursor *cur,
                        size_t limit, enum what what, struct hit *hits, size_t *n_hits)
{
    struct sb sb;
    sb_init(&sb, q->a, c);
    emit_page(&sb, q, driver, cur, limit, what);
    jk_stmt *s;
    jk_rc rc = sb_prepare(&sb, c, &s);
    jk_buf_free(&sb.b);
    if (rc) return rc;
    size_t n = 0, key0 = what == W_PAGE ? 3 : 2;
    int has_row = 0;
    while (n < limit && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        struct hit *h = &hits[n];
        size_t len;
        const char *p;
        memset(h, 0, sizeof *h);
        h->seq = jk_stmt_col_int(s, 0);
        h->type = q->type;
        p = jk_stmt_col_text(s, 1, &len);
        if (!(h->id = jk_arena_strndup(q->a, p ? p : "", len))) rc = JK_ENOMEM;
        if (what == W_PAGE) {
            p = jk_stmt_col_text(s, 2, &len);
            h->body = jk_arena_strndup(q->a, p ? p : "{}", p ? len : 2);
            h->body_len = p ? len : 2;
            if (!h->body) rc = JK_ENOMEM;
            for (size_t i = 0; i < q->n_sort; i++) {
                struct kval *k = &h->k[i];
                int col = (int)(key0 + i);
                if (q->sort[i].vk == VK_INT) {
                    k->i = jk_stmt_col_int(s, col);
                } else if (q->sort[i].vk == VK_DBL) {
                    k->d = jk_stmt_col_double(s, col);
                } else {
                    p = jk_stmt_col_text(s, col, &len);
                    k->s = jk_arena_strndup(q->a, p ? p : "", len);
                    k->n = len;
                    if (!k->s) rc = JK_ENOMEM;
                }
            }
        }
        if (rc) break;
        n++;
    }
    jk_stmt_finalize(s);
    *n_hits = n;
    return rc;
}

jk_rc jk_fhir_search_match(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const char *type,
                           const char *const *keys, const char *const *values, size_t n, size_t max,
                           const char ***ids, size_t *n_ids)
{
    struct jk_search_opts o = {.flags = JK_SEARCH_CRITERIA, .now_ms = jk_time_now_ms()};
    struct jk_search *q;
    *ids = NULL;
    *n_ids = 0;
    jk_rc rc = jk_fhir_search_parse(a, d, type, keys, values, n, &o, &q);
    if (rc) return rc;
    int driver;
    if ((rc = choose_driver(c, q, &driver))) return rc;
    struct hit *hits = jk_arena_alloc(a, (max ? max : 1) * sizeof *hits);
    const char **list = jk_arena_alloc(a, (max ? max : 1) * sizeof *list);
    if (!hits || !list) return JK_ENOMEM;
    size_t got = 0;
    if (max && (rc = fetch_page(c, q, driver, NULL, max, W_IDS, hits, &got))) return rc;
    for (size_t i = 0; i < got; i++)
        list[i] = hits[i].id;
    *ids = list;
    *n_ids = got;
    return JK_OK;
}

/* ---- _include and _revinclude ---- */

struct rset {
    struct hit *h;
    size_t n, cap;
    size_t n_match; /* h[0 .. n_match) are the matches, the rest included */
};

static int rset_has(const struct rset *rs, const char *type, const char *id)
{
    for (size_t i = 0; i < rs->n; i++)
        if (!strcmp(rs->h[i].id, id) && !strcmp(rs->h[i].type, type)) return 1;
    return 0;
}

struct pair {
    const char *type, *id;
};

/* Reads the (type, id) pairs a query returns, skipping those already in rs or in out. */
static jk_rc read_pairs(jk_conn *c, struct jk_search *q, struct sb *sb, const struct rset *rs,
                        struct pair *out, size_t *n, size_t max)
{
    jk_stmt *s;
    jk_rc rc = sb_prepare(sb, c, &s);
    jk_buf_free(&sb->b);
    if (rc) return rc;
    int has_row = 0;
    while (*n < max && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t lt, li;
        const char *t = jk_stmt_col_text(s, 0, &lt), *id = jk_stmt_col_text(s, 1, &li);
        if (!t || !id || !lt || !li) continue;
        struct pair p = {jk_arena_strndup(q->a, t, lt), jk_arena_strndup(q->a, id, li)};
        if (!p.type || !p.id) {
            rc = JK_ENOMEM;
            break;
        }
        if (rset_has(rs, p.type, p.id)) continue;
        size_t k = 0;
        while (k < *n && (strcmp(out[k].id, p.id) || strcmp(out[k].type, p.type)))
            k++;
        if (k == *n) out[(*n)++] = p;
    }
    jk_stmt_finalize(s);
    return rc;
}

/* "IN (?, ?, ...)" over the ids of rs->h[from .. to) of type t. */
static void emit_ids_of(struct sb *sb, const struct rset *rs, size_t from, size_t to, const char *t)
{
    int first = 1;
    sb_put(sb, " IN (");
    for (size_t i = from; i < to; i++) {
        if (strcmp(rs->h[i].type, t)) continue;
        if (!first) sb_put(sb, ", ");
        sb_text(sb, rs->h[i].id);
        first = 0;
    }
    sb_put(sb, ")");
}

/* The referenced (_include) or referring (_revinclude) resources of rs->h[from .. to) for
 * one include parameter, as pairs. */
static jk_rc include_pairs(jk_conn *c, struct jk_search *q, const struct incl *in,
                           const struct rset *rs, size_t from, size_t to, struct pair *out,
                           size_t *n, size_t max)
{
    /* The distinct types among the sources. */
    const char *types[64] = {NULL};
    size_t n_types = 0;
    for (size_t i = from; i < to && n_types < 64; i++) {
        size_t k = 0;
        while (k < n_types && strcmp(types[k], rs->h[i].type))
            k++;
        if (k == n_types) types[n_types++] = rs->h[i].type;
    }
    for (size_t k = 0; k < n_types && *n < max; k++) {
        const char *t = types[k];
        struct sb sb;
        sb_init(&sb, q->a, c);
        if (!in->is_rev) {
            if (in->src_type && strcmp(in->src_type, t)) continue;
            sb_put(&sb, "SELECT DISTINCT t.target_type, t.target_id FROM idx_reference t"
                        " WHERE t.type = ");
            sb_text(&sb, t);
            sb_put(&sb, " AND t.id");
            emit_ids_of(&sb, rs, from, to, t);
            if (in->target_type) {
                sb_put(&sb, " AND t.target_type = ");
                sb_text(&sb, in->target_type);
            }
        } else {
            if (in->target_type && strcmp(in->target_type, t)) continue;
            sb_put(&sb, "SELECT DISTINCT t.type, t.id FROM idx_reference t WHERE t.target_type = ");
            sb_text(&sb, t);
            sb_put(&sb, " AND t.target_id");
            emit_ids_of(&sb, rs, from, to, t);
            if (in->src_type) {
                sb_put(&sb, " AND t.type = ");
                sb_text(&sb, in->src_type);
            }
        }
        if (in->param) {
            sb_put(&sb, " AND t.param = ");
            sb_text(&sb, in->param);
        }
        sb_put(&sb, " LIMIT ");
        sb_int(&sb, (int64_t)(2 * max + 1));
        jk_rc rc = read_pairs(c, q, &sb, rs, out, n, max);
        if (rc) return rc;
    }
    return JK_OK;
}

/* Loads the current versions of pairs into rs (deleted or unknown ones are skipped). */
static jk_rc load_pairs(jk_conn *c, struct jk_search *q, const struct pair *p, size_t n,
                        struct rset *rs)
{
    if (!n) return JK_OK;
    struct sb sb;
    sb_init(&sb, q->a, c);
    sb_put(&sb, "SELECT r.seq, r.type, r.id, r.body FROM resource_version r"
                " WHERE r.is_current = 1 AND r.deleted = 0 AND (");
    unsigned char *done = jk_arena_zalloc(q->a, n);
    if (!done) return JK_ENOMEM;
    int first_type = 1;
    for (size_t i = 0; i < n; i++) {
        if (done[i]) continue;
        sb_put(&sb, first_type ? "(r.type = " : " OR (r.type = ");
        first_type = 0;
        sb_text(&sb, p[i].type);
        sb_put(&sb, " AND r.id IN (");
        for (size_t j = i, first = 1; j < n; j++) {
            if (done[j] || strcmp(p[j].type, p[i].type)) continue;
            if (!first) sb_put(&sb, ", ");
            sb_text(&sb, p[j].id);
            done[j] = 1;
            first = 0;
        }
        sb_put(&sb, ")");
        emit_scope(&sb, q, p[i].type, "r.id");
        sb_put(&sb, ")");
    }
    sb_put(&sb, ")");
    jk_stmt *s;
    jk_rc rc = sb_prepare(&sb, c, &s);
    jk_buf_free(&sb.b);
    if (rc) return rc;
    int has_row = 0;
    while (rs->n < rs->cap && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        struct hit *h = &rs->h[rs->n];
        size_t lt, li, lb;
        memset(h, 0, sizeof *h);
        h->seq = jk_stmt_col_int(s, 0);
        const char *t = jk_stmt_col_text(s, 1, &lt), *id = jk_stmt_col_text(s, 2, &li),
                   *body = jk_stmt_col_text(s, 3, &lb);
        h->type = jk_arena_strndup(q->a, t ? t : "", lt);
        h->id = jk_arena_strndup(q->a, id ? id : "", li);
        h->body = jk_arena_strndup(q->a, body ? body : "{}", body ? lb : 2);
        h->body_len = body ? lb : 2;
        if (!h->type || !h->id || !h->body) {
            rc = JK_ENOMEM;
            break;
        }
        rs->n++;
    }
    jk_stmt_finalize(s);
    return rc;
}

static jk_rc run_includes(jk_conn *c, struct jk_search *q, struct rset *rs, int *is_cut)
{
    size_t from = 0, to = rs->n;
    *is_cut = 0;
    struct pair *pairs = jk_arena_alloc(q->a, (JK_SEARCH_MAX_INCLUDED + 1) * sizeof *pairs);
    if (!pairs) return JK_ENOMEM;
    for (int round = 0; round <= JK_SEARCH_MAX_ITERATE && from < to; round++) {
        size_t n = 0, room = rs->n_match + JK_SEARCH_MAX_INCLUDED - rs->n;
        for (size_t i = 0; i < q->n_incl && n <= room; i++) {
            const struct incl *in = &q->incl[i];
            if (round > 0 && !in->is_iterate) continue;
            jk_rc rc = include_pairs(c, q, in, rs, from, to, pairs, &n, room + 1);
            if (rc) return rc;
        }
        if (n > room) {
            *is_cut = 1;
            n = room;
        }
        jk_rc rc = load_pairs(c, q, pairs, n, rs);
        if (rc) return rc;
        from = to;
        to = rs->n;
        if (*is_cut) break;
    }
    return JK_OK;
}

/* ---- the searchset Bundle ---- */

/* Appends s percent-encoded for a query string (unreserved characters and : / , as they are). */
static jk_rc put_encoded(struct jk_buf *b, const char *s)
{
    jk_rc rc = JK_OK;
    for (const unsigned char *p = (const unsigned char *)s; *p && !rc; p++) {
        unsigned char ch = *p;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == ':' || ch == '/' ||
            ch == ',') {
            rc = jk_buf_append(b, p, 1);
        } else {
            char e[3] = {'%', hexd[ch >> 4] - (ch >> 4 > 9 ? 32 : 0),
                         hexd[ch & 15] - ((ch & 15) > 9 ? 32 : 0)};
            rc = jk_buf_append(b, e, 3);
        }
    }
    return rc;
}

/* A link of this search: the kept parameters, _count, and cursor (may be NULL). */
static jk_rc put_link(struct jk_buf *b, const struct jk_search *q, const char *relation,
                      const char *cursor, int first)
{
    jk_rc rc = jk_buf_printf(b, "%s{\"relation\":\"%s\",\"url\":\"", first ? "" : ",", relation);
    if (!rc)
        rc = jk_buf_json_escape(b, q->o.base_url ? q->o.base_url : "",
                                q->o.base_url ? strlen(q->o.base_url) : 0);
    if (!rc) rc = jk_buf_printf(b, "/fhir/R4/%s?", q->type);
    struct jk_buf u;
    jk_buf_init(&u, 0);
    for (size_t i = 0; i < q->n && !rc; i++) {
        if (!q->keep[i] || !strcmp(q->keys[i], "_count")) continue;
        rc = put_encoded(&u, q->keys[i]);
        if (!rc) rc = jk_buf_puts(&u, "=");
        if (!rc) rc = put_encoded(&u, q->values[i]);
        if (!rc) rc = jk_buf_puts(&u, "&");
    }
    if (!rc) rc = jk_buf_printf(&u, "_count=%zu", q->count);
    if (!rc && cursor) rc = jk_buf_printf(&u, "&_cursor=%s", cursor);
    if (!rc) rc = jk_buf_json_escape(b, u.p, u.len);
    jk_buf_free(&u);
    if (!rc) rc = jk_buf_puts(b, "\"}");
    return rc;
}

static int in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

/* Whether the top-level element key of a resource of type node stays in a subset. */
static int keep_element(const struct jk_search *q, const struct jk_fhir_node *node, const char *key,
                        int use_elements)
{
    if (!strcmp(key, "resourceType") || !strcmp(key, "id") || !strcmp(key, "meta")) return 1;
    const struct jk_fhir_elem *e = node ? jk_fhir_elem_find(node, key, strlen(key)) : NULL;
    if (use_elements) {
        if (in_list(q->elements, q->n_elements, key)) return 1;
        const struct jk_fhir_choice *ch = e ? jk_fhir_choice_of(e) : NULL;
        return ch && in_list(q->elements, q->n_elements, jk_fhir_str(ch->name));
    }
    switch (q->summary) {
    case S_TRUE: return e && (e->flags & JK_FHIR_EF_SUMMARY);
    case S_TEXT: return !strcmp(key, "text") || (e && e->min > 0);
    case S_DATA: return strcmp(key, "text") != 0;
    default: return 1;
    }
}

/* The body of h trimmed for _summary or _elements, tagged SUBSETTED. */
static jk_rc subset(const struct jk_search *q, const struct hit *h, int use_elements,
                    const char **out, size_t *len)
{
    static const struct jk_json_limits lim = {1000, (size_t)1 << 30};
    struct jk_diag d;
    jk_diag_init(&d, q->a);
    struct json_object *res, *copy = json_object_new_object(), *meta = NULL, *tags = NULL;
    if (!copy) return JK_ENOMEM;
    if (jk_json_parse(h->body, h->body_len, &lim, &d, &res)) {
        json_object_put(copy);
        *out = h->body; /* a stored body always parses; never fail a search over it */
        *len = h->body_len;
        return JK_OK;
    }
    const struct jk_fhir_type *t = jk_fhir_type_find(h->type, strlen(h->type));
    const struct jk_fhir_node *node = t ? jk_fhir_node_at(t->node) : NULL;
    json_object_object_foreach(res, k, v)
    {
        if (keep_element(q, node, k, use_elements))
            json_object_object_add(copy, k, json_object_get(v));
    }
    if (!json_object_object_get_ex(copy, "meta", &meta)) {
        meta = json_object_new_object();
        json_object_object_add(copy, "meta", meta);
    }
    if (!json_object_is_type(meta, json_type_object)) meta = NULL; /* never so when stored */
    if (meta && !json_object_object_get_ex(meta, "tag", &tags)) {
        tags = json_object_new_array();
        json_object_object_add(meta, "tag", tags);
    }
    if (meta && tags && json_object_is_type(tags, json_type_array))
        json_object_array_add(tags, json_tokener_parse(SUBSETTED_TAG));
    *out = jk_json_text(copy, q->a, len);
    json_object_put(copy);
    json_object_put(res);
    return *out ? JK_OK : JK_ENOMEM;
}

static jk_rc put_entry(struct jk_buf *b, const struct jk_search *q, const struct hit *h,
                       int is_match, int first)
{
    int use_elements = q->n_elements > 0 && is_match;
    const char *body = h->body;
    size_t len = h->body_len;
    jk_rc rc = JK_OK;
    if (use_elements || (q->summary != S_NONE && q->summary != S_COUNT))
        rc = subset(q, h, use_elements, &body, &len);
    if (!rc)
        rc = jk_buf_printf(b, "%s{\"fullUrl\":\"%s/fhir/R4/%s/%s\",\"resource\":", first ? "" : ",",
                           q->o.base_url ? q->o.base_url : "", h->type, h->id);
    if (!rc) rc = jk_buf_append(b, body, len);
    if (!rc)
        rc = jk_buf_printf(b, ",\"search\":{\"mode\":\"%s\"}}", is_match ? "match" : "include");
    if (!rc && q->o.on_entry) q->o.on_entry(q->o.scope_arg, h->type, h->id);
    return rc;
}

static jk_rc put_outcome(struct jk_buf *b, const struct jk_search *q, int is_cut, int first)
{
    jk_rc rc = jk_buf_printf(b,
                             "%s{\"resource\":{\"resourceType\":\"OperationOutcome\","
                             "\"issue\":[",
                             first ? "" : ",");
    for (size_t i = 0; i <= q->n_warn && !rc; i++) {
        const char *msg = i < q->n_warn ? q->warn[i] : NULL;
        char cut[160];
        if (i == q->n_warn) {
            if (!is_cut) break;
            snprintf(cut, sizeof cut,
                     "more than %d resources were to be included; the rest were left out",
                     JK_SEARCH_MAX_INCLUDED);
            msg = cut;
        }
        rc = jk_buf_printf(b, "%s{\"severity\":\"warning\",\"code\":\"%s\",\"diagnostics\":\"",
                           i ? "," : "", i < q->n_warn ? "not-supported" : "too-costly");
        if (!rc) rc = jk_buf_json_escape(b, msg ? msg : "", msg ? strlen(msg) : 0);
        if (!rc) rc = jk_buf_puts(b, "\"}");
    }
    if (!rc) rc = jk_buf_puts(b, "]},\"search\":{\"mode\":\"outcome\"}}");
    return rc;
}

static jk_rc cursor_of(struct jk_search *q, const struct hit *h, int is_prev, const char **out)
{
    struct cursor cur;
    memset(&cur, 0, sizeof cur);
    cur.is_prev = is_prev;
    cur.seq = h->seq;
    for (size_t i = 0; i < q->n_sort; i++)
        cur.k[i] = h->k[i];
    return cursor_text(q, &cur, out);
}

jk_rc jk_fhir_search_run(jk_conn *c, struct jk_search *q, struct jk_buf *out)
{
    int driver;
    jk_rc rc = choose_driver(c, q, &driver);
    if (rc) return rc;
    int64_t total = -1;
    int want_page = q->count > 0 && q->summary != S_COUNT;
    if (q->total == T_ACCURATE || q->total == T_ESTIMATE || q->summary == S_COUNT ||
        (q->count == 0 && q->total != T_NONE)) {
        if ((rc = count_matches(c, q, driver, &total))) return rc;
    }
    struct rset rs = {0};
    rs.cap = q->count + 1 + (q->n_incl ? JK_SEARCH_MAX_INCLUDED : 0);
    rs.h = jk_arena_alloc(q->a, rs.cap * sizeof *rs.h);
    if (!rs.h) return JK_ENOMEM;
    size_t got = 0;
    const struct cursor *cur = q->has_cursor ? &q->cur : NULL;
    if (want_page && (rc = fetch_page(c, q, driver, cur, q->count + 1, W_PAGE, rs.h, &got)))
        return rc;
    int has_more = got > q->count;
    rs.n = rs.n_match = has_more ? q->count : got;
    if (cur && cur->is_prev) /* fetched backwards: put the page in order */
        for (size_t i = 0; i < rs.n / 2; i++) {
            struct hit t = rs.h[i];
            rs.h[i] = rs.h[rs.n - 1 - i];
            rs.h[rs.n - 1 - i] = t;
        }
    if (total < 0 && q->total != T_NONE && !cur && !has_more && want_page) total = (int64_t)got;
    /* Links: next after the last row, previous before the first. */
    const char *next = NULL, *prev = NULL;
    int is_prev = cur && cur->is_prev;
    if (rs.n && ((!is_prev && has_more) || is_prev)) rc = cursor_of(q, &rs.h[rs.n - 1], 0, &next);
    if (!rc && rs.n && ((is_prev && has_more) || (!is_prev && cur)))
        rc = cursor_of(q, &rs.h[0], 1, &prev);
    int is_cut = 0;
    if (!rc && q->n_incl && rs.n) rc = run_includes(c, q, &rs, &is_cut);
    if (rc) return rc;

    rc = jk_buf_puts(out, "{\"resourceType\":\"Bundle\",\"type\":\"searchset\"");
    if (!rc && total >= 0) rc = jk_buf_printf(out, ",\"total\":%lld", (long long)total);
    if (!rc) rc = jk_buf_puts(out, ",\"link\":[");
    if (!rc) rc = put_link(out, q, "self", q->has_cursor ? q->cursor_text : NULL, 1);
    if (!rc && next) rc = put_link(out, q, "next", next, 0);
    if (!rc && prev) rc = put_link(out, q, "previous", prev, 0);
    if (!rc) rc = jk_buf_puts(out, "],\"entry\":[");
    for (size_t i = 0; i < rs.n && !rc; i++)
        rc = put_entry(out, q, &rs.h[i], i < rs.n_match, i == 0);
    if (!rc && (q->n_warn || is_cut)) rc = put_outcome(out, q, is_cut, rs.n == 0);
    if (!rc) rc = jk_buf_puts(out, "]}");
    return rc;
}

jk_rc jk_fhir_search_bundle(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const char *type,
                            const char *const *keys, const char *const *values, size_t n,
                            const struct jk_search_opts *o, struct jk_buf *out)
{
    struct jk_search *q;
    jk_rc rc = jk_fhir_search_parse(a, d, type, keys, values, n, o, &q);
    return rc ? rc : jk_fhir_search_run(c, q, out);
}
