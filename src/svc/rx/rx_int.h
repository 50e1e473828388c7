/* rx_int.h - what the files of src/svc/rx share: the rules' layout. */
#ifndef JK_RX_INT_H
#define JK_RX_INT_H

#include "svc/rx/rx.h"

/* The clinical findings whose severity rx.severity sets, in this order. */
#define JK_RX_N_GRADED 7
enum {
    JK_RX_DOSE_RANGE,
    JK_RX_DOSE_DAILY,
    JK_RX_QUANTITY,
    JK_RX_DUPLICATE,
    JK_RX_ALLERGY,
    JK_RX_AGE,
    JK_RX_SEX
};
extern const char *const jk_rx_graded[JK_RX_N_GRADED];

struct jk_rx_org {
    const char *org;    /* Organization id */
    const char **codes; /* its drugs, sorted */
    size_t n_codes;
};

struct jk_rx_rules {
    struct jk_arena *arena; /* every string and table below */
    struct jk_rx_limits limits;
    unsigned long_term_excluded, online_forbidden; /* bit sets of drug classes */
    enum jk_rx_severity severity[JK_RX_N_GRADED];
    struct jk_rx_drug *drugs; /* sorted by code */
    size_t n_drugs;
    struct jk_rx_org *orgs;
    size_t n_orgs;
};

/* Whether klass is in set (a bit set of read_classes). */
int jk_rx_class_in(unsigned set, const char *klass);

#endif
