/* token.h - opaque bearer tokens: 32 random bytes sent to the client as base64url, of which
 * the server keeps only a hash (SM3, or SHA-256 where OpenSSL lacks SM3), with the account,
 * scopes, times and a revoked flag; and the principal a token stands for. */
#ifndef JK_TOKEN_H
#define JK_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#include "auth/account.h"
#include "core/rc.h"
#include "store/store.h"

#define JK_TOKEN_BYTES    32 /* random bytes in a token */
#define JK_TOKEN_TEXT_LEN 43 /* their base64url text, without padding */
#define JK_TOKEN_HASH_MAX 80 /* "sm3:" + 64 hex digits, with the NUL */

/* Who a request comes from: the account behind a valid token. Holds no secret. */
struct jk_principal {
    int64_t account_id;
    int64_t token_id;
    char username[JK_USERNAME_MAX + 1];
    enum jk_role role;
    char org[JK_REF_MAX + 1];       /* "Organization/x" or "" */
    char link[JK_REF_MAX + 1];      /* "Practitioner/x", "PractitionerRole/x", "Patient/x" or "" */
    char scopes[JK_SCOPES_MAX + 1]; /* SMART v2 scopes granted, space separated */
    int64_t issued_ms, expires_ms;
};

/* Writes the stored form of token text (n bytes) into out (JK_TOKEN_HASH_MAX bytes):
 * "sm3:<hex>" or "sha256:<hex>". */
jk_rc jk_token_hash(const char *token, size_t n, char *out, size_t outlen);

/* Issues a token for account_id with scopes, valid from now_ms for lifetime_ms: makes it,
 * stores its hash and writes its text (JK_TOKEN_TEXT_LEN characters and a NUL) into out.
 * Also forgets that account's tokens that expired more than a day ago. Runs inside a
 * transaction; the text is usable once the transaction has committed. */
jk_rc jk_token_issue(jk_conn *c, int64_t account_id, const char *scopes, int64_t now_ms,
                     int64_t lifetime_ms, char *out, size_t outlen);

/* Resolves token text to its principal at now_ms. JK_EUNAUTH when the token is malformed,
 * unknown, expired or revoked, or its account is disabled; JK_EDB when the database fails.
 * A read: use the calling thread's connection (jk_store_conn). */
jk_rc jk_token_resolve(jk_conn *c, const char *token, int64_t now_ms, struct jk_principal *out);

/* Revokes the token with text token. *account_id (may be NULL) is its account, or 0 when
 * the token is unknown, which is not an error (RFC 7009). Runs inside a transaction. */
jk_rc jk_token_revoke(jk_conn *c, const char *token, int64_t *account_id);

/* Revokes every token of account_id (an administrator locked the account). */
jk_rc jk_token_revoke_account(jk_conn *c, int64_t account_id);

/* ---- SMART v2 scopes ---- */

/* Whether every scope in requested (space separated) is covered by one in allowed: same
 * context (patient, user, system), a resource type equal to the allowed one or allowed "*",
 * and permissions (c r u d s) that are a subset. */
int jk_scope_covers(const char *allowed, const char *requested);

/* The scopes to grant: allowed when requested is NULL or empty, otherwise requested
 * (normalised to single spaces) when jk_scope_covers(allowed, requested). JK_EINVAL when a
 * requested scope is malformed or not covered, JK_ETOOBIG when out is too small. */
jk_rc jk_scope_grant(const char *allowed, const char *requested, char *out, size_t outlen);

#endif
