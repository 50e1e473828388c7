/* test_fhir_validate.c - FHIR R4 validation: what a client sending resources can rely on. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/diag.h"
#include "fhir/model.h"
#include "fhir/validate.h"

#define EXAMPLES_DIR "node_modules/hl7.fhir.r4.examples"

/* One validation: the parsed resource, its issues and the arena they live in. */
struct run {
    struct jk_arena *arena;
    struct jk_diag d;
    jk_rc rc;
};

static struct json_object *parse(const char *text)
{
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    return o;
}

static void validate_text(struct run *r, const char *text)
{
    struct json_object *o = parse(text);
    r->arena = jk_arena_new(0);
    assert_non_null(r->arena);
    jk_diag_init(&r->d, r->arena);
    r->rc = jk_fhir_validate(o, &r->d);
    json_object_put(o);
}

static void run_free(struct run *r)
{
    jk_arena_free(r->arena);
}

static void print_issues(const struct run *r)
{
    for (const struct jk_issue *is = r->d.head; is; is = is->next)
        print_message("  issue %s %s: %s\n", is->code, is->expr ? is->expr : "-", is->msg);
}

/* The issue with expression expr, or NULL. */
static const struct jk_issue *find_issue(const struct run *r, const char *expr)
{
    for (const struct jk_issue *is = r->d.head; is; is = is->next)
        if (is->expr && strcmp(is->expr, expr) == 0) return is;
    return NULL;
}

/* Validates text, which must be valid. */
static void expect_valid(const char *text)
{
    struct run r;
    validate_text(&r, text);
    if (r.rc != JK_OK) print_issues(&r);
    assert_int_equal(r.rc, JK_OK);
    assert_null(r.d.head);
    run_free(&r);
}

/* Validates text, which must fail with an issue of code at expr whose message contains words. */
static void expect_issue(const char *text, const char *code, const char *expr, const char *words)
{
    struct run r;
    validate_text(&r, text);
    assert_int_equal(r.rc, JK_EINVAL);
    const struct jk_issue *is = find_issue(&r, expr);
    if (!is || strcmp(is->code, code) != 0 || !strstr(is->msg, words)) {
        print_message("wanted %s at %s with '%s'; got:\n", code, expr, words);
        print_issues(&r);
    }
    assert_non_null(is);
    assert_string_equal(is->code, code);
    assert_non_null(strstr(is->msg, words));
    assert_int_equal(is->rc, JK_EINVAL);
    run_free(&r);
}

static const char chinese_patient[] =
    "{\"resourceType\":\"Patient\",\"id\":\"p-001\","
    "\"meta\":{\"versionId\":\"1\",\"lastUpdated\":\"2024-03-01T08:30:00+08:00\"},"
    "\"text\":{\"status\":\"generated\",\"div\":\"<div xmlns=\\\"http://www.w3.org/1999/xhtml\\\">"
    "王小明 𠀀</div>\"},"
    "\"identifier\":[{\"system\":\"urn:oid:1.2.156.112604.1.2.1\",\"value\":\"110101199003071234\"}"
    "],"
    "\"active\":true,"
    "\"name\":[{\"use\":\"official\",\"text\":\"王小明\",\"family\":\"王\",\"given\":[\"小明\"]}],"
    "\"telecom\":[{\"system\":\"phone\",\"value\":\"+86 138 0013 8000\",\"use\":\"mobile\"}],"
    "\"gender\":\"male\",\"birthDate\":\"1990-03-07\","
    "\"address\":[{\"text\":\"北京市东城区王府井大街1号\",\"city\":\"北京\",\"country\":\"CN\"}],"
    "\"maritalStatus\":{\"coding\":[{\"system\":"
    "\"http://terminology.hl7.org/CodeSystem/v3-MaritalStatus\",\"code\":\"M\"}]},"
    "\"managingOrganization\":{\"reference\":\"Organization/org-1\",\"display\":\"北京协和医院\"}}";

static void test_chinese_patient_is_valid(void **state)
{
    (void)state;
    expect_valid(chinese_patient);
}

static void test_unknown_element_is_named_with_its_path(void **state)
{
    (void)state;
    expect_issue(
        "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"王\",\"nickname\":\"明\"}]}",
        "structure", "Patient.name[0].nickname", "unknown element 'nickname'");
    expect_issue("{\"resourceType\":\"Patient\",\"birthdate\":\"1990-01-01\"}", "structure",
                 "Patient.birthdate", "birthdate");
}

static void test_bad_birth_date(void **state)
{
    (void)state;
    expect_issue(
        "{\"resourceType\":\"Patient\",\"birthDate\":\"1990-13-01\"}", "value", "Patient.birthDate",
        "birthDate '1990-13-01' is not a valid date (expected YYYY, YYYY-MM or YYYY-MM-DD)");
    expect_issue("{\"resourceType\":\"Patient\",\"birthDate\":\"1990-01-01T10:00:00Z\"}", "value",
                 "Patient.birthDate", "not a valid date");
    expect_issue("{\"resourceType\":\"Patient\",\"birthDate\":19900101}", "value",
                 "Patient.birthDate", "must be a JSON string");
    expect_valid("{\"resourceType\":\"Patient\",\"birthDate\":\"1990\"}");
    expect_valid("{\"resourceType\":\"Patient\",\"birthDate\":\"1990-03\"}");
}

static void test_gender_must_be_in_the_required_value_set(void **state)
{
    (void)state;
    expect_issue("{\"resourceType\":\"Patient\",\"gender\":\"M\"}", "code-invalid",
                 "Patient.gender", "male, other, unknown");
    expect_issue("{\"resourceType\":\"Patient\",\"gender\":\"Male\"}", "code-invalid",
                 "Patient.gender", "administrative-gender");
    expect_valid("{\"resourceType\":\"Patient\",\"gender\":\"unknown\"}");
}

static const char obs_head[] = "{\"resourceType\":\"Observation\",\"code\":{\"text\":\"体温\"},";

static void test_observation_status_binding(void **state)
{
    (void)state;
    char buf[512];
    static const char *const good[] = {"registered",       "preliminary", "final",
                                       "amended",          "corrected",   "cancelled",
                                       "entered-in-error", "unknown"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(buf, sizeof buf, "%s\"status\":\"%s\"}", obs_head, good[i]);
        expect_valid(buf);
    }
    snprintf(buf, sizeof buf, "%s\"status\":\"done\"}", obs_head);
    expect_issue(buf, "code-invalid", "Observation.status", "'done'");
    snprintf(buf, sizeof buf, "%s\"status\":\"final \"}", obs_head);
    expect_issue(buf, "value", "Observation.status", "not a valid code");
}

static void test_missing_required_elements(void **state)
{
    (void)state;
    struct run r;
    validate_text(&r, "{\"resourceType\":\"Observation\",\"valueString\":\"ok\"}");
    assert_int_equal(r.rc, JK_EINVAL);
    const struct jk_issue *st = find_issue(&r, "Observation.status");
    const struct jk_issue *code = find_issue(&r, "Observation.code");
    assert_non_null(st);
    assert_non_null(code);
    assert_string_equal(st->code, "required");
    assert_string_equal(code->code, "required");
    assert_int_equal(r.d.n_issues, 2);
    run_free(&r);
    /* Required inside a datatype: Narrative.div, and inside a backbone element. */
    expect_issue("{\"resourceType\":\"Patient\",\"text\":{\"status\":\"generated\"}}", "required",
                 "Patient.text.div", "missing required element div");
    expect_issue("{\"resourceType\":\"Patient\",\"link\":[{\"type\":\"seealso\"}]}", "required",
                 "Patient.link[0].other", "other");
    /* A required choice: MedicationRequest.medication[x]. */
    expect_issue("{\"resourceType\":\"MedicationRequest\",\"status\":\"active\",\"intent\":"
                 "\"order\",\"subject\":{\"reference\":\"Patient/1\"}}",
                 "required", "MedicationRequest.medication[x]", "CodeableConcept, Reference");
}

static void test_array_versus_single_value(void **state)
{
    (void)state;
    expect_issue("{\"resourceType\":\"Patient\",\"birthDate\":[\"1990-01-01\"]}", "structure",
                 "Patient.birthDate", "must be a single value, not an array");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":{\"family\":\"王\"}}", "structure",
                 "Patient.name", "must be an array");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"given\":\"小明\"}]}", "structure",
                 "Patient.name[0].given", "must be an array");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[]}", "structure", "Patient.name",
                 "empty array");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"王\"},null]}", "structure",
                 "Patient.name[1]", "null");
    expect_issue("{\"resourceType\":\"Patient\",\"active\":null}", "structure", "Patient.active",
                 "null");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{}]}", "structure", "Patient.name[0]",
                 "empty object");
}

static void test_choice_types(void **state)
{
    (void)state;
    char buf[512];
    snprintf(buf, sizeof buf,
             "%s\"status\":\"final\",\"valueQuantity\":{\"value\":36.5,\"unit\":\"Cel\","
             "\"system\":\"http://unitsofmeasure.org\",\"code\":\"Cel\"}}",
             obs_head);
    expect_valid(buf);
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueCoding\":{\"code\":\"x\"}}", obs_head);
    expect_issue(buf, "structure", "Observation.valueCoding",
                 "value[x] does not allow type 'Coding'");
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"effectiveString\":\"yesterday\"}",
             obs_head);
    expect_issue(buf, "structure", "Observation.effectiveString", "effective[x]");
    snprintf(buf, sizeof buf,
             "%s\"status\":\"final\",\"valueQuantity\":{\"value\":1},\"valueString\":\"1\"}",
             obs_head);
    expect_issue(buf, "structure", "Observation.valueString", "only one type of value[x]");
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueQuantity\":{\"value\":\"36.5\"}}",
             obs_head);
    expect_issue(buf, "value", "Observation.valueQuantity.value", "must be a JSON number");
}

static void test_reference_format(void **state)
{
    (void)state;
    static const char *const good[] = {
        "Patient/123",
        "Patient/a.b-C",
        "Patient/123/_history/2",
        "https://fhir.example.cn/fhir/Patient/123",
        "urn:uuid:04121321-4af5-424c-a0e1-ed3aab1c349d",
        "urn:oid:1.2.156.1",
    };
    static const char *const bad[] = {
        "Patient/12 3",      "Patinet/1",    "Patient",  "Patient/1/history/2",
        "Patient?name=wang", "urn:uuid:xyz", "#nowhere", "ftp://x/Patient/1",
        "Patient/a_b",
    };
    char buf[512];
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"subject\":{\"reference\":\"%s\"}}",
                 obs_head, good[i]);
        expect_valid(buf);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"subject\":{\"reference\":\"%s\"}}",
                 obs_head, bad[i]);
        expect_issue(buf, "invalid", "Observation.subject.reference", "reference '");
    }
    /* Conditional references are for transactions: valid inside a transaction Bundle. */
    expect_valid("{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[{\"resource\":"
                 "{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"x\"},"
                 "\"subject\":{\"reference\":\"Patient?identifier=urn:oid:1.2|7\"}},"
                 "\"request\":{\"method\":\"POST\",\"url\":\"Observation\"}}]}");
}

static void test_bad_id(void **state)
{
    (void)state;
    expect_issue("{\"resourceType\":\"Patient\",\"id\":\"abc_def\"}", "value", "Patient.id",
                 "not a valid id");
    expect_issue("{\"resourceType\":\"Patient\",\"id\":"
                 "\"a1234567890123456789012345678901234567890123456789012345678901234\"}",
                 "value", "Patient.id", "1 to 64");
    expect_valid("{\"resourceType\":\"Patient\",\"id\":"
                 "\"a123456789012345678901234567890123456789012345678901234567890123\"}");
}

static void test_extensions(void **state)
{
    (void)state;
    expect_valid("{\"resourceType\":\"Patient\",\"extension\":[{\"url\":"
                 "\"http://example.cn/fhir/ext/ethnicity\",\"valueString\":\"汉族\"}]}");
    expect_valid("{\"resourceType\":\"Patient\",\"extension\":[{\"url\":\"http://e.cn/a\","
                 "\"extension\":[{\"url\":\"b\",\"valueBoolean\":true}]}]}");
    expect_issue("{\"resourceType\":\"Patient\",\"extension\":[{\"valueString\":\"汉族\"}]}",
                 "required", "Patient.extension[0].url", "missing required element url");
    expect_issue("{\"resourceType\":\"Patient\",\"extension\":[{\"url\":\"http://e.cn/a\","
                 "\"valueString\":\"x\",\"extension\":[{\"url\":\"b\",\"valueBoolean\":true}]}]}",
                 "invariant", "Patient.extension[0]", "not both");
    expect_issue("{\"resourceType\":\"Patient\",\"extension\":[{\"url\":\"http://e.cn/a\"}]}",
                 "invariant", "Patient.extension[0]", "ext-1");
    expect_issue("{\"resourceType\":\"Patient\",\"modifierExtension\":[{\"url\":\"http://e.cn/a\","
                 "\"valueString\":\"x\",\"valueBoolean\":true}]}",
                 "structure", "Patient.modifierExtension[0].valueBoolean", "only one type");
}

static void test_contained_resources(void **state)
{
    (void)state;
    static const char ok[] =
        "{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Practitioner\","
        "\"id\":\"gp\",\"name\":[{\"family\":\"李\"}]}],"
        "\"generalPractitioner\":[{\"reference\":\"#gp\"}]}";
    expect_valid(ok);
    expect_issue("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Practitioner\","
                 "\"id\":\"gp\",\"gender\":\"F\"}],\"generalPractitioner\":[{\"reference\":"
                 "\"#gp\"}]}",
                 "code-invalid", "Patient.contained[0].gender", "'F'");
    expect_issue("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Practitioner\","
                 "\"id\":\"gp\"}],\"generalPractitioner\":[{\"reference\":\"#other\"}]}",
                 "invalid", "Patient.generalPractitioner[0].reference", "ref-1");
    expect_issue("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Practitioner\","
                 "\"id\":\"gp\"}]}",
                 "invalid", "Patient.contained[0]", "dom-3");
    expect_issue("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Practitioner\","
                 "\"id\":\"gp\",\"meta\":{\"versionId\":\"2\"}}],\"generalPractitioner\":[{"
                 "\"reference\":\"#gp\"}]}",
                 "invalid", "Patient.contained[0].meta.versionId", "dom-4");
    expect_issue("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Organization\","
                 "\"id\":\"o\",\"contained\":[{\"resourceType\":\"Practitioner\",\"id\":\"x\"}]}],"
                 "\"managingOrganization\":{\"reference\":\"#o\"}}",
                 "invalid", "Patient.contained[0].contained", "dom-2");
    expect_issue("{\"resourceType\":\"Patient\",\"contained\":[{\"resourceType\":\"Nobody\"}]}",
                 "invalid", "Patient.contained[0]", "not a FHIR R4 resource type");
}

static void test_resources_inside_resources(void **state)
{
    (void)state;
    expect_issue("{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
                 "{\"resource\":{\"resourceType\":\"Patient\"}},"
                 "{\"resource\":{\"resourceType\":\"Patient\",\"birthDate\":\"1990-02-30x\"}}]}",
                 "value", "Bundle.entry[1].resource.birthDate", "not a valid date");
    expect_issue("{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
                 "{\"resource\":{\"birthDate\":\"1990\"}}]}",
                 "required", "Bundle.entry[0].resource", "resourceType is missing");
    expect_issue("{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":\"p\",\"resource\":"
                 "{\"resourceType\":\"Patient\",\"active\":\"yes\"}}]}",
                 "value", "Parameters.parameter[0].resource.active", "boolean");
}

static void test_primitive_extension_form(void **state)
{
    (void)state;
    expect_valid("{\"resourceType\":\"Patient\",\"_birthDate\":{\"extension\":[{\"url\":"
                 "\"http://hl7.org/fhir/StructureDefinition/data-absent-reason\","
                 "\"valueCode\":\"unknown\"}]}}");
    expect_valid("{\"resourceType\":\"Patient\",\"birthDate\":\"1990-03-07\",\"_birthDate\":"
                 "{\"id\":\"b1\",\"extension\":[{\"url\":"
                 "\"http://hl7.org/fhir/StructureDefinition/patient-birthTime\","
                 "\"valueDateTime\":\"1990-03-07T08:00:00+08:00\"}]}}");
    expect_valid("{\"resourceType\":\"Patient\",\"name\":[{\"given\":[\"小明\",null],"
                 "\"_given\":[null,{\"extension\":[{\"url\":\"http://e.cn/x\",\"valueString\":"
                 "\"a\"}]}]}]}");
    expect_issue("{\"resourceType\":\"Patient\",\"_birthDate\":{\"extension\":[{\"valueCode\":"
                 "\"unknown\"}]}}",
                 "required", "Patient.birthDate.extension[0].url", "url");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"given\":[\"a\",\"b\"],\"_given\":"
                 "[null]}]}",
                 "structure", "Patient.name[0].given", "aligned");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"given\":[\"a\",null]}]}", "structure",
                 "Patient.name[0].given[1]", "null");
    expect_issue("{\"resourceType\":\"Patient\",\"_name\":[{\"id\":\"x\"}]}", "structure",
                 "Patient._name", "only for primitive");
    expect_issue("{\"resourceType\":\"Patient\",\"_birthDate\":\"x\"}", "structure",
                 "Patient.birthDate", "must be an object");
}

static void test_decimals_keep_their_text(void **state)
{
    (void)state;
    char buf[512];
    static const char *const good[] = {"1.50", "0", "-0.5", "1e3", "1.0E-10", "36.50"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueQuantity\":{\"value\":%s}}",
                 obs_head, good[i]);
        expect_valid(buf);
    }
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueQuantity\":{\"value\":\"1.5.0\"}}",
             obs_head);
    expect_issue(buf, "value", "Observation.valueQuantity.value", "not a string");
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueQuantity\":{\"value\":NaN}}",
             obs_head);
    expect_issue(buf, "value", "Observation.valueQuantity.value", "not a valid decimal");
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueQuantity\":{\"value\":true}}",
             obs_head);
    expect_issue(buf, "value", "Observation.valueQuantity.value", "must be a JSON number");
}

static void test_integers_and_strings(void **state)
{
    (void)state;
    char buf[512];
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueInteger\":2147483648}", obs_head);
    expect_issue(buf, "value", "Observation.valueInteger", "out of range");
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueInteger\":-2147483648}", obs_head);
    expect_valid(buf);
    snprintf(buf, sizeof buf, "%s\"status\":\"final\",\"valueInteger\":1.0}", obs_head);
    expect_issue(buf, "value", "Observation.valueInteger", "whole number");
    expect_issue("{\"resourceType\":\"Patient\",\"multipleBirthInteger\":\"2\"}", "value",
                 "Patient.multipleBirthInteger", "must be a JSON number");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\"}]}", "value",
                 "Patient.name[0].family", "empty string");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"a\\u0001b\"}]}", "value",
                 "Patient.name[0].family", "control character");
    expect_valid("{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"a\\tb\\r\\nc\"}]}");
    expect_issue("{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xff\"}]}", "value",
                 "Patient.name[0].family", "UTF-8");
    expect_issue("{\"resourceType\":\"Patient\",\"active\":\"true\"}", "value", "Patient.active",
                 "boolean");
}

static void test_resource_type(void **state)
{
    (void)state;
    struct run r;
    validate_text(&r, "{\"id\":\"x\"}");
    assert_int_equal(r.rc, JK_EINVAL);
    assert_non_null(r.d.head);
    assert_string_equal(r.d.head->code, "required");
    run_free(&r);
    validate_text(&r, "{\"resourceType\":\"DomainResource\"}");
    assert_int_equal(r.rc, JK_EINVAL);
    assert_string_equal(r.d.head->code, "invalid");
    run_free(&r);
    validate_text(&r, "[{\"resourceType\":\"Patient\"}]");
    assert_int_equal(r.rc, JK_EINVAL);
    assert_string_equal(r.d.head->code, "structure");
    run_free(&r);
    assert_true(jk_fhir_is_resource_type("Patient", 7));
    assert_true(jk_fhir_is_resource_type("Observationx", 11));
    assert_false(jk_fhir_is_resource_type("Observationx", 12));
    assert_false(jk_fhir_is_resource_type("HumanName", 9));
    assert_false(jk_fhir_is_resource_type("Resource", 8));
    assert_false(jk_fhir_is_resource_type("", 0));
}

static void test_model_lookups(void **state)
{
    (void)state;
    const struct jk_fhir_elem *e = jk_fhir_elem_by_path("Patient.contact.name.given", 26);
    assert_non_null(e);
    assert_string_equal(jk_fhir_str(jk_fhir_type_at(e->type)->name), "string");
    assert_int_equal(e->max, JK_FHIR_UNBOUNDED);
    e = jk_fhir_elem_by_path("Questionnaire.item.item.linkId", 30);
    assert_non_null(e);
    assert_int_equal(e->min, 1);
    e = jk_fhir_elem_by_path("Observation.valueQuantity.value", 31);
    assert_non_null(e);
    assert_string_equal(jk_fhir_str(jk_fhir_type_at(e->type)->name), "decimal");
    assert_null(jk_fhir_elem_by_path("Patient.nickname", 16));
    assert_non_null(jk_fhir_elem_by_path("Observation.value[x]", 20));
    /* Every primitive regex compiles with the C library. */
    size_t n_rx = 0;
    for (uint16_t i = 0; i < jk_fhir_n_types(); i++) {
        const struct jk_fhir_type *t = jk_fhir_type_at(i);
        if (!jk_fhir_type_regex_text(t)) continue;
        n_rx++;
        assert_non_null(jk_fhir_type_regex(t));
    }
    assert_true(n_rx >= 10);
}

/* Strings collected from JSON, for comparing the generated DFAs with regexec. */
struct corpus {
    char **s;
    size_t n, cap;
};

static void corpus_add(struct corpus *c, const char *s, size_t n)
{
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 1024;
        c->s = realloc(c->s, c->cap * sizeof *c->s);
        assert_non_null(c->s);
    }
    c->s[c->n] = malloc(n + 1);
    assert_non_null(c->s[c->n]);
    memcpy(c->s[c->n], s, n);
    c->s[c->n][n] = '\0';
    c->n++;
}

/* Adds s and near misses of it: every prefix (which walks the DFA through its states), s
 * padded with a space, and s with its middle character changed. */
static void corpus_add_variants(struct corpus *c, const char *s)
{
    size_t n = strlen(s);
    char buf[256];
    if (n == 0 || n + 2 > sizeof buf) return;
    for (size_t k = n > 40 ? n - 1 : 1; k <= n; k++)
        corpus_add(c, s, k);
    snprintf(buf, sizeof buf, "%s ", s);
    corpus_add(c, buf, n + 1);
    memcpy(buf, s, n + 1);
    buf[n / 2] = buf[n / 2] == '1' ? 'x' : '1';
    corpus_add(c, buf, n);
}

static void corpus_walk(struct corpus *c, struct json_object *o, size_t max)
{
    if (c->n >= max) return;
    switch (json_object_get_type(o)) {
    case json_type_string: corpus_add_variants(c, json_object_get_string(o)); break;
    case json_type_double: corpus_add_variants(c, json_object_get_string(o)); break;
    case json_type_array:
        for (size_t i = 0; i < json_object_array_length(o); i++)
            corpus_walk(c, json_object_array_get_idx(o, i), max);
        break;
    case json_type_object: {
        json_object_object_foreach(o, key, val)
        {
            (void)key;
            corpus_walk(c, val, max);
        }
        break;
    }
    default: break;
    }
}

static struct json_object *parse_file(const char *path);

/* The DFAs the generator compiled from the StructureDefinition regexes accept exactly what
 * regcomp/regexec accept, on tricky strings and on values from the official examples. */
static void test_dfa_matches_posix_regex(void **state)
{
    (void)state;
    static const char *const tricky[] = {
        "",
        " ",
        "a",
        "1",
        "0",
        "-0",
        "01",
        "1.",
        ".5",
        "1.50",
        "1e5",
        "1E-5",
        "1e",
        "+1",
        "-",
        "1.5.0",
        "NaN",
        "2024",
        "0000",
        "0001",
        "1000",
        "2024-02-30",
        "2024-13-01",
        "2024-1-01",
        "2024-02",
        "2024-12-31T23:59:60Z",
        "2024-12-31T24:00:00Z",
        "2024-01-01T10:00:00+14:00",
        "2024-01-01T10:00:00+14:01",
        "2024-01-01T10:00:00.123-03:30",
        "2024-01-01T10:00",
        "10:00:00",
        "10:00",
        "23:59:59.9999",
        "a b",
        "a  b",
        " a",
        "a ",
        "a\tb",
        "a\nb",
        "urn:oid:1.2.3",
        "urn:oid:1.02",
        "urn:oid:3.1",
        "urn:uuid:04121321-4af5-424c-a0e1-ed3aab1c349d",
        "urn:uuid:04121321-4AF5-424c-a0e1-ed3aab1c349d",
        "QUJD",
        "QUJ",
        "QU JD",
        "QUJD\nRUZH",
        "http://x/y",
        "http://x /y",
        "true",
        "false",
        "王小明",
        "\xf0\xa0\x80\x80",
        "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234",
        "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij12345",
    };
    struct corpus c = {0};
    for (size_t i = 0; i < sizeof tricky / sizeof tricky[0]; i++)
        corpus_add_variants(&c, tricky[i]);
    corpus_add(&c, "", 0);
    static const char *const files[] = {"Patient-example.json",       "Observation-example.json",
                                        "Bundle-bundle-example.json", "Binary-example.json",
                                        "ImagingStudy-example.json",  "Questionnaire-f201.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, files[i]);
        struct json_object *o = parse_file(path);
        if (!o) continue;
        corpus_walk(&c, o, 20000);
        json_object_put(o);
    }
    size_t n_checked = 0;
    for (uint16_t k = 0; k < jk_fhir_n_types(); k++) {
        const struct jk_fhir_type *t = jk_fhir_type_at(k);
        const regex_t *rx = jk_fhir_type_regex(t);
        if (!jk_fhir_type_regex_text(t)) continue;
        assert_non_null(rx);
        for (size_t i = 0; i < c.n; i++) {
            int posix = regexec(rx, c.s[i], 0, NULL, 0) == 0;
            int dfa = jk_fhir_type_match(t, c.s[i], strlen(c.s[i]));
            if (posix != dfa)
                print_message("%s: '%s' regexec %d, DFA %d\n", jk_fhir_str(t->name), c.s[i], posix,
                              dfa);
            assert_int_equal(posix, dfa);
            n_checked++;
        }
    }
    for (size_t i = 0; i < c.n; i++)
        free(c.s[i]);
    free(c.s);
    assert_true(n_checked > 1000);
}

/* Several threads validating at once get the same answers as one thread. */
static void *race_worker(void *arg)
{
    long bad = 0;
    (void)arg;
    for (int i = 0; i < 200; i++) {
        struct run r;
        validate_text(&r, chinese_patient);
        if (r.rc != JK_OK) bad++;
        run_free(&r);
        validate_text(&r, "{\"resourceType\":\"Patient\",\"birthDate\":\"1990-13-01\"}");
        if (r.rc != JK_EINVAL || !find_issue(&r, "Patient.birthDate")) bad++;
        run_free(&r);
    }
    return (void *)bad;
}

static void test_concurrent_validation(void **state)
{
    (void)state;
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, race_worker, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *bad;
        assert_int_equal(pthread_join(th[i], &bad), 0);
        assert_int_equal((long)bad, 0);
    }
}

static int is_definition(const char *name)
{
    static const char *const skip[] = {"StructureDefinition-", "ValueSet-", "CodeSystem-",
                                       "SearchParameter-", "ConceptMap-"};
    for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
        if (strncmp(name, skip[i], strlen(skip[i])) == 0) return 1;
    return strcmp(name, "package.json") == 0;
}

static struct json_object *parse_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    struct json_tokener *tok = json_tokener_new_ex(200);
    struct json_object *o = NULL;
    char chunk[65536];
    size_t n;
    enum json_tokener_error err = json_tokener_continue;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        o = json_tokener_parse_ex(tok, chunk, (int)n);
        err = json_tokener_get_error(tok);
        if (err != json_tokener_continue) break;
    }
    fclose(f);
    json_tokener_free(tok);
    return err == json_tokener_success ? o : NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The official R4 examples: at least 95% must validate cleanly; failures are listed. */
static void test_official_examples(void **state)
{
    (void)state;
    DIR *dir = opendir(EXAMPLES_DIR);
    if (!dir) {
        print_message("skipped: %s is missing (run npm ci)\n", EXAMPLES_DIR);
        skip();
    }
    char **names = NULL;
    size_t n_names = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 6 || strcmp(de->d_name + len - 5, ".json") != 0 || is_definition(de->d_name))
            continue;
        if (n_names == cap) {
            cap = cap ? cap * 2 : 1024;
            names = realloc(names, cap * sizeof *names);
            assert_non_null(names);
        }
        names[n_names] = strdup(de->d_name);
        assert_non_null(names[n_names]);
        n_names++;
    }
    closedir(dir);
    qsort(names, n_names, sizeof *names, cmp_str);
    size_t n_ok = 0, n_bad = 0;
    struct jk_arena *arena = jk_arena_new(0);
    for (size_t i = 0; i < n_names; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, names[i]);
        struct json_object *o = parse_file(path);
        assert_non_null(o);
        struct jk_diag d;
        jk_diag_init(&d, arena);
        if (jk_fhir_validate(o, &d) == JK_OK) {
            n_ok++;
        } else {
            n_bad++;
            print_message("example %s: %zu issue(s), first: %s %s: %s\n", names[i], d.n_issues,
                          d.head->code, d.head->expr ? d.head->expr : "-", d.head->msg);
        }
        json_object_put(o);
        jk_arena_reset(arena);
        free(names[i]);
    }
    free(names);
    jk_arena_free(arena);
    print_message("official examples: %zu of %zu valid, %zu with issues\n", n_ok, n_ok + n_bad,
                  n_bad);
    assert_true(n_ok + n_bad > 500);
    assert_true(n_ok * 100 >= (n_ok + n_bad) * 95);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chinese_patient_is_valid),
        cmocka_unit_test(test_unknown_element_is_named_with_its_path),
        cmocka_unit_test(test_bad_birth_date),
        cmocka_unit_test(test_gender_must_be_in_the_required_value_set),
        cmocka_unit_test(test_observation_status_binding),
        cmocka_unit_test(test_missing_required_elements),
        cmocka_unit_test(test_array_versus_single_value),
        cmocka_unit_test(test_choice_types),
        cmocka_unit_test(test_reference_format),
        cmocka_unit_test(test_bad_id),
        cmocka_unit_test(test_extensions),
        cmocka_unit_test(test_contained_resources),
        cmocka_unit_test(test_resources_inside_resources),
        cmocka_unit_test(test_primitive_extension_form),
        cmocka_unit_test(test_decimals_keep_their_text),
        cmocka_unit_test(test_integers_and_strings),
        cmocka_unit_test(test_resource_type),
        cmocka_unit_test(test_model_lookups),
        cmocka_unit_test(test_dfa_matches_posix_regex),
        cmocka_unit_test(test_concurrent_validation),
        cmocka_unit_test(test_official_examples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
