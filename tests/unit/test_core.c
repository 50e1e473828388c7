/* test_core.c - arena, bounded buffer, diagnostics, configuration and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/diag.h"
#include "core/time.h"

static void arena_gives_aligned_distinct_memory_and_large_blocks(void **state)
{
    (void)state;
    struct jk_arena *a = jk_arena_new(64);
    char *p = jk_arena_alloc(a, 10), *q = jk_arena_alloc(a, 10);
    assert_non_null(p);
    assert_true(q >= p + 10 || q + 10 <= p);
    assert_int_equal((uintptr_t)q % 16, 0);
    char *big = jk_arena_alloc(a, 100000); /* larger than a block */
    assert_non_null(big);
    memset(big, 'x', 100000);
    assert_string_equal(jk_arena_printf(a, "%s-%d", "王", 7), "王-7");
    char *dup = jk_arena_strndup(a, "abcdef", 3);
    assert_string_equal(dup, "abc");
    jk_arena_reset(a);
    assert_int_equal(jk_arena_used(a), 0);
    assert_non_null(jk_arena_alloc(a, 8));
    jk_arena_free(a);
}

static void buf_refuses_to_grow_past_its_maximum(void **state)
{
    (void)state;
    struct jk_buf b;
    jk_buf_init(&b, 8);
    assert_int_equal(jk_buf_puts(&b, "12345678"), JK_OK);
    assert_int_equal(jk_buf_puts(&b, "9"), JK_ETOOBIG);
    assert_int_equal(b.len, 8); /* unchanged by the failed append */
    assert_string_equal(b.p, "12345678");
    jk_buf_free(&b);
}

static void buf_escapes_json_but_keeps_utf8(void **state)
{
    (void)state;
    struct jk_buf b;
    jk_buf_init(&b, 0);
    const char in[] = "a\"b\\c\n\x01 王𠀀";
    assert_int_equal(jk_buf_json_escape(&b, in, sizeof in - 1), JK_OK);
    assert_string_equal(b.p, "a\\\"b\\\\c\\n\\u0001 王𠀀");
    jk_buf_free(&b);
}

static void diag_keeps_issues_in_order_and_caps_them(void **state)
{
    (void)state;
    struct jk_arena *a = jk_arena_new(0);
    struct jk_diag d;
    jk_diag_init(&d, a);
    d.max_issues = 2;
    assert_int_equal(jk_diag_rc(&d), JK_OK);
    assert_int_equal(jk_diag_add(&d, JK_EINVAL, "value", "Patient.gender", "bad %s", "M"),
                     JK_EINVAL);
    jk_diag_add(&d, JK_ENOTFOUND, NULL, NULL, "second");
    jk_diag_add(&d, JK_EINVAL, NULL, NULL, "third is counted, not kept");
    assert_int_equal(d.n_issues, 3);
    assert_string_equal(d.head->expr, "Patient.gender");
    assert_string_equal(d.head->msg, "bad M");
    assert_string_equal(d.head->next->code, "not-found");
    assert_null(d.head->next->next);
    assert_int_equal(jk_diag_rc(&d), JK_EINVAL);
    jk_arena_free(a);
}

static const char *write_temp(const char *text)
{
    static char path[] = "/tmp/jk-config-XXXXXX";
    memcpy(path + sizeof path - 7, "XXXXXX", 6); /* mkstemp filled it in last time */
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void config_file_errors_name_the_file_and_line(void **state)
{
    (void)state;
    struct jk_config cfg;
    char err[512];
    jk_config_defaults(&cfg);
    const char *path = write_temp("# comment\nlisten = 0.0.0.0:9000\n\nthreads = 4\n");
    assert_int_equal(jk_config_load_file(&cfg, path, err, sizeof err), JK_OK);
    assert_string_equal(cfg.listen, "0.0.0.0:9000");
    assert_int_equal(cfg.threads, 4);
    unlink(path);

    path = write_temp("threads = 2\ncolour = blue\n");
    assert_int_equal(jk_config_load_file(&cfg, path, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, ":2: unknown setting 'colour'"));
    assert_non_null(strstr(err, path));
    unlink(path);

    path = write_temp("threads = many\n");
    assert_int_equal(jk_config_load_file(&cfg, path, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, ":1: threads must be a whole number"));
    unlink(path);

    path = write_temp("access_log = maybe\n");
    assert_int_equal(jk_config_load_file(&cfg, path, err, sizeof err), JK_EINVAL);
    unlink(path);
}

static void config_environment_overrides_and_listen_splits(void **state)
{
    (void)state;
    struct jk_config cfg;
    char err[512], addr[64];
    unsigned port;
    jk_config_defaults(&cfg);
    setenv("JIANKANG_MAX_BODY_BYTES", "2048", 1);
    setenv("JIANKANG_DB", "sqlite:/tmp/x.db", 1);
    assert_int_equal(jk_config_load_env(&cfg, err, sizeof err), JK_OK);
    assert_int_equal(cfg.max_body_bytes, 2048);
    assert_string_equal(cfg.db, "sqlite:/tmp/x.db");
    setenv("JIANKANG_MAX_BODY_BYTES", "-1", 1);
    assert_int_equal(jk_config_load_env(&cfg, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "JIANKANG_MAX_BODY_BYTES"));
    unsetenv("JIANKANG_MAX_BODY_BYTES");
    unsetenv("JIANKANG_DB");
    /* security is on unless turned off on purpose */
    assert_int_equal(cfg.security, 1);
    setenv("JIANKANG_SECURITY", "off", 1);
    assert_int_equal(jk_config_load_env(&cfg, err, sizeof err), JK_OK);
    assert_int_equal(cfg.security, 0);
    setenv("JIANKANG_SECURITY", "partly", 1);
    assert_int_equal(jk_config_load_env(&cfg, err, sizeof err), JK_EINVAL);
    assert_non_null(strstr(err, "security must be on or off"));
    unsetenv("JIANKANG_SECURITY");
    assert_int_equal(jk_config_listen(&cfg, addr, sizeof addr, &port), JK_OK);
    assert_string_equal(addr, "127.0.0.1");
    assert_int_equal(port, 8080);
    jk_config_set(&cfg, "listen", "[::1]:81", "test", err, sizeof err);
    assert_int_equal(jk_config_listen(&cfg, addr, sizeof addr, &port), JK_OK);
    assert_string_equal(addr, "::1");
    assert_int_equal(port, 81);
    jk_config_set(&cfg, "listen", "nowhere", "test", err, sizeof err);
    assert_int_equal(jk_config_listen(&cfg, addr, sizeof addr, &port), JK_EINVAL);
}

static void time_round_trips_and_honours_offsets(void **state)
{
    (void)state;
    char out[40];
    int64_t ms;
    assert_int_equal(jk_time_parse_iso("2026-11-22T08:30:00.123Z", 24, &ms), 0);
    assert_string_equal(jk_time_iso(ms, out, sizeof out), "2026-11-22T08:30:00.123Z");
    int64_t beijing;
    assert_int_equal(jk_time_parse_iso("2026-11-22T16:30:00.123+08:00", 29, &beijing), 0);
    assert_int_equal(beijing, ms);
    assert_int_equal(jk_time_parse_iso("2026-11-22", 10, &ms), 0);
    assert_string_equal(jk_time_iso(ms, out, sizeof out), "2026-11-22T00:00:00.000Z");
    assert_int_not_equal(jk_time_parse_iso("2026-13-01", 10, &ms), 0);
    assert_int_not_equal(jk_time_parse_iso("2026-11-22T08:30", 16, &ms), 0); /* no zone */
    assert_int_not_equal(jk_time_parse_iso("yesterday", 9, &ms), 0);
    assert_string_equal(jk_time_http(0, out, sizeof out), "Thu, 01 Jan 1970 00:00:00 GMT");
}

static void rc_table_maps_every_code(void **state)
{
    (void)state;
    assert_int_equal(jk_rc_http_status(JK_EINVAL), 400);
    assert_int_equal(jk_rc_http_status(JK_EGONE), 410);
    assert_int_equal(jk_rc_http_status(JK_EPRECOND), 412);
    assert_int_equal(jk_rc_http_status(JK_ETOOBIG), 413);
    assert_int_equal(jk_rc_http_status(JK_EDB), 500);
    assert_string_equal(jk_rc_issue_code(JK_ENOTFOUND), "not-found");
    for (int rc = JK_OK; rc <= JK_EINTERNAL; rc++) {
        assert_true(jk_rc_http_status((jk_rc)rc) >= 200);
        assert_non_null(jk_rc_issue_code((jk_rc)rc));
        assert_string_not_equal(jk_rc_name((jk_rc)rc), "EUNKNOWN");
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arena_gives_aligned_distinct_memory_and_large_blocks),
        cmocka_unit_test(buf_refuses_to_grow_past_its_maximum),
        cmocka_unit_test(buf_escapes_json_but_keeps_utf8),
        cmocka_unit_test(diag_keeps_issues_in_order_and_caps_them),
        cmocka_unit_test(config_file_errors_name_the_file_and_line),
        cmocka_unit_test(config_environment_overrides_and_listen_splits),
        cmocka_unit_test(time_round_trips_and_honours_offsets),
        cmocka_unit_test(rc_table_maps_every_code),
    };
    return cmocka_run_group_tests_name("core", tests, NULL, NULL);
}
