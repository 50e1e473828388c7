/* extract.c - the search index rows of a resource: each parameter's compiled paths are walked
 * through the JSON, and every value found becomes rows of the parameter's kind. */
#include "fhir/extract.h"

#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "fhir/model.h"
#include "fhir/rest.h"
#include "fhir/searchparam.h"
#include "fhir/searchparam_int.h"

/* The open ends of a Period, and of a Range, as index values. */
#define DATE_MIN_MS (-62135596800000LL) /* 0001-01-01T00:00:00.000Z */
#define DATE_MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */
/* Past this many rows a resource's further values are not indexed (a CodeSystem with 100k
 * concepts still stores; it is just not searchable by its 100,001st code). */
#define MAX_ROWS 100000

struct rows {
    struct jk_idx_row *v;
    size_t n, cap;
};

struct ex {
    struct jk_arena *a;
    jk_rc rc;
    struct rows out;    /* the result */
    struct rows c1, c2; /* a composite's component values in one base element */
};

/* Where the values of one path go, and as what. */
struct sink {
    const struct jk_sp_def *def;
    const struct jk_sp_path *path;
    enum jk_sp_type type; /* the parameter's type, or a composite component's */
    const char *param;
    const char *aux; /* "<code>:of-type" / "<code>:identifier", NULL inside composites */
    struct rows *to;
};

/* ---- small readers ------------------------------------------------------------------------ */

static const char *str_of(struct json_object *v, size_t *n)
{
    if (!v || !json_object_is_type(v, json_type_string)) return NULL;
    *n = (size_t)json_object_get_string_len(v);
    return *n ? json_object_get_string(v) : NULL;
}

static struct json_object *member(struct json_object *o, const char *key)
{
    struct json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object)) return NULL;
    return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static const char *member_str(struct json_object *o, const char *key, size_t *n)
{
    return str_of(member(o, key), n);
}

/* The text of a number as it was sent (json-c keeps a decimal's source text as its user data),
 * or an integer printed into buf. */
static const char *num_text(struct json_object *v, char *buf, size_t cap, size_t *n)
{
    int len;
    if (!v) return NULL;
    switch (json_object_get_type(v)) {
    case json_type_double: {
        const char *t = json_object_get_userdata(v);
        if (t) {
            *n = strlen(t);
            return t;
        }
        len = snprintf(buf, cap, "%.17g", json_object_get_double(v));
        break;
    }
    case json_type_int: len = snprintf(buf, cap, "%" PRId64, json_object_get_int64(v)); break;
    default: return NULL;
    }
    if (len <= 0 || (size_t)len >= cap) return NULL;
    *n = (size_t)len;
    return buf;
}

static const char *dup(struct ex *x, const char *s, size_t n)
{
    if (!s || !n) return "";
    char *d = jk_arena_strndup(x->a, s, n);
    if (!d) x->rc = JK_ENOMEM;
    return d ? d : "";
}

static const char *norm(struct ex *x, const char *s, size_t n)
{
    if (!s || !n) return "";
    const char *d = jk_sp_norm_string(x->a, s, n);
    if (!d) x->rc = JK_ENOMEM;
    return d ? d : "";
}

/* ---- rows --------------------------------------------------------------------------------- */

static struct jk_idx_row *add(struct ex *x, const struct sink *k, enum jk_idx_kind kind,
                              const char *param)
{
    struct rows *r = k->to;
    if (x->rc || r->n >= MAX_ROWS) return NULL;
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 32;
        struct jk_idx_row *v = jk_arena_alloc(x->a, cap * sizeof *v);
        if (!v) {
            x->rc = JK_ENOMEM;
            return NULL;
        }
        if (r->n) memcpy(v, r->v, r->n * sizeof *v);
        r->v = v;
        r->cap = cap;
    }
    struct jk_idx_row *row = &r->v[r->n++];
    memset(row, 0, sizeof *row);
    row->kind = kind;
    row->param = param;
    row->s1 = row->s2 = row->s3 = row->s4 = row->s5 = "";
    return row;
}

static void string_row(struct ex *x, const struct sink *k, const char *s, size_t n)
{
    struct jk_idx_row *r;
    char bi[JK_PROTECT_CODE_LEN + 1];
    if (!s || jk_protect_index_code(s, n, bi)) return; /* a sealed value has no text to search */
    if (!(r = add(x, k, JK_IDX_STRING, k->param))) return;
    r->s1 = norm(x, s, n);
    r->s2 = dup(x, s, n);
}

/* A token code as indexed: a sealed identity or phone number (auth/protect.h) by its blind
 * index "bi:<hex>", never by its ciphertext or its clear text; anything else as it is. */
static const char *token_code(struct ex *x, const char *code, size_t code_n)
{
    char bi[JK_PROTECT_CODE_LEN + 1];
    return jk_protect_index_code(code, code_n, bi) ? dup(x, bi, JK_PROTECT_CODE_LEN)
                                                   : dup(x, code, code_n);
}

static void token_row(struct ex *x, const struct sink *k, const char *param, const char *sys,
                      size_t sys_n, const char *code, size_t code_n, const char *text,
                      size_t text_n)
{
    struct jk_idx_row *r = add(x, k, JK_IDX_TOKEN, param);
    if (!r) return;
    r->s1 = dup(x, sys, sys_n);
    r->s2 = token_code(x, code, code_n);
    r->s3 = norm(x, text, text_n);
}

static void date_row(struct ex *x, const struct sink *k, int64_t lo, int64_t hi)
{
    struct jk_idx_row *r = add(x, k, JK_IDX_DATE, k->param);
    if (!r) return;
    r->lo_ms = lo;
    r->hi_ms = hi;
}

static void number_row(struct ex *x, const struct sink *k, double lo, double hi)
{
    struct jk_idx_row *r = add(x, k, JK_IDX_NUMBER, k->param);
    if (!r) return;
    r->lo = lo;
    r->hi = hi;
}

static void quantity_row(struct ex *x, const struct sink *k, const char *sys, size_t sys_n,
                         const char *code, size_t code_n, double lo, double hi)
{
    struct jk_idx_row *r = add(x, k, JK_IDX_QUANTITY, k->param);
    if (!r) return;
    r->s1 = dup(x, sys, sys_n);
    r->s2 = dup(x, code, code_n);
    r->lo = lo;
    r->hi = hi;
}

static void reference_row(struct ex *x, const struct sink *k, const char *type, size_t type_n,
                          const char *id, size_t id_n, const char *text, size_t text_n)
{
    struct jk_idx_row *r = add(x, k, JK_IDX_REFERENCE, k->param);
    if (!r) return;
    r->s1 = dup(x, type, type_n);
    r->s2 = dup(x, id, id_n);
    r->s3 = dup(x, text, text_n);
}

static void uri_row(struct ex *x, const struct sink *k, const char *s, size_t n)
{
    struct jk_idx_row *r;
    if (!s || !(r = add(x, k, JK_IDX_URI, k->param))) return;
    r->s1 = dup(x, s, n);
}

/* ---- values by FHIR type ------------------------------------------------------------------ */

static void string_member(struct ex *x, const struct sink *k, struct json_object *o,
                          const char *key)
{
    struct json_object *v = member(o, key);
    size_t n = 0;
    if (v && json_object_is_type(v, json_type_array)) {
        size_t len = json_object_array_length(v);
        for (size_t i = 0; i < len; i++) {
            const char *s = str_of(json_object_array_get_idx(v, i), &n);
            string_row(x, k, s, n);
        }
    } else {
        const char *s = str_of(v, &n);
        string_row(x, k, s, n);
    }
}

static void human_name(struct ex *x, const struct sink *k, struct json_object *v)
{
    static const char *const parts[] = {"family", "given", "prefix", "suffix", "text"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        string_member(x, k, v, parts[i]);
}

static void address(struct ex *x, const struct sink *k, struct json_object *v)
{
    static const char *const parts[] = {"line",       "city",    "district", "state",
                                        "postalCode", "country", "text"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        string_member(x, k, v, parts[i]);
}

/* A Coding; text is the enclosing concept's text, used when the coding has no display.
 * Returns whether it used text. */
static int coding(struct ex *x, const struct sink *k, struct json_object *v, const char *text,
                  size_t text_n)
{
    size_t sys_n = 0, code_n = 0, disp_n = 0;
    const char *sys = member_str(v, "system", &sys_n);
    const char *code = member_str(v, "code", &code_n);
    const char *disp = member_str(v, "display", &disp_n);
    if (!code && !disp) return 0;
    if (!code) code_n = 0;
    if (!sys) sys_n = 0;
    int used = !disp && text;
    if (!disp) {
        disp = text;
        disp_n = text_n;
    }
    token_row(x, k, k->param, sys, sys_n, code, code_n, disp, disp_n);
    return used;
}

static void concept(struct ex *x, const struct sink *k, struct json_object *v)
{
    size_t text_n = 0;
    const char *text = member_str(v, "text", &text_n);
    struct json_object *codings = member(v, "coding");
    int used = 0;
    if (codings && json_object_is_type(codings, json_type_array)) {
        size_t len = json_object_array_length(codings);
        for (size_t i = 0; i < len; i++)
            used |= coding(x, k, json_object_array_get_idx(codings, i), text, text_n);
    }
    /* The concept's own text, for :text, when no coding row carries it already. */
    if (text && !used) token_row(x, k, k->param, NULL, 0, NULL, 0, text, text_n);
}

static void identifier(struct ex *x, const struct sink *k, struct json_object *v)
{
    size_t sys_n = 0, val_n = 0, text_n = 0;
    const char *sys = member_str(v, "system", &sys_n);
    const char *val = member_str(v, "value", &val_n);
    struct json_object *type = member(v, "type");
    const char *text = member_str(type, "text", &text_n);
    if (!val) return;
    token_row(x, k, k->param, sys, sys ? sys_n : 0, val, val_n, text, text ? text_n : 0);
    if (!k->aux) return;
    /* :of-type: one row per coding of the identifier's type, with the value in s3. */
    struct json_object *codings = member(type, "coding");
    if (!codings || !json_object_is_type(codings, json_type_array)) return;
    size_t len = json_object_array_length(codings);
    for (size_t i = 0; i < len; i++) {
        struct json_object *c = json_object_array_get_idx(codings, i);
        size_t cs_n = 0, cc_n = 0;
        const char *cs = member_str(c, "system", &cs_n);
        const char *cc = member_str(c, "code", &cc_n);
        if (!cc) continue;
        struct jk_idx_row *r = add(x, k, JK_IDX_TOKEN, k->aux);
        if (!r) return;
        r->s1 = dup(x, cs, cs ? cs_n : 0);
        r->s2 = dup(x, cc, cc_n);
        r->s3 = token_code(x, val, val_n);
    }
}

static void date_value(struct ex *x, const struct sink *k, struct json_object *v)
{
    size_t n = 0;
    int64_t lo, hi;
    const char *s = str_of(v, &n);
    if (s && jk_sp_date_range(s, n, &lo, &hi) == 0) date_row(x, k, lo, hi);
}

static void period(struct ex *x, const struct sink *k, struct json_object *v)
{
    size_t sn = 0, en = 0;
    const char *start = member_str(v, "start", &sn), *end = member_str(v, "end", &en);
    int64_t lo = DATE_MIN_MS, hi = DATE_MAX_MS, unused;
    if (!start && !end) return;
    if (start && jk_sp_date_range(start, sn, &lo, &unused)) return;
    if (end && jk_sp_date_range(end, en, &unused, &hi)) return;
    date_row(x, k, lo, hi);
}

static void timing(struct ex *x, const struct sink *k, struct json_object *v)
{
    struct json_object *events = member(v, "event");
    if (events && json_object_is_type(events, json_type_array)) {
        size_t len = json_object_array_length(events);
        for (size_t i = 0; i < len; i++)
            date_value(x, k, json_object_array_get_idx(events, i));
    }
    struct json_object *bounds = member(member(v, "repeat"), "boundsPeriod");
    if (bounds) period(x, k, bounds);
}

static int range_of(struct json_object *v, double *lo, double *hi)
{
    char buf[32];
    size_t n;
    const char *t = num_text(v, buf, sizeof buf, &n);
    return t ? jk_sp_number_range(t, n, lo, hi) : -1;
}

/* The unit of a Quantity: its system and code, or its unit when it has no code. */
static void unit_of(struct json_object *q, const char **sys, size_t *sys_n, const char **code,
                    size_t *code_n)
{
    *sys = member_str(q, "system", sys_n);
    if (!*sys) *sys_n = 0;
    *code = member_str(q, "code", code_n);
    if (!*code) *code = member_str(q, "unit", code_n);
    if (!*code) *code_n = 0;
}

static void quantity(struct ex *x, const struct sink *k, struct json_object *v)
{
    double lo, hi;
    const char *sys, *code;
    size_t sys_n, code_n;
    if (range_of(member(v, "value"), &lo, &hi)) return;
    unit_of(v, &sys, &sys_n, &code, &code_n);
    quantity_row(x, k, sys, sys_n, code, code_n, lo, hi);
}

static void money(struct ex *x, const struct sink *k, struct json_object *v)
{
    static const char iso4217[] = "urn:iso:std:iso:4217";
    double lo, hi;
    size_t cur_n = 0;
    const char *cur = member_str(v, "currency", &cur_n);
    if (range_of(member(v, "value"), &lo, &hi)) return;
    quantity_row(x, k, iso4217, sizeof iso4217 - 1, cur, cur ? cur_n : 0, lo, hi);
}

static void range(struct ex *x, const struct sink *k, struct json_object *v)
{
    struct json_object *low = member(v, "low"), *high = member(v, "high");
    double lo = -DBL_MAX, hi = DBL_MAX, unused;
    if (!low && !high) return;
    if (low && range_of(member(low, "value"), &lo, &unused)) return;
    if (high && range_of(member(high, "value"), &unused, &hi)) return;
    if (k->type == JK_SP_NUMBER) {
        number_row(x, k, lo, hi);
        return;
    }
    const char *sys, *code;
    size_t sys_n, code_n;
    unit_of(low ? low : high, &sys, &sys_n, &code, &code_n);
    quantity_row(x, k, sys, sys_n, code, code_n, lo, hi);
}

static int is_resource_type(const char *s, size_t n)
{
    const struct jk_fhir_type *t = jk_fhir_type_find(s, n);
    return t && t->kind == JK_FHIR_RESOURCE && !t->is_abstract;
}

/* The target type and id of a reference written as Type/id, Type/id/_history/v or an absolute
 * URL ending in one of those. 0 when it is none of them (urn:uuid:, a query, a canonical). */
static int parse_ref(const char *s, size_t n, const char **type, size_t *type_n, const char **id,
                     size_t *id_n)
{
    if (memchr(s, '?', n) || (n > 4 && memcmp(s, "urn:", 4) == 0)) return 0;
    size_t end = n;
    for (size_t i = 0; i + 10 <= n; i++)
        if (memcmp(s + i, "/_history/", 10) == 0) {
            end = i;
            break;
        }
    size_t slash = end;
    while (slash > 0 && s[slash - 1] != '/')
        slash--;
    if (slash < 2) return 0;
    size_t tstart = slash - 1;
    while (tstart > 0 && s[tstart - 1] != '/')
        tstart--;
    if (!jk_fhir_id_okn(s + slash, end - slash) ||
        !is_resource_type(s + tstart, slash - 1 - tstart))
        return 0;
    if (tstart > 0 && !memchr(s, ':', tstart)) return 0; /* relative: exactly Type/id */
    *type = s + tstart;
    *type_n = slash - 1 - tstart;
    *id = s + slash;
    *id_n = end - slash;
    return 1;
}

static void reference(struct ex *x, const struct sink *k, struct json_object *v)
{
    size_t ref_n = 0, rt_n = 0, type_n = 0, id_n = 0;
    const char *ref = member_str(v, "reference", &ref_n);
    const char *rt = member_str(v, "type", &rt_n);
    const char *type = NULL, *id = NULL;
    if (ref && ref[0] == '#') return; /* a contained resource: not searchable by reference */
    if (ref) parse_ref(ref, ref_n, &type, &type_n, &id, &id_n);
    if (!type && rt && is_resource_type(rt, rt_n)) {
        type = rt;
        type_n = rt_n;
    }
    const char *target = k->path->target;
    if (target && (!type || strlen(target) != type_n || memcmp(target, type, type_n))) return;
    if (ref) reference_row(x, k, type, type ? type_n : 0, id, id ? id_n : 0, ref, ref_n);
    if (!k->aux) return;
    struct json_object *ident = member(v, "identifier");
    size_t sys_n = 0, val_n = 0;
    const char *sys = member_str(ident, "system", &sys_n);
    const char *val = member_str(ident, "value", &val_n);
    if (val) token_row(x, k, k->aux, sys, sys ? sys_n : 0, val, val_n, NULL, 0);
}

static void deceased(struct ex *x, const struct sink *k, struct json_object *v)
{
    struct json_object *b = member(v, "deceasedBoolean");
    int is_dead = (b && json_object_is_type(b, json_type_boolean) && json_object_get_boolean(b)) ||
                  member(v, "deceasedDateTime") != NULL;
    token_row(x, k, k->param, NULL, 0, is_dead ? "true" : "false", is_dead ? 4 : 5, NULL, 0);
}

static void composite_element(struct ex *x, const struct sink *k, struct json_object *e);

/* One value found at the end of k's path. */
static void value(struct ex *x, const struct sink *k, struct json_object *v)
{
    size_t n = 0;
    const char *s;
    switch ((enum jk_sp_vtype)k->path->vtype) {
    case JK_SPV_ELEMENT: composite_element(x, k, v); break;
    case JK_SPV_STR:
        if (!(s = str_of(v, &n))) break;
        if (k->type == JK_SP_STRING) {
            string_row(x, k, s, n);
        } else if (k->type == JK_SP_TOKEN) {
            const char *sys = k->path->system;
            token_row(x, k, k->param, sys, sys ? strlen(sys) : 0, s, n, NULL, 0);
        }
        break;
    case JK_SPV_HUMANNAME: human_name(x, k, v); break;
    case JK_SPV_ADDRESS: address(x, k, v); break;
    case JK_SPV_BOOL:
        if (json_object_is_type(v, json_type_boolean)) {
            int b = json_object_get_boolean(v);
            token_row(x, k, k->param, NULL, 0, b ? "true" : "false", b ? 4 : 5, NULL, 0);
        }
        break;
    case JK_SPV_CODING: coding(x, k, v, NULL, 0); break;
    case JK_SPV_CC:
        concept
        (x, k, v);
        break;
    case JK_SPV_IDENT: identifier(x, k, v); break;
    case JK_SPV_CONTACT:
        if ((s = member_str(v, "value", &n))) token_row(x, k, k->param, NULL, 0, s, n, NULL, 0);
        break;
    case JK_SPV_DATE: date_value(x, k, v); break;
    case JK_SPV_PERIOD: period(x, k, v); break;
    case JK_SPV_TIMING: timing(x, k, v); break;
    case JK_SPV_NUM: {
        double lo, hi;
        if (range_of(v, &lo, &hi) == 0) number_row(x, k, lo, hi);
        break;
    }
    case JK_SPV_QTY: quantity(x, k, v); break;
    case JK_SPV_MONEY: money(x, k, v); break;
    case JK_SPV_RANGE: range(x, k, v); break;
    case JK_SPV_REF: reference(x, k, v); break;
    case JK_SPV_CANON:
        if ((s = str_of(v, &n))) reference_row(x, k, NULL, 0, NULL, 0, s, n);
        break;
    case JK_SPV_URI:
        if ((s = str_of(v, &n))) uri_row(x, k, s, n);
        break;
    case JK_SPV_DECEASED: deceased(x, k, v); break;
    }
}

/* ---- walking the paths -------------------------------------------------------------------- */

static int passes(const struct jk_sp_step *st, struct json_object *e)
{
    size_t n = 0;
    if (st->where == JK_SP_WHERE_NONE) return 1;
    if (st->where == JK_SP_WHERE_EQ) {
        const char *s = member_str(e, st->where_elem, &n);
        return s && strlen(st->where_value) == n && memcmp(s, st->where_value, n) == 0;
    }
    struct json_object *exts = member(e, "extension"); /* JK_SP_WHERE_HAS_EXT */
    if (!exts || !json_object_is_type(exts, json_type_array)) return 0;
    size_t len = json_object_array_length(exts);
    for (size_t i = 0; i < len; i++) {
        const char *url = member_str(json_object_array_get_idx(exts, i), "url", &n);
        if (url && strcmp(url, st->where_value) == 0) return 1;
    }
    return 0;
}

static void walk(struct ex *x, const struct sink *k, struct json_object *o, size_t i);

/* v is the value of step i's member (one element, or an array of them). */
static void walk_member(struct ex *x, const struct sink *k, struct json_object *v, size_t i)
{
    const struct jk_sp_step *st = &jk_sp_gen_steps[k->path->first_step + i];
    if (json_object_is_type(v, json_type_array)) {
        size_t len = json_object_array_length(v);
        for (size_t j = 0; j < len; j++) {
            struct json_object *e = json_object_array_get_idx(v, j);
            if (e && passes(st, e)) walk(x, k, e, i + 1);
        }
    } else if (passes(st, v)) {
        walk(x, k, v, i + 1);
    }
}

/* Follows k's path from step i, o being the element that holds step i's member. */
static void walk(struct ex *x, const struct sink *k, struct json_object *o, size_t i)
{
    if (x->rc) return;
    if (i == k->path->n_steps) {
        value(x, k, o);
        return;
    }
    struct json_object *v = member(o, jk_sp_gen_steps[k->path->first_step + i].name);
    if (v) walk_member(x, k, v, i);
}

/* The components of one base element of a composite, paired into rows. */
static void composite_element(struct ex *x, const struct sink *base, struct json_object *e)
{
    const struct jk_sp_def *d = base->def;
    const struct jk_sp_path *paths = &jk_sp_gen_paths[d->first_path];
    x->c1.n = x->c2.n = 0;
    for (size_t i = d->n_base; i < d->n_paths; i++) {
        int first = i < (size_t)d->n_base + d->n_c1;
        struct sink k = {d,          &paths[i], (enum jk_sp_type)(first ? d->c1_type : d->c2_type),
                         d->sp.code, NULL,      first ? &x->c1 : &x->c2};
        walk(x, &k, e, 0);
    }
    struct sink out = *base;
    out.to = &x->out;
    for (size_t i = 0; i < x->c1.n; i++) {
        const struct jk_idx_row *a = &x->c1.v[i];
        if (!*a->s2) continue; /* a concept's text alone: no code to pair */
        for (size_t j = 0; j < x->c2.n; j++) {
            const struct jk_idx_row *b = &x->c2.v[j];
            struct jk_idx_row *r = add(x, &out, JK_IDX_COMPOSITE, d->sp.code);
            if (!r) return;
            r->s1 = a->s1;
            r->s2 = a->s2;
            switch (b->kind) {
            case JK_IDX_TOKEN:
                r->s3 = b->s1;
                r->s4 = b->s2;
                break;
            case JK_IDX_QUANTITY:
                r->s3 = b->s1;
                r->s4 = b->s2;
                r->lo = b->lo;
                r->hi = b->hi;
                break;
            case JK_IDX_NUMBER:
                r->lo = b->lo;
                r->hi = b->hi;
                break;
            case JK_IDX_DATE:
                r->lo = (double)b->lo_ms;
                r->hi = (double)b->hi_ms;
                break;
            case JK_IDX_STRING: r->s5 = b->s1; break;
            case JK_IDX_REFERENCE:
                r->s3 = b->s1;
                r->s4 = b->s2;
                break;
            case JK_IDX_URI: r->s4 = b->s1; break;
            case JK_IDX_COMPOSITE: break;
            }
        }
    }
}

/* ---- identical rows once ------------------------------------------------------------------ */

static uint64_t mix(uint64_t h, uint64_t v)
{
    h ^= v;
    h *= 0x9E3779B97F4A7C15ULL;
    return h ^ (h >> 29);
}

/* A cheap hash of a string: its length and its first and last 8 bytes. Rows that differ only
 * in the middle of a long string collide, and row_eq tells them apart. */
static uint64_t str_hash(uint64_t h, const char *s)
{
    size_t n = strlen(s);
    uint64_t a = 0, b = 0;
    memcpy(&a, s, n < 8 ? n : 8);
    if (n > 8) memcpy(&b, s + n - 8, 8);
    return mix(mix(mix(h, n), a), b);
}

static uint64_t row_hash(const struct jk_idx_row *r)
{
    uint64_t h = mix((uint64_t)r->kind, (uint64_t)(uintptr_t)r->param);
    h = str_hash(h, r->s1);
    h = str_hash(h, r->s2);
    h = str_hash(h, r->s3);
    h = str_hash(h, r->s4);
    h = str_hash(h, r->s5);
    uint64_t lo, hi;
    memcpy(&lo, &r->lo, sizeof lo);
    memcpy(&hi, &r->hi, sizeof hi);
    return mix(mix(mix(mix(h, (uint64_t)r->lo_ms), (uint64_t)r->hi_ms), lo), hi);
}

static int row_eq(const struct jk_idx_row *a, const struct jk_idx_row *b)
{
    return a->kind == b->kind && a->lo_ms == b->lo_ms && a->hi_ms == b->hi_ms &&
           memcmp(&a->lo, &b->lo, sizeof a->lo) == 0 && memcmp(&a->hi, &b->hi, sizeof a->hi) == 0 &&
           !strcmp(a->param, b->param) && !strcmp(a->s1, b->s1) && !strcmp(a->s2, b->s2) &&
           !strcmp(a->s3, b->s3) && !strcmp(a->s4, b->s4) && !strcmp(a->s5, b->s5);
}

static jk_rc dedupe(struct jk_arena *a, struct rows *r)
{
    if (r->n < 2) return JK_OK;
    size_t cap = 16;
    while (cap < r->n * 2)
        cap *= 2;
    uint32_t *slot = jk_arena_zalloc(a, cap * sizeof *slot); /* row index + 1, 0 = empty */
    if (!slot) return JK_ENOMEM;
    size_t kept = 0;
    for (size_t i = 0; i < r->n; i++) {
        size_t h = (size_t)row_hash(&r->v[i]) & (cap - 1);
        int is_dup = 0;
        while (slot[h]) {
            if (row_eq(&r->v[slot[h] - 1], &r->v[i])) {
                is_dup = 1;
                break;
            }
            h = (h + 1) & (cap - 1);
        }
        if (is_dup) continue;
        r->v[kept] = r->v[i];
        slot[h] = (uint32_t)(++kept);
    }
    r->n = kept;
    return JK_OK;
}

/* ---- the entry point ---------------------------------------------------------------------- */

/* The paths of entry e, as a sink into the result. */
static void entry_sink(struct ex *x, const struct jk_sp_gen_entry *e, struct sink *k)
{
    const struct jk_sp_def *d = &jk_sp_gen_defs[e->def];
    k->def = d;
    k->path = &jk_sp_gen_paths[e->path];
    k->type = d->sp.type;
    k->param = d->sp.code;
    k->aux = d->aux_param;
    k->to = &x->out;
}

jk_rc jk_fhir_extract(struct jk_arena *a, struct json_object *res, struct jk_idx_row **rows,
                      size_t *n_rows)
{
    struct ex x;
    struct sink k;
    memset(&x, 0, sizeof x);
    x.a = a;
    *rows = NULL;
    *n_rows = 0;
    size_t n;
    const char *rt = member_str(res, "resourceType", &n);
    const struct jk_sp_gen_type *t = rt ? jk_sp_gen_type_find(rt) : NULL;
    if (!t) return JK_OK;
    const struct jk_sp_gen_entry *entries = jk_sp_gen_entries + t->first_entry;
    /* Paths without a step read the resource itself. */
    for (size_t i = 0; i < t->n_root && !x.rc; i++) {
        entry_sink(&x, &entries[i], &k);
        walk(&x, &k, res, 0);
    }
    /* The others start at one of the resource's members: look each member up once. */
    const struct jk_sp_gen_entry *named = entries + t->n_root;
    size_t n_named = (size_t)t->n_entries - t->n_root;
    json_object_object_foreach(res, key, val)
    {
        if (!val) continue; /* null: nothing to index */
        size_t lo = 0, hi = n_named;
        while (lo < hi) { /* the first entry whose name is >= key */
            size_t mid = lo + (hi - lo) / 2;
            if (strcmp(named[mid].name, key) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        for (size_t i = lo; i < n_named && !x.rc && strcmp(named[i].name, key) == 0; i++) {
            entry_sink(&x, &named[i], &k);
            walk_member(&x, &k, val, 0);
        }
        if (x.rc) break;
    }
    if (!x.rc) x.rc = dedupe(a, &x.out);
    if (x.rc) return x.rc;
    *rows = x.out.v;
    *n_rows = x.out.n;
    return JK_OK;
}
