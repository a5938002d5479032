/* SPDX-License-Identifier: Apache-2.0
 * cleanup.h: scope-bound ownership helpers built on __attribute__((cleanup)).
 * Used by every part of yun; see STYLE.md section 4. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))

static inline void
freep(void *p)
{
    free(*(void **)p);
}

static inline void
closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        (void)close(*fd);
        errno = saved;
    }
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

/* Defines NAMEp(TYPE *p) that calls FUNC(*p) when *p is not NULL. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                \
    static inline void func##p(type *p)                                        \
    {                                                                          \
        if (*p)                                                                \
            func(*p);                                                          \
    }

/* Hands ownership out of a cleanup variable. */
#define TAKE_PTR(p)                                                            \
    ({                                                                         \
        __typeof__(p) _p_ = (p);                                               \
        (p) = NULL;                                                            \
        _p_;                                                                   \
    })
#define TAKE_FD(fd)                                                            \
    ({                                                                         \
        int _fd_ = (fd);                                                       \
        (fd) = -EBADF;                                                         \
        _fd_;                                                                  \
    })

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
