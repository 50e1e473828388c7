/* user_cmd.c - `jiankang user add|passwd|lock|unlock|totp|list`: accounts from the command
 * line, for bootstrap and for administrators on the server; and the demo accounts. */
#include "cli/user_cmd.h"

#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "auth/account.h"
#include "auth/audit.h"
#include "auth/token.h"
#include "auth/totp.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/time.h"
#include "store/resource.h"

#define TOTP_ISSUER "Jiankang"

static const char usage_user[] =
    "usage: jiankang user add USERNAME --role ROLE [--org Organization/ID] [--link TYPE/ID]\n"
    "                         [--password-stdin]\n"
    "       jiankang user passwd USERNAME [--password-stdin]\n"
    "       jiankang user lock USERNAME\n"
    "       jiankang user unlock USERNAME\n"
    "       jiankang user totp USERNAME\n"
    "       jiankang user list\n"
    "\n"
    "Manages accounts. Without --password-stdin a strong password is made and printed once;\n"
    "with it, the first line of standard input is the password. For a system (an institution's\n"
    "software, logging in with client_credentials) USERNAME is its client_id and the password\n"
    "its client_secret. Roles that need a second factor get a new TOTP secret, printed once\n"
    "with its otpauth:// URI for an authenticator app; 'totp' makes a new one.\n"
    "'lock' stops an account from logging in and revokes its tokens until 'unlock', which\n"
    "also ends a lockout after failed logins. 'list' shows no secrets.\n"
    "\n"
    "roles: resident doctor nurse pharmacist institution-admin public-health regulator\n"
    "       platform-admin system\n"
    "Every change is recorded in the audit trail (action account), signed with the platform\n"
    "key of the key file.\n"
    "\n"
    "options: --config FILE, --db URL (default sqlite:var/jiankang.db),\n"
    "         --keys PATH (the key file, default var/jiankang.keys; created when missing),\n"
    "         --rules FILE (default $JIANKANG_SECURITY_RULES or rules/security.json)\n";

struct user_opts {
    struct jk_config cfg;
    const char *rules_path;
    const char *role, *org, *link;
    int is_password_stdin;
    struct jk_security_rules rules;
    jk_store *db;
    jk_keys *keys;         /* loaded for the first change */
    struct jk_audit audit; /* the trail changes are recorded in */
    char actor[80];        /* "cli:" and the operating-system user */
};

/* ---- the audit records of administration from the command line ----
 * The one place where account changes made with `jiankang user` are recorded, inside the
 * transaction that makes them (on c), as its last statement: action "account", the account
 * as the resource, what was done (add, passwd, lock, unlock, totp) as the detail, and as actor
 * "cli:" with the operating-system user who ran the command. Never a password or secret. */
static jk_rc audit_account_admin(const struct user_opts *o, jk_conn *c, const char *action,
                                 const char *username)
{
    struct jk_audit_rec r = {.actor = o->actor,
                             .action = "account",
                             .res_type = "account", /* ours, not FHIR's Account */
                             .res_id = username,
                             .reason = action};
    return jk_audit_append(&o->audit, c, &r, NULL);
}

/* Loads the platform keys (creating the key file at the first use, like serve) and names
 * the actor. 1 after printing why not. */
static int open_audit(struct user_opts *o)
{
    char err[1200], buf[1024];
    struct passwd pw, *found = NULL;
    if (o->keys) return 0;
    if (jk_keys_load_or_create(o->cfg.keys, &o->keys, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s (account changes are recorded in the audit trail)\n", err);
        return 1;
    }
    jk_audit_init(&o->audit, jk_keys_sm2(o->keys));
    if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &found) || !found)
        snprintf(o->actor, sizeof o->actor, "cli:uid-%lu", (unsigned long)geteuid());
    else
        snprintf(o->actor, sizeof o->actor, "cli:%s", found->pw_name);
    return 0;
}

/* ---- helpers ---- */

static int open_store(struct user_opts *o)
{
    char err[512];
    int n = 0;
    if (jk_store_open(o->cfg.db, &o->db, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 1;
    }
    if (jk_store_migrate(o->db, &n)) {
        fprintf(stderr, "jiankang: the database migration failed (see the log above)\n");
        jk_store_close(o->db);
        o->db = NULL;
        return 1;
    }
    return 0;
}

/* Reads the first line of standard input as the password into out. */
static int read_password(char *out, size_t outlen)
{
    if (!fgets(out, (int)outlen, stdin)) {
        fprintf(stderr, "jiankang: no password on standard input\n");
        return 1;
    }
    size_t n = strlen(out);
    if (n && out[n - 1] == '\n') {
        out[--n] = '\0';
        if (n && out[n - 1] == '\r') out[--n] = '\0';
    } else if (!feof(stdin)) {
        fprintf(stderr, "jiankang: the password is longer than %d bytes\n", JK_PASSWORD_MAX);
        sodium_memzero(out, outlen);
        return 1;
    }
    return 0;
}

/* A password from standard input (checked against the policy) or a new one; *is_generated
 * says which. */
static int get_password(const struct user_opts *o, const char *username, char *out, size_t outlen,
                        int *is_generated)
{
    char msg[300];
    *is_generated = !o->is_password_stdin;
    if (*is_generated) {
        if (!jk_password_generate(&o->rules, username, out, outlen)) return 0;
        fprintf(stderr, "jiankang: cannot make a password that meets %s\n", o->rules.path);
        return 1;
    }
    if (read_password(out, outlen)) return 1;
    if (jk_password_check(&o->rules, username, out, msg, sizeof msg)) {
        fprintf(stderr, "jiankang: the password is refused: %s (%s)\n", msg, o->rules.path);
        sodium_memzero(out, outlen);
        return 1;
    }
    return 0;
}

static void print_totp(const char *username, const char *secret)
{
    char uri[300];
    if (jk_totp_uri(secret, TOTP_ISSUER, username, uri, sizeof uri)) uri[0] = '\0';
    printf("second factor (TOTP, shown once; add it to an authenticator app):\n"
           "  secret: %s\n"
           "  URI:    %s\n",
           secret, uri);
}

/* Warns when ref ("Type/id") names no resource in the database: the account may be made
 * before its resources are loaded, so it is not an error. */
static void warn_missing(jk_store *db, const char *what, const char *ref)
{
    const char *slash = strchr(ref, '/');
    struct jk_arena *a = jk_arena_new(0);
    jk_conn *c = jk_store_conn(db);
    if (!slash || !a || !c) {
        jk_arena_free(a);
        return;
    }
    char *type = jk_arena_strndup(a, ref, (size_t)(slash - ref));
    struct jk_res r;
    jk_rc rc = type ? jk_res_read(c, a, type, slash + 1, &r) : JK_ENOMEM;
    if (rc == JK_ENOTFOUND || rc == JK_EGONE)
        fprintf(stderr, "jiankang: warning: the %s %s is not in the database (yet)\n", what, ref);
    jk_arena_free(a);
}

static int find_account(struct user_opts *o, const char *name, struct jk_account *a)
{
    char norm[JK_USERNAME_MAX + 1];
    jk_conn *c = jk_store_conn(o->db);
    jk_rc rc = jk_account_norm_username(name, norm, sizeof norm);
    if (!rc) rc = c ? jk_account_find(c, norm, a) : JK_EDB;
    if (rc == JK_ENOTFOUND || rc == JK_EINVAL)
        fprintf(stderr, "jiankang: there is no account '%s'\n", name);
    else if (rc)
        fprintf(stderr, "jiankang: cannot read the account: %s\n", jk_rc_name(rc));
    return rc ? 1 : 0;
}

/* ---- the subcommands ---- */

struct change_tx {
    const struct user_opts *o;
    const char *action; /* add, passwd, lock, unlock, totp */
    struct jk_account a;
    int64_t now_ms;
};

static jk_rc change_tx_fn(jk_conn *c, void *arg)
{
    struct change_tx *t = arg;
    jk_rc rc = JK_EINTERNAL;
    if (!strcmp(t->action, "add")) {
        rc = jk_account_insert(c, &t->a);
    } else if (!strcmp(t->action, "passwd")) {
        rc = jk_account_set_password(c, t->a.id, t->a.pw_hash, t->now_ms);
    } else if (!strcmp(t->action, "lock")) {
        rc = jk_account_set_disabled(c, t->a.id, 1);
        if (!rc) rc = jk_token_revoke_account(c, t->a.id);
    } else if (!strcmp(t->action, "unlock")) {
        rc = jk_account_set_disabled(c, t->a.id, 0);
    } else if (!strcmp(t->action, "totp")) {
        rc = jk_account_set_totp(c, t->a.id, t->a.totp_secret);
    }
    return rc ? rc : audit_account_admin(t->o, c, t->action, t->a.username);
}

static int run_change(struct user_opts *o, struct change_tx *t)
{
    if (open_audit(o)) return 1;
    t->o = o;
    t->now_ms = jk_time_now_ms();
    jk_rc rc = jk_store_tx(o->db, change_tx_fn, t);
    if (rc == JK_ECONFLICT)
        fprintf(stderr, "jiankang: the user name '%s' is taken\n", t->a.username);
    else if (rc)
        fprintf(stderr, "jiankang: cannot %s the account: %s\n", t->action, jk_rc_name(rc));
    return rc ? 1 : 0;
}

static int cmd_add(struct user_opts *o, const char *name)
{
    struct change_tx t;
    char msg[300], pw[JK_PASSWORD_MAX + 2];
    int is_generated = 0;
    memset(&t, 0, sizeof t);
    t.action = "add";
    const struct jk_role_info *ri = o->role ? jk_role_by_name(o->role) : NULL;
    if (!ri) {
        fprintf(stderr, "jiankang: %s\n%s",
                o->role ? "unknown role" : "give the account's role with --role", usage_user);
        return 2;
    }
    if (jk_account_norm_username(name, t.a.username, sizeof t.a.username)) {
        fprintf(stderr,
                "jiankang: '%s' is not a user name: 1 to %d characters of a-z, 0-9, '.', '_',"
                " '-' and '@', starting with a letter or digit\n",
                name, JK_USERNAME_MAX);
        return 2;
    }
    t.a.role = ri->role;
    snprintf(t.a.org, sizeof t.a.org, "%s", o->org ? o->org : "");
    snprintf(t.a.link, sizeof t.a.link, "%s", o->link ? o->link : "");
    if ((o->org && strlen(o->org) > JK_REF_MAX) || (o->link && strlen(o->link) > JK_REF_MAX) ||
        jk_account_check(&t.a, msg, sizeof msg)) {
        fprintf(stderr, "jiankang: %s\n", msg);
        return 2;
    }
    if (get_password(o, t.a.username, pw, sizeof pw, &is_generated)) return 1;
    jk_rc rc = jk_password_hash(&o->rules, pw, t.a.pw_hash, sizeof t.a.pw_hash);
    if (!rc && jk_security_needs_totp(&o->rules, ri->role))
        rc = jk_totp_new_secret(t.a.totp_secret, sizeof t.a.totp_secret);
    if (rc) {
        fprintf(stderr, "jiankang: cannot hash the password: %s\n", jk_rc_name(rc));
        sodium_memzero(pw, sizeof pw);
        return 1;
    }
    t.a.password_set_ms = t.a.created_ms = jk_time_now_ms();
    if (open_store(o) || run_change(o, &t)) {
        sodium_memzero(pw, sizeof pw);
        return 1;
    }
    if (t.a.org[0]) warn_missing(o->db, "organization", t.a.org);
    if (t.a.link[0]) warn_missing(o->db, "linked resource", t.a.link);
    printf("created account %s (role %s%s%s%s%s)\n", t.a.username, ri->name, t.a.org[0] ? ", " : "",
           t.a.org, t.a.link[0] ? ", " : "", t.a.link);
    if (is_generated)
        printf("%s (shown once): %s\n", ri->is_person ? "password" : "client_secret", pw);
    if (t.a.totp_secret[0]) print_totp(t.a.username, t.a.totp_secret);
    sodium_memzero(pw, sizeof pw);
    return 0;
}

static int cmd_passwd(struct user_opts *o, const char *name)
{
    struct change_tx t;
    char pw[JK_PASSWORD_MAX + 2];
    int is_generated = 0;
    memset(&t, 0, sizeof t);
    t.action = "passwd";
    if (open_store(o) || find_account(o, name, &t.a)) return 1;
    if (get_password(o, t.a.username, pw, sizeof pw, &is_generated)) return 1;
    jk_rc rc = jk_password_hash(&o->rules, pw, t.a.pw_hash, sizeof t.a.pw_hash);
    if (rc) fprintf(stderr, "jiankang: cannot hash the password: %s\n", jk_rc_name(rc));
    if (rc || run_change(o, &t)) {
        sodium_memzero(pw, sizeof pw);
        return 1;
    }
    printf("new %s for %s\n", jk_role_info(t.a.role)->is_person ? "password" : "client_secret",
           t.a.username);
    if (is_generated) printf("(shown once): %s\n", pw);
    sodium_memzero(pw, sizeof pw);
    return 0;
}

static int cmd_lock(struct user_opts *o, const char *name, int is_lock)
{
    struct change_tx t;
    memset(&t, 0, sizeof t);
    t.action = is_lock ? "lock" : "unlock";
    if (open_store(o) || find_account(o, name, &t.a) || run_change(o, &t)) return 1;
    printf(is_lock ? "locked %s; its tokens are revoked\n" : "unlocked %s\n", t.a.username);
    return 0;
}

static int cmd_totp(struct user_opts *o, const char *name)
{
    struct change_tx t;
    memset(&t, 0, sizeof t);
    t.action = "totp";
    if (open_store(o) || find_account(o, name, &t.a)) return 1;
    if (!jk_role_info(t.a.role)->is_person) {
        fprintf(stderr, "jiankang: %s is a system; systems have no second factor\n", t.a.username);
        return 1;
    }
    if (jk_totp_new_secret(t.a.totp_secret, sizeof t.a.totp_secret) || run_change(o, &t)) return 1;
    printf("new second factor for %s\n", t.a.username);
    print_totp(t.a.username, t.a.totp_secret);
    return 0;
}

struct list_ctx {
    const struct jk_security_rules *rules;
    int64_t now_ms;
    int n;
};

static int list_row(void *arg, const struct jk_account *a)
{
    struct list_ctx *l = arg;
    char when[40], status[80];
    if (a->is_disabled)
        snprintf(status, sizeof status, "locked by an administrator");
    else if (a->locked_until_ms > l->now_ms)
        snprintf(status, sizeof status, "locked out until %s",
                 jk_time_iso(a->locked_until_ms, when, sizeof when));
    else if (jk_role_info(a->role)->is_person && l->rules->password_max_age_days > 0 &&
             l->now_ms - a->password_set_ms > (int64_t)l->rules->password_max_age_days * 86400000LL)
        snprintf(status, sizeof status, "password expired");
    else
        snprintf(status, sizeof status, "active");
    if (!l->n++)
        printf("%-6s %-24s %-17s %-28s %-30s %-6s %-8s %s\n", "id", "username", "role",
               "organization", "link", "2fa", "failures", "status");
    printf("%-6lld %-24s %-17s %-28s %-30s %-6s %-8d %s\n", (long long)a->id, a->username,
           jk_role_info(a->role)->name, a->org[0] ? a->org : "-", a->link[0] ? a->link : "-",
           a->totp_secret[0] ? "yes" : "no", a->failed_count, status);
    return 0;
}

static int cmd_list(struct user_opts *o)
{
    struct list_ctx l = {&o->rules, jk_time_now_ms(), 0};
    if (open_store(o)) return 1;
    jk_conn *c = jk_store_conn(o->db);
    jk_rc rc = c ? jk_account_list(c, list_row, &l) : JK_EDB;
    if (rc) {
        fprintf(stderr, "jiankang: cannot list the accounts: %s\n", jk_rc_name(rc));
        return 1;
    }
    if (!l.n) printf("no accounts\n");
    return 0;
}

/* ---- the command ---- */

static int parse(int argc, char **argv, struct user_opts *o, char ***pos, int *n_pos)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"db", required_argument, NULL, 'd'},
        {"keys", required_argument, NULL, 'k'},   {"rules", required_argument, NULL, 'r'},
        {"role", required_argument, NULL, 'R'},   {"org", required_argument, NULL, 'o'},
        {"link", required_argument, NULL, 'L'},   {"password-stdin", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    char err[1200];
    const char *config_file = NULL, *db = NULL, *keys = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_file = optarg; break;
        case 'd': db = optarg; break;
        case 'k': keys = optarg; break;
        case 'r': o->rules_path = optarg; break;
        case 'R': o->role = optarg; break;
        case 'o': o->org = optarg; break;
        case 'L': o->link = optarg; break;
        case 'p': o->is_password_stdin = 1; break;
        case 'h': fputs(usage_user, stdout); return 1;
        default: fputs(usage_user, stderr); return 3;
        }
    }
    *pos = argv + optind;
    *n_pos = argc - optind;
    jk_config_defaults(&o->cfg);
    if ((config_file && jk_config_load_file(&o->cfg, config_file, err, sizeof err)) ||
        jk_config_load_env(&o->cfg, err, sizeof err) ||
        (db && jk_config_set(&o->cfg, "db", db, "--db", err, sizeof err)) ||
        (keys && jk_config_set(&o->cfg, "keys", keys, "--keys", err, sizeof err))) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 3;
    }
    if (jk_security_rules_load(o->rules_path ? o->rules_path : jk_security_rules_path(), &o->rules,
                               err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 2;
    }
    return 0;
}

int jk_cli_user(int argc, char **argv)
{
    static const struct {
        const char *name;
        int n_args; /* USERNAME or not */
    } subs[] = {{"add", 1}, {"passwd", 1}, {"lock", 1}, {"unlock", 1}, {"totp", 1}, {"list", 0}};
    struct user_opts o;
    char **pos;
    int n_pos;
    memset(&o, 0, sizeof o);
    int r = parse(argc, argv, &o, &pos, &n_pos);
    if (r) return r - 1;
    size_t i = 0;
    while (n_pos && i < sizeof subs / sizeof subs[0] && strcmp(subs[i].name, pos[0]))
        i++;
    if (!n_pos || i == sizeof subs / sizeof subs[0] || n_pos != 1 + subs[i].n_args) {
        fprintf(stderr, "jiankang: %s\n%s",
                !n_pos                              ? "say what to do: add, passwd, lock, unlock, "
                                                      "totp or list"
                : i == sizeof subs / sizeof subs[0] ? "unknown user subcommand"
                                                    : "wrong number of arguments",
                usage_user);
        return 2;
    }
    if ((o.role || o.org || o.link) && strcmp(pos[0], "add")) {
        fprintf(stderr, "jiankang: --role, --org and --link go with 'user add'\n%s", usage_user);
        return 2;
    }
    if (o.is_password_stdin && strcmp(pos[0], "add") && strcmp(pos[0], "passwd")) {
        fprintf(stderr, "jiankang: --password-stdin goes with 'user add' and 'user passwd'\n");
        return 2;
    }
    if (!strcmp(pos[0], "add"))
        r = cmd_add(&o, pos[1]);
    else if (!strcmp(pos[0], "passwd"))
        r = cmd_passwd(&o, pos[1]);
    else if (!strcmp(pos[0], "lock") || !strcmp(pos[0], "unlock"))
        r = cmd_lock(&o, pos[1], !strcmp(pos[0], "lock"));
    else if (!strcmp(pos[0], "totp"))
        r = cmd_totp(&o, pos[1]);
    else
        r = cmd_list(&o);
    jk_store_close(o.db);
    jk_keys_free(o.keys);
    return r;
}

int jk_cli_demo_accounts(jk_store *db, FILE *out)
{
    char err[JK_RULES_ERR];
    struct jk_security_rules rules;
    const struct jk_demo_account *d;
    size_t n = 0;
    if (jk_security_rules_load(jk_security_rules_path(), &rules, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 1;
    }
    jk_rc rc = jk_account_create_demo(db, &rules, jk_time_now_ms(), &d, &n);
    if (rc) {
        fprintf(stderr, "jiankang: cannot create the demo accounts: %s\n", jk_rc_name(rc));
        return 1;
    }
    fprintf(out, "Demo accounts (POST /auth/token; for demonstration only):\n");
    for (size_t i = 0; i < n; i++) {
        const struct jk_role_info *ri = jk_role_by_name(d[i].role);
        fprintf(out, "  %-18s %-24s %s %-28s %s\n", d[i].role, d[i].username,
                ri && ri->is_person ? "password     " : "client_secret", d[i].password, d[i].who);
        if (d[i].totp_secret)
            fprintf(out, "  %-18s %-24s totp secret   %s (oathtool --totp -b %s)\n", "", "",
                    d[i].totp_secret, d[i].totp_secret);
    }
    return 0;
}
