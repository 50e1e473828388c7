/* card.c - the electronic health card: rules, dynamic QR codes and their checks, the QR
 * drawing, and the card tables (docs/internals/mpi.md, "Electronic health card"). */
#include "mpi/card.h"

#include <ctype.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <qrencode.h>
#include <sodium.h>

#include "auth/account.h"
#include "core/arena.h"
#include "core/rules.h"
#include "fhir/rest.h"
#include "mpi/mpi.h"

#define CODE_PREFIX    "JKHC1"
#define NONCE_BYTES    16
#define SIG_B64_MAX    96 /* base64url of a 72-byte DER signature */
#define EXP_DIGITS     10
#define PRUNE_EVERY_MS 60000

static const char *const result_names[] = {
    [JK_CARD_OK] = "accepted",         [JK_CARD_MALFORMED] = "malformed",
    [JK_CARD_SIGNATURE] = "signature", [JK_CARD_EXPIRED] = "expired",
    [JK_CARD_REVOKED] = "revoked",     [JK_CARD_REPLAYED] = "replayed",
};

const char *jk_card_result_name(enum jk_card_result r)
{
    return (unsigned)r < sizeof result_names / sizeof result_names[0] ? result_names[r]
                                                                      : "malformed";
}

/* ---- rules ---- */

const char *jk_card_rules_path(void)
{
    const char *p = getenv("JIANKANG_CARD_RULES");
    return p && *p ? p : "rules/card.json";
}

static jk_rc rule_roles(struct json_object *v, const char *path, const char *ptr, unsigned *out,
                        char *err, size_t errlen)
{
    *out = 0;
    if (!json_object_is_type(v, json_type_array))
        return jk_rules_fail(err, errlen, path, ptr, "must be a list of role names");
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        struct json_object *e = json_object_array_get_idx(v, i);
        const char *s = json_object_is_type(e, json_type_string) ? json_object_get_string(e) : "";
        const struct jk_role_info *ri = jk_role_by_name(s);
        if (!ri) return jk_rules_fail(err, errlen, path, ptr, "'%s' is not a role", s);
        *out |= 1u << ri->role;
    }
    return JK_OK;
}

jk_rc jk_card_rules_load(const char *path, struct jk_card_rules *out, char *err, size_t errlen)
{
    static const char *const codes[] = {
        "card.code.ttl_seconds",  "card.code.refresh_margin_seconds",
        "card.code.keep_seconds", "card.manage_roles",
        "card.verify_roles",      NULL};
    struct json_object *root = NULL, *rules, *rule, *v;
    char ptr[256];
    if (!path) path = jk_card_rules_path();
    memset(out, 0, sizeof *out);
    jk_rc rc = jk_rules_parse(path, &root, err, errlen);
    if (!rc) rc = jk_rules_top(root, path, "card", &rules, err, errlen);
    if (!rc) rc = jk_rules_known_keys(rules, codes, path, "/rules", err, errlen);
    for (int i = 0; !rc && codes[i]; i++) {
        if (!json_object_object_get_ex(rules, codes[i], &rule)) {
            rc = jk_rules_fail(err, errlen, path, "/rules", "the rule '%s' is missing", codes[i]);
            break;
        }
        if ((rc = jk_rules_rule(rule, path, codes[i], ptr, sizeof ptr, &v, err, errlen))) break;
        switch (i) {
        case 0: rc = jk_rules_int(v, path, ptr, 1, 3600, &out->ttl_s, err, errlen); break;
        case 1:
            rc = jk_rules_int(v, path, ptr, 0, 3599, &out->refresh_margin_s, err, errlen);
            break;
        case 2: rc = jk_rules_int(v, path, ptr, 0, 86400, &out->keep_s, err, errlen); break;
        case 3: rc = rule_roles(v, path, ptr, &out->manage_roles, err, errlen); break;
        default: rc = rule_roles(v, path, ptr, &out->verify_roles, err, errlen); break;
        }
    }
    if (!rc && out->refresh_margin_s >= out->ttl_s)
        rc = jk_rules_fail(err, errlen, path, "/rules/card.code.refresh_margin_seconds/value",
                           "must be below card.code.ttl_seconds (%d)", out->ttl_s);
    if (!rc && (out->verify_roles >> JK_ROLE_RESIDENT & 1u))
        rc = jk_rules_fail(err, errlen, path, "/rules/card.verify_roles/value",
                           "residents do not verify cards");
    json_object_put(root);
    return rc;
}

/* ---- codes ---- */

/* The domain under which the fingerprint key is made from the blind-index key. */
static const char mac_domain[] = "jiankang v1 health card code fingerprint key";

jk_rc jk_card_keys_init(struct jk_card_keys *ck, const jk_keys *keys)
{
    ck->sm2 = jk_keys_sm2(keys);
    return jk_crypto_blind_index(keys, mac_domain, "1", 1, ck->mac_key) ? JK_EINTERNAL : JK_OK;
}

jk_rc jk_card_new_number(char out[JK_CARD_NUMBER_LEN + 1])
{
    unsigned char r[JK_CARD_NUMBER_LEN / 2];
    jk_rc rc = jk_crypto_random(r, sizeof r);
    if (rc) return rc;
    jk_crypto_hex(r, sizeof r, out);
    for (size_t i = 0; i < JK_CARD_NUMBER_LEN; i++)
        out[i] = (char)toupper((unsigned char)out[i]);
    return JK_OK;
}

static int is_number(const char *s, size_t n)
{
    if (n != JK_CARD_NUMBER_LEN) return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'A' && s[i] <= 'F')) return 0;
    return 1;
}

static int is_b64url(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_') return 0;
    return 1;
}

jk_rc jk_card_code_make(const struct jk_card_keys *k, const char *number, int64_t now_ms, int ttl_s,
                        char *out, size_t cap, struct jk_card_code *code)
{
    unsigned char nonce[NONCE_BYTES], sig[JK_SM2_SIG_MAX];
    char nonce_b64[JK_CARD_NONCE_LEN + 2];
    size_t sig_len = 0;
    if (!number || !is_number(number, strlen(number)) || ttl_s < 1 || cap < JK_CARD_CODE_MAX)
        return JK_EINVAL;
    jk_rc rc = jk_crypto_random(nonce, sizeof nonce);
    if (rc) return rc;
    sodium_bin2base64(nonce_b64, sizeof nonce_b64, nonce, sizeof nonce,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    long long exp = now_ms / 1000 + ttl_s;
    int n = snprintf(out, cap, CODE_PREFIX ".%s.%lld.%s", number, exp, nonce_b64);
    if (n < 0 || (size_t)n + 2 + SIG_B64_MAX >= cap) return JK_EINVAL;
    if (jk_sm2_sign(k->sm2, out, (size_t)n, sig, sizeof sig, &sig_len)) return JK_EINTERNAL;
    out[n] = '.';
    sodium_bin2base64(out + n + 1, cap - (size_t)n - 1, sig, sig_len,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    if (code && jk_card_code_parse(out, strlen(out), code) != JK_CARD_OK) return JK_EINTERNAL;
    return JK_OK;
}

enum jk_card_result jk_card_code_parse(const char *s, size_t n, struct jk_card_code *out)
{
    const char *part[5];
    size_t len[5], k = 0;
    memset(out, 0, sizeof *out);
    if (!s || n >= JK_CARD_CODE_MAX) return JK_CARD_MALFORMED;
    const char *p = s, *end = s + n;
    while (k < 5) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        part[k] = p;
        len[k] = (size_t)((dot ? dot : end) - p);
        k++;
        if (!dot) break;
        p = dot + 1;
    }
    if (k != 5 || part[4] + len[4] != end) return JK_CARD_MALFORMED;
    if (len[0] != sizeof CODE_PREFIX - 1 || memcmp(part[0], CODE_PREFIX, len[0]))
        return JK_CARD_MALFORMED;
    if (!is_number(part[1], len[1])) return JK_CARD_MALFORMED;
    if (len[2] != EXP_DIGITS || part[2][0] == '0') return JK_CARD_MALFORMED;
    int64_t exp = 0;
    for (size_t i = 0; i < len[2]; i++) {
        if (!isdigit((unsigned char)part[2][i])) return JK_CARD_MALFORMED;
        exp = exp * 10 + (part[2][i] - '0');
    }
    unsigned char nonce[NONCE_BYTES + 1];
    size_t bin_len = 0;
    if (len[3] != JK_CARD_NONCE_LEN || !is_b64url(part[3], len[3]) ||
        sodium_base642bin(nonce, sizeof nonce, part[3], len[3], NULL, &bin_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        bin_len != NONCE_BYTES)
        return JK_CARD_MALFORMED;
    if (!len[4] || len[4] > SIG_B64_MAX || !is_b64url(part[4], len[4]) ||
        sodium_base642bin(out->sig, sizeof out->sig, part[4], len[4], NULL, &out->sig_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) ||
        !out->sig_len)
        return JK_CARD_MALFORMED;
    memcpy(out->number, part[1], JK_CARD_NUMBER_LEN);
    memcpy(out->nonce, part[3], JK_CARD_NONCE_LEN);
    out->expires_s = exp;
    out->signed_len = (size_t)(part[4] - 1 - s);
    return JK_CARD_OK;
}

enum jk_card_result jk_card_code_check(const struct jk_card_keys *k, const char *s,
                                       const struct jk_card_code *c, int is_known_mac,
                                       int64_t now_ms, int max_ttl_s)
{
    if (!is_known_mac && jk_sm2_verify(k->sm2, s, c->signed_len, c->sig, c->sig_len))
        return JK_CARD_SIGNATURE;
    int64_t now_s = now_ms / 1000;
    /* A code is valid up to and including its expiry second; one that claims to live longer
     * than any code this platform makes was made under other rules: refused as expired. */
    if (now_s > c->expires_s || c->expires_s - now_s > (int64_t)max_ttl_s + 60)
        return JK_CARD_EXPIRED;
    return JK_CARD_OK;
}

jk_rc jk_card_code_mac(const struct jk_card_keys *k, const char *s, size_t n,
                       char hex[JK_CARD_MAC_HEX + 1])
{
    unsigned char mac[JK_SM3_BYTES];
    jk_rc rc = jk_crypto_hmac_sm3(k->mac_key, sizeof k->mac_key, s, n, mac);
    if (!rc) jk_crypto_hex(mac, sizeof mac, hex);
    return rc;
}

jk_rc jk_card_qr_svg(const char *text, struct jk_buf *out)
{
    enum { QUIET = 4 };
    QRcode *qr = QRcode_encodeString(text, 0, QR_ECLEVEL_M, QR_MODE_8, 1);
    if (!qr) return JK_EINVAL;
    int w = qr->width, size = w + 2 * QUIET;
    jk_rc rc = jk_buf_printf(out,
                             "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 %d %d\" "
                             "shape-rendering=\"crispEdges\"><rect width=\"%d\" height=\"%d\" "
                             "fill=\"#fff\"/><path fill=\"#000\" d=\"",
                             size, size, size, size);
    for (int y = 0; y < w && !rc; y++) {
        for (int x = 0; x < w && !rc;) {
            if (!(qr->data[y * w + x] & 1)) {
                x++;
                continue;
            }
            int run = 1;
            while (x + run < w && (qr->data[y * w + x + run] & 1))
                run++;
            rc = jk_buf_printf(out, "M%d %dh%dv1h-%dz", x + QUIET, y + QUIET, run, run);
            x += run;
        }
    }
    if (!rc) rc = jk_buf_puts(out, "\"/></svg>");
    QRcode_free(qr);
    return rc;
}

/* ---- the database ---- */

static jk_rc copy_col(jk_stmt *s, int i, char *out, size_t cap)
{
    size_t n = 0;
    const char *p = jk_stmt_col_text(s, i, &n);
    if (!p) n = 0;
    if (n >= cap) return JK_EDB;
    memcpy(out, p ? p : "", n);
    out[n] = '\0';
    return JK_OK;
}

/* Ends a statement's use; s may be NULL (its preparation failed). */
static void reset(jk_stmt *s)
{
    if (s) jk_stmt_reset(s);
}

static jk_rc text_arg(jk_stmt *s, int i, const char *v)
{
    return jk_stmt_text_arg(s, i, v, strlen(v));
}

#define CARD_COLS "id, number, person_id, patient_id, status, issued_ms, revoked_ms, reason"

static jk_rc card_row(jk_stmt *s, struct jk_card *out)
{
    memset(out, 0, sizeof *out);
    jk_rc rc = copy_col(s, 0, out->id, sizeof out->id);
    if (!rc) rc = copy_col(s, 1, out->number, sizeof out->number);
    if (!rc) rc = copy_col(s, 2, out->person, sizeof out->person);
    if (!rc) rc = copy_col(s, 3, out->patient, sizeof out->patient);
    if (!rc) rc = copy_col(s, 4, out->status, sizeof out->status);
    if (!rc) rc = copy_col(s, 7, out->reason, sizeof out->reason);
    out->issued_ms = jk_stmt_col_int(s, 5);
    out->revoked_ms = jk_stmt_col_is_null(s, 6) ? 0 : jk_stmt_col_int(s, 6);
    return rc;
}

static jk_rc card_one(jk_conn *c, const char *sql, const char *key, struct jk_card *out)
{
    jk_stmt *s = NULL;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = text_arg(s, 1, key);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc) rc = has_row ? card_row(s, out) : JK_ENOTFOUND;
    reset(s);
    return rc;
}

jk_rc jk_card_get(jk_conn *c, const char *id, struct jk_card *out)
{
    static const char sql[] = "SELECT " CARD_COLS " FROM card WHERE id = ?";
    return card_one(c, sql, id, out);
}

jk_rc jk_card_by_number(jk_conn *c, const char *number, struct jk_card *out)
{
    static const char sql[] = "SELECT " CARD_COLS " FROM card WHERE number = ?";
    return card_one(c, sql, number, out);
}

jk_rc jk_card_issue(jk_conn *c, const char *patient_id, int64_t now_ms, struct jk_card *out)
{
    static const char sql_insert[] =
        "INSERT INTO card (" CARD_COLS ") VALUES (?, ?, ?, ?, 'active', ?, NULL, '')";
    /* The numbers bound to the person's earlier cards follow them to the new one. */
    static const char sql_move[] =
        "UPDATE card_binding SET card_id = ? WHERE card_id IN (SELECT id FROM card WHERE "
        "person_id = ? AND id <> ?)";
    char person[JK_MPI_ID_MAX];
    jk_stmt *s = NULL;
    int has_row;
    memset(out, 0, sizeof *out);
    jk_rc rc = jk_mpi_person_of(c, patient_id, person);
    if (rc) return rc;
    struct jk_arena *a = jk_arena_new(256);
    const char *id = a ? jk_fhir_new_id(a) : NULL;
    if (!id) rc = JK_ENOMEM;
    if (!rc)
        rc = strlen(id) < sizeof out->id && strlen(person) < sizeof out->person &&
                     strlen(patient_id) < sizeof out->patient
                 ? JK_OK
                 : JK_EINVAL;
    if (!rc) {
        snprintf(out->id, sizeof out->id, "%s", id);
        snprintf(out->person, sizeof out->person, "%s", person);
        snprintf(out->patient, sizeof out->patient, "%s", patient_id);
        snprintf(out->status, sizeof out->status, "active");
        out->issued_ms = now_ms;
        rc = jk_card_new_number(out->number);
    }
    jk_arena_free(a);
    if (!rc) rc = jk_conn_prepare(c, sql_insert, &s);
    if (!rc) rc = text_arg(s, 1, out->id);
    if (!rc) rc = text_arg(s, 2, out->number);
    if (!rc) rc = text_arg(s, 3, out->person);
    if (!rc) rc = text_arg(s, 4, out->patient);
    if (!rc) rc = jk_stmt_int_arg(s, 5, now_ms);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    reset(s);
    if (rc) return rc; /* JK_ECONFLICT: the person has an active card */
    if ((rc = jk_conn_prepare(c, sql_move, &s))) return rc;
    rc = text_arg(s, 1, out->id);
    if (!rc) rc = text_arg(s, 2, out->person);
    if (!rc) rc = text_arg(s, 3, out->id);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    reset(s);
    return rc;
}

jk_rc jk_card_list(jk_conn *c, const char *person, jk_card_fn fn, void *arg)
{
    static const char sql[] =
        "SELECT " CARD_COLS " FROM card WHERE person_id = ? ORDER BY issued_ms DESC, id DESC";
    jk_stmt *s = NULL;
    int has_row = 0;
    struct jk_card card;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = text_arg(s, 1, person);
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row)
        if (!(rc = card_row(s, &card))) rc = fn(arg, &card);
    reset(s);
    return rc;
}

jk_rc jk_card_revoke(jk_conn *c, const char *id, const char *reason, int64_t now_ms)
{
    static const char sql[] = "UPDATE card SET status = 'revoked', revoked_ms = ?, reason = ?"
                              " WHERE id = ? AND status = 'active'";
    struct jk_card card;
    jk_rc rc = jk_card_get(c, id, &card);
    if (rc) return rc;
    if (strcmp(card.status, "active")) return JK_EGONE;
    jk_stmt *s = NULL;
    int has_row;
    if ((rc = jk_conn_prepare(c, sql, &s))) return rc;
    rc = jk_stmt_int_arg(s, 1, now_ms);
    if (!rc) rc = text_arg(s, 2, reason);
    if (!rc) rc = text_arg(s, 3, id);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && jk_stmt_changes(s) != 1) rc = JK_EGONE;
    reset(s);
    return rc;
}

int jk_card_binding_kind_ok(const char *kind)
{
    static const char *const kinds[] = {"hospital-card", "social-security", "medical-insurance"};
    for (size_t i = 0; kind && i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strcmp(kind, kinds[i])) return 1;
    return 0;
}

jk_rc jk_card_bind(jk_conn *c, const struct jk_card *card, const struct jk_card_binding *b,
                   int64_t now_ms)
{
    static const char sql_find[] =
        "SELECT card.person_id FROM card_binding JOIN card ON card.id = card_binding.card_id"
        " WHERE card_binding.kind = ? AND card_binding.org = ? AND card_binding.code = ?";
    static const char sql_move[] = "UPDATE card_binding SET card_id = ?, value = ?, created_ms = ?"
                                   " WHERE kind = ? AND org = ? AND code = ?";
    static const char sql_insert[] =
        "INSERT INTO card_binding (kind, org, code, card_id, value, created_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)";
    jk_stmt *s = NULL;
    int has_row = 0;
    char person[JK_CARD_ID_MAX] = "";
    jk_rc rc = jk_conn_prepare(c, sql_find, &s);
    if (!rc) rc = text_arg(s, 1, b->kind);
    if (!rc) rc = text_arg(s, 2, b->org);
    if (!rc) rc = text_arg(s, 3, b->code);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row) rc = copy_col(s, 0, person, sizeof person);
    reset(s);
    if (rc) return rc;
    if (has_row && strcmp(person, card->person)) return JK_ECONFLICT;
    if ((rc = jk_conn_prepare(c, has_row ? sql_move : sql_insert, &s))) return rc;
    if (has_row) {
        rc = text_arg(s, 1, card->id);
        if (!rc) rc = text_arg(s, 2, b->marker);
        if (!rc) rc = jk_stmt_int_arg(s, 3, now_ms);
        if (!rc) rc = text_arg(s, 4, b->kind);
        if (!rc) rc = text_arg(s, 5, b->org);
        if (!rc) rc = text_arg(s, 6, b->code);
    } else {
        rc = text_arg(s, 1, b->kind);
        if (!rc) rc = text_arg(s, 2, b->org);
        if (!rc) rc = text_arg(s, 3, b->code);
        if (!rc) rc = text_arg(s, 4, card->id);
        if (!rc) rc = text_arg(s, 5, b->marker);
        if (!rc) rc = jk_stmt_int_arg(s, 6, now_ms);
    }
    if (!rc) rc = jk_stmt_step(s, &has_row);
    reset(s);
    return rc;
}

jk_rc jk_card_bindings(jk_conn *c, const char *card_id, jk_card_binding_fn fn, void *arg)
{
    static const char sql[] = "SELECT kind, org, code, value FROM card_binding WHERE card_id = ?"
                              " ORDER BY created_ms, kind, org";
    jk_stmt *s = NULL;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = text_arg(s, 1, card_id);
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t n;
        struct jk_card_binding b = {0};
        const char **f[] = {&b.kind, &b.org, &b.code, &b.marker};
        for (int i = 0; i < 4; i++) {
            *f[i] = jk_stmt_col_text(s, i, &n);
            if (!*f[i]) *f[i] = "";
        }
        rc = fn(arg, &b);
    }
    reset(s);
    return rc;
}

/* The last time nonces were pruned: once a minute is enough (process-wide). */
static _Atomic int64_t last_prune_ms;

static jk_rc prune(jk_conn *c, int64_t now_ms, int keep_s)
{
    static const char sql[] = "DELETE FROM card_code WHERE expires_ms < ?";
    int64_t last = atomic_load(&last_prune_ms);
    if (now_ms - last < PRUNE_EVERY_MS ||
        !atomic_compare_exchange_strong(&last_prune_ms, &last, now_ms))
        return JK_OK;
    jk_stmt *s = NULL;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_int_arg(s, 1, now_ms - (int64_t)keep_s * 1000);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    reset(s);
    return rc;
}

static jk_rc code_insert(jk_conn *c, const char *card_id, const struct jk_card_code *code,
                         const char *mac, int64_t used_ms)
{
    static const char sql[] =
        "INSERT INTO card_code (expires_ms, nonce, card_id, mac, used_ms) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT DO NOTHING";
    jk_stmt *s = NULL;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_int_arg(s, 1, code->expires_s * 1000);
    if (!rc) rc = text_arg(s, 2, code->nonce);
    if (!rc) rc = text_arg(s, 3, card_id);
    if (!rc) rc = text_arg(s, 4, mac);
    if (!rc) rc = used_ms ? jk_stmt_int_arg(s, 5, used_ms) : jk_stmt_null_arg(s, 5);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    /* A nonce already there: no error (which would abort a PostgreSQL transaction), no row. */
    if (!rc && jk_stmt_changes(s) != 1) rc = JK_ECONFLICT;
    reset(s);
    return rc;
}

jk_rc jk_card_code_record(jk_conn *c, const char *card_id, const struct jk_card_code *code,
                          const char mac[JK_CARD_MAC_HEX + 1], int64_t now_ms, int keep_s)
{
    jk_rc rc = prune(c, now_ms, keep_s);
    return rc ? rc : code_insert(c, card_id, code, mac, 0);
}

jk_rc jk_card_code_known(jk_conn *c, const struct jk_card_code *code,
                         const char mac[JK_CARD_MAC_HEX + 1], int *is_known)
{
    static const char sql[] = "SELECT mac FROM card_code WHERE expires_ms = ? AND nonce = ?";
    jk_stmt *s = NULL;
    int has_row = 0;
    *is_known = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = jk_stmt_int_arg(s, 1, code->expires_s * 1000);
    if (!rc) rc = text_arg(s, 2, code->nonce);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row) {
        size_t n = 0;
        const char *p = jk_stmt_col_text(s, 0, &n);
        *is_known = p && n == JK_CARD_MAC_HEX && jk_crypto_equal(p, mac, JK_CARD_MAC_HEX);
    }
    reset(s);
    return rc;
}

jk_rc jk_card_code_use(jk_conn *c, const char *card_id, const struct jk_card_code *code,
                       const char mac[JK_CARD_MAC_HEX + 1], int64_t now_ms,
                       enum jk_card_result *result)
{
    static const char sql_status[] = "SELECT status FROM card WHERE id = ?";
    static const char sql_use[] =
        "UPDATE card_code SET used_ms = ? WHERE expires_ms = ? AND nonce = ? AND card_id = ?"
        " AND used_ms IS NULL";
    jk_stmt *s = NULL;
    int has_row = 0;
    char status[12] = "";
    jk_rc rc = jk_conn_prepare(c, sql_status, &s);
    if (!rc) rc = text_arg(s, 1, card_id);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row) rc = copy_col(s, 0, status, sizeof status);
    reset(s);
    if (rc) return rc;
    if (strcmp(status, "active")) {
        *result = JK_CARD_REVOKED;
        return JK_OK;
    }
    if ((rc = jk_conn_prepare(c, sql_use, &s))) return rc;
    rc = jk_stmt_int_arg(s, 1, now_ms);
    if (!rc) rc = jk_stmt_int_arg(s, 2, code->expires_s * 1000);
    if (!rc) rc = text_arg(s, 3, code->nonce);
    if (!rc) rc = text_arg(s, 4, card_id);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    int64_t n = rc ? 0 : jk_stmt_changes(s);
    reset(s);
    if (rc) return rc;
    *result = JK_CARD_OK;
    if (n == 1) return JK_OK;
    /* Not issued here as recorded (made elsewhere, or its row pruned), or used already: the
     * nonce's row says which, atomically. */
    rc = code_insert(c, card_id, code, mac, now_ms);
    if (rc == JK_ECONFLICT) {
        *result = JK_CARD_REPLAYED;
        rc = JK_OK;
    }
    return rc;
}

jk_rc jk_card_use_log(jk_conn *c, const char *card_id, const struct jk_card_use *u)
{
    static const char sql[] =
        "INSERT INTO card_use (card_id, at_ms, org, role, result) VALUES (?, ?, ?, ?, ?)";
    if (!card_id) return JK_OK;
    jk_stmt *s = NULL;
    int has_row;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = text_arg(s, 1, card_id);
    if (!rc) rc = jk_stmt_int_arg(s, 2, u->at_ms);
    if (!rc) rc = text_arg(s, 3, u->org ? u->org : "");
    if (!rc) rc = text_arg(s, 4, u->role ? u->role : "");
    if (!rc) rc = text_arg(s, 5, u->result);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    reset(s);
    return rc;
}

jk_rc jk_card_uses(jk_conn *c, const char *card_id, int limit, jk_card_use_fn fn, void *arg)
{
    static const char sql[] = "SELECT at_ms, org, role, result FROM card_use WHERE card_id = ?"
                              " ORDER BY seq DESC LIMIT ?";
    jk_stmt *s = NULL;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    if (!rc) rc = text_arg(s, 1, card_id);
    if (!rc) rc = jk_stmt_int_arg(s, 2, limit);
    while (!rc && !(rc = jk_stmt_step(s, &has_row)) && has_row) {
        size_t n;
        struct jk_card_use u = {.at_ms = jk_stmt_col_int(s, 0)};
        const char **f[] = {&u.org, &u.role, &u.result};
        for (int i = 0; i < 3; i++) {
            *f[i] = jk_stmt_col_text(s, i + 1, &n);
            if (!*f[i]) *f[i] = "";
        }
        rc = fn(arg, &u);
    }
    reset(s);
    return rc;
}
