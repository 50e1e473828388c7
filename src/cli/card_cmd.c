/* card_cmd.c - `jiankang card codes`: many valid QR codes of one card (load tests). */
#include "cli/card_cmd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/crypto.h"
#include "core/log.h"
#include "core/time.h"
#include "mpi/card.h"
#include "store/store.h"

#define MAX_CODES 1000000
#define BATCH     5000 /* codes per transaction, printed once it has committed */

struct mint {
    const struct jk_card_keys *keys;
    const struct jk_card *card;
    int ttl_s, keep_s;
    size_t n;
    char (*text)[JK_CARD_CODE_MAX];
};

static jk_rc mint_tx(jk_conn *c, void *arg)
{
    struct mint *m = arg;
    int64_t now = jk_time_now_ms();
    for (size_t i = 0; i < m->n; i++) {
        struct jk_card_code code;
        char mac[JK_CARD_MAC_HEX + 1];
        jk_rc rc = jk_card_code_make(m->keys, m->card->number, now, m->ttl_s, m->text[i],
                                     JK_CARD_CODE_MAX, &code);
        if (!rc) rc = jk_card_code_mac(m->keys, m->text[i], strlen(m->text[i]), mac);
        if (!rc) rc = jk_card_code_record(c, m->card->id, &code, mac, now, m->keep_s);
        if (rc) return rc;
    }
    return JK_OK;
}

static long whole(const char *s, long min, long max)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    return errno || end == s || *end || v < min || v > max ? -1 : v;
}

static int codes(const struct jk_config *cfg, const char *which, long count, long ttl_s)
{
    char err[1200];
    jk_keys *keys = NULL;
    jk_store *db = NULL;
    struct jk_card_rules rules;
    struct jk_card_keys ck;
    struct jk_card card;
    int status = 1;
    if (jk_card_rules_load(NULL, &rules, err, sizeof err) ||
        jk_keys_load(cfg->keys, &keys, err, sizeof err) ||
        jk_store_open(cfg->db, &db, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        goto out;
    }
    jk_conn *c = jk_store_conn(db);
    jk_rc rc = c ? jk_card_get(c, which, &card) : JK_EDB;
    if (rc == JK_ENOTFOUND) rc = jk_card_by_number(c, which, &card);
    if (rc || strcmp(card.status, "active")) {
        fprintf(stderr, "jiankang: %s\n",
                rc == JK_ENOTFOUND ? "no such card (give its id or number)"
                : rc               ? "cannot read the cards (has the database been migrated?)"
                                   : "the card is revoked");
        goto out;
    }
    if (ttl_s > rules.ttl_s) {
        /* the server refuses a code that claims a longer life than its rules give */
        fprintf(stderr, "jiankang: TTL_SECONDS may be at most card.code.ttl_seconds (%d) of %s\n",
                rules.ttl_s, jk_card_rules_path());
        goto out;
    }
    if (jk_card_keys_init(&ck, keys)) goto out;
    struct mint m = {.keys = &ck,
                     .card = &card,
                     .ttl_s = ttl_s ? (int)ttl_s : rules.ttl_s,
                     .keep_s = rules.keep_s};
    if (!(m.text = malloc(BATCH * sizeof *m.text))) goto out;
    for (long done = 0; done < count;) {
        m.n = count - done < BATCH ? (size_t)(count - done) : BATCH;
        if (jk_store_tx(db, mint_tx, &m)) {
            fprintf(stderr, "jiankang: cannot record the codes (after %ld)\n", done);
            free(m.text);
            goto out;
        }
        for (size_t i = 0; i < m.n; i++)
            puts(m.text[i]);
        done += (long)m.n;
    }
    free(m.text);
    status = fflush(stdout) ? 1 : 0;
out:
    jk_store_close(db);
    jk_keys_free(keys);
    return status;
}

int jk_cli_card(const struct jk_config *cfg, char *const *args, int n_args)
{
    long count = n_args >= 3 ? whole(args[2], 1, MAX_CODES) : -1;
    long ttl = n_args == 4 ? whole(args[3], 1, 3600) : 0;
    if (n_args < 3 || n_args > 4 || strcmp(args[0], "codes") || count < 0 || ttl < 0) {
        fprintf(stderr, "jiankang: usage: jiankang card codes CARD COUNT [TTL_SECONDS] (COUNT "
                        "from 1 to 1000000, TTL_SECONDS from 1 to 3600)\n");
        return 2;
    }
    return codes(cfg, args[1], count, ttl);
}
