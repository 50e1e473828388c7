/* periodic.h - a thread that calls a function every interval until stopped: the booking
 * sweeper, the outbox dispatcher, the slot generator. */
#ifndef JK_PERIODIC_H
#define JK_PERIODIC_H

#include "core/rc.h"

struct jk_periodic;

/* Starts a thread that calls fn(arg) at once and then every interval_ms (measured on the
 * monotonic clock, so a change of the wall clock does not stall it) until jk_periodic_stop. */
jk_rc jk_periodic_start(void (*fn)(void *arg), void *arg, int interval_ms,
                        struct jk_periodic **out);

/* Wakes the thread for a call now (e.g. when new work was queued). NULL is allowed. */
void jk_periodic_kick(struct jk_periodic *p);

/* Stops the thread (waiting for a call in progress to end) and frees p. NULL is allowed. */
void jk_periodic_stop(struct jk_periodic *p);

#endif
