/* periodic.c - a thread calling a function at an interval. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "core/periodic.h"

struct jk_periodic {
    void (*fn)(void *arg);
    void *arg;
    int interval_ms;
    int is_stopping, is_kicked;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
};

static void *run(void *arg)
{
    struct jk_periodic *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!p->is_stopping) {
        p->is_kicked = 0;
        pthread_mutex_unlock(&p->lock); /* never hold the lock across the call */
        p->fn(p->arg);
        pthread_mutex_lock(&p->lock);
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += p->interval_ms / 1000;
        until.tv_nsec += (long)(p->interval_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        int err = 0;
        while (!p->is_stopping && !p->is_kicked && err != ETIMEDOUT)
            err = pthread_cond_timedwait(&p->cond, &p->lock, &until);
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

jk_rc jk_periodic_start(void (*fn)(void *arg), void *arg, int interval_ms, struct jk_periodic **out)
{
    struct jk_periodic *p = calloc(1, sizeof *p);
    pthread_condattr_t ca;
    if (!p) return JK_ENOMEM;
    p->fn = fn;
    p->arg = arg;
    p->interval_ms = interval_ms > 0 ? interval_ms : 1000;
    pthread_mutex_init(&p->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&p->thread, NULL, run, p)) {
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return JK_EINTERNAL;
    }
    *out = p;
    return JK_OK;
}

void jk_periodic_kick(struct jk_periodic *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->is_kicked = 1;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

void jk_periodic_stop(struct jk_periodic *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->lock);
    p->is_stopping = 1;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    free(p);
}
