/* protect.h - identity and phone numbers protected at rest: sealed (SM4-CTR + HMAC-SM3) in the
 * stored resource, found through a keyed blind index (HMAC-SM3), masked in responses unless
 * the reader's role needs them. Which identifiers are identity numbers, and how values are
 * masked, comes from rules/identity.json. See docs/internals/protect.md. */
#ifndef JK_PROTECT_H
#define JK_PROTECT_H

#include <stddef.h>

#include "core/crypto.h"
#include "core/rc.h"

struct json_object;
struct jk_arena;
struct jk_diag;

#define JK_PROTECT_ERR      1024 /* a good size for the error text of jk_protect_init */
#define JK_PROTECT_CODE_LEN (3 + 2 * JK_BLIND_INDEX_BYTES) /* "bi:" and 64 hex digits */

/* What a response shows in clear (bits of jk_protect_view's show); the rest is masked. */
enum { JK_SHOW_IDENTITY = 1, JK_SHOW_PHONE = 2 };

/* The identity rules file: $JIANKANG_IDENTITY_RULES, else "rules/identity.json". Static. */
const char *jk_identity_rules_path(void);

/* Reads and checks the rules file at rules_path (NULL: jk_identity_rules_path()) and makes
 * keys (not owned; they must outlive every use) the keys of every call below. Call once at
 * start-up, before any write and before threads use the module; calling it again replaces
 * the rules and keys (tests). JK_EINVAL with "FILE: /json/pointer: what is wrong" in err for
 * a bad rules file, JK_ENOTFOUND when it cannot be read; the previous state stays then. */
jk_rc jk_protect_init(const jk_keys *keys, const char *rules_path, char *err, size_t errlen);

/* jk_protect_init with the key file at keys_path, loaded or created (the first start; mode
 * 0600, see docs/internals/crypto.md), and the rules at jk_identity_rules_path(). The module
 * keeps the keys until the process ends. For `serve`, `demo` and `import`. */
jk_rc jk_protect_start(const char *keys_path, char *err, size_t errlen);

/* Seals, in place, every identity number and phone number of res (any resource, with its
 * contained and nested resources): the value of every object shaped like an Identifier whose
 * system or type the rules list, and of every ContactPoint whose system the rules list (not
 * in the resource types the rules call public), becomes the marker string
 *   "jkenc:1:<kind>:<blind index hex>:<base64url of the sealed value>"
 * (kind "id" or "ph"). Refused with JK_EINVAL and an issue naming the element: any string
 * starting with "jkenc:" (markers are made here only; a client never sees one), a protected
 * value containing '*' (a masked value sent back), a value with no digit or letter, or longer
 * than JK_BLIND_MAX_VALUE bytes. JK_EINTERNAL before jk_protect_init. Issue messages never
 * hold the values. */
jk_rc jk_protect_seal(struct json_object *res, struct jk_diag *d);

/* Seals one number kept outside a resource (a number bound to a health card) into a marker
 * of kind "id" in a, its blind index made in domain (which commits the marker to it): stored
 * as it is, its index code from jk_protect_index_code, shown masked by jk_protect_view.
 * JK_EINVAL for an empty value or one past JK_BLIND_MAX_VALUE bytes, a value holding '*' (a
 * masked number sent back) or starting with "jkenc:"; JK_EINTERNAL before jk_protect_init. */
jk_rc jk_protect_seal_value(struct jk_arena *a, const char *domain, const char *value,
                            const char **marker);

/* Seals a secret kept outside any resource (a doctor's signing key) under the platform keys,
 * bound to context (the table and row it is stored in, which must be given again to open
 * it): base64 text in a. JK_EINTERNAL before jk_protect_init. */
jk_rc jk_protect_seal_secret(struct jk_arena *a, const char *context, const void *p, size_t n,
                             const char **out);

/* Opens what jk_protect_seal_secret made, into out (cap bytes; the caller wipes it after
 * use). JK_EINVAL when it was changed, sealed under other keys or another context;
 * JK_ETOOBIG when it does not fit; JK_EINTERNAL before jk_protect_init. */
jk_rc jk_protect_open_secret(struct jk_arena *a, const char *context, const char *sealed, void *out,
                             size_t cap, size_t *out_len);

/* Turns every marker in res back into its clear value, in place: a stored resource about to
 * be changed and sealed again (PATCH, $meta-add). JK_EINTERNAL, logged with the element but
 * not the value, when a marker does not open (changed in the database, or other keys). */
jk_rc jk_protect_unseal(struct json_object *res, struct jk_diag *d);

/* Rewrites every marker string in the JSON text body[0..len) (a resource, a Bundle, any
 * response): into its clear value when show has the bit of its kind, else into the masked
 * form of the rules (350102********123X, 138****5678), JSON-escaped. A marker that does not
 * open becomes "****" and is logged without its value. When body holds no marker, *out is
 * body itself (nothing copied); otherwise a NUL-terminated copy in a. Returns JK_OK, or
 * JK_ENOMEM. */
jk_rc jk_protect_view(struct jk_arena *a, const char *body, size_t len, unsigned show,
                      const char **out, size_t *out_len);

/* When s[0..n) is a marker, writes its search index code "bi:<blind index hex>" and a NUL
 * into code and returns 1; otherwise returns 0. Needs no keys (the index is in the marker):
 * search index rows of a sealed value hold this code, never the value. */
int jk_protect_index_code(const char *s, size_t n, char code[JK_PROTECT_CODE_LEN + 1]);

/* The index codes a token search for system|value must match besides value itself: the
 * blind index of value in system when the rules list it, else in "" (identity numbers found
 * by their type alone, and |value); without a system (system NULL), in every identity system
 * of the rules, in "" and in "phone". *codes (in a) holds *n codes "bi:<hex>"; none before
 * jk_protect_init or for a value that cannot have one. JK_OK or JK_ENOMEM. */
jk_rc jk_protect_search_codes(struct jk_arena *a, const char *system, const char *value,
                              const char ***codes, size_t *n);

/* The <name> of the rule identity.system.<name> whose value is system ("citizen-id" for
 * urn:oid:2.16.156.10011.1.3), or NULL when no rule lists it (or before jk_protect_init). */
const char *jk_protect_system_name(const char *system);

/* The Identifier.system of rule identity.system.<name>, or NULL when there is none. */
const char *jk_protect_system_of(const char *name);

#endif
