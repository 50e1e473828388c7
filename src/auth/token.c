/* token.c - issuing, resolving and revoking opaque bearer tokens, stored as hashes; SMART v2
 * scope arithmetic. */
#include "auth/token.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#define PURGE_AFTER_MS 86400000LL /* expired tokens are kept a day, then forgotten */

static const char sql_insert[] =
    "INSERT INTO auth_token (hash, account_id, scopes, issued_ms, expires_ms, revoked)"
    " VALUES (?, ?, ?, ?, ?, 0)";
static const char sql_purge[] = "DELETE FROM auth_token WHERE account_id = ? AND expires_ms < ?";
static const char sql_resolve[] =
    "SELECT t.id, t.account_id, t.scopes, t.issued_ms, t.expires_ms, t.revoked, a.username,"
    " a.role, a.org, a.link, a.is_disabled"
    " FROM auth_token t JOIN account a ON a.id = t.account_id WHERE t.hash = ?";
static const char sql_account_of[] = "SELECT account_id FROM auth_token WHERE hash = ?";
static const char sql_revoke[] = "UPDATE auth_token SET revoked = 1 WHERE hash = ?";
static const char sql_revoke_account[] =
    "UPDATE auth_token SET revoked = 1 WHERE account_id = ? AND revoked = 0";

jk_rc jk_token_hash(const char *token, size_t n, char *out, size_t outlen)
{
    /* SM3 where the OpenSSL build has it (the default provider of OpenSSL 3 does); the
     * prefix keeps hashes of either kind apart should a build lack it. */
    const EVP_MD *md = EVP_get_digestbyname("SM3");
    const char *name = "sm3";
    if (!md) {
        md = EVP_sha256();
        name = "sha256";
    }
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned dlen = 0;
    if (!EVP_Digest(token, n, digest, &dlen, md, NULL) || dlen != 32) return JK_EINTERNAL;
    size_t nl = strlen(name);
    if (outlen < nl + 1 + 2 * (size_t)dlen + 1) return JK_ETOOBIG;
    memcpy(out, name, nl);
    out[nl] = ':';
    sodium_bin2hex(out + nl + 1, outlen - nl - 1, digest, dlen);
    return JK_OK;
}

/* Whether text is JK_TOKEN_TEXT_LEN characters of the base64url alphabet. */
static int token_text_ok(const char *t)
{
    size_t n = 0;
    for (; t && t[n]; n++) {
        char ch = t[n];
        if (n == JK_TOKEN_TEXT_LEN) return 0;
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_'))
            return 0;
    }
    return n == JK_TOKEN_TEXT_LEN;
}

jk_rc jk_token_issue(jk_conn *c, int64_t account_id, const char *scopes, int64_t now_ms,
                     int64_t lifetime_ms, char *out, size_t outlen)
{
    unsigned char raw[JK_TOKEN_BYTES];
    char hash[JK_TOKEN_HASH_MAX];
    jk_stmt *s;
    int has_row = 0;
    if (outlen < JK_TOKEN_TEXT_LEN + 1) return JK_ETOOBIG;
    if (sodium_init() < 0) return JK_EINTERNAL;
    randombytes_buf(raw, sizeof raw);
    sodium_bin2base64(out, outlen, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    jk_rc rc = jk_token_hash(out, JK_TOKEN_TEXT_LEN, hash, sizeof hash);
    if (!rc) rc = jk_conn_prepare(c, sql_purge, &s);
    if (!rc) {
        jk_stmt_int_arg(s, 1, account_id);
        jk_stmt_int_arg(s, 2, now_ms - PURGE_AFTER_MS);
        rc = jk_stmt_step(s, &has_row);
        jk_stmt_reset(s);
    }
    if (!rc) rc = jk_conn_prepare(c, sql_insert, &s);
    if (!rc) {
        jk_stmt_text_arg(s, 1, hash, strlen(hash));
        jk_stmt_int_arg(s, 2, account_id);
        jk_stmt_text_arg(s, 3, scopes, strlen(scopes));
        jk_stmt_int_arg(s, 4, now_ms);
        jk_stmt_int_arg(s, 5, now_ms + lifetime_ms);
        rc = jk_stmt_step(s, &has_row);
        jk_stmt_reset(s);
    }
    if (rc) sodium_memzero(out, outlen);
    return rc;
}

static jk_rc col_copy(jk_stmt *s, int i, char *out, size_t outlen)
{
    size_t n = 0;
    const char *p = jk_stmt_col_text(s, i, &n);
    if (n >= outlen) return JK_EDB;
    if (n) memcpy(out, p, n);
    out[n] = '\0';
    return JK_OK;
}

jk_rc jk_token_resolve(jk_conn *c, const char *token, int64_t now_ms, struct jk_principal *out)
{
    char hash[JK_TOKEN_HASH_MAX], role[32];
    jk_stmt *s;
    int has_row = 0;
    if (!token_text_ok(token)) return JK_EUNAUTH;
    jk_rc rc = jk_token_hash(token, JK_TOKEN_TEXT_LEN, hash, sizeof hash);
    if (rc) return rc;
    if ((rc = jk_conn_prepare(c, sql_resolve, &s))) return rc;
    jk_stmt_text_arg(s, 1, hash, strlen(hash));
    rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_EUNAUTH;
    struct jk_principal p;
    memset(&p, 0, sizeof p);
    if (!rc) {
        p.token_id = jk_stmt_col_int(s, 0);
        p.account_id = jk_stmt_col_int(s, 1);
        p.issued_ms = jk_stmt_col_int(s, 3);
        p.expires_ms = jk_stmt_col_int(s, 4);
        if (jk_stmt_col_int(s, 5) || jk_stmt_col_int(s, 10) || now_ms >= p.expires_ms)
            rc = JK_EUNAUTH; /* revoked, account disabled, or expired */
    }
    if (!rc &&
        !((rc = col_copy(s, 2, p.scopes, sizeof p.scopes)) ||
          (rc = col_copy(s, 6, p.username, sizeof p.username)) ||
          (rc = col_copy(s, 7, role, sizeof role)) || (rc = col_copy(s, 8, p.org, sizeof p.org)) ||
          (rc = col_copy(s, 9, p.link, sizeof p.link)))) {
        const struct jk_role_info *ri = jk_role_by_name(role);
        if (ri)
            p.role = ri->role;
        else
            rc = JK_EDB;
    }
    jk_stmt_reset(s);
    if (!rc) *out = p;
    return rc;
}

jk_rc jk_token_revoke(jk_conn *c, const char *token, int64_t *account_id)
{
    char hash[JK_TOKEN_HASH_MAX];
    jk_stmt *s;
    int has_row = 0;
    if (account_id) *account_id = 0;
    if (!token_text_ok(token)) return JK_OK;
    jk_rc rc = jk_token_hash(token, JK_TOKEN_TEXT_LEN, hash, sizeof hash);
    if (!rc) rc = jk_conn_prepare(c, sql_account_of, &s);
    if (rc) return rc;
    jk_stmt_text_arg(s, 1, hash, strlen(hash));
    rc = jk_stmt_step(s, &has_row);
    if (!rc && has_row && account_id) *account_id = jk_stmt_col_int(s, 0);
    jk_stmt_reset(s);
    if (rc || !has_row) return rc;
    if ((rc = jk_conn_prepare(c, sql_revoke, &s))) return rc;
    jk_stmt_text_arg(s, 1, hash, strlen(hash));
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

jk_rc jk_token_revoke_account(jk_conn *c, int64_t account_id)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_revoke_account, &s);
    if (rc) return rc;
    jk_stmt_int_arg(s, 1, account_id);
    rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    return rc;
}

/* ---- scopes ---- */

struct scope {
    const char *ctx, *type, *perms; /* slices of the scope text */
    size_t ctx_len, type_len, perms_len;
};

/* Parses "context/Type.perms" (n bytes at p). 0 when it is not of that form. */
static int scope_parse(const char *p, size_t n, struct scope *sc)
{
    const char *slash = memchr(p, '/', n), *end = p + n;
    if (!slash) return 0;
    const char *dot = memchr(slash, '.', (size_t)(end - slash));
    if (!dot) return 0;
    sc->ctx = p;
    sc->ctx_len = (size_t)(slash - p);
    sc->type = slash + 1;
    sc->type_len = (size_t)(dot - slash - 1);
    sc->perms = dot + 1;
    sc->perms_len = (size_t)(end - dot - 1);
    static const char *const contexts[] = {"patient", "user", "system"};
    int is_ctx = 0;
    for (int i = 0; i < 3; i++)
        if (sc->ctx_len == strlen(contexts[i]) && !memcmp(sc->ctx, contexts[i], sc->ctx_len))
            is_ctx = 1;
    if (!is_ctx || !sc->type_len || !sc->perms_len) return 0;
    if (!(sc->type_len == 1 && sc->type[0] == '*')) {
        if (sc->type[0] < 'A' || sc->type[0] > 'Z') return 0;
        for (size_t i = 0; i < sc->type_len; i++)
            if (!((sc->type[i] >= 'A' && sc->type[i] <= 'Z') ||
                  (sc->type[i] >= 'a' && sc->type[i] <= 'z')))
                return 0;
    }
    /* SMART v2 permissions: a non-empty subsequence of "cruds", in that order. */
    const char *order = "cruds";
    size_t k = 0;
    for (size_t i = 0; i < sc->perms_len; i++) {
        while (order[k] && order[k] != sc->perms[i])
            k++;
        if (!order[k]) return 0;
        k++;
    }
    return 1;
}

/* Whether one requested scope (n bytes at p) is covered by a scope of allowed. */
static int scope_one_covered(const char *allowed, const char *p, size_t n)
{
    struct scope rq, al;
    int is_smart = scope_parse(p, n, &rq);
    for (const char *a = allowed; *a;) {
        size_t an = strcspn(a, " ");
        if (an == n && !memcmp(a, p, n)) return 1;
        if (is_smart && an && scope_parse(a, an, &al) && al.ctx_len == rq.ctx_len &&
            !memcmp(al.ctx, rq.ctx, rq.ctx_len) &&
            ((al.type_len == 1 && al.type[0] == '*') ||
             (al.type_len == rq.type_len && !memcmp(al.type, rq.type, rq.type_len)))) {
            size_t i = 0;
            while (i < rq.perms_len && memchr(al.perms, rq.perms[i], al.perms_len))
                i++;
            if (i == rq.perms_len) return 1;
        }
        a += an;
        while (*a == ' ')
            a++;
    }
    return 0;
}

int jk_scope_covers(const char *allowed, const char *requested)
{
    for (const char *p = requested; *p;) {
        size_t n = strcspn(p, " ");
        if (n && !scope_one_covered(allowed, p, n)) return 0;
        p += n;
        while (*p == ' ')
            p++;
    }
    return 1;
}

jk_rc jk_scope_grant(const char *allowed, const char *requested, char *out, size_t outlen)
{
    size_t k = 0;
    const char *src = requested && strspn(requested, " ") < strlen(requested) ? requested : allowed;
    if (src == requested && !jk_scope_covers(allowed, requested)) return JK_EINVAL;
    for (const char *p = src; *p;) {
        size_t n = strcspn(p, " ");
        if (n) {
            if (k + (k ? 1 : 0) + n + 1 > outlen) return JK_ETOOBIG;
            if (k) out[k++] = ' ';
            memcpy(out + k, p, n);
            k += n;
        }
        p += n;
        while (*p == ' ')
            p++;
    }
    if (!outlen) return JK_ETOOBIG;
    out[k] = '\0';
    return JK_OK;
}
