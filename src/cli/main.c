/* main.c - the jiankang command: serve, migrate, demo, import. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/api.h"
#include "api/api_int.h"
#include "auth/account.h"
#include "auth/audit.h"
#include "auth/protect.h"
#include "mpi/mpi.h"
#include "cli/audit_cmd.h"
#include "cli/card_cmd.h"
#include "cli/import.h"
#include "cli/supervision_cmd.h"
#include "cli/user_cmd.h"
#include "core/arena.h"
#include "core/config.h"
#include "core/crypto.h"
#include "core/log.h"
#include "core/time.h"
#include "fhir/rest.h"
#include "fhir/validate.h"
#include "mpi/idnum.h"
#include "notify/outbox.h"
#include "notify/sms.h"
#include "notify/wechat.h"
#include "svc/booking/booking.h"
#include "svc/booking/schedule.h"
#include "svc/rx/rx.h"
#include "svc/ih/video.h"
#include "svc/ih/visit.h"
#include "svc/rx/flow.h"

static const char usage_main[] =
    "usage: jiankang COMMAND [OPTIONS]\n"
    "\n"
    "Jiankang, a regional health information platform with a FHIR R4 API.\n"
    "\n"
    "commands:\n"
    "  serve     start the HTTP server\n"
    "  migrate   create or upgrade the database schema\n"
    "  demo      create the schema and load the demo region\n"
    "  import    load transaction Bundles, other Bundles, resources and NDJSON files\n"
    "  user      add, change, lock, unlock and list accounts (jiankang user --help)\n"
    "  audit     audit verify: check the audit chain and its signed checkpoints\n"
    "  keys      keys init: create the key file; keys public: print the public key\n"
    "  card      card codes: valid QR codes of a health card, for load tests\n"
    "  supervision  supervision export --date D: a day's online visits and prescriptions\n"
    "\n"
    "options of every command:\n"
    "  --config FILE     settings file (key = value lines)\n"
    "  --db URL          sqlite:PATH (default sqlite:var/jiankang.db) or postgresql://...\n"
    "  --listen ADDR:PORT  (serve) where to listen, default 127.0.0.1:8080\n"
    "  --jobs N          (import) files at a time, default one per core\n"
    "  --keys PATH       the key file, default var/jiankang.keys (created at first start)\n"
    "  --help, --version\n"
    "\n"
    "Settings come from the file, then JIANKANG_<KEY> environment variables, then flags.\n"
    "Run 'jiankang COMMAND --help' for a command's own help.\n";

static const char usage_serve[] =
    "usage: jiankang serve [--config FILE] [--listen ADDR:PORT] [--db URL] [--keys PATH]\n"
    "Migrates the database, loads the key file (creating it at the first start), then serves\n"
    "the FHIR R4 API under /fhir/R4, /healthz and /metrics, and the web pages of the web\n"
    "directory (setting web_dir, default ./web) at / and /web/, until SIGTERM or SIGINT, after\n"
    "which in-flight requests finish and the audit trail's last records are signed.\n"
    "Setting security = off (JIANKANG_SECURITY=off) is for development only: every request\n"
    "is allowed and nothing is audited.\n";
static const char usage_migrate[] = "usage: jiankang migrate [--config FILE] [--db URL]\n"
                                    "Applies the database migrations not yet applied.\n";
static const char usage_demo[] =
    "usage: jiankang demo [--config FILE] [--db URL] [--file PATH]\n"
    "Migrates and loads the demo region (default demo/region.json); loading twice changes\n"
    "nothing but versions.\n";
static const char usage_audit[] =
    "usage: jiankang audit verify [--config FILE] [--db URL] [--keys PATH]\n"
    "Checks every audit record against the SM3 hash chain and every checkpoint against the\n"
    "platform SM2 key (PATH: the key file, or a PEM public key). Exits 0 when the trail is\n"
    "intact, 1 with \"first broken link at seq N: ...\" when it is not, 2 when it cannot be\n"
    "checked. See docs/internals/audit.md.\n";
static const char usage_keys[] =
    "usage: jiankang keys init|public [--config FILE] [--keys PATH]\n"
    "init creates the key file (mode 0600; an existing one is never replaced) and prints the\n"
    "platform public key; public prints the public key of the key file.\n";
static const char usage_card[] =
    "usage: jiankang card codes CARD COUNT [TTL_SECONDS] [--config FILE] [--db URL] [--keys PATH]\n"
    "Prints COUNT valid dynamic QR codes of the active health card CARD (its id or number), one\n"
    "per line, each usable once and valid TTL_SECONDS (default: rules/card.json), recorded in\n"
    "the database as issued. Signs with the key file (never creates one): for load tests of\n"
    "POST /api/cards/verify (bench/card.sh) and for checking a desk's scanner.\n";
static const char usage_import[] =
    "usage: jiankang import [--config FILE] [--db URL] [--jobs N] PATH...\n"
    "Migrates, then loads every PATH: a .json file (a transaction, batch or collection Bundle,\n"
    "or one resource), an .ndjson file (one resource per line), or a directory, for the\n"
    "*.json and *.ndjson files under it. N files at a time (default: one per core). A resource\n"
    "with an id is written as PUT Type/id and skipped when its content is already stored, so\n"
    "importing the same files again adds nothing. Exits 1 when some file failed; see\n"
    "docs/import.md.\n";

struct cli {
    struct jk_config cfg;
    const char *demo_file;
    int takes_paths; /* the command takes PATH arguments after its options */
    char **paths;
    int n_paths;
    long jobs; /* import: files at a time, 0 = one per core */
};

/* Reads options shared by every command. Returns 0 to go on, otherwise an exit code + 1. */
static int parse_options(int argc, char **argv, const char *usage, struct cli *cli)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"db", required_argument, NULL, 'd'},
        {"listen", required_argument, NULL, 'l'}, {"file", required_argument, NULL, 'f'},
        {"jobs", required_argument, NULL, 'j'},   {"keys", required_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    char err[1200];
    const char *config_file = NULL, *db = NULL, *listen = NULL, *keys = NULL;
    int c;
    char *end;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'c': config_file = optarg; break;
        case 'd': db = optarg; break;
        case 'l': listen = optarg; break;
        case 'k': keys = optarg; break;
        case 'f': cli->demo_file = optarg; break;
        case 'j':
            errno = 0;
            cli->jobs = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || cli->jobs < 1 || cli->jobs > 256) {
                fprintf(stderr, "jiankang: --jobs must be a number from 1 to 256\n");
                return 3;
            }
            break;
        case 'h': fputs(usage, stdout); return 1;
        default: fputs(usage, stderr); return 3;
        }
    }
    if (cli->takes_paths) {
        cli->paths = argv + optind;
        cli->n_paths = argc - optind;
        if (!cli->n_paths) {
            fprintf(stderr, "jiankang: give at least one PATH\n%s", usage);
            return 3;
        }
    } else if (optind < argc) {
        fprintf(stderr, "jiankang: unexpected argument '%s'\n%s", argv[optind], usage);
        return 3;
    }
    jk_config_defaults(&cli->cfg);
    if ((config_file && jk_config_load_file(&cli->cfg, config_file, err, sizeof err)) ||
        jk_config_load_env(&cli->cfg, err, sizeof err) ||
        (db && jk_config_set(&cli->cfg, "db", db, "--db", err, sizeof err)) ||
        (listen && jk_config_set(&cli->cfg, "listen", listen, "--listen", err, sizeof err)) ||
        (keys && jk_config_set(&cli->cfg, "keys", keys, "--keys", err, sizeof err))) {
        fprintf(stderr, "jiankang: %s\n", err);
        return 3;
    }
    static const char *const levels[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(cli->cfg.log_level, levels[i])) {
            jk_log_set_level((enum jk_log_level)i);
            return 0;
        }
    fprintf(stderr, "jiankang: log_level must be debug, info, warn or error, not '%s'\n",
            cli->cfg.log_level);
    return 3;
}

static jk_store *open_and_migrate(const struct jk_config *cfg)
{
    char err[512];
    jk_store *db = NULL;
    if (jk_store_open(cfg->db, &db, err, sizeof err)) {
        fprintf(stderr, "jiankang: %s\n", err);
        return NULL;
    }
    int n = 0;
    if (jk_store_migrate(db, &n)) {
        fprintf(stderr, "jiankang: the database migration failed (see the log above)\n");
        jk_store_close(db);
        return NULL;
    }
    if (n)
        jk_log_info("store", "applied %d migration(s) to the %s database", n, jk_store_backend(db));
    return db;
}

static int cmd_migrate(struct cli *cli)
{
    jk_store *db = open_and_migrate(&cli->cfg);
    if (!db) return 1;
    jk_store_close(db);
    return 0;
}

/* Demo dates that must stay recent (a diagnosis a follow-up visit rests on): a string
 * "@days-ago:N" anywhere in a resource becomes the local (UTC+8) date N days before now. */
static struct json_object *demo_date(struct json_object *v, int64_t now_ms)
{
    const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
    char day[16];
    int y, m, d;
    if (!s || strncmp(s, "@days-ago:", 10)) return NULL;
    jk_time_civil_from_days((now_ms + 8 * 3600000LL) / 86400000LL - strtol(s + 10, NULL, 10), &y,
                            &m, &d);
    snprintf(day, sizeof day, "%04d-%02d-%02d", y % 10000, m % 100, d % 100);
    return json_object_new_string(day);
}

static void demo_dates(struct json_object *o, int64_t now_ms)
{
    struct json_object *nv;
    for (size_t i = 0; json_object_is_type(o, json_type_array) && i < json_object_array_length(o);
         i++) {
        if ((nv = demo_date(json_object_array_get_idx(o, i), now_ms)))
            json_object_array_put_idx(o, i, nv);
        else
            demo_dates(json_object_array_get_idx(o, i), now_ms);
    }
    if (!json_object_is_type(o, json_type_object)) return;
    json_object_object_foreach(o, key, v)
    {
        if ((nv = demo_date(v, now_ms)))
            json_object_object_add(o, key, nv);
        else
            demo_dates(v, now_ms);
    }
}

/* Loads every resource of a collection Bundle by update-as-create, so loading is repeatable. */
static int cmd_demo(struct cli *cli)
{
    const char *path = cli->demo_file ? cli->demo_file : "demo/region.json";
    struct json_object *bundle = json_object_from_file(path), *entries;
    if (!bundle || !json_object_object_get_ex(bundle, "entry", &entries)) {
        fprintf(stderr, "jiankang: cannot read the demo Bundle %s\n", path);
        json_object_put(bundle);
        return 1;
    }
    char perr[JK_PROTECT_ERR];
    if (jk_protect_start(cli->cfg.keys, perr, sizeof perr) || /* identity numbers are sealed */
        jk_idnum_init(NULL, perr, sizeof perr) ||             /* and checked */
        jk_mpi_start(perr, sizeof perr)) {                    /* and Patients linked to persons */
        fprintf(stderr, "jiankang: %s\n", perr);
        json_object_put(bundle);
        return 1;
    }
    jk_store *db = open_and_migrate(&cli->cfg);
    if (!db) {
        json_object_put(bundle);
        return 1;
    }
    int failed = 0;
    size_t n = json_object_array_length(entries);
    for (size_t i = 0; i < n; i++) {
        struct json_object *res =
            json_object_object_get(json_object_array_get_idx(entries, i), "resource");
        demo_dates(res, jk_time_now_ms());
        struct jk_arena *a = jk_arena_new(0);
        struct jk_diag d;
        jk_diag_init(&d, a);
        struct jk_fhir_write w = {.kind = JK_FHIR_UPDATE, .res = res, .arena = a, .diag = &d};
        w.type = jk_json_str(res, "resourceType");
        w.id = jk_json_str(res, "id");
        w.now_ms = jk_time_now_ms();
        jk_rc rc = !w.type || !w.id ? JK_EINVAL : jk_fhir_validate(res, &d);
        if (!rc) rc = jk_fhir_write_prepare(&w);
        if (!rc) rc = jk_store_tx(db, jk_fhir_write_tx, &w);
        if (rc) {
            fprintf(stderr, "jiankang: demo entry %zu (%s/%s): %s\n", i, w.type ? w.type : "?",
                    w.id ? w.id : "?", d.head ? d.head->msg : jk_rc_name(rc));
            failed = 1;
        }
        jk_arena_free(a);
    }
    json_object_put(bundle);
    if (!failed) {
        printf("jiankang: loaded %zu demo resources into %s\n", n, cli->cfg.db);
        failed = jk_cli_demo_accounts(db, stdout) != 0;
    }
    /* The demo Schedules' slots, up to the rolling horizon, as a server would make them. */
    char berr[JK_RULES_ERR] = "the database failed (see the log above)";
    size_t n_slots = 0;
    if (!failed && (jk_bk_start(NULL, berr, sizeof berr) ||
                    jk_bk_extend_all(db, jk_bk_rules(), jk_time_now_ms(), &n_slots))) {
        fprintf(stderr, "jiankang: the demo slots were not generated: %s\n", berr);
        failed = 1;
    } else if (!failed) {
        printf("jiankang: generated %zu slots of the demo schedules\n", n_slots);
    }
    jk_bk_stop();
    jk_store_close(db);
    return failed;
}

static int cmd_audit(struct cli *cli)
{
    return jk_cli_audit(&cli->cfg, cli->paths, cli->n_paths);
}

static int cmd_keys(struct cli *cli)
{
    return jk_cli_keys(&cli->cfg, cli->paths, cli->n_paths);
}

static int cmd_card(struct cli *cli)
{
    return jk_cli_card(&cli->cfg, cli->paths, cli->n_paths);
}

static int cmd_import(struct cli *cli)
{
    return jk_cli_import(&cli->cfg, cli->paths, cli->n_paths, cli->jobs);
}

/* The notifications: the WeChat adapter, the outbox's templates and channels, and its
 * dispatcher on db (stopped by jk_outbox_stop before db closes). */
static jk_rc notify_start(const struct jk_config *cfg, jk_store *db, char *err, size_t errlen)
{
    jk_rc rc = jk_wechat_init(cfg->wechat, err, errlen);
    if (!rc) rc = jk_outbox_init(cfg->notify_channels, err, errlen);
    if (!rc && (rc = jk_outbox_start(db)))
        snprintf(err, errlen, "the notification dispatcher cannot start: %s", jk_rc_name(rc));
    return rc;
}

static int cmd_serve(struct cli *cli)
{
    const struct jk_config *cfg = &cli->cfg;
    char addr[128];
    unsigned port;
    if (jk_config_listen(cfg, addr, sizeof addr, &port)) {
        fprintf(stderr, "jiankang: listen must be ADDR:PORT, not '%s'\n", cfg->listen);
        return 1;
    }
    /* Signals are taken by sigwait below, never by a worker thread. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    char perr[JK_PROTECT_ERR];
    if (jk_protect_start(cfg->keys, perr, sizeof perr) || /* identity numbers are sealed */
        jk_idnum_init(NULL, perr, sizeof perr) ||         /* and checked */
        jk_mpi_start(perr, sizeof perr)) {                /* and Patients linked to persons */
        fprintf(stderr, "jiankang: %s\n", perr);
        return 1;
    }
    jk_store *db = open_and_migrate(cfg);
    if (!db) return 1;
    /* The platform keys: they sign the audit checkpoints. */
    char kerr[1200] = "OpenSSL lacks SM2, SM3 or SM4, or libsodium cannot start";
    jk_keys *keys = NULL;
    if (jk_crypto_init() || jk_keys_load_or_create(cfg->keys, &keys, kerr, sizeof kerr)) {
        fprintf(stderr, "jiankang: %s\n", kerr);
        jk_store_close(db);
        return 1;
    }
    struct jk_audit audit;
    jk_audit_init(&audit, jk_keys_sm2(keys));
    long n_threads = cfg->threads ? cfg->threads : sysconf(_SC_NPROCESSORS_ONLN);
    struct jk_app app = {
        .db = db,
        .json_limits = {(int)cfg->max_json_depth, (size_t)cfg->max_array},
        .max_bundle_entries = (size_t)cfg->max_bundle_entries,
        .audit = cfg->security ? &audit : NULL,
        .is_security_off = !cfg->security,
        .web_dir = cfg->web_dir[0] ? cfg->web_dir : NULL,
    };
    if (app.web_dir && access(app.web_dir, R_OK | X_OK))
        jk_log_warn("main", "the web directory %s cannot be read (%s): no pages will be served",
                    app.web_dir, strerror(errno));
    struct jk_http_config hc = {
        .listen_addr = addr,
        .port = (uint16_t)port,
        .n_threads = (unsigned)(n_threads > 0 ? n_threads : 2),
        .limits = {(size_t)cfg->max_body_bytes, (size_t)cfg->max_url_bytes,
                   (size_t)cfg->max_headers, (size_t)cfg->max_header_bytes},
        .on_error = jk_api_error,
        .on_ready = jk_api_on_ready,
        .on_done = jk_api_guard_release,
        .is_access_log = (int)cfg->access_log,
        .app = &app,
    };
    hc.routes = jk_api_routes(&hc.n_routes);
    /* A bad rules file stops the start, naming the file and the rule. */
    struct jk_security_rules sec;
    char err[JK_RULES_ERR];
    struct jk_audit_ticker *ticker = NULL;
    struct jk_bk_horizon *horizon = NULL; /* keeps every Schedule's slots generated ahead */
    int status = 1;
    if (jk_security_rules_load(jk_security_rules_path(), &sec, err, sizeof err) ||
        jk_sms_init(cfg->sms, err, sizeof err) || notify_start(cfg, db, err, sizeof err) ||
        jk_bk_start(NULL, err, sizeof err) || jk_bk_sweeper_start(db) ||
        jk_rx_start(err, sizeof err) || /* the prescription rules and the formulary */
        jk_ih_start(NULL, err, sizeof err) || jk_ih_video_init(cfg->video, err, sizeof err) ||
        jk_api_resident_init(keys, err, sizeof err) || jk_api_card_init(keys, err, sizeof err) ||
        jk_rx_flow_start(keys, err, sizeof err) || jk_rx_flow_sweeper_start(db))
        fprintf(stderr, "jiankang: %s\n", err);
    else if (!jk_api_auth_init(&sec) && !jk_api_audit_init(keys) &&
             !jk_audit_ticker_start(&audit, db, &ticker) &&
             !jk_bk_horizon_start(db, jk_bk_rules(), 0, &horizon) && !jk_http_start(&hc, &app.srv))
        status = 0;
    if (status) {
        jk_bk_horizon_stop(horizon);
        jk_rx_flow_sweeper_stop();
        jk_rx_flow_stop();
        jk_bk_sweeper_stop();
        jk_outbox_stop();
        jk_audit_ticker_stop(ticker);
        jk_keys_free(keys);
        jk_bk_stop();
        jk_rx_stop();
        jk_ih_stop();
        jk_store_close(db);
        return status;
    }
    char base[300];
    if (cfg->base_url[0])
        snprintf(base, sizeof base, "%s", cfg->base_url);
    else
        snprintf(base, sizeof base, "http://%s%s%s:%u", strchr(addr, ':') ? "[" : "", addr,
                 strchr(addr, ':') ? "]" : "", jk_http_port(app.srv));
    app.base_url = base;
    jk_log_info("main", "listening on %s (database: %s, %u threads)", base, jk_store_backend(db),
                hc.n_threads);
    if (app.is_security_off) {
        static const char off[] = "security is off: development only; every request is allowed "
                                  "and nothing is audited";
        jk_log_warn("main", "%s", off);
        printf("WARNING: %s\n", off);
    }
    printf("Jiankang %s is running.\n", JK_VERSION);
    if (app.web_dir)
        printf("  resident pages: %s/\n"
               "  staff pages:    %s/web/staff.html\n",
               base, base);
    printf("  FHIR R4 API:    %s/fhir/R4/metadata\n"
           "  health:         %s/healthz\n"
           "  metrics:        %s/metrics\n"
           "Stop with Ctrl-C.\n",
           base, base, base);
    fflush(stdout);
    int sig = 0;
    sigwait(&stop, &sig);
    jk_log_info("main", "signal %d: finishing in-flight requests", sig);
    jk_http_stop(app.srv, 10000);
    jk_bk_horizon_stop(horizon);
    jk_rx_flow_sweeper_stop();
    jk_rx_flow_stop();
    jk_bk_sweeper_stop();
    jk_outbox_stop();
    if (jk_audit_ticker_stop(ticker)) status = 1; /* the last records signed, or say so */
    jk_keys_free(keys);
    jk_bk_stop();
    jk_rx_stop();
    jk_ih_stop();
    jk_store_close(db);
    if (!status) jk_log_info("main", "stopped cleanly");
    return status;
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        const char *usage;
        int (*run)(struct cli *);
        int takes_paths;
    } commands[] = {
        {"serve", usage_serve, cmd_serve, 0}, {"migrate", usage_migrate, cmd_migrate, 0},
        {"demo", usage_demo, cmd_demo, 0},    {"import", usage_import, cmd_import, 1},
        {"audit", usage_audit, cmd_audit, 1}, {"keys", usage_keys, cmd_keys, 1},
        {"card", usage_card, cmd_card, 1},
    };
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
        !strcmp(argv[1], "help")) {
        fputs(usage_main, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("jiankang %s\n", JK_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "user")) return jk_cli_user(argc - 1, argv + 1); /* its own options */
    if (!strcmp(argv[1], "supervision")) return jk_cli_supervision(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name)) continue;
        struct cli cli = {.demo_file = NULL, .takes_paths = commands[i].takes_paths};
        int r = parse_options(argc - 1, argv + 1, commands[i].usage, &cli);
        if (r) return r - 1;
        return commands[i].run(&cli);
    }
    fprintf(stderr, "jiankang: unknown command '%s'\n%s", argv[1], usage_main);
    return 2;
}
