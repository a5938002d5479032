/* SPDX-License-Identifier: Apache-2.0
 * log.h: one line per event, "TIME PROG[PID] level=L comp=C req=R msg=... k=v".
 * Each source file declares its component with YUN_LOG_MODULE("agent.host").
 * common/ and netplug/ log at DEBUG at most; daemons report. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>

enum yun_log_level {
    YUN_LOG_ERR,
    YUN_LOG_WARN,
    YUN_LOG_NOTICE,
    YUN_LOG_INFO,
    YUN_LOG_DEBUG,
    _YUN_LOG_MAX,
};

extern enum yun_log_level yun_log_max_level;

/* Sets the program name in the prefix; 'path' NULL or "-" means stderr,
 * else lines are appended to that file (reopened by yun_log_reopen). */
int yun_log_open(const char *prog, const char *path);
int yun_log_reopen(void);
void yun_log_close(void);

int yun_log_level_from_string(const char *s);
const char *yun_log_level_to_string(enum yun_log_level l);

/* Writes one line. 'req' may be NULL. 'fmt' forms the msg= value; extra
 * key=value pairs may follow it after a " |" separator-free convention:
 * callers append them with yun_logk(). Returns 'r' unchanged, so that
 * "return log_err_errno(r, ...)" logs and returns. */
int yun_log_full(enum yun_log_level level, const char *comp, const char *req, int r,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#define YUN_LOG_MODULE(name) \
    static const char *const yun_log_comp_ __attribute__((unused)) = (name)

#define yun_log(level, req, r, ...)                                            \
    ((level) <= yun_log_max_level ? yun_log_full((level), yun_log_comp_, (req), (r), __VA_ARGS__) \
                                  : (r))

#define log_err(...) yun_log(YUN_LOG_ERR, NULL, 0, __VA_ARGS__)
#define log_warn(...) yun_log(YUN_LOG_WARN, NULL, 0, __VA_ARGS__)
#define log_notice(...) yun_log(YUN_LOG_NOTICE, NULL, 0, __VA_ARGS__)
#define log_info(...) yun_log(YUN_LOG_INFO, NULL, 0, __VA_ARGS__)
#define log_debug(...) yun_log(YUN_LOG_DEBUG, NULL, 0, __VA_ARGS__)
#define log_err_errno(r, ...) yun_log(YUN_LOG_ERR, NULL, (r), __VA_ARGS__)
#define log_warn_errno(r, ...) yun_log(YUN_LOG_WARN, NULL, (r), __VA_ARGS__)
#define log_debug_errno(r, ...) yun_log(YUN_LOG_DEBUG, NULL, (r), __VA_ARGS__)
/* With a request id: */
#define log_req(level, req, r, ...) yun_log((level), (req), (r), __VA_ARGS__)
