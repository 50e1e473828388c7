/* visit.h - online follow-up visits of the internet hospital (互联网医院复诊;
 * docs/internals/rx.md): the rules (rules/internet-hospital.json), the gate a visit passes
 * before it opens, and the visit's life: open (or pending until the doctor confirms an uploaded
 * record), chat, video, end or redirect to in-person care. Every change runs inside a store
 * transaction on the connection it is given and takes the time as an argument; the gate's
 * reads may run on any connection. */
#ifndef JK_IH_VISIT_H
#define JK_IH_VISIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"

struct jk_arena;
struct jk_diag;
struct json_object;

#define JK_IH_REFUSAL_SYSTEM "https://jiankang.example/fhir/CodeSystem/internet-hospital-refusal"
#define JK_IH_END_REASON_URL "https://jiankang.example/fhir/StructureDefinition/visit-end-reason"
#define JK_IH_BASIS_URL      "https://jiankang.example/fhir/StructureDefinition/follow-up-basis"
#define JK_IH_MAX_TEXT       4000 /* bytes of one chat message */
#define JK_IH_MAX_REASON     500  /* bytes of an end reason */

/* ---- rules (rules/internet-hospital.json) ---- */

/* What holds for one institution: the file's values with its overrides applied. */
struct jk_ih_policy {
    int utc_offset_min;     /* time.utc_offset_minutes */
    int prior_days;         /* visit.prior_diagnosis_days */
    int guardian_age_years; /* visit.guardian_age_years */
    int min_practice_years; /* doctor.min_practice_years */
    int reply_hours;        /* visit.reply_hours */
    int64_t fee_fen;        /* visit.fee_fen */
    int64_t image_max_bytes;
    int emr_years, chat_years; /* retention.* */
};

struct jk_ih_rules;

/* rules/internet-hospital.json, or $JIANKANG_IH_RULES when set. */
const char *jk_ih_rules_path(void);

/* Reads and checks the whole file (path NULL: jk_ih_rules_path()). JK_EINVAL or JK_ENOTFOUND
 * with "FILE: /pointer: problem" in err. The caller frees *out with jk_ih_rules_free. */
jk_rc jk_ih_rules_load(const char *path, struct jk_ih_rules **out, char *err, size_t errlen);
void jk_ih_rules_free(struct jk_ih_rules *r);

/* Loads the rules and installs them for the server (once at start-up); jk_ih_stop frees them.
 * jk_ih_rules() is NULL until then. */
jk_rc jk_ih_start(const char *path, char *err, size_t errlen);
void jk_ih_stop(void);
const struct jk_ih_rules *jk_ih_rules(void);

/* Whether Encounter or Communication type/id belongs to an online visit (jk_fhir_owned_fn):
 * registered by jk_ih_start, so that a plain FHIR update or delete cannot change the record
 * of a visit. */
jk_rc jk_ih_owned(jk_conn *c, const char *type, const char *id, int *is_owned, const char **how);

/* The policy of organisation org (an Organization id or reference; NULL: the defaults). */
void jk_ih_policy(const struct jk_ih_rules *r, const char *org, struct jk_ih_policy *out);

/* Whether role (a role name) is in the rules' list "patient" or "doctor". */
int jk_ih_role_may(const struct jk_ih_rules *r, const char *list, const char *role);

/* Whether system|code is a practising licence (doctor.licence_codes). */
int jk_ih_is_licence(const struct jk_ih_rules *r, const char *system, const char *code);

/* ---- the gate's arithmetic (pure) ---- */

/* Completed years from the FHIR date (or dateTime) date to the local day of now_ms at
 * utc_offset_min. A partial date counts from its latest day ("2020" as 2020-12-31, "2020-02"
 * as 2020-02-29), so a bound is never met early. -1 when date is not a date. */
int jk_ih_years_since(const char *date, int64_t now_ms, int utc_offset_min);

/* The instant (ms) of a FHIR date or dateTime: a date or partial date at the end of its
 * last local day at utc_offset_min (never earlier than it could be). JK_EINVAL when it is
 * not one. */
jk_rc jk_ih_instant(const char *s, int utc_offset_min, int64_t *ms);

/* Whether when_ms is at most days days before now_ms (and not after now plus a day of clock
 * skew). */
int jk_ih_within_days(int64_t when_ms, int64_t now_ms, int days);

/* ---- visits ---- */

/* One row of ih_visit. Strings in the arena of the call that read it. */
struct jk_ih_visit {
    const char *id;         /* the Encounter's id */
    const char *patient_id; /* Patient id */
    const char *person;     /* golden person of the person index */
    int64_t account_id;     /* the account that opened it */
    const char *org;        /* Organization id of the internet hospital (the doctor's) */
    const char *doctor;     /* PractitionerRole id */
    const char *condition_code;
    const char *basis;            /* "Condition/x", "Encounter/x" or "DocumentReference/x" */
    const char *guardian;         /* "RelatedPerson/x", "Patient/x" or "" */
    const char *status;           /* pending, open, finished, redirected */
    int64_t started_ms, ended_ms; /* ended_ms 0 while not ended */
    const char *end_reason;
    int64_t amount_fen;
};

/* Whether a visit in status takes messages, video and an end (pending or open). */
int jk_ih_is_live(const char *status);

/* Reads visit id. JK_ENOTFOUND. */
jk_rc jk_ih_visit_get(jk_conn *c, struct jk_arena *a, const char *id, struct jk_ih_visit *out);

/* What every call gets: the request's arena and diagnostics (refusals carry the rule as
 * details, system JK_IH_REFUSAL_SYSTEM), the time and the rules. */
struct jk_ih_call {
    struct jk_arena *a;
    struct jk_diag *d;
    int64_t now_ms;
    const struct jk_ih_rules *rules;
};

/* An attachment sent by a client: contentType and base64 data (checked by jk_ih_attachment). */
struct jk_ih_attachment {
    const char *content_type, *data_b64, *title;
    size_t n_bytes; /* decoded */
};

/* Checks an attachment: a known type (image/jpeg, image/png; application/pdf when is_record),
 * base64 that decodes to at most max_bytes whose first bytes are of that type. Refusals name
 * the field what ("image", "record"). */
jk_rc jk_ih_attachment(const struct jk_ih_call *k, const char *what, int is_record,
                       int64_t max_bytes, struct jk_ih_attachment *att);

/* A request to open a visit. */
struct jk_ih_open {
    /* in */
    const char *patient_id;                /* the patient */
    const char *doctor;                    /* PractitionerRole id */
    const char *system, *code, *display;   /* the condition (system, display may be NULL) */
    const char *basis;                     /* a reference the patient names as the basis, or NULL */
    const char *guardian;                  /* "RelatedPerson/x" or "Patient/x", or NULL */
    const char *requester;                 /* the resident's own Patient id */
    int is_ward;                           /* patient is a ward of the requester (authz) */
    const char *guardian_codes;            /* access.guardian_relationships, space-separated */
    const struct jk_ih_attachment *record; /* an uploaded record, or NULL */
    int64_t account_id;
    /* out of jk_ih_gate */
    const char *person, *org, *basis_ref; /* basis_ref NULL: the record, pending */
    const char *guardian_ref;             /* "" when none was needed */
    int64_t amount_fen;
};

/* The gate (reads only): the doctor is qualified (doctor-unqualified), the child has a
 * guardian (guardian-required), the condition was diagnosed in person recently enough
 * (first-visit, no-diagnosis) unless a record is uploaded. Refusals are JK_ERULE (422) with the
 * rule in d; JK_EINVAL for a reference that is not one; JK_EDB. */
jk_rc jk_ih_gate(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_open *o);

/* Inside a transaction, after jk_ih_gate: the Encounter (class VR), the uploaded record as a
 * DocumentReference, the ih_visit row. *out the new visit. */
jk_rc jk_ih_visit_open(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_open *o,
                       struct jk_ih_visit *out);

/* Inside a transaction: the doctor confirms the pending visit v's uploaded record as its
 * basis (the visit opens). JK_ECONFLICT (with an issue) when v is not pending. */
jk_rc jk_ih_confirm(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_visit *v);

/* Inside a transaction: ends live visit v: is_redirect sends the patient to in-person care
 * (reason required) and the Encounter is cancelled with the reason; else it is finished. */
jk_rc jk_ih_end(jk_conn *c, const struct jk_ih_call *k, struct jk_ih_visit *v, int is_redirect,
                const char *reason);

/* A chat message of live visit v from sender ("Patient/x", "PractitionerRole/x") to the
 * other side: text, or an image (checked with jk_ih_attachment), or a video room (url).
 * Inside a transaction; the Communication's id into *id. JK_ERULE (visit-ended) when v is
 * not live. */
struct jk_ih_message {
    const char *sender;
    const char *text;                     /* or */
    const struct jk_ih_attachment *image; /* or */
    const char *video_url;
};
jk_rc jk_ih_post(jk_conn *c, const struct jk_ih_call *k, const struct jk_ih_visit *v,
                 const struct jk_ih_message *m, const char **id);

/* The Communications of visit id, oldest first, as a JSON array (a new json-c object). */
jk_rc jk_ih_messages(jk_conn *c, struct jk_arena *a, const char *id, struct json_object **out);

#endif
