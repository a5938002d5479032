/* SPDX-License-Identifier: Apache-2.0
 * audit.c: `yun audit list`: the scheduler's audit log of changes (who did
 * what to which object, with what result), filtered by user, project,
 * operation and time. */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cleanup.h"
#include "cli.h"
#include "util.h"
#include "image.pb-c.h"

/* Reads exactly 'n' digits at '*p' into '*ret'. */
static bool
take_digits(const char **p, int n, int *ret)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += n;
    *ret = v;
    return true;
}

static bool
take_char(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

/* "2026-07-01", "2026-07-01T12:00", "2026-07-01T12:00:00.5Z",
 * "2026-07-01 12:00:00+02:00": ISO 8601; without an offset, UTC. */
static int
parse_iso8601(const char *s, uint64_t *ret_us)
{
    struct tm tm = { 0 };
    int year, mon, day, hour = 0, min = 0, sec = 0, frac_us = 0, off_s = 0;
    const char *p = s;
    if (!take_digits(&p, 4, &year) || !take_char(&p, '-') || !take_digits(&p, 2, &mon) ||
        !take_char(&p, '-') || !take_digits(&p, 2, &day))
        return -EINVAL;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (!take_digits(&p, 2, &hour) || !take_char(&p, ':') || !take_digits(&p, 2, &min))
            return -EINVAL;
        if (take_char(&p, ':')) {
            if (!take_digits(&p, 2, &sec))
                return -EINVAL;
            if (take_char(&p, '.') || take_char(&p, ',')) {
                int scale = 100000, d;
                if (!isdigit((unsigned char)*p))
                    return -EINVAL;
                while (take_digits(&p, 1, &d)) {
                    frac_us += d * scale;
                    scale /= 10;
                }
            }
        }
        if (take_char(&p, 'Z') || take_char(&p, 'z')) {
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
            if (!take_digits(&p, 2, &oh))
                return -EINVAL;
            if (*p) {
                take_char(&p, ':');
                if (!take_digits(&p, 2, &om))
                    return -EINVAL;
            }
            if (oh > 23 || om > 59)
                return -EINVAL;
            off_s = sign * (oh * 3600 + om * 60);
        }
    }
    if (*p)
        return -EINVAL;
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60)
        return -EINVAL;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    time_t t = timegm(&tm);
    /* timegm() normalises 31 February; refuse it instead. */
    if (t == (time_t)-1 || tm.tm_mday != day)
        return -EINVAL;
    int64_t secs = (int64_t)t - off_s;
    if (secs < 0)
        return -EINVAL;
    *ret_us = (uint64_t)secs * 1000000u + (uint64_t)frac_us;
    return 0;
}

/* An ISO 8601 time, or a number of seconds ago ("90", "15m", "2h", "7d"). */
static int
parse_time(const char *s, uint64_t now_us, uint64_t *ret_us)
{
    size_t len = strlen(s);
    if (len > 0 && len < 20 && strspn(s, "0123456789") >= len - 1 && isdigit((unsigned char)*s)) {
        char num[24];
        uint64_t unit = 1;
        memcpy(num, s, len + 1);
        switch (num[len - 1]) {
        case 'd':
            unit *= 24;
            /* fall through */
        case 'h':
            unit *= 60;
            /* fall through */
        case 'm':
            unit *= 60;
            /* fall through */
        case 's':
            num[len - 1] = '\0';
            break;
        }
        uint64_t n;
        if (yun_safe_atou64(num, &n) < 0 || n > now_us / 1000000u / unit)
            return -EINVAL;
        *ret_us = now_us - n * unit * 1000000u;
        return 0;
    }
    return parse_iso8601(s, ret_us);
}

static void
audit_row(struct cli_table *t, const Yun__AuditRecord *a, bool full)
{
    cli_table_row(t);
    cli_table_time(t, "time", a->time_us);
    cli_table_str(t, "operation", a->operation);
    cli_table_str(t, "target", a->target);
    cli_table_str(t, "result", a->result);
    cli_table_str(t, "user", a->user);
    cli_table_str(t, "project", a->project);
    cli_table_str(t, "request_id", a->request_id);
    if (!full)
        return;
    cli_table_str(t, "source", a->source);
    cli_table_str(t, "detail", a->detail);
}

enum {
    OPT_USER = 0x100,
    OPT_PROJECT,
    OPT_OPERATION,
    OPT_SINCE,
    OPT_UNTIL,
    OPT_LIMIT,
    OPT_LONG,
};

static int
audit_list(struct cli *cli, int argc, char **argv)
{
    static const char cmd[] = "audit list";
    static const struct option opts[] = {
        { "user", required_argument, NULL, OPT_USER },
        { "project", required_argument, NULL, OPT_PROJECT },
        { "operation", required_argument, NULL, OPT_OPERATION },
        { "since", required_argument, NULL, OPT_SINCE },
        { "until", required_argument, NULL, OPT_UNTIL },
        { "limit", required_argument, NULL, OPT_LIMIT },
        { "long", no_argument, NULL, OPT_LONG },
        {},
    };
    Yun__AuditListRequest q = YUN__AUDIT_LIST_REQUEST__INIT;
    bool limited = false, full = false;
    uint64_t now = yun_wall_us();
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":l", opts, NULL)) >= 0) {
        switch (c) {
        case OPT_USER:
            q.user = optarg;
            break;
        case OPT_PROJECT:
            q.project = optarg;
            break;
        case OPT_OPERATION:
            q.operation = optarg;
            break;
        case OPT_SINCE:
        case OPT_UNTIL: {
            uint64_t *us = c == OPT_SINCE ? &q.since_us : &q.until_us;
            if (parse_time(optarg, now, us) < 0)
                return cli_usage_error("invalid time '%s' for --%s: give ISO 8601 "
                                       "(2026-07-01T12:00:00Z) or seconds ago (90, 15m, 2h, "
                                       "7d)", optarg, c == OPT_SINCE ? "since" : "until");
            break;
        }
        case OPT_LIMIT:
            if (yun_safe_atou32(optarg, &q.limit) < 0 || q.limit == 0)
                return cli_usage_error("invalid --limit '%s': give a number from 1", optarg);
            limited = true;
            break;
        case 'l':
        case OPT_LONG:
            full = true;
            break;
        default:
            return cli_option_error(cmd, c, argv);
        }
    }
    if (optind != argc)
        return cli_usage_error("'%s' takes no arguments, only options", cmd);
    if (q.since_us && q.until_us && q.until_us < q.since_us)
        return cli_usage_error("--until is before --since");
    full = full || cli->out.format != CLI_FORMAT_TABLE;

    _cleanup_(cli_table_freep) struct cli_table *t = cli_table_new(false);
    _cleanup_free_ char *marker = NULL;
    /* Without --limit, follow the pages to the end. */
    for (unsigned pages = 0;; pages++) {
        ProtobufCMessage *m = NULL;
        int r = cli_call(cli, YUN__OP__OP_AUDIT_LIST, &q.base, &yun__audit_list_reply__descriptor,
                         &m);
        if (r)
            return r;
        Yun__AuditListReply *y = (Yun__AuditListReply *)m;
        for (size_t i = 0; i < y->n_records; i++)
            audit_row(t, y->records[i], full);
        bool more = !limited && *y->next_marker && y->n_records > 0 &&
                    strcmp(y->next_marker, q.marker) != 0;
        if (more) {
            free(marker);
            marker = strdup(y->next_marker);
            if (!marker)
                abort();
            q.marker = marker;
        }
        protobuf_c_message_free_unpacked(m, NULL);
        if (!more)
            break;
        if (pages > 1000000) {
            fprintf(stderr, "yun: the scheduler's audit list does not end\n");
            return 1;
        }
    }
    return cli_print(cli, t);
}

const struct cli_verb cli_audit_verbs[] = {
    { "list", audit_list,
      "[--user U] [--project P] [--operation OP] [--since TIME] [--until TIME] [--limit N] "
      "[--long]",
      "List audit records, oldest first",
      "Options:\n"
      "  --user U, --project P  Only what this user or project did\n"
      "  --operation OP         Only this operation (image.create), or a family ending in\n"
      "                         '.' (image.)\n"
      "  --since, --until TIME  ISO 8601 (2026-07-01T12:00:00Z, UTC unless an offset is\n"
      "                         given) or an age: 90 (seconds), 15m, 2h, 7d\n"
      "  --limit N              One page of at most N records (default: every page)\n"
      "  -l, --long             Also the source peer and the detail\n" },
    {},
};
