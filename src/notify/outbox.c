/* outbox.c - the notification outbox: rows put inside a service's transaction, and the
 * dispatcher that claims the due ones, renders them from rules/notifications.json and
 * delivers them through the configured channels, with back-off. docs/internals/booking.md. */
#include "notify/outbox.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/diag.h"
#include "core/log.h"
#include "core/periodic.h"
#include "core/rules.h"
#include "core/time.h"
#include "fhir/json.h"
#include "fhir/rest.h"
#include "notify/sms.h"
#include "notify/wechat.h"
#include "store/resource.h"

#define OB_TEMPLATE_MAX 1024 /* bytes of a template */
#define OB_TEXT_MAX     2048 /* bytes of a rendered message */
#define OB_PAYLOAD_MAX  4096 /* bytes of a payload */
#define OB_REF_MAX      200  /* bytes of a ref */
#define OB_FIELD_MAX    32   /* bytes of a placeholder's name */
#define OB_MAX_BACKOFF  16   /* steps of retry.backoff_seconds */
#define OB_MAX_CHANNELS 4
#define OB_ERROR_MAX    400 /* bytes of the error recorded on a row */
#define OB_BATCH        16  /* rows claimed at once */
#define OB_BATCH_SQL    "16"
#define OB_PASS_MAX     1024 /* rows one pass handles at most: the next pass goes on */
#define OB_EVERY_MS     1000 /* the dispatcher's pass interval */

/* ---- topics and the fields their payloads carry ---- */

static const char *const fields_visit[] = {"org", "service", "practitioner", "start", NULL};
static const char *const fields_cancel[] = {"org",   "service", "practitioner",
                                            "start", "reason",  NULL};
static const char *const fields_offer[] = {"org",   "service",    "practitioner",
                                           "start", "hold_until", NULL};

static const struct topic {
    const char *name, *rule;
    const char *const *fields;
} topics[] = {
    {"booking.confirmed", "template.booking.confirmed", fields_visit},
    {"booking.reminder", "template.booking.reminder", fields_visit},
    {"booking.cancelled", "template.booking.cancelled", fields_cancel},
    {"booking.offer", "template.booking.offer", fields_offer},
};

#define N_TOPICS (sizeof topics / sizeof topics[0])

static int topic_index(const char *name)
{
    for (size_t i = 0; i < N_TOPICS; i++)
        if (!strcmp(topics[i].name, name)) return (int)i;
    return -1;
}

/* ---- the rules (rules/notifications.json) ---- */

struct ob_rules {
    char templates[N_TOPICS][OB_TEMPLATE_MAX];
    int backoff_s[OB_MAX_BACKOFF];
    size_t n_backoff;
    int max_attempts;
    int lease_s;
};

static const char *rules_path(void)
{
    const char *p = getenv("JIANKANG_NOTIFY_RULES");
    return p && *p ? p : "rules/notifications.json";
}

/* The placeholder starting at s ('{'): its name's length, or 0 when s holds no '}' or the
 * name is not [a-z_]{1,OB_FIELD_MAX}. *end is past the '}'. */
static size_t placeholder(const char *s, const char **end)
{
    const char *close = strchr(s + 1, '}');
    if (!close) return 0;
    size_t n = (size_t)(close - s - 1);
    if (!n || n > OB_FIELD_MAX || strspn(s + 1, "abcdefghijklmnopqrstuvwxyz_") != n) return 0;
    *end = close + 1;
    return n;
}

static int field_known(const struct topic *t, const char *name, size_t n)
{
    for (const char *const *f = t->fields; *f; f++)
        if (strlen(*f) == n && !memcmp(*f, name, n)) return 1;
    return 0;
}

/* A template of topic t: the sender's signature first, and only the topic's fields. */
static jk_rc template_check(const struct topic *t, struct json_object *v, const char *path,
                            const char *ptr, char *out, char *err, size_t errlen)
{
    static const char open[] = "【", close[] = "】";
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    if (!s || strlen(s) >= OB_TEMPLATE_MAX)
        return jk_rules_fail(err, errlen, path, ptr, "must be a text of fewer than %d bytes",
                             OB_TEMPLATE_MAX);
    if (strncmp(s, open, strlen(open)) || !strstr(s + strlen(open), close))
        return jk_rules_fail(err, errlen, path, ptr,
                             "must start with the sender's signature in 【】 (SMS gateways "
                             "require it)");
    for (const char *p = strchr(s, '{'); p; p = strchr(p, '{')) {
        const char *end = NULL;
        size_t n = placeholder(p, &end);
        if (!n)
            return jk_rules_fail(err, errlen, path, ptr,
                                 "'{' at byte %zu does not start a {field} of lower-case letters",
                                 (size_t)(p - s));
        if (!field_known(t, p + 1, n)) {
            char known[200] = "";
            for (const char *const *f = t->fields; *f; f++)
                snprintf(known + strlen(known), sizeof known - strlen(known), "%s{%s}",
                         f == t->fields ? "" : ", ", *f);
            return jk_rules_fail(err, errlen, path, ptr,
                                 "unknown placeholder {%.*s}: a %s payload has %s", (int)n, p + 1,
                                 t->name, known);
        }
        p = end;
    }
    snprintf(out, OB_TEMPLATE_MAX, "%s", s);
    return JK_OK;
}

static jk_rc backoff_check(struct json_object *v, const char *path, const char *ptr,
                           struct ob_rules *r, char *err, size_t errlen)
{
    char sub[300];
    size_t n = json_object_is_type(v, json_type_array) ? json_object_array_length(v) : 0;
    if (!n || n > OB_MAX_BACKOFF)
        return jk_rules_fail(err, errlen, path, ptr,
                             "must be a list of 1 to %d waits in seconds, one per retry",
                             OB_MAX_BACKOFF);
    for (size_t i = 0; i < n; i++) {
        snprintf(sub, sizeof sub, "%.200s/%zu", ptr, i);
        jk_rc rc = jk_rules_int(json_object_array_get_idx(v, i), path, sub, 1, 7 * 86400,
                                &r->backoff_s[i], err, errlen);
        if (rc) return rc;
    }
    r->n_backoff = n;
    return JK_OK;
}

static jk_rc rule_value(const char *code, struct json_object *v, const char *path, const char *ptr,
                        struct ob_rules *r, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_TOPICS; i++)
        if (!strcmp(code, topics[i].rule))
            return template_check(&topics[i], v, path, ptr, r->templates[i], err, errlen);
    if (!strcmp(code, "retry.backoff_seconds")) return backoff_check(v, path, ptr, r, err, errlen);
    if (!strcmp(code, "retry.max_attempts"))
        return jk_rules_int(v, path, ptr, 1, 100, &r->max_attempts, err, errlen);
    if (!strcmp(code, "claim.lease_seconds"))
        return jk_rules_int(v, path, ptr, 30, 86400, &r->lease_s, err, errlen);
    return jk_rules_fail(err, errlen, path, ptr, "unknown rule '%.200s'", code);
}

static const char *const other_rules[] = {"retry.backoff_seconds", "retry.max_attempts",
                                          "claim.lease_seconds"};

#define N_OTHER_RULES (sizeof other_rules / sizeof other_rules[0])

/* The code of the i-th rule the file must have (i < N_TOPICS + N_OTHER_RULES). */
static const char *rule_code(size_t i)
{
    return i < N_TOPICS ? topics[i].rule : other_rules[i - N_TOPICS];
}

static int rule_known(const char *code)
{
    for (size_t i = 0; i < N_TOPICS + N_OTHER_RULES; i++)
        if (!strcmp(rule_code(i), code)) return 1;
    return 0;
}

static jk_rc rules_load(const char *path, struct ob_rules *out, char *err, size_t errlen)
{
    struct json_object *root, *rules, *v;
    char ptr[256];
    memset(out, 0, sizeof *out);
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (rc) return rc;
    if ((rc = jk_rules_top(root, path, "notifications", &rules, err, errlen))) goto out;
    json_object_object_foreach(rules, code, rule)
    {
        if (!rule_known(code)) {
            snprintf(ptr, sizeof ptr, "/rules/%.200s", code);
            rc = jk_rules_fail(err, errlen, path, ptr, "unknown rule '%.200s'", code);
            goto out;
        }
        if ((rc = jk_rules_rule(rule, path, code, ptr, sizeof ptr, &v, err, errlen)) ||
            (rc = rule_value(code, v, path, ptr, out, err, errlen)))
            goto out;
    }
    for (size_t i = 0; i < N_TOPICS + N_OTHER_RULES; i++) {
        const char *name = rule_code(i);
        if (!json_object_object_get_ex(rules, name, &v)) {
            snprintf(ptr, sizeof ptr, "/rules/%s", name);
            rc = jk_rules_fail(err, errlen, path, ptr, "the rule is missing");
            goto out;
        }
    }
out:
    json_object_put(root);
    return rc;
}

/* ---- rendering ---- */

/* The template with each {field} replaced by the payload's text of that name, into out.
 * JK_EINVAL with the field in err when the payload lacks it (the message can never be made). */
static jk_rc render(const char *tpl, struct json_object *payload, struct jk_buf *out, char *err,
                    size_t errlen)
{
    const char *p = tpl;
    jk_rc rc = JK_OK;
    for (const char *brace = strchr(p, '{'); !rc && brace; brace = strchr(p, '{')) {
        const char *end = NULL;
        size_t n = placeholder(brace, &end);
        char name[OB_FIELD_MAX + 1];
        if (!n) { /* checked at load: not reached */
            snprintf(err, errlen, "the template is broken at byte %zu", (size_t)(brace - tpl));
            return JK_EINVAL;
        }
        memcpy(name, brace + 1, n);
        name[n] = '\0';
        const char *value = jk_json_str(payload, name);
        if (!value) {
            snprintf(err, errlen, "the payload has no text '%s'", name);
            return JK_EINVAL;
        }
        rc = jk_buf_append(out, p, (size_t)(brace - p));
        if (!rc) rc = jk_buf_puts(out, value);
        p = end;
    }
    if (!rc) rc = jk_buf_puts(out, p);
    if (rc) snprintf(err, errlen, "the message is longer than %d bytes", OB_TEXT_MAX);
    return rc;
}

/* ---- channels ---- */

struct ob_msg {
    const char *topic, *patient_id;
    const char *phone; /* 11 digits, or NULL when the Patient has none */
    const char *text;
    struct json_object *fields;
};

struct ob_channel {
    const char *name;
    int needs_phone;
    jk_rc (*send)(const struct ob_msg *m);
};

static jk_rc send_sms(const struct ob_msg *m)
{
    return jk_sms_send(m->phone, m->text);
}

static jk_rc send_wechat(const struct ob_msg *m)
{
    struct jk_wechat_msg w = {m->patient_id, m->topic, m->text, m->fields};
    return jk_wechat_send(&w);
}

static const struct ob_channel channels[] = {
    {"sms", 1, send_sms},
    {"wechat", 0, send_wechat},
};

/* ---- the module's state ---- */

static struct {
    struct ob_rules r;
    const struct ob_channel *ch[OB_MAX_CHANNELS];
    size_t n_ch;
    int is_ready;
    /* the dispatcher thread */
    pthread_mutex_t lock; /* guards is_stopping */
    struct jk_periodic *thread;
    jk_store *db;
    int is_stopping;
} ob = {.lock = PTHREAD_MUTEX_INITIALIZER};

static int is_stopping(void)
{
    pthread_mutex_lock(&ob.lock);
    int is = ob.is_stopping;
    pthread_mutex_unlock(&ob.lock);
    return is;
}

static jk_rc channels_parse(const char *list, const struct ob_channel **out, size_t *n, char *err,
                            size_t errlen)
{
    const char *p = list;
    *n = 0;
    while (*p) {
        size_t len = strcspn(p, ",");
        const char *name = p;
        while (len && (*name == ' ' || *name == '\t'))
            name++, len--;
        while (len && (name[len - 1] == ' ' || name[len - 1] == '\t'))
            len--;
        const struct ob_channel *ch = NULL;
        for (size_t i = 0; i < sizeof channels / sizeof channels[0]; i++)
            if (strlen(channels[i].name) == len && !memcmp(channels[i].name, name, len))
                ch = &channels[i];
        if (!ch) {
            snprintf(err, errlen, "notify_channels: unknown channel '%.*s' (known: sms, wechat)",
                     (int)(len > 32 ? 32 : len), name);
            return JK_EINVAL;
        }
        for (size_t i = 0; i < *n; i++)
            if (out[i] == ch) {
                snprintf(err, errlen, "notify_channels: '%s' is listed twice", ch->name);
                return JK_EINVAL;
            }
        out[(*n)++] = ch; /* at most one of each: never past OB_MAX_CHANNELS */
        p = name + len;
        p += strcspn(p, ",");
        if (*p == ',') p++;
    }
    if (!*n) {
        snprintf(err, errlen, "notify_channels: name at least one channel (sms, wechat)");
        return JK_EINVAL;
    }
    return JK_OK;
}

jk_rc jk_outbox_init(const char *channel_list, char *err, size_t errlen)
{
    const struct ob_channel *ch[OB_MAX_CHANNELS];
    size_t n_ch;
    struct ob_rules *r = malloc(sizeof *r);
    if (!r) return JK_ENOMEM;
    jk_rc rc = channels_parse(channel_list, ch, &n_ch, err, errlen);
    if (!rc) rc = rules_load(rules_path(), r, err, errlen);
    if (!rc) {
        ob.r = *r;
        memcpy(ob.ch, ch, sizeof ch);
        ob.n_ch = n_ch;
        ob.is_ready = 1;
    }
    free(r);
    return rc;
}

/* ---- putting and voiding, inside the caller's transaction ---- */

static const char sql_put[] =
    "INSERT INTO outbox (topic, ref, patient_id, payload, created_ms, due_ms) VALUES (?, ?, ?, ?, "
    "?, ?)";
static const char sql_void_ref[] =
    "UPDATE outbox SET state = 'void' WHERE ref = ? AND state = 'pending'";
static const char sql_void_topic[] =
    "UPDATE outbox SET state = 'void' WHERE ref = ? AND topic = ? AND state = 'pending'";

static int payload_ok(const char *payload)
{
    size_t n = strlen(payload);
    if (n > OB_PAYLOAD_MAX) return 0;
    struct json_object *o = json_tokener_parse(payload);
    int is_ok = json_object_is_type(o, json_type_object);
    json_object_put(o);
    return is_ok;
}

jk_rc jk_outbox_put(jk_conn *c, const char *topic, const char *ref, const char *patient_id,
                    const char *payload, int64_t now_ms, int64_t due_ms)
{
    if (!topic || topic_index(topic) < 0 || !ref || !*ref || strlen(ref) > OB_REF_MAX ||
        !patient_id || !jk_fhir_id_ok(patient_id) || !payload || !payload_ok(payload))
        return JK_EINVAL;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql_put, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, topic, strlen(topic));
    jk_stmt_text_arg(s, 2, ref, strlen(ref));
    jk_stmt_text_arg(s, 3, patient_id, strlen(patient_id));
    jk_stmt_text_arg(s, 4, payload, strlen(payload));
    jk_stmt_int_arg(s, 5, now_ms);
    jk_stmt_int_arg(s, 6, due_ms);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_outbox_void(jk_conn *c, const char *ref, const char *topic)
{
    if (!ref || !*ref) return JK_EINVAL;
    jk_stmt *s;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, topic ? sql_void_topic : sql_void_ref, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, ref, strlen(ref));
    if (topic) jk_stmt_text_arg(s, 2, topic, strlen(topic));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* ---- claiming ---- */

struct ob_row {
    int64_t id, claimed_ms; /* claimed_ms: our claim, the mark the result is recorded under */
    int attempts;
    const char *topic, *patient_id, *payload, *sent;
};

struct claim_job {
    int64_t now_ms, lease_ms;
    struct jk_arena *a;
    struct ob_row rows[OB_BATCH];
    size_t n;
};

/* Due, pending, and not claimed by a dispatcher that may still be sending it. */
static const char sql_due[] =
    "SELECT id, claimed_ms, topic, patient_id, payload, attempts, sent_channels FROM outbox"
    " WHERE state = 'pending' AND due_ms <= ? AND claimed_ms <= ? ORDER BY due_ms, id"
    " LIMIT " OB_BATCH_SQL;
/* The claim: only if nobody changed the row's claim since we read it. On PostgreSQL a
 * concurrent claimant waits for the row and then finds claimed_ms changed (0 rows); on
 * SQLite writers are serialised. Either way one dispatcher gets each row. */
static const char sql_claim[] =
    "UPDATE outbox SET claimed_ms = ? WHERE id = ? AND state = 'pending' AND claimed_ms = ?";

static const char *col_dup(struct jk_arena *a, jk_stmt *s, int i)
{
    size_t n = 0;
    const char *t = jk_stmt_col_text(s, i, &n);
    return jk_arena_strndup(a, t ? t : "", t ? n : 0);
}

static jk_rc claim_tx(jk_conn *c, void *arg)
{
    struct claim_job *j = arg;
    struct ob_row seen[OB_BATCH];
    size_t n_seen = 0;
    jk_stmt *s;
    int has_row = 0;
    j->n = 0;
    jk_rc rc = jk_conn_prepare(c, sql_due, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, j->now_ms);
    jk_stmt_int_arg(s, 2, j->now_ms - j->lease_ms);
    while (!(rc = jk_stmt_step(s, &has_row)) && has_row && n_seen < OB_BATCH) {
        struct ob_row *r = &seen[n_seen++];
        r->id = jk_stmt_col_int(s, 0);
        r->claimed_ms = jk_stmt_col_int(s, 1);
        r->topic = col_dup(j->a, s, 2);
        r->patient_id = col_dup(j->a, s, 3);
        r->payload = col_dup(j->a, s, 4);
        r->attempts = (int)jk_stmt_col_int(s, 5);
        r->sent = col_dup(j->a, s, 6);
        if (!r->topic || !r->patient_id || !r->payload || !r->sent) rc = JK_ENOMEM;
        if (rc) break;
    }
    jk_stmt_reset(s);
    for (size_t i = 0; !rc && i < n_seen; i++) {
        if ((rc = jk_conn_prepare(c, sql_claim, &s))) break;
        jk_stmt_int_arg(s, 1, j->now_ms);
        jk_stmt_int_arg(s, 2, seen[i].id);
        jk_stmt_int_arg(s, 3, seen[i].claimed_ms);
        rc = jk_stmt_step(s, &has_row);
        if (!rc && jk_stmt_changes(s) == 1) {
            j->rows[j->n] = seen[i];
            j->rows[j->n++].claimed_ms = j->now_ms;
        }
        jk_stmt_reset(s);
    }
    return rc;
}

/* ---- the recipient's phone ---- */

/* The 11 digits of a mainland mobile number in s (spaces, hyphens and +86 allowed), or 0. */
static int mobile_norm(const char *s, char out[12])
{
    char d[24] = "";
    size_t n = 0;
    for (; *s; s++) {
        if (*s == ' ' || *s == '-' || (*s == '+' && !n)) continue;
        if (*s < '0' || *s > '9' || n + 1 >= sizeof d) return 0;
        d[n++] = *s;
    }
    const char *p = d;
    if (n == 13 && !memcmp(d, "86", 2)) p += 2, n -= 2;
    if (n == 15 && !memcmp(d, "0086", 4)) p += 4, n -= 4;
    if (n != 11 || p[0] != '1') return 0;
    memcpy(out, p, 11);
    out[11] = '\0';
    return 1;
}

/* The mobile number among the Patient's (opened) telecom: a current "sms" or "phone" contact
 * point, one with use "mobile" first. */
static int telecom_mobile(struct json_object *patient, char phone[12])
{
    struct json_object *tel;
    int best = 0;
    if (!json_object_object_get_ex(patient, "telecom", &tel) ||
        !json_object_is_type(tel, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(tel); i++) {
        struct json_object *cp = json_object_array_get_idx(tel, i), *period, *end;
        const char *system = jk_json_str(cp, "system"), *value = jk_json_str(cp, "value");
        const char *use = jk_json_str(cp, "use");
        char cand[12];
        if (!system || (strcmp(system, "phone") && strcmp(system, "sms")) || !value) continue;
        if (use && !strcmp(use, "old")) continue;
        if (json_object_object_get_ex(cp, "period", &period) &&
            json_object_object_get_ex(period, "end", &end))
            continue; /* a number that has stopped being theirs */
        if (!mobile_norm(value, cand)) continue;
        int rank = use && !strcmp(use, "mobile") ? 2 : 1;
        if (rank > best) {
            memcpy(phone, cand, 12);
            best = rank;
        }
    }
    return best > 0;
}

/* The mobile number of Patient patient_id into phone. JK_OK with phone empty and *why set
 * when there is none (the message can never go by SMS); another rc when it could not be read
 * now. The number is opened here (it is sealed at rest) and goes nowhere but the adapter. */
static jk_rc patient_phone(jk_store *db, struct jk_arena *a, const char *patient_id, char phone[12],
                           const char **why)
{
    jk_conn *c = jk_store_conn(db);
    struct jk_res cur;
    struct jk_diag d;
    phone[0] = '\0';
    *why = NULL;
    if (!c) return JK_EDB;
    jk_rc rc = jk_res_read(c, a, "Patient", patient_id, &cur);
    if (rc == JK_ENOTFOUND || rc == JK_EGONE) {
        *why = rc == JK_ENOTFOUND ? "the Patient does not exist" : "the Patient was deleted";
        return JK_OK;
    }
    if (rc) return rc;
    struct json_object *p = json_tokener_parse(cur.body);
    jk_diag_init(&d, a);
    if (!p || (rc = jk_protect_unseal(p, &d))) {
        json_object_put(p);
        return rc ? rc : JK_EINTERNAL;
    }
    if (!telecom_mobile(p, phone)) *why = "the Patient has no mobile phone number";
    json_object_put(p);
    return JK_OK;
}

/* ---- delivering one row ---- */

struct outcome {
    const char *state; /* "sent", "pending" (to be tried again) or "failed" */
    int attempts;
    int64_t due_ms;
    char error[OB_ERROR_MAX];
    char sent[64]; /* the channels delivered, comma-separated */
};

static int list_has(const char *list, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = list; *p; p += strcspn(p, ","), p += *p == ',') {
        if (!strncmp(p, name, n) && (p[n] == ',' || !p[n])) return 1;
    }
    return 0;
}

static void add_error(struct outcome *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add_error(struct outcome *o, const char *fmt, ...)
{
    size_t n = strlen(o->error);
    va_list ap;
    if (n && n + 2 < sizeof o->error)
        n += (size_t)snprintf(o->error + n, sizeof o->error - n, "; ");
    if (n >= sizeof o->error - 1) return;
    va_start(ap, fmt);
    vsnprintf(o->error + n, sizeof o->error - n, fmt, ap);
    va_end(ap);
}

/* The row's text into text. 0, or 1 with the error in o when it can never be made. */
static int make_text(const struct ob_row *row, struct json_object *payload, struct jk_buf *text,
                     struct outcome *o)
{
    char err[300] = "";
    int t = topic_index(row->topic);
    if (t < 0)
        add_error(o, "no template for the topic");
    else if (!json_object_is_type(payload, json_type_object))
        add_error(o, "the payload is not a JSON object");
    else if (render(ob.r.templates[t], payload, text, err, sizeof err))
        add_error(o, "%s", err);
    else
        return 0;
    return 1;
}

/* The kinds of failure of a row's delivery, as bits. */
enum { FAIL_NEVER = 1, FAIL_NOW = 2 };

/* Sends m through every configured channel that has not delivered it yet, recording those
 * that do in o->sent. phone_rc: why the Patient could not be read (the SMS channel fails for
 * now); no_phone: why it has no number (the SMS channel can never deliver). Returns FAIL_*
 * bits. */
static unsigned send_all(const struct ob_msg *m, jk_rc phone_rc, const char *no_phone,
                         struct outcome *o)
{
    unsigned fail = 0;
    for (size_t i = 0; i < ob.n_ch; i++) {
        const struct ob_channel *ch = ob.ch[i];
        if (list_has(o->sent, ch->name)) continue;
        jk_rc rc = JK_OK;
        if (ch->needs_phone && phone_rc) {
            rc = phone_rc;
        } else if (ch->needs_phone && !m->phone) {
            add_error(o, "%s: %s", ch->name, no_phone);
            fail |= FAIL_NEVER;
            continue;
        } else {
            rc = ch->send(m);
        }
        if (!rc) {
            size_t n = strlen(o->sent);
            snprintf(o->sent + n, sizeof o->sent - n, "%s%s", n ? "," : "", ch->name);
        } else if (rc == JK_EINVAL) {
            add_error(o, "%s: the recipient cannot receive it", ch->name);
            fail |= FAIL_NEVER;
        } else {
            add_error(o, "%s: not delivered (%s)", ch->name, jk_rc_name(rc));
            fail |= FAIL_NOW;
        }
    }
    return fail;
}

/* Delivers the row, and decides what becomes of it: sent when every channel delivered it;
 * failed at once when one never can (the others still send it), or after the last attempt;
 * else tried again after the back-off step of this attempt. */
static void deliver(jk_store *db, struct jk_arena *a, const struct ob_row *row, int64_t now_ms,
                    struct outcome *o)
{
    char phone[12] = "";
    memset(o, 0, sizeof *o);
    o->attempts = row->attempts + 1;
    snprintf(o->sent, sizeof o->sent, "%s", row->sent);
    struct json_object *payload = json_tokener_parse(row->payload);
    struct jk_buf text;
    jk_buf_init(&text, OB_TEXT_MAX);
    unsigned fail = make_text(row, payload, &text, o) ? FAIL_NEVER : 0;
    if (!fail) {
        int needs_phone = 0;
        const char *no_phone = NULL;
        jk_rc phone_rc = JK_OK;
        for (size_t i = 0; i < ob.n_ch; i++)
            if (ob.ch[i]->needs_phone && !list_has(o->sent, ob.ch[i]->name)) needs_phone = 1;
        if (needs_phone) phone_rc = patient_phone(db, a, row->patient_id, phone, &no_phone);
        struct ob_msg m = {row->topic, row->patient_id, phone[0] ? phone : NULL, text.p, payload};
        fail = send_all(&m, phone_rc, no_phone, o);
    }
    explicit_bzero(phone, sizeof phone);
    jk_buf_free(&text);
    json_object_put(payload);
    if (!fail) {
        o->state = "sent";
    } else if ((fail & FAIL_NEVER) || o->attempts >= ob.r.max_attempts) {
        o->state = "failed";
    } else {
        size_t step = (size_t)o->attempts - 1;
        if (step >= ob.r.n_backoff) step = ob.r.n_backoff - 1;
        o->state = "pending";
        o->due_ms = now_ms + (int64_t)ob.r.backoff_s[step] * 1000;
    }
}

/* ---- recording the result ---- */

/* Only under our claim: a row voided meanwhile, or taken by another dispatcher after our
 * lease ran out, is left as it is. */
static const char sql_done[] =
    "UPDATE outbox SET state = ?, attempts = ?, claimed_ms = 0, done_ms = ?, error = ?,"
    " sent_channels = ? WHERE id = ? AND claimed_ms = ? AND state = 'pending'";
static const char sql_retry[] =
    "UPDATE outbox SET attempts = ?, due_ms = ?, claimed_ms = 0, error = ?, sent_channels = ?"
    " WHERE id = ? AND claimed_ms = ? AND state = 'pending'";
static const char sql_release[] =
    "UPDATE outbox SET claimed_ms = 0 WHERE id = ? AND claimed_ms = ? AND state = 'pending'";

struct record_job {
    const struct ob_row *row;
    const struct outcome *o; /* NULL: give the claim back, nothing sent */
    int64_t now_ms;
    int64_t changes;
};

static jk_rc record_tx(jk_conn *c, void *arg)
{
    struct record_job *j = arg;
    const struct outcome *o = j->o;
    jk_stmt *s;
    int has_row;
    int is_retry = o && !strcmp(o->state, "pending");
    jk_rc rc = jk_conn_prepare(c, !o ? sql_release : is_retry ? sql_retry : sql_done, &s);
    if (rc) return rc;
    int i = 1;
    if (o && !is_retry) {
        jk_stmt_text_arg(s, i++, o->state, strlen(o->state));
        jk_stmt_int_arg(s, i++, o->attempts);
        jk_stmt_int_arg(s, i++, j->now_ms);
    } else if (o) {
        jk_stmt_int_arg(s, i++, o->attempts);
        jk_stmt_int_arg(s, i++, o->due_ms);
    }
    if (o) {
        jk_stmt_text_arg(s, i++, o->error, strlen(o->error));
        jk_stmt_text_arg(s, i++, o->sent, strlen(o->sent));
    }
    jk_stmt_int_arg(s, i++, j->row->id);
    jk_stmt_int_arg(s, i, j->row->claimed_ms);
    rc = jk_stmt_step(s, &has_row);
    j->changes = jk_stmt_changes(s);
    jk_stmt_reset(s);
    return rc;
}

static void log_outcome(const struct ob_row *row, const struct outcome *o, int64_t changes,
                        int64_t now_ms)
{
    /* Row id and topic only: never the recipient or the text. */
    if (!changes)
        jk_log_warn("outbox",
                    "notification %lld (%s): voided or taken by another dispatcher while it was "
                    "being sent; its result is not recorded",
                    (long long)row->id, row->topic);
    else if (!strcmp(o->state, "sent"))
        jk_log_info("outbox", "notification %lld (%s) sent through %s", (long long)row->id,
                    row->topic, o->sent);
    else if (!strcmp(o->state, "failed"))
        jk_log_warn("outbox", "notification %lld (%s) failed after %d attempt%s: %s",
                    (long long)row->id, row->topic, o->attempts, o->attempts == 1 ? "" : "s",
                    o->error);
    else
        jk_log_info("outbox", "notification %lld (%s): attempt %d failed (%s); next in %lld s",
                    (long long)row->id, row->topic, o->attempts, o->error,
                    (long long)((o->due_ms - now_ms) / 1000));
}

/* ---- one pass ---- */

jk_rc jk_outbox_run(jk_store *db, int64_t now_ms, size_t *n_sent)
{
    if (n_sent) *n_sent = 0;
    if (!ob.is_ready) return JK_EINTERNAL;
    struct jk_arena *a = jk_arena_new(0);
    if (!a) return JK_ENOMEM;
    jk_rc rc = JK_OK;
    size_t n_done = 0;
    while (!rc && n_done < OB_PASS_MAX) {
        struct claim_job cj = {.now_ms = now_ms, .lease_ms = (int64_t)ob.r.lease_s * 1000, .a = a};
        if ((rc = jk_store_tx(db, claim_tx, &cj)) || !cj.n) break;
        for (size_t i = 0; i < cj.n; i++, n_done++) {
            struct outcome o;
            struct record_job rj = {.row = &cj.rows[i], .now_ms = now_ms};
            if (!is_stopping()) { /* on stop, the rest is given back for the next start */
                deliver(db, a, &cj.rows[i], now_ms, &o);
                rj.o = &o;
            }
            jk_rc rrc = jk_store_tx(db, record_tx, &rj);
            if (rrc) {
                jk_log_error("outbox", "notification %lld: its result was not recorded: %s",
                             (long long)cj.rows[i].id, jk_rc_name(rrc));
                rc = rrc; /* the claim lapses after the lease; the rest of the batch goes on */
                continue;
            }
            if (!rj.o) continue;
            log_outcome(&cj.rows[i], &o, rj.changes, now_ms);
            if (rj.changes && !strcmp(o.state, "sent") && n_sent) (*n_sent)++;
        }
        jk_arena_reset(a);
        if (is_stopping()) break;
    }
    jk_arena_free(a);
    return rc;
}

/* ---- the dispatcher thread ---- */

static void dispatch_once(void *arg)
{
    (void)arg;
    jk_rc rc = jk_outbox_run(ob.db, jk_time_now_ms(), NULL);
    if (rc) jk_log_error("outbox", "a dispatcher pass failed: %s", jk_rc_name(rc));
}

jk_rc jk_outbox_start(jk_store *db)
{
    if (!ob.is_ready) return JK_EINTERNAL;
    if (ob.thread) return JK_EINVAL;
    ob.db = db;
    ob.is_stopping = 0;
    return jk_periodic_start(dispatch_once, NULL, OB_EVERY_MS, &ob.thread);
}

void jk_outbox_stop(void)
{
    if (!ob.thread) return;
    pthread_mutex_lock(&ob.lock);
    ob.is_stopping = 1; /* a pass in progress ends after the row it is sending */
    pthread_mutex_unlock(&ob.lock);
    jk_periodic_stop(ob.thread);
    ob.thread = NULL;
    ob.is_stopping = 0;
}
