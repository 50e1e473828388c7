/* test_crypto.c - what the platform relies on from its cryptography: known SM3 and HMAC-SM3
 * answers, sealed values that refuse any tampering, blind indexes that match the same number
 * however it is typed, SM2 signatures, and a key file that stays private. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/pem.h>

#include "core/crypto.h"

static void assert_hex(const unsigned char *p, size_t n, const char *want)
{
    char hex[2 * 64 + 1];
    assert_true(n <= 64);
    assert_string_equal(jk_crypto_hex(p, n, hex), want);
}

static jk_keys *new_keys(void)
{
    jk_keys *k = NULL;
    assert_int_equal(jk_keys_from(NULL, NULL, &k), JK_OK);
    return k;
}

/* ---- digests ---- */

static void test_sm3_known_answer(void **state)
{
    (void)state;
    unsigned char h[JK_SM3_BYTES], h2[JK_SM3_BYTES];
    assert_int_equal(jk_crypto_init(), JK_OK);
    /* GB/T 32905-2016, example 1 */
    assert_int_equal(jk_crypto_sm3("abc", 3, h), JK_OK);
    assert_hex(h, sizeof h, "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0");
    /* hashing in parts is hashing the concatenation */
    struct jk_crypto_slice parts[] = {{"a", 1}, {"", 0}, {"bc", 2}};
    assert_int_equal(jk_crypto_sm3v(parts, 3, h2), JK_OK);
    assert_memory_equal(h, h2, sizeof h);
}

static void test_hmac_sm3_known_answer(void **state)
{
    (void)state;
    static const char msg[] = "The quick brown fox jumps over the lazy dog";
    unsigned char t[JK_SM3_BYTES], t2[JK_SM3_BYTES];
    /* the same as `openssl mac -digest SM3 -macopt key:jiankang-test-key HMAC` */
    assert_int_equal(jk_crypto_hmac_sm3("jiankang-test-key", 17, msg, sizeof msg - 1, t), JK_OK);
    assert_hex(t, sizeof t, "eabbfdcc69820f57637bd077f767faaf6d05e8a9b34056b7319a74d16b8b6c7f");
    assert_int_equal(jk_crypto_hmac_sm3("jiankang-test-kez", 17, msg, sizeof msg - 1, t2), JK_OK);
    assert_memory_not_equal(t, t2, sizeof t);
}

static void test_hex_and_compare(void **state)
{
    (void)state;
    unsigned char b[4] = {0x00, 0xab, 0x7f, 0xff}, back[4];
    char hex[9];
    size_t n = 0;
    assert_string_equal(jk_crypto_hex(b, 4, hex), "00ab7fff");
    assert_int_equal(jk_crypto_unhex("00AB7ffF", 8, back, sizeof back, &n), JK_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(b, back, 4);
    assert_int_equal(jk_crypto_unhex("00a", 3, back, sizeof back, &n), JK_EINVAL);
    assert_int_equal(jk_crypto_unhex("0g", 2, back, sizeof back, &n), JK_EINVAL);
    assert_int_equal(jk_crypto_unhex("0011223344", 10, back, sizeof back, &n), JK_ETOOBIG);
    assert_true(jk_crypto_equal("abcd", "abcd", 4));
    assert_false(jk_crypto_equal("abcd", "abce", 4));
    unsigned char r1[32], r2[32];
    assert_int_equal(jk_crypto_random(r1, sizeof r1), JK_OK);
    assert_int_equal(jk_crypto_random(r2, sizeof r2), JK_OK);
    assert_memory_not_equal(r1, r2, sizeof r1);
}

/* ---- sealed values ---- */

static void test_seal_round_trip(void **state)
{
    (void)state;
    jk_keys *k = new_keys();
    static const size_t lens[] = {0, 1, 15, 16, 17, 18, 100, 1000};
    unsigned char pt[1000], blob[1100], blob2[1100], back[1000];
    for (size_t i = 0; i < sizeof pt; i++)
        pt[i] = (unsigned char)(i * 7 + 3);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i], bn = 0, bn2 = 0, got = 0;
        assert_int_equal(jk_crypto_seal(k, "ctx", 3, pt, n, blob, sizeof blob, &bn), JK_OK);
        assert_int_equal(bn, n + JK_SEAL_OVERHEAD);
        assert_int_equal(blob[0], JK_SEAL_VERSION);
        /* a fresh IV each time: the same value never seals to the same bytes */
        assert_int_equal(jk_crypto_seal(k, "ctx", 3, pt, n, blob2, sizeof blob2, &bn2), JK_OK);
        assert_memory_not_equal(blob, blob2, bn);
        assert_int_equal(jk_crypto_open(k, "ctx", 3, blob, bn, back, sizeof back, &got), JK_OK);
        assert_int_equal(got, n);
        if (n) assert_memory_equal(back, pt, n);
        if (n >= 16) assert_memory_not_equal(blob + 1 + JK_SEAL_IV_BYTES, pt, 16); /* encrypted */
    }
    /* too small an output buffer */
    size_t bn = 0, got = 0;
    assert_int_equal(jk_crypto_seal(k, NULL, 0, pt, 100, blob, 100 + JK_SEAL_OVERHEAD - 1, &bn),
                     JK_ETOOBIG);
    assert_int_equal(jk_crypto_seal(k, NULL, 0, pt, 100, blob, sizeof blob, &bn), JK_OK);
    assert_int_equal(jk_crypto_open(k, NULL, 0, blob, bn, back, 99, &got), JK_ETOOBIG);
    jk_keys_free(k);
}

static void test_seal_refuses_tampering(void **state)
{
    (void)state;
    jk_keys *k = new_keys(), *other = new_keys();
    static const char id[] = "110105194912310021";
    unsigned char blob[200], bad[201], out[64];
    size_t bn = 0, got = 0;
    assert_int_equal(jk_crypto_seal(k, "Patient/1", 9, id, sizeof id - 1, blob, sizeof blob, &bn),
                     JK_OK);
    /* every byte, every bit: version, IV, ciphertext and tag are all covered */
    for (size_t i = 0; i < bn; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(bad, blob, bn);
            bad[i] ^= (unsigned char)(1u << bit);
            memset(out, 0x5a, sizeof out);
            assert_int_equal(jk_crypto_open(k, "Patient/1", 9, bad, bn, out, sizeof out, &got),
                             JK_EINVAL);
            assert_int_equal(out[0], 0x5a); /* nothing written */
        }
    }
    /* cut short anywhere, or one byte longer */
    for (size_t n = 0; n < bn; n++)
        assert_int_equal(jk_crypto_open(k, "Patient/1", 9, blob, n, out, sizeof out, &got),
                         JK_EINVAL);
    memcpy(bad, blob, bn);
    bad[bn] = 0;
    assert_int_equal(jk_crypto_open(k, "Patient/1", 9, bad, bn + 1, out, sizeof out, &got),
                     JK_EINVAL);
    /* another context, or other keys */
    assert_int_equal(jk_crypto_open(k, "Patient/2", 9, blob, bn, out, sizeof out, &got), JK_EINVAL);
    assert_int_equal(jk_crypto_open(k, NULL, 0, blob, bn, out, sizeof out, &got), JK_EINVAL);
    assert_int_equal(jk_crypto_open(other, "Patient/1", 9, blob, bn, out, sizeof out, &got),
                     JK_EINVAL);
    /* and the genuine blob still opens */
    assert_int_equal(jk_crypto_open(k, "Patient/1", 9, blob, bn, out, sizeof out, &got), JK_OK);
    assert_int_equal(got, sizeof id - 1);
    assert_memory_equal(out, id, got);
    jk_keys_free(k);
    jk_keys_free(other);
}

/* HKDF-SM3 as docs/internals/crypto.md describes it, done here with OpenSSL directly. */
static void doc_derive(const unsigned char *master, const char *label, unsigned char *out, size_t n)
{
    char digest[] = "SM3", salt[] = "jiankang-keys";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)master, 32),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, salt, strlen(salt)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)label, strlen(label)),
        OSSL_PARAM_construct_end(),
    };
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = EVP_KDF_CTX_new(kdf);
    assert_true(EVP_KDF_derive(ctx, out, n, params) > 0);
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
}

/* A sealed value can be opened by anyone holding the master secret and the documented
 * format, without this code: the format is a promise to future maintainers. */
static void test_seal_format_is_documented(void **state)
{
    (void)state;
    unsigned char master[32], enc[16], mac[32], blob[100], tag[32], pt[32];
    for (int i = 0; i < 32; i++)
        master[i] = (unsigned char)i;
    jk_keys *k = NULL;
    assert_int_equal(jk_keys_from(master, NULL, &k), JK_OK);
    size_t bn = 0;
    assert_int_equal(jk_crypto_seal(k, "aad", 3, "secret id", 9, blob, sizeof blob, &bn), JK_OK);
    doc_derive(master, "jiankang v1 seal sm4-ctr key", enc, sizeof enc);
    doc_derive(master, "jiankang v1 seal hmac-sm3 key", mac, sizeof mac);
    /* tag = HMAC-SM3(mac key, be64(len aad) | aad | version | IV | ciphertext) */
    unsigned char msg[200] = {0, 0, 0, 0, 0, 0, 0, 3, 'a', 'a', 'd'};
    memcpy(msg + 11, blob, bn - 32);
    assert_int_equal(jk_crypto_hmac_sm3(mac, sizeof mac, msg, 11 + bn - 32, tag), JK_OK);
    assert_memory_equal(tag, blob + bn - 32, 32);
    /* ciphertext = SM4-CTR(enc key, IV)(plaintext) */
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_CIPHER *sm4 = EVP_CIPHER_fetch(NULL, "SM4-CTR", NULL);
    int len = 0;
    assert_true(EVP_DecryptInit_ex2(c, sm4, enc, blob + 1, NULL));
    assert_true(EVP_DecryptUpdate(c, pt, &len, blob + 17, (int)(bn - 49)));
    assert_int_equal(len, 9);
    assert_memory_equal(pt, "secret id", 9);
    EVP_CIPHER_free(sm4);
    EVP_CIPHER_CTX_free(c);
    jk_keys_free(k);
}

/* ---- blind index ---- */

static void bidx(const jk_keys *k, const char *domain, const char *v, unsigned char *out)
{
    assert_int_equal(jk_crypto_blind_index(k, domain, v, strlen(v), out), JK_OK);
}

static void test_blind_index(void **state)
{
    (void)state;
    static const char sys[] = "urn:oid:2.16.156.10011.1.5";
    jk_keys *k = new_keys(), *other = new_keys();
    unsigned char a[32], b[32];
    bidx(k, sys, "11010519491231002X", a);
    /* deterministic, and the same number however it was typed */
    static const char *const same[] = {
        "11010519491231002X",
        "11010519491231002x",
        "110105 19491231 002X",
        "110105-19491231-002x",
        " 11010519491231002X\t",
        "\xef\xbc\x91\xef\xbc\x91\xef\xbc\x90\xef\xbc\x91\xef\xbc\x90\xef\xbc\x95"
        "19491231002\xef\xbd\x98", /* full-width digits and a full-width x */
        "110105\xe3\x80\x80"
        "19491231002X", /* an ideographic space */
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        bidx(k, sys, same[i], b);
        assert_memory_equal(a, b, 32);
    }
    /* another number, another system, other keys: another index */
    bidx(k, sys, "110105194912310021", b);
    assert_memory_not_equal(a, b, 32);
    bidx(k, "urn:oid:2.16.156.10011.1.13", "11010519491231002X", b);
    assert_memory_not_equal(a, b, 32);
    bidx(other, sys, "11010519491231002X", b);
    assert_memory_not_equal(a, b, 32);
    /* nothing to index, or too much */
    assert_int_equal(jk_crypto_blind_index(k, sys, " - ", 3, b), JK_EINVAL);
    char big[JK_BLIND_MAX_VALUE + 2];
    memset(big, '1', sizeof big);
    assert_int_equal(jk_crypto_blind_index(k, sys, big, sizeof big, b), JK_ETOOBIG);
    assert_int_equal(jk_crypto_blind_index(k, sys, big, JK_BLIND_MAX_VALUE, b), JK_OK);
    jk_keys_free(k);
    jk_keys_free(other);
}

/* ---- SM2 ---- */

/* Verifies with OpenSSL alone: 1 valid, 0 not. */
static int openssl_verify(const char *pem, const char *id, const char *msg,
                          const unsigned char *sig, size_t n)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    BIO_free(bio);
    assert_non_null(pkey);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_true(EVP_DigestVerifyInit_ex(ctx, &pctx, "SM3", NULL, NULL, pkey, NULL));
    assert_true(EVP_PKEY_CTX_set1_id(pctx, id, strlen(id)) > 0);
    int r = EVP_DigestVerify(ctx, sig, n, (const unsigned char *)msg, strlen(msg));
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return r == 1;
}

static void test_sm2_sign_verify(void **state)
{
    (void)state;
    jk_sm2 *key = NULL, *other = NULL, *pub = NULL;
    assert_int_equal(jk_sm2_generate(&key), JK_OK);
    assert_int_equal(jk_sm2_generate(&other), JK_OK);
    static const char msg[] = "prescription 42: amoxicillin 0.5 g tid x 5 days";
    unsigned char sig[JK_SM2_SIG_MAX], bad[JK_SM2_SIG_MAX];
    size_t n = 0;
    assert_int_equal(jk_sm2_sign(key, msg, sizeof msg - 1, sig, sizeof sig, &n), JK_OK);
    assert_true(n > 60 && n <= 72);
    assert_int_equal(jk_sm2_verify(key, msg, sizeof msg - 1, sig, n), JK_OK);
    /* modified data, modified signature, another key */
    assert_int_equal(jk_sm2_verify(key, "Prescription", 12, sig, n), JK_EINVAL);
    char msg2[sizeof msg];
    memcpy(msg2, msg, sizeof msg);
    msg2[14] ^= 1;
    assert_int_equal(jk_sm2_verify(key, msg2, sizeof msg - 1, sig, n), JK_EINVAL);
    for (size_t i = 0; i < n; i++) {
        memcpy(bad, sig, n);
        bad[i] ^= 0x10;
        assert_int_equal(jk_sm2_verify(key, msg, sizeof msg - 1, bad, n), JK_EINVAL);
    }
    assert_int_equal(jk_sm2_verify(key, msg, sizeof msg - 1, sig, n - 1), JK_EINVAL);
    assert_int_equal(jk_sm2_verify(other, msg, sizeof msg - 1, sig, n), JK_EINVAL);
    /* the public key alone verifies, and cannot sign */
    char pem[JK_SM2_PEM_MAX];
    assert_int_equal(jk_sm2_public_pem(key, pem, sizeof pem), JK_OK);
    assert_non_null(strstr(pem, "-----BEGIN PUBLIC KEY-----"));
    assert_int_equal(jk_sm2_from_pem(pem, strlen(pem), &pub), JK_OK);
    assert_false(jk_sm2_is_private(pub));
    assert_int_equal(jk_sm2_verify(pub, msg, sizeof msg - 1, sig, n), JK_OK);
    assert_int_equal(jk_sm2_sign(pub, msg, 3, bad, sizeof bad, &n), JK_EINVAL);
    assert_int_equal(jk_sm2_from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n", 31, &other), JK_EINVAL);
    jk_sm2_free(pub);

    /* interoperability: plain OpenSSL, with the GM/T 0009 default ID, accepts our signature
     * and rejects it under another ID */
    assert_int_equal(jk_sm2_sign(key, msg, sizeof msg - 1, sig, sizeof sig, &n), JK_OK);
    assert_int_equal(openssl_verify(pem, "1234567812345678", msg, sig, n), 1);
    assert_int_equal(openssl_verify(pem, "8765432112345678", msg, sig, n), 0);
    jk_sm2_free(key);
    jk_sm2_free(other);
}

/* ---- the key file ---- */

struct keydir {
    char dir[64];
    char path[128];
};

static int keydir_setup(void **state)
{
    struct keydir *d = calloc(1, sizeof *d);
    snprintf(d->dir, sizeof d->dir, "/tmp/jk-test-keys.XXXXXX");
    if (!mkdtemp(d->dir)) return -1;
    snprintf(d->path, sizeof d->path, "%s/jiankang.keys", d->dir);
    *state = d;
    return 0;
}

static int keydir_teardown(void **state)
{
    struct keydir *d = *state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d->dir);
    int r = system(cmd);
    free(d);
    return r;
}

static mode_t file_mode(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

/* Whether two key sets are the same keys: one opens what the other sealed, same public key,
 * same blind index. */
static void assert_same_keys(const jk_keys *a, const jk_keys *b)
{
    unsigned char blob[100], out[100], ia[32], ib[32];
    size_t bn = 0, got = 0;
    assert_int_equal(jk_crypto_seal(a, NULL, 0, "x1", 2, blob, sizeof blob, &bn), JK_OK);
    assert_int_equal(jk_crypto_open(b, NULL, 0, blob, bn, out, sizeof out, &got), JK_OK);
    bidx(a, "s", "123", ia);
    bidx(b, "s", "123", ib);
    assert_memory_equal(ia, ib, 32);
    char pa[JK_SM2_PEM_MAX], pb[JK_SM2_PEM_MAX];
    assert_int_equal(jk_sm2_public_pem(jk_keys_sm2(a), pa, sizeof pa), JK_OK);
    assert_int_equal(jk_sm2_public_pem(jk_keys_sm2(b), pb, sizeof pb), JK_OK);
    assert_string_equal(pa, pb);
}

static void test_keyfile_created_private(void **state)
{
    struct keydir *d = *state;
    static const mode_t masks[] = {0, 022, 077, 0777};
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
        char err[600];
        jk_keys *k = NULL, *k2 = NULL;
        unlink(d->path);
        mode_t old = umask(masks[i]);
        jk_rc rc = jk_keys_load_or_create(d->path, &k, err, sizeof err);
        umask(old);
        assert_int_equal(rc, JK_OK);
        assert_int_equal(file_mode(d->path), 0600); /* whatever the umask */
        /* loaded again: the same keys */
        assert_int_equal(jk_keys_load_or_create(d->path, &k2, err, sizeof err), JK_OK);
        assert_same_keys(k, k2);
        jk_keys_free(k2);
        /* never replaced */
        assert_int_equal(jk_keys_create(d->path, &k2, err, sizeof err), JK_ECONFLICT);
        assert_non_null(strstr(err, "already exists"));
        assert_int_equal(jk_keys_load(d->path, &k2, err, sizeof err), JK_OK);
        assert_same_keys(k, k2);
        jk_keys_free(k2);
        jk_keys_free(k);
    }
    /* no temporary file is left behind */
    char cmd[200];
    snprintf(cmd, sizeof cmd, "test $(ls -A '%s' | wc -l) -eq 1", d->dir);
    assert_int_equal(system(cmd), 0);
}

static void test_keyfile_refused_when_readable(void **state)
{
    struct keydir *d = *state;
    char err[600];
    jk_keys *k = NULL;
    assert_int_equal(jk_keys_create(d->path, &k, err, sizeof err), JK_OK);
    jk_keys_free(k);
    static const mode_t bad[] = {0644, 0640, 0604, 0660, 0602, 0620};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(chmod(d->path, bad[i]), 0);
        k = NULL;
        assert_int_equal(jk_keys_load(d->path, &k, err, sizeof err), JK_EFORBIDDEN);
        assert_null(k);
        assert_non_null(strstr(err, "chmod 600"));
        assert_non_null(strstr(err, d->path));
        assert_int_equal(jk_keys_load_or_create(d->path, &k, err, sizeof err), JK_EFORBIDDEN);
    }
    assert_int_equal(chmod(d->path, 0400), 0); /* read-only for the owner is fine */
    assert_int_equal(jk_keys_load(d->path, &k, err, sizeof err), JK_OK);
    jk_keys_free(k);
}

static void test_keyfile_bad_files(void **state)
{
    struct keydir *d = *state;
    char err[600];
    jk_keys *k = NULL;
    assert_int_equal(jk_keys_load(d->path, &k, err, sizeof err), JK_ENOTFOUND);
    assert_non_null(strstr(err, "jiankang keys init"));
    assert_int_equal(jk_keys_create(d->path, &k, err, sizeof err), JK_OK);
    jk_keys_free(k);
    /* read it, then write variants of it */
    char text[JK_KEYFILE_MAX], copy[JK_KEYFILE_MAX + 10];
    FILE *f = fopen(d->path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    char *master = strstr(text, "master-secret ");
    assert_non_null(master);
    char master_hex[65];
    memcpy(master_hex, master + 14, 64);
    master_hex[64] = 0;
    struct {
        const char *find, *replace;
    } edits[] = {
        {"jiankang-keys 1", "jiankang-keys 2"}, /* unknown version */
        {"master-secret ", "master-secret 0"},  /* odd hex */
        {"master-secret ", "master-secrit "},   /* unknown line */
        {"-----BEGIN PRIVATE KEY-----", "-----BEGIN PRIVATE KEX-----"},
    };
    char bad[200];
    snprintf(bad, sizeof bad, "%s/bad.keys", d->dir);
    for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
        char *at = strstr(text, edits[i].find);
        assert_non_null(at);
        size_t pre = (size_t)(at - text);
        int len = snprintf(copy, sizeof copy, "%.*s%s%s", (int)pre, text, edits[i].replace,
                           at + strlen(edits[i].find));
        int fd = open(bad, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, copy, (size_t)len), len);
        close(fd);
        assert_int_equal(jk_keys_load(bad, &k, err, sizeof err), JK_EINVAL);
        assert_non_null(strstr(err, "not a valid key file"));
        assert_null(strstr(err, master_hex)); /* never a secret in a message */
    }
    /* a directory is not a key file, nor is a file in a missing directory created */
    assert_int_equal(jk_keys_load(d->dir, &k, err, sizeof err), JK_EINVAL);
    snprintf(bad, sizeof bad, "%s/missing/x.keys", d->dir);
    assert_int_not_equal(jk_keys_load_or_create(bad, &k, err, sizeof err), JK_OK);
    unlink(bad);
}

/* Many processes or threads starting at once on a fresh installation end up with one key
 * file and the same keys. */
struct race {
    const char *path;
    jk_keys *keys;
    jk_rc rc;
};

static void *race_main(void *arg)
{
    struct race *r = arg;
    char err[600];
    r->rc = jk_keys_load_or_create(r->path, &r->keys, err, sizeof err);
    return NULL;
}

static void test_keyfile_first_start_race(void **state)
{
    struct keydir *d = *state;
    pthread_t th[8];
    struct race r[8];
    for (int i = 0; i < 8; i++) {
        r[i] = (struct race){d->path, NULL, JK_EINTERNAL};
        assert_int_equal(pthread_create(&th[i], NULL, race_main, &r[i]), 0);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(r[i].rc, JK_OK);
        assert_same_keys(r[0].keys, r[i].keys);
    }
    for (int i = 0; i < 8; i++)
        jk_keys_free(r[i].keys);
    assert_int_equal(file_mode(d->path), 0600);
}

/* ---- threads ---- */

struct work {
    const jk_keys *keys;
    int n_ok;
};

static void *work_main(void *arg)
{
    struct work *w = arg;
    const jk_sm2 *key = jk_keys_sm2(w->keys);
    for (int i = 0; i < 100; i++) {
        char msg[32];
        unsigned char blob[100], out[100], sig[JK_SM2_SIG_MAX], ix[32];
        size_t bn = 0, got = 0, sn = 0;
        int n = snprintf(msg, sizeof msg, "value %d", i);
        if (jk_crypto_seal(w->keys, NULL, 0, msg, (size_t)n, blob, sizeof blob, &bn) ||
            jk_crypto_open(w->keys, NULL, 0, blob, bn, out, sizeof out, &got) || got != (size_t)n ||
            memcmp(out, msg, got) || jk_sm2_sign(key, msg, (size_t)n, sig, sizeof sig, &sn) ||
            jk_sm2_verify(key, msg, (size_t)n, sig, sn) ||
            jk_crypto_blind_index(w->keys, "s", msg, (size_t)n, ix))
            continue;
        w->n_ok++;
    }
    return NULL;
}

static void test_shared_keys_across_threads(void **state)
{
    (void)state;
    jk_keys *k = new_keys();
    pthread_t th[8];
    struct work w[8];
    for (int i = 0; i < 8; i++) {
        w[i] = (struct work){k, 0};
        assert_int_equal(pthread_create(&th[i], NULL, work_main, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].n_ok, 100);
    }
    jk_keys_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sm3_known_answer),
        cmocka_unit_test(test_hmac_sm3_known_answer),
        cmocka_unit_test(test_hex_and_compare),
        cmocka_unit_test(test_seal_round_trip),
        cmocka_unit_test(test_seal_refuses_tampering),
        cmocka_unit_test(test_seal_format_is_documented),
        cmocka_unit_test(test_blind_index),
        cmocka_unit_test(test_sm2_sign_verify),
        cmocka_unit_test_setup_teardown(test_keyfile_created_private, keydir_setup,
                                        keydir_teardown),
        cmocka_unit_test_setup_teardown(test_keyfile_refused_when_readable, keydir_setup,
                                        keydir_teardown),
        cmocka_unit_test_setup_teardown(test_keyfile_bad_files, keydir_setup, keydir_teardown),
        cmocka_unit_test_setup_teardown(test_keyfile_first_start_race, keydir_setup,
                                        keydir_teardown),
        cmocka_unit_test(test_shared_keys_across_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
