/* SPDX-License-Identifier: Apache-2.0
 * test-cfg.c: unit tests of common/cfg.c with a table of its own: defaults,
 * files overriding some keys, --set overrides, invalid and out-of-range
 * values naming file, line, key and value, unknown keys as warnings,
 * missing files, long lines, and --dump-config output that loads back to
 * the same values. The daemons' own tables and contrib/config/ examples
 * are checked by an integration script. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"
#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "util.h"

struct test_config {
    char *name;
    char *path;
    int log_level;
    uint32_t port;     /* bounded 1..65535 */
    uint32_t workers;  /* unbounded */
    bool enabled;
    double ratio;      /* bounded 0..1 */
    double scale;      /* unbounded */
    uint64_t big;
};

#define K(sec, name, type, field, def, lo, hi, text)                                   \
    { sec, name, type, offsetof(struct test_config, field), def, lo, hi, text }

static const struct yun_cfg_key table[] = {
    K("main", "name", YUN_CFG_STRING, name, "yun", 0, 0, "A name."),
    K("main", "path", YUN_CFG_STRING, path, "/var/lib/yun", 0, 0, "A path."),
    K("main", "log_level", YUN_CFG_LOGLEVEL, log_level, "info", 0, 0, "A log level."),
    K("net", "port", YUN_CFG_U32, port, "7700", 1, 65535, "A port."),
    K("net", "workers", YUN_CFG_U32, workers, "4", 0, 0, "Any u32."),
    K("net", "enabled", YUN_CFG_BOOL, enabled, "yes", 0, 0, "A switch."),
    K("tune", "ratio", YUN_CFG_DOUBLE, ratio, "0.5", 0, 1, "A fraction."),
    K("tune", "scale", YUN_CFG_DOUBLE, scale, "2.5", 0, 0, "Any double."),
    K("tune", "big", YUN_CFG_U64, big, "1099511627776", 0, 0, "Any u64."),
};
#define N ELEMENTSOF(table)

static char test_dir[512];
static unsigned file_counter;

struct warnings {
    int count;
    char msgs[8][512];
};

static void
collect_warning(const char *msg, void *data)
{
    struct warnings *w = data;
    if (w->count < 8)
        snprintf(w->msgs[w->count], sizeof w->msgs[0], "%s", msg);
    w->count++;
}

/* Writes 'content' to a new file under the test dir; returns its path. */
static char *
write_config(const char *content)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/cfg-%u.conf", test_dir, file_counter++) > 0);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    assert_int_equal(fputs(content, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
    return path;
}

static void
assert_defaults(const struct test_config *c)
{
    assert_string_equal(c->name, "yun");
    assert_string_equal(c->path, "/var/lib/yun");
    assert_int_equal(c->log_level, YUN_LOG_INFO);
    assert_int_equal(c->port, 7700);
    assert_int_equal(c->workers, 4);
    assert_true(c->enabled);
    assert_true(c->ratio == 0.5);
    assert_true(c->scale == 2.5);
    assert_int_equal(c->big, 1099511627776ULL);
}

static void
assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("'%s' does not contain '%s'", haystack ? haystack : "(null)", needle);
}

/* Loads 'content' as a file and expects failure; returns the message. */
static char *
load_bad(const char *content, char **ret_path)
{
    char *path = write_config(content);
    struct test_config c = { 0 };
    char *err = NULL;
    int r = yun_cfg_load(table, N, &c, path, false, NULL, NULL, &err);
    yun_cfg_done(table, N, &c);
    if (r != YUN_E_CONFIG)
        fail_msg("loading %s: got %s, want YUN_E_CONFIG", path, yun_errname(r));
    assert_non_null(err);
    /* Every error names the file it is about. */
    assert_contains(err, path);
    if (ret_path)
        *ret_path = path;
    else
        free(path);
    return err;
}

static void
test_defaults(void **state)
{
    struct test_config c = { 0 };
    char *err = NULL;
    assert_int_equal(yun_cfg_load(table, N, &c, NULL, false, NULL, NULL, &err), 0);
    assert_null(err);
    assert_defaults(&c);
    yun_cfg_done(table, N, &c);
    assert_null(c.name);
    assert_null(c.path);
}

static void
test_file_overrides(void **state)
{
    _cleanup_free_ char *path = write_config("# yun test config\n"
                                             "[main]\n"
                                             "name = custom name\n"
                                             "log_level = DEBUG\n"
                                             "\n"
                                             "[net]\n"
                                             "  port=8800  \n"
                                             "enabled = off\n"
                                             "[tune]\n"
                                             "ratio = 0.25\n"
                                             "big = 18446744073709551615\n");
    struct test_config c = { 0 };
    char *err = NULL;
    struct warnings w = { 0 };
    assert_int_equal(yun_cfg_load(table, N, &c, path, false, collect_warning, &w, &err), 0);
    assert_null(err);
    assert_int_equal(w.count, 0);
    assert_string_equal(c.name, "custom name");
    assert_int_equal(c.log_level, YUN_LOG_DEBUG);
    assert_int_equal(c.port, 8800);
    assert_false(c.enabled);
    assert_true(c.ratio == 0.25);
    assert_int_equal(c.big, UINT64_MAX);
    /* The rest keep their defaults. */
    assert_string_equal(c.path, "/var/lib/yun");
    assert_int_equal(c.workers, 4);
    assert_true(c.scale == 2.5);

    /* Loading again (a reload) starts from the defaults, without leaks. */
    _cleanup_free_ char *path2 = write_config("[net]\nworkers = 9\n");
    assert_int_equal(yun_cfg_load(table, N, &c, path2, false, NULL, NULL, &err), 0);
    assert_int_equal(c.workers, 9);
    assert_int_equal(c.port, 7700);
    assert_string_equal(c.name, "yun");
    yun_cfg_done(table, N, &c);
}

static void
test_set(void **state)
{
    _cleanup_free_ char *path = write_config("[net]\nport = 8800\n");
    struct test_config c = { 0 };
    char *err = NULL;
    assert_int_equal(yun_cfg_load(table, N, &c, path, false, NULL, NULL, &err), 0);
    assert_int_equal(c.port, 8800);

    /* --set wins over the file, with the same parsers. */
    assert_int_equal(yun_cfg_set(table, N, &c, "net.port=9900", &err), 0);
    assert_int_equal(c.port, 9900);
    assert_int_equal(yun_cfg_set(table, N, &c, "main.name=a b.c=d", &err), 0);
    assert_string_equal(c.name, "a b.c=d");
    assert_int_equal(yun_cfg_set(table, N, &c, "main.log_level=warn", &err), 0);
    assert_int_equal(c.log_level, YUN_LOG_WARN);
    assert_int_equal(yun_cfg_set(table, N, &c, "net.enabled=false", &err), 0);
    assert_false(c.enabled);
    assert_int_equal(yun_cfg_set(table, N, &c, "tune.scale=-3.75", &err), 0);
    assert_true(c.scale == -3.75);
    assert_int_equal(yun_cfg_set(table, N, &c, "main.path=", &err), 0);
    assert_string_equal(c.path, "");
    assert_null(err);

    static const struct {
        const char *assignment;
        const char *want; /* in the message */
    } bad[] = {
        { "net.port=0", "'net.port'" },
        { "net.port=65536", "'65536'" },
        { "net.port=http", "'http'" },
        { "net.workers=-1", "'-1'" },
        { "tune.ratio=2", "from 0 to 1" },
        { "net.enabled=maybe", "yes or no" },
        { "main.log_level=loud", "'loud'" },
        { "net.nosuch=1", "'net.nosuch'" },
        { "noequals", "'noequals'" },
        { "nodot=1", "section.key=value" },
        { "port=1.5", "section.key=value" },
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        char *msg = NULL;
        int r = yun_cfg_set(table, N, &c, bad[i].assignment, &msg);
        if (r != YUN_E_CONFIG)
            fail_msg("'%s': got %s", bad[i].assignment, yun_errname(r));
        assert_contains(msg, bad[i].want);
        free(msg);
    }
    /* Failed settings changed nothing. */
    assert_int_equal(c.port, 9900);
    assert_true(c.ratio == 0.5);
    assert_true(c.enabled == false);
    assert_int_equal(c.log_level, YUN_LOG_WARN);
    yun_cfg_done(table, N, &c);
}

static void
test_bad_value_names_file_line_key_value(void **state)
{
    char *path = NULL;
    _cleanup_free_ char *err = load_bad("[net]\n"
                                        "port = 8800\n"
                                        "# workers must be a number\n"
                                        "workers = many\n"
                                        "enabled = yes\n",
                                        &path);
    _cleanup_free_ char *where = NULL;
    assert_true(asprintf(&where, "%s:4:", path) > 0);
    assert_contains(err, where);
    assert_contains(err, "workers");
    assert_contains(err, "'many'");
    free(path);
}

static void
test_bad_values(void **state)
{
    static const struct {
        const char *line;
        const char *key;
        const char *value;
    } cases[] = {
        { "[net]\nport = 0\n", "port", "'0'" },
        { "[net]\nport = 65536\n", "port", "'65536'" },
        { "[net]\nport = 80x\n", "port", "'80x'" },
        { "[net]\nport = -80\n", "port", "'-80'" },
        { "[net]\nworkers = 4294967296\n", "workers", "'4294967296'" },
        { "[net]\nworkers = 1e3\n", "workers", "'1e3'" },
        { "[net]\nenabled = maybe\n", "enabled", "'maybe'" },
        { "[tune]\nratio = 1.5\n", "ratio", "'1.5'" },
        { "[tune]\nratio = -0.1\n", "ratio", "'-0.1'" },
        { "[tune]\nratio = nan\n", "ratio", "'nan'" },
        { "[tune]\nratio = inf\n", "ratio", "'inf'" },
        { "[tune]\nscale = nan\n", "scale", "'nan'" },
        { "[tune]\nscale = 1e999\n", "scale", "'1e999'" },
        { "[tune]\nscale = twelve\n", "scale", "'twelve'" },
        { "[tune]\nbig = 18446744073709551616\n", "big", "'18446744073709551616'" },
        { "[main]\nlog_level = verbose\n", "log_level", "'verbose'" },
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char *path = NULL;
        _cleanup_free_ char *err = load_bad(cases[i].line, &path);
        _cleanup_free_ char *where = NULL;
        assert_true(asprintf(&where, "%s:2:", path) > 0);
        assert_contains(err, where);
        assert_contains(err, cases[i].key);
        assert_contains(err, cases[i].value);
        free(path);
    }
}

static void
test_first_error_wins(void **state)
{
    char *path = NULL;
    _cleanup_free_ char *err = load_bad("[net]\n"
                                        "port = first\n"
                                        "workers = second\n"
                                        "enabled = third\n",
                                        &path);
    _cleanup_free_ char *where = NULL;
    assert_true(asprintf(&where, "%s:2:", path) > 0);
    assert_contains(err, where);
    assert_contains(err, "'first'");
    free(path);
}

static void
test_syntax_error(void **state)
{
    char *path = NULL;
    _cleanup_free_ char *err = load_bad("[net]\nport = 1\n[broken\n", &path);
    _cleanup_free_ char *where = NULL;
    assert_true(asprintf(&where, "%s:3:", path) > 0);
    assert_contains(err, where);
    free(path);
}

static void
test_unknown_keys_warn(void **state)
{
    _cleanup_free_ char *path = write_config("[net]\n"
                                             "port = 1000\n"
                                             "bogus = 2\n"
                                             "[nosuch]\n"
                                             "port = 3\n"
                                             "[tune]\n"
                                             "ratio = 0.75\n");
    struct test_config c = { 0 };
    char *err = NULL;
    struct warnings w = { 0 };
    assert_int_equal(yun_cfg_load(table, N, &c, path, false, collect_warning, &w, &err), 0);
    assert_null(err);
    assert_int_equal(w.count, 2);
    _cleanup_free_ char *at3 = NULL, *at5 = NULL;
    assert_true(asprintf(&at3, "%s:3:", path) > 0);
    assert_true(asprintf(&at5, "%s:5:", path) > 0);
    assert_contains(w.msgs[0], at3);
    assert_contains(w.msgs[0], "bogus");
    assert_contains(w.msgs[1], at5);
    assert_contains(w.msgs[1], "nosuch");
    /* The known keys around them still applied. */
    assert_int_equal(c.port, 1000);
    assert_true(c.ratio == 0.75);
    yun_cfg_done(table, N, &c);

    /* No callback: still not an error. */
    assert_int_equal(yun_cfg_load(table, N, &c, path, false, NULL, NULL, &err), 0);
    assert_int_equal(c.port, 1000);
    yun_cfg_done(table, N, &c);
}

static void
test_missing_file(void **state)
{
    _cleanup_free_ char *path = NULL;
    assert_true(asprintf(&path, "%s/does-not-exist.conf", test_dir) > 0);
    struct test_config c = { 0 };
    char *err = NULL;
    assert_int_equal(yun_cfg_load(table, N, &c, path, true, NULL, NULL, &err), 0);
    assert_null(err);
    assert_defaults(&c);
    yun_cfg_done(table, N, &c);

    assert_int_equal(yun_cfg_load(table, N, &c, path, false, NULL, NULL, &err), -ENOENT);
    assert_contains(err, path);
    free(err);
    yun_cfg_done(table, N, &c);
}

static void
test_long_lines(void **state)
{
    /* inih reads lines into a 200-byte buffer: longer ones come in pieces.
     * A long comment is fine and must not shift the line numbers; a long
     * assignment must be refused, not cut and half-applied. */
    char comment[400];
    memset(comment, 'c', sizeof comment);
    comment[0] = '#';
    comment[300] = 0;
    char exact[201]; /* 199 characters and the newline fill the buffer */
    memset(exact, 'e', sizeof exact);
    exact[0] = '#';
    exact[199] = 0;

    _cleanup_free_ char *content = NULL;
    assert_true(asprintf(&content, "[net]\n%s\n%s\nport = bad\n", comment, exact) > 0);
    char *path = NULL;
    _cleanup_free_ char *err = load_bad(content, &path);
    _cleanup_free_ char *where = NULL;
    assert_true(asprintf(&where, "%s:4:", path) > 0);
    assert_contains(err, where);
    assert_contains(err, "'bad'");
    free(path);

    /* Long comments and a good value: loads. */
    free(content);
    content = NULL;
    assert_true(asprintf(&content, "%s\n[net]\n%s\nport = 1234\n", comment, exact) > 0);
    _cleanup_free_ char *good = write_config(content);
    struct test_config c = { 0 };
    char *msg = NULL;
    struct warnings w = { 0 };
    assert_int_equal(yun_cfg_load(table, N, &c, good, false, collect_warning, &w, &msg), 0);
    assert_int_equal(c.port, 1234);
    assert_int_equal(w.count, 0);
    yun_cfg_done(table, N, &c);

    /* A value too long for the buffer, whose tail looks like a key. */
    char value[300];
    memset(value, 'v', sizeof value);
    value[0] = '/';
    memcpy(value + 250, "?x=1", 5);
    free(content);
    content = NULL;
    assert_true(asprintf(&content, "[main]\nname = n\npath = %s\n", value) > 0);
    path = NULL;
    _cleanup_free_ char *err2 = load_bad(content, &path);
    free(where);
    where = NULL;
    assert_true(asprintf(&where, "%s:3:", path) > 0);
    assert_contains(err2, where);
    free(path);
}

static void
test_bad_default(void **state)
{
    static const struct yun_cfg_key broken[] = {
        K("net", "port", YUN_CFG_U32, port, "not a number", 0, 0, "Broken."),
    };
    struct test_config c = { 0 };
    char *err = NULL;
    assert_int_equal(yun_cfg_load(broken, 1, &c, NULL, false, NULL, NULL, &err),
                     YUN_E_CONFIG);
    assert_contains(err, "net.port");
    free(err);
}

static void
dump_and_reload(const struct test_config *in, struct test_config *out)
{
    _cleanup_free_ char *path = NULL;
    assert_true(asprintf(&path, "%s/dump-%u.conf", test_dir, file_counter++) > 0);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    yun_cfg_dump(table, N, in, f);
    assert_int_equal(fclose(f), 0);

    char *err = NULL;
    struct warnings w = { 0 };
    int r = yun_cfg_load(table, N, out, path, false, collect_warning, &w, &err);
    if (r < 0)
        fail_msg("reloading the dump: %s", err);
    assert_int_equal(w.count, 0);
}

static void
assert_same(const struct test_config *a, const struct test_config *b)
{
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->path, b->path);
    assert_int_equal(a->log_level, b->log_level);
    assert_int_equal(a->port, b->port);
    assert_int_equal(a->workers, b->workers);
    assert_int_equal(a->enabled, b->enabled);
    if (a->ratio != b->ratio || a->scale != b->scale)
        fail_msg("doubles changed: ratio %.17g -> %.17g, scale %.17g -> %.17g", a->ratio,
                 b->ratio, a->scale, b->scale);
    assert_int_equal(a->big, b->big);
}

static void
test_dump_round_trip(void **state)
{
    /* The defaults. */
    struct test_config a = { 0 }, b = { 0 };
    char *err = NULL;
    assert_int_equal(yun_cfg_load(table, N, &a, NULL, false, NULL, NULL, &err), 0);
    dump_and_reload(&a, &b);
    assert_same(&a, &b);
    yun_cfg_done(table, N, &b);

    /* Every key changed, with awkward values. */
    static const char *const sets[] = {
        "main.name=with  inner   spaces",
        "main.path=",
        "main.log_level=err",
        "net.port=65535",
        "net.workers=4294967295",
        "net.enabled=no",
        "tune.big=18446744073709551615",
    };
    for (size_t i = 0; i < ELEMENTSOF(sets); i++)
        assert_int_equal(yun_cfg_set(table, N, &a, sets[i], &err), 0);
    static const double ratios[] = { 0.1, 1.0 / 3.0, 0.123456789012345, 1e-300, 1.0, 0.0 };
    static const double scales[] = { 123456.789, -1e300, 2.5e-10, 0.30000000000000004,
                                     9007199254740993.0, -0.0 };
    for (size_t i = 0; i < ELEMENTSOF(ratios); i++) {
        a.ratio = ratios[i];
        a.scale = scales[i];
        dump_and_reload(&a, &b);
        assert_same(&a, &b);
        yun_cfg_done(table, N, &b);
    }
    yun_cfg_done(table, N, &a);
}

static void
test_dump_format(void **state)
{
    /* Simple values print simply: the examples in contrib/config/ are this
     * output and people read them. */
    struct test_config a = { 0 };
    char *err = NULL;
    assert_int_equal(yun_cfg_load(table, N, &a, NULL, false, NULL, NULL, &err), 0);
    a.scale = 0.1;
    char *text = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&text, &size);
    assert_non_null(f);
    yun_cfg_dump(table, N, &a, f);
    assert_int_equal(fclose(f), 0);
    assert_contains(text, "[main]\n");
    assert_contains(text, "\n[tune]\n");
    assert_contains(text, "# A fraction.\n# Default: 0.5\nratio = 0.5\n");
    assert_contains(text, "scale = 0.1\n");
    assert_contains(text, "enabled = yes\n");
    assert_contains(text, "log_level = info\n");
    assert_contains(text, "big = 1099511627776\n");
    free(text);
    yun_cfg_done(table, N, &a);
}

static int
group_setup(void **state)
{
    const char *dir = getenv("YUN_TEST_DIR");
    if (dir && *dir) {
        if (yun_mkdir_p(dir, 0700) < 0)
            return -1;
        snprintf(test_dir, sizeof test_dir, "%s", dir);
    } else {
        snprintf(test_dir, sizeof test_dir, "/tmp/yun-test-cfg-XXXXXX");
        if (!mkdtemp(test_dir))
            return -1;
    }
    return 0;
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_file_overrides),
        cmocka_unit_test(test_set),
        cmocka_unit_test(test_bad_value_names_file_line_key_value),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_first_error_wins),
        cmocka_unit_test(test_syntax_error),
        cmocka_unit_test(test_unknown_keys_warn),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_long_lines),
        cmocka_unit_test(test_bad_default),
        cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_dump_format),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
