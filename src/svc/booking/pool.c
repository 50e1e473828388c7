/* pool.c - the booking service: places claimed by conditional updates, limits as counters
 * raised by conditional updates, bookings and their Appointment resources, the waiting list
 * and no-shows. docs/internals/booking.md. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <json-c/json.h>

#include "core/arena.h"
#include "core/diag.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "auth/authz.h"
#include "mpi/mpi.h"
#include "notify/outbox.h"
#include "svc/booking/booking.h"

#define NS         "https://jiankang.example/fhir"
#define MS_PER_MIN 60000LL
#define MS_PER_DAY 86400000LL
#define MAX_TRIES  64 /* claims lost to concurrent claimants before giving up */

static void col_into(jk_stmt *s, int i, char *out, size_t outlen)
{
    size_t n;
    const char *t = jk_stmt_col_text(s, i, &n);
    snprintf(out, outlen, "%.*s", (int)n, t ? t : "");
}

/* ---- refusals ---- */

/* A refusal by a rule: issue code business-rule with the rule as details, message in the
 * request's language. */
static jk_rc refuse(const struct jk_bk_call *k, jk_rc rc, const char *rule, const char *zh,
                    const char *en)
{
    jk_diag_add_text(k->d, rc, rc == JK_ERULE ? "business-rule" : NULL, NULL, zh, en);
    if (k->d->tail) {
        k->d->tail->detail_system = JK_BK_REFUSAL_SYSTEM;
        k->d->tail->detail_code = rule;
    }
    return rc;
}

/* Local "YYYY-MM-DD HH:MM" of ms. */
static const char *local_time(const struct jk_bk_call *k, const struct jk_bk_policy *p, int64_t ms)
{
    char day[11];
    int64_t min =
        ((ms + p->utc_offset_min * MS_PER_MIN) % MS_PER_DAY + MS_PER_DAY) % MS_PER_DAY / MS_PER_MIN;
    return jk_arena_printf(k->a, "%s %02d:%02d", jk_bk_day(p, ms, day), (int)(min / 60),
                           (int)(min % 60));
}

/* ---- slots ---- */

#define SLOT_COLS                                                                                  \
    "slot_id, schedule_id, org, service, actor, fee_level, day, session, status, start_ms, "       \
    "end_ms, capacity, n_booked"

jk_rc jk_bk_slot_get(jk_conn *c, const char *slot_id, struct jk_bk_slot *out)
{
    static const char sql[] = "SELECT " SLOT_COLS " FROM bk_slot WHERE slot_id = ?";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "t", slot_id);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) {
        char *f[] = {out->slot_id,   out->schedule_id, out->org,     out->service, out->actor,
                     out->fee_level, out->day,         out->session, out->status};
        size_t l[] = {sizeof out->slot_id, sizeof out->schedule_id, sizeof out->org,
                      sizeof out->service, sizeof out->actor,       sizeof out->fee_level,
                      sizeof out->day,     sizeof out->session,     sizeof out->status};
        for (int i = 0; i < 9; i++)
            col_into(s, i, f[i], l[i]);
        out->start_ms = jk_stmt_col_int(s, 9);
        out->end_ms = jk_stmt_col_int(s, 10);
        out->capacity = (int)jk_stmt_col_int(s, 11);
        out->n_booked = (int)jk_stmt_col_int(s, 12);
    }
    if (s) jk_stmt_reset(s);
    return rc;
}

/* The places who may claim: their channel's, opened; and for online claimants and
 * primary-care staff, reserved places that returned to the public. Two variants of the SQL
 * by whether reserved places may be taken (bound: channel, now, now). */
static const char claim_where[] =
    " WHERE slot_id = ? AND ((channel = ? AND open_ms <= ?) OR (public_ms > 0 AND public_ms <= ?"
    " AND ? = 1)) AND (state = 'free' OR (state = 'held' AND until_ms <= ?))";

static int may_take_returned(const struct jk_bk_who *w)
{
    return w->channel == JK_BK_ONLINE || w->channel == JK_BK_REFERRAL || w->channel == JK_BK_FAMILY;
}

jk_rc jk_bk_free_places(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                        const struct jk_bk_who *w, int *n)
{
    static char sql[256];
    static const char head[] = "SELECT count(*) FROM bk_place";
    if (!sql[0]) snprintf(sql, sizeof sql, "%s%s", head, claim_where); /* same text each time */
    jk_stmt *s;
    int has_row;
    jk_rc rc =
        jk_conn_query(c, sql, &s, &has_row, "ttiiii", sl->slot_id, jk_bk_channel_name(w->channel),
                      k->now_ms, k->now_ms, (int64_t)may_take_returned(w), k->now_ms);
    *n = !rc && has_row ? (int)jk_stmt_col_int(s, 0) : 0;
    if (s) jk_stmt_reset(s);
    return rc;
}

/* ---- counters ---- */

/* Monday of the week of day. */
static void week_start(const char *day, char out[11])
{
    if (!jk_bk_day_add(day, -jk_bk_weekday(day), out)) snprintf(out, 11, "%s", day);
}

/* The key of limit l for a booking in org/service on day, and the first day of the next
 * period (when the resident may book again) into next. */
static const char *limit_key(struct jk_arena *a, const struct jk_bk_limit *l, const char *org,
                             const char *service, const char *day, char next[11])
{
    char start[11];
    const char *scope =
        l->scope == JK_BK_SCOPE_DEPARTMENT    ? jk_arena_printf(a, "department/%s/%s", org, service)
        : l->scope == JK_BK_SCOPE_INSTITUTION ? jk_arena_printf(a, "institution/%s", org)
                                              : "all";
    int y = (day[0] - '0') * 1000 + (day[1] - '0') * 100 + (day[2] - '0') * 10 + day[3] - '0';
    int m = (day[5] - '0') * 10 + day[6] - '0';
    switch (l->period) {
    case JK_BK_DAY: jk_bk_day_add(day, 1, next); return jk_arena_printf(a, "%s/day/%s", scope, day);
    case JK_BK_WEEK:
        week_start(day, start);
        jk_bk_day_add(start, 7, next);
        return jk_arena_printf(a, "%s/week/%s", scope, start);
    case JK_BK_MONTH:
        snprintf(next, 11, "%04u-%02u-01", (unsigned)(m == 12 ? y + 1 : y) % 10000u,
                 (unsigned)(m == 12 ? 1 : m + 1) % 100u);
        return jk_arena_printf(a, "%s/month/%.7s", scope, day);
    default: {
        int qn = (m - 1) / 3; /* 0..3 */
        snprintf(next, 11, "%04u-%02u-01", (unsigned)(qn == 3 ? y + 1 : y) % 10000u,
                 (unsigned)(qn == 3 ? 1 : qn * 3 + 4) % 100u);
        return jk_arena_printf(a, "%s/quarter/%04d-Q%d", scope, y, qn + 1);
    }
    }
}

static const char *const period_zh[] = {"每日", "每周", "每月", "每季度"};
static const char *const period_en[] = {"a day", "a week", "a month", "a quarter"};
static const char *const scope_zh[] = {"同一科室", "同一机构", "全平台"};
static const char *const scope_en[] = {"in one department", "at one institution", "in all"};

/* Raises (delta 1, refusing at the limit) or lowers (delta -1) the first n (SIZE_MAX: all)
 * counters of p's limits for a booking of person in org/service on day; *n_raised (may be
 * NULL) counts those raised before a refusal. */
static jk_rc counters_n(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_policy *p,
                        const char *person, const char *org, const char *service, const char *day,
                        int delta, size_t n_max, size_t *n_raised)
{
    static const char sql_row[] =
        "INSERT INTO bk_count (person, k, n) VALUES (?, ?, 0) ON CONFLICT DO NOTHING";
    static const char sql_up[] =
        "UPDATE bk_count SET n = n + 1 WHERE person = ? AND k = ? AND n < ?";
    static const char sql_down[] =
        "UPDATE bk_count SET n = n - 1 WHERE person = ? AND k = ? AND n > 0";
    if (n_raised) *n_raised = 0;
    for (size_t i = 0; i < p->n_limits && i < n_max; i++) {
        const struct jk_bk_limit *l = &p->limits[i];
        char next[11];
        const char *key = limit_key(k->a, l, org, service, day, next);
        int64_t n = 0;
        if (!key) return JK_ENOMEM;
        if (delta < 0) {
            jk_rc rc = jk_conn_run(c, sql_down, NULL, "tt", person, key);
            if (rc) return rc;
            continue;
        }
        jk_rc rc = jk_conn_run(c, sql_row, NULL, "tt", person, key);
        if (!rc) rc = jk_conn_run(c, sql_up, &n, "tti", person, key, (int64_t)l->max);
        if (rc) return rc;
        if (n == 0) {
            const char *zh = jk_arena_printf(
                k->a,
                "已达到%s%s %d 次的预约上限（规则 limit.counts）：%s 所在时段不能再预约，可预约 %s "
                "及以后的日期，或先取消已有的预约",
                scope_zh[l->scope], period_zh[l->period], l->max, day, next);
            const char *en = jk_arena_printf(
                k->a,
                "the limit of %d bookings %s %s is reached (rule limit.counts) for the period of "
                "%s: book a visit on %s or later, or cancel a booking first",
                l->max, period_en[l->period], scope_en[l->scope], day, next);
            return refuse(k, JK_ERULE, "limit.counts", zh, en);
        }
        if (n_raised) ++*n_raised;
    }
    return JK_OK;
}

static jk_rc counters(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_policy *p,
                      const char *person, const char *org, const char *service, const char *day,
                      int delta)
{
    return counters_n(c, k, p, person, org, service, day, delta, SIZE_MAX, NULL);
}

/* ---- bookings ---- */

#define BOOKING_COLS                                                                               \
    "id, appointment_id, state, channel, patient_id, person, slot_id, until_ms, is_late, "         \
    "org, service, day, place_id, account_id"

struct row {
    struct jk_bk_booking b;
    const char *org, *service, *day;
    int64_t place_id, account_id;
};

static void read_row(struct jk_arena *a, jk_stmt *s, struct row *r)
{
    r->b.id = jk_stmt_col_int(s, 0);
    r->b.appointment_id = jk_stmt_col_is_null(s, 1) ? NULL : jk_stmt_col_dup(a, s, 1);
    r->b.state = jk_stmt_col_dup(a, s, 2);
    r->b.channel = jk_stmt_col_dup(a, s, 3);
    r->b.patient_id = jk_stmt_col_dup(a, s, 4);
    r->b.person = jk_stmt_col_dup(a, s, 5);
    r->b.slot_id = jk_stmt_col_dup(a, s, 6);
    r->b.until_ms = jk_stmt_col_int(s, 7);
    r->b.is_late = (int)jk_stmt_col_int(s, 8);
    r->org = r->b.org = jk_stmt_col_dup(a, s, 9);
    r->service = jk_stmt_col_dup(a, s, 10);
    r->day = jk_stmt_col_dup(a, s, 11);
    r->place_id = jk_stmt_col_int(s, 12);
    r->account_id = jk_stmt_col_int(s, 13);
}

static jk_rc row_get(jk_conn *c, struct jk_arena *a, int64_t id, const char *appointment_id,
                     struct row *r)
{
    static const char by_id[] = "SELECT " BOOKING_COLS " FROM bk_booking WHERE id = ?";
    static const char by_appt[] =
        "SELECT " BOOKING_COLS " FROM bk_booking WHERE appointment_id = ?";
    jk_stmt *s;
    int has_row;
    jk_rc rc = appointment_id ? jk_conn_query(c, by_appt, &s, &has_row, "t", appointment_id)
                              : jk_conn_query(c, by_id, &s, &has_row, "i", id);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) read_row(a, s, r);
    if (s) jk_stmt_reset(s);
    return rc;
}

jk_rc jk_bk_booking_get(jk_conn *c, struct jk_arena *a, int64_t id, const char *appointment_id,
                        struct jk_bk_booking *out)
{
    struct row r;
    jk_rc rc = row_get(c, a, id, appointment_id, &r);
    if (!rc) *out = r.b;
    return rc;
}

/* Gives back what a hold or booking took: its counters and (unless keep_place) its place. */
static jk_rc release(jk_conn *c, const struct jk_bk_call *k, const struct row *r, int keep_place)
{
    static const char sql_place[] =
        "UPDATE bk_place SET state = 'free', booking_id = NULL, until_ms = 0 WHERE id = ? AND "
        "booking_id = ?";
    struct jk_bk_policy p;
    jk_bk_policy(k->rules, r->org, &p);
    jk_rc rc = counters(c, k, &p, r->b.person, r->org, r->service, r->day, -1);
    if (!rc && !keep_place) rc = jk_conn_run(c, sql_place, NULL, "ii", r->place_id, r->b.id);
    return rc;
}

/* The person's holds that lapsed: marked lapsed, their counters and places given back. */
static jk_rc release_lapsed(jk_conn *c, const struct jk_bk_call *k, const char *person)
{
    static const char sql[] = "SELECT " BOOKING_COLS " FROM bk_booking WHERE person = ? AND "
                              "state = 'held' AND until_ms <= ?";
    static const char sql_lapse[] =
        "UPDATE bk_booking SET state = 'lapsed', updated_ms = ? WHERE id = ? AND state = 'held'";
    struct row rows[16];
    size_t n = 0;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "ti", person, k->now_ms);
    while (!rc && has_row && n < 16) {
        read_row(k->a, s, &rows[n++]);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n; i++) {
        int64_t changed = 0;
        rc = jk_conn_run(c, sql_lapse, &changed, "ii", k->now_ms, rows[i].b.id);
        if (!rc && changed) rc = release(c, k, &rows[i], 0);
    }
    return rc;
}

/* The booking that held place_id until it lapsed, taken over by a new claimant: lapsed, its
 * counters given back (its place is the new claimant's). */
static jk_rc lapse_taken(jk_conn *c, const struct jk_bk_call *k, int64_t booking_id)
{
    static const char sql_lapse[] =
        "UPDATE bk_booking SET state = 'lapsed', updated_ms = ? WHERE id = ? AND state = 'held'";
    struct row r;
    int64_t changed = 0;
    jk_rc rc = row_get(c, k->a, booking_id, NULL, &r);
    if (rc == JK_ENOTFOUND) return JK_OK;
    if (!rc) rc = jk_conn_run(c, sql_lapse, &changed, "ii", k->now_ms, booking_id);
    if (!rc && changed) rc = release(c, k, &r, 1);
    return rc;
}

jk_rc jk_bk_no_place(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                     const struct jk_bk_who *w)
{
    const char *ch = jk_bk_channel_name(w->channel);
    int64_t now = k->now_ms;
    /* not open yet for this channel (a wave to come), or full */
    static const char sql_opens[] = "SELECT min(open_ms) FROM bk_place WHERE slot_id = ? AND "
                                    "channel = ? AND open_ms > ? AND state = 'free'";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_query(c, sql_opens, &s, &has_row, "tti", sl->slot_id, ch, now);
    int64_t opens = !rc && has_row && !jk_stmt_col_is_null(s, 0) ? jk_stmt_col_int(s, 0) : 0;
    if (s) jk_stmt_reset(s);
    if (rc) return rc;
    if (opens) {
        struct jk_bk_policy p;
        jk_bk_policy(k->rules, sl->org, &p);
        const char *when = local_time(k, &p, opens);
        return refuse(k, JK_ERULE, "release.time",
                      jk_arena_printf(
                          k->a, "该时段的号源于 %s 开放预约（规则 release.time），届时再来", when),
                      jk_arena_printf(k->a,
                                      "the places of this slot open at %s (rule release.time): "
                                      "book from then",
                                      when));
    }
    return refuse(k, JK_ECONFLICT, "full", "该时段已没有可预约的号源，可加入候补队列",
                  "no place of this slot is left for your channel: join its waiting list");
}

/* Claims one place of slot s for booking booking_id, held until until_ms. JK_ECONFLICT with
 * an issue when none is left for w. *place_id. */
static jk_rc claim(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                   const struct jk_bk_who *w, int64_t booking_id, int64_t until_ms,
                   int64_t *place_id)
{
    static char sql_pick[320], sql_take[320];
    if (!sql_pick[0]) {
        snprintf(sql_pick, sizeof sql_pick,
                 "SELECT id, state, booking_id FROM bk_place%s ORDER BY n LIMIT 1", claim_where);
        snprintf(sql_take, sizeof sql_take,
                 "UPDATE bk_place SET state = 'held', booking_id = ?, until_ms = ?%s AND id = ?",
                 claim_where);
    }
    const char *ch = jk_bk_channel_name(w->channel);
    int64_t ret = may_take_returned(w), now = k->now_ms;
    for (int tries = 0; tries < MAX_TRIES; tries++) {
        jk_stmt *s;
        int has_row;
        int64_t id = 0, prev = 0, changed = 0;
        int was_held = 0;
        jk_rc rc =
            jk_conn_query(c, sql_pick, &s, &has_row, "ttiiii", sl->slot_id, ch, now, now, ret, now);
        if (!rc && has_row) {
            id = jk_stmt_col_int(s, 0);
            was_held = !strcmp(jk_stmt_col_text(s, 1, NULL), "held");
            prev = jk_stmt_col_is_null(s, 2) ? 0 : jk_stmt_col_int(s, 2);
        }
        if (s) jk_stmt_reset(s);
        if (rc) return rc;
        if (!has_row) break;
        rc = jk_conn_run(c, sql_take, &changed, "iittiiiii", booking_id, until_ms, sl->slot_id, ch,
                         now, now, ret, now, id);
        if (rc) return rc;
        if (!changed) continue; /* another transaction took it first: the next one */
        *place_id = id;
        return was_held && prev ? lapse_taken(c, k, prev) : JK_OK;
    }
    return jk_bk_no_place(c, k, sl, w);
}

/* The session key of a booking: who may have one booking in it (limit.session_scope). */
static const char *session_key(struct jk_arena *a, const struct jk_bk_policy *p,
                               const struct jk_bk_slot *sl)
{
    switch (p->session_scope) {
    case JK_BK_SCOPE_DEPARTMENT:
        return jk_arena_printf(a, "%s/%s/%s/%s", sl->org, sl->service, sl->day, sl->session);
    case JK_BK_SCOPE_INSTITUTION:
        return jk_arena_printf(a, "%s/%s/%s", sl->org, sl->day, sl->session);
    default: return jk_arena_printf(a, "%s/%s", sl->day, sl->session);
    }
}

jk_rc jk_bk_suspension(jk_conn *c, const char *person, int64_t now_ms, int64_t *until_ms,
                       int *noshows)
{
    static const char sql[] =
        "SELECT until_ms, noshows FROM bk_suspension WHERE person = ? AND until_ms > ?";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "ti", person, now_ms);
    *until_ms = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
    if (noshows) *noshows = !rc && has_row ? (int)jk_stmt_col_int(s, 1) : 0;
    if (s) jk_stmt_reset(s);
    return rc;
}

/* The checks before a claim by w of a place of sl for person: the slot is open, online
 * booking not suspended, no other booking in the session; then the counters raised. */
static jk_rc admit(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_policy *p,
                   const struct jk_bk_slot *sl, const struct jk_bk_who *w, const char *person,
                   const char *skey)
{
    static const char sql_session[] = "SELECT 1 FROM bk_booking WHERE person = ? AND "
                                      "session_key = ? AND state IN ('held', 'booked', 'arrived')";
    jk_stmt *s;
    int has_row;
    int64_t until = 0;
    int noshows = 0;
    if (strcmp(sl->status, "open") || sl->start_ms <= k->now_ms)
        return refuse(k, JK_ERULE, "closed", "该时段已停诊或已开始，不能预约",
                      "this slot is closed or has started: it cannot be booked");
    jk_rc rc = w->channel == JK_BK_ONLINE ? jk_bk_suspension(c, person, k->now_ms, &until, &noshows)
                                          : JK_OK;
    if (rc) return rc;
    if (until) {
        const char *when = local_time(k, p, until);
        return refuse(
            k, JK_ERULE, "noshow.ladder",
            jk_arena_printf(k->a,
                            "因本年度爽约 %d 次，网上预约暂停至 %s（规则 noshow.ladder），"
                            "届时可再预约",
                            noshows, when),
            jk_arena_printf(k->a,
                            "online booking is suspended until %s after %d no-shows "
                            "this year (rule noshow.ladder): book again from then",
                            when, noshows));
    }
    if ((rc = jk_conn_query(c, sql_session, &s, &has_row, "tt", person, skey))) {
        if (s) jk_stmt_reset(s);
        return rc;
    }
    jk_stmt_reset(s);
    if (has_row)
        return refuse(k, JK_ERULE, "limit.session_scope",
                      "同一就诊单元（同日同半天）只能预约一个号（规则 limit.session_scope），"
                      "请先取消已有的预约",
                      "one booking per session (the same half day; rule limit.session_scope): "
                      "cancel the one you have first");
    return counters(c, k, p, person, sl->org, sl->service, sl->day, 1);
}

static jk_rc insert_booking(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                            const struct jk_bk_who *w, const char *person, const char *skey,
                            const char *state, int64_t until_ms, int64_t *id)
{
    static const char sql[] =
        "INSERT INTO bk_booking (slot_id, place_id, person, patient_id, account_id, channel, org,"
        " service, day, session_key, state, until_ms, created_ms, updated_ms)"
        " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "tttittttttiii", sl->slot_id, person,
                             w->patient_id, w->account_id, jk_bk_channel_name(w->channel), sl->org,
                             sl->service, sl->day, skey, state, until_ms, k->now_ms, k->now_ms);
    *id = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
    if (s) jk_stmt_reset(s);
    if (rc == JK_ECONFLICT) /* a concurrent booking of the same person won the session */
        return refuse(k, JK_ERULE, "limit.session_scope",
                      "同一就诊单元只能预约一个号（规则 limit.session_scope）",
                      "one booking per session (rule limit.session_scope)");
    return rc ? rc : *id ? JK_OK : JK_EDB;
}

/* Holds a place of slot sl for w: the whole admission and claim. */
static jk_rc take(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                  const struct jk_bk_who *w, const char *state, int64_t until_ms, struct row *out)
{
    static const char sql_place[] = "UPDATE bk_booking SET place_id = ? WHERE id = ?";
    struct jk_bk_policy p;
    char person[JK_MPI_ID_MAX];
    jk_bk_policy(k->rules, sl->org, &p);
    jk_rc rc = jk_mpi_person_of(c, w->patient_id, person);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_EINVAL, "not-found", "patient",
                           "Patient/%s is not in the person index", w->patient_id);
    const char *skey = session_key(k->a, &p, sl);
    if (!rc) rc = release_lapsed(c, k, person);
    if (!rc) rc = admit(c, k, &p, sl, w, person, skey);
    if (!rc) rc = insert_booking(c, k, sl, w, person, skey, state, until_ms, &out->b.id);
    if (!rc) rc = claim(c, k, sl, w, out->b.id, until_ms, &out->place_id);
    if (!rc) rc = jk_conn_run(c, sql_place, NULL, "ii", out->place_id, out->b.id);
    if (rc) return rc;
    out->b.state = state;
    out->b.channel = jk_bk_channel_name(w->channel);
    out->b.patient_id = w->patient_id;
    out->b.person = jk_arena_strdup(k->a, person);
    out->b.slot_id = sl->slot_id;
    out->b.until_ms = until_ms;
    out->org = out->b.org = sl->org;
    out->service = sl->service;
    out->day = sl->day;
    return out->b.person ? JK_OK : JK_ENOMEM;
}

jk_rc jk_bk_hold(jk_conn *c, const struct jk_bk_call *k, const char *slot_id,
                 const struct jk_bk_who *w, struct jk_bk_booking *out)
{
    struct jk_bk_slot sl;
    struct jk_bk_policy p;
    struct row r = {0};
    jk_rc rc = jk_bk_slot_get(c, slot_id, &sl);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", "slot", "Slot/%s is not in the pool",
                           slot_id);
    if (rc) return rc;
    jk_bk_policy(k->rules, sl.org, &p);
    if (!(rc = take(c, k, &sl, w, "held", k->now_ms + p.hold_s * 1000LL, &r))) *out = r.b;
    return rc;
}

/* ---- the FHIR resources ---- */

jk_rc jk_bk_owned(jk_conn *c, const char *type, const char *id, int *is_owned, const char **how)
{
    static const char sql_appt[] = "SELECT 1 FROM bk_booking WHERE appointment_id = ?";
    static const char sql_slot[] = "SELECT 1 FROM bk_slot WHERE slot_id = ?";
    int is_appt = !strcmp(type, "Appointment");
    jk_stmt *s;
    jk_rc rc = jk_conn_query(c, is_appt ? sql_appt : sql_slot, &s, is_owned, "t", id);
    if (s) jk_stmt_reset(s);
    *how = is_appt ? "is a booking of the pool: change it with $cancel, $reschedule, $checkin "
                     "or $complete"
                   : "is a slot of the booking pool: change its Schedule and run $generate";
    return rc;
}

static void add_str(struct json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v));
}

static struct json_object *ref(const char *type, const char *id)
{
    struct json_object *r = json_object_new_object();
    char buf[200];
    snprintf(buf, sizeof buf, "%s/%s", type, id);
    add_str(r, "reference", buf);
    return r;
}

static struct json_object *participant(struct json_object *actor)
{
    struct json_object *p = json_object_new_object();
    json_object_object_add(p, "actor", actor);
    add_str(p, "status", "accepted");
    return p;
}

/* Writes res (type/id; a create when is_new) in the transaction, held by org when new. */
static jk_rc write_res(jk_conn *c, const struct jk_bk_call *k, struct json_object *res,
                       const char *type, const char *id, int is_new, const char *org)
{
    struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE,
                              .is_owner = 1,
                              .type = type,
                              .id = id,
                              .res = res,
                              .arena = k->a,
                              .diag = k->d,
                              .now_ms = k->now_ms};
    jk_rc rc = jk_fhir_write_prepare(&w);
    if (!rc) rc = jk_fhir_write_tx(c, &w);
    if (!rc && is_new && org)
        rc = jk_authz_set_holder(c, type, id, jk_arena_printf(k->a, "Organization/%s", org));
    return rc;
}

/* The new Appointment of a booking of slot sl. */
static struct json_object *appointment_new(const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                                           const struct row *r)
{
    char start[32], end[32], created[32];
    struct json_object *a = json_object_new_object(), *ext = json_object_new_object();
    struct json_object *arr = json_object_new_array(), *idf = json_object_new_object();
    add_str(a, "resourceType", "Appointment");
    add_str(ext, "url", NS "/StructureDefinition/booking-channel");
    add_str(ext, "valueCode", r->b.channel);
    json_object_array_add(arr, ext);
    json_object_object_add(a, "extension", arr);
    add_str(idf, "system", NS "/sid/booking");
    add_str(idf, "value", jk_arena_printf(k->a, "%lld", (long long)r->b.id));
    arr = json_object_new_array();
    json_object_array_add(arr, idf);
    json_object_object_add(a, "identifier", arr);
    add_str(a, "status", "booked");
    add_str(a, "start", jk_time_iso(sl->start_ms, start, sizeof start));
    add_str(a, "end", jk_time_iso(sl->end_ms, end, sizeof end));
    add_str(a, "created", jk_time_iso(k->now_ms, created, sizeof created));
    arr = json_object_new_array();
    json_object_array_add(arr, ref("Slot", sl->slot_id));
    json_object_object_add(a, "slot", arr);
    arr = json_object_new_array();
    json_object_array_add(arr, participant(ref("Patient", r->b.patient_id)));
    json_object_array_add(arr, participant(ref("HealthcareService", sl->service)));
    if (sl->actor[0]) {
        const char *slash = strchr(sl->actor, '/');
        if (slash) {
            char type[64];
            snprintf(type, sizeof type, "%.*s", (int)(slash - sl->actor), sl->actor);
            json_object_array_add(arr, participant(ref(type, slash + 1)));
        }
    }
    json_object_object_add(a, "participant", arr);
    return a;
}

/* The stored Appointment id, parsed (the caller puts it). */
static jk_rc appointment_read(jk_conn *c, const struct jk_bk_call *k, const char *id,
                              struct json_object **out)
{
    struct jk_res cur;
    jk_rc rc = jk_res_read(c, k->a, "Appointment", id, &cur);
    if (rc) return rc == JK_EGONE ? JK_ENOTFOUND : rc;
    *out = json_tokener_parse(cur.body);
    return *out ? JK_OK : JK_EDB;
}

/* Sets the stored Appointment id's status (and, when sl, its slot and times; when reason,
 * its cancelation reason) and writes it. */
static jk_rc appointment_update(jk_conn *c, const struct jk_bk_call *k, const char *id,
                                const char *status, const struct jk_bk_slot *sl, const char *reason)
{
    struct json_object *a;
    jk_rc rc = appointment_read(c, k, id, &a);
    if (rc) return rc;
    add_str(a, "status", status);
    if (sl) {
        char t[32];
        struct json_object *arr = json_object_new_array();
        json_object_array_add(arr, ref("Slot", sl->slot_id));
        json_object_object_add(a, "slot", arr);
        add_str(a, "start", jk_time_iso(sl->start_ms, t, sizeof t));
        add_str(a, "end", jk_time_iso(sl->end_ms, t, sizeof t));
    }
    if (reason) {
        struct json_object *cc = json_object_new_object();
        add_str(cc, "text", reason);
        json_object_object_add(a, "cancelationReason", cc);
    }
    rc = write_res(c, k, a, "Appointment", id, 0, NULL);
    json_object_put(a);
    return rc;
}

/* Counts a change of the slot's booked places by delta and, when that fills the slot or
 * frees a full one, writes its Slot resource's status. The row's lock orders concurrent
 * changes of one slot. */
static jk_rc slot_booked(jk_conn *c, const struct jk_bk_call *k, const char *slot_id, int delta)
{
    static const char sql[] = "UPDATE bk_slot SET n_booked = n_booked + ? WHERE slot_id = ?"
                              " RETURNING n_booked, capacity";
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "it", (int64_t)delta, slot_id);
    int64_t n = !rc && has_row ? jk_stmt_col_int(s, 0) : -1;
    int64_t cap = !rc && has_row ? jk_stmt_col_int(s, 1) : -1;
    if (s) jk_stmt_reset(s);
    if (rc) return rc;
    int is_change = (delta > 0 && n == cap) || (delta < 0 && n == cap - 1);
    if (!is_change) return JK_OK;
    struct jk_res cur;
    rc = jk_res_read(c, k->a, "Slot", slot_id, &cur);
    if (rc) return rc == JK_ENOTFOUND || rc == JK_EGONE ? JK_OK : rc; /* inventory only */
    struct json_object *o = json_tokener_parse(cur.body);
    if (!o) return JK_EDB;
    add_str(o, "status", delta > 0 ? "busy" : "free");
    rc = write_res(c, k, o, "Slot", slot_id, 0, NULL);
    json_object_put(o);
    return rc;
}

/* ---- notifications ---- */

/* The display name of type/id (Organization.name, HealthcareService.name, a Practitioner's
 * first name's text), or "" when it has none. */
static const char *display(jk_conn *c, const struct jk_bk_call *k, const char *type, const char *id)
{
    struct jk_res r;
    struct json_object *o, *names;
    const char *out = "";
    if (!id || !*id || jk_res_read(c, k->a, type, id, &r) || !(o = json_tokener_parse(r.body)))
        return out;
    const char *name = jk_json_str(o, "name");
    if (!name && json_object_object_get_ex(o, "name", &names) &&
        json_object_is_type(names, json_type_array) && json_object_array_length(names))
        name = jk_json_str(json_object_array_get_idx(names, 0), "text");
    if (name) out = jk_arena_strdup(k->a, name);
    json_object_put(o);
    return out ? out : "";
}

/* "11月30日 08:15": a time as a message shows it, local to p. */
static const char *message_time(const struct jk_bk_call *k, const struct jk_bk_policy *p,
                                int64_t ms)
{
    const char *t = local_time(k, p, ms); /* YYYY-MM-DD HH:MM */
    return jk_arena_printf(k->a, "%d月%d日 %s", (t[5] - '0') * 10 + t[6] - '0',
                           (t[8] - '0') * 10 + t[9] - '0', t + 11);
}

/* The payload of a notification about slot sl (the names and the local time its templates
 * show), with extra_key/extra a further field when not NULL. */
static const char *payload(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                           const char *extra_key, const char *extra)
{
    struct jk_bk_policy p;
    jk_bk_policy(k->rules, sl->org, &p);
    const char *slash = strchr(sl->actor, '/');
    struct json_object *o = json_object_new_object();
    add_str(o, "org", display(c, k, "Organization", sl->org));
    add_str(o, "service", display(c, k, "HealthcareService", sl->service));
    add_str(o, "practitioner", slash ? display(c, k, "Practitioner", slash + 1) : "");
    add_str(o, "start", message_time(k, &p, sl->start_ms));
    if (extra_key) add_str(o, extra_key, extra);
    const char *text =
        jk_arena_strdup(k->a, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return text;
}

/* A notification of topic with payload text about Appointment appointment_id (or, without
 * one, slot sl) to patient, due at due_ms. */
static jk_rc notify_text(jk_conn *c, const struct jk_bk_call *k, const char *topic,
                         const char *appointment_id, const char *patient,
                         const struct jk_bk_slot *sl, const char *text, int64_t due_ms)
{
    const char *r = appointment_id ? jk_arena_printf(k->a, "Appointment/%s", appointment_id)
                                   : jk_arena_printf(k->a, "Slot/%s", sl->slot_id);
    if (!text || !r) return JK_ENOMEM;
    return jk_outbox_put(c, topic, r, patient, text, k->now_ms, due_ms);
}

static jk_rc notify(jk_conn *c, const struct jk_bk_call *k, const char *topic,
                    const char *appointment_id, const char *patient, const struct jk_bk_slot *sl,
                    const char *extra_key, const char *extra, int64_t due_ms)
{
    return notify_text(c, k, topic, appointment_id, patient, sl,
                       payload(c, k, sl, extra_key, extra), due_ms);
}

/* The confirmation and the reminders of a booking (one payload for all). */
static jk_rc notify_booked(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                           const char *appointment_id, const char *patient)
{
    struct jk_bk_policy p;
    jk_bk_policy(k->rules, sl->org, &p);
    const char *text = payload(c, k, sl, NULL, NULL);
    jk_rc rc = notify_text(c, k, "booking.confirmed", appointment_id, patient, sl, text, k->now_ms);
    for (size_t i = 0; !rc && i < p.n_reminders; i++) {
        int64_t due = sl->start_ms - p.reminders_min[i] * MS_PER_MIN;
        if (due > k->now_ms)
            rc = notify_text(c, k, "booking.reminder", appointment_id, patient, sl, text, due);
    }
    return rc;
}

/* ---- book ---- */

static const char sql_state[] = "UPDATE bk_booking SET state = ?, updated_ms = ?, until_ms = 0,"
                                " appointment_id = COALESCE(appointment_id, ?) WHERE id = ?";
static const char sql_place_booked[] =
    "UPDATE bk_place SET state = 'booked', until_ms = 0 WHERE id = ? AND booking_id = ?";

/* Turns the hold r into a booking of slot sl: place booked, Appointment written. */
static jk_rc confirm(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                     struct row *r, const char *notify_patient)
{
    const char *id = jk_fhir_new_id(k->a);
    if (!id) return JK_ENOMEM;
    r->b.appointment_id = id;
    r->b.state = "booked";
    jk_rc rc = jk_conn_run(c, sql_state, NULL, "titi", "booked", k->now_ms, id, r->b.id);
    if (!rc) rc = jk_conn_run(c, sql_place_booked, NULL, "ii", r->place_id, r->b.id);
    if (!rc) rc = slot_booked(c, k, sl->slot_id, 1);
    if (rc) return rc;
    struct json_object *a = appointment_new(k, sl, r);
    rc = write_res(c, k, a, "Appointment", id, 1, sl->org);
    json_object_put(a);
    if (!rc) rc = notify_booked(c, k, sl, id, notify_patient ? notify_patient : r->b.patient_id);
    return rc;
}

jk_rc jk_bk_book(jk_conn *c, const struct jk_bk_call *k, int64_t hold_id, const char *slot_id,
                 const struct jk_bk_who *w, struct jk_bk_booking *out)
{
    struct jk_bk_slot sl;
    struct row r = {0};
    jk_rc rc;
    if (hold_id) {
        rc = row_get(c, k->a, hold_id, NULL, &r);
        if (rc == JK_ENOTFOUND)
            return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", "hold", "there is no hold %lld",
                               (long long)hold_id);
        if (rc) return rc;
        if (r.account_id != w->account_id)
            return jk_diag_add(k->d, JK_EFORBIDDEN, "forbidden", "hold",
                               "the hold %lld was made by another account", (long long)hold_id);
        if (strcmp(r.b.state, "held") || r.b.until_ms <= k->now_ms) {
            struct jk_bk_policy p;
            jk_bk_policy(k->rules, r.org, &p);
            return refuse(
                k, JK_ECONFLICT, "hold.seconds",
                jk_arena_printf(k->a, "该占号已于 %s 失效（规则 hold.seconds），请重新预约",
                                local_time(k, &p, r.b.until_ms)),
                jk_arena_printf(k->a, "the hold lapsed at %s (rule hold.seconds): book again",
                                local_time(k, &p, r.b.until_ms)));
        }
        slot_id = r.b.slot_id;
    }
    rc = jk_bk_slot_get(c, slot_id, &sl);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", "slot", "Slot/%s is not in the pool",
                           slot_id);
    if (!rc && !hold_id) rc = take(c, k, &sl, w, "held", k->now_ms, &r);
    if (!rc) rc = confirm(c, k, &sl, &r, w->notify_patient);
    if (!rc) *out = r.b;
    return rc;
}

/* ---- waiting list ---- */

/* Offers slot sl's place place_id (just freed, of whatever channel) to the first on its waiting
 * list who may take it: a hold of waitlist.offer_seconds and a notification. Persons who may not (a
 * limit, a suspension, a booking in the session) are passed over and leave the list. */
static jk_rc offer(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                   int64_t place_id)
{
    static const char sql_first[] =
        "SELECT id, person, patient_id, account_id, channel FROM bk_wait WHERE slot_id = ? AND "
        "state = 'waiting' ORDER BY id LIMIT 1";
    static const char sql_done[] = "UPDATE bk_wait SET state = ?, booking_id = ? WHERE id = ?";
    struct jk_bk_policy p;
    jk_bk_policy(k->rules, sl->org, &p);
    for (int i = 0; i < 16; i++) {
        jk_stmt *s;
        int has_row;
        jk_rc rc = jk_conn_query(c, sql_first, &s, &has_row, "t", sl->slot_id);
        if (rc || !has_row) {
            if (s) jk_stmt_reset(s);
            return rc;
        }
        int64_t wait_id = jk_stmt_col_int(s, 0);
        struct jk_bk_who w = {.account_id = jk_stmt_col_int(s, 3)};
        const char *person = jk_stmt_col_dup(k->a, s, 1);
        w.patient_id = jk_stmt_col_dup(k->a, s, 2);
        w.channel = (enum jk_bk_channel)jk_bk_channel_parse(jk_stmt_col_text(s, 4, NULL));
        jk_stmt_reset(s);
        /* Whether the offer would be refused, asked before anything is changed (a refusal
         * must not undo the cancellation that freed the place). */
        struct jk_diag quiet;
        struct jk_bk_call k2 = *k;
        jk_diag_init(&quiet, k->a);
        k2.d = &quiet;
        int64_t until = 0;
        const char *skey = session_key(k->a, &p, sl);
        jk_stmt *s2 = NULL;
        rc = jk_bk_suspension(c, person, k->now_ms, &until, NULL);
        if (!rc)
            rc = jk_conn_query(c,
                               "SELECT 1 FROM bk_booking WHERE person = ? AND session_key = ? AND "
                               "state IN ('held', 'booked', 'arrived')",
                               &s2, &has_row, "tt", person, skey);
        if (s2) jk_stmt_reset(s2);
        if (rc) return rc;
        int is_ok = !has_row && !(until && w.channel == JK_BK_ONLINE);
        struct row r = {0};
        if (is_ok) {
            size_t n_raised = 0;
            rc = counters_n(c, &k2, &p, person, sl->org, sl->service, sl->day, 1, SIZE_MAX,
                            &n_raised);
            if (rc == JK_ERULE) { /* counters raised before the refused one go back */
                rc = counters_n(c, &k2, &p, person, sl->org, sl->service, sl->day, -1, n_raised,
                                NULL);
                is_ok = 0;
            }
            if (rc) return rc;
        }
        if (!is_ok) {
            if ((rc = jk_conn_run(c, sql_done, NULL, "tti", "left", (const char *)NULL, wait_id)))
                return rc;
            continue;
        }
        int64_t hold_until = k->now_ms + p.offer_s * 1000LL;
        static const char sql_ins[] =
            "INSERT INTO bk_booking (slot_id, place_id, person, patient_id, account_id, channel,"
            " org, service, day, session_key, state, until_ms, created_ms, updated_ms)"
            " VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?, ?, 'held', ?, ?, ?) RETURNING id";
        rc = jk_conn_query(c, sql_ins, &s, &has_row, "tttitttttiii", sl->slot_id, person,
                           w.patient_id, w.account_id, jk_bk_channel_name(w.channel), sl->org,
                           sl->service, sl->day, skey, hold_until, k->now_ms, k->now_ms);
        r.b.id = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
        if (s) jk_stmt_reset(s);
        if (rc) return rc;
        int64_t changed = 0;
        rc = jk_conn_run(
            c,
            "UPDATE bk_place SET state = 'held', booking_id = ?, until_ms = ? WHERE id = ? "
            "AND state = 'free'",
            &changed, "iii", r.b.id, hold_until, place_id);
        if (!rc && !changed) rc = JK_ECONFLICT;
        if (!rc)
            rc = jk_conn_run(c, "UPDATE bk_booking SET place_id = ? WHERE id = ?", NULL, "ii",
                             place_id, r.b.id);
        if (!rc) rc = jk_conn_run(c, sql_done, NULL, "tii", "offered", r.b.id, wait_id);
        if (!rc)
            rc = notify(c, k, "booking.offer", NULL, w.patient_id, sl, "hold_until",
                        message_time(k, &p, hold_until), k->now_ms);
        return rc;
    }
    return JK_OK;
}

jk_rc jk_bk_wait(jk_conn *c, const struct jk_bk_call *k, const char *slot_id,
                 const struct jk_bk_who *w, int64_t *wait_id)
{
    static const char sql[] =
        "INSERT INTO bk_wait (slot_id, person, patient_id, account_id, channel, state,"
        " created_ms) VALUES (?, ?, ?, ?, ?, 'waiting', ?) RETURNING id";
    struct jk_bk_slot sl;
    char person[JK_MPI_ID_MAX];
    int n = 0, has_row;
    jk_stmt *s;
    jk_rc rc = jk_bk_slot_get(c, slot_id, &sl);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", "slot", "Slot/%s is not in the pool",
                           slot_id);
    if (!rc) rc = jk_mpi_person_of(c, w->patient_id, person);
    if (!rc) rc = jk_bk_free_places(c, k, &sl, w, &n);
    if (rc) return rc;
    if (strcmp(sl.status, "open") || sl.start_ms <= k->now_ms)
        return refuse(k, JK_ERULE, "closed", "该时段已停诊或已开始",
                      "this slot is closed or has started");
    if (n > 0)
        return refuse(k, JK_ECONFLICT, "not-full", "该时段仍有号源，请直接预约",
                      "this slot still has places: book one instead");
    rc = jk_conn_query(c, sql, &s, &has_row, "tttiti", slot_id, person, w->patient_id,
                       w->account_id, jk_bk_channel_name(w->channel), k->now_ms);
    *wait_id = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
    if (s) jk_stmt_reset(s);
    if (rc == JK_ECONFLICT)
        return refuse(k, JK_ECONFLICT, "waiting", "已在该时段的候补队列中",
                      "already on this slot's waiting list");
    return rc;
}

/* ---- cancel, reschedule, check-in ---- */

/* The deadline for cancelling a booking of sl without it counting as a no-show. */
static int64_t cancel_deadline(const struct jk_bk_policy *p, const struct jk_bk_slot *sl)
{
    char day[11];
    int64_t ms = sl->start_ms;
    if (jk_bk_day_add(sl->day, -p->cancel_days_before, day)) jk_bk_at(p, day, p->cancel_min, &ms);
    return ms < sl->start_ms ? ms : sl->start_ms;
}

/* A no-show (or a late cancellation) of person in the calendar year of day: counts them and
 * suspends online booking when that reaches a step of the ladder. */
static jk_rc strike(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_policy *p,
                    const char *person, const char *day)
{
    static const char sql_count[] =
        "SELECT count(*) FROM bk_booking WHERE person = ? AND (state = 'noshow' OR is_late = 1)"
        " AND day >= ? AND day <= ?";
    static const char sql_suspend[] =
        "INSERT INTO bk_suspension (person, until_ms, noshows, year, since_ms) VALUES (?, ?, ?, "
        "?, ?) ON CONFLICT (person) DO UPDATE SET until_ms = excluded.until_ms, noshows = "
        "excluded.noshows, year = excluded.year, since_ms = excluded.since_ms";
    char year[5], from[11], to[11];
    jk_stmt *s;
    int has_row;
    snprintf(year, sizeof year, "%.4s", day);
    snprintf(from, sizeof from, "%s-01-01", year);
    snprintf(to, sizeof to, "%s-12-31", year);
    jk_rc rc = jk_conn_query(c, sql_count, &s, &has_row, "ttt", person, from, to);
    int64_t n = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < p->n_ladder; i++)
        if (p->ladder[i].count == n)
            rc = jk_conn_run(c, sql_suspend, NULL, "tiiti", person,
                             k->now_ms + p->ladder[i].days * MS_PER_DAY, n, year, k->now_ms);
    return rc;
}

/* The booking of Appointment id in a state of states (space separated), or a 404/409. */
static jk_rc booking_in(jk_conn *c, const struct jk_bk_call *k, const char *id, const char *states,
                        struct row *r)
{
    jk_rc rc = row_get(c, k->a, 0, id, r);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", NULL,
                           "Appointment/%s is not a booking of the pool", id);
    if (rc) return rc;
    size_t n = strlen(r->b.state);
    for (const char *p = strstr(states, r->b.state); p; p = strstr(p + 1, r->b.state))
        if ((p == states || p[-1] == ' ') && (p[n] == ' ' || !p[n])) return JK_OK;
    return jk_diag_add_text(
        k->d, JK_ECONFLICT, "business-rule", NULL,
        jk_arena_printf(k->a, "该预约的状态为 %s，不能进行此操作", r->b.state),
        jk_arena_printf(k->a, "the appointment is %s: this is not possible now", r->b.state));
}

jk_rc jk_bk_cancel(jk_conn *c, const struct jk_bk_call *k, const char *appointment_id,
                   const char *reason, struct jk_bk_booking *out)
{
    static const char sql[] = "UPDATE bk_booking SET state = 'cancelled', is_late = ?, "
                              "updated_ms = ? WHERE id = ? AND state = 'booked'";
    struct row r;
    struct jk_bk_slot sl;
    struct jk_bk_policy p;
    int64_t changed = 0;
    jk_rc rc = booking_in(c, k, appointment_id, "booked", &r);
    if (!rc) rc = jk_bk_slot_get(c, r.b.slot_id, &sl);
    if (rc) return rc;
    jk_bk_policy(k->rules, sl.org, &p);
    int is_late = k->now_ms > cancel_deadline(&p, &sl);
    rc = jk_conn_run(c, sql, &changed, "iii", (int64_t)is_late, k->now_ms, r.b.id);
    if (!rc && !changed) rc = JK_ECONFLICT; /* a concurrent change came first */
    if (!rc) rc = release(c, k, &r, 0);
    if (!rc) rc = slot_booked(c, k, sl.slot_id, -1);
    if (!rc && is_late) rc = strike(c, k, &p, r.b.person, r.day);
    if (!rc)
        rc = appointment_update(c, k, appointment_id, "cancelled", NULL,
                                reason && *reason ? reason
                                : is_late         ? "cancelled after the deadline"
                                                  : "cancelled");
    if (!rc) rc = jk_outbox_void(c, jk_arena_printf(k->a, "Appointment/%s", appointment_id), NULL);
    if (!rc)
        rc = notify(c, k, "booking.cancelled", appointment_id, r.b.patient_id, &sl, "reason",
                    reason && *reason ? reason : "按您的要求", k->now_ms);
    if (!rc && sl.start_ms > k->now_ms) rc = offer(c, k, &sl, r.place_id);
    r.b.state = "cancelled";
    r.b.is_late = is_late;
    if (!rc) *out = r.b;
    return rc;
}

jk_rc jk_bk_reschedule(jk_conn *c, const struct jk_bk_call *k, const char *appointment_id,
                       const char *slot_id, const struct jk_bk_who *w, struct jk_bk_booking *out)
{
    static const char sql_old[] = "UPDATE bk_booking SET state = 'cancelled', updated_ms = ?,"
                                  " appointment_id = NULL WHERE id = ? AND state = 'booked'";
    static const char sql_move[] = "UPDATE bk_booking SET appointment_id = ? WHERE id = ?";
    struct row old, r = {0};
    struct jk_bk_slot from, to;
    int64_t changed = 0;
    jk_rc rc = booking_in(c, k, appointment_id, "booked", &old);
    if (!rc) rc = jk_bk_slot_get(c, old.b.slot_id, &from);
    if (!rc && (rc = jk_bk_slot_get(c, slot_id, &to)) == JK_ENOTFOUND)
        return jk_diag_add(k->d, JK_ENOTFOUND, "not-found", "slot", "Slot/%s is not in the pool",
                           slot_id);
    if (rc) return rc;
    struct jk_bk_policy p;
    jk_bk_policy(k->rules, from.org, &p);
    if (k->now_ms > cancel_deadline(&p, &from))
        return refuse(k, JK_ERULE, "cancel.deadline",
                      "已过取消截止时间，不能改约（规则 cancel.deadline）",
                      "the deadline for changes has passed (rule cancel.deadline)");
    /* the old booking ends (its place and counters given back), the new one takes over its
     * Appointment */
    rc = jk_conn_run(c, sql_old, &changed, "ii", k->now_ms, old.b.id);
    if (!rc && !changed) rc = JK_ECONFLICT;
    if (!rc) rc = release(c, k, &old, 0);
    if (!rc) rc = slot_booked(c, k, from.slot_id, -1);
    struct jk_bk_who w2 = *w;
    w2.patient_id = old.b.patient_id;
    if (!rc) rc = take(c, k, &to, &w2, "booked", 0, &r);
    if (!rc) rc = jk_conn_run(c, sql_move, NULL, "ti", appointment_id, r.b.id);
    if (!rc) rc = jk_conn_run(c, sql_place_booked, NULL, "ii", r.place_id, r.b.id);
    if (!rc) rc = slot_booked(c, k, to.slot_id, 1);
    if (!rc) rc = appointment_update(c, k, appointment_id, "booked", &to, NULL);
    if (!rc) rc = jk_outbox_void(c, jk_arena_printf(k->a, "Appointment/%s", appointment_id), NULL);
    if (!rc)
        rc = notify_booked(c, k, &to, appointment_id,
                           w->notify_patient ? w->notify_patient : old.b.patient_id);
    if (!rc && from.start_ms > k->now_ms) rc = offer(c, k, &from, old.place_id);
    r.b.appointment_id = appointment_id;
    if (!rc) *out = r.b;
    return rc;
}

jk_rc jk_bk_advance(jk_conn *c, const struct jk_bk_call *k, const char *appointment_id,
                    const char *state, struct jk_bk_booking *out)
{
    static const char sql[] =
        "UPDATE bk_booking SET state = ?, updated_ms = ? WHERE id = ? AND state = ?";
    int is_arrive = !strcmp(state, "arrived");
    struct row r;
    int64_t changed = 0;
    jk_rc rc = booking_in(c, k, appointment_id, is_arrive ? "booked" : "arrived", &r);
    if (!rc) rc = jk_conn_run(c, sql, &changed, "tiit", state, k->now_ms, r.b.id, r.b.state);
    if (!rc && !changed) rc = JK_ECONFLICT;
    if (!rc) rc = appointment_update(c, k, appointment_id, state, NULL, NULL);
    if (!rc && is_arrive)
        rc = jk_outbox_void(c, jk_arena_printf(k->a, "Appointment/%s", appointment_id),
                            "booking.reminder");
    r.b.state = state;
    if (!rc) *out = r.b;
    return rc;
}

/* ---- the sweeper ---- */

jk_rc jk_bk_sweep(jk_conn *c, const struct jk_bk_call *k, size_t max, size_t *n_done)
{
    static const char sql_due[] =
        "SELECT b.appointment_id, s.end_ms, s.org FROM bk_booking b JOIN bk_slot s ON s.slot_id "
        "= b.slot_id WHERE b.state = 'booked' AND b.day <= ? ORDER BY b.id";
    static const char sql_noshow[] =
        "UPDATE bk_booking SET state = 'noshow', updated_ms = ? WHERE id = ? AND state = 'booked'";
    static const char sql_offers[] =
        "SELECT w.id, w.slot_id FROM bk_wait w JOIN bk_booking b ON b.id = w.booking_id WHERE "
        "w.state = 'offered' AND b.state = 'held' AND b.until_ms <= ? ORDER BY w.id";
    char today[11];
    struct jk_bk_policy p0;
    jk_bk_policy(k->rules, NULL, &p0);
    jk_bk_day(&p0, k->now_ms, today);
    const char **ids = jk_arena_zalloc(k->a, (max + 1) * sizeof *ids);
    size_t n = 0;
    jk_stmt *s;
    int has_row;
    *n_done = 0;
    if (!ids) return JK_ENOMEM;
    jk_rc rc = jk_conn_query(c, sql_due, &s, &has_row, "t", today);
    while (!rc && has_row && n < max) {
        struct jk_bk_policy p;
        jk_bk_policy(k->rules, jk_stmt_col_text(s, 2, NULL), &p);
        if (jk_stmt_col_int(s, 1) + p.noshow_after_min * MS_PER_MIN <= k->now_ms)
            ids[n++] = jk_stmt_col_dup(k->a, s, 0);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n; i++) {
        struct row r;
        struct jk_bk_policy p;
        int64_t changed = 0;
        if ((rc = row_get(c, k->a, 0, ids[i], &r))) break;
        jk_bk_policy(k->rules, r.org, &p);
        rc = jk_conn_run(c, sql_noshow, &changed, "ii", k->now_ms, r.b.id);
        if (!rc && changed) rc = appointment_update(c, k, ids[i], "noshow", NULL, NULL);
        if (!rc && changed) rc = strike(c, k, &p, r.b.person, r.day);
        if (!rc && changed) ++*n_done;
    }
    /* offers that lapsed: the waiting entry is done, the place goes to the next in line */
    const char *slots[16];
    int64_t waits[16];
    size_t m = 0;
    if (!rc) rc = jk_conn_query(c, sql_offers, &s, &has_row, "i", k->now_ms);
    while (!rc && has_row && m < 16) {
        waits[m] = jk_stmt_col_int(s, 0);
        slots[m++] = jk_stmt_col_dup(k->a, s, 1);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < m; i++) {
        struct jk_bk_slot sl;
        rc =
            jk_conn_run(c, "UPDATE bk_wait SET state = 'lapsed' WHERE id = ?", NULL, "i", waits[i]);
        if (!rc) rc = jk_bk_slot_get(c, slots[i], &sl);
        if (!rc && sl.start_ms > k->now_ms) {
            /* the lapsed hold is given back first, so its place is free to offer */
            struct row r;
            static const char sql_hold[] = "SELECT b.id FROM bk_booking b JOIN bk_wait w ON "
                                           "w.booking_id = b.id WHERE w.id = ?";
            rc = jk_conn_query(c, sql_hold, &s, &has_row, "i", waits[i]);
            int64_t bid = !rc && has_row ? jk_stmt_col_int(s, 0) : 0;
            if (s) jk_stmt_reset(s);
            int64_t changed = 0;
            if (!rc && bid && !(rc = row_get(c, k->a, bid, NULL, &r))) {
                rc = jk_conn_run(
                    c,
                    "UPDATE bk_booking SET state = 'lapsed', updated_ms = ? WHERE id = ? "
                    "AND state = 'held'",
                    &changed, "ii", k->now_ms, bid);
                if (!rc && changed) rc = release(c, k, &r, 0);
            }
            if (!rc && changed) rc = offer(c, k, &sl, r.place_id);
        }
    }
    return rc;
}
