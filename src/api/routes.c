/* routes.c - the route table, and the small handlers that need no service. */
#include <string.h>

#include "api/api_int.h"
#include "core/arena.h"
#include "core/time.h"
#include "fhir/model.h"
#include "fhir/searchparam.h"

static const struct jk_route routes[] = {
    {"GET", "/", jk_api_web_index},
    {"GET", "/web/*rest", jk_api_web_file},
    {"GET", "/healthz", jk_api_healthz},
    {"GET", "/metrics", jk_api_metrics},
    {"POST", "/auth/token", jk_api_auth_token},
    {"POST", "/auth/revoke", jk_api_auth_revoke},
    {"GET", "/auth/me", jk_api_auth_me},
    {"GET", "/api/me/access-log", jk_api_access_log},
    {"POST", "/api/residents/register/code", jk_api_register_code},
    {"POST", "/api/residents/register", jk_api_register},
    {"POST", "/api/residents/newborns", jk_api_register_newborn},
    {"POST", "/api/cards", jk_api_card_issue},
    {"GET", "/api/cards", jk_api_card_list},
    {"POST", "/api/cards/verify", jk_api_card_verify},
    {"GET", "/api/cards/:id/qr", jk_api_card_qr},
    {"POST", "/api/cards/:id/bindings", jk_api_card_bind},
    {"POST", "/api/cards/:id/revoke", jk_api_card_revoke},
    {"GET", "/api/cards/:id/uses", jk_api_card_uses},
    {"GET", "/api/slots", jk_api_booking_find},
    {"GET", "/api/booking/me", jk_api_booking_me},
    {"GET", "/api/booking/desk", jk_api_booking_desk},
    {"POST", "/api/booking/waitlist", jk_api_booking_wait},
    {"POST", "/fhir/R4/Appointment/$hold", jk_api_booking_hold},
    {"POST", "/fhir/R4/Appointment/$book", jk_api_booking_book},
    {"POST", "/fhir/R4/Appointment/:id/$cancel", jk_api_booking_cancel},
    {"POST", "/fhir/R4/Appointment/:id/$reschedule", jk_api_booking_reschedule},
    {"POST", "/fhir/R4/Appointment/:id/$checkin", jk_api_booking_checkin},
    {"POST", "/fhir/R4/Appointment/:id/$complete", jk_api_booking_complete},
    {"POST", "/api/rx/check", jk_api_rx_check},
    {"GET", "/api/rx/formulary", jk_api_rx_formulary},
    {"POST", "/api/rx/prescriptions", jk_api_rx_prescribe},
    {"POST", "/fhir/R4/MedicationRequest/$verify-signature", jk_api_rx_verify},
    {"GET", "/fhir/R4/AuditEvent", jk_api_audit_search},
    {"GET", "/fhir/R4/AuditEvent/:id", jk_api_audit_read},
    {"*", "/fhir/R4/AuditEvent", jk_api_audit_refuse},
    {"*", "/fhir/R4/AuditEvent/*rest", jk_api_audit_refuse},
    {"GET", "/fhir/R4/metadata", jk_api_fhir_metadata},
    {"POST", "/fhir/R4", jk_api_fhir_bundle},
    {"POST", "/fhir/R4/", jk_api_fhir_bundle},
    {"POST", "/fhir/R4/Patient/$match", jk_api_fhir_match},
    {"POST", "/fhir/R4/Schedule/:id/$generate", jk_api_schedule_generate},
    {"GET", "/api/booking/stats", jk_api_booking_stats},
    /* online follow-up visits (ih_api.c) */
    {"POST", "/api/ih/visits", jk_api_ih_open},
    {"GET", "/api/ih/visits", jk_api_ih_list},
    {"GET", "/api/ih/visits/:id", jk_api_ih_get},
    {"POST", "/api/ih/visits/:id/confirm", jk_api_ih_confirm},
    {"POST", "/api/ih/visits/:id/messages", jk_api_ih_post},
    {"GET", "/api/ih/visits/:id/messages", jk_api_ih_messages},
    {"POST", "/api/ih/visits/:id/video", jk_api_ih_video},
    {"POST", "/api/ih/visits/:id/end", jk_api_ih_end},
    {"GET", "/api/rx/review-queue", jk_api_rx_queue},
    {"GET", "/api/rx/prescriptions", jk_api_rx_list},
    {"GET", "/api/rx/prescriptions/:id", jk_api_rx_get},
    {"POST", "/api/rx/prescriptions/:id/review", jk_api_rx_review},
    {"POST", "/api/rx/prescriptions/:id/pharmacy", jk_api_rx_choose},
    {"POST", "/api/rx/prescriptions/:id/dispense", jk_api_rx_dispense},
    {"POST", "/api/rx/prescriptions/:id/delivery", jk_api_rx_delivery},
    {"POST", "/api/rx/prescriptions/:id/cancel", jk_api_rx_cancel},
    {"POST", "/api/rx/redeem", jk_api_rx_redeem},
    {"GET", "/api/supervision/visits", jk_api_supervision_visits},
    {"GET", "/api/supervision/prescriptions", jk_api_supervision_prescriptions},
    {"GET", "/api/mpi/persons", jk_api_mpi_person},
    {"GET", "/api/mpi/persons/:id", jk_api_mpi_person},
    {"GET", "/api/mpi/persons/:id/history", jk_api_mpi_history},
    {"GET", "/api/mpi/reviews", jk_api_mpi_reviews},
    {"POST", "/api/mpi/reviews/decide", jk_api_mpi_decide},
    {"POST", "/api/mpi/link", jk_api_mpi_link},
    {"POST", "/api/mpi/unlink", jk_api_mpi_unlink},
    {"POST", "/api/mpi/merge", jk_api_mpi_merge},
    {"POST", "/api/mpi/unmerge", jk_api_mpi_unmerge},
    {"GET", "/fhir/R4/Patient/:id/$everything", jk_api_fhir_everything},
    {"POST", "/fhir/R4/:type/$validate", jk_api_fhir_validate},
    {"POST", "/fhir/R4/:type/:id/$validate", jk_api_fhir_validate},
    {"GET", "/fhir/R4/:type/:id/$meta", jk_api_fhir_meta},
    {"POST", "/fhir/R4/:type/:id/$meta-add", jk_api_fhir_meta_add},
    {"POST", "/fhir/R4/:type/:id/$meta-delete", jk_api_fhir_meta_delete},
    {"GET", "/fhir/R4/:type/:id/_history/:vid/$meta", jk_api_fhir_meta},
    {"POST", "/fhir/R4/:type/:id/_history/:vid/$meta-add", jk_api_fhir_meta_add},
    {"POST", "/fhir/R4/:type/:id/_history/:vid/$meta-delete", jk_api_fhir_meta_delete},
    {"PATCH", "/fhir/R4/:type/:id", jk_api_fhir_patch},
    {"PATCH", "/fhir/R4/:type", jk_api_fhir_cond_patch},
    {"GET", "/fhir/R4/_history", jk_api_fhir_history},
    {"GET", "/fhir/R4/:type/_history", jk_api_fhir_history},
    {"GET", "/fhir/R4/:type/:id/_history", jk_api_fhir_history},
    {"GET", "/fhir/R4/:type/:id/_history/:vid", jk_api_fhir_vread},
    {"GET", "/fhir/R4/:type/:id", jk_api_fhir_read},
    {"GET", "/fhir/R4/:type", jk_api_fhir_search},
    {"POST", "/fhir/R4/:type/_search", jk_api_fhir_search_post},
    {"PUT", "/fhir/R4/:type/:id", jk_api_fhir_update},
    {"DELETE", "/fhir/R4/:type/:id", jk_api_fhir_delete},
    {"POST", "/fhir/R4/:type", jk_api_fhir_create},
    {"PUT", "/fhir/R4/:type", jk_api_fhir_cond_update},
    {"DELETE", "/fhir/R4/:type", jk_api_fhir_cond_delete},
};

const struct jk_route *jk_api_routes(size_t *n)
{
    *n = sizeof routes / sizeof routes[0];
    return routes;
}

jk_rc jk_api_healthz(struct jk_http_req *rq)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char sql[] = "SELECT 1";
    jk_conn *c = jk_store_conn(jk_api_app(rq)->db);
    jk_stmt *s;
    int has_row = 0;
    if (!c || jk_conn_prepare(c, sql, &s)) return JK_EDB;
    jk_rc rc = jk_stmt_step(s, &has_row);
    jk_stmt_reset(s);
    if (rc || !has_row) return JK_EDB;
    return jk_http_respond(rq, 200, "application/json", ok, sizeof ok - 1);
}

jk_rc jk_api_metrics(struct jk_http_req *rq)
{
    struct jk_buf b;
    jk_buf_init(&b, 0);
    jk_rc rc = jk_http_metrics(jk_api_app(rq)->srv, &b);
    char *text = rc ? NULL : jk_arena_strndup(rq->arena, b.p, b.len);
    size_t len = b.len;
    jk_buf_free(&b);
    if (!text) return rc ? rc : JK_ENOMEM;
    return jk_http_respond(rq, 200, "text/plain; version=0.0.4", text, len);
}

/* The CapabilityStatement lists exactly the interactions the routes above implement. */
jk_rc jk_api_fhir_metadata(struct jk_http_req *rq)
{
    jk_rc rc = jk_api_check_format(rq);
    if (rc) return rc;
    char now[40];
    struct jk_buf b;
    jk_buf_init(&b, 0);
    rc = jk_buf_printf(
        &b,
        "{\"resourceType\":\"CapabilityStatement\",\"status\":\"active\",\"date\":\"%.10s\","
        "\"publisher\":\"Jiankang\",\"kind\":\"instance\","
        "\"software\":{\"name\":\"Jiankang\",\"version\":\"%s\"},"
        "\"implementation\":{\"description\":\"Jiankang regional health information "
        "platform\",\"url\":\"%s/fhir/R4\"},"
        "\"fhirVersion\":\"4.0.1\",\"format\":[\"json\"],"
        "\"rest\":[{\"mode\":\"server\",\"resource\":[",
        jk_time_iso(jk_time_now_ms(), now, sizeof now), JK_VERSION, jk_api_app(rq)->base_url);
    int first = 1;
    for (size_t i = 0; i < jk_fhir_n_types() && !rc; i++) {
        const struct jk_fhir_type *t = jk_fhir_type_at((uint16_t)i);
        if (t->kind != JK_FHIR_RESOURCE || t->is_abstract) continue;
        rc = jk_buf_printf(
            &b,
            "%s{\"type\":\"%s\",\"interaction\":[{\"code\":\"read\"},{\"code\":\"vread\"},"
            "{\"code\":\"update\"},{\"code\":\"delete\"},{\"code\":\"history-instance\"},"
            "{\"code\":\"history-type\"},{\"code\":\"create\"},{\"code\":\"search-type\"},"
            "{\"code\":\"patch\"}],"
            "\"versioning\":\"versioned\","
            "\"readHistory\":true,\"updateCreate\":true,\"conditionalCreate\":true,"
            "\"conditionalUpdate\":true,\"conditionalDelete\":\"single\","
            "\"searchInclude\":[\"*\"],\"searchRevInclude\":[\"*\"],\"searchParam\":[",
            first ? "" : ",", jk_fhir_str(t->name));
        first = 0;
        /* Every parameter search understands (docs/internals/search.md). */
        static const char *const sp_types[] = {
            [JK_SP_NUMBER] = "number",       [JK_SP_DATE] = "date",
            [JK_SP_STRING] = "string",       [JK_SP_TOKEN] = "token",
            [JK_SP_REFERENCE] = "reference", [JK_SP_COMPOSITE] = "composite",
            [JK_SP_QUANTITY] = "quantity",   [JK_SP_URI] = "uri",
            [JK_SP_SPECIAL] = "special"};
        const struct jk_sp *const *sps;
        size_t n_sp = jk_sp_list(jk_fhir_str(t->name), &sps);
        int first_sp = 1;
        for (size_t k = 0; k < n_sp && !rc; k++) {
            if (sps[k]->type == JK_SP_SPECIAL) continue; /* not searchable here */
            rc = jk_buf_printf(&b, "%s{\"name\":\"%s\",\"type\":\"%s\"}", first_sp ? "" : ",",
                               sps[k]->code, sp_types[sps[k]->type]);
            first_sp = 0;
        }
        if (!rc && !strcmp(jk_fhir_str(t->name), "Patient"))
            rc = jk_buf_puts(&b, "],\"operation\":[{\"name\":\"everything\",\"definition\":"
                                 "\"http://hl7.org/fhir/OperationDefinition/Patient-everything\"},"
                                 "{\"name\":\"match\",\"definition\":"
                                 "\"http://hl7.org/fhir/OperationDefinition/Patient-match\"}");
        if (!rc && !strcmp(jk_fhir_str(t->name), "Schedule"))
            rc = jk_buf_puts(&b, "],\"operation\":[{\"name\":\"generate\",\"definition\":"
                                 "\"https://jiankang.example/fhir/OperationDefinition/"
                                 "Schedule-generate\"}");
        if (!rc) rc = jk_buf_puts(&b, "]}");
    }
    if (!rc)
        rc = jk_buf_puts(
            &b, "],\"interaction\":[{\"code\":\"history-system\"},{\"code\":\"transaction\"},"
                "{\"code\":\"batch\"}],\"operation\":["
                "{\"name\":\"validate\",\"definition\":"
                "\"http://hl7.org/fhir/OperationDefinition/Resource-validate\"},"
                "{\"name\":\"meta\",\"definition\":"
                "\"http://hl7.org/fhir/OperationDefinition/Resource-meta\"},"
                "{\"name\":\"meta-add\",\"definition\":"
                "\"http://hl7.org/fhir/OperationDefinition/Resource-meta-add\"},"
                "{\"name\":\"meta-delete\",\"definition\":"
                "\"http://hl7.org/fhir/OperationDefinition/Resource-meta-delete\"}]}]}");
    if (rc) {
        jk_buf_free(&b);
        return rc;
    }
    return jk_api_send_buf(rq, 200, &b);
}
