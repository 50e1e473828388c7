"""test_authz.py - the authorisation matrix: every role x every endpoint family x every kind
of patient, allowed or denied, as a client sees it (src/auth/authz.c, src/api/guard.c,
docs/internals/authz.md).

The module starts a server of its own with security on (JIANKANG_SECURITY=on) and a rules
file of its own (the cheapest password hash, rate limits out of the way). Accounts are made
with `jiankang user add` against the server's database while it runs; the two institution
systems (client_credentials) seed the data through the API, so that the holder of every
resource (res_owner) is known:

    province --- city1 --- hospital A   (sys-a, doctor, nurse, pharmacist, institution-admin)
             |         \-- public-health and regulator accounts of city1
             \-- city2 --- hospital B   (sys-b, doctor-b)

Patients (the columns of the matrix), each with one Observation coded CTR:

    self     the resident's own Patient (held by B)
    ward     a child of the resident (RelatedPerson MTH, linked from the resident's Patient)
    held     held by hospital A (Patient and Observation created by sys-a)
    consent  held by B; a Consent in force names the doctor of A (Practitioner)
    expired  held by B; the Consent's provision.period ended in 2021
    revoked  held by B; the Consent was in force, then set to inactive
    rel      held by B; an in-progress Encounter has the doctor of A as participant
    none     held by B; nothing links it to hospital A

MATRIX below is the expectation, as data: one line per (role, endpoint family), one cell per
patient. generate_tests() makes one test per cell (authz.matrix_ROLE_FAMILY_PATIENT), plus
one per role that searches all patients at once (results and totals), plus one per line of
EXTRA (break-glass, regulators' aggregates, public health, the directory, _include,
_revinclude, history, absent ids, consent variants, guardianship variants); the test_*
functions cover what needs several steps (a revoked consent counts at the next request).
"""
import json
import os
import re
import subprocess
import uuid
from urllib.parse import urlsplit

from run import FHIR, Failure, expect, expect_eq, expect_outcome, expect_status, short
from test_auth import cli, cli_env, form, rules_file, totp

S = "http://example.org/jiankang/authz-test"  # the code system of the fixture's codes
ROLES = ["resident", "doctor", "nurse", "pharmacist", "institution-admin", "public-health",
         "regulator", "platform-admin", "system"]
PATIENTS = ["self", "ward", "held", "consent", "expired", "revoked", "rel", "none"]
BREAK_GLASS = {"X-Break-Glass-Reason": "patient unconscious in the emergency room"}

# ---- the matrix ----
#
# Families (the resource acted on is the patient's CTR Observation unless said otherwise):
#   read          GET Observation/id
#   read-patient  GET Patient/id
#   history       GET Observation/id/_history (instance history)
#   search        GET Observation?subject=Patient/id&code=CTR         (entry present or not)
#   total         the same with _total=accurate                        (total 1 or 0)
#   count         the same with _summary=count                         (total 1 or 0)
#   create        POST Observation about the patient
#   update@A/@B   PUT of a fresh Observation about the patient held by hospital A / B
#   delete@A/@B   DELETE of a fresh Observation about the patient held by hospital A / B
#   everything    GET Patient/id/$everything (every entry must be readable one by one)
# Cells: Y allowed (200/201; found by a search; counted 1). - denied (403 for one resource;
# absent from results, total 0). X the request itself is refused with 403 (searches).
MATRIX = [
    # role               family        self ward held cons exp  rev  rel  none
    ("resident",          "read",         "Y    Y    -    -    -    -    -    -"),
    ("resident",          "read-patient", "Y    Y    -    -    -    -    -    -"),
    ("resident",          "history",      "Y    Y    -    -    -    -    -    -"),
    ("resident",          "search",       "Y    Y    -    -    -    -    -    -"),
    ("resident",          "total",        "Y    Y    -    -    -    -    -    -"),
    ("resident",          "count",        "Y    Y    -    -    -    -    -    -"),
    ("resident",          "create",       "-    -    -    -    -    -    -    -"),
    ("resident",          "update@A",     "-    -    -    -    -    -    -    -"),
    ("resident",          "update@B",     "-    -    -    -    -    -    -    -"),
    ("resident",          "delete@A",     "-    -    -    -    -    -    -    -"),
    ("resident",          "delete@B",     "-    -    -    -    -    -    -    -"),
    ("resident",          "everything",   "Y    Y    -    -    -    -    -    -"),

    # The doctor of A: A's holdings, the consented patient, the treatment relationship.
    # Create needs a relationship or consent (not A's holdings); update is decided on the
    # stored resource (held by A) and on the new content (as a create); delete on the stored
    # resource only.
    ("doctor",            "read",         "-    -    Y    Y    -    -    Y    -"),
    ("doctor",            "read-patient", "-    -    Y    Y    -    -    Y    -"),
    ("doctor",            "history",      "-    -    Y    Y    -    -    Y    -"),
    ("doctor",            "search",       "-    -    Y    Y    -    -    Y    -"),
    ("doctor",            "total",        "-    -    Y    Y    -    -    Y    -"),
    ("doctor",            "count",        "-    -    Y    Y    -    -    Y    -"),
    ("doctor",            "create",       "-    -    -    Y    -    -    Y    -"),
    ("doctor",            "update@A",     "-    -    -    Y    -    -    Y    -"),
    ("doctor",            "update@B",     "-    -    -    -    -    -    -    -"),
    ("doctor",            "delete@A",     "Y    Y    Y    Y    Y    Y    Y    Y"),
    ("doctor",            "delete@B",     "-    -    -    -    -    -    -    -"),
    ("doctor",            "everything",   "-    -    Y    Y    -    -    Y    -"),

    # Nurse and pharmacist of A: the consent and the encounter name the doctor, not them.
    ("nurse",             "read",         "-    -    Y    -    -    -    -    -"),
    ("nurse",             "read-patient", "-    -    Y    -    -    -    -    -"),
    ("nurse",             "history",      "-    -    Y    -    -    -    -    -"),
    ("nurse",             "search",       "-    -    Y    -    -    -    -    -"),
    ("nurse",             "total",        "-    -    Y    -    -    -    -    -"),
    ("nurse",             "count",        "-    -    Y    -    -    -    -    -"),
    ("nurse",             "create",       "-    -    -    -    -    -    -    -"),
    ("nurse",             "update@A",     "-    -    -    -    -    -    -    -"),
    ("nurse",             "update@B",     "-    -    -    -    -    -    -    -"),
    ("nurse",             "delete@A",     "Y    Y    Y    Y    Y    Y    Y    Y"),
    ("nurse",             "delete@B",     "-    -    -    -    -    -    -    -"),
    ("nurse",             "everything",   "-    -    Y    -    -    -    -    -"),

    ("pharmacist",        "read",         "-    -    Y    -    -    -    -    -"),
    ("pharmacist",        "read-patient", "-    -    Y    -    -    -    -    -"),
    ("pharmacist",        "history",      "-    -    Y    -    -    -    -    -"),
    ("pharmacist",        "search",       "-    -    Y    -    -    -    -    -"),
    ("pharmacist",        "total",        "-    -    Y    -    -    -    -    -"),
    ("pharmacist",        "count",        "-    -    Y    -    -    -    -    -"),
    ("pharmacist",        "create",       "-    -    -    -    -    -    -    -"),
    ("pharmacist",        "update@A",     "-    -    -    -    -    -    -    -"),
    ("pharmacist",        "update@B",     "-    -    -    -    -    -    -    -"),
    ("pharmacist",        "delete@A",     "Y    Y    Y    Y    Y    Y    Y    Y"),
    ("pharmacist",        "delete@B",     "-    -    -    -    -    -    -    -"),
    ("pharmacist",        "everything",   "-    -    Y    -    -    -    -    -"),

    # Administrators see no patient data at all.
    ("institution-admin", "read",         "-    -    -    -    -    -    -    -"),
    ("institution-admin", "read-patient", "-    -    -    -    -    -    -    -"),
    ("institution-admin", "history",      "-    -    -    -    -    -    -    -"),
    ("institution-admin", "search",       "X    X    X    X    X    X    X    X"),
    ("institution-admin", "total",        "X    X    X    X    X    X    X    X"),
    ("institution-admin", "count",        "X    X    X    X    X    X    X    X"),
    ("institution-admin", "create",       "-    -    -    -    -    -    -    -"),
    ("institution-admin", "update@A",     "-    -    -    -    -    -    -    -"),
    ("institution-admin", "update@B",     "-    -    -    -    -    -    -    -"),
    ("institution-admin", "delete@A",     "-    -    -    -    -    -    -    -"),
    ("institution-admin", "delete@B",     "-    -    -    -    -    -    -    -"),
    ("institution-admin", "everything",   "-    -    -    -    -    -    -    -"),

    # Public health of city1: Patient (and immunisations, see EXTRA) held in city1's subtree;
    # Observation is not among access.public_health_types.
    ("public-health",     "read",         "-    -    -    -    -    -    -    -"),
    ("public-health",     "read-patient", "-    -    Y    -    -    -    -    -"),
    ("public-health",     "history",      "-    -    -    -    -    -    -    -"),
    ("public-health",     "search",       "X    X    X    X    X    X    X    X"),
    ("public-health",     "total",        "X    X    X    X    X    X    X    X"),
    ("public-health",     "count",        "X    X    X    X    X    X    X    X"),
    ("public-health",     "create",       "-    -    -    -    -    -    -    -"),
    ("public-health",     "update@A",     "-    -    -    -    -    -    -    -"),
    ("public-health",     "update@B",     "-    -    -    -    -    -    -    -"),
    ("public-health",     "delete@A",     "-    -    -    -    -    -    -    -"),
    ("public-health",     "delete@B",     "-    -    -    -    -    -    -    -"),
    ("public-health",     "everything",   "-    -    Y    -    -    -    -    -"),

    # The regulator of city1: counts over what city1's institutions hold, no records.
    ("regulator",         "read",         "-    -    -    -    -    -    -    -"),
    ("regulator",         "read-patient", "-    -    -    -    -    -    -    -"),
    ("regulator",         "history",      "-    -    -    -    -    -    -    -"),
    ("regulator",         "search",       "X    X    X    X    X    X    X    X"),
    ("regulator",         "total",        "X    X    X    X    X    X    X    X"),
    ("regulator",         "count",        "-    -    Y    -    -    -    -    -"),
    ("regulator",         "create",       "-    -    -    -    -    -    -    -"),
    ("regulator",         "update@A",     "-    -    -    -    -    -    -    -"),
    ("regulator",         "update@B",     "-    -    -    -    -    -    -    -"),
    ("regulator",         "delete@A",     "-    -    -    -    -    -    -    -"),
    ("regulator",         "delete@B",     "-    -    -    -    -    -    -    -"),
    ("regulator",         "everything",   "-    -    -    -    -    -    -    -"),

    ("platform-admin",    "read",         "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "read-patient", "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "history",      "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "search",       "X    X    X    X    X    X    X    X"),
    ("platform-admin",    "total",        "X    X    X    X    X    X    X    X"),
    ("platform-admin",    "count",        "X    X    X    X    X    X    X    X"),
    ("platform-admin",    "create",       "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "update@A",     "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "update@B",     "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "delete@A",     "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "delete@B",     "-    -    -    -    -    -    -    -"),
    ("platform-admin",    "everything",   "-    -    -    -    -    -    -    -"),

    # Hospital A's system: what A holds; whatever it creates, A holds.
    ("system",            "read",         "-    -    Y    -    -    -    -    -"),
    ("system",            "read-patient", "-    -    Y    -    -    -    -    -"),
    ("system",            "history",      "-    -    Y    -    -    -    -    -"),
    ("system",            "search",       "-    -    Y    -    -    -    -    -"),
    ("system",            "total",        "-    -    Y    -    -    -    -    -"),
    ("system",            "count",        "-    -    Y    -    -    -    -    -"),
    ("system",            "create",       "Y    Y    Y    Y    Y    Y    Y    Y"),
    ("system",            "update@A",     "Y    Y    Y    Y    Y    Y    Y    Y"),
    ("system",            "update@B",     "-    -    -    -    -    -    -    -"),
    ("system",            "delete@A",     "Y    Y    Y    Y    Y    Y    Y    Y"),
    ("system",            "delete@B",     "-    -    -    -    -    -    -    -"),
    ("system",            "everything",   "-    -    Y    -    -    -    -    -"),
]

# ---- single requests ----
#
# (name, account, method, path, headers, body, expected status, checks). {key} in path and
# body is a fixture id ("obs.none", "pat.held", "org.hosp_a", ...); {new:Type@A} or
# {new:Observation@B:none} is a resource made for this test by sys-a / sys-b. body "same"
# is the resource as stored (read by the platform administrator: directory types only),
# with its name changed. checks: "has"/"lacks" ids among the Bundle's entries, "total",
# "entries" (their number).
X_BG = BREAK_GLASS
EXTRA = [
    # no token, a bad token
    ("no_token_search", None, "GET", "/Observation", {}, None, 401, {}),
    ("no_token_read", None, "GET", "/Observation/{obs.held}", {}, None, 401, {}),
    ("no_token_directory", None, "GET", "/Organization/{org.hosp_a}", {}, None, 401, {}),
    ("no_token_create", None, "POST", "/Organization", {}, {"resourceType": "Organization",
                                                          "name": "x"}, 401, {}),
    ("bad_token", "bogus", "GET", "/Organization/{org.hosp_a}", {}, None, 401, {}),

    # break-glass: doctor and nurse, with a reason of at least 10 characters, read anything
    ("break_glass_doctor_read", "doctor", "GET", "/Observation/{obs.none}", X_BG, None, 200, {}),
    ("break_glass_nurse_read", "nurse", "GET", "/Observation/{obs.none}", X_BG, None, 200, {}),
    ("break_glass_doctor_patient", "doctor", "GET", "/Patient/{pat.expired}", X_BG, None, 200,
     {}),
    ("break_glass_doctor_everything", "doctor", "GET", "/Patient/{pat.none}/$everything", X_BG,
     None, 200, {"has": ["{pat.none}", "{obs.none}"]}),
    ("break_glass_doctor_search_all", "doctor", "GET",
     "/Observation?code=" + S + "|CTR&_total=accurate", X_BG, None, 200, {"total": 8}),
    ("break_glass_reason_10_chars", "doctor", "GET", "/Observation/{obs.none}",
     {"X-Break-Glass-Reason": "0123456789"}, None, 200, {}),
    ("break_glass_reason_9_chars", "doctor", "GET", "/Observation/{obs.none}",
     {"X-Break-Glass-Reason": "012345678"}, None, 400, {}),
    ("break_glass_reason_short", "nurse", "GET", "/Observation/{obs.none}",
     {"X-Break-Glass-Reason": "urgent"}, None, 400, {}),
    ("break_glass_reason_empty", "doctor", "GET", "/Observation/{obs.none}",
     {"X-Break-Glass-Reason": ""}, None, 400, {}),
    ("break_glass_pharmacist", "pharmacist", "GET", "/Observation/{obs.none}", X_BG, None, 403,
     {}),
    ("break_glass_resident", "resident", "GET", "/Observation/{obs.none}", X_BG, None, 403, {}),
    ("break_glass_system", "system", "GET", "/Observation/{obs.none}", X_BG, None, 403, {}),
    ("break_glass_institution_admin", "institution-admin", "GET", "/Observation/{obs.none}",
     X_BG, None, 403, {}),
    ("break_glass_platform_admin", "platform-admin", "GET", "/Observation/{obs.none}", X_BG,
     None, 403, {}),
    ("break_glass_regulator", "regulator", "GET", "/Observation/{obs.none}", X_BG, None, 403,
     {}),
    ("break_glass_public_health", "public-health", "GET", "/Patient/{pat.none}", X_BG, None,
     403, {}),
    ("break_glass_pharmacist_search", "pharmacist", "GET",
     "/Observation?code=" + S + "|CTR&_total=accurate", X_BG, None, 200, {"total": 1}),
    ("break_glass_never_writes", "doctor", "POST", "/Observation", X_BG,
     "obs:{pat.none}", 403, {}),
    ("break_glass_never_deletes", "doctor", "DELETE", "/Observation/{new:Observation@B:none}",
     X_BG, None, 403, {}),
    ("break_glass_absent_id", "doctor", "GET", "/Observation/no-such-observation", X_BG, None,
     404, {}),

    # regulators: aggregates over their subtree, never records
    ("regulator_count_city", "regulator", "GET", "/Observation?code=" + S + "|CTR&_summary=count",
     {}, None, 200, {"total": 1, "entries": 0}),
    ("regulator_count_province", "regulator-prov", "GET",
     "/Observation?code=" + S + "|CTR&_summary=count", {}, None, 200, {"total": 8, "entries": 0}),
    ("regulator_count_patients", "regulator-prov", "GET", "/Patient?_summary=count", {}, None,
     200, {"entries": 0}),
    ("regulator_count_post_search", "regulator", "POST", "/Observation/_search", {},
     "form:code=" + S + "|CTR&_summary=count", 200, {"total": 1, "entries": 0}),
    ("regulator_count_include_no_records", "regulator-prov", "GET",
     "/Observation?code=" + S + "|CTR&_summary=count&_include=Observation:subject", {}, None,
     200, {"entries": 0}),
    # _summary=count decides the action; a second _summary must not turn it into records
    ("regulator_count_then_data", "regulator-prov", "GET",
     "/Observation?code=" + S + "|CTR&_summary=count&_summary=data", {}, None, (400, 403), {}),
    ("regulator_count_in_url_true_in_form", "regulator-prov", "POST",
     "/Observation/_search?_summary=count", {}, "form:code=" + S + "|CTR&_summary=true",
     (400, 403), {}),
    ("regulator_search_refused", "regulator-prov", "GET", "/Observation?code=" + S + "|CTR", {},
     None, 403, {}),
    ("regulator_total_refused", "regulator-prov", "GET",
     "/Observation?code=" + S + "|CTR&_total=accurate", {}, None, 403, {}),
    ("regulator_read_refused", "regulator-prov", "GET", "/Observation/{obs.held}", {}, None,
     403, {}),
    ("regulator_patient_refused", "regulator-prov", "GET", "/Patient/{pat.held}", {}, None, 403,
     {}),
    ("regulator_everything_refused", "regulator-prov", "GET", "/Patient/{pat.held}/$everything",
     {}, None, 403, {}),
    ("regulator_instance_history_refused", "regulator-prov", "GET",
     "/Observation/{obs.held}/_history", {}, None, 403, {}),

    # public health: access.public_health_types held in their subtree
    ("public_health_immunization_search", "public-health", "GET",
     "/Immunization?_total=accurate", {}, None, 200,
     {"has": ["{imm.held}"], "lacks": ["{imm.none}"], "total": 1}),
    ("public_health_immunization_read", "public-health", "GET", "/Immunization/{imm.held}", {},
     None, 200, {}),
    ("public_health_immunization_other_city", "public-health", "GET", "/Immunization/{imm.none}",
     {}, None, 403, {}),
    ("public_health_patient_search", "public-health", "GET", "/Patient?_count=500&_total=accurate",
     {}, None, 200, {"has": ["{pat.held}"], "lacks": ["{pat.none}", "{pat.self}"]}),
    ("public_health_immunization_create", "public-health", "POST", "/Immunization", {},
     "imm:{pat.held}", 403, {}),
    ("public_health_observation_search", "public-health", "GET", "/Observation", {}, None, 403,
     {}),
    ("public_health_province_sees_both", "public-health-prov", "GET",
     "/Immunization?_total=accurate", {}, None, 200,
     {"has": ["{imm.held}", "{imm.none}"], "total": 2}),

    # _include, _revinclude and conditions on other resources
    ("include_hides_denied_patient_doctor", "doctor", "GET",
     "/Observation?_id={xobs.a_none}&_include=Observation:subject", {}, None, 200,
     {"has": ["{xobs.a_none}"], "lacks": ["{pat.none}"]}),
    ("include_hides_denied_patient_system", "system", "GET",
     "/Observation?_id={xobs.a_none}&_include=Observation:subject", {}, None, 200,
     {"has": ["{xobs.a_none}"], "lacks": ["{pat.none}"]}),
    ("include_shows_allowed_patient", "doctor", "GET",
     "/Observation?_id={obs.rel}&_include=Observation:subject", {}, None, 200,
     {"has": ["{obs.rel}", "{pat.rel}"]}),
    ("revinclude_hides_other_holders_record", "doctor", "GET",
     "/Patient?_id={pat.held}&_revinclude=Observation:subject", {}, None, 200,
     {"has": ["{pat.held}", "{obs.held}"], "lacks": ["{xobs.b_held}"]}),
    ("revinclude_nurse", "nurse", "GET",
     "/Patient?_id={pat.held}&_revinclude=Observation:subject", {}, None, 200,
     {"has": ["{pat.held}", "{obs.held}"], "lacks": ["{xobs.b_held}"]}),
    ("everything_hides_other_holders_record", "doctor", "GET", "/Patient/{pat.held}/$everything",
     {}, None, 200, {"has": ["{pat.held}", "{obs.held}"], "lacks": ["{xobs.b_held}"]}),
    ("everything_of_ward", "resident", "GET", "/Patient/{pat.ward}/$everything", {}, None, 200,
     {"has": ["{pat.ward}", "{obs.ward}"]}),
    # A condition on a resource the caller may not see must not select what it may see:
    # else its existence and content leak through the answer.
    ("has_condition_sees_only_visible", "doctor", "GET",
     "/Patient?_id={pat.held}&_has:Observation:subject:code=" + S + "|XTRA-B&_total=accurate",
     {}, None, 200, {"lacks": ["{pat.held}"], "total": 0}),
    ("chain_condition_sees_only_visible", "doctor", "GET",
     "/Observation?_id={xobs.a_none}&subject:Patient.family=Nonefamily&_total=accurate", {},
     None, 200, {"lacks": ["{xobs.a_none}"], "total": 0}),

    # history: of one resource as its read; of a type only for who sees all of it; of the
    # whole server for nobody
    ("type_history_patient_data_doctor", "doctor", "GET", "/Observation/_history", {}, None,
     403, {}),
    ("type_history_patient_data_resident", "resident", "GET", "/Patient/_history", {}, None,
     403, {}),
    ("type_history_patient_data_system", "system", "GET", "/Observation/_history", {}, None,
     403, {}),
    ("type_history_break_glass", "doctor", "GET", "/Observation/_history", X_BG, None, 403, {}),
    ("type_history_directory_doctor", "doctor", "GET", "/Organization/_history", {}, None, 200,
     {}),
    ("type_history_directory_system", "system", "GET", "/Organization/_history", {}, None, 200,
     {}),
    ("system_history_doctor", "doctor", "GET", "/_history", {}, None, 403, {}),
    ("system_history_system", "system", "GET", "/_history", {}, None, 403, {}),
    ("system_history_platform_admin", "platform-admin", "GET", "/_history", {}, None, 403, {}),
    ("vread_follows_read_allowed", "doctor", "GET", "/Observation/{obs.rel}/_history/1", {},
     None, 200, {}),
    # A version is about the patient it named: a record moved from one patient to another
    # (misfiled, corrected) must not show its old version to who may see only the new patient.
    ("vread_version_about_other_patient", "doctor", "GET", "/Observation/{obs.moved}/_history/1",
     {}, None, 403, {}),
    ("vread_follows_read_denied", "doctor", "GET", "/Observation/{obs.none}/_history/1", {},
     None, 403, {}),

    # absent ids of patient data: 403 for whoever could not see them if they existed
    ("absent_observation_doctor", "doctor", "GET", "/Observation/no-such-observation", {}, None,
     403, {}),
    ("absent_patient_doctor", "doctor", "GET", "/Patient/no-such-patient", {}, None, 403, {}),
    ("absent_patient_resident", "resident", "GET", "/Patient/no-such-patient", {}, None, 403,
     {}),
    ("absent_observation_system", "system", "GET", "/Observation/no-such-observation", {}, None,
     403, {}),
    ("absent_everything_doctor", "doctor", "GET", "/Patient/no-such-patient/$everything", {},
     None, 403, {}),
    ("absent_directory_doctor", "doctor", "GET", "/Organization/no-such-org", {}, None, 404, {}),

    # other writes: PATCH and $meta-add follow update
    ("patch_other_holder_refused", "doctor", "PATCH", "/Observation/{new:Observation@B:rel}", {},
     "patch", 403, {}),
    ("patch_own_holder_allowed", "doctor", "PATCH", "/Observation/{new:Observation@A:rel}", {},
     "patch", 200, {}),
    ("meta_add_other_holder_refused", "doctor", "POST",
     "/Observation/{new:Observation@B:rel}/$meta-add", {}, "meta", 403, {}),
    ("conditional_delete_other_holder_refused", "doctor", "DELETE",
     "/Observation?identifier=" + S + "|{ident:Observation@B:rel}", {}, None, 403, {}),
    ("update_moving_record_to_unrelated_patient", "doctor", "PUT",
     "/Observation/{new:Observation@A:rel}", {}, "obs-put:{pat.none}", 403, {}),
    ("create_about_no_patient", "doctor", "POST", "/Observation", {}, "obs-nopatient", 403, {}),

    # residents: consents for themselves and their wards only; nothing else
    ("resident_grants_consent", "resident", "POST", "/Consent", {}, "consent:{pat.self}", 201,
     {}),
    ("resident_grants_consent_for_ward", "resident", "POST", "/Consent", {},
     "consent:{pat.ward}", 201, {}),
    ("resident_consent_for_stranger", "resident", "POST", "/Consent", {}, "consent:{pat.none}",
     403, {}),
    ("resident_reads_consents_of_ward", "resident", "GET",
     "/Consent?patient={pat.ward}&_total=accurate", {}, None, 200, {}),
    ("resident_consents_of_stranger_hidden", "resident", "GET",
     "/Consent?patient={pat.consent}&_total=accurate", {}, None, 200, {"total": 0}),
    ("resident_writes_directory", "resident", "POST", "/Location", {}, "location", 403, {}),
    ("resident_related_person_search", "resident", "GET", "/RelatedPerson?_count=100", {}, None,
     200, {"lacks": ["{rp.other}"]}),

    # consent and relationship variants (doctor of A unless said)
    ("consent_typed_observation_allowed", "doctor", "GET", "/Observation/{obs.typed}", {}, None,
     200, {}),
    ("consent_typed_patient_denied", "doctor", "GET", "/Patient/{pat.typed}", {}, None, 403, {}),
    ("consent_typed_condition_denied", "doctor", "GET", "/Condition/{cond.typed}", {}, None,
     403, {}),
    ("consent_typed_condition_search", "doctor", "GET",
     "/Condition?subject=Patient/{pat.typed}&_total=accurate", {}, None, 200, {"total": 0}),
    ("consent_deny_provision", "doctor", "GET", "/Observation/{obs.deny}", {}, None, 403, {}),
    ("consent_future_period", "doctor", "GET", "/Observation/{obs.future}", {}, None, 403, {}),
    ("consent_to_organization", "doctor-b", "GET", "/Observation/{obs.orgconsent}", {}, None,
     200, {}),
    ("consent_to_organization_holder_still_sees", "doctor", "GET",
     "/Observation/{obs.orgconsent}", {}, None, 200, {}),  # held by A: A's own record
    ("other_hospital_doctor_held", "doctor-b", "GET", "/Observation/{obs.held}", {}, None, 403,
     {}),
    ("appointment_with_role", "doctor", "GET", "/Observation/{obs.appt}", {}, None, 200, {}),
    ("encounter_finished", "doctor", "GET", "/Observation/{obs.ended}", {}, None, 403, {}),
    ("encounter_service_provider_nurse", "nurse", "GET", "/Observation/{obs.svc}", {}, None,
     200, {}),
    ("encounter_service_provider_pharmacist", "pharmacist", "GET", "/Observation/{obs.svc}", {},
     None, 200, {}),
    ("encounter_service_provider_other_hospital", "doctor-b", "GET", "/Observation/{obs.svc}",
     {}, None, 200, {}),  # held by B
    ("relationship_create_allowed", "doctor", "POST", "/Observation", {}, "obs:{pat.svc}", 201,
     {}),
    ("ward_guardianship_ended", "resident", "GET", "/Observation/{obs.exward}", {}, None, 403,
     {}),
    ("ward_not_a_guardian", "resident", "GET", "/Observation/{obs.friend}", {}, None, 403, {}),

    # the directory: read by everyone; written by the platform administrator, and by an
    # institution (administrator or system) where it holds the record
    ("directory_search_practitioners", "resident", "GET", "/Practitioner?_total=accurate", {},
     None, 200, {"has": ["{prac.a}", "{prac.b}"]}),
    ("directory_system_reads_other_hospital", "system", "GET", "/Organization/{org.hosp_b}", {},
     None, 200, {}),
    ("directory_platform_admin_updates", "platform-admin", "PUT", "/Organization/{org.city1}",
     {}, "same", 200, {}),
    ("directory_platform_admin_creates", "platform-admin", "POST", "/Location", {}, "location",
     201, {}),
    ("directory_institution_admin_creates", "institution-admin", "POST", "/Location", {},
     "location", 201, {}),
    ("directory_institution_admin_updates_own", "institution-admin", "PUT",
     "/Location/{new:Location@A}", {}, "same", 200, {}),
    ("directory_institution_admin_deletes_own", "institution-admin", "DELETE",
     "/Location/{new:Location@A}", {}, None, (200, 204), {}),
    ("directory_institution_admin_updates_other", "institution-admin", "PUT",
     "/Location/{loc.b}", {}, "same", 403, {}),
    ("directory_institution_admin_deletes_other", "institution-admin", "DELETE",
     "/Location/{loc.b}", {}, None, 403, {}),
    ("directory_institution_admin_updates_unheld", "institution-admin", "PUT",
     "/Organization/{org.city1}", {}, "same", 403, {}),
    ("directory_system_updates_own", "system", "PUT", "/Location/{loc.a}", {}, "same", 200, {}),
    ("directory_system_updates_other", "system", "PUT", "/Location/{loc.b}", {}, "same", 403,
     {}),
    ("directory_system_updates_unheld", "system", "PUT", "/Organization/{org.city1}", {}, "same",
     403, {}),
    ("directory_doctor_updates", "doctor", "PUT", "/Location/{loc.a}", {}, "same", 403, {}),
    ("directory_nurse_creates", "nurse", "POST", "/Location", {}, "location", 403, {}),
    ("directory_public_health_creates", "public-health", "POST", "/Location", {}, "location",
     403, {}),
    ("directory_regulator_creates", "regulator", "POST", "/Location", {}, "location", 403, {}),
    ("audit_event_not_written", "platform-admin", "POST", "/AuditEvent", {}, "audit", 405, {}),
] + [("directory_read_" + r.replace("-", "_"), r, "GET", "/Organization/{org.hosp_a}", {},
      None, 200, {}) for r in ROLES + ["system-b", "regulator-prov"]] + [
    ("directory_search_" + r.replace("-", "_"), r, "GET",
     "/Organization?_total=accurate&_count=100", {}, None, 200,
     {"has": ["{org.hosp_a}", "{org.hosp_b}", "{org.prov}"]}) for r in ROLES]


# ---- the fixture ----

class Fix:
    """The module's server, accounts and data (made once, on first use)."""

    def __init__(self, t):
        self.t = t
        self.ids = {}
        self.tokens = {}
        self.rules = rules_file(t, "authz", **{
            "rate.login.per_address": (100000, 60), "rate.login.per_account": (100000, 60),
            "rate.expensive.per_address": (100000, 60),
            "rate.expensive.per_account": (100000, 60)})
        self.env = cli_env(self.rules)
        self.db = t.fresh_db_url("authz")
        self.pw, self.secret = {}, {}
        self.add("root", "platform-admin")
        self.srv = t.start_server("authz", self.db, env={
            "JIANKANG_SECURITY": "on", "JIANKANG_SECURITY_RULES": self.rules})
        # No token, no data: security must be on for anything below to mean something.
        r = self.srv.get(FHIR + "/Organization")
        expect_status(r, 401, "the authz server must run with security on")
        self.build()

    # accounts
    def add(self, name, role, *args):
        pw = "Pw-%s-X9" % uuid.uuid4().hex[:12]
        out = cli(self.t, self.env, self.db, "add", name, "--role", role, *args, password=pw)
        expect("created account %s" % name in out, "user add %s: %s" % (name, short(out, 400)))
        m = re.search(r"secret: ([A-Z2-7]+)", out)
        if m:
            self.secret[name] = m.group(1)
        self.pw[name] = pw

    def login(self, name):
        if name in self.secret:
            fields = {"grant_type": "password", "username": name, "password": self.pw[name],
                      "totp": totp(self.secret[name])}
        elif name.startswith("sys-"):
            fields = {"grant_type": "client_credentials", "client_id": name,
                      "client_secret": self.pw[name]}
        else:
            fields = {"grant_type": "password", "username": name, "password": self.pw[name]}
        r = form(self.srv, "/auth/token", fields)
        expect_status(r, 200, "login " + name)
        return r.json["access_token"]

    # HTTP as an account
    def req(self, who, method, path, body=None, headers=None):
        h = dict(headers or {})
        if who == "bogus":
            h["Authorization"] = "Bearer " + "B" * 43
        elif who is not None:
            expect(who in self.tokens, "no account %r in the fixture" % who)
            h["Authorization"] = "Bearer " + self.tokens[who]
        return self.srv.request(method, FHIR + path, body, h)

    def create(self, who, res, what=""):
        r = self.req(who, "POST", "/" + res["resourceType"], res)
        expect_status(r, 201, "fixture: %s creates %s %s" % (who, res["resourceType"], what))
        return r.json["id"]

    def put(self, who, res, status=(200, 201)):
        r = self.req(who, "PUT", "/%s/%s" % (res["resourceType"], res["id"]), res)
        expect_status(r, status, "fixture: %s updates %s/%s" % (who, res["resourceType"],
                                                                 res["id"]))
        return r

    def build(self):
        ids, root = self.ids, "root"
        self.tokens["platform-admin"] = self.tokens[root] = self.login(root)
        prov = self.create(root, org("Province"))
        city1 = self.create(root, org("City one", prov))
        city2 = self.create(root, org("City two", prov))
        hosp_a = self.create(root, org("Hospital A", city1))
        hosp_b = self.create(root, org("Hospital B", city2))
        ids.update({"org.prov": prov, "org.city1": city1, "org.city2": city2,
                    "org.hosp_a": hosp_a, "org.hosp_b": hosp_b})
        self.add("sys-a", "system", "--org", "Organization/" + hosp_a)
        self.add("sys-b", "system", "--org", "Organization/" + hosp_b)
        self.tokens["system"] = self.tokens["sys-a"] = self.login("sys-a")
        self.tokens["system-b"] = self.tokens["sys-b"] = self.login("sys-b")
        A, B = "sys-a", "sys-b"

        # practitioners
        ids["prac.a"] = self.create(A, {"resourceType": "Practitioner",
                                        "name": [{"family": "Doctor-A"}]})
        ids["role.a"] = self.create(A, {"resourceType": "PractitionerRole",
                                        "practitioner": {"reference": "Practitioner/" +
                                                         ids["prac.a"]},
                                        "organization": {"reference": "Organization/" + hosp_a}})
        ids["prac.nurse"] = self.create(A, {"resourceType": "Practitioner",
                                            "name": [{"family": "Nurse-A"}]})
        ids["prac.pharm"] = self.create(A, {"resourceType": "Practitioner",
                                            "name": [{"family": "Pharmacist-A"}]})
        ids["prac.b"] = self.create(B, {"resourceType": "Practitioner",
                                        "name": [{"family": "Doctor-B"}]})
        ids["loc.a"] = self.create(A, location())
        ids["loc.b"] = self.create(B, location())

        # patients: the matrix's, then the variants'
        homes = {"held": A, "orgconsent": A}
        names = PATIENTS + ["typed", "deny", "future", "orgconsent", "appt", "ended", "svc",
                            "exward", "friend", "dyn"]
        for k in names:
            if k == "self":
                continue  # below, once its RelatedPersons exist
            fam = "Nonefamily" if k == "none" else "Fam-" + k
            ids["pat." + k] = self.create(homes.get(k, B), {
                "resourceType": "Patient", "name": [{"family": fam, "given": [k]}]}, k)
        ids["rp.mother"] = self.create(B, related(ids["pat.ward"], "MTH"))
        ids["rp.old"] = self.create(B, related(ids["pat.exward"], "GUARD",
                                               period={"start": "2010-01-01",
                                                       "end": "2020-12-31"}))
        ids["rp.friend"] = self.create(B, related(ids["pat.friend"], "FRND"))
        ids["rp.other"] = self.create(B, related(ids["pat.none"], "MTH"))  # not linked
        ids["pat.self"] = self.create(B, {
            "resourceType": "Patient", "name": [{"family": "Fam-self"}],
            "link": [{"other": {"reference": "RelatedPerson/" + ids[k]}, "type": "seealso"}
                     for k in ("rp.mother", "rp.old", "rp.friend")]}, "self")
        for k in names:
            ids["obs." + k] = self.create(homes.get(k, B), observation(ids["pat." + k], "CTR"
                                                                       if k in PATIENTS
                                                                       else "EXT"), k)
        ids["xobs.a_none"] = self.create(A, observation(ids["pat.none"], "XTRA-A"))
        moved = observation(ids["pat.none"], "MOVED")  # filed under none, then moved to rel
        moved["id"] = ids["obs.moved"] = self.create(B, moved)
        moved["subject"] = {"reference": "Patient/" + ids["pat.rel"]}
        self.put(B, moved, 200)
        ids["xobs.b_held"] = self.create(B, observation(ids["pat.held"], "XTRA-B"))
        ids["cond.typed"] = self.create(B, {"resourceType": "Condition",
                                            "subject": {"reference": "Patient/" +
                                                        ids["pat.typed"]},
                                            "code": {"coding": [{"system": S, "code": "C"}]}})
        ids["imm.held"] = self.create(A, immunization(ids["pat.held"]))
        ids["imm.none"] = self.create(B, immunization(ids["pat.none"]))

        # relationships and consents
        pa, ra = "Practitioner/" + ids["prac.a"], "PractitionerRole/" + ids["role.a"]
        self.create(B, encounter(ids["pat.rel"], "in-progress", participant=pa))
        self.create(B, encounter(ids["pat.ended"], "finished", participant=pa))
        self.create(B, encounter(ids["pat.svc"], "in-progress",
                                 provider="Organization/" + hosp_a))
        self.create(B, {"resourceType": "Appointment", "status": "booked",
                        "start": "2026-01-01T08:00:00Z", "end": "2099-01-01T08:30:00Z",
                        "participant": [{"actor": {"reference": ra}, "status": "accepted"},
                                        {"actor": {"reference": "Patient/" + ids["pat.appt"]},
                                         "status": "accepted"}]})
        self.create(B, consent(ids["pat.consent"], pa))
        self.create(B, consent(ids["pat.expired"], pa, period={"start": "2020-01-01",
                                                               "end": "2021-01-01"}))
        self.create(B, consent(ids["pat.typed"], pa, classes=["Observation"]))
        self.create(B, consent(ids["pat.deny"], pa, ptype="deny"))
        self.create(B, consent(ids["pat.future"], pa, period={"start": "2098-01-01",
                                                              "end": "2099-01-01"}))
        self.create(A, consent(ids["pat.orgconsent"], "Organization/" + hosp_b))
        rv = consent(ids["pat.revoked"], pa)
        rv["id"] = self.create(B, rv)

        # the other accounts, now that what they link to exists
        org_a = "Organization/" + hosp_a
        self.add("doc-a", "doctor", "--org", org_a, "--link", ra)
        self.add("nurse-a", "nurse", "--org", org_a, "--link", "Practitioner/" + ids["prac.nurse"])
        self.add("pharm-a", "pharmacist", "--org", org_a, "--link",
                 "Practitioner/" + ids["prac.pharm"])
        self.add("admin-a", "institution-admin", "--org", org_a)
        self.add("doc-b", "doctor", "--org", "Organization/" + hosp_b, "--link",
                 "Practitioner/" + ids["prac.b"])
        self.add("ph-city1", "public-health", "--org", "Organization/" + city1)
        self.add("ph-prov", "public-health", "--org", "Organization/" + prov)
        self.add("reg-city1", "regulator", "--org", "Organization/" + city1)
        self.add("reg-prov", "regulator", "--org", "Organization/" + prov)
        self.add("res-self", "resident", "--link", "Patient/" + ids["pat.self"])
        self.add("res-dyn", "resident", "--link", "Patient/" + ids["pat.dyn"])
        for role, name in (("doctor", "doc-a"), ("nurse", "nurse-a"), ("pharmacist", "pharm-a"),
                           ("institution-admin", "admin-a"), ("doctor-b", "doc-b"),
                           ("public-health", "ph-city1"), ("public-health-prov", "ph-prov"),
                           ("regulator", "reg-city1"), ("regulator-prov", "reg-prov"),
                           ("resident", "res-self"), ("resident-dyn", "res-dyn")):
            self.tokens[role] = self.login(name)

        # The revoked consent counted before it was revoked.
        r = self.req("doctor", "GET", "/Observation/" + ids["obs.revoked"])
        expect_status(r, 200, "fixture: the doctor reads under the consent before revocation")
        rv["status"] = "inactive"
        self.put(B, rv, 200)

    # resources made for one test
    def new(self, spec):
        """Type@A or Observation@B:patient: a fresh resource held by A or B; returns its id
        (and remembers its identifier)."""
        m = re.match(r"^(\w+)@([AB])(?::(\w+))?$", spec)
        expect(m, "bad fixture spec %r" % spec)
        typ, holder, pk = m.groups()
        who = "sys-a" if holder == "A" else "sys-b"
        if typ == "Location":
            res = location()
        else:
            res = observation(self.ids["pat." + pk], "FRESH")
        rid = self.create(who, res, spec)
        self.last_identifier = res.get("identifier", [{}])[0].get("value")
        return rid

    def subst(self, text):
        def one(m):
            key = m.group(1)
            if key.startswith("new:"):
                return self.new(key[4:])
            if key.startswith("ident:"):
                self.new(key[6:])
                return self.last_identifier
            expect(key in self.ids, "no fixture id %r" % key)
            return self.ids[key]
        return re.sub(r"\{([A-Za-z0-9_.:@-]+)\}", one, text)


FIX = {}


def fix(t):
    """The fixture, made once per run; a failure to make it fails every test quickly."""
    f = FIX.get(id(t))
    if isinstance(f, Exception):
        raise Failure("the authz fixture could not be made: %s" % f)
    if f is None:
        try:
            f = FIX[id(t)] = Fix(t)
        except Exception as e:
            FIX[id(t)] = e
            raise
    return f


# ---- resources ----

def org(name, part_of=None):
    o = {"resourceType": "Organization", "name": name, "active": True}
    if part_of:
        o["partOf"] = {"reference": "Organization/" + part_of}
    return o


def location():
    return {"resourceType": "Location", "name": "Ward " + uuid.uuid4().hex[:6],
            "status": "active"}


def observation(pid, code):
    return {"resourceType": "Observation", "status": "final",
            "identifier": [{"system": S, "value": uuid.uuid4().hex}],
            "code": {"coding": [{"system": S, "code": code}]},
            "subject": {"reference": "Patient/" + pid}, "valueString": "v1"}


def immunization(pid):
    return {"resourceType": "Immunization", "status": "completed",
            "vaccineCode": {"coding": [{"system": S, "code": "VAC"}]},
            "patient": {"reference": "Patient/" + pid},
            "occurrenceDateTime": "2025-05-01"}


def related(pid, code, period=None):
    rp = {"resourceType": "RelatedPerson", "active": True,
          "patient": {"reference": "Patient/" + pid},
          "relationship": [{"coding": [{
              "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": code}]}]}
    if period:
        rp["period"] = period
    return rp


def encounter(pid, status, participant=None, provider=None):
    e = {"resourceType": "Encounter", "status": status,
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
         "subject": {"reference": "Patient/" + pid}}
    if participant:
        e["participant"] = [{"individual": {"reference": participant}}]
    if provider:
        e["serviceProvider"] = {"reference": provider}
    return e


def consent(pid, actor, period=None, classes=None, ptype="permit", status="active"):
    prov = {"type": ptype,
            "period": period or {"start": "2020-01-01", "end": "2099-12-31"},
            "actor": [{"role": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                "code": "PRCP"}]}, "reference": {"reference": actor}}]}
    if classes:
        prov["class"] = [{"system": "http://hl7.org/fhir/resource-types", "code": c}
                         for c in classes]
    return {"resourceType": "Consent", "status": status,
            "scope": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": "Patient/" + pid},
            "policyRule": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": prov}


def body_of(f, spec, path):
    """The request body of an EXTRA line."""
    if spec is None or isinstance(spec, dict):
        return spec
    if spec == "same":  # the stored directory resource, renamed
        m = re.match(r"^/(\w+)/([^/?]+)$", path)
        r = f.req("platform-admin", "GET", path)
        expect_status(r, 200, "reading %s to change it" % path)
        res = r.json
        res.pop("meta", None)
        res["name"] = "Renamed " + uuid.uuid4().hex[:6]
        expect(m and res.get("id") == m.group(2), "read back %s" % path)
        return res
    if spec == "location":
        return location()
    if spec == "audit":
        return {"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z",
                "type": {"system": S, "code": "x"}, "agent": [{"requestor": True}],
                "source": {"observer": {"display": "x"}}}
    if spec == "patch":
        return json.dumps([{"op": "replace", "path": "/valueString", "value": "patched"}])
    if spec == "meta":
        return {"resourceType": "Parameters", "parameter": [
            {"name": "meta", "valueMeta": {"tag": [{"system": S, "code": "t"}]}}]}
    if spec == "obs-nopatient":
        o = observation("x", "NEW")
        del o["subject"]
        return o
    if spec.startswith("form:"):
        return spec[5:]
    kind, _, arg = spec.partition(":")
    arg = f.subst(arg)
    if kind == "obs":
        return observation(arg, "NEW")
    if kind == "obs-put":  # the PUT target's id is the path's
        o = observation(arg, "FRESH")
        o["id"] = path.rsplit("/", 1)[1]
        return o
    if kind == "imm":
        return immunization(arg)
    if kind == "consent":  # names an organisation that exists nowhere: changes no view
        return consent(arg, "Organization/nowhere-" + uuid.uuid4().hex[:6])
    raise Failure("bad body spec %r" % spec)


# ---- checks ----

def entry_ids(r):
    b = r.json
    expect(b.get("resourceType") == "Bundle", "%s %s: not a Bundle: %s" % (
        r.method, short(r.path), r.snippet()))
    return [(e.get("resource") or {}).get("id") for e in b.get("entry", [])]


def refused(r, what, status=403):
    expect_outcome(r, status, what=what)


def run_cell(t, role, family, pk, cell):
    f = fix(t)
    ids = f.ids
    pid, oid = ids["pat." + pk], ids["obs." + pk]
    what = "%s %s %s (expected %s)" % (role, family, pk, cell)
    allowed = cell == "Y"
    ctr = "code=%s|CTR&subject=Patient/%s" % (S, pid)
    if family == "read":
        r = f.req(role, "GET", "/Observation/" + oid)
        if allowed:
            expect_status(r, 200, what)
            expect_eq(r.json.get("id"), oid, what + ": id")
        else:
            refused(r, what)
    elif family == "read-patient":
        r = f.req(role, "GET", "/Patient/" + pid)
        if allowed:
            expect_status(r, 200, what)
            expect_eq(r.json.get("id"), pid, what + ": id")
        else:
            refused(r, what)
    elif family == "history":
        r = f.req(role, "GET", "/Observation/%s/_history" % oid)
        if allowed:
            expect_status(r, 200, what)
            expect(oid in entry_ids(r), "%s: the history lacks the resource" % what)
        else:
            refused(r, what)
    elif family in ("search", "total", "count"):
        q = ctr + {"search": "", "total": "&_total=accurate", "count": "&_summary=count"}[family]
        r = f.req(role, "GET", "/Observation?" + q)
        if cell == "X":
            return refused(r, what)
        expect_status(r, 200, what)
        got = entry_ids(r)
        if family == "count":
            expect_eq(got, [], what + ": _summary=count returns no entries")
        else:
            expect_eq(got, [oid] if allowed else [], what + ": entries")
        if family != "search":
            expect_eq(r.json.get("total"), 1 if allowed else 0, what + ": total")
    elif family == "create":
        res = observation(pid, "NEW")
        r = f.req(role, "POST", "/Observation", res)
        if allowed:
            expect_status(r, 201, what)
        else:
            refused(r, what)
            stored_nothing(f, res, what)
    elif family in ("update@A", "update@B", "delete@A", "delete@B"):
        holder = "sys-a" if family.endswith("@A") else "sys-b"
        res = observation(pid, "FRESH")
        res["id"] = f.create(holder, res, what)
        if family.startswith("update"):
            res["valueString"] = "v2"
            r = f.req(role, "PUT", "/Observation/" + res["id"], res)
        else:
            r = f.req(role, "DELETE", "/Observation/" + res["id"])
        if allowed:
            expect_status(r, (200, 204), what)
        else:
            refused(r, what)
        # What the holder sees afterwards: the change, or the resource unchanged.
        after = f.req(holder, "GET", "/Observation/" + res["id"])
        if family.startswith("update"):
            expect_status(after, 200, what + ": the holder reads it back")
            expect_eq(after.json.get("valueString"), "v2" if allowed else "v1",
                      what + ": the stored value")
        else:
            expect_status(after, 410 if allowed else 200, what + ": the holder reads it back")
    elif family == "everything":
        r = f.req(role, "GET", "/Patient/%s/$everything?_count=500" % pid)
        if not allowed:
            return refused(r, what)
        expect_status(r, 200, what)
        got = entry_ids(r)
        expect(pid in got, "%s: $everything lacks the Patient" % what)
        row = dict(((ro, fa), c) for ro, fa, c in MATRIX)
        if row[(role, "read")].split()[PATIENTS.index(pk)] == "Y":
            expect(oid in got, "%s: $everything lacks the Observation" % what)
        for e in r.json.get("entry", []):
            res = e.get("resource") or {}
            one = f.req(role, "GET", "/%s/%s" % (res.get("resourceType"), res.get("id")))
            expect(one.status == 200, "%s: $everything returned %s/%s, which a read refuses "
                   "(%d)" % (what, res.get("resourceType"), res.get("id"), one.status))
    else:
        raise Failure("unknown family %r" % family)


def stored_nothing(f, res, what):
    """A refused create stored nothing: a break-glass search by its identifier finds none."""
    ident = res["identifier"][0]["value"]
    r = f.req("doctor", "GET", "/Observation?identifier=%s|%s&_total=accurate" % (S, ident),
              headers=BREAK_GLASS)
    expect_status(r, 200, what + ": looking for what was refused")
    expect_eq(r.json.get("total"), 0, what + ": a refused create must store nothing")


def run_search_all(t, role):
    """One search over all the matrix's patients: the results and the total are exactly the
    patients the search line of MATRIX allows; the _summary=count total those of count."""
    f = fix(t)
    cells = {fa: c.split() for ro, fa, c in MATRIX if ro == role}
    for family, q in (("total", "&_total=accurate&_count=100"), ("count", "&_summary=count")):
        r = f.req(role, "GET", "/Observation?code=%s|CTR%s" % (S, q))
        what = "%s: all CTR observations (%s)" % (role, family)
        if cells[family][0] == "X":
            refused(r, what)
            continue
        expect_status(r, 200, what)
        want = sorted(f.ids["obs." + p] for p, c in zip(PATIENTS, cells[family]) if c == "Y")
        if family == "total":
            expect_eq(sorted(entry_ids(r)), want, what + ": entries")
        expect_eq(r.json.get("total"), len(want), what + ": total")


def run_extra(t, line):
    name, who, method, path, headers, body, status, checks = line
    f = fix(t)
    path = f.subst(path)
    data = body_of(f, body, path)
    hdrs = dict(headers)
    if isinstance(body, str) and body.startswith("form:"):
        hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        data = f.subst(data)
    if body == "patch":
        hdrs["Content-Type"] = "application/json-patch+json"
    r = f.req(who, method, path, data, hdrs)
    what = "%s (%s %s as %s)" % (name, method, path, who)
    if (status if isinstance(status, int) else status[0]) >= 400:
        expect_outcome(r, status, what=what)
    else:
        expect_status(r, status, what)
    if checks:
        got = entry_ids(r)
        for k in checks.get("has", []):
            expect(f.subst(k) in got, "%s: %s missing from %s" % (what, k, got))
        for k in checks.get("lacks", []):
            expect(f.subst(k) not in got, "%s: %s (%s) must not be returned" % (
                what, k, f.subst(k)))
        if "total" in checks:
            expect_eq(r.json.get("total"), checks["total"], what + ": total")
        if "entries" in checks:
            expect_eq(len(got), checks["entries"], what + ": number of entries")


# ---- several steps ----

def test_consent_revoked_counts_at_the_next_request(t):
    """A consent granted, revoked (status inactive), granted again and deleted by the
    resident: each change decides the doctor's very next request (the cached view is
    invalidated by the write, not after access.context_cache_seconds)."""
    f = fix(t)
    obs, pid = f.ids["obs.dyn"], f.ids["pat.dyn"]
    doc_actor = "Practitioner/" + f.ids["prac.a"]

    def doctor_sees(expected, step):
        r = f.req("doctor", "GET", "/Observation/" + obs)
        expect_status(r, 200 if expected else 403, step + ": read")
        r = f.req("doctor", "GET", "/Observation?subject=Patient/%s&_total=accurate" % pid)
        expect_status(r, 200, step + ": search")
        expect_eq(r.json.get("total"), 1 if expected else 0, step + ": search total")

    doctor_sees(False, "before any consent")
    c = consent(pid, doc_actor)
    r = f.req("resident-dyn", "POST", "/Consent", c)
    expect_status(r, 201, "the resident grants a consent")
    c["id"] = r.json["id"]
    doctor_sees(True, "after the grant")
    c["status"] = "inactive"
    expect_status(f.req("resident-dyn", "PUT", "/Consent/" + c["id"], c), 200, "revoke")
    doctor_sees(False, "after the revocation (status inactive)")
    c["status"] = "active"
    expect_status(f.req("resident-dyn", "PUT", "/Consent/" + c["id"], c), 200, "grant again")
    doctor_sees(True, "after granting again")
    r = f.req("resident-dyn", "DELETE", "/Consent/" + c["id"])
    expect_status(r, (200, 204), "the resident deletes the consent")
    doctor_sees(False, "after the deletion")
    # The other resident may not touch it, nor grant for this patient.
    c2 = consent(pid, doc_actor)
    r = f.req("resident", "POST", "/Consent", c2)
    expect_outcome(r, 403, what="another resident granting for this patient")
    doctor_sees(False, "after a refused grant")


def test_relationship_ends_at_the_next_request(t):
    """An encounter that finishes ends the treatment relationship at once."""
    f = fix(t)
    pid = f.create("sys-b", {"resourceType": "Patient", "name": [{"family": "Fam-enc"}]})
    oid = f.create("sys-b", observation(pid, "EXT"))
    enc = encounter(pid, "in-progress", participant="Practitioner/" + f.ids["prac.a"])
    enc["id"] = f.create("sys-b", enc)
    expect_status(f.req("doctor", "GET", "/Observation/" + oid), 200, "during the encounter")
    enc["status"] = "finished"
    f.put("sys-b", enc, 200)
    expect_outcome(f.req("doctor", "GET", "/Observation/" + oid), 403,
                   what="after the encounter finished")


def test_ward_ends_when_the_relationship_does(t):
    """A guardianship set inactive ends the resident's access to the ward at once."""
    f = fix(t)
    ward = f.create("sys-b", {"resourceType": "Patient", "name": [{"family": "Fam-ward2"}]})
    oid = f.create("sys-b", observation(ward, "EXT"))
    rp = related(ward, "GUARD")
    rp["id"] = f.create("sys-b", rp)
    # The resident's Patient gains a second link (sys-b holds it).
    r = f.req("sys-b", "GET", "/Patient/" + f.ids["pat.self"])
    expect_status(r, 200, "sys-b reads the resident's Patient")
    pat = r.json
    pat.pop("meta", None)
    pat["link"].append({"other": {"reference": "RelatedPerson/" + rp["id"]}, "type": "seealso"})
    f.put("sys-b", pat, 200)
    expect_status(f.req("resident", "GET", "/Observation/" + oid), 200, "the new ward")
    rp["active"] = False
    f.put("sys-b", rp, 200)
    expect_outcome(f.req("resident", "GET", "/Observation/" + oid), 403,
                   what="after the guardianship was set inactive")


def audit_rows(f):
    """(action, reason) of every record of the audit trail, read from the database."""
    sql = "SELECT action, COALESCE(reason, '') FROM audit_event ORDER BY seq"
    if f.db.startswith("sqlite:"):
        import sqlite3
        con = sqlite3.connect(f.db[len("sqlite:"):], timeout=30)
        try:
            return [tuple(r) for r in con.execute(sql)]
        finally:
            con.close()
    u = urlsplit(f.db)
    psql = os.path.join(os.environ.get("PGBIN", "/usr/lib/postgresql/15/bin"), "psql")
    r = subprocess.run([psql, "-h", u.hostname, "-p", str(u.port), "-U",
                        u.username or "postgres", "-d", u.path.lstrip("/"), "-At", "-F", "\t",
                        "-c", sql], capture_output=True, text=True, timeout=60, cwd="/")
    expect(r.returncode == 0, "psql: %s" % r.stderr.strip())
    return [tuple(line.split("\t", 1)) for line in r.stdout.splitlines() if line]


def test_break_glass_is_flagged_in_the_audit_trail(t):
    """A break-glass read is recorded in the audit trail as break-glass, with its reason,
    before the response leaves (docs/internals/authz.md); a refusal as refused."""
    f = fix(t)
    reason = "bleeding patient, no consent possible " + uuid.uuid4().hex[:8]
    r = f.req("nurse", "GET", "/Observation/" + f.ids["obs.none"],
              headers={"X-Break-Glass-Reason": reason})
    expect_status(r, 200, "break-glass read")
    rows = audit_rows(f)
    hits = [x for x in rows if reason in x[1]]
    expect(hits, "no audit record carries the break-glass reason (%d records in audit_event; "
           "actions: %s)" % (len(rows), sorted(set(a for a, _ in rows))))
    expect(all(a == "break-glass" for a, _ in hits),
           "the audit record of a break-glass read says break-glass: %s" % hits)


# ---- the generated tests ----

def slug(s):
    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_")


def generate_tests():
    tests = []
    seen = set()
    for role, family, cells in MATRIX:
        cs = cells.split()
        assert len(cs) == len(PATIENTS) and role in ROLES and (role, family) not in seen, \
            (role, family)
        seen.add((role, family))
        for pk, cell in zip(PATIENTS, cs):
            tests.append(("matrix_%s_%s_%s" % (slug(role), slug(family.replace("@", "_at_")), pk),
                          lambda t, r=role, fa=family, p=pk, c=cell: run_cell(t, r, fa, p, c)))
    for role in ROLES:
        tests.append(("matrix_%s_search_all" % slug(role),
                      lambda t, r=role: run_search_all(t, r)))
    names = set()
    for line in EXTRA:
        assert line[0] not in names, line[0]
        names.add(line[0])
        tests.append(("extra_" + line[0], lambda t, x=line: run_extra(t, x)))
    tests.append(("zz_server_stops_cleanly", stop_server))
    return tests


def stop_server(t):
    f = FIX.get(id(t))
    if isinstance(f, Fix):
        expect_eq(f.srv.stop(), 0, "the authz server stops cleanly")
