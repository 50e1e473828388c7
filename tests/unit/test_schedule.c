/* test_schedule.c - slots from a Schedule's session templates, with the days and the clock
 * passed in: how many slots, their local times (UTC+8), the split of each slice's capacity
 * between channels and when each place opens and returns to the public; exceptions and public
 * holidays make nothing, and an exception added later closes the slots it covers and lists
 * the bookings in them; generating twice makes nothing new; bad templates are refused naming
 * the element; the statistics of the pool. On SQLite (the API tests run PostgreSQL too). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/crypto.h"
#include "core/diag.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "store/resource.h"
#include "svc/booking/schedule.h"

#define T0       1788220800000LL /* 2026-09-01T00:00:00Z: the clock, before every slot */
#define MON14_8  1789344000000LL /* 2026-09-14 08:00 local (00:00Z) */
#define MON14_9  1789347600000LL /* 2026-09-14 09:00 local */
#define ONLINE   1788735600000LL /* 2026-09-07 07:00 local: 7 days before, at release.time */
#define RESERVED 1787526000000LL /* 2026-08-24 07:00 local: 14 days earlier still */
#define RETURNS  1789257600000LL /* 2026-09-13 08:00 local: 24 hours before the slot */

#define SESSION(days, start, end, slice, per)                                                      \
    "{\"url\":\"" JK_BK_SESSION_URL "\",\"extension\":[" days                                      \
    ",{\"url\":\"start\",\"valueTime\":\"" start "\"},{\"url\":\"end\",\"valueTime\":\"" end       \
    "\"},{\"url\":\"sliceMinutes\",\"valuePositiveInt\":" slice                                    \
    "},{\"url\":\"perSlice\",\"valuePositiveInt\":" per "}]}"
#define DAY(d)   "{\"url\":\"day\",\"valueCode\":\"" d "\"}"
#define WEEKDAYS DAY("mon") "," DAY("tue") "," DAY("wed") "," DAY("thu") "," DAY("fri")
#define EXCEPTION(from, to, why)                                                                   \
    "{\"url\":\"" JK_BK_EXCEPTION_URL "\",\"extension\":[{\"url\":\"start\",\"valueDate\":\"" from \
    "\"},{\"url\":\"end\",\"valueDate\":\"" to "\"},{\"url\":\"reason\",\"valueString\":\"" why    \
    "\"}]}"

static struct jk_bk_rules *rules;
static jk_keys *keys;

struct db {
    char dir[64];
    jk_store *st;
};

static int group_setup(void **state)
{
    (void)state;
    char err[1024] = "";
    unsigned char master[JK_MASTER_BYTES];
    memset(master, 0x44, sizeof master);
    if (jk_bk_rules_load("rules/booking.json", &rules, err, sizeof err) ||
        jk_keys_from(master, NULL, &keys) ||
        jk_protect_init(keys, "rules/identity.json", err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    jk_bk_rules_free(rules);
    jk_keys_free(keys);
    return 0;
}

static void db_open(struct db *d)
{
    char url[128], err[256];
    snprintf(d->dir, sizeof d->dir, "/tmp/jk-test-schedule.XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    snprintf(url, sizeof url, "sqlite:%s/t.db", d->dir);
    assert_int_equal(jk_store_open(url, &d->st, err, sizeof err), JK_OK);
    assert_int_equal(jk_store_migrate(d->st, NULL), JK_OK);
}

static void db_close(struct db *d)
{
    char cmd[128];
    jk_store_close(d->st);
    snprintf(cmd, sizeof cmd, "rm -rf %s", d->dir);
    assert_int_equal(system(cmd), 0);
}

/* Stores the resource in json (with its id) as an update. */
static void put(struct db *d, const char *json)
{
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag dg;
    jk_diag_init(&dg, a);
    struct json_object *res = json_tokener_parse(json);
    assert_non_null(res);
    struct jk_fhir_write w = {
        .kind = JK_FHIR_UPDATE, .res = res, .arena = a, .diag = &dg, .now_ms = T0};
    w.type = jk_json_str(res, "resourceType");
    w.id = jk_json_str(res, "id");
    assert_int_equal(jk_fhir_write_prepare(&w), JK_OK);
    assert_int_equal(jk_store_tx(d->st, jk_fhir_write_tx, &w), JK_OK);
    json_object_put(res);
    jk_arena_free(a);
}

/* A HealthcareService id of institution org with fee level fee. */
static void service(struct db *d, const char *id, const char *org, const char *fee)
{
    char json[1024];
    snprintf(json, sizeof json,
             "{\"resourceType\":\"HealthcareService\",\"id\":\"%s\",\"providedBy\":{\"reference\":"
             "\"Organization/%s\"},\"name\":\"心血管内科\",\"characteristic\":[{\"coding\":[{"
             "\"system\":\"" JK_BK_FEE_SYSTEM "\",\"code\":\"%s\"}]}]}",
             id, org, fee);
    put(d, json);
}

/* A Schedule id of HealthcareService hs with the extensions exts (JSON list members). */
static void schedule(struct db *d, const char *id, const char *hs, const char *exts)
{
    char json[8192];
    snprintf(json, sizeof json,
             "{\"resourceType\":\"Schedule\",\"id\":\"%s\",\"active\":true,\"extension\":[%s],"
             "\"actor\":[{\"reference\":\"HealthcareService/%s\"},{\"reference\":"
             "\"Practitioner/prac-1\"}]}",
             id, exts, hs);
    put(d, json);
}

struct gen {
    const char *id, *from, *through;
    int64_t now_ms;
    struct jk_arena *a;
    struct jk_diag d;
    struct jk_bk_gen_result res;
};

static jk_rc gen_tx(jk_conn *c, void *arg)
{
    struct gen *g = arg;
    return jk_bk_generate(c, g->a, &g->d, rules, g->id, g->from, g->through, g->now_ms, &g->res);
}

/* Generates; the caller frees g->a. */
static jk_rc generate(struct db *d, struct gen *g, const char *id, const char *from,
                      const char *through, int64_t now_ms)
{
    memset(g, 0, sizeof *g);
    g->id = id;
    g->from = from;
    g->through = through;
    g->now_ms = now_ms;
    g->a = jk_arena_new(0);
    jk_diag_init(&g->d, g->a);
    return jk_store_tx(d->st, gen_tx, g);
}

static size_t made(struct db *d, const char *id, const char *from, const char *through,
                   int64_t now_ms)
{
    struct gen g;
    jk_rc rc = generate(d, &g, id, from, through, now_ms);
    if (rc)
        fprintf(stderr, "generate %s: %s: %s\n", id, jk_rc_name(rc), g.d.head ? g.d.head->msg : "");
    assert_int_equal(rc, JK_OK);
    jk_arena_free(g.a);
    return g.res.n_new;
}

static const char sql_n_slots[] = "SELECT COUNT(*) FROM bk_slot WHERE schedule_id = ?";
static const char sql_n_slots_day[] =
    "SELECT COUNT(*) FROM bk_slot WHERE schedule_id = ? AND day = ? AND status = 'open'";
static const char sql_n_slot_res[] =
    "SELECT COUNT(*) FROM resource_version WHERE type = 'Slot' AND is_current = 1 AND id LIKE ?";
static const char sql_slot_get[] =
    "SELECT org, service, actor, fee_level, day, session, start_ms, end_ms, capacity, status"
    " FROM bk_slot WHERE slot_id = ?";
static const char sql_places[] = "SELECT n, channel, open_ms, public_ms, state FROM bk_place"
                                 " WHERE slot_id = ? ORDER BY n";
static const char sql_holder[] = "SELECT org FROM res_owner WHERE type = 'Slot' AND id = ?";

static int64_t count1(struct db *d, const char *sql, const char *a1, const char *a2)
{
    jk_conn *c = jk_store_conn(d->st);
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare(c, sql, &s), JK_OK);
    jk_stmt_text_arg(s, 1, a1, strlen(a1));
    if (a2) jk_stmt_text_arg(s, 2, a2, strlen(a2));
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    int64_t n = jk_stmt_col_int(s, 0);
    jk_stmt_reset(s);
    return n;
}

static struct json_object *slot_json(struct db *d, const char *id)
{
    struct jk_arena *a = jk_arena_new(0);
    struct jk_res r;
    assert_int_equal(jk_res_read(jk_store_conn(d->st), a, "Slot", id, &r), JK_OK);
    struct json_object *o = json_tokener_parse(r.body);
    jk_arena_free(a);
    assert_non_null(o);
    return o;
}

/* A week of weekday mornings (16 slices of 15 minutes, 10 places each) and Wednesday
 * afternoons (2 slices of 30 minutes, 4 places): 82 slots, at local times, split by channel. */
static void test_generates_a_week(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    service(&d, "hs-cardio", "org-a", "expert");
    schedule(&d, "s1", "hs-cardio",
             SESSION(WEEKDAYS, "08:00:00", "12:00:00", "15",
                     "10") "," SESSION(DAY("wed"), "14:00:00", "15:00:00", "30", "4"));
    assert_int_equal(made(&d, "s1", "2026-09-14", "2026-09-20", T0), 82);
    assert_int_equal(count1(&d, sql_n_slots, "s1", NULL), 82);
    assert_int_equal(count1(&d, sql_n_slot_res, "s1-%", NULL), 82);
    assert_int_equal(count1(&d, sql_n_slots_day, "s1", "2026-09-19"), 0); /* Saturday */
    assert_int_equal(count1(&d, sql_n_slots_day, "s1", "2026-09-16"), 18);

    /* The first slice: Monday 08:00 in UTC+8. */
    jk_conn *c = jk_store_conn(d.st);
    jk_stmt *s;
    int has_row = 0;
    size_t len;
    assert_int_equal(jk_conn_prepare(c, sql_slot_get, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "s1-202609140800", 15);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    assert_string_equal(jk_stmt_col_text(s, 0, &len), "org-a");
    assert_string_equal(jk_stmt_col_text(s, 1, &len), "hs-cardio");
    assert_string_equal(jk_stmt_col_text(s, 2, &len), "Practitioner/prac-1");
    assert_string_equal(jk_stmt_col_text(s, 3, &len), "expert");
    assert_string_equal(jk_stmt_col_text(s, 4, &len), "2026-09-14");
    assert_string_equal(jk_stmt_col_text(s, 5, &len), "am");
    assert_int_equal(jk_stmt_col_int(s, 6), MON14_8);
    assert_int_equal(jk_stmt_col_int(s, 7), MON14_8 + 15 * 60000);
    assert_int_equal(jk_stmt_col_int(s, 8), 10);
    assert_string_equal(jk_stmt_col_text(s, 9, &len), "open");
    jk_stmt_reset(s);

    /* 10 places: window 2, online 5 (largest remainder, tie to the lower channel), phone 0,
     * referral 2, family 1; public ones open 7 days before at 07:00, reserved ones 14 days
     * earlier and return to the public 24 hours before the slot. */
    static const char *const want[] = {"window", "window", "online",   "online",   "online",
                                       "online", "online", "referral", "referral", "family"};
    assert_int_equal(jk_conn_prepare(c, sql_places, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "s1-202609140800", 15);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
        assert_true(has_row);
        assert_int_equal(jk_stmt_col_int(s, 0), i + 1);
        assert_string_equal(jk_stmt_col_text(s, 1, &len), want[i]);
        int is_reserved = i >= 7;
        assert_int_equal(jk_stmt_col_int(s, 2), is_reserved ? RESERVED : ONLINE);
        assert_int_equal(jk_stmt_col_int(s, 3), is_reserved ? RETURNS : 0);
        assert_string_equal(jk_stmt_col_text(s, 4, &len), "free");
    }
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_false(has_row);
    jk_stmt_reset(s);
    /* 4 places: window 1, online 2, referral 1 */
    assert_int_equal(jk_conn_prepare(c, sql_places, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "s1-202609161430", 15);
    static const char *const want4[] = {"window", "online", "online", "referral"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
        assert_true(has_row);
        assert_string_equal(jk_stmt_col_text(s, 1, &len), want4[i]);
    }
    jk_stmt_reset(s);

    /* The Slot resource: local times, capacity, the schedule, held by the institution. */
    struct json_object *slot = slot_json(&d, "s1-202609161430"), *v;
    assert_string_equal(jk_json_str(slot, "start"), "2026-09-16T14:30:00+08:00");
    assert_string_equal(jk_json_str(slot, "end"), "2026-09-16T15:00:00+08:00");
    assert_string_equal(jk_json_str(slot, "status"), "free");
    assert_true(json_object_object_get_ex(slot, "schedule", &v));
    assert_string_equal(jk_json_str(v, "reference"), "Schedule/s1");
    assert_true(json_object_object_get_ex(slot, "extension", &v));
    v = json_object_array_get_idx(v, 0);
    assert_string_equal(jk_json_str(v, "url"), JK_BK_CAPACITY_URL);
    assert_true(json_object_object_get_ex(v, "valuePositiveInt", &v));
    assert_int_equal(json_object_get_int(v), 4);
    json_object_put(slot);
    assert_int_equal(jk_conn_prepare(c, sql_holder, &s), JK_OK);
    jk_stmt_text_arg(s, 1, "s1-202609161430", 15);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    assert_string_equal(jk_stmt_col_text(s, 0, &len), "Organization/org-a");
    jk_stmt_reset(s);
    db_close(&d);
}

/* Generating again makes nothing new; a longer range adds only its new days; slices that
 * started already are not made; an inactive Schedule makes nothing. */
static void test_idempotent_and_clock(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    service(&d, "hs-1", "org-a", "general");
    schedule(&d, "s2", "hs-1", SESSION(WEEKDAYS, "08:00:00", "12:00:00", "15", "4"));
    assert_int_equal(made(&d, "s2", "2026-09-14", "2026-09-15", T0), 32);
    assert_int_equal(made(&d, "s2", "2026-09-14", "2026-09-15", T0), 0);
    assert_int_equal(made(&d, "s2", "2026-09-14", "2026-09-16", T0), 16);
    assert_int_equal(count1(&d, sql_n_slots, "s2", NULL), 48);
    assert_int_equal(count1(&d, sql_n_slot_res, "s2-%", NULL), 48);

    /* At 09:00 on Monday: only the slices from 09:15 on. */
    schedule(&d, "s3", "hs-1", SESSION(WEEKDAYS, "08:00:00", "12:00:00", "15", "4"));
    assert_int_equal(made(&d, "s3", "2026-09-14", "2026-09-14", MON14_9), 11);

    /* Without a through day: today up to release.days_ahead + reserve.advance_days ahead. */
    char through[11];
    struct jk_bk_policy p;
    jk_bk_policy(rules, "org-a", &p);
    assert_string_equal(jk_bk_horizon_day(&p, T0, through), "2026-09-22");
    schedule(&d, "s4", "hs-1", SESSION(DAY("mon"), "08:00:00", "09:00:00", "30", "2"));
    assert_int_equal(made(&d, "s4", NULL, NULL, T0), 6); /* Mondays 09-07, 09-14, 09-21 */

    put(&d, "{\"resourceType\":\"Schedule\",\"id\":\"s5\",\"active\":false,\"extension\":[" SESSION(
                WEEKDAYS, "08:00:00", "12:00:00", "15",
                "4") "],\"actor\":[{\"reference\":\"HealthcareService/hs-1\"}]}");
    assert_int_equal(made(&d, "s5", "2026-09-14", "2026-09-18", T0), 0);
    db_close(&d);
}

/* Exception days and public holidays make nothing, unless the institution opens on holidays
 * (hosp-xm-1 in rules/booking.json). 2026-09-25 is 中秋节, 2026-10-01 to 10-07 国庆节. */
static void test_exceptions_and_holidays(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    service(&d, "hs-a", "org-a", "general");
    service(&d, "hs-xm", "hosp-xm-1", "general");
    schedule(&d, "ex", "hs-a",
             SESSION(WEEKDAYS, "08:00:00", "09:00:00", "30",
                     "2") "," EXCEPTION("2026-09-22", "2026-09-23", "进修"));
    /* Mon 21, Thu 24 (Tue-Wed on leave, Fri a holiday) */
    assert_int_equal(made(&d, "ex", "2026-09-21", "2026-09-27", T0), 4);
    assert_int_equal(count1(&d, sql_n_slots_day, "ex", "2026-09-22"), 0);
    assert_int_equal(count1(&d, sql_n_slots_day, "ex", "2026-09-25"), 0);
    assert_int_equal(made(&d, "ex", "2026-09-28", "2026-10-09", T0), 10); /* 28-30, 8, 9 */

    schedule(&d, "xm", "hs-xm", SESSION(WEEKDAYS, "08:00:00", "09:00:00", "30", "2"));
    assert_int_equal(made(&d, "xm", "2026-09-21", "2026-09-27", T0), 10);
    assert_int_equal(count1(&d, sql_n_slots_day, "xm", "2026-09-25"), 2);
    db_close(&d);
}

static const char sql_book[] =
    "INSERT INTO bk_booking (appointment_id, slot_id, place_id, person, patient_id, account_id,"
    " channel, org, service, day, session_key, state, created_ms, updated_ms)"
    " VALUES (?, ?, 1, 'person-1', 'pat-1', 1, ?, 'org-a', ?, ?, ?, ?, 0, 0)";
static const char sql_place_booked[] =
    "UPDATE bk_place SET state = 'booked', booking_id = 1 WHERE slot_id = ? AND n = 1";

struct booking {
    const char *appointment, *slot, *channel, *service, *day, *state;
};

static jk_rc book_tx(jk_conn *c, void *arg)
{
    const struct booking *b = arg;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_book, &s);
    if (rc) return rc;
    const char *v[] = {b->appointment, b->slot,        b->channel, b->service,
                       b->day,         b->appointment, b->state};
    for (int i = 0; i < 7; i++)
        jk_stmt_text_arg(s, i + 1, v[i], strlen(v[i]));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    if (rc || (rc = jk_conn_prepare(c, sql_place_booked, &s))) return rc;
    jk_stmt_text_arg(s, 1, b->slot, strlen(b->slot));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* An exception added after generation closes the slots it covers: no new booking, the Slot
 * busy-unavailable with the reason; bookings made in them are kept and listed. */
static void test_exception_after_generation(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    service(&d, "hs-a", "org-a", "general");
    schedule(&d, "late", "hs-a", SESSION(WEEKDAYS, "08:00:00", "09:00:00", "30", "2"));
    assert_int_equal(made(&d, "late", "2026-09-14", "2026-09-18", T0), 10);
    struct booking b = {"appt-1", "late-202609160830", "online", "hs-a", "2026-09-16", "booked"};
    assert_int_equal(jk_store_tx(d.st, book_tx, &b), JK_OK);
    schedule(&d, "late", "hs-a",
             SESSION(WEEKDAYS, "08:00:00", "09:00:00", "30",
                     "2") "," EXCEPTION("2026-09-16", "2026-09-16", "停诊"));
    struct gen g;
    assert_int_equal(generate(&d, &g, "late", "2026-09-14", "2026-09-18", T0), JK_OK);
    assert_int_equal(g.res.n_new, 0);
    assert_int_equal(g.res.n_closed, 2);
    assert_int_equal(g.res.n_affected, 1);
    assert_string_equal(g.res.affected[0].slot_id, "late-202609160830");
    assert_string_equal(g.res.affected[0].appointment_id, "appt-1");
    assert_string_equal(g.res.affected[0].patient_id, "pat-1");
    assert_string_equal(g.res.affected[0].state, "booked");
    jk_arena_free(g.a);
    assert_int_equal(count1(&d, sql_n_slots_day, "late", "2026-09-16"), 0);
    assert_int_equal(count1(&d, sql_n_slots_day, "late", "2026-09-17"), 2);
    struct json_object *slot = slot_json(&d, "late-202609160800");
    assert_string_equal(jk_json_str(slot, "status"), "busy-unavailable");
    assert_string_equal(jk_json_str(slot, "comment"), "停诊");
    json_object_put(slot);
    /* Once closed, again: nothing more to close. */
    assert_int_equal(generate(&d, &g, "late", "2026-09-14", "2026-09-18", T0), JK_OK);
    assert_int_equal(g.res.n_closed, 0);
    jk_arena_free(g.a);
    /* A slot already past is left as it was. */
    schedule(&d, "late", "hs-a",
             SESSION(WEEKDAYS, "08:00:00", "09:00:00", "30",
                     "2") "," EXCEPTION("2026-09-14", "2026-09-17", "停诊"));
    assert_int_equal(generate(&d, &g, "late", "2026-09-14", "2026-09-18", MON14_9), JK_OK);
    assert_int_equal(g.res.n_closed, 4); /* Tuesday's and Thursday's; Monday's had started */
    jk_arena_free(g.a);
    db_close(&d);
}

/* Each bad template is refused with the element that is wrong, and nothing is made. */
static void test_template_errors(void **state)
{
    (void)state;
    static const struct {
        const char *exts, *expr, *code;
    } cases[] = {
        {SESSION(DAY("mon"), "08:00:00", "12:00:00", "45", "4"),
         "Schedule.extension[0].extension[3]", "business-rule"}, /* slot.max_minutes is 30 */
        {SESSION(DAY("mon"), "12:00:00", "08:00:00", "15", "4"),
         "Schedule.extension[0].extension[2]", "value"},
        {SESSION(DAY("mon"), "08:00:00", "12:00:00", "15", "0"),
         "Schedule.extension[0].extension[4]", "value"},
        {SESSION(DAY("mon"), "08:00:00", "12:00:00", "15", "201"),
         "Schedule.extension[0].extension[4]", "value"},
        {SESSION(DAY("lun"), "08:00:00", "12:00:00", "15", "4"),
         "Schedule.extension[0].extension[0]", "value"},
        {SESSION(DAY("mon"), "08:00:30", "12:00:00", "15", "4"),
         "Schedule.extension[0].extension[1]", "value"},
        {SESSION(DAY("mon"), "08:00:00", "12:10:00", "15", "4"),
         "Schedule.extension[0].extension[3]", "value"}, /* not whole slices */
        {"{\"url\":\"" JK_BK_SESSION_URL "\",\"extension\":[" DAY("mon") "]}",
         "Schedule.extension[0]", "required"},
        {EXCEPTION("2026-09-14", "2026-09-14",
                   "x") "," SESSION(DAY("mon"), "08:00:00", "12:00:00", "15",
                                    "4") "," SESSION(DAY("mon"), "11:00:00", "13:00:00", "30", "4"),
         "Schedule.extension[2]", "business-rule"}, /* overlaps */
        {EXCEPTION("2026-09-20", "2026-09-14", "x"), "Schedule.extension[0].extension[1]", "value"},
        {EXCEPTION("2026-02-30", "2026-03-01", "x"), "Schedule.extension[0].extension[0]", "value"},
    };
    struct db d;
    db_open(&d);
    service(&d, "hs-a", "org-a", "general");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        schedule(&d, "bad", "hs-a", cases[i].exts);
        struct gen g;
        jk_rc rc = generate(&d, &g, "bad", "2026-09-14", "2026-09-18", T0);
        if (rc != JK_EINVAL || !g.d.head || !g.d.head->expr ||
            strcmp(g.d.head->expr, cases[i].expr) || strcmp(g.d.head->code, cases[i].code))
            fail_msg("case %zu: rc %s, issue %s at %s: %s", i, jk_rc_name(rc),
                     g.d.head ? g.d.head->code : "-",
                     g.d.head && g.d.head->expr ? g.d.head->expr : "-",
                     g.d.head ? g.d.head->msg : "-");
        jk_arena_free(g.a);
    }
    assert_int_equal(count1(&d, sql_n_slots, "bad", NULL), 0);

    /* No HealthcareService: named at Schedule.actor; one that is unknown too. */
    put(&d, "{\"resourceType\":\"Schedule\",\"id\":\"nohs\",\"actor\":[{\"reference\":"
            "\"Practitioner/prac-1\"}]}");
    put(&d, "{\"resourceType\":\"Schedule\",\"id\":\"unknown-hs\",\"actor\":[{\"reference\":"
            "\"HealthcareService/nope\"}]}");
    put(&d, "{\"resourceType\":\"HealthcareService\",\"id\":\"hs-nobody\"}");
    put(&d, "{\"resourceType\":\"Schedule\",\"id\":\"orphan\",\"actor\":[{\"reference\":"
            "\"HealthcareService/hs-nobody\"}]}");
    static const struct {
        const char *id, *expr;
    } refs[] = {{"nohs", "Schedule.actor"},
                {"unknown-hs", "Schedule.actor"},
                {"orphan", "HealthcareService.providedBy"}};
    for (size_t i = 0; i < 3; i++) {
        struct gen g;
        assert_int_equal(generate(&d, &g, refs[i].id, "2026-09-14", "2026-09-18", T0), JK_EINVAL);
        assert_non_null(g.d.head);
        assert_string_equal(g.d.head->expr, refs[i].expr);
        jk_arena_free(g.a);
    }
    struct gen g;
    assert_int_equal(generate(&d, &g, "missing", "2026-09-14", "2026-09-18", T0), JK_ENOTFOUND);
    jk_arena_free(g.a);
    /* More than a year at once: refused. */
    schedule(&d, "wide", "hs-a", SESSION(DAY("mon"), "08:00:00", "09:00:00", "30", "2"));
    assert_int_equal(generate(&d, &g, "wide", "2026-09-14", "2027-09-15", T0), JK_EINVAL);
    jk_arena_free(g.a);
    db_close(&d);
}

/* Published places, bookings by channel, cancellations, no-shows, the reserved share and the
 * share of specialist places bookable online. */
static void test_stats(void **state)
{
    (void)state;
    struct db d;
    db_open(&d);
    service(&d, "hs-exp", "org-a", "expert");
    service(&d, "hs-gen", "org-a", "general");
    service(&d, "hs-other", "org-b", "general");
    schedule(&d, "st-exp", "hs-exp", SESSION(DAY("mon"), "08:00:00", "09:00:00", "30", "10"));
    schedule(&d, "st-gen", "hs-gen", SESSION(DAY("mon"), "08:00:00", "09:00:00", "30", "4"));
    schedule(&d, "st-other", "hs-other", SESSION(DAY("mon"), "08:00:00", "09:00:00", "30", "4"));
    assert_int_equal(made(&d, "st-exp", "2026-09-14", "2026-09-14", T0), 2);
    assert_int_equal(made(&d, "st-gen", "2026-09-14", "2026-09-14", T0), 2);
    assert_int_equal(made(&d, "st-other", "2026-09-14", "2026-09-14", T0), 2);
    static const struct booking books[] = {
        {"a1", "st-exp-202609140800", "online", "hs-exp", "2026-09-14", "booked"},
        {"a2", "st-exp-202609140830", "referral", "hs-exp", "2026-09-14", "fulfilled"},
        {"a3", "st-exp-202609140800", "window", "hs-exp", "2026-09-14", "noshow"},
        {"a4", "st-exp-202609140800", "online", "hs-exp", "2026-09-14", "cancelled"},
        {"a5", "st-exp-202609140830", "online", "hs-exp", "2026-09-14", "lapsed"},
    };
    for (size_t i = 0; i < sizeof books / sizeof books[0]; i++)
        assert_int_equal(jk_store_tx(d.st, book_tx, (void *)&books[i]), JK_OK);
    struct jk_arena *a = jk_arena_new(0);
    struct jk_bk_stat *rows, total;
    size_t n;
    assert_int_equal(jk_bk_stats(jk_store_conn(d.st), a, rules, "org-a", "2026-09-14", "2026-09-14",
                                 &rows, &n, &total),
                     JK_OK);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].service, "hs-exp");
    assert_string_equal(rows[0].day, "2026-09-14");
    assert_int_equal(rows[0].published, 20);
    assert_int_equal(rows[0].booked[JK_BK_ONLINE], 1);
    assert_int_equal(rows[0].booked[JK_BK_REFERRAL], 1);
    assert_int_equal(rows[0].booked[JK_BK_WINDOW], 1);
    assert_int_equal(rows[0].booked_total, 3);
    assert_int_equal(rows[0].reserved_booked, 1);
    assert_int_equal(rows[0].cancelled, 1);
    assert_int_equal(rows[0].noshow, 1);
    assert_int_equal(rows[0].specialist, 20);
    assert_int_equal(rows[0].specialist_online, 16); /* online 5 + referral 2 + family 1, twice */
    assert_string_equal(rows[1].service, "hs-gen");
    assert_int_equal(rows[1].published, 8);
    assert_int_equal(rows[1].specialist, 0);
    assert_int_equal(total.published, 28);
    assert_int_equal(total.booked_total, 3);
    /* Every institution: org-b's too. */
    assert_int_equal(jk_bk_stats(jk_store_conn(d.st), a, rules, NULL, "2026-09-14", "2026-09-14",
                                 &rows, &n, &total),
                     JK_OK);
    assert_int_equal(n, 3);
    assert_int_equal(total.published, 36);
    /* Another day: nothing. */
    assert_int_equal(jk_bk_stats(jk_store_conn(d.st), a, rules, "org-a", "2026-09-15", "2026-09-20",
                                 &rows, &n, &total),
                     JK_OK);
    assert_int_equal(n, 0);
    jk_arena_free(a);
    db_close(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generates_a_week),
        cmocka_unit_test(test_idempotent_and_clock),
        cmocka_unit_test(test_exceptions_and_holidays),
        cmocka_unit_test(test_exception_after_generation),
        cmocka_unit_test(test_template_errors),
        cmocka_unit_test(test_stats),
    };
    return cmocka_run_group_tests_name("schedule", tests, group_setup, group_teardown);
}
