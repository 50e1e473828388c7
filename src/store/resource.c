/* resource.c - SQL for versioned resources, written once for both backends. */
#include "store/resource.h"

#include <string.h>

#include "core/arena.h"

#define RES_COLS "seq, type, id, version, last_updated, deleted, method, body"

static const char sql_read[] = "SELECT " RES_COLS " FROM resource_version"
                               " WHERE type = ? AND id = ? ORDER BY version DESC LIMIT 1";
static const char sql_vread[] = "SELECT " RES_COLS " FROM resource_version"
                                " WHERE type = ? AND id = ? AND version = ?";
static const char sql_current[] = "SELECT version, deleted FROM resource_version"
                                  " WHERE type = ? AND id = ? ORDER BY version DESC LIMIT 1";
static const char sql_insert[] =
    "INSERT INTO resource_version (type, id, version, last_updated, deleted, method, body,"
    " is_current) VALUES (?, ?, ?, ?, ?, ?, ?, 1)";
static const char sql_not_current[] = "UPDATE resource_version SET is_current = 0"
                                      " WHERE type = ? AND id = ? AND is_current = 1";

/* Per kind: the statement that deletes a resource's rows and the one that inserts a row. */
static const struct {
    const char *del, *ins;
} idx_sql[] = {
    [JK_IDX_STRING] = {"DELETE FROM idx_string WHERE type = ? AND id = ?",
                       "INSERT INTO idx_string (type, id, param, norm, exact)"
                       " VALUES (?, ?, ?, ?, ?)"},
    [JK_IDX_TOKEN] = {"DELETE FROM idx_token WHERE type = ? AND id = ?",
                      "INSERT INTO idx_token (type, id, param, system, code, text)"
                      " VALUES (?, ?, ?, ?, ?, ?)"},
    [JK_IDX_DATE] = {"DELETE FROM idx_date WHERE type = ? AND id = ?",
                     "INSERT INTO idx_date (type, id, param, lo, hi) VALUES (?, ?, ?, ?, ?)"},
    [JK_IDX_NUMBER] = {"DELETE FROM idx_number WHERE type = ? AND id = ?",
                       "INSERT INTO idx_number (type, id, param, lo, hi) VALUES (?, ?, ?, ?, ?)"},
    [JK_IDX_QUANTITY] = {"DELETE FROM idx_quantity WHERE type = ? AND id = ?",
                         "INSERT INTO idx_quantity (type, id, param, system, code, lo, hi)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)"},
    [JK_IDX_REFERENCE] = {"DELETE FROM idx_reference WHERE type = ? AND id = ?",
                          "INSERT INTO idx_reference (type, id, param, target_type, target_id,"
                          " url) VALUES (?, ?, ?, ?, ?, ?)"},
    [JK_IDX_URI] = {"DELETE FROM idx_uri WHERE type = ? AND id = ?",
                    "INSERT INTO idx_uri (type, id, param, value) VALUES (?, ?, ?, ?)"},
    [JK_IDX_COMPOSITE] = {"DELETE FROM idx_composite WHERE type = ? AND id = ?",
                          "INSERT INTO idx_composite (type, id, param, system1, code1, system2,"
                          " code2, lo2, hi2, text2) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"},
};

#define N_IDX_KINDS (sizeof idx_sql / sizeof idx_sql[0])
static const char sql_tok_find[] = "SELECT DISTINCT id FROM idx_token"
                                   " WHERE type = ? AND param = ? AND code = ? ORDER BY id";
static const char sql_tok_find_sys[] =
    "SELECT DISTINCT id FROM idx_token"
    " WHERE type = ? AND param = ? AND code = ? AND system = ? ORDER BY id";

/* History queries, by scope, with and without the two bounds: a table over string pasting. */
#define HIST(where)                                                                                \
    "SELECT " RES_COLS " FROM resource_version WHERE " where " AND seq < ? AND last_updated >= ?"  \
    " ORDER BY seq DESC LIMIT ?"
static const char sql_hist_instance[] = HIST("type = ? AND id = ?");
static const char sql_hist_type[] = HIST("type = ?");
static const char sql_hist_system[] = HIST("1 = 1");

static jk_rc row_to_res(jk_stmt *s, struct jk_arena *a, struct jk_res *r)
{
    size_t len;
    const char *p;
    memset(r, 0, sizeof *r);
    r->seq = jk_stmt_col_int(s, 0);
    p = jk_stmt_col_text(s, 1, &len);
    r->type = jk_arena_strndup(a, p, len);
    p = jk_stmt_col_text(s, 2, &len);
    r->id = jk_arena_strndup(a, p, len);
    r->version = jk_stmt_col_int(s, 3);
    p = jk_stmt_col_text(s, 4, &len);
    r->last_updated = jk_arena_strndup(a, p, len);
    r->is_deleted = jk_stmt_col_int(s, 5) != 0;
    p = jk_stmt_col_text(s, 6, &len);
    r->method = jk_arena_strndup(a, p, len);
    if (!jk_stmt_col_is_null(s, 7)) {
        p = jk_stmt_col_text(s, 7, &len);
        r->body = jk_arena_strndup(a, p, len);
        r->body_len = len;
        if (!r->body) return JK_ENOMEM;
    }
    return r->type && r->id && r->last_updated && r->method ? JK_OK : JK_ENOMEM;
}

static jk_rc read_one(jk_stmt *s, struct jk_arena *a, struct jk_res *out)
{
    int has_row = 0;
    jk_rc rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) rc = row_to_res(s, a, out);
    if (!rc && out->is_deleted) rc = JK_EGONE;
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_res_read(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                  struct jk_res *out)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql_read, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, type, strlen(type));
    jk_stmt_text_arg(s, 2, id, strlen(id));
    return read_one(s, a, out);
}

jk_rc jk_res_vread(jk_conn *c, struct jk_arena *a, const char *type, const char *id, int64_t vid,
                   struct jk_res *out)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql_vread, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, type, strlen(type));
    jk_stmt_text_arg(s, 2, id, strlen(id));
    jk_stmt_int_arg(s, 3, vid);
    return read_one(s, a, out);
}

jk_rc jk_res_current_version(jk_conn *c, const char *type, const char *id, int64_t *version,
                             int *is_deleted)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_current, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, type, strlen(type));
    jk_stmt_text_arg(s, 2, id, strlen(id));
    rc = jk_stmt_step(s, &has_row);
    *version = (!rc && has_row) ? jk_stmt_col_int(s, 0) : 0;
    *is_deleted = (!rc && has_row) ? jk_stmt_col_int(s, 1) != 0 : 0;
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_res_insert(jk_conn *c, const struct jk_res *r)
{
    jk_stmt *s;
    int has_row;
    jk_rc rc;
    if (r->version > 1) {
        if ((rc = jk_conn_prepare(c, sql_not_current, &s))) return rc;
        jk_stmt_text_arg(s, 1, r->type, strlen(r->type));
        jk_stmt_text_arg(s, 2, r->id, strlen(r->id));
        rc = jk_stmt_step(s, &has_row);
        jk_stmt_reset(s);
        if (rc) return rc;
    }
    if ((rc = jk_conn_prepare(c, sql_insert, &s))) return rc;
    jk_stmt_text_arg(s, 1, r->type, strlen(r->type));
    jk_stmt_text_arg(s, 2, r->id, strlen(r->id));
    jk_stmt_int_arg(s, 3, r->version);
    jk_stmt_text_arg(s, 4, r->last_updated, strlen(r->last_updated));
    jk_stmt_int_arg(s, 5, r->is_deleted);
    jk_stmt_text_arg(s, 6, r->method, strlen(r->method));
    if (r->body)
        jk_stmt_text_arg(s, 7, r->body, r->body_len);
    else
        jk_stmt_null_arg(s, 7);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_res_history(jk_conn *c, struct jk_arena *a, const char *type, const char *id,
                     const char *since, int64_t before_seq, size_t max, struct jk_res **out,
                     size_t *n)
{
    const char *sql = id ? sql_hist_instance : type ? sql_hist_type : sql_hist_system;
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (rc) return rc;
    int i = 1;
    if (type) jk_stmt_text_arg(s, i++, type, strlen(type));
    if (id) jk_stmt_text_arg(s, i++, id, strlen(id));
    jk_stmt_int_arg(s, i++, before_seq > 0 ? before_seq : INT64_MAX);
    jk_stmt_text_arg(s, i++, since ? since : "", since ? strlen(since) : 0);
    jk_stmt_int_arg(s, i++, (int64_t)max);
    struct jk_res *list = jk_arena_alloc(a, (max ? max : 1) * sizeof *list);
    size_t count = 0;
    int has_row = 0;
    if (!list) rc = JK_ENOMEM;
    while (!rc && count < max && !(rc = jk_stmt_step(s, &has_row)) && has_row)
        rc = row_to_res(s, a, &list[count++]);
    jk_stmt_reset(s);
    *out = list;
    *n = count;
    return rc;
}

static void text_arg(jk_stmt *s, int i, const char *v)
{
    jk_stmt_text_arg(s, i, v ? v : "", v ? strlen(v) : 0);
}

static jk_rc double_arg(jk_stmt *s, int i, double v)
{
    return jk_stmt_double_arg(s, i, v);
}

static jk_rc insert_row(jk_conn *c, const char *type, const char *id, const struct jk_idx_row *r)
{
    jk_stmt *s;
    int has_row;
    if ((unsigned)r->kind >= N_IDX_KINDS) return JK_EINTERNAL;
    jk_rc rc = jk_conn_prepare(c, idx_sql[r->kind].ins, &s);
    if (rc) return rc;
    text_arg(s, 1, type);
    text_arg(s, 2, id);
    text_arg(s, 3, r->param);
    switch (r->kind) {
    case JK_IDX_STRING:
        text_arg(s, 4, r->s1);
        text_arg(s, 5, r->s2);
        break;
    case JK_IDX_TOKEN:
    case JK_IDX_REFERENCE:
        text_arg(s, 4, r->s1);
        text_arg(s, 5, r->s2);
        text_arg(s, 6, r->s3);
        break;
    case JK_IDX_DATE:
        jk_stmt_int_arg(s, 4, r->lo_ms);
        jk_stmt_int_arg(s, 5, r->hi_ms);
        break;
    case JK_IDX_NUMBER:
        double_arg(s, 4, r->lo);
        double_arg(s, 5, r->hi);
        break;
    case JK_IDX_QUANTITY:
        text_arg(s, 4, r->s1);
        text_arg(s, 5, r->s2);
        double_arg(s, 6, r->lo);
        double_arg(s, 7, r->hi);
        break;
    case JK_IDX_URI: text_arg(s, 4, r->s1); break;
    case JK_IDX_COMPOSITE:
        text_arg(s, 4, r->s1);
        text_arg(s, 5, r->s2);
        text_arg(s, 6, r->s3);
        text_arg(s, 7, r->s4);
        double_arg(s, 8, r->lo);
        double_arg(s, 9, r->hi);
        text_arg(s, 10, r->s5);
        break;
    }
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_res_index(jk_conn *c, const char *type, const char *id, const struct jk_idx_row *rows,
                   size_t n, int is_new)
{
    jk_rc rc = JK_OK;
    jk_stmt *s;
    int has_row;
    for (size_t k = 0; k < N_IDX_KINDS && !is_new && !rc; k++) {
        if ((rc = jk_conn_prepare(c, idx_sql[k].del, &s))) break;
        text_arg(s, 1, type);
        text_arg(s, 2, id);
        rc = jk_stmt_step(s, &has_row);
        jk_stmt_reset(s);
    }
    for (size_t i = 0; i < n && !rc; i++)
        rc = insert_row(c, type, id, &rows[i]);
    return rc;
}

jk_rc jk_res_find_token(jk_conn *c, struct jk_arena *a, const char *type, const char *param,
                        const char *system, const char *code, size_t max, const char ***ids,
                        size_t *n)
{
    jk_stmt *s;
    jk_rc rc = jk_conn_prepare(c, system ? sql_tok_find_sys : sql_tok_find, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, type, strlen(type));
    jk_stmt_text_arg(s, 2, param, strlen(param));
    jk_stmt_text_arg(s, 3, code, strlen(code));
    if (system) jk_stmt_text_arg(s, 4, system, strlen(system));
    const char **list = jk_arena_alloc(a, (max ? max : 1) * sizeof *list);
    size_t count = 0;
    int has_row = 0;
    if (!list) rc = JK_ENOMEM;
    while (!rc && count < max && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t len;
        const char *p = jk_stmt_col_text(s, 0, &len);
        if (!(list[count++] = jk_arena_strndup(a, p, len))) rc = JK_ENOMEM;
    }
    jk_stmt_reset(s);
    *ids = list;
    *n = count;
    return rc;
}
