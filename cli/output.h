/* SPDX-License-Identifier: Apache-2.0
 * output.h: every command fills one table (a list: one row per object; a
 * show: one row, printed as field/value) and only output.c prints it, as a
 * table, JSON, values or CSV. JSON keys are the proto field names and form
 * a stable interface for scripts. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum cli_format {
    CLI_FORMAT_TABLE,
    CLI_FORMAT_JSON,
    CLI_FORMAT_VALUE,
    CLI_FORMAT_CSV,
};

struct cli_output {
    enum cli_format format;
    const char **columns; /* -c: the columns to print, NULL = all */
    size_t n_columns;
    bool no_headings;
    bool color;           /* only on a tty */
};

struct cli_table;

/* 'single' makes a show table: one object, printed as field/value. */
struct cli_table *cli_table_new(bool single);
void cli_table_free(struct cli_table *t);
static inline void cli_table_freep(struct cli_table **t)
{
    cli_table_free(*t);
}

/* Starts a new row; the columns are the keys of the first row, in order. */
void cli_table_row(struct cli_table *t);
void cli_table_str(struct cli_table *t, const char *key, const char *value);
void cli_table_uint(struct cli_table *t, const char *key, uint64_t value);
void cli_table_double(struct cli_table *t, const char *key, double value);
void cli_table_bool(struct cli_table *t, const char *key, bool value);
/* A wall-clock time in µs, printed as ISO 8601 UTC (null when 0). */
void cli_table_time(struct cli_table *t, const char *key, uint64_t us);
/* A cell whose JSON is a structure (an array of tags, an object of
 * properties): takes the reference to 'json' (NULL = null) and shows 'text'
 * in tables, values and CSV. */
struct json_object;
void cli_table_json(struct cli_table *t, const char *key, struct json_object *json,
                    const char *text);

/* Prints 't'. Returns 0, or 2 when a -c column does not exist. */
int cli_table_print(struct cli_table *t, const struct cli_output *o, FILE *out);
