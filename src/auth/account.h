/* account.h - accounts of people and of institution systems: the fixed table of roles, the
 * security rules (rules/security.json: password policy, lockout, token lifetime, rate
 * limits), Argon2id password hashing, the login decision, and the account table. */
#ifndef JK_ACCOUNT_H
#define JK_ACCOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "core/rc.h"
#include "store/store.h"

#define JK_USERNAME_MAX 64   /* bytes of a user name or client id, without the NUL */
#define JK_REF_MAX      130  /* "PractitionerRole/" + a 64-character id, without the NUL */
#define JK_PWHASH_MAX   128  /* an Argon2id hash string with its NUL (crypto_pwhash_STRBYTES) */
#define JK_PASSWORD_MAX 256  /* longest password accepted, in bytes */
#define JK_SCOPES_MAX   255  /* the scopes of a role or token, space separated */
#define JK_RULES_ERR    1024 /* a good size for the error text of jk_security_rules_load */

/* ---- roles ---- */

enum jk_role {
    JK_ROLE_RESIDENT,
    JK_ROLE_DOCTOR,
    JK_ROLE_NURSE,
    JK_ROLE_PHARMACIST,
    JK_ROLE_INSTITUTION_ADMIN,
    JK_ROLE_PUBLIC_HEALTH,
    JK_ROLE_REGULATOR,
    JK_ROLE_PLATFORM_ADMIN,
    JK_ROLE_SYSTEM, /* an institution's system, logging in with client_credentials */
    JK_N_ROLES
};

struct jk_role_info {
    enum jk_role role;
    const char *name;       /* "institution-admin": in the database, the CLI and /auth/me */
    const char *label_zh;   /* "机构管理员" */
    int is_person;          /* logs in with the password grant; else client_credentials */
    int is_org_required;    /* the account must name its Organization */
    const char *link_types; /* resource types it may link to, space separated ("Patient") */
    const char *scopes;     /* the widest SMART v2 scopes a token of this role may carry */
};

/* The entry of role (which must be < JK_N_ROLES). Static. */
const struct jk_role_info *jk_role_info(enum jk_role role);

/* The entry named name, or NULL when there is no such role. Static. */
const struct jk_role_info *jk_role_by_name(const char *name);

/* ---- the security rules ---- */

/* Character classes a password may be asked to contain. */
enum {
    JK_PWCLASS_LOWER = 1,
    JK_PWCLASS_UPPER = 2,
    JK_PWCLASS_DIGIT = 4,
    JK_PWCLASS_SYMBOL = 8 /* anything else: punctuation, space, non-ASCII */
};

struct jk_rate_rule {
    int limit;    /* requests allowed in a burst ... */
    int window_s; /* ... and refilled evenly over this many seconds */
};

#define JK_MAX_RELATIONSHIPS 8

/* A kind of resource that makes a treatment relationship between the practitioners (or
 * organisations) its actor parameter names and the patient its patient parameter names,
 * while its status parameter has one of statuses (access.treatment_relationships). */
struct jk_relationship_rule {
    char type[64];      /* "Encounter" */
    char actor[64];     /* a reference search parameter of type: "participant" */
    char patient[64];   /* a reference search parameter of type: "patient" */
    char status[64];    /* a token search parameter of type: "status" */
    char statuses[256]; /* the codes that count, space separated: "arrived in-progress" */
};

/* The rules of rules/security.json. Each field is one rule; its stable code is in the
 * comment, quoted as "security.<code>" in refusals. */
struct jk_security_rules {
    char path[512];                       /* the file they were read from */
    int password_min_length;              /* password.min_length, in characters */
    unsigned password_classes;            /* password.required_classes: JK_PWCLASS_* bits */
    int password_max_age_days;            /* password.max_age_days; 0: never expires */
    unsigned long long pwhash_opslimit;   /* password.hash_cost: Argon2id passes ... */
    size_t pwhash_memlimit;               /* ... and memory in bytes */
    int lockout_threshold;                /* login.lockout_threshold: consecutive failures */
    int lockout_minutes;                  /* login.lockout_minutes */
    unsigned second_factor_roles;         /* login.second_factor_roles: bit 1u << role */
    int token_lifetime_minutes;           /* token.lifetime_minutes */
    struct jk_rate_rule rate_login_addr;  /* rate.login.per_address */
    struct jk_rate_rule rate_login_acct;  /* rate.login.per_account */
    struct jk_rate_rule rate_costly_addr; /* rate.expensive.per_address */
    struct jk_rate_rule rate_costly_acct; /* rate.expensive.per_account */
    /* who may see what (docs/internals/authz.md) */
    struct jk_relationship_rule rels[JK_MAX_RELATIONSHIPS]; /* access.treatment_relationships */
    int n_rels;
    char guardian_codes[256];      /* access.guardian_relationships: codes, space separated */
    unsigned break_glass_roles;    /* access.break_glass_roles: bit 1u << role */
    int break_glass_min_reason;    /* access.break_glass_min_reason: characters */
    char public_health_types[512]; /* access.public_health_types: types, space separated */
    unsigned show_identity_roles;  /* access.show_identity_roles: see identity numbers whole */
    unsigned show_phone_roles;     /* access.show_phone_roles: see phone numbers whole */
    int context_cache_seconds;     /* access.context_cache_seconds */
    /* the person index (docs/internals/mpi.md) */
    unsigned match_roles;            /* access.match_roles: may call Patient/$match */
    unsigned match_candidates_roles; /* access.match_candidates_roles: see every candidate */
    unsigned mpi_steward_roles;      /* access.mpi_steward_roles: review, link, merge */
};

/* The path of the rules file: $JIANKANG_SECURITY_RULES when set, else rules/security.json
 * (relative to the working directory). Static or the environment's. */
const char *jk_security_rules_path(void);

/* Reads and checks the whole rules file at path into *out. Every rule must be present, with
 * a value in range, a non-empty "source" and an "effective" date (YYYY-MM-DD); unknown keys
 * are refused. On error returns JK_EINVAL (JK_ENOTFOUND when the file cannot be read) with
 * "FILE: /json/pointer/inside: what is wrong" in err. */
jk_rc jk_security_rules_load(const char *path, struct jk_security_rules *out, char *err,
                             size_t errlen);

/* Whether accounts of role must give a TOTP code when they log in. */
int jk_security_needs_totp(const struct jk_security_rules *r, enum jk_role role);

/* ---- passwords ---- */

/* Checks pw against the policy. JK_ERULE with a message that starts with the rule's code
 * ("security.password.min_length: ...") when it breaks one. username may be NULL; a
 * password containing it is refused. */
jk_rc jk_password_check(const struct jk_security_rules *r, const char *username, const char *pw,
                        char *msg, size_t msglen);

/* Hashes pw with Argon2id at the rules' cost into out (JK_PWHASH_MAX bytes): a
 * self-describing "$argon2id$..." string. Slow on purpose; never call it holding a lock.
 * JK_ENOMEM when the memory cost cannot be had. */
jk_rc jk_password_hash(const struct jk_security_rules *r, const char *pw, char *out, size_t outlen);

/* 1 when pw matches hash (in constant time for a given hash), else 0. Slow on purpose. */
int jk_password_verify(const char *hash, const char *pw);

/* 1 when hash was made at another cost than the rules' (it should be remade at login). */
int jk_password_needs_rehash(const struct jk_security_rules *r, const char *hash);

/* A random password of 20 characters that meets the policy, into out (at least 21 bytes). */
jk_rc jk_password_generate(const struct jk_security_rules *r, const char *username, char *out,
                           size_t outlen);

/* ---- accounts ---- */

struct jk_account {
    int64_t id;
    char username[JK_USERNAME_MAX + 1]; /* lower case; the client_id of a system */
    enum jk_role role;
    char org[JK_REF_MAX + 1];    /* "Organization/hosp-fz-1", or "" */
    char link[JK_REF_MAX + 1];   /* "Practitioner/x", "PractitionerRole/x", "Patient/x" or "" */
    char pw_hash[JK_PWHASH_MAX]; /* Argon2id hash of the password or client secret */
    char totp_secret[65];        /* base32, "" when no second factor is enrolled */
    int64_t totp_last_step;      /* the last TOTP step used: no code works twice */
    int failed_count;            /* consecutive failed logins */
    int64_t locked_until_ms;     /* no login before this (0: not locked) */
    int64_t password_set_ms;     /* for password.max_age_days */
    int64_t created_ms;
    int is_disabled; /* locked by an administrator until unlocked */
};

/* Normalises a user name or client id into out (JK_USERNAME_MAX + 1 bytes): lower case,
 * 1 to 64 of a-z 0-9 . _ - @, starting with a letter or digit. JK_EINVAL otherwise. */
jk_rc jk_account_norm_username(const char *in, char *out, size_t outlen);

/* Checks the fields of a new account: its user name, that org is "Organization/<id>" (and
 * present when the role requires it), and that link is a reference of a type the role may
 * link to. JK_EINVAL with a message in msg. */
jk_rc jk_account_check(const struct jk_account *a, char *msg, size_t msglen);

/* Inserts a (id is ignored and set on success). Runs inside a transaction. JK_ECONFLICT
 * when the user name is taken. */
jk_rc jk_account_insert(jk_conn *c, struct jk_account *a);

/* Reads the account named username (already normalised) into *out. JK_ENOTFOUND when
 * there is none. */
jk_rc jk_account_find(jk_conn *c, const char *username, struct jk_account *out);

/* Reads the first account linked to link ("Patient/x") into *out. JK_ENOTFOUND when none is. */
jk_rc jk_account_find_link(jk_conn *c, const char *link, struct jk_account *out);

/* Reads the account with id into *out. JK_ENOTFOUND when there is none. */
jk_rc jk_account_get(jk_conn *c, int64_t id, struct jk_account *out);

/* Sets a new password hash, its time, and clears failures and the lockout. */
jk_rc jk_account_set_password(jk_conn *c, int64_t id, const char *pw_hash, int64_t now_ms);

/* Sets the TOTP secret (base32, or "" to remove it) and forgets the last step used. */
jk_rc jk_account_set_totp(jk_conn *c, int64_t id, const char *secret_b32);

/* Locks (is_disabled 1) or unlocks (0) an account; unlocking also clears failures and any
 * lockout. Locking does not revoke tokens: call jk_token_revoke_account too. */
jk_rc jk_account_set_disabled(jk_conn *c, int64_t id, int is_disabled);

/* Counts one failed login at now_ms; when the count reaches the threshold the account is
 * locked for the lockout time and the count starts again. *is_locked_now (may be NULL) tells
 * whether this failure locked it. Atomic under concurrent failures. */
jk_rc jk_account_note_failure(jk_conn *c, int64_t id, const struct jk_security_rules *r,
                              int64_t now_ms, int *is_locked_now);

/* Records a successful login: clears the failure count and, when totp_step > 0, stores it as
 * the last step used. JK_EUNAUTH, with nothing written, when that step (or a later one) was
 * used already: the same code sent twice at once. */
jk_rc jk_account_note_success(jk_conn *c, int64_t id, int64_t totp_step);

/* Calls fn for every account in user name order, until fn returns non-zero. */
jk_rc jk_account_list(jk_conn *c, int (*fn)(void *arg, const struct jk_account *a), void *arg);

/* ---- the login decision ---- */

enum jk_login_outcome {
    JK_LOGIN_OK,
    JK_LOGIN_BAD_SECRET,        /* wrong password or client secret: counts toward lockout */
    JK_LOGIN_BAD_TOTP,          /* wrong or reused code: counts toward lockout */
    JK_LOGIN_TOTP_REQUIRED,     /* right password but no code given: not counted */
    JK_LOGIN_TOTP_NOT_ENROLLED, /* the role needs a second factor the account lacks */
    JK_LOGIN_LOCKED,            /* too many failures: try again after locked_until_ms */
    JK_LOGIN_DISABLED,          /* locked by an administrator */
    JK_LOGIN_EXPIRED            /* the password is older than password.max_age_days */
};

/* Decides a login of a with secret (password or client secret) and totp (NULL or "" when
 * none was given) at now_ms, without writing anything. The secret is checked before the
 * expiry and the second factor, and not at all when the account is disabled or locked. On
 * JK_LOGIN_OK with a second factor, *totp_step is the step to record (else 0). */
enum jk_login_outcome jk_account_authenticate(const struct jk_security_rules *r,
                                              const struct jk_account *a, const char *secret,
                                              const char *totp, int64_t now_ms, int64_t *totp_step);

/* A short stable name of o ("bad_secret", "locked", ...), for the audit trail and logs. */
const char *jk_login_outcome_name(enum jk_login_outcome o);

/* ---- the demo ---- */

struct jk_demo_account {
    const char *username, *password, *role, *org, *link;
    const char *totp_secret; /* base32, or NULL when the role needs no second factor */
    const char *who;         /* who it is in the demo region, in words */
};

/* Creates one account per role, linked to the demo region of demo/region.json, with the
 * known passwords of the returned table; accounts that exist already get their known
 * password, second factor and role back and are unlocked, so running it again is harmless.
 * Sets *out to the static table and *n to its length. Blocks on the store (jk_store_tx): for
 * the CLI, not for request threads. JK_ERULE when a demo password breaks the rules. */
jk_rc jk_account_create_demo(jk_store *db, const struct jk_security_rules *r, int64_t now_ms,
                             const struct jk_demo_account **out, size_t *n);

#endif
