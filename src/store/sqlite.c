/* sqlite.c - the embedded SQLite backend: WAL, synchronous=FULL, one connection per thread,
 * and a single writer thread that commits concurrent transactions together. */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "store/store_int.h"

#define SQ_MAX_BATCH 512 /* transactions in one group commit */

struct sq_stmt {
    struct jk_stmt_base base;
    sqlite3_stmt *st;
    const char *sql; /* cache key */
};

struct sq_conn {
    struct jk_conn_base base;
    sqlite3 *db;
    struct jk_stmt_cache cache;
};

struct sq_job {
    jk_tx_fn fn;
    void *arg;
    void (*done)(void *, jk_rc);
    void *done_arg;
    jk_rc rc;
    struct sq_job *next;
};

struct sq_writer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct sq_job *head, *tail;
    int is_stopping;
    struct sq_conn *conn;
};

static jk_rc sq_exec(jk_conn *c, const char *sql);

static void sq_global_init(void)
{
    /* Memory statistics take a process-wide mutex on every allocation; we never read them. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    /* Each transaction of a group commit runs in a savepoint, whose journal holds the
     * original of every page the transaction changes. Past 64 KiB (SQLite's default) that
     * journal goes to a temporary file, one pwrite per page: a booking or a Patient with its
     * index rows changes more than 16 pages. It stays in memory (its size is bounded by the
     * transaction's own changes); a spill threshold of a few MiB made a large import's
     * savepoints fail with SQLITE_FULL when the journal reached it. */
    sqlite3_config(SQLITE_CONFIG_STMTJRNL_SPILL, -1);
}

static jk_rc sq_conn_open(jk_store *st, jk_conn **out, char *err, size_t errlen)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sq_global_init);
    struct sq_conn *c = calloc(1, sizeof *c);
    if (!c) return JK_ENOMEM;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(st->target, &c->db, flags, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot open SQLite database '%s': %s", st->target,
                 c->db ? sqlite3_errmsg(c->db) : "out of memory");
        sqlite3_close(c->db);
        free(c);
        return JK_EDB;
    }
    sqlite3_busy_timeout(c->db, 10000);
    /* WAL lets readers run beside the writer; FULL makes an acknowledged commit durable. */
    if (sq_exec((jk_conn *)c, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                              " PRAGMA foreign_keys=ON; PRAGMA cache_size=-16000")) {
        snprintf(err, errlen, "cannot set up SQLite database '%s': %s", st->target,
                 sqlite3_errmsg(c->db));
        sqlite3_close(c->db);
        free(c);
        return JK_EDB;
    }
    jk_store_track_conn(st, &c->base);
    *out = (jk_conn *)c;
    return JK_OK;
}

static void stmt_release(jk_stmt *js)
{
    struct sq_stmt *s = (struct sq_stmt *)js;
    sqlite3_finalize(s->st);
    free(s);
}

static void sq_conn_close(jk_conn *jc)
{
    struct sq_conn *c = (struct sq_conn *)jc;
    jk_stmt_cache_clear(&c->cache, stmt_release);
    sqlite3_close(c->db);
    free(c);
}

static jk_rc sq_exec(jk_conn *jc, const char *sql)
{
    struct sq_conn *c = (struct sq_conn *)jc;
    char *msg = NULL;
    int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        jk_log_error("sqlite", "%s", msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return (rc & 0xff) == SQLITE_CONSTRAINT ? JK_ECONFLICT : JK_EDB;
    }
    return JK_OK;
}

static jk_rc sq_prepare(jk_conn *jc, const char *sql, jk_stmt **out)
{
    struct sq_conn *c = (struct sq_conn *)jc;
    struct sq_stmt *s = (struct sq_stmt *)jk_stmt_cache_find(&c->cache, sql);
    if (s) {
        sqlite3_reset(s->st);
        sqlite3_clear_bindings(s->st);
        *out = (jk_stmt *)s;
        return JK_OK;
    }
    s = calloc(1, sizeof *s);
    if (!s) return JK_ENOMEM;
    s->base.c = jc;
    s->sql = sql;
    if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->st, NULL) != SQLITE_OK) {
        jk_log_error("sqlite", "prepare failed: %s", sqlite3_errmsg(c->db));
        free(s);
        return JK_EDB;
    }
    jk_rc rc = jk_stmt_cache_put(&c->cache, sql, (jk_stmt *)s);
    if (rc) {
        stmt_release((jk_stmt *)s);
        return rc;
    }
    *out = (jk_stmt *)s;
    return JK_OK;
}

static jk_rc sq_prepare_once(jk_conn *jc, const char *sql, jk_stmt **out)
{
    struct sq_conn *c = (struct sq_conn *)jc;
    struct sq_stmt *s = calloc(1, sizeof *s);
    if (!s) return JK_ENOMEM;
    s->base.c = jc;
    if (sqlite3_prepare_v3(c->db, sql, -1, 0, &s->st, NULL) != SQLITE_OK) {
        jk_log_error("sqlite", "prepare failed: %s", sqlite3_errmsg(c->db));
        free(s);
        return JK_EDB;
    }
    *out = (jk_stmt *)s;
    return JK_OK;
}

static void sq_finalize(jk_stmt *js)
{
    struct sq_stmt *s = (struct sq_stmt *)js;
    sqlite3_finalize(s->st);
    free(s);
}

static jk_rc bind_rc(int rc)
{
    return rc == SQLITE_OK ? JK_OK : rc == SQLITE_TOOBIG ? JK_ETOOBIG : JK_EDB;
}

static jk_rc sq_text_arg(jk_stmt *js, int i, const char *p, size_t n)
{
    struct sq_stmt *s = (struct sq_stmt *)js;
    return bind_rc(sqlite3_bind_text64(s->st, i, p ? p : "", n, SQLITE_STATIC, SQLITE_UTF8));
}

static jk_rc sq_int_arg(jk_stmt *js, int i, int64_t v)
{
    return bind_rc(sqlite3_bind_int64(((struct sq_stmt *)js)->st, i, v));
}

static jk_rc sq_double_arg(jk_stmt *js, int i, double v)
{
    return bind_rc(sqlite3_bind_double(((struct sq_stmt *)js)->st, i, v));
}

static jk_rc sq_null_arg(jk_stmt *js, int i)
{
    return bind_rc(sqlite3_bind_null(((struct sq_stmt *)js)->st, i));
}

static jk_rc sq_step(jk_stmt *js, int *has_row)
{
    struct sq_stmt *s = (struct sq_stmt *)js;
    int rc = sqlite3_step(s->st);
    *has_row = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) return JK_OK;
    if ((rc & 0xff) == SQLITE_CONSTRAINT) return JK_ECONFLICT;
    jk_log_error("sqlite", "step failed: %s", sqlite3_errmsg(sqlite3_db_handle(s->st)));
    return JK_EDB;
}

static const char *sq_col_text(jk_stmt *js, int i, size_t *len)
{
    sqlite3_stmt *st = ((struct sq_stmt *)js)->st;
    const char *p = (const char *)sqlite3_column_text(st, i);
    if (len) *len = (size_t)sqlite3_column_bytes(st, i);
    return p;
}

static int64_t sq_col_int(jk_stmt *js, int i)
{
    return sqlite3_column_int64(((struct sq_stmt *)js)->st, i);
}

static double sq_col_double(jk_stmt *js, int i)
{
    return sqlite3_column_double(((struct sq_stmt *)js)->st, i);
}

static int sq_col_is_null(jk_stmt *js, int i)
{
    return sqlite3_column_type(((struct sq_stmt *)js)->st, i) == SQLITE_NULL;
}

static int64_t sq_changes(jk_stmt *js)
{
    return sqlite3_changes64(sqlite3_db_handle(((struct sq_stmt *)js)->st));
}

static void sq_reset(jk_stmt *js)
{
    struct sq_stmt *s = (struct sq_stmt *)js;
    sqlite3_reset(s->st);
    sqlite3_clear_bindings(s->st);
}

static const char *sq_errmsg(jk_conn *jc)
{
    return sqlite3_errmsg(((struct sq_conn *)jc)->db);
}

/* Runs one cached statement that returns no rows (transaction control in the writer). */
static jk_rc sq_run(jk_conn *c, const char *sql)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc = sq_prepare(c, sql, &s);
    if (rc) return rc;
    rc = sq_step(s, &has_row);
    sq_reset(s);
    return rc;
}

static const char sql_begin[] = "BEGIN IMMEDIATE", sql_commit[] = "COMMIT",
                  sql_rollback[] = "ROLLBACK", sql_savepoint[] = "SAVEPOINT jk_tx",
                  sql_rollback_to[] = "ROLLBACK TO jk_tx", sql_release[] = "RELEASE jk_tx";

/* One group commit: every job in its own savepoint, one COMMIT for all. */
static void writer_run_batch(struct sq_writer *w, struct sq_job *batch)
{
    jk_conn *c = (jk_conn *)w->conn;
    jk_rc brc = sq_run(c, sql_begin);
    for (struct sq_job *j = batch; j; j = j->next) {
        if (brc) {
            j->rc = brc;
            continue;
        }
        if ((j->rc = sq_run(c, sql_savepoint))) continue;
        j->rc = j->fn(c, j->arg);
        if (j->rc && sq_run(c, sql_rollback_to)) brc = JK_EDB;
        if (sq_run(c, sql_release)) brc = JK_EDB;
    }
    if (!brc) brc = sq_run(c, sql_commit);
    if (brc) {
        sq_run(c, sql_rollback);
        for (struct sq_job *j = batch; j; j = j->next)
            if (!j->rc) j->rc = brc;
    }
    while (batch) {
        struct sq_job *next = batch->next; /* done() may free the job's memory */
        batch->done(batch->done_arg, batch->rc);
        free(batch);
        batch = next;
    }
}

static void *writer_main(void *arg)
{
    struct sq_writer *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->is_stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->head) {
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        struct sq_job *batch = w->head, *last = batch;
        for (int n = 1; n < SQ_MAX_BATCH && last->next; n++)
            last = last->next;
        w->head = last->next;
        if (!w->head) w->tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&w->lock);
        writer_run_batch(w, batch);
    }
}

static jk_rc sq_start(jk_store *st)
{
    struct sq_writer *w = calloc(1, sizeof *w);
    if (!w) return JK_ENOMEM;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->conn = (struct sq_conn *)jk_store_conn_new(st);
    if (!w->conn || pthread_create(&w->thread, NULL, writer_main, w)) {
        free(w);
        return JK_EDB;
    }
    st->be_state = w;
    return JK_OK;
}

static void sq_stop(jk_store *st)
{
    struct sq_writer *w = st->be_state;
    if (!w) return;
    pthread_mutex_lock(&w->lock);
    w->is_stopping = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w);
    st->be_state = NULL;
}

static void sq_tx_async(jk_store *st, jk_tx_fn fn, void *arg, void (*done)(void *, jk_rc),
                        void *done_arg)
{
    struct sq_writer *w = st->be_state;
    struct sq_job *j = malloc(sizeof *j);
    if (!j) {
        done(done_arg, JK_ENOMEM);
        return;
    }
    *j = (struct sq_job){fn, arg, done, done_arg, JK_OK, NULL};
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

const struct jk_backend jk_sqlite_backend = {
    .name = "sqlite",
    .serial_pk = "INTEGER PRIMARY KEY",
    .migrate_lock = NULL, /* the writer thread already serialises every transaction */
    .collate_c = "",      /* BINARY, the default, compares bytes */
    .conn_open = sq_conn_open,
    .conn_close = sq_conn_close,
    .start = sq_start,
    .stop = sq_stop,
    .tx_async = sq_tx_async,
    .prepare = sq_prepare,
    .prepare_once = sq_prepare_once,
    .finalize = sq_finalize,
    .exec = sq_exec,
    .text_arg = sq_text_arg,
    .int_arg = sq_int_arg,
    .double_arg = sq_double_arg,
    .null_arg = sq_null_arg,
    .step = sq_step,
    .col_text = sq_col_text,
    .col_int = sq_col_int,
    .col_double = sq_col_double,
    .col_is_null = sq_col_is_null,
    .changes = sq_changes,
    .reset = sq_reset,
    .errmsg = sq_errmsg,
};
