/* mpi.h - the master patient index in the database: every Patient linked to one golden person,
 * the review queue of possible matches, manual link and unlink, merge and unmerge, each change
 * kept in a history (docs/internals/mpi.md). The functions taking a jk_conn run inside a
 * transaction on it. */
#ifndef JK_MPI_H
#define JK_MPI_H

#include <stdint.h>

#include "core/diag.h"
#include "core/rc.h"
#include "mpi/match.h"
#include "store/store.h"

struct jk_arena;
struct json_object;

#define JK_MPI_ID_MAX 65 /* a person id (a FHIR id) and its NUL */

/* Reads rules/mpi.json and starts the name folding. Until it has run, Patient writes are not
 * linked (unit tests of other modules). For `serve`, `demo` and `import`. */
jk_rc jk_mpi_start(char *err, size_t errlen);

/* The features of a Patient about to be written (sealed already: see auth/protect.h), in a;
 * *out NULL when the index is not started. Outside the write's transaction. */
jk_rc jk_mpi_prepare(struct jk_arena *a, struct json_object *patient, struct jk_mpi_rec **out);

/* Links Patient patient_id after a write of it: rec its features, NULL for a deletion. A new
 * record joins the person whose record has the same identity number, else the one person the
 * score makes certain, else a person of its own (queued for review with the best candidate
 * when the score is possible or probable). An update keeps its link. */
jk_rc jk_mpi_on_write(jk_conn *c, struct jk_arena *a, const char *patient_id,
                      const struct jk_mpi_rec *rec, int64_t now_ms);

/* The golden person of Patient patient_id (following merges), into person. A Patient the
 * index has not seen yet gets a person of its own. JK_OK, JK_EDB. */
jk_rc jk_mpi_person_of(jk_conn *c, const char *patient_id, char person[JK_MPI_ID_MAX]);

/* jk_mpi_person_of without making a person: JK_ENOTFOUND for a Patient the index has not
 * seen. For reads. */
jk_rc jk_mpi_person_find(jk_conn *c, const char *patient_id, char person[JK_MPI_ID_MAX]);

/* The current records of person (not following merges): *ids in a. */
jk_rc jk_mpi_patients_of(jk_conn *c, struct jk_arena *a, const char *person, const char ***ids,
                         size_t *n);

/* One candidate person of Patient/$match: its best record and score. */
struct jk_mpi_hit {
    const char *person, *patient;
    double score;
    enum jk_mpi_grade grade;
};
/* The persons rec may be, best first, at most max of them (grade possible or better). */
jk_rc jk_mpi_match(jk_conn *c, struct jk_arena *a, const struct jk_mpi_rec *rec, size_t max,
                   struct jk_mpi_hit **hits, size_t *n);

/* Changes by a record steward (actor), each kept in the history. Refusals (unknown patient or
 * person, a merged person, linking what is linked already) are issues in d. */
jk_rc jk_mpi_link(jk_conn *c, struct jk_diag *d, const char *patient, const char *person,
                  const char *actor, int64_t now_ms);
jk_rc jk_mpi_unlink(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *patient,
                    const char *actor, int64_t now_ms, const char **person);
jk_rc jk_mpi_review(jk_conn *c, struct jk_diag *d, const char *patient, const char *person,
                    int is_same, const char *actor, int64_t now_ms);
jk_rc jk_mpi_merge(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *from,
                   const char *into, const char *actor, int64_t now_ms);
jk_rc jk_mpi_unmerge(jk_conn *c, struct jk_diag *d, struct jk_arena *a, const char *person,
                     const char *actor, int64_t now_ms);

/* JSON views for the steward API: a person with its records, its history, the open reviews.
 * *out is a new json-c object. JK_ENOTFOUND for an unknown person. */
jk_rc jk_mpi_person_json(jk_conn *c, const char *person, struct json_object **out);
jk_rc jk_mpi_history_json(jk_conn *c, const char *person, struct json_object **out);
jk_rc jk_mpi_reviews_json(jk_conn *c, size_t max, struct json_object **out);

/* Whether Patient patient_id has an identity document in the index (a real name): *out. */
jk_rc jk_mpi_is_real_name(jk_conn *c, const char *patient_id, int *out);

#endif
