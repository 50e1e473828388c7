/* sweep.c - the booking sweeper: marks no-shows when sessions end and passes lapsed
 * waiting-list offers on, once a minute. Correctness never waits for it (holds lapse by
 * themselves); it makes what residents see timely. */
#include <stddef.h>

#include "core/arena.h"
#include "core/diag.h"
#include "core/log.h"
#include "core/periodic.h"
#include "core/time.h"
#include "svc/booking/booking.h"

#define SWEEP_EVERY_MS 60000
#define SWEEP_MAX      200 /* bookings one transaction marks */

static struct jk_periodic *sweeper;

struct sweep {
    struct jk_bk_call k;
    size_t n_done;
};

static jk_rc sweep_tx(jk_conn *c, void *arg)
{
    struct sweep *s = arg;
    return jk_bk_sweep(c, &s->k, SWEEP_MAX, &s->n_done);
}

static void sweep_once(void *arg)
{
    jk_store *db = arg;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    if (!a) return;
    jk_diag_init(&d, a);
    struct sweep s = {{a, &d, jk_time_now_ms(), jk_bk_rules()}, 0};
    jk_rc rc = s.k.rules ? jk_store_tx(db, sweep_tx, &s) : JK_OK;
    if (rc)
        jk_log_warn("booking", "the sweep failed: %s", jk_rc_name(rc));
    else if (s.n_done)
        jk_log_info("booking", "%zu appointments marked no-show", s.n_done);
    jk_arena_free(a);
}

jk_rc jk_bk_sweeper_start(jk_store *db)
{
    return jk_periodic_start(sweep_once, db, SWEEP_EVERY_MS, &sweeper);
}

void jk_bk_sweeper_stop(void)
{
    jk_periodic_stop(sweeper);
    sweeper = NULL;
}
