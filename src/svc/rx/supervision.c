/* supervision.c - what the regulator sees of the internet hospital (docs/internals/rx.md):
 * every online visit and prescription of a period at the institutions of a region, with who,
 * when, diagnosis, drugs, reviewer, outcome and review turnaround; for GET /api/supervision/...
 * and the daily export (jiankang supervision export). Rows only: no resource is read. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "core/arena.h"
#include "core/time.h"
#include "svc/pay/pay.h"
#include "svc/rx/flow.h"

static void add_s(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static void add_time(struct json_object *o, const char *k, int64_t ms)
{
    char t[32];
    if (ms) json_object_object_add(o, k, json_object_new_string(jk_time_iso(ms, t, sizeof t)));
}

static const char *typed(struct jk_arena *a, const char *type, const char *id)
{
    if (!id || !*id) return "";
    return strchr(id, '/') ? id : jk_arena_printf(a, "%s/%s", type, id);
}

static struct json_object *parsed_or(const char *text, struct json_object *dflt)
{
    struct json_object *o = text && *text ? json_tokener_parse(text) : NULL;
    if (!o) return dflt;
    json_object_put(dflt);
    return o;
}

static const char *payment_state(jk_conn *c, const struct jk_rx_presc *p)
{
    struct jk_pay_item it = {"prescription", p->id, p->patient_id, p->org, p->amount_fen};
    enum jk_pay_state st = JK_PAY_UNPAID;
    if (jk_pay()->state(c, &it, &st)) st = JK_PAY_UNPAID;
    return jk_pay_state_name(st);
}

static int in_orgs(const char *org, const char *const *orgs, size_t n)
{
    if (!orgs) return 1;
    for (size_t i = 0; i < n; i++)
        if (jk_rx_same_ref(orgs[i], org)) return 1;
    return 0;
}

jk_rc jk_rx_supervision_rows(jk_conn *c, struct jk_arena *a, const char *kind, int64_t from_ms,
                             int64_t to_ms, const char *const *orgs, size_t n_orgs, size_t max,
                             struct json_object *arr, int *more)
{
    static const char visit_sql[] =
        "SELECT id, patient_id, doctor, org, condition_code, basis, guardian, status, started_ms,"
        " coalesce(ended_ms, 0), end_reason, amount_fen FROM ih_visit WHERE started_ms >= ? AND"
        " started_ms < ? ORDER BY started_ms, id";
    static const char rx_sql[] =
        "SELECT p.id, coalesce(v.condition_code, '') FROM rx_prescription p LEFT JOIN ih_visit v"
        " ON v.id = p.visit_id WHERE p.created_ms >= ? AND p.created_ms < ? ORDER BY"
        " p.created_ms, p.id";
    int is_visit = !strcmp(kind, "visits");
    jk_stmt *s;
    int has_row = 0;
    *more = 0;
    jk_rc rc = jk_conn_prepare(c, is_visit ? visit_sql : rx_sql, &s);
    if (!rc) rc = jk_stmt_int_arg(s, 1, from_ms);
    if (!rc) rc = jk_stmt_int_arg(s, 2, to_ms);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    const char **ids = jk_arena_alloc(a, (max + 1) * sizeof *ids);
    const char **diag = jk_arena_alloc(a, (max + 1) * sizeof *diag);
    size_t n = 0;
    if (!ids || !diag) rc = rc ? rc : JK_ENOMEM;
    while (!rc && has_row) {
        if (is_visit) {
            const char *org = jk_stmt_col_text(s, 3, NULL);
            if (in_orgs(org, orgs, n_orgs)) {
                if (n == max) {
                    *more = 1;
                    break;
                }
                struct json_object *o = json_object_new_object();
                add_s(o, "kind", "visit");
                add_s(o, "id", jk_stmt_col_text(s, 0, NULL));
                add_s(o, "patient", typed(a, "Patient", jk_stmt_col_text(s, 1, NULL)));
                add_s(o, "doctor", typed(a, "PractitionerRole", jk_stmt_col_text(s, 2, NULL)));
                add_s(o, "org", typed(a, "Organization", org));
                add_s(o, "diagnosis", jk_stmt_col_text(s, 4, NULL));
                add_s(o, "basis", jk_stmt_col_text(s, 5, NULL));
                if (*jk_stmt_col_text(s, 6, NULL))
                    add_s(o, "guardian", jk_stmt_col_text(s, 6, NULL));
                add_s(o, "outcome", jk_stmt_col_text(s, 7, NULL));
                add_time(o, "started", jk_stmt_col_int(s, 8));
                add_time(o, "ended", jk_stmt_col_int(s, 9));
                if (*jk_stmt_col_text(s, 10, NULL))
                    add_s(o, "endReason", jk_stmt_col_text(s, 10, NULL));
                json_object_object_add(o, "amountFen",
                                       json_object_new_int64(jk_stmt_col_int(s, 11)));
                add_s(o, "payment", jk_pay_state_name(JK_PAY_UNPAID));
                json_object_array_add(arr, o);
                n++;
            }
        } else {
            if (n == max) {
                *more = 1;
                break;
            }
            ids[n] = jk_arena_strdup(a, jk_stmt_col_text(s, 0, NULL));
            diag[n++] = jk_arena_strdup(a, jk_stmt_col_text(s, 1, NULL));
        }
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !is_visit && !rc && i < n; i++) {
        struct jk_rx_presc p;
        if ((rc = jk_rx_flow_get(c, a, ids[i], &p))) break;
        if (!in_orgs(p.org, orgs, n_orgs)) continue;
        struct json_object *o = json_object_new_object(), *sum;
        add_s(o, "kind", "prescription");
        add_s(o, "id", p.id);
        add_time(o, "created", p.created_ms);
        add_s(o, "visit", typed(a, "Encounter", p.visit_id));
        add_s(o, "patient", typed(a, "Patient", p.patient_id));
        add_s(o, "doctor", typed(a, "PractitionerRole", p.doctor));
        add_s(o, "org", typed(a, "Organization", p.org));
        add_s(o, "diagnosis", diag[i]);
        sum = parsed_or(p.summary, json_object_new_object());
        struct json_object *items;
        json_object_object_add(o, "drugs",
                               json_object_object_get_ex(sum, "items", &items)
                                   ? json_object_get(items)
                                   : json_object_new_array());
        json_object_put(sum);
        add_s(o, "outcome", p.status);
        if (p.reviewed_ms) {
            add_s(o, "reviewer", p.reviewer);
            add_time(o, "reviewed", p.reviewed_ms);
            json_object_object_add(o, "turnaroundMs",
                                   json_object_new_int64(p.reviewed_ms - p.created_ms));
            if (*p.review_codes) add_s(o, "reviewCodes", p.review_codes);
        }
        if (*p.pharmacy) add_s(o, "pharmacy", typed(a, "Organization", p.pharmacy));
        add_time(o, "dispensed", p.dispensed_ms);
        json_object_object_add(o, "amountFen", json_object_new_int64(p.amount_fen));
        add_s(o, "payment", payment_state(c, &p));
        json_object_array_add(arr, o);
    }
    return rc;
}
