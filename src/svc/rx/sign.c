/* sign.c - the canonical form of a prescription and the doctor's SM2 signature of it
 * (docs/internals/rx.md): each doctor's key made at the first signature, its private half
 * sealed at rest under the platform keys; the signature checked with the public half. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <sodium.h>

#include "auth/protect.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/crypto.h"
#include "core/time.h"
#include "svc/rx/rx_int.h"

#define CANONICAL_MAX (1u << 20) /* the canonical form of one prescription */
#define SIG_B64_MAX   128        /* base64 of a DER SM2 signature (at most 72 bytes) */

/* ---- canonical form ---- */

static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The shortest text that reads back as v. */
static jk_rc put_double(struct jk_buf *b, double v)
{
    char s[40];
    snprintf(s, sizeof s, "%.15g", v);
    if (strtod(s, NULL) != v) snprintf(s, sizeof s, "%.17g", v);
    return jk_buf_puts(b, s);
}

static jk_rc put_value(struct jk_buf *b, struct json_object *v, int is_top, int depth);

static jk_rc put_object(struct jk_buf *b, struct json_object *o, int is_top, int depth)
{
    static const char *const left_out[] = {"id", "meta", "text", "status"};
    size_t n = (size_t)json_object_object_length(o), k = 0;
    const char **keys = n ? malloc(n * sizeof *keys) : NULL;
    if (n && !keys) return JK_ENOMEM;
    json_object_object_foreach(o, key, val)
    {
        (void)val;
        int is_left_out = 0;
        for (size_t i = 0; is_top && i < sizeof left_out / sizeof left_out[0]; i++)
            is_left_out |= !strcmp(key, left_out[i]);
        if (!is_left_out) keys[k++] = key;
    }
    qsort(keys, k, sizeof *keys, cmp_key);
    jk_rc rc = jk_buf_puts(b, "{");
    for (size_t i = 0; !rc && i < k; i++) {
        if (i) rc = jk_buf_puts(b, ",");
        if (!rc) rc = jk_buf_puts(b, "\"");
        if (!rc) rc = jk_buf_json_escape(b, keys[i], strlen(keys[i]));
        if (!rc) rc = jk_buf_puts(b, "\":");
        if (!rc) rc = put_value(b, json_object_object_get(o, keys[i]), 0, depth + 1);
    }
    if (!rc) rc = jk_buf_puts(b, "}");
    free(keys);
    return rc;
}

static jk_rc put_value(struct jk_buf *b, struct json_object *v, int is_top, int depth)
{
    jk_rc rc = JK_OK;
    if (depth > 64) return JK_ETOOBIG;
    switch (json_object_get_type(v)) {
    case json_type_null: return jk_buf_puts(b, "null");
    case json_type_boolean: return jk_buf_puts(b, json_object_get_boolean(v) ? "true" : "false");
    case json_type_int: return jk_buf_printf(b, "%lld", (long long)json_object_get_int64(v));
    case json_type_double: return put_double(b, json_object_get_double(v));
    case json_type_string:
        rc = jk_buf_puts(b, "\"");
        if (!rc)
            rc = jk_buf_json_escape(b, json_object_get_string(v),
                                    (size_t)json_object_get_string_len(v));
        return rc ? rc : jk_buf_puts(b, "\"");
    case json_type_array:
        rc = jk_buf_puts(b, "[");
        for (size_t i = 0; !rc && i < json_object_array_length(v); i++) {
            if (i) rc = jk_buf_puts(b, ",");
            if (!rc) rc = put_value(b, json_object_array_get_idx(v, i), 0, depth + 1);
        }
        return rc ? rc : jk_buf_puts(b, "]");
    default: return put_object(b, v, is_top, depth);
    }
}

jk_rc jk_rx_canonical(struct json_object *const *requests, size_t n, struct jk_arena *a,
                      const char **out, size_t *len)
{
    struct jk_buf b;
    jk_rc rc = JK_OK;
    *out = NULL;
    *len = 0;
    jk_buf_init(&b, CANONICAL_MAX);
    for (size_t i = 0; !rc && i < n; i++) {
        if (!json_object_is_type(requests[i], json_type_object)) rc = JK_EINVAL;
        if (!rc && i) rc = jk_buf_puts(&b, "\n");
        if (!rc) rc = put_value(&b, requests[i], 1, 0);
    }
    if (!rc && !(*out = jk_arena_strndup(a, b.p ? b.p : "", b.len))) rc = JK_ENOMEM;
    if (!rc) *len = b.len;
    jk_buf_free(&b);
    return rc;
}

/* ---- the doctor's key ---- */

static const char sql_key[] =
    "SELECT public_pem, private_sealed FROM rx_signer WHERE practitioner = ?";
static const char sql_key_new[] =
    "INSERT INTO rx_signer (practitioner, public_pem, private_sealed, created_ms) VALUES (?, ?, "
    "?, ?) ON CONFLICT (practitioner) DO NOTHING";

/* The sealed key's context: it opens only as the key of this doctor's row. */
static const char *context_of(struct jk_arena *a, const char *practitioner)
{
    return jk_arena_printf(a, "rx_signer.private_sealed:%s", practitioner);
}

/* practitioner's row: public PEM and sealed private key (NULL when asked only for the
 * public one), into a. JK_ENOTFOUND when there is none. */
static jk_rc key_row(jk_conn *c, struct jk_arena *a, const char *practitioner,
                     const char **public_pem, const char **sealed)
{
    jk_stmt *s;
    int has_row = 0;
    jk_rc rc = jk_conn_prepare(c, sql_key, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, practitioner, strlen(practitioner));
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && !has_row) rc = JK_ENOTFOUND;
    if (!rc) *public_pem = jk_arena_strdup(a, jk_stmt_col_text(s, 0, NULL));
    if (!rc && sealed) *sealed = jk_arena_strdup(a, jk_stmt_col_text(s, 1, NULL));
    if (!rc && (!*public_pem || (sealed && !*sealed))) rc = JK_ENOMEM;
    if (s) jk_stmt_reset(s);
    return rc;
}

/* A new key pair for practitioner, stored unless another transaction stored one first. */
static jk_rc key_make(jk_conn *c, struct jk_arena *a, const char *practitioner, int64_t now_ms)
{
    jk_sm2 *k = NULL;
    char pub[JK_SM2_PEM_MAX], priv[JK_SM2_PEM_MAX];
    const char *sealed = NULL;
    jk_stmt *s = NULL;
    int has_row;
    jk_rc rc = jk_sm2_generate(&k);
    if (!rc) rc = jk_sm2_public_pem(k, pub, sizeof pub);
    if (!rc) rc = jk_sm2_private_pem(k, priv, sizeof priv);
    if (!rc)
        rc = jk_protect_seal_secret(a, context_of(a, practitioner), priv, strlen(priv), &sealed);
    sodium_memzero(priv, sizeof priv);
    jk_sm2_free(k);
    if (!rc) rc = jk_conn_prepare(c, sql_key_new, &s);
    if (!rc) rc = jk_stmt_text_arg(s, 1, practitioner, strlen(practitioner));
    if (!rc) rc = jk_stmt_text_arg(s, 2, pub, strlen(pub));
    if (!rc) rc = jk_stmt_text_arg(s, 3, sealed, strlen(sealed));
    if (!rc) rc = jk_stmt_int_arg(s, 4, now_ms);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (s) jk_stmt_reset(s);
    return rc;
}

/* The private key of the sealed PEM. The caller frees it. */
static jk_rc key_open(struct jk_arena *a, const char *practitioner, const char *sealed,
                      jk_sm2 **out)
{
    char pem[JK_SM2_PEM_MAX];
    size_t n = 0;
    jk_rc rc = jk_protect_open_secret(a, context_of(a, practitioner), sealed, pem, sizeof pem, &n);
    if (!rc) rc = jk_sm2_from_pem(pem, n, out);
    sodium_memzero(pem, sizeof pem);
    if (!rc && !jk_sm2_is_private(*out)) {
        jk_sm2_free(*out);
        rc = JK_EINVAL;
    }
    return rc == JK_EINVAL ? JK_EINTERNAL : rc; /* a stored key that does not open */
}

jk_rc jk_rx_sign(jk_conn *c, const char *practitioner, const char *text, size_t len,
                 struct jk_arena *a, const char **digest_hex, const char **signature_b64)
{
    const char *pub = NULL, *sealed = NULL;
    unsigned char digest[JK_SM3_BYTES], sig[JK_SM2_SIG_MAX];
    size_t sig_len = 0;
    jk_sm2 *k = NULL;
    char *hex = jk_arena_alloc(a, 2 * JK_SM3_BYTES + 1), *b64 = jk_arena_alloc(a, SIG_B64_MAX);
    if (!hex || !b64) return JK_ENOMEM;
    jk_rc rc = key_row(c, a, practitioner, &pub, &sealed);
    if (rc == JK_ENOTFOUND) {
        rc = key_make(c, a, practitioner, jk_time_now_ms());
        if (!rc) rc = key_row(c, a, practitioner, &pub, &sealed);
    }
    if (!rc) rc = key_open(a, practitioner, sealed, &k);
    if (!rc) rc = jk_sm2_sign(k, text, len, sig, sizeof sig, &sig_len);
    jk_sm2_free(k);
    if (!rc) rc = jk_crypto_sm3(text, len, digest);
    if (rc) return rc;
    jk_crypto_hex(digest, sizeof digest, hex);
    sodium_bin2base64(b64, SIG_B64_MAX, sig, sig_len, sodium_base64_VARIANT_ORIGINAL);
    *digest_hex = hex;
    *signature_b64 = b64;
    return JK_OK;
}

jk_rc jk_rx_verify(jk_conn *c, const char *practitioner, const char *text, size_t len,
                   const char *signature_b64)
{
    unsigned char sig[JK_SM2_SIG_MAX];
    size_t sig_len = 0, n = signature_b64 ? strlen(signature_b64) : 0;
    const char *pub = NULL;
    jk_sm2 *k = NULL;
    struct jk_arena *a = jk_arena_new(0);
    if (!a) return JK_ENOMEM;
    jk_rc rc = key_row(c, a, practitioner, &pub, NULL);
    if (!rc && (!n || n > SIG_B64_MAX ||
                sodium_base642bin(sig, sizeof sig, signature_b64, n, NULL, &sig_len, NULL,
                                  sodium_base64_VARIANT_ORIGINAL)))
        rc = JK_EINVAL;
    if (!rc) rc = jk_sm2_from_pem(pub, strlen(pub), &k) ? JK_EINTERNAL : JK_OK;
    if (!rc) rc = jk_sm2_verify(k, text, len, sig, sig_len);
    jk_sm2_free(k);
    jk_arena_free(a);
    return rc;
}
