/* test_booking.c - the booking pool with the clock passed in: the rules file and local time;
 * daily waves and the reserve's return to the public; a hold that lapses frees its place with
 * no job; limits, one booking per session and their refusals; cancellation before and after
 * the deadline, no-shows and the suspension they bring; the waiting list's offer; and races
 * of many threads for one slice and of one person from many threads, on SQLite and (with
 * JK_TEST_PG_URL) on PostgreSQL: never more bookings than places, never past a limit. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "svc/booking/booking.h"
#include "store/store.h"

#define MIN  60000LL
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)

/* 2026-11-30 is a Monday; 08:00 local (UTC+8) is 00:00 UTC. */
#define MON_0800 1795996800000LL /* 2026-11-30T00:00:00Z */

struct fx {
    char dir[64], url[512];
    jk_store *st;
    struct jk_bk_rules *rules;
};

static struct jk_bk_rules *load_rules(const char *path)
{
    char err[512];
    struct jk_bk_rules *r = NULL;
    jk_rc rc = jk_bk_rules_load(path, &r, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    return r;
}

/* rules/booking.json with one rule's value replaced (value: JSON text), written to a file in
 * dir; NULL code: unchanged. */
static struct jk_bk_rules *rules_with(const char *dir, const char *code, const char *value)
{
    char path[128];
    struct json_object *root = json_object_from_file("rules/booking.json"), *rules, *rule;
    if (!root) return NULL;
    if (code) {
        json_object_object_get_ex(root, "rules", &rules);
        json_object_object_get_ex(rules, code, &rule);
        json_object_object_add(rule, "value", json_tokener_parse(value));
    }
    snprintf(path, sizeof path, "%s/booking.json", dir);
    json_object_to_file(path, root);
    json_object_put(root);
    struct jk_bk_rules *r = load_rules(path);
    unlink(path);
    return r;
}

static jk_rc exec_tx(jk_conn *c, void *arg)
{
    return jk_conn_exec(c, arg);
}

static void sql(struct fx *f, const char *text)
{
    assert_int_equal(jk_store_tx(f->st, exec_tx, (void *)text), JK_OK);
}

static long count(struct fx *f, const char *text)
{
    jk_conn *c = jk_store_conn(f->st);
    jk_stmt *s;
    int has_row = 0;
    long n = -1;
    if (!jk_conn_prepare_once(c, text, &s)) {
        if (!jk_stmt_step(s, &has_row) && has_row) n = (long)jk_stmt_col_int(s, 0);
        jk_stmt_finalize(s);
    }
    return n;
}

/* A person with one Patient record (the index's tables, as the index writes them). */
static void person(struct fx *f, const char *patient)
{
    char text[512];
    snprintf(text, sizeof text,
             "INSERT INTO mpi_person (id, status, created_ms, updated_ms) VALUES ('P-%s', "
             "'active', 0, 0); INSERT INTO mpi_record (patient_id, person_id, state, how, "
             "updated_ms) VALUES ('%s', 'P-%s', 'linked', 'test', 0)",
             patient, patient, patient);
    sql(f, text);
}

/* A slot of service dept-a at hosp-a starting at start_ms (15 minutes), its places split
 * and timed as the generator does, under rules r. */
static void slot(struct fx *f, const char *id, const char *service, int64_t start_ms, int capacity)
{
    struct jk_bk_policy p;
    char day[11], text[4096];
    int counts[JK_BK_N_CHANNELS], n = 0;
    jk_bk_policy(f->rules, "hosp-a", &p);
    jk_bk_day(&p, start_ms, day);
    snprintf(text, sizeof text,
             "INSERT INTO bk_slot (slot_id, schedule_id, org, service, actor, fee_level, day, "
             "session, start_ms, end_ms, capacity, status) VALUES ('%s', '%s', 'hosp-a', '%s', "
             "'', 'expert', '%s', '%s', %lld, %lld, %d, 'open')",
             id, id, service, day, jk_bk_session(&p, start_ms), (long long)start_ms,
             (long long)(start_ms + 15 * MIN), capacity);
    sql(f, text);
    jk_bk_split(&p, capacity, counts);
    for (int ch = 0; ch < JK_BK_N_CHANNELS; ch++)
        for (int i = 0; i < counts[ch]; i++) {
            int64_t open_ms, public_ms;
            jk_bk_place_times(&p, (enum jk_bk_channel)ch, day, start_ms, &open_ms, &public_ms);
            snprintf(text, sizeof text,
                     "INSERT INTO bk_place (slot_id, n, channel, open_ms, public_ms) VALUES "
                     "('%s', %d, '%s', %lld, %lld)",
                     id, ++n, jk_bk_channel_name((enum jk_bk_channel)ch), (long long)open_ms,
                     (long long)public_ms);
            sql(f, text);
        }
}

/* ---- calls in a transaction ---- */

enum op { HOLD, BOOK, CANCEL, WAIT, SWEEP, RESCHEDULE };

struct call {
    struct fx *f;
    enum op op;
    int64_t now_ms, hold_id;
    const char *slot, *appointment;
    struct jk_bk_who w;
    struct jk_bk_booking out;
    struct jk_arena *a;
    struct jk_diag d;
    size_t n_done;
    int64_t wait_id;
};

static jk_rc call_tx(jk_conn *c, void *arg)
{
    struct call *x = arg;
    struct jk_bk_call k = {x->a, &x->d, x->now_ms, x->f->rules};
    switch (x->op) {
    case HOLD: return jk_bk_hold(c, &k, x->slot, &x->w, &x->out);
    case BOOK: return jk_bk_book(c, &k, x->hold_id, x->slot, &x->w, &x->out);
    case CANCEL: return jk_bk_cancel(c, &k, x->appointment, "test", &x->out);
    case WAIT: return jk_bk_wait(c, &k, x->slot, &x->w, &x->wait_id);
    case RESCHEDULE: return jk_bk_reschedule(c, &k, x->appointment, x->slot, &x->w, &x->out);
    default: return jk_bk_sweep(c, &k, 100, &x->n_done);
    }
}

/* Runs op; x is left for the caller to read, and freed by done(). */
static jk_rc run(struct call *x, struct fx *f, enum op op, int64_t now_ms)
{
    x->f = f;
    x->op = op;
    x->now_ms = now_ms;
    x->a = jk_arena_new(0);
    jk_diag_init(&x->d, x->a);
    if (!x->w.account_id) x->w.account_id = 1;
    jk_rc rc = jk_store_tx(f->st, call_tx, x);
    if (rc && getenv("JK_TEST_VERBOSE"))
        fprintf(stderr, "  %s: %s\n", jk_rc_name(rc), x->d.head ? x->d.head->msg : "");
    return rc;
}

static void done(struct call *x)
{
    jk_arena_free(x->a);
    x->a = NULL;
}

/* The detail code (the rule) of the first refusal. */
static const char *rule_of(const struct call *x)
{
    return x->d.head && x->d.head->detail_code ? x->d.head->detail_code : "";
}

static jk_rc book(struct fx *f, const char *patient, const char *slot_id, int64_t now_ms,
                  enum jk_bk_channel ch, const char **appointment)
{
    struct call x = {.slot = slot_id, .w = {.patient_id = patient, .channel = ch}};
    jk_rc rc = run(&x, f, BOOK, now_ms);
    if (!rc && appointment) *appointment = strdup(x.out.appointment_id);
    if (rc && x.d.head) fprintf(stderr, "  (refused: %s)\n", x.d.head->msg);
    done(&x);
    return rc;
}

/* ---- fixtures ---- */

static jk_keys *keys;

/* Resources are sealed when written: the keys of a test platform. */
static int keys_setup(void)
{
    char err[512] = "";
    unsigned char master[JK_MASTER_BYTES];
    memset(master, 0x42, sizeof master);
    if (keys) return 0;
    if (jk_keys_from(master, NULL, &keys) ||
        jk_protect_init(keys, "rules/identity.json", err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    char err[256];
    if (keys_setup()) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-booking.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->url, sizeof f->url, "sqlite:%s/t.db", f->dir);
    if (jk_store_open(f->url, &f->st, err, sizeof err) || jk_store_migrate(f->st, NULL)) return -1;
    f->rules = load_rules("rules/booking.json");
    *state = f;
    return f->rules ? 0 : -1;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    char cmd[128];
    jk_store_close(f->st);
    jk_bk_rules_free(f->rules);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd)) return -1;
    free(f);
    return 0;
}

/* ---- rules and time ---- */

static void test_rules_file(void **state)
{
    struct fx *f = *state;
    struct jk_bk_policy p, xm;
    jk_bk_policy(f->rules, NULL, &p);
    assert_int_equal(p.utc_offset_min, 480);
    assert_int_equal(p.quota[JK_BK_ONLINE] + p.quota[JK_BK_WINDOW] + p.quota[JK_BK_PHONE] +
                         p.quota[JK_BK_REFERRAL] + p.quota[JK_BK_FAMILY],
                     100);
    jk_bk_policy(f->rules, "Organization/hosp-xm-1", &xm);
    assert_int_equal(xm.release_min, 15 * 60); /* an institution's override */
    assert_int_equal(xm.cancel_min, 16 * 60);
    assert_int_equal(xm.days_ahead, p.days_ahead); /* and the defaults for the rest */

    static const char *const bad[][2] = {
        {"quota.percent", "{\"window\":20,\"online\":45,\"phone\":5,\"referral\":20,\"family\":5}"},
        {"release.time", "\"7:00\""},
        {"limit.counts", "[{\"scope\":\"ward\",\"period\":\"day\",\"max\":1}]"},
        {"noshow.ladder", "[{\"count\":6,\"days\":90},{\"count\":3,\"days\":180}]"},
        {"institutions", "{\"hosp-x\":{\"roles.staff\":[\"doctor\"]}}"},
        {"roles.staff", "[\"resident\"]"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct jk_bk_rules *r = rules_with(f->dir, bad[i][0], bad[i][1]);
        if (r) fail_msg("rule %s = %s was accepted", bad[i][0], bad[i][1]);
    }
}

static void test_local_time(void **state)
{
    struct fx *f = *state;
    struct jk_bk_policy p;
    char day[11];
    int64_t ms;
    jk_bk_policy(f->rules, NULL, &p);
    /* 2026-11-29T16:00Z is midnight of Monday the 30th in Beijing */
    assert_string_equal(jk_bk_day(&p, MON_0800 - 8 * HOUR, day), "2026-11-30");
    assert_string_equal(jk_bk_day(&p, MON_0800 - 8 * HOUR - 1, day), "2026-11-29");
    assert_int_equal(jk_bk_at(&p, "2026-11-30", 8 * 60, &ms), JK_OK);
    assert_int_equal(ms, MON_0800);
    assert_int_equal(jk_bk_at(&p, "2026-02-30", 0, &ms), JK_EINVAL);
    assert_int_equal(jk_bk_weekday("2026-11-30"), 0);
    assert_int_equal(jk_bk_weekday("2026-12-06"), 6);
    assert_string_equal(jk_bk_session(&p, MON_0800), "am");
    assert_string_equal(jk_bk_session(&p, MON_0800 + 6 * HOUR), "pm");
    assert_string_equal(jk_bk_day_add("2026-12-31", 1, day), "2027-01-01");

    int counts[JK_BK_N_CHANNELS];
    jk_bk_split(&p, 4, counts); /* 0.8 window, 1.8 online, 0.2 phone, 0.8 referral, 0.4 family */
    assert_int_equal(counts[JK_BK_WINDOW], 1);
    assert_int_equal(counts[JK_BK_ONLINE], 2);
    assert_int_equal(counts[JK_BK_PHONE], 0);
    assert_int_equal(counts[JK_BK_REFERRAL], 1);
    assert_int_equal(counts[JK_BK_FAMILY], 0);
    jk_bk_split(&p, 10, counts);
    assert_int_equal(counts[JK_BK_ONLINE], 5); /* 4.5 and the largest remainder */

    int64_t open_ms, public_ms;
    jk_bk_place_times(&p, JK_BK_ONLINE, "2026-11-30", MON_0800, &open_ms, &public_ms);
    assert_int_equal(open_ms, MON_0800 - 7 * DAY - HOUR); /* 07:00 a week before */
    assert_int_equal(public_ms, 0);
    jk_bk_place_times(&p, JK_BK_REFERRAL, "2026-11-30", MON_0800, &open_ms, &public_ms);
    assert_int_equal(open_ms, MON_0800 - 21 * DAY - HOUR); /* two weeks earlier still */
    assert_int_equal(public_ms, MON_0800 - 24 * HOUR);
}

/* ---- waves, reserve, holds ---- */

static void test_wave_and_reserve(void **state)
{
    struct fx *f = *state;
    struct jk_bk_policy p;
    jk_bk_policy(f->rules, "hosp-a", &p);
    slot(f, "w1", "dept-w", MON_0800 + 1 * DAY, 10); /* Tuesday: online 5 (4.5), referral 2 */
    person(f, "wa");
    person(f, "wb");
    person(f, "wc");
    int64_t opens = MON_0800 + DAY - 7 * DAY - HOUR;
    struct call x = {.slot = "w1", .w = {.patient_id = "wa", .channel = JK_BK_ONLINE}};
    /* a minute before the wave: refused, saying when it opens */
    assert_int_equal(run(&x, f, HOLD, opens - MIN), JK_ERULE);
    assert_string_equal(rule_of(&x), "release.time");
    done(&x);
    /* primary-care staff book the reserve two weeks before the wave */
    const char *appt;
    assert_int_equal(book(f, "wb", "w1", opens - 10 * DAY, JK_BK_REFERRAL, &appt), JK_OK);
    free((void *)appt);
    /* at the wave the online places open */
    assert_int_equal(run(&x, f, BOOK, opens), JK_OK);
    done(&x);
    /* every online place taken: the one referral place left is not the public's ... */
    for (int i = 0; i < 4; i++) {
        char pat[16];
        snprintf(pat, sizeof pat, "wo%d", i);
        person(f, pat);
        assert_int_equal(book(f, pat, "w1", opens + MIN, JK_BK_ONLINE, NULL), JK_OK);
    }
    x = (struct call){.slot = "w1", .w = {.patient_id = "wc", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, opens + 2 * MIN), JK_ECONFLICT);
    assert_string_equal(rule_of(&x), "full");
    done(&x);
    /* ... until it returns to the public 24 hours before the visit */
    x = (struct call){.slot = "w1", .w = {.patient_id = "wc", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, MON_0800 + DAY - 24 * HOUR), JK_OK);
    assert_string_equal(x.out.channel, "online");
    done(&x);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_place WHERE slot_id = 'w1' AND channel = "
                              "'referral' AND state = 'booked'"),
                     2);
}

static void test_hold_lapses(void **state)
{
    struct fx *f = *state;
    struct jk_bk_policy p;
    jk_bk_policy(f->rules, "hosp-a", &p);
    slot(f, "h1", "dept-h", MON_0800, 2); /* online 1 (0.9), window 1 */
    person(f, "ha");
    person(f, "hb");
    int64_t t0 = MON_0800 - 2 * DAY;
    struct call a = {.slot = "h1", .w = {.patient_id = "ha", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&a, f, HOLD, t0), JK_OK);
    assert_string_equal(a.out.state, "held");
    assert_int_equal(a.out.until_ms, t0 + p.hold_s * 1000LL);
    int64_t hold = a.out.id;
    done(&a);
    struct call b = {.slot = "h1",
                     .w = {.patient_id = "hb", .account_id = 2, .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&b, f, HOLD, t0 + p.hold_s * 1000LL - 1), JK_ECONFLICT);
    done(&b);
    /* the hold lapses by itself: the next claimant takes the place, the first one's counters
     * are given back, and its hold cannot be booked any more */
    assert_int_equal(run(&b, f, BOOK, t0 + p.hold_s * 1000LL), JK_OK);
    done(&b);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_booking WHERE person = 'P-ha' AND state "
                              "= 'lapsed'"),
                     1);
    assert_int_equal(count(f, "SELECT coalesce(sum(n), 0) FROM bk_count WHERE person = 'P-ha'"), 0);
    a = (struct call){.hold_id = hold, .w = {.patient_id = "ha", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&a, f, BOOK, t0 + p.hold_s * 1000LL + 1), JK_ECONFLICT);
    assert_string_equal(rule_of(&a), "hold.seconds");
    done(&a);
    /* a hold booked in time becomes the booking */
    slot(f, "h2", "dept-h2", MON_0800, 2);
    a = (struct call){.slot = "h2", .w = {.patient_id = "ha", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&a, f, HOLD, t0), JK_OK);
    hold = a.out.id;
    done(&a);
    a = (struct call){.hold_id = hold, .w = {.patient_id = "ha", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&a, f, BOOK, t0 + MIN), JK_OK);
    assert_string_equal(a.out.state, "booked");
    assert_non_null(a.out.appointment_id);
    done(&a);
    /* someone else's hold is not theirs to book */
    a = (struct call){.slot = "h2",
                      .w = {.patient_id = "hb", .account_id = 2, .channel = JK_BK_ONLINE}};
    slot(f, "h3", "dept-h3", MON_0800, 2);
    a.slot = "h3";
    assert_int_equal(run(&a, f, HOLD, t0), JK_OK);
    hold = a.out.id;
    done(&a);
    a = (struct call){.hold_id = hold,
                      .w = {.patient_id = "ha", .account_id = 1, .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&a, f, BOOK, t0 + MIN), JK_EFORBIDDEN);
    done(&a);
}

/* ---- limits ---- */

static void test_limits(void **state)
{
    struct fx *f = *state;
    struct jk_bk_rules *saved = f->rules;
    f->rules = rules_with(f->dir, "limit.counts",
                          "[{\"scope\":\"department\",\"period\":\"day\",\"max\":1},"
                          "{\"scope\":\"all\",\"period\":\"week\",\"max\":2}]");
    assert_non_null(f->rules);
    int64_t t0 = MON_0800 - 3 * DAY;
    person(f, "la");
    slot(f, "l1", "dept-l", MON_0800, 4);            /* Monday morning, dept-l */
    slot(f, "l2", "dept-l", MON_0800 + 15 * MIN, 4); /* the same session */
    slot(f, "l3", "dept-l", MON_0800 + 6 * HOUR, 4); /* Monday afternoon, same department */
    slot(f, "l4", "dept-m", MON_0800 + DAY, 4);      /* Tuesday, another department */
    slot(f, "l5", "dept-n", MON_0800 + 2 * DAY, 4);  /* Wednesday */
    slot(f, "l6", "dept-n", MON_0800 + 7 * DAY, 4);  /* next Monday */
    const char *appt;
    assert_int_equal(book(f, "la", "l1", t0, JK_BK_ONLINE, &appt), JK_OK);
    struct call x = {.slot = "l2", .w = {.patient_id = "la", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, t0), JK_ERULE);
    assert_string_equal(rule_of(&x), "limit.session_scope");
    done(&x);
    x = (struct call){.slot = "l3", .w = {.patient_id = "la", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, t0), JK_ERULE);
    assert_string_equal(rule_of(&x), "limit.counts");
    assert_non_null(strstr(x.d.head->msg, "2026-12-01")); /* may book from the next day */
    done(&x);
    assert_int_equal(book(f, "la", "l4", t0, JK_BK_ONLINE, NULL), JK_OK);
    x = (struct call){.slot = "l5", .w = {.patient_id = "la", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, t0), JK_ERULE);
    assert_string_equal(rule_of(&x), "limit.counts");
    assert_non_null(strstr(x.d.head->msg, "2026-12-07")); /* the next week */
    done(&x);
    assert_int_equal(book(f, "la", "l6", MON_0800 - HOUR, JK_BK_ONLINE, NULL), JK_OK);
    /* a cancellation gives the week's count back */
    x = (struct call){.appointment = appt};
    assert_int_equal(run(&x, f, CANCEL, t0), JK_OK);
    assert_int_equal(x.out.is_late, 0);
    done(&x);
    free((void *)appt);
    assert_int_equal(book(f, "la", "l5", t0, JK_BK_ONLINE, NULL), JK_OK);
    /* nothing left half-written by the refusals */
    assert_int_equal(count(f, "SELECT count(*) FROM bk_booking WHERE person = 'P-la' AND state "
                              "= 'booked'"),
                     3);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_place WHERE slot_id IN ('l2', 'l3') AND "
                              "state <> 'free'"),
                     0);
    jk_bk_rules_free(f->rules);
    f->rules = saved;
}

/* ---- cancellation, no-shows, suspension ---- */

static void test_noshow_suspends(void **state)
{
    struct fx *f = *state;
    struct jk_bk_policy p;
    jk_bk_policy(f->rules, "hosp-a", &p);
    person(f, "na");
    const char *appt;
    int64_t late = 0;
    /* three no-shows on three days: two not attended, one cancelled too late */
    for (int i = 0; i < 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "n%d", i);
        slot(f, id, "dept-n", MON_0800 + (i + 14) * DAY, 4);
        int64_t start = MON_0800 + (i + 14) * DAY;
        assert_int_equal(book(f, "na", id, start - 2 * DAY, JK_BK_ONLINE, &appt), JK_OK);
        struct call x = {.appointment = appt};
        if (i < 2) {
            /* the sweeper marks it an hour after the slot ends, not before */
            char q[160];
            snprintf(q, sizeof q,
                     "SELECT count(*) FROM bk_booking WHERE appointment_id = '%s' AND state = "
                     "'noshow'",
                     appt);
            assert_int_equal(run(&x, f, SWEEP, start + 15 * MIN + 59 * MIN), JK_OK);
            assert_int_equal(count(f, q), 0);
            done(&x);
            assert_int_equal(run(&x, f, SWEEP, start + 15 * MIN + 60 * MIN), JK_OK);
            assert_int_equal(count(f, q), 1);
        } else {
            /* 15:00 the day before is the deadline: a minute later is late */
            late = start - 17 * HOUR + MIN;
            assert_int_equal(run(&x, f, CANCEL, late), JK_OK);
            assert_int_equal(x.out.is_late, 1);
        }
        done(&x);
        free((void *)appt);
    }
    /* the third suspends online booking for 90 days, with the date in the refusal */
    int64_t now = MON_0800 + 17 * DAY;
    slot(f, "n9", "dept-n9", MON_0800 + 20 * DAY, 4);
    struct call x = {.slot = "n9", .w = {.patient_id = "na", .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, now), JK_ERULE);
    assert_string_equal(rule_of(&x), "noshow.ladder");
    assert_non_null(strstr(x.d.head->msg, "2027-03-"));
    done(&x);
    /* the desk may still book for them */
    assert_int_equal(book(f, "na", "n9", now, JK_BK_WINDOW, NULL), JK_OK);
    int64_t until;
    int noshows;
    assert_int_equal(jk_bk_suspension(jk_store_conn(f->st), "P-na", now, &until, &noshows), JK_OK);
    assert_int_equal(noshows, 3);
    assert_int_equal(until, late + 90 * DAY);
    /* a cancellation in time is free */
    person(f, "nb");
    slot(f, "n10", "dept-n10", MON_0800 + 20 * DAY, 4);
    assert_int_equal(book(f, "nb", "n10", now, JK_BK_ONLINE, &appt), JK_OK);
    x = (struct call){.appointment = appt};
    assert_int_equal(run(&x, f, CANCEL, MON_0800 + 19 * DAY + 7 * HOUR - MIN), JK_OK);
    assert_int_equal(x.out.is_late, 0);
    done(&x);
    free((void *)appt);
}

/* ---- waiting list ---- */

static void test_waitlist_offer(void **state)
{
    struct fx *f = *state;
    int64_t t0 = MON_0800 - 2 * DAY;
    person(f, "qa");
    person(f, "qb");
    slot(f, "q1", "dept-q", MON_0800 + 30 * MIN, 1); /* one place: online */
    const char *appt;
    assert_int_equal(book(f, "qa", "q1", t0, JK_BK_ONLINE, &appt), JK_OK);
    struct call x = {.slot = "q1",
                     .w = {.patient_id = "qb", .account_id = 2, .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, WAIT, t0), JK_OK);
    done(&x);
    x = (struct call){.slot = "q1",
                      .w = {.patient_id = "qb", .account_id = 2, .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, WAIT, t0), JK_ECONFLICT); /* once */
    done(&x);
    /* the cancellation offers the place to qb: a hold and a notification */
    x = (struct call){.appointment = appt};
    assert_int_equal(run(&x, f, CANCEL, t0 + HOUR), JK_OK);
    done(&x);
    free((void *)appt);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_wait WHERE state = 'offered'"), 1);
    assert_int_equal(count(f, "SELECT count(*) FROM outbox WHERE topic = 'booking.offer' AND "
                              "patient_id = 'qb'"),
                     1);
    long hold = count(f, "SELECT booking_id FROM bk_wait WHERE state = 'offered'");
    /* nobody else gets the place meanwhile */
    person(f, "qc");
    x = (struct call){.slot = "q1",
                      .w = {.patient_id = "qc", .account_id = 3, .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, t0 + HOUR + MIN), JK_ECONFLICT);
    done(&x);
    x = (struct call){.hold_id = hold,
                      .w = {.patient_id = "qb", .account_id = 2, .channel = JK_BK_ONLINE}};
    assert_int_equal(run(&x, f, BOOK, t0 + HOUR + 2 * MIN), JK_OK);
    done(&x);
    assert_int_equal(count(f, "SELECT n_booked FROM bk_slot WHERE slot_id = 'q1'"), 1);
}

/* ---- races ---- */

struct racer {
    struct fx *f;
    const char *slot;
    char patient[32];
    int64_t account;
    jk_rc rc;
};

static void *race_main(void *arg)
{
    struct racer *r = arg;
    struct call x = {
        .slot = r->slot,
        .w = {.patient_id = r->patient, .account_id = r->account, .channel = JK_BK_WINDOW}};
    r->rc = run(&x, r->f, BOOK, MON_0800 - DAY);
    done(&x);
    return NULL;
}

static void race(struct fx *f, const char *prefix, int n_people, int n_threads,
                 const char *const *slots, size_t n_slots)
{
    pthread_t *t = calloc((size_t)n_threads, sizeof *t);
    struct racer *r = calloc((size_t)n_threads, sizeof *r);
    for (int i = 0; i < n_threads; i++) {
        r[i].f = f;
        r[i].slot = slots[(size_t)i % n_slots];
        snprintf(r[i].patient, sizeof r[i].patient, "%s%d", prefix, i % n_people);
        r[i].account = 100 + i;
    }
    for (int i = 0; i < n_threads; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_main, &r[i]), 0);
    for (int i = 0; i < n_threads; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < n_threads; i++)
        if (r[i].rc != JK_OK && r[i].rc != JK_ECONFLICT && r[i].rc != JK_ERULE)
            fail_msg("a racer failed with %s", jk_rc_name(r[i].rc));
    free(t);
    free(r);
}

static void test_race_one_slice(void **state)
{
    struct fx *f = *state;
    char text[128];
    sql(f, "UPDATE bk_slot SET status = 'open' WHERE 1 = 0"); /* connection warm-up */
    slot(f, "r1", "dept-r", MON_0800 + 3 * HOUR, 10);
    sql(f, "UPDATE bk_place SET channel = 'window' WHERE slot_id = 'r1'");
    for (int i = 0; i < 200; i++) {
        snprintf(text, sizeof text, "r%d", i);
        person(f, text);
    }
    static const char *const slots[] = {"r1"};
    race(f, "r", 200, 200, slots, 1);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_booking WHERE slot_id = 'r1' AND state = "
                              "'booked'"),
                     10);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_place WHERE slot_id = 'r1' AND state = "
                              "'booked'"),
                     10);
    assert_int_equal(count(f, "SELECT n_booked FROM bk_slot WHERE slot_id = 'r1'"), 10);
    assert_int_equal(count(f, "SELECT count(DISTINCT booking_id) FROM bk_place WHERE slot_id = "
                              "'r1' AND state = 'booked'"),
                     10);
}

static void test_race_one_person(void **state)
{
    struct fx *f = *state;
    /* one person, 40 threads, eight slots of one session and department: exactly one */
    person(f, "s0");
    static const char *const slots[] = {"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8"};
    for (int i = 0; i < 8; i++) {
        slot(f, slots[i], "dept-s", MON_0800 + i * 15 * MIN, 4);
        char text[128];
        snprintf(text, sizeof text, "UPDATE bk_place SET channel = 'window' WHERE slot_id = '%s'",
                 slots[i]);
        sql(f, text);
    }
    race(f, "s", 1, 40, slots, 8);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_booking WHERE person = 'P-s0' AND state "
                              "= 'booked'"),
                     1);
    assert_int_equal(count(f, "SELECT count(*) FROM bk_place WHERE slot_id LIKE 's_' AND state "
                              "<> 'free'"),
                     1);
    assert_int_equal(count(f, "SELECT max(n) FROM bk_count WHERE person = 'P-s0'"), 1);
}

static int pg_setup(void **state)
{
    const char *url = getenv("JK_TEST_PG_URL");
    char err[256];
    jk_store *admin;
    if (!url) {
        *state = NULL;
        return 0;
    }
    struct fx *f = calloc(1, sizeof *f);
    if (keys_setup()) return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-booking.XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    if (jk_store_open(url, &admin, err, sizeof err)) return -1;
    jk_rc rc = jk_store_tx(admin, exec_tx,
                           "DROP SCHEMA IF EXISTS jk_test_booking CASCADE; CREATE SCHEMA "
                           "jk_test_booking");
    jk_store_close(admin);
    snprintf(f->url, sizeof f->url, "%s%soptions=-csearch_path%%3Djk_test_booking", url,
             strchr(url, '?') ? "&" : "?");
    if (rc || jk_store_open(f->url, &f->st, err, sizeof err) || jk_store_migrate(f->st, NULL))
        return -1;
    f->rules = load_rules("rules/booking.json");
    *state = f;
    return f->rules ? 0 : -1;
}

static int pg_teardown(void **state)
{
    return *state ? fx_teardown(state) : 0;
}

static void test_pg_races(void **state)
{
    if (!*state) skip();
    test_race_one_slice(state);
    test_race_one_person(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules_file),       cmocka_unit_test(test_local_time),
        cmocka_unit_test(test_wave_and_reserve), cmocka_unit_test(test_hold_lapses),
        cmocka_unit_test(test_limits),           cmocka_unit_test(test_noshow_suspends),
        cmocka_unit_test(test_waitlist_offer),   cmocka_unit_test(test_race_one_slice),
        cmocka_unit_test(test_race_one_person),
    };
    const struct CMUnitTest pg[] = {cmocka_unit_test(test_pg_races)};
    int failed = cmocka_run_group_tests_name("booking (SQLite)", tests, fx_setup, fx_teardown);
    failed += cmocka_run_group_tests_name("booking (PostgreSQL)", pg, pg_setup, pg_teardown);
    jk_keys_free(keys);
    return failed;
}
