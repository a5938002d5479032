/* SPDX-License-Identifier: Apache-2.0
 * output.c: prints the tables commands fill (see output.h). JSON goes
 * through json-c so that escaping is never hand-written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "cleanup.h"
#include "output.h"
#include "util.h"

struct cli_cell {
    char *text;              /* as shown in a table */
    struct json_object *json;
};

struct cli_row {
    struct cli_cell *cells;  /* one per column */
};

struct cli_table {
    bool single;
    char **columns;
    size_t n_columns;
    struct cli_row *rows;
    size_t n_rows;
};

struct cli_table *
cli_table_new(bool single)
{
    struct cli_table *t = calloc(1, sizeof *t);
    if (!t)
        abort(); /* the CLI may exit on exhaustion; daemons never link this */
    t->single = single;
    return t;
}

void
cli_table_free(struct cli_table *t)
{
    if (!t)
        return;
    for (size_t r = 0; r < t->n_rows; r++) {
        for (size_t c = 0; c < t->n_columns; c++) {
            free(t->rows[r].cells[c].text);
            json_object_put(t->rows[r].cells[c].json);
        }
        free(t->rows[r].cells);
    }
    for (size_t c = 0; c < t->n_columns; c++)
        free(t->columns[c]);
    free(t->columns);
    free(t->rows);
    free(t);
}

static void *
xrealloc(void *p, size_t size)
{
    void *q = realloc(p, size);
    if (!q)
        abort();
    return q;
}

void
cli_table_row(struct cli_table *t)
{
    t->rows = xrealloc(t->rows, (t->n_rows + 1) * sizeof *t->rows);
    t->rows[t->n_rows].cells = calloc(t->n_columns ? t->n_columns : 1, sizeof(struct cli_cell));
    if (!t->rows[t->n_rows].cells)
        abort();
    t->n_rows++;
}

static size_t
column_of(struct cli_table *t, const char *key)
{
    for (size_t c = 0; c < t->n_columns; c++)
        if (strcmp(t->columns[c], key) == 0)
            return c;
    /* A new column: only the first row may add them. */
    t->columns = xrealloc(t->columns, (t->n_columns + 1) * sizeof *t->columns);
    t->columns[t->n_columns] = strdup(key);
    for (size_t r = 0; r < t->n_rows; r++) {
        t->rows[r].cells = xrealloc(t->rows[r].cells, (t->n_columns + 1) * sizeof(struct cli_cell));
        t->rows[r].cells[t->n_columns] = (struct cli_cell){ 0 };
    }
    return t->n_columns++;
}

static void
set_cell(struct cli_table *t, const char *key, char *text, struct json_object *json)
{
    if (t->n_rows == 0)
        cli_table_row(t);
    size_t c = column_of(t, key);
    struct cli_cell *cell = &t->rows[t->n_rows - 1].cells[c];
    free(cell->text);
    json_object_put(cell->json);
    cell->text = text;
    cell->json = json;
}

void
cli_table_str(struct cli_table *t, const char *key, const char *value)
{
    set_cell(t, key, strdup(value ? value : ""), json_object_new_string(value ? value : ""));
}

void
cli_table_uint(struct cli_table *t, const char *key, uint64_t value)
{
    char *s = NULL;
    if (asprintf(&s, "%llu", (unsigned long long)value) < 0)
        abort();
    set_cell(t, key, s, json_object_new_uint64(value));
}

void
cli_table_double(struct cli_table *t, const char *key, double value)
{
    char *s = NULL;
    if (asprintf(&s, "%.2f", value) < 0)
        abort();
    set_cell(t, key, s, json_object_new_double(value));
}

void
cli_table_bool(struct cli_table *t, const char *key, bool value)
{
    set_cell(t, key, strdup(value ? "true" : "false"), json_object_new_boolean(value));
}

void
cli_table_time(struct cli_table *t, const char *key, uint64_t us)
{
    char buf[32];
    yun_format_time(us, buf, sizeof buf);
    set_cell(t, key, strdup(us ? buf : ""), us ? json_object_new_string(buf) : NULL);
}

void
cli_table_json(struct cli_table *t, const char *key, struct json_object *json, const char *text)
{
    set_cell(t, key, strdup(text ? text : ""), json);
}

/* The indexes of the columns to print, in -c order or all. */
static int
pick_columns(const struct cli_table *t, const struct cli_output *o, size_t *idx, size_t *n)
{
    if (!o->columns || o->n_columns == 0) {
        for (size_t c = 0; c < t->n_columns; c++)
            idx[c] = c;
        *n = t->n_columns;
        return 0;
    }
    *n = 0;
    for (size_t i = 0; i < o->n_columns; i++) {
        size_t c = 0;
        while (c < t->n_columns && strcmp(t->columns[c], o->columns[i]) != 0)
            c++;
        if (c == t->n_columns) {
            /* An empty list has no columns to check against. */
            if (t->n_rows == 0)
                continue;
            fprintf(stderr, "yun: no column '%s'\n", o->columns[i]);
            return 2;
        }
        idx[(*n)++] = c;
    }
    return 0;
}

static const char *
cell_text(const struct cli_cell *cell)
{
    return cell->text ? cell->text : "";
}

static const char *
color_of(const char *text)
{
    if (strcmp(text, "up") == 0 || strcmp(text, "ACTIVE") == 0 || strcmp(text, "active") == 0)
        return "\033[32m";
    if (strcmp(text, "down") == 0 || strcmp(text, "ERROR") == 0 || strcmp(text, "killed") == 0)
        return "\033[31m";
    return NULL;
}

static void
print_padded(FILE *out, const char *s, size_t width, bool color)
{
    const char *col = color ? color_of(s) : NULL;
    fprintf(out, "%s%s%s", col ? col : "", s, col ? "\033[0m" : "");
    for (size_t i = strlen(s); i < width; i++)
        fputc(' ', out);
}

static void
print_rule(FILE *out, const size_t *widths, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        fputc('+', out);
        for (size_t j = 0; j < widths[i] + 2; j++)
            fputc('-', out);
    }
    fputs("+\n", out);
}

static void
print_grid(FILE *out, char *const *head, size_t n, const char *const *cells, size_t rows,
           bool headings, bool color)
{
    _cleanup_free_ size_t *w = calloc(n ? n : 1, sizeof *w);
    if (!w)
        abort();
    for (size_t c = 0; c < n; c++) {
        w[c] = headings ? strlen(head[c]) : 0;
        for (size_t r = 0; r < rows; r++)
            if (strlen(cells[r * n + c]) > w[c])
                w[c] = strlen(cells[r * n + c]);
    }
    print_rule(out, w, n);
    if (headings) {
        for (size_t c = 0; c < n; c++) {
            fputs("| ", out);
            print_padded(out, head[c], w[c], false);
            fputc(' ', out);
        }
        fputs("|\n", out);
        print_rule(out, w, n);
    }
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < n; c++) {
            fputs("| ", out);
            print_padded(out, cells[r * n + c], w[c], color);
            fputc(' ', out);
        }
        fputs("|\n", out);
    }
    if (rows > 0 || headings)
        print_rule(out, w, n);
}

static void
print_csv_field(FILE *out, const char *s)
{
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, out);
        return;
    }
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', out);
        fputc(*s, out);
    }
    fputc('"', out);
}

int
cli_table_print(struct cli_table *t, const struct cli_output *o, FILE *out)
{
    _cleanup_free_ size_t *idx = calloc(t->n_columns + 1, sizeof *idx);
    size_t n;
    if (!idx)
        abort();
    int r = pick_columns(t, o, idx, &n);
    if (r)
        return r;

    switch (o->format) {
    case CLI_FORMAT_JSON: {
        struct json_object *arr = t->single ? NULL : json_object_new_array();
        for (size_t row = 0; row < t->n_rows; row++) {
            struct json_object *obj = json_object_new_object();
            for (size_t i = 0; i < n; i++) {
                struct cli_cell *cell = &t->rows[row].cells[idx[i]];
                json_object_object_add(obj, t->columns[idx[i]], json_object_get(cell->json));
            }
            if (t->single) {
                arr = obj;
                break;
            }
            json_object_array_add(arr, obj);
        }
        if (!arr)
            arr = json_object_new_object();
        fprintf(out, "%s\n",
                json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PRETTY |
                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(arr);
        return 0;
    }
    case CLI_FORMAT_VALUE:
        for (size_t row = 0; row < t->n_rows; row++) {
            if (t->single) {
                for (size_t i = 0; i < n; i++)
                    fprintf(out, "%s\n", cell_text(&t->rows[row].cells[idx[i]]));
            } else {
                for (size_t i = 0; i < n; i++)
                    fprintf(out, "%s%s", i ? " " : "", cell_text(&t->rows[row].cells[idx[i]]));
                fputc('\n', out);
            }
        }
        return 0;
    case CLI_FORMAT_CSV:
        if (!o->no_headings) {
            for (size_t i = 0; i < n; i++) {
                if (i)
                    fputc(',', out);
                print_csv_field(out, t->columns[idx[i]]);
            }
            fputc('\n', out);
        }
        for (size_t row = 0; row < t->n_rows; row++) {
            for (size_t i = 0; i < n; i++) {
                if (i)
                    fputc(',', out);
                print_csv_field(out, cell_text(&t->rows[row].cells[idx[i]]));
            }
            fputc('\n', out);
        }
        return 0;
    case CLI_FORMAT_TABLE:
        /* A list with no rows learned no columns: there is no grid to draw. */
        if (n == 0)
            return 0;
        break;
    }

    if (t->single) {
        /* Field | Value, one line per column. */
        _cleanup_free_ const char **cells = calloc(2 * n + 1, sizeof *cells);
        if (!cells)
            abort();
        for (size_t i = 0; i < n; i++) {
            cells[2 * i] = t->columns[idx[i]];
            cells[2 * i + 1] = t->n_rows ? cell_text(&t->rows[0].cells[idx[i]]) : "";
        }
        char *head[] = { (char *)"Field", (char *)"Value" };
        print_grid(out, head, 2, cells, n, !o->no_headings, o->color);
        return 0;
    }
    _cleanup_free_ const char **cells = calloc(t->n_rows * n + 1, sizeof *cells);
    _cleanup_free_ char **head = calloc(n + 1, sizeof *head);
    if (!cells || !head)
        abort();
    for (size_t i = 0; i < n; i++)
        head[i] = t->columns[idx[i]];
    for (size_t row = 0; row < t->n_rows; row++)
        for (size_t i = 0; i < n; i++)
            cells[row * n + i] = cell_text(&t->rows[row].cells[idx[i]]);
    print_grid(out, head, n, cells, t->n_rows, !o->no_headings, o->color);
    return 0;
}
