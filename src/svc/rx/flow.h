/* flow.h - what happens to an online prescription after the doctor signs it
 * (docs/internals/rx.md): the pharmacist's review (审方) with coded reasons, the redemption
 * code, the patient's choice of pharmacy, redemption and dispensing once only, delivery
 * orders, cancellation and expiry; who may do which of these; the rules of
 * rules/dispensing.json.
 *
 * Correctness comes from the database: each change of a prescription is one conditional
 * update of its rx_prescription row (the state it must be in is in the WHERE clause), so two
 * pharmacists cannot both decide and a prescription is dispensed once, also under concurrency.
 * Every function that changes something runs inside a store transaction on the connection it
 * is given and takes the time (now_ms) as an argument. */
#ifndef JK_RX_FLOW_H
#define JK_RX_FLOW_H

#include <stddef.h>
#include <stdint.h>

#include "auth/account.h"
#include "core/crypto.h"
#include "core/rc.h"
#include "store/store.h"

struct jk_arena;
struct jk_diag;
struct json_object;

#define JK_RX_NS                  "https://jiankang.example/fhir"
#define JK_RX_GROUP_SYSTEM        JK_RX_NS "/sid/prescription"
#define JK_RX_REFUSAL_SYSTEM      JK_RX_NS "/CodeSystem/internet-hospital-refusal"
#define JK_RX_REASON_SYSTEM       JK_RX_NS "/CodeSystem/prescription-review-reason"
#define JK_RX_KIND_SYSTEM         JK_RX_NS "/CodeSystem/institution-kind"
#define JK_RX_CODE_DIGITS         12 /* a redemption code: 12 decimal digits */
#define JK_RX_MAX_REASONS         8  /* reason codes one review names */
#define JK_RX_MAX_REVIEW_TEXT     1000
#define JK_RX_MAX_ADDRESS         500
#define JK_RX_MAX_DELIVERY_STATES 8

/* ---- rules (rules/dispensing.json) ---- */

struct jk_rx_flow_rules;

/* $JIANKANG_DISPENSING_RULES, else rules/dispensing.json. */
const char *jk_rx_flow_rules_path(void);

/* Reads and checks the rules file completely ("FILE: /pointer: problem" in err). When
 * rx_rules_path (NULL: $JIANKANG_PRESCRIPTION_RULES, else rules/prescription.json) can be read
 * and has a rule rx.validity_days, its value is the code's validity instead of
 * code.validity_days. The caller frees *out. */
jk_rc jk_rx_flow_rules_load(const char *path, const char *rx_rules_path,
                            struct jk_rx_flow_rules **out, char *err, size_t errlen);
void jk_rx_flow_rules_free(struct jk_rx_flow_rules *r);

/* What the rules say. */
int jk_rx_flow_validity_days(const struct jk_rx_flow_rules *r);
int jk_rx_flow_utc_offset_min(const struct jk_rx_flow_rules *r);
int jk_rx_flow_queue_max(const struct jk_rx_flow_rules *r);
int jk_rx_flow_sweep_seconds(const struct jk_rx_flow_rules *r);
/* Whether role may do what list names: "review", "dispense", "supervise". */
int jk_rx_flow_role_may(const struct jk_rx_flow_rules *r, const char *list, enum jk_role role);
/* The text of reason code (review.reasons: "2-7"), or NULL when the rules have no such code. */
const char *jk_rx_flow_reason(const struct jk_rx_flow_rules *r, const char *code);
/* The regions (Organization/<id>) whose institutions the review centre org ("Organization/x")
 * reviews for (review.centres); 0 when org is no centre. */
size_t jk_rx_flow_centre_regions(const struct jk_rx_flow_rules *r, const char *org,
                                 const char *const **regions);
/* Whether an Organization resource is a pharmacy prescriptions may be filled at: active, with
 * an institution-kind code of pharmacy.kinds. */
int jk_rx_flow_is_pharmacy(const struct jk_rx_flow_rules *r, struct json_object *organization);
/* Whether a delivery order may go from state from ("requested" before the pharmacy accepts)
 * to state to: one step forward along delivery.states. */
int jk_rx_flow_delivery_next(const struct jk_rx_flow_rules *r, const char *from, const char *to);
/* Whether a delivery order in state may still be cancelled (before delivery.cancel_until). */
int jk_rx_flow_delivery_cancellable(const struct jk_rx_flow_rules *r, const char *state);
/* The end of the validity of a prescription issued at created_ms: the end of the local day
 * validity_days - 1 days after the day of issue (ms, exclusive). */
int64_t jk_rx_flow_valid_until(const struct jk_rx_flow_rules *r, int64_t created_ms);

/* Installs the rules for the process (serve, demo, tests) and the keys of the redemption codes
 * and of sealed addresses, derived from the platform keys (which must outlive their use).
 * Once, before threads use them. */
jk_rc jk_rx_flow_start(const jk_keys *keys, char *err, size_t errlen);
void jk_rx_flow_stop(void);
const struct jk_rx_flow_rules *jk_rx_flow_rules(void);

/* ---- keys ---- */

struct jk_rx_flow_keys {
    unsigned char code_prf[JK_BLIND_INDEX_BYTES]; /* makes a prescription's code */
    unsigned char code_key[JK_BLIND_INDEX_BYTES]; /* the keyed hash a code is stored as */
    const jk_keys *keys;                          /* seals delivery addresses (not owned) */
};

/* Derives k from the platform keys. */
jk_rc jk_rx_flow_keys_init(struct jk_rx_flow_keys *k, const jk_keys *keys);
const struct jk_rx_flow_keys *jk_rx_flow_keys(void); /* jk_rx_flow_start's */

/* The redemption code of prescription id approved at reviewed_ms: 12 digits and a NUL. A keyed
 * pseudo-random function (HMAC-SM3 under code_prf), so it can be shown to the patient again
 * without being stored and cannot be guessed without the platform keys. */
jk_rc jk_rx_flow_code(const struct jk_rx_flow_keys *k, const char *id, int64_t reviewed_ms,
                      char out[JK_RX_CODE_DIGITS + 1]);
/* The stored form of a code (HMAC-SM3 under code_key, hex): rx_prescription.code_key. The
 * code may be written with spaces or dashes between its digits; JK_EINVAL when it is not 12
 * digits. */
jk_rc jk_rx_flow_code_key(const struct jk_rx_flow_keys *k, const char *code,
                          char out[2 * JK_SM3_BYTES + 1]);

/* ---- a prescription ---- */

struct jk_rx_presc {
    const char *id, *visit_id, *patient_id, *person, *doctor, *org, *status;
    const char *warnings; /* JSON array: what the checks computed */
    const char *summary;  /* JSON object: what lists show (patient, doctor, drugs), or "" */
    const char *reviewer, *review_codes, *review_text; /* review_codes: comma-separated */
    const char *pharmacy, *delivery;                   /* "" when not chosen */
    const char *code_key;
    int64_t created_ms, reviewed_ms, valid_until_ms, presented_ms, dispensed_ms, amount_fen;
};

/* Prescription id into *out (strings in a). JK_ENOTFOUND. A read. */
jk_rc jk_rx_flow_get(jk_conn *c, struct jk_arena *a, const char *id, struct jk_rx_presc *out);

/* A delivery order. */
struct jk_rx_delivery {
    const char *prescription_id, *pharmacy, *status, *carrier, *waybill;
    const char *address; /* opened (when asked), else "" */
    const char *history; /* JSON array of {status, at, carrier?, waybill?} */
    int64_t updated_ms;
};

/* The delivery order of prescription id (JK_ENOTFOUND when none); the address opened when
 * k is not NULL. A read. */
jk_rc jk_rx_flow_delivery_get(jk_conn *c, struct jk_arena *a, const struct jk_rx_flow_keys *k,
                              const char *id, struct jk_rx_delivery *out);

/* ---- who may do what (pure) ---- */

/* Who acts. Organisation and link as "Type/id". */
struct jk_rx_actor {
    enum jk_role role;
    const char *org;             /* "Organization/x" or "" */
    const char *link;            /* "PractitionerRole/x", "Practitioner/x", "Patient/x" or "" */
    const char *const *patients; /* a resident: their own Patient ids and their wards' */
    size_t n_patients;
    const char *const *review_orgs; /* a pharmacist: the institutions (Organization/x) whose
                                     * prescriptions they review: their own, and those of the
                                     * regions of the review centre they work at */
    size_t n_review_orgs;
};

enum jk_rx_act {
    JK_RX_READ,     /* the prescription (the code only to the patient) */
    JK_RX_REVIEW,   /* approve or reject */
    JK_RX_CHOOSE,   /* choose the pharmacy and pickup or delivery */
    JK_RX_DISPENSE, /* dispense, run the delivery order */
    JK_RX_CANCEL    /* cancel before dispensing */
};

/* Whether who may do act on p under r: JK_OK, or JK_EFORBIDDEN with why (static text). The
 * patient (or their guardian), the prescribing doctor, the pharmacists who review for its
 * institution, and the pharmacy it was presented to (only once presented) read it; the
 * pharmacists review it; the patient chooses; the pharmacy dispenses; the patient or the
 * doctor cancel. Whether the prescription's state allows it is decided by the change. */
jk_rc jk_rx_flow_may(const struct jk_rx_flow_rules *r, const struct jk_rx_actor *who,
                     const struct jk_rx_presc *p, enum jk_rx_act act, const char **why);

/* Whether who is the patient of p (or a guardian of theirs), its doctor. */
int jk_rx_flow_is_patient(const struct jk_rx_actor *who, const struct jk_rx_presc *p);
int jk_rx_flow_is_doctor(const struct jk_rx_actor *who, const struct jk_rx_presc *p);

/* Whether "Type/id" or "id" references a and b name the same id. */
int jk_rx_same_ref(const char *a, const char *b);

/* ---- the changes (each inside a transaction) ---- */

/* What every call needs. */
struct jk_rx_call {
    struct jk_arena *a;
    struct jk_diag *d;
    int64_t now_ms;
    const struct jk_rx_flow_rules *rules;
    const struct jk_rx_flow_keys *keys;
};

/* The pharmacist's decision. */
struct jk_rx_decision {
    int is_approve;
    const char *const *codes; /* reason codes of review.reasons (rejection: at least one) */
    size_t n_codes;
    const char *text;         /* may be NULL */
    const char *reviewer;     /* "PractitionerRole/x" (or "account:<user>" without a link) */
    const char *reviewer_org; /* "Organization/x": holds the Provenance */
};

/* Decides pending prescription id: approve (status approved, MedicationRequests active, a
 * Provenance of the approval, the code's keyed hash and validity) or reject (status rejected,
 * MedicationRequests cancelled with the reasons). JK_ECONFLICT when it is no longer pending
 * (another pharmacist decided first), JK_EINVAL for an unknown reason code or a rejection
 * without one. *out is the row as changed; code (may be NULL) the code of an approval. */
jk_rc jk_rx_flow_review(jk_conn *c, const struct jk_rx_call *k, const char *id,
                        const struct jk_rx_decision *dec, struct jk_rx_presc *out,
                        char code[JK_RX_CODE_DIGITS + 1]);

/* The patient chooses where approved prescription id is filled: pharmacy (Organization id
 * of a pharmacy, checked by the caller), "pickup" or "delivery" (with an address, sealed at
 * rest). A delivery order (state requested) goes to the pharmacy at once, which presents the
 * prescription to it; a pickup is presented when the pharmacist enters the code. May change
 * the choice until it is presented. JK_ECONFLICT when not approved or already presented,
 * JK_ERULE when expired. */
jk_rc jk_rx_flow_choose(jk_conn *c, const struct jk_rx_call *k, const char *id,
                        const char *pharmacy, const char *mode, const char *address,
                        struct jk_rx_presc *out);

/* A pharmacist of pharmacy enters a code: the approved, unexpired prescription with that code
 * is presented to pharmacy (chosen by the patient, or not chosen yet: then pickup here).
 * JK_ENOTFOUND for an unknown code, JK_ERULE when expired, JK_ECONFLICT when dispensed,
 * cancelled or rejected, JK_EFORBIDDEN when the patient chose another pharmacy. */
jk_rc jk_rx_flow_redeem(jk_conn *c, const struct jk_rx_call *k, const char *code,
                        const char *pharmacy, struct jk_rx_presc *out);

/* Dispenses prescription id at pharmacy (to which it was presented), once: status dispensed,
 * a MedicationDispense per MedicationRequest (performer the pharmacy and dispenser), the
 * MedicationRequests completed. JK_ECONFLICT when already dispensed (also by a concurrent
 * call) or cancelled, JK_ERULE when expired, JK_EFORBIDDEN when not presented to pharmacy. */
jk_rc jk_rx_flow_dispense(jk_conn *c, const struct jk_rx_call *k, const char *id,
                          const char *pharmacy, const char *dispenser, struct jk_rx_presc *out);

/* Moves the delivery order of prescription id (at pharmacy) to status; shipped needs carrier
 * and waybill. JK_ERULE for a step that is not the next, JK_ENOTFOUND when there is no order,
 * JK_ECONFLICT when a concurrent change moved it first. Delivery after dispensing only. */
jk_rc jk_rx_flow_deliver(jk_conn *c, const struct jk_rx_call *k, const char *id,
                         const char *pharmacy, const char *status, const char *carrier,
                         const char *waybill, struct jk_rx_delivery *out);

/* Cancels prescription id before it is dispensed (pending, approved): status cancelled,
 * MedicationRequests stopped, the delivery order cancelled, the code void. JK_ECONFLICT when
 * dispensed, cancelled, rejected or its order shipped. */
jk_rc jk_rx_flow_cancel(jk_conn *c, const struct jk_rx_call *k, const char *id, const char *reason,
                        struct jk_rx_presc *out);

/* Marks at most max approved prescriptions whose validity ended as expired (MedicationRequests
 * stopped), and fills the summary of at most max new ones. *n_done counts both. */
jk_rc jk_rx_flow_sweep(jk_conn *c, const struct jk_rx_call *k, size_t max, size_t *n_done);

/* Fills rx_prescription.summary of prescription id from its MedicationRequests, its Patient
 * and its doctor (what the review queue shows without reading resources). The prescribing
 * service may call it in its own transaction; the sweep calls it for rows without one. */
jk_rc jk_rx_flow_summarize(jk_conn *c, const struct jk_rx_call *k, const char *id);

/* ---- the review queue (a read) ---- */

/* The pending prescriptions of the institutions orgs ("Organization/x" or ids), oldest first
 * (or newest first), after the cursor (after_ms, after_id; 0 and NULL: from the start), at
 * most limit; *total counts all pending of orgs. One indexed query. */
jk_rc jk_rx_flow_queue(jk_conn *c, struct jk_arena *a, const char *const *orgs, size_t n_orgs,
                       int is_newest_first, int64_t after_ms, const char *after_id, int limit,
                       struct jk_rx_presc **out, size_t *n, int64_t *total);

/* ---- supervision (reads) ---- */

/* Appends to arr the supervision rows of kind ("visits": ih_visit; "prescriptions":
 * rx_prescription with its visit's diagnosis) begun in [from_ms, to_ms) at the institutions
 * orgs ("Organization/x"; NULL: every one), oldest first, at most max; *more when there were
 * more. Each row: kind, id, who (patient, doctor, institution), when, diagnosis, drugs,
 * reviewer, outcome, review turnaround, amount and payment state. */
jk_rc jk_rx_supervision_rows(jk_conn *c, struct jk_arena *a, const char *kind, int64_t from_ms,
                             int64_t to_ms, const char *const *orgs, size_t n_orgs, size_t max,
                             struct json_object *arr, int *more);

/* The sweeper thread: jk_rx_flow_sweep every sweep.seconds on db. */
jk_rc jk_rx_flow_sweeper_start(jk_store *db);
void jk_rx_flow_sweeper_stop(void);

#endif
