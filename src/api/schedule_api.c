/* schedule_api.c - Schedule/$generate (an institution publishes its slots) and the pool's
 * statistics (GET /api/booking/stats). docs/internals/booking.md, docs/api.md#booking. */
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "svc/booking/schedule.h"

/* The installed booking rules, or JK_EINTERNAL (logged) when the server has none. */
static jk_rc rules_of(const struct jk_bk_rules **out)
{
    *out = jk_bk_rules();
    if (*out) return JK_OK;
    jk_log_error("booking", "the booking rules are not installed (jk_bk_start)");
    return JK_EINTERNAL;
}

/* Refuses a role outside the rules' list (roles.<list>). */
static jk_rc role_in(struct jk_http_req *rq, struct jk_api_guard *g, const struct jk_bk_rules *r,
                     const char *list, const char *what)
{
    const char *role = jk_role_info(g->p.role)->name;
    if (g->is_off || jk_bk_role_may(r, list, role)) return JK_OK;
    g->recs[0].action = "refused";
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                       "%s: not for the role %s (roles.%s)", what, role, list);
}

static jk_rc send_text(struct jk_http_req *rq, int status, struct jk_buf *b, int is_fhir)
{
    const char *text = jk_arena_strndup(rq->arena, b->p ? b->p : "", b->len);
    size_t len = b->len;
    jk_buf_free(b);
    if (!text) return JK_ENOMEM;
    return is_fhir ? jk_api_send_fhir(rq, status, text, len)
                   : jk_http_respond(rq, status, "application/json; charset=utf-8", text, len);
}

/* ---- Schedule/$generate ---- */

struct gen_job {
    struct jk_http_req *rq;
    struct jk_api_guard *g;
    const struct jk_bk_rules *r;
    const char *id;
    char through[11];
    int64_t now_ms;
    struct jk_bk_gen_result res;
    jk_rc rc;
};

/* The `through` parameter of a Parameters body, if any, into job->through. */
static jk_rc gen_params(struct jk_http_req *rq, struct gen_job *job)
{
    struct json_object *body = NULL, *params = NULL;
    if (!rq->body_len) return JK_OK;
    jk_rc rc = jk_api_check_content_type(rq);
    if (!rc)
        rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, &body);
    if (rc) return rc;
    const char *type = jk_json_str(body, "resourceType");
    if (!type || strcmp(type, "Parameters"))
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "Parameters",
                         "Schedule/$generate takes a Parameters resource (or no body)");
    json_object_object_get_ex(body, "parameter", &params);
    for (size_t i = 0; !rc && i < json_object_array_length(params); i++) {
        struct json_object *p = json_object_array_get_idx(params, i);
        const char *name = jk_json_str(p, "name"), *v = jk_json_str(p, "valueDate");
        if (name && !strcmp(name, "through") && v && jk_bk_day_ok(v))
            memcpy(job->through, v, 11);
        else
            rc = jk_diag_add(&rq->diag, JK_EINVAL, "invalid",
                             jk_arena_printf(rq->arena, "Parameters.parameter[%zu]", i),
                             "expected through (valueDate, YYYY-MM-DD)");
    }
    json_object_put(body);
    return rc;
}

static jk_rc gen_tx(jk_conn *c, void *arg)
{
    struct gen_job *job = arg;
    struct jk_http_req *rq = job->rq;
    jk_rc rc = jk_bk_generate(c, rq->arena, &rq->diag, job->r, job->id, NULL, job->through,
                              job->now_ms, &job->res);
    if (rc) return rc;
    for (size_t i = 0; i < job->res.n_affected; i++) /* the patients the institution calls */
        jk_api_note_patient(rq, job->g, job->res.affected[i].patient_id);
    return jk_api_audit_append(c, rq, 200);
}

static void gen_done(void *arg, jk_rc rc)
{
    struct gen_job *job = arg;
    job->rc = rc;
    if (rc && !job->g->is_off) job->g->is_recorded = 0; /* rolled back: on_ready records it */
    jk_http_wake(job->rq);
}

static jk_rc ref_part(struct jk_buf *b, const char *name, const char *type, const char *id)
{
    if (!id || !id[0]) return JK_OK;
    jk_rc rc =
        jk_buf_printf(b, ",{\"name\":\"%s\",\"valueReference\":{\"reference\":\"%s/", name, type);
    if (!rc) rc = jk_buf_json_escape(b, id, strlen(id));
    return rc ? rc : jk_buf_puts(b, "\"}}");
}

static jk_rc gen_finish(struct jk_http_req *rq)
{
    struct gen_job *job = rq->state;
    if (job->rc) return job->rc;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_buf_printf(&b,
                             "{\"resourceType\":\"Parameters\",\"parameter\":["
                             "{\"name\":\"through\",\"valueDate\":\"%s\"},"
                             "{\"name\":\"created\",\"valueInteger\":%zu},"
                             "{\"name\":\"closed\",\"valueInteger\":%zu}",
                             job->through, job->res.n_new, job->res.n_closed);
    for (size_t i = 0; !rc && i < job->res.n_affected; i++) {
        const struct jk_bk_affected *a = &job->res.affected[i];
        char start[40];
        rc =
            jk_buf_puts(&b, ",{\"name\":\"booked\",\"part\":[{\"name\":\"state\",\"valueCode\":\"");
        if (!rc) rc = jk_buf_json_escape(&b, a->state, strlen(a->state));
        if (!rc)
            rc = jk_buf_printf(&b, "\"},{\"name\":\"start\",\"valueInstant\":\"%s\"}",
                               jk_time_iso(a->start_ms, start, sizeof start));
        if (!rc) rc = ref_part(&b, "slot", "Slot", a->slot_id);
        if (!rc) rc = ref_part(&b, "appointment", "Appointment", a->appointment_id);
        if (!rc) rc = ref_part(&b, "patient", "Patient", a->patient_id);
        if (!rc) rc = jk_buf_puts(&b, "]}");
    }
    if (!rc) rc = jk_buf_puts(&b, "]}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send_text(rq, 200, &b, 1);
}

jk_rc jk_api_schedule_generate(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    const struct jk_bk_rules *r;
    const char *id = jk_http_param(rq, "id");
    jk_rc rc = jk_api_guard(rq, "schedule-generate", &g);
    if (!rc && !g->is_off) {
        g->recs[0].res_type = "Schedule";
        g->recs[0].res_id = id;
    }
    if (!rc) rc = jk_api_check_id(rq, id);
    if (!rc) rc = rules_of(&r);
    if (!rc) rc = role_in(rq, g, r, "schedule", "Schedule/$generate");
    struct gen_job *job = rc ? NULL : jk_arena_zalloc(rq->arena, sizeof *job);
    if (!rc && !job) rc = JK_ENOMEM;
    if (rc) return rc;
    job->rq = rq;
    job->g = g;
    job->r = r;
    job->id = id;
    job->now_ms = jk_time_now_ms();
    if ((rc = gen_params(rq, job))) return rc;
    /* The institution of the Schedule: the caller's own (a role without an institution, such
     * as the platform's administrator when the rules list it, acts for any). */
    char org[80];
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if ((rc = jk_bk_schedule_org(c, rq->arena, &rq->diag, id, org, sizeof org))) return rc;
    const char *mine = jk_api_ref_id(g->p.org, "Organization");
    if (!g->is_off && mine[0] && strcmp(mine, org)) {
        g->recs[0].action = "refused";
        return jk_diag_add(
            &rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
            "Schedule/%s belongs to Organization/%s, not to the caller's institution", id, org);
    }
    struct jk_bk_policy p;
    char today[11], last[11];
    jk_bk_policy(r, org, &p);
    jk_bk_day(&p, job->now_ms, today);
    if (!job->through[0]) jk_bk_horizon_day(&p, job->now_ms, job->through);
    if (!jk_bk_day_add(today, JK_BK_MAX_DAYS - 1, last)) return JK_EINTERNAL;
    if (strcmp(job->through, today) < 0 || strcmp(job->through, last) > 0)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "Parameters.parameter",
                           "through must be from today (%s) to %s", today, last);
    rq->state = job;
    jk_http_defer(rq, gen_finish);
    jk_store_tx_async(jk_api_app(rq)->db, gen_tx, job, gen_done, job);
    return JK_OK;
}

/* ---- GET /api/booking/stats ---- */

/* Roles that see every institution's statistics; the others only their own institution's. */
static int is_region_wide(enum jk_role role)
{
    return role == JK_ROLE_REGULATOR || role == JK_ROLE_PLATFORM_ADMIN;
}

static jk_rc share(struct jk_buf *b, const char *name, int64_t n, int64_t of)
{
    if (!of) return jk_buf_printf(b, ",\"%s\":null", name);
    return jk_buf_printf(b, ",\"%s\":%.4f", name, (double)n / (double)of);
}

static jk_rc stat_json(struct jk_buf *b, const struct jk_bk_stat *s)
{
    jk_rc rc = jk_buf_puts(b, "{");
    if (!rc && s->org) {
        rc = jk_buf_puts(b, "\"org\":\"");
        if (!rc) rc = jk_buf_json_escape(b, s->org, strlen(s->org));
        if (!rc) rc = jk_buf_puts(b, "\",\"service\":\"");
        if (!rc) rc = jk_buf_json_escape(b, s->service, strlen(s->service));
        if (!rc) rc = jk_buf_printf(b, "\",\"day\":\"%.10s\",", s->day);
    }
    if (!rc) rc = jk_buf_printf(b, "\"published\":%lld,\"booked\":{", (long long)s->published);
    for (int ch = 0; !rc && ch < JK_BK_N_CHANNELS; ch++)
        rc = jk_buf_printf(b, "%s\"%s\":%lld", ch ? "," : "",
                           jk_bk_channel_name((enum jk_bk_channel)ch), (long long)s->booked[ch]);
    if (!rc)
        rc = jk_buf_printf(b,
                           "},\"bookedTotal\":%lld,\"cancelled\":%lld,\"cancelledLate\":%lld,"
                           "\"noshow\":%lld,\"reservedBooked\":%lld,\"specialistPlaces\":%lld,"
                           "\"specialistOnline\":%lld",
                           (long long)s->booked_total, (long long)s->cancelled,
                           (long long)s->cancelled_late, (long long)s->noshow,
                           (long long)s->reserved_booked, (long long)s->specialist,
                           (long long)s->specialist_online);
    if (!rc) rc = share(b, "referralShare", s->reserved_booked, s->booked_total);
    if (!rc) rc = share(b, "specialistOnlineShare", s->specialist_online, s->specialist);
    return rc ? rc : jk_buf_puts(b, "}");
}

/* from and to (query parameters, default today), checked. */
static jk_rc stats_days(struct jk_http_req *rq, const struct jk_bk_rules *r, const char *org,
                        char from[static 11], char to[static 11])
{
    struct jk_bk_policy p;
    char last[11];
    const char *f = jk_http_query_get(rq, "from"), *t = jk_http_query_get(rq, "to");
    jk_bk_policy(r, org, &p);
    jk_bk_day(&p, jk_time_now_ms(), from);
    if (f && !jk_bk_day_ok(f))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "from", "from is a date (YYYY-MM-DD)");
    if (t && !jk_bk_day_ok(t))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "to", "to is a date (YYYY-MM-DD)");
    if (f) memcpy(from, f, 11);
    memcpy(to, t ? t : from, 11);
    if (strcmp(from, to) > 0 || !jk_bk_day_add(from, JK_BK_MAX_DAYS - 1, last) ||
        strcmp(to, last) > 0)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "to",
                           "to is on or after from, at most %d days later", JK_BK_MAX_DAYS - 1);
    return JK_OK;
}

jk_rc jk_api_booking_stats(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    const struct jk_bk_rules *r;
    jk_rc rc = jk_api_guard(rq, "booking-stats", &g);
    if (!rc) rc = rules_of(&r);
    if (!rc) rc = role_in(rq, g, r, "stats", "the booking statistics");
    if (rc) return rc;
    const char *org = jk_http_query_get(rq, "org");
    org = org && org[0] ? jk_api_ref_id(org, "Organization") : NULL;
    if (org && !jk_fhir_id_ok(org))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "org",
                           "org is an Organization id (or Organization/<id>)");
    if (!g->is_off && !is_region_wide(g->p.role)) {
        const char *mine = jk_api_ref_id(g->p.org, "Organization");
        if (!org) org = mine;
        if (!mine[0] || strcmp(org, mine)) {
            g->recs[0].action = "refused";
            return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", "org",
                               "a %s sees the statistics of their own institution only",
                               jk_role_info(g->p.role)->name);
        }
    }
    if (!g->is_off) {
        g->recs[0].res_type = org ? "Organization" : NULL;
        g->recs[0].res_id = org;
    }
    char from[11], to[11];
    if ((rc = stats_days(rq, r, org, from, to))) return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_bk_stat *rows, total;
    size_t n = 0;
    if (!c) return JK_EDB;
    if ((rc = jk_bk_stats(c, rq->arena, r, org, from, to, &rows, &n, &total))) return rc;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_puts(&b, "{\"org\":");
    if (!rc && org) {
        rc = jk_buf_puts(&b, "\"");
        if (!rc) rc = jk_buf_json_escape(&b, org, strlen(org));
        if (!rc) rc = jk_buf_puts(&b, "\"");
    } else if (!rc) {
        rc = jk_buf_puts(&b, "null");
    }
    if (!rc) rc = jk_buf_printf(&b, ",\"from\":\"%s\",\"to\":\"%s\",\"rows\":[", from, to);
    for (size_t i = 0; !rc && i < n; i++) {
        if (i) rc = jk_buf_puts(&b, ",");
        if (!rc) rc = stat_json(&b, &rows[i]);
    }
    if (!rc) rc = jk_buf_puts(&b, "],\"total\":");
    if (!rc) rc = stat_json(&b, &total);
    if (!rc) rc = jk_buf_puts(&b, "}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send_text(rq, 200, &b, 0);
}
