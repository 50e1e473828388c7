/* totp.h - time-based one-time passwords (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits) for the
 * second factor of administrators and regulators, with base32 secrets (RFC 4648) and the
 * otpauth:// provisioning URI that authenticator apps read. */
#ifndef JK_TOTP_H
#define JK_TOTP_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"

#define JK_TOTP_STEP_S     30 /* seconds per time step (RFC 6238 X) */
#define JK_TOTP_DIGITS     6  /* digits of a code */
#define JK_TOTP_WINDOW     1  /* steps accepted either side of now (clock drift) */
#define JK_TOTP_KEY_BYTES  20 /* a new secret: 160 bits, as RFC 4226 recommends */
#define JK_TOTP_SECRET_MAX 64 /* longest base32 secret text we store, without the NUL */
#define JK_TOTP_MAX_KEY    40 /* longest decoded secret accepted */

/* Writes the base32 text (RFC 4648 alphabet, no padding) of p[0..n) into out, NUL-terminated.
 * JK_ETOOBIG when outlen is too small. */
jk_rc jk_base32_encode(const uint8_t *p, size_t n, char *out, size_t outlen);

/* Decodes base32 text s: letters of either case, digits 2-7; spaces, hyphens and trailing '='
 * are ignored. Writes at most outcap bytes to out and their count to *n. JK_EINVAL for any
 * other character or leftover bits that are not zero, JK_ETOOBIG when out is too small. */
jk_rc jk_base32_decode(const char *s, uint8_t *out, size_t outcap, size_t *n);

/* The HOTP value (RFC 4226) of key at counter, with digits (6 to 8) digits, into *code. */
jk_rc jk_hotp(const uint8_t *key, size_t keylen, uint64_t counter, int digits, uint32_t *code);

/* The time step of now_ms (milliseconds since the epoch; T0 = 0). */
int64_t jk_totp_step(int64_t now_ms);

/* Checks code (exactly JK_TOTP_DIGITS digits) against the base32 secret at now_ms, accepting
 * the steps from now - window to now + window that are later than last_step (a code once
 * used cannot be used again). On success *step is the matched step, to be stored as the new
 * last_step. JK_EUNAUTH when the code is wrong, malformed or replayed; JK_EINVAL when the
 * secret is not base32. */
jk_rc jk_totp_verify(const char *secret_b32, const char *code, int64_t now_ms, int window,
                     int64_t last_step, int64_t *step);

/* Writes the current code of secret_b32 at now_ms as JK_TOTP_DIGITS digits into out (at least
 * JK_TOTP_DIGITS + 1 bytes): for tests and the demo. */
jk_rc jk_totp_code(const char *secret_b32, int64_t now_ms, char *out, size_t outlen);

/* A new random secret (JK_TOTP_KEY_BYTES bytes from libsodium) as base32 into out (at least
 * 33 bytes). */
jk_rc jk_totp_new_secret(char *out, size_t outlen);

/* The provisioning URI otpauth://totp/ISSUER:ACCOUNT?secret=...&issuer=...&algorithm=SHA1
 * &digits=6&period=30, with issuer and account percent-encoded, into out. JK_ETOOBIG when
 * it does not fit. The URI holds the secret: show it only to its owner. */
jk_rc jk_totp_uri(const char *secret_b32, const char *issuer, const char *account, char *out,
                  size_t outlen);

#endif
