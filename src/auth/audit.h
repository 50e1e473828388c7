/* audit.h - the audit trail: one record per access, appended in the transaction of the access,
 * chained with SM3 and checkpointed with SM2 signatures, verifiable end to end, readable as
 * FHIR AuditEvent. See docs/internals/audit.md. */
#ifndef JK_AUDIT_H
#define JK_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "core/crypto.h"
#include "core/rc.h"
#include "store/store.h"

struct json_object;

#define JK_AUDIT_MAX_FIELD  256  /* longest text field of a record, in bytes */
#define JK_AUDIT_MAX_REASON 2000 /* longest break-glass reason, in bytes */

#define JK_AUDIT_CHECKPOINT_EVERY 1000   /* default: records between checkpoints */
#define JK_AUDIT_CHECKPOINT_MS    300000 /* default: or this long since the last one */

/* One audit record. Text fields are NUL-terminated; NULL stands for "" (actor: "anonymous").
 * On append, seq is ignored and time_ms 0 means now. */
struct jk_audit_rec {
    int64_t seq;             /* position in the chain, from 1 (filled in when read) */
    int64_t time_ms;         /* when it happened, ms since 1970 UTC */
    const char *actor;       /* user id, client id or "anonymous" */
    const char *role;        /* the actor's role ("doctor", "resident", "regulator" ...) */
    const char *org;         /* the actor's organisation id */
    const char *action;      /* one of jk_audit_action_known(): "read", "search", ... */
    const char *res_type;    /* resource type acted on ("Observation"), if any */
    const char *res_id;      /* its id, if any */
    const char *patient_id;  /* the patient whose data it is, if any */
    const char *client_addr; /* the client's IP address */
    jk_rc outcome;           /* JK_OK, or why it failed or was refused */
    const char *request_id;  /* the X-Request-Id of the request */
    const char *reason;      /* break-glass: the reason given; login, logout, login-failed and
                              * account and card-*: the detail (why it failed, what was
                              * changed, a card verification's result) */
};

/* The trail's settings, shared read-only by every thread. */
struct jk_audit {
    const jk_sm2 *key;        /* the platform key that signs checkpoints (not owned) */
    int64_t checkpoint_every; /* a checkpoint at least every this many records */
    int64_t checkpoint_ms;    /* ... and at the first record this long after the last one */
    int64_t (*now_ms)(void);  /* the clock (jk_time_now_ms by default; tests pass their own) */
};

/* Fills au with the defaults and key (jk_keys_sm2 of the platform keys). */
void jk_audit_init(struct jk_audit *au, const jk_sm2 *key);

/* Whether action is one the trail knows: read, vread, history, search, create, update,
 * patch, delete, operation, export, login, logout, login-failed, refused, break-glass,
 * account (an administrator changed an account), card-issue, card-bind, card-revoke, card-qr,
 * card-verify (the electronic health card; reason: the detail, e.g. a verification's result),
 * schedule-generate, booking-stats (booking), ih-visit-open, ih-visit-confirm, ih-message,
 * ih-video, ih-visit-end (online visits), rx-queue, rx-review, rx-choose, rx-redeem,
 * rx-dispense, rx-delivery, rx-cancel (prescriptions), supervision-read, supervision-export. */
int jk_audit_action_known(const char *action);

/* Appends r to the chain, inside the caller's transaction on c (a jk_tx_fn's connection), so
 * the record commits or rolls back with the action it records. Call it as the last statement
 * of the transaction: it locks the chain head until the commit. Writes a signed checkpoint
 * too when one is due. The new record's seq goes to *seq (may be NULL). JK_EINVAL for an
 * unknown action, JK_ETOOBIG for a field past its limit, JK_EDB when the database fails
 * (the caller's transaction must then fail too), JK_EINTERNAL when signing fails. */
jk_rc jk_audit_append(const struct jk_audit *au, jk_conn *c, const struct jk_audit_rec *r,
                      int64_t *seq);

/* Signs a checkpoint at the chain head now, unless the head already has one: for a timer,
 * and at shutdown, so that the last records are covered. Inside a transaction on c. */
jk_rc jk_audit_checkpoint(const struct jk_audit *au, jk_conn *c);

/* A thread that signs a checkpoint of the chain head every au->checkpoint_ms (in its own
 * transaction on st, when records came since the last one), so that a quiet server does not
 * leave its last records unsigned. Failures are logged and tried again at the next tick. */
struct jk_audit_ticker;

/* Starts the thread. au and st must outlive it. The caller owns *out (jk_audit_ticker_stop).
 * JK_ENOMEM or JK_EINTERNAL when the thread cannot be made. */
jk_rc jk_audit_ticker_start(const struct jk_audit *au, jk_store *st, struct jk_audit_ticker **out);

/* Stops the thread, signs one last checkpoint (call it once the last request has finished,
 * before the store closes) and frees t. Returns that checkpoint's rc. NULL is allowed. */
jk_rc jk_audit_ticker_stop(struct jk_audit_ticker *t);

/* What jk_audit_verify found. */
enum jk_audit_break {
    JK_AUDIT_INTACT = 0,
    JK_AUDIT_MODIFIED,     /* a record does not match its hash (changed, or moved) */
    JK_AUDIT_MISSING,      /* a record is missing from the middle (deleted) */
    JK_AUDIT_CKPT_SIG,     /* a checkpoint's signature is not the platform key's */
    JK_AUDIT_CKPT_CHAIN,   /* a genuine checkpoint disagrees with the chain (rewritten) */
    JK_AUDIT_CKPT_MISSING, /* the checkpoint the chain head names is gone (deleted) */
    JK_AUDIT_TRUNCATED,    /* records at the end are missing (a checkpoint or the head says so) */
    JK_AUDIT_HEAD          /* the chain head disagrees with the last record */
};

struct jk_audit_report {
    int64_t n_records;           /* records checked */
    int64_t n_checkpoints;       /* checkpoints checked */
    int64_t last_seq;            /* the last record checked */
    int64_t last_checkpoint_seq; /* the last valid checkpoint (0: none) */
    enum jk_audit_break broken;  /* JK_AUDIT_INTACT when all is well */
    int64_t broken_seq;          /* the first broken link */
    char what[300];              /* what is wrong there, for a person */
};

/* Walks the whole chain and every checkpoint, in seq order, with the calling thread's
 * connection (not in a transaction; records appended meanwhile are checked too), and stops
 * at the first broken link. key is the platform key (its public half suffices). Returns
 * JK_OK when the walk was done, whatever it found (see rep->broken); JK_EDB when the trail
 * cannot be read. */
jk_rc jk_audit_verify(jk_store *st, const jk_sm2 *key, struct jk_audit_report *rep);

/* Which records jk_audit_find returns, newest first. */
struct jk_audit_query {
    const char *patient_id; /* only this patient's (the resident's access log); NULL: all */
    int64_t before_seq;     /* only records before this seq (the next page); 0: from the end */
    int limit;              /* at most this many (1..1000) */
};

/* Called for each record found; its strings live until the call returns. A non-zero rc stops
 * the search and is returned. */
typedef jk_rc (*jk_audit_row_fn)(void *arg, const struct jk_audit_rec *r);

/* Reads records matching q, newest first, on c. */
jk_rc jk_audit_find(jk_conn *c, const struct jk_audit_query *q, jk_audit_row_fn fn, void *arg);

/* Renders r as a FHIR R4 AuditEvent (id = seq; observer names the platform, e.g. its base
 * URL; NULL: "jiankang"). The caller owns *out (json_object_put). */
jk_rc jk_audit_to_fhir(const struct jk_audit_rec *r, const char *observer,
                       struct json_object **out);

#endif
