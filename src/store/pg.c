/* pg.c - the PostgreSQL backend: libpq, one connection per thread, each transaction run on
 * the calling thread's connection, statements prepared server-side once per connection. */
#include <libpq-fe.h>
#include <pthread.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "store/store_int.h"

#define PG_MAX_PARAMS 65535 /* the protocol's limit on parameters of one statement */

/* Parameter types whose binary input is the text itself (textrecv, varcharrecv, ...): text
 * bound to them is sent as (pointer, length) without copying. Values from pg_type.h. */
static const Oid pg_textlike_types[] = {
    25,   /* text */
    1043, /* varchar */
    1042, /* bpchar */
    19,   /* name */
    114,  /* json */
    705,  /* unknown */
};

struct pg_stmt {
    struct jk_stmt_base base;
    const char *sql; /* cache key */
    char *pg_sql;    /* sql with $1..$n placeholders */
    char name[24];   /* server-side name, unique in the connection */
    unsigned gen;    /* connection generation it was prepared in */
    int n_params;
    unsigned char *is_textlike; /* per parameter: text binds go in binary format */
    const char **values;        /* NULL: SQL NULL */
    int *lengths;
    int *formats;     /* 0 text, 1 binary */
    char **owned;     /* NUL-terminated copies we made of text for other types */
    char (*nums)[24]; /* integers as decimal text */
    PGresult *res;    /* set once executed, until reset */
    int is_once;      /* jk_conn_prepare_once: sent with its parameters on each step */
    int is_executed;
    int row, n_rows;
};

struct pg_conn {
    struct jk_conn_base base;
    PGconn *pg;
    struct jk_stmt_cache cache;
    unsigned n_named; /* statement names handed out */
    unsigned gen;     /* bumped when PQreset dropped the server-side statements */
    int in_tx;
    jk_rc tx_err;     /* first failure inside the current transaction */
    char errmsg[256]; /* last error, without DETAIL (it can hold row values) */
};

static void pg_notice(void *arg, const PGresult *res)
{
    (void)arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    int is_warning = sev && strcmp(sev, "WARNING") == 0;
    jk_log(is_warning ? JK_LOG_WARN : JK_LOG_DEBUG, "pg", "%s", msg ? msg : "(notice)");
}

/* Records a failed command's error in c->errmsg and maps it to a jk_rc. res may be NULL (no
 * memory, or the connection was lost). Only the primary message is kept: DETAIL repeats
 * row values ("Key (id)=(...) already exists"), and data exceptions (SQLSTATE class 22)
 * quote the offending input, so for them only the code is kept. */
static jk_rc pg_fail(struct pg_conn *c, const PGresult *res, const char *what)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    jk_rc rc = JK_EDB;
    if (state &&
        (strcmp(state, "23505") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
        rc = JK_ECONFLICT;
    if (state && strncmp(state, "22", 2) == 0) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed: data exception (SQLSTATE %s)", what,
                 state);
    } else if (msg) {
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed: %s (SQLSTATE %s)", what, msg,
                 state ? state : "?");
    } else {
        /* Connection-level text from libpq: no statement data in it. */
        const char *cm = PQerrorMessage(c->pg);
        size_t n = strcspn(cm, "\n");
        snprintf(c->errmsg, sizeof c->errmsg, "%s failed: %.*s", what, (int)n,
                 n ? cm : "no result from server");
    }
    if (rc == JK_ECONFLICT)
        jk_log(JK_LOG_DEBUG, "pg", "%s", c->errmsg);
    else
        jk_log_error("pg", "%s", c->errmsg);
    if (c->in_tx && !c->tx_err) c->tx_err = rc;
    return rc;
}

/* Runs sql that returns no rows we need; the result is checked and cleared. */
static jk_rc pg_run(struct pg_conn *c, const char *sql, const char *what)
{
    PGresult *res = PQexec(c->pg, sql);
    ExecStatusType es = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
    jk_rc rc = JK_OK;
    if (es != PGRES_COMMAND_OK && es != PGRES_TUPLES_OK && es != PGRES_EMPTY_QUERY)
        rc = pg_fail(c, res, what);
    PQclear(res);
    return rc;
}

/* Per-session settings, again after every reconnect. A commit must be durable before we
 * report it: turn synchronous_commit on if the server has it off; leave the other values
 * (local, remote_write, remote_apply) as configured, since all of them flush our WAL.
 * Requests are short: a parallel plan's worker start-up (milliseconds) costs more than it
 * saves, and a search page that walks an index in order (LIMIT 11) got one, 25 ms instead of
 * 2 (docs/internals/search.md, "Query plans"); analytics belong on a replica. */
static jk_rc pg_session_setup(struct pg_conn *c)
{
    PQsetNoticeReceiver(c->pg, pg_notice, NULL);
    if (PQsetClientEncoding(c->pg, "UTF8")) {
        snprintf(c->errmsg, sizeof c->errmsg, "cannot set client_encoding to UTF8");
        return JK_EDB;
    }
    return pg_run(c,
                  "SET client_min_messages = warning; SET max_parallel_workers_per_gather = 0;"
                  " SELECT set_config('synchronous_commit', 'on', false)"
                  " WHERE current_setting('synchronous_commit') = 'off'",
                  "session setup");
}

/* Brings a broken connection back once, outside any transaction. Server-side prepared
 * statements died with the old session: bumping gen makes each one prepare again. */
static jk_rc pg_ensure_conn(struct pg_conn *c)
{
    if (PQstatus(c->pg) == CONNECTION_OK) return JK_OK;
    if (c->in_tx) return JK_EDB;
    PQreset(c->pg);
    c->gen++;
    if (PQstatus(c->pg) != CONNECTION_OK) {
        const char *cm = PQerrorMessage(c->pg);
        snprintf(c->errmsg, sizeof c->errmsg, "reconnect failed: %.*s", (int)strcspn(cm, "\n"), cm);
        jk_log_error("pg", "%s", c->errmsg);
        return JK_EDB;
    }
    jk_log_warn("pg", "reconnected to the database after the connection broke");
    return pg_session_setup(c);
}

/* Replaces every occurrence of the n bytes at secret in s (NUL-terminated, in a buffer of
 * cap bytes) with "***", truncating s if it would not fit. */
static void redact(char *s, size_t cap, const char *secret, size_t n)
{
    if (!n) return;
    char *p = s;
    while ((p = memmem(p, strlen(p), secret, n)) != NULL) {
        size_t at = (size_t)(p - s), rest = strlen(p + n) + 1;
        if (at + 3 >= cap) {
            *p = 0;
            return;
        }
        if (at + 3 + rest > cap) rest = cap - at - 3;
        memmove(p + 3, p + n, rest);
        s[cap - 1] = 0;
        memcpy(p, "***", 3);
        p += 3;
    }
}

/* The connection failure message for err, without the password: from the URL's user info
 * ("user:secret@host"), its password= parameter, or what libpq parsed out of it (libpq
 * quotes the whole URL in some parse errors). */
static void pg_connect_error(const char *url, PGconn *pg, char *err, size_t errlen)
{
    const char *cm = pg ? PQerrorMessage(pg) : "out of memory";
    char msg[512];
    snprintf(msg, sizeof msg, "cannot connect to PostgreSQL: %s", cm);
    msg[strcspn(msg, "\n")] = 0;
    const char *scheme = strstr(url, "://");
    if (scheme) {
        const char *ui = scheme + 3, *end = ui + strcspn(ui, "/?#");
        const char *at = memchr(ui, '@', (size_t)(end - ui));
        const char *colon = at ? memchr(ui, ':', (size_t)(at - ui)) : NULL;
        if (colon) redact(msg, sizeof msg, colon + 1, (size_t)(at - colon - 1));
    }
    for (const char *q = strstr(url, "password="); q; q = strstr(q + 9, "password="))
        redact(msg, sizeof msg, q + 9, strcspn(q + 9, "&#"));
    PQconninfoOption *opts = PQconninfoParse(url, NULL);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        if (strcmp(o->keyword, "password") == 0 && o->val)
            redact(msg, sizeof msg, o->val, strlen(o->val));
    PQconninfoFree(opts);
    snprintf(err, errlen, "%s", msg);
}

static jk_rc pg_conn_open(jk_store *st, jk_conn **out, char *err, size_t errlen)
{
    struct pg_conn *c = calloc(1, sizeof *c);
    if (!c) return JK_ENOMEM;
    /* Our defaults come before the URL so that the URL can override them. */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "client_encoding",
                                "dbname", NULL};
    const char *const vals[] = {"10", "jiankang", "UTF8", st->target, NULL};
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
        pg_connect_error(st->target, c->pg, err, errlen);
        PQfinish(c->pg);
        free(c);
        return JK_EDB;
    }
    if (pg_session_setup(c)) {
        snprintf(err, errlen, "cannot set up the PostgreSQL session: %s", c->errmsg);
        PQfinish(c->pg);
        free(c);
        return JK_EDB;
    }
    jk_store_track_conn(st, &c->base);
    *out = (jk_conn *)c;
    return JK_OK;
}

static void stmt_clear(struct pg_stmt *s)
{
    PQclear(s->res);
    s->res = NULL;
    s->is_executed = 0;
    s->row = -1;
    s->n_rows = 0;
    for (int i = 0; i < s->n_params; i++) {
        free(s->owned[i]);
        s->owned[i] = NULL;
        s->values[i] = NULL;
        s->lengths[i] = 0;
        s->formats[i] = 0;
    }
}

static void stmt_free(struct pg_stmt *s)
{
    if (!s) return;
    PQclear(s->res);
    for (int i = 0; s->owned && i < s->n_params; i++)
        free(s->owned[i]);
    free(s->pg_sql);
    free(s->is_textlike);
    free(s->values);
    free(s->lengths);
    free(s->formats);
    free(s->owned);
    free(s->nums);
    free(s);
}

static void stmt_release(jk_stmt *s)
{
    stmt_free((struct pg_stmt *)s);
}

static void pg_conn_close(jk_conn *jc)
{
    struct pg_conn *c = (struct pg_conn *)jc;
    jk_stmt_cache_clear(&c->cache, stmt_release);
    PQfinish(c->pg);
    free(c);
}

static jk_rc pg_exec(jk_conn *jc, const char *sql)
{
    struct pg_conn *c = (struct pg_conn *)jc;
    jk_rc rc = pg_ensure_conn(c);
    return rc ? rc : pg_run(c, sql, "exec");
}

/* Copies sql with each `?` outside quotes and comments replaced by $1, $2 ... Returns a
 * malloc'ed string and the count, or NULL: no memory, or (*n_params = -1) too many. */
static char *translate_placeholders(const char *sql, int *n_params)
{
    size_t n = strlen(sql), n_marks = 0;
    for (const char *p = sql; *p; p++)
        n_marks += *p == '?';
    char *out = malloc(n + n_marks * 5 + 1), *w = out;
    if (!out) return NULL;
    int k = 0;
    const char *p = sql;
    while (*p) {
        if (*p == '\'' || *p == '"') {
            char q = *p;
            /* E'...' strings take backslash escapes; standard strings and identifiers only
             * double the quote, which this loop sees as two adjacent quoted runs. */
            int has_escapes = q == '\'' && p > sql && (p[-1] == 'E' || p[-1] == 'e');
            *w++ = *p++;
            while (*p && *p != q) {
                if (has_escapes && *p == '\\' && p[1]) *w++ = *p++;
                *w++ = *p++;
            }
            if (*p) *w++ = *p++;
        } else if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                *w++ = *p++;
        } else if (p[0] == '/' && p[1] == '*') {
            *w++ = *p++;
            *w++ = *p++;
            while (*p && !(p[0] == '*' && p[1] == '/'))
                *w++ = *p++;
            if (*p) {
                *w++ = *p++;
                *w++ = *p++;
            }
        } else if (*p == '?') {
            if (++k > PG_MAX_PARAMS) {
                *n_params = -1;
                free(out);
                return NULL;
            }
            w += snprintf(w, 7, "$%d", k);
            p++;
        } else {
            *w++ = *p++;
        }
    }
    *w = 0;
    *n_params = k;
    return out;
}

static int is_textlike(Oid t)
{
    for (size_t i = 0; i < sizeof pg_textlike_types / sizeof pg_textlike_types[0]; i++)
        if (pg_textlike_types[i] == t) return 1;
    return 0;
}

/* Prepares s on the server under its name and learns its parameter types. */
static jk_rc stmt_server_prepare(struct pg_conn *c, struct pg_stmt *s)
{
    PGresult *res = PQprepare(c->pg, s->name, s->pg_sql, 0, NULL);
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        jk_rc rc = pg_fail(c, res, "prepare");
        PQclear(res);
        return rc;
    }
    PQclear(res);
    res = PQdescribePrepared(c->pg, s->name);
    if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
        jk_rc rc = pg_fail(c, res, "describe");
        PQclear(res);
        return rc;
    }
    if (PQnparams(res) != s->n_params) {
        snprintf(c->errmsg, sizeof c->errmsg, "prepare: the server counts %d parameters, not %d",
                 PQnparams(res), s->n_params);
        jk_log_error("pg", "%s", c->errmsg);
        PQclear(res);
        return JK_EDB;
    }
    for (int i = 0; i < s->n_params; i++)
        s->is_textlike[i] = is_textlike(PQparamtype(res, i));
    PQclear(res);
    s->gen = c->gen;
    return JK_OK;
}

static jk_rc pg_prepare(jk_conn *jc, const char *sql, jk_stmt **out)
{
    struct pg_conn *c = (struct pg_conn *)jc;
    jk_rc rc = pg_ensure_conn(c);
    if (rc) return rc;
    struct pg_stmt *s = (struct pg_stmt *)jk_stmt_cache_find(&c->cache, sql);
    if (s) {
        stmt_clear(s);
        if (s->gen != c->gen && (rc = stmt_server_prepare(c, s))) return rc;
        *out = (jk_stmt *)s;
        return JK_OK;
    }
    if (!(s = calloc(1, sizeof *s))) return JK_ENOMEM;
    s->base.c = jc;
    s->sql = sql;
    s->row = -1;
    snprintf(s->name, sizeof s->name, "jk%u", c->n_named++);
    if (!(s->pg_sql = translate_placeholders(sql, &s->n_params))) {
        rc = s->n_params < 0 ? JK_ETOOBIG : JK_ENOMEM;
        if (rc == JK_ETOOBIG) jk_log_error("pg", "prepare: more than %d parameters", PG_MAX_PARAMS);
        free(s);
        return rc;
    }
    size_t np = s->n_params ? (size_t)s->n_params : 1;
    s->is_textlike = calloc(np, sizeof *s->is_textlike);
    s->values = calloc(np, sizeof *s->values);
    s->lengths = calloc(np, sizeof *s->lengths);
    s->formats = calloc(np, sizeof *s->formats);
    s->owned = calloc(np, sizeof *s->owned);
    s->nums = calloc(np, sizeof *s->nums);
    if (!s->is_textlike || !s->values || !s->lengths || !s->formats || !s->owned || !s->nums)
        rc = JK_ENOMEM;
    if (!rc) rc = stmt_server_prepare(c, s);
    if (!rc) rc = jk_stmt_cache_put(&c->cache, sql, (jk_stmt *)s);
    if (rc) {
        stmt_free(s); /* a statement prepared on the server stays there unused: harmless */
        return rc;
    }
    *out = (jk_stmt *)s;
    return JK_OK;
}

/* A statement that is not prepared on the server: each execution sends the SQL with its
 * parameters (PQexecParams, one round trip), every parameter as text for the server to type
 * from its context. */
static jk_rc pg_prepare_once(jk_conn *jc, const char *sql, jk_stmt **out)
{
    struct pg_conn *c = (struct pg_conn *)jc;
    jk_rc rc = pg_ensure_conn(c);
    if (rc) return rc;
    struct pg_stmt *s = calloc(1, sizeof *s);
    if (!s) return JK_ENOMEM;
    s->base.c = jc;
    s->sql = NULL;
    s->row = -1;
    s->is_once = 1;
    if (!(s->pg_sql = translate_placeholders(sql, &s->n_params))) {
        rc = s->n_params < 0 ? JK_ETOOBIG : JK_ENOMEM;
        if (rc == JK_ETOOBIG) jk_log_error("pg", "prepare: more than %d parameters", PG_MAX_PARAMS);
        free(s);
        return rc;
    }
    size_t np = s->n_params ? (size_t)s->n_params : 1;
    s->is_textlike = calloc(np, sizeof *s->is_textlike); /* all 0: text goes as text */
    s->values = calloc(np, sizeof *s->values);
    s->lengths = calloc(np, sizeof *s->lengths);
    s->formats = calloc(np, sizeof *s->formats);
    s->owned = calloc(np, sizeof *s->owned);
    s->nums = calloc(np, sizeof *s->nums);
    if (!s->is_textlike || !s->values || !s->lengths || !s->formats || !s->owned || !s->nums) {
        stmt_free(s);
        return JK_ENOMEM;
    }
    *out = (jk_stmt *)s;
    return JK_OK;
}

static void pg_finalize(jk_stmt *js)
{
    stmt_free((struct pg_stmt *)js);
}

/* The slot for parameter i (1-based), its old copy freed; NULL when i is out of range. */
static struct pg_stmt *param_slot(jk_stmt *js, int i)
{
    struct pg_stmt *s = (struct pg_stmt *)js;
    if (i < 1 || i > s->n_params) {
        jk_log_error("pg", "bind: parameter %d of a statement with %d", i, s->n_params);
        return NULL;
    }
    free(s->owned[i - 1]);
    s->owned[i - 1] = NULL;
    return s;
}

static jk_rc pg_text_arg(jk_stmt *js, int i, const char *p, size_t n)
{
    struct pg_stmt *s = param_slot(js, i);
    if (!s) return JK_EDB;
    if (n > INT_MAX) return JK_ETOOBIG;
    int k = i - 1;
    if (s->is_textlike[k]) {
        s->values[k] = p ? p : "";
        s->lengths[k] = (int)n;
        s->formats[k] = 1;
        return JK_OK;
    }
    /* Another type (integer, timestamp ...) parses text input, which must end in NUL. */
    if (p && memchr(p, 0, n)) return JK_EINVAL;
    char *copy = malloc(n + 1);
    if (!copy) return JK_ENOMEM;
    if (n) memcpy(copy, p, n);
    copy[n] = 0;
    s->owned[k] = copy;
    s->values[k] = copy;
    s->lengths[k] = (int)n;
    s->formats[k] = 0;
    return JK_OK;
}

static jk_rc pg_int_arg(jk_stmt *js, int i, int64_t v)
{
    struct pg_stmt *s = param_slot(js, i);
    if (!s) return JK_EDB;
    int k = i - 1;
    snprintf(s->nums[k], sizeof s->nums[k], "%lld", (long long)v);
    s->values[k] = s->nums[k];
    s->lengths[k] = 0;
    s->formats[k] = 0;
    return JK_OK;
}

static jk_rc pg_double_arg(jk_stmt *js, int i, double v)
{
    struct pg_stmt *s = param_slot(js, i);
    if (!s) return JK_EDB;
    int k = i - 1;
    snprintf(s->nums[k], sizeof s->nums[k], "%.17g", v); /* exact round trip */
    s->values[k] = s->nums[k];
    s->lengths[k] = 0;
    s->formats[k] = 0;
    return JK_OK;
}

static jk_rc pg_null_arg(jk_stmt *js, int i)
{
    struct pg_stmt *s = param_slot(js, i);
    if (!s) return JK_EDB;
    s->values[i - 1] = NULL;
    return JK_OK;
}

static jk_rc pg_step(jk_stmt *js, int *has_row)
{
    struct pg_stmt *s = (struct pg_stmt *)js;
    struct pg_conn *c = (struct pg_conn *)s->base.c;
    *has_row = 0;
    if (!s->is_executed) {
        jk_rc rc;
        s->is_executed = 1;
        if (s->is_once) {
            s->res = PQexecParams(c->pg, s->pg_sql, s->n_params, NULL, s->values, s->lengths,
                                  s->formats, 0);
        } else {
            if (s->gen != c->gen && (rc = stmt_server_prepare(c, s))) return rc;
            s->res =
                PQexecPrepared(c->pg, s->name, s->n_params, s->values, s->lengths, s->formats, 0);
        }
        ExecStatusType es = s->res ? PQresultStatus(s->res) : PGRES_FATAL_ERROR;
        if (es == PGRES_TUPLES_OK) {
            s->n_rows = PQntuples(s->res);
        } else if (es != PGRES_COMMAND_OK) {
            rc = pg_fail(c, s->res, "statement");
            PQclear(s->res);
            s->res = NULL;
            return rc;
        }
    }
    if (s->row < s->n_rows) s->row++;
    *has_row = s->row < s->n_rows;
    return JK_OK;
}

/* Whether row s->row, column i exists and is not NULL. */
static int has_value(struct pg_stmt *s, int i)
{
    return s->res && s->row >= 0 && s->row < s->n_rows && i >= 0 && i < PQnfields(s->res) &&
           !PQgetisnull(s->res, s->row, i);
}

static const char *pg_col_text(jk_stmt *js, int i, size_t *len)
{
    struct pg_stmt *s = (struct pg_stmt *)js;
    if (!has_value(s, i)) {
        if (len) *len = 0;
        return NULL; /* as SQLite does for NULL */
    }
    if (len) *len = (size_t)PQgetlength(s->res, s->row, i);
    return PQgetvalue(s->res, s->row, i);
}

static int64_t pg_col_int(jk_stmt *js, int i)
{
    struct pg_stmt *s = (struct pg_stmt *)js;
    if (!has_value(s, i)) return 0;
    const char *v = PQgetvalue(s->res, s->row, i);
    if (v[0] == 't' && !v[1]) return 1; /* boolean */
    if (v[0] == 'f' && !v[1]) return 0;
    return strtoll(v, NULL, 10);
}

static double pg_col_double(jk_stmt *js, int i)
{
    struct pg_stmt *s = (struct pg_stmt *)js;
    return has_value(s, i) ? strtod(PQgetvalue(s->res, s->row, i), NULL) : 0;
}

static int pg_col_is_null(jk_stmt *js, int i)
{
    return !has_value((struct pg_stmt *)js, i);
}

static int64_t pg_changes(jk_stmt *js)
{
    struct pg_stmt *s = (struct pg_stmt *)js;
    return s->res ? strtoll(PQcmdTuples(s->res), NULL, 10) : 0;
}

static void pg_reset(jk_stmt *js)
{
    stmt_clear((struct pg_stmt *)js);
}

static const char *pg_errmsg(jk_conn *jc)
{
    struct pg_conn *c = (struct pg_conn *)jc;
    return c->errmsg[0] ? c->errmsg : "no error";
}

/* Transactions run on a small pool of threads, each with its own connection, so a request
 * thread never waits for the database and PostgreSQL sees several transactions at once (its
 * WAL flushes group their commits). */
#define PG_WRITERS 8

struct pg_job {
    jk_tx_fn fn;
    void *arg;
    void (*done)(void *, jk_rc);
    void *done_arg;
    struct pg_job *next;
};

struct pg_pool {
    jk_store *st;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct pg_job *head, *tail;
    int is_stopping;
    int n_threads;
    pthread_t threads[PG_WRITERS];
};

static void pg_run_tx(struct pg_conn *c, jk_tx_fn fn, void *arg, void (*done)(void *, jk_rc),
                      void *done_arg);

static void *pool_main(void *arg)
{
    struct pg_pool *pool = arg;
    for (;;) {
        pthread_mutex_lock(&pool->lock);
        while (!pool->head && !pool->is_stopping)
            pthread_cond_wait(&pool->cond, &pool->lock);
        struct pg_job *j = pool->head;
        if (j) {
            pool->head = j->next;
            if (!pool->head) pool->tail = NULL;
        }
        pthread_mutex_unlock(&pool->lock);
        if (!j) return NULL;
        pg_run_tx((struct pg_conn *)jk_store_conn(pool->st), j->fn, j->arg, j->done, j->done_arg);
        free(j);
    }
}

static jk_rc pg_start(jk_store *st)
{
    if (!PQisthreadsafe()) {
        jk_log_error("pg", "this libpq is not thread-safe");
        return JK_EDB;
    }
    struct pg_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return JK_ENOMEM;
    pool->st = st;
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->cond, NULL);
    st->be_state = pool;
    while (pool->n_threads < PG_WRITERS &&
           !pthread_create(&pool->threads[pool->n_threads], NULL, pool_main, pool))
        pool->n_threads++;
    return pool->n_threads ? JK_OK : JK_EINTERNAL;
}

/* Lets queued transactions finish, then stops the pool. */
static void pg_stop(jk_store *st)
{
    struct pg_pool *pool = st->be_state;
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    pool->is_stopping = 1;
    pthread_cond_broadcast(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 0; i < pool->n_threads; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool);
    st->be_state = NULL;
}

/* COMMIT, or ROLLBACK when rc says so. A COMMIT of a transaction that a failed statement
 * aborted is answered with ROLLBACK by the server; that is a failure too. */
static jk_rc pg_finish_tx(struct pg_conn *c, jk_rc rc)
{
    if (!rc && PQtransactionStatus(c->pg) == PQTRANS_INERROR) {
        rc = c->tx_err ? c->tx_err : JK_EDB;
        jk_log_error("pg", "transaction body returned OK after a failed statement: rolled back");
    }
    if (!rc) {
        PGresult *res = PQexec(c->pg, "COMMIT");
        if (!res || PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = pg_fail(c, res, "commit");
        else if (strcmp(PQcmdStatus(res), "COMMIT") != 0)
            rc = c->tx_err ? c->tx_err : JK_EDB;
        PQclear(res);
        if (!rc) return JK_OK;
    }
    if (PQstatus(c->pg) == CONNECTION_OK && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        pg_run(c, "ROLLBACK", "rollback");
    return rc;
}

/* Runs one transaction on c (a pool thread's connection) and reports it. */
static void pg_run_tx(struct pg_conn *c, jk_tx_fn fn, void *arg, void (*done)(void *, jk_rc),
                      void *done_arg)
{
    jk_rc rc = c ? pg_ensure_conn(c) : JK_EDB;
    if (!rc) rc = pg_run(c, "BEGIN", "begin");
    /* A server restart is noticed only when the connection is next used: nothing has run
     * yet, so reconnect once and begin again. */
    if (c && rc == JK_EDB && PQstatus(c->pg) == CONNECTION_BAD && !(rc = pg_ensure_conn(c)))
        rc = pg_run(c, "BEGIN", "begin");
    if (!rc) {
        c->in_tx = 1;
        c->tx_err = JK_OK;
        rc = fn((jk_conn *)c, arg);
        rc = pg_finish_tx(c, rc);
        c->in_tx = 0;
    }
    done(done_arg, rc);
}

static void pg_tx_async(jk_store *st, jk_tx_fn fn, void *arg, void (*done)(void *, jk_rc),
                        void *done_arg)
{
    struct pg_pool *pool = st->be_state;
    struct pg_conn *self = pthread_getspecific(st->conn_key);
    if (self && self->in_tx) {
        /* Called from inside a transaction body: it would wait for a pool thread that may be
         * the caller itself. A programming error. */
        jk_log_error("pg", "a transaction was started inside another one");
        done(done_arg, JK_EINTERNAL);
        return;
    }
    struct pg_job *j = malloc(sizeof *j);
    if (!j) {
        done(done_arg, JK_ENOMEM);
        return;
    }
    *j = (struct pg_job){fn, arg, done, done_arg, NULL};
    pthread_mutex_lock(&pool->lock);
    if (pool->tail)
        pool->tail->next = j;
    else
        pool->head = j;
    pool->tail = j;
    pthread_cond_signal(&pool->cond);
    pthread_mutex_unlock(&pool->lock);
}

const struct jk_backend jk_pg_backend = {
    .name = "postgresql",
    .serial_pk = "BIGSERIAL PRIMARY KEY",
    .migrate_lock = "SELECT pg_advisory_xact_lock(7243311)", /* any fixed key of ours */
    .collate_c = " COLLATE \"C\"",
    .conn_open = pg_conn_open,
    .conn_close = pg_conn_close,
    .start = pg_start,
    .stop = pg_stop,
    .tx_async = pg_tx_async,
    .prepare = pg_prepare,
    .prepare_once = pg_prepare_once,
    .finalize = pg_finalize,
    .exec = pg_exec,
    .text_arg = pg_text_arg,
    .int_arg = pg_int_arg,
    .double_arg = pg_double_arg,
    .null_arg = pg_null_arg,
    .step = pg_step,
    .col_text = pg_col_text,
    .col_int = pg_col_int,
    .col_double = pg_col_double,
    .col_is_null = pg_col_is_null,
    .changes = pg_changes,
    .reset = pg_reset,
    .errmsg = pg_errmsg,
};
