/* mpi.h - the master patient index in the database: every Patient linked to one golden person
 * (docs/internals/mpi.md). */
#ifndef JK_MPI_H
#define JK_MPI_H

#include "core/rc.h"
#include "store/store.h"

#define JK_MPI_ID_MAX 64 /* a person id and its NUL */

/* The golden person of Patient patient_id, into person (a NUL-terminated id). A Patient the
 * index has not seen yet gets a person of its own. Inside a transaction on c. JK_OK, JK_EDB. */
jk_rc jk_mpi_person_of(jk_conn *c, const char *patient_id, char person[JK_MPI_ID_MAX]);

#endif
