/* crypto.h - the platform's cryptography: SM3, HMAC-SM3, sealed values (SM4-CTR + HMAC-SM3),
 * blind indexes, SM2 signatures, random bytes and the key file. All of it is OpenSSL 3 and
 * libsodium underneath; nothing here implements a cipher or a hash. Every function is
 * thread-safe; a jk_keys or jk_sm2 may be shared by threads once it is made. Nothing here
 * logs, and no error message holds key material. See docs/internals/crypto.md. */
#ifndef JK_CRYPTO_H
#define JK_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"

#define JK_SM3_BYTES         32 /* an SM3 digest, an HMAC-SM3 tag */
#define JK_MASTER_BYTES      32 /* the master secret of the key file */
#define JK_SEAL_VERSION      1  /* the first byte of a sealed value */
#define JK_SEAL_IV_BYTES     16
#define JK_SEAL_OVERHEAD     (1 + JK_SEAL_IV_BYTES + JK_SM3_BYTES) /* version, IV, tag */
#define JK_BLIND_INDEX_BYTES JK_SM3_BYTES
#define JK_BLIND_MAX_VALUE   1024 /* longest value a blind index is made of */
#define JK_SM2_SIG_MAX       80   /* a DER SM2 signature is at most 72 bytes */
#define JK_SM2_PEM_MAX       4096 /* room for one PEM key */
#define JK_KEYFILE_MAX       16384

typedef struct jk_keys jk_keys; /* the platform's keys, from the key file */
typedef struct jk_sm2 jk_sm2;   /* one SM2 key: a pair, or a public key alone */

/* One piece of a message hashed or authenticated in parts. */
struct jk_crypto_slice {
    const void *p;
    size_t n;
};

/* Makes sure libsodium is initialised and SM2, SM3 and SM4 are available. Every function
 * below calls it; calling it first turns a broken installation into one clear error at
 * start-up. JK_EINTERNAL when OpenSSL lacks an algorithm or libsodium cannot start. */
jk_rc jk_crypto_init(void);

/* SM3 of p[0..n) into out. */
jk_rc jk_crypto_sm3(const void *p, size_t n, unsigned char out[JK_SM3_BYTES]);

/* SM3 of the concatenation of parts[0..n_parts). */
jk_rc jk_crypto_sm3v(const struct jk_crypto_slice *parts, size_t n_parts,
                     unsigned char out[JK_SM3_BYTES]);

/* HMAC-SM3 of p[0..n) under key[0..keylen) into out. */
jk_rc jk_crypto_hmac_sm3(const void *key, size_t keylen, const void *p, size_t n,
                         unsigned char out[JK_SM3_BYTES]);

/* n random bytes from libsodium's CSPRNG. */
jk_rc jk_crypto_random(void *p, size_t n);

/* 1 when a[0..n) equals b[0..n), in time that depends on n only; 0 otherwise. */
int jk_crypto_equal(const void *a, const void *b, size_t n);

/* Writes p[0..n) as lower-case hex and a NUL into out (at least 2n+1 bytes). Returns out. */
char *jk_crypto_hex(const void *p, size_t n, char *out);

/* Reads the hex text s[0..n) (either case) into out. JK_EINVAL when it is not hex of even
 * length, JK_ETOOBIG when it would not fit in cap bytes. */
jk_rc jk_crypto_unhex(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen);

/* ---- the platform keys ---- */

/* Loads the key file at path, or creates it when it does not exist (the first start): a new
 * random master secret and a new SM2 key pair, written to a file of mode 0600 that appears
 * complete or not at all (two processes starting at once end up with the same keys). A file
 * that group or others may read or write is refused, as is anything that is not a key file.
 * On error writes a message into err (errlen bytes). The caller owns *out (jk_keys_free). */
jk_rc jk_keys_load_or_create(const char *path, jk_keys **out, char *err, size_t errlen);

/* Creates a new key file at path; JK_ECONFLICT when a file is already there (a key file is
 * never overwritten). The caller owns *out. */
jk_rc jk_keys_create(const char *path, jk_keys **out, char *err, size_t errlen);

/* Loads an existing key file; JK_ENOTFOUND when there is none, JK_EFORBIDDEN when its mode
 * lets group or others in, JK_EINVAL when it is not a valid key file. The caller owns *out. */
jk_rc jk_keys_load(const char *path, jk_keys **out, char *err, size_t errlen);

/* Keys made in memory from a given master secret and SM2 key (which the keys take over),
 * or from fresh random ones when master or sm2 is NULL. For tests and tools. */
jk_rc jk_keys_from(const unsigned char *master, jk_sm2 *sm2, jk_keys **out);

/* Wipes and frees the keys. NULL is allowed. */
void jk_keys_free(jk_keys *k);

/* The platform's SM2 key pair. Owned by k. */
const jk_sm2 *jk_keys_sm2(const jk_keys *k);

/* ---- values sealed at rest ---- */

/* Encrypts pt[0..n) with SM4-CTR under a fresh random IV and authenticates it with
 * HMAC-SM3 (encrypt-then-MAC) over the version, IV, ciphertext and aad[0..aadlen) (context
 * such as "Patient.identifier", which must be given again to open it; may be empty). Writes
 * version | IV | ciphertext | tag, n + JK_SEAL_OVERHEAD bytes, into out. JK_ETOOBIG when cap
 * is too small. */
jk_rc jk_crypto_seal(const jk_keys *k, const void *aad, size_t aadlen, const void *pt, size_t n,
                     unsigned char *out, size_t cap, size_t *outlen);

/* Checks and decrypts a sealed value. JK_EINVAL, with nothing written, when the blob was
 * changed in any way, was sealed under other keys or another aad, or is not a sealed value;
 * JK_ETOOBIG when the plaintext would not fit in cap bytes. */
jk_rc jk_crypto_open(const jk_keys *k, const void *aad, size_t aadlen, const unsigned char *blob,
                     size_t n, unsigned char *out, size_t cap, size_t *outlen);

/* The blind index of an identifier: HMAC-SM3 under its own key over the domain (the
 * identifier system, so equal numbers of different systems do not match) and the value
 * normalised (ASCII white space, '-' and the ideographic space dropped, full-width ASCII
 * made half-width, letters upper-cased: "11010519491231002x" and "110105 19491231 002X"
 * match). Equal inputs give equal indexes under the same keys only. JK_EINVAL for an empty
 * value, JK_ETOOBIG past JK_BLIND_MAX_VALUE bytes. */
jk_rc jk_crypto_blind_index(const jk_keys *k, const char *domain, const char *value, size_t n,
                            unsigned char out[JK_BLIND_INDEX_BYTES]);

/* ---- SM2 ---- */

/* A new SM2 key pair. The caller owns *out (jk_sm2_free). */
jk_rc jk_sm2_generate(jk_sm2 **out);

/* Reads a PEM SM2 key: a private key (PKCS#8 "PRIVATE KEY") or a public key ("PUBLIC KEY").
 * JK_EINVAL when it is neither or not SM2. The caller owns *out. */
jk_rc jk_sm2_from_pem(const char *pem, size_t n, jk_sm2 **out);

/* Frees k. NULL is allowed. */
void jk_sm2_free(jk_sm2 *k);

/* Whether k holds the private half. */
int jk_sm2_is_private(const jk_sm2 *k);

/* Writes the public key as PEM ("-----BEGIN PUBLIC KEY-----") and a NUL into out. */
jk_rc jk_sm2_public_pem(const jk_sm2 *k, char *out, size_t cap);

/* Writes the private key as PEM (PKCS#8 "-----BEGIN PRIVATE KEY-----") and a NUL into out,
 * to be sealed before it is stored; the caller wipes out after use. JK_EINVAL when k is
 * public only. */
jk_rc jk_sm2_private_pem(const jk_sm2 *k, char *out, size_t cap);

/* Signs p[0..n) (SM2 with SM3 and the default distinguishing ID "1234567812345678") into
 * sig, a DER signature of at most JK_SM2_SIG_MAX bytes. JK_EINVAL when k is public only. */
jk_rc jk_sm2_sign(const jk_sm2 *k, const void *p, size_t n, unsigned char *sig, size_t cap,
                  size_t *siglen);

/* JK_OK when sig is a valid signature of p[0..n) by k, JK_EINVAL when it is not. */
jk_rc jk_sm2_verify(const jk_sm2 *k, const void *p, size_t n, const unsigned char *sig,
                    size_t siglen);

#endif
