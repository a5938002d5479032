/* SPDX-License-Identifier: Apache-2.0
 * cfg.h: INI config files driven by one table per daemon. The table gives
 * every key's type, place in the daemon's struct, default and help; the same
 * table loads files (libinih does the lexing), applies --set overrides,
 * prints --dump-config and the annotated examples in contrib/config/.
 * Unknown keys are warned about with file:line and ignored; an invalid value
 * is an error naming the file, line, key and value. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum yun_cfg_type {
    YUN_CFG_STRING,   /* char *, owned by the struct (freed by yun_cfg_done) */
    YUN_CFG_U32,      /* uint32_t within [min, max] */
    YUN_CFG_U64,      /* uint64_t within [min, max] */
    YUN_CFG_BOOL,     /* bool */
    YUN_CFG_DOUBLE,   /* double within [min, max] */
    YUN_CFG_LOGLEVEL, /* int: enum yun_log_level */
};

struct yun_cfg_key {
    const char *section;
    const char *key;
    enum yun_cfg_type type;
    size_t offset;     /* offsetof() in the daemon's config struct */
    const char *def;   /* default, as text, parsed like a file value */
    double min, max;   /* bounds for numbers; both 0 = unbounded */
    const char *help;  /* one sentence for the example file */
};

typedef void (*yun_cfg_warn_fn)(const char *msg, void *data);

/* Fills 'cfg' with every default, then the file at 'path' when 'path' is
 * not NULL. A missing file is -ENOENT unless 'optional'. On failure returns
 * YUN_E_CONFIG (or -errno) with a malloc'ed sentence in '*ret_err'. Warnings
 * (unknown keys) go to 'warn' when not NULL. */
int yun_cfg_load(const struct yun_cfg_key *table, size_t n, void *cfg, const char *path,
                 bool optional, yun_cfg_warn_fn warn, void *warn_data, char **ret_err);

/* Applies "section.key=value" with the same parsers. */
int yun_cfg_set(const struct yun_cfg_key *table, size_t n, void *cfg, const char *assignment,
                char **ret_err);

/* Writes the annotated INI file of the current values (the example files
 * are this output with the defaults). */
void yun_cfg_dump(const struct yun_cfg_key *table, size_t n, const void *cfg, FILE *out);

/* Frees the strings held by 'cfg'. */
void yun_cfg_done(const struct yun_cfg_key *table, size_t n, void *cfg);
