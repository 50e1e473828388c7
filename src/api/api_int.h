/* api_int.h - helpers shared by the handlers of src/api. */
#ifndef JK_API_INT_H
#define JK_API_INT_H

#include "api/api.h"
#include "auth/audit.h"
#include "auth/authz.h"
#include "auth/protect.h"
#include "core/buf.h"
#include "fhir/search.h"
#include "store/resource.h"

#define JK_FHIR_JSON "application/fhir+json; charset=utf-8"

/* The application state of the request's server. */
struct jk_app *jk_api_app(struct jk_http_req *rq);

/* Responds with b's contents as FHIR JSON (copied into the request arena; b is freed). */
jk_rc jk_api_send_buf(struct jk_http_req *rq, int status, struct jk_buf *b);

/* Appends rq's diagnostics as an OperationOutcome; severity NULL picks error or fatal. */
jk_rc jk_api_outcome_text(struct jk_http_req *rq, const char *severity, struct jk_buf *b);

/* Checks shared by the handlers; each adds an issue and returns its rc on failure. */
jk_rc jk_api_check_type(struct jk_http_req *rq, const char *type); /* R4 type: 404 */
jk_rc jk_api_check_id(struct jk_http_req *rq, const char *id);     /* FHIR id: 400 */
jk_rc jk_api_check_content_type(struct jk_http_req *rq);           /* FHIR JSON: 415 */
jk_rc jk_api_if_match(struct jk_http_req *rq, int64_t *version);   /* 0 when absent */

/* ETag and Last-Modified of r, and its Location when is_location. */
void jk_api_version_headers(struct jk_http_req *rq, const struct jk_res *r, int is_location);

/* JK_EMEDIA unless _format is absent or names JSON. */
jk_rc jk_api_check_format(struct jk_http_req *rq);

/* guard.c: the token, the authorisation decision and the audit record of every request. */
struct jk_api_guard {
    int is_off;            /* security = off: nothing is checked or recorded */
    struct jk_principal p; /* who asks */
    struct jk_authz *az;   /* what they may see (released with the request) */
    const char *bg_reason; /* X-Break-Glass-Reason, or NULL */
    unsigned show;         /* JK_API_SHOW_* for the response */
    enum jk_az_action search_act;
    struct jk_audit_rec *recs; /* recs[0]: the access; then one per further patient */
    size_t n_recs;
    int is_recorded; /* appended inside the action's own transaction already */
    int is_bundle;   /* a transaction or batch: one record per write, and one for it all */
    int is_written;  /* a write reached its commit: cached views are stale after it */
    const char *write_patient, *new_patient; /* the patient of the write being decided */
    int status;                              /* the response status, for the records' outcome */
    jk_rc audit_rc;
};
/* Responds with the FHIR JSON text body[0..len) (which must live until the request ends),
 * its sealed identity and phone numbers opened whole or masked as the reader's role says
 * (masked when the request has no guard). JK_ENOMEM. */
jk_rc jk_api_send_fhir(struct jk_http_req *rq, int status, const char *body, size_t len);
/* Authenticates the request (401 without a valid token) and starts its audit record with
 * action (a jk_audit_action_known name). Idempotent: a second call returns the same guard. */
jk_rc jk_api_guard(struct jk_http_req *rq, const char *action, struct jk_api_guard **out);
/* The decision for act on a resource with facts f (id may be NULL): JK_OK, or JK_EFORBIDDEN
 * with an issue. Notes the resource and its patients in the audit record. */
jk_rc jk_api_allow(struct jk_http_req *rq, struct jk_api_guard *g, enum jk_az_action act,
                   const struct jk_az_facts *f, const char *id);
/* jk_api_allow with the facts of the stored type/id. */
jk_rc jk_api_allow_stored(struct jk_http_req *rq, struct jk_api_guard *g, enum jk_az_action act,
                          const char *type, const char *id);
/* jk_api_allow for content about to be written (JK_AZ_CREATE), its facts taken from its index
 * rows; its holder will be the principal's organisation. */
jk_rc jk_api_allow_new(struct jk_http_req *rq, struct jk_api_guard *g, const char *type,
                       const char *id, const struct jk_idx_row *rows, size_t n_rows);
/* Whether the principal may read version r of a resource (whose current version they may
 * read): an old version may have been about another patient. */
int jk_api_may_read_version(struct jk_http_req *rq, struct jk_api_guard *g, const struct jk_res *r);
/* Restricts search o to what the principal may see of type for act (JK_AZ_SEARCH or
 * JK_AZ_COUNT); JK_EFORBIDDEN when nothing. */
jk_rc jk_api_search_scope(struct jk_http_req *rq, struct jk_api_guard *g, enum jk_az_action act,
                          const char *type, struct jk_search_opts *o);
/* Notes patient in the request's audit records (one record per patient touched). */
void jk_api_note_patient(struct jk_http_req *rq, struct jk_api_guard *g, const char *patient);
/* Appends the request's audit records on c, inside the transaction of what they record
 * (status: the response's); on_ready then has nothing left to append. */
jk_rc jk_api_audit_append(jk_conn *c, struct jk_http_req *rq, int status);
/* The hooks that make a write decide and record itself inside its transaction, in h
 * (storage living as long as the write), or NULL when security is off; and, when the write's
 * transaction failed, jk_api_write_failed lets on_ready record the failure. */
struct jk_fhir_write_hooks;
const struct jk_fhir_write_hooks *jk_api_write_hooks(struct jk_http_req *rq,
                                                     struct jk_fhir_write_hooks *h);
void jk_api_write_failed(struct jk_http_req *rq);

/* Handlers. */
jk_rc jk_api_healthz(struct jk_http_req *rq);
jk_rc jk_api_metrics(struct jk_http_req *rq);
jk_rc jk_api_fhir_metadata(struct jk_http_req *rq);
jk_rc jk_api_fhir_read(struct jk_http_req *rq);
jk_rc jk_api_fhir_vread(struct jk_http_req *rq);
jk_rc jk_api_fhir_create(struct jk_http_req *rq);
jk_rc jk_api_fhir_update(struct jk_http_req *rq);
jk_rc jk_api_fhir_delete(struct jk_http_req *rq);
jk_rc jk_api_fhir_cond_update(struct jk_http_req *rq);
jk_rc jk_api_fhir_cond_delete(struct jk_http_req *rq);
jk_rc jk_api_fhir_history(struct jk_http_req *rq);
/* search_api.c: the search interaction */
jk_rc jk_api_fhir_search(struct jk_http_req *rq);
jk_rc jk_api_fhir_search_post(struct jk_http_req *rq);
/* bundle_api.c: transaction/batch, PATCH, $validate, $meta*, Patient/$everything */
jk_rc jk_api_fhir_bundle(struct jk_http_req *rq);
jk_rc jk_api_fhir_patch(struct jk_http_req *rq);
jk_rc jk_api_fhir_cond_patch(struct jk_http_req *rq);
jk_rc jk_api_fhir_validate(struct jk_http_req *rq);
jk_rc jk_api_fhir_meta(struct jk_http_req *rq);
jk_rc jk_api_fhir_meta_add(struct jk_http_req *rq);
jk_rc jk_api_fhir_meta_delete(struct jk_http_req *rq);
jk_rc jk_api_fhir_everything(struct jk_http_req *rq);
/* mpi_api.c: Patient/$match and the person index's stewards' API */
jk_rc jk_api_fhir_match(struct jk_http_req *rq);
jk_rc jk_api_mpi_person(struct jk_http_req *rq);
jk_rc jk_api_mpi_history(struct jk_http_req *rq);
jk_rc jk_api_mpi_reviews(struct jk_http_req *rq);
jk_rc jk_api_mpi_decide(struct jk_http_req *rq);
jk_rc jk_api_mpi_link(struct jk_http_req *rq);
jk_rc jk_api_mpi_unlink(struct jk_http_req *rq);
jk_rc jk_api_mpi_merge(struct jk_http_req *rq);
jk_rc jk_api_mpi_unmerge(struct jk_http_req *rq);

/* auth_api.c: login (/auth/token, /auth/revoke, /auth/me), bearer tokens, rate limits */
struct jk_principal;
struct jk_security_rules;
enum jk_rate_class { JK_RATE_LOGIN, JK_RATE_EXPENSIVE };
/* Installs the security rules (read with jk_security_rules_load) before the server starts;
 * without it they are read from jk_security_rules_path() on first use. */
jk_rc jk_api_auth_init(const struct jk_security_rules *rules);
/* The installed rules, or NULL when they could not be read (logged). */
const struct jk_security_rules *jk_api_security_rules(void);
/* Counts one request of cls from the client's address and, when account is not NULL, from
 * that account. 0 when allowed; else the seconds to wait, with Retry-After already added. */
int jk_api_rate_limit(struct jk_http_req *rq, enum jk_rate_class cls, const char *account);
/* Counts one request in the bucket of cls (a name of the caller's own: "register/phone") and
 * key under rule rr. 0 when allowed; else the seconds to wait, Retry-After already added. */
struct jk_rate_rule;
int jk_api_rate_take(struct jk_http_req *rq, const char *cls, const char *key,
                     const struct jk_rate_rule *rr);
/* Responds 429 with an OperationOutcome (issue code "throttled"). */
jk_rc jk_api_send_throttled(struct jk_http_req *rq, int wait_s);
/* The principal of the request's bearer token into *out. JK_EUNAUTH (with a diagnostic and
 * WWW-Authenticate) when there is no valid token; JK_EDB when the database fails. */
jk_rc jk_api_principal(struct jk_http_req *rq, struct jk_principal *out);
jk_rc jk_api_auth_token(struct jk_http_req *rq);
jk_rc jk_api_auth_revoke(struct jk_http_req *rq);
jk_rc jk_api_auth_me(struct jk_http_req *rq);

/* audit_api.c: the audit trail read by regulators (AuditEvent), the access log of a
 * resident, and refusals of changes to the trail; each such request is itself recorded */
struct jk_keys;
/* Derives the key of the pseudonyms under which a resident's access log shows staff from the
 * platform keys; once, before the server starts. */
jk_rc jk_api_audit_init(const struct jk_keys *keys);
/* The id in ref when it is "type/id" ("Organization/x" -> "x"), else ref itself. */
const char *jk_api_ref_id(const char *ref, const char *type);
jk_rc jk_api_audit_search(struct jk_http_req *rq);
jk_rc jk_api_audit_read(struct jk_http_req *rq);
jk_rc jk_api_audit_refuse(struct jk_http_req *rq);
jk_rc jk_api_access_log(struct jk_http_req *rq);

/* web_api.c: the web pages, static files of the web directory (no token needed) */
jk_rc jk_api_web_index(struct jk_http_req *rq); /* GET /: index.html */
jk_rc jk_api_web_file(struct jk_http_req *rq);  /* GET /web/<path> */

/* resident_api.c: real-name registration and newborns (docs/internals/mpi.md) */
/* Reads the registration rules (jk_registration_rules_path()) and derives the key under which
 * codes are hashed from the platform keys; once, before the server starts. JK_EINVAL with
 * "FILE: /pointer: what is wrong" in err. */
jk_rc jk_api_resident_init(const struct jk_keys *keys, char *err, size_t errlen);
/* The registration rules file: $JIANKANG_REGISTRATION_RULES, else rules/registration.json. */
const char *jk_registration_rules_path(void);
jk_rc jk_api_register_code(struct jk_http_req *rq);
jk_rc jk_api_register(struct jk_http_req *rq);
jk_rc jk_api_register_newborn(struct jk_http_req *rq);
/* card_api.c: the electronic health card (docs/internals/mpi.md) */
/* Reads rules/card.json (jk_card_rules_path) and derives the card keys from the platform keys
 * (which must outlive the server); once, before the server starts. JK_EINVAL or JK_ENOTFOUND
 * with the reason in err. */
jk_rc jk_api_card_init(const struct jk_keys *keys, char *err, size_t errlen);
jk_rc jk_api_card_issue(struct jk_http_req *rq);
jk_rc jk_api_card_list(struct jk_http_req *rq);
jk_rc jk_api_card_qr(struct jk_http_req *rq);
jk_rc jk_api_card_bind(struct jk_http_req *rq);
jk_rc jk_api_card_revoke(struct jk_http_req *rq);
jk_rc jk_api_card_uses(struct jk_http_req *rq);
jk_rc jk_api_card_verify(struct jk_http_req *rq);
/* booking_api.c: the booking pool (docs/internals/booking.md); rules installed by jk_bk_start */
jk_rc jk_api_booking_find(struct jk_http_req *rq);
jk_rc jk_api_booking_me(struct jk_http_req *rq);
jk_rc jk_api_booking_desk(struct jk_http_req *rq);
jk_rc jk_api_booking_wait(struct jk_http_req *rq);
jk_rc jk_api_booking_hold(struct jk_http_req *rq);
jk_rc jk_api_booking_book(struct jk_http_req *rq);
jk_rc jk_api_booking_cancel(struct jk_http_req *rq);
jk_rc jk_api_booking_reschedule(struct jk_http_req *rq);
jk_rc jk_api_booking_checkin(struct jk_http_req *rq);
jk_rc jk_api_booking_complete(struct jk_http_req *rq);
/* schedule_api.c: Schedule/$generate and the booking statistics (docs/internals/booking.md);
 * they use the booking rules installed with jk_bk_start */
jk_rc jk_api_schedule_generate(struct jk_http_req *rq);
jk_rc jk_api_booking_stats(struct jk_http_req *rq);
/* rx_api.c: prescribing (docs/internals/rx.md); rules installed by jk_rx_start */
jk_rc jk_api_rx_check(struct jk_http_req *rq);
jk_rc jk_api_rx_formulary(struct jk_http_req *rq);
jk_rc jk_api_rx_prescribe(struct jk_http_req *rq);
jk_rc jk_api_rx_verify(struct jk_http_req *rq);
/* ih_api.c: online follow-up visits of the internet hospital (docs/internals/rx.md); rules
 * installed by jk_ih_start, the video adapter by jk_ih_video_init */
jk_rc jk_api_ih_open(struct jk_http_req *rq);
jk_rc jk_api_ih_list(struct jk_http_req *rq);
jk_rc jk_api_ih_get(struct jk_http_req *rq);
jk_rc jk_api_ih_confirm(struct jk_http_req *rq);
jk_rc jk_api_ih_post(struct jk_http_req *rq);
jk_rc jk_api_ih_messages(struct jk_http_req *rq);
jk_rc jk_api_ih_video(struct jk_http_req *rq);
jk_rc jk_api_ih_end(struct jk_http_req *rq);
/* rx_flow_api.c: a prescription after its signature (review, code, pharmacy, redemption,
 * dispensing, delivery, cancellation) and supervision (docs/internals/rx.md); rules and keys
 * installed by jk_rx_flow_start */
jk_rc jk_api_rx_queue(struct jk_http_req *rq);
jk_rc jk_api_rx_list(struct jk_http_req *rq);
jk_rc jk_api_rx_get(struct jk_http_req *rq);
jk_rc jk_api_rx_review(struct jk_http_req *rq);
jk_rc jk_api_rx_choose(struct jk_http_req *rq);
jk_rc jk_api_rx_redeem(struct jk_http_req *rq);
jk_rc jk_api_rx_dispense(struct jk_http_req *rq);
jk_rc jk_api_rx_delivery(struct jk_http_req *rq);
jk_rc jk_api_rx_cancel(struct jk_http_req *rq);
jk_rc jk_api_supervision_visits(struct jk_http_req *rq);
jk_rc jk_api_supervision_prescriptions(struct jk_http_req *rq);

#endif
