/* supervision_cmd.c - `jiankang supervision export`: every online visit and prescription of one
 * local day (time.utc_offset_minutes of rules/dispensing.json), one JSON object per line, for
 * the provincial supervision platform; the export itself is recorded in the audit trail. */
#include "cli/supervision_cmd.h"

#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <json-c/json.h>

#include "auth/audit.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/time.h"
#include "store/store.h"
#include "svc/rx/flow.h"

#define EXPORT_MAX 1000000 /* rows of one kind in one day's export */

static const char usage[] =
    "usage: jiankang supervision export --date YYYY-MM-DD [--out FILE] [--config FILE]\n"
    "                                   [--db URL] [--keys PATH]\n"
    "Writes every online visit and prescription begun on the local date (UTC offset of\n"
    "rules/dispensing.json) as NDJSON, one object per line with \"kind\" visit or prescription:\n"
    "who (patient, doctor, institution), when, diagnosis, drugs, reviewer, outcome, review\n"
    "turnaround, amount and payment state, for the provincial supervision platform. To FILE\n"
    "(written whole or not at all) or standard output. Recorded in the audit trail (action\n"
    "supervision-export, signed with the key file's platform key). See docs/internals/rx.md.\n";

struct export
{
    const char *actor, *date;
    const struct jk_audit *audit;
    int64_t n_rows;
};

static jk_rc audit_tx(jk_conn *c, void *arg)
{
    struct export *e = arg;
    char detail[64];
    snprintf(detail, sizeof detail, "%s: %lld rows", e->date, (long long)e->n_rows);
    struct jk_audit_rec r = {.actor = e->actor,
                             .role = "system",
                             .action = "supervision-export",
                             .res_type = "prescription",
                             .reason = detail};
    return jk_audit_append(e->audit, c, &r, NULL);
}

static int write_rows(FILE *out, struct json_object *arr)
{
    for (size_t i = 0; i < json_object_array_length(arr); i++) {
        const char *t =
            json_object_to_json_string_ext(json_object_array_get_idx(arr, i),
                                           JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        if (fputs(t, out) == EOF || fputc('\n', out) == EOF) return -1;
    }
    return 0;
}

static int run(const struct jk_config *cfg, const char *date, const char *out_path)
{
    char err[1200], actor[80], tmp[1100];
    struct jk_rx_flow_rules *rules = NULL;
    jk_keys *keys = NULL;
    jk_store *db = NULL;
    struct jk_arena *a = jk_arena_new(0);
    struct json_object *visits = json_object_new_array(), *rx = json_object_new_array();
    FILE *out = stdout;
    int status = 1, more_v = 0, more_r = 0;
    int64_t day_ms;
    struct passwd pw, *found = NULL;
    char pwbuf[1024];
    if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &found) || !found)
        snprintf(actor, sizeof actor, "cli:uid-%lu", (unsigned long)geteuid());
    else
        snprintf(actor, sizeof actor, "cli:%s", found->pw_name);
    if (strlen(date) != 10 || jk_time_parse_iso(date, 10, &day_ms)) {
        fprintf(stderr, "jiankang: --date must be a date YYYY-MM-DD\n%s", usage);
        status = 2;
        goto out;
    }
    if (jk_rx_flow_rules_load(NULL, NULL, &rules, err, sizeof err) || jk_crypto_init() ||
        jk_keys_load(cfg->keys, &keys, err, sizeof err) ||
        jk_store_open(cfg->db, &db, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        goto out;
    }
    jk_conn *c = jk_store_conn(db);
    int64_t from = day_ms - (int64_t)jk_rx_flow_utc_offset_min(rules) * 60000;
    jk_rc rc = c ? jk_rx_supervision_rows(c, a, "visits", from, from + 86400000, NULL, 0,
                                          EXPORT_MAX, visits, &more_v)
                 : JK_EDB;
    if (!rc)
        rc = jk_rx_supervision_rows(c, a, "prescriptions", from, from + 86400000, NULL, 0,
                                    EXPORT_MAX, rx, &more_r);
    if (rc || more_v || more_r) {
        fprintf(stderr, "jiankang: %s\n",
                rc ? "cannot read the database (has it been migrated?)"
                   : "more rows than one export holds");
        goto out;
    }
    struct jk_audit audit;
    jk_audit_init(&audit, jk_keys_sm2(keys));
    struct export e = {actor, date, &audit,
                       (int64_t)(json_object_array_length(visits) + json_object_array_length(rx))};
    if (jk_store_tx(db, audit_tx, &e)) {
        fprintf(stderr, "jiankang: the export could not be recorded in the audit trail\n");
        goto out;
    }
    if (out_path) {
        snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
        if (!(out = fopen(tmp, "w"))) {
            perror(tmp);
            goto out;
        }
    }
    int bad = write_rows(out, visits) || write_rows(out, rx) || fflush(out);
    if (out_path) {
        bad = fclose(out) || bad;
        out = stdout;
        if (bad || rename(tmp, out_path)) {
            perror(out_path);
            unlink(tmp);
            goto out;
        }
        fprintf(stderr, "jiankang: %lld rows for %s written to %s\n", (long long)e.n_rows, date,
                out_path);
    } else if (bad) {
        goto out;
    }
    status = 0;
out:
    json_object_put(visits);
    json_object_put(rx);
    jk_arena_free(a);
    jk_store_close(db);
    jk_keys_free(keys);
    jk_rx_flow_rules_free(rules);
    return status;
}

int jk_cli_supervision(int argc, char **argv)
{
    static const struct option opts[] = {
        {"date", required_argument, NULL, 't'},
        {"out", required_argument, NULL, 'o'},
        {"config", required_argument, NULL, 'c'},
        {"db", required_argument, NULL, 'd'},
        {"keys", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct jk_config cfg;
    char err[1200];
    const char *date = NULL, *out = NULL, *config = NULL, *db = NULL, *keys = NULL;
    int ch;
    if (argc < 2 || strcmp(argv[1], "export")) {
        fputs(usage, argc >= 2 && !strcmp(argv[1], "--help") ? stdout : stderr);
        return argc >= 2 && !strcmp(argv[1], "--help") ? 0 : 2;
    }
    optind = 1;
    while ((ch = getopt_long(argc - 1, argv + 1, "", opts, NULL)) != -1) {
        switch (ch) {
        case 't': date = optarg; break;
        case 'o': out = optarg; break;
        case 'c': config = optarg; break;
        case 'd': db = optarg; break;
        case 'k': keys = optarg; break;
        case 'h': fputs(usage, stdout); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (!date || optind < argc - 1) {
        fputs(usage, stderr);
        return 2;
    }
    jk_config_defaults(&cfg);
    if ((config && jk_config_load_file(&cfg, config, err, sizeof err)) ||
        jk_config_load_env(&cfg, err, sizeof err) ||
        (db && jk_config_set(&cfg, "db", db, "--db", err, sizeof err)) ||
        (keys && jk_config_set(&cfg, "keys", keys, "--keys", err, sizeof err))) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 2;
    }
    return run(&cfg, date, out);
}
