/* mpi.c - the master patient index in the database (docs/internals/mpi.md). */
#include <string.h>

#include "core/arena.h"
#include "core/time.h"
#include "fhir/rest.h"
#include "mpi/mpi.h"

static jk_rc copy_id(const char *p, size_t n, char person[JK_MPI_ID_MAX])
{
    if (!p || n >= JK_MPI_ID_MAX) return JK_EDB;
    memcpy(person, p, n);
    person[n] = '\0';
    return JK_OK;
}

jk_rc jk_mpi_person_of(jk_conn *c, const char *patient_id, char person[JK_MPI_ID_MAX])
{
    static const char sql_get[] = "SELECT person_id FROM mpi_record WHERE patient_id = ?";
    static const char sql_person[] = "INSERT INTO mpi_person (id, status, created_ms, updated_ms)"
                                     " VALUES (?, 'active', ?, ?)";
    static const char sql_record[] =
        "INSERT INTO mpi_record (patient_id, person_id, state, how, updated_ms)"
        " VALUES (?, ?, 'no-match', 'new', ?)";
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_get, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, patient_id, strlen(patient_id));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row) {
        size_t n;
        const char *p = jk_stmt_col_text(s, 0, &n);
        rc = copy_id(p, n, person);
        jk_stmt_reset(s);
        return rc;
    }
    jk_stmt_reset(s);
    if (rc) return rc;
    struct jk_arena *a = jk_arena_new(256);
    const char *id = a ? jk_fhir_new_id(a) : NULL;
    rc = id ? copy_id(id, strlen(id), person) : JK_ENOMEM;
    jk_arena_free(a);
    int64_t now = jk_time_now_ms();
    if (!rc) rc = jk_conn_prepare(c, sql_person, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, person, strlen(person));
    if (!rc) rc = jk_stmt_int_arg(s, 2, now);
    if (!rc) rc = jk_stmt_int_arg(s, 3, now);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc) jk_stmt_reset(s);
    if (!rc) rc = jk_conn_prepare(c, sql_record, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, patient_id, strlen(patient_id));
    if (!rc) rc = jk_stmt_text_arg(s, 2, person, strlen(person));
    if (!rc) rc = jk_stmt_int_arg(s, 3, now);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc) jk_stmt_reset(s);
    return rc;
}
