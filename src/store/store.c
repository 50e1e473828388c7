/* store.c - backend selection, per-thread connections, migrations, and the statement API
 * that forwards to the backend. */
#include "store/store.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/time.h"
#include "store/store_int.h"

/* Numbered migrations. Never edit one that has shipped: add the next number. `@SERIAL_PK@`
 * stands for the backend's auto-increment primary key type, `@COLLATE_C@` for what makes a
 * text column compare byte by byte (nothing on SQLite, COLLATE "C" on PostgreSQL). */
static const char *const migrations[] = {
    /* 1: versioned resources and the token index used by conditional operations */
    "CREATE TABLE resource_version ("
    " seq @SERIAL_PK@,"
    " type TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " version INTEGER NOT NULL,"
    " last_updated TEXT NOT NULL,"
    " deleted INTEGER NOT NULL DEFAULT 0,"
    " method TEXT NOT NULL,"
    " body TEXT);"
    "CREATE UNIQUE INDEX resource_version_key ON resource_version (type, id, version);"
    "CREATE INDEX resource_version_type_seq ON resource_version (type, seq);"
    "CREATE TABLE idx_token ("
    " type TEXT NOT NULL,"
    " id TEXT NOT NULL,"
    " param TEXT NOT NULL,"
    " system TEXT NOT NULL,"
    " code TEXT NOT NULL);"
    "CREATE INDEX idx_token_lookup ON idx_token (type, param, code, system);"
    "CREATE INDEX idx_token_res ON idx_token (type, id);",

    /* 2: search indexes of every parameter type, and a flag on the current version */
    "ALTER TABLE resource_version ADD COLUMN is_current INTEGER NOT NULL DEFAULT 0;"
    "UPDATE resource_version SET is_current = 1 WHERE version = (SELECT MAX(r2.version)"
    " FROM resource_version r2 WHERE r2.type = resource_version.type"
    " AND r2.id = resource_version.id);"
    "CREATE INDEX resource_version_current ON resource_version (type, is_current, last_updated);"
    "ALTER TABLE idx_token ADD COLUMN text TEXT NOT NULL DEFAULT '';"
    "CREATE TABLE idx_string (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " norm TEXT NOT NULL, exact TEXT NOT NULL);"
    "CREATE INDEX idx_string_lookup ON idx_string (type, param, norm);"
    "CREATE INDEX idx_string_res ON idx_string (type, id);"
    "CREATE TABLE idx_date (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " lo BIGINT NOT NULL, hi BIGINT NOT NULL);"
    "CREATE INDEX idx_date_lookup ON idx_date (type, param, lo);"
    "CREATE INDEX idx_date_res ON idx_date (type, id);"
    "CREATE TABLE idx_number (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX idx_number_lookup ON idx_number (type, param, lo);"
    "CREATE INDEX idx_number_res ON idx_number (type, id);"
    "CREATE TABLE idx_quantity (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " system TEXT NOT NULL, code TEXT NOT NULL,"
    " lo DOUBLE PRECISION NOT NULL, hi DOUBLE PRECISION NOT NULL);"
    "CREATE INDEX idx_quantity_lookup ON idx_quantity (type, param, code, lo);"
    "CREATE INDEX idx_quantity_res ON idx_quantity (type, id);"
    "CREATE TABLE idx_reference (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " target_type TEXT NOT NULL, target_id TEXT NOT NULL, url TEXT NOT NULL);"
    "CREATE INDEX idx_reference_lookup ON idx_reference (type, param, target_id, target_type);"
    "CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id);"
    "CREATE INDEX idx_reference_res ON idx_reference (type, id);"
    "CREATE TABLE idx_uri (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " value TEXT NOT NULL);"
    "CREATE INDEX idx_uri_lookup ON idx_uri (type, param, value);"
    "CREATE INDEX idx_uri_res ON idx_uri (type, id);"
    "CREATE TABLE idx_composite (type TEXT NOT NULL, id TEXT NOT NULL, param TEXT NOT NULL,"
    " system1 TEXT NOT NULL, code1 TEXT NOT NULL, system2 TEXT NOT NULL, code2 TEXT NOT NULL,"
    " lo2 DOUBLE PRECISION, hi2 DOUBLE PRECISION, text2 TEXT NOT NULL);"
    "CREATE INDEX idx_composite_lookup ON idx_composite (type, param, code1);"
    "CREATE INDEX idx_composite_res ON idx_composite (type, id);",

    /* 3: search plans (docs/internals/search.md, "Query plans"). Current versions in seq
     * order (the default sort and its paging) and in last_updated order; string prefixes and
     * uri :below compared byte by byte whatever the database's collation; index rows found
     * by resource and parameter, so that checking one candidate reads only its own rows. */
    "CREATE INDEX resource_version_cur_seq ON resource_version (type, seq) WHERE is_current = 1;"
    "DROP INDEX resource_version_current;"
    "CREATE INDEX resource_version_cur_updated ON resource_version (type, last_updated, seq)"
    " WHERE is_current = 1;"
    "DROP INDEX idx_string_lookup;"
    "CREATE INDEX idx_string_lookup ON idx_string (type, param, norm@COLLATE_C@);"
    "DROP INDEX idx_uri_lookup;"
    "CREATE INDEX idx_uri_lookup ON idx_uri (type, param, value@COLLATE_C@);"
    "DROP INDEX idx_token_res; CREATE INDEX idx_token_res ON idx_token (type, id, param);"
    "DROP INDEX idx_string_res; CREATE INDEX idx_string_res ON idx_string (type, id, param);"
    "DROP INDEX idx_date_res; CREATE INDEX idx_date_res ON idx_date (type, id, param);"
    "DROP INDEX idx_number_res; CREATE INDEX idx_number_res ON idx_number (type, id, param);"
    "DROP INDEX idx_quantity_res; CREATE INDEX idx_quantity_res ON idx_quantity (type, id, param);"
    "DROP INDEX idx_reference_res;"
    "CREATE INDEX idx_reference_res ON idx_reference (type, id, param);"
    "DROP INDEX idx_uri_res; CREATE INDEX idx_uri_res ON idx_uri (type, id, param);"
    "DROP INDEX idx_composite_res;"
    "CREATE INDEX idx_composite_res ON idx_composite (type, id, param);",

    /* 4: accounts and tokens (docs/internals/auth.md). Times are milliseconds since 1970;
     * a token is stored only as its hash. */
    "CREATE TABLE account ("
    " id @SERIAL_PK@,"
    " username TEXT NOT NULL,"
    " role TEXT NOT NULL,"
    " org TEXT NOT NULL DEFAULT '',"
    " link TEXT NOT NULL DEFAULT '',"
    " pw_hash TEXT NOT NULL,"
    " totp_secret TEXT NOT NULL DEFAULT '',"
    " totp_last_step BIGINT NOT NULL DEFAULT 0,"
    " failed_count INTEGER NOT NULL DEFAULT 0,"
    " locked_until_ms BIGINT NOT NULL DEFAULT 0,"
    " password_set_ms BIGINT NOT NULL,"
    " created_ms BIGINT NOT NULL,"
    " is_disabled INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX account_username ON account (username);"
    "CREATE TABLE auth_token ("
    " id @SERIAL_PK@,"
    " hash TEXT NOT NULL,"
    " account_id BIGINT NOT NULL REFERENCES account (id),"
    " scopes TEXT NOT NULL,"
    " issued_ms BIGINT NOT NULL,"
    " expires_ms BIGINT NOT NULL,"
    " revoked INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX auth_token_hash ON auth_token (hash);"
    "CREATE INDEX auth_token_account ON auth_token (account_id, expires_ms);",

    /* 5: audit trail (docs/internals/audit.md): records chained by SM3 hash, checkpoints
     * signed with SM2, and the one-row chain head that serialises appends and names the
     * last checkpoint */
    "CREATE TABLE audit_event ("
    " seq BIGINT PRIMARY KEY,"
    " time_ms BIGINT NOT NULL,"
    " actor TEXT NOT NULL, role TEXT NOT NULL, org TEXT NOT NULL, action TEXT NOT NULL,"
    " res_type TEXT NOT NULL, res_id TEXT NOT NULL, patient_id TEXT NOT NULL,"
    " client_addr TEXT NOT NULL, outcome TEXT NOT NULL, request_id TEXT NOT NULL,"
    " reason TEXT NOT NULL,"
    " hash TEXT NOT NULL);"
    "CREATE INDEX audit_event_patient ON audit_event (patient_id, seq);"
    "CREATE TABLE audit_checkpoint ("
    " seq BIGINT PRIMARY KEY, hash TEXT NOT NULL, signed_ms BIGINT NOT NULL, sig TEXT NOT NULL);"
    "CREATE TABLE audit_head (id INTEGER PRIMARY KEY, ckpt_seq BIGINT NOT NULL,"
    " ckpt_ms BIGINT NOT NULL);"
    "INSERT INTO audit_head (id, ckpt_seq, ckpt_ms) VALUES (1, 0, 0);",

    /* 6: the organisation that holds each resource (its creator's), for authorisation
     * (docs/internals/authz.md) */
    "CREATE TABLE res_owner (type TEXT NOT NULL, id TEXT NOT NULL, org TEXT NOT NULL,"
    " PRIMARY KEY (type, id));"
    "CREATE INDEX res_owner_org ON res_owner (org, type);",

    /* 7: the master patient index: golden persons, each Patient's link to one with the
     * features it is matched on, the review queue and the history of every change
     * (docs/internals/mpi.md) */
    "CREATE TABLE mpi_person (id TEXT PRIMARY KEY, status TEXT NOT NULL, merged_into TEXT,"
    " created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);"
    "CREATE TABLE mpi_record (patient_id TEXT PRIMARY KEY, person_id TEXT NOT NULL,"
    " state TEXT NOT NULL, how TEXT NOT NULL, score DOUBLE PRECISION, id_key TEXT,"
    " han TEXT, pinyin TEXT, birth TEXT, sex TEXT, phone_key TEXT, region TEXT,"
    " block1 TEXT, block2 TEXT, block3 TEXT, updated_ms BIGINT NOT NULL);"
    "CREATE INDEX mpi_record_person ON mpi_record (person_id);"
    "CREATE INDEX mpi_record_id ON mpi_record (id_key);"
    "CREATE INDEX mpi_record_block1 ON mpi_record (block1);"
    "CREATE INDEX mpi_record_block2 ON mpi_record (block2);"
    "CREATE INDEX mpi_record_block3 ON mpi_record (block3);"
    "CREATE TABLE mpi_review (patient_id TEXT NOT NULL, person_id TEXT NOT NULL,"
    " score DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " decided_ms BIGINT, decided_by TEXT, PRIMARY KEY (patient_id, person_id));"
    "CREATE INDEX mpi_review_status ON mpi_review (status, created_ms);"
    "CREATE TABLE mpi_history (seq @SERIAL_PK@, at_ms BIGINT NOT NULL, actor TEXT NOT NULL,"
    " action TEXT NOT NULL, patient_id TEXT, person_id TEXT, from_person TEXT, detail TEXT);"
    "CREATE INDEX mpi_history_person ON mpi_history (person_id, seq);",

    /* 8: registration codes sent by SMS and not used yet (docs/internals/mpi.md): the phone
     * as a keyed hash, the code as a keyed hash of phone and code, never either in clear */
    "CREATE TABLE reg_code (phone_key TEXT PRIMARY KEY, code_hash TEXT NOT NULL,"
    " sent_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL, attempts INTEGER NOT NULL);",

    /* 9: electronic health cards (docs/internals/mpi.md): cards (one active per person),
     * numbers bound to them (sealed, found by blind index code), the nonces of dynamic QR
     * codes issued and used (pruned after expiry; keyed by expiry first, so that inserts and
     * look-ups stay on the B-tree's recent pages), and the log of every verification */
    "CREATE TABLE card (id TEXT PRIMARY KEY, number TEXT NOT NULL, person_id TEXT NOT NULL,"
    " patient_id TEXT NOT NULL, status TEXT NOT NULL, issued_ms BIGINT NOT NULL,"
    " revoked_ms BIGINT, reason TEXT NOT NULL DEFAULT '');"
    "CREATE UNIQUE INDEX card_number ON card (number);"
    "CREATE UNIQUE INDEX card_active ON card (person_id) WHERE status = 'active';"
    "CREATE INDEX card_person ON card (person_id, issued_ms);"
    "CREATE TABLE card_binding (kind TEXT NOT NULL, org TEXT NOT NULL, code TEXT NOT NULL,"
    " card_id TEXT NOT NULL, value TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " PRIMARY KEY (kind, org, code));"
    "CREATE INDEX card_binding_card ON card_binding (card_id);"
    "CREATE TABLE card_code (expires_ms BIGINT NOT NULL, nonce TEXT NOT NULL,"
    " card_id TEXT NOT NULL, mac TEXT NOT NULL, used_ms BIGINT,"
    " PRIMARY KEY (expires_ms, nonce));"
    "CREATE TABLE card_use (seq @SERIAL_PK@, card_id TEXT NOT NULL, at_ms BIGINT NOT NULL,"
    " org TEXT NOT NULL, role TEXT NOT NULL, result TEXT NOT NULL);"
    "CREATE INDEX card_use_card ON card_use (card_id, seq);",
    /* 10: the booking pool (docs/internals/booking.md): one row per generated slice, one per
     * place in it (its channel, when it opens and returns to the public, and who holds it),
     * one per booking with its state, the per-person counters of the limits, suspensions
     * after no-shows and the waiting lists; the outbox of notifications */
    "CREATE TABLE bk_slot (slot_id TEXT PRIMARY KEY, schedule_id TEXT NOT NULL,"
    " org TEXT NOT NULL, service TEXT NOT NULL, actor TEXT NOT NULL DEFAULT '',"
    " fee_level TEXT NOT NULL, day TEXT NOT NULL, session TEXT NOT NULL,"
    " start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL, capacity INTEGER NOT NULL,"
    " n_booked INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL, UNIQUE (schedule_id, start_ms));"
    "CREATE INDEX bk_slot_service ON bk_slot (service, day, start_ms);"
    "CREATE INDEX bk_slot_org ON bk_slot (org, day, start_ms);"
    "CREATE INDEX bk_slot_actor ON bk_slot (actor, day, start_ms);"
    "CREATE TABLE bk_place (id @SERIAL_PK@, slot_id TEXT NOT NULL, n INTEGER NOT NULL,"
    " channel TEXT NOT NULL, open_ms BIGINT NOT NULL, public_ms BIGINT NOT NULL DEFAULT 0,"
    " state TEXT NOT NULL DEFAULT 'free', booking_id BIGINT, until_ms BIGINT NOT NULL DEFAULT 0,"
    " UNIQUE (slot_id, n));"
    "CREATE TABLE bk_booking (id @SERIAL_PK@, appointment_id TEXT, slot_id TEXT NOT NULL,"
    " place_id BIGINT NOT NULL, person TEXT NOT NULL, patient_id TEXT NOT NULL,"
    " account_id BIGINT NOT NULL, channel TEXT NOT NULL, org TEXT NOT NULL,"
    " service TEXT NOT NULL, day TEXT NOT NULL, session_key TEXT NOT NULL,"
    " state TEXT NOT NULL, until_ms BIGINT NOT NULL DEFAULT 0, is_late INTEGER NOT NULL DEFAULT 0,"
    " created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL);"
    "CREATE UNIQUE INDEX bk_booking_session ON bk_booking (person, session_key)"
    " WHERE state IN ('held', 'booked', 'arrived');"
    "CREATE UNIQUE INDEX bk_booking_appointment ON bk_booking (appointment_id);"
    "CREATE INDEX bk_booking_person ON bk_booking (person, state);"
    "CREATE INDEX bk_booking_patient ON bk_booking (patient_id, created_ms);"
    "CREATE INDEX bk_booking_slot ON bk_booking (slot_id, state);"
    "CREATE INDEX bk_booking_due ON bk_booking (state, day);"
    "CREATE TABLE bk_count (person TEXT NOT NULL, k TEXT NOT NULL, n INTEGER NOT NULL,"
    " PRIMARY KEY (person, k));"
    "CREATE TABLE bk_suspension (person TEXT PRIMARY KEY, until_ms BIGINT NOT NULL,"
    " noshows INTEGER NOT NULL, year TEXT NOT NULL, since_ms BIGINT NOT NULL);"
    "CREATE TABLE bk_wait (id @SERIAL_PK@, slot_id TEXT NOT NULL, person TEXT NOT NULL,"
    " patient_id TEXT NOT NULL, account_id BIGINT NOT NULL, channel TEXT NOT NULL,"
    " state TEXT NOT NULL, booking_id BIGINT, created_ms BIGINT NOT NULL);"
    "CREATE UNIQUE INDEX bk_wait_once ON bk_wait (slot_id, person) WHERE state = 'waiting';"
    "CREATE INDEX bk_wait_slot ON bk_wait (slot_id, state, id);"
    "CREATE TABLE outbox (id @SERIAL_PK@, topic TEXT NOT NULL, ref TEXT NOT NULL,"
    " patient_id TEXT NOT NULL, payload TEXT NOT NULL, created_ms BIGINT NOT NULL,"
    " due_ms BIGINT NOT NULL, state TEXT NOT NULL DEFAULT 'pending',"
    " attempts INTEGER NOT NULL DEFAULT 0, claimed_ms BIGINT NOT NULL DEFAULT 0,"
    " done_ms BIGINT, error TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX outbox_due ON outbox (state, due_ms);"
    "CREATE INDEX outbox_ref ON outbox (ref, state);",

    /* 11: the channels a notification was delivered through already (comma-separated), so
     * that a retry sends only through the channels that failed (docs/internals/booking.md) */
    "ALTER TABLE outbox ADD COLUMN sent_channels TEXT NOT NULL DEFAULT '';",
    /* 12: the internet hospital (docs/internals/rx.md): online follow-up visits, the
     * doctors' signing keys, prescriptions with their review, redemption and dispensing, and
     * delivery orders */
    "CREATE TABLE ih_visit (id TEXT PRIMARY KEY, patient_id TEXT NOT NULL, person TEXT NOT NULL,"
    " account_id BIGINT NOT NULL, org TEXT NOT NULL, doctor TEXT NOT NULL, condition_code TEXT"
    " NOT NULL, basis TEXT NOT NULL, guardian TEXT NOT NULL DEFAULT '', status TEXT NOT NULL,"
    " started_ms BIGINT NOT NULL, ended_ms BIGINT, end_reason TEXT NOT NULL DEFAULT '',"
    " amount_fen BIGINT NOT NULL DEFAULT 0);"
    "CREATE INDEX ih_visit_doctor ON ih_visit (doctor, status, started_ms);"
    "CREATE INDEX ih_visit_patient ON ih_visit (patient_id, started_ms);"
    "CREATE INDEX ih_visit_org ON ih_visit (org, started_ms);"
    "CREATE TABLE rx_signer (practitioner TEXT PRIMARY KEY, public_pem TEXT NOT NULL,"
    " private_sealed TEXT NOT NULL, created_ms BIGINT NOT NULL);"
    "CREATE TABLE rx_prescription (id TEXT PRIMARY KEY, visit_id TEXT NOT NULL,"
    " patient_id TEXT NOT NULL, person TEXT NOT NULL, doctor TEXT NOT NULL, org TEXT NOT NULL,"
    " status TEXT NOT NULL, created_ms BIGINT NOT NULL, digest TEXT NOT NULL,"
    " signature TEXT NOT NULL, warnings TEXT NOT NULL DEFAULT '[]', reviewer TEXT,"
    " reviewed_ms BIGINT, review_codes TEXT NOT NULL DEFAULT '', review_text TEXT NOT NULL"
    " DEFAULT '', code_key TEXT, valid_until_ms BIGINT NOT NULL DEFAULT 0, pharmacy TEXT,"
    " delivery TEXT NOT NULL DEFAULT '', dispensed_ms BIGINT, amount_fen BIGINT NOT NULL"
    " DEFAULT 0);"
    "CREATE INDEX rx_prescription_review ON rx_prescription (org, status, created_ms);"
    "CREATE INDEX rx_prescription_patient ON rx_prescription (patient_id, created_ms);"
    "CREATE INDEX rx_prescription_visit ON rx_prescription (visit_id);"
    "CREATE UNIQUE INDEX rx_prescription_code ON rx_prescription (code_key);"
    "CREATE INDEX rx_prescription_day ON rx_prescription (created_ms);"
    "CREATE TABLE rx_delivery (prescription_id TEXT PRIMARY KEY, pharmacy TEXT NOT NULL,"
    " status TEXT NOT NULL, carrier TEXT NOT NULL DEFAULT '', waybill TEXT NOT NULL DEFAULT '',"
    " address_sealed TEXT NOT NULL DEFAULT '', updated_ms BIGINT NOT NULL, history TEXT NOT NULL"
    " DEFAULT '[]');"
    "CREATE INDEX rx_delivery_pharmacy ON rx_delivery (pharmacy, status);",
    /* 13: prescription circulation (docs/internals/rx.md): when a prescription was presented
     * to its pharmacy (a pharmacy sees only those), the summary the review queue and the
     * supervision lists show without reading resources (filled by the prescribing service or
     * the sweep), and the indexes of the review queue's pages, the pharmacy's list, the expiry
     * sweep and the summary fill */
    "ALTER TABLE rx_prescription ADD COLUMN presented_ms BIGINT;"
    "ALTER TABLE rx_prescription ADD COLUMN summary TEXT NOT NULL DEFAULT '';"
    "CREATE INDEX rx_prescription_queue ON rx_prescription (org, status, created_ms, id);"
    "CREATE INDEX rx_prescription_pharmacy ON rx_prescription (pharmacy, presented_ms);"
    "CREATE INDEX rx_prescription_expiry ON rx_prescription (status, valid_until_ms);"
    "CREATE INDEX rx_prescription_unsummarized ON rx_prescription (created_ms)"
    " WHERE summary = '';",
};

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

static void conn_key_destroy(void *p)
{
    (void)p; /* connections are closed with the store, not with their thread */
}

jk_rc jk_store_open(const char *url, jk_store **out, char *err, size_t errlen)
{
    const struct jk_backend *be = NULL;
    const char *target = NULL;
    if (strncmp(url, "sqlite:", 7) == 0) {
        be = &jk_sqlite_backend;
        target = url + 7;
    } else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        be = &jk_pg_backend;
        target = url;
    } else {
        snprintf(err, errlen, "database URL '%.64s' is neither sqlite:PATH nor postgresql://...",
                 url);
        return JK_EINVAL;
    }
    if (!*target) {
        snprintf(err, errlen, "database URL '%s' names no database", url);
        return JK_EINVAL;
    }
    jk_store *st = calloc(1, sizeof *st);
    if (!st) return JK_ENOMEM;
    st->be = be;
    st->target = strdup(target);
    pthread_mutex_init(&st->conns_lock, NULL);
    if (!st->target || pthread_key_create(&st->conn_key, conn_key_destroy)) {
        free(st->target);
        free(st);
        return JK_ENOMEM;
    }
    /* Open one connection now so that a bad URL is reported here, not on first request. */
    jk_conn *c = NULL;
    jk_rc rc = be->conn_open(st, &c, err, errlen);
    if (!rc) {
        pthread_setspecific(st->conn_key, c);
        rc = be->start(st);
        if (rc) snprintf(err, errlen, "cannot start the %s store", be->name);
    }
    if (rc) {
        jk_store_close(st);
        return rc;
    }
    *out = st;
    return JK_OK;
}

void jk_store_close(jk_store *st)
{
    if (!st) return;
    st->be->stop(st);
    struct jk_conn_base *b = st->conns;
    while (b) {
        struct jk_conn_base *next = b->next_open;
        st->be->conn_close((jk_conn *)b);
        b = next;
    }
    pthread_key_delete(st->conn_key);
    pthread_mutex_destroy(&st->conns_lock);
    free(st->target);
    free(st);
}

const char *jk_store_backend(const jk_store *st)
{
    return st->be->name;
}

jk_conn *jk_store_conn_new(jk_store *st)
{
    jk_conn *c = NULL;
    char err[256];
    if (st->be->conn_open(st, &c, err, sizeof err)) {
        jk_log_error("store", "cannot open a database connection: %s", err);
        return NULL;
    }
    return c;
}

jk_conn *jk_store_conn(jk_store *st)
{
    jk_conn *c = pthread_getspecific(st->conn_key);
    if (c) return c;
    c = jk_store_conn_new(st);
    if (c) pthread_setspecific(st->conn_key, c);
    return c;
}

void jk_store_track_conn(jk_store *st, struct jk_conn_base *b)
{
    b->st = st;
    pthread_mutex_lock(&st->conns_lock);
    b->next_open = st->conns;
    st->conns = b;
    pthread_mutex_unlock(&st->conns_lock);
}

static size_t ptr_hash(const void *p, size_t cap)
{
    return (size_t)(((uintptr_t)p >> 3) * 0x9E3779B97F4A7C15ull) & (cap - 1);
}

jk_stmt *jk_stmt_cache_find(const struct jk_stmt_cache *k, const char *sql)
{
    if (!k->cap) return NULL;
    for (size_t h = ptr_hash(sql, k->cap); k->slots[h].sql; h = (h + 1) & (k->cap - 1))
        if (k->slots[h].sql == sql) return k->slots[h].stmt;
    return NULL;
}

jk_rc jk_stmt_cache_put(struct jk_stmt_cache *k, const char *sql, jk_stmt *stmt)
{
    if ((k->n + 1) * 2 > k->cap) {
        size_t cap = k->cap ? k->cap * 2 : 64;
        struct jk_stmt_slot *slots = calloc(cap, sizeof *slots);
        if (!slots) return JK_ENOMEM;
        for (size_t i = 0; i < k->cap; i++) {
            if (!k->slots[i].sql) continue;
            size_t h = ptr_hash(k->slots[i].sql, cap);
            while (slots[h].sql)
                h = (h + 1) & (cap - 1);
            slots[h] = k->slots[i];
        }
        free(k->slots);
        k->slots = slots;
        k->cap = cap;
    }
    size_t h = ptr_hash(sql, k->cap);
    while (k->slots[h].sql)
        h = (h + 1) & (k->cap - 1);
    k->slots[h] = (struct jk_stmt_slot){sql, stmt};
    k->n++;
    return JK_OK;
}

void jk_stmt_cache_clear(struct jk_stmt_cache *k, void (*release)(jk_stmt *))
{
    for (size_t i = 0; i < k->cap; i++)
        if (k->slots[i].sql) release(k->slots[i].stmt);
    free(k->slots);
    memset(k, 0, sizeof *k);
}

/* Expands the dialect tokens for the backend: @SERIAL_PK@ and @COLLATE_C@. The result is
 * malloc'ed. */
static char *migration_sql(const struct jk_backend *be, const char *sql)
{
    const struct {
        const char *token, *value;
    } subst[] = {{"@SERIAL_PK@", be->serial_pk}, {"@COLLATE_C@", be->collate_c}};
    size_t n = strlen(sql) + 1;
    for (size_t k = 0; k < sizeof subst / sizeof subst[0]; k++) {
        size_t tl = strlen(subst[k].token);
        for (const char *p = strstr(sql, subst[k].token); p; p = strstr(p + tl, subst[k].token))
            n += strlen(subst[k].value);
    }
    char *out = malloc(n), *w = out;
    if (!out) return NULL;
    const char *p = sql;
    while (*p) {
        size_t k = 0;
        while (k < sizeof subst / sizeof subst[0] &&
               (*p != '@' || strncmp(p, subst[k].token, strlen(subst[k].token))))
            k++;
        if (k == sizeof subst / sizeof subst[0]) {
            *w++ = *p++;
            continue;
        }
        size_t vl = strlen(subst[k].value);
        memcpy(w, subst[k].value, vl);
        w += vl;
        p += strlen(subst[k].token);
    }
    *w = 0;
    return out;
}

struct migrate_arg {
    const struct jk_backend *be;
    int n_applied;
};

static jk_rc migrate_tx(jk_conn *c, void *arg)
{
    struct migrate_arg *m = arg;
    static const char sql_create[] = "CREATE TABLE IF NOT EXISTS schema_migration ("
                                     " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)";
    static const char sql_max[] = "SELECT COALESCE(MAX(version), 0) FROM schema_migration";
    static const char sql_record[] =
        "INSERT INTO schema_migration (version, applied_at) VALUES (?, ?)";
    jk_rc rc = m->be->migrate_lock ? jk_conn_exec(c, m->be->migrate_lock) : JK_OK;
    if (!rc) rc = jk_conn_exec(c, sql_create);
    if (rc) return rc;
    jk_stmt *s;
    int has_row = 0;
    if ((rc = jk_conn_prepare(c, sql_max, &s))) return rc;
    rc = jk_stmt_step(s, &has_row);
    int64_t current = (!rc && has_row) ? jk_stmt_col_int(s, 0) : 0;
    jk_stmt_reset(s);
    if (rc) return rc;
    for (int i = current < 0 ? 0 : (int)current; i < N_MIGRATIONS; i++) {
        int v = i + 1;
        char *sql = migration_sql(m->be, migrations[i]);
        if (!sql) return JK_ENOMEM;
        rc = jk_conn_exec(c, sql);
        free(sql);
        if (rc) {
            jk_log_error("store", "migration %d failed: %s", v, jk_conn_errmsg(c));
            return rc;
        }
        char now[40];
        jk_time_iso(jk_time_now_ms(), now, sizeof now);
        if ((rc = jk_conn_prepare(c, sql_record, &s))) return rc;
        jk_stmt_int_arg(s, 1, v);
        jk_stmt_text_arg(s, 2, now, strlen(now));
        rc = jk_stmt_step(s, &has_row);
        jk_stmt_reset(s);
        if (rc) return rc;
        m->n_applied++;
    }
    return JK_OK;
}

jk_rc jk_store_migrate(jk_store *st, int *n_applied)
{
    struct migrate_arg m = {st->be, 0};
    jk_rc rc = jk_store_tx(st, migrate_tx, &m);
    if (n_applied) *n_applied = rc ? 0 : m.n_applied;
    return rc;
}

struct tx_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int is_done;
    jk_rc rc;
};

static void tx_wait_done(void *arg, jk_rc rc)
{
    struct tx_wait *w = arg;
    pthread_mutex_lock(&w->lock);
    w->rc = rc;
    w->is_done = 1;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

jk_rc jk_store_tx(jk_store *st, jk_tx_fn fn, void *arg)
{
    struct tx_wait w = {.is_done = 0, .rc = JK_OK};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    st->be->tx_async(st, fn, arg, tx_wait_done, &w);
    pthread_mutex_lock(&w.lock);
    while (!w.is_done)
        pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return w.rc;
}

void jk_store_tx_async(jk_store *st, jk_tx_fn fn, void *arg, void (*done)(void *done_arg, jk_rc rc),
                       void *done_arg)
{
    st->be->tx_async(st, fn, arg, done, done_arg);
}

static const struct jk_backend *be_of(jk_conn *c)
{
    return ((struct jk_conn_base *)c)->st->be;
}

static const struct jk_backend *be_of_stmt(jk_stmt *s)
{
    return be_of(((struct jk_stmt_base *)s)->c);
}

jk_rc jk_conn_prepare(jk_conn *c, const char *sql, jk_stmt **out)
{
    return be_of(c)->prepare(c, sql, out);
}

jk_rc jk_conn_prepare_once(jk_conn *c, const char *sql, jk_stmt **out)
{
    return be_of(c)->prepare_once(c, sql, out);
}

void jk_stmt_finalize(jk_stmt *s)
{
    if (s) be_of_stmt(s)->finalize(s);
}

const char *jk_conn_backend(jk_conn *c)
{
    return be_of(c)->name;
}

const char *jk_conn_collate_c(jk_conn *c)
{
    return be_of(c)->collate_c;
}

jk_rc jk_conn_exec(jk_conn *c, const char *sql)
{
    return be_of(c)->exec(c, sql);
}

const char *jk_conn_errmsg(jk_conn *c)
{
    return be_of(c)->errmsg(c);
}

jk_rc jk_stmt_text_arg(jk_stmt *s, int i, const char *p, size_t n)
{
    return be_of_stmt(s)->text_arg(s, i, p, n);
}

jk_rc jk_stmt_int_arg(jk_stmt *s, int i, int64_t v)
{
    return be_of_stmt(s)->int_arg(s, i, v);
}

jk_rc jk_stmt_double_arg(jk_stmt *s, int i, double v)
{
    return be_of_stmt(s)->double_arg(s, i, v);
}

jk_rc jk_stmt_null_arg(jk_stmt *s, int i)
{
    return be_of_stmt(s)->null_arg(s, i);
}

jk_rc jk_stmt_step(jk_stmt *s, int *has_row)
{
    return be_of_stmt(s)->step(s, has_row);
}

const char *jk_stmt_col_text(jk_stmt *s, int i, size_t *len)
{
    return be_of_stmt(s)->col_text(s, i, len);
}

int64_t jk_stmt_col_int(jk_stmt *s, int i)
{
    return be_of_stmt(s)->col_int(s, i);
}

double jk_stmt_col_double(jk_stmt *s, int i)
{
    return be_of_stmt(s)->col_double(s, i);
}

int jk_stmt_col_is_null(jk_stmt *s, int i)
{
    return be_of_stmt(s)->col_is_null(s, i);
}

int64_t jk_stmt_changes(jk_stmt *s)
{
    return be_of_stmt(s)->changes(s);
}

void jk_stmt_reset(jk_stmt *s)
{
    be_of_stmt(s)->reset(s);
}

/* ---- statements bound from a list of types ---- */

static jk_rc bind_list(jk_stmt *s, const char *types, va_list ap)
{
    jk_rc rc = JK_OK;
    for (int i = 0; !rc && types[i]; i++) {
        if (types[i] == 't') {
            const char *t = va_arg(ap, const char *);
            rc = t ? jk_stmt_text_arg(s, i + 1, t, strlen(t)) : jk_stmt_null_arg(s, i + 1);
        } else {
            rc = jk_stmt_int_arg(s, i + 1, va_arg(ap, int64_t));
        }
    }
    return rc;
}

jk_rc jk_conn_query(jk_conn *c, const char *sql, jk_stmt **s, int *has_row, const char *types, ...)
{
    va_list ap;
    int dummy;
    *s = NULL;
    jk_rc rc = jk_conn_prepare(c, sql, s);
    va_start(ap, types);
    if (!rc) rc = bind_list(*s, types, ap);
    va_end(ap);
    if (!rc) rc = jk_stmt_step(*s, has_row ? has_row : &dummy);
    return rc;
}

jk_rc jk_conn_run(jk_conn *c, const char *sql, int64_t *changes, const char *types, ...)
{
    va_list ap;
    int has_row;
    jk_stmt *s = NULL;
    jk_rc rc = jk_conn_prepare(c, sql, &s);
    va_start(ap, types);
    if (!rc) rc = bind_list(s, types, ap);
    va_end(ap);
    if (!rc) rc = jk_stmt_step(s, &has_row);
    if (!rc && changes) *changes = jk_stmt_changes(s);
    if (s) jk_stmt_reset(s);
    return rc;
}

const char *jk_stmt_col_dup(struct jk_arena *a, jk_stmt *s, int i)
{
    size_t n = 0;
    const char *t = jk_stmt_col_text(s, i, &n);
    char *out = jk_arena_alloc(a, n + 1);
    if (out) {
        memcpy(out, t ? t : "", n);
        out[n] = '\0';
    }
    return out;
}
