/* schedule.c - Schedules' session templates turned into Slots and places, the rolling horizon
 * that keeps them generated ahead, and the statistics of the pool. docs/internals/booking.md. */
#include "svc/booking/schedule.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "auth/authz.h"
#include "core/arena.h"
#include "core/diag.h"
#include "core/log.h"
#include "core/periodic.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "fhir/search.h"
#include "store/resource.h"

#define MS_PER_MIN  60000LL
#define MS_PER_HOUR 3600000LL

/* ---- reading the Schedule and its HealthcareService ---- */

struct session {
    unsigned days; /* bit 1u << weekday, 0 = Monday */
    int start_min, end_min, slice_min, per_slice;
    size_t idx; /* its position in Schedule.extension */
};

struct closure {
    char start[11], end[11];
    const char *reason;
};

struct tmpl {
    const char *id;
    int is_active;
    struct session s[JK_BK_MAX_SESSIONS];
    size_t n_s;
    struct closure e[JK_BK_MAX_EXCEPTIONS];
    size_t n_e;
    char horizon_from[11], horizon_to[11]; /* planningHorizon, "" when open */
    const char *service;                   /* HealthcareService id */
    const char *actor;                     /* "Practitioner/x", "Device/y", "Location/z" or "" */
    const char *fee;                       /* general, expert, special */
    char org[80];                          /* the institution's Organization id */
    struct json_object *schedule, *service_res; /* owned */
    struct jk_bk_policy p;
};

static void tmpl_free(struct tmpl *t)
{
    json_object_put(t->schedule);
    json_object_put(t->service_res);
}

static jk_rc read_json(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                       struct json_object **out)
{
    struct jk_res r;
    *out = NULL;
    jk_rc rc = jk_res_read(c, a, type, id, &r);
    if (rc) return rc;
    *out = r.body ? json_tokener_parse(r.body) : NULL;
    return *out ? JK_OK : JK_EINTERNAL;
}

/* The id of a reference "Type/id" of type, or NULL. */
static const char *ref_id(struct json_object *ref, const char *type)
{
    const char *s = jk_json_str(ref, "reference");
    size_t n = strlen(type);
    if (!s || strncmp(s, type, n) || s[n] != '/' || !jk_fhir_id_ok(s + n + 1)) return NULL;
    return s + n + 1;
}

/* The Schedule's actors: exactly one HealthcareService, at most one other. */
static jk_rc read_actors(struct jk_diag *d, struct jk_arena *a, struct tmpl *t)
{
    static const char *const others[] = {"Practitioner", "Device", "Location"};
    struct json_object *actors = NULL;
    json_object_object_get_ex(t->schedule, "actor", &actors);
    t->actor = "";
    for (size_t i = 0; i < json_object_array_length(actors); i++) {
        struct json_object *ref = json_object_array_get_idx(actors, i);
        const char *hs = ref_id(ref, "HealthcareService");
        if (hs && t->service)
            return jk_diag_add(d, JK_EINVAL, "invalid",
                               jk_arena_printf(a, "Schedule.actor[%zu]", i),
                               "a Schedule names one HealthcareService (its department)");
        if (hs) {
            t->service = hs;
            continue;
        }
        for (size_t k = 0; k < sizeof others / sizeof others[0] && !t->actor[0]; k++)
            if (ref_id(ref, others[k])) t->actor = jk_json_str(ref, "reference");
    }
    if (!t->service)
        return jk_diag_add(d, JK_EINVAL, "required", "Schedule.actor",
                           "a Schedule's actor must name its HealthcareService (the department "
                           "or examination service)");
    return JK_OK;
}

/* The HealthcareService: its institution and fee level. */
static jk_rc read_service(jk_conn *c, struct jk_arena *a, struct jk_diag *d, struct tmpl *t)
{
    jk_rc rc = read_json(c, a, "HealthcareService", t->service, &t->service_res);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE)
        return jk_diag_add(d, JK_EINVAL, "invalid", "Schedule.actor",
                           "HealthcareService/%s is not known", t->service);
    if (rc) return rc;
    struct json_object *by = NULL, *chars = NULL, *codings;
    json_object_object_get_ex(t->service_res, "providedBy", &by);
    const char *org = ref_id(by, "Organization");
    if (!org)
        return jk_diag_add(d, JK_EINVAL, "required", "HealthcareService.providedBy",
                           "HealthcareService/%s must name its institution (providedBy)",
                           t->service);
    snprintf(t->org, sizeof t->org, "%s", org);
    t->fee = "general";
    json_object_object_get_ex(t->service_res, "characteristic", &chars);
    for (size_t i = 0; i < json_object_array_length(chars); i++) {
        if (!json_object_object_get_ex(json_object_array_get_idx(chars, i), "coding", &codings))
            continue;
        for (size_t j = 0; j < json_object_array_length(codings); j++) {
            struct json_object *cd = json_object_array_get_idx(codings, j);
            const char *sys = jk_json_str(cd, "system"), *code = jk_json_str(cd, "code");
            if (!sys || strcmp(sys, JK_BK_FEE_SYSTEM)) continue;
            if (!code ||
                (strcmp(code, "general") && strcmp(code, "expert") && strcmp(code, "special")))
                return jk_diag_add(d, JK_EINVAL, "code-invalid",
                                   jk_arena_printf(a, "HealthcareService.characteristic[%zu]", i),
                                   "the fee level is general, expert or special");
            t->fee = code;
        }
    }
    return JK_OK;
}

/* "HH:MM" or "HH:MM:SS" (whole minutes) as minutes after midnight, or -1. */
static int parse_time(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if ((n != 5 && n != 8) || s[2] != ':' || (n == 8 && (s[5] != ':' || strcmp(s + 6, "00"))))
        return -1;
    for (size_t i = 0; i < 5; i++)
        if (i != 2 && (s[i] < '0' || s[i] > '9')) return -1;
    int h = (s[0] - '0') * 10 + s[1] - '0', m = (s[3] - '0') * 10 + s[4] - '0';
    return h < 24 && m < 60 ? h * 60 + m : -1;
}

static int weekday_of(const char *code)
{
    static const char *const days[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
    for (int i = 0; code && i < 7; i++)
        if (!strcmp(code, days[i])) return i;
    return -1;
}

/* A positive int value of sub-extension x, or -1. */
static int positive_int(struct json_object *x)
{
    struct json_object *v;
    if (!json_object_object_get_ex(x, "valuePositiveInt", &v) ||
        !json_object_is_type(v, json_type_int))
        return -1;
    int64_t n = json_object_get_int64(v);
    return n >= 1 && n <= 1000000 ? (int)n : -1;
}

/* An issue at Schedule.extension[i] (j < 0) or at its sub-extension j. */
static jk_rc bad(struct jk_diag *d, struct jk_arena *a, const char *code, size_t i, long j,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static jk_rc bad(struct jk_diag *d, struct jk_arena *a, const char *code, size_t i, long j,
                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    const char *msg = jk_arena_vprintf(a, fmt, ap);
    va_end(ap);
    const char *path = j < 0 ? jk_arena_printf(a, "Schedule.extension[%zu]", i)
                             : jk_arena_printf(a, "Schedule.extension[%zu].extension[%ld]", i, j);
    return jk_diag_add(d, JK_EINVAL, code, path, "%s", msg ? msg : "bad template");
}

/* One schedule-session extension (Schedule.extension[i]). */
static jk_rc read_session(struct jk_diag *d, struct jk_arena *a, struct tmpl *t, size_t i,
                          struct json_object *ext)
{
    struct json_object *subs = NULL;
    struct session s = {.start_min = -1, .end_min = -1, .slice_min = -1, .per_slice = -1, .idx = i};
    long at_end = -1, at_slice = -1;
    if (t->n_s == JK_BK_MAX_SESSIONS)
        return bad(d, a, "too-costly", i, -1, "a Schedule has at most %d session templates",
                   JK_BK_MAX_SESSIONS);
    json_object_object_get_ex(ext, "extension", &subs);
    for (size_t j = 0; j < json_object_array_length(subs); j++) {
        struct json_object *x = json_object_array_get_idx(subs, j);
        const char *url = jk_json_str(x, "url");
        long jj = (long)j;
        if (!url) return bad(d, a, "required", i, jj, "a sub-extension needs its url");
        if (!strcmp(url, "day")) {
            int wd = weekday_of(jk_json_str(x, "valueCode"));
            if (wd < 0)
                return bad(d, a, "value", i, jj,
                           "day is a valueCode: mon, tue, wed, thu, fri, sat or sun");
            s.days |= 1u << wd;
        } else if (!strcmp(url, "start") || !strcmp(url, "end")) {
            int m = parse_time(jk_json_str(x, "valueTime"));
            if (m < 0)
                return bad(d, a, "value", i, jj, "%s is a valueTime of whole minutes (08:00:00)",
                           url);
            if (url[0] == 's')
                s.start_min = m;
            else {
                s.end_min = m;
                at_end = jj;
            }
        } else if (!strcmp(url, "sliceMinutes")) {
            s.slice_min = positive_int(x);
            at_slice = jj;
            if (s.slice_min < 0)
                return bad(d, a, "value", i, jj, "sliceMinutes is a valuePositiveInt");
            if (s.slice_min > t->p.slot_max_min)
                return bad(d, a, "business-rule", i, jj,
                           "a slice is at most %d minutes (slot.max_minutes)", t->p.slot_max_min);
        } else if (!strcmp(url, "perSlice")) {
            s.per_slice = positive_int(x);
            if (s.per_slice < 0 || s.per_slice > JK_BK_MAX_PER_SLICE)
                return bad(d, a, "value", i, jj, "perSlice is a valuePositiveInt from 1 to %d",
                           JK_BK_MAX_PER_SLICE);
        } else {
            return bad(d, a, "structure", i, jj,
                       "unknown sub-extension '%s' (day, start, end, sliceMinutes, perSlice)", url);
        }
    }
    if (!s.days || s.start_min < 0 || s.end_min < 0 || s.slice_min < 0 || s.per_slice < 0)
        return bad(d, a, "required", i, -1,
                   "a session template needs day, start, end, sliceMinutes and perSlice");
    if (s.start_min >= s.end_min)
        return bad(d, a, "value", i, at_end, "a session ends after it starts");
    if ((s.end_min - s.start_min) % s.slice_min)
        return bad(d, a, "value", i, at_slice,
                   "%d minutes from start to end are not a whole number of %d-minute slices",
                   s.end_min - s.start_min, s.slice_min);
    for (size_t k = 0; k < t->n_s; k++) {
        const struct session *o = &t->s[k];
        if ((o->days & s.days) && s.start_min < o->end_min && o->start_min < s.end_min)
            return bad(d, a, "business-rule", i, -1,
                       "the session overlaps Schedule.extension[%zu] on a day both have", o->idx);
    }
    t->s[t->n_s++] = s;
    return JK_OK;
}

/* One schedule-exception extension (Schedule.extension[i]). */
static jk_rc read_exception(struct jk_diag *d, struct jk_arena *a, struct tmpl *t, size_t i,
                            struct json_object *ext)
{
    struct json_object *subs = NULL;
    struct closure e = {.reason = ""};
    long at_end = -1;
    if (t->n_e == JK_BK_MAX_EXCEPTIONS)
        return bad(d, a, "too-costly", i, -1, "a Schedule has at most %d exceptions",
                   JK_BK_MAX_EXCEPTIONS);
    json_object_object_get_ex(ext, "extension", &subs);
    for (size_t j = 0; j < json_object_array_length(subs); j++) {
        struct json_object *x = json_object_array_get_idx(subs, j);
        const char *url = jk_json_str(x, "url"), *v;
        if (url && (!strcmp(url, "start") || !strcmp(url, "end"))) {
            v = jk_json_str(x, "valueDate");
            if (!v || !jk_bk_day_ok(v))
                return bad(d, a, "value", i, (long)j, "%s is a valueDate (YYYY-MM-DD)", url);
            memcpy(url[0] == 's' ? e.start : e.end, v, 11);
            if (url[0] == 'e') at_end = (long)j;
        } else if (url && !strcmp(url, "reason")) {
            e.reason = jk_json_str(x, "valueString") ? jk_json_str(x, "valueString") : "";
        } else {
            return bad(d, a, "structure", i, (long)j,
                       "unknown sub-extension '%s' (start, end, reason)", url ? url : "");
        }
    }
    if (!e.start[0] || !e.end[0])
        return bad(d, a, "required", i, -1, "an exception needs start and end (valueDate)");
    if (strcmp(e.start, e.end) > 0)
        return bad(d, a, "value", i, at_end, "an exception ends on or after its start");
    t->e[t->n_e++] = e;
    return JK_OK;
}

static jk_rc read_template(struct jk_diag *d, struct jk_arena *a, struct tmpl *t)
{
    struct json_object *exts = NULL, *v, *ph;
    t->is_active =
        !json_object_object_get_ex(t->schedule, "active", &v) || json_object_get_boolean(v);
    if (json_object_object_get_ex(t->schedule, "planningHorizon", &ph)) {
        const char *s = jk_json_str(ph, "start"), *e = jk_json_str(ph, "end");
        if (s && strlen(s) >= 10) memcpy(t->horizon_from, s, 10);
        if (e && strlen(e) >= 10) memcpy(t->horizon_to, e, 10);
    }
    json_object_object_get_ex(t->schedule, "extension", &exts);
    for (size_t i = 0; i < json_object_array_length(exts); i++) {
        struct json_object *ext = json_object_array_get_idx(exts, i);
        const char *url = jk_json_str(ext, "url");
        jk_rc rc = JK_OK;
        if (url && !strcmp(url, JK_BK_SESSION_URL))
            rc = read_session(d, a, t, i, ext);
        else if (url && !strcmp(url, JK_BK_EXCEPTION_URL))
            rc = read_exception(d, a, t, i, ext);
        if (rc) return rc;
    }
    return JK_OK;
}

/* Reads Schedule id, its HealthcareService and (when r is given) its template. */
static jk_rc tmpl_load(jk_conn *c, struct jk_arena *a, struct jk_diag *d,
                       const struct jk_bk_rules *r, const char *id, struct tmpl *t)
{
    memset(t, 0, sizeof *t);
    t->id = id;
    jk_rc rc = read_json(c, a, "Schedule", id, &t->schedule);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE)
        return jk_diag_add(d, rc, "not-found", NULL, "Schedule/%s is not known", id);
    if (!rc) rc = read_actors(d, a, t);
    if (!rc) rc = read_service(c, a, d, t);
    if (rc || !r) return rc;
    if (strlen(id) > JK_BK_SCHEDULE_ID_MAX)
        return jk_diag_add(d, JK_EINVAL, "value", "Schedule.id",
                           "a Schedule that generates slots has an id of at most %d characters",
                           JK_BK_SCHEDULE_ID_MAX);
    jk_bk_policy(r, t->org, &t->p);
    return read_template(d, a, t);
}

jk_rc jk_bk_schedule_org(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const char *schedule_id,
                         char *org, size_t orglen)
{
    struct tmpl *t = jk_arena_alloc(a, sizeof *t);
    if (!t) return JK_ENOMEM;
    jk_rc rc = tmpl_load(c, a, d, NULL, schedule_id, t);
    if (!rc) snprintf(org, orglen, "%s", t->org);
    tmpl_free(t);
    return rc;
}

/* ---- generating ---- */

/* Why day is closed: an exception's reason, "public holiday", or NULL when it is open. */
static const char *closed_why(const struct jk_bk_rules *r, const struct tmpl *t, const char *day)
{
    for (size_t i = 0; i < t->n_e; i++)
        if (strcmp(day, t->e[i].start) >= 0 && strcmp(day, t->e[i].end) <= 0)
            return t->e[i].reason[0] ? t->e[i].reason : "schedule exception";
    return jk_bk_is_holiday(r, &t->p, day) ? "public holiday" : NULL;
}

/* The local time of minute min of day as a FHIR instant with the policy's offset. */
static void local_instant(const struct jk_bk_policy *p, const char *day, int min, char out[32])
{
    int off = p->utc_offset_min < 0 ? -p->utc_offset_min : p->utc_offset_min;
    snprintf(out, 32, "%.10sT%02d:%02d:00%c%02d:%02d", day, (min / 60) % 100, min % 60,
             p->utc_offset_min < 0 ? '-' : '+', (off / 60) % 100, off % 60);
}

static const char sql_slot_insert[] =
    "INSERT INTO bk_slot (slot_id, schedule_id, org, service, actor, fee_level, day, session,"
    " start_ms, end_ms, capacity, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')"
    " ON CONFLICT DO NOTHING";
static const char sql_place_insert[] =
    "INSERT INTO bk_place (slot_id, n, channel, open_ms, public_ms) VALUES (?, ?, ?, ?, ?)";

static jk_rc bind_text(jk_stmt *s, int i, const char *v)
{
    return jk_stmt_text_arg(s, i, v, strlen(v));
}

/* The bk_slot row; *is_new 0 when it was there already. */
static jk_rc slot_row(jk_conn *c, const struct tmpl *t, const char *slot_id, const char *day,
                      int64_t start_ms, int64_t end_ms, int capacity, int *is_new)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_slot_insert, &s);
    if (rc) return rc;
    if (!(rc = bind_text(s, 1, slot_id)) && !(rc = bind_text(s, 2, t->id)) &&
        !(rc = bind_text(s, 3, t->org)) && !(rc = bind_text(s, 4, t->service)) &&
        !(rc = bind_text(s, 5, t->actor)) && !(rc = bind_text(s, 6, t->fee)) &&
        !(rc = bind_text(s, 7, day)) && !(rc = bind_text(s, 8, jk_bk_session(&t->p, start_ms))) &&
        !(rc = jk_stmt_int_arg(s, 9, start_ms)) && !(rc = jk_stmt_int_arg(s, 10, end_ms)) &&
        !(rc = jk_stmt_int_arg(s, 11, capacity)))
        rc = jk_stmt_step(s, &has_row);
    *is_new = !rc && jk_stmt_changes(s) > 0;
    jk_stmt_reset(s);
    return rc;
}

static jk_rc place_rows(jk_conn *c, const struct tmpl *t, const char *slot_id, const char *day,
                        int64_t start_ms, int capacity)
{
    int counts[JK_BK_N_CHANNELS], n = 0, has_row;
    jk_bk_split(&t->p, capacity, counts);
    for (int ch = 0; ch < JK_BK_N_CHANNELS; ch++)
        for (int k = 0; k < counts[ch]; k++) {
            int64_t open_ms, public_ms;
            jk_stmt *s;
            jk_bk_place_times(&t->p, (enum jk_bk_channel)ch, day, start_ms, &open_ms, &public_ms);
            jk_rc rc = jk_conn_prepare(c, sql_place_insert, &s);
            if (rc) return rc;
            if (!(rc = bind_text(s, 1, slot_id)) && !(rc = jk_stmt_int_arg(s, 2, ++n)) &&
                !(rc = bind_text(s, 3, jk_bk_channel_name((enum jk_bk_channel)ch))) &&
                !(rc = jk_stmt_int_arg(s, 4, open_ms)) && !(rc = jk_stmt_int_arg(s, 5, public_ms)))
                rc = jk_stmt_step(s, &has_row);
            jk_stmt_reset(s);
            if (rc) return rc;
        }
    return JK_OK;
}

/* Writes res as type/id (a new version), held by the institution; res is consumed. */
static jk_rc write_res(jk_conn *c, struct jk_diag *d, const struct tmpl *t, const char *type,
                       const char *id, struct json_object *res, int64_t now_ms)
{
    struct jk_arena *a = jk_arena_new(0);
    if (!a) {
        json_object_put(res);
        return JK_ENOMEM;
    }
    struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE,
                              .is_owner = 1,
                              .type = type,
                              .id = id,
                              .res = res,
                              .arena = a,
                              .diag = d,
                              .now_ms = now_ms};
    char holder[100];
    snprintf(holder, sizeof holder, "Organization/%s", t->org);
    jk_rc rc = jk_fhir_write_prepare(&w);
    json_object_put(res); /* rendered into the arena */
    if (!rc) rc = jk_fhir_write_tx(c, &w);
    if (!rc) rc = jk_authz_set_holder(c, type, id, holder);
    jk_arena_free(a);
    return rc;
}

static void copy_member(struct json_object *to, struct json_object *from, const char *key,
                        const char *as)
{
    struct json_object *v;
    if (json_object_object_get_ex(from, key, &v))
        json_object_object_add(to, as, json_object_get(v));
}

static struct json_object *slot_resource(const struct tmpl *t, const char *day, int start_min,
                                         int end_min, int capacity)
{
    char start[32], end[32], ref[80];
    struct json_object *o = json_object_new_object(), *exts = json_object_new_array(),
                       *cap = json_object_new_object(), *sched = json_object_new_object();
    local_instant(&t->p, day, start_min, start);
    local_instant(&t->p, day, end_min, end);
    snprintf(ref, sizeof ref, "Schedule/%s", t->id);
    json_object_object_add(cap, "url", json_object_new_string(JK_BK_CAPACITY_URL));
    json_object_object_add(cap, "valuePositiveInt", json_object_new_int(capacity));
    json_object_array_add(exts, cap);
    json_object_object_add(o, "resourceType", json_object_new_string("Slot"));
    json_object_object_add(o, "extension", exts);
    copy_member(o, t->service_res, "category", "serviceCategory");
    copy_member(o, t->service_res, "type", "serviceType");
    copy_member(o, t->service_res, "specialty", "specialty");
    json_object_object_add(sched, "reference", json_object_new_string(ref));
    json_object_object_add(o, "schedule", sched);
    json_object_object_add(o, "status", json_object_new_string("free"));
    json_object_object_add(o, "start", json_object_new_string(start));
    json_object_object_add(o, "end", json_object_new_string(end));
    return o;
}

/* One slice: its bk_slot row, places and Slot, unless generated before. */
static jk_rc make_slice(jk_conn *c, struct jk_diag *d, const struct tmpl *t, const char *day,
                        const struct session *s, int start_min, int64_t now_ms, size_t *n_new)
{
    int64_t start_ms, end_ms;
    char slot_id[JK_BK_SCHEDULE_ID_MAX + 16];
    jk_rc rc = jk_bk_at(&t->p, day, start_min, &start_ms);
    if (rc || start_ms <= now_ms) return rc;
    end_ms = start_ms + s->slice_min * MS_PER_MIN;
    snprintf(slot_id, sizeof slot_id, "%s-%.4s%.2s%.2s%02d%02d", t->id, day, day + 5, day + 8,
             (start_min / 60) % 100, start_min % 60);
    int is_new = 0;
    if ((rc = slot_row(c, t, slot_id, day, start_ms, end_ms, s->per_slice, &is_new)) || !is_new)
        return rc;
    if ((rc = place_rows(c, t, slot_id, day, start_ms, s->per_slice))) return rc;
    struct json_object *res =
        slot_resource(t, day, start_min, start_min + s->slice_min, s->per_slice);
    if (!res) return JK_ENOMEM;
    if ((rc = write_res(c, d, t, "Slot", slot_id, res, now_ms))) return rc;
    (*n_new)++;
    return JK_OK;
}

static jk_rc make_day(jk_conn *c, struct jk_diag *d, const struct jk_bk_rules *r,
                      const struct tmpl *t, const char *day, int64_t now_ms, size_t *n_new)
{
    if ((t->horizon_from[0] && strcmp(day, t->horizon_from) < 0) ||
        (t->horizon_to[0] && strcmp(day, t->horizon_to) > 0) || closed_why(r, t, day))
        return JK_OK;
    unsigned bit = 1u << jk_bk_weekday(day);
    for (size_t i = 0; i < t->n_s; i++) {
        const struct session *s = &t->s[i];
        if (!(s->days & bit)) continue;
        for (int m = s->start_min; m + s->slice_min <= s->end_min; m += s->slice_min) {
            jk_rc rc = make_slice(c, d, t, day, s, m, now_ms, n_new);
            if (rc) return rc;
        }
    }
    return JK_OK;
}

/* ---- closing what exceptions and holidays cover ---- */

static const char sql_open_slots[] =
    "SELECT slot_id, day, start_ms FROM bk_slot WHERE schedule_id = ? AND status = 'open'"
    " AND start_ms > ? ORDER BY start_ms";
static const char sql_slot_close[] =
    "UPDATE bk_slot SET status = 'closed' WHERE slot_id = ? AND status = 'open'";
static const char sql_slot_bookings[] =
    "SELECT COALESCE(appointment_id, ''), patient_id, state FROM bk_booking WHERE slot_id = ?"
    " AND (state IN ('booked', 'arrived') OR (state = 'held' AND until_ms > ?)) ORDER BY id";

struct open_slot {
    const char *id;
    char day[11];
    int64_t start_ms;
};

static jk_rc list_open(jk_conn *c, struct jk_arena *a, const struct jk_bk_rules *r,
                       const struct tmpl *t, int64_t now_ms, struct open_slot **out, size_t *n)
{
    jk_stmt *s;
    int has_row = 0;
    size_t cap = 0;
    *out = NULL;
    *n = 0;
    jk_rc rc = jk_conn_prepare(c, sql_open_slots, &s);
    if (!rc && !(rc = bind_text(s, 1, t->id)) && !(rc = jk_stmt_int_arg(s, 2, now_ms)))
        rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row) {
        size_t len;
        const char *day = jk_stmt_col_text(s, 1, &len);
        if (len == 10 && closed_why(r, t, day)) {
            if (*n == cap) { /* grow in the arena */
                size_t ncap = cap ? cap * 2 : 32;
                struct open_slot *bigger = jk_arena_alloc(a, ncap * sizeof *bigger);
                if (!bigger) {
                    rc = JK_ENOMEM;
                    break;
                }
                if (*n) memcpy(bigger, *out, *n * sizeof *bigger);
                *out = bigger;
                cap = ncap;
            }
            struct open_slot *o = &(*out)[(*n)++];
            const char *id = jk_stmt_col_text(s, 0, &len);
            o->id = jk_arena_strndup(a, id, len);
            memcpy(o->day, day, 11);
            o->start_ms = jk_stmt_col_int(s, 2);
            if (!o->id) rc = JK_ENOMEM;
        }
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    jk_stmt_reset(s);
    return rc;
}

static jk_rc note_bookings(jk_conn *c, struct jk_arena *a, const struct open_slot *o,
                           int64_t now_ms, struct jk_bk_gen_result *out, size_t *cap)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_slot_bookings, &s);
    if (!rc && !(rc = bind_text(s, 1, o->id)) && !(rc = jk_stmt_int_arg(s, 2, now_ms)))
        rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row) {
        if (out->n_affected == *cap) {
            size_t ncap = *cap ? *cap * 2 : 16;
            struct jk_bk_affected *bigger = jk_arena_alloc(a, ncap * sizeof *bigger);
            if (!bigger) {
                rc = JK_ENOMEM;
                break;
            }
            if (out->n_affected) memcpy(bigger, out->affected, out->n_affected * sizeof *bigger);
            out->affected = bigger;
            *cap = ncap;
        }
        struct jk_bk_affected *b = &out->affected[out->n_affected++];
        size_t len;
        const char *v;
        b->slot_id = o->id;
        b->start_ms = o->start_ms;
        v = jk_stmt_col_text(s, 0, &len);
        b->appointment_id = jk_arena_strndup(a, v ? v : "", v ? len : 0);
        v = jk_stmt_col_text(s, 1, &len);
        b->patient_id = jk_arena_strndup(a, v ? v : "", v ? len : 0);
        v = jk_stmt_col_text(s, 2, &len);
        b->state = jk_arena_strndup(a, v ? v : "", v ? len : 0);
        if (!b->appointment_id || !b->patient_id || !b->state) rc = JK_ENOMEM;
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    jk_stmt_reset(s);
    return rc;
}

/* The Slot marked busy-unavailable, with why. */
static jk_rc slot_unavailable(jk_conn *c, struct jk_arena *a, struct jk_diag *d,
                              const struct tmpl *t, const char *slot_id, const char *why,
                              int64_t now_ms)
{
    struct json_object *res;
    jk_rc rc = read_json(c, a, "Slot", slot_id, &res);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE) return JK_OK; /* the row is what counts */
    if (rc) return rc;
    json_object_object_add(res, "status", json_object_new_string("busy-unavailable"));
    json_object_object_add(res, "comment", json_object_new_string(why));
    return write_res(c, d, t, "Slot", slot_id, res, now_ms);
}

static jk_rc close_covered(jk_conn *c, struct jk_arena *a, struct jk_diag *d,
                           const struct jk_bk_rules *r, const struct tmpl *t, int64_t now_ms,
                           struct jk_bk_gen_result *out)
{
    struct open_slot *list;
    size_t n, cap = 0;
    jk_rc rc = list_open(c, a, r, t, now_ms, &list, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        jk_stmt *s;
        int has_row;
        if ((rc = jk_conn_prepare(c, sql_slot_close, &s))) break;
        if (!(rc = bind_text(s, 1, list[i].id))) rc = jk_stmt_step(s, &has_row);
        int is_closed = !rc && jk_stmt_changes(s) > 0;
        jk_stmt_reset(s);
        if (rc || !is_closed) continue; /* closed by a concurrent generation */
        out->n_closed++;
        if (!(rc = note_bookings(c, a, &list[i], now_ms, out, &cap)))
            rc = slot_unavailable(c, a, d, t, list[i].id, closed_why(r, t, list[i].day), now_ms);
    }
    return rc;
}

char *jk_bk_horizon_day(const struct jk_bk_policy *p, int64_t now_ms, char out[static 11])
{
    char today[11];
    jk_bk_day(p, now_ms, today);
    if (!jk_bk_day_add(today, p->days_ahead + p->reserve_advance_days, out)) memcpy(out, today, 11);
    return out;
}

jk_rc jk_bk_generate(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const struct jk_bk_rules *r,
                     const char *schedule_id, const char *from_day, const char *through_day,
                     int64_t now_ms, struct jk_bk_gen_result *out)
{
    memset(out, 0, sizeof *out);
    struct tmpl *t = jk_arena_alloc(a, sizeof *t);
    if (!t) return JK_ENOMEM;
    jk_rc rc = tmpl_load(c, a, d, r, schedule_id, t);
    if (!rc) snprintf(out->org, sizeof out->org, "%s", t->org);
    if (rc || !t->is_active) {
        tmpl_free(t);
        return rc;
    }
    char from[11], through[11], day[11];
    if (from_day)
        snprintf(from, sizeof from, "%s", from_day);
    else
        jk_bk_day(&t->p, now_ms, from);
    if (through_day)
        snprintf(through, sizeof through, "%s", through_day);
    else
        jk_bk_horizon_day(&t->p, now_ms, through);
    char last[11];
    if (!jk_bk_day_ok(from) || !jk_bk_day_ok(through) ||
        !jk_bk_day_add(from, JK_BK_MAX_DAYS - 1, last) || strcmp(through, last) > 0)
        rc = jk_diag_add(d, JK_EINVAL, "value", NULL,
                         "the days to generate are from and through dates (YYYY-MM-DD) at most "
                         "%d days apart",
                         JK_BK_MAX_DAYS);
    memcpy(day, from, 11);
    while (!rc && strcmp(day, through) <= 0) {
        char next[11];
        rc = make_day(c, d, r, t, day, now_ms, &out->n_new);
        if (!rc && !jk_bk_day_add(day, 1, next)) rc = JK_EINTERNAL;
        if (!rc) memcpy(day, next, 11);
    }
    if (!rc) rc = close_covered(c, a, d, r, t, now_ms, out);
    tmpl_free(t);
    return rc;
}

/* ---- the rolling horizon ---- */

struct extend_job {
    const struct jk_bk_rules *r;
    const char *id;
    int64_t now_ms;
    struct jk_arena *a;
    struct jk_diag d;
    struct jk_bk_gen_result res;
};

static jk_rc extend_tx(jk_conn *c, void *arg)
{
    struct extend_job *j = arg;
    return jk_bk_generate(c, j->a, &j->d, j->r, j->id, NULL, NULL, j->now_ms, &j->res);
}

jk_rc jk_bk_extend_all(jk_store *st, const struct jk_bk_rules *r, int64_t now_ms, size_t *n_new)
{
    struct jk_arena *a = jk_arena_new(0);
    jk_conn *c = jk_store_conn(st);
    struct jk_diag d;
    const char **ids = NULL;
    size_t n = 0, made = 0, failed = 0;
    if (n_new) *n_new = 0;
    if (!a) return JK_ENOMEM;
    jk_diag_init(&d, a);
    static const char *const keys[] = {"active:not"}, *const values[] = {"false"};
    jk_rc rc = c ? jk_fhir_search_match(c, a, &d, "Schedule", keys, values, 1, JK_BK_MAX_SCHEDULES,
                                        &ids, &n)
                 : JK_EDB;
    if (rc)
        jk_log_error("booking", "the Schedules cannot be listed: %s%s%s", jk_rc_name(rc),
                     d.head ? ": " : "", d.head ? d.head->msg : "");
    for (size_t i = 0; i < n && !rc; i++) {
        struct extend_job j = {.r = r, .id = ids[i], .now_ms = now_ms, .a = jk_arena_new(0)};
        if (!j.a) {
            rc = JK_ENOMEM;
            break;
        }
        jk_diag_init(&j.d, j.a);
        jk_rc one = jk_store_tx(st, extend_tx, &j);
        if (one) {
            failed++;
            jk_log_warn("booking", "Schedule/%s: no slots generated: %s%s%s", ids[i],
                        jk_rc_name(one), j.d.head ? ": " : "", j.d.head ? j.d.head->msg : "");
        } else {
            made += j.res.n_new;
            if (j.res.n_affected)
                jk_log_warn("booking",
                            "Schedule/%s: %zu booking(s) in slots closed by an "
                            "exception or a holiday",
                            ids[i], j.res.n_affected);
        }
        jk_arena_free(j.a);
    }
    if (!rc && (made || failed))
        jk_log_info("booking",
                    "slot horizon: %zu slot(s) generated over %zu schedule(s), %zu failed", made, n,
                    failed);
    if (n_new) *n_new = made;
    jk_arena_free(a);
    return rc;
}

struct jk_bk_horizon {
    jk_store *st;
    const struct jk_bk_rules *r;
    struct jk_periodic *thread;
};

static void horizon_tick(void *arg)
{
    struct jk_bk_horizon *h = arg;
    jk_rc rc = jk_bk_extend_all(h->st, h->r, jk_time_now_ms(), NULL);
    if (rc) jk_log_error("booking", "the slot horizon could not be extended: %s", jk_rc_name(rc));
}

jk_rc jk_bk_horizon_start(jk_store *st, const struct jk_bk_rules *r, int64_t every_ms,
                          struct jk_bk_horizon **out)
{
    struct jk_bk_horizon *h = calloc(1, sizeof *h);
    if (!h) return JK_ENOMEM;
    h->st = st;
    h->r = r;
    if (every_ms <= 0 || every_ms > INT32_MAX) every_ms = MS_PER_HOUR;
    jk_rc rc = jk_periodic_start(horizon_tick, h, (int)every_ms, &h->thread);
    if (rc) {
        free(h);
        return rc;
    }
    *out = h;
    return JK_OK;
}

void jk_bk_horizon_stop(struct jk_bk_horizon *h)
{
    if (!h) return;
    jk_periodic_stop(h->thread);
    free(h);
}

/* ---- statistics ---- */

static const char sql_stat_places_all[] =
    "SELECT s.org, s.service, s.day, COUNT(*),"
    " SUM(CASE WHEN s.fee_level IN ('expert', 'special') THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN s.fee_level IN ('expert', 'special') AND (p.channel = 'online'"
    " OR p.public_ms > 0) THEN 1 ELSE 0 END)"
    " FROM bk_slot s JOIN bk_place p ON p.slot_id = s.slot_id"
    " WHERE s.status = 'open' AND s.day >= ? AND s.day <= ? GROUP BY s.org, s.service, s.day";
static const char sql_stat_places_org[] =
    "SELECT s.org, s.service, s.day, COUNT(*),"
    " SUM(CASE WHEN s.fee_level IN ('expert', 'special') THEN 1 ELSE 0 END),"
    " SUM(CASE WHEN s.fee_level IN ('expert', 'special') AND (p.channel = 'online'"
    " OR p.public_ms > 0) THEN 1 ELSE 0 END)"
    " FROM bk_slot s JOIN bk_place p ON p.slot_id = s.slot_id"
    " WHERE s.status = 'open' AND s.day >= ? AND s.day <= ? AND s.org = ?"
    " GROUP BY s.org, s.service, s.day";
static const char sql_stat_bookings_all[] =
    "SELECT org, service, day, channel, state, is_late, COUNT(*) FROM bk_booking"
    " WHERE day >= ? AND day <= ? AND state IN ('booked', 'arrived', 'fulfilled', 'noshow',"
    " 'cancelled') GROUP BY org, service, day, channel, state, is_late";
static const char sql_stat_bookings_org[] =
    "SELECT org, service, day, channel, state, is_late, COUNT(*) FROM bk_booking"
    " WHERE day >= ? AND day <= ? AND org = ? AND state IN ('booked', 'arrived', 'fulfilled',"
    " 'noshow', 'cancelled') GROUP BY org, service, day, channel, state, is_late";

struct stat_set {
    struct jk_arena *a;
    struct jk_bk_stat *rows;
    size_t n, cap;
    struct json_object *index; /* "org|service|day" -> row number */
};

static struct jk_bk_stat *stat_row(struct stat_set *set, jk_stmt *s)
{
    size_t lo, ls, ld;
    const char *org = jk_stmt_col_text(s, 0, &lo), *svc = jk_stmt_col_text(s, 1, &ls),
               *day = jk_stmt_col_text(s, 2, &ld);
    char *key = jk_arena_printf(set->a, "%.*s|%.*s|%.*s", (int)lo, org ? org : "", (int)ls,
                                svc ? svc : "", (int)ld, day ? day : "");
    struct json_object *at;
    if (!key) return NULL;
    if (json_object_object_get_ex(set->index, key, &at)) return &set->rows[json_object_get_int(at)];
    if (set->n == set->cap) {
        size_t ncap = set->cap ? set->cap * 2 : 64;
        struct jk_bk_stat *bigger = jk_arena_alloc(set->a, ncap * sizeof *bigger);
        if (!bigger) return NULL;
        if (set->n) memcpy(bigger, set->rows, set->n * sizeof *bigger);
        set->rows = bigger;
        set->cap = ncap;
    }
    struct jk_bk_stat *row = &set->rows[set->n];
    memset(row, 0, sizeof *row);
    row->org = jk_arena_strndup(set->a, org ? org : "", lo);
    row->service = jk_arena_strndup(set->a, svc ? svc : "", ls);
    row->day = jk_arena_strndup(set->a, day ? day : "", ld);
    if (!row->org || !row->service || !row->day) return NULL;
    json_object_object_add(set->index, key, json_object_new_int((int)set->n));
    set->n++;
    return row;
}

static jk_rc stat_query(jk_conn *c, const char *sql, const char *org, const char *from,
                        const char *to, jk_stmt **out, int *has_row)
{
    jk_rc rc = jk_conn_prepare(c, sql, out);
    if (rc) return rc;
    if (!(rc = bind_text(*out, 1, from)) && !(rc = bind_text(*out, 2, to)) &&
        (!org || !(rc = bind_text(*out, 3, org))))
        rc = jk_stmt_step(*out, has_row);
    if (rc) jk_stmt_reset(*out);
    return rc;
}

static jk_rc stat_places(jk_conn *c, struct stat_set *set, const char *org, const char *from,
                         const char *to)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc =
        stat_query(c, org ? sql_stat_places_org : sql_stat_places_all, org, from, to, &s, &has_row);
    while (!rc && has_row) {
        struct jk_bk_stat *row = stat_row(set, s);
        if (!row)
            rc = JK_ENOMEM;
        else {
            row->published += jk_stmt_col_int(s, 3);
            row->specialist += jk_stmt_col_int(s, 4);
            row->specialist_online += jk_stmt_col_int(s, 5);
            rc = jk_stmt_step(s, &has_row);
        }
    }
    if (!rc) jk_stmt_reset(s);
    return rc;
}

static jk_rc stat_bookings(jk_conn *c, const struct jk_bk_rules *r, struct stat_set *set,
                           const char *org, const char *from, const char *to)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = stat_query(c, org ? sql_stat_bookings_org : sql_stat_bookings_all, org, from, to, &s,
                          &has_row);
    while (!rc && has_row) {
        struct jk_bk_stat *row = stat_row(set, s);
        size_t len;
        const char *ch_name = jk_stmt_col_text(s, 3, &len), *state = jk_stmt_col_text(s, 4, &len);
        int ch = jk_bk_channel_parse(ch_name);
        int64_t n = jk_stmt_col_int(s, 6);
        if (!row) {
            rc = JK_ENOMEM;
            break;
        }
        if (state && !strcmp(state, "cancelled")) {
            row->cancelled += n;
            if (jk_stmt_col_int(s, 5)) row->cancelled_late += n;
        } else if (ch >= 0) {
            struct jk_bk_policy p;
            jk_bk_policy(r, row->org, &p);
            row->booked[ch] += n;
            row->booked_total += n;
            if (p.reserved >> ch & 1u) row->reserved_booked += n;
            if (state && !strcmp(state, "noshow")) row->noshow += n;
        }
        rc = jk_stmt_step(s, &has_row);
    }
    if (!rc) jk_stmt_reset(s);
    return rc;
}

static int stat_cmp(const void *x, const void *y)
{
    const struct jk_bk_stat *a = x, *b = y;
    int k = strcmp(a->org, b->org);
    if (!k) k = strcmp(a->service, b->service);
    return k ? k : strcmp(a->day, b->day);
}

static void stat_add(struct jk_bk_stat *to, const struct jk_bk_stat *r)
{
    to->published += r->published;
    for (int ch = 0; ch < JK_BK_N_CHANNELS; ch++)
        to->booked[ch] += r->booked[ch];
    to->booked_total += r->booked_total;
    to->reserved_booked += r->reserved_booked;
    to->cancelled += r->cancelled;
    to->cancelled_late += r->cancelled_late;
    to->noshow += r->noshow;
    to->specialist += r->specialist;
    to->specialist_online += r->specialist_online;
}

jk_rc jk_bk_stats(jk_conn *c, struct jk_arena *a, const struct jk_bk_rules *r, const char *org,
                  const char *from_day, const char *to_day, struct jk_bk_stat **rows,
                  size_t *n_rows, struct jk_bk_stat *total)
{
    struct stat_set set = {.a = a, .index = json_object_new_object()};
    if (!set.index) return JK_ENOMEM;
    if (org && !org[0]) org = NULL;
    jk_rc rc = stat_places(c, &set, org, from_day, to_day);
    if (!rc) rc = stat_bookings(c, r, &set, org, from_day, to_day);
    json_object_put(set.index);
    if (rc) return rc;
    if (set.n) qsort(set.rows, set.n, sizeof *set.rows, stat_cmp);
    memset(total, 0, sizeof *total);
    total->day = "";
    for (size_t i = 0; i < set.n; i++)
        stat_add(total, &set.rows[i]);
    *rows = set.rows;
    *n_rows = set.n;
    return JK_OK;
}
