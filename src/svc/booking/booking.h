/* booking.h - unified appointment booking (统一预约诊疗): the region's slot pool, split by
 * channel, and every booking's life: hold, book, cancel, reschedule, check-in, complete,
 * no-show; per-person limits, suspensions and the waiting list. docs/internals/booking.md.
 *
 * Correctness comes from the database: a place is a row claimed by a conditional update, a
 * limit a counter raised by a conditional update, one appointment per session a partial
 * unique index. Every function that changes something runs inside a store transaction on
 * the connection it is given and takes the time (now_ms) as an argument. */
#ifndef JK_BOOKING_H
#define JK_BOOKING_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"

struct jk_arena;
struct jk_diag;
struct json_object;

/* ---- channels ---- */

enum jk_bk_channel {
    JK_BK_WINDOW,   /* the institution's own desk */
    JK_BK_ONLINE,   /* residents on the web or an app: the public */
    JK_BK_PHONE,    /* the call centre */
    JK_BK_REFERRAL, /* referrals from primary care (reserved) */
    JK_BK_FAMILY,   /* family-doctor reservations (reserved) */
    JK_BK_N_CHANNELS
};
const char *jk_bk_channel_name(enum jk_bk_channel ch); /* "window", ... */
int jk_bk_channel_parse(const char *s);                /* enum value, or -1 */

/* ---- rules (rules/booking.json) ---- */

enum jk_bk_scope { JK_BK_SCOPE_DEPARTMENT, JK_BK_SCOPE_INSTITUTION, JK_BK_SCOPE_ALL };
enum jk_bk_period { JK_BK_DAY, JK_BK_WEEK, JK_BK_MONTH, JK_BK_QUARTER };

#define JK_BK_MAX_LIMITS    8
#define JK_BK_MAX_LADDER    8
#define JK_BK_MAX_REMINDERS 4
#define JK_BK_MAX_ROLES     12

struct jk_bk_limit {
    enum jk_bk_scope scope;
    enum jk_bk_period period;
    int max;
};

struct jk_bk_step { /* count no-shows in a calendar year suspend online booking for days */
    int count, days;
};

/* The rules that hold for one institution: the file's, with its overrides applied. */
struct jk_bk_policy {
    int utc_offset_min;          /* time.utc_offset_minutes */
    int days_ahead;              /* release.days_ahead */
    int release_min;             /* release.time, minutes after local midnight */
    int slot_max_min;            /* slot.max_minutes */
    int quota[JK_BK_N_CHANNELS]; /* quota.percent, summing to 100 */
    unsigned reserved;           /* reserve.channels: bit (1u << channel) */
    int reserve_advance_days;
    int reserve_return_h;
    int hold_s, offer_s;
    int cancel_days_before, cancel_min; /* cancel.deadline */
    enum jk_bk_scope session_scope;
    struct jk_bk_limit limits[JK_BK_MAX_LIMITS];
    size_t n_limits;
    int noshow_after_min;
    struct jk_bk_step ladder[JK_BK_MAX_LADDER]; /* ascending count */
    size_t n_ladder;
    int reminders_min[JK_BK_MAX_REMINDERS];
    size_t n_reminders;
    int holiday_open; /* holiday.open: works on the public holidays of holiday.dates */
};

struct jk_bk_rules; /* the whole file: defaults, overrides, role lists, primary-care kinds */

/* rules/booking.json, or $JIANKANG_BOOKING_RULES when set. */
const char *jk_bk_rules_path(void);

/* Reads and checks the rules file completely; "FILE: /pointer: problem" in err. The caller
 * frees *out with jk_bk_rules_free. */
jk_rc jk_bk_rules_load(const char *path, struct jk_bk_rules **out, char *err, size_t errlen);
void jk_bk_rules_free(struct jk_bk_rules *r);

/* Installs rules for the process (serve, demo, tests): loads path (NULL: jk_bk_rules_path()).
 * Once, before threads use them. */
jk_rc jk_bk_start(const char *path, char *err, size_t errlen);
void jk_bk_stop(void);
const struct jk_bk_rules *jk_bk_rules(void); /* the installed rules (NULL before start) */

/* The policy of organisation org (an Organization id, no "Organization/"; NULL or unknown:
 * the defaults) into *out. */
void jk_bk_policy(const struct jk_bk_rules *r, const char *org, struct jk_bk_policy *out);

/* Whether role (a role name) is in the rules' list: "staff", "schedule", "desk", "stats". */
int jk_bk_role_may(const struct jk_bk_rules *r, const char *list, const char *role);

/* Whether an Organization resource's type codes make it primary care (reserve.primary_care_kinds
 * in system JK_BK_KIND_SYSTEM). */
#define JK_BK_KIND_SYSTEM "https://jiankang.example/fhir/CodeSystem/institution-kind"
int jk_bk_is_primary_care(const struct jk_bk_rules *r, struct json_object *organization);

/* Whether local date day is a public holiday (holiday.dates) on which p's institution closes. */
int jk_bk_is_holiday(const struct jk_bk_rules *r, const struct jk_bk_policy *p, const char *day);

/* ---- local time (the policy's UTC offset; China has no daylight saving) ---- */

/* The local date of ms as "YYYY-MM-DD" (11 bytes). */
char *jk_bk_day(const struct jk_bk_policy *p, int64_t ms, char out[static 11]);
/* The instant of local date day (YYYY-MM-DD) at minute min after midnight; JK_EINVAL when day
 * is not a real date. */
jk_rc jk_bk_at(const struct jk_bk_policy *p, const char *day, int min, int64_t *ms);
/* Whether day is a real date written YYYY-MM-DD. */
int jk_bk_day_ok(const char *day);
/* The day of the week of a valid date: 0 Monday ... 6 Sunday. */
int jk_bk_weekday(const char *day);
/* day plus days (may be negative) into out; NULL when day is not a date. */
char *jk_bk_day_add(const char *day, int days, char out[static 11]);
/* "am" (before 12:00), "pm" (before 18:00) or "night" for a slot starting at ms. */
const char *jk_bk_session(const struct jk_bk_policy *p, int64_t start_ms);

/* ---- places: when each becomes bookable ---- */

/* Capacity split into places per channel by the policy's quota (largest remainder; ties to
 * the lower channel number): counts[ch], summing to capacity. */
void jk_bk_split(const struct jk_bk_policy *p, int capacity, int counts[JK_BK_N_CHANNELS]);
/* When a place of channel ch in a slot of local date day starting at start_ms opens
 * (*open_ms) and, for a reserved channel, when it returns to the public (*public_ms; 0 for a
 * public channel, which is never "returned"). */
void jk_bk_place_times(const struct jk_bk_policy *p, enum jk_bk_channel ch, const char *day,
                       int64_t start_ms, int64_t *open_ms, int64_t *public_ms);

/* ---- the service ---- */

#define JK_BK_REFUSAL_SYSTEM "https://jiankang.example/fhir/CodeSystem/booking-refusal"

/* A slot of the pool (bk_slot). */
struct jk_bk_slot {
    char slot_id[65], schedule_id[65], org[65], service[65], actor[140];
    char fee_level[16], day[11], session[8], status[12];
    int64_t start_ms, end_ms;
    int capacity, n_booked;
};

/* What every call needs: where messages go, the time, the rules. */
struct jk_bk_call {
    struct jk_arena *a;
    struct jk_diag *d;
    int64_t now_ms;
    const struct jk_bk_rules *rules;
};

/* Who claims a place, for whom, through which channel. */
struct jk_bk_who {
    int64_t account_id;
    enum jk_bk_channel channel;
    int is_primary_care;        /* staff of a primary-care institution: reserved places */
    const char *patient_id;     /* the Patient the booking is for */
    const char *notify_patient; /* whose phone gets the messages (the booking resident's) */
};

/* A booking as the service reports it. */
struct jk_bk_booking {
    int64_t id;
    const char *appointment_id; /* NULL for a hold */
    const char *state, *channel, *patient_id, *person, *slot_id;
    const char *org;  /* the slot's institution (an Organization id) */
    int64_t until_ms; /* a hold's end */
    int is_late;      /* cancelled after the deadline: counts as a no-show */
};

/* The slot slot_id. JK_ENOTFOUND. A read. */
jk_rc jk_bk_slot_get(jk_conn *c, const char *slot_id, struct jk_bk_slot *out);

/* How many places of s who could claim now (a read, no lock; for a quick refusal and for
 * $find). */
jk_rc jk_bk_free_places(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *s,
                        const struct jk_bk_who *w, int *n);

/* The refusal when w finds no place of sl: the places open later (release.time, 422), or
 * none is left (full, 409). Always a non-zero rc with an issue. */
jk_rc jk_bk_no_place(jk_conn *c, const struct jk_bk_call *k, const struct jk_bk_slot *sl,
                     const struct jk_bk_who *w);

/* In a transaction: holds one place of slot_id for w (hold.seconds). */
jk_rc jk_bk_hold(jk_conn *c, const struct jk_bk_call *k, const char *slot_id,
                 const struct jk_bk_who *w, struct jk_bk_booking *out);

/* In a transaction: books the hold hold_id (which w's account made and which has not lapsed),
 * or, with hold_id 0, one place of slot_id directly; writes the Appointment. */
jk_rc jk_bk_book(jk_conn *c, const struct jk_bk_call *k, int64_t hold_id, const char *slot_id,
                 const struct jk_bk_who *w, struct jk_bk_booking *out);

/* In a transaction: cancels Appointment appointment_id (free before the deadline, late
 * after it) and offers the place to the first on the slot's waiting list. */
jk_rc jk_bk_cancel(jk_conn *c, const struct jk_bk_call *k, const char *appointment_id,
                   const char *reason, struct jk_bk_booking *out);

/* In a transaction: moves Appointment appointment_id to a place of slot_id, under the same
 * rules as a new booking (through channel of who). */
jk_rc jk_bk_reschedule(jk_conn *c, const struct jk_bk_call *k, const char *appointment_id,
                       const char *slot_id, const struct jk_bk_who *w, struct jk_bk_booking *out);

/* In a transaction: the desk marks Appointment appointment_id arrived (state "arrived"), or
 * the doctor fulfilled ("fulfilled"). */
jk_rc jk_bk_advance(jk_conn *c, const struct jk_bk_call *k, const char *appointment_id,
                    const char *state, struct jk_bk_booking *out);

/* In a transaction: w queues for slot_id, which has no place for w's channel. */
jk_rc jk_bk_wait(jk_conn *c, const struct jk_bk_call *k, const char *slot_id,
                 const struct jk_bk_who *w, int64_t *wait_id);

/* In a transaction: marks no-shows of slots ended noshow.after_minutes ago (suspending
 * persons who reach a step of noshow.ladder), and offers the places of lapsed waiting-list
 * offers to the next in line; at most max bookings. *n_done counts them. */
jk_rc jk_bk_sweep(jk_conn *c, const struct jk_bk_call *k, size_t max, size_t *n_done);

/* Whether Appointment or Slot type/id is the pool's (jk_fhir_owned_fn): registered by
 * jk_bk_start, so that a plain FHIR update or delete cannot put a booking out of step. */
jk_rc jk_bk_owned(jk_conn *c, const char *type, const char *id, int *is_owned, const char **how);

/* The sweeper thread: jk_bk_sweep once a minute on db, with the installed rules. */
jk_rc jk_bk_sweeper_start(jk_store *db);
void jk_bk_sweeper_stop(void);

/* A booking by id or by appointment id (a read). JK_ENOTFOUND. */
jk_rc jk_bk_booking_get(jk_conn *c, struct jk_arena *a, int64_t id, const char *appointment_id,
                        struct jk_bk_booking *out);

/* The suspension of person at now_ms: *until_ms 0 when none. */
jk_rc jk_bk_suspension(jk_conn *c, const char *person, int64_t now_ms, int64_t *until_ms,
                       int *noshows);

#endif
