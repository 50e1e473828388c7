/* crypto.c - SM2, SM3, SM4 and HMAC from OpenSSL 3, random bytes and constant-time compare
 * from libsodium, and the key file. */
#include "core/crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <sodium.h>

#include "core/time.h"

/* The SM2 distinguishing ID of GM/T 0009 when the signer has no other. */
static const char sm2_default_id[] = "1234567812345678";

/* Labels of the keys derived from the master secret (HKDF-SM3). Changing one changes every
 * key derived with it: never, without a key-rotation plan. */
static const char kdf_salt[] = "jiankang-keys";
static const char label_enc[] = "jiankang v1 seal sm4-ctr key";
static const char label_mac[] = "jiankang v1 seal hmac-sm3 key";
static const char label_index[] = "jiankang v1 blind index hmac-sm3 key";

#define ENC_KEY_BYTES 16 /* SM4 */
#define MAC_KEY_BYTES 32
#define IDX_KEY_BYTES 32

struct jk_sm2 {
    EVP_PKEY *pkey;
    int is_private;
};

struct jk_keys {
    unsigned char master[JK_MASTER_BYTES];
    unsigned char enc_key[ENC_KEY_BYTES];
    unsigned char mac_key[MAC_KEY_BYTES];
    unsigned char index_key[IDX_KEY_BYTES];
    jk_sm2 *sm2;
};

/* ---- algorithms, fetched once and shared (fetched objects are safe to share) ---- */

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static jk_rc init_rc = JK_EINTERNAL;
static EVP_MD *md_sm3;
static EVP_CIPHER *cipher_sm4_ctr;
static EVP_MAC *mac_hmac;
static EVP_KDF *kdf_hkdf;

static void init_run(void)
{
    if (sodium_init() < 0) return;
    md_sm3 = EVP_MD_fetch(NULL, "SM3", NULL);
    cipher_sm4_ctr = EVP_CIPHER_fetch(NULL, "SM4-CTR", NULL);
    mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    kdf_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    ERR_clear_error();
    if (md_sm3 && cipher_sm4_ctr && mac_hmac && kdf_hkdf) init_rc = JK_OK;
}

jk_rc jk_crypto_init(void)
{
    pthread_once(&init_once, init_run);
    return init_rc;
}

/* ---- hashing ---- */

jk_rc jk_crypto_sm3v(const struct jk_crypto_slice *parts, size_t n_parts,
                     unsigned char out[JK_SM3_BYTES])
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    int ok = ctx && EVP_DigestInit_ex2(ctx, md_sm3, NULL);
    for (size_t i = 0; ok && i < n_parts; i++)
        ok = EVP_DigestUpdate(ctx, parts[i].p, parts[i].n);
    ok = ok && EVP_DigestFinal_ex(ctx, out, &len) && len == JK_SM3_BYTES;
    EVP_MD_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok ? JK_OK : JK_EINTERNAL;
}

jk_rc jk_crypto_sm3(const void *p, size_t n, unsigned char out[JK_SM3_BYTES])
{
    struct jk_crypto_slice s = {p, n};
    return jk_crypto_sm3v(&s, 1, out);
}

static jk_rc hmac_sm3v(const void *key, size_t keylen, const struct jk_crypto_slice *parts,
                       size_t n_parts, unsigned char out[JK_SM3_BYTES])
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    char digest[] = "SM3";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac_hmac);
    size_t len = 0;
    int ok = ctx && keylen && EVP_MAC_init(ctx, key, keylen, params);
    for (size_t i = 0; ok && i < n_parts; i++)
        ok = EVP_MAC_update(ctx, parts[i].p, parts[i].n);
    ok = ok && EVP_MAC_final(ctx, out, &len, JK_SM3_BYTES) && len == JK_SM3_BYTES;
    EVP_MAC_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok ? JK_OK : JK_EINTERNAL;
}

jk_rc jk_crypto_hmac_sm3(const void *key, size_t keylen, const void *p, size_t n,
                         unsigned char out[JK_SM3_BYTES])
{
    struct jk_crypto_slice s = {p, n};
    return hmac_sm3v(key, keylen, &s, 1, out);
}

/* HKDF-SM3 (RFC 5869 with SM3) of the master secret with the fixed salt and label. */
static jk_rc derive(const unsigned char master[JK_MASTER_BYTES], const char *label,
                    unsigned char *out, size_t n)
{
    char digest[] = "SM3";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master, JK_MASTER_BYTES),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)kdf_salt,
                                          sizeof kdf_salt - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label, strlen(label)),
        OSSL_PARAM_construct_end(),
    };
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf_hkdf);
    int ok = ctx && EVP_KDF_derive(ctx, out, n, params) > 0;
    EVP_KDF_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok ? JK_OK : JK_EINTERNAL;
}

/* ---- random bytes, comparison, hex ---- */

jk_rc jk_crypto_random(void *p, size_t n)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    randombytes_buf(p, n);
    return JK_OK;
}

int jk_crypto_equal(const void *a, const void *b, size_t n)
{
    if (jk_crypto_init()) return 0;
    return sodium_memcmp(a, b, n) == 0;
}

char *jk_crypto_hex(const void *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[b[i] >> 4];
        out[2 * i + 1] = digits[b[i] & 15];
    }
    out[2 * n] = 0;
    return out;
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

jk_rc jk_crypto_unhex(const char *s, size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    if (n % 2) return JK_EINVAL;
    if (n / 2 > cap) return JK_ETOOBIG;
    for (size_t i = 0; i < n; i += 2) {
        int hi = hex_val(s[i]), lo = hex_val(s[i + 1]);
        if (hi < 0 || lo < 0) return JK_EINVAL;
        out[i / 2] = (unsigned char)(hi << 4 | lo);
    }
    if (outlen) *outlen = n / 2;
    return JK_OK;
}

/* ---- sealed values ---- */

static void be64(unsigned char out[8], uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        out[i] = (unsigned char)v;
}

static jk_rc sm4_ctr(const unsigned char key[ENC_KEY_BYTES], const unsigned char *iv,
                     const unsigned char *in, size_t n, unsigned char *out)
{
    if (n > INT_MAX - 32) return JK_ETOOBIG;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok = ctx && EVP_EncryptInit_ex2(ctx, cipher_sm4_ctr, key, iv, NULL) &&
             EVP_EncryptUpdate(ctx, out, &len, in, (int)n) &&
             EVP_EncryptFinal_ex(ctx, out + len, &fin) && (size_t)(len + fin) == n;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok ? JK_OK : JK_EINTERNAL;
}

/* The tag of a sealed value: HMAC-SM3(mac key, be64(aadlen) | aad | version | IV | ct). */
static jk_rc seal_tag(const jk_keys *k, const void *aad, size_t aadlen, const unsigned char *head,
                      size_t headlen, unsigned char tag[JK_SM3_BYTES])
{
    unsigned char alen[8];
    be64(alen, aadlen);
    struct jk_crypto_slice parts[] = {{alen, 8}, {aad, aadlen}, {head, headlen}};
    return hmac_sm3v(k->mac_key, sizeof k->mac_key, parts, 3, tag);
}

jk_rc jk_crypto_seal(const jk_keys *k, const void *aad, size_t aadlen, const void *pt, size_t n,
                     unsigned char *out, size_t cap, size_t *outlen)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    if (n > INT_MAX - 64 || cap < n + JK_SEAL_OVERHEAD) return JK_ETOOBIG;
    out[0] = JK_SEAL_VERSION;
    randombytes_buf(out + 1, JK_SEAL_IV_BYTES);
    size_t head = 1 + JK_SEAL_IV_BYTES + n;
    if ((rc = sm4_ctr(k->enc_key, out + 1, pt, n, out + 1 + JK_SEAL_IV_BYTES))) return rc;
    if ((rc = seal_tag(k, aad, aadlen, out, head, out + head))) return rc;
    *outlen = head + JK_SM3_BYTES;
    return JK_OK;
}

jk_rc jk_crypto_open(const jk_keys *k, const void *aad, size_t aadlen, const unsigned char *blob,
                     size_t n, unsigned char *out, size_t cap, size_t *outlen)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    if (n < JK_SEAL_OVERHEAD || blob[0] != JK_SEAL_VERSION) return JK_EINVAL;
    size_t head = n - JK_SM3_BYTES, ptlen = n - JK_SEAL_OVERHEAD;
    unsigned char tag[JK_SM3_BYTES];
    if ((rc = seal_tag(k, aad, aadlen, blob, head, tag))) return rc;
    if (!jk_crypto_equal(tag, blob + head, JK_SM3_BYTES)) return JK_EINVAL;
    if (cap < ptlen) return JK_ETOOBIG;
    if ((rc = sm4_ctr(k->enc_key, blob + 1, blob + 1 + JK_SEAL_IV_BYTES, ptlen, out))) return rc;
    *outlen = ptlen;
    return JK_OK;
}

/* Copies the identifier value v[0..n) into out as the blind index sees it. Returns the
 * length written. out has room for n bytes: the normal form is never longer. */
static size_t normalise_id(const char *v, size_t n, unsigned char *out)
{
    const unsigned char *s = (const unsigned char *)v;
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = s[i];
        if (c == 0xE3 && i + 2 < n && s[i + 1] == 0x80 && s[i + 2] == 0x80) {
            i += 2; /* U+3000 ideographic space */
            continue;
        }
        if (c == 0xEF && i + 2 < n && (s[i + 1] == 0xBC || s[i + 1] == 0xBD) &&
            (s[i + 2] & 0xC0) == 0x80) {
            unsigned cp = 0xFF00u + ((s[i + 1] & 1u) << 6) + (s[i + 2] & 0x3Fu);
            if (cp >= 0xFF01 && cp <= 0xFF5E) { /* full-width ASCII */
                c = cp - 0xFEE0u;
                i += 2;
            }
        }
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v' || c == '-')
            continue;
        if (c >= 'a' && c <= 'z') c -= 'a' - 'A';
        out[w++] = (unsigned char)c;
    }
    return w;
}

jk_rc jk_crypto_blind_index(const jk_keys *k, const char *domain, const char *value, size_t n,
                            unsigned char out[JK_BLIND_INDEX_BYTES])
{
    if (n > JK_BLIND_MAX_VALUE) return JK_ETOOBIG;
    unsigned char norm[JK_BLIND_MAX_VALUE];
    size_t len = normalise_id(value, n, norm);
    if (!len) return JK_EINVAL;
    size_t dlen = domain ? strlen(domain) : 0;
    unsigned char dl[8];
    be64(dl, dlen);
    struct jk_crypto_slice parts[] = {{dl, 8}, {domain, dlen}, {norm, len}};
    jk_rc rc = hmac_sm3v(k->index_key, sizeof k->index_key, parts, 3, out);
    sodium_memzero(norm, sizeof norm);
    return rc;
}

/* ---- SM2 ---- */

static jk_rc sm2_wrap(EVP_PKEY *pkey, int is_private, jk_sm2 **out)
{
    jk_sm2 *k = calloc(1, sizeof *k);
    if (!k) {
        EVP_PKEY_free(pkey);
        return JK_ENOMEM;
    }
    k->pkey = pkey;
    k->is_private = is_private;
    *out = k;
    return JK_OK;
}

jk_rc jk_sm2_generate(jk_sm2 **out)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    EVP_PKEY *pkey = EVP_PKEY_Q_keygen(NULL, NULL, "SM2");
    if (!pkey) {
        ERR_clear_error();
        return JK_EINTERNAL;
    }
    return sm2_wrap(pkey, 1, out);
}

/* Never asks for a passphrase: the key file holds unencrypted keys. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

static int is_sm2(EVP_PKEY *pkey)
{
    if (EVP_PKEY_is_a(pkey, "SM2")) return 1;
    char group[32];
    size_t len = 0;
    return EVP_PKEY_is_a(pkey, "EC") &&
           EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                          &len) &&
           strcmp(group, "SM2") == 0;
}

jk_rc jk_sm2_from_pem(const char *pem, size_t n, jk_sm2 **out)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    if (n > INT_MAX) return JK_ETOOBIG;
    int is_private = memmem(pem, n, "PRIVATE KEY-----", 16) != NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)n);
    if (!bio) return JK_ENOMEM;
    EVP_PKEY *pkey = is_private ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL)
                                : PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!pkey || !is_sm2(pkey)) {
        EVP_PKEY_free(pkey);
        return JK_EINVAL;
    }
    return sm2_wrap(pkey, is_private, out);
}

void jk_sm2_free(jk_sm2 *k)
{
    if (!k) return;
    EVP_PKEY_free(k->pkey);
    free(k);
}

int jk_sm2_is_private(const jk_sm2 *k)
{
    return k->is_private;
}

/* Writes k as PEM (the private key when is_private, else the public key) into out. The
 * memory BIO is a secure-heap one, cleared when freed. */
static jk_rc sm2_pem(const jk_sm2 *k, int is_private, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    if (!bio) return JK_ENOMEM;
    int ok = is_private ? PEM_write_bio_PrivateKey(bio, k->pkey, NULL, NULL, 0, NULL, NULL)
                        : PEM_write_bio_PUBKEY(bio, k->pkey);
    char *data = NULL;
    long len = ok ? BIO_get_mem_data(bio, &data) : 0;
    jk_rc rc = JK_OK;
    if (!ok || len <= 0)
        rc = JK_EINTERNAL;
    else if ((size_t)len >= cap)
        rc = JK_ETOOBIG;
    else {
        memcpy(out, data, (size_t)len);
        out[len] = 0;
    }
    BIO_free(bio);
    ERR_clear_error();
    return rc;
}

jk_rc jk_sm2_public_pem(const jk_sm2 *k, char *out, size_t cap)
{
    return sm2_pem(k, 0, out, cap);
}

jk_rc jk_sm2_private_pem(const jk_sm2 *k, char *out, size_t cap)
{
    return k->is_private ? sm2_pem(k, 1, out, cap) : JK_EINVAL;
}

jk_rc jk_sm2_sign(const jk_sm2 *k, const void *p, size_t n, unsigned char *sig, size_t cap,
                  size_t *siglen)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    if (!k->is_private) return JK_EINVAL;
    if (cap < JK_SM2_SIG_MAX) return JK_ETOOBIG;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    size_t len = cap;
    /* The ID must be set after init and before the data: it goes into the Z digest. */
    int ok = ctx && EVP_DigestSignInit_ex(ctx, &pctx, "SM3", NULL, NULL, k->pkey, NULL) &&
             EVP_PKEY_CTX_set1_id(pctx, sm2_default_id, sizeof sm2_default_id - 1) > 0 &&
             EVP_DigestSign(ctx, sig, &len, p, n);
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    if (!ok) return JK_EINTERNAL;
    *siglen = len;
    return JK_OK;
}

jk_rc jk_sm2_verify(const jk_sm2 *k, const void *p, size_t n, const unsigned char *sig,
                    size_t siglen)
{
    jk_rc rc = jk_crypto_init();
    if (rc) return rc;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = ctx && EVP_DigestVerifyInit_ex(ctx, &pctx, "SM3", NULL, NULL, k->pkey, NULL) &&
             EVP_PKEY_CTX_set1_id(pctx, sm2_default_id, sizeof sm2_default_id - 1) > 0;
    int valid = ok && EVP_DigestVerify(ctx, sig, siglen, p, n) == 1;
    EVP_MD_CTX_free(ctx);
    ERR_clear_error();
    if (!ctx) return JK_ENOMEM;
    if (!ok) return JK_EINTERNAL;
    return valid ? JK_OK : JK_EINVAL;
}

/* ---- the platform keys ---- */

jk_rc jk_keys_from(const unsigned char *master, jk_sm2 *sm2, jk_keys **out)
{
    jk_rc rc = jk_crypto_init();
    if (rc) {
        jk_sm2_free(sm2);
        return rc;
    }
    jk_keys *k = calloc(1, sizeof *k);
    if (!k) {
        jk_sm2_free(sm2);
        return JK_ENOMEM;
    }
    if (master)
        memcpy(k->master, master, JK_MASTER_BYTES);
    else
        randombytes_buf(k->master, JK_MASTER_BYTES);
    k->sm2 = sm2;
    if (!k->sm2) rc = jk_sm2_generate(&k->sm2);
    if (!rc) rc = derive(k->master, label_enc, k->enc_key, sizeof k->enc_key);
    if (!rc) rc = derive(k->master, label_mac, k->mac_key, sizeof k->mac_key);
    if (!rc) rc = derive(k->master, label_index, k->index_key, sizeof k->index_key);
    if (!rc && !jk_sm2_is_private(k->sm2)) rc = JK_EINVAL;
    if (rc) {
        jk_keys_free(k);
        return rc;
    }
    *out = k;
    return JK_OK;
}

void jk_keys_free(jk_keys *k)
{
    if (!k) return;
    jk_sm2_free(k->sm2);
    sodium_memzero(k, sizeof *k);
    free(k);
}

const jk_sm2 *jk_keys_sm2(const jk_keys *k)
{
    return k->sm2;
}

static const char keyfile_magic[] = "jiankang-keys 1";
static const char keyfile_master[] = "master-secret ";

static const char *errno_text(int e, char *buf, size_t n)
{
    return strerror_r(e, buf, n); /* the GNU variant: returns the message */
}

/* Reads the key file text s[0..n) into keys. */
static jk_rc keyfile_parse(const char *path, const char *s, size_t n, jk_keys **out, char *err,
                           size_t errlen)
{
    const char *p = s, *end = s + n, *pem = NULL;
    int has_magic = 0;
    unsigned char master[JK_MASTER_BYTES];
    int has_master = 0;
    jk_rc rc = JK_OK;
    while (p < end && !pem && !rc) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t len = eol ? (size_t)(eol - p) : (size_t)(end - p);
        size_t ml = sizeof keyfile_master - 1;
        if (len && p[len - 1] == '\r') len--;
        if (len >= 5 && memcmp(p, "-----", 5) == 0) {
            pem = p;
        } else if (!len || p[0] == '#') {
            /* blank or comment */
        } else if (!has_magic) {
            has_magic = len == sizeof keyfile_magic - 1 && !memcmp(p, keyfile_magic, len);
            if (!has_magic) rc = JK_EINVAL;
        } else if (!has_master && len > ml && !memcmp(p, keyfile_master, ml)) {
            size_t got = 0;
            has_master = !jk_crypto_unhex(p + ml, len - ml, master, sizeof master, &got) &&
                         got == JK_MASTER_BYTES;
            if (!has_master) rc = JK_EINVAL;
        } else {
            rc = JK_EINVAL;
        }
        p = eol ? eol + 1 : end;
    }
    jk_sm2 *sm2 = NULL;
    if (!rc && (!has_magic || !has_master || !pem)) rc = JK_EINVAL;
    if (!rc && jk_sm2_from_pem(pem, (size_t)(end - pem), &sm2)) rc = JK_EINVAL;
    if (!rc && !jk_sm2_is_private(sm2)) {
        jk_sm2_free(sm2);
        rc = JK_EINVAL;
    }
    if (!rc) rc = jk_keys_from(master, sm2, out);
    sodium_memzero(master, sizeof master);
    if (rc == JK_EINVAL)
        snprintf(err, errlen,
                 "%s is not a valid key file (expected '%s', a '%s<64 hex digits>' line and an "
                 "SM2 private key in PEM; see docs/internals/crypto.md)",
                 path, keyfile_magic, keyfile_master);
    else if (rc)
        snprintf(err, errlen, "cannot use the keys of %s: %s", path, jk_rc_name(rc));
    return rc;
}

jk_rc jk_keys_load(const char *path, jk_keys **out, char *err, size_t errlen)
{
    char eb[128];
    jk_rc rc = jk_crypto_init();
    if (rc) {
        snprintf(err, errlen, "OpenSSL lacks SM2/SM3/SM4 or libsodium cannot start");
        return rc;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT) {
            snprintf(err, errlen,
                     "key file %s does not exist (create it with: jiankang keys init --keys %s)",
                     path, path);
            return JK_ENOTFOUND;
        }
        snprintf(err, errlen, "cannot open key file %s: %s", path, errno_text(e, eb, sizeof eb));
        return JK_EINVAL;
    }
    struct stat st;
    char *buf = NULL;
    ssize_t got = 0;
    if (fstat(fd, &st)) {
        snprintf(err, errlen, "cannot stat key file %s: %s", path,
                 errno_text(errno, eb, sizeof eb));
        rc = JK_EINVAL;
    } else if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "key file %s is not a regular file", path);
        rc = JK_EINVAL;
    } else if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "key file %s may be read or written by group or others (mode %04o); it must "
                 "be private to its owner: chmod 600 %s",
                 path, (unsigned)(st.st_mode & 07777), path);
        rc = JK_EFORBIDDEN;
    } else if (st.st_size <= 0 || st.st_size > JK_KEYFILE_MAX) {
        snprintf(err, errlen, "key file %s is empty or larger than %d bytes", path, JK_KEYFILE_MAX);
        rc = JK_EINVAL;
    } else if (!(buf = sodium_malloc(JK_KEYFILE_MAX + 1))) {
        rc = JK_ENOMEM;
    } else {
        size_t total = 0;
        while (total < JK_KEYFILE_MAX + 1) {
            got = read(fd, buf + total, JK_KEYFILE_MAX + 1 - total);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) break;
            total += (size_t)got;
        }
        if (got < 0) {
            snprintf(err, errlen, "cannot read key file %s: %s", path,
                     errno_text(errno, eb, sizeof eb));
            rc = JK_EINVAL;
        } else if (total > JK_KEYFILE_MAX) {
            snprintf(err, errlen, "key file %s is larger than %d bytes", path, JK_KEYFILE_MAX);
            rc = JK_EINVAL;
        } else {
            rc = keyfile_parse(path, buf, total, out, err, errlen);
        }
    }
    close(fd);
    sodium_free(buf); /* wipes it */
    return rc;
}

/* Writes all of p[0..n) to fd. */
static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* fsync of the directory holding path, so that a new name in it survives a crash. */
static int fsync_dir_of(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

/* The key file text of k into the secure buffer out (cap bytes). */
static jk_rc keyfile_text(const jk_keys *k, char *out, size_t cap, size_t *len)
{
    char now[40], hex[2 * JK_MASTER_BYTES + 1];
    jk_time_iso(jk_time_now_ms(), now, sizeof now);
    jk_crypto_hex(k->master, JK_MASTER_BYTES, hex);
    int n = snprintf(out, cap,
                     "# Jiankang platform keys, created %s.\n"
                     "# Keep this file secret: mode 0600, never in the database, never in a log,\n"
                     "# backed up only where backups are encrypted. Losing it loses every value\n"
                     "# sealed with it. Format: docs/internals/crypto.md.\n"
                     "%s\n%s%s\n",
                     now, keyfile_magic, keyfile_master, hex);
    sodium_memzero(hex, sizeof hex);
    if (n < 0 || (size_t)n >= cap) return JK_ETOOBIG;
    jk_rc rc = sm2_pem(k->sm2, 1, out + n, cap - (size_t)n);
    if (rc) return rc;
    *len = strlen(out);
    return JK_OK;
}

jk_rc jk_keys_create(const char *path, jk_keys **out, char *err, size_t errlen)
{
    char eb[128], tmp[PATH_MAX];
    jk_keys *k = NULL;
    jk_rc rc = jk_keys_from(NULL, NULL, &k);
    if (rc) {
        snprintf(err, errlen, "cannot make new keys: %s", jk_rc_name(rc));
        return rc;
    }
    char *text = sodium_malloc(JK_KEYFILE_MAX);
    size_t len = 0;
    if (!text) rc = JK_ENOMEM;
    if (!rc && (rc = keyfile_text(k, text, JK_KEYFILE_MAX, &len)))
        snprintf(err, errlen, "cannot write the keys: %s", jk_rc_name(rc));
    if (!rc && (size_t)snprintf(tmp, sizeof tmp, "%s.new-XXXXXX", path) >= sizeof tmp) {
        snprintf(err, errlen, "key file path too long");
        rc = JK_EINVAL;
    }
    /* Written under a temporary name, then linked into place: link() never replaces a file,
     * so the key file appears complete, or not at all, and an existing one stays. */
    int fd = rc ? -1 : mkstemp(tmp);
    if (!rc && fd < 0) {
        snprintf(err, errlen, "cannot create a key file next to %s: %s", path,
                 errno_text(errno, eb, sizeof eb));
        rc = JK_EINVAL;
    }
    if (fd >= 0) {
        int failed = fchmod(fd, 0600) || write_all(fd, text, len) || fsync(fd);
        int e = errno;
        if (close(fd)) failed = 1;
        if (!failed && link(tmp, path)) {
            failed = 1;
            e = errno;
        }
        unlink(tmp);
        if (failed && e == EEXIST) {
            snprintf(err, errlen, "key file %s already exists (a key file is never replaced)",
                     path);
            rc = JK_ECONFLICT;
        } else if (failed) {
            snprintf(err, errlen, "cannot write key file %s: %s", path,
                     errno_text(e, eb, sizeof eb));
            rc = JK_EINVAL;
        } else if (fsync_dir_of(path)) {
            snprintf(err, errlen, "cannot sync the directory of key file %s: %s", path,
                     errno_text(errno, eb, sizeof eb));
            rc = JK_EINVAL;
        }
    }
    sodium_free(text);
    if (rc) {
        jk_keys_free(k);
        return rc;
    }
    *out = k;
    return JK_OK;
}

jk_rc jk_keys_load_or_create(const char *path, jk_keys **out, char *err, size_t errlen)
{
    jk_rc rc = jk_keys_load(path, out, err, errlen);
    if (rc != JK_ENOTFOUND) return rc;
    rc = jk_keys_create(path, out, err, errlen);
    if (rc != JK_ECONFLICT) return rc;
    return jk_keys_load(path, out, err, errlen); /* another process created it first */
}
