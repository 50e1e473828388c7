/* store.h - the database interface: one API, two backends (sqlite.c, pg.c).
 *
 * A jk_store is the database, shared by every thread. Each thread that reads uses its own
 * connection (jk_store_conn). Writes run as transaction functions handed to jk_store_tx or
 * jk_store_tx_async: the backend decides where they run. SQLite runs them on one writer
 * thread that puts concurrent transactions into one commit (group commit, each in its own
 * savepoint); PostgreSQL runs each in its own transaction. Either way a transaction is
 * reported done only when its commit is durable. SQL is written once with `?` placeholders
 * in the subset both engines accept; the backends translate placeholders. */
#ifndef JK_STORE_H
#define JK_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"

typedef struct jk_store jk_store;
typedef struct jk_conn jk_conn;
typedef struct jk_stmt jk_stmt;

/* Opens the database named by url: "sqlite:PATH" or "postgresql://..." (also
 * "postgres://..."). Does not migrate. On error writes a message into err (errlen bytes).
 * The caller owns *out and closes it with jk_store_close(). */
jk_rc jk_store_open(const char *url, jk_store **out, char *err, size_t errlen);

/* Waits for queued transactions, closes every connection and frees st. NULL is allowed. */
void jk_store_close(jk_store *st);

/* "sqlite" or "postgresql". */
const char *jk_store_backend(const jk_store *st);

/* Applies the numbered migrations not yet recorded; returns how many through *n_applied
 * (may be NULL). JK_EDB with a logged message on failure. */
jk_rc jk_store_migrate(jk_store *st, int *n_applied);

/* The calling thread's connection, opened on first use; NULL when it cannot be opened.
 * Owned by the store; valid until jk_store_close(). Use it for reads outside a transaction. */
jk_conn *jk_store_conn(jk_store *st);

/* A transaction body. It runs on some thread with connection c inside a transaction (or a
 * savepoint of a shared one); a non-zero rc undoes everything it did. */
typedef jk_rc (*jk_tx_fn)(jk_conn *c, void *arg);

/* Runs fn in a transaction and returns its rc once the commit is durable (or the rollback
 * done). JK_EDB when the commit itself fails. */
jk_rc jk_store_tx(jk_store *st, jk_tx_fn fn, void *arg);

/* Like jk_store_tx, but returns at once; done(done_arg, rc) is called later, possibly on
 * another thread, possibly before jk_store_tx_async returns. */
void jk_store_tx_async(jk_store *st, jk_tx_fn fn, void *arg, void (*done)(void *done_arg, jk_rc rc),
                       void *done_arg);

/* Prepared statements, cached per connection by the address of sql, which must therefore
 * be a string that lives as long as the store (a literal or a static table entry). The
 * statement is reset and its bindings cleared. Owned by the connection. */
jk_rc jk_conn_prepare(jk_conn *c, const char *sql, jk_stmt **out);

/* Prepares sql for one use, without caching it: for SQL built at run time (search). sql is
 * only read during the call. Bind, step and read columns as with jk_conn_prepare; the caller
 * owns *out and must release it with jk_stmt_finalize(). Parameters whose type the SQL does
 * not make obvious need a cast (`CAST(? AS BIGINT)`): PostgreSQL infers them from context.
 * JK_EDB when the SQL is refused: here on SQLite, at the first jk_stmt_step on PostgreSQL
 * (which sends text and parameters together, in one round trip). */
jk_rc jk_conn_prepare_once(jk_conn *c, const char *sql, jk_stmt **out);

/* Releases a statement made by jk_conn_prepare_once(). NULL is allowed. */
void jk_stmt_finalize(jk_stmt *s);

/* The backend of c's store: "sqlite" or "postgresql". */
const char *jk_conn_backend(jk_conn *c);

/* The backend's suffix that makes a text comparison or ORDER BY byte-wise (code point
 * order): "" on SQLite (its default), ` COLLATE "C"` on PostgreSQL, whatever the database's
 * collation. Written after a column: `norm COLLATE "C" >= ?`. Static. */
const char *jk_conn_collate_c(jk_conn *c);

/* Runs sql, which takes no parameters and returns no rows (DDL, BEGIN ...). */
jk_rc jk_conn_exec(jk_conn *c, const char *sql);

/* Bind parameter i (1-based). Text is not copied: p must stay valid until the statement is
 * reset. */
jk_rc jk_stmt_text_arg(jk_stmt *s, int i, const char *p, size_t n);
jk_rc jk_stmt_int_arg(jk_stmt *s, int i, int64_t v);
jk_rc jk_stmt_double_arg(jk_stmt *s, int i, double v);
jk_rc jk_stmt_null_arg(jk_stmt *s, int i);

/* Executes on the first call and moves to the next row on later calls. *has_row tells
 * whether a row is there. JK_ECONFLICT when a unique constraint was violated. */
jk_rc jk_stmt_step(jk_stmt *s, int *has_row);

/* Column i (0-based) of the current row. Text is valid until the next step or reset. */
const char *jk_stmt_col_text(jk_stmt *s, int i, size_t *len);
int64_t jk_stmt_col_int(jk_stmt *s, int i);
double jk_stmt_col_double(jk_stmt *s, int i);
int jk_stmt_col_is_null(jk_stmt *s, int i);

/* Number of rows the last INSERT/UPDATE/DELETE changed. */
int64_t jk_stmt_changes(jk_stmt *s);

/* Ends the statement's use: releases the row set and bindings. Safe to call twice. */
void jk_stmt_reset(jk_stmt *s);

/* Prepares sql (cached as with jk_conn_prepare), binds the arguments by types ('t' a text,
 * NULL for SQL NULL; 'i' an int64_t) and steps once. The caller reads the row (when
 * *has_row; has_row may be NULL) and resets *s (NULL when it could not be prepared). */
jk_rc jk_conn_query(jk_conn *c, const char *sql, jk_stmt **s, int *has_row, const char *types, ...);

/* jk_conn_query for a statement whose rows are not read (it is reset at once); *changes (may
 * be NULL) is the number of rows it changed. */
jk_rc jk_conn_run(jk_conn *c, const char *sql, int64_t *changes, const char *types, ...);

/* Column i of the current row as a NUL-terminated copy in arena a ("" for NULL); NULL when
 * out of memory. */
struct jk_arena;
const char *jk_stmt_col_dup(struct jk_arena *a, jk_stmt *s, int i);

/* The connection's last error message (static or owned by the connection). */
const char *jk_conn_errmsg(jk_conn *c);

#endif
