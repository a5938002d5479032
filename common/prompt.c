/* SPDX-License-Identifier: Apache-2.0
 * prompt.c: passwords from a file or the terminal (see prompt.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cleanup.h"
#include "password.h"
#include "prompt.h"
#include "seal.h"

void
yun_password_free(char *password)
{
    if (!password)
        return;
    yun_wipe(password, strlen(password));
    free(password);
}

/* Cuts 'buf' ('size' bytes) at its first line end, which may only be
 * followed by nothing. */
static int
one_line(char *buf, size_t size)
{
    if (memchr(buf, '\0', size))
        return -EINVAL;
    char *nl = memchr(buf, '\n', size);
    if (nl) {
        if ((size_t)(nl - buf) + 1 != size)
            return -EINVAL;
        if (nl > buf && nl[-1] == '\r')
            nl--;
        *nl = '\0';
    } else {
        buf[size] = '\0';
    }
    if (!*buf)
        return -EINVAL;
    if (strlen(buf) > YUN_PASSWORD_MAX_SIZE)
        return -EFBIG;
    return 0;
}

int
yun_password_read_file(const char *path, char **ret)
{
    /* Not yun_read_file(): a pipe (/dev/stdin, <(pass show x)) is fine. */
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    size_t cap = YUN_PASSWORD_MAX_SIZE + 3, size = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return -ENOMEM;
    int r = 0;
    for (;;) {
        ssize_t n = read(fd, buf + size, cap - size);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        size += (size_t)n;
        if (size == cap) {
            r = -EFBIG;
            break;
        }
    }
    if (r == 0)
        r = one_line(buf, size);
    if (r < 0) {
        yun_wipe(buf, cap + 1);
        free(buf);
        return r;
    }
    *ret = buf;
    return 0;
}

bool
yun_password_can_prompt(void)
{
    return isatty(STDIN_FILENO) == 1;
}

static int
read_hidden(const char *prompt, char **ret)
{
    struct termios old, quiet;
    if (tcgetattr(STDIN_FILENO, &old) < 0)
        return -ENOTTY;
    quiet = old;
    quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
    quiet.c_lflag |= ICANON;
    fputs(prompt, stderr);
    fflush(stderr);
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0)
        return -errno;
    size_t cap = YUN_PASSWORD_MAX_SIZE + 3, size = 0;
    char *buf = malloc(cap + 1);
    int r = buf ? 0 : -ENOMEM;
    /* read(2) rather than stdio: no copy left in a FILE buffer. */
    while (r == 0) {
        char c;
        ssize_t n = read(STDIN_FILENO, &c, 1);
        if (n < 0) {
            if (errno != EINTR)
                r = -errno;
            continue;
        }
        if (n == 0) {
            if (!size)
                r = -ECANCELED;
            break;
        }
        if (c == '\n')
            break;
        if (size == cap - 1)
            r = -EFBIG;
        else
            buf[size++] = c;
    }
    (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
    fputc('\n', stderr);
    if (r == 0) {
        buf[size] = '\0';
        if (size && buf[size - 1] == '\r')
            buf[--size] = '\0';
        if (!size)
            r = -EINVAL;
        else if (size > YUN_PASSWORD_MAX_SIZE)
            r = -EFBIG;
    }
    if (r < 0) {
        if (buf) {
            yun_wipe(buf, cap + 1);
            free(buf);
        }
        return r;
    }
    *ret = buf;
    return 0;
}

int
yun_password_prompt(const char *prompt, bool confirm, char **ret)
{
    if (!yun_password_can_prompt())
        return -ENOTTY;
    _cleanup_(yun_password_freep) char *first = NULL;
    int r = read_hidden(prompt, &first);
    if (r < 0)
        return r;
    if (confirm) {
        _cleanup_(yun_password_freep) char *again = NULL;
        r = read_hidden("Again: ", &again);
        if (r < 0)
            return r;
        if (strcmp(first, again) != 0)
            return -EILSEQ;
    }
    *ret = TAKE_PTR(first);
    return 0;
}
