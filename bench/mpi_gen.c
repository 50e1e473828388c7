/* mpi_gen.c - writes a generated population (tests/mpi_population.h) for the person index
 * benchmark: every person's own record as a FHIR Patient, one per line (NDJSON, for
 * `jiankang import`), and Patient/$match request bodies of duplicate records (one Parameters
 * resource per line, for bench/match.lua).
 * Usage: mpi_gen N_PERSONS N_DUPS N_PROBES PATIENTS.ndjson PROBES.txt */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "mpi/match.h"
#include "mpi_population.h"

static size_t arg(const char *s)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || !*s) {
        fprintf(stderr, "mpi_gen: '%s' is not a number\n", s);
        exit(2);
    }
    return (size_t)v;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: mpi_gen N_PERSONS N_DUPS N_PROBES PATIENTS.ndjson PROBES.txt\n");
        return 2;
    }
    size_t n_persons = arg(argv[1]), n_dups = arg(argv[2]), n_probes = arg(argv[3]);
    char err[256];
    struct jk_pop *pop;
    struct jk_pop_params p = {
        .seed = 20261123, .n_persons = n_persons, .n_dups = n_dups + n_probes};
    if (jk_mpi_names_init(err, sizeof err) || jk_pop_new(&p, &pop)) {
        fprintf(stderr, "mpi_gen: cannot start: %s\n", err);
        return 1;
    }
    FILE *pf = fopen(argv[4], "w"), *qf = fopen(argv[5], "w");
    if (!pf || !qf) {
        fprintf(stderr, "mpi_gen: cannot write %s or %s\n", argv[4], argv[5]);
        return 1;
    }
    struct jk_buf b;
    jk_buf_init(&b, 0);
    struct jk_pop_rec r;
    int rc = 0;
    for (size_t i = 0; i < n_persons + n_dups + n_probes && !rc; i++) {
        if (i < n_persons)
            jk_pop_person(pop, i, &r);
        else
            jk_pop_dup(pop, i - n_persons, &r);
        /* a mistyped birth date next to the identity number would be refused at the door */
        if (r.var & (JK_POP_DATE_SWAP | JK_POP_DATE_DIGIT)) r.idnum[0] = '\0';
        b.len = 0;
        int is_probe = i >= n_persons + n_dups;
        if (is_probe)
            rc = jk_buf_puts(&b, "{\"resourceType\":\"Parameters\",\"parameter\":[{\"name\":"
                                 "\"resource\",\"resource\":");
        if (!rc) rc = jk_pop_patient_json(&r, &b);
        if (!rc && is_probe) rc = jk_buf_puts(&b, "}]}");
        if (!rc && fprintf(is_probe ? qf : pf, "%s\n", b.p) < 0) rc = 1;
    }
    jk_buf_free(&b);
    jk_pop_free(pop);
    if (fclose(pf) || fclose(qf) || rc) {
        fprintf(stderr, "mpi_gen: writing failed\n");
        return 1;
    }
    return 0;
}
