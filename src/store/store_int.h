/* store_int.h - what a backend provides to store.c. */
#ifndef JK_STORE_INT_H
#define JK_STORE_INT_H

#include <pthread.h>

#include "store/store.h"

struct jk_backend {
    const char *name;
    /* SQL fragments that differ between engines (see migrations in store.c). */
    const char *serial_pk;    /* an auto-increment 64-bit primary key column type */
    const char *migrate_lock; /* SQL that keeps two processes from migrating at once */
    const char *collate_c;    /* "" or ` COLLATE "C"`: compare text byte by byte (code points) */
    /* Opens a new connection to the store's database. */
    jk_rc (*conn_open)(jk_store *st, jk_conn **out, char *err, size_t errlen);
    void (*conn_close)(jk_conn *c);
    /* Starts the backend's shared machinery (SQLite: the group-commit writer). */
    jk_rc (*start)(jk_store *st);
    void (*stop)(jk_store *st);
    void (*tx_async)(jk_store *st, jk_tx_fn fn, void *arg, void (*done)(void *, jk_rc),
                     void *done_arg);
    jk_rc (*prepare)(jk_conn *c, const char *sql, jk_stmt **out);
    jk_rc (*prepare_once)(jk_conn *c, const char *sql, jk_stmt **out); /* not cached */
    void (*finalize)(jk_stmt *s);                                      /* of prepare_once */
    jk_rc (*exec)(jk_conn *c, const char *sql);
    jk_rc (*text_arg)(jk_stmt *s, int i, const char *p, size_t n);
    jk_rc (*int_arg)(jk_stmt *s, int i, int64_t v);
    jk_rc (*double_arg)(jk_stmt *s, int i, double v);
    jk_rc (*null_arg)(jk_stmt *s, int i);
    jk_rc (*step)(jk_stmt *s, int *has_row);
    const char *(*col_text)(jk_stmt *s, int i, size_t *len);
    int64_t (*col_int)(jk_stmt *s, int i);
    double (*col_double)(jk_stmt *s, int i);
    int (*col_is_null)(jk_stmt *s, int i);
    int64_t (*changes)(jk_stmt *s);
    void (*reset)(jk_stmt *s);
    const char *(*errmsg)(jk_conn *c);
};

/* Every connection starts with this header so store.c can find its owner. */
struct jk_conn_base {
    jk_store *st;
    struct jk_conn_base *next_open; /* all connections of the store, for closing */
};

struct jk_store {
    const struct jk_backend *be;
    char *target;           /* file path (SQLite) or connection string (PostgreSQL) */
    pthread_key_t conn_key; /* the calling thread's connection */
    pthread_mutex_t conns_lock;
    struct jk_conn_base *conns;
    void *be_state; /* the backend's shared state */
};

/* Every statement starts with this header. */
struct jk_stmt_base {
    jk_conn *c;
};

/* Prepared statements of one connection, by the address of their SQL text (open addressing
 * on the pointer). Both backends keep one per connection. */
struct jk_stmt_cache {
    struct jk_stmt_slot {
        const char *sql;
        jk_stmt *stmt;
    } * slots;
    size_t cap, n;
};

/* The statement cached for sql, or NULL. */
jk_stmt *jk_stmt_cache_find(const struct jk_stmt_cache *k, const char *sql);

/* Caches stmt for sql. JK_ENOMEM when the table cannot grow. */
jk_rc jk_stmt_cache_put(struct jk_stmt_cache *k, const char *sql, jk_stmt *stmt);

/* Calls release on every cached statement and frees the table. */
void jk_stmt_cache_clear(struct jk_stmt_cache *k, void (*release)(jk_stmt *));

/* Backends call this for every connection they open, so the store can close it. */
void jk_store_track_conn(jk_store *st, struct jk_conn_base *b);

extern const struct jk_backend jk_sqlite_backend;
extern const struct jk_backend jk_pg_backend;

/* Opens a connection not bound to any thread (for a backend's own threads). Closed with the
 * store. */
jk_conn *jk_store_conn_new(jk_store *st);

#endif
