/* auth_api.c - the login endpoints (POST /auth/token with the OAuth 2.0 password and
 * client_credentials grants, POST /auth/revoke per RFC 7009, GET /auth/me), bearer token
 * authentication for the other handlers, and the in-memory rate limits. */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "api/api_int.h"
#include "auth/account.h"
#include "auth/audit.h"
#include "auth/token.h"
#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"

#define OAUTH_JSON     "application/json; charset=utf-8"
#define FORM_MAX       32   /* form fields accepted in one request */
#define RATE_SLOTS     4096 /* buckets remembered (clients and accounts) */
#define RATE_PROBES    8    /* slots looked at for one key */
#define RATE_KEY_BYTES 200  /* bucket name plus key, truncated past this */

/* ---- state shared by every request: the rules and the rate table ---- */

struct rate_slot {
    uint64_t key;    /* keyed hash of class and key; 0: free */
    double tokens;   /* requests left in the burst */
    int64_t last_ms; /* when tokens was computed */
};

static struct {
    pthread_once_t once;
    atomic_int is_ready;
    struct jk_security_rules rules;
    char dummy_hash[JK_PWHASH_MAX]; /* verified against for unknown user names */
    unsigned char rate_key[crypto_shorthash_KEYBYTES];
    pthread_mutex_t rate_lock; /* guards slots only; never held while hashing a password */
    struct rate_slot slots[RATE_SLOTS];
} auth = {.once = PTHREAD_ONCE_INIT, .rate_lock = PTHREAD_MUTEX_INITIALIZER};

jk_rc jk_api_auth_init(const struct jk_security_rules *rules)
{
    char pw[32];
    if (sodium_init() < 0) return JK_EINTERNAL;
    auth.rules = *rules;
    randombytes_buf(auth.rate_key, sizeof auth.rate_key);
    /* A hash at the rules' cost, so that an unknown user name takes as long as a known one. */
    randombytes_buf(pw, sizeof pw - 1);
    for (size_t i = 0; i < sizeof pw - 1; i++)
        pw[i] = (char)('a' + (unsigned char)pw[i] % 26);
    pw[sizeof pw - 1] = '\0';
    jk_rc rc = jk_password_hash(rules, pw, auth.dummy_hash, sizeof auth.dummy_hash);
    sodium_memzero(pw, sizeof pw);
    if (!rc) atomic_store(&auth.is_ready, 1);
    return rc;
}

/* When the server did not call jk_api_auth_init at start-up: read the rules on first use. */
static void auth_lazy_init(void)
{
    if (atomic_load(&auth.is_ready)) return;
    char err[JK_RULES_ERR];
    struct jk_security_rules r;
    if (jk_security_rules_load(jk_security_rules_path(), &r, err, sizeof err)) {
        jk_log_error("auth", "%s", err);
        return;
    }
    if (jk_api_auth_init(&r)) jk_log_error("auth", "cannot hash at the cost of %s", r.path);
}

const struct jk_security_rules *jk_api_security_rules(void)
{
    pthread_once(&auth.once, auth_lazy_init);
    return atomic_load(&auth.is_ready) ? &auth.rules : NULL;
}

/* ---- rate limits: a token bucket per (class, key) in a fixed table ---- */

/* Takes one request from the bucket of cls and key under rule rr at now_ms. Returns 0 when
 * allowed, otherwise the whole seconds until the next request would be allowed. */
static int rate_take(const char *cls, const char *key, const struct jk_rate_rule *rr,
                     int64_t now_ms)
{
    char in[RATE_KEY_BYTES];
    unsigned char h[crypto_shorthash_BYTES];
    int n = snprintf(in, sizeof in, "%s%c%s", cls, 0, key);
    size_t len = n < 0 ? 0 : (size_t)n >= sizeof in ? sizeof in - 1 : (size_t)n;
    /* SipHash under a random key: a client cannot choose keys that collide. */
    crypto_shorthash(h, (const unsigned char *)in, len, auth.rate_key);
    uint64_t k = 0;
    for (size_t i = 0; i < sizeof h; i++)
        k = k << 8 | h[i];
    k |= 1;
    double limit = rr->limit, per_ms = (double)rr->limit / (rr->window_s * 1000.0);
    int wait_s = 0;
    pthread_mutex_lock(&auth.rate_lock);
    struct rate_slot *hit = NULL, *victim = NULL;
    for (size_t i = 0; i < RATE_PROBES && !hit; i++) {
        struct rate_slot *s = &auth.slots[(k + i) % RATE_SLOTS];
        if (s->key == k)
            hit = s;
        else if (!victim || !s->key || (victim->key && s->last_ms < victim->last_ms))
            victim = s; /* a free slot, else the one idle longest */
    }
    if (!hit) {
        hit = victim;
        hit->key = k;
        hit->tokens = limit;
        hit->last_ms = now_ms;
    }
    if (now_ms > hit->last_ms) {
        hit->tokens += (double)(now_ms - hit->last_ms) * per_ms;
        if (hit->tokens > limit) hit->tokens = limit;
        hit->last_ms = now_ms;
    }
    if (hit->tokens >= 1.0) {
        hit->tokens -= 1.0;
    } else {
        double ms = (1.0 - hit->tokens) / per_ms;
        wait_s = (int)((ms + 999.0) / 1000.0);
        if (wait_s < 1) wait_s = 1;
    }
    pthread_mutex_unlock(&auth.rate_lock);
    return wait_s;
}

int jk_api_rate_limit(struct jk_http_req *rq, enum jk_rate_class cls, const char *account)
{
    const struct jk_security_rules *r = jk_api_security_rules();
    if (!r) return 0;
    int is_login = cls == JK_RATE_LOGIN;
    const char *name = is_login ? "login" : "expensive";
    int64_t now = jk_time_now_ms();
    int wait = rate_take(name, jk_http_client_addr(rq),
                         is_login ? &r->rate_login_addr : &r->rate_costly_addr, now);
    if (!wait && account && *account) {
        char acct_cls[32];
        snprintf(acct_cls, sizeof acct_cls, "%s/account", name);
        wait = rate_take(acct_cls, account, is_login ? &r->rate_login_acct : &r->rate_costly_acct,
                         now);
    }
    if (wait) {
        char v[24];
        snprintf(v, sizeof v, "%d", wait);
        jk_http_add_header(rq, "Retry-After", v);
    }
    return wait;
}

int jk_api_rate_take(struct jk_http_req *rq, const char *cls, const char *key,
                     const struct jk_rate_rule *rr)
{
    if (!jk_api_security_rules()) return 0; /* the rate table's key is made there */
    int wait = rate_take(cls, key, rr, jk_time_now_ms());
    if (wait) {
        char v[24];
        snprintf(v, sizeof v, "%d", wait);
        jk_http_add_header(rq, "Retry-After", v);
    }
    return wait;
}

jk_rc jk_api_send_throttled(struct jk_http_req *rq, int wait_s)
{
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_diag_add(&rq->diag, JK_EINVAL, "throttled", NULL,
                "too many requests; try again in %d second%s", wait_s, wait_s == 1 ? "" : "s");
    jk_rc rc = jk_api_outcome_text(rq, NULL, &b);
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 429, &b);
}

/* ---- responses ---- */

/* Sends body (a JSON object in b) with the headers every /auth answer carries. */
static jk_rc send_json(struct jk_http_req *rq, int status, struct jk_buf *b)
{
    char *body = jk_arena_strndup(rq->arena, b->p ? b->p : "", b->len);
    size_t len = b->len;
    jk_buf_free(b);
    if (!body) return JK_ENOMEM;
    /* RFC 6749 section 5.1: responses with tokens or credentials are never cached. */
    jk_http_add_header(rq, "Cache-Control", "no-store");
    jk_http_add_header(rq, "Pragma", "no-cache");
    return jk_http_respond(rq, status, OAUTH_JSON, body, len);
}

static jk_rc json_member(struct jk_buf *b, int is_first, const char *name, const char *value)
{
    jk_rc rc = jk_buf_printf(b, "%s\"%s\":\"", is_first ? "" : ",", name);
    if (!rc) rc = jk_buf_json_escape(b, value, strlen(value));
    if (!rc) rc = jk_buf_puts(b, "\"");
    return rc;
}

/* An OAuth error response (RFC 6749 section 5.2): {"error", "error_description", and our
 * stable "reason"}. invalid_client is 401 with a Basic challenge (section 5.2). */
static jk_rc oauth_error(struct jk_http_req *rq, int status, const char *error, const char *reason,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static jk_rc oauth_error(struct jk_http_req *rq, int status, const char *error, const char *reason,
                         const char *fmt, ...)
{
    char desc[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(desc, sizeof desc, fmt, ap);
    va_end(ap);
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_buf_puts(&b, "{");
    if (!rc) rc = json_member(&b, 1, "error", error);
    if (!rc) rc = json_member(&b, 0, "error_description", desc);
    if (!rc && reason) rc = json_member(&b, 0, "reason", reason);
    if (!rc) rc = jk_buf_puts(&b, "}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    if (status == 401) jk_http_add_header(rq, "WWW-Authenticate", "Basic realm=\"jiankang\"");
    return send_json(rq, status, &b);
}

static jk_rc send_throttled_oauth(struct jk_http_req *rq, int wait_s)
{
    return oauth_error(rq, 429, "slow_down", "rate_limited",
                       "too many login attempts; try again in %d second%s", wait_s,
                       wait_s == 1 ? "" : "s");
}

/* ---- the form body (application/x-www-form-urlencoded) ---- */

struct form {
    const char *keys[FORM_MAX], *values[FORM_MAX];
    size_t n;
    int is_dup;   /* a parameter came twice (RFC 6749 section 3.2 forbids it) */
    int is_large; /* more than FORM_MAX fields */
};

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Decodes p[0..n) ('+' is a space, %XX a byte) into the arena. */
static char *form_decode(struct jk_arena *a, const char *p, size_t n)
{
    char *out = jk_arena_alloc(a, n + 1);
    size_t k = 0;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '+') {
            out[k++] = ' ';
        } else if (p[i] == '%' && i + 2 < n && hexval(p[i + 1]) >= 0 && hexval(p[i + 2]) >= 0) {
            out[k++] = (char)(hexval(p[i + 1]) * 16 + hexval(p[i + 2]));
            i += 2;
        } else {
            out[k++] = p[i];
        }
    }
    out[k] = '\0';
    return out;
}

static jk_rc form_parse(struct jk_http_req *rq, struct form *f)
{
    const char *p = rq->body ? rq->body : "", *end = p + (rq->body ? rq->body_len : 0);
    memset(f, 0, sizeof *f);
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        if (stop > p) {
            if (f->n == FORM_MAX) {
                f->is_large = 1;
                break;
            }
            const char *kend = eq ? eq : stop;
            char *k = form_decode(rq->arena, p, (size_t)(kend - p));
            char *v = eq ? form_decode(rq->arena, eq + 1, (size_t)(stop - eq - 1))
                         : jk_arena_strdup(rq->arena, "");
            if (!k || !v) return JK_ENOMEM;
            for (size_t i = 0; i < f->n; i++)
                if (!strcmp(f->keys[i], k)) f->is_dup = 1;
            f->keys[f->n] = k;
            f->values[f->n] = v;
            f->n++;
        }
        p = amp ? amp + 1 : end;
    }
    return JK_OK;
}

/* The value of name, or NULL when absent or empty (RFC 6749 section 3.1: an empty value is
 * the same as none). */
static const char *form_get(const struct form *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->keys[i], name)) return f->values[i][0] ? f->values[i] : NULL;
    return NULL;
}

static int is_form(struct jk_http_req *rq)
{
    const char *ct = jk_http_header(rq, "Content-Type");
    return ct && !strncasecmp(ct, "application/x-www-form-urlencoded", 33) &&
           (ct[33] == '\0' || ct[33] == ';' || ct[33] == ' ');
}

/* Reads "Authorization: Basic base64(id:secret)" (RFC 6749 section 2.3.1: both parts
 * form-encoded). 0 when there is no such header; -1 when it is malformed. */
static int basic_auth(struct jk_http_req *rq, const char **id, const char **secret)
{
    const char *h = jk_http_header(rq, "Authorization");
    if (!h || strncasecmp(h, "Basic ", 6)) return 0;
    h += 6;
    while (*h == ' ')
        h++;
    size_t n = strlen(h), len = 0;
    unsigned char *raw = jk_arena_alloc(rq->arena, n + 1);
    if (!raw || sodium_base642bin(raw, n, h, n, " ", &len, NULL, sodium_base64_VARIANT_ORIGINAL))
        return -1;
    const unsigned char *colon = memchr(raw, ':', len);
    if (!colon || memchr(raw, '\0', len)) return -1;
    *id = form_decode(rq->arena, (const char *)raw, (size_t)(colon - raw));
    *secret = form_decode(rq->arena, (const char *)colon + 1, len - (size_t)(colon - raw) - 1);
    return *id && *secret ? 1 : -1;
}

/* ---- the audit records of logins ----
 * The one place where login, failed login, lockout and logout are recorded, inside the
 * transaction that records the attempt (on c, as the transaction's last statement), so the
 * record commits with the attempt; a failed append fails the transaction. action is "login",
 * "login-failed" or "logout"; detail is the stable reason of a failure ("bad_secret",
 * "locked", "lockout", "totp_required", ...), NULL otherwise. username is NULL when the name
 * given matches no account: what was typed is not recorded (it may be a password), the actor
 * is "anonymous" and the detail "unknown_account". Never pass a password, token or secret
 * here. au is NULL when nothing is audited (security off, unit tests). */
static jk_rc audit_login(const struct jk_audit *au, jk_conn *c, const char *action,
                         const char *username, const char *role, const char *org,
                         const char *client_addr, const char *request_id, jk_rc outcome,
                         const char *detail)
{
    if (!au) return JK_OK;
    struct jk_audit_rec r = {.actor = username,
                             .role = role,
                             .org = jk_api_ref_id(org, "Organization"),
                             .action = action,
                             .client_addr = client_addr,
                             .outcome = outcome,
                             .request_id = request_id,
                             .reason = detail};
    return jk_audit_append(au, c, &r, NULL);
}

/* ---- POST /auth/token ---- */

struct login_job {
    const struct jk_security_rules *rules;
    const struct jk_audit *au; /* NULL: not audited */
    struct jk_account acct;    /* id 0: the name matched no account */
    enum jk_login_outcome outcome;
    int is_client;      /* client_credentials */
    int is_wrong_grant; /* right secret, but the account uses the other grant */
    int is_bad_scope;   /* right secret, but scopes beyond the role's were asked for */
    int64_t now_ms, totp_step;
    char scopes[JK_SCOPES_MAX + 1];
    char new_hash[JK_PWHASH_MAX]; /* the password again at the rules' cost, or "" */
    char token[JK_TOKEN_TEXT_LEN + 1];
    const char *addr, *request_id;
    int is_locked_now;
    int is_replayed; /* the right code, but its step was used already (sent twice at once) */
    jk_rc rc;
};

static int login_counts_as_failure(enum jk_login_outcome o)
{
    return o == JK_LOGIN_BAD_SECRET || o == JK_LOGIN_BAD_TOTP;
}

static int login_issues_token(const struct login_job *job)
{
    return job->acct.id && job->outcome == JK_LOGIN_OK && !job->is_wrong_grant &&
           !job->is_bad_scope;
}

/* The transaction of a login attempt: the failure count and lockout, or the success, the
 * new token and (when the cost changed) the new hash; then the audit record. A failed
 * attempt commits too: its count and its record are the transaction's point. */
static jk_rc login_tx(jk_conn *c, void *arg)
{
    struct login_job *job = arg;
    const struct jk_account *a = &job->acct;
    const char *role = a->id ? jk_role_info(a->role)->name : NULL;
    jk_rc rc = JK_OK;
    job->is_replayed = 0; /* a transaction may be run again */
    if (a->id && login_counts_as_failure(job->outcome)) {
        rc = jk_account_note_failure(c, a->id, job->rules, job->now_ms, &job->is_locked_now);
    } else if (login_issues_token(job)) {
        int64_t life = (int64_t)job->rules->token_lifetime_minutes * 60000;
        rc = jk_account_note_success(c, a->id, job->totp_step);
        if (rc == JK_EUNAUTH) { /* nothing written: record the refusal below */
            job->is_replayed = 1;
            rc = JK_OK;
        } else {
            if (!rc && job->new_hash[0])
                rc = jk_account_set_password(c, a->id, job->new_hash, a->password_set_ms);
            if (!rc)
                rc = jk_token_issue(c, a->id, job->scopes, job->now_ms, life, job->token,
                                    sizeof job->token);
        }
    }
    if (rc) return rc;
    if (login_issues_token(job) && !job->is_replayed)
        return audit_login(job->au, c, "login", a->username, role, a->org, job->addr,
                           job->request_id, JK_OK, NULL);
    rc = audit_login(job->au, c, "login-failed", a->id ? a->username : NULL, role,
                     a->id ? a->org : NULL, job->addr, job->request_id, JK_EUNAUTH,
                     !a->id                ? "unknown_account"
                     : job->is_replayed    ? "totp_replayed"
                     : job->is_wrong_grant ? "wrong_grant"
                     : job->is_bad_scope   ? "invalid_scope"
                                           : jk_login_outcome_name(job->outcome));
    if (!rc && job->is_locked_now)
        rc = audit_login(job->au, c, "login-failed", a->username, role, a->org, job->addr,
                         job->request_id, JK_EUNAUTH, "lockout");
    return rc;
}

static void login_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct login_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

static jk_rc login_success(struct jk_http_req *rq, struct login_job *job)
{
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_buf_puts(&b, "{");
    if (!rc) rc = json_member(&b, 1, "access_token", job->token);
    if (!rc) rc = json_member(&b, 0, "token_type", "Bearer");
    if (!rc)
        rc = jk_buf_printf(&b, ",\"expires_in\":%lld",
                           (long long)job->rules->token_lifetime_minutes * 60);
    if (!rc) rc = json_member(&b, 0, "scope", job->scopes);
    if (!rc && !strncmp(job->acct.link, "Patient/", 8)) /* SMART's patient context */
        rc = json_member(&b, 0, "patient", job->acct.link + 8);
    if (!rc) rc = jk_buf_puts(&b, "}");
    sodium_memzero(job->token, sizeof job->token); /* the copy in b is the only one left */
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send_json(rq, 200, &b);
}

/* Renders the answer to a login attempt once its transaction has committed. */
static jk_rc login_finish(struct jk_http_req *rq)
{
    struct login_job *job = rq->state;
    const struct jk_security_rules *r = job->rules;
    int st = job->is_client ? 401 : 400;
    const char *err = job->is_client ? "invalid_client" : "invalid_grant";
    if (!job->rc && job->is_replayed) /* the same code sent twice at once */
        return oauth_error(rq, 400, "invalid_grant", "totp_invalid",
                           "the one-time code is wrong or was used already");
    if (job->rc) return job->rc;
    if (login_issues_token(job)) return login_success(rq, job);
    if (job->is_locked_now)
        return oauth_error(rq, st, err, "locked",
                           "too many failed logins: the account is locked for %d minutes",
                           r->lockout_minutes);
    if (!job->acct.id) job->outcome = JK_LOGIN_BAD_SECRET;
    if (job->is_bad_scope) {
        const struct jk_role_info *ri = jk_role_info(job->acct.role);
        return oauth_error(rq, 400, "invalid_scope", NULL,
                           "a %s may ask for at most these scopes: %s", ri->name, ri->scopes);
    }
    if (job->is_wrong_grant)
        return job->is_client
                   ? oauth_error(rq, 401, "invalid_client", "wrong_grant",
                                 "this account is a person's: log in with grant_type=password")
                   : oauth_error(rq, 400, "invalid_grant", "wrong_grant",
                                 "this account is an institution system's: use "
                                 "grant_type=client_credentials");
    switch (job->outcome) {
    case JK_LOGIN_BAD_SECRET:
        return oauth_error(rq, st, err, "invalid_credentials",
                           job->is_client ? "the client id or client secret is wrong"
                                          : "the user name or password is wrong");
    case JK_LOGIN_BAD_TOTP:
        return oauth_error(rq, 400, "invalid_grant", "totp_invalid",
                           "the one-time code is wrong or was used already");
    case JK_LOGIN_TOTP_REQUIRED:
        return oauth_error(rq, 400, "invalid_grant", "totp_required",
                           "this account needs a one-time code: send it as totp");
    case JK_LOGIN_TOTP_NOT_ENROLLED:
        return oauth_error(rq, 400, "invalid_grant", "totp_not_enrolled",
                           "this account needs a second factor but has none; an administrator "
                           "must enrol one (jiankang user totp)");
    case JK_LOGIN_LOCKED: {
        int64_t left_ms = job->acct.locked_until_ms - job->now_ms;
        int minutes = (int)((left_ms + 59999) / 60000);
        return oauth_error(rq, st, err, "locked",
                           "too many failed logins: the account is locked for %d more minute%s",
                           minutes, minutes == 1 ? "" : "s");
    }
    case JK_LOGIN_DISABLED:
        return oauth_error(rq, st, err, "disabled", "the account is locked by an administrator");
    case JK_LOGIN_EXPIRED:
        return oauth_error(rq, 400, "invalid_grant", "password_expired",
                           "the password is older than %d days; an administrator must set a new "
                           "one",
                           r->password_max_age_days);
    case JK_LOGIN_OK: break;
    }
    return JK_EINTERNAL;
}

jk_rc jk_api_auth_token(struct jk_http_req *rq)
{
    const struct jk_security_rules *r = jk_api_security_rules();
    struct form f;
    jk_rc rc;
    if (!r) return JK_EINTERNAL;
    if (!is_form(rq))
        return oauth_error(rq, 400, "invalid_request", NULL,
                           "send the parameters as application/x-www-form-urlencoded");
    if ((rc = form_parse(rq, &f))) return rc;
    if (f.is_dup || f.is_large)
        return oauth_error(rq, 400, "invalid_request", NULL,
                           f.is_dup ? "a parameter is given more than once"
                                    : "too many parameters");
    const char *grant = form_get(&f, "grant_type");
    if (!grant) return oauth_error(rq, 400, "invalid_request", NULL, "grant_type is missing");
    int is_client = !strcmp(grant, "client_credentials");
    if (!is_client && strcmp(grant, "password"))
        return oauth_error(rq, 400, "unsupported_grant_type", NULL,
                           "grant_type must be password or client_credentials");
    const char *name, *secret;
    if (is_client) {
        const char *bid = NULL, *bsecret = NULL;
        int basic = basic_auth(rq, &bid, &bsecret);
        if (basic < 0)
            return oauth_error(rq, 401, "invalid_client", NULL,
                               "the Authorization header is not Basic base64(id:secret)");
        if (basic && (form_get(&f, "client_id") || form_get(&f, "client_secret")))
            return oauth_error(rq, 400, "invalid_request", NULL,
                               "authenticate the client either with Basic or in the form, not "
                               "both");
        name = basic ? bid : form_get(&f, "client_id");
        secret = basic ? bsecret : form_get(&f, "client_secret");
        if (!name || !secret)
            return oauth_error(rq, 401, "invalid_client", NULL,
                               "client_id and client_secret are needed (or Basic)");
    } else {
        name = form_get(&f, "username");
        secret = form_get(&f, "password");
        if (!name || !secret)
            return oauth_error(rq, 400, "invalid_request", NULL,
                               "username and password are needed");
    }

    struct login_job *job = jk_arena_zalloc(rq->arena, sizeof *job);
    if (!job) return JK_ENOMEM;
    job->rules = r;
    job->au = jk_api_app(rq)->audit;
    job->is_client = is_client;
    job->addr = jk_http_client_addr(rq);
    job->request_id = rq->request_id;
    char norm[JK_USERNAME_MAX + 1];
    int is_name_ok = !jk_account_norm_username(name, norm, sizeof norm);
    int wait = jk_api_rate_limit(rq, JK_RATE_LOGIN, is_name_ok ? norm : "(invalid)");
    if (wait) return send_throttled_oauth(rq, wait);

    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    rc = is_name_ok ? jk_account_find(c, norm, &job->acct) : JK_ENOTFOUND;
    job->now_ms = jk_time_now_ms();
    if (rc == JK_ENOTFOUND) {
        /* As slow as a real check, so that timing does not tell which names exist. */
        (void)jk_password_verify(auth.dummy_hash, secret);
        memset(&job->acct, 0, sizeof job->acct);
        job->outcome = JK_LOGIN_BAD_SECRET;
    } else if (rc) {
        return rc;
    } else {
        /* Argon2id runs here, on this worker thread, with no lock held. */
        job->outcome = jk_account_authenticate(r, &job->acct, secret, form_get(&f, "totp"),
                                               job->now_ms, &job->totp_step);
        const struct jk_role_info *ri = jk_role_info(job->acct.role);
        if (job->outcome == JK_LOGIN_OK && ri->is_person == is_client) job->is_wrong_grant = 1;
        if (login_issues_token(job)) {
            if (jk_scope_grant(ri->scopes, form_get(&f, "scope"), job->scopes, sizeof job->scopes))
                job->is_bad_scope = 1;
        }
        if (login_issues_token(job)) {
            if (jk_password_needs_rehash(r, job->acct.pw_hash) &&
                jk_password_hash(r, secret, job->new_hash, sizeof job->new_hash))
                job->new_hash[0] = '\0'; /* keep the old hash; try again next time */
        }
    }
    rq->state = job;
    jk_http_defer(rq, login_finish);
    jk_store_tx_async(jk_api_app(rq)->db, login_tx, job, login_done, rq);
    return JK_OK;
}

/* ---- POST /auth/revoke ---- */

struct revoke_job {
    const struct jk_audit *au;
    const char *token, *addr, *request_id;
    int64_t account_id;
    jk_rc rc;
};

static jk_rc revoke_tx(jk_conn *c, void *arg)
{
    struct revoke_job *job = arg;
    jk_rc rc = jk_token_revoke(c, job->token, &job->account_id);
    if (rc || !job->account_id) return rc;
    struct jk_account a;
    if ((rc = jk_account_get(c, job->account_id, &a))) return rc;
    return audit_login(job->au, c, "logout", a.username, jk_role_info(a.role)->name, a.org,
                       job->addr, job->request_id, JK_OK, NULL);
}

static void revoke_done(void *arg, jk_rc rc)
{
    struct jk_http_req *rq = arg;
    ((struct revoke_job *)rq->state)->rc = rc;
    jk_http_wake(rq);
}

static jk_rc revoke_finish(struct jk_http_req *rq)
{
    struct revoke_job *job = rq->state;
    if (job->rc) return job->rc;
    jk_http_add_header(rq, "Cache-Control", "no-store");
    return jk_http_respond(rq, 200, NULL, NULL, 0);
}

jk_rc jk_api_auth_revoke(struct jk_http_req *rq)
{
    struct form f;
    jk_rc rc;
    if (!jk_api_security_rules()) return JK_EINTERNAL;
    if (!is_form(rq))
        return oauth_error(rq, 400, "invalid_request", NULL,
                           "send the parameters as application/x-www-form-urlencoded");
    if ((rc = form_parse(rq, &f))) return rc;
    const char *token = form_get(&f, "token");
    if (f.is_dup || !token)
        return oauth_error(rq, 400, "invalid_request", NULL,
                           f.is_dup ? "a parameter is given more than once" : "token is missing");
    int wait = jk_api_rate_limit(rq, JK_RATE_EXPENSIVE, NULL);
    if (wait) return send_throttled_oauth(rq, wait);
    struct revoke_job *job = jk_arena_zalloc(rq->arena, sizeof *job);
    if (!job) return JK_ENOMEM;
    job->au = jk_api_app(rq)->audit;
    job->token = token;
    job->addr = jk_http_client_addr(rq);
    job->request_id = rq->request_id;
    rq->state = job;
    jk_http_defer(rq, revoke_finish);
    jk_store_tx_async(jk_api_app(rq)->db, revoke_tx, job, revoke_done, rq);
    return JK_OK;
}

/* ---- authentication of other requests, and GET /auth/me ---- */

jk_rc jk_api_principal(struct jk_http_req *rq, struct jk_principal *out)
{
    const char *h = jk_http_header(rq, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7)) {
        jk_http_add_header(rq, "WWW-Authenticate", "Bearer realm=\"jiankang\"");
        return jk_diag_add(&rq->diag, JK_EUNAUTH, "login", NULL,
                           "this request needs a bearer token (Authorization: Bearer ...); get "
                           "one at POST /auth/token");
    }
    h += 7;
    while (*h == ' ')
        h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ')
        n--;
    const char *token = jk_arena_strndup(rq->arena, h, n);
    if (!token) return JK_ENOMEM;
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    if (!c) return JK_EDB;
    jk_rc rc = jk_token_resolve(c, token, jk_time_now_ms(), out);
    if (rc == JK_EUNAUTH) {
        jk_http_add_header(rq, "WWW-Authenticate",
                           "Bearer realm=\"jiankang\", error=\"invalid_token\", "
                           "error_description=\"the token is unknown, expired or revoked\"");
        return jk_diag_add(&rq->diag, JK_EUNAUTH, "login", NULL,
                           "the bearer token is unknown, expired or revoked; log in again at "
                           "POST /auth/token");
    }
    return rc;
}

jk_rc jk_api_auth_me(struct jk_http_req *rq)
{
    struct jk_principal p;
    jk_rc rc = jk_api_principal(rq, &p);
    if (rc) return rc;
    const struct jk_role_info *ri = jk_role_info(p.role);
    const struct jk_security_rules *r = jk_api_security_rules();
    char issued[40], expires[40];
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_printf(&b, "{\"account_id\":%lld", (long long)p.account_id);
    if (!rc) rc = json_member(&b, 0, "username", p.username);
    if (!rc) rc = json_member(&b, 0, "role", ri->name);
    if (!rc) rc = json_member(&b, 0, "role_label", ri->label_zh);
    if (!rc && p.org[0]) rc = json_member(&b, 0, "organization", p.org);
    if (!rc && p.link[0]) rc = json_member(&b, 0, "link", p.link);
    if (!rc && !strncmp(p.link, "Patient/", 8)) rc = json_member(&b, 0, "patient", p.link + 8);
    if (!rc) rc = json_member(&b, 0, "scope", p.scopes);
    if (!rc) rc = json_member(&b, 0, "issued_at", jk_time_iso(p.issued_ms, issued, sizeof issued));
    if (!rc)
        rc = json_member(&b, 0, "expires_at", jk_time_iso(p.expires_ms, expires, sizeof expires));
    if (!rc)
        rc = jk_buf_printf(&b, ",\"second_factor\":%s}",
                           r && jk_security_needs_totp(r, p.role) ? "true" : "false");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return send_json(rq, 200, &b);
}
