/* booking_api.c - the booking pool over HTTP (docs/internals/booking.md, docs/api.md): find
 * slots with their live remaining places, hold, book, cancel, reschedule, check in, complete,
 * the waiting list, a resident's own bookings and the desk's list of the day. Every change
 * commits with its audit record in one transaction; a refusal is recorded by the guard. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "mpi/mpi.h"
#include "svc/booking/booking.h"

#define BK_JSON       "application/json; charset=utf-8"
#define MAX_REASON    200
#define FIND_MAX      500 /* slots one find returns */
#define LIST_MAX      500 /* bookings one list returns */
#define MAX_FIND_DAYS 31

enum op { OP_HOLD, OP_BOOK, OP_CANCEL, OP_RESCHEDULE, OP_ARRIVE, OP_COMPLETE, OP_WAIT };

struct job {
    struct jk_http_req *rq;
    struct jk_api_guard *g;
    enum op op;
    struct jk_bk_call k;
    struct jk_bk_who w;
    const char *slot, *appointment, *reason;
    int64_t hold_id, wait_id;
    int names_actor; /* the slot's Appointment names a Practitioner (or Device, Location) */
    struct jk_bk_booking out;
    jk_rc rc;
};

static const struct jk_bk_rules *rules(void)
{
    return jk_bk_rules();
}

/* ---- Parameters ---- */

/* The value of parameter name of a Parameters resource as text (valueString, valueCode,
 * valueId, valueDate, valueInteger, valueReference.reference) copied into the arena, or
 * NULL. */
static const char *param(struct jk_arena *a, struct json_object *params, const char *name)
{
    static const char *const kinds[] = {"valueString", "valueCode",    "valueId",
                                        "valueDate",   "valueInstant", NULL};
    struct json_object *arr, *v;
    if (!params || !json_object_object_get_ex(params, "parameter", &arr)) return NULL;
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        struct json_object *p = json_object_array_get_idx(arr, i);
        const char *n = jk_json_str(p, "name");
        if (!n || strcmp(n, name)) continue;
        for (int k = 0; kinds[k]; k++)
            if (jk_json_str(p, kinds[k])) return jk_arena_strdup(a, jk_json_str(p, kinds[k]));
        if (json_object_object_get_ex(p, "valueInteger", &v))
            return jk_arena_printf(a, "%lld", (long long)json_object_get_int64(v));
        if (json_object_object_get_ex(p, "valueReference", &v) && jk_json_str(v, "reference"))
            return jk_arena_strdup(a, jk_json_str(v, "reference"));
    }
    return NULL;
}

/* The request's Parameters (an empty body: none). 400 when it is something else. */
static jk_rc parameters(struct jk_http_req *rq, struct json_object **out)
{
    *out = NULL;
    if (!rq->body_len) return JK_OK;
    jk_rc rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, out);
    if (rc) return rc;
    const char *t = jk_json_str(*out, "resourceType");
    struct json_object *arr;
    if (!t || strcmp(t, "Parameters"))
        return jk_diag_add(&rq->diag, JK_EINVAL, "structure", "Parameters",
                           "the body must be a Parameters resource");
    if (json_object_object_get_ex(*out, "parameter", &arr) &&
        !json_object_is_type(arr, json_type_array))
        return jk_diag_add(&rq->diag, JK_EINVAL, "structure", "Parameters.parameter",
                           "parameter must be a list");
    return JK_OK;
}

/* A reference type/<id> (or a bare id) in s: its id, or NULL with an issue naming what. */
static const char *ref_id(struct jk_http_req *rq, const char *s, const char *type, const char *what)
{
    const char *id = s ? jk_api_ref_id(s, type) : NULL;
    if (!s)
        jk_diag_add(&rq->diag, JK_EINVAL, "required", what, "%s is required (%s/<id>)", what, type);
    else if (!jk_fhir_id_ok(id))
        jk_diag_add(&rq->diag, JK_EINVAL, "value", what, "%s must be a reference %s/<id>", what,
                    type);
    else
        return id;
    return NULL;
}

/* ---- the job: checks on the request thread, the change in one transaction ---- */

static const char *const actions[] = {"booking-hold",       "booking-book",    "booking-cancel",
                                      "booking-reschedule", "booking-checkin", "booking-complete",
                                      "booking-wait"};

static jk_rc job_tx(jk_conn *c, void *arg)
{
    struct job *j = arg;
    jk_rc rc;
    switch (j->op) {
    case OP_HOLD: rc = jk_bk_hold(c, &j->k, j->slot, &j->w, &j->out); break;
    case OP_BOOK: rc = jk_bk_book(c, &j->k, j->hold_id, j->slot, &j->w, &j->out); break;
    case OP_CANCEL: rc = jk_bk_cancel(c, &j->k, j->appointment, j->reason, &j->out); break;
    case OP_RESCHEDULE:
        rc = jk_bk_reschedule(c, &j->k, j->appointment, j->slot, &j->w, &j->out);
        break;
    case OP_ARRIVE: rc = jk_bk_advance(c, &j->k, j->appointment, "arrived", &j->out); break;
    case OP_COMPLETE: rc = jk_bk_advance(c, &j->k, j->appointment, "fulfilled", &j->out); break;
    default: rc = jk_bk_wait(c, &j->k, j->slot, &j->w, &j->wait_id); break;
    }
    const struct jk_audit *au = jk_api_app(j->rq)->audit;
    if (rc || j->g->is_off || !au) return rc;
    struct jk_audit_rec r = j->g->recs[0];
    r.action = actions[j->op];
    r.res_type = j->out.appointment_id ? "Appointment" : "Slot";
    r.res_id = j->out.appointment_id ? j->out.appointment_id : j->slot;
    r.patient_id = j->out.patient_id ? j->out.patient_id : j->w.patient_id;
    r.outcome = JK_OK;
    if ((rc = jk_audit_append(au, c, &r, NULL))) return rc;
    j->g->is_recorded = 1;
    return JK_OK;
}

static void job_done(void *arg, jk_rc rc)
{
    struct job *j = arg;
    j->rc = rc;
    if (rc) j->g->is_recorded = 0; /* rolled back: on_ready records the refusal */
    jk_http_wake(j->rq);
}

/* The stored Appointment id, as FHIR JSON (status; Location when created). */
static jk_rc send_appointment(struct jk_http_req *rq, int status, const char *id)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    struct jk_res r;
    jk_rc rc = c ? jk_res_read(c, rq->arena, "Appointment", id, &r) : JK_EDB;
    if (rc) return rc;
    jk_api_version_headers(rq, &r, status == 201);
    return jk_api_send_fhir(rq, status, r.body, r.body_len);
}

static jk_rc send_params(struct jk_http_req *rq, int status, struct json_object *o)
{
    size_t n;
    const char *t = jk_json_text(o, rq->arena, &n);
    json_object_put(o);
    if (!t) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, status, JK_FHIR_JSON, t, n);
}

static void add_param(struct json_object *params, const char *name, const char *kind,
                      struct json_object *v)
{
    struct json_object *arr, *p = json_object_new_object();
    if (!json_object_object_get_ex(params, "parameter", &arr)) {
        arr = json_object_new_array();
        json_object_object_add(params, "parameter", arr);
    }
    json_object_object_add(p, "name", json_object_new_string(name));
    json_object_object_add(p, kind, v);
    json_object_array_add(arr, p);
}

static struct json_object *reference(struct jk_arena *a, const char *type, const char *id)
{
    struct json_object *r = json_object_new_object();
    json_object_object_add(r, "reference",
                           json_object_new_string(jk_arena_printf(a, "%s/%s", type, id)));
    return r;
}

static jk_rc job_finish(struct jk_http_req *rq)
{
    struct job *j = rq->state;
    char when[32];
    if (j->rc) return j->rc;
    jk_api_note_patient(rq, j->g, j->out.patient_id);
    if (j->op == OP_HOLD || j->op == OP_WAIT) {
        struct json_object *o = json_object_new_object();
        json_object_object_add(o, "resourceType", json_object_new_string("Parameters"));
        if (j->op == OP_HOLD) {
            add_param(
                o, "hold", "valueString",
                json_object_new_string(jk_arena_printf(rq->arena, "%lld", (long long)j->out.id)));
            add_param(o, "expires", "valueInstant",
                      json_object_new_string(jk_time_iso(j->out.until_ms, when, sizeof when)));
        } else {
            add_param(
                o, "waiting", "valueString",
                json_object_new_string(jk_arena_printf(rq->arena, "%lld", (long long)j->wait_id)));
        }
        add_param(o, "slot", "valueReference", reference(rq->arena, "Slot", j->slot));
        add_param(o, "patient", "valueReference", reference(rq->arena, "Patient", j->w.patient_id));
        return send_params(rq, 201, o);
    }
    /* Cached views are made again when an Appointment may change who has a treatment
     * relationship: its participants other than the Patient and the HealthcareService (a
     * doctor's schedule), or its status (every change after the booking). A booking of a
     * department's slot names neither a principal nor its institution (which holds the
     * Appointment: a holder is checked at each decision, not cached), and during a burst of
     * bookings making every view again after each one would cost each request its view. */
    if (j->op != OP_BOOK || j->names_actor) jk_authz_touch();
    return send_appointment(rq, j->op == OP_BOOK ? 201 : 200, j->out.appointment_id);
}

static jk_rc submit(struct jk_http_req *rq, struct job *j)
{
    rq->state = j;
    jk_http_defer(rq, job_finish);
    jk_store_tx_async(jk_api_app(rq)->db, job_tx, j, job_done, j);
    return JK_OK;
}

static jk_rc begin(struct jk_http_req *rq, enum op op, struct job **out)
{
    struct jk_api_guard *g;
    if (!rules()) return JK_EINTERNAL;
    jk_rc rc = jk_api_guard(rq, actions[op], &g);
    if (rc) return rc;
    struct job *j = jk_arena_zalloc(rq->arena, sizeof *j);
    if (!j) return JK_ENOMEM;
    j->rq = rq;
    j->g = g;
    j->op = op;
    j->k = (struct jk_bk_call){rq->arena, &rq->diag, jk_time_now_ms(), rules()};
    if (!g->is_off) {
        j->w.account_id = g->p.account_id;
        g->recs[0].res_type = "Slot";
        g->recs[0].res_id = NULL;
    }
    *out = j;
    return JK_OK;
}

static const char *role_name(const struct job *j)
{
    return jk_role_info(j->g->p.role)->name;
}

static int is_resident(const struct job *j)
{
    return !j->g->is_off && j->g->p.role == JK_ROLE_RESIDENT;
}

/* Whether the principal is staff of org (an Organization id). */
static int is_staff_of(const struct job *j, const char *org)
{
    return !strncmp(j->g->p.org, "Organization/", 13) && !strcmp(j->g->p.org + 13, org);
}

static jk_rc is_primary_care(struct jk_http_req *rq, jk_conn *c, const char *org_ref, int *out)
{
    struct jk_res r;
    *out = 0;
    const char *id = jk_api_ref_id(org_ref, "Organization");
    if (!*org_ref || !jk_fhir_id_ok(id)) return JK_OK;
    jk_rc rc = jk_res_read(c, rq->arena, "Organization", id, &r);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE) return JK_OK;
    if (rc) return rc;
    struct json_object *o = json_tokener_parse(r.body);
    *out = o && jk_bk_is_primary_care(rules(), o);
    json_object_put(o);
    return JK_OK;
}

/* Who books slot sl for which patient through which channel: a resident online for themself
 * or a ward, with a real name; staff of the slot's institution at its window or phone; staff
 * of a primary-care institution through the reserved channels. */
static jk_rc resolve_who(struct jk_http_req *rq, struct job *j, const struct jk_bk_slot *sl,
                         const char *patient_ref, const char *channel)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    int ch = channel ? jk_bk_channel_parse(channel) : -1, ok = 0;
    if (!c) return JK_EDB;
    if (channel && ch < 0)
        return jk_diag_add(&rq->diag, JK_EINVAL, "code-invalid", "channel",
                           "channel '%s' is not one of window, online, phone, referral, family",
                           channel);
    if (!patient_ref && is_resident(j)) patient_ref = j->g->p.link;
    const char *patient = ref_id(rq, patient_ref, "Patient", "patient");
    if (!patient) return JK_EINVAL;
    j->w.patient_id = patient;
    j->w.notify_patient = patient;
    if (j->g->is_off) {
        j->w.channel = ch < 0 ? JK_BK_ONLINE : (enum jk_bk_channel)ch;
        return JK_OK;
    }
    jk_rc rc = jk_api_allow_stored(rq, j->g, JK_AZ_READ, "Patient", patient);
    if (rc) return rc;
    j->g->recs[0].res_type = "Slot";
    j->g->recs[0].res_id = jk_arena_strdup(rq->arena, sl->slot_id); /* sl is the caller's */
    if (is_resident(j)) {
        if (ch >= 0 && ch != JK_BK_ONLINE)
            return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", "channel",
                               "residents book online");
        const char *own = jk_api_ref_id(j->g->p.link, "Patient");
        if ((rc = jk_mpi_is_real_name(c, own, &ok))) return rc;
        if (!ok)
            return jk_diag_add_text(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                                    "预约挂号需要实名认证：请先完成实名注册",
                                    "booking needs a real-name account: register with an "
                                    "identity document first");
        j->w.channel = JK_BK_ONLINE;
        j->w.notify_patient = own; /* a guardian gets the messages of a ward's booking */
        return JK_OK;
    }
    if (!jk_bk_role_may(rules(), "staff", role_name(j)))
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL, "a %s may not book",
                           role_name(j));
    int is_own = is_staff_of(j, sl->org), is_primary = 0;
    if ((rc = is_primary_care(rq, c, j->g->p.org, &is_primary))) return rc;
    if (ch < 0) ch = is_own ? JK_BK_WINDOW : JK_BK_REFERRAL;
    if ((ch == JK_BK_WINDOW || ch == JK_BK_PHONE) && !is_own)
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", "channel",
                           "only staff of Organization/%s book at its %s", sl->org,
                           jk_bk_channel_name((enum jk_bk_channel)ch));
    if ((ch == JK_BK_REFERRAL || ch == JK_BK_FAMILY) && !is_primary)
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", "channel",
                           "only staff of a primary-care institution book %s places",
                           jk_bk_channel_name((enum jk_bk_channel)ch));
    if (ch == JK_BK_ONLINE)
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", "channel",
                           "the online channel is the residents'");
    if ((rc = jk_mpi_is_real_name(c, patient, &ok))) return rc;
    if (!ok)
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", "patient",
                           "Patient/%s has no identity document: booking is by real name", patient);
    j->w.channel = (enum jk_bk_channel)ch;
    j->w.is_primary_care = is_primary;
    return JK_OK;
}

static jk_rc load_slot(struct jk_http_req *rq, const char *ref, struct jk_bk_slot *sl)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    const char *id = ref_id(rq, ref, "Slot", "slot");
    if (!id) return JK_EINVAL;
    if (!c) return JK_EDB;
    jk_rc rc = jk_bk_slot_get(c, id, sl);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "slot",
                           "Slot/%s is not a slot of the booking pool", id);
    return rc;
}

/* A quick refusal, without the writer, when no place of sl is there for w now. */
static jk_rc has_place(struct jk_http_req *rq, struct job *j, const struct jk_bk_slot *sl)
{
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    int n = 0;
    jk_rc rc = c ? jk_bk_free_places(c, &j->k, sl, &j->w, &n) : JK_EDB;
    if (rc || n) return rc;
    return jk_bk_no_place(c, &j->k, sl, &j->w);
}

/* The reads of a claim before it goes to the writer: the hold, the slot, who books for whom,
 * and whether a place is there at all. */
static jk_rc claim_checks(struct jk_http_req *rq, struct job *j, struct json_object *params,
                          jk_conn *c)
{
    struct jk_bk_slot sl;
    jk_rc rc = JK_OK;
    const char *hold = j->op == OP_BOOK ? param(rq->arena, params, "hold") : NULL;
    const char *slot = param(rq->arena, params, "slot");
    const char *patient = param(rq->arena, params, "patient");
    const char *channel = param(rq->arena, params, "channel");
    if (hold) {
        char *end;
        struct jk_bk_booking b;
        j->hold_id = strtoll(hold, &end, 10);
        if (*end || j->hold_id <= 0)
            rc = jk_diag_add(&rq->diag, JK_EINVAL, "value", "hold",
                             "hold must be the number $hold returned");
        if (!rc && (rc = jk_bk_booking_get(c, rq->arena, j->hold_id, NULL, &b)) == JK_ENOTFOUND)
            rc = jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "hold", "there is no hold %s",
                             hold);
        if (!rc) slot = b.slot_id;
        if (!rc && !patient) patient = jk_arena_printf(rq->arena, "Patient/%s", b.patient_id);
    }
    if (!rc) rc = load_slot(rq, slot, &sl);
    if (!rc) rc = resolve_who(rq, j, &sl, patient, channel);
    if (rc) return rc;
    j->slot = jk_arena_strdup(rq->arena, sl.slot_id);
    j->names_actor = sl.actor[0] != '\0';
    if (!j->slot) return JK_ENOMEM;
    if (j->op != OP_WAIT && !j->hold_id) rc = has_place(rq, j, &sl);
    return rc;
}

/* POST /fhir/R4/Appointment/$hold, $book, and /api/booking/waitlist */
static jk_rc claim_op(struct jk_http_req *rq, enum op op)
{
    struct job *j;
    struct json_object *params = NULL;
    jk_rc rc = begin(rq, op, &j);
    if (!rc) rc = parameters(rq, &params);
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!rc && !c) rc = JK_EDB;
    if (!rc) {
        /* One read transaction for the checks: a snapshot, and (on SQLite) one look at the
         * WAL instead of one per statement, which during a burst of bookings changes
         * between any two of them and would drop the connection's page cache each time. */
        if (!(rc = jk_conn_exec(c, "BEGIN"))) {
            rc = claim_checks(rq, j, params, c);
            jk_rc end = jk_conn_exec(c, "COMMIT");
            if (!rc) rc = end;
        }
    }
    json_object_put(params);
    return rc ? rc : submit(rq, j);
}

jk_rc jk_api_booking_hold(struct jk_http_req *rq)
{
    return claim_op(rq, OP_HOLD);
}

jk_rc jk_api_booking_book(struct jk_http_req *rq)
{
    return claim_op(rq, OP_BOOK);
}

jk_rc jk_api_booking_wait(struct jk_http_req *rq)
{
    return claim_op(rq, OP_WAIT);
}

/* POST /fhir/R4/Appointment/:id/$cancel, $reschedule, $checkin, $complete */
static jk_rc change_op(struct jk_http_req *rq, enum op op)
{
    struct job *j;
    struct json_object *params = NULL;
    struct jk_bk_booking b;
    jk_rc rc = begin(rq, op, &j);
    if (!rc) rc = parameters(rq, &params);
    if (rc) {
        json_object_put(params);
        return rc;
    }
    const char *id = jk_http_param(rq, "id");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    j->reason = param(rq->arena, params, "reason");
    const char *slot = param(rq->arena, params, "slot");
    const char *channel = param(rq->arena, params, "channel");
    json_object_put(params);
    if (!id || !jk_fhir_id_ok(id))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL, "'%s' is not an Appointment id",
                           id ? id : "");
    if (j->reason && strlen(j->reason) > MAX_REASON)
        return jk_diag_add(&rq->diag, JK_EINVAL, "too-long", "reason", "reason is at most %d bytes",
                           MAX_REASON);
    if (!c) return JK_EDB;
    rc = jk_bk_booking_get(c, rq->arena, 0, id, &b);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL,
                           "Appointment/%s is not a booking of the pool", id);
    if (rc) return rc;
    j->appointment = jk_arena_strdup(rq->arena, id);
    if (!j->g->is_off) {
        j->g->recs[0].res_type = "Appointment";
        j->g->recs[0].res_id = j->appointment;
        j->g->recs[0].patient_id = b.patient_id;
        /* the patient (or their guardian) for their own bookings; the institution's staff */
        if (is_resident(j) && op != OP_ARRIVE && op != OP_COMPLETE)
            rc = jk_api_allow_stored(rq, j->g, JK_AZ_READ, "Patient", b.patient_id);
        else if (!is_staff_of(j, b.org) ||
                 !jk_bk_role_may(rules(), op == OP_ARRIVE || op == OP_COMPLETE ? "desk" : "staff",
                                 role_name(j)))
            rc = jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                             "only the patient, their guardian or staff of Organization/%s may "
                             "do this",
                             b.org);
        if (rc) return rc;
    }
    if (op == OP_RESCHEDULE) {
        struct jk_bk_slot sl;
        if ((rc = load_slot(rq, slot, &sl)) ||
            (rc = resolve_who(rq, j, &sl, jk_arena_printf(rq->arena, "Patient/%s", b.patient_id),
                              channel)))
            return rc;
        j->slot = jk_arena_strdup(rq->arena, sl.slot_id);
    }
    return submit(rq, j);
}

jk_rc jk_api_booking_cancel(struct jk_http_req *rq)
{
    return change_op(rq, OP_CANCEL);
}

jk_rc jk_api_booking_reschedule(struct jk_http_req *rq)
{
    return change_op(rq, OP_RESCHEDULE);
}

jk_rc jk_api_booking_checkin(struct jk_http_req *rq)
{
    return change_op(rq, OP_ARRIVE);
}

jk_rc jk_api_booking_complete(struct jk_http_req *rq)
{
    return change_op(rq, OP_COMPLETE);
}

/* ---- GET /api/slots ---- */

static jk_rc send_json(struct jk_http_req *rq, struct json_object *o)
{
    size_t n;
    const char *t = jk_json_text(o, rq->arena, &n);
    json_object_put(o);
    if (!t) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, 200, BK_JSON, t, n);
}

static void add_s(struct json_object *o, const char *k, const char *v)
{
    json_object_object_add(o, k, json_object_new_string(v ? v : ""));
}

static void add_time(struct json_object *o, const char *k, int64_t ms)
{
    char t[32];
    json_object_object_add(o, k, json_object_new_string(jk_time_iso(ms, t, sizeof t)));
}

jk_rc jk_api_booking_find(struct jk_http_req *rq)
{
    /* the slots of a department, an institution or a doctor over days, each with the places
     * the caller's channel could claim now and when more open */
    static const char sql_head[] =
        "SELECT s.slot_id, s.org, s.service, s.actor, s.fee_level, s.start_ms, s.end_ms,"
        " s.capacity, s.n_booked, s.status,"
        " (SELECT count(*) FROM bk_place p WHERE p.slot_id = s.slot_id AND ((p.channel = ? AND"
        " p.open_ms <= ?) OR (p.public_ms > 0 AND p.public_ms <= ? AND ? = 1)) AND (p.state ="
        " 'free' OR (p.state = 'held' AND p.until_ms <= ?))),"
        " (SELECT min(p.open_ms) FROM bk_place p WHERE p.slot_id = s.slot_id AND p.channel = ?"
        " AND p.open_ms > ? AND p.state = 'free')"
        " FROM bk_slot s WHERE ";
    static char sql_by[3][1024];
    static const char *const wheres[3] = {
        "s.service = ? AND s.day >= ? AND s.day <= ? ORDER BY s.start_ms LIMIT 500",
        "s.org = ? AND s.day >= ? AND s.day <= ? ORDER BY s.start_ms LIMIT 500",
        "s.actor = ? AND s.day >= ? AND s.day <= ? ORDER BY s.start_ms LIMIT 500"};
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    const char *keys[3] = {jk_http_query_get(rq, "service"), jk_http_query_get(rq, "org"),
                           jk_http_query_get(rq, "practitioner")};
    const char *types[3] = {"HealthcareService", "Organization", "Practitioner"};
    int by = keys[0] ? 0 : keys[1] ? 1 : keys[2] ? 2 : -1;
    if (by < 0)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "service",
                           "give service=HealthcareService/<id>, org=Organization/<id> or "
                           "practitioner=Practitioner/<id>");
    const char *key = jk_api_ref_id(keys[by], types[by]);
    if (!jk_fhir_id_ok(key))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value",
                           by == 0   ? "service"
                           : by == 1 ? "org"
                                     : "practitioner",
                           "must be a reference %s/<id>", types[by]);
    if (by == 2) key = jk_arena_printf(rq->arena, "Practitioner/%s", key);
    struct jk_bk_policy p;
    int64_t now = jk_time_now_ms();
    char from[11], to[11];
    jk_bk_policy(rules(), NULL, &p);
    const char *date = jk_http_query_get(rq, "date"), *days_s = jk_http_query_get(rq, "days");
    long days = 7;
    if (date && !jk_bk_day_ok(date))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "date", "date must be YYYY-MM-DD");
    if (days_s) {
        char *end;
        days = strtol(days_s, &end, 10);
        if (*end || days < 1 || days > MAX_FIND_DAYS)
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "days",
                               "days must be a whole number from 1 to %d", MAX_FIND_DAYS);
    }
    snprintf(from, sizeof from, "%s", date ? date : jk_bk_day(&p, now, from));
    jk_bk_day_add(from, (int)days - 1, to);
    /* the caller's channel: residents online; staff name theirs (default window) */
    const char *channel = jk_http_query_get(rq, "channel");
    int ch = channel ? jk_bk_channel_parse(channel) : -1;
    if (channel && ch < 0)
        return jk_diag_add(&rq->diag, JK_EINVAL, "code-invalid", "channel",
                           "channel must be one of window, online, phone, referral, family");
    if (!g->is_off && g->p.role == JK_ROLE_RESIDENT) ch = JK_BK_ONLINE;
    if (ch < 0) ch = g->is_off ? JK_BK_ONLINE : JK_BK_WINDOW;
    int64_t returned = ch == JK_BK_ONLINE || ch == JK_BK_REFERRAL || ch == JK_BK_FAMILY;
    if (!sql_by[by][0]) snprintf(sql_by[by], sizeof sql_by[by], "%s%s", sql_head, wheres[by]);
    if (!g->is_off) {
        g->recs[0].res_type = "Slot";
        g->recs[0].res_id = NULL;
    }
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    jk_stmt *s;
    int has_row;
    if (!c) return JK_EDB;
    const char *chn = jk_bk_channel_name((enum jk_bk_channel)ch);
    rc = jk_conn_prepare(c, sql_by[by], &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, chn, strlen(chn));
    if (!rc) rc = jk_stmt_int_arg(s, 2, now);
    if (!rc) rc = jk_stmt_int_arg(s, 3, now);
    if (!rc) rc = jk_stmt_int_arg(s, 4, returned);
    if (!rc) rc = jk_stmt_int_arg(s, 5, now);
    if (!rc) rc = jk_stmt_text_arg(s, 6, chn, strlen(chn));
    if (!rc) rc = jk_stmt_int_arg(s, 7, now);
    if (!rc) rc = jk_stmt_text_arg(s, 8, key, strlen(key));
    if (!rc) rc = jk_stmt_text_arg(s, 9, from, 10);
    if (!rc) rc = jk_stmt_text_arg(s, 10, to, 10);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    while (!rc && has_row) {
        struct json_object *o = json_object_new_object();
        const char *id = jk_stmt_col_text(s, 0, NULL);
        add_s(o, "slot", jk_arena_printf(rq->arena, "Slot/%s", id));
        add_s(o, "org",
              jk_arena_printf(rq->arena, "Organization/%s", jk_stmt_col_text(s, 1, NULL)));
        add_s(o, "service",
              jk_arena_printf(rq->arena, "HealthcareService/%s", jk_stmt_col_text(s, 2, NULL)));
        add_s(o, "practitioner", jk_stmt_col_text(s, 3, NULL));
        add_s(o, "feeLevel", jk_stmt_col_text(s, 4, NULL));
        add_time(o, "start", jk_stmt_col_int(s, 5));
        add_time(o, "end", jk_stmt_col_int(s, 6));
        json_object_object_add(o, "capacity", json_object_new_int64(jk_stmt_col_int(s, 7)));
        json_object_object_add(o, "booked", json_object_new_int64(jk_stmt_col_int(s, 8)));
        add_s(o, "status", jk_stmt_col_text(s, 9, NULL));
        int is_open = !strcmp(jk_stmt_col_text(s, 9, NULL), "open") && jk_stmt_col_int(s, 5) > now;
        json_object_object_add(o, "remaining",
                               json_object_new_int64(is_open ? jk_stmt_col_int(s, 10) : 0));
        if (is_open && !jk_stmt_col_is_null(s, 11)) add_time(o, "opens", jk_stmt_col_int(s, 11));
        json_object_array_add(arr, o);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    add_s(out, "channel", chn);
    json_object_object_add(out, "slots", arr);
    if (rc) {
        json_object_put(out);
        return rc;
    }
    return send_json(rq, out);
}

/* ---- GET /api/booking/me and /api/booking/desk ---- */

static const char booking_list_cols[] =
    "SELECT b.appointment_id, b.state, b.channel, b.patient_id, b.is_late, s.slot_id, s.org,"
    " s.service, s.actor, s.start_ms, s.end_ms, b.until_ms, b.id FROM bk_booking b JOIN bk_slot s"
    " ON s.slot_id = b.slot_id WHERE ";

/* Until when a booking of Organization org starting at start_ms is cancelled free
 * (cancel.deadline; as the pool decides it); 0 without rules. */
static int64_t cancel_by(const char *org, int64_t start_ms)
{
    struct jk_bk_policy p;
    char day[11], before[11];
    int64_t ms = start_ms;
    if (!rules()) return 0;
    jk_bk_policy(rules(), org, &p);
    jk_bk_day(&p, start_ms, day);
    if (jk_bk_day_add(day, -p.cancel_days_before, before)) jk_bk_at(&p, before, p.cancel_min, &ms);
    return ms < start_ms ? ms : start_ms;
}

static struct json_object *booking_json(struct jk_http_req *rq, jk_stmt *s)
{
    struct json_object *o = json_object_new_object();
    if (!jk_stmt_col_is_null(s, 0))
        add_s(o, "appointment",
              jk_arena_printf(rq->arena, "Appointment/%s", jk_stmt_col_text(s, 0, NULL)));
    else
        json_object_object_add(o, "hold", json_object_new_int64(jk_stmt_col_int(s, 12)));
    add_s(o, "state", jk_stmt_col_text(s, 1, NULL));
    add_s(o, "channel", jk_stmt_col_text(s, 2, NULL));
    add_s(o, "patient", jk_arena_printf(rq->arena, "Patient/%s", jk_stmt_col_text(s, 3, NULL)));
    if (jk_stmt_col_int(s, 4)) json_object_object_add(o, "late", json_object_new_boolean(1));
    add_s(o, "slot", jk_arena_printf(rq->arena, "Slot/%s", jk_stmt_col_text(s, 5, NULL)));
    add_s(o, "org", jk_arena_printf(rq->arena, "Organization/%s", jk_stmt_col_text(s, 6, NULL)));
    add_s(o, "service",
          jk_arena_printf(rq->arena, "HealthcareService/%s", jk_stmt_col_text(s, 7, NULL)));
    add_s(o, "practitioner", jk_stmt_col_text(s, 8, NULL));
    add_time(o, "start", jk_stmt_col_int(s, 9));
    add_time(o, "end", jk_stmt_col_int(s, 10));
    if (!strcmp(jk_stmt_col_text(s, 1, NULL), "held"))
        add_time(o, "holdUntil", jk_stmt_col_int(s, 11));
    int64_t by = cancel_by(jk_stmt_col_text(s, 6, NULL), jk_stmt_col_int(s, 9));
    if (by) add_time(o, "cancelBy", by);
    return o;
}

/* The bookings of patient (newest first) into arr. */
static jk_rc list_patient(struct jk_http_req *rq, jk_conn *c, const char *patient,
                          struct json_object *arr)
{
    static char sql[512];
    if (!sql[0])
        snprintf(sql, sizeof sql,
                 "%sb.patient_id = ? AND b.state <> 'lapsed' ORDER BY s.start_ms DESC LIMIT 200",
                 booking_list_cols);
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, patient, strlen(patient));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row) {
        json_object_array_add(arr, booking_json(rq, s));
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    return rc;
}

jk_rc jk_api_booking_me(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc) return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    const char *ids[64];
    size_t n = 0;
    const char *ref = jk_http_query_get(rq, "patient");
    if (ref) {
        const char *id = jk_api_ref_id(ref, "Patient");
        if (!jk_fhir_id_ok(id))
            return jk_diag_add(&rq->diag, JK_EINVAL, "value", "patient",
                               "patient must be Patient/<id>");
        if (!g->is_off && (rc = jk_api_allow_stored(rq, g, JK_AZ_READ, "Patient", id))) return rc;
        ids[n++] = id;
    } else if (!g->is_off && g->p.role == JK_ROLE_RESIDENT) {
        struct jk_az_scope sc;
        jk_authz_scope(g->az, JK_AZ_READ, "Patient", 0, &sc);
        for (size_t i = 0; sc.mode == JK_AZ_SOME && i < sc.n_patients && n < 64; i++)
            ids[n++] = sc.patients[i];
    } else {
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "patient",
                           "give patient=Patient/<id>: whose bookings");
    }
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    struct json_object *susp = json_object_new_array();
    json_object_object_add(out, "bookings", arr);
    json_object_object_add(out, "suspensions", susp);
    int64_t now = jk_time_now_ms();
    for (size_t i = 0; !rc && i < n; i++) {
        char person[JK_MPI_ID_MAX];
        int64_t until = 0;
        int noshows = 0;
        if (!g->is_off) jk_api_note_patient(rq, g, ids[i]);
        rc = list_patient(rq, c, ids[i], arr);
        if (!rc && !jk_mpi_person_find(c, ids[i], person))
            rc = jk_bk_suspension(c, person, now, &until, &noshows);
        if (!rc && until) {
            struct json_object *o = json_object_new_object();
            add_s(o, "patient", jk_arena_printf(rq->arena, "Patient/%s", ids[i]));
            add_time(o, "until", until);
            json_object_object_add(o, "noShows", json_object_new_int(noshows));
            add_s(o, "rule", "noshow.ladder");
            add_s(o, "reason",
                  jk_arena_printf(rq->arena,
                                  "本年度爽约 %d 次，网上预约暂停 / online booking "
                                  "suspended after %d no-shows this year",
                                  noshows, noshows));
            json_object_array_add(susp, o);
        }
    }
    if (rc) {
        json_object_put(out);
        return rc;
    }
    return send_json(rq, out);
}

jk_rc jk_api_booking_desk(struct jk_http_req *rq)
{
    static char sql[512];
    if (!sql[0])
        snprintf(sql, sizeof sql,
                 "%ss.org = ? AND s.day = ? AND b.state IN ('booked', 'arrived', 'fulfilled',"
                 " 'noshow') ORDER BY s.start_ms, b.id LIMIT 500",
                 booking_list_cols);
    struct jk_api_guard *g;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc) return rc;
    if (!rules()) return JK_EINTERNAL;
    const char *org = g->is_off ? jk_http_query_get(rq, "org") : g->p.org;
    if (!g->is_off && !jk_bk_role_may(rules(), "desk", jk_role_info(g->p.role)->name))
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "the desk list is for doctors, nurses and the institution's system");
    org = org ? jk_api_ref_id(org, "Organization") : NULL;
    if (!org || !jk_fhir_id_ok(org))
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "org", "which institution's desk");
    struct jk_bk_policy p;
    char today[11];
    jk_bk_policy(rules(), org, &p);
    const char *day = jk_http_query_get(rq, "date");
    if (!day) day = jk_bk_day(&p, jk_time_now_ms(), today);
    if (!jk_bk_day_ok(day))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", "date", "date must be YYYY-MM-DD");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    jk_stmt *s;
    int has_row;
    if (!c) return JK_EDB;
    rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, org, strlen(org));
    if (!rc) rc = jk_stmt_text_arg(s, 2, day, strlen(day));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(out, "bookings", arr);
    size_t n = 0;
    while (!rc && has_row && n++ < LIST_MAX) {
        struct json_object *o = booking_json(rq, s);
        const char *patient = jk_arena_strdup(rq->arena, jk_stmt_col_text(s, 3, NULL));
        json_object_array_add(arr, o);
        if (!g->is_off) jk_api_note_patient(rq, g, patient);
        rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    /* the patients' names, for the desk to call them */
    for (size_t i = 0; !rc && i < json_object_array_length(arr); i++) {
        struct json_object *o = json_object_array_get_idx(arr, i), *pat, *names;
        struct jk_res r;
        const char *id = jk_api_ref_id(jk_json_str(o, "patient"), "Patient");
        if (jk_res_read(c, rq->arena, "Patient", id, &r)) continue;
        if (!(pat = json_tokener_parse(r.body))) continue;
        if (json_object_object_get_ex(pat, "name", &names) && json_object_array_length(names)) {
            const char *text = jk_json_str(json_object_array_get_idx(names, 0), "text");
            if (text) add_s(o, "name", text);
        }
        json_object_put(pat);
    }
    if (rc) {
        json_object_put(out);
        return rc;
    }
    return send_json(rq, out);
}
