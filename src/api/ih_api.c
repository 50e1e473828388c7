/* ih_api.c - online follow-up visits over HTTP (docs/api.md "Internet hospital",
 * docs/internals/rx.md): open a visit through the gate, the doctor's queue and the resident's
 * visits, confirm an uploaded record, chat, video, end. Only the patient (and their guardians)
 * and the visit's doctor reach a visit; every change commits with its audit record in one
 * transaction, and a refusal is recorded by the guard. */
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
#include "svc/ih/video.h"
#include "svc/ih/visit.h"

#define IH_JSON     "application/json; charset=utf-8"
#define LIST_MAX    500 /* visits one listing returns */
#define MAX_WARDS   64
#define MAX_REF     200
#define MAX_DISPLAY 200
#define MAX_TITLE   200

enum op { OP_OPEN, OP_CONFIRM, OP_MESSAGE, OP_VIDEO, OP_END };

static const char *const actions[] = {"ih-visit-open", "ih-visit-confirm", "ih-message", "ih-video",
                                      "ih-visit-end"};

struct job {
    struct jk_http_req *rq;
    struct jk_api_guard *g;
    enum op op;
    struct jk_ih_call k;
    struct jk_ih_open o;    /* OP_OPEN */
    struct jk_ih_visit v;   /* the visit (every op; OP_OPEN: the new one) */
    struct jk_ih_message m; /* OP_MESSAGE, OP_VIDEO */
    struct jk_ih_attachment att;
    struct jk_ih_room room; /* OP_VIDEO */
    int is_redirect;        /* OP_END */
    const char *reason;     /* OP_END */
    const char *comm_id;    /* the Communication written */
    jk_rc rc;
};

static const struct jk_ih_rules *rules(void)
{
    return jk_ih_rules();
}

/* ---- bodies ---- */

/* The request body as a JSON object (an empty body is {}), members limited to allowed. */
static jk_rc body_object(struct jk_http_req *rq, const char *const *allowed,
                         struct json_object **out)
{
    *out = NULL;
    if (!rq->body_len) {
        *out = json_object_new_object();
        return *out ? JK_OK : JK_ENOMEM;
    }
    jk_rc rc = jk_json_parse(rq->body, rq->body_len, &jk_api_app(rq)->json_limits, &rq->diag, out);
    if (rc) return rc;
    if (!json_object_is_type(*out, json_type_object)) {
        json_object_put(*out);
        *out = NULL;
        return jk_diag_add(&rq->diag, JK_EINVAL, "structure", NULL,
                           "the body must be a JSON object");
    }
    json_object_object_foreach(*out, key, val)
    {
        (void)val;
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key))
            i++;
        if (!allowed[i]) {
            jk_rc bad =
                jk_diag_add(&rq->diag, JK_EINVAL, "structure", key, "unknown member '%s'", key);
            json_object_put(*out);
            *out = NULL;
            return bad;
        }
    }
    return JK_OK;
}

/* The string member key of o (what names it in issues) copied into the arena; NULL when
 * absent. JK_EINVAL when it is not a non-empty string of at most max bytes. */
static jk_rc body_str(struct jk_http_req *rq, struct json_object *o, const char *key,
                      const char *what, size_t max, const char **out)
{
    struct json_object *v;
    *out = NULL;
    if (!o || !json_object_object_get_ex(o, key, &v)) return JK_OK;
    if (!json_object_is_type(v, json_type_string) || !json_object_get_string_len(v) ||
        (size_t)json_object_get_string_len(v) > max)
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", what,
                           "%s must be a non-empty string of at most %zu bytes", what, max);
    *out = jk_arena_strdup(rq->arena, json_object_get_string(v));
    return *out ? JK_OK : JK_ENOMEM;
}

/* A reference member key of o: "Type/id" with one of types (NULL-ended), into *out. */
static jk_rc body_ref(struct jk_http_req *rq, struct json_object *o, const char *key,
                      const char *const *types, const char **out)
{
    jk_rc rc = body_str(rq, o, key, key, MAX_REF, out);
    if (rc || !*out) return rc;
    for (int i = 0; types[i]; i++) {
        size_t n = strlen(types[i]);
        if (!strncmp(*out, types[i], n) && (*out)[n] == '/' && jk_fhir_id_ok(*out + n + 1))
            return JK_OK;
    }
    return jk_diag_add(&rq->diag, JK_EINVAL, "value", key, "%s must be a reference %s/<id>%s%s",
                       key, types[0], types[1] ? " or " : "", types[1] ? types[1] : "");
}

/* An attachment object member key of o ({contentType, data, title?}) into att. */
static jk_rc body_attachment(struct jk_http_req *rq, struct json_object *o, const char *key,
                             struct jk_ih_attachment *att, int *has)
{
    static const char *const allowed[] = {"contentType", "data", "title"};
    struct json_object *a, *v;
    *has = 0;
    if (!json_object_object_get_ex(o, key, &a)) return JK_OK;
    if (!json_object_is_type(a, json_type_object))
        return jk_diag_add(&rq->diag, JK_EINVAL, "structure", key,
                           "%s must be {contentType, data (base64), title?}", key);
    json_object_object_foreach(a, k2, val)
    {
        (void)val;
        size_t i = 0;
        while (i < 3 && strcmp(allowed[i], k2))
            i++;
        if (i == 3)
            return jk_diag_add(&rq->diag, JK_EINVAL, "structure", key, "unknown member '%s' of %s",
                               k2, key);
    }
    jk_rc rc = body_str(rq, a, "contentType", key, 100, &att->content_type);
    if (!rc) rc = body_str(rq, a, "title", key, MAX_TITLE, &att->title);
    if (rc) return rc;
    if (!json_object_object_get_ex(a, "data", &v) || !json_object_is_type(v, json_type_string))
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", key, "%s.data (base64) is required",
                           key);
    att->data_b64 = json_object_get_string(v); /* copied below: o is put by the caller */
    if (!(att->data_b64 = jk_arena_strdup(rq->arena, att->data_b64))) return JK_ENOMEM;
    *has = 1;
    return JK_OK;
}

/* ---- responses ---- */

static jk_rc send_json(struct jk_http_req *rq, int status, const char *type, struct json_object *o)
{
    size_t n;
    const char *t = jk_json_text(o, rq->arena, &n);
    json_object_put(o);
    if (!t) return JK_ENOMEM;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    if (!strcmp(type, JK_FHIR_JSON)) return jk_api_send_fhir(rq, status, t, n);
    return jk_http_respond(rq, status, type, t, n);
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

static struct json_object *visit_json(struct jk_arena *a, const struct jk_ih_visit *v)
{
    struct jk_ih_policy p;
    struct json_object *o = json_object_new_object(), *cond = json_object_new_object();
    jk_ih_policy(rules(), v->org, &p);
    add_s(o, "id", v->id);
    add_s(o, "encounter", jk_arena_printf(a, "Encounter/%s", v->id));
    add_s(o, "patient", jk_arena_printf(a, "Patient/%s", v->patient_id));
    add_s(o, "doctor", jk_arena_printf(a, "PractitionerRole/%s", v->doctor));
    add_s(o, "org", jk_arena_printf(a, "Organization/%s", v->org));
    add_s(cond, "code", v->condition_code);
    json_object_object_add(o, "condition", cond);
    add_s(o, "basis", v->basis);
    if (*v->guardian) add_s(o, "guardian", v->guardian);
    add_s(o, "status", v->status);
    add_time(o, "started", v->started_ms);
    if (jk_ih_is_live(v->status)) add_time(o, "replyBy", v->started_ms + p.reply_hours * 3600000LL);
    if (v->ended_ms) add_time(o, "ended", v->ended_ms);
    if (*v->end_reason) add_s(o, "endReason", v->end_reason);
    if (!strcmp(v->status, "redirected"))
        add_s(o, "book", jk_arena_printf(a, "/api/slots?org=Organization/%s", v->org));
    json_object_object_add(o, "amountFen", json_object_new_int64(v->amount_fen));
    return o;
}

/* ---- who may act on a visit ---- */

static int is_role(const struct jk_api_guard *g, const char *list)
{
    return !g->is_off && jk_ih_role_may(rules(), list, jk_role_info(g->p.role)->name);
}

/* Whether the principal is the visit's doctor. */
static int is_doctor_of(const struct jk_api_guard *g, const struct jk_ih_visit *v)
{
    return is_role(g, "doctor") && !strncmp(g->p.link, "PractitionerRole/", 17) &&
           !strcmp(g->p.link + 17, v->doctor);
}

/* The visit of the path's :id into j->v, when the principal may reach it: its doctor, or the
 * patient and their guardians (doctor_only: the doctor alone). 404, 403. */
static jk_rc load_visit(struct jk_http_req *rq, struct jk_api_guard *g, int doctor_only,
                        struct jk_ih_visit *v)
{
    const char *id = jk_http_param(rq, "id");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!id || !jk_fhir_id_ok(id))
        return jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL, "'%s' is not a visit id",
                           id ? id : "");
    if (!c) return JK_EDB;
    jk_rc rc = jk_ih_visit_get(c, rq->arena, id, v);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL, "there is no visit %s", id);
    if (rc || g->is_off) return rc;
    g->recs[0].res_type = "Encounter";
    g->recs[0].res_id = v->id;
    jk_api_note_patient(rq, g, v->patient_id);
    if (is_doctor_of(g, v)) return JK_OK;
    if (!doctor_only && is_role(g, "patient")) {
        rc = jk_api_allow_stored(rq, g, JK_AZ_READ, "Patient", v->patient_id);
        g->recs[0].res_type = "Encounter";
        g->recs[0].res_id = v->id;
        return rc;
    }
    g->recs[0].action = "refused";
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                       doctor_only ? "only the visit's doctor may do this"
                                   : "only the patient, their guardians and the visit's doctor "
                                     "may see the visit");
}

/* ---- the job: checks on the request thread, the change in one transaction ---- */

static jk_rc job_tx(jk_conn *c, void *arg)
{
    struct job *j = arg;
    jk_rc rc;
    switch (j->op) {
    case OP_OPEN: rc = jk_ih_visit_open(c, &j->k, &j->o, &j->v); break;
    case OP_CONFIRM: rc = jk_ih_confirm(c, &j->k, &j->v); break;
    case OP_END: rc = jk_ih_end(c, &j->k, &j->v, j->is_redirect, j->reason); break;
    default: rc = jk_ih_post(c, &j->k, &j->v, &j->m, &j->comm_id); break;
    }
    const struct jk_audit *au = jk_api_app(j->rq)->audit;
    if (rc || j->g->is_off || !au) return rc;
    struct jk_audit_rec r = j->g->recs[0];
    r.action = actions[j->op];
    r.res_type = j->comm_id ? "Communication" : "Encounter";
    r.res_id = j->comm_id ? j->comm_id : j->v.id;
    r.patient_id = j->v.patient_id;
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

static jk_rc job_finish(struct jk_http_req *rq)
{
    struct job *j = rq->state;
    if (j->rc) return j->rc;
    jk_api_note_patient(rq, j->g, j->v.patient_id);
    if (j->op == OP_MESSAGE) {
        jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
        struct jk_res r;
        jk_rc rc = c ? jk_res_read(c, rq->arena, "Communication", j->comm_id, &r) : JK_EDB;
        if (rc) return rc;
        jk_api_version_headers(rq, &r, 1);
        return jk_api_send_fhir(rq, 201, r.body, r.body_len);
    }
    if (j->op == OP_VIDEO) {
        struct json_object *o = json_object_new_object();
        add_s(o, "room", j->room.id);
        add_s(o, "url", j->room.url);
        add_s(o, "communication", jk_arena_printf(rq->arena, "Communication/%s", j->comm_id));
        return send_json(rq, 201, IH_JSON, o);
    }
    /* the Encounter makes (or ends) the doctor's treatment relationship with the patient */
    jk_authz_touch();
    return send_json(rq, j->op == OP_OPEN ? 201 : 200, IH_JSON, visit_json(rq->arena, &j->v));
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
    j->k = (struct jk_ih_call){rq->arena, &rq->diag, jk_time_now_ms(), rules()};
    if (!g->is_off) {
        g->recs[0].res_type = "Encounter";
        g->recs[0].res_id = NULL;
    }
    *out = j;
    return JK_OK;
}

/* ---- POST /api/ih/visits ---- */

/* The request's fields into j->o. */
static jk_rc open_body(struct jk_http_req *rq, struct job *j, struct json_object *b)
{
    static const char *const doctor_types[] = {"PractitionerRole", NULL};
    static const char *const patient_types[] = {"Patient", NULL};
    static const char *const basis_types[] = {"Condition", "Encounter", NULL};
    static const char *const guardian_types[] = {"RelatedPerson", "Patient", NULL};
    static const char *const cond_keys[] = {"system", "code", "display"};
    struct jk_ih_open *o = &j->o;
    const char *doctor, *patient;
    struct json_object *cond;
    int has_record = 0;
    jk_rc rc = body_ref(rq, b, "doctor", doctor_types, &doctor);
    if (!rc && !doctor)
        rc = jk_diag_add(&rq->diag, JK_EINVAL, "required", "doctor",
                         "doctor is required (PractitionerRole/<id>)");
    if (!rc) rc = body_ref(rq, b, "patient", patient_types, &patient);
    if (!rc) rc = body_ref(rq, b, "basis", basis_types, &o->basis);
    if (!rc) rc = body_ref(rq, b, "guardian", guardian_types, &o->guardian);
    if (!rc) rc = body_attachment(rq, b, "record", &j->att, &has_record);
    if (rc) return rc;
    if (!json_object_object_get_ex(b, "condition", &cond) ||
        !json_object_is_type(cond, json_type_object))
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "condition",
                           "condition is required: {system, code, display} of the diagnosis "
                           "followed up");
    json_object_object_foreach(cond, key, val)
    {
        (void)val;
        size_t i = 0;
        while (i < 3 && strcmp(cond_keys[i], key))
            i++;
        if (i == 3)
            return jk_diag_add(&rq->diag, JK_EINVAL, "structure", "condition",
                               "unknown member '%s' of condition", key);
    }
    if ((rc = body_str(rq, cond, "system", "condition.system", MAX_REF, &o->system)) ||
        (rc = body_str(rq, cond, "code", "condition.code", 64, &o->code)) ||
        (rc = body_str(rq, cond, "display", "condition.display", MAX_DISPLAY, &o->display)))
        return rc;
    if (!o->code)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "condition.code",
                           "condition.code is required");
    o->doctor = doctor + 17;
    o->patient_id = patient ? patient + 8 : NULL;
    if (has_record) o->record = &j->att;
    return JK_OK;
}

/* Who opens the visit for whom: a real-name resident for themself or a ward. */
static jk_rc open_who(struct jk_http_req *rq, struct job *j, jk_conn *c)
{
    struct jk_api_guard *g = j->g;
    int ok = 0;
    const struct jk_security_rules *sec = jk_api_security_rules();
    j->o.guardian_codes = sec ? sec->guardian_codes : "";
    if (g->is_off) {
        if (!j->o.patient_id)
            return jk_diag_add(&rq->diag, JK_EINVAL, "required", "patient",
                               "patient is required (Patient/<id>)");
        return JK_OK;
    }
    if (!is_role(g, "patient") || strncmp(g->p.link, "Patient/", 8))
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "online visits are opened by residents, for themselves or a ward "
                           "(roles.patient)");
    const char *own = jk_arena_strdup(rq->arena, g->p.link + 8);
    if (!own) return JK_ENOMEM;
    if (!j->o.patient_id) j->o.patient_id = own;
    jk_rc rc = jk_api_allow_stored(rq, g, JK_AZ_READ, "Patient", j->o.patient_id);
    g->recs[0].res_type = "Encounter";
    if (rc) return rc;
    j->o.requester = own;
    j->o.is_ward = strcmp(own, j->o.patient_id) != 0;
    j->o.account_id = g->p.account_id;
    if ((rc = jk_mpi_is_real_name(c, own, &ok))) return rc;
    if (ok) return JK_OK;
    jk_diag_add_text(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                     "在线复诊需要实名认证：请先完成实名注册",
                     "online visits need a real-name account: register with an identity "
                     "document first");
    if (rq->diag.tail) {
        rq->diag.tail->detail_system = JK_IH_REFUSAL_SYSTEM;
        rq->diag.tail->detail_code = "real-name";
    }
    return JK_EFORBIDDEN;
}

jk_rc jk_api_ih_open(struct jk_http_req *rq)
{
    static const char *const allowed[] = {"doctor",   "patient", "condition", "basis",
                                          "guardian", "record",  NULL};
    struct job *j;
    struct json_object *b = NULL;
    jk_rc rc = begin(rq, OP_OPEN, &j);
    if (!rc) rc = body_object(rq, allowed, &b);
    if (!rc) rc = open_body(rq, j, b);
    json_object_put(b);
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!rc && !c) rc = JK_EDB;
    if (!rc) rc = open_who(rq, j, c);
    if (!rc && j->o.record) {
        struct jk_ih_policy p;
        jk_ih_policy(rules(), NULL, &p);
        rc = jk_ih_attachment(&j->k, "record", 1, p.image_max_bytes, &j->att);
    }
    if (rc) return rc;
    /* the gate's reads in one read transaction: one snapshot */
    if (!(rc = jk_conn_exec(c, "BEGIN"))) {
        rc = jk_ih_gate(c, &j->k, &j->o);
        jk_rc end = jk_conn_exec(c, "COMMIT");
        if (!rc) rc = end;
    }
    return rc ? rc : submit(rq, j);
}

/* ---- the visit's changes ---- */

jk_rc jk_api_ih_confirm(struct jk_http_req *rq)
{
    struct job *j;
    jk_rc rc = begin(rq, OP_CONFIRM, &j);
    if (!rc) rc = load_visit(rq, j->g, 1, &j->v);
    return rc ? rc : submit(rq, j);
}

jk_rc jk_api_ih_end(struct jk_http_req *rq)
{
    static const char *const allowed[] = {"outcome", "reason", NULL};
    struct job *j;
    struct json_object *b = NULL;
    const char *outcome = NULL;
    jk_rc rc = begin(rq, OP_END, &j);
    if (!rc) rc = load_visit(rq, j->g, 1, &j->v);
    if (!rc) rc = body_object(rq, allowed, &b);
    if (!rc) rc = body_str(rq, b, "outcome", "outcome", 16, &outcome);
    if (!rc) rc = body_str(rq, b, "reason", "reason", JK_IH_MAX_REASON, &j->reason);
    json_object_put(b);
    if (rc) return rc;
    if (!outcome || (strcmp(outcome, "finished") && strcmp(outcome, "redirect")))
        return jk_diag_add(&rq->diag, JK_EINVAL, outcome ? "code-invalid" : "required", "outcome",
                           "outcome must be finished or redirect (to in-person care)");
    j->is_redirect = !strcmp(outcome, "redirect");
    return submit(rq, j);
}

/* The sender of a message on visit v: the doctor's role, else the resident's own Patient. */
static const char *sender_of(struct jk_http_req *rq, struct job *j)
{
    if (j->g->is_off) return jk_arena_printf(rq->arena, "Patient/%s", j->v.patient_id);
    if (is_doctor_of(j->g, &j->v))
        return jk_arena_printf(rq->arena, "PractitionerRole/%s", j->v.doctor);
    return jk_arena_strdup(rq->arena, j->g->p.link);
}

jk_rc jk_api_ih_post(struct jk_http_req *rq)
{
    static const char *const allowed[] = {"text", "image", NULL};
    struct job *j;
    struct json_object *b = NULL;
    int has_image = 0;
    jk_rc rc = begin(rq, OP_MESSAGE, &j);
    if (!rc) rc = load_visit(rq, j->g, 0, &j->v);
    if (!rc) rc = body_object(rq, allowed, &b);
    if (!rc) rc = body_str(rq, b, "text", "text", JK_IH_MAX_TEXT, &j->m.text);
    if (!rc) rc = body_attachment(rq, b, "image", &j->att, &has_image);
    json_object_put(b);
    if (rc) return rc;
    if (!j->m.text == !has_image)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "text",
                           "a message is {\"text\"} or {\"image\": {contentType, data}}");
    if (has_image) {
        struct jk_ih_policy p;
        jk_ih_policy(rules(), j->v.org, &p);
        if ((rc = jk_ih_attachment(&j->k, "image", 0, p.image_max_bytes, &j->att))) return rc;
        j->m.image = &j->att;
    }
    if (!(j->m.sender = sender_of(rq, j))) return JK_ENOMEM;
    return submit(rq, j);
}

jk_rc jk_api_ih_video(struct jk_http_req *rq)
{
    struct job *j;
    jk_rc rc = begin(rq, OP_VIDEO, &j);
    if (!rc) rc = load_visit(rq, j->g, 0, &j->v);
    if (rc) return rc;
    if (!jk_ih_is_live(j->v.status)) {
        jk_diag_add_text(&rq->diag, JK_ERULE, "business-rule", NULL,
                         "该次在线复诊已结束，不能再发起视频", "the visit has ended: no video");
        if (rq->diag.tail) {
            rq->diag.tail->detail_system = JK_IH_REFUSAL_SYSTEM;
            rq->diag.tail->detail_code = "visit-ended";
        }
        return JK_ERULE;
    }
    if ((rc = jk_ih_video_room(j->v.id, &j->room)))
        return jk_diag_add(&rq->diag, rc, "transient", NULL,
                           "the video service did not open a room; try again");
    j->m.video_url = j->room.url;
    if (!(j->m.sender = sender_of(rq, j))) return JK_ENOMEM;
    return submit(rq, j);
}

/* ---- reads ---- */

jk_rc jk_api_ih_get(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    struct jk_ih_visit v;
    if (!rules()) return JK_EINTERNAL;
    jk_rc rc = jk_api_guard(rq, "read", &g);
    if (!rc) rc = load_visit(rq, g, 0, &v);
    return rc ? rc : send_json(rq, 200, IH_JSON, visit_json(rq->arena, &v));
}

jk_rc jk_api_ih_messages(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    struct jk_ih_visit v;
    struct json_object *msgs = NULL;
    if (!rules()) return JK_EINTERNAL;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (!rc) rc = load_visit(rq, g, 0, &v);
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!rc && !c) rc = JK_EDB;
    if (!rc) rc = jk_ih_messages(c, rq->arena, v.id, &msgs);
    if (rc) return rc;
    if (!g->is_off) g->recs[0].res_type = "Communication";
    struct json_object *b = json_object_new_object(), *entries = json_object_new_array();
    add_s(b, "resourceType", "Bundle");
    add_s(b, "type", "searchset");
    json_object_object_add(b, "total",
                           json_object_new_int64((int64_t)json_object_array_length(msgs)));
    for (size_t i = 0; i < json_object_array_length(msgs); i++) {
        struct json_object *e = json_object_new_object();
        struct json_object *m = json_object_get(json_object_array_get_idx(msgs, i));
        add_s(e, "fullUrl",
              jk_arena_printf(rq->arena, "%s/fhir/R4/Communication/%s", jk_api_app(rq)->base_url,
                              jk_json_str(m, "id") ? jk_json_str(m, "id") : ""));
        json_object_object_add(e, "resource", m);
        json_object_array_add(entries, e);
    }
    json_object_put(msgs);
    json_object_object_add(b, "entry", entries);
    return send_json(rq, 200, JK_FHIR_JSON, b);
}

static const char *const statuses[] = {"pending", "open", "finished", "redirected", NULL};

/* The visits matching key (doctor or patient_id) into arr, newest first; status NULL: the live
 * ones for a doctor, all for a patient. */
static jk_rc list(struct jk_http_req *rq, jk_conn *c, int is_doctor, const char *key,
                  const char *status, struct json_object *arr)
{
    static const char *const sqls[4] = {
        "SELECT id FROM ih_visit WHERE patient_id = ? ORDER BY started_ms DESC LIMIT 500",
        "SELECT id FROM ih_visit WHERE patient_id = ? AND status = ? ORDER BY started_ms DESC"
        " LIMIT 500",
        "SELECT id FROM ih_visit WHERE doctor = ? AND status IN ('pending', 'open') ORDER BY"
        " started_ms LIMIT 500",
        "SELECT id FROM ih_visit WHERE doctor = ? AND status = ? ORDER BY started_ms DESC"
        " LIMIT 500"};
    jk_stmt *s;
    int has_row;
    const char *ids[LIST_MAX];
    size_t n = 0;
    jk_rc rc = jk_conn_prepare(c, sqls[is_doctor * 2 + (status != NULL)], &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, key, strlen(key));
    if (!rc && status) rc = jk_stmt_text_arg(s, 2, status, strlen(status));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row && n < LIST_MAX) {
        if (!(ids[n++] = jk_arena_strdup(rq->arena, jk_stmt_col_text(s, 0, NULL)))) rc = JK_ENOMEM;
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    if (s) jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n && json_object_array_length(arr) < LIST_MAX; i++) {
        struct jk_ih_visit v;
        if (!(rc = jk_ih_visit_get(c, rq->arena, ids[i], &v)))
            json_object_array_add(arr, visit_json(rq->arena, &v));
    }
    return rc;
}

jk_rc jk_api_ih_list(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    if (!rules()) return JK_EINTERNAL;
    jk_rc rc = jk_api_guard(rq, "search", &g);
    if (rc) return rc;
    const char *status = jk_http_query_get(rq, "status");
    int ok = !status;
    for (int i = 0; !ok && statuses[i]; i++)
        ok = !strcmp(statuses[i], status);
    if (!ok)
        return jk_diag_add(&rq->diag, JK_EINVAL, "code-invalid", "status",
                           "status must be pending, open, finished or redirected");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct json_object *out = json_object_new_object(), *arr = json_object_new_array();
    json_object_object_add(out, "visits", arr);
    if (!g->is_off) {
        g->recs[0].res_type = "Encounter";
        g->recs[0].res_id = NULL;
    }
    const char *doctor = jk_http_query_get(rq, "doctor"),
               *patient = jk_http_query_get(rq, "patient");
    if (g->is_off && (doctor || patient)) { /* development: say whose */
        const char *key =
            doctor ? jk_api_ref_id(doctor, "PractitionerRole") : jk_api_ref_id(patient, "Patient");
        rc = jk_fhir_id_ok(key) ? list(rq, c, doctor != NULL, key, status, arr)
                                : jk_diag_add(&rq->diag, JK_EINVAL, "value", NULL,
                                              "doctor=PractitionerRole/<id> or "
                                              "patient=Patient/<id>");
    } else if (is_role(g, "doctor") && !strncmp(g->p.link, "PractitionerRole/", 17)) {
        rc = list(rq, c, 1, g->p.link + 17, status, arr);
    } else if (is_role(g, "patient")) {
        struct jk_az_scope sc;
        jk_authz_scope(g->az, JK_AZ_READ, "Patient", 0, &sc);
        for (size_t i = 0; !rc && sc.mode == JK_AZ_SOME && i < sc.n_patients && i < MAX_WARDS; i++)
            rc = list(rq, c, 0, sc.patients[i], status, arr);
    } else {
        json_object_put(out);
        if (!g->is_off) g->recs[0].action = "refused";
        return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL,
                           "visits are listed for their doctor (the queue) and their patients "
                           "and guardians");
    }
    for (size_t i = 0; !rc && i < json_object_array_length(arr); i++) {
        const char *ref = jk_json_str(json_object_array_get_idx(arr, i), "patient");
        const char *id = jk_arena_strdup(rq->arena, jk_api_ref_id(ref, "Patient"));
        if (!id) rc = JK_ENOMEM;
        jk_api_note_patient(rq, g, id);
    }
    if (rc) {
        json_object_put(out);
        return rc;
    }
    return send_json(rq, 200, IH_JSON, out);
}
