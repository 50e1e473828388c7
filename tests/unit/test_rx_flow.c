/* test_rx_flow.c - a prescription after its signature, with the clock passed in: the rules file;
 * the redemption code; review (approve, reject with coded reasons, two pharmacists cannot both
 * decide); nothing dispensed before approval; redemption at the chosen pharmacy only;
 * dispensing once, also when many threads race for it on SQLite and (with JK_TEST_PG_URL) on
 * PostgreSQL; expiry at redemption and dispensing and by the sweep; delivery orders step by
 * step with the address sealed at rest; cancellation; who may do what; the review queue's
 * order, pages and totals; the summary the lists show. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "fhir/rest.h"
#include "store/resource.h"
#include "store/store.h"
#include "svc/rx/flow.h"

#define MIN  60000LL
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)

/* 2026-11-30T02:00:00Z is 10:00 local (UTC+8) on Monday 2026-11-30. */
#define T0 1796004000000LL
/* the end of local 2026-12-02 (validity 3 days counting the day of issue): 12-02T16:00Z */
#define T0_UNTIL 1796227200000LL

struct fx {
    char dir[64], url[512];
    jk_store *st;
    struct jk_rx_flow_rules *rules;
    struct jk_rx_flow_keys keys;
};

static jk_keys *keys;

static int keys_setup(void)
{
    char err[512] = "";
    unsigned char master[JK_MASTER_BYTES];
    memset(master, 0x42, sizeof master);
    if (keys) return 0;
    if (jk_keys_from(master, NULL, &keys) ||
        jk_protect_init(keys, "rules/identity.json", err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static struct jk_rx_flow_rules *load_rules(const char *path)
{
    char err[512];
    struct jk_rx_flow_rules *r = NULL;
    if (jk_rx_flow_rules_load(path, "/nonexistent/prescription.json", &r, err, sizeof err))
        fprintf(stderr, "%s\n", err);
    return r;
}

/* rules/dispensing.json with one rule's value replaced (JSON text), loaded from dir. */
static struct jk_rx_flow_rules *rules_with(const char *dir, const char *code, const char *value,
                                           char *err, size_t errlen)
{
    char path[128];
    struct json_object *root = json_object_from_file("rules/dispensing.json"), *rules, *rule;
    struct jk_rx_flow_rules *r = NULL;
    if (!root) return NULL;
    json_object_object_get_ex(root, "rules", &rules);
    json_object_object_get_ex(rules, code, &rule);
    json_object_object_add(rule, "value", json_tokener_parse(value));
    snprintf(path, sizeof path, "%s/dispensing.json", dir);
    json_object_to_file(path, root);
    json_object_put(root);
    if (jk_rx_flow_rules_load(path, "/nonexistent/prescription.json", &r, err, errlen)) r = NULL;
    unlink(path);
    return r;
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

/* The text of the first column of the first row (a copy in buf). */
static const char *text_of(struct fx *f, const char *query, char *buf, size_t cap)
{
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0;
    buf[0] = '\0';
    if (!jk_conn_prepare_once(c, query, &s)) {
        size_t n = 0;
        if (!jk_stmt_step(s, &has_row) && has_row) {
            const char *t = jk_stmt_col_text(s, 0, &n);
            snprintf(buf, cap, "%.*s", (int)n, t ? t : "");
        }
        jk_stmt_finalize(s);
    }
    return buf;
}

/* ---- resources written as the prescribing service writes them ---- */

struct put {
    const char *type, *id, *json;
};

static jk_rc put_tx(jk_conn *c, void *arg)
{
    struct put *p = arg;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    struct json_object *o = json_tokener_parse(p->json);
    struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE,
                              .is_owner = 1,
                              .type = p->type,
                              .id = p->id,
                              .res = o,
                              .arena = a,
                              .diag = &d,
                              .now_ms = T0};
    jk_rc rc = o ? jk_fhir_write_prepare(&w) : JK_EINVAL;
    if (!rc) rc = jk_fhir_write_tx(c, &w);
    json_object_put(o);
    jk_arena_free(a);
    return rc;
}

static void put(struct fx *f, const char *type, const char *id, const char *json)
{
    struct put p = {type, id, json};
    assert_int_equal(jk_store_tx(f->st, put_tx, &p), JK_OK);
}

/* A pending prescription id of org (by doctor dr-1 for patient pat-1 in visit v-<id>) created
 * at created_ms, with n_items draft MedicationRequests. */
static void prescription(struct fx *f, const char *id, const char *org, int64_t created_ms,
                         int n_items)
{
    char text[2048];
    snprintf(text, sizeof text,
             "INSERT INTO rx_prescription (id, visit_id, patient_id, person, doctor, org, status,"
             " created_ms, digest, signature, warnings, amount_fen) VALUES ('%s', 'v-%s', 'pat-1',"
             " 'P-1', 'dr-1-role', '%s', 'pending', %lld, 'd', 's', '[{\"code\":\"duplicate\"}]',"
             " 1250)",
             id, id, org, (long long)created_ms);
    sql(f, text);
    for (int i = 0; i < n_items; i++) {
        char mr_id[80];
        snprintf(mr_id, sizeof mr_id, "%s-mr-%d", id, i);
        snprintf(text, sizeof text,
                 "{\"resourceType\":\"MedicationRequest\",\"status\":\"draft\",\"intent\":"
                 "\"order\",\"groupIdentifier\":{\"system\":\"" JK_RX_GROUP_SYSTEM
                 "\",\"value\":\"%s\"},\"medicationCodeableConcept\":{\"coding\":[{\"system\":"
                 "\"https://jiankang.example/fhir/sid/drug-code\",\"code\":\"D%d\",\"display\":"
                 "\"药%d\"}]},\"subject\":{\"reference\":\"Patient/pat-1\"},\"encounter\":{"
                 "\"reference\":\"Encounter/v-%s\"},\"requester\":{\"reference\":"
                 "\"PractitionerRole/dr-1-role\",\"display\":\"李医生\"},\"dosageInstruction\":[{"
                 "\"timing\":{\"repeat\":{\"frequency\":3,\"period\":1,\"periodUnit\":\"d\"}},"
                 "\"doseAndRate\":[{\"doseQuantity\":{\"value\":10,\"unit\":\"mg\"}}]}],"
                 "\"dispenseRequest\":{\"quantity\":{\"value\":2},\"expectedSupplyDuration\":{"
                 "\"value\":7,\"unit\":\"d\"}}}",
                 id, i, i, id);
        put(f, "MedicationRequest", mr_id, text);
    }
}

/* ---- calls in a transaction ---- */

enum op { REVIEW, CHOOSE, REDEEM, DISPENSE, DELIVER, CANCEL, SWEEP };

struct call {
    struct fx *f;
    enum op op;
    int64_t now_ms;
    const char *id, *pharmacy, *mode, *address, *code, *status, *carrier, *waybill;
    struct jk_rx_decision dec;
    struct jk_rx_presc out;
    struct jk_rx_delivery dout;
    char the_code[JK_RX_CODE_DIGITS + 1];
    struct jk_arena *a;
    struct jk_diag d;
    size_t n_done;
};

static jk_rc call_tx(jk_conn *c, void *arg)
{
    struct call *x = arg;
    struct jk_rx_call k = {x->a, &x->d, x->now_ms, x->f->rules, &x->f->keys};
    jk_diag_init(&x->d, x->a); /* a retried transaction starts over */
    switch (x->op) {
    case REVIEW: return jk_rx_flow_review(c, &k, x->id, &x->dec, &x->out, x->the_code);
    case CHOOSE: return jk_rx_flow_choose(c, &k, x->id, x->pharmacy, x->mode, x->address, &x->out);
    case REDEEM: return jk_rx_flow_redeem(c, &k, x->code, x->pharmacy, &x->out);
    case DISPENSE:
        return jk_rx_flow_dispense(c, &k, x->id, x->pharmacy, "PractitionerRole/ph-1-role",
                                   &x->out);
    case DELIVER:
        return jk_rx_flow_deliver(c, &k, x->id, x->pharmacy, x->status, x->carrier, x->waybill,
                                  &x->dout);
    case CANCEL: return jk_rx_flow_cancel(c, &k, x->id, "test", &x->out);
    default: return jk_rx_flow_sweep(c, &k, 100, &x->n_done);
    }
}

static jk_rc run(struct call *x, struct fx *f, enum op op, int64_t now_ms)
{
    x->f = f;
    x->op = op;
    x->now_ms = now_ms;
    x->a = jk_arena_new(0);
    jk_diag_init(&x->d, x->a);
    jk_rc rc = jk_store_tx(f->st, call_tx, x);
    if (rc && getenv("JK_TEST_VERBOSE"))
        fprintf(stderr, "  %s: %s\n", jk_rc_name(rc), x->d.head ? x->d.head->msg : "");
    return rc;
}

static void done(struct call *x)
{
    jk_arena_free(x->a);
    x->a = NULL;
}

static const char *rule_of(const struct call *x)
{
    return x->d.head && x->d.head->detail_code ? x->d.head->detail_code : "";
}

/* Approves id at now_ms; the code into code. */
static void approve(struct fx *f, const char *id, int64_t now_ms, char code[JK_RX_CODE_DIGITS + 1])
{
    struct call x = {
        .id = id,
        .dec = {.is_approve = 1, .reviewer = "PractitionerRole/rv-1", .reviewer_org = "hosp-a"}};
    assert_int_equal(run(&x, f, REVIEW, now_ms), JK_OK);
    assert_string_equal(x.out.status, "approved");
    if (code) memcpy(code, x.the_code, JK_RX_CODE_DIGITS + 1);
    done(&x);
}

static jk_rc op_simple(struct fx *f, enum op op, const char *id, const char *pharmacy,
                       int64_t now_ms, const char **rule)
{
    static char last_rule[64];
    struct call x = {.id = id, .pharmacy = pharmacy};
    jk_rc rc = run(&x, f, op, now_ms);
    snprintf(last_rule, sizeof last_rule, "%s", rule_of(&x));
    if (rule) *rule = last_rule;
    done(&x);
    return rc;
}

static jk_rc redeem(struct fx *f, const char *code, const char *pharmacy, int64_t now_ms,
                    const char **rule)
{
    static char last_rule[64];
    struct call x = {.code = code, .pharmacy = pharmacy};
    jk_rc rc = run(&x, f, REDEEM, now_ms);
    snprintf(last_rule, sizeof last_rule, "%s", rule_of(&x));
    if (rule) *rule = last_rule;
    done(&x);
    return rc;
}

static jk_rc choose(struct fx *f, const char *id, const char *pharmacy, const char *mode,
                    const char *address, int64_t now_ms)
{
    struct call x = {.id = id, .pharmacy = pharmacy, .mode = mode, .address = address};
    jk_rc rc = run(&x, f, CHOOSE, now_ms);
    done(&x);
    return rc;
}

static jk_rc deliver(struct fx *f, const char *id, const char *status, const char *carrier,
                     const char *waybill, int64_t now_ms)
{
    struct call x = {
        .id = id, .pharmacy = "ph-1", .status = status, .carrier = carrier, .waybill = waybill};
    jk_rc rc = run(&x, f, DELIVER, now_ms);
    done(&x);
    return rc;
}

static long n_status(struct fx *f, const char *type, const char *prefix, const char *status)
{
    char text[512];
    snprintf(text, sizeof text,
             "SELECT count(*) FROM resource_version WHERE type = '%s' AND id LIKE '%s%%' AND"
             " is_current = 1 AND body LIKE '%%\"status\":\"%s\"%%'",
             type, prefix, status);
    return count(f, text);
}

/* ---- fixtures ---- */

static int open_fx(struct fx *f)
{
    char err[256];
    if (jk_store_open(f->url, &f->st, err, sizeof err) || jk_store_migrate(f->st, NULL)) return -1;
    f->rules = load_rules("rules/dispensing.json");
    if (!f->rules || jk_rx_flow_keys_init(&f->keys, keys)) return -1;
    return 0;
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (keys_setup()) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-rxflow.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->url, sizeof f->url, "sqlite:%s/t.db", f->dir);
    *state = f;
    return open_fx(f);
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    jk_store_close(f->st);
    jk_rx_flow_rules_free(f->rules);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd)) return -1;
    free(f);
    return 0;
}

/* ---- tests ---- */

static void test_rules_file(void **state)
{
    struct fx *f = *state;
    char err[512];
    const struct jk_rx_flow_rules *r = f->rules;
    assert_int_equal(jk_rx_flow_validity_days(r), 3);
    assert_int_equal(jk_rx_flow_valid_until(r, T0), T0_UNTIL);
    /* issued at 23:59 local on 11-30: still until the end of 12-02 */
    assert_int_equal(jk_rx_flow_valid_until(r, T0 + 14 * HOUR - MIN), T0_UNTIL);
    assert_non_null(jk_rx_flow_reason(r, "2-7"));
    assert_non_null(jk_rx_flow_reason(r, "1-15"));
    assert_non_null(jk_rx_flow_reason(r, "3-4"));
    assert_null(jk_rx_flow_reason(r, "3-5"));
    assert_true(jk_rx_flow_role_may(r, "review", JK_ROLE_PHARMACIST));
    assert_false(jk_rx_flow_role_may(r, "review", JK_ROLE_DOCTOR));
    assert_true(jk_rx_flow_role_may(r, "supervise", JK_ROLE_REGULATOR));
    assert_true(jk_rx_flow_delivery_next(r, "requested", "accepted"));
    assert_true(jk_rx_flow_delivery_next(r, "shipped", "delivered"));
    assert_false(jk_rx_flow_delivery_next(r, "requested", "packed"));
    assert_false(jk_rx_flow_delivery_next(r, "signed", "signed"));
    assert_false(jk_rx_flow_delivery_next(r, "packed", "accepted"));
    assert_true(jk_rx_flow_delivery_cancellable(r, "packed"));
    assert_false(jk_rx_flow_delivery_cancellable(r, "shipped"));
    struct json_object *ph = json_tokener_parse(
        "{\"resourceType\":\"Organization\",\"active\":true,\"type\":[{\"coding\":[{\"system\":"
        "\"" JK_RX_KIND_SYSTEM "\",\"code\":\"pharmacy\"}]}]}");
    struct json_object *gov = json_tokener_parse(
        "{\"resourceType\":\"Organization\",\"type\":[{\"coding\":[{\"system\":\"" JK_RX_KIND_SYSTEM
        "\",\"code\":\"govt\"}]}]}");
    assert_true(jk_rx_flow_is_pharmacy(r, ph));
    assert_false(jk_rx_flow_is_pharmacy(r, gov));
    json_object_object_add(ph, "active", json_object_new_boolean(0));
    assert_false(jk_rx_flow_is_pharmacy(r, ph));
    json_object_put(ph);
    json_object_put(gov);
    /* a bad rule names the file and the rule */
    struct jk_rx_flow_rules *bad = rules_with(f->dir, "code.validity_days", "9", err, sizeof err);
    assert_null(bad);
    assert_non_null(strstr(err, "/rules/code.validity_days/value"));
    bad = rules_with(f->dir, "review.reasons", "{\"x-1\":\"?\"}", err, sizeof err);
    assert_null(bad);
    assert_non_null(strstr(err, "x-1"));
    bad = rules_with(f->dir, "review.roles", "[\"resident\"]", err, sizeof err);
    assert_null(bad);
    /* rules/prescription.json's rx.validity_days takes the place of code.validity_days */
    char path[128], rx_path[128];
    snprintf(rx_path, sizeof rx_path, "%s/prescription.json", f->dir);
    FILE *fp = fopen(rx_path, "w");
    assert_non_null(fp);
    fputs("{\"ruleSet\":\"prescription\",\"rules\":{\"rx.validity_days\":{\"value\":1}}}", fp);
    fclose(fp);
    snprintf(path, sizeof path, "rules/dispensing.json");
    assert_int_equal(jk_rx_flow_rules_load(path, rx_path, &bad, err, sizeof err), JK_OK);
    assert_int_equal(jk_rx_flow_validity_days(bad), 1);
    jk_rx_flow_rules_free(bad);
    unlink(rx_path);
}

static void test_code(void **state)
{
    struct fx *f = *state;
    char a[JK_RX_CODE_DIGITS + 1], b[JK_RX_CODE_DIGITS + 1], ka[65], kb[65];
    assert_int_equal(jk_rx_flow_code(&f->keys, "rx-1", T0, a), JK_OK);
    assert_int_equal(strlen(a), JK_RX_CODE_DIGITS);
    assert_int_equal(strspn(a, "0123456789"), JK_RX_CODE_DIGITS);
    assert_int_equal(jk_rx_flow_code(&f->keys, "rx-1", T0, b), JK_OK);
    assert_string_equal(a, b); /* shown again to the patient: the same */
    assert_int_equal(jk_rx_flow_code(&f->keys, "rx-2", T0, b), JK_OK);
    assert_string_not_equal(a, b);
    assert_int_equal(jk_rx_flow_code_key(&f->keys, a, ka), JK_OK);
    char spaced[32];
    snprintf(spaced, sizeof spaced, "%.4s-%.4s %.4s", a, a + 4, a + 8);
    assert_int_equal(jk_rx_flow_code_key(&f->keys, spaced, kb), JK_OK);
    assert_string_equal(ka, kb);
    assert_null(strstr(ka, a)); /* the stored form is not the code */
    assert_int_equal(jk_rx_flow_code_key(&f->keys, "12345", kb), JK_EINVAL);
    assert_int_equal(jk_rx_flow_code_key(&f->keys, "12345678901a", kb), JK_EINVAL);
    assert_int_equal(jk_rx_flow_code_key(&f->keys, "1234567890123", kb), JK_EINVAL);
}

static void test_review_approve(void **state)
{
    struct fx *f = *state;
    char code[JK_RX_CODE_DIGITS + 1], key[65], buf[256];
    prescription(f, "ap-1", "hosp-a", T0, 2);
    approve(f, "ap-1", T0 + 10 * MIN, code);
    assert_int_equal(n_status(f, "MedicationRequest", "ap-1-", "active"), 2);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type = 'Provenance'"
                              " AND is_current = 1 AND body LIKE '%ap-1-mr-0%' AND body LIKE"
                              " '%ap-1-mr-1%' AND body LIKE '%verifier%'"),
                     1);
    assert_int_equal(jk_rx_flow_code_key(&f->keys, code, key), JK_OK);
    assert_string_equal(
        text_of(f, "SELECT code_key FROM rx_prescription WHERE id = 'ap-1'", buf, sizeof buf), key);
    assert_int_equal(count(f, "SELECT valid_until_ms FROM rx_prescription WHERE id = 'ap-1'") ==
                         (long)T0_UNTIL,
                     1);
    assert_int_equal(count(f, "SELECT reviewed_ms - created_ms FROM rx_prescription WHERE id ="
                              " 'ap-1'"),
                     10 * MIN);
    /* a second decision is refused */
    struct call x = {.id = "ap-1",
                     .dec = {.is_approve = 0,
                             .codes = (const char *const[]){"2-7"},
                             .n_codes = 1,
                             .reviewer = "PractitionerRole/rv-2"}};
    assert_int_equal(run(&x, f, REVIEW, T0 + 11 * MIN), JK_ECONFLICT);
    assert_string_equal(rule_of(&x), "already-reviewed");
    done(&x);
    /* the validity the prescribing service set is kept */
    prescription(f, "ap-3", "hosp-a", T0, 0);
    sql(f, "UPDATE rx_prescription SET valid_until_ms = 1796313600000 WHERE id = 'ap-3'");
    approve(f, "ap-3", T0 + MIN, NULL);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'ap-3' AND"
                              " valid_until_ms = 1796313600000"),
                     1);
    /* an expired prescription is not approved */
    prescription(f, "ap-2", "hosp-a", T0, 1);
    struct call y = {.id = "ap-2", .dec = {.is_approve = 1, .reviewer = "PractitionerRole/rv-1"}};
    assert_int_equal(run(&y, f, REVIEW, T0_UNTIL), JK_ERULE);
    assert_string_equal(rule_of(&y), "expired");
    done(&y);
}

static void test_review_reject(void **state)
{
    struct fx *f = *state;
    const char *rule;
    prescription(f, "rj-1", "hosp-a", T0, 2);
    struct call x = {.id = "rj-1", .dec = {.is_approve = 0, .reviewer = "PractitionerRole/rv-1"}};
    assert_int_equal(run(&x, f, REVIEW, T0 + MIN), JK_EINVAL); /* no reason */
    assert_string_equal(rule_of(&x), "reason-required");
    done(&x);
    x.dec.codes = (const char *const[]){"9-9"};
    x.dec.n_codes = 1;
    assert_int_equal(run(&x, f, REVIEW, T0 + MIN), JK_EINVAL); /* not a code of the rules */
    done(&x);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'rj-1' AND status ="
                              " 'pending'"),
                     1);
    x.dec.codes = (const char *const[]){"2-7", "1-11"};
    x.dec.n_codes = 2;
    x.dec.text = "重复给药";
    assert_int_equal(run(&x, f, REVIEW, T0 + 2 * MIN), JK_OK);
    assert_string_equal(x.out.status, "rejected");
    assert_string_equal(x.out.review_codes, "2-7,1-11");
    done(&x);
    assert_int_equal(n_status(f, "MedicationRequest", "rj-1-", "cancelled"), 2);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type ="
                              " 'MedicationRequest' AND id LIKE 'rj-1-%' AND is_current = 1 AND"
                              " body LIKE '%prescription-review-reason%' AND body LIKE '%2-7%'"),
                     2);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'rj-1' AND"
                              " code_key IS NULL"),
                     1);
    assert_int_equal(op_simple(f, DISPENSE, "rj-1", "ph-1", T0 + 3 * MIN, &rule), JK_ECONFLICT);
    assert_string_equal(rule, "rejected");
}

static void test_nothing_before_approval(void **state)
{
    struct fx *f = *state;
    const char *rule;
    prescription(f, "nb-1", "hosp-a", T0, 1);
    assert_int_equal(op_simple(f, DISPENSE, "nb-1", "ph-1", T0 + MIN, &rule), JK_ERULE);
    assert_string_equal(rule, "not-reviewed");
    assert_int_equal(choose(f, "nb-1", "ph-1", "pickup", NULL, T0 + MIN), JK_ERULE);
    assert_int_equal(n_status(f, "MedicationRequest", "nb-1-", "draft"), 1);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type ="
                              " 'MedicationDispense'"),
                     0);
}

static void test_redeem_and_dispense_once(void **state)
{
    struct fx *f = *state;
    char code[JK_RX_CODE_DIGITS + 1];
    const char *rule;
    prescription(f, "rd-1", "hosp-a", T0, 2);
    approve(f, "rd-1", T0 + MIN, code);
    /* dispensing before the code was presented: refused */
    assert_int_equal(op_simple(f, DISPENSE, "rd-1", "ph-1", T0 + 2 * MIN, &rule), JK_EFORBIDDEN);
    assert_string_equal(rule, "not-presented");
    /* the patient chose ph-1: another pharmacy's scan is refused */
    assert_int_equal(choose(f, "rd-1", "ph-1", "pickup", NULL, T0 + 3 * MIN), JK_OK);
    assert_int_equal(redeem(f, code, "ph-2", T0 + 4 * MIN, &rule), JK_EFORBIDDEN);
    assert_string_equal(rule, "other-pharmacy");
    assert_int_equal(redeem(f, "000000000000", "ph-1", T0 + 4 * MIN, &rule), JK_ENOTFOUND);
    assert_int_equal(redeem(f, code, "ph-1", T0 + 5 * MIN, NULL), JK_OK);
    assert_int_equal(redeem(f, code, "ph-1", T0 + 5 * MIN, NULL), JK_OK); /* a second scan */
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'rd-1' AND"
                              " pharmacy = 'ph-1' AND presented_ms IS NOT NULL"),
                     1);
    /* once presented the choice is fixed */
    assert_int_equal(choose(f, "rd-1", "ph-2", "pickup", NULL, T0 + 6 * MIN), JK_ECONFLICT);
    assert_int_equal(op_simple(f, DISPENSE, "rd-1", "ph-2", T0 + 6 * MIN, &rule), JK_EFORBIDDEN);
    assert_int_equal(op_simple(f, DISPENSE, "rd-1", "ph-1", T0 + 7 * MIN, NULL), JK_OK);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type ="
                              " 'MedicationDispense' AND is_current = 1 AND body LIKE"
                              " '%rd-1-mr-%'"),
                     2);
    assert_int_equal(n_status(f, "MedicationRequest", "rd-1-", "completed"), 2);
    /* once only */
    assert_int_equal(op_simple(f, DISPENSE, "rd-1", "ph-1", T0 + 8 * MIN, &rule), JK_ECONFLICT);
    assert_string_equal(rule, "dispensed");
    assert_int_equal(redeem(f, code, "ph-1", T0 + 8 * MIN, &rule), JK_ECONFLICT);
    assert_int_equal(op_simple(f, CANCEL, "rd-1", NULL, T0 + 9 * MIN, &rule), JK_ECONFLICT);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type ="
                              " 'MedicationDispense' AND is_current = 1 AND body LIKE"
                              " '%rd-1-mr-%'"),
                     2);
    /* without a choice, the pharmacy the code is presented at becomes the pickup pharmacy */
    prescription(f, "rd-2", "hosp-a", T0, 1);
    approve(f, "rd-2", T0 + MIN, code);
    assert_int_equal(redeem(f, code, "ph-2", T0 + 2 * MIN, NULL), JK_OK);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'rd-2' AND"
                              " pharmacy = 'ph-2' AND delivery = 'pickup'"),
                     1);
}

static void test_expiry(void **state)
{
    struct fx *f = *state;
    char code[JK_RX_CODE_DIGITS + 1];
    const char *rule;
    prescription(f, "ex-1", "hosp-a", T0, 1);
    approve(f, "ex-1", T0 + HOUR, code);
    assert_int_equal(redeem(f, code, "ph-1", T0_UNTIL - 1, NULL), JK_OK); /* the last moment */
    /* the clock moves past the validity: no job needed for the refusals */
    assert_int_equal(op_simple(f, DISPENSE, "ex-1", "ph-1", T0_UNTIL, &rule), JK_ERULE);
    assert_string_equal(rule, "expired");
    prescription(f, "ex-2", "hosp-a", T0, 1);
    approve(f, "ex-2", T0 + HOUR, code);
    assert_int_equal(redeem(f, code, "ph-1", T0_UNTIL + DAY, &rule), JK_ERULE);
    assert_string_equal(rule, "expired");
    assert_int_equal(choose(f, "ex-2", "ph-1", "pickup", NULL, T0_UNTIL), JK_ERULE);
    /* the sweep marks them */
    struct call x = {0};
    assert_int_equal(run(&x, f, SWEEP, T0_UNTIL - 1), JK_OK);
    done(&x);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE status = 'expired'"), 0);
    assert_int_equal(run(&x, f, SWEEP, T0_UNTIL), JK_OK);
    done(&x);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id IN ('ex-1', 'ex-2')"
                              " AND status = 'expired'"),
                     2);
    assert_int_equal(n_status(f, "MedicationRequest", "ex-", "stopped"), 2);
    assert_int_equal(op_simple(f, DISPENSE, "ex-1", "ph-1", T0_UNTIL, &rule), JK_ERULE);
}

static void test_delivery(void **state)
{
    struct fx *f = *state;
    char code[JK_RX_CODE_DIGITS + 1], buf[2048];
    const char *rule;
    static const char addr[] = "福建省福州市鼓楼区东街 88 号 3 单元 501";
    prescription(f, "dl-1", "hosp-a", T0, 1);
    approve(f, "dl-1", T0 + MIN, code);
    assert_int_equal(choose(f, "dl-1", "ph-1", "delivery", NULL, T0 + 2 * MIN), JK_EINVAL);
    assert_int_equal(choose(f, "dl-1", "ph-1", "delivery", addr, T0 + 2 * MIN), JK_OK);
    /* sealed at rest, opened for the pharmacy */
    text_of(f, "SELECT address_sealed FROM rx_delivery WHERE prescription_id = 'dl-1'", buf,
            sizeof buf);
    assert_true(strlen(buf) > 2 * sizeof addr);
    assert_int_equal(strspn(buf, "0123456789abcdef"), strlen(buf));
    char plain_hex[2 * sizeof addr + 1];
    jk_crypto_hex(addr, sizeof addr - 1, plain_hex);
    assert_null(strstr(buf, plain_hex));
    jk_conn *c = jk_store_conn(f->st);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_rx_delivery d;
    assert_int_equal(jk_rx_flow_delivery_get(c, a, &f->keys, "dl-1", &d), JK_OK);
    assert_string_equal(d.address, addr);
    assert_string_equal(d.status, "requested");
    jk_arena_free(a);
    /* the order presents the prescription to the pharmacy: no code needed */
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'dl-1' AND"
                              " presented_ms IS NOT NULL"),
                     1);
    assert_int_equal(deliver(f, "dl-1", "packed", NULL, NULL, T0 + 3 * MIN), JK_ERULE);
    assert_int_equal(deliver(f, "dl-1", "accepted", NULL, NULL, T0 + 3 * MIN), JK_OK);
    assert_int_equal(deliver(f, "dl-1", "packed", NULL, NULL, T0 + 4 * MIN),
                     JK_ERULE); /* first
                                  dispense */
    assert_int_equal(op_simple(f, DISPENSE, "dl-1", "ph-1", T0 + 5 * MIN, NULL), JK_OK);
    assert_int_equal(deliver(f, "dl-1", "packed", NULL, NULL, T0 + 6 * MIN), JK_OK);
    assert_int_equal(deliver(f, "dl-1", "shipped", "SF", NULL, T0 + 7 * MIN), JK_EINVAL);
    assert_int_equal(deliver(f, "dl-1", "delivered", NULL, NULL, T0 + 7 * MIN), JK_ERULE);
    assert_int_equal(deliver(f, "dl-1", "shipped", "顺丰速运", "SF1234567890", T0 + 8 * MIN),
                     JK_OK);
    assert_int_equal(deliver(f, "dl-1", "delivered", NULL, NULL, T0 + HOUR), JK_OK);
    assert_int_equal(deliver(f, "dl-1", "signed", NULL, NULL, T0 + HOUR + MIN), JK_OK);
    assert_int_equal(deliver(f, "dl-1", "signed", NULL, NULL, T0 + HOUR + 2 * MIN), JK_ERULE);
    struct call x = {.id = "dl-1", .pharmacy = "ph-2", .status = "signed"};
    assert_int_equal(run(&x, f, DELIVER, T0 + HOUR), JK_EFORBIDDEN);
    done(&x);
    text_of(f, "SELECT history FROM rx_delivery WHERE prescription_id = 'dl-1'", buf, sizeof buf);
    struct json_object *h = json_tokener_parse(buf);
    assert_int_equal(json_object_array_length(h), 6);
    json_object_put(h);
    assert_non_null(strstr(buf, "SF1234567890"));
    /* pickup has no delivery order */
    prescription(f, "dl-2", "hosp-a", T0, 1);
    approve(f, "dl-2", T0 + MIN, code);
    assert_int_equal(redeem(f, code, "ph-1", T0 + 2 * MIN, NULL), JK_OK);
    struct call y = {.id = "dl-2", .pharmacy = "ph-1", .status = "accepted"};
    assert_int_equal(run(&y, f, DELIVER, T0 + 3 * MIN), JK_ENOTFOUND);
    done(&y);
    (void)rule;
}

static void test_cancel(void **state)
{
    struct fx *f = *state;
    char code[JK_RX_CODE_DIGITS + 1];
    const char *rule;
    prescription(f, "cn-1", "hosp-a", T0, 2);
    approve(f, "cn-1", T0 + MIN, code);
    assert_int_equal(choose(f, "cn-1", "ph-1", "delivery", "某地址 1 号", T0 + 2 * MIN), JK_OK);
    assert_int_equal(op_simple(f, CANCEL, "cn-1", NULL, T0 + 3 * MIN, NULL), JK_OK);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'cn-1' AND status ="
                              " 'cancelled' AND code_key IS NULL"),
                     1);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_delivery WHERE prescription_id = 'cn-1' AND"
                              " status = 'cancelled'"),
                     1);
    assert_int_equal(n_status(f, "MedicationRequest", "cn-1-", "stopped"), 2);
    assert_int_equal(redeem(f, code, "ph-1", T0 + 4 * MIN, &rule), JK_ENOTFOUND); /* void */
    assert_int_equal(op_simple(f, DISPENSE, "cn-1", "ph-1", T0 + 4 * MIN, &rule), JK_ECONFLICT);
    assert_string_equal(rule, "cancelled");
    assert_int_equal(op_simple(f, CANCEL, "cn-1", NULL, T0 + 5 * MIN, NULL), JK_ECONFLICT);
    /* a pending one may be cancelled too, and then not reviewed */
    prescription(f, "cn-2", "hosp-a", T0, 1);
    assert_int_equal(op_simple(f, CANCEL, "cn-2", NULL, T0 + MIN, NULL), JK_OK);
    struct call x = {.id = "cn-2", .dec = {.is_approve = 1, .reviewer = "PractitionerRole/rv-1"}};
    assert_int_equal(run(&x, f, REVIEW, T0 + 2 * MIN), JK_ECONFLICT);
    done(&x);
    /* a shipped order can no longer be cancelled (its prescription is dispensed anyway) */
    prescription(f, "cn-3", "hosp-a", T0, 1);
    approve(f, "cn-3", T0 + MIN, code);
    assert_int_equal(choose(f, "cn-3", "ph-1", "delivery", "某地址 2 号", T0 + 2 * MIN), JK_OK);
    assert_int_equal(deliver(f, "cn-3", "accepted", NULL, NULL, T0 + 3 * MIN), JK_OK);
    assert_int_equal(op_simple(f, CANCEL, "cn-3", NULL, T0 + 4 * MIN, NULL), JK_OK);
    assert_int_equal(deliver(f, "cn-3", "packed", NULL, NULL, T0 + 5 * MIN), JK_ERULE);
}

static void test_access(void **state)
{
    struct fx *f = *state;
    const char *why;
    const struct jk_rx_flow_rules *r = f->rules;
    struct jk_rx_presc p = {.id = "x",
                            .patient_id = "pat-1",
                            .doctor = "dr-1-role",
                            .org = "hosp-a",
                            .status = "approved",
                            .pharmacy = "ph-1",
                            .presented_ms = 0};
    const char *const mine[] = {"pat-1"}, *const other[] = {"pat-2"};
    const char *const hosp_a[] = {"Organization/hosp-a"}, *const hosp_b[] = {"Organization/hosp-b"};
    struct jk_rx_actor patient = {JK_ROLE_RESIDENT, "", "Patient/pat-1", mine, 1, NULL, 0};
    struct jk_rx_actor stranger = {JK_ROLE_RESIDENT, "", "Patient/pat-2", other, 1, NULL, 0};
    struct jk_rx_actor doctor = {
        JK_ROLE_DOCTOR, "Organization/hosp-a", "PractitionerRole/dr-1-role", NULL, 0, NULL, 0};
    struct jk_rx_actor colleague = {
        JK_ROLE_DOCTOR, "Organization/hosp-a", "PractitionerRole/dr-2-role", NULL, 0, NULL, 0};
    struct jk_rx_actor reviewer = {
        JK_ROLE_PHARMACIST, "Organization/hosp-a", "PractitionerRole/rv-1", NULL, 0, hosp_a, 1};
    struct jk_rx_actor elsewhere = {
        JK_ROLE_PHARMACIST, "Organization/hosp-b", "PractitionerRole/rv-9", NULL, 0, hosp_b, 1};
    struct jk_rx_actor pharmacy = {
        JK_ROLE_PHARMACIST, "Organization/ph-1", "PractitionerRole/ph-1-role", NULL, 0, NULL, 0};
    struct jk_rx_actor other_ph = {
        JK_ROLE_PHARMACIST, "Organization/ph-2", "PractitionerRole/ph-2-role", NULL, 0, NULL, 0};
    struct jk_rx_actor regulator = {
        JK_ROLE_REGULATOR, "Organization/region", "", NULL, 0, hosp_a, 1};
    /* read */
    assert_int_equal(jk_rx_flow_may(r, &patient, &p, JK_RX_READ, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &stranger, &p, JK_RX_READ, &why), JK_EFORBIDDEN);
    assert_non_null(why);
    assert_int_equal(jk_rx_flow_may(r, &doctor, &p, JK_RX_READ, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &colleague, &p, JK_RX_READ, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &reviewer, &p, JK_RX_READ, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &elsewhere, &p, JK_RX_READ, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &regulator, &p, JK_RX_READ, &why), JK_EFORBIDDEN);
    /* a pharmacy sees only what was presented to it */
    assert_int_equal(jk_rx_flow_may(r, &pharmacy, &p, JK_RX_READ, &why), JK_EFORBIDDEN);
    p.presented_ms = T0;
    assert_int_equal(jk_rx_flow_may(r, &pharmacy, &p, JK_RX_READ, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &other_ph, &p, JK_RX_READ, &why), JK_EFORBIDDEN);
    /* review */
    assert_int_equal(jk_rx_flow_may(r, &reviewer, &p, JK_RX_REVIEW, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &elsewhere, &p, JK_RX_REVIEW, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &doctor, &p, JK_RX_REVIEW, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &regulator, &p, JK_RX_REVIEW, &why), JK_EFORBIDDEN);
    /* choose, dispense, cancel */
    assert_int_equal(jk_rx_flow_may(r, &patient, &p, JK_RX_CHOOSE, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &doctor, &p, JK_RX_CHOOSE, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &pharmacy, &p, JK_RX_DISPENSE, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &other_ph, &p, JK_RX_DISPENSE, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &reviewer, &p, JK_RX_DISPENSE, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &patient, &p, JK_RX_DISPENSE, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &patient, &p, JK_RX_CANCEL, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &doctor, &p, JK_RX_CANCEL, &why), JK_OK);
    assert_int_equal(jk_rx_flow_may(r, &pharmacy, &p, JK_RX_CANCEL, &why), JK_EFORBIDDEN);
    assert_int_equal(jk_rx_flow_may(r, &stranger, &p, JK_RX_CANCEL, &why), JK_EFORBIDDEN);
    /* references compare by id, and by type when both are typed */
    assert_true(jk_rx_same_ref("Organization/x", "x"));
    assert_false(jk_rx_same_ref("Organization/x", "Patient/x"));
    assert_false(jk_rx_same_ref("x", ""));
    /* review centres come from the rules */
    char err[512];
    struct jk_rx_flow_rules *rc_rules =
        rules_with(f->dir, "review.centres",
                   "[{\"centre\":\"Organization/rc-1\",\"regions\":[\"Organization/region-1\"]}]",
                   err, sizeof err);
    assert_non_null(rc_rules);
    const char *const *regions;
    assert_int_equal(jk_rx_flow_centre_regions(rc_rules, "Organization/rc-1", &regions), 1);
    assert_string_equal(regions[0], "Organization/region-1");
    assert_int_equal(jk_rx_flow_centre_regions(rc_rules, "Organization/hosp-a", &regions), 0);
    jk_rx_flow_rules_free(rc_rules);
}

static void test_queue(void **state)
{
    struct fx *f = *state;
    char id[32];
    for (int i = 0; i < 30; i++) {
        snprintf(id, sizeof id, "q-%02d", i);
        prescription(f, id, i % 3 ? "hosp-q" : "hosp-r", T0 + (i / 2) * MIN, 0);
    }
    jk_conn *c = jk_store_conn(f->st);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_rx_presc *rows;
    size_t n;
    int64_t total;
    const char *const q[] = {"Organization/hosp-q"}, *const both[] = {"hosp-q", "hosp-r"};
    assert_int_equal(jk_rx_flow_queue(c, a, q, 1, 0, 0, NULL, 7, &rows, &n, &total), JK_OK);
    assert_int_equal(total, 20);
    assert_int_equal(n, 7);
    for (size_t i = 1; i < n; i++)
        assert_true(rows[i - 1].created_ms < rows[i].created_ms ||
                    (rows[i - 1].created_ms == rows[i].created_ms &&
                     strcmp(rows[i - 1].id, rows[i].id) < 0));
    assert_string_equal(rows[0].id, "q-01");
    assert_string_equal(rows[0].warnings, "[{\"code\":\"duplicate\"}]");
    /* pages follow each other with no gap and no repeat */
    size_t seen = n;
    int64_t last_ms = rows[n - 1].created_ms;
    const char *last_id = rows[n - 1].id;
    while (1) {
        assert_int_equal(jk_rx_flow_queue(c, a, q, 1, 0, last_ms, last_id, 7, &rows, &n, &total),
                         JK_OK);
        if (!n) break;
        assert_true(rows[0].created_ms > last_ms ||
                    (rows[0].created_ms == last_ms && strcmp(rows[0].id, last_id) > 0));
        seen += n;
        last_ms = rows[n - 1].created_ms;
        last_id = rows[n - 1].id;
    }
    assert_int_equal(seen, 20);
    /* newest first */
    assert_int_equal(jk_rx_flow_queue(c, a, q, 1, 1, 0, NULL, 3, &rows, &n, &total), JK_OK);
    assert_string_equal(rows[0].id, "q-29");
    assert_string_equal(rows[1].id, "q-28");
    /* a review centre's several institutions, merged in order */
    assert_int_equal(jk_rx_flow_queue(c, a, both, 2, 0, 0, NULL, 30, &rows, &n, &total), JK_OK);
    assert_int_equal(total, 30);
    assert_int_equal(n, 30);
    for (size_t i = 1; i < n; i++)
        assert_true(rows[i - 1].created_ms <= rows[i].created_ms);
    assert_string_equal(rows[0].id, "q-00");
    /* reviewed ones leave the queue */
    approve(f, "q-01", T0 + HOUR, NULL);
    assert_int_equal(jk_rx_flow_queue(c, a, q, 1, 0, 0, NULL, 7, &rows, &n, &total), JK_OK);
    assert_int_equal(total, 19);
    assert_string_equal(rows[0].id, "q-02");
    jk_arena_free(a);
}

static void test_summary(void **state)
{
    struct fx *f = *state;
    char buf[2048];
    put(f, "Patient", "pat-1",
        "{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"王小明\"}],\"gender\":\"male\","
        "\"birthDate\":\"1980-05-01\"}");
    prescription(f, "sm-1", "hosp-s", T0, 2);
    struct call x = {0};
    assert_int_equal(run(&x, f, SWEEP, T0 + MIN), JK_OK);
    assert_true(x.n_done >= 1);
    done(&x);
    text_of(f, "SELECT summary FROM rx_prescription WHERE id = 'sm-1'", buf, sizeof buf);
    struct json_object *s = json_tokener_parse(buf), *items, *pt;
    assert_non_null(s);
    assert_true(json_object_object_get_ex(s, "items", &items));
    assert_int_equal(json_object_array_length(items), 2);
    assert_string_equal(
        json_object_get_string(json_object_object_get(json_object_array_get_idx(items, 1), "name")),
        "药1");
    assert_int_equal(
        json_object_get_int(json_object_object_get(json_object_array_get_idx(items, 0), "days")),
        7);
    assert_true(json_object_object_get_ex(s, "patient", &pt));
    assert_string_equal(json_object_get_string(json_object_object_get(pt, "name")), "王小明");
    assert_string_equal(json_object_get_string(json_object_object_get(s, "doctor")), "李医生");
    json_object_put(s);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE summary = ''"), 0);
}

/* ---- races ---- */

struct racer {
    struct fx *f;
    enum op op;
    const char *id;
    int is_approve;
    jk_rc rc;
};

static void *race_main(void *arg)
{
    struct racer *r = arg;
    struct call x = {.id = r->id,
                     .pharmacy = "ph-1",
                     .dec = {.is_approve = r->is_approve,
                             .codes = (const char *const[]){"2-5"},
                             .n_codes = r->is_approve ? 0 : 1,
                             .reviewer = "PractitionerRole/rv-1"}};
    r->rc = run(&x, r->f, r->op, T0 + 2 * HOUR);
    done(&x);
    return NULL;
}

/* n threads do op on id at once; returns how many succeeded. */
static int race(struct fx *f, enum op op, const char *id, int n)
{
    pthread_t *t = calloc((size_t)n, sizeof *t);
    struct racer *r = calloc((size_t)n, sizeof *r);
    int n_ok = 0;
    for (int i = 0; i < n; i++)
        r[i] = (struct racer){f, op, id, i % 2, JK_OK};
    for (int i = 0; i < n; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_main, &r[i]), 0);
    for (int i = 0; i < n; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < n; i++) {
        if (r[i].rc == JK_OK)
            n_ok++;
        else if (r[i].rc != JK_ECONFLICT)
            fail_msg("a racer failed with %s", jk_rc_name(r[i].rc));
    }
    free(t);
    free(r);
    return n_ok;
}

static void test_race_review(void **state)
{
    struct fx *f = *state;
    prescription(f, "rr-1", "hosp-a", T0, 2);
    /* pharmacists approving and rejecting at once: one decision */
    assert_int_equal(race(f, REVIEW, "rr-1", 16), 1);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type = 'Provenance'"
                              " AND is_current = 1 AND body LIKE '%rr-1-mr-0%'") +
                         count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'rr-1' AND"
                                  " status = 'rejected'"),
                     1);
}

static void test_race_dispense(void **state)
{
    struct fx *f = *state;
    char code[JK_RX_CODE_DIGITS + 1];
    prescription(f, "rc-1", "hosp-a", T0, 3);
    approve(f, "rc-1", T0 + MIN, code);
    assert_int_equal(redeem(f, code, "ph-1", T0 + 2 * MIN, NULL), JK_OK);
    assert_int_equal(race(f, DISPENSE, "rc-1", 24), 1);
    assert_int_equal(count(f, "SELECT count(*) FROM resource_version WHERE type ="
                              " 'MedicationDispense' AND body LIKE '%rc-1-mr-%'"),
                     3);
    assert_int_equal(count(f, "SELECT count(*) FROM rx_prescription WHERE id = 'rc-1' AND status ="
                              " 'dispensed'"),
                     1);
}

static int pg_setup(void **state)
{
    const char *url = getenv("JK_TEST_PG_URL");
    char err[256];
    jk_store *admin;
    if (!url) {
        *state = NULL;
        return 0;
    }
    struct fx *f = calloc(1, sizeof *f);
    if (keys_setup()) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-rxflow.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    if (jk_store_open(url, &admin, err, sizeof err)) return -1;
    jk_rc rc = jk_store_tx(admin, exec_tx,
                           "DROP SCHEMA IF EXISTS jk_test_rxflow CASCADE; CREATE SCHEMA "
                           "jk_test_rxflow");
    jk_store_close(admin);
    snprintf(f->url, sizeof f->url, "%s%soptions=-csearch_path%%3Djk_test_rxflow", url,
             strchr(url, '?') ? "&" : "?");
    *state = f;
    return rc ? -1 : open_fx(f);
}

static int pg_teardown(void **state)
{
    return *state ? fx_teardown(state) : 0;
}

static void test_pg(void **state)
{
    if (!*state) skip();
    test_review_approve(state);
    test_redeem_and_dispense_once(state);
    test_expiry(state);
    test_delivery(state);
    test_cancel(state);
    test_queue(state);
    test_summary(state);
    test_race_review(state);
    test_race_dispense(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_file),
        cmocka_unit_test(test_code),
        cmocka_unit_test(test_review_approve),
        cmocka_unit_test(test_review_reject),
        cmocka_unit_test(test_nothing_before_approval),
        cmocka_unit_test(test_redeem_and_dispense_once),
        cmocka_unit_test(test_expiry),
        cmocka_unit_test(test_delivery),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_access),
        cmocka_unit_test(test_queue),
        cmocka_unit_test(test_summary),
        cmocka_unit_test(test_race_review),
        cmocka_unit_test(test_race_dispense),
    };
    const struct CMUnitTest pg[] = {cmocka_unit_test(test_pg)};
    int failed = cmocka_run_group_tests_name("rx flow (SQLite)", tests, fx_setup, fx_teardown);
    failed += cmocka_run_group_tests_name("rx flow (PostgreSQL)", pg, pg_setup, pg_teardown);
    jk_keys_free(keys);
    return failed;
}
