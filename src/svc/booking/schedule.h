/* schedule.h - where slots come from: a Schedule's session templates turned into Slots, their
 * bk_slot rows and the places of each slice (split by channel), over a rolling horizon; and
 * the statistics of the pool. docs/internals/booking.md, "Resources", "Tables", "The pool". */
#ifndef JK_BK_SCHEDULE_H
#define JK_BK_SCHEDULE_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"
#include "svc/booking/booking.h"

struct jk_arena;
struct jk_diag;

#define JK_BK_SESSION_URL   "https://jiankang.example/fhir/StructureDefinition/schedule-session"
#define JK_BK_EXCEPTION_URL "https://jiankang.example/fhir/StructureDefinition/schedule-exception"
#define JK_BK_CAPACITY_URL  "https://jiankang.example/fhir/StructureDefinition/slot-capacity"
#define JK_BK_FEE_SYSTEM    "https://jiankang.example/fhir/CodeSystem/fee-level"
#define JK_BK_PRICE_URL     "https://jiankang.example/fhir/StructureDefinition/price"

#define JK_BK_MAX_SESSIONS    64     /* session templates of one Schedule */
#define JK_BK_MAX_EXCEPTIONS  256    /* exceptions of one Schedule */
#define JK_BK_MAX_PER_SLICE   200    /* places in one slice */
#define JK_BK_MAX_DAYS        366    /* days one generation may cover */
#define JK_BK_SCHEDULE_ID_MAX 51     /* a Schedule id leaves room for "-yyyymmddhhmm" */
#define JK_BK_MAX_SCHEDULES   100000 /* Schedules the horizon extends */

/* A booking left in a slot that an exception or a holiday closed: the institution calls the
 * patient. Strings in the arena. */
struct jk_bk_affected {
    const char *slot_id;
    int64_t start_ms;
    const char *appointment_id; /* "" while a hold */
    const char *patient_id;
    const char *state; /* held, booked, arrived */
};

struct jk_bk_gen_result {
    size_t n_new;                    /* slots made */
    size_t n_closed;                 /* slots closed now by an exception or a holiday */
    struct jk_bk_affected *affected; /* bookings in the slots closed now (arena) */
    size_t n_affected;
    char org[80]; /* the institution's Organization id */
};

/* The institution holding Schedule schedule_id (the providedBy of its HealthcareService),
 * its Organization id into org (at least 80 bytes). JK_ENOTFOUND / JK_EGONE for an unknown or
 * deleted Schedule, JK_EINVAL with an issue in d (naming the element) when the Schedule has no
 * HealthcareService actor or that service no providedBy. Reads on c. */
jk_rc jk_bk_schedule_org(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const char *schedule_id,
                         char *org, size_t orglen);

/* Generates the slots of Schedule schedule_id for the local days from_day .. through_day
 * (YYYY-MM-DD, inclusive; at most JK_BK_MAX_DAYS) inside the caller's transaction on c,
 * under rules r and the policy of the Schedule's institution:
 *  - reads the Schedule (its session templates and exceptions) and its HealthcareService
 *    (institution, fee level) and checks the templates: JK_EINVAL with an issue in d naming
 *    the element (Schedule.extension[0].extension[2]) for a bad one;
 *  - for each day that is neither an exception nor a public holiday (unless the institution
 *    opens on holidays) and each slice of each session of that weekday starting after now_ms:
 *    the Slot (id <schedule>-<local yyyymmddhhmm>, held by the institution), its bk_slot row
 *    and its places (channels by jk_bk_split, times by jk_bk_place_times). A slice generated
 *    before is left alone, so generating twice makes nothing new;
 *  - closes every open future slot of the Schedule on an exception or holiday day (bk_slot
 *    closed, Slot busy-unavailable): no new booking is taken in it; bookings already made in
 *    it are kept and listed in out->affected.
 * An inactive Schedule (active false) generates nothing (and closes nothing). Strings of out
 * live in a. JK_EDB when the database fails. */
jk_rc jk_bk_generate(jk_conn *c, struct jk_arena *a, struct jk_diag *d, const struct jk_bk_rules *r,
                     const char *schedule_id, const char *from_day, const char *through_day,
                     int64_t now_ms, struct jk_bk_gen_result *out);

/* The last day of the rolling horizon of policy p at now_ms: the local date plus
 * release.days_ahead plus reserve.advance_days (the farthest day any place may open). */
char *jk_bk_horizon_day(const struct jk_bk_policy *p, int64_t now_ms, char out[static 11]);

/* Extends every active Schedule to its institution's horizon, one transaction per Schedule
 * (a Schedule that fails is logged and skipped). *n_new (may be NULL): slots made. JK_EDB
 * when the Schedules cannot be listed. */
jk_rc jk_bk_extend_all(jk_store *st, const struct jk_bk_rules *r, int64_t now_ms, size_t *n_new);

/* A thread (core/periodic.h) that runs jk_bk_extend_all at once and then every every_ms (0:
 * one hour). st and r must outlive it. The caller owns *out and stops it with
 * jk_bk_horizon_stop (NULL allowed), which waits for a run in progress. JK_ENOMEM or
 * JK_EINTERNAL when the thread cannot be made. */
struct jk_bk_horizon;
jk_rc jk_bk_horizon_start(jk_store *st, const struct jk_bk_rules *r, int64_t every_ms,
                          struct jk_bk_horizon **out);
void jk_bk_horizon_stop(struct jk_bk_horizon *h);

/* ---- statistics ---- */

/* One institution, department (HealthcareService) and day; org and service NULL in the
 * total. Counts only. */
struct jk_bk_stat {
    const char *org, *service, *day;
    int64_t published;                /* places of open slots */
    int64_t booked[JK_BK_N_CHANNELS]; /* bookings booked, arrived, fulfilled or no-show */
    int64_t booked_total;
    int64_t reserved_booked; /* of them through reserve.channels */
    int64_t cancelled, cancelled_late, noshow;
    int64_t specialist, specialist_online; /* expert/special places; of them bookable online */
};

/* The statistics of the local days from_day .. to_day (at most JK_BK_MAX_DAYS) of
 * institution org (an Organization id; NULL or "": every institution), one row per
 * institution, service and day in that order (strings and rows in a), and their total.
 * JK_EDB when the database fails. Reads on c. */
jk_rc jk_bk_stats(jk_conn *c, struct jk_arena *a, const struct jk_bk_rules *r, const char *org,
                  const char *from_day, const char *to_day, struct jk_bk_stat **rows,
                  size_t *n_rows, struct jk_bk_stat *total);

#endif
