/* audit.c - the audit chain: append in the caller's transaction, checkpoints, verification,
 * reading back and rendering as FHIR AuditEvent. */
#include "auth/audit.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/time.h"
#include "fhir/validate.h"

/* Where the platform's own code systems live. One place, so it can be changed. */
#define JK_FHIR_NS "https://jiankang.example/fhir"

#define HASH_HEX (2 * JK_SM3_BYTES)

/* ---- actions ---- */

enum event_type { ET_REST, ET_AUTH, ET_ALERT, ET_EXPORT };

static const struct {
    const char *system, *code, *display;
} event_types[] = {
    [ET_REST] = {"http://terminology.hl7.org/CodeSystem/audit-event-type", "rest",
                 "RESTful Operation"},
    [ET_AUTH] = {"http://dicom.nema.org/resources/ontology/DCM", "110114", "User Authentication"},
    [ET_ALERT] = {"http://dicom.nema.org/resources/ontology/DCM", "110113", "Security Alert"},
    [ET_EXPORT] = {"http://dicom.nema.org/resources/ontology/DCM", "110106", "Export"},
};

#define SUB_REST  "http://hl7.org/fhir/restful-interaction"
#define SUB_DCM   "http://dicom.nema.org/resources/ontology/DCM"
#define SUB_LOCAL JK_FHIR_NS "/CodeSystem/audit-action"

/* What each action is as an AuditEvent: action code, type and subtype. */
static const struct action {
    const char *name;
    const char *code; /* AuditEvent.action: C R U D E */
    enum event_type type;
    const char *sub_system, *sub_code, *sub_display;
} actions[] = {
    {"read", "R", ET_REST, SUB_REST, "read", "read"},
    {"vread", "R", ET_REST, SUB_REST, "vread", "vread"},
    {"history", "R", ET_REST, SUB_REST, "history-instance", "history-instance"},
    {"search", "E", ET_REST, SUB_REST, "search-type", "search-type"},
    {"create", "C", ET_REST, SUB_REST, "create", "create"},
    {"update", "U", ET_REST, SUB_REST, "update", "update"},
    {"patch", "U", ET_REST, SUB_REST, "patch", "patch"},
    {"delete", "D", ET_REST, SUB_REST, "delete", "delete"},
    {"operation", "E", ET_REST, SUB_REST, "operation", "operation"},
    {"export", "E", ET_EXPORT, NULL, NULL, NULL},
    {"login", "E", ET_AUTH, SUB_DCM, "110122", "Login"},
    {"logout", "E", ET_AUTH, SUB_DCM, "110123", "Logout"},
    {"login-failed", "E", ET_AUTH, SUB_DCM, "110122", "Login"},
    {"refused", "E", ET_ALERT, SUB_LOCAL, "refused", "access refused"},
    {"break-glass", "E", ET_ALERT, SUB_LOCAL, "break-glass", "emergency access"},
    {"account", "U", ET_ALERT, SUB_DCM, "110137", "User Security Attributes Changed"},
    {"register", "C", ET_AUTH, SUB_LOCAL, "register", "real-name registration"},
    {"mpi-link", "U", ET_REST, SUB_LOCAL, "mpi-link", "person index: link"},
    {"mpi-unlink", "U", ET_REST, SUB_LOCAL, "mpi-unlink", "person index: unlink"},
    {"mpi-review", "U", ET_REST, SUB_LOCAL, "mpi-review", "person index: review decided"},
    {"mpi-merge", "U", ET_REST, SUB_LOCAL, "mpi-merge", "person index: merge"},
    {"mpi-unmerge", "U", ET_REST, SUB_LOCAL, "mpi-unmerge", "person index: unmerge"},
    /* the electronic health card (docs/internals/mpi.md); the reason field is the detail */
    {"card-issue", "C", ET_REST, SUB_LOCAL, "card-issue", "health card issued"},
    {"card-bind", "U", ET_REST, SUB_LOCAL, "card-bind", "number bound to a health card"},
    {"card-revoke", "U", ET_REST, SUB_LOCAL, "card-revoke", "health card revoked"},
    {"card-qr", "E", ET_REST, SUB_LOCAL, "card-qr", "health card QR code issued"},
    {"card-verify", "E", ET_REST, SUB_LOCAL, "card-verify", "health card QR code verified"},
    /* the booking pool (docs/internals/booking.md) */
    {"booking-hold", "C", ET_REST, SUB_LOCAL, "booking-hold", "booking: place held"},
    {"booking-book", "C", ET_REST, SUB_LOCAL, "booking-book", "booking: appointment booked"},
    {"booking-cancel", "U", ET_REST, SUB_LOCAL, "booking-cancel", "booking: cancelled"},
    {"booking-reschedule", "U", ET_REST, SUB_LOCAL, "booking-reschedule", "booking: moved"},
    {"booking-checkin", "U", ET_REST, SUB_LOCAL, "booking-checkin", "booking: checked in"},
    {"booking-complete", "U", ET_REST, SUB_LOCAL, "booking-complete", "booking: fulfilled"},
    {"booking-wait", "C", ET_REST, SUB_LOCAL, "booking-wait", "booking: waiting list joined"},
    {"schedule-generate", "E", ET_REST, SUB_LOCAL, "schedule-generate",
     "schedule: slots generated"},
    {"booking-stats", "E", ET_REST, SUB_LOCAL, "booking-stats", "booking statistics read"},
    /* prescribing (docs/internals/rx.md) */
    {"rx-check", "E", ET_REST, SUB_LOCAL, "rx-check", "prescription: checked"},
    {"rx-prescribe", "C", ET_REST, SUB_LOCAL, "rx-prescribe", "prescription: made and signed"},
    {"rx-verify", "E", ET_REST, SUB_LOCAL, "rx-verify", "prescription: signature checked"},
    /* online follow-up visits of the internet hospital (docs/internals/rx.md) */
    {"ih-visit-open", "C", ET_REST, SUB_LOCAL, "ih-visit-open", "online visit: opened"},
    {"ih-visit-confirm", "U", ET_REST, SUB_LOCAL, "ih-visit-confirm",
     "online visit: uploaded record confirmed"},
    {"ih-message", "C", ET_REST, SUB_LOCAL, "ih-message", "online visit: message sent"},
    {"ih-video", "C", ET_REST, SUB_LOCAL, "ih-video", "online visit: video room opened"},
    {"ih-visit-end", "U", ET_REST, SUB_LOCAL, "ih-visit-end", "online visit: ended"},
    /* prescription circulation and supervision (docs/internals/rx.md) */
    {"rx-queue", "E", ET_REST, SUB_LOCAL, "rx-queue", "prescriptions: review queue read"},
    {"rx-review", "U", ET_REST, SUB_LOCAL, "rx-review", "prescription: reviewed"},
    {"rx-choose", "U", ET_REST, SUB_LOCAL, "rx-choose", "prescription: pharmacy chosen"},
    {"rx-redeem", "U", ET_REST, SUB_LOCAL, "rx-redeem", "prescription: code redeemed"},
    {"rx-dispense", "U", ET_REST, SUB_LOCAL, "rx-dispense", "prescription: dispensed"},
    {"rx-delivery", "U", ET_REST, SUB_LOCAL, "rx-delivery", "prescription: delivery order moved"},
    {"rx-cancel", "U", ET_REST, SUB_LOCAL, "rx-cancel", "prescription: cancelled"},
    {"supervision-read", "E", ET_REST, SUB_LOCAL, "supervision-read",
     "supervision: visits or prescriptions read"},
    {"supervision-export", "E", ET_EXPORT, SUB_LOCAL, "supervision-export",
     "supervision: daily export"},
};

/* Actions whose reason field is a detail (why a login failed, what an administrator changed)
 * rather than a break-glass justification: rendered as outcomeDesc, not purposeOfEvent. */
static int has_detail(const struct action *a)
{
    return a->type == ET_AUTH || !strcmp(a->name, "account") || !strncmp(a->name, "card-", 5);
}

static const struct action *action_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof actions / sizeof actions[0]; i++)
        if (!strcmp(actions[i].name, name)) return &actions[i];
    return NULL;
}

int jk_audit_action_known(const char *action)
{
    return action_find(action) != NULL;
}

static int64_t default_now(void)
{
    return jk_time_now_ms();
}

void jk_audit_init(struct jk_audit *au, const jk_sm2 *key)
{
    au->key = key;
    au->checkpoint_every = JK_AUDIT_CHECKPOINT_EVERY;
    au->checkpoint_ms = JK_AUDIT_CHECKPOINT_MS;
    au->now_ms = default_now;
}

/* ---- canonical serialisation (docs/internals/audit.md) ---- */

#define N_TEXT 11 /* text fields of a record, in canonical order */

/* The text fields of one record as stored: pointers and lengths. */
struct rec_text {
    const char *p[N_TEXT];
    size_t n[N_TEXT];
};

static const char rec_magic[8] = {'J', 'K', 'A', 'R', '0', '0', '0', '1'};
static const char ckpt_magic[8] = {'J', 'K', 'C', 'P', '0', '0', '0', '1'};

static void put_be(unsigned char *out, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

/* canonical(record) = "JKAR0001" | be64(seq) | be64(time_ms) | for each text field in order
 * (actor, role, org, action, res_type, res_id, patient_id, client_addr, outcome, request_id,
 * reason): be32(length) | bytes. */
static jk_rc canonical(int64_t seq, int64_t time_ms, const struct rec_text *t, struct jk_buf *b)
{
    unsigned char num[16];
    b->len = 0;
    put_be(num, (uint64_t)seq, 8);
    put_be(num + 8, (uint64_t)time_ms, 8);
    jk_rc rc = jk_buf_append(b, rec_magic, sizeof rec_magic);
    if (!rc) rc = jk_buf_append(b, num, 16);
    for (int i = 0; !rc && i < N_TEXT; i++) {
        if (t->n[i] > 0xFFFFFFFFu) return JK_ETOOBIG;
        put_be(num, t->n[i], 4);
        rc = jk_buf_append(b, num, 4);
        if (!rc) rc = jk_buf_append(b, t->p[i], t->n[i]);
    }
    return rc;
}

/* h_n = SM3(h_{n-1} | canonical(record n)). */
static jk_rc chain_hash(const unsigned char prev[JK_SM3_BYTES], const struct jk_buf *canon,
                        unsigned char out[JK_SM3_BYTES])
{
    struct jk_crypto_slice parts[] = {{prev, JK_SM3_BYTES}, {canon->p, canon->len}};
    return jk_crypto_sm3v(parts, 2, out);
}

/* The message a checkpoint signs: "JKCP0001" | be64(seq) | h_seq | be64(signed_ms). */
static void ckpt_message(int64_t seq, const unsigned char hash[JK_SM3_BYTES], int64_t signed_ms,
                         unsigned char out[8 + 8 + JK_SM3_BYTES + 8])
{
    memcpy(out, ckpt_magic, 8);
    put_be(out + 8, (uint64_t)seq, 8);
    memcpy(out + 16, hash, JK_SM3_BYTES);
    put_be(out + 16 + JK_SM3_BYTES, (uint64_t)signed_ms, 8);
}

#define CKPT_MSG_BYTES (8 + 8 + JK_SM3_BYTES + 8)

/* ---- append ---- */

/* The head row holds the checkpoint state only; the chain's last link is the last record.
 * On PostgreSQL, SELECT ... FOR UPDATE takes the head row's lock until the transaction ends
 * (without writing a new row version, so a transaction may append many records cheaply):
 * concurrent appends queue there, and each then reads the last record its predecessor
 * committed (READ COMMITTED takes a new snapshot per statement). SQLite has one writer. */
static const char sql_head_lock_pg[] =
    "SELECT ckpt_seq, ckpt_ms FROM audit_head WHERE id = 1 FOR UPDATE";
static const char sql_head_lock_sqlite[] = "SELECT ckpt_seq, ckpt_ms FROM audit_head WHERE id = 1";
static const char sql_last[] = "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1";
static const char sql_head_set[] = "UPDATE audit_head SET ckpt_seq = ?, ckpt_ms = ? WHERE id = 1";
static const char sql_event_insert[] =
    "INSERT INTO audit_event (seq, time_ms, actor, role, org, action, res_type, res_id,"
    " patient_id, client_addr, outcome, request_id, reason, hash)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
static const char sql_ckpt_insert[] =
    "INSERT INTO audit_checkpoint (seq, hash, signed_ms, sig) VALUES (?, ?, ?, ?)";

struct head {
    int64_t seq; /* the last record (0: none yet) and its chain hash */
    unsigned char hash[JK_SM3_BYTES];
    int64_t ckpt_seq, ckpt_ms; /* the last checkpoint; when the time rule's clock started */
};

/* Locks the chain for this transaction and reads its head: the checkpoint state from the
 * head row, the last link from the last record. */
static jk_rc head_lock(jk_conn *c, struct head *h)
{
    jk_stmt *s;
    int has_row = 0;
    int is_pg = !strcmp(jk_conn_backend(c), "postgresql");
    jk_rc rc = jk_conn_prepare(c, is_pg ? sql_head_lock_pg : sql_head_lock_sqlite, &s);
    if (rc) return rc;
    rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_EDB; /* no head row: the migration did not run */
    if (!rc) {
        h->ckpt_seq = jk_stmt_col_int(s, 0);
        h->ckpt_ms = jk_stmt_col_int(s, 1);
    }
    jk_stmt_reset(s);
    if (rc || (rc = jk_conn_prepare(c, sql_last, &s))) return rc;
    rc = jk_stmt_step(s, &has_row);
    h->seq = 0;
    memset(h->hash, 0, sizeof h->hash); /* h_0 */
    if (!rc && has_row) {
        size_t n = 0, got = 0;
        const char *hex = jk_stmt_col_text(s, 1, &n);
        h->seq = jk_stmt_col_int(s, 0);
        /* a damaged last link cannot be continued: refuse rather than fork */
        if (!hex || n != HASH_HEX || jk_crypto_unhex(hex, n, h->hash, sizeof h->hash, &got))
            rc = JK_EDB;
    }
    jk_stmt_reset(s);
    return rc;
}

static jk_rc head_set(jk_conn *c, const struct head *h)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_head_set, &s);
    if (rc) return rc;
    if (!(rc = jk_stmt_int_arg(s, 1, h->ckpt_seq))) rc = jk_stmt_int_arg(s, 2, h->ckpt_ms);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* Signs and stores a checkpoint of the chain at h->seq; records it in h. */
static jk_rc checkpoint_write(const struct jk_audit *au, jk_conn *c, struct head *h, int64_t now_ms)
{
    unsigned char msg[CKPT_MSG_BYTES], sig[JK_SM2_SIG_MAX];
    char hex[HASH_HEX + 1], sighex[2 * JK_SM2_SIG_MAX + 1];
    size_t siglen = 0;
    if (!au->key) return JK_EINTERNAL;
    ckpt_message(h->seq, h->hash, now_ms, msg);
    jk_rc rc = jk_sm2_sign(au->key, msg, sizeof msg, sig, sizeof sig, &siglen);
    if (rc) return rc == JK_EINVAL ? JK_EINTERNAL : rc;
    jk_crypto_hex(h->hash, JK_SM3_BYTES, hex);
    jk_crypto_hex(sig, siglen, sighex);
    jk_stmt *s;
    int has_row;
    if ((rc = jk_conn_prepare(c, sql_ckpt_insert, &s))) return rc;
    if (!(rc = jk_stmt_int_arg(s, 1, h->seq)) && !(rc = jk_stmt_text_arg(s, 2, hex, HASH_HEX)) &&
        !(rc = jk_stmt_int_arg(s, 3, now_ms)))
        rc = jk_stmt_text_arg(s, 4, sighex, 2 * siglen);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    if (!rc) {
        h->ckpt_seq = h->seq;
        h->ckpt_ms = now_ms;
    }
    return rc;
}

static const char *outcome_text(jk_rc rc)
{
    return rc ? jk_rc_name(rc) : "success";
}

static jk_rc outcome_rc(const char *s)
{
    if (!s || !strcmp(s, "success")) return JK_OK;
    for (int rc = JK_EINVAL; rc <= JK_EINTERNAL; rc++)
        if (!strcmp(s, jk_rc_name((jk_rc)rc))) return (jk_rc)rc;
    return JK_EINTERNAL;
}

/* The text fields of r in canonical order; JK_ETOOBIG when one is too long. */
static jk_rc rec_text_of(const struct jk_audit_rec *r, struct rec_text *t)
{
    const char *v[N_TEXT] = {r->actor ? r->actor : "anonymous",
                             r->role,
                             r->org,
                             r->action,
                             r->res_type,
                             r->res_id,
                             r->patient_id,
                             r->client_addr,
                             outcome_text(r->outcome),
                             r->request_id,
                             r->reason};
    for (int i = 0; i < N_TEXT; i++) {
        t->p[i] = v[i] ? v[i] : "";
        t->n[i] = strlen(t->p[i]);
        if (t->n[i] > (i == N_TEXT - 1 ? JK_AUDIT_MAX_REASON : JK_AUDIT_MAX_FIELD))
            return JK_ETOOBIG;
    }
    return JK_OK;
}

static jk_rc event_insert(jk_conn *c, int64_t seq, int64_t time_ms, const struct rec_text *t,
                          const unsigned char hash[JK_SM3_BYTES])
{
    char hex[HASH_HEX + 1];
    jk_stmt *s;
    int has_row;
    jk_crypto_hex(hash, JK_SM3_BYTES, hex);
    jk_rc rc = jk_conn_prepare(c, sql_event_insert, &s);
    if (rc) return rc;
    if (!(rc = jk_stmt_int_arg(s, 1, seq))) rc = jk_stmt_int_arg(s, 2, time_ms);
    for (int i = 0; !rc && i < N_TEXT; i++)
        rc = jk_stmt_text_arg(s, 3 + i, t->p[i], t->n[i]);
    if (!rc) rc = jk_stmt_text_arg(s, 3 + N_TEXT, hex, HASH_HEX);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_audit_append(const struct jk_audit *au, jk_conn *c, const struct jk_audit_rec *r,
                      int64_t *seq)
{
    struct rec_text t;
    if (!action_find(r->action)) return JK_EINVAL;
    jk_rc rc = rec_text_of(r, &t);
    if (rc) return rc;
    int64_t now = au->now_ms ? au->now_ms() : jk_time_now_ms();
    int64_t time_ms = r->time_ms ? r->time_ms : now;
    struct head h;
    if ((rc = head_lock(c, &h))) return rc;
    struct jk_buf canon;
    jk_buf_init(&canon, 0);
    unsigned char hash[JK_SM3_BYTES];
    h.seq++;
    rc = canonical(h.seq, time_ms, &t, &canon);
    if (!rc) rc = chain_hash(h.hash, &canon, hash);
    jk_buf_free(&canon);
    if (!rc) rc = event_insert(c, h.seq, time_ms, &t, hash);
    if (rc) return rc;
    memcpy(h.hash, hash, sizeof hash);
    if (h.seq - h.ckpt_seq >= au->checkpoint_every ||
        (h.ckpt_ms && now - h.ckpt_ms >= au->checkpoint_ms)) {
        rc = checkpoint_write(au, c, &h, now);
        if (!rc) rc = head_set(c, &h);
    } else if (!h.ckpt_ms) {
        h.ckpt_ms = now; /* the time rule's clock starts at the first record */
        rc = head_set(c, &h);
    }
    if (!rc && seq) *seq = h.seq;
    return rc;
}

jk_rc jk_audit_checkpoint(const struct jk_audit *au, jk_conn *c)
{
    struct head h;
    jk_rc rc = head_lock(c, &h);
    if (rc || h.seq == 0 || h.seq == h.ckpt_seq) return rc;
    rc = checkpoint_write(au, c, &h, au->now_ms ? au->now_ms() : jk_time_now_ms());
    if (!rc) rc = head_set(c, &h);
    return rc;
}

/* ---- the checkpoint timer of a server ---- */

struct jk_audit_ticker {
    const struct jk_audit *au;
    jk_store *st;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled when is_stopping is set */
    int is_stopping;
};

static jk_rc checkpoint_tx(jk_conn *c, void *arg)
{
    return jk_audit_checkpoint(arg, c);
}

static jk_rc ticker_checkpoint(const struct jk_audit_ticker *t)
{
    jk_rc rc = jk_store_tx(t->st, checkpoint_tx, (void *)t->au);
    if (rc) jk_log_error("audit", "the checkpoint of the audit chain failed: %s", jk_rc_name(rc));
    return rc;
}

static void *ticker_run(void *arg)
{
    struct jk_audit_ticker *t = arg;
    int64_t every_ms = t->au->checkpoint_ms > 0 ? t->au->checkpoint_ms : JK_AUDIT_CHECKPOINT_MS;
    pthread_mutex_lock(&t->lock);
    while (!t->is_stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(every_ms / 1000);
        until.tv_nsec += (long)(every_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int err = 0;
        while (!t->is_stopping && err != ETIMEDOUT)
            err = pthread_cond_timedwait(&t->cond, &t->lock, &until);
        if (t->is_stopping) break;
        pthread_mutex_unlock(&t->lock); /* never hold the lock across a transaction */
        (void)ticker_checkpoint(t);
        pthread_mutex_lock(&t->lock);
    }
    pthread_mutex_unlock(&t->lock);
    return NULL;
}

jk_rc jk_audit_ticker_start(const struct jk_audit *au, jk_store *st, struct jk_audit_ticker **out)
{
    struct jk_audit_ticker *t = calloc(1, sizeof *t);
    pthread_condattr_t ca;
    if (!t) return JK_ENOMEM;
    t->au = au;
    t->st = st;
    pthread_mutex_init(&t->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* a clock step must not stall it */
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&t->thread, NULL, ticker_run, t)) {
        pthread_cond_destroy(&t->cond);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return JK_EINTERNAL;
    }
    *out = t;
    return JK_OK;
}

jk_rc jk_audit_ticker_stop(struct jk_audit_ticker *t)
{
    if (!t) return JK_OK;
    pthread_mutex_lock(&t->lock);
    t->is_stopping = 1;
    pthread_cond_signal(&t->cond);
    pthread_mutex_unlock(&t->lock);
    pthread_join(t->thread, NULL);
    jk_rc rc = ticker_checkpoint(t); /* the tail, so that the last records are signed */
    pthread_cond_destroy(&t->cond);
    pthread_mutex_destroy(&t->lock);
    free(t);
    return rc;
}

/* ---- verify ---- */

#define PAGE 256

static const char sql_verify_head[] = "SELECT ckpt_seq FROM audit_head WHERE id = 1";
static const char sql_verify_page[] =
    "SELECT seq, time_ms, actor, role, org, action, res_type, res_id, patient_id, client_addr,"
    " outcome, request_id, reason, hash FROM audit_event WHERE seq > ? ORDER BY seq LIMIT 256";
static const char sql_verify_ckpt[] = "SELECT seq, hash, signed_ms, sig FROM audit_checkpoint"
                                      " WHERE seq > ? ORDER BY seq LIMIT 1";

/* One record as read for verification: its canonical bytes and its stored hash. */
struct vrow {
    int64_t seq;
    struct jk_buf canon;
    unsigned char hash[JK_SM3_BYTES];
    int is_hash_ok; /* the stored hash was 64 hex digits */
};

struct vckpt {
    int has;
    int64_t seq, signed_ms;
    unsigned char hash[JK_SM3_BYTES];
    unsigned char sig[JK_SM2_SIG_MAX];
    size_t siglen;
    int is_well_formed;
};

static int unhex_exact(const char *s, size_t n, unsigned char *out, size_t want)
{
    size_t got = 0;
    return s && !jk_crypto_unhex(s, n, out, want, &got) && got == want;
}

/* The next checkpoint after seq, into k (k->has = 0 when there is none). */
static jk_rc ckpt_next(jk_conn *c, int64_t after, struct vckpt *k)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_verify_ckpt, &s);
    if (rc) return rc;
    if (!(rc = jk_stmt_int_arg(s, 1, after))) rc = jk_stmt_step(s, &has_row);
    memset(k, 0, sizeof *k);
    if (!rc && has_row) {
        size_t hn = 0, sn = 0;
        const char *hash = jk_stmt_col_text(s, 1, &hn), *sig = jk_stmt_col_text(s, 3, &sn);
        k->has = 1;
        k->seq = jk_stmt_col_int(s, 0);
        k->signed_ms = jk_stmt_col_int(s, 2);
        k->is_well_formed = unhex_exact(hash, hn, k->hash, JK_SM3_BYTES) && sig && sn % 2 == 0 &&
                            sn / 2 <= JK_SM2_SIG_MAX &&
                            !jk_crypto_unhex(sig, sn, k->sig, sizeof k->sig, &k->siglen);
    }
    jk_stmt_reset(s);
    return rc;
}

/* Reads up to PAGE records after seq into rows; *n_rows says how many. */
static jk_rc page_read(jk_conn *c, int64_t after, struct vrow *rows, int *n_rows)
{
    jk_stmt *s;
    int has_row = 0, n = 0;
    jk_rc rc = jk_conn_prepare(c, sql_verify_page, &s);
    if (rc) return rc;
    if (!(rc = jk_stmt_int_arg(s, 1, after))) rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row && n < PAGE) {
        struct vrow *r = &rows[n++];
        struct rec_text t;
        for (int i = 0; i < N_TEXT; i++) {
            t.p[i] = jk_stmt_col_text(s, 2 + i, &t.n[i]);
            if (!t.p[i]) t.p[i] = "", t.n[i] = 0;
        }
        size_t hn = 0;
        const char *hex = jk_stmt_col_text(s, 2 + N_TEXT, &hn);
        r->seq = jk_stmt_col_int(s, 0);
        r->is_hash_ok = unhex_exact(hex, hn, r->hash, JK_SM3_BYTES);
        rc = canonical(r->seq, jk_stmt_col_int(s, 1), &t, &r->canon);
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    jk_stmt_reset(s);
    *n_rows = n;
    return rc;
}

static void broken(struct jk_audit_report *rep, enum jk_audit_break kind, int64_t seq,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void broken(struct jk_audit_report *rep, enum jk_audit_break kind, int64_t seq,
                   const char *fmt, ...)
{
    va_list ap;
    rep->broken = kind;
    rep->broken_seq = seq;
    va_start(ap, fmt);
    vsnprintf(rep->what, sizeof rep->what, fmt, ap);
    va_end(ap);
}

static int ckpt_sig_ok(const jk_sm2 *key, const struct vckpt *k)
{
    unsigned char msg[CKPT_MSG_BYTES];
    if (!k->is_well_formed) return 0;
    ckpt_message(k->seq, k->hash, k->signed_ms, msg);
    return jk_sm2_verify(key, msg, sizeof msg, k->sig, k->siglen) == JK_OK;
}

struct walk {
    jk_conn *c;
    const jk_sm2 *key;
    struct jk_audit_report *rep;
    int64_t head_ckpt_seq; /* the last checkpoint by the head row, read before the walk */
    struct vckpt ckpt;
    unsigned char prev[JK_SM3_BYTES];
    int64_t expect;
    int is_head_ckpt_seen;
};

/* Checks the checkpoints at seq (the chain hash there is w->prev). Returns 1 when a link is
 * broken. */
static int walk_checkpoints(struct walk *w, int64_t seq, jk_rc *rc)
{
    struct jk_audit_report *rep = w->rep;
    while (w->ckpt.has && w->ckpt.seq <= seq) {
        struct vckpt *k = &w->ckpt;
        if (!ckpt_sig_ok(w->key, k)) {
            broken(rep, JK_AUDIT_CKPT_SIG, k->seq,
                   "the checkpoint at seq %lld has no valid signature of the platform key "
                   "(forged or changed)",
                   (long long)k->seq);
            return 1;
        }
        if (k->seq != seq || !jk_crypto_equal(k->hash, w->prev, JK_SM3_BYTES)) {
            broken(rep, JK_AUDIT_CKPT_CHAIN, k->seq,
                   "the signed checkpoint at seq %lld does not match the chain: a record after "
                   "seq %lld (the previous checkpoint) was changed and the hashes after it "
                   "recomputed",
                   (long long)k->seq, (long long)rep->last_checkpoint_seq);
            return 1;
        }
        rep->n_checkpoints++;
        rep->last_checkpoint_seq = k->seq;
        if (k->seq == w->head_ckpt_seq) w->is_head_ckpt_seen = 1;
        if ((*rc = ckpt_next(w->c, k->seq, k))) return 1;
    }
    if (seq == w->head_ckpt_seq && !w->is_head_ckpt_seen) {
        broken(rep, JK_AUDIT_CKPT_MISSING, seq,
               "the checkpoint at seq %lld, which the chain head names, is missing (deleted)",
               (long long)seq);
        return 1;
    }
    return 0;
}

/* Checks one record. Returns 1 when a link is broken. */
static int walk_row(struct walk *w, const struct vrow *r, jk_rc *rc)
{
    struct jk_audit_report *rep = w->rep;
    unsigned char h[JK_SM3_BYTES];
    if (r->seq != w->expect) {
        broken(rep, JK_AUDIT_MISSING, w->expect,
               "record %lld is missing: the next record is %lld (%lld record(s) deleted)",
               (long long)w->expect, (long long)r->seq, (long long)(r->seq - w->expect));
        return 1;
    }
    if ((*rc = chain_hash(w->prev, &r->canon, h))) return 1;
    if (!r->is_hash_ok || !jk_crypto_equal(h, r->hash, JK_SM3_BYTES)) {
        broken(rep, JK_AUDIT_MODIFIED, r->seq,
               "record %lld does not match its hash: it was changed, or records were moved",
               (long long)r->seq);
        return 1;
    }
    memcpy(w->prev, h, sizeof h);
    w->expect++;
    rep->n_records++;
    rep->last_seq = r->seq;
    return walk_checkpoints(w, r->seq, rc);
}

/* The head row's last checkpoint into *ckpt_seq; -1 when the row is missing. */
static jk_rc verify_head(jk_conn *c, int64_t *ckpt_seq)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_verify_head, &s);
    if (rc) return rc;
    rc = jk_stmt_step(s, &has_row);
    *ckpt_seq = !rc && has_row ? jk_stmt_col_int(s, 0) : -1;
    jk_stmt_reset(s);
    return rc;
}

static jk_rc verify_snapshot(jk_store *st, const jk_sm2 *key, struct jk_audit_report *rep,
                             jk_conn *c);

/* Verifies inside one read-only snapshot, so that records and checkpoints committed while
 * it reads can never look like a gap. */
jk_rc jk_audit_verify(jk_store *st, const jk_sm2 *key, struct jk_audit_report *rep)
{
    memset(rep, 0, sizeof *rep);
    jk_conn *c = jk_store_conn(st);
    if (!c) return JK_EDB;
    int is_pg = !strcmp(jk_conn_backend(c), "postgresql");
    jk_rc rc = jk_conn_exec(c, is_pg ? "START TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
                                     : "BEGIN");
    if (rc) return rc;
    rc = verify_snapshot(st, key, rep, c);
    jk_rc end = jk_conn_exec(c, "COMMIT");
    return rc ? rc : end;
}

static jk_rc verify_snapshot(jk_store *st, const jk_sm2 *key, struct jk_audit_report *rep,
                             jk_conn *c)
{
    (void)st;
    struct walk w = {.c = c, .key = key, .rep = rep, .expect = 1};
    jk_rc rc = verify_head(c, &w.head_ckpt_seq);
    if (!rc) rc = ckpt_next(c, 0, &w.ckpt);
    if (rc) return rc;
    if (w.head_ckpt_seq < 0) {
        broken(rep, JK_AUDIT_HEAD, 0, "the chain head row is missing");
        return JK_OK;
    }
    struct vrow *rows = calloc(PAGE, sizeof *rows);
    if (!rows) return JK_ENOMEM;
    for (int i = 0; i < PAGE; i++)
        jk_buf_init(&rows[i].canon, 1u << 20);
    int is_broken = 0;
    for (;;) {
        /* Records and checkpoints may be committed while we read (a live system): a record
         * commits with its checkpoint, so the end is only the end when a read finds no more
         * records after the checkpoint we hold was read. */
        int is_ckpt_older = w.ckpt.has, n = 0;
        if ((rc = page_read(c, w.expect - 1, rows, &n))) break;
        for (int i = 0; !rc && !is_broken && i < n; i++)
            is_broken = walk_row(&w, &rows[i], &rc);
        if (rc || is_broken) break;
        if (n == PAGE || (w.ckpt.has && !is_ckpt_older)) continue;
        if (!w.ckpt.has) {
            if ((rc = ckpt_next(c, rep->last_checkpoint_seq, &w.ckpt))) break;
            if (w.ckpt.has) continue;
        }
        break;
    }
    for (int i = 0; i < PAGE; i++)
        jk_buf_free(&rows[i].canon);
    free(rows);
    if (rc || is_broken) return rc;
    int64_t last = rep->last_seq;
    if (w.ckpt.has && w.ckpt.seq > last) {
        if (!ckpt_sig_ok(key, &w.ckpt))
            broken(rep, JK_AUDIT_CKPT_SIG, w.ckpt.seq,
                   "the checkpoint at seq %lld has no valid signature of the platform key "
                   "(forged or changed)",
                   (long long)w.ckpt.seq);
        else
            broken(rep, JK_AUDIT_TRUNCATED, last + 1,
                   "records from seq %lld on are missing: the signed checkpoint at seq %lld "
                   "covers them",
                   (long long)(last + 1), (long long)w.ckpt.seq);
    } else if (w.head_ckpt_seq > last) {
        broken(rep, JK_AUDIT_TRUNCATED, last + 1,
               "records from seq %lld on are missing: the chain head names a checkpoint at seq "
               "%lld, which is gone too",
               (long long)(last + 1), (long long)w.head_ckpt_seq);
    }
    return JK_OK;
}

/* ---- reading back ---- */

static const char sql_find_all[] =
    "SELECT seq, time_ms, actor, role, org, action, res_type, res_id, patient_id, client_addr,"
    " outcome, request_id, reason FROM audit_event WHERE seq < ? ORDER BY seq DESC LIMIT ?";
static const char sql_find_patient[] =
    "SELECT seq, time_ms, actor, role, org, action, res_type, res_id, patient_id, client_addr,"
    " outcome, request_id, reason FROM audit_event WHERE patient_id = ? AND seq < ?"
    " ORDER BY seq DESC LIMIT ?";

jk_rc jk_audit_find(jk_conn *c, const struct jk_audit_query *q, jk_audit_row_fn fn, void *arg)
{
    if (q->limit < 1 || q->limit > 1000) return JK_EINVAL;
    int is_patient = q->patient_id != NULL;
    jk_stmt *s;
    int has_row = 0, i = 1;
    jk_rc rc = jk_conn_prepare(c, is_patient ? sql_find_patient : sql_find_all, &s);
    if (rc) return rc;
    if (is_patient) rc = jk_stmt_text_arg(s, i++, q->patient_id, strlen(q->patient_id));
    if (!rc) rc = jk_stmt_int_arg(s, i++, q->before_seq > 0 ? q->before_seq : INT64_MAX);
    if (!rc) rc = jk_stmt_int_arg(s, i, q->limit);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    while (!rc && has_row) {
        const char *t[N_TEXT];
        for (int k = 0; k < N_TEXT; k++) {
            t[k] = jk_stmt_col_text(s, 2 + k, NULL);
            if (!t[k]) t[k] = "";
        }
        struct jk_audit_rec r = {
            .seq = jk_stmt_col_int(s, 0),
            .time_ms = jk_stmt_col_int(s, 1),
            .actor = t[0],
            .role = t[1],
            .org = t[2],
            .action = t[3],
            .res_type = t[4],
            .res_id = t[5],
            .patient_id = t[6],
            .client_addr = t[7],
            .outcome = outcome_rc(t[8]),
            .request_id = t[9],
            .reason = t[10],
        };
        rc = fn(arg, &r);
        if (!rc) rc = jk_stmt_step(s, &has_row);
    }
    jk_stmt_reset(s);
    return rc;
}

/* ---- FHIR AuditEvent ---- */

static int is_set(const char *s)
{
    return s && *s;
}

/* Whether s is a FHIR id: [A-Za-z0-9\-\.]{1,64}. */
static int is_fhir_id(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char ch = s[n];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.'))
            return 0;
    }
    return n >= 1 && n <= 64;
}

static void add_str(struct json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v));
}

static struct json_object *coding(const char *system, const char *code, const char *display)
{
    struct json_object *c = json_object_new_object();
    add_str(c, "system", system);
    add_str(c, "code", code);
    if (display) add_str(c, "display", display);
    return c;
}

static struct json_object *concept(const char *system, const char *code, const char *display,
                                   const char *text)
{
    struct json_object *cc = json_object_new_object(), *arr = json_object_new_array();
    json_object_array_add(arr, coding(system, code, display));
    json_object_object_add(cc, "coding", arr);
    if (text) add_str(cc, "text", text);
    return cc;
}

/* A Reference to type/id when id is a FHIR id and type a resource type, else to the
 * identifier value (with system when given). */
static struct json_object *reference(const char *type, const char *id, const char *system)
{
    struct json_object *ref = json_object_new_object();
    if (is_set(type) && jk_fhir_is_resource_type(type, strlen(type)) && is_fhir_id(id)) {
        char buf[200];
        snprintf(buf, sizeof buf, "%s/%s", type, id);
        add_str(ref, "reference", buf);
    } else {
        struct json_object *ident = json_object_new_object();
        if (system) add_str(ident, "system", system);
        add_str(ident, "value", id);
        json_object_object_add(ref, "identifier", ident);
        if (is_set(type) && jk_fhir_is_resource_type(type, strlen(type)))
            add_str(ref, "type", type);
    }
    return ref;
}

static const char *outcome_code(jk_rc rc)
{
    if (rc == JK_OK) return "0";
    return jk_rc_http_status(rc) >= 500 ? "8" : "4"; /* serious failure : minor failure */
}

static struct json_object *entity(struct json_object *what, const char *type_code,
                                  const char *type_display, const char *role_code,
                                  const char *role_display)
{
    struct json_object *e = json_object_new_object();
    if (what) json_object_object_add(e, "what", what);
    json_object_object_add(
        e, "type",
        coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", type_code, type_display));
    if (role_code)
        json_object_object_add(
            e, "role",
            coding("http://terminology.hl7.org/CodeSystem/object-role", role_code, role_display));
    return e;
}

jk_rc jk_audit_to_fhir(const struct jk_audit_rec *r, const char *observer, struct json_object **out)
{
    const struct action *a = action_find(r->action);
    if (!a) return JK_EINVAL;
    struct json_object *ev = json_object_new_object(), *arr;
    if (!ev) return JK_ENOMEM;
    char buf[64];
    add_str(ev, "resourceType", "AuditEvent");
    snprintf(buf, sizeof buf, "%lld", (long long)r->seq);
    if (r->seq > 0) add_str(ev, "id", buf);
    json_object_object_add(ev, "type",
                           coding(event_types[a->type].system, event_types[a->type].code,
                                  event_types[a->type].display));
    if (a->sub_code) {
        int is_system_search = !strcmp(a->name, "search") && !is_set(r->res_type);
        arr = json_object_new_array();
        json_object_array_add(arr, coding(a->sub_system,
                                          is_system_search ? "search-system" : a->sub_code,
                                          is_system_search ? "search-system" : a->sub_display));
        json_object_object_add(ev, "subtype", arr);
    }
    add_str(ev, "action", a->code);
    jk_time_iso(r->time_ms, buf, sizeof buf);
    add_str(ev, "recorded", buf);
    add_str(ev, "outcome", outcome_code(r->outcome));
    int is_detail = has_detail(a) && is_set(r->reason);
    if (is_detail && !r->outcome) {
        add_str(ev, "outcomeDesc", r->reason);
    } else if (is_detail) { /* "EUNAUTH: bad_secret" */
        size_t n = strlen(jk_rc_name(r->outcome)) + 2 + strlen(r->reason) + 1;
        char *desc = malloc(n);
        if (!desc) {
            json_object_put(ev);
            return JK_ENOMEM;
        }
        snprintf(desc, n, "%s: %s", jk_rc_name(r->outcome), r->reason);
        add_str(ev, "outcomeDesc", desc);
        free(desc);
    } else if (r->outcome) {
        add_str(ev, "outcomeDesc", jk_rc_name(r->outcome));
    }
    int is_break_glass = !strcmp(a->name, "break-glass");
    if (is_break_glass || (is_set(r->reason) && !is_detail)) {
        struct json_object *po =
            is_break_glass ? concept("http://terminology.hl7.org/CodeSystem/v3-ActReason", "BTG",
                                     "break the glass", is_set(r->reason) ? r->reason : NULL)
                           : json_object_new_object();
        if (!is_break_glass) add_str(po, "text", r->reason);
        arr = json_object_new_array();
        json_object_array_add(arr, po);
        json_object_object_add(ev, "purposeOfEvent", arr);
    }

    /* agent: who acted, in which role, from where; then the organisation they act for */
    struct json_object *agents = json_object_new_array(), *ag = json_object_new_object();
    const char *actor = is_set(r->actor) ? r->actor : "anonymous";
    if (is_set(r->role)) {
        arr = json_object_new_array();
        json_object_array_add(arr, concept(JK_FHIR_NS "/CodeSystem/role", r->role, NULL, NULL));
        json_object_object_add(ag, "role", arr);
    }
    struct json_object *who = json_object_new_object(), *ident = json_object_new_object();
    add_str(ident, "system", JK_FHIR_NS "/sid/account");
    add_str(ident, "value", actor);
    json_object_object_add(who, "identifier", ident);
    add_str(who, "display", actor);
    json_object_object_add(ag, "who", who);
    json_object_object_add(ag, "requestor", json_object_new_boolean(1));
    if (is_set(r->client_addr)) {
        struct json_object *net = json_object_new_object();
        add_str(net, "address", r->client_addr);
        add_str(net, "type", "2"); /* IP address */
        json_object_object_add(ag, "network", net);
    }
    json_object_array_add(agents, ag);
    if (is_set(r->org)) {
        struct json_object *og = json_object_new_object();
        json_object_object_add(og, "type",
                               concept("http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV",
                                       "healthcare provider", NULL));
        json_object_object_add(og, "who",
                               reference("Organization", r->org, JK_FHIR_NS "/sid/organization"));
        json_object_object_add(og, "requestor", json_object_new_boolean(0));
        json_object_array_add(agents, og);
    }
    json_object_object_add(ev, "agent", agents);

    struct json_object *src = json_object_new_object(), *obs = json_object_new_object();
    add_str(obs, "display", observer ? observer : "jiankang");
    json_object_object_add(src, "observer", obs);
    arr = json_object_new_array();
    json_object_array_add(arr, coding("http://terminology.hl7.org/CodeSystem/security-source-type",
                                      "4", "Application Server"));
    json_object_object_add(src, "type", arr);
    json_object_object_add(ev, "source", src);

    /* entity: the resource acted on, the patient it belongs to, the request */
    struct json_object *ents = json_object_new_array();
    int is_patient_itself = is_set(r->res_type) && !strcmp(r->res_type, "Patient") &&
                            is_set(r->res_id) && is_set(r->patient_id) &&
                            !strcmp(r->res_id, r->patient_id);
    int is_account = !strcmp(a->name, "account"); /* the resource is a user account */
    if (is_set(r->res_type) && !is_patient_itself) {
        struct json_object *what = NULL;
        if (is_account && is_set(r->res_id)) {
            what = json_object_new_object();
            ident = json_object_new_object();
            add_str(ident, "system", JK_FHIR_NS "/sid/account");
            add_str(ident, "value", r->res_id);
            json_object_object_add(what, "identifier", ident);
        } else if (is_set(r->res_id)) {
            what = reference(r->res_type, r->res_id, NULL);
        }
        struct json_object *e = entity(what, "2", "System Object", is_account ? "11" : "4",
                                       is_account ? "Security User Entity" : "Domain Resource");
        if (!is_set(r->res_id)) add_str(e, "name", r->res_type);
        json_object_array_add(ents, e);
    }
    if (is_set(r->patient_id))
        json_object_array_add(
            ents, entity(reference("Patient", r->patient_id, NULL), "1", "Person", "1", "Patient"));
    if (is_set(r->request_id)) {
        struct json_object *e = json_object_new_object(), *what = json_object_new_object();
        ident = json_object_new_object();
        add_str(ident, "value", r->request_id);
        json_object_object_add(what, "identifier", ident);
        json_object_object_add(e, "what", what);
        json_object_object_add(
            e, "type",
            coding("https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType",
                   "XrequestId", "Request Id"));
        json_object_array_add(ents, e);
    }
    if (json_object_array_length(ents))
        json_object_object_add(ev, "entity", ents);
    else
        json_object_put(ents);
    *out = ev;
    return JK_OK;
}
