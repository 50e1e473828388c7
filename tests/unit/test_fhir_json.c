/* test_fhir_json.c - the JSON reader refuses what a hostile client sends and keeps decimals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "fhir/json.h"

static const struct jk_json_limits limits = {64, 1000};

/* Parses text; returns rc and leaves the first issue's message in *msg. */
static jk_rc parse(struct jk_arena *a, const char *text, size_t n, struct json_object **out,
                   const char **msg)
{
    struct jk_diag d;
    jk_diag_init(&d, a);
    jk_rc rc = jk_json_parse(text, n, &limits, &d, out);
    *msg = d.head ? d.head->msg : "";
    return rc;
}

static void refuses(const char *text, size_t n, jk_rc want, const char *words)
{
    struct jk_arena *a = jk_arena_new(0);
    struct json_object *o = NULL;
    const char *msg;
    assert_int_equal(parse(a, text, n, &o, &msg), want);
    assert_null(o);
    if (!strstr(msg, words)) fail_msg("message '%s' lacks '%s'", msg, words);
    jk_arena_free(a);
}

static void bad_json_is_refused_with_a_reason(void **state)
{
    (void)state;
    refuses("", 0, JK_EINVAL, "empty");
    refuses("{\"a\":", 5, JK_EINVAL, "ends before");
    refuses("{\"a\":1,}", 8, JK_EINVAL, "not valid JSON");
    refuses("{\"a\":1} x", 9, JK_EINVAL, "byte 8");
    refuses("[1,2]", 5, JK_EINVAL, "must be a JSON object");
    refuses("{\"a\":\"x\0y\"}", 11, JK_EINVAL, "NUL");
    refuses("{\"a\":\"\xff\xfe\"}", 10, JK_EINVAL, "not valid JSON");
    refuses("{\"a\":\"\xe7\x8e\"}", 10, JK_EINVAL, "not valid JSON"); /* truncated 王 */
}

static void duplicate_keys_are_refused_even_when_nested(void **state)
{
    (void)state;
    const char *t1 = "{\"resourceType\":\"Patient\",\"gender\":\"male\",\"gender\":\"female\"}";
    refuses(t1, strlen(t1), JK_EINVAL, "same property name twice");
    const char *t2 = "{\"a\":[{\"b\":1,\"c\":{\"d\":1,\"d\":2}}]}";
    refuses(t2, strlen(t2), JK_EINVAL, "same property name twice");
    /* a colon inside a string is not a member */
    struct jk_arena *a = jk_arena_new(0);
    struct json_object *o;
    const char *msg;
    const char *t3 = "{\"url\":\"http://x:80/a\\\":b\",\"k\":{\"z\":\":\"}}";
    assert_int_equal(parse(a, t3, strlen(t3), &o, &msg), JK_OK);
    json_object_put(o);
    jk_arena_free(a);
}

static void depth_and_array_limits_hold(void **state)
{
    (void)state;
    size_t depth = 10000;
    char *deep = malloc(depth * 2 + 16);
    size_t n = 0;
    deep[n++] = '{';
    memcpy(deep + n, "\"a\":", 4);
    n += 4;
    for (size_t i = 0; i < depth; i++)
        deep[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        deep[n++] = ']';
    deep[n++] = '}';
    refuses(deep, n, JK_EINVAL, "deeper than 64");
    free(deep);

    size_t count = 1001;
    char *arr = malloc(count * 2 + 16);
    n = 0;
    memcpy(arr, "{\"a\":[", 6);
    n = 6;
    for (size_t i = 0; i < count; i++) {
        arr[n++] = '1';
        arr[n++] = i + 1 < count ? ',' : ']';
    }
    arr[n++] = '}';
    refuses(arr, n, JK_ETOOBIG, "1001 elements");
    free(arr);
}

static void decimals_and_unicode_survive_a_round_trip(void **state)
{
    (void)state;
    struct jk_arena *a = jk_arena_new(0);
    struct json_object *o;
    const char *msg;
    const char *t = "{\"v\":1.50,\"w\":0.000100,\"x\":-2E+3,\"n\":\"王𠀀e\xcc\x81\",\"s\":\"a/b\"}";
    assert_int_equal(parse(a, t, strlen(t), &o, &msg), JK_OK);
    size_t len;
    const char *out = jk_json_text(o, a, &len);
    assert_string_equal(out, t);
    assert_int_equal(len, strlen(t));
    assert_string_equal(jk_json_str(o, "n"), "王𠀀e\xcc\x81");
    assert_null(jk_json_str(o, "v"));
    assert_null(jk_json_str(o, "missing"));
    json_object_put(o);
    jk_arena_free(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_json_is_refused_with_a_reason),
        cmocka_unit_test(duplicate_keys_are_refused_even_when_nested),
        cmocka_unit_test(depth_and_array_limits_hold),
        cmocka_unit_test(decimals_and_unicode_survive_a_round_trip),
    };
    return cmocka_run_group_tests_name("fhir_json", tests, NULL, NULL);
}
