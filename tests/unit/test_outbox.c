/* test_outbox.c - the notification outbox, on SQLite and (with JK_TEST_PG_URL) on PostgreSQL,
 * with the clock passed in: nothing is sent for a transaction that rolled back; a row waits
 * for its due time; voided rows are not sent; a refused message is retried with the rules'
 * back-off and marked failed after the last attempt, and a retry repeats no channel that
 * delivered; a Patient without a mobile phone fails at once; the phone is opened from the
 * sealed Patient; a dispatcher that stopped mid-send leaves its rows to another after the
 * lease; concurrent dispatchers never send one row twice; the thread starts and stops
 * promptly; each template renders as the rules file says; the rules file and the channel
 * list are checked strictly. */
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

#include "notify/outbox.c" /* the channels and rules are replaced and read directly */

#define NOW_MS      1795400000000LL /* 2026-11-22T22:13:20Z */
#define ID_RULES    "rules/identity.json"
#define N_RACE      200
#define N_RACERS    4
#define PG_SCHEMA   "jk_test_outbox"
#define PAYLOAD_FMT "{\"org\":\"#%d\",\"service\":\"心内科\",\"start\":\"11月30日 08:15\"}"

static jk_keys *keys;

/* ---- channels that count what they are asked to send ---- */

struct probe {
    pthread_mutex_t lock;
    int n_calls;
    int sends[N_RACE + 1]; /* by the number in the payload's org ("#17") */
    int fail_next;         /* calls that fail before one succeeds; -1: every call fails */
    jk_rc fail_rc;
    int is_slow; /* widen the window between claim and result */
    char text[OB_TEXT_MAX], phone[16];
};

static struct probe probe_sms = {.lock = PTHREAD_MUTEX_INITIALIZER};
static struct probe probe_wx = {.lock = PTHREAD_MUTEX_INITIALIZER};

static jk_rc probe_send(struct probe *p, const struct ob_msg *m)
{
    jk_rc rc = JK_OK;
    const char *org = jk_json_str(m->fields, "org");
    long n = org && org[0] == '#' ? strtol(org + 1, NULL, 10) : 0;
    pthread_mutex_lock(&p->lock);
    p->n_calls++;
    snprintf(p->text, sizeof p->text, "%s", m->text);
    snprintf(p->phone, sizeof p->phone, "%s", m->phone ? m->phone : "");
    if (p->fail_next) {
        if (p->fail_next > 0) p->fail_next--;
        rc = p->fail_rc;
    } else if (n >= 0 && n <= N_RACE) {
        p->sends[n]++;
    }
    pthread_mutex_unlock(&p->lock);
    if (p->is_slow) usleep(200);
    return rc;
}

static jk_rc sms_probe(const struct ob_msg *m)
{
    return probe_send(&probe_sms, m);
}

static jk_rc wx_probe(const struct ob_msg *m)
{
    return probe_send(&probe_wx, m);
}

static const struct ob_channel ch_sms = {"sms", 1, sms_probe}, ch_wx = {"wechat", 0, wx_probe};

static void probe_reset(struct probe *p)
{
    pthread_mutex_lock(&p->lock);
    p->n_calls = 0;
    memset(p->sends, 0, sizeof p->sends);
    p->fail_next = 0;
    p->fail_rc = JK_EINTERNAL;
    p->is_slow = 0;
    p->text[0] = p->phone[0] = '\0';
    pthread_mutex_unlock(&p->lock);
}

/* The real rules, then the channels given (probes). */
static void use_channels(const char *list)
{
    char err[1024] = "";
    jk_rc rc = jk_outbox_init(list, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, JK_OK);
    for (size_t i = 0; i < ob.n_ch; i++)
        ob.ch[i] = !strcmp(ob.ch[i]->name, "sms") ? &ch_sms : &ch_wx;
    probe_reset(&probe_sms);
    probe_reset(&probe_wx);
}

/* ---- the database ---- */

struct fixture {
    char dir[64]; /* SQLite: the temporary directory */
    jk_store *st;
};

static jk_rc pg_schema_tx(jk_conn *c, void *arg)
{
    jk_rc rc = jk_conn_exec(c, "DROP SCHEMA IF EXISTS " PG_SCHEMA " CASCADE");
    if (!rc && arg) rc = jk_conn_exec(c, "CREATE SCHEMA " PG_SCHEMA);
    return rc;
}

static int fixture_up(void **state, int is_pg)
{
    struct fixture *f = calloc(1, sizeof *f);
    char url[1200], err[256];
    if (!f) return -1;
    if (is_pg) {
        const char *base = getenv("JK_TEST_PG_URL");
        snprintf(url, sizeof url, "%s%soptions=-csearch_path%%3D" PG_SCHEMA, base,
                 strchr(base, '?') ? "&" : "?");
    } else {
        snprintf(f->dir, sizeof f->dir, "/tmp/jk-test-outbox.XXXXXX");
        if (!mkdtemp(f->dir)) return -1;
        snprintf(url, sizeof url, "sqlite:%s/t.db", f->dir);
    }
    if (jk_store_open(url, &f->st, err, sizeof err) ||
        (is_pg && jk_store_tx(f->st, pg_schema_tx, f)) || jk_store_migrate(f->st, NULL)) {
        fprintf(stderr, "cannot open the test store: %s\n", err);
        return -1;
    }
    use_channels("sms");
    *state = f;
    return 0;
}

static int sqlite_up(void **state)
{
    return fixture_up(state, 0);
}

static int pg_up(void **state)
{
    return fixture_up(state, 1);
}

static int fixture_down(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    if (!f->dir[0] && f->st) jk_store_tx(f->st, pg_schema_tx, NULL);
    jk_store_close(f->st);
    if (f->dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
        if (system(cmd)) return -1;
    }
    free(f);
    return 0;
}

struct put_job {
    const char *topic, *ref, *patient, *payload;
    int64_t due_ms;
    jk_rc then; /* what the transaction returns after the put: non-zero rolls it back */
};

static jk_rc put_tx(jk_conn *c, void *arg)
{
    const struct put_job *j = arg;
    jk_rc rc = jk_outbox_put(c, j->topic, j->ref, j->patient, j->payload, NOW_MS, j->due_ms);
    return rc ? rc : j->then;
}

static char payload_buf[N_RACE + 1][160];

static const char *payload_of(int n)
{
    snprintf(payload_buf[n], sizeof payload_buf[n], PAYLOAD_FMT, n);
    return payload_buf[n];
}

static void put(struct fixture *f, const char *topic, const char *ref, const char *patient, int n,
                int64_t due_ms)
{
    struct put_job j = {topic, ref, patient, payload_of(n), due_ms, JK_OK};
    assert_int_equal(jk_store_tx(f->st, put_tx, &j), JK_OK);
}

/* A Patient with the telecom given (JSON array text, or NULL), written as any client's
 * would be: its phones sealed at rest. Its id in out (64 bytes). */
static void patient(struct fixture *f, const char *telecom, char *out)
{
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    char text[512];
    jk_diag_init(&d, a);
    snprintf(text, sizeof text,
             "{\"resourceType\":\"Patient\",\"name\":[{\"text\":\"林测试\"}]%s%s}",
             telecom ? ",\"telecom\":" : "", telecom ? telecom : "");
    struct json_object *res = json_tokener_parse(text);
    assert_non_null(res);
    struct jk_fhir_write w = {.kind = JK_FHIR_CREATE,
                              .type = "Patient",
                              .res = res,
                              .arena = a,
                              .diag = &d,
                              .now_ms = NOW_MS};
    assert_int_equal(jk_fhir_write_prepare(&w), JK_OK);
    assert_int_equal(jk_store_tx(f->st, jk_fhir_write_tx, &w), JK_OK);
    assert_null(strstr(w.out.body, "1234-5678")); /* sealed */
    snprintf(out, 64, "%s", w.out.id);
    json_object_put(res);
    jk_arena_free(a);
}

#define MOBILE "[{\"system\":\"phone\",\"value\":\"+86 138-1234-5678\",\"use\":\"mobile\"}]"

struct row {
    char state[16], error[OB_ERROR_MAX], sent[64];
    int attempts;
    int64_t due_ms, claimed_ms;
    int has_done;
};

static const char sql_row[] = "SELECT state, attempts, due_ms, error, sent_channels, done_ms,"
                              " claimed_ms FROM outbox WHERE id = ?";
static const char sql_count[] = "SELECT COUNT(*) FROM outbox WHERE state = ?";
static const char sql_count_all[] = "SELECT COUNT(*) FROM outbox";

static struct row row_get(struct fixture *f, int64_t id)
{
    struct row r;
    jk_stmt *s;
    int has_row = 0;
    memset(&r, 0, sizeof r);
    assert_int_equal(jk_conn_prepare(jk_store_conn(f->st), sql_row, &s), JK_OK);
    jk_stmt_int_arg(s, 1, id);
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    assert_true(has_row);
    snprintf(r.state, sizeof r.state, "%s", jk_stmt_col_text(s, 0, NULL));
    r.attempts = (int)jk_stmt_col_int(s, 1);
    r.due_ms = jk_stmt_col_int(s, 2);
    snprintf(r.error, sizeof r.error, "%s", jk_stmt_col_text(s, 3, NULL));
    snprintf(r.sent, sizeof r.sent, "%s", jk_stmt_col_text(s, 4, NULL));
    r.has_done = !jk_stmt_col_is_null(s, 5);
    r.claimed_ms = jk_stmt_col_int(s, 6);
    jk_stmt_reset(s);
    return r;
}

static int64_t count(struct fixture *f, const char *state)
{
    jk_stmt *s;
    int has_row = 0;
    assert_int_equal(jk_conn_prepare(jk_store_conn(f->st), state ? sql_count : sql_count_all, &s),
                     JK_OK);
    if (state) jk_stmt_text_arg(s, 1, state, strlen(state));
    assert_int_equal(jk_stmt_step(s, &has_row), JK_OK);
    int64_t n = jk_stmt_col_int(s, 0);
    jk_stmt_reset(s);
    return n;
}

static size_t run_at(struct fixture *f, int64_t now_ms)
{
    size_t n = 99;
    assert_int_equal(jk_outbox_run(f->st, now_ms, &n), JK_OK);
    return n;
}

/* ---- putting ---- */

static void test_rolled_back_put_leaves_nothing(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    struct put_job j = {"booking.confirmed", "Appointment/a1", pid,
                        payload_of(1),       NOW_MS,           JK_ECONFLICT};
    assert_int_equal(jk_store_tx(f->st, put_tx, &j), JK_ECONFLICT);
    assert_int_equal(count(f, NULL), 0);
    assert_int_equal(run_at(f, NOW_MS + 3600000), 0);
    assert_int_equal(probe_sms.n_calls, 0);
    /* The same put committed is there, pending, and is sent. */
    j.then = JK_OK;
    assert_int_equal(jk_store_tx(f->st, put_tx, &j), JK_OK);
    assert_int_equal(count(f, "pending"), 1);
    assert_int_equal(run_at(f, NOW_MS), 1);
    assert_int_equal(probe_sms.sends[1], 1);
}

static void test_put_refuses_what_can_never_be_sent(void **state)
{
    struct fixture *f = *state;
    static const struct put_job bad[] = {
        {"booking.moved", "Appointment/a", "p1", "{}", NOW_MS, JK_OK}, /* no such topic */
        {"booking.confirmed", "", "p1", "{}", NOW_MS, JK_OK},
        {"booking.confirmed", "Appointment/a", "Patient/p1", "{}", NOW_MS, JK_OK},
        {"booking.confirmed", "Appointment/a", "p1", "[1]", NOW_MS, JK_OK},
        {"booking.confirmed", "Appointment/a", "p1", "{\"org\":", NOW_MS, JK_OK},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(jk_store_tx(f->st, put_tx, (void *)&bad[i]), JK_EINVAL);
    assert_int_equal(count(f, NULL), 0);
}

/* ---- due time, void ---- */

static void test_due_time_respected(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.reminder", "Appointment/a1", pid, 1, NOW_MS + 60000);
    assert_int_equal(run_at(f, NOW_MS), 0);
    assert_int_equal(run_at(f, NOW_MS + 59999), 0);
    assert_int_equal(probe_sms.n_calls, 0);
    assert_int_equal(run_at(f, NOW_MS + 60000), 1);
    assert_int_equal(probe_sms.sends[1], 1);
    struct row r = row_get(f, 1);
    assert_string_equal(r.state, "sent");
    assert_int_equal(r.attempts, 1);
    assert_true(r.has_done);
    assert_string_equal(r.sent, "sms");
    /* Sent once: later passes leave it alone. */
    assert_int_equal(run_at(f, NOW_MS + 86400000), 0);
    assert_int_equal(probe_sms.n_calls, 1);
}

struct void_job {
    const char *ref, *topic;
};

static jk_rc void_tx(jk_conn *c, void *arg)
{
    const struct void_job *j = arg;
    return jk_outbox_void(c, j->ref, j->topic);
}

static void test_void(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, NOW_MS);        /* 1 */
    put(f, "booking.reminder", "Appointment/a1", pid, 2, NOW_MS + 1000);  /* 2 */
    put(f, "booking.reminder", "Appointment/a1", pid, 3, NOW_MS + 2000);  /* 3 */
    put(f, "booking.reminder", "Appointment/b2", pid, 4, NOW_MS + 1000);  /* 4 */
    put(f, "booking.cancelled", "Appointment/b2", pid, 5, NOW_MS + 1000); /* 5: no reason */
    assert_int_equal(run_at(f, NOW_MS), 1);                               /* the confirmation */
    /* The appointment a1 cancelled: its reminders voided, its sent confirmation left. */
    struct void_job v = {"Appointment/a1", "booking.reminder"};
    assert_int_equal(jk_store_tx(f->st, void_tx, &v), JK_OK);
    assert_string_equal(row_get(f, 1).state, "sent");
    assert_string_equal(row_get(f, 2).state, "void");
    assert_string_equal(row_get(f, 3).state, "void");
    assert_string_equal(row_get(f, 4).state, "pending");
    /* Every topic of b2. */
    struct void_job all = {"Appointment/b2", NULL};
    assert_int_equal(jk_store_tx(f->st, void_tx, &all), JK_OK);
    assert_string_equal(row_get(f, 4).state, "void");
    assert_string_equal(row_get(f, 5).state, "void");
    assert_int_equal(run_at(f, NOW_MS + 86400000), 0);
    assert_int_equal(probe_sms.n_calls, 1);
    assert_int_equal(jk_store_tx(f->st, void_tx, &(struct void_job){"", NULL}), JK_EINVAL);
}

/* ---- failures ---- */

static void test_refused_retried_with_backoff_then_failed(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, NOW_MS);
    probe_sms.fail_next = -1;
    /* retry.backoff_seconds [60, 300, 1800, 7200], retry.max_attempts 5 */
    static const int64_t waits_s[] = {60, 300, 1800, 7200};
    int64_t t = NOW_MS;
    for (int attempt = 1; attempt <= 4; attempt++) {
        assert_int_equal(run_at(f, t), 0);
        struct row r = row_get(f, 1);
        assert_string_equal(r.state, "pending");
        assert_int_equal(r.attempts, attempt);
        assert_int_equal(r.due_ms, t + waits_s[attempt - 1] * 1000);
        assert_int_equal(r.claimed_ms, 0);
        assert_false(r.has_done);
        assert_non_null(strstr(r.error, "sms: not delivered (EINTERNAL)"));
        assert_int_equal(run_at(f, r.due_ms - 1), 0); /* not before its time */
        assert_int_equal(probe_sms.n_calls, attempt);
        t = r.due_ms;
    }
    assert_int_equal(run_at(f, t), 0);
    struct row r = row_get(f, 1);
    assert_string_equal(r.state, "failed");
    assert_int_equal(r.attempts, 5);
    assert_true(r.has_done);
    assert_non_null(strstr(r.error, "sms: not delivered"));
    assert_int_equal(run_at(f, t + 30L * 86400000), 0);
    assert_int_equal(probe_sms.n_calls, 5);
}

static void test_gateway_recovers(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, NOW_MS);
    probe_sms.fail_next = 2;
    assert_int_equal(run_at(f, NOW_MS), 0);
    assert_int_equal(run_at(f, NOW_MS + 60000), 0);
    assert_int_equal(run_at(f, NOW_MS + 60000 + 300000), 1);
    struct row r = row_get(f, 1);
    assert_string_equal(r.state, "sent");
    assert_int_equal(r.attempts, 3);
    assert_int_equal(probe_sms.sends[1], 1);
}

/* A channel that delivered is not asked again when another channel's failure is retried. */
static void test_retry_repeats_no_delivered_channel(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    use_channels("sms, wechat");
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, NOW_MS);
    probe_wx.fail_next = 1;
    assert_int_equal(run_at(f, NOW_MS), 0);
    struct row r = row_get(f, 1);
    assert_string_equal(r.state, "pending");
    assert_string_equal(r.sent, "sms");
    assert_non_null(strstr(r.error, "wechat: not delivered"));
    assert_int_equal(run_at(f, NOW_MS + 60000), 1);
    r = row_get(f, 1);
    assert_string_equal(r.state, "sent");
    assert_string_equal(r.sent, "sms,wechat");
    assert_int_equal(probe_sms.n_calls, 1);
    assert_int_equal(probe_wx.n_calls, 2);
    assert_int_equal(probe_sms.sends[1], 1);
    assert_int_equal(probe_wx.sends[1], 1);
}

/* An adapter that says the recipient can never receive it (JK_EINVAL): failed at once. */
static void test_recipient_unreachable_fails_at_once(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, NOW_MS);
    probe_sms.fail_next = -1;
    probe_sms.fail_rc = JK_EINVAL;
    assert_int_equal(run_at(f, NOW_MS), 0);
    struct row r = row_get(f, 1);
    assert_string_equal(r.state, "failed");
    assert_int_equal(r.attempts, 1);
    assert_string_equal(r.error, "sms: the recipient cannot receive it");
}

static void test_no_phone_fails_without_retry(void **state)
{
    struct fixture *f = *state;
    char none[64], landline[64], old[64];
    patient(f, NULL, none);
    patient(f, "[{\"system\":\"phone\",\"value\":\"0591-87654321\",\"use\":\"home\"}]", landline);
    patient(f,
            "[{\"system\":\"phone\",\"value\":\"13812345678\",\"use\":\"mobile\","
            "\"period\":{\"end\":\"2020-01-01\"}}]",
            old);
    put(f, "booking.confirmed", "Appointment/a1", none, 1, NOW_MS);
    put(f, "booking.confirmed", "Appointment/a2", landline, 2, NOW_MS);
    put(f, "booking.confirmed", "Appointment/a3", old, 3, NOW_MS);
    put(f, "booking.confirmed", "Appointment/a4", "no-such-patient", 4, NOW_MS);
    assert_int_equal(run_at(f, NOW_MS), 0);
    for (int64_t id = 1; id <= 3; id++) {
        struct row r = row_get(f, id);
        assert_string_equal(r.state, "failed");
        assert_int_equal(r.attempts, 1);
        assert_string_equal(r.error, "sms: the Patient has no mobile phone number");
    }
    assert_string_equal(row_get(f, 4).error, "sms: the Patient does not exist");
    assert_int_equal(run_at(f, NOW_MS + 86400000), 0);
    assert_int_equal(probe_sms.n_calls, 0);
    /* WeChat needs no phone: the same resident gets it there. */
    use_channels("wechat");
    put(f, "booking.confirmed", "Appointment/a5", none, 5, NOW_MS);
    assert_int_equal(run_at(f, NOW_MS), 1);
    assert_int_equal(probe_wx.sends[5], 1);
    /* Both channels: WeChat still delivers it, and the row fails for the SMS. */
    use_channels("sms,wechat");
    put(f, "booking.confirmed", "Appointment/a6", none, 6, NOW_MS);
    assert_int_equal(run_at(f, NOW_MS), 0);
    struct row r = row_get(f, 6);
    assert_string_equal(r.state, "failed");
    assert_string_equal(r.sent, "wechat");
    assert_string_equal(r.error, "sms: the Patient has no mobile phone number");
    assert_int_equal(probe_wx.sends[6], 1);
    assert_int_equal(probe_sms.n_calls, 0);
}

/* The phone is the sealed one of the Patient, opened: a mobile number before a landline,
 * normalised to 11 digits. A payload without a field its template needs fails at once. */
static void test_phone_opened_and_text_rendered(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f,
            "[{\"system\":\"phone\",\"value\":\"0591-87654321\",\"use\":\"home\"},"
            "{\"system\":\"sms\",\"value\":\"+86 139 0000 1111\"},"
            "{\"system\":\"phone\",\"value\":\"+86 138-1234-5678\",\"use\":\"mobile\"}]",
            pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 7, NOW_MS);
    assert_int_equal(run_at(f, NOW_MS), 1);
    assert_string_equal(probe_sms.phone, "13812345678");
    assert_string_equal(probe_sms.text, "【健康】预约成功：#7心内科，就诊时间11月30日 08:15。"
                                        "请按时到院签到；如不能前往，请尽早取消。");
    put(f, "booking.cancelled", "Appointment/a1", pid, 8, NOW_MS); /* no reason */
    assert_int_equal(run_at(f, NOW_MS), 0);
    struct row r = row_get(f, 2);
    assert_string_equal(r.state, "failed");
    assert_string_equal(r.error, "the payload has no text 'reason'");
    assert_int_equal(probe_sms.n_calls, 1);
}

/* A dispatcher that claimed a row and stopped (a crash): the row waits out the lease
 * (claim.lease_seconds 300), then another sends it. */
static const char sql_claim_by_other[] = "UPDATE outbox SET claimed_ms = ? WHERE id = ?";

static jk_rc claim_by_other_tx(jk_conn *c, void *arg)
{
    (void)arg;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_claim_by_other, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, NOW_MS);
    jk_stmt_int_arg(s, 2, 1);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

static void test_claim_lease(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, NOW_MS);
    assert_int_equal(jk_store_tx(f->st, claim_by_other_tx, NULL), JK_OK);
    assert_int_equal(run_at(f, NOW_MS), 0);
    assert_int_equal(run_at(f, NOW_MS + 299999), 0);
    assert_int_equal(probe_sms.n_calls, 0);
    assert_int_equal(run_at(f, NOW_MS + 300000), 1);
    assert_string_equal(row_get(f, 1).state, "sent");
}

/* ---- concurrency ---- */

struct racer {
    struct fixture *f;
    pthread_barrier_t *start;
    size_t n_sent;
    jk_rc rc;
};

static void *racer_run(void *arg)
{
    struct racer *r = arg;
    pthread_barrier_wait(r->start);
    for (int pass = 0; pass < 3 && !r->rc; pass++) {
        size_t n = 0;
        r->rc = jk_outbox_run(r->f->st, NOW_MS, &n);
        r->n_sent += n;
    }
    return NULL;
}

static void test_concurrent_dispatchers_send_once(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    for (int i = 1; i <= N_RACE; i++)
        put(f, "booking.confirmed", "Appointment/race", pid, i, NOW_MS);
    probe_sms.is_slow = 1;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, N_RACERS);
    struct racer racers[N_RACERS];
    pthread_t threads[N_RACERS];
    for (int i = 0; i < N_RACERS; i++) {
        racers[i] = (struct racer){f, &start, 0, JK_OK};
        assert_int_equal(pthread_create(&threads[i], NULL, racer_run, &racers[i]), 0);
    }
    size_t total = 0, n_busy = 0;
    for (int i = 0; i < N_RACERS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(racers[i].rc, JK_OK);
        total += racers[i].n_sent;
        n_busy += racers[i].n_sent > 0;
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(total, N_RACE);
    assert_int_equal(probe_sms.n_calls, N_RACE);
    for (int i = 1; i <= N_RACE; i++)
        assert_int_equal(probe_sms.sends[i], 1);
    assert_int_equal(count(f, "sent"), N_RACE);
    assert_true(n_busy >= 2); /* the dispatchers really shared the work */
}

/* ---- the thread ---- */

static void test_thread_sends_and_stops_promptly(void **state)
{
    struct fixture *f = *state;
    char pid[64];
    patient(f, MOBILE, pid);
    put(f, "booking.confirmed", "Appointment/a1", pid, 1, 0); /* due long ago */
    assert_int_equal(jk_outbox_start(f->st), JK_OK);
    assert_int_equal(jk_outbox_start(f->st), JK_EINVAL); /* one dispatcher per process */
    for (int i = 0; i < 500 && count(f, "sent") < 1; i++)
        usleep(10000);
    assert_int_equal(count(f, "sent"), 1);
    usleep(100000); /* now waiting for its next pass */
    int64_t t0 = jk_time_mono_us();
    jk_outbox_stop();
    assert_true(jk_time_mono_us() - t0 < 500000);
    jk_outbox_stop(); /* twice is harmless */
    assert_int_equal(probe_sms.sends[1], 1);
}

/* ---- templates and rules (no database) ---- */

static void test_each_template_renders(void **state)
{
    (void)state;
    use_channels("sms");
    static const struct {
        const char *topic, *payload, *text;
    } cases[] = {
        {"booking.confirmed",
         "{\"org\":\"福州市第一医院\",\"service\":\"心血管内科\",\"practitioner\":\"\","
         "\"start\":\"11月30日 08:15\"}",
         "【健康】预约成功：福州市第一医院心血管内科，就诊时间11月30日 "
         "08:15。请按时到院签到；如不能前往，请尽早取消。"},
        {"booking.reminder",
         "{\"org\":\"福州市第一医院\",\"service\":\"心血管内科\",\"start\":\"11月30日 08:15\"}",
         "【健康】就诊提醒：您预约的福州市第一医院心血管内科将于11月30日 "
         "08:15就诊，请提前到院签到候诊。"},
        {"booking.cancelled",
         "{\"org\":\"福州市第一医院\",\"service\":\"心血管内科\",\"start\":\"11月30日 08:15\","
         "\"reason\":\"医生停诊\"}",
         "【健康】您预约的福州市第一医院心血管内科（11月30日 08:15）已取消：医生停诊。"},
        {"booking.offer",
         "{\"org\":\"福州市第一医院\",\"service\":\"心血管内科\",\"start\":\"11月30日 08:15\","
         "\"hold_until\":\"11月29日 10:30\"}",
         "【健康】候补通知：福州市第一医院心血管内科11月30日 "
         "08:15有号源空出，已为您保留至11月29日 10:30，请在此之前确认预约，逾期自动释放。"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct json_object *p = json_tokener_parse(cases[i].payload);
        struct jk_buf b;
        char err[256] = "";
        jk_buf_init(&b, OB_TEXT_MAX);
        int t = topic_index(cases[i].topic);
        assert_true(t >= 0);
        assert_int_equal(render(ob.r.templates[t], p, &b, err, sizeof err), JK_OK);
        assert_string_equal(b.p, cases[i].text);
        jk_buf_free(&b);
        json_object_put(p);
    }
    /* A field that is not text is missing. */
    struct json_object *p = json_tokener_parse("{\"org\":1,\"service\":\"x\",\"start\":\"y\"}");
    struct jk_buf b;
    char err[256] = "";
    jk_buf_init(&b, OB_TEXT_MAX);
    assert_int_equal(render(ob.r.templates[0], p, &b, err, sizeof err), JK_EINVAL);
    assert_string_equal(err, "the payload has no text 'org'");
    jk_buf_free(&b);
    json_object_put(p);
}

/* A rules file like the real one, with the confirmation's template (NULL: left out), the
 * back-off list and extra rules given. */
static void write_rules(const char *path, const char *confirmed, const char *backoff,
                        const char *extra)
{
#define RULE(code, value)                                                                          \
    "\"" code "\":{\"value\":" value ",\"source\":\"s\",\"effective\":\"2025-01-01\"}"
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "{\"ruleSet\":\"notifications\",\"rules\":{");
    if (confirmed)
        fprintf(fp,
                "\"template.booking.confirmed\":{\"value\":\"%s\",\"source\":\"s\","
                "\"effective\":\"2025-01-01\"},",
                confirmed);
    fprintf(fp, "%s,%s,%s,", RULE("template.booking.reminder", "\"【健康】{start}\""),
            RULE("template.booking.cancelled", "\"【健康】{reason}\""),
            RULE("template.booking.offer", "\"【健康】{hold_until}{practitioner}\""));
    fprintf(fp,
            "\"retry.backoff_seconds\":{\"value\":%s,\"source\":\"s\",\"effective\":"
            "\"2025-01-01\"},%s,%s%s}}",
            backoff, RULE("retry.max_attempts", "5"), RULE("claim.lease_seconds", "300"), extra);
    fclose(fp);
#undef RULE
}

static void test_rules_file_errors(void **state)
{
    (void)state;
    static const struct {
        const char *confirmed, *backoff, *extra, *want;
    } cases[] = {
        {"【健康】{org}{service}{start}", "[60]", "", NULL},
        {"【健康】{patient_name}您好", "[60]", "",
         "/rules/template.booking.confirmed/value: unknown placeholder {patient_name}: a "
         "booking.confirmed payload has {org}, {service}, {practitioner}, {start}"},
        {"【健康】{hold_until}", "[60]", "", "unknown placeholder {hold_until}"},
        {"预约成功{org}", "[60]", "", "must start with the sender's signature"},
        {"【健康】{org", "[60]", "", "'{' at byte 12 does not start a {field}"},
        {"【健康】{ORG}", "[60]", "", "does not start a {field}"},
        {NULL, "[60]", "", "/rules/template.booking.confirmed: the rule is missing"},
        {"【健康】", "[]", "", "/rules/retry.backoff_seconds/value: must be a list of 1 to 16"},
        {"【健康】", "[60, -1]", "", "/rules/retry.backoff_seconds/value/1: must be a whole"},
        {"【健康】", "[60]",
         ",\"template.booking.moved\":{\"value\":\"【健康】\",\"source\":\"s\",\"effective\":"
         "\"2025-01-01\"}",
         "/rules/template.booking.moved: unknown rule"},
    };
    char dir[64], path[128];
    snprintf(dir, sizeof dir, "/tmp/jk-test-outbox-rules.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/notifications.json", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct ob_rules r;
        char err[1024] = "";
        write_rules(path, cases[i].confirmed, cases[i].backoff, cases[i].extra);
        jk_rc rc = rules_load(path, &r, err, sizeof err);
        if (!cases[i].want) {
            assert_int_equal(rc, JK_OK);
            continue;
        }
        if (!strstr(err, cases[i].want)) fprintf(stderr, "case %zu: %s\n", i, err);
        assert_int_equal(rc, JK_EINVAL);
        assert_non_null(strstr(err, cases[i].want));
        assert_non_null(strstr(err, path));
    }
    /* The file named by JIANKANG_NOTIFY_RULES is the one read; a bad one stops the start. */
    write_rules(path, "【健康】{nope}", "[60]", "");
    setenv("JIANKANG_NOTIFY_RULES", path, 1);
    char err[1024] = "";
    assert_int_equal(jk_outbox_init("sms", err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "{nope}"));
    unsetenv("JIANKANG_NOTIFY_RULES");
    unlink(path);
    rmdir(dir);
    /* The real file. */
    struct ob_rules r;
    assert_int_equal(rules_load("rules/notifications.json", &r, err, sizeof err), JK_OK);
    assert_int_equal(r.max_attempts, 5);
    assert_int_equal(r.lease_s, 300);
    assert_int_equal(r.n_backoff, 4);
}

static void test_channel_list_checked(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(jk_outbox_init("fax", err, sizeof err), JK_EINVAL);
    assert_string_equal(err, "notify_channels: unknown channel 'fax' (known: sms, wechat)");
    assert_int_equal(jk_outbox_init("sms,sms", err, sizeof err), JK_EINVAL);
    assert_string_equal(err, "notify_channels: 'sms' is listed twice");
    assert_int_equal(jk_outbox_init("", err, sizeof err), JK_EINVAL);
    assert_int_equal(jk_outbox_init(" , ", err, sizeof err), JK_EINVAL);
    assert_int_equal(jk_outbox_init(" wechat , sms ", err, sizeof err), JK_OK);
    assert_int_equal(ob.n_ch, 2);
    assert_string_equal(ob.ch[0]->name, "wechat");
    assert_string_equal(ob.ch[1]->name, "sms");
}

static void test_masks(void **state)
{
    (void)state;
    char out[24];
    assert_string_equal(jk_wechat_mask("0192f3a4-7b1c-7d2e-9f00-1234abcd", out, sizeof out),
                        "****abcd");
    assert_string_equal(jk_wechat_mask("p1", out, sizeof out), "****");
    assert_int_equal(mobile_norm("+86 138-1234-5678", out), 1);
    assert_string_equal(out, "13812345678");
    assert_int_equal(mobile_norm("008613812345678", out), 1);
    assert_int_equal(mobile_norm("0591-87654321", out), 0);
    assert_int_equal(mobile_norm("1381234567", out), 0);
    assert_int_equal(mobile_norm("138123456789", out), 0);
}

int main(void)
{
    char err[JK_PROTECT_ERR] = "";
    unsigned char master[JK_MASTER_BYTES];
    memset(master, 0x44, sizeof master);
    if (jk_keys_from(master, NULL, &keys) || jk_protect_init(keys, ID_RULES, err, sizeof err)) {
        fprintf(stderr, "setup: %s\n", err);
        return 1;
    }
    jk_log_set_level(JK_LOG_ERROR);
    const struct CMUnitTest common[] = {
        cmocka_unit_test(test_each_template_renders),
        cmocka_unit_test(test_rules_file_errors),
        cmocka_unit_test(test_channel_list_checked),
        cmocka_unit_test(test_masks),
    };
#define DB_TESTS(up)                                                                               \
    {                                                                                              \
        cmocka_unit_test_setup_teardown(test_rolled_back_put_leaves_nothing, up, fixture_down),    \
            cmocka_unit_test_setup_teardown(test_put_refuses_what_can_never_be_sent, up,           \
                                            fixture_down),                                         \
            cmocka_unit_test_setup_teardown(test_due_time_respected, up, fixture_down),            \
            cmocka_unit_test_setup_teardown(test_void, up, fixture_down),                          \
            cmocka_unit_test_setup_teardown(test_refused_retried_with_backoff_then_failed, up,     \
                                            fixture_down),                                         \
            cmocka_unit_test_setup_teardown(test_gateway_recovers, up, fixture_down),              \
            cmocka_unit_test_setup_teardown(test_retry_repeats_no_delivered_channel, up,           \
                                            fixture_down),                                         \
            cmocka_unit_test_setup_teardown(test_recipient_unreachable_fails_at_once, up,          \
                                            fixture_down),                                         \
            cmocka_unit_test_setup_teardown(test_no_phone_fails_without_retry, up, fixture_down),  \
            cmocka_unit_test_setup_teardown(test_phone_opened_and_text_rendered, up,               \
                                            fixture_down),                                         \
            cmocka_unit_test_setup_teardown(test_claim_lease, up, fixture_down),                   \
            cmocka_unit_test_setup_teardown(test_concurrent_dispatchers_send_once, up,             \
                                            fixture_down),                                         \
            cmocka_unit_test_setup_teardown(test_thread_sends_and_stops_promptly, up,              \
                                            fixture_down),                                         \
    }
    const struct CMUnitTest sqlite[] = DB_TESTS(sqlite_up);
    const struct CMUnitTest pg[] = DB_TESTS(pg_up);
    int failed = cmocka_run_group_tests_name("outbox", common, NULL, NULL);
    failed += cmocka_run_group_tests_name("outbox/sqlite", sqlite, NULL, NULL);
    if (getenv("JK_TEST_PG_URL") && *getenv("JK_TEST_PG_URL"))
        failed += cmocka_run_group_tests_name("outbox/postgresql", pg, NULL, NULL);
    else
        fprintf(stderr, "[  SKIPPED ] outbox/postgresql: set JK_TEST_PG_URL to run it\n");
    jk_keys_free(keys);
    return failed;
}
