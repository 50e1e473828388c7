/* test_store.c - the store's promises, checked on SQLite and (with JK_TEST_PG_URL) on
 * PostgreSQL: migrations, exact text, atomic transactions, conflicts, concurrency, durability. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "store/store.h"

#define N_THREADS       8
#define N_TX_PER_THREAD 200
#define N_ASYNC         600

struct fixture {
    char url[512];
    char dir[64]; /* SQLite: the temporary directory holding the database */
    jk_store *st;
};

/* ---- helpers: every SQL text is a literal, because statements are cached by address ---- */

static const char sql_drop_note[] = "DROP TABLE IF EXISTS t_note";
static const char sql_drop_counter[] = "DROP TABLE IF EXISTS t_counter";
static const char sql_drop_event[] = "DROP TABLE IF EXISTS t_event";
static const char sql_drop_rv[] = "DROP TABLE IF EXISTS resource_version";
static const char sql_drop_token[] = "DROP TABLE IF EXISTS idx_token";
static const char sql_drop_mig[] = "DROP TABLE IF EXISTS schema_migration";
static const char sql_create_note[] = "CREATE TABLE t_note (id BIGINT PRIMARY KEY, body TEXT)";
static const char sql_create_counter[] =
    "CREATE TABLE t_counter (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)";
static const char sql_create_event[] = "CREATE TABLE t_event (thread INTEGER NOT NULL,"
                                       " k INTEGER NOT NULL, PRIMARY KEY (thread, k))";

static const char sql_note_insert[] = "INSERT INTO t_note (id, body) VALUES (?, ?)";
static const char sql_note_get[] = "SELECT body FROM t_note WHERE id = ?";
static const char sql_note_count_range[] = "SELECT COUNT(*) FROM t_note WHERE id >= ? AND id < ?";
static const char sql_counter_insert[] = "INSERT INTO t_counter (id, n) VALUES (?, 0)";
static const char sql_counter_bump[] = "UPDATE t_counter SET n = n + 1 WHERE id = ?";
static const char sql_counter_get[] = "SELECT n FROM t_counter WHERE id = ?";
static const char sql_event_insert[] = "INSERT INTO t_event (thread, k) VALUES (?, ?)";
static const char sql_event_count[] = "SELECT COUNT(*) FROM t_event WHERE thread = ?";
static const char sql_event_count_k[] = "SELECT COUNT(*) FROM t_event WHERE thread = ? AND k = ?";

struct sql_list {
    const char *const *sql;
    size_t n;
};

static jk_rc exec_list_tx(jk_conn *c, void *arg)
{
    const struct sql_list *l = arg;
    for (size_t i = 0; i < l->n; i++) {
        jk_rc rc = jk_conn_exec(c, l->sql[i]);
        if (rc) return rc;
    }
    return JK_OK;
}

/* Runs a query with n_args (0..2) integer parameters returning one integer, on the calling
 * thread's connection. */
static int64_t query_int2(jk_store *st, const char *sql, int n_args, int64_t a, int64_t b)
{
    jk_conn *c = jk_store_conn(st);
    assert_non_null(c);
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare(c, sql, &s), JK_OK);
    if (n_args > 0) assert_int_equal(jk_stmt_int_arg(s, 1, a), JK_OK);
    if (n_args > 1) assert_int_equal(jk_stmt_int_arg(s, 2, b), JK_OK);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    int64_t v = jk_stmt_col_int(s, 0);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_false(has_row);
    jk_stmt_reset(s);
    return v;
}

static int64_t query_int(jk_store *st, const char *sql, int64_t a)
{
    return query_int2(st, sql, 1, a, 0);
}

/* Inserts one t_note row with the statement of c. */
static jk_rc note_insert(jk_conn *c, int64_t id, const char *body, size_t n)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_note_insert, &s);
    if (rc) return rc;
    if (!(rc = jk_stmt_int_arg(s, 1, id))) {
        rc = body ? jk_stmt_text_arg(s, 2, body, n) : jk_stmt_null_arg(s, 2);
    }
    if (!rc) rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

struct note {
    int64_t id;
    const char *body;
    size_t len;
};

struct note_batch {
    const struct note *notes;
    size_t n;
    jk_rc fail_with; /* returned after the inserts, to test rollback */
};

static jk_rc note_batch_tx(jk_conn *c, void *arg)
{
    const struct note_batch *b = arg;
    for (size_t i = 0; i < b->n; i++) {
        jk_rc rc = note_insert(c, b->notes[i].id, b->notes[i].body, b->notes[i].len);
        if (rc) return rc;
    }
    return b->fail_with;
}

/* Reads note id on the calling thread's connection into buf; returns the length, -1 when
 * absent, -2 when the body is NULL. */
static long note_get(jk_store *st, int64_t id, char *buf, size_t cap)
{
    jk_conn *c = jk_store_conn(st);
    if (!c) return -3;
    jk_stmt *s;
    int has_row = 0;
    if (jk_conn_prepare(c, sql_note_get, &s)) return -3;
    long n = -1;
    if (!jk_stmt_int_arg(s, 1, id) && !jk_stmt_step(s, &has_row) && has_row) {
        size_t len = 0;
        const char *p = jk_stmt_col_text(s, 0, &len);
        if (jk_stmt_col_is_null(s, 0)) {
            n = -2;
        } else if (p && len < cap) {
            memcpy(buf, p, len);
            buf[len] = 0;
            n = (long)len;
        }
    }
    jk_stmt_reset(s);
    return n;
}

/* ---- group set-up: a fresh database with the test's own tables ---- */

static int fixture_open(struct fixture *f)
{
    char err[256] = "";
    jk_rc rc = jk_store_open(f->url, &f->st, err, sizeof err);
    if (rc) fprintf(stderr, "cannot open %s store: %s\n", f->dir[0] ? "SQLite" : "PG", err);
    return rc ? -1 : 0;
}

static int fixture_tables(struct fixture *f)
{
    static const char *const sql[] = {sql_drop_note,   sql_drop_counter,   sql_drop_event,
                                      sql_drop_rv,     sql_drop_token,     sql_drop_mig,
                                      sql_create_note, sql_create_counter, sql_create_event};
    struct sql_list l = {sql, sizeof sql / sizeof sql[0]};
    return jk_store_tx(f->st, exec_list_tx, &l) ? -1 : 0;
}

static int sqlite_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-store.XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    snprintf(f->url, sizeof f->url, "sqlite:%s/store.db", f->dir);
    if (fixture_open(f) || fixture_tables(f)) return -1;
    *state = f;
    return 0;
}

static int sqlite_teardown(void **state)
{
    struct fixture *f = *state;
    jk_store_close(f->st);
    static const char *const suffixes[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/store.db%s", f->dir, suffixes[i]);
        unlink(path);
    }
    rmdir(f->dir);
    free(f);
    return 0;
}

/* PostgreSQL tests run in a schema of their own, so that a JK_TEST_PG_URL naming a real
 * database never loses its tables: every connection gets it as its search_path. */
#define PG_TEST_SCHEMA "jk_test_store"

static jk_rc pg_schema_tx(jk_conn *c, void *arg)
{
    jk_rc rc = jk_conn_exec(c, "DROP SCHEMA IF EXISTS " PG_TEST_SCHEMA " CASCADE");
    if (!rc && arg) rc = jk_conn_exec(c, "CREATE SCHEMA " PG_TEST_SCHEMA);
    return rc;
}

static int pg_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    const char *url = getenv("JK_TEST_PG_URL");
    snprintf(f->url, sizeof f->url, "%s%soptions=-csearch_path%%3D" PG_TEST_SCHEMA, url,
             strchr(url, '?') ? "&" : "?");
    if (fixture_open(f) || jk_store_tx(f->st, pg_schema_tx, f) || fixture_tables(f)) return -1;
    *state = f;
    return 0;
}

static int pg_teardown(void **state)
{
    struct fixture *f = *state;
    if (f->st) jk_store_tx(f->st, pg_schema_tx, NULL);
    jk_store_close(f->st);
    free(f);
    return 0;
}

/* ---- tests ---- */

/* Start-up migrates every time: the second run must find nothing to do. */
static void migrate_is_idempotent(void **state)
{
    struct fixture *f = *state;
    int n = -1;
    assert_int_equal(jk_store_migrate(f->st, &n), JK_OK);
    assert_true(n >= 1);
    assert_int_equal(jk_store_migrate(f->st, &n), JK_OK);
    assert_int_equal(n, 0);
    assert_int_equal(jk_store_migrate(f->st, NULL), JK_OK);
}

/* Names and notes in Chinese, characters outside the BMP, quotes and a question mark in the
 * data, a slice that is not NUL-terminated, the empty string and NULL come back exactly. */
static void text_round_trips_exactly(void **state)
{
    struct fixture *f = *state;
    static const char slice[] = "患者ABCDEF";
    static const char quotes[] = "O'Brien said \"it's fine\"; -- not a comment ? '' \\' ?";
    static const char chinese[] = "张三，男，高血压二级；处方：氨氯地平片 5mg 每日一次";
    static const char ext_b[] = "𠀀𠀁𪚥 (U+20000, U+20001, U+2A6A5)";
    const struct note notes[] = {
        {101, chinese, strlen(chinese)},
        {102, ext_b, strlen(ext_b)},
        {103, quotes, strlen(quotes)},
        {104, slice, strlen("患者ABC")}, /* only the first bytes */
        {105, "", 0},
        {106, NULL, 0},
    };
    struct note_batch b = {notes, sizeof notes / sizeof notes[0], JK_OK};
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b), JK_OK);

    char buf[512];
    assert_int_equal(note_get(f->st, 101, buf, sizeof buf), (long)strlen(chinese));
    assert_string_equal(buf, chinese);
    assert_int_equal(note_get(f->st, 102, buf, sizeof buf), (long)strlen(ext_b));
    assert_memory_equal(buf, "\xF0\xA0\x80\x80", 4); /* U+20000 in UTF-8 */
    assert_string_equal(buf, ext_b);
    assert_int_equal(note_get(f->st, 103, buf, sizeof buf), (long)strlen(quotes));
    assert_string_equal(buf, quotes);
    assert_int_equal(note_get(f->st, 104, buf, sizeof buf), (long)strlen("患者ABC"));
    assert_string_equal(buf, "患者ABC");
    assert_int_equal(note_get(f->st, 105, buf, sizeof buf), 0);
    assert_int_equal(note_get(f->st, 106, buf, sizeof buf), -2);
    assert_int_equal(note_get(f->st, 107, buf, sizeof buf), -1);
}

/* A `?` inside a string literal is text, not a parameter; an int64 survives both ways. */
static void placeholders_and_integers(void **state)
{
    struct fixture *f = *state;
    static const char sql[] = "SELECT '?''?', ?, CAST(? AS BIGINT) + 1";
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0;
    size_t len = 0;
    assert_int_equal(jk_conn_prepare(c, sql, &s), JK_OK);
    assert_int_equal(jk_stmt_text_arg(s, 1, "北京", strlen("北京")), JK_OK);
    assert_int_equal(jk_stmt_int_arg(s, 2, INT64_C(4000000000)), JK_OK);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    const char *p = jk_stmt_col_text(s, 0, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, "?'?", 3);
    p = jk_stmt_col_text(s, 1, &len);
    assert_int_equal(len, strlen("北京"));
    assert_memory_equal(p, "北京", len);
    assert_true(jk_stmt_col_int(s, 2) == INT64_C(4000000001));
    jk_stmt_reset(s);

    static const struct note big[] = {{INT64_C(-9000000000000000000), "min-ish", 7},
                                      {INT64_C(9000000000000000000), "max-ish", 7}};
    struct note_batch b = {big, 2, JK_OK};
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b), JK_OK);
    char buf[16];
    assert_int_equal(note_get(f->st, INT64_C(9000000000000000000), buf, sizeof buf), 7);
    assert_string_equal(buf, "max-ish");
    assert_int_equal(note_get(f->st, INT64_C(-9000000000000000000), buf, sizeof buf), 7);
}

/* A transaction body that fails after writing leaves no trace, and reports its own rc. */
static void failed_tx_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    const struct note notes[] = {{201, "a", 1}, {202, "b", 1}, {203, "c", 1}};
    struct note_batch b = {notes, 3, JK_ERULE};
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b), JK_ERULE);
    assert_int_equal(query_int2(f->st, sql_note_count_range, 2, 200, 300), 0);
    b.fail_with = JK_OK;
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b), JK_OK);
    assert_int_equal(query_int2(f->st, sql_note_count_range, 2, 200, 300), 3);
}

/* Creating what already exists is a conflict (409), and the first write stays as it was. */
static void unique_violation_is_conflict(void **state)
{
    struct fixture *f = *state;
    const struct note first[] = {{301, "first", 5}};
    const struct note again[] = {{302, "other", 5}, {301, "second", 6}};
    struct note_batch b1 = {first, 1, JK_OK}, b2 = {again, 2, JK_OK};
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b1), JK_OK);
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b2), JK_ECONFLICT);
    char buf[16];
    assert_int_equal(note_get(f->st, 301, buf, sizeof buf), 5);
    assert_string_equal(buf, "first");
    assert_int_equal(note_get(f->st, 302, buf, sizeof buf), -1); /* undone with it */
    assert_string_not_equal(jk_conn_errmsg(jk_store_conn(f->st)), "");
}

/* ---- concurrency ---- */

struct worker {
    jk_store *st;
    int thread;
    int k;
    int n_ok, n_rule, n_other; /* results seen by this thread */
};

static jk_rc worker_tx(jk_conn *c, void *arg)
{
    struct worker *w = arg;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_counter_bump, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, 1);
    rc = jk_stmt_step(s, &has_row);
    int64_t n_changed = rc ? 0 : jk_stmt_changes(s);
    jk_stmt_reset(s);
    if (rc) return rc;
    if (n_changed != 1) return JK_EINTERNAL;
    if ((rc = jk_conn_prepare(c, sql_event_insert, &s))) return rc;
    jk_stmt_int_arg(s, 1, w->thread);
    jk_stmt_int_arg(s, 2, w->k);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    if (rc) return rc;
    return w->k % 10 == 7 ? JK_ERULE : JK_OK; /* every tenth changes its mind */
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (w->k = 0; w->k < N_TX_PER_THREAD; w->k++) {
        jk_rc rc = jk_store_tx(w->st, worker_tx, w);
        if (rc == JK_OK)
            w->n_ok++;
        else if (rc == JK_ERULE)
            w->n_rule++;
        else
            w->n_other++;
    }
    return NULL;
}

static jk_rc counter_create_tx(jk_conn *c, void *arg)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_counter_insert, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, *(const int *)arg);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* Many clients write at once: every transaction commits, none is lost, none undoes its
 * neighbours, and the ones that fail leave nothing. */
static void concurrent_tx_lose_nothing(void **state)
{
    struct fixture *f = *state;
    int counter_id = 1;
    assert_int_equal(jk_store_tx(f->st, counter_create_tx, &counter_id), JK_OK);
    struct worker w[N_THREADS];
    pthread_t th[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        w[i] = (struct worker){.st = f->st, .thread = i};
        assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < N_THREADS; i++)
        pthread_join(th[i], NULL);
    int n_ok = 0;
    for (int i = 0; i < N_THREADS; i++) {
        assert_int_equal(w[i].n_other, 0);
        assert_int_equal(w[i].n_rule, N_TX_PER_THREAD / 10);
        assert_int_equal(w[i].n_ok, N_TX_PER_THREAD - N_TX_PER_THREAD / 10);
        assert_int_equal(query_int(f->st, sql_event_count, i), w[i].n_ok);
        assert_int_equal(query_int2(f->st, sql_event_count_k, 2, i, 17), 0);
        assert_int_equal(query_int2(f->st, sql_event_count_k, 2, i, 18), 1);
        n_ok += w[i].n_ok;
    }
    assert_int_equal(query_int(f->st, sql_counter_get, 1), n_ok);
}

struct async_job {
    int i;
    int n_done; /* times done() was called for this job */
    jk_rc rc;
    pthread_mutex_t *lock;
    pthread_cond_t *cond;
    int *n_left;
};

#define ASYNC_THREAD 100

static jk_rc async_tx(jk_conn *c, void *arg)
{
    struct async_job *j = arg;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_event_insert, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, ASYNC_THREAD);
    /* Every 50th job re-inserts key 0 (a unique violation); every 7th fails on purpose. */
    jk_stmt_int_arg(s, 2, j->i % 50 == 25 ? 0 : j->i);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    if (rc) return rc;
    return j->i % 7 == 3 ? JK_ERULE : JK_OK;
}

static void async_done(void *arg, jk_rc rc)
{
    struct async_job *j = arg;
    pthread_mutex_lock(j->lock);
    j->rc = rc;
    j->n_done++;
    if (--*j->n_left == 0) pthread_cond_signal(j->cond);
    pthread_mutex_unlock(j->lock);
}

/* Queued transactions (a busy group commit on SQLite) each get exactly one done() with
 * their own result; failures in the middle of a batch do not undo the others. */
static void async_tx_all_done(void **state)
{
    struct fixture *f = *state;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
    int n_left = N_ASYNC;
    struct async_job *jobs = calloc(N_ASYNC, sizeof *jobs);
    assert_non_null(jobs);
    for (int i = 0; i < N_ASYNC; i++) {
        jobs[i] = (struct async_job){i, 0, JK_EINTERNAL, &lock, &cond, &n_left};
        jk_store_tx_async(f->st, async_tx, &jobs[i], async_done, &jobs[i]);
    }
    pthread_mutex_lock(&lock);
    while (n_left > 0)
        pthread_cond_wait(&cond, &lock);
    pthread_mutex_unlock(&lock);
    int n_ok = 0;
    for (int i = 0; i < N_ASYNC; i++) {
        jk_rc want = i % 50 == 25 ? JK_ECONFLICT : i % 7 == 3 ? JK_ERULE : JK_OK;
        assert_int_equal(jobs[i].n_done, 1);
        assert_int_equal(jobs[i].rc, want);
        n_ok += want == JK_OK;
        int64_t present = query_int2(f->st, sql_event_count_k, 2, ASYNC_THREAD, i);
        assert_int_equal(present, want == JK_OK || i == 0 ? 1 : 0);
    }
    assert_int_equal(query_int(f->st, sql_event_count, ASYNC_THREAD), n_ok);
    free(jobs);
}

struct reader {
    jk_store *st;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int phase; /* 1: the reader has looked once; 2: the writer has committed */
    long len_before, len_after;
    char buf[64];
};

/* A worker thread with a long-lived connection, as the server's request threads have. */
static void *reader_main(void *arg)
{
    struct reader *r = arg;
    r->len_before = note_get(r->st, 401, r->buf, sizeof r->buf);
    pthread_mutex_lock(&r->lock);
    r->phase = 1;
    pthread_cond_signal(&r->cond);
    while (r->phase != 2)
        pthread_cond_wait(&r->cond, &r->lock);
    pthread_mutex_unlock(&r->lock);
    r->len_after = note_get(r->st, 401, r->buf, sizeof r->buf);
    return NULL;
}

/* Once jk_store_tx has returned, another thread's connection, already used before the
 * write, sees it. */
static void committed_is_visible_elsewhere(void **state)
{
    struct fixture *f = *state;
    struct reader r = {.st = f->st};
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.cond, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
    pthread_mutex_lock(&r.lock);
    while (r.phase != 1)
        pthread_cond_wait(&r.cond, &r.lock);
    pthread_mutex_unlock(&r.lock);

    const struct note notes[] = {{401, "已提交", strlen("已提交")}};
    struct note_batch b = {notes, 1, JK_OK};
    jk_rc rc = jk_store_tx(f->st, note_batch_tx, &b);

    pthread_mutex_lock(&r.lock);
    r.phase = 2;
    pthread_cond_signal(&r.cond);
    pthread_mutex_unlock(&r.lock);
    pthread_join(th, NULL);
    pthread_cond_destroy(&r.cond);
    pthread_mutex_destroy(&r.lock);
    assert_int_equal(rc, JK_OK);
    assert_int_equal(r.len_before, -1);
    assert_int_equal(r.len_after, (long)strlen("已提交"));
    assert_string_equal(r.buf, "已提交");
}

/* What was acknowledged is still there after the store is closed and opened again. */
static void data_survives_reopen(void **state)
{
    struct fixture *f = *state;
    const struct note notes[] = {{501, "持久", strlen("持久")}};
    struct note_batch b = {notes, 1, JK_OK};
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b), JK_OK);
    jk_store_close(f->st);
    f->st = NULL;
    assert_int_equal(fixture_open(f), 0);
    char buf[32];
    assert_int_equal(note_get(f->st, 501, buf, sizeof buf), (long)strlen("持久"));
    assert_string_equal(buf, "持久");
    int n = -1;
    assert_int_equal(jk_store_migrate(f->st, &n), JK_OK);
    assert_int_equal(n, 0);
}

/* ---- the migrated resource_version table ---- */

static const char sql_rv_insert[] =
    "INSERT INTO resource_version (type, id, version, last_updated, deleted, method, body)"
    " VALUES (?, ?, ?, ?, 0, ?, ?)";
static const char sql_rv_latest[] = "SELECT seq, version, body FROM resource_version"
                                    " WHERE type = ? AND id = ? ORDER BY version DESC LIMIT 1";
static const char sql_rv_seq[] =
    "SELECT seq FROM resource_version WHERE type = ? AND id = ? AND version = ?";

struct rv {
    const char *id;
    int version;
    const char *body;
};

static jk_rc rv_insert_tx(jk_conn *c, void *arg)
{
    const struct rv *r = arg;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_rv_insert, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, "Patient", 7);
    jk_stmt_text_arg(s, 2, r->id, strlen(r->id));
    jk_stmt_int_arg(s, 3, r->version);
    jk_stmt_text_arg(s, 4, "2026-11-22T08:30:00.123Z", 24);
    jk_stmt_text_arg(s, 5, r->version == 1 ? "POST" : "PUT", r->version == 1 ? 4 : 3);
    jk_stmt_text_arg(s, 6, r->body, strlen(r->body));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

static int64_t rv_seq(jk_store *st, const char *id, int version)
{
    jk_conn *c = jk_store_conn(st);
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare(c, sql_rv_seq, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "Patient", 7);
    jk_stmt_text_arg(s, 2, id, strlen(id));
    jk_stmt_int_arg(s, 3, version);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    int64_t seq = has_row ? jk_stmt_col_int(s, 0) : -1;
    jk_stmt_reset(s);
    return seq;
}

/* Versions of a resource: the same version twice is a conflict; seq grows with each write;
 * the latest body comes back exactly. */
static void resource_versions(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(jk_store_migrate(f->st, NULL), JK_OK);
    static const char v1[] = "{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"王小明\"}]}";
    static const char v2[] =
        "{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"王小明 𠀀\"}],\"gender\":\"male\"}";
    struct rv r1 = {"pat-1", 1, v1}, dup = {"pat-1", 1, v2}, r2 = {"pat-1", 2, v2};
    assert_int_equal(jk_store_tx(f->st, rv_insert_tx, &r1), JK_OK);
    assert_int_equal(jk_store_tx(f->st, rv_insert_tx, &dup), JK_ECONFLICT);
    assert_int_equal(jk_store_tx(f->st, rv_insert_tx, &r2), JK_OK);
    int64_t seq1 = rv_seq(f->st, "pat-1", 1), seq2 = rv_seq(f->st, "pat-1", 2);
    assert_true(seq1 > 0);
    assert_true(seq2 > seq1);

    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0;
    size_t len = 0;
    assert_int_equal(jk_conn_prepare(c, sql_rv_latest, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "Patient", 7);
    jk_stmt_text_arg(s, 2, "pat-1", 5);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    assert_true(jk_stmt_col_int(s, 0) == seq2);
    assert_int_equal(jk_stmt_col_int(s, 1), 2);
    const char *body = jk_stmt_col_text(s, 2, &len);
    assert_int_equal(len, strlen(v2));
    assert_memory_equal(body, v2, len);
    jk_stmt_reset(s);
}

/* ---- statements built at run time ---- */

/* SQL built in a reused buffer is prepared for one use: the second text in the same buffer
 * is a different statement (no cache keyed by its address), typed parameters work in casts,
 * rows come back in order, and a refused text is JK_EDB, not a crash. */
static void once_statements(void **state)
{
    struct fixture *f = *state;
    jk_conn *c = jk_store_conn(f->st);
    const struct note notes[] = {{701, "甲", 3}, {702, "乙", 3}, {703, "丙", 3}};
    struct note_batch b = {notes, 3, JK_OK};
    assert_int_equal(jk_store_tx(f->st, note_batch_tx, &b), JK_OK);
    char sql[256];
    jk_stmt *s;
    int has_row = 0;
    size_t len = 0;
    for (int round = 0; round < 2; round++) {
        snprintf(sql, sizeof sql,
                 "SELECT id, body, CAST(? AS DOUBLE PRECISION) * 2 FROM t_note"
                 " WHERE id >= CAST(? AS BIGINT) AND id <= %d AND body <> ? ORDER BY id %s",
                 703, round ? "DESC" : "ASC");
        assert_int_equal(jk_conn_prepare_once(c, sql, &s), JK_OK);
        memset(sql, 'x', sizeof sql - 1); /* the text is not needed after prepare */
        sql[sizeof sql - 1] = 0;
        assert_int_equal(jk_stmt_double_arg(s, 1, 1.25), JK_OK);
        assert_int_equal(jk_stmt_int_arg(s, 2, 701), JK_OK);
        assert_int_equal(jk_stmt_text_arg(s, 3, "乙", 3), JK_OK);
        assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
        assert_true(has_row);
        assert_true(jk_stmt_col_int(s, 0) == (round ? 703 : 701));
        const char *p = jk_stmt_col_text(s, 1, &len);
        assert_int_equal(len, 3);
        assert_memory_equal(p, round ? "丙" : "甲", 3);
        assert_true(jk_stmt_col_double(s, 2) == 2.5);
        assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
        assert_true(has_row);
        assert_true(jk_stmt_col_int(s, 0) == (round ? 701 : 703));
        assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
        assert_false(has_row);
        jk_stmt_finalize(s);
    }
    jk_stmt_finalize(NULL);
    jk_log_set_level(JK_LOG_OFF); /* the failure below is expected */
    jk_rc rc = jk_conn_prepare_once(c, "SELECT FROM WHERE nothing", &s);
    if (!rc) { /* PostgreSQL sees the text only when it runs */
        rc = jk_stmt_step(s, &has_row);
        jk_stmt_finalize(s);
    }
    assert_int_equal(rc, JK_EDB);
    jk_log_set_level(JK_LOG_INFO);
    /* The connection is still usable, through both kinds of statement. */
    char buf[16];
    assert_int_equal(note_get(f->st, 702, buf, sizeof buf), 3);
    assert_int_equal(
        jk_conn_prepare_once(c, "SELECT COUNT(*) FROM t_note WHERE id BETWEEN 701 AND 799", &s),
        JK_OK);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row && jk_stmt_col_int(s, 0) == 3);
    jk_stmt_finalize(s);
}

/* A statement of one use runs inside a transaction too (conditional writes search there). */
static jk_rc once_in_tx(jk_conn *c, void *arg)
{
    int64_t *n = arg;
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = note_insert(c, 801, "in tx", 5);
    if (!rc) rc = jk_conn_prepare_once(c, "SELECT COUNT(*) FROM t_note WHERE id = 801", &s);
    if (rc) return rc;
    rc = jk_stmt_step(s, &has_row);
    *n = !rc && has_row ? jk_stmt_col_int(s, 0) : -1;
    jk_stmt_finalize(s);
    return rc;
}

static void once_statement_in_tx(void **state)
{
    struct fixture *f = *state;
    int64_t n = 0;
    assert_int_equal(jk_store_tx(f->st, once_in_tx, &n), JK_OK);
    assert_true(n == 1);
}

/* jk_conn_collate_c() makes text compare by code point whatever the database's collation:
 * 'é' (U+00E9) sorts after 'z', and '王' (U+738B) after '汪' (U+6C6A). */
static void collate_c_compares_code_points(void **state)
{
    struct fixture *f = *state;
    jk_conn *c = jk_store_conn(f->st);
    assert_non_null(jk_conn_collate_c(c));
    assert_string_equal(jk_conn_backend(c), jk_store_backend(f->st));
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT CASE WHEN CAST(? AS TEXT)%s > CAST(? AS TEXT) THEN 1 ELSE 0 END,"
             " CASE WHEN CAST(? AS TEXT)%s > CAST(? AS TEXT) THEN 1 ELSE 0 END",
             jk_conn_collate_c(c), jk_conn_collate_c(c));
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare_once(c, sql, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "é", strlen("é"));
    jk_stmt_text_arg(s, 2, "z", 1);
    jk_stmt_text_arg(s, 3, "王", strlen("王"));
    jk_stmt_text_arg(s, 4, "汪", strlen("汪"));
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    assert_int_equal(jk_stmt_col_int(s, 0), 1);
    assert_int_equal(jk_stmt_col_int(s, 1), 1);
    jk_stmt_finalize(s);
}

/* ---- PostgreSQL only ---- */

static const char sql_pg_kill_self[] = "SELECT pg_terminate_backend(pg_backend_pid())";

/* After the server dropped the connection (a restart, a failover), the next transaction
 * reconnects and the cached statements work again. */
static void pg_reconnects(void **state)
{
    struct fixture *f = *state;
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row;
    jk_log_set_level(JK_LOG_OFF); /* the failures below are expected */
    assert_int_equal(jk_conn_prepare(c, sql_pg_kill_self, &s), JK_OK);
    assert_int_not_equal(jk_stmt_step(s, &has_row), JK_OK);
    jk_stmt_reset(s);
    const struct note notes[] = {{601, "again", 5}};
    struct note_batch b = {notes, 1, JK_OK};
    jk_rc rc = jk_store_tx(f->st, note_batch_tx, &b);
    jk_log_set_level(JK_LOG_INFO);
    assert_int_equal(rc, JK_OK);
    char buf[16];
    assert_int_equal(note_get(f->st, 601, buf, sizeof buf), 5);
}

/* ---- both backends: bad configuration ---- */

/* A wrong URL is refused at open with a message, and the message never shows a password. */
static void bad_urls_are_refused(void **state)
{
    (void)state;
    jk_store *st = NULL;
    char err[256] = "";
    assert_int_equal(jk_store_open("mysql://db/x", &st, err, sizeof err), JK_EINVAL);
    assert_null(st);
    assert_string_not_equal(err, "");
    err[0] = 0;
    assert_int_equal(jk_store_open("sqlite:/nonexistent-dir/x/y.db", &st, err, sizeof err), JK_EDB);
    assert_string_not_equal(err, "");
    static const char *const urls[] = {
        "postgresql://jk:S3cretPw@127.0.0.1:1/jiankang",
        "postgresql://jk@127.0.0.1:1/jiankang?password=S3cretPw",
        "postgresql://jk:S3cretPw@[::1/jiankang", /* libpq quotes the URL in this error */
    };
    for (size_t i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        err[0] = 0;
        assert_int_equal(jk_store_open(urls[i], &st, err, sizeof err), JK_EDB);
        assert_string_not_equal(err, "");
        assert_null(strstr(err, "S3cretPw"));
    }
}

#define STORE_TESTS                                                                                \
    cmocka_unit_test(migrate_is_idempotent), cmocka_unit_test(text_round_trips_exactly),           \
        cmocka_unit_test(placeholders_and_integers), cmocka_unit_test(failed_tx_leaves_nothing),   \
        cmocka_unit_test(unique_violation_is_conflict),                                            \
        cmocka_unit_test(concurrent_tx_lose_nothing), cmocka_unit_test(async_tx_all_done),         \
        cmocka_unit_test(committed_is_visible_elsewhere), cmocka_unit_test(data_survives_reopen),  \
        cmocka_unit_test(resource_versions), cmocka_unit_test(once_statements),                    \
        cmocka_unit_test(once_statement_in_tx), cmocka_unit_test(collate_c_compares_code_points)

int main(void)
{
    const struct CMUnitTest common[] = {cmocka_unit_test(bad_urls_are_refused)};
    const struct CMUnitTest sqlite[] = {STORE_TESTS};
    const struct CMUnitTest pg[] = {STORE_TESTS, cmocka_unit_test(pg_reconnects)};
    int failed = cmocka_run_group_tests_name("store", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("store/sqlite", sqlite, sqlite_setup, sqlite_teardown);
    if (getenv("JK_TEST_PG_URL") && *getenv("JK_TEST_PG_URL"))
        failed += cmocka_run_group_tests_name("store/postgresql", pg, pg_setup, pg_teardown);
    else
        fprintf(stderr, "[  SKIPPED ] store/postgresql: set JK_TEST_PG_URL to run it"
                        " (tools/pg-test-cluster.sh start DIR prints one)\n");
    return failed ? 1 : 0;
}
