/* SPDX-License-Identifier: Apache-2.0
 * log.c: the line logger behind log.h. Lines are written with one write(2)
 * so concurrent writers to one file never interleave inside a line. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

enum yun_log_level yun_log_max_level = YUN_LOG_INFO;

static char log_prog[32] = "yun";
static char *log_path;
static int log_fd = STDERR_FILENO;

static const char *const level_names[_YUN_LOG_MAX] = {
    [YUN_LOG_ERR] = "err",   [YUN_LOG_WARN] = "warn",   [YUN_LOG_NOTICE] = "notice",
    [YUN_LOG_INFO] = "info", [YUN_LOG_DEBUG] = "debug",
};

const char *
yun_log_level_to_string(enum yun_log_level l)
{
    return (unsigned)l < _YUN_LOG_MAX ? level_names[l] : NULL;
}

int
yun_log_level_from_string(const char *s)
{
    for (int i = 0; i < _YUN_LOG_MAX; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    return -EINVAL;
}

int
yun_log_reopen(void)
{
    if (!log_path)
        return 0;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = fd;
    return 0;
}

int
yun_log_open(const char *prog, const char *path)
{
    if (prog)
        snprintf(log_prog, sizeof log_prog, "%s", prog);
    free(log_path);
    log_path = NULL;
    if (path && *path && strcmp(path, "-") != 0) {
        log_path = strdup(path);
        if (!log_path)
            return -ENOMEM;
    }
    return yun_log_reopen();
}

void
yun_log_close(void)
{
    if (log_fd != STDERR_FILENO)
        close(log_fd);
    log_fd = STDERR_FILENO;
    free(log_path);
    log_path = NULL;
}

/* Appends 's' quoted when it holds spaces, quotes or is empty. */
static size_t
append_value(char *buf, size_t pos, size_t size, const char *s)
{
    bool quote = !*s || strpbrk(s, " \"=\t") != NULL;
    if (quote && pos < size)
        buf[pos++] = '"';
    for (; *s && pos < size - 2; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[pos++] = '\\';
            buf[pos++] = (char)c;
        } else if (c == '\n' || c == '\r' || c < 0x20) {
            buf[pos++] = ' ';
        } else {
            buf[pos++] = (char)c;
        }
    }
    if (quote && pos < size)
        buf[pos++] = '"';
    return pos;
}

int
yun_log_full(enum yun_log_level level, const char *comp, const char *req, int r,
             const char *fmt, ...)
{
    int saved = errno;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);

    char line[2048];
    size_t pos = (size_t)snprintf(line, sizeof line,
                                  "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%d] level=%s comp=%s",
                                  tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                  tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, log_prog,
                                  (int)getpid(), yun_log_level_to_string(level), comp);
    if (req && *req && pos < sizeof line)
        pos += (size_t)snprintf(line + pos, sizeof line - pos, " req=%s", req);
    if (pos + 5 < sizeof line) {
        memcpy(line + pos, " msg=", 5);
        pos = append_value(line, pos + 5, sizeof line - 64, msg);
    }
    if (r < 0 && pos < sizeof line)
        pos += (size_t)snprintf(line + pos, sizeof line - pos, " error=%s", yun_errname(r));
    if (pos >= sizeof line)
        pos = sizeof line - 1;
    line[pos++] = '\n';
    ssize_t n = write(log_fd, line, pos);
    (void)n;
    errno = saved;
    return r;
}
