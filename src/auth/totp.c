/* totp.c - RFC 6238 one-time codes over HMAC-SHA1 from OpenSSL, base32 secrets, and the
 * otpauth:// URI. */
#include "auth/totp.h"

#include <stdio.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

static const char b32_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

jk_rc jk_base32_encode(const uint8_t *p, size_t n, char *out, size_t outlen)
{
    size_t need = (n * 8 + 4) / 5 + 1, k = 0;
    if (outlen < need) return JK_ETOOBIG;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 5) {
            out[k++] = b32_alphabet[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    if (bits) out[k++] = b32_alphabet[(acc << (5 - bits)) & 31];
    out[k] = '\0';
    return JK_OK;
}

static int b32_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a';
    if (ch >= '2' && ch <= '7') return ch - '2' + 26;
    return -1;
}

jk_rc jk_base32_decode(const char *s, uint8_t *out, size_t outcap, size_t *n)
{
    uint32_t acc = 0;
    int bits = 0, is_padding = 0;
    size_t k = 0;
    *n = 0;
    for (const char *p = s; *p; p++) {
        if (*p == ' ' || *p == '-') continue;
        if (*p == '=') {
            is_padding = 1;
            continue;
        }
        int v = b32_value(*p);
        if (v < 0 || is_padding) return JK_EINVAL;
        acc = (acc << 5) | (uint32_t)v;
        bits += 5;
        if (bits >= 8) {
            if (k == outcap) return JK_ETOOBIG;
            out[k++] = (uint8_t)(acc >> (bits - 8));
            bits -= 8;
        }
        acc &= (1u << bits) - 1;
    }
    if (bits >= 5 || (acc & ((1u << bits) - 1))) return JK_EINVAL;
    *n = k;
    return JK_OK;
}

jk_rc jk_hotp(const uint8_t *key, size_t keylen, uint64_t counter, int digits, uint32_t *code)
{
    static const uint32_t pow10[] = {1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000};
    if (digits < 6 || digits > 8 || keylen > 1024) return JK_EINVAL;
    uint8_t msg[8], mac[EVP_MAX_MD_SIZE];
    unsigned maclen = 0;
    for (int i = 7; i >= 0; i--) {
        msg[i] = (uint8_t)(counter & 0xff);
        counter >>= 8;
    }
    if (!HMAC(EVP_sha1(), key, (int)keylen, msg, sizeof msg, mac, &maclen) || maclen != 20)
        return JK_EINTERNAL;
    /* Dynamic truncation, RFC 4226 section 5.3. */
    unsigned off = mac[19] & 0x0f;
    uint32_t bin = ((uint32_t)(mac[off] & 0x7f) << 24) | ((uint32_t)mac[off + 1] << 16) |
                   ((uint32_t)mac[off + 2] << 8) | mac[off + 3];
    *code = bin % pow10[digits];
    sodium_memzero(mac, sizeof mac);
    return JK_OK;
}

int64_t jk_totp_step(int64_t now_ms)
{
    const int64_t step_ms = (int64_t)JK_TOTP_STEP_S * 1000;
    int64_t q = now_ms / step_ms;
    return now_ms % step_ms < 0 ? q - 1 : q; /* floor, also before 1970 */
}

static jk_rc decode_secret(const char *secret_b32, uint8_t *key, size_t *keylen)
{
    jk_rc rc = jk_base32_decode(secret_b32, key, JK_TOTP_MAX_KEY, keylen);
    if (rc) return JK_EINVAL;
    return *keylen ? JK_OK : JK_EINVAL;
}

jk_rc jk_totp_verify(const char *secret_b32, const char *code, int64_t now_ms, int window,
                     int64_t last_step, int64_t *step)
{
    uint8_t key[JK_TOTP_MAX_KEY];
    size_t keylen = 0;
    uint32_t want = 0;
    size_t i = 0;
    for (; code && code[i]; i++) {
        if (code[i] < '0' || code[i] > '9' || i >= JK_TOTP_DIGITS) return JK_EUNAUTH;
        want = want * 10 + (uint32_t)(code[i] - '0');
    }
    if (i != JK_TOTP_DIGITS) return JK_EUNAUTH;
    jk_rc rc = decode_secret(secret_b32, key, &keylen);
    if (rc) return rc;
    int64_t now_step = jk_totp_step(now_ms);
    int is_match = 0;
    int64_t matched = 0;
    /* Every step of the window is computed, matched or not, so the time taken does not tell
     * which step matched. */
    for (int64_t s = now_step - window; s <= now_step + window; s++) {
        uint32_t got = 0;
        if (s < 0 || jk_hotp(key, keylen, (uint64_t)s, JK_TOTP_DIGITS, &got)) continue;
        if (got == want && s > last_step && !is_match) {
            is_match = 1;
            matched = s;
        }
    }
    sodium_memzero(key, sizeof key);
    if (!is_match) return JK_EUNAUTH;
    *step = matched;
    return JK_OK;
}

jk_rc jk_totp_code(const char *secret_b32, int64_t now_ms, char *out, size_t outlen)
{
    uint8_t key[JK_TOTP_MAX_KEY];
    size_t keylen = 0;
    uint32_t code = 0;
    if (outlen < JK_TOTP_DIGITS + 1) return JK_ETOOBIG;
    jk_rc rc = decode_secret(secret_b32, key, &keylen);
    if (!rc) rc = jk_hotp(key, keylen, (uint64_t)jk_totp_step(now_ms), JK_TOTP_DIGITS, &code);
    sodium_memzero(key, sizeof key);
    if (rc) return rc;
    snprintf(out, outlen, "%0*u", JK_TOTP_DIGITS, (unsigned)code);
    return JK_OK;
}

jk_rc jk_totp_new_secret(char *out, size_t outlen)
{
    uint8_t key[JK_TOTP_KEY_BYTES];
    if (sodium_init() < 0) return JK_EINTERNAL;
    randombytes_buf(key, sizeof key);
    jk_rc rc = jk_base32_encode(key, sizeof key, out, outlen);
    sodium_memzero(key, sizeof key);
    return rc;
}

/* Appends s percent-encoded (RFC 3986 unreserved characters stay) at out[*k]. */
static jk_rc put_encoded(const char *s, char *out, size_t outlen, size_t *k)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int is_plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
                       (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (*k + (is_plain ? 1 : 3) >= outlen) return JK_ETOOBIG;
        if (is_plain) {
            out[(*k)++] = (char)*p;
        } else {
            out[(*k)++] = '%';
            out[(*k)++] = hex[*p >> 4];
            out[(*k)++] = hex[*p & 15];
        }
    }
    out[*k] = '\0';
    return JK_OK;
}

static jk_rc put_plain(const char *s, char *out, size_t outlen, size_t *k)
{
    size_t n = strlen(s);
    if (*k + n >= outlen) return JK_ETOOBIG;
    memcpy(out + *k, s, n + 1);
    *k += n;
    return JK_OK;
}

jk_rc jk_totp_uri(const char *secret_b32, const char *issuer, const char *account, char *out,
                  size_t outlen)
{
    char tail[64];
    size_t k = 0;
    jk_rc rc;
    if (!outlen) return JK_ETOOBIG;
    out[0] = '\0';
    snprintf(tail, sizeof tail, "&algorithm=SHA1&digits=%d&period=%d", JK_TOTP_DIGITS,
             JK_TOTP_STEP_S);
    if ((rc = put_plain("otpauth://totp/", out, outlen, &k)) ||
        (rc = put_encoded(issuer, out, outlen, &k)) || (rc = put_plain(":", out, outlen, &k)) ||
        (rc = put_encoded(account, out, outlen, &k)) ||
        (rc = put_plain("?secret=", out, outlen, &k)) ||
        (rc = put_plain(secret_b32, out, outlen, &k)) ||
        (rc = put_plain("&issuer=", out, outlen, &k)) ||
        (rc = put_encoded(issuer, out, outlen, &k)) || (rc = put_plain(tail, out, outlen, &k)))
        return rc;
    return JK_OK;
}
