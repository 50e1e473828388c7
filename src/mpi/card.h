/* card.h - the electronic health card (电子健康卡): one active card per golden person, numbers
 * bound to it (hospital cards, social security, medical insurance), dynamic QR codes signed
 * with the platform's SM2 key, their verification with replay protection, and the log of
 * every use. See docs/internals/mpi.md, "Electronic health card". */
#ifndef JK_MPI_CARD_H
#define JK_MPI_CARD_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/crypto.h"
#include "core/rc.h"
#include "store/store.h"

#define JK_CARD_NUMBER_LEN 64  /* a card number: 64 upper-case hex digits (32 random bytes) */
#define JK_CARD_ID_MAX     65  /* a card id (a FHIR id) and its NUL */
#define JK_CARD_NONCE_LEN  22  /* a code's nonce: 16 random bytes in base64url */
#define JK_CARD_CODE_MAX   256 /* the longest code text, with its NUL */
#define JK_CARD_MAC_HEX    (2 * JK_SM3_BYTES)

/* What a verification found. The names (jk_card_result_name) are the stable refusal codes. */
enum jk_card_result {
    JK_CARD_OK,
    JK_CARD_MALFORMED, /* not a code of this format */
    JK_CARD_SIGNATURE, /* the platform did not sign it (changed, forged, other keys) */
    JK_CARD_EXPIRED,   /* signed, but past its expiry */
    JK_CARD_REVOKED,   /* the card was revoked (or is no longer known) */
    JK_CARD_REPLAYED   /* this code was already accepted once */
};

/* "accepted", "malformed", "signature", "expired", "revoked", "replayed". Static. */
const char *jk_card_result_name(enum jk_card_result r);

/* ---- rules (rules/card.json) ---- */

struct jk_card_rules {
    int ttl_s;             /* card.code.ttl_seconds: how long a code is valid */
    int refresh_margin_s;  /* card.code.refresh_margin_seconds: fetch the next one this early */
    int keep_s;            /* card.code.keep_seconds: nonces kept after expiry, then pruned */
    unsigned manage_roles; /* card.manage_roles: bit 1u << enum jk_role */
    unsigned verify_roles; /* card.verify_roles */
};

/* The rules file: $JIANKANG_CARD_RULES, else "rules/card.json". Static or the environment's. */
const char *jk_card_rules_path(void);

/* Reads and checks the whole rules file at path (NULL: jk_card_rules_path()). JK_EINVAL with
 * "FILE: /pointer: what is wrong" in err; JK_ENOTFOUND when it cannot be read. */
jk_rc jk_card_rules_load(const char *path, struct jk_card_rules *out, char *err, size_t errlen);

/* ---- codes: pure functions, the clock passed in ---- */

/* The keys codes are made and checked with: the platform SM2 key (signs every code) and an
 * HMAC-SM3 key derived from the master secret (the fingerprint of a code as issued, which lets
 * the platform recognise its own codes without an SM2 verification). */
struct jk_card_keys {
    const jk_sm2 *sm2; /* not owned */
    unsigned char mac_key[JK_SM3_BYTES];
};

/* Fills ck from the platform keys (which must outlive it). JK_OK or JK_EINTERNAL. */
jk_rc jk_card_keys_init(struct jk_card_keys *ck, const jk_keys *keys);

/* A new random card number: JK_CARD_NUMBER_LEN upper-case hex digits and a NUL. */
jk_rc jk_card_new_number(char out[JK_CARD_NUMBER_LEN + 1]);

/* One code, as parsed. The text is
 *     JKHC1.<card number>.<expiry, Unix seconds>.<nonce>.<SM2 signature, DER, base64url>
 * and the signature covers everything before its dot. */
struct jk_card_code {
    char number[JK_CARD_NUMBER_LEN + 1];
    int64_t expires_s;
    char nonce[JK_CARD_NONCE_LEN + 1];
    size_t signed_len; /* the signed prefix of the text */
    unsigned char sig[JK_SM2_SIG_MAX];
    size_t sig_len;
};

/* Makes a code for card number, valid from now_ms for ttl_s seconds, into out (cap bytes,
 * at least JK_CARD_CODE_MAX) and, when code is not NULL, its parts. JK_EINVAL for a number that
 * is not a card number; JK_EINTERNAL when signing fails. */
jk_rc jk_card_code_make(const struct jk_card_keys *k, const char *number, int64_t now_ms, int ttl_s,
                        char *out, size_t cap, struct jk_card_code *code);

/* Parses the text s[0..n) strictly: JK_CARD_OK, or JK_CARD_MALFORMED. */
enum jk_card_result jk_card_code_parse(const char *s, size_t n, struct jk_card_code *out);

/* Checks a parsed code s[0..n): its SM2 signature (JK_CARD_SIGNATURE), then its expiry at
 * now_ms (JK_CARD_EXPIRED, also for an expiry further away than max_ttl_s, which no code of
 * this platform has). is_known_mac: the caller found the code's fingerprint (jk_card_code_mac)
 * among the codes issued, so the text is exactly one the platform signed and the SM2
 * verification is skipped. */
enum jk_card_result jk_card_code_check(const struct jk_card_keys *k, const char *s,
                                       const struct jk_card_code *c, int is_known_mac,
                                       int64_t now_ms, int max_ttl_s);

/* The fingerprint of the code text s[0..n): HMAC-SM3 under ck's key, as hex and a NUL. */
jk_rc jk_card_code_mac(const struct jk_card_keys *k, const char *s, size_t n,
                       char hex[JK_CARD_MAC_HEX + 1]);

/* Draws text as a QR code (libqrencode, error correction M, 8-bit mode) in SVG: one path of
 * unit squares with a 4-module quiet zone, appended to out. JK_EINVAL when it does not fit in
 * a QR code, JK_ENOMEM. */
jk_rc jk_card_qr_svg(const char *text, struct jk_buf *out);

/* ---- the database (migration 8) ---- */

struct jk_card {
    char id[JK_CARD_ID_MAX];
    char number[JK_CARD_NUMBER_LEN + 1];
    char person[JK_CARD_ID_MAX];
    char patient[JK_CARD_ID_MAX]; /* the Patient it was issued for */
    char status[12];              /* "active" or "revoked" */
    int64_t issued_ms, revoked_ms;
    char reason[256]; /* why it was revoked */
};

/* Issues a new card for Patient patient_id (its golden person from jk_mpi_person_of) at
 * now_ms, inside a transaction on c. JK_ECONFLICT when the person has an active card. */
jk_rc jk_card_issue(jk_conn *c, const char *patient_id, int64_t now_ms, struct jk_card *out);

/* The card with id, or with number. JK_ENOTFOUND. */
jk_rc jk_card_get(jk_conn *c, const char *id, struct jk_card *out);
jk_rc jk_card_by_number(jk_conn *c, const char *number, struct jk_card *out);

/* Calls fn for every card of person, newest first. A non-zero rc from fn stops and is
 * returned. */
typedef jk_rc (*jk_card_fn)(void *arg, const struct jk_card *card);
jk_rc jk_card_list(jk_conn *c, const char *person, jk_card_fn fn, void *arg);

/* Revokes card id with reason at now_ms (inside a transaction). JK_ENOTFOUND; JK_EGONE when
 * it is revoked already. */
jk_rc jk_card_revoke(jk_conn *c, const char *id, const char *reason, int64_t now_ms);

/* One number bound to a card. */
struct jk_card_binding {
    const char *kind;   /* "hospital-card", "social-security", "medical-insurance" */
    const char *org;    /* the hospital of a hospital card ("Organization/x"), else "" */
    const char *code;   /* its blind index code, "bi:<hex>" */
    const char *marker; /* the number sealed (auth/protect.h) */
};

/* Whether kind is one of the binding kinds above. */
int jk_card_binding_kind_ok(const char *kind);

/* Binds b to card (inside a transaction): a number bound to another card of the same person
 * (a revoked one) moves to this card. JK_ECONFLICT when another person's card has it. */
jk_rc jk_card_bind(jk_conn *c, const struct jk_card *card, const struct jk_card_binding *b,
                   int64_t now_ms);

/* Calls fn for every binding of the cards of card's person; strings live until fn returns. */
typedef jk_rc (*jk_card_binding_fn)(void *arg, const struct jk_card_binding *b);
jk_rc jk_card_bindings(jk_conn *c, const char *card_id, jk_card_binding_fn fn, void *arg);

/* Records a code issued for card_id (its nonce, fingerprint and expiry), inside a
 * transaction; prunes nonces past card.code.keep_seconds now and then. */
jk_rc jk_card_code_record(jk_conn *c, const char *card_id, const struct jk_card_code *code,
                          const char mac[JK_CARD_MAC_HEX + 1], int64_t now_ms, int keep_s);

/* Whether code (its expiry and nonce) was issued with fingerprint mac (a read, outside a
 * transaction): *is_known 1 when so. */
jk_rc jk_card_code_known(jk_conn *c, const struct jk_card_code *code,
                         const char mac[JK_CARD_MAC_HEX + 1], int *is_known);

/* Uses the nonce of a checked code once (inside a transaction): *result JK_CARD_OK the first
 * time, JK_CARD_REPLAYED after; JK_CARD_REVOKED when card_id is no longer active. */
jk_rc jk_card_code_use(jk_conn *c, const char *card_id, const struct jk_card_code *code,
                       const char mac[JK_CARD_MAC_HEX + 1], int64_t now_ms,
                       enum jk_card_result *result);

/* One verification of a card. */
struct jk_card_use {
    int64_t at_ms;
    const char *org;    /* the verifier's organisation ("Organization/x"), or "" */
    const char *role;   /* the verifier's role ("nurse"), or "" */
    const char *result; /* jk_card_result_name */
};

/* Logs a use of card_id (NULL: a code naming no known card; not logged). */
jk_rc jk_card_use_log(jk_conn *c, const char *card_id, const struct jk_card_use *u);

/* Calls fn for the uses of card_id, newest first, at most limit. */
typedef jk_rc (*jk_card_use_fn)(void *arg, const struct jk_card_use *u);
jk_rc jk_card_uses(jk_conn *c, const char *card_id, int limit, jk_card_use_fn fn, void *arg);

#endif
