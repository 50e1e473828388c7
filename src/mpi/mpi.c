/* mpi.c - the master patient index in the database (docs/internals/mpi.md).
 *
 * mpi_record holds one row per Patient: the person it is linked to, the link's state
 * ("match", "possible", "no-match"), how it was made ("identity", "score", "new", "manual",
 * "review") and the features it is matched on, with three blocking keys. mpi_review is the
 * queue of possible matches and remembers pairs a steward said are not the same person;
 * mpi_history keeps every change. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "core/arena.h"
#include "core/time.h"
#include "fhir/rest.h"
#include "mpi/mpi.h"

#define MAX_CANDS 1000 /* candidate records read for one decision: a bound on the work */

static struct jk_mpi_rules *rules;

jk_rc jk_mpi_start(char *err, size_t errlen)
{
    if (rules) return JK_OK;
    jk_rc rc = jk_mpi_names_init(err, errlen);
    return rc ? rc : jk_mpi_rules_load(NULL, &rules, err, errlen);
}

jk_rc jk_mpi_prepare(struct jk_arena *a, struct json_object *patient, struct jk_mpi_rec **out)
{
    *out = NULL;
    if (!rules) return JK_OK;
    struct jk_mpi_rec *rec = jk_arena_zalloc(a, sizeof *rec);
    if (!rec) return JK_ENOMEM;
    jk_rc rc = jk_mpi_rec_of_patient(patient, rec);
    if (!rc) *out = rec;
    return rc;
}

/* ---- statements: bind by a format ("t" text or NULL, "i" int64, "d" double) ---- */

static jk_rc vbind(jk_stmt *s, const char *fmt, va_list ap)
{
    jk_rc rc = JK_OK;
    for (int i = 1; *fmt && !rc; fmt++, i++) {
        if (*fmt == 't') {
            const char *v = va_arg(ap, const char *);
            rc = v && *v ? jk_stmt_text_arg(s, i, v, strlen(v)) : jk_stmt_null_arg(s, i);
        } else if (*fmt == 'i') {
            rc = jk_stmt_int_arg(s, i, va_arg(ap, int64_t));
        } else {
            rc = jk_stmt_double_arg(s, i, va_arg(ap, double));
        }
    }
    return rc;
}

/* Prepares sql (a static string) and binds its arguments. */
static jk_rc query(jk_conn *c, const char *sql, jk_stmt **s, const char *fmt, ...)
{
    jk_rc rc = jk_conn_prepare(c, sql, s);
    if (rc) return rc;
    va_list ap;
    va_start(ap, fmt);
    rc = vbind(*s, fmt, ap);
    va_end(ap);
    if (rc) jk_stmt_reset(*s);
    return rc;
}

/* Runs a statement that returns no rows. */
static jk_rc run(jk_conn *c, const char *sql, const char *fmt, ...)
{
    jk_stmt *s = NULL;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (rc) return rc;
    va_list ap;
    va_start(ap, fmt);
    rc = vbind(s, fmt, ap);
    va_end(ap);
    int has_row;
    if (!rc) rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* Column i as a NUL-terminated string in a ("" for NULL). */
static const char *col_str(jk_stmt *s, int i, struct jk_arena *a)
{
    size_t n = 0;
    const char *p = jk_stmt_col_text(s, i, &n);
    return p ? jk_arena_strndup(a, p, n) : "";
}

static void col_copy(jk_stmt *s, int i, char *out, size_t cap)
{
    size_t n = 0;
    const char *p = jk_stmt_col_text(s, i, &n);
    if (!p || n >= cap) n = 0;
    if (n) memcpy(out, p, n);
    out[n] = '\0';
}

/* ---- records ---- */

#define REC_COLS "patient_id, person_id, id_key, han, pinyin, birth, sex, phone_key, region"

struct cand {
    const char *patient, *person;
    struct jk_mpi_rec rec;
    double score;
};

static jk_rc cand_of_row(jk_stmt *s, struct jk_arena *a, struct cand *k)
{
    memset(k, 0, sizeof *k);
    k->patient = col_str(s, 0, a);
    k->person = col_str(s, 1, a);
    if (!k->patient || !k->person) return JK_ENOMEM;
    col_copy(s, 2, k->rec.id_key, sizeof k->rec.id_key);
    col_copy(s, 3, k->rec.han, sizeof k->rec.han);
    col_copy(s, 4, k->rec.pinyin, sizeof k->rec.pinyin);
    col_copy(s, 5, k->rec.birth, sizeof k->rec.birth);
    char sex[2];
    col_copy(s, 6, sex, sizeof sex);
    k->rec.sex = sex[0];
    col_copy(s, 7, k->rec.phone_key, sizeof k->rec.phone_key);
    col_copy(s, 8, k->rec.region, sizeof k->rec.region);
    return JK_OK;
}

/* Records sharing rec's identity number or a blocking key (not patient self), scored. */
static jk_rc candidates(jk_conn *c, struct jk_arena *a, const struct jk_mpi_rec *rec,
                        const char *self, struct cand **out, size_t *n)
{
    static const char sql[] =
        "SELECT " REC_COLS " FROM mpi_record WHERE id_key = ?"
        " UNION SELECT " REC_COLS " FROM mpi_record WHERE block1 = ?"
        " UNION SELECT " REC_COLS " FROM mpi_record WHERE block2 = ?"
        " UNION SELECT " REC_COLS " FROM mpi_record WHERE block3 = ? LIMIT 1000";
    char blocks[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX];
    jk_mpi_blocks(rec, blocks);
    *out = NULL;
    *n = 0;
    struct cand *k = jk_arena_alloc(a, MAX_CANDS * sizeof *k);
    if (!k) return JK_ENOMEM;
    jk_stmt *s = NULL;
    jk_rc rc = query(c, sql, &s, "tttt", rec->id_key, blocks[0], blocks[1], blocks[2]);
    int has_row = 0;
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row && *n < MAX_CANDS) {
        if ((rc = cand_of_row(s, a, &k[*n]))) break;
        if (self && !strcmp(k[*n].patient, self)) continue;
        k[*n].score = jk_mpi_score(rules, rec, &k[*n].rec);
        (*n)++;
    }
    if (!rc) jk_stmt_reset(s);
    *out = k;
    return rc;
}

static jk_rc history(jk_conn *c, int64_t now, const char *actor, const char *action,
                     const char *patient, const char *person, const char *from, const char *detail)
{
    static const char sql[] =
        "INSERT INTO mpi_history (at_ms, actor, action, patient_id, person_id, from_person,"
        " detail) VALUES (?, ?, ?, ?, ?, ?, ?)";
    return run(c, sql, "itttttt", now, actor, action, patient, person, from, detail);
}

static jk_rc new_person(jk_conn *c, struct jk_arena *a, int64_t now, const char **out)
{
    static const char sql[] = "INSERT INTO mpi_person (id, status, created_ms, updated_ms)"
                              " VALUES (?, 'active', ?, ?)";
    const char *id = jk_fhir_new_id(a);
    if (!id) return JK_ENOMEM;
    *out = id;
    return run(c, sql, "tii", id, now, now);
}

static jk_rc put_record(jk_conn *c, const char *patient, const char *person, const char *state,
                        const char *how, double score, const struct jk_mpi_rec *r, int64_t now)
{
    static const char sql_del[] = "DELETE FROM mpi_record WHERE patient_id = ?";
    static const char sql[] =
        "INSERT INTO mpi_record (patient_id, person_id, state, how, score, id_key, han, pinyin,"
        " birth, sex, phone_key, region, block1, block2, block3, updated_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    char blocks[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX];
    jk_mpi_blocks(r, blocks);
    char sex[2] = {r->sex, '\0'};
    jk_rc rc = run(c, sql_del, "t", patient);
    if (!rc)
        rc = run(c, sql, "ttttdtttttttttti", patient, person, state, how, score, r->id_key, r->han,
                 r->pinyin, r->birth, sex, r->phone_key, r->region, blocks[0], blocks[1], blocks[2],
                 now);
    return rc;
}

/* The stored record of patient: its person, state and how (in a); JK_ENOTFOUND. */
static jk_rc get_record(jk_conn *c, struct jk_arena *a, const char *patient, const char **person,
                        const char **how, struct jk_mpi_rec *rec)
{
    static const char sql[] = "SELECT " REC_COLS ", how FROM mpi_record WHERE patient_id = ?";
    jk_stmt *s = NULL;
    int has_row = 0;
    jk_rc rc = query(c, sql, &s, "t", patient);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) {
        struct cand k;
        rc = cand_of_row(s, a, &k);
        *person = k.person;
        if (rec) *rec = k.rec;
        if (how && !(*how = col_str(s, 9, a))) rc = JK_ENOMEM;
    }
    jk_stmt_reset(s);
    return rc;
}

/* Whether a steward said patient is not person. */
static int is_refused(jk_conn *c, const char *patient, const char *person)
{
    static const char sql[] = "SELECT 1 FROM mpi_review WHERE patient_id = ? AND person_id = ?"
                              " AND status = 'no-match'";
    jk_stmt *s = NULL;
    int has_row = 0;
    if (query(c, sql, &s, "tt", patient, person)) return 0;
    if (jk_stmt_step(s, &has_row)) has_row = 0;
    jk_stmt_reset(s);
    return has_row;
}

static jk_rc link_new(jk_conn *c, struct jk_arena *a, const char *patient,
                      const struct jk_mpi_rec *rec, int64_t now)
{
    static const char sql_review[] =
        "INSERT INTO mpi_review (patient_id, person_id, score, status, created_ms)"
        " VALUES (?, ?, ?, 'open', ?)";
    struct cand *k;
    size_t n;
    jk_rc rc = candidates(c, a, rec, patient, &k, &n);
    if (rc) return rc;
    const char *person = NULL, *how = "new", *state = "no-match";
    double score = 0;
    for (size_t i = 0; rec->id_key[0] && i < n && !person; i++)
        if (!strcmp(k[i].rec.id_key, rec->id_key)) person = k[i].person, how = "identity";
    enum jk_mpi_grade g = JK_MPI_NONE;
    const char *best = NULL;
    if (!person) {
        struct jk_mpi_cand *jc = jk_arena_alloc(a, (n ? n : 1) * sizeof *jc);
        if (!jc) return JK_ENOMEM;
        for (size_t i = 0; i < n; i++)
            jc[i] = (struct jk_mpi_cand){k[i].person, k[i].score};
        g = jk_mpi_decide(rules, jc, n, &best, &score);
        if (g == JK_MPI_CERTAIN) person = best, how = "score";
    }
    if (person)
        state = "match";
    else if ((rc = new_person(c, a, now, &person)))
        return rc;
    if (g == JK_MPI_POSSIBLE || g == JK_MPI_PROBABLE) state = "possible";
    rc = put_record(c, patient, person, state, how, score, rec, now);
    if (!rc && !strcmp(state, "possible"))
        rc = run(c, sql_review, "ttdi", patient, best, score, now);
    char detail[48];
    snprintf(detail, sizeof detail, "{\"score\":%.2f}", score);
    if (!rc)
        rc = history(c, now, "index", strcmp(how, "new") ? "auto-link" : "new", patient, person,
                     NULL, detail);
    return rc;
}

jk_rc jk_mpi_on_write(jk_conn *c, struct jk_arena *a, const char *patient_id,
                      const struct jk_mpi_rec *rec, int64_t now_ms)
{
    static const char sql_del[] = "DELETE FROM mpi_record WHERE patient_id = ?";
    static const char sql_close[] = "UPDATE mpi_review SET status = 'closed', decided_ms = ?"
                                    " WHERE patient_id = ? AND status = 'open'";
    static const char sql_update[] =
        "UPDATE mpi_record SET id_key = ?, han = ?, pinyin = ?, birth = ?, sex = ?,"
        " phone_key = ?, region = ?, block1 = ?, block2 = ?, block3 = ?, updated_ms = ?"
        " WHERE patient_id = ?";
    if (!rules) return JK_OK;
    const char *person, *how;
    struct jk_mpi_rec old;
    jk_rc rc = get_record(c, a, patient_id, &person, &how, &old);
    if (rc == JK_ENOTFOUND) return rec ? link_new(c, a, patient_id, rec, now_ms) : JK_OK;
    if (rc) return rc;
    if (!rec) {
        rc = run(c, sql_del, "t", patient_id);
        if (!rc) rc = run(c, sql_close, "it", now_ms, patient_id);
        return rc ? rc : history(c, now_ms, "index", "remove", patient_id, person, NULL, NULL);
    }
    /* A record the index made (not a steward) and that now has an identity number another
     * person's record has: it is that person. */
    if (rec->id_key[0] && strcmp(rec->id_key, old.id_key) && strcmp(how, "manual") &&
        strcmp(how, "review")) {
        struct cand *k;
        size_t n;
        if ((rc = candidates(c, a, rec, patient_id, &k, &n))) return rc;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(k[i].rec.id_key, rec->id_key) || !strcmp(k[i].person, person) ||
                is_refused(c, patient_id, k[i].person))
                continue;
            rc = put_record(c, patient_id, k[i].person, "match", "identity", 0, rec, now_ms);
            return rc ? rc
                      : history(c, now_ms, "index", "auto-link", patient_id, k[i].person, person,
                                NULL);
        }
    }
    char blocks[JK_MPI_N_BLOCKS][JK_MPI_BLOCK_MAX];
    jk_mpi_blocks(rec, blocks);
    char sex[2] = {rec->sex, '\0'};
    return run(c, sql_update, "ttttttttttit", rec->id_key, rec->han, rec->pinyin, rec->birth, sex,
               rec->phone_key, rec->region, blocks[0], blocks[1], blocks[2], now_ms, patient_id);
}

/* ---- persons ---- */

/* The status and merged_into of person (in a); JK_ENOTFOUND. */
static jk_rc get_person(jk_conn *c, struct jk_arena *a, const char *person, const char **status,
                        const char **into)
{
    static const char sql[] = "SELECT status, merged_into FROM mpi_person WHERE id = ?";
    jk_stmt *s = NULL;
    int has_row = 0;
    jk_rc rc = query(c, sql, &s, "t", person);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc && (!(*status = col_str(s, 0, a)) || !(*into = col_str(s, 1, a)))) rc = JK_ENOMEM;
    jk_stmt_reset(s);
    return rc;
}

static jk_rc person_of(jk_conn *c, const char *patient_id, int is_made, char person[JK_MPI_ID_MAX])
{
    struct jk_arena *a = jk_arena_new(1024);
    if (!a) return JK_ENOMEM;
    const char *p, *status, *into;
    jk_rc rc = get_record(c, a, patient_id, &p, NULL, NULL);
    if (rc == JK_ENOTFOUND && is_made) {
        struct jk_mpi_rec empty;
        memset(&empty, 0, sizeof empty);
        int64_t now = jk_time_now_ms();
        rc = new_person(c, a, now, &p);
        if (!rc) rc = put_record(c, patient_id, p, "no-match", "new", 0, &empty, now);
        if (!rc) rc = history(c, now, "index", "new", patient_id, p, NULL, NULL);
    }
    /* Records move with a merge; a person id kept elsewhere (a card) may be a merged one. */
    for (int hops = 0; !rc && hops < 8; hops++) {
        if ((rc = get_person(c, a, p, &status, &into)) || strcmp(status, "merged") || !*into) break;
        p = into;
    }
    if (!rc && strlen(p) >= JK_MPI_ID_MAX) rc = JK_EDB;
    if (!rc) memcpy(person, p, strlen(p) + 1);
    jk_arena_free(a);
    return rc;
}

jk_rc jk_mpi_person_of(jk_conn *c, const char *patient_id, char person[JK_MPI_ID_MAX])
{
    return person_of(c, patient_id, 1, person);
}

jk_rc jk_mpi_person_find(jk_conn *c, const char *patient_id, char person[JK_MPI_ID_MAX])
{
    return person_of(c, patient_id, 0, person);
}

jk_rc jk_mpi_patients_of(jk_conn *c, struct jk_arena *a, const char *person, const char ***ids,
                         size_t *n)
{
    static const char sql[] =
        "SELECT patient_id FROM mpi_record WHERE person_id = ? ORDER BY patient_id LIMIT 1000";
    const char **v = jk_arena_alloc(a, 1000 * sizeof *v);
    jk_stmt *s = NULL;
    int has_row = 0;
    *n = 0;
    *ids = v;
    if (!v) return JK_ENOMEM;
    jk_rc rc = query(c, sql, &s, "t", person);
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row)
        if (!(v[(*n)++] = col_str(s, 0, a))) rc = JK_ENOMEM;
    if (!rc) jk_stmt_reset(s);
    return rc;
}

static int hit_cmp(const void *x, const void *y)
{
    const struct jk_mpi_hit *a = x, *b = y;
    return a->score < b->score ? 1 : a->score > b->score ? -1 : strcmp(a->person, b->person);
}

jk_rc jk_mpi_match(jk_conn *c, struct jk_arena *a, const struct jk_mpi_rec *rec, size_t max,
                   struct jk_mpi_hit **hits, size_t *n)
{
    struct cand *k;
    size_t nk;
    *n = 0;
    if (!rules) return JK_EINTERNAL;
    jk_rc rc = candidates(c, a, rec, NULL, &k, &nk);
    if (rc) return rc;
    struct jk_mpi_hit *h = jk_arena_alloc(a, (nk ? nk : 1) * sizeof *h);
    if (!h) return JK_ENOMEM;
    for (size_t i = 0; i < nk; i++) { /* one hit per person: its best record */
        double score = rec->id_key[0] && !strcmp(rec->id_key, k[i].rec.id_key)
                           ? fmax(k[i].score, jk_mpi_threshold_auto(rules))
                           : k[i].score;
        size_t j = 0;
        while (j < *n && strcmp(h[j].person, k[i].person))
            j++;
        if (j == *n)
            h[(*n)++] = (struct jk_mpi_hit){k[i].person, k[i].patient, score, 0};
        else if (score > h[j].score)
            h[j].patient = k[i].patient, h[j].score = score;
    }
    size_t m = 0;
    for (size_t i = 0; i < *n; i++)
        if ((h[i].grade = jk_mpi_grade_of(rules, h[i].score)) != JK_MPI_NONE) h[m++] = h[i];
    qsort(h, m, sizeof *h, hit_cmp);
    *n = m < max ? m : max;
    *hits = h;
    return JK_OK;
}

/* ---- steward changes ---- */

static jk_rc need_active(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *person,
                         const char *field)
{
    const char *status, *into;
    jk_rc rc = get_person(c, a, person, &status, &into);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(d, JK_ENOTFOUND, "not-found", field, "there is no person '%s'", person);
    if (!rc && strcmp(status, "active"))
        return jk_diag_add(d, JK_ECONFLICT, "conflict", field,
                           "person '%s' was merged into '%s'; use that person", person, into);
    return rc;
}

static jk_rc need_record(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *patient,
                         const char **person)
{
    jk_rc rc = get_record(c, a, patient, person, NULL, NULL);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(d, JK_ENOTFOUND, "not-found", "patient",
                           "Patient/%s is not in the person index", patient);
    return rc;
}

static jk_rc move_record(jk_conn *c, const char *patient, const char *person, const char *state,
                         const char *how, int64_t now)
{
    static const char sql[] = "UPDATE mpi_record SET person_id = ?, state = ?, how = ?,"
                              " updated_ms = ? WHERE patient_id = ?";
    return run(c, sql, "tttit", person, state, how, now, patient);
}

static jk_rc set_review(jk_conn *c, const char *patient, const char *person, const char *status,
                        const char *actor, int64_t now)
{
    static const char sql_upd[] = "UPDATE mpi_review SET status = ?, decided_ms = ?, decided_by = ?"
                                  " WHERE patient_id = ? AND person_id = ?";
    static const char sql_ins[] =
        "INSERT INTO mpi_review (patient_id, person_id, score, status, created_ms, decided_ms,"
        " decided_by) SELECT ?, ?, 0, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM mpi_review"
        " WHERE patient_id = ? AND person_id = ?)";
    jk_rc rc = run(c, sql_upd, "tittt", status, now, actor, patient, person);
    if (!rc)
        rc = run(c, sql_ins, "tttiittt", patient, person, status, now, now, actor, patient, person);
    return rc;
}

static jk_rc do_link(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *patient,
                     const char *person, const char *how, const char *actor, int64_t now)
{
    static const char sql_close[] =
        "UPDATE mpi_review SET status = 'closed', decided_ms = ?, decided_by = ?"
        " WHERE patient_id = ? AND status = 'open'";
    const char *from;
    jk_rc rc = need_record(c, d, a, patient, &from);
    if (!rc) rc = need_active(c, d, a, person, "person");
    if (!rc && !strcmp(from, person))
        return jk_diag_add(d, JK_ECONFLICT, "duplicate", "person",
                           "Patient/%s is linked to person '%s' already", patient, person);
    if (!rc) rc = move_record(c, patient, person, "match", how, now);
    if (!rc) rc = set_review(c, patient, person, "linked", actor, now);
    if (!rc) rc = run(c, sql_close, "itt", now, actor, patient);
    if (!rc) rc = history(c, now, actor, "link", patient, person, from, NULL);
    return rc;
}

jk_rc jk_mpi_link(jk_conn *c, struct jk_diag *d, const char *patient, const char *person,
                  const char *actor, int64_t now_ms)
{
    struct jk_arena *a = jk_arena_new(1024);
    jk_rc rc = a ? do_link(c, d, a, patient, person, "manual", actor, now_ms) : JK_ENOMEM;
    jk_arena_free(a);
    return rc;
}

jk_rc jk_mpi_unlink(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *patient,
                    const char *actor, int64_t now_ms, const char **person)
{
    const char *from;
    const char **ids;
    size_t n;
    jk_rc rc = need_record(c, d, a, patient, &from);
    if (!rc) rc = jk_mpi_patients_of(c, a, from, &ids, &n);
    if (!rc && n < 2)
        return jk_diag_add(d, JK_ECONFLICT, "conflict", "patient",
                           "Patient/%s is the only record of its person: there is nothing to "
                           "unlink it from",
                           patient);
    if (!rc) rc = new_person(c, a, now_ms, person);
    if (!rc) rc = move_record(c, patient, *person, "no-match", "manual", now_ms);
    /* so that the index does not link them again */
    if (!rc) rc = set_review(c, patient, from, "no-match", actor, now_ms);
    if (!rc) rc = history(c, now_ms, actor, "unlink", patient, *person, from, NULL);
    return rc;
}

jk_rc jk_mpi_review(jk_conn *c, struct jk_diag *d, const char *patient, const char *person,
                    int is_same, const char *actor, int64_t now_ms)
{
    static const char sql[] = "SELECT status FROM mpi_review WHERE patient_id = ? AND"
                              " person_id = ?";
    static const char sql_state[] = "UPDATE mpi_record SET state = 'no-match', updated_ms = ?"
                                    " WHERE patient_id = ? AND state = 'possible'";
    struct jk_arena *a = jk_arena_new(1024);
    if (!a) return JK_ENOMEM;
    jk_stmt *s = NULL;
    int has_row = 0;
    const char *status = NULL;
    jk_rc rc = query(c, sql, &s, "tt", patient, person);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row) status = col_str(s, 0, a);
    if (!rc) jk_stmt_reset(s);
    if (!rc && (!status || strcmp(status, "open")))
        rc = jk_diag_add(d, JK_ENOTFOUND, "not-found", "person",
                         "there is no open review of Patient/%s with person '%s'", patient, person);
    if (!rc && is_same) rc = do_link(c, d, a, patient, person, "review", actor, now_ms);
    if (!rc && !is_same) rc = set_review(c, patient, person, "no-match", actor, now_ms);
    if (!rc && !is_same) rc = run(c, sql_state, "it", now_ms, patient);
    if (!rc && !is_same) rc = history(c, now_ms, actor, "not-same", patient, person, NULL, NULL);
    jk_arena_free(a);
    return rc;
}

jk_rc jk_mpi_merge(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *from,
                   const char *into, const char *actor, int64_t now_ms)
{
    static const char sql_move[] = "UPDATE mpi_record SET person_id = ?, updated_ms = ?"
                                   " WHERE person_id = ?";
    static const char sql_person[] = "UPDATE mpi_person SET status = 'merged', merged_into = ?,"
                                     " updated_ms = ? WHERE id = ?";
    if (!strcmp(from, into))
        return jk_diag_add(d, JK_EINVAL, "invalid", "into",
                           "a person cannot be merged into itself");
    jk_rc rc = need_active(c, d, a, from, "from");
    if (!rc) rc = need_active(c, d, a, into, "into");
    const char **ids;
    size_t n = 0;
    if (!rc) rc = jk_mpi_patients_of(c, a, from, &ids, &n);
    struct json_object *moved = rc ? NULL : json_object_new_array();
    if (!rc && !moved) rc = JK_ENOMEM;
    for (size_t i = 0; !rc && i < n; i++)
        if (json_object_array_add(moved, json_object_new_string(ids[i]))) rc = JK_ENOMEM;
    if (!rc) rc = run(c, sql_move, "tit", into, now_ms, from);
    if (!rc) rc = run(c, sql_person, "tit", into, now_ms, from);
    if (!rc)
        rc = history(c, now_ms, actor, "merge", NULL, into, from,
                     json_object_to_json_string_ext(moved, JSON_C_TO_STRING_PLAIN));
    json_object_put(moved);
    return rc;
}

jk_rc jk_mpi_unmerge(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *person,
                     const char *actor, int64_t now_ms)
{
    static const char sql_last[] = "SELECT person_id, detail FROM mpi_history WHERE from_person"
                                   " = ? AND action = 'merge' ORDER BY seq DESC LIMIT 1";
    static const char sql_back[] = "UPDATE mpi_record SET person_id = ?, updated_ms = ?"
                                   " WHERE patient_id = ? AND person_id = ?";
    static const char sql_person[] = "UPDATE mpi_person SET status = 'active', merged_into = NULL,"
                                     " updated_ms = ? WHERE id = ?";
    const char *status, *into;
    jk_rc rc = get_person(c, a, person, &status, &into);
    if (rc == JK_ENOTFOUND)
        return jk_diag_add(d, JK_ENOTFOUND, "not-found", "person", "there is no person '%s'",
                           person);
    if (!rc && strcmp(status, "merged"))
        return jk_diag_add(d, JK_ECONFLICT, "conflict", "person",
                           "person '%s' is not merged into another", person);
    jk_stmt *s = NULL;
    int has_row = 0;
    const char *detail = NULL;
    if (!rc) rc = query(c, sql_last, &s, "t", person);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row && !(detail = col_str(s, 1, a))) rc = JK_ENOMEM;
    if (!rc) jk_stmt_reset(s);
    if (!rc && !detail) return JK_EDB; /* a merged person always has its merge */
    struct json_object *moved = rc ? NULL : json_tokener_parse(detail);
    if (!rc && !json_object_is_type(moved, json_type_array)) rc = JK_EDB;
    /* The records the merge moved go back, unless a steward has linked one elsewhere since. */
    for (size_t i = 0; !rc && i < json_object_array_length(moved); i++) {
        const char *p = json_object_get_string(json_object_array_get_idx(moved, i));
        if (p) rc = run(c, sql_back, "titt", person, now_ms, p, into);
    }
    if (!rc) rc = run(c, sql_person, "it", now_ms, person);
    if (!rc) rc = history(c, now_ms, actor, "unmerge", NULL, person, into, detail);
    json_object_put(moved);
    return rc;
}

/* ---- views ---- */

static jk_rc add_str(struct json_object *o, const char *k, const char *v)
{
    if (!v || !*v) return JK_OK;
    struct json_object *s = json_object_new_string(v);
    return s && !json_object_object_add(o, k, s) ? JK_OK : JK_ENOMEM;
}

jk_rc jk_mpi_person_json(jk_conn *c, const char *person, struct json_object **out)
{
    static const char sql[] = "SELECT patient_id, state, how, score, han, pinyin, birth, sex,"
                              " region FROM mpi_record WHERE person_id = ? ORDER BY patient_id"
                              " LIMIT 1000";
    static const char *const cols[] = {"patient", "state",     "how", NULL,    "name",
                                       "pinyin",  "birthDate", "sex", "region"};
    struct jk_arena *a = jk_arena_new(1024);
    if (!a) return JK_ENOMEM;
    const char *status, *into;
    jk_rc rc = get_person(c, a, person, &status, &into);
    struct json_object *o = rc ? NULL : json_object_new_object();
    struct json_object *recs = rc ? NULL : json_object_new_array();
    if (!rc && (!o || !recs)) rc = JK_ENOMEM;
    if (!rc) rc = add_str(o, "id", person);
    if (!rc) rc = add_str(o, "status", status);
    if (!rc) rc = add_str(o, "mergedInto", into);
    jk_stmt *s = NULL;
    int has_row = 0;
    if (!rc) rc = query(c, sql, &s, "t", person);
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        struct json_object *r = json_object_new_object();
        if (!r || json_object_array_add(recs, r)) {
            json_object_put(r);
            rc = JK_ENOMEM;
            break;
        }
        rc = add_str(r, "patient", jk_arena_printf(a, "Patient/%s", col_str(s, 0, a)));
        for (int i = 1; i < 9 && !rc; i++)
            rc = cols[i] ? add_str(r, cols[i], col_str(s, i, a)) : JK_OK;
        json_object_object_add(r, "score", json_object_new_double(jk_stmt_col_double(s, 3)));
    }
    if (!rc) jk_stmt_reset(s);
    if (!rc)
        rc = json_object_object_add(o, "records", recs) ? JK_ENOMEM : JK_OK;
    else
        json_object_put(recs);
    if (rc)
        json_object_put(o);
    else
        *out = o;
    jk_arena_free(a);
    return rc;
}

jk_rc jk_mpi_history_json(jk_conn *c, const char *person, struct json_object **out)
{
    static const char sql[] =
        "SELECT seq, at_ms, actor, action, patient_id, person_id, from_person, detail"
        " FROM mpi_history WHERE person_id = ? OR from_person = ? ORDER BY seq LIMIT 1000";
    static const char *const cols[] = {NULL,      NULL,     "actor", "action",
                                       "patient", "person", "from",  "detail"};
    struct jk_arena *a = jk_arena_new(1024);
    if (!a) return JK_ENOMEM;
    const char *status, *into;
    jk_rc rc = get_person(c, a, person, &status, &into);
    struct json_object *o = rc ? NULL : json_object_new_object();
    struct json_object *ev = rc ? NULL : json_object_new_array();
    if (!rc && (!o || !ev)) rc = JK_ENOMEM;
    jk_stmt *s = NULL;
    int has_row = 0;
    if (!rc) rc = query(c, sql, &s, "tt", person, person);
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        struct json_object *r = json_object_new_object();
        if (!r || json_object_array_add(ev, r)) {
            json_object_put(r);
            rc = JK_ENOMEM;
            break;
        }
        char at[40];
        jk_time_iso(jk_stmt_col_int(s, 1), at, sizeof at);
        rc = add_str(r, "at", at);
        json_object_object_add(r, "seq", json_object_new_int64(jk_stmt_col_int(s, 0)));
        for (int i = 2; i < 8 && !rc; i++)
            rc = add_str(r, cols[i], col_str(s, i, a));
    }
    if (!rc) jk_stmt_reset(s);
    if (!rc)
        rc = json_object_object_add(o, "history", ev) ? JK_ENOMEM : JK_OK;
    else
        json_object_put(ev);
    if (rc)
        json_object_put(o);
    else
        *out = o;
    jk_arena_free(a);
    return rc;
}

/* A record's summary for a steward: name, birth date, sex, region. */
static jk_rc summary(jk_conn *c, struct jk_arena *a, const char *sql, const char *key,
                     struct json_object **out)
{
    jk_stmt *s = NULL;
    int has_row = 0;
    struct json_object *o = json_object_new_object();
    if (!o) return JK_ENOMEM;
    jk_rc rc = query(c, sql, &s, "t", key);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row) {
        const char *han = col_str(s, 1, a);
        rc = add_str(o, "patient", jk_arena_printf(a, "Patient/%s", col_str(s, 0, a)));
        if (!rc) rc = add_str(o, "name", han && *han ? han : col_str(s, 2, a));
        if (!rc) rc = add_str(o, "birthDate", col_str(s, 3, a));
        if (!rc) rc = add_str(o, "sex", col_str(s, 4, a));
        if (!rc) rc = add_str(o, "region", col_str(s, 5, a));
    }
    if (!rc) jk_stmt_reset(s);
    if (rc)
        json_object_put(o);
    else
        *out = o;
    return rc;
}

jk_rc jk_mpi_reviews_json(jk_conn *c, size_t max, struct json_object **out)
{
    static const char sql[] = "SELECT patient_id, person_id, score, created_ms FROM mpi_review"
                              " WHERE status = 'open' ORDER BY created_ms, patient_id LIMIT ?";
    static const char sql_patient[] = "SELECT patient_id, han, pinyin, birth, sex, region FROM"
                                      " mpi_record WHERE patient_id = ?";
    static const char sql_person[] = "SELECT patient_id, han, pinyin, birth, sex, region FROM"
                                     " mpi_record WHERE person_id = ? ORDER BY patient_id LIMIT 1";
    struct jk_arena *a = jk_arena_new(4096);
    if (!a) return JK_ENOMEM;
    struct json_object *o = json_object_new_object(), *list = json_object_new_array();
    jk_rc rc = o && list ? JK_OK : JK_ENOMEM;
    struct {
        const char *patient, *person;
        double score;
        int64_t at;
    } *row = jk_arena_alloc(a, (max ? max : 1) * sizeof *row);
    size_t n = 0;
    jk_stmt *s = NULL;
    int has_row = 0;
    if (!row) rc = JK_ENOMEM;
    if (!rc) rc = query(c, sql, &s, "i", (int64_t)max);
    while (!rc && n < max && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        row[n].patient = col_str(s, 0, a);
        row[n].person = col_str(s, 1, a);
        row[n].score = jk_stmt_col_double(s, 2);
        row[n++].at = jk_stmt_col_int(s, 3);
    }
    if (!rc) jk_stmt_reset(s);
    for (size_t i = 0; i < n && !rc; i++) {
        struct json_object *r = json_object_new_object(), *ps = NULL, *qs = NULL;
        if (!r || json_object_array_add(list, r)) {
            json_object_put(r);
            rc = JK_ENOMEM;
            break;
        }
        char at[40];
        jk_time_iso(row[i].at, at, sizeof at);
        rc = add_str(r, "patient", jk_arena_printf(a, "Patient/%s", row[i].patient));
        if (!rc) rc = add_str(r, "person", row[i].person);
        if (!rc) json_object_object_add(r, "score", json_object_new_double(row[i].score));
        if (!rc)
            rc = add_str(
                r, "grade",
                jk_mpi_grade_name(rules ? jk_mpi_grade_of(rules, row[i].score) : JK_MPI_POSSIBLE));
        if (!rc) rc = add_str(r, "created", at);
        if (!rc && !(rc = summary(c, a, sql_patient, row[i].patient, &ps)))
            json_object_object_add(r, "patient_summary", ps);
        if (!rc && !(rc = summary(c, a, sql_person, row[i].person, &qs)))
            json_object_object_add(r, "person_summary", qs);
    }
    if (!rc)
        rc = json_object_object_add(o, "reviews", list) ? JK_ENOMEM : JK_OK;
    else
        json_object_put(list);
    if (rc)
        json_object_put(o);
    else
        *out = o;
    jk_arena_free(a);
    return rc;
}

jk_rc jk_mpi_is_real_name(jk_conn *c, const char *patient_id, int *out)
{
    static const char sql[] = "SELECT id_key FROM mpi_record WHERE patient_id = ?";
    jk_stmt *s;
    int has_row = 0;
    size_t n = 0;
    jk_rc rc = jk_conn_query(c, sql, &s, &has_row, "t", patient_id);
    if (!rc && has_row) jk_stmt_col_text(s, 0, &n);
    *out = !rc && has_row && n > 0;
    if (s) jk_stmt_reset(s);
    return rc;
}
