/* test_rx.c - e-prescriptions: the rules and formulary files and their errors; every check
 * of a prescription with its code, severity and message in Chinese and English; the
 * canonical form, stable under key order; the doctor's signature, which fails after any
 * change of a signed field; and a prescription made in one transaction on SQLite and (with
 * JK_TEST_PG_URL) PostgreSQL: refused with nothing written, or written, signed and checked
 * again, and no longer valid once a MedicationRequest is changed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "store/store.h"
#include "svc/rx/rx.h"

#define DAY 86400000LL
/* 2026-11-30T00:00:00Z: 08:00 on Monday 2026-11-30 in Beijing */
#define NOW 1795996800000LL

/* Drugs of rules/formulary.json. */
#define AMLODIPINE   "JK-C08CA01-01"
#define NIFEDIPINE   "JK-C08CA05-01"
#define ENALAPRIL    "JK-C09AA02-01"
#define CAPTOPRIL    "JK-C09AA01-01"
#define METFORMIN    "JK-A10BA02-01"
#define ATORVASTATIN "JK-C10AA05-01"
#define SIMVASTATIN  "JK-C10AA01-01"
#define OMEPRAZOLE   "JK-A02BC01-01"
#define AMOXICILLIN  "JK-J01CA04-01"
#define LEVOFLOXACIN "JK-J01MA12-01"
#define ISONIAZID    "JK-J04AC01-01"
#define FINASTERIDE  "JK-G04CB01-01"
#define ESTRADIOL    "JK-G03CA03-01"
#define MORPHINE     "JK-N02AA01-01"
#define DIAZEPAM     "JK-N05BA01-01"
#define PARACETAMOL  "JK-N02BE01-01"

struct fx {
    char dir[128], url[512];
    jk_store *st;
    struct jk_rx_rules *rules;
};

static jk_keys *keys;

static struct jk_rx_rules *load(const char *rx_path, const char *formulary_path, char *err,
                                size_t errlen)
{
    struct jk_rx_rules *r = NULL;
    jk_rc rc = jk_rx_rules_load(rx_path, formulary_path, &r, err, errlen);
    return rc ? NULL : r;
}

/* file (rules/<name>) with the value at rules/<code>/value replaced by value (JSON text), or
 * with member key of that value's element index set (when key), written into dir. */
static const char *variant(const char *dir, const char *name, const char *code, int index,
                           const char *key, const char *value)
{
    static char path[256];
    char src[128];
    snprintf(src, sizeof src, "rules/%s", name);
    struct json_object *root = json_object_from_file(src), *rules, *rule, *v;
    if (!root) return NULL;
    json_object_object_get_ex(root, "rules", &rules);
    json_object_object_get_ex(rules, code, &rule);
    if (!key) {
        json_object_object_add(rule, "value", json_tokener_parse(value));
    } else {
        json_object_object_get_ex(rule, "value", &v);
        json_object_object_add(json_object_array_get_idx(v, (size_t)index), key,
                               json_tokener_parse(value));
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    json_object_to_file(path, root);
    json_object_put(root);
    return path;
}

/* ---- fixtures ---- */

static int keys_setup(void)
{
    char err[512] = "";
    unsigned char master[JK_MASTER_BYTES];
    memset(master, 0x24, sizeof master);
    if (keys) return 0;
    if (jk_keys_from(master, NULL, &keys) ||
        jk_protect_init(keys, "rules/identity.json", err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static struct fx *fx_new(void)
{
    char err[512];
    const char *tmp = getenv("TMPDIR");
    struct fx *f = calloc(1, sizeof *f);
    if (!f || keys_setup()) return NULL;
    snprintf(f->dir, sizeof f->dir, "%s/jk-test-rx.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) return NULL;
    if (!(f->rules = load(NULL, NULL, err, sizeof err))) {
        fprintf(stderr, "setup: %s\n", err);
        return NULL;
    }
    return f;
}

static int fx_setup(void **state)
{
    char err[256];
    struct fx *f = fx_new();
    if (!f) return -1;
    snprintf(f->url, sizeof f->url, "sqlite:%s/t.db", f->dir);
    if (jk_store_open(f->url, &f->st, err, sizeof err) || jk_store_migrate(f->st, NULL)) return -1;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    char cmd[256];
    jk_store_close(f->st);
    jk_rx_rules_free(f->rules);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd)) return -1;
    free(f);
    return 0;
}

static jk_rc exec_tx(jk_conn *c, void *arg)
{
    return jk_conn_exec(c, arg);
}

static void sql(struct fx *f, const char *text)
{
    assert_int_equal(jk_store_tx(f->st, exec_tx, (void *)text), JK_OK);
}

static long count(struct fx *f, const char *text)
{
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0;
    long n = -1;
    if (!jk_conn_prepare_once(c, text, &s)) {
        if (!jk_stmt_step(s, &has_row) && has_row) n = (long)jk_stmt_col_int(s, 0);
        jk_stmt_finalize(s);
    }
    return n;
}

/* Writes the resource in JSON text (with its id) as a client's update would. */
static void put(struct fx *f, const char *text)
{
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    struct json_object *res = json_tokener_parse(text);
    assert_non_null(res);
    jk_diag_init(&d, a);
    struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE, .res = res, .arena = a, .diag = &d};
    w.type = jk_json_str(res, "resourceType");
    w.id = jk_json_str(res, "id");
    w.now_ms = NOW;
    jk_rc rc = jk_fhir_write_prepare(&w);
    if (!rc) rc = jk_store_tx(f->st, jk_fhir_write_tx, &w);
    if (rc) fail_msg("put %s: %s", text, d.head ? d.head->msg : jk_rc_name(rc));
    json_object_put(res);
    jk_arena_free(a);
}

/* ---- the rules files ---- */

static void test_rules_files(void **state)
{
    struct fx *f = *state;
    char err[512];
    const struct jk_rx_limits *l = jk_rx_limits(f->rules);
    assert_int_equal(l->max_items, 5);
    assert_int_equal(l->max_days, 7);
    assert_int_equal(l->max_days_long_term, 84);
    assert_int_equal(l->validity_days, 3);
    const struct jk_rx_drug *d = jk_rx_drug(f->rules, NULL, AMLODIPINE);
    assert_non_null(d);
    assert_string_equal(d->name, "苯磺酸氨氯地平片");
    assert_int_equal(d->price_fen, 1560);
    assert_true(d->is_chronic);
    assert_int_equal(jk_rx_drug(f->rules, NULL, FINASTERIDE)->sex, 'm');
    assert_int_equal(jk_rx_drug(f->rules, NULL, LEVOFLOXACIN)->age_min_years, 18);
    assert_null(jk_rx_drug(f->rules, NULL, "JK-NOPE-01"));
    /* a community centre prescribes from its own list; a hospital from the whole formulary */
    assert_null(jk_rx_drug(f->rules, "Organization/chc-fz-gulou", FINASTERIDE));
    assert_non_null(jk_rx_drug(f->rules, "chc-fz-gulou", AMLODIPINE));
    assert_non_null(jk_rx_drug(f->rules, "Organization/hosp-fz-1", FINASTERIDE));

    /* valid the issue day and two more: to the end of Wednesday 2026-12-02 in Beijing */
    assert_int_equal(jk_rx_valid_until(f->rules, NOW), NOW - 8 * 3600000LL + 3 * DAY - 1);
    int years, days;
    assert_int_equal(jk_rx_age(f->rules, "2008-11-30", NOW, &years, &days), JK_OK);
    assert_int_equal(years, 18);
    assert_int_equal(jk_rx_age(f->rules, "2008-12-01", NOW, &years, &days), JK_OK);
    assert_int_equal(years, 17);
    assert_int_equal(jk_rx_age(f->rules, "2026-11-29", NOW, &years, &days), JK_OK);
    assert_int_equal(days, 1);
    assert_int_equal(jk_rx_age(f->rules, "2026-12-01", NOW, &years, &days), JK_EINVAL);
    assert_int_equal(jk_rx_age(f->rules, "1990-13", NOW, &years, &days), JK_EINVAL);

    /* each bad value stops the load with the file, the rule's pointer and what is wrong */
    static const struct {
        const char *file, *code;
        int index;
        const char *key, *value, *pointer;
    } bad[] = {
        {"prescription.json", "rx.max_items", 0, NULL, "0", "/rules/rx.max_items/value"},
        {"prescription.json", "rx.validity_days", 0, NULL, "4", "/rules/rx.validity_days/value"},
        {"prescription.json", "rx.max_days_long_term", 0, NULL, "6",
         "/rules/rx.max_days_long_term/value"},
        {"prescription.json", "rx.online_forbidden_classes", 0, NULL, "[\"narcotic\",\"opium\"]",
         "/rules/rx.online_forbidden_classes/value"},
        {"prescription.json", "rx.severity", 0, NULL, "{\"dose.range\":\"refuse\"}",
         "/rules/rx.severity/value"},
        {"formulary.json", "formulary.drugs", 3, "doseMin", "60", "/rules/formulary.drugs/value/3"},
        {"formulary.json", "formulary.drugs", 0, "sex", "\"x\"", "/rules/formulary.drugs/value/0"},
        {"formulary.json", "formulary.drugs", 1, "code", "\"JK-C08CA01-01\"",
         "/rules/formulary.drugs/value"},
        {"formulary.json", "formulary.drugs", 2, "colour", "\"red\"",
         "/rules/formulary.drugs/value/2"},
        {"formulary.json", "formulary.drugs", 2, "priceFen", "1.5",
         "/rules/formulary.drugs/value/2"},
        {"formulary.json", "formulary.institutions", 0, NULL, "{\"chc-x\":[\"JK-NOPE-01\"]}",
         "/rules/formulary.institutions/value/chc-x"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *p =
            variant(f->dir, bad[i].file, bad[i].code, bad[i].index, bad[i].key, bad[i].value);
        int is_rx = !strcmp(bad[i].file, "prescription.json");
        struct jk_rx_rules *r = load(is_rx ? p : NULL, is_rx ? NULL : p, err, sizeof err);
        if (r) fail_msg("%s %s = %s was accepted", bad[i].file, bad[i].code, bad[i].value);
        if (!strstr(err, p) || !strstr(err, bad[i].pointer))
            fail_msg("%s: the error names no file and pointer %s: %s", bad[i].code, bad[i].pointer,
                     err);
        unlink(p);
    }
    /* a missing file, and a rule missing */
    assert_null(load("rules/no-such-file.json", NULL, err, sizeof err));
    struct json_object *root = json_object_from_file("rules/prescription.json"), *rules;
    char path[256];
    json_object_object_get_ex(root, "rules", &rules);
    json_object_object_del(rules, "rx.max_days");
    snprintf(path, sizeof path, "%s/prescription.json", f->dir);
    json_object_to_file(path, root);
    json_object_put(root);
    assert_null(load(path, NULL, err, sizeof err));
    assert_non_null(strstr(err, "rx.max_days"));
    unlink(path);
}

/* ---- the checks ---- */

struct checked {
    struct jk_arena *a;
    struct jk_rx_finding *out;
    size_t n;
};

static const struct jk_rx_patient adult_m = {.age_years = 45, .age_days = 16436, .sex = 'm'};

static void check(const struct fx *f, const char *org, const struct jk_rx_item *items, size_t n,
                  const struct jk_rx_patient *p, const char *long_term, int is_en,
                  struct checked *c)
{
    c->a = jk_arena_new(0);
    assert_int_equal(
        jk_rx_check(f->rules, org, items, n, p, long_term, is_en, c->a, &c->out, &c->n), JK_OK);
}

/* The finding of code, or NULL. */
static const struct jk_rx_finding *found(const struct checked *c, const char *code)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->out[i].code, code)) return &c->out[i];
    return NULL;
}

/* items (one item: code, dose, times a day, days, packages) give exactly one finding: code,
 * of severity sev, on item, whose message holds zh (Chinese) and en (English). */
static void expect_one(const struct fx *f, const struct jk_rx_item *items, size_t n,
                       const struct jk_rx_patient *p, const char *long_term, const char *code,
                       enum jk_rx_severity sev, int item, const char *zh, const char *en)
{
    struct checked c;
    for (int is_en = 0; is_en < 2; is_en++) {
        check(f, "hosp-fz-1", items, n, p, long_term, is_en, &c);
        if (c.n != 1 || strcmp(c.out[0].code, code))
            fail_msg("%s: expected one finding %s, got %zu (%s: %s)", items[0].drug_code, code, c.n,
                     c.n ? c.out[0].code : "", c.n ? c.out[0].message : "");
        assert_int_equal(c.out[0].severity, sev);
        assert_int_equal(c.out[0].item, item);
        const char *want = is_en ? en : zh;
        if (!strstr(c.out[0].message, want) || !strstr(c.out[0].message, code))
            fail_msg("%s: message '%s' lacks '%s' or the rule", code, c.out[0].message, want);
        jk_arena_free(c.a);
    }
}

#define ITEM(code, dose, tpd, days, qty)                                                           \
    {                                                                                              \
        code, dose, tpd, days, qty, "oral"                                                         \
    }

static void test_check_limits(void **state)
{
    struct fx *f = *state;
    struct checked c;
    /* a usual prescription: nothing found */
    struct jk_rx_item ok[] = {ITEM(AMLODIPINE, 5, 1, 7, 1), ITEM(METFORMIN, 500, 2, 7, 1),
                              ITEM(ATORVASTATIN, 20, 1, 7, 1)};
    check(f, "hosp-fz-1", ok, 3, &adult_m, NULL, 0, &c);
    assert_int_equal(c.n, 0);
    jk_arena_free(c.a);

    /* six drugs: rx.max_items, for the whole prescription */
    struct jk_rx_item six[] = {ITEM(AMLODIPINE, 5, 1, 7, 1),    ITEM(METFORMIN, 500, 2, 7, 1),
                               ITEM(ATORVASTATIN, 20, 1, 7, 1), ITEM(OMEPRAZOLE, 20, 1, 7, 1),
                               ITEM(PARACETAMOL, 500, 3, 3, 1), ITEM(ISONIAZID, 300, 1, 7, 1)};
    expect_one(f, six, 6, &adult_m, NULL, "rx.max_items", JK_RX_REFUSE, -1, "不得超过 5 种药品",
               "at most 5 drugs");

    /* 14 days: refused without a reason; a long-term prescription allows a chronic drug */
    struct jk_rx_item d14[] = {ITEM(AMLODIPINE, 5, 1, 14, 1)};
    expect_one(f, d14, 1, &adult_m, NULL, "rx.max_days", JK_RX_REFUSE, 0, "超过普通处方 7 天",
               "more than the 7 days");
    check(f, "hosp-fz-1", d14, 1, &adult_m, "高血压病情稳定", 0, &c);
    assert_int_equal(c.n, 0);
    jk_arena_free(c.a);
    struct jk_rx_item d90[] = {ITEM(AMLODIPINE, 5, 1, 90, 4)};
    expect_one(f, d90, 1, &adult_m, "stable", "rx.max_days_long_term", JK_RX_REFUSE, 0,
               "超过长期处方 84 天", "more than the 84 days");
    struct jk_rx_item d56[] = {ITEM(AMLODIPINE, 5, 1, 56, 2)};
    expect_one(f, d56, 1, &adult_m, "stable", "rx.long_term_review_days", JK_RX_WARN, 0,
               "超过 28 天的长期处方", "more than 28 days");
    /* antimicrobials never long-term (but anti-tuberculosis drugs may be) */
    struct jk_rx_item amox14[] = {ITEM(AMOXICILLIN, 500, 3, 14, 4)};
    expect_one(f, amox14, 1, &adult_m, "chronic", "rx.long_term_excluded_classes", JK_RX_REFUSE, 0,
               "抗菌药物，不得用于长期处方", "antimicrobial drug, never on a long-term");
    struct jk_rx_item inh[] = {ITEM(ISONIAZID, 300, 1, 28, 1)};
    check(f, "hosp-fz-1", inh, 1, &adult_m, "肺结核", 0, &c);
    assert_int_equal(c.n, 0);
    jk_arena_free(c.a);
    /* a drug not for chronic disease keeps the ordinary limit even with a reason */
    struct jk_rx_item ome14[] = {ITEM(OMEPRAZOLE, 20, 1, 14, 1)};
    expect_one(f, ome14, 1, &adult_m, "reflux", "rx.max_days", JK_RX_REFUSE, 0,
               "不是慢性病长期用药", "not a drug for a chronic disease");

    /* never online: narcotics and psychotropics */
    struct jk_rx_item mor[] = {ITEM(MORPHINE, 30, 2, 3, 1)};
    expect_one(f, mor, 1, &adult_m, NULL, "rx.online_forbidden_classes", JK_RX_REFUSE, 0,
               "属于麻醉药品，互联网诊疗不得开具", "narcotic drug, never prescribed online");
    struct jk_rx_item dzp[] = {ITEM(DIAZEPAM, 2.5, 1, 7, 1)};
    expect_one(f, dzp, 1, &adult_m, NULL, "rx.online_forbidden_classes", JK_RX_REFUSE, 0,
               "第二类精神药品", "class II psychotropic");

    /* not in the formulary: unknown, or not on a community centre's list */
    struct jk_rx_item unknown[] = {ITEM("JK-NOPE-01", 1, 1, 1, 1)};
    expect_one(f, unknown, 1, &adult_m, NULL, "formulary", JK_RX_REFUSE, 0,
               "JK-NOPE-01 不在本机构的处方集中", "not in the institution's formulary");
    struct jk_rx_item fin[] = {ITEM(FINASTERIDE, 5, 1, 7, 1)};
    check(f, "chc-fz-gulou", fin, 1, &adult_m, NULL, 0, &c);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.out[0].code, "formulary");
    jk_arena_free(c.a);

    /* bad input is the caller's error, not a finding */
    struct jk_rx_item zero[] = {ITEM(AMLODIPINE, 0, 1, 7, 1)};
    struct jk_rx_finding *out;
    size_t n;
    struct jk_arena *a = jk_arena_new(0);
    assert_int_equal(jk_rx_check(f->rules, NULL, zero, 1, &adult_m, NULL, 0, a, &out, &n),
                     JK_EINVAL);
    assert_int_equal(jk_rx_check(f->rules, NULL, ok, 0, &adult_m, NULL, 0, a, &out, &n), JK_EINVAL);
    jk_arena_free(a);
}

static void test_check_clinical(void **state)
{
    struct fx *f = *state;
    struct checked c;
    /* doses: per administration and per day */
    struct jk_rx_item big[] = {ITEM(AMLODIPINE, 20, 1, 7, 1)};
    expect_one(f, big, 1, &adult_m, NULL, "dose.range", JK_RX_REFUSE, 0, "单次剂量 20mg",
               "a dose of 20 mg");
    struct jk_rx_item daily[] = {ITEM(METFORMIN, 1000, 3, 7, 1)};
    expect_one(f, daily, 1, &adult_m, NULL, "dose.daily", JK_RX_REFUSE, 0,
               "每日 3000mg（1000mg × 3 次）超过每日最大量 2000mg", "daily maximum of 2000 mg");
    /* more packages than the days need: 7 days of 5 mg need one box of 28 */
    struct jk_rx_item many[] = {ITEM(AMLODIPINE, 5, 1, 7, 3)};
    expect_one(f, many, 1, &adult_m, NULL, "quantity", JK_RX_REFUSE, 0, "开具 3 盒，超过 7 天",
               "3 packages of amlodipine");

    /* duplicate therapy: two ACE inhibitors; a statin the patient takes; a renewal is not */
    struct jk_rx_item acei[] = {ITEM(ENALAPRIL, 10, 1, 7, 1), ITEM(CAPTOPRIL, 25, 2, 7, 1)};
    expect_one(f, acei, 2, &adult_m, NULL, "duplicate", JK_RX_WARN, 1, "与第 1 项 马来酸依那普利片",
               "duplicate therapy");
    const char *const takes[] = {SIMVASTATIN, AMLODIPINE};
    struct jk_rx_patient on_drugs = adult_m;
    on_drugs.active_drugs = takes;
    on_drugs.n_active = 2;
    struct jk_rx_item ator[] = {ITEM(ATORVASTATIN, 20, 1, 7, 1)};
    expect_one(f, ator, 1, &on_drugs, NULL, "duplicate", JK_RX_WARN, 0, "患者正在使用的 辛伐他汀片",
               "which the patient takes");
    struct jk_rx_item renew[] = {ITEM(AMLODIPINE, 5, 1, 7, 1)};
    check(f, "hosp-fz-1", renew, 1, &on_drugs, NULL, 0, &c);
    assert_int_equal(c.n, 0);
    jk_arena_free(c.a);
    struct jk_rx_item ccb[] = {ITEM(NIFEDIPINE, 30, 1, 7, 1)};
    check(f, "hosp-fz-1", ccb, 1, &on_drugs, NULL, 0, &c);
    assert_non_null(found(&c, "duplicate"));
    jk_arena_free(c.a);

    /* a recorded allergy to the drug's substance */
    const char *const pen[] = {"penicillin"};
    struct jk_rx_patient allergic = adult_m;
    allergic.allergies = pen;
    allergic.n_allergies = 1;
    struct jk_rx_item amox[] = {ITEM(AMOXICILLIN, 500, 3, 5, 2)};
    expect_one(f, amox, 1, &allergic, NULL, "allergy", JK_RX_REFUSE, 0,
               "患者有 penicillin 过敏记录", "recorded allergy to penicillin");

    /* age and sex */
    struct jk_rx_patient teen = {.age_years = 15, .sex = 'f'}, unknown = {.age_years = -1};
    struct jk_rx_item levo[] = {ITEM(LEVOFLOXACIN, 500, 1, 5, 2)};
    expect_one(f, levo, 1, &teen, NULL, "age", JK_RX_REFUSE, 0, "限 18 岁及以上使用，患者 15 岁",
               "18 years or more; the patient is 15");
    check(f, "hosp-fz-1", levo, 1, &unknown, NULL, 0, &c);
    assert_int_equal(c.n, 0); /* no birth date: nothing to check against */
    jk_arena_free(c.a);
    struct jk_rx_patient woman = {.age_years = 60, .sex = 'f'};
    struct jk_rx_item fin[] = {ITEM(FINASTERIDE, 5, 1, 7, 1)};
    expect_one(f, fin, 1, &woman, NULL, "sex", JK_RX_REFUSE, 0, "限男性患者使用",
               "for male patients only");
    struct jk_rx_item e2[] = {ITEM(ESTRADIOL, 1, 1, 7, 1)};
    expect_one(f, e2, 1, &adult_m, NULL, "sex", JK_RX_REFUSE, 0, "限女性患者使用",
               "for female patients only");

    /* every finding of one prescription is listed, not only the first */
    struct jk_rx_item bad[] = {ITEM(MORPHINE, 30, 1, 3, 1), ITEM(AMLODIPINE, 20, 1, 14, 1),
                               ITEM(FINASTERIDE, 5, 1, 7, 1)};
    check(f, "hosp-fz-1", bad, 3, &woman, NULL, 0, &c);
    assert_non_null(found(&c, "rx.online_forbidden_classes"));
    assert_non_null(found(&c, "rx.max_days"));
    assert_non_null(found(&c, "dose.range"));
    assert_non_null(found(&c, "sex"));
    jk_arena_free(c.a);
}

static void test_check_severity_rule(void **state)
{
    struct fx *f = *state;
    char err[512];
    const char *p = variant(f->dir, "prescription.json", "rx.severity", 0, NULL,
                            "{\"dose.range\":\"warn\",\"dose.daily\":\"refuse\",\"quantity\":"
                            "\"refuse\",\"duplicate\":\"refuse\",\"allergy\":\"refuse\",\"age\":"
                            "\"refuse\",\"sex\":\"refuse\"}");
    struct jk_rx_rules *r = load(p, NULL, err, sizeof err);
    assert_non_null(r);
    struct jk_rx_item acei[] = {ITEM(ENALAPRIL, 10, 1, 7, 1), ITEM(CAPTOPRIL, 25, 2, 7, 1)};
    struct jk_rx_item big[] = {ITEM(AMLODIPINE, 20, 1, 7, 1)};
    struct jk_rx_finding *out;
    size_t n;
    struct jk_arena *a = jk_arena_new(0);
    assert_int_equal(jk_rx_check(r, NULL, acei, 2, &adult_m, NULL, 0, a, &out, &n), JK_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].severity, JK_RX_REFUSE);
    assert_int_equal(jk_rx_check(r, NULL, big, 1, &adult_m, NULL, 0, a, &out, &n), JK_OK);
    assert_int_equal(out[0].severity, JK_RX_WARN);
    jk_arena_free(a);
    jk_rx_rules_free(r);
    unlink(p);
}

/* ---- canonical form and signatures ---- */

static const char mr_a[] =
    "{\"resourceType\":\"MedicationRequest\",\"id\":\"x-1\",\"meta\":{\"versionId\":\"3\"},"
    "\"status\":\"draft\",\"intent\":\"order\",\"subject\":{\"reference\":\"Patient/p1\"},"
    "\"requester\":{\"reference\":\"PractitionerRole/prac-1-role\"},"
    "\"medicationCodeableConcept\":{\"coding\":[{\"system\":\"https://jiankang.example/fhir/sid/"
    "drug-code\",\"code\":\"JK-C08CA01-01\",\"display\":\"苯磺酸氨氯地平片\"}]},"
    "\"authoredOn\":\"2026-11-30T00:00:00Z\",\"groupIdentifier\":{\"value\":\"x\"},"
    "\"dosageInstruction\":[{\"doseAndRate\":[{\"doseQuantity\":{\"value\":5.0,\"unit\":\"mg\"}}],"
    "\"timing\":{\"repeat\":{\"frequency\":1,\"period\":1,\"periodUnit\":\"d\"}},"
    "\"text\":\"a \\\"quoted\\\" / text\"}],"
    "\"dispenseRequest\":{\"quantity\":{\"value\":1},\"expectedSupplyDuration\":{\"value\":7}}}";

/* mr_a with its keys in another order, other id, meta, text and status, 5 for 5.0. */
static const char mr_b[] =
    "{\"dispenseRequest\":{\"expectedSupplyDuration\":{\"value\":7},\"quantity\":{\"value\":1}},"
    "\"dosageInstruction\":[{\"text\":\"a \\\"quoted\\\" \\/ text\",\"timing\":{\"repeat\":{"
    "\"periodUnit\":\"d\",\"period\":1,\"frequency\":1}},\"doseAndRate\":[{\"doseQuantity\":{"
    "\"unit\":\"mg\",\"value\":5}}]}],\"groupIdentifier\":{\"value\":\"x\"},"
    "\"authoredOn\":\"2026-11-30T00:00:00Z\",\"medicationCodeableConcept\":{\"coding\":[{"
    "\"display\":\"苯磺酸氨氯地平片\",\"code\":\"JK-C08CA01-01\",\"system\":\"https://"
    "jiankang.example/fhir/sid/drug-code\"}]},\"requester\":{\"reference\":\"PractitionerRole/"
    "prac-1-role\"},\"subject\":{\"reference\":\"Patient/p1\"},\"intent\":\"order\","
    "\"status\":\"active\",\"text\":{\"status\":\"generated\"},\"id\":\"y\","
    "\"resourceType\":\"MedicationRequest\"}";

static const char *canonical_of(struct jk_arena *a, const char *const *texts, size_t n)
{
    struct json_object *reqs[4] = {0};
    const char *out = NULL;
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        reqs[i] = json_tokener_parse(texts[i]);
    assert_int_equal(jk_rx_canonical(reqs, n, a, &out, &len), JK_OK);
    assert_int_equal(strlen(out), len);
    for (size_t i = 0; i < n; i++)
        json_object_put(reqs[i]);
    return out;
}

static void test_canonical(void **state)
{
    (void)state;
    struct jk_arena *a = jk_arena_new(0);
    const char *ca = canonical_of(a, (const char *[]){mr_a}, 1);
    const char *cb = canonical_of(a, (const char *[]){mr_b}, 1);
    assert_string_equal(ca, cb);
    assert_null(strstr(ca, "\"id\""));
    assert_null(strstr(ca, "versionId"));
    assert_null(strstr(ca, "\"status\""));
    assert_null(strchr(ca, '\n'));
    assert_null(strstr(ca, ": "));
    /* sorted keys at every depth, and the shortest form of each number */
    assert_true(strstr(ca, "\"authoredOn\"") < strstr(ca, "\"dispenseRequest\""));
    assert_non_null(strstr(ca, "{\"frequency\":1,\"period\":1,\"periodUnit\":\"d\"}"));
    assert_non_null(strstr(ca, "\"value\":5}"));
    assert_non_null(strstr(ca, "a \\\"quoted\\\" / text"));
    /* two requests: one line each, in item order */
    const char *two = canonical_of(a, (const char *[]){mr_a, mr_b}, 2);
    assert_int_equal(strlen(two), 2 * strlen(ca) + 1);
    assert_int_equal(two[strlen(ca)], '\n');
    jk_arena_free(a);
}

struct sign_call {
    const char *practitioner, *text;
    struct jk_arena *a;
    const char *digest, *sig;
};

static jk_rc sign_tx(jk_conn *c, void *arg)
{
    struct sign_call *x = arg;
    return jk_rx_sign(c, x->practitioner, x->text, strlen(x->text), x->a, &x->digest, &x->sig);
}

static jk_rc verify(struct fx *f, const char *practitioner, const char *text, const char *sig)
{
    return jk_rx_verify(jk_store_conn(f->st), practitioner, text, strlen(text), sig);
}

/* Sets the string at a path of nested keys (array elements as "0") of o to v. */
static void set_path(struct json_object *o, const char *const *path, struct json_object *v)
{
    for (; path[1]; path++)
        o = json_object_is_type(o, json_type_array)
                ? json_object_array_get_idx(o, (size_t)strtol(path[0], NULL, 10))
                : json_object_object_get(o, path[0]);
    json_object_object_add(o, path[0], v);
}

static void test_sign_verify(void **state)
{
    struct fx *f = *state;
    struct jk_arena *a = jk_arena_new(0);
    const char *text = canonical_of(a, (const char *[]){mr_a}, 1);
    struct sign_call x = {"PractitionerRole/prac-1-role", text, a, NULL, NULL};
    assert_int_equal(jk_store_tx(f->st, sign_tx, &x), JK_OK);
    assert_int_equal(strlen(x.digest), 64);
    assert_int_equal(verify(f, x.practitioner, text, x.sig), JK_OK);
    /* the key is made once, and its private half is not stored in clear */
    assert_int_equal(count(f, "SELECT count(*) FROM rx_signer"), 1);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_signer WHERE private_sealed LIKE "
                              "'%PRIVATE KEY%' OR public_pem NOT LIKE '%PUBLIC KEY%'"),
                     0);
    struct sign_call y = {x.practitioner, text, a, NULL, NULL};
    assert_int_equal(jk_store_tx(f->st, sign_tx, &y), JK_OK);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_signer"), 1);
    assert_int_equal(verify(f, x.practitioner, text, y.sig), JK_OK);
    /* another doctor's key, no key, a changed or malformed signature */
    struct sign_call z = {"PractitionerRole/prac-2-role", text, a, NULL, NULL};
    assert_int_equal(jk_store_tx(f->st, sign_tx, &z), JK_OK);
    assert_int_equal(verify(f, "PractitionerRole/prac-2-role", text, x.sig), JK_EINVAL);
    assert_int_equal(verify(f, "PractitionerRole/nobody", text, x.sig), JK_ENOTFOUND);
    char *bent = jk_arena_strdup(a, x.sig);
    bent[10] = bent[10] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(f, x.practitioner, text, bent), JK_EINVAL);
    assert_int_equal(verify(f, x.practitioner, text, "not base64!"), JK_EINVAL);
    /* a sealed key moved to another doctor's row does not open */
    sql(f, "UPDATE rx_signer SET private_sealed = (SELECT private_sealed FROM rx_signer WHERE "
           "practitioner = 'PractitionerRole/prac-1-role') WHERE practitioner = "
           "'PractitionerRole/prac-2-role'");
    assert_int_not_equal(jk_store_tx(f->st, sign_tx, &z), JK_OK);

    /* any change of a signed field breaks the signature; the unsigned ones do not */
    static const char *const changes[][6] = {
        {"dosageInstruction", "0", "doseAndRate", "0", "doseQuantity", "value"},
        {"dispenseRequest", "quantity", "value"},
        {"dispenseRequest", "expectedSupplyDuration", "value"},
        {"subject", "reference"},
        {"requester", "reference"},
        {"medicationCodeableConcept", "coding", "0", "code"},
        {"authoredOn"},
        {"groupIdentifier", "value"},
        {"intent"},
    };
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        struct json_object *o = json_tokener_parse(mr_a);
        const char *changed;
        size_t len;
        const char *const *path = changes[i];
        int depth = 0;
        while (depth < 6 && path[depth])
            depth++;
        const char *p[7] = {0};
        memcpy(p, path, (size_t)depth * sizeof *p);
        set_path(o, p, json_object_new_string("10"));
        assert_int_equal(jk_rx_canonical(&o, 1, a, &changed, &len), JK_OK);
        if (verify(f, x.practitioner, changed, x.sig) != JK_EINVAL)
            fail_msg("a change of %s kept the signature valid", path[0]);
        json_object_put(o);
    }
    struct json_object *o = json_tokener_parse(mr_a);
    const char *same;
    size_t len;
    json_object_object_add(o, "status", json_object_new_string("active"));
    json_object_object_add(o, "meta", json_object_new_object());
    assert_int_equal(jk_rx_canonical(&o, 1, a, &same, &len), JK_OK);
    assert_int_equal(verify(f, x.practitioner, same, x.sig), JK_OK);
    json_object_put(o);
    jk_arena_free(a);
}

/* ---- a prescription made and checked again ---- */

static void patient_and_visit(struct fx *f)
{
    put(f, "{\"resourceType\":\"Patient\",\"id\":\"rx-pat-1\",\"gender\":\"female\","
           "\"birthDate\":\"1961-05-20\"}");
    put(f, "{\"resourceType\":\"AllergyIntolerance\",\"id\":\"rx-alg-1\",\"clinicalStatus\":{"
           "\"coding\":[{\"system\":\"http://terminology.hl7.org/CodeSystem/"
           "allergyintolerance-clinical\",\"code\":\"active\"}]},\"code\":{\"coding\":[{"
           "\"system\":\"https://jiankang.example/fhir/CodeSystem/allergen\",\"code\":"
           "\"penicillin\"}]},\"patient\":{\"reference\":\"Patient/rx-pat-1\"}}");
    put(f, "{\"resourceType\":\"AllergyIntolerance\",\"id\":\"rx-alg-2\",\"clinicalStatus\":{"
           "\"coding\":[{\"code\":\"resolved\"}]},\"code\":{\"coding\":[{\"code\":\"aspirin\"}]},"
           "\"patient\":{\"reference\":\"Patient/rx-pat-1\"}}");
    put(f, "{\"resourceType\":\"MedicationRequest\",\"id\":\"rx-old-1\",\"status\":\"active\","
           "\"intent\":\"order\",\"medicationCodeableConcept\":{\"coding\":[{\"system\":"
           "\"https://jiankang.example/fhir/sid/drug-code\",\"code\":\"JK-C10AA01-01\"}]},"
           "\"subject\":{\"reference\":\"Patient/rx-pat-1\"}}");
    sql(f, "INSERT INTO ih_visit (id, patient_id, person, account_id, org, doctor, "
           "condition_code, basis, status, started_ms) VALUES ('rx-visit-1', 'rx-pat-1', "
           "'P-rx-1', 1, 'hosp-fz-1', 'prac-1-role', 'I10', "
           "'Condition/c-1', 'open', 0)");
    sql(f, "INSERT INTO ih_visit (id, patient_id, person, account_id, org, doctor, "
           "condition_code, basis, status, started_ms) VALUES ('rx-visit-2', 'rx-pat-1', "
           "'P-rx-1', 1, 'hosp-fz-1', 'PractitionerRole/prac-1-role', 'I10', "
           "'Condition/c-1', 'finished', 0)");
}

struct create_call {
    struct jk_rx_new x;
    struct jk_rx_visit v;
    struct jk_diag d;
};

static jk_rc create_tx(jk_conn *c, void *arg)
{
    struct create_call *k = arg;
    return jk_rx_create(c, &k->x);
}

static jk_rc create(struct fx *f, struct create_call *k, const char *visit,
                    const struct jk_rx_item *items, size_t n, const char *long_term)
{
    struct jk_arena *a = jk_arena_new(0);
    memset(k, 0, sizeof *k);
    jk_diag_init(&k->d, a);
    assert_int_equal(jk_rx_visit_get(jk_store_conn(f->st), a, visit, &k->v), JK_OK);
    k->x = (struct jk_rx_new){.rules = f->rules,
                              .visit = &k->v,
                              .items = items,
                              .n = n,
                              .long_term = long_term,
                              .now_ms = NOW,
                              .a = a,
                              .d = &k->d};
    return jk_store_tx(f->st, create_tx, k);
}

static void test_create_and_verify(void **state)
{
    struct fx *f = *state;
    struct create_call k;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_rx_patient p;
    patient_and_visit(f);

    /* the patient's facts as the checks see them */
    assert_int_equal(jk_rx_patient_facts(jk_store_conn(f->st), f->rules, a, "rx-pat-1", NOW, &p),
                     JK_OK);
    assert_int_equal(p.age_years, 65);
    assert_int_equal(p.sex, 'f');
    assert_int_equal(p.n_allergies, 1); /* the resolved aspirin allergy does not count */
    assert_string_equal(p.allergies[0], "penicillin");
    assert_int_equal(p.n_active, 1);
    assert_string_equal(p.active_drugs[0], SIMVASTATIN);

    /* refused: every refusal as an issue with its code; nothing written */
    struct jk_rx_item bad[] = {ITEM(AMOXICILLIN, 500, 3, 5, 2), ITEM(FINASTERIDE, 5, 1, 7, 1)};
    assert_int_equal(create(f, &k, "rx-visit-1", bad, 2, NULL), JK_ERULE);
    assert_int_equal(k.d.n_issues, 2);
    assert_string_equal(k.d.head->detail_code, "allergy");
    assert_string_equal(k.d.head->detail_system, JK_RX_CHECK_SYSTEM);
    assert_string_equal(k.d.head->expr, "items[0]");
    assert_string_equal(k.d.tail->detail_code, "sex");
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription"), 0);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type = "
                              "'MedicationRequest'"),
                     1);
    jk_arena_free(k.x.a);
    /* a visit that has ended */
    struct jk_rx_item ok[] = {ITEM(AMLODIPINE, 5, 1, 7, 1), ITEM(ATORVASTATIN, 20, 1, 7, 1)};
    assert_int_equal(create(f, &k, "rx-visit-2", ok, 2, NULL), JK_ECONFLICT);
    jk_arena_free(k.x.a);

    /* made: two MedicationRequests, signed, a Provenance, a pending row with the warning */
    assert_int_equal(create(f, &k, "rx-visit-1", ok, 2, NULL), JK_OK);
    const char *id = jk_arena_strdup(a, k.x.id);
    assert_string_equal(k.x.request_ids[1], jk_arena_printf(a, "%s-2", id));
    assert_int_equal(k.x.amount_fen, 1560 + 980);
    assert_int_equal(k.x.n_findings, 1); /* atorvastatin while on simvastatin */
    assert_string_equal(k.x.findings[0].code, "duplicate");
    jk_arena_free(k.x.a);
    char q[512];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM rx_prescription WHERE id = '%s' AND status = 'pending' AND "
             "amount_fen = 2540 AND visit_id = 'rx-visit-1' AND doctor = "
             "'PractitionerRole/prac-1-role' AND warnings LIKE '%%duplicate%%' AND warnings LIKE "
             "'%%messageEn%%' AND valid_until_ms = %lld",
             id, (long long)jk_rx_valid_until(f->rules, NOW));
    assert_int_equal(count(f, q), 1);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM resource_version WHERE type = 'MedicationRequest' AND id LIKE "
             "'%s-%%' AND body LIKE '%%\"status\":\"draft\"%%' AND body LIKE '%%%s%%'",
             id, JK_RX_SYSTEM);
    assert_int_equal(count(f, q), 2);
    snprintf(q, sizeof q,
             "SELECT count(*) FROM resource_version WHERE type = 'Provenance' AND id = '%s' AND "
             "body LIKE '%%application/sm2-signature%%'",
             id);
    assert_int_equal(count(f, q), 1);

    /* checked again: valid; still valid after review changes the status */
    int is_valid = 0;
    const char *why = NULL, *patient = NULL;
    jk_conn *c = jk_store_conn(f->st);
    assert_int_equal(jk_rx_verify_prescription(c, a, id, &is_valid, &why, &patient), JK_OK);
    assert_true(is_valid);
    assert_string_equal(patient, "rx-pat-1");
    assert_int_equal(jk_rx_verify_prescription(c, a, "nope", &is_valid, &why, &patient),
                     JK_ENOTFOUND);
    struct jk_res r;
    assert_int_equal(jk_res_read(c, a, "MedicationRequest", jk_arena_printf(a, "%s-1", id), &r),
                     JK_OK);
    struct json_object *mr = json_tokener_parse(r.body);
    json_object_object_add(mr, "status", json_object_new_string("active"));
    put(f, json_object_to_json_string(mr));
    assert_int_equal(jk_rx_verify_prescription(c, a, id, &is_valid, &why, &patient), JK_OK);
    assert_true(is_valid);
    /* a new dose written over the signed one: no longer valid, and why */
    struct json_object *dose = json_object_object_get(
        json_object_object_get(
            json_object_array_get_idx(
                json_object_object_get(
                    json_object_array_get_idx(json_object_object_get(mr, "dosageInstruction"), 0),
                    "doseAndRate"),
                0),
            "doseQuantity"),
        "value");
    json_object_set_int(dose, 10);
    put(f, json_object_to_json_string(mr));
    json_object_put(mr);
    assert_int_equal(jk_rx_verify_prescription(c, a, id, &is_valid, &why, &patient), JK_OK);
    assert_false(is_valid);
    assert_non_null(strstr(why, "changed after signing"));
    jk_arena_free(a);
}

static int pg_setup(void **state)
{
    const char *url = getenv("JK_TEST_PG_URL");
    char err[256];
    jk_store *admin;
    *state = NULL;
    if (!url) return 0;
    struct fx *f = fx_new();
    if (!f || jk_store_open(url, &admin, err, sizeof err)) return -1;
    jk_rc rc = jk_store_tx(admin, exec_tx,
                           "DROP SCHEMA IF EXISTS jk_test_rx CASCADE; CREATE SCHEMA jk_test_rx");
    jk_store_close(admin);
    snprintf(f->url, sizeof f->url, "%s%soptions=-csearch_path%%3Djk_test_rx", url,
             strchr(url, '?') ? "&" : "?");
    if (rc || jk_store_open(f->url, &f->st, err, sizeof err) || jk_store_migrate(f->st, NULL))
        return -1;
    *state = f;
    return 0;
}

static int pg_teardown(void **state)
{
    return *state ? fx_teardown(state) : 0;
}

static void test_pg(void **state)
{
    if (!*state) skip();
    test_sign_verify(state);
    test_create_and_verify(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_files),       cmocka_unit_test(test_check_limits),
        cmocka_unit_test(test_check_clinical),    cmocka_unit_test(test_check_severity_rule),
        cmocka_unit_test(test_canonical),         cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_create_and_verify),
    };
    const struct CMUnitTest pg[] = {cmocka_unit_test(test_pg)};
    int failed = cmocka_run_group_tests_name("rx (SQLite)", tests, fx_setup, fx_teardown);
    failed += cmocka_run_group_tests_name("rx (PostgreSQL)", pg, pg_setup, pg_teardown);
    jk_keys_free(keys);
    return failed;
}
