/* test_audit.c - the audit trail's promises, on SQLite and (with JK_TEST_PG_URL) on PostgreSQL:
 * a record commits or rolls back with its action, concurrent appends never fork the chain,
 * and someone who edits, deletes, reorders or forges rows directly in the database is caught
 * by `jiankang audit verify` at the first broken link. Also: AuditEvent rendering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth/audit.h"
#include "cli/audit_cmd.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "core/log.h"
#include "fhir/validate.h"
#include "store/store.h"

#define PG_TEST_SCHEMA "jk_test_audit"
#define EVERY          10 /* checkpoint interval in these tests */

struct fx {
    int is_pg;
    char url[512];
    char dir[64];        /* temporary directory: SQLite database, key files */
    char keys_path[128]; /* the platform key file */
    jk_store *st;
    jk_keys *keys;
    struct jk_audit au;
};

static int64_t fake_now_ms = 1767225600000; /* 2026-01-01T00:00:00Z */

static int64_t fake_now(void)
{
    return fake_now_ms;
}

/* ---- fixtures: a fresh, migrated database and a new key file for every test ---- */

static jk_rc pg_schema_tx(jk_conn *c, void *arg)
{
    jk_rc rc = jk_conn_exec(c, "DROP SCHEMA IF EXISTS " PG_TEST_SCHEMA " CASCADE");
    if (!rc && arg) rc = jk_conn_exec(c, "CREATE SCHEMA " PG_TEST_SCHEMA);
    return rc;
}

static int fx_setup(void **state, int is_pg)
{
    struct fx *f = calloc(1, sizeof *f);
    char err[600];
    if (!f) return -1;
    f->is_pg = is_pg;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-audit.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    if (is_pg) {
        const char *url = getenv("JK_TEST_PG_URL");
        snprintf(f->url, sizeof f->url, "%s%soptions=-csearch_path%%3D" PG_TEST_SCHEMA, url,
                 strchr(url, '?') ? "&" : "?");
    } else {
        snprintf(f->url, sizeof f->url, "sqlite:%s/audit.db", f->dir);
    }
    snprintf(f->keys_path, sizeof f->keys_path, "%s/jiankang.keys", f->dir);
    if (jk_store_open(f->url, &f->st, err, sizeof err)) {
        fprintf(stderr, "cannot open %s: %s\n", f->url, err);
        return -1;
    }
    if ((is_pg && jk_store_tx(f->st, pg_schema_tx, f)) || jk_store_migrate(f->st, NULL)) return -1;
    if (jk_keys_create(f->keys_path, &f->keys, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    jk_audit_init(&f->au, jk_keys_sm2(f->keys));
    f->au.checkpoint_every = EVERY;
    f->au.now_ms = fake_now;
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    if (f->is_pg && f->st) jk_store_tx(f->st, pg_schema_tx, NULL);
    jk_store_close(f->st);
    jk_keys_free(f->keys);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int r = system(cmd);
    free(f);
    return r;
}

static int sqlite_setup(void **state)
{
    return fx_setup(state, 0);
}

static int pg_setup(void **state)
{
    return fx_setup(state, 1);
}

/* ---- helpers ---- */

static const char *const rotation[] = {"read",    "search",       "create",  "update", "delete",
                                       "login",   "login-failed", "refused", "logout", "vread",
                                       "history", "break-glass",  "patch",   "export", "operation"};

/* Appends the record made from number i (every field varies with i). */
static jk_rc append_i(const struct jk_audit *au, jk_conn *c, int i, int64_t *seq)
{
    char actor[32], org[32], res_id[32], patient[32], addr[32], req[32];
    snprintf(actor, sizeof actor, "user-%d", i % 5);
    snprintf(org, sizeof org, "org-%d", i % 3);
    snprintf(res_id, sizeof res_id, "obs-%d", i);
    snprintf(patient, sizeof patient, "p%d", i % 4);
    snprintf(addr, sizeof addr, "10.0.%d.%d", i / 250 % 250, i % 250);
    snprintf(req, sizeof req, "req-%08d", i);
    const char *action = rotation[i % (sizeof rotation / sizeof rotation[0])];
    struct jk_audit_rec r = {
        .time_ms = fake_now_ms + i,
        .actor = actor,
        .role = i % 2 ? "doctor" : "nurse",
        .org = org,
        .action = action,
        .res_type = "Observation",
        .res_id = res_id,
        .patient_id = patient,
        .client_addr = addr,
        .outcome = i % 7 == 0 ? JK_EFORBIDDEN : JK_OK,
        .request_id = req,
        .reason = !strcmp(action, "break-glass") ? "急诊抢救，患者昏迷" : NULL,
    };
    return jk_audit_append(au, c, &r, seq);
}

struct append_job {
    const struct jk_audit *au;
    int first, n;
    jk_rc fail_with; /* returned after the appends, to roll them back */
    int64_t seqs[4];
};

static jk_rc append_tx(jk_conn *c, void *arg)
{
    struct append_job *j = arg;
    for (int i = 0; i < j->n; i++) {
        jk_rc rc = append_i(j->au, c, j->first + i, i < 4 ? &j->seqs[i] : NULL);
        if (rc) return rc;
    }
    return j->fail_with;
}

/* Appends records first .. first+n-1, up to 7 per transaction. */
static void append_n(struct fx *f, int first, int n)
{
    for (int i = 0; i < n;) {
        struct append_job j = {&f->au, first + i, n - i < 7 ? n - i : 7, JK_OK, {0}};
        assert_int_equal(jk_store_tx(f->st, append_tx, &j), JK_OK);
        i += j.n;
    }
}

static jk_rc exec_tx(jk_conn *c, void *arg)
{
    return jk_conn_exec(c, arg);
}

/* Runs one formatted SQL statement (no parameters, no rows) in its own transaction, as
 * someone with direct access to the database would. */
static void sql(struct fx *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sql(struct fx *f, const char *fmt, ...)
{
    char text[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    assert_int_equal(jk_store_tx(f->st, exec_tx, text), JK_OK);
}

static int64_t query_int(struct fx *f, const char *q)
{
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare(c, q, &s), JK_OK);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    int64_t v = jk_stmt_col_int(s, 0);
    jk_stmt_reset(s);
    return v;
}

static const char q_count[] = "SELECT COUNT(*) FROM audit_event";
static const char q_max[] = "SELECT COALESCE(MAX(seq), 0) FROM audit_event";
static const char q_min[] = "SELECT COALESCE(MIN(seq), 0) FROM audit_event";
static const char q_ckpts[] = "SELECT COUNT(*) FROM audit_checkpoint";
static const char q_head_ckpt[] = "SELECT ckpt_seq FROM audit_head";

static struct jk_audit_report verify(struct fx *f)
{
    struct jk_audit_report rep;
    assert_int_equal(jk_audit_verify(f->st, jk_keys_sm2(f->keys), &rep), JK_OK);
    if (rep.broken)
        fprintf(stderr, "      verify: seq %lld: %s\n", (long long)rep.broken_seq, rep.what);
    return rep;
}

static void assert_intact(struct fx *f, int64_t n_records)
{
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.n_records, n_records);
    assert_int_equal(rep.last_seq, n_records);
}

static void assert_broken(struct fx *f, enum jk_audit_break kind, int64_t seq)
{
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, kind);
    assert_int_equal(rep.broken_seq, seq);
    assert_true(rep.what[0] != 0);
}

/* ---- the documented format, computed independently of audit.c ---- */

struct row {
    int64_t seq, time_ms;
    char f[11][300];
    char hash[65];
};

static const char q_rows[] =
    "SELECT seq, time_ms, actor, role, org, action, res_type, res_id, patient_id, client_addr,"
    " outcome, request_id, reason, hash FROM audit_event ORDER BY seq";

/* Reads every record (at most cap). */
static int read_rows(struct fx *f, struct row *rows, int cap)
{
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0, n = 0;
    assert_int_equal(jk_conn_prepare(c, q_rows, &s), JK_OK);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    while (has_row && n < cap) {
        struct row *r = &rows[n++];
        r->seq = jk_stmt_col_int(s, 0);
        r->time_ms = jk_stmt_col_int(s, 1);
        for (int i = 0; i < 11; i++)
            snprintf(r->f[i], sizeof r->f[i], "%s", jk_stmt_col_text(s, 2 + i, NULL));
        snprintf(r->hash, sizeof r->hash, "%s", jk_stmt_col_text(s, 13, NULL));
        assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    }
    jk_stmt_reset(s);
    return n;
}

static size_t put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
    return (size_t)n;
}

/* h = SM3(prev | "JKAR0001" | be64 seq | be64 time_ms | (be32 len | bytes) x 11), as
 * docs/internals/audit.md says. */
static void doc_hash(const unsigned char prev[32], const struct row *r, unsigned char out[32])
{
    unsigned char buf[8192];
    size_t n = 0;
    memcpy(buf, prev, 32);
    n += 32;
    memcpy(buf + n, "JKAR0001", 8);
    n += 8;
    n += put_be(buf + n, (uint64_t)r->seq, 8);
    n += put_be(buf + n, (uint64_t)r->time_ms, 8);
    for (int i = 0; i < 11; i++) {
        size_t len = strlen(r->f[i]);
        n += put_be(buf + n, len, 4);
        memcpy(buf + n, r->f[i], len);
        n += len;
    }
    assert_int_equal(jk_crypto_sm3(buf, n, out), JK_OK);
}

/* ---- tests ---- */

static void test_intact_chain_and_documented_format(void **state)
{
    struct fx *f = *state;
    assert_intact(f, 0); /* an empty trail is intact */
    append_n(f, 1, 95);
    assert_int_equal(query_int(f, q_count), 95);
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.n_records, 95);
    assert_int_equal(rep.n_checkpoints, 9); /* every 10 records */
    assert_int_equal(rep.last_checkpoint_seq, 90);
    /* every stored hash is what the documented format gives */
    static struct row rows[100];
    int n = read_rows(f, rows, 100);
    assert_int_equal(n, 95);
    unsigned char prev[32] = {0}, h[32];
    for (int i = 0; i < n; i++) {
        char hex[65];
        doc_hash(prev, &rows[i], h);
        assert_string_equal(jk_crypto_hex(h, 32, hex), rows[i].hash);
        memcpy(prev, h, 32);
    }
    assert_string_equal(rows[6].f[8], "EFORBIDDEN"); /* record 7: outcome by name */
    assert_string_equal(rows[0].f[8], "success");
}

struct ckpt_job {
    const struct jk_audit *au;
};

static jk_rc checkpoint_tx(jk_conn *c, void *arg)
{
    return jk_audit_checkpoint(((struct ckpt_job *)arg)->au, c);
}

static void test_checkpoint_on_demand(void **state)
{
    struct fx *f = *state;
    struct ckpt_job j = {&f->au};
    assert_int_equal(jk_store_tx(f->st, checkpoint_tx, &j), JK_OK); /* nothing to sign yet */
    assert_int_equal(query_int(f, q_ckpts), 0);
    append_n(f, 1, 25);
    assert_int_equal(query_int(f, q_ckpts), 2);
    assert_int_equal(jk_store_tx(f->st, checkpoint_tx, &j), JK_OK);
    assert_int_equal(jk_store_tx(f->st, checkpoint_tx, &j), JK_OK); /* already covered */
    assert_int_equal(query_int(f, q_ckpts), 3);
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.n_checkpoints, 3);
    assert_int_equal(rep.last_checkpoint_seq, 25);
    /* the next interval counts from the forced checkpoint */
    append_n(f, 26, 10);
    rep = verify(f);
    assert_int_equal(rep.last_checkpoint_seq, 35);
}

static void test_checkpoint_by_time(void **state)
{
    struct fx *f = *state;
    f->au.checkpoint_every = 1000;
    f->au.checkpoint_ms = 60000;
    int64_t t0 = fake_now_ms;
    append_n(f, 1, 1); /* starts the clock */
    fake_now_ms = t0 + 30000;
    append_n(f, 2, 1);
    assert_int_equal(query_int(f, q_ckpts), 0);
    fake_now_ms = t0 + 61000;
    append_n(f, 3, 1); /* a minute after the start: signed */
    fake_now_ms = t0 + 62000;
    append_n(f, 4, 1);
    assert_int_equal(query_int(f, q_ckpts), 1);
    fake_now_ms = t0 + 122000;
    append_n(f, 5, 1);
    assert_int_equal(query_int(f, q_ckpts), 2);
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.last_checkpoint_seq, 5);
    fake_now_ms = t0;
}

/* A server's timer signs the tail of a quiet chain, and its stop signs the very last records,
 * so that verify finds nothing covered by the chain only. */
static void test_ticker_signs_the_tail(void **state)
{
    struct fx *f = *state;
    struct jk_audit_ticker *t = NULL;
    f->au.checkpoint_ms = 50; /* the timer's period; the fake clock never makes one due */
    append_n(f, 1, 3);
    assert_int_equal(query_int(f, q_ckpts), 0);
    assert_int_equal(jk_audit_ticker_start(&f->au, f->st, &t), JK_OK);
    for (int i = 0; i < 500 && query_int(f, q_ckpts) == 0; i++)
        usleep(10000);
    assert_int_equal(query_int(f, q_ckpts), 1);
    assert_int_equal(query_int(f, q_head_ckpt), 3);
    usleep(200000); /* nothing new: no new checkpoint */
    assert_int_equal(query_int(f, q_ckpts), 1);
    append_n(f, 4, 2);
    assert_int_equal(jk_audit_ticker_stop(t), JK_OK);
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.last_seq, 5);
    assert_int_equal(rep.last_checkpoint_seq, 5); /* the stop signed the tail */
    assert_int_equal(jk_audit_ticker_stop(NULL), JK_OK);
}

/* Every field of a record is covered: change any one directly in the database and verify
 * names that record. */
static void test_edited_field_reported(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 50);
    static const char *const cols[] = {"actor",    "role",       "org",        "action",
                                       "res_type", "res_id",     "patient_id", "client_addr",
                                       "outcome",  "request_id", "reason"};
    for (size_t i = 0; i < sizeof cols / sizeof cols[0]; i++) {
        int64_t seq = 3 + (int64_t)i * 4;
        sql(f, "UPDATE audit_event SET %s = %s || 'x' WHERE seq = %lld", cols[i], cols[i],
            (long long)seq);
        assert_broken(f, JK_AUDIT_MODIFIED, seq);
        sql(f, "UPDATE audit_event SET %s = substr(%s, 1, length(%s) - 1) WHERE seq = %lld",
            cols[i], cols[i], cols[i], (long long)seq);
        assert_intact(f, 50);
    }
    sql(f, "UPDATE audit_event SET time_ms = time_ms + 1 WHERE seq = 1");
    assert_broken(f, JK_AUDIT_MODIFIED, 1);
    sql(f, "UPDATE audit_event SET time_ms = time_ms - 1 WHERE seq = 1");
    sql(f, "UPDATE audit_event SET outcome = 'success' WHERE seq = 7"); /* hide a refusal */
    sql(f, "UPDATE audit_event SET actor = 'mallory' WHERE seq = 50");  /* and the last one */
    assert_broken(f, JK_AUDIT_MODIFIED, 7);
}

static void test_edited_hash_reported(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 30);
    sql(f, "UPDATE audit_event SET hash = 'not a hash' WHERE seq = 30");
    assert_broken(f, JK_AUDIT_MODIFIED, 30);
    /* a damaged last link is not continued: the action fails rather than fork the chain */
    struct append_job j = {&f->au, 31, 1, JK_OK, {0}};
    assert_int_equal(jk_store_tx(f->st, append_tx, &j), JK_EDB);
    assert_int_equal(query_int(f, q_count), 30);
    sql(f, "UPDATE audit_event SET hash = (SELECT hash FROM audit_event WHERE seq = 11)"
           " WHERE seq = 12");
    assert_broken(f, JK_AUDIT_MODIFIED, 12);
}

static void test_deleted_record_reported(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 40);
    sql(f, "DELETE FROM audit_event WHERE seq IN (20, 21, 22)");
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_MISSING);
    assert_int_equal(rep.broken_seq, 20);
    assert_non_null(strstr(rep.what, "the next record is 23"));
    assert_int_equal(rep.n_records, 19);
    sql(f, "DELETE FROM audit_event WHERE seq = 1");
    assert_broken(f, JK_AUDIT_MISSING, 1);
}

/* Records at the end: caught by a signed checkpoint, or by the checkpoint the chain head
 * names; after the last checkpoint, or with the head rewritten too, not (documented). */
static void test_truncated_tail(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 45); /* checkpoints at 10 .. 40 */
    sql(f, "DELETE FROM audit_event WHERE seq >= 43");
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT); /* what verify cannot prove */
    assert_int_equal(rep.last_seq, 42);
    assert_int_equal(rep.last_checkpoint_seq, 40);
    sql(f, "DELETE FROM audit_event WHERE seq >= 36");
    rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_TRUNCATED); /* the checkpoint at 40 is signed */
    assert_int_equal(rep.broken_seq, 36);
    assert_non_null(strstr(rep.what, "checkpoint at seq 40"));
    sql(f, "DELETE FROM audit_checkpoint WHERE seq = 40");
    rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_TRUNCATED); /* the head names it */
    assert_int_equal(rep.broken_seq, 36);
    assert_non_null(strstr(rep.what, "chain head names a checkpoint at seq 40"));
    sql(f, "UPDATE audit_head SET ckpt_seq = 30");
    assert_intact(f, 35);
    /* the chain goes on from the last record left */
    append_n(f, 100, 3);
    assert_intact(f, 38);
    /* without its head row the trail cannot be checked or appended to */
    sql(f, "DELETE FROM audit_head");
    assert_broken(f, JK_AUDIT_HEAD, 0);
    struct append_job j = {&f->au, 200, 1, JK_OK, {0}};
    assert_int_equal(jk_store_tx(f->st, append_tx, &j), JK_EDB);
}

/* Moving records: swap two rows' contents, or their places. */
static void test_reordered_records_reported(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 30);
    sql(f, "UPDATE audit_event SET seq = -1 WHERE seq = 14");
    sql(f, "UPDATE audit_event SET seq = 14 WHERE seq = 15");
    sql(f, "UPDATE audit_event SET seq = 15 WHERE seq = -1");
    assert_broken(f, JK_AUDIT_MODIFIED, 14);
    /* put them back: intact again */
    sql(f, "UPDATE audit_event SET seq = -1 WHERE seq = 14");
    sql(f, "UPDATE audit_event SET seq = 14 WHERE seq = 15");
    sql(f, "UPDATE audit_event SET seq = 15 WHERE seq = -1");
    assert_intact(f, 30);
    /* swap the contents (every column but seq) of two distant rows */
    sql(f, "UPDATE audit_event SET seq = -1 WHERE seq = 5");
    sql(f, "UPDATE audit_event SET seq = 5 WHERE seq = 25");
    sql(f, "UPDATE audit_event SET seq = 25 WHERE seq = -1");
    assert_broken(f, JK_AUDIT_MODIFIED, 5);
}

static void test_forged_checkpoint_reported(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 35);
    assert_int_equal(query_int(f, q_ckpts), 3);
    /* another checkpoint's genuine signature */
    sql(f, "UPDATE audit_checkpoint SET sig = (SELECT sig FROM audit_checkpoint WHERE seq = 10)"
           " WHERE seq = 20");
    assert_broken(f, JK_AUDIT_CKPT_SIG, 20);
    sql(f, "DELETE FROM audit_checkpoint WHERE seq = 20");
    assert_intact(f, 35); /* a missing checkpoint in the middle only weakens the proof */
    /* a checkpoint of another hash, or of another time */
    sql(f, "UPDATE audit_checkpoint SET hash = (SELECT hash FROM audit_event WHERE seq = 9)"
           " WHERE seq = 10");
    assert_broken(f, JK_AUDIT_CKPT_SIG, 10);
    sql(f, "UPDATE audit_checkpoint SET hash = (SELECT hash FROM audit_event WHERE seq = 10)"
           " WHERE seq = 10");
    assert_intact(f, 35);
    sql(f, "UPDATE audit_checkpoint SET signed_ms = signed_ms + 1 WHERE seq = 30");
    assert_broken(f, JK_AUDIT_CKPT_SIG, 30);
    sql(f, "UPDATE audit_checkpoint SET signed_ms = signed_ms - 1 WHERE seq = 30");
    /* a well-formed signature by another key */
    jk_keys *other = NULL;
    assert_int_equal(jk_keys_from(NULL, NULL, &other), JK_OK);
    struct jk_audit au2;
    jk_audit_init(&au2, jk_keys_sm2(other));
    au2.now_ms = fake_now;
    append_n(f, 36, 4);
    struct ckpt_job j = {&au2};
    assert_int_equal(jk_store_tx(f->st, checkpoint_tx, &j), JK_OK);
    assert_broken(f, JK_AUDIT_CKPT_SIG, 39);
    jk_keys_free(other);
    /* the checkpoint the head names, deleted */
    sql(f, "DELETE FROM audit_checkpoint WHERE seq = 39");
    assert_broken(f, JK_AUDIT_CKPT_MISSING, 39);
}

/* Someone without the platform key edits record 15 and recomputes every hash after it:
 * the chain is consistent again, but the next signed checkpoint is not. */
static void test_rewritten_chain_caught_by_checkpoint(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 28);
    static struct row rows[40];
    int n = read_rows(f, rows, 40);
    assert_int_equal(n, 28);
    snprintf(rows[14].f[0], sizeof rows[14].f[0], "someone-else");
    unsigned char prev[32] = {0}, h[32];
    char hex[65];
    for (int i = 0; i < n; i++) {
        doc_hash(prev, &rows[i], h);
        memcpy(prev, h, 32);
        if (i < 14) continue;
        jk_crypto_hex(h, 32, hex);
        sql(f, "UPDATE audit_event SET actor = '%s', hash = '%s' WHERE seq = %lld", rows[i].f[0],
            hex, (long long)rows[i].seq);
    }
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_CKPT_CHAIN);
    assert_int_equal(rep.broken_seq, 20);
    assert_non_null(strstr(rep.what, "after seq 10"));
}

struct async_state {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int n_done;
};

static void async_done(void *arg, jk_rc rc)
{
    struct async_state *a = arg;
    (void)rc; /* each job's outcome shows in what was committed */
    pthread_mutex_lock(&a->lock);
    a->n_done++;
    pthread_cond_signal(&a->cond);
    pthread_mutex_unlock(&a->lock);
}

/* An action that fails takes its audit record with it, and the chain goes on without a gap;
 * also inside one SQLite group commit where neighbours succeed. */
static void test_rollback_leaves_no_record(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 5);
    struct append_job j = {&f->au, 6, 3, JK_ECONFLICT, {0}};
    assert_int_equal(jk_store_tx(f->st, append_tx, &j), JK_ECONFLICT);
    assert_int_equal(query_int(f, q_count), 5);
    assert_int_equal(query_int(f, q_max), 5);
    append_n(f, 9, 2);
    assert_int_equal(query_int(f, q_max), 7);
    assert_intact(f, 7);

    /* many at once, every third failing: queued together, committed together on SQLite */
    struct async_state a = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    struct append_job jobs[30];
    for (int i = 0; i < 30; i++) {
        jobs[i] = (struct append_job){&f->au, 100 + 2 * i, 2, i % 3 == 2 ? JK_ERULE : JK_OK, {0}};
        jk_store_tx_async(f->st, append_tx, &jobs[i], async_done, &a);
    }
    pthread_mutex_lock(&a.lock);
    while (a.n_done < 30)
        pthread_cond_wait(&a.cond, &a.lock);
    pthread_mutex_unlock(&a.lock);
    assert_int_equal(query_int(f, q_count), 7 + 20 * 2);
    assert_int_equal(query_int(f, q_max), 7 + 20 * 2);
    for (int i = 0; i < 30; i++)
        if (i % 3 != 2) assert_int_equal(jobs[i].seqs[1], jobs[i].seqs[0] + 1);
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.n_records, 47);
    assert_int_equal(rep.n_checkpoints, 4);
}

/* A record the trail cannot take fails the action: nothing is written. */
static jk_rc append_rec_tx(jk_conn *c, void *arg)
{
    struct fx *f = ((void **)arg)[0];
    return jk_audit_append(&f->au, c, ((void **)arg)[1], NULL);
}

static void test_bad_record_refused(void **state)
{
    struct fx *f = *state;
    struct jk_audit_rec r = {.action = "peek"};
    void *arg[2] = {f, &r};
    assert_int_equal(jk_store_tx(f->st, append_rec_tx, arg), JK_EINVAL);
    r.action = NULL;
    assert_int_equal(jk_store_tx(f->st, append_rec_tx, arg), JK_EINVAL);
    char reason[JK_AUDIT_MAX_REASON + 2];
    memset(reason, 'r', sizeof reason - 1);
    reason[sizeof reason - 1] = 0;
    r = (struct jk_audit_rec){.action = "break-glass", .reason = reason};
    assert_int_equal(jk_store_tx(f->st, append_rec_tx, arg), JK_ETOOBIG);
    reason[JK_AUDIT_MAX_REASON] = 0;
    assert_int_equal(jk_store_tx(f->st, append_rec_tx, arg), JK_OK); /* at the limit */
    char actor[JK_AUDIT_MAX_FIELD + 2];
    memset(actor, 'a', sizeof actor - 1);
    actor[sizeof actor - 1] = 0;
    r = (struct jk_audit_rec){.action = "read", .actor = actor};
    assert_int_equal(jk_store_tx(f->st, append_rec_tx, arg), JK_ETOOBIG);
    /* nobody logged in: "anonymous" */
    r = (struct jk_audit_rec){.action = "login-failed", .outcome = JK_EUNAUTH};
    assert_int_equal(jk_store_tx(f->st, append_rec_tx, arg), JK_OK);
    assert_int_equal(query_int(f, q_count), 2);
    static struct row rows[4];
    assert_int_equal(read_rows(f, rows, 4), 2);
    assert_string_equal(rows[1].f[0], "anonymous");
    assert_string_equal(rows[1].f[8], "EUNAUTH");
    assert_intact(f, 2);
}

/* Many request threads appending at once never fork the chain: seqs stay contiguous, one
 * transaction's records stay together, and verify, running meanwhile, never cries wolf. */
struct racer {
    struct fx *f;
    int id;
    int n_ok;
    int n_split; /* transactions whose two records were not adjacent */
};

#define N_RACERS   8
#define N_RACER_TX 40

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < N_RACER_TX; i++) {
        struct append_job j = {&r->f->au, r->id * 1000 + 2 * i, 2, JK_OK, {0}};
        if (jk_store_tx(r->f->st, append_tx, &j)) continue;
        r->n_ok++;
        if (j.seqs[1] != j.seqs[0] + 1) r->n_split++;
    }
    return NULL;
}

static void test_concurrent_appends_never_fork(void **state)
{
    struct fx *f = *state;
    f->au.checkpoint_every = 25;
    pthread_t th[N_RACERS];
    struct racer r[N_RACERS];
    for (int i = 0; i < N_RACERS; i++) {
        r[i] = (struct racer){f, i, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
    }
    /* verify while they append; assert only once they are done (a failed assert must not
     * leave threads using this stack frame) */
    int n_live_ok = 0;
    for (int k = 0; k < 20; k++) {
        struct jk_audit_report rep;
        jk_rc rc = jk_audit_verify(f->st, jk_keys_sm2(f->keys), &rep);
        if (!rc && rep.broken) fprintf(stderr, "      live verify: %s\n", rep.what);
        if (!rc && !rep.broken) n_live_ok++;
    }
    for (int i = 0; i < N_RACERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(n_live_ok, 20);
    for (int i = 0; i < N_RACERS; i++) {
        assert_int_equal(r[i].n_ok, N_RACER_TX);
        assert_int_equal(r[i].n_split, 0);
    }
    int64_t n = N_RACERS * N_RACER_TX * 2;
    assert_int_equal(query_int(f, q_count), n);
    assert_int_equal(query_int(f, q_min), 1);
    assert_int_equal(query_int(f, q_max), n);
    assert_int_equal(query_int(f, q_head_ckpt), n / 25 * 25);
    assert_int_equal(query_int(f, q_ckpts), n / 25);
    struct jk_audit_report rep = verify(f);
    assert_int_equal(rep.broken, JK_AUDIT_INTACT);
    assert_int_equal(rep.n_records, n);
    assert_int_equal(rep.n_checkpoints, n / 25);
}

/* A resident's access log: who touched their records, newest first, page by page. */
struct collected {
    int n;
    int64_t seqs[64];
    char actors[64][32];
};

static jk_rc collect(void *arg, const struct jk_audit_rec *r)
{
    struct collected *c = arg;
    if (c->n >= 64) return JK_ETOOBIG;
    c->seqs[c->n] = r->seq;
    snprintf(c->actors[c->n], sizeof c->actors[0], "%s", r->actor);
    c->n++;
    return JK_OK;
}

static void test_access_log(void **state)
{
    struct fx *f = *state;
    append_n(f, 1, 40); /* record i is about patient p(i % 4) */
    jk_conn *c = jk_store_conn(f->st);
    struct collected got = {0};
    struct jk_audit_query q = {.patient_id = "p1", .limit = 4};
    assert_int_equal(jk_audit_find(c, &q, collect, &got), JK_OK);
    assert_int_equal(got.n, 4);
    assert_int_equal(got.seqs[0], 37);
    assert_int_equal(got.seqs[3], 25);
    assert_string_equal(got.actors[0], "user-2");
    q.before_seq = got.seqs[3];
    got.n = 0;
    assert_int_equal(jk_audit_find(c, &q, collect, &got), JK_OK);
    assert_int_equal(got.n, 4);
    assert_int_equal(got.seqs[0], 21);
    q = (struct jk_audit_query){.patient_id = "nobody", .limit = 10};
    got.n = 0;
    assert_int_equal(jk_audit_find(c, &q, collect, &got), JK_OK);
    assert_int_equal(got.n, 0);
    q = (struct jk_audit_query){.limit = 3};
    assert_int_equal(jk_audit_find(c, &q, collect, &got), JK_OK);
    assert_int_equal(got.n, 3);
    assert_int_equal(got.seqs[0], 40);
    q.limit = 0;
    assert_int_equal(jk_audit_find(c, &q, collect, &got), JK_EINVAL);
}

/* `jiankang audit verify`: its exit status, with the key file or the public key alone. */
static void test_cli_verify(void **state)
{
    struct fx *f = *state;
    struct jk_config cfg;
    jk_config_defaults(&cfg);
    snprintf(cfg.db, sizeof cfg.db, "%s", f->url);
    snprintf(cfg.keys, sizeof cfg.keys, "%s", f->keys_path);
    char *verify_args[] = {"verify"}, *bad_args[] = {"check"};
    append_n(f, 1, 24);
    assert_int_equal(jk_cli_audit(&cfg, verify_args, 1), 0);
    assert_int_equal(jk_cli_audit(&cfg, bad_args, 1), 2);
    /* the public key alone, as a regulator holds it */
    char pem[JK_SM2_PEM_MAX];
    assert_int_equal(jk_sm2_public_pem(jk_keys_sm2(f->keys), pem, sizeof pem), JK_OK);
    snprintf(cfg.keys, sizeof cfg.keys, "%s/platform.pub", f->dir);
    FILE *out = fopen(cfg.keys, "w");
    assert_non_null(out);
    fputs(pem, out);
    fclose(out);
    assert_int_equal(jk_cli_audit(&cfg, verify_args, 1), 0);
    sql(f, "UPDATE audit_event SET patient_id = 'p0' WHERE seq = 18");
    assert_int_equal(jk_cli_audit(&cfg, verify_args, 1), 1);
    sql(f, "UPDATE audit_event SET patient_id = 'p1' WHERE seq = 18");
    /* other keys: the checkpoints are not theirs */
    snprintf(cfg.keys, sizeof cfg.keys, "%s/other.keys", f->dir);
    char *init_args[] = {"init"};
    assert_int_equal(jk_cli_keys(&cfg, init_args, 1), 0);
    assert_int_equal(jk_cli_keys(&cfg, init_args, 1), 1); /* never replaced */
    assert_int_equal(jk_cli_audit(&cfg, verify_args, 1), 1);
    /* no key file, no database: cannot check */
    snprintf(cfg.keys, sizeof cfg.keys, "%s/missing.keys", f->dir);
    assert_int_equal(jk_cli_audit(&cfg, verify_args, 1), 2);
    snprintf(cfg.keys, sizeof cfg.keys, "%s", f->keys_path);
    snprintf(cfg.db, sizeof cfg.db, "sqlite:%s/empty.db", f->dir);
    assert_int_equal(jk_cli_audit(&cfg, verify_args, 1), 2);
}

/* ---- FHIR AuditEvent ---- */

static struct json_object *render_valid(const struct jk_audit_rec *r)
{
    struct json_object *ev = NULL;
    assert_int_equal(jk_audit_to_fhir(r, "https://jiankang.example/fhir/R4", &ev), JK_OK);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    jk_rc rc = jk_fhir_validate(ev, &d);
    for (struct jk_issue *i = d.head; i; i = i->next)
        fprintf(stderr, "      %s: %s: %s\n", r->action, i->expr ? i->expr : "", i->msg);
    assert_int_equal(rc, JK_OK);
    jk_arena_free(a);
    return ev;
}

static const char *at(struct json_object *o, const char *path)
{
    /* path: keys and array indexes separated by '/' ("agent/0/network/address") */
    char buf[200];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf, *next; p && o; p = next) {
        next = strchr(p, '/');
        if (next) *next++ = 0;
        if (*p >= '0' && *p <= '9')
            o = json_object_array_get_idx(o, (size_t)strtol(p, NULL, 10));
        else if (!json_object_object_get_ex(o, p, &o))
            o = NULL;
    }
    return o ? json_object_get_string(o) : NULL;
}

static void test_fhir_audit_event(void **state)
{
    (void)state;
    /* every action renders as a valid R4 AuditEvent */
    for (size_t i = 0; i < sizeof rotation / sizeof rotation[0]; i++) {
        struct jk_audit_rec r = {.seq = (int64_t)i + 1,
                                 .time_ms = 1767225600123,
                                 .actor = "dr-wang",
                                 .role = "doctor",
                                 .org = "hosp-1",
                                 .action = rotation[i],
                                 .res_type = "Observation",
                                 .res_id = "obs-1",
                                 .patient_id = "p1",
                                 .client_addr = "192.0.2.7",
                                 .request_id = "req-1",
                                 .reason = "急诊"};
        assert_true(jk_audit_action_known(rotation[i]));
        json_object_put(render_valid(&r));
    }
    assert_false(jk_audit_action_known("peek"));

    struct jk_audit_rec r = {.seq = 42,
                             .time_ms = 1767225600123,
                             .actor = "dr-wang",
                             .role = "doctor",
                             .org = "hosp-1",
                             .action = "read",
                             .res_type = "Observation",
                             .res_id = "obs-1",
                             .patient_id = "p1",
                             .client_addr = "192.0.2.7",
                             .request_id = "req-1"};
    struct json_object *ev = render_valid(&r);
    assert_string_equal(at(ev, "id"), "42");
    assert_string_equal(at(ev, "action"), "R");
    assert_string_equal(at(ev, "recorded"), "2026-01-01T00:00:00.123Z");
    assert_string_equal(at(ev, "outcome"), "0");
    assert_string_equal(at(ev, "subtype/0/code"), "read");
    assert_string_equal(at(ev, "agent/0/who/identifier/value"), "dr-wang");
    assert_string_equal(at(ev, "agent/0/role/0/coding/0/code"), "doctor");
    assert_string_equal(at(ev, "agent/0/network/address"), "192.0.2.7");
    assert_string_equal(at(ev, "agent/1/who/reference"), "Organization/hosp-1");
    assert_string_equal(at(ev, "entity/0/what/reference"), "Observation/obs-1");
    assert_string_equal(at(ev, "entity/1/what/reference"), "Patient/p1");
    assert_string_equal(at(ev, "entity/1/role/code"), "1");
    assert_string_equal(at(ev, "entity/2/what/identifier/value"), "req-1");
    assert_non_null(at(ev, "source/observer/display"));
    json_object_put(ev);

    /* a refusal, a search, a break-glass access, a failed login by nobody */
    r.action = "delete";
    r.outcome = JK_EFORBIDDEN;
    ev = render_valid(&r);
    assert_string_equal(at(ev, "action"), "D");
    assert_string_equal(at(ev, "outcome"), "4");
    assert_string_equal(at(ev, "outcomeDesc"), "EFORBIDDEN");
    json_object_put(ev);
    r = (struct jk_audit_rec){.seq = 7, .time_ms = 1, .actor = "dr-li", .action = "search"};
    ev = render_valid(&r);
    assert_string_equal(at(ev, "subtype/0/code"), "search-system");
    assert_null(at(ev, "entity"));
    json_object_put(ev);
    r = (struct jk_audit_rec){.seq = 8,
                              .time_ms = 1,
                              .actor = "dr-li",
                              .action = "break-glass",
                              .res_type = "Patient",
                              .res_id = "p9",
                              .patient_id = "p9",
                              .reason = "急诊抢救"};
    ev = render_valid(&r);
    assert_string_equal(at(ev, "purposeOfEvent/0/coding/0/code"), "BTG");
    assert_string_equal(at(ev, "purposeOfEvent/0/text"), "急诊抢救");
    assert_string_equal(at(ev, "entity/0/what/reference"), "Patient/p9"); /* once */
    assert_null(at(ev, "entity/1"));
    json_object_put(ev);
    r = (struct jk_audit_rec){.seq = 9,
                              .time_ms = 1,
                              .action = "login-failed",
                              .outcome = JK_EINTERNAL,
                              .org = "not an id/with slash",
                              .client_addr = "::1"};
    ev = render_valid(&r);
    assert_string_equal(at(ev, "agent/0/who/identifier/value"), "anonymous");
    assert_string_equal(at(ev, "outcome"), "8");
    assert_string_equal(at(ev, "agent/1/who/identifier/value"), "not an id/with slash");
    json_object_put(ev);
    /* the detail of a failed login and of an account change is the outcome's description */
    r = (struct jk_audit_rec){.seq = 10,
                              .time_ms = 1,
                              .actor = "li.wei",
                              .role = "doctor",
                              .action = "login-failed",
                              .outcome = JK_EUNAUTH,
                              .reason = "bad_secret"};
    ev = render_valid(&r);
    assert_string_equal(at(ev, "outcomeDesc"), "EUNAUTH: bad_secret");
    assert_string_equal(at(ev, "subtype/0/code"), "110122");
    assert_null(at(ev, "purposeOfEvent"));
    json_object_put(ev);
    r = (struct jk_audit_rec){.seq = 11,
                              .time_ms = 1,
                              .actor = "cli:root",
                              .action = "account",
                              .res_type = "account",
                              .res_id = "li.wei",
                              .reason = "lock"};
    assert_true(jk_audit_action_known("account"));
    ev = render_valid(&r);
    assert_string_equal(at(ev, "outcomeDesc"), "lock");
    assert_string_equal(at(ev, "subtype/0/code"), "110137");
    assert_string_equal(at(ev, "entity/0/what/identifier/value"), "li.wei"); /* not FHIR Account */
    assert_null(at(ev, "entity/0/what/reference"));
    assert_string_equal(at(ev, "entity/0/role/code"), "11");
    json_object_put(ev);
    r.action = "peek";
    assert_int_equal(jk_audit_to_fhir(&r, NULL, &ev), JK_EINVAL);
}

#define BOTH(t) cmocka_unit_test_setup_teardown(t, SETUP, fx_teardown)

int main(void)
{
    jk_log_set_level(JK_LOG_OFF);
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_fhir_audit_event),
    };
#define SETUP sqlite_setup
    const struct CMUnitTest sqlite[] = {
        BOTH(test_intact_chain_and_documented_format),
        BOTH(test_checkpoint_on_demand),
        BOTH(test_checkpoint_by_time),
        BOTH(test_ticker_signs_the_tail),
        BOTH(test_edited_field_reported),
        BOTH(test_edited_hash_reported),
        BOTH(test_deleted_record_reported),
        BOTH(test_truncated_tail),
        BOTH(test_reordered_records_reported),
        BOTH(test_forged_checkpoint_reported),
        BOTH(test_rewritten_chain_caught_by_checkpoint),
        BOTH(test_rollback_leaves_no_record),
        BOTH(test_bad_record_refused),
        BOTH(test_concurrent_appends_never_fork),
        BOTH(test_access_log),
        BOTH(test_cli_verify),
    };
#undef SETUP
#define SETUP pg_setup
    const struct CMUnitTest pg[] = {
        BOTH(test_intact_chain_and_documented_format),
        BOTH(test_checkpoint_on_demand),
        BOTH(test_checkpoint_by_time),
        BOTH(test_ticker_signs_the_tail),
        BOTH(test_edited_field_reported),
        BOTH(test_edited_hash_reported),
        BOTH(test_deleted_record_reported),
        BOTH(test_truncated_tail),
        BOTH(test_reordered_records_reported),
        BOTH(test_forged_checkpoint_reported),
        BOTH(test_rewritten_chain_caught_by_checkpoint),
        BOTH(test_rollback_leaves_no_record),
        BOTH(test_bad_record_refused),
        BOTH(test_concurrent_appends_never_fork),
        BOTH(test_access_log),
        BOTH(test_cli_verify),
    };
#undef SETUP
    int failed = cmocka_run_group_tests_name("audit", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("audit/sqlite", sqlite, NULL, NULL);
    if (getenv("JK_TEST_PG_URL") && *getenv("JK_TEST_PG_URL"))
        failed += cmocka_run_group_tests_name("audit/postgresql", pg, NULL, NULL);
    else
        fprintf(stderr, "[  SKIPPED ] audit/postgresql: set JK_TEST_PG_URL to run it"
                        " (tools/pg-test-cluster.sh start DIR prints one)\n");
    return failed ? 1 : 0;
}
