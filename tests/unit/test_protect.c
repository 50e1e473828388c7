/* test_protect.c - identity and phone numbers at rest and in responses: what is sealed and what
 * is not, the marker and its search index code, masking per show bit (the role's view),
 * tampered markers shown as ****, planted markers and masked numbers refused, the rules file
 * checked strictly, and a write through rest.c on SQLite whose database file never holds the
 * number while search by identifier and conditional create still find it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/diag.h"
#include "fhir/extract.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "fhir/search.h"
#include "store/store.h"

#define RULES      "rules/identity.json"
#define CITIZEN    "urn:oid:2.16.156.10011.1.3"
#define PASSPORT   "https://jiankang.example/fhir/sid/passport"
#define V2_0203    "http://terminology.hl7.org/CodeSystem/v2-0203"
#define ID_NUMBER  "350102199003071234"
#define ID_NUMBER2 "11010519491231002X"
#define PHONE      "13812345678"

static jk_keys *keys, *other_keys;

/* GB 11643-1999: the check character of the first 17 digits. */
static char gb11643_check(const char *s)
{
    static const int w[17] = {7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2};
    int sum = 0;
    for (int i = 0; i < 17; i++)
        sum += (s[i] - '0') * w[i];
    return "10X98765432"[sum % 11];
}

static void init_with(jk_keys *k)
{
    char err[JK_PROTECT_ERR] = "";
    jk_rc rc = jk_protect_init(k, RULES, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, JK_OK);
}

static int group_setup(void **state)
{
    (void)state;
    unsigned char m1[JK_MASTER_BYTES], m2[JK_MASTER_BYTES];
    memset(m1, 0x11, sizeof m1);
    memset(m2, 0x22, sizeof m2);
    return jk_keys_from(m1, NULL, &keys) || jk_keys_from(m2, NULL, &other_keys) ? -1 : 0;
}

static int group_teardown(void **state)
{
    (void)state;
    jk_keys_free(keys);
    jk_keys_free(other_keys);
    return 0;
}

/* A resource parsed from text (single quotes stand for double quotes, for readability). */
static struct json_object *parse(const char *text)
{
    char *s = strdup(text);
    assert_non_null(s);
    for (char *p = s; *p; p++)
        if (*p == '\'') *p = '"';
    struct json_object *o = json_tokener_parse(s);
    free(s);
    assert_non_null(o);
    return o;
}

static const char *text_of(struct jk_arena *a, struct json_object *o)
{
    size_t n;
    const char *t = jk_json_text(o, a, &n);
    assert_non_null(t);
    return t;
}

static const char *view(struct jk_arena *a, const char *text, unsigned show)
{
    const char *out;
    size_t n;
    assert_int_equal(jk_protect_view(a, text, strlen(text), show, &out, &n), JK_OK);
    assert_int_equal(strlen(out), n);
    return out;
}

/* The string at a json-c path such as "/identifier/0/value" of the JSON text. */
static const char *at(struct jk_arena *a, const char *text, const char *ptr)
{
    struct json_object *o = json_tokener_parse(text), *v = NULL;
    assert_non_null(o);
    assert_int_equal(json_pointer_get(o, ptr, &v), 0);
    assert_true(json_object_is_type(v, json_type_string));
    const char *s = jk_arena_strdup(a, json_object_get_string(v));
    json_object_put(o);
    return s;
}

static const char patient_text[] =
    "{'resourceType':'Patient','id':'p1',"
    "'identifier':[{'type':{'coding':[{'system':'" V2_0203 "','code':'NI'}]},"
    "'system':'" CITIZEN "','value':'" ID_NUMBER "'},"
    "{'system':'urn:jiankang:mrn:hosp-fz-1','value':'MRN001000'},"
    "{'type':{'coding':[{'system':'" V2_0203 "','code':'NI'}]},'system':'urn:other',"
    "'value':'" ID_NUMBER2 "'},"
    "{'system':'" PASSPORT "','value':'E12345678'}],"
    "'telecom':[{'system':'phone','value':'" PHONE "'},{'system':'email','value':'a@b.cn'},"
    "{'system':'sms','value':'87654321'}],"
    "'contact':[{'telecom':[{'system':'phone','value':'13900001111'}]}],"
    "'contained':[{'resourceType':'Organization','id':'o1','name':'卫生院',"
    "'telecom':[{'system':'phone','value':'0591-22223333'}]}],"
    "'managingOrganization':{'reference':'#o1'},"
    "'name':[{'text':'王五'}]}";

/* Seals the patient above; returns its stored text. */
static const char *sealed_patient(struct jk_arena *a)
{
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *res = parse(patient_text);
    assert_int_equal(jk_protect_seal(res, &d), JK_OK);
    const char *t = text_of(a, res);
    json_object_put(res);
    return t;
}

/* ---- tests ---- */

/* Runs first: before jk_protect_init nothing may be stored in clear by mistake. */
static void test_seal_refused_before_init(void **state)
{
    (void)state;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *res = parse(patient_text);
    assert_int_equal(jk_protect_seal(res, &d), JK_EINTERNAL);
    json_object_put(res);
    jk_arena_free(a);
}

static void test_gb11643_check_digit(void **state)
{
    (void)state;
    assert_int_equal(gb11643_check(ID_NUMBER), ID_NUMBER[17]);
    assert_int_equal(gb11643_check(ID_NUMBER2), ID_NUMBER2[17]);
}

static void test_what_is_sealed(void **state)
{
    (void)state;
    init_with(keys);
    struct jk_arena *a = jk_arena_new(0);
    const char *t = sealed_patient(a);
    /* Identity numbers (by system, by type code) and a person's phones: not in the text. */
    static const char *const hidden[] = {ID_NUMBER, ID_NUMBER2, "E12345678",
                                         PHONE,     "87654321", "13900001111"};
    for (size_t i = 0; i < sizeof hidden / sizeof hidden[0]; i++)
        assert_null(strstr(t, hidden[i]));
    assert_true(!strncmp(at(a, t, "/identifier/0/value"), "jkenc:1:id:", 11));
    assert_true(!strncmp(at(a, t, "/identifier/2/value"), "jkenc:1:id:", 11));
    assert_true(!strncmp(at(a, t, "/telecom/0/value"), "jkenc:1:ph:", 11));
    assert_true(!strncmp(at(a, t, "/contact/0/telecom/0/value"), "jkenc:1:ph:", 11));
    /* Not identity numbers, not phones, or an institution's public phone: as sent. */
    assert_string_equal(at(a, t, "/identifier/1/value"), "MRN001000");
    assert_string_equal(at(a, t, "/telecom/1/value"), "a@b.cn");
    assert_string_equal(at(a, t, "/contained/0/telecom/0/value"), "0591-22223333");
    assert_string_equal(at(a, t, "/name/0/text"), "王五");
    /* The marker: jkenc:1:id:<64 hex>:<base64url>, its index code bi:<the same hex>. */
    const char *m = at(a, t, "/identifier/0/value");
    char code[JK_PROTECT_CODE_LEN + 1];
    assert_true(strlen(m) > 11 + 64 + 1);
    assert_int_equal(m[11 + 64], ':');
    assert_int_equal(jk_protect_index_code(m, strlen(m), code), 1);
    assert_int_equal(strncmp(code, "bi:", 3), 0);
    assert_int_equal(memcmp(code + 3, m + 11, 64), 0);
    for (const char *p = m + 11 + 65; *p; p++)
        assert_non_null(
            strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", *p));
    assert_int_equal(jk_protect_index_code(ID_NUMBER, strlen(ID_NUMBER), code), 0);
    /* Sealing twice gives other bytes (a fresh IV) but the same blind index. */
    const char *t2 = sealed_patient(a);
    const char *m2 = at(a, t2, "/identifier/0/value");
    assert_string_not_equal(m, m2);
    assert_int_equal(memcmp(m, m2, 11 + 64), 0);
    jk_arena_free(a);
}

static void test_view_per_role(void **state)
{
    (void)state;
    init_with(keys);
    struct jk_arena *a = jk_arena_new(0);
    const char *t = sealed_patient(a);
    /* A role that needs the numbers sees them exactly as sent. */
    const char *all = view(a, t, JK_SHOW_IDENTITY | JK_SHOW_PHONE);
    struct json_object *want = parse(patient_text), *got = json_tokener_parse(all);
    assert_non_null(got);
    assert_true(json_object_equal(want, got));
    json_object_put(want);
    json_object_put(got);
    /* Others see them masked. */
    const char *none = view(a, t, 0);
    assert_string_equal(at(a, none, "/identifier/0/value"), "350102********1234");
    assert_string_equal(at(a, none, "/identifier/2/value"), "110105********002X");
    assert_string_equal(at(a, none, "/identifier/3/value"), "E1*****78");
    assert_string_equal(at(a, none, "/telecom/0/value"), "138****5678");
    assert_string_equal(at(a, none, "/telecom/2/value"), "87****21");
    assert_string_equal(at(a, none, "/contact/0/telecom/0/value"), "139****1111");
    assert_string_equal(at(a, none, "/identifier/1/value"), "MRN001000");
    assert_null(strstr(none, "jkenc:"));
    /* Each bit shows its own kind only. */
    const char *ids = view(a, t, JK_SHOW_IDENTITY);
    assert_string_equal(at(a, ids, "/identifier/0/value"), ID_NUMBER);
    assert_string_equal(at(a, ids, "/telecom/0/value"), "138****5678");
    const char *phones = view(a, t, JK_SHOW_PHONE);
    assert_string_equal(at(a, phones, "/identifier/0/value"), "350102********1234");
    assert_string_equal(at(a, phones, "/telecom/0/value"), PHONE);
    jk_arena_free(a);
}

static void test_mask_short_and_unusual_values(void **state)
{
    (void)state;
    init_with(keys);
    static const struct {
        const char *system, *value, *masked;
    } cases[] = {
        {CITIZEN, "350102500101123", "350102*****1123"}, /* a 15-digit legacy number */
        {CITIZEN, "1234567890", "12******90"},
        {CITIZEN, "abc", "***"},
        {CITIZEN, "12\\\"34\\\\56789", "12*******89"},        /* quotes and backslashes */
        {PASSPORT, "护照１２３４５６７８", "护照******７８"}, /* characters, not bytes */
    };
    struct jk_arena *a = jk_arena_new(0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"resourceType\":\"Patient\",\"identifier\":[{\"system\":\"%s\",\"value\":"
                 "\"%s\"}]}",
                 cases[i].system, cases[i].value);
        struct json_object *res = json_tokener_parse(text);
        assert_non_null(res);
        const char *clear = jk_arena_strdup(
            a,
            json_object_get_string(json_object_object_get(
                json_object_array_get_idx(json_object_object_get(res, "identifier"), 0), "value")));
        struct jk_diag d;
        jk_diag_init(&d, a);
        assert_int_equal(jk_protect_seal(res, &d), JK_OK);
        const char *t = text_of(a, res);
        json_object_put(res);
        assert_string_equal(at(a, view(a, t, 0), "/identifier/0/value"), cases[i].masked);
        assert_string_equal(at(a, view(a, t, JK_SHOW_IDENTITY), "/identifier/0/value"), clear);
    }
    jk_arena_free(a);
}

static void test_view_without_markers_copies_nothing(void **state)
{
    (void)state;
    init_with(keys);
    struct jk_arena *a = jk_arena_new(0);
    static const char body[] =
        "{\"resourceType\":\"Observation\",\"valueQuantity\":{\"value\":1.50}"
        ",\"note\":[{\"text\":\"say \\\"jkenc:1:id:x\\\"\"}]}";
    const char *out;
    size_t n;
    assert_int_equal(jk_protect_view(a, body, 20, 0, &out, &n), JK_OK);
    assert_ptr_equal(out, body);
    /* "jkenc: inside another string (escaped quote) is text, not a marker: kept. */
    assert_int_equal(jk_protect_view(a, body, sizeof body - 1, 0, &out, &n), JK_OK);
    assert_string_equal(out, body);
    jk_arena_free(a);
}

static void test_tampered_markers_show_placeholder(void **state)
{
    (void)state;
    init_with(keys);
    struct jk_arena *a = jk_arena_new(0);
    const char *t = sealed_patient(a);
    const char *id = at(a, t, "/identifier/0/value"), *ph = at(a, t, "/telecom/0/value");
    /* One byte of the sealed value changed. */
    char *bad = jk_arena_strdup(a, t);
    char *p = strstr(bad, id) + strlen(id) - 5;
    *p = *p == 'A' ? 'B' : 'A';
    const char *v = view(a, bad, JK_SHOW_IDENTITY | JK_SHOW_PHONE);
    assert_string_equal(at(a, v, "/identifier/0/value"), "****");
    assert_string_equal(at(a, v, "/telecom/0/value"), PHONE); /* the others still open */
    /* The phone's sealed value moved under the identity number's blind index and kind. */
    char *moved = jk_arena_printf(a, "{\"value\":\"%.75s%s\"}", id, ph + 75);
    v = view(a, moved, JK_SHOW_IDENTITY | JK_SHOW_PHONE);
    assert_string_equal(at(a, v, "/value"), "****");
    /* Sealed under other keys. */
    init_with(other_keys);
    v = view(a, t, JK_SHOW_IDENTITY | JK_SHOW_PHONE);
    assert_string_equal(at(a, v, "/identifier/0/value"), "****");
    assert_null(strstr(v, ID_NUMBER));
    /* Unsealing for a write refuses it (500: the database was changed). */
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *res = json_tokener_parse(t);
    assert_int_equal(jk_protect_unseal(res, &d), JK_EINTERNAL);
    json_object_put(res);
    init_with(keys);
    jk_arena_free(a);
}

static void test_planted_and_masked_values_refused(void **state)
{
    (void)state;
    init_with(keys);
    static const struct {
        const char *text, *expr;
    } cases[] = {
        /* a marker in a protected place, even a well-formed one copied from elsewhere */
        {"{'resourceType':'Patient','identifier':[{'system':'" CITIZEN
         "','value':'jkenc:1:id:00'}]}",
         "Patient.identifier[0].value"},
        /* anywhere else */
        {"{'resourceType':'Patient','name':[{'given':['a','jkenc:x']}]}",
         "Patient.name[0].given[1]"},
        {"{'resourceType':'Observation','status':'final','code':{'text':'x'},"
         "'contained':[{'resourceType':'Patient','id':'p','telecom':[{'system':'phone',"
         "'value':'jkenc:'}]}]}",
         "Observation.contained[0].telecom[0].value"},
        /* a masked number read back and sent again */
        {"{'resourceType':'Patient','identifier':[{'system':'" CITIZEN
         "','value':'350102********1234'}]}",
         "Patient.identifier[0].value"},
        {"{'resourceType':'Patient','telecom':[{'system':'phone','value':'138****5678'}]}",
         "Patient.telecom[0].value"},
        /* nothing to index */
        {"{'resourceType':'Patient','identifier':[{'system':'" CITIZEN "','value':' - '}]}",
         "Patient.identifier[0].value"},
    };
    struct jk_arena *a = jk_arena_new(0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct jk_diag d;
        jk_diag_init(&d, a);
        struct json_object *res = parse(cases[i].text);
        assert_int_equal(jk_protect_seal(res, &d), JK_EINVAL);
        assert_non_null(d.head);
        assert_string_equal(d.head->expr, cases[i].expr);
        assert_null(strstr(d.head->msg, "350102")); /* messages never repeat the value */
        json_object_put(res);
    }
    /* A marker the platform made, sent back by a client, is refused like any other. */
    const char *t = sealed_patient(a);
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *res = json_tokener_parse(t);
    assert_int_equal(jk_protect_seal(res, &d), JK_EINVAL);
    json_object_put(res);
    jk_arena_free(a);
}

static void test_unseal_restores_clear_values(void **state)
{
    (void)state;
    init_with(keys);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *res = json_tokener_parse(sealed_patient(a));
    assert_int_equal(jk_protect_unseal(res, &d), JK_OK);
    struct json_object *want = parse(patient_text);
    assert_true(json_object_equal(want, res));
    /* ... and sealing again works (PATCH seals what it unsealed). */
    assert_int_equal(jk_protect_seal(res, &d), JK_OK);
    assert_null(strstr(text_of(a, res), ID_NUMBER));
    json_object_put(want);
    json_object_put(res);
    jk_arena_free(a);
}

static int has_code(const char *const *codes, size_t n, const char *code)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(codes[i], code)) return 1;
    return 0;
}

static void test_index_rows_hold_blind_indexes(void **state)
{
    (void)state;
    init_with(keys);
    struct jk_arena *a = jk_arena_new(0);
    struct json_object *res = json_tokener_parse(sealed_patient(a));
    struct jk_idx_row *rows;
    size_t n_rows;
    assert_int_equal(jk_fhir_extract(a, res, &rows, &n_rows), JK_OK);
    const char **codes;
    size_t n;
    assert_int_equal(jk_protect_search_codes(a, CITIZEN, "350102 19900307 1234", &codes, &n),
                     JK_OK);
    assert_int_equal(n, 1);
    const char *id_code = codes[0];
    assert_int_equal(jk_protect_search_codes(a, NULL, "13812345678", &codes, &n), JK_OK);
    size_t n_phone = n;
    const char **phone_codes = codes;
    int found_id = 0, found_of_type = 0, found_phone = 0;
    for (size_t i = 0; i < n_rows; i++) {
        const struct jk_idx_row *r = &rows[i];
        const char *cols[] = {r->s1, r->s2, r->s3, r->s4, r->s5};
        for (size_t c = 0; c < 5; c++) {
            assert_null(strstr(cols[c], "jkenc"));   /* neither ciphertext ... */
            assert_null(strstr(cols[c], ID_NUMBER)); /* ... nor clear text */
            assert_null(strstr(cols[c], ID_NUMBER2));
            assert_null(strstr(cols[c], PHONE));
        }
        if (r->kind != JK_IDX_TOKEN) continue;
        if (!strcmp(r->param, "identifier") && !strcmp(r->s1, CITIZEN))
            found_id += !strcmp(r->s2, id_code);
        if (!strcmp(r->param, "identifier:of-type") && !strcmp(r->s2, "NI"))
            found_of_type += !strncmp(r->s3, "bi:", 3);
        if (!strcmp(r->param, "phone")) found_phone += has_code(phone_codes, n_phone, r->s2);
    }
    assert_int_equal(found_id, 1);
    assert_int_equal(found_of_type, 2);
    assert_int_equal(found_phone, 1);
    /* A bare value is looked for in every identity system, without a system, and as a phone;
     * a value with no digit or letter cannot be indexed. */
    assert_int_equal(jk_protect_search_codes(a, NULL, ID_NUMBER, &codes, &n), JK_OK);
    assert_true(n >= 3);
    assert_true(has_code(codes, n, id_code));
    assert_int_equal(jk_protect_search_codes(a, CITIZEN, "--", &codes, &n), JK_OK);
    assert_int_equal(n, 0);
    json_object_put(res);
    jk_arena_free(a);
}

/* ---- the rules file ---- */

static char rules_dir[64];

static const char *write_rules(const char *name, const char *text)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", rules_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* The shipped rules with one change: old replaced by new. */
static const char *rules_with(const char *old, const char *new_text)
{
    FILE *f = fopen(RULES, "r");
    assert_non_null(f);
    static char text[65536], out[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *p = strstr(text, old);
    assert_non_null(p);
    snprintf(out, sizeof out, "%.*s%s%s", (int)(p - text), text, new_text, p + strlen(old));
    return write_rules("rules.json", out);
}

static void test_rules_file_checked(void **state)
{
    (void)state;
    snprintf(rules_dir, sizeof rules_dir, "/tmp/jk-test-protect.XXXXXX");
    assert_non_null(mkdtemp(rules_dir));
    static const struct {
        const char *old, *new_text, *want;
    } cases[] = {
        {"\"mask.phone\"", "\"mask.fone\"", ": /rules/mask.fone: unknown rule 'mask.fone'"},
        {"\"identity.type.SS\"", "\"identity.type.S S\"", ": /rules/identity.type.S S: unknown"},
        {"\"value\": \"urn:oid:2.16.156.10011.1.3\"", "\"value\": \"2.16.156.10011.1.3\"",
         ": /rules/identity.system.citizen-id/value: must be an absolute URI"},
        {"\"value\": \"https://jiankang.example/fhir/sid/passport\"",
         "\"value\": \"urn:oid:2.16.156.10011.1.3\"",
         ": /rules/identity.system.passport/value: 'urn:oid:2.16.156.10011.1.3' is listed by "
         "another rule"},
        {"\"value\": [\"phone\", \"sms\"]", "\"value\": [\"phone\", \"telephone\"]",
         ": /rules/phone.systems/value/1: 'telephone' is not one of the ContactPoint.system"},
        {"\"Organization\", \"Location\"", "\"Organisation\", \"Location\"",
         ": /rules/phone.public_resource_types/value/0: 'Organisation' is not one of the FHIR"},
        {"{\"keep_first\": 6,", "{\"keep_first\": 60,",
         ": /rules/mask.identity/value/keep_first: must be a whole number from 0 to 32"},
        {"\"keep_last\": 4, \"min_hidden\": 4}", "\"keep_last\": 4, \"min_hidden\": 4, \"x\": 1}",
         ": /rules/mask.identity/value: unknown member 'x'"},
        {"\"code\": \"NI\"}", "\"code\": \"NI\", \"display\": \"x\"}",
         ": /rules/identity.type.NI/value: unknown member 'display'"},
        {"\"effective\": \"2025-01-01\"\n    },\n    \"identity.system.hmt",
         "\"effective\": \"2025-13-01\"\n    },\n    \"identity.system.hmt",
         ": /rules/identity.system.citizen-id/effective: must be the date"},
        {"\"ruleSet\": \"identity\"", "\"ruleSet\": \"security\"", ": /ruleSet: must be"},
        {"\"mask.phone\": {", "\"mask.phone.x\": {", ": /rules/mask.phone.x: unknown rule"},
    };
    char err[JK_PROTECT_ERR];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = rules_with(cases[i].old, cases[i].new_text);
        err[0] = '\0';
        assert_int_equal(jk_protect_init(keys, path, err, sizeof err), JK_EINVAL);
        if (!strstr(err, cases[i].want) || strncmp(err, path, strlen(path)))
            fail_msg("case %zu: got \"%s\", want \"%s%s...\"", i, err, path, cases[i].want);
    }
    /* A rule without source, a fixed rule missing, no JSON at all, no file. */
    const char *path = rules_with("\"source\": \"FHIR R4 ContactPoint.system", "\"sauce\": \"");
    assert_int_equal(jk_protect_init(keys, path, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "/rules/phone.systems: unknown member 'sauce'"));
    path = write_rules("empty.json", "{\"ruleSet\": \"identity\", \"rules\": {}}");
    assert_int_equal(jk_protect_init(keys, path, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "/rules/phone.systems: the rule is missing"));
    path = write_rules("bad.json", "{\"ruleSet\": ");
    assert_int_equal(jk_protect_init(keys, path, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "line 1: not valid JSON"));
    assert_int_equal(jk_protect_init(keys, "/nonexistent/identity.json", err, sizeof err),
                     JK_ENOTFOUND);
    /* A refused file leaves the rules that were in force. */
    init_with(keys);
    path = rules_with("\"mask.phone\"", "\"mask.fone\"");
    assert_int_equal(jk_protect_init(other_keys, path, err, sizeof err), JK_EINVAL);
    struct jk_arena *a = jk_arena_new(0);
    assert_string_equal(at(a, view(a, sealed_patient(a), 0), "/telecom/0/value"), "138****5678");
    jk_arena_free(a);
    /* Another mask as data. */
    path = rules_with("{\"keep_first\": 3, \"keep_last\": 4,",
                      "{\"keep_first\": 0, \"keep_last\": 2,");
    init_with(keys);
    char e2[JK_PROTECT_ERR];
    assert_int_equal(jk_protect_init(keys, path, e2, sizeof e2), JK_OK);
    a = jk_arena_new(0);
    assert_string_equal(at(a, view(a, sealed_patient(a), 0), "/telecom/0/value"), "*********78");
    jk_arena_free(a);
    init_with(keys);
    static const char *const names[] = {"rules.json", "empty.json", "bad.json"};
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof p, "%s/%s", rules_dir, names[i]);
        unlink(p);
    }
    rmdir(rules_dir);
}

/* ---- through rest.c and the store ---- */

struct fixture {
    char dir[64];
    jk_store *st;
};

static jk_rc write_one(struct fixture *f, struct jk_arena *a, const char *text,
                       const struct jk_fhir_criteria *cond, struct jk_fhir_write *w)
{
    struct jk_diag *d = jk_arena_zalloc(a, sizeof *d);
    jk_diag_init(d, a);
    memset(w, 0, sizeof *w);
    w->kind = JK_FHIR_CREATE;
    w->type = "Patient";
    w->res = parse(text);
    w->cond = cond;
    w->arena = a;
    w->diag = d;
    w->now_ms = 1767225600000LL;
    jk_rc rc = jk_fhir_write_prepare(w);
    if (!rc) rc = jk_store_tx(f->st, jk_fhir_write_tx, w);
    json_object_put(w->res);
    w->res = NULL;
    return rc;
}

static size_t count_matches(struct fixture *f, struct jk_arena *a, const char *key,
                            const char *value)
{
    struct jk_diag d;
    jk_diag_init(&d, a);
    const char **ids;
    size_t n = 0;
    assert_int_equal(
        jk_fhir_search_match(jk_store_conn(f->st), a, &d, "Patient", &key, &value, 1, 10, &ids, &n),
        JK_OK);
    return n;
}

/* Whether the file holds s (bytes), or does not exist. */
static int file_has(const char *path, const char *s)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return 0;
    size_t cap = 1 << 20, n = 0, got;
    char *buf = malloc(cap);
    assert_non_null(buf);
    while ((got = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    int has = memmem(buf, n, s, strlen(s)) != NULL;
    free(buf);
    return has;
}

static void test_stored_sealed_and_found(void **state)
{
    (void)state;
    init_with(keys);
    struct fixture f = {0};
    snprintf(f.dir, sizeof f.dir, "/tmp/jk-test-protect-db.XXXXXX");
    assert_non_null(mkdtemp(f.dir));
    char url[128], db[128], wal[128];
    snprintf(url, sizeof url, "sqlite:%s/t.db", f.dir);
    snprintf(db, sizeof db, "%s/t.db", f.dir);
    snprintf(wal, sizeof wal, "%s/t.db-wal", f.dir);
    char err[256];
    assert_int_equal(jk_store_open(url, &f.st, err, sizeof err), JK_OK);
    assert_int_equal(jk_store_migrate(f.st, NULL), JK_OK);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_fhir_write w;
    assert_int_equal(write_one(&f, a, patient_text, NULL, &w), JK_OK);
    assert_int_equal(w.status, 201);
    const char *id = w.out.id;
    assert_null(strstr(w.out.body, ID_NUMBER));
    /* Found by system|value, by the value alone (typed another way), as a phone. */
    assert_int_equal(count_matches(&f, a, "identifier", CITIZEN "|" ID_NUMBER), 1);
    assert_int_equal(count_matches(&f, a, "identifier", "350102-19900307-1234"), 1);
    assert_int_equal(count_matches(&f, a, "identifier", "urn:other|110105194912310021x"), 0);
    assert_int_equal(count_matches(&f, a, "identifier", "urn:other|11010519491231002x"), 1);
    assert_int_equal(count_matches(&f, a, "identifier:of-type", V2_0203 "|NI|" ID_NUMBER), 1);
    assert_int_equal(count_matches(&f, a, "identifier:of-type", V2_0203 "|PPN|" ID_NUMBER), 0);
    /* An identity number by its type alone, in a system the rules do not list, too. */
    assert_int_equal(count_matches(&f, a, "identifier:of-type", V2_0203 "|NI|" ID_NUMBER2), 1);
    assert_int_equal(count_matches(&f, a, "identifier", ID_NUMBER2), 1);
    assert_int_equal(count_matches(&f, a, "identifier", "urn:another|" ID_NUMBER2), 0);
    assert_int_equal(count_matches(&f, a, "identifier", "MRN001000"), 1);
    assert_int_equal(count_matches(&f, a, "telecom", PHONE), 1);
    assert_int_equal(count_matches(&f, a, "phone", PHONE), 1);
    assert_int_equal(count_matches(&f, a, "identifier:not", CITIZEN "|" ID_NUMBER), 0);
    /* Not found by another number, by the number in another system, or as a phone. */
    assert_int_equal(count_matches(&f, a, "identifier", CITIZEN "|350102199003071242"), 0);
    assert_int_equal(count_matches(&f, a, "identifier", PASSPORT "|" ID_NUMBER), 0);
    assert_int_equal(count_matches(&f, a, "phone", ID_NUMBER), 0);
    /* Conditional create by identifier finds the stored one. */
    static const char *const k[] = {"identifier"};
    static const char *const v[] = {CITIZEN "|" ID_NUMBER};
    struct jk_fhir_criteria cond = {k, v, 1};
    struct jk_fhir_write w2;
    assert_int_equal(write_one(&f, a, patient_text, &cond, &w2), JK_OK);
    assert_int_equal(w2.status, 200);
    assert_string_equal(w2.out.id, id);
    /* The database files never hold the numbers; they hold the Patient, MRN and all. */
    static const char *const secret[] = {ID_NUMBER, ID_NUMBER2, PHONE, "E12345678", "87654321"};
    for (size_t i = 0; i < sizeof secret / sizeof secret[0]; i++) {
        assert_false(file_has(db, secret[i]));
        assert_false(file_has(wal, secret[i]));
    }
    assert_true(file_has(db, "MRN001000") || file_has(wal, "MRN001000"));
    jk_store_close(f.st);
    assert_false(file_has(db, ID_NUMBER)); /* after the checkpoint at close, too */
    assert_false(file_has(wal, ID_NUMBER));
    assert_true(file_has(db, "MRN001000") || file_has(wal, "MRN001000"));
    jk_arena_free(a);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < 4; i++) {
        char p[160];
        snprintf(p, sizeof p, "%s/t.db%s", f.dir, suffixes[i]);
        unlink(p);
    }
    rmdir(f.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seal_refused_before_init),
        cmocka_unit_test(test_gb11643_check_digit),
        cmocka_unit_test(test_what_is_sealed),
        cmocka_unit_test(test_view_per_role),
        cmocka_unit_test(test_mask_short_and_unusual_values),
        cmocka_unit_test(test_view_without_markers_copies_nothing),
        cmocka_unit_test(test_tampered_markers_show_placeholder),
        cmocka_unit_test(test_planted_and_masked_values_refused),
        cmocka_unit_test(test_unseal_restores_clear_values),
        cmocka_unit_test(test_index_rows_hold_blind_indexes),
        cmocka_unit_test(test_rules_file_checked),
        cmocka_unit_test(test_stored_sealed_and_found),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
