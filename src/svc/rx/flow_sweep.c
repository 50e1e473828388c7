/* flow_sweep.c - the prescription sweeper: marks prescriptions whose code expired and fills the
 * review queue's summary of new ones, every sweep.seconds. Correctness never waits for it:
 * redemption and dispensing check the validity themselves. */
#include <stddef.h>

#include "core/arena.h"
#include "core/diag.h"
#include "core/log.h"
#include "core/periodic.h"
#include "core/time.h"
#include "svc/rx/flow.h"

#define SWEEP_MAX 200 /* prescriptions one transaction handles of each kind */

static struct jk_periodic *sweeper;

struct sweep {
    struct jk_rx_call k;
    size_t n_done;
};

static jk_rc sweep_tx(jk_conn *c, void *arg)
{
    struct sweep *s = arg;
    return jk_rx_flow_sweep(c, &s->k, SWEEP_MAX, &s->n_done);
}

static void sweep_once(void *arg)
{
    jk_store *db = arg;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    if (!a) return;
    jk_diag_init(&d, a);
    struct sweep s = {{a, &d, jk_time_now_ms(), jk_rx_flow_rules(), jk_rx_flow_keys()}, 0};
    jk_rc rc = s.k.rules ? jk_store_tx(db, sweep_tx, &s) : JK_OK;
    if (rc)
        jk_log_warn("rx", "the prescription sweep failed: %s", jk_rc_name(rc));
    else if (s.n_done)
        jk_log_info("rx", "%zu prescriptions expired or summarised", s.n_done);
    jk_arena_free(a);
}

jk_rc jk_rx_flow_sweeper_start(jk_store *db)
{
    const struct jk_rx_flow_rules *r = jk_rx_flow_rules();
    int every_ms = (r ? jk_rx_flow_sweep_seconds(r) : 60) * 1000;
    return jk_periodic_start(sweep_once, db, every_ms, &sweeper);
}

void jk_rx_flow_sweeper_stop(void)
{
    jk_periodic_stop(sweeper);
    sweeper = NULL;
}
