/* protect.c - identity and phone numbers sealed at rest, found by blind index, masked in
 * responses; the identity rules file. */
#include "auth/protect.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/diag.h"
#include "core/log.h"
#include "core/rules.h"
#include "core/time.h"
#include "fhir/model.h"

#define MAX_SYSTEMS 64 /* identity systems, and identifier types, in the rules */
#define MAX_LIST    64 /* phone systems, public resource types */
#define MAX_PATH    1024
#define MAX_DEPTH   200 /* parsed JSON is at most JK_MAX_JSON_DEPTH deep; a guard anyway */

#define MARKER      "jkenc:"
#define MARKER_LEN  (sizeof MARKER - 1)
#define HEAD_LEN    (MARKER_LEN + 2 + 3 + 2 * JK_BLIND_INDEX_BYTES) /* jkenc:1:id:<hex> */
#define BLOB_MAX    (JK_BLIND_MAX_VALUE + JK_SEAL_OVERHEAD)
#define B64_MAX     (BLOB_MAX / 3 * 4 + 4)
#define MARKER_MAX  (HEAD_LEN + 1 + B64_MAX)
#define PLACEHOLDER "****"

/* ---- the rules ---- */

struct mask {
    int keep_first, keep_last, min_hidden;
};

struct id_type {
    const char *system, *code;
};

struct rules {
    struct jk_arena *arena; /* every string below */
    const char *systems[MAX_SYSTEMS];
    const char *system_names[MAX_SYSTEMS]; /* the <name> of identity.system.<name> */
    size_t n_systems;
    struct id_type types[MAX_SYSTEMS];
    size_t n_types;
    const char *phone_systems[MAX_LIST];
    size_t n_phone_systems;
    const char *public_types[MAX_LIST];
    size_t n_public_types;
    struct mask mask_id, mask_ph;
};

/* The module's state: written by jk_protect_init before threads use it, read-only after. */
static struct {
    const jk_keys *keys;
    jk_keys *owned_keys; /* jk_protect_start's */
    struct rules r;
    int is_ready;
} st;

const char *jk_identity_rules_path(void)
{
    const char *p = getenv("JIANKANG_IDENTITY_RULES");
    return p && *p ? p : "rules/identity.json";
}

/* A non-empty string of at most max bytes without white space or control characters. */
static const char *token_of(struct json_object *v, size_t max)
{
    if (!v || !json_object_is_type(v, json_type_string)) return NULL;
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (!n || n > max) return NULL;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= ' ' || s[i] == 0x7f) return NULL;
    return s;
}

/* The part of a rule code after prefix when it is a name of [a-z0-9-] (identity.system.x)
 * or [A-Za-z0-9-] (identity.type.X), else NULL. */
static const char *family_name(const char *code, const char *prefix, int any_case)
{
    size_t n = strlen(prefix);
    if (strncmp(code, prefix, n) || !code[n]) return NULL;
    for (const char *p = code + n; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-' ||
              (any_case && isupper((unsigned char)*p))))
            return NULL;
    return code + n;
}

enum rule_kind { R_SYSTEM, R_TYPE, R_PHONE_SYSTEMS, R_PUBLIC_TYPES, R_MASK_ID, R_MASK_PH };

static const struct {
    const char *code;
    enum rule_kind kind;
} fixed_rules[] = {
    {"phone.systems", R_PHONE_SYSTEMS},
    {"phone.public_resource_types", R_PUBLIC_TYPES},
    {"mask.identity", R_MASK_ID},
    {"mask.phone", R_MASK_PH},
};

#define N_FIXED (sizeof fixed_rules / sizeof fixed_rules[0])

static int rule_kind_of(const char *code, enum rule_kind *kind)
{
    for (size_t i = 0; i < N_FIXED; i++)
        if (!strcmp(code, fixed_rules[i].code)) {
            *kind = fixed_rules[i].kind;
            return 1;
        }
    if (family_name(code, "identity.system.", 0)) {
        *kind = R_SYSTEM;
        return 1;
    }
    if (family_name(code, "identity.type.", 1)) {
        *kind = R_TYPE;
        return 1;
    }
    return 0;
}

static jk_rc mask_value(struct json_object *v, const char *file, const char *ptr, struct mask *m,
                        char *err, size_t errlen)
{
    static const char *const keys[] = {"keep_first", "keep_last", "min_hidden", NULL};
    int *fields[] = {&m->keep_first, &m->keep_last, &m->min_hidden};
    char sub[300];
    jk_rc rc;
    if (!json_object_is_type(v, json_type_object))
        return jk_rules_fail(err, errlen, file, ptr,
                             "must be an object {\"keep_first\": N, \"keep_last\": N, "
                             "\"min_hidden\": N}");
    if ((rc = jk_rules_known_keys(v, keys, file, ptr, err, errlen))) return rc;
    for (int i = 0; i < 3; i++) {
        struct json_object *f = NULL;
        long min = i == 2 ? 1 : 0, max = 32;
        snprintf(sub, sizeof sub, "%.200s/%s", ptr, keys[i]);
        json_object_object_get_ex(v, keys[i], &f);
        if (!f || !json_object_is_type(f, json_type_int) || json_object_get_int64(f) < min ||
            json_object_get_int64(f) > max)
            return jk_rules_fail(err, errlen, file, sub, "must be a whole number from %ld to %ld",
                                 min, max);
        *fields[i] = (int)json_object_get_int64(f);
    }
    return JK_OK;
}

/* A list of distinct strings, each accepted by ok(). */
static jk_rc list_value(struct json_object *v, const char *file, const char *ptr, const char *what,
                        int (*ok)(const char *), struct jk_arena *a, const char **out, size_t *n,
                        char *err, size_t errlen)
{
    char sub[300];
    if (!json_object_is_type(v, json_type_array) || !json_object_array_length(v))
        return jk_rules_fail(err, errlen, file, ptr, "must be a non-empty list of %s", what);
    size_t len = json_object_array_length(v);
    if (len > MAX_LIST)
        return jk_rules_fail(err, errlen, file, ptr, "lists more than %d entries", MAX_LIST);
    for (size_t i = 0; i < len; i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const char *s = token_of(e, 255);
        snprintf(sub, sizeof sub, "%.200s/%zu", ptr, i);
        if (!s || !ok(s))
            return jk_rules_fail(err, errlen, file, sub, "'%.100s' is not one of the %s",
                                 s ? s : json_object_to_json_string(e), what);
        for (size_t j = 0; j < *n; j++)
            if (!strcmp(out[j], s))
                return jk_rules_fail(err, errlen, file, sub, "'%s' is listed twice", s);
        if (!(out[(*n)++] = jk_arena_strdup(a, s))) return JK_ENOMEM;
    }
    return JK_OK;
}

static int is_contact_system(const char *s)
{
    static const char *const codes[] = {"phone", "fax", "email", "pager", "url", "sms", "other"};
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++)
        if (!strcmp(s, codes[i])) return 1;
    return 0;
}

static int is_resource_type(const char *s)
{
    const struct jk_fhir_type *t = jk_fhir_type_find(s, strlen(s));
    return t && t->kind == JK_FHIR_RESOURCE && !t->is_abstract;
}

/* An absolute URI, as an Identifier.system must be to mean anything across institutions. */
static int is_absolute_uri(const char *s)
{
    const char *colon = strchr(s, ':');
    if (!colon || colon == s || !isalpha((unsigned char)s[0]) || !colon[1]) return 0;
    for (const char *p = s; p < colon; p++)
        if (!isalnum((unsigned char)*p) && *p != '+' && *p != '-' && *p != '.') return 0;
    return 1;
}

static jk_rc rule_value(enum rule_kind kind, struct json_object *v, const char *file,
                        const char *ptr, struct rules *r, char *err, size_t errlen)
{
    static const char *const type_keys[] = {"system", "code", NULL};
    char sub[300];
    jk_rc rc;
    switch (kind) {
    case R_SYSTEM: {
        const char *s = token_of(v, 255);
        if (!s || !is_absolute_uri(s))
            return jk_rules_fail(err, errlen, file, ptr,
                                 "must be an absolute URI of at most 255 bytes (an "
                                 "Identifier.system such as urn:oid:2.16.156.10011.1.3)");
        for (size_t i = 0; i < r->n_systems; i++)
            if (!strcmp(r->systems[i], s))
                return jk_rules_fail(err, errlen, file, ptr, "'%s' is listed by another rule", s);
        if (r->n_systems == MAX_SYSTEMS)
            return jk_rules_fail(err, errlen, file, ptr, "more than %d identity systems",
                                 MAX_SYSTEMS);
        if (!(r->systems[r->n_systems++] = jk_arena_strdup(r->arena, s))) return JK_ENOMEM;
        return JK_OK;
    }
    case R_TYPE: {
        struct json_object *sys = NULL, *c = NULL;
        if (!json_object_is_type(v, json_type_object))
            return jk_rules_fail(err, errlen, file, ptr,
                                 "must be an object {\"system\": URI, \"code\": CODE} (a coding "
                                 "of Identifier.type)");
        if ((rc = jk_rules_known_keys(v, type_keys, file, ptr, err, errlen))) return rc;
        json_object_object_get_ex(v, "system", &sys);
        json_object_object_get_ex(v, "code", &c);
        const char *s = token_of(sys, 255), *k = token_of(c, 64);
        snprintf(sub, sizeof sub, "%.200s/%s", ptr, !s || !is_absolute_uri(s) ? "system" : "code");
        if (!s || !is_absolute_uri(s) || !k)
            return jk_rules_fail(err, errlen, file, sub,
                                 "must be a non-empty string without spaces (%s)",
                                 !s || !is_absolute_uri(s) ? "an absolute URI" : "a code");
        for (size_t i = 0; i < r->n_types; i++)
            if (!strcmp(r->types[i].system, s) && !strcmp(r->types[i].code, k))
                return jk_rules_fail(err, errlen, file, ptr, "%s|%s is listed by another rule", s,
                                     k);
        if (r->n_types == MAX_SYSTEMS)
            return jk_rules_fail(err, errlen, file, ptr, "more than %d identifier types",
                                 MAX_SYSTEMS);
        struct id_type *t = &r->types[r->n_types++];
        if (!(t->system = jk_arena_strdup(r->arena, s)) ||
            !(t->code = jk_arena_strdup(r->arena, k)))
            return JK_ENOMEM;
        return JK_OK;
    }
    case R_PHONE_SYSTEMS:
        return list_value(v, file, ptr, "ContactPoint.system codes (phone, sms, ...)",
                          is_contact_system, r->arena, r->phone_systems, &r->n_phone_systems, err,
                          errlen);
    case R_PUBLIC_TYPES:
        return list_value(v, file, ptr, "FHIR R4 resource types", is_resource_type, r->arena,
                          r->public_types, &r->n_public_types, err, errlen);
    case R_MASK_ID: return mask_value(v, file, ptr, &r->mask_id, err, errlen);
    case R_MASK_PH: return mask_value(v, file, ptr, &r->mask_ph, err, errlen);
    }
    return JK_EINTERNAL;
}

static jk_rc rules_check(struct json_object *root, const char *path, struct rules *r, char *err,
                         size_t errlen)
{
    struct json_object *v, *rules;
    char ptr[300];
    jk_rc rc = jk_rules_top(root, path, "identity", &rules, err, errlen);
    if (rc) return rc;
    json_object_object_foreach(rules, code, rule)
    {
        enum rule_kind kind;
        snprintf(ptr, sizeof ptr, "/rules/%.200s", code);
        if (!rule_kind_of(code, &kind))
            return jk_rules_fail(err, errlen, path, ptr,
                                 "unknown rule '%.200s' (known: identity.system.<name>, "
                                 "identity.type.<name>, phone.systems, "
                                 "phone.public_resource_types, mask.identity, mask.phone)",
                                 code);
        if ((rc = jk_rules_rule(rule, path, code, ptr, sizeof ptr, &v, err, errlen))) return rc;
        if ((rc = rule_value(kind, v, path, ptr, r, err, errlen))) return rc;
        if (kind == R_SYSTEM && !(r->system_names[r->n_systems - 1] = jk_arena_strdup(
                                      r->arena, family_name(code, "identity.system.", 0))))
            return JK_ENOMEM;
    }
    for (size_t i = 0; i < N_FIXED; i++) {
        snprintf(ptr, sizeof ptr, "/rules/%s", fixed_rules[i].code);
        if (!json_object_object_get_ex(rules, fixed_rules[i].code, &v))
            return jk_rules_fail(err, errlen, path, ptr, "the rule is missing");
    }
    if (!r->n_systems)
        return jk_rules_fail(err, errlen, path, "/rules",
                             "no identity.system.<name> rule: at least one system must be listed");
    return JK_OK;
}

static jk_rc rules_load(const char *path, struct rules *out, char *err, size_t errlen)
{
    struct json_object *root;
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    if (!(out->arena = jk_arena_new(0)))
        rc = JK_ENOMEM;
    else if ((rc = rules_check(root, path, out, err, errlen)))
        jk_arena_free(out->arena);
    json_object_put(root);
    return rc;
}

jk_rc jk_protect_init(const jk_keys *keys, const char *rules_path, char *err, size_t errlen)
{
    struct rules r;
    if (!keys) {
        snprintf(err, errlen, "identity protection needs the platform keys");
        return JK_EINVAL;
    }
    jk_rc rc = rules_load(rules_path ? rules_path : jk_identity_rules_path(), &r, err, errlen);
    if (rc) return rc;
    if (st.is_ready) jk_arena_free(st.r.arena);
    st.r = r;
    st.keys = keys;
    st.is_ready = 1;
    return JK_OK;
}

jk_rc jk_protect_start(const char *keys_path, char *err, size_t errlen)
{
    jk_keys *keys = NULL;
    jk_rc rc = jk_keys_load_or_create(keys_path, &keys, err, errlen);
    if (rc) return rc;
    if ((rc = jk_protect_init(keys, NULL, err, errlen))) {
        jk_keys_free(keys);
        return rc;
    }
    jk_keys_free(st.owned_keys);
    st.owned_keys = keys;
    return JK_OK;
}

/* ---- markers ---- */

struct marker {
    int is_phone;
    const char *hex;     /* the blind index, 64 hex digits */
    const char *b64;     /* the sealed value, base64url without padding */
    size_t b64_len, len; /* the base64 text, the whole marker */
    size_t head_len;     /* "jkenc:1:id:<hex>": the aad of the sealed value */
};

static int is_b64url(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '_';
}

/* Whether s[0..n) is exactly one marker. */
static int marker_parse(const char *s, size_t n, struct marker *m)
{
    if (n <= HEAD_LEN + 1 || n > MARKER_MAX || memcmp(s, MARKER "1:", MARKER_LEN + 2)) return 0;
    const char *k = s + MARKER_LEN + 2;
    if (!memcmp(k, "id:", 3))
        m->is_phone = 0;
    else if (!memcmp(k, "ph:", 3))
        m->is_phone = 1;
    else
        return 0;
    m->hex = k + 3;
    for (size_t i = 0; i < 2 * JK_BLIND_INDEX_BYTES; i++)
        if (!isdigit((unsigned char)m->hex[i]) && !(m->hex[i] >= 'a' && m->hex[i] <= 'f')) return 0;
    if (s[HEAD_LEN] != ':') return 0;
    m->b64 = s + HEAD_LEN + 1;
    m->b64_len = n - HEAD_LEN - 1;
    for (size_t i = 0; i < m->b64_len; i++)
        if (!is_b64url((unsigned char)m->b64[i])) return 0;
    m->len = n;
    m->head_len = HEAD_LEN;
    return 1;
}

int jk_protect_index_code(const char *s, size_t n, char code[JK_PROTECT_CODE_LEN + 1])
{
    struct marker m;
    if (!s || !marker_parse(s, n, &m)) return 0;
    memcpy(code, "bi:", 3);
    memcpy(code + 3, m.hex, 2 * JK_BLIND_INDEX_BYTES);
    code[JK_PROTECT_CODE_LEN] = '\0';
    return 1;
}

/* Opens marker s into out (cap bytes). JK_EINVAL when it does not open. */
static jk_rc marker_open(const char *s, const struct marker *m, char *out, size_t cap,
                         size_t *out_len)
{
    unsigned char blob[BLOB_MAX];
    size_t blob_len = 0;
    if (!st.is_ready || sodium_base642bin(blob, sizeof blob, m->b64, m->b64_len, NULL, &blob_len,
                                          NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING))
        return JK_EINVAL;
    jk_rc rc =
        jk_crypto_open(st.keys, s, m->head_len, blob, blob_len, (unsigned char *)out, cap, out_len);
    return rc == JK_ETOOBIG ? JK_EINVAL : rc;
}

/* Seals s[0..n) of the kind into marker (MARKER_MAX + 1 bytes, NUL-terminated). */
static jk_rc marker_make(int is_phone, const char *domain, const char *s, size_t n, char *marker,
                         size_t *marker_len)
{
    unsigned char bi[JK_BLIND_INDEX_BYTES], blob[BLOB_MAX];
    size_t blob_len;
    jk_rc rc = jk_crypto_blind_index(st.keys, domain, s, n, bi);
    if (rc) return rc;
    memcpy(marker, MARKER "1:", MARKER_LEN + 2);
    memcpy(marker + MARKER_LEN + 2, is_phone ? "ph:" : "id:", 3);
    jk_crypto_hex(bi, sizeof bi, marker + MARKER_LEN + 5);
    /* The aad is the head: the sealed value opens only under its own kind and blind index,
     * and the blind index is keyed over the system, so a value cannot be moved to another
     * marker, and a marker moved to another system no longer matches it. */
    if ((rc = jk_crypto_seal(st.keys, marker, HEAD_LEN, s, n, blob, sizeof blob, &blob_len)))
        return rc;
    marker[HEAD_LEN] = ':';
    sodium_bin2base64(marker + HEAD_LEN + 1, MARKER_MAX - HEAD_LEN, blob, blob_len,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    *marker_len = strlen(marker);
    return JK_OK;
}

jk_rc jk_protect_seal_value(struct jk_arena *a, const char *domain, const char *value,
                            const char **marker)
{
    char m[MARKER_MAX + 1];
    size_t n = value ? strlen(value) : 0, len = 0;
    *marker = NULL;
    if (!st.is_ready) return JK_EINTERNAL;
    if (!n || n > JK_BLIND_MAX_VALUE || strchr(value, '*') || !strncmp(value, MARKER, MARKER_LEN))
        return JK_EINVAL;
    jk_rc rc = marker_make(0, domain, value, n, m, &len);
    if (rc) return rc;
    *marker = jk_arena_strndup(a, m, len);
    return *marker ? JK_OK : JK_ENOMEM;
}

/* ---- secrets kept outside resources ---- */

jk_rc jk_protect_seal_secret(struct jk_arena *a, const char *context, const void *p, size_t n,
                             const char **out)
{
    size_t cap = n + JK_SEAL_OVERHEAD, blob_len = 0;
    unsigned char *blob = jk_arena_alloc(a, cap);
    char *text = jk_arena_alloc(a, sodium_base64_ENCODED_LEN(cap, sodium_base64_VARIANT_ORIGINAL));
    *out = NULL;
    if (!st.is_ready) return JK_EINTERNAL;
    if (!blob || !text) return JK_ENOMEM;
    jk_rc rc = jk_crypto_seal(st.keys, context, strlen(context), p, n, blob, cap, &blob_len);
    if (rc) return rc;
    sodium_bin2base64(text, sodium_base64_ENCODED_LEN(cap, sodium_base64_VARIANT_ORIGINAL), blob,
                      blob_len, sodium_base64_VARIANT_ORIGINAL);
    *out = text;
    return JK_OK;
}

jk_rc jk_protect_open_secret(struct jk_arena *a, const char *context, const char *sealed, void *out,
                             size_t cap, size_t *out_len)
{
    size_t n = strlen(sealed), blob_len = 0;
    unsigned char *blob = jk_arena_alloc(a, n);
    if (!st.is_ready) return JK_EINTERNAL;
    if (!blob) return JK_ENOMEM;
    if (sodium_base642bin(blob, n, sealed, n, NULL, &blob_len, NULL,
                          sodium_base64_VARIANT_ORIGINAL))
        return JK_EINVAL;
    return jk_crypto_open(st.keys, context, strlen(context), blob, blob_len, out, cap, out_len);
}

/* ---- walking a resource ---- */

struct walk {
    struct jk_diag *d;
    int is_unseal;
    const char *rtype; /* the type of the innermost resource */
    char path[MAX_PATH];
    size_t path_len;
    int depth;
    jk_rc rc;
};

static size_t path_push(struct walk *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(struct walk *w, const char *fmt, ...)
{
    size_t old = w->path_len;
    if (old < sizeof w->path - 1) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(w->path + old, sizeof w->path - old, fmt, ap);
        va_end(ap);
        if (n > 0)
            w->path_len = old + (size_t)n < sizeof w->path ? old + (size_t)n : sizeof w->path - 1;
    }
    return old;
}

static void path_pop(struct walk *w, size_t old)
{
    w->path_len = old;
    w->path[old] = '\0';
}

static int in_list(const char *const *list, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

static const char *str_member(struct json_object *o, const char *key)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* Whether Identifier-shaped o has a type coding the rules list. */
static int has_identity_type(struct json_object *o)
{
    struct json_object *type, *codings;
    if (!json_object_object_get_ex(o, "type", &type) ||
        !json_object_is_type(type, json_type_object) ||
        !json_object_object_get_ex(type, "coding", &codings) ||
        !json_object_is_type(codings, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(codings); i++) {
        struct json_object *c = json_object_array_get_idx(codings, i);
        const char *sys = json_object_is_type(c, json_type_object) ? str_member(c, "system") : NULL;
        const char *code = sys ? str_member(c, "code") : NULL;
        for (size_t j = 0; code && j < st.r.n_types; j++)
            if (!strcmp(st.r.types[j].system, sys) && !strcmp(st.r.types[j].code, code)) return 1;
    }
    return 0;
}

/* The blind index domain of a value: the identity system when the rules list it, "" for an
 * identity number found by its type alone (any system, or none: searches can then find it
 * without knowing the system), "phone" for every phone. */
static const char *domain_of(int is_phone, const char *system)
{
    if (is_phone) return "phone";
    return in_list(st.r.systems, st.r.n_systems, system) ? system : "";
}

/* Seals the value of o when o is an identity number or a phone number. */
static void seal_object(struct walk *w, struct json_object *o)
{
    struct json_object *v;
    if (!json_object_object_get_ex(o, "value", &v) || !json_object_is_type(v, json_type_string))
        return;
    const char *system = str_member(o, "system");
    int is_phone;
    if (in_list(st.r.systems, st.r.n_systems, system) || has_identity_type(o))
        is_phone = 0;
    else if (in_list(st.r.phone_systems, st.r.n_phone_systems, system) &&
             !in_list(st.r.public_types, st.r.n_public_types, w->rtype))
        is_phone = 1;
    else
        return;
    const char *what = is_phone ? "phone number" : "identity number";
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    size_t old = path_push(w, ".value");
    char marker[MARKER_MAX + 1];
    size_t len = 0;
    jk_rc rc = JK_OK;
    if (memchr(s, '*', n)) {
        rc = jk_diag_add(w->d, JK_EINVAL, "value", w->path,
                         "this %s contains '*', as masked numbers do: send the full number (a "
                         "PATCH that leaves it out keeps the stored one)",
                         what);
    } else if ((rc = marker_make(is_phone, domain_of(is_phone, system), s, n, marker, &len))) {
        rc = rc == JK_ENOMEM ? rc
                             : jk_diag_add(w->d, JK_EINVAL, "value", w->path,
                                           rc == JK_ETOOBIG ? "this %s is longer than 1024 bytes"
                                                            : "this %s has no digit or letter",
                                           what);
    } else if (!json_object_set_string_len(v, marker, (int)len)) {
        rc = JK_ENOMEM;
    }
    sodium_memzero(marker, sizeof marker);
    path_pop(w, old);
    if (rc && !w->rc) w->rc = rc;
}

/* A string of the resource: a marker is refused (seal) or opened (unseal). */
static void visit_string(struct walk *w, struct json_object *v)
{
    const char *s = json_object_get_string(v);
    size_t n = (size_t)json_object_get_string_len(v);
    if (n < MARKER_LEN || memcmp(s, MARKER, MARKER_LEN)) return;
    if (!w->is_unseal) {
        jk_rc rc = jk_diag_add(w->d, JK_EINVAL, "value", w->path,
                               "values starting with 'jkenc:' are reserved for numbers the "
                               "platform sealed; send the number itself");
        if (!w->rc) w->rc = rc;
        return;
    }
    struct marker m;
    char clear[JK_BLIND_MAX_VALUE + 1];
    size_t len = 0;
    jk_rc rc = JK_OK;
    if (!marker_parse(s, n, &m)) return; /* not made here: sealing refuses it later */
    if (marker_open(s, &m, clear, sizeof clear - 1, &len)) {
        jk_log_error("protect",
                     "a sealed value at %s does not open (changed in the database, "
                     "or other keys)",
                     w->path);
        rc = jk_diag_add(w->d, JK_EINTERNAL, NULL, w->path, "a sealed value does not open");
    } else if (!json_object_set_string_len(v, clear, (int)len)) {
        rc = JK_ENOMEM;
    }
    sodium_memzero(clear, sizeof clear);
    if (rc && !w->rc) w->rc = rc;
}

static void visit(struct walk *w, struct json_object *v)
{
    if (w->rc) return;
    if (++w->depth > MAX_DEPTH) {
        w->rc = jk_diag_add(w->d, JK_EINVAL, "too-costly", w->path, "the resource nests too deep");
        w->depth--;
        return;
    }
    switch (json_object_get_type(v)) {
    case json_type_object: {
        const char *outer = w->rtype, *rt = str_member(v, "resourceType");
        if (rt) w->rtype = rt;
        json_object_object_foreach(v, key, m)
        {
            size_t old = path_push(w, "%s%s", w->path_len ? "." : "", key);
            if (json_object_is_type(m, json_type_string))
                visit_string(w, m);
            else
                visit(w, m);
            path_pop(w, old);
            if (w->rc) break;
        }
        if (!w->rc && !w->is_unseal) seal_object(w, v);
        w->rtype = outer;
        break;
    }
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(v) && !w->rc; i++) {
            struct json_object *e = json_object_array_get_idx(v, i);
            size_t old = path_push(w, "[%zu]", i);
            if (json_object_is_type(e, json_type_string))
                visit_string(w, e);
            else
                visit(w, e);
            path_pop(w, old);
        }
        break;
    default: break;
    }
    w->depth--;
}

static jk_rc walk(struct json_object *res, struct jk_diag *d, int is_unseal)
{
    struct walk *w = calloc(1, sizeof *w);
    if (!w) return JK_ENOMEM;
    w->d = d;
    w->is_unseal = is_unseal;
    const char *rt =
        json_object_is_type(res, json_type_object) ? str_member(res, "resourceType") : NULL;
    if (rt) {
        /* Expressions as the validator writes them: Patient.identifier[0].value. */
        snprintf(w->path, sizeof w->path, "%.100s", rt);
        w->path_len = strlen(w->path);
    }
    visit(w, res);
    jk_rc rc = w->rc;
    free(w);
    return rc;
}

jk_rc jk_protect_seal(struct json_object *res, struct jk_diag *d)
{
    if (!st.is_ready)
        return jk_diag_add(d, JK_EINTERNAL, NULL, NULL,
                           "identity protection is not initialised (jk_protect_init)");
    return walk(res, d, 0);
}

jk_rc jk_protect_unseal(struct json_object *res, struct jk_diag *d)
{
    return walk(res, d, 1);
}

/* ---- responses ---- */

/* Appends the masked form of s[0..n) (UTF-8): the rule's first and last characters kept,
 * a '*' for every other one. When the rule would hide fewer than min_hidden characters, at
 * most a quarter of them is kept at each end. */
static jk_rc append_masked(struct jk_buf *b, const struct mask *mk, const char *s, size_t n)
{
    size_t n_chars = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xc0) != 0x80) n_chars++;
    size_t first = (size_t)mk->keep_first, last = (size_t)mk->keep_last;
    if (n_chars < first + last + (size_t)mk->min_hidden) first = last = n_chars / 4;
    jk_rc rc = JK_OK;
    size_t k = 0; /* characters seen */
    for (size_t i = 0; i < n && !rc; k++) {
        size_t len = 1;
        while (i + len < n && ((unsigned char)s[i + len] & 0xc0) == 0x80)
            len++;
        if (k < first || k >= n_chars - last)
            rc = jk_buf_json_escape(b, s + i, len);
        else
            rc = jk_buf_append(b, "*", 1);
        i += len;
    }
    return rc;
}

/* Whether the quote at p (p > start) is escaped: an odd run of backslashes before it. */
static int is_escaped(const char *start, const char *p)
{
    size_t n = 0;
    while (p > start && p[-1] == '\\') {
        p--;
        n++;
    }
    return n & 1;
}

jk_rc jk_protect_view(struct jk_arena *a, const char *body, size_t len, unsigned show,
                      const char **out, size_t *out_len)
{
    static const char needle[] = "\"" MARKER;
    *out = body;
    *out_len = len;
    const char *q = body ? memmem(body, len, needle, sizeof needle - 1) : NULL;
    if (!q) return JK_OK;
    const char *p = body, *end = body + len;
    /* A clear value is shorter than its marker, and escaping grows it at most six times. */
    struct jk_buf b;
    jk_buf_init(&b, len * 6 + 64);
    jk_rc rc = JK_OK;
    int n_bad = 0;
    while (q && !rc) {
        const char *s = q + 1, *e = s;
        while (e < end && (is_b64url((unsigned char)*e) || *e == ':'))
            e++;
        struct marker m;
        if (is_escaped(body, q) || e >= end || *e != '"' || !marker_parse(s, (size_t)(e - s), &m)) {
            rc = jk_buf_append(&b, p, (size_t)(s - p)); /* not a marker: keep it as it is */
            p = s;
        } else {
            char clear[JK_BLIND_MAX_VALUE + 1];
            size_t n = 0;
            int is_open = !marker_open(s, &m, clear, sizeof clear - 1, &n);
            rc = jk_buf_append(&b, p, (size_t)(s - p));
            if (!rc && !is_open) {
                n_bad++;
                rc = jk_buf_puts(&b, PLACEHOLDER);
            } else if (!rc && (show & (m.is_phone ? JK_SHOW_PHONE : JK_SHOW_IDENTITY))) {
                rc = jk_buf_json_escape(&b, clear, n);
            } else if (!rc) {
                rc = append_masked(&b, m.is_phone ? &st.r.mask_ph : &st.r.mask_id, clear, n);
            }
            sodium_memzero(clear, sizeof clear);
            p = e; /* the closing quote is copied with what follows */
        }
        q = rc ? NULL : memmem(p, (size_t)(end - p), needle, sizeof needle - 1);
    }
    if (!rc) rc = jk_buf_append(&b, p, (size_t)(end - p));
    if (n_bad)
        jk_log_error("protect",
                     "%d sealed value(s) in a response did not open (changed in the database, "
                     "or other keys); shown as " PLACEHOLDER,
                     n_bad);
    char *copy = rc ? NULL : jk_arena_strndup(a, b.p ? b.p : "", b.len);
    size_t n = b.len;
    if (b.p) sodium_memzero(b.p, b.len);
    jk_buf_free(&b);
    if (!copy) return JK_ENOMEM;
    *out = copy;
    *out_len = n;
    return JK_OK;
}

/* ---- search ---- */

jk_rc jk_protect_search_codes(struct jk_arena *a, const char *system, const char *value,
                              const char ***codes, size_t *n)
{
    *codes = NULL;
    *n = 0;
    if (!st.is_ready || !value || !*value) return JK_OK;
    size_t n_domains = system ? 1 : st.r.n_systems + 2;
    const char **out = jk_arena_alloc(a, n_domains * sizeof *out);
    if (!out) return JK_ENOMEM;
    for (size_t i = 0; i < n_domains; i++) {
        const char *domain = system                ? domain_of(0, system)
                             : i < st.r.n_systems  ? st.r.systems[i]
                             : i == st.r.n_systems ? ""
                                                   : "phone";
        unsigned char bi[JK_BLIND_INDEX_BYTES];
        if (jk_crypto_blind_index(st.keys, domain, value, strlen(value), bi))
            continue; /* nothing to index: no sealed value can have it */
        char *code = jk_arena_alloc(a, JK_PROTECT_CODE_LEN + 1);
        if (!code) return JK_ENOMEM;
        memcpy(code, "bi:", 3);
        jk_crypto_hex(bi, sizeof bi, code + 3);
        out[(*n)++] = code;
    }
    *codes = out;
    return JK_OK;
}

const char *jk_protect_system_name(const char *system)
{
    for (size_t i = 0; system && st.is_ready && i < st.r.n_systems; i++)
        if (!strcmp(st.r.systems[i], system)) return st.r.system_names[i];
    return NULL;
}

const char *jk_protect_system_of(const char *name)
{
    for (size_t i = 0; name && st.is_ready && i < st.r.n_systems; i++)
        if (!strcmp(st.r.system_names[i], name)) return st.r.systems[i];
    return NULL;
}
