/* SPDX-License-Identifier: Apache-2.0
 * prompt.h: reading a password without putting it on a command line:
 * from a file (or a pipe: /dev/stdin, <(...)) or from the terminal with
 * echo off. Used by `yun login`, `yun user create|set` and
 * `yun-scheduler init|set-password`. The returned buffers hold secrets:
 * release them with yun_password_free(), which wipes them. */
#pragma once

#include <stdbool.h>

/* Reads the password in 'path': the whole content up to the first
 * newline ("\n" or "\r\n"), which must be the last thing in it if
 * anything follows. Returns 0 and a malloc'ed string in '*ret', -EINVAL
 * when the password is empty or has a NUL or a second line, -EFBIG when
 * it is longer than YUN_PASSWORD_MAX_SIZE bytes, or -errno. */
int yun_password_read_file(const char *path, char **ret);

/* True when a prompt can be shown and answered: standard input is a
 * terminal. */
bool yun_password_can_prompt(void);

/* Prints 'prompt' on standard error and reads a line from the terminal
 * on standard input with echo off; with 'confirm', asks again and
 * compares. Returns 0 and '*ret', -ENOTTY without a terminal, -EINVAL for
 * an empty password or one longer than YUN_PASSWORD_MAX_SIZE, -EILSEQ when
 * the two entries differ, -ECANCELED at end of input, or -errno. */
int yun_password_prompt(const char *prompt, bool confirm, char **ret);

/* Wipes and frees a password; NULL ok. */
void yun_password_free(char *password);
static inline void
yun_password_freep(char **p)
{
    yun_password_free(*p);
}
