/* SPDX-License-Identifier: Apache-2.0
 * cfg.c: table-driven INI configuration (see cfg.h). */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "cleanup.h"
#include "err.h"
#include "log.h"
#include "cfg.h"
#include "util.h"

static const struct yun_cfg_key *
find_key(const struct yun_cfg_key *table, size_t n, const char *section, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(table[i].section, section) == 0 && strcmp(table[i].key, key) == 0)
            return &table[i];
    return NULL;
}

static int
parse_value(const struct yun_cfg_key *k, void *cfg, const char *value)
{
    char *field = (char *)cfg + k->offset;
    bool bounded = k->min != 0 || k->max != 0;
    int r;

    switch (k->type) {
    case YUN_CFG_STRING: {
        char *s = strdup(value);
        if (!s)
            return -ENOMEM;
        free(*(char **)field);
        *(char **)field = s;
        return 0;
    }
    case YUN_CFG_U32: {
        uint32_t v;
        r = yun_safe_atou32(value, &v);
        if (r < 0)
            return r;
        if (bounded && (v < k->min || v > k->max))
            return -ERANGE;
        *(uint32_t *)field = v;
        return 0;
    }
    case YUN_CFG_U64: {
        uint64_t v;
        r = yun_safe_atou64(value, &v);
        if (r < 0)
            return r;
        if (bounded && ((double)v < k->min || (double)v > k->max))
            return -ERANGE;
        *(uint64_t *)field = v;
        return 0;
    }
    case YUN_CFG_DOUBLE: {
        double v;
        r = yun_safe_atod(value, &v);
        if (r < 0)
            return r;
        /* strtod takes "nan" and "inf", and NaN compares false with any
         * bound: neither is ever a meaningful setting. */
        if (!isfinite(v))
            return -ERANGE;
        if (bounded && (v < k->min || v > k->max))
            return -ERANGE;
        *(double *)field = v;
        return 0;
    }
    case YUN_CFG_BOOL:
        return yun_parse_bool(value, (bool *)field);
    case YUN_CFG_LOGLEVEL:
        r = yun_log_level_from_string(value);
        if (r < 0)
            return r;
        *(int *)field = r;
        return 0;
    }
    return -EINVAL;
}

static char *
format_error(const char *fmt, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

static const char *
range_text(const struct yun_cfg_key *k, char *buf, size_t size)
{
    if (k->type == YUN_CFG_BOOL)
        return "yes or no";
    if (k->type == YUN_CFG_LOGLEVEL)
        return "err, warn, notice, info or debug";
    if (k->min != 0 || k->max != 0)
        snprintf(buf, size, "a number from %g to %g", k->min, k->max);
    else
        snprintf(buf, size, "a number");
    return buf;
}

struct parse_state {
    const struct yun_cfg_key *table;
    size_t n;
    void *cfg;
    const char *path;
    FILE *file;
    int line;
    yun_cfg_warn_fn warn;
    void *warn_data;
    char *err;
};

/* inih calls the reader once per line, so counting here gives the handler
 * the line number of the assignment it is looking at. */
static char *
read_line(char *str, int num, void *stream)
{
    struct parse_state *st = stream;
    char *s = fgets(str, num, st->file);
    if (!s)
        return NULL;
    st->line++;
    size_t len = strlen(s);
    if (len + 1 < (size_t)num || s[len - 1] == '\n')
        return s;

    /* The line filled inih's fixed buffer (INI_MAX_LINE). If only its
     * newline is left, take it now, or it would count as a line of its own.
     * Otherwise inih would parse the rest as a new line: drop the rest, and
     * refuse the line unless it is a comment, rather than apply a value cut
     * short (and maybe a tail that looks like another key). */
    int ch = getc(st->file);
    if (ch == '\n' || ch == EOF)
        return s;
    while (ch != '\n' && ch != EOF)
        ch = getc(st->file);
    const char *p = s + strspn(s, " \t");
    if (*p == '#' || *p == ';')
        return s;
    if (!st->err)
        st->err = format_error("%s:%d: line longer than %d characters", st->path, st->line,
                               num - 1);
    str[0] = 0;
    return str;
}

static int
handle_pair(void *user, const char *section, const char *name, const char *value)
{
    struct parse_state *st = user;
    const struct yun_cfg_key *k = find_key(st->table, st->n, section, name);
    if (!k) {
        if (st->warn) {
            _cleanup_free_ char *msg = format_error(
                "%s:%d: unknown key '%s' in section [%s], ignoring", st->path, st->line, name,
                section);
            if (msg)
                st->warn(msg, st->warn_data);
        }
        return 1;
    }
    int r = parse_value(k, st->cfg, value);
    if (r < 0) {
        /* inih goes on after an error: report the first one only. */
        if (!st->err) {
            char range[96];
            st->err = format_error("%s:%d: invalid value '%s' for key '%s.%s': expected %s",
                                   st->path, st->line, value, section, name,
                                   range_text(k, range, sizeof range));
        }
        return 0;
    }
    return 1;
}

int
yun_cfg_load(const struct yun_cfg_key *table, size_t n, void *cfg, const char *path,
             bool optional, yun_cfg_warn_fn warn, void *warn_data, char **ret_err)
{
    for (size_t i = 0; i < n; i++) {
        int r = parse_value(&table[i], cfg, table[i].def);
        /* A default that does not parse is a bug in the table. */
        if (r < 0) {
            *ret_err = format_error("internal error: bad default '%s' for '%s.%s'",
                                    table[i].def, table[i].section, table[i].key);
            return YUN_E_CONFIG;
        }
    }
    if (!path)
        return 0;

    FILE *f = fopen(path, "re");
    if (!f) {
        int r = -errno;
        if (r == -ENOENT && optional)
            return 0;
        *ret_err = format_error("cannot open config file '%s': %s", path, strerror(-r));
        return r;
    }
    struct parse_state st = {
        .table = table, .n = n, .cfg = cfg, .path = path, .file = f,
        .warn = warn, .warn_data = warn_data,
    };
    int r = ini_parse_stream(read_line, &st, handle_pair, &st);
    fclose(f);
    if (st.err) {
        *ret_err = st.err;
        return YUN_E_CONFIG;
    }
    if (r != 0) {
        *ret_err = format_error("%s:%d: syntax error", path, r > 0 ? r : st.line);
        return YUN_E_CONFIG;
    }
    return 0;
}

int
yun_cfg_set(const struct yun_cfg_key *table, size_t n, void *cfg, const char *assignment,
            char **ret_err)
{
    const char *eq = strchr(assignment, '=');
    const char *dot = strchr(assignment, '.');
    if (!eq || !dot || dot > eq) {
        *ret_err = format_error("invalid setting '%s': expected section.key=value", assignment);
        return YUN_E_CONFIG;
    }
    _cleanup_free_ char *section = strndup(assignment, (size_t)(dot - assignment));
    _cleanup_free_ char *key = strndup(dot + 1, (size_t)(eq - dot - 1));
    if (!section || !key)
        return -ENOMEM;
    const struct yun_cfg_key *k = find_key(table, n, section, key);
    if (!k) {
        *ret_err = format_error("unknown setting '%s.%s'", section, key);
        return YUN_E_CONFIG;
    }
    int r = parse_value(k, cfg, eq + 1);
    if (r < 0) {
        char range[96];
        *ret_err = format_error("invalid value '%s' for key '%s.%s': expected %s", eq + 1,
                                section, key, range_text(k, range, sizeof range));
        return YUN_E_CONFIG;
    }
    return 0;
}

/* The shortest "%g" text that reads back as the same double: "0.5" stays
 * "0.5", and 1/3 gets all the digits it needs to survive a reload. */
static const char *
format_double(double v, char *buf, size_t size)
{
    for (int precision = 6; precision < 17; precision++) {
        snprintf(buf, size, "%.*g", precision, v);
        if (strtod(buf, NULL) == v)
            return buf;
    }
    snprintf(buf, size, "%.17g", v);
    return buf;
}

void
yun_cfg_dump(const struct yun_cfg_key *table, size_t n, const void *cfg, FILE *out)
{
    const char *section = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct yun_cfg_key *k = &table[i];
        const char *field = (const char *)cfg + k->offset;
        if (!section || strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", section ? "\n" : "", k->section);
            section = k->section;
        }
        fprintf(out, "\n# %s\n# Default: %s\n", k->help, *k->def ? k->def : "(empty)");
        switch (k->type) {
        case YUN_CFG_STRING: {
            const char *s = *(char *const *)field;
            fprintf(out, "%s = %s\n", k->key, s ? s : "");
            break;
        }
        case YUN_CFG_U32:
            fprintf(out, "%s = %u\n", k->key, *(const uint32_t *)field);
            break;
        case YUN_CFG_U64:
            fprintf(out, "%s = %llu\n", k->key, (unsigned long long)*(const uint64_t *)field);
            break;
        case YUN_CFG_DOUBLE: {
            char num[32];
            fprintf(out, "%s = %s\n", k->key,
                    format_double(*(const double *)field, num, sizeof num));
            break;
        }
        case YUN_CFG_BOOL:
            fprintf(out, "%s = %s\n", k->key, *(const bool *)field ? "yes" : "no");
            break;
        case YUN_CFG_LOGLEVEL:
            fprintf(out, "%s = %s\n", k->key, yun_log_level_to_string(*(const int *)field));
            break;
        }
    }
}

void
yun_cfg_done(const struct yun_cfg_key *table, size_t n, void *cfg)
{
    for (size_t i = 0; i < n; i++) {
        if (table[i].type != YUN_CFG_STRING)
            continue;
        char **s = (char **)((char *)cfg + table[i].offset);
        free(*s);
        *s = NULL;
    }
}
