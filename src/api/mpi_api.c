/* mpi_api.c - the person index over HTTP: Patient/$match for registration desks and
 * institution systems, and the record stewards' API (persons, history, review queue, link,
 * unlink, merge, unmerge). docs/internals/mpi.md. */
#include <math.h>
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
#include "mpi/mpi.h"

#define MATCH_DEFAULT_COUNT 10
#define MATCH_MAX_COUNT     100
#define REVIEWS_MAX         200
#define GRADE_URL           "http://hl7.org/fhir/StructureDefinition/match-grade"
#define PERSON_URL          "https://jiankang.example/fhir/StructureDefinition/empi-person"

/* Authenticates rq (action for its audit record) and refuses roles outside mask. */
static jk_rc guard_roles(struct jk_http_req *rq, const char *action, unsigned mask,
                         const char *what, struct jk_api_guard **g)
{
    jk_rc rc = jk_api_guard(rq, action, g);
    if (rc || (*g)->is_off || (mask >> (*g)->p.role & 1u)) return rc;
    (*g)->recs[0].action = "refused";
    return jk_diag_add(&rq->diag, JK_EFORBIDDEN, "forbidden", NULL, "%s: not for the role %s", what,
                       jk_role_info((*g)->p.role)->name);
}

static const struct jk_security_rules *sec(void)
{
    static const struct jk_security_rules none;
    const struct jk_security_rules *r = jk_api_security_rules();
    return r ? r : &none;
}

static jk_rc send_json(struct jk_http_req *rq, int status, struct json_object *o)
{
    const char *text = jk_arena_strdup(
        rq->arena,
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    if (!text) return JK_ENOMEM;
    return jk_http_respond(rq, status, "application/json; charset=utf-8", text, strlen(text));
}

/* ---- Patient/$match ---- */

struct match_in {
    struct json_object *patient; /* owned by the parsed body */
    int only_certain;
    int count;
};

static jk_rc match_params(struct jk_http_req *rq, struct json_object *body, struct match_in *in)
{
    struct json_object *params = NULL;
    in->count = MATCH_DEFAULT_COUNT;
    if (strcmp(jk_json_str(body, "resourceType") ? jk_json_str(body, "resourceType") : "",
               "Parameters"))
        return jk_diag_add(&rq->diag, JK_EINVAL, "invalid", "Parameters",
                           "Patient/$match takes a Parameters resource");
    json_object_object_get_ex(body, "parameter", &params);
    for (size_t i = 0; i < json_object_array_length(params); i++) {
        struct json_object *p = json_object_array_get_idx(params, i), *v;
        const char *name = jk_json_str(p, "name");
        char path[64];
        snprintf(path, sizeof path, "Parameters.parameter[%zu]", i);
        if (name && !strcmp(name, "resource") && json_object_object_get_ex(p, "resource", &v) &&
            !strcmp(jk_json_str(v, "resourceType") ? jk_json_str(v, "resourceType") : "",
                    "Patient")) {
            in->patient = v;
        } else if (name && !strcmp(name, "onlyCertainMatches") &&
                   json_object_object_get_ex(p, "valueBoolean", &v) &&
                   json_object_is_type(v, json_type_boolean)) {
            in->only_certain = json_object_get_boolean(v);
        } else if (name && !strcmp(name, "count") &&
                   json_object_object_get_ex(p, "valueInteger", &v) &&
                   json_object_is_type(v, json_type_int) && json_object_get_int(v) >= 1 &&
                   json_object_get_int(v) <= MATCH_MAX_COUNT) {
            in->count = json_object_get_int(v);
        } else {
            return jk_diag_add(&rq->diag, JK_EINVAL, "invalid", path,
                               "expected resource (a Patient), onlyCertainMatches (valueBoolean) "
                               "or count (valueInteger from 1 to %d)",
                               MATCH_MAX_COUNT);
        }
    }
    if (!in->patient)
        return jk_diag_add(&rq->diag, JK_EINVAL, "required", "Parameters.parameter",
                           "the parameter 'resource' with the Patient to match is required");
    return JK_OK;
}

static jk_rc match_entry(struct jk_http_req *rq, struct jk_buf *b, const struct jk_mpi_hit *h,
                         const struct jk_res *r)
{
    jk_rc rc = jk_buf_printf(b, "{\"fullUrl\":\"%s/fhir/R4/Patient/%s\",\"resource\":",
                             jk_api_app(rq)->base_url, h->patient);
    if (!rc) rc = jk_buf_append(b, r->body, r->body_len);
    /* the score as a probability: the log2 likelihood ratio through the logistic function */
    if (!rc)
        rc = jk_buf_printf(b,
                           ",\"search\":{\"extension\":[{\"url\":\"" GRADE_URL
                           "\",\"valueCode\":\"%s\"},{\"url\":\"" PERSON_URL
                           "\",\"valueString\":\"%s\"}],\"mode\":\"match\",\"score\":%.4f}}",
                           jk_mpi_grade_name(h->grade), h->person, 1.0 / (1.0 + exp2(-h->score)));
    return rc;
}

jk_rc jk_api_fhir_match(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    struct jk_app *app = jk_api_app(rq);
    jk_rc rc = guard_roles(rq, "operation", sec()->match_roles, "Patient/$match", &g);
    if (!rc) rc = jk_api_check_content_type(rq);
    struct json_object *body = NULL;
    if (!rc) rc = jk_json_parse(rq->body, rq->body_len, &app->json_limits, &rq->diag, &body);
    struct match_in in = {0};
    if (!rc) rc = match_params(rq, body, &in);
    struct jk_mpi_rec *rec = NULL;
    if (!rc) rc = jk_protect_seal(in.patient, &rq->diag); /* identity numbers to index codes */
    if (!rc) rc = jk_mpi_prepare(rq->arena, in.patient, &rec);
    json_object_put(body);
    if (!rc && !rec) rc = JK_EINTERNAL;
    jk_conn *c = rc ? NULL : jk_store_conn(app->db);
    if (!rc && !c) rc = JK_EDB;
    struct jk_mpi_hit *hits = NULL;
    size_t n = 0;
    if (!rc) rc = jk_mpi_match(c, rq->arena, rec, MATCH_MAX_COUNT, &hits, &n);
    if (rc) return rc;
    /* Who is not a record steward learns of a certain, unique match only. */
    int all = g->is_off || (sec()->match_candidates_roles >> g->p.role & 1u);
    size_t n_certain = 0, withheld = 0;
    while (n_certain < n && hits[n_certain].grade == JK_MPI_CERTAIN)
        n_certain++;
    size_t shown = all && !in.only_certain ? n : n_certain;
    if (!all && n_certain > 1) shown = 0;
    if (shown > (size_t)in.count) shown = (size_t)in.count;
    withheld = n - shown;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_printf(&b,
                       "{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":%zu,"
                       "\"entry\":[",
                       shown);
    for (size_t i = 0; i < shown && !rc; i++) {
        struct jk_res r;
        if ((rc = jk_res_read(c, rq->arena, "Patient", hits[i].patient, &r))) break;
        jk_api_note_patient(rq, g, hits[i].patient);
        if (i) rc = jk_buf_puts(&b, ",");
        if (!rc) rc = match_entry(rq, &b, &hits[i], &r);
    }
    if (!rc && withheld) {
        jk_diag_init(&rq->diag, rq->arena);
        jk_diag_add(&rq->diag, JK_OK, "informational", NULL,
                    "%zu further candidate%s not shown: %s", withheld,
                    withheld > 1 ? "s are" : " is",
                    all ? "below the count or not certain"
                        : "only a certain, unique match is "
                          "disclosed to this role");
        rc = jk_buf_printf(&b, "%s{\"resource\":", shown ? "," : "");
        if (!rc) rc = jk_api_outcome_text(rq, "information", &b);
        if (!rc) rc = jk_buf_puts(&b, ",\"search\":{\"mode\":\"outcome\"}}");
    }
    if (!rc) rc = jk_buf_puts(&b, "]}");
    if (rc) {
        jk_buf_free(&b);
        return rc == JK_ENOTFOUND || rc == JK_EGONE ? JK_EDB : rc;
    }
    const char *text = jk_arena_strndup(rq->arena, b.p, b.len);
    size_t len = b.len;
    jk_buf_free(&b);
    return text ? jk_api_send_fhir(rq, 200, text, len) : JK_ENOMEM;
}

/* ---- the stewards' reads ---- */

static jk_rc steward(struct jk_http_req *rq, const char *action, struct jk_api_guard **g)
{
    return guard_roles(rq, action, sec()->mpi_steward_roles, "the person index", g);
}

static jk_rc person_read(struct jk_http_req *rq, int is_history)
{
    struct jk_api_guard *g;
    jk_rc rc = steward(rq, "read", &g);
    if (rc) return rc;
    const char *id = jk_http_param(rq, "id");
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    if (!id) { /* GET /api/mpi/persons?patient=Patient/<id> */
        const char *patient = jk_http_query_get(rq, "patient");
        patient = patient ? jk_api_ref_id(patient, "Patient") : NULL;
        char *found = jk_arena_alloc(rq->arena, JK_MPI_ID_MAX);
        if (!patient || !jk_fhir_id_ok(patient))
            return jk_diag_add(&rq->diag, JK_EINVAL, "required", "patient",
                               "say whose person: ?patient=Patient/<id>");
        if (!found) return JK_ENOMEM;
        rc = jk_mpi_person_find(c, patient, found);
        if (rc == JK_ENOTFOUND)
            return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", "patient",
                               "Patient/%s is not in the person index", patient);
        if (rc) return rc;
        id = found;
    }
    if (!g->is_off) {
        g->recs[0].res_type = "Person";
        g->recs[0].res_id = id;
    }
    struct json_object *o = NULL;
    rc = is_history ? jk_mpi_history_json(c, id, &o) : jk_mpi_person_json(c, id, &o);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(&rq->diag, JK_ENOTFOUND, "not-found", NULL, "there is no person '%s'",
                           id);
    if (rc) return rc;
    const char **ids;
    size_t n = 0;
    if (!g->is_off && !(rc = jk_mpi_patients_of(c, rq->arena, id, &ids, &n)))
        for (size_t i = 0; i < n; i++)
            jk_api_note_patient(rq, g, ids[i]);
    return rc ? (json_object_put(o), rc) : send_json(rq, 200, o);
}

jk_rc jk_api_mpi_person(struct jk_http_req *rq)
{
    return person_read(rq, 0);
}

jk_rc jk_api_mpi_history(struct jk_http_req *rq)
{
    return person_read(rq, 1);
}

jk_rc jk_api_mpi_reviews(struct jk_http_req *rq)
{
    struct jk_api_guard *g;
    jk_rc rc = steward(rq, "search", &g);
    if (rc) return rc;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    struct json_object *o = NULL;
    if ((rc = jk_mpi_reviews_json(c, REVIEWS_MAX, &o))) return rc;
    struct json_object *list = NULL, *x;
    json_object_object_get_ex(o, "reviews", &list);
    /* The audit record keeps the ids until the request ends; o is freed once it is sent. */
    for (size_t i = 0; i < json_object_array_length(list); i++)
        if (json_object_object_get_ex(json_object_array_get_idx(list, i), "patient", &x))
            jk_api_note_patient(
                rq, g,
                jk_arena_strdup(rq->arena, jk_api_ref_id(json_object_get_string(x), "Patient")));
    return send_json(rq, 200, o);
}

/* ---- the stewards' changes: one transaction with their audit records ---- */

enum change { CH_LINK, CH_UNLINK, CH_DECIDE, CH_MERGE, CH_UNMERGE };

struct change_job {
    struct jk_http_req *rq;
    enum change kind;
    const char *patient, *person, *from, *into, *actor;
    int is_same;
    int64_t now;
    const char *out; /* the person after the change, as JSON */
    jk_rc rc;
};

/* The person to show after the change. */
static const char *shown_person(const struct change_job *j, const char *made)
{
    return j->kind == CH_MERGE ? j->into : j->kind == CH_UNMERGE ? j->person : made;
}

static jk_rc change_tx(jk_conn *c, void *arg)
{
    struct change_job *j = arg;
    struct jk_http_req *rq = j->rq;
    const char *made = j->person;
    jk_rc rc;
    switch (j->kind) {
    case CH_LINK: rc = jk_mpi_link(c, &rq->diag, j->patient, j->person, j->actor, j->now); break;
    case CH_UNLINK:
        rc = jk_mpi_unlink(c, &rq->diag, rq->arena, j->patient, j->actor, j->now, &made);
        break;
    case CH_DECIDE:
        rc = jk_mpi_review(c, &rq->diag, j->patient, j->person, j->is_same, j->actor, j->now);
        break;
    case CH_MERGE:
        rc = jk_mpi_merge(c, &rq->diag, rq->arena, j->from, j->into, j->actor, j->now);
        break;
    default: rc = jk_mpi_unmerge(c, &rq->diag, rq->arena, j->person, j->actor, j->now); break;
    }
    struct jk_api_guard *g = rq->ctx;
    const char **ids;
    size_t n = 0;
    const char *who = shown_person(j, made);
    if (!rc && !(rc = jk_mpi_patients_of(c, rq->arena, who, &ids, &n)))
        for (size_t i = 0; i < n; i++)
            jk_api_note_patient(rq, g, ids[i]);
    struct json_object *o = NULL;
    if (!rc && !(rc = jk_mpi_person_json(c, who, &o))) {
        j->out = jk_arena_strdup(rq->arena,
                                 json_object_to_json_string_ext(
                                     o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(o);
        if (!j->out) rc = JK_ENOMEM;
    }
    if (!rc) rc = jk_api_audit_append(c, rq, 200);
    return rc;
}

static void change_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    struct change_job *j = rq->state;
    j->rc = rc;
    if (rc && rq->ctx) jk_api_write_failed(rq);
    jk_http_wake(rq);
}

static jk_rc change_finish(struct jk_http_req *rq)
{
    struct change_job *j = rq->state;
    if (j->rc) return j->rc;
    return jk_http_respond(rq, 200, "application/json; charset=utf-8", j->out, strlen(j->out));
}

/* The string member name of body, in the arena; an issue when absent or not an id. */
static jk_rc member(struct jk_http_req *rq, struct json_object *body, const char *name,
                    const char *ref_type, const char **out)
{
    const char *v = jk_json_str(body, name);
    if (v && ref_type) v = jk_api_ref_id(v, ref_type);
    if (!v || !jk_fhir_id_ok(v))
        return jk_diag_add(&rq->diag, JK_EINVAL, v ? "value" : "required", name, "%s must be %s",
                           name, ref_type ? "a reference Patient/<id>" : "a person id");
    return (*out = jk_arena_strdup(rq->arena, v)) ? JK_OK : JK_ENOMEM;
}

static jk_rc change(struct jk_http_req *rq, enum change kind, const char *action)
{
    struct jk_api_guard *g;
    struct jk_app *app = jk_api_app(rq);
    jk_rc rc = steward(rq, action, &g);
    struct json_object *body = NULL;
    if (!rc) rc = jk_json_parse(rq->body, rq->body_len, &app->json_limits, &rq->diag, &body);
    struct change_job *j = rc ? NULL : jk_arena_zalloc(rq->arena, sizeof *j);
    if (!rc && !j) rc = JK_ENOMEM;
    if (!rc) {
        j->rq = rq;
        j->kind = kind;
        j->now = jk_time_now_ms();
        j->actor = g->is_off ? "anonymous" : g->p.username;
    }
    if (!rc && (kind == CH_LINK || kind == CH_UNLINK || kind == CH_DECIDE))
        rc = member(rq, body, "patient", "Patient", &j->patient);
    if (!rc && (kind == CH_LINK || kind == CH_DECIDE || kind == CH_UNMERGE))
        rc = member(rq, body, "person", NULL, &j->person);
    if (!rc && kind == CH_MERGE) rc = member(rq, body, "from", NULL, &j->from);
    if (!rc && kind == CH_MERGE) rc = member(rq, body, "into", NULL, &j->into);
    if (!rc && kind == CH_DECIDE) {
        const char *d = jk_json_str(body, "decision");
        if (!d || (strcmp(d, "link") && strcmp(d, "no-match")))
            rc = jk_diag_add(&rq->diag, JK_EINVAL, "value", "decision",
                             "decision must be \"link\" (the same person) or \"no-match\"");
        else
            j->is_same = !strcmp(d, "link");
    }
    json_object_put(body);
    if (rc) return rc;
    if (!g->is_off) {
        g->recs[0].res_type = j->patient ? "Patient" : "Person";
        g->recs[0].res_id = j->patient ? j->patient : j->person ? j->person : j->from;
    }
    rq->state = j;
    jk_http_defer(rq, change_finish);
    jk_store_tx_async(app->db, change_tx, j, change_done, rq);
    return JK_OK;
}

jk_rc jk_api_mpi_link(struct jk_http_req *rq)
{
    return change(rq, CH_LINK, "mpi-link");
}

jk_rc jk_api_mpi_unlink(struct jk_http_req *rq)
{
    return change(rq, CH_UNLINK, "mpi-unlink");
}

jk_rc jk_api_mpi_decide(struct jk_http_req *rq)
{
    return change(rq, CH_DECIDE, "mpi-review");
}

jk_rc jk_api_mpi_merge(struct jk_http_req *rq)
{
    return change(rq, CH_MERGE, "mpi-merge");
}

jk_rc jk_api_mpi_unmerge(struct jk_http_req *rq)
{
    return change(rq, CH_UNMERGE, "mpi-unmerge");
}
