/* audit_cmd.c - `jiankang audit verify` and `jiankang keys init|public`. */
#include "cli/audit_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/audit.h"
#include "core/crypto.h"
#include "store/store.h"

static const char pubkey_head[] = "-----BEGIN PUBLIC KEY-----";

/* The platform key for checking signatures: from a PEM public key file (what a regulator
 * holds; it goes to *pub) or from the key file (*keys). Loads, never creates. NULL after
 * printing why. */
static const jk_sm2 *load_verify_key(const char *path, jk_keys **keys, jk_sm2 **pub)
{
    char err[1200], pem[JK_SM2_PEM_MAX];
    size_t n = 0;
    FILE *f = fopen(path, "r");
    if (f) {
        n = fread(pem, 1, sizeof pem - 1, f);
        fclose(f);
    }
    if (n >= sizeof pubkey_head - 1 && !memcmp(pem, pubkey_head, sizeof pubkey_head - 1)) {
        if (jk_sm2_from_pem(pem, n, pub)) {
            fprintf(stderr, "jiankang: %s is not an SM2 public key in PEM\n", path);
            return NULL;
        }
        return *pub;
    }
    if (jk_keys_load(path, keys, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        return NULL;
    }
    return jk_keys_sm2(*keys);
}

static int audit_verify(const struct jk_config *cfg)
{
    jk_keys *keys = NULL;
    jk_sm2 *pub = NULL;
    const jk_sm2 *key = load_verify_key(cfg->keys, &keys, &pub);
    if (!key) return 2;
    char err[512];
    jk_store *db = NULL;
    int status = 2;
    struct jk_audit_report rep;
    if (jk_store_open(cfg->db, &db, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
    } else if (jk_audit_verify(db, key, &rep)) {
        fprintf(stderr,
                "jiankang: cannot read the audit trail of %s (has the database been migrated? "
                "run jiankang migrate)\n",
                cfg->db);
    } else if (rep.broken) {
        printf("first broken link at seq %lld: %s\n", (long long)rep.broken_seq, rep.what);
        printf("(checked %lld records and %lld checkpoints before it)\n", (long long)rep.n_records,
               (long long)rep.n_checkpoints);
        status = 1;
    } else {
        printf("audit trail intact: %lld records", (long long)rep.n_records);
        if (rep.n_records) printf(" (seq 1 to %lld)", (long long)rep.last_seq);
        printf(", %lld checkpoints with valid signatures\n", (long long)rep.n_checkpoints);
        if (rep.last_seq > rep.last_checkpoint_seq)
            printf("records after seq %lld (the last checkpoint) are covered by the chain only: "
                   "removing them together with the chain head would not be detected\n",
                   (long long)rep.last_checkpoint_seq);
        status = 0;
    }
    jk_store_close(db);
    jk_keys_free(keys);
    jk_sm2_free(pub);
    return status;
}

int jk_cli_audit(const struct jk_config *cfg, char *const *args, int n_args)
{
    if (n_args == 1 && !strcmp(args[0], "verify")) return audit_verify(cfg);
    fprintf(stderr, "jiankang: audit takes one subcommand: verify\n");
    return 2;
}

static int print_public(const jk_keys *keys)
{
    char pem[JK_SM2_PEM_MAX];
    if (jk_sm2_public_pem(jk_keys_sm2(keys), pem, sizeof pem)) {
        fprintf(stderr, "jiankang: cannot write the public key\n");
        return 1;
    }
    fputs(pem, stdout);
    return 0;
}

int jk_cli_keys(const struct jk_config *cfg, char *const *args, int n_args)
{
    char err[1200];
    jk_keys *keys = NULL;
    int is_init = n_args == 1 && !strcmp(args[0], "init");
    if (!is_init && !(n_args == 1 && !strcmp(args[0], "public"))) {
        fprintf(stderr, "jiankang: keys takes one subcommand: init or public\n");
        return 2;
    }
    jk_rc rc = is_init ? jk_keys_create(cfg->keys, &keys, err, sizeof err)
                       : jk_keys_load(cfg->keys, &keys, err, sizeof err);
    if (rc) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 1;
    }
    if (is_init)
        printf("created the key file %s (mode 0600): keep it secret and back it up safely.\n"
               "The platform public key, for checking audit checkpoints elsewhere:\n",
               cfg->keys);
    int status = print_public(keys);
    jk_keys_free(keys);
    return status;
}
