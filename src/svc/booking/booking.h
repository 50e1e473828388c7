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

#define JK_BK_MAX_LIMITS 8
#define JK_BK_MAX_LADDER 8
#define JK_BK_MAX_REMINDERS 4
#define JK_BK_MAX_ROLES 12

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
    int utc_offset_min;      /* time.utc_offset_minutes */
    int days_ahead;          /* release.days_ahead */
    int release_min;         /* release.time, minutes after local midnight */
    int slot_max_min;        /* slot.max_minutes */
    int quota[JK_BK_N_CHANNELS]; /* quota.percent, summing to 100 */
    unsigned reserved;       /* reserve.channels: bit (1u << channel) */
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

#endif
