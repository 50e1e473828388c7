/* validate.c - FHIR R4 JSON validation driven by the generated StructureDefinition tables. */
#include "fhir/validate.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/arena.h"
#include "fhir/model.h"

#define FV_PATH_MAX         1024    /* longest expression kept; longer ones end in "..." */
#define FV_MAX_DEPTH        100     /* nested objects (elements and resources) */
#define FV_MAX_CHOICES      16      /* distinct choice elements tracked in one object */
#define FV_MSG_MAX          640     /* one issue message */
#define FV_QUOTE_MAX        64      /* bytes of a value quoted in a message */
#define FV_STRING_MAX_BYTES 1048576 /* R4: strings SHALL NOT exceed 1MB */
#define FV_REQ_NONE         0xFFu

enum fv_mode {
    FV_TOP,      /* the resource given to jk_fhir_validate */
    FV_NESTED,   /* a resource inside another (Bundle.entry.resource, Parameters) */
    FV_CONTAINED /* an entry of DomainResource.contained */
};

/* A sorted list of strings (pointers into the JSON tree), allocated from the diag arena. */
struct strs {
    const char **s;
    size_t n, cap;
    int is_complete; /* 0 when memory ran out and lookups must scan the JSON instead */
};

/* One validation run: the issue list, the expression of the element being checked, and the
 * context that changes the rules (inside a contained resource, inside a transaction). */
struct fv {
    struct jk_diag *d;
    struct json_object *container; /* resource whose contained[] resolves "#id" references */
    struct strs *ids;              /* its contained ids, sorted; NULL when it has none */
    unsigned depth;
    int in_contained;
    int allow_conditional; /* conditional references (Patient?identifier=...) */
    size_t len;
    char path[FV_PATH_MAX];
};

/* Types and nodes the rules below single out, looked up once. */
static struct {
    uint16_t extension, reference, coding, codeable_concept, string, bundle;
    const struct jk_fhir_type *uuid, *oid, *id;
    const struct jk_fhir_node *element;
} known;
static pthread_once_t known_once = PTHREAD_ONCE_INIT;

static uint16_t type_index(const char *name)
{
    const struct jk_fhir_type *t = jk_fhir_type_find(name, strlen(name));
    return t ? jk_fhir_type_index(t) : JK_FHIR_NONE;
}

static void known_init(void)
{
    known.extension = type_index("Extension");
    known.reference = type_index("Reference");
    known.coding = type_index("Coding");
    known.codeable_concept = type_index("CodeableConcept");
    known.string = type_index("string");
    known.bundle = type_index("Bundle");
    known.uuid = jk_fhir_type_find("uuid", 4);
    known.oid = jk_fhir_type_find("oid", 3);
    known.id = jk_fhir_type_find("id", 2);
    const struct jk_fhir_type *el = jk_fhir_type_find("Element", 7);
    known.element = el ? jk_fhir_node_at(el->node) : NULL;
}

/* ---- expressions and issues ------------------------------------------------------------- */

/* Appends sep and s[0..n) to the expression; returns the length to restore afterwards. */
static size_t path_push(struct fv *v, const char *sep, const char *s, size_t n)
{
    size_t mark = v->len;
    size_t sep_len = strlen(sep);
    size_t room = FV_PATH_MAX - 1 - v->len;
    if (sep_len + n <= room) {
        memcpy(v->path + v->len, sep, sep_len);
        memcpy(v->path + v->len + sep_len, s, n);
        v->len += sep_len + n;
    } else if (room > 0) {
        /* Too deep to spell out: end the expression with "...". */
        memset(v->path + v->len, '.', room < 3 ? room : 3);
        v->len += room < 3 ? room : 3;
    }
    v->path[v->len] = '\0';
    return mark;
}

static size_t path_index(struct fv *v, size_t i)
{
    char b[32];
    size_t n = sizeof b;
    b[--n] = ']';
    do {
        b[--n] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    b[--n] = '[';
    return path_push(v, "", b + n, sizeof b - n);
}

static void path_pop(struct fv *v, size_t mark)
{
    v->len = mark;
    v->path[mark] = '\0';
}

static void issue(struct fv *v, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Adds an issue at the current expression. */
static void issue(struct fv *v, const char *code, const char *fmt, ...)
{
    char msg[FV_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jk_diag_add(v->d, JK_EINVAL, code, v->len ? v->path : NULL, "%s", msg);
}

/* Whether the diagnostics list is full, so further checking would only be counted. */
static int full(const struct fv *v)
{
    size_t max = v->d->max_issues ? v->d->max_issues : 100;
    return v->d->n_issues >= max;
}

/* A short printable copy of s[0..n) for a message: at most FV_QUOTE_MAX bytes, cut on a
 * UTF-8 boundary, control characters shown as '?'. */
struct quote {
    char s[FV_QUOTE_MAX + 4];
};

static struct quote quote(const char *s, size_t n)
{
    struct quote q;
    size_t k = n;
    if (k > FV_QUOTE_MAX) {
        k = FV_QUOTE_MAX;
        while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
            k--;
    }
    for (size_t i = 0; i < k; i++)
        q.s[i] = (unsigned char)s[i] < 0x20 ? '?' : s[i];
    if (k < n) {
        memcpy(q.s + k, "...", 3);
        k += 3;
    }
    q.s[k] = '\0';
    return q;
}

static const char *json_kind(struct json_object *o)
{
    switch (json_object_get_type(o)) {
    case json_type_null: return "null";
    case json_type_boolean: return "a boolean";
    case json_type_double:
    case json_type_int: return "a number";
    case json_type_object: return "an object";
    case json_type_array: return "an array";
    case json_type_string: return "a string";
    }
    return "an unknown JSON value";
}

/* ---- primitive values ------------------------------------------------------------------- */

/* NULL when s[0..n) is valid UTF-8 without control characters other than tab, CR and LF;
 * otherwise what is wrong. */
static const char *string_problem(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (c < 0x20 && c != '\t' && c != '\r' && c != '\n')
                return "contains a control character (only tab, CR and LF are allowed)";
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return "is not valid UTF-8";
        }
        if (n - i < len) return "is not valid UTF-8";
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return "is not valid UTF-8";
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return "is not valid UTF-8";
        i += len;
    }
    return NULL;
}

/* What a valid value of the primitive type looks like, for messages. */
static const char *type_hint(const char *tname)
{
    static const struct {
        const char *type, *hint;
    } hints[] = {
        {"base64Binary", "expected base64 text"},
        {"canonical", "expected a URI without whitespace"},
        {"code", "expected a code without leading, trailing or repeated whitespace"},
        {"date", "expected YYYY, YYYY-MM or YYYY-MM-DD"},
        {"dateTime", "expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz"},
        {"decimal", "expected a decimal number such as 1.50"},
        {"id", "expected 1 to 64 characters from A-Z, a-z, 0-9, '-' and '.'"},
        {"instant", "expected YYYY-MM-DDThh:mm:ss.sss+zz:zz with seconds and a time zone"},
        {"oid", "expected urn:oid: followed by a dotted OID such as urn:oid:1.2.3"},
        {"time", "expected hh:mm:ss"},
        {"uri", "expected a URI without whitespace"},
        {"url", "expected a URL without whitespace"},
        {"uuid", "expected urn:uuid: followed by a lower-case UUID"},
    };
    for (size_t i = 0; i < sizeof hints / sizeof hints[0]; i++)
        if (strcmp(hints[i].type, tname) == 0) return hints[i].hint;
    return "it does not match the R4 pattern for the type";
}

/* Whether s (NUL-terminated) matches the value regex of t; types without one match. */
static int regex_ok(const struct jk_fhir_type *t, const char *s)
{
    return jk_fhir_type_match(t, s, strlen(s));
}

/* " (allowed: a, b, c)" for a value set small enough to list, else "". */
static void list_codes(const struct jk_fhir_valueset *vs, char *buf, size_t size)
{
    buf[0] = '\0';
    if (vs->n_codes > 12) return;
    size_t used = 0;
    for (size_t i = 0; i < vs->n_codes && used < size; i++) {
        int w = snprintf(buf + used, size - used, "%s%s",
                         i ? ", " : " (allowed: ", jk_fhir_valueset_code(vs, i));
        if (w < 0) break;
        used += (size_t)w;
    }
    if (used + 2 <= size) memcpy(buf + used, ")", 2);
}

static void check_code_binding(struct fv *v, const struct jk_fhir_elem *e, const char *ename,
                               const char *s, size_t n)
{
    const struct jk_fhir_valueset *vs = jk_fhir_valueset_at(e->binding);
    if (!vs || jk_fhir_valueset_has(vs, NULL, 0, s, n)) return;
    char codes[256];
    list_codes(vs, codes, sizeof codes);
    issue(v, "code-invalid", "%s '%s' is not in the required value set %s%s", ename, quote(s, n).s,
          jk_fhir_str(vs->url), codes);
}

/* The text of a decimal as it was written: json-c keeps it as the serializer's user data. */
static const char *decimal_text(struct json_object *val)
{
    const char *txt = json_object_get_userdata(val);
    return txt ? txt : json_object_get_string(val);
}

static void check_xhtml(struct fv *v, const char *ename, const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (n - i < 5 || memcmp(s + i, "<div", 4) != 0 ||
        !(s[i + 4] == ' ' || s[i + 4] == '>' || s[i + 4] == '\t' || s[i + 4] == '\r' ||
          s[i + 4] == '\n' || s[i + 4] == '/')) {
        issue(v, "value", "%s must be XHTML whose root element is <div>", ename);
        return;
    }
    const char *gt = memchr(s + i, '>', n - i);
    size_t tag_len = gt ? (size_t)(gt - (s + i)) : n - i;
    static const char ns[] = "http://www.w3.org/1999/xhtml";
    int has_ns = 0;
    for (size_t k = i; k + sizeof ns + 7 <= i + tag_len + 1 && !has_ns; k++)
        if (memcmp(s + k, "xmlns=", 6) == 0 && (s[k + 6] == '"' || s[k + 6] == '\'') &&
            memcmp(s + k + 7, ns, sizeof ns - 1) == 0 && s[k + 7 + sizeof ns - 1] == s[k + 6])
            has_ns = 1;
    if (!has_ns)
        issue(v, "value", "%s must declare the XHTML namespace: <div xmlns=\"%s\">", ename, ns);
}

/* Checks a primitive value against its type's JSON form, regex, range and binding. */
static void check_primitive(struct fv *v, const struct jk_fhir_elem *e, const char *ename,
                            struct json_object *val)
{
    const struct jk_fhir_type *t = jk_fhir_type_at(e->type);
    const char *tname = jk_fhir_str(t->name);
    enum json_type jt = json_object_get_type(val);
    switch (t->json) {
    case JK_FHIR_JSON_BOOL:
        if (jt != json_type_boolean)
            issue(v, "value", "%s must be a JSON boolean (true or false), not %s", ename,
                  json_kind(val));
        return;
    case JK_FHIR_JSON_INT:
    case JK_FHIR_JSON_UINT:
    case JK_FHIR_JSON_PINT: {
        if (jt != json_type_int) {
            if (jt == json_type_double)
                issue(v, "value", "%s '%s' must be a whole number (%s)", ename,
                      quote(decimal_text(val), strlen(decimal_text(val))).s, tname);
            else
                issue(v, "value", "%s must be a JSON number (%s), not %s", ename, tname,
                      json_kind(val));
            return;
        }
        int64_t x = json_object_get_int64(val);
        int64_t lo = t->json == JK_FHIR_JSON_INT ? INT32_MIN : t->json == JK_FHIR_JSON_UINT ? 0 : 1;
        if (x < lo || x > INT32_MAX)
            issue(v, "value", "%s %s is out of range for %s (%lld to %d)", ename,
                  json_object_get_string(val), tname, (long long)lo, INT32_MAX);
        return;
    }
    case JK_FHIR_JSON_DECIMAL: {
        if (jt == json_type_int) return;
        if (jt != json_type_double) {
            issue(v, "value", "%s must be a JSON number (decimal), not %s", ename, json_kind(val));
            return;
        }
        const char *txt = decimal_text(val);
        if (!regex_ok(t, txt))
            issue(v, "value", "%s '%s' is not a valid decimal (%s)", ename,
                  quote(txt, strlen(txt)).s, type_hint(tname));
        return;
    }
    default: break;
    }
    if (jt != json_type_string) {
        issue(v, "value", "%s must be a JSON string (%s), not %s", ename, tname, json_kind(val));
        return;
    }
    const char *s = json_object_get_string(val);
    size_t n = (size_t)json_object_get_string_len(val);
    if (n == 0) {
        issue(v, "value", "%s must not be an empty string (leave the element out instead)", ename);
        return;
    }
    const char *why = memchr(s, '\0', n) ? "contains a NUL character"
                                         : string_problem((const unsigned char *)s, n);
    if (why) {
        issue(v, "value", "%s %s", ename, why);
        return;
    }
    if (e->type == known.string && n > FV_STRING_MAX_BYTES) {
        issue(v, "too-long", "%s is %zu bytes; R4 strings are limited to %d bytes", ename, n,
              FV_STRING_MAX_BYTES);
        return;
    }
    if (t->json == JK_FHIR_JSON_XHTML) {
        check_xhtml(v, ename, s, n);
        return;
    }
    if (!jk_fhir_type_match(t, s, n)) {
        issue(v, "value", "%s '%s' is not a valid %s (%s)", ename, quote(s, n).s, tname,
              type_hint(tname));
        return;
    }
    if (e->binding != JK_FHIR_NONE) check_code_binding(v, e, ename, s, n);
}

/* ---- references, codings, extensions ---------------------------------------------------- */

/* Whether s[0..n) is a valid id: the R4 id regex [A-Za-z0-9\-\.]{1,64}. */
static int is_id(const char *s, size_t n)
{
    return known.id && n >= 1 && n <= 64 && jk_fhir_type_match(known.id, s, n);
}

static int cmp_strp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Appends p to l, growing it in the arena; on failure l is marked incomplete. */
static void strs_add(struct jk_arena *a, struct strs *l, const char *p)
{
    if (!l->is_complete) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        const char **s = jk_arena_alloc(a, cap * sizeof *s);
        if (!s) {
            l->is_complete = 0;
            return;
        }
        if (l->n) memcpy(s, l->s, l->n * sizeof *s);
        l->s = s;
        l->cap = cap;
    }
    l->s[l->n++] = p;
}

/* Whether the sorted list l holds s[0..n). */
static int strs_has(const struct strs *l, const char *s, size_t n)
{
    size_t lo = 0, hi = l->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const char *m = l->s[mid];
        int c = strncmp(s, m, n);
        if (c == 0 && m[n] != '\0') c = -1;
        if (c == 0) return 1;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return 0;
}

/* The sorted ids of res's contained resources, or NULL when it has none. */
static struct strs *contained_ids(struct fv *v, struct json_object *res)
{
    struct json_object *arr, *cid;
    if (!json_object_object_get_ex(res, "contained", &arr) ||
        !json_object_is_type(arr, json_type_array))
        return NULL;
    struct strs *l = jk_arena_zalloc(v->d->arena, sizeof *l);
    if (!l) return NULL;
    l->is_complete = 1;
    size_t count = json_object_array_length(arr);
    for (size_t i = 0; i < count; i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        if (json_object_is_type(c, json_type_object) && json_object_object_get_ex(c, "id", &cid) &&
            json_object_is_type(cid, json_type_string))
            strs_add(v->d->arena, l, json_object_get_string(cid));
    }
    if (l->n) qsort(l->s, l->n, sizeof *l->s, cmp_strp);
    return l;
}

/* Whether the container has a contained resource with id[0..n). */
static int has_contained(const struct fv *v, const char *id, size_t n)
{
    struct json_object *arr, *cid;
    if (!v->container) return 0;
    if (v->ids && v->ids->is_complete) return strs_has(v->ids, id, n);
    /* Out of memory for the index: scan. */
    if (!json_object_object_get_ex(v->container, "contained", &arr) ||
        !json_object_is_type(arr, json_type_array))
        return 0;
    size_t count = json_object_array_length(arr);
    for (size_t i = 0; i < count; i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        if (json_object_is_type(c, json_type_object) && json_object_object_get_ex(c, "id", &cid) &&
            json_object_is_type(cid, json_type_string) &&
            (size_t)json_object_get_string_len(cid) == n &&
            memcmp(json_object_get_string(cid), id, n) == 0)
            return 1;
    }
    return 0;
}

static const char ref_forms[] = "expected Type/id, Type/id/_history/version, an absolute http(s) "
                                "URL, #id of a contained resource, urn:uuid: or urn:oid:";

/* Checks the form of Reference.reference (R4 references.html). */
static void check_reference(struct fv *v, const char *s, size_t n)
{
    struct quote q = quote(s, n);
    if (s[0] == '#') {
        if (n == 1) {
            if (!v->in_contained)
                issue(v, "invalid",
                      "reference '#' points to the containing resource and is only valid inside "
                      "a contained resource");
        } else if (!is_id(s + 1, n - 1)) {
            issue(v, "invalid", "reference '%s' is not a valid local reference (%s)", q.s,
                  type_hint("id"));
        } else if (!has_contained(v, s + 1, n - 1)) {
            issue(v, "invalid",
                  "reference '%s' points to no contained resource with that id (ref-1)", q.s);
        }
        return;
    }
    if (n > 9 && memcmp(s, "urn:uuid:", 9) == 0) {
        if (known.uuid && !regex_ok(known.uuid, s))
            issue(v, "invalid", "reference '%s' is not a valid urn:uuid: (%s)", q.s,
                  type_hint("uuid"));
        return;
    }
    if (n > 8 && memcmp(s, "urn:oid:", 8) == 0) {
        if (known.oid && !regex_ok(known.oid, s))
            issue(v, "invalid", "reference '%s' is not a valid urn:oid: (%s)", q.s,
                  type_hint("oid"));
        return;
    }
    size_t scheme = (n > 7 && memcmp(s, "http://", 7) == 0)    ? 7
                    : (n > 8 && memcmp(s, "https://", 8) == 0) ? 8
                                                               : 0;
    if (scheme) {
        for (size_t i = scheme; i < n; i++)
            if (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n') {
                issue(v, "invalid", "reference '%s' is not a valid URL: it contains whitespace",
                      q.s);
                return;
            }
        return;
    }
    /* Relative: Type/id[/_history/vid], or Type?search inside a transaction. */
    size_t t = 0;
    while (t < n && s[t] != '/' && s[t] != '?')
        t++;
    if (t == n) {
        issue(v, "invalid", "reference '%s' is not a valid reference (%s)", q.s, ref_forms);
        return;
    }
    if (!jk_fhir_is_resource_type(s, t)) {
        issue(v, "invalid", "reference '%s': '%s' is not a FHIR R4 resource type (%s)", q.s,
              quote(s, t).s, ref_forms);
        return;
    }
    if (s[t] == '?') {
        if (!v->allow_conditional)
            issue(v, "invalid",
                  "reference '%s' is a conditional reference, only allowed in a transaction or "
                  "batch Bundle",
                  q.s);
        return;
    }
    const char *id = s + t + 1;
    const char *slash = memchr(id, '/', n - t - 1);
    size_t id_len = slash ? (size_t)(slash - id) : n - t - 1;
    if (!is_id(id, id_len)) {
        issue(v, "invalid", "reference '%s' has an invalid id '%s' (%s)", q.s, quote(id, id_len).s,
              type_hint("id"));
        return;
    }
    if (!slash) return;
    size_t rest = n - (size_t)(slash - s);
    if (rest > 10 && memcmp(slash, "/_history/", 10) == 0 && is_id(slash + 10, rest - 10)) return;
    issue(v, "invalid", "reference '%s' is not a valid reference (%s)", q.s, ref_forms);
}

/* For a Coding bound to vs: a code from one of vs's systems must be one of its codes. */
static void check_coding(struct fv *v, const struct jk_fhir_valueset *vs, struct json_object *c)
{
    struct json_object *sys, *code;
    if (!json_object_object_get_ex(c, "system", &sys) ||
        !json_object_object_get_ex(c, "code", &code) ||
        !json_object_is_type(sys, json_type_string) || !json_object_is_type(code, json_type_string))
        return;
    const char *s = json_object_get_string(sys);
    size_t sn = (size_t)json_object_get_string_len(sys);
    const char *k = json_object_get_string(code);
    size_t kn = (size_t)json_object_get_string_len(code);
    if (!jk_fhir_valueset_has_system(vs, s, sn) || jk_fhir_valueset_has(vs, s, sn, k, kn)) return;
    size_t mark = path_push(v, ".", "code", 4);
    issue(v, "code-invalid", "code '%s' is not in the required value set %s for system %s",
          quote(k, kn).s, jk_fhir_str(vs->url), quote(s, sn).s);
    path_pop(v, mark);
}

static void check_codeable_concept(struct fv *v, const struct jk_fhir_valueset *vs,
                                   struct json_object *cc)
{
    struct json_object *arr;
    if (!json_object_object_get_ex(cc, "coding", &arr) ||
        !json_object_is_type(arr, json_type_array))
        return;
    size_t n = json_object_array_length(arr);
    size_t mark = path_push(v, ".", "coding", 6);
    for (size_t i = 0; i < n; i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(c, json_type_object)) continue;
        size_t m = path_index(v, i);
        check_coding(v, vs, c);
        path_pop(v, m);
    }
    path_pop(v, mark);
}

/* ext-1: an extension has either a value[x] or nested extensions, not both, not neither. */
static void check_extension(struct fv *v, struct json_object *ext)
{
    int has_nested = 0, has_value = 0;
    json_object_object_foreach(ext, key, val)
    {
        (void)val;
        if (strcmp(key, "extension") == 0)
            has_nested = 1;
        else if (strncmp(key, "value", 5) == 0 || strncmp(key, "_value", 6) == 0)
            has_value = 1;
    }
    if (has_nested && has_value)
        issue(v, "invariant",
              "an extension must have either a value[x] or nested extensions, not both (ext-1)");
    else if (!has_nested && !has_value)
        issue(v, "invariant", "an extension must have a value[x] or nested extensions (ext-1)");
}

/* ---- objects and resources -------------------------------------------------------------- */

static void validate_object(struct fv *v, const struct jk_fhir_node *node, struct json_object *obj,
                            int is_resource);
static void validate_resource(struct fv *v, struct json_object *obj, enum fv_mode mode);

/* "Quantity, CodeableConcept, string, ..." : the types of choice c, into buf. */
static const char *choice_types(const struct jk_fhir_choice *c, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < c->n_variants && used < size; k++) {
        const struct jk_fhir_elem *var = jk_fhir_choice_variant(c, k);
        int w = snprintf(buf + used, size - used, "%s%s", k ? ", " : "",
                         jk_fhir_str(jk_fhir_type_at(var->type)->name));
        if (w < 0) break;
        used += (size_t)w;
    }
    return buf;
}

/* Reports an unknown property, naming the choice element when it looks like one. */
static void unknown_property(struct fv *v, const struct jk_fhir_node *node, const char *key)
{
    const char *name = key[0] == '_' ? key + 1 : key;
    size_t n = strlen(name);
    for (size_t i = 0; i < node->n_elems; i++) {
        const struct jk_fhir_choice *c = jk_fhir_choice_of(jk_fhir_node_elem(node, i));
        if (!c) continue;
        const char *stem = jk_fhir_str(c->name);
        size_t sl = strlen(stem);
        if (n <= sl || memcmp(name, stem, sl) != 0 || name[sl] < 'A' || name[sl] > 'Z') continue;
        char allowed[400];
        issue(v, "structure", "%s[x] does not allow type '%s' (allowed: %s)", stem,
              quote(name + sl, n - sl).s, choice_types(c, allowed, sizeof allowed));
        return;
    }
    issue(v, "structure", "unknown element '%s' in %s", quote(key, strlen(key)).s,
          jk_fhir_str(node->path));
}

/* Whether any string in the JSON tree under o equals s[0..n) (bounded depth). */
static int tree_has_string(struct json_object *o, const char *s, size_t n, unsigned depth)
{
    if (depth > FV_MAX_DEPTH) return 0;
    switch (json_object_get_type(o)) {
    case json_type_string:
        return (size_t)json_object_get_string_len(o) == n &&
               memcmp(json_object_get_string(o), s, n) == 0;
    case json_type_array: {
        size_t len = json_object_array_length(o);
        for (size_t i = 0; i < len; i++)
            if (tree_has_string(json_object_array_get_idx(o, i), s, n, depth + 1)) return 1;
        return 0;
    }
    case json_type_object: {
        json_object_object_foreach(o, key, val)
        {
            (void)key;
            if (tree_has_string(val, s, n, depth + 1)) return 1;
        }
        return 0;
    }
    default: return 0;
    }
}

/* Collects every string under o that starts with '#' (local references). */
static void collect_local_refs(struct fv *v, struct json_object *o, struct strs *l, unsigned depth)
{
    if (depth > FV_MAX_DEPTH || !l->is_complete) return;
    switch (json_object_get_type(o)) {
    case json_type_string: {
        const char *s = json_object_get_string(o);
        if (s[0] == '#') strs_add(v->d->arena, l, s);
        return;
    }
    case json_type_array: {
        size_t len = json_object_array_length(o);
        for (size_t i = 0; i < len; i++)
            collect_local_refs(v, json_object_array_get_idx(o, i), l, depth + 1);
        return;
    }
    case json_type_object: {
        json_object_object_foreach(o, key, val)
        {
            (void)key;
            collect_local_refs(v, val, l, depth + 1);
        }
        return;
    }
    default: return;
    }
}

/* dom-3: every contained resource is referenced from the container (as "#id"), or refers to
 * the container itself ("#"). One pass collects the local references, so the cost stays
 * linear in the size of the resource. */
static void check_contained_referenced(struct fv *v, struct json_object *res)
{
    struct json_object *arr, *id;
    if (!json_object_object_get_ex(res, "contained", &arr) ||
        !json_object_is_type(arr, json_type_array))
        return;
    struct strs refs = {.is_complete = 1};
    collect_local_refs(v, res, &refs, 0);
    if (refs.n) qsort(refs.s, refs.n, sizeof *refs.s, cmp_strp);
    size_t count = json_object_array_length(arr);
    for (size_t i = 0; i < count && !full(v); i++) {
        struct json_object *c = json_object_array_get_idx(arr, i);
        if (!json_object_is_type(c, json_type_object)) continue;
        char ref[80];
        size_t n = 0;
        if (json_object_object_get_ex(c, "id", &id) && json_object_is_type(id, json_type_string) &&
            is_id(json_object_get_string(id), (size_t)json_object_get_string_len(id))) {
            n = (size_t)json_object_get_string_len(id) + 1;
            ref[0] = '#';
            memcpy(ref + 1, json_object_get_string(id), n - 1);
            if (refs.is_complete ? strs_has(&refs, ref, n) : tree_has_string(res, ref, n, 0))
                continue;
        }
        if (tree_has_string(c, "#", 1, 0)) continue;
        size_t m1 = path_push(v, ".", "contained", 9);
        size_t m2 = path_index(v, i);
        if (n)
            issue(v, "invalid",
                  "contained resource '%.*s' is not referenced from the rest of the resource "
                  "(dom-3): refer to it as '%.*s' or leave it out",
                  (int)(n - 1), ref + 1, (int)n, ref);
        else
            issue(v, "invalid",
                  "contained resource has no id, so nothing can refer to it (dom-3): give it an "
                  "id and refer to it as '#id'");
        path_pop(v, m2);
        path_pop(v, m1);
    }
}

/* dom-4, dom-5: a contained resource has no meta.versionId, meta.lastUpdated or meta.security. */
static void check_contained_meta(struct fv *v, struct json_object *res)
{
    static const char *const banned[] = {"versionId", "lastUpdated", "security"};
    struct json_object *meta;
    if (!json_object_object_get_ex(res, "meta", &meta) ||
        !json_object_is_type(meta, json_type_object))
        return;
    for (size_t i = 0; i < sizeof banned / sizeof banned[0]; i++) {
        if (!json_object_object_get_ex(meta, banned[i], NULL)) continue;
        size_t mark = path_push(v, ".meta.", banned[i], strlen(banned[i]));
        issue(v, "invalid", "a contained resource SHALL NOT have meta.%s (%s)", banned[i],
              i < 2 ? "dom-4" : "dom-5");
        path_pop(v, mark);
    }
}

/* Checks one value of element e (an array item or a single value). */
static void validate_value(struct fv *v, const struct jk_fhir_elem *e, const char *ename,
                           struct json_object *val)
{
    const struct jk_fhir_type *t = jk_fhir_type_at(e->type);
    if (t->kind == JK_FHIR_PRIMITIVE) {
        check_primitive(v, e, ename, val);
        return;
    }
    if (!json_object_is_type(val, json_type_object)) {
        issue(v, "structure", "%s must be a JSON object (%s), not %s", ename, jk_fhir_str(t->name),
              json_kind(val));
        return;
    }
    if (t->kind == JK_FHIR_RESOURCE) {
        int contained = strcmp(ename, "contained") == 0;
        validate_resource(v, val, contained ? FV_CONTAINED : FV_NESTED);
        return;
    }
    const struct jk_fhir_node *node = jk_fhir_elem_node(e);
    if (!node) return;
    validate_object(v, node, val, 0);
    if (e->type == known.extension) {
        check_extension(v, val);
    } else if (e->type == known.reference) {
        struct json_object *ref;
        if (json_object_object_get_ex(val, "reference", &ref) &&
            json_object_is_type(ref, json_type_string) && json_object_get_string_len(ref) > 0) {
            size_t mark = path_push(v, ".", "reference", 9);
            check_reference(v, json_object_get_string(ref),
                            (size_t)json_object_get_string_len(ref));
            path_pop(v, mark);
        }
    } else if (e->binding != JK_FHIR_NONE) {
        const struct jk_fhir_valueset *vs = jk_fhir_valueset_at(e->binding);
        if (e->type == known.coding)
            check_coding(v, vs, val);
        else if (e->type == known.codeable_concept)
            check_codeable_concept(v, vs, val);
    }
}

/* The array under "_name" next to "name" in obj, or NULL. */
static struct json_object *sibling(struct json_object *obj, const char *name, int underscore)
{
    char key[128];
    size_t n = strlen(name);
    struct json_object *o;
    if (n + 2 > sizeof key) return NULL;
    if (underscore) {
        key[0] = '_';
        memcpy(key + 1, name, n + 1);
    } else {
        memcpy(key, name, n + 1);
    }
    return json_object_object_get_ex(obj, key, &o) ? o : NULL;
}

/* Checks "name": value for element e of obj: array or single value per max, then each value. */
static void validate_element(struct fv *v, struct json_object *obj, const struct jk_fhir_elem *e,
                             struct json_object *val)
{
    const char *ename = jk_fhir_str(e->name);
    if (json_object_is_type(val, json_type_null)) {
        issue(v, "structure", "%s is null: leave the element out instead", ename);
        return;
    }
    int is_array = json_object_is_type(val, json_type_array);
    if (e->max <= 1) {
        if (is_array) {
            issue(v, "structure", "%s must be a single value, not an array (max 1)", ename);
            return;
        }
        validate_value(v, e, ename, val);
        return;
    }
    if (!is_array) {
        issue(v, "structure", "%s must be an array (max %s), even for one value", ename,
              e->max == JK_FHIR_UNBOUNDED ? "*" : "> 1");
        return;
    }
    size_t n = json_object_array_length(val);
    if (n == 0) {
        issue(v, "structure", "%s is an empty array: leave the element out instead", ename);
        return;
    }
    if (e->min > 1 && n < e->min)
        issue(v, "required", "%s has %zu values; at least %u are required", ename, n, e->min);
    if (e->max != JK_FHIR_UNBOUNDED && n > e->max)
        issue(v, "structure", "%s has %zu values; at most %u are allowed", ename, n, e->max);
    int in_contained = strcmp(ename, "contained") == 0 && v->in_contained;
    if (in_contained) {
        issue(v, "invalid",
              "a contained resource SHALL NOT contain further contained resources (dom-2)");
        return;
    }
    struct json_object *ext = NULL;
    if (jk_fhir_type_at(e->type)->kind == JK_FHIR_PRIMITIVE) ext = sibling(obj, ename, 1);
    for (size_t i = 0; i < n && !full(v); i++) {
        struct json_object *item = json_object_array_get_idx(val, i);
        size_t mark = path_index(v, i);
        if (json_object_is_type(item, json_type_null)) {
            struct json_object *x = ext && json_object_is_type(ext, json_type_array)
                                        ? json_object_array_get_idx(ext, i)
                                        : NULL;
            if (!x || json_object_is_type(x, json_type_null))
                issue(v, "structure",
                      "%s contains null; null is only allowed where _%s has an extension at the "
                      "same position",
                      ename, ename);
        } else {
            validate_value(v, e, ename, item);
        }
        path_pop(v, mark);
    }
}

/* Checks "_name": the id/extension of primitive element e, aligned with "name" for arrays. */
static void validate_primitive_ext(struct fv *v, struct json_object *obj,
                                   const struct jk_fhir_elem *e, struct json_object *val)
{
    const char *ename = jk_fhir_str(e->name);
    if (e->max <= 1) {
        if (!json_object_is_type(val, json_type_object))
            issue(v, "structure", "_%s must be an object holding id and extension, not %s", ename,
                  json_kind(val));
        else
            validate_object(v, known.element, val, 0);
        return;
    }
    if (!json_object_is_type(val, json_type_array)) {
        issue(v, "structure", "_%s must be an array aligned with %s, not %s", ename, ename,
              json_kind(val));
        return;
    }
    size_t n = json_object_array_length(val);
    struct json_object *base = sibling(obj, ename, 0);
    if (n == 0) {
        issue(v, "structure", "_%s is an empty array: leave it out instead", ename);
        return;
    }
    if (base && json_object_is_type(base, json_type_array) && json_object_array_length(base) != n) {
        issue(v, "structure", "_%s has %zu entries but %s has %zu; they must be aligned", ename, n,
              ename, json_object_array_length(base));
        return;
    }
    for (size_t i = 0; i < n && !full(v); i++) {
        struct json_object *item = json_object_array_get_idx(val, i);
        size_t mark = path_index(v, i);
        if (json_object_is_type(item, json_type_null)) {
            struct json_object *b = base && json_object_is_type(base, json_type_array)
                                        ? json_object_array_get_idx(base, i)
                                        : NULL;
            if (!b || json_object_is_type(b, json_type_null))
                issue(v, "structure", "%s and _%s are both null at the same position", ename,
                      ename);
        } else if (!json_object_is_type(item, json_type_object)) {
            issue(v, "structure", "_%s entries must be objects or null, not %s", ename,
                  json_kind(item));
        } else {
            validate_object(v, known.element, item, 0);
        }
        path_pop(v, mark);
    }
}

/* Names the element behind a missing required bit of node, e.g. "status" or "value[x]". */
static void report_missing(struct fv *v, const struct jk_fhir_node *node, unsigned bit)
{
    for (size_t i = 0; i < node->n_elems; i++) {
        const struct jk_fhir_elem *e = jk_fhir_node_elem(node, i);
        if (e->req_bit != bit) continue;
        const struct jk_fhir_choice *c = jk_fhir_choice_of(e);
        const char *name = c ? jk_fhir_str(c->name) : jk_fhir_str(e->name);
        size_t mark = path_push(v, ".", name, strlen(name));
        if (c) {
            char types[400];
            path_push(v, "", "[x]", 3);
            issue(v, "required", "missing required element %s[x] (one of the types %s)", name,
                  choice_types(c, types, sizeof types));
        } else {
            issue(v, "required", "missing required element %s (min %u)", name, e->min);
        }
        path_pop(v, mark);
        return;
    }
}

/* Checks every property of obj against node's elements, then cardinality and choices. */
static void validate_object(struct fv *v, const struct jk_fhir_node *node, struct json_object *obj,
                            int is_resource)
{
    if (v->depth >= FV_MAX_DEPTH) {
        issue(v, "too-costly", "elements are nested more than %d levels deep", FV_MAX_DEPTH);
        return;
    }
    v->depth++;
    uint64_t seen = 0;
    struct {
        uint16_t choice;
        const struct jk_fhir_elem *elem;
    } chosen[FV_MAX_CHOICES];
    size_t n_chosen = 0, n_props = 0;
    json_object_object_foreach(obj, key, val)
    {
        if (full(v)) break;
        if (is_resource && strcmp(key, "resourceType") == 0) continue;
        n_props++;
        int is_ext = key[0] == '_';
        const char *name = key + is_ext;
        const struct jk_fhir_elem *e = jk_fhir_elem_find(node, name, strlen(name));
        size_t mark = path_push(v, ".", name, strlen(name));
        const struct jk_fhir_type *t = e ? jk_fhir_type_at(e->type) : NULL;
        if (!e || (is_ext && t->kind != JK_FHIR_PRIMITIVE)) {
            path_pop(v, mark);
            mark = path_push(v, ".", key, strlen(key));
            if (e)
                issue(v, "structure",
                      "%s: the _name form is only for primitive elements, and %s "
                      "is a %s",
                      key, name, jk_fhir_str(t->name));
            else
                unknown_property(v, node, key);
            path_pop(v, mark);
            continue;
        }
        if (e->max == 0) {
            issue(v, "structure", "%s is not allowed here (%s, max 0)", key,
                  jk_fhir_str(node->path));
            path_pop(v, mark);
            continue;
        }
        if (e->req_bit != FV_REQ_NONE) seen |= (uint64_t)1 << e->req_bit;
        if (e->choice != JK_FHIR_NONE) {
            size_t k = 0;
            while (k < n_chosen && chosen[k].choice != e->choice)
                k++;
            if (k < n_chosen && chosen[k].elem != e) {
                const struct jk_fhir_choice *c = jk_fhir_choice_of(e);
                issue(v, "structure", "only one type of %s[x] may be present, found %s and %s",
                      jk_fhir_str(c->name), jk_fhir_str(chosen[k].elem->name), name);
            } else if (k == n_chosen && n_chosen < FV_MAX_CHOICES) {
                chosen[n_chosen].choice = e->choice;
                chosen[n_chosen].elem = e;
                n_chosen++;
            }
        }
        if (is_ext)
            validate_primitive_ext(v, obj, e, val);
        else
            validate_element(v, obj, e, val);
        path_pop(v, mark);
    }
    /* ele-1 is about elements; a resource with nothing but its type is valid. */
    if (n_props == 0 && !is_resource && !full(v))
        issue(v, "structure", "empty object: an element must have a value or children (ele-1)");
    uint64_t need = node->n_required >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << node->n_required) - 1);
    uint64_t missing = need & ~seen;
    for (unsigned bit = 0; missing && bit < node->n_required && !full(v); bit++)
        if (missing & ((uint64_t)1 << bit)) report_missing(v, node, bit);
    v->depth--;
}

static void validate_resource(struct fv *v, struct json_object *obj, enum fv_mode mode)
{
    struct json_object *rt;
    if (!json_object_is_type(obj, json_type_object)) {
        issue(v, "structure", "a resource must be a JSON object, not %s", json_kind(obj));
        return;
    }
    if (!json_object_object_get_ex(obj, "resourceType", &rt)) {
        issue(v, "required",
              "resourceType is missing: a resource must name its type, e.g. "
              "\"resourceType\": \"Patient\"");
        return;
    }
    if (!json_object_is_type(rt, json_type_string)) {
        issue(v, "structure", "resourceType must be a string, not %s", json_kind(rt));
        return;
    }
    const char *tn = json_object_get_string(rt);
    size_t tl = (size_t)json_object_get_string_len(rt);
    const struct jk_fhir_type *t = jk_fhir_type_find(tn, tl);
    if (!t || t->kind != JK_FHIR_RESOURCE || t->is_abstract) {
        issue(v, "invalid", "resourceType '%s' is not a FHIR R4 resource type", quote(tn, tl).s);
        return;
    }
    struct json_object *saved_container = v->container;
    struct strs *saved_ids = v->ids;
    int saved_in_contained = v->in_contained, saved_allow_conditional = v->allow_conditional;
    size_t mark = mode == FV_TOP ? path_push(v, "", tn, tl) : v->len;
    if (mode == FV_CONTAINED) {
        v->in_contained = 1;
    } else {
        v->container = obj;
        v->ids = contained_ids(v, obj);
        v->in_contained = 0;
    }
    if (jk_fhir_type_index(t) == known.bundle) {
        struct json_object *bt;
        const char *type =
            json_object_object_get_ex(obj, "type", &bt) && json_object_is_type(bt, json_type_string)
                ? json_object_get_string(bt)
                : "";
        v->allow_conditional = strcmp(type, "transaction") == 0 || strcmp(type, "batch") == 0;
    }
    validate_object(v, jk_fhir_node_at(t->node), obj, 1);
    if (mode == FV_CONTAINED)
        check_contained_meta(v, obj);
    else if (!full(v))
        check_contained_referenced(v, obj);
    v->container = saved_container;
    v->ids = saved_ids;
    v->in_contained = saved_in_contained;
    v->allow_conditional = saved_allow_conditional;
    path_pop(v, mark);
}

/* ---- public ----------------------------------------------------------------------------- */

int jk_fhir_is_resource_type(const char *name, size_t len)
{
    const struct jk_fhir_type *t = jk_fhir_type_find(name, len);
    return t && t->kind == JK_FHIR_RESOURCE && !t->is_abstract;
}

jk_rc jk_fhir_validate(struct json_object *res, struct jk_diag *d)
{
    pthread_once(&known_once, known_init);
    struct fv v;
    v.d = d;
    v.container = NULL;
    v.ids = NULL;
    v.depth = 0;
    v.in_contained = 0;
    v.allow_conditional = 0;
    v.len = 0;
    v.path[0] = '\0';
    size_t before = d->n_issues;
    validate_resource(&v, res, FV_TOP);
    return d->n_issues > before ? JK_EINVAL : JK_OK;
}
