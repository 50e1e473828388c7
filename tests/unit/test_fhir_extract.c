/* test_fhir_extract.c - search parameters and index rows: what a client searching for the
 * resources it wrote can rely on being indexed, and how. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <json-c/json.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/time.h"
#include "fhir/extract.h"
#include "fhir/searchparam.h"
#include "fhir/searchparam_int.h"

#define EXAMPLES_DIR "node_modules/hl7.fhir.r4.examples"

static const char *const kind_names[] = {"STRING",   "TOKEN",     "DATE", "NUMBER",
                                         "QUANTITY", "REFERENCE", "URI",  "COMPOSITE"};

/* An instant as ISO text, also before 1970 (floor division, unlike jk_time_iso). */
static void iso(int64_t ms, char *out, size_t cap)
{
    int64_t sec = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    int frac = (int)(ms - sec * 1000);
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

/* One row as a line: "param KIND fields", the form the expectations below are written in. */
static void row_text(const struct jk_idx_row *r, char *out, size_t cap)
{
    char a[40], b[40];
    int n = snprintf(out, cap, "%s %s ", r->param, kind_names[r->kind]);
    char *p = out + n;
    size_t left = cap - (size_t)n;
    switch (r->kind) {
    case JK_IDX_STRING: snprintf(p, left, "%s|%s", r->s1, r->s2); break;
    case JK_IDX_TOKEN:
    case JK_IDX_REFERENCE: snprintf(p, left, "%s|%s|%s", r->s1, r->s2, r->s3); break;
    case JK_IDX_DATE:
        iso(r->lo_ms, a, sizeof a);
        iso(r->hi_ms, b, sizeof b);
        snprintf(p, left, "%s..%s", a, b);
        break;
    case JK_IDX_NUMBER: snprintf(p, left, "%.12g..%.12g", r->lo, r->hi); break;
    case JK_IDX_QUANTITY:
        snprintf(p, left, "%s|%s %.12g..%.12g", r->s1, r->s2, r->lo, r->hi);
        break;
    case JK_IDX_URI: snprintf(p, left, "%s", r->s1); break;
    case JK_IDX_COMPOSITE:
        snprintf(p, left, "%s|%s %s|%s %.12g..%.12g %s", r->s1, r->s2, r->s3, r->s4, r->lo, r->hi,
                 r->s5);
        break;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The rows of text as sorted lines. */
struct lines {
    char **v;
    size_t n;
    struct jk_arena *arena;
};

static struct lines extract_text(const char *text)
{
    struct lines l = {NULL, 0, jk_arena_new(0)};
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    assert_non_null(l.arena);
    struct jk_idx_row *rows;
    size_t n;
    assert_int_equal(jk_fhir_extract(l.arena, o, &rows, &n), JK_OK);
    l.v = calloc(n + 1, sizeof *l.v);
    assert_non_null(l.v);
    for (size_t i = 0; i < n; i++) {
        char buf[1024];
        row_text(&rows[i], buf, sizeof buf);
        l.v[i] = strdup(buf);
        assert_non_null(l.v[i]);
    }
    l.n = n;
    qsort(l.v, n, sizeof *l.v, cmp_str);
    json_object_put(o);
    return l;
}

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    jk_arena_free(l->arena);
}

/* The rows of text are exactly want (in any order); differences are printed. */
static void expect_rows(const char *text, const char *const *want, size_t n_want)
{
    struct lines got = extract_text(text);
    const char **w = malloc((n_want + 1) * sizeof *w);
    assert_non_null(w);
    if (n_want) memcpy(w, want, n_want * sizeof *w);
    qsort(w, n_want, sizeof *w, cmp_str);
    size_t i = 0, j = 0;
    int same = 1;
    while (i < got.n || j < n_want) {
        int c = i == got.n ? 1 : j == n_want ? -1 : strcmp(got.v[i], w[j]);
        if (c == 0) {
            i++;
            j++;
        } else if (c < 0) {
            print_message("  unexpected row: %s\n", got.v[i++]);
            same = 0;
        } else {
            print_message("  missing row:    %s\n", w[j++]);
            same = 0;
        }
    }
    free(w);
    lines_free(&got);
    assert_true(same);
}

/* The rows of text include every line of want. */
static void expect_some_rows(const char *text, const char *const *want, size_t n_want)
{
    struct lines got = extract_text(text);
    int ok = 1;
    for (size_t j = 0; j < n_want; j++) {
        if (!bsearch(&want[j], got.v, got.n, sizeof *got.v, cmp_str)) {
            print_message("  missing row: %s\n", want[j]);
            ok = 0;
        }
    }
    if (!ok)
        for (size_t i = 0; i < got.n; i++)
            print_message("  got: %s\n", got.v[i]);
    lines_free(&got);
    assert_true(ok);
}

/* Whether text has no row of param. */
static void expect_no_rows_of(const char *text, const char *param)
{
    struct lines got = extract_text(text);
    size_t len = strlen(param);
    for (size_t i = 0; i < got.n; i++) {
        if (strncmp(got.v[i], param, len) == 0 && got.v[i][len] == ' ')
            print_message("  unexpected row: %s\n", got.v[i]);
        assert_false(strncmp(got.v[i], param, len) == 0 && got.v[i][len] == ' ');
    }
    lines_free(&got);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- resources ---------------------------------------------------------------------------- */

static const char chinese_patient[] =
    "{\"resourceType\":\"Patient\",\"id\":\"p-001\","
    "\"meta\":{\"versionId\":\"1\",\"lastUpdated\":\"2024-03-01T08:30:00+08:00\","
    "\"profile\":[\"http://jiankang.example/fhir/StructureDefinition/cn-patient\"],"
    "\"tag\":[{\"system\":\"http://jiankang.example/"
    "tags\",\"code\":\"demo\",\"display\":\"演示\"}]},"
    "\"identifier\":[{\"use\":\"official\",\"type\":{\"coding\":[{\"system\":"
    "\"http://terminology.hl7.org/CodeSystem/"
    "v2-0203\",\"code\":\"NNCHN\"}],\"text\":\"居民身份证\"},"
    "\"system\":\"urn:oid:2.16.156.10011.1.1\",\"value\":\"110101199003071234\"},"
    "{\"type\":{\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/v2-0203\","
    "\"code\":\"MR\"}]},\"system\":\"urn:oid:1.2.156.112604.1.2.1\",\"value\":\"MR-0001\"}],"
    "\"active\":true,"
    "\"name\":[{\"use\":\"official\",\"text\":\"王小明\",\"family\":\"王\",\"given\":[\"小明\"]},"
    "{\"use\":\"usual\",\"text\":\"Wang Xiaoming\",\"family\":\"Wang\",\"given\":[\"Xiaoming\"]}],"
    "\"telecom\":[{\"system\":\"phone\",\"value\":\"13800138000\",\"use\":\"mobile\"},"
    "{\"system\":\"email\",\"value\":\"wxm@example.cn\"}],"
    "\"gender\":\"male\",\"birthDate\":\"1990-03-07\","
    "\"address\":[{\"use\":\"home\",\"text\":\"北京市东城区王府井大街1号\",\"line\":["
    "\"王府井大街1号\"],"
    "\"city\":\"北京市\",\"district\":\"东城区\",\"state\":\"北京市\",\"postalCode\":\"100006\","
    "\"country\":\"CN\"}],"
    "\"generalPractitioner\":[{\"reference\":\"Practitioner/dr-li\"}],"
    "\"managingOrganization\":{\"reference\":\"Organization/org-1\",\"display\":\"北京协和医院\"}}";

static void test_chinese_patient(void **state)
{
    (void)state;
    static const char *const want[] = {
        "_profile URI http://jiankang.example/fhir/StructureDefinition/cn-patient",
        "_tag TOKEN http://jiankang.example/tags|demo|演示",
        "active TOKEN |true|",
        "address STRING 北京市东城区王府井大街1号|北京市东城区王府井大街1号",
        "address STRING 王府井大街1号|王府井大街1号",
        "address STRING 北京市|北京市", /* city and state: the same row once */
        "address STRING 东城区|东城区",
        "address STRING 100006|100006",
        "address STRING cn|CN",
        "address-city STRING 北京市|北京市",
        "address-country STRING cn|CN",
        "address-postalcode STRING 100006|100006",
        "address-state STRING 北京市|北京市",
        "address-use TOKEN http://hl7.org/fhir/address-use|home|",
        "birthdate DATE 1990-03-07T00:00:00.000Z..1990-03-07T23:59:59.999Z",
        "deceased TOKEN |false|",
        "email TOKEN |wxm@example.cn|",
        "family STRING 王|王",
        "family STRING wang|Wang",
        "gender TOKEN http://hl7.org/fhir/administrative-gender|male|",
        "general-practitioner REFERENCE Practitioner|dr-li|Practitioner/dr-li",
        "given STRING 小明|小明",
        "given STRING xiaoming|Xiaoming",
        "identifier TOKEN urn:oid:2.16.156.10011.1.1|110101199003071234|居民身份证",
        "identifier TOKEN urn:oid:1.2.156.112604.1.2.1|MR-0001|",
        "identifier:of-type TOKEN http://terminology.hl7.org/CodeSystem/v2-0203|NNCHN|"
        "110101199003071234",
        "identifier:of-type TOKEN http://terminology.hl7.org/CodeSystem/v2-0203|MR|MR-0001",
        "name STRING 王小明|王小明",
        "name STRING 王|王",
        "name STRING 小明|小明",
        "name STRING wang xiaoming|Wang Xiaoming",
        "name STRING wang|Wang",
        "name STRING xiaoming|Xiaoming",
        "organization REFERENCE Organization|org-1|Organization/org-1",
        "phone TOKEN |13800138000|",
        "phonetic STRING 王小明|王小明",
        "phonetic STRING 王|王",
        "phonetic STRING 小明|小明",
        "phonetic STRING wang xiaoming|Wang Xiaoming",
        "phonetic STRING wang|Wang",
        "phonetic STRING xiaoming|Xiaoming",
        "telecom TOKEN |13800138000|",
        "telecom TOKEN |wxm@example.cn|",
    };
    expect_rows(chinese_patient, want, N(want));
}

static const char glucose[] =
    "{\"resourceType\":\"Observation\",\"status\":\"final\","
    "\"category\":[{\"coding\":[{\"system\":"
    "\"http://terminology.hl7.org/CodeSystem/observation-category\",\"code\":\"laboratory\"}]}],"
    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"15074-8\","
    "\"display\":\"Glucose [Moles/volume] in Blood\"}],\"text\":\"血糖\"},"
    "\"subject\":{\"reference\":\"Patient/p-001\"},\"encounter\":{\"reference\":\"Encounter/e-1\"},"
    "\"effectiveDateTime\":\"2024-03-01T08:30:00+08:00\","
    "\"performer\":[{\"reference\":\"Practitioner/dr-li\"}],"
    "\"valueQuantity\":{\"value\":1.50,\"unit\":\"mmol/L\",\"system\":\"http://"
    "unitsofmeasure.org\","
    "\"code\":\"mmol/L\"}}";

static void test_observation_with_a_quantity(void **state)
{
    (void)state;
    static const char *const want[] = {
        "category TOKEN http://terminology.hl7.org/CodeSystem/observation-category|laboratory|",
        "code TOKEN http://loinc.org|15074-8|glucose [moles/volume] in blood",
        "code TOKEN ||血糖",
        "combo-code TOKEN http://loinc.org|15074-8|glucose [moles/volume] in blood",
        "combo-code TOKEN ||血糖",
        /* 1.50 keeps its precision: 1.495 .. 1.505 */
        "code-value-quantity COMPOSITE http://loinc.org|15074-8 http://unitsofmeasure.org|mmol/L "
        "1.495..1.505 ",
        "combo-code-value-quantity COMPOSITE http://loinc.org|15074-8 "
        "http://unitsofmeasure.org|mmol/L 1.495..1.505 ",
        "value-quantity QUANTITY http://unitsofmeasure.org|mmol/L 1.495..1.505",
        "combo-value-quantity QUANTITY http://unitsofmeasure.org|mmol/L 1.495..1.505",
        "date DATE 2024-03-01T00:30:00.000Z..2024-03-01T00:30:00.999Z",
        "encounter REFERENCE Encounter|e-1|Encounter/e-1",
        "patient REFERENCE Patient|p-001|Patient/p-001",
        "subject REFERENCE Patient|p-001|Patient/p-001",
        "performer REFERENCE Practitioner|dr-li|Practitioner/dr-li",
        "status TOKEN http://hl7.org/fhir/observation-status|final|",
    };
    expect_rows(glucose, want, N(want));
}

static const char blood_pressure[] =
    "{\"resourceType\":\"Observation\",\"status\":\"final\","
    "\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"85354-9\"}]},"
    "\"subject\":{\"reference\":\"Patient/p-001\"},"
    "\"effectivePeriod\":{\"start\":\"2024-03-01T08:30:00+08:00\"},"
    "\"component\":["
    "{\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"8480-6\","
    "\"display\":\"Systolic blood pressure\"}]},"
    "\"valueQuantity\":{\"value\":120,\"unit\":\"mmHg\",\"system\":\"http://unitsofmeasure.org\","
    "\"code\":\"mm[Hg]\"}},"
    "{\"code\":{\"coding\":[{\"system\":\"http://loinc.org\",\"code\":\"8462-4\"}]},"
    "\"valueQuantity\":{\"value\":80,\"unit\":\"mmHg\"}},"
    "{\"code\":{\"text\":\"体位\"},\"valueCodeableConcept\":{\"coding\":[{\"system\":"
    "\"http://snomed.info/sct\",\"code\":\"33586001\",\"display\":\"Sitting\"}]}}]}";

static void test_observation_with_components(void **state)
{
    (void)state;
    static const char *const want[] = {
        "code TOKEN http://loinc.org|85354-9|",
        "combo-code TOKEN http://loinc.org|85354-9|",
        "combo-code TOKEN http://loinc.org|8480-6|systolic blood pressure",
        "combo-code TOKEN http://loinc.org|8462-4|",
        "combo-code TOKEN ||体位",
        "component-code TOKEN http://loinc.org|8480-6|systolic blood pressure",
        "component-code TOKEN http://loinc.org|8462-4|",
        "component-code TOKEN ||体位",
        /* each component pairs its own code with its own value */
        "component-code-value-quantity COMPOSITE http://loinc.org|8480-6 "
        "http://unitsofmeasure.org|mm[Hg] 119.5..120.5 ",
        "component-code-value-quantity COMPOSITE http://loinc.org|8462-4 |mmHg 79.5..80.5 ",
        "combo-code-value-quantity COMPOSITE http://loinc.org|8480-6 "
        "http://unitsofmeasure.org|mm[Hg] 119.5..120.5 ",
        "combo-code-value-quantity COMPOSITE http://loinc.org|8462-4 |mmHg 79.5..80.5 ",
        "component-value-quantity QUANTITY http://unitsofmeasure.org|mm[Hg] 119.5..120.5",
        "component-value-quantity QUANTITY |mmHg 79.5..80.5", /* no code: the unit */
        "combo-value-quantity QUANTITY http://unitsofmeasure.org|mm[Hg] 119.5..120.5",
        "combo-value-quantity QUANTITY |mmHg 79.5..80.5",
        "component-value-concept TOKEN http://snomed.info/sct|33586001|sitting",
        "combo-value-concept TOKEN http://snomed.info/sct|33586001|sitting",
        /* a component whose code has only text has no code to pair */
        /* an open period runs to the end of time */
        "date DATE 2024-03-01T00:30:00.000Z..9999-12-31T23:59:59.999Z",
        "patient REFERENCE Patient|p-001|Patient/p-001",
        "subject REFERENCE Patient|p-001|Patient/p-001",
        "status TOKEN http://hl7.org/fhir/observation-status|final|",
    };
    expect_rows(blood_pressure, want, N(want));
}

static const char medication_request[] =
    "{\"resourceType\":\"MedicationRequest\",\"status\":\"active\",\"intent\":\"order\","
    "\"identifier\":[{\"system\":\"http://hospital.example/rx\",\"value\":\"RX-2024-0001\"}],"
    "\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"http://www.nmpa.gov.cn/drugs\","
    "\"code\":\"H20000001\",\"display\":\"二甲双胍片\"}]},"
    "\"subject\":{\"reference\":\"Patient/p-001\"},\"encounter\":{\"reference\":\"Encounter/e-1\"},"
    "\"authoredOn\":\"2024-03-01T09:15:00+08:00\","
    "\"requester\":{\"reference\":\"Practitioner/dr-li\"},"
    "\"dosageInstruction\":[{\"timing\":{\"event\":[\"2024-03-01T12:00:00+08:00\"],"
    "\"repeat\":{\"frequency\":2,\"period\":1,\"periodUnit\":\"d\"}},"
    "\"doseAndRate\":[{\"doseQuantity\":{\"value\":0.5,\"unit\":\"g\"}}]}]}";

static void test_medication_request(void **state)
{
    (void)state;
    static const char *const want[] = {
        "authoredon DATE 2024-03-01T01:15:00.000Z..2024-03-01T01:15:00.999Z",
        "code TOKEN http://www.nmpa.gov.cn/drugs|H20000001|二甲双胍片",
        "date DATE 2024-03-01T04:00:00.000Z..2024-03-01T04:00:00.999Z",
        "encounter REFERENCE Encounter|e-1|Encounter/e-1",
        "identifier TOKEN http://hospital.example/rx|RX-2024-0001|",
        "intent TOKEN http://hl7.org/fhir/CodeSystem/medicationrequest-intent|order|",
        "patient REFERENCE Patient|p-001|Patient/p-001",
        "requester REFERENCE Practitioner|dr-li|Practitioner/dr-li",
        "status TOKEN http://hl7.org/fhir/CodeSystem/medicationrequest-status|active|",
        "subject REFERENCE Patient|p-001|Patient/p-001",
    };
    expect_rows(medication_request, want, N(want));
}

static const char encounter[] =
    "{\"resourceType\":\"Encounter\",\"status\":\"finished\","
    "\"class\":{\"system\":\"http://terminology.hl7.org/CodeSystem/v3-ActCode\",\"code\":\"AMB\","
    "\"display\":\"ambulatory\"},"
    "\"subject\":{\"reference\":\"Patient/p-001\"},"
    "\"participant\":[{\"individual\":{\"reference\":\"Practitioner/dr-li\"}}],"
    "\"period\":{\"start\":\"2024-03-01T08:00:00+08:00\",\"end\":\"2024-03-01T08:20+08:00\"},"
    "\"length\":{\"value\":20,\"unit\":\"min\",\"system\":\"http://unitsofmeasure.org\","
    "\"code\":\"min\"},"
    "\"serviceProvider\":{\"reference\":\"Organization/org-1\"}}";

static void test_encounter_with_a_period(void **state)
{
    (void)state;
    static const char *const want[] = {
        "class TOKEN http://terminology.hl7.org/CodeSystem/v3-ActCode|AMB|ambulatory",
        /* start of the start .. end of the end (a minute: 08:20:00 .. 08:20:59.999) */
        "date DATE 2024-03-01T00:00:00.000Z..2024-03-01T00:20:59.999Z",
        "length QUANTITY http://unitsofmeasure.org|min 19.5..20.5",
        "participant REFERENCE Practitioner|dr-li|Practitioner/dr-li",
        "practitioner REFERENCE Practitioner|dr-li|Practitioner/dr-li",
        "patient REFERENCE Patient|p-001|Patient/p-001",
        "subject REFERENCE Patient|p-001|Patient/p-001",
        "service-provider REFERENCE Organization|org-1|Organization/org-1",
        "status TOKEN http://hl7.org/fhir/encounter-status|finished|",
    };
    expect_rows(encounter, want, N(want));
    /* a period with only an end starts at the beginning of time */
    static const char *const open_start[] = {
        "date DATE 0001-01-01T00:00:00.000Z..2024-12-31T23:59:59.999Z"};
    expect_some_rows("{\"resourceType\":\"Encounter\",\"status\":\"finished\",\"class\":{\"code\":"
                     "\"AMB\"},\"period\":{\"end\":\"2024\"}}",
                     open_start, 1);
}

/* ---- references, filters, choices, extensions -------------------------------------------- */

static void test_references(void **state)
{
    (void)state;
    static const char *const want[] = {
        /* absolute URL: type and id from its last segments, the URL kept */
        "subject REFERENCE Patient|p-9|https://other.example/fhir/Patient/p-9/_history/3",
        "patient REFERENCE Patient|p-9|https://other.example/fhir/Patient/p-9/_history/3",
        /* a version-specific relative reference */
        "encounter REFERENCE Encounter|e-1|Encounter/e-1/_history/2",
        /* urn:uuid (a Bundle's local reference): the text, and the type from Reference.type */
        "performer REFERENCE Practitioner||urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
        /* a logical reference: its identifier is searchable with :identifier */
        "based-on:identifier TOKEN http://hospital.example/orders|SR-1|",
        "status TOKEN http://hl7.org/fhir/observation-status|final|",
        "code TOKEN ||x",
        "combo-code TOKEN ||x",
    };
    expect_rows("{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                "\"subject\":{\"reference\":\"https://other.example/fhir/Patient/p-9/_history/3\"},"
                "\"encounter\":{\"reference\":\"Encounter/e-1/_history/2\"},"
                "\"performer\":[{\"reference\":\"urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0\","
                "\"type\":\"Practitioner\"},{\"reference\":\"#contained-1\"}],"
                "\"basedOn\":[{\"identifier\":{\"system\":\"http://hospital.example/orders\","
                "\"value\":\"SR-1\"}}]}",
                want, N(want));
    /* where(resolve() is Patient): a Group subject is a subject, not a patient */
    static const char *const group[] = {"subject REFERENCE Group|g-1|Group/g-1"};
    const char *obs = "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":"
                      "\"x\"},\"subject\":{\"reference\":\"Group/g-1\"}}";
    expect_some_rows(obs, group, 1);
    expect_no_rows_of(obs, "patient");
    /* canonical references are kept as written */
    static const char *const canon[] = {
        "instantiates-canonical REFERENCE ||http://example.org/PlanDefinition/diabetes|1.0"};
    expect_some_rows("{\"resourceType\":\"CarePlan\",\"status\":\"active\",\"intent\":\"plan\","
                     "\"subject\":{\"reference\":\"Patient/p-001\"},\"instantiatesCanonical\":["
                     "\"http://example.org/PlanDefinition/diabetes|1.0\"]}",
                     canon, 1);
}

static void test_filters_and_special_expressions(void **state)
{
    (void)state;
    /* telecom.where(system='phone'|'email') */
    static const char *const tel[] = {"phone TOKEN |010-12345678|", "email TOKEN |a@b.cn|",
                                      "telecom TOKEN |010-12345678|", "telecom TOKEN |a@b.cn|",
                                      "telecom TOKEN |wechat-id|"};
    const char *pr = "{\"resourceType\":\"Practitioner\",\"telecom\":["
                     "{\"system\":\"phone\",\"value\":\"010-12345678\"},"
                     "{\"system\":\"email\",\"value\":\"a@b.cn\"},"
                     "{\"system\":\"other\",\"value\":\"wechat-id\"}]}";
    expect_some_rows(pr, tel, N(tel));
    /* deceased: Patient.deceased.exists() and Patient.deceased != false */
    static const char *const dead[] = {
        "deceased TOKEN |true|",
        "death-date DATE 2020-01-02T00:00:00.000Z..2020-01-02T23:59:59.999Z"};
    expect_some_rows("{\"resourceType\":\"Patient\",\"deceasedDateTime\":\"2020-01-02\"}", dead,
                     N(dead));
    static const char *const alive[] = {"deceased TOKEN |false|"};
    expect_some_rows("{\"resourceType\":\"Patient\",\"deceasedBoolean\":false}", alive, 1);
    /* relatedArtifact.where(type='depends-on').resource */
    static const char *const dep[] = {"depends-on REFERENCE ||http://example.org/Library/base"};
    const char *lib = "{\"resourceType\":\"Library\",\"status\":\"active\",\"type\":{\"text\":"
                      "\"x\"},\"relatedArtifact\":[{\"type\":\"depends-on\",\"resource\":"
                      "\"http://example.org/Library/base\"},{\"type\":\"successor\",\"resource\":"
                      "\"http://example.org/Library/next\"}]}";
    expect_some_rows(lib, dep, 1);
    static const char *const succ[] = {"successor REFERENCE ||http://example.org/Library/next"};
    expect_some_rows(lib, succ, 1);
    /* useContext composites: a code paired with a Range, and with a CodeableConcept */
    static const char *const ctx[] = {
        "context-type-quantity COMPOSITE http://terminology.hl7.org/CodeSystem/usage-context-type|"
        "age |a 17.5..65.5 ",
        "context-quantity QUANTITY |a 17.5..65.5",
        "context-type TOKEN http://terminology.hl7.org/CodeSystem/usage-context-type|age|",
        "context-type-value COMPOSITE http://terminology.hl7.org/CodeSystem/usage-context-type|"
        "focus http://snomed.info/sct|44054006 0..0 ",
        "context TOKEN http://snomed.info/sct|44054006|diabetes"};
    expect_some_rows(
        "{\"resourceType\":\"Library\",\"status\":\"active\",\"type\":{\"text\":\"x\"},"
        "\"useContext\":[{\"code\":{\"system\":"
        "\"http://terminology.hl7.org/CodeSystem/usage-context-type\",\"code\":"
        "\"age\"},\"valueRange\":{\"low\":{\"value\":18,\"unit\":\"a\"},\"high\":{"
        "\"value\":65,\"unit\":\"a\"}}},{\"code\":{\"system\":"
        "\"http://terminology.hl7.org/CodeSystem/usage-context-type\",\"code\":"
        "\"focus\"},\"valueCodeableConcept\":{\"coding\":[{\"system\":"
        "\"http://snomed.info/sct\",\"code\":\"44054006\",\"display\":\"Diabetes\"}]}}]}",
        ctx, N(ctx));
    /* Money: system urn:iso:std:iso:4217, the currency as the code */
    static const char *const money[] = {
        "totalgross QUANTITY urn:iso:std:iso:4217|CNY 128.495..128.505"};
    expect_some_rows("{\"resourceType\":\"Invoice\",\"status\":\"issued\",\"totalGross\":{"
                     "\"value\":128.50,\"currency\":\"CNY\"}}",
                     money, 1);
    /* a number parameter on a decimal, and on a Range */
    static const char *const prob[] = {"probability NUMBER 0.25..0.35",
                                       "probability NUMBER 0.015..0.45"};
    expect_some_rows(
        "{\"resourceType\":\"RiskAssessment\",\"status\":\"final\",\"subject\":{"
        "\"reference\":\"Patient/p-001\"},\"prediction\":[{\"probabilityDecimal\":0.3},"
        "{\"probabilityRange\":{\"low\":{\"value\":0.02},\"high\":{\"value\":0.4}}}]}",
        prob, N(prob));
    /* common parameters: _security, _source */
    static const char *const meta[] = {
        "_security TOKEN http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R|restricted",
        "_source URI http://hospital.example/his"};
    expect_some_rows("{\"resourceType\":\"Basic\",\"code\":{\"text\":\"x\"},\"meta\":{\"source\":"
                     "\"http://hospital.example/his\",\"security\":[{\"system\":"
                     "\"http://terminology.hl7.org/CodeSystem/v3-Confidentiality\",\"code\":\"R\","
                     "\"display\":\"restricted\"}]}}",
                     meta, N(meta));
}

static void test_identical_rows_once(void **state)
{
    (void)state;
    static const char *const want[] = {"name STRING 李|李", "phonetic STRING 李|李",
                                       "family STRING 李|李", "identifier TOKEN |A1|",
                                       "deceased TOKEN |false|"};
    expect_rows("{\"resourceType\":\"Patient\",\"identifier\":[{\"value\":\"A1\"},{\"value\":"
                "\"A1\"}],\"name\":[{\"family\":\"李\",\"text\":\"李\"},{\"family\":\"李\"}]}",
                want, N(want));
}

static void test_values_that_cannot_be_indexed_are_skipped(void **state)
{
    (void)state;
    /* Never an error: values that make no row are left out. */
    static const char *const want[] = {"deceased TOKEN |false|"};
    expect_rows("{\"resourceType\":\"Patient\",\"birthDate\":\"1990-02-30\",\"name\":[{\"given\":"
                "[null]}],\"generalPractitioner\":[{\"reference\":\"#gp\"},{\"display\":\"Dr\"}],"
                "\"identifier\":[{\"system\":\"urn:x\"}],\"telecom\":[{\"system\":\"phone\"}]}",
                want, N(want));
    expect_rows("{\"resourceType\":\"NoSuchType\",\"name\":\"x\"}", NULL, 0);
    expect_rows("{\"name\":\"x\"}", NULL, 0);
    expect_rows("[1,2]", NULL, 0);
    static const char *const bad_value[] = {
        "status TOKEN http://hl7.org/fhir/observation-status|final|"};
    expect_rows("{\"resourceType\":\"Observation\",\"status\":\"final\",\"valueQuantity\":{"
                "\"value\":\"abc\"},\"effectiveDateTime\":\"yesterday\"}",
                bad_value, 1);
}

/* ---- normalisation ------------------------------------------------------------------------ */

static void expect_norm(const char *in, const char *want)
{
    struct jk_arena *a = jk_arena_new(0);
    const char *got = jk_sp_norm_string(a, in, strlen(in));
    assert_non_null(got);
    if (strcmp(got, want) != 0) print_message("norm(%s) = %s, want %s\n", in, got, want);
    assert_string_equal(got, want);
    jk_arena_free(a);
}

static void test_norm_string(void **state)
{
    (void)state;
    expect_norm("Ａｂｃ１２３", "abc123");
    expect_norm("Müller", "muller");
    expect_norm("王", "王");
    expect_norm("王小明", "王小明");
    expect_norm("José Ñúñez", "jose nunez");
    expect_norm("Straße", "strasse");
    expect_norm("Æsir Øster Łódź Œuvre", "aesir oster lodz oeuvre");
    expect_norm("ÀÉÎÕÜ àéîõü ÿ Ÿ", "aeiou aeiou y y");
    expect_norm("3×4÷2", "3×4÷2");                   /* signs, not letters */
    expect_norm("ＷＡＮＧ　ｘｉａｏ", "wang　xiao"); /* U+3000 is not a full-width Latin form */
    expect_norm("（北京）", "(北京)");               /* full-width punctuation is ASCII too */
    expect_norm("ＨＥＬＬＯ，世界！", "hello,世界!");
    expect_norm("", "");
    /* a string cut inside a character keeps its bytes */
    struct jk_arena *a = jk_arena_new(0);
    const char *cut = jk_sp_norm_string(a, "\xc3", 1);
    assert_memory_equal(cut, "\xc3", 2);
    cut = jk_sp_norm_string(a, "\xef\xbc", 2);
    assert_memory_equal(cut, "\xef\xbc", 3);
    jk_arena_free(a);
}

static void expect_date(const char *s, const char *lo, const char *hi)
{
    int64_t l, h;
    char a[40], b[40];
    assert_int_equal(jk_sp_date_range(s, strlen(s), &l, &h), 0);
    iso(l, a, sizeof a);
    iso(h, b, sizeof b);
    if (strcmp(a, lo) || strcmp(b, hi)) print_message("%s -> %s .. %s\n", s, a, b);
    assert_string_equal(a, lo);
    assert_string_equal(b, hi);
}

static void expect_bad_date(const char *s)
{
    int64_t l, h;
    if (jk_sp_date_range(s, strlen(s), &l, &h) != -1) print_message("accepted '%s'\n", s);
    assert_int_equal(jk_sp_date_range(s, strlen(s), &l, &h), -1);
}

static void test_date_ranges(void **state)
{
    (void)state;
    expect_date("2024", "2024-01-01T00:00:00.000Z", "2024-12-31T23:59:59.999Z");
    expect_date("2024-02", "2024-02-01T00:00:00.000Z", "2024-02-29T23:59:59.999Z");
    expect_date("2023-02", "2023-02-01T00:00:00.000Z", "2023-02-28T23:59:59.999Z");
    expect_date("1900-02", "1900-02-01T00:00:00.000Z", "1900-02-28T23:59:59.999Z");
    expect_date("2024-03-07", "2024-03-07T00:00:00.000Z", "2024-03-07T23:59:59.999Z");
    expect_date("1960-12-31", "1960-12-31T00:00:00.000Z", "1960-12-31T23:59:59.999Z");
    /* a minute in Beijing time */
    expect_date("2024-03-07T08:30+08:00", "2024-03-07T00:30:00.000Z", "2024-03-07T00:30:59.999Z");
    expect_date("2024-03-07T08:30:15+08:00", "2024-03-07T00:30:15.000Z",
                "2024-03-07T00:30:15.999Z");
    expect_date("2024-03-07T00:30:15-05:30", "2024-03-07T06:00:15.000Z",
                "2024-03-07T06:00:15.999Z");
    /* an instant with milliseconds is exactly that millisecond */
    expect_date("2024-03-07T08:30:15.123Z", "2024-03-07T08:30:15.123Z", "2024-03-07T08:30:15.123Z");
    expect_date("2024-03-07T08:30:15.1Z", "2024-03-07T08:30:15.100Z", "2024-03-07T08:30:15.199Z");
    expect_date("2024-03-07T08:30:15.12Z", "2024-03-07T08:30:15.120Z", "2024-03-07T08:30:15.129Z");
    expect_date("2024-03-07T08:30:15.123456Z", "2024-03-07T08:30:15.123Z",
                "2024-03-07T08:30:15.123Z");
    /* no zone: UTC */
    expect_date("2024-03-07T08:30:15", "2024-03-07T08:30:15.000Z", "2024-03-07T08:30:15.999Z");
    /* a leap second is the last second of its minute */
    expect_date("2016-12-31T23:59:60Z", "2016-12-31T23:59:59.000Z", "2016-12-31T23:59:59.999Z");
    expect_bad_date("");
    expect_bad_date("24");
    expect_bad_date("2024-13");
    expect_bad_date("2023-02-29");
    expect_bad_date("2024-04-31");
    expect_bad_date("2024-03-07T25:00Z");
    expect_bad_date("2024-03-07T08:30:15.Z");
    expect_bad_date("2024-03-07T08:30:15+15:00");
    expect_bad_date("2024-03-07 08:30");
    expect_bad_date("2024-03T10:00Z");
    expect_bad_date("2024-03-07Z");
    /* only n bytes are read */
    int64_t l, h;
    assert_int_equal(jk_sp_date_range("2024-03-07xyz", 10, &l, &h), 0);
}

static void expect_number(const char *s, double lo, double hi)
{
    double l, h;
    assert_int_equal(jk_sp_number_range(s, strlen(s), &l, &h), 0);
    if (fabs(l - lo) > 1e-12 * fmax(1, fabs(lo)) || fabs(h - hi) > 1e-12 * fmax(1, fabs(hi)))
        print_message("%s -> %.17g .. %.17g\n", s, l, h);
    assert_true(fabs(l - lo) <= 1e-12 * fmax(1, fabs(lo)));
    assert_true(fabs(h - hi) <= 1e-12 * fmax(1, fabs(hi)));
}

static void test_number_ranges(void **state)
{
    (void)state;
    expect_number("100", 99.5, 100.5);
    expect_number("1.5", 1.45, 1.55);
    expect_number("1.50", 1.495, 1.505);
    expect_number("1e2", 50, 150);
    expect_number("1.0e2", 95, 105);
    expect_number("1E-2", 0.005, 0.015);
    expect_number("-0.5", -0.55, -0.45);
    expect_number("0", -0.5, 0.5);
    double l, h;
    static const char *const bad[] = {"",     "-",   "1.",   ".5",  "1e",  "abc",
                                      "1..2", "1,5", "0x10", "inf", "nan", "1e99999"};
    for (size_t i = 0; i < N(bad); i++) {
        if (jk_sp_number_range(bad[i], strlen(bad[i]), &l, &h) != -1)
            print_message("accepted '%s'\n", bad[i]);
        assert_int_equal(jk_sp_number_range(bad[i], strlen(bad[i]), &l, &h), -1);
    }
}

/* ---- the tables --------------------------------------------------------------------------- */

static void test_lookups(void **state)
{
    (void)state;
    const struct jk_sp *sp = jk_sp_find("Patient", "name");
    assert_non_null(sp);
    assert_string_equal(sp->resource_type, "Patient");
    assert_int_equal(sp->type, JK_SP_STRING);
    sp = jk_sp_find("Patient", "_tag");
    assert_non_null(sp);
    assert_string_equal(sp->resource_type, "Resource");
    assert_int_equal(sp->type, JK_SP_TOKEN);
    assert_int_equal(jk_sp_find("Observation", "_lastUpdated")->type, JK_SP_DATE);
    assert_int_equal(jk_sp_find("Observation", "_id")->type, JK_SP_TOKEN);
    assert_int_equal(jk_sp_find("Binary", "_id")->type, JK_SP_TOKEN);
    assert_non_null(jk_sp_find("Resource", "_profile"));
    sp = jk_sp_find("Observation", "subject");
    assert_int_equal(sp->type, JK_SP_REFERENCE);
    int has_patient = 0;
    for (const char *const *t = sp->targets; t && *t; t++)
        has_patient |= strcmp(*t, "Patient") == 0;
    assert_true(has_patient);
    sp = jk_sp_find("Observation", "code-value-quantity");
    assert_int_equal(sp->type, JK_SP_COMPOSITE);
    assert_string_equal(sp->components[0], "code");
    assert_string_equal(sp->components[1], "value-quantity");
    assert_null(sp->components[2]);
    assert_int_equal(jk_sp_find("Observation", sp->components[1])->type, JK_SP_QUANTITY);
    /* not found: unknown code, unknown type, skipped parameters */
    assert_null(jk_sp_find("Patient", "nickname"));
    assert_null(jk_sp_find("Patient", "NAME"));
    assert_null(jk_sp_find("Patien", "name"));
    assert_null(jk_sp_find(NULL, "name"));
    assert_null(jk_sp_find("Patient", "_text"));
    assert_null(jk_sp_find("Patient", "_content"));
    assert_null(jk_sp_find("Location", "near"));
    assert_null(jk_sp_find("Bundle", "composition"));
    assert_null(jk_sp_find("MolecularSequence", "chromosome-variant-coordinate"));
    /* lists are sorted, unique, and include the common parameters */
    const struct jk_sp *const *list;
    size_t n = jk_sp_list("Patient", &list);
    assert_true(n > 25);
    for (size_t i = 1; i < n; i++)
        assert_true(strcmp(list[i - 1]->code, list[i]->code) < 0);
    assert_int_equal(jk_sp_list("NoSuchType", &list), 0);
    /* the Patient compartment */
    const char *const *c = jk_sp_patient_compartment("Observation");
    assert_non_null(c);
    assert_string_equal(c[0], "subject");
    assert_string_equal(c[1], "performer");
    assert_null(c[2]);
    assert_string_equal(jk_sp_patient_compartment("Patient")[0], "link");
    assert_null(jk_sp_patient_compartment("ActivityDefinition"));
    assert_null(jk_sp_patient_compartment("Nope"));
}

/* Which FHIR values each parameter type can read (the generator's table, checked here). */
static int vtype_fits(enum jk_sp_type t, enum jk_sp_vtype v)
{
    switch (t) {
    case JK_SP_STRING: return v == JK_SPV_STR || v == JK_SPV_HUMANNAME || v == JK_SPV_ADDRESS;
    case JK_SP_TOKEN:
        return v == JK_SPV_STR || v == JK_SPV_BOOL || v == JK_SPV_CODING || v == JK_SPV_CC ||
               v == JK_SPV_IDENT || v == JK_SPV_CONTACT || v == JK_SPV_DECEASED;
    case JK_SP_DATE: return v == JK_SPV_DATE || v == JK_SPV_PERIOD || v == JK_SPV_TIMING;
    case JK_SP_NUMBER: return v == JK_SPV_NUM || v == JK_SPV_RANGE;
    case JK_SP_QUANTITY: return v == JK_SPV_QTY || v == JK_SPV_MONEY || v == JK_SPV_RANGE;
    case JK_SP_REFERENCE: return v == JK_SPV_REF || v == JK_SPV_CANON;
    case JK_SP_URI: return v == JK_SPV_URI;
    case JK_SP_COMPOSITE:
    case JK_SP_SPECIAL: return 0;
    }
    return 0;
}

/* Parameters of R4 that are not in the tables, with the reason (docs/internals/search.md). */
static const char *const skipped[][2] = {
    {"Resource", "_text"},
    {"Resource", "_content"},
    {"Resource", "_query"},
    {"Resource", "_filter"},
    {"Bundle", "composition"},
    {"Bundle", "message"},
    {"Location", "near"},
    {"DocumentReference", "relationship"},
    {"MolecularSequence", "chromosome-variant-coordinate"},
    {"MolecularSequence", "chromosome-window-coordinate"},
    {"MolecularSequence", "referenceseqid-variant-coordinate"},
    {"MolecularSequence", "referenceseqid-window-coordinate"},
    {"Patient", "age"},
    {"Patient", "birthOrderBoolean"},
};

static void test_every_parameter_has_an_extraction(void **state)
{
    (void)state;
    size_t n_params = 0, n_paths = 0, n_types = 0;
    for (size_t i = 0; i < jk_sp_gen_n_types; i++) {
        const struct jk_sp *const *list;
        size_t n = jk_sp_list(jk_sp_gen_types[i].name, &list);
        n_types++;
        for (size_t j = 0; j < n; j++) {
            const struct jk_sp_def *d = jk_sp_def_of(list[j]);
            assert_ptr_equal(jk_sp_find(jk_sp_gen_types[i].name, list[j]->code), list[j]);
            n_params++;
            if (d->is_table) {
                assert_int_equal(d->n_paths, 0);
                assert_true(strcmp(d->sp.code, "_id") == 0 ||
                            strcmp(d->sp.code, "_lastUpdated") == 0);
                continue;
            }
            if (d->n_paths == 0)
                print_message("%s?%s has no path\n", list[j]->resource_type, list[j]->code);
            assert_true(d->n_paths > 0);
            n_paths += d->n_paths;
            const struct jk_sp_path *p = &jk_sp_gen_paths[d->first_path];
            if (d->sp.type == JK_SP_COMPOSITE) {
                assert_true(d->n_base > 0 && d->n_c1 > 0 && d->n_base + d->n_c1 < d->n_paths);
                assert_int_equal(d->c1_type, JK_SP_TOKEN);
                for (size_t k = 0; k < d->n_paths; k++) {
                    enum jk_sp_type want = k < d->n_base                     ? JK_SP_COMPOSITE
                                           : k < (size_t)d->n_base + d->n_c1 ? JK_SP_TOKEN
                                                                             : d->c2_type;
                    if (want == JK_SP_COMPOSITE)
                        assert_int_equal(p[k].vtype, JK_SPV_ELEMENT);
                    else
                        assert_true(vtype_fits(want, (enum jk_sp_vtype)p[k].vtype));
                }
                assert_non_null(d->sp.components);
                for (const char *const *c = d->sp.components; *c; c++)
                    assert_non_null(jk_sp_find(jk_sp_gen_types[i].name, *c));
                continue;
            }
            for (size_t k = 0; k < d->n_paths; k++) {
                if (!vtype_fits(d->sp.type, (enum jk_sp_vtype)p[k].vtype))
                    print_message("%s?%s: path %zu reads vtype %d\n", list[j]->resource_type,
                                  list[j]->code, k, p[k].vtype);
                assert_true(vtype_fits(d->sp.type, (enum jk_sp_vtype)p[k].vtype));
                if (p[k].target) assert_int_equal(p[k].vtype, JK_SPV_REF);
                for (size_t s = 0; s < p[k].n_steps; s++)
                    assert_non_null(jk_sp_gen_steps[p[k].first_step + s].name);
            }
        }
    }
    /* The index extraction walks: every top-level path of every parameter, once, by name. */
    for (size_t i = 0; i < jk_sp_gen_n_types; i++) {
        const struct jk_sp_gen_type *t = &jk_sp_gen_types[i];
        const struct jk_sp *const *list;
        size_t n = jk_sp_list(t->name, &list), n_top = 0;
        for (size_t j = 0; j < n; j++) {
            const struct jk_sp_def *d = jk_sp_def_of(list[j]);
            n_top += d->sp.type == JK_SP_COMPOSITE ? d->n_base : d->n_paths;
        }
        assert_int_equal(t->n_entries, n_top);
        for (size_t e = 0; e < t->n_entries; e++) {
            const struct jk_sp_gen_entry *en = &jk_sp_gen_entries[t->first_entry + e];
            const struct jk_sp_path *p = &jk_sp_gen_paths[en->path];
            assert_true(e < t->n_root ? p->n_steps == 0 : p->n_steps > 0);
            if (p->n_steps) assert_string_equal(en->name, jk_sp_gen_steps[p->first_step].name);
            if (e > 0)
                assert_true(strcmp(jk_sp_gen_entries[t->first_entry + e - 1].name, en->name) <= 0);
            assert_ptr_equal(jk_sp_find(t->name, jk_sp_gen_defs[en->def].sp.code),
                             &jk_sp_gen_defs[en->def].sp);
        }
    }
    for (size_t i = 0; i < N(skipped); i++) {
        const char *t = strcmp(skipped[i][0], "Resource") == 0 ? "Patient" : skipped[i][0];
        assert_null(jk_sp_find(t, skipped[i][1]));
    }
    print_message("search parameters: %zu types, %zu type/parameter pairs, %zu paths, %zu "
                  "documented skips\n",
                  n_types, n_params, n_paths, N(skipped));
    assert_true(n_types >= 148);
    assert_true(n_params > 2000);
}

/* ---- every official example --------------------------------------------------------------- */

static int is_definition(const char *name)
{
    static const char *const skip[] = {"StructureDefinition-", "ValueSet-",   "CodeSystem-",
                                       "SearchParameter-",     "ConceptMap-", "package.json"};
    for (size_t i = 0; i < N(skip); i++)
        if (strncmp(name, skip[i], strlen(skip[i])) == 0) return 1;
    return 0;
}

static void test_official_examples(void **state)
{
    (void)state;
    DIR *dir = opendir(EXAMPLES_DIR);
    if (!dir) {
        print_message("skipped: %s is missing (run npm ci)\n", EXAMPLES_DIR);
        skip();
    }
    struct jk_arena *arena = jk_arena_new(0);
    size_t n_files = 0, n_rows = 0, n_empty = 0, max_rows = 0;
    size_t by_kind[8] = {0};
    int64_t us = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0 || is_definition(de->d_name))
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, de->d_name);
        struct json_object *o = json_object_from_file(path);
        if (!o) continue; /* not JSON: the validator's test reports those */
        struct jk_idx_row *rows;
        size_t n;
        int64_t t0 = jk_time_mono_us();
        jk_rc rc = jk_fhir_extract(arena, o, &rows, &n);
        us += jk_time_mono_us() - t0;
        if (rc) print_message("example %s: rc %d\n", de->d_name, rc);
        assert_int_equal(rc, JK_OK);
        for (size_t i = 0; i < n; i++) {
            assert_true(rows[i].kind <= JK_IDX_COMPOSITE);
            assert_non_null(rows[i].param);
            assert_non_null(rows[i].s1);
            assert_non_null(rows[i].s2);
            assert_non_null(rows[i].s3);
            assert_non_null(rows[i].s4);
            assert_non_null(rows[i].s5);
            assert_true(rows[i].lo_ms <= rows[i].hi_ms);
            assert_true(rows[i].lo <= rows[i].hi);
            by_kind[rows[i].kind]++;
        }
        n_files++;
        n_rows += n;
        n_empty += n == 0;
        if (n > max_rows) max_rows = n;
        json_object_put(o);
        jk_arena_reset(arena);
    }
    closedir(dir);
    jk_arena_free(arena);
    print_message("official examples: %zu resources, %zu rows (%zu with none, at most %zu in one), "
                  "%.1f us per resource (sanitizer build)\n",
                  n_files, n_rows, n_empty, max_rows, n_files ? (double)us / n_files : 0.0);
    for (size_t k = 0; k < 8; k++)
        print_message("  %-9s %zu\n", kind_names[k], by_kind[k]);
    assert_true(n_files > 500);
    assert_true(n_rows > 10 * n_files);
}

/* ---- threads ------------------------------------------------------------------------------ */

struct thread_arg {
    const char *text;
    size_t want;
    int ok;
};

static void *extract_many(void *p)
{
    struct thread_arg *t = p;
    struct json_object *o = json_tokener_parse(t->text);
    struct jk_arena *a = jk_arena_new(0);
    t->ok = o && a;
    for (int i = 0; i < 2000 && t->ok; i++) {
        struct jk_idx_row *rows;
        size_t n;
        t->ok = jk_fhir_extract(a, o, &rows, &n) == JK_OK && n == t->want;
        jk_arena_reset(a);
    }
    jk_arena_free(a);
    json_object_put(o);
    return NULL;
}

static void test_concurrent_extraction(void **state)
{
    (void)state;
    struct thread_arg args[4];
    pthread_t th[4];
    const char *texts[2] = {chinese_patient, glucose};
    for (int i = 0; i < 4; i++) {
        struct lines l = extract_text(texts[i % 2]);
        args[i].text = texts[i % 2];
        args[i].want = l.n;
        lines_free(&l);
        assert_int_equal(pthread_create(&th[i], NULL, extract_many, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_true(args[i].ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chinese_patient),
        cmocka_unit_test(test_observation_with_a_quantity),
        cmocka_unit_test(test_observation_with_components),
        cmocka_unit_test(test_medication_request),
        cmocka_unit_test(test_encounter_with_a_period),
        cmocka_unit_test(test_references),
        cmocka_unit_test(test_filters_and_special_expressions),
        cmocka_unit_test(test_identical_rows_once),
        cmocka_unit_test(test_values_that_cannot_be_indexed_are_skipped),
        cmocka_unit_test(test_norm_string),
        cmocka_unit_test(test_date_ranges),
        cmocka_unit_test(test_number_ranges),
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_every_parameter_has_an_extraction),
        cmocka_unit_test(test_official_examples),
        cmocka_unit_test(test_concurrent_extraction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
